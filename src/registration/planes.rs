//! Where two orthogonal planes of one volume meet: each shows the same line of voxels, so
//! one row or column of the first shows what one row or column of the second shows. Each view
//! may have been cropped, resampled (to another pixel size along each axis) and windowed on its
//! own, so the two lines agree only up to a scale (of either sign: an axis may run the other
//! way in one view) and an offset along them and a monotone intensity map: they are compared by
//! normalized correlation over their overlap, for every scale and offset in a plausible range,
//! coarse to fine, each map also charged for carrying the body's outline along the shared axis
//! off the other view's. Finding that pair says which axis the planes share, where each lies in
//! the other, and how positions along the shared axis map.

use crate::grounding::geometry::BBox;
use crate::study::gray::GrayImage;
use rayon::prelude::*;

/// Lines per axis at the finest level of the search.
const LINES: usize = 112;
/// Search levels, coarse to fine (lines per axis).
const LEVELS: [usize; 3] = [28, 56, LINES];
/// Scales between the views along the shared axis (target extent per reference extent, both
/// as fractions of their images): 0.5..2.0 on a geometric grid, each also reversed.
const SCALE_MIN: f32 = 0.5;
const SCALE_STEPS: usize = 16;
const SCALE_RATIO: f32 = 4.0;
/// The lines must overlap over this fraction of each image's extent.
const MIN_OVERLAP: f32 = 0.4;
/// Score lost per unit of body-extent mismatch (`extent_mismatch`). Chosen on training-image
/// multi-view items (seed 601 second rendering, 602–605 both, 900 items; weights 0 / 0.05 / 0.1 /
/// 0.15 / 0.2: 773 / 774 / 779 / 780 / 768 hits) and confirmed on seeds 671/672 by a rule written
/// before (see the model card).
const EXTENT_WEIGHT: f32 = 0.15;
/// Levels of a 0..1 view at or below this are background (the darkest levels), for both the
/// equalization and the body's extent.
const BACKGROUND: f32 = 0.06;
/// Candidates kept per hypothesis after the coarse level, and after the middle one.
const KEEP: [usize; 2] = [48, 12];

/// Which axis of the reference recurs on which axis of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedAxes {
    /// Reference x is target x (e.g. axial ↔ coronal).
    XtoX,
    /// Reference y is target y (e.g. coronal ↔ sagittal).
    YtoY,
    /// Reference y is target x (e.g. axial → sagittal).
    YtoX,
    /// Reference x is target y (e.g. sagittal → axial).
    XtoY,
}

impl SharedAxes {
    pub const ALL: [SharedAxes; 4] = [SharedAxes::XtoX, SharedAxes::YtoY, SharedAxes::YtoX, SharedAxes::XtoY];

    /// A reference box `[x1, y1, x2, y2]`: its (centre, extent) along the shared axis, and its
    /// extent across it.
    pub fn along(self, [x1, y1, x2, y2]: [f32; 4]) -> (f32, f32, f32) {
        let (w, h) = (x2 - x1, y2 - y1);
        if self.axes().0 == 0 { ((x1 + x2) / 2.0, w, h) } else { ((y1 + y2) / 2.0, h, w) }
    }

    /// (reference axis, target axis), 0 = x, 1 = y.
    pub fn axes(self) -> (usize, usize) {
        match self {
            SharedAxes::XtoX => (0, 0),
            SharedAxes::YtoY => (1, 1),
            SharedAxes::YtoX => (1, 0),
            SharedAxes::XtoY => (0, 1),
        }
    }
}

