//! [`Membership`]: the handle of one node's gossip, and what it tells about the peers.
//!
//! The work happens in one spawned task (`supervisor.rs`) that owns the chitchat server: it
//! publishes this node's keys once per round, gossips to the seeds, keeps the snapshot of
//! live peers that [`Membership::peers`] reads without waiting, and restarts chitchat when
//! it panics or stops. Membership itself is chitchat's Scuttlebutt anti-entropy (van Renesse
//! et al., LADIS 2008) with the φ accrual failure detector (Hayashibara et al., SRDS 2004).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::config::{ConfigError, MembershipConfig};
use super::node_state::{
    fixed_keys, LoadReport, NodeDescription, NodeStats, NodeStatus, PeerAddresses, Publisher,
};
use super::sealed_transport::{GossipStats, SealedTransport, TransportCounters};
use super::seeds::SeedResolver;
use super::supervisor::{start_chitchat, Supervisor};
use crate::routing::{NodeId, PeerView};
use crate::security::GossipSealer;

/// A live peer, as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// The peer's node id.
    pub id: NodeId,
    /// Its gossiped state in routing terms (`local_inflight` and `breaker_open` are left
    /// for the routing layer to fill in).
    pub view: PeerView,
    /// Time since a new heartbeat of the peer last reached this node (to within a round).
    pub last_heard: Duration,
    /// Its gossip, HTTP and QUIC addresses.
    pub addresses: PeerAddresses,
    /// Its generation: Unix time in milliseconds of its start.
    pub generation: u64,
    /// The software version it publishes.
    pub version: Option<String>,
    /// The RabbitMQ queue depth it last saw, if it consumes from a broker.
    pub queue_depth: Option<u64>,
    /// Its device and model, as it describes itself.
    pub description: NodeDescription,
    /// Its counters, once it has published them.
    pub stats: Option<NodeStats>,
}

/// Wakes on every refresh of the live-peer snapshot; see [`Membership::subscribe`].
#[derive(Debug, Clone)]
pub struct PeerChanges {
    rx: watch::Receiver<Snapshot>,
}

impl PeerChanges {
    /// Waits for the next refresh; never returns while membership runs, and pends forever
    /// once it has stopped.
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// The configuration breaks a rule.
    #[error("invalid membership configuration")]
    Config(#[from] ConfigError),
    /// chitchat could not start, most often because the gossip address cannot be bound.
    #[error("cannot start gossip on {addr}")]
    Start {
        /// The gossip listen address.
        addr: std::net::SocketAddr,
        /// The cause reported by chitchat.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why membership did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// The membership task panicked.
    #[error("the membership task panicked")]
    Panicked,
    /// The chitchat server ended with an error instead of stopping.
    #[error("gossip ended with an error: {reason}")]
    Gossip {
        /// chitchat's description of the error.
        reason: String,
    },
    /// The chitchat server did not stop in time.
    #[error("gossip did not stop within {after:?}")]
    Timeout {
        /// How long it was given.
        after: Duration,
    },
}

/// The live peers at one instant.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) taken_at: Instant,
    pub(crate) peers: Vec<Peer>,
}

/// State shared by the handle and the membership task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) node_id: NodeId,
    pub(crate) publisher: Publisher,
    pub(crate) counters: Arc<TransportCounters>,
    pub(crate) generation: AtomicU64,
    pub(crate) restarts: AtomicU64,
    /// Stalls of this node noticed by the membership task (see `supervisor.rs`).
    pub(crate) stalls: AtomicU64,
    pub(crate) dead_count: AtomicUsize,
    pub(crate) snapshot: watch::Sender<Snapshot>,
}

/// One node's membership in the mesh: a spawned gossip task and its handle.
///
/// Dropping it aborts the task at once, as a crash would: peers see the node die after
/// `dead_after`. [`Membership::shutdown`] leaves politely instead.
#[derive(Debug)]
pub struct Membership {
    shared: Arc<Shared>,
    dead_after: Duration,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ShutdownError>>>,
    #[cfg(test)]
    pub(crate) transport: SealedTransport,
}

