//! The annotation document: the images it refers to, its findings (boxes per image, provenance,
//! review status, edit log) and schema version; unknown fields from newer writers are kept.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::grounding::BBox;

/// The newest schema this build reads and writes. Version 2 added tracks (`Finding::track`),
/// version 3 measurements (`Finding::measurement`, kind `measurement`): new documents start at
/// version 1 and are written at the lowest version that holds them
/// (`Document::required_version`), so that older builds keep opening documents without them.
pub const SCHEMA_VERSION: u32 = 3;

/// The version of documents without version 2's additions.
pub const SCHEMA_V1: u32 = 1;

/// An image a document refers to, with what identifies its pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ImageRef {
    /// Short key used by boxes: "prior", "current", …
    pub id: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_instance_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_class_uid: Option<String>,
    /// One SOP Instance UID per frame, when the frames are separate single-frame instances (a
    /// folder series): `sop_instance_uid` is then the first frame's only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frame_sop_instance_uids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_instance_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_instance_uid: Option<String>,
    /// sha256 of the file (raster images; DICOM is identified by its SOP Instance UID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub width: u32,
    pub height: u32,
    #[serde(default = "one")]
    pub frames: u32,
    /// Patient identifiers as the source carries them (dropped from ML exports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_birth_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_time: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn one() -> u32 {
    1
}

impl ImageRef {
    /// What identifies the first frame of `series`, under the key `id`.
    pub fn from_series(id: &str, series: &crate::study::Series) -> ImageRef {
        let frame = &series.frames[0];
        let m = &frame.meta;
        // A folder of single-frame files: each frame is its own instance, and a box on frame k
        // must name that instance, not the first file's.
        let per_frame: Option<Vec<String>> =
            series.frames.iter().map(|f| f.meta.sop_instance_uid.clone().filter(|_| f.frame_index == 0)).collect();
        let frame_sop_instance_uids = per_frame
            .filter(|uids| series.frames.len() > 1 && uids.iter().any(|u| Some(u) != m.sop_instance_uid.as_ref()))
            .unwrap_or_default();
        let mut extra = Map::new();
        if let Some(modality) = &m.modality {
            extra.insert("modality".into(), Value::String(modality.clone()));
        }
        ImageRef {
            id: id.into(),
            path: m.path.display().to_string(),
            sop_instance_uid: m.sop_instance_uid.clone(),
            sop_class_uid: m.sop_class_uid.clone(),
            frame_sop_instance_uids,
            study_instance_uid: m.study_uid.clone(),
            series_instance_uid: m.series_uid.clone(),
            sha256: m.sha256.clone(),
            width: frame.width as u32,
            height: frame.height as u32,
            frames: series.frames.len() as u32,
            patient_id: m.patient_id.clone(),
            patient_name: m.patient_name.clone(),
            patient_birth_date: m.patient_birth_date.clone(),
            study_date: m.study_date.clone(),
            study_time: m.study_time.clone(),
            extra,
        }
    }
}

impl ImageRef {
    /// The SOP Instance UID that holds `frame`, and whether that instance has several frames
    /// (so that a reference to it must name the frame too).
    pub fn instance_of_frame(&self, frame: u32) -> Option<(&str, bool)> {
        if !self.frame_sop_instance_uids.is_empty() {
            return self.frame_sop_instance_uids.get(frame as usize).map(|u| (u.as_str(), false));
        }
        self.sop_instance_uid.as_deref().map(|u| (u, self.frames > 1))
    }

