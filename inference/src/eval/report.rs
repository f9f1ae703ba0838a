//! Evaluation runs: the model and the Otsu baseline through the same
//! post-processing (3x3 open/close, contour area limits), scored at the
//! original image resolution against ground truth: IoU, Dice and boundary F1.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage};
use rayon::prelude::*;

use super::{otsu_foreground, MeanScores, PairScores, ScoreAccumulator};
use crate::decode::{decode_dynamic, to_rgb8, DecodeError, DecodeLimits};
use crate::postprocess::Mask;
use crate::segment::{polygons_from_mask, SegmentError, SegmentOptions, Segmenter};
use crate::synth;

/// Scores of one method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodScores {
    /// All images.
    pub overall: MeanScores,
    /// Hard images (uneven illumination, halo, debris or touching spheroids).
    pub hard: MeanScores,
}

/// Model against baseline on one data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    /// The ResUNet.
    pub model: MethodScores,
    /// Otsu threshold + the same post-processing.
    pub baseline: MethodScores,
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

/// One image's scores: (model, baseline).
fn score_pair(
    segmenter: &Segmenter,
    image: &DynamicImage,
    truth: &GrayImage,
    opts: &SegmentOptions,
) -> Result<(PairScores, PairScores), SegmentError> {
    let seg = segmenter.segment_image(&to_rgb8(image), opts)?;
    let truth01: Vec<u8> = truth.as_raw().iter().map(|&v| u8::from(v > 127)).collect();
    let (w, h) = truth.dimensions();
    let otsu = otsu_foreground(image);
    let otsu_mask = Mask::from_vec(w, h, otsu.into_raw()).unwrap_or_else(|| Mask::new(w, h));
    let (base, _) = polygons_from_mask(&otsu_mask, opts);
    Ok((
        PairScores::of(seg.mask.as_slice(), &truth01, w),
        PairScores::of(base.as_slice(), &truth01, w),
    ))
}

fn report(rows: Vec<((PairScores, PairScores), bool)>) -> EvalReport {
    let mut model = ScoreAccumulator::new();
    let mut baseline = ScoreAccumulator::new();
    for ((m, b), hard) in rows {
        model.push(m, hard);
        baseline.push(b, hard);
    }
    EvalReport {
        model: MethodScores {
            overall: model.overall(),
            hard: model.hard(),
        },
        baseline: MethodScores {
            overall: baseline.overall(),
            hard: baseline.hard(),
        },
    }
}

/// Evaluates on `count` synthetic images from seeds `first_seed..`; choose
/// seeds outside the training range ([`crate::train::TRAIN_DATA_SEED`]).
///
/// # Errors
/// [`EvalError::Segment`] naming the seed that failed.
pub fn evaluate_synthetic(
    segmenter: &Segmenter,
    first_seed: u64,
    count: usize,
    opts: &SegmentOptions,
) -> Result<EvalReport, EvalError> {
    let rows = (first_seed..first_seed + count as u64)
        .into_par_iter()
        .map(|seed| {
            let sample = synth::generate(seed);
            score_pair(segmenter, &sample.image, &sample.mask, opts)
                .inspect(|s| {
                    tracing::debug!(seed, tags = ?sample.tags, model_iou = s.0.iou, baseline_iou = s.1.iou, "scored");
                })
                .map(|s| (s, sample.tags.is_hard()))
                .map_err(|source| EvalError::Segment {
                    item: format!("seed {seed}"),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(report(rows))
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
        rows.push((s, false));
    }
    if rows.is_empty() {
        return Err(EvalError::Data(format!(
            "no images in {}",
            images_dir.display()
        )));
    }
    Ok(report(rows))
}
