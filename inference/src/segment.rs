//! The whole pipeline for one image: decode, resize to the network input,
//! ResUNet, hysteresis (regions that never reach [`DEFAULT_MIN_PEAK`] go), bilinear
//! resize of the probabilities back to the image and threshold
//! (or the old service's threshold then nearest resize, [`Upsample`]), 3x3 open
//! then close, contour tracing, and the polygon JSON of the SpherosegV4 contract
//! (section 4-5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use rand::SeedableRng;

use crate::decode::{decode_rgb8, DecodeError, DecodeLimits};
use crate::model::Model;
use crate::postprocess::{
    extract_polygons, open_close_3x3, rasterize_polygons, suppress_unconfirmed,
    threshold_upsampled, InvalidPolygonOptions, Mask, Polygon, PolygonOptions,
};
use crate::preprocess::to_model_input;

/// Peak probability a region above the threshold must reach somewhere to be kept (see
/// [`Segmenter::with_min_peak`]). Chosen for the shipped model on validation seeds
/// (8000000..8000060, never the held-out evaluation seeds) from 0.9 / 0.95 / 0.98 / 0.99:
/// the highest value that cost no mean IoU there (models/README.md).
pub const DEFAULT_MIN_PEAK: f32 = 0.95;

/// Per-request knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentOptions {
    /// Probability above which a pixel is spheroid (default 0.5, exclusive range 0..1).
    pub threshold: f32,
    /// Area limits and optional simplification of the polygons.
    pub polygons: PolygonOptions,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            polygons: PolygonOptions::default(),
        }
    }
}

/// How the network's probability map is brought to the image's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upsample {
    /// Bilinear resize of the probabilities, then the threshold: the outline follows the
    /// edge at the image's resolution.
    #[default]
    Bilinear,
    /// Threshold at the network's size, then nearest-neighbour resize of the mask: the old
    /// service's order, whose outlines step by the scale factor (4 px on a 1000-pixel image
    /// from a 256 network).
    Nearest,
}

/// Why an image could not be segmented.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The bytes are not an image we accept (see [`DecodeError`]).
    #[error("cannot decode image: {0}")]
    Decode(#[from] DecodeError),
    /// The threshold is not a probability strictly between 0 and 1.
    #[error("threshold {0} must be strictly between 0 and 1")]
    InvalidThreshold(f32),
    /// The hysteresis peak is not a probability in `[0, 1)`.
    #[error("min peak {0} must be at least 0 and below 1")]
    InvalidMinPeak(f32),
    /// The polygon options are invalid.
    #[error(transparent)]
    InvalidOptions(#[from] InvalidPolygonOptions),
    /// The network failed (device error, out of memory).
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Wall time of each pipeline stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    /// Decoding the bytes.
    pub decode: Duration,
    /// Resizing to the network input.
    pub preprocess: Duration,
    /// The forward pass.
    pub inference: Duration,
    /// Threshold, resize back, morphology and polygons.
    pub postprocess: Duration,
}

/// The result for one image.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// Polygons in contract order (each external followed by its holes).
    pub polygons: Vec<Polygon>,
    /// Original image width.
    pub width: u32,
    /// Original image height.
    pub height: u32,
    /// The mask the polygons describe (after filtering), at the original size.
    pub mask: Mask,
    /// Where the time went.
    pub timings: StageTimings,
}

/// A loaded model plus decode limits; cheap to clone and share across threads.
#[derive(Debug, Clone)]
pub struct Segmenter {
    model: Arc<Model>,
    limits: DecodeLimits,
    dihedral_tta: bool,
    upsample: Upsample,
    min_peak: f32,
}

impl Segmenter {
    /// Wraps a loaded model with the given decode limits.
    pub fn new(model: Model, limits: DecodeLimits) -> Self {
        Self {
            model: Arc::new(model),
            limits,
            dihedral_tta: false,
            upsample: Upsample::default(),
            min_peak: DEFAULT_MIN_PEAK,
        }
    }

    /// Keeps a region of `p > threshold` only if its probability exceeds `min_peak`
    /// somewhere (default [`DEFAULT_MIN_PEAK`]); 0, or any value not above the request's
    /// threshold, keeps every region, as the old service did.
    ///
    /// # Errors
    /// [`SegmentError::InvalidMinPeak`] unless `0 <= min_peak < 1`.
    pub fn with_min_peak(mut self, min_peak: f32) -> Result<Self, SegmentError> {
        if !(0.0..1.0).contains(&min_peak) {
            return Err(SegmentError::InvalidMinPeak(min_peak));
        }
        self.min_peak = min_peak;
        Ok(self)
    }

    /// The hysteresis peak in use.
    pub fn min_peak(&self) -> f32 {
        self.min_peak
    }

    /// Chooses how the probabilities reach the image's size (default [`Upsample::Bilinear`]).
    pub fn with_upsample(mut self, upsample: Upsample) -> Self {
        self.upsample = upsample;
        self
    }

