//! Flicker, fade and subtraction in the current pane. On the GPU (`shaders/compare.wgsl`) they are
//! drawn from the two frames already uploaded for window/level, the prior sampled through the
//! registration transform at every current pixel; nothing is resampled on the CPU and a change of
//! window, fade, flicker phase or subtraction window only rewrites a uniform. Without a wgpu
//! renderer the same pictures are made on the CPU, in background jobs (`CpuWork`), and drawn as
//! textures over the current: the fallback, and what `tandem snapshot` does headless.
//!
//! Either way the comparison is on the current's pixel grid, so the current's boxes, drawn after,
//! stay on their pixels.

use std::num::NonZeroU64;
use std::sync::Arc;

use eframe::egui::{self, Color32};
use eframe::egui_wgpu::{self, wgpu};

use crate::registration::difference;
use crate::registration::transform::Transform;
use crate::study::gray::GrayImage;
use crate::study::{Frame, Window};
use crate::viewer::gpu::{DrawParams, ImageRenderer};

// ----- what is compared ------------------------------------------------------------------------

/// What a comparison picture was made from: the prior and current (pane generation, frame) and
/// the transform from current pixel centres to the prior's (its matrix bits). A result made for
/// another key is for images or a registration no longer shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CompareKey {
    pub prior: (u64, usize),
    pub current: (u64, usize),
    pub transform: [u64; 6],
    /// The registration's transform (else relative position).
    pub registered: bool,
}

impl CompareKey {
    pub fn new(prior: (u64, usize), current: (u64, usize), transform: &Transform, registered: bool) -> Self {
        let m = transform.m;
        let transform = [m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2]].map(f64::to_bits);
        CompareKey { prior, current, transform, registered }
    }
}

/// How the current's presentation maps grey values (a prior texture made for another one is
/// redrawn).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PresentKey {
    pub center: u32,
    pub width: u32,
    pub invert: bool,
    pub lut: bool,
}

impl PresentKey {
    pub fn new(window: Window, invert: bool, lut: bool) -> Self {
        PresentKey { center: window.center.to_bits(), width: window.width.to_bits(), invert, lut }
    }
}

/// The prior on the current's grid and current − prior there (grey values as `Frame::to_gray`
/// gives them; NaN where the prior does not reach), with the subtraction's automatic window.
pub struct Geometry {
    pub prior_on_current: GrayImage,
    pub difference: GrayImage,
    /// ± this is the automatic subtraction window (`difference::sampled_symmetric_window`).
    pub window: f32,
}

/// What a background comparison job made.
pub enum CpuWork {
    /// The subtraction's automatic window only (the GPU path needs nothing else).
    Window { key: CompareKey, window: f32 },
    /// Everything the CPU fallback draws from.
    Geometry { key: CompareKey, geometry: Arc<Geometry> },
    /// The prior drawn as the current is shown (flicker, fade).
    Prior { key: CompareKey, present: PresentKey, image: egui::ColorImage },
    /// The difference in the diverging colour map at ± `window`.
    Difference { key: CompareKey, window: u32, image: egui::ColorImage },
    /// The job stopped (a panic); nothing to show for `key`.
    Failed { key: CompareKey, geometry: bool },
}

impl CpuWork {
    pub fn key(&self) -> CompareKey {
        match self {
            CpuWork::Window { key, .. }
            | CpuWork::Geometry { key, .. }
            | CpuWork::Prior { key, .. }
            | CpuWork::Difference { key, .. }
            | CpuWork::Failed { key, .. } => *key,
        }
    }

    /// True for the first stage (window or geometry), false for a presentation.
    pub fn is_geometry(&self) -> bool {
        match self {
            CpuWork::Window { .. } | CpuWork::Geometry { .. } => true,
            CpuWork::Prior { .. } | CpuWork::Difference { .. } => false,
            CpuWork::Failed { geometry, .. } => *geometry,
        }
    }

    /// Runs `work` for `key`, turning a panic into `Failed`, so that the app's bookkeeping of the
    /// job in flight always ends.
    pub fn run(key: CompareKey, geometry: bool, work: impl FnOnce() -> CpuWork) -> CpuWork {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or(CpuWork::Failed { key, geometry })
    }
}

/// The subtraction's automatic window on the frames themselves (cheap: a 512² grid at most).
pub fn auto_window(prior: &Frame, current: &Frame, prior_from_current: &Transform) -> f32 {
    difference::sampled_symmetric_window(prior, current, prior_from_current)
}

