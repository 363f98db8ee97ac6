//! Files and folders to series: scanning headers, grouping by study and series, ordering slices
//! along their normal, and hanging the older study of a patient as the prior.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::study::dicom;
use crate::study::resident::Origin;
use crate::study::{Frame, Meta, PixelCache, Series, StudyError, pixels, present, raster, volume};

/// Progress callback: fraction done (0..1) and what is happening.
pub type LoadProgress<'a> = &'a (dyn Fn(f32, &str) + Sync);

/// Loads a file (DICOM, NIfTI, MetaImage or raster) or a folder (its largest series) as one series.
pub fn load(path: &Path, progress: LoadProgress) -> Result<Series, StudyError> {
    if path.is_dir() {
        let groups = scan_folder(path, progress)?;
        let best = groups
            .into_iter()
            .max_by_key(|g| g.frame_count())
            .ok_or_else(|| StudyError::Empty(format!("no images in {}", path.display())))?;
        load_group(&best, progress)
    } else {
        load_file(path, progress)
    }
}

/// One file as a series (all frames of a multi-frame DICOM).
pub fn load_file(path: &Path, progress: LoadProgress) -> Result<Series, StudyError> {
    if !path.exists() {
        return Err(StudyError::Io(format!("no such file: {}", path.display())));
    }
    progress(0.05, "reading");
    if volume::is_volume(path) && !dicom::looks_like_dicom(path) {
        return volume::load(path, progress);
    }
    if raster::is_raster(path) && !dicom::looks_like_dicom(path) {
        let frame = raster::load(path)?;
        let meta = frame.meta.clone();
        progress(1.0, "done");
        return Ok(Series { id: path.display().to_string(), frames: vec![frame], meta, source: path.to_path_buf() });
    }
    let frames = dicom_frames(path, progress, 0.05, 1.0)?;
    let meta = frames.first().map(|f| f.meta.clone()).ok_or_else(|| StudyError::Empty("no frames".into()))?;
    Ok(Series { id: meta.series_uid.clone().unwrap_or_else(|| path.display().to_string()), frames, meta, source: path.to_path_buf() })
}

/// Decodes every frame of one DICOM file, reporting progress within `from..to`.
pub fn dicom_frames(path: &Path, progress: LoadProgress, from: f32, to: f32) -> Result<Vec<Frame>, StudyError> {
    progress(from + 0.1 * (to - from), "decoding pixels");
    let (obj, header, stored) = pixels::read_file(path)?;
    progress(from + 0.8 * (to - from), "preparing frames");
    let meta = Arc::new(present::read_meta(&obj, path));
    present::frames_from_stored(&obj, &header, &stored, meta)
}

/// A series found in a folder: its files, in display order.
#[derive(Clone, Debug)]
pub struct SeriesGroup {
    pub meta: Meta,
    pub files: Vec<PathBuf>,
    pub frames_per_file: Vec<usize>,
    pub raster: bool,
    /// One NIfTI or MetaImage file: a series by itself.
    pub volume: bool,
}

impl SeriesGroup {
    pub fn frame_count(&self) -> usize {
        self.frames_per_file.iter().sum()
    }
}

/// Files under `dir` (depth ≤ 4, hidden entries skipped), sorted by path.
fn collect_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if p.is_dir() {
            if depth < 4 {
                collect_files(&p, depth + 1, out);
            }
        } else {
            out.push(p);
        }
    }
}

struct Scanned {
    path: PathBuf,
    meta: Meta,
    frames: usize,
    position: Option<f64>,
}

