//! `tandem bench series`: whole-series change finding timed on series synthesized from a real CT volume, decode included, in one frame of reference and across two with a tilt.

use std::path::Path;
use std::time::Instant;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use clap::ValueEnum;

use rayon::prelude::*;

use crate::cli::{Cli, CliError};
use crate::grounding::Method;
use crate::registration::rigid3d::Rigid;
use crate::study::{GrayImage, Series};

/// Lesions inserted into the current series: (centre x, y as a fraction of the slice, centre
/// level as a fraction of the series, radius in px, half-extent in slices).
const LESIONS: [(f32, f32, f32, f32, usize); 3] = [(0.32, 0.45, 0.3, 12.0, 3), (0.66, 0.55, 0.55, 9.0, 2), (0.5, 0.7, 0.8, 10.0, 3)];

/// Slice `k` of `n` through `volume` (linear between its slices), in HU.
pub(crate) fn resliced(volume: &Series, k: usize, n: usize) -> GrayImage {
    let last = volume.frames.len() - 1;
    let z = if n > 1 { k as f32 * last as f32 / (n - 1) as f32 } else { 0.0 };
    let (a, t) = (z.floor() as usize, z.fract());
    let (ga, gb) = (volume.frames[a].to_gray(), volume.frames[(a + 1).min(last)].to_gray());
    let mut out = ga.clone();
    for (o, b) in out.data.iter_mut().zip(&gb.data) {
        *o = *o * (1.0 - t) + b * t;
    }
    out
}

pub(crate) fn write_slice(dir: &Path, series_uid: &str, k: usize, z_mm: f64, spacing: [f64; 2], img: &GrayImage) -> Result<(), CliError> {
    write_slice_in(dir, (series_uid, "2.25.17017017"), k, z_mm, spacing, img)
}

/// `write_slice` in the frame of reference named by `uids`' second.
fn write_slice_in(dir: &Path, uids: (&str, &str), k: usize, z_mm: f64, spacing: [f64; 2], img: &GrayImage) -> Result<(), CliError> {
    let (series_uid, frame_of_reference) = uids;
    let pixels: Vec<u16> = img.data.iter().map(|v| (v + 1024.0).round().clamp(0.0, 65535.0) as u16).collect();
    let sop = format!("{series_uid}.{}", k + 1);
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, format!("{series_uid}.0")),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
        DataElement::new(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference),
        DataElement::new(tags::MODALITY, VR::CS, "CT"),
        DataElement::new(tags::INSTANCE_NUMBER, VR::IS, (k + 1).to_string()),
        DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, format!("0\\0\\{z_mm:.3}")),
        DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
        DataElement::new(tags::PIXEL_SPACING, VR::DS, format!("{:.4}\\{:.4}", spacing[0], spacing[1])),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(img.height as u16)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(img.width as u16)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16)),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
        DataElement::new(tags::RESCALE_SLOPE, VR::DS, "1"),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ]);
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| CliError(format!("cannot build a DICOM slice: {e}")))?;
    file.write_to_file(dir.join(format!("{k:05}.dcm"))).map_err(|e| CliError(format!("cannot write a slice: {e}")))
}

/// How the current series lies against the prior.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    /// One frame of reference, the current moved 3 px right and 2 px down in plane.
    SameFrame,
    /// Another frame of reference (150 mm along the table), the patient turned `TILT`.
    Tilted,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::SameFrame => "same frame",
            Case::Tilted => "other frame, tilted",
        }
    }
}

/// The tilted case's turn (degrees about x, then y) and move (mm) of the patient.
const TILT: ([f64; 3], [f64; 3]) = ([5.0, 3.0, 0.0], [2.0, -3.0, 4.0]);

/// The source volume as a continuous body: slices 2.5 mm apart (as the prior series is
/// resliced from it), linear between them and bilinear within; air outside.
struct Body {
    slices: Vec<GrayImage>,
}

