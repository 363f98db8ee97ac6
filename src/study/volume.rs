//! NIfTI-1 (.nii, .nii.gz) and MetaImage (.mha, .mhd + data file) volumes as series: one frame per slice.

// NIfTI headers and voxel byte order go through the `nifti` crate. No maintained Rust reader of
// MetaImage exists, so its text header is read here; the voxels reuse the `nifti` crate's
// element conversion. Every size a header declares is checked against the bytes behind it and
// against the memory cap before a buffer is sized from it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nifti::{DataElement, Endianness, NiftiHeader, NiftiType};

use crate::study::guard::{self, human_bytes};
use crate::study::pixels::{PixelBuf, PixelDigest};
use crate::study::present::percentile_window;
use crate::study::series::LoadProgress;
use crate::study::{Frame, Meta, Samples, Series, StudyError, Window, file_sha256};

/// Bytes that one byte of deflate data can become at most (RFC 1951: a 258-byte match costs
/// at least two bits), so a header declaring more than this for its compressed size is lying.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// Slack over the deflate bound for gzip and zlib framing of tiny files.
const DEFLATE_SLACK_BYTES: u64 = 1 << 16;

/// A MetaImage header longer than this is not a header (the binary data follows it in a .mha).
const MAX_METAIMAGE_HEADER_BYTES: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeFormat {
    Nifti,
    MetaImage,
}

impl VolumeFormat {
    pub fn name(self) -> &'static str {
        match self {
            VolumeFormat::Nifti => "nifti",
            VolumeFormat::MetaImage => "metaimage",
        }
    }
}

/// The volume format a file name says, from its extension (.nii, .nii.gz, .mha, .mhd).
pub fn format_of(path: &Path) -> Option<VolumeFormat> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        Some(VolumeFormat::Nifti)
    } else if name.ends_with(".mha") || name.ends_with(".mhd") {
        Some(VolumeFormat::MetaImage)
    } else {
        None
    }
}

pub fn is_volume(path: &Path) -> bool {
    format_of(path).is_some()
}

/// A stored element type both formats share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Element {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl Element {
    fn size(self) -> u64 {
        match self {
            Element::U8 | Element::I8 => 1,
            Element::U16 | Element::I16 => 2,
            Element::U32 | Element::I32 | Element::F32 => 4,
            Element::F64 => 8,
        }
    }

    /// Typed values from raw bytes in `order` (the byte swapping is the `nifti` crate's).
    fn decode(self, raw: Vec<u8>, order: Endianness) -> Result<PixelBuf, StudyError> {
        let bad = |e: nifti::NiftiError| StudyError::Decode(format!("voxel values: {e}"));
        Ok(match self {
            Element::U8 => PixelBuf::U8(raw),
            Element::I8 => PixelBuf::I8(i8::from_raw_vec(raw, order).map_err(bad)?),
            Element::U16 => PixelBuf::U16(u16::from_raw_vec(raw, order).map_err(bad)?),
            Element::I16 => PixelBuf::I16(i16::from_raw_vec(raw, order).map_err(bad)?),
            Element::U32 => PixelBuf::U32(u32::from_raw_vec(raw, order).map_err(bad)?),
            Element::I32 => PixelBuf::I32(i32::from_raw_vec(raw, order).map_err(bad)?),
            Element::F32 => PixelBuf::F32(f32::from_raw_vec(raw, order).map_err(bad)?),
            Element::F64 => PixelBuf::F64(f64::from_raw_vec(raw, order).map_err(bad)?),
        })
    }
}

/// One volume read from a file: the first 3D volume of a 4D file, a 2D image as one slice.
#[derive(Clone, Debug)]
pub struct Volume {
    pub format: VolumeFormat,
    /// Columns, rows, slices as stored (a 2D image has one slice).
    pub dims: [usize; 3],
    /// Volumes in the file (time points of a 4D file); only the first is read.
    pub volumes: usize,
    /// Stored values as the file holds them, before any scaling, laid out `[slice][row][col]`.
    pub voxels: PixelBuf,
    /// Value = stored × slope + intercept (NIfTI scl_slope/scl_inter; 1 and 0 otherwise).
    pub slope: f64,
    pub intercept: f64,
    /// Voxel index (i, j, k) to patient coordinates in mm, LPS as DICOM's: the columns are
    /// the directions of i, j, k scaled by the spacing, then the position of voxel (0, 0, 0).
    pub affine: [[f64; 4]; 3],
    /// Whether the file says how the volume lies in the patient (NIfTI sform/qform, MetaImage
    /// Offset/TransformMatrix); without it only the spacing is known.
    pub oriented: bool,
    /// A display range the file suggests (NIfTI cal_min/cal_max), in scaled values.
    pub display_range: Option<(f32, f32)>,
    pub description: Option<String>,
    pub modality: Option<String>,
}

impl Volume {
    /// Spacing of i, j, k in mm.
    pub fn spacing_mm(&self) -> [f64; 3] {
        let a = &self.affine;
        [0, 1, 2].map(|c| (a[0][c].powi(2) + a[1][c].powi(2) + a[2][c].powi(2)).sqrt())
    }

