//! The one place that changes the app's state: `App::run` applies an `AppCommand`, and
//! `poll_jobs` applies background results, dropping those stamped with images no longer shown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;

use super::{App, AppCommand, DialogRequest, Drag, Prompt, role_slot};
use crate::annotation::{self, Command, Document, Finding, FindingKind, ImageBox, ImageRef, Source, Status};
use crate::grounding::BBox;
use crate::registration::UNRELATED_NCC_FLOOR;
use crate::study::pairing::PairingIssue;
use crate::study::progressive::{Arrival, LoadControl};
use crate::study::{Series, Source as StudySource};
use crate::viewer::Launch;
use crate::viewer::dialogs::{DialogPurpose, DialogSpec, Picked};
use crate::viewer::jobs::{GroundKind, JobResult, Stamp, progress_cell};
use crate::viewer::overlay::Handle;
use crate::viewer::pane::{PaneId, Preset, Role};

impl App {
    /// Applies one command now. Panels and keys queue theirs for the end of the frame; tests and
    /// the constructor call this directly.
    pub fn run(&mut self, command: AppCommand) {
        match command {
            AppCommand::Open { role, path } => {
                self.open_path(role, path);
                if let (Some(prior), Some(current)) = (self.source_path(Role::Prior), self.source_path(Role::Current))
                    && prior != current
                {
                    let (prior, current) = (prior.to_path_buf(), current.to_path_buf());
                    self.remember_recent(crate::viewer::prefs::Recent::Pair { prior, current });
                }
            }
            AppCommand::Launch(launch) => {
                match &launch {
                    Launch::Pair(prior, current) => {
                        self.remember_recent(crate::viewer::prefs::Recent::Pair { prior: prior.clone(), current: current.clone() })
                    }
                    Launch::Folder(path) => self.remember_recent(crate::viewer::prefs::Recent::Folder { path: path.clone() }),
                    Launch::Timeline(paths) => {
                        if let [path] = paths.as_slice() {
                            self.remember_recent(crate::viewer::prefs::Recent::Folder { path: path.clone() })
                        }
                    }
                    Launch::Demo => {}
                }
                self.open(launch)
            }
            AppCommand::OpenRecent(recent) => self.open_recent(recent),
            AppCommand::OpenAnnotations(path) => self.open_annotations(&path),
            AppCommand::Dialog(request) => self.show_dialog(request),
            AppCommand::DialogChosen { purpose, path } => {
                if matches!(self.prompt, Some(Prompt::Path { .. })) {
                    self.prompt = None;
                }
                self.on_path_chosen(purpose, path);
            }
            AppCommand::ImportSr(path) => self.import_sr(&path),
            AppCommand::SendFindings => self.send_findings(),
            AppCommand::SetPacsUrl(url) => self.set_pacs_url(url),
            AppCommand::Pacs(command) => self.run_pacs(command),
            AppCommand::Timeline(command) => self.run_timeline(command),
            AppCommand::Save => {
                self.save();
            }
            AppCommand::SaveTo(path) => {
                self.save_to(&path);
            }
            AppCommand::Export { format, path } => {
                if !self.writes_over_open_images(&path) {
                    match annotation::export::export(&self.doc, format, &path, false) {
                        Ok(()) => self.status = format!("exported {}", path.display()),
                        Err(e) => self.prompt = Some(Prompt::Error(e.to_string())),
                    }
                }
            }
            AppCommand::SetDocumentPath(path) => self.doc_path = Some(path),
            AppCommand::Undo => self.undo(),
            AppCommand::Redo => self.redo(),
            AppCommand::Edit(command) => self.apply(*command),
            AppCommand::Select(id) => self.selected = id,
            AppCommand::Reveal(id) => self.select_and_reveal(&id),
            AppCommand::Decide(status) => self.set_status_of_selected(status),
            AppCommand::DecideByThreshold { above } => self.decide_by_threshold(above),
            AppCommand::Step { forward } => self.step_selection(forward),
            AppCommand::DeleteSelected => self.delete_selected(),
            AppCommand::Relabel { finding, label } => {
                self.selected = Some(finding);
                self.relabel_selected(&label);
            }
            AppCommand::FindChanges => self.find_changes(),
            AppCommand::FindInOther => self.find_in_other(),
            AppCommand::CancelGrounding => {
                self.jobs.cancel_grounding();
                self.status = "cancelled".into();
            }
            AppCommand::SetMeasuring(on) => self.set_measure_tool(on.then_some(crate::annotation::measurement::Shape::Line)),
            AppCommand::SetMeasureTool(tool) => self.set_measure_tool(tool),
            AppCommand::ClearMeasurements => self.clear_measurements(),
            AppCommand::SetDrawing(on) => {
                self.drawing = on;
                if on {
                    self.measuring = None;
                }
                self.status = if on { "draw a box: drag on an image (Esc cancels)".into() } else { "drawing off".into() };
            }
            AppCommand::CommitDrag(drag) => self.commit_drag(drag),
            AppCommand::SetThreshold(t) => {
                self.threshold = t.clamp(0.0, 1.0);
                self.drop_hidden_selection();
            }
            AppCommand::SetShowRejected(on) => {
                self.show_rejected = on;
                self.drop_hidden_selection();
            }
            AppCommand::SetSync(sync) => self.sync = sync,
            AppCommand::SetViewMode(mode) => {
                self.view_mode = mode;
                if mode != super::ViewMode::SideBySide && self.pane(Role::Prior).series().is_none() {
                    self.status = format!("{} needs a prior and a current image", mode.label());
                }
            }
            AppCommand::SetFade(t) => self.fade = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.5 },
            AppCommand::SetFlickerHz(hz) => self.flicker_hz = if hz.is_finite() { hz.clamp(0.25, 10.0) } else { 2.0 },
            AppCommand::Compare(command) => self.run_compare(command),
            AppCommand::ApplyPreset(preset) if self.grid.is_some() => self.grid_preset(preset),
            AppCommand::ApplyPreset(preset) => self.apply_preset(preset),
            AppCommand::SetInvert { role, on } => self.pane_mut(role).invert = on,
            AppCommand::SetWindow { role, window } => {
                let pane = self.pane_mut(role);
                pane.window = window;
                pane.use_voi_lut = false;
            }
            AppCommand::StepFrame(delta) if self.grid.is_some() => self.grid_step(delta),
            AppCommand::StepFrame(delta) => {
                let role = self.active_role();
                self.pane_mut(role).step_frame(delta);
                self.sync_from(role, crate::viewer::pane::PaneChanges { frame_delta: delta, ..Default::default() });
            }
            AppCommand::SetCine { playing, fps } => self.cine.set(playing, fps),
            AppCommand::Mirror { role, changes } => self.sync_from(role, changes),
            AppCommand::ResetViews if self.grid.is_some() => self.grid_reset(),
            AppCommand::ResetViews => self.panes.iter_mut().for_each(|p| p.reset()),
            AppCommand::SwapPriorCurrent => self.swap_prior_current(),
            AppCommand::Escape => self.escape(),
            AppCommand::SetPrompt(prompt) => {
                // Closing the prompt without choosing a path (or dismissing an error) calls off a
                // quit that waited for the save.
                if prompt.is_none() {
                    self.quit_after_save = false;
                }
                self.prompt = prompt;
            }
            AppCommand::Recover { document, doc_path } => {
                self.doc = *document;
                self.history.reset();
                // Recovered work is unsaved work.
                self.history.mark_unsaved();
                self.doc_path = Some(doc_path);
                self.prompt = None;
            }
            AppCommand::DiscardRecovery(recovery) => {
                if let Err(e) = std::fs::remove_file(&recovery)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    self.status = format!("could not remove the recovery file: {e}");
                }
                self.prompt = None;
            }
            AppCommand::Quit => self.viewport.push(egui::ViewportCommand::Close),
            AppCommand::QuitSaving => {
                self.prompt = None;
                if self.default_doc_path().is_some() {
                    if self.save() {
                        self.allow_close = true;
                        self.viewport.push(egui::ViewportCommand::Close);
                    }
                } else {
                    // Nowhere to save yet: the dialog (or the path prompt where none opens) asks,
                    // and the app quits once the annotations are saved there.
                    self.quit_after_save = true;
                    self.show_dialog(DialogRequest::SaveAnnotationsAs);
                }
            }
            AppCommand::QuitDiscarding => {
                self.prompt = None;
                self.allow_close = true;
                if let Some(p) = self.default_doc_path() {
                    annotation::io::discard_recovery(&p);
                }
                self.viewport.push(egui::ViewportCommand::Close);
            }
            AppCommand::SetCpuRendering(on) => self.cpu_rendering = on,
        }
    }

    fn escape(&mut self) {
        if self.drag.is_some() {
            self.drag = None;
            self.status = "cancelled".into();
        } else if self.drawing || self.measuring.is_some() {
            self.drawing = false;
            self.measuring = None;
        } else if self.jobs.grounding.is_some() {
            self.jobs.cancel_grounding();
            self.status = "cancelled".into();
        } else {
            self.selected = None;
        }
    }

    // ----- opening ---------------------------------------------------------------------------

    fn open(&mut self, launch: Launch) {
        self.timeline = None;
        match launch {
            Launch::Demo => match crate::viewer::demo::demo_pair() {
                Ok(pair) => {
                    for (role, series) in [(Role::Prior, pair.prior), (Role::Current, pair.current)] {
                        self.set_series(role, series, None);
                        self.pane_mut(role).note = Some(crate::viewer::demo::DEMO_NOTE.into());
                    }
                    self.status = format!("{} — press F to find changes", crate::viewer::demo::DEMO_NOTE);
                }
                Err(e) => self.status = format!("demo unavailable: {e}"),
            },
            Launch::Pair(prior, current) => {
                self.open_path(Role::Prior, prior);
                self.open_path(Role::Current, current);
            }
            // Three studies or more open as a timeline; two hang as prior and current.
            Launch::Folder(folder) => self.open_timeline(vec![folder]),
            Launch::Timeline(folders) => self.open_timeline(folders),
        }
    }

    /// Loads a file or folder into one pane in the background.
    fn open_path(&mut self, role: Role, path: PathBuf) {
        // A file of its own in a pane leaves the timeline: the panes no longer show its timepoints.
        self.timeline = None;
        let cell = progress_cell();
        let pane = self.pane_mut(role);
        pane.set_loading(path.display().to_string(), cell.clone());
        pane.note = None;
        let control = Arc::new(LoadControl::default());
        pane.attach_loader(control.clone());
        let stamp = Stamp(vec![(pane.id, pane.generation)]);
        let id = pane.id;
        self.sources[role_slot(role)] = Some(StudySource::Path(path.clone()));
        self.jobs.load(id, stamp, path, cell, control);
    }

    /// Slows every later progressive load by `ms` a file after the first, so that a test (or a
    /// demo) can watch a series arrive.
    pub fn set_load_pace(&mut self, ms: u64) {
        self.jobs.load_pace_ms = ms;
    }

    fn set_series(&mut self, role: Role, series: Series, source: Option<StudySource>) {
        if source.is_some() {
            self.sources[role_slot(role)] = source;
        }
        self.pane_mut(role).set_series(Arc::new(series));
        self.series_changed();
    }

    /// What follows a new series in a pane: registration, document images, the sidecar.
    fn series_changed(&mut self) {
        self.registration = None;
        self.refresh_document_images();
        if self.panes.iter().all(|p| p.series().is_some()) && self.doc.findings.is_empty() {
            self.open_sidecar_if_any();
        }
    }

    /// Hangs the current study as prior and the prior as current.
    fn swap_prior_current(&mut self) {
        if let Some(why) = self.swap_blocked() {
            self.status = format!("cannot swap: {why}");
            return;
        }
        if let Some([prior, current]) = self.timeline.as_ref().map(|t| t.hung) {
            self.run_timeline(super::TimelineCommand::HangPair { prior: current, current: prior });
            return;
        }
        let (Some(p), Some(c)) = (self.pane(Role::Prior).series().cloned(), self.pane(Role::Current).series().cloned()) else { return };
        let notes = [self.pane_mut(Role::Prior).note.take(), self.pane_mut(Role::Current).note.take()];
        self.pane_mut(Role::Prior).set_series(c);
        self.pane_mut(Role::Current).set_series(p);
        self.pane_mut(Role::Prior).note = notes[1].clone();
        self.pane_mut(Role::Current).note = notes[0].clone();
        self.sources.swap(0, 1);
        self.registration = None;
        // The sidecar belongs beside the current study, which is now the other one.
        if !self.history.is_dirty() {
            self.doc_path = None;
        }
        self.refresh_document_images();
        self.open_sidecar_if_any();
        self.status = "swapped: the older study is now the prior".into();
    }

    /// Keeps the document's image list in step with what the panes show (every timepoint of a
    /// timeline).
    pub(super) fn refresh_document_images(&mut self) {
        if let Some(t) = &self.timeline {
            self.doc.images = t.points.iter().map(|p| p.image.clone()).collect();
            return;
        }
        let mut images = Vec::new();
        for role in [Role::Prior, Role::Current] {
            if let Some(series) = self.pane(role).series() {
                images.push(ImageRef::from_series(role.image_key(), series));
            }
        }
        self.doc.images = images;
    }

    pub(super) fn open_sidecar_if_any(&mut self) {
        let Some(path) = self.default_doc_path() else { return };
        if let Some((recovery, document)) = annotation::io::pending_recovery(&path) {
            self.prompt = Some(Prompt::Recover { recovery, document: Box::new(document), doc_path: path.clone() });
        }
        if path.is_file() {
            self.open_annotations(&path);
        }
    }

    fn open_annotations(&mut self, path: &Path) {
        match annotation::io::load(path) {
            Ok(doc) => {
                let n = doc.findings.len();
                let images = std::mem::take(&mut self.doc.images);
                self.doc = doc;
                if self.doc.images.is_empty() {
                    self.doc.images = images;
                }
                self.history.reset();
                self.doc_path = Some(path.to_path_buf());
                self.selected = None;
                self.status = format!("opened {n} finding(s) from {}", path.display());
            }
            Err(e) => self.prompt = Some(Prompt::Error(e.to_string())),
        }
    }

    // ----- dialogs ---------------------------------------------------------------------------

    fn show_dialog(&mut self, request: DialogRequest) {
        let (purpose, suggested) = match request {
            DialogRequest::OpenStudy(role) => (DialogPurpose::Open(role), None),
            DialogRequest::OpenFolder => (DialogPurpose::OpenFolder, None),
            DialogRequest::OpenAnnotations => (DialogPurpose::OpenAnnotations, None),
            DialogRequest::SaveAnnotationsAs => (DialogPurpose::SaveAnnotations, self.default_doc_path()),
            DialogRequest::Export(format) => (DialogPurpose::Export(format), None),
            DialogRequest::ImportSr => (DialogPurpose::ImportSr, None),
        };
        self.dialogs.show(DialogSpec { purpose, suggested });
    }

    /// A dialog ended: a chosen path is used, a cancel changes nothing, and a dialog that could
    /// not open says so and asks for the path in the app.
    pub(super) fn on_dialog(&mut self, spec: DialogSpec, picked: Picked) {
        match picked {
            Picked::Chosen(path) => self.on_path_chosen(spec.purpose, path),
            Picked::Cancelled => self.quit_after_save = false,
            Picked::Unavailable(why) => {
                self.status = format!("{}: {why}; type the path instead", spec.purpose.title());
                let text = spec.suggested.map(|p| p.display().to_string()).unwrap_or_default();
                self.prompt = Some(Prompt::Path { purpose: spec.purpose, text, why });
            }
        }
    }

    fn on_path_chosen(&mut self, purpose: DialogPurpose, path: PathBuf) {
        let command = match purpose {
            DialogPurpose::Open(role) => AppCommand::Open { role, path },
            DialogPurpose::OpenFolder => AppCommand::Launch(Launch::Folder(path)),
            DialogPurpose::OpenAnnotations => AppCommand::OpenAnnotations(path),
            DialogPurpose::SaveAnnotations => AppCommand::SaveTo(path),
            DialogPurpose::Export(format) => AppCommand::Export { format, path },
            DialogPurpose::ImportSr => AppCommand::ImportSr(path),
        };
        self.run(command);
    }

    // ----- saving ----------------------------------------------------------------------------

    fn save(&mut self) -> bool {
        match self.default_doc_path() {
            Some(path) => self.save_to(&path),
            None => {
                self.show_dialog(DialogRequest::SaveAnnotationsAs);
                false
            }
        }
    }

    /// Refuses (with a visible message) a save or export that would write over one of the open
    /// images; the native dialogs have already asked about replacing any other file.
    fn writes_over_open_images(&mut self, path: &Path) -> bool {
        let images: Vec<PathBuf> = self
            .sources
            .iter()
            .flatten()
            .filter_map(StudySource::path)
            .map(Path::to_path_buf)
            .chain(self.doc.images.iter().map(|i| PathBuf::from(&i.path)))
            .collect();
        let inputs: Vec<&Path> = images.iter().map(PathBuf::as_path).collect();
        match crate::fsutil::check_output(path, &inputs, true) {
            Ok(()) => false,
            Err(e) => {
                self.prompt = Some(Prompt::Error(format!("not saved: {e}")));
                true
            }
        }
    }

    fn save_to(&mut self, path: &Path) -> bool {
        if self.writes_over_open_images(path) {
            self.quit_after_save = false;
            return false;
        }
        match annotation::io::save(&self.doc, path) {
            Ok(()) => {
                annotation::io::discard_recovery(path);
                self.history.mark_saved();
                self.doc_path = Some(path.to_path_buf());
                self.status = format!("saved {} finding(s) to {}", self.doc.findings.len(), path.display());
                if std::mem::take(&mut self.quit_after_save) {
                    self.allow_close = true;
                    self.viewport.push(egui::ViewportCommand::Close);
                }
                true
            }
            Err(e) => {
                self.quit_after_save = false;
                self.prompt = Some(Prompt::Error(e.to_string()));
                false
            }
        }
    }

    pub(super) fn autosave(&mut self) {
        if !self.history.is_dirty() || self.last_autosave.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_autosave = Instant::now();
        if let Some(path) = self.default_doc_path()
            && let Err(e) = annotation::io::write_recovery(&self.doc, &path)
        {
            log::warn!("autosave failed: {e}");
        }
    }

    // ----- editing ---------------------------------------------------------------------------

    pub(super) fn apply(&mut self, command: Command) {
        self.status = command.description();
        self.history.apply(&mut self.doc, command);
    }

    /// Replaces the selected finding with `edit` applied (one undo step).
    fn edit_selected(&mut self, action: &str, edit: impl FnOnce(&mut Finding)) {
        let Some(before) = self.selected.as_deref().and_then(|id| self.doc.finding(id)).cloned() else {
            self.status = "select a finding first (click a box, or N/P)".into();
            return;
        };
        let mut after = before.clone();
        edit(&mut after);
        after.touch(&annotation::document::now(), action, None);
        let description = format!("{action} {}", before.label);
        self.apply(Command::Replace { before, after, description });
    }

    /// Accepts or rejects the selected finding, then moves on to the next undecided one, so that
    /// a run of A/R/N keys never lands on a finding that was already decided.
    fn set_status_of_selected(&mut self, status: Status) {
        let action = if status == Status::Accepted { "accept" } else { "reject" };
        let Some(decided) = self.selected.clone() else {
            self.status = "select a finding first (click a box, or N/P)".into();
            return;
        };
        self.edit_selected(action, |f| f.status = status);
        let done = self.status.clone();
        match self.next_undecided(Some(&decided), true) {
            Some(id) => self.select_and_reveal(&id),
            None => {
                self.selected = None;
                self.status = format!("{done} — all findings reviewed");
            }
        }
    }

    /// A proposal nobody has accepted or rejected yet, shown at the current threshold.
    fn is_undecided(&self, f: &Finding) -> bool {
        f.status == Status::Proposed && self.visible(f)
    }

    /// The undecided finding after (or before) `from` in list order, wrapping; `from` itself only
    /// when it is the one left. `from` may be decided or gone: the search starts where it was.
    fn next_undecided(&self, from: Option<&str>, forward: bool) -> Option<String> {
        // In the findings list's order (by slice on a multi-slice current image).
        let list = self.list_order();
        let findings: Vec<&Finding> = list.iter().map(|&i| &self.doc.findings[i]).collect();
        let n = findings.len();
        if n == 0 {
            return None;
        }
        let at = from.and_then(|id| findings.iter().position(|f| f.id == id));
        let order: Vec<usize> = match (at, forward) {
            (Some(i), true) => (1..=n).map(|k| (i + k) % n).collect(),
            (Some(i), false) => (1..=n).map(|k| (i + n - k) % n).collect(),
            (None, true) => (0..n).collect(),
            (None, false) => (0..n).rev().collect(),
        };
        order.into_iter().map(|i| findings[i]).find(|f| self.is_undecided(f)).map(|f| f.id.clone())
    }

    /// The findings a threshold bulk action would decide: undecided proposals with a score at or
    /// above the threshold (`above`), or below it.
    pub fn bulk_candidates(&self, above: bool) -> Vec<usize> {
        let t = self.threshold;
        (0..self.doc.findings.len())
            .filter(|&i| {
                let f = &self.doc.findings[i];
                f.status == Status::Proposed && f.score().is_some_and(|s| if above { s >= t } else { s < t })
            })
            .collect()
    }

    /// Accepts every proposal scored at or above the threshold, or rejects every one below it
    /// (hidden ones included: that is what the threshold hid them for), as one undo step.
    fn decide_by_threshold(&mut self, above: bool) {
        let indices = self.bulk_candidates(above);
        let (status, action) = if above { (Status::Accepted, "accept") } else { (Status::Rejected, "reject") };
        if indices.is_empty() {
            self.status = format!("no proposal to {action} {} {:.2}", if above { "at or above" } else { "below" }, self.threshold);
            return;
        }
        let now = annotation::document::now();
        let commands: Vec<Command> = indices
            .iter()
            .map(|&i| {
                let before = self.doc.findings[i].clone();
                let mut after = before.clone();
                after.status = status;
                after.touch(&now, action, Some(format!("bulk, threshold {:.2}", self.threshold)));
                Command::Replace { description: format!("{action} {}", before.label), before, after }
            })
            .collect();
        let description = format!("{action} {} proposal(s) {} {:.2}", commands.len(), if above { "≥" } else { "<" }, self.threshold);
        self.apply(Command::Group { commands, description });
        self.drop_hidden_selection();
    }

    fn delete_selected(&mut self) {
        let Some(id) = self.selected.take() else { return };
        if let Some(index) = self.doc.index_of(&id) {
            let finding = self.doc.findings[index].clone();
            self.apply(Command::Remove { index, finding });
        }
    }

    fn relabel_selected(&mut self, label: &str) {
        let label = label.trim().to_string();
        if label.is_empty() {
            return;
        }
        self.edit_selected("relabel", |f| f.label = label.clone());
    }

    fn undo(&mut self) {
        self.status = match self.history.undo(&mut self.doc) {
            Some(d) => format!("undid: {d}"),
            None => "nothing to undo".into(),
        };
        self.drop_hidden_selection();
    }

    fn redo(&mut self) {
        self.status = match self.history.redo(&mut self.doc) {
            Some(d) => format!("redid: {d}"),
            None => "nothing to redo".into(),
        };
        self.drop_hidden_selection();
    }

    /// A selection the reader cannot see would take the next A or R: drop it when its finding is
    /// gone or hidden (rejected, under the threshold).
    pub(super) fn drop_hidden_selection(&mut self) {
        if self.selected.as_deref().is_some_and(|id| !self.doc.finding(id).is_some_and(|f| self.visible(f))) {
            self.selected = None;
        }
    }

    /// Selects the next (or previous) undecided finding, wrapping, and pans both panes to it.
    /// Decided findings are skipped: they are reached by a click, never by a key sequence.
    fn step_selection(&mut self, forward: bool) {
        match self.next_undecided(self.selected.as_deref(), forward) {
            Some(id) => self.select_and_reveal(&id),
            None => {
                self.selected = None;
                self.status = if self.doc.findings.is_empty() { "no findings".into() } else { "all findings reviewed".into() };
            }
        }
    }

    pub(super) fn select_and_reveal(&mut self, id: &str) {
        self.selected = Some(id.to_string());
        let Some(f) = self.doc.finding(id).cloned() else { return };
        for role in [Role::Prior, Role::Current] {
            // A whole-series finding is revealed on its peak slice.
            let Some(b) = self.reveal_box(&f, role) else { continue };
            let pane = self.pane_mut(role);
            pane.set_frame(b.frame as usize);
            if let Some(v) = pane.view.as_mut() {
                let (cx, cy) = b.rect().centre();
                v.center = egui::Vec2::new(cx, cy);
            }
        }
    }

    fn apply_preset(&mut self, preset: Preset) {
        let roles: Vec<Role> = if self.sync.window { vec![Role::Prior, Role::Current] } else { vec![self.active_role()] };
        let mut kept_own = Vec::new();
        for r in roles {
            if self.pane_mut(r).apply_preset(preset) != preset {
                kept_own.push(r.label());
            }
        }
        // A CT window on an MR or SEG pane would grey it out: that pane took its own auto instead.
        if !kept_own.is_empty() {
            self.status = format!("{} is for CT only; the {} pane uses its own auto window", preset.label(), kept_own.join(" and "));
        }
    }

    fn commit_drag(&mut self, drag: Drag) {
        let now = annotation::document::now();
        match drag {
            Drag::Edit { finding, role, handle, start, current, .. } => {
                if current == start {
                    return;
                }
                let Some(before) = self.doc.finding(&finding).cloned() else { return };
                let mut after = before.clone();
                let id = self.image_key(role);
                // Only the box on the frame shown: a whole-series finding has one on each slice.
                let frame = self.pane(role).frame as u32;
                for b in after.boxes.iter_mut().filter(|b| b.image == id && b.frame == frame) {
                    b.bbox = annotation::document::round_box(current).to_array();
                }
                // A ruler's ends follow its box, and a measurement is measured again where it is now.
                self.remeasure(&mut after, role, start);
                // A tracked finding's sizes follow its boxes.
                if let Some(track) = &after.track {
                    let spacing = |key: &str| self.spacing_of(key);
                    after.track = Some(track.remeasured(&after, &spacing));
                }
                let action = if handle == Handle::Move { "move" } else { "resize" };
                after.touch(&now, action, Some(format!("{id}: {:?}", after.box_at(&id, frame).map(|b| b.bbox))));
                let description = format!("{action} {}", before.label);
                self.apply(Command::Replace { before, after, description });
            }
            Drag::Measure { role, shape, start, current } => self.commit_measure(role, shape, start, current),
            Drag::Draw { role, start, current } => {
                let b = BBox::new(start.x, start.y, current.x, current.y);
                let Some(frame) = self.pane(role).current_frame() else { return };
                let b = b.clamp_to(frame.width as f32, frame.height as f32);
                if b.width() < 3.0 || b.height() < 3.0 {
                    self.status = "box too small; drag to draw".into();
                    return;
                }
                let boxes = vec![ImageBox::new(&self.image_key(role), self.pane(role).frame as u32, b)];
                let f = Finding::new(FindingKind::Manual, "finding", boxes, Source::Human { user: std::env::var("USER").ok() }, &now);
                let fid = f.id.clone();
                self.apply(Command::Add { findings: vec![f], description: "draw box".into() });
                self.selected = Some(fid);
                self.drawing = false;
            }
        }
    }

    // ----- grounding -------------------------------------------------------------------------

    fn find_changes(&mut self) {
        let Some(engine) = self.engine.clone() else {
            self.status = "the grounder is still starting".into();
            return;
        };
        if self.jobs.grounding.is_some() {
            return;
        }
        let (Some(p), Some(c)) = (self.pane(Role::Prior).current_frame(), self.pane(Role::Current).current_frame()) else {
            self.status = match self.arriving_note() {
                // Half a series would give half the findings, silently: wait for the rest.
                Some(note) => format!("Find changes waits: {note}"),
                None => "open a prior and a current image first".into(),
            };
            return;
        };
        if self.finds_whole_series() {
            self.find_series_changes(engine);
            return;
        }
        let frames = (self.pane(Role::Prior).frame as u32, self.pane(Role::Current).frame as u32);
        let (pg, cg) = match (p.try_gray(), c.try_gray()) {
            (Ok(pg), Ok(cg)) => (pg, cg),
            (Err(e), _) | (_, Err(e)) => {
                self.status = format!("Find changes: a shown slice cannot be read: {e}");
                return;
            }
        };
        self.jobs.find_changes(self.stamp_all(), engine, pg, cg, frames);
        self.status = "finding changes…".into();
    }

    /// Why no feature may use the panes yet: a series still arriving in one of them.
    pub(super) fn arriving_note(&self) -> Option<String> {
        self.panes.iter().find_map(|p| p.arriving_note())
    }

    /// Locates the selected finding's box from the pane it is on into the other pane.
    fn find_in_other(&mut self) {
        let Some(engine) = self.engine.clone() else { return };
        if let Some(note) = self.arriving_note() {
            self.status = format!("Find in the other image waits: {note}");
            return;
        }
        let Some(f) = self.selected.as_deref().and_then(|id| self.doc.finding(id)).cloned() else {
            self.status = "select a box first".into();
            return;
        };
        let active = self.active_role();
        let from = if f.box_on(&self.image_key(active)).is_some() {
            active
        } else if f.box_on(&self.image_key(Role::Current)).is_some() {
            Role::Current
        } else {
            Role::Prior
        };
        let to = from.other();
        let key = self.image_key(from);
        let Some(b) = f.box_at(&key, self.pane(from).frame as u32).or_else(|| f.box_on(&key)).cloned() else { return };
        let (Some(src), Some(dst)) = (self.pane(from).series().and_then(|s| s.frames.get(b.frame as usize)), self.pane(to).current_frame())
        else {
            return;
        };
        let (sx, sy) = (dst.width as f32 / src.width as f32, dst.height as f32 / src.height as f32);
        let (Some(ms), Some(mt)) = (self.pane(from).series(), self.pane(to).series()) else { return };
        let hint = crate::grounding::hints::between(&ms.meta, &mt.meta, b.rect(), (sx, sy), dst.width.max(dst.height) as f32);
        let frames = (b.frame, self.pane(to).frame as u32);
        let (rg, tg) = match (src.try_gray(), dst.try_gray()) {
            (Ok(rg), Ok(tg)) => (rg, tg),
            (Err(e), _) | (_, Err(e)) => {
                self.status = format!("Find in the other image: a slice cannot be read: {e}");
                return;
            }
        };
        self.jobs.locate(self.stamp_all(), engine, from, rg, b.rect(), tg, hint, frames);
    }

    fn on_grounded(&mut self, kind: GroundKind, proposals: Vec<crate::grounding::Proposal>, millis: f64, frames: (u32, u32)) {
        let now = annotation::document::now();
        let (prior, current) = (self.image_key(Role::Prior), self.image_key(Role::Current));
        let (prior, current) = (prior.as_str(), current.as_str());
        let findings = match kind {
            GroundKind::Changes => Document::proposals_to_findings(&proposals, (current, frames.1), (prior, frames.0), &now),
            GroundKind::Locate { from } => {
                let (target, reference) =
                    if from == Role::Prior { ((current, frames.1), (prior, frames.0)) } else { ((prior, frames.1), (current, frames.0)) };
                Document::proposals_to_findings(&proposals, target, reference, &now)
            }
        };
        let n = findings.len();
        let source = proposals.first().map(|p| p.source.clone()).unwrap_or_default();
        if n == 0 {
            self.status = format!("no boxes found ({millis:.0} ms)");
            return;
        }
        // The best shown proposal is selected: one under the minimum score would take the next A or R unseen.
        let first = findings.iter().find(|f| self.visible(f)).map(|f| f.id.clone());
        let hidden = findings.iter().filter(|f| !self.visible(f)).count();
        self.apply(Command::Add { findings, description: format!("{source}: {n} proposal(s)") });
        let hidden = if hidden > 0 { format!(" ({hidden} under the minimum score {:.2}, hidden)", self.threshold) } else { String::new() };
        self.status = format!("{n} proposal(s) by {source} in {millis:.0} ms{hidden} — A accept, R reject, N/P next/previous");
        self.selected = first;
    }

    // ----- jobs ------------------------------------------------------------------------------

    /// Applies what finished in the background. A result whose images have since changed (another
    /// file opened into the pane, the pair swapped) is dropped: it would land on images it was
    /// not computed from. Only the job's own bookkeeping (busy flags) is cleared.
    pub(super) fn poll_jobs(&mut self) {
        for (stamp, result) in self.jobs.drain() {
            match &result {
                // The series it delivered completed (a new generation) before this came: not stale.
                JobResult::LoadDelivered => continue,
                JobResult::Grounded { .. } => self.jobs.grounding = None,
                JobResult::Timeline(r) => self.timeline_job_ended(r),
                JobResult::Registered { .. } => self.jobs.registering = false,
                JobResult::Compared(work) => self.compare_job_ended(work),
                JobResult::Failed { .. } => {
                    self.jobs.grounding = None;
                    self.jobs.registering = false;
                }
                _ => {}
            }
            if !self.is_current(&stamp) {
                let what = match &result {
                    JobResult::Loaded { .. } | JobResult::Arrived { .. } | JobResult::Hung { .. } => "an older load",
                    JobResult::Timeline(_) => "a timeline result for the previous images",
                    JobResult::Grounded { .. } => "grounding of the previous images",
                    JobResult::Registered { .. } => "registration of the previous images",
                    JobResult::Compared(_) => "a comparison picture of the previous images",
                    JobResult::Failed { .. } | JobResult::EngineReady(_) => "a result for the previous images",
                    // PACS jobs are stamped with no pane, so they are always current.
                    _ => "a PACS answer",
                };
                log::info!("dropped {what}: the images changed while it ran");
                if matches!(result, JobResult::Grounded { .. }) {
                    self.status = "dropped the grounder's answer: the images changed while it ran (press F again)".into();
                }
                continue;
            }
            self.on_job(result);
        }
    }

    fn on_job(&mut self, result: JobResult) {
        match result {
            JobResult::Loaded { pane, source, result } => {
                let Some(role) = self.panes.get(pane.0).map(|p| p.role) else { return };
                match result {
                    Ok(series) => {
                        self.status = format!("{}: {}", role.label(), series.describe());
                        self.set_series(role, series, Some(StudySource::Path(PathBuf::from(source))));
                    }
                    Err(e) => {
                        self.status = format!("{} failed: {e}", role.label());
                        self.pane_mut(role).set_failed(source, e.to_string());
                    }
                }
            }
            JobResult::Arrived { pane, source, arrival } => self.on_arrival(pane, source, *arrival),
            JobResult::LoadDelivered => {}
            JobResult::Hung { source, result } => match result {
                Ok((prior, current)) => {
                    self.status = format!("prior {} — current {}", prior.describe(), current.describe());
                    self.set_series(Role::Prior, prior, None);
                    self.set_series(Role::Current, current, None);
                }
                Err(e) => {
                    for role in [Role::Prior, Role::Current] {
                        self.pane_mut(role).set_failed(source.clone(), e.to_string());
                    }
                }
            },
            JobResult::EngineReady(engine) => {
                self.jobs.engine_loading = false;
                self.engine = Some(engine);
            }
            JobResult::Grounded { kind, proposals, millis, frames } => self.on_grounded(kind, proposals, millis, frames),
            JobResult::Registered { alignment } if alignment.score < UNRELATED_NCC_FLOOR => {
                // Unrelated images reach this much; mapping positions through it would put the
                // other pane somewhere arbitrary. Sync stays by relative position.
                self.sync.registered = false;
                self.status =
                    format!("registration failed (NCC {:.2} < {UNRELATED_NCC_FLOOR:.2}): sync stays by relative position", alignment.score);
            }
            JobResult::Registered { alignment } => {
                self.status = format!(
                    "registered (NCC {:.2}, rotation {:.1}°, scale {:.3})",
                    alignment.score,
                    alignment.fixed_from_moving.angle().to_degrees(),
                    alignment.fixed_from_moving.mean_scale()
                );
                self.registration = Some((alignment, self.stamp_all()));
            }
            JobResult::Failed { what, error } => self.status = format!("{what}: {error}"),
            JobResult::Compared(work) => self.on_compared(*work),
            JobResult::Timeline(result) => self.on_timeline_job(result),
            pacs => self.on_pacs_job(pacs),
        }
    }

    /// A file (or the plan) of a series loading progressively: shown as it comes; once complete
    /// it is the pane's series for everything else.
    fn on_arrival(&mut self, pane: PaneId, source: String, arrival: Arrival) {
        let Some(role) = self.panes.get(pane.0).map(|p| p.role) else { return };
        match arrival {
            Arrival::Planned(series) => {
                self.status = format!("{}: loading {} slices, the shown one first", role.label(), series.total());
                self.pane_mut(role).set_arriving(source, series);
            }
            Arrival::File { file, frames } => match self.pane_mut(role).add_arrived(file, frames) {
                Some(Ok(())) => {
                    if let Some(s) = self.pane(role).series() {
                        self.status = format!("{}: {}", role.label(), s.describe());
                    }
                    self.sources[role_slot(role)] = Some(StudySource::Path(PathBuf::from(source)));
                    self.series_changed();
                }
                Some(Err(e)) => self.status = format!("{} failed: {e}", role.label()),
                None => {}
            },
        }
    }

    pub(super) fn ensure_registration(&mut self) {
        if !self.sync.registered || self.jobs.registering || self.current_registration().is_some() {
            return;
        }
        if let Some(issue) = self.pairing_issues().into_iter().find(PairingIssue::is_other_patient) {
            // NCC alone does not tell two patients apart (two heads in MR reach 0.77).
            self.sync.registered = false;
            self.status = format!("By registration refused: {}", issue.describe());
            return;
        }
        let (Some(p), Some(c)) = (self.pane(Role::Prior).current_frame(), self.pane(Role::Current).current_frame()) else { return };
        let (pg, cg) = match (p.try_gray(), c.try_gray()) {
            (Ok(pg), Ok(cg)) => (pg, cg),
            (Err(e), _) | (_, Err(e)) => {
                self.status = format!("By registration: a shown slice cannot be read: {e}");
                return;
            }
        };
        self.jobs.register(self.stamp_all(), pg, cg);
    }

    /// The registration between the shown series, if it was made on them.
    pub(super) fn current_registration(&self) -> Option<&crate::registration::Alignment> {
        self.registration.as_ref().filter(|(_, stamp)| self.is_current(stamp)).map(|(a, _)| a)
    }

    pub(super) fn update_title(&mut self) {
        let name = self
            .source_path(Role::Current)
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .or_else(|| self.pane(Role::Current).note.clone())
            .unwrap_or_else(|| "no study".into());
        let title = format!("{}Tandem — {name}", if self.history.is_dirty() { "● " } else { "" });
        if title != self.title {
            self.viewport.push(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }
}
