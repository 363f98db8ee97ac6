//! Change boxes snapped to the pixel difference: the change head works at stride 4, so its box
//! edges are coarse; the registered, intensity-matched subtraction around each box draws them to
//! the pixel, and the head's map keeps the subtraction from spilling into unrelated differences.

use crate::grounding::baseline::Scored;
use crate::grounding::geometry::{BBox, Component, components};
use crate::grounding::subtract::MatchedDifference;
use crate::study::gray::GrayImage;

// Chosen with the subtraction's constants (see `subtract`).
/// Only where the change head gives at least this logit (p ≈ 0.007): it says which structure
/// changed, the subtraction says where its edges are.
const HEAD_GATE_LOGIT: f32 = -5.0;
/// A snapped box must overlap the head's box at least this much, else the head's box stands.
const MIN_IOU: f32 = 0.1;

/// Where the head's boxes are, with room around them: kept out of the intensity map and the
/// noise estimate, which must describe the unchanged rest of the image.
fn keep_out(b: &BBox) -> BBox {
    b.expand(8.0f32.max(0.5 * b.width().max(b.height())))
}

/// `head_box` (from the change head, in `current`'s pixels) redrawn around the strongest
/// connected difference it overlaps, within a window around it and where the head's
/// `change_logits` (full resolution) pass the gate; `None` when the subtraction shows nothing
/// there that agrees with it.
fn supported_box(difference: &MatchedDifference, change_logits: &GrayImage, head_box: BBox) -> Option<BBox> {
    let side = head_box.width().max(head_box.height());
    let window = head_box.expand(12.0f32.max(side)).clamp_to(difference.difference.width as f32, difference.difference.height as f32);
    // Pixels whose centres fall inside the window.
    let first = |edge: f32| (edge - 0.5).ceil() as usize;
    let (x0, y0) = (first(window.x1), first(window.y1));
    let (ww, wh) = (first(window.x2).saturating_sub(x0), first(window.y2).saturating_sub(y0));
    if ww == 0 || wh == 0 {
        return None;
    }
    let local = GrayImage::from_fn(ww, wh, |x, y| {
        let (gx, gy) = (x + x0, y + y0);
        if change_logits.get(gx, gy) > HEAD_GATE_LOGIT { difference.difference.get(gx, gy) } else { 0.0 }
    });
    let (_, comps) = components(&local, difference.threshold, &local);
    let local_head = head_box.translate(-(x0 as f32), -(y0 as f32));
    // The rim of a change is fainter than its core: the box spans the component grown through
    // the rim, where the head agrees.
    let grow = |c: &Component| -> BBox {
        let core = c.bbox.translate(x0 as f32, y0 as f32);
        difference.grow_through_rim(core, (c.peak_at.0 + x0, c.peak_at.1 + y0), window, |x, y| change_logits.get(x, y) > HEAD_GATE_LOGIT)
    };
    comps
        .iter()
        .filter(|c| c.bbox.intersection(&local_head) > 0.0)
        .max_by(|a, b| a.weight.total_cmp(&b.weight))
        .map(grow)
        .filter(|b| b.iou(&head_box) >= MIN_IOU)
}

/// Every box of `found` snapped (see `supported_box`), scores and order unchanged, except that a
/// box snapped onto the same difference as an earlier one is dropped, and that when the head's
/// first box has no difference under it the strongest difference in the image comes first, with
/// that box's score (the head's belief that something changed; the pixels say where).
/// `TANDEM_SNAP=off` returns the head's boxes as they are (to measure what snapping adds).
pub fn snap_all(
    prior_on_current: &GrayImage,
    current: &GrayImage,
    covered: &[bool],
    change_logits: &GrayImage,
    found: Vec<Scored>,
) -> Vec<Scored> {
    if found.is_empty() || std::env::var("TANDEM_SNAP").is_ok_and(|v| v == "off") {
        return found;
    }
    let zones: Vec<BBox> = found.iter().map(|s| keep_out(&s.bbox)).collect();
    let difference = MatchedDifference::new(prior_on_current, current, covered, &zones);
    let mut out: Vec<Scored> = Vec::with_capacity(found.len() + 1);
    for (rank, s) in found.iter().enumerate() {
        match supported_box(&difference, change_logits, s.bbox) {
            Some(bbox) => out.push(Scored { bbox, ..*s }),
            None => {
                if rank == 0
                    && let Some(strongest) = strongest_difference(&difference)
                {
                    out.push(Scored { bbox: strongest, score: s.score });
                }
                out.push(*s);
            }
        }
    }
    // Boxes snapped onto the same difference are one finding: the first (best) stands.
    let mut kept: Vec<Scored> = Vec::with_capacity(out.len());
    for s in out {
        if kept.iter().all(|k| k.bbox.iou(&s.bbox) <= 0.5) {
            kept.push(s);
        }
    }
    kept
}

