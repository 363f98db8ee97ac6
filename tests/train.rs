//! `tandem train` is seeded and reproducible: two short runs give the same losses and a network
//! that answers identically (the weight files differ only in burn's random parameter ids).

use std::process::Command;

use tandem::grounding::infer::NetRunner;
use tandem::grounding::{WeightsSource, weights};
use tandem::study::GrayImage;

fn train(dir: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["train", "--steps", "3", "--batch", "2", "--seed", "11", "--data", "tests/data/dicom", "--validation", "none.json", "--out"])
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
