//! Safe wrapper around the C OpenJPEG library: decodes an in-memory JPEG 2000 codestream (raw J2K or JP2) on several threads.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Mutex;

// The pure-Rust `openjp2` crate (dicom-pixeldata's `openjp2` feature) exports `#[no_mangle]` functions with these same
// `opj_*` names; if both are linked, every call below silently binds to that Rust port instead of the C library.
use openjpeg_sys as opj;

/// SOC marker followed by SIZ: the start of every raw J2K codestream.
const J2K_MAGIC: [u8; 4] = [0xFF, 0x4F, 0xFF, 0x51];
/// The 12-byte JP2 signature box ("jP  \r\n\x87\n").
const JP2_MAGIC: [u8; 12] = [0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50, 0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A];
/// Upper bound on `width * height * components`, checked before OpenJPEG allocates, so a corrupt SIZ cannot force huge allocations.
const MAX_SAMPLES: usize = 1 << 28;
/// More threads than this gains little for one frame and costs thread start-up per decode.
const MAX_THREADS: usize = 8;
/// OpenJPEG's internal read buffer; small frames get a smaller one.
const STREAM_CHUNK: usize = opj::OPJ_J2K_STREAM_CHUNK_SIZE as usize;
/// Tiles smaller than this (in pixels) decode faster on one thread: OpenJPEG hands work to its pool per tile and per
/// wavelet level, and below about 192x192 those hand-offs cost more than they save (measured on 2 cores).
const MIN_THREADED_TILE_PIXELS: u64 = 1 << 15;
/// Keep at most this many OpenJPEG error lines for the returned error (it often repeats itself while unwinding).
const MAX_ERROR_LINES: usize = 4;

/// A decoded image: interleaved component samples (after OpenJPEG's inverse RCT/ICT), row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct J2kImage {
    pub width: usize,
    pub height: usize,
    pub components: usize,
    /// Bits per sample as stated by the codestream (identical for all components).
    pub precision: u32,
    /// Whether the codestream declares the samples signed; the DICOM Pixel Representation may disagree.
    pub signed: bool,
    /// `width * height * components` values, pixel-major (`[y][x][c]`).
    pub samples: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum J2kError {
    #[error("not a JPEG 2000 codestream (no J2K SOC/SIZ markers or JP2 signature)")]
    NotJpeg2000,
    #[error("JPEG 2000 codestream is truncated (it ends inside a marker segment)")]
    Truncated,
    #[error("OpenJPEG failed to {stage}: {message}")]
    OpenJpeg { stage: &'static str, message: String },
    #[error("malformed JPEG 2000 image: {0}")]
    Malformed(String),
    #[error("unsupported JPEG 2000 image: {0}")]
    Unsupported(String),
    #[error("JPEG 2000 image is too large ({0} samples)")]
    TooLarge(u64),
}

/// Decodes a J2K or JP2 stream using up to [`default_threads`] threads.
pub fn decode(codestream: &[u8]) -> Result<J2kImage, J2kError> {
    decode_with_threads(codestream, default_threads())
}

/// Threads used by [`decode`]: the available parallelism, capped at 8.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(MAX_THREADS)
}

