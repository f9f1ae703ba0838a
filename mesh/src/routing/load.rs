//! Load model: what this node knows about itself and each peer, and the placement cost
//! (a risk-weighted expected completion time) that placement compares.
//!
//! A new task placed on a node with `c` slots, `o` tasks outstanding (running plus queued) and
//! a mean service time `s` starts at once if a slot is free and otherwise waits for
//! `o + 1 - c` tasks to finish, `c` at a time: it completes after `s` plus a wait of
//! `s × max(0, (o + 1) / c - 1)`. The cost counts that wait twice:
//!
//! ```text
//! cost = s × (1 + QUEUE_WAIT_WEIGHT × max(0, (o + 1) / c - 1)),   QUEUE_WAIT_WEIGHT = 2
//! ```
//!
//! * The service part is the "queue ahead + own in-flight + this task, over slots, times
//!   service time" of C3 (Suresh et al., NSDI 2015) and Elasticsearch's adaptive replica
//!   selection, with a free slot costing one whole service time: a 400 ms node with a free
//!   slot is worse than a 20 ms node with a few tasks queued. (The first wave scored
//!   `(o + 1) / c × s`, which halves a free two-slot node's cost and sent work to slow nodes
//!   that a fast one would have finished sooner.)
//! * The doubled wait is risk aversion: a free slot's time is known, a queue position's is
//!   the uncertain part (stale reports, bursts from other entry nodes, long tasks ahead).
//!   Measured on the strongly mixed mesh (one 20 ms node, four 400 ms nodes): the plain
//!   expected completion let the fast node's queue grow until its wait matched a slow free
//!   slot (p50 348-363 ms, p99 461-506 ms); with the wait counted twice it stays about half
//!   as deep in steady state and takes bursts that would otherwise queue behind 400 ms tasks
//!   (p50 174-184 ms, p99 403 ms, the floor being 400 ms).
//! * `o` for a peer is the gossiped `active` plus what this node sent since that report:
//!   [`PeerView::local_inflight`] (older forwards are already in `active`). Other entry nodes
//!   send too, and their unreported sends are invisible here, so when several nodes take
//!   client work they would all fill the same apparently idle peer (herding on a stale
//!   report). C3's concurrency compensation answers that by counting this node's unreported
//!   sends once per sender: `o = active + local_inflight × senders`, with `senders` the
//!   entry nodes of the mesh ([`Estimate::senders`]). With one entry node it is exact; with
//!   five, each spends only about a fifth of a report's free room before it looks full.
//! * `s` is the gossiped service-time EWMA, or [`Estimate::default_service`] until the node
//!   has measured one, floored at [`MIN_SERVICE`].
//!
//! The result is in seconds.

use std::fmt;
use std::time::Duration;

/// Smallest service time used in a score.
///
/// A node that gossips a zero EWMA would otherwise score zero at any queue depth and
/// attract every task; the floor keeps queue depth meaningful between such nodes.
pub const MIN_SERVICE: Duration = Duration::from_micros(1);

/// How many times an expected queue wait counts in the placement cost (a free slot's
/// service time counts once); see the module documentation.
pub const QUEUE_WAIT_WEIGHT: f64 = 2.0;

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
    /// The peer takes tasks from clients itself (gossiped), so it competes for the same
    /// peers' free room; counted in [`Estimate::senders`].
    pub entry: bool,
    /// The peer pulls work from the broker queue for its own free slots (gossiped: it
    /// publishes a queue depth).
    pub pulls_work: bool,
}

impl PeerView {
    /// A ready, idle peer with `capacity` slots and no queue, for building views in tests and
    /// tools; set the other fields as needed.
    pub fn idle(id: impl Into<NodeId>, capacity: u32, service_ewma: Option<Duration>) -> Self {
        Self {
            id: id.into(),
            ready: true,
            draining: false,
            active: 0,
            capacity,
            queue_limit: 0,
            service_ewma,
            local_inflight: 0,
            breaker_open: false,
            entry: false,
            pulls_work: false,
        }
    }

