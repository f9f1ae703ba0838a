//! Ramer-Douglas-Peucker simplification of a closed contour.
//!
//! U. Ramer, "An iterative procedure for the polygonal approximation of plane
//! curves", CGIP 1(3):244-256, 1972; D. Douglas and T. Peucker, Cartographica
//! 10(2):112-122, 1973. A closed contour is split at two anchors, its first
//! point and the point farthest from it (as OpenCV's `approxPolyDP(closed)`
//! does), and each half is simplified on its own. A point is kept when its
//! distance to the segment between the kept points around it exceeds the
//! tolerance (distance to the segment, not to the infinite line, so points
//! that project past an end are not dropped by mistake).
//!
//! The work list is an explicit stack, so contours with thousands of points
//! cannot overflow the call stack. A result that would collapse to fewer
//! than 3 points keeps the point farthest from the anchor chord, so a contour
//! with any area stays a polygon.

/// Simplifies the closed contour `points` with tolerance `tolerance` pixels.
///
/// Returns the kept points in their original order, starting with the first.
/// A tolerance that is not `> 0` (including NaN) returns the input unchanged,
/// as do contours with fewer than 4 points.
pub fn simplify_closed(points: &[(i32, i32)], tolerance: f64) -> Vec<(i32, i32)> {
    let n = points.len();
    if n < 4 || tolerance.is_nan() || tolerance <= 0.0 {
        return points.to_vec();
    }
    let first = points[0];
    let far = (1..n)
        .max_by(|&a, &b| dist2(first, points[a]).total_cmp(&dist2(first, points[b])))
        .unwrap_or(0);
    if far == 0 || dist2(first, points[far]) == 0.0 {
        // Every point coincides with the first one.
        return vec![first];
    }
    // ring[n] closes the contour back to the first point.
    let ring: Vec<(i32, i32)> = points
        .iter()
        .copied()
        .chain(std::iter::once(first))
        .collect();
    let mut keep = vec![false; n + 1];
    keep[0] = true;
    keep[far] = true;
    rdp(&ring, 0, far, tolerance, &mut keep);
    rdp(&ring, far, n, tolerance, &mut keep);
    let mut out: Vec<(i32, i32)> = (0..n).filter(|&i| keep[i]).map(|i| points[i]).collect();
    if out.len() < 3 {
        // Both halves were within tolerance: keep the point farthest from the
        // chord so the result still encloses an area.
        let best = (1..n)
            .filter(|&i| i != far)
            .max_by(|&a, &b| {
                let da = seg_dist(points[a], first, points[far]);
                let db = seg_dist(points[b], first, points[far]);
                da.total_cmp(&db)
            })
            .filter(|&i| seg_dist(points[i], first, points[far]) > 0.0);
        if let Some(i) = best {
            keep[i] = true;
            out = (0..n).filter(|&i| keep[i]).map(|i| points[i]).collect();
        }
    }
    out
}

/// Marks the points of `ring[start..=end]` that RDP keeps.
fn rdp(ring: &[(i32, i32)], start: usize, end: usize, tol: f64, keep: &mut [bool]) {
    let mut stack = vec![(start, end)];
    while let Some((a, b)) = stack.pop() {
        if b <= a + 1 {
            continue;
        }
        let (mut best, mut best_d) = (a, -1.0);
        for i in a + 1..b {
            let d = seg_dist(ring[i], ring[a], ring[b]);
            if d > best_d {
                best = i;
                best_d = d;
            }
        }
        if best_d > tol {
            keep[best] = true;
            stack.push((a, best));
            stack.push((best, b));
        }
    }
}

fn dist2(a: (i32, i32), b: (i32, i32)) -> f64 {
    let dx = f64::from(a.0) - f64::from(b.0);
    let dy = f64::from(a.1) - f64::from(b.1);
    dx * dx + dy * dy
}

