//! Reading, validating and saving documents (atomically), plus the crash-recovery file that
//! autosave writes beside the document.

use std::path::{Path, PathBuf};

use crate::annotation::document::{Document, SCHEMA_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    #[error("cannot read the annotations: {0}")]
    Io(String),
    #[error("the annotation file is not valid JSON or is incomplete: {0}")]
    Json(String),
    #[error(
        "the annotation file was written by a newer Tandem (schema version {found}; this build reads up to {SCHEMA_VERSION}); open it with a newer version"
    )]
    NewerSchema { found: u64 },
    #[error("not a Tandem annotation file: {0}")]
    NotADocument(String),
    #[error("the annotation file is inconsistent: {0}")]
    Invalid(String),
    #[error("cannot save the annotations: {0}")]
    Save(String),
}

/// Parses and checks a document from bytes.
pub fn parse(bytes: &[u8]) -> Result<Document, AnnotationError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| AnnotationError::Json(e.to_string()))?;
    let version = value
        .get("schema_version")
        .ok_or_else(|| AnnotationError::NotADocument("it has no schema_version".into()))?
        .as_u64()
        .ok_or_else(|| AnnotationError::NotADocument("schema_version is not a number".into()))?;
    if version > SCHEMA_VERSION as u64 {
        return Err(AnnotationError::NewerSchema { found: version });
    }
    let doc: Document = serde_json::from_value(value).map_err(|e| AnnotationError::NotADocument(e.to_string()))?;
    let problems = validate(&doc);
    if let Some(first) = problems.first() {
        return Err(AnnotationError::Invalid(if problems.len() > 1 {
            format!("{first} (and {} more)", problems.len() - 1)
        } else {
            first.clone()
        }));
    }
    Ok(doc)
}

/// Documents hold boxes and labels: kilobytes to a few megabytes. A larger file is not one, and
/// its parsed JSON tree would take many times its size.
pub const MAX_DOCUMENT_BYTES: u64 = 256 << 20;

pub fn load(path: &Path) -> Result<Document, AnnotationError> {
    let size = std::fs::metadata(path).map_err(|e| AnnotationError::Io(format!("{e} ({})", path.display())))?.len();
    if size > MAX_DOCUMENT_BYTES {
        return Err(AnnotationError::Io(format!("{} is {} MB, too large for an annotation document", path.display(), size >> 20)));
    }
    let bytes = std::fs::read(path).map_err(|e| AnnotationError::Io(format!("{e} ({})", path.display())))?;
    parse(&bytes)
}

/// What is wrong with a document, one line each (empty when it is consistent).
pub fn validate(doc: &Document) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for img in &doc.images {
        if !ids.insert(img.id.as_str()) {
            problems.push(format!("image id {:?} is used twice", img.id));
        }
    }
    let mut finding_ids = std::collections::HashSet::new();
    for f in &doc.findings {
        if !finding_ids.insert(f.id.as_str()) {
            problems.push(format!("finding id {:?} is used twice", f.id));
        }
        if f.boxes.is_empty() {
            problems.push(format!("finding {} has no box", f.id));
        }
        for b in &f.boxes {
            let [x1, y1, x2, y2] = b.bbox;
            if !b.bbox.iter().all(|v| v.is_finite()) || x2 <= x1 || y2 <= y1 {
                problems.push(format!("finding {} has an empty or invalid box {:?}", f.id, b.bbox));
            }
            if !doc.images.is_empty() && doc.image(&b.image).is_none() {
                problems.push(format!("finding {} refers to unknown image {:?}", f.id, b.image));
            }
        }
        for m in f.track.iter().flat_map(|t| &t.measurements) {
            if !f.boxes.iter().any(|b| b.image == m.image && b.frame == m.frame) {
                problems.push(format!("finding {} measures image {:?} frame {} where it has no box", f.id, m.image, m.frame));
            }
        }
        problems.extend(crate::annotation::measurement::problems(f));
        if let Some(s) = f.score()
            && !(0.0..=1.0).contains(&s)
        {
            problems.push(format!("finding {} has a score {s} outside 0..1", f.id));
        }
    }
    problems
}

/// The exact bytes `save` writes (pretty JSON and a final newline).
pub fn to_bytes(doc: &Document) -> Result<Vec<u8>, AnnotationError> {
    // Never written under a version too old for what it holds (a track added to a version 1
    // document makes it version 2).
    // (Serialized from the document itself: through a serde_json::Value, f32 scores would
    // come out with f64 digits.)
    let raised;
    let doc = if doc.schema_version < doc.required_version() {
        raised = Document { schema_version: doc.required_version(), ..doc.clone() };
        &raised
    } else {
        doc
    };
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(|e| AnnotationError::Save(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Saves atomically: a reader (or a crash) only ever sees the previous or the new file.
pub fn save(doc: &Document, path: &Path) -> Result<(), AnnotationError> {
    let bytes = to_bytes(doc)?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| AnnotationError::Save(format!("{e} ({})", path.display())))
}

/// The default sidecar beside a study: `<file>.tandem.json`, or inside a folder.
pub fn sidecar_for(study: &Path) -> PathBuf {
    if study.is_dir() {
        study.join("tandem-annotations.json")
    } else {
        let name = study.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "study".into());
        study.with_file_name(format!("{name}.tandem.json"))
    }
}

/// Where autosave keeps unsaved work for `doc_path`.
pub fn recovery_path(doc_path: &Path) -> PathBuf {
    let name = doc_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "annotations.json".into());
    doc_path.with_file_name(format!(".{name}.recovery"))
}

pub fn write_recovery(doc: &Document, doc_path: &Path) -> Result<(), AnnotationError> {
    save(doc, &recovery_path(doc_path))
}

pub fn discard_recovery(doc_path: &Path) {
    let _ = std::fs::remove_file(recovery_path(doc_path));
}

/// A readable recovery file that is newer than the document (or exists without it).
pub fn pending_recovery(doc_path: &Path) -> Option<(PathBuf, Document)> {
    let rec = recovery_path(doc_path);
    let rec_time = std::fs::metadata(&rec).and_then(|m| m.modified()).ok()?;
    if let Ok(doc_time) = std::fs::metadata(doc_path).and_then(|m| m.modified())
        && doc_time >= rec_time
    {
        return None;
    }
    let doc = load(&rec).ok()?;
    Some((rec, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_schema_is_refused() {
        let e = parse(br#"{"schema_version": 99, "images": [], "findings": []}"#).unwrap_err();
        assert!(matches!(e, AnnotationError::NewerSchema { found: 99 }), "{e}");
    }

    #[test]
    fn truncated_json_is_a_clear_error() {
        let e = parse(br#"{"schema_version": 1, "images": [], "findi"#).unwrap_err();
        assert!(matches!(e, AnnotationError::Json(_)), "{e}");
    }

    #[test]
    fn sidecar_sits_beside_the_file() {
        assert_eq!(sidecar_for(Path::new("/data/ct/scan.dcm")), PathBuf::from("/data/ct/scan.dcm.tandem.json"));
    }
}
