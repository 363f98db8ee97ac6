//! File dialogs on worker threads, so the window keeps painting while one is open. The native
//! dialog (rfd) is one `Picker`; when it cannot open, the app is told so (and asks for a path
//! itself) instead of nothing happening.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use crate::annotation::export::ExportFormat;
use crate::viewer::pane::Role;

/// What a chosen path is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogPurpose {
    Open(Role),
    OpenFolder,
    OpenAnnotations,
    SaveAnnotations,
    Export(ExportFormat),
    ImportSr,
}

impl DialogPurpose {
    /// What the dialog asks for, as its title says it.
    pub fn title(self) -> String {
        match self {
            DialogPurpose::Open(role) => format!("Open {}", role.label()),
            DialogPurpose::OpenFolder => "Open a folder with two studies".into(),
            DialogPurpose::OpenAnnotations => "Open annotations".into(),
            DialogPurpose::SaveAnnotations => "Save annotations as".into(),
            DialogPurpose::Export(f) => format!("Export {}", f.label()),
            DialogPurpose::ImportSr => "Import a DICOM SR".into(),
        }
    }

    pub fn saves(self) -> bool {
        matches!(self, DialogPurpose::SaveAnnotations | DialogPurpose::Export(_))
    }
}

/// One dialog to show.
#[derive(Clone, Debug)]
pub struct DialogSpec {
    pub purpose: DialogPurpose,
    /// A path to start from (the default sidecar when saving).
    pub suggested: Option<PathBuf>,
}

/// How a dialog ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Picked {
    Chosen(PathBuf),
    Cancelled,
    /// No dialog could be shown (no portal, no zenity, …); the reason as far as it is known.
    Unavailable(String),
}

/// Shows a dialog and waits for it (called on a worker thread).
pub type Picker = Arc<dyn Fn(&DialogSpec) -> Picked + Send + Sync>;

pub struct Dialogs {
    tx: Sender<(DialogSpec, Picked)>,
    rx: Receiver<(DialogSpec, Picked)>,
    picker: Picker,
}

impl Default for Dialogs {
    fn default() -> Self {
        Dialogs::with_picker(Arc::new(native))
    }
}

impl Dialogs {
    pub fn with_picker(picker: Picker) -> Self {
        let (tx, rx) = channel();
        Dialogs { tx, rx, picker }
    }

    /// Dialogs that never open, with `why` (tests; machines known to have no dialog backend).
    pub fn unavailable(why: &str) -> Self {
        let why = why.to_string();
        Dialogs::with_picker(Arc::new(move |_| Picked::Unavailable(why.clone())))
    }

    /// Dialogs that ended since the last call.
    pub fn poll(&mut self) -> Vec<(DialogSpec, Picked)> {
        self.rx.try_iter().collect()
    }

    pub fn show(&self, spec: DialogSpec) {
        let (tx, picker) = (self.tx.clone(), self.picker.clone());
        let spawned = std::thread::Builder::new().name("file dialog".into()).spawn({
            let spec = spec.clone();
            move || {
                let picked = picker(&spec);
                let _ = tx.send((spec, picked));
            }
        });
        if let Err(e) = spawned {
            let _ = self.tx.send((spec, Picked::Unavailable(format!("cannot start the dialog: {e}"))));
        }
    }
}

/// Paths that complete `typed`: the entries of its folder whose names start with what follows
/// the last separator, sorted, folders ending in '/', at most `limit`.
pub fn completions(typed: &str, limit: usize) -> Vec<String> {
    if typed.is_empty() {
        return Vec::new();
    }
    let (dir, prefix) = match typed.rfind('/') {
        Some(i) => (&typed[..=i], &typed[i + 1..]),
        None => ("", typed),
    };
    let Ok(entries) = std::fs::read_dir(if dir.is_empty() { "." } else { dir }) else { return Vec::new() };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with(prefix) && name != prefix && !(prefix.is_empty() && name.starts_with('.'))).then(|| {
                let slash = if e.path().is_dir() { "/" } else { "" };
                format!("{dir}{name}{slash}")
            })
        })
        .collect();
    out.sort();
    out.truncate(limit);
    out
}

/// The native dialog. rfd answers `None` both when the user cancels and when no backend could
/// show anything; a dialog a person cancels stays up far longer than one that never opened, so a
/// `None` within a quarter of a second counts as "could not open".
fn native(spec: &DialogSpec) -> Picked {
    let mut d = rfd::FileDialog::new().set_title(spec.purpose.title());
    match spec.purpose {
        DialogPurpose::Open(_) => {
            d = d
                .add_filter(
                    "DICOM, volumes and images",
                    &["dcm", "DCM", "dicom", "nii", "gz", "mha", "mhd", "png", "jpg", "jpeg", "tif", "tiff"],
                )
                .add_filter("All files", &["*"]);
        }
        DialogPurpose::OpenAnnotations | DialogPurpose::SaveAnnotations => d = d.add_filter("Tandem annotations", &["json"]),
        DialogPurpose::Export(f) => d = d.set_file_name(format!("annotations.{}", f.extension())),
        DialogPurpose::ImportSr => d = d.add_filter("DICOM SR", &["dcm", "DCM", "sr"]).add_filter("All files", &["*"]),
        DialogPurpose::OpenFolder => {}
    }
    if let Some(s) = &spec.suggested {
        if let Some(dir) = s.parent() {
            d = d.set_directory(dir);
        }
        if let Some(name) = s.file_name() {
            d = d.set_file_name(name.to_string_lossy());
        }
    }
    let started = Instant::now();
    let picked = match spec.purpose {
        DialogPurpose::OpenFolder => d.pick_folder(),
        p if p.saves() => d.save_file(),
        _ => d.pick_file(),
    };
    match picked {
        Some(p) => Picked::Chosen(p),
        None if started.elapsed() < Duration::from_millis(250) => {
            Picked::Unavailable("no file dialog could be shown (no desktop portal or zenity found)".into())
        }
        None => Picked::Cancelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_list_the_typed_folders_entries_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prior.dcm"), b"").unwrap();
        std::fs::write(dir.path().join("present.png"), b"").unwrap();
        std::fs::create_dir(dir.path().join("prints")).unwrap();
        std::fs::write(dir.path().join("other.dcm"), b"").unwrap();
        let base = format!("{}/", dir.path().display());
        assert_eq!(completions(&format!("{base}pri"), 10), [format!("{base}prints/"), format!("{base}prior.dcm")]);
        assert_eq!(completions(&format!("{base}pr"), 1).len(), 1);
        assert!(completions(&format!("{base}zzz"), 10).is_empty());
        assert!(completions("/no/such/folder/x", 10).is_empty());
    }
}
