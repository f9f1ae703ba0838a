//! Evaluation runs: the model and the Otsu baseline through the same
//! post-processing (3x3 open/close, contour area limits), scored at the
//! original image resolution against ground truth: IoU, Dice and boundary F1,
//! overall and per difficulty; and on scenes without any spheroid, how many
//! images get a polygon at all.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage};
use rayon::prelude::*;

use super::{otsu_foreground, MeanScores, PairScores, ScoreAccumulator};
use crate::decode::{decode_dynamic, to_rgb8, DecodeError, DecodeLimits};
use crate::postprocess::Mask;
use crate::segment::{polygons_from_mask, SegmentError, SegmentOptions, Segmenter};
use crate::synth::{self, SampleTags, SynthSample};

/// A synthetic evaluation set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthSet {
    /// The training generator, version 2 (what the shipped model is trained on), on held-out seeds; every
    /// scene has a spheroid.
    V2,
    /// The training generator's first version, for comparison with earlier measurements.
    V1,
    /// The independently written renderer ([`super::shift`]), never used in training: the domain-shift set.
    Shift,
}

impl SynthSet {
    /// The sample of this set for `seed`.
    pub fn sample(self, seed: u64) -> SynthSample {
        match self {
            Self::V2 => synth::generate(seed),
            Self::V1 => synth::generate_with(synth::Generator::V1, seed),
            Self::Shift => super::shift::generate(seed),
        }
    }

    /// A scene of this set with no spheroid, or `None` for v1, which has none.
    pub fn empty_sample(self, seed: u64) -> Option<SynthSample> {
        match self {
            Self::V2 => Some(synth::generate_empty(seed)),
            Self::V1 => None,
            Self::Shift => Some(super::shift::generate_empty(seed)),
        }
    }
}

impl std::str::FromStr for SynthSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v2" => Ok(Self::V2),
            "v1" => Ok(Self::V1),
            "shift" => Ok(Self::Shift),
            other => Err(format!("unknown set {other:?}: expected v2, v1 or shift")),
        }
    }
}

/// Scores of one method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodScores {
    /// All images.
    pub overall: MeanScores,
    /// Hard images ([`SampleTags::is_hard`]).
    pub hard: MeanScores,
    /// Images with a cloud of single cells around a spheroid.
    pub cloud: MeanScores,
    /// Images with an air bubble.
    pub bubble: MeanScores,
    /// Images with long fibres or scratches.
    pub fibre: MeanScores,
}

/// How often a method finds something in scenes that hold no spheroid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmptyReport {
    /// Images evaluated.
    pub images: usize,
    /// Images where the model returned at least one polygon.
    pub model_with_polygons: usize,
    /// Images where Otsu + the same post-processing returned at least one polygon.
    pub baseline_with_polygons: usize,
}

impl EmptyReport {
    /// Share of images where the model returned any polygon.
    pub fn model_share(&self) -> f64 {
        self.model_with_polygons as f64 / self.images.max(1) as f64
    }

    /// Share of images where the baseline returned any polygon.
    pub fn baseline_share(&self) -> f64 {
        self.baseline_with_polygons as f64 / self.images.max(1) as f64
    }
}

/// Model against baseline on one data set.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// The ResUNet.
    pub model: MethodScores,
    /// Otsu threshold + the same post-processing.
    pub baseline: MethodScores,
    /// Every image's IoU, in seed (or file name) order.
    pub images: Vec<ImageScore>,
}

/// One image's IoU for the model and for the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageScore {
    /// The seed (synthetic sets) or the file (folders).
    pub item: String,
    /// Model IoU.
    pub model_iou: f64,
    /// Baseline IoU.
    pub baseline_iou: f64,
    /// The sample's tags, for synthetic sets.
    pub tags: Option<SampleTags>,
}

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// Segmenting an image failed.
    #[error("segmenting {item}: {source}")]
    Segment {
        /// Image (seed or path).
        item: String,
        /// Cause.
        source: SegmentError,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// An image or mask could not be decoded.
    #[error("decoding {path}: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: DecodeError,
    },
    /// A mask does not match its image's size, or the folder holds no pairs.
    #[error("{0}")]
    Data(String),
}

