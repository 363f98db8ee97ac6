//! The timeline grid: up to six timepoints side by side, each pane headed by its study and
//! showing that timepoint's boxes, scrolled together by Image Position along the slice normal
//! (one frame of reference), through a 3D rigid registration (frames of reference differ; else a
//! shift along the normal found by comparing slices), else by slice index.

mod place;

use std::collections::BTreeSet;
use std::sync::Arc;

use eframe::egui::{self, Color32, FontId, Rect, Sense, Vec2};

use super::timeline::{CACHE_BYTES, TimelineResult, series_bytes};
use super::{App, AppCommand, TimelineCommand};
use crate::annotation::Finding;
use crate::grounding::series::Matching;
use crate::study::{Series, Window};
use crate::viewer::jobs::{JobResult, Stamp, progress_cell};
use crate::viewer::overlay::{self, OverlayState};
use crate::viewer::pane::{Pane, PaneChanges, PaneId, Preset, Role, SharedProgress, View};
pub use place::{Placement, Space};

/// The most timepoints the grid shows at once.
pub const MAX_GRID: usize = 6;

/// Grid panes draw from GPU texture slots of their own, clear of the pair's.
const FIRST_SLOT: usize = 16;

/// Height of the strip above each grid pane that names its study.
const HEADER: f32 = 22.0;

/// Where grid panes' generations start: a GPU texture is keyed by slot, generation and frame, so a
/// pane of a later grid in the same slot must not reuse an earlier grid's generation (it would
/// show the earlier grid's picture).
static GRID_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 16);

/// One timepoint in the grid.
pub struct GridPane {
    /// The timepoint's index in the timeline.
    pub point: usize,
    pub pane: Pane,
    /// Each slice's position along the reference pane's slice normal (mm, in the reference's
    /// frame of reference), once placed; `None` follows the others by relative slice index.
    pub positions: Option<Vec<f64>>,
    /// Its slices in space, mapped into the reference's frame (by a 3D rigid registration when
    /// the frames differ): a pane follows another that has them by the point at the centre of
    /// that pane's slice, else by `positions`.
    pub space: Option<Space>,
    /// How its positions were found, once placed.
    pub matching: Option<Matching>,
    /// Why it follows by index though positions were sought.
    pub why_index: Option<String>,
    /// Why, in another frame of reference, it was not registered in 3D.
    pub why_not_rigid: Option<String>,
}

/// The grid's panes and how they follow one another.
pub struct Grid {
    /// The timeline it shows (a grid of an earlier timeline is dropped).
    pub generation: u64,
    pub panes: Vec<GridPane>,
    /// The pane keys and the side panel act on (last hovered).
    pub active: usize,
    /// The pane whose slice normal and frame of reference the others are placed in: the hung
    /// current, when shown.
    pub reference: usize,
    /// Timepoints of the timeline the grid leaves out.
    pub left_out: usize,
    placing: bool,
    /// What the placing job is doing.
    progress: SharedProgress,
}

impl Grid {
    /// True while a pane loads or the panes are being placed.
    pub fn is_busy(&self) -> bool {
        self.placing || self.panes.iter().any(|p| p.pane.is_loading())
    }

    /// How the panes follow one another, in words.
    pub fn sync_text(&self) -> String {
        if self.panes.iter().any(|p| p.matching.is_none()) {
            let doing = self.progress.lock().map(|p| p.1.clone()).unwrap_or_default();
            return if doing.is_empty() { "placing the series…".into() } else { format!("placing the series: {doing}…") };
        }
        let count = |m: Matching| self.panes.iter().filter(|p| p.positions.is_some() && p.matching == Some(m)).count();
        let mut parts = Vec::new();
        let rigid = count(Matching::Rigid);
        if rigid > 0 {
            parts.push(format!("{rigid} pane(s) in another frame of reference by a 3D rigid registration"));
        }
        let shifted = count(Matching::RegisteredPosition);
        if shifted > 0 {
            let why = self.panes.iter().find_map(|p| p.why_not_rigid.clone()).map(|w| format!("; {w}")).unwrap_or_default();
            parts.push(format!("{shifted} pane(s) by a registered shift along the slice normal (frames of reference differ{why})"));
        }
        let by_index = self.panes.iter().filter(|p| p.positions.is_none()).count();
        if by_index > 0 {
            let why = self.panes.iter().find_map(|p| p.why_index.clone()).unwrap_or_default();
            parts.push(format!("{by_index} pane(s) by slice index ({why})"));
        }
        if parts.is_empty() {
            "synced by Image Position along the slice normal".into()
        } else {
            format!("synced by Image Position along the slice normal; {}", parts.join("; "))
        }
    }

