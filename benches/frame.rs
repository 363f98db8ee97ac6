//! Frame time on two large panes with 100 boxes: the GPU path (frames uploaded once; window/level,
//! flicker, fade and subtraction drawn by WGSL shaders from a uniform per frame) against the CPU
//! fallback (re-window and re-upload the pane every frame; flicker's windowed prior and the
//! subtraction's colour map recomputed in a background job and uploaded), both in this run,
//! rendered through wgpu (a software adapter counts). A CPU-fallback frame is timed until it
//! shows what was asked (its background job done), as a reader would see it.
//! `cargo bench --bench frame`.

use std::time::{Duration, Instant};

use eframe::egui::Vec2;
use egui_kittest::Harness;
use tandem::annotation::{Command, Finding, FindingKind, ImageBox, Source};
use tandem::grounding::{BBox, DevicePreference};
use tandem::viewer::app::{CompareCommand, ViewMode};
use tandem::viewer::pane::Role;
use tandem::viewer::{App, AppCommand, Launch};

const SIDE: u32 = 2048;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A 2048×2048 16-bit image with structure at every scale; the current is shifted by a few
/// pixels and has a bright patch, so that flicker and subtraction show something.
fn write_large_png(path: &std::path::Path, current: bool) {
    let n = SIDE;
    let (dx, dy) = if current { (7.0, -5.0) } else { (0.0, 0.0) };
    let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(n, n, |x, y| {
        let (fx, fy) = ((x as f32 + dx) / n as f32, (y as f32 + dy) / n as f32);
        let mut v = 0.5 + 0.25 * (fx * 40.0).sin() * (fy * 31.0).cos() + 0.2 * ((fx - 0.5).powi(2) + (fy - 0.5).powi(2)).sqrt();
        if current && (1200..1300).contains(&x) && (700..800).contains(&y) {
            v += 0.2;
        }
        image::Luma([(v.clamp(0.0, 1.0) * 4095.0) as u16])
    });
    img.save(path).expect("write test image");
}

/// 100 accepted boxes on each pane, spread over the image.
fn hundred_boxes() -> Vec<Finding> {
    (0..100)
        .map(|i| {
            let (x, y) = (100.0 + (i % 10) as f32 * 180.0, 100.0 + (i / 10) as f32 * 180.0);
            let b = BBox::new(x, y, x + 120.0, y + 90.0);
            let boxes = vec![ImageBox::new("prior", 0, b), ImageBox::new("current", 0, b.translate(-7.0, 5.0))];
            Finding::new(FindingKind::Manual, &format!("b{i}"), boxes, Source::Human { user: None }, "2026-01-01T00:00:00Z")
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    /// Window/level dragged in side by side, mirrored to the other pane.
    WindowLevel,
    /// Window/level dragged while the current pane flickers (the prior drawn with its window).
    Flicker,
    /// The subtraction's own window dragged.
    Subtraction,
}

/// Steps until nothing runs in the background (a CPU-fallback picture being made).
fn until_idle(h: &mut Harness<'_, App>) {
    let start = Instant::now();
    while h.state().is_busy() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_micros(300));
        h.step();
    }
}

