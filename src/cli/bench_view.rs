//! `tandem bench view`: time to first image and scrolling frame times of the viewer's own loading
//! and drawing path, on 512² CT series of any length resliced from a real volume.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui_wgpu::{self, wgpu};

use crate::cli::CliError;
use crate::cli::bench::{median, peak_rss_mib};
use crate::cli::bench_series::{resliced, source_volume, write_slice};
use crate::study::progressive::LoadControl;
use crate::viewer::gpu::{DrawParams, ImageRenderer};
use crate::viewer::jobs::{JobResult, Jobs, Stamp, progress_cell};
use crate::viewer::pane::{Pane, PaneId, Role};

/// Side of the square pane the GPU path draws into (a pane of a 1500-point-wide window).
const PANE_PX: u32 = 768;

/// What a new slice costs on screen: the viewer's GPU path (texture upload and a draw into a
/// pane-sized target, waited for) when an adapter exists, else its CPU fallback (windowed RGBA,
/// as `Pane::paint` makes it before egui uploads it).
enum Drawer {
    Gpu { state: Box<egui_wgpu::RenderState>, renderer: Box<ImageRenderer>, target: wgpu::TextureView },
    Cpu,
}

/// Runs a future that wgpu's native backends resolve without waiting on anything else.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

impl Drawer {
    fn new(cpu: bool) -> Drawer {
        if cpu {
            return Drawer::Cpu;
        }
        let made = std::panic::catch_unwind(|| {
            let setup = egui_wgpu::WgpuSetup::CreateNew(egui_wgpu::WgpuSetupCreateNew::without_display_handle());
            let instance = block_on(setup.new_instance());
            let config = egui_wgpu::WgpuConfiguration { wgpu_setup: setup, ..Default::default() };
            block_on(egui_wgpu::RenderState::create(&config, &instance, None, egui_wgpu::RendererOptions::default()))
        });
        let Ok(Ok(state)) = made else { return Drawer::Cpu };
        let renderer = ImageRenderer::new(&state.device, state.target_format);
        let texture = state.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("bench pane"),
            size: wgpu::Extent3d { width: PANE_PX, height: PANE_PX, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: state.target_format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
            view_formats: &[],
        });
        let target = texture.create_view(&wgpu::TextureViewDescriptor::default());
        Drawer::Gpu { state: Box::new(state), renderer: Box::new(renderer), target }
    }

    fn label(&self) -> String {
        match self {
            Drawer::Gpu { state, .. } => {
                let info = state.adapter.get_info();
                format!("GPU path ({}, {:?}), upload + draw into a {PANE_PX}² pane, waited for", info.name, info.backend)
            }
            Drawer::Cpu => "CPU fallback (windowed RGBA per slice; no wgpu adapter or --cpu)".into(),
        }
    }

    /// Puts the pane's shown frame on screen as its paint does for a new slice; returns the
    /// milliseconds its upload took on the GPU path (the rest is the draw).
    fn draw(&mut self, pane: &Pane, key: u64) -> Option<f64> {
        let frame = pane.shown_frame()?;
        let samples = frame.samples().ok()?;
        match self {
            Drawer::Gpu { state, renderer, target } => {
                let (device, queue) = (&state.device, &state.queue);
                let start = Instant::now();
                renderer.upload(device, queue, 0, key, frame, &samples);
                // The upload is staged until a submission: make it happen, to time it apart.
                queue.submit([]);
                let _ = device.poll(wgpu::PollType::wait_indefinitely());
                let upload = start.elapsed().as_secs_f64() * 1e3;
                let params = DrawParams {
                    img_rect: [0.0, 0.0, 1.0, 1.0],
                    window: [pane.window.center, pane.window.width, 0.0, 0.0],
                    lut: [0.0, 0.0, 1.0, 1.0],
                };
                renderer.write_params(queue, 0, &params);
                let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("bench pane") });
                {
                    let mut pass = encoder
                        .begin_render_pass(&wgpu::RenderPassDescriptor {
                            label: Some("bench pane"),
                            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                                view: target,
                                resolve_target: None,
                                ops: wgpu::Operations { load: wgpu::LoadOp::Clear(wgpu::Color::BLACK), store: wgpu::StoreOp::Store },
                                depth_slice: None,
                            })],
                            ..Default::default()
                        })
                        .forget_lifetime();
                    renderer.draw_plain(&mut pass, 0);
                }
                queue.submit([encoder.finish()]);
                let _ = device.poll(wgpu::PollType::wait_indefinitely());
                Some(upload)
            }
            Drawer::Cpu => {
                std::hint::black_box(crate::viewer::pane::render_cpu(frame, pane.window, pane.invert ^ frame.invert, false));
                None
            }
        }
    }
}