    /// The point pane `i` is followed by: its shown slice's centre in the reference's frame,
    /// when placed in space.
    fn point(&self, i: usize) -> Option<[f64; 3]> {
        let p = self.panes.get(i)?;
        p.space.as_ref()?.centre_in_reference(p.pane.frame)
    }

    /// How far pane `i`'s shown slice lies from the level of pane `from` (mm): from its plane to
    /// the centre of `from`'s slice along its normal when both are placed in space, else the
    /// difference of their positions along the reference's normal.
    pub fn offset_mm(&self, i: usize, from: usize) -> Option<f64> {
        let p = self.panes.get(i)?;
        if let (Some(space), Some(q)) = (&p.space, self.point(from)) {
            return space.offset_mm(p.pane.frame, q);
        }
        let at = |p: &GridPane| p.positions.as_ref()?.get(p.pane.frame).copied();
        Some(at(p)? - at(self.panes.get(from)?)?)
    }
}

/// The timepoints a grid of a timeline of `n` shows, in time order: all of them up to
/// `MAX_GRID`, else the baseline, the hung pair and the latest others.
pub fn grid_points(n: usize, hung: [usize; 2]) -> Vec<usize> {
    let mut keep: BTreeSet<usize> = [0, hung[0], hung[1]].into_iter().filter(|k| *k < n).collect();
    for k in (0..n).rev() {
        if keep.len() >= MAX_GRID {
            break;
        }
        keep.insert(k);
    }
    keep.into_iter().collect()
}

/// The slice of a pane of `to_len` slices (placed at `to`) at the level of slice `slice` of a pane
/// of `from_len` slices (placed at `from`): the nearest by position when both are placed, else
/// the same relative index. `None` when there is nothing to follow (a single slice on either side).
pub fn follow(from: Option<&[f64]>, from_len: usize, slice: usize, to: Option<&[f64]>, to_len: usize) -> Option<usize> {
    if let (Some(f), Some(t)) = (from, to)
        && let Some(z) = f.get(slice)
    {
        return t.iter().enumerate().min_by(|a, b| (a.1 - z).abs().total_cmp(&(b.1 - z).abs())).map(|(i, _)| i);
    }
    (from_len > 1 && to_len > 1).then(|| ((slice.min(from_len - 1) as f64 / (from_len - 1) as f64) * (to_len - 1) as f64).round() as usize)
}

/// What a grid job answered.
pub enum GridResult {
    Loaded {
        generation: u64,
        point: usize,
        result: Result<Arc<Series>, String>,
    },
    /// Each pane's placement, in pane order; `job` is the progress cell of the grid it was
    /// started for (a grid closed and opened again on the same timeline must not take an earlier
    /// opening's placement, whose panes may differ).
    Placed {
        generation: u64,
        job: SharedProgress,
        placed: Vec<Placement>,
    },
}

impl App {
    pub fn grid(&self) -> Option<&Grid> {
        self.grid.as_ref()
    }