/// The common line of two planes.
#[derive(Clone, Copy, Debug)]
pub struct Intersection {
    pub shared: SharedAxes,
    /// Where the line lies across the target's other axis, in target pixels.
    pub line_in_target: f32,
    /// Where it lies across the reference's other axis, in reference pixels.
    pub line_in_reference: f32,
    /// Along the shared axis, target pixel = `scale` · reference pixel + `offset` (pixel-edge
    /// coordinates); 1 and 0 when both views show the same field of view at one pixel size,
    /// negative when the shared axis runs the other way in the target.
    pub scale: f32,
    pub offset: f32,
    /// Correlation of the two lines, and of the best line pair under any other hypothesis.
    pub ncc: f32,
    pub runner_up_ncc: f32,
    /// The search's score of this line pair (correlation over the line and near the box, less
    /// a discount for short overlaps and `EXTENT_WEIGHT` × the body-extent mismatch):
    /// comparable between hypotheses of one image pair.
    pub score: f32,
    /// 0..1: how clearly the line pair stands out (its correlation, and its margin over the best
    /// pair under another hypothesis); callers fall back to a softer prior when it is low.
    pub confidence: f32,
}

impl Intersection {
    /// Whether the common line crosses a reference box `[x1, y1, x2, y2]`: then it crosses the
    /// structure boxed there, whose section in the target contains the line too.
    pub fn crosses(&self, [x1, y1, x2, y2]: [f32; 4]) -> bool {
        let (lo, hi) = if self.shared.axes().0 == 0 { (y1, y2) } else { (x1, x2) };
        self.line_in_reference > lo && self.line_in_reference < hi
    }

    /// A reference position along the shared axis, in target pixels.
    pub fn to_target(&self, along_reference: f32) -> f32 {
        self.scale * along_reference + self.offset
    }
}

/// A profile along the shared axis, of the image as it is and through its cumulative histogram
/// (`equalized`), `None` where the line is flat (background).
type Profile = Option<Vec<[f32; 2]>>;

/// Profiles of `img` and `eq` (already `n` × `n`) along x (`along_x`: one per row) or along y.
fn profiles(img: &GrayImage, eq: &GrayImage, along_x: bool) -> Vec<Profile> {
    let n = img.width;
    let at = |g: &GrayImage, k: usize, t: usize| if along_x { g.get(t, k) } else { g.get(k, t) };
    (0..n)
        .map(|k| {
            let v: Vec<[f32; 2]> = (0..n).map(|t| [at(img, k, t), at(eq, k, t)]).collect();
            let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(x[0]), hi.max(x[0])));
            // A line whose spread is under 5 % of the range is background.
            (hi - lo > 0.05).then_some(v)
        })
        .collect()
}

/// One hypothesis of the search: reference line `i`, target line `j` (at the level's
/// resolution), and target fraction = `a` · reference fraction + `b` along the shared axis.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    i: usize,
    j: usize,
    a: f32,
    b: f32,
    score: f32,
    ncc: f32,
}

/// Running sums for a normalized correlation.
#[derive(Default, Clone, Copy)]
struct Sums {
    x: f32,
    y: f32,
    xx: f32,
    yy: f32,
    xy: f32,
    m: f32,
}

impl Sums {
    fn add(&mut self, x: f32, y: f32) {
        self.x += x;
        self.y += y;
        self.xx += x * x;
        self.yy += y * y;
        self.xy += x * y;
        self.m += 1.0;
    }

    fn ncc(&self) -> Option<f32> {
        let m = self.m;
        let (vx, vy) = (self.xx - self.x * self.x / m, self.yy - self.y * self.y / m);
        (m >= 3.0 && vx > 1e-4 * m && vy > 1e-4 * m).then(|| (self.xy - self.x * self.y / m) / (vx * vy).sqrt())
    }
}

