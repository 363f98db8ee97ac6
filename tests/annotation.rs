//! The annotation document on disk: byte-stable round trips, unknown fields kept, corrupt files
//! refused without touching them, saves that survive SIGKILL, and exports read back by peers.

use std::path::Path;
use std::process::Command as Process;

use tandem::annotation::export::{self, ExportFormat};
use tandem::annotation::{Command, Document, Finding, FindingKind, History, ImageBox, ImageRef, Source, Status, io};
use tandem::grounding::BBox;

fn image(id: &str, sop: &str, frames: u32) -> ImageRef {
    ImageRef {
        id: id.into(),
        path: format!("/data/{id}.dcm"),
        sop_instance_uid: Some(sop.into()),
        // CT Image Storage holds one frame; a multi-frame CT is Enhanced CT.
        sop_class_uid: Some(if frames > 1 { "1.2.840.10008.5.1.4.1.1.2.1" } else { "1.2.840.10008.5.1.4.1.1.2" }.into()),
        study_instance_uid: Some("1.2.3.4".into()),
        // Well formed (digits and dots), as the SR exporter requires.
        series_instance_uid: Some(format!("{sop}.9")),
        width: 512,
        height: 512,
        frames,
        patient_id: Some("PID-123".into()),
        patient_name: Some("Doe^Jane".into()),
        patient_birth_date: Some("19700101".into()),
        study_date: Some("20250301".into()),
        ..Default::default()
    }
}

fn sample_document() -> Document {
    let mut doc = Document::new(vec![image("prior", "1.2.3.4.5.1", 1), image("current", "1.2.3.4.5.2", 3)]);
    let t = "2026-01-01T00:00:00.000Z";
    let mut change = Finding::new(
        FindingKind::Change,
        "nodule",
        vec![ImageBox::new("prior", 0, BBox::new(10.0, 20.0, 40.5, 60.25)), ImageBox::new("current", 2, BBox::new(12.0, 18.0, 45.0, 66.0))],
        Source::Model { id: "tandem-grounder".into(), version: "0.1.0".into(), score: 0.913 },
        t,
    );
    change.status = Status::Accepted;
    let manual = Finding::new(
        FindingKind::Manual,
        "artifact",
        vec![ImageBox::new("current", 0, BBox::new(100.0, 100.0, 130.0, 120.0))],
        Source::Human { user: Some("ann".into()) },
        t,
    );
    let mut rejected = Finding::new(
        FindingKind::Change,
        "change",
        vec![ImageBox::new("current", 0, BBox::new(1.0, 1.0, 9.0, 9.0))],
        Source::Model { id: "tandem-grounder".into(), version: "0.1.0".into(), score: 0.2 },
        t,
    );
    rejected.status = Status::Rejected;
    doc.findings = vec![change, manual, rejected];
    doc
}

#[test]
fn load_then_save_is_byte_stable() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("doc.json");
    io::save(&sample_document(), &p).unwrap();
    let first = std::fs::read(&p).unwrap();
    let doc = io::load(&p).unwrap();
    io::save(&doc, &p).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), first);
    assert_eq!(doc, sample_document_with_ids(&doc));
}

/// The sample with the loaded ids (ids are random per construction).
fn sample_document_with_ids(loaded: &Document) -> Document {
    let mut d = sample_document();
    for (a, b) in d.findings.iter_mut().zip(&loaded.findings) {
        a.id = b.id.clone();
    }
    d
}

#[test]
fn unknown_fields_survive_a_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("doc.json");
    io::save(&sample_document(), &p).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v["workflow"] = serde_json::json!({"reader": "second", "round": 2});
    v["findings"][0]["birads"] = serde_json::json!("4a");
    v["findings"][0]["boxes"][1]["confidence_by_reader"] = serde_json::json!([0.9, 0.7]);
    v["images"][1]["scanner"] = serde_json::json!("XYZ");
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let doc = io::load(&p).unwrap();
    let out = dir.path().join("out.json");
    io::save(&doc, &out).unwrap();
    let w: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(w["workflow"], v["workflow"]);
    assert_eq!(w["findings"][0]["birads"], "4a");
    assert_eq!(w["findings"][0]["boxes"][1]["confidence_by_reader"], v["findings"][0]["boxes"][1]["confidence_by_reader"]);
    assert_eq!(w["images"][1]["scanner"], "XYZ");
}

