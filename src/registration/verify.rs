//! Translation check: phase correlation's strongest peak, unless the pixels clearly prefer
//! another peak or no shift at all.
//!
//! Phase correlation whitens the spectrum and windows the frame, so every frequency votes
//! equally and the border hardly counts: on a frame that is mostly black (an ultrasound sector)
//! a wrong peak can win. The normalized cross-correlation of the overlapping pixels settles
//! that, but only by a clear margin: on content that repeats along one axis it is nearly flat,
//! and there the phase correlation's peak is the sharper witness.

use crate::study::gray::GrayImage;

/// Another candidate replaces the strongest peak only when its NCC is higher by this much.
const MARGIN: f64 = 0.05;

/// The overlap must cover this share of the moving image for a shift to count: a sliver of
/// overlap can correlate well by chance.
const MIN_OVERLAP: f64 = 0.25;

/// Every `STRIDE`-th row and column is compared: plenty to tell a right shift from a wrong one.
const STRIDE: usize = 2;

/// Index into `candidates` (translations `moving(x, y) ≈ fixed(x + dx, y + dy)` in pixels of
/// these images, the phase correlation's strongest first) of the one to use, and its NCC.
pub fn choose_translation(fixed: &GrayImage, moving: &GrayImage, candidates: &[(f64, f64)]) -> (usize, f64) {
    let ncc = |&(dx, dy): &(f64, f64)| ncc_at_shift(fixed, moving, dx.round() as isize, dy.round() as isize, STRIDE);
    let first = candidates.first().and_then(ncc).unwrap_or(f64::NEG_INFINITY);
    let mut chosen = (0, first);
    for (i, c) in candidates.iter().enumerate().skip(1) {
        if let Some(v) = ncc(c)
            && v > first + MARGIN
            && v > chosen.1
        {
            chosen = (i, v);
        }
    }
    chosen
}

/// NCC of `fixed(x + dx, y + dy)` against `moving(x, y)` over their overlap, every `stride`-th
/// row and column; `None` when the overlap is under `MIN_OVERLAP` of the moving image, 0 when
/// either side is uniform there.
fn ncc_at_shift(fixed: &GrayImage, moving: &GrayImage, dx: isize, dy: isize, stride: usize) -> Option<f64> {
    let x0 = 0.max(-dx) as usize;
    let y0 = 0.max(-dy) as usize;
    let x1 = (moving.width as isize).min(fixed.width as isize - dx).max(0) as usize;
    let y1 = (moving.height as isize).min(fixed.height as isize - dy).max(0) as usize;
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let area = ((x1 - x0) * (y1 - y0)) as f64;
    if area < MIN_OVERLAP * (moving.width * moving.height) as f64 {
        return None;
    }
    let (mut sa, mut sb, mut saa, mut sbb, mut sab, mut n) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64, 0usize);
    for y in (y0..y1).step_by(stride) {
        let m_row = &moving.data[y * moving.width..(y + 1) * moving.width];
        let fy = (y as isize + dy) as usize;
        let f_row = &fixed.data[fy * fixed.width..(fy + 1) * fixed.width];
        // Per-row sums in f32 (short), accumulated in f64.
        let (mut ra, mut rb, mut raa, mut rbb, mut rab) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for x in (x0..x1).step_by(stride) {
            let a = m_row[x];
            let b = f_row[(x as isize + dx) as usize];
            ra += a;
            rb += b;
            raa += a * a;
            rbb += b * b;
            rab += a * b;
            n += 1;
        }
        sa += ra as f64;
        sb += rb as f64;
        saa += raa as f64;
        sbb += rbb as f64;
        sab += rab as f64;
    }
    let n = n as f64;
    let var_a = saa - sa * sa / n;
    let var_b = sbb - sb * sb / n;
    if var_a <= 1e-9 || var_b <= 1e-9 {
        return Some(0.0);
    }
    Some((sab - sa * sb / n) / (var_a * var_b).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::chest;

    #[test]
    fn ncc_is_one_at_the_true_shift_and_lower_beside_it() {
        let base = chest();
        let fixed = base.crop(30, 40, 200, 180, 0.0);
        let moving = base.crop(41, 33, 200, 180, 0.0); // moving(p) = fixed(p + (11, -7))
        let at = ncc_at_shift(&fixed, &moving, 11, -7, 1).unwrap();
        assert!(at > 0.999, "{at}");
        let beside = ncc_at_shift(&fixed, &moving, 13, -7, 1).unwrap();
        assert!(beside < at - 0.01, "{beside} vs {at}");
        assert!(ncc_at_shift(&fixed, &moving, 190, 0, 1).is_none(), "a sliver of overlap must not count");
    }

    #[test]
    fn a_wrong_strongest_peak_yields_to_a_clearly_better_candidate() {
        let base = chest();
        let fixed = base.crop(30, 40, 200, 180, 0.0);
        let moving = base.crop(44, 26, 200, 180, 0.0); // moving(p) = fixed(p + (14, -14))
        let (i, ncc) = choose_translation(&fixed, &moving, &[(-40.0, 30.0), (14.2, -13.9), (0.0, 0.0)]);
        assert_eq!(i, 1);
        assert!(ncc > 0.99, "{ncc}");
    }

    #[test]
    fn a_slightly_better_candidate_does_not_overturn_the_strongest_peak() {
        // Content that barely varies down the image: vertical shifts all correlate about equally,
        // so a small NCC gain says little and the peak (here 3 px short) stands.
        let fixed = GrayImage::from_fn(160, 160, |x, y| (x as f32 * 0.21).sin() + 0.002 * y as f32);
        let moving = fixed.crop(0, 6, 160, 150, 0.0);
        let at = |dy| ncc_at_shift(&fixed, &moving, 0, dy, STRIDE).unwrap();
        assert!(at(6) > at(3), "the true shift correlates better, if only just");
        let (i, _) = choose_translation(&fixed, &moving, &[(0.0, 3.0), (0.0, 6.0), (0.0, 0.0)]);
        assert_eq!(i, 0);
    }
}
