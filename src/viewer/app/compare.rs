//! Flicker, fade and subtraction in the app: what the current pane compares now (a
//! `CompareKey`: both panes' generation and frame, and the transform from current pixels to the
//! prior's), the GPU draw the pane is asked for, and the CPU fallback's background jobs. Every job
//! is stamped with the panes' generations and carries its key; a result for images, frames or a
//! registration no longer shown is dropped (`on_compared`).
//!
//! Two stages run off the UI thread: the subtraction's automatic window (GPU) or the resampled
//! prior and difference (CPU), once per key; and, on the CPU only, the picture drawn from them for
//! the window in use (one job in flight; while the window is dragged the last picture made for the
//! same images stays up until the next arrives).

use std::sync::Arc;

use eframe::egui::{self, Color32, RichText, Vec2};

use super::{App, AppCommand, ViewMode};
use crate::registration::difference::relative_transform;
use crate::registration::transform::Transform;
use crate::viewer::compare::{self, CompareKey, CpuWork, Geometry, GpuCompare, GpuKind, PresentKey};
use crate::viewer::pane::{PaneId, Role};

/// What the comparison controls ask for (besides the mode, fade and flicker rate).
#[derive(Clone, Debug, PartialEq)]
pub enum CompareCommand {
    /// The subtraction's own window, ± this; `None` returns to the automatic one.
    SetSubtractionWindow(Option<f32>),
}

/// The comparison's caches and jobs.
#[derive(Default)]
pub struct CompareState {
    /// The automatic subtraction window for a key.
    window: Option<(CompareKey, f32)>,
    /// The CPU fallback's resampled prior and difference.
    geometry: Option<(CompareKey, Arc<Geometry>)>,
    /// The CPU fallback's pictures: the prior drawn as the current is, and the difference.
    prior_texture: Option<(CompareKey, PresentKey, egui::TextureHandle)>,
    difference_texture: Option<(CompareKey, u32, egui::TextureHandle)>,
    /// Pictures made in the background, uploaded as textures at the next frame.
    uploads: Vec<CpuWork>,
    /// The first-stage job in flight (window or geometry), and the picture job in flight.
    geometry_job: Option<CompareKey>,
    present_job: Option<CompareKey>,
    /// A key whose job failed: not retried until the images change.
    failed: Option<CompareKey>,
    /// The reader's subtraction window (else the automatic one).
    subtraction_window: Option<f32>,
    /// Whether the panes are drawn by the GPU this frame.
    gpu: bool,
}

impl CompareState {
    /// True while a comparison job runs.
    pub fn busy(&self) -> bool {
        self.geometry_job.is_some() || self.present_job.is_some()
    }
}

impl App {
    /// What the current pane compares now, and the prior-from-current transform: the
    /// registration's when "By registration" is on and one was made for these images, else the
    /// relative position (as unregistered sync maps positions).
    pub(super) fn compare_target(&self) -> Option<(CompareKey, Transform)> {
        let (prior, current) = (self.pane(Role::Prior), self.pane(Role::Current));
        let (pf, cf) = (prior.current_frame()?, current.current_frame()?);
        let registered = if self.sync.registered { self.current_registration().map(|a| a.fixed_from_moving) } else { None };
        let t = registered.unwrap_or_else(|| relative_transform((pf.width, pf.height), (cf.width, cf.height)));
        Some((CompareKey::new((prior.generation, prior.frame), (current.generation, current.frame), &t, registered.is_some()), t))
    }

    /// Whether flicker, fade and subtraction are drawn on the GPU now.
    pub fn compare_on_gpu(&self) -> bool {
        self.compare.gpu
    }

    /// The subtraction's window now (± this): the reader's, else the automatic one once it is
    /// known for the shown images.
    pub fn subtraction_window(&self) -> Option<f32> {
        self.compare.subtraction_window.or_else(|| self.auto_subtraction_window())
    }

    /// The automatic subtraction window of the shown images, once computed.
    pub fn auto_subtraction_window(&self) -> Option<f32> {
        let (key, _) = self.compare_target()?;
        self.compare.window.filter(|(k, _)| *k == key).map(|(_, w)| w)
    }

    /// The CPU fallback's prior on the current's grid and difference for the shown images
    /// (subtraction mode on the CPU path only; the GPU path computes none).
    pub fn subtraction(&self) -> Option<&Geometry> {
        if self.view_mode != ViewMode::Subtraction {
            return None;
        }
        let (key, _) = self.compare_target()?;
        self.compare.geometry.as_ref().filter(|(k, _)| *k == key).map(|(_, g)| g.as_ref())
    }

