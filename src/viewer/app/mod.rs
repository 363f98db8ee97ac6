//! The application: its state, the `AppCommand`s that change it, and the per-frame flow
//! (poll jobs → input → panels and panes → apply the frame's commands).
//!
//! Split by job, as rerun's `re_viewer/src/app/` is: `logic` is the one place that changes the
//! state (it applies commands and job results), `input` turns keys, dropped files and pointer
//! gestures into commands, `ui` lays out the panels and panes and emits commands, and `sync`
//! mirrors one pane's navigation onto the other.

mod cine;
mod compare;
mod focus;
mod grid;
mod input;
mod logic;
mod measuring;
mod pacs;
mod plot;
mod remember;
mod sync;
mod timeline;
mod ui;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;

use crate::annotation::export::ExportFormat;
use crate::annotation::measurement::Shape;
use crate::annotation::{Command, Document, Finding, History, Status};
use crate::grounding::{BBox, DevicePreference, Engine};
use crate::registration::Alignment;
use crate::study::measure::{self, Length, Readout};
use crate::study::pairing::{self, PairingIssue};
use crate::study::{Source, Window};
use crate::viewer::Launch;
use crate::viewer::dialogs::{DialogPurpose, Dialogs};
use crate::viewer::jobs::{Jobs, Stamp};
use crate::viewer::overlay::Handle;
use crate::viewer::pane::{Pane, PaneChanges, PaneId, Preset, Role};

pub use compare::CompareCommand;
pub use grid::{Grid, GridPane, MAX_GRID};
pub use pacs::{ENV_PACS_URL, PacsCommand, PacsDialog};
pub use plot::{SizePlot, SizePoint};
pub use timeline::{Scanned, Timeline, TimelineCommand, TimelineResult, Timepoint, TrackedStep, slice_on};
pub use ui::KEYS;

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

/// How the two images are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewMode {
    SideBySide,
    /// The current pane alternates between the prior (resampled onto the current's grid, same
    /// window) and the current.
    Flicker,
    /// The current pane blends the resampled prior into the current.
    Fade,
    /// The current pane shows current − prior (registered when "By registration" is on) in a
    /// diverging colour map with its own symmetric window; boxes stay on the current's pixels.
    Subtraction,
}

impl ViewMode {
    pub const ALL: [ViewMode; 4] = [ViewMode::SideBySide, ViewMode::Flicker, ViewMode::Fade, ViewMode::Subtraction];

    pub fn label(self) -> &'static str {
        match self {
            ViewMode::SideBySide => "Side by side",
            ViewMode::Flicker => "Flicker",
            ViewMode::Fade => "Fade",
            ViewMode::Subtraction => "Subtraction",
        }
    }
}

/// A box being moved, resized or drawn (committed as one undo step on release).
#[derive(Clone, Debug)]
pub enum Drag {
    Edit {
        finding: String,
        role: Role,
        handle: Handle,
        start: BBox,
        grab: egui::Pos2,
        current: BBox,
    },
    Draw {
        role: Role,
        start: egui::Pos2,
        current: egui::Pos2,
    },
    /// A ruler or ROI being drawn (image points of the pane showing `role`): from `start` to
    /// `current`, a line or the ROI's box.
    Measure {
        role: Role,
        shape: Shape,
        start: egui::Pos2,
        current: egui::Pos2,
    },
}

/// A ruler of the document as a pane shows it (see `App::rulers`).
#[derive(Clone, Debug)]
pub struct Ruler {
    pub finding: String,
    pub role: Role,
    pub frame: usize,
    /// Image points (pixel-edge coordinates).
    pub a: egui::Pos2,
    pub b: egui::Pos2,
    pub length: Length,
}

/// A question the app is asking in a modal.
#[derive(Clone, Debug)]
pub enum Prompt {
    UnsavedOnQuit,
    Recover {
        recovery: PathBuf,
        document: Box<Document>,
        doc_path: PathBuf,
    },
    Relabel {
        finding: String,
        text: String,
    },
    Error(String),
    /// The file dialog could not open (`why`): the path is typed instead.
    Path {
        purpose: DialogPurpose,
        text: String,
        why: String,
    },
}

/// A native dialog a menu entry or key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogRequest {
    OpenStudy(Role),
    OpenFolder,
    OpenAnnotations,
    SaveAnnotationsAs,
    Export(ExportFormat),
    ImportSr,
}

