//! Registration: where a point of one image lies in another (translation → rigid), with a
//! quality score. Used before difference grounding and by the viewer's geometric sync.

pub mod difference;
pub mod mutual;
pub mod phase;
pub mod planes;
pub mod rigid3d;
pub mod transform;
pub mod verify;

pub use transform::Transform;

use crate::study::gray::GrayImage;
use phase::PhaseCorrelator;

/// What `align` may estimate.
#[derive(Clone, Debug)]
pub struct AlignOptions {
    /// Longest side of the working images; larger inputs are downsampled first.
    pub working_size: usize,
    /// Also search rotation and isotropic scale (otherwise translation only).
    pub rigid: bool,
    pub max_rotation_deg: f64,
    /// Scale search range around the initial scale, e.g. 0.1 for ±10 %.
    pub max_scale_change: f64,
    /// Known size ratio moving→fixed pixels (e.g. from pixel spacing), applied first.
    pub initial_scale: f64,
    /// Measure `Alignment::score` and `overlap` on the aligned pixels; callers that only want
    /// the transform skip it (0.5–1 ms of a 30 ms difference grounding).
    pub measure_quality: bool,
}

impl Default for AlignOptions {
    fn default() -> Self {
        Self { working_size: 256, rigid: true, max_rotation_deg: 10.0, max_scale_change: 0.1, initial_scale: 1.0, measure_quality: true }
    }
}

impl AlignOptions {
    pub fn translation_only() -> Self {
        Self { rigid: false, ..Self::default() }
    }

    /// Translation only, transform only: `score` is the NCC that checked the shift (sampled
    /// pixels, whole-pixel shift) and `overlap` NaN.
    pub fn shift_only() -> Self {
        Self { measure_quality: false, ..Self::translation_only() }
    }
}

/// NCC under which a rigid registration is not trusted for geometric sync. Measured by
/// `unrelated_pairs_stay_below_the_floor` on tests/data/dicom: 13 pairs of different patients or
/// anatomy reached 0.20–0.77 (the highest, 0.77, MR_small against MR2, both heads in MR; MR
/// against CT 0.54–0.60); related pairs (a file against itself moved up to 8° and 5 %, lossy against
/// lossless, "another day" with gamma, noise and a new spot) 0.97–1.00, two perfusion CT frames
/// 0.86. The gap is narrow, so NCC alone cannot prove a pairing: the viewer also refuses to
/// register images of two patients (`study::pairing`).
pub const UNRELATED_NCC_FLOOR: f64 = 0.80;

/// The estimated map from moving (current) pixels to fixed (prior) pixels.
#[derive(Clone, Copy, Debug)]
pub struct Alignment {
    /// moving pixel → fixed pixel.
    pub fixed_from_moving: Transform,
    /// Normalized cross-correlation of the overlapping pixels after alignment (-1..1).
    pub score: f64,
    /// Fraction of the moving image that lands inside the fixed image.
    pub overlap: f64,
}

/// Pixel-centre-correct scaling: pixel `i` of the source covers `[i, i+1)`, so its centre maps
/// to `(i + 0.5)·f − 0.5`.
fn resample_scale(f: f64) -> Transform {
    Transform { m: [[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5]] }
}

/// Places `img` at the top-left of a `w` × `h` canvas padded with its mean.
fn pad_to(img: &GrayImage, w: usize, h: usize) -> GrayImage {
    let (mean, _) = img.mean_std();
    img.crop(0, 0, w, h, mean)
}

