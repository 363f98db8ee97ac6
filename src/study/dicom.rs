//! The dicom-rs facade: opening files (including ones whose data set disagrees with its meta
//! header), reading attributes, and the image header every decode starts from.

use std::borrow::Cow;
use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::mem::InMemElement;
use dicom_object::{DefaultDicomObject, FileMetaTable, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::study::{StudyError, guard};

/// Where the DICOM magic sits: after a 128-byte preamble, at the start, or nowhere.
fn magic_offset(head: &[u8]) -> Option<usize> {
    if head.len() >= 132 && &head[128..132] == b"DICM" {
        Some(128)
    } else if head.starts_with(b"DICM") {
        Some(0)
    } else {
        None
    }
}

/// True when the file starts like a DICOM Part 10 file.
pub fn looks_like_dicom(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let n = f.read(&mut head).unwrap_or(0);
    magic_offset(&head[..n]).is_some()
}

/// A file's bytes: memory-mapped when possible (large pixel data is then never copied whole).
pub enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

pub fn read_bytes(path: &Path) -> Result<FileBytes, StudyError> {
    let file = std::fs::File::open(path).map_err(|e| StudyError::Io(e.to_string()))?;
    // SAFETY: the map is read-only and dropped before we return to the caller's caller; a
    // file changed underneath while mapped yields wrong pixels at worst, as a read would.
    match unsafe { memmap2::Mmap::map(&file) } {
        Ok(m) => Ok(FileBytes::Mapped(m)),
        Err(_) => std::fs::read(path).map(FileBytes::Owned).map_err(|e| StudyError::Io(e.to_string())),
    }
}

/// Opens a DICOM file. `header_only` stops before the pixel data.
pub fn open(path: &Path, header_only: bool) -> Result<DefaultDicomObject, StudyError> {
    let bytes = read_bytes(path)?;
    open_bytes(&bytes, header_only)
}

/// Parses a DICOM file already in memory.
pub fn open_bytes(bytes: &[u8], header_only: bool) -> Result<DefaultDicomObject, StudyError> {
    open_bytes_with(bytes, |_| header_only).map(|(obj, _)| obj)
}

/// Transfer syntaxes whose pixels Tandem reads straight from the file's bytes, so that parsing
/// can stop at the pixel data.
pub fn pixels_read_from_file(ts_uid: &str) -> bool {
    matches!(ts_uid, "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1")
}

/// Parses a file once, stopping before the pixel data when `header_only(transfer syntax)` says
/// so; returns the object and whether it stopped there.
pub fn open_bytes_with(bytes: &[u8], header_only: impl Fn(&str) -> bool) -> Result<(DefaultDicomObject, bool), StudyError> {
    let Some(offset) = magic_offset(bytes) else {
        return Err(StudyError::NotDicom("no DICOM file meta header ('DICM' marker) was found, so its transfer syntax is unknown".into()));
    };
    guard::check_meta_lengths(bytes.get(offset + 4..).unwrap_or_default())?;
    let mut cursor: &[u8] = &bytes[offset..];
    let meta = FileMetaTable::from_reader(&mut cursor).map_err(|e| StudyError::Parse(format!("file meta header: {e}")))?;
    let ts_uid = meta.transfer_syntax().to_string();
    let ts = TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| StudyError::Unsupported(format!("unknown transfer syntax {ts_uid}")))?;
    let header_only = header_only(&ts_uid);
    // Some writers declare explicit VR but write the data set in implicit VR; a plain parse
    // then reads text as a gigabyte-sized length. Detect it from the first element's VR bytes.
    let declared_explicit = ts.uid() != uids::IMPLICIT_VR_LITTLE_ENDIAN && !ts.uid().ends_with(".1.2.1.99");
    let looks_explicit = cursor.len() >= 6 && dicom_core::VR::from_binary([cursor[4], cursor[5]]).is_some();
    if declared_explicit && !looks_explicit && cursor.len() >= 6 && ts.endianness() == dicom_encoding::Endianness::Little {
        let implicit = TransferSyntaxRegistry
            .get(uids::IMPLICIT_VR_LITTLE_ENDIAN)
            .ok_or_else(|| StudyError::Unsupported("implicit VR little endian".into()))?;
        guard::check_element_lengths(cursor, guard::Encoding { explicit_vr: false, big_endian: false })?;
        let obj = InMemDicomObject::read_dataset_with_ts(cursor, implicit).map_err(|e| StudyError::Parse(chain(&e)))?;
        return Ok((obj.with_exact_meta(meta), false));
    }
    // dicom-rs sizes every value from its declared length before reading it: check them all first.
    let encoding = guard::Encoding {
        explicit_vr: ts.uid() != uids::IMPLICIT_VR_LITTLE_ENDIAN,
        big_endian: ts.endianness() == dicom_encoding::Endianness::Big,
    };
    if ts.uid() == uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        let inflated = guard::inflate_bounded(cursor, guard::max_image_bytes())?;
        guard::check_element_lengths(&inflated, encoding)?;
    } else {
        guard::check_element_lengths(cursor, encoding)?;
    }
    // dicom-rs accepts encapsulated pixel data that ends without its sequence delimiter; such a
    // file was cut short, so say so rather than show what happens to be there.
    if !header_only
        && ts.is_encapsulated_pixel_data()
        && !bytes.windows(8).rev().take(1 << 20).any(|w| w == [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0])
    {
        return Err(StudyError::Corrupt("the compressed pixel data has no end marker: the file is truncated".into()));
    }
    let mut options = OpenFileOptions::new().read_preamble(if offset == 128 { ReadPreamble::Always } else { ReadPreamble::Never });
    if header_only {
        options = options.read_until(tags::PIXEL_DATA);
    }
    options.from_reader(bytes).map(|obj| (obj, header_only)).map_err(|e| StudyError::Parse(chain(&e)))
}

