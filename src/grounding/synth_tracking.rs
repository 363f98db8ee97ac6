//! Object-tracking (T4) items: frame sequences of a moving, deforming scene, or consecutive
//! slices through a phantom organ.

use crate::grounding::geometry::BBox;
use crate::grounding::phantom::{Phantom, Plane};
use crate::grounding::rng::Rng;
use crate::grounding::synth::{Elastic, Synth, SynthItem, map_box, photometric, salient_box};
use crate::grounding::task::Task;
use crate::registration::Transform;

pub fn tracking_item(synth: &Synth, rng: &mut Rng) -> Option<SynthItem> {
    let frames = rng.int(3, 6) as usize;
    if rng.chance(0.35) { tracking_volume(synth, rng, frames) } else { tracking_motion(synth, rng, frames) }
}

/// Frames of a moving, slowly deforming scene (a cine loop or follow-up series).
fn tracking_motion(synth: &Synth, rng: &mut Rng, frames: usize) -> Option<SynthItem> {
    let size = synth.size;
    let margin = 48;
    let big = synth.view(rng, size + 2 * margin);
    let m = margin as f32;
    let first = big.crop(margin as isize, margin as isize, size, size, 0.0);
    let reference = salient_box(rng, &first, 24.0, 90.0)?;
    let centre = ((size as f64 - 1.0) / 2.0, (size as f64 - 1.0) / 2.0);
    let mut big_from_frame = Transform::IDENTITY; // frame pixel → first-frame pixel
    let mut images = vec![photometric(rng, &first, 0.5)];
    let (vx, vy) = (rng.range(-6.0, 6.0) as f64, rng.range(-6.0, 6.0) as f64);
    for _ in 1..frames {
        let step = Transform::similarity(
            (rng.range(-2.0, 2.0) as f64).to_radians(),
            rng.range(0.98, 1.02) as f64,
            centre,
            vx + rng.range(-3.0, 3.0) as f64,
            vy + rng.range(-3.0, 3.0) as f64,
        );
        big_from_frame = big_from_frame.compose(&step);
        let warp = big_from_frame;
        let elastic = Elastic::random(rng, 3.0);
        let frame = big.warp(size, size, 0.0, |x, y| {
            let (ex, ey) = elastic.displace(x, y);
            let (sx, sy) = warp.apply((x + ex) as f64, (y + ey) as f64);
            (sx as f32 + m, sy as f32 + m)
        });
        images.push(photometric(rng, &frame, 0.5));
    }
    let answer = map_box(&big_from_frame.inverse()?, &reference);
    let frame = BBox::new(0.0, 0.0, size as f32, size as f32);
    if !frame.contains_box(&answer) {
        return None;
    }
    Some(SynthItem { task: Task::ObjectTracking, images, reference: Some(reference), answer, change_mask: None })
}

/// Consecutive parallel slices through a phantom organ.
fn tracking_volume(synth: &Synth, rng: &mut Rng, frames: usize) -> Option<SynthItem> {
    let size = synth.size;
    let extent = size as f32;
    let ph = Phantom::random(rng, extent);
    let organ = 1 + rng.index(ph.organs.len() - 1);
    let plane = Plane::ALL[rng.index(3)];
    let (lo, hi) = ph.organ_depth_range(organ, plane);
    let spacing = rng.range(2.0, 6.0) * rng.sign();
    let span = spacing.abs() * (frames - 1) as f32;
    if hi - lo < span * 0.9 {
        return None;
    }
    let start = if spacing > 0.0 { rng.range(lo + 0.05 * (hi - lo), hi - span) } else { rng.range(lo + span, hi - 0.05 * (hi - lo)) };
    let mut images = Vec::with_capacity(frames);
    let mut boxes = Vec::with_capacity(frames);
    for k in 0..frames {
        let depth = start + spacing * k as f32;
        let b = ph.organ_box(organ, plane, depth, size)?;
        if b.width() < 12.0 || b.height() < 12.0 || b.width() > 160.0 || b.height() > 160.0 {
            return None;
        }
        boxes.push(b);
        images.push(photometric(rng, &ph.slice(plane, depth, size), 0.5));
    }
    Some(SynthItem { task: Task::ObjectTracking, images, reference: Some(boxes[0]), answer: *boxes.last()?, change_mask: None })
}
