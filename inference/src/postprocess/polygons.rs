//! Polygon extraction into the SpherosegV4 wire format (contract section 4).
//!
//! Contours come from Suzuki & Abe border following ([`find_contours`]), as
//! the old service's `cv2.findContours(RETR_TREE, CHAIN_APPROX_NONE)`, and
//! areas from the shoelace formula ([`contour_area`], as `cv2.contourArea`).
//!
//! Selection: every outer border with area >= `min_external_area` becomes an
//! `external` polygon, including objects nested inside holes of other objects
//! (the old service dropped those); the decision depends on the border's own
//! area only. Each kept external is followed directly by its holes (hole
//! borders whose parent is that outer border) with area >= `min_hole_area`.
//! Areas are measured on the traced contour before any simplification.
//!
//! Order: externals in the order the raster scan met them (top-most row first,
//! then left-most pixel), each followed by its holes in the same order.
//!
//! Ids: `polygon-` / `hole-` plus 8 lowercase hex digits of one `u32` drawn
//! from the caller's RNG. Should a value repeat within one result, the next
//! unused value (wrapping) is taken instead, so ids are unique, the loop ends
//! even with a constant RNG, and the output is a pure function of mask,
//! options and RNG state.
//!
//! Colours: the k-th kept external (0-based) gets `COLORS[k % 10]`; all of its
//! holes get `COLORS[(k + 7) % 10]`. The first polygon and its holes are thus
//! `#FF5733` / `#FF3333` as in the contract's example, and a hole never has
//! its parent's colour.

use std::collections::HashSet;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::contours::{contour_area, find_contours};
use super::mask::Mask;
use super::options::PolygonOptions;
use super::simplify::simplify_closed;

/// The colour cycle of the contract, in order.
pub const COLORS: [&str; 10] = [
    "#FF5733", "#33FF57", "#3357FF", "#F033FF", "#FF33F0", "#33FFF0", "#F0FF33", "#FF3333",
    "#33FF33", "#3333FF",
];

/// Offset into [`COLORS`] of a hole's colour relative to its parent's.
const HOLE_COLOR_OFFSET: usize = 7;

/// A pixel coordinate at the original image resolution.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Point {
    /// Column, 0 at the left.
    pub x: i32,
    /// Row, 0 at the top.
    pub y: i32,
}

/// Whether a polygon is an object outline or a hole in one.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PolygonType {
    /// Outer border of an object (`"external"`).
    External,
    /// Border of a hole inside an external (`"internal"`).
    Internal,
}

/// One entry of `result_data.polygons`, serialised exactly as the contract shows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Polygon {
    /// `polygon-xxxxxxxx` for externals, `hole-xxxxxxxx` for holes.
    pub id: String,
    /// Border pixels in tracing order (the first point is not repeated).
    pub points: Vec<Point>,
    /// `"external"` or `"internal"`.
    #[serde(rename = "type")]
    pub kind: PolygonType,
    /// Id of the enclosing external; present on holes only.
    #[serde(rename = "parentId", default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// `"spheroid"` for externals, `"hole"` for holes.
    pub class: String,
    /// Display colour, `#RRGGBB` from [`COLORS`].
    pub color: String,
}

