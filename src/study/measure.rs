//! Quantities read off a frame: the value under a point in modality units, distances in mm and
//! ROI statistics (mean, SD, min, max, area), each saying what it rests on (the unit, which
//! spacing attribute, or none).

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
    let samples = frame.samples().ok()?;
    let value = match &*samples {
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

/// The outline of a region of interest, inscribed in a box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoiShape {
    Rectangle,
    /// The ellipse inscribed in the box (axis-aligned).
    Ellipse,
}

/// An area, in mm² when the frame's spacing is known, else in pixels².
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Area {
    pub value: f64,
    pub source: Option<SpacingSource>,
}

impl Area {
    pub fn is_mm(&self) -> bool {
        self.source.is_some()
    }

    /// "123.4 mm²", "… mm² at the detector (Imager Pixel Spacing)", "57.2 px² (no pixel spacing in the file)".
    pub fn describe(&self) -> String {
        match self.source {
            Some(SpacingSource::PixelSpacing) | Some(SpacingSource::Volume) => format!("{:.1} mm²", self.value),
            Some(SpacingSource::ImagerPixelSpacing) => format!("{:.1} mm² at the detector (Imager Pixel Spacing)", self.value),
            None => format!("{:.1} px² (no pixel spacing in the file)", self.value),
        }
    }
}

/// Statistics of the grey values inside a region, in modality units (HU for CT).
#[derive(Clone, Debug, PartialEq)]
pub struct RoiStats {
    /// Pixels whose centre lies inside the outline.
    pub pixels: usize,
    pub mean: f64,
    /// Population standard deviation (divided by the pixel count).
    pub sd: f64,
    pub min: f32,
    pub max: f32,
    pub unit: Option<&'static str>,
}

/// What an ROI measures: its area (of the outline, not of the pixels counted) and, on a grey
/// frame with at least one pixel inside, the statistics of its values.
#[derive(Clone, Debug, PartialEq)]
pub struct RoiMeasure {
    pub area: Area,
    /// `None` on a colour frame or when no pixel centre lies inside.
    pub stats: Option<RoiStats>,
}

impl RoiMeasure {
    /// "mean 40.2 HU, SD 3.1, min 31, max 52 · 123.4 mm²".
    pub fn describe(&self) -> String {
        let area = self.area.describe();
        match &self.stats {
            Some(s) => {
                let unit = s.unit.map(|u| format!(" {u}")).unwrap_or_default();
                format!("mean {:.1}{unit}, SD {:.1}, min {}, max {} · {area}", s.mean, s.sd, num(s.min), num(s.max))
            }
            None => format!("no grey values inside · {area}"),
        }
    }
}

