//! Decoded pixels under a byte budget: the slices of a folder series are evicted least recently
//! used first and decoded again from their file when asked for.
//!
//! A frame keeps its header fields always; only its samples come and go. Frames that cannot be
//! decoded again on their own (a raster image, a volume, a multi-frame file, one built in memory)
//! hold their samples for good and are not counted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::study::progressive::LoadControl;
use crate::study::{Samples, Series, StudyError};

/// Environment variable: the budget of all open series together, in MiB.
pub const BUDGET_ENV: &str = "TANDEM_PIXEL_BUDGET_MB";
/// 512 MiB: a 300-slice 512² CT (300 MiB as f32) stays whole; a 1000-slice one does not.
pub const DEFAULT_BUDGET_MB: usize = 512;

/// Has the allocator hand an evicted slice's memory back to the system when it is freed. glibc
/// serves a 1 MiB block by mmap only until the first is freed, then raises its threshold and
/// keeps freed blocks in per-thread arenas (the loader's, the prefetch's, the viewer's): measured
/// with `tandem bench view`, the process then held up to twice the budget. A fixed threshold
/// keeps each slice its own mapping. Call before any thread starts; a no-op off glibc.
pub fn return_freed_slices_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: sets one allocator parameter; nothing else runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// The decoded bytes of one frame's samples (f32 grey, 3 bytes a colour pixel).
pub fn samples_bytes(s: &Samples) -> usize {
    match s {
        Samples::Gray(v) => v.len() * 4,
        Samples::Rgb(v) => v.len() * 3,
    }
}

/// Least-recently-used accounting of evictable samples against a byte budget.
pub struct PixelCache {
    budget: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    resident: usize,
    peak: usize,
    /// Slot id → (last use, bytes, the slot).
    entries: HashMap<u64, (u64, usize, Weak<Slot>)>,
}

