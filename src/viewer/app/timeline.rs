//! A patient over time in the viewer: a folder (or several) of three studies or more opens as a
//! timeline strip in study-date order, any two timepoints hang as prior and current, "Find
//! changes" runs through the whole series when both panes hold several slices, and "Track"
//! follows the selected finding to every other timepoint, measuring it in each.
//!
//! The document keys each timepoint's boxes by its id (`t0`, `t1`, … oldest first, as
//! `tandem track` writes them), so that a finding can have a box on every timepoint whichever two
//! are hung; without a timeline the keys stay `prior` and `current`.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eframe::egui::{self, Color32, RichText};

use super::{App, AppCommand};
use crate::annotation::document::Track;
use crate::annotation::{Command, Document, Finding, FindingKind, ImageBox, ImageRef, Source};
use crate::grounding::series::{SeriesOutput, Stage};
use crate::grounding::track::{self, OnGrid};
use crate::grounding::{BBox, Method};
use crate::study::series::SeriesGroup;
use crate::study::{Series, StudyError};
use crate::viewer::jobs::{JobResult, Stamp, progress_cell};
use crate::viewer::pane::{Role, SharedProgress};

/// Loaded timepoints keep their pixels while all of them together stay under this; a timepoint
/// beyond it is loaded again when it is hung or tracked.
pub(super) const CACHE_BYTES: usize = 1 << 30;

/// Side of a timeline thumbnail (pixels).
const THUMB: usize = 72;

/// One study of the timeline: the series compared, what identifies it, and a thumbnail.
pub struct Timepoint {
    /// The document's key for its boxes: `t0`, `t1`, … in time order.
    pub id: String,
    pub group: SeriesGroup,
    pub image: ImageRef,
    pub frames: usize,
    /// Row and column spacing (mm), when known.
    pub spacing: Option<[f64; 2]>,
    pub thumbnail: egui::ColorImage,
    texture: RefCell<Option<egui::TextureHandle>>,
    pub(super) series: Option<Arc<Series>>,
}

impl Timepoint {
    /// "2024-03-01", or the id when the study has no date.
    pub fn date(&self) -> String {
        self.group.meta.study_date_pretty().unwrap_or_else(|| self.id.clone())
    }

    pub fn modality(&self) -> &str {
        self.group.meta.modality.as_deref().unwrap_or("")
    }

    /// The study's description, else the series'.
    pub fn description(&self) -> &str {
        let m = &self.group.meta;
        m.study_description.as_deref().or(m.series_description.as_deref()).unwrap_or("")
    }

    /// Whether its pixels are in memory.
    pub fn is_loaded(&self) -> bool {
        self.series.is_some()
    }

    fn texture(&self, ctx: &egui::Context) -> egui::TextureHandle {
        self.texture
            .borrow_mut()
            .get_or_insert_with(|| ctx.load_texture(format!("timeline-{}", self.id), self.thumbnail.clone(), egui::TextureOptions::LINEAR))
            .clone()
    }
}

/// The studies of one patient, oldest first, and the two on screen.
pub struct Timeline {
    pub sources: Vec<PathBuf>,
    pub points: Vec<Timepoint>,
    /// The timepoints hung as prior and current.
    pub hung: [usize; 2],
    /// Tells this timeline's job results from an earlier timeline's.
    pub generation: u64,
}

impl Timeline {
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.points.iter().position(|p| p.id == id)
    }

    pub(super) fn cached_bytes(&self) -> usize {
        self.points.iter().filter_map(|p| p.series.as_deref()).map(series_bytes).sum()
    }
}

/// What the timeline strip, the grounding panel and the plot ask of the app.
#[derive(Clone, Debug)]
pub enum TimelineCommand {
    /// Hang timepoint `point` in the pane showing `role`.
    Hang { role: Role, point: usize },
    /// Hang two timepoints as prior and current.
    HangPair { prior: usize, current: usize },
    /// "Find changes" through the whole series when both panes hold several slices.
    SetWholeSeries(bool),
    /// Follow the selected finding to every other timepoint (every timepoint of the timeline, or
    /// the other pane's image without one), as a new tracked finding.
    Track,
    /// Shows or hides the size-over-time plot of the selected tracked finding.
    ShowPlot(bool),
    /// Opens (or leaves) the grid of up to six timepoints side by side.
    Grid(bool),
}

/// One timepoint as the scan found and loaded it.
pub struct Scanned {
    pub group: SeriesGroup,
    pub image: ImageRef,
    pub spacing: Option<[f64; 2]>,
    pub thumbnail: egui::ColorImage,
    pub series: Option<Arc<Series>>,
}