/// Decodes with at most `threads` threads; 0 or 1, or small tiles, decode on the calling thread only.
pub fn decode_with_threads(codestream: &[u8], threads: usize) -> Result<J2kImage, J2kError> {
    let format = if codestream.starts_with(&J2K_MAGIC) {
        opj::CODEC_FORMAT::OPJ_CODEC_J2K
    } else if codestream.starts_with(&JP2_MAGIC) {
        opj::CODEC_FORMAT::OPJ_CODEC_JP2
    } else {
        return Err(J2kError::NotJpeg2000);
    };
    if ends_after_marker(codestream) {
        return Err(J2kError::Truncated);
    }

    // Declaration order matters: locals drop in reverse, so the image, stream and codec are destroyed
    // before `source` and `messages`, which their callbacks point into.
    let messages = Messages::default();
    let mut source = Source { data: codestream, pos: 0 };

    // SAFETY: plain constructor; a null result is handled by the guard check below.
    let codec = Codec(unsafe { opj::opj_create_decompress(format) });
    if codec.0.is_null() {
        return Err(messages.error("create the decoder"));
    }
    let user = (&raw const messages).cast_mut().cast::<c_void>();
    // SAFETY: `codec` is valid; `messages` outlives the codec (see declaration order) and the callbacks only take `&Messages`.
    let handlers_ok = unsafe {
        opj::opj_set_info_handler(codec.0, Some(on_info), user) != 0
            && opj::opj_set_warning_handler(codec.0, Some(on_warning), user) != 0
            && opj::opj_set_error_handler(codec.0, Some(on_error), user) != 0
    };
    if !handlers_ok {
        return Err(messages.error("install message handlers"));
    }

    let mut params = MaybeUninit::<opj::opj_dparameters_t>::zeroed();
    // SAFETY: the struct holds only integers and char arrays, so all-zero is a valid value; OpenJPEG then fills in defaults.
    let mut params = unsafe {
        opj::opj_set_default_decoder_parameters(params.as_mut_ptr());
        params.assume_init()
    };
    // SAFETY: `codec` is valid and `params` is an initialised parameter block that OpenJPEG only reads.
    if unsafe { opj::opj_setup_decoder(codec.0, &raw mut params) } == 0 {
        return Err(messages.error("set up the decoder"));
    }
    let small_tiles = largest_tile_pixels(codestream).is_some_and(|p| p < MIN_THREADED_TILE_PIXELS);
    set_threads(&codec, if small_tiles { 1 } else { threads });

    // SAFETY: plain constructor (1 = input stream); null is checked below.
    let stream = Stream(unsafe { opj::opj_stream_create(codestream.len().clamp(1, STREAM_CHUNK), 1) });
    if stream.0.is_null() {
        return Err(messages.error("create the input stream"));
    }
    let source_ptr = (&raw mut source).cast::<c_void>();
    // SAFETY: `stream` is valid; `source` outlives it (declaration order) and is only touched through this pointer
    // from here on. No free function: `source` lives on our stack.
    unsafe {
        opj::opj_stream_set_read_function(stream.0, Some(read_fn));
        opj::opj_stream_set_skip_function(stream.0, Some(skip_fn));
        opj::opj_stream_set_seek_function(stream.0, Some(seek_fn));
        opj::opj_stream_set_user_data(stream.0, source_ptr, None);
        opj::opj_stream_set_user_data_length(stream.0, codestream.len() as u64);
    }

    let mut raw_image: *mut opj::opj_image_t = ptr::null_mut();
    // SAFETY: codec and stream are valid; OpenJPEG writes a freshly allocated image (or nothing) to `raw_image`.
    let header_ok = unsafe { opj::opj_read_header(stream.0, codec.0, &raw mut raw_image) } != 0;
    let image = Image(raw_image);
    if !header_ok || image.0.is_null() {
        return Err(messages.error("read the header"));
    }
    check_header(&image)?;

    // SAFETY: all three handles are valid and belong together; OpenJPEG joins its worker jobs before returning.
    if unsafe { opj::opj_decode(codec.0, stream.0, image.0) } == 0 {
        return Err(messages.error("decode the image"));
    }
    // SAFETY: as above; reads whatever follows the last tile (EOC, trailing JP2 boxes).
    if unsafe { opj::opj_end_decompress(codec.0, stream.0) } == 0 {
        return Err(messages.error("finish decoding"));
    }
    collect(&image)
}

/// True when the data stops right after a marker code other than EOC (ignoring 0x00/0xFF padding). OpenJPEG takes a
/// marker followed by end of data as the end of the codestream and silently leaves the remaining tiles blank; entropy
/// coded data never holds 0xFF followed by a byte >= 0x90, so such an ending can only be a cut-off marker segment.
fn ends_after_marker(data: &[u8]) -> bool {
    let end = data.iter().rposition(|&b| b != 0x00 && b != 0xFF).map_or(0, |i| i + 1);
    matches!(data[..end], [.., 0xFF, b] if b >= 0x90 && b != 0xD9)
}

