//! Headless CPU composition of a prior/current pair with its findings overlaid, as the viewer shows it, for reports and tests.

use crate::annotation::{Document, FindingKind, Status};
use crate::registration::difference;
use crate::study::{Frame, Samples, Window};

/// What the right-hand pane shows (the left one is always the prior).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Prior | current, each with its own boxes.
    SideBySide,
    /// Both phases of the viewer's flicker: the prior resampled onto the current's grid | the current,
    /// both with the current's boxes (what alternates in place in the viewer).
    FlickerPair,
    /// Prior | the viewer's fade at 50 %.
    Fade,
    /// Prior | current − prior in the diverging colour map.
    Subtract,
}

/// Background and gap between panes.
const BACKGROUND: [u8; 4] = [0, 0, 0, 255];
pub const GAP_PX: usize = 8;

/// A finding's colour by kind, shared with the viewer's overlay so that reports match the screen.
pub fn kind_rgb(kind: FindingKind) -> [u8; 3] {
    match kind {
        FindingKind::Change => [255, 150, 40],
        FindingKind::Correspondence => [40, 200, 255],
        FindingKind::Manual => [110, 230, 120],
        FindingKind::Measurement => [120, 230, 255],
    }
}

/// Blue (current darker) through black (no change) to orange (current brighter), ±`window`;
/// dark grey where the prior does not reach (NaN). The viewer's subtraction colour map.
pub fn diverging_rgb(d: f32, window: f32) -> [u8; 3] {
    if d.is_nan() {
        return [40, 40, 40];
    }
    let t = (d / window).clamp(-1.0, 1.0);
    let a = t.abs();
    let (hi, lo) = ((255.0 * a) as u8, (255.0 * a * a) as u8);
    if t >= 0.0 { [hi, (200.0 * a) as u8, lo / 3] } else { [lo / 3, (160.0 * a) as u8, hi] }
}

/// An RGBA image, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgba {
    pub width: usize,
    pub height: usize,
    pub data: Vec<[u8; 4]>,
}

impl Rgba {
    pub fn filled(width: usize, height: usize, c: [u8; 4]) -> Rgba {
        Rgba { width, height, data: vec![c; width * height] }
    }

    pub fn get(&self, x: usize, y: usize) -> [u8; 4] {
        self.data[y * self.width + x]
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 4]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            self.data[y as usize * self.width + x as usize] = c;
        }
    }

    fn blit(&mut self, src: &Rgba, x0: usize, y0: usize) {
        for y in 0..src.height {
            for x in 0..src.width {
                self.put((x0 + x) as i64, (y0 + y) as i64, src.get(x, y));
            }
        }
    }

    /// Raw RGBA bytes for the `image` crate.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data.into_iter().flatten().collect()
    }
}

/// A frame through its default presentation (default window, VOI LUT when the file has one,
/// MONOCHROME1 inverted): what a pane shows before anyone touches the window.
pub fn render_default(frame: &Frame) -> Rgba {
    let window = frame.default_window;
    let lut = frame.voi_lut.as_ref();
    let (lo, scale) = (window.lower(), 255.0 / window.width.max(1e-6));
    let map = |v: f32| -> u8 {
        let t = match lut {
            Some(l) => {
                let i = ((v - l.first_mapped).round() as i64).clamp(0, l.data.len() as i64 - 1) as usize;
                l.data[i] / l.max_output.max(1.0) * 255.0
            }
            None => (v - lo) * scale,
        };
        let t = t.clamp(0.0, 255.0) as u8;
        if frame.invert { 255 - t } else { t }
    };
    let samples = frame.samples();
    let data = match samples.as_deref() {
        Err(_) => vec![gray(0); frame.width * frame.height],
        Ok(Samples::Gray(v)) => v.iter().map(|&g| gray(map(g))).collect(),
        Ok(Samples::Rgb(v)) => v.iter().map(|p| [map(p[0] as f32), map(p[1] as f32), map(p[2] as f32), 255]).collect(),
    };
    Rgba { width: frame.width, height: frame.height, data }
}

