//! `GrayImage`: a single-channel f32 raster and the resampling/filtering ops the core shares.

/// A row-major single-channel image of `f32` samples.
#[derive(Clone, Debug, PartialEq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl GrayImage {
    pub fn new(width: usize, height: usize) -> Self {
        Self::filled(width, height, 0.0)
    }

    pub fn filled(width: usize, height: usize, value: f32) -> Self {
        Self { width, height, data: vec![value; width * height] }
    }

    /// Wraps `data`; `None` when its length is not `width * height`.
    pub fn from_vec(width: usize, height: usize, data: Vec<f32>) -> Option<Self> {
        (data.len() == width * height).then_some(Self { width, height, data })
    }

    pub fn from_fn(width: usize, height: usize, mut f: impl FnMut(usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                data.push(f(x, y));
            }
        }
        Self { width, height, data }
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize, v: f32) {
        self.data[y * self.width + x] = v;
    }

    /// Value at integer coordinates clamped to the border.
    #[inline]
    pub fn get_clamped(&self, x: isize, y: isize) -> f32 {
        let xc = x.clamp(0, self.width as isize - 1) as usize;
        let yc = y.clamp(0, self.height as isize - 1) as usize;
        self.data[yc * self.width + xc]
    }

    /// Bilinear sample at pixel-centre coordinates (pixel i covers [i, i+1), centre i+0.5 is
    /// addressed as `i as f32`), clamped at the border.
    #[inline]
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let x0 = x.floor();
        let y0 = y.floor();
        let fx = x - x0;
        let fy = y - y0;
        let (xi, yi) = (x0 as isize, y0 as isize);
        let a = self.get_clamped(xi, yi);
        let b = self.get_clamped(xi + 1, yi);
        let c = self.get_clamped(xi, yi + 1);
        let d = self.get_clamped(xi + 1, yi + 1);
        let top = a + (b - a) * fx;
        let bottom = c + (d - c) * fx;
        top + (bottom - top) * fy
    }

    /// Bilinear sample that returns `None` outside the image.
    #[inline]
    pub fn sample_inside(&self, x: f32, y: f32) -> Option<f32> {
        if x < -0.5 || y < -0.5 || x > self.width as f32 - 0.5 || y > self.height as f32 - 0.5 {
            return None;
        }
        Some(self.sample(x, y))
    }

    pub fn min_max(&self) -> (f32, f32) {
        self.data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
    }

    pub fn mean_std(&self) -> (f32, f32) {
        mean_std(&self.data)
    }

    /// Value below which `q` (0..=1) of the samples lie, from a sorted copy.
    pub fn percentile(&self, q: f32) -> f32 {
        percentiles(&self.data, &[q])[0]
    }

    /// Resize to `width` × `height`: area averaging when shrinking, bilinear when enlarging.
    pub fn resize(&self, width: usize, height: usize) -> GrayImage {
        if width == self.width && height == self.height {
            return self.clone();
        }
        if width <= self.width && height <= self.height {
            return self.resize_area(width, height);
        }
        let sx = self.width as f32 / width as f32;
        let sy = self.height as f32 / height as f32;
        GrayImage::from_fn(width, height, |x, y| self.sample((x as f32 + 0.5) * sx - 0.5, (y as f32 + 0.5) * sy - 0.5))
    }

    /// Box-filter downsampling with fractional pixel coverage, so no sample is dropped.
    fn resize_area(&self, width: usize, height: usize) -> GrayImage {
        let sx = self.width as f64 / width as f64;
        let sy = self.height as f64 / height as f64;
        let x_spans = coverage_spans(self.width, width, sx);
        let y_spans = coverage_spans(self.height, height, sy);
        // Rows first, into an intermediate of width `width`.
        let mut tmp = vec![0.0f32; width * self.height];
        for y in 0..self.height {
            let row = &self.data[y * self.width..(y + 1) * self.width];
            for (x, span) in x_spans.iter().enumerate() {
                let mut acc = 0.0f64;
                for &(i, w) in span {
                    acc += row[i] as f64 * w;
                }
                tmp[y * width + x] = (acc / sx) as f32;
            }
        }
        let mut out = vec![0.0f32; width * height];
        for (y, span) in y_spans.iter().enumerate() {
            for &(i, w) in span {
                let src = &tmp[i * width..(i + 1) * width];
                let dst = &mut out[y * width..(y + 1) * width];
                for x in 0..width {
                    dst[x] += (src[x] as f64 * w / sy) as f32;
                }
            }
        }
        GrayImage { width, height, data: out }
    }

    /// Crop `[x0, x0+w) × [y0, y0+h)`; pixels outside the image are `fill`.
    pub fn crop(&self, x0: isize, y0: isize, w: usize, h: usize, fill: f32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let sx = x0 + x as isize;
            let sy = y0 + y as isize;
            if sx < 0 || sy < 0 || sx >= self.width as isize || sy >= self.height as isize {
                fill
            } else {
                self.get(sx as usize, sy as usize)
            }
        })
    }

    /// Separable Gaussian blur with standard deviation `sigma` pixels (border clamped).
    pub fn blur(&self, sigma: f32) -> GrayImage {
        if sigma <= 0.0 {
            return self.clone();
        }
        let radius = (sigma * 3.0).ceil() as isize;
        let kernel: Vec<f32> = {
            let k: Vec<f32> = (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
            let s: f32 = k.iter().sum();
            k.into_iter().map(|v| v / s).collect()
        };
        let r = radius as usize;
        // Each pass filters rows of a border-replicated copy, then transposes.
        let pass = |src: &[f32], w: usize, h: usize| -> Vec<f32> {
            let mut out = vec![0.0f32; w * h];
            let mut padded = vec![0.0f32; w + 2 * r];
            for y in 0..h {
                let row = &src[y * w..(y + 1) * w];
                padded[..r].fill(row[0]);
                padded[r..r + w].copy_from_slice(row);
                padded[r + w..].fill(row[w - 1]);
                for x in 0..w {
                    let window = &padded[x..x + 2 * r + 1];
                    let v: f32 = window.iter().zip(&kernel).map(|(a, b)| a * b).sum();
                    out[x * h + y] = v;
                }
            }
            out
        };
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 {
            return self.clone();
        }
        let transposed = pass(&self.data, w, h);
        let data = pass(&transposed, h, w);
        GrayImage { width: w, height: h, data }
    }

    /// Linearly maps the `lo_q`..`hi_q` percentile range to 0..1 and clamps.
    pub fn normalized_percentile(&self, lo_q: f32, hi_q: f32) -> GrayImage {
        let p = percentiles(&self.data, &[lo_q, hi_q]);
        let (lo, hi) = (p[0], p[1]);
        let scale = if hi > lo { 1.0 / (hi - lo) } else { 0.0 };
        self.map(|v| ((v - lo) * scale).clamp(0.0, 1.0))
    }

    /// Zero mean, unit standard deviation (a flat image becomes all zeros).
    pub fn standardized(&self) -> GrayImage {
        let (m, s) = self.mean_std();
        let inv = if s > 1e-6 { 1.0 / s } else { 0.0 };
        self.map(|v| (v - m) * inv)
    }

    pub fn map(&self, mut f: impl FnMut(f32) -> f32) -> GrayImage {
        GrayImage { width: self.width, height: self.height, data: self.data.iter().map(|&v| f(v)).collect() }
    }

    /// Resamples through `image_from_output`, which maps an output pixel centre to
    /// source coordinates; pixels that fall outside are `fill`.
    pub fn warp(&self, width: usize, height: usize, fill: f32, image_from_output: impl Fn(f32, f32) -> (f32, f32)) -> GrayImage {
        GrayImage::from_fn(width, height, |x, y| {
            let (sx, sy) = image_from_output(x as f32, y as f32);
            self.sample_inside(sx, sy).unwrap_or(fill)
        })
    }

    /// 8-bit grey, clamping `lo..hi` to 0..255.
    pub fn to_u8(&self, lo: f32, hi: f32) -> Vec<u8> {
        let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
        self.data.iter().map(|&v| ((v - lo) * scale).round().clamp(0.0, 255.0) as u8).collect()
    }
}

