//! `tandem info`: header facts and a digest of the decoded stored pixels of one file.

use std::path::Path;

use serde::Serialize;

use crate::study::dicom::{self, Attrs};
use crate::study::pixels::{self, PixelBuf, PixelDigest, StoredPixels};
use crate::study::{StudyError, raster, volume};

#[derive(Debug, Serialize)]
pub struct Info {
    pub path: String,
    /// "nifti" or "metaimage" for volumes; absent for DICOM and raster images, whose JSON
    /// other tools already parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    pub modality: Option<String>,
    pub transfer_syntax: Option<String>,
    pub rows: usize,
    pub cols: usize,
    pub frames: usize,
    pub samples_per_pixel: usize,
    pub photometric: String,
    pub bits_allocated: usize,
    pub bits_stored: usize,
    pub pixel_representation: u16,
    pub pixels: PixelDigest,
}

/// Reads `path` (DICOM, NIfTI, MetaImage, or a raster image) and describes it.
pub fn info(path: &Path) -> Result<Info, StudyError> {
    if volume::is_volume(path) && !dicom::looks_like_dicom(path) {
        return volume_info(path);
    }
    if raster::is_raster(path) && !dicom::looks_like_dicom(path) {
        return raster_info(path);
    }
    let (obj, header, stored) = pixels::read_file(path)?;
    Ok(Info {
        path: path.display().to_string(),
        format: None,
        modality: obj.str_of(dicom_dictionary_std::tags::MODALITY),
        transfer_syntax: Some(header.transfer_syntax.clone()),
        rows: header.rows,
        cols: header.cols,
        frames: header.frames,
        samples_per_pixel: header.samples_per_pixel,
        photometric: header.photometric.clone(),
        bits_allocated: header.bits_allocated,
        bits_stored: header.bits_stored,
        pixel_representation: header.pixel_representation,
        pixels: stored.digest(),
    })
}

fn raster_info(path: &Path) -> Result<Info, StudyError> {
    let img = raster::open_image(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let colour = img.color().has_color();
    let sixteen = img.color().bits_per_pixel() / img.color().channel_count() as u16 > 8;
    let samples = if colour { 3 } else { 1 };
    let buf = match (colour, sixteen) {
        (false, false) => PixelBuf::U8(img.to_luma8().into_raw()),
        (false, true) => PixelBuf::U16(img.to_luma16().into_raw()),
        (true, false) => PixelBuf::U8(img.to_rgb8().into_raw()),
        (true, true) => PixelBuf::U16(img.to_rgb16().into_raw()),
    };
    let bits = if sixteen { 16 } else { 8 };
    let stored = StoredPixels { frames: 1, rows: h, cols: w, samples, buf };
    Ok(Info {
        path: path.display().to_string(),
        format: None,
        modality: None,
        transfer_syntax: None,
        rows: h,
        cols: w,
        frames: 1,
        samples_per_pixel: samples,
        photometric: if colour { "RGB".into() } else { "MONOCHROME2".into() },
        bits_allocated: bits,
        bits_stored: bits,
        pixel_representation: 0,
        pixels: stored.digest(),
    })
}

/// A NIfTI or MetaImage volume: its first 3D volume, slices as frames, digest over the stored values.
fn volume_info(path: &Path) -> Result<Info, StudyError> {
    let v = volume::read(path)?;
    let [cols, rows, frames] = v.dims;
    let bits = 8 * v.voxels.bytes_per_value();
    Ok(Info {
        path: path.display().to_string(),
        format: Some(v.format.name()),
        modality: v.modality.clone(),
        transfer_syntax: None,
        rows,
        cols,
        frames,
        samples_per_pixel: 1,
        photometric: "MONOCHROME2".into(),
        bits_allocated: bits,
        bits_stored: bits,
        pixel_representation: u16::from(v.voxels.is_signed()),
        pixels: v.digest(),
    })
}

/// The person-readable form of `info`.
pub fn human(i: &Info) -> String {
    let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "—".into());
    let ts_name = i
        .transfer_syntax
        .as_deref()
        .map(|uid| {
            use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
            let name = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(uid).map(|t| t.name().to_string()).unwrap_or_default();
            if name.is_empty() { uid.to_string() } else { format!("{uid} ({name})") }
        })
        .unwrap_or_else(|| "—".into());
    let p = &i.pixels;
    format!(
        "file:            {}\n{}modality:        {}\ntransfer syntax: {}\nsize:            {} × {} px, {} frame(s), {} sample(s)/px\nphotometric:     {}\nbits:            {} allocated, {} stored, {}\npixels:          shape {:?} {}, min {} max {} mean {:.4}\nsha256:          {}",
        i.path,
        i.format.map(|f| format!("format:          {f}\n")).unwrap_or_default(),
        opt(&i.modality),
        ts_name,
        i.cols,
        i.rows,
        i.frames,
        i.samples_per_pixel,
        i.photometric,
        i.bits_allocated,
        i.bits_stored,
        if i.pixel_representation == 1 { "signed" } else { "unsigned" },
        p.shape,
        p.dtype,
        p.min,
        p.max,
        p.mean,
        p.sha256
    )
}