/// Where a tracked finding lies on one timepoint.
#[derive(Clone, Debug)]
pub struct TrackedStep {
    pub slice: usize,
    pub bbox: BBox,
    pub score: f32,
    /// The lesion's outline diameters (mm, or px on the common grid), when it was outlined at
    /// every timepoint.
    pub outline: Option<crate::grounding::outline::Diameters>,
}

/// What a timeline job answered.
pub enum TimelineResult {
    Scanned {
        generation: u64,
        sources: Vec<PathBuf>,
        result: Result<Vec<Scanned>, String>,
    },
    /// A timepoint's series, to hang in `role`.
    Loaded {
        generation: u64,
        point: usize,
        role: Role,
        result: Result<Arc<Series>, String>,
    },
    SeriesChanges {
        job: Arc<AtomicBool>,
        keys: [String; 2],
        model: Option<String>,
        result: Result<SeriesOutput, String>,
    },
    Tracked {
        job: Arc<AtomicBool>,
        generation: Option<u64>,
        /// The finding followed.
        from: String,
        /// The timepoints' keys in time order, with their steps.
        keys: Vec<String>,
        model: Option<String>,
        result: Result<Vec<TrackedStep>, String>,
        /// Timepoints the job loaded (index, series), for the cache.
        loaded: Vec<(usize, Arc<Series>)>,
    },
    /// A grid pane's series, or where the grid's panes lie.
    Grid(super::grid::GridResult),
}

impl TimelineResult {
    /// The grounding job this result ends, if it is one.
    fn grounding_job(&self) -> Option<&Arc<AtomicBool>> {
        match self {
            TimelineResult::SeriesChanges { job, .. } | TimelineResult::Tracked { job, .. } => Some(job),
            _ => None,
        }
    }
}

pub(super) fn series_bytes(s: &Series) -> usize {
    s.frames.iter().map(|f| f.width * f.height * if f.is_color() { 3 } else { 4 }).sum()
}

/// The middle slice at its default window, at most `THUMB` pixels on a side.
fn thumbnail_of(series: &Series) -> egui::ColorImage {
    let Some(frame) = series.frames.get(series.frames.len() / 2) else {
        return egui::ColorImage::new([1, 1], vec![Color32::BLACK]);
    };
    let full = crate::viewer::pane::render_cpu(frame, frame.default_window, frame.invert, frame.voi_lut.is_some());
    let scale = (THUMB as f32 / frame.width.max(frame.height) as f32).min(1.0);
    let (w, h) = (((frame.width as f32 * scale).round() as usize).max(1), ((frame.height as f32 * scale).round() as usize).max(1));
    let pixels = (0..h)
        .flat_map(|y| {
            let full = &full;
            (0..w).map(move |x| {
                let sx = ((x as f32 + 0.5) / scale) as usize;
                let sy = ((y as f32 + 0.5) / scale) as usize;
                full.pixels[sy.min(frame.height - 1) * frame.width + sx.min(frame.width - 1)]
            })
        })
        .collect();
    egui::ColorImage::new([w, h], pixels)
}

/// Scans `sources`: three studies or more make a timeline (every timepoint loaded once for its
/// thumbnail and identifiers, kept in memory while under the cache budget); fewer hang as a pair.
fn scan(sources: &[PathBuf], progress: &SharedProgress, generation: u64) -> JobResult {
    let report = |f: f32, msg: &str| {
        if let Ok(mut p) = progress.lock() {
            *p = (f, msg.to_string());
        }
    };
    let source = sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    let groups = match crate::study::timeline::scan_folders(sources, &|f, m| report(0.3 * f, m)) {
        Ok(g) => g,
        Err(e) => return JobResult::Hung { source, result: Err(e) },
    };
    if crate::study::timeline::study_count(&groups) < 3 {
        // Two studies (or one with several series): the pair, as a folder always opened.
        let quiet = |_: f32, _: &str| {};
        let result = crate::study::series::hang_groups(groups).and_then(|(p, c)| {
            Ok((crate::study::series::load_group(&p, &quiet)?, crate::study::series::load_group(&c, &|f, m| report(f, m))?))
        });
        return JobResult::Hung { source, result };
    }
    let result = (|| -> Result<Vec<Scanned>, StudyError> {
        let groups = crate::study::timeline::timepoints(groups)?;
        let n = groups.len();
        let mut bytes = 0;
        let mut out = Vec::new();
        for (k, group) in groups.into_iter().enumerate() {
            let msg = format!("timepoint {}/{n}", k + 1);
            let series = crate::study::series::load_group(&group, &|f, _| report(0.3 + 0.7 * (k as f32 + f) / n as f32, &msg))?;
            let image = ImageRef::from_series(&format!("t{k}"), &series);
            let spacing = series.frames.first().and_then(|f| f.meta.pixel_spacing_mm);
            let thumbnail = thumbnail_of(&series);
            bytes += series_bytes(&series);
            let series = (bytes <= CACHE_BYTES).then(|| Arc::new(series));
            out.push(Scanned { group, image, spacing, thumbnail, series });
        }
        Ok(out)
    })();
    JobResult::Timeline(TimelineResult::Scanned { generation, sources: sources.to_vec(), result: result.map_err(|e| e.to_string()) })
}

