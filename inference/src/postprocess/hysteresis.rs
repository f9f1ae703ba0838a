//! Hysteresis on the network's probability map: a region above the threshold is kept only
//! if the network is confident somewhere inside it.
//!
//! On scenes without a spheroid some of the shipped model's false regions never reach a
//! high probability (most do: this removes a part of them, not all), while real spheroids
//! almost always do. So each 8-connected region of `p > threshold` on the network's grid
//! survives only if its peak is above `min_peak`; the others are set to 0, as if the
//! network had not seen them.
//!
//! Eight-connectivity makes this exact under the bilinear resize that follows: the four
//! source pixels a full-resolution pixel interpolates are pairwise 8-adjacent, so no output
//! pixel mixes a kept region with a removed one, and an output pixel that drew on a removed
//! region only ever drew on values at or below the threshold once it is removed.

use std::borrow::Cow;

/// Zeroes every 8-connected region of `probs > threshold` (row-major, `width` x `height`)
/// whose largest probability is not above `min_peak`. Borrows `probs` when nothing is
/// removed (always when `min_peak <= threshold`).
///
/// # Panics
///
/// When `probs.len() != width * height`.
pub fn suppress_unconfirmed(
    probs: &[f32],
    width: usize,
    height: usize,
    threshold: f32,
    min_peak: f32,
) -> Cow<'_, [f32]> {
    assert_eq!(
        probs.len(),
        width * height,
        "probability map is not {width}x{height}"
    );
    if min_peak <= threshold {
        return Cow::Borrowed(probs);
    }
    let mut seen = vec![false; probs.len()];
    let mut stack = Vec::new();
    let mut region = Vec::new();
    let mut out: Option<Vec<f32>> = None;
    for start in 0..probs.len() {
        if seen[start] || probs[start] <= threshold {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        region.clear();
        let mut peak = f32::NEG_INFINITY;
        while let Some(i) = stack.pop() {
            region.push(i);
            peak = peak.max(probs[i]);
            let (x, y) = (i % width, i / width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let j = ny * width + nx;
                    if !seen[j] && probs[j] > threshold {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if peak <= min_peak {
            let map = out.get_or_insert_with(|| probs.to_vec());
            for &i in &region {
                map[i] = 0.0;
            }
        }
    }
    out.map_or(Cow::Borrowed(probs), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// 8-connected regions of `p > t`, each as a sorted list of indices.
    fn regions(p: &[f32], w: usize, t: f32) -> Vec<Vec<usize>> {
        let mut label = vec![usize::MAX; p.len()];
        let mut out: Vec<Vec<usize>> = Vec::new();
        for s in 0..p.len() {
            if p[s] <= t || label[s] != usize::MAX {
                continue;
            }
            let id = out.len();
            let mut members = vec![s];
            label[s] = id;
            let mut k = 0;
            while k < members.len() {
                let i = members[k];
                k += 1;
                for j in 0..p.len() {
                    let (dx, dy) = ((j % w).abs_diff(i % w), (j / w).abs_diff(i / w));
                    if dx <= 1 && dy <= 1 && p[j] > t && label[j] == usize::MAX {
                        label[j] = id;
                        members.push(j);
                    }
                }
            }
            members.sort_unstable();
            out.push(members);
        }
        out
    }

    #[test]
    fn a_faint_blob_goes_and_a_confident_one_stays_whole() {
        #[rustfmt::skip]
        let p = [
            0.6, 0.7, 0.0, 0.0, 0.0,
            0.6, 0.0, 0.0, 0.95, 0.6,
            0.0, 0.0, 0.0, 0.0, 0.55,
        ];
        let out = suppress_unconfirmed(&p, 5, 3, 0.5, 0.9);
        #[rustfmt::skip]
        let want = [
            0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.95, 0.6,
            0.0, 0.0, 0.0, 0.0, 0.55,
        ];
        assert_eq!(&*out, &want);
    }

    #[test]
    fn diagonal_neighbours_share_a_peak() {
        let p = [0.95, 0.0, 0.0, 0.6];
        assert_eq!(&*suppress_unconfirmed(&p, 2, 2, 0.5, 0.9), &p);
    }

    #[test]
    fn nothing_changes_when_min_peak_is_not_above_the_threshold() {
        let p = [0.6, 0.0, 0.7, 0.55];
        let out = suppress_unconfirmed(&p, 2, 2, 0.5, 0.5);
        assert!(matches!(out, Cow::Borrowed(_)));
    }

    proptest! {
        /// Every region of the input is either kept exactly (its peak is above `min_peak`)
        /// or zeroed entirely; nothing outside the regions changes.
        #[test]
        fn regions_are_kept_or_removed_whole(
            (w, h, p) in (1usize..9, 1usize..9).prop_flat_map(|(w, h)| {
                (Just(w), Just(h), prop::collection::vec(0f32..1.0, w * h))
            }),
            t in 0.2f32..0.7,
            extra in 0.0f32..0.3,
        ) {
            let min_peak = t + extra;
            let out = suppress_unconfirmed(&p, w, h, t, min_peak);
            let mut in_region = vec![false; p.len()];
            for r in regions(&p, w, t) {
                let peak = r.iter().map(|&i| p[i]).fold(f32::NEG_INFINITY, f32::max);
                for &i in &r {
                    in_region[i] = true;
                    let want = if peak > min_peak { p[i] } else { 0.0 };
                    prop_assert_eq!(out[i], want);
                }
            }
            for i in 0..p.len() {
                if !in_region[i] {
                    prop_assert_eq!(out[i], p[i]);
                }
            }
            // Applying it again changes nothing.
            let again = suppress_unconfirmed(&out, w, h, t, min_peak);
            prop_assert_eq!(&*again, &*out);
        }
    }
}
