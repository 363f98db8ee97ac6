//! One image pane: what it shows (loading, error, a series), its view (zoom, pan, frame,
//! window/level, invert), the input that changes them, and the painting of image and corners.

use std::sync::{Arc, Mutex};

use eframe::egui::{self, Align2, Color32, FontId, Pos2, Rect, Vec2};
use eframe::egui_wgpu;

use crate::study::progressive::{LoadControl, PartialSeries};
use crate::study::{Frame, Samples, Series, Window};
use crate::viewer::gpu::{DrawParams, ImageCallback, ImageRenderer};

/// Where a pane sits in the layout (0 = left) and which GPU texture slot it draws from. It is not
/// what the pane shows: that is its `Role`, the document's image key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaneId(pub usize);

/// Which study a pane shows, and the key of that image in the annotation document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Prior,
    Current,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Prior => "prior",
            Role::Current => "current",
        }
    }

    /// The key under which the document stores this image's boxes.
    pub fn image_key(self) -> &'static str {
        self.label()
    }

    pub fn other(self) -> Role {
        match self {
            Role::Prior => Role::Current,
            Role::Current => Role::Prior,
        }
    }
}

/// Progress shared with a loading thread: fraction and message.
pub type SharedProgress = Arc<Mutex<(f32, String)>>;

pub enum Content {
    Empty,
    Loading {
        source: String,
        progress: SharedProgress,
    },
    /// A folder series arriving file by file: shown and scrolled as it arrives, but not a series
    /// for anything else yet (sync, find changes, measurements see none until it is complete).
    Arriving {
        source: String,
        series: Box<PartialSeries>,
        windowed: bool,
    },
    Failed {
        source: String,
        error: String,
    },
    Ready(Arc<Series>),
}

/// Zoom and pan: `center` is the image point (pixel-edge coordinates) at the pane centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    /// Screen points per image pixel.
    pub zoom: f32,
    pub center: Vec2,
}

impl View {
    pub fn fit(rect: Rect, width: usize, height: usize) -> View {
        let zoom = (rect.width() / width.max(1) as f32).min(rect.height() / height.max(1) as f32).max(1e-3);
        View { zoom, center: Vec2::new(width as f32 / 2.0, height as f32 / 2.0) }
    }

    pub fn screen_from_image(&self, rect: Rect, p: Pos2) -> Pos2 {
        rect.center() + (p.to_vec2() - self.center) * self.zoom
    }

    pub fn image_from_screen(&self, rect: Rect, s: Pos2) -> Pos2 {
        ((s - rect.center()) / self.zoom + self.center).to_pos2()
    }

    /// Zooms by `factor` keeping the image point under `anchor` (screen) in place.
    pub fn zoom_at(&mut self, rect: Rect, anchor: Pos2, factor: f32) {
        let fixed = self.image_from_screen(rect, anchor);
        self.zoom = (self.zoom * factor).clamp(0.01, 64.0);
        self.center = fixed.to_vec2() - (anchor - rect.center()) / self.zoom;
    }
}

/// Named windows. CT presets are in Hounsfield units and only mean something on CT; the others
/// work on any grey image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Percentiles of the frame's values (0.5–99.5 %), whatever the file says.
    Auto,
    Lung,
    Mediastinum,
    Bone,
    Brain,
    /// The file's Window Center/Width or VOI LUT (auto when it has none): the pane's default.
    FromFile,
    /// The frame's whole value range, minimum to maximum.
    FullRange,
}

impl Preset {
    /// Keys 1–7 in this order.
    pub const ALL: [Preset; 7] =
        [Preset::Auto, Preset::Lung, Preset::Mediastinum, Preset::Bone, Preset::Brain, Preset::FromFile, Preset::FullRange];

    pub fn label(self) -> &'static str {
        match self {
            Preset::Auto => "Auto",
            Preset::Lung => "CT lung",
            Preset::Mediastinum => "CT mediastinum",
            Preset::Bone => "CT bone",
            Preset::Brain => "CT brain",
            Preset::FromFile => "From file",
            Preset::FullRange => "Full range",
        }
    }

    pub fn is_ct(self) -> bool {
        matches!(self, Preset::Lung | Preset::Mediastinum | Preset::Bone | Preset::Brain)
    }

    /// The presets offered for an image of `modality` (DICOM Modality): CT windows only on CT,
    /// where values are HU; elsewhere (MR, CR, US, SEG, a PNG) they would grey the image out.
    pub fn for_modality(modality: Option<&str>) -> Vec<Preset> {
        let ct = modality.is_some_and(|m| m.trim().eq_ignore_ascii_case("CT"));
        Preset::ALL.into_iter().filter(|p| ct || !p.is_ct()).collect()
    }

    /// The fixed window of a CT preset (HU); None for the ones computed from the frame.
    pub fn ct_window(self) -> Option<Window> {
        match self {
            Preset::Lung => Some(Window { center: -600.0, width: 1500.0 }),
            Preset::Mediastinum => Some(Window { center: 50.0, width: 350.0 }),
            Preset::Bone => Some(Window { center: 400.0, width: 1800.0 }),
            Preset::Brain => Some(Window { center: 40.0, width: 80.0 }),
            Preset::Auto | Preset::FromFile | Preset::FullRange => None,
        }
    }
}

