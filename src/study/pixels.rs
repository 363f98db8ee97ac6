//! Stored pixel values exactly as pydicom's `pixel_array` gives them: every codec decoded to
//! interleaved samples, YBR converted to RGB, unused high bits masked or sign-extended.

use dicom_dictionary_std::tags;
use dicom_encoding::adapters::PixelDataObject;
use dicom_object::DefaultDicomObject;
use sha2::{Digest, Sha256};

use crate::study::StudyError;
use crate::study::dicom::{ImageHeader, native_pixel_bytes};
use crate::study::{guard, j2k, jpeg12, jpegls, rle};

/// Typed sample storage, one variant per numpy dtype (DICOM's integers; the floats come from
/// NIfTI and MetaImage volumes).
#[derive(Clone, Debug, PartialEq)]
pub enum PixelBuf {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl PixelBuf {
    pub fn len(&self) -> usize {
        match self {
            PixelBuf::U8(v) => v.len(),
            PixelBuf::I8(v) => v.len(),
            PixelBuf::U16(v) => v.len(),
            PixelBuf::I16(v) => v.len(),
            PixelBuf::U32(v) => v.len(),
            PixelBuf::I32(v) => v.len(),
            PixelBuf::F32(v) => v.len(),
            PixelBuf::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> &'static str {
        match self {
            PixelBuf::U8(_) => "uint8",
            PixelBuf::I8(_) => "int8",
            PixelBuf::U16(_) => "uint16",
            PixelBuf::I16(_) => "int16",
            PixelBuf::U32(_) => "uint32",
            PixelBuf::I32(_) => "int32",
            PixelBuf::F32(_) => "float32",
            PixelBuf::F64(_) => "float64",
        }
    }

    pub fn bytes_per_value(&self) -> usize {
        match self {
            PixelBuf::U8(_) | PixelBuf::I8(_) => 1,
            PixelBuf::U16(_) | PixelBuf::I16(_) => 2,
            PixelBuf::U32(_) | PixelBuf::I32(_) | PixelBuf::F32(_) => 4,
            PixelBuf::F64(_) => 8,
        }
    }

    /// Whether values below zero can be stored (DICOM's Pixel Representation 1).
    pub fn is_signed(&self) -> bool {
        !matches!(self, PixelBuf::U8(_) | PixelBuf::U16(_) | PixelBuf::U32(_))
    }

    /// Sample `i` widened to f64.
    pub fn get(&self, i: usize) -> f64 {
        match self {
            PixelBuf::U8(v) => v[i] as f64,
            PixelBuf::I8(v) => v[i] as f64,
            PixelBuf::U16(v) => v[i] as f64,
            PixelBuf::I16(v) => v[i] as f64,
            PixelBuf::U32(v) => v[i] as f64,
            PixelBuf::I32(v) => v[i] as f64,
            PixelBuf::F32(v) => v[i] as f64,
            PixelBuf::F64(v) => v[i],
        }
    }

    /// Samples `range` as f32.
    pub fn slice_f32(&self, range: std::ops::Range<usize>) -> Vec<f32> {
        match self {
            PixelBuf::U8(v) => v[range].iter().map(|&x| x as f32).collect(),
            PixelBuf::I8(v) => v[range].iter().map(|&x| x as f32).collect(),
            PixelBuf::U16(v) => v[range].iter().map(|&x| x as f32).collect(),
            PixelBuf::I16(v) => v[range].iter().map(|&x| x as f32).collect(),
            PixelBuf::U32(v) => v[range].iter().map(|&x| x as f32).collect(),
            PixelBuf::I32(v) => v[range].iter().map(|&x| x as f32).collect(),
            PixelBuf::F32(v) => v[range].to_vec(),
            PixelBuf::F64(v) => v[range].iter().map(|&x| x as f32).collect(),
        }
    }

    fn hash_le(&self, h: &mut Sha256) {
        match self {
            PixelBuf::U8(v) => h.update(v),
            PixelBuf::I8(v) => h.update(bytemuck::cast_slice::<i8, u8>(v)),
            PixelBuf::U16(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            PixelBuf::I16(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            PixelBuf::U32(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            PixelBuf::I32(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            PixelBuf::F32(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
            PixelBuf::F64(v) => v.iter().for_each(|x| h.update(x.to_le_bytes())),
        }
    }

    /// Shape, dtype, sha256 of the little-endian values, and their range and mean.
    pub fn digest(&self, shape: Vec<usize>) -> PixelDigest {
        let mut h = Sha256::new();
        self.hash_le(&mut h);
        let n = self.len();
        let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for i in 0..n {
            let v = self.get(i);
            min = min.min(v);
            max = max.max(v);
            sum += v;
        }
        PixelDigest {
            shape,
            dtype: self.dtype().into(),
            sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            min: if n == 0 { 0.0 } else { min },
            max: if n == 0 { 0.0 } else { max },
            mean: if n == 0 { 0.0 } else { sum / n as f64 },
        }
    }
}

/// All frames of an image as stored values, laid out `[frame][row][col][sample]`.
#[derive(Clone, Debug)]
pub struct StoredPixels {
    pub frames: usize,
    pub rows: usize,
    pub cols: usize,
    pub samples: usize,
    pub buf: PixelBuf,
}

/// Summary of the stored values, as `tandem info` reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PixelDigest {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub sha256: String,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl StoredPixels {
    /// numpy-style shape: `[rows, cols]`, `[frames, …]` only when frames > 1, `[…, samples]`
    /// only when samples > 1.
    pub fn shape(&self) -> Vec<usize> {
        let mut s = Vec::with_capacity(4);
        if self.frames > 1 {
            s.push(self.frames);
        }
        s.push(self.rows);
        s.push(self.cols);
        if self.samples > 1 {
            s.push(self.samples);
        }
        s
    }

    pub fn frame_len(&self) -> usize {
        self.rows * self.cols * self.samples
    }

    pub fn digest(&self) -> PixelDigest {
        self.buf.digest(self.shape())
    }
}

/// The codec family of a transfer syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Codec {
    Native,
    EncapsulatedNative,
    Rle,
    Jpeg,
    JpegLs,
    Jpeg2000,
}

fn codec_of(ts: &str) -> Result<Codec, StudyError> {
    Ok(match ts {
        "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.2" | "1.2.840.10008.1.2.1.99" => Codec::Native,
        "1.2.840.10008.1.2.1.98" => Codec::EncapsulatedNative,
        "1.2.840.10008.1.2.5" => Codec::Rle,
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => Codec::Jpeg,
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => Codec::JpegLs,
        "1.2.840.10008.1.2.4.90"
        | "1.2.840.10008.1.2.4.91"
        | "1.2.840.10008.1.2.4.92"
        | "1.2.840.10008.1.2.4.93"
        | "1.2.840.10008.1.2.4.201"
        | "1.2.840.10008.1.2.4.202"
        | "1.2.840.10008.1.2.4.203" => Codec::Jpeg2000,
        other => {
            let name = dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(other)
                .map(|t| t.name().to_string())
                .unwrap_or_else(|| other.to_string());
            return Err(StudyError::Unsupported(format!("pixel data in transfer syntax {name}")));
        }
    })
}

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;

/// Reads and decodes a DICOM file: the data set (without pixel data when the fast path took
/// the pixels straight from the file), its image header and every frame's stored values.
pub fn read_file(path: &std::path::Path) -> Result<(DefaultDicomObject, ImageHeader, StoredPixels), StudyError> {
    use crate::study::dicom::{open_bytes, open_bytes_with, pixels_read_from_file};
    let bytes = crate::study::dicom::read_bytes(path)?;
    let (obj, partial) = open_bytes_with(&bytes, pixels_read_from_file)?;
    let obj = if partial {
        if let Ok(header) = ImageHeader::from_attributes(&obj)
            && let Some(stored) = native_le_from_file(&bytes, &header)
        {
            return Ok((obj, header, stored));
        }
        // Rare native layouts (YBR 4:2:2, planar colour, 1-bit) and damaged files go through the
        // general decoder, which also says what is wrong.
        open_bytes(&bytes, false)?
    } else {
        obj
    };
    let header = ImageHeader::read(&obj)?;
    let stored = decode(&obj, &header)?;
    Ok((obj, header, stored))
}

/// Uncompressed little-endian pixel data converted in one pass from the file's bytes, for the
/// common layouts; `None` sends everything else through the general decoder.
fn native_le_from_file(bytes: &[u8], h: &ImageHeader) -> Option<StoredPixels> {
    let explicit = match h.transfer_syntax.as_str() {
        "1.2.840.10008.1.2.1" => true,
        "1.2.840.10008.1.2" => false,
        _ => return None,
    };
    if !matches!(h.bits_allocated, 8 | 16 | 32)
        || h.photometric.starts_with("YBR")
        || (h.samples_per_pixel > 1 && h.planar_configuration == 1)
    {
        return None;
    }
    let bps = h.bits_allocated / 8;
    let needed = h.frames.checked_mul(h.pixels_per_frame())?.checked_mul(h.samples_per_pixel)?.checked_mul(bps)?;
    // The first (7FE0,0010) whose value holds the whole image is the top-level Pixel Data: an
    // icon's pixel data earlier in the file is too small to pass the length check.
    let tag = [0xE0u8, 0x7F, 0x10, 0x00];
    let mut found = None;
    let mut at = 0;
    while let Some(p) = bytes[at..].windows(4).position(|w| w == tag).map(|p| p + at) {
        at = p + 1;
        let (len, start) = if explicit {
            let vr = bytes.get(p + 4..p + 6)?;
            if !(vr == b"OB" || vr == b"OW" || vr == b"UN") || bytes.get(p + 6..p + 8)? != [0, 0] {
                continue;
            }
            (u32::from_le_bytes(bytes.get(p + 8..p + 12)?.try_into().ok()?), p + 12)
        } else {
            (u32::from_le_bytes(bytes.get(p + 4..p + 8)?.try_into().ok()?), p + 8)
        };
        if len != u32::MAX && (len as usize) >= needed && start + needed <= bytes.len() {
            found = Some(start);
            break;
        }
    }
    guard::check_cap(needed as u64).ok()?;
    let data = &bytes[found?..found? + needed];
    let signed = h.pixel_representation == 1;
    let shift = (h.bits_allocated - h.bits_stored.min(h.bits_allocated)) as u32;
    let buf = match (bps, signed) {
        (1, false) => PixelBuf::U8(data.iter().map(|&v| (v << shift) >> shift).collect()),
        (1, true) => PixelBuf::I8(data.iter().map(|&v| ((v as i8) << shift) >> shift).collect()),
        (2, false) => PixelBuf::U16(convert(data, |c| (u16::from_le_bytes([c[0], c[1]]) << shift) >> shift)),
        (2, true) => PixelBuf::I16(convert(data, |c| (i16::from_le_bytes([c[0], c[1]]) << shift) >> shift)),
        (_, false) => PixelBuf::U32(convert(data, |c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) << shift) >> shift)),
        (_, true) => PixelBuf::I32(convert(data, |c| (i32::from_le_bytes([c[0], c[1], c[2], c[3]]) << shift) >> shift)),
    };
    Some(StoredPixels { frames: h.frames, rows: h.rows, cols: h.cols, samples: h.samples_per_pixel, buf })
}

/// Converts little-endian samples of `size_of::<T>()` bytes, in parallel for large images.
fn convert<T: Send + Default + Copy>(data: &[u8], f: impl Fn(&[u8]) -> T + Sync) -> Vec<T> {
    use rayon::prelude::*;
    let n = std::mem::size_of::<T>();
    let mut out = vec![T::default(); data.len() / n];
    let chunk = 1 << 16;
    out.par_chunks_mut(chunk).zip(data.par_chunks(chunk * n)).for_each(|(dst, src)| {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(n)) {
            *d = f(s);
        }
    });
    out
}

/// Decodes every frame of `obj`.
pub fn decode(obj: &DefaultDicomObject, header: &ImageHeader) -> Result<StoredPixels, StudyError> {
    decode_frames(obj, header, 0..header.frames)
}

/// Decodes frames `range` of `obj` (the result's `frames` is the range length).
pub fn decode_frames(obj: &DefaultDicomObject, header: &ImageHeader, range: std::ops::Range<usize>) -> Result<StoredPixels, StudyError> {
    if range.end > header.frames || range.is_empty() {
        return Err(StudyError::Corrupt(format!("frame range {range:?} outside 0..{}", header.frames)));
    }
    let codec = codec_of(&header.transfer_syntax)?;
    let bps = header.bits_allocated.div_ceil(8);
    let pixels = header.pixels_per_frame();
    let frame_bytes = pixels * header.samples_per_pixel * bps;
    // Native data is read once: its length is what the size check needs.
    let native = if codec == Codec::Native { Some(native_pixel_bytes(obj)?) } else { None };
    let total = check_sizes(obj, header, native.as_ref().map(|b| b.len()), range.clone())?;
    let mut raw: Vec<u8> = Vec::with_capacity(total);
    let mut ybr_from_jpeg = false;
    match codec {
        Codec::Native => {
            let bytes = native.unwrap_or_default();
            for f in range.clone() {
                raw.extend_from_slice(&native_frame(&bytes, header, f)?);
            }
            if header.transfer_syntax == "1.2.840.10008.1.2.2" && bps == 4 && is_ow(obj) {
                swap_word_halves(&mut raw);
            }
        }
        _ => {
            for f in range.clone() {
                let fragment = obj
                    .frame_pixel_data(f as u32)
                    .ok_or_else(|| StudyError::Corrupt(format!("cannot find the encoded data of frame {}", f + 1)))?;
                let decoded = match codec {
                    Codec::EncapsulatedNative => {
                        let mut b = fragment.to_vec();
                        b.resize(frame_bytes, 0);
                        b
                    }
                    Codec::Rle => rle::decode_frame(&fragment, header.rows, header.cols, header.samples_per_pixel, bps)?,
                    Codec::Jpeg => {
                        let (bytes, ybr) = decode_jpeg(&fragment, header)?;
                        ybr_from_jpeg = ybr;
                        bytes
                    }
                    Codec::JpegLs => {
                        let expected = jpegls::FrameInfo {
                            width: header.cols,
                            height: header.rows,
                            components: header.samples_per_pixel,
                            precision: header.bits_stored as u32,
                        };
                        let img = jpegls::decode(&fragment, expected).map_err(|e| StudyError::Decode(e.to_string()))?;
                        match bps {
                            1 => img.samples.iter().map(|&v| v as u8).collect(),
                            _ => img.samples.iter().flat_map(|&v| v.to_le_bytes()).collect(),
                        }
                    }
                    Codec::Jpeg2000 => {
                        if let Some((w, h)) = j2k::declared_size(&fragment)
                            && (w > header.cols as u64 || h > header.rows as u64)
                        {
                            return Err(StudyError::Corrupt(format!(
                                "the JPEG 2000 image is {w}×{h}, the header says {}×{}",
                                header.cols, header.rows
                            )));
                        }
                        let img = j2k::decode(&fragment).map_err(|e| StudyError::Decode(e.to_string()))?;
                        if img.width != header.cols || img.height != header.rows || img.components != header.samples_per_pixel {
                            return Err(StudyError::Corrupt(format!(
                                "the JPEG 2000 image is {}×{}×{}, the header says {}×{}×{}",
                                img.width, img.height, img.components, header.cols, header.rows, header.samples_per_pixel
                            )));
                        }
                        let mut b: Vec<u8> = match bps {
                            1 => img.samples.iter().map(|&v| v as u8).collect(),
                            2 => img.samples.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect(),
                            _ => img.samples.iter().flat_map(|&v| (v as u32).to_le_bytes()).collect(),
                        };
                        j2k_sign_fix(&mut b, img.signed, img.precision as usize, header);
                        b
                    }
                    Codec::Native => unreachable!("handled above"),
                };
                if decoded.len() < frame_bytes {
                    return Err(StudyError::Decode(format!("frame {} decoded to {} bytes, expected {frame_bytes}", f + 1, decoded.len())));
                }
                raw.extend_from_slice(&decoded[..frame_bytes]);
            }
        }
    }
    // Colour: pydicom returns RGB for YBR_FULL(_422) data (J2K's RCT/ICT is undone by the codec).
    let ybr = match codec {
        Codec::Jpeg => ybr_from_jpeg,
        Codec::Jpeg2000 => false,
        _ => header.photometric.starts_with("YBR_FULL"),
    };
    if ybr && header.samples_per_pixel == 3 && bps == 1 {
        ybr_full_to_rgb(&mut raw);
    }
    let mut buf = typed(raw, header.bits_allocated, header.pixel_representation == 1);
    match codec {
        Codec::Jpeg2000 => {}
        Codec::JpegLs => {
            if header.pixel_representation == 1 {
                sign_extend(&mut buf, header.bits_stored);
            }
        }
        _ => correct_unused_bits(&mut buf, header.bits_allocated, header.bits_stored),
    }
    Ok(StoredPixels { frames: range.len(), rows: header.rows, cols: header.cols, samples: header.samples_per_pixel, buf })
}

/// Decoded bytes of frames `range`, once the data behind them is known to exist: native data
/// (`native_len` bytes) must hold every sample it declares, compressed data must be large
/// enough for any codec to make the declared samples of it, and the result must fit the cap.
fn check_sizes(
    obj: &DefaultDicomObject,
    header: &ImageHeader,
    native_len: Option<usize>,
    range: std::ops::Range<usize>,
) -> Result<usize, StudyError> {
    let too_large = || StudyError::Corrupt(format!("image size {}×{}×{} does not fit in memory", header.cols, header.rows, header.frames));
    let samples = header.samples_in(range.len()).ok_or_else(too_large)?;
    let bps = header.bits_allocated.div_ceil(8) as u64;
    let bytes = samples.checked_mul(bps).ok_or_else(too_large)?;
    match native_len {
        Some(have) => {
            let upto = header.samples_in(range.end).ok_or_else(too_large)?;
            let stored = if header.bits_allocated == 1 { upto.div_ceil(8) } else { upto.saturating_mul(bps) };
            let have = have as u64;
            let ybr422 = header.photometric == "YBR_FULL_422" && header.samples_per_pixel == 3 && bps == 1;
            let stored = if ybr422 { stored / 3 * 2 } else { stored };
            if have < stored {
                return Err(truncated(stored as usize, have as usize));
            }
        }
        None => {
            let compressed: u64 =
                obj.get(tags::PIXEL_DATA).and_then(|e| e.value().fragments()).map_or(0, |f| f.iter().map(|b| b.len() as u64).sum());
            guard::check_compressed(samples, compressed)?;
        }
    }
    guard::check_cap(bytes)?;
    usize::try_from(bytes).map_err(|_| too_large())
}

fn is_ow(obj: &DefaultDicomObject) -> bool {
    obj.get(tags::PIXEL_DATA).is_some_and(|e| e.vr() == dicom_core::VR::OW)
}

fn swap_word_halves(raw: &mut [u8]) {
    for c in raw.chunks_exact_mut(4) {
        c.swap(0, 2);
        c.swap(1, 3);
    }
}

/// Native frame `f` as interleaved little-endian samples (bits unpacked to bytes for BA 1).
fn native_frame(bytes: &[u8], h: &ImageHeader, f: usize) -> Result<Vec<u8>, StudyError> {
    let pixels = h.pixels_per_frame();
    if h.bits_allocated == 1 {
        let start_bit = f * pixels * h.samples_per_pixel;
        let n = pixels * h.samples_per_pixel;
        let needed = (start_bit + n).div_ceil(8);
        if bytes.len() < needed {
            return Err(truncated(needed, bytes.len()));
        }
        return Ok((start_bit..start_bit + n).map(|k| (bytes[k / 8] >> (k % 8)) & 1).collect());
    }
    let bps = h.bits_allocated / 8;
    let ybr422 = h.photometric == "YBR_FULL_422" && h.samples_per_pixel == 3 && bps == 1;
    let stored_samples = if ybr422 { 2 } else { h.samples_per_pixel };
    let size = pixels * stored_samples * bps;
    let (start, end) = (f * size, (f + 1) * size);
    if bytes.len() < end {
        return Err(truncated(size * h.frames, bytes.len()));
    }
    let frame = &bytes[start..end];
    if ybr422 {
        // Y1 Y2 Cb Cr per pixel pair → (Y1 Cb Cr)(Y2 Cb Cr).
        let mut out = Vec::with_capacity(pixels * 3);
        for quad in frame.chunks_exact(4) {
            out.extend_from_slice(&[quad[0], quad[2], quad[3], quad[1], quad[2], quad[3]]);
        }
        out.resize(pixels * 3, 0);
        return Ok(out);
    }
    if h.planar_configuration == 1 && h.samples_per_pixel > 1 {
        let spp = h.samples_per_pixel;
        let mut out = vec![0u8; size];
        for s in 0..spp {
            for p in 0..pixels {
                let src = (s * pixels + p) * bps;
                let dst = (p * spp + s) * bps;
                out[dst..dst + bps].copy_from_slice(&frame[src..src + bps]);
            }
        }
        return Ok(out);
    }
    Ok(frame.to_vec())
}

fn truncated(expected: usize, found: usize) -> StudyError {
    StudyError::Corrupt(format!("pixel data is truncated: {found} bytes where {expected} were expected"))
}

/// Facts from a JPEG header that decide decoding and colour handling.
#[derive(Clone, Debug, Default)]
pub struct JpegInfo {
    pub sof: u8,
    pub precision: u8,
    pub component_ids: Vec<u8>,
    pub jfif: bool,
    pub width: usize,
    pub height: usize,
}

pub fn jpeg_info(data: &[u8]) -> Option<JpegInfo> {
    let mut info = JpegInfo::default();
    let mut i = 2;
    if data.get(0..2)? != [0xFF, 0xD8] {
        return None;
    }
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            i += 1;
            continue;
        }
        let marker = data[i + 1];
        if marker == 0xFF || marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            i += if marker == 0xFF { 1 } else { 2 };
            continue;
        }
        let len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
        let body = data.get(i + 4..i + 2 + len)?;
        match marker {
            0xE0 if body.starts_with(b"JFIF") => info.jfif = true,
            0xC0..=0xCF if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                info.sof = marker;
                info.precision = *body.first()?;
                info.height = u16::from_be_bytes([*body.get(1)?, *body.get(2)?]) as usize;
                info.width = u16::from_be_bytes([*body.get(3)?, *body.get(4)?]) as usize;
                let n = *body.get(5)? as usize;
                info.component_ids = (0..n).filter_map(|c| body.get(6 + 3 * c).copied()).collect();
            }
            0xDA => return Some(info),
            _ => {}
        }
        i += 2 + len;
    }
    (info.sof != 0).then_some(info)
}

