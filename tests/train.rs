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
        NetRunner { net, device: device.clone(), meta }
    };
    let (ra, rb) = (load(a.path()), load(b.path()));
    let p = GrayImage::from_fn(64, 64, |x, y| ((x * 7 + y * 3) % 23) as f32 / 23.0);
    let c = GrayImage::from_fn(64, 64, |x, y| if (20..30).contains(&x) && (30..40).contains(&y) { 1.0 } else { p.get(x, y) });
    assert_eq!(ra.change_logits(&p, &c).unwrap(), rb.change_logits(&p, &c).unwrap());
    assert_eq!(ra.meta.change_calibration, rb.meta.change_calibration);
}