/// Everything the panels, keys and tests may ask of the app. Nothing outside `logic` changes the
/// app's state; it emits one of these, and `App::run` applies it.
#[derive(Clone, Debug)]
pub enum AppCommand {
    /// Load a file or folder into the pane that shows `role`.
    Open {
        role: Role,
        path: PathBuf,
    },
    /// Replace both panes (the demo, a pair, a folder with two studies).
    Launch(Launch),
    OpenAnnotations(PathBuf),
    Dialog(DialogRequest),
    /// A path chosen for a dialog's purpose (by the dialog, or typed when it could not open).
    DialogChosen {
        purpose: DialogPurpose,
        path: PathBuf,
    },
    /// Save where Ctrl+S saves (asks for a path when there is none yet).
    Save,
    SaveTo(PathBuf),
    Export {
        format: ExportFormat,
        path: PathBuf,
    },
    /// Where the next plain save goes.
    SetDocumentPath(PathBuf),
    Undo,
    Redo,
    /// One annotation edit (one undo step); boxed, as a command may carry whole findings.
    Edit(Box<Command>),
    /// Select a finding (or nothing), as a click on a box does.
    Select(Option<String>),
    /// Select a finding and bring its boxes into view in both panes.
    Reveal(String),
    /// Accept or reject the selected finding, then move on to the next undecided one.
    Decide(Status),
    /// Accept every undecided proposal at or above the threshold, or reject every one below it.
    DecideByThreshold {
        above: bool,
    },
    /// Select the next (or previous) undecided finding.
    Step {
        forward: bool,
    },
    DeleteSelected,
    Relabel {
        finding: String,
        label: String,
    },
    FindChanges,
    FindInOther,
    CancelGrounding,
    SetDrawing(bool),
    /// The ruler tool: a drag on a pane lays a ruler.
    SetMeasuring(bool),
    /// A measuring tool (ruler, rectangle or ellipse ROI), or none: a drag on a pane measures.
    SetMeasureTool(Option<Shape>),
    /// Removes every measurement (rulers and ROIs) from the document, as one undo step.
    ClearMeasurements,
    /// Finish a box move, resize or drawing.
    CommitDrag(Drag),
    SetThreshold(f32),
    SetShowRejected(bool),
    SetSync(SyncSettings),
    SetViewMode(ViewMode),
    /// Fade position: 0 shows the prior, 1 the current.
    SetFade(f32),
    SetFlickerHz(f32),
    /// The comparison views' other settings (the subtraction window).
    Compare(CompareCommand),
    ApplyPreset(Preset),
    SetInvert {
        role: Role,
        on: bool,
    },
    /// A window for one pane, as a preset would set it (not mirrored).
    SetWindow {
        role: Role,
        window: Window,
    },
    /// Frames forward (or back) in the active pane, mirrored when scroll sync is on.
    StepFrame(i32),
    /// Plays (or pauses) the active pane's frames at `fps`.
    SetCine {
        playing: bool,
        fps: f32,
    },
    /// Mirror what input did to one pane onto the other, as the sync settings say.
    Mirror {
        role: Role,
        changes: PaneChanges,
    },
    ResetViews,
    SwapPriorCurrent,
    Escape,
    SetPrompt(Option<Prompt>),
    Recover {
        document: Box<Document>,
        doc_path: PathBuf,
    },
    DiscardRecovery(PathBuf),
    Quit,
    QuitSaving,
    QuitDiscarding,
    /// Window/level on the CPU even when a GPU renderer exists (benchmarks compare the paths).
    SetCpuRendering(bool),
    /// Import a DICOM SR's findings onto the open images (one undo step).
    ImportSr(PathBuf),
    /// Export the findings as a DICOM SR and store it on the PACS (in the background).
    SendFindings,
    /// Where "Send findings to PACS" stores the SR (`None`: nowhere; the entry is disabled).
    SetPacsUrl(Option<String>),
    /// The PACS dialog.
    Pacs(PacsCommand),
    /// Opens a study (or pair) of File → Open recent again.
    OpenRecent(crate::viewer::prefs::Recent),
    /// Timelines, whole-series change finding and tracking.
    Timeline(TimelineCommand),
}

