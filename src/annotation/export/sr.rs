//! DICOM Comprehensive SR, TID 1500 Measurement Report: one TID 1410 planar ROI measurement
//! group per finding and image, each a closed 5-point POLYLINE SCOORD on the referenced SOP
//! instance (and frame), with one tracking UID per finding across prior and current. A
//! measurement finding's group holds its own outline (a 2-point POLYLINE for a ruler, an ELLIPSE,
//! a rectangle's POLYLINE) and its values as NUM items with UCUM units (TID 1419 style).

use dicom_core::header::Header;
use dicom_core::value::{C, DataSetSequence};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::mem::InMemElement;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use crate::annotation::document::{Document, ImageRef};
use crate::annotation::export::{ExportError, ExportFormat, exported};
use crate::annotation::measurement::{Measured, Shape};

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, value),
        DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        DataElement::new(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn item(relationship: &str, value_type: &str, concept: (&str, &str, &str), mut rest: Vec<InMemElement>) -> InMemDicomObject {
    let mut elems = vec![
        DataElement::new(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        DataElement::new(tags::VALUE_TYPE, VR::CS, value_type),
        seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code(concept.0, concept.1, concept.2)]),
    ];
    elems.append(&mut rest);
    InMemDicomObject::from_element_iter(elems)
}

fn text(relationship: &str, concept: (&str, &str, &str), value: &str) -> InMemDicomObject {
    item(relationship, "TEXT", concept, vec![DataElement::new(tags::TEXT_VALUE, VR::UT, value)])
}

/// A tracked finding's sizes on one box (TID 1419 ROI measurements): long axis, short axis and
/// area, when measured in mm (a size in pixels has no UCUM unit a PACS would read).
fn track_measurements(f: &crate::annotation::Finding, image: &str, frame: u32) -> Vec<InMemDicomObject> {
    let Some(track) = f.track.as_ref().filter(|t| t.units == "mm") else { return Vec::new() };
    let Some(m) = track.measurements.iter().find(|m| m.image == image && m.frame == frame) else { return Vec::new() };
    vec![
        num(("103339001", "SCT", "Long Axis"), m.long_axis, ("mm", "UCUM", "mm")),
        num(("103340004", "SCT", "Short Axis"), m.short_axis, ("mm", "UCUM", "mm")),
        num(("42798000", "SCT", "Area"), m.area, ("mm2", "UCUM", "mm2")),
    ]
}

/// The image whose study and patient the report joins: "current", else the latest study.
fn report_image(doc: &Document) -> Option<&ImageRef> {
    doc.image("current")
        .or_else(|| doc.images.iter().enumerate().max_by_key(|(k, i)| (i.study_date.clone(), i.study_time.clone(), *k)).map(|(_, i)| i))
}

fn code_item(relationship: &str, concept: (&str, &str, &str), value: (&str, &str, &str)) -> InMemDicomObject {
    item(relationship, "CODE", concept, vec![seq(tags::CONCEPT_CODE_SEQUENCE, vec![code(value.0, value.1, value.2)])])
}

