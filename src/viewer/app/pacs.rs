//! The viewer's side of the PACS: File → Import SR, "Send findings to PACS" and the PACS dialog.

use std::path::Path;

use eframe::egui::{self, Color32, RichText};

use super::{App, AppCommand, Prompt};
use crate::annotation::document::{Finding, ImageRef, new_id};
use crate::annotation::export::{self, ExportFormat};
use crate::annotation::{Command, import};
use crate::viewer::jobs::JobResult;
use crate::viewer::pane::Role;

/// The environment variable that names the PACS when the viewer was not opened with `--pacs`.
pub const ENV_PACS_URL: &str = "TANDEM_PACS_URL";

/// What the PACS dialog shows and has asked for.
#[derive(Clone, Debug, Default)]
pub struct PacsDialog {
    pub open: bool,
    pub url: String,
    pub patient_id: String,
    pub patient_name: String,
    /// The latest search or retrieval; answers to older ones are dropped.
    #[cfg_attr(not(feature = "pacs"), allow(dead_code))]
    request: u64,
    pub searching: bool,
    #[cfg(feature = "pacs")]
    pub studies: Vec<crate::pacs::Study>,
    /// Indices into `studies` picked as prior and current.
    pub prior: Option<usize>,
    pub current: Option<usize>,
    /// Retrievals under way.
    pub retrieving: usize,
    pub error: Option<String>,
    /// Where retrieved studies go (default: `~/.cache/tandem/pacs`, as `tandem view --pacs`).
    pub cache: Option<std::path::PathBuf>,
}

/// What the PACS dialog asks of the app.
#[derive(Clone, Debug)]
pub enum PacsCommand {
    Show(bool),
    SetFields {
        url: String,
        patient_id: String,
        patient_name: String,
    },
    Search,
    Pick {
        role: Role,
        study: Option<usize>,
    },
    /// Retrieve the picked studies into the cache and open them in their panes.
    Retrieve,
    SetCache(std::path::PathBuf),
}

impl App {
    /// The PACS the viewer sends findings to (`--pacs URL`, else `TANDEM_PACS_URL`).
    pub fn with_pacs(mut self, url: Option<String>) -> Self {
        self.set_pacs_url(url);
        self
    }

    pub(super) fn set_pacs_url(&mut self, url: Option<String>) {
        self.pacs_url = url.map(|u| u.trim().to_string()).filter(|u| !u.is_empty());
        if let Some(u) = &self.pacs_url {
            self.pacs_dialog.url = u.clone();
        }
    }

    pub fn pacs_url(&self) -> Option<&str> {
        self.pacs_url.as_deref()
    }

    pub fn pacs_dialog(&self) -> &PacsDialog {
        &self.pacs_dialog
    }