    /// Digest of the stored values, shaped `[slices, rows, cols]` as DICOM's `[frames, rows, cols]`.
    pub fn digest(&self) -> PixelDigest {
        let [cols, rows, slices] = self.dims;
        let mut shape = Vec::with_capacity(3);
        if slices > 1 {
            shape.push(slices);
        }
        shape.extend([rows, cols]);
        self.voxels.digest(shape)
    }
}

/// Reads a NIfTI or MetaImage file, by its extension.
pub fn read(path: &Path) -> Result<Volume, StudyError> {
    match format_of(path) {
        Some(VolumeFormat::Nifti) => read_nifti(path),
        Some(VolumeFormat::MetaImage) => read_metaimage(path),
        None => Err(StudyError::Unsupported(format!("not a NIfTI or MetaImage file name: {}", path.display()))),
    }
}

/// What a volume's header says of its shape, read without its voxels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeHeader {
    pub format: VolumeFormat,
    /// Columns, rows, slices.
    pub dims: [usize; 3],
    pub volumes: usize,
}

/// Reads only the header of a NIfTI or MetaImage file (folder scans).
pub fn read_header(path: &Path) -> Result<VolumeHeader, StudyError> {
    match format_of(path) {
        Some(VolumeFormat::Nifti) => {
            let (header, _, _) = open_nifti(path)?;
            let (dims, volumes) = nifti_dims(&header);
            Ok(VolumeHeader { format: VolumeFormat::Nifti, dims, volumes })
        }
        Some(VolumeFormat::MetaImage) => {
            let file = File::open(path).map_err(io_error(path))?;
            let h = parse_metaimage_header(&mut BufReader::new(file))?;
            let (dims, volumes) = metaimage_dims(&h)?;
            Ok(VolumeHeader { format: VolumeFormat::MetaImage, dims, volumes })
        }
        None => Err(StudyError::Unsupported(format!("not a NIfTI or MetaImage file name: {}", path.display()))),
    }
}

/// Loads a volume file as a series, one frame per slice, ordered along the slice normal.
pub fn load(path: &Path, progress: LoadProgress) -> Result<Series, StudyError> {
    progress(0.1, "reading the volume");
    let volume = read(path)?;
    progress(0.7, "preparing frames");
    let series = series_from_volume(&volume, path);
    progress(1.0, "done");
    Ok(series)
}

/// The frames of a volume as a series. Slices are turned in plane as DICOM shows them
/// (columns toward the patient's left or posterior, rows toward posterior or feet) when the
/// file says how the volume lies; otherwise they are shown as stored.
pub fn series_from_volume(volume: &Volume, path: &Path) -> Series {
    let [nx, ny, nz] = volume.dims;
    let a = volume.affine;
    let axis = |c: usize| [a[0][c], a[1][c], a[2][c]];
    let (flip_i, flip_j) = if volume.oriented { (wants_flip(axis(0)), wants_flip(axis(1))) } else { (false, false) };
    let signed = |v: [f64; 3], flip: bool| if flip { v.map(|x| -x) } else { v };
    let (row_dir, col_dir) = (unit(signed(axis(0), flip_i)), unit(signed(axis(1), flip_j)));
    let normal = cross(row_dir, col_dir);
    let spacing = volume.spacing_mm();
    let position_of = |i: f64, j: f64, k: f64| [0, 1, 2].map(|r| a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3]);
    let origin_of_slice =
        |k: usize| position_of(if flip_i { (nx - 1) as f64 } else { 0.0 }, if flip_j { (ny - 1) as f64 } else { 0.0 }, k as f64);
    let meta = Arc::new(Meta {
        path: path.to_path_buf(),
        series_description: volume.description.clone(),
        modality: volume.modality.clone(),
        photometric: Some("MONOCHROME2".into()),
        pixel_spacing_mm: Some([spacing[1], spacing[0]]).filter(|s| s.iter().all(|v| v.is_finite() && *v > 0.0)),
        pixel_spacing_source: Some(crate::study::measure::SpacingSource::Volume),
        image_orientation: volume.oriented.then(|| [row_dir[0], row_dir[1], row_dir[2], col_dir[0], col_dir[1], col_dir[2]]),
        sha256: file_sha256(path),
        ..Meta::default()
    });
    // Ascending along the normal, as a DICOM folder is ordered.
    let mut order: Vec<usize> = (0..nz).collect();
    if volume.oriented && dot(axis(2), normal) < 0.0 {
        order.reverse();
    }
    let (s, b) = (volume.slope, volume.intercept);
    let plane = nx * ny;
    let mut frames: Vec<Frame> = order
        .into_iter()
        .map(|k| {
            let mut pixels = Vec::with_capacity(plane);
            for r in 0..ny {
                let j = if flip_j { ny - 1 - r } else { r };
                let start = k * plane + j * nx;
                let value = |i: usize| (volume.voxels.get(start + i) * s + b) as f32;
                if flip_i {
                    pixels.extend((0..nx).rev().map(value));
                } else {
                    pixels.extend((0..nx).map(value));
                }
            }
            let position = origin_of_slice(k);
            Frame {
                width: nx,
                height: ny,
                pixels: crate::study::Pixels::new(Samples::Gray(pixels)),
                default_window: Window { center: 0.0, width: 1.0 },
                voi_lut: None,
                invert: false,
                meta: meta.clone(),
                frame_index: k,
                slice_position: volume.oriented.then(|| dot(position, normal)),
                image_position: volume.oriented.then_some(position),
            }
        })
        .collect();
    // One window for the whole volume, so that scrolling does not change the brightness.
    let window = volume_window(&frames, volume.display_range);
    for f in &mut frames {
        f.default_window = window;
    }
    Series { id: path.display().to_string(), frames, meta, source: path.to_path_buf() }
}

