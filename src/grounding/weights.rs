//! Grounder weights and their metadata: the copy embedded in the binary, or a file the user
//! points at; every failure is an error message, never a crash.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

use crate::grounding::model::{GrounderConfig, GrounderNet};

static EMBEDDED_WEIGHTS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/grounder.bpk"));
static EMBEDDED_META: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/grounder.json"));

/// Platt scaling of a head's peak logit into P(box is right, IoU ≥ 0.5).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    pub a: f32,
    pub b: f32,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration { a: 1.0, b: 0.0 }
    }
}

impl Calibration {
    pub fn probability(&self, logit: f32) -> f32 {
        1.0 / (1.0 + (-(self.a * logit + self.b)).exp())
    }
}

/// Everything about a trained model besides its tensors (models/grounder.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelMeta {
    pub model_id: String,
    pub version: String,
    pub c1: usize,
    pub c4: usize,
    pub c8: usize,
    pub head: usize,
    pub change_calibration: Calibration,
    pub match_calibration: Calibration,
    /// Logit level at which a detected change's box is cut (≤ 0: p below 0.5 still counts as
    /// part of a change whose peak passed 0.5); chosen after training on training images.
    #[serde(default)]
    pub change_extent_logit: f32,
    /// Free-form training facts (seed, steps, wall time, machine) for the model card.
    #[serde(default)]
    pub training: serde_json::Value,
}

impl ModelMeta {
    pub fn config(&self) -> GrounderConfig {
        GrounderConfig::new().with_c1(self.c1).with_c4(self.c4).with_c8(self.c8).with_head(self.head)
    }

    pub fn new(model_id: &str, version: &str, cfg: &GrounderConfig) -> Self {
        ModelMeta {
            model_id: model_id.into(),
            version: version.into(),
            c1: cfg.c1,
            c4: cfg.c4,
            c8: cfg.c8,
            head: cfg.head,
            change_calibration: Calibration::default(),
            match_calibration: Calibration::default(),
            change_extent_logit: 0.0,
            training: serde_json::Value::Null,
        }
    }

    /// "tandem-grounder 3"
    pub fn name(&self) -> String {
        format!("{} {}", self.model_id, self.version)
    }
}

/// Where weights come from.
#[derive(Clone, Debug)]
pub enum WeightsSource {
    Embedded,
    /// `<path>.bpk` with its `<path>.json` beside it.
    File(PathBuf),
}

impl WeightsSource {
    /// `TANDEM_WEIGHTS` when set, else the embedded copy.
    pub fn from_env() -> Self {
        match std::env::var_os("TANDEM_WEIGHTS") {
            Some(p) if !p.is_empty() => WeightsSource::File(PathBuf::from(p)),
            _ => WeightsSource::Embedded,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("this build has no embedded grounder weights (train them with `tandem train`)")]
    NotEmbedded,
    #[error("cannot read grounder weights: {0}")]
    Io(String),
    #[error("grounder metadata is not valid: {0}")]
    Meta(String),
    #[error("grounder weights are corrupt or do not fit this model: {0}")]
    Record(String),
}

/// The metadata file that belongs to a weights file (`x.bpk` → `x.json`).
pub fn meta_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Loads the network and its metadata onto `device`.
pub fn load(source: &WeightsSource, device: &Device) -> Result<(GrounderNet, ModelMeta), WeightsError> {
    let (weights, meta) = match source {
        WeightsSource::Embedded => {
            if EMBEDDED_WEIGHTS.is_empty() || EMBEDDED_META.is_empty() {
                return Err(WeightsError::NotEmbedded);
            }
            (EMBEDDED_WEIGHTS.to_vec(), EMBEDDED_META.to_vec())
        }
        WeightsSource::File(path) => {
            let w = std::fs::read(path).map_err(|e| WeightsError::Io(format!("{e}: {}", path.display())))?;
            let m = meta_path(path);
            let j = std::fs::read(&m).map_err(|e| WeightsError::Io(format!("{e}: {}", m.display())))?;
            (w, j)
        }
    };
    from_bytes(weights, &meta, device)
}

/// Only the metadata of a weights file.
pub fn load_meta(source: &WeightsSource) -> Result<ModelMeta, WeightsError> {
    let bytes = match source {
        WeightsSource::Embedded => EMBEDDED_META.to_vec(),
        WeightsSource::File(path) => {
            let m = meta_path(path);
            std::fs::read(&m).map_err(|e| WeightsError::Io(format!("{e}: {}", m.display())))?
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| WeightsError::Meta(e.to_string()))
}

pub fn from_bytes(weights: Vec<u8>, meta: &[u8], device: &Device) -> Result<(GrounderNet, ModelMeta), WeightsError> {
    let meta: ModelMeta = serde_json::from_slice(meta).map_err(|e| WeightsError::Meta(e.to_string()))?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights)).map_err(|e| WeightsError::Record(e.to_string()))?;
    let net = meta.config().init(device).try_load_record(record).map_err(|e| WeightsError::Record(e.to_string()))?;
    Ok((net, meta))
}

/// Writes `net` to `path` (.bpk) and `meta` beside it, each atomically.
pub fn save(net: &GrounderNet, meta: &ModelMeta, path: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let bytes = net.clone().into_record().into_bytes().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::fsutil::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    save_meta(meta, path)
}

/// Rewrites only the metadata beside the weights at `path` (after recalibration: the weights
/// are unchanged, and re-serializing them would only renumber burn's parameter ids).
pub fn save_meta(meta: &ModelMeta, path: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let json = serde_json::to_vec_pretty(meta)?;
    let m = meta_path(path);
    crate::fsutil::write_atomic(&m, &json).with_context(|| format!("writing {}", m.display()))?;
    Ok(())
}
