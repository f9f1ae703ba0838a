//! Capped exponential backoff with "full jitter" (AWS Architecture Blog, "Exponential
//! Backoff And Jitter", 2015): attempt `n` waits a uniform random time in
//! `[0, min(max, base * 2^n)]`, so that many nodes retrying the same broker or backend do
//! not retry in lock step.

use std::time::Duration;

use rand::Rng;

/// A capped exponential backoff schedule.
///
/// Built with [`Backoff::new`], which checks that `base` is not zero and not above `max`
/// (the rule is written in [`InvalidBackoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

/// A [`Backoff`] whose bounds make no schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid backoff: base {base:?} must be > 0 and <= max {max:?}")]
pub struct InvalidBackoff {
    /// The first delay asked for.
    pub base: Duration,
    /// The cap asked for.
    pub max: Duration,
}

impl Backoff {
    /// A schedule starting at `base` and doubling up to `max`.
    ///
    /// # Errors
    /// [`InvalidBackoff`] when `base` is zero or larger than `max`.
    pub fn new(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if base.is_zero() || base > max {
            return Err(InvalidBackoff { base, max });
        }
        Ok(Self { base, max })
    }

    /// Like [`Backoff::new`] for constants known to be valid (`0 < base <= max`).
    pub(crate) const fn new_unchecked(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The ceiling of attempt `attempt` (0-based): `min(max, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // 2^20 * any sane base is far above any sane max; clamping the exponent keeps the
        // multiplication from overflowing.
        let factor = 1u32 << attempt.min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `attempt` (0-based), drawn uniformly in
    /// `[ceiling/2, ceiling]` from `rng`.
    ///
    /// "Full" jitter would draw from `[0, ceiling]`; the lower half is cut off so that a
    /// retry never comes back almost at once after a failure (a broker that just refused
    /// us gets at least `base/2` of quiet).
    pub fn delay<G: Rng + ?Sized>(&self, attempt: u32, rng: &mut G) -> Duration {
        let ceiling = self.ceiling(attempt);
        let low = ceiling / 2;
        let span = ceiling.saturating_sub(low).as_nanos() as u64;
        low + Duration::from_nanos(if span == 0 {
            0
        } else {
            rng.gen_range(0..=span)
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rejects_zero_base_and_base_above_max() {
        assert!(matches!(
            Backoff::new(Duration::ZERO, MS),
            Err(InvalidBackoff { .. })
        ));
        assert!(matches!(
            Backoff::new(10 * MS, MS),
            Err(InvalidBackoff { .. })
        ));
        assert!(Backoff::new(MS, MS).is_ok());
    }

    #[test]
    fn ceiling_doubles_then_caps_without_overflow() {
        let b = Backoff::new(100 * MS, 1000 * MS).expect("valid");
        assert_eq!(b.ceiling(0), 100 * MS);
        assert_eq!(b.ceiling(1), 200 * MS);
        assert_eq!(b.ceiling(3), 800 * MS);
        assert_eq!(b.ceiling(4), 1000 * MS);
        assert_eq!(b.ceiling(u32::MAX), 1000 * MS);
    }

    #[test]
    fn delay_stays_within_half_ceiling_and_ceiling_and_varies() {
        let b = Backoff::new(100 * MS, 5000 * MS).expect("valid");
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..12 {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..50 {
                let d = b.delay(attempt, &mut rng);
                assert!(
                    d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt),
                    "{d:?}"
                );
                seen.insert(d);
            }
            assert!(seen.len() > 1, "jitter must vary the delay");
        }
    }
}