/// Pixels in the largest tile according to the SIZ segment; `None` if it cannot be read (OpenJPEG then reports why).
fn largest_tile_pixels(data: &[u8]) -> Option<u64> {
    let cs = j2k_codestream(data)?;
    if !cs.starts_with(&J2K_MAGIC) {
        return None;
    }
    // SIZ after SOC, SIZ marker, Lsiz and Rsiz: Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz.
    let field = |i: usize| be_u32(cs, 8 + 4 * i).map(u64::from);
    let (x1, y1, x0, y0) = (field(0)?, field(1)?, field(2)?, field(3)?);
    let (tile_w, tile_h) = (field(4)?, field(5)?);
    Some(tile_w.min(x1.saturating_sub(x0)) * tile_h.min(y1.saturating_sub(y0)))
}

/// Image width and height according to the SIZ segment, read before OpenJPEG allocates.
pub fn declared_size(data: &[u8]) -> Option<(u64, u64)> {
    let cs = j2k_codestream(data)?;
    if !cs.starts_with(&J2K_MAGIC) {
        return None;
    }
    let field = |i: usize| be_u32(cs, 8 + 4 * i).map(u64::from);
    let (x1, y1, x0, y0) = (field(0)?, field(1)?, field(2)?, field(3)?);
    Some((x1.saturating_sub(x0), y1.saturating_sub(y0)))
}

/// The raw codestream: the data itself for J2K, the contents of the `jp2c` box for JP2 (possibly cut short).
fn j2k_codestream(data: &[u8]) -> Option<&[u8]> {
    if data.starts_with(&J2K_MAGIC) {
        return Some(data);
    }
    let mut rest = data;
    while rest.len() >= 8 {
        let kind = rest.get(4..8)?;
        // Box length 1: a 64-bit length follows the type; 0: the box runs to the end of the data.
        let (header, size) = match be_u32(rest, 0)? {
            0 => (8, rest.len()),
            1 => (16, usize::try_from(u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?)).ok()?),
            n => (8, usize::try_from(n).ok()?),
        };
        if size < header {
            return None;
        }
        if kind == b"jp2c" {
            return rest.get(header..size.min(rest.len()));
        }
        rest = rest.get(size..)?;
    }
    None
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Configures OpenJPEG's worker pool; always called so the `OPJ_NUM_THREADS` environment variable has no say.
fn set_threads(codec: &Codec, threads: usize) {
    // SAFETY: pure query of a compile-time property.
    if unsafe { opj::opj_has_thread_support() } == 0 {
        return;
    }
    // A one-thread pool would hand every job to a single worker; 0 runs jobs inline instead.
    let n = if threads <= 1 { 0 } else { c_int::try_from(threads.min(MAX_THREADS)).unwrap_or(0) };
    // SAFETY: `codec` is valid and set up, and no header has been read yet, as OpenJPEG requires.
    if unsafe { opj::opj_codec_set_threads(codec.0, n) } == 0 {
        // Not fatal: OpenJPEG falls back to decoding on the calling thread.
        log::debug!("OpenJPEG refused {n} threads; decoding single-threaded");
    }
}

/// Rejects geometry we cannot return before OpenJPEG allocates and decodes anything.
fn check_header(image: &Image) -> Result<(), J2kError> {
    // SAFETY: `image` came from a successful opj_read_header and is non-null.
    let img = unsafe { &*image.0 };
    let comps = components(img)?;
    let (width, height) = image_size(img)?;
    let total = (width as u64) * (height as u64) * (comps.len() as u64);
    if total > MAX_SAMPLES as u64 {
        return Err(J2kError::TooLarge(total));
    }
    if comps.iter().any(|c| c.dx != 1 || c.dy != 1) {
        return Err(J2kError::Unsupported("subsampled components".into()));
    }
    Ok(())
}

