//! Load model: what this node knows about itself and each peer, and the score that
//! power-of-two-choices compares.
//!
//! The score is an estimate of how long a new task would take to finish on a node:
//!
//! ```text
//! score = (outstanding + 1) / capacity × service
//! ```
//!
//! * `outstanding`: for a peer, the gossiped `active` (running + queued) **plus**
//!   `local_inflight`, the tasks this node has forwarded to it since the peer's last gossip
//!   report and not yet seen answered (forwards older than the report are already in its
//!   `active`; counting them again made a single entry node queue work locally while its
//!   peers had free slots); for this node, its own `active`.
//! * `+ 1`: the task being placed, so an idle node still costs one service time.
//! * `capacity`: parallel slots; dividing by it spreads the queue over the slots.
//! * `service`: the gossiped service-time EWMA (mean time per task), or `default_service`
//!   when the node has not measured one yet, floored at [`MIN_SERVICE`].
//!
//! The result is in seconds. Because the score is linear in `service`, a node whose tasks
//! take a quarter of the time reaches the same score with about four times as many
//! tasks outstanding, so at equal queues it receives about four times the work.
//!
//! Gossip refreshes `active` only every 100–500 ms, so between rounds it is stale; adding
//! `local_inflight` is the correction, as tower's `PendingRequests`
//! (tower/src/load/pending_requests.rs) counts requests in flight and
//! `PeakEwma` (tower/src/load/peak_ewma.rs) weights them by latency. The report time is
//! known only to within a round (the heartbeat that carried it), so a task sent just before
//! a report may be counted twice for one round; that errs towards spreading load, the safe
//! side for a balancer.

use std::fmt;
use std::time::Duration;

/// Smallest service time used in a score.
///
/// A node that gossips a zero EWMA would otherwise score zero at any queue depth and
/// attract every task; the floor keeps queue depth meaningful between such nodes.
pub const MIN_SERVICE: Duration = Duration::from_micros(1);

/// Identity of a mesh node, as gossiped by membership.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// Wraps a node identity.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The identity as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for NodeId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// This node's view of one peer: gossiped state plus what only this node knows.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    /// The peer's identity.
    pub id: NodeId,
    /// The peer has a loaded model and accepts tasks (gossiped).
    pub ready: bool,
    /// The peer is shutting down and takes no new tasks (gossiped).
    pub draining: bool,
    /// Tasks running plus queued on the peer at its last gossip round.
    pub active: u32,
    /// Tasks the peer runs in parallel (slots).
    pub capacity: u32,
    /// Tasks the peer will queue beyond `capacity` before answering busy.
    pub queue_limit: u32,
    /// The peer's gossiped mean task time; `None` until it has measured one.
    pub service_ewma: Option<Duration>,
    /// Tasks this node has forwarded to the peer since its last gossip report and not yet
    /// seen answered.
    pub local_inflight: u32,
    /// This node's circuit breaker for the peer refuses new tasks.
    pub breaker_open: bool,
}

impl PeerView {
    /// Tasks believed outstanding on the peer: gossiped `active` plus `local_inflight`.
    pub fn outstanding(&self) -> u64 {
        u64::from(self.active) + u64::from(self.local_inflight)
    }

    /// The peer has a slot or queue room left, counting this node's in-flight tasks.
    pub fn has_room(&self) -> bool {
        self.capacity > 0
            && self.outstanding() < u64::from(self.capacity) + u64::from(self.queue_limit)
    }

    /// The peer may receive a task: ready, not draining, breaker closed and room left.
    pub fn is_candidate(&self) -> bool {
        self.ready && !self.draining && !self.breaker_open && self.has_room()
    }
}

/// This node's own load, in the same terms as a [`PeerView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalView {
    /// Tasks running plus queued here.
    pub active: u32,
    /// Tasks this node runs in parallel (slots).
    pub capacity: u32,
    /// Tasks this node will queue beyond `capacity`.
    pub queue_limit: u32,
    /// This node's mean task time; `None` until it has measured one.
    pub service_ewma: Option<Duration>,
}

impl LocalView {
    /// A slot is free now: the task would start without queueing.
    pub fn has_free_slot(&self) -> bool {
        self.active < self.capacity
    }

