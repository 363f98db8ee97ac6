//! Input turned into commands: keys, dropped files, the close request, and pointer gestures on a
//! pane (select, move, resize and draw boxes). Only transient gesture state (the drag in
//! progress, the hovered box, the active pane) and a pane's own zoom/pan/window are changed here;
//! everything else is emitted as an `AppCommand`.

use eframe::egui::{self, Key, Modifiers, Pos2};

use super::{App, AppCommand, DialogRequest, Drag, Prompt, ViewMode};
use crate::annotation::measurement::Shape;
use crate::annotation::{Finding, Status};
use crate::grounding::BBox;
use crate::viewer::overlay;
use crate::viewer::pane::{PaneChanges, PaneId, Preset, Role};

impl App {
    pub(super) fn handle_close(&mut self, ui: &egui::Ui) {
        if ui.input(|i| i.viewport().close_requested()) && self.history.is_dirty() && !self.allow_close {
            ui.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.emit(AppCommand::SetPrompt(Some(Prompt::UnsavedOnQuit)));
        }
    }

    pub(super) fn handle_dropped_files(&mut self, ui: &egui::Ui) {
        let (dropped, pointer) =
            ui.input(|i| (i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).collect::<Vec<_>>(), i.pointer.latest_pos()));
        let Some(first) = dropped.first().cloned() else { return };
        if first.extension().is_some_and(|e| e == "json") {
            self.emit(AppCommand::OpenAnnotations(first));
            return;
        }
        let role = pointer.and_then(|p| self.panes.iter().find(|pane| pane.rect.contains(p))).map_or(self.active_role(), |p| p.role);
        self.emit(AppCommand::Open { role, path: first });
        if let Some(second) = dropped.get(1) {
            self.emit(AppCommand::Open { role: role.other(), path: second.clone() });
        }
    }

    pub(super) fn handle_keys(&mut self, ui: &egui::Ui) {
        let cmd = |k: Key| ui.input_mut(|i| i.consume_key(Modifiers::COMMAND, k));
        let cmd_shift = |k: Key| ui.input_mut(|i| i.consume_key(Modifiers::COMMAND | Modifiers::SHIFT, k));
        let mut out = Vec::new();
        if cmd_shift(Key::Z) || cmd(Key::Y) {
            out.push(AppCommand::Redo);
        } else if cmd(Key::Z) {
            out.push(AppCommand::Undo);
        }
        if cmd(Key::S) {
            out.push(AppCommand::Save);
        }
        if cmd(Key::O) {
            out.push(AppCommand::Dialog(DialogRequest::OpenStudy(Role::Current)));
        }
        let pressed = |k: Key| ui.input(|i| i.key_pressed(k) && !i.modifiers.command && !i.modifiers.alt);
        let keys = [
            (Key::Escape, AppCommand::Escape),
            (Key::F, AppCommand::FindChanges),
            (Key::G, AppCommand::FindInOther),
            (Key::A, AppCommand::Decide(Status::Accepted)),
            (Key::R, AppCommand::Decide(Status::Rejected)),
            (Key::Delete, AppCommand::DeleteSelected),
            (Key::Backspace, AppCommand::DeleteSelected),
            (Key::N, AppCommand::Step { forward: true }),
            (Key::P, AppCommand::Step { forward: false }),
            (Key::B, AppCommand::SetDrawing(!self.drawing)),
            (Key::M, AppCommand::SetMeasuring(self.measuring != Some(Shape::Line))),
            (Key::Q, AppCommand::SetMeasureTool(if self.measuring == Some(Shape::Rectangle) { None } else { Some(Shape::Rectangle) })),
            (Key::E, AppCommand::SetMeasureTool(if self.measuring == Some(Shape::Ellipse) { None } else { Some(Shape::Ellipse) })),
            (Key::V, AppCommand::SetViewMode(next_mode(self.view_mode))),
            (
                Key::D,
                AppCommand::SetViewMode(if self.view_mode == ViewMode::Subtraction { ViewMode::SideBySide } else { ViewMode::Subtraction }),
            ),
            (Key::Home, AppCommand::ResetViews),
            (Key::I, AppCommand::SetInvert { role: self.active_role(), on: !self.pane(self.active_role()).invert }),
            (Key::Num1, AppCommand::ApplyPreset(Preset::Auto)),
            (Key::Num2, AppCommand::ApplyPreset(Preset::Lung)),
            (Key::Num3, AppCommand::ApplyPreset(Preset::Mediastinum)),
            (Key::Num4, AppCommand::ApplyPreset(Preset::Bone)),
            (Key::Num5, AppCommand::ApplyPreset(Preset::Brain)),
            (Key::Num6, AppCommand::ApplyPreset(Preset::FromFile)),
            (Key::Num7, AppCommand::ApplyPreset(Preset::FullRange)),
            (Key::Space, AppCommand::SetCine { playing: !self.cine().playing, fps: self.cine().fps }),
            (Key::T, AppCommand::Timeline(super::TimelineCommand::Grid(self.grid.is_none()))),
        ];
        out.extend(keys.into_iter().filter(|(k, _)| pressed(*k)).map(|(_, c)| c));
        if pressed(Key::L)
            && let Some(id) = self.selected.clone()
        {
            let text = self.doc.finding(&id).map(|f| f.label.clone()).unwrap_or_default();
            out.push(AppCommand::SetPrompt(Some(Prompt::Relabel { finding: id, text })));
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
            out.push(AppCommand::StepFrame(delta));
        }
        self.queued.extend(out);
    }

    /// Tools first (select, move, resize, draw), then the pane's own navigation; what the pane's
    /// navigation changed is mirrored onto the other pane by a command.
    pub(super) fn pane_interaction(&mut self, ui: &egui::Ui, id: PaneId, response: &egui::Response) {
        let Some(role) = self.panes.get(id.0).map(|p| p.role) else { return };
        let key = self.image_key(role);
        let key = key.as_str();
        let frame = self.pane(role).frame as u32;
        let pointer = response.hover_pos().or(response.interact_pointer_pos());
        let hit_at = |app: &App, p: Pos2| {
            let visible = |f: &Finding| app.visible(f);
            overlay::hit(app.pane(role), &app.doc, &visible, key, frame, app.selected.as_deref(), p)
        };
        let hit = pointer.and_then(|p| hit_at(self, p));
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
                if let Some(shape) = self.measuring {
                    self.drag = Some(Drag::Measure { role, shape, start: p, current: p });
                } else if self.drawing {
                    self.drag = Some(Drag::Draw { role, start: p, current: p });
                } else if let Some((fid, handle)) = press.and_then(|pp| hit_at(self, pp))
                    && let Some(b) = self.doc.finding(&fid).and_then(|f| f.box_at(key, frame)).map(|b| b.rect())
                {
                    self.emit(AppCommand::Select(Some(fid.clone())));
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
                    Drag::Draw { role: r, current, .. } | Drag::Measure { role: r, current, .. } if *r == role => *current = p,
                    _ => {}
                }
            }
            if response.drag_stopped_by(egui::PointerButton::Primary)
                && let Some(done) = self.drag.take()
            {
                self.emit(AppCommand::CommitDrag(done));
            }
        }
        if let Some(p) = response.hover_pos().and_then(to_image) {
            self.cursor = Some((role, p));
        }
        if response.clicked_by(egui::PointerButton::Primary) && !self.drawing && self.measuring.is_none() {
            self.emit(AppCommand::Select(hit.map(|(fid, _)| fid)));
        }
        let pan_with_primary = !editing && !self.drawing && self.measuring.is_none();
        let changes: PaneChanges = self.pane_mut(role).handle_input(ui, response, pan_with_primary);
        if changes.window.is_some() || changes.view || changes.frame_delta != 0 {
            self.emit(AppCommand::Mirror { role, changes });
        }
    }

    /// The box being drawn or edited on `role`'s pane, for the overlay's preview.
    pub(super) fn drag_preview(&self, role: Role) -> Option<(&str, BBox)> {
        match &self.drag {
            Some(Drag::Edit { finding, role: r, current, .. }) if *r == role => Some((finding.as_str(), *current)),
            Some(Drag::Draw { role: r, start, current }) if *r == role => Some(("", BBox::new(start.x, start.y, current.x, current.y))),
            _ => None,
        }
    }
}

/// The view mode after `mode` in the V key's cycle.
fn next_mode(mode: ViewMode) -> ViewMode {
    let i = ViewMode::ALL.iter().position(|m| *m == mode).unwrap_or(0);
    ViewMode::ALL[(i + 1) % ViewMode::ALL.len()]
}
