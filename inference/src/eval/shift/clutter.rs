//! Non-spheroid objects (never in the mask): loose cells, migrating cell clouds, debris clumps, air bubbles,
//! fibres and scratches. Loose cells and debris are planned here, clouds in `cloud.rs`, bubbles and fibres in
//! `extras.rs`.

use std::f32::consts::TAU;

use rand::Rng;

use super::scene::Body;
use super::{cloud, extras};

/// A small round object: a cell or a piece of debris. `level` is the transmittance (brightfield) or emission
/// (fluorescence) of its body; `ring` darkens its rim and `spot` brightens its centre (brightfield).
#[derive(Debug, Clone, Copy)]
pub(super) struct Blob {
    pub(super) x: f32,
    pub(super) y: f32,
    pub(super) r: f32,
    pub(super) level: f32,
    pub(super) ring: f32,
    pub(super) spot: f32,
    pub(super) soft: f32,
    pub(super) grain: f32,
}

/// An air bubble: light interior, thick dark refractive rim (`rim` as a fraction of `r`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bubble {
    pub(super) x: f32,
    pub(super) y: f32,
    pub(super) r: f32,
    pub(super) rim: f32,
    pub(super) rim_level: f32,
    pub(super) interior: f32,
    pub(super) glint: f32,
}

/// A fibre or scratch: a polyline of short segments.
#[derive(Debug, Clone)]
pub(super) struct Fibre {
    pub(super) points: Vec<(f32, f32)>,
    pub(super) width: f32,
    pub(super) level: f32,
}

/// All clutter of a scene, with what it amounts to for the tags.
#[derive(Debug, Clone, Default)]
pub(super) struct Clutter {
    pub(super) debris: Vec<Blob>,
    pub(super) cells: Vec<Blob>,
    pub(super) bubbles: Vec<Bubble>,
    pub(super) fibres: Vec<Fibre>,
    pub(super) cloud: bool,
    pub(super) many: bool,
}

pub(super) fn inside(x: f32, y: f32, w: f32, h: f32) -> bool {
    (0.0..w).contains(&x) && (0.0..h).contains(&y)
}

/// Plans the clutter around `bodies` in a `w` x `h` field at scale `s` (1 at 1024 px).
pub(super) fn plan(
    rng: &mut impl Rng,
    bodies: &[Body],
    w: f32,
    h: f32,
    s: f32,
    bf: bool,
    empty: bool,
) -> Clutter {
    let mut c = Clutter::default();
    let area = w * h / (1024.0 * 1024.0);
    let bump: f64 = if empty { 1.6 } else { 1.0 };
    // Loose single cells.
    let singles = if rng.gen_bool((0.7 * bump).min(0.95)) {
        (rng.gen_range(0.0..60.0f32) * area) as usize
    } else {
        0
    };
    for _ in 0..singles {
        let r = rng.gen_range(3.5..9.0f32) * s.max(0.35);
        let (x, y) = (rng.gen_range(0.0..w), rng.gen_range(0.0..h));
        c.cells.push(cell(rng, x, y, r, bf, false));
    }
    // Migrating cell clouds around a spheroid (or around an empty spot).
    if rng.gen_bool(0.3 * bump) {
        c.cloud = cloud::plan(rng, bodies, (w, h, s), bf, &mut c.cells);
    }
    // Debris clumps: tight clusters of small dark (brightfield) or autofluorescent pieces.
    let clumps = if rng.gen_bool((0.45 * bump).min(0.9)) {
        rng.gen_range(1..=10)
    } else {
        0
    };
    for _ in 0..clumps {
        let (x, y, spread) = (
            rng.gen_range(0.0..w),
            rng.gen_range(0.0..h),
            rng.gen_range(4.0..35.0f32) * s.max(0.3),
        );
        let level = if bf {
            rng.gen_range(0.1..0.5)
        } else {
            rng.gen_range(0.1..1.2)
        };
        for _ in 0..rng.gen_range(3..=25) {
            let (t, d) = (
                rng.gen_range(0.0..TAU),
                spread * rng.gen_range(0.0..1.0f32).sqrt(),
            );
            let r = rng.gen_range(1.0..6.0f32) * s.max(0.3);
            let (ring, spot) = (0.0, 0.0);
            let (soft, grain) = (rng.gen_range(0.5..1.5), rng.gen_range(0.0..0.2));
            c.debris.push(Blob {
                x: x + d * t.cos(),
                y: y + d * t.sin(),
                r,
                level,
                ring,
                spot,
                soft,
                grain,
            });
        }
    }
    let bubbles = if rng.gen_bool(0.22 * bump) {
        rng.gen_range(1..=3)
    } else {
        0
    };
    c.bubbles = (0..bubbles)
        .filter_map(|_| extras::bubble(rng, bodies, (w, h, s), bf))
        .collect();
    let fibres = if rng.gen_bool(0.25 * bump) {
        rng.gen_range(1..=4)
    } else {
        0
    };
    c.fibres = (0..fibres)
        .filter_map(|_| extras::fibre(rng, (w, h, s), bf))
        .collect();
    c.many = singles + 3 * clumps + 3 * c.fibres.len() >= 30;
    c
}

pub(super) fn cell(rng: &mut impl Rng, x: f32, y: f32, r: f32, bf: bool, migrating: bool) -> Blob {
    let level = match (bf, migrating) {
        (true, true) => rng.gen_range(0.45..0.85),
        (true, false) => rng.gen_range(0.7..1.0),
        (false, true) => rng.gen_range(0.1..0.6),
        (false, false) => rng.gen_range(0.0..0.8),
    };
    let ring = if bf && !migrating {
        rng.gen_range(0.1..0.6)
    } else if bf {
        rng.gen_range(0.0..0.3)
    } else {
        0.0
    };
    let spot = if bf && rng.gen_bool(if migrating { 0.3 } else { 0.6 }) {
        rng.gen_range(0.05..0.35)
    } else {
        0.0
    };
    let grain = if migrating {
        rng.gen_range(0.1..0.35)
    } else {
        rng.gen_range(0.0..0.25)
    };
    Blob {
        x,
        y,
        r,
        level,
        ring,
        spot,
        soft: rng.gen_range(0.5..1.8),
        grain,
    }
}
