//! Rulers and ROIs in the viewer: the tools, the measurement findings they add to the document
//! (one undo step each), the Measure section of the side panel, and how they are drawn.

use eframe::egui::{self, Color32, Pos2, Stroke, Vec2};

use super::{App, AppCommand, Drag, Ruler, image_id};
use crate::annotation::measurement::{self, Measured, Shape};
use crate::annotation::{Command, Finding, FindingKind};
use crate::grounding::BBox;
use crate::viewer::pane::{PaneId, Role};

/// The colour of measurements (as `snapshot::kind_rgb` gives the measurement kind).
fn colour() -> Color32 {
    crate::viewer::overlay::kind_color(FindingKind::Measurement)
}

impl App {
    /// Turns a measuring tool on or off (drawing boxes goes off with it).
    pub(super) fn set_measure_tool(&mut self, tool: Option<Shape>) {
        self.measuring = tool;
        if tool.is_some() {
            self.drawing = false;
        }
        self.status = match tool {
            Some(Shape::Line) => "ruler: drag on an image (Esc ends)".into(),
            Some(shape) => format!("{}: drag a box on an image (Esc ends)", shape.label()),
            None => "measuring off".into(),
        };
    }

    /// A ruler or ROI drawn from `start` to `current` on `role`'s pane becomes a measurement
    /// finding on the frame shown (one undo step).
    pub(super) fn commit_measure(&mut self, role: Role, shape: Shape, start: Pos2, current: Pos2) {
        let pane = self.pane(role);
        let Some(frame) = pane.current_frame() else { return };
        let too_small = match shape {
            Shape::Line => (current - start).length() < 1.0,
            _ => (current.x - start.x).abs() < 1.0 || (current.y - start.y).abs() < 1.0,
        };
        if too_small {
            self.status = format!("{} too small; drag from one point to the other", shape.label());
            return;
        }
        let geometry = match shape {
            Shape::Line => [start.x, start.y, current.x, current.y],
            _ => BBox::new(start.x, start.y, current.x, current.y).clamp_to(frame.width as f32, frame.height as f32).to_array(),
        };
        let now = crate::annotation::document::now();
        let user = std::env::var("USER").ok();
        let f = measurement::new_finding(shape, image_id(role), pane.frame as u32, geometry, frame, user, &now);
        let what = f.measurement.as_ref().map(Measured::describe).unwrap_or_default();
        let id = f.id.clone();
        self.apply(Command::Add { findings: vec![f], description: format!("{} on {}", shape.label(), role.label()) });
        self.selected = Some(id);
        self.status = format!("{} on {}: {what}", shape.label(), role.label());
    }

    /// Removes every measurement, as one undo step (removed last first, so that undo puts each
    /// back where it was).
    pub(super) fn clear_measurements(&mut self) {
        let mut commands: Vec<Command> = self
            .doc
            .findings
            .iter()
            .enumerate()
            .filter(|(_, f)| f.measurement.is_some())
            .map(|(index, f)| Command::Remove { index, finding: f.clone() })
            .collect();
        if commands.is_empty() {
            self.status = "no measurements to clear".into();
            return;
        }
        commands.reverse();
        let n = commands.len();
        self.apply(Command::Group { commands, description: format!("clear {n} measurement(s)") });
        self.drop_hidden_selection();
    }

    /// A measurement's box moved or resized from `from`: a ruler's ends follow, and its values are
    /// measured again on the frame it is on.
    pub(super) fn remeasure(&self, f: &mut Finding, role: Role, from: BBox) {
        let Some(b) = f.boxes.iter_mut().find(|b| b.image == image_id(role)) else { return };
        let Some(m) = f.measurement.as_mut() else { return };
        let Some(frame) = self.pane(role).series().and_then(|s| s.frames.get(b.frame as usize)) else { return };
        m.follow_box(from, b.rect());
        if let (Shape::Line, [a, z]) = (m.shape, m.points.as_slice()) {
            b.bbox = measurement::line_box(*a, *z).to_array();
        }
        *m = m.remeasured(frame, b.bbox);
    }

