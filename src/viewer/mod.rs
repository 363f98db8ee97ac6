//! The egui/eframe shell: panes, sync, overlay, tools, panels, GPU window/level, background jobs.

pub mod app;
pub mod compare;
pub mod demo;
pub mod dialogs;
pub mod gpu;
pub mod jobs;
pub mod overlay;
pub mod pane;
pub mod prefs;
mod x11_focus;

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui_wgpu::{self, wgpu};

use crate::grounding::DevicePreference;

pub use app::{App, AppCommand};

/// What the viewer opens with.
#[derive(Clone, Debug)]
pub enum Launch {
    Demo,
    Pair(PathBuf, PathBuf),
    /// A folder: a timeline when it holds three studies of the patient or more, else its two
    /// studies (or one study's two largest series) as prior and current.
    Folder(PathBuf),
    /// Several folders of one patient's studies, opened as one timeline.
    Timeline(Vec<PathBuf>),
}

/// The viewer with the grounder's device from `TANDEM_DEVICE`.
pub fn run(launch: Launch) -> anyhow::Result<()> {
    run_with(launch, None, DevicePreference::from_env())
}

/// A device with the adapter's own limits (large textures) and features.
fn wgpu_setup() -> egui_wgpu::WgpuSetup {
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    setup.device_descriptor = Arc::new(|adapter: &wgpu::Adapter| {
        let mut features = adapter.features();
        features.remove(wgpu::Features::all_experimental_mask());
        features.remove(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS);
        wgpu::DeviceDescriptor {
            label: Some("tandem"),
            required_features: features,
            required_limits: adapter.limits(),
            ..Default::default()
        }
    });
    egui_wgpu::WgpuSetup::CreateNew(setup)
}

pub fn run_with(launch: Launch, annotations: Option<PathBuf>, device: DevicePreference) -> anyhow::Result<()> {
    run_with_pacs(launch, annotations, device, None)
}

/// `run_with` with the PACS "Send findings" stores to (else `TANDEM_PACS_URL`'s).
pub fn run_with_pacs(launch: Launch, annotations: Option<PathBuf>, device: DevicePreference, pacs: Option<String>) -> anyhow::Result<()> {
    let pacs = pacs.or_else(|| std::env::var(app::ENV_PACS_URL).ok().filter(|u| !u.trim().is_empty()));
    // The window where it was last time (the rest of the preferences are restored by the app).
    let prefs_dir = prefs::default_dir();
    let geometry = prefs_dir.as_deref().map(prefs::Prefs::load).and_then(|p| p.window);
    let mut viewport = eframe::egui::ViewportBuilder::default()
        .with_title("Tandem")
        .with_inner_size(geometry.map_or([1500.0, 900.0], |g| [g.width, g.height]))
        .with_min_inner_size([800.0, 500.0])
        .with_app_id("tandem");
    if let Some(g) = geometry {
        viewport = viewport.with_position([g.x, g.y]);
    }
    let mut options = eframe::NativeOptions { viewport, renderer: eframe::Renderer::Wgpu, ..Default::default() };
    options.wgpu_options.wgpu_setup = wgpu_setup();
    eframe::run_native(
        "Tandem",
        options,
        Box::new(move |cc| Ok(Box::new(App::with_device(cc, launch, annotations, device).with_pacs(pacs).with_prefs(prefs_dir)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the viewer window: {e} (is a display available? on a headless machine use xvfb-run)"))
}