/// Reads the headers of every image in `dir` and groups them into series.
pub fn scan_folder(dir: &Path, progress: LoadProgress) -> Result<Vec<SeriesGroup>, StudyError> {
    let mut files = Vec::new();
    collect_files(dir, 0, &mut files);
    if files.is_empty() {
        return Err(StudyError::Empty(format!("the folder is empty: {}", dir.display())));
    }
    let mut by_series: BTreeMap<(String, String), Vec<Scanned>> = BTreeMap::new();
    let mut rasters: Vec<PathBuf> = Vec::new();
    let mut volumes: Vec<SeriesGroup> = Vec::new();
    let n = files.len();
    for (i, path) in files.into_iter().enumerate() {
        progress(0.3 * i as f32 / n as f32, "scanning folder");
        if dicom::looks_like_dicom(&path) {
            let Ok(obj) = dicom::open(&path, true) else { continue };
            if obj.get(dicom_dictionary_std::tags::ROWS).is_none() {
                continue; // SR, RT plan, presentation state: not images
            }
            let meta = present::read_meta(&obj, &path);
            use crate::study::dicom::Attrs;
            let frames = obj.int_of(dicom_dictionary_std::tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as usize;
            let position = match (obj.floats_of(dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT), meta.image_orientation) {
                (Some(p), Some(o)) if p.len() >= 3 => {
                    let n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
                    Some(p[0] * n[0] + p[1] * n[1] + p[2] * n[2])
                }
                _ => None,
            };
            let key = (meta.study_uid.clone().unwrap_or_default(), meta.series_uid.clone().unwrap_or_else(|| path.display().to_string()));
            by_series.entry(key).or_default().push(Scanned { path, meta, frames, position });
        } else if volume::is_volume(&path) {
            // The header alone says how many slices; an unreadable volume is left out as an
            // unreadable DICOM file is.
            match volume::read_header(&path) {
                Ok(h) => volumes.push(SeriesGroup {
                    meta: Meta { path: path.clone(), ..Meta::default() },
                    frames_per_file: vec![h.dims[2]],
                    files: vec![path],
                    raster: false,
                    volume: true,
                }),
                Err(e) => log::warn!("skipping {}: {e}", path.display()),
            }
        } else if raster::is_raster(&path) {
            rasters.push(path);
        }
    }
    let mut groups: Vec<SeriesGroup> = by_series
        .into_values()
        .map(|mut items| {
            // Along the slice normal when every slice has a position, else by Instance Number.
            if items.iter().all(|s| s.position.is_some()) {
                items.sort_by(|a, b| a.position.unwrap_or(0.0).total_cmp(&b.position.unwrap_or(0.0)));
            } else {
                items.sort_by_key(|s| (s.meta.instance_number.unwrap_or(i64::MAX), s.path.clone()));
            }
            SeriesGroup {
                meta: items[0].meta.clone(),
                frames_per_file: items.iter().map(|s| s.frames).collect(),
                files: items.into_iter().map(|s| s.path).collect(),
                raster: false,
                volume: false,
            }
        })
        .collect();
    if !rasters.is_empty() {
        groups.push(SeriesGroup {
            meta: Meta { path: dir.to_path_buf(), ..Meta::default() },
            frames_per_file: vec![1; rasters.len()],
            files: rasters,
            raster: true,
            volume: false,
        });
    }
    groups.extend(volumes);
    if groups.is_empty() {
        return Err(StudyError::Empty(format!("no readable images in {}", dir.display())));
    }
    Ok(groups)
}

/// Loads every file of a group as one series.
pub fn load_group(group: &SeriesGroup, progress: LoadProgress) -> Result<Series, StudyError> {
    if group.volume
        && let Some(path) = group.files.first()
    {
        return volume::load(path, progress);
    }
    let n = group.files.len().max(1) as f32;
    let mut frames = Vec::new();
    let mut first_error = None;
    for (i, path) in group.files.iter().enumerate() {
        let (from, to) = (0.3 + 0.7 * i as f32 / n, 0.3 + 0.7 * (i + 1) as f32 / n);
        progress(from, &format!("loading {}/{}", i + 1, group.files.len()));
        match group_file(group, i, crate::study::PixelCache::global(), progress, from, to) {
            Ok(f) => frames.extend(f),
            Err(e) => {
                log::warn!("skipping {}: {e}", path.display());
                first_error.get_or_insert(e);
            }
        }
    }
    if frames.is_empty() {
        return Err(first_error.unwrap_or_else(|| StudyError::Empty("no frames".into())));
    }
    let meta = frames[0].meta.clone();
    let source = group.files[0].parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Series { id: meta.series_uid.clone().unwrap_or_else(|| source.display().to_string()), frames, meta, source })
}

