//! The real images items are synthesized from: 2D views for every task and 3D volumes for
//! the multi-view and slice-tracking tasks, read from a folder of DICOM, NIfTI and MetaImage
//! files (Siemens mosaics split into their slices), each source folder kept or held out whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::grounding::synth::{SourcePool, normalize_for_pool};
use crate::study::gray::GrayImage;

/// A volume with intensities normalized to 0..1 (0.5–99.5 percentiles of the whole volume),
/// and its voxel spacing, so views can be rendered at true aspect.
#[derive(Clone, Debug)]
pub struct VolumeSource {
    pub name: String,
    /// Columns (x), rows (y), slices (z).
    pub dims: [usize; 3],
    /// Spacing of x, y, z in mm.
    pub spacing: [f32; 3],
    /// `[z][y][x]`.
    pub data: Vec<f32>,
}

impl VolumeSource {
    pub fn new(name: String, dims: [usize; 3], spacing: [f32; 3], raw: Vec<f32>) -> Option<Self> {
        if dims.iter().product::<usize>() != raw.len() || dims.contains(&0) {
            return None;
        }
        let mut sorted: Vec<f32> = raw.iter().copied().step_by((raw.len() / 200_000).max(1)).filter(|v| v.is_finite()).collect();
        sorted.sort_by(f32::total_cmp);
        let q = |p: f32| sorted[((sorted.len() - 1) as f32 * p) as usize];
        let (lo, hi) = (q(0.005), q(0.995));
        let span = (hi - lo).max(1e-6);
        let data = raw.iter().map(|v| if v.is_finite() { ((v - lo) / span).clamp(0.0, 1.0) } else { 0.0 }).collect();
        let spacing = spacing.map(|s| if s.is_finite() && s > 0.0 { s } else { 1.0 });
        Some(VolumeSource { name, dims, spacing, data })
    }

    pub fn at(&self, x: usize, y: usize, z: usize) -> f32 {
        let [nx, ny, _] = self.dims;
        self.data[(z * ny + y) * nx + x]
    }

    /// Trilinear sample at voxel coordinates (centres at integers), 0 outside.
    pub fn sample(&self, x: f32, y: f32, z: f32) -> f32 {
        let [nx, ny, nz] = self.dims;
        if !(x > -1.0 && y > -1.0 && z > -1.0 && x < nx as f32 && y < ny as f32 && z < nz as f32) {
            return 0.0;
        }
        let (x0, y0, z0) = (x.floor(), y.floor(), z.floor());
        let (fx, fy, fz) = (x - x0, y - y0, z - z0);
        let get = |dx: i32, dy: i32, dz: i32| {
            let (xi, yi, zi) = (x0 as i32 + dx, y0 as i32 + dy, z0 as i32 + dz);
            if xi < 0 || yi < 0 || zi < 0 || xi >= nx as i32 || yi >= ny as i32 || zi >= nz as i32 {
                0.0
            } else {
                self.at(xi as usize, yi as usize, zi as usize)
            }
        };
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = lerp(get(0, 0, 0), get(1, 0, 0), fx);
        let c10 = lerp(get(0, 1, 0), get(1, 1, 0), fx);
        let c01 = lerp(get(0, 0, 1), get(1, 0, 1), fx);
        let c11 = lerp(get(0, 1, 1), get(1, 1, 1), fx);
        lerp(lerp(c00, c10, fy), lerp(c01, c11, fy), fz)
    }

    /// Slice `z` as a 2D image.
    pub fn slice_z(&self, z: usize) -> GrayImage {
        let [nx, ny, _] = self.dims;
        GrayImage::from_fn(nx, ny, |x, y| self.at(x, y, z))
    }
}

/// Everything read from one data folder.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub pool: SourcePool,
    pub volumes: Vec<Arc<VolumeSource>>,
    /// Files that could not be read, with the reason (reported, not fatal).
    pub skipped: Vec<(PathBuf, String)>,
}

/// At most this many slices of one file go into the 2D pool (evenly spread), so one long
/// series does not outweigh every other source.
const MAX_SLICES_PER_FILE: usize = 24;
/// Volumes with fewer slices than this give 2D views only.
const MIN_VOLUME_SLICES: usize = 16;

/// Reads every image file under `dir` (recursively, sorted), skipping top-level folders
/// named in `exclude`. 2D frames go to the pool, volumes also to `volumes`.
pub fn read_folder(dir: &Path, exclude: &[&str]) -> anyhow::Result<Sources> {
    if !dir.is_dir() {
        anyhow::bail!("training images folder {} does not exist", dir.display());
    }
    let mut files = Vec::new();
    collect(dir, dir, exclude, &mut files)?;
    files.sort();
    let mut out = Sources::default();
    for path in files {
        let name = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
        if let Err(e) = read_one(&path, &name, &mut out) {
            out.skipped.push((path, e.to_string()));
        }
    }
    Ok(out)
}

