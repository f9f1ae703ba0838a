//! Model input preparation: bilinear resize of an 8-bit RGB image to `size` x `size`, scaling
//! to 0..1 and planar CHW layout, as the contract's preprocessing step prescribes (§5).
//!
//! Bilinear interpolation uses half-pixel centres: output pixel `d` samples the source at
//! `(d + 0.5) * in / out - 0.5`, clamped to the first and last pixel. This is OpenCV's
//! `INTER_LINEAR` (the old service called `cv2.resize` with its default) and PyTorch's
//! `interpolate(mode="bilinear", align_corners=False)`. The aspect ratio is not kept.
//!
//! It is plain bilinear, with no low-pass filter: when shrinking by more than 2x it reads only
//! the 2x2 neighbourhood of each sample and so aliases (PIL and `antialias=True` widen the
//! kernel instead). The model was served with OpenCV's plain bilinear, so that is what we match.
//! One difference remains: `cv2.resize` on an 8-bit image rounds its result to 8 bits (with
//! 11-bit fixed-point weights) before the division by 255, while this computes in `f32`
//! throughout; the two differ by at most about 1/255.

use image::RgbImage;
use rayon::prelude::*;

use crate::resample::{taps, Tap};

/// Output rows per rayon task: enough to amortise the two horizontal rows a band must compute
/// before its first output row, few enough to balance across threads.
const BAND_ROWS: usize = 16;

/// Resizes `img` to `size` x `size` with bilinear interpolation (half-pixel centres, aspect
/// ratio ignored), divides by 255 and returns the planes R, G, B one after the other: index
/// `c * size * size + y * size + x`, length `3 * size * size`. No mean or std is applied.
///
/// An image with no pixels gives all zeros (the decoder never produces one).
///
/// # Panics
///
/// If `3 * size * size` floats cannot be allocated (the model takes 1024).
pub fn to_model_input(img: &RgbImage, size: u32) -> Vec<f32> {
    let side = size as usize;
    let Some(plane) = side
        .checked_mul(side)
        .filter(|p| p.checked_mul(3).is_some())
    else {
        panic!("a {size}x{size} model input does not fit in memory");
    };
    let mut out = vec![0.0_f32; 3 * plane];
    if plane == 0 || img.width() == 0 || img.height() == 0 {
        return out;
    }
    let cols = taps(img.width(), size, 3);
    let rows = taps(img.height(), size, 1);
    let stride = img.width() as usize * 3;
    let src = img.as_raw();
    let src_row = |y: usize| &src[y * stride..][..stride];

    // Separable: each band of output rows keeps the two source rows it interpolates between,
    // already resized horizontally (planar, 3 x side), and blends them vertically. Each source
    // row is resized about once per band instead of once per output row it feeds, and the
    // vertical blend runs over contiguous slices, which the compiler vectorises. The order of
    // operations (columns, then rows, then / 255) is that of PyTorch's CPU kernel.
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    let band = BAND_ROWS * side;
    r_plane
        .par_chunks_mut(band)
        .zip(g_plane.par_chunks_mut(band))
        .zip(b_plane.par_chunks_mut(band))
        .zip(rows.par_chunks(BAND_ROWS))
        .for_each(|(((r_band, g_band), b_band), band_rows)| {
            let mut upper = HorizontalRow::new(side);
            let mut lower = HorizontalRow::new(side);
            let outputs = r_band
                .chunks_exact_mut(side)
                .zip(g_band.chunks_exact_mut(side))
                .zip(b_band.chunks_exact_mut(side));
            for (((r, g), b), ty) in outputs.zip(band_rows) {
                if lower.source == Some(ty.i0) {
                    // Moving down: the old lower row is the new upper one.
                    std::mem::swap(&mut upper, &mut lower);
                }
                upper.fill(ty.i0, src_row(ty.i0), &cols);
                lower.fill(ty.i1, src_row(ty.i1), &cols);
                let (wy0, wy1) = (1.0 - ty.w1, ty.w1);
                for (c, out_row) in [r, g, b].into_iter().enumerate() {
                    let top = &upper.values[c * side..][..side];
                    let bottom = &lower.values[c * side..][..side];
                    for ((o, &t), &bt) in out_row.iter_mut().zip(top).zip(bottom) {
                        *o = (wy0 * t + wy1 * bt) / 255.0;
                    }
                }
            }
        });
    out
}

/// One source row resized horizontally to the output width, stored planar (R, G, B).
#[derive(Debug)]
struct HorizontalRow {
    /// Which source row `values` holds, if any.
    source: Option<usize>,
    values: Vec<f32>,
}