fn num(v: f32) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// Measures the region `shape` inscribed in the box `[x1, y1, x2, y2]` (pixel-edge image
/// coordinates). A pixel counts when its centre lies inside the outline (on a rectangle's left or
/// top edge included, right or bottom excluded, so that adjoining boxes share no pixel).
pub fn roi(frame: &Frame, shape: RoiShape, b: [f32; 4]) -> RoiMeasure {
    let [x1, y1, x2, y2] = b.map(f64::from);
    let (w, h) = ((x2 - x1).max(0.0), (y2 - y1).max(0.0));
    let px_area = match shape {
        RoiShape::Rectangle => w * h,
        RoiShape::Ellipse => std::f64::consts::PI * w * h / 4.0,
    };
    let area = match (frame.meta.pixel_spacing_mm, frame.meta.pixel_spacing_source) {
        (Some([row, col]), source) => Area { value: px_area * row * col, source: Some(source.unwrap_or(SpacingSource::PixelSpacing)) },
        (None, _) => Area { value: px_area, source: None },
    };
    // Evicted pixels that cannot be decoded again give the area alone, as colour does.
    let samples = frame.samples();
    let Ok(Samples::Gray(values)) = samples.as_deref() else { return RoiMeasure { area, stats: None } };
    let (cx, cy, rx, ry) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0, w / 2.0, h / 2.0);
    let inside = |x: f64, y: f64| match shape {
        RoiShape::Rectangle => x >= x1 && x < x2 && y >= y1 && y < y2,
        RoiShape::Ellipse => rx > 0.0 && ry > 0.0 && ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0,
    };
    // Only the rows and columns the box spans are visited.
    let col_range = (x1.floor().max(0.0) as usize)..(x2.ceil().max(0.0) as usize).min(frame.width);
    let row_range = (y1.floor().max(0.0) as usize)..(y2.ceil().max(0.0) as usize).min(frame.height);
    let (mut n, mut sum, mut min, mut max) = (0usize, 0.0f64, f32::INFINITY, f32::NEG_INFINITY);
    let mut picked = Vec::new();
    for y in row_range {
        for x in col_range.clone() {
            if !inside(x as f64 + 0.5, y as f64 + 0.5) {
                continue;
            }
            let Some(&v) = values.get(y * frame.width + x) else { continue };
            n += 1;
            sum += f64::from(v);
            min = min.min(v);
            max = max.max(v);
            picked.push(v);
        }
    }
    if n == 0 {
        return RoiMeasure { area, stats: None };
    }
    let mean = sum / n as f64;
    // Two passes: the one-pass formula loses digits on CT values around −1000.
    let sd = (picked.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    RoiMeasure { area, stats: Some(RoiStats { pixels: n, mean, sd, min, max, unit: unit_of(&frame.meta) }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn frame(meta: Meta) -> Frame {
        let img = image::GrayImage::from_fn(4, 3, |x, y| image::Luma([(10 * y + x) as u8]));
        let mut f = crate::study::raster::frame_from_image(image::DynamicImage::ImageLuma8(img), Arc::new(meta));
        if let Ok(Samples::Gray(v)) = f.samples().as_deref() {
            f.pixels = crate::study::Pixels::new(Samples::Gray(v.iter().map(|s| s - 1000.0).collect()));
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

    fn gray(width: usize, height: usize, values: Vec<f32>, meta: Meta) -> Frame {
        let mut f = frame(meta);
        f.width = width;
        f.height = height;
        f.pixels = crate::study::Pixels::new(Samples::Gray(values));
        f
    }

    #[test]
    fn a_rectangle_roi_has_the_statistics_of_the_pixels_it_covers() {
        // 4×3 values 0..12 as HU; the box [1, 0, 3, 2] covers (1,0) (2,0) (1,1) (2,1): 1 2 5 6.
        let ct = gray(4, 3, (0..12).map(|v| v as f32).collect(), Meta { modality: Some("CT".into()), ..Meta::default() });
        let m = roi(&ct, RoiShape::Rectangle, [1.0, 0.0, 3.0, 2.0]);
        let s = m.stats.clone().unwrap();
        assert_eq!((s.pixels, s.min, s.max, s.unit), (4, 1.0, 6.0, Some("HU")));
        assert!((s.mean - 3.5).abs() < 1e-12, "{s:?}");
        // Population SD of 1 2 5 6: sqrt(((2.5²+1.5²)·2)/4) = sqrt(4.25).
        assert!((s.sd - 4.25f64.sqrt()).abs() < 1e-12, "{s:?}");
        assert_eq!((m.area.value, m.area.is_mm()), (4.0, false));
        assert_eq!(m.describe(), "mean 3.5 HU, SD 2.1, min 1, max 6 · 4.0 px² (no pixel spacing in the file)");
        // Half-pixel edges: a pixel counts by its centre.
        let half = roi(&ct, RoiShape::Rectangle, [0.4, 0.0, 1.4, 1.0]).stats.unwrap();
        assert_eq!((half.pixels, half.min), (1, 0.0));
        let none = roi(&ct, RoiShape::Rectangle, [0.6, 0.0, 1.2, 1.0]);
        assert!(none.stats.is_none() && none.describe().starts_with("no grey values inside"));
        // Outside the frame: clipped, no panic.
        let out = roi(&ct, RoiShape::Rectangle, [-5.0, -5.0, 50.0, 50.0]).stats.unwrap();
        assert_eq!((out.pixels, out.min, out.max), (12, 0.0, 11.0));
    }

    #[test]
    fn an_ellipse_roi_counts_the_pixels_whose_centre_is_inside_and_its_area_uses_the_spacing() {
        // 5×5: 100 inside a disc of radius 2.5 about (2.5, 2.5), −100 in the corners outside it.
        let values: Vec<f32> = (0..25)
            .map(|i| {
                let (x, y) = ((i % 5) as f64 + 0.5, (i / 5) as f64 + 0.5);
                if (x - 2.5).powi(2) + (y - 2.5).powi(2) <= 6.25 { 100.0 } else { -100.0 }
            })
            .collect();
        let meta = Meta { modality: Some("MR".into()), pixel_spacing_mm: Some([0.5, 2.0]), ..Meta::default() };
        let mr = gray(5, 5, values, meta);
        let m = roi(&mr, RoiShape::Ellipse, [0.0, 0.0, 5.0, 5.0]);
        let s = m.stats.clone().unwrap();
        // The 4 corner pixels of the 5×5 grid lie outside the inscribed circle: 21 inside.
        assert_eq!((s.pixels, s.min, s.max, s.sd, s.unit), (21, 100.0, 100.0, 0.0, None));
        // π·2.5² px at 0.5 × 2 mm per pixel.
        assert!((m.area.value - std::f64::consts::PI * 6.25).abs() < 1e-9 && m.area.is_mm(), "{:?}", m.area);
        assert_eq!(m.area.describe(), format!("{:.1} mm²", std::f64::consts::PI * 6.25));
        // The rectangle over the same box holds the corners too.
        let r = roi(&mr, RoiShape::Rectangle, [0.0, 0.0, 5.0, 5.0]).stats.unwrap();
        assert_eq!((r.pixels, r.min), (25, -100.0));
        assert!((r.mean - (21.0 * 100.0 - 4.0 * 100.0) / 25.0).abs() < 1e-9);
        // A degenerate ellipse holds nothing.
        assert!(roi(&mr, RoiShape::Ellipse, [1.0, 1.0, 1.0, 4.0]).stats.is_none());
    }

    #[test]
    fn a_colour_frame_gives_an_area_but_no_grey_statistics() {
        let mut rgb = frame(Meta::default());
        rgb.pixels = crate::study::Pixels::new(Samples::Rgb(vec![[1, 2, 3]; 12]));
        let m = roi(&rgb, RoiShape::Rectangle, [0.0, 0.0, 2.0, 2.0]);
        assert_eq!((m.area.value, m.stats), (4.0, None));
    }
}
