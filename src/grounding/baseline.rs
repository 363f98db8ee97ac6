//! The classical grounder: register, subtract, threshold, largest component for differences;
//! normalized cross-correlation for matching. Shown beside the model in every evaluation and
//! used when the model's weights cannot be loaded.

use crate::grounding::geometry::{BBox, components};
use crate::grounding::subtract::MatchedDifference;
use crate::registration::planes::{Intersection, SharedAxes};
use crate::registration::{self, AlignOptions, Transform};
use crate::study::gray::GrayImage;

/// A box with a 0..1 confidence.
#[derive(Clone, Copy, Debug)]
pub struct Scored {
    pub bbox: BBox,
    pub score: f32,
}

/// Warps `prior` onto `current`'s pixel grid through `prior_from_current`, filling what falls
/// outside the prior with the current image (so that area reads as "no change").
pub fn prior_on_current(prior: &GrayImage, current: &GrayImage, prior_from_current: &Transform) -> GrayImage {
    prior_on_current_covering(prior, current, prior_from_current).0
}

/// `prior_on_current`, and which of its pixels the prior covers (the rest is filler).
pub fn prior_on_current_covering(prior: &GrayImage, current: &GrayImage, prior_from_current: &Transform) -> (GrayImage, Vec<bool>) {
    let mut covered = vec![false; current.data.len()];
    let warped = GrayImage::from_fn(current.width, current.height, |x, y| {
        let (px, py) = prior_from_current.apply(x as f64, y as f64);
        match prior.sample_inside(px as f32, py as f32) {
            Some(v) => {
                covered[y * current.width + x] = true;
                v
            }
            None => current.get(x, y),
        }
    });
    (warped, covered)
}

/// Difference grounding on 0..1 images: boxes in `current`'s pixels, best first.
pub fn diff(prior: &GrayImage, current: &GrayImage) -> (Vec<Scored>, Transform) {
    let align = registration::align(current, prior, &AlignOptions::shift_only());
    // align gives current_from_prior; we need prior_from_current to resample the prior.
    let prior_from_current = align.fixed_from_moving.inverse().unwrap_or(Transform::IDENTITY);
    let (warped, covered) = prior_on_current_covering(prior, current, &prior_from_current);
    let MatchedDifference { difference, threshold, .. } = MatchedDifference::new(&warped, current, &covered, &[]);
    let (_, mut comps) = components(&difference, threshold, &difference);
    if comps.is_empty() {
        // Nothing stands out: report the strongest difference anyway, at half its height.
        let max = difference.data.iter().copied().fold(0.0f32, f32::max);
        comps = components(&difference, 0.5 * max, &difference).1;
    }
    // Slivers along edges (resampling, a sharper acquisition) are not findings: a proposal must
    // carry a twentieth of the strongest difference's weight.
    let strongest = comps.iter().map(|c| c.weight).fold(0.0f64, f64::max);
    comps.retain(|c| c.pixels >= 4 && c.weight >= 0.05 * strongest);
    let total: f64 = comps.iter().map(|c| c.weight).sum::<f64>().max(1e-9);
    let mut out: Vec<Scored> = comps.iter().map(|c| Scored { bbox: c.bbox, score: (c.weight / total) as f32 }).collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    (out, prior_from_current)
}

/// Sums over windows via an integral image (f64 for precision on large images).
struct Integral {
    w: usize,
    sum: Vec<f64>,
    sq: Vec<f64>,
}

impl Integral {
    fn new(img: &GrayImage) -> Self {
        let (w, h) = (img.width + 1, img.height + 1);
        let mut sum = vec![0.0; w * h];
        let mut sq = vec![0.0; w * h];
        for y in 0..img.height {
            let (mut rs, mut rq) = (0.0, 0.0);
            for x in 0..img.width {
                let v = img.get(x, y) as f64;
                rs += v;
                rq += v * v;
                sum[(y + 1) * w + x + 1] = sum[y * w + x + 1] + rs;
                sq[(y + 1) * w + x + 1] = sq[y * w + x + 1] + rq;
            }
        }
        Integral { w, sum, sq }
    }

