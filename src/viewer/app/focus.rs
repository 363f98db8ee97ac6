//! Keyboard focus: a press on a pane gives the keys to the app.

use eframe::egui;

use super::App;

impl App {
    /// A press on a pane (any button) takes the keyboard from whatever widget held it (a text
    /// field, a control reached with Tab: while one has it the app's keys are not read) and, when
    /// the window itself does not have the keyboard, asks the window system for it, so that the
    /// review keys work after one click on an image even where the window manager did not focus
    /// the window (no window manager, focus-follows-mouse, a window opened behind another).
    pub(super) fn take_keyboard_on_press(&mut self, ui: &egui::Ui, response: &egui::Response) {
        if !(response.hovered() && ui.input(|i| i.pointer.any_pressed())) {
            return;
        }
        ui.ctx().memory_mut(|m| m.stop_text_input());
        if !ui.input(|i| i.focused) {
            // Also sets the X input focus directly (viewer::x11_focus) where no window manager would.
            self.viewport.push(egui::ViewportCommand::Focus);
        }
    }
}
