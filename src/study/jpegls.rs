//! JPEG-LS decoding (ITU-T T.87): lossless and near-lossless, 2–16 bits, one or more
//! components in separate scans or line-interleaved, in pure Rust so that building Tandem needs
//! no C++ toolchain or cmake.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JlsError(pub String);

impl fmt::Display for JlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JPEG-LS: {}", self.0)
    }
}

impl std::error::Error for JlsError {}

fn err<T>(msg: impl Into<String>) -> Result<T, JlsError> {
    Err(JlsError(msg.into()))
}

/// The frame header (SOF55): what the stream says it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub width: usize,
    pub height: usize,
    pub components: usize,
    pub precision: u32,
}

/// Decoded samples, interleaved by pixel.
#[derive(Clone, Debug)]
pub struct JlsImage {
    pub info: FrameInfo,
    pub samples: Vec<u16>,
}

/// Preset coding parameters (LSE id 1); zero means "the default".
#[derive(Clone, Copy, Debug, Default)]
struct Presets {
    maxval: i32,
    t1: i32,
    t2: i32,
    t3: i32,
    reset: i32,
}

struct Scan {
    /// Indices of the frame components this scan codes.
    components: Vec<usize>,
    near: i32,
    interleave: u8,
    /// Entropy-coded bytes, up to the next marker.
    data: std::ops::Range<usize>,
}

/// Reads the frame header alone, so a caller can check the size before anything is allocated.
pub fn frame_info(data: &[u8]) -> Result<FrameInfo, JlsError> {
    parse(data).map(|(info, _, _)| info)
}

fn be16(data: &[u8], at: usize) -> Result<usize, JlsError> {
    match data.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]]) as usize),
        None => err("the stream ends inside a marker segment"),
    }
}

fn parse(data: &[u8]) -> Result<(FrameInfo, Presets, Vec<Scan>), JlsError> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return err("the stream does not start with SOI");
    }
    let mut frame: Option<(FrameInfo, Vec<u8>)> = None;
    let mut presets = Presets::default();
    let mut scans = Vec::new();
    let mut pos = 2;
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while data.get(pos) == Some(&0xFF) && data.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if pos + 2 > data.len() {
            break;
        }
        if data[pos] != 0xFF {
            return err(format!("expected a marker at byte {pos}"));
        }
        let marker = data[pos + 1];
        pos += 2;
        if marker == 0xD9 {
            break;
        }
        let len = be16(data, pos)?;
        if len < 2 || pos + len > data.len() {
            return err(format!("marker segment FF{marker:02X} runs past the end of the stream"));
        }
        let body = &data[pos + 2..pos + len];
        pos += len;
        match marker {
            0xF7 => {
                if body.len() < 6 {
                    return err("frame header too short");
                }
                let precision = body[0] as u32;
                let height = be16(body, 1)?;
                let width = be16(body, 3)?;
                let n = body[5] as usize;
                if !(2..=16).contains(&precision) || width == 0 || height == 0 || n == 0 || body.len() < 6 + 3 * n {
                    return err(format!("invalid frame header ({width}×{height}, {n} components, {precision} bits)"));
                }
                let ids = (0..n).map(|c| body[6 + 3 * c]).collect();
                frame = Some((FrameInfo { width, height, components: n, precision }, ids));
            }
            0xC0..=0xCF | 0xF9 if marker != 0xC4 && marker != 0xC8 && marker != 0xCC => {
                return err("the stream is plain JPEG, not JPEG-LS");
            }
            0xF8 => match body.first() {
                Some(1) if body.len() >= 11 => {
                    presets = Presets {
                        maxval: be16(body, 1)? as i32,
                        t1: be16(body, 3)? as i32,
                        t2: be16(body, 5)? as i32,
                        t3: be16(body, 7)? as i32,
                        reset: be16(body, 9)? as i32,
                    };
                }
                Some(id) => return err(format!("preset parameters of kind {id} (mapping tables) are not supported")),
                None => return err("empty preset parameter segment"),
            },
            0xDD if be16(body, 0).unwrap_or(0) != 0 => return err("restart intervals are not supported"),
            0xDA => {
                let Some((_, ids)) = &frame else { return err("a scan comes before the frame header") };
                let ns = *body.first().unwrap_or(&0) as usize;
                if ns == 0 || body.len() < 1 + 2 * ns + 3 {
                    return err("invalid scan header");
                }
                let mut components = Vec::with_capacity(ns);
                for c in 0..ns {
                    let id = body[1 + 2 * c];
                    let Some(idx) = ids.iter().position(|&i| i == id) else {
                        return err(format!("the scan names component {id}, which the frame lacks"));
                    };
                    components.push(idx);
                }
                let near = body[1 + 2 * ns] as i32;
                let interleave = body[2 + 2 * ns];
                let point_transform = body[3 + 2 * ns] & 0x0F;
                if point_transform != 0 {
                    return err("point transforms are not supported");
                }
                if interleave > 2 || (ns > 1 && interleave == 0) {
                    return err(format!("invalid interleave mode {interleave} for {ns} components"));
                }
                if interleave == 2 && ns > 1 {
                    return err("sample-interleaved colour is not supported");
                }
                // A 0xFF followed by a byte with its top bit set is the next marker: inside
                // the scan every 0xFF is followed by a stuffed zero bit.
                let start = pos;
                let mut end = start;
                while end + 1 < data.len() && !(data[end] == 0xFF && data[end + 1] >= 0x80) {
                    end += 1;
                }
                if end + 1 >= data.len() {
                    end = data.len();
                }
                scans.push(Scan { components, near, interleave, data: start..end });
                pos = end;
            }
            _ => {} // APPn, COM and others carry nothing the decoder needs.
        }
    }
    let Some((info, _)) = frame else { return err("no frame header (SOF55)") };
    if scans.is_empty() {
        return err("no scan");
    }
    Ok((info, presets, scans))
}

