//! `tandem track`: a box followed through the frames of a series or through timepoints, with its size in each and the change from baseline and from nadir.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use crate::annotation::document::{Measurement, Track};
use crate::annotation::{Document, Finding, FindingKind, ImageBox, ImageRef, Source};
use crate::cli::ground::{parse_box, write_json};
use crate::cli::series::load_series;
use crate::cli::{Cli, CliError, MethodArg};
use crate::fsutil::check_output;
use crate::grounding::track::{self, OnGrid};
use crate::grounding::{BBox, Engine, Method};
use crate::study::{Frame, Series};

#[derive(Args, Debug)]
pub struct TrackArgs {
    /// One series (its frames are followed in order), or several images or series, one per
    /// timepoint in the order given (the first is the baseline).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// x1,y1,x2,y2 in the pixels of frame --frame.
    #[arg(long = "box")]
    pub bbox: String,
    /// The frame the box is drawn on (0-based): a frame of the one series, or a timepoint.
    #[arg(long, default_value_t = 0)]
    pub frame: usize,
    /// With several multi-slice timepoints: the slice of timepoint --frame the box is on; the
    /// other timepoints are followed on their slice nearest it along the normal.
    #[arg(long, default_value_t = 0)]
    pub slice: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the track as a Tandem annotation document (schema version 2): one image per
    /// input (`t0`, `t1`, …), one finding with a box and a measurement per frame.
    #[arg(long)]
    pub annotations: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "model")]
    pub method: MethodArg,
    /// Replace --json and --annotations when they exist.
    #[arg(long)]
    pub force: bool,
}

/// One frame of the sequence followed: where it comes from.
struct Step<'a> {
    input: usize,
    slice: usize,
    frame: &'a Frame,
}

/// The box and its size in one frame.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Measured {
    pub frame: usize,
    pub input: String,
    pub slice: usize,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// This step's match (1 on the frame the box was drawn on).
    pub score: f64,
    /// The longer and shorter side of the box, in `units`.
    pub long_axis: f64,
    pub short_axis: f64,
    /// The box's area, in `units` squared.
    pub area: f64,
    /// Long axis against the first frame's, in percent.
    pub change_from_baseline_pct: f64,
    /// Long axis against the smallest of the frames before this one (none for the first).
    pub change_from_nadir_pct: Option<f64>,
}

#[derive(Serialize, Debug)]
struct TrackOutput<'a> {
    method: Method,
    model: Option<&'a str>,
    device: &'a str,
    /// "mm" when every frame has a pixel spacing, else "px" for all.
    units: &'static str,
    /// What the axes measure: the lesion's outline diameters (where it stands out from its
    /// surroundings in every frame) or else the tracked boxes' sides.
    axes: &'static str,
    reference_frame: usize,
    frames: &'a [Measured],
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Sizes of the boxes in mm where every frame knows its pixel spacing (else px), and their
/// changes from baseline and from nadir (long axis, as RECIST measures).
pub fn measure(boxes: &[(BBox, f32)], spacing_mm: &[Option<[f64; 2]>]) -> (Vec<(f64, f64, f64, f64)>, &'static str) {
    let mm = spacing_mm.iter().all(Option::is_some);
    let sizes = boxes
        .iter()
        .zip(spacing_mm)
        .map(|((b, score), s)| {
            let (long, short, area) = crate::annotation::track::box_size(b.to_array(), if mm { *s } else { None });
            (long, short, area, *score as f64)
        })
        .collect();
    (sizes, if mm { "mm" } else { "px" })
}