/// The file's display range when it is usable and overlaps the values, else percentiles of
/// values sampled evenly over all slices.
fn volume_window(frames: &[Frame], display_range: Option<(f32, f32)>) -> Window {
    let total: usize = frames.iter().map(|f| f.width * f.height).sum();
    let step = (total / 262_144).max(1);
    let held: Vec<_> = frames.iter().filter_map(|f| f.samples().ok()).collect();
    let sample: Vec<f32> = held
        .iter()
        .flat_map(|s| match &**s {
            Samples::Gray(v) => v.as_slice(),
            Samples::Rgb(_) => &[],
        })
        .step_by(step)
        .copied()
        .collect();
    let (min, max) = sample.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    match display_range {
        Some((lo, hi)) if lo.is_finite() && hi.is_finite() && hi > lo && lo < max && hi > min => Window::from_range(lo, hi),
        _ => percentile_window(&sample),
    }
}

/// Whether an in-plane axis (LPS) points against DICOM's display convention: screen right
/// and down are toward the patient's left, posterior, or feet.
fn wants_flip(v: [f64; 3]) -> bool {
    let d = (0..3).max_by(|&x, &y| v[x].abs().total_cmp(&v[y].abs())).unwrap_or(0);
    if d == 2 { v[2] > 0.0 } else { v[d] < 0.0 }
}

fn unit(v: [f64; 3]) -> [f64; 3] {
    let n = dot(v, v).sqrt();
    if n > 0.0 && n.is_finite() { v.map(|x| x / n) } else { v }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StudyError + '_ {
    move |e| StudyError::Io(format!("{e}: {}", path.display()))
}

/// Checks what `voxels` of `element` would take decoded (f32 frames, or the stored values if
/// wider) against the cap, naming the shape the header declares.
fn check_size(dims: [usize; 3], element: Element) -> Result<u64, StudyError> {
    let voxels = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let stored = voxels.and_then(|v| v.checked_mul(element.size()));
    let (Some(voxels), Some(stored)) = (voxels, stored) else {
        return Err(StudyError::Corrupt(format!(
            "the header declares {}×{}×{} voxels, more than can be addressed",
            dims[0], dims[1], dims[2]
        )));
    };
    guard::check_cap(voxels.saturating_mul(element.size().max(4)))?;
    Ok(stored)
}

/// Refuses compressed data too small to inflate to `expected` bytes.
fn check_deflate_bound(expected: u64, compressed: u64, what: &str) -> Result<(), StudyError> {
    if expected > compressed.saturating_mul(DEFLATE_MAX_RATIO).saturating_add(DEFLATE_SLACK_BYTES) {
        return Err(StudyError::Corrupt(format!(
            "the header declares {} of voxels but the {what} data is {}, which cannot inflate to that much",
            human_bytes(expected),
            human_bytes(compressed)
        )));
    }
    Ok(())
}

/// Reads exactly `expected` bytes from `reader`. With `exact`, one byte more is an error too:
/// the header then does not describe the data. Memory grows with the bytes actually read,
/// never with what the header claims.
fn read_exactly(reader: impl Read, expected: u64, exact: bool, what: &str) -> Result<Vec<u8>, StudyError> {
    let mut out = Vec::new();
    let limit = if exact { expected + 1 } else { expected };
    reader.take(limit).read_to_end(&mut out).map_err(|e| StudyError::Corrupt(format!("the {what} cannot be read: {e}")))?;
    let got = out.len() as u64;
    if got < expected {
        return Err(StudyError::Corrupt(format!(
            "the header declares {} of voxels but the {what} holds only {}: the file is damaged or truncated",
            human_bytes(expected),
            human_bytes(got)
        )));
    }
    if got > expected {
        return Err(StudyError::Corrupt(format!(
            "the {what} holds more than the {} of voxels the header declares: the header does not describe the data",
            human_bytes(expected)
        )));
    }
    Ok(out)
}

fn is_gzip(path: &Path) -> Result<bool, StudyError> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path).map_err(io_error(path))?;
    let n = f.read(&mut magic).map_err(io_error(path))?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

// ---------------------------------------------------------------------------------------------
// NIfTI-1

const NIFTI1_HEADER_BYTES: usize = 348;

fn nifti_element(t: NiftiType) -> Result<Element, StudyError> {
    Ok(match t {
        NiftiType::Uint8 => Element::U8,
        NiftiType::Int8 => Element::I8,
        NiftiType::Uint16 => Element::U16,
        NiftiType::Int16 => Element::I16,
        NiftiType::Uint32 => Element::U32,
        NiftiType::Int32 => Element::I32,
        NiftiType::Float32 => Element::F32,
        NiftiType::Float64 => Element::F64,
        other => return Err(StudyError::Unsupported(format!("NIfTI voxels of type {other:?}"))),
    })
}

