//! 3D rigid registration of two series whose frames of reference differ: coarse volumes in patient coordinates, six parameters found coarse to fine by maximizing NCC, and one series resliced on the other's slice planes.

// Each series becomes a near-isotropic grid (voxels of `voxel_mm`, a few hundred thousand at
// most) lying along its own rows, columns and normal; the moving (current) grid's voxels are
// mapped into the fixed (prior) grid through the rigid transform and compared by normalized
// cross-correlation where they land inside it. Same modality on both sides is the case here, so
// NCC suffices where mutual information would cost more. The search: a 1-D scan along the
// normal from the centres of mass (the series may cover different lengths of the body), then a
// pattern search on the six parameters on a grid twice as coarse, then on the fine one, rotations
// bounded to ±`MAX_ROTATION_DEG`.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::study::GrayImage;

/// Rotations searched, each way about each axis (a head or a body lies differently at follow-up
/// by a few degrees; more is another protocol, not a tilt).
pub const MAX_ROTATION_DEG: f64 = 15.0;

/// Most voxels in one registration grid: enough for an NCC that is smooth in the parameters,
/// few enough that one evaluation takes milliseconds.
pub const MAX_VOXELS: f64 = 250_000.0;

/// Finest voxel (mm): finer buys nothing for slices that are 1–5 mm apart.
pub const MIN_VOXEL_MM: f64 = 2.0;

/// Share of the moving volume that must lie inside the fixed one after registration: below it
/// the two series show too little of the same anatomy for a comparison (or a reliable match).
pub const MIN_OVERLAP: f64 = 0.15;

/// Why two series cannot be registered in 3D.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RigidError {
    #[error("the {0} series is too thin for a 3D registration ({1} slices over {2:.1} mm)")]
    Thin(&'static str, usize, f64),
    #[error("the {0} series' slices differ in size or lack a position")]
    Geometry(&'static str),
    #[error(
        "after 3D registration only {:.0}% of the current series lies within the prior (at least {:.0}% is needed to compare them)",
        .0 * 100.0,
        MIN_OVERLAP * 100.0
    )]
    Overlap(f64),
    #[error("the series have no contrast to register (uniform images)")]
    Flat,
    #[error("the 3D registration was cancelled")]
    Cancelled,
}

type V3 = [f64; 3];

fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: V3, b: V3) -> V3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

fn unit(a: V3) -> V3 {
    let n = dot(a, a).sqrt().max(1e-12);
    a.map(|x| x / n)
}

fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn scaled(a: V3, s: f64) -> V3 {
    a.map(|x| x * s)
}

fn mat_vec(m: &[[f64; 3]; 3], v: V3) -> V3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

/// Where a series' slices lie, in mm in its own frame of reference (DICOM patient coordinates).
#[derive(Clone, Debug)]
pub struct SeriesGeometry {
    /// Unit direction of increasing column index (x) and of increasing row index (y).
    pub row_dir: V3,
    pub col_dir: V3,
    /// Pixel spacing along x and along y (mm).
    pub spacing: [f64; 2],
    pub width: usize,
    pub height: usize,
    /// Centre of each slice's first pixel (Image Position), in the series' order.
    pub origins: Vec<V3>,
}

impl SeriesGeometry {
    pub fn normal(&self) -> V3 {
        unit(cross(self.row_dir, self.col_dir))
    }

    /// The patient point of pixel centre (x, y) of slice `k`.
    pub fn point(&self, k: usize, x: f64, y: f64) -> V3 {
        add(self.origins[k], add(scaled(self.row_dir, x * self.spacing[0]), scaled(self.col_dir, y * self.spacing[1])))
    }

    /// The slices in ascending order along the normal, with their positions.
    fn ascending(&self) -> (Vec<usize>, Vec<f64>) {
        let n = self.normal();
        let mut order: Vec<usize> = (0..self.origins.len()).collect();
        order.sort_by(|&a, &b| dot(self.origins[a], n).total_cmp(&dot(self.origins[b], n)));
        let positions = order.iter().map(|&k| dot(self.origins[k], n)).collect();
        (order, positions)
    }

    /// Length covered along the normal (mm).
    fn thickness(&self) -> f64 {
        let (_, p) = self.ascending();
        p.last().copied().unwrap_or(0.0) - p.first().copied().unwrap_or(0.0)
    }

    fn extent_mm3(&self) -> f64 {
        self.width as f64 * self.spacing[0] * self.height as f64 * self.spacing[1] * self.thickness().max(self.spacing[0])
    }
}

/// The voxel size both series are registered at: the finest that keeps the larger grid within
/// `MAX_VOXELS`, and no finer than `MIN_VOXEL_MM`.
pub fn voxel_mm(a: &SeriesGeometry, b: &SeriesGeometry) -> f64 {
    (a.extent_mm3().max(b.extent_mm3()) / MAX_VOXELS).cbrt().max(MIN_VOXEL_MM)
}

