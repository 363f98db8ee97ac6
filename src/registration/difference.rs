//! Current minus prior on the current's pixel grid, for a subtraction view: the prior resampled
//! through the registration (or at the same relative position), NaN where it does not reach.

use crate::registration::transform::Transform;
use crate::study::gray::{GrayImage, percentiles};

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
    let (sx, sy) = (prior.width as f32 / width.max(1) as f32, prior.height as f32 / height.max(1) as f32);
    prior.warp(width, height, f32::NAN, |x, y| match prior_from_current {
        Some(t) => {
            let (px, py) = t.apply(x as f64, y as f64);
            (px as f32, py as f32)
        }
        None => ((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5),
    })
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
}
