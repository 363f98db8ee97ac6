//! Registered subtraction of an aligned pair in spite of different acquisitions: the prior's
//! intensities mapped onto the current's (a monotone map fitted on paired pixels), then the
//! absolute difference, its noise level, and the level above which a pixel counts as changed.

use crate::grounding::geometry::BBox;
use crate::study::gray::{GrayImage, percentiles};

// Chosen on items synthesized from the training images (seeds 78 and 79; checked on seed 80),
// never on the validation set; the rim constants on `tandem synth --split train --seed 78`
// difference items after the answers came to span every visibly changed pixel.
/// Smoothing of the difference before it is thresholded (px).
const BLUR_PX: f32 = 0.7;
/// A pixel has changed where the difference exceeds this many noise σ…
const NOISE_SIGMAS: f32 = 2.0;
/// …and at least this much on the 0..1 scale.
const VISIBLE: f32 = 0.05;
/// The rim is followed on the difference smoothed this much more (px), where its noise is low
/// enough to trace a faint feathered edge…
const RIM_BLUR_PX: f32 = 1.2;
/// …down to this many σ of the unchanged pixels' smoothed difference above their mean…
const RIM_SIGMAS: f32 = 3.0;
/// …but not below the level that makes a pixel visibly changed (`synth::VISIBLE`).
const RIM_FLOOR: f32 = 0.02;
/// About this many pixels (evenly spaced) feed the intensity map and the noise estimate:
/// some 250 per bin of the map.
const MAP_SAMPLES: usize = 16_384;
/// Levels of the tabulated map, and bins of `from` it is fitted on.
const LEVELS: usize = 256;
const BINS: usize = 64;
// Chosen on `tandem synth --split train` difference items (seed 601 second rendering, 602–605
// both; 1800 items, weights of 593400c), among quartiles / deciles / twentieths and 0 / 1 / 2 /
// 4 typical half-widths: 769 -> 769 of 800 in the training rendering, 806 -> 819 of 1000 in the
// second, mean IoU up in both (0.847 -> 0.848, 0.702 -> 0.714; deciles with 2 half-widths 768 /
// 818, with none 706 / 777). Confirmed on seeds 641 and 642 (both renderings, 800 items): 705 ->
// 717, no set down more than one item, mean IoU up in both renderings. Out of distribution it
// lost 4 of 160 items on each growth row (boxes shrank by 1–3 % nearly everywhere; keeping the
// band to bins spread 3 or 6 times the median, or 0.1 / 0.2 wide, kept growth but left the
// second rendering at 810–811 of 1000); it landed with the extent cut counted in hits
// (`train::calibrate`), which made up for the shrinking.
/// The band a bin of `from` spreads over in `to` runs between these quantiles of `to`…
const BAND_QUANTILE: f32 = 0.25;
/// …less, on each side, this many halves of the median bin's band: noise alone spreads every
/// bin that much, and only a bin spread wider than that has collapsed values of `to`.
const BAND_TYPICAL_HALVES: f32 = 1.0;

/// Monotone map of `from`'s intensities onto `to`'s, fitted on paired pixels of the aligned
/// images: per bin of `from`, the median of `to` (the changed pixels are a minority at any
/// intensity, so they do not bend it, as they would bend a quantile match), made monotone by
/// pooling adjacent violators. Values clipped at 0 or 1 are censored, not known: `from` = 1
/// only says "at least what the top of the map reaches", so those ends map to half-open intervals.
/// Likewise a bin of `from` whose pixels spread over a wide band of `to` (a window, a clip or a
/// steep contrast curve in `from` that merged intensities `to` still tells apart) only bounds
/// `to` to that band, in `estimate` (the network's input); `distance`, the pixel subtraction's,
/// ignores the band.
struct IntensityMap {
    table: Vec<f32>,
    /// Per level: how far `to` may lie below and above the map and still agree with `from`
    /// (0 and 0 where `from` determines `to` up to noise).
    band: Vec<(f32, f32)>,
    floor_of_top: f32,
    ceiling_of_bottom: f32,
}

impl IntensityMap {
    fn identity() -> IntensityMap {
        let table = (0..LEVELS).map(|l| l as f32 / (LEVELS - 1) as f32).collect();
        IntensityMap { table, band: vec![(0.0, 0.0); LEVELS], floor_of_top: 1.0, ceiling_of_bottom: 0.0 }
    }

