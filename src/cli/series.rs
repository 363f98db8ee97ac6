//! `tandem ground series`: whole-series change finding from the command line.

use std::path::Path;

use serde_json::{Value, json};

use crate::annotation::{Document, Finding, FindingKind, ImageBox, ImageRef, Source};
use crate::cli::ground::{target_document, write_json};
use crate::cli::{Cli, CliError};
use crate::fsutil::{check_distinct_outputs, check_output};
use crate::grounding::series::{SeriesOutput, find_changes};
use crate::grounding::{BBox, Engine, Method};
use crate::study::Series;

/// Where `ground series` writes, and whether it may replace what is there.
pub struct Outputs<'a> {
    pub json: Option<&'a Path>,
    pub annotations: Option<&'a Path>,
    pub force: bool,
    pub replace: bool,
}

/// A file or folder as a series, with the path in the error.
pub fn load_series(path: &Path) -> Result<Series, CliError> {
    let quiet = |_: f32, _: &str| {};
    crate::study::load(path, &quiet).map_err(|e| CliError(format!("{e} ({})", path.display())))
}

pub fn ground_series(cli: &Cli, prior: &Path, current: &Path, method: Method, min_score: f32, outputs: &Outputs) -> Result<(), CliError> {
    // Every output is checked before anything is computed or written.
    let inputs = [prior, current];
    let planned: Vec<&Path> = outputs.json.iter().chain(outputs.annotations.iter()).copied().collect();
    check_distinct_outputs(&planned).map_err(CliError)?;
    if let Some(path) = outputs.json {
        check_output(path, &inputs, outputs.force).map_err(CliError)?;
    }
    if let Some(path) = outputs.annotations {
        check_output(path, &inputs, true).map_err(CliError)?;
    }
    let (p, c) = (load_series(prior)?, load_series(current)?);
    let document = match outputs.annotations {
        Some(path) => {
            let fresh = Document::new(vec![ImageRef::from_series("prior", &p), ImageRef::from_series("current", &c)]);
            Some((path, target_document(path, &inputs, fresh, outputs.force, outputs.replace)?))
        }
        None => None,
    };
    let engine = crate::cli::engine(cli);
    let out = run(&engine, &p, &c, method, min_score)?;
    eprintln!(
        "{} slice pair(s) compared ({}), {} current slice(s) outside the prior, {:.0} ms",
        out.compared,
        matching_note(&out),
        out.matched.unmatched.len(),
        out.millis
    );
    if out.findings.is_empty() {
        println!("no changes found");
    }
    for (k, f) in out.findings.iter().enumerate() {
        let [x1, y1, x2, y2] = f.bbox;
        let slices =
            if f.slices[0] == f.slices[1] { format!("slice {}", f.slices[0]) } else { format!("slices {}-{}", f.slices[0], f.slices[1]) };
        println!("{:>2}. {slices} (peak {})  [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]  score {:.3}", k + 1, f.peak_slice, f.score);
    }
    if let Some(path) = outputs.json {
        write_json(path, &report(&engine, prior, current, &p, &c, &out))?;
    }
    if let Some((path, (mut doc, merging))) = document {
        let findings = findings_of(&out, engine.model_name());
        if merging {
            let m = doc.merge_proposals(findings);
            eprintln!("merged {} new finding(s) into {} ({} reviewed finding(s) kept)", m.added, path.display(), m.kept);
        } else {
            doc.findings = findings;
            eprintln!("wrote {} finding(s) to {}", doc.findings.len(), path.display());
        }
        crate::annotation::io::save(&doc, path)?;
    }
    Ok(())
}

/// Whole-series change finding with progress on stderr.
pub fn run(engine: &Engine, prior: &Series, current: &Series, method: Method, min_score: f32) -> Result<SeriesOutput, CliError> {
    let mut progress = super::progress::Progress::new("slice pairs grounded");
    let mut report = |done: usize, total: usize| progress.update(done, total);
    Ok(find_changes(engine, prior, current, method, min_score, &mut report, None)?)
}

fn matching_note(out: &SeriesOutput) -> String {
    use crate::grounding::series::Matching;
    match (out.matched.matching, out.matched.shift_mm) {
        (Matching::Position, _) => "matched by position along the normal".into(),
        (Matching::RegisteredPosition, Some(s)) => {
            format!("frames of reference differ: matched by position after a {s:.1} mm shift along the normal found by comparing slices")
        }
        (Matching::RegisteredPosition, None) => "matched by registered position".into(),
        (Matching::Index, _) => "no slice positions: matched by index".into(),
    }
}

/// The JSON `--json` gets: what ran where, the two series, the pairing and the findings.
pub fn report(engine: &Engine, prior_path: &Path, current_path: &Path, prior: &Series, current: &Series, out: &SeriesOutput) -> Value {
    let mut v = json!({
        "method": out.method,
        "model": engine.model_name(),
        "device": engine.device.label,
        "prior": {"path": prior_path.display().to_string(), "series_uid": prior.meta.series_uid, "slices": prior.frames.len()},
        "current": {"path": current_path.display().to_string(), "series_uid": current.meta.series_uid, "slices": current.frames.len()},
    });
    if let (Value::Object(m), Ok(Value::Object(rest))) = (&mut v, serde_json::to_value(out)) {
        m.extend(rest);
    }
    v
}

/// One annotation finding per series finding: its box on every slice it spans (current) and
/// the matching box on the paired prior slice, with its slice range kept beside.
pub fn findings_of(out: &SeriesOutput, model: Option<&str>) -> Vec<Finding> {
    findings_on(out, model, "prior", "current")
}

/// `findings_of` with the boxes on the images keyed `prior` and `current` (a timeline's
/// timepoints are keyed `t0`, `t1`, …).
pub fn findings_on(out: &SeriesOutput, model: Option<&str>, prior: &str, current: &str) -> Vec<Finding> {
    let now = crate::annotation::document::now();
    let (id, version) = match (out.method, model) {
        (Method::Model, Some(name)) => match name.rsplit_once(' ') {
            Some((id, v)) => (id.to_string(), v.to_string()),
            None => (name.to_string(), String::new()),
        },
        _ => ("baseline".to_string(), String::new()),
    };
    out.findings
        .iter()
        .map(|f| {
            let mut boxes = Vec::new();
            for b in &f.boxes {
                if let Some(r) = b.reference_box {
                    boxes.push(ImageBox::new(prior, b.prior_slice as u32, BBox::from_array(r)));
                }
                boxes.push(ImageBox::new(current, b.slice as u32, BBox::from_array(b.bbox)));
            }
            let source = Source::Model { id: id.clone(), version: version.clone(), score: f.score as f32 };
            let mut finding = Finding::new(FindingKind::Change, FindingKind::Change.label(), boxes, source, &now);
            finding.extra.insert("slices".into(), json!(f.slices));
            finding.extra.insert("peak_slice".into(), json!(f.peak_slice));
            finding
        })
        .collect()
}