/// Normalized correlation of `r` against `t` under the map (fractions) `a`, `b`, over their
/// overlap, and over the part of it near the reference box (`window`, fractions along the
/// line); `None` when the overlap is too short. Returns (score, correlation over the overlap):
/// the score weighs the window as much as the whole line (the box's own section must recur)
/// and discounts short overlaps, which correlate well by chance.
fn overlap_ncc(r: &[[f32; 2]], t: &[[f32; 2]], a: f32, b: f32, window: (f32, f32)) -> Option<(f32, f32)> {
    let n = r.len();
    let nf = n as f32;
    let (mut all, mut near) = ([Sums::default(); 2], [Sums::default(); 2]);
    for (k, x) in r.iter().enumerate() {
        let u = (k as f32 + 0.5) / nf;
        let v = (a * u + b) * nf - 0.5;
        if v < 0.0 || v > nf - 1.0 {
            continue;
        }
        let v0 = (v as usize).min(n - 2);
        let f = v - v0 as f32;
        let inside = u >= window.0 && u <= window.1;
        for c in 0..2 {
            let y = t[v0][c] + (t[v0 + 1][c] - t[v0][c]) * f;
            all[c].add(x[c], y);
            if inside {
                near[c].add(x[c], y);
            }
        }
    }
    let frac_r = all[0].m / nf;
    if frac_r < MIN_OVERLAP || frac_r * a.abs() < MIN_OVERLAP {
        return None;
    }
    // Both forms of the images vote: the equalized one holds under another window, the plain
    // one keeps detail that equalization flattens.
    // (0.4 on the equalized form: tuned on training-volume items.)
    let w = 0.4;
    let ncc = (1.0 - w) * all[0].ncc()? + w * all[1].ncc().unwrap_or(0.0);
    let local = (1.0 - w) * near[0].ncc().unwrap_or(0.0) + w * near[1].ncc().unwrap_or(0.0);
    let overlap = frac_r.min(frac_r * a.abs()).min(1.0);
    Some((0.5 * (ncc + local) - 0.15 * (1.0 - overlap), ncc))
}

/// The lines of an `n`-line level within a fractional range (at least the nearest one).
fn lines_in(n: usize, range: Option<(f32, f32)>) -> Vec<usize> {
    match range {
        None => (0..n).collect(),
        Some((lo, hi)) => {
            let v: Vec<usize> = (0..n).filter(|&k| ((k as f32 + 0.5) / n as f32) > lo && ((k as f32 + 0.5) / n as f32) < hi).collect();
            if v.is_empty() { vec![(((lo + hi) / 2.0 * n as f32) as usize).min(n - 1)] } else { v }
        }
    }
}

/// The scales tried, both ways along the line: the shared axis may run the other way in one
/// view (an axial image's rows run anterior to posterior or back, a sagittal image's columns
/// either way, as each exporter orients them).
fn scales() -> Vec<f32> {
    let forward = (0..=SCALE_STEPS).map(|k| SCALE_MIN * SCALE_RATIO.powf(k as f32 / SCALE_STEPS as f32));
    forward.flat_map(|a| [a, -a]).collect()
}

/// The profile sets of both images at one level, for one hypothesis.
struct Level {
    n: usize,
    /// The reference box's range along the shared axis, widened, as fractions.
    window: (f32, f32),
    reference: Vec<Profile>,
    target: Vec<Profile>,
    /// The body's extent along the shared axis in the reference and in the target (fractions).
    extents: ((f32, f32), (f32, f32)),
}

impl Level {
    fn new(
        reference: &GrayImage,
        target: &GrayImage,
        n: usize,
        shared: SharedAxes,
        window: (f32, f32),
        extents: ((f32, f32), (f32, f32)),
    ) -> Level {
        let (r, t) = (reference.resize(n, n), target.resize(n, n));
        let (re, te) = (equalized(&r), equalized(&t));
        let (ra, ta) = shared.axes();
        Level { n, window, reference: profiles(&r, &re, ra == 0), target: profiles(&t, &te, ta == 0), extents }
    }

    fn score(&self, i: usize, j: usize, a: f32, b: f32) -> Option<Candidate> {
        let (r, t) = (self.reference.get(i)?.as_ref()?, self.target.get(j)?.as_ref()?);
        // Both views cut the same body: its extent along the shared axis maps through the line
        // pair's scale and offset too, give or take what each cut adds or leaves out.
        overlap_ncc(r, t, a, b, self.window).map(|(score, ncc)| {
            let penalty = EXTENT_WEIGHT * extent_mismatch(self.extents.0, self.extents.1, a, b);
            Candidate { i, j, a, b, score: score - penalty, ncc }
        })
    }
}