/// Decodes one JPEG frame; returns little-endian samples and whether pydicom would treat the
/// components as YBR (to be converted to RGB).
fn decode_jpeg(data: &[u8], h: &ImageHeader) -> Result<(Vec<u8>, bool), StudyError> {
    let info = jpeg_info(data).ok_or_else(|| StudyError::Decode("JPEG header not found".into()))?;
    // The decoders size their buffers from the frame header: one larger than the image is a lie.
    if info.width > h.cols || info.height > h.rows {
        return Err(StudyError::Corrupt(format!(
            "the JPEG frame is {}×{}, the header says {}×{}",
            info.width, info.height, h.cols, h.rows
        )));
    }
    let samples: Vec<u8> = if info.precision > 8 && matches!(info.sof, 0xC0 | 0xC1) {
        let img = jpeg12::decode(data).map_err(|e| StudyError::Decode(format!("JPEG: {e}")))?;
        img.samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    } else {
        let mut d = jpeg_decoder::Decoder::new(std::io::Cursor::new(data));
        // Raw components: pydicom decides the colour space itself (below).
        d.set_color_transform(jpeg_decoder::ColorTransform::RGB);
        let px = d.decode().map_err(|e| StudyError::Decode(format!("JPEG: {e}")))?;
        let wide = d.info().is_some_and(|i| i.pixel_format == jpeg_decoder::PixelFormat::L16);
        if wide {
            // jpeg-decoder gives native-endian u16; normalise to little-endian.
            px.chunks_exact(2).flat_map(|c| u16::from_ne_bytes([c[0], c[1]]).to_le_bytes()).collect()
        } else if h.bits_allocated == 16 {
            px.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect()
        } else {
            px
        }
    };
    // pydicom's colour-space conformance for 3-component JPEG.
    let ybr = if h.samples_per_pixel == 3 {
        let ids = &info.component_ids;
        let rgb_ids = ids.len() == 3 && (ids[..] == *b"RGB" || ids[..] == *b"rgb");
        if rgb_ids {
            false
        } else if info.jfif && !h.photometric.contains("YBR") {
            true
        } else {
            h.photometric.starts_with("YBR_FULL")
        }
    } else {
        false
    };
    Ok((samples, ybr))
}