    /// Fits the map to pairs (`a[i]` in `from`, `b[i]` in `to`).
    fn fit(a: &[f32], b: &[f32]) -> IntensityMap {
        let mut groups: Vec<Vec<f32>> = vec![Vec::new(); BINS];
        let mut centres = vec![0.0f64; BINS];
        for (&x, &y) in a.iter().zip(b) {
            if x > 0.0 && x < 1.0 {
                let k = ((x * BINS as f32) as usize).min(BINS - 1);
                groups[k].push(y);
                centres[k] += x as f64;
            }
        }
        // (centre, median, weight) of each populated bin, then pooled into a monotone sequence;
        // beside it each bin's centre and the reach of its band below and above its median.
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
        let mut spreads: Vec<(f32, f32, f32)> = Vec::new();
        for (k, g) in groups.iter_mut().enumerate() {
            if g.len() < 4 {
                continue;
            }
            let n = g.len();
            g.sort_unstable_by(f32::total_cmp);
            let quantile = |q: f32| g[(q * (n - 1) as f32).round() as usize];
            let (centre, median, weight) = (centres[k] / n as f64, g[n / 2] as f64, n as f64);
            let (low, high) = (quantile(BAND_QUANTILE), quantile(1.0 - BAND_QUANTILE));
            spreads.push((centre as f32, median as f32 - low, high - median as f32));
            blocks.push((centre * weight, median * weight, weight));
            while blocks.len() > 1 {
                let (c1, m1, w1) = blocks[blocks.len() - 1];
                let (c0, m0, w0) = blocks[blocks.len() - 2];
                if m0 / w0 <= m1 / w1 {
                    break;
                }
                blocks.pop();
                *blocks.last_mut().expect("two blocks") = (c0 + c1, m0 + m1, w0 + w1);
            }
        }
        if blocks.is_empty() {
            return IntensityMap::identity();
        }
        let points: Vec<(f32, f32)> = blocks.iter().map(|&(c, m, w)| ((c / w) as f32, (m / w) as f32)).collect();
        let at = |v: f32| {
            let j = points.partition_point(|p| p.0 < v);
            if j == 0 {
                return points[0].1;
            }
            if j == points.len() {
                return points[j - 1].1;
            }
            let (p, q) = (points[j - 1], points[j]);
            p.1 + (q.1 - p.1) * (v - p.0) / (q.0 - p.0).max(1e-6)
        };
        let table = (0..LEVELS).map(|l| at(l as f32 / (LEVELS - 1) as f32)).collect();
        let mut widths: Vec<f32> = spreads.iter().map(|&(_, below, above)| below + above).collect();
        widths.sort_unstable_by(f32::total_cmp);
        let noise_reach = BAND_TYPICAL_HALVES * widths[widths.len() / 2] / 2.0;
        // Each level takes the band of the bin whose centre lies nearest.
        let band = (0..LEVELS)
            .map(|l| {
                let v = l as f32 / (LEVELS - 1) as f32;
                let j = spreads.partition_point(|s| s.0 < v);
                let nearest = match j {
                    0 => 0,
                    j if j == spreads.len() => j - 1,
                    j if v - spreads[j - 1].0 < spreads[j].0 - v => j - 1,
                    j => j,
                };
                let (_, below, above) = spreads[nearest];
                ((below - noise_reach).max(0.0), (above - noise_reach).max(0.0))
            })
            .collect();
        IntensityMap { table, band, floor_of_top: at(1.0), ceiling_of_bottom: at(0.0) }
    }

    /// The value of `to` that `from_value` maps to; a clipped `from_value` (0 or 1) or one whose
    /// bin spreads over a band of `to` only bounds it, so `to_value` is kept where it lies within
    /// that bound.
    fn estimate(&self, from_value: f32, to_value: f32) -> f32 {
        if from_value >= 1.0 {
            return to_value.max(self.floor_of_top);
        }
        if from_value <= 0.0 {
            return to_value.min(self.ceiling_of_bottom);
        }
        let t = from_value * (LEVELS - 1) as f32;
        let i = (t as usize).min(LEVELS - 2);
        let mapped = self.table[i] + (self.table[i + 1] - self.table[i]) * (t - i as f32);
        let (below, above) = self.band[(t.round() as usize).min(LEVELS - 1)];
        // Not `clamp`, which panics on a NaN bound (a float volume may carry NaN pixels).
        to_value.max(mapped - below).min(mapped + above)
    }

