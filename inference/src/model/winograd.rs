//! Winograd F(4x4, 3x3) convolution for inference on the CPU.
//!
//! A 3x3 "same" convolution computed tile by tile: each 6x6 input patch is
//! transformed (`Bᵀ d B`), multiplied point-wise with the transformed kernel
//! (`G g Gᵀ`, computed once per weight tensor) and transformed back
//! (`Aᵀ m A`) into a 4x4 output tile (Lavin & Gray, "Fast algorithms for
//! convolutional neural networks", 2016). Summed over input channels, the
//! point-wise products become 36 independent matrix products
//! `M[ξ] = V[ξ] · U[ξ]` (`[Co,Ci] x [Ci,tiles]`), done with the `gemm` crate:
//! 36 multiplies per 16 outputs instead of 144, so the matrix work is 4x
//! smaller than im2col's. The transforms are written as whole-row vector
//! operations (along y over full padded rows, along x over tiles after
//! splitting a row into its four phases) so the compiler vectorises them.
//!
//! Forward only: training keeps the im2col op and its backward. The kernel
//! transform costs about 160 flops per (Co, Ci) pair, so callers cache
//! [`WinogradKernel`] per weight tensor rather than per call.
//!
//! Numerics: the interpolation points 0, ±1, ±2 give f32 results within a
//! few 1e-6 relative of a direct convolution (tested against im2col below).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape};
use gemm::Parallelism;
use rayon::prelude::*;

use super::conv::{contiguous, dims4, gemm_overwrite, with_scratch, SendPtr, Strided};

/// Output tile side.
const M: usize = 4;
/// Input tile side (`M + 3 - 1`).
const N: usize = 6;
/// Points of the transformed tile.
const POINTS: usize = N * N;
/// Target size of one block's transformed input and output together, in f32 elements (8 MiB).
const BLOCK_ELEMS: usize = 1 << 21;

/// `G` (6x3): kernel transform.
const G: [[f32; 3]; N] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A 3x3 kernel bank in the Winograd domain: `[36][Co][Ci]`.
#[derive(Debug)]
pub(crate) struct WinogradKernel {
    c_out: usize,
    c_in: usize,
    v: Vec<f32>,
}

