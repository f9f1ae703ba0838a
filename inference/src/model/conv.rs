//! Fast CPU convolution: row-tiled im2col + one GEMM per tile.
//!
//! candle's built-in CPU `conv2d` runs at 8-15 GFLOP/s on the high-resolution,
//! low-channel layers of a U-Net and `conv_transpose2d` (used by its backward)
//! is a scalar loop (`../shared/spec/candle-notes.md`). This op lowers a
//! stride-1 square convolution to matrix products (Chellapilla et al., "High
//! performance convolutional neural networks for document processing", 2006):
//! for each tile of output rows the receptive fields are unrolled into a
//! `[C_in*k*k, rows*W]` matrix and multiplied by the `[C_out, C_in*k*k]`
//! weights with the `gemm` crate. Tiles keep the unrolled matrix small (a few
//! MB) so memory stays bounded even for the original 1024x1024 network, and
//! tiles run in parallel on the rayon pool.
//!
//! Backward: the input gradient is the same convolution of the output
//! gradient with the weights transposed (in/out) and flipped, padded
//! `k-1-pad`; the weight gradient is `dY @ im2col(X)^T`, accumulated over tiles.
//! Only 1x1 and odd square kernels with stride 1 are supported: all the
//! ResUNet needs.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// Target size of one unrolled tile, in f32 elements (4 MiB).
const TILE_ELEMS: usize = 1 << 20;

/// Stride-1 2-D convolution `[B,Ci,H,W] x [Co,Ci,k,k] -> [B,Co,H,W]` with
/// symmetric zero padding `pad` (no bias: add it with a broadcast).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conv2dIm2col {
    pub(crate) pad: usize,
}

/// Weight gradient of [`Conv2dIm2col`]: `(X, dY) -> dW`.
#[derive(Debug, Clone, Copy)]
struct Conv2dWeightGrad {
    kernel: usize,
    pad: usize,
}

/// Shape facts shared by the forward and the weight-gradient kernels.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    c_in: usize,
    height: usize,
    width: usize,
    kernel: usize,
    pad: usize,
}

impl Geometry {
    fn k_dim(&self) -> usize {
        self.c_in * self.kernel * self.kernel
    }
    fn plane(&self) -> usize {
        self.height * self.width
    }
    /// Output rows per tile, so that one unrolled tile holds about `TILE_ELEMS`.
    fn rows_per_tile(&self) -> usize {
        (TILE_ELEMS / (self.k_dim() * self.width).max(1)).clamp(1, self.height)
    }
    fn tiles(&self) -> Vec<(usize, usize, usize)> {
        let rows = self.rows_per_tile();
        let mut out = Vec::new();
        for b in 0..self.batch {
            let mut y0 = 0;
            while y0 < self.height {
                let y1 = (y0 + rows).min(self.height);
                out.push((b, y0, y1));
                y0 = y1;
            }
        }
        out
    }
    /// Whether the convolution is a plain matrix product (1x1, no padding).
    fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.pad == 0
    }
}

/// Unrolls rows `y0..y1` of image `src` (`[Ci,H,W]`) into `col` (`[Ci*k*k, (y1-y0)*W]`).
fn im2col(src: &[f32], g: &Geometry, y0: usize, y1: usize, col: &mut Vec<f32>) {
    let (w, h, k, p) = (g.width, g.height, g.kernel, g.pad);
    let n = (y1 - y0) * w;
    col.clear();
    col.resize(g.k_dim() * n, 0.0);
    for ci in 0..g.c_in {
        let plane = &src[ci * g.plane()..(ci + 1) * g.plane()];
        for ky in 0..k {
            for kx in 0..k {
                let row = &mut col[((ci * k + ky) * k + kx) * n..][..n];
                // Valid output x range for this kernel column: 0 <= x + kx - p < w.
                let x_lo = p.saturating_sub(kx);
                let x_hi = (w + p).saturating_sub(kx).min(w);
                for y in y0..y1 {
                    let sy = y + ky;
                    if sy < p || sy - p >= h || x_lo >= x_hi {
                        continue; // stays zero (padding)
                    }
                    let src_row = &plane[(sy - p) * w..][..w];
                    let dst = &mut row[(y - y0) * w..][..w];
                    dst[x_lo..x_hi].copy_from_slice(&src_row[x_lo + kx - p..x_hi + kx - p]);
                }
            }
        }
    }
}