/// An error and its sources on one line (dicom-rs's top-level messages are generic).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let msg = inner.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        src = inner.source();
    }
    s
}

/// Attribute access with the conversions Tandem needs; absent or malformed values are `None`.
pub trait Attrs {
    fn elem(&self, tag: Tag) -> Option<&InMemElement>;

    fn str_of(&self, tag: Tag) -> Option<String> {
        let s = self.elem(tag)?.to_str().ok()?;
        let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        (!s.is_empty()).then(|| s.to_string())
    }

    fn int_of(&self, tag: Tag) -> Option<i64> {
        self.elem(tag)?.to_int::<i64>().ok()
    }

    fn floats_of(&self, tag: Tag) -> Option<Vec<f64>> {
        self.elem(tag)?.to_multi_float64().ok().filter(|v| !v.is_empty())
    }

    fn float_of(&self, tag: Tag) -> Option<f64> {
        self.floats_of(tag).and_then(|v| v.first().copied())
    }

    fn ints_of(&self, tag: Tag) -> Option<Vec<i64>> {
        self.elem(tag)?.to_multi_int::<i64>().ok()
    }

    fn items_of(&self, tag: Tag) -> Option<&[InMemDicomObject]> {
        self.elem(tag)?.items()
    }
}

impl Attrs for InMemDicomObject {
    fn elem(&self, tag: Tag) -> Option<&InMemElement> {
        self.get(tag)
    }
}

impl Attrs for DefaultDicomObject {
    fn elem(&self, tag: Tag) -> Option<&InMemElement> {
        self.get(tag)
    }
}

/// LUT data as 16-bit words whatever VR it was stored with.
pub fn lut_words(e: &InMemElement) -> Vec<u16> {
    use dicom_core::value::{PrimitiveValue, Value};
    match e.value() {
        Value::Primitive(PrimitiveValue::U16(v)) => v.to_vec(),
        Value::Primitive(PrimitiveValue::I16(v)) => v.iter().map(|&x| x as u16).collect(),
        Value::Primitive(PrimitiveValue::U8(b)) => b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect(),
        v => v.to_multi_int::<u16>().unwrap_or_default(),
    }
}

/// A LUT descriptor: entry count, first mapped value, bits per entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LutDescriptor {
    pub entries: usize,
    pub first_mapped: i64,
    pub bits: u32,
}

pub fn lut_descriptor(e: &InMemElement, signed_input: bool) -> Option<LutDescriptor> {
    let d = e.to_multi_int::<i64>().ok()?;
    if d.len() < 3 {
        return None;
    }
    let n = (d[0] as u16) as usize;
    let first = if signed_input { d[1] as i16 as i64 } else { d[1] as u16 as i64 };
    Some(LutDescriptor { entries: if n == 0 { 65536 } else { n }, first_mapped: first, bits: d[2].clamp(1, 16) as u32 })
}

/// The attributes that say how the pixel data is laid out.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageHeader {
    pub transfer_syntax: String,
    pub rows: usize,
    pub cols: usize,
    pub frames: usize,
    pub samples_per_pixel: usize,
    pub bits_allocated: usize,
    pub bits_stored: usize,
    pub pixel_representation: u16,
    pub photometric: String,
    pub planar_configuration: u16,
}

impl ImageHeader {
    pub fn read(obj: &DefaultDicomObject) -> Result<ImageHeader, StudyError> {
        if obj.get(tags::PIXEL_DATA).is_none()
            && obj.get(tags::FLOAT_PIXEL_DATA).is_none()
            && obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_none()
        {
            return Err(StudyError::NoPixelData);
        }
        Self::from_attributes(obj)
    }

