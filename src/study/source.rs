//! A study's identity: where it was opened from (a local file or folder today, a PACS location next).

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a study comes from. Code that needs a local file (the default sidecar, refusing to save
/// over an open image, Open recent) asks for `path()` and does without one when there is none.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// A DICOM or image file, or a folder of them.
    Path(PathBuf),
}

impl Source {
    /// The local file or folder, if the study has one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Path(p) => Some(p),
        }
    }
}

impl From<PathBuf> for Source {
    fn from(p: PathBuf) -> Self {
        Source::Path(p)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Path(p) => write!(f, "{}", p.display()),
        }
    }
}
