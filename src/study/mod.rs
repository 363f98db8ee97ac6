//! Pixels in: DICOM files, folders and series, PNG/JPEG/TIFF; geometry and display defaults.

pub mod dicom;
pub mod gray;
pub mod guard;
pub mod j2k;
pub mod jpeg12;
pub mod jpegls;
pub mod measure;
pub mod orientation;
pub mod pairing;
pub mod palette;
pub mod pixels;
pub mod present;
pub mod progressive;
pub mod raster;
pub mod resident;
pub mod rle;
pub mod series;
pub mod slices;
pub mod source;
pub mod timeline;
pub mod volume;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use gray::GrayImage;
pub use resident::{PixelCache, Pixels};
pub use series::{LoadProgress, hang_folder, load};
pub use source::Source;

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
    /// Lossy Image Compression (0028,2110): "01" when lossy compression was ever applied to the
    /// pixels (the file may be uncompressed now), "00" when not; `None` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossy_compression: Option<String>,
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

/// Transfer syntaxes whose pixels are lossy by their nature: the lossy JPEG processes (baseline,
/// extended, spectral selection, progressive, hierarchical; most retired), JPEG-LS near-lossless,
/// MPEG-2, MPEG-4 AVC and HEVC video (and their fragmentable forms), and JPEG XL recompressed JPEG.
/// The JPEG 2000, HTJ2K and JPEG XL syntaxes that only *may* be lossy are left to Lossy Image
/// Compression (0028,2110), which a writer must set when they were.
pub fn is_lossy_transfer_syntax(uid: &str) -> bool {
    let uid = uid.trim_end_matches('\0').trim();
    let Some(tail) = uid.strip_prefix("1.2.840.10008.1.2.4.") else { return false };
    let process: u32 = match tail.split('.').next().and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => return false,
    };
    matches!(process, 50..=56 | 59..=64 | 81 | 100..=108 | 111)
}

impl Meta {
    /// True when the pixels went through lossy compression: Lossy Image Compression (0028,2110)
    /// is "01", or the transfer syntax is lossy by nature (a baseline JPEG is lossy whatever the
    /// attribute says).
    pub fn is_lossy(&self) -> bool {
        self.lossy_compression.as_deref().is_some_and(|v| v.trim() == "01")
            || self.transfer_syntax.as_deref().is_some_and(is_lossy_transfer_syntax)
    }

    /// The patient's name as read: "DOE^JANE^M" → "DOE, JANE M" (the alphabetic group of a
    /// DICOM person name; empty components dropped). `None` when absent or blank.
    pub fn patient_name_pretty(&self) -> Option<String> {
        let raw = self.patient_name.as_deref()?.split('=').next()?.trim();
        let parts: Vec<&str> = raw.split('^').map(str::trim).collect();
        let family = parts.first().copied().unwrap_or("");
        // Given, middle, then prefix and suffix around them as a reader would say them.
        let given: Vec<&str> =
            [parts.get(3), parts.get(1), parts.get(2), parts.get(4)].into_iter().flatten().copied().filter(|p| !p.is_empty()).collect();
        let name = match (family.is_empty(), given.is_empty()) {
            (true, true) => return None,
            (false, true) => family.to_string(),
            (true, false) => given.join(" "),
            (false, false) => format!("{family}, {}", given.join(" ")),
        };
        Some(name)
    }

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
    /// The samples, held for good or evictable (`resident`): read them through `samples()`.
    pub pixels: Pixels,
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
    /// The samples, decoded again from the file when they were evicted.
    pub fn samples(&self) -> Result<Arc<Samples>, StudyError> {
        self.pixels.get()
    }

    /// Greyscale view for registration and grounding (luminance for colour), as displayed
    /// (MONOCHROME1 inverted so that bright means the same thing in every image).
    pub fn try_gray(&self) -> Result<GrayImage, StudyError> {
        let samples = self.samples()?;
        let data = match &*samples {
            Samples::Gray(v) => {
                if self.invert {
                    v.iter().map(|&x| -x).collect()
                } else {
                    v.clone()
                }
            }
            Samples::Rgb(v) => v.iter().map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect(),
        };
        Ok(GrayImage { width: self.width, height: self.height, data })
    }

    /// `try_gray`, black when an evicted frame cannot be decoded again (its file went away or
    /// changed after loading; logged): for the callers that had no error path before frames
    /// could be evicted. Those that can say why use `try_gray`.
    pub fn to_gray(&self) -> GrayImage {
        self.try_gray().unwrap_or_else(|_| GrayImage { width: self.width, height: self.height, data: vec![0.0; self.width * self.height] })
    }

    pub fn is_color(&self) -> bool {
        self.pixels.is_color()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_from_the_attribute_or_a_lossy_transfer_syntax() {
        let meta = |ts: &str, attr: Option<&str>| Meta {
            transfer_syntax: Some(ts.into()),
            lossy_compression: attr.map(String::from),
            ..Meta::default()
        };
        let explicit_le = "1.2.840.10008.1.2.1";
        assert!(!meta(explicit_le, None).is_lossy());
        assert!(meta(explicit_le, Some("01")).is_lossy(), "decompressed once-lossy pixels stay lossy");
        assert!(!meta(explicit_le, Some("00")).is_lossy());
        assert!(meta("1.2.840.10008.1.2.4.50", None).is_lossy(), "JPEG baseline");
        assert!(meta("1.2.840.10008.1.2.4.50", Some("00")).is_lossy(), "baseline JPEG is lossy whatever the attribute says");
        assert!(meta("1.2.840.10008.1.2.4.81", None).is_lossy(), "JPEG-LS near-lossless");
        assert!(meta("1.2.840.10008.1.2.4.102.1", None).is_lossy(), "fragmentable MPEG-4");
        for lossless in
            ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"]
        {
            assert!(!meta(lossless, None).is_lossy(), "{lossless}");
        }
        assert!(meta("1.2.840.10008.1.2.4.91", Some("01")).is_lossy(), "JPEG 2000 that says it is lossy");
        assert!(!meta("1.2.840.10008.1.2.4.91", Some("00")).is_lossy());
    }

    #[test]
    fn a_person_name_reads_family_comma_given() {
        let name = |n: &str| Meta { patient_name: Some(n.into()), ..Meta::default() }.patient_name_pretty();
        assert_eq!(name("DOE^JANE^M").as_deref(), Some("DOE, JANE M"));
        assert_eq!(name("DOE^JANE^^DR").as_deref(), Some("DOE, DR JANE"));
        assert_eq!(name("Yamada^Tarou=山田^太郎=やまだ^たろう").as_deref(), Some("Yamada, Tarou"));
        assert_eq!(name("ANONYMOUS").as_deref(), Some("ANONYMOUS"));
        assert_eq!(name("^^^"), None);
        assert_eq!(Meta::default().patient_name_pretty(), None);
    }
}