fn container(relationship: &str, concept: (&str, &str, &str), children: Vec<InMemDicomObject>) -> InMemDicomObject {
    item(
        relationship,
        "CONTAINER",
        concept,
        vec![DataElement::new(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"), seq(tags::CONTENT_SEQUENCE, children)],
    )
}

/// A UID derived from `key` (PS3.5 B.2: "2.25." and a 128-bit number): the same key always
/// gives the same UID; a finding id that is a UUID gives exactly that UUID's UID, and one that
/// is a DICOM UID (a finding imported from another viewer's SR, keyed by its tracking UID) is
/// kept as it is, so the finding keeps its tracking UID across systems.
pub fn stable_uid(key: &str) -> String {
    if crate::annotation::document::is_valid_uid(key) {
        return key.to_string();
    }
    if let Ok(u) = uuid::Uuid::parse_str(key) {
        return format!("2.25.{}", u.as_u128());
    }
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&h[..16]);
    format!("2.25.{}", u128::from_be_bytes(first))
}

/// A fresh DICOM UID (UUID-derived, root 2.25).
pub fn new_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// Storage classes whose instances hold one frame: a reference to them must not name a frame
/// (PS3.3 C.17.3.2.1), even when Tandem shows a folder of them as one multi-frame series.
fn is_single_frame_class(uid: &str) -> bool {
    matches!(
        uid,
        "1.2.840.10008.5.1.4.1.1.1" // CR
            | "1.2.840.10008.5.1.4.1.1.1.1" // DX for presentation
            | "1.2.840.10008.5.1.4.1.1.1.1.1" // DX for processing
            | "1.2.840.10008.5.1.4.1.1.1.2" // MG for presentation
            | "1.2.840.10008.5.1.4.1.1.1.2.1" // MG for processing
            | "1.2.840.10008.5.1.4.1.1.1.3" // intra-oral
            | "1.2.840.10008.5.1.4.1.1.1.3.1"
            | "1.2.840.10008.5.1.4.1.1.2" // CT
            | "1.2.840.10008.5.1.4.1.1.4" // MR
            | "1.2.840.10008.5.1.4.1.1.6.1" // US
            | "1.2.840.10008.5.1.4.1.1.7" // secondary capture
            | "1.2.840.10008.5.1.4.1.1.128" // PET
    )
}

/// A box's outline: a closed 5-point POLYLINE.
fn box_outline(b: [f32; 4]) -> (&'static str, Vec<f32>) {
    let [x1, y1, x2, y2] = b;
    ("POLYLINE", vec![x1, y1, x2, y1, x2, y2, x1, y2, x1, y1])
}

/// A measurement's outline: a ruler's two ends, the ellipse inscribed in its box (the ends of the
/// major axis, then of the minor, PS3.3 C.18.6.1.2), or the rectangle's box.
fn measurement_outline(m: &Measured, b: [f32; 4]) -> (&'static str, Vec<f32>) {
    match (m.shape, m.points.as_slice()) {
        (Shape::Line, [a, z]) => ("POLYLINE", vec![a[0], a[1], z[0], z[1]]),
        (Shape::Ellipse, _) => {
            let [x1, y1, x2, y2] = b;
            let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
            let (horizontal, vertical) = ([x1, cy, x2, cy], [cx, y1, cx, y2]);
            let (major, minor) = if x2 - x1 >= y2 - y1 { (horizontal, vertical) } else { (vertical, horizontal) };
            ("ELLIPSE", major.into_iter().chain(minor).collect())
        }
        _ => box_outline(b),
    }
}

/// A Decimal String (at most 16 characters) for `v`: as many of 6 decimals as fit, no trailing zeros.
fn decimal_string(v: f64) -> String {
    for decimals in (0..=6).rev() {
        let mut s = format!("{v:.decimals$}");
        if s.contains('.') {
            s = s.trim_end_matches('0').trim_end_matches('.').to_string();
        }
        if s == "-0" {
            s = "0".into();
        }
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.6e}")
}

/// A NUM content item: `concept` measured as `value` in `unit`.
fn num(concept: (&str, &str, &str), value: f64, unit: (&str, &str, &str)) -> InMemDicomObject {
    item(
        "CONTAINS",
        "NUM",
        concept,
        vec![seq(
            tags::MEASURED_VALUE_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![code(unit.0, unit.1, unit.2)]),
                DataElement::new(tags::NUMERIC_VALUE, VR::DS, decimal_string(value)),
            ])],
        )],
    )
}

