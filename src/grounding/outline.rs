//! A lesion's outline around a tracked box (the connected region that stands out from its
//! surroundings there) and its diameters as RECIST measures them, so that a size over time
//! follows the lesion rather than the box drawn around it.

use crate::grounding::baseline;
use crate::grounding::geometry::BBox;
use crate::study::gray::GrayImage;

/// The region's pixels and their box, in the image's pixels.
#[derive(Clone, Debug)]
pub struct Outline {
    pub bbox: BBox,
    pixels: Vec<(usize, usize)>,
}

/// Longest diameter, the longest one perpendicular to it, and the area: in mm (mm²) with a
/// pixel spacing, else in pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diameters {
    pub long: f64,
    pub short: f64,
    pub area: f64,
}

/// The outline's box against the tracked box's, by area: outside this range the region found is
/// not the object boxed (a speck inside it, or surroundings it merged with).
const AREA_RATIO: (f32, f32) = (0.1, 2.5);

impl Outline {
    /// The object in `img` around `b`, when it stands out from its surroundings: its intensity
    /// rule learnt on `b` (core against a ring around it), on the image scaled to the range of
    /// the values around the box (a whole image's robust range would clip a small bright lesion
    /// and stretch the background's texture over the scale) and lightly smoothed (noise would
    /// fray the edge), its region the connected one holding most of the box's core.
    pub fn around(img: &GrayImage, b: BBox) -> Option<Outline> {
        let side = b.width().max(b.height());
        let near = b.expand(side + 8.0).clamp_to(img.width as f32, img.height as f32);
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for y in near.y1 as usize..(near.y2.ceil() as usize).min(img.height) {
            for x in near.x1 as usize..(near.x2.ceil() as usize).min(img.width) {
                let v = img.get(x, y);
                if v.is_finite() {
                    (lo, hi) = (lo.min(v), hi.max(v));
                }
            }
        }
        if hi <= lo {
            return None;
        }
        let unit = crate::grounding::to_unit(img, (lo, hi)).blur(1.0);
        let (mut bbox, mut pixels) = baseline::object_region(&unit, b)?;
        // A loose box's core holds some surroundings, which pulls the threshold towards them
        // and the edge outwards: learnt again on the region's own box, the core is all lesion.
        // Once the box stays put, its pixels are the ones its own rule found, so that the
        // outline depends less on the box the search started from.
        for _ in 0..2 {
            match baseline::object_region(&unit, bbox) {
                Some((again, p)) if again.iou(&bbox) > 0.5 => {
                    let settled = again == bbox;
                    (bbox, pixels) = (again, p);
                    if settled {
                        break;
                    }
                }
                _ => break,
            }
        }
        let ratio = bbox.area() / b.area().max(1.0);
        (AREA_RATIO.0..=AREA_RATIO.1).contains(&ratio).then_some(Outline { bbox, pixels })
    }

    /// The diameters with `spacing` (Pixel Spacing: row spacing, then column spacing), else in
    /// pixels. Distances run edge to edge: between pixel centres plus one pixel's extent along
    /// the direction. The short axis is the region's width across the long axis (the longest
    /// perpendicular chord for a convex lesion).
    pub fn diameters(&self, spacing: Option<[f64; 2]>) -> Diameters {
        let [row, col] = spacing.unwrap_or([1.0, 1.0]);
        let at = |&(x, y): &(usize, usize)| ((x as f64 + 0.5) * col, (y as f64 + 0.5) * row);
        let inside: std::collections::HashSet<(usize, usize)> = self.pixels.iter().copied().collect();
        // Only edge pixels can end a longest chord.
        let edge: Vec<(f64, f64)> = self
            .pixels
            .iter()
            .filter(|&&(x, y)| x == 0 || y == 0 || [(x - 1, y), (x + 1, y), (x, y - 1), (x, y + 1)].iter().any(|p| !inside.contains(p)))
            .map(at)
            .collect();
        let mut long = (0.0f64, (1.0f64, 0.0f64));
        for (i, a) in edge.iter().enumerate() {
            for b in &edge[i + 1..] {
                let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                let d = dx.hypot(dy);
                if d > long.0 {
                    long = (d, (dx / d, dy / d));
                }
            }
        }
        let (ux, uy) = long.1;
        let extent = |dx: f64, dy: f64| dx.abs() * col + dy.abs() * row;
        let across: Vec<f64> = self.pixels.iter().map(at).map(|(x, y)| -uy * x + ux * y).collect();
        let (lo, hi) = across.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        Diameters { long: long.0 + extent(ux, uy), short: (hi - lo).max(0.0) + extent(-uy, ux), area: self.pixels.len() as f64 * row * col }
    }
}

