//! Appearance parameters: how a spheroid, its halo, the optics and the camera look in each modality.
//!
//! A spheroid's signal (optical density in brightfield, emission in fluorescence) follows the chord length of a
//! sphere, `sqrt(1 - ρ²)`, blended with a floor so the edge keeps some contrast, then adds a necrotic core (denser
//! in brightfield, dimmer in fluorescence, as in the proliferating / quiescent / necrotic layering described by
//! Hirschhaeuser et al., J. Biotechnol. 2010), a rim band and multiplicative fBm texture.

use rand::Rng;

use super::noise::{smoothstep, Fbm};
use super::scene::Difficulty;
use super::shape::Outline;
use super::Modality;

/// A spheroid: its outline plus the signal profile inside it.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    pub(crate) outline: Outline,
    /// Peak signal at the centre before core, rim and texture.
    density: f32,
    /// Fraction of `density` left at the boundary.
    edge_floor: f32,
    /// 0 = chord profile, 1 = its square root (flatter top).
    flatness: f32,
    /// Core radius in ρ units, softness, and added signal (negative dims it).
    core: Option<(f32, f32, f32)>,
    /// Signal added in a band inside the boundary (negative lightens it), and the band's width in pixels.
    rim: (f32, f32),
    /// Relative amplitude of the texture.
    texture: f32,
}

impl Body {
    /// Signal at signed distance `s` (pixels, negative inside) and normalised radius `rho`, given coarse and fine
    /// texture values in [-1, 1].
    pub(crate) fn signal(&self, s: f32, rho: f32, coarse: f32, fine: f32) -> f32 {
        let rho = rho.min(1.0);
        let chord = (1.0 - rho * rho).max(0.0).sqrt();
        let chord = chord + (chord.sqrt() - chord) * self.flatness;
        let mut v = self.density * (self.edge_floor + (1.0 - self.edge_floor) * chord);
        if let Some((radius, soft, strength)) = self.core {
            v += strength * smoothstep(radius + soft, radius - soft, rho + 0.12 * coarse);
        }
        let band = s.min(0.0) / self.rim.1;
        if band > -3.0 {
            v += self.rim.0 * (-band * band).exp();
        }
        (v * (1.0 + self.texture * (0.45 * coarse + 0.55 * fine))).max(0.0)
    }

    /// Scales the signal by `tone` (very dark to medium grey spheroids) and adds `grain` to the texture amplitude.
    pub(crate) fn retone(&mut self, tone: f32, grain: f32) {
        self.density *= tone;
        self.rim.0 *= tone;
        if let Some(core) = self.core.as_mut() {
            core.2 *= tone;
        }
        self.texture += grain;
    }
}

/// Bright ring outside the boundary: `amp · exp(-((s - offset) / width)²)` for s > 0, or a glow
/// `amp · exp(-s / width)` when `offset` is zero.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Halo {
    pub(crate) offset: f32,
    pub(crate) width: f32,
    pub(crate) amp: f32,
}

impl Halo {
    /// Halo strength at signed distance `s`.
    pub(crate) fn at(&self, s: f32) -> f32 {
        if s <= 0.0 || s > self.reach() {
            return 0.0;
        }
        if self.offset == 0.0 {
            self.amp * (-s / self.width).exp()
        } else {
            let t = (s - self.offset) / self.width;
            self.amp * (-t * t).exp() * smoothstep(0.0, self.offset.min(3.0), s)
        }
    }

    /// Distance beyond which the halo is negligible.
    pub(crate) fn reach(&self) -> f32 {
        if self.offset == 0.0 {
            self.width * 5.0
        } else {
            self.offset + self.width * 2.5
        }
    }
}

/// Background level, blur and camera noise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Optics {
    /// Brightest background level (brightfield) or dark level (fluorescence), output units in [0, 1].
    pub(crate) background: f32,
    /// Relative amplitude of background mottling.
    pub(crate) mottle: f32,
    /// Out-of-focus haze that follows the excitation (fluorescence with uneven light only), output units.
    pub(crate) haze: f32,
    /// Gaussian defocus σ in pixels.
    pub(crate) blur: f32,
    /// Read-noise σ in output units.
    pub(crate) read_noise: f32,
    /// Shot-noise variance per unit signal.
    pub(crate) shot_noise: f32,
    /// Stream id of the per-pixel noise.
    pub(crate) stream: u64,
}

/// How the rendered intensity in [0, 1] is stored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Depth {
    /// `Luma8`.
    Gray8,
    /// `Rgb8` with per-channel gains (a lamp tint or a fluorophore colour).
    Rgb8([f32; 3]),
    /// `Luma16` holding `bits`-bit data: code = offset + v · span, in units of the bit range.
    Gray16 { bits: u8, offset: f32, span: f32 },
}

/// Texture fields shared by all bodies and the background.
#[derive(Debug, Clone)]
pub(crate) struct Textures {
    pub(crate) coarse: Fbm,
    pub(crate) fine: Fbm,
    pub(crate) background: Fbm,
}