/// The header of a NIfTI file, and a reader positioned just after it (inflating a .nii.gz).
fn open_nifti(path: &Path) -> Result<(NiftiHeader, Box<dyn Read>, bool), StudyError> {
    let gz = is_gzip(path)?;
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader: Box<dyn Read> =
        if gz { Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))) } else { Box::new(BufReader::new(file)) };
    let mut raw_header = [0u8; NIFTI1_HEADER_BYTES];
    reader.read_exact(&mut raw_header).map_err(|e| StudyError::Corrupt(format!("the NIfTI header cannot be read whole: {e}")))?;
    Ok((parse_nifti_header(&raw_header)?, reader, gz))
}

/// Columns, rows, slices of the first volume, and the number of volumes.
fn nifti_dims(header: &NiftiHeader) -> ([usize; 3], usize) {
    let ndim = header.dim[0] as usize;
    let dim = |i: usize| if i <= ndim { header.dim[i] as usize } else { 1 };
    ([dim(1), dim(2), dim(3)], (4..=ndim).map(dim).product::<usize>())
}

fn read_nifti(path: &Path) -> Result<Volume, StudyError> {
    let file_len = std::fs::metadata(path).map_err(io_error(path))?.len();
    let (header, mut reader, gz) = open_nifti(path)?;
    let (dims, volumes) = nifti_dims(&header);
    let datatype = header.data_type().map_err(|_| StudyError::Unsupported(format!("NIfTI datatype code {}", header.datatype)))?;
    let element = nifti_element(datatype)?;
    let expected = check_size(dims, element)?;
    let vox_offset = header.vox_offset;
    if !(vox_offset.is_finite() && vox_offset >= NIFTI1_HEADER_BYTES as f32 && vox_offset.fract() == 0.0) {
        return Err(StudyError::Corrupt(format!("the NIfTI voxel offset {vox_offset} is not a byte offset past the header")));
    }
    let skip = vox_offset as u64 - NIFTI1_HEADER_BYTES as u64;
    if gz {
        check_deflate_bound(expected.saturating_add(skip), file_len, "gzip")?;
    } else if file_len < vox_offset as u64 + expected {
        return Err(StudyError::Corrupt(format!(
            "the header declares {}×{}×{} voxels ({}) but the file holds {} after its header: the file is damaged or truncated",
            dims[0],
            dims[1],
            dims[2],
            human_bytes(expected),
            human_bytes(file_len.saturating_sub(vox_offset as u64))
        )));
    }
    // Extensions lie between the header and the voxels.
    let skipped = std::io::copy(&mut reader.by_ref().take(skip), &mut std::io::sink())
        .map_err(|e| StudyError::Corrupt(format!("the NIfTI extensions cannot be read: {e}")))?;
    if skipped < skip {
        return Err(StudyError::Corrupt("the file ends before its voxels start: it is damaged or truncated".into()));
    }
    // A gzip stream must end where the voxels do; only the first volume of a 4D file is read.
    let exact = gz && volumes == 1;
    let raw = read_exactly(reader, expected, exact, if gz { "decompressed data" } else { "file" })?;
    if volumes > 1 {
        log::info!("{}: {volumes} volumes in the file, showing the first", path.display());
    }
    let voxels = element.decode(raw, header.endianness)?;
    let (slope, intercept) = if header.scl_slope.is_finite() && header.scl_slope != 0.0 && header.scl_inter.is_finite() {
        (header.scl_slope as f64, header.scl_inter as f64)
    } else {
        (1.0, 0.0)
    };
    let (affine, oriented) = nifti_affine(&header);
    let display_range = (header.cal_max > header.cal_min).then_some((header.cal_min, header.cal_max));
    let description = String::from_utf8_lossy(&header.descrip).trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_string();
    Ok(Volume {
        format: VolumeFormat::Nifti,
        dims,
        volumes,
        voxels,
        slope,
        intercept,
        affine,
        oriented,
        display_range,
        description: (!description.is_empty()).then_some(description),
        modality: None,
    })
}

/// Parses and checks a NIfTI-1 header: a single file (magic "n+1"), sane dimensions.
fn parse_nifti_header(raw: &[u8; NIFTI1_HEADER_BYTES]) -> Result<NiftiHeader, StudyError> {
    let sizeof_hdr = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    if sizeof_hdr == 540 || sizeof_hdr.swap_bytes() == 540 {
        return Err(StudyError::Unsupported("NIfTI-2 files (only NIfTI-1 is read)".into()));
    }
    let header = NiftiHeader::from_reader(&raw[..]).map_err(|e| match e {
        nifti::NiftiError::InvalidFormat => StudyError::Image("not a NIfTI-1 file (no \"n+1\" magic)".into()),
        other => StudyError::Corrupt(format!("the NIfTI header cannot be parsed: {other}")),
    })?;
    if &header.magic != b"n+1\0" {
        return Err(StudyError::Unsupported("a NIfTI header without its voxels (an .hdr/.img pair); open a single-file .nii".into()));
    }
    let ndim = header.dim[0] as usize;
    if !(1..=7).contains(&ndim) {
        return Err(StudyError::Corrupt(format!("the NIfTI header declares {} dimensions", header.dim[0] as i16)));
    }
    // The file stores dimensions as signed 16-bit; the crate reads them unsigned.
    if let Some(i) = (1..=ndim).find(|&i| header.dim[i] == 0 || header.dim[i] > i16::MAX as u16) {
        return Err(StudyError::Corrupt(format!("the NIfTI header declares dimension {i} as {}", header.dim[i] as i16)));
    }
    Ok(header)
}