pub struct App {
    /// Left to right; `PaneId(i)` is `panes[i]`.
    panes: Vec<Pane>,
    sync: SyncSettings,
    /// The registration between the shown images, with the stamp of the images it was made on.
    registration: Option<(Alignment, Stamp)>,
    engine: Option<Arc<Engine>>,
    jobs: Jobs,
    doc: Document,
    history: History,
    doc_path: Option<PathBuf>,
    selected: Option<String>,
    hovered: Option<String>,
    drawing: bool,
    /// The measuring tool on, if any.
    measuring: Option<Shape>,
    view_mode: ViewMode,
    /// Flicker, fade and subtraction: their jobs and the CPU fallback's pictures.
    compare: compare::CompareState,
    fade: f32,
    flicker_hz: f32,
    cine: cine::Cine,
    /// The image point under the pointer, in the pane showing that role.
    cursor: Option<(Role, egui::Pos2)>,
    drag: Option<Drag>,
    show_rejected: bool,
    threshold: f32,
    status: String,
    prompt: Option<Prompt>,
    dialogs: Dialogs,
    /// The pane keyboard actions apply to (last hovered).
    active: PaneId,
    cpu_rendering: bool,
    allow_close: bool,
    /// "Save and quit" is waiting for a path: quit once the annotations are saved.
    quit_after_save: bool,
    title: String,
    last_autosave: Instant,
    /// Finding thumbnails, cached by what they show; filled while the findings list is drawn.
    thumbnails: RefCell<HashMap<String, (u64, egui::TextureHandle)>>,
    /// The studies by role (prior, current), for the default sidecar location and the title.
    sources: [Option<Source>; 2],
    /// Commands emitted this frame, applied once the panels and panes are laid out.
    queued: Vec<AppCommand>,
    /// Window commands (close, title) sent at the end of the frame.
    viewport: Vec<egui::ViewportCommand>,
    /// Where "Send findings to PACS" stores the SR (`--pacs URL` or `TANDEM_PACS_URL`).
    pacs_url: Option<String>,
    pacs_dialog: PacsDialog,
    /// What is remembered between runs (`None`: nothing, as in tests).
    remembered: Option<remember::Remembered>,
    /// The patient's studies in time order, when a timeline is open.
    timeline: Option<Timeline>,
    /// "Find changes" runs through the whole series when both panes hold several slices.
    whole_series: bool,
    /// The size-over-time plot of the selected tracked finding is shown.
    show_plot: bool,
    /// The timeline grid, when it replaces the pair on screen.
    grid: Option<grid::Grid>,
}

/// The minimum score a proposal needs to be shown until the reader picks another (a remembered
/// one wins). Scores are Platt-calibrated probabilities that the box is right (IoU ≥ 0.5 with the
/// true change; models/README.md), so a proposal under 0.05 is wrong at least 19 times in 20: a
/// reader would check twenty such boxes to find one real change, and a box where nothing changed
/// (an identical pair, no-signal corner boxes score about 0.02) would look like a finding. The
/// floor follows from what the score means, not from a search over validation results; "Show all"
/// in the findings panel brings the hidden ones back.
pub const DEFAULT_MIN_SCORE: f32 = 0.05;

/// The labels relabelling always offers; the reader's own (`labels` in the preferences file) and
/// those already used in the document follow them, and free text is still allowed.
pub const DEFAULT_LABELS: [&str; 6] = ["change", "lesion", "nodule", "mass", "artifact", "normal variant"];

/// The document's key for the image a role shows.
pub fn image_id(role: Role) -> &'static str {
    role.image_key()
}

