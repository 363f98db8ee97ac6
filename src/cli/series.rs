//! `tandem ground series`: whole-series change finding from the command line.

use std::io::IsTerminal;
use std::path::Path;

use serde_json::{Value, json};

use crate::annotation::{Document, Finding, FindingKind, ImageBox, ImageRef, Source};
use crate::cli::ground::{target_document, write_json};
use crate::cli::{Cli, CliError};
use crate::fsutil::{check_distinct_outputs, check_output};
use crate::grounding::series::{SeriesOutput, SliceSource, Stage, find_changes_in};
use crate::grounding::{BBox, Engine, Method};
use crate::study::Series;
use crate::study::slices::SliceFiles;

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

/// A series as `ground series` reads it: a folder of single-frame DICOM files by its headers,
/// each slice decoded when its pair is grounded (memory then holds a few slices, not two whole
/// series); anything else (a multi-frame file, a volume) read whole.
pub enum SeriesInput {
    Files(SliceFiles),
    Loaded(Series),
}

impl SeriesInput {
    pub fn open(path: &Path) -> Result<SeriesInput, CliError> {
        match SliceFiles::scan(path) {
            Ok(Some(files)) => Ok(SeriesInput::Files(files)),
            // A folder that cannot be scanned fails in `load_series` with the loader's message.
            _ => Ok(SeriesInput::Loaded(load_series(path)?)),
        }
    }

    pub fn source(&self) -> &dyn SliceSource {
        match self {
            SeriesInput::Files(f) => f,
            SeriesInput::Loaded(s) => s,
        }
    }

    fn series_uid(&self) -> Option<&String> {
        match self {
            SeriesInput::Files(f) => f.meta.series_uid.as_ref(),
            SeriesInput::Loaded(s) => s.meta.series_uid.as_ref(),
        }
    }

    /// The document's reference to it, as `ImageRef::from_series` makes it for the loaded series.
    fn image_ref(&self, id: &str) -> Result<ImageRef, CliError> {
        let files = match self {
            SeriesInput::Loaded(s) => return Ok(ImageRef::from_series(id, s)),
            SeriesInput::Files(f) => f,
        };
        let first = files.frame(0).map_err(|e| CliError(format!("{e} ({})", files.source.display())))?;
        let one = Series { id: files.id.clone(), frames: vec![first], meta: files.meta.clone(), source: files.source.clone() };
        let mut r = ImageRef::from_series(id, &one);
        r.frames = files.slices.len() as u32;
        // Each slice its own instance, so that a box on slice k names slice k's file.
        let uids: Option<Vec<String>> = files.slices.iter().map(|s| s.meta.sop_instance_uid.clone()).collect();
        if let Some(uids) = uids.filter(|u| u.len() > 1 && u.iter().any(|u| Some(u) != r.sop_instance_uid.as_ref())) {
            r.frame_sop_instance_uids = uids;
        }
        Ok(r)
    }
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
    let (p, c) = (SeriesInput::open(prior)?, SeriesInput::open(current)?);
    let document = match outputs.annotations {
        Some(path) => {
            let fresh = Document::new(vec![p.image_ref("prior")?, c.image_ref("current")?]);
            Some((path, target_document(path, &inputs, fresh, outputs.force, outputs.replace)?))
        }
        None => None,
    };
    let engine = crate::cli::engine(cli);
    let out = run(&engine, p.source(), c.source(), method, min_score)?;
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
        let described = |path: &Path, s: &SeriesInput| (path.display().to_string(), s.series_uid().cloned(), s.source().slice_count());
        write_json(path, &report_of(&engine, described(prior, &p), described(current, &c), &out))?;
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
    if cli.verbose
        && let Some(mib) = crate::cli::bench::peak_rss_mib()
    {
        // `tandem bench series` reads this: only the process itself knows its own peak.
        eprintln!("peak memory: {mib:.0} MiB");
    }
    Ok(())
}

/// Whole-series change finding with progress on stderr.
pub fn run(
    engine: &Engine,
    prior: &dyn SliceSource,
    current: &dyn SliceSource,
    method: Method,
    min_score: f32,
) -> Result<SeriesOutput, CliError> {
    // Made when the pairs start, so that the time a registration took does not count in
    // their pace.
    let mut progress = None;
    let mut report = |stage: Stage| match stage {
        // On a terminal only: a log (and a refusal's one error line) has the registration in
        // the summary line instead.
        Stage::Registering if std::io::stderr().is_terminal() => {
            eprintln!("registering the volumes in 3D (the frames of reference differ)…")
        }
        Stage::Registering => {}
        Stage::Pairs(done, total) => {
            progress.get_or_insert_with(|| super::progress::Progress::new("slice pairs grounded")).update(done, total)
        }
    };
    Ok(find_changes_in(engine, prior, current, method, min_score, &mut report, None)?)
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
        (Matching::Rigid, _) => match &out.matched.rigid {
            Some(r) => {
                let ([ax, ay, az], [tx, ty, tz]) = (r.transform.angles_deg, r.transform.translation_mm);
                format!(
                    "frames of reference differ: volumes registered in 3D (turned {ax:.1}°, {ay:.1}°, {az:.1}° about x, y, z; moved {tx:.1}, {ty:.1}, {tz:.1} mm; \
                     NCC {:.3}, {:.0}% of the current within the prior; {:.0} ms decoding, {:.0} ms searching), each current slice compared with the prior resliced on its plane",
                    r.ncc,
                    r.overlap * 100.0,
                    r.decode_millis,
                    r.millis
                )
            }
            None => "matched by 3D registration".into(),
        },
    }
}

/// The JSON `--json` gets: what ran where, the two series, the pairing and the findings.
pub fn report(engine: &Engine, prior_path: &Path, current_path: &Path, prior: &Series, current: &Series, out: &SeriesOutput) -> Value {
    let described = |path: &Path, s: &Series| (path.display().to_string(), s.meta.series_uid.clone(), s.frames.len());
    report_of(engine, described(prior_path, prior), described(current_path, current), out)
}

/// `report` from each series' (path, Series Instance UID, slice count).
fn report_of(
    engine: &Engine,
    prior: (String, Option<String>, usize),
    current: (String, Option<String>, usize),
    out: &SeriesOutput,
) -> Value {
    let mut v = json!({
        "method": out.method,
        "model": engine.model_name(),
        "device": engine.device.label,
        "prior": {"path": prior.0, "series_uid": prior.1, "slices": prior.2},
        "current": {"path": current.0, "series_uid": current.1, "slices": current.2},
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
