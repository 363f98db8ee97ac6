//! `tandem bench series`: whole-series change finding timed on series synthesized from a real CT volume, decode included.

use std::path::Path;
use std::time::Instant;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::cli::bench::peak_rss_mib;
use crate::cli::{Cli, CliError};
use crate::grounding::Method;
use crate::grounding::series::find_changes;
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
    let pixels: Vec<u16> = img.data.iter().map(|v| (v + 1024.0).round().clamp(0.0, 65535.0) as u16).collect();
    let sop = format!("{series_uid}.{}", k + 1);
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, format!("{series_uid}.0")),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
        DataElement::new(tags::FRAME_OF_REFERENCE_UID, VR::UI, "2.25.17017017"),
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

/// Writes a prior and a current series of `n` slices resliced from `volume` (the current moved
/// 3 px right and 2 px down, with `LESIONS` inserted) into `dir/prior` and `dir/current`.
fn synthesize(volume: &Series, n: usize, dir: &Path) -> Result<(), CliError> {
    let spacing = volume.meta.pixel_spacing_mm.unwrap_or([1.0, 1.0]);
    let z_step = 2.5 * (volume.frames.len() as f64 - 1.0) / (n as f64 - 1.0).max(1.0);
    for (name, uid) in [("prior", "2.25.170170171"), ("current", "2.25.170170172")] {
        std::fs::create_dir_all(dir.join(name))?;
        for k in 0..n {
            let mut img = resliced(volume, k, n);
            if name == "current" {
                let (w, h) = (img.width, img.height);
                img = img.crop(-3, -2, w, h, -1024.0);
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
            write_slice(&dir.join(name), uid, k, k as f64 * z_step, spacing, &img)?;
        }
    }
    Ok(())
}

pub fn run(cli: &Cli, volume_path: &Path, sizes: &[usize], method: Method) -> Result<(), CliError> {
    if sizes.is_empty() || sizes.iter().any(|&n| n < 2) {
        return Err(CliError("--slices must list series lengths of at least 2".into()));
    }
    let quiet = |_: f32, _: &str| {};
    let volume =
        crate::study::load(volume_path, &quiet).map_err(|e| CliError(format!("{e} (pass --volume) ({})", volume_path.display())))?;
    if volume.frames.len() < 2 {
        return Err(CliError(format!("the volume has one slice; a series needs more ({})", volume_path.display())));
    }
    let engine = crate::cli::engine(cli);
    let scratch = std::env::temp_dir().join(format!("tandem-bench-series-{}", std::process::id()));
    println!(
        "whole-series find changes: {} ({}×{}, {} slices) resliced to N slices, current moved 3 px with {} lesions; {} on {}",
        volume_path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        volume.frames[0].width,
        volume.frames[0].height,
        volume.frames.len(),
        LESIONS.len(),
        if method == Method::Model && engine.has_model() { "model" } else { "baseline" },
        engine.device.label
    );
    println!(
        "| slices | decode s | grounding s | total s | slices/s | ms per slice pair | lesions found | peak RSS MiB | two series' stored pixels MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut sorted = sizes.to_vec();
    // Smallest first: the process's peak memory only grows, so each row's peak is its own.
    sorted.sort_unstable();
    for &n in &sorted {
        let dir = scratch.join(n.to_string());
        let made = synthesize(&volume, n, &dir);
        let result = made.and_then(|()| {
            let start = Instant::now();
            let prior = crate::study::load(&dir.join("prior"), &quiet)?;
            let current = crate::study::load(&dir.join("current"), &quiet)?;
            let decoded = start.elapsed().as_secs_f64();
            let out = find_changes(&engine, &prior, &current, method, 0.5, &mut |_, _| {}, None)?;
            let total = start.elapsed().as_secs_f64();
            let found = LESIONS
                .iter()
                .filter(|&&(fx, fy, fz, _, _)| {
                    let (w, h) = (current.frames[0].width as f32, current.frames[0].height as f32);
                    let level = (fz * (n - 1) as f32).round() as usize;
                    out.findings.iter().any(|f| {
                        let b = crate::grounding::BBox::from_array(f.bbox);
                        (f.slices[0]..=f.slices[1]).contains(&level) && b.x1 <= fx * w && fx * w <= b.x2 && b.y1 <= fy * h && fy * h <= b.y2
                    })
                })
                .count();
            let stored = 2.0 * n as f64 * (current.frames[0].width * current.frames[0].height * 2) as f64 / (1 << 20) as f64;
            Ok::<_, CliError>((decoded, total - decoded, total, found, stored))
        });
        let _ = std::fs::remove_dir_all(&dir);
        let (decoded, grounding, total, found, stored) = result?;
        println!(
            "| {n} | {decoded:.1} | {grounding:.1} | {total:.1} | {:.1} | {:.1} | {found} of {} | {:.0} | {stored:.0} |",
            n as f64 / total,
            grounding * 1e3 / n as f64,
            LESIONS.len(),
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