/// Fixes JPEG 2000 data whose codestream signedness disagrees with Pixel Representation, as
/// pydicom does: sign-extend from the codestream's precision.
fn j2k_sign_fix(raw: &mut [u8], signed: bool, precision: usize, h: &ImageHeader) {
    if !h.photometric.starts_with("MONOCHROME") {
        return;
    }
    if signed == (h.pixel_representation == 1) || h.pixel_representation == 0 {
        return;
    }
    let bits = h.bits_allocated;
    if bits == 16 && precision < 16 {
        let shift = 16 - precision;
        for c in raw.chunks_exact_mut(2) {
            let v = ((i16::from_le_bytes([c[0], c[1]]) << shift) >> shift).to_le_bytes();
            c.copy_from_slice(&v);
        }
    } else if bits == 8 && precision < 8 {
        let shift = 8 - precision;
        for b in raw.iter_mut() {
            *b = (((*b as i8) << shift) >> shift) as u8;
        }
    }
}

/// pydicom's YBR_FULL → RGB (float32 matrix, round half up, clamp).
fn ybr_full_to_rgb(raw: &mut [u8]) {
    let g_cb = -0.114f32 * 1.772 / 0.587;
    let g_cr = -0.299f32 * 1.402 / 0.587;
    for px in raw.chunks_exact_mut(3) {
        let y = px[0] as f32;
        let cb = px[1] as f32 - 128.0;
        let cr = px[2] as f32 - 128.0;
        let r = y + cb * 0.0 + cr * 1.402;
        let g = y + cb * g_cb + cr * g_cr;
        let b = y + cb * 1.772 + cr * 0.0;
        for (dst, v) in px.iter_mut().zip([r, g, b]) {
            *dst = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
        }
    }
}