    pub(super) fn run_compare(&mut self, command: CompareCommand) {
        match command {
            CompareCommand::SetSubtractionWindow(w) => {
                self.compare.subtraction_window = w.filter(|w| w.is_finite() && *w > 0.0);
            }
        }
    }

    /// Starts what the comparison shown now needs and is not there yet, and uploads the pictures
    /// that arrived. `gpu`: the panes are drawn by the GPU this frame.
    pub(super) fn ensure_compare(&mut self, ctx: &egui::Context, gpu: bool) {
        self.compare.gpu = gpu;
        for work in std::mem::take(&mut self.compare.uploads) {
            match work {
                CpuWork::Prior { key, present, image } => {
                    let texture = ctx.load_texture("prior on current", image, egui::TextureOptions::LINEAR);
                    self.compare.prior_texture = Some((key, present, texture));
                }
                CpuWork::Difference { key, window, image } => {
                    let texture = ctx.load_texture("subtraction", image, egui::TextureOptions::LINEAR);
                    self.compare.difference_texture = Some((key, window, texture));
                }
                _ => {}
            }
        }
        if self.view_mode == ViewMode::SideBySide {
            // Nothing is shown: let the pictures go (a 2048² pair holds ~100 MB of them).
            let c = &mut self.compare;
            (c.window, c.geometry, c.prior_texture, c.difference_texture, c.failed) = (None, None, None, None, None);
            return;
        }
        let Some((key, transform)) = self.compare_target() else { return };
        if self.compare.failed == Some(key) {
            return;
        }
        let subtraction = self.view_mode == ViewMode::Subtraction;
        let first_stage = if gpu {
            // Flicker and fade need nothing from the CPU; subtraction its automatic window (drawn
            // meanwhile with the reader's window if there is one; the panel offers the automatic).
            subtraction && self.compare.window.is_none_or(|(k, _)| k != key)
        } else {
            self.compare.geometry.as_ref().is_none_or(|(k, _)| *k != key)
        };
        if first_stage {
            if self.compare.geometry_job.is_none() {
                self.start_geometry(key, transform, gpu);
            }
            return;
        }
        if gpu || self.compare.present_job.is_some() {
            return;
        }
        let Some((_, geometry)) = self.compare.geometry.clone() else { return };
        if subtraction {
            let Some(window) = self.subtraction_window() else { return };
            if self.compare.difference_texture.as_ref().is_none_or(|(k, w, _)| *k != key || *w != window.to_bits()) {
                self.compare.present_job = Some(key);
                self.jobs.compare(self.stamp_all(), move || {
                    CpuWork::run(key, false, || CpuWork::Difference {
                        key,
                        window: window.to_bits(),
                        image: compare::diverging_image(&geometry.difference, window),
                    })
                });
            }
        } else {
            let current = self.pane(Role::Current);
            let (Some(series), index) = (current.series().cloned(), current.frame) else { return };
            let Some(frame) = series.frames.get(index) else { return };
            let (window, invert, lut) = (current.window, current.invert, current.use_voi_lut && frame.voi_lut.is_some());
            let present = PresentKey::new(window, invert, lut);
            if self.compare.prior_texture.as_ref().is_none_or(|(k, p, _)| *k != key || *p != present) {
                self.compare.present_job = Some(key);
                self.jobs.compare(self.stamp_all(), move || {
                    CpuWork::run(key, false, || CpuWork::Prior {
                        key,
                        present,
                        image: compare::present_prior(&geometry.prior_on_current, &series.frames[index], window, lut, invert),
                    })
                });
            }
        }
    }

    /// The first stage for `key`: the automatic window (GPU) or the resampled prior and
    /// difference (CPU), from the panes' frames (the series are shared, not copied).
    fn start_geometry(&mut self, key: CompareKey, transform: Transform, gpu: bool) {
        let (prior, current) = (self.pane(Role::Prior), self.pane(Role::Current));
        let (Some(ps), Some(cs)) = (prior.series().cloned(), current.series().cloned()) else { return };
        let (pi, ci) = (prior.frame, current.frame);
        self.compare.geometry_job = Some(key);
        self.jobs.compare(self.stamp_all(), move || {
            CpuWork::run(key, true, || {
                let (pf, cf) = (&ps.frames[pi], &cs.frames[ci]);
                if gpu {
                    CpuWork::Window { key, window: compare::auto_window(pf, cf, &transform) }
                } else {
                    CpuWork::Geometry { key, geometry: Arc::new(compare::geometry(pf, cf, &transform)) }
                }
            })
        });
    }

