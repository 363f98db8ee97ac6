//! The `tandem` command line: one parser, one dispatcher; every command calls the same core as
//! the viewer. Bad input exits 2 with one `error: …` line on stderr.

pub mod annotations;
pub mod batch;
pub mod bench;
pub mod bench_series;
pub mod bench_view;
pub mod compare;
pub mod ground;
pub mod info;
pub mod ood;
#[cfg(feature = "pacs")]
pub mod pacs;
pub mod progress;
pub mod series;
pub mod snapshot;
pub mod track;

use std::path::PathBuf;

use crate::grounding::synth::{ChangeKind, SecondFactor};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::grounding::{DevicePreference, Engine, Method, WeightsSource};

#[derive(Parser, Debug)]
#[command(name = "tandem", version, about = "Side-by-side radiology viewer with an embedded change and correspondence grounder")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print what runs where (device, model) to stderr.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Where the grounder runs: auto (a real GPU if found, else CPU), cpu or gpu.
    #[arg(long, global = true, env = "TANDEM_DEVICE", default_value = "auto", ignore_case = true)]
    pub device: DeviceArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DeviceArg {
    Auto,
    #[value(alias = "flex")]
    Cpu,
    #[value(alias = "wgpu")]
    Gpu,
}

impl From<DeviceArg> for DevicePreference {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => DevicePreference::Auto,
            DeviceArg::Cpu => DevicePreference::Cpu,
            DeviceArg::Gpu => DevicePreference::Gpu,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum MethodArg {
    Model,
    Baseline,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Model => Method::Model,
            MethodArg::Baseline => Method::Baseline,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the viewer on a prior and a current study (files or folders), or one folder
    /// holding two studies of a patient (the older is hung as prior).
    View {
        paths: Vec<PathBuf>,
        /// Annotation document to open with the pair.
        #[arg(long)]
        annotations: Option<PathBuf>,
        /// Open the patient's latest study and the previous one with the same modality from
        /// this PACS (DICOMweb root URL), retrieved into the cache first.
        #[arg(long, requires = "patient", conflicts_with = "paths")]
        pacs: Option<String>,
        /// Patient ID for --pacs.
        #[arg(long, requires = "pacs")]
        patient: Option<String>,
        /// Where --pacs keeps retrieved studies (default: ~/.cache/tandem/pacs).
        #[arg(long, requires = "pacs")]
        cache: Option<PathBuf>,
    },
    /// Header facts and a digest of the decoded pixels.
    Info {
        file: PathBuf,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Difference and consistency grounding on any image Tandem opens.
    Ground {
        #[command(subcommand)]
        what: GroundCommand,
    },
    /// Evaluate on a benchmark.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// Train the grounder (seeded, reproducible).
    Train(TrainArgs),
    /// Generate MedSG-Bench-format items with the synthesizer.
    Synth(SynthArgs),
    /// Benchmarks that print a table of medians and ratios.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Follow a box through the frames of a series or through timepoints, with its long axis,
    /// short axis and area in each and the change from baseline and from nadir.
    Track(track::TrackArgs),
    /// Ground diff or series over a manifest of pairs (restartable, sharded for job arrays),
    /// or join the shards' results with --merge.
    Batch(batch::BatchArgs),
    /// The two panes with their findings drawn into a PNG, headless (no window), for reports:
    /// side by side, both flicker phases, fade or subtraction.
    Snapshot(snapshot::SnapshotArgs),
    /// Check, export and import annotation documents.
    Annotations {
        #[command(subcommand)]
        what: annotations::AnnotationsCommand,
    },
    /// Search, retrieve from and store to a PACS over DICOMweb (credentials from
    /// TANDEM_PACS_TOKEN[_FILE] or TANDEM_PACS_USER and TANDEM_PACS_PASSWORD[_FILE]).
    #[cfg(feature = "pacs")]
    Pacs {
        #[command(subcommand)]
        what: pacs::PacsCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroundCommand {
    /// Boxes of what changed from PRIOR to CURRENT (in CURRENT's pixels).
    Diff {
        prior: PathBuf,
        current: PathBuf,
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write the boxes as a Tandem annotation document (findings = proposals).
        #[arg(long)]
        annotations: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "model")]
        method: MethodArg,
        /// Minimum score of the boxes to print.
        #[arg(long, default_value_t = 0.0)]
        min_score: f32,
        /// Replace existing output files (an annotation document with reviewed findings is
        /// merged into, not replaced, unless --replace).
        #[arg(long)]
        force: bool,
        /// Replace an existing --annotations document, reviewed findings included, instead of
        /// merging the new proposals into it.
        #[arg(long)]
        replace: bool,
    },
    /// What changed through a whole series: slices paired by position along the normal (the
    /// volumes registered in 3D and the prior resliced on each current slice's plane when the
    /// frames of reference differ; index order without geometry), each pair grounded, one
    /// change's boxes on neighbouring slices merged into one finding with its slice range.
    Series {
        /// The prior series: a folder (its largest series), a multi-frame file or a volume.
        prior: PathBuf,
        current: PathBuf,
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write the findings as a Tandem annotation document (one box per slice).
        #[arg(long)]
        annotations: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "model")]
        method: MethodArg,
        /// Minimum score of the boxes kept.
        #[arg(long, default_value_t = 0.0)]
        min_score: f32,
        /// Replace existing output files.
        #[arg(long)]
        force: bool,
        /// Replace an existing --annotations document, reviewed findings included.
        #[arg(long)]
        replace: bool,
    },
    /// Where the box of REFERENCE lies in TARGET.
    Locate {
        reference: PathBuf,
        /// x1,y1,x2,y2 in REFERENCE's pixels.
        #[arg(long = "box")]
        bbox: String,
        target: PathBuf,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "model")]
        method: MethodArg,
        /// Replace --json when it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Evaluate on a MedSG-Bench task file.
    Medsg {
        task_file: PathBuf,
        #[arg(long)]
        images_root: Option<PathBuf>,
        #[arg(long)]
        predictions: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "model")]
        method: MethodArg,
        /// Replace --predictions when it exists.
        #[arg(long)]
        force: bool,
    },
    /// The out-of-distribution report: items from images and a source never trained on, a
    /// second rendering pipeline and each change family, model beside baseline.
    Ood(ood::OodArgs),
    /// Two `eval ood --json` reports side by side, in items per row, with the rule a change to
    /// the grounder is kept by (no T1-T4 row down by more than a tolerance, the T1/T2 total not down).
    Compare(compare::CompareArgs),
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Weights file to write (its .json metadata goes beside it).
    #[arg(long, default_value = "models/grounder.bpk")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20261206)]
    pub seed: u64,
    #[arg(long, default_value_t = 3500)]
    pub steps: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Folder with the pydicom / pydicom-data test files the training images come from.
    #[arg(long, default_value = "../shared/data/dicom")]
    pub data: PathBuf,
    /// Folder of further training images (DICOM, NIfTI, MetaImage; one subfolder per source);
    /// its held-out sources are never read. "none" trains without it.
    #[arg(long, default_value = "../shared/data/train-images")]
    pub images: PathBuf,
    /// Leave one change family out of training (lesion, cutpaste, growth, intensity, removal).
    #[arg(long, value_parser = parse_family)]
    pub without_family: Option<ChangeKind>,
    /// Also draw the training-only texture family (a measurement; the shipped weights were
    /// trained without it, see the model card).
    #[arg(long)]
    pub with_texture: bool,
    /// Also give some difference-pair images a narrower display window (a measurement; the
    /// shipped weights were trained without it, see the model card).
    #[arg(long)]
    pub with_window: bool,
    /// Train on a GPU through wgpu.
    #[arg(long)]
    pub gpu: bool,
    /// Instead of --steps, train as many steps as fit in this many minutes (the count is
    /// measured on a short probe and recorded, so --steps reruns it).
    #[arg(long, conflicts_with = "calibrate_only")]
    pub minutes: Option<f64>,
    /// Keep the weights at --out and redo only the calibration (after inference changed).
    #[arg(long)]
    pub calibrate_only: bool,
    /// Evaluate on this task file afterwards and write the model card.
    #[arg(long, default_value = "models/validation/validation.json")]
    pub validation: PathBuf,
    /// Replace existing weights at --out (and their metadata and card); --calibrate-only
    /// rewrites them in place without it.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Folder to write the task file and images into.
    #[arg(long, default_value = "models/validation")]
    pub out: PathBuf,
    #[arg(long, default_value = "../shared/data/dicom")]
    pub data: PathBuf,
    /// Folder of further training images (train split; the heldout-source split reads its
    /// held-out source folders).
    #[arg(long, default_value = "../shared/data/train-images")]
    pub images: PathBuf,
    /// validation: DICOM test files held out from training; train: the training images;
    /// heldout-source: a source folder of --images never trained on.
    #[arg(long, value_enum, default_value = "validation")]
    pub split: Split,
    /// The rendering pipeline: train (the one training uses) or second (another resampling,
    /// cropping, windowing and noise, never trained on).
    #[arg(long, value_enum, default_value = "train")]
    pub rendering: RenderingArg,
    /// Difference items of this change family only.
    #[arg(long, value_parser = parse_family)]
    pub family: Option<ChangeKind>,
    /// With --rendering second: leave these of its acquisition differences out of difference
    /// pairs (gain, contrast, noise, quantization, filter; comma-separated), every draw made as
    /// before, so that the items pair with the full rendering's seed for seed and the two sets
    /// measure what those differences cost.
    #[arg(long, value_delimiter = ',', value_parser = parse_second_factor)]
    pub second_without: Vec<SecondFactor>,
    #[arg(long, default_value_t = 9001)]
    pub seed: u64,
    #[arg(long, default_value_t = 40)]
    pub per_task: usize,
    /// Replace an existing task file or images in --out.
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Split {
    Validation,
    Train,
    HeldoutSource,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum RenderingArg {
    Train,
    Second,
}

impl From<RenderingArg> for crate::grounding::synth::Rendering {
    fn from(r: RenderingArg) -> Self {
        match r {
            RenderingArg::Train => crate::grounding::synth::Rendering::Train,
            RenderingArg::Second => crate::grounding::synth::Rendering::Second,
        }
    }
}

fn parse_family(s: &str) -> Result<ChangeKind, String> {
    ChangeKind::parse(s).ok_or_else(|| format!("unknown change family {s:?}; one of {}", ChangeKind::ALL.map(|k| k.name()).join(", ")))
}

fn parse_second_factor(s: &str) -> Result<SecondFactor, String> {
    SecondFactor::parse(s)
        .ok_or_else(|| format!("unknown acquisition difference {s:?}; one of {}", SecondFactor::ALL.map(|f| f.name()).join(", ")))
}

/// A failure to report as `error: …` with exit code 2.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

/// Builds the grounding engine for the CLI, reporting the choice under `--verbose`.
pub fn engine(cli: &Cli) -> Engine {
    let e = Engine::new(cli.device.into(), &WeightsSource::from_env());
    if cli.verbose {
        eprintln!("grounder: {}", e.status);
    }
    e
}

/// Prints a command-line parsing error as one `error:` line (exit 2); help and version print
/// as usual (exit 0). Returns the exit code.
pub fn report_usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.use_stderr() { 2 } else { 0 }
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {first} (see tandem --help)");
            2
        }
    }
}

