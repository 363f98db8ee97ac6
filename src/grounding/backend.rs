//! Chooses where the grounder runs: a real GPU through wgpu when one is found, else burn's
//! `flex` CPU backend; the choice and its reason are shown to the user.

use std::sync::OnceLock;

use burn::tensor::Device;

/// What the user asked for (`--device`, or `TANDEM_DEVICE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DevicePreference {
    #[default]
    Auto,
    Cpu,
    Gpu,
}

impl DevicePreference {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "cpu" | "flex" => Some(Self::Cpu),
            "gpu" | "wgpu" => Some(Self::Gpu),
            _ => None,
        }
    }

    /// `TANDEM_DEVICE` when set and valid, else `Auto`.
    pub fn from_env() -> Self {
        std::env::var("TANDEM_DEVICE").ok().and_then(|v| Self::parse(&v)).unwrap_or_default()
    }
}

/// The device the grounder will use and why.
#[derive(Clone, Debug)]
pub struct ComputeDevice {
    pub device: Device,
    pub is_gpu: bool,
    /// Short label for the status bar, e.g. "CPU (flex)" or "GPU: NVIDIA …".
    pub label: String,
    /// Why this device was chosen, e.g. "no GPU adapter found".
    pub reason: String,
}

impl ComputeDevice {
    pub fn cpu(reason: impl Into<String>) -> Self {
        ComputeDevice { device: Device::flex(), is_gpu: false, label: "CPU (flex)".into(), reason: reason.into() }
    }
}

/// Outcome of probing wgpu once per process (burn allows a single wgpu registration).
#[derive(Clone, Debug)]
enum GpuProbe {
    Real { device: Device, name: String },
    Software { device: Device, name: String },
    Missing { error: String },
}

fn probe_gpu() -> GpuProbe {
    static PROBE: OnceLock<GpuProbe> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // Driver stacks print to stderr while they are enumerated (Mesa's "not a conformant
            // implementation", libwayland's "XDG_RUNTIME_DIR is invalid") although nothing
            // failed; the outcome is reported by the caller instead.
            let _quiet = QuietStderr::new();
            // Driver stacks can panic instead of returning an error; treat that as "no GPU".
            let result = std::panic::catch_unwind(|| Device::wgpu_options().graphics_api(native_api()).init_with_setup());
            match result {
                Ok(Ok((device, setup))) => {
                    let info = setup.adapter.get_info();
                    if info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu {
                        GpuProbe::Software { device, name: info.name }
                    } else {
                        GpuProbe::Real { device, name: info.name }
                    }
                }
                Ok(Err(e)) => GpuProbe::Missing { error: e.to_string() },
                Err(_) => GpuProbe::Missing { error: "the GPU driver failed while starting".into() },
            }
        })
        .clone()
}

/// The platform's own compute-capable API: probing OpenGL too would open a display connection
/// for nothing (burn's kernels do not run there).
fn native_api() -> burn::tensor::wgpu::WgpuBackend {
    use burn::tensor::wgpu::WgpuBackend;
    if cfg!(target_os = "macos") {
        WgpuBackend::Metal
    } else if cfg!(target_os = "windows") {
        WgpuBackend::Dx12
    } else {
        WgpuBackend::Vulkan
    }
}

/// Sends this process's stderr to /dev/null until dropped (Unix; a no-op elsewhere).
struct QuietStderr {
    #[cfg(unix)]
    saved: Option<i32>,
}

impl QuietStderr {
    fn new() -> Self {
        #[cfg(unix)]
        {
            if std::env::var_os("TANDEM_GPU_LOG").is_some() {
                return QuietStderr { saved: None };
            }
            // SAFETY: plain descriptor calls; every result is checked and the original stderr
            // is restored in `drop`.
            unsafe {
                let saved = libc::dup(2);
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                if saved < 0 || null < 0 {
                    if saved >= 0 {
                        libc::close(saved);
                    }
                    if null >= 0 {
                        libc::close(null);
                    }
                    return QuietStderr { saved: None };
                }
                libc::dup2(null, 2);
                libc::close(null);
                QuietStderr { saved: Some(saved) }
            }
        }
        #[cfg(not(unix))]
        QuietStderr {}
    }
}

impl Drop for QuietStderr {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(saved) = self.saved.take() {
            // SAFETY: `saved` is the descriptor duplicated in `new`.
            unsafe {
                libc::dup2(saved, 2);
                libc::close(saved);
            }
        }
    }
}

/// Picks the device for `preference`. Never panics: anything unusable falls back to the CPU.
pub fn choose(preference: DevicePreference) -> ComputeDevice {
    if preference == DevicePreference::Cpu {
        return ComputeDevice::cpu("CPU requested");
    }
    match probe_gpu() {
        GpuProbe::Real { device, name } => {
            ComputeDevice { device, is_gpu: true, label: format!("GPU: {name}"), reason: "GPU adapter found".into() }
        }
        GpuProbe::Software { name, .. } => {
            ComputeDevice::cpu(format!("only a software GPU adapter ({name}) was found; the CPU backend is faster"))
        }
        GpuProbe::Missing { error } => ComputeDevice::cpu(format!("no GPU adapter found ({error})")),
    }
}

/// Any wgpu adapter, software rasterizers included, with its name: lets machines without a GPU
/// check that the wgpu path computes what the CPU path does.
pub fn any_wgpu() -> Option<(Device, String)> {
    match probe_gpu() {
        GpuProbe::Real { device, name } | GpuProbe::Software { device, name } => Some((device, name)),
        GpuProbe::Missing { .. } => None,
    }
}
