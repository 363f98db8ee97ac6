//! Object-tracking (T4) items: 3–6 frames in which a marked object must be followed to the last
//! frame. Three kinds of sequence:
//! - a scene in motion (a cine loop or follow-up series cut from a real image or a phantom
//!   slice): drift, breathing/cardiac-like periodic motion, a smooth non-rigid deformation that
//!   changes from frame to frame, the object itself growing or shrinking and turning, contrast
//!   washing in or out (globally and locally), a band or another structure passing over the
//!   object, noise;
//! - consecutive slices through a real volume with a 3D blob (a lesion) inserted, whose
//!   cross-section changes from slice to slice;
//! - consecutive slices through a phantom organ.
//!
//! Every box is the object's true extent in its frame: the object is a mask in scene (or volume)
//! coordinates, and each frame's box bounds the pixels whose source point lies in the mask, so
//! the answer follows exactly what the rendering did. `Rendering::Second` renders with another
//! pipeline: cubic or nearest-neighbour resampling, a deformation field of moving Gaussian bumps
//! instead of value noise, jerky motion with a sharper periodic waveform, window changes instead
//! of gain changes, and Rician or speckle noise.

use std::f32::consts::TAU;

use crate::grounding::geometry::BBox;
use crate::grounding::phantom::{Noise3, Phantom, Plane};
use crate::grounding::rng::Rng;
use crate::grounding::sources::VolumeSource;
use crate::grounding::synth::{Elastic, Rendering, Synth, SynthItem, contrast_sign, photometric};
use crate::grounding::task::Task;
use crate::registration::Transform;
use crate::study::gray::GrayImage;

pub fn tracking_item(synth: &Synth, rng: &mut Rng) -> Option<SynthItem> {
    tracking_item_of(synth, rng, None)
}

/// The kinds of tracking sequence (for reports by kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackingKind {
    /// A scene in motion with a lesion-like object inserted.
    MotionLesion,
    /// A scene in motion, the object a patch of its own anatomy.
    MotionAnatomy,
    /// Slices through a real volume with a 3D lesion inserted.
    RealSlices,
    /// Slices through a phantom organ.
    PhantomSlices,
}

impl TrackingKind {
    pub fn parse(s: &str) -> Option<TrackingKind> {
        match s {
            "motion-lesion" => Some(TrackingKind::MotionLesion),
            "motion-anatomy" => Some(TrackingKind::MotionAnatomy),
            "real-slices" => Some(TrackingKind::RealSlices),
            "phantom-slices" => Some(TrackingKind::PhantomSlices),
            _ => None,
        }
    }
}

/// One tracking item of `kind` (`None`: at random); `None` when this draw is unusable.
pub fn tracking_item_of(synth: &Synth, rng: &mut Rng, kind: Option<TrackingKind>) -> Option<SynthItem> {
    let frames = rng.int(3, 6) as usize;
    let kind = kind.unwrap_or_else(|| {
        let pick = rng.f32();
        let (real, phantom) = if synth.volumes.is_empty() { (0.0, 0.25) } else { (0.3, 0.42) };
        if pick < real {
            TrackingKind::RealSlices
        } else if pick < phantom {
            TrackingKind::PhantomSlices
        } else if rng.chance(0.5) {
            TrackingKind::MotionLesion
        } else {
            TrackingKind::MotionAnatomy
        }
    });
    match kind {
        TrackingKind::RealSlices => {
            let vol = synth.volumes.get(rng.index(synth.volumes.len()))?;
            tracking_real_volume(synth, vol, rng, frames)
        }
        TrackingKind::PhantomSlices => tracking_volume(synth, rng, frames),
        TrackingKind::MotionLesion => tracking_motion(synth, rng, frames, true),
        TrackingKind::MotionAnatomy => tracking_motion(synth, rng, frames, false),
    }
}

// ----- sampling and noise ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Interp {
    Linear,
    Cubic,
    Nearest,
}

fn catmull_rom(p: [f32; 4], t: f32) -> f32 {
    let (a, b, c, d) = (p[0], p[1], p[2], p[3]);
    b + 0.5 * t * (c - a + t * (2.0 * a - 5.0 * b + 4.0 * c - d + t * (3.0 * (b - c) + d - a)))
}