impl WinogradKernel {
    /// Transforms `w` (`[Co,Ci,3,3]`, row-major): output channels in parallel,
    /// each as whole-row vector operations over the input channels.
    pub(crate) fn new(w: &[f32], c_out: usize, c_in: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, checked just above.
                return unsafe { Self::new_avx512(w, c_out, c_in) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                return unsafe { Self::new_avx2(w, c_out, c_in) };
            }
        }
        Self::new_portable(w, c_out, c_in)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn new_avx512(w: &[f32], c_out: usize, c_in: usize) -> Self {
        Self::new_portable(w, c_out, c_in)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn new_avx2(w: &[f32], c_out: usize, c_in: usize) -> Self {
        Self::new_portable(w, c_out, c_in)
    }

    /// [`Self::new`] as plain loops, compiled for whichever vector unit the caller enables.
    #[inline(always)]
    fn new_portable(w: &[f32], c_out: usize, c_in: usize) -> Self {
        assert_eq!(w.len(), c_out * c_in * 9, "weight is not [Co,Ci,3,3]");
        let mut v = vec![0f32; POINTS * c_out * c_in];
        let dst = SendPtr(v.as_mut_ptr());
        (0..c_out).into_par_iter().for_each_init(
            || vec![0f32; 12 * c_in],
            |scratch, co| {
                let (taps, t) = scratch.split_at_mut(9 * c_in);
                // taps[k][ci] = w[co][ci][k]: one contiguous row per kernel tap.
                for (ci, g) in w[co * c_in * 9..][..c_in * 9].chunks_exact(9).enumerate() {
                    for (k, &value) in g.iter().enumerate() {
                        taps[k * c_in + ci] = value;
                    }
                }
                for (i, gi) in G.iter().enumerate() {
                    // t[c] = sum_r G[i][r] g[r][c]: row i of G g (6x3), per input channel.
                    for c in 0..3 {
                        let row = &mut t[c * c_in..][..c_in];
                        let (g0, g1, g2) = (
                            &taps[c * c_in..][..c_in],
                            &taps[(3 + c) * c_in..][..c_in],
                            &taps[(6 + c) * c_in..][..c_in],
                        );
                        for ci in 0..c_in {
                            row[ci] = gi[0] * g0[ci] + gi[1] * g1[ci] + gi[2] * g2[ci];
                        }
                    }
                    let (t0, t1, t2) = (&t[..c_in], &t[c_in..2 * c_in], &t[2 * c_in..3 * c_in]);
                    for (j, gj) in G.iter().enumerate() {
                        // SAFETY: row ((i*N+j)*Co + co) of `v` is written by this
                        // output channel only, and `v` outlives the parallel loop.
                        let out = unsafe {
                            std::slice::from_raw_parts_mut(
                                dst.offset(((i * N + j) * c_out + co) * c_in).0,
                                c_in,
                            )
                        };
                        for ci in 0..c_in {
                            out[ci] = t0[ci] * gj[0] + t1[ci] * gj[1] + t2[ci] * gj[2];
                        }
                    }
                }
            },
        );
        Self { c_out, c_in, v }
    }
}

/// `out = Bᵀ d` applied element-wise over six equally long vectors.
#[inline(always)]
fn input_transform(d: [&[f32]; N], out: &mut [&mut [f32]; N]) {
    let n = out[0].len();
    let [d0, d1, d2, d3, d4, d5] = d.map(|s| &s[..n]);
    let [o0, o1, o2, o3, o4, o5] = out;
    for t in 0..n {
        let (a0, a1, a2, a3, a4, a5) = (d0[t], d1[t], d2[t], d3[t], d4[t], d5[t]);
        o0[t] = 4.0 * a0 - 5.0 * a2 + a4;
        o1[t] = -4.0 * (a1 + a2) + a3 + a4;
        o2[t] = 4.0 * (a1 - a2) - a3 + a4;
        o3[t] = 2.0 * (a3 - a1) - a2 + a4;
        o4[t] = 2.0 * (a1 - a3) - a2 + a4;
        o5[t] = 4.0 * a1 - 5.0 * a3 + a5;
    }
}

/// `out = Aᵀ m` applied element-wise over six equally long vectors.
#[inline(always)]
fn output_transform(m: [&[f32]; N], out: &mut [&mut [f32]; M]) {
    let n = out[0].len();
    let [m0, m1, m2, m3, m4, m5] = m.map(|s| &s[..n]);
    let [o0, o1, o2, o3] = out;
    for t in 0..n {
        let (s12, d12) = (m1[t] + m2[t], m1[t] - m2[t]);
        let (s34, d34) = (m3[t] + m4[t], m3[t] - m4[t]);
        o0[t] = m0[t] + s12 + s34;
        o1[t] = d12 + 2.0 * d34;
        o2[t] = s12 + 4.0 * s34;
        o3[t] = d12 + 8.0 * d34 + m5[t];
    }
}

/// Six mutable views of equal length `n` into consecutive parts of `buf`.
#[inline(always)]
fn split6(buf: &mut [f32], n: usize) -> [&mut [f32]; N] {
    let (a, rest) = buf.split_at_mut(n);
    let (b, rest) = rest.split_at_mut(n);
    let (c, rest) = rest.split_at_mut(n);
    let (d, rest) = rest.split_at_mut(n);
    let (e, rest) = rest.split_at_mut(n);
    [a, b, c, d, e, &mut rest[..n]]
}

/// Tile counts and the padded row length of one image.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    c_in: usize,
    c_out: usize,
    height: usize,
    width: usize,
    /// Tiles per row.
    tiles_x: usize,
    /// Tile rows.
    tiles_y: usize,
}