/// Decodes a JPEG-LS stream whose frame must be `expected` (checked before allocating).
pub fn decode(data: &[u8], expected: FrameInfo) -> Result<JlsImage, JlsError> {
    let (info, presets, scans) = parse(data)?;
    if (info.width, info.height, info.components) != (expected.width, expected.height, expected.components) {
        return err(format!(
            "the stream holds {}×{}×{}, the header says {}×{}×{}",
            info.width, info.height, info.components, expected.width, expected.height, expected.components
        ));
    }
    let mut samples = vec![0u16; info.width * info.height * info.components];
    let mut coded = vec![false; info.components];
    for scan in &scans {
        let params = Params::new(info.precision, presets, scan.near)?;
        let mut decoder = ScanDecoder::new(&data[scan.data.clone()], params);
        decoder.decode(&mut samples, info, &scan.components, scan.interleave)?;
        for &c in &scan.components {
            coded[c] = true;
        }
    }
    if coded.iter().any(|c| !c) {
        return err("a component has no scan");
    }
    Ok(JlsImage { info, samples })
}

/// Coding parameters derived from the frame, presets and scan (T.87 A.2, C.2.4.1.1).
#[derive(Clone, Copy, Debug)]
struct Params {
    maxval: i32,
    near: i32,
    range: i32,
    qbpp: i32,
    limit: i32,
    t1: i32,
    t2: i32,
    t3: i32,
    reset: i32,
}

impl Params {
    fn new(precision: u32, p: Presets, near: i32) -> Result<Params, JlsError> {
        let maxval = if p.maxval > 0 { p.maxval } else { (1 << precision) - 1 };
        if near > (maxval / 2).min(255) {
            return err(format!("NEAR {near} is out of range"));
        }
        let range = (maxval + 2 * near) / (2 * near + 1) + 1;
        let bits = |v: i32| 32 - ((v - 1).max(1) as u32).leading_zeros() as i32;
        let qbpp = bits(range);
        let bpp = bits(maxval + 1).max(2);
        let limit = 2 * (bpp + bpp.max(8));
        let clamp = |i: i32, j: i32| if i > maxval || i < j { j } else { i };
        let (d1, d2, d3) = if maxval >= 128 {
            let factor = (maxval.min(4095) + 128) / 256;
            // BASIC_T1 − 2 is 1: the factor itself.
            let t1 = clamp(factor + 2 + 3 * near, near + 1);
            let t2 = clamp(factor * (7 - 3) + 3 + 5 * near, t1);
            (t1, t2, clamp(factor * (21 - 4) + 4 + 7 * near, t2))
        } else {
            let factor = 256 / (maxval + 1);
            let t1 = clamp((3 / factor + 3 * near).max(2), near + 1);
            let t2 = clamp((7 / factor + 5 * near).max(3), t1);
            (t1, t2, clamp((21 / factor + 7 * near).max(4), t2))
        };
        let t1 = if p.t1 > 0 { p.t1 } else { d1 };
        let t2 = if p.t2 > 0 { p.t2 } else { d2 };
        let t3 = if p.t3 > 0 { p.t3 } else { d3 };
        if !(near < t1 && t1 <= t2 && t2 <= t3) {
            return err("inconsistent thresholds");
        }
        let reset = if p.reset > 0 { p.reset } else { 64 };
        if reset < 3 {
            return err("RESET below 3");
        }
        Ok(Params { maxval, near, range, qbpp, limit, t1, t2, t3, reset })
    }