/// The CPU fallback's first stage: the prior resampled onto the current's grid, the difference,
/// and the automatic window (the same as the GPU path's).
pub fn geometry(prior: &Frame, current: &Frame, prior_from_current: &Transform) -> Geometry {
    let prior_on_current = difference::prior_on_current(&prior.to_gray(), current.width, current.height, Some(prior_from_current));
    let difference = difference::minus(&current.to_gray(), &prior_on_current);
    Geometry { prior_on_current, difference, window: auto_window(prior, current, prior_from_current) }
}

/// The sign `Frame::to_gray` gives a frame's grey values (−1 for MONOCHROME1).
fn gray_sign(frame: &Frame) -> f32 {
    if frame.invert && !frame.is_color() { -1.0 } else { 1.0 }
}

/// The resampled prior (`to_gray` values) drawn as the current pane draws the current: back in
/// the current's stored values, through its window or VOI LUT, inverted as it is; black where
/// the prior does not reach. `compare.wgsl`'s `present_prior`, on the CPU.
pub fn present_prior(prior_on_current: &GrayImage, current: &Frame, window: Window, use_lut: bool, user_invert: bool) -> egui::ColorImage {
    let colour = current.is_color();
    let sign = gray_sign(current);
    let invert = user_invert ^ current.invert;
    let lut = current.voi_lut.as_ref().filter(|_| use_lut && !colour);
    let (lo, scale) = (window.lower(), 1.0 / window.width.max(1e-6));
    let pixels = prior_on_current
        .data
        .iter()
        .map(|&g| {
            if g.is_nan() {
                return Color32::BLACK;
            }
            let t = match (colour, lut) {
                (true, _) => (g - lo) * scale,
                (false, Some(l)) => {
                    let i = ((g * sign - l.first_mapped).round() as i64).clamp(0, l.data.len() as i64 - 1) as usize;
                    l.data[i] / l.max_output.max(1.0)
                }
                (false, None) => (g * sign - lo) * scale,
            };
            let v = (t.clamp(0.0, 1.0) * 255.0) as u8;
            Color32::from_gray(if invert { 255 - v } else { v })
        })
        .collect();
    egui::ColorImage::new([prior_on_current.width, prior_on_current.height], pixels)
}

/// Blue (current darker) through black (no change) to orange (current brighter), ±`window`;
/// dark grey where the prior does not reach.
pub fn diverging_image(difference: &GrayImage, window: f32) -> egui::ColorImage {
    let pixels = difference
        .data
        .iter()
        .map(|&d| {
            // The core's map, shared with `tandem snapshot --mode subtract` and compare.wgsl.
            let [r, g, b] = crate::snapshot::diverging_rgb(d, window);
            Color32::from_rgb(r, g, b)
        })
        .collect();
    egui::ColorImage::new([difference.width, difference.height], pixels)
}

// ----- the GPU path ----------------------------------------------------------------------------

/// What the current pane composites on the GPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GpuKind {
    /// The prior over the current at this opacity (flicker alternates 1 and 0; fade is 1 − fade).
    Blend { opacity: f32 },
    /// current − prior in the diverging map at ± `window`.
    Subtract { window: f32 },
}

/// The comparison a pane draws instead of its plain image on the GPU path (plain data: the app
/// sets it on the current pane every frame).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuCompare {
    /// The texture slot (`PaneId`) of the prior's pane.
    pub prior_pane: usize,
    pub kind: GpuKind,
    /// Current pixel centres → the prior's.
    pub prior_from_current: Transform,
    /// `to_gray`'s sign of the prior (−1 for MONOCHROME1), and whether it is colour.
    pub prior_sign: f32,
    pub prior_colour: bool,
}

impl GpuCompare {
    pub fn new(prior_pane: usize, prior: &Frame, prior_from_current: Transform, kind: GpuKind) -> Self {
        GpuCompare { prior_pane, kind, prior_from_current, prior_sign: gray_sign(prior), prior_colour: prior.is_color() }
    }

