//! The application state and `eframe::App`: panes, sync, the annotation document and its
//! history, background jobs, and the per-frame flow (poll jobs → input → layout → paint).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui::{self, Color32, Key, Modifiers, Pos2, Rect, Sense, Vec2};

use crate::annotation::{self, Command, Document, Finding, FindingKind, History, ImageBox, ImageRef, Source, Status};
use crate::grounding::{BBox, DevicePreference, Engine};
use crate::registration::{Alignment, UNRELATED_NCC_FLOOR};
use crate::study::pairing::{self, PairingIssue};
use crate::study::{Series, Window};
use crate::viewer::Launch;
use crate::viewer::dialogs::{DialogPurpose, Dialogs};
use crate::viewer::jobs::{GroundKind, JobResult, Jobs, progress_cell};
use crate::viewer::overlay::{self, Handle, OverlayState};
use crate::viewer::pane::{Pane, PaneChanges, Preset, Role, View};

/// Which actions mirror from one pane to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    pub scroll: bool,
    pub zoom_pan: bool,
    pub window: bool,
    /// Map positions through the registration transform instead of relative position.
    pub registered: bool,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings { scroll: true, zoom_pan: true, window: true, registered: false }
    }
}

/// A box being moved, resized or drawn (committed as one undo step on release).
#[derive(Clone, Debug)]
pub enum Drag {
    Edit { finding: String, role: Role, handle: Handle, start: BBox, grab: Pos2, current: BBox },
    Draw { role: Role, start: Pos2, current: Pos2 },
}

/// A question the app is asking in a modal.
#[derive(Clone, Debug)]
pub enum Prompt {
    UnsavedOnQuit,
    Recover { recovery: PathBuf, document: Box<Document>, doc_path: PathBuf },
    Relabel { finding: String, text: String },
    Error(String),
}

pub struct App {
    pub panes: [Pane; 2],
    pub sync: SyncSettings,
    pub registration: Option<(Alignment, (u64, u64))>,
    pub engine: Option<Arc<Engine>>,
    pub jobs: Jobs,
    pub doc: Document,
    pub history: History,
    pub doc_path: Option<PathBuf>,
    pub selected: Option<String>,
    pub hovered: Option<String>,
    pub drawing: bool,
    pub drag: Option<Drag>,
    pub show_rejected: bool,
    pub threshold: f32,
    pub status: String,
    pub prompt: Option<Prompt>,
    pub dialogs: Dialogs,
    /// The pane keyboard actions apply to (last hovered).
    pub active: Role,
    /// Window/level on the CPU even when a GPU renderer exists (benchmarks compare the paths).
    pub cpu_rendering: bool,
    allow_close: bool,
    title: String,
    last_autosave: Instant,
    pub(crate) thumbnails: std::collections::HashMap<String, (u64, egui::TextureHandle)>,
    /// Study paths, for the default sidecar location.
    sources: [Option<PathBuf>; 2],
}

pub fn image_id(role: Role) -> &'static str {
    role.label()
}

impl App {
    /// The app as eframe creates it; the grounder's device comes from `TANDEM_DEVICE`.
    pub fn new(cc: &eframe::CreationContext<'_>, launch: Launch, annotations: Option<PathBuf>) -> Self {
        Self::with_device(cc, launch, annotations, DevicePreference::from_env())
    }

    /// The app with an explicit grounder device (UI tests use the CPU).
    pub fn with_device(cc: &eframe::CreationContext<'_>, launch: Launch, annotations: Option<PathBuf>, device: DevicePreference) -> Self {
        if let Some(rs) = cc.wgpu_render_state.as_ref() {
            let renderer = crate::viewer::gpu::ImageRenderer::new(&rs.device, rs.target_format);
            rs.renderer.write().callback_resources.insert(renderer);
        }
        cc.egui_ctx.options_mut(|o| o.zoom_with_keyboard = false);
        let mut app = App::empty(cc.egui_ctx.clone());
        app.jobs.start_engine(device);
        app.open(launch);
        if let Some(p) = annotations {
            app.open_annotations(&p);
        }
        app
    }

    fn empty(ctx: egui::Context) -> Self {
        App {
            panes: [Pane::new(Role::Prior), Pane::new(Role::Current)],
            sync: SyncSettings::default(),
            registration: None,
            engine: None,
            jobs: Jobs::new(ctx),
            doc: Document::default(),
            history: History::default(),
            doc_path: None,
            selected: None,
            hovered: None,
            drawing: false,
            drag: None,
            show_rejected: false,
            threshold: 0.0,
            status: "Ready".into(),
            prompt: None,
            dialogs: Dialogs::default(),
            active: Role::Current,
            cpu_rendering: false,
            allow_close: false,
            title: String::new(),
            last_autosave: Instant::now(),
            thumbnails: Default::default(),
            sources: [None, None],
        }
    }

