//! Clouds of migrating single cells around a spheroid: dense or sparse, all round or in a sector, often touching
//! the spheroid, lighter and more granular than it.

use std::f32::consts::TAU;

use rand::Rng;

use super::clutter::{cell, inside, Blob};
use super::scene::Body;

/// Adds a cloud around one of `bodies` (or around an empty spot when there is none) to `cells` in a field of
/// (width, height, scale); returns whether at least 15 of its cells are visible.
pub(super) fn plan(
    rng: &mut impl Rng,
    bodies: &[Body],
    (w, h, s): (f32, f32, f32),
    bf: bool,
    cells: &mut Vec<Blob>,
) -> bool {
    let host = bodies.get(rng.gen_range(0..bodies.len().max(1)));
    let (cx, cy) = host.map_or(
        (rng.gen_range(0.2..0.8) * w, rng.gen_range(0.2..0.8) * h),
        |b| b.outline.centre(),
    );
    // Without a spheroid the cloud is a loose patch around an empty spot.
    let virtual_r = rng.gen_range(5.0..40.0) * s;
    let reach = |t: f32| host.map_or(virtual_r, |b| b.outline.reach(t));
    let rays: Vec<f32> = (0..32).map(|i| reach(i as f32 / 32.0 * TAU)).collect();
    let base = if host.is_some() {
        rays.iter().sum::<f32>() / 32.0
    } else {
        rng.gen_range(80.0..250.0) * s
    };
    let dense = rng.gen_bool(0.5);
    let count = if dense {
        rng.gen_range(300.0..1200.0)
    } else {
        rng.gen_range(40.0..200.0f32)
    };
    let count = (count * (base.max(10.0) / 200.0).clamp(0.3, 2.0)) as usize;
    let spread = base
        * match (host.is_some(), dense) {
            (true, true) => rng.gen_range(0.1..0.45f32),
            (true, false) => rng.gen_range(0.2..0.8),
            (false, _) => rng.gen_range(0.5..1.2),
        };
    let (t0, span) = if rng.gen_bool(0.4) {
        (rng.gen_range(0.0..TAU), rng.gen_range(0.8..3.0))
    } else {
        (0.0, TAU)
    };
    let mut in_frame = 0;
    for _ in 0..count {
        let t = t0 + rng.gen_range(0.0..span);
        let edge = rays[((t.rem_euclid(TAU) / TAU * 32.0) as usize).min(31)];
        let r = rng.gen_range(2.5..6.5f32) * s.max(0.35);
        let d =
            edge + spread * -rng.gen_range(1e-3..1.0f32).ln() * 0.6 + r * rng.gen_range(-0.3..0.8);
        let (x, y) = (cx + d * t.cos(), cy + d * t.sin());
        let hidden = host.is_some_and(|b| b.outline.sample(x, y).0 < 0.0);
        in_frame += usize::from(inside(x, y, w, h) && !hidden);
        cells.push(cell(rng, x, y, r, bf, true));
    }
    in_frame >= 15
}