impl Tiling {
    /// Length of a zero-padded input row: one pixel left, the rest right.
    fn padded_width(&self) -> usize {
        M * self.tiles_x + 2
    }
    /// Tile rows per block, so that a block's `U` and `M` hold about `BLOCK_ELEMS`.
    /// Tile rows per block: about `BLOCK_ELEMS` of `U` and `M`, with the rows shared evenly
    /// (8 rows in blocks of 7 would leave one thread a block of 1).
    fn rows_per_block(&self) -> usize {
        let per_row = POINTS * (self.c_in + self.c_out) * self.tiles_x;
        let most = (BLOCK_ELEMS / per_row.max(1)).clamp(1, self.tiles_y);
        self.tiles_y.div_ceil(self.tiles_y.div_ceil(most))
    }
}

/// Scratch of one block, kept per thread.
#[derive(Default)]
struct Scratch {
    /// Transformed input `[36][Ci][tiles]`.
    u: Vec<f32>,
    /// Products `[36][Co][tiles]`.
    m: Vec<f32>,
}

/// Scratch of one row transform, kept per thread (row transforms may run on other
/// threads than their block).
#[derive(Default)]
struct RowScratch {
    /// Six padded input rows, then their y-transforms.
    rows: Vec<f32>,
    /// Four phases of one transformed row (`tiles_x + 1` each), then six x-transforms;
    /// or, for the output, the y-transforms then four x-transforms.
    phases: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    static ROW_SCRATCH: std::cell::RefCell<RowScratch> =
        std::cell::RefCell::new(RowScratch::default());
}

/// Runs `f(channel, scratch)` for every channel: spread over the rayon pool when the
/// blocks alone do not fill it, else in a loop on this thread.
#[inline(always)]
fn for_each_channel(channels: usize, spread: bool, f: impl Fn(usize, &mut RowScratch) + Sync) {
    if spread {
        (0..channels).into_par_iter().for_each(|c| {
            with_scratch(&ROW_SCRATCH, |r| f(c, r));
        });
    } else {
        with_scratch(&ROW_SCRATCH, |r| (0..channels).for_each(|c| f(c, r)));
    }
}

/// `[B,Ci,H,W] -> [B,Co,H,W]`, 3x3 kernel, zero padding 1, stride 1.
pub(crate) fn conv3x3(
    x: &[f32],
    batch: usize,
    height: usize,
    width: usize,
    k: &WinogradKernel,
) -> Vec<f32> {
    let tiling = Tiling {
        c_in: k.c_in,
        c_out: k.c_out,
        height,
        width,
        tiles_x: width.div_ceil(M),
        tiles_y: height.div_ceil(M),
    };
    let plane = height * width;
    assert_eq!(x.len(), batch * k.c_in * plane, "input is not [B,Ci,H,W]");
    let mut out = vec![0f32; batch * k.c_out * plane];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let rows = tiling.rows_per_block();
    let blocks: Vec<(usize, usize, usize)> = (0..batch)
        .flat_map(|b| {
            (0..tiling.tiles_y)
                .step_by(rows)
                .map(move |ty| (b, ty, (ty + rows).min(tiling.tiles_y)))
        })
        .collect();
    let par = if blocks.len() >= rayon::current_num_threads() {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    };
    blocks.par_iter().for_each(|&(b, ty0, ty1)| {
        let src = &x[b * k.c_in * plane..][..k.c_in * plane];
        // Blocks of one image cover disjoint tile rows, hence write disjoint output rows.
        let dst = out_ptr.offset(b * k.c_out * plane);
        let job = BlockJob {
            src,
            dst,
            kernel: k,
            tiling: &tiling,
            ty0,
            ty1,
            par,
        };
        with_scratch(&SCRATCH, |s| block(&job, s));
    });
    out
}

/// Most elements of one band's Winograd kernel in [`conv3x3_banded`] (32 MiB, the size of
/// the reference machine's last-level cache): it is built, used by 36 products and dropped.
/// Timed on the original network's deep layers (1024 and 2048 channels, 32x32 and 64x64):
/// 16 MiB bands ran up to 50 % slower (more, thinner products), 64 and 128 MiB bands
/// 50-110 % slower (the kernel no longer stays in the cache).
const BAND_KERNEL_ELEMS: usize = 1 << 23;

