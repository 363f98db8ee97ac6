//! Whole-series change finding: slices of two series matched by position (by a 3D rigid registration when their frames of reference differ), difference grounding on every matched pair, and one change's boxes on neighbouring slices merged into one finding with its slice range.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::grounding::infer::NetRunner;
use crate::grounding::{BBox, DiffOutput, Engine, Method};
use crate::registration::rigid3d::{self, Pyramid, Reslicer, Rigid, RigidError, SeriesGeometry};
use crate::study::slices::SliceFiles;
use crate::study::{GrayImage, Series, StudyError};

/// How the slices of the two series were paired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Matching {
    /// Nearest slice by Image Position along the slice normal (one frame of reference).
    Position,
    /// Nearest slice by position after a shift along the normal found by comparing slices
    /// (the frames of reference differ, so the positions are not comparable as they are).
    RegisteredPosition,
    /// By index, stretched over the shorter series: the slices carry no positions.
    Index,
    /// The frames of reference differ and the volumes were registered in 3D (rotation and
    /// translation): each current slice is compared with the prior resliced on its plane, and
    /// paired with the prior slice nearest its centre.
    Rigid,
}

/// A current slice and the prior slice it is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SlicePair {
    pub current: usize,
    pub prior: usize,
    /// How far apart the two slices lie along the normal (mm), when positions are known.
    pub distance_mm: Option<f64>,
}

/// The pairing of the current series' slices with the prior's.
#[derive(Clone, Debug, Serialize)]
pub struct SliceMatch {
    pub matching: Matching,
    pub pairs: Vec<SlicePair>,
    /// Current slices outside the prior's coverage: not compared.
    pub unmatched: Vec<usize>,
    /// Prior position = current position + this (mm), under `RegisteredPosition`; under `Rigid`,
    /// the registered transform's shift along the normal at the current volume's centre.
    pub shift_mm: Option<f64>,
    /// The 3D registration, under `Rigid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rigid: Option<RigidMatch>,
}

/// The 3D rigid registration of the current volume onto the prior's, as reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RigidMatch {
    /// Current patient point → prior patient point: rotations (degrees) about the patient's x,
    /// then y, then z axis through `centre_mm`, then `translation_mm`.
    #[serde(flatten)]
    pub transform: Rigid,
    /// Normalized cross-correlation of the overlapping voxels at the transform.
    pub ncc: f64,
    /// Share of the current volume lying within the prior.
    pub overlap: f64,
    /// Voxel size of the registration grid (mm).
    pub voxel_mm: f64,
    /// Decoding both series for the registration (ms): the prior once for the whole run.
    pub decode_millis: f64,
    /// Building the grids and searching the transform (ms).
    pub millis: f64,
}

