//! What the app draws: the menu bar, status bar, the view/sync/grounding panel, the findings list
//! with thumbnails and threshold, the pairing banner, modal prompts, and the two panes. Panels
//! read the app and emit `AppCommand`s; they change nothing themselves.

use eframe::egui::{self, Color32, RichText, Sense, Vec2};

use super::{App, AppCommand, DialogRequest, Prompt, SyncSettings, ViewMode};
use crate::annotation::Status;
use crate::annotation::export::ExportFormat;
use crate::study::pairing::PairingIssue;
use crate::viewer::overlay::{self, OverlayState, kind_color};
use crate::viewer::pane::{PaneId, Preset, Role};

type Commands = Vec<AppCommand>;

pub(super) fn menu_bar_ui(app: &App, ui: &mut egui::Ui, out: &mut Commands) {
    egui::Panel::top("menu").show(ui, |ui| {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open prior…").clicked() {
                    out.push(AppCommand::Dialog(DialogRequest::OpenStudy(Role::Prior)));
                    ui.close();
                }
                if ui.add(egui::Button::new("Open current…").shortcut_text("Ctrl+O")).clicked() {
                    out.push(AppCommand::Dialog(DialogRequest::OpenStudy(Role::Current)));
                    ui.close();
                }
                if ui.button("Open folder with two studies…").clicked() {
                    out.push(AppCommand::Dialog(DialogRequest::OpenFolder));
                    ui.close();
                }
                super::remember::recent_menu_ui(app, ui, out);
                ui.separator();
                if ui.button("Open annotations…").clicked() {
                    out.push(AppCommand::Dialog(DialogRequest::OpenAnnotations));
                    ui.close();
                }
                if ui.add(egui::Button::new("Save annotations").shortcut_text("Ctrl+S")).clicked() {
                    out.push(AppCommand::Save);
                    ui.close();
                }
                if ui.button("Save annotations as…").clicked() {
                    out.push(AppCommand::Dialog(DialogRequest::SaveAnnotationsAs));
                    ui.close();
                }
                ui.menu_button("Export", |ui| {
                    for f in [ExportFormat::Coco, ExportFormat::Medsg, ExportFormat::Sr] {
                        if ui.button(f.label()).clicked() {
                            out.push(AppCommand::Dialog(DialogRequest::Export(f)));
                            ui.close();
                        }
                    }
                });
                ui.separator();
                super::pacs::file_menu_ui(app, ui, out);
                ui.separator();
                if ui.button("Quit").clicked() {
                    out.push(AppCommand::Quit);
                    ui.close();
                }
            });
            ui.menu_button("Edit", |ui| {
                if ui.add_enabled(app.history.can_undo(), egui::Button::new("Undo").shortcut_text("Ctrl+Z")).clicked() {
                    out.push(AppCommand::Undo);
                    ui.close();
                }
                if ui.add_enabled(app.history.can_redo(), egui::Button::new("Redo").shortcut_text("Ctrl+Shift+Z")).clicked() {
                    out.push(AppCommand::Redo);
                    ui.close();
                }
            });
            ui.menu_button("Help", |ui| {
                ui.label(KEYS);
            });
        });
    });
}

/// The keyboard and mouse reference (also in the README).
pub const KEYS: &str = "Mouse: wheel zoom · left-drag pan / move box · right-drag window/level · Ctrl+wheel frames\n\
Keys: ↑↓ ←→ frames · PgUp/PgDn ±10 frames · Space cine · Home reset · I invert · 1–7 W/L presets (2–5 CT only)\n\
F find changes · G find in other image · T timeline grid · B draw box · M ruler · Q rectangle ROI · E ellipse ROI · D subtraction · V cycle side by side / flicker / fade / subtraction · A accept · R reject (then the next undecided) · L relabel · Delete · N/P next/previous undecided\n\
Ctrl+Z undo · Ctrl+Shift+Z / Ctrl+Y redo · Ctrl+S save · Esc cancel";

