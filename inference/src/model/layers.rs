//! The ResUNet's building blocks, named like the PyTorch modules so that
//! `state_dict` keys map one to one onto `VarBuilder` paths
//! (`conv1.weight`, `gn1.bias`, `se.fc.0.weight`, `W_g.1.running_mean`, ...).
//!
//! - Residual block with squeeze-and-excitation: He et al., "Deep residual
//!   learning", 2016; Hu et al., "Squeeze-and-excitation networks", 2018.
//! - Attention gate: Oktay et al., "Attention U-Net", 2018.
//!
//! BatchNorm runs in inference mode only (running statistics). Our own model
//! is trained with those statistics frozen at mean 0 / variance 1, so each
//! BatchNorm acts as a learned per-channel affine map and training and
//! inference compute the same function. Dropout (p=0.1 in the original) is
//! the identity at inference and is not used in training.

use std::sync::{Arc, OnceLock};

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::conv::{conv2d_same, winograd_in_bands_pays, winograd_kernel_kept, winograd_pays};
use super::norm::GroupNormRelu;
use super::upconv::UpConv2x2;
use super::winograd::{BandedWinogradConv3x3, WinogradConv3x3, WinogradKernel};

/// Norm epsilon of every GroupNorm and BatchNorm in the original network.
const NORM_EPS: f64 = 1e-5;

/// Whether `x` goes through inference-only fused CPU kernels: on the CPU, with
/// no gradient tracked through `x` or the layer's parameter `param`.
fn inference_on_cpu(x: &Tensor, param: &Tensor) -> bool {
    x.device().is_cpu() && !x.track_op() && !param.track_op()
}

/// A stride-1 "same" convolution with optional bias (PyTorch `nn.Conv2d`).
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    /// The 3x3 kernel in the Winograd domain, kept from the first inference
    /// call that uses it on a small plane and shared by clones (the weights
    /// never change then); on large planes it is rebuilt per call instead.
    winograd: Arc<OnceLock<Arc<WinogradKernel>>>,
}

impl Conv {
    pub(crate) fn new(
        vb: &VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        bias: bool,
    ) -> Result<Self> {
        let fan_in = (c_in * k * k) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let weight = vb.get_with_hints(
            (c_out, c_in, k, k),
            "weight",
            candle_nn::Init::Uniform {
                lo: -bound * 3f64.sqrt(),
                up: bound * 3f64.sqrt(),
            },
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(
                c_out,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        Ok(Self::from_parts(weight, bias))
    }

    fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            winograd: Arc::default(),
        }
    }

    /// The cached Winograd kernel when this call should use it.
    fn winograd_kernel(&self, x: &Tensor) -> Result<Option<Arc<WinogradKernel>>> {
        let (c_out, c_in, k, _) = self.weight.dims4()?;
        let (_, _, h, w) = x.dims4()?;
        if k != 3 || !inference_on_cpu(x, &self.weight) || !winograd_pays(c_in, c_out, h, w) {
            return Ok(None);
        }
        if let Some(kernel) = self.winograd.get() {
            return Ok(Some(kernel.clone()));
        }
        let raw = self.weight.flatten_all()?.to_vec1::<f32>()?;
        let kernel = Arc::new(WinogradKernel::new(&raw, c_out, c_in));
        if !winograd_kernel_kept(c_in, c_out, h, w) {
            return Ok(Some(kernel)); // freed when this call ends
        }
        Ok(Some(self.winograd.get_or_init(|| kernel).clone()))
    }

    /// Whether this call runs in the Winograd domain a band of output channels at a time.
    fn winograd_in_bands(&self, x: &Tensor) -> Result<bool> {
        let (c_out, c_in, k, _) = self.weight.dims4()?;
        let (_, _, h, w) = x.dims4()?;
        Ok(
            k == 3
                && inference_on_cpu(x, &self.weight)
                && winograd_in_bands_pays(c_in, c_out, h, w),
        )
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self.winograd_kernel(x)? {
            Some(kernel) => x.apply_op1_no_bwd(&WinogradConv3x3(kernel))?,
            None if self.winograd_in_bands(x)? => x
                .contiguous()?
                .apply_op2_no_bwd(&self.weight.contiguous()?, &BandedWinogradConv3x3)?,
            None => conv2d_same(x, &self.weight)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }
}

/// `nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)`, written as one
/// matrix product plus a pixel shuffle (same weights, no scalar loop).
#[derive(Debug, Clone)]
pub(crate) struct UpConv {
    weight: Tensor, // [c_in, c_out, 2, 2]
    bias: Tensor,
}

impl UpConv {
    pub(crate) fn new(vb: &VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        let bound = 1.0 / ((c_out * 4) as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((c_in, c_out, 2, 2), "weight", init)?,
            bias: vb.get_with_hints(c_out, "bias", init)?,
        })
    }
}