/// Why two series cannot be compared slice by slice.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SeriesError {
    #[error("the {0} series has no slices")]
    Empty(&'static str),
    #[error("the series are cut in different planes (normals {0:.2} apart); whole-series comparison needs one orientation")]
    Orientation(f64),
    #[error("no current slice lies within the prior series' coverage")]
    NoOverlap,
    #[error("slice {1} of the {0} series cannot be read: {2}")]
    Unreadable(&'static str, usize, String),
    #[error("{0}")]
    Rigid(#[from] RigidError),
}

/// Where whole-series change finding reads its slices from: a series in memory, or one whose
/// slices are decoded only as they are needed (`SliceFiles`), so that memory holds a few slices
/// rather than two whole series.
pub trait SliceSource: Sync {
    fn slice_count(&self) -> usize;
    /// Position of slice `i` along the slice normal (mm), when known.
    fn slice_position(&self, i: usize) -> Option<f64>;
    /// The first slice's Image Orientation.
    fn orientation(&self) -> Option<[f64; 6]>;
    fn frame_of_reference(&self) -> Option<&str>;
    /// Image Position (Patient) of slice `i`: its first pixel's centre (mm), when known.
    fn slice_origin(&self, i: usize) -> Option<[f64; 3]>;
    /// Row spacing, column spacing (mm) of the first slice.
    fn pixel_spacing(&self) -> Option<[f64; 2]>;
    /// Slice `i` as `Frame::to_gray` gives it.
    fn gray(&self, i: usize) -> Result<GrayImage, StudyError>;
}

impl SliceSource for Series {
    fn slice_count(&self) -> usize {
        self.frames.len()
    }

    fn slice_position(&self, i: usize) -> Option<f64> {
        self.frames.get(i)?.slice_position
    }

    fn orientation(&self) -> Option<[f64; 6]> {
        self.frames.first()?.meta.image_orientation
    }

    fn frame_of_reference(&self) -> Option<&str> {
        self.meta.frame_of_reference_uid.as_deref()
    }

    fn slice_origin(&self, i: usize) -> Option<[f64; 3]> {
        self.frames.get(i)?.image_position
    }

    fn pixel_spacing(&self) -> Option<[f64; 2]> {
        self.frames.first()?.meta.pixel_spacing_mm
    }

    fn gray(&self, i: usize) -> Result<GrayImage, StudyError> {
        self.frames.get(i).ok_or_else(|| StudyError::Empty(format!("the series has no slice {i}")))?.try_gray()
    }
}

impl SliceSource for SliceFiles {
    fn slice_count(&self) -> usize {
        self.slices.len()
    }

    fn slice_position(&self, i: usize) -> Option<f64> {
        self.slices.get(i)?.slice_position
    }

    fn orientation(&self) -> Option<[f64; 6]> {
        self.slices.first()?.meta.image_orientation
    }

    fn frame_of_reference(&self) -> Option<&str> {
        self.meta.frame_of_reference_uid.as_deref()
    }

    fn slice_origin(&self, i: usize) -> Option<[f64; 3]> {
        self.slices.get(i)?.image_position
    }

    fn pixel_spacing(&self) -> Option<[f64; 2]> {
        self.slices.first()?.meta.pixel_spacing_mm
    }

    fn gray(&self, i: usize) -> Result<GrayImage, StudyError> {
        self.frame(i)?.try_gray()
    }
}

/// The unit normal of a series' slices, from its first frame's Image Orientation.
pub fn normal(series: &dyn SliceSource) -> Option<[f64; 3]> {
    let o = series.orientation()?;
    let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
    let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    (len > 1e-6).then(|| [n[0] / len, n[1] / len, n[2] / len])
}

fn positions(series: &dyn SliceSource) -> Option<Vec<f64>> {
    (0..series.slice_count()).map(|i| series.slice_position(i)).collect()
}

/// Median gap between consecutive positions (None for a single slice).
fn spacing(p: &[f64]) -> Option<f64> {
    let mut sorted = p.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = sorted.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 1e-6).collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_by(f64::total_cmp);
    Some(gaps[gaps.len() / 2])
}

/// Pairs each current slice with the nearest prior slice along the normal, shifting current
/// positions by `shift`; slices farther than a slice gap from any prior slice stay unmatched.
fn nearest(prior: &[f64], current: &[f64], shift: f64) -> (Vec<SlicePair>, Vec<usize>) {
    // A single slice on both sides has no gap to go by: the two are compared whatever the gap.
    let reach = match (spacing(prior), spacing(current)) {
        (Some(a), Some(b)) => a.max(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => f64::INFINITY,
    };
    let (mut pairs, mut unmatched) = (Vec::new(), Vec::new());
    for (c, &z) in current.iter().enumerate() {
        let z = z + shift;
        let best = prior.iter().enumerate().min_by(|a, b| (a.1 - z).abs().total_cmp(&(b.1 - z).abs()));
        match best {
            Some((p, &pz)) if (pz - z).abs() <= reach * 0.75 + 1e-3 => {
                pairs.push(SlicePair { current: c, prior: p, distance_mm: Some((pz - z).abs()) })
            }
            _ => unmatched.push(c),
        }
    }
    (pairs, unmatched)
}

/// A small, intensity-standardized copy of a slice, to compare slices cheaply.
fn thumbnail(img: &GrayImage) -> GrayImage {
    img.resize(32, 32).standardized()
}

fn mean_product(a: &GrayImage, b: &GrayImage) -> f64 {
    a.data.iter().zip(&b.data).map(|(x, y)| (*x as f64) * (*y as f64)).sum::<f64>() / a.data.len().max(1) as f64
}

/// The shift along the normal (prior = current + shift) under which the paired slices look most
/// alike (mean correlation of thumbnails), tried in steps of half the finer slice gap over every
/// shift that keeps at least half of the shorter series overlapping.
fn register_shift(prior: &dyn SliceSource, current: &dyn SliceSource, pp: &[f64], cp: &[f64]) -> Result<f64, SeriesError> {
    // Only the thumbnails are kept: a streamed series is decoded once here, slice by slice.
    let thumbnails = |series: &dyn SliceSource, which: &'static str| {
        (0..series.slice_count())
            .into_par_iter()
            .map(|i| series.gray(i).map(|g| thumbnail(&g)).map_err(|e| SeriesError::Unreadable(which, i, e.to_string())))
            .collect::<Result<Vec<GrayImage>, SeriesError>>()
    };
    let (tp, tc) = (thumbnails(prior, "prior")?, thumbnails(current, "current")?);
    let (lo_p, hi_p) = (pp.iter().copied().fold(f64::INFINITY, f64::min), pp.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let (lo_c, hi_c) = (cp.iter().copied().fold(f64::INFINITY, f64::min), cp.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let step = match (spacing(pp), spacing(cp)) {
        (Some(a), Some(b)) => a.min(b) / 2.0,
        (Some(a), None) | (None, Some(a)) => a / 2.0,
        (None, None) => return Ok((lo_p + hi_p) / 2.0 - (lo_c + hi_c) / 2.0),
    };
    let need = (pp.len().min(cp.len()) / 2).max(1);
    let (from, to) = (lo_p - hi_c, hi_p - lo_c);
    let mut best: Option<(f64, f64)> = None;
    let mut shift = from;
    while shift <= to + 1e-9 {
        let (pairs, _) = nearest(pp, cp, shift);
        if pairs.len() >= need {
            let score = pairs.iter().map(|p| mean_product(&tp[p.prior], &tc[p.current])).sum::<f64>() / pairs.len() as f64;
            if best.is_none_or(|(_, s)| score > s + 1e-9) {
                best = Some((shift, score));
            }
        }
        shift += step;
    }
    Ok(best.map(|(s, _)| s).unwrap_or(0.0))
}

/// Pairs the slices of `current` with those of `prior`: by position along the slice normal when
/// every slice of both has one (shifted along the normal by comparing slices when the frames of
/// reference differ; a rotation between them is not estimated), else by index.
pub fn match_slices(prior: &Series, current: &Series) -> Result<SliceMatch, SeriesError> {
    match_slices_in(prior, current)
}

/// `match_slices` on any slice source.
pub fn match_slices_in(prior: &dyn SliceSource, current: &dyn SliceSource) -> Result<SliceMatch, SeriesError> {
    if prior.slice_count() == 0 {
        return Err(SeriesError::Empty("prior"));
    }
    if current.slice_count() == 0 {
        return Err(SeriesError::Empty("current"));
    }
    let geometry = match (positions(prior), positions(current), normal(prior), normal(current)) {
        (Some(p), Some(c), Some(np), Some(nc)) => Some((p, c, np[0] * nc[0] + np[1] * nc[1] + np[2] * nc[2])),
        _ => None,
    };
    let Some((mut pp, cp, cos)) = geometry else {
        // Index order, the shorter series stretched over the longer.
        let (np, nc) = (prior.slice_count(), current.slice_count());
        let pairs = (0..nc)
            .map(|c| {
                let p = if nc > 1 { ((c as f64) * (np - 1) as f64 / (nc - 1) as f64).round() as usize } else { 0 };
                SlicePair { current: c, prior: p.min(np - 1), distance_mm: None }
            })
            .collect();
        return Ok(SliceMatch { matching: Matching::Index, pairs, unmatched: Vec::new(), shift_mm: None, rigid: None });
    };
    if cos.abs() < 0.95 {
        return Err(SeriesError::Orientation(cos.abs().acos().to_degrees()));
    }
    if cos < 0.0 {
        // The same plane with its normal flipped: positions count the other way.
        pp.iter_mut().for_each(|z| *z = -*z);
    }
    let same_frame = match (prior.frame_of_reference(), current.frame_of_reference()) {
        (Some(a), Some(b)) => a == b,
        // Unknown on either side: the positions are taken as comparable.
        _ => true,
    };
    let (matching, shift) =
        if same_frame { (Matching::Position, 0.0) } else { (Matching::RegisteredPosition, register_shift(prior, current, &pp, &cp)?) };
    let (pairs, unmatched) = nearest(&pp, &cp, shift);
    if pairs.is_empty() {
        return Err(SeriesError::NoOverlap);
    }
    Ok(SliceMatch { matching, pairs, unmatched, shift_mm: (!same_frame).then_some(shift), rigid: None })
}

/// Whether both series name their frame of reference and the two differ.
fn frames_differ(prior: &dyn SliceSource, current: &dyn SliceSource) -> bool {
    matches!((prior.frame_of_reference(), current.frame_of_reference()), (Some(a), Some(b)) if a != b)
}

/// Where a series' slices lie, when its slices say (positions, orientation, spacing).
fn geometry_of(series: &dyn SliceSource, width: usize, height: usize) -> Option<SeriesGeometry> {
    let o = series.orientation()?;
    let ps = series.pixel_spacing().filter(|s| s.iter().all(|v| v.is_finite() && *v > 0.0))?;
    let n = normal(series)?;
    let unit = |v: [f64; 3]| {
        let len = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        (len > 1e-6).then(|| v.map(|x| x / len))
    };
    let origins = (0..series.slice_count())
        .map(|i| series.slice_origin(i).or_else(|| series.slice_position(i).map(|z| n.map(|c| c * z))))
        .collect::<Option<Vec<_>>>()?;
    // Pixel Spacing is (between rows, between columns): x steps by the second.
    Some(SeriesGeometry {
        row_dir: unit([o[0], o[1], o[2]])?,
        col_dir: unit([o[3], o[4], o[5]])?,
        spacing: [ps[1], ps[0]],
        width,
        height,
        origins,
    })
}

/// The prior held whole, the current's geometry and the transform between them: what each
/// pair needs to reslice the prior on its current slice's plane.
pub struct RigidPlan {
    pub reslicer: Reslicer,
    pub current: SeriesGeometry,
    pub transform: Rigid,
}

impl RigidPlan {
    /// `b` (current slice `slice`'s pixels) on prior slice `prior`, its size kept in mm.
    fn on_prior(&self, slice: usize, prior: usize, b: BBox) -> BBox {
        let (cx, cy) = ((b.x1 + b.x2) as f64 / 2.0, (b.y1 + b.y2) as f64 / 2.0);
        let (x, y) = self.reslicer.pixel_on(prior, self.transform.apply(self.current.point(slice, cx, cy)));
        let g = &self.reslicer.geometry;
        let (hw, hh) = (
            (b.x2 - b.x1) as f64 / 2.0 * self.current.spacing[0] / g.spacing[0],
            (b.y2 - b.y1) as f64 / 2.0 * self.current.spacing[1] / g.spacing[1],
        );
        BBox::new((x - hw) as f32, (y - hh) as f32, (x + hw) as f32, (y + hh) as f32)
    }
}

/// The share of a current slice's plane that must lie within the prior for the slice to be
/// compared: less, and most of the resliced prior would be the current itself.
const MIN_PLANE_INSIDE: f64 = 0.5;

/// Pairs the slices of two series whose frames of reference differ by registering their volumes
/// in 3D (`rigid3d`); the prior is decoded once and held for reslicing. `Ok(None)` when the
/// series do not say enough of their geometry (positions, orientation, pixel spacing, slices of
/// one size: every prior slice, the current slices the registration reads) or are too thin for
/// a volume: `match_slices_in` pairs them then.
pub fn match_rigid(prior: &dyn SliceSource, current: &dyn SliceSource) -> Result<Option<(SliceMatch, RigidPlan)>, SeriesError> {
    match_rigid_cancellable(prior, current, None)
}

/// `match_rigid`, given up with `RigidError::Cancelled` once `cancel` is set (checked before
/// each slice is decoded and between the search's steps).
pub fn match_rigid_cancellable(
    prior: &dyn SliceSource,
    current: &dyn SliceSource,
    cancel: Option<&AtomicBool>,
) -> Result<Option<(SliceMatch, RigidPlan)>, SeriesError> {
    let start = Instant::now();
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    if prior.slice_count() < 3 || current.slice_count() < 3 {
        return Ok(None);
    }
    let first = |s: &dyn SliceSource, which: &'static str| s.gray(0).map_err(|e| SeriesError::Unreadable(which, 0, e.to_string()));
    let (p0, c0) = (first(prior, "prior")?, first(current, "current")?);
    let (Some(gp), Some(gc)) = (geometry_of(prior, p0.width, p0.height), geometry_of(current, c0.width, c0.height)) else {
        return Ok(None);
    };
    drop((p0, c0));
    let voxel = rigid3d::voxel_mm(&gp, &gc);
    // The current is only needed small here, and only the slices its grids read (its slices
    // are decoded again as their pairs are grounded); the prior is kept whole, to be resliced.
    let decode = |s: &dyn SliceSource, which: &'static str, g: &SeriesGeometry, keep: bool| {
        let (nx, ny) = rigid3d::grid_size(g, voxel);
        let read = if keep { vec![true; s.slice_count()] } else { Pyramid::slices_read(g, voxel) };
        (0..s.slice_count())
            .into_par_iter()
            .map(|i| {
                if !read[i] {
                    return Ok(Some((GrayImage::new(nx, ny), None)));
                }
                if cancelled() {
                    return Err(SeriesError::Rigid(RigidError::Cancelled));
                }
                let img = s.gray(i).map_err(|e| SeriesError::Unreadable(which, i, e.to_string()))?;
                if (img.width, img.height) != (g.width, g.height) {
                    return Ok(None);
                }
                let small = img.resize(nx, ny);
                Ok(Some((small, keep.then_some(img))))
            })
            .collect::<Result<Option<Vec<_>>, SeriesError>>()
    };
    let Some(pd) = decode(prior, "prior", &gp, true)? else { return Ok(None) };
    let (p_small, p_full): (Vec<GrayImage>, Vec<Option<GrayImage>>) = pd.into_iter().unzip();
    let Some(cd) = decode(current, "current", &gc, false)? else { return Ok(None) };
    let c_small: Vec<GrayImage> = cd.into_iter().map(|(s, _)| s).collect();
    let decoded = Instant::now();
    let pyramids = Pyramid::build("prior", &gp, &p_small, voxel).and_then(|p| Ok((p, Pyramid::build("current", &gc, &c_small, voxel)?)));
    let (fixed, moving) = match pyramids {
        Ok(p) => p,
        Err(RigidError::Thin(..) | RigidError::Geometry(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    drop((p_small, c_small));
    let found = rigid3d::register_cancellable(&fixed, &moving, cancel)?;
    drop((fixed, moving));
    let reslicer = Reslicer::new(gp, p_full.into_iter().flatten().collect())?;
    let transform = found.transform;
    let (mut pairs, mut unmatched) = (Vec::new(), Vec::new());
    let (w, h) = (gc.width as f64, gc.height as f64);
    for k in 0..gc.origins.len() {
        let at = |x: f64, y: f64| reslicer.locate(transform.apply(gc.point(k, x, y)));
        let grid = 8;
        let inside =
            (0..grid * grid).filter(|i| at((i % grid) as f64 * (w - 1.0) / 7.0, (i / grid) as f64 * (h - 1.0) / 7.0).inside).count();
        let centre = at((w - 1.0) / 2.0, (h - 1.0) / 2.0);
        if inside as f64 >= MIN_PLANE_INSIDE * (grid * grid) as f64 {
            pairs.push(SlicePair { current: k, prior: centre.slice, distance_mm: Some((centre.distance_mm * 1000.0).round() / 1000.0) });
        } else {
            unmatched.push(k);
        }
    }
    if pairs.is_empty() {
        return Err(SeriesError::NoOverlap);
    }
    // The shift along the normal at the current's centre, signed as `match_slices` signs it.
    let (np, nc) = (reslicer.geometry.normal(), gc.normal());
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let sign = if dot(np, nc) < 0.0 { -1.0 } else { 1.0 };
    let c = transform.centre_mm;
    let shift = sign * dot(transform.apply(c), np) - dot(c, nc);
    let r2 = |v: f64| (v * 100.0).round() / 100.0;
    let reported = RigidMatch {
        transform: Rigid {
            angles_deg: transform.angles_deg.map(r2),
            translation_mm: transform.translation_mm.map(r2),
            centre_mm: transform.centre_mm.map(r2),
        },
        ncc: (found.ncc * 1e4).round() / 1e4,
        overlap: (found.overlap * 1e3).round() / 1e3,
        voxel_mm: r2(found.voxel_mm),
        decode_millis: (decoded - start).as_secs_f64() * 1e3,
        millis: decoded.elapsed().as_secs_f64() * 1e3,
    };
    let matched = SliceMatch { matching: Matching::Rigid, pairs, unmatched, shift_mm: Some(r2(shift)), rigid: Some(reported) };
    Ok(Some((matched, RigidPlan { reslicer, current: gc, transform })))
}

/// One change box on one current slice.
#[derive(Clone, Debug, Serialize)]
pub struct SliceBox {
    pub slice: usize,
    pub prior_slice: usize,
    /// In the current slice's pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The same place in the prior slice's pixels.
    pub reference_box: Option<[f32; 4]>,
    /// Calibrated probability, to 0.001 (f64 so that JSON shows it as such).
    pub score: f64,
}

/// One change through the series: its boxes on consecutive current slices.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesFinding {
    /// First and last current slice (inclusive).
    pub slices: [usize; 2],
    /// The slice of its best-scored box.
    pub peak_slice: usize,
    pub score: f64,
    /// The union of its boxes, in current pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub boxes: Vec<SliceBox>,
}

/// What whole-series change finding found.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesOutput {
    pub method: Method,
    #[serde(flatten)]
    pub matched: SliceMatch,
    pub findings: Vec<SeriesFinding>,
    /// Slice pairs compared (fewer than the pairs when cancelled).
    pub compared: usize,
    pub cancelled: bool,
    pub millis: f64,
}

/// Two boxes on neighbouring slices belong to one change when they overlap by at least this
/// share of the smaller: a lesion's outline moves little from slice to slice, while two changes
/// that merely touch should stay apart.
const MERGE_OVERLAP: f32 = 0.3;

fn round2(b: BBox) -> [f32; 4] {
    let r = |v: f32| (v * 100.0).round() / 100.0;
    [r(b.x1), r(b.y1), r(b.x2), r(b.y2)]
}

/// Groups boxes (sorted or not) into findings: boxes on adjacent slices that overlap are one
/// change; findings come out best score first.
pub fn merge_neighbours(mut boxes: Vec<SliceBox>) -> Vec<SeriesFinding> {
    boxes.sort_by(|a, b| a.slice.cmp(&b.slice).then(b.score.total_cmp(&a.score)));
    let n = boxes.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            if boxes[j].slice > boxes[i].slice + 1 {
                break;
            }
            if boxes[j].slice != boxes[i].slice + 1 {
                continue;
            }
            let (a, b) = (BBox::from_array(boxes[i].bbox), BBox::from_array(boxes[j].bbox));
            let smaller = a.area().min(b.area());
            if smaller > 0.0 && a.intersection(&b) >= MERGE_OVERLAP * smaller {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                parent[rj] = ri;
            }
        }
    }
    let mut groups: Vec<(usize, Vec<SliceBox>)> = Vec::new();
    for (i, b) in boxes.into_iter().enumerate() {
        let r = root(&mut parent, i);
        match groups.iter_mut().find(|g| g.0 == r) {
            Some(g) => g.1.push(b),
            None => groups.push((r, vec![b])),
        }
    }
    let mut findings: Vec<SeriesFinding> = groups
        .into_iter()
        .map(|(_, boxes)| {
            let first = boxes.iter().map(|b| b.slice).min().unwrap_or(0);
            let last = boxes.iter().map(|b| b.slice).max().unwrap_or(0);
            let peak = boxes.iter().max_by(|a, b| a.score.total_cmp(&b.score)).map(|b| (b.slice, b.score)).unwrap_or((first, 0.0));
            let union = boxes.iter().map(|b| BBox::from_array(b.bbox)).reduce(|a, b| a.union(&b)).unwrap_or_default();
            SeriesFinding { slices: [first, last], peak_slice: peak.0, score: peak.1, bbox: round2(union), boxes }
        })
        .collect();
    findings.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.slices.cmp(&b.slices)));
    findings
}

