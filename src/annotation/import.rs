//! Reading a DICOM SR (TID 1500, ours or another viewer's planar ROIs) back into a document.
//!
//! Tandem's own SRs come back exactly: the comment item of each measurement group carries the
//! finding's id, kind, status, source and score, and boxes are the corners of the POLYLINE.
//! Other SRs give one finding per measurement group (grouped across images by tracking UID),
//! each ROI (POLYLINE, MULTIPOINT, ELLIPSE, CIRCLE, POINT) as its bounding box. Our measurement
//! findings come back with their outline and the values of their NUM items.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::annotation::document::{Document, Finding, FindingKind, ImageBox, ImageRef, LogEntry, Source, Status};
use crate::annotation::measurement::{Measured, Shape, Stats};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the SR: {0}")]
    Read(String),
    #[error("not a DICOM structured report: {0}")]
    NotSr(String),
    #[error("malformed SR: {0}")]
    Malformed(String),
    #[error("the SR holds no planar region of interest (SCOORD on an image) to import{0}")]
    NoRegions(String),
}

/// What an import made, beside the document.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub findings: usize,
    pub boxes: usize,
    /// Referenced images found among the local files given.
    pub images_local: usize,
    /// Referenced images known only by their UIDs (no local file given for them).
    pub images_unresolved: usize,
    /// What was left out, one line each (3D coordinates, ROIs that clip to nothing).
    pub skipped: Vec<String>,
}

/// A point ROI becomes a box this many pixels either side of it (a document box has an area).
const POINT_HALF_SIZE_PX: f32 = 2.0;

/// Reads `path` as a DICOM file and imports it (see `import`).
pub fn import_file(path: &Path, local: &[crate::study::Series]) -> Result<(Document, ImportReport), ImportError> {
    let obj = dicom_object::open_file(path).map_err(|e| ImportError::Read(e.to_string()))?;
    let class = obj.meta().media_storage_sop_class_uid().trim_end_matches(['\0', ' ']).to_string();
    if !is_sr_class(&class) {
        return Err(ImportError::NotSr(format!("its SOP class is {class}")));
    }
    import(&obj, local)
}

