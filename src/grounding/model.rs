//! The grounder network: a shared (Siamese) encoder, a change head that turns a pair into a
//! dense change map, and a correlation head that matches reference features over a target.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// Feature stride of the fine level (change map and correlation resolution).
pub const STRIDE: usize = 4;
/// Template size in feature cells: a reference box is scaled to `TEMPLATE_CELLS * STRIDE` px.
pub const TEMPLATE_CELLS: usize = 8;
/// Context (cells) around the template on each side of the template crop.
pub const TEMPLATE_CONTEXT: usize = 2;
/// Template box side in scaled pixels.
pub const TEMPLATE_PX: usize = TEMPLATE_CELLS * STRIDE;
/// Side of the template crop fed to the encoder (box plus context), scaled pixels.
pub const TEMPLATE_CROP_PX: usize = (TEMPLATE_CELLS + 2 * TEMPLATE_CONTEXT) * STRIDE;

#[derive(Config, Debug)]
pub struct GrounderConfig {
    #[config(default = 16)]
    pub c1: usize,
    #[config(default = 32)]
    pub c4: usize,
    #[config(default = 64)]
    pub c8: usize,
    #[config(default = 32)]
    pub head: usize,
}

/// conv → batch norm → ReLU.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub(crate) conv: Conv2d,
    pub(crate) bn: BatchNorm,
}

impl ConvBn {
    fn new(cin: usize, cout: usize, kernel: usize, stride: usize, dilation: usize, device: &Device) -> Self {
        let pad = dilation * (kernel / 2);
        ConvBn {
            conv: Conv2dConfig::new([cin, cout], [kernel, kernel])
                .with_stride([stride, stride])
                .with_dilation([dilation, dilation])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(cout).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(self.conv.forward(x)))
    }
}

/// Depthwise 3×3 convolution written as nine shifted multiply-adds, so that training on the
/// CPU backend does not fall into a per-group loop in the weight gradient.
#[derive(Module, Debug)]
pub struct Depthwise3 {
    pub(crate) weight: Param<Tensor<4>>,
    pub(crate) dilation: usize,
}

impl Depthwise3 {
    fn new(c: usize, dilation: usize, device: &Device) -> Self {
        let bound = (6.0f64 / 9.0).sqrt();
        let w = Tensor::<4>::random([1, c, 3, 3], Distribution::Uniform(-bound, bound), device);
        Depthwise3 { weight: Param::from_tensor(w), dilation }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let d = self.dilation;
        let padded = x.pad((d, d, d, d), 0.0);
        let weight = self.weight.val();
        let mut acc: Option<Tensor<4>> = None;
        for i in 0..3 {
            for j in 0..3 {
                let tap = weight.clone().slice([0..1, 0..c, i..i + 1, j..j + 1]);
                let term = padded.clone().slice([0..b, 0..c, i * d..i * d + h, j * d..j * d + w]) * tap;
                acc = Some(match acc {
                    Some(a) => a + term,
                    None => term,
                });
            }
        }
        acc.expect("3x3 taps")
    }
}

/// Depthwise 3×3 → BN → ReLU → pointwise 1×1 → BN → ReLU, added to the input.
#[derive(Module, Debug)]
pub struct SepBlock {
    pub(crate) dw: Depthwise3,
    pub(crate) dw_bn: BatchNorm,
    pub(crate) pw: ConvBn,
}