/// A sample at pixel-centre coordinates; `None` outside the image.
fn sample(img: &GrayImage, x: f32, y: f32, interp: Interp) -> Option<f32> {
    if x < -0.5 || y < -0.5 || x > img.width as f32 - 0.5 || y > img.height as f32 - 0.5 {
        return None;
    }
    Some(match interp {
        Interp::Linear => img.sample(x, y),
        Interp::Nearest => img.get_clamped(x.round() as isize, y.round() as isize),
        Interp::Cubic => {
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let (xi, yi) = (x0 as isize, y0 as isize);
            let mut rows = [0.0f32; 4];
            for (k, row) in rows.iter_mut().enumerate() {
                let yy = yi + k as isize - 1;
                let p = [-1isize, 0, 1, 2].map(|d| img.get_clamped(xi + d, yy));
                *row = catmull_rom(p, fx);
            }
            catmull_rom(rows, fy).clamp(0.0, 1.0)
        }
    })
}

/// Acquisition noise of the second pipeline: Rician (magnitude MR) or multiplicative speckle
/// (ultrasound), with an occasional light blur first.
fn second_noise(rng: &mut Rng, img: &GrayImage) -> GrayImage {
    let img = if rng.chance(0.3) { img.blur(rng.range(0.4, 1.0)) } else { img.clone() };
    let sigma = rng.range(0.005, 0.04);
    let speckle = rng.chance(0.4);
    let mut n = rng.fork(0x0de5);
    img.map(|v| {
        if speckle {
            (v * (1.0 + 2.0 * sigma * n.normal())).clamp(0.0, 1.0)
        } else {
            let (a, b) = (v + sigma * n.normal(), sigma * n.normal());
            (a * a + b * b).sqrt().clamp(0.0, 1.0)
        }
    })
}

fn degrade(rng: &mut Rng, img: &GrayImage, rendering: Rendering, strength: f32) -> GrayImage {
    match rendering {
        Rendering::Train => photometric(rng, img, strength),
        Rendering::Second => second_noise(rng, img),
    }
}

/// Bounds (pixel edges) of a frame's object pixels, grown pixel by pixel.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    x1: usize,
    y1: usize,
    x2: usize,
    y2: usize,
    count: usize,
}

impl Bounds {
    fn new() -> Self {
        Bounds { x1: usize::MAX, y1: usize::MAX, x2: 0, y2: 0, count: 0 }
    }

    fn add(&mut self, x: usize, y: usize) {
        self.x1 = self.x1.min(x);
        self.y1 = self.y1.min(y);
        self.x2 = self.x2.max(x + 1);
        self.y2 = self.y2.max(y + 1);
        self.count += 1;
    }

    fn bbox(&self) -> Option<BBox> {
        (self.count > 0).then(|| BBox::new(self.x1 as f32, self.y1 as f32, self.x2 as f32, self.y2 as f32))
    }
}

/// An object box fit to be tracked: inside the frame with a margin, not tiny, not huge.
fn usable(b: &BBox, size: usize) -> bool {
    let s = size as f32;
    b.x1 >= 2.0
        && b.y1 >= 2.0
        && b.x2 <= s - 2.0
        && b.y2 <= s - 2.0
        && b.width().min(b.height()) >= 10.0
        && b.width().max(b.height()) <= 170.0
}

// ----- shapes ---------------------------------------------------------------------------------

/// A soft irregular 2D shape around the origin: weight 1 inside, 0 outside, feathered.
#[derive(Clone, Debug)]
struct Shape {
    rx: f32,
    ry: f32,
    angle: (f32, f32),
    harmonics: Vec<(f32, f32)>,
    edge: f32,
}

impl Shape {
    fn random(rng: &mut Rng, rx: f32, ry: f32, wobble: f32) -> Shape {
        let harmonics = (2..6).map(|k| (rng.range(0.0, wobble) / k as f32 * 2.0, rng.range(0.0, TAU))).collect();
        let a = rng.range(0.0, std::f32::consts::PI);
        Shape { rx, ry, angle: a.sin_cos(), harmonics, edge: rng.range(0.8, 2.5) }
    }

    /// Weight at offset (dx, dy) with the radii scaled by `k` and the outline's harmonics
    /// turned by `twist` radians.
    fn weight(&self, dx: f32, dy: f32, k: f32, twist: f32) -> f32 {
        if k <= 0.0 {
            return 0.0;
        }
        let (s, c) = self.angle;
        let u = (c * dx + s * dy) / (self.rx * k);
        let v = (-s * dx + c * dy) / (self.ry * k);
        let d = (u * u + v * v).sqrt();
        let theta = v.atan2(u);
        let r = 1.0 + self.harmonics.iter().enumerate().map(|(i, (a, p))| a * ((i + 2) as f32 * theta + p + twist).cos()).sum::<f32>();
        // Feather over `edge` pixels (the radial scale in pixels is about the mean radius).
        let scale = 0.5 * (self.rx + self.ry) * k;
        (((r - d) * scale) / self.edge + 0.5).clamp(0.0, 1.0)
    }
}

