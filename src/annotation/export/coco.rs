//! COCO detection JSON: images (one entry per frame), categories (one per label) and annotations
//! with `bbox: [x, y, w, h]`, the model's `score` and, for a tracked finding, a `track_id`.
//! Without `keep_phi`, file names and SOP Instance UIDs are pseudonyms and patient identifiers
//! are left out.

use std::collections::HashMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::annotation::document::{Document, ImageRef};
use crate::annotation::export::{UidPseudonyms, base_name, exported, pseudonym_for_path};

pub fn to_coco(doc: &Document, keep_phi: bool) -> Value {
    let uids = UidPseudonyms::default();
    // One image entry per frame (a series' slice, a multi-frame file's frame), so that a box's
    // `image_id` names the very frame it is drawn on.
    let mut images: Vec<Value> = Vec::new();
    let mut entry_of: HashMap<(&str, u32), usize> = HashMap::new();
    for img in &doc.images {
        for frame in 0..img.frames.max(1) {
            let id = images.len() + 1;
            let mut v = json!({
                "id": id,
                "file_name": frame_file_name(img, frame, keep_phi),
                "width": img.width,
                "height": img.height,
                "tandem_image": img.id,
                "frame": frame,
            });
            if let Some((uid, _)) = img.instance_of_frame(frame) {
                v["sop_instance_uid"] = json!(if keep_phi { uid.to_string() } else { uids.map(uid) });
            }
            if keep_phi {
                v["patient_id"] = json!(img.patient_id);
                v["patient_name"] = json!(img.patient_name);
                v["patient_birth_date"] = json!(img.patient_birth_date);
            }
            images.push(v);
            entry_of.insert((img.id.as_str(), frame), id);
        }
    }
    let mut labels: Vec<String> = exported(doc).map(|f| f.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let categories: Vec<Value> =
        labels.iter().enumerate().map(|(k, l)| json!({"id": k + 1, "name": l, "supercategory": "finding"})).collect();
    let mut annotations = Vec::new();
    let mut tracks = 0;
    for f in exported(doc) {
        let category = labels.iter().position(|l| *l == f.label).map(|k| k + 1).unwrap_or(0);
        // A tracked finding's boxes share a `track_id` (as video datasets link one object's boxes).
        let track_id = f.track.as_ref().map(|_| {
            tracks += 1;
            tracks
        });
        for b in &f.boxes {
            let Some(&image_id) = entry_of.get(&(b.image.as_str(), b.frame)) else { continue };
            let r = b.rect();
            let mut a = json!({
                "id": annotations.len() + 1,
                "image_id": image_id,
                "category_id": category,
                "bbox": [r.x1, r.y1, r.width(), r.height()],
                "area": r.area(),
                "iscrowd": 0,
                "frame": b.frame,
                "attributes": {"finding_id": f.id, "kind": f.kind.label(), "status": f.status.label()},
            });
            if let Some(s) = f.score() {
                a["score"] = json!(s);
            }
            if let (Some(id), Some(track)) = (track_id, &f.track) {
                a["track_id"] = json!(id);
                if let Some((k, m)) = track.measurements.iter().enumerate().find(|(_, m)| m.image == b.image && m.frame == b.frame) {
                    a["attributes"]["timepoint"] = json!(k);
                    a["attributes"]["long_axis"] = json!(m.long_axis);
                    a["attributes"]["short_axis"] = json!(m.short_axis);
                    a["attributes"]["units"] = json!(track.units);
                }
            }
            annotations.push(a);
        }
    }
    json!({
        "info": {"description": "Tandem annotations", "version": doc.schema_version, "contributor": doc.generator},
        "images": images,
        "categories": categories,
        "annotations": annotations,
    })
}

/// What an export calls frame `frame` of `img`: the image's own name for its first frame (and for
/// every frame with `keep_phi`, whose entries tell frames apart by `frame`), else a pseudonym of
/// its own, stable like the image's.
pub fn frame_file_name(img: &ImageRef, frame: u32, keep_phi: bool) -> String {
    if keep_phi || frame == 0 {
        return file_name(&img.path, keep_phi);
    }
    let digest = Sha256::digest(format!("{}#frame{frame}", img.path).as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    match pseudonym_for_path(&img.path).split_once('.') {
        Some((_, ext)) => format!("img-{hex}.{ext}"),
        None => format!("img-{hex}"),
    }
}

/// What an export calls an image file: its stable pseudonym, or with `keep_phi` its file name
/// alone (folders can carry names of people or institutions either way).
pub fn file_name(path: &str, keep_phi: bool) -> String {
    if keep_phi { base_name(path).to_string() } else { pseudonym_for_path(path) }
}
