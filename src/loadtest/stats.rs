//! The numbers a load test reports, computed from the recorded samples: exact
//! nearest-rank percentiles (Hyndman & Fan, "Sample quantiles in statistical
//! packages", The American Statistician 1996, definition 1), error counts by kind
//! and each node's share of the completed work.
//!
//! Everything here is pure: no clock, no IO, so the command's numbers are the
//! numbers these tests check.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// The `p`-th percentile (0..=100) of `sorted` by the nearest-rank method: the
/// smallest sample such that at least `p` % of the samples are less than or equal
/// to it. Always one of the samples, never an interpolation.
///
/// Returns `None` for an empty slice. `p` outside 0..=100 is clamped.
/// `sorted` must be sorted ascending (debug-asserted).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    debug_assert!(
        sorted.windows(2).all(|w| w[0] <= w[1]),
        "samples not sorted"
    );
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    // rank = ceil(p/100 * n), at least 1. Computed in f64: exact for any n a load
    // test can record (far below 2^52).
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let index = rank.clamp(1, n) - 1;
    Some(sorted[index])
}

/// Summary of a set of durations, in milliseconds, as the report prints it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median (nearest rank).
    pub p50_ms: f64,
    /// 95th percentile (nearest rank).
    pub p95_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summarises `samples` (any order; sorted here). `None` when there are none,
    /// so a run without a single success prints no made-up zeros.
    pub(crate) fn from_samples(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort_unstable();
        let count = samples.len();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let pct = |p: f64| percentile(&samples, p).map(ms);
        let total: Duration = samples.iter().sum();
        Some(Self {
            count,
            min_ms: ms(*samples.first()?),
            mean_ms: ms(total) / count as f64,
            p50_ms: pct(50.0)?,
            p95_ms: pct(95.0)?,
            p99_ms: pct(99.0)?,
            max_ms: ms(*samples.last()?),
        })
    }
}

/// How often each value occurs: error kinds (`busy`, `http_502`, `connect`, ...) or node ids,
/// sorted so the output is stable.
pub(crate) fn tally<'a>(kinds: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for kind in kinds {
        *counts.entry(kind.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// One node's part of the completed work.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Share {
    /// Tasks this node ran (its id was the answer's `processed_by`).
    pub tasks: u64,
    /// `tasks` divided by all completed tasks, 0..=1.
    pub share: f64,
}

/// Each node's share of the completed tasks, keyed by `processed_by`. The shares
/// add up to 1 (up to rounding) whenever at least one task completed.
pub(crate) fn shares<'a>(
    processed_by: impl IntoIterator<Item = &'a str>,
) -> BTreeMap<String, Share> {
    let counts = tally(processed_by);
    let total: u64 = counts.values().sum();
    counts
        .into_iter()
        .map(|(node, tasks)| {
            let share = if total == 0 {
                0.0
            } else {
                tasks as f64 / total as f64
            };
            (node, Share { tasks, share })
        })
        .collect()
}

/// Completed tasks per minute over `wall`; 0 when no time passed.
pub(crate) fn per_minute(completed: u64, wall: Duration) -> f64 {
    let secs = wall.as_secs_f64();
    if secs > 0.0 {
        completed as f64 * 60.0 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_matches_the_textbook_example() {
        // Wikipedia's "Percentile" nearest-rank example: 15, 20, 35, 40, 50.
        let s = ms(&[15, 20, 35, 40, 50]);
        let at = |p| percentile(&s, p).map(|d| d.as_millis());
        assert_eq!(at(5.0), Some(15));
        assert_eq!(at(30.0), Some(20));
        assert_eq!(at(40.0), Some(20));
        assert_eq!(at(50.0), Some(35));
        assert_eq!(at(100.0), Some(50));
        assert_eq!(at(0.0), Some(15));
    }

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(LatencySummary::from_samples(Vec::new()), None);
    }

    #[test]
    fn p99_of_a_hundred_samples_is_the_99th() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&s, 95.0), Some(Duration::from_millis(95)));
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(50)));
    }

    #[test]
    fn summary_sorts_and_averages() {
        let sum = LatencySummary::from_samples(ms(&[30, 10, 20])).expect("three samples");
        assert_eq!(sum.count, 3);
        assert_eq!(sum.min_ms, 10.0);
        assert_eq!(sum.max_ms, 30.0);
        assert!((sum.mean_ms - 20.0).abs() < 1e-9);
        assert_eq!(sum.p50_ms, 20.0);
        assert_eq!(sum.p99_ms, 30.0);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let counts = tally(["busy", "connect", "busy", "http_502"]);
        let expected: BTreeMap<String, u64> = [("busy", 2), ("connect", 1), ("http_502", 1)]
            .map(|(k, v)| (k.to_owned(), v))
            .into();
        assert_eq!(counts, expected);
    }

    #[test]
    fn shares_split_the_work() {
        let s = shares(["a", "b", "a", "a"]);
        assert_eq!(
            s["a"],
            Share {
                tasks: 3,
                share: 0.75
            }
        );
        assert_eq!(
            s["b"],
            Share {
                tasks: 1,
                share: 0.25
            }
        );
        assert!(shares(std::iter::empty()).is_empty());
    }

    #[test]
    fn per_minute_scales_and_guards_zero() {
        assert_eq!(per_minute(30, Duration::from_secs(30)), 60.0);
        assert_eq!(per_minute(5, Duration::ZERO), 0.0);
    }

    proptest! {
        #[test]
        fn percentiles_are_monotone_samples(
            mut v in prop::collection::vec(0u64..10_000_000, 1..300),
            a in 0.0f64..=100.0,
            b in 0.0f64..=100.0,
        ) {
            v.sort_unstable();
            let s: Vec<Duration> = v.iter().map(|&us| Duration::from_micros(us)).collect();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (plo, phi) = (percentile(&s, lo).unwrap(), percentile(&s, hi).unwrap());
            prop_assert!(plo <= phi);
            prop_assert!(s.contains(&plo) && s.contains(&phi));
            // At least p % of the samples are <= the p-th percentile.
            let below = s.iter().filter(|&&x| x <= phi).count() as f64;
            prop_assert!(below / s.len() as f64 * 100.0 >= hi - 1e-9);
        }

        #[test]
        fn summary_is_ordered(v in prop::collection::vec(0u64..10_000_000, 1..300)) {
            let s: Vec<Duration> = v.iter().map(|&us| Duration::from_micros(us)).collect();
            let sum = LatencySummary::from_samples(s).unwrap();
            prop_assert!(sum.min_ms <= sum.p50_ms);
            prop_assert!(sum.p50_ms <= sum.p95_ms);
            prop_assert!(sum.p95_ms <= sum.p99_ms);
            prop_assert!(sum.p99_ms <= sum.max_ms);
            prop_assert!(sum.min_ms <= sum.mean_ms + 1e-9 && sum.mean_ms <= sum.max_ms + 1e-9);
        }

        #[test]
        fn shares_add_up_to_one(v in prop::collection::vec(0u8..5, 1..200)) {
            let names: Vec<String> = v.iter().map(|n| format!("node-{n}")).collect();
            let s = shares(names.iter().map(String::as_str));
            let total: f64 = s.values().map(|x| x.share).sum();
            let tasks: u64 = s.values().map(|x| x.tasks).sum();
            prop_assert!((total - 1.0).abs() < 1e-9);
            prop_assert_eq!(tasks, v.len() as u64);
        }
    }
}
