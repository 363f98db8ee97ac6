//! Findings drawn over a pane (colour by kind, line style by status, label and score) and the
//! hit-testing that lets tools select, move and resize boxes.

use eframe::egui::{self, Color32, FontId, Pos2, Rect, Shape, Stroke, StrokeKind, Vec2};

use crate::annotation::{Document, Finding, FindingKind, Status};
use crate::grounding::BBox;
use crate::viewer::pane::{Pane, View};

/// Which part of a selected box the pointer grabbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handle {
    Move,
    N,
    S,
    E,
    W,
    NE,
    NW,
    SE,
    SW,
}

impl Handle {
    pub const RESIZE: [Handle; 8] = [Handle::NW, Handle::N, Handle::NE, Handle::E, Handle::SE, Handle::S, Handle::SW, Handle::W];

    /// The handle's anchor point on box `b` (image coordinates).
    pub fn anchor(self, b: &BBox) -> Pos2 {
        let (cx, cy) = b.centre();
        match self {
            Handle::Move => Pos2::new(cx, cy),
            Handle::N => Pos2::new(cx, b.y1),
            Handle::S => Pos2::new(cx, b.y2),
            Handle::E => Pos2::new(b.x2, cy),
            Handle::W => Pos2::new(b.x1, cy),
            Handle::NE => Pos2::new(b.x2, b.y1),
            Handle::NW => Pos2::new(b.x1, b.y1),
            Handle::SE => Pos2::new(b.x2, b.y2),
            Handle::SW => Pos2::new(b.x1, b.y2),
        }
    }

    /// `b` with this handle dragged by `d` (image pixels); never inverted, at least 2 px.
    pub fn drag(self, b: &BBox, d: Vec2) -> BBox {
        let (mut x1, mut y1, mut x2, mut y2) = (b.x1, b.y1, b.x2, b.y2);
        match self {
            Handle::Move => return b.translate(d.x, d.y),
            Handle::N => y1 += d.y,
            Handle::S => y2 += d.y,
            Handle::E => x2 += d.x,
            Handle::W => x1 += d.x,
            Handle::NE => {
                x2 += d.x;
                y1 += d.y
            }
            Handle::NW => {
                x1 += d.x;
                y1 += d.y
            }
            Handle::SE => {
                x2 += d.x;
                y2 += d.y
            }
            Handle::SW => {
                x1 += d.x;
                y2 += d.y
            }
        }
        if x2 - x1 < 2.0 {
            if matches!(self, Handle::W | Handle::NW | Handle::SW) { x1 = x2 - 2.0 } else { x2 = x1 + 2.0 }
        }
        if y2 - y1 < 2.0 {
            if matches!(self, Handle::N | Handle::NW | Handle::NE) { y1 = y2 - 2.0 } else { y2 = y1 + 2.0 }
        }
        BBox::new(x1, y1, x2, y2)
    }
}

/// One table with `tandem snapshot` (core), so that reports match the screen.
pub fn kind_color(kind: FindingKind) -> Color32 {
    let [r, g, b] = crate::snapshot::kind_rgb(kind);
    Color32::from_rgb(r, g, b)
}

/// Screen rectangle of an image box.
pub fn screen_rect(view: &View, rect: Rect, b: &BBox) -> Rect {
    Rect::from_min_max(view.screen_from_image(rect, Pos2::new(b.x1, b.y1)), view.screen_from_image(rect, Pos2::new(b.x2, b.y2)))
}

/// What to draw for one pane.
pub struct OverlayState<'a> {
    pub image_id: &'a str,
    pub frame: u32,
    pub selected: Option<&'a str>,
    pub hovered: Option<&'a str>,
    /// A box being dragged or drawn: (finding id or "" for a new box, box).
    pub preview: Option<(&'a str, BBox)>,
}

