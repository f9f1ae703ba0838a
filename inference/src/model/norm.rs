//! GroupNorm fused with the residual add and ReLU, for inference on the CPU.
//!
//! candle-nn's `GroupNorm` is a chain of about ten tensor ops (mean, subtract,
//! square, mean, sqrt, divide, scale, shift), each a full pass over memory
//! into a fresh allocation; the ResUNet then adds the residual and applies
//! ReLU, two more passes. On the original network's 64-channel 1024x1024
//! activations (268 MB each) those passes cost more than the convolutions'
//! non-matrix work. This op does it in two passes: per-group sums in f64,
//! then `relu(x * a_c + b_c [+ residual])` with the per-channel `a_c, b_c`
//! folded from the statistics and the affine parameters.
//!
//! Forward only: training keeps candle-nn's differentiable ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

use super::conv::{contiguous, dims4, SendPtr};

/// Elements summed in f32 before the running f64 total takes them.
const STAT_RUN: usize = 4096;

/// `relu(group_norm(x) [+ residual])`; the affine parameters travel as plain
/// vectors (at most a few thousand floats).
#[derive(Debug, Clone)]
pub(crate) struct GroupNormRelu {
    pub(crate) groups: usize,
    pub(crate) eps: f64,
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
}

/// `(sum(v - shift), sum((v - shift)^2))` over a short run, in f32, with
/// [`LANES`] independent accumulators so the loop vectorises (a single
/// floating-point accumulator is a serial dependency the compiler must keep).
#[inline(always)]
fn centred_sums(run: &[f32], shift: f32) -> (f32, f32) {
    let mut s = [0f32; LANES];
    let mut q = [0f32; LANES];
    let mut chunks = run.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            let d = chunk[i] - shift;
            s[i] += d;
            q[i] += d * d;
        }
    }
    let (mut s_tail, mut q_tail) = (0f32, 0f32);
    for &v in chunks.remainder() {
        let d = v - shift;
        s_tail += d;
        q_tail += d * d;
    }
    (
        s.iter().sum::<f32>() + s_tail,
        q.iter().sum::<f32>() + q_tail,
    )
}

/// Accumulators of [`centred_sums`]: one AVX-512 register.
const LANES: usize = 16;

/// One (image, group) slice of the input and where its channels start.
struct Group<'a> {
    src: &'a [f32],
    residual: Option<&'a [f32]>,
    first_channel: usize,
    plane: usize,
}

impl GroupNormRelu {
    /// [`Self::normalise_portable`] compiled for the widest vector unit the CPU has.
    fn normalise(&self, g: &Group, dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, checked just above.
                return unsafe { self.normalise_avx512(g, dst) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                return unsafe { self.normalise_avx2(g, dst) };
            }
        }
        self.normalise_portable(g, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn normalise_avx512(&self, g: &Group, dst: &mut [f32]) {
        self.normalise_portable(g, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn normalise_avx2(&self, g: &Group, dst: &mut [f32]) {
        self.normalise_portable(g, dst);
    }

    /// Statistics of one group, then its normalised, shifted, rectified output.
    #[inline(always)]
    fn normalise_portable(&self, g: &Group, dst: &mut [f32]) {
        let src = g.src;
        let plane = g.plane;
        let group_len = src.len();
        // Sums of (v - shift) with the shift near the mean (that of the first run):
        // E[x^2] - E[x]^2 would cancel catastrophically for a large mean.
        let head = &src[..src.len().min(STAT_RUN)];
        let shift = (head.iter().map(|&v| f64::from(v)).sum::<f64>() / head.len() as f64) as f32;
        let (mut sum, mut sum_sq) = (0f64, 0f64);
        for run in src.chunks(STAT_RUN) {
            let (s, q) = centred_sums(run, shift);
            sum += f64::from(s);
            sum_sq += f64::from(q);
        }
        let n = group_len as f64;
        let centred_mean = sum / n;
        let var = (sum_sq / n - centred_mean * centred_mean).max(0.0);
        let mean = f64::from(shift) + centred_mean;
        let inv_std = 1.0 / (var + self.eps).sqrt();
        for c in 0..group_len / plane {
            let ch = g.first_channel + c;
            let a = (f64::from(self.gamma[ch]) * inv_std) as f32;
            let b = (f64::from(self.beta[ch]) - mean * f64::from(a)) as f32;
            let xs = &src[c * plane..][..plane];
            let ys = &mut dst[c * plane..][..plane];
            match g.residual {
                Some(r) => {
                    let rs = &r[c * plane..][..plane];
                    for ((y, &v), &r) in ys.iter_mut().zip(xs).zip(rs) {
                        *y = (v * a + b + r).max(0.0);
                    }
                }
                None => {
                    for (y, &v) in ys.iter_mut().zip(xs) {
                        *y = (v * a + b).max(0.0);
                    }
                }
            }
        }
    }

    fn check(&self, l: &Layout) -> Result<(usize, usize, usize)> {
        let (batch, channels, h, w) = dims4(l, "input")?;
        if self.groups == 0
            || channels % self.groups != 0
            || self.gamma.len() != channels
            || self.beta.len() != channels
        {
            candle_core::bail!(
                "group-norm-relu: {channels} channels do not fit {} groups / {} affine values",
                self.groups,
                self.gamma.len()
            );
        }
        Ok((batch, channels, h * w))
    }

    fn run(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        batch: usize,
        channels: usize,
        plane: usize,
    ) -> Vec<f32> {
        let per_group = channels / self.groups;
        let group_len = per_group * plane;
        let mut out = vec![0f32; x.len()];
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..batch * self.groups).into_par_iter().for_each(|bg| {
            let ptr = out_ptr;
            let start = bg * group_len;
            // SAFETY: group `bg` owns elements start..start+group_len of `out`.
            let dst = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(start), group_len) };
            let group = Group {
                src: &x[start..][..group_len],
                residual: residual.map(|r| &r[start..][..group_len]),
                first_channel: (bg % self.groups) * per_group,
                plane,
            };
            self.normalise(&group, dst);
        });
        out
    }
}