/// Imports the SR data set `obj`. Referenced instances found in `local` (loaded series) become
/// those images, with their paths and sizes; others are kept by their UIDs alone.
pub fn import(obj: &InMemDicomObject, local: &[crate::study::Series]) -> Result<(Document, ImportReport), ImportError> {
    if let Some(class) = text(obj, tags::SOP_CLASS_UID)
        && !is_sr_class(&class)
    {
        return Err(ImportError::NotSr(format!("its SOP class is {class}")));
    }
    let sr_study = text(obj, tags::STUDY_INSTANCE_UID);
    let sr_uid = text(obj, tags::SOP_INSTANCE_UID).unwrap_or_default();
    let mut groups = Vec::new();
    let mut report = ImportReport::default();
    walk(obj, None, &mut groups, &mut report)?;
    // What was left out says why nothing is there.
    let why = |skipped: &[String]| if skipped.is_empty() { String::new() } else { format!(": left out {}", skipped.join("; ")) };
    if groups.iter().all(|g| g.regions.is_empty()) {
        return Err(ImportError::NoRegions(why(&report.skipped)));
    }
    let evidence = evidence(obj);
    let now = crate::annotation::document::now();

    let mut images: Vec<ImageRef> = Vec::new();
    // Referenced SOP instance → (image id, frame offset within that image).
    let mut placed: Vec<(String, String, u32)> = Vec::new();
    let mut findings: Vec<Finding> = Vec::new();
    for g in groups {
        let ours = g.comment.as_deref().and_then(parse_comment);
        for r in &g.regions {
            let key = (r.sop_instance.clone(), r.frame);
            let (image_id, frame) = match placed.iter().find(|p| p.0 == key.0) {
                Some((_, id, offset)) => (id.clone(), offset.saturating_add(key.1)),
                None => {
                    let wanted_id = ours.as_ref().map(|o| o.image.clone());
                    let (img, offset, is_local) = image_for(&r.sop_instance, &r.sop_class, local, &evidence, obj);
                    // Several instances of a local folder series are one image (its frames).
                    let existing = images.iter().find(|i| is_local && !i.path.is_empty() && i.path == img.path).map(|i| i.id.clone());
                    let id = match existing {
                        Some(id) => id,
                        None => {
                            let id = pick_id(wanted_id, &img, sr_study.as_deref(), &images);
                            if is_local {
                                report.images_local += 1;
                            } else {
                                report.images_unresolved += 1;
                            }
                            images.push(ImageRef { id: id.clone(), ..img });
                            id
                        }
                    };
                    placed.push((r.sop_instance.clone(), id.clone(), offset));
                    (id, offset.saturating_add(key.1))
                }
            };
            let Some(img) = images.iter_mut().find(|i| i.id == image_id) else { continue };
            if img.width == 0 {
                // Known by UID only: the frame count is at least what the SR refers to.
                img.frames = img.frames.max(frame.saturating_add(1));
            } else if frame >= img.frames {
                report.skipped.push(format!(
                    "a {} on frame {} of {}, which has {} frame(s)",
                    r.graphic_type,
                    frame.saturating_add(1),
                    r.sop_instance,
                    img.frames
                ));
                continue;
            }
            // Our measurement: its own outline is its geometry (a ruler's box is about its line).
            let measured = ours.as_ref().and_then(|o| o.measured.as_ref()).map(|m| measurement_of(m, r, &g.nums));
            let bbox = match &measured {
                Some((b, _)) => *b,
                None => r.bbox,
            };
            let Some(bbox) = clip(bbox, img) else {
                report.skipped.push(format!("a {} on {} lies outside the image", r.graphic_type, r.sop_instance));
                continue;
            };
            let b = ImageBox { image: image_id.clone(), frame, bbox, extra: Default::default() };
            // Our groups (one per finding and image) and other viewers' groups of one tracking
            // UID across images are one finding.
            let id = ours.as_ref().map(|o| o.finding.clone()).or_else(|| g.tracking_uid.clone());
            if let Some(f) = id.as_ref().and_then(|id| findings.iter_mut().find(|f| &f.id == id)) {
                f.boxes.push(b);
                report.boxes += 1;
                continue;
            }
            let label = g.tracking_label.clone().or_else(|| g.finding_meaning.clone()).unwrap_or_else(|| "ROI".to_string());
            let (kind, status, source) = match &ours {
                Some(o) => (o.kind, o.status, o.source.clone()),
                None => (FindingKind::Manual, Status::Accepted, Source::Human { user: g.observer.clone() }),
            };
            let mut f = Finding {
                id: id.unwrap_or_else(crate::annotation::document::new_id),
                kind,
                label,
                boxes: vec![b],
                source,
                status,
                created: now.clone(),
                modified: now.clone(),
                log: vec![LogEntry { at: now.clone(), action: "import".into(), detail: Some(format!("DICOM SR {sr_uid}")) }],
                track: None,
                measurement: measured.map(|(_, m)| m),
                extra: Default::default(),
            };
            if findings.iter().any(|x| x.id == f.id) {
                f.id = crate::annotation::document::new_id();
            }
            findings.push(f);
            report.boxes += 1;
        }
    }
    if findings.is_empty() {
        return Err(ImportError::NoRegions(why(&report.skipped)));
    }
    report.findings = findings.len();
    let mut doc = Document::new(images);
    doc.findings = findings;
    let problems = crate::annotation::io::validate(&doc);
    if let Some(first) = problems.first() {
        return Err(ImportError::Malformed(first.clone()));
    }
    Ok((doc, report))
}

fn is_sr_class(uid: &str) -> bool {
    // Basic Text, Enhanced, Comprehensive, Comprehensive 3D, Extensible SR; Key Object Selection.
    uid.starts_with("1.2.840.10008.5.1.4.1.1.88.")
}

/// One measurement group (or a lone SCOORD outside any group).
#[derive(Default)]
struct Group {
    tracking_label: Option<String>,
    tracking_uid: Option<String>,
    finding_meaning: Option<String>,
    comment: Option<String>,
    observer: Option<String>,
    regions: Vec<Region>,
    /// NUM items: concept code, value, unit code.
    nums: Vec<(String, f64, String)>,
}

struct Region {
    graphic_type: String,
    bbox: [f32; 4],
    /// Graphic Data as written.
    points: Vec<f32>,
    sop_instance: String,
    sop_class: Option<String>,
    /// 0-based frame within the referenced instance.
    frame: u32,
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag).and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches(['\0', ' ']).trim_start().to_string()).filter(|s| !s.is_empty())
}

fn concept(item: &InMemDicomObject) -> Option<(String, String)> {
    let c = item.get(tags::CONCEPT_NAME_CODE_SEQUENCE)?.items()?.first()?;
    Some((text(c, tags::CODE_VALUE).unwrap_or_default(), text(c, tags::CODE_MEANING).unwrap_or_default()))
}

/// How deep content items may nest; a deeper tree is not a report but an attack on the stack.
const MAX_DEPTH: usize = 64;

fn walk(obj: &InMemDicomObject, group: Option<&mut Group>, out: &mut Vec<Group>, report: &mut ImportReport) -> Result<(), ImportError> {
    walk_at(obj, group, out, report, 0)
}

