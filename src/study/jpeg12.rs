//! Pure-Rust decoder for sequential-DCT Huffman JPEG (SOF0/SOF1) at 8- or 12-bit precision, returning raw component samples.

/// Upper bound on `width * height * components`, so header values cannot force huge allocations.
const MAX_SAMPLES: usize = 1 << 28;

/// Natural (row-major) position of each zigzag-ordered coefficient.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56,
    57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// A decoded image: interleaved raw component values (no colour conversion), row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jpeg12Image {
    pub width: usize,
    pub height: usize,
    pub components: usize,
    /// Sample precision in bits (8 or 12); samples lie in `0..2^precision`.
    pub precision: u8,
    pub samples: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Jpeg12Error {
    #[error("not a JPEG codestream (missing SOI marker)")]
    NotJpeg,
    #[error("JPEG codestream is truncated")]
    Truncated,
    #[error("malformed JPEG codestream: {0}")]
    Malformed(&'static str),
    #[error("unsupported JPEG feature: {0}")]
    Unsupported(String),
    #[error("scan is not sequential DCT (Ss={ss}, Se={se}, Ah={ah}, Al={al}; expected 0, 63, 0, 0)")]
    NotSequentialScan { ss: u8, se: u8, ah: u8, al: u8 },
}

type Result<T> = std::result::Result<T, Jpeg12Error>;

/// Decodes a complete JPEG codestream (SOI through EOI) exactly as pydicom's default
/// pylibjpeg-libjpeg backend does (for non-subsampled components).
pub fn decode(data: &[u8]) -> Result<Jpeg12Image> {
    decode_with(data, IdctVariant::default())
}

/// Decodes a complete JPEG codestream, reproducing the given decoder's IDCT rounding.
pub fn decode_with(data: &[u8], idct: IdctVariant) -> Result<Jpeg12Image> {
    if data.get(..2) != Some(&[0xFF, 0xD8][..]) {
        return Err(Jpeg12Error::NotJpeg);
    }
    let mut state = State { idct, ..State::default() };
    let mut pos = 2;
    loop {
        let (marker, after) = next_marker(data, pos)?;
        pos = after;
        match marker {
            0xD9 => return state.finish(),
            0xD8 => return Err(Jpeg12Error::Malformed("SOI marker inside the codestream")),
            // Stray RSTn or TEM: no payload, nothing to do.
            0xD0..=0xD7 | 0x01 => {}
            0xC0 | 0xC1 => state.read_sof(segment(data, &mut pos)?)?,
            0xC4 => state.read_dht(segment(data, &mut pos)?)?,
            0xDB => state.read_dqt(segment(data, &mut pos)?)?,
            0xDD => state.read_dri(segment(data, &mut pos)?)?,
            0xDA => {
                let scan = state.read_sos(segment(data, &mut pos)?)?;
                pos = state.decode_scan(data, pos, &scan)?;
            }
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDE | 0xDF | 0xF7 => {
                return Err(Jpeg12Error::Unsupported(unsupported_marker_name(marker)));
            }
            // APPn, COM, DAC, DNL, JPGn and other reserved segments carry nothing we need.
            _ => {
                segment(data, &mut pos)?;
            }
        }
    }
}

fn unsupported_marker_name(marker: u8) -> String {
    let kind = match marker {
        0xC2 => "progressive DCT",
        0xC3 => "lossless",
        0xC5..=0xC7 => "hierarchical",
        0xC9..=0xCB | 0xCD..=0xCF => "arithmetic coding",
        0xDE | 0xDF => "hierarchical",
        0xF7 => "JPEG-LS",
        _ => "unknown process",
    };
    format!("{kind} (marker 0xFF{marker:02X})")
}

/// Finds the next marker at or after `pos`, returning its code and the position after it.
/// Like libjpeg, skips stray bytes (including `FF 00`) and `FF` fill bytes before a marker.
fn next_marker(data: &[u8], mut pos: usize) -> Result<(u8, usize)> {
    loop {
        while data.get(pos).is_some_and(|&b| b != 0xFF) {
            pos += 1;
        }
        while data.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        match data.get(pos) {
            None => return Err(Jpeg12Error::Truncated),
            Some(0) => pos += 1,
            Some(&m) => return Ok((m, pos + 1)),
        }
    }
}

/// Reads a length-prefixed marker segment at `*pos`, returning its payload and advancing past it.
fn segment<'a>(data: &'a [u8], pos: &mut usize) -> Result<&'a [u8]> {
    let len_bytes = data.get(*pos..pos.saturating_add(2)).ok_or(Jpeg12Error::Truncated)?;
    let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    if len < 2 {
        return Err(Jpeg12Error::Malformed("marker segment length below 2"));
    }
    let end = pos.saturating_add(len);
    let payload = data.get(*pos + 2..end).ok_or(Jpeg12Error::Truncated)?;
    *pos = end;
    Ok(payload)
}

/// Bounds-checked reader over one marker segment's payload.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    const SHORT: Jpeg12Error = Jpeg12Error::Malformed("marker segment shorter than its contents");

    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Self::SHORT)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Self::SHORT)?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or(Self::SHORT)?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
}

const FAST_BITS: u32 = 9;

/// A Huffman decoding table (ITU T.81 Annex C/F) with a 9-bit lookahead shortcut.
struct HuffTable {
    /// Indexed by the next 9 bits: `(code length << 8) | symbol`, or 0 when no code of
    /// at most 9 bits is a prefix.
    fast: Box<[u16; 1 << FAST_BITS]>,
    /// Largest code of each length 1..=16, -1 where there is none.
    maxcode: [i32; 17],
    /// Added to a code of a given length to index `values`.
    valoffset: [i32; 17],
    values: Vec<u8>,
}

impl HuffTable {
    fn new(counts: &[u8], values: &[u8]) -> Result<Self> {
        let mut table = Self { fast: Box::new([0; 1 << FAST_BITS]), maxcode: [-1; 17], valoffset: [0; 17], values: values.to_vec() };
        let mut code: u32 = 0;
        let mut k: usize = 0;
        for (len, &count) in (1u32..=16).zip(counts) {
            let li = len as usize;
            if count > 0 {
                table.valoffset[li] = k as i32 - code as i32;
                for _ in 0..count {
                    let symbol = *values.get(k).ok_or(Jpeg12Error::Malformed("Huffman table too short"))?;
                    if len <= FAST_BITS {
                        let shift = FAST_BITS - len;
                        let entry = (len as u16) << 8 | u16::from(symbol);
                        let first = (code << shift) as usize;
                        let last = ((code + 1) << shift) as usize;
                        for slot in table.fast.get_mut(first..last).ok_or(Jpeg12Error::Malformed("Huffman code lengths oversubscribed"))? {
                            *slot = entry;
                        }
                    }
                    code += 1;
                    k += 1;
                }
                // The codes of this length must fit in `len` bits.
                if code > 1 << len {
                    return Err(Jpeg12Error::Malformed("Huffman code lengths oversubscribed"));
                }
                table.maxcode[li] = code as i32 - 1;
            }
            code <<= 1;
        }
        Ok(table)
    }

