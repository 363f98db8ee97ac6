//! From stored values to displayable frames: Modality LUT / rescale, palette colour, RGB depth,
//! default window (Window Center/Width, VOI LUT, else percentiles) and per-frame geometry.

use std::path::Path;
use std::sync::Arc;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use crate::study::dicom::{Attrs, ImageHeader};
use crate::study::measure::SpacingSource;
use crate::study::palette::{ModalityLut, Palette, voi_lut};
use crate::study::pixels::{PixelBuf, StoredPixels};
use crate::study::{Frame, Meta, Samples, StudyError, VoiLut, Window, gray};

/// Identifying and geometric attributes of a DICOM object.
pub fn read_meta(obj: &DefaultDicomObject, path: &Path) -> Meta {
    let valid = |v: &Vec<f64>| v.len() >= 2 && v[0] > 0.0 && v[1] > 0.0;
    let (spacing, spacing_source) = match obj
        .floats_of(tags::PIXEL_SPACING)
        .or_else(|| functional(obj, None, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING))
        .filter(valid)
    {
        Some(v) => (Some([v[0], v[1]]), Some(SpacingSource::PixelSpacing)),
        None => match obj.floats_of(tags::IMAGER_PIXEL_SPACING).filter(valid) {
            Some(v) => (Some([v[0], v[1]]), Some(SpacingSource::ImagerPixelSpacing)),
            None => (None, None),
        },
    };
    let orientation = obj
        .floats_of(tags::IMAGE_ORIENTATION_PATIENT)
        .or_else(|| functional(obj, None, tags::PLANE_ORIENTATION_SEQUENCE, tags::IMAGE_ORIENTATION_PATIENT))
        .filter(|v| v.len() >= 6)
        .map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]);
    Meta {
        path: path.to_path_buf(),
        patient_id: obj.str_of(tags::PATIENT_ID),
        patient_name: obj.str_of(tags::PATIENT_NAME),
        patient_birth_date: obj.str_of(tags::PATIENT_BIRTH_DATE),
        study_uid: obj.str_of(tags::STUDY_INSTANCE_UID),
        study_date: obj.str_of(tags::STUDY_DATE).or_else(|| obj.str_of(tags::SERIES_DATE)).or_else(|| obj.str_of(tags::CONTENT_DATE)),
        study_time: obj.str_of(tags::STUDY_TIME),
        study_description: obj.str_of(tags::STUDY_DESCRIPTION),
        series_uid: obj.str_of(tags::SERIES_INSTANCE_UID),
        series_number: obj.int_of(tags::SERIES_NUMBER),
        series_description: obj.str_of(tags::SERIES_DESCRIPTION),
        modality: obj.str_of(tags::MODALITY),
        frame_of_reference_uid: obj.str_of(tags::FRAME_OF_REFERENCE_UID),
        sop_class_uid: obj.str_of(tags::SOP_CLASS_UID).or_else(|| Some(obj.meta().media_storage_sop_class_uid().to_string())),
        sop_instance_uid: obj.str_of(tags::SOP_INSTANCE_UID).or_else(|| Some(obj.meta().media_storage_sop_instance_uid().to_string())),
        instance_number: obj.int_of(tags::INSTANCE_NUMBER),
        transfer_syntax: Some(obj.meta().transfer_syntax().to_string()),
        lossy_compression: obj.str_of(tags::LOSSY_IMAGE_COMPRESSION),
        photometric: obj.str_of(tags::PHOTOMETRIC_INTERPRETATION),
        pixel_spacing_mm: spacing,
        pixel_spacing_source: spacing_source,
        image_orientation: orientation,
        sha256: None,
    }
}

/// A value from the functional groups: the per-frame item `frame` if given and present,
/// else the shared item (enhanced multi-frame objects).
fn functional(obj: &DefaultDicomObject, frame: Option<usize>, macro_seq: dicom_core::Tag, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    let from_group = |group: &InMemDicomObject| group.items_of(macro_seq)?.first()?.floats_of(tag);
    if let Some(f) = frame
        && let Some(v) = obj.items_of(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|items| items.get(f)).and_then(from_group)
    {
        return Some(v);
    }
    obj.items_of(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).and_then(|items| items.first()).and_then(from_group)
}

/// Window from sparse percentiles of `values` (a sample of at most 256k values).
pub fn percentile_window(values: &[f32]) -> Window {
    let step = (values.len() / 262_144).max(1);
    let sample: Vec<f32> = values.iter().step_by(step).copied().collect();
    let p = gray::percentiles(&sample, &[0.005, 0.995, 0.0, 1.0]);
    let (lo, hi) = if p[1] > p[0] { (p[0], p[1]) } else { (p[2], p[3]) };
    if hi > lo { Window::from_range(lo, hi) } else { Window { center: lo, width: 1.0 } }
}

