//! Mirrors one pane's navigation (window/level, frame, zoom and pan) onto the other, by relative
//! position or through the registration transform when "By registration" is on.

use eframe::egui::{Pos2, Vec2};

use super::App;
use crate::study::Window;
use crate::viewer::pane::{PaneChanges, Role, View};

impl App {
    /// Mirrors one pane's changes onto the other as the sync toggles say.
    pub(super) fn sync_from(&mut self, from: Role, changes: PaneChanges) {
        let to = from.other();
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

    /// Where the image point `p` of the pane showing `from` lies in the other pane: through the
    /// registration when sync uses it, else at the same relative position.
    pub(super) fn map_point(&self, from: Role, p: Pos2) -> Option<Pos2> {
        let to = from.other();
        let (src, dst) = (self.pane(from).current_frame()?, self.pane(to).current_frame()?);
        if self.sync.registered
            && let Some(a) = self.current_registration()
        {
            // prior = T(current)
            let t = a.fixed_from_moving;
            let map = if from == Role::Current { Some(t) } else { t.inverse() }?;
            let (x, y) = map.apply(p.x as f64 - 0.5, p.y as f64 - 0.5);
            return Some(Pos2::new(x as f32 + 0.5, y as f32 + 0.5));
        }
        Some(Pos2::new(p.x / src.width as f32 * dst.width as f32, p.y / src.height as f32 * dst.height as f32))
    }

    fn sync_view(&mut self, from: Role) {
        let to = from.other();
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
