//! Following a box through time: the frames to follow (one series' frames, or one slice per
//! timepoint at the reference slice's position) and the box followed through them, forwards and
//! backwards from the frame it was drawn on. `tandem track` and the viewer's "Track" share this.

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