pub fn run(cli: &Cli, args: &TrackArgs) -> Result<(), CliError> {
    let inputs: Vec<&Path> = args.inputs.iter().map(PathBuf::as_path).collect();
    let outputs: Vec<&Path> = args.json.iter().chain(&args.annotations).map(PathBuf::as_path).collect();
    crate::fsutil::check_distinct_outputs(&outputs).map_err(CliError)?;
    for path in &outputs {
        check_output(path, &inputs, args.force).map_err(CliError)?;
    }
    let b = parse_box(&args.bbox)?;
    let series: Vec<Series> = inputs.iter().map(|p| load_series(p)).collect::<Result<_, _>>()?;
    let steps = sequence(&series, args.frame, args.slice)?;
    let r = &steps[args.frame].frame;
    let frame_box = BBox::new(0.0, 0.0, r.width as f32, r.height as f32);
    if b.intersection(&frame_box) < 0.5 * b.area() {
        return Err(CliError(format!("--box lies mostly outside the {}×{} frame", r.width, r.height)));
    }
    // Frames of another size or pixel spacing are followed on the box's frame's grid (as the
    // viewer's Track does), and their boxes mapped back to their own pixels.
    let grids: Vec<OnGrid> = steps.iter().map(|s| track::onto(r, s.frame)).collect();
    let engine = crate::cli::engine(cli);
    let method: Method = args.method.into();
    let (grays, on_reference) = follow(&engine, &steps, &grids, r, args.frame, b, method)?;
    let spacing: Vec<Option<[f64; 2]>> = steps.iter().map(|s| s.frame.meta.pixel_spacing_mm).collect();
    let in_mm = spacing.iter().all(Option::is_some);
    // The lesion's own diameters where it stands out in every frame (on the common grid, whose
    // pixel spacing is the box's frame's), its outline's box in each; else the boxes' sides.
    let outlined = track::outlined(&grays, &on_reference, &grids, if in_mm { r.meta.pixel_spacing_mm } else { None });
    let (boxes, sizes, units, axes) = match outlined {
        Some(o) => (
            o.iter().zip(&on_reference).map(|((bx, _), (_, score))| (*bx, *score)).collect::<Vec<_>>(),
            o.iter().zip(&on_reference).map(|((_, d), (_, score))| (d.long, d.short, d.area, *score as f64)).collect::<Vec<_>>(),
            if in_mm { "mm" } else { "px" },
            crate::annotation::track::OUTLINE_AXES,
        ),
        None => {
            let boxes: Vec<(BBox, f32)> = on_reference.iter().zip(&grids).map(|((bx, score), g)| (g.from_reference(*bx), *score)).collect();
            // In mm each box is measured in its own frame; in px only the common grid compares sizes.
            let (sizes, units) = measure(if in_mm { &boxes } else { &on_reference }, &spacing);
            (boxes, sizes, units, crate::annotation::track::BOX_AXES)
        }
    };
    let longs: Vec<f64> = sizes.iter().map(|s| round(s.0, 2)).collect();
    let changes = crate::annotation::track::changes(&longs);
    let mut measured = Vec::new();
    for (k, ((bx, _), (long, short, area, score))) in boxes.iter().zip(&sizes).enumerate() {
        measured.push(Measured {
            frame: k,
            input: inputs[steps[k].input].display().to_string(),
            slice: steps[k].slice,
            bbox: crate::annotation::document::round_box(*bx).to_array(),
            score: round(*score, 3),
            long_axis: round(*long, 2),
            short_axis: round(*short, 2),
            area: round(*area, 2),
            change_from_baseline_pct: changes[k].0,
            change_from_nadir_pct: changes[k].1,
        });
    }
    println!("{:>5}  {:>28}  {:>10}  {:>10}  {:>12}  {:>9}  {:>9}", "frame", "box", "long", "short", "area", "baseline", "nadir");
    for m in &measured {
        let [x1, y1, x2, y2] = m.bbox;
        let nadir = m.change_from_nadir_pct.map(|v| format!("{v:+.1} %")).unwrap_or_else(|| "-".into());
        println!(
            "{:>5}  {:>28}  {:>7.1} {units}  {:>7.1} {units}  {:>9.1} {units}²  {:>+7.1} %  {nadir:>9}",
            m.frame,
            format!("[{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]"),
            m.long_axis,
            m.short_axis,
            m.area,
            m.change_from_baseline_pct
        );
    }
    if let Some(path) = &args.json {
        let model = if method == Method::Model { engine.model_name() } else { None };
        let out = TrackOutput {
            method: if engine.has_model() { method } else { Method::Baseline },
            model,
            device: &engine.device.label,
            units,
            axes,
            reference_frame: args.frame,
            frames: &measured,
        };
        write_json(path, &out)?;
    }
    if let Some(path) = &args.annotations {
        let doc = track_document(&series, &steps, &measured, units, axes, &engine, method);
        crate::annotation::io::save(&doc, path)?;
        eprintln!("wrote the track to {}", path.display());
    }
    Ok(())
}