/// Where a whole-series run is, as its `progress` hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Registering the volumes in 3D (their frames of reference differ): decoding both and
    /// searching the transform, before any pair is grounded.
    Registering,
    /// (done, of) slice pairs grounded.
    Pairs(usize, usize),
}

/// Most slice pairs grounded at once: each worker thread grounds whole pairs (decode,
/// registration, network) on its own copy of the network, so that one pair's classical steps
/// overlap another's network and no pair waits for the shared network's lock.
const MAX_WORKERS: usize = 4;

/// Finds what changed from `prior` to `current` through the whole series: the slices are paired
/// (`match_slices`), every pair is grounded as `tandem ground diff` grounds one (boxes scoring
/// below `min_score` are dropped), and neighbouring boxes of one change merged. `progress`
/// hears each `Stage`; setting `cancel` stops the registration, or the grounding after the
/// pairs in hand.
pub fn find_changes(
    engine: &Engine,
    prior: &Series,
    current: &Series,
    method: Method,
    min_score: f32,
    progress: &mut dyn FnMut(Stage),
    cancel: Option<&AtomicBool>,
) -> Result<SeriesOutput, SeriesError> {
    find_changes_in(engine, prior, current, method, min_score, progress, cancel)
}

/// One pair read and grounded; its grey slices are dropped on return. Under a rigid plan the
/// prior is the held prior resliced on the current slice's plane, matched to it between its
/// slices (`Reslicer::reslice_matched`): a blend of two prior slices is not what a slice cut
/// at an angle between them shows.
fn ground_pair(
    engine: &Engine,
    runner: Option<&NetRunner>,
    (prior, current): (&dyn SliceSource, &dyn SliceSource),
    plan: Option<&RigidPlan>,
    pair: &SlicePair,
    method: Method,
) -> Result<DiffOutput, SeriesError> {
    let c = current.gray(pair.current).map_err(|e| SeriesError::Unreadable("current", pair.current, e.to_string()))?;
    let p = match plan {
        Some(plan) => plan.reslicer.reslice_matched(&plan.current, pair.current, &plan.transform, &c),
        None => prior.gray(pair.prior).map_err(|e| SeriesError::Unreadable("prior", pair.prior, e.to_string()))?,
    };
    Ok(engine.diff_on(runner, &p, &c, method))
}

