//! A second, independently built synthetic micrograph renderer, used only for evaluation: a held-out
//! "domain shift" set whose shape model, textures and optics differ from the training generator's
//! ([`crate::synth`]).
//!
//! Image formation, in three layers:
//!
//! * **Specimen.** Objects are composited in painter's order, each only inside its bounding box. In brightfield
//!   the layer is a relative transmittance map `T` (1 = clear medium): each object replaces `T` by its own grey
//!   level `g` with coverage `α`, `T ← T + α (g − T)`, so the spheroid's darkness is drawn directly (very dark to
//!   medium grey) rather than derived from an absorption law. In fluorescence the layer is an emission map `E`
//!   that objects add to, `E ← E + α e`. Spheroids are unions of star-shaped lobes whose radius is a
//!   log-Fourier series of the angle with narrow bulges and fine angular value noise (ragged edges), plus a
//!   pixel-scale wobble of the distance field. Their texture is cellular (Worley) noise: dark membranes
//!   between cells of varying grey in brightfield, bright nuclei in fluorescence, with fine grain, a dome
//!   profile, an optional necrotic core and a darker or lighter rim. The brightfield halo is the defocus
//!   (transport-of-intensity) ring of a phase object, modelled as `A · u · e^(1 − u)`, `u = d / d₀`, added
//!   outside the spheroids at signed distance `d`.
//! * **Optics.** A global Gaussian defocus (three box passes), per-object edge blur, and in fluorescence an
//!   out-of-focus glow (a wide blur of `E` added back). The illumination (or excitation) field is a product of
//!   a linear gradient, radial vignetting, an off-centre hotspot and optional well-wall or meniscus shading;
//!   brightfield signal is `L · T`, fluorescence signal `B + L · E`.
//! * **Camera.** Photon-transfer noise: electrons `e = signal · N_fw · (1 + PRNU)`, a Gaussian of variance
//!   `e + σ_read²` (shot plus read noise), per-row offsets, rare hot pixels, an optional gamma, then
//!   quantisation to Luma8, Rgb8 (tinted light or a fluorophore channel) or Luma16 with 12 or 16 bits, and a
//!   JPEG round trip on about a third of the 8-bit images.
//!
//! Loose cells, migrating cell clouds, debris clumps, air bubbles and fibres or scratches are painted but never
//! enter the mask. All random choices come from a `ChaCha8Rng` seeded with the sample's seed and per-pixel
//! randomness from hashing the pixel position, so a sample is reproducible from its seed alone.
//!
//! ```
//! # use spheromesh_inference::eval::shift;
//! let sample = shift::generate_sized(3, 128, 96)?;
//! assert_eq!(sample.mask.dimensions(), (128, 96));
//! # Ok::<(), spheromesh_inference::synth::SizeError>(())
//! ```

mod cloud;
mod clutter;
mod extras;
#[cfg(test)]
mod inspect;
mod instrument;
mod noise;
mod optics;
mod paint;
mod scene;
mod shape;
#[cfg(test)]
mod tests;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::synth::{Modality, SampleTags, SizeError, SynthSample, MAX_SIDE, MIN_SIDE};

/// Seed offset so this renderer's random stream never coincides with another user of the same seed.
const STREAM: u64 = 0x5348_4946_545f_7631;

/// Sample for `seed` at a random size (each side 512..=1280, either orientation), with 1..=5 spheroids.
pub fn generate(seed: u64) -> SynthSample {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ STREAM);
    let (w, h) = (rng.gen_range(512..=1280), rng.gen_range(512..=1280));
    render(&mut rng, w, h, false)
}

/// Same distribution at a fixed size. Err(SizeError::OutOfRange{..}) outside MIN_SIDE..=MAX_SIDE.
///
/// # Errors
///
/// [`SizeError::OutOfRange`] when a side is below [`MIN_SIDE`] or above [`MAX_SIDE`].
pub fn generate_sized(seed: u64, width: u32, height: u32) -> Result<SynthSample, SizeError> {
    let range = MIN_SIDE..=MAX_SIDE;
    if !range.contains(&width) || !range.contains(&height) {
        return Err(SizeError::OutOfRange { width, height });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ STREAM);
    Ok(render(&mut rng, width, height, false))
}

/// A "no spheroid" scene: only single cells, cell clouds, debris clumps, bubbles, fibres/scratches; the mask is all 0.
pub fn generate_empty(seed: u64) -> SynthSample {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ STREAM ^ 0xE);
    let (w, h) = (rng.gen_range(512..=1280), rng.gen_range(512..=1280));
    render(&mut rng, w, h, true)
}

fn render(rng: &mut ChaCha8Rng, width: u32, height: u32, empty: bool) -> SynthSample {
    let scene = scene::plan(rng, width, height, empty);
    let canvas = paint::paint(&scene);
    let (w, h) = (canvas.w, canvas.h);
    let mut touching = canvas.overlap;
    for y in 0..h {
        for x in 0..w {
            let l = canvas.label[y * w + x];
            let right = if x + 1 < w {
                canvas.label[y * w + x + 1]
            } else {
                0
            };
            let below = if y + 1 < h {
                canvas.label[(y + 1) * w + x]
            } else {
                0
            };
            touching |= l != 0 && ((right != 0 && right != l) || (below != 0 && below != l));
        }
    }
    let border = |x: usize, y: usize| canvas.label[y * w + x] != 0;
    let cut_by_frame = (0..w).any(|x| border(x, 0) || border(x, h - 1))
        || (0..h).any(|y| border(0, y) || border(w - 1, y));
    let mask_bytes = canvas
        .label
        .iter()
        .map(|&l| if l == 0 { 0 } else { 255 })
        .collect();
    let mask = image::GrayImage::from_raw(width, height, mask_bytes)
        .unwrap_or_else(|| image::GrayImage::new(width, height));
    let (_, spread) = optics::field_range(&scene.light, w as f32, h as f32);
    let halo = if scene.brightfield {
        scene.bodies.iter().any(|b| b.halo >= 0.07)
    } else {
        scene.camera.glow >= 0.15 && !scene.bodies.is_empty()
    };
    let tags = SampleTags {
        modality: if scene.brightfield {
            Modality::Brightfield
        } else {
            Modality::Fluorescence
        },
        bit_depth: match scene.camera.output {
            instrument::Output::Grey16(bits) => bits,
            _ => 8,
        },
        uneven_illumination: spread >= 0.2,
        halo,
        debris: scene.clutter.many,
        touching,
        cut_by_frame,
        spheroids: (1..=scene.bodies.len() as u8)
            .filter(|id| canvas.label.contains(id))
            .count(),
        cell_cloud: scene.clutter.cloud,
        bubble: !scene.clutter.bubbles.is_empty(),
        fibre: !scene.clutter.fibres.is_empty(),
    };
    let image = optics::develop(&scene, canvas);
    SynthSample { image, mask, tags }
}
