//! Long work off the UI thread: loading studies, starting the grounder, grounding and
//! registration. Workers report through one channel that the app drains at the start of a frame;
//! every result carries the `Stamp` of the images it was computed from, so that a result that
//! arrives after its pane changed (a slow load, a grounding run on the previous pair) is dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eframe::egui;

use crate::grounding::{DevicePreference, Engine, Proposal, WeightsSource};
use crate::registration::{self, AlignOptions, Alignment};
use crate::study::progressive::{Arrival, LoadControl, load_progressive};
use crate::study::{GrayImage, Series, StudyError};
use crate::viewer::pane::{PaneId, Role, SharedProgress};

/// The generation of each pane a job read or writes, taken when the job was started. The result
/// is current only while every one of those panes still has that generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp(pub Vec<(PaneId, u64)>);

impl Stamp {
    /// A job that depends on no image (the grounder's start-up).
    pub fn none() -> Self {
        Stamp(Vec::new())
    }

    /// True while every stamped pane still shows what the job ran on; `generation_of` answers
    /// `None` for a pane that no longer exists.
    pub fn is_current(&self, generation_of: impl Fn(PaneId) -> Option<u64>) -> bool {
        self.0.iter().all(|&(pane, g)| generation_of(pane) == Some(g))
    }
}

/// A finished job.
pub enum JobResult {
    Loaded {
        pane: PaneId,
        source: String,
        result: Result<Series, StudyError>,
    },
    /// Part of a folder series loading progressively into `pane` (`study::progressive`).
    Arrived {
        pane: PaneId,
        source: String,
        arrival: Box<Arrival>,
    },
    /// A progressive load ended (or was cancelled) after its last `Arrived`.
    LoadDelivered,
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
    },
    /// A comparison picture made on the CPU (flicker, fade, subtraction; `viewer::compare`).
    Compared(Box<crate::viewer::compare::CpuWork>),
    Failed {
        what: String,
        error: String,
    },
    /// "Send findings to PACS" ended: what the PACS answered, or why it failed.
    Pushed(Result<String, String>),
    /// A PACS dialog search ended (`request` tells a stale one from the latest).
    #[cfg(feature = "pacs")]
    PacsFound {
        request: u64,
        result: Result<Vec<crate::pacs::Study>, String>,
    },
    /// A study retrieved into the cache: the folder of its image series, to open in `role`.
    #[cfg(feature = "pacs")]
    PacsRetrieved {
        request: u64,
        role: Role,
        result: Result<PathBuf, String>,
    },
    /// Timelines, whole-series change finding and tracking (`app::timeline`).
    Timeline(crate::viewer::app::TimelineResult),
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
    /// (done, total) for a job that works through steps (slice pairs, timepoints).
    pub progress: Option<Arc<Mutex<(usize, usize)>>>,
    /// What it does before its steps begin ("registering volumes"), while it does it.
    pub stage: Arc<Mutex<Option<&'static str>>>,
}

impl RunningGround {
    /// "3/8 slice pairs · about 4 s left" while steps remain (the time left from the pace so far).
    pub fn progress_text(&self, unit: &str) -> Option<String> {
        let progress = self.progress.as_ref()?;
        if let Some(stage) = self.stage.lock().ok().and_then(|s| *s) {
            return Some(format!("{stage}…"));
        }
        let (done, total) = *progress.lock().ok()?;
        let eta =
            eta(self.started.elapsed(), done, total).map(|d| format!(" · about {:.0} s left", d.as_secs_f32().ceil())).unwrap_or_default();
        Some(format!("{done}/{total} {unit}{eta}"))
    }
}

/// The time left when `done` of `total` steps took `elapsed`: unknown before the first step.
pub fn eta(elapsed: std::time::Duration, done: usize, total: usize) -> Option<std::time::Duration> {
    (done > 0 && total >= done).then(|| elapsed.mul_f64((total - done) as f64 / done as f64))
}

pub struct Jobs {
    tx: Sender<(Stamp, JobResult)>,
    rx: Receiver<(Stamp, JobResult)>,
    ctx: egui::Context,
    pub grounding: Option<RunningGround>,
    pub engine_loading: bool,
    pub registering: bool,
    /// PACS requests under way (push, search, retrieve); the app counts as busy while any runs.
    pub pacs_running: usize,
    /// What the latest retrieval reports ("3/20 instances").
    pub pacs_progress: Arc<Mutex<String>>,
    /// Milliseconds a progressive load waits before each file after the first (0: none); see
    /// `LoadControl::pace_ms`.
    pub load_pace_ms: u64,
}

impl Jobs {
    pub fn new(ctx: egui::Context) -> Self {
        let (tx, rx) = channel();
        Jobs {
            tx,
            rx,
            ctx,
            grounding: None,
            engine_loading: false,
            registering: false,
            pacs_running: 0,
            pacs_progress: Arc::default(),
            load_pace_ms: 0,
        }
    }

    /// Results that arrived since the last call, each with the stamp its job was started with.
    pub fn drain(&mut self) -> Vec<(Stamp, JobResult)> {
        self.rx.try_iter().collect()
    }