fn walk_at(
    obj: &InMemDicomObject,
    mut group: Option<&mut Group>,
    out: &mut Vec<Group>,
    report: &mut ImportReport,
    depth: usize,
) -> Result<(), ImportError> {
    if depth > MAX_DEPTH {
        return Err(ImportError::Malformed(format!("content items nest deeper than {MAX_DEPTH} levels")));
    }
    let Some(items) = obj.get(tags::CONTENT_SEQUENCE).and_then(|e| e.items()) else { return Ok(()) };
    for it in items {
        let value_type = text(it, tags::VALUE_TYPE).unwrap_or_default();
        let (code, _) = concept(it).unwrap_or_default();
        match value_type.as_str() {
            "CONTAINER" if code == "125007" => {
                let mut g = Group::default();
                walk_at(it, Some(&mut g), out, report, depth + 1)?;
                out.push(g);
                continue;
            }
            "SCOORD" => {
                match region(it)? {
                    Ok(region) => match group.as_deref_mut() {
                        Some(g) => g.regions.push(region),
                        None => out.push(Group { regions: vec![region], ..Group::default() }),
                    },
                    // One ROI Tandem cannot place does not cost the others.
                    Err(skip) => report.skipped.push(skip),
                }
                continue;
            }
            "SCOORD3D" => {
                report.skipped.push("a 3D region (SCOORD3D): only planar ROIs are imported".into());
                continue;
            }
            _ => {}
        }
        if let Some(g) = group.as_deref_mut() {
            match (value_type.as_str(), code.as_str()) {
                ("TEXT", "112039") => g.tracking_label = text(it, tags::TEXT_VALUE),
                ("UIDREF", "112040") => g.tracking_uid = text(it, tags::UID),
                ("CODE", "121071") => {
                    g.finding_meaning = it
                        .get(tags::CONCEPT_CODE_SEQUENCE)
                        .and_then(|e| e.items())
                        .and_then(|c| c.first())
                        .and_then(|c| text(c, tags::CODE_MEANING))
                }
                ("TEXT", "121106") => g.comment = text(it, tags::TEXT_VALUE),
                ("NUM", code) => {
                    let value = it.get(tags::MEASURED_VALUE_SEQUENCE).and_then(|e| e.items()).and_then(|v| v.first());
                    let number = value.and_then(|v| v.get(tags::NUMERIC_VALUE)).and_then(|e| e.to_float64().ok());
                    let unit = value
                        .and_then(|v| v.get(tags::MEASUREMENT_UNITS_CODE_SEQUENCE))
                        .and_then(|e| e.items())
                        .and_then(|u| u.first())
                        .and_then(|u| text(u, tags::CODE_VALUE))
                        .unwrap_or_default();
                    if let Some(n) = number.filter(|n| n.is_finite()) {
                        g.nums.push((code.to_string(), n, unit));
                    }
                }
                ("PNAME", "121008") => g.observer = text(it, tags::PERSON_NAME),
                _ => {}
            }
        }
        walk_at(it, group.as_deref_mut(), out, report, depth + 1)?;
    }
    Ok(())
}

/// A SCOORD item: its bounding box and the image (and frame) it is drawn on; `Ok(Err(why))` for
/// a well-formed ROI that names no image directly (by-reference relationships are not followed).
fn region(it: &InMemDicomObject) -> Result<Result<Region, String>, ImportError> {
    let graphic_type = text(it, tags::GRAPHIC_TYPE).ok_or_else(|| ImportError::Malformed("a SCOORD without Graphic Type".into()))?;
    let data = it
        .get(tags::GRAPHIC_DATA)
        .and_then(|e| e.to_multi_float32().ok())
        .ok_or_else(|| ImportError::Malformed(format!("a {graphic_type} SCOORD without Graphic Data")))?;
    if data.iter().any(|v| !v.is_finite()) {
        return Err(ImportError::Malformed(format!("a {graphic_type} SCOORD with a non-finite coordinate")));
    }
    let bbox = bbox_of(&graphic_type, &data)?;
    let reference = it
        .get(tags::CONTENT_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|c| c.iter().find(|i| text(i, tags::VALUE_TYPE).as_deref() == Some("IMAGE")))
        .and_then(|img| img.get(tags::REFERENCED_SOP_SEQUENCE))
        .and_then(|e| e.items())
        .and_then(|s| s.first());
    let Some(reference) = reference else { return Ok(Err(format!("a {graphic_type} SCOORD that refers to no image"))) };
    let sop_instance = text(reference, tags::REFERENCED_SOP_INSTANCE_UID)
        .ok_or_else(|| ImportError::Malformed("an image reference without Referenced SOP Instance UID".into()))?;
    let frame = match reference.get(tags::REFERENCED_FRAME_NUMBER) {
        // Frames count from 1; a region on several frames is placed on the first.
        Some(e) => {
            let n = e.to_multi_int::<i64>().ok().and_then(|v| v.first().copied()).filter(|n| (1..=i64::from(u32::MAX)).contains(n));
            let n = n.ok_or_else(|| ImportError::Malformed(format!("a Referenced Frame Number that is not a frame ({sop_instance})")))?;
            (n - 1) as u32
        }
        None => 0,
    };
    Ok(Ok(Region {
        graphic_type,
        bbox,
        points: data.to_vec(),
        sop_instance,
        sop_class: text(reference, tags::REFERENCED_SOP_CLASS_UID),
        frame,
    }))
}