// ----- motion ---------------------------------------------------------------------------------

/// A smooth non-rigid displacement field that changes over time.
enum Field {
    Noise { x: Noise3, y: Noise3, amp: f32, freq: f32, tfreq: f32 },
    Bumps(Vec<Bump>),
}

struct Bump {
    cx: f32,
    cy: f32,
    sigma: f32,
    dx: f32,
    dy: f32,
    omega: f32,
    phase: f32,
}

impl Field {
    fn random(rng: &mut Rng, rendering: Rendering, size: f32, amp: f32) -> Field {
        match rendering {
            Rendering::Train => Field::Noise {
                x: Noise3::new(rng.next_u64()),
                y: Noise3::new(rng.next_u64()),
                amp: rng.range(0.0, amp),
                freq: rng.range(0.006, 0.02),
                tfreq: rng.range(0.15, 0.5),
            },
            Rendering::Second => Field::Bumps(
                (0..rng.int(3, 6))
                    .map(|_| {
                        let a = rng.range(0.0, amp) * 1.4;
                        let dir = rng.range(0.0, TAU);
                        Bump {
                            cx: rng.range(0.0, size),
                            cy: rng.range(0.0, size),
                            sigma: rng.range(30.0, 90.0),
                            dx: a * dir.cos(),
                            dy: a * dir.sin(),
                            omega: rng.range(0.5, 2.0),
                            phase: rng.range(0.0, TAU),
                        }
                    })
                    .collect(),
            ),
        }
    }

    fn displace(&self, x: f32, y: f32, t: f32) -> (f32, f32) {
        match self {
            Field::Noise { x: nx, y: ny, amp, freq, tfreq } => {
                let (fx, fy, ft) = (x * freq, y * freq, t * tfreq);
                (amp * nx.value(fx, fy, ft), amp * ny.value(fx, fy, ft + 7.3))
            }
            Field::Bumps(bumps) => bumps.iter().fold((0.0, 0.0), |(sx, sy), b| {
                let d2 = (x - b.cx).powi(2) + (y - b.cy).powi(2);
                let w = (-d2 / (2.0 * b.sigma * b.sigma)).exp() * (b.omega * t + b.phase).sin();
                (sx + w * b.dx, sy + w * b.dy)
            }),
        }
    }
}

/// The whole scene's motion: per-frame similarity (drift, periodic breathing/cardiac motion,
/// turning, zoom) and a non-rigid field; plus the object's own growth and turning.
struct Motion {
    /// scene pixel ← frame pixel (before the non-rigid field), one per frame.
    globals: Vec<Transform>,
    field: Field,
    /// Train: a small independent jitter per frame on top of the smooth field.
    jitter: Vec<Elastic>,
    /// Object centre and reach in scene pixels, growth and turn per frame.
    object: (f32, f32, f32),
    growth: Vec<f32>,
    turn: Vec<f32>,
}