/// Output channels per band of [`conv3x3_banded`]: as many as keep the band's kernel within
/// [`BAND_KERNEL_ELEMS`], a multiple of 16 (the matrix kernels' row block), at least 16.
fn band_len(c_in: usize, c_out: usize) -> usize {
    let most = BAND_KERNEL_ELEMS / (POINTS * c_in.max(1));
    (most / 16 * 16).max(16).min(c_out)
}

/// [`conv3x3`] for layers whose Winograd kernel is too large to build whole (the original
/// network's 1024- and 2048-channel levels: 600 MB for 2048 x 2048). `w` is the raw
/// `[Co,Ci,3,3]` weight. Each image's input is transformed once; then the output channels
/// are taken in bands, and each band's kernel is built, used for its 36 products and
/// dropped, so the extra memory is the transformed input, one band's kernel and its
/// products, never the whole kernel.
pub(crate) fn conv3x3_banded(
    x: &[f32],
    batch: usize,
    height: usize,
    width: usize,
    w: &[f32],
    c_out: usize,
    c_in: usize,
) -> Vec<f32> {
    conv3x3_in_bands(
        x,
        (batch, height, width),
        w,
        (c_out, c_in),
        band_len(c_in, c_out),
    )
}

/// [`conv3x3_banded`] with an explicit band length (tests use small ones).
fn conv3x3_in_bands(
    x: &[f32],
    (batch, height, width): (usize, usize, usize),
    w: &[f32],
    (c_out, c_in): (usize, usize),
    band: usize,
) -> Vec<f32> {
    let plane = height * width;
    assert_eq!(x.len(), batch * c_in * plane, "input is not [B,Ci,H,W]");
    assert_eq!(w.len(), c_out * c_in * 9, "weight is not [Co,Ci,3,3]");
    assert!(band > 0, "a band holds at least one output channel");
    let tiling = Tiling {
        c_in,
        c_out,
        height,
        width,
        tiles_x: width.div_ceil(M),
        tiles_y: height.div_ceil(M),
    };
    let mut out = vec![0f32; batch * c_out * plane];
    let job = BandedJob {
        w,
        tiling: &tiling,
        band,
    };
    for b in 0..batch {
        let src = &x[b * c_in * plane..][..c_in * plane];
        let dst = &mut out[b * c_out * plane..][..c_out * plane];
        banded_image(&job, src, dst);
    }
    out
}

/// The parts of a banded convolution that every image shares.
struct BandedJob<'a> {
    /// Raw weight `[Co,Ci,3,3]`.
    w: &'a [f32],
    tiling: &'a Tiling,
    band: usize,
}

