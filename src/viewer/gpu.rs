//! GPU window/level behind a small API: frames are uploaded once per pane as float (grey) or
//! RGBA8 (colour) textures; each paint only writes a uniform through an egui-wgpu callback.

use std::collections::HashMap;
use std::num::NonZeroU64;

use eframe::egui;
use eframe::egui_wgpu::{self, wgpu};

use crate::study::{Frame, Samples};

/// Per-draw display parameters, laid out as the shader's `Params`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable, PartialEq)]
pub struct DrawParams {
    pub img_rect: [f32; 4],
    pub window: [f32; 4],
    pub lut: [f32; 4],
}

/// What is on the GPU for one pane.
struct PaneTextures {
    key: u64,
    _image: wgpu::Texture,
    _lut: wgpu::Texture,
    image_view: wgpu::TextureView,
    lut_view: wgpu::TextureView,
    uniform: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

/// A pane's uploaded frame as other pipelines bind it (the comparison views read two panes').
#[derive(Clone, Debug)]
pub struct PaneViews {
    /// The key the frame was uploaded with.
    pub key: u64,
    /// R32Float modality values, or RGBA8 colour.
    pub image: wgpu::TextureView,
    /// The VOI LUT in rows of 256 texels.
    pub lut: wgpu::TextureView,
}

/// Long-lived pipeline and per-pane textures, stored in egui-wgpu's callback resources.
pub struct ImageRenderer {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    panes: HashMap<usize, PaneTextures>,
    max_side: u32,
}

impl ImageRenderer {
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("tandem image"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/image.wgsl").into()),
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
            label: Some("tandem image layout"),
            entries: &[
                texture_entry(0),
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::VERTEX | wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: NonZeroU64::new(std::mem::size_of::<DrawParams>() as u64),
                    },
                    count: None,
                },
                texture_entry(2),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("tandem image pipeline layout"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("tandem image pipeline"),
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
        let max_side = device.limits().max_texture_dimension_2d;
        ImageRenderer { pipeline, layout, panes: HashMap::new(), max_side }
    }

    /// True when `pane` already holds the frame identified by `key`.
    pub fn has(&self, pane: usize, key: u64) -> bool {
        self.panes.get(&pane).is_some_and(|p| p.key == key)
    }

    /// Uploads `frame`, whose samples are `samples`, for `pane` (once per frame change;
    /// window/level never re-uploads).
    pub fn upload(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, pane: usize, key: u64, frame: &Frame, samples: &Samples) {
        let (w, h) = (frame.width as u32, frame.height as u32);
        if w == 0 || h == 0 || w > self.max_side || h > self.max_side {
            log::error!("frame of {w}×{h} px exceeds the GPU's texture limit {}", self.max_side);
            self.panes.remove(&pane);
            return;
        }
        let (format, bytes): (wgpu::TextureFormat, Vec<u8>) = match samples {
            Samples::Gray(v) => (wgpu::TextureFormat::R32Float, bytemuck::cast_slice(v).to_vec()),
            Samples::Rgb(v) => (wgpu::TextureFormat::Rgba8Unorm, v.iter().flat_map(|p| [p[0], p[1], p[2], 255]).collect()),
        };
        let image = create_texture(device, queue, w, h, format, &bytes, "pane image");
        let lut_values: Vec<f32> = frame.voi_lut.as_ref().map(|l| l.data.clone()).unwrap_or_else(|| vec![0.0]);
        let rows = lut_values.len().div_ceil(256) as u32;
        let mut padded = lut_values;
        let cols = if rows > 1 { 256 } else { padded.len() as u32 };
        padded.resize((rows * cols) as usize, 0.0);
        let lut = create_texture(device, queue, cols, rows, wgpu::TextureFormat::R32Float, bytemuck::cast_slice(&padded), "voi lut");
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pane params"),
            size: std::mem::size_of::<DrawParams>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let image_view = image.create_view(&wgpu::TextureViewDescriptor::default());
        let lut_view = lut.create_view(&wgpu::TextureViewDescriptor::default());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("pane bind group"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: wgpu::BindingResource::TextureView(&image_view) },
                wgpu::BindGroupEntry { binding: 1, resource: uniform.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: wgpu::BindingResource::TextureView(&lut_view) },
            ],
        });
        self.panes.insert(pane, PaneTextures { key, _image: image, _lut: lut, image_view, lut_view, uniform, bind_group });
    }

    /// The textures of what `pane` shows, if it is uploaded.
    pub fn views(&self, pane: usize) -> Option<PaneViews> {
        self.panes.get(&pane).map(|p| PaneViews { key: p.key, image: p.image_view.clone(), lut: p.lut_view.clone() })
    }

    /// Writes `pane`'s draw parameters (in a callback's `prepare`), for `draw_plain`.
    pub fn write_params(&self, queue: &wgpu::Queue, pane: usize, params: &DrawParams) {
        if let Some(p) = self.panes.get(&pane) {
            queue.write_buffer(&p.uniform, 0, bytemuck::bytes_of(params));
        }
    }

    /// Draws `pane` as `ImageCallback` does (another callback's fallback); false when it has no
    /// frame uploaded.
    pub fn draw_plain(&self, pass: &mut wgpu::RenderPass<'static>, pane: usize) -> bool {
        let Some(p) = self.panes.get(&pane) else { return false };
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &p.bind_group, &[]);
        pass.draw(0..4, 0..1);
        true
    }

    pub fn forget(&mut self, pane: usize) {
        self.panes.remove(&pane);
    }
}

fn create_texture(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    w: u32,
    h: u32,
    format: wgpu::TextureFormat,
    bytes: &[u8],
    label: &str,
) -> wgpu::Texture {
    let size = wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    queue.write_texture(
        wgpu::TexelCopyTextureInfo { texture: &texture, mip_level: 0, origin: wgpu::Origin3d::ZERO, aspect: wgpu::TextureAspect::All },
        bytes,
        wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(4 * w), rows_per_image: Some(h) },
        size,
    );
    texture
}

/// One pane's draw: plain data, as egui-wgpu callbacks must be `'static`.
pub struct ImageCallback {
    pub pane: usize,
    pub params: DrawParams,
}

impl egui_wgpu::CallbackTrait for ImageCallback {
    fn prepare(
        &self,
        _device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(p) = resources.get::<ImageRenderer>().and_then(|r| r.panes.get(&self.pane)) {
            queue.write_buffer(&p.uniform, 0, bytemuck::bytes_of(&self.params));
        }
        Vec::new()
    }

    fn paint(&self, _info: egui::PaintCallbackInfo, pass: &mut wgpu::RenderPass<'static>, resources: &egui_wgpu::CallbackResources) {
        let Some(renderer) = resources.get::<ImageRenderer>() else {
            log::error!("image renderer missing from callback resources");
            return;
        };
        let Some(p) = renderer.panes.get(&self.pane) else { return };
        pass.set_pipeline(&renderer.pipeline);
        pass.set_bind_group(0, &p.bind_group, &[]);
        pass.draw(0..4, 0..1);
    }
}