/// A raw pointer that may cross threads; each user documents why the ranges
/// its threads write are disjoint.
#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `count` elements further on (the method keeps closures capturing
    /// the whole `Send` wrapper rather than its raw field).
    pub(super) fn offset(self, count: usize) -> Self {
        Self(self.0.wrapping_add(count))
    }
}

/// A strided `f32` matrix operand: first element, column stride, row stride.
#[derive(Debug, Clone, Copy)]
pub(super) struct Strided {
    pub(super) ptr: *const f32,
    pub(super) col: isize,
    pub(super) row: isize,
}

impl Strided {
    /// A row-major matrix with rows `row` elements apart.
    pub(super) fn rows(ptr: *const f32, row: isize) -> Self {
        Self { ptr, col: 1, row }
    }
}

/// `dst = lhs · rhs` for an `[m,k] x [k,n]` product; `dst` is row-major with
/// rows `dst_row` elements apart and is overwritten, never read.
///
/// # Safety
/// Every view must cover its `[m,k]`, `[k,n]` or `[m,n]` extent, and `dst`
/// must not overlap the operands or be written by anyone else meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_overwrite(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_row: isize,
    lhs: Strided,
    rhs: Strided,
    par: Parallelism,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm::gemm(
            m, n, k, dst, 1, dst_row, false, lhs.ptr, lhs.col, lhs.row, rhs.ptr, rhs.col, rhs.row,
            0.0, 1.0, false, false, false, par,
        );
    }
}

pub(super) fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("conv2d-im2col: {what} must be contiguous"),
    }
}

pub(super) fn dims4(l: &Layout, what: &str) -> Result<(usize, usize, usize, usize)> {
    match l.dims() {
        &[a, b, c, d] => Ok((a, b, c, d)),
        other => candle_core::bail!("conv2d-im2col: {what} must be rank 4, got {other:?}"),
    }
}

/// Use gemm's own threads only when there are too few tiles to share out.
fn inner_parallelism(tasks: usize) -> Parallelism {
    if tasks >= rayon::current_num_threads() {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    }
}

thread_local! {
    static COL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer from `key`, taken out of the cell
/// for the duration. Holding the cell's borrow instead would be a bug: `f` may
/// wait on rayon work (a parallel gemm), and a waiting rayon thread runs other
/// queued tasks, which would ask for the same cell (a "RefCell already
/// borrowed" panic, seen with 16 threads). A nested caller finds the cell
/// empty and uses a fresh buffer.
pub(super) fn with_scratch<T: Default, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut scratch = key.with(std::cell::RefCell::take);
    let result = f(&mut scratch);
    key.with(|cell| cell.replace(scratch));
    result
}

/// Calls `f(ptr, row_stride)` with the `[Ci*k*k, (y1-y0)*W]` unrolled tile of
/// image `src`: the image rows themselves for a 1x1 convolution (no copy),
/// else a thread-local im2col buffer.
fn with_unrolled(
    src: &[f32],
    g: &Geometry,
    y0: usize,
    y1: usize,
    f: impl FnOnce(*const f32, isize),
) {
    if g.is_pointwise() {
        f(src[y0 * g.width..].as_ptr(), g.plane() as isize);
    } else {
        with_scratch(&COL, |col| {
            im2col(src, g, y0, y1, col);
            f(col.as_ptr(), ((y1 - y0) * g.width) as isize);
        });
    }
}