/// [`banded_image_portable`] compiled for the widest vector unit the CPU has (as [`block`]).
fn banded_image(job: &BandedJob, src: &[f32], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { banded_image_avx512(job, src, dst) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { banded_image_avx2(job, src, dst) };
        }
    }
    banded_image_portable(job, src, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn banded_image_avx512(job: &BandedJob, src: &[f32], dst: &mut [f32]) {
    banded_image_portable(job, src, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn banded_image_avx2(job: &BandedJob, src: &[f32], dst: &mut [f32]) {
    banded_image_portable(job, src, dst);
}

/// One image of [`conv3x3_in_bands`]: `src` is `[Ci,H,W]`, `dst` `[Co,H,W]`.
#[inline(always)]
fn banded_image_portable(job: &BandedJob, src: &[f32], dst: &mut [f32]) {
    let t = job.tiling;
    let (c_in, c_out) = (t.c_in, t.c_out);
    let plane_len = t.height * t.width;
    let tiles = t.tiles_x * t.tiles_y;
    // The whole image's transformed input, shared by every band.
    let mut u = vec![0f32; POINTS * c_in * tiles];
    let u_ptr = SendPtr(u.as_mut_ptr());
    for_each_channel(c_in, true, |ci, rs| {
        let plane = &src[ci * plane_len..][..plane_len];
        for ty in 0..t.tiles_y {
            let col0 = ty * t.tiles_x;
            transform_input_row(plane, t, ty, rs, u_ptr, |xi| {
                (xi * c_in + ci) * tiles + col0
            });
        }
    });
    let mut m = vec![0f32; POINTS * job.band.min(c_out) * tiles];
    for co0 in (0..c_out).step_by(job.band) {
        let n = job.band.min(c_out - co0);
        let kernel = WinogradKernel::new(&job.w[co0 * c_in * 9..][..n * c_in * 9], n, c_in);
        for xi in 0..POINTS {
            // SAFETY: V[ξ] is [n,Ci] in `kernel.v`, U[ξ] [Ci,tiles] in `u`, M[ξ] [n,tiles]
            // in `m`, all sized above.
            unsafe {
                gemm_overwrite(
                    n,
                    tiles,
                    c_in,
                    m[xi * n * tiles..].as_mut_ptr(),
                    tiles as isize,
                    Strided::rows(kernel.v[xi * n * c_in..].as_ptr(), c_in as isize),
                    Strided::rows(u[xi * c_in * tiles..].as_ptr(), tiles as isize),
                    Parallelism::Rayon(0),
                );
            }
        }
        drop(kernel);
        let band_dst = SendPtr(dst[co0 * plane_len..][..n * plane_len].as_mut_ptr());
        let m = &m;
        for_each_channel(n, true, |co, rs| {
            let image = band_dst; // the whole wrapper, not its field (closure capture)
            let plane = image.offset(co * plane_len);
            for ty in 0..t.tiles_y {
                let col0 = ty * t.tiles_x;
                // Each channel writes only its own plane of `dst`.
                transform_output_row(m, t, ty, &mut rs.phases, plane, |xi| {
                    (xi * n + co) * tiles + col0
                });
            }
        });
    }
}

/// One block of work: tile rows `ty0..ty1` of one image.
struct BlockJob<'a> {
    src: &'a [f32],
    /// The image's first output element; the block writes only its own rows.
    dst: SendPtr,
    kernel: &'a WinogradKernel,
    tiling: &'a Tiling,
    ty0: usize,
    ty1: usize,
    par: Parallelism,
}

/// [`block_portable`] compiled for the widest vector unit the CPU has: the
/// transforms are plain loops the compiler vectorises, and the portable build
/// may only use SSE2.
fn block(job: &BlockJob, s: &mut Scratch) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { block_avx512(job, s) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { block_avx2(job, s) };
        }
    }
    block_portable(job, s);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn block_avx512(job: &BlockJob, s: &mut Scratch) {
    block_portable(job, s);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2(job: &BlockJob, s: &mut Scratch) {
    block_portable(job, s);
}

/// Input transform, the 36 products and the output transform of one block.
#[inline(always)]
fn block_portable(job: &BlockJob, s: &mut Scratch) {
    let (src, dst, k, t) = (job.src, job.dst, job.kernel, job.tiling);
    let (ty0, ty1) = (job.ty0, job.ty1);
    let tiles = (ty1 - ty0) * t.tiles_x;
    s.u.resize(POINTS * t.c_in * tiles, 0.0);
    s.m.resize(POINTS * t.c_out * tiles, 0.0);
    // With fewer blocks than threads, the channels' transforms share the pool too.
    let spread = matches!(job.par, Parallelism::Rayon(_));
    let u = SendPtr(s.u.as_mut_ptr());
    for_each_channel(t.c_in, spread, |ci, rs| {
        let plane = &src[ci * t.height * t.width..][..t.height * t.width];
        for ty in ty0..ty1 {
            let col0 = (ty - ty0) * t.tiles_x;
            transform_input_row(plane, t, ty, rs, u, |xi| (xi * t.c_in + ci) * tiles + col0);
        }
    });
    for xi in 0..POINTS {
        // SAFETY: the buffers are sized above: V[ξ] is [Co,Ci], U[ξ] [Ci,tiles], M[ξ] [Co,tiles].
        unsafe {
            gemm_overwrite(
                t.c_out,
                tiles,
                t.c_in,
                s.m[xi * t.c_out * tiles..].as_mut_ptr(),
                tiles as isize,
                Strided::rows(k.v[xi * t.c_out * t.c_in..].as_ptr(), t.c_in as isize),
                Strided::rows(s.u[xi * t.c_in * tiles..].as_ptr(), tiles as isize),
                job.par,
            );
        }
    }
    let m = &s.m;
    for_each_channel(t.c_out, spread, |co, rs| {
        let image = dst; // the whole wrapper, not its field (closure capture)
                         // SAFETY: channel `co`'s plane lies inside the image `dst` points at.
        let plane = SendPtr(unsafe { image.0.add(co * t.height * t.width) });
        for ty in ty0..ty1 {
            let col0 = (ty - ty0) * t.tiles_x;
            transform_output_row(m, t, ty, &mut rs.phases, plane, |xi| {
                (xi * t.c_out + co) * tiles + col0
            });
        }
    });
}

/// Transforms tile row `ty` of one input channel into `U` (at `u`) at `at(ξ)..+tiles_x`.
#[inline(always)]
fn transform_input_row(
    plane: &[f32],
    t: &Tiling,
    ty: usize,
    s: &mut RowScratch,
    u: SendPtr,
    at: impl Fn(usize) -> usize,
) {
    let wp = t.padded_width();
    let nx = t.tiles_x;
    s.rows.resize(2 * N * wp, 0.0);
    let (raw, ytr) = s.rows.split_at_mut(N * wp);
    // Six zero-padded input rows y = 4ty-1 .. 4ty+4.
    for (j, row) in raw.chunks_exact_mut(wp).enumerate() {
        row.fill(0.0);
        let y = (M * ty + j).wrapping_sub(1);
        if y < t.height {
            row[1..=t.width].copy_from_slice(&plane[y * t.width..][..t.width]);
        }
    }
    let raw = &*raw;
    let r = |j: usize| &raw[j * wp..][..wp];
    input_transform([r(0), r(1), r(2), r(3), r(4), r(5)], &mut split6(ytr, wp));
    // Along x: split each transformed row into its four phases (phase p of
    // tile tx is row[4tx + p]; tile tx's 6 points are p0..p3[tx], p0[tx+1], p1[tx+1]).
    s.phases.resize(M * (nx + 1) + N * nx, 0.0);
    let (ph, xtr) = s.phases.split_at_mut(M * (nx + 1));
    for i in 0..N {
        let row = &ytr[i * wp..][..wp];
        {
            let (p0, rest) = ph.split_at_mut(nx + 1);
            let (p1, rest) = rest.split_at_mut(nx + 1);
            let (p2, p3) = rest.split_at_mut(nx + 1);
            for (tx, c) in row.chunks_exact(M).take(nx).enumerate() {
                p0[tx] = c[0];
                p1[tx] = c[1];
                p2[tx] = c[2];
                p3[tx] = c[3];
            }
            p0[nx] = row[M * nx];
            p1[nx] = row[M * nx + 1];
        }
        let p = |q: usize, from: usize| &ph[q * (nx + 1) + from..][..nx];
        let mut outs = split6(xtr, nx);
        input_transform(
            [p(0, 0), p(1, 0), p(2, 0), p(3, 0), p(0, 1), p(1, 1)],
            &mut outs,
        );
        for (j, o) in outs.iter().enumerate() {
            // SAFETY: `at` maps this channel's rows to ranges of `U` no other channel
            // writes, inside the buffer the block sized.
            let dst = unsafe { std::slice::from_raw_parts_mut(u.offset(at(i * N + j)).0, nx) };
            dst.copy_from_slice(o);
        }
    }
}

/// Transforms tile row `ty` of one output channel from `m` (at `at(ξ)`) into `plane`.
#[inline(always)]
fn transform_output_row(
    m: &[f32],
    t: &Tiling,
    ty: usize,
    scratch: &mut Vec<f32>,
    plane: SendPtr,
    at: impl Fn(usize) -> usize,
) {
    let nx = t.tiles_x;
    // ytr[r][k]: Aᵀ along y (rows r of the output tile), for each x point k.
    scratch.resize(M * N * nx + M * nx, 0.0);
    let (ytr, xtr) = scratch.split_at_mut(M * N * nx);
    for kx in 0..N {
        let col = |i: usize| &m[at(i * N + kx)..][..nx];
        let (r0, rest) = ytr[kx * nx..].split_at_mut(N * nx);
        let (r1, rest) = rest.split_at_mut(N * nx);
        let (r2, rest) = rest.split_at_mut(N * nx);
        let r3 = &mut rest[..nx];
        output_transform(
            [col(0), col(1), col(2), col(3), col(4), col(5)],
            &mut [&mut r0[..nx], &mut r1[..nx], &mut r2[..nx], r3],
        );
    }
    for r in 0..M {
        let y = M * ty + r;
        if y >= t.height {
            break;
        }
        let k = |kx: usize| &ytr[(r * N + kx) * nx..][..nx];
        let (q0, rest) = xtr.split_at_mut(nx);
        let (q1, rest) = rest.split_at_mut(nx);
        let (q2, q3) = rest.split_at_mut(nx);
        output_transform(
            [k(0), k(1), k(2), k(3), k(4), k(5)],
            &mut [&mut *q0, &mut *q1, &mut *q2, &mut *q3],
        );
        // SAFETY: row `y` of this channel belongs to this block's tile rows alone
        // (no other thread writes it) and lies inside the plane.
        let out_row =
            unsafe { std::slice::from_raw_parts_mut(plane.offset(y * t.width).0, t.width) };
        let full = t.width / M;
        for (tx, c) in out_row.chunks_exact_mut(M).enumerate() {
            c[0] = q0[tx];
            c[1] = q1[tx];
            c[2] = q2[tx];
            c[3] = q3[tx];
        }
        let qs = [&*q0, &*q1, &*q2, &*q3];
        for (p, v) in out_row[full * M..].iter_mut().enumerate() {
            *v = qs[p][full];
        }
    }
}

/// The candle op running [`conv3x3`] with a cached kernel. Inference only: it
/// has no backward, so callers use it only on tensors that track no gradient.
#[derive(Debug, Clone)]
pub(crate) struct WinogradConv3x3(pub(crate) Arc<WinogradKernel>);

impl CustomOp1 for WinogradConv3x3 {
    fn name(&self) -> &'static str {
        "conv3x3-winograd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, c_in, height, width) = dims4(l, "input")?;
        if c_in != self.0.c_in {
            candle_core::bail!(
                "conv3x3-winograd: input has {c_in} channels, the kernel takes {}",
                self.0.c_in
            );
        }
        let x = contiguous(s, l, "input")?;
        let out = conv3x3(x, batch, height, width, &self.0);
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, self.0.c_out, height, width)),
        ))
    }
}