/// One image's scores of the model and of the baseline.
struct Scored {
    model: PairScores,
    baseline: PairScores,
    model_found: bool,
    baseline_found: bool,
}

fn score_pair(
    segmenter: &Segmenter,
    image: &DynamicImage,
    truth: &GrayImage,
    opts: &SegmentOptions,
) -> Result<Scored, SegmentError> {
    let seg = segmenter.segment_image(&to_rgb8(image), opts)?;
    let truth01: Vec<u8> = truth.as_raw().iter().map(|&v| u8::from(v > 127)).collect();
    let (w, h) = truth.dimensions();
    let otsu = otsu_foreground(image);
    let otsu_mask = Mask::from_vec(w, h, otsu.into_raw()).unwrap_or_else(|| Mask::new(w, h));
    let (base, base_polygons) = polygons_from_mask(&otsu_mask, opts);
    Ok(Scored {
        model: PairScores::of(seg.mask.as_slice(), &truth01, w),
        baseline: PairScores::of(base.as_slice(), &truth01, w),
        model_found: !seg.polygons.is_empty(),
        baseline_found: !base_polygons.is_empty(),
    })
}

/// Accumulators of one method: all/hard, and the cloud, bubble and fibre subsets.
#[derive(Default)]
struct Split {
    all: ScoreAccumulator,
    cloud: ScoreAccumulator,
    bubble: ScoreAccumulator,
    fibre: ScoreAccumulator,
}

impl Split {
    fn push(&mut self, scores: PairScores, tags: Option<&SampleTags>) {
        self.all.push(scores, tags.is_some_and(SampleTags::is_hard));
        let Some(t) = tags else { return };
        for (on, acc) in [
            (t.cell_cloud, &mut self.cloud),
            (t.bubble, &mut self.bubble),
            (t.fibre, &mut self.fibre),
        ] {
            if on {
                acc.push(scores, true);
            }
        }
    }

    fn scores(&self) -> MethodScores {
        MethodScores {
            overall: self.all.overall(),
            hard: self.all.hard(),
            cloud: self.cloud.overall(),
            bubble: self.bubble.overall(),
            fibre: self.fibre.overall(),
        }
    }
}

fn report(rows: Vec<(String, Scored, Option<SampleTags>)>) -> EvalReport {
    let (mut model, mut baseline) = (Split::default(), Split::default());
    let mut images = Vec::with_capacity(rows.len());
    for (item, s, tags) in rows {
        model.push(s.model, tags.as_ref());
        baseline.push(s.baseline, tags.as_ref());
        images.push(ImageScore {
            item,
            model_iou: s.model.iou,
            baseline_iou: s.baseline.iou,
            tags,
        });
    }
    EvalReport {
        model: model.scores(),
        baseline: baseline.scores(),
        images,
    }
}

/// Scores every sample of `seeds` drawn by `draw`.
fn score_seeds(
    segmenter: &Segmenter,
    seeds: std::ops::Range<u64>,
    opts: &SegmentOptions,
    draw: impl Fn(u64) -> SynthSample + Sync,
) -> Result<Vec<(String, Scored, Option<SampleTags>)>, EvalError> {
    seeds
        .into_par_iter()
        .map(|seed| {
            let sample = draw(seed);
            score_pair(segmenter, &sample.image, &sample.mask, opts)
                .inspect(|s| {
                    tracing::debug!(seed, tags = ?sample.tags, model_iou = s.model.iou, baseline_iou = s.baseline.iou, "scored");
                })
                .map(|s| (seed.to_string(), s, Some(sample.tags)))
                .map_err(|source| EvalError::Segment {
                    item: format!("seed {seed}"),
                    source,
                })
        })
        .collect()
}

