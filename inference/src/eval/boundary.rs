//! Boundary F1 (the BF score of Csurka, Larlus and Perronnin, BMVC 2013): how well the
//! outline is placed, which IoU hardly sees on large objects.
//!
//! A boundary pixel is a foreground pixel with a background 4-neighbour inside the image
//! (the image frame is not an edge the model located). Precision is the share of predicted
//! boundary pixels within `tolerance` pixels (Euclidean) of a true boundary pixel, recall the
//! share of true boundary pixels within `tolerance` of a predicted one, and the score their
//! harmonic mean. Two masks without any boundary agree (1.0); one without, when the other has
//! one, scores 0.

/// Boundary F1 of `pred` against `truth` (row-major, `width` pixels per row, nonzero is
/// foreground) at `tolerance` pixels.
///
/// # Panics
///
/// When the slices differ in length or `width` does not divide it.
pub fn boundary_f1(pred: &[u8], truth: &[u8], width: u32, tolerance: u32) -> f64 {
    assert_eq!(pred.len(), truth.len(), "mask sizes differ");
    let w = width as usize;
    assert!(
        (w == 0 && pred.is_empty()) || (w > 0 && pred.len().is_multiple_of(w)),
        "width {width} does not divide {} pixels",
        pred.len()
    );
    let pb = boundary(pred, w);
    let tb = boundary(truth, w);
    match (pb.is_empty(), tb.is_empty()) {
        (true, true) => return 1.0,
        (true, false) | (false, true) => return 0.0,
        (false, false) => {}
    }
    let h = pred.len() / w;
    let offsets = disc(tolerance);
    let near_truth = dilate(&tb, w, h, &offsets);
    let near_pred = dilate(&pb, w, h, &offsets);
    let precision = share_in(&pb, &near_truth);
    let recall = share_in(&tb, &near_pred);
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// Indices of the boundary pixels of `mask`.
fn boundary(mask: &[u8], w: usize) -> Vec<usize> {
    if w == 0 {
        return Vec::new();
    }
    let h = mask.len() / w;
    let fg = |x: usize, y: usize| mask[y * w + x] != 0;
    let mut out = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if !fg(x, y) {
                continue;
            }
            let edge = (x > 0 && !fg(x - 1, y))
                || (x + 1 < w && !fg(x + 1, y))
                || (y > 0 && !fg(x, y - 1))
                || (y + 1 < h && !fg(x, y + 1));
            if edge {
                out.push(y * w + x);
            }
        }
    }
    out
}

/// Offsets `(dx, dy)` within Euclidean distance `r`.
fn disc(r: u32) -> Vec<(i64, i64)> {
    let r = i64::from(r);
    (-r..=r)
        .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
        .filter(|(dx, dy)| dx * dx + dy * dy <= r * r)
        .collect()
}

/// A `w` x `h` map marking every pixel within the disc of some pixel in `points`.
fn dilate(points: &[usize], w: usize, h: usize, offsets: &[(i64, i64)]) -> Vec<bool> {
    let mut near = vec![false; w * h];
    let (wi, hi) = (w as i64, h as i64);
    for &p in points {
        let (x, y) = ((p % w) as i64, (p / w) as i64);
        for &(dx, dy) in offsets {
            let (nx, ny) = (x + dx, y + dy);
            if (0..wi).contains(&nx) && (0..hi).contains(&ny) {
                near[(ny * wi + nx) as usize] = true;
            }
        }
    }
    near
}

fn share_in(points: &[usize], near: &[bool]) -> f64 {
    points.iter().filter(|&&p| near[p]).count() as f64 / points.len() as f64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A `size` x `size` mask with the square `[lo, hi)` x `[lo, hi)` set.
    fn square(size: usize, lo: usize, hi: usize) -> Vec<u8> {
        (0..size * size)
            .map(|i| u8::from((lo..hi).contains(&(i % size)) && (lo..hi).contains(&(i / size))))
            .collect()
    }

    #[test]
    fn a_shift_within_the_tolerance_is_perfect_and_beyond_it_is_not() {
        let truth = square(40, 10, 30);
        let by2 = square(40, 12, 32);
        assert_eq!(boundary_f1(&by2, &truth, 40, 3), 1.0);
        // Shifted by 2 along both axes: corners are sqrt(8) away, more than 2.
        assert!(boundary_f1(&by2, &truth, 40, 2) < 1.0);
        let by5 = square(40, 15, 35);
        let f = boundary_f1(&by5, &truth, 40, 2);
        assert!(f < 0.5, "{f}");
        assert_eq!(boundary_f1(&truth, &truth, 40, 0), 1.0);
    }

    #[test]
    fn empty_masks_and_the_frame() {
        let empty = vec![0u8; 100];
        assert_eq!(boundary_f1(&empty, &empty, 10, 2), 1.0);
        assert_eq!(boundary_f1(&square(10, 2, 8), &empty, 10, 2), 0.0);
        // A full mask has no boundary: the frame does not count.
        assert_eq!(boundary_f1(&[1u8; 100], &empty, 10, 2), 1.0);
        assert_eq!(boundary_f1(&[], &[], 0, 2), 1.0);
    }

    proptest! {
        /// The score is symmetric, in [0, 1], never falls as the tolerance grows, and is 1 for
        /// a mask against itself.
        #[test]
        fn symmetric_bounded_monotone(
            a in prop::collection::vec(0u8..2, 144),
            b in prop::collection::vec(0u8..2, 144),
        ) {
            let f1 = boundary_f1(&a, &b, 12, 1);
            let f2 = boundary_f1(&a, &b, 12, 2);
            prop_assert!((0.0..=1.0).contains(&f1));
            prop_assert!((f1 - boundary_f1(&b, &a, 12, 1)).abs() < 1e-12);
            prop_assert!(f2 >= f1 - 1e-12);
            prop_assert_eq!(boundary_f1(&a, &a, 12, 0), 1.0);
        }
    }
}
