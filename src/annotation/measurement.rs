//! Measurements as findings: a ruler or an ROI on one image and frame, its geometry and what it
//! measured there (schema version 3), so that they are saved, undone and exported like boxes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::annotation::document::{Finding, FindingKind, ImageBox, Source, round_box};
use crate::grounding::BBox;
use crate::study::Frame;
use crate::study::measure::{self, Area, Length, RoiShape, SpacingSource};

/// What was drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// A ruler: the distance between two points.
    Line,
    /// A rectangular ROI: the finding's box.
    Rectangle,
    /// An elliptical ROI: the ellipse inscribed in the finding's box.
    Ellipse,
}

impl Shape {
    /// The label a new measurement gets (editable like any label).
    pub fn label(self) -> &'static str {
        match self {
            Shape::Line => "ruler",
            Shape::Rectangle => "rectangle ROI",
            Shape::Ellipse => "ellipse ROI",
        }
    }

    fn roi(self) -> Option<RoiShape> {
        match self {
            Shape::Line => None,
            Shape::Rectangle => Some(RoiShape::Rectangle),
            Shape::Ellipse => Some(RoiShape::Ellipse),
        }
    }
}

/// A measurement finding's geometry and values. The image and frame are those of the finding's
/// one box; an ROI's outline is that box; a line's box is the line's bounding box (at least 1 px
/// each way, so that it is a box) and its ends are `points`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub shape: Shape,
    /// A line's two ends (image points); empty for an ROI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<[f32; 2]>,
    /// `"mm"` or `"px"`: the unit of `length`, and squared of `area`.
    pub unit: String,
    /// Where the spacing came from: `"pixel_spacing"`, `"imager_pixel_spacing"` (at the detector) or
    /// `"volume"`; absent in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing: Option<String>,
    /// A line's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<f64>,
    /// An ROI's area (of its outline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<f64>,
    /// An ROI's grey-value statistics (none on a colour image or when no pixel lies inside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Grey values inside an ROI, in modality units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Pixels whose centre lies inside the outline.
    pub pixels: u64,
    pub mean: f64,
    /// Population standard deviation.
    pub sd: f64,
    pub min: f64,
    pub max: f64,
    /// `"HU"` for CT; absent where the modality fixes no unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn spacing_name(s: Option<SpacingSource>) -> Option<String> {
    s.map(|s| {
        match s {
            SpacingSource::PixelSpacing => "pixel_spacing",
            SpacingSource::ImagerPixelSpacing => "imager_pixel_spacing",
            SpacingSource::Volume => "volume",
        }
        .to_string()
    })
}

fn spacing_source(name: Option<&str>, unit: &str) -> Option<SpacingSource> {
    match name {
        Some("imager_pixel_spacing") => Some(SpacingSource::ImagerPixelSpacing),
        Some("volume") => Some(SpacingSource::Volume),
        Some(_) => Some(SpacingSource::PixelSpacing),
        None if unit == "mm" => Some(SpacingSource::PixelSpacing),
        None => None,
    }
}

/// Values are stored to a precision far below what a reader can see, so that a save is stable.
fn round6(v: f64) -> f64 {
    if v.is_finite() { (v * 1e6).round() / 1e6 } else { v }
}

impl Measured {
    /// The distance from `a` to `b` (image points) on `frame`.
    pub fn line(frame: &Frame, a: [f32; 2], b: [f32; 2]) -> Measured {
        let l = measure::distance(&frame.meta, (a[0] as f64, a[1] as f64), (b[0] as f64, b[1] as f64));
        Measured {
            shape: Shape::Line,
            points: vec![a, b],
            unit: if l.is_mm() { "mm" } else { "px" }.into(),
            spacing: spacing_name(l.source),
            length: Some(round6(l.value)),
            area: None,
            stats: None,
            extra: Map::new(),
        }
    }

    /// The ROI `shape` inscribed in `b` on `frame`. A line is measured between its points instead.
    pub fn roi(frame: &Frame, shape: Shape, b: [f32; 4]) -> Measured {
        let Some(roi) = shape.roi() else { return Measured::line(frame, [b[0], b[1]], [b[2], b[3]]) };
        let m = measure::roi(frame, roi, b);
        Measured {
            shape,
            points: Vec::new(),
            unit: if m.area.is_mm() { "mm" } else { "px" }.into(),
            spacing: spacing_name(m.area.source),
            length: None,
            area: Some(round6(m.area.value)),
            stats: m.stats.map(|s| Stats {
                pixels: s.pixels as u64,
                mean: round6(s.mean),
                sd: round6(s.sd),
                min: f64::from(s.min),
                max: f64::from(s.max),
                unit: s.unit.map(str::to_string),
                extra: Map::new(),
            }),
            extra: Map::new(),
        }
    }