    fn decode(&self, reader: &mut BitReader) -> Result<u8> {
        let peek = reader.peek16();
        let fast = self.fast[((peek >> (16 - FAST_BITS)) & ((1 << FAST_BITS) - 1)) as usize];
        if fast != 0 {
            reader.consume(u32::from(fast >> 8))?;
            return Ok((fast & 0xFF) as u8);
        }
        for len in FAST_BITS + 1..=16 {
            let li = len as usize;
            let code = (peek >> (16 - len)) as i32;
            if code <= self.maxcode[li] {
                reader.consume(len)?;
                return usize::try_from(code + self.valoffset[li])
                    .ok()
                    .and_then(|i| self.values.get(i).copied())
                    .ok_or(Jpeg12Error::Malformed("invalid Huffman code"));
            }
        }
        Err(Jpeg12Error::Malformed("invalid Huffman code"))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    Marker,
    End,
}

/// MSB-first bit reader over entropy-coded data; undoes `FF 00` stuffing and stops at markers.
struct BitReader<'a> {
    data: &'a [u8],
    /// Next unread byte; rests on the `FF` of a marker once one is reached.
    pos: usize,
    acc: u64,
    nbits: u32,
    stop: Stop,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Self { data, pos, acc: 0, nbits: 0, stop: Stop::Running }
    }

    fn fill(&mut self) {
        while self.nbits <= 56 && self.stop == Stop::Running {
            match self.data.get(self.pos) {
                None => self.stop = Stop::End,
                Some(&0xFF) => {
                    // Fill bytes may precede the byte that decides stuffing vs. marker.
                    let mut p = self.pos + 1;
                    while self.data.get(p) == Some(&0xFF) {
                        p += 1;
                    }
                    match self.data.get(p) {
                        Some(0) => {
                            self.push(0xFF);
                            self.pos = p + 1;
                        }
                        Some(_) => self.stop = Stop::Marker,
                        None => self.stop = Stop::End,
                    }
                }
                Some(&b) => {
                    self.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn push(&mut self, byte: u8) {
        self.acc = self.acc << 8 | u64::from(byte);
        self.nbits += 8;
    }

    /// The next 16 bits, zero-padded past the end of the data (padding is never consumed).
    fn peek16(&mut self) -> u32 {
        if self.nbits < 16 {
            self.fill();
        }
        let v = if self.nbits >= 16 { self.acc >> (self.nbits - 16) } else { self.acc << (16 - self.nbits) };
        (v & 0xFFFF) as u32
    }

    fn shortfall(&self) -> Jpeg12Error {
        match self.stop {
            Stop::End => Jpeg12Error::Truncated,
            _ => Jpeg12Error::Malformed("entropy-coded data ends before the scan is complete"),
        }
    }

    fn consume(&mut self, n: u32) -> Result<()> {
        if n > self.nbits {
            return Err(self.shortfall());
        }
        self.nbits -= n;
        Ok(())
    }

    /// Reads `n <= 16` bits.
    fn bits(&mut self, n: u32) -> Result<u32> {
        if self.nbits < n {
            self.fill();
        }
        if n > self.nbits {
            return Err(self.shortfall());
        }
        self.nbits -= n;
        Ok(((self.acc >> self.nbits) & ((1u64 << n) - 1)) as u32)
    }

    /// Drops the byte-alignment padding and consumes the RSTn marker that must follow.
    fn restart(&mut self) -> Result<()> {
        self.acc = 0;
        self.nbits = 0;
        let (marker, after) = next_marker(self.data, self.pos)?;
        // Any RSTn is accepted; its sequence number carries no data.
        if !(0xD0..=0xD7).contains(&marker) {
            return Err(Jpeg12Error::Malformed("expected an RST marker at a restart interval"));
        }
        self.pos = after;
        self.stop = Stop::Running;
        Ok(())
    }
}

/// Reads the `size`-bit magnitude and sign-extends it (T.81 F.2.2.1 EXTEND).
fn receive_extend(reader: &mut BitReader, size: u8) -> Result<i32> {
    if size == 0 {
        return Ok(0);
    }
    let size = u32::from(size);
    let v = reader.bits(size)? as i32;
    Ok(if v < 1 << (size - 1) { v - (1 << size) + 1 } else { v })
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Sample extent of the (possibly subsampled) component.
    width: usize,
    height: usize,
    /// Blocks covering the component's own extent (what a non-interleaved scan codes).
    blocks_w: usize,
    blocks_h: usize,
    /// Blocks covering whole MCUs (what an interleaved scan codes); the plane's size.
    padded_w: usize,
    padded_h: usize,
    plane: Vec<u16>,
    decoded: bool,
}

struct Frame {
    precision: u8,
    width: usize,
    height: usize,
    hmax: usize,
    vmax: usize,
    mcus_x: usize,
    mcus_y: usize,
    comps: Vec<Component>,
}

/// One component of a scan: its index in the frame and its DC/AC table ids.
struct ScanComponent {
    index: usize,
    dc: usize,
    ac: usize,
}

/// A scan component with its tables resolved, plus its running DC prediction.
struct ScanPart<'t> {
    index: usize,
    dc: &'t HuffTable,
    ac: &'t HuffTable,
    quant: [u16; 64],
    pred: i32,
}

#[derive(Default)]
struct State {
    qt: [Option<[u16; 64]>; 4],
    dc: [Option<HuffTable>; 4],
    ac: [Option<HuffTable>; 4],
    restart_interval: usize,
    frame: Option<Frame>,
    idct: IdctVariant,
}

impl State {
    fn read_sof(&mut self, seg: &[u8]) -> Result<()> {
        if self.frame.is_some() {
            return Err(Jpeg12Error::Malformed("more than one frame header"));
        }
        let mut c = Cursor::new(seg);
        let precision = c.u8()?;
        if precision != 8 && precision != 12 {
            return Err(Jpeg12Error::Unsupported(format!("sample precision {precision}")));
        }
        let height = usize::from(c.u16()?);
        let width = usize::from(c.u16()?);
        if height == 0 {
            return Err(Jpeg12Error::Unsupported("image height defined by a DNL marker".into()));
        }
        if width == 0 {
            return Err(Jpeg12Error::Malformed("image width is zero"));
        }
        let n = usize::from(c.u8()?);
        if n == 0 {
            return Err(Jpeg12Error::Malformed("frame has no components"));
        }
        if n > 4 {
            return Err(Jpeg12Error::Unsupported(format!("{n} components")));
        }
        if seg.len() != 6 + 3 * n {
            return Err(Jpeg12Error::Malformed("bad SOF segment length"));
        }
        if width.checked_mul(height).and_then(|s| s.checked_mul(n)).is_none_or(|s| s > MAX_SAMPLES) {
            return Err(Jpeg12Error::Unsupported(format!("image size {width}x{height}x{n} too large")));
        }
        let mut specs: Vec<(u8, usize, usize, usize)> = Vec::with_capacity(n);
        for _ in 0..n {
            let id = c.u8()?;
            let hv = c.u8()?;
            let tq = usize::from(c.u8()?);
            let (h, v) = (usize::from(hv >> 4), usize::from(hv & 15));
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                return Err(Jpeg12Error::Malformed("sampling factor outside 1..=4"));
            }
            if tq > 3 {
                return Err(Jpeg12Error::Malformed("quantization table id above 3"));
            }
            if specs.iter().any(|&(other, ..)| other == id) {
                return Err(Jpeg12Error::Malformed("duplicate component id"));
            }
            specs.push((id, h, v, tq));
        }
        let hmax = specs.iter().map(|s| s.1).max().unwrap_or(1);
        let vmax = specs.iter().map(|s| s.2).max().unwrap_or(1);
        let mcus_x = width.div_ceil(8 * hmax);
        let mcus_y = height.div_ceil(8 * vmax);
        let comps = specs
            .into_iter()
            .map(|(id, h, v, tq)| Component {
                id,
                h,
                v,
                tq,
                width: (width * h).div_ceil(hmax),
                height: (height * v).div_ceil(vmax),
                blocks_w: (width * h).div_ceil(hmax).div_ceil(8),
                blocks_h: (height * v).div_ceil(vmax).div_ceil(8),
                padded_w: mcus_x * h,
                padded_h: mcus_y * v,
                plane: Vec::new(),
                decoded: false,
            })
            .collect();
        self.frame = Some(Frame { precision, width, height, hmax, vmax, mcus_x, mcus_y, comps });
        Ok(())
    }

    fn read_dqt(&mut self, seg: &[u8]) -> Result<()> {
        let mut c = Cursor::new(seg);
        while c.remaining() > 0 {
            let pq_tq = c.u8()?;
            let slot = self.qt.get_mut(usize::from(pq_tq & 15)).ok_or(Jpeg12Error::Malformed("quantization table id above 3"))?;
            let mut table = [0u16; 64];
            for q in &mut table {
                *q = match pq_tq >> 4 {
                    0 => u16::from(c.u8()?),
                    1 => c.u16()?,
                    _ => {
                        return Err(Jpeg12Error::Malformed("quantization table precision not 8 or 16 bits"));
                    }
                };
            }
            *slot = Some(table);
        }
        Ok(())
    }

    fn read_dht(&mut self, seg: &[u8]) -> Result<()> {
        let mut c = Cursor::new(seg);
        while c.remaining() > 0 {
            let tc_th = c.u8()?;
            let class = match tc_th >> 4 {
                0 => &mut self.dc,
                1 => &mut self.ac,
                _ => return Err(Jpeg12Error::Malformed("Huffman table class not 0 or 1")),
            };
            let slot = class.get_mut(usize::from(tc_th & 15)).ok_or(Jpeg12Error::Malformed("Huffman table id above 3"))?;
            let counts = c.take(16)?;
            let total: usize = counts.iter().map(|&n| usize::from(n)).sum();
            if total > 256 {
                return Err(Jpeg12Error::Malformed("Huffman table has more than 256 symbols"));
            }
            *slot = Some(HuffTable::new(counts, c.take(total)?)?);
        }
        Ok(())
    }

    fn read_dri(&mut self, seg: &[u8]) -> Result<()> {
        if seg.len() != 2 {
            return Err(Jpeg12Error::Malformed("bad DRI segment length"));
        }
        self.restart_interval = usize::from(Cursor::new(seg).u16()?);
        Ok(())
    }

    fn read_sos(&self, seg: &[u8]) -> Result<Vec<ScanComponent>> {
        let frame = self.frame.as_ref().ok_or(Jpeg12Error::Malformed("scan before frame header"))?;
        let mut c = Cursor::new(seg);
        let ns = usize::from(c.u8()?);
        if !(1..=4).contains(&ns) || seg.len() != 4 + 2 * ns {
            return Err(Jpeg12Error::Malformed("bad SOS segment"));
        }
        let mut scan: Vec<ScanComponent> = Vec::with_capacity(ns);
        for _ in 0..ns {
            let id = c.u8()?;
            let tables = c.u8()?;
            let index =
                frame.comps.iter().position(|comp| comp.id == id).ok_or(Jpeg12Error::Malformed("scan references an unknown component"))?;
            if scan.iter().any(|s| s.index == index) {
                return Err(Jpeg12Error::Malformed("component repeated within a scan"));
            }
            let (dc, ac) = (usize::from(tables >> 4), usize::from(tables & 15));
            if dc > 3 || ac > 3 {
                return Err(Jpeg12Error::Malformed("Huffman table id above 3"));
            }
            scan.push(ScanComponent { index, dc, ac });
        }
        let (ss, se, a) = (c.u8()?, c.u8()?, c.u8()?);
        let (ah, al) = (a >> 4, a & 15);
        if ss != 0 || se != 63 || ah != 0 || al != 0 {
            return Err(Jpeg12Error::NotSequentialScan { ss, se, ah, al });
        }
        if ns > 1 {
            let blocks: usize = scan.iter().filter_map(|s| frame.comps.get(s.index)).map(|comp| comp.h * comp.v).sum();
            if blocks > 10 {
                return Err(Jpeg12Error::Malformed("more than 10 blocks per MCU"));
            }
        }
        Ok(scan)
    }

    /// Decodes one scan's entropy-coded data starting at `pos`; returns where it stopped.
    fn decode_scan(&mut self, data: &[u8], pos: usize, scan: &[ScanComponent]) -> Result<usize> {
        let frame = self.frame.as_mut().ok_or(Jpeg12Error::Malformed("scan before frame header"))?;
        let precision = frame.precision;
        let params = self.idct.params(precision);
        let mut parts = Vec::with_capacity(scan.len());
        for s in scan {
            let comp = frame.comps.get(s.index).ok_or(Jpeg12Error::Malformed("bad component index"))?;
            let quant =
                self.qt.get(comp.tq).copied().flatten().ok_or(Jpeg12Error::Malformed("component uses an undefined quantization table"))?;
            let dc = self.dc.get(s.dc).and_then(Option::as_ref);
            let ac = self.ac.get(s.ac).and_then(Option::as_ref);
            let (Some(dc), Some(ac)) = (dc, ac) else {
                return Err(Jpeg12Error::Malformed("scan uses an undefined Huffman table"));
            };
            parts.push(ScanPart { index: s.index, dc, ac, quant, pred: 0 });
        }
        let single = parts.len() == 1;
        let (mcus_x, mcus_y) = match parts.first() {
            Some(part) if single => {
                let comp = frame.comps.get(part.index).ok_or(Jpeg12Error::Malformed("bad component index"))?;
                (comp.blocks_w, comp.blocks_h)
            }
            _ => (frame.mcus_x, frame.mcus_y),
        };
        // Every block takes at least 2 bits (a DC code and an EOB), so a short stream is
        // refused before it can make us allocate and loop over a huge image.
        let blocks_per_mcu: usize = if single { 1 } else { parts.iter().filter_map(|p| frame.comps.get(p.index)).map(|c| c.h * c.v).sum() };
        if data.len().saturating_sub(pos).saturating_mul(4) < mcus_x * mcus_y * blocks_per_mcu {
            return Err(Jpeg12Error::Truncated);
        }
        for part in &parts {
            let comp = frame.comps.get_mut(part.index).ok_or(Jpeg12Error::Malformed("bad component index"))?;
            if comp.plane.is_empty() {
                comp.plane = vec![0; comp.padded_w * 8 * comp.padded_h * 8];
            }
            comp.decoded = true;
        }
        let mut reader = BitReader::new(data, pos);
        let mut coef = [0i32; 64];
        let mut pixels = [0u16; 64];
        for mcu in 0..mcus_x * mcus_y {
            if self.restart_interval > 0 && mcu > 0 && mcu % self.restart_interval == 0 {
                reader.restart()?;
                for part in &mut parts {
                    part.pred = 0;
                }
            }
            let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
            for part in &mut parts {
                let comp = frame.comps.get_mut(part.index).ok_or(Jpeg12Error::Malformed("bad component index"))?;
                let (bh, bv) = if single { (1, 1) } else { (comp.h, comp.v) };
                for by in 0..bv {
                    for bx in 0..bh {
                        decode_block(&mut reader, part, &mut coef)?;
                        idct(&coef, params, precision, &mut pixels);
                        comp.put_block(mx * bh + bx, my * bv + by, &pixels)?;
                    }
                }
            }
        }
        Ok(reader.pos)
    }

    fn finish(self) -> Result<Jpeg12Image> {
        let frame = self.frame.ok_or(Jpeg12Error::Malformed("no frame header before EOI"))?;
        if frame.comps.iter().any(|c| !c.decoded) {
            return Err(Jpeg12Error::Malformed("a component is missing from the scans"));
        }
        let n = frame.comps.len();
        let row_len = frame.width * n;
        let mut samples = vec![0u16; row_len * frame.height];
        for (ci, comp) in frame.comps.iter().enumerate() {
            let mode = comp.upsampling(frame.hmax, frame.vmax);
            for (y, row) in samples.chunks_exact_mut(row_len).enumerate() {
                comp.upsample_row(mode, y, frame.hmax, frame.vmax, row.iter_mut().skip(ci).step_by(n))?;
            }
        }
        Ok(Jpeg12Image { width: frame.width, height: frame.height, components: n, precision: frame.precision, samples })
    }
}

#[derive(Clone, Copy)]
enum Upsampling {
    Same,
    /// libjpeg(-turbo)'s "fancy" triangle filters for the 2:1 cases.
    H2V1,
    H2V2,
    H1V2,
    /// Sample replication for every other ratio.
    Replicate,
}

impl Component {
    /// Mirrors libjpeg-turbo's choice of upsampler (jdsample.c).
    fn upsampling(&self, hmax: usize, vmax: usize) -> Upsampling {
        let ratio = |max: usize, f: usize| max.is_multiple_of(f).then_some(max / f);
        match (ratio(hmax, self.h), ratio(vmax, self.v)) {
            (Some(1), Some(1)) => Upsampling::Same,
            (Some(2), Some(1)) if self.width > 2 => Upsampling::H2V1,
            (Some(2), Some(2)) if self.width > 2 => Upsampling::H2V2,
            (Some(1), Some(2)) => Upsampling::H1V2,
            _ => Upsampling::Replicate,
        }
    }

    /// Row `r` of the component's own samples; rows past the bottom repeat the last one.
    fn row(&self, r: usize) -> Result<&[u16]> {
        let start = r.min(self.height.saturating_sub(1)) * self.padded_w * 8;
        self.plane.get(start..start + self.width).ok_or(Jpeg12Error::Malformed("component plane too small"))
    }

    /// Writes output row `y` of this component at full resolution into `out`.
    fn upsample_row<'o>(&self, mode: Upsampling, y: usize, hmax: usize, vmax: usize, out: impl Iterator<Item = &'o mut u16>) -> Result<()> {
        let last = self.width.saturating_sub(1);
        // The vertically nearer neighbour row of output row `y` under 2:1 subsampling, and
        // libjpeg's rounding bias for that half.
        let (r, nb, bias) = if y.is_multiple_of(2) { (y / 2, (y / 2).saturating_sub(1), 1) } else { (y / 2, y / 2 + 1, 2) };
        match mode {
            Upsampling::Same => {
                for (o, &s) in out.zip(self.row(y)?) {
                    *o = s;
                }
            }
            Upsampling::Replicate => {
                let src = self.row(y * self.v / vmax)?;
                for (x, o) in out.enumerate() {
                    *o = src.get(x * self.h / hmax).copied().unwrap_or(0);
                }
            }
            Upsampling::H1V2 => {
                for (o, (&a, &b)) in out.zip(self.row(r)?.iter().zip(self.row(nb)?)) {
                    *o = ((3 * u32::from(a) + u32::from(b) + bias) >> 2) as u16;
                }
            }
            Upsampling::H2V1 => {
                let src = self.row(y)?;
                let at = |c: usize| u32::from(src.get(c.min(last)).copied().unwrap_or(0));
                for (x, o) in out.enumerate() {
                    let c = x / 2;
                    let (side, bias) = if x.is_multiple_of(2) { (c.saturating_sub(1), 1) } else { (c + 1, 2) };
                    *o = ((3 * at(c) + at(side) + bias) >> 2) as u16;
                }
            }
            Upsampling::H2V2 => {
                let (src, near) = (self.row(r)?, self.row(nb)?);
                let colsum = |c: usize| {
                    let c = c.min(last);
                    let pick = |row: &[u16]| u32::from(row.get(c).copied().unwrap_or(0));
                    3 * pick(src) + pick(near)
                };
                for (x, o) in out.enumerate() {
                    let c = x / 2;
                    let (side, bias) = if x.is_multiple_of(2) { (c.saturating_sub(1), 8) } else { (c + 1, 7) };
                    *o = ((3 * colsum(c) + colsum(side) + bias) >> 4) as u16;
                }
            }
        }
        Ok(())
    }

    fn put_block(&mut self, bx: usize, by: usize, pixels: &[u16; 64]) -> Result<()> {
        let stride = self.padded_w * 8;
        for (r, row) in pixels.chunks_exact(8).enumerate() {
            let start = (by * 8 + r) * stride + bx * 8;
            self.plane.get_mut(start..start + 8).ok_or(Jpeg12Error::Malformed("block outside the component"))?.copy_from_slice(row);
        }
        Ok(())
    }
}