/// Validates the decoded components and interleaves them into pixel-major order.
fn collect(image: &Image) -> Result<J2kImage, J2kError> {
    // SAFETY: `image` is non-null and was filled by a successful opj_decode; nothing else references it now.
    let img = unsafe { &*image.0 };
    // Re-read everything: JP2 palette/channel boxes may change the component list during decoding.
    let comps = components(img)?;
    let (width, height) = image_size(img)?;
    let Some(first) = comps.first() else { return Err(J2kError::Malformed("no image components".into())) };
    if !(1..=31).contains(&first.prec) {
        return Err(J2kError::Unsupported(format!("{}-bit samples", first.prec)));
    }
    let pixels = width
        .checked_mul(height)
        .filter(|&n| n.saturating_mul(comps.len()) <= MAX_SAMPLES)
        .ok_or(J2kError::TooLarge(width as u64 * height as u64 * comps.len() as u64))?;
    let mut planes = Vec::with_capacity(comps.len());
    for (i, c) in comps.iter().enumerate() {
        if c.dx != 1 || c.dy != 1 || c.w as usize != width || c.h as usize != height || c.factor != 0 {
            return Err(J2kError::Unsupported(format!(
                "component {i} is {}x{} (step {}x{}), image is {width}x{height}",
                c.w, c.h, c.dx, c.dy
            )));
        }
        if c.prec != first.prec || c.sgnd != first.sgnd {
            return Err(J2kError::Unsupported("components differ in precision or signedness".into()));
        }
        if c.data.is_null() {
            return Err(J2kError::Malformed(format!("component {i} has no decoded data")));
        }
        // SAFETY: OpenJPEG allocates `w * h` samples per component (checked equal to `pixels` above), the pointer is
        // non-null, and the buffer lives as long as `image`, which outlives this borrow.
        planes.push(unsafe { std::slice::from_raw_parts(c.data.cast_const(), pixels) });
    }

    let samples = match planes.as_slice() {
        [plane] => plane.to_vec(),
        _ => {
            let n = planes.len();
            let mut out = vec![0i32; pixels * n];
            for (c, plane) in planes.iter().enumerate() {
                for (dst, &s) in out[c..].iter_mut().step_by(n).zip(plane.iter()) {
                    *dst = s;
                }
            }
            out
        }
    };
    Ok(J2kImage { width, height, components: comps.len(), precision: first.prec, signed: first.sgnd != 0, samples })
}

/// The component array of an image, checked non-empty and non-null.
fn components(img: &opj::opj_image_t) -> Result<&[opj::opj_image_comp_t], J2kError> {
    if img.numcomps == 0 || img.comps.is_null() {
        return Err(J2kError::Malformed("no image components".into()));
    }
    // SAFETY: OpenJPEG allocates `numcomps` entries for a non-null `comps`; they live as long as `img`.
    Ok(unsafe { std::slice::from_raw_parts(img.comps, img.numcomps as usize) })
}

/// Image width and height from the reference grid, rejecting empty or inverted areas.
fn image_size(img: &opj::opj_image_t) -> Result<(usize, usize), J2kError> {
    let width = img.x1.checked_sub(img.x0).filter(|&w| w > 0);
    let height = img.y1.checked_sub(img.y0).filter(|&h| h > 0);
    match (width, height) {
        (Some(w), Some(h)) => Ok((w as usize, h as usize)),
        _ => Err(J2kError::Malformed(format!("empty image area {}..{} x {}..{}", img.x0, img.x1, img.y0, img.y1))),
    }
}

/// Destroys the codec (joining its worker threads) on drop.
struct Codec(*mut opj::opj_codec_t);

impl Drop for Codec {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by opj_create_decompress and destroyed exactly once, here.
            unsafe { opj::opj_destroy_codec(self.0) };
        }
    }
}

struct Stream(*mut opj::opj_stream_t);

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by opj_stream_create and destroyed exactly once; it has no user-data free function.
            unsafe { opj::opj_stream_destroy(self.0) };
        }
    }
}

