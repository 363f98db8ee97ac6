//! `tandem eval ood`: the out-of-distribution report. Items are synthesized from images never
//! trained on (held-out files, a held-out source), rendered by the training pipeline or a second
//! one, and of each change family; each set is written as MedSG JSON + PNG and scored by the
//! same path as `tandem eval medsg`, model beside baseline.

use std::path::{Path, PathBuf};

use crate::cli::{Cli, CliError};
use crate::grounding::eval::{self, EvalReport};
use crate::grounding::rng::Rng;
use crate::grounding::splits::{self, Split};
use crate::grounding::synth::{ChangeKind, Rendering};
use crate::grounding::task::Task;
use crate::grounding::{Method, medsg};

#[derive(clap::Args, Debug)]
pub struct OodArgs {
    /// Items per task and row.
    #[arg(long, default_value_t = 40)]
    pub per_task: usize,
    #[arg(long, default_value_t = 31337)]
    pub seed: u64,
    /// Folder with the pydicom / pydicom-data test files (the held-out validation files).
    #[arg(long, default_value = "../shared/data/dicom")]
    pub data: PathBuf,
    /// Folder of training images whose held-out sources give the held-out-source rows.
    #[arg(long, default_value = "../shared/data/train-images")]
    pub images: PathBuf,
    /// Keep the generated sets here (one folder per row) instead of a temporary folder.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Only the rows whose name contains this text.
    #[arg(long)]
    pub only: Option<String>,
    /// Also write the table as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Replace --json or sets in --keep.
    #[arg(long)]
    pub force: bool,
}

/// One row group of the report: where its images come from and how they are rendered.
struct Row {
    name: String,
    split: Split,
    rendering: Rendering,
    family: Option<ChangeKind>,
}

fn rows() -> Vec<Row> {
    let mut rows = vec![
        Row { name: "validation images, second rendering".into(), split: Split::Validation, rendering: Rendering::Second, family: None },
        Row { name: "held-out source, training rendering".into(), split: Split::HeldOutSource, rendering: Rendering::Train, family: None },
        Row { name: "held-out source, second rendering".into(), split: Split::HeldOutSource, rendering: Rendering::Second, family: None },
    ];
    for family in ChangeKind::ALL {
        rows.push(Row {
            name: format!("family {}, validation images", family.name()),
            split: Split::Validation,
            rendering: Rendering::Train,
            family: Some(family),
        });
    }
    rows
}

/// One row of the report, as `--json` writes it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RowResult {
    pub row: String,
    pub task: String,
    pub n: usize,
    pub model_acc05: f64,
    pub baseline_acc05: f64,
    pub model_iou: f64,
    pub baseline_iou: f64,
}

pub fn run(cli: &Cli, args: &OodArgs) -> Result<(), CliError> {
    if let Some(j) = &args.json {
        crate::fsutil::check_output(j, &[], args.force).map_err(CliError)?;
    }
    let engine = crate::cli::engine(cli);
    if !engine.has_model() {
        eprintln!("warning: {}", engine.status);
    }
    let temp = std::env::temp_dir().join(format!("tandem-ood-{}", std::process::id()));
    let base = args.keep.clone().unwrap_or_else(|| temp.clone());
    let result = report(&engine, args, &base);
    if args.keep.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    let results = result?;
    print!("{}", table(&results));
    if let Some(j) = &args.json {
        let text = serde_json::to_string_pretty(&results).map_err(|e| CliError(e.to_string()))?;
        crate::fsutil::write_atomic(j, text.as_bytes()).map_err(|e| CliError(format!("{}: {e}", j.display())))?;
    }
    Ok(())
}

fn report(engine: &crate::grounding::Engine, args: &OodArgs, base: &Path) -> Result<Vec<RowResult>, CliError> {
    let mut results = Vec::new();
    for (r, row) in rows().into_iter().enumerate() {
        if args.only.as_deref().is_some_and(|o| !row.name.contains(o)) {
            continue;
        }
        let sources = splits::read(row.split, &args.data, Some(&args.images)).map_err(|e| CliError(format!("{}: {e:#}", row.name)))?;
        let mut synth = splits::synth(&sources, 336, row.rendering);
        let tasks: Vec<Task> = match row.family {
            Some(f) => {
                synth.families = vec![f];
                vec![Task::RegisteredDiff, Task::NonRegisteredDiff]
            }
            None => Task::TRAINED.to_vec(),
        };
        let root = Rng::new(args.seed ^ (r as u64 * 0x9E37));
        let mut items = Vec::new();
        for task in &tasks {
            let t = Task::TRAINED.iter().position(|x| x == task).unwrap_or(0);
            for k in 0..args.per_task {
                let mut rng = root.fork((t * 100_000 + k) as u64);
                items.push((format!("{}/{:04}", task.code(), k), synth.item(*task, &mut rng)));
            }
        }
        let dir = base.join(format!("row{r}"));
        if dir.exists() {
            if !args.force && args.keep.is_some() {
                return Err(CliError(format!("{} exists; pass --force to replace it", dir.display())));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        let file = medsg::write_items(&dir, "items", &items).map_err(|e| CliError(format!("{e:#}")))?;
        let parsed = medsg::read_task_file(&file)?;
        eprintln!("{}: {} items ({} source images, {} volumes)", row.name, parsed.len(), sources.pool.images.len(), sources.volumes.len());
        let model = eval::evaluate(engine, &parsed, &dir, Method::Model, &|_, _| {});
        let baseline = eval::evaluate(engine, &parsed, &dir, Method::Baseline, &|_, _| {});
        for task in tasks {
            let key = task.medsg_name();
            let (Some(m), Some(b)) = (model.per_task.get(key), baseline.per_task.get(key)) else { continue };
            results.push(RowResult {
                row: row.name.clone(),
                task: format!("{} {}", task.code(), key),
                n: m.n,
                model_acc05: m.acc(m.hits_05),
                baseline_acc05: b.acc(b.hits_05),
                model_iou: m.mean_iou(),
                baseline_iou: b.mean_iou(),
            });
        }
        report_failures(&row.name, &model, &baseline);
    }
    Ok(results)
}

fn report_failures(row: &str, model: &EvalReport, baseline: &EvalReport) {
    for (label, r) in [("model", model), ("baseline", baseline)] {
        if !r.failed.is_empty() {
            eprintln!("{row}: {label}: {} item(s) without an answer, e.g. {}", r.failed.len(), r.failed[0]);
        }
    }
}

fn table(results: &[RowResult]) -> String {
    let mut s = String::from(
        "| items | task | n | model Acc@0.5 | baseline Acc@0.5 | mean IoU model / baseline |\n|---|---|---:|---:|---:|---:|\n",
    );
    for r in results {
        let (m, b) = if r.model_acc05 > r.baseline_acc05 {
            (format!("**{:.1}**", r.model_acc05), format!("{:.1}", r.baseline_acc05))
        } else if r.baseline_acc05 > r.model_acc05 {
            (format!("{:.1}", r.model_acc05), format!("**{:.1}**", r.baseline_acc05))
        } else {
            (format!("{:.1}", r.model_acc05), format!("{:.1}", r.baseline_acc05))
        };
        s.push_str(&format!("| {} | {} | {} | {m} | {b} | {:.3} / {:.3} |\n", r.row, r.task, r.n, r.model_iou, r.baseline_iou));
    }
    s
}