fn role_slot(role: Role) -> usize {
    match role {
        Role::Prior => 0,
        Role::Current => 1,
    }
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
        app.run(AppCommand::Launch(launch));
        if let Some(p) = annotations {
            app.run(AppCommand::OpenAnnotations(p));
        }
        app
    }

    /// The app with other file dialogs (tests; a machine without a dialog backend).
    pub fn with_dialogs(mut self, dialogs: Dialogs) -> Self {
        self.dialogs = dialogs;
        self
    }

    fn empty(ctx: egui::Context) -> Self {
        App {
            panes: vec![Pane::new(PaneId(0), Role::Prior), Pane::new(PaneId(1), Role::Current)],
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
            measuring: None,
            view_mode: ViewMode::SideBySide,
            compare: compare::CompareState::default(),
            fade: 0.5,
            flicker_hz: 2.0,
            cine: cine::Cine::default(),
            cursor: None,
            drag: None,
            show_rejected: false,
            threshold: DEFAULT_MIN_SCORE,
            status: "Ready".into(),
            prompt: None,
            dialogs: Dialogs::default(),
            active: PaneId(1),
            cpu_rendering: false,
            allow_close: false,
            quit_after_save: false,
            title: String::new(),
            last_autosave: Instant::now(),
            thumbnails: RefCell::default(),
            sources: [None, None],
            queued: Vec::new(),
            viewport: Vec::new(),
            pacs_url: None,
            pacs_dialog: PacsDialog::default(),
            remembered: None,
            timeline: None,
            whole_series: true,
            show_plot: true,
            grid: None,
        }
    }

    // ----- read access (tests, panels) -----------------------------------------------------

    fn pane_index(&self, role: Role) -> usize {
        // Both roles always have a pane; the fallback only keeps this total.
        self.panes.iter().position(|p| p.role == role).unwrap_or(0)
    }

    /// The pane that shows `role`.
    pub fn pane(&self, role: Role) -> &Pane {
        &self.panes[self.pane_index(role)]
    }

    fn pane_mut(&mut self, role: Role) -> &mut Pane {
        let i = self.pane_index(role);
        &mut self.panes[i]
    }

    pub fn panes(&self) -> &[Pane] {
        &self.panes
    }

    /// The role of the pane keyboard actions apply to.
    pub fn active_role(&self) -> Role {
        self.panes.get(self.active.0).map_or(Role::Current, |p| p.role)
    }

    pub fn sync(&self) -> SyncSettings {
        self.sync
    }

    pub fn doc(&self) -> &Document {
        &self.doc
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn selected(&self) -> Option<&str> {
        self.selected.as_deref()
    }

    pub fn status(&self) -> &str {
        &self.status
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    pub fn prompt(&self) -> Option<&Prompt> {
        self.prompt.as_ref()
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    /// True once the app has asked to close (after "Save and quit" saved, or "Quit without
    /// saving").
    pub fn is_closing(&self) -> bool {
        self.allow_close
    }

    pub fn view_mode(&self) -> ViewMode {
        self.view_mode
    }

    pub fn fade(&self) -> f32 {
        self.fade
    }

    /// How opaque the resampled prior is over the current pane at `time_secs` (0 in side by side
    /// and subtraction; flicker alternates 1 and 0 at the flicker rate; fade is 1 − fade).
    pub fn prior_opacity(&self, time_secs: f64) -> f32 {
        match self.view_mode {
            ViewMode::Flicker => {
                if (time_secs * 2.0 * self.flicker_hz as f64).floor() as i64 % 2 == 0 {
                    1.0
                } else {
                    0.0
                }
            }
            ViewMode::Fade => 1.0 - self.fade,
            ViewMode::SideBySide | ViewMode::Subtraction => 0.0,
        }
    }

    /// The measuring tool on, if any.
    pub fn measure_tool(&self) -> Option<Shape> {
        self.measuring
    }

    /// The pixel under the pointer in the pane showing `role`, or, when the pointer is over the
    /// other pane, at the synced position there (through the registration when sync uses it).
    pub fn readout(&self, role: Role) -> Option<Readout> {
        let (from, p) = self.cursor?;
        let p = if from == role { p } else { self.map_point(from, p)? };
        measure::value_at(self.pane(role).current_frame()?, p.x, p.y)
    }

    /// True while anything runs in the background (tests wait on this).
    pub fn is_busy(&self) -> bool {
        self.panes.iter().any(|p| p.is_loading())
            || self.jobs.grounding.is_some()
            || self.jobs.engine_loading
            || self.jobs.registering
            || self.jobs.pacs_running > 0
            || self.compare.busy()
            || self.grid.as_ref().is_some_and(grid::Grid::is_busy)
    }

    /// Shown at the current threshold and rejected-filter.
    pub fn visible(&self, f: &Finding) -> bool {
        (f.status != Status::Rejected || self.show_rejected) && (f.status != Status::Proposed || f.score().unwrap_or(1.0) >= self.threshold)
    }

    /// Undecided proposals hidden because they score under the minimum.
    pub fn hidden_below_threshold(&self) -> usize {
        self.doc.findings.iter().filter(|f| f.status == Status::Proposed && f.score().is_some_and(|s| s < self.threshold)).count()
    }

    /// What the relabel prompt offers: the built-in labels, the reader's own from the preferences,
    /// then those used in the document, each once.
    pub fn label_choices(&self) -> Vec<String> {
        let own = self.remembered.iter().flat_map(|r| r.labels.iter().map(String::as_str));
        let used = self.doc.findings.iter().map(|f| f.label.as_str());
        crate::viewer::prefs::clean_labels(DEFAULT_LABELS.into_iter().chain(own).chain(used))
    }

    /// Visible findings in list order.
    pub fn visible_ids(&self) -> Vec<String> {
        self.list_order().into_iter().map(|i| &self.doc.findings[i]).filter(|f| self.visible(f)).map(|f| f.id.clone()).collect()
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
        } else if self.timeline.is_some() {
            // A timeline's boxes are keyed by timepoint, not by pane.
            None
        } else if !self.doc.findings.is_empty() {
            Some("the annotations refer to prior and current as they are; close or clear them first")
        } else {
            None
        }
    }

    /// Where Ctrl+S saves by default: beside the current study.
    pub fn default_doc_path(&self) -> Option<PathBuf> {
        self.doc_path.clone().or_else(|| self.source_path(Role::Current).map(crate::annotation::io::sidecar_for))
    }

    /// The generations of every pane now, to stamp a job with.
    fn stamp_all(&self) -> Stamp {
        Stamp(self.panes.iter().map(|p| (p.id, p.generation)).collect())
    }

    fn is_current(&self, stamp: &Stamp) -> bool {
        stamp.is_current(|id| self.panes.get(id.0).map(|p| p.generation))
    }

    /// The local file or folder of the study `role` shows, if it has one.
    fn source_path(&self, role: Role) -> Option<&Path> {
        self.sources[role_slot(role)].as_ref().and_then(Source::path)
    }

    /// Queues a command for the end of this frame (panels and keys use this).
    fn emit(&mut self, command: AppCommand) {
        self.queued.push(command);
    }
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.poll_jobs();
        for (spec, picked) in self.dialogs.poll() {
            self.on_dialog(spec, picked);
        }
        self.ensure_registration();
        self.ensure_grid();
        self.ensure_compare(ui.ctx(), !self.cpu_rendering && frame.wgpu_render_state().is_some());
        if self.view_mode == ViewMode::Flicker {
            ui.ctx().request_repaint_after(Duration::from_secs_f32(0.5 / self.flicker_hz));
        }
        if let Some(next) = self.advance_cine(ui.input(|i| i.time)) {
            ui.ctx().request_repaint_after(next);
        }
        self.drop_hidden_selection();
        self.handle_dropped_files(ui);
        if self.prompt.is_none() && !ui.ctx().egui_wants_keyboard_input() {
            self.handle_keys(ui);
        }
        self.handle_close(ui);
        self.autosave();
        let mut commands = std::mem::take(&mut self.queued);
        ui::menu_bar_ui(self, ui, &mut commands);
        timeline::timeline_strip_ui(self, ui, &mut commands);
        ui::status_bar_ui(self, ui, &mut commands);
        plot::plot_panel_ui(self, ui, &mut commands);
        ui::side_panel_ui(self, ui, &mut commands);
        ui::findings_panel_ui(self, ui, &mut commands);
        ui::pairing_banner_ui(self, ui, &mut commands);
        egui::CentralPanel::default().frame(egui::Frame::NONE.fill(egui::Color32::from_gray(20))).show(ui, |ui| {
            if self.grid.is_some() {
                self.grid_ui(ui, frame);
            } else {
                self.panes_ui(ui, frame);
            }
        });
        pacs::pacs_dialog_ui(self, ui, &mut commands);
        ui::prompt_ui(self, ui, &mut commands);
        commands.append(&mut self.queued);
        let any = !commands.is_empty();
        for c in commands {
            self.run(c);
        }
        self.update_title();
        self.remember(ui.ctx());
        for c in self.viewport.drain(..) {
            if c == egui::ViewportCommand::Focus {
                crate::viewer::x11_focus::take(frame);
            }
            ui.send_viewport_cmd(c);
        }
        if any {
            // What the commands changed is drawn next frame.
            ui.ctx().request_repaint();
        } else if self.is_busy() {
            ui.ctx().request_repaint_after(Duration::from_millis(100));
        }
    }
}
