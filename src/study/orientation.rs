//! Orientation markers from Image Orientation (Patient): which way the patient lies along each
//! edge of the image (R/L, A/P, H/F), as a reader expects them on the pane's sides.

/// The letters for the four edges of an image as it is displayed (row 0 at the top, column 0 at
/// the left), e.g. an axial CT: left "R", right "L", top "A", bottom "P".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Markers {
    pub left: String,
    pub right: String,
    pub top: String,
    pub bottom: String,
}

/// A component smaller than this (cos 75.5°) does not get a letter: an image tilted by a few
/// degrees keeps single letters, a 45° oblique gets two ("LP").
const OBLIQUE_MIN: f64 = 0.25;

/// The direction a patient-space vector points to (DICOM LPS: +x towards the patient's Left, +y
/// Posterior, +z Head), strongest component first; `None` for a zero or non-finite vector.
pub fn direction_label(v: [f64; 3]) -> Option<String> {
    let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if !norm.is_finite() || norm < 1e-6 {
        return None;
    }
    let letters = [('L', 'R'), ('P', 'A'), ('H', 'F')];
    let mut axes: Vec<(f64, char)> = (0..3).map(|i| (v[i] / norm, if v[i] >= 0.0 { letters[i].0 } else { letters[i].1 })).collect();
    axes.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
    let label: String = axes.iter().filter(|(c, _)| c.abs() >= OBLIQUE_MIN).map(|(_, l)| *l).collect();
    (!label.is_empty()).then_some(label)
}

/// The markers of an image with Image Orientation (Patient) `iop` (row direction cosines, then
/// column direction cosines): the right edge is where the row direction points, the bottom edge
/// where the column direction points. `None` when either direction is degenerate.
pub fn markers(iop: [f64; 6]) -> Option<Markers> {
    let row = [iop[0], iop[1], iop[2]];
    let col = [iop[3], iop[4], iop[5]];
    let neg = |v: [f64; 3]| v.map(|x| -x);
    Some(Markers {
        left: direction_label(neg(row))?,
        right: direction_label(row)?,
        top: direction_label(neg(col))?,
        bottom: direction_label(col)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(l: &str, r: &str, t: &str, b: &str) -> Markers {
        Markers { left: l.into(), right: r.into(), top: t.into(), bottom: b.into() }
    }

    #[test]
    fn the_standard_planes_get_the_letters_a_reader_expects() {
        // Axial: rows run to the patient's left, columns to posterior (seen from the feet).
        assert_eq!(markers([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), Some(m("R", "L", "A", "P")));
        // Coronal: rows to the left, columns downwards (feet).
        assert_eq!(markers([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]), Some(m("R", "L", "H", "F")));
        // Sagittal: rows to posterior, columns to the feet.
        assert_eq!(markers([0.0, 1.0, 0.0, 0.0, 0.0, -1.0]), Some(m("A", "P", "H", "F")));
    }

    #[test]
    fn a_slight_tilt_keeps_one_letter_and_a_45_degree_oblique_gets_two_strongest_first() {
        let (c, s) = (5f64.to_radians().cos(), 5f64.to_radians().sin());
        assert_eq!(markers([c, s, 0.0, -s, c, 0.0]), Some(m("R", "L", "A", "P")));
        let h = std::f64::consts::FRAC_1_SQRT_2;
        let oblique = markers([h, 0.0, -h * 1.01, 0.0, 1.0, 0.0]).unwrap();
        assert_eq!((oblique.right.as_str(), oblique.left.as_str()), ("FL", "HR"));
    }

    #[test]
    fn a_degenerate_orientation_has_no_markers() {
        assert_eq!(markers([0.0; 6]), None);
        assert_eq!(markers([1.0, 0.0, 0.0, f64::NAN, 0.0, 0.0]), None);
    }
}