    /// The layout attributes alone (for a header read that stopped before the pixel data).
    pub fn from_attributes(obj: &DefaultDicomObject) -> Result<ImageHeader, StudyError> {
        let transfer_syntax = obj.meta().transfer_syntax().to_string();
        let required = |tag: Tag, name: &str| -> Result<i64, StudyError> {
            obj.int_of(tag).ok_or_else(|| StudyError::Corrupt(format!("missing or invalid {name}")))
        };
        let rows = required(tags::ROWS, "Rows")?;
        let cols = required(tags::COLUMNS, "Columns")?;
        let bits_allocated = required(tags::BITS_ALLOCATED, "Bits Allocated")?;
        let bits_stored = obj.int_of(tags::BITS_STORED).unwrap_or(bits_allocated);
        let frames = match obj.get(tags::NUMBER_OF_FRAMES) {
            None => 1,
            Some(e) => {
                let raw = e.to_str().map(|s| s.trim().to_string()).unwrap_or_default();
                if raw.is_empty() {
                    1
                } else {
                    raw.parse::<i64>().map_err(|_| StudyError::Corrupt(format!("Number of Frames is not an integer: {raw:?}")))?
                }
            }
        };
        if rows <= 0 || cols <= 0 || frames <= 0 {
            return Err(StudyError::Corrupt(format!("invalid image size {cols}×{rows}×{frames}")));
        }
        // Rows and Columns are US (at most 65535) and Number of Frames an IS (at most 2^31 − 1):
        // larger values were written by a broken tool and would wrap the size arithmetic.
        if rows > 0xFFFF || cols > 0xFFFF || frames > i32::MAX as i64 {
            return Err(StudyError::Corrupt(format!("image size {cols}×{rows}×{frames} is beyond what DICOM can encode")));
        }
        if !matches!(bits_allocated, 1 | 8 | 16 | 32) {
            return Err(StudyError::Unsupported(format!("Bits Allocated {bits_allocated}")));
        }
        Ok(ImageHeader {
            transfer_syntax,
            rows: rows as usize,
            cols: cols as usize,
            frames: frames as usize,
            samples_per_pixel: obj.int_of(tags::SAMPLES_PER_PIXEL).unwrap_or(1).clamp(1, 4) as usize,
            bits_allocated: bits_allocated as usize,
            bits_stored: (bits_stored.clamp(1, bits_allocated)) as usize,
            pixel_representation: obj.int_of(tags::PIXEL_REPRESENTATION).unwrap_or(0).clamp(0, 1) as u16,
            photometric: obj.str_of(tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_else(|| "MONOCHROME2".into()).to_ascii_uppercase(),
            planar_configuration: obj.int_of(tags::PLANAR_CONFIGURATION).unwrap_or(0).clamp(0, 1) as u16,
        })
    }

    pub fn pixels_per_frame(&self) -> usize {
        self.rows * self.cols
    }

    /// Samples in `frames` frames, or `None` when the count does not fit.
    pub fn samples_in(&self, frames: usize) -> Option<u64> {
        (self.rows as u64).checked_mul(self.cols as u64)?.checked_mul(self.samples_per_pixel as u64)?.checked_mul(frames as u64)
    }
}

/// Raw element bytes of native (uncompressed) pixel data, little-endian.
pub fn native_pixel_bytes(obj: &DefaultDicomObject) -> Result<Cow<'_, [u8]>, StudyError> {
    let e = obj.get(tags::PIXEL_DATA).ok_or(StudyError::NoPixelData)?;
    e.to_bytes().map_err(|e| StudyError::Corrupt(format!("pixel data: {e}")))
}

/// The number of slices tiled in a Siemens mosaic image (Image Type containing MOSAIC and the
/// private Number of Images in Mosaic, (0019,100A)); `None` for any other file.
pub fn mosaic_tiles(path: &Path) -> Option<usize> {
    let obj = open(path, true).ok()?;
    let image_type = obj.str_of(tags::IMAGE_TYPE)?;
    if !image_type.to_ascii_uppercase().contains("MOSAIC") {
        return None;
    }
    // Implicit VR files leave this private element as raw bytes (a little-endian US).
    let e = obj.elem(Tag(0x0019, 0x100A))?;
    let n = e.to_int::<i64>().ok().or_else(|| {
        let b = e.to_bytes().ok()?;
        (b.len() >= 2).then(|| u16::from_le_bytes([b[0], b[1]]) as i64)
    })?;
    (n > 1).then_some(n as usize)
}
