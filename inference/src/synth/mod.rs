//! Synthetic spheroid micrographs with exact ground-truth masks, for training and evaluating the ResUNet when no
//! real SpherosegV4 data can be shipped.
//!
//! Each sample is a procedural scene rendered through a simple image-formation model:
//!
//! * brightfield: Beer-Lambert transmission `I = L(x, y) · exp(-OD)` of a textured, lobed absorber (thicker
//!   centre, optional necrotic core, darker or lighter rim, optional bright phase halo) under uneven illumination
//!   and vignetting;
//! * fluorescence: additive emission `I = B(x, y) + E(x, y) · e` of a bright textured body on a dark,
//!   autofluorescent background, with optional scattered-light glow;
//!
//! followed by defocus blur, Poisson-Gaussian camera noise (Foi et al., "Practical Poissonian-Gaussian noise
//! modeling", IEEE TIP 2008) and quantisation to 8-bit grey, 8-bit RGB or 12/16-bit grey. Loose cells, cell
//! clumps, fragments and fibres are drawn into the image but never into the mask. Everything random comes from a
//! `ChaCha8Rng` seeded with the sample's seed, so a sample is reproducible from its seed alone, whatever the
//! thread count.
//!
//! ```
//! # use spheromesh_inference::synth;
//! let sample = synth::generate_sized(7, 256, 256)?;
//! assert_eq!(sample.mask.dimensions(), (256, 256));
//! # Ok::<(), synth::SizeError>(())
//! ```

mod clutter;
mod look;
mod noise;
mod optics;
mod plate;
mod render;
mod scene;
mod shape;
#[cfg(test)]
mod tests;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Smallest side length [`generate_sized`] accepts.
pub const MIN_SIDE: u32 = 64;
/// Largest side length [`generate_sized`] accepts.
pub const MAX_SIDE: u32 = 4096;

/// Imaging modality of a synthetic sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Modality {
    /// Transmitted light: dark spheroid on a grey background.
    Brightfield,
    /// Epifluorescence: bright spheroid on a dark background.
    Fluorescence,
}

/// What a synthetic sample contains, for stratified evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SampleTags {
    /// Imaging modality.
    pub modality: Modality,
    /// Significant bits per sample: 8 (Luma8 or Rgb8), 12 (12-bit data in Luma16) or 16 (full-range Luma16).
    pub bit_depth: u8,
    /// Strong illumination gradient, hotspot or vignetting across the field.
    pub uneven_illumination: bool,
    /// Bright phase halo (brightfield) or scattered-light glow (fluorescence) around the spheroids.
    pub halo: bool,
    /// Many loose cells, cell clumps, fragments or fibres, some next to the spheroid.
    pub debris: bool,
    /// At least two spheroids touch or overlap; the mask merges them.
    pub touching: bool,
    /// The mask reaches the image border.
    pub cut_by_frame: bool,
    /// Number of spheroids drawn (0 in a "no spheroid" scene: only cells, debris, bubbles or fibres).
    pub spheroids: usize,
    /// A dense or sparse cloud of migrating single cells around a spheroid, often touching it.
    pub cell_cloud: bool,
    /// At least one air bubble (light interior, dark refractive rim), sometimes touching a spheroid.
    pub bubble: bool,
    /// Long fibres or scratches across the field, some crossing a spheroid's edge.
    pub fibre: bool,
}

impl SampleTags {
    /// Whether the sample has a condition that defeats a global threshold: uneven illumination, halo, debris,
    /// touching spheroids, a cell cloud, a bubble or fibres.
    pub fn is_hard(&self) -> bool {
        self.uneven_illumination
            || self.halo
            || self.debris
            || self.touching
            || self.cell_cloud
            || self.bubble
            || self.fibre
    }
}

/// One synthetic micrograph with its ground truth.
#[derive(Debug, Clone)]
pub struct SynthSample {
    /// The rendered image: Luma8, Rgb8 or Luma16.
    pub image: image::DynamicImage,
    /// Ground truth at the image's size: 255 on spheroids, 0 elsewhere (cells, debris and halo included).
    pub mask: image::GrayImage,
    /// What the scene contains.
    pub tags: SampleTags,
}