/// What one frame of input did to a pane (the app mirrors it to the other pane when synced).
#[derive(Clone, Copy, Debug, Default)]
pub struct PaneChanges {
    /// Window before and after a W/L drag.
    pub window: Option<(Window, Window)>,
    pub view: bool,
    pub frame_delta: i32,
}

pub struct Pane {
    pub id: PaneId,
    pub role: Role,
    pub content: Content,
    pub frame: usize,
    pub view: Option<View>,
    pub window: Window,
    /// The VOI LUT (when the frame has one) is shown until the user adjusts the window.
    pub use_voi_lut: bool,
    /// The user's invert toggle (MONOCHROME1 is already accounted for).
    pub invert: bool,
    /// Changes whenever the content changes; part of the GPU texture key.
    pub generation: u64,
    pub rect: Rect,
    /// Shown in the corner for non-clinical content (the demo).
    pub note: Option<String>,
    /// Shown top right instead of the role (a timeline grid's pane names its timepoint).
    pub title: Option<String>,
    /// Set by the app for the frame being drawn: on the GPU path the pane composites the prior
    /// with its own image (flicker, fade, subtraction) instead of drawing it plainly.
    pub compare: Option<crate::viewer::compare::GpuCompare>,
    cpu_texture: Option<(u64, [u32; 4], egui::TextureHandle)>,
    /// The progressive load feeding this pane, then the prefetch keeping the slices near the
    /// shown one decoded: told which frame is shown, cancelled when the pane moves on.
    loader: Option<Arc<LoadControl>>,
}

impl Drop for Pane {
    fn drop(&mut self) {
        self.stop_loader();
    }
}

impl Pane {
    pub fn new(id: PaneId, role: Role) -> Self {
        Pane {
            id,
            role,
            content: Content::Empty,
            frame: 0,
            view: None,
            window: Window { center: 0.5, width: 1.0 },
            use_voi_lut: false,
            invert: false,
            generation: 0,
            rect: Rect::NOTHING,
            note: None,
            title: None,
            compare: None,
            cpu_texture: None,
            loader: None,
        }
    }

    pub fn series(&self) -> Option<&Arc<Series>> {
        match &self.content {
            Content::Ready(s) => Some(s),
            _ => None,
        }
    }

    pub fn current_frame(&self) -> Option<&Frame> {
        self.series().and_then(|s| s.frames.get(self.frame))
    }

    pub fn frame_count(&self) -> usize {
        match &self.content {
            Content::Ready(s) => s.frames.len(),
            Content::Arriving { series, .. } => series.total(),
            _ => 0,
        }
    }

    /// The frame drawn: the current frame, or while a series arrives its frame once it is in.
    pub fn shown_frame(&self) -> Option<&Frame> {
        frame_of(&self.content, self.frame)
    }

    /// The frame whose size places the image: the shown one, else any that arrived.
    fn geometry_frame(&self) -> Option<&Frame> {
        match &self.content {
            Content::Arriving { series, .. } => series.frame(self.frame).or_else(|| series.any_frame()),
            _ => self.shown_frame(),
        }
    }

    /// (frames in, frames planned) while a series arrives.
    pub fn arriving(&self) -> Option<(usize, usize)> {
        match &self.content {
            Content::Arriving { series, .. } => Some((series.arrived_frames(), series.total())),
            _ => None,
        }
    }

    /// "prior 120/300 slices loaded" while a series arrives: why its pane is not a series yet.
    pub fn arriving_note(&self) -> Option<String> {
        self.arriving().map(|(n, total)| format!("the {} series is still loading ({n}/{total} slices)", self.role.label()))
    }