    fn quantize(&self, d: i32) -> i32 {
        if d <= -self.t3 {
            -4
        } else if d <= -self.t2 {
            -3
        } else if d <= -self.t1 {
            -2
        } else if d < -self.near {
            -1
        } else if d <= self.near {
            0
        } else if d < self.t1 {
            1
        } else if d < self.t2 {
            2
        } else if d < self.t3 {
            3
        } else {
            4
        }
    }

    /// Modulo reduction and clamping of a reconstructed value (T.87 A.4.5).
    fn fix(&self, v: i32) -> i32 {
        let step = self.range * (2 * self.near + 1);
        let v = if v < -self.near {
            v + step
        } else if v > self.maxval + self.near {
            v - step
        } else {
            v
        };
        v.clamp(0, self.maxval)
    }
}

/// Run lengths by RUNindex (T.87 A.7.1.2).
const J: [u32; 32] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15];

#[derive(Clone, Copy)]
struct Context {
    a: i32,
    b: i32,
    c: i32,
    n: i32,
}

#[derive(Clone, Copy)]
struct RunContext {
    a: i32,
    n: i32,
    nn: i32,
}

/// Reads bits MSB first, dropping the zero bit stuffed after every 0xFF.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    cache: u64,
    bits: u32,
    after_ff: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0, cache: 0, bits: 0, after_ff: false }
    }

    fn fill(&mut self) {
        while self.bits <= 56 {
            let Some(&byte) = self.data.get(self.pos) else {
                // Past the end: zeros, so a truncated stream ends in an error or garbage, not a hang.
                self.bits += 8;
                self.pos += 1;
                continue;
            };
            self.pos += 1;
            if self.after_ff {
                self.cache |= ((byte & 0x7F) as u64) << (57 - self.bits);
                self.bits += 7;
            } else {
                self.cache |= (byte as u64) << (56 - self.bits);
                self.bits += 8;
            }
            self.after_ff = byte == 0xFF;
        }
    }

    fn overrun(&self) -> bool {
        self.pos > self.data.len() + 16
    }

    fn read(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        if self.bits < n {
            self.fill();
        }
        let v = (self.cache >> (64 - n)) as i32;
        self.cache <<= n;
        self.bits -= n;
        v
    }

    fn bit(&mut self) -> bool {
        self.read(1) == 1
    }

    /// Zeros before the next one bit (the one is consumed); capped so corrupt data cannot loop.
    fn unary(&mut self, cap: i32) -> Result<i32, JlsError> {
        let mut count = 0;
        loop {
            if self.bits == 0 {
                self.fill();
            }
            let zeros = self.cache.leading_zeros().min(self.bits);
            if zeros < self.bits {
                count += zeros as i32;
                self.cache <<= zeros + 1;
                self.bits -= zeros + 1;
                return Ok(count);
            }
            count += self.bits as i32;
            self.cache = 0;
            self.bits = 0;
            if count > cap || self.overrun() {
                return err("invalid Golomb code");
            }
        }
    }
}

/// The smallest k with `n << k >= a` (T.87 A.5.1).
fn golomb_k(n: i32, a: i32) -> Result<u32, JlsError> {
    if n >= a {
        return Ok(0);
    }
    // n ≥ 1 and a < 2^31: start from the difference of their bit lengths, off by at most one.
    let mut k = (31 - a.leading_zeros()).saturating_sub(31 - n.leading_zeros());
    while (n as i64) << k < a as i64 {
        k += 1;
    }
    if k > 24 { err("corrupt context") } else { Ok(k) }
}

struct ScanDecoder<'a> {
    bits: BitReader<'a>,
    p: Params,
    contexts: Vec<Context>,
    run: [RunContext; 2],
    /// Quantized gradient of every possible difference, indexed by `d + maxval`.
    quantized: Vec<i8>,
}

