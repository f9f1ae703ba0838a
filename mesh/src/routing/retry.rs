//! Retry budget for one task: may a forward that failed, or answered busy, go elsewhere?
//!
//! A task gets at most [`MAX_ATTEMPTS`] sends to peers (the forward plus one more), and a
//! further send only if the deadline still leaves room for the expected service time; a
//! retry that cannot finish in time only adds load. This is the per-request form of a retry
//! budget (tower/src/retry/budget; Google SRE book, "Handling Overload", 2016, caps retries
//! per request at a small number for the same reason: retries multiply load when the mesh
//! is already struggling).
//!
//! The budget lives on the node that received the task from the client; the second send is
//! made by that node, with `hops = 1` like the first, so a task still moves at most one hop.

use std::time::{Duration, Instant};

use super::load::NodeId;

/// Sends to peers allowed per task: one forward plus one retry.
pub const MAX_ATTEMPTS: u32 = 2;

/// Whether a task that has been sent `attempts_so_far` times may be sent once more at `now`.
///
/// True when `attempts_so_far < MAX_ATTEMPTS`, `now` is before `deadline`, and the time left
/// is at least `expected_service` (the target's service EWMA, or the default).
pub fn may_retry(
    attempts_so_far: u32,
    deadline: Instant,
    now: Instant,
    expected_service: Duration,
) -> bool {
    attempts_so_far < MAX_ATTEMPTS
        && deadline
            .checked_duration_since(now)
            .is_some_and(|left| !left.is_zero() && left >= expected_service)
}

/// Per-task record of sends to peers, with the task's deadline.
///
/// Record each send with [`record_attempt`](Self::record_attempt); before another, check
/// [`may_retry`](Self::may_retry) and drop peers already [tried](Self::has_tried) from the
/// views passed to `choose`, so a retry goes elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryBudget {
    deadline: Instant,
    tried: Vec<NodeId>,
}

impl RetryBudget {
    /// A budget with no sends yet, for a task due at `deadline`.
    pub fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            tried: Vec::with_capacity(MAX_ATTEMPTS as usize),
        }
    }

    /// The task's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sends recorded so far.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.tried.len()).unwrap_or(u32::MAX)
    }

    /// Records a send to `peer`.
    pub fn record_attempt(&mut self, peer: NodeId) {
        self.tried.push(peer);
    }

    /// Whether `peer` has been sent this task already.
    pub fn has_tried(&self, peer: &NodeId) -> bool {
        self.tried.contains(peer)
    }

    /// Whether one more send may go at `now`; see the free function [`may_retry`].
    pub fn may_retry(&self, now: Instant, expected_service: Duration) -> bool {
        may_retry(self.attempts(), self.deadline, now, expected_service)
    }

    /// Time left before the deadline at `now` (zero once it has passed): the timeout for
    /// the next send.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_retry_after_the_first_forward() {
        let now = Instant::now();
        let deadline = now + 1000 * MS;
        assert!(may_retry(1, deadline, now, 100 * MS));
        assert!(!may_retry(2, deadline, now, 100 * MS));
        assert!(!may_retry(u32::MAX, deadline, now, 100 * MS));
    }

    #[test]
    fn needs_the_expected_service_time_before_the_deadline() {
        let now = Instant::now();
        let deadline = now + 100 * MS;
        assert!(may_retry(1, deadline, now, 100 * MS));
        assert!(!may_retry(1, deadline, now, 101 * MS));
        assert!(!may_retry(1, deadline, now + MS, 100 * MS));
    }

    #[test]
    fn never_at_or_past_the_deadline() {
        let now = Instant::now();
        assert!(!may_retry(1, now, now, Duration::ZERO));
        assert!(!may_retry(1, now, now + MS, Duration::ZERO));
    }

    #[test]
    fn budget_tracks_peers_and_attempts() {
        let now = Instant::now();
        let mut budget = RetryBudget::new(now + 1000 * MS);
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        assert_eq!(budget.attempts(), 0);
        budget.record_attempt(a.clone());
        assert!(budget.has_tried(&a) && !budget.has_tried(&b));
        assert!(budget.may_retry(now, 200 * MS));
        budget.record_attempt(b.clone());
        assert_eq!(budget.attempts(), 2);
        assert!(!budget.may_retry(now, Duration::ZERO));
    }

    #[test]
    fn remaining_saturates_at_zero() {
        let now = Instant::now();
        let budget = RetryBudget::new(now + 50 * MS);
        assert_eq!(budget.remaining(now), 50 * MS);
        assert_eq!(budget.remaining(now + 80 * MS), Duration::ZERO);
    }
}