/// Estimates the transform that maps `moving` onto `fixed`.
pub fn align(fixed: &GrayImage, moving: &GrayImage, opts: &AlignOptions) -> Alignment {
    let longest = fixed.width.max(fixed.height).max(moving.width).max(moving.height).max(1);
    let f = (opts.working_size as f64 / longest as f64).min(1.0);
    let fm = f * opts.initial_scale;
    let size = |n: usize, s: f64| ((n as f64 * s).round() as usize).max(8);
    let fixed_w = fixed.resize(size(fixed.width, f), size(fixed.height, f)).standardized();
    let moving_w = moving.resize(size(moving.width, fm), size(moving.height, fm)).standardized();
    let cw = fixed_w.width.max(moving_w.width).next_multiple_of(2);
    let ch = fixed_w.height.max(moving_w.height).next_multiple_of(2);
    let fixed_c = pad_to(&fixed_w, cw, ch);
    let pc = PhaseCorrelator::new(cw, ch);
    let fixed_spec = pc.spectrum(&fixed_c);
    if !opts.rigid {
        return align_translation(opts, &pc, &fixed_spec, (cw, ch), &moving_w, f, &fixed_w);
    }

    let centre = ((moving_w.width as f64 - 1.0) / 2.0, (moving_w.height as f64 - 1.0) / 2.0);

    // Working-space hypothesis: sample moving at `src_from_out(q)`, then the shift maps q to fixed.
    let evaluate = |angle: f64, scale: f64| -> (Transform, f64) {
        let src_from_out = Transform::similarity(angle, scale, centre, 0.0, 0.0);
        let warped = if angle == 0.0 && scale == 1.0 {
            pad_to(&moving_w, cw, ch)
        } else {
            let (mean, _) = moving_w.mean_std();
            moving_w.warp(cw, ch, mean, |x, y| {
                let (sx, sy) = src_from_out.apply(x as f64, y as f64);
                (sx as f32, sy as f32)
            })
        };
        let shift = pc.correlate_spectra(&fixed_spec, &pc.spectrum(&warped));
        let out_from_src = src_from_out.inverse().unwrap_or(Transform::IDENTITY);
        let candidate = Transform::translation(shift.dx, shift.dy).compose(&out_from_src);
        // Rank hypotheses by how well the images then agree, which is steadier across
        // rotations and scales than the correlation peak height.
        (candidate, overlap_ncc(&fixed_w, &moving_w, &candidate).0)
    };

    let mut best = (0.0f64, 1.0f64, evaluate(0.0, 1.0));
    let search = |best: &mut (f64, f64, (Transform, f64)), angles: Vec<f64>, scales: Vec<f64>| {
        for &a in &angles {
            for &s in &scales {
                let r = evaluate(a, s);
                if r.1 > best.2.1 {
                    *best = (a, s, r);
                }
            }
        }
    };
    let max_a = opts.max_rotation_deg.to_radians();
    let coarse_a: Vec<f64> = steps(-max_a, max_a, 2f64.to_radians());
    let coarse_s: Vec<f64> = steps(1.0 - opts.max_scale_change, 1.0 + opts.max_scale_change, 0.025);
    search(&mut best, coarse_a, coarse_s);
    let (a0, s0) = (best.0, best.1);
    let fine_a = steps(a0 - 1f64.to_radians(), a0 + 1f64.to_radians(), 0.5f64.to_radians());
    let fine_s = steps(s0 - 0.0125, s0 + 0.0125, 0.00625);
    search(&mut best, fine_a, fine_s);
    let working = best.2.0;

    // moving original → moving working → fixed working → fixed original.
    let to_fixed_orig = resample_scale(f).inverse().unwrap_or(Transform::IDENTITY);
    let fixed_from_moving = to_fixed_orig.compose(&working).compose(&resample_scale(fm));
    let (score, overlap) = if opts.measure_quality { overlap_ncc(&fixed_w, &moving_w, &working) } else { (best.2.1, f64::NAN) };
    Alignment { fixed_from_moving, score, overlap }
}

/// Phase-correlation peaks this many deep are weighed by `verify::choose_translation`.
const CANDIDATE_PEAKS: usize = 4;