    /// How far `to_value` lies from what `from_value` maps to.
    fn distance(&self, from_value: f32, to_value: f32) -> f32 {
        if from_value >= 1.0 {
            return (self.floor_of_top - to_value).max(0.0);
        }
        if from_value <= 0.0 {
            return (to_value - self.ceiling_of_bottom).max(0.0);
        }
        let t = from_value * (LEVELS - 1) as f32;
        let i = (t as usize).min(LEVELS - 2);
        (to_value - (self.table[i] + (self.table[i + 1] - self.table[i]) * (t - i as f32))).abs()
    }
}

/// The aligned prior in the current's intensities (the monotone map fitted on the covered
/// pixels), so that a pair acquired or windowed differently differs only where it changed;
/// pixels the prior does not cover keep the current's value.
pub fn prior_in_current_units(prior_on_current: &GrayImage, current: &GrayImage, covered: &[bool]) -> GrayImage {
    let step = (current.data.len() / MAP_SAMPLES).max(1);
    let (a, b): (Vec<f32>, Vec<f32>) =
        (0..current.data.len()).step_by(step).filter(|&i| covered[i]).map(|i| (prior_on_current.data[i], current.data[i])).unzip();
    let map = IntensityMap::fit(&a, &b);
    GrayImage::from_fn(current.width, current.height, |x, y| {
        let i = y * current.width + x;
        if covered[i] { map.estimate(prior_on_current.data[i], current.data[i]) } else { current.data[i] }
    })
}

fn inside(b: &BBox, x: usize, y: usize) -> bool {
    let (x, y) = (x as f32 + 0.5, y as f32 + 0.5);
    x >= b.x1 && x < b.x2 && y >= b.y1 && y < b.y2
}

/// The subtraction of an aligned pair, in `current`'s units: `|current − m(prior)|` with `m` the
/// intensity map fitted away from the `keep_out` boxes (those that leave half the image; 0 where
/// the prior does not cover), lightly smoothed, and the level above which a pixel counts as
/// changed (noise-aware).
pub struct MatchedDifference {
    pub difference: GrayImage,
    pub threshold: f32,
    /// The difference smoothed for following rims, and the level where a rim ends.
    pub rim: GrayImage,
    pub rim_level: f32,
}

impl MatchedDifference {
    pub fn new(prior_on_current: &GrayImage, current: &GrayImage, covered: &[bool], keep_out: &[BBox]) -> MatchedDifference {
        let w = current.width;
        let step = (current.data.len() / MAP_SAMPLES).max(1);
        let candidates: Vec<usize> = (0..current.data.len()).step_by(step).filter(|&i| covered[i]).collect();
        // The zones are kept out in their order, but none that would leave less than half the
        // covered samples: a box spanning most of the image would leave the map to be fitted on
        // a corner that lacks the image's other intensities, and the median fit tolerates a
        // minority of changed pixels anyway.
        let mut kept_out = vec![false; candidates.len()];
        let mut left = candidates.len();
        for zone in keep_out {
            let taken: Vec<usize> =
                (0..candidates.len()).filter(|&k| !kept_out[k] && inside(zone, candidates[k] % w, candidates[k] / w)).collect();
            if 2 * (left - taken.len()) >= candidates.len() {
                left -= taken.len();
                taken.into_iter().for_each(|k| kept_out[k] = true);
            }
        }
        let samples: Vec<usize> = candidates.iter().zip(&kept_out).filter(|&(_, &out)| !out).map(|(&i, _)| i).collect();
        let (a, b): (Vec<f32>, Vec<f32>) = samples.iter().map(|&i| (prior_on_current.data[i], current.data[i])).unzip();
        let map = IntensityMap::fit(&a, &b);
        let difference = GrayImage::from_fn(w, current.height, |x, y| {
            let i = y * w + x;
            if covered[i] { map.distance(prior_on_current.data[i], current.data[i]) } else { 0.0 }
        })
        .blur(BLUR_PX);
        // Noise σ from the unchanged pixels' absolute differences.
        let quiet: Vec<f32> = samples.iter().map(|&i| difference.data[i]).collect();
        let noise = robust_sigma(&quiet);
        let noise_threshold = NOISE_SIGMAS * noise;
        let rim = difference.blur(RIM_BLUR_PX);
        // Robust statistics: the samples include the changed pixels.
        let quiet_rim: Vec<f32> = samples.iter().map(|&i| rim.data[i]).collect();
        let median = percentiles(&quiet_rim, &[0.5])[0];
        let spread: Vec<f32> = quiet_rim.iter().map(|v| (v - median).abs()).collect();
        let (quiet_mean, quiet_sd) = (median, robust_sigma(&spread));
        MatchedDifference {
            difference,
            threshold: noise_threshold.max(VISIBLE),
            rim_level: (quiet_mean + RIM_SIGMAS * quiet_sd).max(RIM_FLOOR),
            rim,
        }
    }

