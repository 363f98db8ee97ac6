//! `BBox`: axis-aligned boxes in pixel coordinates (x right, y down, x2/y2 one past the edge)
//! and the box metrics MedSG-Bench scores with.

use serde::{Deserialize, Serialize};

use crate::study::gray::GrayImage;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1: x1.min(x2), y1: y1.min(y2), x2: x1.max(x2), y2: y1.max(y2) }
    }

    pub fn from_centre(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        Self::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
    }

    pub fn from_array(a: [f32; 4]) -> Self {
        Self::new(a[0], a[1], a[2], a[3])
    }

    pub fn to_array(self) -> [f32; 4] {
        [self.x1, self.y1, self.x2, self.y2]
    }

    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    pub fn centre(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }

    pub fn intersection(&self, o: &BBox) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        w * h
    }

    /// Plain box IoU, as MedSG-Bench computes it.
    pub fn iou(&self, o: &BBox) -> f32 {
        let inter = self.intersection(o);
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    pub fn translate(&self, dx: f32, dy: f32) -> BBox {
        BBox { x1: self.x1 + dx, y1: self.y1 + dy, x2: self.x2 + dx, y2: self.y2 + dy }
    }

    pub fn scale(&self, sx: f32, sy: f32) -> BBox {
        BBox { x1: self.x1 * sx, y1: self.y1 * sy, x2: self.x2 * sx, y2: self.y2 * sy }
    }

    /// The smallest box holding both.
    pub fn union(&self, o: &BBox) -> BBox {
        BBox { x1: self.x1.min(o.x1), y1: self.y1.min(o.y1), x2: self.x2.max(o.x2), y2: self.y2.max(o.y2) }
    }

    /// Grows (or shrinks, for negative `m`) every side by `m` pixels.
    pub fn expand(&self, m: f32) -> BBox {
        BBox::new(self.x1 - m, self.y1 - m, self.x2 + m, self.y2 + m)
    }

    pub fn clamp_to(&self, width: f32, height: f32) -> BBox {
        BBox {
            x1: self.x1.clamp(0.0, width),
            y1: self.y1.clamp(0.0, height),
            x2: self.x2.clamp(0.0, width),
            y2: self.y2.clamp(0.0, height),
        }
    }

    pub fn contains_box(&self, o: &BBox) -> bool {
        o.x1 >= self.x1 && o.y1 >= self.y1 && o.x2 <= self.x2 && o.y2 <= self.y2
    }

    /// Integer pixel box, as MedSG answers are written.
    pub fn rounded(&self) -> [i64; 4] {
        [self.x1.round() as i64, self.y1.round() as i64, self.x2.round() as i64, self.y2.round() as i64]
    }

    pub fn is_finite(&self) -> bool {
        [self.x1, self.y1, self.x2, self.y2].iter().all(|v| v.is_finite())
    }

    /// Bounding box of the pixels where `mask > threshold`; `None` when there are none.
    pub fn of_mask(mask: &GrayImage, threshold: f32) -> Option<BBox> {
        let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0usize, 0usize);
        for y in 0..mask.height {
            for x in 0..mask.width {
                if mask.get(x, y) > threshold {
                    x1 = x1.min(x);
                    y1 = y1.min(y);
                    x2 = x2.max(x + 1);
                    y2 = y2.max(y + 1);
                }
            }
        }
        (x1 != usize::MAX).then(|| BBox::new(x1 as f32, y1 as f32, x2 as f32, y2 as f32))
    }
}

/// Labels 4-connected components of `mask > threshold`; returns per-pixel labels (0 = none)
/// and, per label, (pixel count, bounding box, the pixels' summed `weight`).
pub fn components(mask: &GrayImage, threshold: f32, weight: &GrayImage) -> (Vec<u32>, Vec<Component>) {
    let (w, h) = (mask.width, mask.height);
    let mut labels = vec![0u32; w * h];
    let mut comps = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if labels[start] != 0 || mask.data[start] <= threshold {
            continue;
        }
        let label = comps.len() as u32 + 1;
        // Built field by field: BBox::new would reorder the sentinel corners.
        let mut c = Component {
            pixels: 0,
            bbox: BBox { x1: f32::MAX, y1: f32::MAX, x2: f32::MIN, y2: f32::MIN },
            weight: 0.0,
            peak: f32::MIN,
            peak_at: (0, 0),
        };
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            c.pixels += 1;
            c.weight += weight.data[i] as f64;
            if weight.data[i] > c.peak {
                c.peak = weight.data[i];
                c.peak_at = (x, y);
            }
            c.bbox.x1 = c.bbox.x1.min(x as f32);
            c.bbox.y1 = c.bbox.y1.min(y as f32);
            c.bbox.x2 = c.bbox.x2.max(x as f32 + 1.0);
            c.bbox.y2 = c.bbox.y2.max(y as f32 + 1.0);
            let mut visit = |j: usize| {
                if labels[j] == 0 && mask.data[j] > threshold {
                    labels[j] = label;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        comps.push(c);
    }
    (labels, comps)
}

#[derive(Clone, Debug)]
pub struct Component {
    pub pixels: usize,
    pub bbox: BBox,
    pub weight: f64,
    pub peak: f32,
    pub peak_at: (usize, usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_half_overlap() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        let b = BBox::new(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&BBox::new(20.0, 20.0, 30.0, 30.0)), 0.0);
    }

    #[test]
    fn components_split_and_measure() {
        let mut m = GrayImage::new(10, 10);
        for y in 1..3 {
            for x in 1..4 {
                m.set(x, y, 1.0);
            }
        }
        m.set(8, 8, 1.0);
        let (_, comps) = components(&m, 0.5, &m);
        assert_eq!(comps.len(), 2);
        assert_eq!(comps[0].pixels, 6);
        assert_eq!(comps[0].bbox, BBox::new(1.0, 1.0, 4.0, 3.0));
        assert_eq!(BBox::of_mask(&m, 0.5), Some(BBox::new(1.0, 1.0, 9.0, 9.0)));
    }
}