    /// Imports a DICOM SR into the open document as one undo step. Its regions are placed on the
    /// panes' images (matched by SOP Instance UID or path); regions on other images are left out
    /// and counted, as the document can only show boxes on prior and current.
    pub(super) fn import_sr(&mut self, path: &Path) {
        let roles = [Role::Prior, Role::Current];
        let local: Vec<crate::study::Series> = roles.iter().filter_map(|r| self.pane(*r).series().map(|s| (**s).clone())).collect();
        let open: Vec<ImageRef> =
            roles.iter().filter_map(|r| self.pane(*r).series().map(|s| ImageRef::from_series(&self.image_key(*r), s))).collect();
        let (imported, report) = match import::import_file(path, &local) {
            Ok(x) => x,
            Err(e) => {
                self.prompt = Some(Prompt::Error(format!("Import SR: {e} ({})", path.display())));
                return;
            }
        };
        let same = |o: &ImageRef, i: &ImageRef| {
            (o.sop_instance_uid.is_some() && o.sop_instance_uid == i.sop_instance_uid) || (!o.path.is_empty() && o.path == i.path)
        };
        let mut findings: Vec<Finding> = Vec::new();
        let mut left_out = 0;
        for mut f in imported.findings {
            let before = f.boxes.len();
            f.boxes.retain_mut(|b| match imported.images.iter().find(|i| i.id == b.image).and_then(|i| open.iter().find(|o| same(o, i))) {
                Some(o) => {
                    b.image = o.id.clone();
                    b.frame < o.frames
                }
                None => false,
            });
            left_out += before - f.boxes.len();
            if f.boxes.is_empty() {
                continue;
            }
            // An SR imported twice, or one made from this document, must not give two findings one id.
            if self.doc.finding(&f.id).is_some() || findings.iter().any(|x| x.id == f.id) {
                f.id = new_id();
            }
            findings.push(f);
        }
        if findings.is_empty() {
            self.prompt = Some(Prompt::Error(format!(
                "Import SR: none of its {} region(s) is on the open images; open the images it refers to first ({})",
                report.boxes,
                path.display()
            )));
            return;
        }
        let n = findings.len();
        self.run(AppCommand::Edit(Box::new(Command::Add { findings, description: format!("import {n} finding(s) from a DICOM SR") })));
        self.status = format!("imported {n} finding(s) from {}", path.display());
        if left_out > 0 {
            self.status += &format!("; left out {left_out} region(s) on images not open");
        }
        if !report.skipped.is_empty() {
            self.status += &format!("; skipped {}", report.skipped.join("; "));
        }
    }

    /// Exports the document as a DICOM SR and stores it on the PACS in the background.
    pub(super) fn send_findings(&mut self) {
        let Some(url) = self.pacs_url.clone() else {
            self.prompt =
                Some(Prompt::Error(format!("Send findings to PACS: no PACS; open the viewer with --pacs URL or set {ENV_PACS_URL}")));
            return;
        };
        let problems = export::problems(&self.doc, Some(ExportFormat::Sr));
        if let Some(first) = problems.first() {
            self.prompt = Some(Prompt::Error(format!("Send findings to PACS: the findings cannot be sent as a DICOM SR: {first}")));
            return;
        }
        let sr = match export::sr::to_sr_bytes(&self.doc) {
            Ok(b) => b,
            Err(e) => {
                self.prompt = Some(Prompt::Error(format!("Send findings to PACS: {e}")));
                return;
            }
        };
        #[cfg(feature = "pacs")]
        {
            self.status = format!("sending the findings to the PACS… ({url})");
            self.jobs.push_sr(url, sr);
        }
        #[cfg(not(feature = "pacs"))]
        {
            let _ = (url, sr);
            self.prompt = Some(Prompt::Error("Send findings to PACS: this build has no PACS support (cargo feature `pacs`)".into()));
        }
    }

    pub(super) fn run_pacs(&mut self, command: PacsCommand) {
        let d = &mut self.pacs_dialog;
        match command {
            PacsCommand::Show(open) => {
                d.open = open;
                if open && d.url.is_empty() {
                    d.url = std::env::var(ENV_PACS_URL).unwrap_or_default();
                }
            }
            PacsCommand::SetFields { url, patient_id, patient_name } => {
                (d.url, d.patient_id, d.patient_name) = (url, patient_id, patient_name);
            }
            PacsCommand::SetCache(cache) => d.cache = Some(cache),
            PacsCommand::Pick { role, study } => match role {
                Role::Prior => d.prior = study,
                Role::Current => d.current = study,
            },
            #[cfg(feature = "pacs")]
            PacsCommand::Search => {
                d.request += 1;
                d.searching = true;
                d.error = None;
                // A new search replaces the list: retrievals still under way are dropped when they end.
                d.retrieving = 0;
                (d.studies, d.prior, d.current) = (Vec::new(), None, None);
                let some = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
                let query = crate::pacs::Query { patient_id: some(&d.patient_id), patient_name: some(&d.patient_name), modality: None };
                let (request, url) = (d.request, d.url.trim().to_string());
                self.jobs.pacs_search(request, url, query);
            }
            #[cfg(feature = "pacs")]
            PacsCommand::Retrieve => {
                let cache = match d.cache.clone().map_or_else(crate::cli::pacs::default_cache, Ok) {
                    Ok(c) => c,
                    Err(e) => {
                        d.error = Some(e.0);
                        return;
                    }
                };
                d.request += 1;
                d.error = None;
                let picks: Vec<(Role, String)> = [(Role::Prior, d.prior), (Role::Current, d.current)]
                    .into_iter()
                    .filter_map(|(role, i)| Some((role, d.studies.get(i?)?.study_uid.clone())))
                    .collect();
                d.retrieving = picks.len();
                let (request, url) = (d.request, d.url.trim().to_string());
                for (role, study) in picks {
                    self.jobs.pacs_retrieve(request, url.clone(), study, cache.clone(), role);
                }
            }
            #[cfg(not(feature = "pacs"))]
            PacsCommand::Search | PacsCommand::Retrieve => {
                d.error = Some("this build has no PACS support (cargo feature `pacs`)".into());
            }
        }
    }