    /// Whether both refer to the same pixels: the same SOP Instance UID (and frame count, and
    /// per-frame instances where both list them), else the same sha256, else the same path.
    pub fn same_pixels(&self, other: &ImageRef) -> bool {
        if let (Some(a), Some(b)) = (&self.sop_instance_uid, &other.sop_instance_uid) {
            let frames_agree = self.frame_sop_instance_uids.is_empty()
                || other.frame_sop_instance_uids.is_empty()
                || self.frame_sop_instance_uids == other.frame_sop_instance_uids;
            return a == b && self.frames == other.frames && frames_agree;
        }
        if let (Some(a), Some(b)) = (&self.sha256, &other.sha256) {
            return a == b;
        }
        self.path == other.path
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum FindingKind {
    Change,
    Correspondence,
    Manual,
    /// A ruler or ROI (schema version 3): `Finding::measurement` says what it measured.
    Measurement,
}

impl FindingKind {
    pub fn label(self) -> &'static str {
        match self {
            FindingKind::Change => "change",
            FindingKind::Correspondence => "correspondence",
            FindingKind::Manual => "manual",
            FindingKind::Measurement => "measurement",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Proposed,
    Accepted,
    Rejected,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Proposed => "proposed",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
        }
    }
}

/// Who made a finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Source {
    Model {
        id: String,
        version: String,
        /// Calibrated probability that the box is right.
        score: f32,
    },
    Human {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
}

impl Source {
    pub fn score(&self) -> Option<f32> {
        match self {
            Source::Model { score, .. } => Some(*score),
            Source::Human { .. } => None,
        }
    }
}

/// A finding's box on one image (pixel coordinates of that image; `frame` for multi-frame).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageBox {
    pub image: String,
    #[serde(default)]
    pub frame: u32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ImageBox {
    pub fn new(image: &str, frame: u32, b: BBox) -> Self {
        ImageBox { image: image.into(), frame, bbox: round_box(b).to_array(), extra: Map::new() }
    }

    pub fn rect(&self) -> BBox {
        BBox::from_array(self.bbox)
    }
}

/// Boxes are stored to 0.01 px so that saving is stable across load/save.
pub fn round_box(b: BBox) -> BBox {
    let r = |v: f32| (v * 100.0).round() / 100.0;
    BBox::new(r(b.x1), r(b.y1), r(b.x2), r(b.y2))
}

/// One entry of a finding's edit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub at: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub kind: FindingKind,
    pub label: String,
    pub boxes: Vec<ImageBox>,
    pub source: Source,
    pub status: Status,
    pub created: String,
    pub modified: String,
    #[serde(default)]
    pub log: Vec<LogEntry>,
    /// One object followed through images or frames in time order, with its size in each
    /// (schema version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    /// A ruler's or ROI's geometry and values (schema version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<crate::annotation::measurement::Measured>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tracked finding's sizes, in time order (the first is the baseline).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// "mm" (from pixel spacing) or "px".
    pub units: String,
    pub measurements: Vec<Measurement>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The size of a tracked finding's box on one image and frame, as measured when it was tracked
/// (`box` says which box was measured, so that a reader can tell a box edited since).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub image: String,
    #[serde(default)]
    pub frame: u32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The box's longer and shorter side, and its area (units squared).
    pub long_axis: f64,
    pub short_axis: f64,
    pub area: f64,
    /// Long axis against the baseline's, in percent.
    pub change_from_baseline_pct: f64,
    /// Long axis against the smallest before this one (none for the baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_from_nadir_pct: Option<f64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Finding {
    pub fn new(kind: FindingKind, label: &str, boxes: Vec<ImageBox>, source: Source, now: &str) -> Finding {
        let status = match source {
            Source::Model { .. } => Status::Proposed,
            Source::Human { .. } => Status::Accepted,
        };
        Finding {
            id: new_id(),
            kind,
            label: label.into(),
            boxes,
            source,
            status,
            created: now.into(),
            modified: now.into(),
            log: vec![LogEntry { at: now.into(), action: "create".into(), detail: None }],
            track: None,
            measurement: None,
            extra: Map::new(),
        }
    }

    pub fn box_on(&self, image: &str) -> Option<&ImageBox> {
        self.boxes.iter().find(|b| b.image == image)
    }

    pub fn score(&self) -> Option<f32> {
        self.source.score()
    }

    /// Whether a person has had a say in this finding: drawn by one, accepted or rejected, or
    /// edited after it was made (anything in its log beyond `create`).
    pub fn has_human_decision(&self) -> bool {
        matches!(self.source, Source::Human { .. }) || self.status != Status::Proposed || self.log.iter().any(|e| e.action != "create")
    }

    /// Records an edit: updates `modified` and appends to the log.
    pub fn touch(&mut self, now: &str, action: &str, detail: Option<String>) {
        self.modified = now.into();
        self.log.push(LogEntry { at: now.into(), action: action.into(), detail });
    }
}

/// Whether `s` is a well-formed DICOM UID (PS3.5 9.1): at most 64 characters, components of
/// digits separated by single dots, no component with a leading zero.
pub fn is_valid_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.').all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')))
}