/// Rejected arguments of [`generate_sized`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SizeError {
    /// A side is outside `MIN_SIDE..=MAX_SIDE`.
    #[error("image size {width}x{height} is outside {MIN_SIDE}..={MAX_SIDE} per side")]
    OutOfRange {
        /// Requested width.
        width: u32,
        /// Requested height.
        height: u32,
    },
}

/// Which version of the generator draws a sample.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Generator {
    /// The first generator: spheroids, halo, loose cells, clumps, fragments and short fibres.
    V1,
    /// v1 plus what real plates show: cell clouds, air bubbles, long fibres and scratches, well-edge and
    /// meniscus shading, per-object defocus, broader halos, darker to paler spheroids with more texture, JPEG
    /// compression, and about 7 % of scenes with no spheroid at all.
    #[default]
    V2,
}

impl std::str::FromStr for Generator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Self::V1),
            "v2" => Ok(Self::V2),
            other => Err(format!("unknown generator {other:?}: expected v1 or v2")),
        }
    }
}

/// Seed of the v2 random stream of sample `seed`, independent of its v1 stream.
fn plate_stream(seed: u64) -> u64 {
    noise::mix64(seed ^ 0x7632_706c_6174_6500)
}

/// Draws the size of sample `seed` and its scene.
fn scene_for(seed: u64, extras: impl FnOnce(u64) -> scene::Extras) -> scene::Scene {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let long = rng.gen_range(512..=1300u32);
    let short = rng.gen_range(512..=long.min(1000));
    let (width, height) = if rng.gen_bool(0.75) {
        (long, short)
    } else {
        (short, long)
    };
    scene::plan(&mut rng, width, height, extras(plate_stream(seed)))
}

/// Generates the v2 sample for `seed` at a random size between 512x512 and 1300x1000 (either orientation),
/// always with at least one spheroid: the held-out sets' draw.
///
/// The same seed always gives the same bytes. About 75 % of samples are brightfield and most are hard
/// (see [`SampleTags::is_hard`]).
pub fn generate(seed: u64) -> SynthSample {
    render::render(&scene_for(seed, scene::Extras::Spheroids))
}

/// Generates the sample for `seed` as a training pool draws it with the given generator version. A v1 sample is
/// what the first generator made for this seed, byte for byte; a v2 sample is [`generate`]'s, except that about
/// 7 % of seeds give a scene with no spheroid (as [`generate_empty`]), so the model learns to answer "none".
pub fn generate_with(generator: Generator, seed: u64) -> SynthSample {
    render::render(&scene_for(seed, |stream| match generator {
        Generator::V1 => scene::Extras::None,
        Generator::V2 => scene::Extras::Plate(stream),
    }))
}

/// A v2 scene with no spheroid: only cells, cell clouds, debris, bubbles, fibres and shading. Its mask is empty,
/// and the right answer is no polygon.
pub fn generate_empty(seed: u64) -> SynthSample {
    render::render(&scene_for(seed, scene::Extras::Empty))
}

/// Generates the v2 sample for `seed` at a fixed `width` x `height`.
///
/// The scene is drawn from the same distribution as [`generate`] but is not a crop of `generate(seed)`.
///
/// # Errors
///
/// [`SizeError::OutOfRange`] when a side is below [`MIN_SIDE`] or above [`MAX_SIDE`].
pub fn generate_sized(seed: u64, width: u32, height: u32) -> Result<SynthSample, SizeError> {
    let range = MIN_SIDE..=MAX_SIDE;
    if !range.contains(&width) || !range.contains(&height) {
        return Err(SizeError::OutOfRange { width, height });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let extras = scene::Extras::Spheroids(plate_stream(seed));
    Ok(render::render(&scene::plan(
        &mut rng, width, height, extras,
    )))
}