    /// The document's rulers on the frames the panes show.
    pub fn rulers(&self) -> Vec<Ruler> {
        self.shown_measurements()
            .filter_map(|(role, f, m)| {
                let (Shape::Line, [a, z], Some(length)) = (m.shape, m.points.as_slice(), m.length()) else { return None };
                Some(Ruler {
                    finding: f.id.clone(),
                    role,
                    frame: self.pane(role).frame,
                    a: Pos2::new(a[0], a[1]),
                    b: Pos2::new(z[0], z[1]),
                    length,
                })
            })
            .collect()
    }

    /// The document's measurements on the frames the panes show: (role, finding, measurement).
    pub fn shown_measurements(&self) -> impl Iterator<Item = (Role, &Finding, &Measured)> {
        [Role::Prior, Role::Current].into_iter().flat_map(move |role| {
            let frame = self.pane(role).frame as u32;
            self.doc.findings.iter().filter(move |f| self.visible(f)).filter_map(move |f| {
                let m = f.measurement.as_ref()?;
                f.box_on(image_id(role)).filter(|b| b.frame == frame).map(|_| (role, f, m))
            })
        })
    }

    /// The drag being measured on `role`'s pane, with what it measures now.
    fn measure_preview(&self, role: Role) -> Option<(Shape, Pos2, Pos2, String)> {
        let Some(Drag::Measure { role: r, shape, start, current }) = &self.drag else { return None };
        if *r != role {
            return None;
        }
        let frame = self.pane(role).current_frame()?;
        let geometry = [start.x, start.y, current.x, current.y];
        let m = match shape {
            Shape::Line => Measured::line(frame, [start.x, start.y], [current.x, current.y]),
            _ => Measured::roi(frame, *shape, BBox::new(geometry[0], geometry[1], geometry[2], geometry[3]).to_array()),
        };
        Some((*shape, *start, *current, if *shape == Shape::Line { m.describe() } else { roi_text(shape.label(), &m) }))
    }

    /// The pane's measurements (their shapes, with the values beside them) and the one being drawn.
    pub(super) fn paint_measurement_shapes(&self, painter: &egui::Painter, id: PaneId) {
        let Some(pane) = self.panes.get(id.0) else { return };
        let Some(view) = pane.view else { return };
        let to_screen = |p: Pos2| view.screen_from_image(pane.rect, p);
        let editing = |fid: &str| match &self.drag {
            Some(Drag::Edit { finding, role, current, .. }) if finding == fid && *role == pane.role => Some(*current),
            _ => None,
        };
        for (role, f, m) in self.shown_measurements().filter(|(role, ..)| *role == pane.role) {
            let Some(b) = f.box_on(image_id(role)) else { continue };
            let selected = self.selected.as_deref() == Some(f.id.as_str());
            // While its box is dragged, the shape follows the box.
            let (bbox, mut m) = (editing(&f.id).unwrap_or(b.rect()), m.clone());
            m.follow_box(b.rect(), bbox);
            let width = if selected { 2.5 } else { 1.5 };
            let text = if m.shape == Shape::Line { m.describe() } else { roi_text(&f.label, &m) };
            draw_shape(painter, m.shape, &m.points, bbox, &to_screen, width, text);
        }
        if let Some((shape, start, current, text)) = self.measure_preview(pane.role) {
            let points = [[start.x, start.y], [current.x, current.y]];
            draw_shape(painter, shape, &points, BBox::new(start.x, start.y, current.x, current.y), &to_screen, 1.5, text);
        }
    }
}