impl<'a> ScanDecoder<'a> {
    fn new(data: &'a [u8], p: Params) -> Self {
        let a = ((p.range + 32) / 64).max(2);
        ScanDecoder {
            bits: BitReader::new(data),
            p,
            contexts: vec![Context { a, b: 0, c: 0, n: 1 }; 365],
            run: [RunContext { a, n: 1, nn: 0 }; 2],
            quantized: (-p.maxval..=p.maxval).map(|d| p.quantize(d) as i8).collect(),
        }
    }

    /// Decodes this scan's components into `out` (interleaved by pixel, `info.components` wide).
    fn decode(&mut self, out: &mut [u16], info: FrameInfo, comps: &[usize], _interleave: u8) -> Result<(), JlsError> {
        let w = info.width;
        // Per component: previous and current line with one border sample on each side.
        let mut prev = vec![vec![0i32; w + 2]; comps.len()];
        let mut cur = vec![vec![0i32; w + 2]; comps.len()];
        let mut run_index = vec![0usize; comps.len()];
        for y in 0..info.height {
            for (k, &c) in comps.iter().enumerate() {
                let (pl, cl) = (&mut prev[k], &mut cur[k]);
                pl[w + 1] = pl[w];
                cl[0] = pl[1];
                self.decode_line(pl, cl, w, &mut run_index[k])?;
                let row = &mut out[y * w * info.components..(y + 1) * w * info.components];
                for x in 0..w {
                    row[x * info.components + c] = cl[x + 1] as u16;
                }
                std::mem::swap(pl, cl);
            }
            if self.bits.overrun() {
                return err("the scan data ends early");
            }
        }
        Ok(())
    }

    fn decode_line(&mut self, pl: &[i32], cl: &mut [i32], w: usize, run_index: &mut usize) -> Result<(), JlsError> {
        let near = self.p.near;
        let mut x = 1;
        while x <= w {
            let (ra, rb, rc, rd) = (cl[x - 1], pl[x], pl[x - 1], pl[x + 1]);
            let (d1, d2, d3) = (rd - rb, rb - rc, rc - ra);
            if d1.abs() <= near && d2.abs() <= near && d3.abs() <= near {
                x += self.decode_run(pl, cl, x, w, run_index)?;
            } else {
                cl[x] = self.decode_regular(d1, d2, d3, ra, rb, rc)?;
                x += 1;
            }
        }
        Ok(())
    }

    fn decode_regular(&mut self, d1: i32, d2: i32, d3: i32, ra: i32, rb: i32, rc: i32) -> Result<i32, JlsError> {
        let p = self.p;
        let quant = |d: i32| self.quantized[(d + p.maxval) as usize] as i32;
        let (mut q1, mut q2, mut q3) = (quant(d1), quant(d2), quant(d3));
        let negative = q1 < 0 || (q1 == 0 && (q2 < 0 || (q2 == 0 && q3 < 0)));
        if negative {
            (q1, q2, q3) = (-q1, -q2, -q3);
        }
        let q = (81 * q1 + 9 * q2 + q3) as usize;
        let ctx = self.contexts[q];
        let predicted = if rc >= ra.max(rb) {
            ra.min(rb)
        } else if rc <= ra.min(rb) {
            ra.max(rb)
        } else {
            ra + rb - rc
        };
        let corrected = (if negative { predicted - ctx.c } else { predicted + ctx.c }).clamp(0, p.maxval);
        let k = golomb_k(ctx.n, ctx.a)?;
        let mapped = self.golomb(k, p.limit)?;
        let mut errval = if p.near == 0 && k == 0 && 2 * ctx.b <= -ctx.n {
            if mapped & 1 == 1 { (mapped - 1) / 2 } else { -(mapped / 2) - 1 }
        } else if mapped & 1 == 0 {
            mapped / 2
        } else {
            -((mapped + 1) / 2)
        };
        self.update(q, errval);
        if negative {
            errval = -errval;
        }
        Ok(p.fix(corrected + errval * (2 * p.near + 1)))
    }

    fn update(&mut self, q: usize, errval: i32) {
        let (near, reset) = (self.p.near, self.p.reset);
        let c = &mut self.contexts[q];
        c.b += errval * (2 * near + 1);
        c.a += errval.abs();
        if c.n == reset {
            c.a >>= 1;
            c.b >>= 1;
            c.n >>= 1;
        }
        c.n += 1;
        if c.b <= -c.n {
            c.b += c.n;
            if c.c > -128 {
                c.c -= 1;
            }
            if c.b <= -c.n {
                c.b = -c.n + 1;
            }
        } else if c.b > 0 {
            c.b -= c.n;
            if c.c < 127 {
                c.c += 1;
            }
            if c.b > 0 {
                c.b = 0;
            }
        }
    }