    fn window(&self, x: usize, y: usize, tw: usize, th: usize) -> (f64, f64) {
        let w = self.w;
        let at = |t: &Vec<f64>, x: usize, y: usize| t[y * w + x];
        let s = at(&self.sum, x + tw, y + th) - at(&self.sum, x, y + th) - at(&self.sum, x + tw, y) + at(&self.sum, x, y);
        let q = at(&self.sq, x + tw, y + th) - at(&self.sq, x, y + th) - at(&self.sq, x + tw, y) + at(&self.sq, x, y);
        (s, q)
    }
}

/// NCC of `template` at every top-left position in `image` listed by `positions`.
fn ncc_at(
    image: &GrayImage,
    integral: &Integral,
    template: &GrayImage,
    positions: impl Iterator<Item = (usize, usize)>,
) -> Vec<(usize, usize, f32)> {
    let (tw, th) = (template.width, template.height);
    let n = (tw * th) as f64;
    let (tm, _) = template.mean_std();
    let t0: Vec<f32> = template.data.iter().map(|v| v - tm).collect();
    let t_norm = t0.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    positions
        .map(|(x, y)| {
            let mut dot = 0.0f64;
            for ty in 0..th {
                let row = &image.data[(y + ty) * image.width + x..(y + ty) * image.width + x + tw];
                let trow = &t0[ty * tw..(ty + 1) * tw];
                dot += row.iter().zip(trow).map(|(a, b)| a * b).sum::<f32>() as f64;
            }
            let (s, q) = integral.window(x, y, tw, th);
            let var = (q - s * s / n).max(0.0);
            let denom = var.sqrt() * t_norm;
            // A (nearly) flat window has no pattern to correlate; integral-image round-off must
            // not turn it into a perfect match.
            let flat = var < 1e-6 * n;
            (x, y, if denom > 1e-9 && !flat { ((dot / denom) as f32).clamp(-1.0, 1.0) } else { 0.0 })
        })
        .collect()
}

/// Where `template` best matches inside `image` (top-left corner and NCC), searched coarse to
/// fine. `None` when the template does not fit inside the image.
pub fn match_template(image: &GrayImage, template: &GrayImage) -> Option<(usize, usize, f32)> {
    let (tw, th) = (template.width, template.height);
    if tw == 0 || th == 0 || tw > image.width || th > image.height {
        return None;
    }
    let factor = (tw.min(th) / 12).clamp(1, 8);
    let mut candidates: Vec<(usize, usize, f32)> = if factor > 1 {
        let small = image.resize(image.width / factor, image.height / factor);
        let small_t = template.resize((tw / factor).max(1), (th / factor).max(1));
        let integral = Integral::new(&small);
        let positions = (0..=small.height - small_t.height).flat_map(|y| (0..=small.width - small_t.width).map(move |x| (x, y)));
        let mut scored = ncc_at(&small, &integral, &small_t, positions);
        scored.sort_by(|a, b| b.2.total_cmp(&a.2));
        scored.truncate(16);
        scored.into_iter().map(|(x, y, s)| (x * factor, y * factor, s)).collect()
    } else {
        vec![]
    };
    let integral = Integral::new(image);
    let (max_x, max_y) = (image.width - tw, image.height - th);
    if candidates.is_empty() {
        let positions = (0..=max_y).flat_map(|y| (0..=max_x).map(move |x| (x, y)));
        return ncc_at(image, &integral, template, positions).into_iter().max_by(|a, b| a.2.total_cmp(&b.2));
    }
    // Refine each coarse candidate at full resolution.
    let r = factor as isize + 1;
    let mut best: Option<(usize, usize, f32)> = None;
    for (cx, cy, _) in candidates.drain(..) {
        let xs = (cx as isize - r).max(0) as usize..=((cx as isize + r) as usize).min(max_x);
        let ys = (cy as isize - r).max(0) as usize..=((cy as isize + r) as usize).min(max_y);
        let positions = ys.flat_map(|y| xs.clone().map(move |x| (x, y)));
        for m in ncc_at(image, &integral, template, positions) {
            if best.is_none_or(|b| m.2 > b.2) {
                best = Some(m);
            }
        }
    }
    best
}

