//! `tandem ground`, `tandem eval medsg`, `tandem train` and `tandem synth`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::annotation::{Document, Finding};
use crate::cli::{Cli, CliError, EvalCommand, GroundCommand, Split, SynthArgs, TrainArgs};
use crate::fsutil::{check_distinct_outputs, check_output};
use crate::grounding::eval::{self, EvalReport};
use crate::grounding::rng::Rng;
use crate::grounding::splits;
use crate::grounding::synth::{Rendering, SecondFactor};
use crate::grounding::task::Task;
use crate::grounding::train::{self, TrainOptions};
use crate::grounding::{BBox, Engine, LocateHint, Method, Proposal, hints, medsg};
use crate::study::{self, GrayImage};

/// Loads the first frame of a file or folder as a grey image, for grounding.
pub fn load_gray(path: &Path) -> Result<GrayImage, CliError> {
    load_gray_with_meta(path).map(|(g, _)| g)
}

/// As `load_gray`, with what the file's header says.
pub fn load_gray_with_meta(path: &Path) -> Result<(GrayImage, std::sync::Arc<study::Meta>), CliError> {
    let quiet = |_: f32, _: &str| {};
    let series = study::load(path, &quiet).map_err(|e| CliError(format!("{e} ({})", path.display())))?;
    let frame = series.frames.first().ok_or_else(|| CliError(format!("no frames ({})", path.display())))?;
    Ok((frame.to_gray(), series.meta.clone()))
}

pub fn parse_box(s: &str) -> Result<BBox, CliError> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| CliError(format!("--box must be x1,y1,x2,y2 numbers, got {s:?}")))?;
    if v.len() != 4 || !v.iter().all(|x| x.is_finite()) {
        return Err(CliError(format!("--box must be x1,y1,x2,y2, got {s:?}")));
    }
    let b = BBox::new(v[0], v[1], v[2], v[3]);
    if b.area() <= 0.0 {
        return Err(CliError("--box is empty".into()));
    }
    Ok(b)
}

#[derive(Serialize)]
struct GroundOutput<'a> {
    method: Method,
    model: Option<&'a str>,
    device: &'a str,
    proposals: &'a [Proposal],
}

pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<(), CliError> {
    let bytes = serde_json::to_vec_pretty(value)?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))
}

/// The document `--annotations PATH` gets, and whether the new proposals are merged into it:
/// the reviewed document at PATH (which must be about the same images as `fresh`), or `fresh`
/// where PATH may be written afresh. An error when PATH is an input, or exists and may not be
/// replaced.
pub(crate) fn target_document(
    path: &Path,
    inputs: &[&Path],
    fresh: Document,
    force: bool,
    replace: bool,
) -> Result<(Document, bool), CliError> {
    check_output(path, inputs, true).map_err(CliError)?;
    if std::fs::symlink_metadata(path).is_err() {
        return Ok((fresh, false));
    }
    match crate::annotation::io::load(path) {
        Ok(doc) if doc.findings.iter().any(Finding::has_human_decision) && !replace => {
            if !doc.covers_images_of(&fresh) {
                return Err(CliError(format!(
                    "the annotations hold reviewed findings on other images; pass --replace to discard them, or write elsewhere ({})",
                    path.display()
                )));
            }
            Ok((doc, true))
        }
        Ok(_) if replace || force => Ok((fresh, false)),
        Err(_) if force => Ok((fresh, false)),
        _ => Err(CliError(format!("{} exists; pass --force to replace it", path.display()))),
    }
}

fn print_proposals(proposals: &[Proposal]) {
    if proposals.is_empty() {
        println!("no boxes found");
    }
    for (k, p) in proposals.iter().enumerate() {
        let b = p.target_box;
        print!("{:>2}. [{:.0}, {:.0}, {:.0}, {:.0}]  score {:.3}", k + 1, b.x1, b.y1, b.x2, b.y2, p.score);
        if let Some(r) = p.reference_box {
            print!("  (reference [{:.0}, {:.0}, {:.0}, {:.0}])", r.x1, r.y1, r.x2, r.y2);
        }
        println!("  {:?} by {}", p.kind, p.source);
    }
}