struct Image(*mut opj::opj_image_t);

impl Drop for Image {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: returned by opj_read_header, owned by us, destroyed exactly once.
            unsafe { opj::opj_image_destroy(self.0) };
        }
    }
}

/// Error lines reported by OpenJPEG. A mutex because worker threads may report (serialised by OpenJPEG's own lock).
#[derive(Default)]
struct Messages {
    errors: Mutex<Vec<String>>,
}

impl Messages {
    fn error(&self, stage: &'static str) -> J2kError {
        let lines = self.errors.lock().map(|e| e.join("; ")).unwrap_or_default();
        let message = if lines.is_empty() { "no details given".to_owned() } else { lines };
        J2kError::OpenJpeg { stage, message }
    }
}

/// Turns OpenJPEG's message into a trimmed Rust string; `None` for a null pointer.
///
/// # Safety
/// `msg` must be null or a NUL-terminated string valid for the duration of the call.
unsafe fn message_text(msg: *const c_char) -> Option<String> {
    if msg.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract (OpenJPEG formats into a local buffer).
    let text = unsafe { CStr::from_ptr(msg) };
    Some(text.to_string_lossy().trim_end().to_owned())
}

unsafe extern "C" fn on_info(msg: *const c_char, _user: *mut c_void) {
    // SAFETY: OpenJPEG passes a NUL-terminated message.
    if let Some(text) = unsafe { message_text(msg) } {
        log::trace!(target: "openjpeg", "{text}");
    }
}

unsafe extern "C" fn on_warning(msg: *const c_char, _user: *mut c_void) {
    // SAFETY: OpenJPEG passes a NUL-terminated message.
    if let Some(text) = unsafe { message_text(msg) } {
        // Debug, not warn: OpenJPEG warns about harmless quirks common in DICOM encoders.
        log::debug!(target: "openjpeg", "{text}");
    }
}

unsafe extern "C" fn on_error(msg: *const c_char, user: *mut c_void) {
    // SAFETY: OpenJPEG passes a NUL-terminated message.
    let Some(text) = (unsafe { message_text(msg) }) else { return };
    log::debug!(target: "openjpeg", "error: {text}");
    if user.is_null() {
        return;
    }
    // SAFETY: `user` is the `&Messages` registered in `decode_with_threads`, alive until the codec is destroyed.
    let messages = unsafe { &*user.cast_const().cast::<Messages>() };
    if let Ok(mut errors) = messages.errors.lock()
        && errors.len() < MAX_ERROR_LINES
    {
        errors.push(text);
    }
}

/// The in-memory input behind an OpenJPEG stream. Invariant: `pos <= data.len()`.
struct Source<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Recovers the `Source` behind a stream callback's user data.
///
/// # Safety
/// `user` must be the pointer registered with opj_stream_set_user_data, whose `Source` is alive and not otherwise
/// borrowed. OpenJPEG only calls stream functions from the thread driving the codec, one at a time.
unsafe fn source<'s>(user: *mut c_void) -> &'s mut Source<'s> {
    // SAFETY: per this function's contract.
    unsafe { &mut *user.cast::<Source<'s>>() }
}

/// OpenJPEG's read callback: copy up to `n` bytes, or return `(size_t)-1` at end of data.
unsafe extern "C" fn read_fn(buf: *mut c_void, n: usize, user: *mut c_void) -> usize {
    // SAFETY: registered with this stream's own `Source`.
    let src = unsafe { source(user) };
    let rest = src.data.get(src.pos..).unwrap_or_default();
    if rest.is_empty() || buf.is_null() {
        return usize::MAX;
    }
    let k = n.min(rest.len());
    // SAFETY: OpenJPEG's buffer holds at least `n >= k` bytes and cannot overlap our borrowed input.
    unsafe { ptr::copy_nonoverlapping(rest.as_ptr(), buf.cast::<u8>(), k) };
    src.pos += k;
    k
}

