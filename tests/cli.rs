//! The command-line contracts other tools rely on: `tandem info`, `ground`, `eval medsg`,
//! `eval compare` and `annotations`, including exit codes and error lines for bad input.

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
    for method in ["model", "baseline"] {
        // One file per run: an existing predictions file is replaced only with --force.
        let preds = dir.path().join(format!("preds-{method}.json"));
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

#[test]
fn eval_compare_reads_the_shipped_report_and_rejects_a_truncated_one() {
    // The shipped report against itself: every row compared, nothing lost, kept.
    let out = tandem(&["eval", "compare", "models/ood.json", "models/ood.json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| family growth, validation images | T1 Registered_Diff | 160 |"), "{table}");
    assert!(table.contains("(+0)") && table.ends_with("kept\n") && !table.contains("not kept"), "{table}");
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.json");
    let text = std::fs::read_to_string("models/ood.json").unwrap();
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let err = one_error_line(&tandem(&["eval", "compare", "models/ood.json", cut.to_str().unwrap()]));
    assert!(err.contains("not an `eval ood --json` report"), "{err}");
}

// ----- outputs never clobber inputs or reviewed work (issue 18) ------------------------------

fn path_str(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// The t1 example pair copied into `dir` (the tests write beside them).
fn pair_in(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (prior, current) = (dir.join("prior.png"), dir.join("current.png"));
    std::fs::copy("tests/data/medsg-example/images/t1_a.png", &prior).unwrap();
    std::fs::copy("tests/data/medsg-example/images/t1_b.png", &current).unwrap();
    (prior, current)
}

fn ground_diff(prior: &std::path::Path, current: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = vec!["ground", "diff", path_str(prior), path_str(current), "--method", "baseline"];
    args.extend_from_slice(extra);
    tandem(&args)
}

#[test]
fn ground_diff_never_writes_over_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (prior, current) = pair_in(dir.path());
    let (prior_bytes, current_bytes) = (std::fs::read(&prior).unwrap(), std::fs::read(&current).unwrap());
    let hard = dir.path().join("hard-link.png");
    std::fs::hard_link(&prior, &hard).unwrap();
    let soft = dir.path().join("soft-link.png");
    std::os::unix::fs::symlink(&current, &soft).unwrap();
    let spelled = dir.path().join(".").join("prior.png");
    for (flag, out) in [
        ("--annotations", prior.as_path()),
        ("--json", current.as_path()),
        ("--annotations", hard.as_path()),
        ("--json", soft.as_path()),
        ("--json", spelled.as_path()),
    ] {
        for extra in [&[][..], &["--force"], &["--replace"]] {
            let mut args = vec![flag, path_str(out)];
            args.extend_from_slice(extra);
            let err = one_error_line(&ground_diff(&prior, &current, &args));
            assert!(err.contains("also an input"), "{flag} {}: {err}", out.display());
        }
    }
    // Two outputs that are one file would clobber each other.
    let both = dir.path().join("out.json");
    let err = one_error_line(&ground_diff(&prior, &current, &["--json", path_str(&both), "--annotations", path_str(&both)]));
    assert!(err.contains("same file"), "{err}");
    assert!(!both.exists());
    assert_eq!(std::fs::read(&prior).unwrap(), prior_bytes, "the prior is untouched");
    assert_eq!(std::fs::read(&current).unwrap(), current_bytes, "the current is untouched");
    let mut names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["current.png", "hard-link.png", "prior.png", "soft-link.png"], "nothing else was written");
}

