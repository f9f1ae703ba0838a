//! The membership task: owns the chitchat server, restarts it when it dies, and does what
//! chitchat leaves to its user once per gossip round.
//!
//! Each round (a tick of `gossip_interval`) it
//! 1. writes this node's changed keys (so load is published at most once per round),
//! 2. sends a SYN to every resolved seed address that is not a live peer (joining, and
//!    healing partitions, as seeds do in Cassandra's gossip),
//! 3. refreshes the snapshot of live peers read by `Membership::peers`.
//!
//! The snapshot is also refreshed whenever chitchat's live set changes, so a peer the φ
//! accrual detector (Hayashibara et al., SRDS 2004) declares dead leaves routing at once.
//!
//! # Local health (Lifeguard)
//!
//! A node that was itself stopped (SIGSTOP, a long GC-like pause, a starved VM) hears no
//! heartbeats while it is stopped; when it resumes, the failure detector reads that silence
//! as every peer having died, and the node would drop all of them from routing before the
//! first fresh digest arrives. Like HashiCorp's Lifeguard (Dadgar, Phillips and Currey,
//! "Lifeguard: Local Health Awareness for More Accurate Failure Detection", DSN 2018) the
//! task notices its own stall: a wake-up later than [`stall_threshold`] after the previous
//! one. Peers that were live before the stall then stay in the snapshot for `dead_after` of
//! awake time: fresh gossip brings back the live ones as live in chitchat, and only a peer
//! still silent after that is dropped.
//!
//! chitchat's server can panic (it asserts on internal invariants) or stop on a broken
//! socket. The task then restarts it with a new generation, after an exponential backoff
//! that resets once a server has run for [`STABLE_AFTER`]. A new generation is required: a
//! restarted server begins again at heartbeat and version 1, which peers would ignore
//! under the old generation. Peers see the old generation die and the new one join.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::transport::Transport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, Heartbeat};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{self, MissedTickBehavior};
use tracing::{debug, error, info, warn};

use super::config::MembershipConfig;
use super::membership::{next_generation, Peer, Shared, ShutdownError, Snapshot};
use super::node_state::{parse_peer, NodeStatus};
use super::seeds::SeedAddrs;
use crate::routing::NodeId;

/// First delay before restarting a dead gossip server.
pub(crate) const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between two restarts.
pub(crate) const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A server that ran this long died of something new: restart it after the minimum delay.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Rounds to wait after publishing `draining` on shutdown, so peers hear it.
const LEAVE_ROUNDS: u32 = 2;
/// How long chitchat is given to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Tombstoned keys are kept this long (spheromesh deletes no keys; chitchat 0.12's default).
const MARKED_FOR_DELETION_GRACE_PERIOD: Duration = Duration::from_secs(15 * 60);

/// Starts a chitchat server for `config` under `generation` with `key_values`.
pub(crate) async fn start_chitchat(
    config: &MembershipConfig,
    generation: u64,
    key_values: Vec<(String, String)>,
    transport: &dyn Transport,
) -> anyhow::Result<ChitchatHandle> {
    let chitchat_config = ChitchatConfig {
        chitchat_id: ChitchatId::new(config.node_id.as_str(), generation, config.gossip_advertise),
        cluster_id: config.cluster_id.clone(),
        gossip_interval: config.gossip_interval,
        listen_addr: config.gossip_listen,
        // Seeds are resolved and contacted by the supervisor every round (see seeds.rs).
        seed_nodes: Vec::new(),
        failure_detector_config: config.failure_detector(),
        marked_for_deletion_grace_period: MARKED_FOR_DELETION_GRACE_PERIOD,
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    spawn_chitchat(chitchat_config, key_values, transport).await
}

/// What woke the membership task.
enum Event {
    /// `Membership::shutdown` was called (or the handle dropped).
    Stop,
    /// The chitchat server ended, with its result.
    Terminated(anyhow::Result<()>),
    /// A gossip round is due.
    Round,
    /// chitchat's live set, or a live node's state, changed.
    LiveSetChanged,
}

/// The membership task's state.
pub(crate) struct Supervisor {
    config: MembershipConfig,
    shared: Arc<Shared>,
    transport: Arc<dyn Transport>,
    chitchat: ChitchatHandle,
    started_at: Instant,
    backoff: Duration,
    seeds: watch::Receiver<SeedAddrs>,
    resolver: JoinHandle<()>,
    /// Last heartbeat seen per live peer generation, and when it changed.
    heard: HashMap<ChitchatId, (Heartbeat, Instant)>,
    /// When the task last woke up, to notice that this node itself stalled.
    awake_at: Instant,
    /// Peers kept through this node's own stall, see the module documentation.
    hold: Option<StallHold>,
}

/// The live peers from before a stall of this node, kept until `until` unless fresh
/// gossip confirms them first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StallHold {
    until: Instant,
    peers: Vec<Peer>,
}