/// OpenJPEG's skip callback: move by `n` (clamped to the data), returning the distance moved or -1 if none.
unsafe extern "C" fn skip_fn(n: i64, user: *mut c_void) -> i64 {
    // SAFETY: registered with this stream's own `Source`.
    let src = unsafe { source(user) };
    // Slices never exceed isize::MAX bytes, so these conversions cannot fail.
    let (Ok(len), Ok(pos)) = (i64::try_from(src.data.len()), i64::try_from(src.pos)) else { return -1 };
    let target = pos.saturating_add(n).clamp(0, len);
    // OpenJPEG loops until the skip is done, so reporting 0 would spin forever.
    if target == pos && n != 0 {
        return -1;
    }
    // `target` lies in 0..=len, so it converts back.
    src.pos = usize::try_from(target).unwrap_or(src.data.len());
    target - pos
}

/// OpenJPEG's seek callback: absolute position, failing outside the data.
unsafe extern "C" fn seek_fn(n: i64, user: *mut c_void) -> opj::OPJ_BOOL {
    // SAFETY: registered with this stream's own `Source`.
    let src = unsafe { source(user) };
    match usize::try_from(n) {
        Ok(p) if p <= src.data.len() => {
            src.pos = p;
            1
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_threaded_c_openjpeg() {
        // Fails when the `openjp2` crate's same-named symbols shadow the C library (its version reports no threads).
        // SAFETY: pure query.
        assert_eq!(unsafe { opj::opj_has_thread_support() }, 1, "opj_* symbols do not resolve to threaded C OpenJPEG");
    }

    #[test]
    fn rejects_non_jpeg2000() {
        assert_eq!(decode(b""), Err(J2kError::NotJpeg2000));
        assert_eq!(decode(&[0xFF, 0xD8, 0xFF, 0xE0]), Err(J2kError::NotJpeg2000));
    }

    #[test]
    fn truncated_headers_fail_cleanly() {
        assert!(decode(&J2K_MAGIC).is_err());
        assert!(decode(&JP2_MAGIC).is_err());
        let mut siz = J2K_MAGIC.to_vec();
        siz.extend_from_slice(&[0x00, 0x29, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00]);
        assert!(decode(&siz).is_err());
    }

    #[test]
    fn reads_tile_size_from_j2k_and_jp2() {
        // SOC, SIZ, Lsiz, Rsiz, then a 1000x800 image in 256x256 tiles.
        let mut cs = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        for v in [1000u32, 800, 0, 0, 256, 256, 0, 0] {
            cs.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(largest_tile_pixels(&cs), Some(256 * 256));
        let mut jp2 = JP2_MAGIC.to_vec();
        jp2.extend_from_slice(&[0, 0, 0, 12, b'f', b't', b'y', b'p', 0, 0, 0, 0]);
        jp2.extend_from_slice(&(8 + cs.len() as u32).to_be_bytes());
        jp2.extend_from_slice(b"jp2c");
        jp2.extend_from_slice(&cs);
        assert_eq!(largest_tile_pixels(&jp2), Some(256 * 256));
        assert_eq!(largest_tile_pixels(&jp2[..jp2.len() - 20]), None);
        assert_eq!(largest_tile_pixels(&[0, 0, 0, 1, b'j', b'p', b'2', b'c']), None);
    }

    #[test]
    fn detects_cut_after_marker() {
        assert!(ends_after_marker(&[0x12, 0xFF, 0x90]));
        assert!(ends_after_marker(&[0x12, 0xFF, 0x90, 0x00]));
        assert!(ends_after_marker(&[0x12, 0xFF, 0x90, 0xFF]));
        assert!(!ends_after_marker(&[0x12, 0xFF, 0xD9, 0x00]));
        assert!(!ends_after_marker(&[0x12, 0xFF, 0xD9, 0xFF]));
        assert!(!ends_after_marker(&[0x12, 0xFF, 0x00]));
        assert!(!ends_after_marker(&[]));
    }
}