impl Motion {
    fn random(rng: &mut Rng, rendering: Rendering, size: usize, frames: usize, object: (f32, f32, f32)) -> Motion {
        let s = size as f64;
        let centre = ((s - 1.0) / 2.0, (s - 1.0) / 2.0);
        let second = rendering == Rendering::Second;
        // Drift: steady (Train) or a random walk (Second).
        let (mut vx, mut vy) = (rng.range(-6.0, 6.0), rng.range(-6.0, 6.0));
        let amp = if rng.chance(0.7) { rng.range(0.0, if second { 14.0 } else { 12.0 }) } else { 0.0 };
        let dir = rng.range(0.0, TAU);
        let period = if second { rng.range(2.0, 5.0) } else { rng.range(2.5, 8.0) };
        let phase = rng.range(0.0, TAU);
        let breathe_scale = rng.range(0.0, 0.04);
        let spin = rng.range(-2.0, 2.0) * if second { 2.0 } else { 1.0 };
        let zoom = rng.range(-0.01, 0.01) * if second { 3.0 } else { 1.0 };
        let wave = |t: f32| {
            let s = (TAU * t / period + phase).sin();
            // Second: a sharper waveform (a quick inspiration, a long pause).
            if second { s.signum() * s.abs().sqrt() } else { s }
        };
        let (mut px, mut py) = (0.0f32, 0.0f32);
        let mut globals = Vec::with_capacity(frames);
        for t in 0..frames {
            let tf = t as f32;
            if t > 0 {
                if second {
                    vx += 3.0 * rng.normal();
                    vy += 3.0 * rng.normal();
                }
                px += vx + rng.range(-2.0, 2.0);
                py += vy + rng.range(-2.0, 2.0);
            }
            let w = wave(tf);
            let tx = px + amp * w * dir.cos();
            let ty = py + amp * w * dir.sin();
            let angle = (spin * tf + rng.range(-0.5, 0.5)).to_radians();
            let scale = (1.0 + zoom * tf) * (1.0 + breathe_scale * w);
            globals.push(Transform::similarity(angle as f64, scale as f64, centre, tx as f64, ty as f64));
        }
        let field_amp = if rng.chance(0.8) { 10.0 } else { 3.0 };
        let field = Field::random(rng, rendering, size as f32, field_amp);
        // The object grows or shrinks and turns, steadily (Train) or with an uneven pace (Second).
        let total_growth = if rng.chance(0.7) { rng.range(-0.3, 0.4) } else { 0.0 };
        let total_turn = if rng.chance(0.6) { rng.range(-25.0f32, 25.0).to_radians() } else { 0.0 };
        let last = (frames - 1).max(1) as f32;
        let pace: Vec<f32> = (0..frames).map(|t| if second { (t as f32 / last).powf(1.8) } else { t as f32 / last }).collect();
        let jitter = if second { Vec::new() } else { (0..frames).map(|_| Elastic::random(rng, 2.0)).collect() };
        Motion {
            globals,
            field,
            jitter,
            object,
            growth: pace.iter().map(|p| total_growth * p).collect(),
            turn: pace.iter().map(|p| total_turn * p).collect(),
        }
    }

    /// Scene point (in scene pixels, without the margin) shown at frame pixel (x, y) of frame `t`.
    fn source(&self, t: usize, x: f32, y: f32) -> (f32, f32) {
        let (mut dx, mut dy) = self.field.displace(x, y, t as f32);
        if let Some(e) = self.jitter.get(t) {
            let (jx, jy) = e.displace(x, y);
            (dx, dy) = (dx + jx, dy + jy);
        }
        let (gx, gy) = self.globals[t].apply((x + dx) as f64, (y + dy) as f64);
        let (gx, gy) = (gx as f32, gy as f32);
        // The object's own deformation: sample nearer its centre (growth) and turned back.
        let (cx, cy, sigma) = self.object;
        let (ox, oy) = (gx - cx, gy - cy);
        let w = (-(ox * ox + oy * oy) / (2.0 * sigma * sigma)).exp();
        let g = 1.0 + self.growth[t] * w;
        let (s, c) = (-self.turn[t] * w).sin_cos();
        ((c * ox - s * oy) / g + cx, (s * ox + c * oy) / g + cy)
    }
}

// ----- occluders ------------------------------------------------------------------------------

/// Something passing over the object in frame coordinates: a dark or bright band (a rib, a
/// probe shadow, bowel gas) or a disk (another structure), moving relative to the object.
struct Occluder {
    band: bool,
    normal: (f32, f32),
    offset0: f32,
    speed: f32,
    half_width: f32,
    level: f32,
    opacity: f32,
    /// Disk: position relative to the object's centre at frame 0, velocity, and radius.
    disk: (f32, f32, f32, f32),
    radius: f32,
}

impl Occluder {
    fn random(rng: &mut Rng, object: &BBox, frames: usize) -> Occluder {
        let side = object.width().min(object.height());
        let a = rng.range(0.0, TAU);
        let speed = rng.range(3.0, 12.0) * rng.sign();
        // Crossing the object's centre at some frame.
        let cross = rng.range(0.0, (frames - 1) as f32);
        let r = side * rng.range(0.2, 0.45);
        let (dvx, dvy) = (speed * a.cos(), speed * a.sin());
        Occluder {
            band: rng.chance(0.6),
            normal: (a.cos(), a.sin()),
            offset0: -speed * cross + rng.range(-0.3, 0.3) * side,
            speed,
            half_width: side * rng.range(0.1, 0.25),
            level: if rng.chance(0.6) { rng.range(0.0, 0.1) } else { rng.range(0.85, 1.0) },
            opacity: rng.range(0.6, 1.0),
            disk: (-dvx * cross + rng.range(-0.3, 0.3) * side, -dvy * cross + rng.range(-0.3, 0.3) * side, dvx, dvy),
            radius: r,
        }
    }