    /// Limited-length Golomb code (T.87 A.5.3).
    fn golomb(&mut self, k: u32, limit: i32) -> Result<i32, JlsError> {
        let high = self.bits.unary(limit)?;
        let escape = limit - (self.p.qbpp + 1);
        if high > escape {
            return err("invalid Golomb code");
        }
        if high == escape {
            return Ok(self.bits.read(self.p.qbpp as u32) + 1);
        }
        Ok((high << k) + self.bits.read(k))
    }

    /// A run of the sample left of `x`, then the sample that interrupts it; returns the samples decoded.
    fn decode_run(&mut self, pl: &[i32], cl: &mut [i32], x: usize, w: usize, run_index: &mut usize) -> Result<usize, JlsError> {
        let ra = cl[x - 1];
        let left = w + 1 - x;
        let mut count = 0;
        while self.bits.bit() {
            let step = (1usize << J[*run_index]).min(left - count);
            count += step;
            if step == 1 << J[*run_index] {
                *run_index = (*run_index + 1).min(31);
            }
            if count == left {
                break;
            }
            if self.bits.overrun() {
                return err("the scan data ends early");
            }
        }
        if count != left {
            count += self.bits.read(J[*run_index]) as usize;
        }
        if count > left {
            return err("a run passes the end of the line");
        }
        cl[x..x + count].fill(ra);
        if count == left {
            return Ok(count);
        }
        // Run interruption sample.
        let at = x + count;
        let rb = pl[at];
        let p = self.p;
        let ri_type = usize::from((ra - rb).abs() <= p.near);
        let ctx = self.run[ri_type];
        let temp = if ri_type == 0 { ctx.a } else { ctx.a + (ctx.n >> 1) };
        let k = golomb_k(ctx.n, temp)?;
        let mapped = self.golomb(k, p.limit - J[*run_index] as i32 - 1)?;
        let t = mapped + ri_type as i32;
        let map = t & 1 == 1;
        let magnitude = (t + i32::from(map)) / 2;
        let errval = if (k != 0 || 2 * ctx.nn >= ctx.n) == map { -magnitude } else { magnitude };
        let rc = &mut self.run[ri_type];
        if errval < 0 {
            rc.nn += 1;
        }
        rc.a += (mapped + 1 - ri_type as i32) >> 1;
        if rc.n == p.reset {
            rc.a >>= 1;
            rc.n >>= 1;
            rc.nn >>= 1;
        }
        rc.n += 1;
        let value = if ri_type == 1 {
            ra + errval * (2 * p.near + 1)
        } else {
            let sign = if rb < ra { -1 } else { 1 };
            rb + sign * errval * (2 * p.near + 1)
        };
        cl[at] = p.fix(value);
        *run_index = run_index.saturating_sub(1);
        Ok(count + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_match_the_standard_defaults() {
        // T.87 Table C.3: 8-bit lossless defaults are 3, 7, 21; 16-bit are 18, 67, 276.
        let p = Params::new(8, Presets::default(), 0).unwrap();
        assert_eq!((p.t1, p.t2, p.t3, p.range, p.qbpp, p.limit), (3, 7, 21, 256, 8, 32));
        let p = Params::new(16, Presets::default(), 0).unwrap();
        assert_eq!((p.t1, p.t2, p.t3), (18, 67, 276));
    }

    #[test]
    fn bad_streams_are_errors_not_panics() {
        assert!(frame_info(&[0xFF, 0xD8]).is_err());
        assert!(frame_info(&[0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x0B, 8, 0, 0, 0, 4, 1, 1, 0x11, 0]).is_err(), "zero height");
        let info = FrameInfo { width: 4, height: 4, components: 1, precision: 8 };
        let mut s = vec![0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x0B, 8, 0, 4, 0, 4, 1, 1, 0x11, 0];
        s.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0, 0]);
        s.extend_from_slice(&[0xFF; 3]);
        let _ = decode(&s, info);
        assert!(decode(&s, FrameInfo { width: 5, ..info }).is_err(), "size disagrees with the header");
    }
}
