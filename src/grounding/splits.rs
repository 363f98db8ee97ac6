//! Which real images each split synthesizes from: training images, held-out images of the
//! training sources (validation), and a whole source never trained on.

use std::path::Path;

use crate::grounding::sources::{self, Sources};
use crate::grounding::synth::{Rendering, SourcePool, Synth};
use crate::grounding::train::{self, TRAIN_FILES, VALIDATION_FILES};

/// Source folders of the training-images folder that are never trained on: the held-out
/// source split is made from them alone (Siemens EPI and diffusion brain MR mosaics, a
/// subject, scanner and contrast no training image shares).
pub const HELD_OUT_SOURCES: [&str; 1] = ["heudiconv"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Training frames of the DICOM test files and every training-images source but the held-out ones.
    Train,
    /// The DICOM test files held out for validation.
    Validation,
    /// Only the held-out sources of the training-images folder.
    HeldOutSource,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::HeldOutSource => "heldout_source",
        }
    }
}

/// The images of `split`: DICOM test files from `dicom_dir`, training images from
/// `images_dir` (`None`: not used). A named folder that holds nothing readable is an error.
pub fn read(split: Split, dicom_dir: &Path, images_dir: Option<&Path>) -> anyhow::Result<Sources> {
    let from_dicom = |files: &[(&str, &[usize])]| -> anyhow::Result<SourcePool> {
        let pool = train::load_pool(dicom_dir, files);
        if pool.is_empty() && dicom_dir.is_dir() {
            anyhow::bail!("none of the {} DICOM images were readable in {}", split.name(), dicom_dir.display());
        }
        Ok(pool)
    };
    let folder = |exclude: &[&str], only: Option<&str>| -> anyhow::Result<Sources> {
        let Some(dir) = images_dir else { return Ok(Sources::default()) };
        let dir = only.map_or_else(|| dir.to_path_buf(), |o| dir.join(o));
        let found = sources::read_folder(&dir, exclude)?;
        if let Some((path, why)) = found.skipped.first() {
            anyhow::bail!("cannot read training image {}: {why}", path.display());
        }
        if found.pool.is_empty() {
            anyhow::bail!("no readable images in {}", dir.display());
        }
        Ok(found)
    };
    Ok(match split {
        Split::Train => {
            let mut s = folder(&HELD_OUT_SOURCES, None)?;
            let dicom = from_dicom(&TRAIN_FILES)?;
            for (name, img) in dicom.names.into_iter().zip(dicom.images) {
                s.pool.push(name, img);
            }
            s
        }
        Split::Validation => Sources { pool: from_dicom(&VALIDATION_FILES)?, ..Default::default() },
        Split::HeldOutSource => {
            let mut all = Sources::default();
            for source in HELD_OUT_SOURCES {
                let s = folder(&[], Some(source))?;
                all.pool.images.extend(s.pool.images);
                all.pool.names.extend(s.pool.names);
                all.volumes.extend(s.volumes);
            }
            all
        }
    })
}

/// A generator of `size`² items from `sources`, rendered by `rendering`.
pub fn synth(sources: &Sources, size: usize, rendering: Rendering) -> Synth {
    let mut s = Synth::new(sources.pool.clone(), size);
    s.volumes = sources.volumes.clone();
    s.rendering = rendering;
    s
}
