//! Findings through time: a box on one frame of an image, and a tracked finding's sizes (long axis,
//! short axis, area) with their change from baseline and from nadir, as `tandem track` and the
//! viewer's "Track" measure them.

use crate::annotation::document::{Finding, ImageBox, Measurement, Track};

impl Finding {
    /// The finding's box on `frame` of `image` (a whole-series finding has one on every slice it
    /// spans; `box_on` answers the first of them).
    pub fn box_at(&self, image: &str, frame: u32) -> Option<&ImageBox> {
        self.boxes.iter().find(|b| b.image == image && b.frame == frame)
    }

    /// The slice range (`slices`) and peak slice of a whole-series change finding, as
    /// `tandem ground series` and the viewer's whole-series "Find changes" write them.
    pub fn slice_range(&self) -> Option<([u32; 2], u32)> {
        let slices = self.extra.get("slices")?.as_array()?;
        let (first, last) = (slices.first()?.as_u64()?, slices.get(1)?.as_u64()?);
        let peak = self.extra.get("peak_slice").and_then(|v| v.as_u64()).unwrap_or(first);
        Some(([first as u32, last as u32], peak as u32))
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The change from `then` to `now` in percent, to 0.1 (0 when `then` is not positive).
pub fn pct(now: f64, then: f64) -> f64 {
    if then > 0.0 { round(100.0 * (now - then) / then, 1) } else { 0.0 }
}

/// A box's longer side, shorter side and area: in mm (mm²) with `spacing` (Pixel Spacing: row
/// spacing, then column spacing), else in pixels.
pub fn box_size(b: [f32; 4], spacing: Option<[f64; 2]>) -> (f64, f64, f64) {
    // Pixel Spacing is (row spacing, column spacing): x steps columns, y steps rows.
    let [row, col] = spacing.unwrap_or([1.0, 1.0]);
    let (w, h) = ((b[2] - b[0]) as f64 * col, (b[3] - b[1]) as f64 * row);
    (w.max(h), w.min(h), w * h)
}

/// For each long axis in time order: the change from the first (baseline) and from the smallest
/// before it (nadir; none for the first), in percent.
pub fn changes(long_axes: &[f64]) -> Vec<(f64, Option<f64>)> {
    let mut nadir: Option<f64> = None;
    let baseline = long_axes.first().copied().unwrap_or(0.0);
    long_axes
        .iter()
        .map(|&long| {
            let out = (pct(long, baseline), nadir.map(|n| pct(long, n)));
            nadir = Some(nadir.map_or(long, |n| n.min(long)));
            out
        })
        .collect()
}

/// What a track's axes measure: the lesion's outline (its diameters, RECIST's long axis and the
/// longest perpendicular) or, where no outline could be told from the surroundings, the boxes'
/// sides. Kept in the track as `axes`.
pub const OUTLINE_AXES: &str = "outline diameters";
pub const BOX_AXES: &str = "box sides";

impl Track {
    /// The track of boxes in time order, `(image, frame, box)`, each with its image's pixel
    /// spacing: in mm when every image has one, else in pixels for all; measured by box sides.
    pub fn measure(boxes: &[(String, u32, [f32; 4])], spacing: &[Option<[f64; 2]>]) -> Track {
        let mm = !spacing.is_empty() && spacing.iter().all(Option::is_some);
        let sizes: Vec<(f64, f64, f64)> =
            boxes.iter().enumerate().map(|(k, b)| box_size(b.2, if mm { spacing.get(k).copied().flatten() } else { None })).collect();
        Track::from_sizes(boxes, &sizes, if mm { "mm" } else { "px" }, BOX_AXES)
    }

    /// The track of boxes in time order with sizes (long, short, area) measured otherwise (a
    /// lesion's outline), in `units`; `axes` says what was measured.
    pub fn from_sizes(boxes: &[(String, u32, [f32; 4])], sizes: &[(f64, f64, f64)], units: &str, axes: &str) -> Track {
        let longs: Vec<f64> = sizes.iter().map(|s| round(s.0, 2)).collect();
        let measurements = boxes
            .iter()
            .zip(sizes)
            .zip(changes(&longs))
            .map(|(((image, frame, bbox), (long, short, area)), (baseline, nadir))| Measurement {
                image: image.clone(),
                frame: *frame,
                bbox: *bbox,
                long_axis: round(*long, 2),
                short_axis: round(*short, 2),
                area: round(*area, 2),
                change_from_baseline_pct: baseline,
                change_from_nadir_pct: nadir,
                extra: Default::default(),
            })
            .collect();
        let mut extra = serde_json::Map::new();
        extra.insert("axes".into(), serde_json::Value::String(axes.into()));
        Track { units: units.into(), measurements, extra }
    }

    /// The track measured again on `finding`'s boxes as they are now (after a box was moved or
    /// resized), keeping its images, frames and order; measurements whose box is gone are
    /// dropped. A box left as it was keeps its size; an edited one is the reader's own
    /// measurement, taken by its sides (and the track's `axes` then says so).
    pub fn remeasured(&self, finding: &Finding, spacing: &dyn Fn(&str) -> Option<[f64; 2]>) -> Track {
        let kept: Vec<(&Measurement, [f32; 4])> =
            self.measurements.iter().filter_map(|m| finding.box_at(&m.image, m.frame).map(|b| (m, b.bbox))).collect();
        let boxes: Vec<(String, u32, [f32; 4])> = kept.iter().map(|(m, b)| (m.image.clone(), m.frame, *b)).collect();
        let spacings: Vec<Option<[f64; 2]>> = boxes.iter().map(|b| spacing(&b.0)).collect();
        let by_sides = Track::measure(&boxes, &spacings);
        let axes = self.extra.get("axes").and_then(|v| v.as_str()).unwrap_or(BOX_AXES);
        if axes == BOX_AXES || by_sides.units != self.units {
            let mut track = by_sides;
            track.extra = self.extra.clone();
            track.extra.insert("axes".into(), serde_json::Value::String(BOX_AXES.into()));
            return track;
        }
        let edited = kept.iter().any(|(m, b)| m.bbox != *b);
        let sizes: Vec<(f64, f64, f64)> = kept
            .iter()
            .zip(&by_sides.measurements)
            .map(
                |((m, b), side)| {
                    if m.bbox == *b { (m.long_axis, m.short_axis, m.area) } else { (side.long_axis, side.short_axis, side.area) }
                },
            )
            .collect();
        let mut track = Track::from_sizes(&boxes, &sizes, &self.units, axes);
        track.extra = self.extra.clone();
        if edited {
            track.extra.insert("axes".into(), serde_json::Value::String(format!("{OUTLINE_AXES}; edited boxes by their sides")));
        }
        track
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_mm_with_changes_from_baseline_and_nadir() {
        let boxes = vec![
            ("t0".to_string(), 4, [10.0, 10.0, 30.0, 20.0]),
            ("t1".to_string(), 3, [10.0, 10.0, 24.0, 20.0]),
            ("t2".to_string(), 4, [10.0, 10.0, 16.0, 20.0]),
            ("t3".to_string(), 4, [10.0, 10.0, 22.0, 20.0]),
        ];
        let t = Track::measure(&boxes, &[Some([0.5, 0.5]); 4]);
        assert_eq!(t.units, "mm");
        let long: Vec<f64> = t.measurements.iter().map(|m| m.long_axis).collect();
        assert_eq!(long, [10.0, 7.0, 5.0, 6.0]);
        assert_eq!(t.measurements[0].short_axis, 5.0);
        assert_eq!(t.measurements[0].area, 50.0);
        let baseline: Vec<f64> = t.measurements.iter().map(|m| m.change_from_baseline_pct).collect();
        assert_eq!(baseline, [0.0, -30.0, -50.0, -40.0]);
        let nadir: Vec<Option<f64>> = t.measurements.iter().map(|m| m.change_from_nadir_pct).collect();
        assert_eq!(nadir, [None, Some(-30.0), Some(-28.6), Some(20.0)]);
        // One image without spacing: pixels for all.
        let px = Track::measure(&boxes, &[Some([0.5, 0.5]), None, Some([0.5, 0.5]), Some([0.5, 0.5])]);
        assert_eq!(px.units, "px");
        assert_eq!(px.measurements[0].long_axis, 20.0);
    }

    #[test]
    fn a_moved_box_is_measured_again() {
        let now = crate::annotation::document::now();
        let boxes = vec![
            ImageBox::new("t0", 0, crate::grounding::BBox::new(0.0, 0.0, 10.0, 10.0)),
            ImageBox::new("t1", 2, crate::grounding::BBox::new(0.0, 0.0, 20.0, 10.0)),
        ];
        let mut f = Finding::new(
            crate::annotation::FindingKind::Correspondence,
            "tracked",
            boxes,
            crate::annotation::Source::Human { user: None },
            &now,
        );
        let entries: Vec<(String, u32, [f32; 4])> = f.boxes.iter().map(|b| (b.image.clone(), b.frame, b.bbox)).collect();
        let t = Track::measure(&entries, &[None, None]);
        assert_eq!(t.measurements[1].change_from_baseline_pct, 100.0);
        f.boxes[1].bbox = [0.0, 0.0, 15.0, 10.0];
        let again = t.remeasured(&f, &|_| None);
        assert_eq!(again.measurements[1].long_axis, 15.0);
        assert_eq!(again.measurements[1].change_from_baseline_pct, 50.0);
        assert_eq!(again.measurements[1].bbox, [0.0, 0.0, 15.0, 10.0]);
        assert_eq!(f.box_at("t1", 2).map(|b| b.bbox), Some([0.0, 0.0, 15.0, 10.0]));
        assert!(f.box_at("t1", 0).is_none());
    }
}