    pub fn pane(&self, role: Role) -> &Pane {
        &self.panes[role.index()]
    }

    pub fn pane_mut(&mut self, role: Role) -> &mut Pane {
        &mut self.panes[role.index()]
    }

    /// True while anything runs in the background (tests wait on this).
    pub fn is_busy(&self) -> bool {
        self.panes.iter().any(|p| p.is_loading()) || self.jobs.grounding.is_some() || self.jobs.engine_loading || self.jobs.registering
    }

    // ----- opening ---------------------------------------------------------------------------

    pub fn open(&mut self, launch: Launch) {
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
            Launch::Folder(folder) => {
                for role in [Role::Prior, Role::Current] {
                    let cell = progress_cell();
                    self.pane_mut(role).set_loading(folder.display().to_string(), cell.clone());
                    if role == Role::Current {
                        self.jobs.hang(folder.clone(), cell);
                    }
                }
                self.sources = [Some(folder.clone()), Some(folder)];
            }
        }
    }

    /// Loads a file or folder into one pane in the background.
    pub fn open_path(&mut self, role: Role, path: PathBuf) {
        let cell = progress_cell();
        self.pane_mut(role).set_loading(path.display().to_string(), cell.clone());
        self.pane_mut(role).note = None;
        self.sources[role.index()] = Some(path.clone());
        self.jobs.load(role, path, cell);
    }

    fn set_series(&mut self, role: Role, series: Series, source: Option<PathBuf>) {
        if source.is_some() {
            self.sources[role.index()] = source;
        }
        self.pane_mut(role).set_series(Arc::new(series));
        self.registration = None;
        self.refresh_document_images();
        if self.panes.iter().all(|p| p.series().is_some()) && self.doc.findings.is_empty() {
            self.open_sidecar_if_any();
        }
    }

    /// What a reader must know about the hung pair before comparing it (empty until both panes
    /// show an image, and again whenever one of them changes).
    pub fn pairing_issues(&self) -> Vec<PairingIssue> {
        match (self.pane(Role::Prior).series(), self.pane(Role::Current).series()) {
            (Some(p), Some(c)) => pairing::check(&p.meta, &c.meta),
            _ => Vec::new(),
        }
    }

    /// Why prior and current cannot be swapped now, if they cannot: findings are keyed by
    /// "prior"/"current", so swapping under them would move every box onto the other image.
    pub fn swap_blocked(&self) -> Option<&'static str> {
        if self.pane(Role::Prior).series().is_none() || self.pane(Role::Current).series().is_none() {
            Some("both panes need an image")
        } else if !self.doc.findings.is_empty() {
            Some("the annotations refer to prior and current as they are; close or clear them first")
        } else {
            None
        }
    }

    /// Hangs the current study as prior and the prior as current.
    pub fn swap_prior_current(&mut self) {
        if let Some(why) = self.swap_blocked() {
            self.status = format!("cannot swap: {why}");
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

    /// Keeps the document's image list in step with what the panes show.
    fn refresh_document_images(&mut self) {
        let mut images = Vec::new();
        for role in [Role::Prior, Role::Current] {
            if let Some(series) = self.pane(role).series() {
                images.push(ImageRef::from_series(image_id(role), series));
            }
        }
        self.doc.images = images;
    }

    /// Where Ctrl+S saves by default: beside the current study.
    pub fn default_doc_path(&self) -> Option<PathBuf> {
        self.doc_path.clone().or_else(|| self.sources[1].as_deref().map(annotation::io::sidecar_for))
    }

    fn open_sidecar_if_any(&mut self) {
        let Some(path) = self.default_doc_path() else { return };
        if let Some((recovery, document)) = annotation::io::pending_recovery(&path) {
            self.prompt = Some(Prompt::Recover { recovery, document: Box::new(document), doc_path: path.clone() });
        }
        if path.is_file() {
            self.open_annotations(&path);
        }
    }

    pub fn open_annotations(&mut self, path: &Path) {
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

    // ----- saving ----------------------------------------------------------------------------

    pub fn save(&mut self) -> bool {
        match self.default_doc_path() {
            Some(path) => self.save_to(&path),
            None => {
                self.dialogs.save_annotations(None);
                false
            }
        }
    }

    /// Refuses (with a visible message) a save or export that would write over one of the open
    /// images; the native dialogs have already asked about replacing any other file.
    fn writes_over_open_images(&mut self, path: &Path) -> bool {
        let images: Vec<PathBuf> =
            self.sources.iter().flatten().cloned().chain(self.doc.images.iter().map(|i| PathBuf::from(&i.path))).collect();
        let inputs: Vec<&Path> = images.iter().map(PathBuf::as_path).collect();
        match crate::fsutil::check_output(path, &inputs, true) {
            Ok(()) => false,
            Err(e) => {
                self.prompt = Some(Prompt::Error(format!("not saved: {e}")));
                true
            }
        }
    }

    pub fn save_to(&mut self, path: &Path) -> bool {
        if self.writes_over_open_images(path) {
            return false;
        }
        match annotation::io::save(&self.doc, path) {
            Ok(()) => {
                annotation::io::discard_recovery(path);
                self.history.mark_saved();
                self.doc_path = Some(path.to_path_buf());
                self.status = format!("saved {} finding(s) to {}", self.doc.findings.len(), path.display());
                true
            }
            Err(e) => {
                self.prompt = Some(Prompt::Error(e.to_string()));
                false
            }
        }
    }

    fn autosave(&mut self) {
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

    pub fn visible(&self, f: &Finding) -> bool {
        (f.status != Status::Rejected || self.show_rejected) && (f.status != Status::Proposed || f.score().unwrap_or(1.0) >= self.threshold)
    }

    pub fn apply(&mut self, command: Command) {
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
        self.apply(Command::Replace { before, after, description: format!("{action} {}", self_label(&self.doc, &self.selected)) });
    }

    /// Accepts or rejects the selected finding, then moves on to the next undecided one, so that
    /// a run of A/R/N keys never lands on a finding that was already decided.
    pub fn set_status_of_selected(&mut self, status: Status) {
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
        let findings = &self.doc.findings;
        let n = findings.len();
        if n == 0 {
            return None;
        }
        let at = from.and_then(|id| self.doc.index_of(id));
        let order: Vec<usize> = match (at, forward) {
            (Some(i), true) => (1..=n).map(|k| (i + k) % n).collect(),
            (Some(i), false) => (1..=n).map(|k| (i + n - k) % n).collect(),
            (None, true) => (0..n).collect(),
            (None, false) => (0..n).rev().collect(),
        };
        order.into_iter().map(|i| &findings[i]).find(|f| self.is_undecided(f)).map(|f| f.id.clone())
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
    pub fn decide_by_threshold(&mut self, above: bool) {
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

    pub fn delete_selected(&mut self) {
        let Some(id) = self.selected.take() else { return };
        if let Some(index) = self.doc.index_of(&id) {
            let finding = self.doc.findings[index].clone();
            self.apply(Command::Remove { index, finding });
        }
    }

    pub fn relabel_selected(&mut self, label: &str) {
        let label = label.trim().to_string();
        if label.is_empty() {
            return;
        }
        self.edit_selected("relabel", |f| f.label = label.clone());
    }

    pub fn undo(&mut self) {
        self.status = match self.history.undo(&mut self.doc) {
            Some(d) => format!("undid: {d}"),
            None => "nothing to undo".into(),
        };
        self.drop_hidden_selection();
    }

    pub fn redo(&mut self) {
        self.status = match self.history.redo(&mut self.doc) {
            Some(d) => format!("redid: {d}"),
            None => "nothing to redo".into(),
        };
        self.drop_hidden_selection();
    }

    /// A selection the reader cannot see would take the next A or R: drop it when its finding is
    /// gone or hidden (rejected, under the threshold).
    fn drop_hidden_selection(&mut self) {
        if self.selected.as_deref().is_some_and(|id| !self.doc.finding(id).is_some_and(|f| self.visible(f))) {
            self.selected = None;
        }
    }

    /// Visible findings in list order.
    pub fn visible_ids(&self) -> Vec<String> {
        self.doc.findings.iter().filter(|f| self.visible(f)).map(|f| f.id.clone()).collect()
    }

    /// Selects the next (or previous) undecided finding, wrapping, and pans both panes to it.
    /// Decided findings are skipped: they are reached by a click, never by a key sequence.
    pub fn step_selection(&mut self, forward: bool) {
        match self.next_undecided(self.selected.as_deref(), forward) {
            Some(id) => self.select_and_reveal(&id),
            None => {
                self.selected = None;
                self.status = if self.doc.findings.is_empty() { "no findings".into() } else { "all findings reviewed".into() };
            }
        }
    }

    pub fn select_and_reveal(&mut self, id: &str) {
        self.selected = Some(id.to_string());
        let Some(f) = self.doc.finding(id).cloned() else { return };
        for role in [Role::Prior, Role::Current] {
            let Some(b) = f.box_on(image_id(role)) else { continue };
            let pane = self.pane_mut(role);
            pane.set_frame(b.frame as usize);
            if let Some(v) = pane.view.as_mut() {
                let (cx, cy) = b.rect().centre();
                v.center = Vec2::new(cx, cy);
            }
        }
    }

    // ----- grounding -------------------------------------------------------------------------

    pub fn find_changes(&mut self) {
        let Some(engine) = self.engine.clone() else {
            self.status = "the grounder is still starting".into();
            return;
        };
        if self.jobs.grounding.is_some() {
            return;
        }
        let (Some(p), Some(c)) = (self.pane(Role::Prior).current_frame(), self.pane(Role::Current).current_frame()) else {
            self.status = "open a prior and a current image first".into();
            return;
        };
        let frames = (self.pane(Role::Prior).frame as u32, self.pane(Role::Current).frame as u32);
        let (pg, cg) = (p.to_gray(), c.to_gray());
        self.jobs.find_changes(engine, pg, cg, frames);
        self.status = "finding changes…".into();
    }

    /// Locates the selected finding's box from the pane it is on into the other pane.
    pub fn find_in_other(&mut self) {
        let Some(engine) = self.engine.clone() else { return };
        let Some(f) = self.selected.as_deref().and_then(|id| self.doc.finding(id)).cloned() else {
            self.status = "select a box first".into();
            return;
        };
        let from = if f.box_on(image_id(self.active)).is_some() {
            self.active
        } else if f.box_on("current").is_some() {
            Role::Current
        } else {
            Role::Prior
        };
        let to = other(from);
        let Some(b) = f.box_on(image_id(from)).cloned() else { return };
        let (Some(src), Some(dst)) = (self.pane(from).series().and_then(|s| s.frames.get(b.frame as usize)), self.pane(to).current_frame())
        else {
            return;
        };
        let (sx, sy) = (dst.width as f32 / src.width as f32, dst.height as f32 / src.height as f32);
        let (Some(ms), Some(mt)) = (self.pane(from).series(), self.pane(to).series()) else { return };
        let hint = crate::grounding::hints::between(&ms.meta, &mt.meta, b.rect(), (sx, sy), dst.width.max(dst.height) as f32);
        let frames = (b.frame, self.pane(to).frame as u32);
        let (rg, tg) = (src.to_gray(), dst.to_gray());
        self.jobs.locate(engine, from, rg, b.rect(), tg, hint, frames);
    }

    fn on_grounded(&mut self, kind: GroundKind, proposals: Vec<crate::grounding::Proposal>, millis: f64, frames: (u32, u32)) {
        self.jobs.grounding = None;
        let now = annotation::document::now();
        let findings = match kind {
            GroundKind::Changes => Document::proposals_to_findings(&proposals, ("current", frames.1), ("prior", frames.0), &now),
            GroundKind::Locate { from } => {
                let (target, reference) = if from == Role::Prior {
                    (("current", frames.1), ("prior", frames.0))
                } else {
                    (("prior", frames.1), ("current", frames.0))
                };
                Document::proposals_to_findings(&proposals, target, reference, &now)
            }
        };
        let n = findings.len();
        let source = proposals.first().map(|p| p.source.clone()).unwrap_or_default();
        if n == 0 {
            self.status = format!("no boxes found ({millis:.0} ms)");
            return;
        }
        let first = findings[0].id.clone();
        self.apply(Command::Add { findings, description: format!("{source}: {n} proposal(s)") });
        self.status = format!("{n} proposal(s) by {source} in {millis:.0} ms — A accept, R reject, N/P next/previous");
        self.selected = Some(first);
    }

    // ----- jobs ------------------------------------------------------------------------------

    fn poll_jobs(&mut self) {
        for result in self.jobs.drain() {
            match result {
                JobResult::Loaded { role, source, result } => match result {
                    Ok(series) => {
                        self.status = format!("{}: {}", role.label(), series.describe());
                        self.set_series(role, series, Some(PathBuf::from(source)));
                    }
                    Err(e) => {
                        self.status = format!("{} failed: {e}", role.label());
                        self.pane_mut(role).set_failed(source, e.to_string());
                    }
                },
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
                JobResult::Registered { alignment, generations } if alignment.score < UNRELATED_NCC_FLOOR => {
                    self.jobs.registering = false;
                    if generations == self.generations() {
                        // Unrelated images reach this much; mapping positions through it would
                        // put the other pane somewhere arbitrary. Sync stays by relative position.
                        self.sync.registered = false;
                        self.status = format!(
                            "registration failed (NCC {:.2} < {UNRELATED_NCC_FLOOR:.2}): sync stays by relative position",
                            alignment.score
                        );
                    }
                }
                JobResult::Registered { alignment, generations } => {
                    self.jobs.registering = false;
                    self.status = format!(
                        "registered (NCC {:.2}, rotation {:.1}°, scale {:.3})",
                        alignment.score,
                        alignment.fixed_from_moving.angle().to_degrees(),
                        alignment.fixed_from_moving.mean_scale()
                    );
                    self.registration = Some((alignment, generations));
                }
                JobResult::Failed { what, error } => {
                    self.jobs.grounding = None;
                    self.jobs.registering = false;
                    self.status = format!("{what}: {error}");
                }
            }
        }
    }

    fn generations(&self) -> (u64, u64) {
        (self.panes[0].generation, self.panes[1].generation)
    }

    /// The registration between the shown series, if current.
    fn current_registration(&self) -> Option<&Alignment> {
        self.registration.as_ref().filter(|(_, g)| *g == self.generations()).map(|(a, _)| a)
    }

    fn ensure_registration(&mut self) {
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
        let (pg, cg) = (p.to_gray(), c.to_gray());
        let g = self.generations();
        self.jobs.register(pg, cg, g);
    }

    // ----- sync ------------------------------------------------------------------------------

    /// Mirrors one pane's changes onto the other as the sync toggles say.
    pub fn sync_from(&mut self, from: Role, changes: PaneChanges) {
        let to = other(from);
        if self.pane(to).series().is_none() {
            return;
        }
        if let Some((before, after)) = changes.window
            && self.sync.window
        {
            let src_default = self.pane(from).current_frame().map(|f| f.default_window.width).unwrap_or(1.0);
            let dst = self.pane_mut(to);
            let dst_default = dst.current_frame().map(|f| f.default_window.width).unwrap_or(1.0);
            let ratio = dst_default / src_default.max(1e-6);
            dst.window = Window {
                center: dst.window.center + (after.center - before.center) * ratio,
                width: (dst.window.width * after.width / before.width.max(1e-6)).max(1e-3),
            };
            dst.use_voi_lut = false;
        }
        if changes.frame_delta != 0 && self.sync.scroll {
            let (n_from, f_from) = (self.pane(from).frame_count(), self.pane(from).frame);
            let dst = self.pane_mut(to);
            let n_to = dst.frame_count();
            if n_to > 1 && n_from > 1 {
                let t = f_from as f32 / (n_from - 1) as f32;
                dst.set_frame((t * (n_to - 1) as f32).round() as usize);
            }
        }
        if changes.view && self.sync.zoom_pan {
            self.sync_view(from);
        }
    }

    fn sync_view(&mut self, from: Role) {
        let to = other(from);
        let (Some(src_view), Some(src)) = (self.pane(from).view, self.pane(from).current_frame().map(|f| (f.width, f.height))) else {
            return;
        };
        let src_rect = self.pane(from).rect;
        let registration = if self.sync.registered { self.current_registration().map(|a| a.fixed_from_moving) } else { None };
        let dst_rect = self.pane(to).rect;
        let Some(dst) = self.pane(to).current_frame().map(|f| (f.width, f.height)) else { return };
        let view = match registration {
            // prior = T(current)
            Some(t) => {
                let map = if from == Role::Current { Some(t) } else { t.inverse() };
                let Some(map) = map else { return };
                let (cx, cy) = map.apply(src_view.center.x as f64 - 0.5, src_view.center.y as f64 - 0.5);
                View { zoom: src_view.zoom / map.mean_scale() as f32, center: Vec2::new(cx as f32 + 0.5, cy as f32 + 0.5) }
            }
            None => {
                let rel = src_view.zoom / View::fit(src_rect, src.0, src.1).zoom;
                let fit = View::fit(dst_rect, dst.0, dst.1).zoom;
                View {
                    zoom: rel * fit,
                    center: Vec2::new(src_view.center.x / src.0 as f32 * dst.0 as f32, src_view.center.y / src.1 as f32 * dst.1 as f32),
                }
            }
        };
        self.pane_mut(to).view = Some(view);
    }
}

pub fn other(role: Role) -> Role {
    match role {
        Role::Prior => Role::Current,
        Role::Current => Role::Prior,
    }
}

fn self_label(doc: &Document, selected: &Option<String>) -> String {
    selected.as_deref().and_then(|id| doc.finding(id)).map(|f| f.label.clone()).unwrap_or_default()
}

// ----- per-frame UI --------------------------------------------------------------------------

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.poll_jobs();
        for (purpose, path) in self.dialogs.poll() {
            self.on_dialog(purpose, path);
        }
        self.ensure_registration();
        self.drop_hidden_selection();
        self.handle_dropped_files(ui);
        if self.prompt.is_none() && !ui.ctx().egui_wants_keyboard_input() {
            self.handle_keys(ui);
        }
        self.update_title(ui);
        self.handle_close(ui);
        self.autosave();
        crate::viewer::panels::menu_bar(self, ui);
        crate::viewer::panels::status_bar(self, ui);
        crate::viewer::panels::side_panel(self, ui);
        crate::viewer::panels::findings_panel(self, ui);
        crate::viewer::panels::pairing_banner(self, ui);
        egui::CentralPanel::default().frame(egui::Frame::NONE.fill(Color32::from_gray(20))).show(ui, |ui| {
            self.panes_ui(ui, frame);
        });
        crate::viewer::panels::prompts(self, ui);
        if self.is_busy() {
            ui.ctx().request_repaint_after(Duration::from_millis(100));
        }
    }
}

impl App {
    fn on_dialog(&mut self, purpose: DialogPurpose, path: PathBuf) {
        match purpose {
            DialogPurpose::Open(role) => self.open_path(role, path),
            DialogPurpose::OpenFolder => self.open(Launch::Folder(path)),
            DialogPurpose::OpenAnnotations => self.open_annotations(&path),
            DialogPurpose::SaveAnnotations => {
                self.save_to(&path);
            }
            DialogPurpose::Export(_) if self.writes_over_open_images(&path) => {}
            DialogPurpose::Export(format) => match crate::annotation::export::export(&self.doc, format, &path, false) {
                Ok(()) => self.status = format!("exported {}", path.display()),
                Err(e) => self.prompt = Some(Prompt::Error(e.to_string())),
            },
        }
    }

    fn update_title(&mut self, ui: &egui::Ui) {
        let name = self.sources[1]
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .or_else(|| self.pane(Role::Current).note.clone())
            .unwrap_or_else(|| "no study".into());
        let title = format!("{}Tandem — {name}", if self.history.is_dirty() { "● " } else { "" });
        if title != self.title {
            ui.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title = title;
        }
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    fn handle_close(&mut self, ui: &egui::Ui) {
        if ui.input(|i| i.viewport().close_requested()) && self.history.is_dirty() && !self.allow_close {
            ui.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.prompt = Some(Prompt::UnsavedOnQuit);
        }
    }

    /// Quit without saving (after the user confirmed).
    pub fn quit_discarding(&mut self, ui: &egui::Ui) {
        self.allow_close = true;
        if let Some(p) = self.default_doc_path() {
            annotation::io::discard_recovery(&p);
        }
        ui.send_viewport_cmd(egui::ViewportCommand::Close);
    }

    pub fn quit_saving(&mut self, ui: &egui::Ui) {
        if self.save() {
            self.allow_close = true;
            ui.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    fn handle_dropped_files(&mut self, ui: &egui::Ui) {
        let (dropped, pointer) =
            ui.input(|i| (i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).collect::<Vec<_>>(), i.pointer.latest_pos()));
        let Some(first) = dropped.first().cloned() else { return };
        if first.extension().is_some_and(|e| e == "json") {
            self.open_annotations(&first);
            return;
        }
        let role =
            pointer.and_then(|p| [Role::Prior, Role::Current].into_iter().find(|r| self.pane(*r).rect.contains(p))).unwrap_or(self.active);
        self.open_path(role, first);
        if let Some(second) = dropped.get(1) {
            self.open_path(other(role), second.clone());
        }
    }

    fn handle_keys(&mut self, ui: &egui::Ui) {
        let cmd = |k: Key| ui.input_mut(|i| i.consume_key(Modifiers::COMMAND, k));
        let cmd_shift = |k: Key| ui.input_mut(|i| i.consume_key(Modifiers::COMMAND | Modifiers::SHIFT, k));
        if cmd_shift(Key::Z) || cmd(Key::Y) {
            self.redo();
        } else if cmd(Key::Z) {
            self.undo();
        }
        if cmd(Key::S) {
            self.save();
        }
        if cmd(Key::O) {
            self.dialogs.open_study(Role::Current);
        }
        let pressed = |k: Key| ui.input(|i| i.key_pressed(k) && !i.modifiers.command && !i.modifiers.alt);
        let active = self.active;
        if pressed(Key::Escape) {
            if self.drag.is_some() {
                self.drag = None;
                self.status = "cancelled".into();
            } else if self.drawing {
                self.drawing = false;
            } else if self.jobs.grounding.is_some() {
                self.jobs.cancel_grounding();
                self.status = "cancelled".into();
            } else {
                self.selected = None;
            }
        }
        if pressed(Key::F) {
            self.find_changes();
        }
        if pressed(Key::G) {
            self.find_in_other();
        }
        if pressed(Key::A) {
            self.set_status_of_selected(Status::Accepted);
        }
        if pressed(Key::R) {
            self.set_status_of_selected(Status::Rejected);
        }
        if pressed(Key::Delete) || pressed(Key::Backspace) {
            self.delete_selected();
        }
        if pressed(Key::N) {
            self.step_selection(true);
        }
        if pressed(Key::P) {
            self.step_selection(false);
        }
        if pressed(Key::B) {
            self.drawing = !self.drawing;
            self.status = if self.drawing { "draw a box: drag on an image (Esc cancels)".into() } else { "drawing off".into() };
        }
        if pressed(Key::L)
            && let Some(id) = self.selected.clone()
        {
            let text = self.doc.finding(&id).map(|f| f.label.clone()).unwrap_or_default();
            self.prompt = Some(Prompt::Relabel { finding: id, text });
        }
        if pressed(Key::I) {
            let p = self.pane_mut(active);
            p.invert = !p.invert;
        }
        if pressed(Key::Home) {
            for p in &mut self.panes {
                p.reset();
            }
        }
        let presets = [
            (Key::Num1, Preset::Auto),
            (Key::Num2, Preset::Lung),
            (Key::Num3, Preset::Mediastinum),
            (Key::Num4, Preset::Bone),
            (Key::Num5, Preset::Brain),
        ];
        for (k, preset) in presets {
            if pressed(k) {
                self.apply_preset(preset);
            }
        }
        let mut delta = 0;
        for (k, d) in
            [(Key::ArrowUp, -1), (Key::ArrowLeft, -1), (Key::ArrowDown, 1), (Key::ArrowRight, 1), (Key::PageUp, -10), (Key::PageDown, 10)]
        {
            if ui.input(|i| i.key_pressed(k)) {
                delta += d;
            }
        }
        if delta != 0 {
            self.pane_mut(active).step_frame(delta);
            self.sync_from(active, PaneChanges { frame_delta: delta, ..Default::default() });
        }
    }

    pub fn apply_preset(&mut self, preset: Preset) {
        let roles: Vec<Role> = if self.sync.window { vec![Role::Prior, Role::Current] } else { vec![self.active] };
        for r in roles {
            self.pane_mut(r).apply_preset(preset);
        }
    }

    fn panes_ui(&mut self, ui: &mut egui::Ui, frame: &eframe::Frame) {
        let full = ui.max_rect();
        let gap = 3.0;
        let half = (full.width() - gap) / 2.0;
        let rects = [
            Rect::from_min_size(full.min, Vec2::new(half, full.height())),
            Rect::from_min_size(full.min + Vec2::new(half + gap, 0.0), Vec2::new(half, full.height())),
        ];
        let render_state = if self.cpu_rendering { None } else { frame.wgpu_render_state() };
        self.hovered = None;
        for role in [Role::Prior, Role::Current] {
            let rect = rects[role.index()];
            let response = ui.allocate_rect(rect, Sense::click_and_drag()).on_hover_cursor(if self.drawing {
                egui::CursorIcon::Crosshair
            } else {
                egui::CursorIcon::Default
            });
            let response = response.accessible_name(format!("{} pane", role.label()));
            self.panes[role.index()].rect = rect;
            if response.hovered() {
                self.active = role;
            }
            let changes = self.pane_interaction(ui, role, &response);
            if changes.window.is_some() || changes.view || changes.frame_delta != 0 {
                self.sync_from(role, changes);
            }
        }
        for role in [Role::Prior, Role::Current] {
            let rect = rects[role.index()];
            self.panes[role.index()].paint(ui, rect, render_state);
            let painter = ui.painter_at(rect);
            let visible = |f: &Finding| self.visible(f);
            let preview = match &self.drag {
                Some(Drag::Edit { finding, role: r, current, .. }) if *r == role => Some((finding.as_str(), *current)),
                Some(Drag::Draw { role: r, start, current }) if *r == role => Some(("", BBox::new(start.x, start.y, current.x, current.y))),
                _ => None,
            };
            let pane = &self.panes[role.index()];
            let st = OverlayState {
                image_id: image_id(role),
                frame: pane.frame as u32,
                selected: self.selected.as_deref(),
                hovered: self.hovered.as_deref(),
                preview,
            };
            overlay::draw(&painter, pane, &self.doc, &visible, &st);
            pane.paint_corners(&painter, rect);
            if self.active == role {
                painter.rect_stroke(
                    rect.shrink(0.5),
                    0.0,
                    egui::Stroke::new(1.0, Color32::from_rgb(70, 110, 170)),
                    egui::StrokeKind::Inside,
                );
            }
        }
    }

    /// Tools first (select, move, resize, draw), then the pane's own navigation.
    fn pane_interaction(&mut self, ui: &egui::Ui, role: Role, response: &egui::Response) -> PaneChanges {
        let id = image_id(role);
        let frame = self.pane(role).frame as u32;
        let pointer = response.hover_pos().or(response.interact_pointer_pos());
        let hit = pointer.and_then(|p| {
            let visible = |f: &Finding| self.visible(f);
            overlay::hit(self.pane(role), &self.doc, &visible, id, frame, self.selected.as_deref(), p)
        });
        if let Some((fid, _)) = &hit {
            self.hovered = Some(fid.clone());
        }
        let view = self.pane(role).view;
        let rect = response.rect;
        let to_image = |p: Pos2| view.map(|v| v.image_from_screen(rect, p));
        // Start of a primary drag: edit a box, draw one, or fall through to panning.
        if response.drag_started_by(egui::PointerButton::Primary) && self.drag.is_none() {
            let press = ui.input(|i| i.pointer.press_origin()).or(pointer);
            if let Some(p) = press.and_then(to_image) {
                if self.drawing {
                    self.drag = Some(Drag::Draw { role, start: p, current: p });
                } else if let Some((fid, handle)) = press.and_then(|pp| {
                    let visible = |f: &Finding| self.visible(f);
                    overlay::hit(self.pane(role), &self.doc, &visible, id, frame, self.selected.as_deref(), pp)
                }) && let Some(b) = self.doc.finding(&fid).and_then(|f| f.box_on(id)).map(|b| b.rect())
                {
                    self.selected = Some(fid.clone());
                    self.drag = Some(Drag::Edit { finding: fid, role, handle, start: b, grab: p, current: b });
                }
            }
        }
        let mut editing = false;
        if let Some(drag) = &mut self.drag {
            editing = true;
            if let Some(p) = pointer.and_then(to_image) {
                match drag {
                    Drag::Edit { role: r, handle, start, grab, current, .. } if *r == role => *current = handle.drag(start, p - *grab),
                    Drag::Draw { role: r, current, .. } if *r == role => *current = p,
                    _ => {}
                }
            }
            if response.drag_stopped_by(egui::PointerButton::Primary) {
                let done = self.drag.take();
                self.commit_drag(done);
            }
        }
        if response.clicked_by(egui::PointerButton::Primary) && !self.drawing {
            self.selected = hit.map(|(fid, _)| fid);
        }
        let pan_with_primary = !editing && !self.drawing;
        self.pane_mut(role).handle_input(ui, response, pan_with_primary)
    }

    fn commit_drag(&mut self, drag: Option<Drag>) {
        let now = annotation::document::now();
        match drag {
            Some(Drag::Edit { finding, role, handle, start, current, .. }) => {
                if current == start {
                    return;
                }
                let Some(before) = self.doc.finding(&finding).cloned() else { return };
                let mut after = before.clone();
                let id = image_id(role);
                for b in after.boxes.iter_mut().filter(|b| b.image == id) {
                    b.bbox = annotation::document::round_box(current).to_array();
                }
                let action = if handle == Handle::Move { "move" } else { "resize" };
                after.touch(&now, action, Some(format!("{id}: {:?}", after.box_on(id).map(|b| b.bbox))));
                self.apply(Command::Replace { before, after, description: format!("{action} {}", finding_label(&self.doc, &finding)) });
            }
            Some(Drag::Draw { role, start, current }) => {
                let b = BBox::new(start.x, start.y, current.x, current.y);
                let Some(frame) = self.pane(role).current_frame() else { return };
                let b = b.clamp_to(frame.width as f32, frame.height as f32);
                if b.width() < 3.0 || b.height() < 3.0 {
                    self.status = "box too small; drag to draw".into();
                    return;
                }
                let boxes = vec![ImageBox::new(image_id(role), self.pane(role).frame as u32, b)];
                let f = Finding::new(FindingKind::Manual, "finding", boxes, Source::Human { user: std::env::var("USER").ok() }, &now);
                let fid = f.id.clone();
                self.apply(Command::Add { findings: vec![f], description: "draw box".into() });
                self.selected = Some(fid);
                self.drawing = false;
            }
            None => {}
        }
    }
}

fn finding_label(doc: &Document, id: &str) -> String {
    doc.finding(id).map(|f| f.label.clone()).unwrap_or_default()
}
