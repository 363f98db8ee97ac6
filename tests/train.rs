//! `tandem train` is seeded and reproducible: two short runs give the same losses and a network
//! that answers identically (the weight files differ only in burn's random parameter ids).

use std::process::Command;

use tandem::grounding::infer::NetRunner;
use tandem::grounding::{WeightsSource, weights};
use tandem::study::GrayImage;

fn train(dir: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["train", "--steps", "3", "--batch", "2", "--seed", "11", "--data", "tests/data/dicom", "--images", "tests/data/volume"])
        .args(["--validation", "none.json", "--out"])
        .arg(dir.join("g.bpk"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn two_runs_with_one_seed_agree() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    train(a.path());
    train(b.path());
    let losses = |d: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(d.join("loss.csv")).unwrap().lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect()
    };
    assert_eq!(losses(a.path()), losses(b.path()));
    let device = burn::tensor::Device::flex();
    let load = |d: &std::path::Path| {
        let (net, meta) = weights::load(&WeightsSource::File(d.join("g.bpk")), &device).unwrap();
        NetRunner::new(net, device.clone(), meta)
    };
    let (ra, rb) = (load(a.path()), load(b.path()));
    let p = GrayImage::from_fn(64, 64, |x, y| ((x * 7 + y * 3) % 23) as f32 / 23.0);
    let c = GrayImage::from_fn(64, 64, |x, y| if (20..30).contains(&x) && (30..40).contains(&y) { 1.0 } else { p.get(x, y) });
    assert_eq!(ra.change_logits(&p, &c).unwrap(), rb.change_logits(&p, &c).unwrap());
    assert_eq!(ra.meta.change_calibration, rb.meta.change_calibration);
}

/// The committed validation set is what the committed synthesizer makes from the held-out images
/// (its first items per task, regenerated here and compared byte for byte).
#[test]
fn committed_validation_set_regenerates() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["synth", "--split", "validation", "--seed", "9001", "--per-task", "2", "--data", "tests/data/dicom", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fresh: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(dir.path().join("validation.json")).unwrap()).unwrap();
    let committed: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read("models/validation/validation.json").unwrap()).unwrap();
    assert_eq!(fresh.len(), 12);
    for item in &fresh {
        let twin = committed.iter().find(|c| c["id"] == item["id"]).expect("item in the committed set");
        assert_eq!(item, twin);
        for img in item["images"].as_array().unwrap() {
            let name = img.as_str().unwrap();
            assert_eq!(
                std::fs::read(dir.path().join(name)).unwrap(),
                std::fs::read(std::path::Path::new("models/validation").join(name)).unwrap(),
                "{name}"
            );
        }
    }
}

/// Training data that cannot be used stops training with one clear line: an empty images folder,
/// or an image file in it that does not read.
#[test]
fn bad_training_images_are_a_clear_error() {
    let run = |images: &std::path::Path, out: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["train", "--steps", "1", "--batch", "1", "--data", "tests/data/dicom", "--validation", "none.json", "--images"])
            .arg(images)
            .arg("--out")
            .arg(out.join("g.bpk"))
            .output()
            .unwrap()
    };
    let out = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let o = run(empty.path(), out.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no readable images"), "{err}");
    let broken = tempfile::tempdir().unwrap();
    std::fs::create_dir(broken.path().join("source")).unwrap();
    std::fs::write(broken.path().join("source/slice.nii"), b"not a NIfTI file at all").unwrap();
    let o = run(broken.path(), out.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("slice.nii"), "{err}");
    assert!(!out.path().join("g.bpk").exists());
}
