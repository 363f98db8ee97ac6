//! Multi-view (T3) items: two orthogonal planes through one structure of a volume.

use crate::grounding::phantom::{Phantom, Plane};
use crate::grounding::rng::Rng;
use crate::grounding::synth::{Synth, SynthItem, photometric};
use crate::grounding::task::Task;

pub fn multiview_item(synth: &Synth, rng: &mut Rng) -> Option<SynthItem> {
    let size = synth.size;
    let ph = Phantom::random(rng, size as f32);
    let organ = 1 + rng.index(ph.organs.len() - 1);
    let plane_a = Plane::ALL[rng.index(3)];
    let plane_b = loop {
        let p = Plane::ALL[rng.index(3)];
        if p != plane_a {
            break p;
        }
    };
    let centre = ph.organs[organ].centre;
    let r = ph.organs[organ].radii.iter().copied().fold(f32::MAX, f32::min);
    let depth_a = plane_a.depth_of(centre) + rng.range(-0.4, 0.4) * r;
    let depth_b = plane_b.depth_of(centre) + rng.range(-0.4, 0.4) * r;
    let box_a = ph.organ_box(organ, plane_a, depth_a, size)?;
    let box_b = ph.organ_box(organ, plane_b, depth_b, size)?;
    for b in [box_a, box_b] {
        if b.width() < 12.0 || b.height() < 12.0 || b.width() > 180.0 || b.height() > 180.0 {
            return None;
        }
    }
    let a = photometric(rng, &ph.slice(plane_a, depth_a, size), 0.5);
    let b = photometric(rng, &ph.slice(plane_b, depth_b, size), 0.5);
    Some(SynthItem { task: Task::MultiView, images: vec![a, b], reference: Some(box_a), answer: box_b, change_mask: None })
}