    /// Opens the grid on the timeline's timepoints (at most `MAX_GRID`), each at the level of the
    /// current pane once placed.
    pub(super) fn open_grid(&mut self) {
        let Some(t) = &self.timeline else {
            self.status = "the grid shows a timeline: open a folder of three studies or more".into();
            return;
        };
        let points = grid_points(t.points.len(), t.hung);
        let left_out = t.points.len() - points.len();
        let reference = points.iter().position(|k| *k == t.hung[1]).unwrap_or(points.len() - 1);
        let generation = t.generation;
        let mut panes = Vec::new();
        let mut loads = Vec::new();
        for (i, &k) in points.iter().enumerate() {
            let p = &t.points[k];
            let mut pane = Pane::new(PaneId(FIRST_SLOT + i), if k == t.hung[0] { Role::Prior } else { Role::Current });
            pane.title = Some(format!("{} · {}", p.date(), p.id));
            // Room for the loading and loaded steps that follow.
            pane.generation = GRID_GENERATION.fetch_add(4, std::sync::atomic::Ordering::Relaxed);
            // The pixels of a hung timepoint are its pane's, cached or not.
            let hung = [Role::Prior, Role::Current].into_iter().find(|r| t.hung[super::role_slot(*r)] == k);
            match p.series.clone().or_else(|| hung.and_then(|r| self.pane(r).series().cloned())) {
                Some(s) => pane.set_series(s),
                None => {
                    let cell = progress_cell();
                    pane.set_loading(p.date(), cell.clone());
                    loads.push((k, p.group.clone(), cell));
                }
            }
            panes.push(GridPane { point: k, pane, positions: None, space: None, matching: None, why_index: None, why_not_rigid: None });
        }
        let frame = self.pane(Role::Current).frame;
        if let Some(r) = panes.get_mut(reference) {
            r.pane.set_frame(frame);
        }
        for (point, group, cell) in loads {
            self.jobs.spawn("grid timepoint", Stamp::none(), move || {
                let report = |f: f32, msg: &str| {
                    if let Ok(mut p) = cell.lock() {
                        *p = (f, msg.to_string());
                    }
                };
                let result = crate::study::series::load_group(&group, &report).map(Arc::new).map_err(|e| e.to_string());
                JobResult::Timeline(TimelineResult::Grid(GridResult::Loaded { generation, point, result }))
            });
        }
        let n = panes.len();
        self.grid = Some(Grid { generation, panes, active: reference, reference, left_out, placing: false, progress: progress_cell() });
        self.status = if left_out > 0 {
            format!("grid of {n} of {} timepoints (the baseline, the hung pair and the latest); T or Grid goes back", n + left_out)
        } else {
            format!("grid of {n} timepoints; T or Grid goes back to prior | current")
        };
        self.ensure_grid();
    }

    pub(super) fn close_grid(&mut self) {
        if self.grid.take().is_some() {
            self.status = "back to prior | current".into();
        }
    }

    /// Drops a grid of a timeline no longer open, and places the panes once all are loaded.
    pub(super) fn ensure_grid(&mut self) {
        let generation = self.timeline.as_ref().map(|t| t.generation);
        if self.grid.as_ref().is_some_and(|g| Some(g.generation) != generation) {
            self.grid = None;
        }
        let Some(g) = self.grid.as_mut() else { return };
        if g.placing || g.panes.iter().all(|p| p.matching.is_some()) {
            return;
        }
        // Once every pane is loaded or failed (a failed one is placed by index, not waited for).
        if g.panes.iter().any(|p| p.pane.series().is_none() && p.matching.is_none()) {
            return;
        }
        let series: Vec<Option<Arc<Series>>> = g.panes.iter().map(|p| p.pane.series().cloned()).collect();
        let Some(reference) = g.panes.get(g.reference).and_then(|p| p.pane.series().cloned()) else {
            // The reference failed: there is no frame to place the others in.
            for p in g.panes.iter_mut().filter(|p| p.matching.is_none()) {
                p.matching = Some(Matching::Index);
                p.why_index = Some("the hung current did not load".into());
            }
            return;
        };
        g.placing = true;
        let (generation, cell) = (g.generation, g.progress.clone());
        let names: Vec<String> = g.panes.iter().map(|p| p.pane.title.clone().unwrap_or_default()).collect();
        // Registering across frames of reference reads every slice: off the UI thread.
        self.jobs.spawn("grid placement", Stamp::none(), move || {
            let mut registered = place::Registered::new();
            let placed = series
                .iter()
                .zip(&names)
                .map(|(s, name)| {
                    let report = |msg: String| {
                        if let Ok(mut p) = cell.lock() {
                            p.1 = format!("{name}: {msg}");
                        }
                    };
                    match s {
                        Some(s) => place::place(&reference, s, &mut registered, &report),
                        None => Placement::by_index("not loaded".into()),
                    }
                })
                .collect();
            JobResult::Timeline(TimelineResult::Grid(GridResult::Placed { generation, job: cell, placed }))
        });
    }