impl Module for UpConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if inference_on_cpu(x, &self.weight) && !self.bias.track_op() {
            return x.apply_op3_no_bwd(&self.weight, &self.bias, &UpConv2x2);
        }
        let (b, c_in, h, w) = x.dims4()?;
        let c_out = self.weight.dim(1)?;
        // Derived from the weight at every call so training sees the updates.
        let wt = self.weight.reshape((c_in, c_out * 4))?.t()?; // [c_out*4, c_in]
        let y = wt.broadcast_matmul(&x.reshape((b, c_in, h * w))?)?; // [b, c_out*4, h*w]
        let y = y
            .reshape((b, c_out, 2, 2, h, w))?
            .permute((0, 1, 4, 2, 5, 3))?
            .reshape((b, c_out, 2 * h, 2 * w))?;
        y.broadcast_add(&self.bias.reshape((1, c_out, 1, 1))?)
    }
}

/// `nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=True), nn.BatchNorm2d(c_out))`
/// with the inference-mode BatchNorm folded into the convolution.
///
/// The fold is recomputed at every call (the tensors are tiny): a weight
/// derived once at construction would not follow optimizer updates in
/// training (candle-notes.md, "stale derived weights").
#[derive(Debug, Clone)]
struct ConvBatchNorm {
    weight: Tensor,
    bias: Tensor,
    gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl ConvBatchNorm {
    fn new(vb: &VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        let conv = Conv::new(&vb.pp("0"), c_in, c_out, 1, true)?;
        let bn = vb.pp("1");
        Ok(Self {
            weight: conv.weight,
            bias: conv
                .bias
                .unwrap_or(Tensor::zeros(c_out, candle_core::DType::F32, vb.device())?),
            gamma: bn.get_with_hints(c_out, "weight", candle_nn::Init::Const(1.0))?,
            beta: bn.get_with_hints(c_out, "bias", candle_nn::Init::Const(0.0))?,
            running_mean: bn.get_with_hints(c_out, "running_mean", candle_nn::Init::Const(0.0))?,
            running_var: bn.get_with_hints(c_out, "running_var", candle_nn::Init::Const(1.0))?,
        })
    }
}

impl Module for ConvBatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let scale = (&self.gamma / (&self.running_var + NORM_EPS)?.sqrt()?)?;
        let shift = (&self.beta - (&self.running_mean * &scale)?)?;
        let c_out = scale.dim(0)?;
        let folded = Conv::from_parts(
            self.weight
                .broadcast_mul(&scale.reshape((c_out, 1, 1, 1))?)?,
            Some(((&self.bias * &scale)? + shift)?),
        );
        folded.forward(x)
    }
}

/// `SEBlock`: global average pool, `fc.0` Linear(c, c/r), ReLU, `fc.2`
/// Linear(c/r, c), sigmoid, channel scale. Both linears have no bias.
#[derive(Debug, Clone)]
struct SqueezeExcite {
    fc1: Tensor, // [hidden, c]
    fc2: Tensor, // [c, hidden]
}

impl SqueezeExcite {
    fn new(vb: &VarBuilder, c: usize, hidden: usize) -> Result<Self> {
        let init = |fan_in: usize| {
            let b = 1.0 / (fan_in as f64).sqrt();
            candle_nn::Init::Uniform { lo: -b, up: b }
        };
        Ok(Self {
            fc1: vb
                .pp("fc")
                .pp("0")
                .get_with_hints((hidden, c), "weight", init(c))?,
            fc2: vb
                .pp("fc")
                .pp("2")
                .get_with_hints((c, hidden), "weight", init(hidden))?,
        })
    }
}

