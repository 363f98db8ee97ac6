//! The MedSG-Bench file format: task JSON items, their PNG images (with red reference boxes
//! drawn on them), reference boxes in questions, and writing synthesized items in that format.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::grounding::geometry::BBox;
use crate::grounding::synth::SynthItem;
use crate::grounding::task::Task;
use crate::study::gray::GrayImage;

/// One benchmark item; unknown fields are kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MedsgItem {
    pub id: String,
    pub task: String,
    pub images: Vec<String>,
    #[serde(default)]
    pub question: String,
    #[serde(default)]
    pub answer: Option<Vec<f64>>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl MedsgItem {
    pub fn answer_box(&self) -> Option<BBox> {
        let a = self.answer.as_ref()?;
        (a.len() == 4).then(|| BBox::new(a[0] as f32, a[1] as f32, a[2] as f32, a[3] as f32))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MedsgError {
    #[error("cannot read {path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{path} is not a MedSG-Bench task file: {msg}")]
    Json { path: String, msg: String },
    #[error("cannot read image {path}: {msg}")]
    Image { path: String, msg: String },
}

pub fn read_task_file(path: &Path) -> Result<Vec<MedsgItem>, MedsgError> {
    let size = std::fs::metadata(path).map_err(|e| MedsgError::Io { path: path.display().to_string(), msg: e.to_string() })?.len();
    if size > crate::annotation::io::MAX_DOCUMENT_BYTES {
        return Err(MedsgError::Io { path: path.display().to_string(), msg: format!("{} MB is too large for a task file", size >> 20) });
    }
    let bytes = std::fs::read(path).map_err(|e| MedsgError::Io { path: path.display().to_string(), msg: e.to_string() })?;
    serde_json::from_slice(&bytes).map_err(|e| MedsgError::Json { path: path.display().to_string(), msg: e.to_string() })
}

/// The reference box written in a question as `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`.
pub fn question_box(question: &str) -> Option<BBox> {
    let start = question.find("<|box_start|>")? + "<|box_start|>".len();
    let end = start + question[start..].find("<|box_end|>")?;
    let nums: Vec<f32> = question[start..end]
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (nums.len() == 4).then(|| BBox::new(nums[0], nums[1], nums[2], nums[3]))
}

fn is_mark_red(p: &[u8]) -> bool {
    p[0] >= 200 && p[1] <= 60 && p[2] <= 60
}

/// A benchmark image as grey 0..1 with its red reference marks painted out, and the box
/// those marks outline (drawn 2 px outside the box), if any.
pub struct BenchImage {
    pub image: GrayImage,
    pub red_box: Option<BBox>,
}

pub fn read_image(path: &Path) -> Result<BenchImage, MedsgError> {
    let err = |msg: String| MedsgError::Image { path: path.display().to_string(), msg };
    let img = crate::study::raster::open_image(path).map_err(|e| err(e.to_string()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let sixteen =
        matches!(img, image::DynamicImage::ImageLuma16(_) | image::DynamicImage::ImageRgb16(_) | image::DynamicImage::ImageRgba16(_));
    if !img.color().has_color() {
        let data: Vec<f32> = if sixteen {
            img.to_luma16().into_raw().into_iter().map(|v| v as f32 / 65535.0).collect()
        } else {
            img.to_luma8().into_raw().into_iter().map(|v| v as f32 / 255.0).collect()
        };
        return Ok(BenchImage { image: GrayImage { width: w, height: h, data }, red_box: None });
    }
    let rgb = img.to_rgb8();
    let raw = rgb.as_raw();
    let pixel = |x: usize, y: usize| &raw[(y * w + x) * 3..(y * w + x) * 3 + 3];
    let mut gray = GrayImage::from_fn(w, h, |x, y| {
        let p = pixel(x, y);
        (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) / 255.0
    });
    let red_mask = GrayImage::from_fn(w, h, |x, y| if is_mark_red(pixel(x, y)) { 1.0 } else { 0.0 });
    let Some(MarkOutline { mut mask, inset }) = mark_outline(&red_mask) else {
        // Red in the picture itself (a fundus photograph, colour Doppler) is no mark: it stays.
        return Ok(BenchImage { image: gray, red_box: None });
    };
    let red_box = BBox::of_mask(&mask, 0.5).map(|m| BBox::new(m.x1 + inset[2], m.y1 + inset[0], m.x2 - inset[3], m.y2 - inset[1]));
    // Paint the marks out from their unmarked neighbours, growing inwards.
    for _ in 0..6 {
        let mut changed = false;
        let (g0, m0) = (gray.clone(), mask.clone());
        for y in 0..h {
            for x in 0..w {
                if m0.get(x, y) < 0.5 {
                    continue;
                }
                let (mut sum, mut n) = (0.0, 0);
                for (dx, dy) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)] {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h && m0.get(nx as usize, ny as usize) < 0.5 {
                        sum += g0.get(nx as usize, ny as usize);
                        n += 1;
                    }
                }
                if n > 0 {
                    gray.set(x, y, sum / n as f32);
                    mask.set(x, y, 0.0);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    Ok(BenchImage { image: gray, red_box })
}

/// How far (px) from its bounding box's edge a mark's line may run: MedSG draws 2-px lines.
const MARK_LINE_PX: usize = 3;

/// A reference mark found in an image: its pixels (0/1) and how far (px) the box lies inside
/// its bounding box on each side (top, bottom, left, right).
struct MarkOutline {
    mask: GrayImage,
    inset: [f32; 4],
}

/// The red pixels (`red`: 1 where mark-red) that outline a rectangle. Red regions of the picture
/// itself (a fundus photograph, colour Doppler, a lesion) are set aside first: lines of the mark
/// are at most `MARK_LINE_PX` thick, so a pixel under a solid red square one px thicker is not
/// one of them (a mark drawn against red content loses only the pixels where they touch). Of
/// what is left, the largest connected set whose pixels all but lie on their bounding box's
/// border, that covers at least half of each side of it (a side along the image's edge may have
/// been drawn outside it), has at least three of its corners and an empty middle.
fn mark_outline(red: &GrayImage) -> Option<MarkOutline> {
    let (w, h) = (red.width, red.height);
    let thin = GrayImage::from_fn(w, h, |x, y| if red.get(x, y) > 0.5 && !under_solid_square(red, x, y) { 1.0 } else { 0.0 });
    let (labels, comps) = crate::grounding::geometry::components(&thin, 0.5, &thin);
    let (t, line) = (MARK_LINE_PX, |label: u32, x: usize, y: usize| labels[y * w + x] == label);
    let outline = |label: u32, b: &BBox| -> Option<[f32; 4]> {
        let (x1, y1, x2, y2) = (b.x1 as usize, b.y1 as usize, b.x2 as usize, b.y2 as usize);
        if x2 - x1 <= 6 || y2 - y1 <= 6 {
            return None;
        }
        let (mut on_border, mut total) = (0usize, 0usize);
        // Which columns hold the mark along the top and bottom edges, which rows along the sides.
        let mut sides = [vec![false; x2 - x1], vec![false; x2 - x1], vec![false; y2 - y1], vec![false; y2 - y1]];
        for y in y1..y2 {
            for x in x1..x2 {
                if !line(label, x, y) {
                    continue;
                }
                let near = [y < y1 + t, y + t >= y2, x < x1 + t, x + t >= x2];
                total += 1;
                on_border += near.contains(&true) as usize;
                for (k, &n) in near.iter().enumerate() {
                    sides[k][if k < 2 { x - x1 } else { y - y1 }] |= n;
                }
            }
        }
        let at_image_edge = [y1 == 0, y2 == h, x1 == 0, x2 == w];
        let drawn = [0, 1, 2, 3].map(|k| sides[k].iter().filter(|&&v| v).count() * 2 >= sides[k].len());
        let corners = [(x1, y1, 0, 2), (x2 - 1, y1, 0, 3), (x1, y2 - 1, 1, 2), (x2 - 1, y2 - 1, 1, 3)]
            .iter()
            .filter(|&&(x, y, a, b)| line(label, x, y) || !drawn[a] || !drawn[b])
            .count();
        let hollow = !line(label, (x1 + x2) / 2, (y1 + y2) / 2);
        let closed = (0..4).all(|k| drawn[k] || at_image_edge[k]) && drawn.iter().filter(|&&d| d).count() >= 2;
        if !(on_border * 20 >= total * 19 && closed && corners >= 3 && hollow) {
            return None;
        }
        // The box lies 2 px inside a side drawn whole; a side against the image's edge may have
        // been clipped, so there it lies as far inside as the line is thick.
        // Pixel `i` along side `k`, `c` px in from the bounding box's edge.
        let at = |k: usize, c: usize, i: usize| match k {
            0 => (i, y1 + c),
            1 => (i, y2 - 1 - c),
            2 => (x1 + c, i),
            _ => (x2 - 1 - c, i),
        };
        let thickness = |k: usize| {
            // Along the side's inner stretch, clear of the crossing lines at its ends.
            let span = if k < 2 { x1 + t..x2 - t } else { y1 + t..y2 - t };
            let on_line = |c: usize, i: usize| {
                let (x, y) = at(k, c, i);
                line(label, x, y)
            };
            let drawn_at = |c: usize| span.clone().filter(|&i| on_line(c, i)).count() * 5 >= span.len() * 4;
            (0..t).take_while(|&c| drawn_at(c)).count() as f32
        };
        Some([0, 1, 2, 3].map(|k| match (drawn[k], at_image_edge[k]) {
            (false, _) => 0.0,
            (true, true) => thickness(k),
            (true, false) => 2.0,
        }))
    };
    let (label, inset) = comps
        .iter()
        .enumerate()
        .filter_map(|(i, c)| outline(i as u32 + 1, &c.bbox).map(|d| (i as u32 + 1, d, c.pixels)))
        .max_by_key(|&(_, _, pixels)| pixels)
        .map(|(label, inset, _)| (label, inset))?;
    Some(MarkOutline { mask: GrayImage::from_fn(w, h, |x, y| if line(label, x, y) { 1.0 } else { 0.0 }), inset })
}

/// Whether (`x`, `y`) lies under a solid red square one px thicker than a mark's line.
fn under_solid_square(red: &GrayImage, x: usize, y: usize) -> bool {
    let s = MARK_LINE_PX + 1;
    let solid = |x0: usize, y0: usize| {
        x0 + s <= red.width && y0 + s <= red.height && (y0..y0 + s).all(|yy| (x0..x0 + s).all(|xx| red.get(xx, yy) > 0.5))
    };
    (y.saturating_sub(s - 1)..=y).any(|y0| (x.saturating_sub(s - 1)..=x).any(|x0| solid(x0, y0)))
}

/// Draws a 2-px pure red rectangle just outside `b` (MedSG's marking).
pub fn draw_red_box(rgb: &mut image::RgbImage, b: &BBox) {
    let (w, h) = (rgb.width() as i64, rgb.height() as i64);
    let (x1, y1, x2, y2) = (b.x1.round() as i64, b.y1.round() as i64, b.x2.round() as i64, b.y2.round() as i64);
    let mut put = |x: i64, y: i64| {
        if x >= 0 && y >= 0 && x < w && y < h {
            rgb.put_pixel(x as u32, y as u32, image::Rgb([255, 0, 0]));
        }
    };
    for t in 1..=2 {
        for x in x1 - t..x2 + t {
            put(x, y1 - t);
            put(x, y2 + t - 1);
        }
        for y in y1 - t..y2 + t {
            put(x1 - t, y);
            put(x2 + t - 1, y);
        }
    }
}

#[cfg(test)]
fn gray_png(img: &GrayImage) -> image::GrayImage {
    image::GrayImage::from_raw(img.width as u32, img.height as u32, img.to_u8(0.0, 1.0)).expect("buffer matches size")
}

/// An 8-bit PNG, grey, or indexed when it carries red marks: 255 grey levels (0..=254) plus
/// pure red, which keeps marked images as small as grey ones.
pub fn encode_png(img: &GrayImage, marks: Option<&BBox>) -> anyhow::Result<Vec<u8>> {
    let mut grey = img.to_u8(0.0, 1.0);
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, img.width as u32, img.height as u32);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::High);
    enc.set_filter(png::Filter::Adaptive);
    if let Some(b) = marks {
        let mut rgb = image::RgbImage::new(img.width as u32, img.height as u32);
        draw_red_box(&mut rgb, b);
        for (g, p) in grey.iter_mut().zip(rgb.pixels()) {
            *g = if p[0] == 255 { 255 } else { (*g).min(254) };
        }
        let mut palette: Vec<u8> = (0..255u8).flat_map(|v| [v, v, v]).collect();
        palette.extend_from_slice(&[255, 0, 0]);
        enc.set_color(png::ColorType::Indexed);
        enc.set_palette(palette);
    } else {
        enc.set_color(png::ColorType::Grayscale);
    }
    let mut writer = enc.write_header()?;
    writer.write_image_data(&grey)?;
    writer.finish()?;
    Ok(bytes)
}

/// Writes `items` as a MedSG-Bench task file `dir/name.json` with images under `dir/images/`.
pub fn write_items(dir: &Path, name: &str, items: &[(String, SynthItem)]) -> anyhow::Result<PathBuf> {
    let img_dir = dir.join("images");
    std::fs::create_dir_all(&img_dir)?;
    let mut out = Vec::new();
    for (id, item) in items {
        let stem = id.replace('/', "_");
        let mut paths = Vec::new();
        for (k, img) in item.images.iter().enumerate() {
            let file = format!("{stem}_{k}.png");
            let marks = if k == 0 { item.reference.as_ref() } else { None };
            crate::fsutil::write_atomic(&img_dir.join(&file), &encode_png(img, marks)?)?;
            paths.push(format!("images/{file}"));
        }
        let reference = item.reference.map(|b| b.rounded());
        let mut extra = serde_json::Map::new();
        if item.task == Task::MultiView {
            extra.insert("size".into(), serde_json::json!([item.images[1].width, item.images[1].height]));
        }
        out.push(MedsgItem {
            id: id.clone(),
            task: item.task.medsg_name().into(),
            images: paths,
            question: item.task.question(reference),
            answer: Some(item.answer.rounded().iter().map(|&v| v as f64).collect()),
            extra,
        });
    }
    let path = dir.join(format!("{name}.json"));
    crate::fsutil::write_atomic(&path, &serde_json::to_vec_pretty(&out)?)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_question_boxes() {
        let q = "Track the object (<|box_start|>(120,140),(190,200)<|box_end|>) and locate it.";
        assert_eq!(question_box(q), Some(BBox::new(120.0, 140.0, 190.0, 200.0)));
        assert_eq!(question_box("no box here"), None);
        assert_eq!(question_box("<|box_start|>(1,2)<|box_end|>"), None);
    }

    #[test]
    fn indexed_marked_png_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let g = GrayImage::from_fn(64, 64, |x, y| ((x + y) % 9) as f32 / 8.0);
        let b = BBox::new(10.0, 12.0, 40.0, 30.0);
        let p = dir.path().join("m.png");
        std::fs::write(&p, encode_png(&g, Some(&b)).unwrap()).unwrap();
        let read = read_image(&p).unwrap();
        assert_eq!(read.red_box, Some(b));
        // Away from the marks, grey values survive (255 becomes 254).
        let v = read.image.get(50, 50);
        assert!((v - g.get(50, 50).min(254.0 / 255.0)).abs() < 1.0 / 255.0 + 1e-6, "{v}");
    }

    #[test]
    fn red_in_the_picture_is_neither_a_mark_nor_painted_out() {
        // A colour picture with a filled red disc and a wavy red line (as a fundus photograph's
        // vessels can be), and a red box drawn around 20..50 × 24..44.
        let mut picture = image::RgbImage::from_fn(96, 80, |x, _| image::Rgb([150 + (x % 5) as u8, 140, 110]));
        // …and small red shapes: a ring and a filled 7-px square, as overlay text or markers are.
        let in_disc = |x: u32, y: u32| {
            let ring = ((x as f32 - 10.0).powi(2) + (y as f32 - 60.0).powi(2)).sqrt();
            (x as i64 - 75).pow(2) + (y as i64 - 60).pow(2) < 100
                || (4.0..5.5).contains(&ring)
                || ((30..37).contains(&x) && (60..67).contains(&y))
        };
        let on_line = |x: u32, y: u32| (y as f32 - (10.0 + 6.0 * (x as f32 / 9.0).sin())).abs() <= 1.0;
        for (x, y, p) in picture.enumerate_pixels_mut() {
            if in_disc(x, y) || on_line(x, y) {
                *p = image::Rgb([230, 30, 20]);
            }
        }
        let red_grey = (0.299 * 230.0 + 0.587 * 30.0 + 0.114 * 20.0) / 255.0;
        let line_pixel = (40, (10.0f32 + 6.0 * (40.0f32 / 9.0).sin()).round() as usize);
        let dir = tempfile::tempdir().unwrap();
        let read = |rgb: &image::RgbImage, name: &str| {
            let p = dir.path().join(name);
            image::DynamicImage::ImageRgb8(rgb.clone()).save(&p).unwrap();
            read_image(&p).unwrap()
        };
        // Unmarked: no reference box, and the red parts keep their own grey value.
        let plain = read(&picture, "plain.png");
        assert_eq!(plain.red_box, None);
        assert!((plain.image.get(75, 60) - red_grey).abs() < 1e-3);
        assert!((plain.image.get(line_pixel.0, line_pixel.1) - red_grey).abs() < 1e-3);
        // Marked: the box is the mark's, and only the mark is painted out.
        let b = BBox::new(20.0, 24.0, 50.0, 44.0);
        let mut marked = picture.clone();
        draw_red_box(&mut marked, &b);
        let read_marked = read(&marked, "marked.png");
        assert_eq!(read_marked.red_box, Some(b));
        assert!((read_marked.image.get(75, 60) - red_grey).abs() < 1e-3);
        assert!((read_marked.image.get(line_pixel.0, line_pixel.1) - red_grey).abs() < 1e-3);
        // The mark's pixels take the picture's grey around them again.
        assert!((read_marked.image.get(19, 30) - plain.image.get(19, 30)).abs() < 0.02, "the mark is painted out");
    }

    #[test]
    fn a_mark_drawn_against_red_content_is_still_found() {
        // A red lesion filling the lower left of the box, touching the mark from inside.
        let mut rgb = image::RgbImage::from_pixel(80, 80, image::Rgb([150, 140, 110]));
        let b = BBox::new(20.0, 20.0, 60.0, 50.0);
        for (x, y, p) in rgb.enumerate_pixels_mut() {
            if (20..30).contains(&x) && (40..50).contains(&y) {
                *p = image::Rgb([230, 30, 20]);
            }
        }
        draw_red_box(&mut rgb, &b);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.png");
        image::DynamicImage::ImageRgb8(rgb).save(&p).unwrap();
        let read = read_image(&p).unwrap();
        assert_eq!(read.red_box, Some(b));
        // The lesion is not painted out.
        let red_grey = (0.299 * 230.0 + 0.587 * 30.0 + 0.114 * 20.0) / 255.0;
        assert!((read.image.get(25, 45) - red_grey).abs() < 1e-3);
    }

    #[test]
    fn red_box_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let g = GrayImage::from_fn(64, 64, |x, y| ((x + y) % 7) as f32 / 7.0);
        let mut rgb = image::DynamicImage::ImageLuma8(gray_png(&g)).to_rgb8();
        let b = BBox::new(10.0, 12.0, 40.0, 30.0);
        draw_red_box(&mut rgb, &b);
        let p = dir.path().join("x.png");
        image::DynamicImage::ImageRgb8(rgb).save(&p).unwrap();
        let read = read_image(&p).unwrap();
        assert_eq!(read.red_box, Some(b));
        // Marks are painted out: no pixel is far from its neighbours' range.
        let (lo, hi) = read.image.min_max();
        assert!(lo >= 0.0 && hi <= 1.0);
        // A box against the image's edge or in its corner, its marks there drawn partly or wholly
        // outside the image.
        for b in [
            BBox::new(0.0, 0.0, 30.0, 20.0),
            BBox::new(20.0, 30.0, 64.0, 50.0),
            BBox::new(5.0, 40.0, 25.0, 64.0),
            BBox::new(1.0, 10.0, 30.0, 40.0),
            BBox::new(2.0, 10.0, 30.0, 40.0),
            BBox::new(30.0, 10.0, 62.0, 40.0),
            BBox::new(30.0, 10.0, 63.0, 40.0),
            BBox::new(1.0, 1.0, 63.0, 63.0),
        ] {
            let mut rgb = image::DynamicImage::ImageLuma8(gray_png(&g)).to_rgb8();
            draw_red_box(&mut rgb, &b);
            image::DynamicImage::ImageRgb8(rgb).save(&p).unwrap();
            assert_eq!(read_image(&p).unwrap().red_box, Some(b));
        }
    }
}