    /// Measured again on `frame` with the geometry it has (after an edit), keeping unknown fields.
    pub fn remeasured(&self, frame: &Frame, b: [f32; 4]) -> Measured {
        let mut m = match (self.shape, self.points.as_slice()) {
            (Shape::Line, [a, z]) => Measured::line(frame, *a, *z),
            _ => Measured::roi(frame, self.shape, b),
        };
        m.extra = self.extra.clone();
        m
    }

    pub fn length(&self) -> Option<Length> {
        self.length.map(|value| Length { value, source: spacing_source(self.spacing.as_deref(), &self.unit) })
    }

    pub fn area(&self) -> Option<Area> {
        self.area.map(|value| Area { value, source: spacing_source(self.spacing.as_deref(), &self.unit) })
    }

    /// What the viewer and the findings list show: "23.4 mm", "mean 40.2 HU, SD 3.1, min 31,
    /// max 52 · 123.4 mm²".
    pub fn describe(&self) -> String {
        if let Some(l) = self.length() {
            return l.describe();
        }
        let area = self.area().map(|a| a.describe()).unwrap_or_default();
        match &self.stats {
            Some(s) => {
                let unit = s.unit.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
                let n = |v: f64| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
                format!("mean {:.1}{unit}, SD {:.1}, min {}, max {} · {area}", s.mean, s.sd, n(s.min), n(s.max))
            }
            None => format!("no grey values inside · {area}"),
        }
    }

    /// A line's geometry after its box was moved or resized from `from` to `to`: its ends follow
    /// the box (the same affine map); an ROI has no points of its own.
    pub fn follow_box(&mut self, from: BBox, to: BBox) {
        let sx = if from.width() > 0.0 { to.width() / from.width() } else { 1.0 };
        let sy = if from.height() > 0.0 { to.height() / from.height() } else { 1.0 };
        for p in &mut self.points {
            *p = [round2(to.x1 + (p[0] - from.x1) * sx), round2(to.y1 + (p[1] - from.y1) * sy)];
        }
    }
}

fn round2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

/// A line's box: its bounding box, widened about the line to at least 1 px each way.
pub fn line_box(a: [f32; 2], b: [f32; 2]) -> BBox {
    let widen = |lo: f32, hi: f32| if hi - lo < 1.0 { ((lo + hi) / 2.0 - 0.5, (lo + hi) / 2.0 + 0.5) } else { (lo, hi) };
    let (x1, x2) = widen(a[0].min(b[0]), a[0].max(b[0]));
    let (y1, y2) = widen(a[1].min(b[1]), a[1].max(b[1]));
    BBox::new(x1, y1, x2, y2)
}

/// A new measurement finding by a person on `image` (its key), `frame`: accepted, labelled by its
/// shape, measured on `pixels` (that frame). `geometry` is an ROI's box, or a line's two ends as
/// `[ax, ay, bx, by]`.
pub fn new_finding(shape: Shape, image: &str, frame: u32, geometry: [f32; 4], pixels: &Frame, user: Option<String>, now: &str) -> Finding {
    let (b, measured) = match shape {
        Shape::Line => {
            let (a, z) = ([round2(geometry[0]), round2(geometry[1])], [round2(geometry[2]), round2(geometry[3])]);
            (line_box(a, z), Measured::line(pixels, a, z))
        }
        _ => {
            let b = round_box(BBox::new(geometry[0], geometry[1], geometry[2], geometry[3]));
            (b, Measured::roi(pixels, shape, b.to_array()))
        }
    };
    let mut f = Finding::new(FindingKind::Measurement, shape.label(), vec![ImageBox::new(image, frame, b)], Source::Human { user }, now);
    f.measurement = Some(measured);
    f
}

