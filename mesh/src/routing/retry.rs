//! Retry rule for one task: may a forward that failed, answered busy, or is late go
//! elsewhere?
//!
//! A task gets at most [`MAX_ATTEMPTS`] sends to peers (the first, a retry and a hedge, or
//! two retries), and a further send only if the deadline still leaves room for the expected
//! completion there; a retry that cannot finish in time only adds load. This is the
//! per-request form of a retry budget (tower/src/retry/budget; Google SRE book, "Handling
//! Overload", 2016, caps retries per request at a small number for the same reason: retries
//! multiply load when the mesh is already struggling).
//!
//! The rule is applied by the task's `Plan` on the node that received the task from the
//! client; every send is made by that node, with `hops = 1` like the first, so a task still
//! moves at most one hop.

use std::time::{Duration, Instant};

/// Sends to peers allowed per task.
pub const MAX_ATTEMPTS: u32 = 3;

/// Whether a task that has been sent `attempts_so_far` times may be sent once more at `now`.
///
/// True when `attempts_so_far < MAX_ATTEMPTS`, `now` is before `deadline`, and the time left
/// is at least `expected` (the target's expected completion). The first send
/// (`attempts_so_far == 0`) needs only time left.
pub fn may_retry(
    attempts_so_far: u32,
    deadline: Instant,
    now: Instant,
    expected: Duration,
) -> bool {
    let left = deadline.checked_duration_since(now).unwrap_or_default();
    attempts_so_far < MAX_ATTEMPTS && !left.is_zero() && (attempts_so_far == 0 || left >= expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn at_most_max_attempts_sends() {
        let now = Instant::now();
        let deadline = now + 1000 * MS;
        assert!(may_retry(1, deadline, now, 100 * MS));
        assert!(may_retry(2, deadline, now, 100 * MS));
        assert!(!may_retry(3, deadline, now, 100 * MS));
        assert!(!may_retry(u32::MAX, deadline, now, 100 * MS));
    }

    #[test]
    fn a_retry_needs_the_expected_completion_before_the_deadline() {
        let now = Instant::now();
        let deadline = now + 100 * MS;
        assert!(may_retry(1, deadline, now, 100 * MS));
        assert!(!may_retry(1, deadline, now, 101 * MS));
        assert!(!may_retry(1, deadline, now + MS, 100 * MS));
        // The first send goes whenever time is left.
        assert!(may_retry(0, deadline, now, 500 * MS));
    }

    #[test]
    fn never_at_or_past_the_deadline() {
        let now = Instant::now();
        assert!(!may_retry(0, now, now, Duration::ZERO));
        assert!(!may_retry(1, now, now, Duration::ZERO));
        assert!(!may_retry(1, now, now + MS, Duration::ZERO));
    }
}