impl Textures {
    /// Texture fields for a `width` x `height` image at `scale` (1 = 1024 px).
    pub(crate) fn new<R: Rng>(rng: &mut R, width: u32, height: u32, scale: f32) -> Self {
        let coarse = rng.gen_range(30.0..60.0) * scale;
        let fine = rng.gen_range(5.0..9.0) * scale;
        let background = rng.gen_range(150.0..300.0) * scale;
        Self {
            coarse: Fbm::new(rng, width, height, coarse, 2, 0.5),
            fine: Fbm::new(rng, width, height, fine, 2, 0.8),
            background: Fbm::new(rng, width, height, background, 2, 0.4),
        }
    }
}

/// Appearance of every spheroid; touching scenes vary density more between bodies.
pub(crate) fn bodies<R: Rng>(
    rng: &mut R,
    modality: Modality,
    outlines: Vec<Outline>,
    difficulty: &Difficulty,
    scale: f32,
) -> Vec<Body> {
    let bright = modality == Modality::Fluorescence;
    let base = if bright {
        rng.gen_range(0.35..0.75)
    } else if difficulty.halo {
        // Phase-like look: a pale interior whose edge is carried by a dark band and the halo.
        rng.gen_range(0.12..0.4)
    } else {
        rng.gen_range(0.5..1.8)
    };
    let spread = if difficulty.touching { 0.45 } else { 0.12 };
    outlines
        .into_iter()
        .map(|outline| {
            let density = base * rng.gen_range(1.0 - spread..1.0 + spread * 0.5);
            let core = rng.gen_bool(0.5).then(|| {
                let strength = if bright {
                    -density * rng.gen_range(0.25..0.6)
                } else {
                    rng.gen_range(0.3..0.9)
                };
                (rng.gen_range(0.3..0.65), rng.gen_range(0.08..0.3), strength)
            });
            let rim = match rng.gen_range(0..10) {
                _ if difficulty.halo && !bright => {
                    (rng.gen_range(0.3..0.7), rng.gen_range(2.0..5.0) * scale)
                }
                0..=3 if !bright => (
                    -density * rng.gen_range(0.2..0.45),
                    rng.gen_range(5.0..15.0) * scale,
                ),
                0..=3 => (
                    density * rng.gen_range(0.1..0.35),
                    rng.gen_range(6.0..20.0) * scale,
                ),
                4..=6 => (
                    density * rng.gen_range(0.2..0.5),
                    rng.gen_range(2.0..6.0) * scale,
                ),
                _ => (0.0, 1.0),
            };
            Body {
                outline,
                density,
                edge_floor: rng.gen_range(0.35..0.7),
                flatness: rng.gen_range(0.0..1.0),
                core,
                rim: (rim.0, rim.1.max(1.0)),
                texture: rng.gen_range(0.25..0.6),
            }
        })
        .collect()
}

/// A phase halo (brightfield) or a scattered-light glow (fluorescence).
pub(crate) fn halo<R: Rng>(rng: &mut R, modality: Modality, scale: f32) -> Halo {
    match modality {
        Modality::Brightfield => Halo {
            offset: rng.gen_range(2.0..6.0) * scale.max(0.5),
            width: rng.gen_range(3.0..9.0) * scale.max(0.5),
            amp: rng.gen_range(0.2..0.45),
        },
        Modality::Fluorescence => Halo {
            offset: 0.0,
            width: rng.gen_range(15.0..50.0) * scale,
            amp: rng.gen_range(0.25..0.55),
        },
    }
}

/// Background, focus and noise levels.
pub(crate) fn optics<R: Rng>(rng: &mut R, modality: Modality, uneven: bool, scale: f32) -> Optics {
    let blur = if rng.gen_bool(0.15) {
        rng.gen_range(2.0..3.5)
    } else {
        rng.gen_range(0.6..1.6)
    } * scale.max(0.5);
    let (background, read_noise, shot_noise) = match modality {
        Modality::Brightfield => (
            rng.gen_range(0.68..0.9),
            rng.gen_range(0.005..0.018),
            rng.gen_range(0.0003..0.002),
        ),
        Modality::Fluorescence => (
            rng.gen_range(0.02..0.09),
            rng.gen_range(0.004..0.014),
            rng.gen_range(0.001..0.006),
        ),
    };
    let haze = if uneven && modality == Modality::Fluorescence {
        rng.gen_range(0.1..0.3)
    } else {
        0.0
    };
    Optics {
        background,
        haze,
        mottle: rng.gen_range(0.01..0.04),
        blur,
        read_noise,
        shot_noise,
        stream: rng.gen(),
    }
}

/// Storage format: mostly 8-bit grey, some RGB, some 12- or 16-bit grey.
pub(crate) fn depth<R: Rng>(rng: &mut R, modality: Modality) -> Depth {
    match rng.gen_range(0..20) {
        0..=8 => Depth::Gray8,
        9..=13 => Depth::Rgb8(match modality {
            Modality::Brightfield => [1.0, rng.gen_range(0.93..1.0), rng.gen_range(0.82..0.98)],
            Modality::Fluorescence => {
                [[0.08, 1.0, 0.12], [1.0, 0.15, 0.1], [0.2, 0.35, 1.0]][rng.gen_range(0..3)]
            }
        }),
        _ => {
            let bits = if rng.gen_bool(0.5) { 12 } else { 16 };
            let span: f32 = rng.gen_range(0.25..1.0);
            Depth::Gray16 {
                bits,
                offset: rng.gen_range(0.0..(1.0 - span).max(0.001)),
                span,
            }
        }
    }
}
