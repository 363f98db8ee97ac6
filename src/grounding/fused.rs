//! The grounder network in inference form: every batch norm folded into the convolution before
//! it and depthwise convolutions run as grouped convolutions. Same function as `GrounderNet`
//! in eval mode, in far fewer passes over memory (the CPU backend is memory-bound here).

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions};

use crate::grounding::model::{
    ChangeHead, ConvBn, Depthwise3, Encoder, GrounderNet, MatchHead, SepBlock, TEMPLATE_CELLS, TEMPLATE_CONTEXT,
};

/// A convolution with its bias (and any batch norm after it) folded in, optionally + ReLU.
#[derive(Clone, Debug)]
struct Conv {
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
    relu: bool,
}

impl Conv {
    /// `weight` [cout, cin/groups, k, k]; `bn` rescales each output channel.
    fn fold(weight: Tensor<4>, bias: Option<Tensor<1>>, bn: Option<&BatchNorm>, options: ConvOptions<2>, relu: bool) -> Conv {
        let [cout, _, _, _] = weight.dims();
        let device = weight.device();
        let bias = bias.unwrap_or_else(|| Tensor::zeros([cout], &device));
        let (weight, bias) = match bn {
            Some(bn) => {
                // bn(y) = (y − mean)·γ/√(var + ε) + β
                let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
                let weight = weight * scale.clone().reshape([cout, 1, 1, 1]);
                let bias = (bias - bn.running_mean.value()) * scale + bn.beta.val();
                (weight, bias)
            }
            None => (weight, bias),
        };
        Conv { weight, bias, options, relu }
    }

    fn plain(conv: &Conv2d, bn: Option<&BatchNorm>, relu: bool) -> Conv {
        let [k, _] = conv.kernel_size;
        let pad = conv.dilation[0] * (k / 2);
        let options = ConvOptions::new(conv.stride, [pad, pad], conv.dilation, conv.groups);
        Conv::fold(conv.weight.val(), conv.bias.as_ref().map(|b| b.val()), bn, options, relu)
    }

    fn conv_bn(c: &ConvBn) -> Conv {
        Conv::plain(&c.conv, Some(&c.bn), true)
    }

    fn depthwise(dw: &Depthwise3, bn: &BatchNorm) -> Conv {
        let [_, c, kh, kw] = dw.weight.val().dims();
        let d = dw.dilation;
        let options = ConvOptions::new([1, 1], [d, d], [d, d], c);
        Conv::fold(dw.weight.val().reshape([c, 1, kh, kw]), None, Some(bn), options, true)
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv2d(x, self.weight.clone(), Some(self.bias.clone()), self.options.clone());
        if self.relu { relu(y) } else { y }
    }
}

/// x + pointwise(depthwise(x)).
#[derive(Clone, Debug)]
struct Block {
    dw: Conv,
    pw: Conv,
}

impl Block {
    fn new(b: &SepBlock) -> Block {
        Block { dw: Conv::depthwise(&b.dw, &b.dw_bn), pw: Conv::conv_bn(&b.pw) }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x.clone() + self.pw.forward(self.dw.forward(x))
    }
}

#[derive(Clone, Debug)]
struct FusedEncoder {
    stem: Conv,
    down4: Conv,
    blocks4: [Block; 2],
    down8: Conv,
    blocks8: [Block; 2],
}

impl FusedEncoder {
    fn new(e: &Encoder) -> Self {
        FusedEncoder {
            stem: Conv::conv_bn(&e.stem),
            down4: Conv::conv_bn(&e.down4),
            blocks4: [Block::new(&e.block4a), Block::new(&e.block4b)],
            down8: Conv::conv_bn(&e.down8),
            blocks8: [Block::new(&e.block8a), Block::new(&e.block8b)],
        }
    }

    fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let x = self.down4.forward(self.stem.forward(x));
        let f4 = self.blocks4[1].forward(self.blocks4[0].forward(x));
        let x = self.down8.forward(f4.clone());
        let f8 = self.blocks8[1].forward(self.blocks8[0].forward(x));
        (f4, f8)
    }
}

fn upsample_to(x: Tensor<4>, like: &Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = like.dims();
    interpolate(x, InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]))
}

/// `GrounderNet` folded for inference.
#[derive(Clone, Debug)]
pub struct FusedNet {
    encoder: FusedEncoder,
    coarse: Conv,
    coarse_ctx: Block,
    fuse: Conv,
    fuse_ctx: Block,
    change_out: Conv,
    adjust: Conv,
    mix: Conv,
    score: Conv,
    size: Conv,
}