pub(super) fn status_bar_ui(app: &App, ui: &mut egui::Ui, out: &mut Commands) {
    egui::Panel::bottom("status").show(ui, |ui| {
        ui.horizontal(|ui| {
            if let Some(g) = &app.jobs.grounding {
                ui.spinner();
                ui.label(format!("{}… {:.1} s", g.label, g.started.elapsed().as_secs_f32()));
                if let Some(p) = g.progress_text("steps") {
                    ui.add(
                        egui::ProgressBar::new(
                            g.progress.as_ref().and_then(|c| c.lock().ok().map(|c| c.0 as f32 / c.1.max(1) as f32)).unwrap_or(0.0),
                        )
                        .desired_width(120.0),
                    );
                    ui.label(p);
                }
                if ui.button("Cancel").clicked() {
                    out.push(AppCommand::CancelGrounding);
                }
                ui.separator();
            }
            // Right to left: the read-outs keep their room, the grounder line gets a bounded
            // share, and the status message takes what is left (cut short, whole on hover).
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let readouts: Vec<String> = [Role::Prior, Role::Current]
                    .into_iter()
                    .filter_map(|role| app.readout(role).map(|r| format!("{} {}", role.label(), r.describe())))
                    .collect();
                if !readouts.is_empty() {
                    ui.label(RichText::new(readouts.join("   ·   ")).monospace());
                    ui.separator();
                }
                let grounder = match &app.engine {
                    Some(e) => format!("Grounder: {}", e.status),
                    None => "Grounder: starting…".into(),
                };
                let width = (ui.available_width() * 0.3).min(320.0);
                ui.allocate_ui_with_layout(
                    Vec2::new(width, ui.available_height()),
                    egui::Layout::right_to_left(egui::Align::Center),
                    |ui| {
                        ui.add(egui::Label::new(RichText::new(&grounder).small()).truncate()).on_hover_text(&grounder);
                    },
                );
                ui.separator();
                ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
                    ui.add(egui::Label::new(&app.status).truncate()).on_hover_text(&app.status);
                });
            });
        });
    });
}