    /// How the probabilities reach the image's size.
    pub fn upsample(&self) -> Upsample {
        self.upsample
    }

    /// Averages the network's output over the eight symmetries of the square (test-time
    /// augmentation): eight forward passes per image instead of one, for a steadier mask.
    pub fn with_dihedral_tta(mut self, on: bool) -> Self {
        self.dihedral_tta = on;
        self
    }

    /// Whether test-time augmentation is on.
    pub fn dihedral_tta(&self) -> bool {
        self.dihedral_tta
    }

    /// The model in use.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The decode limits applied to every image.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Segments encoded image bytes (PNG, JPEG, TIFF, BMP).
    ///
    /// # Errors
    /// [`SegmentError`] saying what was wrong with the input or the run.
    pub fn segment_bytes(
        &self,
        bytes: &[u8],
        opts: &SegmentOptions,
    ) -> Result<Segmentation, SegmentError> {
        check_options(opts)?;
        let t0 = Instant::now();
        let image = decode_rgb8(bytes, &self.limits)?;
        let decode = t0.elapsed();
        let mut out = self.segment_image(&image, opts)?;
        out.timings.decode = decode;
        Ok(out)
    }

    /// Segments an already decoded 8-bit RGB image.
    ///
    /// # Errors
    /// [`SegmentError`] for invalid options or an inference failure.
    pub fn segment_image(
        &self,
        image: &RgbImage,
        opts: &SegmentOptions,
    ) -> Result<Segmentation, SegmentError> {
        check_options(opts)?;
        let (width, height) = image.dimensions();
        let t0 = Instant::now();
        let size = self.model.config().input_size;
        let input = to_model_input(image, size as u32);
        let t1 = Instant::now();
        let probs = if self.dihedral_tta {
            self.model.probabilities_dihedral(&input)
        } else {
            self.model.probabilities(&input)
        }
        .map_err(|e| SegmentError::Inference(e.to_string()))?;
        let t2 = Instant::now();
        let probs = suppress_unconfirmed(&probs, size, size, opts.threshold, self.min_peak);
        let (mask, polygons) = postprocess(&probs, size as u32, width, height, self.upsample, opts);
        let timings = StageTimings {
            decode: Duration::ZERO,
            preprocess: t1 - t0,
            inference: t2 - t1,
            postprocess: t2.elapsed(),
        };
        Ok(Segmentation {
            polygons,
            width,
            height,
            mask,
            timings,
        })
    }
}

fn check_options(opts: &SegmentOptions) -> Result<(), SegmentError> {
    if !(opts.threshold > 0.0 && opts.threshold < 1.0) {
        return Err(SegmentError::InvalidThreshold(opts.threshold));
    }
    opts.polygons.validate()?;
    Ok(())
}

/// Threshold network probabilities at the image's size, clean and trace.
/// Returns the filtered mask (what the polygons rasterise to) and the polygons.
pub(crate) fn postprocess(
    probs: &[f32],
    size: u32,
    width: u32,
    height: u32,
    upsample: Upsample,
    opts: &SegmentOptions,
) -> (Mask, Vec<Polygon>) {
    let full = match upsample {
        Upsample::Bilinear => threshold_upsampled(probs, size, size, width, height, opts.threshold),
        Upsample::Nearest => {
            let binary: Vec<u8> = probs
                .iter()
                .map(|&p| u8::from(p > opts.threshold))
                .collect();
            Mask::from_vec(size, size, binary)
                .unwrap_or_else(|| Mask::new(size, size))
                .resize_nearest(width, height)
        }
    };
    polygons_from_mask(&full, opts)
}

/// The shared tail of the model and baseline pipelines: open/close, trace,
/// filter, and the mask the kept polygons describe.
pub(crate) fn polygons_from_mask(mask: &Mask, opts: &SegmentOptions) -> (Mask, Vec<Polygon>) {
    let cleaned = open_close_3x3(mask);
    // Ids only need to be unique within one result; seeding from the entropy
    // pool keeps them distinct across results too.
    let mut rng = rand_chacha::ChaCha8Rng::from_entropy();
    let polygons = extract_polygons(&cleaned, &opts.polygons, &mut rng);
    let filtered = rasterize_polygons(&polygons, mask.width(), mask.height());
    (filtered, polygons)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::DevicePreference;

    #[test]
    fn min_peak_is_validated_not_clamped() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/spheroid-resunet-small.safetensors");
        let model = Model::load(&path, DevicePreference::Cpu).expect("shipped model loads");
        let segmenter = Segmenter::new(model, DecodeLimits::default());
        assert_eq!(segmenter.min_peak(), DEFAULT_MIN_PEAK);
        for bad in [-0.1, 1.0, 1.5, f32::NAN] {
            let err = segmenter.clone().with_min_peak(bad).unwrap_err();
            assert!(
                matches!(err, SegmentError::InvalidMinPeak(_)),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("below 1"), "{err}");
        }
        assert_eq!(segmenter.with_min_peak(0.0).unwrap().min_peak(), 0.0);
    }
}
