//! Where the grid's panes lie relative to its reference pane: slices in space (mapped through a 3D rigid registration across frames of reference), else positions along the reference's normal, else nothing (by index).

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::grounding::series::{Matching, SliceSource, match_slices, normal as slice_normal};
use crate::registration::rigid3d::{self, Pyramid, Rigid, SeriesGeometry};
use crate::study::{GrayImage, Series};

type V3 = [f64; 3];

fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// A pane's slices as planes in space.
#[derive(Clone, Debug)]
pub struct Space {
    /// Each slice's centre (mm, in the series' own frame of reference).
    pub centres: Vec<V3>,
    /// The slices' unit normal.
    pub normal: V3,
    /// The series' patient point → the reference's; `None` within the reference's frame.
    pub to_reference: Option<Rigid>,
}

impl Space {
    fn of(g: &SeriesGeometry, to_reference: Option<Rigid>) -> Space {
        let (cx, cy) = ((g.width as f64 - 1.0) / 2.0, (g.height as f64 - 1.0) / 2.0);
        let centres = (0..g.origins.len()).map(|k| g.point(k, cx, cy)).collect();
        Space { centres, normal: g.normal(), to_reference }
    }

    /// Slice `k`'s centre in the reference's frame.
    pub fn centre_in_reference(&self, k: usize) -> Option<V3> {
        let c = *self.centres.get(k)?;
        Some(self.to_reference.map_or(c, |t| t.apply(c)))
    }

    fn own(&self, q_in_reference: V3) -> V3 {
        self.to_reference.map_or(q_in_reference, |t| t.apply_inverse(q_in_reference))
    }

    /// How far slice `k`'s plane lies from reference point `q` along this series' normal (mm;
    /// positive where the plane lies further along the normal).
    pub fn offset_mm(&self, k: usize, q_in_reference: V3) -> Option<f64> {
        Some(dot(sub(*self.centres.get(k)?, self.own(q_in_reference)), self.normal))
    }

    /// The slice whose plane lies nearest reference point `q` (the first of two equally near).
    pub fn nearest(&self, q_in_reference: V3) -> Option<usize> {
        let q = self.own(q_in_reference);
        let away = |c: &V3| dot(sub(*c, q), self.normal).abs();
        self.centres.iter().enumerate().min_by(|a, b| away(a.1).total_cmp(&away(b.1))).map(|(k, _)| k)
    }
}

/// How a pane was placed (see `GridPane`).
#[derive(Clone, Debug)]
pub struct Placement {
    /// Each slice's position along the reference's normal (mm, in the reference's frame).
    pub positions: Option<Vec<f64>>,
    pub space: Option<Space>,
    pub matching: Matching,
    /// Why it follows by index.
    pub why_index: Option<String>,
    /// Why a pane in another frame of reference was not registered in 3D.
    pub why_not_rigid: Option<String>,
}

impl Placement {
    /// One that takes no part in the sync.
    pub fn by_index(why: String) -> Placement {
        Placement { positions: None, space: None, matching: Matching::Index, why_index: Some(why), why_not_rigid: None }
    }
}

/// Where a series' slices lie, when it says (orientation, pixel spacing, every slice's Image
/// Position, slices of one size): what a 3D registration and following a point need.
pub fn geometry(series: &Series) -> Option<SeriesGeometry> {
    let first = series.frames.first()?;
    if series.frames.iter().any(|f| (f.width, f.height) != (first.width, first.height)) {
        return None;
    }
    let o = series.orientation()?;
    let ps = series.pixel_spacing().filter(|s| s.iter().all(|v| v.is_finite() && *v > 0.0))?;
    let unit = |v: V3| {
        let len = dot(v, v).sqrt();
        (len > 1e-6).then(|| v.map(|x| x / len))
    };
    let (row_dir, col_dir) = (unit([o[0], o[1], o[2]])?, unit([o[3], o[4], o[5]])?);
    // Not a plane (parallel directions): no normal to go by.
    unit([
        row_dir[1] * col_dir[2] - row_dir[2] * col_dir[1],
        row_dir[2] * col_dir[0] - row_dir[0] * col_dir[2],
        row_dir[0] * col_dir[1] - row_dir[1] * col_dir[0],
    ])?;
    let origins = series.frames.iter().map(|f| f.image_position).collect::<Option<Vec<_>>>()?;
    // Pixel Spacing is (between rows, between columns): x steps by the second.
    Some(SeriesGeometry { row_dir, col_dir, spacing: [ps[1], ps[0]], width: first.width, height: first.height, origins })
}