#[test]
fn corrupt_or_truncated_files_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("doc.json");
    io::save(&sample_document(), &p).unwrap();
    let full = std::fs::read(&p).unwrap();
    for cut in [10, full.len() / 3, full.len() - 5] {
        std::fs::write(&p, &full[..cut]).unwrap();
        let before = std::fs::read(&p).unwrap();
        let err = io::load(&p).unwrap_err().to_string();
        assert!(err.contains("not valid JSON") || err.contains("incomplete"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), before, "a failed load must not touch the file");
    }
    std::fs::write(&p, br#"{"schema_version": 7, "images": [], "findings": []}"#).unwrap();
    assert!(io::load(&p).unwrap_err().to_string().contains("newer Tandem"));
    std::fs::write(&p, br#"{"schema_version": 1, "images": [], "findings": [{"id": "x"}]}"#).unwrap();
    assert!(io::load(&p).is_err());
    // The CLI says so with exit code 2 and one error line.
    let out = Process::new(env!("CARGO_BIN_EXE_tandem")).args(["annotations", "validate"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: ") && stderr.trim().lines().count() == 1, "{stderr}");
}

#[test]
fn history_undoes_every_kind_of_edit() {
    let mut doc = sample_document();
    let original = doc.clone();
    let mut h = History::default();
    let t = "2026-02-02T00:00:00.000Z";
    let added = Finding::new(
        FindingKind::Manual,
        "new",
        vec![ImageBox::new("current", 0, BBox::new(5.0, 5.0, 25.0, 25.0))],
        Source::Human { user: None },
        t,
    );
    h.apply(&mut doc, Command::Add { findings: vec![added], description: "draw".into() });
    let before = doc.findings[0].clone();
    let mut moved = before.clone();
    moved.boxes[1].bbox = [20.0, 20.0, 50.0, 70.0];
    moved.touch(t, "move", None);
    h.apply(&mut doc, Command::Replace { before, after: moved, description: "move".into() });
    let before = doc.findings[1].clone();
    let mut relabelled = before.clone();
    relabelled.label = "scar".into();
    h.apply(&mut doc, Command::Replace { before, after: relabelled, description: "relabel".into() });
    let removed = doc.findings[2].clone();
    h.apply(&mut doc, Command::Remove { index: 2, finding: removed });
    let edited = doc.clone();
    while h.undo(&mut doc).is_some() {}
    assert_eq!(doc, original);
    while h.redo(&mut doc).is_some() {}
    assert_eq!(doc, edited);
}

/// A child process saves in a loop; SIGKILL at random moments must always leave a document
/// that parses and is one of the versions the child wrote.
#[test]
fn saves_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("doc.json");
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..100 {
        let mut child = Process::new(env!("CARGO_BIN_EXE_tandem")).args(["annotations", "save-loop"]).arg(&p).spawn().unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(std::time::Duration::from_micros(2_000 + seed % 60_000));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        if !p.exists() {
            continue; // killed before the first save finished
        }
        let doc = io::load(&p).unwrap_or_else(|e| panic!("round {round}: the document on disk does not parse: {e}"));
        let version = doc.extra["version"].as_u64().expect("version");
        assert_eq!(doc.findings.len() as u64, version % 50, "round {round}: a mix of two versions");
        for (k, f) in doc.findings.iter().enumerate() {
            assert_eq!(f.label, format!("v{version}-{k}"), "round {round}");
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert!(leftovers.iter().filter(|n| n.to_string_lossy() == "doc.json").count() == 1);
}

#[test]
fn coco_export_has_boxes_and_scores_and_no_phi_by_default() {
    let doc = sample_document();
    let coco = export::coco::to_coco(&doc, false);
    let anns = coco["annotations"].as_array().unwrap();
    // Two findings are exported (the rejected one is not): 2 + 1 boxes.
    assert_eq!(anns.len(), 3);
    assert_eq!(anns[1]["bbox"], serde_json::json!([12.0, 18.0, 33.0, 48.0]));
    assert_eq!(anns[1]["score"], serde_json::json!(0.913f32));
    assert_eq!(anns[1]["frame"], 2);
    let text = serde_json::to_string(&coco).unwrap();
    for phi in ["PID-123", "Doe^Jane", "19700101"] {
        assert!(!text.contains(phi), "{phi} leaked into the COCO export");
    }
    assert!(serde_json::to_string(&export::coco::to_coco(&doc, true)).unwrap().contains("Doe^Jane"));
    let medsg = serde_json::to_string(&export::medsg::to_medsg(&doc, false)).unwrap();
    assert!(medsg.contains("Non_Registered_Diff") && !medsg.contains("Doe^Jane") && !medsg.contains("/data/"));
}

fn write_sr(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("report.dcm");
    export::export(&sample_document(), ExportFormat::Sr, &p, false).unwrap();
    p
}

#[test]
fn sr_export_reads_back_with_dicom_object() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_sr(dir.path());
    let obj = dicom_object::open_file(&p).unwrap();
    assert_eq!(obj.meta().media_storage_sop_class_uid(), "1.2.840.10008.5.1.4.1.1.88.33");
    let boxes = export::sr::read_boxes(&obj);
    let mut want = vec![
        ("1.2.3.4.5.1".to_string(), 0u32, [10.0f32, 20.0, 40.5, 60.25]),
        ("1.2.3.4.5.2".to_string(), 2u32, [12.0, 18.0, 45.0, 66.0]),
        ("1.2.3.4.5.2".to_string(), 0u32, [100.0, 100.0, 130.0, 120.0]),
    ];
    let mut got = boxes.clone();
    got.sort_by(|a, b| a.partial_cmp(b).unwrap());
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(got, want);
}

/// dcmtk's dsrdump, a peer implementation, parses the SR and sees the same coordinates.
#[test]
fn sr_export_reads_back_with_dcmtk() {
    if Process::new("dsrdump").arg("--version").output().is_err() {
        {
            // Written to the process's stderr, past the test harness's capture, so that the skip shows.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: dsrdump (dcmtk) not installed: peer check skipped (.ci/run installs it)");
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = write_sr(dir.path());
    let out = Process::new("dsrdump").args(["+Pl", "+Pc"]).arg(&p).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dsrdump failed: {}{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Imaging Measurement Report"), "{text}");
    assert!(text.contains("(126000,DCM,\"Imaging Measurement Report\")"), "{text}");
    // dsrdump prints SCOORD data as (POLYLINE,x1/y1,x2/y2,…).
    let polylines: Vec<String> = text.lines().filter(|l| l.contains("POLYLINE")).map(|l| l.replace(' ', "")).collect();
    assert_eq!(polylines.len(), 3, "{text}");
    for (x1, y1, x2, y2) in [(10.0, 20.0, 40.5, 60.25), (12.0, 18.0, 45.0, 66.0), (100.0, 100.0, 130.0, 120.0)] {
        let ring = format!("POLYLINE,{x1}/{y1},{x2}/{y1},{x2}/{y2},{x1}/{y2},{x1}/{y1})");
        assert!(polylines.iter().any(|l| l.contains(&ring)), "no polyline {ring} in:\n{text}");
    }
}

/// dicom3tools' dciodvfy, an independent IOD validator, finds no error in the SR.
#[test]
fn sr_export_validates_with_dciodvfy() {
    if Process::new("dciodvfy").arg("-help").output().is_err() {
        {
            // Written to the process's stderr, past the test harness's capture, so that the skip shows.
            use std::io::Write;
            let _ =
                writeln!(std::io::stderr(), "SKIPPED: dciodvfy (dicom3tools) not installed: SR validation skipped (.ci/run installs it)");
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = write_sr(dir.path());
    let out = Process::new("dciodvfy").arg(&p).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy errors:\n{report}");
    assert!(report.contains("ComprehensiveSR"), "dciodvfy did not recognise the IOD:\n{report}");
}

/// The observer context names the device properly and every finding keeps its tracking UID
/// across exports; content time carries its UTC offset.
#[test]
fn sr_tracking_uids_are_stable_across_exports() {
    use dicom_dictionary_std::tags;
    fn uidrefs(obj: &dicom_object::InMemDicomObject, concept: &str, out: &mut Vec<String>) {
        for e in obj.iter() {
            if let Some(items) = e.items() {
                for it in items {
                    let name = it
                        .get(tags::CONCEPT_NAME_CODE_SEQUENCE)
                        .and_then(|c| c.items())
                        .and_then(|c| c.first())
                        .and_then(|c| c.get(tags::CODE_VALUE))
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.trim().to_string());
                    if name.as_deref() == Some(concept)
                        && let Some(uid) = it.get(tags::UID)
                    {
                        out.push(uid.to_str().unwrap().trim_end_matches('\0').to_string());
                    }
                    uidrefs(it, concept, out);
                }
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.dcm"), dir.path().join("b.dcm"));
    let doc = sample_document();
    export::export(&doc, ExportFormat::Sr, &a, false).unwrap();
    export::export(&doc, ExportFormat::Sr, &b, false).unwrap();
    let (a, b) = (dicom_object::open_file(&a).unwrap(), dicom_object::open_file(&b).unwrap());
    let (mut ua, mut ub) = (Vec::new(), Vec::new());
    uidrefs(&a, "112040", &mut ua);
    uidrefs(&b, "112040", &mut ub);
    assert!(!ua.is_empty() && ua == ub, "{ua:?} vs {ub:?}");
    let mut device = Vec::new();
    uidrefs(&a, "121012", &mut device);
    assert_eq!(device.len(), 1, "one Device Observer UID");
    assert!(device[0].starts_with("2.25."));
    let offset = a.element(tags::TIMEZONE_OFFSET_FROM_UTC).unwrap().to_str().unwrap().to_string();
    assert!(offset.len() == 5 && (offset.starts_with('+') || offset.starts_with('-')), "{offset}");
    // A new SR, but the same findings.
    assert_ne!(a.element(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap(), b.element(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap());
}

// ----- nothing a user has is destroyed (issue 18) ---------------------------------------------

/// The sample with the paths and UIDs a Windows workstation would record.
fn windows_document() -> Document {
    let mut doc = sample_document();
    doc.images[0].path = r"C:\Users\DOE^JOHN\scans\DOE_JOHN_19400305_prior.dcm".into();
    doc.images[1].path = r"\\pacs-share\Radiology\DOE^JOHN\DOE_JOHN_19400305_current.dcm".into();
    doc.images[0].patient_name = Some("DOE^JOHN".into());
    doc.images[1].patient_name = Some("DOE^JOHN".into());
    doc
}

#[test]
fn exports_carry_no_file_names_or_uids_by_default() {
    let doc = windows_document();
    let coco = export::coco::to_coco(&doc, false);
    let medsg = export::medsg::to_medsg(&doc, false);
    for (what, text) in [("COCO", serde_json::to_string(&coco).unwrap()), ("MedSG", serde_json::to_string(&medsg).unwrap())] {
        for phi in ["DOE", "JOHN", "19400305", "Users", "Radiology", "pacs-share", "1.2.3.4.5.1", "1.2.3.4.5.2", "PID-123"] {
            assert!(!text.contains(phi), "{phi} leaked into the {what} export: {text}");
        }
    }
    let names: Vec<&str> = coco["images"].as_array().unwrap().iter().map(|i| i["file_name"].as_str().unwrap()).collect();
    for n in &names {
        assert!(n.starts_with("img-") && n.ends_with(".dcm") && n.len() == "img-".len() + 12 + ".dcm".len(), "{n}");
    }
    assert_ne!(names[0], names[1]);
    // Stable: the same path gets the same pseudonym in every export, COCO and MedSG alike.
    assert_eq!(export::coco::to_coco(&doc, false)["images"][0]["file_name"], names[0]);
    assert_eq!(medsg[0]["images"][0], names[0]);
    // UIDs: well formed, one per original UID within an export, and not the originals.
    let uids: Vec<String> =
        coco["images"].as_array().unwrap().iter().map(|i| i["sop_instance_uid"].as_str().unwrap().to_string()).collect();
    for u in &uids {
        assert!(u.starts_with("2.25.") && tandem::annotation::document::is_valid_uid(u), "{u}");
    }
    assert_ne!(uids[0], uids[1]);
    let one_export = export::UidPseudonyms::default();
    assert_eq!(one_export.map("1.2.3.4.5.1"), one_export.map("1.2.3.4.5.1"));
    assert_ne!(one_export.map("1.2.3.4.5.1"), one_export.map("1.2.3.4.5.2"));
    // --keep-phi keeps the file name (never the folders) and the UIDs.
    let kept = export::coco::to_coco(&doc, true);
    assert_eq!(kept["images"][0]["file_name"], "DOE_JOHN_19400305_prior.dcm");
    assert_eq!(kept["images"][1]["file_name"], "DOE_JOHN_19400305_current.dcm");
    assert_eq!(kept["images"][0]["sop_instance_uid"], "1.2.3.4.5.1");
}

#[test]
fn a_new_run_merges_into_reviewed_work() {
    let mut doc = sample_document();
    let reviewed: Vec<Finding> = doc.findings.clone();
    let untouched = Finding::new(
        FindingKind::Change,
        "change",
        vec![ImageBox::new("current", 0, BBox::new(300.0, 300.0, 340.0, 340.0))],
        Source::Model { id: "tandem-grounder".into(), version: "0.1.0".into(), score: 0.5 },
        "2026-01-01T00:00:00.000Z",
    );
    doc.findings.push(untouched.clone());
    let proposal = |b: BBox| {
        Finding::new(
            FindingKind::Change,
            "change",
            vec![ImageBox::new("current", 0, b)],
            Source::Model { id: "tandem-grounder".into(), version: "0.2.0".into(), score: 0.8 },
            "2026-02-01T00:00:00.000Z",
        )
    };
    // One new proposal on the accepted artifact's place, one on the rejected one's, one new.
    let new = vec![
        proposal(BBox::new(101.0, 100.0, 130.0, 121.0)),
        proposal(BBox::new(1.0, 1.0, 9.0, 9.5)),
        proposal(BBox::new(200.0, 200.0, 260.0, 250.0)),
    ];
    let fresh_id = new[2].id.clone();
    let m = doc.merge_proposals(new);
    assert_eq!((m.kept, m.replaced, m.added, m.skipped), (3, 1, 1, 2), "{m:?}");
    assert_eq!(&doc.findings[..3], &reviewed[..], "reviewed findings are kept as they were");
    assert!(doc.finding(&untouched.id).is_none(), "an earlier untouched proposal gives way");
    assert!(doc.finding(&fresh_id).is_some());
}

#[test]
fn saves_sweep_what_killed_saves_left_and_keep_mode_and_links() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();
    let real = dir.path().join("store/doc.json");
    let link = dir.path().join("doc.json");
    io::save(&sample_document(), &real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("store/doc.json", &link).unwrap();
    // Kill savers mid-way until one leaves a temporary file behind.
    let temps = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.contains(".tmp-")).collect()
    };
    for round in 0..200u64 {
        let mut child = Process::new(env!("CARGO_BIN_EXE_tandem")).args(["annotations", "save-loop"]).arg(&link).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_micros(3_000 + (round * 7919) % 40_000));
        child.kill().unwrap();
        child.wait().unwrap();
        if !temps(&dir.path().join("store")).is_empty() {
            break;
        }
    }
    // Whatever was left, a dead writer's temporary is there for certain.
    let mut dead = Process::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(dir.path().join(format!("store/.doc.json.tmp-{dead_pid}-1")), b"{\"schema_version\": 1, \"ima").unwrap();
    io::save(&sample_document(), &link).unwrap();
    assert_eq!(temps(&dir.path().join("store")), Vec::<String>::new(), "stale temporaries are swept by the next save");
    assert!(temps(dir.path()).is_empty());
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
    assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o600, "mode 600 stays 600");
    assert_eq!(io::load(&link).unwrap(), io::load(&real).unwrap());
    assert!(io::load(&real).unwrap().extra.get("version").is_none(), "the last save is the one on disk");
}

// ----- SR import (issue 16) --------------------------------------------------------------------

/// Export → `tandem annotations import` gives back every exported finding: boxes, labels, kinds,
/// status, sources and scores; rejected findings are not exported, so not imported.
#[test]
fn sr_export_then_import_is_lossless() {
    let dir = tempfile::tempdir().unwrap();
    let doc = sample_document();
    let sr = dir.path().join("report.dcm");
    export::export(&doc, ExportFormat::Sr, &sr, false).unwrap();
    let out = dir.path().join("imported.json");
    let run = Process::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["annotations", "import", sr.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let back = io::load(&out).unwrap();
    let exported: Vec<&Finding> = doc.findings.iter().filter(|f| f.status != Status::Rejected).collect();
    assert_eq!(back.findings.len(), exported.len());
    for f in exported {
        let g = back.finding(&f.id).unwrap_or_else(|| panic!("finding {} lost", f.id));
        assert_eq!((&g.label, g.kind, g.status, &g.source, &g.boxes), (&f.label, f.kind, f.status, &f.source, &f.boxes));
    }
    for i in &doc.images {
        let j = back.image(&i.id).unwrap();
        assert_eq!(
            (&j.sop_instance_uid, &j.series_instance_uid, &j.patient_id),
            (&i.sop_instance_uid, &i.series_instance_uid, &i.patient_id)
        );
    }
    // The imported document exports again, with the same tracking UIDs.
    let again = dir.path().join("again.dcm");
    export::export(&back, ExportFormat::Sr, &again, false).unwrap();
    let (a, b) = (dicom_object::open_file(&sr).unwrap(), dicom_object::open_file(&again).unwrap());
    assert_eq!(export::sr::read_boxes(&a), export::sr::read_boxes(&b));
}

/// A file that is not an SR, or an SR whose ROI is malformed: exit 2, one error line, no output.
#[test]
fn sr_import_refuses_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("imported.json");
    let truncated = dir.path().join("cut.dcm");
    let full = std::fs::read(write_sr(dir.path())).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    // test-SR.dcm: a real Basic Text SR whose one CIRCLE names no image.
    for input in [
        "tests/data/dicom/CT_small.dcm",
        "tests/data/dicom/no_meta.dcm",
        truncated.to_str().unwrap(),
        "no/such.sr",
        "tests/data/dicom/test-SR.dcm",
    ] {
        let run = Process::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["annotations", "import", input, "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(2), "{input}");
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(err.lines().count(), 1, "{input}: {err}");
        assert!(err.starts_with("error: "), "{input}: {err}");
        assert!(!out.exists(), "{input}: nothing written");
    }
}

// ----- measurements (issue 15) -----------------------------------------------------------------

/// The sample with a ruler in mm on the prior, an ellipse ROI in HU and a rectangle ROI in pixels
/// on the current (values as the viewer would have measured them).
fn measured_document() -> Document {
    use tandem::annotation::measurement::{Measured, Shape, Stats, line_box};
    let mut doc = sample_document();
    let t = "2026-01-01T00:00:00.000Z";
    let human = || Source::Human { user: Some("ann".into()) };
    let (a, z) = ([20.0f32, 30.0], [60.5f32, 30.0]);
    let mut ruler = Finding::new(FindingKind::Measurement, "ruler", vec![ImageBox::new("prior", 0, line_box(a, z))], human(), t);
    ruler.measurement = Some(Measured {
        shape: Shape::Line,
        points: vec![a, z],
        unit: "mm".into(),
        spacing: Some("imager_pixel_spacing".into()),
        length: Some(28.35),
        area: None,
        stats: None,
        extra: Default::default(),
    });
    let stats = |mean: f64, unit: Option<&str>| Stats {
        pixels: 314,
        mean,
        sd: 12.25,
        min: -40.0,
        max: 95.5,
        unit: unit.map(str::to_string),
        extra: Default::default(),
    };
    let mut ellipse = Finding::new(
        FindingKind::Measurement,
        "nodule density",
        vec![ImageBox::new("current", 2, BBox::new(200.0, 150.0, 220.0, 170.0))],
        human(),
        t,
    );
    ellipse.measurement = Some(Measured {
        shape: Shape::Ellipse,
        points: Vec::new(),
        unit: "mm".into(),
        spacing: Some("pixel_spacing".into()),
        length: None,
        area: Some(153.938_04),
        stats: Some(stats(41.178_2, Some("HU"))),
        extra: Default::default(),
    });
    let mut rectangle = Finding::new(
        FindingKind::Measurement,
        "rectangle ROI",
        vec![ImageBox::new("current", 0, BBox::new(10.0, 400.0, 40.0, 410.0))],
        human(),
        t,
    );
    rectangle.measurement = Some(Measured {
        shape: Shape::Rectangle,
        points: Vec::new(),
        unit: "px".into(),
        spacing: None,
        length: None,
        area: Some(300.0),
        stats: Some(stats(-3.5, None)),
        extra: Default::default(),
    });
    doc.findings.extend([ruler, ellipse, rectangle]);
    doc
}

/// Measurements are saved as schema version 3 (a document without one stays at version 1) and
/// read back exactly; a version 2 document (a track) still opens.
#[test]
fn measurements_are_saved_as_version_3_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("doc.json");
    let doc = measured_document();
    io::save(&doc, &p).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(v["schema_version"], 3);
    assert_eq!(v["findings"][3]["kind"], "measurement");
    assert_eq!(v["findings"][3]["measurement"]["shape"], "line");
    assert_eq!(v["findings"][4]["measurement"]["stats"]["unit"], "HU");
    let back = io::load(&p).unwrap();
    assert_eq!(back.findings, doc.findings);
    io::save(&sample_document(), &p).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(v["schema_version"], 1, "no measurement, no new version");
    // A ruler without its ends is refused with a reason.
    let mut bad = serde_json::to_value(&doc).unwrap();
    bad["findings"][3]["measurement"]["points"] = serde_json::json!([[1.0, 2.0]]);
    let e = io::parse(&serde_json::to_vec(&bad).unwrap()).unwrap_err().to_string();
    assert!(e.contains("needs two finite points"), "{e}");
}

/// COCO carries each measurement as a box; MedSG as a referring item on its one image.
#[test]
fn measurements_export_as_boxes_to_coco_and_medsg() {
    let doc = measured_document();
    let coco = export::coco::to_coco(&doc, false);
    let boxes: Vec<&serde_json::Value> =
        coco["annotations"].as_array().unwrap().iter().filter(|a| a["attributes"]["kind"] == "measurement").collect();
    assert_eq!(boxes.len(), 3);
    let ellipse = boxes.iter().find(|a| a["bbox"] == serde_json::json!([200.0, 150.0, 20.0, 20.0])).expect("the ellipse's box");
    assert_eq!(ellipse["frame"], 2);
    let medsg = export::medsg::to_medsg(&doc, false);
    let referring: Vec<&serde_json::Value> = medsg.as_array().unwrap().iter().filter(|i| i["task"] == "referring").collect();
    assert_eq!(referring.len(), 3);
    let r = referring.iter().find(|i| i["label"] == "nodule density").unwrap();
    assert_eq!(r["answer"], serde_json::json!([200, 150, 220, 170]));
    assert_eq!(r["images"].as_array().unwrap().len(), 1);
    assert!(r["measurement"].as_str().unwrap().starts_with("mean 41.2 HU"), "{r}");
}

fn write_measured_sr(dir: &Path, doc: &Document) -> std::path::PathBuf {
    let p = dir.join("measured.dcm");
    export::export(doc, ExportFormat::Sr, &p, false).unwrap();
    p
}

/// The SR holds each measurement as NUM items with UCUM units and its outline; importing it gives
/// back the measurements exactly (shape, geometry, values, units, spacing source).
#[test]
fn measurements_round_trip_through_the_sr() {
    let dir = tempfile::tempdir().unwrap();
    let doc = measured_document();
    let p = write_measured_sr(dir.path(), &doc);
    let (back, _) = tandem::annotation::import::import_file(&p, &[]).unwrap();
    for f in doc.findings.iter().filter(|f| f.kind == FindingKind::Measurement) {
        let g = back.finding(&f.id).unwrap_or_else(|| panic!("measurement {} lost", f.label));
        assert_eq!((g.kind, &g.label, &g.boxes, &g.source), (f.kind, &f.label, &f.boxes, &f.source));
        assert_eq!(g.measurement, f.measurement, "{}", f.label);
    }
}

/// dciodvfy finds no error in an SR with measurements, and dsrdump reads their values and units.
#[test]
fn an_sr_with_measurements_validates_and_dsrdump_reads_the_values() {
    let have = |tool: &str, arg: &str| Process::new(tool).arg(arg).output().is_ok();
    let dir = tempfile::tempdir().unwrap();
    let p = write_measured_sr(dir.path(), &measured_document());
    if have("dciodvfy", "-help") {
        let out = Process::new("dciodvfy").arg(&p).output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "dciodvfy errors:\n{report}");
    } else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: dciodvfy (dicom3tools) not installed (.ci/run installs it)");
    }
    if have("dsrdump", "--version") {
        let out = Process::new("dsrdump").args(["+Pl", "+Pc"]).arg(&p).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "dsrdump failed: {}{text}", String::from_utf8_lossy(&out.stderr));
        // dsrdump prints a NUM as ("value",(unit,UCUM,"meaning")).
        for want in [
            r#"Length")="28.35" (mm,UCUM,"millimeter")"#,
            r#"Area")="153.93804" (mm2,UCUM,"square millimeter")"#,
            r#"Mean")="41.1782" ([hnsf'U],UCUM,"Hounsfield unit")"#,
            r#"Standard Deviation")="12.25" ([hnsf'U]"#,
            r#"Minimum")="-40" ([hnsf'U]"#,
            r#"Maximum")="95.5" ([hnsf'U]"#,
            r#"Area")="300" ({square pixel},UCUM"#,
            "(ELLIPSE,200/160,220/160,210/150,210/170)",
            "(POLYLINE,20/30,60.5/30)",
        ] {
            assert!(text.replace(' ', "").contains(&want.replace(' ', "")), "no {want} in:\n{text}");
        }
    } else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: dsrdump (dcmtk) not installed (.ci/run installs it)");
    }
}
