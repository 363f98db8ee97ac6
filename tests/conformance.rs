//! Real-DICOM conformance: Tandem's decode of every file in tests/data/dicom (and, with
//! TANDEM_CONFORMANCE_DIR, of a full copy of the set) against what pydicom 3 + pylibjpeg decode.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn check_dir(dir: &Path, reference: &serde_json::Map<String, Value>) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, r) in reference {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        checked += 1;
        let expected = r["pixels"].as_str().unwrap_or("");
        let result = std::panic::catch_unwind(|| tandem::cli::info::info(&path));
        let info = match result {
            Err(_) => {
                failures.push(format!("{name}: PANICKED"));
                continue;
            }
            Ok(i) => i,
        };
        match (expected, info) {
            ("ok", Err(e)) => failures.push(format!("{name}: expected pixels, got error: {e}")),
            ("ok", Ok(info)) => {
                if let Err(msg) = compare(r, &info) {
                    failures.push(format!("{name}: {msg}"));
                }
            }
            (_, Ok(info)) => {
                failures.push(format!("{name}: expected an error ({expected}), decoded {:?} {}", info.pixels.shape, info.pixels.dtype))
            }
            (_, Err(e)) => {
                let msg = e.to_string();
                if msg.trim().is_empty() {
                    failures.push(format!("{name}: error without a message"));
                }
            }
        }
    }
    (checked, failures)
}

fn compare(r: &Value, info: &tandem::cli::info::Info) -> Result<(), String> {
    let shape: Vec<usize> = r["shape"].as_array().ok_or("no shape")?.iter().filter_map(|v| v.as_u64().map(|x| x as usize)).collect();
    if shape != info.pixels.shape {
        return Err(format!("shape {:?}, expected {shape:?}", info.pixels.shape));
    }
    let dtype = r["dtype"].as_str().unwrap_or("");
    if dtype != info.pixels.dtype {
        return Err(format!("dtype {}, expected {dtype}", info.pixels.dtype));
    }
    let lossy = r["lossy"].as_bool().unwrap_or(false);
    if !lossy {
        let sha = r["sha256"].as_str().unwrap_or("");
        return if sha == info.pixels.sha256 {
            Ok(())
        } else {
            Err(format!("sha256 differs on a lossless file (mean {} vs {})", info.pixels.mean, r["mean"]))
        };
    }
    // Lossy: sample values within ±2 (±4 for YBR colour, which is subsampled), mean within ±0.5.
    let ybr = info.samples_per_pixel == 3 && r["photometric"].as_str().unwrap_or("").contains("YBR");
    let tol = if ybr { 4.0 } else { 2.0 };
    let mean = r["mean"].as_f64().unwrap_or(f64::NAN);
    if (info.pixels.mean - mean).abs() > 0.5 {
        return Err(format!("mean {} vs {mean}", info.pixels.mean));
    }
    let samples = r["samples"].as_array().ok_or("no samples")?;
    let path = PathBuf::from(&info.path);
    let values = decoded_values(&path)?;
    for s in samples {
        let s: Vec<f64> = s.as_array().ok_or("bad sample")?.iter().filter_map(|v| v.as_f64()).collect();
        let (index, want) = s.split_at(s.len() - 1);
        let mut flat = 0usize;
        for (k, &i) in index.iter().enumerate() {
            flat = flat * shape[k] + i as usize;
        }
        let got = values[flat];
        if (got - want[0]).abs() > tol {
            return Err(format!("sample {index:?} = {got}, expected {} ± {tol}", want[0]));
        }
    }
    Ok(())
}

fn decoded_values(path: &Path) -> Result<Vec<f64>, String> {
    let (_, _, p) = tandem::study::pixels::read_file(path).map_err(|e| e.to_string())?;
    Ok((0..p.buf.len()).map(|i| p.buf.get(i)).collect())
}

fn reference() -> serde_json::Map<String, Value> {
    let bytes = std::fs::read("tests/data/dicom/reference.json").expect("reference.json");
    serde_json::from_slice::<Value>(&bytes).expect("json").as_object().expect("object").clone()
}

#[test]
fn every_test_file_decodes_like_pydicom() {
    let reference = reference();
    let (checked, failures) = check_dir(Path::new("tests/data/dicom"), &reference);
    assert!(checked >= 70, "only {checked} files checked");
    assert!(failures.is_empty(), "{} of {checked} files differ:\n{}", failures.len(), failures.join("\n"));
}

/// The files left out of the repository, when a full copy of the set is available.
#[test]
fn full_set_when_available() {
    let Some(dir) = std::env::var_os("TANDEM_CONFORMANCE_DIR") else {
        eprintln!("TANDEM_CONFORMANCE_DIR not set: the 4 large files are not checked");
        return;
    };
    let reference = reference();
    let (checked, failures) = check_dir(Path::new(&dir), &reference);
    assert_eq!(checked, reference.len(), "files missing from {}", PathBuf::from(&dir).display());
    assert!(failures.is_empty(), "{} of {checked} files differ:\n{}", failures.len(), failures.join("\n"));
}