    pub(super) fn on_grid_job(&mut self, result: GridResult) {
        match result {
            GridResult::Loaded { generation, point, result } => {
                let Some(g) = self.grid.as_mut().filter(|g| g.generation == generation) else { return };
                let Some(gp) = g.panes.iter_mut().find(|p| p.point == point) else { return };
                match result {
                    Ok(series) => {
                        gp.pane.set_series(series.clone());
                        if let Some(t) = self.timeline.as_mut().filter(|t| t.generation == generation)
                            && t.cached_bytes() + series_bytes(&series) <= CACHE_BYTES
                            && let Some(p) = t.points.get_mut(point)
                        {
                            p.series = Some(series);
                        }
                    }
                    Err(e) => {
                        gp.pane.set_failed(format!("timepoint {point}"), e);
                        // It takes no part in the sync; the others are placed without it.
                        gp.matching = Some(Matching::Index);
                        gp.why_index = Some("not loaded".into());
                    }
                }
            }
            GridResult::Placed { generation, job, placed } => {
                let Some(g) = self.grid.as_mut().filter(|g| g.generation == generation && Arc::ptr_eq(&g.progress, &job)) else { return };
                g.placing = false;
                for (gp, p) in g.panes.iter_mut().zip(placed) {
                    gp.positions = p.positions;
                    gp.space = p.space;
                    gp.matching = Some(p.matching);
                    gp.why_index = p.why_index;
                    gp.why_not_rigid = p.why_not_rigid;
                }
                let (reference, text) = (g.reference, g.sync_text());
                self.grid_follow(reference);
                self.status = format!("grid: {text}");
            }
        }
    }

    /// Moves every other pane to the level of pane `from`'s slice: a pane placed in space to its
    /// slice nearest the centre of `from`'s (when that is placed in space too), else by position.
    fn grid_follow(&mut self, from: usize) {
        let Some(g) = self.grid.as_mut() else { return };
        let point = g.point(from);
        let Some(src) = g.panes.get(from) else { return };
        let (positions, len, slice) = (src.positions.clone(), src.pane.frame_count(), src.pane.frame);
        for (i, gp) in g.panes.iter_mut().enumerate() {
            if i == from {
                continue;
            }
            if let Some(s) = point.zip(gp.space.as_ref()).and_then(|(q, space)| space.nearest(q)) {
                gp.pane.set_frame(s);
            } else if let Some(s) = follow(positions.as_deref(), len, slice, gp.positions.as_deref(), gp.pane.frame_count()) {
                gp.pane.set_frame(s);
            }
        }
    }

    /// Frames forward (or back) in the grid's active pane, the others following when scroll sync
    /// is on.
    pub(super) fn grid_step(&mut self, delta: i32) {
        let Some(g) = self.grid.as_mut() else { return };
        let active = g.active;
        let Some(gp) = g.panes.get_mut(active) else { return };
        gp.pane.step_frame(delta);
        if self.sync.scroll {
            self.grid_follow(active);
        }
    }

