//! The document a user edits and saves: findings, provenance, history (undo/redo), JSON, exports.

pub mod document;
pub mod export;
pub mod history;
pub mod import;
pub mod io;
pub mod measurement;
pub mod track;

pub use document::{Document, Finding, FindingKind, ImageBox, ImageRef, Source, Status};
pub use history::{Command, History};
