//! Test fixtures shared by unit tests: a real image to register, ground and resample.

use crate::study::gray::GrayImage;

/// The demo chest radiograph (RG1, a real CR image, downsampled), as 0..1 values.
pub fn chest() -> GrayImage {
    let img = image::open(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo_prior.png")).expect("assets/demo_prior.png").to_luma8();
    GrayImage {
        width: img.width() as usize,
        height: img.height() as usize,
        data: img.into_raw().into_iter().map(|v| v as f32 / 255.0).collect(),
    }
}

#[path = "gpu_child_check.rs"]
mod gpu_child_check;
pub use gpu_child_check::{GPU_CHECKS_PASSED, gpu_check_in_child};