    /// `core` grown through its rim: the region of the smoothed difference above `rim_level`
    /// connected to `seed` (the core's strongest pixel), within `limit` and where `allowed`,
    /// adds its pixels whose (lightly smoothed) difference reaches that level; the heavier
    /// smoothing only connects the rim, so it does not widen a sharp edge.
    pub fn grow_through_rim(&self, core: BBox, seed: (usize, usize), limit: BBox, allowed: impl Fn(usize, usize) -> bool) -> BBox {
        let (w, h) = (self.rim.width, self.rim.height);
        let limit = limit.clamp_to(w as f32, h as f32);
        let (x0, y0) = (limit.x1.max(0.0) as usize, limit.y1.max(0.0) as usize);
        let (x1, y1) = ((limit.x2.ceil() as usize).min(w), (limit.y2.ceil() as usize).min(h));
        if seed.0 < x0 || seed.0 >= x1 || seed.1 < y0 || seed.1 >= y1 || self.rim.get(seed.0, seed.1) < self.rim_level {
            return core;
        }
        let ww = x1 - x0;
        let mut seen = vec![false; ww * (y1 - y0)];
        let mut stack = vec![seed];
        seen[(seed.1 - y0) * ww + seed.0 - x0] = true;
        let mut grown = core;
        while let Some((x, y)) = stack.pop() {
            if self.difference.get(x, y) >= self.rim_level {
                grown = grown.union(&BBox::new(x as f32, y as f32, x as f32 + 1.0, y as f32 + 1.0));
            }
            let neighbours = [(x.wrapping_sub(1), y), (x + 1, y), (x, y.wrapping_sub(1)), (x, y + 1)];
            for (nx, ny) in neighbours {
                if nx < x0 || nx >= x1 || ny < y0 || ny >= y1 {
                    continue;
                }
                let k = (ny - y0) * ww + nx - x0;
                if !seen[k] && self.rim.get(nx, ny) >= self.rim_level && allowed(nx, ny) {
                    seen[k] = true;
                    stack.push((nx, ny));
                }
            }
        }
        grown
    }
}

// Chosen on `tandem synth --split train` difference items (seed 601 second rendering, 602–605 both;
// 1800 items, shipped weights: Acc@0.5 763 → 769 of 800 on the training rendering, 799 → 806 of
// 1000 on the second; without the noise gate the second lost 20 at ±4 px), confirmed on seeds 611
// and 612 (800 items: 692 → 698, no set down, mean IoU up on both renderings). With the noise
// gate, a longer reach on the same 1800 items: 3 / 4 / 6 px gave 770 / 771 / 771 of 800 on the
// training rendering (769 at 2) and 804 / 796 / 789 of 1000 on the second (806).
/// A change box's edge moves at most this far (px): half a cell of the change head's stride-4
/// map, whose upsampled edges fall anywhere within a cell…
const EDGE_SNAP_PX: isize = 2;
/// …to the outermost line within that reach holding at least this many visibly changed pixels…
const EDGE_SNAP_MIN_PIXELS: usize = 2;
/// …changed beyond this many σ of the difference's noise around the box, and at least `RIM_FLOOR`;
const EDGE_SNAP_SIGMAS: f32 = 3.0;
/// where that level would exceed this, noise hides the rim and the box stays as drawn.
const EDGE_SNAP_MAX_LEVEL: f32 = 0.03;
/// The noise is measured on the ring this far outside the box (px), clear of its rim.
const EDGE_SNAP_RING: (isize, isize) = (6, 16);