/// `out[b] = W @ im2col(x[b])`, tile by tile.
fn conv_forward(x: &[f32], w: &[f32], g: &Geometry, c_out: usize) -> Vec<f32> {
    let plane = g.plane();
    let mut out = vec![0f32; g.batch * c_out * plane];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let tiles = g.tiles();
    let par = inner_parallelism(tiles.len());
    let kd = g.k_dim();
    tiles.par_iter().for_each(|&(b, y0, y1)| {
        let ptr = out_ptr;
        let src = &x[b * g.c_in * plane..(b + 1) * g.c_in * plane];
        let n = (y1 - y0) * g.width;
        let dst = unsafe { ptr.0.add(b * c_out * plane + y0 * g.width) };
        // SAFETY: the tile's rows of `out` belong to this tile alone; W is [Co, kd].
        let run = |rhs: *const f32, rhs_rs: isize| unsafe {
            gemm_overwrite(
                c_out,
                n,
                kd,
                dst,
                plane as isize,
                Strided::rows(w.as_ptr(), kd as isize),
                Strided::rows(rhs, rhs_rs),
                par,
            )
        };
        with_unrolled(src, g, y0, y1, run);
    });
    out
}

/// `dW = sum_b dY[b] @ im2col(x[b])^T`.
fn conv_weight_grad(x: &[f32], dy: &[f32], g: &Geometry, c_out: usize) -> Vec<f32> {
    let plane = g.plane();
    let kd = g.k_dim();
    let tiles = g.tiles();
    let par = inner_parallelism(tiles.len());
    let partial = |acc: &mut Vec<f32>, &(b, y0, y1): &(usize, usize, usize)| {
        let src = &x[b * g.c_in * plane..(b + 1) * g.c_in * plane];
        let grad = &dy[b * c_out * plane + y0 * g.width..];
        let n = (y1 - y0) * g.width;
        let mut run = |rhs: *const f32, rhs_cs: isize| unsafe {
            gemm::gemm(
                c_out,
                kd,
                n,
                acc.as_mut_ptr(),
                1,
                kd as isize,
                true,
                grad.as_ptr(),
                1,
                plane as isize,
                rhs,
                rhs_cs,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
        with_unrolled(src, g, y0, y1, &mut run);
    };
    tiles
        .par_iter()
        .fold(
            || vec![0f32; c_out * kd],
            |mut acc, t| {
                partial(&mut acc, t);
                acc
            },
        )
        .reduce(
            || vec![0f32; c_out * kd],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

impl CustomOp2 for Conv2dIm2col {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, c_in, height, width) = dims4(l1, "input")?;
        let (c_out, wc_in, kh, kw) = dims4(l2, "weight")?;
        if wc_in != c_in || kh != kw || 2 * self.pad + 1 != kh {
            candle_core::bail!(
                "conv2d-im2col: unsupported weight {:?} for input {:?} with pad {}",
                l2.dims(),
                l1.dims(),
                self.pad
            );
        }
        let g = Geometry {
            batch,
            c_in,
            height,
            width,
            kernel: kh,
            pad: self.pad,
        };
        let x = contiguous(s1, l1, "input")?;
        let w = contiguous(s2, l2, "weight")?;
        let out = conv_forward(x, w, &g, c_out);
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, c_out, height, width)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, _, k, _) = w.dims4()?;
        // Input gradient: correlate dY with W transposed (in<->out) and flipped.
        let w_flipped = flip_transpose(w)?;
        let dx = grad.apply_op2_no_bwd(
            &w_flipped,
            &Conv2dIm2col {
                pad: k - 1 - self.pad,
            },
        )?;
        let dw = x.contiguous()?.apply_op2_no_bwd(
            &grad,
            &Conv2dWeightGrad {
                kernel: k,
                pad: self.pad,
            },
        )?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `[Co,Ci,k,k] -> [Ci,Co,k,k]` with both spatial axes reversed.
fn flip_transpose(w: &Tensor) -> Result<Tensor> {
    let (co, ci, k, _) = w.dims4()?;
    let src = w.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; src.len()];
    for o in 0..co {
        for i in 0..ci {
            for ky in 0..k {
                for kx in 0..k {
                    out[((i * co + o) * k + (k - 1 - ky)) * k + (k - 1 - kx)] =
                        src[((o * ci + i) * k + ky) * k + kx];
                }
            }
        }
    }
    Tensor::from_vec(out, (ci, co, k, k), w.device())
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "conv2d-im2col-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, c_in, height, width) = dims4(l1, "input")?;
        let (gb, c_out, gh, gw) = dims4(l2, "output gradient")?;
        if (gb, gh, gw) != (batch, height, width) {
            candle_core::bail!(
                "conv2d-im2col: gradient {:?} does not match input {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let g = Geometry {
            batch,
            c_in,
            height,
            width,
            kernel: self.kernel,
            pad: self.pad,
        };
        let x = contiguous(s1, l1, "input")?;
        let dy = contiguous(s2, l2, "output gradient")?;
        let dw = conv_weight_grad(x, dy, &g, c_out);
        Ok((
            CpuStorage::F32(dw),
            Shape::from((c_out, c_in, self.kernel, self.kernel)),
        ))
    }
}

/// Fewest 4x4 output tiles for which a 3x3 convolution runs in the Winograd
/// domain: below it (the deepest, 8x8-16x16 levels) the 36 products are too
/// thin to pay for reading a kernel 4x the size of the raw one.
const WINOGRAD_MIN_TILES: usize = 64;
/// Largest `Co * Ci` whose Winograd kernel is built whole (36 x 4 B per pair:
/// 75 MB at this bound). Larger layers (the original network's 1024- and
/// 2048-channel levels, which hold most of its weights) build it a band of
/// output channels at a time instead: [`winograd_in_bands_pays`].
const WINOGRAD_MAX_PAIRS: usize = 1024 * 512;
/// Fewest input and output channels: the tile transforms cost the same per
/// channel whatever the other side's width, while the matrix work they save
/// grows with it; below this the transforms cost more than they save.
const WINOGRAD_MIN_CHANNELS: usize = 32;

/// Fewest 4x4 output tiles at which a layer rebuilds its Winograd kernel at
/// every call instead of keeping it. A kept kernel is 4x the raw weight; the
/// original network's came to 300 MB at a 1024 input, a sixth of its peak
/// memory. Rebuilding costs about 270 flops per (Co, Ci) pair, the
/// convolution 72 per pair and tile, so from this many tiles up the rebuild
/// is under 0.4 % of the call's arithmetic.
const WINOGRAD_REBUILD_MIN_TILES: usize = 1024;
/// Largest `Co * Ci` whose kernel is kept whatever the plane (2.4 MB): small
/// kernels cost little memory, and rebuilding them would still be a cost on
/// the high-resolution layers of small inputs.
const WINOGRAD_ALWAYS_KEEP_PAIRS: usize = 128 * 128;

/// Whether the Winograd kernel of a `c_in -> c_out` layer used on a
/// `height x width` plane is kept for the next call (true) or rebuilt each
/// time (false), which bounds the kept kernels' memory.
pub(crate) fn winograd_kernel_kept(c_in: usize, c_out: usize, height: usize, width: usize) -> bool {
    c_in * c_out <= WINOGRAD_ALWAYS_KEEP_PAIRS
        || height.div_ceil(4) * width.div_ceil(4) < WINOGRAD_REBUILD_MIN_TILES
}

/// Whether an inference 3x3 convolution of this shape uses [`super::winograd`].
pub(crate) fn winograd_pays(c_in: usize, c_out: usize, height: usize, width: usize) -> bool {
    height.div_ceil(4) * width.div_ceil(4) >= WINOGRAD_MIN_TILES
        && c_in * c_out <= WINOGRAD_MAX_PAIRS
        && c_in.min(c_out) >= WINOGRAD_MIN_CHANNELS
}

/// Whether an inference 3x3 convolution of this shape uses
/// [`super::winograd::conv3x3_banded`]: the same tile and channel rules as
/// [`winograd_pays`], for layers above its kernel-size bound. Their kernel is
/// rebuilt at every call: about 270 flops per (Co, Ci) pair, while each tile
/// costs 72 per pair instead of im2col's 288, so from 64 tiles up it pays.
pub(crate) fn winograd_in_bands_pays(
    c_in: usize,
    c_out: usize,
    height: usize,
    width: usize,
) -> bool {
    height.div_ceil(4) * width.div_ceil(4) >= WINOGRAD_MIN_TILES
        && c_in * c_out > WINOGRAD_MAX_PAIRS
        && c_in.min(c_out) >= WINOGRAD_MIN_CHANNELS
}

/// Convolution of `x` (`[B,Ci,H,W]`) by `w` (`[Co,Ci,k,k]`), stride 1, padding
/// `(k-1)/2`. Uses the im2col op on CPU and candle's own conv elsewhere (CUDA).
pub(crate) fn conv2d_same(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (_, _, k, _) = w.dims4()?;
    let pad = (k - 1) / 2;
    if x.device().is_cpu() {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, Conv2dIm2col { pad })
    } else {
        x.conv2d(w, pad, 1, 1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use candle_core::{Device, Var};

    #[test]
    fn winograd_kernels_are_kept_when_small_or_on_small_planes() {
        // Small kernels stay whatever the plane (the 64-channel layers at 1024x1024).
        assert!(winograd_kernel_kept(64, 128, 1024, 1024));
        assert!(winograd_kernel_kept(128, 128, 1024, 1024));
        // Large kernels stay on planes of fewer than 1024 tiles (a 124x124 plane has 961)...
        assert!(winograd_kernel_kept(512, 1024, 64, 64));
        assert!(winograd_kernel_kept(512, 512, 124, 124));
        // ...and are rebuilt from 1024 tiles (128x128) up.
        assert!(!winograd_kernel_kept(512, 512, 128, 128));
        assert!(!winograd_kernel_kept(129, 128, 1024, 1024));
    }

    #[test]
    fn layers_above_the_whole_kernel_bound_go_in_bands_on_large_planes() {
        // The original network at a 1024 input: level 5 (64x64) and the bottleneck (32x32).
        assert!(winograd_in_bands_pays(1024, 1024, 64, 64));
        assert!(winograd_in_bands_pays(2048, 2048, 32, 32));
        assert!(!winograd_pays(2048, 2048, 32, 32));
        // At a 256 input they are 16x16 and 8x8: too few tiles.
        assert!(!winograd_in_bands_pays(1024, 1024, 16, 16));
        // Layers whose kernel is built whole never go in bands.
        assert!(!winograd_in_bands_pays(512, 1024, 64, 64));
        assert!(winograd_pays(512, 1024, 64, 64));
    }

    #[test]
    fn forward_matches_candle_conv2d() {
        let dev = Device::Cpu;
        for &(b, ci, co, h, w, k) in &[(2, 3, 5, 9, 7, 3), (1, 4, 6, 5, 5, 1), (1, 8, 4, 40, 33, 3)]
        {
            let x = Tensor::randn(0f32, 1., (b, ci, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (co, ci, k, k), &dev).unwrap();
            let ours = conv2d_same(&x, &wt).unwrap();
            let reference = x.conv2d(&wt, (k - 1) / 2, 1, 1, 1).unwrap();
            assert!(max_abs_diff(&ours, &reference) < 1e-4, "k={k}");
        }
    }

    #[test]
    fn gradients_match_candle_conv2d() {
        let dev = Device::Cpu;
        for &k in &[1usize, 3] {
            let x = Var::randn(0f32, 1., (2, 3, 6, 7), &dev).unwrap();
            let w = Var::randn(0f32, 1., (4, 3, k, k), &dev).unwrap();
            let probe = Tensor::randn(0f32, 1., (2, 4, 6, 7), &dev).unwrap();
            let ours = (conv2d_same(x.as_tensor(), w.as_tensor()).unwrap() * &probe)
                .unwrap()
                .sum_all()
                .unwrap();
            let reference = (x.conv2d(&w, (k - 1) / 2, 1, 1, 1).unwrap() * &probe)
                .unwrap()
                .sum_all()
                .unwrap();
            let g1 = ours.backward().unwrap();
            let g2 = reference.backward().unwrap();
            assert!(
                max_abs_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-4,
                "dx k={k}"
            );
            assert!(
                max_abs_diff(g1.get(&w).unwrap(), g2.get(&w).unwrap()) < 1e-4,
                "dw k={k}"
            );
        }
    }
}
