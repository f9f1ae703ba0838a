//! Evaluation: overlap and boundary metrics for binary masks and the classical Otsu baseline the
//! model must beat.
//!
//! ```
//! # use spheromesh_inference::eval;
//! let truth = [255u8, 255, 0, 0];
//! let pred = [255u8, 0, 0, 0];
//! assert_eq!(eval::iou(&pred, &truth), 0.5);
//! let mut scores = eval::ScoreAccumulator::new();
//! scores.push(eval::PairScores::of(&pred, &truth, 4), false);
//! assert_eq!(scores.easy().count, 1);
//! ```

#[cfg(test)]
mod baseline_tests;
mod boundary;
mod gallery;
mod metrics;
mod otsu;
mod report;
pub mod shift;

pub use boundary::boundary_f1;
pub use gallery::comparison;
pub use metrics::{dice, iou, MeanScores, PairScores, ScoreAccumulator, BOUNDARY_TOLERANCE_PX};
pub use otsu::{otsu_foreground, otsu_threshold, to_grey8};
pub use report::{
    evaluate_empty, evaluate_folder, evaluate_synthetic, EmptyReport, EvalError, EvalReport,
    ImageScore, MethodScores, SynthSet,
};
