//! Cine: a multi-frame series played at a chosen rate in the active pane, mirrored by scroll sync.

use eframe::egui;

use super::{App, AppCommand};
use crate::viewer::pane::PaneChanges;

/// Play state; frames advance from the frame clock (`egui::InputState::time`), so a slow frame
/// skips frames instead of slowing the playback.
#[derive(Clone, Copy, Debug)]
pub struct Cine {
    pub playing: bool,
    pub fps: f32,
    /// When the last frame step was due (seconds, frame clock); None until playing starts.
    last_secs: Option<f64>,
}

impl Default for Cine {
    fn default() -> Self {
        Cine { playing: false, fps: 10.0, last_secs: None }
    }
}

impl Cine {
    /// Starts or stops playback at `fps` (clamped to 1–60; 10 when not finite).
    pub fn set(&mut self, playing: bool, fps: f32) {
        self.fps = if fps.is_finite() { fps.clamp(1.0, 60.0) } else { 10.0 };
        if !playing || !self.playing {
            self.last_secs = None;
        }
        self.playing = playing;
    }
}

impl App {
    pub fn cine(&self) -> Cine {
        self.cine
    }

    /// Steps the active pane by the frames due since the last step (wrapping), mirrored onto the
    /// other pane when scroll sync is on; returns how long until the next is due.
    pub(super) fn advance_cine(&mut self, time_secs: f64) -> Option<std::time::Duration> {
        let role = self.active_role();
        // In the timeline grid the grid's active pane plays.
        let n = match &self.grid {
            Some(g) => g.panes.get(g.active).map_or(0, |p| p.pane.frame_count()),
            None => self.pane(role).frame_count(),
        };
        if !self.cine.playing || n < 2 {
            self.cine.last_secs = None;
            return None;
        }
        let fps = self.cine.fps as f64;
        let last = *self.cine.last_secs.get_or_insert(time_secs);
        let due = ((time_secs - last) * fps).floor().max(0.0) as usize;
        if due > 0 {
            self.cine.last_secs = Some(last + due as f64 / fps);
            if self.grid.is_some() {
                self.grid_cine_step(due);
                return Some(std::time::Duration::from_secs_f64(1.0 / fps));
            }
            let pane = self.pane_mut(role);
            let next = (pane.frame + due) % n;
            pane.set_frame(next);
            self.sync_from(role, PaneChanges { frame_delta: 1, ..Default::default() });
        }
        Some(std::time::Duration::from_secs_f64(1.0 / fps))
    }
}

/// Play/pause and the rate, shown when the active pane has more than one frame.
pub(super) fn cine_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    if app.pane(app.active_role()).frame_count() < 2 {
        return;
    }
    let cine = app.cine;
    ui.horizontal(|ui| {
        let label = if cine.playing { "Pause" } else { "Play" };
        if ui.button(label).on_hover_text("Cine (Space)").clicked() {
            out.push(AppCommand::SetCine { playing: !cine.playing, fps: cine.fps });
        }
        let mut fps = cine.fps;
        // Named for screen readers: no visible label sits beside it, and the number box takes
        // the slider's name.
        let rate = ui.add(egui::Slider::new(&mut fps, 1.0..=60.0).integer().suffix(" fps")).accessible_name("cine rate");
        if rate.on_hover_text("Cine rate, frames per second").changed() {
            out.push(AppCommand::SetCine { playing: cine.playing, fps });
        }
    });
}
