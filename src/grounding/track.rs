//! Following a box through time: the frames to follow (one series' frames, or one slice per
//! timepoint at the reference slice's position) and the box followed through them, forwards and
//! backwards from the frame it was drawn on, and the lesion outlined along it. `tandem track` and
//! the viewer's "Track" share this.

use crate::grounding::outline::Diameters;
use crate::grounding::series::{Matching, match_slices};
use crate::grounding::{BBox, Engine, Method};
use crate::study::{Frame, GrayImage, Series};

/// Which slice of each timepoint is followed: the reference slice `slice` on timepoint `at`, and on
/// every other timepoint the slice nearest it along the normal (the same slice number when the
/// slices carry no positions; slice 0 of a single-frame timepoint).
pub fn timepoint_slices(series: &[&Series], at: usize, slice: usize) -> Result<Vec<usize>, String> {
    let reference = series.get(at).ok_or_else(|| format!("timepoint {at} is past the last timepoint ({} given)", series.len()))?;
    let frame = reference
        .frames
        .get(slice)
        .ok_or_else(|| format!("slice {slice} is past the last slice of timepoint {at} ({} slices)", reference.frames.len()))?;
    // The reference slice as a one-slice series, paired with each timepoint's slices.
    let probe =
        Series { id: reference.id.clone(), frames: vec![frame.clone()], meta: reference.meta.clone(), source: reference.source.clone() };
    let mut out = Vec::new();
    for (k, s) in series.iter().enumerate() {
        let chosen = if k == at {
            slice
        } else if s.frames.len() <= 1 {
            0
        } else {
            let m = match_slices(s, &probe).map_err(|e| format!("timepoint {k}: {e}"))?;
            if m.matching == Matching::Index {
                slice.min(s.frames.len() - 1)
            } else {
                m.pairs.first().map(|p| p.prior).ok_or_else(|| format!("timepoint {k} does not cover the reference slice"))?
            }
        };
        out.push(chosen);
    }
    Ok(out)
}

/// The frames of a sequence must share one grid: the first pair that does not, as a message.
pub fn check_one_grid(frames: &[&Frame]) -> Result<(), (usize, String)> {
    let Some(first) = frames.first() else { return Ok(()) };
    match frames.iter().position(|f| (f.width, f.height) != (first.width, first.height)) {
        None => Ok(()),
        Some(k) => Err((
            k,
            format!(
                "the frames differ in size ({}×{} and {}×{}); tracking needs one grid",
                first.width, first.height, frames[k].width, frames[k].height
            ),
        )),
    }
}

/// Follows `b` from frame `at` forwards to the last frame and backwards to the first: the box and
/// its step's score in every frame (the frame it was drawn on scores 1).
pub fn follow(engine: &Engine, frames: &[GrayImage], at: usize, b: BBox, method: Method) -> Result<Vec<(BBox, f32)>, String> {
    if at >= frames.len() {
        return Err(format!("frame {at} is past the last frame ({} frames)", frames.len()));
    }
    let lost = |dir: &str| format!("the box was lost tracking {dir} from frame {at}");
    let forward = engine.track_path(&frames[at..], b, method).ok_or_else(|| lost("forwards"))?;
    let backward_frames: Vec<GrayImage> = frames[..=at].iter().rev().cloned().collect();
    let backward = engine.track_path(&backward_frames, b, method).ok_or_else(|| lost("backwards"))?;
    let mut path: Vec<(BBox, f32)> = backward.into_iter().rev().collect();
    path.pop(); // frame `at` again, as the forward path starts with it
    path.extend(forward);
    Ok(path)
}

/// The lesion followed along `path` (boxes on `frames`' common grid), outlined in every frame:
/// each outline's box mapped back to its frame's own pixels through `grids`, with its diameters
/// in mm of the grid's `spacing` (else grid pixels); `None` unless it stands out in every frame.
pub fn outlined(frames: &[GrayImage], path: &[(BBox, f32)], grids: &[OnGrid], spacing: Option<[f64; 2]>) -> Option<Vec<(BBox, Diameters)>> {
    let boxes: Vec<BBox> = path.iter().map(|p| p.0).collect();
    let outlines = crate::grounding::outline::along_track(frames, &boxes)?;
    Some(outlines.iter().zip(grids).map(|(o, g)| (g.from_reference(o.bbox), o.diameters(spacing))).collect())
}

/// Where a frame's pixels lie on another frame's pixel grid: point (x, y) of the frame (pixel-edge
/// coordinates) is (x·scale + offset) on the other's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OnGrid {
    pub scale: [f64; 2],
    pub offset: [f64; 2],
}