    /// Cine in the grid: the active pane `due` frames on (wrapping), the others following when
    /// scroll sync is on.
    pub(super) fn grid_cine_step(&mut self, due: usize) {
        let Some(g) = self.grid.as_mut() else { return };
        let active = g.active;
        let Some(gp) = g.panes.get_mut(active) else { return };
        let n = gp.pane.frame_count().max(1);
        gp.pane.set_frame((gp.pane.frame + due) % n);
        if self.sync.scroll {
            self.grid_follow(active);
        }
    }

    /// A window preset on every grid pane when window sync is on, else on the active one.
    pub(super) fn grid_preset(&mut self, preset: Preset) {
        let (sync, Some(g)) = (self.sync.window, self.grid.as_mut()) else { return };
        let active = g.active;
        for (i, gp) in g.panes.iter_mut().enumerate() {
            if sync || i == active {
                gp.pane.apply_preset(preset);
            }
        }
    }

    pub(super) fn grid_reset(&mut self) {
        if let Some(g) = self.grid.as_mut() {
            g.panes.iter_mut().for_each(|p| p.pane.reset());
        }
    }

    /// What one pane's input did, mirrored onto the others as the sync settings say: the slice by
    /// position, zoom and pan relative to fitting, the window by the same relative change.
    fn grid_mirror(&mut self, from: usize, changes: PaneChanges) {
        if changes.frame_delta != 0 && self.sync.scroll {
            self.grid_follow(from);
        }
        let sync = self.sync;
        let Some(g) = self.grid.as_mut() else { return };
        let Some(src) = g.panes.get(from) else { return };
        let (src_rect, src_view) = (src.pane.rect, src.pane.view);
        let src_size = src.pane.current_frame().map(|f| (f.width, f.height));
        let src_default = src.pane.current_frame().map_or(1.0, |f| f.default_window.width);
        for (i, gp) in g.panes.iter_mut().enumerate() {
            if i == from {
                continue;
            }
            let dst = &mut gp.pane;
            if changes.view
                && sync.zoom_pan
                && let (Some(v), Some((sw, sh)), Some((dw, dh))) = (src_view, src_size, dst.current_frame().map(|f| (f.width, f.height)))
            {
                let rel = v.zoom / View::fit(src_rect, sw, sh).zoom;
                dst.view = Some(View {
                    zoom: rel * View::fit(dst.rect, dw, dh).zoom,
                    center: Vec2::new(v.center.x / sw as f32 * dw as f32, v.center.y / sh as f32 * dh as f32),
                });
            }
            if let Some((before, after)) = changes.window
                && sync.window
                && dst.series().is_some()
            {
                let ratio = dst.current_frame().map_or(1.0, |f| f.default_window.width) / src_default.max(1e-6);
                dst.window = Window {
                    center: dst.window.center + (after.center - before.center) * ratio,
                    width: (dst.window.width * after.width / before.width.max(1e-6)).max(1e-3),
                };
                dst.use_voi_lut = false;
            }
        }
    }