impl Membership {
    /// Validates `config`, binds the gossip socket and starts gossiping as status
    /// `starting`, with generation = the current Unix time in milliseconds.
    ///
    /// # Errors
    ///
    /// [`MembershipError::Config`] for a broken rule, [`MembershipError::Start`] if the gossip
    /// address cannot be bound.
    #[must_use = "gossip stops when the Membership is dropped"]
    pub async fn start(config: MembershipConfig) -> Result<Membership, MembershipError> {
        config.validate()?;
        let node_id = NodeId::new(config.node_id.clone());
        let counters = Arc::new(TransportCounters::default());
        let sealer = config
            .cluster_key
            .as_ref()
            .map(|key| GossipSealer::new(key, config.cluster_id.clone()));
        if sealer.is_none() {
            warn!("no cluster key: gossip is not sealed, anyone who reaches the port can join");
        }
        let transport = SealedTransport::new(sealer, config.node_id.clone(), counters.clone());
        let publisher = Publisher::new(
            NodeStatus::Starting,
            fixed_keys(
                config.http_addr,
                config.quic_addr,
                &config.version,
                &config.description,
            ),
        );

        // Resolve the seeds once before the first round, so that it is not wasted.
        let mut resolver = SeedResolver::new(
            config.seeds.clone(),
            config.gossip_listen,
            config.gossip_interval.max(Duration::from_secs(1)),
        );
        let (seeds_tx, seeds_rx) = watch::channel(resolver.resolve().await);

        let generation = next_generation(0);
        let chitchat = start_chitchat(&config, generation, publisher.all(), &transport)
            .await
            .map_err(|err| MembershipError::Start {
                addr: config.gossip_listen,
                source: err.into(),
            })?;
        info!(
            node_id = %node_id,
            generation,
            listen = %config.gossip_listen,
            advertise = %config.gossip_advertise,
            sealed = config.cluster_key.is_some(),
            seeds = ?config.seeds,
            "gossip started"
        );

        let shared = Arc::new(Shared {
            node_id,
            publisher,
            counters,
            generation: AtomicU64::new(generation),
            restarts: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            dead_count: AtomicUsize::new(0),
            snapshot: watch::Sender::new(Snapshot {
                taken_at: Instant::now(),
                peers: Vec::new(),
            }),
        });
        let dead_after = config.dead_after;
        let resolver_task = tokio::spawn(resolver.run(config.gossip_interval, seeds_tx));
        let (stop, stop_rx) = watch::channel(false);
        let supervisor = Supervisor::new(
            config,
            shared.clone(),
            transport.clone(),
            chitchat,
            seeds_rx,
            resolver_task,
        );
        let task = tokio::spawn(supervisor.run(stop_rx));
        Ok(Membership {
            shared,
            dead_after,
            stop,
            task: Some(task),
            #[cfg(test)]
            transport,
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.shared.node_id
    }

    /// This node's current generation (it changes when the gossip task is restarted).
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Relaxed)
    }

    /// The live peers, this node excluded, one entry per node id (the newest generation).
    ///
    /// Reads a snapshot refreshed every gossip round and on every change of the live set;
    /// it never waits on gossip.
    pub fn peers(&self) -> Vec<Peer> {
        let snapshot = self.shared.snapshot.borrow();
        let age = snapshot.taken_at.elapsed();
        snapshot
            .peers
            .iter()
            .map(|peer| Peer {
                last_heard: peer.last_heard + age,
                ..peer.clone()
            })
            .collect()
    }

    /// A handle that wakes whenever the snapshot of live peers is refreshed (every gossip
    /// round, and at once when the failure detector changes the live set), so work in
    /// flight on a peer that has just been declared dead can move elsewhere.
    pub fn subscribe(&self) -> PeerChanges {
        PeerChanges {
            rx: self.shared.snapshot.subscribe(),
        }
    }