impl CustomOp1 for GroupNormRelu {
    fn name(&self) -> &'static str {
        "group-norm-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (batch, channels, plane) = self.check(l)?;
        let x = contiguous(s, l, "input")?;
        let out = self.run(x, None, batch, channels, plane);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `relu(group_norm(x) + residual)`: the op's second operand is the residual.
impl CustomOp2 for GroupNormRelu {
    fn name(&self) -> &'static str {
        "group-norm-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, channels, plane) = self.check(l1)?;
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "group-norm-add-relu: residual {:?} does not match input {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let x = contiguous(s1, l1, "input")?;
        let r = contiguous(s2, l2, "residual")?;
        let out = self.run(x, Some(r), batch, channels, plane);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use candle_core::{Device, Module, Tensor};

    #[test]
    fn matches_candle_group_norm_then_add_and_relu() {
        let dev = Device::Cpu;
        let (b, c, h, w, groups) = (2, 8, 9, 7, 4);
        // An offset far from zero checks that the variance does not cancel.
        let x = (Tensor::randn(0f32, 2.0, (b, c, h, w), &dev).unwrap() + 30.0).unwrap();
        let res = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev).unwrap();
        let gamma = Tensor::randn(1f32, 0.3, c, &dev).unwrap();
        let beta = Tensor::randn(0f32, 0.3, c, &dev).unwrap();
        let gn = candle_nn::GroupNorm::new(gamma.clone(), beta.clone(), c, groups, 1e-5).unwrap();
        let op = GroupNormRelu {
            groups,
            eps: 1e-5,
            gamma: gamma.to_vec1().unwrap(),
            beta: beta.to_vec1().unwrap(),
        };
        let normed = gn.forward(&x).unwrap();
        let plain = x.apply_op1_no_bwd(&op).unwrap();
        let d = max_abs_diff(&plain, &normed.relu().unwrap());
        assert!(d < 1e-4, "{d}");
        let with_res = x.apply_op2_no_bwd(&res, &op).unwrap();
        let expected = (normed + &res).unwrap().relu().unwrap();
        assert!(max_abs_diff(&with_res, &expected) < 1e-4);
    }

    #[test]
    fn rejects_channels_that_do_not_split_into_groups() {
        let x = Tensor::zeros((1, 6, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let op = GroupNormRelu {
            groups: 4,
            eps: 1e-5,
            gamma: vec![1.0; 6],
            beta: vec![0.0; 6],
        };
        let err = x.apply_op1_no_bwd(&op).unwrap_err().to_string();
        assert!(err.contains("6 channels"), "{err}");
    }
}