/// Voxel to LPS mm from the sform (preferred, as nibabel does), else the qform, else the
/// spacing alone; and whether either transform was present.
fn nifti_affine(h: &NiftiHeader) -> ([[f64; 4]; 3], bool) {
    let ras = if h.sform_code > 0 && [h.srow_x, h.srow_y, h.srow_z].iter().flatten().all(|v| v.is_finite()) {
        Some([h.srow_x, h.srow_y, h.srow_z].map(|r| r.map(f64::from)))
    } else if h.qform_code > 0 {
        quaternion_affine(h)
    } else {
        None
    };
    match ras {
        // RAS to LPS: x and y change sign.
        Some(m) => ([m[0].map(|v| -v), m[1].map(|v| -v), m[2]], true),
        None => {
            let s = |i: usize| {
                let v = (h.pixdim[i] as f64).abs();
                if v.is_finite() && v > 0.0 { v } else { 1.0 }
            };
            ([[s(1), 0.0, 0.0, 0.0], [0.0, s(2), 0.0, 0.0], [0.0, 0.0, s(3), 0.0]], false)
        }
    }
}

/// The qform (NIfTI-1 method 2): rotation from the quaternion (b, c, d), spacing from pixdim,
/// pixdim[0] = -1 flipping k, offset from qoffset. RAS.
fn quaternion_affine(h: &NiftiHeader) -> Option<[[f64; 4]; 3]> {
    let (b, c, d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let a2 = 1.0 - (b * b + c * c + d * d);
    // Rounding leaves a2 slightly negative for a 180° rotation: the quaternion is then (0, b, c, d).
    let (a, b, c, d) = if a2 < 1e-7 {
        let n = (b * b + c * c + d * d).sqrt();
        (0.0, b / n, c / n, d / n)
    } else {
        (a2.sqrt(), b, c, d)
    };
    let r = [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ];
    let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let spacing = |i: usize| {
        let v = (h.pixdim[i] as f64).abs();
        if v.is_finite() && v > 0.0 { v } else { 1.0 }
    };
    let s = [spacing(1), spacing(2), spacing(3) * qfac];
    let offset = [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64];
    let m = [0, 1, 2].map(|row| [r[row][0] * s[0], r[row][1] * s[1], r[row][2] * s[2], offset[row]]);
    m.iter().flatten().all(|v| v.is_finite()).then_some(m)
}

// ---------------------------------------------------------------------------------------------
// MetaImage

/// A MetaImage header: what this reader uses of it.
#[derive(Clone, Debug, Default, PartialEq)]
struct MetaHeader {
    ndims: usize,
    dim_size: Vec<usize>,
    element_type: String,
    channels: usize,
    spacing: Option<Vec<f64>>,
    offset: Option<Vec<f64>>,
    transform: Option<Vec<f64>>,
    big_endian: bool,
    binary: bool,
    compressed: bool,
    compressed_size: Option<u64>,
    header_size: Option<i64>,
    modality: Option<String>,
    data_file: String,
    /// Bytes from the start of the header file to the end of the ElementDataFile line.
    header_len: u64,
}

fn metaimage_element(name: &str) -> Result<Element, StudyError> {
    Ok(match name {
        "MET_UCHAR" => Element::U8,
        "MET_CHAR" => Element::I8,
        "MET_USHORT" => Element::U16,
        "MET_SHORT" => Element::I16,
        // MetaIO's LONG is 4 bytes wide, whatever the platform's long.
        "MET_UINT" | "MET_ULONG" => Element::U32,
        "MET_INT" | "MET_LONG" => Element::I32,
        "MET_FLOAT" => Element::F32,
        "MET_DOUBLE" => Element::F64,
        other => return Err(StudyError::Unsupported(format!("MetaImage elements of type {other}"))),
    })
}

/// Reads `Key = Value` lines up to ElementDataFile, which MetaIO requires to be last.
fn parse_metaimage_header(reader: &mut impl BufRead) -> Result<MetaHeader, StudyError> {
    let mut h = MetaHeader { channels: 1, binary: true, ..MetaHeader::default() };
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_METAIMAGE_HEADER_BYTES - h.header_len.min(MAX_METAIMAGE_HEADER_BYTES))
            .read_until(b'\n', &mut line)
            .map_err(|e| StudyError::Io(e.to_string()))?;
        h.header_len += n as u64;
        if h.header_len >= MAX_METAIMAGE_HEADER_BYTES && !line.ends_with(b"\n") {
            return Err(StudyError::Corrupt("the MetaImage header has no ElementDataFile line in its first megabyte".into()));
        }
        if n == 0 {
            return Err(StudyError::Corrupt("the MetaImage header ends without an ElementDataFile line".into()));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let Some((key, value)) = text.split_once('=') else {
            if first {
                return Err(StudyError::Image("not a MetaImage file (no \"Key = Value\" header)".into()));
            }
            return Err(StudyError::Corrupt(format!("the MetaImage header has a line without '=': {text:.60}")));
        };
        first = false;
        let (key, value) = (key.trim(), value.trim());
        let numbers = |what: &str| -> Result<Vec<f64>, StudyError> {
            value
                .split_whitespace()
                .map(|v| v.parse::<f64>().ok().filter(|x| x.is_finite()))
                .collect::<Option<Vec<f64>>>()
                .ok_or_else(|| StudyError::Corrupt(format!("the MetaImage {what} is not a list of numbers: {value:.60}")))
        };
        let boolean = || value.eq_ignore_ascii_case("true") || value == "1";
        match key.to_ascii_lowercase().as_str() {
            "objecttype" if !value.eq_ignore_ascii_case("image") => {
                return Err(StudyError::Unsupported(format!("MetaImage objects of type {value}")));
            }
            "ndims" => h.ndims = value.parse().map_err(|_| StudyError::Corrupt(format!("the MetaImage NDims is {value:.30}")))?,
            "dimsize" => {
                h.dim_size = value
                    .split_whitespace()
                    .map(|v| v.parse::<usize>().ok())
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| StudyError::Corrupt(format!("the MetaImage DimSize is {value:.60}")))?
            }
            "elementtype" => h.element_type = value.to_ascii_uppercase(),
            "elementnumberofchannels" => {
                h.channels = value.parse().map_err(|_| StudyError::Corrupt(format!("the MetaImage channel count is {value:.30}")))?
            }
            "elementspacing" => h.spacing = Some(numbers("ElementSpacing")?),
            "elementsize" if h.spacing.is_none() => h.spacing = Some(numbers("ElementSize")?),
            "offset" | "origin" | "position" => h.offset = Some(numbers("Offset")?),
            "transformmatrix" | "rotation" | "orientation" => h.transform = Some(numbers("TransformMatrix")?),
            "binarydatabyteordermsb" | "elementbyteordermsb" => h.big_endian = boolean(),
            "binarydata" => h.binary = boolean(),
            "compresseddata" => h.compressed = boolean(),
            "compresseddatasize" => {
                h.compressed_size =
                    Some(value.parse().map_err(|_| StudyError::Corrupt(format!("the MetaImage CompressedDataSize is {value:.30}")))?)
            }
            "headersize" => {
                h.header_size = Some(value.parse().map_err(|_| StudyError::Corrupt(format!("the MetaImage HeaderSize is {value:.30}")))?)
            }
            "modality" => {
                h.modality = match value.to_ascii_uppercase().as_str() {
                    "MET_MOD_CT" => Some("CT".into()),
                    "MET_MOD_MR" => Some("MR".into()),
                    "MET_MOD_NM" => Some("NM".into()),
                    "MET_MOD_US" => Some("US".into()),
                    "MET_MOD_OTHER" | "MET_MOD_UNKNOWN" => None,
                    other => Some(other.trim_start_matches("MET_MOD_").into()),
                }
            }
            "elementdatafile" => {
                h.data_file = value.to_string();
                break;
            }
            _ => {}
        }
    }
    Ok(h)
}

