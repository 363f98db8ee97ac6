//! Procedural 3D phantoms (a textured body with organs, bones and lesions) sliced along any
//! axis: training data for multi-view and slice-tracking grounding where real volumes are thin.

use crate::grounding::geometry::BBox;
use crate::grounding::rng::Rng;
use crate::study::gray::GrayImage;

/// Smooth value noise in 3D, roughly in -1..1.
#[derive(Clone, Debug)]
pub struct Noise3 {
    seed: u64,
}

impl Noise3 {
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    fn lattice(&self, x: i32, y: i32, z: i32) -> f32 {
        let mut h = self.seed
            ^ (x as i64 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (y as i64 as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ (z as i64 as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
        h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 32;
        (h & 0xFFFF) as f32 / 32767.5 - 1.0
    }

    pub fn value(&self, x: f32, y: f32, z: f32) -> f32 {
        let (xf, yf, zf) = (x.floor(), y.floor(), z.floor());
        let (xi, yi, zi) = (xf as i32, yf as i32, zf as i32);
        let s = |t: f32| t * t * (3.0 - 2.0 * t);
        let (tx, ty, tz) = (s(x - xf), s(y - yf), s(z - zf));
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let mut c = [0.0f32; 8];
        for (k, v) in c.iter_mut().enumerate() {
            *v = self.lattice(xi + (k & 1) as i32, yi + ((k >> 1) & 1) as i32, zi + ((k >> 2) & 1) as i32);
        }
        let x00 = lerp(c[0], c[1], tx);
        let x10 = lerp(c[2], c[3], tx);
        let x01 = lerp(c[4], c[5], tx);
        let x11 = lerp(c[6], c[7], tx);
        lerp(lerp(x00, x10, ty), lerp(x01, x11, ty), tz)
    }

    /// Fractal sum of `octaves` octaves starting at spatial frequency `freq`.
    pub fn fractal(&self, x: f32, y: f32, z: f32, freq: f32, octaves: u32) -> f32 {
        let (mut f, mut amp, mut sum, mut norm) = (freq, 1.0, 0.0, 0.0);
        for o in 0..octaves {
            sum += amp * self.value(x * f + o as f32 * 17.3, y * f, z * f);
            norm += amp;
            f *= 2.0;
            amp *= 0.5;
        }
        sum / norm
    }
}

/// A rotated ellipsoid with its own intensity and texture.
#[derive(Clone, Debug)]
pub struct Organ {
    pub centre: [f32; 3],
    pub radii: [f32; 3],
    /// Rows are the ellipsoid's axes in world coordinates.
    pub axes: [[f32; 3]; 3],
    pub intensity: f32,
    pub texture_amp: f32,
    pub texture_freq: f32,
    /// Bright cortex of this thickness fraction (bone-like), 0 for none.
    pub shell: f32,
    /// Surface bumpiness amplitude (fraction of radius).
    pub bump: f32,
}

impl Organ {
    /// Normalized radial coordinate: < 1 inside.
    fn radial(&self, p: [f32; 3], noise: &Noise3) -> f32 {
        let d = [p[0] - self.centre[0], p[1] - self.centre[1], p[2] - self.centre[2]];
        let mut r2 = 0.0;
        for (axis, radius) in self.axes.iter().zip(self.radii) {
            let t = (axis[0] * d[0] + axis[1] * d[1] + axis[2] * d[2]) / radius;
            r2 += t * t;
        }
        let r = r2.sqrt();
        if self.bump > 0.0 && r < 1.6 {
            r * (1.0 + self.bump * noise.value(p[0] * 0.08 + self.centre[0], p[1] * 0.08, p[2] * 0.08))
        } else {
            r
        }
    }
}

/// Orientation of a slicing plane through the phantom volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Axial, Plane::Coronal, Plane::Sagittal];

    /// World point of in-plane coordinates (u, v) at depth `w` (all in 0..extent).
    pub fn world(self, u: f32, v: f32, w: f32) -> [f32; 3] {
        match self {
            Plane::Axial => [u, v, w],
            Plane::Coronal => [u, w, v],
            Plane::Sagittal => [w, u, v],
        }
    }

    /// In-plane coordinates (u, v) of a world point.
    pub fn in_plane(self, p: [f32; 3]) -> (f32, f32) {
        match self {
            Plane::Axial => (p[0], p[1]),
            Plane::Coronal => (p[0], p[2]),
            Plane::Sagittal => (p[1], p[2]),
        }
    }

    /// Depth coordinate of a world point for this plane.
    pub fn depth_of(self, p: [f32; 3]) -> f32 {
        match self {
            Plane::Axial => p[2],
            Plane::Coronal => p[1],
            Plane::Sagittal => p[0],
        }
    }
}

/// A synthetic body: organs listed back to front (later ones cover earlier ones).
#[derive(Clone, Debug)]
pub struct Phantom {
    pub extent: f32,
    pub organs: Vec<Organ>,
    pub background: f32,
    noise: Noise3,
}

/// A random rotation from three Euler angles, the middle one (the tilt) within ±`max_tilt` rad.
// 6.283 is a sampling bound, not τ: changing it would change every seeded phantom.
#[allow(clippy::approx_constant)]
pub(crate) fn random_axes(rng: &mut Rng, max_tilt: f32) -> [[f32; 3]; 3] {
    let (a, b, c) = (rng.range(0.0, 6.283), rng.range(-max_tilt, max_tilt), rng.range(0.0, 6.283));
    let (sa, ca) = a.sin_cos();
    let (sb, cb) = b.sin_cos();
    let (sc, cc) = c.sin_cos();
    [
        [ca * cc - sa * cb * sc, sa * cc + ca * cb * sc, sb * sc],
        [-ca * sc - sa * cb * cc, -sa * sc + ca * cb * cc, sb * cc],
        [sa * sb, -ca * sb, cb],
    ]
}

impl Phantom {
    /// A random body in a cube of side `extent` (arbitrary units ≈ pixels at full size).
    pub fn random(rng: &mut Rng, extent: f32) -> Self {
        let e = extent;
        let mut organs = Vec::new();
        let c = e / 2.0;
        let body = Organ {
            centre: [c + rng.range(-0.05, 0.05) * e, c + rng.range(-0.05, 0.05) * e, c],
            radii: [e * rng.range(0.36, 0.47), e * rng.range(0.28, 0.44), e * rng.range(0.55, 0.8)],
            axes: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            intensity: rng.range(0.35, 0.5),
            texture_amp: rng.range(0.02, 0.06),
            texture_freq: rng.range(0.03, 0.08),
            shell: rng.range(0.0, 0.04),
            bump: 0.03,
        };
        let body_radii = body.radii;
        let body_centre = body.centre;
        organs.push(body);
        let n = rng.int(6, 13) as usize;
        for _ in 0..n {
            let kind = rng.f32();
            let r = e * rng.log_range(0.04, 0.16);
            let radii = [r * rng.range(0.6, 1.5), r * rng.range(0.6, 1.5), r * rng.range(0.6, 2.2)];
            // Keep organs inside the body.
            let mut centre = [0.0; 3];
            for k in 0..3 {
                let room = (body_radii[k] * 0.8 - radii[k] * 0.5).max(1.0);
                centre[k] = body_centre[k] + rng.range(-room, room);
            }
            let (mut intensity, shell, texture_amp) = if kind < 0.2 {
                (rng.range(0.75, 0.95), rng.range(0.15, 0.35), 0.03) // bone
            } else if kind < 0.3 {
                (rng.range(0.02, 0.12), 0.0, 0.02) // air / fluid dark
            } else {
                (rng.range(0.15, 0.8), 0.0, rng.range(0.02, 0.12)) // soft tissue
            };
            // Every structure must stand out from the body it sits in.
            let body_level = organs[0].intensity;
            if (intensity - body_level).abs() < 0.12 {
                intensity = if intensity >= body_level {
                    (body_level + 0.12 + rng.range(0.0, 0.2)).min(0.95)
                } else {
                    (body_level - 0.12 - rng.range(0.0, 0.15)).max(0.02)
                };
            }
            organs.push(Organ {
                centre,
                radii,
                axes: random_axes(rng, 0.6),
                intensity,
                texture_amp,
                texture_freq: rng.range(0.04, 0.2),
                shell,
                bump: rng.range(0.0, 0.15),
            });
        }
        Phantom { extent, organs, background: rng.range(0.0, 0.06), noise: Noise3::new(rng.next_u64()) }
    }

    /// Index of the organ visible at `p` (None = background).
    pub fn visible_organ(&self, p: [f32; 3]) -> Option<usize> {
        (0..self.organs.len()).rev().find(|&i| self.organs[i].radial(p, &self.noise) < 1.0)
    }

    pub fn value(&self, p: [f32; 3]) -> f32 {
        match self.visible_organ(p) {
            None => self.background,
            Some(i) => self.shade(i, p),
        }
    }

    /// Intensity of organ `i` at `p` (which lies inside it).
    fn shade(&self, i: usize, p: [f32; 3]) -> f32 {
        let o = &self.organs[i];
        let r = o.radial(p, &self.noise);
        let base = if o.shell > 0.0 && r > 1.0 - o.shell {
            o.intensity
        } else if o.shell > 0.0 {
            o.intensity * 0.55
        } else {
            o.intensity
        };
        let tex = self.noise.fractal(p[0] + i as f32 * 31.0, p[1], p[2], o.texture_freq, 3);
        (base + o.texture_amp * tex * 2.0).clamp(0.0, 1.0)
    }

    /// Radius of a sphere around the organ's centre that contains all of it (bumps included).
    fn bound(&self, index: usize) -> f32 {
        let o = &self.organs[index];
        o.radii.iter().copied().fold(0.0, f32::max) * (1.0 + o.bump) * 1.05 + 1.0
    }

    /// Organs the plane cuts, with their in-plane centre and bound, back to front.
    fn cut_by(&self, plane: Plane, depth: f32) -> Vec<(usize, f32, f32, f32)> {
        (0..self.organs.len())
            .filter_map(|i| {
                let c = self.organs[i].centre;
                let r = self.bound(i);
                let d = plane.depth_of(c) - depth;
                if d.abs() >= r {
                    return None;
                }
                let (u, v) = plane.in_plane(c);
                Some((i, u, v, r * r - d * d))
            })
            .collect()
    }

    /// Like `visible_organ`, testing only organs whose bound contains in-plane point (u, v).
    fn visible_among(&self, cut: &[(usize, f32, f32, f32)], p: [f32; 3], u: f32, v: f32) -> Option<usize> {
        cut.iter()
            .rev()
            .find(|&&(i, cu, cv, r2)| (u - cu).powi(2) + (v - cv).powi(2) <= r2 && self.organs[i].radial(p, &self.noise) < 1.0)
            .map(|c| c.0)
    }

    fn value_among(&self, cut: &[(usize, f32, f32, f32)], p: [f32; 3], u: f32, v: f32) -> f32 {
        match self.visible_among(cut, p, u, v) {
            None => self.background,
            Some(i) => self.shade(i, p),
        }
    }

    /// Renders a `size` × `size` slice covering the whole extent at `depth`, sampling at
    /// half resolution (organs and their textures are smooth at that scale) and upsampling.
    pub fn slice(&self, plane: Plane, depth: f32, size: usize) -> GrayImage {
        if size >= 96 {
            return self.slice_exact(plane, depth, size.div_ceil(2)).resize(size, size);
        }
        self.slice_exact(plane, depth, size)
    }

    /// Renders every pixel of a `size` × `size` slice.
    pub fn slice_exact(&self, plane: Plane, depth: f32, size: usize) -> GrayImage {
        let step = self.extent / size as f32;
        let cut = self.cut_by(plane, depth);
        GrayImage::from_fn(size, size, |x, y| {
            let (u, v) = ((x as f32 + 0.5) * step, (y as f32 + 0.5) * step);
            self.value_among(&cut, plane.world(u, v, depth), u, v)
        })
    }

    /// Box (in slice pixels) of where organ `index` is visible in the slice, if anywhere.
    pub fn organ_box(&self, index: usize, plane: Plane, depth: f32, size: usize) -> Option<BBox> {
        let step = self.extent / size as f32;
        let cut = self.cut_by(plane, depth);
        let &(_, cu, cv, r2) = cut.iter().find(|c| c.0 == index)?;
        let r = r2.sqrt();
        // Only the organ's own bounding square can hold it.
        let to_px = |w: f32| ((w / step).floor().max(0.0) as usize).min(size);
        let (x0, x1) = (to_px(cu - r), (to_px(cu + r) + 1).min(size));
        let (y0, y1) = (to_px(cv - r), (to_px(cv + r) + 1).min(size));
        let (mut bx0, mut by0, mut bx1, mut by1) = (usize::MAX, usize::MAX, 0, 0);
        for y in y0..y1 {
            for x in x0..x1 {
                let (u, v) = ((x as f32 + 0.5) * step, (y as f32 + 0.5) * step);
                if self.visible_among(&cut, plane.world(u, v, depth), u, v) == Some(index) {
                    bx0 = bx0.min(x);
                    by0 = by0.min(y);
                    bx1 = bx1.max(x + 1);
                    by1 = by1.max(y + 1);
                }
            }
        }
        (bx0 != usize::MAX).then(|| BBox::new(bx0 as f32, by0 as f32, bx1 as f32, by1 as f32))
    }

    /// Range of depths along `plane`'s normal that organ `index` spans (bounding sphere).
    pub fn organ_depth_range(&self, index: usize, plane: Plane) -> (f32, f32) {
        let o = &self.organs[index];
        let c = plane.depth_of(o.centre);
        let r = o.radii.iter().copied().fold(0.0, f32::max);
        (c - r, c + r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantom_slices_show_their_organs() {
        let mut rng = Rng::new(3);
        let ph = Phantom::random(&mut rng, 128.0);
        let organ = 1;
        let depth = Plane::Axial.depth_of(ph.organs[organ].centre);
        let img = ph.slice(Plane::Axial, depth, 64);
        let (_, std) = img.mean_std();
        assert!(std > 0.02);
        // The organ's centre lies in the phantom; it may be covered by a later organ, but
        // the body (organ 0) is always visible somewhere in a central slice.
        assert!(ph.organ_box(0, Plane::Axial, 64.0, 64).is_some());
        // The culled renderer agrees with evaluating every organ at every pixel.
        let step = 128.0 / 64.0;
        for plane in Plane::ALL {
            let fast = ph.slice_exact(plane, depth, 64);
            let slow = GrayImage::from_fn(64, 64, |x, y| ph.value(plane.world((x as f32 + 0.5) * step, (y as f32 + 0.5) * step, depth)));
            assert_eq!(fast, slow, "{plane:?}");
        }
    }

    #[test]
    fn noise_is_deterministic_and_bounded() {
        let n = Noise3::new(9);
        for i in 0..200 {
            let v = n.fractal(i as f32 * 0.37, i as f32 * 0.11, 2.0, 0.3, 3);
            assert!((-1.0..=1.0).contains(&v));
            assert_eq!(v, Noise3::new(9).fractal(i as f32 * 0.37, i as f32 * 0.11, 2.0, 0.3, 3));
        }
    }
}