    /// Opacity at frame pixel (x, y) of frame `t`, with the object's centre there at `c`.
    fn alpha(&self, t: usize, x: f32, y: f32, c: (f32, f32)) -> f32 {
        let (dx, dy) = (x + 0.5 - c.0, y + 0.5 - c.1);
        let d = if self.band {
            let off = self.offset0 + self.speed * t as f32;
            (dx * self.normal.0 + dy * self.normal.1 - off).abs() - self.half_width
        } else {
            let (px, py, vx, vy) = self.disk;
            ((dx - px - vx * t as f32).powi(2) + (dy - py - vy * t as f32).powi(2)).sqrt() - self.radius
        };
        self.opacity * (0.5 - d / 1.5).clamp(0.0, 1.0)
    }
}

// ----- scene in motion ------------------------------------------------------------------------

/// Frames of a moving, deforming scene (a cine loop or follow-up series).
fn tracking_motion(synth: &Synth, rng: &mut Rng, frames: usize, inserted: bool) -> Option<SynthItem> {
    let size = synth.size;
    let rendering = synth.rendering;
    let second = rendering == Rendering::Second;
    let margin = 64usize;
    let big = synth.view(rng, size + 2 * margin);
    let m = margin as f32;
    let s = size as f32;
    // The object, in scene pixels (without the margin): an inserted lesion-like blob or a
    // patch of the anatomy itself (an elliptic region of the scene).
    let (cx, cy) = (rng.range(0.22 * s, 0.78 * s), rng.range(0.22 * s, 0.78 * s));
    let (rx, ry) = (rng.log_range(7.0, 45.0), rng.log_range(7.0, 45.0));
    let (rx, ry) = (rx.clamp(0.5 * ry, 2.0 * ry), ry);
    let shape = Shape::random(rng, rx, ry, if inserted { 0.3 } else { 0.0 });
    let local = big.sample(cx + m, cy + m);
    if !inserted {
        // A patch of anatomy needs texture to be trackable at all.
        let r = rx.max(ry);
        let crop = big.crop((cx + m - r) as isize, (cy + m - r) as isize, (2.0 * r) as usize, (2.0 * r) as usize, 0.0);
        let (mean, std) = crop.mean_std();
        if std < 0.06 || mean < 0.05 {
            return None;
        }
    }
    let contrast = rng.range(0.12, 0.45) * contrast_sign(rng, local);
    let texture = Noise3::new(rng.next_u64());
    let (tex_freq, tex_amp) = (rng.range(0.05, 0.25), rng.range(0.0, 0.4));
    // Contrast wash-in/out of the object (or of the anatomy under it) over the sequence.
    let wash = if rng.chance(0.6) { rng.range(-0.7, 0.9) } else { 0.0 };
    let enhance = if !inserted && rng.chance(0.4) { rng.range(-0.2, 0.2) } else { 0.0 };
    let motion = Motion::random(rng, rendering, size, frames, (cx, cy, 1.3 * rx.max(ry) + 6.0));
    // Global intensity change (gain/offset drift, or a window change) and a local bias field
    // that drifts over time.
    let gain = rng.range(-0.3, 0.3);
    let offset = rng.range(-0.1, 0.1);
    let bias = Noise3::new(rng.next_u64());
    let (bias_amp, bias_freq) = (if rng.chance(0.6) { rng.range(0.0, 0.25) } else { 0.0 }, rng.range(0.004, 0.015));
    let interp = if second { if rng.chance(0.5) { Interp::Cubic } else { Interp::Nearest } } else { Interp::Linear };
    let last = (frames - 1).max(1) as f32;
    let mut images = Vec::with_capacity(frames);
    let mut boxes = Vec::with_capacity(frames);
    let mut masks = Vec::with_capacity(frames);
    for t in 0..frames {
        let p = t as f32 / last;
        let c_t = contrast * (1.0 + wash * p);
        let mut bounds = Bounds::new();
        let mut mask = vec![false; size * size];
        let mut img = GrayImage::new(size, size);
        for y in 0..size {
            for x in 0..size {
                let (sx, sy) = motion.source(t, x as f32, y as f32);
                let base = sample(&big, sx + m, sy + m, interp).unwrap_or(0.0);
                let w = shape.weight(sx - cx, sy - cy, 1.0, 0.0);
                let v = if w > 0.0 {
                    if inserted { base + w * c_t * (1.0 + tex_amp * texture.value(sx * tex_freq, sy * tex_freq, 0.0)) } else { base }
                } else {
                    base
                };
                // Local wash-in over the anatomy: a smooth bump, not the mask's outline.
                let v = if enhance != 0.0 {
                    let d2 = ((sx - cx) / rx).powi(2) + ((sy - cy) / ry).powi(2);
                    v + enhance * p * (-0.5 * d2).exp()
                } else {
                    v
                };
                let b = 1.0 + bias_amp * bias.value(x as f32 * bias_freq, y as f32 * bias_freq, 0.35 * t as f32);
                let v = if second {
                    // A window change: level and width drift.
                    let (lo, hi) = (offset * p, 1.0 + gain * p);
                    ((v * b - lo) / (hi - lo).max(0.3)).clamp(0.0, 1.0)
                } else {
                    ((v * b) * (1.0 + gain * p) + offset * p).clamp(0.0, 1.0)
                };
                img.set(x, y, v);
                if w > 0.5 {
                    bounds.add(x, y);
                    mask[y * size + x] = true;
                }
            }
        }
        let b = bounds.bbox()?;
        if !usable(&b, size) || bounds.count < 60 {
            return None;
        }
        boxes.push(b);
        masks.push(mask);
        images.push(img);
    }
    // Partial occlusion: never more than half of the object in any frame.
    if rng.chance(0.35) {
        let occ = Occluder::random(rng, &boxes[0], frames);
        for t in 0..frames {
            let c = boxes[t].centre();
            let (mut covered, mut total) = (0usize, 0usize);
            let img = &mut images[t];
            for y in 0..size {
                for x in 0..size {
                    let a = occ.alpha(t, x as f32, y as f32, c);
                    if masks[t][y * size + x] {
                        total += 1;
                        covered += (a > 0.5) as usize;
                    }
                    if a > 0.0 {
                        let v = img.get(x, y);
                        img.set(x, y, v + (occ.level - v) * a);
                    }
                }
            }
            if covered * 2 > total {
                return None;
            }
        }
    }
    let strength = rng.range(0.3, 1.0);
    let images = images.iter().map(|img| degrade(rng, img, rendering, strength)).collect();
    Some(SynthItem { task: Task::ObjectTracking, images, reference: Some(boxes[0]), answer: *boxes.last()?, change_mask: None })
}

