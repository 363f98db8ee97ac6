//! A folder series known by its slices' headers, each slice's pixels decoded only when asked for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dicom_dictionary_std::tags;

use crate::study::dicom::{self, Attrs};
use crate::study::series::{dicom_frames, scan_folder};
use crate::study::{Frame, Meta, StudyError, present};

/// One slice as its header tells: where it lies and how large it is.
#[derive(Clone, Debug)]
pub struct SliceHeader {
    pub path: PathBuf,
    pub meta: Arc<Meta>,
    pub width: usize,
    pub height: usize,
    /// Position along the series normal (mm), when known (as `Frame::slice_position`).
    pub slice_position: Option<f64>,
    /// Image Position (Patient), when known (as `Frame::image_position`).
    pub image_position: Option<[f64; 3]>,
}

/// The slices of a folder's series in display order, the same series and order that
/// `study::load` gives for the folder, without their pixels.
#[derive(Clone, Debug)]
pub struct SliceFiles {
    /// As `Series::id`.
    pub id: String,
    /// The first slice's.
    pub meta: Arc<Meta>,
    pub source: PathBuf,
    pub slices: Vec<SliceHeader>,
}

impl SliceFiles {
    /// The headers of the folder's largest series when it is made of single-frame DICOM files
    /// (what a CT or MR series usually is); `None` for anything else (a file, multi-frame files,
    /// a volume, raster images), which is read whole as before.
    pub fn scan(path: &Path) -> Result<Option<SliceFiles>, StudyError> {
        if !path.is_dir() {
            return Ok(None);
        }
        let quiet = |_: f32, _: &str| {};
        // The same choice as `study::load` (the last of the largest on a tie).
        let Some(group) = scan_folder(path, &quiet)?.into_iter().max_by_key(|g| g.frame_count()) else {
            return Ok(None);
        };
        if group.raster || group.volume || group.frames_per_file.iter().any(|&n| n != 1) {
            return Ok(None);
        }
        let slices = group.files.iter().map(|f| header(f)).collect::<Result<Option<Vec<_>>, _>>()?;
        let Some(first) = slices.as_ref().and_then(|s| s.first()) else { return Ok(None) };
        let meta = first.meta.clone();
        let source = group.files[0].parent().map(Path::to_path_buf).unwrap_or_default();
        let id = meta.series_uid.clone().unwrap_or_else(|| source.display().to_string());
        Ok(slices.map(|slices| SliceFiles { id, meta, source, slices }))
    }

    /// Slice `i` decoded.
    pub fn frame(&self, i: usize) -> Result<Frame, StudyError> {
        let slice = self.slices.get(i).ok_or_else(|| StudyError::Empty(format!("the series has no slice {i}")))?;
        let quiet = |_: f32, _: &str| {};
        dicom_frames(&slice.path, &quiet, 0.0, 1.0)?.into_iter().next().ok_or_else(|| StudyError::Empty("no frames".into()))
    }
}

/// A single-frame file's header, read up to its pixel data; `None` for an enhanced object, whose
/// geometry may sit in functional groups that only decoding reads.
fn header(path: &Path) -> Result<Option<SliceHeader>, StudyError> {
    let obj = dicom::open(path, true)?;
    if obj.get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).is_some() || obj.get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).is_some() {
        return Ok(None);
    }
    let meta = present::read_meta(&obj, path);
    let size = |tag| obj.int_of(tag).filter(|&v| v > 0).map(|v| v as usize);
    let (Some(height), Some(width)) = (size(tags::ROWS), size(tags::COLUMNS)) else {
        return Err(StudyError::Corrupt(format!("no image size in {}", path.display())));
    };
    // As `present::frames_from_stored` projects it, so that pairing sees the same numbers.
    let slice_position = match (obj.floats_of(tags::IMAGE_POSITION_PATIENT).filter(|p| p.len() >= 3), meta.image_orientation) {
        (Some(p), Some(o)) => {
            let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
            let n = [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]];
            Some(p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
        }
        _ => None,
    };
    let image_position = obj.floats_of(tags::IMAGE_POSITION_PATIENT).filter(|p| p.len() >= 3).map(|p| [p[0], p[1], p[2]]);
    Ok(Some(SliceHeader { path: path.to_path_buf(), meta: Arc::new(meta), width, height, slice_position, image_position }))
}