impl StallHold {
    /// The hold to start at a wake-up at `now`, `gap` after the previous one, with `live`
    /// the peers known before: `None` unless `gap` reaches the [`stall_threshold`].
    pub(crate) fn after_wakeup(
        config: &MembershipConfig,
        gap: Duration,
        now: Instant,
        live: &[Peer],
    ) -> Option<Self> {
        (gap >= stall_threshold(config)).then(|| StallHold {
            until: now + config.dead_after,
            peers: live.to_vec(),
        })
    }

    /// Adds to `live` the held peers it lacks; `false` (and nothing added) once the hold
    /// has run out at `now`.
    pub(crate) fn fill(&self, live: &mut HashMap<NodeId, Peer>, now: Instant) -> bool {
        if now >= self.until {
            return false;
        }
        for held in &self.peers {
            live.entry(held.id.clone()).or_insert_with(|| held.clone());
        }
        true
    }
}

/// A wake-up this much later than the previous one means this node itself stalled.
pub(crate) fn stall_threshold(config: &MembershipConfig) -> Duration {
    (config.gossip_interval * 4).max(config.dead_after / 2)
}

impl Supervisor {
    pub(crate) fn new(
        config: MembershipConfig,
        shared: Arc<Shared>,
        transport: impl Transport,
        chitchat: ChitchatHandle,
        seeds: watch::Receiver<SeedAddrs>,
        resolver: JoinHandle<()>,
    ) -> Self {
        Supervisor {
            config,
            shared,
            transport: Arc::new(transport),
            chitchat,
            started_at: Instant::now(),
            backoff: RESTART_BACKOFF_MIN,
            seeds,
            resolver,
            heard: HashMap::new(),
            awake_at: Instant::now(),
            hold: None,
        }
    }

    /// Notes that the task is running now; starts a [`StallHold`] when the previous wake-up
    /// was more than [`stall_threshold`] ago.
    fn note_wakeup(&mut self) {
        let now = Instant::now();
        let gap = now.duration_since(self.awake_at);
        self.awake_at = now;
        let hold = {
            let snapshot = self.shared.snapshot.borrow();
            StallHold::after_wakeup(&self.config, gap, now, &snapshot.peers)
        };
        if let Some(hold) = hold {
            warn!(
                stalled_for = ?gap,
                peers = hold.peers.len(),
                "this node stalled; keeping its peers until fresh gossip or dead_after"
            );
            self.shared.stalls.fetch_add(1, Ordering::Relaxed);
            self.hold = Some(hold);
        }
    }

    /// Runs until `stop` turns true (or its sender is dropped), then leaves the cluster.
    pub(crate) async fn run(
        mut self,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), ShutdownError> {
        let mut tick = time::interval(self.config.gossip_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut live = self
            .chitchat
            .with_chitchat(|c| c.live_nodes_watcher())
            .await;
        loop {
            let terminated = self.chitchat.termination_watcher();
            let event = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => Event::Stop,
                result = terminated => Event::Terminated(result),
                _ = tick.tick() => Event::Round,
                Ok(()) = live.changed() => Event::LiveSetChanged,
            };
            self.note_wakeup();
            match event {
                Event::Stop => break,
                Event::Terminated(result) => {
                    self.log_termination(result);
                    if !self.restart(&mut stop).await {
                        break;
                    }
                    live = self
                        .chitchat
                        .with_chitchat(|c| c.live_nodes_watcher())
                        .await;
                }
                Event::Round => self.round().await,
                Event::LiveSetChanged => self.refresh().await,
            }
        }
        self.leave().await
    }

