//! Following a patient over time: whole-series change finding (`tandem ground series` and its
//! core), a lesion tracked through timepoints with its size (`tandem track`), and `tandem batch`
//! over a manifest in shards; JSON contracts, and exit 2 with one `error:` line on bad input. The
//! series are built here as DICOM files from a real CT slice (tests/data/dicom/CT_small.dcm) with
//! synthetic changes.

use std::path::Path;
use std::process::{Command, Output};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use tandem::grounding::BBox;
use tandem::grounding::series::{Matching, match_slices};
use tandem::study::GrayImage;

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

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The real CT slice the synthetic series are made of (HU).
fn ct() -> GrayImage {
    let quiet = |_: f32, _: &str| {};
    tandem::study::load(Path::new("tests/data/dicom/CT_small.dcm"), &quiet).unwrap().frames[0].to_gray()
}

/// Where a slice lies and which series it belongs to.
struct Slice<'a> {
    series_uid: &'a str,
    frame_of_reference: &'a str,
    instance: usize,
    /// z of Image Position (Patient); no geometry at all when `None`.
    z: Option<f64>,
}

fn write_slice(dir: &Path, slice: &Slice, img: &GrayImage) {
    let pixels: Vec<u16> = img.data.iter().map(|v| (v + 1024.0).round().clamp(0.0, 4095.0) as u16).collect();
    let sop = format!("{}.{}", slice.series_uid, slice.instance + 1);
    let mut elements = vec![
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
        DataElement::new(tags::PATIENT_ID, VR::LO, "SYNTH-1"),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, format!("{}.0", slice.series_uid)),
        DataElement::new(tags::STUDY_DATE, VR::DA, "20260101"),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, slice.series_uid),
        DataElement::new(tags::FRAME_OF_REFERENCE_UID, VR::UI, slice.frame_of_reference),
        DataElement::new(tags::MODALITY, VR::CS, "CT"),
        DataElement::new(tags::INSTANCE_NUMBER, VR::IS, (slice.instance + 1).to_string()),
        DataElement::new(tags::PIXEL_SPACING, VR::DS, "0.7\\0.7"),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(img.height as u16)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(img.width as u16)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
        DataElement::new(tags::RESCALE_SLOPE, VR::DS, "1"),
        DataElement::new(tags::WINDOW_CENTER, VR::DS, "40"),
        DataElement::new(tags::WINDOW_WIDTH, VR::DS, "400"),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ];
    if let Some(z) = slice.z {
        elements.push(DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, format!("0\\0\\{z}")));
        elements.push(DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"));
    }
    let obj = InMemDicomObject::from_element_iter(elements);
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)).unwrap();
    // Files named against their order along z, so that the position (not the name) orders them.
    file.write_to_file(dir.join(format!("im{:03}.dcm", 999 - slice.instance))).unwrap();
}

/// Slice `k` of the synthetic anatomy: the CT slice, shifted a little more at each level, with a
/// bright structure that moves across from slice to slice (so that no two levels look alike).
fn anatomy(base: &GrayImage, k: usize) -> GrayImage {
    let shifted = base.crop(k as isize, (k / 2) as isize, base.width, base.height, -1000.0);
    let cx = 20.0 + 11.0 * k as f32;
    GrayImage::from_fn(base.width, base.height, |x, y| {
        let d = ((x as f32 - cx).powi(2) + (y as f32 - 100.0).powi(2)).sqrt();
        shifted.get(x, y) + if d < 5.0 { 300.0 } else { 0.0 }
    })
}

/// A round lesion of radius `r` at (cx, cy) added to a slice.
fn with_lesion(img: &GrayImage, cx: f32, cy: f32, r: f32) -> GrayImage {
    GrayImage::from_fn(img.width, img.height, |x, y| {
        let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
        img.get(x, y) + if d < r { 500.0 } else { 0.0 }
    })
}

/// Writes a series of `n` slices 2.5 mm apart (from z0) into `dir`; `change(k)` may alter slice k.
fn write_series(
    dir: &Path,
    series_uid: &str,
    frame_of_reference: &str,
    n: usize,
    z0: Option<f64>,
    change: &dyn Fn(usize, GrayImage) -> GrayImage,
) {
    std::fs::create_dir_all(dir).unwrap();
    let base = ct();
    for k in 0..n {
        let slice = Slice { series_uid, frame_of_reference, instance: k, z: z0.map(|z| z + 2.5 * k as f64) };
        write_slice(dir, &slice, &change(k, anatomy(&base, k)));
    }
}

fn unchanged(_: usize, img: GrayImage) -> GrayImage {
    img
}

/// The lesion of the current series: on slices 3, 4 and 5, largest on 4.
fn lesion_on_3_to_5(k: usize, img: GrayImage) -> GrayImage {
    match k {
        3 | 5 => with_lesion(&img, 80.0, 50.0, 7.0),
        4 => with_lesion(&img, 80.0, 50.0, 10.0),
        _ => img,
    }
}