    /// The task fits here, in a free slot or in the queue.
    pub fn has_room(&self) -> bool {
        self.capacity > 0
            && u64::from(self.active) < u64::from(self.capacity) + u64::from(self.queue_limit)
    }

    /// This node's score, comparable with [`score`] of a peer.
    pub fn score(&self, default_service: Duration) -> f64 {
        expected_wait(
            u64::from(self.active),
            self.capacity,
            self.service_ewma.unwrap_or(default_service),
        )
    }
}

/// Expected seconds until a new task placed on `peer` would finish (lower is better).
///
/// `(active + local_inflight + 1) / capacity × service_ewma`, with `default_service` standing
/// in for a missing EWMA and the service time floored at [`MIN_SERVICE`]. Linear in the
/// service time, so a peer 4x faster matches a slow one at 4x the queue. A peer with no
/// capacity scores `f64::INFINITY`; the result is never NaN.
pub fn score(peer: &PeerView, default_service: Duration) -> f64 {
    expected_wait(
        peer.outstanding(),
        peer.capacity,
        peer.service_ewma.unwrap_or(default_service),
    )
}

fn expected_wait(outstanding: u64, capacity: u32, service: Duration) -> f64 {
    if capacity == 0 {
        return f64::INFINITY;
    }
    // u64 -> f64 rounds above 2^53, far beyond any real queue.
    (outstanding as f64 + 1.0) / f64::from(capacity) * service.max(MIN_SERVICE).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(active: u32, capacity: u32, ms: Option<u64>) -> PeerView {
        PeerView {
            id: NodeId::new("p"),
            ready: true,
            draining: false,
            active,
            capacity,
            queue_limit: 4,
            service_ewma: ms.map(Duration::from_millis),
            local_inflight: 0,
            breaker_open: false,
        }
    }

    const DEFAULT: Duration = Duration::from_millis(100);

    #[test]
    fn score_follows_formula() {
        // (3 + 1) / 2 × 0.5 s
        let p = peer(3, 2, Some(500));
        assert!((score(&p, DEFAULT) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn local_inflight_adds_to_gossiped_load() {
        let mut p = peer(1, 1, Some(100));
        let before = score(&p, DEFAULT);
        p.local_inflight = 2;
        // (1 + 1) -> (1 + 2 + 1) outstanding-plus-one: twice the score.
        assert!((score(&p, DEFAULT) - 2.0 * before).abs() < 1e-12);
    }

    #[test]
    fn four_times_faster_matches_at_four_times_the_queue() {
        let slow = peer(0, 1, Some(400));
        let fast = peer(3, 1, Some(100));
        assert!((score(&slow, DEFAULT) - score(&fast, DEFAULT)).abs() < 1e-12);
    }

    #[test]
    fn missing_ewma_uses_default_and_zero_ewma_is_floored() {
        assert_eq!(score(&peer(0, 1, None), DEFAULT), DEFAULT.as_secs_f64());
        let zero = peer(5, 1, Some(0));
        assert!(score(&zero, DEFAULT) > score(&peer(0, 1, Some(0)), DEFAULT));
    }

    #[test]
    fn zero_capacity_scores_infinite_and_has_no_room() {
        let p = peer(0, 0, Some(10));
        assert_eq!(score(&p, DEFAULT), f64::INFINITY);
        assert!(!p.has_room());
        assert!(!p.is_candidate());
    }

    #[test]
    fn room_counts_local_inflight() {
        let mut p = peer(4, 2, Some(10)); // limit 2 + 4 = 6
        assert!(p.has_room());
        p.local_inflight = 2;
        assert!(!p.has_room());
    }

    #[test]
    fn local_view_slots_and_room() {
        let mut l = LocalView {
            active: 1,
            capacity: 2,
            queue_limit: 1,
            service_ewma: None,
        };
        assert!(l.has_free_slot() && l.has_room());
        l.active = 2;
        assert!(!l.has_free_slot() && l.has_room());
        l.active = 3;
        assert!(!l.has_room());
        assert!((l.score(DEFAULT) - 0.2).abs() < 1e-12);
    }
}
