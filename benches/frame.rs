//! Frame time while window/level is dragged on a large image: the GPU path (upload once, a
//! uniform per frame) against the CPU fallback (re-window and re-upload every frame), both in
//! this run, rendered through wgpu (a software adapter counts). `cargo bench --bench frame`.

use std::time::Instant;

use eframe::egui::Vec2;
use egui_kittest::Harness;
use tandem::grounding::DevicePreference;
use tandem::viewer::pane::Role;
use tandem::viewer::{App, AppCommand, Launch};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A 2048×2048 16-bit image with structure at every scale.
fn write_large_png(path: &std::path::Path) {
    let n = 2048u32;
    let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(n, n, |x, y| {
        let (fx, fy) = (x as f32 / n as f32, y as f32 / n as f32);
        let v = 0.5 + 0.25 * (fx * 40.0).sin() * (fy * 31.0).cos() + 0.2 * ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt();
        image::Luma([(v.clamp(0.0, 1.0) * 4095.0) as u16])
    });
    img.save(path).expect("write test image");
}

fn run(path: &std::path::Path, cpu: bool, frames: usize) -> Option<f64> {
    let renderer = std::panic::catch_unwind(egui_kittest::wgpu::WgpuTestRenderer::new).ok()?;
    let launch = Launch::Pair(path.to_path_buf(), path.to_path_buf());
    let mut h = Harness::builder()
        .with_size(Vec2::new(1400.0, 800.0))
        .with_max_steps(40)
        .renderer(renderer)
        .build_eframe(|cc| App::with_device(cc, launch, None, DevicePreference::Cpu));
    while h.state().is_busy() {
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    h.state_mut().run(AppCommand::SetCpuRendering(cpu));
    h.run_steps(2);
    h.render().ok()?;
    let mut times = Vec::with_capacity(frames);
    for k in 0..frames {
        let start = Instant::now();
        // What a right-drag does each frame: move the window, mirrored to the other pane.
        let mut w = h.state().pane(Role::Current).window;
        w.center += if k % 2 == 0 { 7.0 } else { -5.0 };
        h.state_mut().run(AppCommand::SetWindow { role: Role::Current, window: w });
        h.state_mut().run(AppCommand::SetWindow { role: Role::Prior, window: w });
        h.step();
        h.render().ok()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Some(median(times))
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("large.png");
    write_large_png(&path);
    let frames = 30;
    let gpu = run(&path, false, frames);
    let cpu = run(&path, true, frames);
    println!("window/level drag on two 2048×2048 16-bit panes, 1400×800 window, median of {frames} frames (render + read-back included)");
    println!("| path | ms / frame | CPU fallback / path |");
    println!("|---|---:|---:|");
    match (gpu, cpu) {
        (Some(g), Some(c)) => {
            println!("| GPU (WGSL window/level, texture uploaded once) | {g:.1} | {:.2}× |", c / g);
            println!("| CPU fallback (re-window + upload per frame) | {c:.1} | 1.00× |");
        }
        _ => println!("no wgpu adapter: nothing measured (install mesa-vulkan-drivers)"),
    }
}