/// Huffman-decodes one block into dequantized coefficients in natural order.
fn decode_block(reader: &mut BitReader, part: &mut ScanPart, coef: &mut [i32; 64]) -> Result<()> {
    *coef = [0; 64];
    let size = part.dc.decode(reader)?;
    if size > 15 {
        return Err(Jpeg12Error::Malformed("DC difference category above 15"));
    }
    part.pred = part.pred.wrapping_add(receive_extend(reader, size)?);
    coef[0] = part.pred.saturating_mul(i32::from(part.quant[0]));
    let mut k = 1;
    while k < 64 {
        let rs = part.ac.decode(reader)?;
        let (run, size) = (usize::from(rs >> 4), rs & 15);
        if size == 0 {
            if run != 15 {
                break; // EOB
            }
            k += 16; // ZRL
            continue;
        }
        k += run;
        let (Some(&zz), Some(&q)) = (ZIGZAG.get(k), part.quant.get(k)) else {
            return Err(Jpeg12Error::Malformed("AC coefficient index beyond 63"));
        };
        let value = receive_extend(reader, size)?;
        if let Some(slot) = coef.get_mut(zz) {
            *slot = value.saturating_mul(i32::from(q));
        }
        k += 1;
    }
    Ok(())
}

/// Fixed-point parameters of the Loeffler-Ligtenberg-Moschytz integer IDCT. The decoders we
/// reproduce differ only in these, so matching them gives bit-exact output.
struct IdctParams {
    /// Fraction bits of the multipliers.
    const_bits: u32,
    m: Multipliers,
    /// Extra fraction bits kept between the two passes.
    pass1_bits: u32,
    /// Fraction bits added to the dequantized input and rounded off at the very end.
    preshift: u32,
    /// Whether the first pass runs along rows (else along columns).
    rows_first: bool,
}