pub(super) fn side_panel_ui(app: &App, ui: &mut egui::Ui, out: &mut Commands) {
    egui::Panel::left("controls").resizable(true).default_size(210.0).show(ui, |ui| {
        ui.heading("View");
        ui.horizontal(|ui| {
            if ui.button("Reset").on_hover_text("Fit and default window (Home)").clicked() {
                out.push(AppCommand::ResetViews);
            }
            let role = app.active_role();
            let mut on = app.pane(role).invert;
            if ui.checkbox(&mut on, "Invert").changed() {
                out.push(AppCommand::SetInvert { role, on });
            }
        });
        ui.label("Window presets");
        ui.horizontal_wrapped(|ui| {
            // Only the presets that fit the active pane's modality (no CT windows on an MR).
            let modality = app.pane(app.active_role()).shown_frame().and_then(|f| f.meta.modality.clone());
            for p in Preset::for_modality(modality.as_deref()) {
                let key = Preset::ALL.iter().position(|q| *q == p).map_or(0, |k| k + 1);
                if ui.button(p.label()).on_hover_text(format!("key {key}")).clicked() {
                    out.push(AppCommand::ApplyPreset(p));
                }
            }
        });
        super::cine::cine_ui(app, ui, out);
        ui.separator();
        ui.heading("Compare");
        ui.horizontal_wrapped(|ui| {
            for mode in ViewMode::ALL {
                let hover = match mode {
                    ViewMode::SideBySide => "prior | current",
                    ViewMode::Flicker => "the current pane alternates prior and current (V cycles the modes)",
                    ViewMode::Fade => "the current pane blends prior into current",
                    ViewMode::Subtraction => "current − prior in the current pane (D)",
                };
                if ui.selectable_label(app.view_mode == mode, mode.label()).on_hover_text(hover).clicked() && app.view_mode != mode {
                    out.push(AppCommand::SetViewMode(mode));
                }
            }
        });
        match app.view_mode {
            ViewMode::Fade => {
                let mut t = app.fade;
                if ui.add(egui::Slider::new(&mut t, 0.0..=1.0).text("prior ... current")).changed() {
                    out.push(AppCommand::SetFade(t));
                }
            }
            ViewMode::Flicker => {
                let mut hz = app.flicker_hz;
                if ui.add(egui::Slider::new(&mut hz, 0.25..=10.0).logarithmic(true).text("Hz")).changed() {
                    out.push(AppCommand::SetFlickerHz(hz));
                }
            }
            ViewMode::SideBySide | ViewMode::Subtraction => {}
        }
        if app.view_mode != ViewMode::SideBySide {
            ui.label(RichText::new("Prior on the current's grid: registered when By registration is on").small());
        }
        super::compare::compare_controls_ui(app, ui, out);
        ui.separator();
        ui.heading("Sync");
        let mut sync: SyncSettings = app.sync;
        ui.checkbox(&mut sync.scroll, "Scroll");
        ui.checkbox(&mut sync.zoom_pan, "Zoom / pan");
        ui.checkbox(&mut sync.window, "Window / level");
        ui.checkbox(&mut sync.registered, "By registration")
            .on_hover_text("Map positions through a rigid registration of current onto prior, for different frames of reference");
        if sync != app.sync {
            out.push(AppCommand::SetSync(sync));
        }
        ui.separator();
        ui.heading("Grounding");
        let busy = app.jobs.grounding.is_some();
        let ready = app.engine.is_some() && !busy;
        if ui.add_enabled(ready, egui::Button::new("Find changes").shortcut_text("F")).clicked() {
            out.push(AppCommand::FindChanges);
        }
        if ui.add_enabled(ready && app.selected.is_some(), egui::Button::new("Find in other image").shortcut_text("G")).clicked() {
            out.push(AppCommand::FindInOther);
        }
        super::timeline::grounding_ui(app, ui, out);
        if ui.add(egui::Button::new("Draw box").shortcut_text("B").selected(app.drawing)).clicked() {
            out.push(AppCommand::SetDrawing(!app.drawing));
        }
        ui.separator();
        super::measuring::measure_section_ui(app, ui, out);
        ui.separator();
        ui.heading("Review");
        let mut threshold = app.threshold;
        if ui.add(egui::Slider::new(&mut threshold, 0.0..=1.0).text("Min. score")).changed() {
            out.push(AppCommand::SetThreshold(threshold));
        }
        let mut show_rejected = app.show_rejected;
        if ui.checkbox(&mut show_rejected, "Show rejected").changed() {
            out.push(AppCommand::SetShowRejected(show_rejected));
        }
        ui.horizontal(|ui| {
            let has = app.selected.is_some();
            if ui.add_enabled(has, egui::Button::new("Accept")).on_hover_text("A").clicked() {
                out.push(AppCommand::Decide(Status::Accepted));
            }
            if ui.add_enabled(has, egui::Button::new("Reject")).on_hover_text("R").clicked() {
                out.push(AppCommand::Decide(Status::Rejected));
            }
            if ui.add_enabled(has, egui::Button::new("Delete")).on_hover_text("Delete").clicked() {
                out.push(AppCommand::DeleteSelected);
            }
        });
    });
}