/// The frames of file `i` of a group. The slice of a single-frame DICOM file in a folder of
/// several is counted in `cache` (evicted and decoded again as the budget asks); anything else
/// keeps its samples for good.
pub(crate) fn group_file(
    group: &SeriesGroup,
    i: usize,
    cache: &Arc<PixelCache>,
    progress: LoadProgress,
    from: f32,
    to: f32,
) -> Result<Vec<Frame>, StudyError> {
    let path = group.files.get(i).ok_or_else(|| StudyError::Empty(format!("the series has no file {i}")))?;
    if group.raster {
        return raster::load(path).map(|f| vec![f]);
    }
    let mut frames = dicom_frames(path, progress, from, to)?;
    if group.files.len() > 1
        && let [frame] = frames.as_mut_slice()
        && let Ok(samples) = frame.samples()
    {
        let samples = Arc::try_unwrap(samples).unwrap_or_else(|s| (*s).clone());
        let origin = Origin { path: path.clone(), frame_index: frame.frame_index, width: frame.width, height: frame.height };
        frame.pixels = cache.adopt(samples, origin);
    }
    Ok(frames)
}

/// The study a group belongs to, for hanging.
pub(crate) fn study_key(g: &SeriesGroup) -> String {
    g.meta.study_uid.clone().unwrap_or_else(|| g.meta.path.display().to_string())
}

/// "YYYYMMDDhhmmss" for ordering studies in time.
pub(crate) fn study_when(g: &SeriesGroup) -> String {
    format!("{}{}", g.meta.study_date.clone().unwrap_or_default(), g.meta.study_time.clone().unwrap_or_default())
}

/// Which series of a folder go in the prior and current panes: the older study of the patient
/// is the prior; in each study the series most like the current one (same modality, most frames).
pub fn hang_groups(groups: Vec<SeriesGroup>) -> Result<(SeriesGroup, SeriesGroup), StudyError> {
    let mut studies: BTreeMap<String, Vec<SeriesGroup>> = BTreeMap::new();
    for g in groups {
        studies.entry(study_key(&g)).or_default().push(g);
    }
    if studies.len() < 2 {
        let mut only: Vec<SeriesGroup> = studies.into_values().flatten().collect();
        if only.len() >= 2 {
            // One study with several series: show its two largest side by side.
            only.sort_by_key(|g| std::cmp::Reverse(g.frame_count()));
            let second = only.remove(1);
            let first = only.remove(0);
            return Ok((second, first));
        }
        return Err(StudyError::Empty("the folder holds a single series; open a prior and a current".into()));
    }
    let mut ordered: Vec<(String, Vec<SeriesGroup>)> = studies.into_values().map(|v| (study_when(&v[0]), v)).collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0));
    let patients: std::collections::BTreeSet<String> = ordered.iter().filter_map(|(_, v)| v[0].meta.patient_id.clone()).collect();
    if patients.len() > 1 {
        return Err(StudyError::Unsupported(format!("the folder holds studies of {} different patients", patients.len())));
    }
    let (_, mut current_study) = ordered.pop().ok_or_else(|| StudyError::Empty("no studies".into()))?;
    let (_, mut prior_study) = ordered.pop().ok_or_else(|| StudyError::Empty("no prior study".into()))?;
    current_study.sort_by_key(|g| std::cmp::Reverse(g.frame_count()));
    let current = current_study.remove(0);
    let modality = current.meta.modality.clone();
    prior_study.sort_by_key(|g| (g.meta.modality != modality, std::cmp::Reverse(g.frame_count())));
    let prior = prior_study.remove(0);
    Ok((prior, current))
}

/// Scans a folder holding two studies of one patient and loads (prior, current).
pub fn hang_folder(dir: &Path, progress: LoadProgress) -> Result<(Series, Series), StudyError> {
    let groups = scan_folder(dir, progress)?;
    let (prior, current) = hang_groups(groups)?;
    let quiet = |_: f32, _: &str| {};
    Ok((load_group(&prior, &quiet)?, load_group(&current, progress)?))
}