    /// A comparison job ended (current or not): the next one may start.
    pub(super) fn compare_job_ended(&mut self, work: &CpuWork) {
        if work.is_geometry() {
            self.compare.geometry_job = None;
        } else {
            self.compare.present_job = None;
        }
    }

    /// A comparison job's result for images still shown (the stamp was checked): kept when it was
    /// made for the frames and transform shown now, dropped otherwise.
    pub(super) fn on_compared(&mut self, work: CpuWork) {
        if self.compare_target().map(|(k, _)| k) != Some(work.key()) {
            log::info!("dropped a comparison made for frames or a registration no longer shown");
            return;
        }
        match work {
            CpuWork::Window { key, window } => self.compare.window = Some((key, window)),
            CpuWork::Geometry { key, geometry } => {
                self.compare.window = Some((key, geometry.window));
                self.compare.geometry = Some((key, geometry));
            }
            picture @ (CpuWork::Prior { .. } | CpuWork::Difference { .. }) => self.compare.uploads.push(picture),
            CpuWork::Failed { key, .. } => {
                self.compare.failed = Some(key);
                self.status = format!("{} could not be drawn: the comparison stopped unexpectedly", self.view_mode.label());
            }
        }
    }

    /// The comparison the current pane draws on the GPU this frame (`None`: a plain image).
    pub(super) fn gpu_compare_for(&self, id: PaneId, time_secs: f64) -> Option<GpuCompare> {
        if !self.compare.gpu || self.view_mode == ViewMode::SideBySide || self.panes.get(id.0)?.role != Role::Current {
            return None;
        }
        let prior = self.pane(Role::Prior);
        let (_, transform) = self.compare_target()?;
        let kind = match self.view_mode {
            ViewMode::Subtraction => match self.subtraction_window() {
                Some(window) => GpuKind::Subtract { window },
                // Until the window is known the current is shown as it is.
                None => GpuKind::Blend { opacity: 0.0 },
            },
            _ => GpuKind::Blend { opacity: self.prior_opacity(time_secs) },
        };
        Some(GpuCompare::new(prior.id.0, prior.current_frame()?, transform, kind))
    }

    /// Over the current pane: the CPU fallback's picture (the GPU path has drawn its own), and
    /// what the pane shows, at the bottom centre (the corners hold the pane's own text).
    pub(super) fn paint_compare(&self, painter: &egui::Painter, id: PaneId, time_secs: f64) {
        let Some(pane) = self.panes.get(id.0) else { return };
        if self.view_mode == ViewMode::SideBySide || pane.role != Role::Current {
            return;
        }
        let (Some(view), Some((key, _))) = (pane.view, self.compare_target()) else { return };
        let uv = egui::Rect::from_min_max(egui::Pos2::ZERO, egui::Pos2::new(1.0, 1.0));
        let over_image = |texture: &egui::TextureHandle, tint: Color32| {
            let [w, h] = texture.size();
            let rect = egui::Rect::from_min_max(
                view.screen_from_image(pane.rect, egui::Pos2::ZERO),
                view.screen_from_image(pane.rect, egui::Pos2::new(w as f32, h as f32)),
            );
            painter.image(texture.id(), rect, uv, tint);
        };
        let opacity = self.prior_opacity(time_secs);
        let gpu = self.compare.gpu;
        let how = if key.registered { "registered" } else { "by relative position" };
        let mut pending = false;
        let text = match self.view_mode {
            ViewMode::Subtraction => {
                if !gpu {
                    match &self.compare.difference_texture {
                        Some((k, _, texture)) if *k == key => over_image(texture, Color32::WHITE),
                        _ => pending = true,
                    }
                }
                pending |= self.subtraction_window().is_none();
                let window = self.subtraction_window().map(|w| format!(", ±{w:.0}")).unwrap_or_default();
                format!("SUBTRACTION  current − prior ({how}){window}")
            }
            ViewMode::Flicker | ViewMode::Fade => {
                if !gpu {
                    match &self.compare.prior_texture {
                        Some((k, _, texture)) if *k == key => {
                            if opacity > 0.0 {
                                over_image(texture, Color32::from_white_alpha((opacity * 255.0).round() as u8));
                            }
                        }
                        _ => pending = true,
                    }
                }
                if self.view_mode == ViewMode::Flicker {
                    format!("FLICKER  {} ({:.1} Hz, {how})", if opacity > 0.5 { "prior" } else { "current" }, self.flicker_hz)
                } else {
                    format!("FADE  prior {:.0} % · current {:.0} % ({how})", opacity * 100.0, (1.0 - opacity) * 100.0)
                }
            }
            ViewMode::SideBySide => return,
        };
        let text = if pending { format!("{text} — computing…") } else { text };
        let at = pane.rect.center_bottom() - Vec2::new(0.0, 40.0);
        let font = egui::FontId::proportional(13.0);
        painter.text(at + Vec2::new(1.0, 1.0), egui::Align2::CENTER_BOTTOM, &text, font.clone(), Color32::BLACK);
        painter.text(at, egui::Align2::CENTER_BOTTOM, text, font, Color32::from_rgb(255, 200, 120));
    }
}