    /// Tasks believed outstanding on the peer: gossiped `active` plus `local_inflight`.
    pub fn outstanding(&self) -> u64 {
        u64::from(self.active) + u64::from(self.local_inflight)
    }

    /// The peer has a slot or queue room left, counting this node's in-flight tasks.
    pub fn has_room(&self) -> bool {
        self.capacity > 0
            && self.outstanding() < u64::from(self.capacity) + u64::from(self.queue_limit)
    }

    /// The peer has a slot free now, counting this node's in-flight tasks.
    pub fn has_free_slot(&self) -> bool {
        self.outstanding() < u64::from(self.capacity)
    }

    /// The peer may receive a task: ready, not draining, breaker closed and room left.
    pub fn is_candidate(&self) -> bool {
        self.ready && !self.draining && !self.breaker_open && self.has_room()
    }

    /// Tasks the peer completes per second at full use: `capacity / service`. Placement
    /// samples peers in proportion to it.
    pub fn speed(&self, default_service: Duration) -> f64 {
        f64::from(self.capacity) / service_secs(self.service_ewma, default_service)
    }
}

/// What holds for every candidate of one placement decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Service time assumed for a node that has not measured one.
    pub default_service: Duration,
    /// Nodes taking client work, this one included (at least 1): each peer's unreported
    /// sends count once per sender (C3's concurrency compensation).
    pub senders: u32,
}

