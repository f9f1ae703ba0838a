//! Bilinear resampling taps with half-pixel centres, shared by the model input
//! ([`crate::preprocess`]) and the probability map's way back to the image's size
//! ([`crate::postprocess::threshold_upsampled`]).
//!
//! Output coordinate `d` of `dst_len` samples the source at `(d + 0.5) * src_len / dst_len - 0.5`,
//! clamped to the first and last sample: OpenCV's `INTER_LINEAR` and PyTorch's
//! `interpolate(mode="bilinear", align_corners=False)`.

/// One output coordinate's two source taps (as sample offsets) and the weight of the second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tap {
    /// First source offset.
    pub(crate) i0: usize,
    /// Second source offset (equal to `i0` at the clamped ends).
    pub(crate) i1: usize,
    /// Weight of the second tap; the first has `1 - w1`.
    pub(crate) w1: f32,
}

/// Source taps for each of `dst_len` outputs over `src_len` inputs (`src_len > 0`), with
/// offsets multiplied by `step` (3 for the columns of an interleaved RGB row, 1 for rows).
pub(crate) fn taps(src_len: u32, dst_len: u32, step: usize) -> Vec<Tap> {
    let last = src_len as usize - 1;
    let scale = f64::from(src_len) / f64::from(dst_len);
    (0..dst_len)
        .map(|d| {
            let s = ((f64::from(d) + 0.5) * scale - 0.5).max(0.0);
            // s >= 0, so floor-then-cast is exact; clamping handles the last pixel.
            let i0 = (s.floor() as usize).min(last);
            let i1 = (i0 + 1).min(last);
            // At the clamped end i0 == i1, so the weight no longer matters.
            let w1 = (s - i0 as f64).clamp(0.0, 1.0) as f32;
            Tap {
                i0: i0 * step,
                i1: i1 * step,
                w1,
            }
        })
        .collect()
}