/// For each output index, the source indices it covers and by how much (in source pixels).
fn coverage_spans(src_len: usize, dst_len: usize, scale: f64) -> Vec<Vec<(usize, f64)>> {
    (0..dst_len)
        .map(|d| {
            let start = d as f64 * scale;
            let end = ((d + 1) as f64 * scale).min(src_len as f64);
            let mut span = Vec::new();
            let mut i = start.floor() as usize;
            while (i as f64) < end && i < src_len {
                let lo = start.max(i as f64);
                let hi = end.min(i as f64 + 1.0);
                if hi > lo {
                    span.push((i, hi - lo));
                }
                i += 1;
            }
            span
        })
        .collect()
}

pub fn mean_std(values: &[f32]) -> (f32, f32) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, var.sqrt() as f32)
}

/// Several percentiles (each 0..=1) of `values`, linearly interpolated between order
/// statistics; NaNs are ignored. Selection, not a full sort: this runs on every image the
/// grounder sees.
pub fn percentiles(values: &[f32], qs: &[f32]) -> Vec<f32> {
    let mut v: Vec<f32> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if v.is_empty() {
        return vec![0.0; qs.len()];
    }
    let n = v.len();
    let position = |q: f32| {
        let pos = q.clamp(0.0, 1.0) * (n - 1) as f32;
        let i = pos.floor() as usize;
        (i, (i + 1).min(n - 1), pos - i as f32)
    };
    let mut ranks: Vec<usize> = qs
        .iter()
        .flat_map(|&q| {
            let (i, j, _) = position(q);
            [i, j]
        })
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    // Each selection leaves everything after rank k no smaller than it, so the next (higher)
    // rank is selected within the tail.
    let mut at = std::collections::HashMap::with_capacity(ranks.len());
    let mut start = 0;
    for &k in &ranks {
        let (_, kth, _) = v[start..].select_nth_unstable_by(k - start, |a, b| a.total_cmp(b));
        at.insert(k, *kth);
        start = k;
    }
    qs.iter()
        .map(|&q| {
            let (i, j, f) = position(q);
            at[&i] + (at[&j] - at[&i]) * f
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_resize_preserves_mean() {
        let img = GrayImage::from_fn(10, 7, |x, y| (x * 3 + y * 5) as f32);
        let small = img.resize(3, 2);
        let (m0, _) = img.mean_std();
        let (m1, _) = small.mean_std();
        assert!((m0 - m1).abs() < 1e-3, "{m0} vs {m1}");
    }

    #[test]
    fn blur_keeps_constant_image() {
        let img = GrayImage::filled(9, 9, 4.0);
        let b = img.blur(1.5);
        assert!(b.data.iter().all(|&v| (v - 4.0).abs() < 1e-5));
    }

    #[test]
    fn bilinear_sample_interpolates() {
        let img = GrayImage::from_vec(2, 1, vec![0.0, 10.0]).unwrap();
        assert_eq!(img.sample(0.25, 0.0), 2.5);
        assert_eq!(img.sample(-3.0, 0.0), 0.0);
        assert_eq!(img.sample_inside(2.0, 0.0), None);
    }

    #[test]
    fn percentiles_interpolate() {
        let v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
        assert_eq!(percentiles(&v, &[0.0, 0.5, 1.0]), vec![0.0, 50.0, 100.0]);
        // Selection gives what a full sort gives, in any order of the quantiles.
        let shuffled: Vec<f32> = (0..1001).map(|i| ((i * 7919) % 1001) as f32 * 0.5).collect();
        let mut sorted = shuffled.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let qs = [0.995, 0.005, 0.5, 0.25, 0.7513];
        for (q, got) in qs.iter().zip(percentiles(&shuffled, &qs)) {
            let pos = q * 1000.0;
            let (i, f) = (pos.floor() as usize, pos - pos.floor());
            let want = sorted[i] + (sorted[(i + 1).min(1000)] - sorted[i]) * f;
            assert!((got - want).abs() < 1e-4, "q {q}: {got} vs {want}");
        }
    }
}
