//! Scene planning: which difficulties a sample gets and where its spheroids lie.
//!
//! All random decisions are drawn here, serially and in a fixed order, from the sample's `ChaCha8Rng`; rendering
//! afterwards is a pure function of the [`Scene`]. Placement is rejection sampling with a gap for separate
//! spheroids and contact along a random direction for touching pairs.

use std::f32::consts::TAU;

use rand::{Rng, SeedableRng};

use super::clutter::{self, Clutter};
use super::look::{self, Body, Depth, Halo, Optics, Textures};
use super::optics::Illumination;
use super::plate::{self, Plate};
use super::shape::{Outline, OutlineStyle};
use super::Modality;

/// Difficulties chosen for a sample (the design; the renderer reports what was actually drawn).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Difficulty {
    pub(crate) uneven: bool,
    pub(crate) halo: bool,
    pub(crate) debris: bool,
    pub(crate) touching: bool,
}

/// Everything the renderer needs; no randomness is left after planning.
#[derive(Debug)]
pub(crate) struct Scene {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) modality: Modality,
    pub(crate) depth: Depth,
    pub(crate) difficulty: Difficulty,
    pub(crate) bodies: Vec<Body>,
    pub(crate) halo: Option<Halo>,
    pub(crate) clutter: Clutter,
    pub(crate) light: Illumination,
    pub(crate) optics: Optics,
    pub(crate) textures: Textures,
    /// Generator v2's additions; `None` for a v1 scene.
    pub(crate) plate: Option<Plate>,
}

/// What to plan besides the v1 scene: nothing, the v2 additions, or the v2 additions without any spheroid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extras {
    /// A v1 scene.
    None,
    /// v2: drawn from the given random stream; a small share of scenes has no spheroid.
    Plate(u64),
    /// v2 as [`Extras::Plate`] with the same stream, but always with the spheroids.
    Spheroids(u64),
    /// v2 with no spheroid at all.
    Empty(u64),
}

/// Share of v2 scenes drawn without any spheroid.
const EMPTY_SHARE: f64 = 0.07;

/// Draws a complete scene of `width` x `height` pixels.
pub(crate) fn plan<R: Rng>(rng: &mut R, width: u32, height: u32, extras: Extras) -> Scene {
    let scale = ((width as f32) * (height as f32)).sqrt() / 1024.0;
    let modality = if rng.gen_bool(0.75) {
        Modality::Brightfield
    } else {
        Modality::Fluorescence
    };
    let mut difficulty = Difficulty::default();
    if rng.gen_bool(0.5) {
        while !(difficulty.uneven || difficulty.halo || difficulty.debris || difficulty.touching) {
            difficulty = Difficulty {
                uneven: rng.gen_bool(0.45),
                halo: rng.gen_bool(0.4),
                debris: rng.gen_bool(0.45),
                touching: rng.gen_bool(0.3),
            };
        }
    }
    let want_cut = rng.gen_bool(0.25);
    let (outlines, touched) = layout(rng, width, height, scale, difficulty.touching, want_cut);
    difficulty.touching = touched;
    let mut bodies = look::bodies(rng, modality, outlines, &difficulty, scale);
    let mut halo = difficulty.halo.then(|| look::halo(rng, modality, scale));
    let clutter = clutter::plan(
        rng,
        modality,
        &bodies,
        difficulty.debris,
        width,
        height,
        scale,
    );
    let light = Illumination::random(rng, width, height, difficulty.uneven);
    let optics = look::optics(rng, modality, difficulty.uneven, scale);
    let depth = look::depth(rng, modality);
    let textures = Textures::new(rng, width, height, scale);
    let plate = match extras {
        Extras::None => None,
        Extras::Plate(stream) | Extras::Spheroids(stream) | Extras::Empty(stream) => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(stream);
            // The coin is always thrown, so the three variants share every later draw.
            let coin = rng.gen_bool(EMPTY_SHARE);
            let empty = match extras {
                Extras::Empty(_) => true,
                Extras::Spheroids(_) => false,
                _ => coin,
            };
            let size = (width, height, scale);
            let plate = plate::plan(&mut rng, modality, &mut bodies, &mut halo, empty, size);
            if empty {
                difficulty.touching = false;
                difficulty.halo = false;
            }
            Some(plate)
        }
    };
    Scene {
        width,
        height,
        modality,
        depth,
        difficulty,
        bodies,
        halo,
        clutter,
        light,
        optics,
        textures,
        plate,
    }
}