impl Module for SqueezeExcite {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, _, _) = x.dims4()?;
        let pooled = x.mean((2, 3))?; // [b, c]
        let h = pooled.matmul(&self.fc1.t()?)?.relu()?;
        let s = candle_nn::ops::sigmoid(&h.matmul(&self.fc2.t()?)?)?;
        x.broadcast_mul(&s.reshape((b, c, 1, 1))?)
    }
}

/// `nn.GroupNorm` followed by ReLU, optionally after adding a residual:
/// fused into one CPU op at inference, candle-nn's ops otherwise.
#[derive(Debug, Clone)]
struct GroupNorm {
    inner: candle_nn::GroupNorm,
    gamma: Tensor,
    beta: Tensor,
    groups: usize,
    /// The fused op with the affine parameters copied out, built at the first
    /// inference call and shared by clones (the parameters never change then).
    fused: Arc<OnceLock<GroupNormRelu>>,
}

impl GroupNorm {
    fn new(vb: &VarBuilder, groups: usize, channels: usize) -> Result<Self> {
        let gamma = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
        let beta = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self {
            inner: candle_nn::GroupNorm::new(
                gamma.clone(),
                beta.clone(),
                channels,
                groups,
                NORM_EPS,
            )?,
            gamma,
            beta,
            groups,
            fused: Arc::default(),
        })
    }

    /// The cached fused op (its affine parameters read from the tensors once).
    fn fused_op(&self) -> Result<&GroupNormRelu> {
        if let Some(op) = self.fused.get() {
            return Ok(op);
        }
        let op = GroupNormRelu {
            groups: self.groups,
            eps: NORM_EPS,
            gamma: self.gamma.to_vec1()?,
            beta: self.beta.to_vec1()?,
        };
        Ok(self.fused.get_or_init(|| op))
    }

    /// `relu(gn(x) + residual)`, or `relu(gn(x))` without one.
    fn forward_relu(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let fused = inference_on_cpu(x, &self.gamma)
            && residual.is_none_or(|r| !r.track_op())
            && !self.beta.track_op();
        if fused {
            let op = self.fused_op()?;
            return match residual {
                Some(r) => x.apply_op2_no_bwd(r, op),
                None => x.apply_op1_no_bwd(op),
            };
        }
        let y = self.inner.forward(x)?;
        match residual {
            Some(r) => (y + r)?.relu(),
            None => y.relu(),
        }
    }
}

/// `ResidualBlock(c_in, c_out)`: conv-GN-ReLU-conv-GN, plus the (1x1
/// adjusted) input, ReLU, then squeeze-and-excitation.
#[derive(Debug, Clone)]
pub(crate) struct ResidualBlock {
    conv1: Conv,
    gn1: GroupNorm,
    conv2: Conv,
    gn2: GroupNorm,
    adjust_channels: Option<Conv>,
    se: SqueezeExcite,
}

impl ResidualBlock {
    pub(crate) fn new(
        vb: &VarBuilder,
        c_in: usize,
        c_out: usize,
        groups: usize,
        se_hidden: usize,
    ) -> Result<Self> {
        Ok(Self {
            conv1: Conv::new(&vb.pp("conv1"), c_in, c_out, 3, false)?,
            gn1: GroupNorm::new(&vb.pp("gn1"), groups, c_out)?,
            conv2: Conv::new(&vb.pp("conv2"), c_out, c_out, 3, false)?,
            gn2: GroupNorm::new(&vb.pp("gn2"), groups, c_out)?,
            adjust_channels: if c_in != c_out {
                Some(Conv::new(&vb.pp("adjust_channels"), c_in, c_out, 1, false)?)
            } else {
                None
            },
            se: SqueezeExcite::new(&vb.pp("se"), c_out, se_hidden)?,
        })
    }
}

impl ResidualBlock {
    /// [`Module::forward`] taking the input by value, so that its memory goes
    /// back as soon as its last consumer ran (when the caller held the only
    /// handle). Each intermediate is dropped before the next large one is
    /// made: at most the input, the residual and one convolution output are
    /// alive at once, instead of every intermediate until the block returns.
    pub(crate) fn forward_owned(&self, x: Tensor) -> Result<Tensor> {
        let residual = match &self.adjust_channels {
            Some(adjust) => adjust.forward(&x)?,
            None => x.clone(),
        };
        let conv1 = self.conv1.forward(&x)?;
        drop(x);
        let out = self.gn1.forward_relu(&conv1, None)?;
        drop(conv1);
        let conv2 = self.conv2.forward(&out)?;
        drop(out);
        let out = self.gn2.forward_relu(&conv2, Some(&residual))?;
        drop((conv2, residual));
        self.se.forward(&out)
    }
}