impl HorizontalRow {
    fn new(side: usize) -> Self {
        Self {
            source: None,
            values: vec![0.0; 3 * side],
        }
    }

    /// Makes this hold source row `y` (whose samples are `row`), unless it already does.
    fn fill(&mut self, y: usize, row: &[u8], cols: &[Tap]) {
        if self.source == Some(y) {
            return;
        }
        self.source = Some(y);
        let side = cols.len();
        let (r, rest) = self.values.split_at_mut(side);
        let (g, b) = rest.split_at_mut(side);
        for (((tx, r), g), b) in cols.iter().zip(r).zip(g).zip(b) {
            let (wx0, wx1) = (1.0 - tx.w1, tx.w1);
            let (p, q) = (&row[tx.i0..tx.i0 + 3], &row[tx.i1..tx.i1 + 3]);
            *r = wx0 * f32::from(p[0]) + wx1 * f32::from(q[0]);
            *g = wx0 * f32::from(p[1]) + wx1 * f32::from(q[1]);
            *b = wx0 * f32::from(p[2]) + wx1 * f32::from(q[2]);
        }
    }
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    fn plane(out: &[f32], size: u32, c: usize) -> &[f32] {
        let n = (size * size) as usize;
        &out[c * n..(c + 1) * n]
    }

    #[test]
    fn output_length_is_three_planes() {
        let img = RgbImage::new(13, 7);
        for size in [1, 2, 32, 100] {
            assert_eq!(to_model_input(&img, size).len(), 3 * (size * size) as usize);
        }
        assert!(to_model_input(&img, 0).is_empty());
    }

    #[test]
    fn empty_image_gives_zeros() {
        let out = to_model_input(&RgbImage::new(0, 0), 4);
        assert_eq!(out, vec![0.0; 48]);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, Rgb([10, 128, 255]));
        for size in [1, 5, 16, 64] {
            let out = to_model_input(&img, size);
            for (c, v) in [10.0_f32, 128.0, 255.0].into_iter().enumerate() {
                let want = v / 255.0;
                assert!(plane(&out, size, c)
                    .iter()
                    .all(|&x| (x - want).abs() < 1e-6));
            }
        }
    }

    #[test]
    fn same_size_is_identity_over_255() {
        let img = RgbImage::from_fn(9, 9, |x, y| Rgb([(x * 20) as u8, (y * 25) as u8, 7]));
        let out = to_model_input(&img, 9);
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                assert_eq!(plane(&out, 9, c)[i], f32::from(px[c]) / 255.0);
            }
        }
    }

    /// Equivalent PyTorch code:
    /// `F.interpolate(torch.tensor([[[[0., 64.], [128., 192.]]]]), size=(4, 4),
    ///  mode="bilinear", align_corners=False)`.
    /// Along each axis the taps are -0.25 -> 0 (clamped), 0.25, 0.75, 1.25 -> 1 (clamped), so a
    /// row [a, b] becomes [a, .75a + .25b, .25a + .75b, b].
    #[test]
    fn upscale_2x2_to_4x4_matches_half_pixel_values() {
        let img = RgbImage::from_fn(2, 2, |x, y| {
            let v = (y * 128 + x * 64) as u8;
            Rgb([v, 255 - v, 0])
        });
        let want: [f32; 16] = [
            0., 16., 48., 64., //
            32., 48., 80., 96., //
            96., 112., 144., 160., //
            128., 144., 176., 192.,
        ];
        let out = to_model_input(&img, 4);
        for (got, w) in plane(&out, 4, 0).iter().zip(want) {
            assert!((got - w / 255.0).abs() < 1e-6, "{got} vs {}", w / 255.0);
        }
        for (got, w) in plane(&out, 4, 1).iter().zip(want) {
            assert!((got - (255.0 - w) / 255.0).abs() < 1e-6);
        }
        assert!(plane(&out, 4, 2).iter().all(|&x| x == 0.0));
    }

    /// Halving a 4-wide row samples at 0.5 and 2.5: each output is the mean of a pair.
    #[test]
    fn downscale_by_two_averages_pairs() {
        let img = RgbImage::from_fn(4, 1, |x, _| Rgb([[0, 100, 200, 250][x as usize], 0, 0]));
        let out = to_model_input(&img, 2);
        let r = plane(&out, 2, 0);
        for row in r.chunks(2) {
            assert!((row[0] - 50.0 / 255.0).abs() < 1e-6);
            assert!((row[1] - 225.0 / 255.0).abs() < 1e-6);
        }
    }
}