/// Finds the region `reference_box` of `reference` inside `target`: same size, best NCC.
pub fn locate(reference: &GrayImage, reference_box: BBox, target: &GrayImage) -> Option<Scored> {
    let b = reference_box.clamp_to(reference.width as f32, reference.height as f32);
    let (x0, y0) = (b.x1.round() as isize, b.y1.round() as isize);
    let (w, h) = (b.width().round().max(1.0) as usize, b.height().round().max(1.0) as usize);
    let template = reference.crop(x0, y0, w.min(target.width), h.min(target.height), 0.0);
    let (x, y, ncc) = match_template(target, &template)?;
    Some(Scored {
        bbox: BBox::new(x as f32, y as f32, (x + template.width) as f32, (y + template.height) as f32),
        score: ncc.clamp(0.0, 1.0),
    })
}

/// Moves `coarse` to where the reference region correlates best nearby (within a third of the
/// box size) and returns that correlation; the coarse box (and NCC 0) when nothing there
/// correlates well.
pub fn refine(reference: &GrayImage, reference_box: BBox, target: &GrayImage, coarse: Scored) -> (Scored, f32) {
    let b = reference_box.clamp_to(reference.width as f32, reference.height as f32);
    let (w, h) = (b.width().round().max(1.0) as usize, b.height().round().max(1.0) as usize);
    if w < 4 || h < 4 || w > target.width || h > target.height {
        return (coarse, 0.0);
    }
    let template = reference.crop(b.x1.round() as isize, b.y1.round() as isize, w, h, 0.0);
    let (cx, cy) = coarse.bbox.centre();
    let reach = (w.max(h) as f32 / 3.0).max(6.0);
    let (x0, y0) = ((cx - w as f32 / 2.0 - reach).max(0.0) as usize, (cy - h as f32 / 2.0 - reach).max(0.0) as usize);
    let (x1, y1) = (
        ((cx + w as f32 / 2.0 + reach).ceil() as usize).min(target.width),
        ((cy + h as f32 / 2.0 + reach).ceil() as usize).min(target.height),
    );
    if x1 < x0 + w || y1 < y0 + h {
        return (coarse, 0.0);
    }
    let window = target.crop(x0 as isize, y0 as isize, x1 - x0, y1 - y0, 0.0);
    match match_template(&window, &template) {
        Some((x, y, ncc)) if ncc > 0.6 => {
            // The coarse box (whose size may differ from the template's) follows the match.
            let (fx, fy) = ((x + x0) as f32 + w as f32 / 2.0, (y + y0) as f32 + h as f32 / 2.0);
            (Scored { bbox: coarse.bbox.translate(fx - cx, fy - cy), score: coarse.score }, ncc)
        }
        _ => (coarse, 0.0),
    }
}

/// How alike the intensities of two regions of 0..1 images are (Bhattacharyya coefficient of
/// 16-bin histograms of each box's central half, 0..1). Two views of one volume share its
/// intensity scale, so the same tissue has the same values in both, whatever its shape.
pub fn region_similarity(a: &GrayImage, box_a: BBox, b: &GrayImage, box_b: BBox) -> f32 {
    const BINS: usize = 16;
    let histogram = |img: &GrayImage, bx: BBox| -> Option<[f32; BINS]> {
        let (cx, cy) = bx.centre();
        let core = BBox::from_centre(cx, cy, bx.width() / 2.0, bx.height() / 2.0).clamp_to(img.width as f32, img.height as f32);
        let (x0, y0, x1, y1) = (core.x1.floor() as usize, core.y1.floor() as usize, core.x2.ceil() as usize, core.y2.ceil() as usize);
        let mut h = [0.0f32; BINS];
        let mut n = 0.0;
        for y in y0..y1.min(img.height) {
            for x in x0..x1.min(img.width) {
                h[((img.get(x, y).clamp(0.0, 1.0) * BINS as f32) as usize).min(BINS - 1)] += 1.0;
                n += 1.0;
            }
        }
        (n > 0.0).then(|| h.map(|c| c / n))
    };
    match (histogram(a, box_a), histogram(b, box_b)) {
        (Some(ha), Some(hb)) => ha.iter().zip(hb.iter()).map(|(p, q)| (p * q).sqrt()).sum(),
        _ => 0.0,
    }
}