#[test]
fn a_change_on_three_slices_is_one_finding_with_its_slice_range() {
    let dir = tempfile::tempdir().unwrap();
    let (prior, current) = (dir.path().join("prior"), dir.path().join("current"));
    write_series(&prior, "1.2.826.0.1.1", "1.2.826.0.1.9", 8, Some(-40.0), &unchanged);
    write_series(&current, "1.2.826.0.1.2", "1.2.826.0.1.9", 8, Some(-40.0), &lesion_on_3_to_5);
    let (json, doc) = (dir.path().join("out.json"), dir.path().join("doc.json"));
    let out = tandem(&["ground", "series", s(&prior), s(&current), "--json", s(&json), "--annotations", s(&doc)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("slice pairs grounded: 8/8"), "progress on stderr: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // The contract: these keys, in this order.
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "method",
            "model",
            "device",
            "prior",
            "current",
            "matching",
            "pairs",
            "unmatched",
            "shift_mm",
            "findings",
            "compared",
            "cancelled",
            "millis"
        ]
    );
    assert_eq!(v["matching"], "position");
    assert_eq!(v["prior"]["slices"], 8);
    assert_eq!(v["compared"], 8);
    let pairs: Vec<(u64, u64)> =
        v["pairs"].as_array().unwrap().iter().map(|p| (p["current"].as_u64().unwrap(), p["prior"].as_u64().unwrap())).collect();
    assert_eq!(pairs, (0..8).map(|k| (k, k)).collect::<Vec<_>>());
    let findings = v["findings"].as_array().unwrap();
    assert!(!findings.is_empty(), "{v}");
    let f = &findings[0];
    let finding_keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(finding_keys, ["slices", "peak_slice", "score", "box", "boxes"]);
    let box_keys: Vec<&str> = f["boxes"][0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(box_keys, ["slice", "prior_slice", "box", "reference_box", "score"]);
    // The best finding is the lesion, one finding over its three slices.
    assert_eq!(f["slices"], serde_json::json!([3, 5]), "{f}");
    let b: Vec<f32> = f["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let found = tandem::grounding::BBox::new(b[0], b[1], b[2], b[3]);
    let truth = tandem::grounding::BBox::new(70.0, 40.0, 90.0, 60.0);
    assert!(found.iou(&truth) > 0.4, "{found:?}");
    // No other finding reaches into the lesion's slices at its place.
    for other in &findings[1..] {
        let ob: Vec<f32> = other["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let o = tandem::grounding::BBox::new(ob[0], ob[1], ob[2], ob[3]);
        assert!(o.iou(&truth) < 0.3 || other["score"].as_f64() < f["score"].as_f64(), "{other}");
    }
    // The document: one box per slice, each frame naming its own file's instance.
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    let current_image = d["images"].as_array().unwrap().iter().find(|i| i["id"] == "current").unwrap();
    let uids: Vec<&str> = current_image["frame_sop_instance_uids"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    assert_eq!(uids, (1..=8).map(|k| format!("1.2.826.0.1.2.{k}")).collect::<Vec<_>>());
    let lesion = &d["findings"][0];
    assert_eq!(lesion["slices"], serde_json::json!([3, 5]));
    let frames: Vec<u64> =
        lesion["boxes"].as_array().unwrap().iter().filter(|b| b["image"] == "current").map(|b| b["frame"].as_u64().unwrap()).collect();
    assert_eq!(frames, [3, 4, 5]);
    // It validates and exports as DICOM SR (each box referencing its slice's instance).
    let check = tandem(&["annotations", "validate", s(&doc)]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let sr = dir.path().join("doc.sr.dcm");
    let export = tandem(&["annotations", "export", s(&doc), "--format", "sr", "--out", s(&sr)]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let bytes = std::fs::read(&sr).unwrap();
    let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has("1.2.826.0.1.2.5\0") || has("1.2.826.0.1.2.5"), "the SR references slice 4's own instance");
}

#[test]
fn slices_are_paired_by_position_across_spacing_and_frames_of_reference() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = |_: f32, _: &str| {};
    // The current series starts two slices further along: its slice k is the prior's slice k + 2.
    let prior = dir.path().join("prior");
    write_series(&prior, "1.2.826.0.2.1", "1.2.826.0.2.9", 10, Some(0.0), &unchanged);
    let current = dir.path().join("current");
    std::fs::create_dir_all(&current).unwrap();
    let base = ct();
    for k in 0..6 {
        let slice = Slice { series_uid: "1.2.826.0.2.2", frame_of_reference: "1.2.826.0.2.9", instance: k, z: Some(5.0 + 2.5 * k as f64) };
        write_slice(&current, &slice, &anatomy(&base, k + 2));
    }
    let (p, c) = (tandem::study::load(&prior, &quiet).unwrap(), tandem::study::load(&current, &quiet).unwrap());
    let m = match_slices(&p, &c).unwrap();
    assert_eq!(m.matching, Matching::Position);
    assert_eq!(m.pairs.iter().map(|x| (x.current, x.prior)).collect::<Vec<_>>(), (0..6).map(|k| (k, k + 2)).collect::<Vec<_>>());
    // Another frame of reference, 100 mm away: the shift is found by comparing the slices.
    let moved = dir.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    for k in 0..6 {
        let slice =
            Slice { series_uid: "1.2.826.0.2.3", frame_of_reference: "1.2.826.0.2.8", instance: k, z: Some(105.0 + 2.5 * k as f64) };
        write_slice(&moved, &slice, &anatomy(&base, k + 2));
    }
    let m = match_slices(&p, &tandem::study::load(&moved, &quiet).unwrap()).unwrap();
    assert_eq!(m.matching, Matching::RegisteredPosition);
    assert!((m.shift_mm.unwrap() + 100.0).abs() < 1.3, "{:?}", m.shift_mm);
    assert_eq!(m.pairs.iter().map(|x| (x.current, x.prior)).collect::<Vec<_>>(), (0..6).map(|k| (k, k + 2)).collect::<Vec<_>>());
    // No geometry: index order, stretched over the longer series.
    let bare = dir.path().join("bare");
    write_series(&bare, "1.2.826.0.2.4", "1.2.826.0.2.9", 4, None, &unchanged);
    let m = match_slices(&p, &tandem::study::load(&bare, &quiet).unwrap()).unwrap();
    assert_eq!(m.matching, Matching::Index);
    assert_eq!(m.pairs.iter().map(|x| x.prior).collect::<Vec<_>>(), [0, 3, 6, 9]);
}

#[test]
fn bad_input_exits_2_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("series");
    write_series(&series, "1.2.826.0.3.1", "1.2.826.0.3.9", 3, Some(0.0), &unchanged);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let text = dir.path().join("notes.dcm");
    std::fs::write(&text, "not a DICOM file").unwrap();
    let missing = dir.path().join("missing");
    for (prior, current) in [(&missing, &series), (&series, &missing), (&empty, &series), (&series, &text), (&text, &series)] {
        let err = one_error_line(&tandem(&["ground", "series", s(prior), s(current)]));
        assert!(!err.contains("panicked"), "{err}");
    }
    // An existing output is not replaced without --force, and nothing is computed first.
    let json = dir.path().join("out.json");
    std::fs::write(&json, "{}").unwrap();
    let err = one_error_line(&tandem(&["ground", "series", s(&series), s(&series), "--json", s(&json)]));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&json).unwrap(), "{}");
}

/// A timepoint for tracking: slice level 3 of the anatomy moved by (`dx`, `dy`), with a lesion
/// of radius `r` at (96 + dx, 88 + dy), in the paraspinal muscle.
fn timepoint(base: &GrayImage, dx: isize, dy: isize, r: f32) -> GrayImage {
    let moved = anatomy(base, 3).crop(-dx, -dy, base.width, base.height, -1000.0);
    with_lesion(&moved, 96.0 + dx as f32, 88.0 + dy as f32, r)
}

fn numbers(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn bbox(v: &serde_json::Value) -> tandem::grounding::BBox {
    let b = numbers(v);
    tandem::grounding::BBox::new(b[0], b[1], b[2], b[3])
}

#[test]
fn a_lesion_is_tracked_through_timepoints_with_its_size_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    let base = ct();
    // Baseline, growth, response (the nadir), regrowth; the patient lies a little differently each
    // time. (A sharper response, 9 → 5.5 px in radius in one step, lost this lesion to a bright
    // neighbour when tried: the tracker looks for sizes near the previous one.)
    let plan = [(0isize, 0isize, 7.0f32), (2, 1, 9.0), (-1, 2, 6.0), (1, -1, 7.5)];
    let mut paths = Vec::new();
    for (t, &(dx, dy, r)) in plan.iter().enumerate() {
        let p = dir.path().join(format!("t{t}"));
        std::fs::create_dir(&p).unwrap();
        let slice = Slice { series_uid: &format!("1.2.826.0.4.{t}"), frame_of_reference: "1.2.826.0.4.9", instance: 0, z: Some(0.0) };
        write_slice(&p, &slice, &timepoint(&base, dx, dy, r));
        paths.push(p);
    }
    let truth = |t: usize| {
        let (dx, dy, r) = plan[t];
        tandem::grounding::BBox::from_centre(96.0 + dx as f32, 88.0 + dy as f32, 2.0 * r, 2.0 * r)
    };
    let json = dir.path().join("track.json");
    let doc = dir.path().join("track.tandem.json");
    let mut args = vec!["track", "--box", "89,81,103,95", "--frame", "0", "--json", s(&json), "--annotations", s(&doc)];
    args.extend(paths.iter().map(|p| s(p)));
    let out = tandem(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["method", "model", "device", "units", "axes", "reference_frame", "frames"]);
    assert_eq!(v["units"], "mm");
    let frames = v["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 4);
    let frame_keys: Vec<&str> = frames[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        frame_keys,
        ["frame", "input", "slice", "box", "score", "long_axis", "short_axis", "area", "change_from_baseline_pct", "change_from_nadir_pct"]
    );
    // The lesion stands out from the muscle: its outline is measured, not the box.
    assert_eq!(v["axes"], "outline diameters");
    for (t, f) in frames.iter().enumerate() {
        let found = bbox(&f["box"]);
        assert!(found.iou(&truth(t)) > 0.5, "frame {t}: {found:?} vs {:?}", truth(t));
        // Diameters of the lesion itself at 0.7 mm a pixel, within a pixel and a half.
        let diameter = 2.0 * 0.7 * plan[t].2 as f64;
        for axis in ["long_axis", "short_axis"] {
            assert!((f[axis].as_f64().unwrap() - diameter).abs() < 1.05, "frame {t} {axis}: {f} (diameter {diameter:.1} mm)");
        }
    }
    let long: Vec<f64> = frames.iter().map(|f| f["long_axis"].as_f64().unwrap()).collect();
    assert!(long[1] > long[0] && long[2] < long[0] && long[3] > long[2], "{long:?}");
    let pct = |a: f64, b: f64| (100.0 * (a - b) / b * 10.0).round() / 10.0;
    assert_eq!(frames[0]["change_from_baseline_pct"], 0.0);
    assert!(frames[0]["change_from_nadir_pct"].is_null());
    for t in 1..4 {
        assert_eq!(frames[t]["change_from_baseline_pct"].as_f64().unwrap(), pct(long[t], long[0]), "frame {t}");
        let nadir = long[..t].iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(frames[t]["change_from_nadir_pct"].as_f64().unwrap(), pct(long[t], nadir), "frame {t}");
    }
    assert!(frames[3]["change_from_nadir_pct"].as_f64().unwrap() > 10.0, "regrowth from the nadir");
    // The document holds the track: version 2, one image per timepoint, one finding with a box
    // and a measurement on each; it validates and exports as DICOM SR.
    let d = tandem::annotation::io::load(&doc).unwrap();
    assert_eq!(d.schema_version, 2);
    assert_eq!(d.images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["t0", "t1", "t2", "t3"]);
    assert_eq!(d.findings.len(), 1);
    let track = d.findings[0].track.as_ref().unwrap();
    assert_eq!(track.units, "mm");
    assert_eq!(track.measurements.iter().map(|m| m.long_axis).collect::<Vec<_>>(), long);
    assert_eq!(d.findings[0].boxes.iter().map(|b| b.image.as_str()).collect::<Vec<_>>(), ["t0", "t1", "t2", "t3"]);
    ok(tandem(&["annotations", "validate", s(&doc)]));
    ok(tandem(&["annotations", "export", s(&doc), "--format", "sr", "--out", s(&dir.path().join("track.sr.dcm"))]));

    // A loose box (twice the lesion's width) measures the same lesion: its size over time is
    // the lesion's, not the box's.
    let json_loose = dir.path().join("track-loose.json");
    let mut args = vec!["track", "--box", "82,74,110,102", "--frame", "0", "--json", s(&json_loose)];
    args.extend(paths.iter().map(|p| s(p)));
    let out = tandem(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let loose: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_loose).unwrap()).unwrap();
    assert_eq!(loose["axes"], "outline diameters");
    for (t, f) in loose["frames"].as_array().unwrap().iter().enumerate() {
        let diameter = 2.0 * 0.7 * plan[t].2 as f64;
        assert!((f["long_axis"].as_f64().unwrap() - diameter).abs() < 1.05, "loose box, frame {t}: {f} (diameter {diameter:.1} mm)");
    }

    // The box drawn on the third timepoint is followed backwards too.
    let t2 = truth(2);
    let b = format!("{},{},{},{}", t2.x1, t2.y1, t2.x2, t2.y2);
    let json2 = dir.path().join("track2.json");
    let mut args = vec!["track", "--box", &b, "--frame", "2", "--json", s(&json2)];
    args.extend(paths.iter().map(|p| s(p)));
    let out = tandem(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json2).unwrap()).unwrap();
    assert_eq!(v["reference_frame"], 2);
    for (t, f) in v["frames"].as_array().unwrap().iter().enumerate() {
        assert!(bbox(&f["box"]).iou(&truth(t)) > 0.5, "frame {t}: {f}");
    }
}