    /// A PACS job ended; answers to a search or retrieval the dialog has since replaced are dropped.
    pub(super) fn on_pacs_job(&mut self, result: JobResult) {
        self.jobs.pacs_running = self.jobs.pacs_running.saturating_sub(1);
        match result {
            JobResult::Pushed(Ok(msg)) => self.status = msg,
            JobResult::Pushed(Err(e)) => {
                self.status = format!("Send findings to PACS failed: {e}");
                self.prompt = Some(Prompt::Error(format!("Send findings to PACS failed: {e}")));
            }
            #[cfg(feature = "pacs")]
            JobResult::PacsFound { request, result } if request == self.pacs_dialog.request => {
                let d = &mut self.pacs_dialog;
                d.searching = false;
                match result {
                    Ok(mut studies) => {
                        // Newest first, as a reading list is.
                        studies.sort_by(|a, b| (&b.date, &b.time).cmp(&(&a.date, &a.time)));
                        d.current = (!studies.is_empty()).then_some(0);
                        d.prior = (studies.len() > 1).then_some(1);
                        if studies.is_empty() {
                            d.error = Some("no study matches".into());
                        }
                        d.studies = studies;
                    }
                    Err(e) => d.error = Some(e),
                }
            }
            #[cfg(feature = "pacs")]
            JobResult::PacsRetrieved { request, role, result } if request == self.pacs_dialog.request => {
                self.pacs_dialog.retrieving = self.pacs_dialog.retrieving.saturating_sub(1);
                match result {
                    Ok(folder) => {
                        self.status = format!("{}: retrieved from the PACS", role.label());
                        self.run(AppCommand::Open { role, path: folder });
                        if self.pacs_dialog.retrieving == 0 && self.pacs_dialog.error.is_none() {
                            self.pacs_dialog.open = false;
                        }
                    }
                    Err(e) => self.pacs_dialog.error = Some(format!("{}: {e}", role.label())),
                }
            }
            _ => log::info!("dropped the answer to an older PACS request"),
        }
    }
}

/// The File menu's entries for SR import and the PACS.
pub(super) fn file_menu_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    if ui.button("Import SR…").clicked() {
        out.push(AppCommand::Dialog(super::DialogRequest::ImportSr));
        ui.close();
    }
    let send = egui::Button::new("Send findings to PACS");
    let why = if app.pacs_url.is_none() {
        Some(format!("open the viewer with --pacs URL or set {ENV_PACS_URL}"))
    } else if app.doc.findings.is_empty() {
        Some("no findings to send".into())
    } else {
        None
    };
    let r = ui.add_enabled(why.is_none() && cfg!(feature = "pacs"), send);
    if let Some(why) = why {
        r.on_disabled_hover_text(why);
    } else if r.clicked() {
        out.push(AppCommand::SendFindings);
        ui.close();
    }
    if ui.add_enabled(cfg!(feature = "pacs"), egui::Button::new("PACS…")).clicked() {
        out.push(AppCommand::Pacs(PacsCommand::Show(true)));
        ui.close();
    }
}