/// A rigid map of patient points: rotation about `centre_mm` (about the patient's x, then y,
/// then z axis), then translation.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Rigid {
    pub angles_deg: V3,
    /// Where the centre moves (mm).
    pub translation_mm: V3,
    /// The point the rotation turns about: the moving volume's centre of mass (mm).
    pub centre_mm: V3,
}

impl Rigid {
    pub fn identity(centre_mm: V3) -> Rigid {
        Rigid { angles_deg: [0.0; 3], translation_mm: [0.0; 3], centre_mm }
    }

    /// Rz · Ry · Rx.
    pub fn matrix(&self) -> [[f64; 3]; 3] {
        let [a, b, c] = self.angles_deg.map(f64::to_radians);
        let (sa, ca) = a.sin_cos();
        let (sb, cb) = b.sin_cos();
        let (sc, cc) = c.sin_cos();
        [
            [cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa],
            [sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa],
            [-sb, cb * sa, cb * ca],
        ]
    }

    pub fn apply(&self, p: V3) -> V3 {
        add(add(mat_vec(&self.matrix(), sub(p, self.centre_mm)), self.centre_mm), self.translation_mm)
    }

    /// The point that `apply` takes to `q`: the map back (the rotation is orthonormal, so its
    /// transpose undoes it).
    pub fn apply_inverse(&self, q: V3) -> V3 {
        let m = self.matrix();
        let d = sub(sub(q, self.translation_mm), self.centre_mm);
        add([0, 1, 2].map(|i| m[0][i] * d[0] + m[1][i] * d[1] + m[2][i] * d[2]), self.centre_mm)
    }

    /// Angle (degrees) of the rotation that takes this one's rotation to `other`'s.
    pub fn angle_to(&self, other: &Rigid) -> f64 {
        let (a, b) = (self.matrix(), other.matrix());
        // trace(Aᵀ·B) = 1 + 2 cos θ
        let trace: f64 = (0..3).map(|i| (0..3).map(|k| a[k][i] * b[k][i]).sum::<f64>()).sum();
        ((trace - 1.0) / 2.0).clamp(-1.0, 1.0).acos().to_degrees()
    }
}

/// A series as a grid of voxels along its rows, columns and normal.
#[derive(Clone, Debug)]
pub struct Grid {
    dims: [usize; 3],
    /// Patient point of voxel (0, 0, 0).
    origin: V3,
    axes: [V3; 3],
    step: V3,
    data: Vec<f32>,
}

/// Columns and rows of a series' grid of `voxel` mm: what its slices may be shrunk to at once
/// (`Grid::build` shrinks them further for coarser grids).
pub fn grid_size(geometry: &SeriesGeometry, voxel: f64) -> (usize, usize) {
    let (w, h) = (geometry.width as f64, geometry.height as f64);
    (((w * geometry.spacing[0] / voxel).round() as usize).max(2), ((h * geometry.spacing[1] / voxel).round() as usize).max(2))
}

/// The planes of a series' grid of `voxel` mm, first slice to last: for each, the two slices
/// around it (in ascending order along the normal) and how far it lies from the first to the
/// second; and the planes' spacing (mm).
fn planes(geometry: &SeriesGeometry, voxel: f64) -> (Vec<(usize, usize, f32)>, f64) {
    let (_, positions) = geometry.ascending();
    let (z0, last) = (positions[0], positions.len() - 1);
    let nz = (((positions[last] - z0) / voxel + 1e-6).floor() as usize + 1).max(2);
    let step_z = ((positions[last] - z0) / (nz - 1) as f64).max(1e-6);
    let planes = (0..nz)
        .map(|k| {
            let z = z0 + k as f64 * step_z;
            let j = positions.partition_point(|&p| p <= z).clamp(1, last);
            let (za, zb) = (positions[j - 1], positions[j]);
            (j - 1, j, if zb - za > 1e-9 { ((z - za) / (zb - za)).clamp(0.0, 1.0) as f32 } else { 0.0 })
        })
        .collect();
    (planes, step_z)
}

impl Grid {
    /// The grid of `voxel` mm through `slices` (in the series' order, each covering the whole
    /// slice at any size, area-shrunk to the grid's columns and rows), linear between slices
    /// along the normal.
    pub fn build(geometry: &SeriesGeometry, slices: &[GrayImage], voxel: f64) -> Grid {
        let (w, h) = (geometry.width as f64, geometry.height as f64);
        let (nx, ny) = grid_size(geometry, voxel);
        let (order, _) = geometry.ascending();
        let (planes, step_z) = planes(geometry, voxel);
        // Only the slices around a plane are read: most of a thin-sliced series is not.
        let mut small: Vec<Option<GrayImage>> = vec![None; order.len()];
        for &(a, b, _) in &planes {
            for j in [a, b] {
                small[j].get_or_insert_with(|| slices[order[j]].resize(nx, ny));
            }
        }
        let n = geometry.normal();
        // Resized pixel a's centre lies at source pixel (a + 0.5)·W/nx − 0.5.
        let (off_x, off_y) = ((0.5 * w / nx as f64 - 0.5) * geometry.spacing[0], (0.5 * h / ny as f64 - 0.5) * geometry.spacing[1]);
        let first = geometry.origins[order[0]];
        let origin = add(first, add(scaled(geometry.row_dir, off_x), scaled(geometry.col_dir, off_y)));
        let mut data = Vec::with_capacity(nx * ny * planes.len());
        for &(a, b, t) in &planes {
            if let (Some(a), Some(b)) = (&small[a], &small[b]) {
                data.extend(a.data.iter().zip(&b.data).map(|(x, y)| x + (y - x) * t));
            }
        }
        Grid {
            dims: [nx, ny, planes.len()],
            origin,
            axes: [geometry.row_dir, geometry.col_dir, n],
            step: [w * geometry.spacing[0] / nx as f64, h * geometry.spacing[1] / ny as f64, step_z],
            data,
        }
    }

