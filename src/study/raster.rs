//! PNG, JPEG and TIFF images (8- and 16-bit, grey or colour) through the `image` crate.

use std::path::Path;
use std::sync::Arc;

use image::DynamicImage;

use crate::study::present::percentile_window;
use crate::study::{Frame, Meta, Samples, StudyError, Window, file_sha256};

/// File extensions read as raster images.
pub const EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "tif", "tiff", "bmp"];

pub fn is_raster(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes a raster image within the memory cap: the decoder checks the declared size before
/// it allocates (a 100-byte PNG may claim 65535 × 65535 pixels).
pub fn open_image(path: &Path) -> Result<DynamicImage, StudyError> {
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| StudyError::Io(e.to_string()))?
        .with_guessed_format()
        .map_err(|e| StudyError::Io(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(0xFFFF);
    limits.max_image_height = Some(0xFFFF);
    limits.max_alloc = Some(crate::study::guard::max_image_bytes());
    reader.limits(limits);
    reader.decode().map_err(|e| StudyError::Image(e.to_string()))
}

/// Reads a raster image as one frame. Colour images whose channels are equal become grey.
pub fn load(path: &Path) -> Result<Frame, StudyError> {
    let img = open_image(path)?;
    // A JPEG file's pixels are lossy, as a DICOM file with Lossy Image Compression "01" is.
    let jpeg = image::ImageReader::open(path).ok().and_then(|r| r.with_guessed_format().ok()).and_then(|r| r.format())
        == Some(image::ImageFormat::Jpeg);
    let meta =
        Meta { path: path.to_path_buf(), sha256: file_sha256(path), lossy_compression: jpeg.then(|| "01".to_string()), ..Meta::default() };
    Ok(frame_from_image(img, Arc::new(meta)))
}

pub fn frame_from_image(img: DynamicImage, meta: Arc<Meta>) -> Frame {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let is_grey = !img.color().has_color() || {
        let rgb = img.to_rgb8();
        rgb.pixels().all(|p| p[0] == p[1] && p[1] == p[2])
    };
    let (samples, window) = if is_grey {
        let values: Vec<f32> = match &img {
            DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) | DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_) => {
                img.to_luma16().into_raw().into_iter().map(|v| v as f32).collect()
            }
            DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => img.to_luma32f().into_raw(),
            _ => img.to_luma8().into_raw().into_iter().map(|v| v as f32).collect(),
        };
        let eight_bit = values.iter().all(|&v| v <= 255.0);
        let window = if eight_bit { Window { center: 127.5, width: 255.0 } } else { percentile_window(&values) };
        (Samples::Gray(values), window)
    } else {
        let rgb = img.to_rgb8().pixels().map(|p| [p[0], p[1], p[2]]).collect();
        (Samples::Rgb(rgb), Window { center: 127.5, width: 255.0 })
    };
    Frame {
        width,
        height,
        pixels: crate::study::Pixels::new(samples),
        default_window: window,
        voi_lut: None,
        invert: false,
        meta,
        frame_index: 0,
        slice_position: None,
        image_position: None,
    }
}