#[test]
fn multi_slice_timepoints_are_followed_on_the_slice_at_the_same_position() {
    let dir = tempfile::tempdir().unwrap();
    // Three CT series of 8 slices; the second starts 2.5 mm further along, so the level of the
    // first's slice 4 is its slice 3. The lesion sits on that level in each.
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let lesion = |r: f32| move |k: usize, img: GrayImage| if k == 4 { with_lesion(&img, 96.0, 88.0, r) } else { img };
    write_series(&a, "1.2.826.0.5.1", "1.2.826.0.5.9", 8, Some(0.0), &lesion(6.0));
    let base = ct();
    std::fs::create_dir_all(&b).unwrap();
    for k in 0..8 {
        let slice = Slice { series_uid: "1.2.826.0.5.2", frame_of_reference: "1.2.826.0.5.9", instance: k, z: Some(2.5 + 2.5 * k as f64) };
        let img = anatomy(&base, k + 1);
        write_slice(&b, &slice, &if k == 3 { with_lesion(&img, 96.0, 88.0, 8.0) } else { img });
    }
    write_series(&c, "1.2.826.0.5.3", "1.2.826.0.5.9", 8, Some(0.0), &lesion(5.0));
    let json = dir.path().join("t.json");
    let out = tandem(&["track", "--box", "90,82,102,94", "--slice", "4", "--json", s(&json), s(&a), s(&b), s(&c)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let slices: Vec<u64> = v["frames"].as_array().unwrap().iter().map(|f| f["slice"].as_u64().unwrap()).collect();
    assert_eq!(slices, [4, 3, 4]);
    let long: Vec<f64> = v["frames"].as_array().unwrap().iter().map(|f| f["long_axis"].as_f64().unwrap()).collect();
    assert!(long[1] > long[0] && long[2] < long[0], "{long:?}");
}

#[test]
fn track_without_pixel_spacing_measures_in_pixels_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("t.json");
    let png = "tests/data/medsg-example/images/t1_b.png";
    let out = tandem(&["track", "--box", "10,10,40,30", png, "--json", s(&json)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["units"], "px");
    assert_eq!(v["frames"][0]["long_axis"], 30.0);
    assert_eq!(v["frames"][0]["short_axis"], 20.0);
    assert_eq!(v["frames"][0]["area"], 600.0);
    let text = dir.path().join("notes.dcm");
    std::fs::write(&text, "not a DICOM file").unwrap();
    let missing = dir.path().join("missing.dcm");
    for args in [
        vec!["track", "--box", "10,10,40,30", s(&missing)],
        vec!["track", "--box", "10,10,40,30", s(&text)],
        vec!["track", "--box", "10,10,40", png],
        vec!["track", "--box", "10,10,10,30", png],
        vec!["track", "--box", "10,10,40,30", "--frame", "1", png],
        vec!["track", "--box", "10,10,40,30", "--frame", "5", png, png],
        vec!["track", "--box", "5000,5000,5040,5030", png],
        vec!["track", "--box", "10,10,40,30"],
    ] {
        let err = one_error_line(&tandem(&args));
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn track_follows_a_frame_of_another_size_on_the_first_frames_grid() {
    // The same picture at half the matrix (no pixel spacing: the fields of view are taken as one):
    // the box is found there and given in that frame's own pixels, its size on the common grid.
    let dir = tempfile::tempdir().unwrap();
    let png = "tests/data/medsg-example/images/t1_b.png";
    let full = image::open(png).unwrap().to_luma8();
    let half = image::imageops::resize(&full, full.width() / 2, full.height() / 2, image::imageops::FilterType::Triangle);
    let half_path = dir.path().join("half.png");
    half.save(&half_path).unwrap();
    let json = dir.path().join("t.json");
    let out = tandem(&["track", "--box", "100,120,190,200", png, s(&half_path), "--json", s(&json)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let b: Vec<f64> = v["frames"][1]["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    // The half-size box, up to the network's precision (its match map has a 4-px stride and its
    // size head is not exact: IoU ≥ 0.7); a box given on the first frame's grid would lie at twice
    // these coordinates and hardly overlap it.
    let found = BBox::new(b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32);
    let iou = found.iou(&BBox::new(50.0, 60.0, 95.0, 100.0));
    assert!(iou >= 0.7, "box on the half-size frame: {b:?} (IoU {iou:.2})");
    assert_eq!(v["units"], "px");
    let long = |k: usize| v["frames"][k]["long_axis"].as_f64().unwrap();
    assert!((long(1) - long(0)).abs() <= 0.1 * long(0), "sizes on the common grid: {} and {}", long(0), long(1));
}

fn tandem_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
    c.args(args).env("TANDEM_DEVICE", "cpu").env_remove("SLURM_ARRAY_TASK_ID").env_remove("SLURM_ARRAY_TASK_COUNT");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("run tandem")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn batch_in_three_shards_merges_to_what_one_run_gives_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Two series pairs (one with a change), two image pairs and a pair whose file is missing.
    write_series(&data.join("p1"), "1.2.826.0.6.1", "1.2.826.0.6.9", 4, Some(0.0), &unchanged);
    write_series(&data.join("c1"), "1.2.826.0.6.2", "1.2.826.0.6.9", 4, Some(0.0), &|k, img| {
        if k == 2 { with_lesion(&img, 96.0, 88.0, 7.0) } else { img }
    });
    write_series(&data.join("p2"), "1.2.826.0.6.3", "1.2.826.0.6.8", 3, Some(0.0), &unchanged);
    let images = std::fs::canonicalize("tests/data/medsg-example/images").unwrap();
    let img = |n: &str| images.join(n).display().to_string();
    let manifest = dir.path().join("pairs.csv");
    let lines = [
        "id,prior,current,kind".to_string(),
        "lesion,data/p1,data/c1,".to_string(),
        format!(",{},{},diff", img("t1_a.png"), img("t1_b.png")),
        "same,data/p2,data/p2,series".to_string(),
        format!("\"t2\",\"{}\",\"{}\",", img("t2_a.png"), img("t2_b.png")),
        "gone,data/nothing.dcm,data/p1,diff".to_string(),
    ];
    std::fs::write(&manifest, lines.join("\n")).unwrap();
    let (one, sharded) = (dir.path().join("one"), dir.path().join("sharded"));
    let stdout = ok(tandem(&["batch", s(&manifest), "--out", s(&one)]));
    assert!(stdout.contains("4 computed, 0 skipped (done before), 1 failed"), "{stdout}");
    ok(tandem(&["batch", "--merge", s(&one)]));
    // Three shards at once, as separate processes; the last as a SLURM array task (array 1-3).
    let children = vec![
        tandem_env(&["batch", s(&manifest), "--out", s(&sharded), "--shard", "0/3"], &[]),
        tandem_env(&["batch", s(&manifest), "--out", s(&sharded), "--shard", "1/3"], &[]),
        tandem_env(
            &["batch", s(&manifest), "--out", s(&sharded)],
            &[("SLURM_ARRAY_TASK_ID", "3"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "3")],
        ),
    ];
    for child in children {
        ok(child.wait_with_output().unwrap());
    }
    for k in 0..3 {
        assert!(sharded.join(format!("shard-{k}-of-3.json")).exists(), "shard {k} wrote its summary");
    }
    ok(tandem(&["batch", "--merge", s(&sharded)]));
    let read = |p: &Path| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let (a, b) = (read(&one.join("merged.json")), read(&sharded.join("merged.json")));
    assert_eq!(a, b, "the shards' merge equals the single run");
    assert_eq!(a["pairs"], 5);
    assert_eq!(a["failed"], 1);
    let results = a["results"].as_array().unwrap();
    let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["lesion", "row-00002", "same", "t2", "gone"]);
    assert_eq!(results[0]["kind"], "series");
    assert_eq!(results[1]["kind"], "diff");
    assert_eq!(results[4]["status"], "error");
    // The changed slice is found in the series pair; the series compared with itself has nothing.
    assert_eq!(results[0]["result"]["findings"][0]["slices"], serde_json::json!([2, 2]), "{}", results[0]);
    assert!(results[2]["result"]["findings"].as_array().unwrap().iter().all(|f| f["score"].as_f64().unwrap() < 0.5), "{}", results[2]);
    // Restartable: a rerun skips what is done (and retries the failure); a lost result is redone.
    let before = std::fs::read(sharded.join("results/lesion.json")).unwrap();
    let stdout = ok(tandem(&["batch", s(&manifest), "--out", s(&sharded), "--shard", "0/3"]));
    assert!(stdout.contains("0 computed, 2 skipped"), "{stdout}");
    assert_eq!(std::fs::read(sharded.join("results/lesion.json")).unwrap(), before);
    std::fs::remove_file(sharded.join("results/t2.json")).unwrap();
    let err = one_error_line(&tandem(&["batch", "--merge", s(&sharded)]));
    assert!(err.contains("1 of 5 pair(s) have no result"), "{err}");
    let stdout = ok(tandem(&["batch", s(&manifest), "--out", s(&sharded)]));
    assert!(stdout.contains("1 computed, 3 skipped (done before), 1 failed"), "{stdout}");
}

#[test]
fn batch_refuses_bad_manifests_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let good = dir.path().join("good.csv");
    std::fs::write(&good, "prior,current\na.png,b.png\n").unwrap();
    let no_header = dir.path().join("no_header.csv");
    std::fs::write(&no_header, "a.png,b.png\n").unwrap();
    let twice = dir.path().join("twice.csv");
    std::fs::write(&twice, "id,prior,current\nx,a,b\nx,c,d\n").unwrap();
    let bad_kind = dir.path().join("bad_kind.csv");
    std::fs::write(&bad_kind, "prior,current,kind\na,b,volume\n").unwrap();
    let missing = dir.path().join("missing.csv");
    for args in [
        vec!["batch", s(&missing), "--out", s(&out)],
        vec!["batch", s(&no_header), "--out", s(&out)],
        vec!["batch", s(&twice), "--out", s(&out)],
        vec!["batch", s(&bad_kind), "--out", s(&out)],
        vec!["batch", s(&good), "--out", s(&out), "--shard", "3/3"],
        vec!["batch", s(&good), "--out", s(&out), "--shard", "x"],
        vec!["batch", s(&good)],
        vec!["batch", "--merge", s(&out)],
    ] {
        one_error_line(&tandem(&args));
    }
    let err = one_error_line(&tandem(&["batch", s(&good), "--out", s(&good)]));
    assert!(err.contains("not a folder"), "{err}");
}

#[test]
fn version_1_documents_still_open_and_stay_version_1_without_tracks() {
    // The example of docs/annotation-format.md as version 1 wrote it.
    let text = std::fs::read_to_string("docs/annotation-format.md").unwrap();
    let start = text.find("```json\n").unwrap() + 8;
    let end = start + text[start..].find("```").unwrap();
    let v1 = text[start..end].replace("\"schema_version\": 2", "\"schema_version\": 1");
    let doc = tandem::annotation::io::parse(v1.as_bytes()).unwrap();
    assert_eq!(doc.schema_version, 1);
    assert!(doc.findings.iter().all(|f| f.track.is_none()));
    let saved: serde_json::Value = serde_json::from_slice(&tandem::annotation::io::to_bytes(&doc).unwrap()).unwrap();
    assert_eq!(saved["schema_version"], 1, "saved as version 1: older builds still open it");
    assert_eq!(saved, serde_json::from_str::<serde_json::Value>(&v1).unwrap(), "nothing lost or added");
    // A track makes it version 2, even if the in-memory version was not raised.
    let mut tracked = doc.clone();
    let f = &mut tracked.findings[0];
    let b = f.boxes[1].clone();
    f.track = Some(tandem::annotation::document::Track {
        units: "px".into(),
        measurements: vec![tandem::annotation::document::Measurement {
            image: b.image.clone(),
            frame: b.frame,
            bbox: b.bbox,
            long_axis: 1.0,
            short_axis: 1.0,
            area: 1.0,
            change_from_baseline_pct: 0.0,
            change_from_nadir_pct: None,
            extra: Default::default(),
        }],
        extra: Default::default(),
    });
    let bytes = tandem::annotation::io::to_bytes(&tracked).unwrap();
    let reread = tandem::annotation::io::parse(&bytes).unwrap();
    assert_eq!(reread.schema_version, 2);
    assert_eq!(reread.findings[0].track, tracked.findings[0].track);
    // A measurement where the finding has no box is refused.
    let mut wrong: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    wrong["findings"][0]["track"]["measurements"][0]["frame"] = 7.into();
    let err = tandem::annotation::io::parse(&serde_json::to_vec(&wrong).unwrap()).unwrap_err();
    assert!(err.to_string().contains("no box"), "{err}");
}

#[test]
fn whole_series_grounding_reports_progress_and_stops_when_cancelled() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tandem::grounding::series::Stage;
    use tandem::grounding::{ComputeDevice, Engine, Method};
    let dir = tempfile::tempdir().unwrap();
    write_series(&dir.path().join("p"), "1.2.826.0.7.1", "1.2.826.0.7.9", 6, Some(0.0), &unchanged);
    write_series(&dir.path().join("c"), "1.2.826.0.7.2", "1.2.826.0.7.9", 6, Some(0.0), &lesion_on_3_to_5);
    let quiet = |_: f32, _: &str| {};
    let (p, c) = (tandem::study::load(&dir.path().join("p"), &quiet).unwrap(), tandem::study::load(&dir.path().join("c"), &quiet).unwrap());
    let engine = Engine::baseline_only(ComputeDevice::cpu("test"), "baseline for the test".into());
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let out = tandem::grounding::series::find_changes(
        &engine,
        &p,
        &c,
        Method::Model,
        0.0,
        &mut |stage| {
            seen.push(stage);
            if stage == Stage::Pairs(2, 6) {
                cancel.store(true, Ordering::Relaxed);
            }
        },
        Some(&cancel),
    )
    .unwrap();
    // One frame of reference: nothing to register, the pairs are counted from the start.
    assert_eq!(seen, [Stage::Pairs(0, 6), Stage::Pairs(1, 6), Stage::Pairs(2, 6)]);
    assert_eq!((out.compared, out.cancelled), (2, true));
    assert_eq!(out.method, Method::Baseline, "without a model the baseline answers, and says so");
    // Uncancelled, the baseline finds the lesion's slices too.
    let out = tandem::grounding::series::find_changes(&engine, &p, &c, Method::Baseline, 0.0, &mut |_| {}, None).unwrap();
    assert!(!out.cancelled);
    assert!(out.findings.iter().any(|f| f.slices[0] <= 4 && f.slices[1] >= 4), "{:?}", out.findings);
}

/// `out` as JSON without its timing, to compare two runs.
fn untimed(out: &tandem::grounding::series::SeriesOutput) -> serde_json::Value {
    let mut v = serde_json::to_value(out).unwrap();
    v.as_object_mut().unwrap().remove("millis");
    if let Some(rigid) = v.get_mut("rigid").and_then(|r| r.as_object_mut()) {
        rigid.remove("millis");
        rigid.remove("decode_millis");
    }
    v
}

#[test]
fn a_series_read_slice_by_slice_is_paired_and_grounded_as_the_loaded_series() {
    use tandem::grounding::series::{find_changes, find_changes_in, match_slices_in};
    use tandem::grounding::{DevicePreference, Engine, Method, WeightsSource};
    use tandem::study::slices::SliceFiles;
    let dir = tempfile::tempdir().unwrap();
    let (prior, current, moved) = (dir.path().join("p"), dir.path().join("c"), dir.path().join("m"));
    write_series(&prior, "1.2.826.0.8.1", "1.2.826.0.8.9", 8, Some(-40.0), &unchanged);
    write_series(&current, "1.2.826.0.8.2", "1.2.826.0.8.9", 8, Some(-40.0), &lesion_on_3_to_5);
    // Another frame of reference 100 mm away: the shift is registered on the streamed slices too.
    write_series(&moved, "1.2.826.0.8.3", "1.2.826.0.8.8", 8, Some(60.0), &lesion_on_3_to_5);
    let quiet = |_: f32, _: &str| {};
    let engine = Engine::new(DevicePreference::Cpu, &WeightsSource::Embedded);
    assert!(engine.has_model(), "{}", engine.status);
    let loaded = |p: &Path| tandem::study::load(p, &quiet).unwrap();
    let scanned = |p: &Path| SliceFiles::scan(p).unwrap().expect("a folder of single-frame files is read slice by slice");
    for other in [&current, &moved] {
        let whole = find_changes(&engine, &loaded(&prior), &loaded(other), Method::Model, 0.0, &mut |_| {}, None).unwrap();
        let (p, c) = (scanned(&prior), scanned(other));
        assert_eq!(c.slices.len(), 8);
        let streamed = find_changes_in(&engine, &p, &c, Method::Model, 0.0, &mut |_| {}, None).unwrap();
        assert_eq!(untimed(&streamed), untimed(&whole));
        assert_eq!(streamed.compared, 8);
        assert!(streamed.findings.iter().any(|f| f.slices == [3, 5]), "{:?}", streamed.findings);
        let m = match_slices_in(&p, &c).unwrap();
        assert_eq!(m.pairs.iter().map(|x| (x.current, x.prior)).collect::<Vec<_>>(), (0..8).map(|k| (k, k)).collect::<Vec<_>>());
    }
    // A single file is not streamed: it is read whole as before.
    assert!(SliceFiles::scan(&prior.join("im999.dcm")).unwrap().is_none());
}

#[test]
fn a_slice_whose_pixels_cannot_be_decoded_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let (prior, current) = (dir.path().join("p"), dir.path().join("c"));
    write_series(&prior, "1.2.826.0.9.1", "1.2.826.0.9.9", 4, Some(0.0), &unchanged);
    write_series(&current, "1.2.826.0.9.2", "1.2.826.0.9.9", 4, Some(0.0), &unchanged);
    // Slice 2's header is whole, its pixel data a quarter of the image.
    let base = ct();
    let slice = Slice { series_uid: "1.2.826.0.9.2", frame_of_reference: "1.2.826.0.9.9", instance: 2, z: Some(5.0) };
    let dir2 = dir.path().join("short");
    std::fs::create_dir_all(&dir2).unwrap();
    write_slice(&dir2, &slice, &base.crop(0, 0, base.width, base.height / 4, 0.0));
    let file = std::fs::read_dir(&dir2).unwrap().next().unwrap().unwrap().path();
    let mut obj = dicom_object::open_file(&file).unwrap();
    obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(base.height as u16)));
    obj.write_to_file(current.join(file.file_name().unwrap())).unwrap();
    // Found mid-run (slices are decoded as their pairs are grounded): progress may come first,
    // then the run stops with one error line naming the slice.
    let out = tandem(&["ground", "series", s(&prior), s(&current)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines[..lines.len() - 1].iter().all(|l| l.starts_with("slice pairs grounded")), "{err}");
    let last = lines.last().unwrap();
    assert!(last.starts_with("error: slice 2 of the current series cannot be read: "), "{err}");
    assert!(last.contains("truncated"), "{err}");
}

/// A smooth synthetic body in the prior's patient coordinates (mm): a torso holding organs of
/// different densities, small along the normal so that every level looks different, and a faint
/// texture. Soft edges, so that reslicing between slices 2.5 mm apart interpolates it well.
fn phantom(p: [f64; 3]) -> f32 {
    let blob = |c: [f64; 3], r: [f64; 3], v: f32| {
        let d = ((p[0] - c[0]) / r[0]).powi(2) + ((p[1] - c[1]) / r[1]).powi(2) + ((p[2] - c[2]) / r[2]).powi(2);
        v / (1.0 + ((d.sqrt() - 1.0) * 6.0).exp()) as f32
    };
    let organs = [
        ([30.0, 35.0, 12.0], [8.0, 6.0, 7.0], 300.0),
        ([58.0, 40.0, 20.0], [6.0, 9.0, 6.0], -400.0),
        ([45.0, 60.0, 30.0], [10.0, 5.0, 8.0], 250.0),
        ([35.0, 55.0, 42.0], [7.0, 7.0, 6.0], -300.0),
        ([60.0, 28.0, 38.0], [5.0, 8.0, 9.0], 350.0),
        ([42.0, 30.0, 50.0], [9.0, 6.0, 7.0], -250.0),
        ([25.0, 45.0, 28.0], [5.0, 10.0, 8.0], 200.0),
        ([62.0, 55.0, 8.0], [6.0, 6.0, 9.0], -350.0),
        ([50.0, 45.0, 58.0], [8.0, 8.0, 7.0], 300.0),
    ];
    let texture = 30.0 * ((p[0] / 6.0).sin() * (p[1] / 7.0).sin() * (p[2] / 5.0).sin()) as f32;
    // A catheter: a dense wire 1.6 mm thick across the body, thinner than the slice gap, so
    // that a slice cut at an angle through it differs from the slices around it blended.
    let wire = if (15.0..75.0).contains(&p[0]) {
        1500.0 / (1.0 + ((((p[1] - 50.0).powi(2) + (p[2] - 15.0).powi(2)).sqrt() - 0.8) * 6.0).exp()) as f32
    } else {
        0.0
    };
    -1000.0
        + blob([44.8, 44.8, 30.0], [38.0, 30.0, 200.0], 1040.0)
        + organs.iter().map(|&(c, r, v)| blob(c, r, v)).sum::<f32>()
        + texture
        + wire
}

/// Writes `n` slices of the phantom 2.5 mm apart from `z0`: slice point p shows the body at
/// `body_from_slice(p)`, plus a +400 HU sphere of `lesion` = (centre, radius) in slice points.
fn write_phantom_series(
    dir: &Path,
    series_uid: &str,
    frame_of_reference: &str,
    n: usize,
    z0: f64,
    body_from_slice: &dyn Fn([f64; 3]) -> [f64; 3],
    lesion: Option<([f64; 3], f64)>,
) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..n {
        let z = z0 + 2.5 * k as f64;
        let img = GrayImage::from_fn(128, 128, |x, y| {
            let p = [0.7 * x as f64, 0.7 * y as f64, z];
            let inside = lesion.is_some_and(|(c, r)| (0..3).map(|i| (p[i] - c[i]).powi(2)).sum::<f64>().sqrt() < r);
            phantom(body_from_slice(p)) + if inside { 400.0 } else { 0.0 }
        });
        write_slice(dir, &Slice { series_uid, frame_of_reference, instance: k, z: Some(z) }, &img);
    }
}

