//! Exports of a document: COCO and MedSG-Bench JSON for training pipelines (no patient
//! identifiers unless asked), and DICOM SR TID 1500 for PACS.

pub mod coco;
pub mod medsg;
pub mod sr;

use std::path::Path;

use crate::annotation::document::{Document, Finding, Status};

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
    #[error("cannot write {path}: {msg}")]
    Write { path: String, msg: String },
}

/// Findings an export carries: everything not rejected.
pub fn exported(doc: &Document) -> impl Iterator<Item = &Finding> {
    doc.findings.iter().filter(|f| f.status != Status::Rejected)
}

/// Writes `doc` as `format` to `path` (atomically).
pub fn export(doc: &Document, format: ExportFormat, path: &Path, keep_phi: bool) -> Result<(), ExportError> {
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