impl OnGrid {
    pub const IDENTITY: OnGrid = OnGrid { scale: [1.0, 1.0], offset: [0.0, 0.0] };

    /// A box of the frame on the other's grid.
    pub fn to_reference(&self, b: BBox) -> BBox {
        let (s, o) = (self.scale, self.offset);
        BBox::new(
            (b.x1 as f64 * s[0] + o[0]) as f32,
            (b.y1 as f64 * s[1] + o[1]) as f32,
            (b.x2 as f64 * s[0] + o[0]) as f32,
            (b.y2 as f64 * s[1] + o[1]) as f32,
        )
    }

    /// A box of the other's grid on the frame.
    pub fn from_reference(&self, b: BBox) -> BBox {
        let (s, o) = (self.scale, self.offset);
        BBox::new(
            ((b.x1 as f64 - o[0]) / s[0]) as f32,
            ((b.y1 as f64 - o[1]) / s[1]) as f32,
            ((b.x2 as f64 - o[0]) / s[0]) as f32,
            ((b.y2 as f64 - o[1]) / s[1]) as f32,
        )
    }
}

/// How `frame` lies on `reference`'s pixel grid. Frames of one size and pixel spacing share the
/// grid as they are (as tracking always took them). Otherwise pixels are scaled by their spacing
/// (by the matrix sizes, one field of view, when either has none) and placed by Image Position
/// within one frame of reference and orientation, else with the fields of view centred.
pub fn onto(reference: &Frame, frame: &Frame) -> OnGrid {
    let (rs, fs) = (reference.meta.pixel_spacing_mm, frame.meta.pixel_spacing_mm);
    if (reference.width, reference.height) == (frame.width, frame.height) && rs == fs {
        return OnGrid::IDENTITY;
    }
    // Pixel spacing is (row, column) spacing: y, then x.
    let scale = match (rs, fs) {
        (Some(r), Some(f)) if r[0] > 0.0 && r[1] > 0.0 && f[0] > 0.0 && f[1] > 0.0 => [f[1] / r[1], f[0] / r[0]],
        _ => [reference.width as f64 / frame.width.max(1) as f64, reference.height as f64 / frame.height.max(1) as f64],
    };
    let same_frame =
        reference.meta.frame_of_reference_uid.is_some() && reference.meta.frame_of_reference_uid == frame.meta.frame_of_reference_uid;
    if let (true, Some(r), Some(f), Some(ro), Some(fo), Some(rsp)) =
        (same_frame, reference.image_position, frame.image_position, reference.meta.image_orientation, frame.meta.image_orientation, rs)
        && ro.iter().zip(&fo).all(|(a, b)| (a - b).abs() < 1e-3)
    {
        // Image Position is the centre of the first pixel: (0.5, 0.5) in pixel-edge coordinates.
        let d = [f[0] - r[0], f[1] - r[1], f[2] - r[2]];
        let along_row = (d[0] * ro[0] + d[1] * ro[1] + d[2] * ro[2]) / rsp[1];
        let along_column = (d[0] * ro[3] + d[1] * ro[4] + d[2] * ro[5]) / rsp[0];
        return OnGrid { scale, offset: [0.5 - 0.5 * scale[0] + along_row, 0.5 - 0.5 * scale[1] + along_column] };
    }
    let centre = |rw: usize, fw: usize, s: f64| rw as f64 / 2.0 - fw as f64 / 2.0 * s;
    OnGrid { scale, offset: [centre(reference.width, frame.width, scale[0]), centre(reference.height, frame.height, scale[1])] }
}