impl SepBlock {
    fn new(c: usize, dilation: usize, device: &Device) -> Self {
        SepBlock {
            dw: Depthwise3::new(c, dilation, device),
            dw_bn: BatchNormConfig::new(c).init(device),
            pw: ConvBn::new(c, c, 1, 1, 1, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = relu(self.dw_bn.forward(self.dw.forward(x.clone())));
        x + self.pw.forward(y)
    }
}

/// Shared encoder: image [B,1,H,W] → (fine [B,c4,H/4,W/4], coarse [B,c8,H/8,W/8]).
#[derive(Module, Debug)]
pub struct Encoder {
    pub(crate) stem: ConvBn,
    pub(crate) down4: ConvBn,
    pub(crate) block4a: SepBlock,
    pub(crate) block4b: SepBlock,
    pub(crate) down8: ConvBn,
    pub(crate) block8a: SepBlock,
    pub(crate) block8b: SepBlock,
}

impl Encoder {
    fn new(cfg: &GrounderConfig, device: &Device) -> Self {
        Encoder {
            stem: ConvBn::new(1, cfg.c1, 3, 2, 1, device),
            down4: ConvBn::new(cfg.c1, cfg.c4, 3, 2, 1, device),
            block4a: SepBlock::new(cfg.c4, 1, device),
            block4b: SepBlock::new(cfg.c4, 2, device),
            down8: ConvBn::new(cfg.c4, cfg.c8, 3, 2, 1, device),
            block8a: SepBlock::new(cfg.c8, 1, device),
            block8b: SepBlock::new(cfg.c8, 2, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let x = self.stem.forward(x);
        let f4 = self.block4b.forward(self.block4a.forward(self.down4.forward(x)));
        let f8 = self.block8b.forward(self.block8a.forward(self.down8.forward(f4.clone())));
        (f4, f8)
    }
}

/// Change head: both images' features → change logits at stride 4.
#[derive(Module, Debug)]
pub struct ChangeHead {
    pub(crate) coarse: ConvBn,
    pub(crate) coarse_ctx: SepBlock,
    pub(crate) fuse: ConvBn,
    pub(crate) fuse_ctx: SepBlock,
    pub(crate) out: Conv2d,
}

impl ChangeHead {
    fn new(cfg: &GrounderConfig, device: &Device) -> Self {
        ChangeHead {
            coarse: ConvBn::new(3 * cfg.c8, cfg.head, 3, 1, 1, device),
            coarse_ctx: SepBlock::new(cfg.head, 2, device),
            fuse: ConvBn::new(2 * cfg.c4 + cfg.head, cfg.head, 3, 1, 1, device),
            fuse_ctx: SepBlock::new(cfg.head, 1, device),
            out: Conv2dConfig::new([cfg.head, 1], [1, 1]).init(device),
        }
    }

    /// `a`, `b`: encoder outputs of the two (aligned) images. Returns logits [B,1,H/4,W/4].
    pub fn forward(&self, a: (Tensor<4>, Tensor<4>), b: (Tensor<4>, Tensor<4>)) -> Tensor<4> {
        let (a4, a8) = a;
        let (b4, b8) = b;
        let d8 = Tensor::cat(vec![(a8.clone() - b8.clone()).abs(), a8, b8], 1);
        let c8 = self.coarse_ctx.forward(self.coarse.forward(d8));
        let [_, _, h4, w4] = a4.dims();
        let up = interpolate(c8, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h4, w4]));
        let d4 = Tensor::cat(vec![(a4.clone() - b4.clone()).abs(), a4 * b4, up], 1);
        self.out.forward(self.fuse_ctx.forward(self.fuse.forward(d4)))
    }
}

/// Correlation head: reference template features matched over target features.
#[derive(Module, Debug)]
pub struct MatchHead {
    pub(crate) adjust: Conv2d,
    pub(crate) mix: ConvBn,
    pub(crate) score: Conv2d,
    pub(crate) size: Conv2d,
}

impl MatchHead {
    fn new(cfg: &GrounderConfig, device: &Device) -> Self {
        let c = cfg.c4 + cfg.c8;
        MatchHead {
            adjust: Conv2dConfig::new([c, cfg.head], [1, 1]).init(device),
            mix: ConvBn::new(cfg.head, cfg.head, 3, 1, 1, device),
            score: Conv2dConfig::new([cfg.head, 1], [1, 1]).init(device),
            size: Conv2dConfig::new([cfg.head, 2], [1, 1]).init(device),
        }
    }

    /// Concatenates fine and (upsampled) coarse features at stride 4, then projects them.
    fn embed(&self, f: (Tensor<4>, Tensor<4>)) -> Tensor<4> {
        let (f4, f8) = f;
        let [_, _, h, w] = f4.dims();
        let up = interpolate(f8, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]));
        self.adjust.forward(Tensor::cat(vec![f4, up], 1))
    }

    /// `template`: encoder output of template crops [B,1,TEMPLATE_CROP_PX²];
    /// `search`: encoder output of search images [B,1,H,W].
    /// Returns (score logits [B,1,H/4+1,W/4+1], log size ratios [B,2,H/4+1,W/4+1]); output
    /// cell (i, j) puts the box centre at scaled pixel (STRIDE·j, STRIDE·i) of the search image.
    pub fn forward(&self, template: (Tensor<4>, Tensor<4>), search: (Tensor<4>, Tensor<4>)) -> (Tensor<4>, Tensor<4>) {
        let t = self.embed(template);
        let [b, c, _, _] = t.dims();
        let (lo, hi) = (TEMPLATE_CONTEXT, TEMPLATE_CONTEXT + TEMPLATE_CELLS);
        let kernel = t.slice([0..b, 0..c, lo..hi, lo..hi]);
        let s = self.embed(search);
        let half = TEMPLATE_CELLS / 2;
        let s = s.pad((half, half, half, half), 0.0);
        let corr = depthwise_xcorr(s, kernel) / (TEMPLATE_CELLS * TEMPLATE_CELLS) as f64;
        let x = self.mix.forward(corr);
        (self.score.forward(x.clone()), self.size.forward(x))
    }
}