/// A new stable finding id.
pub fn new_id() -> String {
    format!("f-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Now, as RFC 3339 UTC with millisecond precision.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What `Document::merge_proposals` did, in findings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Merge {
    /// Reviewed findings kept as they were.
    pub kept: usize,
    /// Untouched proposals of earlier runs, replaced by the new run.
    pub replaced: usize,
    /// New proposals added.
    pub added: usize,
    /// New proposals left out because a reviewed finding covers the same place.
    pub skipped: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub schema_version: u32,
    #[serde(default)]
    pub generator: String,
    pub images: Vec<ImageRef>,
    pub findings: Vec<Finding>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Document {
    fn default() -> Self {
        Document::new(Vec::new())
    }
}

impl Document {
    pub fn new(images: Vec<ImageRef>) -> Document {
        Document {
            schema_version: SCHEMA_V1,
            generator: format!("tandem {}", env!("CARGO_PKG_VERSION")),
            images,
            findings: Vec::new(),
            extra: Map::new(),
        }
    }

    /// The lowest schema version that holds this document: 3 when a finding is a measurement,
    /// 2 when one has a track.
    pub fn required_version(&self) -> u32 {
        let measurement = self.findings.iter().any(|f| f.measurement.is_some() || f.kind == FindingKind::Measurement);
        let track = self.findings.iter().any(|f| f.track.is_some());
        if measurement {
            3
        } else if track {
            2
        } else {
            SCHEMA_V1
        }
    }

    pub fn image(&self, id: &str) -> Option<&ImageRef> {
        self.images.iter().find(|i| i.id == id)
    }

    pub fn finding(&self, id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.id == id)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.findings.iter().position(|f| f.id == id)
    }

    /// Whether every image of `other` is one of this document's images (same id, same pixels),
    /// so that `other`'s boxes mean the same here.
    pub fn covers_images_of(&self, other: &Document) -> bool {
        other.images.iter().all(|o| self.image(&o.id).is_some_and(|i| i.same_pixels(o)))
    }

    /// Merges a new grounding run into a reviewed document: findings a person has had a say in
    /// stay as they are, history included; the previous runs' untouched proposals give way to
    /// `proposals`; and a proposal over a reviewed finding (IoU ≥ 0.5 on the same image and
    /// frame) is left out, since the reviewer has already decided about that place.
    pub fn merge_proposals(&mut self, proposals: Vec<Finding>) -> Merge {
        let before = self.findings.len();
        self.findings.retain(Finding::has_human_decision);
        let mut merge = Merge { kept: self.findings.len(), replaced: before - self.findings.len(), ..Merge::default() };
        for p in proposals {
            let reviewed_there = self.findings.iter().any(|f| {
                p.boxes
                    .iter()
                    .any(|pb| f.boxes.iter().any(|fb| fb.image == pb.image && fb.frame == pb.frame && fb.rect().iou(&pb.rect()) >= 0.5))
            });
            if reviewed_there {
                merge.skipped += 1;
            } else {
                self.findings.push(p);
                merge.added += 1;
            }
        }
        merge
    }

    /// Findings as the grounder proposed them, ready to be added through `History`.
    pub fn proposals_to_findings(
        proposals: &[crate::grounding::Proposal],
        target: (&str, u32),
        reference: (&str, u32),
        now: &str,
    ) -> Vec<Finding> {
        proposals
            .iter()
            .map(|p| {
                let kind = match p.kind {
                    crate::grounding::ProposalKind::Change => FindingKind::Change,
                    crate::grounding::ProposalKind::Correspondence => FindingKind::Correspondence,
                };
                let mut boxes = Vec::new();
                if let Some(r) = p.reference_box {
                    boxes.push(ImageBox::new(reference.0, reference.1, r));
                }
                boxes.push(ImageBox::new(target.0, target.1, p.target_box));
                // "tandem-grounder 0.1.0" → id and version; the baseline has no version.
                let (id, version) = match p.source.rsplit_once(' ') {
                    Some((id, v)) => (id.to_string(), v.to_string()),
                    None => (p.source.clone(), String::new()),
                };
                Finding::new(kind, kind.label(), boxes, Source::Model { id, version, score: (p.score * 1000.0).round() / 1000.0 }, now)
            })
            .collect()
    }
}
