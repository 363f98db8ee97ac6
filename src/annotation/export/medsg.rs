//! MedSG-Bench JSON: each change finding with boxes on two images (prior and current, or two
//! timepoints `t0`, `t1`, …) becomes a difference item, one per slice pair of a whole-series
//! finding; each correspondence a consistency item whose question carries the reference box;
//! each measurement (ruler or ROI, on one image) a referring item: its label and its box; a
//! tracked finding one `object_tracking` item per step of its track. Image paths are pseudonyms
//! unless `keep_phi`, and a slice of a series is named as the COCO export names it.

use serde_json::{Value, json};

use crate::annotation::document::{Document, Finding, FindingKind, ImageBox, Track};
use crate::annotation::export::coco::{file_name, frame_file_name};
use crate::annotation::export::exported;
use crate::grounding::Task;

pub fn to_medsg(doc: &Document, keep_phi: bool) -> Value {
    let path_of = |id: &str| doc.image(id).map(|i| if keep_phi { i.path.clone() } else { file_name(&i.path, false) });
    let mut items = Vec::new();
    for f in exported(doc) {
        if f.kind == FindingKind::Measurement {
            // One image: locate what the label names (MedSG-Bench's referring task, T8).
            let Some((b, path)) = f.boxes.first().and_then(|b| Some((b, path_of(&b.image)?))) else { continue };
            let what = f.measurement.as_ref().map(|m| m.describe()).unwrap_or_default();
            items.push(json!({
                "id": f.id,
                "task": Task::Referring.medsg_name(),
                "images": [path],
                "question": format!("Locate the {}.", f.label),
                "answer": b.rect().rounded(),
                "label": f.label,
                "status": f.status.label(),
                "frame": b.frame,
                "measurement": what,
            }));
            continue;
        }
        if let Some(track) = &f.track {
            items.extend(tracking_items(doc, f, track, keep_phi));
            continue;
        }
        let Some((earlier, later)) = two_images(doc, f) else { continue };
        let pairs = box_pairs(f, earlier, later);
        let several = pairs.len() > 1;
        for (prior, current) in pairs {
            let (Some(prior_path), Some(current_path)) = (frame_name(doc, prior, keep_phi), frame_name(doc, current, keep_phi)) else {
                continue;
            };
            let (task, images, reference, answer) = match f.kind {
                FindingKind::Change | FindingKind::Manual | FindingKind::Measurement => {
                    let same_place = prior.bbox == current.bbox;
                    let t = if same_place { Task::RegisteredDiff } else { Task::NonRegisteredDiff };
                    (t, vec![prior_path, current_path], None, current.rect())
                }
                FindingKind::Correspondence => {
                    // The reference is the first box the finding was made from.
                    let (from, to, from_path, to_path) = if f.boxes.first().is_some_and(|b| b.image == later) {
                        (current, prior, current_path, prior_path)
                    } else {
                        (prior, current, prior_path, current_path)
                    };
                    let modality = |id: &str| doc.image(id).and_then(|i| i.extra.get("modality").cloned());
                    let task = if modality(earlier) != modality(later) { Task::Crossmodal } else { Task::ObjectTracking };
                    (task, vec![from_path, to_path], Some(from.rect().rounded()), to.rect())
                }
            };
            // A whole-series finding gives one item per slice pair, each named apart.
            let id = if several { format!("{}-s{}", f.id, current.frame + 1) } else { f.id.clone() };
            let mut item = json!({
                "id": id,
                "task": task.medsg_name(),
                "images": images,
                "question": task.question(reference),
                "answer": answer.rounded(),
                "label": f.label,
                "status": f.status.label(),
            });
            if several {
                item["finding"] = json!(f.id);
                item["frame"] = json!(current.frame);
            }
            items.push(item);
        }
    }
    Value::Array(items)
}

/// The two images a finding compares, earlier first: "prior" and "current", or two timepoints
/// (`t0`, `t1`, …) in the document's image order (time order on a timeline). None when its boxes
/// are not on exactly two images.
fn two_images<'a>(doc: &Document, f: &'a Finding) -> Option<(&'a str, &'a str)> {
    let mut keys: Vec<&str> = Vec::new();
    for b in &f.boxes {
        if !keys.contains(&b.image.as_str()) {
            keys.push(&b.image);
        }
    }
    let [a, b] = keys[..] else { return None };
    let rank = |id: &str| match id {
        "prior" => Some(0),
        "current" => Some(usize::MAX),
        _ => doc.images.iter().position(|i| i.id == id),
    };
    match (rank(a), rank(b)) {
        (Some(ra), Some(rb)) if ra > rb => Some((b, a)),
        (Some(_), Some(_)) => Some((a, b)),
        _ => None,
    }
}

/// The (earlier, later) box pairs of a finding: each later box with the earlier box listed just
/// before it (a whole-series finding lists each slice's prior box before its current box), else
/// the first box on each image.
fn box_pairs<'a>(f: &'a Finding, earlier: &str, later: &str) -> Vec<(&'a ImageBox, &'a ImageBox)> {
    let adjacent: Vec<_> = f.boxes.windows(2).filter(|w| w[0].image == earlier && w[1].image == later).map(|w| (&w[0], &w[1])).collect();
    if !adjacent.is_empty() {
        return adjacent;
    }
    f.box_on(earlier).zip(f.box_on(later)).into_iter().collect()
}

/// What the export calls the frame a box is on (the image's own name for a single frame).
fn frame_name(doc: &Document, b: &ImageBox, keep_phi: bool) -> Option<String> {
    doc.image(&b.image).map(|i| if keep_phi { i.path.clone() } else { frame_file_name(i, if i.frames > 1 { b.frame } else { 0 }, false) })
}

/// A tracked finding as `object_tracking` items (`crossmodal` where the modality changes), one
/// per step of its track: the box on one timepoint is the reference, the next timepoint's the
/// answer. Frames of a multi-frame image are named as the COCO export names them.
fn tracking_items(doc: &Document, f: &Finding, track: &Track, keep_phi: bool) -> Vec<Value> {
    let name = |image: &str, frame: u32| {
        doc.image(image).map(|i| if keep_phi { i.path.clone() } else { frame_file_name(i, if i.frames > 1 { frame } else { 0 }, false) })
    };
    let modality = |id: &str| doc.image(id).and_then(|i| i.extra.get("modality").cloned());
    let steps: Vec<_> = track.measurements.iter().filter_map(|m| f.box_at(&m.image, m.frame)).collect();
    steps
        .windows(2)
        .enumerate()
        .filter_map(|(k, w)| {
            let (from, to) = (w[0], w[1]);
            let images = vec![name(&from.image, from.frame)?, name(&to.image, to.frame)?];
            let task = if modality(&from.image) != modality(&to.image) { Task::Crossmodal } else { Task::ObjectTracking };
            Some(json!({
                "id": format!("{}-{}", f.id, k + 1),
                "task": task.medsg_name(),
                "images": images,
                "question": task.question(Some(from.rect().rounded())),
                "answer": to.rect().rounded(),
                "label": f.label,
                "status": f.status.label(),
                "track": f.id,
            }))
        })
        .collect()
}