/// Evaluates on `count` images of `set` from seeds `first_seed..`; choose
/// seeds outside the training range ([`crate::train::TRAIN_DATA_SEED`]).
///
/// # Errors
/// [`EvalError::Segment`] naming the seed that failed.
pub fn evaluate_synthetic(
    segmenter: &Segmenter,
    set: SynthSet,
    first_seed: u64,
    count: usize,
    opts: &SegmentOptions,
) -> Result<EvalReport, EvalError> {
    let seeds = first_seed..first_seed + count as u64;
    Ok(report(score_seeds(segmenter, seeds, opts, |seed| {
        set.sample(seed)
    })?))
}

/// Counts, over `count` scenes of `set` without any spheroid (seeds `first_seed..`), the images where the
/// model and the baseline return a polygon, where the right answer is none.
///
/// # Errors
/// [`EvalError::Data`] for a set without such scenes (v1); [`EvalError::Segment`] naming the seed that failed.
pub fn evaluate_empty(
    segmenter: &Segmenter,
    set: SynthSet,
    first_seed: u64,
    count: usize,
    opts: &SegmentOptions,
) -> Result<EmptyReport, EvalError> {
    if set.empty_sample(first_seed).is_none() {
        return Err(EvalError::Data(format!(
            "set {set:?} has no scenes without spheroids"
        )));
    }
    let seeds = first_seed..first_seed + count as u64;
    let rows = score_seeds(segmenter, seeds, opts, |seed| {
        set.empty_sample(seed).unwrap_or_else(|| set.sample(seed))
    })?;
    Ok(EmptyReport {
        images: rows.len(),
        model_with_polygons: rows.iter().filter(|(_, s, _)| s.model_found).count(),
        baseline_with_polygons: rows.iter().filter(|(_, s, _)| s.baseline_found).count(),
    })
}

/// Evaluates on a folder holding `images/NAME.ext` and `masks/NAME.png`
/// (nonzero = spheroid). Every image counts as not hard (no tags are known).
///
/// # Errors
/// [`EvalError`] for unreadable files, size mismatches or an empty folder.
pub fn evaluate_folder(
    segmenter: &Segmenter,
    dir: &Path,
    opts: &SegmentOptions,
) -> Result<EvalReport, EvalError> {
    let limits = DecodeLimits::default();
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| EvalError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let images_dir = dir.join("images");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&images_dir)
        .map_err(|source| EvalError::Io {
            path: images_dir.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let mut rows = Vec::new();
    for image_path in entries {
        let stem = image_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mask_path = dir.join("masks").join(format!("{stem}.png"));
        let decode = |path: &Path, bytes: &[u8]| {
            decode_dynamic(bytes, &limits).map_err(|source| EvalError::Decode {
                path: path.to_owned(),
                source,
            })
        };
        let image = decode(&image_path, &read(&image_path)?)?;
        let truth = decode(&mask_path, &read(&mask_path)?)?.to_luma8();
        if truth.dimensions() != (image.width(), image.height()) {
            return Err(EvalError::Data(format!(
                "mask {} is {:?} but image is {}x{}",
                mask_path.display(),
                truth.dimensions(),
                image.width(),
                image.height()
            )));
        }
        let truth = GrayImage::from_raw(
            truth.width(),
            truth.height(),
            truth.iter().map(|&v| if v > 0 { 255 } else { 0 }).collect(),
        )
        .ok_or_else(|| EvalError::Data("mask buffer".into()))?;
        let s =
            score_pair(segmenter, &image, &truth, opts).map_err(|source| EvalError::Segment {
                item: image_path.display().to_string(),
                source,
            })?;
        rows.push((stem, s, None));
    }
    if rows.is_empty() {
        return Err(EvalError::Data(format!(
            "no images in {}",
            images_dir.display()
        )));
    }
    Ok(report(rows))
}
