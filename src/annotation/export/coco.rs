//! COCO detection JSON: images, categories (one per label) and annotations with
//! `bbox: [x, y, w, h]` and the model's `score`. Without `keep_phi`, file names and SOP Instance
//! UIDs are pseudonyms and patient identifiers are left out.

use serde_json::{Value, json};

use crate::annotation::document::Document;
use crate::annotation::export::{UidPseudonyms, base_name, exported, pseudonym_for_path};

pub fn to_coco(doc: &Document, keep_phi: bool) -> Value {
    let uids = UidPseudonyms::default();
    let images: Vec<Value> = doc
        .images
        .iter()
        .enumerate()
        .map(|(k, img)| {
            let mut v = json!({
                "id": k + 1,
                "file_name": file_name(&img.path, keep_phi),
                "width": img.width,
                "height": img.height,
                "tandem_image": img.id,
            });
            if let Some(uid) = &img.sop_instance_uid {
                v["sop_instance_uid"] = json!(if keep_phi { uid.clone() } else { uids.map(uid) });
            }
            if keep_phi {
                v["patient_id"] = json!(img.patient_id);
                v["patient_name"] = json!(img.patient_name);
                v["patient_birth_date"] = json!(img.patient_birth_date);
            }
            v
        })
        .collect();
    let mut labels: Vec<String> = exported(doc).map(|f| f.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let categories: Vec<Value> =
        labels.iter().enumerate().map(|(k, l)| json!({"id": k + 1, "name": l, "supercategory": "finding"})).collect();
    let mut annotations = Vec::new();
    for f in exported(doc) {
        let category = labels.iter().position(|l| *l == f.label).map(|k| k + 1).unwrap_or(0);
        for b in &f.boxes {
            let Some(image_index) = doc.images.iter().position(|i| i.id == b.image) else { continue };
            let r = b.rect();
            let mut a = json!({
                "id": annotations.len() + 1,
                "image_id": image_index + 1,
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

/// What an export calls an image file: its stable pseudonym, or with `keep_phi` its file name
/// alone (folders can carry names of people or institutions either way).
pub fn file_name(path: &str, keep_phi: bool) -> String {
    if keep_phi { base_name(path).to_string() } else { pseudonym_for_path(path) }
}
