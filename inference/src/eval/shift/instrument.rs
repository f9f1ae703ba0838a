//! The instrument: illumination or excitation field, well-wall shading, camera and output format.

use std::f32::consts::TAU;

use rand::Rng;

use super::scene::pick;

/// Well-edge or meniscus shading.
#[derive(Debug, Clone, Copy)]
pub(super) enum Meniscus {
    /// A dark arc of the well wall: circle centre, radius, band width (px) and depth of the darkening.
    Arc {
        cx: f32,
        cy: f32,
        r: f32,
        band: f32,
        dark: f32,
    },
    /// A broad falloff from one side: unit normal pointing into the image, width (px) and depth.
    Side {
        nx: f32,
        ny: f32,
        width: f32,
        dark: f32,
    },
}

/// The illumination (brightfield) or excitation (fluorescence) field.
#[derive(Debug, Clone, Copy)]
pub(super) struct Light {
    pub(super) base: f32,
    pub(super) gradient: (f32, f32),
    pub(super) vignette: f32,
    pub(super) hotspot: (f32, f32, f32, f32),
    pub(super) meniscus: Option<Meniscus>,
    /// Fluorescence background (autofluorescence and offset) at full excitation.
    pub(super) background: f32,
}

/// Output pixel format.
#[derive(Debug, Clone, Copy)]
pub(super) enum Output {
    Grey8,
    Rgb8([f32; 3]),
    Grey16(u8),
}

/// Camera and optics after the specimen.
#[derive(Debug, Clone, Copy)]
pub(super) struct Camera {
    /// Electrons at full scale, read noise (e-), pixel response non-uniformity, row-noise (fraction of full
    /// scale) and hot-pixel probability.
    pub(super) full_well: f32,
    pub(super) read: f32,
    pub(super) prnu: f32,
    pub(super) row: f32,
    pub(super) hot: f32,
    pub(super) gamma: f32,
    /// Global defocus (Gaussian sigma, px), fluorescence out-of-focus glow (fraction, sigma px).
    pub(super) blur: f32,
    pub(super) glow: f32,
    pub(super) glow_sigma: f32,
    pub(super) output: Output,
    pub(super) jpeg: Option<u8>,
}

/// Draws the illumination or excitation field; `hard` forces a strong gradient, hotspot or vignetting.
pub(super) fn light(rng: &mut impl Rng, brightfield: bool, hard: bool, w: f32, h: f32) -> Light {
    let strength = if hard {
        1.0
    } else if rng.gen_bool(0.3) {
        rng.gen_range(0.5..0.9)
    } else {
        0.12
    };
    let t = rng.gen_range(0.0..TAU);
    let g = strength * rng.gen_range(0.15..0.5f32);
    let meniscus = rng.gen_bool(0.25).then(|| {
        let side = rng.gen_range(0..4);
        let (nx, ny) = [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)][side];
        if rng.gen_bool(0.5) {
            let r = w.max(h) * rng.gen_range(1.0..3.0f32);
            let off = rng.gen_range(-0.1..0.15f32) * w.min(h);
            // The wall's circle passes `off` px inside the side the normal points away from.
            let (cx, cy) = (
                w / 2.0 + nx * (r + off - w / 2.0),
                h / 2.0 + ny * (r + off - h / 2.0),
            );
            Meniscus::Arc {
                cx,
                cy,
                r,
                band: rng.gen_range(8.0..60.0),
                dark: rng.gen_range(0.2..0.7),
            }
        } else {
            Meniscus::Side {
                nx,
                ny,
                width: rng.gen_range(0.1..0.4) * w.min(h),
                dark: rng.gen_range(0.15..0.5),
            }
        }
    });
    Light {
        base: if brightfield {
            rng.gen_range(0.55..0.9)
        } else {
            rng.gen_range(0.7..1.0)
        },
        gradient: (g * t.cos(), g * t.sin()),
        vignette: strength * rng.gen_range(0.0..0.45),
        hotspot: (
            rng.gen_range(0.1..0.9),
            rng.gen_range(0.1..0.9),
            rng.gen_range(0.15..0.5),
            strength * rng.gen_range(0.0..0.4),
        ),
        meniscus,
        background: rng.gen_range(0.01..0.09),
    }
}

/// Draws the camera, its noise, defocus, glow, output format and compression.
pub(super) fn camera(rng: &mut impl Rng, brightfield: bool, s: f32) -> Camera {
    let output = match pick(rng, &[0.62, 0.28, 0.1]) {
        0 => Output::Grey8,
        1 if brightfield => Output::Rgb8([1.0, rng.gen_range(0.88..1.0), rng.gen_range(0.7..0.98)]),
        1 => {
            let mut tint = [
                rng.gen_range(0.0..0.25),
                rng.gen_range(0.0..0.25),
                rng.gen_range(0.0..0.25),
            ];
            tint[rng.gen_range(0..3)] = 1.0;
            Output::Rgb8(tint)
        }
        _ => Output::Grey16(if rng.gen_bool(0.6) { 12 } else { 16 }),
    };
    let defocus = rng.gen_bool(0.25);
    Camera {
        full_well: if brightfield {
            rng.gen_range(1500.0..20000.0)
        } else {
            rng.gen_range(200.0..5000.0)
        },
        read: rng.gen_range(1.5..12.0),
        prnu: rng.gen_range(0.0..0.015),
        row: rng.gen_range(0.0..0.004),
        hot: if rng.gen_bool(0.3) {
            rng.gen_range(0.0..2e-4)
        } else {
            0.0
        },
        gamma: if rng.gen_bool(0.3) {
            rng.gen_range(0.7..0.95)
        } else {
            1.0
        },
        blur: if defocus {
            rng.gen_range(1.5..4.0)
        } else {
            rng.gen_range(0.3..1.4)
        } * s.max(0.25).sqrt(),
        glow: if !brightfield && rng.gen_bool(0.45) {
            rng.gen_range(0.08..0.5)
        } else {
            0.0
        },
        glow_sigma: rng.gen_range(8.0..45.0f32) * s.max(0.25),
        output,
        jpeg: (!matches!(output, Output::Grey16(_)) && rng.gen_bool(0.35))
            .then(|| rng.gen_range(45..=92)),
    }
}
