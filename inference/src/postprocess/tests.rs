//! Property tests across the module, checked against an independent model.
//!
//! The model does not trace contours. It labels regions by flood fill
//! (foreground 8-connected, background 4-connected, a background frame around
//! the image), builds their inclusion tree from 4-adjacency (a tree for this
//! pair of connectivities, Rosenfeld 1974; asserted below), and measures the
//! area of a border polygon by counting 2x2 pixel cells instead of running
//! the shoelace formula: the outer border of a filled component `F` encloses
//! every cell with 4 corners in `F` and half of every cell with 3; a hole
//! border around a filled hole `G` (foreground around it) encloses half of
//! every cell with 1 corner in `G` and all of every cell with 2 or more.

use std::collections::{HashSet, VecDeque};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

/// Regions of a padded copy of a mask and their inclusion tree.
struct Regions {
    pw: usize,
    ph: usize,
    label: Vec<usize>,
    fg: Vec<bool>,
    parent: Vec<Option<usize>>,
}

impl Regions {
    fn new(mask: &Mask) -> Self {
        let (pw, ph) = (mask.width() as usize + 2, mask.height() as usize + 2);
        let v = |x: usize, y: usize| x > 0 && y > 0 && mask.get(x as u32 - 1, y as u32 - 1);
        let mut label = vec![usize::MAX; pw * ph];
        let mut fg = Vec::new();
        for start in 0..pw * ph {
            if label[start] != usize::MAX {
                continue;
            }
            let (id, is_fg) = (fg.len(), v(start % pw, start / pw));
            fg.push(is_fg);
            label[start] = id;
            let mut queue = VecDeque::from([start]);
            while let Some(i) = queue.pop_front() {
                for (dx, dy) in neighbours(is_fg) {
                    let (x, y) = ((i % pw) as i64 + dx, (i / pw) as i64 + dy);
                    if x < 0 || y < 0 || x >= pw as i64 || y >= ph as i64 {
                        continue;
                    }
                    let j = y as usize * pw + x as usize;
                    if label[j] == usize::MAX && v(x as usize, y as usize) == is_fg {
                        label[j] = id;
                        queue.push_back(j);
                    }
                }
            }
        }
        let mut adj = vec![HashSet::new(); fg.len()];
        for i in 0..pw * ph {
            for j in [i + 1, i + pw] {
                if (j == i + 1 && (i + 1) % pw == 0) || j >= pw * ph || label[i] == label[j] {
                    continue;
                }
                adj[label[i]].insert(label[j]);
                adj[label[j]].insert(label[i]);
            }
        }
        let edges: usize = adj.iter().map(HashSet::len).sum::<usize>() / 2;
        assert_eq!(
            edges + 1,
            fg.len(),
            "the region adjacency graph must be a tree"
        );
        let mut parent = vec![None; fg.len()];
        let mut seen = vec![false; fg.len()];
        seen[0] = true; // region 0 holds pixel (0, 0): the frame background
        let mut queue = VecDeque::from([0]);
        while let Some(r) = queue.pop_front() {
            for &n in &adj[r] {
                if !seen[n] {
                    seen[n] = true;
                    parent[n] = Some(r);
                    queue.push_back(n);
                }
            }
        }
        Regions {
            pw,
            ph,
            label,
            fg,
            parent,
        }
    }

    /// Region of image pixel `(x, y)`.
    fn at(&self, x: i32, y: i32) -> usize {
        self.label[(y + 1) as usize * self.pw + (x + 1) as usize]
    }

    /// Whether region `r` is `a` or lies inside it.
    fn within(&self, mut r: usize, a: usize) -> bool {
        loop {
            if r == a {
                return true;
            }
            match self.parent[r] {
                Some(p) => r = p,
                None => return false,
            }
        }
    }

    /// Sum over 2x2 cells of `weight[k]`, k = corners inside the filled region `a`.
    fn cell_area(&self, a: usize, weight: [f64; 5]) -> f64 {
        let inside = |x: usize, y: usize| usize::from(self.within(self.label[y * self.pw + x], a));
        let mut area = 0.0;
        for y in 0..self.ph - 1 {
            for x in 0..self.pw - 1 {
                let k = inside(x, y) + inside(x + 1, y) + inside(x, y + 1) + inside(x + 1, y + 1);
                area += weight[k];
            }
        }
        area
    }