pub(super) fn findings_panel_ui(app: &App, ui: &mut egui::Ui, out: &mut Commands) {
    egui::Panel::right("findings").resizable(true).default_size(250.0).show(ui, |ui| {
        let visible = app.visible_ids();
        ui.heading(format!("Findings ({}/{})", visible.len(), app.doc.findings.len()));
        let t = app.threshold;
        ui.horizontal_wrapped(|ui| {
            let above = app.bulk_candidates(true).len();
            if ui
                .add_enabled(above > 0, egui::Button::new(format!("Accept all ≥ {t:.2} ({above})")))
                .on_hover_text("Accept every undecided proposal scored at or above the minimum score (one undo step)")
                .clicked()
            {
                out.push(AppCommand::DecideByThreshold { above: true });
            }
            let below = app.bulk_candidates(false).len();
            if ui
                .add_enabled(below > 0, egui::Button::new(format!("Reject all < {t:.2} ({below})")))
                .on_hover_text("Reject every undecided proposal scored below the minimum score, hidden ones included (one undo step)")
                .clicked()
            {
                out.push(AppCommand::DecideByThreshold { above: false });
            }
        });
        let hidden = app.hidden_below_threshold();
        if hidden > 0 {
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new(format!("{hidden} proposal(s) below {t:.2} hidden (score = probability the box is right)")).small());
                if ui.small_button("Show all").on_hover_text("Set the minimum score to 0").clicked() {
                    out.push(AppCommand::SetThreshold(0.0));
                }
            });
        }
        if let Some(id) = app.selected.clone()
            && let Some(f) = app.doc.finding(&id).cloned()
        {
            ui.horizontal(|ui| {
                ui.label(format!("Selected: {}", f.label));
                if ui.button("Relabel…").on_hover_text("L").clicked() {
                    out.push(AppCommand::SetPrompt(Some(Prompt::Relabel { finding: id.clone(), text: f.label.clone() })));
                }
            });
        }
        ui.separator();
        let key = app.image_key(Role::Current);
        let by_slice = app.pane(Role::Current).frame_count() > 1;
        let mut heading: Option<Option<u32>> = None;
        egui::ScrollArea::vertical().show(ui, |ui| {
            for id in visible {
                let Some(f) = app.doc.finding(&id).cloned() else { continue };
                // Grouped by the slice of the current image they are on (a whole-series
                // finding by its peak slice), as N/P step through them.
                let slice = super::timeline::slice_on(&f, &key);
                if by_slice && heading != Some(slice) {
                    heading = Some(slice);
                    let text = match slice {
                        Some(s) => format!("Slice {}", s + 1),
                        None => "On other images".to_string(),
                    };
                    ui.label(RichText::new(text).strong().color(Color32::from_rgb(160, 190, 230)));
                }
                let selected = app.selected.as_deref() == Some(id.as_str());
                let thumb = thumbnail(app, ui.ctx(), &f);
                let frame =
                    egui::Frame::new().inner_margin(4.0).fill(if selected { Color32::from_rgb(40, 60, 90) } else { Color32::TRANSPARENT });
                let resp = frame
                    .show(ui, |ui| {
                        ui.horizontal(|ui| {
                            if let Some(t) = &thumb {
                                ui.add(egui::Image::new((t.id(), Vec2::splat(40.0))));
                            }
                            ui.vertical(|ui| {
                                let title =
                                    if f.label == f.kind.label() { f.label.clone() } else { format!("{} · {}", f.label, f.kind.label()) };
                                ui.label(RichText::new(title).color(kind_color(f.kind)));
                                let score = f.score().map(|s| format!("score {s:.2} · ")).unwrap_or_default();
                                ui.label(RichText::new(format!("{score}{}", f.status.label())).small());
                                if let Some(m) = &f.measurement {
                                    ui.label(RichText::new(m.describe()).small());
                                }
                                if let Some(([a, b], _)) = f.slice_range().filter(|(r, _)| r[0] != r[1]) {
                                    ui.label(RichText::new(format!("slices {}–{}", a + 1, b + 1)).small());
                                }
                                if let Some(t) = &f.track {
                                    ui.label(RichText::new(format!("track · {} timepoints", t.measurements.len())).small());
                                }
                            });
                        });
                    })
                    .response
                    .interact(egui::Sense::click());
                if resp.clicked() {
                    out.push(AppCommand::Reveal(id.clone()));
                }
            }
        });
    });
}