// ----- slices through a real volume -----------------------------------------------------------

/// Consecutive slices through a real volume with a 3D lesion inserted: its cross-section moves,
/// grows and shrinks from slice to slice.
fn tracking_real_volume(synth: &Synth, vol: &VolumeSource, rng: &mut Rng, frames: usize) -> Option<SynthItem> {
    let size = synth.size;
    let rendering = synth.rendering;
    let second = rendering == Rendering::Second;
    // Slicing axis: usually across the slices as acquired.
    let axis = if rng.chance(0.7) { 2 } else { rng.index(2) };
    let (ua, va) = match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let n = vol.dims;
    let sp = vol.spacing;
    let step = rng.int(1, 3) as f32;
    if (n[axis] as f32) < step * (frames as f32 + 2.0) + 2.0 || n[ua] < 16 || n[va] < 16 {
        return None;
    }
    // In-plane field of view (mm), square, mostly inside the volume.
    let (eu, ev) = (n[ua] as f32 * sp[ua], n[va] as f32 * sp[va]);
    let fov = eu.max(ev) * rng.range(0.55, 1.0);
    let u0 = rng.range(eu.min(fov) - fov, (eu - fov).max(0.0) + 1e-3);
    let v0 = rng.range(ev.min(fov) - fov, (ev - fov).max(0.0) + 1e-3);
    let (flip_u, flip_v) = (rng.chance(0.3), rng.chance(0.3));
    let mm_per_px = fov / size as f32;
    // Frame pixel → in-plane mm.
    let to_mm = |x: usize, y: usize| {
        let (xf, yf) = (if flip_u { size - 1 - x } else { x } as f32, if flip_v { size - 1 - y } else { y } as f32);
        (u0 + (xf + 0.5) * mm_per_px, v0 + (yf + 0.5) * mm_per_px)
    };
    // Slices: depths in voxels along `axis`.
    let dir = rng.sign();
    let span = step * (frames - 1) as f32;
    let first = if dir > 0.0 { rng.range(1.0, n[axis] as f32 - 2.0 - span) } else { rng.range(1.0 + span, n[axis] as f32 - 2.0) };
    let depths: Vec<f32> = (0..frames).map(|k| first + dir * step * k as f32).collect();
    let span_mm = span * sp[axis];
    // The lesion: centre on tissue, radii in mm; its depth extent covers every slice.
    let radius_px = rng.log_range(8.0, 40.0);
    let (ru, rv) = (radius_px * mm_per_px * rng.range(0.7, 1.4), radius_px * mm_per_px * rng.range(0.7, 1.4));
    let mid = 0.5 * (depths[0] + depths[frames - 1]) * sp[axis];
    let rw = (span_mm / 2.0 + sp[axis]) / rng.range(0.45, 0.9);
    let cw = mid + rng.range(-0.3, 0.3) * (rw - span_mm / 2.0).max(0.0);
    let voxel = |u_mm: f32, v_mm: f32, d: f32| -> f32 {
        let mut p = [0.0f32; 3];
        p[ua] = u_mm / sp[ua] - 0.5;
        p[va] = v_mm / sp[va] - 0.5;
        p[axis] = d;
        if second { vol.sample(p[0].round(), p[1].round(), p[2].round()) } else { vol.sample(p[0], p[1], p[2]) }
    };
    let (mut cu, mut cv) = (0.0, 0.0);
    let mut found = false;
    for _ in 0..30 {
        let (x, y) = (rng.range(0.2, 0.8) * size as f32, rng.range(0.2, 0.8) * size as f32);
        let (u, v) = to_mm(x as usize, y as usize);
        if voxel(u, v, depths[frames / 2]) > 0.15 {
            (cu, cv, found) = (u, v, true);
            break;
        }
    }
    if !found {
        return None;
    }
    // Tilted: the cross-section's centre moves with depth (mm per mm).
    let (tu, tv) = (rng.range(-0.6, 0.6), rng.range(-0.6, 0.6));
    let shape = Shape::random(rng, ru / mm_per_px, rv / mm_per_px, 0.25);
    let twist_rate = rng.range(-0.08, 0.08);
    let local = voxel(cu, cv, depths[frames / 2]);
    let contrast = rng.range(0.12, 0.45)
        * if local > 0.7 {
            -1.0
        } else if local < 0.25 {
            1.0
        } else {
            rng.sign()
        };
    let texture = Noise3::new(rng.next_u64());
    let (tex_freq, tex_amp) = (rng.range(0.05, 0.25), rng.range(0.0, 0.4));
    let mut images = Vec::with_capacity(frames);
    let mut boxes = Vec::with_capacity(frames);
    for &d in &depths {
        let w_mm = d * sp[axis];
        let dz = w_mm - cw;
        let k = (1.0 - (dz / rw).powi(2)).max(0.0).sqrt();
        if k < 0.3 {
            return None;
        }
        let (ccu, ccv) = (cu + tu * dz, cv + tv * dz);
        let mut bounds = Bounds::new();
        let mut img = GrayImage::new(size, size);
        for y in 0..size {
            for x in 0..size {
                let (u, v) = to_mm(x, y);
                let base = voxel(u, v, d);
                let (du, dv) = ((u - ccu) / mm_per_px, (v - ccv) / mm_per_px);
                let w = shape.weight(du, dv, k, twist_rate * dz);
                let val = if w > 0.0 {
                    base + w * contrast * (1.0 + tex_amp * texture.value(u / mm_per_px * tex_freq, v / mm_per_px * tex_freq, dz * 0.1))
                } else {
                    base
                };
                img.set(x, y, val.clamp(0.0, 1.0));
                if w > 0.5 {
                    bounds.add(x, y);
                }
            }
        }
        let b = bounds.bbox()?;
        if !usable(&b, size) || bounds.count < 60 {
            return None;
        }
        boxes.push(b);
        images.push(img);
    }
    let strength = rng.range(0.3, 0.8);
    let images = images.iter().map(|img| degrade(rng, img, rendering, strength)).collect();
    Some(SynthItem { task: Task::ObjectTracking, images, reference: Some(boxes[0]), answer: *boxes.last()?, change_mask: None })
}

