//! Progressive loading of a folder series: the slice to be shown is decoded first, the others
//! follow nearest to the slice the viewer wants, and each file is handed over as soon as it is in.
//!
//! The series keeps its type: every consumer (sync, whole-series find changes, measurements, the
//! timeline, exports) reads `Series::frames`. What is lazy is a frame's samples, not the frame:
//! the headers stay, while the pixels of a folder's slices are held under a byte budget and
//! decoded again from their file when asked for (`study::resident`), the slices near the shown
//! one kept decoded ahead of the scroll by a prefetch. So a 1000-slice series costs the budget,
//! not its 1 GiB of f32. The first image waits for the folder's headers (to know the display
//! order) and one slice, not for the whole series.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::study::series::{SeriesGroup, group_file, load_file, load_group, scan_folder};
use crate::study::{Frame, LoadProgress, Meta, PixelCache, Series, StudyError};

/// Shared by a progressive load and the pane showing it: which frame the viewer wants next,
/// whether it still wants any, and an optional pace.
#[derive(Debug, Default)]
pub struct LoadControl {
    /// Planned index (display order) of the frame the viewer shows.
    pub want: AtomicUsize,
    /// Set when the pane moved on to something else: the load stops after its current file.
    pub cancelled: AtomicBool,
    /// Milliseconds to wait before each file after the first: lets a test (or a demo) watch a
    /// series arrive on a machine that decodes it in an instant. 0 in normal use.
    pub pace_ms: AtomicU64,
    /// Where the decoded slices are counted; `None`: `PixelCache::global()`.
    pub cache: Option<Arc<PixelCache>>,
}

impl LoadControl {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

/// What a progressive load hands over, in this order: the plan, then each file once.
#[derive(Debug)]
pub enum Arrival {
    /// The series as known from the headers, no pixel decoded yet.
    Planned(Box<PartialSeries>),
    /// The frames of file `file` (display order), or why it could not be read.
    File { file: usize, frames: Result<Vec<Frame>, StudyError> },
}

/// A series whose files arrive one by one in any order. Frames keep their planned place in
/// display order (from the headers' frame counts); `finish` makes the same `Series` that
/// `load_group` makes from the same files.
#[derive(Debug)]
pub struct PartialSeries {
    /// From the header of the first file in display order.
    pub meta: Arc<Meta>,
    folder: PathBuf,
    /// Planned index of each file's first frame, and the planned total at the end.
    starts: Vec<usize>,
    files: Vec<Option<Result<Vec<Frame>, StudyError>>>,
    arrived: usize,
}

impl PartialSeries {
    pub fn new(group: &SeriesGroup) -> Self {
        let mut starts = vec![0];
        for n in &group.frames_per_file {
            starts.push(starts[starts.len() - 1] + n);
        }
        PartialSeries {
            meta: Arc::new(group.meta.clone()),
            folder: group.files.first().and_then(|f| f.parent()).map(Path::to_path_buf).unwrap_or_default(),
            starts,
            files: group.files.iter().map(|_| None).collect(),
            arrived: 0,
        }
    }