    /// The uniform for drawing `current` (with the pane's own `draw` parameters) compared.
    pub fn params(&self, draw: &DrawParams, current: &Frame) -> CompareParams {
        let m = self.prior_from_current.m;
        let (kind, opacity, window) = match self.kind {
            GpuKind::Blend { opacity } => (1.0, opacity, 1.0),
            GpuKind::Subtract { window } => (2.0, 0.0, window),
        };
        CompareParams {
            img_rect: draw.img_rect,
            window: draw.window,
            lut: draw.lut,
            row0: [m[0][0] as f32, m[0][1] as f32, m[0][2] as f32, 0.0],
            row1: [m[1][0] as f32, m[1][1] as f32, m[1][2] as f32, 0.0],
            compare: [kind, opacity, window, 0.0],
            signs: [gray_sign(current), self.prior_sign, self.prior_colour as u8 as f32, current.is_color() as u8 as f32],
        }
    }

    /// The paint callback for the current pane (`pane`), which draws plainly with `draw` when the
    /// prior is not on the GPU.
    pub fn callback(&self, pane: usize, draw: DrawParams, current: &Frame) -> CompareCallback {
        CompareCallback { pane, prior_pane: self.prior_pane, plain: draw, params: self.params(&draw, current) }
    }
}

/// `compare.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable, PartialEq)]
pub struct CompareParams {
    pub img_rect: [f32; 4],
    pub window: [f32; 4],
    pub lut: [f32; 4],
    pub row0: [f32; 4],
    pub row1: [f32; 4],
    pub compare: [f32; 4],
    pub signs: [f32; 4],
}

/// The comparison pipeline, beside `ImageRenderer` in egui-wgpu's callback resources. It binds
/// the textures `ImageRenderer` uploaded; one pane composites at a time.
pub struct CompareRenderer {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    uniform: wgpu::Buffer,
    /// The bind group for the uploaded frames ((pane, key) of the current, then of the prior).
    bind_group: Option<(BindKey, wgpu::BindGroup)>,
    /// Whether this frame's `prepare` found both frames (else the pane is drawn plainly).
    ready: bool,
}

impl CompareRenderer {
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("tandem compare"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/compare.wgsl").into()),
        });
        let texture_entry = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Float { filterable: false },
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("tandem compare layout"),
            entries: &[
                texture_entry(0),
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::VERTEX | wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: NonZeroU64::new(std::mem::size_of::<CompareParams>() as u64),
                    },
                    count: None,
                },
                texture_entry(2),
                texture_entry(3),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("tandem compare pipeline layout"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("tandem compare pipeline"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState { topology: wgpu::PrimitiveTopology::TriangleStrip, ..Default::default() },
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                targets: &[Some(target_format.into())],
            }),
            multiview_mask: None,
            cache: None,
        });
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("compare params"),
            size: std::mem::size_of::<CompareParams>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        CompareRenderer { pipeline, layout, uniform, bind_group: None, ready: false }
    }

    /// Adds the renderer to `resources` the first time a pane compares.
    pub fn install(resources: &mut egui_wgpu::CallbackResources, device: &wgpu::Device, target_format: wgpu::TextureFormat) {
        if resources.get::<CompareRenderer>().is_none() {
            resources.insert(CompareRenderer::new(device, target_format));
        }
    }
}

type BindKey = ((usize, u64), (usize, u64));

/// The current pane's draw in flicker, fade or subtraction.
pub struct CompareCallback {
    pub pane: usize,
    pub prior_pane: usize,
    /// The pane's own parameters, for a plain draw when the prior is not uploaded.
    pub plain: DrawParams,
    pub params: CompareParams,
}