/// Where a finding's slice lies for the findings list: its peak slice (a whole-series finding),
/// else the frame of its first box on `key`.
pub fn slice_on(f: &Finding, key: &str) -> Option<u32> {
    if let Some((_, peak)) = f.slice_range()
        && f.box_at(key, peak).is_some()
    {
        return Some(peak);
    }
    f.box_on(key).map(|b| b.frame)
}

static TIMELINE_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl App {
    pub fn timeline(&self) -> Option<&Timeline> {
        self.timeline.as_ref()
    }

    pub fn whole_series(&self) -> bool {
        self.whole_series
    }

    /// Whether "Find changes" runs through the whole series now: both panes hold several slices
    /// and the option is on.
    pub fn finds_whole_series(&self) -> bool {
        self.whole_series && self.panes.iter().all(|p| p.frame_count() > 1)
    }

    /// The document's key for the image the pane showing `role` holds: its timepoint's id on a
    /// timeline, else "prior" or "current".
    pub fn image_key(&self, role: Role) -> String {
        match &self.timeline {
            Some(t) => t.points[t.hung[super::role_slot(role)]].id.clone(),
            None => role.image_key().to_string(),
        }
    }

    /// The pixel spacing of the image keyed `key`, when known.
    pub(super) fn spacing_of(&self, key: &str) -> Option<[f64; 2]> {
        if let Some(p) = self.timeline.as_ref().and_then(|t| t.index_of(key).map(|i| &t.points[i])) {
            return p.spacing;
        }
        [Role::Prior, Role::Current]
            .into_iter()
            .find(|r| self.image_key(*r) == key)
            .and_then(|r| self.pane(r).series())
            .and_then(|s| s.frames.first())
            .and_then(|f| f.meta.pixel_spacing_mm)
    }

    /// The box a reveal brings into view in the pane showing `role`: a whole-series finding's box
    /// on its peak slice (on the prior, the box paired with it), else its first box there.
    pub(super) fn reveal_box(&self, f: &Finding, role: Role) -> Option<ImageBox> {
        let (prior, current) = (self.image_key(Role::Prior), self.image_key(Role::Current));
        let key = if role == Role::Prior { &prior } else { &current };
        if let Some((_, peak)) = f.slice_range()
            && let Some(i) = f.boxes.iter().position(|b| b.image == current && b.frame == peak)
        {
            if role == Role::Current {
                return Some(f.boxes[i].clone());
            }
            // Series findings list each slice's prior box just before its current box.
            if let Some(b) = i.checked_sub(1).map(|j| &f.boxes[j]).filter(|b| b.image == prior) {
                return Some(b.clone());
            }
        }
        f.box_on(key).cloned()
    }

    /// The findings list's order: by the slice of the current image they are on (findings on
    /// other images last), document order within a slice; the order N and P step in.
    pub fn list_order(&self) -> Vec<usize> {
        let key = self.image_key(Role::Current);
        let mut order: Vec<(u32, usize)> =
            self.doc.findings.iter().enumerate().map(|(i, f)| (slice_on(f, &key).unwrap_or(u32::MAX), i)).collect();
        if self.pane(Role::Current).frame_count() > 1 {
            order.sort();
        }
        order.into_iter().map(|(_, i)| i).collect()
    }

    pub(super) fn run_timeline(&mut self, command: TimelineCommand) {
        match command {
            TimelineCommand::Hang { role, point } => self.hang(role, point),
            TimelineCommand::HangPair { prior, current } => {
                self.hang(Role::Prior, prior);
                self.hang(Role::Current, current);
            }
            TimelineCommand::SetWholeSeries(on) => self.whole_series = on,
            TimelineCommand::Track => self.track_selected(),
            TimelineCommand::ShowPlot(on) => self.show_plot = on,
            TimelineCommand::Grid(true) => self.open_grid(),
            TimelineCommand::Grid(false) => self.close_grid(),
        }
    }

    /// Opens `sources` in the background: a timeline when they hold three studies or more, else
    /// the pair a folder always opened as.
    pub(super) fn open_timeline(&mut self, sources: Vec<PathBuf>) {
        self.timeline = None;
        let cell = progress_cell();
        let label = sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        for role in [Role::Prior, Role::Current] {
            self.pane_mut(role).set_loading(label.clone(), cell.clone());
            self.pane_mut(role).note = None;
        }
        let generation = TIMELINE_GENERATION.fetch_add(1, Ordering::Relaxed);
        let first = sources.first().cloned().map(crate::study::source::Source::Path);
        self.sources = [first.clone(), first];
        self.registration = None;
        self.jobs.spawn("timeline", self.stamp_all(), move || scan(&sources, &cell, generation));
    }

    /// Hangs timepoint `point` in the pane showing `role`: at once when its pixels are in memory,
    /// else after loading them in the background.
    fn hang(&mut self, role: Role, point: usize) {
        let Some(t) = self.timeline.as_mut() else {
            self.status = "open a folder of three studies or more for a timeline".into();
            return;
        };
        let Some(p) = t.points.get(point) else { return };
        t.hung[super::role_slot(role)] = point;
        let (generation, id, date) = (t.generation, p.id.clone(), p.date());
        match p.series.clone() {
            Some(series) => {
                self.show_timepoint(role, series);
                self.status = format!("{} is {date} ({id})", role.label());
            }
            None => {
                let group = p.group.clone();
                let cell = progress_cell();
                let pane = self.pane_mut(role);
                pane.set_loading(date.clone(), cell.clone());
                pane.note = None;
                let stamp = Stamp(vec![(pane.id, pane.generation)]);
                self.registration = None;
                self.jobs.spawn("timepoint", stamp, move || {
                    let report = |f: f32, msg: &str| {
                        if let Ok(mut p) = cell.lock() {
                            *p = (f, msg.to_string());
                        }
                    };
                    let result = crate::study::series::load_group(&group, &report).map(Arc::new).map_err(|e| e.to_string());
                    JobResult::Timeline(TimelineResult::Loaded { generation, point, role, result })
                });
            }
        }
    }

    fn show_timepoint(&mut self, role: Role, series: Arc<Series>) {
        self.pane_mut(role).set_series(series);
        self.pane_mut(role).note = None;
        self.registration = None;
        self.refresh_document_images();
        if self.panes.iter().all(|p| p.series().is_some()) && self.doc.findings.is_empty() {
            self.open_sidecar_if_any();
        }
    }

    /// Bookkeeping done for every timeline result, current or stale.
    pub(super) fn timeline_job_ended(&mut self, result: &TimelineResult) {
        if let Some(job) = result.grounding_job() {
            self.jobs.finish_grounding(job);
        }
    }

    pub(super) fn on_timeline_job(&mut self, result: TimelineResult) {
        match result {
            TimelineResult::Scanned { generation, sources, result } => match result {
                Ok(scanned) => {
                    let points: Vec<Timepoint> = scanned
                        .into_iter()
                        .enumerate()
                        .map(|(k, s)| Timepoint {
                            id: format!("t{k}"),
                            frames: s.image.frames as usize,
                            group: s.group,
                            image: s.image,
                            spacing: s.spacing,
                            thumbnail: s.thumbnail,
                            texture: RefCell::default(),
                            series: s.series,
                        })
                        .collect();
                    let n = points.len();
                    self.doc = Document::default();
                    self.history.reset();
                    self.doc_path = None;
                    self.selected = None;
                    self.timeline = Some(Timeline { sources, points, hung: [n - 2, n - 1], generation });
                    self.refresh_document_images();
                    self.status = format!("timeline of {n} studies: the latest two are hung; pick others in the strip");
                    self.hang(Role::Prior, n - 2);
                    self.hang(Role::Current, n - 1);
                }
                Err(e) => {
                    for role in [Role::Prior, Role::Current] {
                        self.pane_mut(role).set_failed(sources.first().map(|p| p.display().to_string()).unwrap_or_default(), e.clone());
                    }
                    self.status = format!("timeline failed: {e}");
                }
            },
            TimelineResult::Loaded { generation, point, role, result } => {
                let Some(t) = self.timeline.as_mut().filter(|t| t.generation == generation) else { return };
                match result {
                    Ok(series) => {
                        if t.cached_bytes() + series_bytes(&series) <= CACHE_BYTES
                            && let Some(p) = t.points.get_mut(point)
                        {
                            p.series = Some(series.clone());
                        }
                        let date = t.points.get(point).map(Timepoint::date).unwrap_or_default();
                        self.show_timepoint(role, series);
                        self.status = format!("{} is {date}", role.label());
                    }
                    Err(e) => {
                        self.pane_mut(role).set_failed(format!("timepoint {point}"), e.clone());
                        self.status = format!("{} failed: {e}", role.label());
                    }
                }
            }
            TimelineResult::Grid(result) => self.on_grid_job(result),
            TimelineResult::SeriesChanges { job, keys, model, result } => self.on_series_changes(&job, &keys, model.as_deref(), result),
            TimelineResult::Tracked { job, generation, from, keys, model, result, loaded } => {
                if let Some(t) = self.timeline.as_mut().filter(|t| Some(t.generation) == generation) {
                    for (k, s) in loaded {
                        if t.cached_bytes() + series_bytes(&s) <= CACHE_BYTES
                            && let Some(p) = t.points.get_mut(k)
                        {
                            p.series = Some(s);
                        }
                    }
                } else if generation.is_some() {
                    return; // another timeline opened since
                }
                if job.load(Ordering::Relaxed) {
                    self.status = "tracking cancelled".into();
                    return;
                }
                match result {
                    Ok(steps) => self.add_track(&from, &keys, model.as_deref(), &steps),
                    Err(e) => self.status = format!("Track: {e}"),
                }
            }
        }
    }

    // ----- whole-series change finding ------------------------------------------------------

    /// Difference grounding of every matched slice pair of the two series, in the background,
    /// with progress and cancel.
    pub(super) fn find_series_changes(&mut self, engine: Arc<crate::grounding::Engine>) {
        let (Some(prior), Some(current)) = (self.pane(Role::Prior).series().cloned(), self.pane(Role::Current).series().cloned()) else {
            return;
        };
        let keys = [self.image_key(Role::Prior), self.image_key(Role::Current)];
        let stamp = self.stamp_all();
        let (cancel, progress) = self.jobs.start_grounding("Finding changes through the series");
        let stage_text = self.jobs.grounding_stage();
        let model = engine.model_name().map(str::to_string);
        self.status = "finding changes through the whole series…".into();
        self.jobs.spawn("find series changes", stamp, move || {
            let mut report = |stage: Stage| match stage {
                Stage::Registering => {
                    if let Ok(mut s) = stage_text.lock() {
                        *s = Some("registering volumes");
                    }
                }
                Stage::Pairs(done, total) => {
                    if let Ok(mut s) = stage_text.lock() {
                        *s = None;
                    }
                    if let Ok(mut p) = progress.lock() {
                        *p = (done, total);
                    }
                }
            };
            let result = crate::grounding::series::find_changes(&engine, &prior, &current, Method::Model, 0.0, &mut report, Some(&cancel))
                .map_err(|e| e.to_string());
            JobResult::Timeline(TimelineResult::SeriesChanges { job: cancel, keys, model, result })
        });
    }

    fn on_series_changes(&mut self, job: &AtomicBool, keys: &[String; 2], model: Option<&str>, result: Result<SeriesOutput, String>) {
        let out = match result {
            Ok(out) if out.cancelled || job.load(Ordering::Relaxed) => {
                self.status = format!("cancelled after {}/{} slice pairs", out.compared, out.matched.pairs.len());
                return;
            }
            Ok(out) => out,
            Err(e) => {
                self.status = format!("Find changes: {e}");
                return;
            }
        };
        let mut findings = crate::cli::series::findings_on(&out, model, &keys[0], &keys[1]);
        clamp_to_images(&mut findings, &self.doc);
        // In slice order, so that the list groups them and N/P step through the series.
        findings.sort_by_key(|f| f.slice_range().map(|(_, peak)| peak));
        let n = findings.len();
        let secs = out.millis / 1e3;
        if n == 0 {
            self.status = format!("no changes found in {} slice pairs ({secs:.1} s)", out.compared);
            return;
        }
        let first = findings[0].id.clone();
        self.apply(Command::Add { findings, description: format!("{n} change(s) through the series") });
        self.status = format!("{n} change(s) through {} slice pairs in {secs:.1} s — N/P next/previous, A accept, R reject", out.compared);
        self.select_and_reveal(&first);
    }

    // ----- tracking -------------------------------------------------------------------------

    /// Follows the selected finding from the box on a shown image to every other timepoint.
    fn track_selected(&mut self) {
        let Some(engine) = self.engine.clone() else {
            self.status = "the grounder is still starting".into();
            return;
        };
        if self.jobs.grounding.is_some() {
            return;
        }
        let Some(f) = self.selected.as_deref().and_then(|id| self.doc.finding(id)).cloned() else {
            self.status = "select a finding to track".into();
            return;
        };
        // The box on the active pane's frame, else on the other pane's, else any on a shown image.
        let active = self.active_role();
        let shown = [active, active.other()];
        let on_frame = shown.iter().find_map(|r| f.box_at(&self.image_key(*r), self.pane(*r).frame as u32).map(|b| (*r, b.clone())));
        let Some((role, reference)) =
            on_frame.or_else(|| shown.iter().find_map(|r| f.box_on(&self.image_key(*r)).map(|b| (*r, b.clone()))))
        else {
            self.status = "the selected finding has no box on a shown image".into();
            return;
        };
        // The timepoints in time order: series in memory, or the group to load.
        let mut inputs: Vec<(String, Option<Arc<Series>>, Option<SeriesGroup>)> = Vec::new();
        let generation = self.timeline.as_ref().map(|t| t.generation);
        match &self.timeline {
            Some(t) => {
                for (k, p) in t.points.iter().enumerate() {
                    // A hung timepoint's pixels are the pane's, cached or not.
                    let hung = [Role::Prior, Role::Current].into_iter().find(|r| t.hung[super::role_slot(*r)] == k);
                    let series = p.series.clone().or_else(|| hung.and_then(|r| self.pane(r).series().cloned()));
                    inputs.push((p.id.clone(), series, Some(p.group.clone())));
                }
            }
            None => {
                for r in [Role::Prior, Role::Current] {
                    let Some(s) = self.pane(r).series().cloned() else {
                        self.status = "Track needs a prior and a current image, or a timeline".into();
                        return;
                    };
                    inputs.push((self.image_key(r), Some(s), None));
                }
            }
        }
        let key = self.image_key(role);
        let Some(at) = inputs.iter().position(|i| i.0 == key) else { return };
        let keys: Vec<String> = inputs.iter().map(|i| i.0.clone()).collect();
        let (slice, b) = (reference.frame as usize, reference.rect());
        let (cancel, progress) = self.jobs.start_grounding("Tracking through the timepoints");
        let model = engine.model_name().map(str::to_string);
        let from = f.id.clone();
        self.status = format!("tracking {} through {} timepoints…", f.label, inputs.len());
        self.jobs.spawn("track", Stamp::none(), move || {
            let n = inputs.len();
            let mut loaded = Vec::new();
            let mut series = Vec::new();
            let mut failed = None;
            for (k, (_, s, group)) in inputs.into_iter().enumerate() {
                if cancel.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(mut p) = progress.lock() {
                    *p = (k, n + 1);
                }
                match (s, group) {
                    (Some(s), _) => series.push(s),
                    (None, Some(g)) => match crate::study::series::load_group(&g, &|_, _| {}) {
                        Ok(s) => {
                            let s = Arc::new(s);
                            loaded.push((k, s.clone()));
                            series.push(s);
                        }
                        Err(e) => {
                            failed = Some(format!("timepoint {k}: {e}"));
                            break;
                        }
                    },
                    (None, None) => {
                        failed = Some(format!("timepoint {k} is not loaded"));
                        break;
                    }
                }
            }
            let result = match failed {
                Some(e) => Err(e),
                None if series.len() < n => Err("cancelled".into()),
                None => (|| {
                    let refs: Vec<&Series> = series.iter().map(|s| s.as_ref()).collect();
                    let slices = track::timepoint_slices(&refs, at, slice)?;
                    let frames: Vec<&crate::study::Frame> = slices.iter().zip(&refs).map(|(s, r)| &r.frames[*s]).collect();
                    // Timepoints of other pixel sizes or matrices are followed on the box's
                    // timepoint's grid (resampled by pixel spacing), their boxes mapped back.
                    let grids: Vec<OnGrid> = frames.iter().map(|f| track::onto(frames[at], f)).collect();
                    let (w, h) = (frames[at].width, frames[at].height);
                    let grays: Vec<crate::study::GrayImage> =
                        frames.iter().zip(&grids).map(|(f, g)| track::resample(&f.to_gray(), g, w, h)).collect();
                    if let Ok(mut p) = progress.lock() {
                        *p = (n, n + 1);
                    }
                    let path = track::follow(&engine, &grays, at, b, Method::Model)?;
                    // The lesion's own diameters where it stands out at every timepoint (on the
                    // common grid, whose spacing is the box's timepoint's), else box sides.
                    let in_mm = frames.iter().all(|f| f.meta.pixel_spacing_mm.is_some());
                    let outlined = track::outlined(&grays, &path, &grids, if in_mm { frames[at].meta.pixel_spacing_mm } else { None });
                    Ok(slices
                        .into_iter()
                        .zip(path)
                        .zip(&grids)
                        .enumerate()
                        .map(|(k, ((slice, (bbox, score)), g))| match &outlined {
                            Some(o) => TrackedStep { slice, bbox: o[k].0, score, outline: Some(o[k].1) },
                            None => TrackedStep { slice, bbox: g.from_reference(bbox), score, outline: None },
                        })
                        .collect())
                })(),
            };
            JobResult::Timeline(TimelineResult::Tracked { job: cancel, generation, from, keys, model, result, loaded })
        });
    }

    /// The tracked finding: one box per timepoint, measured on each, linked to the finding it was
    /// followed from; one undo step.
    fn add_track(&mut self, from: &str, keys: &[String], model: Option<&str>, steps: &[TrackedStep]) {
        let Some(origin) = self.doc.finding(from).cloned() else {
            self.status = "Track: the finding was deleted while it was followed".into();
            return;
        };
        let mut boxes: Vec<ImageBox> = keys.iter().zip(steps).map(|(k, s)| ImageBox::new(k, s.slice as u32, s.bbox)).collect();
        for b in &mut boxes {
            if let Some(img) = self.doc.image(&b.image) {
                b.bbox = crate::annotation::document::round_box(b.rect().clamp_to(img.width as f32, img.height as f32)).to_array();
            }
        }
        let entries: Vec<(String, u32, [f32; 4])> = boxes.iter().map(|b| (b.image.clone(), b.frame, b.bbox)).collect();
        let spacing: Vec<Option<[f64; 2]>> = keys.iter().map(|k| self.spacing_of(k)).collect();
        let score = steps.iter().map(|s| s.score).fold(1.0f32, f32::min);
        let (id, version) = match model.and_then(|m| m.rsplit_once(' ')) {
            Some((id, v)) => (id.to_string(), v.to_string()),
            None => (model.unwrap_or("baseline").to_string(), String::new()),
        };
        let now = crate::annotation::document::now();
        let label = if origin.label == origin.kind.label() { "tracked".to_string() } else { origin.label.clone() };
        let source = Source::Model { id, version, score: (score.clamp(0.0, 1.0) * 1000.0).round() / 1000.0 };
        let mut f = Finding::new(FindingKind::Correspondence, &label, boxes, source, &now);
        let outlined: Option<Vec<(f64, f64, f64)>> = steps.iter().map(|s| s.outline.map(|d| (d.long, d.short, d.area))).collect();
        f.track = Some(match outlined {
            Some(sizes) => {
                let units = if spacing.iter().all(Option::is_some) { "mm" } else { "px" };
                Track::from_sizes(&entries, &sizes, units, crate::annotation::track::OUTLINE_AXES)
            }
            None => Track::measure(&entries, &spacing),
        });
        f.extra.insert("tracked_from".into(), serde_json::Value::String(origin.id.clone()));
        let fid = f.id.clone();
        self.apply(Command::Add { findings: vec![f], description: format!("track {label} through {} timepoints", keys.len()) });
        self.doc.schema_version = self.doc.required_version().max(self.doc.schema_version);
        self.show_plot = true;
        self.select_and_reveal(&fid);
        self.status = format!("followed {label} through {} timepoints — the plot shows its size over time", keys.len());
    }
}