/// Translation only: the strongest phase-correlation peak on the working images, checked
/// against the other peaks and against no shift by the pixels themselves (`verify`).
fn align_translation(
    opts: &AlignOptions,
    pc: &PhaseCorrelator,
    fixed_spec: &[rustfft::num_complex::Complex32],
    (cw, ch): (usize, usize),
    moving_w: &GrayImage,
    f: f64,
    fixed_w: &GrayImage,
) -> Alignment {
    let fm = f * opts.initial_scale;
    let peaks = pc.correlate_spectra_peaks(fixed_spec, &pc.spectrum(&pad_to(moving_w, cw, ch)), CANDIDATE_PEAKS);
    // No shift is a candidate too: the phase correlation's window can all but hide the content
    // of a mostly black frame, and two studies are rarely far apart.
    let candidates: Vec<(f64, f64)> = peaks.iter().map(|s| (s.dx, s.dy)).chain([(0.0, 0.0)]).collect();
    let (chosen, ncc) = verify::choose_translation(fixed_w, moving_w, &candidates);
    let (dx, dy) = candidates[chosen];
    let working = Transform::translation(dx, dy);
    let to_fixed_orig = resample_scale(f).inverse().unwrap_or(Transform::IDENTITY);
    let fixed_from_moving = to_fixed_orig.compose(&working).compose(&resample_scale(fm));
    let (score, overlap) = if opts.measure_quality { overlap_ncc(fixed_w, moving_w, &working) } else { (ncc, f64::NAN) };
    Alignment { fixed_from_moving, score, overlap }
}

fn steps(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let n = ((hi - lo) / step).round().max(0.0) as usize;
    (0..=n).map(|i| lo + i as f64 * step).collect()
}

/// NCC of the fixed image against the moving image mapped through `fixed_from_moving`,
/// over the pixels of the moving image that land inside the fixed one.
pub fn overlap_ncc(fixed: &GrayImage, moving: &GrayImage, fixed_from_moving: &Transform) -> (f64, f64) {
    let mut pairs = Vec::with_capacity(moving.data.len());
    for y in 0..moving.height {
        for x in 0..moving.width {
            let (fx, fy) = fixed_from_moving.apply(x as f64, y as f64);
            if let Some(v) = fixed.sample_inside(fx as f32, fy as f32) {
                pairs.push((v as f64, moving.get(x, y) as f64));
            }
        }
    }
    let overlap = pairs.len() as f64 / moving.data.len().max(1) as f64;
    (ncc_pairs(&pairs), overlap)
}

