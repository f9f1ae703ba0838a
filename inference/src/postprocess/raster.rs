//! Rasterisation of contract polygons back into a [`Mask`].
//!
//! Scan-line polygon filling with the nonzero winding rule (Foley, van Dam,
//! Feiner and Hughes, *Computer Graphics: Principles and Practice*, 2nd ed.,
//! section 3.6), with D. Sunday's half-open edge-crossing rule ("Inclusion of
//! a point in a polygon", 2001), evaluated exactly in integer arithmetic at
//! pixel centres.
//!
//! # Rule
//! Pixel `(x, y)` stands for the lattice point `(x, y)`. For a polygon `P`
//! (its points joined in order, last back to first):
//! - `on(P)`: the point lies on one of `P`'s edges (vertices included);
//! - `inside(P)`: the winding number of `P` around the point is nonzero;
//! - `closed(P) = on(P) or inside(P)`, `open(P) = inside(P) and not on(P)`.
//!
//! A pixel is foreground iff for some `external` polygon `E` it is in
//! `closed(E)` and in `open(H)` of no `internal` polygon `H` whose `parentId`
//! is `E`'s id. Internals whose `parentId` names no external are ignored.
//!
//! # Why the round trip is exact
//! Traced contours join 8-adjacent pixel centres, so an edge holds no lattice
//! point besides its two ends and `on` means "is a traced point". The outer
//! border of a component (8-connected) encloses exactly the component plus
//! everything inside its holes; a hole border is made of foreground pixels
//! around the hole (OpenCV's convention), so `open(H)` is exactly the hole's
//! background plus whatever sits inside it, and the border pixels themselves
//! stay foreground. Objects inside a hole are their own externals and are
//! added back by the union. Hence `rasterize_polygons(extract_polygons(m))`
//! equals `m` when both area limits are 0 and nothing is simplified; with
//! limits, a dropped hole comes back filled and a dropped object as background
//! (the property tests in `tests.rs` check both). Simplified polygons follow
//! the same rule but only approximate the mask.

use std::collections::HashMap;

use super::mask::Mask;
use super::polygons::{Point, Polygon, PolygonType};

/// Paints `polygons` into a `width` x `height` mask by the rule in the module doc.
pub fn rasterize_polygons(polygons: &[Polygon], width: u32, height: u32) -> Mask {
    let (w, h) = (width as usize, height as usize);
    let mut out = vec![0u8; w * h];
    let mut holes: HashMap<&str, Vec<&[Point]>> = HashMap::new();
    for p in polygons {
        if let (PolygonType::Internal, Some(parent)) = (p.kind, p.parent_id.as_deref()) {
            holes.entry(parent).or_default().push(&p.points);
        }
    }
    for e in polygons.iter().filter(|p| p.kind == PolygonType::External) {
        let Some(r) = Rect::bounding(&e.points, width, height) else {
            continue;
        };
        let mut cov = region(&e.points, r, true);
        for hole in holes.get(e.id.as_str()).into_iter().flatten() {
            let Some(rh) = Rect::bounding(hole, width, height).and_then(|rh| rh.intersect(r))
            else {
                continue;
            };
            let inner = region(hole, rh, false);
            for (yy, row) in inner.chunks_exact(rh.w).enumerate() {
                let y = rh.y0 + yy as i64 - r.y0;
                let base = y as usize * r.w + (rh.x0 - r.x0) as usize;
                for (c, &v) in cov[base..base + rh.w].iter_mut().zip(row) {
                    *c &= 1 - v;
                }
            }
        }
        for (yy, row) in cov.chunks_exact(r.w).enumerate() {
            let base = (r.y0 as usize + yy) * w + r.x0 as usize;
            for (o, &v) in out[base..base + r.w].iter_mut().zip(row) {
                *o |= v;
            }
        }
    }
    // Lengths match and values are 0/1; an empty mask is the safe fallback.
    Mask::from_vec(width, height, out).unwrap_or_else(|| Mask::new(width, height))
}

/// A non-empty pixel rectangle inside the image.
#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: i64,
    y0: i64,
    w: usize,
    h: usize,
}

