//! Long work off the UI thread: loading studies, starting the grounder, grounding and
//! registration. Workers report through channels that the app drains at the start of a frame.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eframe::egui;

use crate::grounding::{DevicePreference, Engine, Proposal, WeightsSource};
use crate::registration::{self, AlignOptions, Alignment};
use crate::study::{self, GrayImage, Series, StudyError};
use crate::viewer::pane::{Role, SharedProgress};

/// A finished job.
pub enum JobResult {
    Loaded {
        role: Role,
        source: String,
        result: Result<Series, StudyError>,
    },
    /// A folder hung as prior + current.
    Hung {
        source: String,
        result: Result<(Series, Series), StudyError>,
    },
    EngineReady(Arc<Engine>),
    Grounded {
        kind: GroundKind,
        proposals: Vec<Proposal>,
        millis: f64,
        frames: (u32, u32),
    },
    Registered {
        alignment: Alignment,
        generations: (u64, u64),
    },
    Failed {
        what: String,
        error: String,
    },
}

/// What a grounding job answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroundKind {
    Changes,
    /// Locate from one pane into the other.
    Locate {
        from: Role,
    },
}

/// A running grounding job (one at a time), cancellable.
pub struct RunningGround {
    pub label: String,
    pub started: Instant,
    pub cancelled: Arc<AtomicBool>,
}

pub struct Jobs {
    tx: Sender<JobResult>,
    rx: Receiver<JobResult>,
    ctx: egui::Context,
    pub grounding: Option<RunningGround>,
    pub engine_loading: bool,
    pub registering: bool,
}

impl Jobs {
    pub fn new(ctx: egui::Context) -> Self {
        let (tx, rx) = channel();
        Jobs { tx, rx, ctx, grounding: None, engine_loading: false, registering: false }
    }

    /// Results that arrived since the last call.
    pub fn drain(&mut self) -> Vec<JobResult> {
        self.rx.try_iter().collect()
    }

    fn spawn(&self, name: &str, work: impl FnOnce() -> JobResult + Send + 'static) {
        let tx = self.tx.clone();
        let ctx = self.ctx.clone();
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            // A worker that panics must not take the app down or leave it waiting forever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| JobResult::Failed { what: "background task".into(), error: "it stopped unexpectedly".into() });
            let _ = tx.send(result);
            ctx.request_repaint();
        });
        if let Err(e) = spawned {
            let _ = self.tx.send(JobResult::Failed { what: name.into(), error: e.to_string() });
        }
    }

    pub fn load(&self, role: Role, path: PathBuf, progress: SharedProgress) {
        let ctx = self.ctx.clone();
        self.spawn("load", move || {
            let report = move |f: f32, msg: &str| {
                if let Ok(mut p) = progress.lock() {
                    *p = (f, msg.to_string());
                }
                ctx.request_repaint();
            };
            let result = study::load(&path, &report);
            JobResult::Loaded { role, source: path.display().to_string(), result }
        });
    }

    pub fn hang(&self, folder: PathBuf, progress: SharedProgress) {
        let ctx = self.ctx.clone();
        self.spawn("hang", move || {
            let report = move |f: f32, msg: &str| {
                if let Ok(mut p) = progress.lock() {
                    *p = (f, msg.to_string());
                }
                ctx.request_repaint();
            };
            let result = study::hang_folder(&folder, &report);
            JobResult::Hung { source: folder.display().to_string(), result }
        });
    }

    pub fn start_engine(&mut self, preference: DevicePreference) {
        self.engine_loading = true;
        self.spawn("grounder", move || JobResult::EngineReady(Arc::new(Engine::new(preference, &WeightsSource::from_env()))));
    }

    /// Difference grounding of the shown frames (prior, current).
    pub fn find_changes(&mut self, engine: Arc<Engine>, prior: GrayImage, current: GrayImage, frames: (u32, u32)) {
        let cancelled = Arc::new(AtomicBool::new(false));
        self.grounding = Some(RunningGround { label: "Finding changes".into(), started: Instant::now(), cancelled: cancelled.clone() });
        self.spawn("find changes", move || {
            let out = engine.diff(&prior, &current, crate::grounding::Method::Model);
            if cancelled.load(Ordering::Relaxed) {
                return JobResult::Failed { what: "Find changes".into(), error: "cancelled".into() };
            }
            JobResult::Grounded { kind: GroundKind::Changes, proposals: out.proposals, millis: out.millis, frames }
        });
    }

    /// Locates `reference_box` of `reference` (the pane `from`) in `target`.
    #[allow(clippy::too_many_arguments)]
    pub fn locate(
        &mut self,
        engine: Arc<Engine>,
        from: Role,
        reference: GrayImage,
        reference_box: crate::grounding::BBox,
        target: GrayImage,
        hint: crate::grounding::LocateHint,
        frames: (u32, u32),
    ) {
        let cancelled = Arc::new(AtomicBool::new(false));
        self.grounding =
            Some(RunningGround { label: "Finding in the other image".into(), started: Instant::now(), cancelled: cancelled.clone() });
        self.spawn("locate", move || {
            let start = Instant::now();
            let found = engine.locate(&reference, reference_box, &target, &hint, crate::grounding::Method::Model);
            if cancelled.load(Ordering::Relaxed) {
                return JobResult::Failed { what: "Find in other image".into(), error: "cancelled".into() };
            }
            JobResult::Grounded {
                kind: GroundKind::Locate { from },
                proposals: found.into_iter().collect(),
                millis: start.elapsed().as_secs_f64() * 1e3,
                frames,
            }
        });
    }

    pub fn cancel_grounding(&mut self) {
        if let Some(g) = self.grounding.take() {
            g.cancelled.store(true, Ordering::Relaxed);
        }
    }

    /// Rigid registration of current onto prior, for geometric sync.
    pub fn register(&mut self, prior: GrayImage, current: GrayImage, generations: (u64, u64)) {
        self.registering = true;
        self.spawn("register", move || {
            let alignment = registration::align(&prior, &current, &AlignOptions::default());
            JobResult::Registered { alignment, generations }
        });
    }
}

/// A fresh progress cell for a loading pane.
pub fn progress_cell() -> SharedProgress {
    Arc::new(Mutex::new((0.0, String::from("starting"))))
}