impl FusedNet {
    pub fn new(net: &GrounderNet) -> FusedNet {
        let (c, m): (&ChangeHead, &MatchHead) = (&net.change, &net.matcher);
        FusedNet {
            encoder: FusedEncoder::new(&net.encoder),
            coarse: Conv::conv_bn(&c.coarse),
            coarse_ctx: Block::new(&c.coarse_ctx),
            fuse: Conv::conv_bn(&c.fuse),
            fuse_ctx: Block::new(&c.fuse_ctx),
            change_out: Conv::plain(&c.out, None, false),
            adjust: Conv::plain(&m.adjust, None, false),
            mix: Conv::conv_bn(&m.mix),
            score: Conv::plain(&m.score, None, false),
            size: Conv::plain(&m.size, None, false),
        }
    }

    /// As `GrounderNet::change_logits`.
    pub fn change_logits(&self, a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
        let [n, _, _, _] = a.dims();
        let (f4, f8) = self.encoder.forward(Tensor::cat(vec![a, b], 0));
        let [_, c4, h4, w4] = f4.dims();
        let [_, c8, h8, w8] = f8.dims();
        let (a4, b4) = (f4.clone().slice([0..n, 0..c4, 0..h4, 0..w4]), f4.slice([n..2 * n, 0..c4, 0..h4, 0..w4]));
        let (a8, b8) = (f8.clone().slice([0..n, 0..c8, 0..h8, 0..w8]), f8.slice([n..2 * n, 0..c8, 0..h8, 0..w8]));
        let d8 = Tensor::cat(vec![(a8.clone() - b8.clone()).abs(), a8, b8], 1);
        let c8 = self.coarse_ctx.forward(self.coarse.forward(d8));
        let up = upsample_to(c8, &a4);
        let d4 = Tensor::cat(vec![(a4.clone() - b4.clone()).abs(), a4 * b4, up], 1);
        self.change_out.forward(self.fuse_ctx.forward(self.fuse.forward(d4)))
    }

    fn embed(&self, f: (Tensor<4>, Tensor<4>)) -> Tensor<4> {
        let (f4, f8) = f;
        let up = upsample_to(f8, &f4);
        self.adjust.forward(Tensor::cat(vec![f4, up], 1))
    }

    /// As `GrounderNet::match_maps`.
    pub fn match_maps(&self, template: Tensor<4>, search: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let t = self.embed(self.encoder.forward(template));
        let [b, c, _, _] = t.dims();
        let (lo, hi) = (TEMPLATE_CONTEXT, TEMPLATE_CONTEXT + TEMPLATE_CELLS);
        let kernel = t.slice([0..b, 0..c, lo..hi, lo..hi]);
        let half = TEMPLATE_CELLS / 2;
        let s = self.embed(self.encoder.forward(search)).pad((half, half, half, half), 0.0);
        // Each (item, channel) its own group: one grouped convolution for the whole batch.
        let [_, _, h, w] = s.dims();
        let corr = conv2d(
            s.reshape([1, b * c, h, w]),
            kernel.reshape([b * c, 1, TEMPLATE_CELLS, TEMPLATE_CELLS]),
            None,
            ConvOptions::new([1, 1], [0, 0], [1, 1], b * c),
        );
        let [_, _, ho, wo] = corr.dims();
        let corr = corr.reshape([b, c, ho, wo]) / (TEMPLATE_CELLS * TEMPLATE_CELLS) as f64;
        let x = self.mix.forward(corr);
        (self.score.forward(x.clone()), self.size.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grounding::model::{GrounderConfig, TEMPLATE_CROP_PX};
    use burn::tensor::Distribution;

    fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    #[test]
    fn folded_network_computes_the_same_maps() {
        let device = Device::flex();
        // A net with non-trivial batch-norm statistics: the shipped weights.
        let net = crate::grounding::weights::load(&crate::grounding::WeightsSource::Embedded, &device)
            .map(|(net, _)| net)
            .unwrap_or_else(|_| GrounderConfig::new().init(&device));
        let fused = FusedNet::new(&net);
        let a = Tensor::<4>::random([1, 1, 64, 96], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<4>::random([1, 1, 64, 96], Distribution::Normal(0.0, 1.0), &device);
        let d = max_abs_diff(net.change_logits(a.clone(), b.clone()), fused.change_logits(a, b));
        assert!(d < 1e-3, "change logits differ by {d}");
        let t = Tensor::<4>::random([2, 1, TEMPLATE_CROP_PX, TEMPLATE_CROP_PX], Distribution::Normal(0.0, 1.0), &device);
        let s = Tensor::<4>::random([2, 1, 64, 80], Distribution::Normal(0.0, 1.0), &device);
        let (score, size) = net.match_maps(t.clone(), s.clone());
        let (fscore, fsize) = fused.match_maps(t, s);
        let (ds, dz) = (max_abs_diff(score, fscore), max_abs_diff(size, fsize));
        assert!(ds < 1e-3 && dz < 1e-3, "match maps differ by {ds} / {dz}");
    }
}