/// Random outline style of a spheroid of mean radius `radius`.
fn spheroid_style<R: Rng>(rng: &mut R, scale: f32) -> OutlineStyle {
    OutlineStyle {
        lobes: if rng.gen_bool(0.2) {
            rng.gen_range(0.12..0.28)
        } else {
            rng.gen_range(0.03..0.12)
        },
        roughness: rng.gen_range(0.001..0.006),
        bump_radius: rng.gen_range(3.0..8.0) * scale,
    }
}

/// Places one to six spheroid outlines; returns them and whether a touching pair was placed.
fn layout<R: Rng>(
    rng: &mut R,
    width: u32,
    height: u32,
    scale: f32,
    touching: bool,
    want_cut: bool,
) -> (Vec<Outline>, bool) {
    let (w, h) = (width as f32, height as f32);
    let count = if touching {
        rng.gen_range(2..=4)
    } else {
        match rng.gen_range(0..10) {
            0..=5 => 1,
            6..=7 => 2,
            _ => rng.gen_range(3..=6),
        }
    };
    let fit = 0.45 * w.min(h);
    let main_radius = if count == 1 {
        rng.gen_range(110.0..350.0) * scale
    } else {
        rng.gen_range(80.0..260.0) * scale
    };
    let style = spheroid_style(rng, scale);
    let mut main = Outline::random(rng, 0.0, 0.0, main_radius.min(fit * 0.8), style);
    if want_cut {
        // Centre near one side so that between a fifth and two thirds of the radius is outside.
        let r = main.r_max;
        let inset = rng.gen_range(-0.3..0.6) * r;
        let (along_w, along_h) = (rng.gen_range(0.0..w), rng.gen_range(0.0..h));
        (main.cx, main.cy) = match rng.gen_range(0..4) {
            0 => (inset, along_h),
            1 => (w - inset, along_h),
            2 => (along_w, inset),
            _ => (along_w, h - inset),
        };
    } else {
        let r = main.r_max.min(fit);
        main.cx = rng.gen_range(r..(w - r).max(r + 1.0));
        main.cy = rng.gen_range(r..(h - r).max(r + 1.0));
    }
    let mut outlines = vec![main];
    let mut touched = false;
    let gap = 12.0 * scale;
    for i in 1..count {
        let small = if count >= 3 { 120.0 } else { 170.0 };
        let radius = rng.gen_range(40.0..small) * scale;
        let style = spheroid_style(rng, scale);
        let mut next = Outline::random(rng, 0.0, 0.0, radius, style);
        let attach = touching && (i == 1 || rng.gen_bool(0.5));
        for _ in 0..40 {
            if attach {
                let anchor = &outlines[rng.gen_range(0..outlines.len())];
                let angle: f32 = rng.gen_range(0.0..TAU);
                let (dx, dy) = (angle.cos(), angle.sin());
                let reach = anchor.radius_towards(dx, dy) + next.radius_towards(-dx, -dy)
                    - rng.gen_range(0.0..0.12) * radius;
                next.cx = anchor.cx + dx * reach;
                next.cy = anchor.cy + dy * reach;
            } else {
                next.cx = rng.gen_range(0.0..w);
                next.cy = rng.gen_range(0.0..h);
            }
            let inside = next.cx > radius * 0.5
                && next.cx < w - radius * 0.5
                && next.cy > radius * 0.5
                && next.cy < h - radius * 0.5;
            let clear = outlines.iter().all(|other| {
                let d = ((other.cx - next.cx).powi(2) + (other.cy - next.cy).powi(2)).sqrt();
                if attach {
                    // Only the anchor may overlap, and only at its rim.
                    d > 0.6 * (other.r_min + next.r_min)
                } else {
                    d > other.r_max + next.r_max + gap
                }
            });
            if inside && clear {
                touched |= attach;
                outlines.push(next);
                break;
            }
        }
    }
    (outlines, touched)
}