    fn voxels(&self) -> usize {
        self.data.len()
    }

    fn point(&self, i: f64, j: f64, k: f64) -> V3 {
        let [a, b, c] = self.axes;
        add(self.origin, add(scaled(a, i * self.step[0]), add(scaled(b, j * self.step[1]), scaled(c, k * self.step[2]))))
    }

    /// Intensity-weighted centre (above the grid's minimum), so that air counts for nothing.
    fn centre_of_mass(&self) -> V3 {
        let lo = self.data.iter().copied().fold(f32::INFINITY, f32::min);
        let [nx, ny, _] = self.dims;
        let (mut sum, mut acc) = (0.0f64, [0.0f64; 3]);
        for (idx, &v) in self.data.iter().enumerate() {
            let w = (v - lo) as f64;
            acc[0] += w * (idx % nx) as f64;
            acc[1] += w * ((idx / nx) % ny) as f64;
            acc[2] += w * (idx / (nx * ny)) as f64;
            sum += w;
        }
        if sum <= 0.0 {
            let [nx, ny, nz] = self.dims.map(|d| (d - 1) as f64 / 2.0);
            return self.point(nx, ny, nz);
        }
        self.point(acc[0] / sum, acc[1] / sum, acc[2] / sum)
    }

    #[inline]
    fn at(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[(k * self.dims[1] + j) * self.dims[0] + i]
    }

    /// Trilinear at fractional voxel indices, `None` outside.
    #[inline]
    fn sample(&self, f: V3) -> Option<f32> {
        let [nx, ny, nz] = self.dims;
        if !(f[0] >= 0.0 && f[1] >= 0.0 && f[2] >= 0.0 && f[0] <= (nx - 1) as f64 && f[1] <= (ny - 1) as f64 && f[2] <= (nz - 1) as f64) {
            return None;
        }
        let (i, j, k) = ((f[0] as usize).min(nx - 2), (f[1] as usize).min(ny - 2), (f[2] as usize).min(nz - 2));
        let (u, v, w) = ((f[0] - i as f64) as f32, (f[1] - j as f64) as f32, (f[2] - k as f64) as f32);
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let plane = |k: usize| {
            let top = lerp(self.at(i, j, k), self.at(i + 1, j, k), u);
            let bottom = lerp(self.at(i, j + 1, k), self.at(i + 1, j + 1, k), u);
            lerp(top, bottom, v)
        };
        Some(lerp(plane(k), plane(k + 1), w))
    }
}

/// A registration grid and one twice as coarse, for the first, wide search.
#[derive(Clone, Debug)]
pub struct Pyramid {
    pub fine: Grid,
    pub coarse: Grid,
    pub voxel_mm: f64,
}

impl Pyramid {
    /// Which slices (in the series' order) `build` reads at `voxel`: those around the planes of
    /// either grid. The others may be left unread (any image stands in for them).
    pub fn slices_read(geometry: &SeriesGeometry, voxel: f64) -> Vec<bool> {
        let (order, _) = geometry.ascending();
        let mut read = vec![false; order.len()];
        if order.len() >= 2 {
            for v in [voxel, 2.0 * voxel] {
                for (a, b, _) in planes(geometry, v).0 {
                    read[order[a]] = true;
                    read[order[b]] = true;
                }
            }
        }
        read
    }

    /// Both grids of a series; `which` names it in errors.
    pub fn build(which: &'static str, geometry: &SeriesGeometry, slices: &[GrayImage], voxel: f64) -> Result<Pyramid, RigidError> {
        if geometry.origins.len() != slices.len() {
            return Err(RigidError::Geometry(which));
        }
        let thickness = geometry.thickness();
        // Two coarse voxels through the slab at least, else its tilt cannot be measured.
        if slices.len() < 3 || thickness < 2.0 * voxel {
            return Err(RigidError::Thin(which, slices.len(), thickness));
        }
        Ok(Pyramid { fine: Grid::build(geometry, slices, voxel), coarse: Grid::build(geometry, slices, 2.0 * voxel), voxel_mm: voxel })
    }
}

/// What the registration found.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Registration {
    /// Moving (current) patient point → fixed (prior) patient point.
    pub transform: Rigid,
    /// NCC of the overlapping voxels at the transform, on the fine grid.
    pub ncc: f64,
    /// Share of the moving grid's voxels that land inside the fixed grid.
    pub overlap: f64,
    pub voxel_mm: f64,
}