impl egui_wgpu::CallbackTrait for CompareCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let views = resources.get::<ImageRenderer>().map(|r| {
            r.write_params(queue, self.pane, &self.plain);
            (r.views(self.pane), r.views(self.prior_pane))
        });
        let Some(renderer) = resources.get_mut::<CompareRenderer>() else { return Vec::new() };
        renderer.ready = false;
        let Some((Some(current), Some(prior))) = views else { return Vec::new() };
        let keys = ((self.pane, current.key), (self.prior_pane, prior.key));
        if renderer.bind_group.as_ref().is_none_or(|(k, _)| *k != keys) {
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("compare bind group"),
                layout: &renderer.layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&current.image) },
                    wgpu::BindGroupEntry { binding: 1, resource: renderer.uniform.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: wgpu::BindingResource::TextureView(&current.lut) },
                    wgpu::BindGroupEntry { binding: 3, resource: wgpu::BindingResource::TextureView(&prior.image) },
                ],
            });
            renderer.bind_group = Some((keys, bind_group));
        }
        queue.write_buffer(&renderer.uniform, 0, bytemuck::bytes_of(&self.params));
        renderer.ready = true;
        Vec::new()
    }

    fn paint(&self, _info: egui::PaintCallbackInfo, pass: &mut wgpu::RenderPass<'static>, resources: &egui_wgpu::CallbackResources) {
        if let Some(r) = resources.get::<CompareRenderer>()
            && r.ready
            && let Some((_, bind_group)) = &r.bind_group
        {
            pass.set_pipeline(&r.pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.draw(0..4, 0..1);
        } else if let Some(r) = resources.get::<ImageRenderer>() {
            r.draw_plain(pass, self.pane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::{Meta, Samples, VoiLut};

    fn gray_frame(w: usize, h: usize, values: Vec<f32>, invert: bool) -> Frame {
        Frame {
            width: w,
            height: h,
            pixels: crate::study::Pixels::new(Samples::Gray(values)),
            default_window: Window { center: 50.0, width: 100.0 },
            voi_lut: None,
            invert,
            meta: Arc::new(Meta::default()),
            frame_index: 0,
            slice_position: None,
            image_position: None,
        }
    }

    #[test]
    fn the_prior_is_shown_as_the_current_is_whatever_their_photometric_interpretations() {
        let values: Vec<f32> = (0..8).map(|i| i as f32 * 10.0).collect();
        let w = Window { center: 35.0, width: 70.0 };
        // A MONOCHROME2 current shows the prior's values as it shows its own.
        let current = gray_frame(8, 1, values.clone(), false);
        let prior_gray = GrayImage { width: 8, height: 1, data: values.clone() };
        let shown = present_prior(&prior_gray, &current, w, false, false);
        let own = crate::viewer::pane::render_cpu(&current, w, false, false);
        for (a, b) in shown.pixels.iter().zip(&own.pixels) {
            assert!((a.r() as i32 - b.r() as i32).abs() <= 1, "{a:?} vs {b:?}");
        }
        // A MONOCHROME1 current (stored values negated by to_gray) shows the same picture of the
        // same anatomy: to_gray values are compared, the window is the current's own.
        let mono1 = gray_frame(8, 1, values.iter().map(|v| -v).collect(), true);
        let w1 = Window { center: -35.0, width: 70.0 };
        let shown1 = present_prior(&prior_gray, &mono1, w1, false, false);
        let own1 = crate::viewer::pane::render_cpu(&mono1, w1, true, false);
        for (a, b) in shown1.pixels.iter().zip(&own1.pixels) {
            assert!((a.r() as i32 - b.r() as i32).abs() <= 1, "MONOCHROME1: {a:?} vs {b:?}");
        }
        // Through the current's VOI LUT when the pane uses it; black where the prior is missing.
        let mut with_lut = current.clone();
        with_lut.voi_lut = Some(Arc::new(VoiLut {
            first_mapped: 0.0,
            data: (0..80).map(|i| (79 - i) as f32).collect(),
            max_output: 79.0,
            explanation: None,
        }));
        let mut holes = prior_gray.clone();
        holes.data[3] = f32::NAN;
        let lut = present_prior(&holes, &with_lut, w, true, false);
        assert_eq!(lut.pixels[0], Color32::from_gray(255), "LUT inverts the ramp");
        assert_eq!(lut.pixels[3], Color32::BLACK);
    }

    #[test]
    fn the_uniform_carries_the_transform_and_the_signs() {
        let prior = gray_frame(4, 4, vec![0.0; 16], true);
        let current = gray_frame(4, 4, vec![0.0; 16], false);
        let t = Transform::similarity(0.1, 1.0, (2.0, 2.0), 3.0, -1.0);
        let c = GpuCompare::new(0, &prior, t, GpuKind::Subtract { window: 12.0 });
        let p = c.params(&DrawParams::default(), &current);
        assert_eq!(p.row0[2], t.m[0][2] as f32);
        assert_eq!(p.row1[0], t.m[1][0] as f32);
        assert_eq!(p.compare, [2.0, 0.0, 12.0, 0.0]);
        assert_eq!(p.signs, [1.0, -1.0, 0.0, 0.0]);
        assert_eq!(std::mem::size_of::<CompareParams>(), 112);
    }
}
