//! Open-loop arrival schedules: when each request is due, relative to the start
//! of the phase.
//!
//! A Poisson process of rate λ has independent exponential gaps, drawn here by
//! inversion, `-ln(1 - U) / λ` with `U` uniform in [0, 1) (Devroye, "Non-Uniform
//! Random Variate Generation", 1986, ch. 2). The schedule is computed up front
//! from a seed, so two runs with the same seed offer the same load, and the
//! sender never decides when to send based on how the server is doing (the
//! coordinated-omission trap that closed-loop tools fall into).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How open-loop arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Process {
    /// Exponential gaps (a Poisson process), reproducible from `seed`.
    Poisson {
        /// Seed of the gap generator.
        seed: u64,
    },
    /// The same gap, `1 / rate`, between all arrivals.
    Fixed,
}

/// Offsets from the phase start of `n` arrivals at `rate` per second.
/// The first arrival is at 0 for [`Process::Fixed`] and after one gap for
/// [`Process::Poisson`]. `rate` must be positive and finite (validated by the
/// config); offsets never decrease.
pub(crate) fn offsets(process: Process, rate: f64, n: usize) -> Vec<Duration> {
    match process {
        Process::Fixed => (0..n)
            .map(|i| Duration::from_secs_f64(i as f64 / rate))
            .collect(),
        Process::Poisson { seed } => {
            // StdRng is reproducible for a given `rand` version, which is what a
            // benchmark re-run needs; it is not promised across `rand` upgrades.
            let mut rng = StdRng::seed_from_u64(seed);
            let mut t = 0.0f64;
            (0..n)
                .map(|_| {
                    let u: f64 = rng.gen();
                    t += -(1.0 - u).ln() / rate;
                    Duration::from_secs_f64(t)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_arrivals_are_evenly_spaced() {
        let o = offsets(Process::Fixed, 4.0, 3);
        assert_eq!(o, [0, 250, 500].map(Duration::from_millis));
    }

    #[test]
    fn poisson_arrivals_are_seeded_increasing_and_have_the_right_rate() {
        let a = offsets(Process::Poisson { seed: 7 }, 50.0, 20_000);
        assert_eq!(a, offsets(Process::Poisson { seed: 7 }, 50.0, 20_000));
        assert_ne!(a, offsets(Process::Poisson { seed: 8 }, 50.0, 20_000));
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        // 20 000 arrivals at 50/s take ~400 s; the sample mean gap is within a few
        // standard errors (1/sqrt(n) ~ 0.7 %) of 1/rate.
        let mean_gap = a[a.len() - 1].as_secs_f64() / a.len() as f64;
        assert!((mean_gap - 0.02).abs() < 0.02 * 0.03, "mean gap {mean_gap}");
    }
}