fn collect(root: &Path, dir: &Path, exclude: &[&str], files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            let top = path.strip_prefix(root).ok().and_then(|p| p.components().next()).map(|c| c.as_os_str().to_string_lossy().to_string());
            if dir == root && top.as_deref().is_some_and(|t| exclude.contains(&t)) {
                continue;
            }
            collect(root, &path, exclude, files)?;
        } else if is_image_file(&path) {
            files.push(path);
        }
    }
    Ok(())
}

fn is_image_file(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".raw") || name.ends_with(".md") || name.ends_with(".json") || name.ends_with(".npy") || name.ends_with(".txt") {
        return false;
    }
    crate::study::volume::is_volume(path) || name.ends_with(".dcm") || name.ends_with(".png") || !name.contains('.')
}

fn read_one(path: &Path, name: &str, out: &mut Sources) -> anyhow::Result<()> {
    if crate::study::volume::is_volume(path) {
        let v = crate::study::volume::read(path)?;
        let [nx, ny, nz] = v.dims;
        let raw: Vec<f32> = (0..nx * ny * nz).map(|i| (v.voxels.get(i) * v.slope + v.intercept) as f32).collect();
        let s = v.spacing_mm();
        let vol = VolumeSource::new(name.to_string(), v.dims, [s[0] as f32, s[1] as f32, s[2] as f32], raw)
            .ok_or_else(|| anyhow::anyhow!("empty volume"))?;
        for z in spread(nz) {
            out.pool.push(format!("{name}#{z}"), normalize_for_pool(&vol.slice_z(z), 1024));
        }
        if nz >= MIN_VOLUME_SLICES {
            out.volumes.push(Arc::new(vol));
        }
        return Ok(());
    }
    let quiet = |_: f32, _: &str| {};
    let series = crate::study::series::load_file(path, &quiet)?;
    let mosaic = crate::study::dicom::mosaic_tiles(path);
    for f in spread(series.frames.len()) {
        let frame = series.frames[f].to_gray();
        match mosaic {
            Some(n) => {
                let tiles = split_mosaic(&frame, n);
                for t in spread(tiles.len()) {
                    out.pool.push(format!("{name}#{f}.{t}"), normalize_for_pool(&tiles[t], 1024));
                }
                if series.frames.len() == 1 && tiles.len() >= MIN_VOLUME_SLICES {
                    let (w, h) = (tiles[0].width, tiles[0].height);
                    let raw: Vec<f32> = tiles.iter().flat_map(|t| t.data.iter().copied()).collect();
                    if let Some(v) = VolumeSource::new(name.to_string(), [w, h, tiles.len()], [1.0, 1.0, 1.0], raw) {
                        out.volumes.push(Arc::new(v));
                    }
                }
            }
            None => out.pool.push(format!("{name}#{f}"), normalize_for_pool(&frame, 1024)),
        }
    }
    Ok(())
}

/// Up to `MAX_SLICES_PER_FILE` indices spread evenly over `0..n`.
fn spread(n: usize) -> Vec<usize> {
    if n <= MAX_SLICES_PER_FILE {
        return (0..n).collect();
    }
    (0..MAX_SLICES_PER_FILE).map(|k| (k * n + n / 2) / MAX_SLICES_PER_FILE).collect()
}

/// The `n` slices tiled row by row in a Siemens mosaic (a square grid of equal tiles).
pub fn split_mosaic(frame: &GrayImage, n: usize) -> Vec<GrayImage> {
    let grid = (n as f64).sqrt().ceil().max(1.0) as usize;
    let (tw, th) = (frame.width / grid, frame.height / grid);
    if tw == 0 || th == 0 {
        return vec![frame.clone()];
    }
    (0..n.min(grid * grid)).map(|k| frame.crop(((k % grid) * tw) as isize, ((k / grid) * th) as isize, tw, th, 0.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mosaic_tiles_are_cut_row_by_row() {
        let frame = GrayImage::from_fn(6, 6, |x, y| ((y / 2) * 3 + x / 2) as f32);
        let tiles = split_mosaic(&frame, 7);
        assert_eq!(tiles.len(), 7);
        for (k, t) in tiles.iter().enumerate() {
            assert_eq!((t.width, t.height), (2, 2));
            assert!(t.data.iter().all(|&v| v == k as f32));
        }
    }

    #[test]
    fn volume_sampling_interpolates_and_is_zero_outside() {
        let raw: Vec<f32> = (0..2 * 2 * 2).map(|i| i as f32).collect();
        let v = VolumeSource::new("v".into(), [2, 2, 2], [1.0, 1.0, 2.0], raw).unwrap();
        assert!((v.sample(0.5, 0.0, 0.0) - (v.at(0, 0, 0) + v.at(1, 0, 0)) / 2.0).abs() < 1e-6);
        assert_eq!(v.sample(5.0, 0.0, 0.0), 0.0);
        assert!(VolumeSource::new("bad".into(), [2, 2, 2], [1.0; 3], vec![0.0; 7]).is_none());
    }

    #[test]
    fn a_missing_folder_is_an_error() {
        assert!(read_folder(Path::new("/nonexistent/tandem"), &[]).is_err());
    }
}
