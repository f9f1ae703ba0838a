//! What only this node knows about each peer: tasks it has forwarded there and not seen
//! answered, and its circuit breaker. Combined with gossip into routing views.
//!
//! Gossip reports a peer's `active` once per round, so between rounds this node corrects
//! it with what it knows of its own forwards, relative to the report time (approximated by
//! the last heartbeat heard):
//! - `local_inflight` counts only forwards sent after the report (older ones are already
//!   in `active`; counting them twice made an entry node queue work at home while its
//!   peers had free slots);
//! - forwards that were in the report and have been answered since are taken off `active`
//!   (they finished; a stale count would make the peer look busier than it is).
//!
//! The report time is taken one gossip round earlier than the heartbeat that carried it
//! ([`PeerTable::with_report_slack`]): a peer writes its load once per round but its
//! heartbeat every round, so the newest heartbeat is often newer than the load value it
//! travels with. Taking the heartbeat's time as the report's missed the forwards sent in
//! between, and a two-slot 400 ms node that looked half free queued a task for 400 ms
//! (measured: a third of the slow nodes' tasks waited 150-220 ms in the strongly mixed
//! benchmark). Counting a forward twice for one round errs towards spreading load instead.
//!
//! Whatever the timing, a peer is never taken to have fewer tasks than this node's own
//! unanswered forwards to it.
//!
//! A peer also reports its load on every answer (`active_after`): when that is newer than
//! the gossip report it is the base instead, with its exact time. Under load answers come
//! far more often than gossip rounds, and gossip's sample time is only known to within a
//! round.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use spheromesh_mesh::membership::Peer;
use spheromesh_mesh::routing::{
    BreakerConfig, BreakerConfigError, BreakerState, CircuitBreaker, NodeId, PeerView,
};

/// Answered forwards kept per peer for the correction of `active` (a few rounds' worth).
const ANSWERED_KEPT: usize = 512;

#[derive(Debug)]
struct PeerLocal {
    /// Send time of each unanswered forward, by forward number.
    inflight: HashMap<u64, Instant>,
    /// `(sent, answered)` of recent forwards, oldest first.
    answered: std::collections::VecDeque<(Instant, Instant)>,
    /// The load the peer reported on its last answer, and when it arrived.
    last_answer: Option<(Instant, u32)>,
    breaker: CircuitBreaker,
}

/// Per-peer local state, keyed by node id.
#[derive(Debug)]
pub struct PeerTable {
    /// A closed breaker, cloned for each new peer.
    fresh_breaker: CircuitBreaker,
    peers: Mutex<HashMap<NodeId, PeerLocal>>,
    next_forward: std::sync::atomic::AtomicU64,
    /// Bumped whenever a breaker opens, so tasks in flight on that peer can move.
    opened: tokio::sync::watch::Sender<u64>,
    /// How much older than its heartbeat a gossiped load value may be (one round).
    report_slack: Duration,
}

/// A forward in flight to one peer; dropping it decrements that peer's count.
#[derive(Debug)]
pub struct Inflight {
    table: Arc<PeerTable>,
    peer: NodeId,
    number: u64,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if let Some(p) = self.table.lock().get_mut(&self.peer) {
            if let Some(sent) = p.inflight.remove(&self.number) {
                if p.answered.len() == ANSWERED_KEPT {
                    p.answered.pop_front();
                }
                p.answered.push_back((sent, Instant::now()));
            }
        }
    }
}

impl PeerTable {
    /// An empty table whose breakers use `breaker`, with no report slack (see
    /// [`with_report_slack`](Self::with_report_slack)).
    ///
    /// # Errors
    ///
    /// If `breaker` breaks a rule.
    pub fn new(breaker: BreakerConfig) -> Result<Arc<Self>, BreakerConfigError> {
        Self::with_report_slack(breaker, Duration::ZERO)
    }

