//! `Transform`: a 2D similarity/affine map between the pixel spaces of two images.

use serde::{Deserialize, Serialize};

/// Maps pixel coordinates of one image ("moving", e.g. current) into another ("fixed",
/// e.g. prior): `fixed = M · [x, y, 1]`. Pixel centres are at integer coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    pub m: [[f64; 3]; 2],
}

impl Default for Transform {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Transform {
    pub const IDENTITY: Transform = Transform { m: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] };

    pub fn translation(dx: f64, dy: f64) -> Self {
        Transform { m: [[1.0, 0.0, dx], [0.0, 1.0, dy]] }
    }

    pub fn scale(sx: f64, sy: f64) -> Self {
        Transform { m: [[sx, 0.0, 0.0], [0.0, sy, 0.0]] }
    }

    /// Rotation by `angle_rad` and isotropic `scale` about `centre` (in moving coordinates),
    /// followed by a translation `(dx, dy)`.
    pub fn similarity(angle_rad: f64, scale: f64, centre: (f64, f64), dx: f64, dy: f64) -> Self {
        let (s, c) = angle_rad.sin_cos();
        let (a, b) = (scale * c, scale * s);
        let (cx, cy) = centre;
        // fixed = R·(p - c) + c + d
        Transform { m: [[a, -b, cx - a * cx + b * cy + dx], [b, a, cy - b * cx - a * cy + dy]] }
    }

    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let m = &self.m;
        (m[0][0] * x + m[0][1] * y + m[0][2], m[1][0] * x + m[1][1] * y + m[1][2])
    }

    /// `self ∘ other`: first `other`, then `self`.
    pub fn compose(&self, other: &Transform) -> Transform {
        let a = &self.m;
        let b = &other.m;
        let mut m = [[0.0; 3]; 2];
        for r in 0..2 {
            for c in 0..3 {
                m[r][c] = a[r][0] * b[0][c] + a[r][1] * b[1][c] + if c == 2 { a[r][2] } else { 0.0 };
            }
        }
        Transform { m }
    }

    /// The inverse map; `None` when the linear part is singular.
    pub fn inverse(&self) -> Option<Transform> {
        let m = &self.m;
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        let (a, b, c, d) = (m[1][1] / det, -m[0][1] / det, -m[1][0] / det, m[0][0] / det);
        let tx = -(a * m[0][2] + b * m[1][2]);
        let ty = -(c * m[0][2] + d * m[1][2]);
        Some(Transform { m: [[a, b, tx], [c, d, ty]] })
    }

    /// Mean scale factor of the linear part (sqrt of |det|).
    pub fn mean_scale(&self) -> f64 {
        let m = &self.m;
        (m[0][0] * m[1][1] - m[0][1] * m[1][0]).abs().sqrt()
    }

    /// Rotation angle of the linear part, radians.
    pub fn angle(&self) -> f64 {
        self.m[1][0].atan2(self.m[0][0])
    }

    /// Maps an axis-aligned box `[x1, y1, x2, y2]` (edges, not centres) and returns the
    /// axis-aligned bounds of its image.
    pub fn map_box(&self, b: [f64; 4]) -> [f64; 4] {
        let corners = [(b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])];
        let mut out = [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY];
        for (x, y) in corners {
            // Box edges sit half a pixel outside the centres they enclose.
            let (fx, fy) = self.apply(x - 0.5, y - 0.5);
            out[0] = out[0].min(fx + 0.5);
            out[1] = out[1].min(fy + 0.5);
            out[2] = out[2].max(fx + 0.5);
            out[3] = out[3].max(fy + 0.5);
        }
        out
    }

    pub fn is_identity(&self, tol: f64) -> bool {
        self.m.iter().flatten().zip(Self::IDENTITY.m.iter().flatten()).all(|(a, b)| (a - b).abs() <= tol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_round_trips() {
        let t = Transform::similarity(0.1, 1.05, (50.0, 40.0), 3.0, -7.0);
        let inv = t.inverse().unwrap();
        let (x, y) = t.apply(12.0, 34.0);
        let (bx, by) = inv.apply(x, y);
        assert!((bx - 12.0).abs() < 1e-9 && (by - 34.0).abs() < 1e-9);
        assert!(t.compose(&inv).is_identity(1e-9));
    }

    #[test]
    fn similarity_keeps_centre_fixed_without_translation() {
        let t = Transform::similarity(0.3, 1.2, (10.0, 20.0), 0.0, 0.0);
        let (x, y) = t.apply(10.0, 20.0);
        assert!((x - 10.0).abs() < 1e-9 && (y - 20.0).abs() < 1e-9);
        assert!((t.angle() - 0.3).abs() < 1e-9);
        assert!((t.mean_scale() - 1.2).abs() < 1e-9);
    }

    #[test]
    fn map_box_translates_edges() {
        let t = Transform::translation(5.0, -2.0);
        assert_eq!(t.map_box([10.0, 10.0, 20.0, 30.0]), [15.0, 8.0, 25.0, 28.0]);
    }
}