/// Runs the parsed command; returns the process exit code.
impl Cli {
    /// The viewer (and its bench): the commands that hold folder series under the pixel budget.
    pub fn holds_evictable_series(&self) -> bool {
        matches!(self.command, None | Some(Command::View { .. }) | Some(Command::Bench { what: bench::BenchCommand::View { .. } }))
    }
}

pub fn run(cli: Cli) -> i32 {
    let device: DevicePreference = cli.device.into();
    let result = match &cli.command {
        None => crate::viewer::run_with(crate::viewer::Launch::Demo, None, device).map_err(CliError::from),
        Some(Command::View { annotations, pacs: Some(url), patient, cache, .. }) => {
            view_pacs(url, patient.as_deref().unwrap_or_default(), cache.as_deref(), annotations.clone(), device)
        }
        Some(Command::View { paths, annotations, .. }) => view(paths, annotations.clone(), device),
        Some(Command::Info { file, json }) => info_cmd(file, *json),
        Some(Command::Ground { what }) => ground::run(&cli, what),
        Some(Command::Eval { what: EvalCommand::Ood(args) }) => ood::run(&cli, args),
        Some(Command::Eval { what: EvalCommand::Compare(args) }) => compare::run(args),
        Some(Command::Eval { what }) => ground::eval(&cli, what),
        Some(Command::Train(args)) => ground::train(&cli, args),
        Some(Command::Synth(args)) => ground::synth(args),
        Some(Command::Bench { what }) => bench::run(&cli, what),
        Some(Command::Annotations { what }) => annotations::run(what),
        #[cfg(feature = "pacs")]
        Some(Command::Pacs { what }) => pacs::run(what),
        Some(Command::Track(args)) => track::run(&cli, args),
        Some(Command::Batch(args)) => batch::run(&cli, args),
        Some(Command::Snapshot(args)) => snapshot::run(args),
    };
    match result {
        Ok(()) => 0,
        Err(CliError(msg)) => {
            let line = msg.replace('\n', " ");
            eprintln!("error: {line}");
            2
        }
    }
}