impl Body {
    fn at(&self, x_px: f64, y_px: f64, z_mm: f64) -> f32 {
        let z = z_mm / 2.5;
        if z < 0.0 || z > (self.slices.len() - 1) as f64 {
            return -1024.0;
        }
        let a = (z.floor() as usize).min(self.slices.len() - 2);
        let t = (z - a as f64) as f32;
        let at = |k: usize| self.slices[k].sample_inside(x_px as f32, y_px as f32).unwrap_or(-1024.0);
        at(a) * (1.0 - t) + at(a + 1) * t
    }
}

/// Slice `k` of `n` (`z_step` apart) of the tilted current: each pixel shows the body where the
/// turned and moved patient puts it.
fn tilted(body: &Body, k: usize, n: usize, z_step: f64, spacing: [f64; 2], (w, h): (usize, usize)) -> GrayImage {
    let (sx, sy) = (spacing[1], spacing[0]);
    let centre = [w as f64 * sx / 2.0, h as f64 * sy / 2.0, (n - 1) as f64 * z_step / 2.0];
    let turn = Rigid { angles_deg: TILT.0, translation_mm: TILT.1, centre_mm: centre };
    let rows: Vec<Vec<f32>> = (0..h)
        .into_par_iter()
        .map(|y| {
            (0..w)
                .map(|x| {
                    let q = turn.apply([x as f64 * sx, y as f64 * sy, k as f64 * z_step]);
                    body.at(q[0] / sx, q[1] / sy, q[2])
                })
                .collect()
        })
        .collect();
    GrayImage { width: w, height: h, data: rows.concat() }
}

/// Writes a prior and a current series of `n` slices resliced from `volume` (the current placed
/// as `case` says, with `LESIONS` inserted) into `dir/prior` and `dir/current`.
fn synthesize(volume: &Series, body: &Body, n: usize, dir: &Path, case: Case) -> Result<(), CliError> {
    let spacing = volume.meta.pixel_spacing_mm.unwrap_or([1.0, 1.0]);
    let z_step = 2.5 * (volume.frames.len() as f64 - 1.0) / (n as f64 - 1.0).max(1.0);
    for (name, uid) in [("prior", "2.25.170170171"), ("current", "2.25.170170172")] {
        std::fs::create_dir_all(dir.join(name))?;
        for k in 0..n {
            let mut img = resliced(volume, k, n);
            let (mut frame, mut z) = ("2.25.17017017", k as f64 * z_step);
            if name == "current" {
                let (w, h) = (img.width, img.height);
                img = match case {
                    Case::SameFrame => img.crop(-3, -2, w, h, -1024.0),
                    Case::Tilted => {
                        (frame, z) = ("2.25.17017018", 150.0 + z);
                        tilted(body, k, n, z_step, spacing, (w, h))
                    }
                };
                for &(fx, fy, fz, r, half) in &LESIONS {
                    let level = (fz * (n - 1) as f32).round() as isize;
                    let dz = (k as isize - level).unsigned_abs();
                    if dz > half {
                        continue;
                    }
                    // A sphere: smaller on the slices away from its centre.
                    let rr = r * (1.0 - (dz as f32 / (half as f32 + 1.0)).powi(2)).sqrt();
                    let (cx, cy) = (fx * w as f32, fy * h as f32);
                    for y in 0..h {
                        for x in 0..w {
                            if ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() < rr {
                                img.set(x, y, img.get(x, y) + 350.0);
                            }
                        }
                    }
                }
            }
            write_slice_in(&dir.join(name), (uid, frame), k, z, spacing, &img)?;
        }
    }
    Ok(())
}

/// What one `tandem ground series` child process took.
struct ChildRun {
    wall_s: f64,
    /// User + system CPU time, all its threads.
    cpu_s: f64,
    peak_rss_mib: f64,
    json: serde_json::Value,
}