impl std::fmt::Debug for PixelCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PixelCache({} of {} bytes)", self.resident_bytes(), self.budget)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding it left plain data behind: keep using it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PixelCache {
    pub fn new(budget_bytes: usize) -> Arc<PixelCache> {
        Arc::new(PixelCache { budget: budget_bytes, inner: Mutex::new(Lru::default()) })
    }

    /// The cache every load uses: `TANDEM_PIXEL_BUDGET_MB` (a whole number of MiB), else 512 MiB.
    pub fn global() -> &'static Arc<PixelCache> {
        static GLOBAL: OnceLock<Arc<PixelCache>> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let mb = match std::env::var(BUDGET_ENV) {
                Ok(v) => v.trim().parse::<usize>().unwrap_or_else(|_| {
                    log::warn!("{BUDGET_ENV}={v:?} is not a number of MiB; using {DEFAULT_BUDGET_MB}");
                    DEFAULT_BUDGET_MB
                }),
                Err(_) => DEFAULT_BUDGET_MB,
            };
            PixelCache::new(mb.saturating_mul(1 << 20))
        })
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget
    }

    /// Bytes of evictable samples in memory now.
    pub fn resident_bytes(&self) -> usize {
        lock(&self.inner).resident
    }

    /// The most `resident_bytes` has been.
    pub fn peak_bytes(&self) -> usize {
        lock(&self.inner).peak
    }

    /// Frame samples that can be decoded again from `origin`, counted in this cache (which may
    /// evict others to make room).
    pub fn adopt(self: &Arc<Self>, samples: Samples, origin: Origin) -> Pixels {
        let bytes = samples_bytes(&samples);
        let slot = Arc::new(Slot {
            id: next_id(),
            bytes,
            color: matches!(samples, Samples::Rgb(_)),
            origin,
            cache: self.clone(),
            state: Mutex::new(State::In(Arc::new(samples))),
        });
        self.admit(&slot);
        Pixels(Inner::Evictable(slot))
    }

    /// Counts `slot` as resident and most recently used, then evicts the least recently used
    /// others while over budget. The caller may hold `slot`'s lock: others are only tried, so
    /// that two threads never wait on each other.
    fn admit(&self, slot: &Arc<Slot>) {
        let mut dropped = Vec::new();
        {
            let mut lru = lock(&self.inner);
            lru.tick += 1;
            let tick = lru.tick;
            if lru.entries.insert(slot.id, (tick, slot.bytes, Arc::downgrade(slot))).is_none() {
                lru.resident += slot.bytes;
            }
            let mut order: Vec<(u64, u64)> = Vec::new();
            if lru.resident > self.budget {
                order = lru.entries.iter().filter(|(id, _)| **id != slot.id).map(|(id, e)| (e.0, *id)).collect();
                order.sort_unstable();
            }
            for (_, id) in order {
                if lru.resident <= self.budget {
                    break;
                }
                let Some(victim) = lru.entries.get(&id).and_then(|e| e.2.upgrade()) else { continue };
                // A slot busy decoding or being read is skipped: it is in use.
                if let Ok(mut state) = victim.state.try_lock() {
                    *state = State::Out;
                    lru.entries.remove(&id);
                    lru.resident -= victim.bytes;
                }
                // Dropped after the lock is released: the last handle's drop takes the lock.
                dropped.push(victim);
            }
            lru.peak = lru.peak.max(lru.resident);
        }
        drop(dropped);
    }

    fn touch(&self, id: u64) {
        let mut lru = lock(&self.inner);
        lru.tick += 1;
        let tick = lru.tick;
        if let Some(e) = lru.entries.get_mut(&id) {
            e.0 = tick;
        }
    }

    fn forget(&self, id: u64) {
        let mut lru = lock(&self.inner);
        if let Some((_, bytes, _)) = lru.entries.remove(&id) {
            lru.resident -= bytes;
        }
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Where evicted samples come back from: frame `frame_index` of a DICOM file.
#[derive(Clone, Debug)]
pub struct Origin {
    pub path: PathBuf,
    pub frame_index: usize,
    pub width: usize,
    pub height: usize,
}

impl Origin {
    fn decode(&self, color: bool) -> Result<Samples, StudyError> {
        let quiet = |_: f32, _: &str| {};
        let frame = crate::study::series::dicom_frames(&self.path, &quiet, 0.0, 1.0)?
            .into_iter()
            .nth(self.frame_index)
            .ok_or_else(|| StudyError::Empty(format!("{} no longer has frame {}", self.path.display(), self.frame_index)))?;
        // The file changed since it was loaded: its pixels are not this frame's any more.
        if (frame.width, frame.height, frame.is_color()) != (self.width, self.height, color) {
            return Err(StudyError::Corrupt(format!("{} changed since it was loaded", self.path.display())));
        }
        frame.pixels.get().map(|s| Arc::try_unwrap(s).unwrap_or_else(|s| (*s).clone()))
    }
}

enum State {
    In(Arc<Samples>),
    Out,
    /// Decoding again failed (the file went away or changed): said once, not retried.
    Failed(StudyError),
}

struct Slot {
    id: u64,
    bytes: usize,
    color: bool,
    origin: Origin,
    cache: Arc<PixelCache>,
    state: Mutex<State>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.cache.forget(self.id);
    }
}

/// A frame's samples: held for good, or evictable and decoded again on demand.
#[derive(Clone)]
pub struct Pixels(Inner);

#[derive(Clone)]
enum Inner {
    Fixed(Arc<Samples>),
    Evictable(Arc<Slot>),
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Fixed(s) => write!(f, "Pixels::Fixed({} bytes)", samples_bytes(s)),
            Inner::Evictable(s) => write!(f, "Pixels::Evictable({})", s.origin.path.display()),
        }
    }
}

impl Pixels {
    /// Samples held for good (not counted against any budget).
    pub fn new(samples: Samples) -> Pixels {
        Pixels(Inner::Fixed(Arc::new(samples)))
    }