pub fn run(cli: &Cli, what: &GroundCommand) -> Result<(), CliError> {
    match what {
        GroundCommand::Diff { prior, current, json, annotations, method, min_score, force, replace } => {
            // Every output is checked before anything is computed or written.
            let inputs = [prior.as_path(), current.as_path()];
            let outputs: Vec<&Path> = json.iter().chain(annotations).map(PathBuf::as_path).collect();
            check_distinct_outputs(&outputs).map_err(CliError)?;
            if let Some(path) = json {
                check_output(path, &inputs, *force).map_err(CliError)?;
            }
            // The document to write (its images now, its findings after grounding): reviewed work
            // to merge into, or a fresh one.
            let document = match annotations {
                Some(path) => {
                    check_output(path, &inputs, true).map_err(CliError)?;
                    let fresh = crate::cli::annotations::document_for(prior, current, &[])?;
                    Some((path, target_document(path, &inputs, fresh, *force, *replace)?))
                }
                None => None,
            };
            let (a, b) = (load_gray(prior)?, load_gray(current)?);
            let engine = crate::cli::engine(cli);
            let out = engine.diff(&a, &b, (*method).into());
            let proposals: Vec<Proposal> = out.proposals.into_iter().filter(|p| p.score >= *min_score).collect();
            if cli.verbose {
                eprintln!("{:?} in {:.1} ms", out.method, out.millis);
            }
            print_proposals(&proposals);
            if let Some(path) = json {
                write_json(
                    path,
                    &GroundOutput { method: out.method, model: engine.model_name(), device: &engine.device.label, proposals: &proposals },
                )?;
            }
            if let Some((path, (mut doc, merging))) = document {
                let findings = crate::cli::annotations::findings_for(&proposals);
                let merge = if merging {
                    Some(doc.merge_proposals(findings))
                } else {
                    doc.findings = findings;
                    None
                };
                crate::annotation::io::save(&doc, path)?;
                match merge {
                    Some(m) => eprintln!(
                        "merged {} new proposal(s) into {} ({} reviewed finding(s) kept, {} proposal(s) over reviewed ones left out, {} earlier proposal(s) replaced)",
                        m.added,
                        path.display(),
                        m.kept,
                        m.skipped,
                        m.replaced
                    ),
                    None => eprintln!("wrote {} proposal(s) to {}", doc.findings.len(), path.display()),
                }
            }
            Ok(())
        }
        GroundCommand::Series { prior, current, json, annotations, method, min_score, force, replace } => {
            let outputs = crate::cli::series::Outputs {
                json: json.as_deref(),
                annotations: annotations.as_deref(),
                force: *force,
                replace: *replace,
            };
            crate::cli::series::ground_series(cli, prior, current, (*method).into(), *min_score, &outputs)
        }
        GroundCommand::Locate { reference, bbox, target, json, method, force } => {
            if let Some(path) = json {
                check_output(path, &[reference.as_path(), target.as_path()], *force).map_err(CliError)?;
            }
            let b = parse_box(bbox)?;
            let ((r, rm), (t, tm)) = (load_gray_with_meta(reference)?, load_gray_with_meta(target)?);
            let engine = crate::cli::engine(cli);
            // Two DICOM images: their headers choose the search, as in the viewer. Other
            // images may be crops or unrelated views: the whole target is searched evenly.
            let scale = (t.width as f32 / r.width as f32, t.height as f32 / r.height as f32);
            let hint = if rm.modality.is_some() && tm.modality.is_some() {
                hints::between(&rm, &tm, b, scale, t.width.max(t.height) as f32)
            } else {
                LocateHint::default()
            };
            let found = engine.locate(&r, b, &t, &hint, (*method).into());
            let proposals: Vec<Proposal> = found.into_iter().collect();
            print_proposals(&proposals);
            if let Some(path) = json {
                let m = proposals.first().map(|_| Method::from(*method)).unwrap_or(Method::Baseline);
                write_json(
                    path,
                    &GroundOutput { method: m, model: engine.model_name(), device: &engine.device.label, proposals: &proposals },
                )?;
            }
            Ok(())
        }
    }
}