    /// Frames planned from the headers.
    pub fn total(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Planned frames of the files that arrived (decoded or failed).
    pub fn arrived_frames(&self) -> usize {
        self.files.iter().enumerate().filter(|(_, f)| f.is_some()).map(|(j, _)| self.starts[j + 1] - self.starts[j]).sum()
    }

    pub fn is_complete(&self) -> bool {
        self.arrived == self.files.len()
    }

    /// The file holding planned frame `k`.
    fn file_of(&self, k: usize) -> Option<usize> {
        (k < self.total()).then(|| self.starts.partition_point(|&s| s <= k) - 1)
    }

    /// Planned frame `k`, once its file is in.
    pub fn frame(&self, k: usize) -> Option<&Frame> {
        let j = self.file_of(k)?;
        match self.files.get(j)? {
            Some(Ok(frames)) => frames.get(k - self.starts[j]),
            _ => None,
        }
    }

    /// Some frame that is in (for the geometry of a pane whose shown frame is not).
    pub fn any_frame(&self) -> Option<&Frame> {
        self.files.iter().flatten().flatten().flatten().next()
    }

    /// Why planned frame `k` will not come, if its file failed.
    pub fn error_at(&self, k: usize) -> Option<&StudyError> {
        match self.files.get(self.file_of(k)?)? {
            Some(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// Stores what file `file` decoded to; a file delivered twice keeps its first delivery.
    pub fn insert(&mut self, file: usize, frames: Result<Vec<Frame>, StudyError>) {
        if let Some(slot) = self.files.get_mut(file)
            && slot.is_none()
        {
            *slot = Some(frames);
            self.arrived += 1;
        }
    }

    /// Where planned frame `k` lands in the finished series: files that failed, or held fewer
    /// frames than their header said, move the frames after them.
    pub fn finished_index(&self, k: usize) -> usize {
        let Some(j) = self.file_of(k) else { return k };
        let len = |f: &Option<Result<Vec<Frame>, StudyError>>| f.as_ref().and_then(|r| r.as_ref().ok()).map_or(0, Vec::len);
        let before: usize = self.files[..j].iter().map(len).sum();
        before + (k - self.starts[j]).min(len(&self.files[j]).saturating_sub(1))
    }

    /// The series, once every file is in; the first error (display order) when no frame could
    /// be read, as `load_group`.
    pub fn finish(self) -> Result<Series, StudyError> {
        let mut frames = Vec::new();
        let mut first_error = None;
        for file in self.files {
            match file {
                Some(Ok(f)) => frames.extend(f),
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                None => {
                    first_error.get_or_insert(StudyError::Empty("the series was not fully loaded".into()));
                }
            }
        }
        if frames.is_empty() {
            return Err(first_error.unwrap_or_else(|| StudyError::Empty("no frames".into())));
        }
        let meta = frames[0].meta.clone();
        let source = self.folder;
        Ok(Series { id: meta.series_uid.clone().unwrap_or_else(|| source.display().to_string()), frames, meta, source })
    }

    /// Planned frame range of each file.
    fn ranges(&self) -> Vec<(usize, usize)> {
        self.starts.windows(2).map(|w| (w[0], w[1])).collect()
    }
}

/// `study::load`, handing a folder's series over file by file through `deliver` (an
/// `Arrival::Planned`, then one `Arrival::File` per file, nearest to `control.want` first).
/// Returns the series when it was read in one piece instead (a file, a volume, a folder of one
/// file); `None` when it was delivered (or cancelled).
pub fn load_progressive(
    path: &Path,
    progress: LoadProgress,
    control: &LoadControl,
    deliver: &mut dyn FnMut(Arrival),
) -> Result<Option<Series>, StudyError> {
    if !path.is_dir() {
        return load_file(path, progress).map(Some);
    }
    let groups = scan_folder(path, progress)?;
    let best =
        groups.into_iter().max_by_key(|g| g.frame_count()).ok_or_else(|| StudyError::Empty(format!("no images in {}", path.display())))?;
    load_group_progressive(&best, progress, control, deliver)
}

/// `load_group`, file by file as `load_progressive`. The first file decoded holds the middle
/// planned frame, which the viewer shows first.
pub fn load_group_progressive(
    group: &SeriesGroup,
    progress: LoadProgress,
    control: &LoadControl,
    deliver: &mut dyn FnMut(Arrival),
) -> Result<Option<Series>, StudyError> {
    if group.volume || group.files.len() < 2 {
        return load_group(group, progress).map(Some);
    }
    let plan = PartialSeries::new(group);
    let ranges = plan.ranges();
    control.want.store(plan.total() / 2, Ordering::Relaxed);
    deliver(Arrival::Planned(Box::new(plan)));
    let n = group.files.len();
    let cache = control.cache.clone().unwrap_or_else(|| PixelCache::global().clone());
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() {
        if control.cancelled.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let pace = control.pace_ms.load(Ordering::Relaxed);
        if pace > 0 && pending.len() < n {
            std::thread::sleep(std::time::Duration::from_millis(pace));
        }
        let at = nearest(&pending, &ranges, control.want.load(Ordering::Relaxed));
        let file = pending.swap_remove(at);
        let done = n - pending.len();
        progress(0.3 + 0.7 * done as f32 / n as f32, &format!("loading {done}/{n}"));
        // Per-file progress would only flicker: the pane counts files.
        let quiet = |_: f32, _: &str| {};
        let frames = group_file(group, file, &cache, &quiet, 0.0, 1.0);
        if let Err(e) = &frames {
            log::warn!("skipping {}: {e}", group.files[file].display());
        }
        deliver(Arrival::File { file, frames });
    }
    Ok(None)
}

/// The position in `pending` of the file nearest to planned frame `want` (the file holding it,
/// else the closest; on a tie the one after it, as scrolling mostly goes forward).
fn nearest(pending: &[usize], ranges: &[(usize, usize)], want: usize) -> usize {
    let key = |j: usize| {
        let (start, end) = ranges[j];
        if want < start {
            (start - want, 0)
        } else if want >= end {
            (want + 1 - end, 1)
        } else {
            (0, 0)
        }
    };
    pending.iter().enumerate().min_by_key(|&(_, &j)| key(j)).map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder of `n` PNG slices whose pixels hold their slice number.
    fn folder(n: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for k in 0..n {
            let img = image::GrayImage::from_fn(6, 4, |_, _| image::Luma([k as u8 * 10]));
            img.save(dir.path().join(format!("{k:03}.png"))).unwrap();
        }
        dir
    }

    fn first_value(f: &Frame) -> f32 {
        f.to_gray().data[0]
    }

    #[test]
    fn the_middle_slice_comes_first_then_the_nearest_to_what_is_wanted() {
        let dir = folder(9);
        let control = LoadControl::default();
        let mut partial = None;
        let mut order = Vec::new();
        let got = load_progressive(dir.path(), &|_, _| {}, &control, &mut |a| match a {
            Arrival::Planned(p) => partial = Some(p),
            Arrival::File { file, frames } => {
                order.push(file);
                let p = partial.as_mut().unwrap();
                if file == 4 {
                    // What is shown first is there before any other slice.
                    assert_eq!(p.arrived_frames(), 0);
                    // The viewer jumps to the last slice: it comes next.
                    control.want.store(8, Ordering::Relaxed);
                }
                p.insert(file, frames);
            }
        })
        .unwrap();
        assert!(got.is_none(), "a folder of several files is delivered, not returned");
        assert_eq!(order[..3], [4, 8, 7]);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..9).collect::<Vec<_>>(), "every file once");
        let partial = partial.unwrap();
        assert!(partial.is_complete());
        assert_eq!(first_value(partial.frame(3).unwrap()), 30.0);
        let series = partial.finish().unwrap();
        let whole = crate::study::load(dir.path(), &|_, _| {}).unwrap();
        assert_eq!(series.frames.len(), whole.frames.len());
        assert_eq!((series.id, series.source), (whole.id, whole.source));
        for (a, b) in series.frames.iter().zip(&whole.frames) {
            assert_eq!(a.to_gray().data, b.to_gray().data);
        }
    }

    #[test]
    fn a_broken_file_leaves_a_gap_that_the_finished_series_closes() {
        let dir = folder(4);
        std::fs::write(dir.path().join("001.png"), b"not a png").unwrap();
        let group = scan_folder(dir.path(), &|_, _| {}).unwrap().remove(0);
        let mut partial = PartialSeries::new(&group);
        assert_eq!(partial.total(), 4);
        assert!(partial.frame(0).is_none() && partial.any_frame().is_none());
        for file in 0..4 {
            partial.insert(file, group_file(&group, file, PixelCache::global(), &|_, _| {}, 0.0, 1.0));
        }
        assert!(partial.frame(1).is_none() && partial.error_at(1).is_some());
        assert_eq!(partial.finished_index(2), 1, "frames after the gap move up");
        let series = partial.finish().unwrap();
        assert_eq!(series.frames.iter().map(first_value).collect::<Vec<_>>(), [0.0, 20.0, 30.0]);
    }

    #[test]
    fn a_cancelled_load_stops_and_a_single_file_is_returned_whole() {
        let dir = folder(5);
        let control = LoadControl::default();
        let mut files = 0;
        load_progressive(dir.path(), &|_, _| {}, &control, &mut |a| {
            if matches!(a, Arrival::File { .. }) {
                files += 1;
                control.cancel();
            }
        })
        .unwrap();
        assert_eq!(files, 1);
        let one = load_progressive(&dir.path().join("002.png"), &|_, _| {}, &LoadControl::default(), &mut |_| panic!("delivered"));
        assert_eq!(one.unwrap().map(|s| s.frames.len()), Some(1));
    }
}