/// A small crop of the current (or prior) image under the finding's box.
fn thumbnail(app: &App, ctx: &egui::Context, f: &crate::annotation::Finding) -> Option<egui::TextureHandle> {
    let role = if f.box_on(&app.image_key(Role::Current)).is_some() { Role::Current } else { Role::Prior };
    let b = app.reveal_box(f, role)?;
    let pane = app.pane(role);
    let frame = pane.series()?.frames.get(b.frame as usize)?;
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        b.bbox.iter().for_each(|v| v.to_bits().hash(&mut h));
        pane.generation.hash(&mut h);
        pane.window.center.to_bits().hash(&mut h);
        pane.window.width.to_bits().hash(&mut h);
        h.finish()
    };
    if let Some((k, t)) = app.thumbnails.borrow().get(&f.id)
        && *k == key
    {
        return Some(t.clone());
    }
    let r = b.rect().expand(4.0).clamp_to(frame.width as f32, frame.height as f32);
    // Only the crop is windowed: this reruns whenever the window changes, e.g. during a W/L drag.
    let region = [r.x1 as usize, r.y1 as usize, r.x2.ceil() as usize, r.y2.ceil() as usize];
    let crop = crate::viewer::pane::render_cpu_region(frame, pane.window, pane.invert ^ frame.invert, false, region);
    if crop.width() == 0 || crop.height() == 0 {
        return None;
    }
    let tex = ctx.load_texture(format!("thumb-{}", f.id), crop, egui::TextureOptions::LINEAR);
    app.thumbnails.borrow_mut().insert(f.id.clone(), (key, tex.clone()));
    Some(tex)
}

/// A warning across the top of the panes while the hung pair looks wrong (another patient, the
/// current older than the prior, another modality); it goes when the pair changes.
pub(super) fn pairing_banner_ui(app: &App, ui: &mut egui::Ui, out: &mut Commands) {
    let issues = app.pairing_issues();
    if issues.is_empty() {
        return;
    }
    let frame = egui::Frame::new().fill(Color32::from_rgb(110, 60, 0)).inner_margin(egui::Margin::symmetric(10, 6));
    egui::Panel::top("pairing").frame(frame).show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.vertical(|ui| {
                let other_patient = issues.iter().any(|i| i.is_other_patient());
                let heading =
                    if other_patient { "Check this pairing: these images may be of two different patients" } else { "Check this pairing" };
                ui.label(RichText::new(heading).strong().color(Color32::WHITE));
                for issue in &issues {
                    ui.label(RichText::new(issue.describe()).color(Color32::from_rgb(255, 225, 170)));
                }
            });
            if issues.iter().any(|i| matches!(i, PairingIssue::CurrentOlder { .. })) {
                ui.add_space(16.0);
                let blocked = app.swap_blocked();
                let button = ui.add_enabled(blocked.is_none(), egui::Button::new("Swap prior/current"));
                let button = match blocked {
                    Some(why) => button.on_disabled_hover_text(why),
                    None => button.on_hover_text("Hang the older study as prior"),
                };
                if button.clicked() {
                    out.push(AppCommand::SwapPriorCurrent);
                }
            }
        });
    });
}