/// Columns, rows, slices of the first volume, and the number of volumes.
fn metaimage_dims(h: &MetaHeader) -> Result<([usize; 3], usize), StudyError> {
    if !(1..=7).contains(&h.ndims) || h.dim_size.len() < h.ndims {
        return Err(StudyError::Corrupt(format!("the MetaImage header declares {} dimensions and sizes {:?}", h.ndims, h.dim_size)));
    }
    if h.dim_size[..h.ndims].contains(&0) {
        return Err(StudyError::Corrupt(format!("the MetaImage header declares a size of 0 in {:?}", h.dim_size)));
    }
    let dim = |i: usize| if i < h.ndims { h.dim_size[i] } else { 1 };
    let volumes = (3..h.ndims).map(dim).try_fold(1usize, |acc, d| acc.checked_mul(d)).unwrap_or(usize::MAX);
    Ok(([dim(0), dim(1), dim(2)], volumes))
}

fn read_metaimage(path: &Path) -> Result<Volume, StudyError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = BufReader::new(file);
    let h = parse_metaimage_header(&mut reader)?;
    let (dims, volumes) = metaimage_dims(&h)?;
    if !h.binary {
        return Err(StudyError::Unsupported("MetaImage with ASCII voxel data (BinaryData = False)".into()));
    }
    if h.channels != 1 {
        return Err(StudyError::Unsupported(format!("MetaImage with {} channels per voxel", h.channels)));
    }
    let element = metaimage_element(&h.element_type)?;
    let expected = check_size(dims, element)?;

    // Where the voxels are: after the header (LOCAL) or in another file beside it.
    let (mut data, data_path, start): (BufReader<File>, PathBuf, u64) = if h.data_file.eq_ignore_ascii_case("LOCAL") {
        (reader, path.to_path_buf(), h.header_len)
    } else if h.data_file.eq_ignore_ascii_case("LIST") || h.data_file.contains('%') {
        return Err(StudyError::Unsupported("MetaImage whose slices are in separate files (ElementDataFile = LIST or a pattern)".into()));
    } else {
        let data_path = path.parent().unwrap_or(Path::new(".")).join(&h.data_file);
        let f = File::open(&data_path)
            .map_err(|e| StudyError::Io(format!("the MetaImage data file cannot be opened ({e}): {}", data_path.display())))?;
        (BufReader::new(f), data_path, 0)
    };
    let data_len = std::fs::metadata(&data_path).map_err(io_error(&data_path))?.len();
    let available = data_len.saturating_sub(start);
    let raw = if h.compressed {
        let compressed = h.compressed_size.unwrap_or(available).min(available);
        check_deflate_bound(expected, compressed, "compressed")?;
        let zipped = (&mut data).take(compressed);
        // MetaIO inflates with zlib's automatic header detection: zlib or gzip framing.
        let mut zipped = BufReader::new(zipped);
        let gz = zipped.fill_buf().map_err(|e| StudyError::Io(e.to_string()))?.starts_with(&[0x1f, 0x8b]);
        if gz {
            read_exactly(flate2::read::GzDecoder::new(zipped), expected, true, "decompressed data")?
        } else {
            read_exactly(flate2::read::ZlibDecoder::new(zipped), expected, true, "decompressed data")?
        }
    } else {
        // HeaderSize skips bytes before the voxels; -1 means the voxels end the file.
        let skip = match h.header_size {
            Some(-1) => available.checked_sub(expected).ok_or_else(|| {
                StudyError::Corrupt(format!(
                    "the header declares {} of voxels but the data file holds only {}",
                    human_bytes(expected),
                    human_bytes(available)
                ))
            })?,
            Some(n) if n >= 0 => n as u64,
            Some(n) => return Err(StudyError::Corrupt(format!("the MetaImage HeaderSize is {n}"))),
            None => 0,
        };
        if available < skip.saturating_add(expected) {
            return Err(StudyError::Corrupt(format!(
                "the header declares {}×{}×{} voxels ({}) but the data holds {}: the file is damaged or truncated",
                dims[0],
                dims[1],
                dims[2],
                human_bytes(expected),
                human_bytes(available.saturating_sub(skip))
            )));
        }
        data.seek(SeekFrom::Start(start + skip)).map_err(io_error(&data_path))?;
        read_exactly(data, expected, false, "data file")?
    };
    if volumes > 1 {
        log::info!("{}: {volumes} volumes in the file, showing the first", path.display());
    }
    let order = if h.big_endian { Endianness::Big } else { Endianness::Little };
    let voxels = element.decode(raw, order)?;
    let (affine, oriented) = metaimage_affine(&h);
    Ok(Volume {
        format: VolumeFormat::MetaImage,
        dims,
        volumes,
        voxels,
        slope: 1.0,
        intercept: 0.0,
        affine,
        oriented,
        display_range: None,
        description: None,
        modality: h.modality.clone(),
    })
}