/// NCC and overlap of `moving` mapped by `rigid` into `fixed`.
fn score(fixed: &Grid, moving: &Grid, rigid: &Rigid) -> (f64, f64) {
    // Moving voxel index → fixed voxel index is one affine map: f = A·(i, j, k) + f0.
    let r = rigid.matrix();
    let to_fixed = |q: V3| -> V3 { [0, 1, 2].map(|l| dot(sub(q, fixed.origin), fixed.axes[l]) / fixed.step[l]) };
    let f0 = to_fixed(rigid.apply(moving.origin));
    let columns: [V3; 3] = [0, 1, 2].map(|m| {
        let d = mat_vec(&r, scaled(moving.axes[m], moving.step[m]));
        [0, 1, 2].map(|l| dot(d, fixed.axes[l]) / fixed.step[l])
    });
    let [nx, ny, nz] = moving.dims;
    // Per moving slab, summed in slab order afterwards, so that the result does not depend on
    // how the threads split the work.
    let sums: Vec<[f64; 6]> = (0..nz)
        .into_par_iter()
        .map(|k| {
            let mut s = [0.0f64; 6];
            for j in 0..ny {
                let row = add(f0, add(scaled(columns[1], j as f64), scaled(columns[2], k as f64)));
                let base = (k * ny + j) * nx;
                for i in 0..nx {
                    let f = add(row, scaled(columns[0], i as f64));
                    if let Some(b) = fixed.sample(f) {
                        let (a, b) = (moving.data[base + i] as f64, b as f64);
                        s[0] += 1.0;
                        s[1] += a;
                        s[2] += b;
                        s[3] += a * a;
                        s[4] += b * b;
                        s[5] += a * b;
                    }
                }
            }
            s
        })
        .collect();
    let mut t = [0.0f64; 6];
    for s in &sums {
        for (x, y) in t.iter_mut().zip(s) {
            *x += y;
        }
    }
    let n = t[0];
    let overlap = n / moving.voxels() as f64;
    if n < 8.0 {
        return (f64::NAN, overlap);
    }
    let va = t[3] - t[1] * t[1] / n;
    let vb = t[4] - t[2] * t[2] / n;
    let cov = t[5] - t[1] * t[2] / n;
    if va <= 1e-9 * n || vb <= 1e-9 * n {
        return (f64::NAN, overlap);
    }
    (cov / (va * vb).sqrt(), overlap)
}

fn rigid_of(x: &[f64; 6], centre: V3) -> Rigid {
    Rigid { angles_deg: [x[0], x[1], x[2]], translation_mm: [x[3], x[4], x[5]], centre_mm: centre }
}

/// Pattern search (coordinate steps, halved when no step improves) maximizing NCC over the
/// parameters, with the overlap kept at `min_overlap` or more and rotations bounded.
fn pattern_search(
    fixed: &Grid,
    moving: &Grid,
    centre: V3,
    x: &mut [f64; 6],
    (steps, min_steps): ([f64; 6], [f64; 6]),
    min_overlap: f64,
    cancel: Option<&AtomicBool>,
) -> Result<f64, RigidError> {
    let objective = |x: &[f64; 6]| {
        if x[..3].iter().any(|a| a.abs() > MAX_ROTATION_DEG) {
            return f64::NEG_INFINITY;
        }
        let (ncc, overlap) = score(fixed, moving, &rigid_of(x, centre));
        if overlap < min_overlap || !ncc.is_finite() { f64::NEG_INFINITY } else { ncc }
    };
    let mut best = objective(x);
    let mut steps = steps;
    // Bounded, so that a flat objective cannot keep it walking.
    for _ in 0..80 {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(RigidError::Cancelled);
        }
        let mut improved = false;
        for p in 0..6 {
            for sign in [1.0, -1.0] {
                let mut moved = false;
                loop {
                    let mut y = *x;
                    y[p] += sign * steps[p];
                    let v = objective(&y);
                    if v > best + 1e-7 {
                        (*x, best, moved) = (y, v, true);
                    } else {
                        break;
                    }
                }
                if moved {
                    improved = true;
                    break;
                }
            }
        }
        if !improved {
            let mut all_small = true;
            for (s, m) in steps.iter_mut().zip(min_steps) {
                *s /= 2.0;
                all_small &= *s < m;
            }
            if all_small {
                break;
            }
        }
    }
    Ok(best)
}

/// The rigid transform taking `moving` onto `fixed`.
pub fn register(fixed: &Pyramid, moving: &Pyramid) -> Result<Registration, RigidError> {
    register_cancellable(fixed, moving, None)
}

