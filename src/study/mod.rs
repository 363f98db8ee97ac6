//! Pixels in: DICOM files, folders and series, PNG/JPEG/TIFF; geometry and display defaults.

pub mod dicom;
pub mod gray;
pub mod guard;
pub mod j2k;
pub mod jpeg12;
pub mod jpegls;
pub mod measure;
pub mod pairing;
pub mod palette;
pub mod pixels;
pub mod present;
pub mod raster;
pub mod rle;
pub mod series;
pub mod timeline;
pub mod volume;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use gray::GrayImage;
pub use series::{LoadProgress, hang_folder, load};

/// Why a study could not be read. Messages are written for the person looking at the screen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StudyError {
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error("not a DICOM file: {0}")]
    NotDicom(String),
    #[error("the DICOM file cannot be parsed: {0}")]
    Parse(String),
    #[error("the file has no pixel data (e.g. a structured report or a plan)")]
    NoPixelData,
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("the file is damaged: {0}")]
    Corrupt(String),
    #[error("the pixel data cannot be decoded: {0}")]
    Decode(String),
    #[error("the image cannot be read: {0}")]
    Image(String),
    #[error("nothing to show: {0}")]
    Empty(String),
}

/// A display window in modality units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Window {
    pub center: f32,
    pub width: f32,
}

impl Window {
    pub fn from_range(lo: f32, hi: f32) -> Window {
        Window { center: (lo + hi) / 2.0, width: (hi - lo).max(1e-3) }
    }

    pub fn lower(&self) -> f32 {
        self.center - self.width / 2.0
    }

    pub fn upper(&self) -> f32 {
        self.center + self.width / 2.0
    }
}

/// A VOI LUT table (PS3.3 C.11.2): input `first_mapped + i` → `data[i]` out of `2^bits`.
#[derive(Clone, Debug, PartialEq)]
pub struct VoiLut {
    pub first_mapped: f32,
    pub data: Vec<f32>,
    pub max_output: f32,
    pub explanation: Option<String>,
}

/// What identifies an image and where it sits, as far as the source tells.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Meta {
    pub path: PathBuf,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub patient_birth_date: Option<String>,
    pub study_uid: Option<String>,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub study_description: Option<String>,
    pub series_uid: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub modality: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub instance_number: Option<i64>,
    pub transfer_syntax: Option<String>,
    pub photometric: Option<String>,
    /// Row spacing, column spacing (mm).
    pub pixel_spacing_mm: Option<[f64; 2]>,
    /// Which attribute `pixel_spacing_mm` came from (not serialized: `tandem info` keeps its keys).
    #[serde(skip)]
    pub pixel_spacing_source: Option<measure::SpacingSource>,
    pub image_orientation: Option<[f64; 6]>,
    /// sha256 of the file (raster images: what identifies the pixels).
    pub sha256: Option<String>,
}

impl Meta {
    /// "2024-03-01" from a DICOM DA "20240301".
    pub fn study_date_pretty(&self) -> Option<String> {
        let d = self.study_date.as_deref()?;
        if d.len() == 8 && d.chars().all(|c| c.is_ascii_digit()) {
            Some(format!("{}-{}-{}", &d[0..4], &d[4..6], &d[6..8]))
        } else {
            Some(d.to_string())
        }
    }
}

/// Pixel values of one frame, ready to display.
#[derive(Clone, Debug)]
pub enum Samples {
    /// Modality values (after Modality LUT / rescale).
    Gray(Vec<f32>),
    Rgb(Vec<[u8; 3]>),
}

/// One 2D image.
#[derive(Clone, Debug)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub samples: Samples,
    pub default_window: Window,
    pub voi_lut: Option<Arc<VoiLut>>,
    /// MONOCHROME1: high values are displayed dark.
    pub invert: bool,
    pub meta: Arc<Meta>,
    /// Index of this frame within its source file.
    pub frame_index: usize,
    /// Position along the series normal (mm), when known.
    pub slice_position: Option<f64>,
    pub image_position: Option<[f64; 3]>,
}

impl Frame {
    /// Greyscale view for registration and grounding (luminance for colour), as displayed
    /// (MONOCHROME1 inverted so that bright means the same thing in every image).
    pub fn to_gray(&self) -> GrayImage {
        let data = match &self.samples {
            Samples::Gray(v) => {
                if self.invert {
                    v.iter().map(|&x| -x).collect()
                } else {
                    v.clone()
                }
            }
            Samples::Rgb(v) => v.iter().map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect(),
        };
        GrayImage { width: self.width, height: self.height, data }
    }

    pub fn is_color(&self) -> bool {
        matches!(self.samples, Samples::Rgb(_))
    }
}

/// Ordered frames of one series (a multi-frame file, or a folder of single frames).
#[derive(Clone, Debug)]
pub struct Series {
    /// Stable identifier: the Series Instance UID, or the path for non-DICOM input.
    pub id: String,
    pub frames: Vec<Frame>,
    pub meta: Arc<Meta>,
    /// Where it was loaded from.
    pub source: PathBuf,
}

impl Series {
    /// "CT  Chest 1.0  (12 frames)".
    pub fn describe(&self) -> String {
        let m = &self.meta;
        let mut parts = Vec::new();
        if let Some(x) = &m.modality {
            parts.push(x.clone());
        }
        if let Some(x) = &m.series_description {
            parts.push(x.clone());
        }
        if parts.is_empty() {
            parts.push(self.source.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        }
        format!("{} ({} frame{})", parts.join(" "), self.frames.len(), if self.frames.len() == 1 { "" } else { "s" })
    }
}

/// sha256 of a file's bytes, hex.
pub fn file_sha256(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).ok()?;
    Some(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}
