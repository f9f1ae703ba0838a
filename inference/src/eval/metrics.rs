//! Overlap metrics for binary masks: intersection over union (Jaccard index) and the Dice-Sørensen coefficient,
//! with running means overall and on the easy and hard subsets.
//!
//! Both treat any nonzero byte as foreground. When prediction and truth are both empty they agree perfectly, so
//! the score is 1.0 (the convention of most segmentation benchmarks; 0/0 would otherwise be undefined).

/// Foreground intersection and the two foreground sizes.
fn counts(pred: &[u8], truth: &[u8]) -> (u64, u64, u64) {
    assert_eq!(
        pred.len(),
        truth.len(),
        "mask sizes differ: prediction {} vs truth {}",
        pred.len(),
        truth.len()
    );
    let (mut inter, mut p, mut t) = (0u64, 0u64, 0u64);
    for (&a, &b) in pred.iter().zip(truth) {
        let (a, b) = (u64::from(a != 0), u64::from(b != 0));
        inter += a & b;
        p += a;
        t += b;
    }
    (inter, p, t)
}

/// Intersection over union of two binary masks of equal length; 1.0 when both are empty.
///
/// # Panics
///
/// When the slices have different lengths.
pub fn iou(pred: &[u8], truth: &[u8]) -> f64 {
    let (inter, p, t) = counts(pred, truth);
    let union = p + t - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Dice coefficient 2|A∩B| / (|A| + |B|) of two binary masks of equal length; 1.0 when both are empty.
///
/// # Panics
///
/// When the slices have different lengths.
pub fn dice(pred: &[u8], truth: &[u8]) -> f64 {
    let (inter, p, t) = counts(pred, truth);
    if p + t == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (p + t) as f64
    }
}

/// Tolerance of the boundary score, in pixels.
pub const BOUNDARY_TOLERANCE_PX: u32 = 2;

/// The scores of one prediction against its truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScores {
    /// Intersection over union.
    pub iou: f64,
    /// Dice coefficient.
    pub dice: f64,
    /// Boundary F1 at [`BOUNDARY_TOLERANCE_PX`] ([`super::boundary_f1`]).
    pub boundary_f1: f64,
}

impl PairScores {
    /// Scores row-major masks of `width` pixels per row (nonzero is foreground).
    ///
    /// # Panics
    ///
    /// When the slices have different lengths or `width` does not divide them.
    pub fn of(pred: &[u8], truth: &[u8], width: u32) -> Self {
        Self {
            iou: iou(pred, truth),
            dice: dice(pred, truth),
            boundary_f1: super::boundary_f1(pred, truth, width, BOUNDARY_TOLERANCE_PX),
        }
    }
}

/// Mean scores over a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanScores {
    /// Mean intersection over union; 0 when `count` is 0.
    pub iou: f64,
    /// Mean Dice coefficient; 0 when `count` is 0.
    pub dice: f64,
    /// Mean boundary F1 at [`BOUNDARY_TOLERANCE_PX`]; 0 when `count` is 0.
    pub boundary_f1: f64,
    /// Number of samples averaged.
    pub count: usize,
}

/// Running sums behind one [`MeanScores`].
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    iou: f64,
    dice: f64,
    boundary_f1: f64,
    count: usize,
}

impl Sums {
    fn add(&mut self, s: PairScores) {
        self.iou += s.iou;
        self.dice += s.dice;
        self.boundary_f1 += s.boundary_f1;
        self.count += 1;
    }

    fn mean(&self) -> MeanScores {
        if self.count == 0 {
            return MeanScores::default();
        }
        let n = self.count as f64;
        MeanScores {
            iou: self.iou / n,
            dice: self.dice / n,
            boundary_f1: self.boundary_f1 / n,
            count: self.count,
        }
    }
}

/// Accumulates per-sample scores into means overall, on hard samples and on easy samples.
#[derive(Debug, Clone, Default)]
pub struct ScoreAccumulator {
    all: Sums,
    hard: Sums,
    easy: Sums,
}

impl ScoreAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample's scores.
    pub fn push(&mut self, scores: PairScores, hard: bool) {
        self.all.add(scores);
        if hard {
            self.hard.add(scores);
        } else {
            self.easy.add(scores);
        }
    }

    /// Means over every recorded sample.
    pub fn overall(&self) -> MeanScores {
        self.all.mean()
    }

    /// Means over the samples recorded as hard.
    pub fn hard(&self) -> MeanScores {
        self.hard.mean()
    }

    /// Means over the samples recorded as easy.
    pub fn easy(&self) -> MeanScores {
        self.easy.mean()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Dice is a monotone function of IoU, D = 2J / (1 + J), and both are symmetric and in [0, 1].
        #[test]
        fn dice_follows_iou(pairs in prop::collection::vec((0u8..3, 0u8..3), 0..64)) {
            let (a, b): (Vec<u8>, Vec<u8>) = pairs.into_iter().unzip();
            let (j, d) = (iou(&a, &b), dice(&a, &b));
            prop_assert!((0.0..=1.0).contains(&j) && (0.0..=1.0).contains(&d));
            prop_assert!((d - 2.0 * j / (1.0 + j)).abs() < 1e-12);
            prop_assert_eq!(j, iou(&b, &a));
        }
    }

    #[test]
    fn known_values() {
        let truth = [255, 255, 255, 255, 0, 0, 0, 0];
        let pred = [1, 1, 0, 0, 7, 0, 0, 0];
        // |A∩B| = 2, |A| = 3, |B| = 4, |A∪B| = 5.
        assert!((iou(&pred, &truth) - 0.4).abs() < 1e-12);
        assert!((dice(&pred, &truth) - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(iou(&truth, &truth), 1.0);
        assert_eq!(dice(&[0, 0], &[255, 255]), 0.0);
    }

    #[test]
    fn empty_vs_empty_is_perfect() {
        assert_eq!(iou(&[0; 4], &[0; 4]), 1.0);
        assert_eq!(dice(&[0; 4], &[0; 4]), 1.0);
        assert_eq!(iou(&[], &[]), 1.0);
    }

    #[test]
    #[should_panic(expected = "mask sizes differ")]
    fn length_mismatch_panics() {
        iou(&[0; 3], &[0; 4]);
    }

    #[test]
    fn accumulator_splits_hard_and_easy() {
        let mut acc = ScoreAccumulator::new();
        acc.push(PairScores::of(&[255, 0], &[255, 0], 2), false);
        acc.push(PairScores::of(&[255, 0], &[0, 255], 2), true);
        acc.push(
            PairScores {
                iou: 0.5,
                dice: 0.6,
                boundary_f1: 0.8,
            },
            true,
        );
        assert_eq!(acc.overall().count, 3);
        assert_eq!(acc.easy().iou, 1.0);
        assert!((acc.hard().iou - 0.25).abs() < 1e-12);
        assert!((acc.hard().dice - 0.3).abs() < 1e-12);
        // Neighbouring one-pixel objects: each boundary is within tolerance of the other (1.0).
        assert!((acc.hard().boundary_f1 - 0.9).abs() < 1e-12);
        assert_eq!(ScoreAccumulator::new().overall(), MeanScores::default());
    }
}