pub(super) fn prompt_ui(app: &App, ui: &mut egui::Ui, out: &mut Commands) {
    let Some(prompt) = app.prompt.clone() else { return };
    let modal = egui::Modal::new(egui::Id::unique("prompt")).show(ui.ctx(), |ui| match prompt {
        Prompt::UnsavedOnQuit => {
            ui.heading("Unsaved annotations");
            ui.label("Save the changes before quitting?");
            ui.horizontal(|ui| {
                if ui.button("Save and quit").clicked() {
                    out.push(AppCommand::QuitSaving);
                }
                if ui.button("Quit without saving").clicked() {
                    out.push(AppCommand::QuitDiscarding);
                }
                if ui.button("Cancel").clicked() {
                    out.push(AppCommand::SetPrompt(None));
                }
            });
        }
        Prompt::Recover { recovery, document, doc_path } => {
            ui.heading("Recover unsaved annotations?");
            ui.label(format!(
                "Tandem found annotations that were not saved ({} finding(s)), newer than {}.",
                document.findings.len(),
                doc_path.display()
            ));
            ui.horizontal(|ui| {
                if ui.button("Recover").clicked() {
                    out.push(AppCommand::Recover { document: document.clone(), doc_path: doc_path.clone() });
                }
                if ui.button("Discard").clicked() {
                    out.push(AppCommand::DiscardRecovery(recovery.clone()));
                }
            });
        }
        Prompt::Relabel { finding, mut text } => {
            ui.heading("Label");
            let r = ui.add(egui::TextEdit::singleline(&mut text));
            r.request_focus();
            let enter = ui.input(|i| i.key_pressed(egui::Key::Enter));
            if r.changed() {
                out.push(AppCommand::SetPrompt(Some(Prompt::Relabel { finding: finding.clone(), text: text.clone() })));
            }
            // A label from the list applies at once; typing another is still allowed.
            ui.horizontal_wrapped(|ui| {
                for label in app.label_choices() {
                    if ui.selectable_label(text.trim() == label, &label).clicked() {
                        out.push(AppCommand::Relabel { finding: finding.clone(), label });
                        out.push(AppCommand::SetPrompt(None));
                    }
                }
            });
            ui.horizontal(|ui| {
                if ui.button("Apply").clicked() || enter {
                    out.push(AppCommand::Relabel { finding: finding.clone(), label: text.clone() });
                    out.push(AppCommand::SetPrompt(None));
                }
                if ui.button("Cancel").clicked() || ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                    out.push(AppCommand::SetPrompt(None));
                }
            });
        }
        Prompt::Path { purpose, mut text, why } => {
            ui.heading(purpose.title());
            ui.label(RichText::new(format!("The file dialog could not open: {why}.")).color(Color32::from_rgb(255, 190, 120)));
            ui.label(if purpose.saves() { "Type the path to write:" } else { "Type the path to open:" });
            let r = ui.add(egui::TextEdit::singleline(&mut text).desired_width(420.0).hint_text("/path/to/file"));
            r.request_focus();
            let mut chosen = None;
            // Completion: entries of the typed folder that start with what follows its last '/'.
            for candidate in crate::viewer::dialogs::completions(&text, 6) {
                if ui.small_button(&candidate).clicked() {
                    chosen = Some(candidate);
                }
            }
            let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if let Some(c) = chosen {
                text = c;
            }
            if text != *prompt_text(app) {
                out.push(AppCommand::SetPrompt(Some(Prompt::Path { purpose, text: text.clone(), why: why.clone() })));
            }
            ui.horizontal(|ui| {
                let label = if purpose.saves() { "Save" } else { "Open" };
                let ok = ui.add_enabled(!text.trim().is_empty(), egui::Button::new(label)).clicked();
                if (ok || enter) && !text.trim().is_empty() {
                    // Closes this prompt; a plain SetPrompt(None) is a cancel (of "Save and quit" too).
                    out.push(AppCommand::DialogChosen { purpose, path: std::path::PathBuf::from(text.trim()) });
                }
                if ui.button("Cancel").clicked() {
                    out.push(AppCommand::SetPrompt(None));
                }
            });
        }
        Prompt::Error(msg) => {
            ui.heading("Something went wrong");
            ui.label(msg);
            if ui.button("OK").clicked() {
                out.push(AppCommand::SetPrompt(None));
            }
        }
    });
    if modal.should_close() && matches!(app.prompt, Some(Prompt::Error(_)) | Some(Prompt::Relabel { .. }) | Some(Prompt::Path { .. })) {
        out.push(AppCommand::SetPrompt(None));
    }
}

