//! Native file dialogs (rfd) on worker threads, so the window keeps painting while one is open.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};

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
}

pub struct Dialogs {
    tx: Sender<(DialogPurpose, PathBuf)>,
    rx: Receiver<(DialogPurpose, PathBuf)>,
    pub open: bool,
}

impl Default for Dialogs {
    fn default() -> Self {
        let (tx, rx) = channel();
        Dialogs { tx, rx, open: false }
    }
}

impl Dialogs {
    pub fn poll(&mut self) -> Vec<(DialogPurpose, PathBuf)> {
        let v: Vec<_> = self.rx.try_iter().collect();
        if !v.is_empty() {
            self.open = false;
        }
        v
    }

    fn run(&mut self, purpose: DialogPurpose, pick: impl FnOnce() -> Option<PathBuf> + Send + 'static) {
        if self.open {
            return;
        }
        self.open = true;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            // None (cancelled, or no dialog backend) leaves everything as it was.
            if let Some(p) = pick() {
                let _ = tx.send((purpose, p));
            }
        });
        // A cancelled dialog sends nothing; let another one open after a moment.
        self.open = false;
    }

    pub fn open_study(&mut self, role: Role) {
        self.run(DialogPurpose::Open(role), move || {
            rfd::FileDialog::new()
                .set_title(format!("Open {}", role.label()))
                .add_filter(
                    "DICOM, volumes and images",
                    &["dcm", "DCM", "dicom", "nii", "gz", "mha", "mhd", "png", "jpg", "jpeg", "tif", "tiff"],
                )
                .add_filter("All files", &["*"])
                .pick_file()
        });
    }

    pub fn open_folder(&mut self) {
        self.run(DialogPurpose::OpenFolder, || rfd::FileDialog::new().set_title("Open a folder with two studies").pick_folder());
    }

    pub fn open_annotations(&mut self) {
        self.run(DialogPurpose::OpenAnnotations, || {
            rfd::FileDialog::new().set_title("Open annotations").add_filter("Tandem annotations", &["json"]).pick_file()
        });
    }

    pub fn save_annotations(&mut self, suggested: Option<PathBuf>) {
        self.run(DialogPurpose::SaveAnnotations, move || {
            let mut d = rfd::FileDialog::new().set_title("Save annotations as").add_filter("Tandem annotations", &["json"]);
            if let Some(s) = suggested {
                if let Some(dir) = s.parent() {
                    d = d.set_directory(dir);
                }
                if let Some(name) = s.file_name() {
                    d = d.set_file_name(name.to_string_lossy());
                }
            }
            d.save_file()
        });
    }

    pub fn export(&mut self, format: ExportFormat) {
        self.run(DialogPurpose::Export(format), move || {
            rfd::FileDialog::new()
                .set_title(format!("Export {}", format.label()))
                .set_file_name(format!("annotations.{}", format.extension()))
                .save_file()
        });
    }
}