/// `find_changes` on any slice source: with `SliceFiles`, each slice is decoded when its pair
/// is grounded and dropped after it. When the frames of reference differ, the volumes are
/// registered in 3D (`match_rigid`) and the prior is held decoded (its pixels as f32: twice its
/// 16-bit stored bytes) to be resliced on each current slice's plane.
pub fn find_changes_in(
    engine: &Engine,
    prior: &dyn SliceSource,
    current: &dyn SliceSource,
    method: Method,
    min_score: f32,
    progress: &mut dyn FnMut(Stage),
    cancel: Option<&AtomicBool>,
) -> Result<SeriesOutput, SeriesError> {
    let start = Instant::now();
    let rigid = if frames_differ(prior, current) {
        progress(Stage::Registering);
        match match_rigid_cancellable(prior, current, cancel) {
            Err(SeriesError::Rigid(RigidError::Cancelled)) => {
                let matched =
                    SliceMatch { matching: Matching::Rigid, pairs: Vec::new(), unmatched: Vec::new(), shift_mm: None, rigid: None };
                let method = if engine.has_model() { method } else { Method::Baseline };
                let millis = start.elapsed().as_secs_f64() * 1e3;
                return Ok(SeriesOutput { method, matched, findings: Vec::new(), compared: 0, cancelled: true, millis });
            }
            found => found?,
        }
    } else {
        None
    };
    let (matched, plan) = match rigid {
        Some((matched, plan)) => (matched, Some(plan)),
        None => (match_slices_in(prior, current)?, None),
    };
    let total = matched.pairs.len();
    progress(Stage::Pairs(0, total));
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_WORKERS).min(total.max(1));
    let runners: Vec<_> =
        (0..workers).map(|_| if engine.effective(method) == Method::Model { engine.runner_copy() } else { None }).collect();
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    let (mut boxes, mut used, mut compared, mut failed) = (Vec::new(), None, 0, None);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<DiffOutput, SeriesError>)>();
        for runner in runners {
            let (tx, next, stop, pairs, plan) = (tx.clone(), &next, &stop, &matched.pairs, plan.as_ref());
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) && !cancelled() {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(pair) = pairs.get(k) else { break };
                    if tx.send((k, ground_pair(engine, runner.as_ref(), (prior, current), plan, pair, method))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Results are taken in pair order, so that progress counts up and a cancelled run has
        // compared a leading run of the pairs.
        let mut waiting = BTreeMap::new();
        'receive: for (k, grounded) in rx.iter() {
            waiting.insert(k, grounded);
            while let Some(grounded) = waiting.remove(&compared) {
                if cancelled() {
                    break 'receive;
                }
                let out = match grounded {
                    Ok(out) => out,
                    Err(e) => {
                        failed = Some(e);
                        break 'receive;
                    }
                };
                let pair = matched.pairs[compared];
                used = Some(out.method);
                for prop in out.proposals.into_iter().filter(|p| p.score >= min_score) {
                    boxes.push(SliceBox {
                        slice: pair.current,
                        prior_slice: pair.prior,
                        bbox: round2(prop.target_box),
                        reference_box: prop.reference_box.map(|b| match &plan {
                            // Found on the resliced prior, which lies on the current's grid.
                            Some(plan) => round2(plan.on_prior(pair.current, pair.prior, b)),
                            None => round2(b),
                        }),
                        score: (prop.score as f64 * 1000.0).round() / 1000.0,
                    });
                }
                compared += 1;
                progress(Stage::Pairs(compared, total));
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(SeriesOutput {
        method: used.unwrap_or(if engine.has_model() { method } else { Method::Baseline }),
        cancelled: compared < total,
        compared,
        findings: merge_neighbours(boxes),
        matched,
        millis: start.elapsed().as_secs_f64() * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb(slice: usize, b: [f32; 4], score: f64) -> SliceBox {
        SliceBox { slice, prior_slice: slice, bbox: b, reference_box: None, score }
    }

    #[test]
    fn overlapping_boxes_on_adjacent_slices_merge_and_others_do_not() {
        let found = merge_neighbours(vec![
            sb(4, [10.0, 10.0, 30.0, 30.0], 0.5),
            sb(5, [12.0, 11.0, 31.0, 29.0], 0.9),
            sb(6, [14.0, 12.0, 32.0, 30.0], 0.4),
            // Same place, but a slice gap away: another finding.
            sb(8, [14.0, 12.0, 32.0, 30.0], 0.3),
            // Adjacent slice, elsewhere in the plane: another finding.
            sb(5, [100.0, 100.0, 120.0, 120.0], 0.2),
        ]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].slices, [4, 6]);
        assert_eq!(found[0].peak_slice, 5);
        assert_eq!(found[0].score, 0.9);
        assert_eq!(found[0].bbox, [10.0, 10.0, 32.0, 30.0]);
        assert_eq!(found[0].boxes.len(), 3);
        assert_eq!(found[1].slices, [8, 8]);
        assert_eq!(found[2].slices, [5, 5]);
    }

    #[test]
    fn nearest_pairs_within_a_gap_and_leaves_slices_outside_unmatched() {
        let prior = [0.0, 2.0, 4.0, 6.0];
        let current = [-4.0, -2.0, 0.4, 2.6, 4.1, 12.0];
        let (pairs, unmatched) = nearest(&prior, &current, 0.0);
        assert_eq!(pairs.iter().map(|p| (p.current, p.prior)).collect::<Vec<_>>(), vec![(2, 0), (3, 1), (4, 2)]);
        assert_eq!(unmatched, vec![0, 1, 5]);
        let (pairs, unmatched) = nearest(&prior, &current, 1.5);
        assert_eq!(pairs.iter().map(|p| (p.current, p.prior)).collect::<Vec<_>>(), vec![(1, 0), (2, 1), (3, 2), (4, 3)]);
        assert_eq!(unmatched, vec![0, 5]);
    }
}
