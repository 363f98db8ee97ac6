//! The embedded demo pair: a real chest radiograph (RG1, downsampled) as prior, and the same
//! image with a synthetic change and a small shift as current, clearly labelled as such.

use std::path::PathBuf;
use std::sync::Arc;

use crate::grounding::BBox;
use crate::grounding::rng::Rng;
use crate::grounding::synth::{ChangeKind, apply_change_of};
use crate::study::{GrayImage, Meta, Series, StudyError, raster};

static DEMO_PNG: &[u8] = include_bytes!("../../assets/demo_prior.png");

/// The label shown on both panes.
pub const DEMO_NOTE: &str = "demo: synthetic change";

/// The demo pair and where the synthetic change is (in current pixels).
pub struct DemoPair {
    pub prior: Series,
    pub current: Series,
    pub change: BBox,
}

fn series(image: GrayImage, name: &str, date: &str) -> Series {
    let meta = Meta {
        path: PathBuf::from(name),
        patient_id: Some("DEMO".into()),
        study_date: Some(date.into()),
        modality: Some("CR".into()),
        series_description: Some("Chest PA (RG1, pydicom-data)".into()),
        ..Meta::default()
    };
    let img = image::GrayImage::from_raw(image.width as u32, image.height as u32, image.to_u8(0.0, 1.0)).expect("size matches");
    let mut frame = raster::frame_from_image(image::DynamicImage::ImageLuma8(img), Arc::new(meta.clone()));
    frame.default_window = crate::study::Window { center: 127.5, width: 255.0 };
    Series { id: name.into(), frames: vec![frame], meta: Arc::new(meta), source: PathBuf::from(name) }
}

/// Builds the pair (deterministic: the same change every time).
pub fn demo_pair() -> Result<DemoPair, StudyError> {
    let img = image::load_from_memory(DEMO_PNG).map_err(|e| StudyError::Image(e.to_string()))?.to_luma8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let prior = GrayImage { width: w, height: h, data: img.into_raw().into_iter().map(|v| v as f32 / 255.0).collect() };
    let mut rng = Rng::new(20240301);
    // A new dense nodule (brighter, as on a radiograph), not at the border.
    let (changed, region) = (0..500)
        .find_map(|_| {
            let (after, region) = apply_change_of(&mut rng, &prior, 60, Some(ChangeKind::Lesion), None)?;
            let b = region.bbox;
            let denser = region
                .mask
                .data
                .iter()
                .zip(after.data.iter().zip(&prior.data))
                .filter(|(m, _)| **m > 0.5)
                .map(|(_, (a, p))| a - p)
                .sum::<f32>()
                > 0.0;
            (denser && b.width() >= 18.0 && b.height() >= 18.0 && b.width() <= 70.0).then_some((after, region))
        })
        .ok_or_else(|| StudyError::Image("could not place the demo change".into()))?;
    // The follow-up is positioned a little differently.
    let (dx, dy) = (6isize, -4isize);
    let current = changed.crop(dx, dy, w, h, 0.0);
    let change = region.bbox.translate(-(dx as f32), -(dy as f32));
    Ok(DemoPair { prior: series(prior, "demo-prior.png", "20240301"), current: series(current, "demo-current.png", "20250301"), change })
}