    pub fn is_color(&self) -> bool {
        match &self.0 {
            Inner::Fixed(s) => matches!(**s, Samples::Rgb(_)),
            Inner::Evictable(s) => s.color,
        }
    }

    /// The cache counting these samples, when they are evictable.
    pub fn cache(&self) -> Option<&Arc<PixelCache>> {
        match &self.0 {
            Inner::Fixed(_) => None,
            Inner::Evictable(slot) => Some(&slot.cache),
        }
    }

    pub fn is_evictable(&self) -> bool {
        matches!(self.0, Inner::Evictable(_))
    }

    /// The samples, decoded again from the file when they were evicted (blocking: a slice of
    /// a CT takes milliseconds, a large compressed one longer).
    pub fn get(&self) -> Result<Arc<Samples>, StudyError> {
        let slot = match &self.0 {
            Inner::Fixed(s) => return Ok(s.clone()),
            Inner::Evictable(slot) => slot,
        };
        let mut state = lock(&slot.state);
        match &*state {
            State::In(s) => {
                let s = s.clone();
                slot.cache.touch(slot.id);
                Ok(s)
            }
            State::Failed(e) => Err(e.clone()),
            State::Out => match slot.origin.decode(slot.color) {
                Ok(samples) => {
                    let s = Arc::new(samples);
                    *state = State::In(s.clone());
                    slot.cache.admit(slot);
                    Ok(s)
                }
                Err(e) => {
                    log::error!("cannot decode {} again: {e}", slot.origin.path.display());
                    *state = State::Failed(e.clone());
                    Err(e)
                }
            },
        }
    }

    /// The samples when they are in memory (counted as a use), without decoding: `None` while
    /// evicted, the error when decoding them again failed. For a viewer that must not wait on
    /// a decode of its own.
    pub fn peek(&self) -> Option<Result<Arc<Samples>, StudyError>> {
        let slot = match &self.0 {
            Inner::Fixed(s) => return Some(Ok(s.clone())),
            Inner::Evictable(slot) => slot,
        };
        // Waits out a prefetch decoding this very frame (milliseconds) rather than flicker.
        let state = lock(&slot.state);
        match &*state {
            State::In(s) => {
                let s = s.clone();
                slot.cache.touch(slot.id);
                Some(Ok(s))
            }
            State::Failed(e) => Some(Err(e.clone())),
            State::Out => None,
        }
    }

    /// In memory now (not counted as a use).
    pub fn is_resident(&self) -> bool {
        match &self.0 {
            Inner::Fixed(_) => true,
            Inner::Evictable(slot) => matches!(*lock(&slot.state), State::In(_)),
        }
    }
}

/// How many frames around the shown one a prefetch keeps decoded: up to 32 ahead of the scroll
/// direction and a third of that behind, no more than a quarter of what fits in the budget (the
/// other series open, and the slices scrolled past, share it).
pub fn prefetch_span(cache: &PixelCache, frame_bytes: usize) -> (usize, usize) {
    let fit = cache.budget_bytes() / frame_bytes.max(1);
    let ahead = (fit / 4).clamp(1, 32);
    (ahead, (ahead / 3).max(1))
}

/// The frames to have in memory around `want`, nearest first: `ahead` in the scroll direction
/// (`forward`), `behind` the other way.
pub fn prefetch_order(want: usize, len: usize, forward: bool, (ahead, behind): (usize, usize)) -> Vec<usize> {
    let mut order = Vec::with_capacity(ahead + behind + 1);
    if want < len {
        order.push(want);
    }
    let (before, after) = if forward { (behind, ahead) } else { (ahead, behind) };
    for d in 1..=ahead.max(behind) {
        let (fwd, back) = (want.checked_add(d).filter(|&k| k < len && d <= after), want.checked_sub(d).filter(|_| d <= before));
        let pair = if forward { [fwd, back] } else { [back, fwd] };
        order.extend(pair.into_iter().flatten());
    }
    order
}