/// Turns decoded stored values into frames.
pub fn frames_from_stored(
    obj: &DefaultDicomObject,
    header: &ImageHeader,
    stored: &StoredPixels,
    meta: Arc<Meta>,
) -> Result<Vec<Frame>, StudyError> {
    let pi = header.photometric.as_str();
    let signed = header.pixel_representation == 1;
    let palette = if pi == "PALETTE COLOR" && header.samples_per_pixel == 1 {
        Some(Palette::read(obj).ok_or_else(|| StudyError::Corrupt("PALETTE COLOR image without a readable palette".into()))?)
    } else {
        None
    };
    let modality_lut = ModalityLut::read(obj, signed);
    let voi: Option<Arc<VoiLut>> = voi_lut(obj, signed).map(Arc::new);
    let window_from_header = |f: usize| -> Option<Window> {
        let c = obj
            .float_of(tags::WINDOW_CENTER)
            .or_else(|| functional(obj, Some(f), tags::FRAME_VOILUT_SEQUENCE, tags::WINDOW_CENTER).map(|v| v[0]))?;
        let w = obj
            .float_of(tags::WINDOW_WIDTH)
            .or_else(|| functional(obj, Some(f), tags::FRAME_VOILUT_SEQUENCE, tags::WINDOW_WIDTH).map(|v| v[0]))?;
        (w > 0.0 && c.is_finite()).then_some(Window { center: c as f32, width: w as f32 })
    };
    let normal = meta.image_orientation.map(|o| {
        let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
        [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]]
    });
    let n = stored.frame_len();
    let mut frames = Vec::with_capacity(stored.frames);
    for f in 0..stored.frames {
        let range = f * n..(f + 1) * n;
        let (samples, window) = if let Some(p) = &palette {
            let rgb: Vec<[u8; 3]> = range.map(|i| p.apply(stored.buf.get(i))).collect();
            (Samples::Rgb(rgb), Window { center: 127.5, width: 255.0 })
        } else if header.samples_per_pixel >= 3 {
            let shift = match &stored.buf {
                PixelBuf::U8(_) | PixelBuf::I8(_) => 0,
                _ => header.bits_stored.saturating_sub(8),
            };
            let spp = header.samples_per_pixel;
            let rgb = (0..header.pixels_per_frame())
                .map(|p| {
                    let at = |s: usize| ((stored.buf.get(f * n + p * spp + s).max(0.0) as u64) >> shift).min(255) as u8;
                    [at(0), at(1), at(2)]
                })
                .collect();
            (Samples::Rgb(rgb), Window { center: 127.5, width: 255.0 })
        } else {
            let values: Vec<f32> = match &modality_lut {
                Some(lut) => range.map(|i| lut.apply(stored.buf.get(i))).collect(),
                None => {
                    let slope = obj
                        .float_of(tags::RESCALE_SLOPE)
                        .or_else(|| functional(obj, Some(f), tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, tags::RESCALE_SLOPE).map(|v| v[0]))
                        .unwrap_or(1.0);
                    let intercept = obj
                        .float_of(tags::RESCALE_INTERCEPT)
                        .or_else(|| {
                            functional(obj, Some(f), tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, tags::RESCALE_INTERCEPT).map(|v| v[0])
                        })
                        .unwrap_or(0.0);
                    let (slope, intercept) = if slope.is_finite() && slope != 0.0 && intercept.is_finite() {
                        (slope as f32, intercept as f32)
                    } else {
                        (1.0, 0.0)
                    };
                    stored.buf.slice_f32(range).into_iter().map(|v| v * slope + intercept).collect()
                }
            };
            let window = window_from_header(f)
                .or_else(|| voi.as_ref().map(|l| Window::from_range(l.first_mapped, l.first_mapped + l.data.len() as f32)))
                .unwrap_or_else(|| percentile_window(&values));
            (Samples::Gray(values), window)
        };
        let position = functional(obj, Some(f), tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)
            .or_else(|| obj.floats_of(tags::IMAGE_POSITION_PATIENT))
            .filter(|v| v.len() >= 3)
            .map(|v| [v[0], v[1], v[2]]);
        let slice_position = match (position, normal) {
            (Some(p), Some(nrm)) => Some(p[0] * nrm[0] + p[1] * nrm[1] + p[2] * nrm[2]),
            _ => None,
        };
        frames.push(Frame {
            width: header.cols,
            height: header.rows,
            pixels: crate::study::Pixels::new(samples),
            default_window: window,
            voi_lut: if palette.is_none() && header.samples_per_pixel == 1 { voi.clone() } else { None },
            invert: pi == "MONOCHROME1",
            meta: meta.clone(),
            frame_index: f,
            slice_position,
            image_position: position,
        });
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_window_ignores_outliers() {
        let mut v: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        v.push(1e6);
        let w = percentile_window(&v);
        assert!(w.upper() < 1100.0 && w.lower() < 10.0, "{w:?}");
    }
}
