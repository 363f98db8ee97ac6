//! Current minus prior on the current's pixel grid, for a subtraction view: the prior resampled
//! through the registration (or at the same relative position), NaN where it does not reach.

use crate::registration::transform::Transform;
use crate::study::gray::{GrayImage, percentiles};
use crate::study::{Frame, Samples};

/// `current − prior` at every current pixel. `prior_from_current` maps current pixel centres to
/// the prior's (the registration's `fixed_from_moving`); without it, positions map by relative
/// position, as unregistered sync does.
pub fn current_minus_prior(prior: &GrayImage, current: &GrayImage, prior_from_current: Option<&Transform>) -> GrayImage {
    let prior_on_current = prior_on_current(prior, current.width, current.height, prior_from_current);
    minus(current, &prior_on_current)
}

/// The prior resampled onto a `width` × `height` current grid (NaN where it does not reach), for
/// flicker, fade and subtraction.
pub fn prior_on_current(prior: &GrayImage, width: usize, height: usize, prior_from_current: Option<&Transform>) -> GrayImage {
    let t = prior_from_current.copied().unwrap_or_else(|| relative_transform((prior.width, prior.height), (width, height)));
    prior.warp(width, height, f32::NAN, |x, y| {
        let (px, py) = t.apply(x as f64, y as f64);
        (px as f32, py as f32)
    })
}

/// Current pixel centres to the prior's at the same relative position (what unregistered sync
/// does): pixel edges 0 and `width` of one map onto those of the other.
pub fn relative_transform(prior: (usize, usize), current: (usize, usize)) -> Transform {
    let (sx, sy) = (prior.0 as f64 / current.0.max(1) as f64, prior.1 as f64 / current.1.max(1) as f64);
    Transform { m: [[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]] }
}

/// A frame's values as `Frame::to_gray` gives them (MONOCHROME1 negated, luminance for colour),
/// read in place.
struct GrayOf<'a>(&'a Frame, std::sync::Arc<Samples>);

impl GrayOf<'_> {
    fn at(&self, x: isize, y: isize) -> f32 {
        let f = self.0;
        let i = y.clamp(0, f.height as isize - 1) as usize * f.width + x.clamp(0, f.width as isize - 1) as usize;
        match &*self.1 {
            Samples::Gray(v) if f.invert => -v[i],
            Samples::Gray(v) => v[i],
            Samples::Rgb(v) => 0.299 * v[i][0] as f32 + 0.587 * v[i][1] as f32 + 0.114 * v[i][2] as f32,
        }
    }

    /// `GrayImage::sample_inside` of `to_gray()`, without the copy.
    fn sample_inside(&self, x: f32, y: f32) -> Option<f32> {
        let (w, h) = (self.0.width as f32, self.0.height as f32);
        if x < -0.5 || y < -0.5 || x > w - 0.5 || y > h - 0.5 {
            return None;
        }
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (xi, yi) = (x0 as isize, y0 as isize);
        let (a, b, c, d) = (self.at(xi, yi), self.at(xi + 1, yi), self.at(xi, yi + 1), self.at(xi + 1, yi + 1));
        let top = a + (b - a) * fx;
        let bottom = c + (d - c) * fx;
        Some(top + (bottom - top) * fy)
    }
}

/// `symmetric_window` of `current − prior` (grey values as `to_gray` gives them, the prior
/// sampled through `prior_from_current`) taken on a grid of at most 512 × 512 current pixels,
/// straight from the frames: the subtraction's own window without building the difference image
/// (the GPU path never does). On images up to 512² every pixel counts, as in `symmetric_window`.
pub fn sampled_symmetric_window(prior: &Frame, current: &Frame, prior_from_current: &Transform) -> f32 {
    if current.width == 0 || current.height == 0 || prior.width == 0 || prior.height == 0 {
        return 1e-6;
    }
    // Evicted pixels that cannot be decoded again (logged where it failed): no window to take.
    let (Ok(ps), Ok(cs)) = (prior.samples(), current.samples()) else { return 1e-6 };
    let (p, c) = (GrayOf(prior, ps), GrayOf(current, cs));
    let (step_x, step_y) = (current.width.div_ceil(512), current.height.div_ceil(512));
    let mut magnitudes = Vec::with_capacity((current.width / step_x + 1) * (current.height / step_y + 1));
    for y in (0..current.height).step_by(step_y) {
        for x in (0..current.width).step_by(step_x) {
            let (px, py) = prior_from_current.apply(x as f64, y as f64);
            if let Some(pv) = p.sample_inside(px as f32, py as f32) {
                magnitudes.push((c.at(x as isize, y as isize) - pv).abs());
            }
        }
    }
    percentiles(&magnitudes, &[0.99])[0].max(1e-6)
}