/// `register`, given up with `RigidError::Cancelled` once `cancel` is set (checked between the
/// search's steps, each a few milliseconds).
pub fn register_cancellable(fixed: &Pyramid, moving: &Pyramid, cancel: Option<&AtomicBool>) -> Result<Registration, RigidError> {
    let voxel = moving.voxel_mm.max(fixed.voxel_mm);
    let centre = moving.fine.centre_of_mass();
    let start = sub(fixed.fine.centre_of_mass(), centre);
    // A scan along the moving normal first: the centres of mass of two series covering different
    // lengths of the body lie apart along it by up to the longer series' length.
    let normal = moving.coarse.axes[2];
    let reach = moving.coarse.step[2] * moving.coarse.dims[2] as f64 + fixed.coarse.step[2] * fixed.coarse.dims[2] as f64;
    let step = 2.0 * voxel;
    let count = (reach / step).ceil() as i64;
    let scanned: Vec<(f64, f64, f64)> = (-count..=count)
        .map(|s| {
            let d = s as f64 * step;
            let (ncc, overlap) =
                score(&fixed.coarse, &moving.coarse, &Rigid { translation_mm: add(start, scaled(normal, d)), ..Rigid::identity(centre) });
            (d, ncc, overlap)
        })
        .collect();
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(RigidError::Cancelled);
    }
    let most = scanned.iter().map(|s| s.2).fold(0.0, f64::max);
    // Among the shifts that overlap at least half as much as the most overlapping one: a sliver
    // of overlap can correlate by chance.
    let Some(&(d, _, _)) = scanned.iter().filter(|s| s.1.is_finite() && s.2 >= most / 2.0).max_by(|a, b| a.1.total_cmp(&b.1)) else {
        return Err(if most < MIN_OVERLAP { RigidError::Overlap(most) } else { RigidError::Flat });
    };
    let t = add(start, scaled(normal, d));
    let mut x = [0.0, 0.0, 0.0, t[0], t[1], t[2]];
    let keep = (most / 2.0).min(MIN_OVERLAP);
    let c = 2.0 * voxel;
    let coarse = ([4.0, 4.0, 4.0, c, c, c], [0.5, 0.5, 0.5, c / 8.0, c / 8.0, c / 8.0]);
    pattern_search(&fixed.coarse, &moving.coarse, centre, &mut x, coarse, keep, cancel)?;
    let f = voxel / 2.0;
    let fine = ([1.0, 1.0, 1.0, f, f, f], [0.03, 0.03, 0.03, 0.05, 0.05, 0.05]);
    pattern_search(&fixed.fine, &moving.fine, centre, &mut x, fine, keep, cancel)?;
    let transform = rigid_of(&x, centre);
    let (ncc, overlap) = score(&fixed.fine, &moving.fine, &transform);
    if overlap < MIN_OVERLAP {
        return Err(RigidError::Overlap(overlap));
    }
    if !ncc.is_finite() {
        return Err(RigidError::Flat);
    }
    Ok(Registration { transform, ncc, overlap, voxel_mm: voxel })
}

/// A series held whole to be resliced on another's planes.
pub struct Reslicer {
    pub geometry: SeriesGeometry,
    slices: Vec<GrayImage>,
    order: Vec<usize>,
    positions: Vec<f64>,
    normal: V3,
    /// Half the median gap between slices (mm).
    slack: f64,
}

/// Where a patient point lies in a resliced series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Located {
    /// The nearest slice along the normal, in the series' order.
    pub slice: usize,
    /// How far from it along the normal (mm).
    pub distance_mm: f64,
    /// In that slice's pixels.
    pub x: f64,
    pub y: f64,
    /// Within the series' slices and image bounds (half a slice gap of slack along the normal).
    pub inside: bool,
}

/// How a resliced pixel is valued from the voxels around it.
#[derive(Clone, Copy)]
enum Blend {
    /// Trilinear: what the series shows there.
    Interpolate,
    /// Between the samples on the two slices around the point, nearest the moving slice's own
    /// value. A series says little of what lies between its slices; a linear blend of the two
    /// smooths a thin bright structure cut obliquely (a wire, a rib's or a clavicle's edge)
    /// into something a slice through it does not show, which a comparison takes for a change.
    /// Voxel matching, as temporal subtraction CT does it, but only along the normal: in-plane
    /// the pixels are fine and the registration good to a fraction of one, and taking the
    /// range of the 2 × 2 pixels too dimmed a lesion by a bone's edge in `tandem bench series`.
    Matched,
}

/// `GrayImage::sample_inside`, quicker where the four pixels lie inside (most of a slice): a
/// reslice samples a quarter of a million of them twice.
#[inline(always)]
fn bilinear(img: &GrayImage, x: f32, y: f32) -> Option<f32> {
    let w = img.width;
    if x >= 0.0 && y >= 0.0 && x < w.saturating_sub(1) as f32 && y < img.height.saturating_sub(1) as f32 {
        let (xi, yi) = (x as usize, y as usize);
        let (fx, fy) = (x - xi as f32, y - yi as f32);
        let (row, next) = (&img.data[yi * w + xi..yi * w + xi + 2], &img.data[(yi + 1) * w + xi..(yi + 1) * w + xi + 2]);
        let (top, bottom) = (row[0] + (row[1] - row[0]) * fx, next[0] + (next[1] - next[0]) * fx);
        return Some(top + (bottom - top) * fy);
    }
    img.sample_inside(x, y)
}