/// The bounding box of a planar ROI (PS3.3 C.18.6.1.2), in pixel coordinates.
fn bbox_of(graphic_type: &str, d: &[f32]) -> Result<[f32; 4], ImportError> {
    let bad = |want: &str| ImportError::Malformed(format!("a {graphic_type} SCOORD with {} values (wants {want})", d.len()));
    let hull = |pts: &[f32]| {
        let xs = pts.iter().step_by(2);
        let ys = pts.iter().skip(1).step_by(2);
        [
            xs.clone().copied().fold(f32::MAX, f32::min),
            ys.clone().copied().fold(f32::MAX, f32::min),
            xs.copied().fold(f32::MIN, f32::max),
            ys.copied().fold(f32::MIN, f32::max),
        ]
    };
    let b = match graphic_type {
        "POINT" => {
            if d.len() != 2 {
                return Err(bad("2"));
            }
            let h = POINT_HALF_SIZE_PX;
            [d[0] - h, d[1] - h, d[0] + h, d[1] + h]
        }
        "POLYLINE" | "MULTIPOINT" => {
            if d.len() < 2 || !d.len().is_multiple_of(2) {
                return Err(bad("an even number"));
            }
            let b = hull(d);
            if b[2] > b[0] && b[3] > b[1] {
                b
            } else {
                // A line along one axis or a single point: give it the width of a point ROI.
                let h = POINT_HALF_SIZE_PX;
                [
                    b[0] - h * f32::from(b[2] <= b[0]),
                    b[1] - h * f32::from(b[3] <= b[1]),
                    b[2] + h * f32::from(b[2] <= b[0]),
                    b[3] + h * f32::from(b[3] <= b[1]),
                ]
            }
        }
        "CIRCLE" => {
            if d.len() != 4 {
                return Err(bad("4: centre and a point on the circle"));
            }
            let r = (d[2] - d[0]).hypot(d[3] - d[1]);
            [d[0] - r, d[1] - r, d[0] + r, d[1] + r]
        }
        "ELLIPSE" => {
            if d.len() != 8 {
                return Err(bad("8: the ends of the major then the minor axis"));
            }
            // Centre, semi-axes and the major axis's angle; the box of the rotated ellipse.
            let (cx, cy) = ((d[0] + d[2]) / 2.0, (d[1] + d[3]) / 2.0);
            let a = (d[2] - d[0]).hypot(d[3] - d[1]) / 2.0;
            let b = (d[6] - d[4]).hypot(d[7] - d[5]) / 2.0;
            let t = (d[3] - d[1]).atan2(d[2] - d[0]);
            let hx = (a * a * t.cos().powi(2) + b * b * t.sin().powi(2)).sqrt();
            let hy = (a * a * t.sin().powi(2) + b * b * t.cos().powi(2)).sqrt();
            [cx - hx, cy - hy, cx + hx, cy + hy]
        }
        other => return Err(ImportError::Malformed(format!("unknown SCOORD Graphic Type {other:?}"))),
    };
    if b[2] > b[0] && b[3] > b[1] { Ok(b) } else { Err(ImportError::Malformed(format!("a {graphic_type} SCOORD with no extent"))) }
}

/// `b` clipped to the image when its size is known (and to the positive quadrant always);
/// `None` when nothing is left.
fn clip(b: [f32; 4], img: &ImageRef) -> Option<[f32; 4]> {
    let (w, h) = if img.width > 0 && img.height > 0 { (img.width as f32, img.height as f32) } else { (f32::MAX, f32::MAX) };
    let c = [b[0].clamp(0.0, w), b[1].clamp(0.0, h), b[2].clamp(0.0, w), b[3].clamp(0.0, h)];
    (c[2] > c[0] && c[3] > c[1]).then_some(c)
}

/// Study and series of every instance the SR lists as evidence.
fn evidence(obj: &InMemDicomObject) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for tag in [tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, tags::PERTINENT_OTHER_EVIDENCE_SEQUENCE] {
        for study in obj.get(tag).and_then(|e| e.items()).unwrap_or_default() {
            let st = text(study, tags::STUDY_INSTANCE_UID).unwrap_or_default();
            for series in study.get(tags::REFERENCED_SERIES_SEQUENCE).and_then(|e| e.items()).unwrap_or_default() {
                let se = text(series, tags::SERIES_INSTANCE_UID).unwrap_or_default();
                for sop in series.get(tags::REFERENCED_SOP_SEQUENCE).and_then(|e| e.items()).unwrap_or_default() {
                    if let Some(uid) = text(sop, tags::REFERENCED_SOP_INSTANCE_UID) {
                        out.push((uid, st.clone(), se.clone()));
                    }
                }
            }
        }
    }
    out
}

