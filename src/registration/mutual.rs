//! Registration across contrasts and modalities: the similarity transform (shift, small
//! rotation and scale) that maximizes the normalized mutual information of the two images'
//! intensities, which holds under any intensity mapping between them, monotonic or not.

use crate::registration::{Alignment, Transform};
use crate::study::gray::GrayImage;

/// Intensity bins of the joint histogram.
const BINS: usize = 16;

/// How far `align_multimodal` searches, in the moving image's pixels.
#[derive(Clone, Debug)]
pub struct MultimodalOptions {
    pub max_shift_px: f64,
    pub max_rotation_deg: f64,
    pub max_scale_change: f64,
}

impl Default for MultimodalOptions {
    fn default() -> Self {
        Self { max_shift_px: 24.0, max_rotation_deg: 6.0, max_scale_change: 0.06 }
    }
}

/// One pyramid level: an image's intensity bins at `factor` × coarser than the original.
struct Level {
    bins: Vec<u8>,
    width: usize,
    height: usize,
    factor: f64,
}

impl Level {
    fn new(img: &GrayImage, factor: usize, range: (f32, f32)) -> Level {
        let (w, h) = ((img.width / factor).max(4), (img.height / factor).max(4));
        let small = img.resize(w, h);
        let (lo, hi) = range;
        let scale = if hi > lo { BINS as f32 / (hi - lo) } else { 0.0 };
        let bins = small.data.iter().map(|&v| (((v - lo) * scale) as isize).clamp(0, BINS as isize - 1) as u8).collect();
        Level { bins, width: w, height: h, factor: img.width as f64 / w as f64 }
    }
}

/// Normalized mutual information (H(A) + H(B)) / H(A, B) of fixed and moving at one level,
/// over the moving pixels that land inside the fixed image; 0 when they barely overlap.
fn nmi(fixed: &Level, moving: &Level, fixed_from_moving: &Transform) -> f64 {
    // In level pixels: original = (level + 0.5)·f − 0.5 on both sides.
    let to_orig = |f: f64| Transform { m: [[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5]] };
    let from_orig = |f: f64| Transform { m: [[1.0 / f, 0.0, 0.5 / f - 0.5], [0.0, 1.0 / f, 0.5 / f - 0.5]] };
    let t = from_orig(fixed.factor).compose(fixed_from_moving).compose(&to_orig(moving.factor)).m;
    // Nearest fixed pixel: round the level coordinate (pixel centres at integers).
    let (w, h) = (fixed.width as f32, fixed.height as f32);
    let mut joint = [0u32; BINS * BINS];
    let mut n = 0u32;
    for v in 0..moving.height {
        let (mut fx, mut fy) = ((t[0][1] * v as f64 + t[0][2]) as f32 + 0.5, (t[1][1] * v as f64 + t[1][2]) as f32 + 0.5);
        let (dx, dy) = (t[0][0] as f32, t[1][0] as f32);
        let row = &moving.bins[v * moving.width..(v + 1) * moving.width];
        for &b in row {
            if fx >= 0.0 && fy >= 0.0 && fx < w && fy < h {
                let a = fixed.bins[fy as usize * fixed.width + fx as usize] as usize;
                joint[a * BINS + b as usize] += 1;
                n += 1;
            }
            fx += dx;
            fy += dy;
        }
    }
    if (n as usize) < moving.width * moving.height / 3 {
        return 0.0;
    }
    let total = n as f64;
    let entropy =
        |counts: &mut dyn Iterator<Item = u32>| -> f64 { counts.filter(|&c| c > 0).map(|c| c as f64 / total).map(|p| -p * p.ln()).sum() };
    let h_joint = entropy(&mut joint.iter().copied());
    let h_a = entropy(&mut (0..BINS).map(|a| joint[a * BINS..(a + 1) * BINS].iter().sum()));
    let h_b = entropy(&mut (0..BINS).map(|b| (0..BINS).map(|a| joint[a * BINS + b]).sum()));
    if h_joint <= 0.0 { 0.0 } else { (h_a + h_b) / h_joint }
}

/// Parameters of a similarity about the moving image's centre.
#[derive(Clone, Copy, Debug)]
struct Pose {
    tx: f64,
    ty: f64,
    angle_deg: f64,
    scale: f64,
}

impl Pose {
    fn transform(&self, centre: (f64, f64)) -> Transform {
        Transform::similarity(self.angle_deg.to_radians(), self.scale, centre, self.tx, self.ty)
    }
}

