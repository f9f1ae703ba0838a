//! Scene planning: every random choice of a sample is drawn here, in a fixed order, from one `ChaCha8Rng`.

use std::f32::consts::TAU;

use rand::Rng;

use super::clutter::{self, Blob, Bubble, Fibre};
use super::instrument::{self, Camera, Light};
use super::shape::{Lobe, Outline};

/// One spheroid: its outline and how it looks.
#[derive(Debug, Clone)]
pub(super) struct Body {
    pub(super) outline: Outline,
    /// Brightfield: relative transmittance at the centre and at the edge. Fluorescence: emission at both.
    pub(super) centre: f32,
    pub(super) edge: f32,
    pub(super) dome_power: f32,
    /// Necrotic core radius as a fraction of the lobe radius (0: none) and its relative darkening.
    pub(super) core: f32,
    pub(super) core_dark: f32,
    /// Cell size (px) of the cellular texture, its contrast and the fine grain contrast.
    pub(super) cell: f32,
    pub(super) texture: f32,
    pub(super) grain: f32,
    /// Brightfield cell-to-cell grey variation and membrane darkening, relative to `texture`.
    pub(super) patch: f32,
    pub(super) membrane: f32,
    /// Relative brightness change in a band `rim_width` px inside the edge (negative: darker rim).
    pub(super) rim: f32,
    pub(super) rim_width: f32,
    /// Edge blur half-width in px (per-object defocus).
    pub(super) soft: f32,
    /// Brightfield phase halo: peak added transmittance and the distance (px) of the peak from the edge.
    pub(super) halo: f32,
    pub(super) halo_at: f32,
    pub(super) stream: u64,
}

/// Everything needed to render one sample.
#[derive(Debug, Clone)]
pub(super) struct Scene {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) brightfield: bool,
    pub(super) stream: u64,
    pub(super) bodies: Vec<Body>,
    pub(super) clutter: clutter::Clutter,
    pub(super) light: Light,
    pub(super) camera: Camera,
}

impl Scene {
    pub(super) fn blobs(&self) -> impl Iterator<Item = &Blob> {
        self.clutter.debris.iter().chain(&self.clutter.cells)
    }
    pub(super) fn bubbles(&self) -> &[Bubble] {
        &self.clutter.bubbles
    }
    pub(super) fn fibres(&self) -> &[Fibre] {
        &self.clutter.fibres
    }
}

/// Plans a scene of `width` x `height`; `empty` leaves out the spheroids.
pub(super) fn plan(rng: &mut impl Rng, width: u32, height: u32, empty: bool) -> Scene {
    let (w, h) = (width as f32, height as f32);
    let s = w.min(h) / 1024.0;
    let brightfield = rng.gen_bool(0.75);
    let hard = brightfield && rng.gen_bool(0.3);
    let stream = rng.gen::<u64>();
    let n = if empty {
        0
    } else {
        pick(rng, &[0.42, 0.25, 0.16, 0.10, 0.07]) + 1
    };
    let mut bodies: Vec<Body> = Vec::with_capacity(n);
    let cut = rng.gen_bool(0.22);
    let chain = n >= 2 && rng.gen_bool(0.55);
    for i in 0..n {
        let r = (rng.gen_range(60f32.ln()..380f32.ln()).exp() * s / (1.0 + 0.3 * (n as f32 - 1.0)))
            .clamp(4.0, 0.42 * w.min(h));
        let outline = outline(rng, r, s);
        let centre = if i > 0 && chain && (i == 1 || rng.gen_bool(0.4)) {
            let prev = &bodies[i - 1].outline;
            let (px, py) = prev.centre();
            let mut spot = (px, py);
            for _ in 0..12 {
                let t = rng.gen_range(0.0..TAU);
                let gap = prev.reach(t) + outline.reach(t + TAU / 2.0) * rng.gen_range(0.86..1.0);
                spot = (px + gap * t.cos(), py + gap * t.sin());
                if (0.0..w).contains(&spot.0) && (0.0..h).contains(&spot.1) {
                    break;
                }
            }
            spot
        } else if i == 0 && cut {
            let inset = r * rng.gen_range(-0.3..0.8f32);
            let (u, v) = (rng.gen_range(0.0..w), rng.gen_range(0.0..h));
            match rng.gen_range(0..4) {
                0 => (inset, v),
                1 => (w - inset, v),
                2 => (u, inset),
                _ => (u, h - inset),
            }
        } else {
            free_spot(rng, &bodies, r, w, h)
        };
        bodies.push(look(
            rng,
            outline.translated(centre.0, centre.1),
            brightfield,
            hard,
            s,
        ));
    }
    let clutter = clutter::plan(rng, &bodies, w, h, s, brightfield, empty);
    let light = instrument::light(rng, brightfield, hard, w, h);
    let camera = instrument::camera(rng, brightfield, s);
    Scene {
        width,
        height,
        brightfield,
        stream,
        bodies,
        clutter,
        light,
        camera,
    }
}