// ----- slices through a phantom ---------------------------------------------------------------

/// Consecutive parallel slices through a phantom organ.
fn tracking_volume(synth: &Synth, rng: &mut Rng, frames: usize) -> Option<SynthItem> {
    let size = synth.size;
    let extent = size as f32;
    let ph = Phantom::random(rng, extent);
    let organ = 1 + rng.index(ph.organs.len() - 1);
    let plane = Plane::ALL[rng.index(3)];
    let (lo, hi) = ph.organ_depth_range(organ, plane);
    let spacing = rng.range(2.0, 6.0) * rng.sign();
    let span = spacing.abs() * (frames - 1) as f32;
    if hi - lo < span * 0.9 {
        return None;
    }
    let start = if spacing > 0.0 { rng.range(lo + 0.05 * (hi - lo), hi - span) } else { rng.range(lo + span, hi - 0.05 * (hi - lo)) };
    let mut images = Vec::with_capacity(frames);
    let mut boxes = Vec::with_capacity(frames);
    for k in 0..frames {
        let depth = start + spacing * k as f32;
        let b = ph.organ_box(organ, plane, depth, size)?;
        if b.width() < 12.0 || b.height() < 12.0 || b.width() > 160.0 || b.height() > 160.0 {
            return None;
        }
        boxes.push(b);
        images.push(degrade(rng, &ph.slice(plane, depth, size), synth.rendering, 0.5));
    }
    Some(SynthItem { task: Task::ObjectTracking, images, reference: Some(boxes[0]), answer: *boxes.last()?, change_mask: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grounding::synth::SourcePool;

    fn check(synth: &Synth, seed: u64) {
        let mut rng = Rng::new(seed);
        for _ in 0..6 {
            let item = synth.item(Task::ObjectTracking, &mut rng);
            assert!((3..=6).contains(&item.images.len()));
            let r = item.reference.unwrap();
            assert!(usable(&r, synth.size) && usable(&item.answer, synth.size), "{r:?} {:?}", item.answer);
            assert!(item.images.iter().all(|i| i.width == synth.size && i.data.iter().all(|v| (0.0..=1.0).contains(v))));
        }
    }

    #[test]
    fn tracking_items_are_well_formed_in_both_renderings() {
        let mut synth = Synth::new(SourcePool::default(), 160);
        let raw: Vec<f32> = (0..40 * 40 * 24).map(|i| ((i % 40) as f32 * 0.3).sin().abs() + (i / 1600) as f32 * 0.01).collect();
        synth.volumes.push(std::sync::Arc::new(VolumeSource::new("v".into(), [40, 40, 24], [2.0, 2.0, 3.0], raw).unwrap()));
        check(&synth, 3);
        synth.rendering = Rendering::Second;
        check(&synth, 4);
    }

    #[test]
    fn classical_tracker_follows_moving_growing_lesions() {
        let synth = Synth::new(SourcePool::default(), 192);
        let mut rng = Rng::new(21);
        let mut hits = 0;
        for _ in 0..10 {
            let item = loop {
                if let Some(i) = tracking_item_of(&synth, &mut rng, Some(TrackingKind::MotionLesion)) {
                    break i;
                }
            };
            let found = crate::grounding::baseline::track(&item.images, item.reference.unwrap()).unwrap();
            hits += (found.bbox.iou(&item.answer) >= 0.5) as usize;
        }
        eprintln!("{hits}/10 tracked");
        assert!(hits >= 7, "{hits}/10");
    }

    /// Writes tracking items from the held-out images as MedSG JSON for `tandem eval medsg`:
    /// `TANDEM_T4_OUT=DIR TANDEM_T4_SEED=S TANDEM_T4_N=N TANDEM_T4_RENDERING=second
    /// cargo test --release --lib write_tracking_items -- --ignored`.
    #[test]
    #[ignore]
    fn write_tracking_items() {
        let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let out = std::path::PathBuf::from(env("TANDEM_T4_OUT", "/tmp/t4-items"));
        let seed: u64 = env("TANDEM_T4_SEED", "1").parse().unwrap();
        let count: usize = env("TANDEM_T4_N", "100").parse().unwrap();
        let dir = env("TANDEM_T4_IMAGES", "../shared/data/train-images/heudiconv");
        let sources = crate::grounding::sources::read_folder(std::path::Path::new(&dir), &[]).unwrap();
        let mut synth = Synth::new(sources.pool, 336);
        synth.volumes = sources.volumes;
        synth.rendering = Rendering::parse(&env("TANDEM_T4_RENDERING", "train")).unwrap();
        let kind = std::env::var("TANDEM_T4_KIND").ok().map(|k| TrackingKind::parse(&k).expect("kind"));
        let mut rng = Rng::new(seed);
        let mut items: Vec<(String, SynthItem)> = Vec::new();
        while items.len() < count {
            if let Some(item) = tracking_item_of(&synth, &mut rng, kind) {
                items.push((format!("T4/{:04}", items.len()), item));
            }
        }
        let path = crate::grounding::medsg::write_items(&out, "tracking", &items).unwrap();
        eprintln!("{} items ({} volumes) → {}", items.len(), synth.volumes.len(), path.display());
    }
}