pub fn eval(cli: &Cli, what: &EvalCommand) -> Result<(), CliError> {
    let EvalCommand::Medsg { task_file, images_root, predictions, method, force } = what else {
        return Err(CliError("not a task-file evaluation".into()));
    };
    let items = medsg::read_task_file(task_file)?;
    let root = images_root.clone().unwrap_or_else(|| task_file.parent().map(Path::to_path_buf).unwrap_or_default());
    if let Some(p) = predictions {
        let images: Vec<PathBuf> = items.iter().flat_map(|i| i.images.iter().map(|f| root.join(f))).collect();
        let mut inputs: Vec<&Path> = vec![task_file.as_path()];
        inputs.extend(images.iter().map(PathBuf::as_path));
        check_output(p, &inputs, *force).map_err(CliError)?;
    }
    let engine = crate::cli::engine(cli);
    let method: Method = (*method).into();
    if method == Method::Model && !engine.has_model() {
        eprintln!("warning: {}", engine.status);
    }
    let report = run_eval(&engine, &items, &root, method);
    print!("{}", eval::table(&report, method_label(&engine, method)));
    if report.skipped_referring > 0 {
        println!("referring items skipped: {}", report.skipped_referring);
    }
    if !report.failed.is_empty() {
        eprintln!("{} item(s) without an answer (counted as IoU 0), e.g. {}", report.failed.len(), report.failed[0]);
    }
    if let Some(p) = predictions {
        write_json(p, &report.predictions)?;
    }
    Ok(())
}

fn method_label(engine: &Engine, method: Method) -> &'static str {
    match (method, engine.has_model()) {
        (Method::Model, true) => "model",
        _ => "baseline",
    }
}

fn run_eval(engine: &Engine, items: &[medsg::MedsgItem], root: &Path, method: Method) -> EvalReport {
    let progress = std::sync::Mutex::new(super::progress::Progress::new("evaluated"));
    eval::evaluate(engine, items, root, method, &|done, total| {
        if let Ok(mut p) = progress.lock() {
            p.update(done, total);
        }
    })
}

pub fn train(cli: &Cli, args: &TrainArgs) -> Result<(), CliError> {
    // The weights, their metadata, the loss curve and the card (--calibrate-only is asked to
    // rewrite them in place).
    let outputs = [
        args.out.clone(),
        crate::grounding::weights::meta_path(&args.out),
        args.out.with_file_name("loss.csv"),
        args.out.with_file_name("README.md"),
    ];
    for out in &outputs {
        check_output(out, &[args.validation.as_path()], args.force || args.calibrate_only).map_err(CliError)?;
    }
    let opts = TrainOptions {
        data_dir: args.data.clone(),
        out: args.out.clone(),
        seed: args.seed,
        steps: args.steps,
        batch: args.batch,
        gpu: args.gpu,
        minutes: args.minutes,
        images_dir: (args.images.as_os_str() != "none").then(|| args.images.clone()),
        without_family: args.without_family,
        with_texture: args.with_texture,
        with_window: args.with_window,
        ..TrainOptions::default()
    };
    let run = if args.calibrate_only { train::recalibrate } else { train::train };
    let report = run(&opts, &|line| eprintln!("{line}")).map_err(|e| CliError(format!("{e:#}")))?;
    if args.validation.exists() {
        eprintln!("evaluating on {}", args.validation.display());
        let items = medsg::read_task_file(&args.validation)?;
        let root = args.validation.parent().map(Path::to_path_buf).unwrap_or_default();
        let weights = crate::grounding::WeightsSource::File(args.out.clone());
        let engine = Engine::new(cli.device.into(), &weights);
        let model = run_eval(&engine, &items, &root, Method::Model);
        let base = run_eval(&engine, &items, &root, Method::Baseline);
        let copied = eval::reference_as_answer(&items);
        let meta = crate::grounding::weights::load_meta(&weights).map_err(|e| CliError(e.to_string()))?;
        let card = crate::grounding::card::model_card(
            &report,
            &model,
            &base,
            &copied,
            &args.validation,
            &engine.device.label,
            (meta.change_calibration, meta.match_calibration),
            meta.change_extent_logit,
            Some(args.out.with_file_name("ood.json")).as_deref().filter(|p| p.exists()),
        );
        let card_path = args.out.with_file_name("README.md");
        crate::fsutil::write_atomic(&card_path, card.as_bytes())?;
        eprintln!("wrote {}", card_path.display());
        print!(
            "{}{}",
            eval::table(&model, "model"),
            eval::table(&base, "baseline").lines().skip(2).map(|l| format!("{l}\n")).collect::<String>()
        );
    } else {
        eprintln!("no validation set at {} (make one with `tandem synth`)", args.validation.display());
    }
    Ok(())
}