impl App {
    /// The two panes side by side: input first (tools, navigation), then image, boxes and corners.
    pub(super) fn panes_ui(&mut self, ui: &mut egui::Ui, frame: &eframe::Frame) {
        let full = ui.max_rect();
        let gap = 3.0;
        let n = self.panes.len().max(1) as f32;
        let width = (full.width() - gap * (n - 1.0)) / n;
        let rects: Vec<egui::Rect> = (0..self.panes.len())
            .map(|i| egui::Rect::from_min_size(full.min + Vec2::new(i as f32 * (width + gap), 0.0), Vec2::new(width, full.height())))
            .collect();
        let render_state = if self.cpu_rendering { None } else { frame.wgpu_render_state() };
        self.hovered = None;
        self.cursor = None;
        for (i, rect) in rects.iter().enumerate() {
            let id = PaneId(i);
            let cursor = if self.drawing { egui::CursorIcon::Crosshair } else { egui::CursorIcon::Default };
            // Not focusable: a pane holding egui's keyboard focus would keep the app's keys from it.
            let response = ui.allocate_rect(*rect, Sense::CLICK | Sense::DRAG).on_hover_cursor(cursor);
            let response = response.accessible_name(format!("{} pane", self.panes[i].role.label()));
            self.take_keyboard_on_press(ui, &response);
            self.panes[i].rect = *rect;
            if response.hovered() {
                self.active = id;
            }
            self.pane_interaction(ui, id, &response);
        }
        let time = ui.input(|inp| inp.time);
        for (i, rect) in rects.iter().enumerate() {
            // Flicker, fade and subtraction: the GPU composites the current pane from both frames.
            self.panes[i].compare = self.gpu_compare_for(PaneId(i), time);
            self.panes[i].paint(ui, *rect, render_state);
            let painter = ui.painter_at(*rect);
            self.paint_compare(&painter, PaneId(i), time);
            let pane = &self.panes[i];
            let visible = |f: &crate::annotation::Finding| self.visible(f);
            let key = self.image_key(pane.role);
            let st = OverlayState {
                image_id: &key,
                frame: pane.frame as u32,
                selected: self.selected.as_deref(),
                hovered: self.hovered.as_deref(),
                preview: self.drag_preview(pane.role),
            };
            overlay::draw(&painter, pane, &self.doc, &visible, &st);
            pane.paint_corners(&painter, *rect);
            self.paint_measurement_shapes(&painter, PaneId(i));
            self.paint_measurements(&painter, PaneId(i));
            if self.active == PaneId(i) {
                painter.rect_stroke(
                    rect.shrink(0.5),
                    0.0,
                    egui::Stroke::new(1.0, Color32::from_rgb(70, 110, 170)),
                    egui::StrokeKind::Inside,
                );
            }
        }
    }
}

impl App {
    /// A marker where the pointer over the other pane maps to in this one (the position the
    /// read-out of this pane is taken at). Measurements are drawn by `paint_measurement_shapes`.
    fn paint_measurements(&self, painter: &egui::Painter, id: PaneId) {
        let Some(pane) = self.panes.get(id.0) else { return };
        let Some(view) = pane.view else { return };
        let to_screen = |p: egui::Pos2| view.screen_from_image(pane.rect, p);
        if let Some((from, p)) = self.cursor
            && from != pane.role
            && let Some(q) = self.map_point(from, p)
        {
            let s = to_screen(q);
            let stroke = egui::Stroke::new(1.0, Color32::from_rgb(255, 200, 60));
            painter.line_segment([s - Vec2::new(8.0, 0.0), s + Vec2::new(8.0, 0.0)], stroke);
            painter.line_segment([s - Vec2::new(0.0, 8.0), s + Vec2::new(0.0, 8.0)], stroke);
        }
    }
}

/// The text of the path prompt now shown (empty when another prompt is).
fn prompt_text(app: &App) -> &str {
    match &app.prompt {
        Some(Prompt::Path { text, .. }) => text,
        _ => "",
    }
}