impl Rect {
    /// Bounding box of `points` clipped to the image; `None` if empty.
    fn bounding(points: &[Point], width: u32, height: u32) -> Option<Rect> {
        let x0 = i64::from(points.iter().map(|p| p.x).min()?).max(0);
        let y0 = i64::from(points.iter().map(|p| p.y).min()?).max(0);
        let x1 = i64::from(points.iter().map(|p| p.x).max()?).min(i64::from(width) - 1);
        let y1 = i64::from(points.iter().map(|p| p.y).max()?).min(i64::from(height) - 1);
        (x0 <= x1 && y0 <= y1).then(|| Rect {
            x0,
            y0,
            w: (x1 - x0 + 1) as usize,
            h: (y1 - y0 + 1) as usize,
        })
    }

    fn intersect(self, o: Rect) -> Option<Rect> {
        let x0 = self.x0.max(o.x0);
        let y0 = self.y0.max(o.y0);
        let x1 = (self.x0 + self.w as i64).min(o.x0 + o.w as i64);
        let y1 = (self.y0 + self.h as i64).min(o.y0 + o.h as i64);
        (x0 < x1 && y0 < y1).then(|| Rect {
            x0,
            y0,
            w: (x1 - x0) as usize,
            h: (y1 - y0) as usize,
        })
    }
}

/// `closed(P)` (when `closed`) or `open(P)` over `r`, row-major, 0/1.
fn region(points: &[Point], r: Rect, closed: bool) -> Vec<u8> {
    let stride = r.w + 1;
    let mut diff = vec![0i32; r.h * stride];
    let x_last = r.x0 + r.w as i64 - 1;
    let y_last = r.y0 + r.h as i64 - 1;
    for (a, b) in edges(points) {
        if a.y == b.y {
            continue;
        }
        let (lo, hi, dir) = if a.y < b.y { (a, b, 1) } else { (b, a, -1) };
        let (lx, ly) = (i128::from(lo.x), i128::from(lo.y));
        let den = i128::from(hi.y) - ly;
        let dx = i128::from(hi.x) - lx;
        // Half-open in y: the edge crosses rows lo.y ..= hi.y - 1.
        for y in i64::from(lo.y).max(r.y0)..=(i64::from(hi.y) - 1).min(y_last) {
            // Crossing at x = num / den; pixels with x < that get `dir`.
            let num = lx * den + (i128::from(y) - ly) * dx;
            let k = (num - 1).div_euclid(den) as i64; // largest integer < num / den
            if k >= r.x0 {
                let row = (y - r.y0) as usize * stride;
                diff[row] += dir;
                diff[row + (k.min(x_last) - r.x0) as usize + 1] -= dir;
            }
        }
    }
    let mut out = vec![0u8; r.w * r.h];
    for (o, d) in out.chunks_exact_mut(r.w).zip(diff.chunks_exact(stride)) {
        let mut acc = 0;
        for (v, &dd) in o.iter_mut().zip(d) {
            acc += dd;
            *v = u8::from(acc != 0);
        }
    }
    let on = u8::from(closed);
    for (a, b) in edges(points) {
        for_lattice_points(a, b, r, |x, y| out[y * r.w + x] = on);
    }
    out
}

/// The closed polygon's edges, last point back to the first.
fn edges(points: &[Point]) -> impl Iterator<Item = (Point, Point)> + '_ {
    let next = points.iter().skip(1).chain(points.first());
    points.iter().copied().zip(next.copied())
}