/// The bounds of the strongest connected difference anywhere (as the classical baseline finds
/// it), if any.
fn strongest_difference(difference: &MatchedDifference) -> Option<BBox> {
    let (_, comps) = components(&difference.difference, difference.threshold, &difference.difference);
    comps.iter().filter(|c| c.pixels >= 4).max_by(|a, b| a.weight.total_cmp(&b.weight)).map(|c| c.bbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured scene, and the same scene under another gain and gamma with a disc added.
    fn pair(disc: (f32, f32, f32)) -> (GrayImage, GrayImage) {
        let scene = GrayImage::from_fn(96, 96, |x, y| 0.3 + 0.2 * ((x as f32 * 0.31).sin() * (y as f32 * 0.17).cos()));
        let (cx, cy, r) = disc;
        let changed = GrayImage::from_fn(96, 96, |x, y| {
            let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
            scene.get(x, y) + if d < r { 0.3 } else { 0.0 }
        });
        (scene, changed.map(|v| 0.9 * v.powf(1.2) + 0.05))
    }

    #[test]
    fn coarse_box_snaps_to_the_changed_pixels_despite_another_contrast() {
        let (prior, current) = pair((40.0, 50.0, 9.0));
        let covered = vec![true; 96 * 96];
        let logits = GrayImage::filled(96, 96, 2.0);
        let coarse = Scored { bbox: BBox::new(28.0, 36.0, 48.0, 60.0), score: 0.9 };
        let snapped = snap_all(&prior, &current, &covered, &logits, vec![coarse])[0];
        // The disc's pixels; the smoothing that keeps noise out may add one pixel around them.
        let disc = BBox::new(31.0, 41.0, 49.0, 59.0);
        let off = |a: f32, b: f32| (a - b).abs();
        let b = snapped.bbox;
        assert!(off(b.x1, disc.x1).max(off(b.y1, disc.y1)).max(off(b.x2, disc.x2)).max(off(b.y2, disc.y2)) <= 1.0, "{b:?}");
        assert!(coarse.bbox.iou(&disc) < 0.7);
        assert_eq!(snapped.score, 0.9);
    }

    #[test]
    fn the_head_map_keeps_the_box_off_a_neighbouring_difference() {
        let (prior, mut current) = pair((40.0, 50.0, 9.0));
        // A second change touching the first, where the head saw none.
        for y in 40..60 {
            for x in 49..70 {
                current.set(x, y, 0.95);
            }
        }
        let covered = vec![true; 96 * 96];
        let logits = GrayImage::from_fn(96, 96, |x, _| if x < 49 { 2.0 } else { -8.0 });
        let coarse = Scored { bbox: BBox::new(30.0, 40.0, 50.0, 60.0), score: 0.9 };
        let snapped = snap_all(&prior, &current, &covered, &logits, vec![coarse])[0].bbox;
        assert!(snapped.x2 <= 49.0, "{snapped:?}");
    }

    #[test]
    fn no_agreeing_difference_leaves_the_head_box() {
        let (prior, _) = pair((40.0, 50.0, 9.0));
        let covered = vec![true; 96 * 96];
        let logits = GrayImage::filled(96, 96, 2.0);
        let coarse = Scored { bbox: BBox::new(30.0, 40.0, 50.0, 60.0), score: 0.9 };
        let snapped = snap_all(&prior, &prior, &covered, &logits, vec![coarse])[0].bbox;
        assert_eq!(snapped, coarse.bbox);
    }

    #[test]
    fn a_head_box_over_unchanged_pixels_yields_to_the_strongest_difference() {
        let (prior, current) = pair((70.0, 66.0, 8.0));
        let covered = vec![true; 96 * 96];
        let logits = GrayImage::filled(96, 96, 2.0);
        let wrong = Scored { bbox: BBox::new(8.0, 10.0, 28.0, 30.0), score: 0.6 };
        let out = snap_all(&prior, &current, &covered, &logits, vec![wrong]);
        assert_eq!(out.len(), 2, "{out:?}");
        let disc = BBox::new(62.0, 58.0, 78.0, 74.0);
        assert!(out[0].bbox.iou(&disc) > 0.7, "{out:?}");
        assert_eq!(out[0].score, 0.6);
        assert_eq!(out[1].bbox, wrong.bbox);
    }

    #[test]
    fn the_box_takes_in_a_rim_fainter_than_the_threshold() {
        let scene = GrayImage::from_fn(96, 96, |x, y| 0.3 + 0.2 * ((x as f32 * 0.31).sin() * (y as f32 * 0.17).cos()));
        // A disc of radius 8 with a rim out to 12 whose difference sits just under the 0.05 floor.
        let changed = GrayImage::from_fn(96, 96, |x, y| {
            let d = ((x as f32 + 0.5 - 48.0).powi(2) + (y as f32 + 0.5 - 48.0).powi(2)).sqrt();
            scene.get(x, y)
                + if d < 8.0 {
                    0.3
                } else if d < 12.0 {
                    0.048
                } else {
                    0.0
                }
        });
        let covered = vec![true; 96 * 96];
        let logits = GrayImage::filled(96, 96, 2.0);
        let coarse = Scored { bbox: BBox::new(36.0, 36.0, 60.0, 60.0), score: 0.9 };
        let b = snap_all(&scene, &changed, &covered, &logits, vec![coarse])[0].bbox;
        assert!(b.width() >= 22.0 && b.width() <= 26.0 && b.height() >= 22.0 && b.height() <= 26.0, "{b:?}");
    }
}
