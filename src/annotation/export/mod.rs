//! Exports of a document: COCO and MedSG-Bench JSON for training pipelines (no patient
//! identifiers, file names or UIDs unless asked), and DICOM SR TID 1500 for PACS.

pub mod coco;
pub mod medsg;
pub mod sr;

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::annotation::document::{Document, Finding, Status, is_valid_uid};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Coco,
    Medsg,
    Sr,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "coco" => Some(Self::Coco),
            "medsg" => Some(Self::Medsg),
            "sr" | "dicom-sr" => Some(Self::Sr),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Coco => "COCO JSON",
            Self::Medsg => "MedSG-Bench JSON",
            Self::Sr => "DICOM SR (TID 1500)",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Coco | Self::Medsg => "json",
            Self::Sr => "dcm",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("nothing to export: {0}")]
    Nothing(String),
    #[error("cannot build the DICOM SR: {0}")]
    Sr(String),
    #[error("the document cannot be exported as {format}: {problems}")]
    Invalid { format: &'static str, problems: String },
    #[error("cannot write {path}: {msg}")]
    Write { path: String, msg: String },
}

/// Findings an export carries: everything not rejected.
pub fn exported(doc: &Document) -> impl Iterator<Item = &Finding> {
    doc.findings.iter().filter(|f| f.status != Status::Rejected)
}

/// Writes `doc` as `format` to `path` (atomically). A document `problems` finds fault with is
/// refused before anything is written.
pub fn export(doc: &Document, format: ExportFormat, path: &Path, keep_phi: bool) -> Result<(), ExportError> {
    let found = problems(doc, Some(format));
    if let Some(first) = found.first() {
        let problems = if found.len() > 1 { format!("{first} (and {} more)", found.len() - 1) } else { first.clone() };
        return Err(ExportError::Invalid { format: format.label(), problems });
    }
    let bytes = match format {
        ExportFormat::Coco => json_bytes(&coco::to_coco(doc, keep_phi))?,
        ExportFormat::Medsg => json_bytes(&medsg::to_medsg(doc, keep_phi))?,
        ExportFormat::Sr => sr::to_sr_bytes(doc)?,
    };
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| ExportError::Write { path: path.display().to_string(), msg: e.to_string() })
}

fn json_bytes(v: &serde_json::Value) -> Result<Vec<u8>, ExportError> {
    let mut b = serde_json::to_vec_pretty(v).map_err(|e| ExportError::Nothing(e.to_string()))?;
    b.push(b'\n');
    Ok(b)
}

/// What keeps `doc` from being exported as `format` (every format when `None`), one line each.
/// A document that loads (see `io::validate`) and has none of these exports.
pub fn problems(doc: &Document, format: Option<ExportFormat>) -> Vec<String> {
    let sr = format.is_none() || format == Some(ExportFormat::Sr);
    let mut out = Vec::new();
    for img in &doc.images {
        if img.frames == 0 {
            out.push(format!("image {:?} has no frames", img.id));
        }
        if sr {
            let uids = [
                ("SOP Instance UID", &img.sop_instance_uid),
                ("SOP Class UID", &img.sop_class_uid),
                ("Study Instance UID", &img.study_instance_uid),
                ("Series Instance UID", &img.series_instance_uid),
            ];
            for (what, uid) in uids {
                if let Some(u) = uid
                    && !is_valid_uid(u)
                {
                    out.push(format!("image {:?} has a {what} that is not a DICOM UID ({u:?})", img.id));
                }
            }
            if !img.frame_sop_instance_uids.is_empty() && img.frame_sop_instance_uids.len() != img.frames as usize {
                out.push(format!(
                    "image {:?} lists {} per-frame SOP Instance UIDs for {} frames",
                    img.id,
                    img.frame_sop_instance_uids.len(),
                    img.frames
                ));
            }
            if let Some(u) = img.frame_sop_instance_uids.iter().find(|u| !is_valid_uid(u)) {
                out.push(format!("image {:?} has a per-frame SOP Instance UID that is not a DICOM UID ({u:?})", img.id));
            }
            for (what, date) in [("study date", &img.study_date), ("patient birth date", &img.patient_birth_date)] {
                if let Some(d) = date
                    && !(d.is_empty() || (d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit())))
                {
                    out.push(format!("image {:?} has a {what} that is not a DICOM date (YYYYMMDD)", img.id));
                }
            }
            if let Some(id) = &img.patient_id
                && !is_long_string(id)
            {
                out.push(format!("image {:?} has a patient id longer than 64 characters or with a backslash", img.id));
            }
        }
    }
    for f in &doc.findings {
        if f.label.trim().is_empty() {
            out.push(format!("finding {} has an empty label", f.id));
        } else if sr && !is_long_string(&f.label) {
            out.push(format!("finding {}: a label must be at most 64 characters without backslash or control characters (DICOM LO)", f.id));
        }
        for b in &f.boxes {
            let Some(img) = doc.image(&b.image) else { continue };
            if b.frame >= img.frames {
                out.push(format!(
                    "finding {} has a box on frame {} of image {:?}, which has {} frame(s)",
                    f.id, b.frame, img.id, img.frames
                ));
            } else if sr && img.frames > 1 && i32::try_from(u64::from(b.frame) + 1).is_err() {
                out.push(format!("finding {}: frame {} cannot be written as a DICOM frame number", f.id, b.frame));
            }
            let [x1, y1, x2, y2] = b.bbox;
            let (w, h) = (img.width as f32, img.height as f32);
            if img.width > 0 && img.height > 0 && !(x1 >= 0.0 && y1 >= 0.0 && x2 <= w && y2 <= h) {
                out.push(format!("finding {} has a box {:?} outside image {:?} ({}×{})", f.id, b.bbox, img.id, img.width, img.height));
            }
        }
    }
    out
}

/// Whether `s` fits DICOM's LO (Long String): at most 64 characters, no backslash (the value
/// separator) and no control characters.
pub fn is_long_string(s: &str) -> bool {
    s.chars().count() <= 64 && !s.chars().any(|c| c == '\\' || c.is_control())
}

/// The last component of a path written on any platform (split on both '/' and '\\', so a
/// Windows path read on Linux gives its file name too).
pub fn base_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// A stable pseudonym for an image file: `img-` and the first 12 hex digits of the sha256 of the
/// full path, then the file's extension when it is a short alphanumeric one (`.dcm`, `.png`).
pub fn pseudonym_for_path(path: &str) -> String {
    let digest = Sha256::digest(path.as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let name = base_name(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e).filter(|e| (1..=5).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric()));
    match ext {
        Some(e) => format!("img-{hex}.{}", e.to_ascii_lowercase()),
        None => format!("img-{hex}"),
    }
}

/// Pseudonymous DICOM UIDs for one export: the same UID always maps to the same `2.25.…` UID
/// within it, but a secret salt drawn per export keeps them from being matched to the
/// originals (or across exports).
pub struct UidPseudonyms {
    salt: [u8; 16],
}

impl Default for UidPseudonyms {
    fn default() -> Self {
        UidPseudonyms { salt: *uuid::Uuid::new_v4().as_bytes() }
    }
}

impl UidPseudonyms {
    pub fn map(&self, uid: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(uid.as_bytes());
        let digest = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        // A 2.25 UID is a UUID as a decimal integer; 127 bits keep it within 39 digits, no leading zero.
        format!("2.25.{}", (u128::from_be_bytes(first) >> 1).max(1))
    }
}