/// Extracts the contract's flat polygon list from `mask` (see the module doc
/// for selection, order, ids and colours).
///
/// Unvalidated options are used as given: a NaN minimum area keeps nothing
/// of that kind, and a non-positive or NaN tolerance disables simplification.
pub fn extract_polygons<R: Rng>(mask: &Mask, opts: &PolygonOptions, rng: &mut R) -> Vec<Polygon> {
    let contours = find_contours(mask);
    let mut holes_of: Vec<Vec<usize>> = vec![Vec::new(); contours.len()];
    for (i, c) in contours.iter().enumerate() {
        if let (true, Some(p)) = (c.is_hole, c.parent) {
            holes_of[p].push(i);
        }
    }
    let mut ids = IdSource {
        rng,
        used: HashSet::new(),
    };
    let to_points = |pts: &[(i32, i32)]| -> Vec<Point> {
        let pts = match opts.simplify_tolerance {
            Some(t) => simplify_closed(pts, t),
            None => pts.to_vec(),
        };
        pts.into_iter().map(|(x, y)| Point { x, y }).collect()
    };
    let mut out = Vec::new();
    let mut k = 0usize;
    for (i, c) in contours.iter().enumerate() {
        if c.is_hole || !area_at_least(&c.points, opts.min_external_area) {
            continue;
        }
        let id = ids.next("polygon");
        out.push(Polygon {
            id: id.clone(),
            points: to_points(&c.points),
            kind: PolygonType::External,
            parent_id: None,
            class: "spheroid".to_owned(),
            color: COLORS[k % COLORS.len()].to_owned(),
        });
        for &h in &holes_of[i] {
            let hole = &contours[h].points;
            if area_at_least(hole, opts.min_hole_area) {
                out.push(Polygon {
                    id: ids.next("hole"),
                    points: to_points(hole),
                    kind: PolygonType::Internal,
                    parent_id: Some(id.clone()),
                    class: "hole".to_owned(),
                    color: COLORS[(k + HOLE_COLOR_OFFSET) % COLORS.len()].to_owned(),
                });
            }
        }
        k += 1;
    }
    out
}

/// Whether the contour's area reaches `min`; never for a NaN `min`.
fn area_at_least(points: &[(i32, i32)], min: f64) -> bool {
    contour_area(points) >= min
}

/// Draws `prefix-xxxxxxxx` ids whose hex parts are unique within one result.
struct IdSource<'a, R> {
    rng: &'a mut R,
    used: HashSet<u32>,
}