/// The PACS dialog: where, whom, the studies found, and which to hang as prior and current.
pub(super) fn pacs_dialog_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    let d = &app.pacs_dialog;
    if !d.open {
        return;
    }
    let mut open = true;
    egui::Window::new("PACS").open(&mut open).default_width(640.0).collapsible(false).show(ui.ctx(), |ui| {
        let (mut url, mut patient_id, mut patient_name) = (d.url.clone(), d.patient_id.clone(), d.patient_name.clone());
        let mut changed = false;
        egui::Grid::new("pacs fields").num_columns(2).show(ui, |ui| {
            ui.label("DICOMweb URL");
            changed |= ui.add(egui::TextEdit::singleline(&mut url).desired_width(420.0).hint_text("http://host:8042/dicom-web")).changed();
            ui.end_row();
            ui.label("Patient ID");
            changed |= ui.add(egui::TextEdit::singleline(&mut patient_id).desired_width(200.0)).changed();
            ui.end_row();
            ui.label("Patient name");
            changed |= ui.add(egui::TextEdit::singleline(&mut patient_name).desired_width(200.0).hint_text("DOE^J*")).changed();
            ui.end_row();
        });
        if changed {
            out.push(AppCommand::Pacs(PacsCommand::SetFields { url: url.clone(), patient_id, patient_name }));
        }
        ui.horizontal(|ui| {
            if ui.add_enabled(!url.trim().is_empty() && !d.searching, egui::Button::new("Search")).clicked() {
                out.push(AppCommand::Pacs(PacsCommand::Search));
            }
            if d.searching {
                ui.spinner();
                ui.label("searching…");
            }
        });
        if let Some(e) = &d.error {
            ui.label(RichText::new(e).color(Color32::from_rgb(255, 140, 120)));
        }
        #[cfg(feature = "pacs")]
        studies_ui(app, ui, out);
    });
    if !open {
        out.push(AppCommand::Pacs(PacsCommand::Show(false)));
    }
}

#[cfg(feature = "pacs")]
fn studies_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    let d = &app.pacs_dialog;
    if d.studies.is_empty() {
        return;
    }
    ui.separator();
    egui::ScrollArea::vertical().max_height(320.0).show(ui, |ui| {
        egui::Grid::new("pacs studies").striped(true).num_columns(7).show(ui, |ui| {
            for h in ["Prior", "Current", "Date", "Patient", "Description", "Modality", "Series"] {
                ui.strong(h);
            }
            ui.end_row();
            for (i, s) in d.studies.iter().enumerate() {
                for (role, picked) in [(Role::Prior, d.prior), (Role::Current, d.current)] {
                    if ui.radio(picked == Some(i), "").on_hover_text(format!("open as {}", role.label())).clicked() {
                        let study = (picked != Some(i)).then_some(i);
                        out.push(AppCommand::Pacs(PacsCommand::Pick { role, study }));
                    }
                }
                ui.label(s.date.as_deref().map(pretty_date).unwrap_or_default());
                ui.label(s.patient_name.as_deref().or(s.patient_id.as_deref()).unwrap_or(""));
                ui.label(s.description.as_deref().unwrap_or(""));
                ui.label(s.modalities.join(", "));
                ui.label(s.series_count.map(|n| n.to_string()).unwrap_or_default());
                ui.end_row();
            }
        });
    });
    ui.horizontal(|ui| {
        let any = d.prior.is_some() || d.current.is_some();
        if ui.add_enabled(any && d.retrieving == 0, egui::Button::new("Retrieve and open")).clicked() {
            out.push(AppCommand::Pacs(PacsCommand::Retrieve));
        }
        if d.retrieving > 0 {
            ui.spinner();
            ui.label(app.jobs.pacs_progress.lock().map(|p| p.clone()).unwrap_or_default());
        }
    });
}

/// 20240131 → 2024-01-31.
#[cfg_attr(not(feature = "pacs"), allow(dead_code))]
fn pretty_date(d: &str) -> String {
    if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) { format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]) } else { d.to_string() }
}