/// The object's outline in every frame of a track (boxes on the frames' common grid), or `None`
/// unless it stands out in all of them: sizes over time compare like with like, so one frame
/// where the lesion cannot be told from its surroundings sends the whole track back to box sides.
pub fn along_track(frames: &[GrayImage], boxes: &[BBox]) -> Option<Vec<Outline>> {
    if frames.len() != boxes.len() {
        return None;
    }
    frames.iter().zip(boxes).map(|(f, b)| Outline::around(f, *b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured background with a bright disk of `radius` px centred at (cx, cy).
    fn disk(radius: f32, cx: f32, cy: f32) -> GrayImage {
        GrayImage::from_fn(160, 140, |x, y| {
            let (x, y) = (x as f32 + 0.5, y as f32 + 0.5);
            let background = 0.3 + 0.05 * (x * 0.31).sin() * (y * 0.23).cos();
            if (x - cx).hypot(y - cy) <= radius { 0.8 } else { background }
        })
    }

    #[test]
    fn a_disk_measures_its_diameter_whatever_the_box_around_it() {
        for (radius, loose) in [(6.0f32, 5.0f32), (10.0, 2.0), (14.0, 9.0)] {
            let img = disk(radius, 70.0, 60.0);
            let b = BBox::from_centre(70.0, 60.0, 2.0 * radius + 2.0 * loose, 2.0 * radius + 2.0 * loose);
            let o = Outline::around(&img, b).expect("the disk stands out");
            let d = o.diameters(Some([0.5, 0.5]));
            let expected = 2.0 * radius as f64 * 0.5;
            assert!((d.long - expected).abs() <= 1.0, "radius {radius}: long {} mm, expected {expected}", d.long);
            assert!((d.short - expected).abs() <= 1.0, "radius {radius}: short {} mm", d.short);
            let area = std::f64::consts::PI * (radius as f64 * 0.5).powi(2);
            assert!((d.area / area - 1.0).abs() < 0.15, "radius {radius}: area {} mm², expected {area}", d.area);
        }
    }

    #[test]
    fn an_ellipse_has_its_long_and_short_axes_in_mm_of_anisotropic_pixels() {
        // 30 × 12 px, the long axis along x; columns 0.8 mm apart, rows 0.5 mm.
        let img = GrayImage::from_fn(120, 100, |x, y| {
            let (x, y) = (x as f32 + 0.5 - 60.0, y as f32 + 0.5 - 50.0);
            if (x / 15.0).powi(2) + (y / 6.0).powi(2) <= 1.0 { 0.2 } else { 0.7 }
        });
        let o = Outline::around(&img, BBox::new(40.0, 40.0, 80.0, 60.0)).expect("a dark ellipse stands out too");
        let d = o.diameters(Some([0.5, 0.8]));
        assert!((d.long - 24.0).abs() <= 1.0, "long {}", d.long);
        assert!((d.short - 6.0).abs() <= 0.8, "short {}", d.short);
    }

    #[test]
    fn no_outline_where_nothing_stands_out() {
        let flat = GrayImage::from_fn(100, 100, |x, y| 0.5 + 0.02 * ((x + y) as f32 * 0.4).sin());
        assert!(Outline::around(&flat, BBox::new(30.0, 30.0, 60.0, 60.0)).is_none());
        // A track where one frame has nothing to outline is measured by its boxes.
        let img = disk(8.0, 50.0, 50.0);
        let b = BBox::from_centre(50.0, 50.0, 20.0, 20.0);
        assert!(along_track(&[img.clone(), img.clone()], &[b, b]).is_some());
        assert!(along_track(&[img, flat], &[b, b]).is_none());
    }
}