/// MetaImage geometry is ITK's: LPS already; TransformMatrix lists each axis's direction in
/// turn (n values per axis).
fn metaimage_affine(h: &MetaHeader) -> ([[f64; 4]; 3], bool) {
    let n = h.ndims;
    let spacing = |i: usize| h.spacing.as_ref().and_then(|s| s.get(i)).map(|v| v.abs()).filter(|v| *v > 0.0).unwrap_or(1.0);
    let direction = |axis: usize| -> [f64; 3] {
        let from_file = h.transform.as_ref().filter(|t| t.len() >= n * n).map(|t| {
            let mut d = [0.0; 3];
            for (r, v) in d.iter_mut().enumerate().take(n.min(3)) {
                *v = t[axis * n + r];
            }
            d
        });
        from_file.unwrap_or_else(|| {
            let mut d = [0.0; 3];
            d[axis] = 1.0;
            d
        })
    };
    // A 2D image's third axis is the normal of its plane.
    let dirs = {
        let (d0, d1) = (direction(0), direction(1));
        let d2 = if n >= 3 { direction(2) } else { unit(cross(d0, d1)) };
        [d0, d1, d2]
    };
    let offset = |r: usize| h.offset.as_ref().and_then(|o| o.get(r)).copied().unwrap_or(0.0);
    let m = [0, 1, 2].map(|r| [dirs[0][r] * spacing(0), dirs[1][r] * spacing(1), dirs[2][r] * spacing(2), offset(r)]);
    let oriented = h.offset.is_some() || h.transform.is_some();
    (m, oriented)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text: &str) -> Result<MetaHeader, StudyError> {
        parse_metaimage_header(&mut std::io::Cursor::new(text.as_bytes()))
    }

    #[test]
    fn metaimage_header_fields() {
        let h = header(
            "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementSpacing = 0.5 0.7 2\nOffset = 1 2 3\nTransformMatrix = 1 0 0 0 -1 0 0 0 1\nBinaryDataByteOrderMSB = True\nCompressedData = False\nModality = MET_MOD_CT\nElementDataFile = LOCAL\nrest",
        )
        .unwrap();
        assert_eq!((h.ndims, h.dim_size.clone(), h.element_type.as_str()), (3, vec![4, 3, 2], "MET_SHORT"));
        assert!(h.big_endian && !h.compressed && h.binary);
        assert_eq!(h.modality.as_deref(), Some("CT"));
        assert_eq!(h.data_file, "LOCAL");
        assert_eq!(h.header_len as usize, "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_SHORT\nElementSpacing = 0.5 0.7 2\nOffset = 1 2 3\nTransformMatrix = 1 0 0 0 -1 0 0 0 1\nBinaryDataByteOrderMSB = True\nCompressedData = False\nModality = MET_MOD_CT\nElementDataFile = LOCAL\n".len());
        let (a, oriented) = metaimage_affine(&h);
        assert!(oriented);
        assert_eq!(a, [[0.5, 0.0, 0.0, 1.0], [0.0, -0.7, 0.0, 2.0], [0.0, 0.0, 2.0, 3.0]]);
    }

    #[test]
    fn metaimage_header_errors() {
        assert!(matches!(header("\u{0}\u{1}binary junk\n"), Err(StudyError::Image(_))));
        assert!(matches!(header("ObjectType = Image\nNDims = 2\n"), Err(StudyError::Corrupt(_))));
        assert!(matches!(header("ObjectType = Mesh\nElementDataFile = LOCAL\n"), Err(StudyError::Unsupported(_))));
        assert!(header("NDims = 2\nElementSpacing = 1 x\nElementDataFile = LOCAL\n").is_err());
        // A huge header without ElementDataFile stops at the limit instead of reading on.
        let long = format!("NDims = 2\n{}", "Comment = x\n".repeat(100_000));
        let err = header(&long).unwrap_err().to_string();
        assert!(err.contains("megabyte"), "{err}");
    }

    #[test]
    fn quaternion_identity_and_flip() {
        let mut h =
            NiftiHeader { qform_code: 1, sform_code: 0, pixdim: [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0], ..NiftiHeader::default() };
        h.quatern_x = 10.0;
        let (a, oriented) = nifti_affine(&h);
        assert!(oriented);
        // RAS identity → LPS: x and y negated.
        assert_eq!(a, [[-2.0, 0.0, 0.0, -10.0], [0.0, -3.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0]]);
        // b = 1: 180° about x (a = 0); qfac = -1 flips k.
        h.quatern_b = 1.0;
        h.pixdim[0] = -1.0;
        let (a, _) = nifti_affine(&h);
        assert_eq!(a, [[-2.0, 0.0, 0.0, -10.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0]]);
    }

    #[test]
    fn sform_wins_and_no_transform_means_spacing_only() {
        let h = NiftiHeader {
            sform_code: 1,
            qform_code: 1,
            srow_x: [0.0, 0.0, 1.5, -5.0],
            srow_y: [1.0, 0.0, 0.0, 6.0],
            srow_z: [0.0, 1.0, 0.0, 7.0],
            ..NiftiHeader::default()
        };
        let (a, oriented) = nifti_affine(&h);
        assert!(oriented);
        assert_eq!(a, [[-0.0, -0.0, -1.5, 5.0], [-1.0, -0.0, -0.0, -6.0], [0.0, 1.0, 0.0, 7.0]]);
        let h = NiftiHeader { qform_code: 0, sform_code: 0, pixdim: [1.0, 0.75, 0.5, 2.0, 0.0, 0.0, 0.0, 0.0], ..NiftiHeader::default() };
        let (a, oriented) = nifti_affine(&h);
        assert!(!oriented);
        assert_eq!(a, [[0.75, 0.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]]);
    }

    #[test]
    fn display_flips_follow_dicom() {
        // LPS: columns toward the left, rows toward posterior (axial) or feet (coronal).
        assert!(!wants_flip([1.0, 0.0, 0.0]));
        assert!(wants_flip([-1.0, 0.1, 0.0]));
        assert!(!wants_flip([0.0, 1.0, 0.0]));
        assert!(wants_flip([0.0, 0.0, 1.0]));
        assert!(!wants_flip([0.0, 0.2, -1.0]));
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(format_of(Path::new("a/b.NII.GZ")), Some(VolumeFormat::Nifti));
        assert_eq!(format_of(Path::new("b.nii")), Some(VolumeFormat::Nifti));
        assert_eq!(format_of(Path::new("b.mhd")), Some(VolumeFormat::MetaImage));
        assert_eq!(format_of(Path::new("b.mha")), Some(VolumeFormat::MetaImage));
        assert_eq!(format_of(Path::new("b.gz")), None);
        assert_eq!(format_of(Path::new("b.raw")), None);
    }

    #[test]
    fn deflate_bound() {
        assert!(check_deflate_bound(1 << 20, 100, "gzip").is_err());
        assert!(check_deflate_bound(1 << 16, 0, "gzip").is_ok());
        assert!(check_deflate_bound(10_000_000, 10_000, "gzip").is_ok());
    }
}