    /// The per-round work described in the module documentation.
    async fn round(&mut self) {
        self.flush().await;
        let seeds = self.seeds.borrow().clone();
        if !seeds.is_empty() {
            let mut known: HashSet<SocketAddr> = self
                .shared
                .snapshot
                .borrow()
                .peers
                .iter()
                .map(|peer| peer.addresses.gossip)
                .collect();
            known.insert(self.config.gossip_advertise);
            known.insert(self.config.gossip_listen);
            for addr in seeds.difference(&known) {
                // Fails only if the server has stopped; the restart path handles that.
                if self.chitchat.gossip(*addr).is_err() {
                    break;
                }
            }
        }
        self.refresh().await;
    }

    /// Writes the keys that changed since the last round.
    async fn flush(&mut self) {
        if let Some(changes) = self.shared.publisher.take_changes() {
            self.chitchat
                .with_chitchat(|c| {
                    let state = c.self_node_state();
                    for (key, value) in &changes {
                        state.set(key, value);
                    }
                })
                .await;
        }
    }

    /// Rebuilds the snapshot of live peers from chitchat's state.
    async fn refresh(&mut self) {
        let own_id = self.config.node_id.as_str();
        let (live, dead) = self
            .chitchat
            .with_chitchat(|c| {
                let live: Vec<_> = c
                    .live_nodes()
                    // Older generations of this node may still look alive after a restart.
                    .filter(|id| &*id.node_id != own_id)
                    .filter_map(|id| {
                        let state = c.node_state(id)?;
                        let node_id = NodeId::new(&*id.node_id);
                        let parsed =
                            parse_peer(node_id, id.gossip_advertise_addr, |key| state.get(key));
                        Some((id.clone(), state.heartbeat(), parsed))
                    })
                    .collect();
                let dead: HashSet<String> =
                    c.dead_nodes().map(|id| id.node_id.to_string()).collect();
                (live, dead)
            })
            .await;

        let now = Instant::now();
        let mut newest: HashMap<NodeId, Peer> = HashMap::new();
        let mut heard = HashMap::with_capacity(live.len());
        for (chitchat_id, heartbeat, parsed) in live {
            let heard_at = match self.heard.get(&chitchat_id) {
                Some((last, at)) if *last == heartbeat => *at,
                _ => now,
            };
            heard.insert(chitchat_id.clone(), (heartbeat, heard_at));
            let peer = Peer {
                id: parsed.view.id.clone(),
                view: parsed.view,
                last_heard: now.duration_since(heard_at),
                addresses: parsed.addresses,
                generation: chitchat_id.generation_id,
                version: parsed.version,
                queue_depth: parsed.queue_depth,
                description: parsed.description,
                stats: parsed.stats,
            };
            match newest.get(&peer.id) {
                Some(other) if other.generation > peer.generation => {}
                _ => {
                    newest.insert(peer.id.clone(), peer);
                }
            }
        }
        self.heard = heard;
        if self
            .hold
            .as_ref()
            .is_some_and(|hold| !hold.fill(&mut newest, now))
        {
            self.hold = None;
        }
        let dead_count = dead
            .iter()
            .filter(|id| id.as_str() != own_id && !newest.contains_key(&NodeId::new(id.as_str())))
            .count();
        self.shared.dead_count.store(dead_count, Ordering::Relaxed);

        let mut peers: Vec<Peer> = newest.into_values().collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        self.shared.snapshot.send_replace(Snapshot {
            taken_at: now,
            peers,
        });
    }

    fn log_termination(&self, result: anyhow::Result<()>) {
        let ran_for = self.started_at.elapsed();
        match result {
            Ok(()) => warn!(ran_for = ?ran_for, "gossip server stopped on its own"),
            Err(err) => error!(ran_for = ?ran_for, error = %err, "gossip server died"),
        }
    }