fn ncc_pairs(pairs: &[(f64, f64)]) -> f64 {
    if pairs.len() < 16 {
        return 0.0;
    }
    let n = pairs.len() as f64;
    let (ma, mb) = pairs.iter().fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let (ma, mb) = (ma / n, mb / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for &(a, b) in pairs {
        sab += (a - ma) * (b - mb);
        saa += (a - ma).powi(2);
        sbb += (b - mb).powi(2);
    }
    if saa <= 1e-12 || sbb <= 1e-12 { 0.0 } else { sab / (saa * sbb).sqrt() }
}

/// Resamples `moving` onto the pixel grid of `fixed` (`fixed_width` × `fixed_height`).
pub fn warp_to_fixed(moving: &GrayImage, fixed_from_moving: &Transform, fixed_width: usize, fixed_height: usize, fill: f32) -> GrayImage {
    let moving_from_fixed = fixed_from_moving.inverse().unwrap_or(Transform::IDENTITY);
    moving.warp(fixed_width, fixed_height, fill, |x, y| {
        let (mx, my) = moving_from_fixed.apply(x as f64, y as f64);
        (mx as f32, my as f32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::chest;

    #[test]
    fn translation_is_recovered_in_original_pixels() {
        let base = chest();
        let fixed = base.crop(30, 40, 400, 420, 0.0);
        let moving = base.crop(47, 31, 400, 420, 0.0); // moving(p) = fixed(p + (17, -9))
        let a = align(&fixed, &moving, &AlignOptions::translation_only());
        let (x, y) = a.fixed_from_moving.apply(50.0, 60.0);
        assert!((x - 67.0).abs() < 0.75 && (y - 51.0).abs() < 0.75, "{:?}", a);
        assert!(a.score > 0.95, "{a:?}");
        let quick = align(&fixed, &moving, &AlignOptions::shift_only());
        assert_eq!(quick.fixed_from_moving.m, a.fixed_from_moving.m);
        assert!(quick.overlap.is_nan() && quick.score > 0.0, "{quick:?}");
    }

    #[test]
    fn rotation_and_shift_are_recovered() {
        let base = chest();
        let fixed = base.crop(40, 40, 420, 440, 0.0);
        for (deg, dx, dy) in [(6.0, 4.0, -3.0), (-4.0, -10.0, 7.0)] {
            let truth = Transform::similarity(f64::to_radians(deg), 1.0, (209.5, 219.5), dx, dy);
            // moving(q) = fixed(truth(q)), so fixed_from_moving = truth.
            let moving = warp_to_fixed(&fixed, &truth.inverse().unwrap(), 420, 440, 0.0);
            let a = align(&fixed, &moving, &AlignOptions::default());
            for (px, py) in [(120.0, 80.0), (300.0, 350.0)] {
                let (x, y) = a.fixed_from_moving.apply(px, py);
                let (ex, ey) = truth.apply(px, py);
                assert!((x - ex).abs() < 2.0 && (y - ey).abs() < 2.0, "{deg}°: got ({x},{y}) want ({ex},{ey}) {a:?}");
            }
        }
    }

    #[test]
    fn different_sizes_and_pixel_spacing() {
        // The current image has 0.8× the pixel spacing of the prior (more pixels per mm).
        let base = chest();
        let fixed = base.crop(20, 20, 440, 480, 0.0);
        let moving = fixed.resize(550, 600).crop(12, -8, 520, 560, 0.0);
        let opts = AlignOptions { initial_scale: 0.8, ..AlignOptions::default() };
        let a = align(&fixed, &moving, &opts);
        // moving pixel (x, y) ↔ resized (x + 12, y − 8) ↔ fixed ((x + 12.5)·0.8 − 0.5, …).
        let (x, y) = a.fixed_from_moving.apply(200.0, 300.0);
        let (ex, ey) = ((212.0 + 0.5) * 0.8 - 0.5, (292.0 + 0.5) * 0.8 - 0.5);
        assert!((x - ex).abs() < 2.0 && (y - ey).abs() < 2.0, "got ({x},{y}) want ({ex},{ey}) {a:?}");
    }

    /// The NCC that `align` reaches on unrelated images (other patients, other anatomy) and on
    /// related ones (a file against itself moved, lossy against lossless, neighbouring frames).
    /// Prints the table with `--nocapture`; the floor must lie between the two groups.
    #[test]
    fn unrelated_pairs_stay_below_the_floor() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dicom");
        let frame = |f: &str, i: usize| -> Option<GrayImage> {
            let s = crate::study::load(&dir.join(f), &|_, _| {}).ok()?;
            s.frames.get(i.min(s.frames.len() - 1))?.try_gray().ok()
        };
        let unrelated = [
            ("MR_small.dcm", "CT_small.dcm"),
            ("MR2_J2KR.dcm", "CT_small.dcm"),
            ("MR_small.dcm", "MR2_J2KR.dcm"),
            ("MR2_J2KR.dcm", "MR_small.dcm"),
            ("MR_small.dcm", "emri_small.dcm"),
            ("RG1_J2KI.dcm", "RG3_J2KR.dcm"),
            ("CT_small.dcm", "eCT_Supplemental.dcm"),
            ("CT_small.dcm", "J2K_pixelrep_mismatch.dcm"),
            ("US1_UNCR.dcm", "OBXXXX1A.dcm"),
            ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MR_small.dcm"),
            ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MR2_J2KR.dcm"),
            ("examples_ybr_color.dcm", "US1_UNCR.dcm"),
            ("gdcm-US-ALOKA-16.dcm", "US1_UNCR.dcm"),
        ];
        let mut worst_unrelated = f64::NEG_INFINITY;
        for (a, b) in unrelated {
            let (Some(fa), Some(fb)) = (frame(a, 0), frame(b, 0)) else { panic!("cannot load {a} or {b}") };
            let s = align(&fa, &fb, &AlignOptions::default()).score;
            println!("unrelated {a} ← {b}: NCC {s:.3}");
            worst_unrelated = worst_unrelated.max(s);
        }
        let mut related: Vec<(String, GrayImage, GrayImage)> = Vec::new();
        for f in ["MR_small.dcm", "CT_small.dcm", "MR2_J2KR.dcm", "RG1_J2KI.dcm", "US1_UNCR.dcm", "emri_small.dcm", "OBXXXX1A.dcm"] {
            let fixed = frame(f, 0).unwrap();
            let (w, h) = (fixed.width, fixed.height);
            let centre = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
            for (deg, dx, dy) in [(0.0, 0.04, -0.03), (5.0, -0.03, 0.02), (-8.0, 0.05, 0.05)] {
                let truth = Transform::similarity(f64::to_radians(deg), 1.0, centre, dx * w as f64, dy * h as f64);
                let (mean, _) = fixed.mean_std();
                let moving = warp_to_fixed(&fixed, &truth.inverse().unwrap(), w, h, mean);
                related.push((format!("{f} moved {deg}° ({dx}, {dy})"), fixed.clone(), moving));
            }
        }
        related.push(("MR2_J2KR ← MR2_J2KI (lossy)".into(), frame("MR2_J2KR.dcm", 0).unwrap(), frame("MR2_J2KI.dcm", 0).unwrap()));
        related.push((
            "eCT_Supplemental 0 ← 1".into(),
            frame("eCT_Supplemental.dcm", 0).unwrap(),
            frame("eCT_Supplemental.dcm", 1).unwrap(),
        ));
        // Another day: exposure (gamma), noise, a new bright spot, and a small rotation and shift.
        for f in ["RG1_J2KI.dcm", "MR2_J2KR.dcm", "CT_small.dcm"] {
            let fixed = frame(f, 0).unwrap().normalized_percentile(0.01, 0.99);
            let (w, h) = (fixed.width, fixed.height);
            let mut seed = 12345u32;
            let mut noise = || {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as f32 / 65_536.0 - 0.5
            };
            let (sx, sy, r) = (w as f32 * 0.6, h as f32 * 0.4, w as f32 * 0.05);
            let changed = GrayImage::from_fn(w, h, |x, y| {
                let spot = if (x as f32 - sx).hypot(y as f32 - sy) < r { 0.5 } else { 0.0 };
                fixed.get(x, y).clamp(0.0, 1.0).powf(1.4) + spot + 0.1 * noise()
            });
            let centre = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
            let truth = Transform::similarity(f64::to_radians(3.0), 1.0, centre, 0.03 * w as f64, -0.02 * h as f64);
            let moving = warp_to_fixed(&changed, &truth.inverse().unwrap(), w, h, 0.0);
            related.push((format!("{f} another day (gamma 1.4, noise, spot, 3°)"), fixed, moving));
        }
        let mut worst_related = f64::INFINITY;
        for (name, fixed, moving) in &related {
            let s = align(fixed, moving, &AlignOptions::default()).score;
            println!("related {name}: NCC {s:.3}");
            worst_related = worst_related.min(s);
        }
        println!("highest unrelated {worst_unrelated:.3}, lowest related {worst_related:.3}, floor {UNRELATED_NCC_FLOOR}");
        assert!(worst_unrelated < UNRELATED_NCC_FLOOR && UNRELATED_NCC_FLOOR <= worst_related);
    }
}