/// The concepts of a measurement's values (SNOMED CT, as TID 1419 and DCMR use them).
pub const LENGTH: (&str, &str, &str) = ("410668003", "SCT", "Length");
pub const AREA: (&str, &str, &str) = ("42798000", "SCT", "Area");
pub const MEAN: (&str, &str, &str) = ("373098007", "SCT", "Mean");
pub const STANDARD_DEVIATION: (&str, &str, &str) = ("386136009", "SCT", "Standard Deviation");
pub const MINIMUM: (&str, &str, &str) = ("255605001", "SCT", "Minimum");
pub const MAXIMUM: (&str, &str, &str) = ("56851009", "SCT", "Maximum");

/// UCUM units: millimetres, square millimetres, Hounsfield units, no unit; pixels as UCUM
/// annotations (a count has unit 1).
pub const MM: (&str, &str, &str) = ("mm", "UCUM", "millimeter");
pub const MM2: (&str, &str, &str) = ("mm2", "UCUM", "square millimeter");
pub const PX: (&str, &str, &str) = ("{pixel}", "UCUM", "pixel");
pub const PX2: (&str, &str, &str) = ("{square pixel}", "UCUM", "square pixel");
pub const HU: (&str, &str, &str) = ("[hnsf'U]", "UCUM", "Hounsfield unit");
pub const NO_UNIT: (&str, &str, &str) = ("1", "UCUM", "no units");

/// A measurement's values as NUM items.
fn measurement_values(m: &Measured) -> Vec<InMemDicomObject> {
    let mm = m.unit == "mm";
    let mut out = Vec::new();
    if let Some(l) = m.length {
        out.push(num(LENGTH, l, if mm { MM } else { PX }));
    }
    if let Some(a) = m.area {
        out.push(num(AREA, a, if mm { MM2 } else { PX2 }));
    }
    if let Some(s) = &m.stats {
        let unit = if s.unit.as_deref() == Some("HU") { HU } else { NO_UNIT };
        for (concept, v) in [(MEAN, s.mean), (STANDARD_DEVIATION, s.sd), (MINIMUM, s.min), (MAXIMUM, s.max)] {
            out.push(num(concept, v, unit));
        }
    }
    out
}

/// Image region of one outline: the SCOORD with its IMAGE reference.
fn region(img: &ImageRef, frame: u32, outline: (&str, Vec<f32>)) -> Result<InMemDicomObject, ExportError> {
    let (sop_instance, multi_frame) = img
        .instance_of_frame(frame)
        .ok_or_else(|| ExportError::Sr(format!("image {:?} frame {frame} is not a DICOM instance (no SOP Instance UID)", img.id)))?;
    let sop_class = img.sop_class_uid.as_deref().unwrap_or(uids::SECONDARY_CAPTURE_IMAGE_STORAGE);
    let (graphic_type, points) = outline;
    let mut sop = vec![
        DataElement::new(tags::REFERENCED_SOP_CLASS_UID, VR::UI, sop_class),
        DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop_instance),
    ];
    if multi_frame && !is_single_frame_class(sop_class) {
        // IS holds a signed 32-bit integer; frame numbers start at 1.
        let number = frame
            .checked_add(1)
            .filter(|n| frame < img.frames && i32::try_from(*n).is_ok())
            .ok_or_else(|| ExportError::Sr(format!("frame {frame} of image {:?} cannot be referenced", img.id)))?;
        sop.push(DataElement::new(tags::REFERENCED_FRAME_NUMBER, VR::IS, number.to_string()));
    }
    let image = item(
        "SELECTED FROM",
        "IMAGE",
        ("111030", "DCM", "Image Region"),
        vec![seq(tags::REFERENCED_SOP_SEQUENCE, vec![InMemDicomObject::from_element_iter(sop)])],
    );
    // IMAGE items carry no concept name; rebuild without it.
    let image = InMemDicomObject::from_element_iter(image.into_iter().filter(|e| e.tag() != tags::CONCEPT_NAME_CODE_SEQUENCE));
    Ok(item(
        "CONTAINS",
        "SCOORD",
        ("111030", "DCM", "Image Region"),
        vec![
            DataElement::new(tags::GRAPHIC_TYPE, VR::CS, graphic_type),
            DataElement::new(tags::GRAPHIC_DATA, VR::FL, PrimitiveValue::F32(C::from_vec(points))),
            seq(tags::CONTENT_SEQUENCE, vec![image]),
        ],
    ))
}