fn gray(g: u8) -> [u8; 4] {
    [g, g, g, 255]
}

/// The window that shows `to_gray` values (negated for MONOCHROME1) as the pane shows the frame,
/// as the viewer's flicker/fade texture does; inversion is then undone by the negation.
fn gray_window(frame: &Frame) -> Window {
    let w = frame.default_window;
    if frame.invert { Window { center: -w.center, width: w.width } } else { w }
}

fn windowed(image: &crate::study::gray::GrayImage, window: Window) -> Rgba {
    let (lo, scale) = (window.lower(), 255.0 / window.width.max(1e-6));
    let data = image.data.iter().map(|&v| if v.is_nan() { gray(0) } else { gray(((v - lo) * scale).clamp(0.0, 255.0) as u8) }).collect();
    Rgba { width: image.width, height: image.height, data }
}

/// The right-hand pane for `mode`, on the current's grid. The prior is resampled by relative
/// position (the viewer's unregistered sync); registration is not run here.
fn comparison(prior: &Frame, current: &Frame, mode: Mode) -> (Rgba, Rgba) {
    let (pg, cg) = (prior.to_gray(), current.to_gray());
    let prior_on_current = difference::prior_on_current(&pg, current.width, current.height, None);
    match mode {
        Mode::SideBySide => (render_default(prior), render_default(current)),
        Mode::FlickerPair => (windowed(&prior_on_current, gray_window(current)), render_default(current)),
        Mode::Fade => {
            let (p, c) = (windowed(&prior_on_current, gray_window(current)), render_default(current));
            // Where the prior does not reach its layer is black, as the viewer's texture is there.
            let data =
                p.data.iter().zip(&c.data).map(|(a, b)| std::array::from_fn(|k| (a[k] as u16 + b[k] as u16).div_ceil(2) as u8)).collect();
            (render_default(prior), Rgba { width: c.width, height: c.height, data })
        }
        Mode::Subtract => {
            let diff = difference::minus(&cg, &prior_on_current);
            let window = difference::symmetric_window(&diff);
            let data = diff.data.iter().map(|&d| {
                let [r, g, b] = diverging_rgb(d, window);
                [r, g, b, 255]
            });
            (render_default(prior), Rgba { width: diff.width, height: diff.height, data: data.collect() })
        }
    }
}

/// Draws the visible findings of `doc` on `image` (boxes of image key `key`, frame `frame`):
/// accepted solid, proposed dashed (6 on, 4 off, as the overlay), rejected ones left out. Two
/// pixels wide so that a report printed small still shows them.
pub fn draw_boxes(image: &mut Rgba, doc: &Document, key: &str, frame: u32) {
    for f in doc.findings.iter().filter(|f| f.status != Status::Rejected) {
        let Some(b) = f.box_on(key).filter(|b| b.frame == frame) else { continue };
        let r = b.rect();
        let [red, green, blue] = kind_rgb(f.kind);
        let c = [red, green, blue, 255];
        let (x1, y1) = (r.x1.floor() as i64, r.y1.floor() as i64);
        let (x2, y2) = ((r.x2.ceil() as i64 - 1).max(x1), (r.y2.ceil() as i64 - 1).max(y1));
        let dashed = f.status == Status::Proposed;
        // Along the perimeter, so that dashes run around corners as on screen.
        let mut along = 0i64;
        let mut edge = |image: &mut Rgba, x: i64, y: i64, inward: (i64, i64)| {
            if !dashed || along % 10 < 6 {
                image.put(x, y, c);
                image.put(x + inward.0, y + inward.1, c);
            }
            along += 1;
        };
        for x in x1..=x2 {
            edge(image, x, y1, (0, 1));
        }
        for y in y1..=y2 {
            edge(image, x2, y, (-1, 0));
        }
        for x in (x1..=x2).rev() {
            edge(image, x, y2, (0, -1));
        }
        for y in (y1..=y2).rev() {
            edge(image, x1, y, (1, 0));
        }
    }
}