/// `current − prior_on_current`, pixel by pixel (same grid).
pub fn minus(current: &GrayImage, prior_on_current: &GrayImage) -> GrayImage {
    let data = current.data.iter().zip(&prior_on_current.data).map(|(c, p)| c - p).collect();
    GrayImage { width: current.width, height: current.height, data }
}

/// A symmetric window ±w for a difference image: the 99th percentile of |difference| (NaN
/// ignored), so that a few extreme pixels do not flatten the rest; never 0.
pub fn symmetric_window(difference: &GrayImage) -> f32 {
    let step = (difference.data.len() / 262_144).max(1);
    let magnitudes: Vec<f32> = difference.data.iter().step_by(step).map(|d| d.abs()).collect();
    percentiles(&magnitudes, &[0.99])[0].max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_difference_is_zero_but_for_the_change_and_follows_the_registration() {
        let prior = GrayImage::from_fn(20, 10, |x, _| x as f32);
        let mut current = prior.clone();
        current.data[5 * 20 + 7] += 50.0;
        let d = current_minus_prior(&prior, &current, None);
        assert_eq!(d.data[5 * 20 + 7], 50.0);
        assert!(d.data.iter().enumerate().all(|(i, v)| i == 5 * 20 + 7 || v.abs() < 1e-4));
        // The current is the prior moved 3 px right: prior = T(current) with T = shift by −3.
        let shifted = GrayImage::from_fn(20, 10, |x, _| x as f32 - 3.0);
        let t = Transform::translation(-3.0, 0.0);
        let d = current_minus_prior(&prior, &shifted, Some(&t));
        assert!(d.data[5 * 20 + 10].abs() < 1e-4, "{}", d.data[5 * 20 + 10]);
        assert!(d.data[5 * 20].is_nan(), "outside the prior");
        assert!(symmetric_window(&d) > 0.0);
    }

    #[test]
    fn the_sampled_window_is_the_full_window_on_small_images_and_reads_frames_as_to_gray() {
        use crate::study::{Frame, Meta, Samples, Window};
        use std::sync::Arc;
        let frame = |w: usize, h: usize, f: &dyn Fn(usize, usize) -> f32, invert: bool| Frame {
            width: w,
            height: h,
            pixels: crate::study::Pixels::new(Samples::Gray((0..w * h).map(|i| f(i % w, i / w)).collect())),
            default_window: Window { center: 0.0, width: 1.0 },
            voi_lut: None,
            invert,
            meta: Arc::new(Meta::default()),
            frame_index: 0,
            slice_position: None,
            image_position: None,
        };
        let prior = frame(40, 30, &|x, y| (x * 3 + y * 5) as f32, false);
        let current =
            frame(40, 30, &|x, y| ((x * 3 + y * 5) as f32 + if x > 30 { 40.0 } else { 0.0 }) * if y > 20 { 1.5 } else { 1.0 }, false);
        let t = Transform::translation(1.0, -2.0);
        let full = symmetric_window(&current_minus_prior(&prior.to_gray(), &current.to_gray(), Some(&t)));
        assert_eq!(sampled_symmetric_window(&prior, &current, &t), full);
        // MONOCHROME1 values are compared negated, as `to_gray` has them.
        let inverted = frame(40, 30, &|x, y| -((x * 3 + y * 5) as f32), true);
        let rel = relative_transform((40, 30), (40, 30));
        assert!(rel.is_identity(1e-12));
        assert_eq!(sampled_symmetric_window(&inverted, &prior, &rel), 1e-6, "the same picture");
        // Relative position between sizes: edges onto edges.
        let r = relative_transform((100, 50), (50, 25));
        assert_eq!(r.apply(-0.5, -0.5), (-0.5, -0.5));
        assert_eq!(r.apply(49.5, 24.5), (99.5, 49.5));
    }
}