    /// The grid in the central panel: a bar saying how the panes are synced (and what is left
    /// out), then the panes in rows, each under a strip naming its study and slice position.
    pub(super) fn grid_ui(&mut self, ui: &mut egui::Ui, frame: &eframe::Frame) {
        let Some(mut g) = self.grid.take() else { return };
        let full = ui.max_rect();
        let bar = Rect::from_min_size(full.min, Vec2::new(full.width(), 26.0));
        ui.scope_builder(egui::UiBuilder::new().max_rect(bar.shrink2(Vec2::new(6.0, 2.0))), |ui| {
            ui.horizontal(|ui| {
                if ui.button("Back to prior | current").on_hover_text("Leave the grid (T)").clicked() {
                    self.emit(AppCommand::Timeline(TimelineCommand::Grid(false)));
                }
                let shown = g.panes.len();
                let mut text = format!("{shown} timepoints · {}", g.sync_text());
                if g.left_out > 0 {
                    text = format!(
                        "{shown} of {} timepoints (the baseline, the hung pair and the latest; hang others to see them) · {}",
                        shown + g.left_out,
                        g.sync_text()
                    );
                }
                ui.add(egui::Label::new(egui::RichText::new(&text).color(Color32::LIGHT_GRAY)).truncate()).on_hover_text(&text);
            });
        });
        let area = Rect::from_min_max(full.min + Vec2::new(0.0, bar.height()), full.max);
        let cells = cells(area, g.panes.len());
        let render_state = if self.cpu_rendering { None } else { frame.wgpu_render_state() };
        let hung = self.timeline.as_ref().map(|t| t.hung).unwrap_or([usize::MAX; 2]);
        let mut mirrored = Vec::new();
        for (i, cell) in cells.iter().enumerate() {
            let image = Rect::from_min_max(cell.min + Vec2::new(0.0, HEADER), cell.max);
            let gp = &mut g.panes[i];
            let key = self.timeline.as_ref().and_then(|t| t.points.get(gp.point)).map(|p| p.id.clone()).unwrap_or_default();
            let response = ui.allocate_rect(image, Sense::CLICK | Sense::DRAG).accessible_name(format!("grid pane {key}"));
            self.take_keyboard_on_press(ui, &response);
            if response.hovered() {
                g.active = i;
            }
            let gp = &mut g.panes[i];
            gp.pane.rect = image;
            let changes = gp.pane.handle_input(ui, &response, true);
            if changes.window.is_some() || changes.view || changes.frame_delta != 0 {
                mirrored.push((i, changes));
            }
            let visible = |f: &Finding| self.visible(f);
            let frame_no = gp.pane.frame as u32;
            // A click selects the box under it, as on the pair's panes.
            let select = response
                .clicked_by(egui::PointerButton::Primary)
                .then(|| response.interact_pointer_pos())
                .flatten()
                .map(|p| overlay::hit(&gp.pane, &self.doc, &visible, &key, frame_no, self.selected.as_deref(), p).map(|(id, _)| id));
            gp.pane.paint(ui, image, render_state);
            let painter = ui.painter_at(image);
            let st = OverlayState { image_id: &key, frame: frame_no, selected: self.selected.as_deref(), hovered: None, preview: None };
            overlay::draw(&painter, &gp.pane, &self.doc, &visible, &st);
            gp.pane.paint_corners(&painter, image);
            if g.active == i {
                painter.rect_stroke(
                    image.shrink(0.5),
                    0.0,
                    egui::Stroke::new(1.0, Color32::from_rgb(70, 110, 170)),
                    egui::StrokeKind::Inside,
                );
            }
            let role = [Role::Prior, Role::Current].into_iter().find(|r| hung[super::role_slot(*r)] == gp.point);
            let off = if i == g.active { None } else { g.offset_mm(i, g.active) };
            let gp = &g.panes[i];
            let z = gp.positions.is_some().then(|| gp.pane.current_frame().and_then(|f| f.slice_position)).flatten();
            let header = header_text(self.timeline.as_ref().and_then(|t| t.points.get(gp.point)), role, &gp.pane, z, off);
            paint_header(ui, Rect::from_min_max(cell.min, egui::pos2(cell.max.x, image.min.y)), role, &header);
            if let Some(id) = select {
                self.queued.push(AppCommand::Select(id));
            }
        }
        self.grid = Some(g);
        for (i, changes) in mirrored {
            self.grid_mirror(i, changes);
        }
    }
}