/// Prior and the `mode`'s right-hand pane side by side (first frames), with the document's
/// boxes on their pixels: the prior's on the left, the current's on the right.
pub fn compose(prior: &Frame, current: &Frame, doc: Option<&Document>, mode: Mode) -> Rgba {
    let (mut left, mut right) = comparison(prior, current, mode);
    if let Some(doc) = doc {
        // Flicker's left phase is the prior on the current's grid: the current's boxes belong there.
        let left_key = if mode == Mode::FlickerPair { "current" } else { "prior" };
        draw_boxes(&mut left, doc, left_key, prior.frame_index as u32);
        draw_boxes(&mut right, doc, "current", current.frame_index as u32);
    }
    let (w, h) = (left.width + GAP_PX + right.width, left.height.max(right.height));
    let mut out = Rgba::filled(w, h, BACKGROUND);
    out.blit(&left, 0, 0);
    out.blit(&right, left.width + GAP_PX, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotation::{Finding, ImageBox, Source};
    use crate::grounding::BBox;
    use crate::study::{Meta, raster};
    use std::sync::Arc;

    fn frame(w: u32, h: u32, v: u8) -> Frame {
        let img = image::GrayImage::from_pixel(w, h, image::Luma([v]));
        let mut f = raster::frame_from_image(image::DynamicImage::ImageLuma8(img), Arc::new(Meta::default()));
        f.default_window = Window { center: 127.5, width: 255.0 };
        f
    }

    #[test]
    fn boxes_land_on_their_pixels_in_their_colour_and_dashes_leave_gaps() {
        let (p, c) = (frame(40, 30, 100), frame(40, 30, 100));
        let mut doc = Document::new(vec![]);
        let human = Source::Human { user: None };
        doc.findings.push(Finding::new(
            FindingKind::Manual,
            "m",
            vec![ImageBox::new("current", 0, BBox::new(5.0, 5.0, 25.0, 20.0))],
            human,
            "t",
        ));
        let model = Source::Model { id: "x".into(), version: "1".into(), score: 0.9 };
        doc.findings.push(Finding::new(
            FindingKind::Change,
            "c",
            vec![ImageBox::new("prior", 0, BBox::new(2.0, 2.0, 38.0, 28.0))],
            model,
            "t",
        ));
        let out = compose(&p, &c, Some(&doc), Mode::SideBySide);
        assert_eq!((out.width, out.height), (40 + GAP_PX + 40, 30));
        let right = 40 + GAP_PX;
        assert_eq!(out.get(right + 5, 5), [110, 230, 120, 255], "accepted manual box, top-left corner");
        assert_eq!(out.get(right + 24, 19), [110, 230, 120, 255], "bottom-right corner");
        assert_eq!(out.get(right + 15, 12), [100, 100, 100, 255], "inside untouched");
        let top: Vec<bool> = (2..38).map(|x| out.get(x, 2) == [255, 150, 40, 255]).collect();
        assert!(top.iter().any(|&b| b) && top.iter().any(|&b| !b), "proposed box is dashed");
        assert_eq!(out.get(40 + 3, 3), BACKGROUND, "the gap is background");
    }

    #[test]
    fn subtraction_of_equal_images_is_black_and_fade_is_the_mean() {
        let (p, c) = (frame(16, 16, 200), frame(16, 16, 200));
        let out = compose(&p, &c, None, Mode::Subtract);
        assert_eq!(out.get(16 + GAP_PX + 8, 8), [0, 0, 0, 255]);
        let (p, c) = (frame(16, 16, 0), frame(16, 16, 200));
        let out = compose(&p, &c, None, Mode::Fade);
        assert_eq!(out.get(16 + GAP_PX + 8, 8), [100, 100, 100, 255]);
    }
}