/// The image a referenced instance is (from `local` when there, else from the SR's evidence),
/// the frame offset of that instance within it, and whether it is local.
fn image_for(
    sop: &str,
    class: &Option<String>,
    local: &[crate::study::Series],
    evidence: &[(String, String, String)],
    sr: &InMemDicomObject,
) -> (ImageRef, u32, bool) {
    for s in local {
        if let Some(k) = s.frames.iter().position(|f| f.meta.sop_instance_uid.as_deref() == Some(sop)) {
            // A multi-frame instance's frames share the UID: its first frame is the offset.
            return (ImageRef::from_series("", s), k as u32, true);
        }
    }
    let (study, series) = evidence.iter().find(|e| e.0 == sop).map(|e| (e.1.clone(), e.2.clone())).unwrap_or_default();
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let same_study = !study.is_empty() && text(sr, tags::STUDY_INSTANCE_UID).as_deref() == Some(study.as_str());
    // The SR's patient is the patient of the images it reports on.
    let with_patient = same_study || study.is_empty();
    let patient = |tag| if with_patient { text(sr, tag) } else { None };
    let img = ImageRef {
        id: String::new(),
        path: String::new(),
        sop_instance_uid: Some(sop.to_string()),
        sop_class_uid: class.clone(),
        study_instance_uid: nonempty(study),
        series_instance_uid: nonempty(series),
        width: 0,
        height: 0,
        frames: 1,
        patient_id: patient(tags::PATIENT_ID),
        patient_name: patient(tags::PATIENT_NAME),
        patient_birth_date: patient(tags::PATIENT_BIRTH_DATE),
        ..Default::default()
    };
    (img, 0, false)
}

/// The key of a newly referenced image: the one our SR names; else "current" for the SR's own
/// study and "prior" for another, then `image-N`.
fn pick_id(wanted: Option<String>, img: &ImageRef, sr_study: Option<&str>, taken: &[ImageRef]) -> String {
    let free = |id: &str| !taken.iter().any(|i| i.id == id);
    if let Some(w) = wanted.filter(|w| !w.is_empty() && free(w)) {
        return w;
    }
    // An image of another study is a prior; one of the SR's study (or of no known study), current.
    let preferred = match img.study_instance_uid.as_deref() {
        Some(s) if Some(s) != sr_study => "prior",
        _ => "current",
    };
    if free(preferred) {
        return preferred.into();
    }
    (taken.len() + 1..).map(|n| format!("image-{n}")).find(|id| free(id)).unwrap_or_default()
}

/// What Tandem's exporter writes in each group's comment.
struct Ours {
    kind: FindingKind,
    image: String,
    status: Status,
    source: Source,
    finding: String,
    measured: Option<MeasuredNote>,
}

/// A measurement's shape, spacing source and pixel count, as the comment gives them.
struct MeasuredNote {
    shape: Shape,
    spacing: Option<String>,
    pixels: Option<u64>,
}

/// A measurement's box and values, from its outline and the group's NUM items.
fn measurement_of(note: &MeasuredNote, r: &Region, nums: &[(String, f64, String)]) -> ([f32; 4], Measured) {
    use crate::annotation::export::sr;
    let value = |concept: (&str, &str, &str)| nums.iter().find(|n| n.0 == concept.0).map(|n| (n.1, n.2.as_str()));
    let points: Vec<[f32; 2]> = r.points.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
    let (shape, bbox, points) = match (note.shape, points.as_slice()) {
        (Shape::Line, [a, z]) => (Shape::Line, crate::annotation::measurement::line_box(*a, *z).to_array(), points.clone()),
        // An outline that is not ours for this shape: its bounding box as a rectangle.
        (Shape::Line, _) => (Shape::Rectangle, r.bbox, Vec::new()),
        // Our ellipse is axis-aligned: the ends of its axes span its box exactly.
        (shape, _) => {
            let xs = points.iter().map(|p| p[0]);
            let ys = points.iter().map(|p| p[1]);
            let b = [
                xs.clone().fold(f32::MAX, f32::min),
                ys.clone().fold(f32::MAX, f32::min),
                xs.fold(f32::MIN, f32::max),
                ys.fold(f32::MIN, f32::max),
            ];
            (shape, b, Vec::new())
        }
    };
    let length = value(sr::LENGTH);
    let area = value(sr::AREA);
    let mm = [length, area].iter().flatten().any(|(_, unit)| *unit == sr::MM.0 || *unit == sr::MM2.0);
    let stats = match (value(sr::MEAN), value(sr::STANDARD_DEVIATION), value(sr::MINIMUM), value(sr::MAXIMUM)) {
        (Some((mean, unit)), Some((sd, _)), Some((min, _)), Some((max, _))) => Some(Stats {
            pixels: note.pixels.unwrap_or(0),
            mean,
            sd,
            min,
            max,
            unit: (unit == sr::HU.0).then(|| "HU".to_string()),
            extra: Default::default(),
        }),
        _ => None,
    };
    let m = Measured {
        shape,
        points,
        unit: if mm { "mm" } else { "px" }.into(),
        spacing: if mm { note.spacing.clone() } else { None },
        length: length.map(|l| l.0).filter(|_| shape == Shape::Line),
        area: area.map(|a| a.0),
        stats,
        extra: Default::default(),
    };
    (bbox, m)
}