/// The SR data set (without file meta) for `doc`; refused when `export::problems` finds
/// something an SR cannot hold (a label beyond LO, a malformed UID, a frame out of range).
pub fn to_sr(doc: &Document) -> Result<InMemDicomObject, ExportError> {
    let found = crate::annotation::export::problems(doc, Some(ExportFormat::Sr));
    if let Some(first) = found.first() {
        return Err(ExportError::Sr(first.clone()));
    }
    let current = report_image(doc).ok_or_else(|| ExportError::Nothing("the document refers to no image".into()))?;
    let mut groups = Vec::new();
    let mut referenced: Vec<&ImageRef> = Vec::new();
    for f in exported(doc) {
        // The same finding keeps its tracking UID in every export, so a PACS links the reports.
        let tracking_uid = stable_uid(&f.id);
        for b in &f.boxes {
            let Some(img) = doc.image(&b.image) else { continue };
            let outline = match &f.measurement {
                Some(m) => measurement_outline(m, b.bbox),
                None => box_outline(b.bbox),
            };
            let roi = region(img, b.frame, outline)?;
            if !referenced.iter().any(|r| r.id == img.id) {
                referenced.push(img);
            }
            // The shortest text that parses back to the same f32: import restores it exactly.
            let score = f.score().map(|s| format!("; score {s}")).unwrap_or_default();
            let source = match &f.source {
                crate::annotation::Source::Model { id, version, .. } => format!("{id} {version}"),
                crate::annotation::Source::Human { user: None } => "human".into(),
                crate::annotation::Source::Human { user: Some(u) } => format!("human {u}"),
            };
            // What the NUM items do not say: the shape, where the spacing came from, the pixel count.
            let measured = f
                .measurement
                .as_ref()
                .map(|m| {
                    let shape = serde_json::to_value(m.shape).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                    let spacing = m.spacing.as_deref().unwrap_or("none");
                    let pixels = m.stats.as_ref().map_or("-".to_string(), |s| s.pixels.to_string());
                    format!("; measured {shape} {spacing} {pixels}")
                })
                .unwrap_or_default();
            // `annotation::import::parse_comment` reads this text back: change both together.
            let mut children = vec![
                text("HAS OBS CONTEXT", ("112039", "DCM", "Tracking Identifier"), &f.label),
                item(
                    "HAS OBS CONTEXT",
                    "UIDREF",
                    ("112040", "DCM", "Tracking Unique Identifier"),
                    vec![DataElement::new(tags::UID, VR::UI, tracking_uid.as_str())],
                ),
                code_item("CONTAINS", ("121071", "DCM", "Finding"), (f.kind.label(), "99TANDEM", &f.label)),
                roi,
            ];
            children.extend(f.measurement.as_ref().map(measurement_values).unwrap_or_default());
            // A tracked finding: its sizes on this timepoint, under the one tracking UID.
            children.extend(track_measurements(f, &b.image, b.frame));
            children.push(text(
                "CONTAINS",
                ("121106", "DCM", "Comment"),
                &format!(
                    "{} on {}: status {}{score}; source {source}{measured}; finding {}",
                    f.kind.label(),
                    b.image,
                    f.status.label(),
                    f.id
                ),
            ));
            groups.push(container("CONTAINS", ("125007", "DCM", "Measurement Group"), children));
        }
    }
    if groups.is_empty() {
        return Err(ExportError::Nothing("no findings to report".into()));
    }
    let report = container(
        "",
        ("126000", "DCM", "Imaging Measurement Report"),
        vec![
            code_item(
                "HAS CONCEPT MOD",
                ("121049", "DCM", "Language of Content Item and Descendants"),
                ("en-US", "RFC5646", "English (United States)"),
            ),
            code_item("HAS OBS CONTEXT", ("121005", "DCM", "Observer Type"), ("121007", "DCM", "Device")),
            item(
                "HAS OBS CONTEXT",
                "UIDREF",
                ("121012", "DCM", "Device Observer UID"),
                vec![DataElement::new(tags::UID, VR::UI, stable_uid("tandem-grounder device"))],
            ),
            text("HAS OBS CONTEXT", ("121013", "DCM", "Device Observer Name"), "Tandem"),
            code_item("HAS CONCEPT MOD", ("121058", "DCM", "Procedure reported"), ("363679005", "SCT", "Imaging")),
            container("CONTAINS", ("126010", "DCM", "Imaging Measurements"), groups),
        ],
    );
    // Local time with its offset: a DICOM time without TimezoneOffsetFromUTC is read as local.
    let now = chrono::Local::now();
    let study_uid = current.study_instance_uid.clone().unwrap_or_else(new_uid);
    let sop_uid = new_uid();
    let mut root: Vec<InMemElement> = vec![
        DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::COMPREHENSIVE_SR_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.as_str()),
        DataElement::new(tags::STUDY_DATE, VR::DA, current.study_date.clone().unwrap_or_default()),
        DataElement::new(tags::CONTENT_DATE, VR::DA, now.format("%Y%m%d").to_string()),
        DataElement::new(tags::CONTENT_TIME, VR::TM, now.format("%H%M%S").to_string()),
        DataElement::new(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, now.format("%z").to_string()),
        // Type 2: present, empty when the images did not say.
        DataElement::new(tags::STUDY_TIME, VR::TM, current.study_time.clone().unwrap_or_default()),
        DataElement::new(tags::ACCESSION_NUMBER, VR::SH, ""),
        DataElement::new(tags::MODALITY, VR::CS, "SR"),
        DataElement::new(tags::MANUFACTURER, VR::LO, "Tandem"),
        DataElement::new(tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
        DataElement::new(tags::PATIENT_NAME, VR::PN, current.patient_name.clone().unwrap_or_default()),
        DataElement::new(tags::PATIENT_ID, VR::LO, current.patient_id.clone().unwrap_or_default()),
        DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, current.patient_birth_date.clone().unwrap_or_default()),
        DataElement::new(tags::PATIENT_SEX, VR::CS, ""),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, study_uid.as_str()),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, new_uid()),
        DataElement::new(tags::STUDY_ID, VR::SH, ""),
        DataElement::new(tags::SERIES_NUMBER, VR::IS, "9901"),
        DataElement::new(tags::INSTANCE_NUMBER, VR::IS, "1"),
        DataElement::new(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        DataElement::new(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        // Type 2 in the SR Document Series and SR Document General modules: no procedure step
        // or procedure code is known to a viewer, so both are empty.
        seq(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, Vec::new()),
        seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new()),
        seq(
            tags::CONTENT_TEMPLATE_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                DataElement::new(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
                DataElement::new(tags::TEMPLATE_IDENTIFIER, VR::CS, "1500"),
            ])],
        ),
    ];
    // Evidence: every referenced instance, grouped by study and series.
    type Series<'a> = (String, Vec<&'a ImageRef>);
    let mut studies: Vec<(String, Vec<Series>)> = Vec::new();
    for img in &referenced {
        let st = img.study_instance_uid.clone().unwrap_or_else(|| study_uid.clone());
        let se = img.series_instance_uid.clone().unwrap_or_default();
        let study = match studies.iter_mut().position(|s| s.0 == st) {
            Some(i) => &mut studies[i],
            None => {
                studies.push((st, Vec::new()));
                studies.last_mut().expect("just pushed")
            }
        };
        match study.1.iter_mut().find(|s| s.0 == se) {
            Some(s) => s.1.push(img),
            None => study.1.push((se, vec![img])),
        }
    }
    let evidence: Vec<InMemDicomObject> = studies
        .into_iter()
        .map(|(st, series)| {
            let series_items = series
                .into_iter()
                .map(|(se, imgs)| {
                    // A folder series is one instance per frame: each is evidence.
                    let sops = imgs
                        .iter()
                        .flat_map(|i| {
                            let instances: Vec<String> = if i.frame_sop_instance_uids.is_empty() {
                                vec![i.sop_instance_uid.clone().unwrap_or_default()]
                            } else {
                                i.frame_sop_instance_uids.clone()
                            };
                            let class = i.sop_class_uid.clone().unwrap_or_else(|| uids::SECONDARY_CAPTURE_IMAGE_STORAGE.into());
                            instances.into_iter().map(move |uid| {
                                InMemDicomObject::from_element_iter([
                                    DataElement::new(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class.as_str()),
                                    DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, uid),
                                ])
                            })
                        })
                        .collect();
                    InMemDicomObject::from_element_iter([
                        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, se),
                        seq(tags::REFERENCED_SOP_SEQUENCE, sops),
                    ])
                })
                .collect();
            InMemDicomObject::from_element_iter([
                DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, st),
                seq(tags::REFERENCED_SERIES_SEQUENCE, series_items),
            ])
        })
        .collect();
    root.push(seq(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, evidence));
    // The report container's own items sit at the root of the data set.
    for e in report.into_iter() {
        if e.tag() != tags::RELATIONSHIP_TYPE {
            root.push(e);
        }
    }
    Ok(InMemDicomObject::from_element_iter(root))
}