impl<R: Rng> IdSource<'_, R> {
    fn next(&mut self, prefix: &str) -> String {
        let mut v: u32 = self.rng.gen();
        // On a collision take the next free value instead of drawing again, so
        // even a degenerate RNG (a constant) terminates.
        while !self.used.insert(v) {
            v = v.wrapping_add(1);
        }
        format!("{prefix}-{v:08x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;

    fn no_limits() -> PolygonOptions {
        PolygonOptions {
            min_external_area: 0.0,
            min_hole_area: 0.0,
            simplify_tolerance: None,
        }
    }

    #[test]
    fn json_matches_the_contract_example_shape() {
        let m = Mask::from_rows(&["#####", "#...#", "#.#.#", "#...#", "#####"]);
        // StepRng yields 0x1a2b3c4d, 0x1a2b3c4e, ...
        let mut rng = StepRng::new(0x1a2b_3c4d, 1);
        let got = extract_polygons(&m, &no_limits(), &mut rng);
        let json = serde_json::to_string(&got).unwrap();
        let want = concat!(
            r##"[{"id":"polygon-1a2b3c4d","points":[{"x":0,"y":0},{"x":0,"y":1},{"x":0,"y":2},"##,
            r##"{"x":0,"y":3},{"x":0,"y":4},{"x":1,"y":4},{"x":2,"y":4},{"x":3,"y":4},{"x":4,"y":4},"##,
            r##"{"x":4,"y":3},{"x":4,"y":2},{"x":4,"y":1},{"x":4,"y":0},{"x":3,"y":0},{"x":2,"y":0},"##,
            r##"{"x":1,"y":0}],"type":"external","class":"spheroid","color":"#FF5733"},"##,
            r##"{"id":"hole-1a2b3c4e","points":[{"x":0,"y":1},{"x":1,"y":0},{"x":2,"y":0},"##,
            r##"{"x":3,"y":0},{"x":4,"y":1},{"x":4,"y":2},{"x":4,"y":3},{"x":3,"y":4},{"x":2,"y":4},"##,
            r##"{"x":1,"y":4},{"x":0,"y":3},{"x":0,"y":2}],"type":"internal","##,
            r##""parentId":"polygon-1a2b3c4d","class":"hole","color":"#FF3333"},"##,
            r##"{"id":"polygon-1a2b3c4f","points":[{"x":2,"y":2}],"type":"external","##,
            r##""class":"spheroid","color":"#33FF57"}]"##,
        );
        assert_eq!(json, want);
        let back: Vec<Polygon> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, got);
    }

    fn fill(m: &mut Mask, x0: u32, y0: u32, w: u32, h: u32, v: bool) {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                m.set(x, y, v);
            }
        }
    }

    #[test]
    fn default_limits_keep_areas_at_the_threshold() {
        let mut m = Mask::new(60, 30);
        // 11x11 block: contour area 10 * 10 = 100, kept (>= 100).
        fill(&mut m, 0, 0, 11, 11, true);
        // 11x10 block: area 10 * 9 = 90, dropped.
        fill(&mut m, 0, 15, 11, 10, true);
        // 25x25 block with three holes. A w x h hole is traced on the pixels
        // around it: area (w + 1) * (h + 1) - 4 * 0.5.
        fill(&mut m, 20, 0, 25, 25, true);
        fill(&mut m, 22, 2, 3, 12, false); // 4 * 13 - 2 = 50: kept
        fill(&mut m, 28, 2, 2, 12, false); // 3 * 13 - 2 = 37: dropped
        fill(&mut m, 34, 2, 1, 1, false); // 2 * 2 - 2 = 2: dropped
                                          // An object nested in a kept hole is its own external when big enough.
        fill(&mut m, 34, 6, 8, 16, false);
        fill(&mut m, 35, 7, 6, 14, true); // 5 * 13 = 65: dropped
        let got = extract_polygons(&m, &PolygonOptions::default(), &mut StepRng::new(1, 1));
        let summary: Vec<_> = got
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.parent_id.as_deref(),
                    p.points[0].x,
                    p.points[0].y,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("polygon-00000001", None, 0, 0),
                ("polygon-00000002", None, 20, 0),
                ("hole-00000003", Some("polygon-00000002"), 21, 2),
                ("hole-00000004", Some("polygon-00000002"), 33, 6),
            ]
        );
        let opts = PolygonOptions {
            min_external_area: 65.0,
            ..PolygonOptions::default()
        };
        let got = extract_polygons(&m, &opts, &mut StepRng::new(1, 1));
        let starts: Vec<_> = got
            .iter()
            .map(|p| (p.points[0].x, p.points[0].y, p.color.as_str()))
            .collect();
        // Raster order: the nested object (row 7) comes before the block at row 15.
        assert_eq!(starts[4], (35, 7, "#3357FF"));
        assert_eq!(starts[5], (0, 15, "#F033FF"));
        let nan = PolygonOptions {
            min_external_area: f64::NAN,
            ..PolygonOptions::default()
        };
        assert!(extract_polygons(&m, &nan, &mut StepRng::new(1, 1)).is_empty());
        assert_eq!(
            got.len(),
            6,
            "the 90 px block and the nested object are kept"
        );
    }

    #[test]
    fn constant_rng_still_gives_unique_ids() {
        let m = Mask::from_rows(&["#.#.#", ".....", "#.#.#"]);
        let got = extract_polygons(&m, &no_limits(), &mut StepRng::new(u64::from(u32::MAX), 0));
        let ids: Vec<_> = got.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "polygon-ffffffff",
                "polygon-00000000",
                "polygon-00000001",
                "polygon-00000002",
                "polygon-00000003",
                "polygon-00000004",
            ]
        );
        let colors: Vec<_> = got.iter().map(|p| p.color.as_str()).collect();
        assert_eq!(
            colors,
            ["#FF5733", "#33FF57", "#3357FF", "#F033FF", "#FF33F0", "#33FFF0"]
        );
    }

    #[test]
    fn simplification_is_opt_in() {
        let mut m = Mask::new(30, 30);
        for y in 5..25 {
            for x in 5..25 {
                m.set(x, y, true);
            }
        }
        let full = extract_polygons(&m, &PolygonOptions::default(), &mut StepRng::new(0, 1));
        assert_eq!(full[0].points.len(), 76);
        let opts = PolygonOptions {
            simplify_tolerance: Some(0.5),
            ..PolygonOptions::default()
        };
        let simple = extract_polygons(&m, &opts, &mut StepRng::new(0, 1));
        let corners: Vec<_> = simple[0].points.iter().map(|p| (p.x, p.y)).collect();
        assert_eq!(corners, vec![(5, 5), (5, 24), (24, 24), (24, 5)]);
    }
}