/// Parses "{kind} on {image}: status {status}[; score {score}]; source {source}[; measured {shape}
/// {spacing} {pixels}]; finding {id}" (see `export::sr::to_sr`); `None` for any other text.
fn parse_comment(c: &str) -> Option<Ours> {
    let (kind, rest) = c.split_once(" on ")?;
    let kind = match kind {
        "change" => FindingKind::Change,
        "correspondence" => FindingKind::Correspondence,
        "manual" => FindingKind::Manual,
        "measurement" => FindingKind::Measurement,
        _ => return None,
    };
    let (image, rest) = rest.split_once(": status ")?;
    let (rest, finding) = rest.rsplit_once("; finding ")?;
    let (rest, measured) = match rest.rsplit_once("; measured ") {
        Some((rest, note)) => {
            let mut words = note.split(' ');
            let shape = match words.next()? {
                "line" => Shape::Line,
                "rectangle" => Shape::Rectangle,
                "ellipse" => Shape::Ellipse,
                _ => return None,
            };
            let spacing = words.next().filter(|s| *s != "none").map(str::to_string);
            let pixels = words.next().and_then(|p| p.parse().ok());
            (rest, Some(MeasuredNote { shape, spacing, pixels }))
        }
        None => (rest, None),
    };
    let (head, source) = rest.split_once("; source ")?;
    let (status, score) = match head.split_once("; score ") {
        Some((s, score)) => (s, Some(score.parse::<f32>().ok()?)),
        None => (head, None),
    };
    let status = match status {
        "proposed" => Status::Proposed,
        "accepted" => Status::Accepted,
        "rejected" => Status::Rejected,
        _ => return None,
    };
    let source = if source == "human" {
        Source::Human { user: None }
    } else if let Some(user) = source.strip_prefix("human ") {
        Source::Human { user: Some(user.to_string()) }
    } else {
        let (id, version) = source.rsplit_once(' ').unwrap_or((source, ""));
        Source::Model { id: id.to_string(), version: version.to_string(), score: score? }
    };
    if finding.is_empty() {
        return None;
    }
    Some(Ours { kind, image: image.to_string(), status, source, finding: finding.to_string(), measured })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotation::export::sr;
    use crate::grounding::BBox;
    use dicom_core::value::{C, DataSetSequence};
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn image(id: &str, sop: &str, frames: u32) -> ImageRef {
        ImageRef {
            id: id.into(),
            path: String::new(),
            sop_instance_uid: Some(sop.into()),
            sop_class_uid: Some(if frames > 1 { "1.2.840.10008.5.1.4.1.1.2.1" } else { "1.2.840.10008.5.1.4.1.1.2" }.into()),
            study_instance_uid: Some(if id == "current" { "1.2.3.4" } else { "1.2.3.5" }.into()),
            series_instance_uid: Some(format!("{sop}.9")),
            width: 0,
            height: 0,
            frames,
            patient_id: None,
            ..Default::default()
        }
    }

    fn document() -> Document {
        let mut doc = Document::new(vec![image("prior", "1.2.3.5.5.1", 1), image("current", "1.2.3.4.5.2", 3)]);
        let t = "2026-01-01T00:00:00.000Z";
        let mut change = Finding::new(
            FindingKind::Change,
            "nodule; on: status x",
            vec![
                ImageBox::new("prior", 0, BBox::new(10.0, 20.0, 40.5, 60.25)),
                ImageBox::new("current", 2, BBox::new(12.0, 18.0, 45.0, 66.0)),
            ],
            Source::Model { id: "tandem grounder".into(), version: "0.1.0".into(), score: 0.912_345_7 },
            t,
        );
        change.status = Status::Accepted;
        let manual = Finding::new(
            FindingKind::Manual,
            "artifact",
            vec![ImageBox::new("current", 0, BBox::new(100.0, 100.0, 130.0, 120.0))],
            Source::Human { user: Some("ann".into()) },
            t,
        );
        let proposed = Finding::new(
            FindingKind::Correspondence,
            "match",
            vec![ImageBox::new("current", 1, BBox::new(1.0, 2.0, 3.0, 4.0))],
            Source::Model { id: "tandem-baseline".into(), version: String::new(), score: 0.25 },
            t,
        );
        doc.findings = vec![change, manual, proposed];
        doc
    }

    /// Export then import gives the same images (by UID), boxes, labels, kinds, status, sources
    /// and scores, finding by finding.
    #[test]
    fn our_sr_round_trips() {
        let doc = document();
        let bytes = sr::to_sr_bytes(&doc).unwrap();
        let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
        let (back, report) = import(&obj, &[]).unwrap();
        assert_eq!(report.findings, 3);
        assert_eq!(report.images_unresolved, 2);
        for f in &doc.findings {
            let g = back.finding(&f.id).unwrap_or_else(|| panic!("finding {} lost", f.id));
            assert_eq!((&g.label, g.kind, g.status, &g.source, &g.boxes), (&f.label, f.kind, f.status, &f.source, &f.boxes));
        }
        for i in &doc.images {
            let j = back.image(&i.id).unwrap();
            assert_eq!(
                (&j.sop_instance_uid, &j.study_instance_uid, &j.series_instance_uid),
                (&i.sop_instance_uid, &i.study_instance_uid, &i.series_instance_uid)
            );
        }
        // And again: the imported document exports the same tracking UIDs.
        let again = sr::to_sr_bytes(&back).unwrap();
        let obj2 = dicom_object::from_reader(&again[128..]).unwrap();
        let (back2, _) = import(&obj2, &[]).unwrap();
        assert_eq!(back2.findings.len(), 3);
    }

    fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::CODE_VALUE, VR::SH, value),
            DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
            DataElement::new(tags::CODE_MEANING, VR::LO, meaning),
        ])
    }

    fn named(value_type: &str, concept: (&str, &str), mut rest: Vec<dicom_object::mem::InMemElement>) -> InMemDicomObject {
        let mut e = vec![
            DataElement::new(tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS"),
            DataElement::new(tags::VALUE_TYPE, VR::CS, value_type),
            DataElement::new(tags::CONCEPT_NAME_CODE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![code(concept.0, "DCM", concept.1)])),
        ];
        e.append(&mut rest);
        InMemDicomObject::from_element_iter(e)
    }

    fn scoord(kind: &str, data: Vec<f32>, sop: &str, frame: Option<&str>) -> InMemDicomObject {
        let mut r = vec![
            DataElement::new(tags::REFERENCED_SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.4"),
            DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop),
        ];
        if let Some(f) = frame {
            r.push(DataElement::new(tags::REFERENCED_FRAME_NUMBER, VR::IS, f));
        }
        let img = InMemDicomObject::from_element_iter([
            DataElement::new(tags::RELATIONSHIP_TYPE, VR::CS, "SELECTED FROM"),
            DataElement::new(tags::VALUE_TYPE, VR::CS, "IMAGE"),
            DataElement::new(tags::REFERENCED_SOP_SEQUENCE, VR::SQ, DataSetSequence::from(vec![InMemDicomObject::from_element_iter(r)])),
        ]);
        named(
            "SCOORD",
            ("111030", "Image Region"),
            vec![
                DataElement::new(tags::GRAPHIC_TYPE, VR::CS, kind),
                DataElement::new(tags::GRAPHIC_DATA, VR::FL, PrimitiveValue::F32(C::from_vec(data))),
                DataElement::new(tags::CONTENT_SEQUENCE, VR::SQ, DataSetSequence::from(vec![img])),
            ],
        )
    }

    fn group(label: &str, uid: &str, roi: InMemDicomObject) -> InMemDicomObject {
        named(
            "CONTAINER",
            ("125007", "Measurement Group"),
            vec![DataElement::new(
                tags::CONTENT_SEQUENCE,
                VR::SQ,
                DataSetSequence::from(vec![
                    named("TEXT", ("112039", "Tracking Identifier"), vec![DataElement::new(tags::TEXT_VALUE, VR::UT, label)]),
                    named("UIDREF", ("112040", "Tracking Unique Identifier"), vec![DataElement::new(tags::UID, VR::UI, uid)]),
                    // A measurement with its region inferred from, as OHIF writes lengths.
                    named(
                        "NUM",
                        ("410668003", "Length"),
                        vec![DataElement::new(tags::CONTENT_SEQUENCE, VR::SQ, DataSetSequence::from(vec![roi]))],
                    ),
                ]),
            )],
        )
    }

    fn third_party(rois: Vec<InMemDicomObject>) -> InMemDicomObject {
        let groups: Vec<InMemDicomObject> =
            rois.into_iter().enumerate().map(|(k, r)| group(&format!("Lesion {k}"), &format!("1.2.826.0.1.{}", k % 3), r)).collect();
        let measurements = named(
            "CONTAINER",
            ("126010", "Imaging Measurements"),
            vec![DataElement::new(tags::CONTENT_SEQUENCE, VR::SQ, DataSetSequence::from(groups))],
        );
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.88.22"),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "1.2.826.0.9"),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.826.0.7"),
            DataElement::new(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
            DataElement::new(tags::CONTENT_SEQUENCE, VR::SQ, DataSetSequence::from(vec![measurements])),
        ])
    }

    #[test]
    fn third_party_rois_become_bounding_boxes() {
        let obj = third_party(vec![
            scoord("ELLIPSE", vec![10.0, 50.0, 50.0, 50.0, 30.0, 40.0, 30.0, 60.0], "1.2.826.0.5", None),
            scoord("POINT", vec![100.0, 100.0], "1.2.826.0.5", None),
            scoord("POLYLINE", vec![5.0, 5.0, 25.0, 9.0, 15.0, 30.0], "1.2.826.0.6", Some("2")),
            // Same tracking UID as the first: the same lesion on another image.
            scoord("CIRCLE", vec![60.0, 60.0, 63.0, 64.0], "1.2.826.0.6", None),
        ]);
        let (doc, report) = import(&obj, &[]).unwrap();
        assert_eq!(report.findings, 3, "{:?}", doc.findings);
        let f0 = doc.finding("1.2.826.0.1.0").unwrap();
        assert_eq!(f0.label, "Lesion 0");
        assert_eq!(f0.boxes.len(), 2);
        assert_eq!(f0.boxes[0].bbox, [10.0, 40.0, 50.0, 60.0]);
        assert_eq!(f0.boxes[1].bbox, [55.0, 55.0, 65.0, 65.0]);
        assert_eq!(f0.status, Status::Accepted);
        assert!(matches!(f0.source, Source::Human { .. }));
        let f1 = doc.finding("1.2.826.0.1.1").unwrap();
        assert_eq!(f1.boxes[0].bbox, [98.0, 98.0, 102.0, 102.0]);
        let f2 = doc.finding("1.2.826.0.1.2").unwrap();
        assert_eq!((f2.boxes[0].frame, f2.boxes[0].bbox), (1, [5.0, 5.0, 25.0, 30.0]));
        assert_eq!(doc.images.len(), 2);
        assert_eq!(doc.images[1].frames, 2);
    }

    #[test]
    fn an_roi_on_no_image_is_left_out_not_fatal() {
        let unplaced = named(
            "SCOORD",
            ("111030", "Image Region"),
            vec![
                DataElement::new(tags::GRAPHIC_TYPE, VR::CS, "CIRCLE"),
                DataElement::new(tags::GRAPHIC_DATA, VR::FL, PrimitiveValue::F32(C::from_vec(vec![5.0, 5.0, 8.0, 9.0]))),
            ],
        );
        let obj = third_party(vec![scoord("POINT", vec![10.0, 10.0], "1.2.826.0.5", None), unplaced.clone()]);
        let (doc, report) = import(&obj, &[]).unwrap();
        assert_eq!((doc.findings.len(), report.skipped.len()), (1, 1), "{:?}", report.skipped);
        let only = third_party(vec![unplaced]);
        let e = import(&only, &[]).unwrap_err();
        assert!(matches!(&e, ImportError::NoRegions(why) if why.contains("refers to no image")), "{e}");
    }

    #[test]
    fn rotated_ellipse_box_holds_the_ellipse() {
        // Major axis along the diagonal, semi-axes 10 and 5.
        let s = 10.0 / 2f32.sqrt();
        let t = 5.0 / 2f32.sqrt();
        let b = bbox_of("ELLIPSE", &[50.0 - s, 50.0 - s, 50.0 + s, 50.0 + s, 50.0 - t, 50.0 + t, 50.0 + t, 50.0 - t]).unwrap();
        let half = ((100.0 + 25.0) / 2.0f32).sqrt();
        for (got, want) in b.iter().zip([50.0 - half, 50.0 - half, 50.0 + half, 50.0 + half]) {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
    }

    #[test]
    fn malformed_srs_are_refused() {
        let odd = third_party(vec![scoord("POLYLINE", vec![1.0, 2.0, 3.0], "1.2.5", None)]);
        assert!(matches!(import(&odd, &[]), Err(ImportError::Malformed(_))));
        let nan = third_party(vec![scoord("POINT", vec![f32::NAN, 2.0], "1.2.5", None)]);
        assert!(matches!(import(&nan, &[]), Err(ImportError::Malformed(_))));
        let frame0 = third_party(vec![scoord("POINT", vec![3.0, 2.0], "1.2.5", Some("0"))]);
        assert!(matches!(import(&frame0, &[]), Err(ImportError::Malformed(_))));
        let empty = third_party(vec![]);
        assert!(matches!(import(&empty, &[]), Err(ImportError::NoRegions(_))));
        let mut image = third_party(vec![]);
        image.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2"));
        assert!(matches!(import(&image, &[]), Err(ImportError::NotSr(_))));
    }

    #[test]
    fn comments_of_other_writers_are_not_ours() {
        assert!(parse_comment("Lesion measured on follow-up").is_none());
        assert!(parse_comment("change on current: status maybe; source human; finding f-1").is_none());
        let o = parse_comment("change on current: status proposed; score 0.5; source tandem-grounder 0.1.0; finding f-1").unwrap();
        assert_eq!(o.source, Source::Model { id: "tandem-grounder".into(), version: "0.1.0".into(), score: 0.5 });
    }
}