/// Rectangles for `n` panes filling `area`, in the rows and columns that show a square image
/// largest (three panes take a 2 × 2 grid when the area is wider than tall).
fn cells(area: Rect, n: usize) -> Vec<Rect> {
    let n = n.max(1);
    let gap = 3.0;
    let size = |rows: usize| {
        let cols = n.div_ceil(rows);
        let w = (area.width() - gap * (cols as f32 - 1.0)) / cols as f32;
        let h = (area.height() - gap * (rows as f32 - 1.0)) / rows as f32;
        (cols, w, h)
    };
    let rows = (1..=n).max_by(|a, b| {
        let side = |r: usize| {
            let (_, w, h) = size(r);
            w.min(h - HEADER)
        };
        // Ties go to fewer rows.
        side(*a).total_cmp(&side(*b)).then(b.cmp(a))
    });
    let rows = rows.unwrap_or(1);
    let (cols, w, h) = size(rows);
    (0..n)
        .map(|k| {
            let (c, r) = (k % cols, k / cols);
            Rect::from_min_size(area.min + Vec2::new(c as f32 * (w + gap), r as f32 * (h + gap)), Vec2::new(w, h))
        })
        .collect()
}

/// The strip over a grid pane: (left) its date, modality, description and pair role; (right) its
/// slice, its position along its own normal (in its own frame of reference) and `off`: how far
/// it lies from the active pane's level (`Grid::offset_mm`).
fn header_text(point: Option<&super::Timepoint>, role: Option<Role>, pane: &Pane, z: Option<f64>, off: Option<f64>) -> (String, String) {
    let left = match point {
        Some(p) => {
            let mut parts = vec![p.date(), p.modality().to_string(), p.description().to_string()];
            if let Some(r) = role {
                parts.push(r.label().to_uppercase());
            }
            parts.retain(|s| !s.is_empty());
            parts.join(" · ")
        }
        None => String::new(),
    };
    let mut right = match pane.frame_count() {
        0 => String::new(),
        n => format!("slice {}/{n}", pane.frame + 1),
    };
    if let Some(z) = z {
        right.push_str(&format!(" · {z:.1} mm"));
        // The nearest slice may lie off the level followed (other slice spacing, less coverage).
        if let Some(off) = off.filter(|d| d.abs() > 1.0) {
            right.push_str(&format!(" ({off:+.1} mm off)"));
        }
    }
    (left, right)
}