/// The LLM multipliers, `round(c * 2^const_bits)`, each named after its `c`.
struct Multipliers {
    c0_298631336: i64,
    c0_390180644: i64,
    c0_541196100: i64,
    c0_765366865: i64,
    c0_899976223: i64,
    c1_175875602: i64,
    c1_501321110: i64,
    c1_847759065: i64,
    c1_961570560: i64,
    c2_053119869: i64,
    c2_562915447: i64,
    c3_072711026: i64,
}

impl IdctParams {
    const fn new(const_bits: u32, pass1_bits: u32, preshift: u32, rows_first: bool) -> Self {
        const fn fix(c: f64, bits: u32) -> i64 {
            (c * (1u32 << bits) as f64 + 0.5) as i64
        }
        let m = Multipliers {
            c0_298631336: fix(0.298631336, const_bits),
            c0_390180644: fix(0.390180644, const_bits),
            c0_541196100: fix(0.541196100, const_bits),
            c0_765366865: fix(0.765366865, const_bits),
            c0_899976223: fix(0.899976223, const_bits),
            c1_175875602: fix(1.175875602, const_bits),
            c1_501321110: fix(1.501321110, const_bits),
            c1_847759065: fix(1.847759065, const_bits),
            c1_961570560: fix(1.961570560, const_bits),
            c2_053119869: fix(2.053119869, const_bits),
            c2_562915447: fix(2.562915447, const_bits),
            c3_072711026: fix(3.072711026, const_bits),
        };
        Self { const_bits, m, pass1_bits, preshift, rows_first }
    }
}

