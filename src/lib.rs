//! Tandem: a side-by-side radiology viewer with an embedded grounder that finds what changed
//! between a prior and a current study and where a marked region went.
//!
//! The core (`study`, `registration`, `grounding`, `annotation`) never touches the GUI; the
//! `viewer` is a thin egui shell over it and the `cli` calls the same core.

pub mod annotation;
pub mod cli;
pub mod fsutil;
pub mod grounding;
#[cfg(feature = "pacs")]
pub mod pacs;
pub mod registration;
pub mod snapshot;
pub mod study;
#[cfg(test)]
pub mod testutil;
pub mod viewer;