/// Euclidean distance from `p` to the segment `a`-`b`.
fn seg_dist(p: (i32, i32), a: (i32, i32), b: (i32, i32)) -> f64 {
    let (px, py) = (f64::from(p.0), f64::from(p.1));
    let (ax, ay) = (f64::from(a.0), f64::from(a.1));
    let (dx, dy) = (f64::from(b.0) - ax, f64::from(b.1) - ay);
    let len2 = dx * dx + dy * dy;
    if len2 == 0.0 {
        return dist2(p, a).sqrt();
    }
    let t = (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0);
    let (qx, qy) = (ax + t * dx, ay + t * dy);
    ((px - qx).powi(2) + (py - qy).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn square_contour(side: i32) -> Vec<(i32, i32)> {
        let mut pts = Vec::new();
        (0..side).for_each(|y| pts.push((0, y)));
        (0..side).for_each(|x| pts.push((x, side)));
        (0..side).for_each(|y| pts.push((side, side - y)));
        (0..side).for_each(|x| pts.push((side - x, 0)));
        pts
    }

    #[test]
    fn square_reduces_to_its_corners() {
        let got = simplify_closed(&square_contour(10), 0.5);
        assert_eq!(got, vec![(0, 0), (0, 10), (10, 10), (10, 0)]);
    }

    #[test]
    fn non_positive_tolerance_or_tiny_input_is_unchanged() {
        let sq = square_contour(4);
        assert_eq!(simplify_closed(&sq, 0.0), sq);
        assert_eq!(simplify_closed(&sq, f64::NAN), sq);
        assert_eq!(simplify_closed(&sq[..3], 5.0), sq[..3].to_vec());
    }

    #[test]
    fn large_tolerance_keeps_a_triangle() {
        let got = simplify_closed(&square_contour(10), 100.0);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (0, 0));
        assert!(got.contains(&(10, 10)));
        // A 1-px line traced there and back has no area: two points remain.
        let line = [(0, 0), (1, 0), (2, 0), (3, 0), (2, 0), (1, 0)];
        assert_eq!(simplify_closed(&line, 0.5), vec![(0, 0), (3, 0)]);
    }

    /// Distance to a segment as the nearest of its two ends and, when it falls
    /// inside, the perpendicular foot; written apart from `seg_dist`.
    fn reference_dist(p: (i32, i32), a: (i32, i32), b: (i32, i32)) -> f64 {
        let (p, a, b) = (
            (f64::from(p.0), f64::from(p.1)),
            (f64::from(a.0), f64::from(a.1)),
            (f64::from(b.0), f64::from(b.1)),
        );
        let at = |t: f64| (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
        let d = |q: (f64, f64)| ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt();
        let mut best = d(a).min(d(b));
        let len2 = (b.0 - a.0).powi(2) + (b.1 - a.1).powi(2);
        if len2 > 0.0 {
            let t = ((p.0 - a.0) * (b.0 - a.0) + (p.1 - a.1) * (b.1 - a.1)) / len2;
            if (0.0..=1.0).contains(&t) {
                best = best.min(d(at(t)));
            }
        }
        best
    }

    proptest! {
        #[test]
        fn dropped_points_are_within_tolerance(
            pts in prop::collection::vec((-30i32..30, -30i32..30), 4..60),
            tol in 0.1f64..6.0,
        ) {
            let got = simplify_closed(&pts, tol);
            // Kept points are a subsequence of the input starting at pts[0].
            prop_assert_eq!(got[0], pts[0]);
            let mut it = pts.iter();
            for p in &got {
                prop_assert!(it.any(|q| q == p));
            }
            // Every input point lies within tol of the simplified outline.
            let closed: Vec<_> = got.iter().copied().chain([got[0]]).collect();
            for &p in &pts {
                let d = closed
                    .windows(2)
                    .map(|w| reference_dist(p, w[0], w[1]))
                    .fold(f64::INFINITY, f64::min);
                prop_assert!(d <= tol + 1e-9, "point {:?} is {} away", p, d);
            }
        }
    }
}