#[test]
fn existing_outputs_are_replaced_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let (prior, current) = pair_in(dir.path());
    let json = dir.path().join("boxes.json");
    std::fs::write(&json, b"keep me").unwrap();
    let err = one_error_line(&ground_diff(&prior, &current, &["--json", path_str(&json)]));
    assert!(err.contains("exists; pass --force to replace it"), "{err}");
    assert_eq!(std::fs::read(&json).unwrap(), b"keep me");
    let out = ground_diff(&prior, &current, &["--json", path_str(&json), "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(serde_json::from_slice::<serde_json::Value>(&std::fs::read(&json).unwrap()).is_ok());

    // ground locate --json
    std::fs::write(&json, b"keep me").unwrap();
    let locate = |extra: &[&str]| {
        let mut args = vec!["ground", "locate", path_str(&prior), "--box", "60,60,120,120", path_str(&current), "--method", "baseline"];
        args.extend_from_slice(extra);
        tandem(&args)
    };
    assert!(one_error_line(&locate(&["--json", path_str(&json)])).contains("exists; pass --force to replace it"));
    assert!(one_error_line(&locate(&["--json", path_str(&current), "--force"])).contains("also an input"));
    assert_eq!(std::fs::read(&json).unwrap(), b"keep me");
    assert!(locate(&["--json", path_str(&json), "--force"]).status.success());

    // eval medsg --predictions: the task file and its images are inputs.
    let task = dir.path().join("task.json");
    std::fs::copy("tests/data/medsg-example/example.json", &task).unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let task_bytes = std::fs::read(&task).unwrap();
    let eval = |out: &std::path::Path, force: bool| {
        let mut args = vec!["eval", "medsg", path_str(&task), "--images-root", "tests/data/medsg-example", "--predictions", path_str(out)];
        if force {
            args.push("--force");
        }
        tandem(&args)
    };
    assert!(one_error_line(&eval(&task, true)).contains("also an input"));
    assert_eq!(std::fs::read(&task).unwrap(), task_bytes);
    let image = std::path::Path::new("tests/data/medsg-example/images/t1_a.png");
    let image_bytes = std::fs::read(image).unwrap();
    assert!(one_error_line(&eval(image, true)).contains("also an input"));
    assert_eq!(std::fs::read(image).unwrap(), image_bytes);
    std::fs::write(&json, b"keep me").unwrap();
    assert!(one_error_line(&eval(&json, false)).contains("exists; pass --force to replace it"));
    assert_eq!(std::fs::read(&json).unwrap(), b"keep me");

    // synth and train refuse before they start.
    let synth_dir = dir.path().join("synth");
    std::fs::create_dir(&synth_dir).unwrap();
    std::fs::write(synth_dir.join("validation.json"), b"[]").unwrap();
    let err = one_error_line(&tandem(&["synth", "--out", path_str(&synth_dir), "--data", path_str(dir.path()), "--per-task", "1"]));
    assert!(err.contains("exists; pass --force to replace it"), "{err}");
    std::fs::remove_file(synth_dir.join("validation.json")).unwrap();
    std::fs::create_dir(synth_dir.join("images")).unwrap();
    std::fs::write(synth_dir.join("images/T1_0000_0.png"), b"png").unwrap();
    let err = one_error_line(&tandem(&["synth", "--split", "train", "--out", path_str(&synth_dir), "--data", path_str(dir.path())]));
    assert!(err.contains("exists; pass --force to replace it"), "{err}");
    assert_eq!(std::fs::read(synth_dir.join("images/T1_0000_0.png")).unwrap(), b"png");
    // Leaving acquisition differences out means the second rendering's.
    let err = one_error_line(&tandem(&[
        "synth",
        "--split",
        "train",
        "--second-without",
        "contrast",
        "--out",
        path_str(&synth_dir),
        "--data",
        path_str(dir.path()),
        "--force",
    ]));
    assert!(err.contains("--rendering second only"), "{err}");
    assert_eq!(std::fs::read(synth_dir.join("images/T1_0000_0.png")).unwrap(), b"png");
    let weights = dir.path().join("grounder.bpk");
    std::fs::write(&weights, b"weights").unwrap();
    let err = one_error_line(&tandem(&["train", "--out", path_str(&weights), "--data", path_str(dir.path()), "--steps", "1"]));
    assert!(err.contains("exists; pass --force to replace it"), "{err}");
    let err = one_error_line(&tandem(&["train", "--out", path_str(&task), "--validation", path_str(&task), "--force"]));
    assert!(err.contains("also an input"), "{err}");
    assert_eq!(std::fs::read(&weights).unwrap(), b"weights");
}

fn load_doc(p: &std::path::Path) -> tandem::annotation::Document {
    tandem::annotation::io::load(p).unwrap()
}

#[test]
fn ground_diff_merges_into_a_reviewed_document() {
    use tandem::annotation::{Finding, FindingKind, ImageBox, Source, Status, io};
    let dir = tempfile::tempdir().unwrap();
    let (prior, current) = pair_in(dir.path());
    let doc_path = dir.path().join("reviewed.json");
    let out = ground_diff(&prior, &current, &["--annotations", path_str(&doc_path)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Only proposals: rerunning needs --force (it would replace the document).
    let before = std::fs::read(&doc_path).unwrap();
    let err = one_error_line(&ground_diff(&prior, &current, &["--annotations", path_str(&doc_path)]));
    assert!(err.contains("exists; pass --force to replace it"), "{err}");
    assert_eq!(std::fs::read(&doc_path).unwrap(), before);

    // A reviewer accepts the first proposal, rejects the rest and draws a box of their own.
    let mut doc = load_doc(&doc_path);
    assert!(!doc.findings.is_empty());
    let t = "2026-03-01T10:00:00.000Z";
    for (k, f) in doc.findings.iter_mut().enumerate() {
        let (status, action) = if k == 0 { (Status::Accepted, "accept") } else { (Status::Rejected, "reject") };
        f.status = status;
        f.touch(t, action, None);
    }
    doc.findings.push(Finding::new(
        FindingKind::Manual,
        "calcification",
        vec![ImageBox::new("current", 0, tandem::grounding::BBox::new(5.0, 5.0, 30.0, 30.0))],
        Source::Human { user: Some("reader1".into()) },
        t,
    ));
    doc.extra.insert("workflow".into(), serde_json::json!({"round": 2}));
    io::save(&doc, &doc_path).unwrap();
    let reviewed = load_doc(&doc_path);

    // A new run merges into it: every reviewed finding is kept as it was, history included.
    let out = ground_diff(&prior, &current, &["--annotations", path_str(&doc_path), "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("merged"), "{}", String::from_utf8_lossy(&out.stderr));
    let merged = load_doc(&doc_path);
    for f in &reviewed.findings {
        assert_eq!(merged.finding(&f.id), Some(f), "reviewed finding {} kept as it was", f.id);
    }
    assert_eq!(merged.extra["workflow"], serde_json::json!({"round": 2}));
    // The new proposals of the same places were left out: the reviewer decided there already.
    assert_eq!(merged.findings.len(), reviewed.findings.len(), "{merged:#?}");

    // The same without --force: merging destroys nothing, so it needs no flag.
    let out = ground_diff(&prior, &current, &["--annotations", path_str(&doc_path)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(load_doc(&doc_path).findings, merged.findings);

    // Annotations of other images are not merged into: --replace or another file.
    let other_prior = dir.path().join("t2_a.png");
    let other_current = dir.path().join("t2_b.png");
    std::fs::copy("tests/data/medsg-example/images/t2_a.png", &other_prior).unwrap();
    std::fs::copy("tests/data/medsg-example/images/t2_b.png", &other_current).unwrap();
    let json = dir.path().join("boxes.json");
    let before = std::fs::read(&doc_path).unwrap();
    let err =
        one_error_line(&ground_diff(&other_prior, &other_current, &["--json", path_str(&json), "--annotations", path_str(&doc_path)]));
    assert!(err.contains("--replace"), "{err}");
    assert_eq!(std::fs::read(&doc_path).unwrap(), before);
    assert!(!json.exists(), "nothing is written when one output is refused");

    // --replace starts afresh.
    let out = ground_diff(&prior, &current, &["--annotations", path_str(&doc_path), "--replace"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fresh = load_doc(&doc_path);
    assert!(fresh.findings.iter().all(|f| f.status == Status::Proposed && f.log.len() == 1), "{fresh:#?}");
}

/// A document on one DICOM-like image, for the export and validation checks below.
fn export_doc(height: u32, frames: u32, label: &str, frame: u32, bbox: [f32; 4], sop: &str) -> tandem::annotation::Document {
    use tandem::annotation::{Document, Finding, FindingKind, ImageBox, ImageRef, Source};
    let img = ImageRef {
        id: "current".into(),
        path: "scan.dcm".into(),
        sop_instance_uid: Some(sop.into()),
        // Secondary Capture holds one frame; a multi-frame one is its multi-frame variant.
        sop_class_uid: Some(if frames > 1 { "1.2.840.10008.5.1.4.1.1.7.3" } else { "1.2.840.10008.5.1.4.1.1.7" }.into()),
        width: 600,
        height,
        frames,
        ..Default::default()
    };
    let mut doc = Document::new(vec![img]);
    let mut f = Finding::new(
        FindingKind::Manual,
        "x",
        vec![ImageBox::new("current", frame, tandem::grounding::BBox::from_array(bbox))],
        Source::Human { user: None },
        "2026-01-01T00:00:00.000Z",
    );
    f.label = label.into();
    doc.findings.push(f);
    doc
}

#[test]
fn validate_refuses_what_an_export_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let doc_path = dir.path().join("doc.json");
    let long = "x".repeat(100);
    let cases = [
        ("empty label", export_doc(100, 1, "", 0, [1.0, 1.0, 9.0, 9.0], "1.2.3.4"), "empty label"),
        ("100-character label", export_doc(100, 1, &long, 0, [1.0, 1.0, 9.0, 9.0], "1.2.3.4"), "64 characters"),
        ("frame 4294967295", export_doc(100, 3, "nodule", u32::MAX, [1.0, 1.0, 9.0, 9.0], "1.2.3.4"), "frame 4294967295"),
        ("frame = frame count", export_doc(100, 3, "nodule", 3, [1.0, 1.0, 9.0, 9.0], "1.2.3.4"), "frame 3"),
        ("non-UID SOP Instance UID", export_doc(100, 1, "nodule", 0, [1.0, 1.0, 9.0, 9.0], "DOE^JOHN"), "not a DICOM UID"),
        ("leading zero in a UID", export_doc(100, 1, "nodule", 0, [1.0, 1.0, 9.0, 9.0], "1.02.3"), "not a DICOM UID"),
        ("box outside a 1-pixel-tall image", export_doc(1, 1, "nodule", 0, [357.0, 0.0, 565.0, 60.0], "1.2.3.4"), "outside"),
    ];
    for (what, doc, says) in cases {
        tandem::annotation::io::save(&doc, &doc_path).unwrap();
        let err = one_error_line(&tandem(&["annotations", "validate", path_str(&doc_path)]));
        assert!(err.contains(says), "{what}: {err}");
        // The SR exporter refuses it too, cleanly and without writing anything.
        let out = dir.path().join("report.dcm");
        let err = one_error_line(&tandem(&["annotations", "export", path_str(&doc_path), "--format", "sr", "--out", path_str(&out)]));
        assert!(err.contains(says), "{what}: {err}");
        assert!(!out.exists(), "{what}: nothing written");
    }
    // What validates exports in every format.
    tandem::annotation::io::save(&export_doc(100, 3, "nodule", 2, [1.0, 1.0, 9.0, 9.0], "1.2.3.4"), &doc_path).unwrap();
    let ok = tandem(&["annotations", "validate", path_str(&doc_path)]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    for (format, name) in [("coco", "c.json"), ("medsg", "m.json"), ("sr", "r.dcm")] {
        let out = tandem(&["annotations", "export", path_str(&doc_path), "--format", format, "--out", path_str(&dir.path().join(name))]);
        assert!(out.status.success(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sr = dicom_object::open_file(dir.path().join("r.dcm")).unwrap();
    let boxes = tandem::annotation::export::sr::read_boxes(&sr);
    assert_eq!(boxes, [("1.2.3.4".to_string(), 2, [1.0, 1.0, 9.0, 9.0])], "frame 2 is referenced as frame number 3");
}

#[test]
fn annotations_export_never_writes_over_its_document_or_images() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("scan.dcm");
    std::fs::write(&image, b"DICM pixels").unwrap();
    let mut doc = export_doc(100, 1, "nodule", 0, [1.0, 1.0, 9.0, 9.0], "1.2.3.4");
    doc.images[0].path = image.display().to_string();
    let doc_path = dir.path().join("doc.json");
    tandem::annotation::io::save(&doc, &doc_path).unwrap();
    let doc_bytes = std::fs::read(&doc_path).unwrap();
    for format in ["coco", "medsg", "sr"] {
        for force in [false, true] {
            let mut args = vec!["annotations", "export", path_str(&doc_path), "--format", format, "--out", path_str(&doc_path)];
            if force {
                args.push("--force");
            }
            assert!(one_error_line(&tandem(&args)).contains("also an input"), "{format}");
            args[6] = path_str(&image);
            assert!(one_error_line(&tandem(&args)).contains("also an input"), "{format}");
        }
    }
    assert_eq!(std::fs::read(&doc_path).unwrap(), doc_bytes, "the document is untouched");
    assert_eq!(std::fs::read(&image).unwrap(), b"DICM pixels", "the image is untouched");
    let out = dir.path().join("coco.json");
    std::fs::write(&out, b"previous export").unwrap();
    let err = one_error_line(&tandem(&["annotations", "export", path_str(&doc_path), "--format", "coco", "--out", path_str(&out)]));
    assert!(err.contains("exists; pass --force to replace it"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"previous export");
    let ok = tandem(&["annotations", "export", path_str(&doc_path), "--format", "coco", "--out", path_str(&out), "--force"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

/// The demo pair (assets/ prior and its synthetic follow-up) at a quarter size, written as PNGs
/// into `dir`, with a document holding an accepted manual box on the prior and the proposed
/// change box on the current; returns (prior, current, annotations, change box in current px).
fn demo_snapshot_inputs(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf, [f32; 4]) {
    use tandem::annotation::{Document, Finding, FindingKind, ImageBox, Source};
    use tandem::grounding::BBox;
    let demo = tandem::viewer::demo::demo_pair().unwrap();
    let quarter = |s: &tandem::study::Series, path: &std::path::Path| {
        let f = &s.frames[0];
        let samples = f.samples().unwrap();
        let tandem::study::Samples::Gray(v) = &*samples else { panic!("demo is grey") };
        let img =
            image::GrayImage::from_raw(f.width as u32, f.height as u32, v.iter().map(|&g| g.round().clamp(0.0, 255.0) as u8).collect())
                .unwrap();
        let small = image::imageops::resize(&img, f.width as u32 / 4, f.height as u32 / 4, image::imageops::FilterType::Triangle);
        small.save(path).unwrap();
    };
    let (prior, current, doc_path) = (dir.join("prior.png"), dir.join("current.png"), dir.join("doc.json"));
    quarter(&demo.prior, &prior);
    quarter(&demo.current, &current);
    let c = demo.change;
    let change = [(c.x1 / 4.0).floor(), (c.y1 / 4.0).floor(), (c.x2 / 4.0).ceil(), (c.y2 / 4.0).ceil()];
    let mut doc = Document::new(vec![]);
    let model = Source::Model { id: "test".into(), version: "1".into(), score: 0.9 };
    doc.findings.push(Finding::new(FindingKind::Change, "change", vec![ImageBox::new("current", 0, BBox::from_array(change))], model, "t"));
    let human = Source::Human { user: None };
    doc.findings.push(Finding::new(
        FindingKind::Manual,
        "landmark",
        vec![ImageBox::new("prior", 0, BBox::new(20.0, 30.0, 60.0, 70.0))],
        human,
        "t",
    ));
    std::fs::write(&doc_path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    (prior, current, doc_path, change)
}

/// Compares `actual` with the committed reference `tests/data/snapshot/NAME` (mean absolute
/// difference below 2/255); UPDATE_SNAPSHOTS=1 writes the reference instead.
fn assert_like_reference(actual: &image::RgbaImage, name: &str) {
    let path = std::path::Path::new("tests/data/snapshot").join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        actual.save(&path).unwrap();
    }
    let reference = image::open(&path).unwrap_or_else(|e| panic!("{e} ({}); run with UPDATE_SNAPSHOTS=1 once", path.display())).to_rgba8();
    assert_eq!(actual.dimensions(), reference.dimensions(), "{name}");
    let total: u64 = actual.as_raw().iter().zip(reference.as_raw()).map(|(a, b)| a.abs_diff(*b) as u64).sum();
    let mean = total as f64 / actual.as_raw().len() as f64;
    assert!(mean < 2.0, "{name}: mean abs diff {mean:.2}/255");
}

#[test]
fn snapshot_renders_the_demo_pair_with_its_boxes_headless() {
    let dir = tempfile::tempdir().unwrap();
    let (prior, current, doc, change) = demo_snapshot_inputs(dir.path());
    let (w, h) = image::image_dimensions(&prior).unwrap();
    let gap = tandem::snapshot::GAP_PX as u32;
    for (mode, name) in [("side-by-side", "demo_side_by_side.png"), ("subtract", "demo_subtract.png")] {
        let out = dir.path().join(format!("{mode}.png"));
        let res = tandem(&[
            "snapshot",
            path_str(&prior),
            path_str(&current),
            "--annotations",
            path_str(&doc),
            "--mode",
            mode,
            "--out",
            path_str(&out),
        ]);
        assert!(res.status.success(), "{mode}: {}", String::from_utf8_lossy(&res.stderr));
        let img = image::open(&out).unwrap().to_rgba8();
        assert_eq!(img.dimensions(), (2 * w + gap, h), "{mode}: prior | gap | right pane");
        // The boxes' corners, in their kind's colour, on their pixels: the manual box on the prior
        // (left), the proposed change box (dashes start at its top-left corner) on the current.
        assert_eq!(img.get_pixel(20, 30).0, [110, 230, 120, 255], "{mode}: manual box on the prior");
        assert_eq!(img.get_pixel(59, 69).0, [110, 230, 120, 255], "{mode}: its far corner");
        let (cx, cy) = (w + gap + change[0] as u32, change[1] as u32);
        assert_eq!(img.get_pixel(cx, cy).0, [255, 150, 40, 255], "{mode}: change box on the current");
        assert_like_reference(&img, name);
    }
    // The subtraction is dark away from the change and bright inside it (the demo's nodule is
    // denser on the current).
    let sub = image::open(dir.path().join("subtract.png")).unwrap().to_rgba8();
    let bright = |x0: u32, y0: u32, x1: u32, y1: u32| {
        let px: Vec<u32> =
            (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).map(|(x, y)| sub.get_pixel(w + gap + x, y).0[0] as u32).collect();
        px.iter().sum::<u32>() as f32 / px.len() as f32
    };
    let (x1, y1, x2, y2) = (change[0] as u32 + 3, change[1] as u32 + 3, change[2] as u32 - 3, change[3] as u32 - 3);
    assert!(bright(x1, y1, x2, y2) > 3.0 * bright(0, 0, w, h).max(1.0), "{} vs {}", bright(x1, y1, x2, y2), bright(0, 0, w, h));
}

#[test]
fn snapshot_refuses_bad_input_and_never_writes_over_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let (prior, current, doc, _) = demo_snapshot_inputs(dir.path());
    let before = std::fs::read(&prior).unwrap();
    for out in [&prior, &current, &doc] {
        let err = one_error_line(&tandem(&[
            "snapshot",
            path_str(&prior),
            path_str(&current),
            "--annotations",
            path_str(&doc),
            "--out",
            path_str(out),
            "--force",
        ]));
        assert!(err.contains("also an input"), "{err}");
    }
    assert_eq!(std::fs::read(&prior).unwrap(), before, "the prior is untouched");
    let out = dir.path().join("out.png");
    let missing = dir.path().join("missing.png");
    one_error_line(&tandem(&["snapshot", path_str(&missing), path_str(&current), "--out", path_str(&out)]));
    one_error_line(&tandem(&["snapshot", path_str(&prior), path_str(&current), "--mode", "sideways", "--out", path_str(&out)]));
    one_error_line(&tandem(&[
        "snapshot",
        path_str(&prior),
        path_str(&current),
        "--annotations",
        path_str(&prior),
        "--out",
        path_str(&out),
    ]));
    one_error_line(&tandem(&["snapshot", path_str(&prior), path_str(&current), "--frame", "3", "--out", path_str(&out)]));
    assert!(!out.exists(), "nothing written on error");
    // An existing output is replaced only with --force.
    std::fs::write(&out, b"keep").unwrap();
    let err = one_error_line(&tandem(&["snapshot", path_str(&prior), path_str(&current), "--out", path_str(&out)]));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    assert!(tandem(&["snapshot", path_str(&prior), path_str(&current), "--out", path_str(&out), "--force"]).status.success());
    assert!(image::open(&out).is_ok());
}