/// Runs `tandem ground series` on `dir/prior` and `dir/current` in a child process, so that the
/// memory measured is the grounding's own and not this process's with the source volume in it,
/// timed from spawn to exit. The child says its peak memory itself (`--verbose`): a child's
/// rusage counts the parent's memory too when it was spawned by vfork.
fn ground_in_child(cli: &Cli, dir: &Path, method: Method) -> Result<ChildRun, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError(format!("cannot find the tandem executable: {e}")))?;
    let (json, log) = (dir.join("out.json"), dir.join("stderr.txt"));
    let device = cli.device.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_else(|| "auto".into());
    let method = if method == Method::Model { "model" } else { "baseline" };
    let (start, cpu_before) = (Instant::now(), children_cpu_s());
    let status = std::process::Command::new(exe)
        .args(["--verbose", "--device", &device, "ground", "series"])
        .arg(dir.join("prior"))
        .arg(dir.join("current"))
        .arg("--json")
        .arg(&json)
        .args(["--method", method, "--min-score", "0.5", "--force"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .status()
        .map_err(|e| CliError(format!("cannot run tandem ground series: {e}")))?;
    let (wall_s, cpu_s) = (start.elapsed().as_secs_f64(), children_cpu_s() - cpu_before);
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        let last = said.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(CliError(format!("tandem ground series failed in the bench: {last}")));
    }
    let peak_rss_mib = said
        .lines()
        .find_map(|l| l.strip_prefix("peak memory: ")?.strip_suffix(" MiB")?.parse().ok())
        .ok_or_else(|| CliError("tandem ground series did not say its peak memory".into()))?;
    let json = serde_json::from_slice(&std::fs::read(&json)?).map_err(|e| CliError(format!("the bench cannot read its own JSON: {e}")))?;
    Ok(ChildRun { wall_s, cpu_s, peak_rss_mib, json })
}

