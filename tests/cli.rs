//! The command-line contracts other tools rely on: `tandem info`, `ground`, `eval medsg` and
//! `annotations`, including exit codes and error lines for bad input.

use std::process::{Command, Output};

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem")).args(args).env("TANDEM_DEVICE", "cpu").output().expect("run tandem")
}

fn one_error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "stdout must be empty on error: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    err
}

#[test]
fn info_json_meets_the_contract() {
    let out = tandem(&["info", "tests/data/dicom/emri_small_RLE.dcm", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "one JSON object on one line");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "path",
            "modality",
            "transfer_syntax",
            "rows",
            "cols",
            "frames",
            "samples_per_pixel",
            "photometric",
            "bits_allocated",
            "bits_stored",
            "pixel_representation",
            "pixels"
        ]
    );
    let pixel_keys: Vec<&str> = v["pixels"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(pixel_keys, ["shape", "dtype", "sha256", "min", "max", "mean"]);
    assert_eq!(v["frames"], 10);
    assert_eq!(v["pixels"]["shape"], serde_json::json!([10, 64, 64]));
    assert_eq!(v["pixels"]["dtype"], "uint16");
    assert_eq!(v["transfer_syntax"], "1.2.840.10008.1.2.5");
    assert_eq!(v["modality"], "MR");
}

#[test]
fn info_agrees_with_the_reference_for_colour_and_palette() {
    let reference: serde_json::Value = serde_json::from_slice(&std::fs::read("tests/data/dicom/reference.json").unwrap()).unwrap();
    for name in ["examples_ybr_color.dcm", "OBXXXX1A.dcm", "SC_rgb_rle_32bit_2frame.dcm", "JPGExtended.dcm", "liver.dcm"] {
        let out = tandem(&["info", &format!("tests/data/dicom/{name}"), "--json"]);
        assert!(out.status.success(), "{name}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let r = &reference[name];
        assert_eq!(v["pixels"]["shape"], r["shape"], "{name}");
        assert_eq!(v["pixels"]["dtype"], r["dtype"], "{name}");
        assert_eq!(v["photometric"], r["photometric"], "{name}");
        assert_eq!(v["bits_stored"], r["bits_stored"], "{name}");
    }
}

#[test]
fn unreadable_files_exit_2_with_one_error_line() {
    for f in [
        "tests/data/dicom/MR_truncated.dcm",
        "tests/data/dicom/JPEG-lossy.dcm",
        "tests/data/dicom/rtplan.dcm",
        "tests/data/dicom/no_meta.dcm",
        "tests/data/dicom/badVR.dcm",
        "no/such/file.dcm",
        "Cargo.toml",
    ] {
        let err = one_error_line(&tandem(&["info", f, "--json"]));
        assert!(err.len() > 20, "{f}: {err}");
        one_error_line(&tandem(&["info", f]));
    }
}

#[test]
fn info_reads_raster_images() {
    let out = tandem(&["info", "tests/data/medsg-example/images/t7_a.png", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 336);
    assert_eq!(v["pixels"]["shape"], serde_json::json!([336, 336, 3]));
}

#[test]
fn ground_diff_writes_json_and_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("boxes.json");
    let doc = dir.path().join("doc.json");
    let out = tandem(&[
        "ground",
        "diff",
        "tests/data/medsg-example/images/t1_a.png",
        "tests/data/medsg-example/images/t1_b.png",
        "--json",
        json.to_str().unwrap(),
        "--annotations",
        doc.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let first = &v["proposals"][0];
    let b = &first["target_box"];
    // The example's change is at [172, 122, 228, 178].
    let found = tandem::grounding::BBox::new(
        b["x1"].as_f64().unwrap() as f32,
        b["y1"].as_f64().unwrap() as f32,
        b["x2"].as_f64().unwrap() as f32,
        b["y2"].as_f64().unwrap() as f32,
    );
    assert!(found.iou(&tandem::grounding::BBox::new(172.0, 122.0, 228.0, 178.0)) > 0.5, "{found:?}");
    let score = first["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    let validate = tandem(&["annotations", "validate", doc.to_str().unwrap()]);
    assert!(validate.status.success(), "{}", String::from_utf8_lossy(&validate.stderr));
    let coco = dir.path().join("coco.json");
    let exp = tandem(&["annotations", "export", doc.to_str().unwrap(), "--format", "coco", "--out", coco.to_str().unwrap()]);
    assert!(exp.status.success());
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&coco).unwrap()).unwrap();
    assert!(!c["annotations"].as_array().unwrap().is_empty());
}

#[test]
fn ground_locate_and_bad_boxes() {
    let out = tandem(&[
        "ground",
        "locate",
        "tests/data/medsg-example/images/t6_src.png",
        "--box",
        "60,200,130,250",
        "tests/data/medsg-example/images/t6_src.png",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[60, 200, 130, 250]"), "{}", String::from_utf8_lossy(&out.stdout));
    one_error_line(&tandem(&[
        "ground",
        "locate",
        "tests/data/medsg-example/images/t6_src.png",
        "--box",
        "1,2,3",
        "tests/data/medsg-example/images/t6_src.png",
    ]));
    one_error_line(&tandem(&["ground", "diff", "tests/data/dicom/MR_truncated.dcm", "tests/data/medsg-example/images/t1_b.png"]));
}

#[test]
fn eval_medsg_runs_every_task_of_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let preds = dir.path().join("preds.json");
    for method in ["model", "baseline"] {
        let out = tandem(&[
            "eval",
            "medsg",
            "tests/data/medsg-example/example.json",
            "--predictions",
            preds.to_str().unwrap(),
            "--method",
            method,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let table = String::from_utf8_lossy(&out.stdout);
        for task in ["Registered_Diff", "Non_Registered_Diff", "multi_view", "object_tracking", "patch", "crossmodal"] {
            assert!(table.contains(task), "{task} missing from\n{table}");
        }
        let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&preds).unwrap()).unwrap();
        assert_eq!(p.as_object().unwrap().len(), 6, "{p}");
        for (_, b) in p.as_object().unwrap() {
            assert_eq!(b.as_array().unwrap().len(), 4);
        }
    }
    one_error_line(&tandem(&["eval", "medsg", "tests/data/dicom/reference.json"]));
}
