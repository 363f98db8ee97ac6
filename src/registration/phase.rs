//! Phase correlation: the translation between two equally sized images, to sub-pixel precision.

use rustfft::{FftPlanner, num_complex::Complex32};

use crate::study::gray::GrayImage;

/// Result of a phase correlation: `moving(x, y) ≈ fixed(x + dx, y + dy)`.
#[derive(Clone, Copy, Debug)]
pub struct Shift {
    pub dx: f64,
    pub dy: f64,
    /// Height of the correlation peak, 0..1 (1 = identical content up to the shift).
    pub peak: f64,
}

/// Reusable FFT plans and window for one image size.
pub struct PhaseCorrelator {
    width: usize,
    height: usize,
    window: Vec<f32>,
    row_fft: std::sync::Arc<dyn rustfft::Fft<f32>>,
    col_fft: std::sync::Arc<dyn rustfft::Fft<f32>>,
    row_ifft: std::sync::Arc<dyn rustfft::Fft<f32>>,
    col_ifft: std::sync::Arc<dyn rustfft::Fft<f32>>,
}

impl PhaseCorrelator {
    pub fn new(width: usize, height: usize) -> Self {
        let mut planner = FftPlanner::new();
        let hann = |n: usize| -> Vec<f32> {
            (0..n).map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * (i as f32 + 0.5) / n as f32).cos()).collect()
        };
        let (wx, wy) = (hann(width), hann(height));
        let window = (0..height)
            .flat_map(|y| {
                let wy_y = wy[y];
                wx.iter().map(move |&v| v * wy_y)
            })
            .collect::<Vec<_>>();
        Self {
            width,
            height,
            window,
            row_fft: planner.plan_fft_forward(width),
            col_fft: planner.plan_fft_forward(height),
            row_ifft: planner.plan_fft_inverse(width),
            col_ifft: planner.plan_fft_inverse(height),
        }
    }

    /// Windowed, mean-removed spectrum of `img` (which must have this correlator's size).
    pub fn spectrum(&self, img: &GrayImage) -> Vec<Complex32> {
        assert_eq!((img.width, img.height), (self.width, self.height), "phase correlator size mismatch");
        let (mean, _) = img.mean_std();
        let mut buf: Vec<Complex32> = img.data.iter().zip(&self.window).map(|(&v, &w)| Complex32::new((v - mean) * w, 0.0)).collect();
        self.fft2(&mut buf, false);
        buf
    }

    /// Shift between two precomputed spectra (`fixed`, `moving`).
    pub fn correlate_spectra(&self, fixed: &[Complex32], moving: &[Complex32]) -> Shift {
        self.correlate_spectra_peaks(fixed, moving, 1).into_iter().next().unwrap_or(Shift { dx: 0.0, dy: 0.0, peak: 0.0 })
    }

    /// The `k` highest peaks of the correlation surface, highest first, each at least 4 px
    /// from the others: a repeated pattern or a large change can lift a wrong peak above the
    /// true one, so a caller can rank these by another measure.
    pub fn correlate_spectra_peaks(&self, fixed: &[Complex32], moving: &[Complex32], k: usize) -> Vec<Shift> {
        let mut cross: Vec<Complex32> = fixed
            .iter()
            .zip(moving)
            .map(|(a, b)| {
                let c = a * b.conj();
                let n = c.norm();
                if n > 1e-12 { c / n } else { Complex32::new(0.0, 0.0) }
            })
            .collect();
        self.fft2(&mut cross, true);
        let scale = 1.0 / (self.width * self.height) as f32;
        let surface: Vec<f32> = cross.iter().map(|c| c.re * scale).collect();
        let (w, h) = (self.width, self.height);
        let at = |x: isize, y: isize| -> f32 { surface[(y.rem_euclid(h as isize) as usize) * w + x.rem_euclid(w as isize) as usize] };
        let parabola = |l: f32, c: f32, r: f32| -> f64 {
            let denom = l - 2.0 * c + r;
            if denom.abs() < 1e-12 { 0.0 } else { (0.5 * (l - r) / denom).clamp(-0.5, 0.5) as f64 }
        };
        let wrap = |p: usize, n: usize| -> f64 { if p > n / 2 { p as f64 - n as f64 } else { p as f64 } };
        // The highest point, then the highest outside a 7×7 box around each point taken so far;
        // the surface is copied for masking only when more than one peak is wanted.
        let mut masked: Option<Vec<f32>> = None;
        let mut peaks: Vec<(usize, f32)> = Vec::with_capacity(k);
        for n in 0..k {
            let view = masked.as_deref().unwrap_or(&surface);
            let Some((i, &v)) = view.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else { break };
            if v == f32::NEG_INFINITY {
                break;
            }
            peaks.push((i, surface[i]));
            if n + 1 < k {
                let m = masked.get_or_insert_with(|| surface.clone());
                let (x, y) = ((i % w) as isize, (i / w) as isize);
                for oy in -3..=3 {
                    for ox in -3..=3 {
                        m[(y + oy).rem_euclid(h as isize) as usize * w + (x + ox).rem_euclid(w as isize) as usize] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        peaks
            .into_iter()
            .map(|(i, peak)| {
                let (px, py) = (i % w, i / w);
                let (pxi, pyi) = (px as isize, py as isize);
                let sub_x = parabola(at(pxi - 1, pyi), peak, at(pxi + 1, pyi));
                let sub_y = parabola(at(pxi, pyi - 1), peak, at(pxi, pyi + 1));
                Shift { dx: wrap(px, w) + sub_x, dy: wrap(py, h) + sub_y, peak: peak as f64 }
            })
            .collect()
    }

    pub fn correlate(&self, fixed: &GrayImage, moving: &GrayImage) -> Shift {
        self.correlate_spectra(&self.spectrum(fixed), &self.spectrum(moving))
    }

    /// 2-D FFT in place: all rows in one call, then all columns the same way through a
    /// transposed copy (contiguous, so rustfft batches them too).
    fn fft2(&self, buf: &mut [Complex32], inverse: bool) {
        let (w, h) = (self.width, self.height);
        let (row, col) = if inverse { (&self.row_ifft, &self.col_ifft) } else { (&self.row_fft, &self.col_fft) };
        row.process(buf);
        let mut transposed = vec![Complex32::new(0.0, 0.0); w * h];
        transpose(buf, &mut transposed, w, h);
        col.process(&mut transposed);
        transpose(&transposed, buf, h, w);
    }
}

/// `out` (h × w) = `input` (w × h) transposed, in cache-sized tiles.
fn transpose(input: &[Complex32], out: &mut [Complex32], w: usize, h: usize) {
    const TILE: usize = 16;
    for y0 in (0..h).step_by(TILE) {
        for x0 in (0..w).step_by(TILE) {
            for y in y0..(y0 + TILE).min(h) {
                for x in x0..(x0 + TILE).min(w) {
                    out[x * h + y] = input[y * w + x];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texture(w: usize, h: usize) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as f32, y as f32);
            (x * 0.31).sin() * (y * 0.17).cos() + ((x + 2.0 * y) * 0.05).sin() + ((x * y) * 0.002).sin()
        })
    }

    #[test]
    fn recovers_integer_shift() {
        let base = texture(160, 140);
        let fixed = base.crop(10, 10, 128, 112, 0.0);
        // moving(x, y) = base(x + 17, y + 4) = fixed(x + 7, y - 6)
        let moving = base.crop(17, 4, 128, 112, 0.0);
        let pc = PhaseCorrelator::new(128, 112);
        let s = pc.correlate(&fixed, &moving);
        assert!((s.dx - 7.0).abs() < 0.3 && (s.dy + 6.0).abs() < 0.3, "{s:?}");
        assert!(s.peak > 0.3, "{s:?}");
    }
}