/// A document with one image per input and the track as one finding: a box and a measurement
/// on every frame followed, in order.
fn track_document(
    series: &[Series],
    steps: &[Step],
    measured: &[Measured],
    units: &str,
    axes: &str,
    engine: &Engine,
    method: Method,
) -> Document {
    let images = series.iter().enumerate().map(|(k, s)| ImageRef::from_series(&format!("t{k}"), s)).collect();
    let mut doc = Document::new(images);
    let image_of = |k: usize| format!("t{}", steps[k].input);
    let boxes = measured.iter().enumerate().map(|(k, m)| ImageBox::new(&image_of(k), m.slice as u32, BBox::from_array(m.bbox))).collect();
    let score = measured.iter().map(|m| m.score as f32).fold(1.0f32, f32::min);
    let source = match (engine.has_model() && method == Method::Model, engine.model_name()) {
        (true, Some(name)) => {
            let (id, version) = name.rsplit_once(' ').unwrap_or((name, ""));
            Source::Model { id: id.into(), version: version.into(), score }
        }
        _ => Source::Model { id: "baseline".into(), version: String::new(), score },
    };
    let now = crate::annotation::document::now();
    let mut finding = Finding::new(FindingKind::Correspondence, "tracked", boxes, source, &now);
    finding.track = Some(Track {
        units: units.into(),
        measurements: measured
            .iter()
            .enumerate()
            .map(|(k, m)| Measurement {
                image: image_of(k),
                frame: m.slice as u32,
                bbox: m.bbox,
                long_axis: m.long_axis,
                short_axis: m.short_axis,
                area: m.area,
                change_from_baseline_pct: m.change_from_baseline_pct,
                change_from_nadir_pct: m.change_from_nadir_pct,
                extra: Default::default(),
            })
            .collect(),
        extra: [("axes".to_string(), serde_json::Value::String(axes.into()))].into_iter().collect(),
    });
    doc.findings.push(finding);
    doc.schema_version = doc.required_version();
    doc
}

/// The frames to follow: one series' frames, or one frame per timepoint (a multi-slice
/// timepoint by its slice nearest the reference slice).
fn sequence(series: &[Series], frame: usize, slice: usize) -> Result<Vec<Step<'_>>, CliError> {
    if let [one] = series {
        if frame >= one.frames.len() {
            return Err(CliError(format!("--frame {frame} is past the last frame ({} frames)", one.frames.len())));
        }
        return Ok(one.frames.iter().enumerate().map(|(k, f)| Step { input: 0, slice: k, frame: f }).collect());
    }
    if frame >= series.len() {
        return Err(CliError(format!("--frame {frame} is past the last timepoint ({} given)", series.len())));
    }
    if slice >= series[frame].frames.len() {
        return Err(CliError(format!(
            "--slice {slice} is past the last slice of timepoint {frame} ({} slices)",
            series[frame].frames.len()
        )));
    }
    let refs: Vec<&Series> = series.iter().collect();
    let slices = crate::grounding::track::timepoint_slices(&refs, frame, slice).map_err(CliError)?;
    Ok(slices.into_iter().enumerate().map(|(k, s)| Step { input: k, slice: s, frame: &series[k].frames[s] }).collect())
}

/// Follows the box from frame `at` forwards to the last frame and backwards to the first.
/// The box followed through the steps, every frame resampled onto `reference`'s grid as `grids`
/// place them: boxes on that grid.
/// A box in every frame with its step's score.
type BoxPath = Vec<(BBox, f32)>;

/// The frames resampled onto the box's frame's grid, and the box followed through them.
fn follow(
    engine: &Engine,
    steps: &[Step],
    grids: &[OnGrid],
    reference: &Frame,
    at: usize,
    b: BBox,
    method: Method,
) -> Result<(Vec<crate::study::GrayImage>, BoxPath), CliError> {
    let grays: Vec<crate::study::GrayImage> =
        steps.iter().zip(grids).map(|(s, g)| track::resample(&s.frame.to_gray(), g, reference.width, reference.height)).collect();
    let path = track::follow(engine, &grays, at, b, method).map_err(CliError)?;
    Ok((grays, path))
}
