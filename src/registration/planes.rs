//! Where two orthogonal planes of one volume meet: each shows the same line of voxels, so
//! one row or column of the first equals one row or column of the second. Finding that pair
//! says which axis the planes share and where each lies in the other.

use crate::study::gray::GrayImage;

/// Both images are compared at this many lines per axis (field of view assumed equal).
const LINES: usize = 112;

/// Which axis of the reference recurs on which axis of the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedAxes {
    /// Reference x is target x (e.g. axial ↔ coronal).
    XtoX,
    /// Reference y is target y (e.g. coronal ↔ sagittal).
    YtoY,
    /// Reference y is target x (e.g. axial → sagittal).
    YtoX,
    /// Reference x is target y (e.g. sagittal → axial).
    XtoY,
}

impl SharedAxes {
    pub const ALL: [SharedAxes; 4] = [SharedAxes::XtoX, SharedAxes::YtoY, SharedAxes::YtoX, SharedAxes::XtoY];

    /// A reference box `[x1, y1, x2, y2]`: its (centre, extent) along the shared axis, and its
    /// extent across it.
    pub fn along(self, [x1, y1, x2, y2]: [f32; 4]) -> (f32, f32, f32) {
        let (w, h) = (x2 - x1, y2 - y1);
        if self.axes().0 == 0 { ((x1 + x2) / 2.0, w, h) } else { ((y1 + y2) / 2.0, h, w) }
    }

    /// (reference axis, target axis), 0 = x, 1 = y.
    pub fn axes(self) -> (usize, usize) {
        match self {
            SharedAxes::XtoX => (0, 0),
            SharedAxes::YtoY => (1, 1),
            SharedAxes::YtoX => (1, 0),
            SharedAxes::XtoY => (0, 1),
        }
    }
}

/// The common line of two planes.
#[derive(Clone, Copy, Debug)]
pub struct Intersection {
    pub shared: SharedAxes,
    /// Where the line lies across the target's other axis, in target pixels.
    pub line_in_target: f32,
    /// Where it lies across the reference's other axis, in reference pixels.
    pub line_in_reference: f32,
    /// Correlation of the two lines, and of the best line pair under any other hypothesis.
    pub ncc: f32,
    pub runner_up_ncc: f32,
}

impl Intersection {
    /// Whether the common line crosses a reference box `[x1, y1, x2, y2]`: then it crosses the
    /// structure boxed there, whose section in the target contains the line too.
    pub fn crosses(&self, [x1, y1, x2, y2]: [f32; 4]) -> bool {
        let (lo, hi) = if self.shared.axes().0 == 0 { (y1, y2) } else { (x1, x2) };
        self.line_in_reference > lo && self.line_in_reference < hi
    }
}

/// Zero-mean, unit-norm profiles of the rows (`along_x`) or columns of `img`; `None` for flat
/// lines (background), which match anything.
fn profiles(img: &GrayImage, along_x: bool) -> Vec<Option<Vec<f32>>> {
    (0..LINES)
        .map(|k| {
            let v: Vec<f32> = (0..LINES).map(|t| if along_x { img.get(t, k) } else { img.get(k, t) }).collect();
            let mean = v.iter().sum::<f32>() / LINES as f32;
            let centred: Vec<f32> = v.iter().map(|x| x - mean).collect();
            let norm = centred.iter().map(|x| x * x).sum::<f32>().sqrt();
            // A line whose spread is under 5 % of the range is background.
            (norm > 0.05 * (LINES as f32).sqrt()).then(|| centred.iter().map(|x| x / norm).collect())
        })
        .collect()
}

/// The best (correlation, reference line, target line) between two profile sets.
fn best_pair(a: &[Option<Vec<f32>>], b: &[Option<Vec<f32>>]) -> Option<(f32, usize, usize)> {
    let mut best: Option<(f32, usize, usize)> = None;
    for (i, pa) in a.iter().enumerate() {
        let Some(pa) = pa else { continue };
        for (j, pb) in b.iter().enumerate() {
            let Some(pb) = pb else { continue };
            let c: f32 = pa.iter().zip(pb).map(|(x, y)| x * y).sum();
            if best.is_none_or(|(bc, _, _)| c > bc) {
                best = Some((c, i, j));
            }
        }
    }
    best
}

/// Finds the line two orthogonal planes share, or `None` when either image is blank.
pub fn intersect(reference: &GrayImage, target: &GrayImage) -> Option<Intersection> {
    let (r, t) = (reference.resize(LINES, LINES), target.resize(LINES, LINES));
    let (r_rows, r_cols, t_rows, t_cols) = (profiles(&r, true), profiles(&r, false), profiles(&t, true), profiles(&t, false));
    let mut found: Vec<(SharedAxes, f32, usize, usize)> = SharedAxes::ALL
        .iter()
        .filter_map(|&s| {
            // Profiles along the shared axis: rows run along x, columns along y.
            let (ra, ta) = s.axes();
            let (rp, tp) = (if ra == 0 { &r_rows } else { &r_cols }, if ta == 0 { &t_rows } else { &t_cols });
            best_pair(rp, tp).map(|(c, i, j)| (s, c, i, j))
        })
        .collect();
    found.sort_by(|a, b| b.1.total_cmp(&a.1));
    let &(shared, ncc, i, j) = found.first()?;
    let to_pixels = |k: usize, extent: usize| (k as f32 + 0.5) * extent as f32 / LINES as f32;
    let (ra, ta) = shared.axes();
    // The line runs along the shared axis; its position is across it.
    let line_in_reference = to_pixels(i, if ra == 0 { reference.height } else { reference.width });
    let line_in_target = to_pixels(j, if ta == 0 { target.height } else { target.width });
    Some(Intersection { shared, line_in_target, line_in_reference, ncc, runner_up_ncc: found.get(1).map_or(-1.0, |f| f.1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth, asymmetric volume sampled on a 96³ grid.
    fn volume(x: f32, y: f32, z: f32) -> f32 {
        let (x, y, z) = (x / 96.0, y / 96.0, z / 96.0);
        0.5 + 0.2 * (7.0 * x + 2.0 * y * y).sin() * (5.0 * z + x).cos() + 0.15 * (11.0 * y - 3.0 * z).sin() + 0.1 * (9.0 * z * x).cos()
    }

    #[test]
    fn axial_and_coronal_share_x_and_meet_on_their_rows() {
        let (y0, z0) = (30.0, 70.0);
        let axial = GrayImage::from_fn(96, 96, |x, y| volume(x as f32, y as f32, z0));
        let coronal = GrayImage::from_fn(96, 96, |x, z| volume(x as f32, y0, z as f32));
        let found = intersect(&axial, &coronal).unwrap();
        assert_eq!(found.shared, SharedAxes::XtoX);
        assert!((found.line_in_reference - y0).abs() < 2.0, "{found:?}");
        assert!((found.line_in_target - z0).abs() < 2.0, "{found:?}");
    }

    #[test]
    fn axial_to_sagittal_maps_y_to_x() {
        let (x0, z0) = (55.0, 20.0);
        let axial = GrayImage::from_fn(96, 96, |x, y| volume(x as f32, y as f32, z0));
        let sagittal = GrayImage::from_fn(96, 96, |y, z| volume(x0, y as f32, z as f32));
        let found = intersect(&axial, &sagittal).unwrap();
        assert_eq!(found.shared, SharedAxes::YtoX);
        assert!((found.line_in_reference - x0).abs() < 2.0, "{found:?}");
        assert!((found.line_in_target - z0).abs() < 2.0, "{found:?}");
    }
}