/// The candle op running [`conv3x3_banded`] on an input (first operand) and a raw
/// `[Co,Ci,3,3]` weight (second). Inference only, like [`WinogradConv3x3`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct BandedWinogradConv3x3;

impl CustomOp2 for BandedWinogradConv3x3 {
    fn name(&self) -> &'static str {
        "conv3x3-winograd-banded"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, c_in, height, width) = dims4(l1, "input")?;
        let (c_out, w_in, kh, kw) = dims4(l2, "weight")?;
        if (w_in, kh, kw) != (c_in, 3, 3) {
            candle_core::bail!(
                "conv3x3-winograd-banded: weight {:?} does not take input {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let x = contiguous(s1, l1, "input")?;
        let w = contiguous(s2, l2, "weight")?;
        let out = conv3x3_banded(x, batch, height, width, w, c_out, c_in);
        Ok((
            CpuStorage::F32(out),
            Shape::from((batch, c_out, height, width)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conv::conv2d_same;
    use candle_core::{Device, Tensor};

    fn reference(x: &[f32], w: &[f32], dims: (usize, usize, usize, usize, usize)) -> Vec<f32> {
        let (b, ci, co, h, wd) = dims;
        let xt = Tensor::from_slice(x, (b, ci, h, wd), &Device::Cpu).unwrap();
        let wt = Tensor::from_slice(w, (co, ci, 3, 3), &Device::Cpu).unwrap();
        conv2d_same(&xt, &wt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn pseudo(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.7548 + seed).sin() * 43758.545).fract() * 2.0 - 1.0)
            .collect()
    }

    /// Largest absolute difference, and the output's scale (its largest magnitude, at least 1).
    fn max_error(expected: &[f32], got: &[f32]) -> (f32, f32) {
        let scale = expected.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = expected
            .iter()
            .zip(got)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        (err, scale)
    }

    #[test]
    fn kernel_transform_is_g_w_g_transposed() {
        let (co, ci) = (5, 7);
        let w = pseudo(co * ci * 9, 0.9);
        let kernel = WinogradKernel::new(&w, co, ci);
        for o in 0..co {
            for i in 0..ci {
                let g = &w[(o * ci + i) * 9..][..9];
                for (a, ga) in G.iter().enumerate() {
                    for (b, gb) in G.iter().enumerate() {
                        let mut want = 0f64;
                        for r in 0..3 {
                            for c in 0..3 {
                                want +=
                                    f64::from(ga[r]) * f64::from(g[r * 3 + c]) * f64::from(gb[c]);
                            }
                        }
                        let got = kernel.v[((a * N + b) * co + o) * ci + i];
                        assert!(
                            (f64::from(got) - want).abs() < 1e-6,
                            "V[{a}][{b}] of ({o},{i}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn banded_matches_im2col_with_ragged_bands_and_batches() {
        // Bands of 16 over 40 output channels (16, 16, 8), ragged sides, a batch of 2,
        // and the band length the real rule picks.
        for &(b, ci, co, h, w, band) in &[
            (2, 24, 40, 13, 10, 16),
            (1, 3, 5, 9, 7, 2),
            (1, 64, 33, 20, 20, band_len(64, 33)),
        ] {
            let x = pseudo(b * ci * h * w, 0.4);
            let wt = pseudo(co * ci * 9, 1.1);
            let expected = reference(&x, &wt, (b, ci, co, h, w));
            let got = conv3x3_in_bands(&x, (b, h, w), &wt, (co, ci), band);
            let (err, scale) = max_error(&expected, &got);
            assert!(
                err <= 1e-5 * scale,
                "{b}x{ci}->{co} {h}x{w} in bands of {band}: max error {err} (scale {scale})"
            );
        }
    }

    #[test]
    fn bands_keep_the_kernel_within_its_budget() {
        assert_eq!(band_len(2048, 2048), 112);
        assert_eq!(band_len(1024, 1024), 224);
        assert_eq!(band_len(64, 33), 33);
        assert_eq!(band_len(100_000, 4096), 16);
        for &(ci, co) in &[(1024, 2048), (2048, 1024), (1024, 1024), (2048, 2048)] {
            assert!(POINTS * ci * band_len(ci, co) <= BAND_KERNEL_ELEMS);
        }
    }

    #[test]
    fn matches_im2col_on_ragged_and_multi_block_shapes() {
        // Sides that are not multiples of 4, a 1-pixel image, batches, and
        // enough channels x rows to split into several blocks.
        for &(b, ci, co, h, w) in &[
            (1, 1, 1, 1, 1),
            (2, 3, 5, 9, 7),
            (1, 4, 6, 4, 4),
            (1, 8, 3, 13, 22),
            (2, 64, 48, 70, 61),
            (1, 256, 8, 130, 9),
        ] {
            let x = pseudo(b * ci * h * w, 0.3);
            let wt = pseudo(co * ci * 9, 1.7);
            let expected = reference(&x, &wt, (b, ci, co, h, w));
            let got = conv3x3(&x, b, h, w, &WinogradKernel::new(&wt, co, ci));
            let (err, scale) = max_error(&expected, &got);
            assert!(
                err <= 1e-5 * scale,
                "{b}x{ci}->{co} {h}x{w}: max error {err} (scale {scale})"
            );
        }
    }
}