/// Whether both series name their frame of reference and the two differ.
fn frames_differ(a: &Series, b: &Series) -> bool {
    matches!((a.frame_of_reference(), b.frame_of_reference()), (Some(x), Some(y)) if x != y)
}

/// The rigid maps found so far, by frame of reference: the series of one frame share theirs (so
/// that two timepoints of one frame follow each other by Image Position, not through two
/// registrations that differ by their errors).
pub type Registered = Vec<(String, Result<Rigid, String>)>;

/// `series` placed against `reference`: within one frame of reference by Image Position; across
/// two through a 3D rigid registration of the volumes (`rigid3d`), else (the series lack
/// geometry, or the registration refuses) by the shift along the normal `match_slices` finds by
/// comparing slices; by index where neither is possible. `report` hears the registration's steps.
pub fn place(reference: &Series, series: &Series, registered: &mut Registered, report: &(dyn Fn(String) + Sync)) -> Placement {
    let (gr, gs) = (geometry(reference), geometry(series));
    let mut why_not_rigid = None;
    if frames_differ(reference, series) {
        let frame = series.frame_of_reference().unwrap_or_default().to_string();
        match (&gr, &gs) {
            (Some(gr), Some(gs)) => match found(registered, &frame, || register(reference, gr, series, gs, report)) {
                Ok(t) => {
                    let space = Space::of(gs, Some(t));
                    let n = gr.normal();
                    let positions = (0..space.centres.len()).filter_map(|k| space.centre_in_reference(k)).map(|c| dot(c, n)).collect();
                    return Placement {
                        positions: Some(positions),
                        space: Some(space),
                        matching: Matching::Rigid,
                        why_index: None,
                        why_not_rigid: None,
                    };
                }
                Err(e) => why_not_rigid = Some(format!("3D registration refused: {e}")),
            },
            _ => why_not_rigid = Some("no 3D registration: the series lack orientation, positions or pixel spacing".into()),
        }
    }
    let mut placed = by_shift(reference, series);
    placed.why_not_rigid = why_not_rigid;
    // Within one frame, slices that are placed by position are placed in space too, so that a
    // pane registered in 3D follows them (and they it) by point.
    if placed.matching == Matching::Position && gr.is_some() {
        placed.space = gs.map(|g| Space::of(&g, None));
    }
    placed
}

/// The map of `frame` found before, else `register`'s answer, kept.
fn found(registered: &mut Registered, frame: &str, register: impl FnOnce() -> Result<Rigid, String>) -> Result<Rigid, String> {
    if let Some((_, r)) = registered.iter().find(|(f, _)| f == frame) {
        return r.clone();
    }
    let r = register();
    registered.push((frame.to_string(), r.clone()));
    r
}