impl Reslicer {
    /// `slices` in the series' order, each of the geometry's size.
    pub fn new(geometry: SeriesGeometry, slices: Vec<GrayImage>) -> Result<Reslicer, RigidError> {
        if slices.len() != geometry.origins.len()
            || slices.len() < 2
            || slices.iter().any(|s| (s.width, s.height) != (geometry.width, geometry.height))
        {
            return Err(RigidError::Geometry("prior"));
        }
        let (order, positions) = geometry.ascending();
        let normal = geometry.normal();
        let mut gaps: Vec<f64> = positions.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_by(f64::total_cmp);
        let slack = gaps.get(gaps.len() / 2).copied().unwrap_or(0.0) / 2.0;
        Ok(Reslicer { geometry, slices, order, positions, normal, slack })
    }

    /// Pixel coordinates of patient point `q` on slice `k` (in the series' order).
    pub fn pixel_on(&self, k: usize, q: V3) -> (f64, f64) {
        let g = &self.geometry;
        let d = sub(q, g.origins[k]);
        (dot(d, g.row_dir) / g.spacing[0], dot(d, g.col_dir) / g.spacing[1])
    }

    pub fn locate(&self, q: V3) -> Located {
        let z = dot(q, self.normal);
        let j = self.positions.partition_point(|&p| p < z);
        let nearest = match (j.checked_sub(1), self.positions.get(j)) {
            (Some(a), Some(&pb)) if (z - self.positions[a]).abs() <= (pb - z).abs() => a,
            (Some(a), None) => a,
            _ => j.min(self.positions.len() - 1),
        };
        let slice = self.order[nearest];
        let (x, y) = self.pixel_on(slice, q);
        let slack = self.slack;
        let (w, h) = (self.geometry.width as f64, self.geometry.height as f64);
        let inside = z >= self.positions[0] - slack
            && z <= self.positions[self.positions.len() - 1] + slack
            && (-0.5..=w - 0.5).contains(&x)
            && (-0.5..=h - 0.5).contains(&y);
        Located { slice, distance_mm: (z - self.positions[nearest]).abs(), x, y, inside }
    }

    /// This series resliced on slice `k` of `moving` through `rigid` (moving → this series):
    /// each pixel of that slice sampled here (bilinear on the two slices around it, linear
    /// between them); where it falls outside this series, `moving_slice`'s own pixel, so that
    /// what this series does not cover shows no change.
    pub fn reslice(&self, moving: &SeriesGeometry, k: usize, rigid: &Rigid, moving_slice: &GrayImage) -> GrayImage {
        self.resliced(moving, k, rigid, moving_slice, Blend::Interpolate)
    }

    /// `reslice` for comparison with `moving_slice`: each pixel the value between the two
    /// slices' samples around it nearest the moving slice's own, rather than their linear blend.
    pub fn reslice_matched(&self, moving: &SeriesGeometry, k: usize, rigid: &Rigid, moving_slice: &GrayImage) -> GrayImage {
        self.resliced(moving, k, rigid, moving_slice, Blend::Matched)
    }

    fn resliced(&self, moving: &SeriesGeometry, k: usize, rigid: &Rigid, moving_slice: &GrayImage, blend: Blend) -> GrayImage {
        let g = &self.geometry;
        let r = rigid.matrix();
        let q0 = rigid.apply(moving.point(k, 0.0, 0.0));
        let dx = mat_vec(&r, scaled(moving.row_dir, moving.spacing[0]));
        let dy = mat_vec(&r, scaled(moving.col_dir, moving.spacing[1]));
        // A point's pixel coordinates on slice j are (q·ru, q·cv) less the slice origin's, and
        // along a row q, and so both and the position along the normal, move linearly.
        let (ru, cv) = (scaled(g.row_dir, 1.0 / g.spacing[0]), scaled(g.col_dir, 1.0 / g.spacing[1]));
        let offsets: Vec<(f64, f64)> = self.order.iter().map(|&j| (dot(g.origins[j], ru), dot(g.origins[j], cv))).collect();
        let (positions, last) = (&self.positions, self.positions.len() - 1);
        let (w, h) = (moving_slice.width, moving_slice.height);
        let (du, dv, dz) = (dot(dx, ru), dot(dx, cv), dot(dx, self.normal));
        let mut data = vec![0.0f32; w * h];
        data.par_chunks_mut(w.max(1)).enumerate().for_each(|(y, row)| {
            let p = add(q0, scaled(dy, y as f64));
            let (u0, v0, z0) = (dot(p, ru), dot(p, cv), dot(p, self.normal));
            let own = &moving_slice.data[y * w..(y + 1) * w];
            let mut j = 1;
            for (x, out) in row.iter_mut().enumerate() {
                let (u, v, z) = (u0 + du * x as f64, v0 + dv * x as f64, z0 + dz * x as f64);
                *out = own[x];
                if z < positions[0] - 1e-6 || z > positions[last] + 1e-6 {
                    continue;
                }
                if !(positions[j - 1] <= z && z < positions[j]) {
                    j = positions.partition_point(|&p| p <= z).clamp(1, last);
                }
                let (za, zb) = (positions[j - 1], positions[j]);
                let t = if zb - za > 1e-9 { ((z - za) / (zb - za)).clamp(0.0, 1.0) as f32 } else { 0.0 };
                let at = |n: usize| bilinear(&self.slices[self.order[n]], (u - offsets[n].0) as f32, (v - offsets[n].1) as f32);
                let Some(a) = at(j - 1) else { continue };
                let b = if t == 0.0 {
                    a
                } else if let Some(b) = at(j) {
                    b
                } else {
                    continue;
                };
                *out = match blend {
                    Blend::Interpolate => a + (b - a) * t,
                    Blend::Matched => own[x].clamp(a.min(b), a.max(b)),
                };
            }
        });
        GrayImage { width: w, height: h, data }
    }