/// What is wrong with a finding's measurement, one line each.
pub fn problems(f: &Finding) -> Vec<String> {
    let mut out = Vec::new();
    match (&f.measurement, f.kind) {
        (None, FindingKind::Measurement) => out.push(format!("finding {} is a measurement without its measurement", f.id)),
        (None, _) => {}
        (Some(m), _) => {
            if f.boxes.len() != 1 {
                out.push(format!("measurement {} has {} boxes; a measurement is on one image and frame", f.id, f.boxes.len()));
            }
            if m.shape == Shape::Line && (m.points.len() != 2 || m.points.iter().flatten().any(|v| !v.is_finite())) {
                out.push(format!("the ruler {} needs two finite points", f.id));
            }
            if m.unit != "mm" && m.unit != "px" {
                out.push(format!("measurement {} has unit {:?}; \"mm\" or \"px\"", f.id, m.unit));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::{Meta, Samples};
    use std::sync::Arc;

    fn ct(spacing: Option<[f64; 2]>) -> Frame {
        let img = image::GrayImage::from_fn(10, 10, |x, _| image::Luma([x as u8]));
        let meta = Meta { modality: Some("CT".into()), pixel_spacing_mm: spacing, ..Meta::default() };
        let mut f = crate::study::raster::frame_from_image(image::DynamicImage::ImageLuma8(img), Arc::new(meta));
        if let Ok(Samples::Gray(v)) = f.samples().as_deref() {
            f.pixels = crate::study::Pixels::new(Samples::Gray(v.iter().map(|s| s - 1000.0).collect()));
        }
        f
    }

    #[test]
    fn a_ruler_is_a_finding_with_its_ends_and_length_and_round_trips_as_json() {
        let frame = ct(Some([0.5, 0.5]));
        let f = new_finding(Shape::Line, "current", 0, [1.0, 2.0, 7.0, 2.0], &frame, None, "t");
        assert_eq!((f.kind, f.label.as_str()), (FindingKind::Measurement, "ruler"));
        // A horizontal line still has a box: 1 px tall about it.
        assert_eq!(f.boxes[0].bbox, [1.0, 1.5, 7.0, 2.5]);
        let m = f.measurement.clone().unwrap();
        assert_eq!((m.length, m.unit.as_str(), m.spacing.as_deref()), (Some(3.0), "mm", Some("pixel_spacing")));
        assert_eq!(m.describe(), "3.0 mm");
        assert!(problems(&f).is_empty());
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains(r#""measurement":{"shape":"line","points":[[1.0,2.0],[7.0,2.0]],"unit":"mm""#), "{json}");
        let back: Finding = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn an_roi_measures_its_box_and_follows_an_edit() {
        let frame = ct(None);
        let f = new_finding(Shape::Ellipse, "prior", 0, [0.0, 0.0, 4.0, 4.0], &frame, Some("ann".into()), "t");
        let m = f.measurement.clone().unwrap();
        let s = m.stats.clone().unwrap();
        // The ellipse inscribed in 4×4 holds 12 pixel centres (the 4 corners are out): columns
        // 0 and 3 twice, 1 and 2 four times → values −1000 −997 ×2 and −999 −998 ×4, mean −998.5.
        assert_eq!((s.pixels, s.min, s.max, s.unit.as_deref()), (12, -1000.0, -997.0, Some("HU")));
        assert!((s.mean + 998.5).abs() < 1e-9, "{s:?}");
        assert_eq!((m.unit.as_str(), m.spacing.clone()), ("px", None));
        assert!(m.describe().ends_with("px² (no pixel spacing in the file)"), "{}", m.describe());
        // Moved right by 2: every column reads 2 HU more.
        let moved = m.remeasured(&frame, [2.0, 0.0, 6.0, 4.0]);
        assert!((moved.stats.unwrap().mean + 996.5).abs() < 1e-9);
    }

    #[test]
    fn a_line_follows_its_box() {
        let frame = ct(None);
        let mut m = Measured::line(&frame, [2.0, 2.0], [6.0, 4.0]);
        m.follow_box(BBox::new(2.0, 2.0, 6.0, 4.0), BBox::new(3.0, 2.0, 11.0, 4.0));
        assert_eq!(m.points, vec![[3.0, 2.0], [11.0, 4.0]]);
        let again = m.remeasured(&frame, [0.0; 4]);
        assert_eq!(again.length, Some((64.0f64 + 4.0).sqrt().mul_add(1e6, 0.0).round() / 1e6));
    }

    #[test]
    fn a_measurement_kind_without_its_measurement_is_a_problem() {
        let frame = ct(None);
        let mut f = new_finding(Shape::Rectangle, "current", 0, [0.0, 0.0, 2.0, 2.0], &frame, None, "t");
        f.measurement = None;
        assert_eq!(problems(&f).len(), 1);
    }
}
