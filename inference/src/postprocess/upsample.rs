//! The network's probability map brought to the image's size before the threshold, so the
//! outline follows the edge at full resolution instead of in steps of the scale factor.
//!
//! Bilinear with half-pixel centres (as the model input is resized, [`crate::resample`]),
//! then `p > threshold`. The old service thresholded at the network's size and resized the
//! binary mask by nearest neighbour ([`Mask::resize_nearest`]); on a 1000-pixel image from a
//! 256 network that leaves steps of about four pixels along every outline. Only the `u8`
//! mask is stored at full size: each output row is interpolated and thresholded in place.

use rayon::prelude::*;

use super::Mask;
use crate::resample::taps;

/// Output rows per rayon task.
const BAND_ROWS: usize = 32;

/// Resizes the row-major `src_w` x `src_h` probability map `probs` to `width` x `height` by
/// bilinear interpolation and keeps the pixels above `threshold`.
///
/// An empty source or destination gives an all-background mask of `width` x `height`.
///
/// # Panics
///
/// When `probs.len() != src_w * src_h`.
pub fn threshold_upsampled(
    probs: &[f32],
    src_w: u32,
    src_h: u32,
    width: u32,
    height: u32,
    threshold: f32,
) -> Mask {
    let (sw, w) = (src_w as usize, width as usize);
    assert_eq!(
        probs.len(),
        sw * src_h as usize,
        "probability map is not {src_w}x{src_h}"
    );
    let mut data = vec![0u8; w * height as usize];
    if probs.is_empty() || data.is_empty() {
        return Mask::new(width, height);
    }
    let cols = taps(src_w, width, 1);
    let rows = taps(src_h, height, 1);
    data.par_chunks_mut(BAND_ROWS * w)
        .zip(rows.par_chunks(BAND_ROWS))
        .for_each(|(band, band_rows)| {
            for (out, ty) in band.chunks_exact_mut(w).zip(band_rows) {
                let top = &probs[ty.i0 * sw..][..sw];
                let bottom = &probs[ty.i1 * sw..][..sw];
                let (wy0, wy1) = (1.0 - ty.w1, ty.w1);
                for (o, tx) in out.iter_mut().zip(&cols) {
                    let (wx0, wx1) = (1.0 - tx.w1, tx.w1);
                    let upper = wx0 * top[tx.i0] + wx1 * top[tx.i1];
                    let lower = wx0 * bottom[tx.i0] + wx1 * bottom[tx.i1];
                    *o = u8::from(wy0 * upper + wy1 * lower > threshold);
                }
            }
        });
    Mask::from_vec(width, height, data).unwrap_or_else(|| Mask::new(width, height))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A 2x2 map [0, 1; 0, 1] at 8x8: the columns sample at -0.375 (clamped), -0.125
    /// (clamped), 0.125, ..., so the value along a row is 0, 0, .125, .375, .625, .875, 1, 1
    /// and a threshold of 0.5 keeps the right half exactly.
    #[test]
    fn a_step_lands_halfway_between_the_source_pixels() {
        let m = threshold_upsampled(&[0.0, 1.0, 0.0, 1.0], 2, 2, 8, 8, 0.5);
        for y in 0..8 {
            let row: Vec<bool> = (0..8).map(|x| m.get(x, y)).collect();
            assert_eq!(row, [false, false, false, false, true, true, true, true]);
        }
        let m = threshold_upsampled(&[0.0, 1.0, 0.0, 1.0], 2, 2, 8, 8, 0.7);
        assert!(!m.get(4, 0) && m.get(5, 0));
    }

    /// A disc thresholded at full resolution has a smooth outline: along each row the
    /// foreground is one run whose ends move by at most the scale factor's fraction between
    /// neighbouring rows, while the nearest-resized mask moves in whole steps of 4 pixels.
    #[test]
    fn outlines_are_not_staircased() {
        let n = 64u32;
        let probs: Vec<f32> = (0..n * n)
            .map(|i| {
                let (x, y) = (f64::from(i % n) + 0.5, f64::from(i / n) + 0.5);
                let r = ((x - 32.0).powi(2) + (y - 32.0).powi(2)).sqrt();
                (1.0 / (1.0 + (r - 20.0).exp())) as f32
            })
            .collect();
        let full = threshold_upsampled(&probs, n, n, 4 * n, 4 * n, 0.5);
        let binary: Vec<u8> = probs.iter().map(|&p| u8::from(p > 0.5)).collect();
        let nearest = Mask::from_vec(n, n, binary)
            .expect("mask")
            .resize_nearest(4 * n, 4 * n);
        let left_edges = |m: &Mask| -> Vec<u32> {
            (0..m.height())
                .filter_map(|y| (0..m.width()).find(|&x| m.get(x, y)))
                .collect()
        };
        let distinct_steps = |edges: &[u32]| {
            edges
                .windows(2)
                .filter(|w| w[0] != w[1])
                .map(|w| w[0].abs_diff(w[1]))
                .collect::<Vec<_>>()
        };
        // Near the widest rows the nearest mask's edge moves only in multiples of 4.
        assert!(distinct_steps(&left_edges(&nearest))
            .iter()
            .all(|s| s % 4 == 0));
        let full_steps = distinct_steps(&left_edges(&full));
        assert!(full_steps.iter().any(|s| s % 4 != 0), "{full_steps:?}");
        // Same area within 1%.
        let area = |m: &Mask| m.as_slice().iter().map(|&v| u64::from(v)).sum::<u64>();
        let (a, b) = (area(&full) as f64, area(&nearest) as f64);
        assert!((a - b).abs() / b < 0.01, "{a} vs {b}");
    }

    #[test]
    fn empty_inputs_give_empty_masks() {
        assert_eq!(threshold_upsampled(&[], 0, 0, 3, 2, 0.5), Mask::new(3, 2));
        assert_eq!(
            threshold_upsampled(&[1.0], 1, 1, 0, 5, 0.5),
            Mask::new(0, 5)
        );
    }

    proptest! {
        /// A constant map thresholds to all or nothing at any size, and same-size resampling
        /// is the plain threshold.
        #[test]
        fn constant_and_identity(
            p in 0.0f32..1.0,
            w in 1u32..20, h in 1u32..20,
            values in prop::collection::vec(0.0f32..1.0, 16),
        ) {
            let m = threshold_upsampled(&[p; 4], 2, 2, w, h, 0.5);
            prop_assert!(m.as_slice().iter().all(|&v| v == u8::from(p > 0.5)));
            let same = threshold_upsampled(&values, 4, 4, 4, 4, 0.5);
            let plain: Vec<u8> = values.iter().map(|&v| u8::from(v > 0.5)).collect();
            prop_assert_eq!(same.as_slice(), &plain[..]);
        }
    }
}