/// Per-channel cross-correlation of `x` [B,C,H,W] with `k` [B,C,kh,kw] (valid), as shifted
/// multiply-adds: its gradient is cheap on every backend, unlike grouped conv on flex.
pub fn depthwise_xcorr(x: Tensor<4>, k: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let [_, _, kh, kw] = k.dims();
    let (ho, wo) = (h - kh + 1, w - kw + 1);
    let mut acc: Option<Tensor<4>> = None;
    for i in 0..kh {
        for j in 0..kw {
            let term = x.clone().slice([0..b, 0..c, i..i + ho, j..j + wo]) * k.clone().slice([0..b, 0..c, i..i + 1, j..j + 1]);
            acc = Some(match acc {
                Some(a) => a + term,
                None => term,
            });
        }
    }
    acc.expect("kernel has at least one cell")
}

/// The whole grounder.
#[derive(Module, Debug)]
pub struct GrounderNet {
    pub encoder: Encoder,
    pub change: ChangeHead,
    pub matcher: MatchHead,
}

impl GrounderConfig {
    pub fn init(&self, device: &Device) -> GrounderNet {
        GrounderNet { encoder: Encoder::new(self, device), change: ChangeHead::new(self, device), matcher: MatchHead::new(self, device) }
    }
}

impl GrounderNet {
    /// Change logits [B,1,H/4,W/4] for aligned pairs `a`, `b` [B,1,H,W] (H, W multiples of 8).
    pub fn change_logits(&self, a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
        let [n, _, _, _] = a.dims();
        // One encoder pass over both images keeps batch statistics shared in training.
        let (f4, f8) = self.encoder.forward(Tensor::cat(vec![a, b], 0));
        let [_, c4, h4, w4] = f4.dims();
        let [_, c8, h8, w8] = f8.dims();
        let fa = (f4.clone().slice([0..n, 0..c4, 0..h4, 0..w4]), f8.clone().slice([0..n, 0..c8, 0..h8, 0..w8]));
        let fb = (f4.slice([n..2 * n, 0..c4, 0..h4, 0..w4]), f8.slice([n..2 * n, 0..c8, 0..h8, 0..w8]));
        self.change.forward(fa, fb)
    }

    /// Match scores and size ratios of `template` crops [B,1,48,48] over `search` [B,1,H,W].
    pub fn match_maps(&self, template: Tensor<4>, search: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let t = self.encoder.forward(template);
        let s = self.encoder.forward(search);
        self.matcher.forward(t, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_documented_strides() {
        let device = Device::flex();
        let model = GrounderConfig::new().init(&device);
        let a = Tensor::<4>::zeros([2, 1, 64, 96], &device);
        let logits = model.change_logits(a.clone(), a);
        assert_eq!(logits.dims(), [2, 1, 16, 24]);
        let t = Tensor::<4>::zeros([2, 1, TEMPLATE_CROP_PX, TEMPLATE_CROP_PX], &device);
        let s = Tensor::<4>::zeros([2, 1, 64, 80], &device);
        let (score, size) = model.match_maps(t, s);
        assert_eq!(score.dims(), [2, 1, 17, 21]);
        assert_eq!(size.dims(), [2, 2, 17, 21]);
    }

    #[test]
    fn depthwise_xcorr_matches_direct_sum() {
        let device = Device::flex();
        let x: Vec<f32> = (0..2 * 5 * 5).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..2 * 2 * 2).map(|i| (i as f32 * 0.91).cos()).collect();
        let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), [1, 2, 5, 5]), &device);
        let kt = Tensor::<4>::from_data(TensorData::new(k.clone(), [1, 2, 2, 2]), &device);
        let out: Vec<f32> = depthwise_xcorr(xt, kt).try_into_vec_as::<f32>().unwrap();
        // channel 1, output (2, 3)
        let (c, i, j) = (1usize, 2usize, 3usize);
        let mut want = 0.0;
        for di in 0..2 {
            for dj in 0..2 {
                want += x[c * 25 + (i + di) * 5 + j + dj] * k[c * 4 + di * 2 + dj];
            }
        }
        assert!((out[c * 16 + i * 4 + j] - want).abs() < 1e-5);
    }
}