    /// An empty table whose breakers use `breaker`, taking each gossiped load as up to
    /// `report_slack` (the gossip interval) older than the heartbeat it arrived with.
    ///
    /// # Errors
    ///
    /// If `breaker` breaks a rule.
    pub fn with_report_slack(
        breaker: BreakerConfig,
        report_slack: Duration,
    ) -> Result<Arc<Self>, BreakerConfigError> {
        Ok(Arc::new(Self {
            fresh_breaker: CircuitBreaker::new(breaker)?,
            peers: Mutex::new(HashMap::new()),
            next_forward: std::sync::atomic::AtomicU64::new(0),
            opened: tokio::sync::watch::Sender::new(0),
            report_slack,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<NodeId, PeerLocal>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn entry<'a>(
        &self,
        map: &'a mut HashMap<NodeId, PeerLocal>,
        peer: &NodeId,
    ) -> &'a mut PeerLocal {
        map.entry(peer.clone()).or_insert_with(|| PeerLocal {
            inflight: HashMap::new(),
            answered: std::collections::VecDeque::new(),
            last_answer: None,
            breaker: self.fresh_breaker.clone(),
        })
    }

    /// Routing views of the gossiped `peers`, with this node's in-flight counts and breaker
    /// states filled in.
    pub fn views(&self, peers: &[Peer], now: Instant) -> Vec<PeerView> {
        let map = self.lock();
        peers
            .iter()
            .map(|peer| {
                let mut view = peer.view.clone();
                if let Some(local) = map.get(&peer.id) {
                    let mut reported_at = now.checked_sub(peer.last_heard + self.report_slack);
                    if let Some((at, active)) = local.last_answer {
                        if reported_at.is_none_or(|r| at > r) {
                            reported_at = Some(at);
                            view.active = active;
                        }
                    }
                    let unreported = local
                        .inflight
                        .values()
                        .filter(|sent| reported_at.is_none_or(|r| **sent > r))
                        .count();
                    view.local_inflight = u32::try_from(unreported).unwrap_or(u32::MAX);
                    let finished_since_report = reported_at.map_or(0, |r| {
                        local
                            .answered
                            .iter()
                            .filter(|(sent, answered)| *sent <= r && *answered > r)
                            .count()
                    });
                    view.active = view
                        .active
                        .saturating_sub(u32::try_from(finished_since_report).unwrap_or(u32::MAX));
                    // Never fewer than this node's own unanswered forwards, whatever the
                    // report missed.
                    let mine = u32::try_from(local.inflight.len()).unwrap_or(u32::MAX);
                    let missing = mine.saturating_sub(view.active + view.local_inflight);
                    view.local_inflight += missing;
                    view.breaker_open = !local.breaker.would_allow(now);
                }
                if peer.addresses.quic.is_none() {
                    view.ready = false;
                }
                view
            })
            .collect()
    }

    /// Claims a forward to `peer` if its breaker allows one now.
    pub fn begin(self: &Arc<Self>, peer: &NodeId, now: Instant) -> Option<Inflight> {
        let mut map = self.lock();
        let local = self.entry(&mut map, peer);
        if !local.breaker.allow(now) {
            return None;
        }
        let number = self
            .next_forward
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        local.inflight.insert(number, now);
        Some(Inflight {
            table: Arc::clone(self),
            peer: peer.clone(),
            number,
        })
    }

    /// Records a healthy answer (done or busy) from `peer`.
    pub fn on_success(&self, peer: &NodeId) {
        let mut map = self.lock();
        self.entry(&mut map, peer).breaker.on_success();
    }

    /// Records the load `peer` reported on an answer; call it after the answered forward's
    /// [`Inflight`] is dropped.
    pub fn on_answer(&self, peer: &NodeId, active_after: u32, now: Instant) {
        let mut map = self.lock();
        self.entry(&mut map, peer).last_answer = Some((now, active_after));
    }

    /// Records a failure of `peer` (lost stream, timeout, internal error).
    pub fn on_failure(&self, peer: &NodeId, now: Instant) {
        let mut map = self.lock();
        let breaker = &mut self.entry(&mut map, peer).breaker;
        let was_open = breaker.state(now) == BreakerState::Open;
        breaker.on_failure(now);
        if !was_open && breaker.state(now) == BreakerState::Open {
            self.opened.send_modify(|n| *n += 1);
        }
    }

    /// Whether `peer`'s breaker is open at `now` (refusing all tasks, no probe yet).
    pub fn is_open(&self, peer: &NodeId, now: Instant) -> bool {
        self.lock()
            .get(peer)
            .is_some_and(|p| p.breaker.state(now) == BreakerState::Open)
    }

    /// A receiver that changes whenever some peer's breaker opens.
    pub fn breaker_openings(&self) -> tokio::sync::watch::Receiver<u64> {
        self.opened.subscribe()
    }

    /// Unanswered forwards to `peer`, whatever their age.
    pub fn inflight(&self, peer: &NodeId) -> usize {
        self.lock().get(peer).map_or(0, |p| p.inflight.len())
    }

    /// Breaker state of every peer this node has talked to.
    pub fn breaker_states(&self, now: Instant) -> Vec<(NodeId, BreakerState)> {
        self.lock()
            .iter()
            .map(|(id, p)| (id.clone(), p.breaker.state(now)))
            .collect()
    }

    /// Forgets peers that are no longer members (keeps those with forwards in flight).
    pub fn retain(&self, live: &[Peer]) {
        self.lock()
            .retain(|id, p| !p.inflight.is_empty() || live.iter().any(|peer| &peer.id == id));
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use spheromesh_mesh::membership::PeerAddresses;

    use super::*;

    fn peer(last_heard: Duration) -> Peer {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        Peer {
            id: NodeId::new("p"),
            view: PeerView {
                id: NodeId::new("p"),
                ready: true,
                draining: false,
                active: 1,
                capacity: 2,
                queue_limit: 2,
                service_ewma: None,
                local_inflight: 0,
                breaker_open: false,
                entry: false,
                pulls_work: false,
            },
            last_heard,
            addresses: PeerAddresses {
                gossip: addr,
                http: None,
                quic: Some(addr),
            },
            generation: 1,
            version: None,
            queue_depth: None,
            description: Default::default(),
            stats: None,
        }
    }

    #[test]
    fn only_forwards_newer_than_the_last_report_are_added() {
        let table = PeerTable::new(BreakerConfig::default()).expect("config");
        let now = Instant::now();
        let t0 = now.checked_sub(Duration::from_secs(1)).expect("uptime");
        let id = NodeId::new("p");
        let old = table.begin(&id, t0).expect("breaker closed");
        let new = table
            .begin(&id, t0 + Duration::from_millis(800))
            .expect("closed");
        // Last report 500 ms ago: the first forward is in `active` already, the second not.
        let report = Duration::from_millis(500);
        let views = table.views(&[peer(report)], now);
        assert_eq!(views[0].local_inflight, 1);
        assert_eq!(views[0].active, 1);
        assert_eq!(table.inflight(&id), 2);
        drop(new);
        assert_eq!(table.views(&[peer(report)], now)[0].local_inflight, 0);
        // The first forward was in the report (active = 1) and is answered now, after it.
        drop(old);
        assert_eq!(table.inflight(&id), 0);
        assert_eq!(table.views(&[peer(report)], Instant::now())[0].active, 0);
    }

    #[test]
    fn forwards_within_one_round_before_the_heartbeat_count_as_unreported() {
        let round = Duration::from_millis(200);
        let table = PeerTable::with_report_slack(BreakerConfig::default(), round).expect("config");
        let now = Instant::now();
        let t0 = now.checked_sub(Duration::from_secs(1)).expect("uptime");
        let id = NodeId::new("p");
        // Heartbeat heard 300 ms ago; a forward 400 ms ago may not be in the value yet (it
        // was within a round before the heartbeat), one 600 ms ago is.
        let _old = table
            .begin(&id, t0 + Duration::from_millis(400))
            .expect("closed");
        let _recent = table
            .begin(&id, t0 + Duration::from_millis(600))
            .expect("closed");
        let mut gossiped = peer(Duration::from_millis(300));
        gossiped.view.active = 2;
        let views = table.views(&[gossiped], now);
        assert_eq!(views[0].local_inflight, 1);
        let strict = PeerTable::new(BreakerConfig::default()).expect("config");
        let _f = strict
            .begin(&id, t0 + Duration::from_millis(600))
            .expect("closed");
        let mut gossiped = peer(Duration::from_millis(300));
        gossiped.view.active = 2;
        assert_eq!(strict.views(&[gossiped], now)[0].local_inflight, 0);
    }

    #[test]
    fn a_report_that_missed_this_nodes_forwards_is_raised_to_them() {
        let table = PeerTable::new(BreakerConfig::default()).expect("config");
        let now = Instant::now();
        let t0 = now.checked_sub(Duration::from_secs(1)).expect("uptime");
        let id = NodeId::new("p");
        let _a = table.begin(&id, t0).expect("closed");
        let _b = table
            .begin(&id, t0 + Duration::from_millis(100))
            .expect("closed");
        // Heard 100 ms ago that the peer is idle: stale, both forwards are still open.
        let mut idle = peer(Duration::from_millis(100));
        idle.view.active = 0;
        let view = &table.views(&[idle], now)[0];
        assert_eq!(view.outstanding(), 2);
    }

    #[test]
    fn a_load_on_an_answer_newer_than_gossip_is_the_base() {
        let table = PeerTable::new(BreakerConfig::default()).expect("config");
        let id = NodeId::new("p");
        let now = Instant::now();
        let t0 = now.checked_sub(Duration::from_secs(1)).expect("uptime");
        // An answer older than the gossip report (10 ms ago, active = 1) is ignored.
        table.on_answer(&id, 5, t0);
        let view = &table.views(&[peer(Duration::from_millis(10))], now)[0];
        assert_eq!(view.active, 1);
        // Gossip said active = 1, 900 ms ago; an answer 100 ms ago said 0.
        table.on_answer(&id, 0, t0 + Duration::from_millis(900));
        let _forward = table
            .begin(&id, t0 + Duration::from_millis(950))
            .expect("closed");
        let view = &table.views(&[peer(Duration::from_millis(900))], now)[0];
        assert_eq!((view.active, view.local_inflight), (0, 1));
    }

    #[test]
    fn an_open_breaker_refuses_forwards_and_marks_the_view() {
        let table = PeerTable::new(BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_secs(10),
        })
        .expect("config");
        let id = NodeId::new("p");
        let now = Instant::now();
        let mut openings = table.breaker_openings();
        assert!(!table.is_open(&id, now));
        table.on_failure(&id, now);
        assert!(table.begin(&id, now).is_none());
        assert!(table.views(&[peer(Duration::ZERO)], now)[0].breaker_open);
        assert!(table.is_open(&id, now));
        assert!(openings.has_changed().expect("sender alive"));
        openings.mark_unchanged();
        // A further failure of an open breaker is no new opening.
        table.on_failure(&id, now);
        assert!(!openings.has_changed().expect("sender alive"));
    }
}