/// Boxes clamped to their images (a prior box mapped through the registration may reach past
/// the prior's edge; exports refuse such boxes).
fn clamp_to_images(findings: &mut [Finding], doc: &Document) {
    for f in findings {
        for b in &mut f.boxes {
            if let Some(img) = doc.image(&b.image).filter(|i| i.width > 0 && i.height > 0) {
                b.bbox = crate::annotation::document::round_box(b.rect().clamp_to(img.width as f32, img.height as f32)).to_array();
            }
        }
        f.boxes.retain(|b| b.bbox[2] > b.bbox[0] && b.bbox[3] > b.bbox[1]);
    }
}

/// The strip of timepoints across the top: thumbnail, date, modality and description of each,
/// the hung ones marked, and buttons (and a context menu) that hang one as prior or current.
pub(super) fn timeline_strip_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    let Some(t) = &app.timeline else { return };
    egui::Panel::top("timeline").show(ui, |ui| {
        egui::ScrollArea::horizontal().show(ui, |ui| {
            // Cards of one height, tops aligned (a hung card's badge must not shift it down).
            ui.horizontal_top(|ui| {
                ui.vertical(|ui| {
                    ui.label(RichText::new(format!("Timeline\n{} studies", t.points.len())).strong());
                    let open = app.grid.is_some();
                    let shown = t.points.len().min(super::grid::MAX_GRID);
                    if ui
                        .add(egui::Button::new("Grid").selected(open).shortcut_text("T"))
                        .on_hover_text(format!("Show {shown} timepoints side by side, scrolled together (T); again to go back"))
                        .clicked()
                    {
                        out.push(AppCommand::Timeline(TimelineCommand::Grid(!open)));
                    }
                });
                for (k, p) in t.points.iter().enumerate() {
                    let role = [Role::Prior, Role::Current].into_iter().find(|r| t.hung[super::role_slot(*r)] == k);
                    let fill = match role {
                        Some(Role::Prior) => Color32::from_rgb(40, 60, 90),
                        Some(Role::Current) => Color32::from_rgb(30, 80, 60),
                        None => Color32::from_gray(35),
                    };
                    // Right-click on the thumbnail or the date: the same choices as the buttons.
                    let menu = |r: egui::Response, out: &mut Vec<AppCommand>| {
                        r.context_menu(|ui| {
                            for r in [Role::Prior, Role::Current] {
                                if ui.button(format!("Hang as {}", r.label())).clicked() {
                                    out.push(AppCommand::Timeline(TimelineCommand::Hang { role: r, point: k }));
                                    ui.close();
                                }
                            }
                        });
                    };
                    egui::Frame::new().fill(fill).inner_margin(4.0).corner_radius(3.0).show(ui, |ui| {
                        ui.horizontal(|ui| {
                            let tex = p.texture(ui.ctx());
                            let size = tex.size_vec2() * (56.0 / tex.size_vec2().max_elem().max(1.0));
                            let thumb = ui.add(egui::Image::new((tex.id(), size)).sense(egui::Sense::click()));
                            menu(thumb.on_hover_text("Right-click to hang this study"), out);
                            ui.vertical(|ui| {
                                let badge = role.map(|r| format!("  {}", r.label().to_uppercase())).unwrap_or_default();
                                let date = ui.add(
                                    egui::Label::new(RichText::new(format!("{}{badge}", p.date())).strong()).sense(egui::Sense::click()),
                                );
                                menu(date, out);
                                ui.label(format!("{} · {} slice(s)", p.modality(), p.frames));
                                // Always a line, so that every card has the same height.
                                ui.label(if p.description().is_empty() { "—" } else { p.description() });
                                ui.horizontal(|ui| {
                                    for r in [Role::Prior, Role::Current] {
                                        let on = role == Some(r);
                                        let b = ui.add_enabled(!on, egui::Button::new(r.label()).small()).on_hover_text(format!(
                                            "Hang {} as {}",
                                            p.date(),
                                            r.label()
                                        ));
                                        let b = b.accessible_name(format!("hang {} as {}", p.id, r.label()));
                                        if b.clicked() {
                                            out.push(AppCommand::Timeline(TimelineCommand::Hang { role: r, point: k }));
                                        }
                                    }
                                });
                            });
                        });
                    });
                }
            });
        });
    });
}

/// The grounding panel's timeline entries: the whole-series option and "Track".
pub(super) fn grounding_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    let multi = app.panes.iter().all(|p| p.frame_count() > 1);
    let mut whole = app.whole_series;
    if ui
        .add_enabled(multi, egui::Checkbox::new(&mut whole, "Whole series"))
        .on_hover_text("Find changes on every matched slice pair of the two series, not only on the shown slices")
        .changed()
    {
        out.push(AppCommand::Timeline(TimelineCommand::SetWholeSeries(whole)));
    }
    let ready = app.engine.is_some() && app.jobs.grounding.is_none();
    let can_track = ready && app.selected.is_some() && (app.timeline.is_some() || app.panes.iter().all(|p| p.series().is_some()));
    let what = if app.timeline.is_some() { "every other timepoint" } else { "the other image" };
    if ui
        .add_enabled(can_track, egui::Button::new("Track"))
        .on_hover_text(format!("Follow the selected finding to {what}, measuring it in each"))
        .clicked()
    {
        out.push(AppCommand::Timeline(TimelineCommand::Track));
    }
}