#[test]
fn a_tilted_follow_up_in_another_frame_of_reference_is_registered_in_3d_and_its_change_found() {
    use tandem::registration::rigid3d::Rigid;
    let dir = tempfile::tempdir().unwrap();
    let (prior, current) = (dir.path().join("prior"), dir.path().join("current"));
    write_phantom_series(&prior, "1.2.826.0.10.1", "1.2.826.0.10.9", 24, 0.0, &|p| p, None);
    // The follow-up: another table position (200 mm on), the patient turned 6° about left-right
    // and 3° about front-back and moved a little; a lesion of 5 mm radius on its slice 12.
    let truth = Rigid { angles_deg: [6.0, 3.0, 0.0], translation_mm: [1.5, -2.0, -199.0], centre_mm: [44.8, 44.8, 228.75] };
    let lesion = ([0.7 * 85.0, 0.7 * 45.0, 230.0], 5.0);
    write_phantom_series(&current, "1.2.826.0.10.2", "1.2.826.0.10.8", 24, 200.0, &|p| truth.apply(p), Some(lesion));
    let json = dir.path().join("out.json");
    let out = tandem(&["ground", "series", s(&prior), s(&current), "--json", s(&json), "--min-score", "0.5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["matching"], "rigid", "{v}");
    let angles = numbers(&v["rigid"]["angles_deg"]);
    assert!((angles[0] - 6.0).abs() < 1.0 && (angles[1] - 3.0).abs() < 1.0 && angles[2].abs() < 1.0, "{}", v["rigid"]);
    assert!(v["rigid"]["ncc"].as_f64().unwrap() > 0.9, "{}", v["rigid"]);
    // The lesion is found on its slices, at its place, and nothing else scores 0.5 or more.
    let findings = v["findings"].as_array().unwrap();
    let truth_box = tandem::grounding::BBox::new(78.0, 38.0, 92.0, 52.0);
    let on_lesion = |f: &serde_json::Value| {
        let s = numbers(&f["slices"]);
        s[0] <= 12.0 && 12.0 <= s[1] && s[0] >= 10.0 && s[1] <= 14.0 && bbox(&f["box"]).iou(&truth_box) > 0.3
    };
    assert!(findings.iter().any(on_lesion), "{v}");
    let elsewhere: Vec<&serde_json::Value> = findings.iter().filter(|f| !on_lesion(f)).collect();
    assert!(elsewhere.is_empty(), "spurious findings: {elsewhere:?}");
}

#[test]
fn the_3d_registration_is_a_stage_of_the_progress_and_is_cancelled_by_the_run_s_flag() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tandem::grounding::series::{Matching, Stage, find_changes_in};
    use tandem::grounding::{ComputeDevice, Engine, Method};
    use tandem::registration::rigid3d::Rigid;
    use tandem::study::slices::SliceFiles;
    let dir = tempfile::tempdir().unwrap();
    let (prior, current) = (dir.path().join("prior"), dir.path().join("current"));
    write_phantom_series(&prior, "1.2.826.0.12.1", "1.2.826.0.12.9", 16, 0.0, &|p| p, None);
    let turn = Rigid { angles_deg: [4.0, 0.0, 0.0], translation_mm: [0.0, 0.0, -100.0], centre_mm: [44.8, 44.8, 120.0] };
    write_phantom_series(&current, "1.2.826.0.12.2", "1.2.826.0.12.8", 16, 100.0, &|p| turn.apply(p), None);
    let scanned = |p: &Path| SliceFiles::scan(p).unwrap().unwrap();
    let (p, c) = (scanned(&prior), scanned(&current));
    let engine = Engine::baseline_only(ComputeDevice::cpu("test"), "baseline for the test".into());
    // Heard before any pair, then the pairs from 0.
    let mut seen = Vec::new();
    let out = find_changes_in(&engine, &p, &c, Method::Baseline, 0.5, &mut |stage| seen.push(stage), None).unwrap();
    assert_eq!(out.matched.matching, Matching::Rigid);
    let total = out.matched.pairs.len();
    assert!(total > 0 && !out.cancelled);
    assert_eq!(seen[..2], [Stage::Registering, Stage::Pairs(0, total)]);
    assert_eq!(seen.last(), Some(&Stage::Pairs(total, total)));
    // Cancelled while registering: nothing compared, no error, and said so.
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let out = find_changes_in(
        &engine,
        &p,
        &c,
        Method::Baseline,
        0.5,
        &mut |stage| {
            seen.push(stage);
            cancel.store(true, Ordering::Relaxed);
        },
        Some(&cancel),
    )
    .unwrap();
    assert_eq!(seen, [Stage::Registering]);
    assert!(out.cancelled && out.compared == 0 && out.findings.is_empty(), "{out:?}");
}

#[test]
fn series_overlapping_too_little_after_3d_registration_are_refused_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let (prior, current) = (dir.path().join("prior"), dir.path().join("current"));
    // Four prior slices (7.5 mm) against a current 97.5 mm long, in another frame of reference.
    write_phantom_series(&prior, "1.2.826.0.11.1", "1.2.826.0.11.9", 4, 20.0, &|p| p, None);
    write_phantom_series(&current, "1.2.826.0.11.2", "1.2.826.0.11.8", 40, 100.0, &|p| [p[0], p[1], p[2] - 100.0], None);
    let err = one_error_line(&tandem(&["ground", "series", s(&prior), s(&current)]));
    assert!(err.contains("lies within the prior"), "{err}");
}