/// Calls `f(x - r.x0, y - r.y0)` for each lattice point of segment `a`-`b` in `r`.
fn for_lattice_points(a: Point, b: Point, r: Rect, mut f: impl FnMut(usize, usize)) {
    let (ax, ay) = (i64::from(a.x), i64::from(a.y));
    let (dx, dy) = (i64::from(b.x) - ax, i64::from(b.y) - ay);
    let g = gcd(dx.unsigned_abs(), dy.unsigned_abs()) as i64;
    let (sx, sy) = if g == 0 { (0, 0) } else { (dx / g, dy / g) };
    // Restrict t in 0..=g to the part of the segment inside r.
    let mut t0 = 0i64;
    let mut t1 = g;
    for (start, s, lo, hi) in [
        (ax, sx, r.x0, r.x0 + r.w as i64 - 1),
        (ay, sy, r.y0, r.y0 + r.h as i64 - 1),
    ] {
        if s == 0 {
            if start < lo || start > hi {
                return;
            }
        } else if s > 0 {
            t0 = t0.max(div_ceil(lo - start, s));
            t1 = t1.min(div_floor(hi - start, s));
        } else {
            t0 = t0.max(div_ceil(hi - start, s));
            t1 = t1.min(div_floor(lo - start, s));
        }
    }
    for t in t0..=t1 {
        f((ax + t * sx - r.x0) as usize, (ay + t * sy - r.y0) as usize);
    }
}

fn div_floor(n: i64, d: i64) -> i64 {
    let q = n / d;
    if n % d != 0 && ((n < 0) != (d < 0)) {
        q - 1
    } else {
        q
    }
}

fn div_ceil(n: i64, d: i64) -> i64 {
    -div_floor(-n, d)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poly(id: &str, parent: Option<&str>, pts: &[(i32, i32)]) -> Polygon {
        Polygon {
            id: id.to_owned(),
            points: pts.iter().map(|&(x, y)| Point { x, y }).collect(),
            kind: if parent.is_some() {
                PolygonType::Internal
            } else {
                PolygonType::External
            },
            parent_id: parent.map(str::to_owned),
            class: String::new(),
            color: String::new(),
        }
    }

    fn rows(m: &Mask) -> Vec<String> {
        (0..m.height())
            .map(|y| {
                (0..m.width())
                    .map(|x| if m.get(x, y) { '#' } else { '.' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn triangle_includes_its_edges() {
        let m = rasterize_polygons(&[poly("a", None, &[(0, 0), (4, 0), (0, 4)])], 6, 5);
        assert_eq!(rows(&m), ["#####.", "####..", "###...", "##....", "#....."]);
    }

    #[test]
    fn holes_remove_their_open_interior_only() {
        let polys = [
            poly("a", None, &[(0, 0), (6, 0), (6, 6), (0, 6)]),
            poly("h", Some("a"), &[(1, 1), (5, 1), (5, 5), (1, 5)]),
            // A hole of another external, or of none, cuts nothing.
            poly("h2", Some("zzz"), &[(0, 0), (6, 0), (6, 6), (0, 6)]),
        ];
        let m = rasterize_polygons(&polys, 7, 7);
        let ring = "##...##";
        assert_eq!(
            rows(&m),
            ["#######", "#######", ring, ring, ring, "#######", "#######"]
        );
    }

    #[test]
    fn clips_to_the_image_and_survives_huge_coordinates() {
        let m = rasterize_polygons(
            &[poly("a", None, &[(-5, -5), (2, -5), (2, 2), (-5, 2)])],
            4,
            4,
        );
        assert_eq!(rows(&m), ["###.", "###.", "###.", "...."]);
        let big = 2_000_000_000;
        let huge = poly(
            "b",
            None,
            &[(-big, -big), (big, -big), (big, big), (-big, big)],
        );
        assert_eq!(rasterize_polygons(&[huge], 3, 2).count_foreground(), 6);
        let line = poly("c", None, &[(-big, 1), (big, 1)]);
        assert_eq!(
            rows(&rasterize_polygons(&[line], 3, 3)),
            ["...", "###", "..."]
        );
    }

    #[test]
    fn degenerate_polygons() {
        let polys = [
            poly("a", None, &[]),
            poly("b", None, &[(1, 1)]),
            poly("c", None, &[(9, 9)]),
        ];
        assert_eq!(
            rows(&rasterize_polygons(&polys, 3, 3)),
            ["...", ".#.", "..."]
        );
        assert_eq!(rasterize_polygons(&polys, 0, 0), Mask::new(0, 0));
    }
}