/// `img` resampled onto a `width` × `height` grid it lies on as `grid` says (bilinear; outside it,
/// its lowest value).
pub fn resample(img: &GrayImage, grid: &OnGrid, width: usize, height: usize) -> GrayImage {
    if *grid == OnGrid::IDENTITY && (img.width, img.height) == (width, height) {
        return img.clone();
    }
    let fill = img.data.iter().copied().fold(f32::INFINITY, f32::min);
    let fill = if fill.is_finite() { fill } else { 0.0 };
    GrayImage::from_fn(width, height, |x, y| {
        // The centre of the target pixel, on the source's grid, as a position between pixel centres.
        let sx = ((x as f64 + 0.5 - grid.offset[0]) / grid.scale[0]) - 0.5;
        let sy = ((y as f64 + 0.5 - grid.offset[1]) / grid.scale[1]) - 0.5;
        if sx < -0.5 || sy < -0.5 || sx > img.width as f64 - 0.5 || sy > img.height as f64 - 0.5 {
            return fill;
        }
        let (x0, y0) = (sx.floor().max(0.0) as usize, sy.floor().max(0.0) as usize);
        let (x1, y1) = ((x0 + 1).min(img.width - 1), (y0 + 1).min(img.height - 1));
        let (tx, ty) = ((sx - x0 as f64).clamp(0.0, 1.0) as f32, (sy - y0 as f64).clamp(0.0, 1.0) as f32);
        let top = img.get(x0, y0) * (1.0 - tx) + img.get(x1, y0) * tx;
        let bottom = img.get(x0, y1) * (1.0 - tx) + img.get(x1, y1) * tx;
        top * (1.0 - ty) + bottom * ty
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn frame(w: u32, spacing: Option<[f64; 2]>, position: Option<[f64; 3]>, frame_of_reference: &str) -> Frame {
        let img = image::GrayImage::from_fn(w, w, |x, y| image::Luma([(x + 4 * y) as u8]));
        let meta = crate::study::Meta {
            pixel_spacing_mm: spacing,
            frame_of_reference_uid: Some(frame_of_reference.into()),
            image_orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            ..Default::default()
        };
        let mut f = crate::study::raster::frame_from_image(image::DynamicImage::ImageLuma8(img), Arc::new(meta));
        f.image_position = position;
        f
    }

    #[test]
    fn a_coarser_frame_lies_on_the_reference_grid_by_pixel_spacing_and_position() {
        // 8 × 8 pixels of 1 mm, and 4 × 4 of 2 mm over the same field (first pixel centres 0.5 and 1 mm in).
        let reference = frame(8, Some([1.0, 1.0]), Some([0.5, 0.5, 0.0]), "1.2.3");
        let coarse = frame(4, Some([2.0, 2.0]), Some([1.0, 1.0, 0.0]), "1.2.3");
        let g = onto(&reference, &coarse);
        assert_eq!(g, OnGrid { scale: [2.0, 2.0], offset: [0.0, 0.0] });
        let b = BBox::new(1.0, 1.0, 2.0, 3.0);
        assert_eq!(g.to_reference(b), BBox::new(2.0, 2.0, 4.0, 6.0));
        assert_eq!(g.from_reference(g.to_reference(b)), b);
        // Moved 2 mm to the right in the same frame of reference: 2 reference pixels.
        let moved = frame(4, Some([2.0, 2.0]), Some([3.0, 1.0, 0.0]), "1.2.3");
        assert_eq!(onto(&reference, &moved).offset, [2.0, 0.0]);
        // Another frame of reference: the fields of view centred, whatever the positions say.
        let other = frame(4, Some([2.0, 2.0]), Some([300.0, 1.0, 0.0]), "9.9");
        assert_eq!(onto(&reference, &other), OnGrid { scale: [2.0, 2.0], offset: [0.0, 0.0] });
        // No spacing: by matrix size; one grid: as they are.
        assert_eq!(onto(&reference, &frame(4, None, None, "1.2.3")).scale, [2.0, 2.0]);
        assert_eq!(onto(&reference, &frame(8, Some([1.0, 1.0]), Some([40.0, 0.0, 0.0]), "1.2.3")), OnGrid::IDENTITY);
    }

    #[test]
    fn resampling_interpolates_between_pixel_centres_and_fills_outside() {
        let coarse = frame(4, Some([2.0, 2.0]), Some([1.0, 1.0, 0.0]), "1.2.3").to_gray();
        let on = resample(&coarse, &OnGrid { scale: [2.0, 2.0], offset: [0.0, 0.0] }, 8, 8);
        assert_eq!((on.width, on.height), (8, 8));
        // The picture is linear (x + 4y at pixel centres), so bilinear sampling is exact inside:
        // reference pixel (3, 5) is at (1.25, 2.25) between the coarse pixels' centres.
        assert!((on.get(3, 5) - coarse.get(0, 0) - 1.25 - 4.0 * 2.25).abs() < 1e-4, "{}", on.get(3, 5));
        let shifted = resample(&coarse, &OnGrid { scale: [2.0, 2.0], offset: [4.0, 0.0] }, 8, 8);
        assert_eq!(shifted.get(0, 3), coarse.data.iter().copied().fold(f32::INFINITY, f32::min));
        assert_eq!(resample(&coarse, &OnGrid::IDENTITY, 4, 4), coarse);
    }
}