fn paint_header(ui: &egui::Ui, rect: Rect, role: Option<Role>, (left, right): &(String, String)) {
    let painter = ui.painter_at(rect);
    let fill = match role {
        Some(Role::Prior) => Color32::from_rgb(40, 60, 90),
        Some(Role::Current) => Color32::from_rgb(30, 80, 60),
        None => Color32::from_gray(40),
    };
    painter.rect_filled(rect, 0.0, fill);
    let font = FontId::proportional(13.0);
    let r = painter.text(rect.right_center() - Vec2::new(6.0, 0.0), egui::Align2::RIGHT_CENTER, right, font.clone(), Color32::LIGHT_GRAY);
    // The study's line gives way to the slice's where the pane is narrow, cut short with "…".
    let mut job = egui::text::LayoutJob::simple_singleline(left.clone(), font, Color32::WHITE);
    job.wrap = egui::text::TextWrapping {
        max_width: (r.min.x - rect.min.x - 18.0).max(0.0),
        max_rows: 1,
        break_anywhere: true,
        overflow_character: Some('…'),
    };
    let galley = painter.layout_job(job);
    painter.galley(egui::pos2(rect.min.x + 6.0, rect.center().y - galley.size().y / 2.0), galley, Color32::WHITE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_at_most_keeping_the_baseline_and_the_hung_pair() {
        assert_eq!(grid_points(3, [1, 2]), [0, 1, 2]);
        assert_eq!(grid_points(6, [0, 5]), [0, 1, 2, 3, 4, 5]);
        assert_eq!(grid_points(9, [7, 8]), [0, 4, 5, 6, 7, 8]);
        assert_eq!(grid_points(9, [1, 2]), [0, 1, 2, 6, 7, 8]);
        assert_eq!(grid_points(10, [0, 0]), [0, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn panes_follow_by_position_when_placed_else_by_relative_index() {
        // 2.5 mm slices: the other series starts 5 mm higher and has 1.25 mm slices.
        let a: Vec<f64> = (0..8).map(|k| 2.5 * k as f64).collect();
        let b: Vec<f64> = (0..12).map(|k| 5.0 + 1.25 * k as f64).collect();
        assert_eq!(follow(Some(&a), 8, 5, Some(&b), 12), Some(6), "12.5 mm");
        assert_eq!(follow(Some(&b), 12, 6, Some(&a), 8), Some(5));
        // Outside the other's coverage: its nearest end.
        assert_eq!(follow(Some(&a), 8, 0, Some(&b), 12), Some(0));
        assert_eq!(follow(None, 8, 7, Some(&b), 12), Some(11));
        assert_eq!(follow(Some(&a), 8, 3, None, 15), Some(6));
        assert_eq!(follow(Some(&a), 8, 3, None, 1), None);
    }

    #[test]
    fn the_sync_text_says_how_each_pane_follows_and_why_not_in_3d() {
        let pane = |i: usize, positions: bool, matching: Matching, why_not_rigid: Option<&str>| GridPane {
            point: i,
            pane: Pane::new(PaneId(FIRST_SLOT + i), Role::Current),
            positions: positions.then(Vec::new),
            space: None,
            matching: Some(matching),
            why_index: (!positions).then(|| "the slices carry no positions".into()),
            why_not_rigid: why_not_rigid.map(String::from),
        };
        let grid = |panes| Grid { generation: 0, panes, active: 0, reference: 0, left_out: 0, placing: false, progress: progress_cell() };
        let same = grid(vec![pane(0, true, Matching::Position, None), pane(1, true, Matching::Position, None)]);
        assert_eq!(same.sync_text(), "synced by Image Position along the slice normal");
        let mixed = grid(vec![
            pane(0, true, Matching::Position, None),
            pane(1, true, Matching::Rigid, None),
            pane(2, true, Matching::RegisteredPosition, Some("3D registration refused: too thin")),
            pane(3, false, Matching::Index, None),
        ]);
        let text = mixed.sync_text();
        for part in [
            "1 pane(s) in another frame of reference by a 3D rigid registration",
            "1 pane(s) by a registered shift along the slice normal (frames of reference differ; 3D registration refused: too thin)",
            "1 pane(s) by slice index (the slices carry no positions)",
        ] {
            assert!(text.contains(part), "{text}");
        }
        // Until every pane is placed, what the job is doing.
        let mut placing = grid(vec![pane(0, true, Matching::Position, None)]);
        placing.panes[0].matching = None;
        *placing.progress.lock().unwrap() = (0.0, "t2: reading 8/40 slices for the 3D registration".into());
        assert_eq!(placing.sync_text(), "placing the series: t2: reading 8/40 slices for the 3D registration…");
    }

    #[test]
    fn cells_fill_the_area_in_the_layout_that_shows_images_largest() {
        let wide = Rect::from_min_size(egui::pos2(0.0, 0.0), Vec2::new(1203.0, 500.0));
        let three = cells(wide, 3);
        assert_eq!(three.len(), 3);
        assert!(three.iter().all(|r| (r.height() - 500.0).abs() < 1e-3 && (r.width() - 399.0).abs() < 1e-3), "{three:?}");
        // Narrower: two rows of two show a larger image than one row of three.
        let square = Rect::from_min_size(egui::pos2(0.0, 0.0), Vec2::new(953.0, 703.0));
        let three = cells(square, 3);
        assert!(three.iter().all(|r| (r.width() - 475.0).abs() < 1e-3 && (r.height() - 350.0).abs() < 1e-3), "{three:?}");
        assert_eq!(three[2].min, egui::pos2(0.0, 353.0));
        let six = cells(square, 6);
        assert_eq!(six.len(), 6);
        assert!(six.iter().all(|r| square.expand(0.01).contains_rect(*r)));
        assert!(six.windows(2).all(|w| !w[0].intersects(w[1].shrink(0.5))));
    }
}