impl Module for ResidualBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_owned(x.clone())
    }
}

/// `AttentionGate(F_g=f, F_l=f, F_int=f/2)`: `skip * psi(relu(W_g(g) + W_x(skip)))`.
#[derive(Debug, Clone)]
pub(crate) struct AttentionGate {
    w_g: ConvBatchNorm,
    w_x: ConvBatchNorm,
    psi: ConvBatchNorm,
}

impl AttentionGate {
    pub(crate) fn new(vb: &VarBuilder, f: usize) -> Result<Self> {
        let f_int = f / 2;
        Ok(Self {
            w_g: ConvBatchNorm::new(&vb.pp("W_g"), f, f_int)?,
            w_x: ConvBatchNorm::new(&vb.pp("W_x"), f, f_int)?,
            psi: ConvBatchNorm::new(&vb.pp("psi"), f_int, 1)?,
        })
    }

    /// Gates the encoder skip `skip` by the decoder signal `g` (same size).
    pub(crate) fn forward(&self, g: &Tensor, skip: &Tensor) -> Result<Tensor> {
        let a = (self.w_g.forward(g)? + self.w_x.forward(skip)?)?.relu()?;
        let psi = candle_nn::ops::sigmoid(&self.psi.forward(&a)?)?;
        drop(a);
        skip.broadcast_mul(&psi)
    }
}

/// Channel concatenation in the original's order (`cat((gated_skip, x), 1)`).
pub(crate) fn concat_channels(gated_skip: &Tensor, x: &Tensor) -> Result<Tensor> {
    Tensor::cat(&[gated_skip, x], 1)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module, Tensor};

    use super::Conv;
    use crate::model::conv::winograd_kernel_kept;
    use crate::model::max_abs_diff;

    #[test]
    fn a_layer_above_the_whole_kernel_bound_runs_in_bands_like_im2col() {
        // 1024 x 520 pairs, just above the bound, on a 32x32 plane (64 tiles).
        let (c_in, c_out, side) = (1024, 520, 32);
        assert!(crate::model::conv::winograd_in_bands_pays(
            c_in, c_out, side, side
        ));
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.02, (c_out, c_in, 3, 3), &dev).unwrap();
        let conv = Conv::from_parts(w.clone(), None);
        let x = Tensor::randn(0f32, 1., (1, c_in, side, side), &dev).unwrap();
        let reference = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        let scale = max_abs_diff(&reference, &reference.zeros_like().unwrap()).max(1.0);
        let diff = max_abs_diff(&conv.forward(&x).unwrap(), &reference);
        assert!(
            diff <= 1e-4 * scale,
            "max |diff| {diff} (output scale {scale})"
        );
        assert!(
            conv.winograd.get().is_none(),
            "a banded layer kept a kernel"
        );
    }

    #[test]
    fn a_rebuilt_winograd_kernel_gives_the_same_output_and_is_not_kept() {
        let (c, side) = (136, 128);
        assert!(!winograd_kernel_kept(c, c, side, side));
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.05, (c, c, 3, 3), &dev).unwrap();
        let conv = Conv::from_parts(w.clone(), None);
        let x = Tensor::randn(0f32, 1., (1, c, side, side), &dev).unwrap();
        let reference = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        // Winograd rounds differently from direct summation over 1224 terms:
        // compare relative to the output's scale, as the fused-kernel tests do.
        let scale = max_abs_diff(&reference, &reference.zeros_like().unwrap()).max(1.0);
        for call in 0..2 {
            let y = conv.forward(&x).unwrap();
            let diff = max_abs_diff(&y, &reference);
            assert!(
                diff <= 1e-4 * scale,
                "call {call}: max |diff| {diff} (output scale {scale})"
            );
            assert!(conv.winograd.get().is_none(), "call {call} kept the kernel");
        }
        // On a plane under 1024 tiles the same layer keeps it.
        let small = x
            .narrow(2, 0, 64)
            .unwrap()
            .narrow(3, 0, 64)
            .unwrap()
            .contiguous()
            .unwrap();
        conv.forward(&small).unwrap();
        assert!(conv.winograd.get().is_some());
    }
}