/// |current − prior| at (`x`, `y`); `None` outside the images.
fn absolute_difference(prior: &GrayImage, current: &GrayImage, x: isize, y: isize) -> Option<f32> {
    let inside = x >= 0 && y >= 0 && (x as usize) < current.width && (y as usize) < current.height;
    inside.then(|| (current.get(x as usize, y as usize) - prior.get(x as usize, y as usize)).abs())
}

/// A box's edges on the pixel grid: x1, y1, x2, y2 (the last two one past the box).
fn pixel_edges(b: &BBox) -> (isize, isize, isize, isize) {
    (b.x1.round() as isize, b.y1.round() as isize, b.x2.round() as isize, b.y2.round() as isize)
}

/// The pixels (within the images) whose distance outside `b`, the larger of the horizontal and
/// the vertical one, lies in `from..to` (1 for the line just outside the box).
fn ring_around(b: &BBox, from: isize, to: isize, width: usize, height: usize) -> impl Iterator<Item = (isize, isize)> {
    let (x1, y1, x2, y2) = pixel_edges(b);
    let (w, h) = (width as isize, height as isize);
    ((y1 - to + 1).max(0)..(y2 + to - 1).min(h))
        .flat_map(move |y| ((x1 - to + 1).max(0)..(x2 + to - 1).min(w)).map(move |x| (x, y)))
        .filter(move |&(x, y)| {
            let outside = (x1 - x).max(x - x2 + 1).max((y1 - y).max(y - y2 + 1));
            outside >= from && outside < to
        })
}

/// σ of the pair's difference on the ring `EDGE_SNAP_RING` around `b`, clear of its rim; `None`
/// where no such ring lies in the image.
fn noise_around(prior: &GrayImage, current: &GrayImage, b: &BBox) -> Option<f32> {
    let (near, far) = EDGE_SNAP_RING;
    let ring: Vec<f32> = ring_around(b, near + 1, far + 1, current.width, current.height)
        .filter_map(|(x, y)| absolute_difference(prior, current, x, y))
        .collect();
    (!ring.is_empty()).then(|| robust_sigma(&ring))
}

/// The share of the pixels just outside `b` (1–3 px beyond its edges) where the pair visibly
/// differs, beyond `EDGE_SNAP_SIGMAS` σ of the noise around it and at least `RIM_FLOOR`: a box
/// drawn around part of a change leaves the rest of it there.
pub fn changed_just_outside(prior: &GrayImage, current: &GrayImage, b: &BBox) -> f32 {
    let Some(noise) = noise_around(prior, current, b) else { return 0.0 };
    let level = RIM_FLOOR.max(EDGE_SNAP_SIGMAS * noise);
    let ring: Vec<f32> =
        ring_around(b, 1, 4, current.width, current.height).filter_map(|(x, y)| absolute_difference(prior, current, x, y)).collect();
    if ring.is_empty() {
        return 0.0;
    }
    ring.iter().filter(|&&v| v > level).count() as f32 / ring.len() as f32
}

/// σ of zero-centred normal noise from absolute deviations, robust to a minority of outliers
/// (a change among the samples): their median is 0.674 σ.
fn robust_sigma(absolute_deviations: &[f32]) -> f32 {
    percentiles(absolute_deviations, &[0.5])[0] / 0.674
}