/// The map from `moving` pixels to `fixed` pixels (same field of view, roughly the same pixel
/// size; images of any intensity units), found coarse to fine.
pub fn align_multimodal(fixed: &GrayImage, moving: &GrayImage, opts: &MultimodalOptions) -> Alignment {
    let range = |img: &GrayImage| {
        let p = crate::study::gray::percentiles(
            &img.data.iter().step_by((img.data.len() / 16_384).max(1)).copied().collect::<Vec<_>>(),
            &[0.01, 0.99],
        );
        (p[0], p[1] + 1e-6)
    };
    let (rf, rm) = (range(fixed), range(moving));
    let centre = ((moving.width as f64 - 1.0) / 2.0, (moving.height as f64 - 1.0) / 2.0);
    let longest = fixed.width.max(fixed.height).max(moving.width).max(moving.height);
    // Coarsest level about 42 px across, then twice finer, twice again.
    let coarse = (longest / 42).max(1);
    let factors: Vec<usize> = [coarse, coarse / 2, coarse / 4].into_iter().filter(|&f| f >= 1).collect();

    // Exhaustive over shift, rotation and scale at the coarsest level.
    let (lf, lm) = (Level::new(fixed, factors[0], rf), Level::new(moving, factors[0], rm));
    let step = lm.factor;
    let shifts: Vec<f64> = {
        let n = (opts.max_shift_px / step).floor() as i64;
        (-n..=n).map(|k| k as f64 * step).collect()
    };
    let angles = spread(opts.max_rotation_deg, 2.0);
    let scales: Vec<f64> = spread(opts.max_scale_change, 0.03).into_iter().map(|s| 1.0 + s).collect();
    let mut best = (Pose { tx: 0.0, ty: 0.0, angle_deg: 0.0, scale: 1.0 }, f64::MIN);
    for &angle_deg in &angles {
        for &scale in &scales {
            for &ty in &shifts {
                for &tx in &shifts {
                    let pose = Pose { tx, ty, angle_deg, scale };
                    let v = nmi(&lf, &lm, &pose.transform(centre));
                    if v > best.1 {
                        best = (pose, v);
                    }
                }
            }
        }
    }

    // Pattern search at the finer levels, halving the steps.
    for (k, &factor) in factors.iter().enumerate() {
        let (lf, lm) = (Level::new(fixed, factor, rf), Level::new(moving, factor, rm));
        if k > 0 {
            best.1 = nmi(&lf, &lm, &best.0.transform(centre));
        }
        let (mut dt, mut da, mut ds) = (lm.factor, 1.0, 0.01);
        for _ in 0..3 {
            loop {
                let mut improved = false;
                let p = best.0;
                let moves = [
                    Pose { tx: p.tx + dt, ..p },
                    Pose { tx: p.tx - dt, ..p },
                    Pose { ty: p.ty + dt, ..p },
                    Pose { ty: p.ty - dt, ..p },
                    Pose { angle_deg: p.angle_deg + da, ..p },
                    Pose { angle_deg: p.angle_deg - da, ..p },
                    Pose { scale: p.scale + ds, ..p },
                    Pose { scale: p.scale - ds, ..p },
                ];
                for m in moves {
                    let v = nmi(&lf, &lm, &m.transform(centre));
                    if v > best.1 + 1e-9 {
                        best = (m, v);
                        improved = true;
                    }
                }
                if !improved {
                    break;
                }
            }
            dt /= 2.0;
            da /= 2.0;
            ds /= 2.0;
        }
    }
    let fixed_from_moving = best.0.transform(centre);
    let overlap = {
        let corners = [(0.0, 0.0), (moving.width as f64, moving.height as f64)];
        let inside = corners.iter().filter(|&&(x, y)| {
            let (fx, fy) = fixed_from_moving.apply(x, y);
            fx >= -1.0 && fy >= -1.0 && fx <= fixed.width as f64 + 1.0 && fy <= fixed.height as f64 + 1.0
        });
        inside.count() as f64 / 2.0
    };
    // NMI lies in 1..2; reported as 0..1.
    Alignment { fixed_from_moving, score: (best.1 - 1.0).clamp(0.0, 1.0), overlap }
}

/// Symmetric values −max..max in steps of about `step` (always including 0).
fn spread(max: f64, step: f64) -> Vec<f64> {
    let n = (max / step).round() as i64;
    if n == 0 { vec![0.0] } else { (-n..=n).map(|k| k as f64 * max / n as f64).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::chest;

    #[test]
    fn recovers_a_rigid_map_under_a_non_monotonic_intensity_change() {
        let base = chest().resize(336, 336);
        let (lo, hi) = base.min_max();
        let fixed = base.map(|v| (v - lo) / (hi - lo));
        let truth = Transform::similarity(3f64.to_radians(), 1.03, (167.5, 167.5), 9.0, -6.0);
        // moving(q) = g(fixed(truth(q))) with g folding the intensity scale over.
        let moving = fixed.warp(336, 336, 0.0, |x, y| {
            let (sx, sy) = truth.apply(x as f64, y as f64);
            (sx as f32, sy as f32)
        });
        let moving = moving.map(|v| (1.0 - (2.0 * v - 0.8).abs()).clamp(0.0, 1.0));
        let a = align_multimodal(&fixed, &moving, &MultimodalOptions::default());
        for (px, py) in [(80.0, 90.0), (250.0, 260.0)] {
            let (x, y) = a.fixed_from_moving.apply(px, py);
            let (ex, ey) = truth.apply(px, py);
            assert!((x - ex).abs() < 1.5 && (y - ey).abs() < 1.5, "got ({x},{y}) want ({ex},{ey}) {a:?}");
        }
    }
}
