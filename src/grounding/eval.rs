//! Evaluation on MedSG-Bench task files: dispatch by task, predict, score with plain box IoU
//! (missing = 0) and tabulate n, mean IoU, Acc@0.3/0.5/0.7 and time per item.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::grounding::geometry::BBox;
use crate::grounding::medsg::{self, MedsgItem};
use crate::grounding::task::Task;
use crate::grounding::{Engine, LocateHint, Method};
use crate::study::gray::GrayImage;

/// Per-task accumulated scores.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TaskScore {
    pub n: usize,
    pub iou_sum: f64,
    pub hits_03: usize,
    pub hits_05: usize,
    pub hits_07: usize,
    pub millis: f64,
}

impl TaskScore {
    fn add(&mut self, iou: f32, millis: f64) {
        self.n += 1;
        self.iou_sum += iou as f64;
        self.hits_03 += (iou >= 0.3) as usize;
        self.hits_05 += (iou >= 0.5) as usize;
        self.hits_07 += (iou >= 0.7) as usize;
        self.millis += millis;
    }

    pub fn mean_iou(&self) -> f64 {
        self.iou_sum / self.n.max(1) as f64
    }

    pub fn acc(&self, hits: usize) -> f64 {
        100.0 * hits as f64 / self.n.max(1) as f64
    }
}

/// The outcome of evaluating one task file.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EvalReport {
    pub per_task: BTreeMap<String, TaskScore>,
    pub predictions: BTreeMap<String, [f32; 4]>,
    pub skipped_referring: usize,
    pub failed: Vec<String>,
}

/// Predicts one item's box; `Err` says why it could not (counted as a miss).
pub fn predict(engine: &Engine, item: &MedsgItem, root: &Path, method: Method) -> Result<BBox, String> {
    let task = Task::from_medsg_name(&item.task).ok_or_else(|| format!("unknown task {:?}", item.task))?;
    if item.images.len() < 2 {
        return Err("fewer than two images".into());
    }
    let mut images = Vec::with_capacity(item.images.len());
    let mut red_box = None;
    for (k, path) in item.images.iter().enumerate() {
        let img = medsg::read_image(&root.join(path)).map_err(|e| e.to_string())?;
        if k == 0 {
            red_box = img.red_box;
        }
        images.push(img.image);
    }
    let reference = medsg::question_box(&item.question).or(red_box);
    answer(engine, task, &images, reference, method).map(|a| a.bbox)
}

/// One task's answer: the box, its score, and what produced it (the network, "baseline",
/// "registration").
#[derive(Clone, Debug)]
pub struct Answer {
    pub bbox: BBox,
    pub score: f32,
    pub source: String,
}

/// How a cross-modal pair is searched: registered first when `register`, else (and when
/// registration fails) near the reference box, since such pairs show the same anatomy at about
/// the same place.
pub fn crossmodal_hint(reference: BBox, register: bool) -> LocateHint {
    LocateHint {
        expected_centre: Some(reference.centre()),
        sigma_px: 12.0 + 0.375 * reference.width().max(reference.height()),
        register_first: register,
        ..Default::default()
    }
}