/// (median ms per frame, median ms from switching the mode on to its first complete frame).
fn run(prior: &std::path::Path, current: &std::path::Path, scenario: Scenario, cpu: bool, frames: usize) -> Option<(f64, f64)> {
    let renderer = std::panic::catch_unwind(egui_kittest::wgpu::WgpuTestRenderer::new).ok()?;
    let launch = Launch::Pair(prior.to_path_buf(), current.to_path_buf());
    let mut h = Harness::builder()
        .with_size(Vec2::new(1400.0, 800.0))
        .with_max_steps(40)
        .renderer(renderer)
        .build_eframe(|cc| App::with_device(cc, launch, None, DevicePreference::Cpu));
    while h.state().is_busy() {
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    h.state_mut().run(AppCommand::Edit(Box::new(Command::Add { findings: hundred_boxes(), description: "boxes".into() })));
    h.state_mut().run(AppCommand::SetCpuRendering(cpu));
    let mode = match scenario {
        Scenario::WindowLevel => ViewMode::SideBySide,
        Scenario::Flicker => ViewMode::Flicker,
        Scenario::Subtraction => ViewMode::Subtraction,
    };
    // Switching the mode on: the CPU fallback resamples the prior (and colours the difference).
    let mut first = Vec::new();
    for _ in 0..3 {
        h.state_mut().run(AppCommand::SetViewMode(ViewMode::SideBySide));
        h.run_steps(2);
        h.render().ok()?;
        let start = Instant::now();
        h.state_mut().run(AppCommand::SetViewMode(mode));
        h.step();
        until_idle(&mut h);
        h.render().ok()?;
        first.push(start.elapsed().as_secs_f64() * 1e3);
    }
    if scenario == Scenario::Subtraction {
        let auto = h.state().subtraction_window().unwrap_or(100.0);
        h.state_mut().run(AppCommand::Compare(CompareCommand::SetSubtractionWindow(Some(auto))));
    }
    h.run_steps(2);
    until_idle(&mut h);
    h.render().ok()?;
    let mut times = Vec::with_capacity(frames);
    for k in 0..frames {
        let start = Instant::now();
        let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
        match scenario {
            Scenario::WindowLevel | Scenario::Flicker => {
                // What a right-drag does each frame: move the window, mirrored to the other pane.
                let mut w = h.state().pane(Role::Current).window;
                w.center += if k % 2 == 0 { 7.0 } else { -5.0 };
                h.state_mut().run(AppCommand::SetWindow { role: Role::Current, window: w });
                h.state_mut().run(AppCommand::SetWindow { role: Role::Prior, window: w });
            }
            Scenario::Subtraction => {
                let w = h.state().subtraction_window().unwrap_or(100.0) * if sign > 0.0 { 1.05 } else { 0.97 };
                h.state_mut().run(AppCommand::Compare(CompareCommand::SetSubtractionWindow(Some(w))));
            }
        }
        h.step();
        until_idle(&mut h);
        h.render().ok()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    assert_eq!(h.state().compare_on_gpu(), !cpu, "the path measured is not the one asked for");
    Some((median(times), median(first)))
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (prior, current) = (dir.path().join("prior.png"), dir.path().join("current.png"));
    write_large_png(&prior, false);
    write_large_png(&current, true);
    let frames = 30;
    let adapter = egui_kittest::wgpu::WgpuTestRenderer::new;
    let Ok(renderer) = std::panic::catch_unwind(adapter) else {
        println!("no wgpu adapter: nothing measured (install mesa-vulkan-drivers)");
        return;
    };
    drop(renderer);
    println!(
        "two {SIDE}×{SIDE} 16-bit panes with 100 boxes each, 1400×800 window, median of {frames} frames \
         (render + read-back included; a CPU-fallback frame until its background picture is shown)"
    );
    println!("| what changes each frame | GPU path ms / frame | CPU fallback ms / frame | CPU fallback / GPU |");
    println!("|---|---:|---:|---:|");
    let scenarios = [
        (Scenario::WindowLevel, "window/level drag, side by side"),
        (Scenario::Flicker, "window/level drag, flicker (2 Hz)"),
        (Scenario::Subtraction, "subtraction window drag"),
    ];
    let mut switches = Vec::new();
    for (scenario, label) in scenarios {
        match (run(&prior, &current, scenario, false, frames), run(&prior, &current, scenario, true, frames)) {
            (Some((g, gf)), Some((c, cf))) => {
                println!("| {label} | {g:.1} | {c:.1} | {:.2}× |", c / g);
                if scenario != Scenario::WindowLevel {
                    switches.push((label, gf, cf));
                }
            }
            _ => println!("| {label} | failed | failed | |"),
        }
    }
    println!();
    println!("switching the mode on (from side by side), median of 3: the CPU fallback resamples the prior first");
    println!("| mode | GPU path ms | CPU fallback ms | CPU fallback / GPU |");
    println!("|---|---:|---:|---:|");
    for (label, g, c) in switches {
        let mode = if label.starts_with("subtraction") { "subtraction" } else { "flicker" };
        println!("| {mode} | {g:.1} | {c:.1} | {:.2}× |", c / g);
    }
}