    pub fn error(&self) -> Option<&str> {
        match &self.content {
            Content::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    pub fn is_loading(&self) -> bool {
        matches!(self.content, Content::Loading { .. } | Content::Arriving { .. })
    }

    /// Tells the progressive load feeding the pane which frame is shown: it decodes that one
    /// next, wherever the reader scrolled (a frame change and each paint do this).
    pub fn steer_loader(&self) {
        if let Some(c) = &self.loader {
            c.want.store(self.frame, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Stops the progressive load feeding the pane, if any: its pixels are no longer wanted.
    fn stop_loader(&mut self) {
        if let Some(c) = self.loader.take() {
            c.cancel();
        }
    }

    pub fn set_loading(&mut self, source: String, progress: SharedProgress) {
        self.stop_loader();
        self.content = Content::Loading { source, progress };
        self.generation += 1;
    }

    /// Loading through a progressive load that `control` steers (after `set_loading`).
    pub fn attach_loader(&mut self, control: Arc<LoadControl>) {
        self.stop_loader();
        self.loader = Some(control);
    }

    pub fn set_failed(&mut self, source: String, error: String) {
        self.stop_loader();
        self.content = Content::Failed { source, error };
        self.generation += 1;
    }

    /// The plan of an arriving series: the pane shows its middle frame as soon as it is in. The
    /// generation stays that of the load, so the load's later files are still current.
    pub fn set_arriving(&mut self, source: String, series: Box<PartialSeries>) {
        self.frame = series.total() / 2;
        self.content = Content::Arriving { source, series, windowed: false };
        self.view = None;
        self.invert = false;
        self.cpu_texture = None;
    }

    /// Adds one file of the arriving series; the series once complete (`None` before, or when
    /// the pane shows something else now).
    pub fn add_arrived(&mut self, file: usize, frames: Result<Vec<Frame>, crate::study::StudyError>) -> Option<Result<(), String>> {
        let Content::Arriving { series, windowed, .. } = &mut self.content else { return None };
        series.insert(file, frames);
        // The file's own window as soon as the shown frame is in (the reader may then change it).
        if !*windowed && let Some(f) = series.frame(self.frame) {
            self.window = f.default_window;
            self.use_voi_lut = f.voi_lut.is_some();
            *windowed = true;
        }
        if !series.is_complete() {
            return None;
        }
        let frame = series.finished_index(self.frame);
        let Content::Arriving { source, series, windowed } = std::mem::replace(&mut self.content, Content::Empty) else { return None };
        self.stop_loader();
        Some(match series.finish() {
            Ok(s) => {
                // The reader looked and scrolled while it arrived: keep the view, window and frame.
                let s = Arc::new(s);
                self.frame = frame;
                self.keep_near(&s);
                self.content = Content::Ready(s);
                self.set_frame(frame);
                if !windowed {
                    self.reset_window();
                }
                self.generation += 1;
                self.cpu_texture = None;
                Ok(())
            }
            Err(e) => {
                self.set_failed(source, e.to_string());
                Err(e.to_string())
            }
        })
    }

    pub fn set_series(&mut self, series: Arc<Series>) {
        self.stop_loader();
        self.frame = series.frames.len() / 2;
        if let Some(f) = series.frames.get(self.frame) {
            self.window = f.default_window;
            self.use_voi_lut = f.voi_lut.is_some();
        }
        self.keep_near(&series);
        self.content = Content::Ready(series);
        self.view = None;
        self.invert = false;
        self.generation += 1;
        self.cpu_texture = None;
    }

    /// Starts the prefetch of an evictable series (a folder of slices), steered as the loader
    /// was: the frames around the shown one stay decoded whatever the budget evicts.
    fn keep_near(&mut self, series: &Arc<Series>) {
        let control = Arc::new(LoadControl::default());
        control.want.store(self.frame, std::sync::atomic::Ordering::Relaxed);
        if crate::study::resident::keep_near(series, control.clone()).is_some() {
            self.loader = Some(control);
        }
    }

    pub fn set_frame(&mut self, frame: usize) {
        let n = self.frame_count();
        if n > 0 {
            self.frame = frame.min(n - 1);
        }
        self.steer_loader();
    }

    pub fn step_frame(&mut self, delta: i32) {
        let n = self.frame_count() as i64;
        if n > 0 {
            self.frame = (self.frame as i64 + delta as i64).clamp(0, n - 1) as usize;
        }
        self.steer_loader();
    }

    /// Fits the image in the pane and restores the default window.
    pub fn reset(&mut self) {
        self.view = None;
        self.invert = false;
        if let Some(f) = self.shown_frame() {
            let (w, lut) = (f.default_window, f.voi_lut.is_some());
            self.window = w;
            self.use_voi_lut = lut;
        }
    }

    /// Applies `preset`, or this pane's own Auto when the preset is not offered for its modality
    /// (a CT window synced onto an MR or SEG pane). Returns the preset applied.
    pub fn apply_preset(&mut self, preset: Preset) -> Preset {
        let Some(frame) = self.shown_frame() else { return preset };
        let preset = if Preset::for_modality(frame.meta.modality.as_deref()).contains(&preset) { preset } else { Preset::Auto };
        let window = match preset {
            Preset::FromFile => {
                self.reset_window();
                return preset;
            }
            Preset::Auto | Preset::FullRange => {
                // The pane windows the values themselves (not `to_gray`'s, negated for MONOCHROME1).
                let luminance;
                let Ok(samples) = frame.samples() else { return preset };
                let values: &[f32] = match &*samples {
                    Samples::Gray(v) => v,
                    Samples::Rgb(_) => {
                        luminance = frame.to_gray().data;
                        &luminance
                    }
                };
                if preset == Preset::Auto {
                    crate::study::present::percentile_window(values)
                } else {
                    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
                    if hi > lo { Window::from_range(lo, hi) } else { Window { center: lo, width: 1.0 } }
                }
            }
            ct => ct.ct_window().unwrap_or(frame.default_window),
        };
        self.window = window;
        self.use_voi_lut = false;
        preset
    }

    fn reset_window(&mut self) {
        if let Some(f) = self.shown_frame() {
            let (w, lut) = (f.default_window, f.voi_lut.is_some());
            self.window = w;
            self.use_voi_lut = lut;
        }
    }

    /// The view, fitted to `rect` the first time it is needed.
    pub fn view_in(&mut self, rect: Rect) -> Option<View> {
        let (w, h) = self.geometry_frame().map(|f| (f.width, f.height))?;
        Some(*self.view.get_or_insert_with(|| View::fit(rect, w, h)))
    }

    /// Zoom relative to fitting the image in the pane (1 = fitted).
    pub fn relative_zoom(&self) -> Option<f32> {
        let f = self.geometry_frame()?;
        let v = self.view?;
        Some(v.zoom / View::fit(self.rect, f.width, f.height).zoom)
    }

    /// Handles mouse and keyboard input over the pane rect.
    pub fn handle_input(&mut self, ui: &egui::Ui, response: &egui::Response, pan_with_primary: bool) -> PaneChanges {
        let mut changes = PaneChanges::default();
        let rect = response.rect;
        let Some(mut view) = self.view_in(rect) else { return changes };
        if let Some(pos) = response.hover_pos() {
            let events = ui.input(|i| i.events.clone());
            for e in &events {
                if let egui::Event::MouseWheel { delta, modifiers, unit, .. } = e {
                    let dy = match unit {
                        egui::MouseWheelUnit::Point => delta.y / 40.0,
                        egui::MouseWheelUnit::Line => delta.y,
                        egui::MouseWheelUnit::Page => delta.y * 10.0,
                    };
                    if modifiers.ctrl || modifiers.command {
                        let steps = if dy > 0.0 {
                            -1
                        } else if dy < 0.0 {
                            1
                        } else {
                            0
                        };
                        changes.frame_delta += steps;
                    } else if dy != 0.0 {
                        view.zoom_at(rect, pos, 1.15f32.powf(dy));
                        changes.view = true;
                    }
                }
            }
        }
        let pan =
            (pan_with_primary && response.dragged_by(egui::PointerButton::Primary)) || response.dragged_by(egui::PointerButton::Middle);
        if pan {
            view.center -= response.drag_delta() / view.zoom;
            changes.view = true;
        }
        if response.dragged_by(egui::PointerButton::Secondary) {
            let d = response.drag_delta();
            if d != Vec2::ZERO {
                let before = self.window;
                // Horizontal: width; vertical: level; scaled to the current width like most viewers.
                let scale = self.window.width.max(1e-3) / 256.0;
                self.window.width = (self.window.width + d.x * scale * 2.0).max(1e-3);
                self.window.center -= d.y * scale * 2.0;
                self.use_voi_lut = false;
                changes.window = Some((before, self.window));
            }
        }
        if changes.frame_delta != 0 {
            self.step_frame(changes.frame_delta);
        }
        self.view = Some(view);
        changes
    }

    /// Paints the image (GPU when available, CPU otherwise) and the corner annotations.
    pub fn paint(&mut self, ui: &egui::Ui, rect: Rect, render_state: Option<&egui_wgpu::RenderState>) {
        self.rect = rect;
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 0.0, Color32::BLACK);
        match &self.content {
            Content::Empty => {
                centered_message(&painter, rect, "Drop a DICOM file, a folder or an image here\nor use File → Open", Color32::GRAY);
                return;
            }
            Content::Loading { source, progress } => {
                let (p, msg) = progress.lock().map(|g| g.clone()).unwrap_or_default();
                centered_message(&painter, rect, &format!("Loading {}…\n{:.0} %  {msg}", short(source), p * 100.0), Color32::LIGHT_GRAY);
                let bar = Rect::from_min_size(rect.center() + Vec2::new(-100.0, 30.0), Vec2::new(200.0, 6.0));
                painter.rect_filled(bar, 2.0, Color32::from_gray(60));
                painter.rect_filled(
                    Rect::from_min_size(bar.min, Vec2::new(200.0 * p.clamp(0.0, 1.0), 6.0)),
                    2.0,
                    Color32::from_rgb(80, 160, 255),
                );
                return;
            }
            Content::Failed { source, error } => {
                centered_message(&painter, rect, &format!("Cannot open {}\n{error}", short(source)), Color32::from_rgb(255, 120, 100));
                return;
            }
            Content::Ready(_) | Content::Arriving { .. } => {}
        }
        self.steer_loader();
        let Some(view) = self.view_in(rect) else {
            self.paint_arriving(&painter, rect);
            return;
        };
        // Borrowed from the content field alone: the CPU path writes the texture field meanwhile.
        let Some(frame) = frame_of(&self.content, self.frame) else {
            self.paint_arriving(&painter, rect);
            return;
        };
        let samples = match frame.pixels.peek() {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                centered_message(&painter, rect, &format!("slice {} cannot be read: {e}", self.frame + 1), Color32::LIGHT_GRAY);
                return;
            }
            // While a series arrives its loader decodes every file once, not this one again:
            // an evicted slice scrolled back to is decoded here.
            None if matches!(self.content, Content::Arriving { .. }) => match frame.samples() {
                Ok(s) => s,
                Err(e) => {
                    centered_message(&painter, rect, &format!("slice {} cannot be read: {e}", self.frame + 1), Color32::LIGHT_GRAY);
                    return;
                }
            },
            // Evicted: the prefetch, steered to this frame, brings it back in milliseconds.
            None => {
                centered_message(&painter, rect, &format!("slice {}: {DECODING_LABEL}", self.frame + 1), Color32::LIGHT_GRAY);
                ui.ctx().request_repaint_after(std::time::Duration::from_millis(8));
                return;
            }
        };
        let key = (self.generation << 24) | self.frame as u64;
        let top_left = view.screen_from_image(rect, Pos2::ZERO);
        let bottom_right = view.screen_from_image(rect, Pos2::new(frame.width as f32, frame.height as f32));
        let img_rect = Rect::from_min_max(top_left, bottom_right);
        let invert = self.invert ^ frame.invert;
        let mode = if frame.is_color() {
            1.0
        } else if self.use_voi_lut && frame.voi_lut.is_some() {
            2.0
        } else {
            0.0
        };
        if let Some(rs) = render_state {
            {
                let mut renderer = rs.renderer.write();
                if let Some(r) = renderer.callback_resources.get_mut::<ImageRenderer>()
                    && !r.has(self.id.0, key)
                {
                    r.upload(&rs.device, &rs.queue, self.id.0, key, frame, &samples);
                }
                if self.compare.is_some() {
                    crate::viewer::compare::CompareRenderer::install(&mut renderer.callback_resources, &rs.device, rs.target_format);
                }
            }
            let n_min = (img_rect.min - rect.min) / rect.size();
            let n_max = (img_rect.max - rect.min) / rect.size();
            let lut =
                frame.voi_lut.as_ref().map(|l| [l.first_mapped, l.data.len() as f32, l.max_output, 1.0]).unwrap_or([0.0, 0.0, 1.0, 1.0]);
            let params = DrawParams {
                img_rect: [n_min.x, n_min.y, n_max.x, n_max.y],
                window: [self.window.center, self.window.width, if invert { 1.0 } else { 0.0 }, mode],
                lut,
            };
            let callback = match &self.compare {
                Some(c) => egui_wgpu::Callback::new_paint_callback(rect, c.callback(self.id.0, params, frame)),
                None => egui_wgpu::Callback::new_paint_callback(rect, ImageCallback { pane: self.id.0, params }),
            };
            painter.add(callback);
        } else {
            let tex = cpu_texture(&mut self.cpu_texture, ui.ctx(), self.id, frame, key, self.window, invert, mode);
            painter.image(tex, img_rect, Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)), Color32::WHITE);
        }
        self.paint_arriving(&painter, rect);
    }

    /// While a series arrives: how much is in, and a note on a slice that is not in yet.
    fn paint_arriving(&self, painter: &egui::Painter, rect: Rect) {
        let Content::Arriving { series, .. } = &self.content else { return };
        let (n, total) = (series.arrived_frames(), series.total().max(1));
        if series.frame(self.frame).is_none() {
            let why = match series.error_at(self.frame) {
                Some(e) => format!("slice {} cannot be read: {e}", self.frame + 1),
                None => format!("slice {}: {DECODING_LABEL}", self.frame + 1),
            };
            centered_message(painter, rect, &why, Color32::LIGHT_GRAY);
        }
        let bar = Rect::from_min_size(rect.center_bottom() + Vec2::new(-100.0, -52.0), Vec2::new(200.0, 6.0));
        painter.rect_filled(bar, 2.0, Color32::from_gray(60));
        painter.rect_filled(
            Rect::from_min_size(bar.min, Vec2::new(200.0 * n as f32 / total as f32, 6.0)),
            2.0,
            Color32::from_rgb(80, 160, 255),
        );
        corner(
            painter,
            bar.center_top() + Vec2::new(0.0, -4.0),
            Align2::CENTER_BOTTOM,
            &[format!("{ARRIVING_LABEL} {n}/{total}")],
            &FontId::proportional(13.0),
            TEXT_COLOUR,
        );
    }

    /// What the corners and edges say about the shown frame (`None` when nothing is shown).
    pub fn corner_text(&self) -> Option<CornerText> {
        let frame = self.shown_frame()?;
        let m = &frame.meta;
        let mut top_left = Vec::new();
        if let Some(note) = &self.note {
            top_left.push(note.clone());
        }
        let id = m.patient_id.clone().unwrap_or_else(|| "—".into());
        top_left.push(match m.patient_name_pretty() {
            Some(name) => format!("{name}  ({id})"),
            None => format!("Patient {id}"),
        });
        top_left.push(format!("Study {}", m.study_date_pretty().unwrap_or_else(|| "—".into())));
        let series_line = [m.modality.clone(), m.series_description.clone()].into_iter().flatten().collect::<Vec<_>>().join("  ");
        top_left.push(if series_line.is_empty() { file_name(&m.path) } else { series_line });
        let title = self.title.clone().unwrap_or_else(|| self.role.label().to_uppercase());
        let top_right = vec![title, format!("Frame {}/{}", self.frame + 1, self.frame_count())];
        let w_line = if self.use_voi_lut && frame.voi_lut.is_some() {
            "VOI LUT".to_string()
        } else {
            format!("W {:.0}  L {:.0}", self.window.width, self.window.center)
        };
        let zoom = self.view.map(|v| v.zoom * 100.0).unwrap_or(100.0);
        let bottom_left = vec![w_line, format!("Zoom {zoom:.0} %{}", if self.invert ^ frame.invert { "  inverted" } else { "" })];
        let bottom_right = vec![format!("{} × {} px", frame.width, frame.height)];
        Some(CornerText {
            top_left,
            top_right,
            bottom_left,
            bottom_right,
            lossy: m.is_lossy().then(|| LOSSY_FLAG.to_string()),
            markers: m.image_orientation.and_then(crate::study::orientation::markers),
        })
    }

    /// Corner text (patient, study, series, frame, window, zoom, a lossy-compression flag) and
    /// orientation markers at the middle of the pane's edges.
    pub fn paint_corners(&self, painter: &egui::Painter, rect: Rect) {
        let Some(text) = self.corner_text() else { return };
        let font = FontId::proportional(13.0);
        let pad = 6.0;
        corner(painter, rect.left_top() + Vec2::new(pad, pad), Align2::LEFT_TOP, &text.top_left, &font, TEXT_COLOUR);
        let tr = corner(painter, rect.right_top() + Vec2::new(-pad, pad), Align2::RIGHT_TOP, &text.top_right, &font, TEXT_COLOUR);
        if let Some(flag) = &text.lossy {
            corner(painter, tr.right_bottom() + Vec2::new(0.0, 8.0), Align2::RIGHT_TOP, std::slice::from_ref(flag), &font, LOSSY_COLOUR);
        }
        corner(painter, rect.left_bottom() + Vec2::new(pad, -pad), Align2::LEFT_BOTTOM, &text.bottom_left, &font, TEXT_COLOUR);
        corner(painter, rect.right_bottom() + Vec2::new(-pad, -pad), Align2::RIGHT_BOTTOM, &text.bottom_right, &font, TEXT_COLOUR);
        if let Some(m) = &text.markers {
            let big = FontId::proportional(16.0);
            let edges = [
                (rect.left_center() + Vec2::new(pad, 0.0), Align2::LEFT_CENTER, &m.left),
                (rect.right_center() + Vec2::new(-pad, 0.0), Align2::RIGHT_CENTER, &m.right),
                (rect.center_top() + Vec2::new(0.0, pad), Align2::CENTER_TOP, &m.top),
                (rect.center_bottom() + Vec2::new(0.0, -pad), Align2::CENTER_BOTTOM, &m.bottom),
            ];
            for (at, align, label) in edges {
                corner(painter, at, align, std::slice::from_ref(label), &big, TEXT_COLOUR);
            }
        }
    }
}

/// Frame `k` of what a pane holds, when it is there to draw.
fn frame_of(content: &Content, k: usize) -> Option<&Frame> {
    match content {
        Content::Ready(s) => s.frames.get(k),
        Content::Arriving { series, .. } => series.frame(k),
        _ => None,
    }
}

/// What a pane says while the slice it shows is being decoded.
pub const DECODING_LABEL: &str = "decoding…";

/// The word before "n/N" in a pane while its series arrives.
pub const ARRIVING_LABEL: &str = "loading";

/// CPU fallback (no wgpu renderer): windowed 8-bit texture, cached per frame and window.
#[allow(clippy::too_many_arguments)]
fn cpu_texture(
    slot: &mut Option<(u64, [u32; 4], egui::TextureHandle)>,
    ctx: &egui::Context,
    pane: PaneId,
    frame: &Frame,
    key: u64,
    window: Window,
    invert: bool,
    mode: f32,
) -> egui::TextureId {
    let wkey = [window.center.to_bits(), window.width.to_bits(), invert as u32, mode.to_bits()];
    if let Some((k, w, tex)) = slot.as_ref()
        && *k == key
        && *w == wkey
    {
        return tex.id();
    }
    let image = render_cpu(frame, window, invert, mode == 2.0);
    let tex = ctx.load_texture(format!("pane-{}", pane.0), image, egui::TextureOptions::LINEAR);
    let id = tex.id();
    *slot = Some((key, wkey, tex));
    id
}

/// Shown under the top-right corner when the pixels went through lossy compression.
pub const LOSSY_FLAG: &str = "LOSSY COMPRESSION";
const TEXT_COLOUR: Color32 = Color32::from_rgb(230, 230, 160);
const LOSSY_COLOUR: Color32 = Color32::from_rgb(255, 130, 90);

/// What a pane's corners and edges say.
#[derive(Clone, Debug, PartialEq)]
pub struct CornerText {
    pub top_left: Vec<String>,
    pub top_right: Vec<String>,
    pub bottom_left: Vec<String>,
    pub bottom_right: Vec<String>,
    /// `LOSSY_FLAG` when Lossy Image Compression is "01" or the transfer syntax is lossy.
    pub lossy: Option<String>,
    /// From Image Orientation (Patient); none without it.
    pub markers: Option<crate::study::orientation::Markers>,
}

/// Windowed RGBA rendering on the CPU (fallback path and tests without a GPU).
pub fn render_cpu(frame: &Frame, window: Window, invert: bool, use_lut: bool) -> egui::ColorImage {
    render_cpu_region(frame, window, invert, use_lut, [0, 0, frame.width, frame.height])
}

/// `render_cpu` of the pixels `[x0, y0, x1, y1)` only (clamped to the frame).
pub fn render_cpu_region(frame: &Frame, window: Window, invert: bool, use_lut: bool, region: [usize; 4]) -> egui::ColorImage {
    let (x1, y1) = (region[2].min(frame.width), region[3].min(frame.height));
    let (x0, y0) = (region[0].min(x1), region[1].min(y1));
    let indices = (y0..y1).flat_map(|y| (x0..x1).map(move |x| y * frame.width + x));
    let lo = window.lower();
    let scale = 255.0 / window.width.max(1e-6);
    let map = |v: f32| -> u8 {
        let t = if use_lut {
            frame.voi_lut.as_ref().map_or(0.0, |l| {
                let i = ((v - l.first_mapped).round() as i64).clamp(0, l.data.len() as i64 - 1) as usize;
                l.data[i] / l.max_output.max(1.0) * 255.0
            })
        } else {
            (v - lo) * scale
        };
        let t = t.clamp(0.0, 255.0) as u8;
        if invert { 255 - t } else { t }
    };
    // Evicted pixels that cannot be decoded again (the pane says so before it gets here): black.
    let samples = frame.samples();
    let pixels: Vec<Color32> = match samples.as_deref() {
        Ok(Samples::Gray(v)) => indices.map(|i| Color32::from_gray(map(v[i]))).collect(),
        Ok(Samples::Rgb(v)) => indices.map(|i| Color32::from_rgb(map(v[i][0] as f32), map(v[i][1] as f32), map(v[i][2] as f32))).collect(),
        Err(_) => indices.map(|_| Color32::BLACK).collect(),
    };
    egui::ColorImage::new([x1 - x0, y1 - y0], pixels)
}

/// A message centred in the pane, wrapped to its width so that a long error stays inside it.
fn centered_message(painter: &egui::Painter, rect: Rect, text: &str, color: Color32) {
    let (at, galley) = message_layout(painter, rect, text, color);
    painter.galley(at, galley, color);
}

/// Where `centered_message` puts `text` in `rect`, laid out: wrapped 20 points inside either side
/// (a path too long for a line is broken where it must be), centred.
fn message_layout(painter: &egui::Painter, rect: Rect, text: &str, color: Color32) -> (Pos2, Arc<egui::Galley>) {
    let wrap = (rect.width() - 40.0).max(60.0);
    let mut job = egui::text::LayoutJob::simple(text.to_string(), FontId::proportional(15.0), color, wrap);
    job.halign = egui::Align::Center;
    let galley = painter.layout_job(job);
    // A centred job's rect is centred on x = 0.
    let at = rect.center() - Vec2::new(0.0, galley.size().y / 2.0);
    (at, galley)
}

/// Lines of text anchored at `at`, on a backdrop; returns where they went.
fn corner(painter: &egui::Painter, at: Pos2, align: Align2, lines: &[String], font: &FontId, colour: Color32) -> Rect {
    let text = lines.join("\n");
    // A translucent dark backdrop and a shadow keep the text legible over white anatomy (a lung
    // window on an MR, a radiograph's label) without hiding much of the image.
    let galley = painter.layout_no_wrap(text.clone(), font.clone(), colour);
    let text_rect = align.anchor_size(at, galley.size());
    painter.rect_filled(text_rect.expand(3.0), 3.0, Color32::from_black_alpha(150));
    painter.text(at + Vec2::new(1.0, 1.0), align, &text, font.clone(), Color32::BLACK);
    painter.text(at, align, &text, font.clone(), colour);
    text_rect
}

fn short(source: &str) -> String {
    file_name(std::path::Path::new(source))
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_presets_only_for_ct_and_a_seg_pane_falls_back_to_its_own_auto() {
        assert_eq!(Preset::for_modality(Some("CT")).len(), Preset::ALL.len());
        for m in [Some("MR"), Some("SEG"), Some("US"), Some("CR"), None] {
            let offered = Preset::for_modality(m);
            assert!(offered.iter().all(|p| !p.is_ct()), "{m:?}: {offered:?}");
            assert_eq!(offered, [Preset::Auto, Preset::FromFile, Preset::FullRange]);
        }
        let img = image::GrayImage::from_fn(8, 8, |x, _| image::Luma([(x * 30) as u8]));
        let meta = crate::study::Meta { modality: Some("SEG".into()), ..Default::default() };
        let frame = crate::study::raster::frame_from_image(image::DynamicImage::ImageLuma8(img), Arc::new(meta));
        let series = Series { id: "seg".into(), frames: vec![frame], meta: Default::default(), source: "seg".into() };
        let mut pane = Pane::new(PaneId(0), Role::Current);
        pane.set_series(Arc::new(series));
        assert_eq!(pane.apply_preset(Preset::Brain), Preset::Auto);
        assert!(pane.window.width > 100.0, "its own auto window, not the 80 HU brain window: {:?}", pane.window);
        assert_eq!(pane.apply_preset(Preset::FullRange), Preset::FullRange);
        assert_eq!((pane.window.lower(), pane.window.upper()), (0.0, 210.0));
    }

    #[test]
    fn a_long_load_error_wraps_inside_its_pane() {
        let ctx = egui::Context::default();
        let _ = ctx.run_ui(Default::default(), |_| {});
        let pane = Rect::from_min_size(Pos2::new(700.0, 30.0), Vec2::new(420.0, 600.0));
        let painter = egui::Painter::new(ctx.clone(), egui::LayerId::background(), pane);
        let long_path = "/very/long/folder/name/without/any/spaces/".repeat(8);
        let error = format!(
            "Cannot open MR_truncated.dcm\nthe file is damaged: {long_path}MR_truncated.dcm ended after 4096 of 8192 bytes of pixel data"
        );
        let (at, galley) = message_layout(&painter, pane, &error, Color32::WHITE);
        let drawn = galley.rect.translate(at.to_vec2());
        assert!(galley.rows.len() > 3, "not wrapped: {} rows", galley.rows.len());
        assert!(pane.shrink(10.0).contains_rect(drawn), "{drawn:?} runs out of the pane {pane:?}");
    }

    #[test]
    fn corner_text_names_the_patient_flags_lossy_pixels_and_marks_the_orientation() {
        let img = image::GrayImage::from_fn(8, 8, |x, _| image::Luma([(x * 30) as u8]));
        let meta = crate::study::Meta {
            patient_id: Some("123".into()),
            patient_name: Some("DOE^JANE".into()),
            modality: Some("CT".into()),
            series_description: Some("Thorax 1.0 B70f".into()),
            transfer_syntax: Some("1.2.840.10008.1.2.4.50".into()),
            image_orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            ..Default::default()
        };
        let frame = crate::study::raster::frame_from_image(image::DynamicImage::ImageLuma8(img.clone()), Arc::new(meta.clone()));
        let mut pane = Pane::new(PaneId(0), Role::Current);
        pane.set_series(Arc::new(Series { id: "ct".into(), frames: vec![frame], meta: Arc::new(meta.clone()), source: "ct".into() }));
        let text = pane.corner_text().unwrap();
        assert_eq!(text.top_left[0], "DOE, JANE  (123)");
        assert_eq!(text.top_left[2], "CT  Thorax 1.0 B70f");
        assert_eq!(text.lossy.as_deref(), Some(LOSSY_FLAG));
        let m = text.markers.unwrap();
        assert_eq!([m.left, m.right, m.top, m.bottom], ["R", "L", "A", "P"]);
        // Uncompressed, never lossy, no orientation (a PNG): no flag, no markers.
        let plain = crate::study::Meta { patient_id: Some("123".into()), ..Default::default() };
        let frame = crate::study::raster::frame_from_image(image::DynamicImage::ImageLuma8(img), Arc::new(plain.clone()));
        pane.set_series(Arc::new(Series { id: "png".into(), frames: vec![frame], meta: Arc::new(plain), source: "png".into() }));
        let text = pane.corner_text().unwrap();
        assert_eq!(text.top_left[0], "Patient 123");
        assert_eq!((text.lossy, text.markers), (None, None));
    }

    #[test]
    fn a_rendered_region_is_the_crop_of_the_full_render() {
        let img = image::GrayImage::from_fn(9, 7, |x, y| image::Luma([(x * 20 + y * 7) as u8]));
        let frame = crate::study::raster::frame_from_image(image::DynamicImage::ImageLuma8(img), Default::default());
        let w = Window { center: 80.0, width: 120.0 };
        let full = render_cpu(&frame, w, true, false);
        let part = render_cpu_region(&frame, w, true, false, [2, 3, 7, 99]);
        assert_eq!(part.size, [5, 4]);
        for y in 0..4 {
            for x in 0..5 {
                assert_eq!(part.pixels[y * 5 + x], full.pixels[(y + 3) * 9 + x + 2]);
            }
        }
    }
}