/// The answer for one task on decoded images; `reference` is the box marked on the first
/// image, where the task has one.
pub fn answer(engine: &Engine, task: Task, images: &[GrayImage], reference: Option<BBox>, method: Method) -> Result<Answer, String> {
    let found = |p: Option<crate::grounding::Proposal>, why: &str| {
        p.map(|p| Answer { bbox: p.target_box, score: p.score, source: p.source }).ok_or_else(|| why.to_string())
    };
    let need_reference = || reference.ok_or_else(|| "no reference box in the question or image".to_string());
    match task {
        Task::RegisteredDiff | Task::NonRegisteredDiff => {
            found(engine.diff(&images[0], &images[1], method).proposals.into_iter().next(), "no change found")
        }
        Task::Crossmodal => {
            // Cross-modal pairs show the same anatomy at about the same place: registered when
            // possible, else searched near the reference box.
            let r = need_reference()?;
            found(engine.locate(&images[0], r, &images[1], &crossmodal_hint(r, true), method), "not found")
        }
        Task::MultiView => {
            // Each view of an item is an image of its own, windowed on its own: nothing says the
            // two share an intensity scale (the viewer's hint assumes one only where the headers
            // name one volume), so each is normalized by its own range.
            let r = need_reference()?;
            let hint = LocateHint { orthogonal_to: Some(r), ..Default::default() };
            found(engine.locate(&images[0], r, &images[1], &hint, method), "not found")
        }
        Task::ObjectTracking => found(engine.track(images, need_reference()?, method), "lost track"),
        Task::Patch => {
            let (source, patch) = (&images[0], &images[1]);
            let (w, h) = (patch.width as f32, patch.height as f32);
            if method == Method::Baseline || !engine.has_model() {
                let whole = BBox::new(0.0, 0.0, w, h);
                return found(
                    engine.locate(patch, whole, source, &LocateHint { same_scale: true, ..Default::default() }, Method::Baseline),
                    "not found",
                );
            }
            // The model matches the patch's inner half, whose context is still patch content;
            // the answer is the whole patch around it, then refined pixel by pixel.
            let inner = BBox::from_centre(w / 2.0, h / 2.0, w / 2.0, h / 2.0);
            let hint = LocateHint { known_size: Some((w, h)), same_scale: true, refine: true, ..Default::default() };
            found(engine.locate(patch, inner, source, &hint, method), "not found")
        }
        Task::Concept => {
            let (object, scene) = (&images[0], &images[1]);
            let content = BBox::of_mask(object, 0.02).ok_or("the concept image is empty")?;
            found(engine.locate(object, content, scene, &LocateHint::default(), method), "not found")
        }
        Task::Referring => Err("referring expressions are not answered".into()),
    }
}

/// Evaluates every item; `progress(done, total)` after each.
pub fn evaluate(engine: &Engine, items: &[MedsgItem], root: &Path, method: Method, progress: &dyn Fn(usize, usize)) -> EvalReport {
    let mut report = EvalReport::default();
    for (k, item) in items.iter().enumerate() {
        progress(k, items.len());
        let Some(task) = Task::from_medsg_name(&item.task) else {
            report.failed.push(format!("{}: unknown task {:?}", item.id, item.task));
            continue;
        };
        if task == Task::Referring {
            report.skipped_referring += 1;
            continue;
        }
        let start = Instant::now();
        let predicted = predict(engine, item, root, method);
        let millis = start.elapsed().as_secs_f64() * 1e3;
        let iou = match (&predicted, item.answer_box()) {
            (Ok(p), Some(truth)) => p.iou(&truth),
            _ => 0.0,
        };
        match predicted {
            Ok(p) => {
                report.predictions.insert(item.id.clone(), p.to_array());
            }
            Err(e) => report.failed.push(format!("{}: {e}", item.id)),
        }
        if item.answer_box().is_some() {
            report.per_task.entry(task.medsg_name().to_string()).or_default().add(iou, millis);
        }
    }
    progress(items.len(), items.len());
    report
}

/// The null answer for consistency tasks: the reference box itself, unmoved. It says how much
/// of a task a position prior alone would solve.
pub fn reference_as_answer(items: &[MedsgItem]) -> EvalReport {
    let mut report = EvalReport::default();
    for item in items {
        let (Some(task), Some(truth), Some(reference)) =
            (Task::from_medsg_name(&item.task), item.answer_box(), medsg::question_box(&item.question))
        else {
            continue;
        };
        if matches!(task, Task::MultiView | Task::ObjectTracking | Task::Crossmodal) {
            report.per_task.entry(task.medsg_name().to_string()).or_default().add(reference.iou(&truth), 0.0);
        }
    }
    report
}

/// The per-task table as Markdown.
pub fn table(report: &EvalReport, method: &str) -> String {
    let mut s =
        String::from("| task | method | n | mean IoU | Acc@0.3 | Acc@0.5 | Acc@0.7 | ms/item |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    let order = Task::ALL;
    for task in order {
        if let Some(t) = report.per_task.get(task.medsg_name()) {
            s.push_str(&format!(
                "| {} {} | {method} | {} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                task.code(),
                task.medsg_name(),
                t.n,
                t.mean_iou(),
                t.acc(t.hits_03),
                t.acc(t.hits_05),
                t.acc(t.hits_07),
                t.millis / t.n.max(1) as f64
            ));
        }
    }
    s
}