/// The SR as a DICOM Part 10 file.
pub fn to_sr_bytes(doc: &Document) -> Result<Vec<u8>, ExportError> {
    let obj = to_sr(doc)?;
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| ExportError::Sr(e.to_string()))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).map_err(|e| ExportError::Sr(e.to_string()))?;
    Ok(bytes)
}

/// Boxes read back from an SR (SOP Instance UID, frame, [x1, y1, x2, y2]): for tests and checks.
pub fn read_boxes(obj: &InMemDicomObject) -> Vec<(String, u32, [f32; 4])> {
    let mut out = Vec::new();
    collect(obj, &mut out);
    out
}

fn collect(obj: &InMemDicomObject, out: &mut Vec<(String, u32, [f32; 4])>) {
    let Some(items) = obj.get(tags::CONTENT_SEQUENCE).and_then(|e| e.items()) else { return };
    for it in items {
        let is_scoord = it.get(tags::VALUE_TYPE).and_then(|e| e.to_str().ok()).is_some_and(|v| v.trim() == "SCOORD");
        if is_scoord && let Some(data) = it.get(tags::GRAPHIC_DATA).and_then(|e| e.to_multi_float32().ok()) {
            let xs: Vec<f32> = data.iter().step_by(2).copied().collect();
            let ys: Vec<f32> = data.iter().skip(1).step_by(2).copied().collect();
            let b = [
                xs.iter().copied().fold(f32::MAX, f32::min),
                ys.iter().copied().fold(f32::MAX, f32::min),
                xs.iter().copied().fold(f32::MIN, f32::max),
                ys.iter().copied().fold(f32::MIN, f32::max),
            ];
            let reference = it
                .get(tags::CONTENT_SEQUENCE)
                .and_then(|e| e.items())
                .and_then(|c| c.first())
                .and_then(|img| img.get(tags::REFERENCED_SOP_SEQUENCE))
                .and_then(|e| e.items())
                .and_then(|s| s.first());
            let uid = reference
                .and_then(|r| r.get(tags::REFERENCED_SOP_INSTANCE_UID))
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                .unwrap_or_default();
            let frame = reference
                .and_then(|r| r.get(tags::REFERENCED_FRAME_NUMBER))
                .and_then(|e| e.to_int::<u32>().ok())
                .map(|f| f.saturating_sub(1))
                .unwrap_or(0);
            out.push((uid, frame, b));
        }
        collect(it, out);
    }
}