/// The best candidates, at most `keep`, that are not each other's neighbours.
fn keep_best(mut found: Vec<Candidate>, keep: usize) -> Vec<Candidate> {
    found.sort_by(|x, y| y.score.total_cmp(&x.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in found {
        let near = kept.iter().any(|k| k.i == c.i && k.j.abs_diff(c.j) <= 1 && (k.a / c.a - 1.0).abs() < 0.05 && (k.b - c.b).abs() < 0.03);
        if !near {
            kept.push(c);
            if kept.len() == keep {
                break;
            }
        }
    }
    kept
}

/// The best line pair under one hypothesis, coarse to fine; reference lines are restricted to
/// `across` (fractions of the reference's extent across the shared axis) when given; `extents`
/// is the body's extent along the shared axis in each image.
fn search(
    reference: &GrayImage,
    target: &GrayImage,
    shared: SharedAxes,
    across: Option<(f32, f32)>,
    window: (f32, f32),
    extents: ((f32, f32), (f32, f32)),
) -> Option<Candidate> {
    let levels: Vec<Level> = LEVELS.iter().map(|&n| Level::new(reference, target, n, shared, window, extents)).collect();
    // Coarse: every scale and offset.
    let coarse = &levels[0];
    let n = coarse.n;
    let mut found = Vec::new();
    let scales = scales();
    for &i in &lines_in(n, across) {
        for j in 0..n {
            for &a in &scales {
                // Target fraction a·u + b must reach 0..1 for some u in 0..1.
                let mut b = -a.max(0.0);
                while b < 1.0 - a.min(0.0) {
                    found.extend(coarse.score(i, j, a, b));
                    b += 1.0 / n as f32;
                }
            }
        }
    }
    let mut kept = keep_best(found, KEEP[0]);
    // Finer levels: around each survivor (lines double, steps halve).
    for (k, level) in levels.iter().enumerate().skip(1) {
        let n = level.n;
        let allowed = lines_in(n, across);
        let step_a = SCALE_RATIO.powf(1.0 / SCALE_STEPS as f32).powf(0.5f32.powi(k as i32));
        let step_b = 1.0 / n as f32;
        let mut refined = Vec::new();
        for c in &kept {
            let mut best: Option<Candidate> = None;
            for i in (2 * c.i).saturating_sub(1)..=(2 * c.i + 2) {
                if !allowed.contains(&i) {
                    continue;
                }
                for j in (2 * c.j).saturating_sub(1)..=(2 * c.j + 2) {
                    for da in [-1i32, 0, 1] {
                        let a = c.a * step_a.powi(da);
                        for db in -2i32..=2 {
                            if let Some(s) = level.score(i, j, a, c.b + db as f32 * step_b)
                                && best.is_none_or(|b| s.score > b.score)
                            {
                                best = Some(s);
                            }
                        }
                    }
                }
            }
            refined.extend(best);
        }
        kept = keep_best(refined, if k + 1 < levels.len() { KEEP[1] } else { 1 });
    }
    kept.into_iter().next()
}

/// Finds the line two orthogonal planes share, or `None` when either image is blank.
pub fn intersect(reference: &GrayImage, target: &GrayImage) -> Option<Intersection> {
    intersect_all(reference, target, None).into_iter().next()
}

/// Like `intersect`, for planes that both pass through the structure boxed in the reference:
/// their common line then crosses that box, so only reference lines through it are tried.
pub fn intersect_near(reference: &GrayImage, target: &GrayImage, reference_box: Option<BBox>) -> Option<Intersection> {
    intersect_all(reference, target, reference_box).into_iter().next()
}

/// `img` through the cumulative histogram of its body (values in 0..1; background, the darkest
/// levels, stays 0): each view's window and curve (any monotone map) undone, as far as both
/// views show alike mixtures of tissue, whatever share of each view is background.
pub fn equalized(img: &GrayImage) -> GrayImage {
    const BINS: usize = 256;
    let bin = |v: f32| ((v.clamp(0.0, 1.0) * (BINS - 1) as f32).round() as usize).min(BINS - 1);
    let mut hist = [0.0f32; BINS];
    for &v in img.data.iter().filter(|&&v| v > BACKGROUND) {
        hist[bin(v)] += 1.0;
    }
    let total = hist.iter().sum::<f32>().max(1.0);
    let mut cdf = [0.0f32; BINS];
    let mut below = 0.0;
    for k in 0..BINS {
        cdf[k] = 0.1 + 0.9 * (below + hist[k] / 2.0) / total;
        below += hist[k];
    }
    img.map(|v| if v > BACKGROUND { cdf[bin(v)] } else { 0.0 })
}

/// Where the body lies along one axis of a 0..1 image (0 = x), as fractions of that axis: the
/// first and last line across it with more than 2 % of its pixels above the background level
/// (0 and 1 for a blank image).
fn body_extent(img: &GrayImage, axis: usize) -> (f32, f32) {
    let (along, across) = if axis == 0 { (img.width, img.height) } else { (img.height, img.width) };
    let filled = |k: usize| {
        let count = (0..across).filter(|&t| if axis == 0 { img.get(k, t) } else { img.get(t, k) } > BACKGROUND).count();
        count as f32 > 0.02 * across as f32
    };
    match ((0..along).find(|&k| filled(k)), (0..along).rev().find(|&k| filled(k))) {
        (Some(lo), Some(hi)) => (lo as f32 / along as f32, (hi + 1) as f32 / along as f32),
        _ => (0.0, 1.0),
    }
}

/// How far the reference's body extent, mapped by target fraction = `a` · reference fraction +
/// `b`, lands from the target's: both ends' misses, per unit of the target's extent. An end at an
/// image's border counts as the body's end too, though it may be where a view was cropped inside
/// the body: leaving such ends out kept 2 of the 12 items this cue gained on the confirming seeds
/// (671/672), counting an end only where both views agree on whether it is at a border kept 1. So
/// the cue partly assumes that each view's field of view hugs the body, as the second rendering
/// crops views (and as a view exported around the body would).
fn extent_mismatch(reference: (f32, f32), target: (f32, f32), a: f32, b: f32) -> f32 {
    let (m0, m1) = (a * reference.0 + b, a * reference.1 + b);
    let (lo, hi) = (m0.min(m1), m0.max(m1));
    ((lo - target.0).abs() + (hi - target.1).abs()) / (target.1 - target.0).max(0.05)
}

/// The best line pair under each hypothesis of which axes the planes share, best first.
pub fn intersect_all(reference: &GrayImage, target: &GrayImage, reference_box: Option<BBox>) -> Vec<Intersection> {
    let body = |img: &GrayImage| [body_extent(img, 0), body_extent(img, 1)];
    let (reference_body, target_body) = (body(reference), body(target));
    // The hypotheses are searched side by side (each on its own; the result does not depend on it).
    let mut found: Vec<(SharedAxes, Candidate)> = SharedAxes::ALL
        .par_iter()
        .filter_map(|&s| {
            let ra = s.axes().0;
            let across = reference_box.map(|b| {
                // The box's range across the shared axis, as fractions, its outer tenth left out.
                let (lo, hi, extent) = if ra == 0 { (b.y1, b.y2, reference.height) } else { (b.x1, b.x2, reference.width) };
                let m = 0.1 * (hi - lo);
                ((lo + m) / extent as f32, (hi - m) / extent as f32)
            });
            // Near the box along the shared axis: its extent again on either side.
            let window = reference_box.map_or((0.0, 1.0), |b| {
                let (c, e, _) = s.along(b.to_array());
                let extent = if ra == 0 { reference.width } else { reference.height } as f32;
                ((c - 1.5 * e) / extent, (c + 1.5 * e) / extent)
            });
            let extents = (reference_body[ra], target_body[s.axes().1]);
            search(reference, target, s, across, window, extents).map(|c| (s, c))
        })
        .collect();
    found.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    let n = LINES as f32;
    (0..found.len())
        .map(|k| {
            let (shared, c) = found[k];
            let (ra, ta) = shared.axes();
            let (r_along, r_across) = if ra == 0 { (reference.width, reference.height) } else { (reference.height, reference.width) };
            let (t_along, t_across) = if ta == 0 { (target.width, target.height) } else { (target.height, target.width) };
            // The best other hypothesis: for the best, the runner-up; for the others, the best.
            let other = found.iter().enumerate().find(|&(o, _)| o != k).map(|(_, f)| f.1);
            let margin = other.map_or(0.3, |o| c.score - o.score);
            let confidence = (((c.ncc - 0.5) / 0.4).clamp(0.0, 1.0) * (margin / 0.1).clamp(0.0, 1.0)).sqrt();
            Intersection {
                shared,
                // The line runs along the shared axis; its position is across it.
                line_in_reference: (c.i as f32 + 0.5) / n * r_across as f32,
                line_in_target: (c.j as f32 + 0.5) / n * t_across as f32,
                scale: c.a * t_along as f32 / r_along as f32,
                offset: c.b * t_along as f32,
                ncc: c.ncc,
                runner_up_ncc: other.map_or(-1.0, |o| o.ncc),
                score: c.score,
                confidence,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An asymmetric volume on a 96³ grid: a body (dark outside) with smooth texture and a few
    /// structures of their own intensity, as anatomy has (a texture alone is so smooth that
    /// neighbouring lines correlate almost perfectly).
    fn volume(x: f32, y: f32, z: f32) -> f32 {
        let (x, y, z) = (x / 96.0, y / 96.0, z / 96.0);
        let body = ((x - 0.5) / 0.45).powi(2) + ((y - 0.5) / 0.42).powi(2) + ((z - 0.5) / 0.48).powi(2);
        if body > 1.0 {
            return 0.02;
        }
        let mut v = 0.5
            + 0.15 * (7.0 * x + 2.0 * y * y).sin() * (5.0 * z + x).cos()
            + 0.1 * (11.0 * y - 3.0 * z).sin()
            + 0.05 * (9.0 * z * x).cos();
        let blobs = [
            ([0.3, 0.35, 0.7], 0.12, 0.9),
            ([0.62, 0.3, 0.5], 0.1, 0.15),
            ([0.45, 0.6, 0.25], 0.14, 0.8),
            ([0.7, 0.65, 0.6], 0.09, 0.1),
            ([0.35, 0.55, 0.45], 0.08, 0.95),
            ([0.55, 0.45, 0.8], 0.1, 0.2),
        ];
        for (c, r, level) in blobs {
            if (x - c[0]).powi(2) + (y - c[1]).powi(2) + (z - c[2]).powi(2) < r * r {
                v = level;
            }
        }
        v
    }

    /// The body's extent is read where it fills more than a sliver of the lines across it, and a
    /// line pair's map is charged for carrying one view's extent off the other's.
    #[test]
    fn body_extents_map_through_the_line_pairs_scale_and_offset() {
        // A body over x 24..72 and y 12..60 of a 96 × 96 image, one stray bright pixel outside.
        let mut img = GrayImage::from_fn(96, 96, |x, y| if (24..72).contains(&x) && (12..60).contains(&y) { 0.5 } else { 0.0 });
        img.set(90, 90, 1.0);
        assert_eq!(body_extent(&img, 0), (0.25, 0.75));
        assert_eq!(body_extent(&img, 1), (0.125, 0.625));
        assert_eq!(body_extent(&GrayImage::filled(96, 96, 0.0), 0), (0.0, 1.0));
        // The same body at half the scale, a quarter in: the map that says so costs nothing…
        assert!(extent_mismatch((0.25, 0.75), (0.375, 0.625), 0.5, 0.25).abs() < 1e-6);
        // …reversed too; one shifted by a tenth of the image misses by 0.1 at both ends, 0.2 over
        // the target's extent of 0.25.
        assert!(extent_mismatch((0.25, 0.75), (0.375, 0.625), -0.5, 0.75).abs() < 1e-6);
        assert!((extent_mismatch((0.25, 0.75), (0.375, 0.625), 0.5, 0.35) - 0.8).abs() < 1e-5);
    }

    /// The search for planes through a boxed structure: only reference lines crossing the box
    /// are tried (the box here is off-centre on the line, so its middle is not the answer).
    #[test]
    fn axial_and_coronal_share_x_and_meet_on_their_rows() {
        let (y0, z0) = (30.0, 70.0);
        let axial = GrayImage::from_fn(96, 96, |x, y| volume(x as f32, y as f32, z0));
        let coronal = GrayImage::from_fn(96, 96, |x, z| volume(x as f32, y0, z as f32));
        let found = intersect_near(&axial, &coronal, Some(BBox::new(40.0, y0 - 9.0, 60.0, y0 + 15.0))).unwrap();
        assert_eq!(found.shared, SharedAxes::XtoX);
        assert!((found.line_in_reference - y0).abs() < 2.0, "{found:?}");
        assert!((found.line_in_target - z0).abs() < 2.0, "{found:?}");
        assert!((found.scale - 1.0).abs() < 0.03 && found.offset.abs() < 2.0, "{found:?}");
    }

    #[test]
    fn axial_to_sagittal_maps_y_to_x() {
        let (x0, z0) = (55.0, 20.0);
        let axial = GrayImage::from_fn(96, 96, |x, y| volume(x as f32, y as f32, z0));
        let sagittal = GrayImage::from_fn(96, 96, |y, z| volume(x0, y as f32, z as f32));
        let found = intersect_near(&axial, &sagittal, Some(BBox::new(x0 - 14.0, 30.0, x0 + 8.0, 50.0))).unwrap();
        assert_eq!(found.shared, SharedAxes::YtoX);
        assert!((found.line_in_reference - x0).abs() < 2.0, "{found:?}");
        assert!((found.line_in_target - z0).abs() < 2.0, "{found:?}");
        assert!((found.scale - 1.0).abs() < 0.03 && found.offset.abs() < 2.0, "{found:?}");
    }

    /// A sagittal view whose columns run posterior to anterior while the axial view's rows run
    /// anterior to posterior: the shared axis is reversed, and the scale says so.
    #[test]
    fn a_reversed_shared_axis_is_found_with_a_negative_scale() {
        let (x0, z0) = (55.0, 20.0);
        let axial = GrayImage::from_fn(96, 96, |x, y| volume(x as f32, y as f32, z0));
        let sagittal = GrayImage::from_fn(96, 96, |u, z| volume(x0, 95.0 - u as f32, z as f32));
        let found = intersect_near(&axial, &sagittal, Some(BBox::new(x0 - 14.0, 30.0, x0 + 8.0, 50.0))).unwrap();
        assert_eq!(found.shared, SharedAxes::YtoX, "{found:?}");
        assert!((found.line_in_reference - x0).abs() < 2.0, "{found:?}");
        assert!((found.line_in_target - z0).abs() < 2.0, "{found:?}");
        // Axial row y (pixel-edge) is sagittal column 96 − y.
        assert!((found.scale + 1.0).abs() < 0.03, "{found:?}");
        assert!((found.to_target(40.0) - 56.0).abs() < 2.0, "{found:?}");
    }

    /// Each view cropped, resampled (another pixel size along each axis) and windowed on its
    /// own: the line is still found, with the scale and offset along it.
    #[test]
    fn independently_cropped_resampled_and_windowed_views() {
        let (y0, z0) = (40.0, 50.0);
        // Axial: x 10..90 and y 0..96 on 96 × 96 pixels (1.2 px per voxel along x).
        let axial = GrayImage::from_fn(96, 96, |px, py| volume(10.0 + (px as f32 + 0.5) / 1.2 - 0.5, py as f32, z0));
        // Coronal: x 0..96 at one pixel per voxel, z 20..80 stretched over 96 rows, through a
        // window and a curve of its own.
        let coronal = GrayImage::from_fn(96, 96, |px, pz| {
            let v = volume(px as f32, y0, 20.0 + (pz as f32 + 0.5) / 1.6 - 0.5);
            ((v - 0.2) / 0.7).clamp(0.0, 1.0).powf(0.6)
        });
        let found = intersect_near(&axial, &coronal, Some(BBox::new(30.0, y0 - 12.0, 50.0, y0 + 10.0))).unwrap();
        assert_eq!(found.shared, SharedAxes::XtoX, "{found:?}");
        assert!((found.line_in_reference - y0).abs() < 2.0, "{found:?}");
        assert!((found.line_in_target - (z0 - 20.0) * 1.6).abs() < 3.0, "{found:?}");
        // Target x = reference px / 1.2 + 10. The axial view is cropped inside the body, whose
        // extent the search also matches (`extent_mismatch`): that pulls the scale a little
        // (0.878 here), while positions near the box still map to within a pixel or two.
        assert!((found.scale - 1.0 / 1.2).abs() < 0.06, "{found:?}");
        assert!((found.to_target(48.0) - 50.0).abs() < 2.5, "{found:?}");
    }

    /// How often the search finds the answer's band in a MedSG task file (`TANDEM_PLANES_FILE`):
    /// `cargo test --release --lib planes_on_items -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn planes_on_items() {
        use crate::grounding::medsg;
        let file = std::path::PathBuf::from(std::env::var("TANDEM_PLANES_FILE").unwrap());
        let root = file.parent().unwrap();
        let items = medsg::read_task_file(&file).unwrap();
        let (mut hits, mut n) = (0, 0);
        let start = std::time::Instant::now();
        for item in items.iter().filter(|i| i.task == "multi_view") {
            let r = medsg::read_image(&root.join(&item.images[0])).unwrap();
            let t = medsg::read_image(&root.join(&item.images[1])).unwrap().image;
            let rb = medsg::question_box(&item.question).unwrap();
            let truth = item.answer_box().unwrap();
            let all = intersect_all(&r.image, &t, Some(rb));
            let hit_of = |p: &Intersection| {
                let (c, e, _) = p.shared.along(rb.to_array());
                let ta = p.shared.axes().1;
                let (tc, te, lo, hi) = if ta == 0 {
                    ((truth.x1 + truth.x2) / 2.0, truth.width(), truth.y1, truth.y2)
                } else {
                    ((truth.y1 + truth.y2) / 2.0, truth.height(), truth.x1, truth.x2)
                };
                let along_ok = (p.to_target(c) - tc).abs() < 0.3 * te && (p.scale.abs() * e / te - 1.0).abs() < 0.35;
                let across_ok = p.line_in_target > lo - 3.0 && p.line_in_target < hi + 3.0;
                (along_ok, across_ok)
            };
            let Some(p) = all.first() else { continue };
            let (along_ok, across_ok) = hit_of(p);
            let hit = along_ok && across_ok;
            let rank = all.iter().position(|q| hit_of(q) == (true, true)).map_or(9, |r| r);
            let scores: Vec<String> = all.iter().map(|q| format!("{:?}:{:.3}", q.shared, q.score)).collect();
            eprintln!(
                "{} {:?} hit={} along={} across={} rank={rank} ncc={:.2} conf={:.2} scale={:.2} {}",
                item.id,
                p.shared,
                hit as u8,
                along_ok as u8,
                across_ok as u8,
                p.ncc,
                p.confidence,
                p.scale,
                scores.join(" ")
            );
            n += 1;
            hits += hit as usize;
        }
        eprintln!("{hits}/{n} bands found, {:.0} ms/item", start.elapsed().as_secs_f64() * 1e3 / n.max(1) as f64);
    }
}