/// The subtraction window control (subtraction mode): automatic, or the reader's ± window.
pub(super) fn compare_controls_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    if app.view_mode == ViewMode::SideBySide {
        return;
    }
    if app.view_mode == ViewMode::Subtraction {
        let auto = app.auto_subtraction_window();
        let mut automatic = app.compare.subtraction_window.is_none();
        let auto_text = auto.map(|w| format!("Auto window (±{w:.0})")).unwrap_or_else(|| "Auto window".into());
        if ui.checkbox(&mut automatic, auto_text).on_hover_text("± the 99th percentile of |current − prior|").changed() {
            let w = if automatic { None } else { Some(auto.unwrap_or(1.0)) };
            out.push(AppCommand::Compare(CompareCommand::SetSubtractionWindow(w)));
        }
        if let Some(mut w) = app.compare.subtraction_window {
            let base = auto.unwrap_or(w).max(1e-3);
            if ui.add(egui::Slider::new(&mut w, base / 50.0..=base * 20.0).logarithmic(true).text("± window")).changed() {
                out.push(AppCommand::Compare(CompareCommand::SetSubtractionWindow(Some(w))));
            }
        }
    }
    let path = if app.compare.gpu { "drawn on the GPU" } else { "drawn on the CPU (no GPU renderer)" };
    ui.label(RichText::new(path).small().weak());
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::study::{Frame, Meta, Samples, Series, Window};

    fn series(frames: usize, value: impl Fn(usize, usize, usize) -> f32) -> Arc<Series> {
        let (w, h) = (64, 48);
        let meta = Arc::new(Meta::default());
        let frames = (0..frames)
            .map(|k| Frame {
                width: w,
                height: h,
                pixels: crate::study::Pixels::new(Samples::Gray((0..w * h).map(|i| value(k, i % w, i / w)).collect())),
                default_window: Window { center: 100.0, width: 200.0 },
                voi_lut: None,
                invert: false,
                meta: meta.clone(),
                frame_index: k,
                slice_position: None,
                image_position: None,
            })
            .collect();
        Arc::new(Series { id: "s".into(), frames, meta, source: "s".into() })
    }

    /// Applies job results until no comparison job runs.
    fn finish_jobs(app: &mut App) {
        let start = Instant::now();
        while app.compare.busy() {
            app.poll_jobs();
            assert!(start.elapsed() < Duration::from_secs(30), "the comparison job did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_comparison_made_for_images_or_frames_no_longer_shown_is_dropped() {
        let ctx = egui::Context::default();
        let mut app = App::empty(ctx.clone());
        app.pane_mut(Role::Prior).set_series(series(1, |_, x, y| (x + y) as f32));
        app.pane_mut(Role::Current).set_series(series(3, |k, x, y| (x + y + 10 * k) as f32));
        app.view_mode = ViewMode::Subtraction;
        app.ensure_compare(&ctx, false);
        assert!(app.is_busy(), "no comparison job started");

        // Another prior is opened while the job runs: the result is for the previous one.
        app.pane_mut(Role::Prior).set_series(series(1, |_, x, _| x as f32));
        finish_jobs(&mut app);
        assert!(app.compare.geometry.is_none() && app.subtraction().is_none(), "a comparison of the previous prior was kept");

        // The current pane scrolls to another frame while the next job runs.
        app.ensure_compare(&ctx, false);
        assert_eq!(app.pane(Role::Current).frame, 1);
        app.pane_mut(Role::Current).set_frame(0);
        finish_jobs(&mut app);
        assert!(app.compare.geometry.is_none(), "a comparison of the previous frame was kept");

        // Left alone, the job for what is shown lands, and so does its picture.
        app.ensure_compare(&ctx, false);
        finish_jobs(&mut app);
        let shown = app.subtraction().expect("the subtraction of the shown frames");
        // current (x + y) − prior x = y, on frame 0.
        assert_eq!(shown.difference.data[5 * 64 + 7], 5.0);
        app.ensure_compare(&ctx, false);
        finish_jobs(&mut app);
        app.ensure_compare(&ctx, false);
        assert!(app.compare.difference_texture.is_some(), "the subtraction picture was not uploaded");
    }
}