/// One measurement's outline and its text (with a dark shadow, readable on any image).
fn draw_shape(
    painter: &egui::Painter,
    shape: Shape,
    points: &[[f32; 2]],
    b: BBox,
    to_screen: &dyn Fn(Pos2) -> Pos2,
    width: f32,
    text: String,
) {
    let stroke = Stroke::new(width, colour());
    let (lt, rb) = (to_screen(Pos2::new(b.x1, b.y1)), to_screen(Pos2::new(b.x2, b.y2)));
    let r = egui::Rect::from_two_pos(lt, rb);
    let at = match (shape, points) {
        (Shape::Line, [a, z]) => {
            let (sa, sz) = (to_screen(Pos2::new(a[0], a[1])), to_screen(Pos2::new(z[0], z[1])));
            painter.line_segment([sa, sz], stroke);
            for s in [sa, sz] {
                painter.circle_filled(s, 2.5, colour());
            }
            sz + Vec2::new(8.0, -8.0)
        }
        (Shape::Ellipse, _) => {
            let (c, radius) = (r.center(), r.size() / 2.0);
            let n = 64;
            let pts: Vec<Pos2> = (0..=n)
                .map(|k| {
                    let t = k as f32 / n as f32 * std::f32::consts::TAU;
                    c + Vec2::new(radius.x * t.cos(), radius.y * t.sin())
                })
                .collect();
            painter.add(egui::Shape::line(pts, stroke));
            r.left_bottom() + Vec2::new(0.0, 4.0)
        }
        _ => {
            painter.rect_stroke(r, 0.0, stroke, egui::StrokeKind::Middle);
            r.left_bottom() + Vec2::new(0.0, 4.0)
        }
    };
    // A ruler's length beside its end; an ROI's lines below it, on a dark backdrop.
    let font = egui::FontId::proportional(13.0);
    let galley = painter.layout_no_wrap(text, font, colour());
    let at = if shape == Shape::Line { at - Vec2::new(0.0, galley.size().y) } else { at };
    painter.rect_filled(
        egui::Rect::from_min_size(at - Vec2::new(2.0, 1.0), galley.size() + Vec2::new(4.0, 2.0)),
        2.0,
        Color32::from_black_alpha(170),
    );
    painter.galley(at, galley, colour());
}

/// An ROI's text on the image: its label, then its values on two short lines.
fn roi_text(label: &str, m: &Measured) -> String {
    let area = m.area().map(|a| a.describe()).unwrap_or_default();
    match &m.stats {
        Some(s) => {
            let unit = s.unit.as_deref().map(|u| format!(" {u}")).unwrap_or_default();
            let n = |v: f64| if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") };
            format!("{label}\nmean {:.1}{unit}  SD {:.1}\nmin {}  max {}  {area}", s.mean, s.sd, n(s.min), n(s.max))
        }
        None => format!("{label}\n{area}"),
    }
}

/// The Measure section of the side panel: the tools and what the panes' measurements read.
pub(super) fn measure_section_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    ui.heading("Measure");
    ui.horizontal_wrapped(|ui| {
        for (shape, name, key) in [(Shape::Line, "Ruler", "M"), (Shape::Rectangle, "Rectangle", "Q"), (Shape::Ellipse, "Ellipse", "E")] {
            let on = app.measuring == Some(shape);
            let hover = match shape {
                Shape::Line => "Drag a distance: mm from the pixel spacing, px when the file has none",
                _ => "Drag an ROI: mean, SD, min and max in modality units (HU for CT) and its area",
            };
            if ui.add(egui::Button::new(name).shortcut_text(key).selected(on)).on_hover_text(hover).clicked() {
                out.push(AppCommand::SetMeasureTool(if on { None } else { Some(shape) }));
            }
        }
    });
    let shown: Vec<String> = app.shown_measurements().map(|(role, _, m)| format!("{}: {}", role.label(), m.describe())).collect();
    for line in &shown {
        ui.label(line);
    }
    if app.doc.findings.iter().any(|f| f.measurement.is_some())
        && ui.button("Clear measurements").on_hover_text("Every ruler and ROI of the document (one undo step)").clicked()
    {
        out.push(AppCommand::ClearMeasurements);
    }
}
