//! Hedged requests: when a forward is much later than expected, send a second copy elsewhere
//! and take whichever answers first (Dean and Barroso, "The Tail at Scale", CACM 56(2), 2013).
//!
//! Two rules keep hedging from adding load when the mesh is merely busy:
//! * the delay is derived from what the peer should take ([`hedge_delay`]): twice the expected
//!   completion the task was placed on, and at least [`HEDGE_MIN_SLACK`] more, so only a
//!   peer that has stalled, died or lost its link triggers one;
//! * a [`HedgeBudget`] shared by all tasks of a node allows hedges for at most
//!   [`HEDGE_RATIO`] of tasks, with a burst of [`HEDGE_BURST`] (the token bucket of gRPC's
//!   retry throttling and Envoy's retry budget, in the same spirit as Finagle's).
//!
//! A task is hedged at most once; the placement plan (`plan.rs`) enforces that.

use std::time::Duration;

/// Extra time a forward gets beyond its expected completion before it is hedged, whatever
/// the expectation: covers network jitter and a loaded machine.
pub const HEDGE_MIN_SLACK: Duration = Duration::from_millis(100);

/// Share of tasks that may be hedged, sustained.
pub const HEDGE_RATIO: f64 = 0.1;

/// Hedges allowed in a burst (a peer that stalls with several tasks in flight).
pub const HEDGE_BURST: f64 = 10.0;

/// How long to wait for `expected` (the expected completion when the task was sent) before
/// hedging: `max(2 × expected, expected + HEDGE_MIN_SLACK)`.
pub fn hedge_delay(expected: Duration) -> Duration {
    (expected * 2).max(expected + HEDGE_MIN_SLACK)
}

/// Tokens for hedges: each task placed adds [`HEDGE_RATIO`], each hedge takes one, at most
/// [`HEDGE_BURST`] are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct HedgeBudget {
    tokens: f64,
}

impl Default for HedgeBudget {
    fn default() -> Self {
        Self {
            tokens: HEDGE_BURST,
        }
    }
}

impl HedgeBudget {
    /// Records a placed task.
    pub fn on_task(&mut self) {
        self.tokens = (self.tokens + HEDGE_RATIO).min(HEDGE_BURST);
    }

    /// Whether a hedge may go now (without taking the token).
    pub fn can_hedge(&self) -> bool {
        self.tokens >= 1.0
    }

    /// Takes a token for a hedge; `false` (and nothing taken) when none is left.
    pub fn take(&mut self) -> bool {
        if self.can_hedge() {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn delay_is_twice_the_expectation_with_a_floor_of_slack() {
        let ms = Duration::from_millis;
        assert_eq!(hedge_delay(ms(20)), ms(120));
        assert_eq!(hedge_delay(ms(100)), ms(200));
        assert_eq!(hedge_delay(ms(400)), ms(800));
    }

    #[test]
    fn a_burst_then_one_hedge_per_ten_tasks() {
        let mut budget = HedgeBudget::default();
        let burst = (0..100).filter(|_| budget.take()).count();
        assert_eq!(burst, 10);
        let mut hedged = 0;
        for _ in 0..1_000 {
            budget.on_task();
            hedged += usize::from(budget.take());
        }
        assert!((99..=100).contains(&hedged), "{hedged}");
    }

    proptest! {
        #[test]
        fn hedges_never_exceed_burst_plus_ratio(ops in prop::collection::vec(any::<bool>(), 0..2_000)) {
            let mut budget = HedgeBudget::default();
            let (mut tasks, mut hedges) = (0u32, 0u32);
            for is_task in ops {
                if is_task {
                    budget.on_task();
                    tasks += 1;
                } else if budget.take() {
                    hedges += 1;
                }
            }
            prop_assert!(f64::from(hedges) <= HEDGE_BURST + HEDGE_RATIO * f64::from(tasks) + 1e-9);
        }
    }
}