/// Applies what the load job sent, as the app does (`App::on_arrival`), until `done` holds.
fn pump(jobs: &mut Jobs, pane: &mut Pane, done: impl Fn(&Pane) -> bool) -> Result<(), CliError> {
    let start = Instant::now();
    loop {
        for (_, result) in jobs.drain() {
            match result {
                JobResult::Arrived { source, arrival, .. } => match *arrival {
                    crate::study::progressive::Arrival::Planned(series) => pane.set_arriving(source, series),
                    crate::study::progressive::Arrival::File { file, frames } => {
                        if let Some(Err(e)) = pane.add_arrived(file, frames) {
                            return Err(CliError(e));
                        }
                    }
                },
                JobResult::Loaded { result, .. } => pane.set_series(Arc::new(result?)),
                JobResult::Failed { what, error } => return Err(CliError(format!("{what}: {error}"))),
                _ => {}
            }
        }
        if done(pane) {
            return Ok(());
        }
        if let Some(e) = pane.error() {
            return Err(CliError(e.to_string()));
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(CliError("the series did not load within 2 minutes".into()));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// One series length's times (ms, but `all_in_s`).
struct Timed {
    first: f64,
    all_in_s: f64,
    loading: Vec<f64>,
    loaded: Vec<f64>,
    /// The GPU upload's share of each `loaded` step.
    uploads: Vec<f64>,
    /// Steps of `loaded` whose slice had been evicted and was not back yet when asked for (the
    /// pane said "decoding…" until the prefetch brought it).
    waited: usize,
}

fn time_series(dir: &Path, drawer: &mut Drawer) -> Result<Timed, CliError> {
    let mut jobs = Jobs::new(eframe::egui::Context::default());
    let mut pane = Pane::new(PaneId(0), Role::Current);
    let start = Instant::now();
    // What `App::open_path` does.
    pane.set_loading(dir.display().to_string(), progress_cell());
    let control = Arc::new(LoadControl::default());
    pane.attach_loader(control.clone());
    jobs.load(pane.id, Stamp(vec![(pane.id, pane.generation)]), dir.to_path_buf(), progress_cell(), control);
    pump(&mut jobs, &mut pane, |p| p.shown_frame().is_some())?;
    let mut key = 0u64;
    drawer.draw(&pane, key);
    let first = start.elapsed().as_secs_f64() * 1e3;
    // From the middle to the last slice, then back to the first: every slice, as fast as they
    // come in (the loader follows the slice shown).
    let n = pane.frame_count();
    let mid = pane.frame;
    let mut loading = Vec::new();
    for target in (mid + 1..n).chain((0..n.saturating_sub(1)).rev()) {
        let t = Instant::now();
        pane.set_frame(target);
        pane.steer_loader();
        pump(&mut jobs, &mut pane, |p| p.shown_frame().is_some() || !p.is_loading())?;
        key += 1;
        drawer.draw(&pane, key);
        loading.push(t.elapsed().as_secs_f64() * 1e3);
    }
    pump(&mut jobs, &mut pane, |p| !p.is_loading())?;
    let all_in_s = start.elapsed().as_secs_f64();
    // End to end twice (first to last, then back): with more slices than the pixel budget
    // holds, each pass evicts what the other needs, and the prefetch decodes ahead of the scroll.
    let (mut loaded, mut uploads, mut waited) = (Vec::new(), Vec::new(), 0);
    let n = pane.frame_count();
    for target in (0..n).chain((0..n).rev()) {
        let t = Instant::now();
        pane.set_frame(target);
        // What the pane does: draw the slice once it is in memory, "decoding…" until then.
        let mut missing = false;
        while pane.shown_frame().is_some_and(|f| f.pixels.peek().is_none()) {
            missing = true;
            if t.elapsed() > Duration::from_secs(10) {
                return Err(CliError(format!("slice {target} did not come back within 10 s")));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        waited += usize::from(missing);
        key += 1;
        uploads.extend(drawer.draw(&pane, key));
        loaded.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Timed { first, all_in_s, loading, loaded, uploads, waited })
}

pub fn run(volume_path: &Path, sizes: &[usize], cpu: bool) -> Result<(), CliError> {
    let volume = source_volume(volume_path, sizes)?;
    let (w, h) = (volume.frames[0].width, volume.frames[0].height);
    let mut drawer = Drawer::new(cpu);
    let scratch = std::env::temp_dir().join(format!("tandem-bench-view-{}", std::process::id()));
    println!(
        "viewer: {} ({w}×{h}) resliced to N slices, uncompressed DICOM files in the page cache; {}; decoded pixels held under {:.0} MiB ({})",
        volume_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        drawer.label(),
        crate::study::PixelCache::global().budget_bytes() as f64 / (1 << 20) as f64,
        crate::study::resident::BUDGET_ENV
    );
    println!(
        "| slices | first image ms | all slices in s | scroll while loading ms: median (fps), 95th pct, slowest | scroll once loaded, end to end twice, ms: median (fps), 95th pct, slowest | of which GPU upload ms | steps waiting on a decode | peak RSS MiB | decoded pixels MiB: series, held at most |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let cache = crate::study::PixelCache::global();
    let mut sorted = sizes.to_vec();
    // Smallest first: the process's peak memory only grows, so each row's peak is its own.
    sorted.sort_unstable();
    let spacing = volume.meta.pixel_spacing_mm.unwrap_or([1.0, 1.0]);
    for &n in &sorted {
        let dir = scratch.join(n.to_string());
        let made = std::fs::create_dir_all(&dir).map_err(CliError::from).and_then(|()| {
            let z_step = 2.5 * (volume.frames.len() as f64 - 1.0) / (n as f64 - 1.0);
            (0..n).try_for_each(|k| write_slice(&dir, "2.25.170170173", k, k as f64 * z_step, spacing, &resliced(&volume, k, n)))
        });
        let result = made.and_then(|()| time_series(&dir, &mut drawer));
        let _ = std::fs::remove_dir_all(&dir);
        let Timed { first, all_in_s, loading, loaded, uploads, waited } = result?;
        let cell = |v: &[f64]| {
            let mut sorted = v.to_vec();
            sorted.sort_by(f64::total_cmp);
            let p95 = sorted.get((sorted.len() * 95).div_ceil(100).saturating_sub(1)).copied().unwrap_or(f64::NAN);
            let m = median(sorted.clone());
            format!("{m:.1} ({:.0}), {p95:.1}, {:.1}", 1e3 / m, sorted.last().copied().unwrap_or(f64::NAN))
        };
        let upload = if uploads.is_empty() { "—".to_string() } else { format!("{:.1}", median(uploads)) };
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        println!(
            "| {n} | {first:.0} | {all_in_s:.2} | {} | {} | {upload} | {waited} of {} | {:.0} | {:.0}, {:.0} |",
            cell(&loading),
            cell(&loaded),
            loaded.len(),
            peak_rss_mib().unwrap_or(f64::NAN),
            mib(n * w * h * 4),
            mib(cache.peak_bytes())
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