pub fn synth(args: &SynthArgs) -> Result<(), CliError> {
    let split = match args.split {
        Split::Validation => splits::Split::Validation,
        Split::Train => splits::Split::Train,
        Split::HeldoutSource => splits::Split::HeldOutSource,
    };
    let rendering: Rendering = args.rendering.into();
    let mut name = match split {
        splits::Split::Train => "train_sample".to_string(),
        other => other.name().to_string(),
    };
    if rendering == Rendering::Second {
        name.push_str("_second");
    }
    if let Some(family) = args.family {
        name.push('_');
        name.push_str(family.name());
    }
    // In one order, without repeats: the file name and the items do not depend on how they were listed.
    let second_without: Vec<SecondFactor> = SecondFactor::ALL.into_iter().filter(|f| args.second_without.contains(f)).collect();
    if !second_without.is_empty() {
        if rendering != Rendering::Second {
            return Err(CliError("--second-without applies to --rendering second only".into()));
        }
        name.push_str("_without");
        for f in &second_without {
            name.push('-');
            name.push_str(f.name());
        }
    }
    check_synth_output(args, &name)?;
    let images = (args.images.as_os_str() != "none").then_some(args.images.as_path());
    let sources = splits::read(split, &args.data, images).map_err(|e| CliError(format!("{e:#}")))?;
    if sources.pool.is_empty() {
        return Err(CliError(format!("none of the source images were found in {}", args.data.display())));
    }
    eprintln!("{} source images, {} volumes", sources.pool.images.len(), sources.volumes.len());
    let mut synth = splits::synth(&sources, 336, rendering);
    synth.second_without = second_without;
    let tasks: Vec<Task> = match args.family {
        Some(family) => {
            synth.families = vec![family];
            vec![Task::RegisteredDiff, Task::NonRegisteredDiff]
        }
        None => Task::TRAINED.to_vec(),
    };
    let root = Rng::new(args.seed);
    let mut items = Vec::new();
    for task in &tasks {
        let t = Task::TRAINED.iter().position(|x| x == task).unwrap_or(0);
        for k in 0..args.per_task {
            let mut rng = root.fork((t * 100_000 + k) as u64);
            let item = synth.item(*task, &mut rng);
            items.push((format!("{}/{:04}", task.code(), k), item));
        }
        eprintln!("{}: {} items", task.medsg_name(), args.per_task);
    }
    let path: PathBuf = medsg::write_items(&args.out, &name, &items).map_err(|e| CliError(format!("{e:#}")))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `synth` writes `NAME.json` and `images/` into `--out`: refused over the source images, and
/// over an existing task file or images (which another split's items would overwrite) unless
/// `--force`.
fn check_synth_output(args: &SynthArgs, name: &str) -> Result<(), CliError> {
    if args.out.exists() && crate::fsutil::same_file(&args.out, &args.data) {
        return Err(CliError(format!("--out is the source images' folder; write elsewhere ({})", args.out.display())));
    }
    check_output(&args.out.join(format!("{name}.json")), &[], args.force).map_err(CliError)?;
    let images = args.out.join("images");
    let has_images = std::fs::read_dir(&images).map(|mut d| d.next().is_some()).unwrap_or(false);
    if has_images && !args.force {
        return Err(CliError(format!("{} exists; pass --force to replace it", images.display())));
    }
    Ok(())
}
