//! Quantities read off a frame: the value under a point in modality units and distances in mm,
//! each saying what it rests on (the unit, which spacing attribute, or none).

use crate::study::{Frame, Meta, Samples};

/// Which attribute a frame's pixel spacing came from; they mean different things.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpacingSource {
    /// Pixel Spacing (or the Pixel Measures functional group): in the patient.
    PixelSpacing,
    /// Imager Pixel Spacing: at the detector, so projection images read larger than the patient.
    ImagerPixelSpacing,
    /// A volume's voxel size (NIfTI, MetaImage).
    Volume,
}

/// The pixel under an image point and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Readout {
    pub x: usize,
    pub y: usize,
    pub value: Value,
    /// The unit of a grey value when the modality fixes one (HU for CT).
    pub unit: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// In modality units (after the Modality LUT / rescale).
    Gray(f32),
    Rgb([u8; 3]),
}

impl Readout {
    /// "(x, y) 40 HU", "(x, y) 1234", "(x, y) RGB 12 34 56".
    pub fn describe(&self) -> String {
        let value = match &self.value {
            Value::Gray(v) => {
                let v = if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
                match self.unit {
                    Some(u) => format!("{v} {u}"),
                    None => v,
                }
            }
            Value::Rgb([r, g, b]) => format!("RGB {r} {g} {b}"),
        };
        format!("({}, {}) {value}", self.x, self.y)
    }
}

/// The unit of a modality's grey values after rescale, where the modality fixes it.
pub fn unit_of(meta: &Meta) -> Option<&'static str> {
    match meta.modality.as_deref() {
        Some("CT") => Some("HU"),
        _ => None,
    }
}

/// The pixel under the image point `(x, y)` (pixel-edge coordinates: pixel `i` covers `[i, i+1)`),
/// or `None` outside the frame.
pub fn value_at(frame: &Frame, x: f32, y: f32) -> Option<Readout> {
    if !(x >= 0.0 && y >= 0.0) {
        return None;
    }
    let (px, py) = (x.floor() as usize, y.floor() as usize);
    if px >= frame.width || py >= frame.height {
        return None;
    }
    let i = py * frame.width + px;
    let value = match &frame.samples {
        Samples::Gray(v) => Value::Gray(*v.get(i)?),
        Samples::Rgb(v) => Value::Rgb(*v.get(i)?),
    };
    let unit = if matches!(value, Value::Gray(_)) { unit_of(&frame.meta) } else { None };
    Some(Readout { x: px, y: py, value, unit })
}

/// A distance between two image points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Length {
    /// In mm when `source` is known, else in pixels.
    pub value: f64,
    pub source: Option<SpacingSource>,
}

impl Length {
    pub fn is_mm(&self) -> bool {
        self.source.is_some()
    }

    /// "23.4 mm", "23.4 mm at the detector (Imager Pixel Spacing)", "57.2 px (no pixel spacing in
    /// the file)".
    pub fn describe(&self) -> String {
        match self.source {
            Some(SpacingSource::PixelSpacing) | Some(SpacingSource::Volume) => format!("{:.1} mm", self.value),
            Some(SpacingSource::ImagerPixelSpacing) => format!("{:.1} mm at the detector (Imager Pixel Spacing)", self.value),
            None => format!("{:.1} px (no pixel spacing in the file)", self.value),
        }
    }
}

/// The distance from `a` to `b` (image points), in mm when the frame's spacing is known.
pub fn distance(meta: &Meta, a: (f64, f64), b: (f64, f64)) -> Length {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    match (meta.pixel_spacing_mm, meta.pixel_spacing_source) {
        // Pixel Spacing is row spacing (between rows, along y), then column spacing (along x).
        (Some([row, col]), source) => {
            Length { value: ((dx * col).powi(2) + (dy * row).powi(2)).sqrt(), source: Some(source.unwrap_or(SpacingSource::PixelSpacing)) }
        }
        (None, _) => Length { value: (dx * dx + dy * dy).sqrt(), source: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn frame(meta: Meta) -> Frame {
        let img = image::GrayImage::from_fn(4, 3, |x, y| image::Luma([(10 * y + x) as u8]));
        let mut f = crate::study::raster::frame_from_image(image::DynamicImage::ImageLuma8(img), Arc::new(meta));
        if let Samples::Gray(v) = &mut f.samples {
            v.iter_mut().for_each(|s| *s -= 1000.0);
        }
        f
    }

    #[test]
    fn the_value_under_a_point_is_that_pixel_in_modality_units() {
        let ct = frame(Meta { modality: Some("CT".into()), ..Meta::default() });
        let r = value_at(&ct, 2.7, 1.2).unwrap();
        assert_eq!((r.x, r.y, r.value.clone(), r.unit), (2, 1, Value::Gray(-988.0), Some("HU")));
        assert_eq!(r.describe(), "(2, 1) -988 HU");
        assert!(value_at(&ct, 4.0, 0.0).is_none() && value_at(&ct, -0.1, 0.0).is_none() && value_at(&ct, f32::NAN, 0.0).is_none());
        let mr = frame(Meta { modality: Some("MR".into()), ..Meta::default() });
        assert_eq!(value_at(&mr, 0.0, 0.0).unwrap().describe(), "(0, 0) -1000");
    }

    #[test]
    fn distances_use_row_spacing_along_y_and_column_spacing_along_x() {
        let meta = Meta { pixel_spacing_mm: Some([2.0, 0.5]), ..Meta::default() };
        let l = distance(&meta, (0.0, 0.0), (6.0, 0.0));
        assert!((l.value - 3.0).abs() < 1e-9 && l.is_mm(), "{l:?}");
        let l = distance(&meta, (0.0, 0.0), (0.0, 6.0));
        assert!((l.value - 12.0).abs() < 1e-9, "{l:?}");
        let detector = Meta { pixel_spacing_source: Some(SpacingSource::ImagerPixelSpacing), ..meta };
        assert!(distance(&detector, (0.0, 0.0), (6.0, 0.0)).describe().contains("at the detector"));
        let none = distance(&Meta::default(), (0.0, 0.0), (3.0, 4.0));
        assert_eq!((none.value, none.is_mm()), (5.0, false));
        assert_eq!(none.describe(), "5.0 px (no pixel spacing in the file)");
    }
}