/// Thomas Richter's libjpeg (pylibjpeg-libjpeg, which pydicom uses).
const RICHTER: IdctParams = IdctParams::new(9, 0, 4, true);
/// IJG libjpeg / libjpeg-turbo `jidctint.c` "islow" (which Pillow uses): 2 extra bits between
/// passes at 8-bit precision, 1 at 12-bit.
const IJG_8: IdctParams = IdctParams::new(13, 2, 0, false);
const IJG_12: IdctParams = IdctParams::new(13, 1, 0, false);

/// Which decoder's integer IDCT arithmetic to reproduce; the variants differ by at most 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdctVariant {
    /// Thomas Richter's libjpeg (pydicom + pylibjpeg-libjpeg): bit-exact there.
    #[default]
    RichterLibjpeg,
    /// IJG libjpeg / libjpeg-turbo "islow" (Pillow): bit-exact there.
    IjgIslow,
}

impl IdctVariant {
    fn params(self, precision: u8) -> &'static IdctParams {
        match self {
            Self::RichterLibjpeg => &RICHTER,
            Self::IjgIslow if precision > 8 => &IJG_12,
            Self::IjgIslow => &IJG_8,
        }
    }
}

/// One 8-point LLM IDCT; outputs carry `const_bits` extra fraction bits. Inputs stay below
/// 2^40 in magnitude, so nothing here can overflow i64.
fn idct_1d(x: [i64; 8], p: &IdctParams) -> [i64; 8] {
    let m = &p.m;
    // Even part.
    let z1 = (x[2] + x[6]) * m.c0_541196100;
    let tmp2 = z1 - x[6] * m.c1_847759065;
    let tmp3 = z1 + x[2] * m.c0_765366865;
    let tmp0 = (x[0] + x[4]) << p.const_bits;
    let tmp1 = (x[0] - x[4]) << p.const_bits;
    let (t10, t13, t11, t12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);

    // Odd part.
    let (o0, o1, o2, o3) = (x[7], x[5], x[3], x[1]);
    let z5 = (o0 + o2 + o1 + o3) * m.c1_175875602;
    let z1 = -(o0 + o3) * m.c0_899976223;
    let z2 = -(o1 + o2) * m.c2_562915447;
    let z3 = z5 - (o0 + o2) * m.c1_961570560;
    let z4 = z5 - (o1 + o3) * m.c0_390180644;
    let b0 = o0 * m.c0_298631336 + z1 + z3;
    let b1 = o1 * m.c2_053119869 + z2 + z4;
    let b2 = o2 * m.c3_072711026 + z2 + z3;
    let b3 = o3 * m.c1_501321110 + z1 + z4;

    [t10 + b3, t11 + b2, t12 + b1, t13 + b0, t13 - b0, t12 - b1, t11 - b2, t10 - b3]
}