/// Draws the visible findings on `pane` (clipped to its rect).
pub fn draw(painter: &egui::Painter, pane: &Pane, doc: &Document, visible: &dyn Fn(&Finding) -> bool, st: &OverlayState) {
    let Some(view) = pane.view else { return };
    let rect = pane.rect;
    for f in doc.findings.iter().filter(|f| visible(f)) {
        let Some(b) = f.box_at(st.image_id, st.frame) else { continue };
        if f.measurement.is_some() {
            // Drawn as their shape with their values (app::measure); only the selected one's
            // handles are drawn here, to move or resize it like a box.
            if st.selected == Some(f.id.as_str()) {
                let bbox = match st.preview {
                    Some((id, p)) if id == f.id => p,
                    _ => b.rect(),
                };
                for h in Handle::RESIZE {
                    let p = view.screen_from_image(rect, h.anchor(&bbox));
                    painter.rect_filled(Rect::from_center_size(p, Vec2::splat(7.0)), 1.0, Color32::WHITE);
                }
            }
            continue;
        }
        let bbox = match st.preview {
            Some((id, p)) if id == f.id => p,
            _ => b.rect(),
        };
        let r = screen_rect(&view, rect, &bbox);
        let selected = st.selected == Some(f.id.as_str());
        let hovered = st.hovered == Some(f.id.as_str());
        let mut color = kind_color(f.kind);
        if f.status == Status::Rejected {
            color = Color32::from_gray(150);
        }
        let width = if selected {
            2.5
        } else if hovered {
            2.0
        } else {
            1.3
        };
        let stroke = Stroke::new(width, color);
        match f.status {
            Status::Accepted => {
                painter.rect_stroke(r, 0.0, stroke, StrokeKind::Middle);
            }
            Status::Proposed => {
                let pts = [r.left_top(), r.right_top(), r.right_bottom(), r.left_bottom(), r.left_top()];
                painter.extend(Shape::dashed_line(&pts, stroke, 6.0, 4.0));
            }
            Status::Rejected => {
                let pts = [r.left_top(), r.right_top(), r.right_bottom(), r.left_bottom(), r.left_top()];
                painter.extend(Shape::dotted_line(&pts, color, 5.0, 1.0));
            }
        }
        if hovered || selected {
            painter.rect_filled(r, 0.0, color.gamma_multiply(0.12));
        }
        let score = f.score().map(|s| format!(" {s:.2}")).unwrap_or_default();
        let text = format!(
            "{}{score}{}",
            f.label,
            if f.status == Status::Accepted {
                " · accepted"
            } else if f.status == Status::Rejected {
                " · rejected"
            } else {
                ""
            }
        );
        let galley = painter.layout_no_wrap(text, FontId::proportional(12.0), color);
        let at = r.left_top() - Vec2::new(0.0, galley.size().y + 2.0);
        painter.rect_filled(Rect::from_min_size(at, galley.size() + Vec2::new(4.0, 0.0)), 2.0, Color32::from_black_alpha(170));
        painter.galley(at + Vec2::new(2.0, 0.0), galley, color);
        if selected {
            for h in Handle::RESIZE {
                let p = view.screen_from_image(rect, h.anchor(&bbox));
                painter.rect_filled(Rect::from_center_size(p, Vec2::splat(7.0)), 1.0, Color32::WHITE);
                painter.rect_stroke(Rect::from_center_size(p, Vec2::splat(7.0)), 1.0, Stroke::new(1.0, color), StrokeKind::Middle);
            }
        }
    }
    if let Some(("", b)) = st.preview {
        let r = screen_rect(&view, rect, &b);
        painter.rect_stroke(r, 0.0, Stroke::new(1.5, kind_color(FindingKind::Manual)), StrokeKind::Middle);
    }
}

/// The finding (and handle) under screen point `pos`, preferring the selected finding's handles.
pub fn hit(
    pane: &Pane,
    doc: &Document,
    visible: &dyn Fn(&Finding) -> bool,
    image_id: &str,
    frame: u32,
    selected: Option<&str>,
    pos: Pos2,
) -> Option<(String, Handle)> {
    let view = pane.view?;
    let rect = pane.rect;
    if let Some(sel) = selected.and_then(|id| doc.finding(id))
        && visible(sel)
        && let Some(b) = sel.box_at(image_id, frame)
    {
        for h in Handle::RESIZE {
            if view.screen_from_image(rect, h.anchor(&b.rect())).distance(pos) <= 6.0 {
                return Some((sel.id.clone(), h));
            }
        }
    }
    // Smallest box containing the point wins (nested boxes stay reachable).
    doc.findings
        .iter()
        .filter(|f| visible(f))
        .filter_map(|f| {
            let b = f.box_at(image_id, frame)?;
            let r = screen_rect(&view, rect, &b.rect()).expand(3.0);
            r.contains(pos).then(|| (r.area(), f.id.clone()))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, id)| (id, Handle::Move))
}