/// `b` with each edge moved by at most `EDGE_SNAP_PX` to the outermost row or column where the
/// pair visibly differs (`prior` already in `current`'s units, both at one resolution): the
/// answer spans every visibly changed pixel, and the network's stride-4 map places an edge only
/// to within a cell. `b` as it is where the pair is too noisy to see the rim, where no ring
/// around it lies in the image, or where snapping would leave it under 4 px.
pub fn snap_edges_to_visible(prior: &GrayImage, current: &GrayImage, b: BBox) -> BBox {
    let d = |x: isize, y: isize| absolute_difference(prior, current, x, y).unwrap_or(0.0);
    let (x1, y1, x2, y2) = pixel_edges(&b);
    let Some(noise) = noise_around(prior, current, &b) else { return b };
    if EDGE_SNAP_SIGMAS * noise > EDGE_SNAP_MAX_LEVEL {
        return b;
    }
    let level = RIM_FLOOR.max(EDGE_SNAP_SIGMAS * noise);
    let visible_in_column = |x: isize| (y1..y2).filter(|&y| d(x, y) > level).count() >= EDGE_SNAP_MIN_PIXELS;
    let visible_in_row = |y: isize| (x1..x2).filter(|&x| d(x, y) > level).count() >= EDGE_SNAP_MIN_PIXELS;
    let r = EDGE_SNAP_PX;
    let nx1 = ((x1 - r)..=(x1 + r)).find(|&x| visible_in_column(x)).unwrap_or(x1);
    let nx2 = ((x2 - r)..=(x2 + r)).rev().find(|&x| visible_in_column(x - 1)).unwrap_or(x2);
    let ny1 = ((y1 - r)..=(y1 + r)).find(|&y| visible_in_row(y)).unwrap_or(y1);
    let ny2 = ((y2 - r)..=(y2 + r)).rev().find(|&y| visible_in_row(y - 1)).unwrap_or(y2);
    if nx2 - nx1 < 4 || ny2 - ny1 < 4 {
        return b;
    }
    BBox::new(nx1 as f32, ny1 as f32, nx2 as f32, ny2 as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_around_part_of_a_change_leaves_changed_pixels_just_outside() {
        // A hard-edged change over x 30..70, y 40..80 on a textured scene.
        let prior = GrayImage::from_fn(128, 128, |x, y| 0.3 + 0.1 * (((x * 5 + y * 11) % 17) as f32 / 16.0));
        let changed = |x: usize, y: usize| (30..70).contains(&x) && (40..80).contains(&y);
        let current = GrayImage::from_fn(128, 128, |x, y| prior.get(x, y) + if changed(x, y) { 0.15 } else { 0.0 });
        let whole = BBox::new(30.0, 40.0, 70.0, 80.0);
        assert_eq!(changed_just_outside(&prior, &current, &whole), 0.0);
        // Its core: every pixel of the ring around it changed.
        let core = BBox::new(40.0, 50.0, 60.0, 70.0);
        assert_eq!(changed_just_outside(&prior, &current, &core), 1.0);
        // Its left half: of the ring's 396 pixels, the 3 × 40 beside the change's other half.
        let half = BBox::new(30.0, 40.0, 50.0, 80.0);
        assert_eq!(changed_just_outside(&prior, &current, &half), 120.0 / 396.0);
        // The same pair without the change: nothing outside any box.
        assert_eq!(changed_just_outside(&prior, &prior, &core), 0.0);
    }

    #[test]
    fn change_box_edges_snap_to_the_visible_rim_only_within_reach_and_where_noise_allows() {
        // A hard-edged change over x 30..60, y 40..70 on a textured scene.
        let prior = GrayImage::from_fn(112, 112, |x, y| 0.3 + 0.1 * (((x * 5 + y * 11) % 17) as f32 / 16.0));
        let changed = |x: usize, y: usize| (30..60).contains(&x) && (40..70).contains(&y);
        let current = GrayImage::from_fn(112, 112, |x, y| prior.get(x, y) + if changed(x, y) { 0.15 } else { 0.0 });
        let truth = BBox::new(30.0, 40.0, 60.0, 70.0);
        // Drawn two pixels too wide on the left and top, two too narrow on the right and bottom.
        let drawn = BBox::new(28.0, 38.0, 58.0, 68.0);
        assert_eq!(snap_edges_to_visible(&prior, &current, drawn), truth);
        // An edge whose reach holds no changed pixel stays; one inside the change moves out by
        // the reach and no further.
        let far = BBox::new(26.0, 40.0, 56.0, 70.0);
        assert_eq!(snap_edges_to_visible(&prior, &current, far), BBox::new(26.0, 40.0, 58.0, 70.0));
        // Under noise that hides a rim, the box stays as drawn.
        let mut rng = crate::grounding::rng::Rng::new(7);
        let noisy = current.map(|v| v + 0.05 * rng.normal());
        assert_eq!(snap_edges_to_visible(&prior, &noisy, drawn), drawn);
    }

    #[test]
    fn a_saturated_prior_is_no_evidence_of_change() {
        // Half the prior is clipped at 1; below that, the current is the prior halved.
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 / 500.0).min(1.0)).collect();
        let b: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let map = IntensityMap::fit(&a, &b);
        assert!(map.distance(1.0, 0.8) == 0.0);
        assert!(map.distance(1.0, 0.2) > 0.25);
        assert!(map.distance(0.5, 0.25) < 0.01);
    }

    #[test]
    fn intensities_the_prior_merged_are_no_evidence_of_change() {
        // The current shows the scene's whole range; the prior's window put everything below
        // 0.4 into one dark bin (just above 0, so not clipped), the rest linearly.
        let scene: Vec<f32> = (0..4000).map(|i| i as f32 / 4000.0).collect();
        let a: Vec<f32> = scene.iter().enumerate().map(|(i, &t)| if t < 0.4 { 0.05 + 0.0025 * (i % 5) as f32 } else { t }).collect();
        let map = IntensityMap::fit(&a, &scene);
        // Within the band the dark bin stands for, the current is taken as it is…
        for current in [0.12, 0.2, 0.28] {
            assert!((map.estimate(0.055, current) - current).abs() < 0.01, "{current} -> {}", map.estimate(0.055, current));
        }
        // …but a current far outside it still differs, and where the prior told intensities
        // apart, a changed pixel keeps its whole difference.
        assert!(map.estimate(0.055, 0.9) < 0.35);
        assert!((map.estimate(0.7, 0.9) - 0.7).abs() < 0.01);
        assert!((map.estimate(0.7, 0.5) - 0.7).abs() < 0.01);
        // A NaN pixel (float volumes carry them) gives no panic and no NaN bound.
        assert_eq!(map.estimate(f32::NAN, 0.3), 0.3);
        assert!(!map.estimate(0.055, f32::NAN).is_nan());
    }

    #[test]
    fn the_prior_in_current_units_differs_only_where_the_scene_changed() {
        // The current is the prior under another window (contrast doubled, clipped at 1), with
        // one square brightened; the prior mapped onto it matches it everywhere else.
        let prior = GrayImage::from_fn(96, 96, |x, y| 0.1 + 0.35 * (((x * 7 + y * 3) % 23) as f32 / 22.0));
        let current = GrayImage::from_fn(96, 96, |x, y| {
            let v = (prior.get(x, y) - 0.05) * 2.0;
            let lesion = if (40..52).contains(&x) && (40..52).contains(&y) { 0.3 } else { 0.0 };
            (v + lesion).min(1.0)
        });
        let covered = vec![true; 96 * 96];
        let mapped = prior_in_current_units(&prior, &current, &covered);
        let err = |x: usize, y: usize| (mapped.get(x, y) - current.get(x, y)).abs();
        let mut outside = Vec::new();
        for y in 0..96 {
            for x in 0..96 {
                if !((38..54).contains(&x) && (38..54).contains(&y)) {
                    outside.push(err(x, y));
                }
            }
        }
        outside.sort_by(f32::total_cmp);
        assert!(outside[outside.len() * 95 / 100] < 0.03, "unchanged pixels differ by {}", outside[outside.len() * 95 / 100]);
        // Inside the square the difference remains (where the current is not clipped).
        let inside: f32 = (42..50).flat_map(|y| (42..50).map(move |x| (x, y))).map(|(x, y)| err(x, y)).sum::<f32>() / 64.0;
        assert!(inside > 0.15, "the change was mapped away: {inside}");
        // Pixels the prior does not cover keep the current's value.
        let mut partly = covered.clone();
        partly[5] = false;
        assert_eq!(prior_in_current_units(&prior, &current, &partly).data[5], current.data[5]);
    }

    #[test]
    fn changed_pixels_do_not_bend_the_map() {
        // Same intensities, except one pixel in eight made brighter by 0.4.
        let a: Vec<f32> = (0..4000).map(|i| (i % 997) as f32 / 997.0 * 0.98 + 0.01).collect();
        let b: Vec<f32> = a.iter().enumerate().map(|(i, &v)| if i % 8 == 0 { v + 0.4 } else { v }).collect();
        let map = IntensityMap::fit(&a, &b);
        for v in [0.1f32, 0.5, 0.9] {
            assert!(map.distance(v, v) < 0.02, "{v}: {}", map.distance(v, v));
        }
    }

    #[test]
    fn the_rim_level_drops_below_the_core_level_only_where_noise_allows() {
        let scene = GrayImage::from_fn(128, 128, |x, y| 0.4 + 0.2 * ((x as f32 * 0.23).sin() * (y as f32 * 0.11).cos()));
        let covered = vec![true; 128 * 128];
        let quiet = MatchedDifference::new(&scene, &scene, &covered, &[]);
        assert_eq!(quiet.threshold, VISIBLE);
        assert_eq!(quiet.rim_level, RIM_FLOOR);
        // Strong noise: the noise rules both levels, and the rim stays clear of it.
        let mut state = 12345u32;
        let noisy = scene.map(|v| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            v + 0.3 * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        });
        let loud = MatchedDifference::new(&scene, &noisy, &covered, &[]);
        assert!(loud.threshold > VISIBLE, "{}", loud.threshold);
        assert!(loud.rim_level > RIM_FLOOR, "{}", loud.rim_level);
        let quiet_rim: Vec<f32> = loud.rim.data.clone();
        let above = quiet_rim.iter().filter(|&&v| v >= loud.rim_level).count();
        assert!(above * 100 < quiet_rim.len(), "{above} of {} noise pixels pass the rim level", quiet_rim.len());
    }

    #[test]
    fn a_feathered_rim_is_followed_to_where_the_change_fades() {
        // A disc of +0.3 whose edge fades linearly over 8 px: the core threshold stops at the
        // inner part, the rim reaches out to where the change falls under the floor.
        let scene = GrayImage::from_fn(128, 128, |x, y| 0.4 + 0.1 * ((x as f32 * 0.23).sin() * (y as f32 * 0.11).cos()));
        let changed = GrayImage::from_fn(128, 128, |x, y| {
            let d = ((x as f32 + 0.5 - 64.0).powi(2) + (y as f32 + 0.5 - 64.0).powi(2)).sqrt();
            scene.get(x, y) + 0.3 * ((18.0 - d) / 8.0 + 0.5).clamp(0.0, 1.0)
        });
        let covered = vec![true; 128 * 128];
        let m = MatchedDifference::new(&scene, &changed, &covered, &[]);
        let core = BBox::new(52.0, 52.0, 76.0, 76.0);
        let grown = m.grow_through_rim(core, (64, 64), core.expand(40.0), |_, _| true);
        // Changed by ≥ 0.02 out to d = 18 + 4 − 8 × 0.02 / 0.3 ≈ 21.5 px.
        for edge in [64.0 - grown.x1, grown.x2 - 64.0, 64.0 - grown.y1, grown.y2 - 64.0] {
            assert!((20.0..=24.0).contains(&edge), "{grown:?}");
        }
    }

    #[test]
    fn a_zone_over_most_of_the_image_is_not_kept_out_of_the_fit() {
        // Dark tissue on the left, bright on the right; the current has another gain and gamma.
        let scene = GrayImage::from_fn(96, 96, |x, y| {
            let base = if x < 64 { 0.3 } else { 0.7 };
            base + 0.05 * ((x as f32 * 0.41).sin() * (y as f32 * 0.23).cos())
        });
        let current = scene.map(|v| 0.9 * v.powf(1.4) + 0.05);
        let covered = vec![true; 96 * 96];
        let most = BBox::new(0.0, 0.0, 80.0, 96.0);
        let small = BBox::new(20.0, 20.0, 40.0, 40.0);
        for zones in [vec![most], vec![small, most]] {
            let matched = MatchedDifference::new(&scene, &current, &covered, &zones);
            let left_peak = (0..96 * 64).map(|i| matched.difference.get(i % 64, i / 64)).fold(0.0f32, f32::max);
            assert!(left_peak < matched.threshold, "{left_peak} against {}", matched.threshold);
        }
    }
}
