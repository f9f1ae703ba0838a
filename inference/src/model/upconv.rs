//! The 2x2 stride-2 transposed convolution as one CPU op, for inference.
//!
//! The differentiable path (`layers::UpConv`) is a matrix product, a 6-d
//! permute and a bias broadcast: candle materialises the permute with its
//! generic strided copy, whose innermost stride is a whole plane, and adds the
//! bias in another pass. Here the product `Wᵀ X` (`[Co*4, Ci] x [Ci, H*W]`)
//! goes into a scratch buffer and one pass scatters its four `(dy, dx)`
//! planes into the `[Co, 2H, 2W]` output with the bias added, row by row.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};
use gemm::Parallelism;
use rayon::prelude::*;

use super::conv::{contiguous, dims4, gemm_overwrite, Strided};

/// `ConvTranspose2d(Ci, Co, kernel 2, stride 2)` on `(x, weight [Ci,Co,2,2], bias [Co])`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpConv2x2;

impl CustomOp3 for UpConv2x2 {
    fn name(&self) -> &'static str {
        "conv-transpose-2x2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, c_in, h, w) = dims4(l1, "input")?;
        let (wc_in, c_out, kh, kw) = dims4(l2, "weight")?;
        if wc_in != c_in || (kh, kw) != (2, 2) || l3.dims() != [c_out] {
            candle_core::bail!(
                "conv-transpose-2x2: weight {:?} / bias {:?} do not fit input {:?}",
                l2.dims(),
                l3.dims(),
                l1.dims()
            );
        }
        let x = contiguous(s1, l1, "input")?;
        let wt = contiguous(s2, l2, "weight")?;
        let bias = contiguous(s3, l3, "bias")?;
        let plane = h * w;
        let rows = c_out * 4;
        let mut out = vec![0f32; batch * c_out * 4 * plane];
        let mut tmp = vec![0f32; rows * plane];
        for b in 0..batch {
            // tmp[(co*2+dy)*2+dx][p] = sum_ci W[ci][co][dy][dx] * X[ci][p]
            // SAFETY: tmp is [rows, plane]; W is read as its transpose [rows, c_in]
            // (column stride `rows`), X as [c_in, plane].
            unsafe {
                gemm_overwrite(
                    rows,
                    plane,
                    c_in,
                    tmp.as_mut_ptr(),
                    plane as isize,
                    Strided {
                        ptr: wt.as_ptr(),
                        col: rows as isize,
                        row: 1,
                    },
                    Strided::rows(x[b * c_in * plane..].as_ptr(), plane as isize),
                    Parallelism::Rayon(0),
                );
            }
            let dst = &mut out[b * c_out * 4 * plane..][..c_out * 4 * plane];
            dst.par_chunks_mut(4 * plane)
                .enumerate()
                .for_each(|(co, out_plane)| {
                    let taps = &tmp[co * 4 * plane..][..4 * plane];
                    for (row2, out_row) in out_plane.chunks_exact_mut(2 * w).enumerate() {
                        let (y, dy) = (row2 / 2, row2 % 2);
                        let left = &taps[(dy * 2) * plane + y * w..][..w];
                        let right = &taps[(dy * 2 + 1) * plane + y * w..][..w];
                        for ((pair, &l), &r) in out_row.chunks_exact_mut(2).zip(left).zip(right) {
                            pair[0] = l + bias[co];
                            pair[1] = r + bias[co];
                        }
                    }
                });
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, c_out, 2 * h, 2 * w)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_candle_conv_transpose2d_plus_bias() {
        let dev = Device::Cpu;
        for &(b, ci, co, h, w) in &[(1, 3, 2, 1, 1), (2, 5, 4, 3, 7), (1, 16, 8, 9, 6)] {
            let x = Tensor::randn(0f32, 1.0, (b, ci, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1.0, (ci, co, 2, 2), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
            let ours = x.apply_op3_no_bwd(&wt, &bias, &UpConv2x2).unwrap();
            let reference = x
                .conv_transpose2d(&wt, 0, 0, 2, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, co, 1, 1)).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), reference.dims());
            let err = max_abs_diff(&ours, &reference);
            assert!(err < 1e-4, "{b}x{ci}->{co} {h}x{w}: {err}");
        }
    }
}