    /// The slices held (bytes), for what a run costs.
    pub fn bytes(&self) -> usize {
        self.slices.iter().map(|s| s.data.len() * 4).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth synthetic body: ellipsoids of different intensities with soft edges, over air.
    fn body(p: V3) -> f32 {
        let blob = |c: V3, r: V3, v: f32| {
            let d = ((p[0] - c[0]) / r[0]).powi(2) + ((p[1] - c[1]) / r[1]).powi(2) + ((p[2] - c[2]) / r[2]).powi(2);
            v / (1.0 + ((d.sqrt() - 1.0) * 8.0).exp()) as f32
        };
        -1000.0
            + blob([0.0, 0.0, 0.0], [70.0, 55.0, 60.0], 1040.0)
            + blob([-25.0, 10.0, 15.0], [18.0, 25.0, 30.0], -500.0)
            + blob([28.0, -5.0, -10.0], [15.0, 12.0, 20.0], 300.0)
            + blob([5.0, 30.0, 25.0], [10.0, 8.0, 12.0], 700.0)
            + blob([-5.0, -30.0, -30.0], [20.0, 10.0, 9.0], 200.0)
    }

    /// 64 × 64 slices of 2.5 mm pixels, 40 slices 3.5 mm apart, axial, centred on the origin.
    fn geometry(z0: f64) -> SeriesGeometry {
        SeriesGeometry {
            row_dir: [1.0, 0.0, 0.0],
            col_dir: [0.0, 1.0, 0.0],
            spacing: [2.5, 2.5],
            width: 64,
            height: 64,
            origins: (0..40).map(|k| [-78.75, -78.75, z0 + 3.5 * k as f64]).collect(),
        }
    }

    /// The slices of `g` through the body seen through `patient_from_series` (the same body in
    /// another frame of reference when that is not the identity).
    fn slices(g: &SeriesGeometry, patient_from_series: &dyn Fn(V3) -> V3) -> Vec<GrayImage> {
        (0..g.origins.len())
            .map(|k| GrayImage::from_fn(g.width, g.height, |x, y| body(patient_from_series(g.point(k, x as f64, y as f64)))))
            .collect()
    }

    fn registered(truth: Rigid, z0: f64) -> (Registration, SeriesGeometry) {
        let (gp, gc) = (geometry(-68.25), geometry(z0));
        // A current point p shows the body at the prior point truth(p), whatever frame it is in.
        let (sp, sc) = (slices(&gp, &|p| p), slices(&gc, &|p| truth.apply(p)));
        let voxel = voxel_mm(&gp, &gc);
        let fixed = Pyramid::build("prior", &gp, &sp, voxel).unwrap();
        let moving = Pyramid::build("current", &gc, &sc, voxel).unwrap();
        (register(&fixed, &moving).unwrap(), gc)
    }

    /// Largest distance between where the two transforms take the current volume's corners.
    fn worst_mm(a: &Rigid, b: &Rigid, g: &SeriesGeometry) -> f64 {
        let last = g.origins.len() - 1;
        let corners = [(0, 0.0, 0.0), (0, 63.0, 63.0), (last, 0.0, 63.0), (last, 63.0, 0.0), (last / 2, 31.5, 31.5)];
        corners
            .iter()
            .map(|&(k, x, y)| {
                let p = g.point(k, x, y);
                let d = sub(a.apply(p), b.apply(p));
                dot(d, d).sqrt()
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn a_tilted_and_moved_volume_is_found_within_a_degree_and_a_millimetre() {
        // Another frame of reference: the current's table 40 mm further, the patient turned 7°
        // about left-right and 4° about front-back and moved a few mm.
        let truth = Rigid { angles_deg: [7.0, 4.0, 0.0], translation_mm: [3.0, -4.0, 42.5], centre_mm: [2.0, -3.0, -40.0] };
        let (found, gc) = registered(truth, -108.25);
        let t = found.transform;
        assert!(t.angle_to(&truth) < 1.0, "rotation off by {:.2}°: {t:?}", t.angle_to(&truth));
        // The translation compared where it matters: points of the current volume land within
        // 1 mm of where the true transform puts them (the centre of rotation differs).
        let centre = truth.apply(t.centre_mm);
        let moved = sub(t.apply(t.centre_mm), centre);
        assert!(dot(moved, moved).sqrt() < 1.0, "centre off by {moved:?}: {t:?}");
        assert!(worst_mm(&t, &truth, &gc) < 2.5, "{t:?}");
        assert!(found.ncc > 0.95 && found.overlap > 0.5, "{found:?}");
    }

    #[test]
    fn one_frame_of_reference_seen_twice_registers_to_identity() {
        let truth = Rigid::identity([0.0; 3]);
        let (found, gc) = registered(truth, -68.25);
        assert!(found.transform.angle_to(&truth) < 0.3, "{found:?}");
        assert!(worst_mm(&found.transform, &truth, &gc) < 0.5, "{found:?}");
        assert!(found.ncc > 0.99 && found.overlap > 0.9, "{found:?}");
    }

    #[test]
    fn the_resliced_prior_matches_the_current_where_they_overlap() {
        let truth = Rigid { angles_deg: [6.0, 0.0, 3.0], translation_mm: [0.0, 2.0, 10.0], centre_mm: [0.0; 3] };
        let (gp, gc) = (geometry(-68.25), geometry(-78.25));
        let (sp, sc) = (slices(&gp, &|p| p), slices(&gc, &|p| truth.apply(p)));
        let reslicer = Reslicer::new(gp, sp).unwrap();
        let k = 20;
        // What a shift alone gives: the slice's centre moved where it belongs, no turn.
        let c = gc.point(k, 31.5, 31.5);
        let shift = Rigid { translation_mm: sub(truth.apply(c), c), ..Rigid::identity(c) };
        let flat = reslicer.reslice(&gc, k, &shift, &sc[k]);
        let turned = reslicer.reslice(&gc, k, &truth, &sc[k]);
        let mean_abs = |a: &GrayImage| a.data.iter().zip(&sc[k].data).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.data.len() as f32;
        // Through the true transform the prior is the current but for interpolation; shifted
        // straight across it is another cut.
        assert!(mean_abs(&turned) < 25.0, "{}", mean_abs(&turned));
        assert!(mean_abs(&flat) > 4.0 * mean_abs(&turned), "{} vs {}", mean_abs(&flat), mean_abs(&turned));
        let centre = truth.apply(gc.point(k, 31.5, 31.5));
        let at = reslicer.locate(centre);
        assert!(at.inside && (at.x - 31.5).abs() < 3.0, "{at:?}");
    }

    #[test]
    fn a_set_cancel_flag_stops_the_registration() {
        let (gp, gc) = (geometry(-68.25), geometry(-78.25));
        let (sp, sc) = (slices(&gp, &|p| p), slices(&gc, &|p| p));
        let voxel = voxel_mm(&gp, &gc);
        let fixed = Pyramid::build("prior", &gp, &sp, voxel).unwrap();
        let moving = Pyramid::build("current", &gc, &sc, voxel).unwrap();
        let cancel = AtomicBool::new(true);
        assert_eq!(register_cancellable(&fixed, &moving, Some(&cancel)).unwrap_err(), RigidError::Cancelled);
        cancel.store(false, Ordering::Relaxed);
        assert!(register_cancellable(&fixed, &moving, Some(&cancel)).is_ok());
    }

    #[test]
    fn a_grid_reads_only_the_slices_around_its_planes() {
        // 40 slices 3.5 mm apart against voxels of 10 mm: the planes fall between a few of them.
        let g = geometry(0.0);
        let read = Pyramid::slices_read(&g, 10.0);
        let count = read.iter().filter(|r| **r).count();
        assert!(count < read.len() && read[0] && read[39], "{count} {read:?}");
        // The unread ones can be anything: the grids come out the same.
        let all = slices(&g, &|p| p);
        let some: Vec<GrayImage> = all.iter().zip(&read).map(|(s, r)| if *r { s.clone() } else { GrayImage::new(3, 3) }).collect();
        let (a, b) = (Pyramid::build("prior", &g, &all, 10.0).unwrap(), Pyramid::build("prior", &g, &some, 10.0).unwrap());
        assert_eq!((a.fine.data, a.coarse.data), (b.fine.data, b.coarse.data));
    }

    #[test]
    fn too_little_overlap_is_refused() {
        // A prior of four slices 2 mm apart against a current 136 mm long.
        let gp = SeriesGeometry { origins: (0..4).map(|k| [-78.75, -78.75, 2.0 * k as f64]).collect(), ..geometry(0.0) };
        let gc = geometry(-68.25);
        let (sp, sc) = (slices(&gp, &|p| p), slices(&gc, &|p| p));
        let voxel = 2.0;
        let fixed = Pyramid::build("prior", &gp, &sp, voxel).unwrap();
        let moving = Pyramid::build("current", &gc, &sc, voxel).unwrap();
        match register(&fixed, &moving) {
            Err(RigidError::Overlap(f)) => assert!(f < MIN_OVERLAP, "{f}"),
            other => panic!("{other:?}"),
        }
        // Too thin to register at all: two slices.
        let thin = SeriesGeometry { origins: gp.origins[..2].to_vec(), ..gp.clone() };
        assert!(matches!(Pyramid::build("prior", &thin, &sp[..2], voxel), Err(RigidError::Thin("prior", 2, _))));
    }
}