fn view(paths: &[PathBuf], annotations: Option<PathBuf>, device: DevicePreference) -> Result<(), CliError> {
    let launch = match paths {
        [] => crate::viewer::Launch::Demo,
        [folder] => crate::viewer::Launch::Folder(folder.clone()),
        [prior, current] => crate::viewer::Launch::Pair(prior.clone(), current.clone()),
        _ => return Err(CliError("give a prior and a current (files or folders), or one folder".into())),
    };
    crate::viewer::run_with(launch, annotations, device).map_err(CliError::from)
}

/// `tandem view --pacs URL --patient ID`: the pair is fetched into the cache, then opened as
/// local folders.
fn view_pacs(
    url: &str,
    patient: &str,
    cache: Option<&std::path::Path>,
    annotations: Option<PathBuf>,
    device: DevicePreference,
) -> Result<(), CliError> {
    #[cfg(feature = "pacs")]
    {
        let (prior, current) = pacs::open_pair(url, patient, cache)?;
        crate::viewer::run_with_pacs(crate::viewer::Launch::Pair(prior, current), annotations, device, Some(url.to_string()))
            .map_err(CliError::from)
    }
    #[cfg(not(feature = "pacs"))]
    {
        let _ = (url, patient, cache, annotations, device);
        Err(CliError("this build has no PACS support (built without the cargo feature `pacs`)".into()))
    }
}

fn info_cmd(file: &std::path::Path, json: bool) -> Result<(), CliError> {
    let i = info::info(file).map_err(|e| CliError(format!("{e} ({})", file.display())))?;
    if json {
        println!("{}", serde_json::to_string(&i)?);
    } else {
        println!("{}", info::human(&i));
    }
    Ok(())
}