    /// Image pixels of region `c` 4-adjacent to region `other`.
    fn border(&self, c: usize, other: usize) -> HashSet<(i32, i32)> {
        let (w, h) = (self.pw as i32 - 2, self.ph as i32 - 2);
        let mut out = HashSet::new();
        for y in 0..h {
            for x in 0..w {
                let touches = [(1, 0), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .any(|&(dx, dy)| self.at(x + dx, y + dy) == other);
                if self.at(x, y) == c && touches {
                    out.insert((x, y));
                }
            }
        }
        out
    }
}

const OUTER_WEIGHTS: [f64; 5] = [0.0, 0.0, 0.0, 0.5, 1.0];
const HOLE_WEIGHTS: [f64; 5] = [0.0, 0.5, 1.0, 1.0, 1.0];

fn neighbours(eight: bool) -> Vec<(i64, i64)> {
    let mut n = vec![(1, 0), (-1, 0), (0, 1), (0, -1)];
    if eight {
        n.extend([(1, 1), (1, -1), (-1, 1), (-1, -1)]);
    }
    n
}

/// The mask the filters should leave, from the model alone.
fn filtered(mask: &Mask, min_ext: f64, min_hole: f64) -> Mask {
    let r = Regions::new(mask);
    let n = r.fg.len();
    let kept_ext: Vec<bool> = (0..n)
        .map(|c| r.fg[c] && r.cell_area(c, OUTER_WEIGHTS) >= min_ext)
        .collect();
    let cut_hole: Vec<bool> = (0..n)
        .map(|h| match r.parent[h] {
            Some(c) if !r.fg[h] => kept_ext[c] && r.cell_area(h, HOLE_WEIGHTS) >= min_hole,
            _ => false,
        })
        .collect();
    let mut out = Mask::new(mask.width(), mask.height());
    for y in 0..mask.height() {
        for x in 0..mask.width() {
            let p = r.at(x as i32, y as i32);
            let on = (0..n).any(|c| {
                kept_ext[c]
                    && r.within(p, c)
                    && !(0..n).any(|h| cut_hole[h] && r.parent[h] == Some(c) && r.within(p, h))
            });
            out.set(x, y, on);
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Shape {
    Rect(i32, i32, i32, i32, bool),
    Ellipse(i32, i32, i32, i32, bool),
    /// Concentric alternating rings: centre, outer radius, ring width.
    Target(i32, i32, i32, i32),
    Noise(u64, u32, bool),
}

/// Coordinates are percent of the mask size, a little past the frame.
fn shape() -> impl Strategy<Value = Shape> {
    let c = -10i32..110;
    let val = prop::bool::weighted(0.7);
    prop_oneof![
        3 => (c.clone(), c.clone(), 0i32..80, 0i32..80, val)
            .prop_map(|(x, y, w, h, v)| Shape::Rect(x, y, w, h, v)),
        3 => (c.clone(), c.clone(), 3i32..60, 3i32..60, val)
            .prop_map(|(x, y, a, b, v)| Shape::Ellipse(x, y, a, b, v)),
        3 => (c.clone(), c, 10i32..60, 3i32..12).prop_map(|(x, y, r, s)| Shape::Target(x, y, r, s)),
        1 => (any::<u64>(), 1u32..40, val).prop_map(|(s, d, v)| Shape::Noise(s, d, v)),
    ]
}

fn paint(w: u32, h: u32, shapes: &[Shape]) -> Mask {
    let mut m = Mask::new(w, h);
    let (fw, fh) = (f64::from(w) / 100.0, f64::from(h) / 100.0);
    for (i, s) in shapes.iter().enumerate() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
        for y in 0..h {
            for x in 0..w {
                let (px, py) = (f64::from(x) / fw, f64::from(y) / fh);
                let d = |cx: i32, cy: i32, a: i32, b: i32| {
                    let (a, b) = (f64::from(a.max(1)), f64::from(b.max(1)));
                    ((px - f64::from(cx)) / a).powi(2) + ((py - f64::from(cy)) / b).powi(2)
                };
                let set = match *s {
                    Shape::Rect(x0, y0, rw, rh, v) => {
                        let inside = px >= f64::from(x0) && px <= f64::from(x0 + rw);
                        (inside && py >= f64::from(y0) && py <= f64::from(y0 + rh)).then_some(v)
                    }
                    Shape::Ellipse(cx, cy, a, b, v) => (d(cx, cy, a, b) <= 1.0).then_some(v),
                    Shape::Target(cx, cy, r, step) => {
                        let rad = d(cx, cy, 1, 1).sqrt();
                        (rad <= f64::from(r)).then(|| (rad as i32 / step.max(1)) % 2 == 0)
                    }
                    Shape::Noise(seed, density, v) => {
                        state ^= seed.rotate_left(7) ^ (state << 13);
                        state ^= state >> 7;
                        state ^= state << 17;
                        (state % 100 < u64::from(density)).then_some(v)
                    }
                };
                if let Some(v) = set {
                    m.set(x, y, v);
                }
            }
        }
    }
    m
}

fn masks() -> impl Strategy<Value = Mask> {
    // Mostly mid-sized masks (room for objects over 100 px with holes and
    // nested objects), some tiny ones for the degenerate cases.
    let side = || prop_oneof![1 => 1u32..8, 4 => 16u32..=64];
    (side(), side(), prop::collection::vec(shape(), 1..8)).prop_map(|(w, h, s)| paint(w, h, &s))
}

fn zero_limits() -> PolygonOptions {
    PolygonOptions {
        min_external_area: 0.0,
        min_hole_area: 0.0,
        simplify_tolerance: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn contours_match_the_region_model(m in masks()) {
        let r = Regions::new(&m);
        let cs = find_contours(&m);
        // One contour per region except the frame background.
        prop_assert_eq!(cs.len() + 1, r.fg.len());
        let region_of = |c: &Contour| {
            let (x, y) = c.points[0];
            if c.is_hole { r.at(x + 1, y) } else { r.at(x, y) }
        };
        let regions: HashSet<usize> = cs.iter().map(region_of).collect();
        prop_assert_eq!(regions.len(), cs.len());
        for c in &cs {
            let reg = region_of(c);
            prop_assert_eq!(r.fg[reg], !c.is_hole);
            let (comp, other) = if c.is_hole {
                (r.parent[reg].unwrap(), reg)
            } else {
                (reg, r.parent[reg].unwrap())
            };
            let pts: HashSet<(i32, i32)> = c.points.iter().copied().collect();
            prop_assert_eq!(&pts, &r.border(comp, other), "border pixels of {:?}", c.points);
            for (i, &(x, y)) in c.points.iter().enumerate() {
                prop_assert!(m.get(x as u32, y as u32));
                let (nx, ny) = c.points[(i + 1) % c.points.len()];
                if c.points.len() > 1 {
                    prop_assert_eq!((x - nx).abs().max((y - ny).abs()), 1);
                }
            }
            let want_parent = match r.parent[reg] {
                Some(0) | None => None,
                Some(p) => cs.iter().position(|o| region_of(o) == p),
            };
            prop_assert_eq!(c.parent, want_parent);
            if let Some(p) = c.parent {
                prop_assert_eq!(cs[p].is_hole, !c.is_hole);
            }
            let weights = if c.is_hole { HOLE_WEIGHTS } else { OUTER_WEIGHTS };
            prop_assert_eq!(contour_area(&c.points), r.cell_area(reg, weights));
        }
    }

    #[test]
    fn round_trip_without_limits_is_exact(m in masks(), seed in any::<u64>()) {
        let polys = extract_polygons(&m, &zero_limits(), &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(rasterize_polygons(&polys, m.width(), m.height()), m);
    }

    #[test]
    fn default_limits_equal_the_model_filter(m in masks(), seed in any::<u64>()) {
        let opts = PolygonOptions::default();
        let polys = extract_polygons(&m, &opts, &mut StdRng::seed_from_u64(seed));
        let got = rasterize_polygons(&polys, m.width(), m.height());
        prop_assert_eq!(got, filtered(&m, 100.0, 50.0));
    }

    #[test]
    fn json_shape_follows_the_contract(
        m in masks(),
        seed in any::<u64>(),
        min_ext in 0f64..150.0,
        min_hole in 0f64..80.0,
        tol in prop::option::of(0.5f64..3.0),
    ) {
        let opts = PolygonOptions { min_external_area: min_ext, min_hole_area: min_hole, simplify_tolerance: tol };
        let polys = extract_polygons(&m, &opts, &mut StdRng::seed_from_u64(seed));
        let again = extract_polygons(&m, &opts, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(&polys, &again, "deterministic given the rng");
        let cycle = ["#FF5733", "#33FF57", "#3357FF", "#F033FF", "#FF33F0",
                     "#33FFF0", "#F0FF33", "#FF3333", "#33FF33", "#3333FF"];
        let json = serde_json::to_value(&polys).unwrap();
        let mut ids = HashSet::new();
        let (mut k, mut last_ext) = (0usize, None::<String>);
        for v in json.as_array().unwrap() {
            let o = v.as_object().unwrap();
            let id = o["id"].as_str().unwrap().to_owned();
            let hole = o["type"] == "internal";
            let (prefix, class) = if hole { ("hole-", "hole") } else { ("polygon-", "spheroid") };
            let hex = id.strip_prefix(prefix).unwrap();
            prop_assert!(hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            prop_assert!(ids.insert(id.clone()), "duplicate id");
            prop_assert_eq!(o["class"].as_str(), Some(class));
            prop_assert!(!o["points"].as_array().unwrap().is_empty());
            prop_assert!(o["points"][0]["x"].is_i64() && o["points"][0]["y"].is_i64());
            let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
            keys.sort_unstable();
            if hole {
                prop_assert_eq!(keys, ["class", "color", "id", "parentId", "points", "type"]);
                prop_assert_eq!(o["parentId"].as_str(), last_ext.as_deref(), "hole follows its external");
                prop_assert_eq!(o["color"].as_str(), Some(cycle[(k + 6) % 10]));
            } else {
                prop_assert_eq!(o["type"].as_str(), Some("external"));
                prop_assert_eq!(keys, ["class", "color", "id", "points", "type"]);
                prop_assert_eq!(o["color"].as_str(), Some(cycle[k % 10]));
                last_ext = Some(id);
                k += 1;
            }
        }
        let back: Vec<Polygon> = serde_json::from_value(json).unwrap();
        prop_assert_eq!(back, polys);
    }
}
