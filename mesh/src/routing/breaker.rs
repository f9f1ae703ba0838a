//! Per-peer circuit breaker: stop forwarding to a peer that keeps failing, then probe it.
//!
//! The classic three-state breaker (Nygard, "Release It!", 2007; the pattern behind
//! linkerd's failfast, linkerd/proxy/balance/queue/src/failfast.rs): `Closed` counts
//! consecutive failures; at [`BreakerConfig::failure_threshold`] it turns `Open` and refuses
//! tasks for [`BreakerConfig::open_for`]; then it is `HalfOpen` and lets exactly one probe
//! through, which closes it on success or reopens it on failure.
//!
//! Time is an argument, never read here, so tests step it by passing `Instant`s. A busy
//! answer is a healthy answer: report it with [`CircuitBreaker::on_success`].

use std::time::{Duration, Instant};

/// Settings for a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1; default 3).
    pub failure_threshold: u32,
    /// How long an open breaker refuses tasks before it allows a probe (default 2 s).
    ///
    /// Also how long a half-open breaker waits for its probe's answer before it allows
    /// another, so a probe whose outcome is never reported cannot shut the peer out forever.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            open_for: Duration::from_secs(2),
        }
    }
}

impl BreakerConfig {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`BreakerConfigError`] naming the broken rule.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        if self.failure_threshold == 0 {
            return Err(BreakerConfigError::ZeroFailureThreshold);
        }
        if self.open_for.is_zero() {
            return Err(BreakerConfigError::ZeroOpenFor);
        }
        Ok(())
    }
}

/// A [`BreakerConfig`] that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerConfigError {
    /// `failure_threshold` is 0, which would open the breaker before any failure.
    #[error("breaker failure_threshold must be at least 1, got 0")]
    ZeroFailureThreshold,
    /// `open_for` is zero, which would never keep a failing peer out.
    #[error("breaker open_for must be greater than zero")]
    ZeroOpenFor,
}

/// The state a breaker reports at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Tasks flow; failures are being counted.
    Closed,
    /// Tasks are refused until the open period ends.
    Open,
    /// One probe may go (or is out); its outcome closes or reopens the breaker.
    HalfOpen,
}

// `Probing { since }`: half-open with the probe sent at `since`. Half-open before the probe
// is `Open` with `until` passed, so `state` and `would_allow` need no `&mut`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    Probing { since: Instant },
}