/// Keeps the frames around the one `control.want` names decoded (`prefetch_order`, ahead of the
/// scroll direction), on a thread of its own, until the series is dropped or `control` is
/// cancelled. Returns `None` (no thread) when no frame of the series can be evicted.
pub fn keep_near(series: &Arc<Series>, control: Arc<LoadControl>) -> Option<std::thread::JoinHandle<()>> {
    let first = series.frames.iter().find(|f| f.pixels.is_evictable())?;
    let cache = first.pixels.cache()?.clone();
    let span = prefetch_span(&cache, first.width * first.height * 4);
    let series = Arc::downgrade(series);
    let spawned = std::thread::Builder::new().name("prefetch".into()).spawn(move || {
        let (mut last, mut forward) = (None, true);
        while !control.cancelled.load(Ordering::Relaxed) {
            let Some(s) = series.upgrade() else { return };
            let want = control.want.load(Ordering::Relaxed);
            if let Some(l) = last
                && l != want
            {
                forward = want > l;
            }
            last = Some(want);
            let mut moved = false;
            for k in prefetch_order(want, s.frames.len(), forward, span) {
                if control.cancelled.load(Ordering::Relaxed) || control.want.load(Ordering::Relaxed) != want {
                    moved = true;
                    break;
                }
                // A use: what is near the shown slice is the last to be evicted. A failure is
                // the pane's to show.
                let _ = s.frames[k].pixels.get();
            }
            drop(s);
            if !moved {
                std::thread::sleep(std::time::Duration::from_millis(4));
            }
        }
    });
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            log::warn!("no prefetch thread: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::progressive::{Arrival, PartialSeries, load_progressive};
    use crate::study::{GrayImage, load};

    /// A folder of `n` 24×16 CT slices, each with its own values (slice k, pixel i: k·100 + i).
    fn ct_folder(n: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for k in 0..n {
            let img = GrayImage { width: 24, height: 16, data: (0..24 * 16).map(|i| (k * 100 + i) as f32 - 1000.0).collect() };
            crate::cli::bench_series::write_slice(dir.path(), "2.25.99", k, k as f64, [1.0, 1.0], &img).unwrap();
        }
        dir
    }

    const SLICE: usize = 24 * 16 * 4;

    fn values(f: &crate::study::Frame) -> Vec<f32> {
        match &*f.samples().unwrap() {
            Samples::Gray(v) => v.clone(),
            Samples::Rgb(_) => panic!("grey expected"),
        }
    }

    /// Loads `dir` as the viewer does (file by file) with its slices counted in `cache`.
    fn load_into(dir: &std::path::Path, cache: &Arc<PixelCache>) -> Arc<Series> {
        let control = LoadControl { cache: Some(cache.clone()), ..LoadControl::default() };
        let mut partial: Option<Box<PartialSeries>> = None;
        let whole = load_progressive(dir, &|_, _| {}, &control, &mut |a| match a {
            Arrival::Planned(p) => partial = Some(p),
            Arrival::File { file, frames } => partial.as_mut().unwrap().insert(file, frames),
        })
        .unwrap();
        assert!(whole.is_none(), "a folder of slices arrives file by file");
        Arc::new(partial.unwrap().finish().unwrap())
    }

    #[test]
    fn scrolling_under_a_small_budget_stays_within_it_and_shows_every_slice_right() {
        let n = 14;
        let dir = ct_folder(n);
        // Everything decoded and held, as before the budget: the reference.
        let reference: Vec<Vec<f32>> = {
            let cache = PixelCache::new(usize::MAX);
            load_into(dir.path(), &cache).frames.iter().map(values).collect()
        };
        assert_eq!(reference.len(), n);
        assert_ne!(reference[0], reference[1]);
        let cache = PixelCache::new(4 * SLICE);
        let series = load_into(dir.path(), &cache);
        assert!(series.frames.iter().all(|f| f.pixels.is_evictable()));
        assert!(cache.resident_bytes() <= 4 * SLICE, "{} bytes after loading", cache.resident_bytes());
        assert!(series.frames.iter().filter(|f| f.pixels.is_resident()).count() <= 4);
        let control = Arc::new(LoadControl::default());
        let prefetch = keep_near(&series, control.clone()).expect("a folder of slices is evictable");
        // End to end twice, as a reader scrolls: each slice comes in from the prefetch.
        let path: Vec<usize> = (0..n).chain((0..n).rev()).chain(0..n).collect();
        for k in path {
            control.want.store(k, Ordering::Relaxed);
            let start = std::time::Instant::now();
            let shown = loop {
                if let Some(s) = series.frames[k].pixels.peek() {
                    break s.unwrap();
                }
                assert!(start.elapsed().as_secs() < 10, "slice {k} never came in");
                std::thread::sleep(std::time::Duration::from_millis(1));
            };
            let Samples::Gray(v) = &*shown else { panic!("grey expected") };
            assert_eq!(v, &reference[k], "slice {k}");
            assert!(cache.resident_bytes() <= 4 * SLICE, "{} bytes at slice {k}", cache.resident_bytes());
        }
        assert!(cache.peak_bytes() <= 4 * SLICE, "peak {} bytes", cache.peak_bytes());
        control.cancel();
        prefetch.join().unwrap();
        // Every consumer that reads a frame whole still gets it (decoded again on demand).
        for (f, r) in series.frames.iter().zip(&reference) {
            assert_eq!(&values(f), r);
        }
        drop(series);
        assert_eq!(cache.resident_bytes(), 0, "a dropped series leaves nothing counted");
    }

    #[test]
    fn an_evicted_slice_comes_back_identical_and_a_vanished_file_is_an_error() {
        let dir = ct_folder(3);
        let whole = load(dir.path(), &|_, _| {}).unwrap();
        let cache = PixelCache::new(2 * SLICE);
        let adopt = |f: &crate::study::Frame| {
            let origin = Origin { path: f.meta.path.clone(), frame_index: 0, width: f.width, height: f.height };
            cache.adopt((*f.samples().unwrap()).clone(), origin)
        };
        let pixels: Vec<Pixels> = whole.frames.iter().map(adopt).collect();
        assert_eq!(cache.resident_bytes(), 2 * SLICE);
        assert!(!pixels[0].is_resident() && pixels[1].is_resident() && pixels[2].is_resident(), "the least recently used goes");
        assert!(pixels[0].peek().is_none(), "evicted: not in memory, and peeking does not decode");
        let back = pixels[0].get().unwrap();
        let Samples::Gray(v) = &*back else { panic!("grey expected") };
        assert_eq!(v, &values(&whole.frames[0]));
        assert!(!pixels[1].is_resident(), "slice 1 was the least recently used then");
        assert_eq!(cache.resident_bytes(), 2 * SLICE);
        std::fs::remove_file(&whole.frames[1].meta.path).unwrap();
        let err = pixels[1].get().unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        assert!(matches!(pixels[1].peek(), Some(Err(_))), "the failure is kept for the pane to show");
        drop(pixels);
        assert_eq!(cache.resident_bytes(), 0);
    }

    #[test]
    fn the_prefetch_goes_ahead_of_the_scroll_then_behind() {
        assert_eq!(prefetch_order(5, 10, true, (3, 1)), [5, 6, 4, 7, 8]);
        assert_eq!(prefetch_order(5, 10, false, (3, 1)), [5, 4, 6, 3, 2]);
        assert_eq!(prefetch_order(9, 10, true, (3, 1)), [9, 8]);
        assert_eq!(prefetch_order(0, 10, false, (2, 1)), [0, 1]);
        let cache = PixelCache::new(40 << 20);
        assert_eq!(prefetch_span(&cache, 1 << 20), (10, 3));
        assert_eq!(prefetch_span(&PixelCache::new(1 << 30), 1 << 20), (32, 10));
    }
}