    /// Starts a cancellable grounding job with step progress (one at a time, as `grounding` says).
    pub fn start_grounding(&mut self, label: &str) -> (Arc<AtomicBool>, Arc<Mutex<(usize, usize)>>) {
        let cancelled = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Mutex::new((0, 0)));
        self.grounding = Some(RunningGround {
            label: label.into(),
            started: Instant::now(),
            cancelled: cancelled.clone(),
            progress: Some(progress.clone()),
            stage: Arc::default(),
        });
        (cancelled, progress)
    }

    /// Where the running grounding job says which stage it is in (`RunningGround::stage`).
    pub fn grounding_stage(&self) -> Arc<Mutex<Option<&'static str>>> {
        self.grounding.as_ref().map(|g| g.stage.clone()).unwrap_or_default()
    }

    /// Ends the bookkeeping of the grounding job whose cancel flag is `job` (not a later one's).
    pub fn finish_grounding(&mut self, job: &Arc<AtomicBool>) {
        if self.grounding.as_ref().is_some_and(|g| Arc::ptr_eq(&g.cancelled, job)) {
            self.grounding = None;
        }
    }

    pub(crate) fn spawn(&self, name: &str, stamp: Stamp, work: impl FnOnce() -> JobResult + Send + 'static) {
        let tx = self.tx.clone();
        let ctx = self.ctx.clone();
        let stamp_if_unspawned = stamp.clone();
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            // A worker that panics must not take the app down or leave it waiting forever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| JobResult::Failed { what: "background task".into(), error: "it stopped unexpectedly".into() });
            let _ = tx.send((stamp, result));
            ctx.request_repaint();
        });
        if let Err(e) = spawned {
            let _ = self.tx.send((stamp_if_unspawned, JobResult::Failed { what: name.into(), error: e.to_string() }));
        }
    }

    /// Loads `path` into `pane`: a folder series file by file as `Arrived` results (the shown
    /// slice first, then nearest to what `control` says is shown), anything else as one `Loaded`.
    pub fn load(&self, pane: PaneId, stamp: Stamp, path: PathBuf, progress: SharedProgress, control: Arc<LoadControl>) {
        let (ctx, tx, arrival_stamp) = (self.ctx.clone(), self.tx.clone(), stamp.clone());
        let source = path.display().to_string();
        control.pace_ms.store(self.load_pace_ms, Ordering::Relaxed);
        self.spawn("load", stamp, move || {
            let report = |f: f32, msg: &str| {
                if let Ok(mut p) = progress.lock() {
                    *p = (f, msg.to_string());
                }
                ctx.request_repaint();
            };
            let mut deliver = |arrival: Arrival| {
                if tx
                    .send((arrival_stamp.clone(), JobResult::Arrived { pane, source: source.clone(), arrival: Box::new(arrival) }))
                    .is_err()
                {
                    control.cancel();
                }
                ctx.request_repaint();
            };
            match load_progressive(&path, &report, &control, &mut deliver) {
                Ok(Some(series)) => JobResult::Loaded { pane, source, result: Ok(series) },
                // Delivered file by file: the pane finished it from the last `Arrived`.
                Ok(None) => JobResult::LoadDelivered,
                Err(e) => JobResult::Loaded { pane, source, result: Err(e) },
            }
        });
    }

    pub fn hang(&self, stamp: Stamp, folder: PathBuf, progress: SharedProgress) {
        let ctx = self.ctx.clone();
        self.spawn("hang", stamp, move || {
            let report = move |f: f32, msg: &str| {
                if let Ok(mut p) = progress.lock() {
                    *p = (f, msg.to_string());
                }
                ctx.request_repaint();
            };
            let result = crate::study::hang_folder(&folder, &report);
            JobResult::Hung { source: folder.display().to_string(), result }
        });
    }

    pub fn start_engine(&mut self, preference: DevicePreference) {
        self.engine_loading = true;
        self.spawn("grounder", Stamp::none(), move || {
            JobResult::EngineReady(Arc::new(Engine::new(preference, &WeightsSource::from_env())))
        });
    }

    /// Difference grounding of the shown frames (prior, current).
    pub fn find_changes(&mut self, stamp: Stamp, engine: Arc<Engine>, prior: GrayImage, current: GrayImage, frames: (u32, u32)) {
        let cancelled = Arc::new(AtomicBool::new(false));
        self.grounding = Some(RunningGround {
            label: "Finding changes".into(),
            started: Instant::now(),
            cancelled: cancelled.clone(),
            progress: None,
            stage: Arc::default(),
        });
        self.spawn("find changes", stamp, move || {
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
        stamp: Stamp,
        engine: Arc<Engine>,
        from: Role,
        reference: GrayImage,
        reference_box: crate::grounding::BBox,
        target: GrayImage,
        hint: crate::grounding::LocateHint,
        frames: (u32, u32),
    ) {
        let cancelled = Arc::new(AtomicBool::new(false));
        self.grounding = Some(RunningGround {
            label: "Finding in the other image".into(),
            started: Instant::now(),
            cancelled: cancelled.clone(),
            progress: None,
            stage: Arc::default(),
        });
        self.spawn("locate", stamp, move || {
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
    pub fn register(&mut self, stamp: Stamp, prior: GrayImage, current: GrayImage) {
        self.registering = true;
        self.spawn("register", stamp, move || {
            let alignment = registration::align(&prior, &current, &AlignOptions::default());
            JobResult::Registered { alignment }
        });
    }

    /// Comparison work for flicker, fade or subtraction (the subtraction window, or the CPU
    /// fallback's resampled prior and textures), off the UI thread.
    pub fn compare(&self, stamp: Stamp, work: impl FnOnce() -> crate::viewer::compare::CpuWork + Send + 'static) {
        self.spawn("compare", stamp, move || JobResult::Compared(Box::new(work())));
    }

    /// STOW-RS of `sr` (a DICOM SR file's bytes) to the PACS at `url`, credentials from the
    /// environment. It depends on no image: the SR was made when the user asked.
    #[cfg(feature = "pacs")]
    pub fn push_sr(&mut self, url: String, sr: Vec<u8>) {
        self.pacs_running += 1;
        self.spawn("push SR", Stamp::none(), move || {
            let pushed = crate::pacs::Client::from_env(&url).and_then(|c| c.store(&[sr]));
            JobResult::Pushed(match pushed {
                Ok(r) if r.failed.is_empty() && !r.stored.is_empty() => Ok(format!("the PACS stored the SR {}", r.stored.join(", "))),
                Ok(r) if r.failed.is_empty() => Err("the PACS answered but listed nothing as stored".into()),
                Ok(r) => Err(format!(
                    "the PACS refused the SR ({})",
                    r.failed
                        .iter()
                        .map(|(uid, code)| format!("{uid}: {}", code.map_or("no reason".into(), |c| format!("reason {c:#06x}"))))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Err(e) => Err(e.to_string()),
            })
        });
    }

    /// QIDO-RS study search for the PACS dialog.
    #[cfg(feature = "pacs")]
    pub fn pacs_search(&mut self, request: u64, url: String, query: crate::pacs::Query) {
        self.pacs_running += 1;
        self.spawn("PACS search", Stamp::none(), move || {
            let result = crate::pacs::Client::from_env(&url).and_then(|c| c.search(&query)).map_err(|e| e.to_string());
            JobResult::PacsFound { request, result }
        });
    }

    /// WADO-RS of the image series of `study` with most instances into `cache`, reporting progress.
    #[cfg(feature = "pacs")]
    pub fn pacs_retrieve(&mut self, request: u64, url: String, study: String, cache: PathBuf, role: Role) {
        self.pacs_running += 1;
        let (progress, ctx) = (self.pacs_progress.clone(), self.ctx.clone());
        self.spawn("PACS retrieve", Stamp::none(), move || {
            let result = (|| {
                let client = crate::pacs::Client::from_env(&url).map_err(|e| e.to_string())?;
                let series = client
                    .series(&study)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    // Not the SRs, key objects or presentation states stored beside the images.
                    .filter(|s| s.modality.as_deref().is_none_or(|m| !matches!(m, "SR" | "KO" | "PR" | "DOC")))
                    .max_by_key(|s| s.instance_count.unwrap_or(0))
                    .ok_or_else(|| format!("study {study} has no image series"))?;
                let report = |done: usize, total: usize| {
                    if let Ok(mut p) = progress.lock() {
                        *p = format!("{}: {done}/{total} instances", role.label());
                    }
                    ctx.request_repaint();
                };
                let r = client.retrieve(&study, Some(&series.series_uid), &cache, &mut { report }).map_err(|e| e.to_string())?;
                Ok(r.folder.join(&series.series_uid))
            })();
            JobResult::PacsRetrieved { request, role, result }
        });
    }
}

/// A fresh progress cell for a loading pane.
pub fn progress_cell() -> SharedProgress {
    Arc::new(Mutex::new((0.0, String::from("starting"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_current_only_while_every_pane_keeps_its_generation() {
        let stamp = Stamp(vec![(PaneId(0), 3), (PaneId(1), 5)]);
        assert!(stamp.is_current(|p| Some(if p == PaneId(0) { 3 } else { 5 })));
        assert!(!stamp.is_current(|p| Some(if p == PaneId(0) { 4 } else { 5 })), "a newer image in one pane");
        assert!(!stamp.is_current(|p| (p == PaneId(0)).then_some(3)), "a pane that is gone");
        assert!(Stamp::none().is_current(|_| None));
    }

    #[test]
    fn the_time_left_follows_the_pace_so_far() {
        use std::time::Duration;
        assert_eq!(eta(Duration::from_secs(3), 0, 10), None, "unknown before the first step");
        assert_eq!(eta(Duration::from_secs(4), 2, 10), Some(Duration::from_secs(16)));
        assert_eq!(eta(Duration::from_secs(4), 10, 10), Some(Duration::ZERO));
    }
}
