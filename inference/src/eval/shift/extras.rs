//! Air bubbles and fibres or scratches.

use std::f32::consts::TAU;

use rand::Rng;

use super::clutter::{inside, Bubble, Fibre};
use super::scene::Body;

/// An air bubble in a field of (width, height, scale), sometimes touching one of `bodies`; `None` when its
/// centre falls outside the field.
pub(super) fn bubble(
    rng: &mut impl Rng,
    bodies: &[Body],
    (w, h, s): (f32, f32, f32),
    bf: bool,
) -> Option<Bubble> {
    let r = rng.gen_range(15.0..160.0f32) * s.max(0.2);
    let (x, y) = match bodies
        .get(rng.gen_range(0..bodies.len().max(1)))
        .filter(|_| rng.gen_bool(0.4))
    {
        Some(b) => {
            let t = rng.gen_range(0.0..TAU);
            let d = b.outline.reach(t) + r + rng.gen_range(0.0..3.0);
            (
                b.outline.centre().0 + d * t.cos(),
                b.outline.centre().1 + d * t.sin(),
            )
        }
        None => (rng.gen_range(0.0..w), rng.gen_range(0.0..h)),
    };
    let (rim, glint) = (rng.gen_range(0.08..0.25), rng.gen_range(0.05..0.25));
    let (rim_level, interior) = if bf {
        (rng.gen_range(0.1..0.45), rng.gen_range(1.0..1.12))
    } else {
        (rng.gen_range(0.6..0.95), 0.0)
    };
    inside(x, y, w, h).then_some(Bubble {
        x,
        y,
        r,
        rim,
        rim_level,
        interior,
        glint,
    })
}

/// A curved fibre or a straight scratch across the field; `None` when it misses the field.
pub(super) fn fibre(rng: &mut impl Rng, (w, h, s): (f32, f32, f32), bf: bool) -> Option<Fibre> {
    let diag = w.hypot(h);
    let scratch = rng.gen_bool(0.4);
    let (mut x, mut y, mut t) = (
        rng.gen_range(0.0..w),
        rng.gen_range(0.0..h),
        rng.gen_range(0.0..TAU),
    );
    let step = 6.0 * s.max(0.3);
    let (len, turn) = if scratch {
        (diag, 0.0)
    } else {
        (rng.gen_range(0.2..1.2) * diag, rng.gen_range(0.02..0.12f32))
    };
    if scratch {
        (x, y) = (x - t.cos() * diag * 0.5, y - t.sin() * diag * 0.5);
    }
    let mut points = vec![(x, y)];
    for _ in 0..(len / step) as usize {
        t += turn * (rng.gen_range(0.0..1.0f32) * 2.0 - 1.0) * 1.7;
        (x, y) = (x + step * t.cos(), y + step * t.sin());
        points.push((x, y));
    }
    let width = if scratch {
        rng.gen_range(0.7..2.0)
    } else {
        rng.gen_range(0.8..4.0)
    } * s.max(0.3).sqrt();
    let level = match (bf, scratch) {
        (true, true) if rng.gen_bool(0.6) => rng.gen_range(1.05..1.25),
        (true, _) => rng.gen_range(0.35..0.85),
        (false, true) => rng.gen_range(0.0..0.05),
        (false, false) => rng.gen_range(0.05..0.3),
    };
    let visible = points.iter().any(|&(px, py)| inside(px, py, w, h));
    visible.then_some(Fibre {
        points,
        width,
        level,
    })
}