fn typed(raw: Vec<u8>, bits_allocated: usize, signed: bool) -> PixelBuf {
    match (bits_allocated, signed) {
        (1, _) | (8, false) => PixelBuf::U8(raw),
        (8, true) => PixelBuf::I8(raw.into_iter().map(|b| b as i8).collect()),
        (16, false) => PixelBuf::U16(raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()),
        (16, true) => PixelBuf::I16(raw.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect()),
        (_, false) => PixelBuf::U32(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        (_, true) => PixelBuf::I32(raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
    }
}

/// pydicom's `correct_unused_bits`: mask unsigned, sign-extend signed, when BS < BA.
fn correct_unused_bits(buf: &mut PixelBuf, bits_allocated: usize, bits_stored: usize) {
    if bits_stored >= bits_allocated || bits_allocated == 1 {
        return;
    }
    let shift = (bits_allocated - bits_stored) as u32;
    match buf {
        PixelBuf::U8(v) => v.iter_mut().for_each(|x| *x = (*x << shift) >> shift),
        PixelBuf::U16(v) => v.iter_mut().for_each(|x| *x = (*x << shift) >> shift),
        PixelBuf::U32(v) => v.iter_mut().for_each(|x| *x = (*x << shift) >> shift),
        _ => sign_extend(buf, bits_stored),
    }
}

fn sign_extend(buf: &mut PixelBuf, bits: usize) {
    match buf {
        PixelBuf::I8(v) if bits < 8 => {
            let s = 8 - bits as u32;
            v.iter_mut().for_each(|x| *x = (*x << s) >> s)
        }
        PixelBuf::I16(v) if bits < 16 => {
            let s = 16 - bits as u32;
            v.iter_mut().for_each(|x| *x = (*x << s) >> s)
        }
        PixelBuf::I32(v) if bits < 32 => {
            let s = 32 - bits as u32;
            v.iter_mut().for_each(|x| *x = (*x << s) >> s)
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_bits_are_masked_or_sign_extended() {
        let mut u = PixelBuf::U16(vec![0xF123]);
        correct_unused_bits(&mut u, 16, 12);
        assert_eq!(u, PixelBuf::U16(vec![0x0123]));
        let mut s = PixelBuf::I16(vec![0x0800]);
        correct_unused_bits(&mut s, 16, 12);
        assert_eq!(s, PixelBuf::I16(vec![-2048]));
    }

    #[test]
    fn ybr_grey_stays_grey() {
        let mut px = vec![100u8, 128, 128];
        ybr_full_to_rgb(&mut px);
        assert_eq!(px, vec![100, 100, 100]);
    }

    #[test]
    fn shape_follows_numpy_layout() {
        let p = StoredPixels { frames: 1, rows: 2, cols: 3, samples: 1, buf: PixelBuf::U8(vec![0; 6]) };
        assert_eq!(p.shape(), vec![2, 3]);
        let p = StoredPixels { frames: 2, rows: 2, cols: 3, samples: 3, buf: PixelBuf::U8(vec![0; 36]) };
        assert_eq!(p.shape(), vec![2, 2, 3, 3]);
    }
}