/// The rigid map of `series`' patient points onto `reference`'s.
fn register(
    reference: &Series,
    gr: &SeriesGeometry,
    series: &Series,
    gs: &SeriesGeometry,
    report: &(dyn Fn(String) + Sync),
) -> Result<Rigid, String> {
    let voxel = rigid3d::voxel_mm(gr, gs);
    let total = reference.frames.len() + series.frames.len();
    let done = AtomicUsize::new(0);
    // Only the registration grid's size is kept of each slice.
    let small = |s: &Series, g: &SeriesGeometry| {
        let (nx, ny) = rigid3d::grid_size(g, voxel);
        (0..s.frames.len())
            .into_par_iter()
            .map(|i| {
                let img = s.gray(i).map_err(|e| format!("slice {} cannot be read: {e}", i + 1))?;
                let k = done.fetch_add(1, Ordering::Relaxed) + 1;
                if k.is_multiple_of(8) || k == total {
                    report(format!("reading {k}/{total} slices for the 3D registration"));
                }
                Ok(img.resize(nx, ny))
            })
            .collect::<Result<Vec<GrayImage>, String>>()
    };
    let fixed = Pyramid::build("reference", gr, &small(reference, gr)?, voxel).map_err(|e| e.to_string())?;
    let moving = Pyramid::build("other", gs, &small(series, gs)?, voxel).map_err(|e| e.to_string())?;
    report("searching the 3D rigid transform".into());
    rigid3d::register(&fixed, &moving).map(|r| r.transform).map_err(|e| e.to_string())
}

/// `series`' slice positions along `reference`'s normal, in `reference`'s frame, as
/// `match_slices` pairs them: as they are within one frame of reference, shifted by comparing
/// slices across two. By index (with the reason) where there are no positions, another plane,
/// no overlap.
fn by_shift(reference: &Series, series: &Series) -> Placement {
    let m = match match_slices(series, reference) {
        Ok(m) => m,
        Err(e) => return Placement::by_index(e.to_string()),
    };
    if m.matching == Matching::Index {
        return Placement::by_index("the slices carry no positions".into());
    }
    // `match_slices` counts a flipped normal's positions the other way and puts the prior
    // (`series`) at current + shift.
    let sign = match (slice_normal(series), slice_normal(reference)) {
        (Some(a), Some(b)) if dot(a, b) < 0.0 => -1.0,
        _ => 1.0,
    };
    let shift = m.shift_mm.unwrap_or(0.0);
    let positions: Option<Vec<f64>> = series.frames.iter().map(|f| f.slice_position.map(|z| sign * z - shift)).collect();
    match positions {
        Some(p) => Placement { positions: Some(p), space: None, matching: m.matching, why_index: None, why_not_rigid: None },
        None => Placement::by_index("the slices carry no positions".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axial(z0: f64, n: usize) -> SeriesGeometry {
        SeriesGeometry {
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            spacing: [0.5, 0.5],
            width: 101,
            height: 81,
            origins: (0..n).map(|k| [-25.0, -20.0, z0 + 2.0 * k as f64]).collect(),
        }
    }

    #[test]
    fn a_point_maps_back_through_the_inverse_onto_the_slice_through_it() {
        let t = Rigid { angles_deg: [7.0, -4.0, 2.0], translation_mm: [3.0, -2.0, 40.0], centre_mm: [5.0, 1.0, 10.0] };
        let p = [3.0, -7.0, 21.0];
        let back = t.apply_inverse(t.apply(p));
        assert!(dot(sub(back, p), sub(back, p)).sqrt() < 1e-9, "{back:?}");
        // The other series' slice 6 (z = 12) seen from the reference: the reference point of its
        // centre falls on it, 0 mm off; one a slice gap further along its normal, 2 mm off slice 6.
        let space = Space::of(&axial(0.0, 20), Some(t));
        assert_eq!(space.centres[6], [0.0, 0.0, 12.0]);
        let q = space.centre_in_reference(6).unwrap();
        assert_eq!(space.nearest(q), Some(6));
        assert!(space.offset_mm(6, q).unwrap().abs() < 1e-9);
        let further = t.apply([10.0, -5.0, 14.0]);
        assert_eq!(space.nearest(further), Some(7));
        assert!((space.offset_mm(6, further).unwrap() + 2.0).abs() < 1e-9);
        // Halfway between two slices: the first.
        assert_eq!(Space::of(&axial(0.0, 20), None).nearest([0.0, 0.0, 13.0]), Some(6));
        // Beyond the last slice: the last.
        assert_eq!(space.nearest(t.apply([0.0, 0.0, 90.0])), Some(19));
    }
}