    /// Restarts chitchat under a new generation after a backoff; `false` if asked to stop
    /// meanwhile.
    async fn restart(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        self.backoff = if self.started_at.elapsed() >= STABLE_AFTER {
            RESTART_BACKOFF_MIN
        } else {
            self.backoff
        };
        loop {
            let delay = self.backoff;
            self.backoff = (self.backoff * 2).min(RESTART_BACKOFF_MAX);
            info!(delay = ?delay, "restarting gossip server");
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return false,
                () = time::sleep(delay) => {}
            }
            let generation = next_generation(self.shared.generation.load(Ordering::Relaxed));
            let key_values = self.shared.publisher.all();
            match start_chitchat(&self.config, generation, key_values, &*self.transport).await {
                Ok(chitchat) => {
                    self.chitchat = chitchat;
                    self.started_at = Instant::now();
                    self.heard.clear();
                    self.shared.generation.store(generation, Ordering::Relaxed);
                    self.shared.restarts.fetch_add(1, Ordering::Relaxed);
                    info!(generation, "gossip server restarted");
                    return true;
                }
                Err(err) => warn!(error = %err, "cannot restart gossip server"),
            }
        }
    }

    /// Publishes `draining` if it was not yet, waits for it to spread, and stops chitchat.
    async fn leave(mut self) -> Result<(), ShutdownError> {
        let announce = self.shared.publisher.status() != NodeStatus::Draining;
        self.shared.publisher.set_status(NodeStatus::Draining);
        self.flush().await;
        if announce {
            time::sleep(self.config.gossip_interval * LEAVE_ROUNDS).await;
        }
        let _ = self.chitchat.initiate_shutdown();
        let stopped = time::timeout(SHUTDOWN_TIMEOUT, self.chitchat.termination_watcher()).await;
        debug!(node_id = %self.shared.node_id, "gossip stopped");
        match stopped {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(ShutdownError::Gossip {
                reason: err.to_string(),
            }),
            Err(_) => Err(ShutdownError::Timeout {
                after: SHUTDOWN_TIMEOUT,
            }),
        }
    }
}

impl Drop for Supervisor {
    /// Stops the chitchat server and the seed resolver with the task, also when it is aborted.
    fn drop(&mut self) {
        self.chitchat.abort();
        self.resolver.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::membership::PeerAddresses;
    use crate::routing::PeerView;

    fn peer(id: &str, active: u32) -> Peer {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        Peer {
            id: NodeId::new(id),
            view: PeerView {
                active,
                ..PeerView::idle(id, 1, None)
            },
            last_heard: Duration::ZERO,
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
    fn only_a_wakeup_past_the_threshold_starts_a_hold() {
        let config = MembershipConfig::default(); // 200 ms rounds, dead after 2 s
        assert_eq!(stall_threshold(&config), Duration::from_secs(1));
        let now = Instant::now();
        let live = [peer("a", 0)];
        assert!(StallHold::after_wakeup(&config, Duration::from_millis(999), now, &live).is_none());
        let hold =
            StallHold::after_wakeup(&config, Duration::from_secs(3), now, &live).expect("a stall");
        assert_eq!(hold.until, now + config.dead_after);
    }

    #[test]
    fn a_hold_keeps_missing_peers_until_dead_after_and_prefers_fresh_state() {
        let config = MembershipConfig::default();
        let now = Instant::now();
        let hold = StallHold::after_wakeup(
            &config,
            Duration::from_secs(3),
            now,
            &[peer("a", 1), peer("b", 1)],
        )
        .expect("a stall");
        // The failure detector dropped both; fresh gossip has brought back b, with new load.
        let mut live = HashMap::from([(NodeId::new("b"), peer("b", 7))]);
        assert!(hold.fill(&mut live, now + Duration::from_millis(500)));
        assert_eq!(live.len(), 2);
        assert_eq!(live[&NodeId::new("a")], peer("a", 1));
        assert_eq!(live[&NodeId::new("b")].view.active, 7, "fresh state wins");
        // After dead_after of awake time a still-silent peer is no longer kept.
        let mut later = HashMap::new();
        assert!(!hold.fill(&mut later, now + config.dead_after));
        assert!(later.is_empty());
    }
}