/// CPU time (user + system, s) of this process's children waited for so far: what a run
/// costs whatever else the machine is doing, unlike its wall time.
fn children_cpu_s() -> f64 {
    // SAFETY: rusage is plain data that getrusage fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// How many of `LESIONS` some finding covers: its slice range holds the lesion's centre slice
/// and its box the lesion's centre.
fn lesions_found(json: &serde_json::Value, n: usize, w: f32, h: f32) -> usize {
    let findings = json["findings"].as_array().map(Vec::as_slice).unwrap_or_default();
    let numbers =
        |v: &serde_json::Value| -> Vec<f64> { v.as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default() };
    LESIONS
        .iter()
        .filter(|&&(fx, fy, fz, _, _)| {
            let level = (fz * (n - 1) as f32).round() as f64;
            let (x, y) = ((fx * w) as f64, (fy * h) as f64);
            findings.iter().any(|f| {
                let (s, b) = (numbers(&f["slices"]), numbers(&f["box"]));
                s.len() == 2 && b.len() == 4 && s[0] <= level && level <= s[1] && b[0] <= x && x <= b[2] && b[1] <= y && y <= b[3]
            })
        })
        .count()
}

/// The volume the benches reslice into series of `sizes` slices, both checked.
pub(crate) fn source_volume(volume_path: &Path, sizes: &[usize]) -> Result<crate::study::Series, CliError> {
    if sizes.is_empty() || sizes.iter().any(|&n| n < 2) {
        return Err(CliError("--slices must list series lengths of at least 2".into()));
    }
    let quiet = |_: f32, _: &str| {};
    let volume =
        crate::study::load(volume_path, &quiet).map_err(|e| CliError(format!("{e} (pass --volume) ({})", volume_path.display())))?;
    if volume.frames.len() < 2 {
        return Err(CliError(format!("the volume has one slice; a series needs more ({})", volume_path.display())));
    }
    Ok(volume)
}

pub fn run(cli: &Cli, volume_path: &Path, sizes: &[usize], method: Method) -> Result<(), CliError> {
    let volume = source_volume(volume_path, sizes)?;
    let engine = crate::cli::engine(cli);
    let (w, h) = (volume.frames[0].width, volume.frames[0].height);
    let scratch = std::env::temp_dir().join(format!("tandem-bench-series-{}", std::process::id()));
    let body = Body { slices: volume.frames.iter().map(|f| f.to_gray()).collect() };
    println!(
        "whole-series find changes: {} ({w}×{h}, {} slices) resliced to N slices with {} lesions in the current, either in one frame \
         of reference moved 3 px, or in another frame of reference with the patient turned {:?}° (about x, y, z) and moved {:?} mm \
         (registered in 3D); {} on {}; each run is `tandem ground series` in its own process, timed from start to exit",
        volume_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        volume.frames.len(),
        LESIONS.len(),
        TILT.0,
        TILT.1,
        if method == Method::Model && engine.has_model() { "model" } else { "baseline" },
        engine.device.label
    );
    drop(engine);
    // The fixed cost: the program, the model and its working memory, on a 2-slice series.
    let fixed = {
        let dir = scratch.join("2");
        let run = synthesize(&volume, &body, 2, &dir, Case::SameFrame).and_then(|()| ground_in_child(cli, &dir, method));
        let _ = std::fs::remove_dir_all(&dir);
        run?
    };
    println!(
        "fixed cost (a 2-slice run): {:.1} s ({:.1} s CPU), peak RSS {:.0} MiB; {}",
        fixed.wall_s,
        fixed.cpu_s,
        fixed.peak_rss_mib,
        load()
    );
    println!(
        "| slices | case | total s | of which finding changes s | of which 3D registration s (decode + search) | turn found ° (x, y, z) | slices/s | ms per slice pair | CPU s | CPU ms per slice pair | lesions found | findings | peak RSS MiB | two series' stored pixels MiB | 1.3 × pixels + fixed MiB |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in sizes {
        for case in [Case::SameFrame, Case::Tilted] {
            let dir = scratch.join(n.to_string());
            let run = synthesize(&volume, &body, n, &dir, case).and_then(|()| ground_in_child(cli, &dir, method));
            let _ = std::fs::remove_dir_all(&dir);
            let run = run?;
            let finding_s = run.json["millis"].as_f64().unwrap_or(f64::NAN) / 1e3;
            let rigid = &run.json["rigid"];
            let registration = match (rigid["decode_millis"].as_f64(), rigid["millis"].as_f64()) {
                (Some(decode), Some(search)) => format!("{:.1} + {:.1}", decode / 1e3, search / 1e3),
                _ if case == Case::Tilted => format!("none ({})", run.json["matching"].as_str().unwrap_or("?")),
                _ => "–".into(),
            };
            let turn = match rigid["angles_deg"].as_array() {
                Some(a) => a.iter().map(|v| format!("{:.1}", v.as_f64().unwrap_or(f64::NAN))).collect::<Vec<_>>().join(", "),
                None => "–".into(),
            };
            let findings = run.json["findings"].as_array().map_or(0, Vec::len);
            let stored = 2.0 * n as f64 * (w * h * 2) as f64 / (1 << 20) as f64;
            println!(
                "| {n} | {} | {:.1} | {finding_s:.1} | {registration} | {turn} | {:.1} | {:.1} | {:.1} | {:.1} | {} of {} | {findings} | {:.0} | {stored:.0} | {:.0} |",
                case.label(),
                run.wall_s,
                n as f64 / run.wall_s,
                run.wall_s * 1e3 / n as f64,
                run.cpu_s,
                run.cpu_s * 1e3 / n as f64,
                lesions_found(&run.json, n, w as f32, h as f32),
                LESIONS.len(),
                run.peak_rss_mib,
                1.3 * stored + fixed.peak_rss_mib
            );
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{}", load());
    Ok(())
}

/// The machine's load averages, which say how far timings on a shared machine can be trusted.
fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").ok().map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    format!("load average (1, 5, 15 min): {}", avg.as_deref().unwrap_or("unknown"))
}