    /// Whether `id` is a live peer in the current snapshot.
    pub fn is_live(&self, id: &NodeId) -> bool {
        self.shared
            .snapshot
            .borrow()
            .peers
            .iter()
            .any(|peer| &peer.id == id)
    }

    /// Publishes this node's load; written to gossip at most once per round (the latest
    /// report wins).
    pub fn publish(&self, report: &LoadReport) {
        self.shared.publisher.set_load(report);
    }

    /// Publishes this node's counters for operators; written at most once per round.
    pub fn publish_stats(&self, stats: &NodeStats) {
        self.shared.publisher.set_stats(stats);
    }

    /// Publishes a new status at the next round.
    pub fn set_status(&self, status: NodeStatus) {
        self.shared.publisher.set_status(status);
    }

    /// Publishes `draining` at the next round: peers stop sending tasks here.
    pub fn set_draining(&self) {
        self.set_status(NodeStatus::Draining);
    }

    /// Peers the failure detector holds dead (within the grace period) and that have no
    /// live generation.
    pub fn dead_count(&self) -> usize {
        self.shared.dead_count.load(Ordering::Relaxed)
    }

    /// Counters of the gossip transport, dropped packets included.
    pub fn gossip_stats(&self) -> GossipStats {
        self.shared.counters.snapshot()
    }

    /// How many times this node noticed that it had itself stalled (and kept its peers
    /// through the stall instead of declaring them dead).
    pub fn stalls(&self) -> u64 {
        self.shared.stalls.load(Ordering::Relaxed)
    }

    /// Whether the membership task itself still runs and refreshes its view. It restarts
    /// the gossip server it owns; nothing inside the process restarts *it*, so a node
    /// whose task stopped or hung reports it here, for `/health/live` and the
    /// orchestrator's restart.
    pub fn gossip_health(&self) -> GossipHealth {
        let finished = self.task.as_ref().is_none_or(JoinHandle::is_finished);
        let age = self.shared.snapshot.borrow().taken_at.elapsed();
        classify_gossip(finished, age, self.dead_after)
    }

    /// Stops the membership task as a panic in it would (test hook).
    #[cfg(test)]
    pub(crate) fn abort_task_for_test(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// How many times the gossip task has been restarted after a panic or an exit.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Leaves the cluster: publishes `draining` (waiting two rounds for it to spread, unless
    /// it was already published), then stops gossip.
    ///
    /// # Errors
    ///
    /// [`ShutdownError`] if the task panicked, or chitchat failed or did not stop in time.
    pub async fn shutdown(mut self) -> Result<(), ShutdownError> {
        let _ = self.stop.send(true);
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(_) => Err(ShutdownError::Panicked),
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The state of a node's own membership task, from [`Membership::gossip_health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GossipHealth {
    /// The task runs and refreshed its view within the limit.
    Running,
    /// The task runs but has not refreshed its view for this long (more than twice the
    /// failure detector's `dead_after`: peers already hold this node dead).
    Stuck {
        /// Time since the last refresh.
        since: Duration,
    },
    /// The task ended (a panic or an exit); gossip is gone until the process restarts.
    Stopped,
}

/// Pure classification behind [`Membership::gossip_health`]: `finished` wins, then a view
/// older than `2 x dead_after` is stuck. Twice, so that a process resuming from a pause
/// (whose first fresh round is a moment away) is not called stuck.
pub(crate) fn classify_gossip(finished: bool, age: Duration, dead_after: Duration) -> GossipHealth {
    if finished {
        GossipHealth::Stopped
    } else if age > dead_after * 2 {
        GossipHealth::Stuck { since: age }
    } else {
        GossipHealth::Running
    }
}

/// The next generation id: the Unix time in milliseconds, and always above `previous`.
pub(crate) fn next_generation(previous: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX / 2)
        });
    now.max(previous.saturating_add(1))
}