/// A circuit breaker for one peer.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            config: BreakerConfig::default(),
            inner: Inner::Closed { failures: 0 },
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker with `config`.
    ///
    /// # Errors
    ///
    /// [`BreakerConfigError`] when `config` fails [`BreakerConfig::validate`].
    pub fn new(config: BreakerConfig) -> Result<Self, BreakerConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            inner: Inner::Closed { failures: 0 },
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now`; an open breaker whose period has ended reports `HalfOpen`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if now < until => BreakerState::Open,
            Inner::Open { .. } | Inner::Probing { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether [`allow`](Self::allow) would let a task through at `now`, without taking the
    /// probe. Use it to fill `PeerView::breaker_open`.
    pub fn would_allow(&self, now: Instant) -> bool {
        match self.inner {
            Inner::Closed { .. } => true,
            Inner::Open { until } => now >= until,
            Inner::Probing { since } => self.probe_expired(since, now),
        }
    }

    /// Asks to send one task at `now`; `true` means send it and report its outcome.
    ///
    /// When half-open, the first call takes the single probe and later calls get `false`
    /// until that probe is reported (or has gone unanswered for `open_for`).
    pub fn allow(&mut self, now: Instant) -> bool {
        let allowed = self.would_allow(now);
        if allowed && !matches!(self.inner, Inner::Closed { .. }) {
            self.inner = Inner::Probing { since: now };
        }
        allowed
    }

    /// Reports a task that got an answer (a result or busy): closes the breaker.
    ///
    /// While fully open it is ignored: a late answer to a task sent before the breaker
    /// opened does not reopen traffic; only the probe does.
    pub fn on_success(&mut self) {
        if !matches!(self.inner, Inner::Open { .. }) {
            self.inner = Inner::Closed { failures: 0 };
        }
    }

    /// Reports a task that failed at `now` (connection error, timeout, crash).
    pub fn on_failure(&mut self, now: Instant) {
        let open = Inner::Open {
            // Overflow is impossible for realistic instants; if it happened, probing at
            // once is the harmless fallback.
            until: now.checked_add(self.config.open_for).unwrap_or(now),
        };
        self.inner = match self.inner {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    open
                } else {
                    Inner::Closed { failures }
                }
            }
            // A late failure from before the breaker opened does not extend the period.
            Inner::Open { until } if now < until => Inner::Open { until },
            Inner::Open { .. } | Inner::Probing { .. } => open,
        };
    }

    fn probe_expired(&self, since: Instant, now: Instant) -> bool {
        now.checked_duration_since(since)
            .is_some_and(|waited| waited >= self.config.open_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn breaker() -> (CircuitBreaker, Instant) {
        (CircuitBreaker::default(), Instant::now())
    }

    #[test]
    fn default_config_is_valid() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn invalid_configs_name_the_rule() {
        let zero_threshold = BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        };
        assert!(matches!(
            CircuitBreaker::new(zero_threshold),
            Err(BreakerConfigError::ZeroFailureThreshold)
        ));
        let zero_open = BreakerConfig {
            open_for: Duration::ZERO,
            ..BreakerConfig::default()
        };
        assert_eq!(zero_open.validate(), Err(BreakerConfigError::ZeroOpenFor));
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let (mut b, t0) = breaker();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.allow(t0));
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.allow(t0 + 1999 * MS));
    }

    #[test]
    fn success_resets_the_count() {
        let (mut b, t0) = breaker();
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_success();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn half_open_allows_one_probe_then_closes_on_success() {
        let (mut b, t0) = breaker();
        (0..3).for_each(|_| b.on_failure(t0));
        let t1 = t0 + 2000 * MS;
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(b.would_allow(t1));
        assert!(b.allow(t1));
        assert!(!b.allow(t1));
        assert!(!b.would_allow(t1 + MS));
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        b.on_success();
        assert_eq!(b.state(t1), BreakerState::Closed);
        assert!(b.allow(t1) && b.allow(t1));
    }

    #[test]
    fn failed_probe_reopens_for_a_full_period() {
        let (mut b, t0) = breaker();
        (0..3).for_each(|_| b.on_failure(t0));
        let t1 = t0 + 2500 * MS;
        assert!(b.allow(t1));
        b.on_failure(t1);
        assert_eq!(b.state(t1 + 1999 * MS), BreakerState::Open);
        assert_eq!(b.state(t1 + 2000 * MS), BreakerState::HalfOpen);
    }

    #[test]
    fn unanswered_probe_expires() {
        let (mut b, t0) = breaker();
        (0..3).for_each(|_| b.on_failure(t0));
        let t1 = t0 + 2000 * MS;
        assert!(b.allow(t1));
        assert!(!b.allow(t1 + 1999 * MS));
        assert!(b.allow(t1 + 2000 * MS));
    }

    #[test]
    fn late_answers_while_open_change_nothing() {
        let (mut b, t0) = breaker();
        (0..3).for_each(|_| b.on_failure(t0));
        b.on_success();
        assert_eq!(b.state(t0 + MS), BreakerState::Open);
        b.on_failure(t0 + 1500 * MS);
        assert_eq!(b.state(t0 + 2000 * MS), BreakerState::HalfOpen);
    }

    #[test]
    fn threshold_one_opens_on_first_failure() {
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1,
            open_for: 10 * MS,
        })
        .expect("valid config");
        let t0 = Instant::now();
        b.on_failure(t0);
        assert!(!b.allow(t0 + 9 * MS));
        assert!(b.allow(t0 + 10 * MS));
    }
}