/// Finds `reference_box` of `reference` in an orthogonal plane of the same volume, classically:
/// boxes of the reference's extents slid along the shared-axis band (the one `planes` found,
/// else all four; see `LocateHint::orthogonal_to`), ranked by intensity similarity to the
/// reference region. When the planes' common line crosses the reference box, the answer must
/// straddle it too.
pub fn locate_orthogonal(reference: &GrayImage, reference_box: BBox, target: &GrayImage, planes: Option<&Intersection>) -> Option<Scored> {
    let (tw, th) = (target.width as f32, target.height as f32);
    let all = SharedAxes::ALL;
    let hypotheses = match planes {
        Some(p) => std::slice::from_ref(&p.shared),
        None => &all[..],
    };
    let mut best: Option<Scored> = None;
    for &shared in hypotheses {
        let ta = shared.axes().1;
        let (centre, extent, across) = shared.along(reference_box.to_array());
        // The shared axis's range, mapped through the planes' scale and offset when known.
        let (centre, extent) = planes.map_or((centre, extent), |p| (p.to_target(centre), extent * p.scale.abs()));
        let line = planes.filter(|p| p.crosses(reference_box.to_array())).map(|p| p.line_in_target);
        let length = if ta == 0 { th } else { tw };
        let mut t = across / 2.0;
        while t <= length - across / 2.0 {
            if line.is_none_or(|l| (t - l).abs() < across / 2.0) {
                let b = if ta == 0 { BBox::from_centre(centre, t, extent, across) } else { BBox::from_centre(t, centre, across, extent) };
                let score = region_similarity(reference, reference_box, target, b);
                if best.is_none_or(|s| score > s.score) {
                    best = Some(Scored { bbox: b.clamp_to(tw, th), score });
                }
            }
            t += 4.0;
        }
    }
    best
}

/// Tracks `reference_box` from the first frame to the last, one frame at a time.
pub fn track(frames: &[GrayImage], reference_box: BBox) -> Option<Scored> {
    let mut current = Scored { bbox: reference_box, score: 1.0 };
    for pair in frames.windows(2) {
        current = locate(&pair[0], current.bbox, &pair[1])?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(w: usize, h: usize) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as f32, y as f32);
            0.5 + 0.2 * (x * 0.11).sin() * (y * 0.07).cos() + 0.1 * ((x + y) * 0.23).sin()
        })
    }

    #[test]
    fn region_similarity_prefers_the_same_tissue() {
        // Left half dark, right half bright: boxes on the same side match, across sides not.
        let img = GrayImage::from_fn(100, 50, |x, _| if x < 50 { 0.2 } else { 0.8 });
        let left = BBox::new(5.0, 5.0, 35.0, 45.0);
        let right = BBox::new(60.0, 10.0, 90.0, 30.0);
        assert!(region_similarity(&img, left, &img, left.translate(5.0, 0.0)) > 0.99);
        assert!(region_similarity(&img, left, &img, right) < 0.01);
    }

    #[test]
    fn template_matching_finds_an_exact_crop() {
        let img = scene(200, 160);
        let crop = img.crop(77, 41, 40, 30, 0.0);
        let (x, y, s) = match_template(&img, &crop).unwrap();
        assert_eq!((x, y), (77, 41));
        assert!(s > 0.999);
    }

    #[test]
    fn difference_box_covers_the_change() {
        let chest = crate::testutil::chest();
        let prior = chest.crop(100, 100, 256, 256, 0.0);
        let mut current = chest.crop(103, 98, 256, 256, 0.0);
        for y in 60..80 {
            for x in 130..150 {
                current.set(x, y, current.get(x, y) + 0.35);
            }
        }
        let (found, _) = diff(&prior, &current);
        let truth = BBox::new(130.0, 60.0, 150.0, 80.0);
        assert!(found[0].bbox.iou(&truth) > 0.6, "{:?}", found[0]);
    }
}