impl Estimate {
    /// One sender (this node) and `default_service`.
    pub fn single(default_service: Duration) -> Self {
        Self {
            default_service,
            senders: 1,
        }
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

    /// This node's placement cost, comparable with [`score`] of a peer (its own
    /// tasks are all known here, so no compensation applies).
    pub fn score(&self, default_service: Duration) -> f64 {
        expected_completion(
            u64::from(self.active),
            self.capacity,
            service_secs(self.service_ewma, default_service),
        )
    }
}

/// Placement cost in seconds of a new task on `peer` (lower is better): its expected
/// completion with the queue wait counted [`QUEUE_WAIT_WEIGHT`] times.
///
/// `service × (1 + QUEUE_WAIT_WEIGHT × max(0, (active + local_inflight × senders + 1) /
/// capacity - 1))`, with
/// `estimate.default_service` standing in for a missing EWMA and the service time floored at
/// [`MIN_SERVICE`]. A peer with no capacity scores `f64::INFINITY`; the result is never NaN.
pub fn score(peer: &PeerView, estimate: &Estimate) -> f64 {
    let unreported = u64::from(peer.local_inflight) * u64::from(estimate.senders.max(1));
    expected_completion(
        u64::from(peer.active) + unreported,
        peer.capacity,
        service_secs(peer.service_ewma, estimate.default_service),
    )
}

fn service_secs(ewma: Option<Duration>, default_service: Duration) -> f64 {
    ewma.unwrap_or(default_service)
        .max(MIN_SERVICE)
        .as_secs_f64()
}

fn expected_completion(outstanding: u64, capacity: u32, service: f64) -> f64 {
    if capacity == 0 {
        return f64::INFINITY;
    }
    // u64 -> f64 rounds above 2^53, far beyond any real queue.
    let rounds = (outstanding as f64 + 1.0) / f64::from(capacity);
    service * (1.0 + QUEUE_WAIT_WEIGHT * (rounds - 1.0).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(active: u32, capacity: u32, ms: Option<u64>) -> PeerView {
        PeerView {
            active,
            queue_limit: 4,
            ..PeerView::idle("p", capacity, ms.map(Duration::from_millis))
        }
    }

    const DEFAULT: Duration = Duration::from_millis(100);

    fn one() -> Estimate {
        Estimate::single(DEFAULT)
    }

    #[test]
    fn score_follows_formula() {
        // 0.5 s × (1 + 2 × ((3 + 1) / 2 - 1))
        let p = peer(3, 2, Some(500));
        assert!((score(&p, &one()) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn a_free_slot_costs_one_whole_service_time() {
        // Idle two-slot 400 ms node: 0.4 s, not (0 + 1) / 2 × 0.4 = 0.2 s.
        assert!((score(&peer(0, 2, Some(400)), &one()) - 0.4).abs() < 1e-12);
        assert!((score(&peer(1, 2, Some(400)), &one()) - 0.4).abs() < 1e-12);
        // A 20 ms node with 9 waiting (cost 20 ms × 19) still beats the idle slow node; with
        // 10 waiting (20 ms × 21) it does not.
        assert!(score(&peer(9, 1, Some(20)), &one()) < score(&peer(0, 2, Some(400)), &one()));
        assert!(score(&peer(10, 1, Some(20)), &one()) > score(&peer(0, 2, Some(400)), &one()));
    }

    #[test]
    fn local_inflight_adds_to_gossiped_load_once_per_sender() {
        let mut p = peer(1, 1, Some(100));
        p.local_inflight = 2;
        // 0.1 s × (1 + 2 × 3) with one sender: 4 rounds, 3 of them waiting.
        assert!((score(&p, &one()) - 0.7).abs() < 1e-12);
        // Three senders: the two unreported sends stand for six.
        let three = Estimate {
            senders: 3,
            ..one()
        };
        assert!((score(&p, &three) - 1.5).abs() < 1e-12);
        // Zero senders is read as one.
        let zero = Estimate {
            senders: 0,
            ..one()
        };
        assert_eq!(score(&p, &zero), score(&p, &one()));
    }

    #[test]
    fn a_four_times_faster_node_matches_at_a_four_times_longer_queue_cost() {
        // Slow, 1 slot, 1 ahead: 0.4 s × (1 + 2 × 1) = 1.2 s. Fast, 2 slots, 12 outstanding:
        // 0.1 s × (1 + 2 × (13 / 2 - 1)) = 1.2 s.
        let slow = peer(1, 1, Some(400));
        let fast = peer(12, 2, Some(100));
        assert!((score(&slow, &one()) - score(&fast, &one())).abs() < 1e-12);
        assert!(score(&peer(11, 2, Some(100)), &one()) < score(&slow, &one()));
    }

    #[test]
    fn missing_ewma_uses_default_and_zero_ewma_is_floored() {
        assert_eq!(score(&peer(0, 1, None), &one()), DEFAULT.as_secs_f64());
        let zero = peer(5, 1, Some(0));
        assert!(score(&zero, &one()) > score(&peer(0, 1, Some(0)), &one()));
    }

    #[test]
    fn zero_capacity_scores_infinite_and_has_no_room() {
        let p = peer(0, 0, Some(10));
        assert_eq!(score(&p, &one()), f64::INFINITY);
        assert!(!p.has_room());
        assert!(!p.is_candidate());
        assert_eq!(p.speed(DEFAULT), 0.0);
    }

    #[test]
    fn room_and_free_slots_count_local_inflight() {
        let mut p = peer(4, 2, Some(10)); // limit 2 + 4 = 6
        assert!(p.has_room() && !p.has_free_slot());
        p.local_inflight = 2;
        assert!(!p.has_room());
        let mut q = peer(0, 2, Some(10));
        q.local_inflight = 1;
        assert!(q.has_free_slot());
        q.local_inflight = 2;
        assert!(!q.has_free_slot());
    }

    #[test]
    fn speed_is_capacity_over_service() {
        assert!((peer(0, 2, Some(400)).speed(DEFAULT) - 5.0).abs() < 1e-9);
        assert!((peer(0, 1, Some(20)).speed(DEFAULT) - 50.0).abs() < 1e-9);
        assert!((peer(0, 1, None).speed(DEFAULT) - 10.0).abs() < 1e-9);
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
        // 0.1 s × (1 + 2 × (4 / 2 - 1))
        assert!((l.score(DEFAULT) - 0.3).abs() < 1e-12);
    }
}