/// Round-to-nearest (ties up) right shift, as libjpeg's DESCALE.
fn descale(x: i64, n: u32) -> i64 {
    if n == 0 { x } else { (x + (1 << (n - 1))) >> n }
}

/// Separable 2-D IDCT of dequantized coefficients, then level shift and clamping.
fn idct(coef: &[i32; 64], p: &IdctParams, precision: u8, out: &mut [u16; 64]) {
    // Pass 1 runs along `along`-spaced elements; its 8 lines are `across` apart.
    let (along, across) = if p.rows_first { (1, 8) } else { (8, 1) };
    let mut ws = [0i64; 64];
    for line in 0..8 {
        let input: [i64; 8] = std::array::from_fn(|k| i64::from(coef[line * across + k * along]) << p.preshift);
        let result = if input[1..].iter().all(|&v| v == 0) {
            [input[0] << p.pass1_bits; 8] // what the full transform gives, cheaply
        } else {
            idct_1d(input, p).map(|v| descale(v, p.const_bits - p.pass1_bits))
        };
        for (k, v) in result.into_iter().enumerate() {
            ws[line * across + k * along] = v;
        }
    }
    let center = 1i64 << (precision - 1);
    let max = (1i64 << precision) - 1;
    for line in 0..8 {
        let input: [i64; 8] = std::array::from_fn(|k| ws[line * along + k * across]);
        for (k, v) in idct_1d(input, p).into_iter().enumerate() {
            let v = descale(descale(v, p.const_bits + p.pass1_bits + 3), p.preshift) + center;
            out[line * along + k * across] = v.clamp(0, max) as u16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift64 so the tests need no extra crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn range(&mut self, lo: i32, hi: i32) -> i32 {
            lo + (self.next() % (hi - lo + 1) as u64) as i32
        }
    }

    /// MSB-first bit writer with `FF 00` stuffing, as an encoder emits.
    #[derive(Default)]
    struct BitWriter {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }

    impl BitWriter {
        fn put(&mut self, bits: u32, len: u32) {
            for i in (0..len).rev() {
                self.acc = self.acc << 1 | (bits >> i) & 1;
                self.n += 1;
                if self.n == 8 {
                    let b = self.acc as u8;
                    self.out.push(b);
                    if b == 0xFF {
                        self.out.push(0);
                    }
                    self.acc = 0;
                    self.n = 0;
                }
            }
        }

        fn flush(&mut self) {
            while self.n != 0 {
                self.put(1, 1);
            }
        }
    }

    // Test Huffman tables: DC has symbols 0..=15 (14 four-bit codes, 2 five-bit), AC has all
    // 256 byte values (254 eight-bit codes, 2 nine-bit), so any coefficient is codable.
    fn dc_counts() -> [u8; 16] {
        let mut c = [0; 16];
        c[3] = 14;
        c[4] = 2;
        c
    }

    fn ac_counts() -> [u8; 16] {
        let mut c = [0; 16];
        c[7] = 254;
        c[8] = 2;
        c
    }

    fn dc_code(sym: u32) -> (u32, u32) {
        if sym < 14 { (sym, 4) } else { (0b11100 + sym - 14, 5) }
    }

    fn ac_code(sym: u32) -> (u32, u32) {
        if sym < 254 { (sym, 8) } else { (508 + sym - 254, 9) }
    }

    /// Magnitude category and the extra bits that encode `v` (T.81 F.1.2.1).
    fn category(v: i32) -> (u32, u32) {
        let size = 32 - v.unsigned_abs().leading_zeros();
        let bits = if v < 0 { (v + (1 << size) - 1) as u32 } else { v as u32 };
        (size, bits)
    }

    fn encode_block(w: &mut BitWriter, zz: &[i32; 64], pred: &mut i32) {
        let (size, bits) = category(zz[0] - *pred);
        *pred = zz[0];
        let (code, len) = dc_code(size);
        w.put(code, len);
        w.put(bits, size);
        let mut run = 0;
        for &v in &zz[1..] {
            if v == 0 {
                run += 1;
                continue;
            }
            while run > 15 {
                let (code, len) = ac_code(0xF0);
                w.put(code, len);
                run -= 16;
            }
            let (size, bits) = category(v);
            let (code, len) = ac_code(run << 4 | size);
            w.put(code, len);
            w.put(bits, size);
            run = 0;
        }
        if run > 0 {
            let (code, len) = ac_code(0);
            w.put(code, len);
        }
    }

    struct TestImage {
        width: usize,
        height: usize,
        precision: u8,
        /// (h, v) sampling factors, one per component.
        sampling: Vec<(usize, usize)>,
        restart: usize,
        interleaved: bool,
        /// Quantization table in zigzag order.
        quant: [u16; 64],
        /// Quantized zigzag-ordered coefficients of component `c`'s block (bx, by).
        blocks: Box<dyn Fn(usize, usize, usize) -> [i32; 64]>,
    }

    fn segment_bytes(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(payload);
    }

    fn scan_bytes(img: &TestImage, comps: &[usize], out: &mut Vec<u8>) {
        let hmax = img.sampling.iter().map(|s| s.0).max().unwrap();
        let vmax = img.sampling.iter().map(|s| s.1).max().unwrap();
        let mut sos = vec![comps.len() as u8];
        for &c in comps {
            sos.extend_from_slice(&[c as u8 + 1, 0x00]);
        }
        sos.extend_from_slice(&[0, 63, 0]);
        segment_bytes(out, 0xDA, &sos);
        let (mcus_x, mcus_y) = if comps.len() == 1 {
            let (h, v) = img.sampling[comps[0]];
            ((img.width * h).div_ceil(hmax).div_ceil(8), (img.height * v).div_ceil(vmax).div_ceil(8))
        } else {
            (img.width.div_ceil(8 * hmax), img.height.div_ceil(8 * vmax))
        };
        let mut w = BitWriter::default();
        let mut preds = vec![0; comps.len()];
        let mut rst = 0u8;
        for mcu in 0..mcus_x * mcus_y {
            if img.restart > 0 && mcu > 0 && mcu % img.restart == 0 {
                w.flush();
                w.out.extend_from_slice(&[0xFF, 0xD0 + rst]);
                rst = (rst + 1) % 8;
                preds.iter_mut().for_each(|p| *p = 0);
            }
            let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
            for (i, &c) in comps.iter().enumerate() {
                let (h, v) = if comps.len() == 1 { (1, 1) } else { img.sampling[c] };
                for by in 0..v {
                    for bx in 0..h {
                        encode_block(&mut w, &(img.blocks)(c, mx * h + bx, my * v + by), &mut preds[i]);
                    }
                }
            }
        }
        w.flush();
        out.extend_from_slice(&w.out);
    }

    fn encode(img: &TestImage) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        segment_bytes(&mut out, 0xFE, b"test stream");
        let mut dqt = Vec::new();
        if img.precision > 8 {
            dqt.push(0x10);
            img.quant.iter().for_each(|q| dqt.extend_from_slice(&q.to_be_bytes()));
        } else {
            dqt.push(0x00);
            dqt.extend(img.quant.iter().map(|&q| q as u8));
        }
        segment_bytes(&mut out, 0xDB, &dqt);
        let mut dht = vec![0x00];
        dht.extend_from_slice(&dc_counts());
        dht.extend(0..16u8);
        dht.push(0x10);
        dht.extend_from_slice(&ac_counts());
        dht.extend(0..=255u8);
        segment_bytes(&mut out, 0xC4, &dht);
        let mut sof = vec![img.precision];
        sof.extend_from_slice(&(img.height as u16).to_be_bytes());
        sof.extend_from_slice(&(img.width as u16).to_be_bytes());
        sof.push(img.sampling.len() as u8);
        for (i, &(h, v)) in img.sampling.iter().enumerate() {
            sof.extend_from_slice(&[i as u8 + 1, (h << 4 | v) as u8, 0]);
        }
        segment_bytes(&mut out, if img.precision > 8 { 0xC1 } else { 0xC0 }, &sof);
        if img.restart > 0 {
            segment_bytes(&mut out, 0xDD, &(img.restart as u16).to_be_bytes());
        }
        let all: Vec<usize> = (0..img.sampling.len()).collect();
        if img.interleaved {
            scan_bytes(img, &all, &mut out);
        } else {
            for c in all {
                scan_bytes(img, &[c], &mut out);
            }
        }
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    fn dc_only(dc: i32) -> [i32; 64] {
        let mut zz = [0; 64];
        zz[0] = dc;
        zz
    }

    /// A greyscale stream whose blocks have DC levels varying per block.
    fn grey_dc_image(precision: u8, restart: usize) -> TestImage {
        TestImage {
            width: 21,
            height: 13,
            precision,
            sampling: vec![(1, 1)],
            restart,
            interleaved: true,
            quant: [3; 64],
            blocks: Box::new(|_, bx, by| dc_only(bx as i32 * 37 - by as i32 * 50 + 11)),
        }
    }

    /// libjpeg's rounding of a DC-only block: round-half-up(dequantized DC / 8) + centre.
    fn dc_sample(dc: i32, q: i32, precision: u8) -> u16 {
        let v = (dc * q + 4).div_euclid(8) + (1 << (precision - 1));
        v.clamp(0, (1 << precision) - 1) as u16
    }

    #[test]
    fn multipliers_match_the_published_tables() {
        let table = |p: &IdctParams| {
            let m = &p.m;
            [
                m.c0_298631336,
                m.c0_390180644,
                m.c0_541196100,
                m.c0_765366865,
                m.c0_899976223,
                m.c1_175875602,
                m.c1_501321110,
                m.c1_847759065,
                m.c1_961570560,
                m.c2_053119869,
                m.c2_562915447,
                m.c3_072711026,
            ]
        };
        // jidctint.c's FIX_* values.
        assert_eq!(table(&IJG_12), [2446, 3196, 4433, 6270, 7373, 9633, 12299, 15137, 16069, 16819, 20995, 25172]);
        assert_eq!(table(&RICHTER), [153, 200, 277, 392, 461, 602, 769, 946, 1004, 1051, 1312, 1573]);
    }

    #[test]
    fn decodes_dc_only_blocks_at_8_and_12_bits_with_and_without_restarts() {
        for precision in [8, 12] {
            for restart in [0, 1, 2] {
                let img = grey_dc_image(precision, restart);
                let data = encode(&img);
                for variant in [IdctVariant::RichterLibjpeg, IdctVariant::IjgIslow] {
                    let out = decode_with(&data, variant).unwrap();
                    assert_eq!((out.width, out.height, out.components), (21, 13, 1));
                    assert_eq!(out.precision, precision);
                    for y in 0..13 {
                        for x in 0..21 {
                            let dc = (img.blocks)(0, x / 8, y / 8)[0];
                            assert_eq!(out.samples[y * 21 + x], dc_sample(dc, 3, precision), "({x},{y})");
                        }
                    }
                }
            }
        }
    }

    /// Straight from the T.81 IDCT definition, in f64.
    fn float_idct(coef: &[f64; 64]) -> [f64; 64] {
        let c = |u: usize| {
            if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 }
        };
        std::array::from_fn(|i| {
            let (y, x) = (i / 8, i % 8);
            let mut sum = 0.0;
            for v in 0..8 {
                for u in 0..8 {
                    sum += c(u)
                        * c(v)
                        * coef[v * 8 + u]
                        * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos()
                        * ((2 * y + 1) as f64 * v as f64 * std::f64::consts::PI / 16.0).cos();
                }
            }
            sum / 4.0
        })
    }

    #[test]
    fn integer_idct_is_within_one_of_the_exact_transform() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for precision in [8u8, 12] {
            let scale = if precision > 8 { 16 } else { 1 };
            let quant: [u16; 64] = std::array::from_fn(|_| rng.range(1, 12) as u16);
            let blocks: Vec<[i32; 64]> = (0..12)
                .map(|_| {
                    let mut zz = [0; 64];
                    zz[0] = rng.range(-100, 100) * scale;
                    for _ in 0..rng.range(0, 20) {
                        zz[rng.range(1, 63) as usize] = rng.range(-25, 25) * scale;
                    }
                    zz
                })
                .collect();
            let table = blocks.clone();
            let img = TestImage {
                width: 32,
                height: 24,
                precision,
                sampling: vec![(1, 1)],
                restart: 0,
                interleaved: true,
                quant,
                blocks: Box::new(move |_, bx, by| table[by * 4 + bx]),
            };
            let data = encode(&img);
            let (center, max) = (f64::from(1 << (precision - 1)), f64::from((1 << precision) - 1));
            for variant in [IdctVariant::RichterLibjpeg, IdctVariant::IjgIslow] {
                let out = decode_with(&data, variant).unwrap();
                for (b, zz) in blocks.iter().enumerate() {
                    let mut coef = [0.0; 64];
                    for k in 0..64 {
                        coef[ZIGZAG[k]] = f64::from(zz[k]) * f64::from(quant[k]);
                    }
                    let exact = float_idct(&coef);
                    for (i, e) in exact.iter().enumerate() {
                        let (x, y) = ((b % 4) * 8 + i % 8, (b / 4) * 8 + i / 8);
                        let want = (e + center).round().clamp(0.0, max);
                        let got = f64::from(out.samples[y * 32 + x]);
                        assert!((got - want).abs() <= 1.0, "{variant:?} P{precision} ({x},{y}): {got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn decodes_subsampled_colour_interleaved_and_in_separate_scans() {
        for interleaved in [true, false] {
            let img = TestImage {
                width: 35,
                height: 19,
                precision: 8,
                sampling: vec![(2, 2), (1, 1), (1, 1)],
                restart: 3,
                interleaved,
                quant: [2; 64],
                blocks: Box::new(|c, _, _| dc_only([40, -64, 100][c])),
            };
            let out = decode(&encode(&img)).unwrap();
            assert_eq!((out.width, out.height, out.components), (35, 19, 3));
            for px in out.samples.chunks_exact(3) {
                assert_eq!(px, [dc_sample(40, 2, 8), dc_sample(-64, 2, 8), dc_sample(100, 2, 8)]);
            }
        }
    }

    #[test]
    fn h2v1_upsampling_is_libjpegs_triangle_filter() {
        let mut ramp = [0; 64];
        ramp[1] = -40; // first horizontal AC: a left-to-right slope
        ramp[2] = 9;
        let chroma_block = move |_, _, _| ramp;
        let img = TestImage {
            width: 16,
            height: 8,
            precision: 8,
            sampling: vec![(2, 1), (1, 1)],
            restart: 0,
            interleaved: true,
            quant: [1; 64],
            blocks: Box::new(move |c, bx, by| if c == 0 { dc_only(0) } else { chroma_block(c, bx, by) }),
        };
        let out = decode(&encode(&img)).unwrap();
        // The chroma block's own samples, from the same block coded as an 8x8 greyscale image.
        let alone = TestImage { width: 8, sampling: vec![(1, 1)], blocks: Box::new(chroma_block), ..img };
        let plane = decode(&encode(&alone)).unwrap().samples;
        for y in 0..8 {
            let s = |c: usize| u32::from(plane[y * 8 + c.min(7)]);
            let want: Vec<u16> = (0..16)
                .map(|x| {
                    let c = x / 2;
                    let v = if x % 2 == 0 { 3 * s(c) + s(c.saturating_sub(1)) + 1 } else { 3 * s(c) + s(c + 1) + 2 };
                    (v >> 2) as u16
                })
                .collect();
            let got: Vec<u16> = out.samples[y * 32..(y + 1) * 32].iter().skip(1).step_by(2).copied().collect();
            assert_eq!(got, want, "row {y}");
        }
    }

    #[test]
    fn tolerates_fill_bytes_before_markers() {
        let data = encode(&grey_dc_image(12, 2));
        let reference = decode(&data).unwrap();
        let mut padded = Vec::new();
        for (i, &b) in data.iter().enumerate() {
            // Double every marker prefix that is not a stuffed zero byte.
            if b == 0xFF && data.get(i + 1).is_some_and(|&n| n != 0) && i > 0 {
                padded.extend_from_slice(&[0xFF, 0xFF]);
            }
            padded.push(b);
        }
        assert_eq!(decode(&padded).unwrap(), reference);
    }

    #[test]
    fn rejects_non_sequential_scans() {
        let data = encode(&grey_dc_image(12, 0));
        let sos = data.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        // SOS payload: Ns, (Cs, Td/Ta), Ss, Se, Ah/Al.
        let mut broken = data.clone();
        broken[sos + 8] = 0; // Se = 0, as in the corrupt JPEG-lossy.dcm
        assert!(matches!(decode(&broken), Err(Jpeg12Error::NotSequentialScan { se: 0, .. })));
        let mut broken = data;
        broken[sos + 9] = 0x01; // Al = 1
        assert!(matches!(decode(&broken), Err(Jpeg12Error::NotSequentialScan { al: 1, .. })));
    }

    #[test]
    fn rejects_unsupported_frames() {
        let data = encode(&grey_dc_image(12, 0));
        let sof = data.windows(2).position(|w| w == [0xFF, 0xC1]).unwrap();
        for marker in [0xC2, 0xC3, 0xC9, 0xF7] {
            let mut other = data.clone();
            other[sof + 1] = marker;
            assert!(matches!(decode(&other), Err(Jpeg12Error::Unsupported(_))), "{marker:#x}");
        }
        let mut p16 = data.clone();
        p16[sof + 4] = 16;
        assert!(matches!(decode(&p16), Err(Jpeg12Error::Unsupported(_))));
        // 65535 x 65535 x 1 would need 8 GiB: refused from the header alone.
        let mut huge = data;
        huge[sof + 5..sof + 9].copy_from_slice(&[0xFF; 4]);
        assert!(matches!(decode(&huge), Err(Jpeg12Error::Unsupported(_))));
    }

    #[test]
    fn refuses_a_large_header_with_too_little_data_before_allocating() {
        let mut data = encode(&grey_dc_image(12, 0));
        let sof = data.windows(2).position(|w| w == [0xFF, 0xC1]).unwrap();
        // 16000 x 16000 passes the size cap but would need at least 1 MB of entropy data.
        data[sof + 5..sof + 9].copy_from_slice(&[0x3E, 0x80, 0x3E, 0x80]);
        assert_eq!(decode(&data), Err(Jpeg12Error::Truncated));
    }

    #[test]
    fn rejects_empty_and_random_input() {
        assert_eq!(decode(&[]), Err(Jpeg12Error::NotJpeg));
        assert_eq!(decode(&[0xFF]), Err(Jpeg12Error::NotJpeg));
        assert_eq!(decode(&[0xFF, 0xD8]), Err(Jpeg12Error::Truncated));
        let mut rng = Rng(12345);
        for len in 0..600 {
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert!(decode(&bytes).is_err());
            if len >= 2 {
                bytes[..2].copy_from_slice(&[0xFF, 0xD8]);
                assert!(decode(&bytes).is_err());
            }
        }
    }

    #[test]
    fn rejects_every_truncation() {
        for data in [encode(&grey_dc_image(8, 0)), encode(&grey_dc_image(12, 1))] {
            assert!(decode(&data).is_ok());
            for len in 0..data.len() {
                assert!(decode(&data[..len]).is_err(), "prefix of {len} bytes decoded");
            }
        }
    }

    #[test]
    fn survives_corrupted_streams() {
        let data = encode(&TestImage {
            width: 40,
            height: 24,
            precision: 12,
            sampling: vec![(2, 1), (1, 1)],
            restart: 2,
            interleaved: true,
            quant: [7; 64],
            blocks: Box::new(|c, bx, by| {
                let mut zz = dc_only((c * 50 + bx * 30) as i32 - 100);
                zz[by % 64 + 1] = 9;
                zz
            }),
        });
        assert!(decode(&data).is_ok());
        let mut rng = Rng(777);
        for _ in 0..3000 {
            let mut bad = data.clone();
            for _ in 0..rng.range(1, 4) {
                let i = rng.next() as usize % bad.len();
                bad[i] = rng.next() as u8;
            }
            let _ = decode(&bad); // must return, not panic
        }
    }
}