/// Index drawn with the given weights.
pub(super) fn pick(rng: &mut impl Rng, weights: &[f64]) -> usize {
    let mut x = rng.gen_range(0.0..weights.iter().sum::<f64>());
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn outline(rng: &mut impl Rng, r: f32, s: f32) -> Outline {
    let lumpy = rng.gen_range(0.15..1.0f32);
    let ragged = rng.gen_range(0.4..3.0f32) * s.sqrt();
    let mut lobes = vec![Lobe::random(rng, 0.0, 0.0, r, lumpy, ragged)];
    for _ in 0..pick(rng, &[0.55, 0.3, 0.15]) {
        let (t, dist) = (rng.gen_range(0.0..TAU), r * rng.gen_range(0.45..0.85f32));
        let rl = r * rng.gen_range(0.35..0.7f32);
        lobes.push(Lobe::random(
            rng,
            dist * t.cos(),
            dist * t.sin(),
            rl,
            lumpy,
            ragged,
        ));
    }
    let wobble = rng.gen_range(0.2..1.5f32);
    Outline {
        lobes,
        wobble,
        wobble_cell: rng.gen_range(1.5..4.0),
        stream: rng.gen(),
    }
}

fn free_spot(rng: &mut impl Rng, bodies: &[Body], r: f32, w: f32, h: f32) -> (f32, f32) {
    let margin = (r * 1.1).min(w.min(h) * 0.5 - 1.0);
    let mut spot = (w / 2.0, h / 2.0);
    for _ in 0..40 {
        spot = (
            rng.gen_range(margin..=w - margin),
            rng.gen_range(margin..=h - margin),
        );
        let clear = bodies.iter().all(|b| {
            let (bx, by) = b.outline.centre();
            let (x0, _, x1, _) = b.outline.bounds(0.0);
            (spot.0 - bx).hypot(spot.1 - by) > r * 1.25 + (x1 - x0) * 0.5 + 8.0
        });
        if clear {
            break;
        }
    }
    spot
}

fn look(rng: &mut impl Rng, outline: Outline, brightfield: bool, hard: bool, s: f32) -> Body {
    let centre = if brightfield {
        rng.gen_range(0.05..0.62f32)
    } else {
        rng.gen_range(0.3..1.0f32)
    };
    let edge = if brightfield {
        (centre + rng.gen_range(-0.06..0.35f32)).clamp(0.04, 0.8)
    } else {
        centre * rng.gen_range(0.35..1.0f32)
    };
    let core = if rng.gen_bool(0.35) {
        rng.gen_range(0.25..0.65)
    } else {
        0.0
    };
    let soft = if rng.gen_bool(0.3) {
        rng.gen_range(1.5..6.0) * s.max(0.3)
    } else {
        rng.gen_range(0.5..1.3)
    };
    let (halo, halo_at) = if brightfield && (hard || rng.gen_bool(0.25)) {
        let strong = if hard {
            rng.gen_range(0.1..0.32)
        } else {
            rng.gen_range(0.03..0.25)
        };
        (strong, rng.gen_range(5.0..20.0f32) * s.max(0.25))
    } else {
        (0.0, 1.0)
    };
    Body {
        outline,
        centre,
        edge,
        dome_power: rng.gen_range(0.5..2.0),
        core,
        core_dark: rng.gen_range(0.2..0.6),
        cell: rng.gen_range(5.0..14.0f32) * s.max(0.25),
        texture: rng.gen_range(0.1..0.38),
        grain: rng.gen_range(0.02..0.12),
        patch: rng.gen_range(0.0..0.7),
        membrane: rng.gen_range(0.0..0.5),
        rim: rng.gen_range(-0.3..0.15),
        rim_width: rng.gen_range(2.0..10.0f32) * s.max(0.3),
        soft,
        halo,
        halo_at,
        stream: rng.gen(),
    }
}
