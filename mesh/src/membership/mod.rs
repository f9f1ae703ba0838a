//! Membership: which nodes are in the mesh, whether they are alive, and how loaded they are.
//!
//! Built on [chitchat](https://github.com/quickwit-oss/chitchat) 0.11, which combines
//!
//! * **Scuttlebutt** anti-entropy gossip (van Renesse, Dumitriu, Gough and Thomas, "Efficient
//!   Reconciliation and Flow Control for Anti-Entropy Protocols", LADIS 2008): every node owns
//!   a versioned key-value map; each round a node sends a digest (node → heartbeat and max
//!   version) to three random live peers, plus a seed or a dead node now and then, and the
//!   peer answers with the keys the digest lacks;
//! * the **φ accrual failure detector** (Hayashibara, Défago, Yared and Katayama, "The φ
//!   Accrual Failure Detector", SRDS 2004) on heartbeat inter-arrival times, tuned here so a
//!   silent peer is declared dead within `dead_after` (2 s by default, against 9–14 s with
//!   chitchat's defaults); see [`MembershipConfig::failure_detector`].
//!
//! What spheromesh adds:
//!
//! * every datagram is sealed with the cluster key (ChaCha20-Poly1305, cluster id as
//!   associated data, a replay window per sender, see [`crate::security::GossipSealer`]);
//!   one that does not open is dropped and counted in [`GossipStats`]. This needs chitchat's
//!   message serialisation in a custom transport, which chitchat 0.11.x exposes and 0.12+ does
//!   not, hence the pin;
//! * seeds are `host:port` and re-resolved every round, so a service name with several
//!   replicas works (`seeds.rs`);
//! * the generation id is the Unix time in milliseconds, so it grows with every restart;
//! * each node publishes `status`, `active`, `capacity`, `queue_limit`, `service_ewma_ms`,
//!   `http_addr`, `quic_addr`, `version`, `device`, `model` and `stats`, load at most once per round, and peers read them
//!   as routing [`PeerView`](crate::routing::PeerView)s ([`Membership::peers`]);
//! * a supervisor restarts chitchat's server if it panics or stops.
//!
//! # Example
//!
//! ```no_run
//! use spheromesh_mesh::membership::{LoadReport, Membership, MembershipConfig, NodeStatus};
//! use spheromesh_mesh::security::key_from_secret;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MembershipConfig {
//!     node_id: "worker-1".into(),
//!     gossip_advertise: "10.0.0.11:7946".parse()?,
//!     seeds: vec!["spheromesh:7946".into()], // every replica of the compose service
//!     cluster_key: Some(key_from_secret("a long shared cluster passphrase")?),
//!     quic_addr: Some("10.0.0.11:4433".parse()?),
//!     ..MembershipConfig::default()
//! };
//! let membership = Membership::start(config).await?;
//! membership.set_status(NodeStatus::Ready);
//! membership.publish(&LoadReport { active: 0, capacity: 2, queue_limit: 8, service_ewma: None, queue_depth: None, entry: true });
//! let candidates = membership.peers().into_iter().filter(|p| p.view.is_candidate()).count();
//! println!("{candidates} peers can take a task");
//! membership.set_draining();
//! membership.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Files: `config.rs` (settings and detector tuning), `sealed_transport.rs` (the sealing
//! UDP transport), `node_state.rs` (published keys), `seeds.rs` (seed resolution),
//! `supervisor.rs` (the task), `membership.rs` (the handle); cluster tests in `test.rs`.

mod config;
#[allow(clippy::module_inception)]
mod membership;
mod node_state;
mod sealed_transport;
mod seeds;
mod supervisor;
#[cfg(test)]
mod test;

pub use config::{
    ConfigError, MembershipConfig, DEFAULT_DEAD_AFTER, DEFAULT_DEAD_NODE_GRACE_PERIOD,
    DEFAULT_GOSSIP_INTERVAL, DEFAULT_GOSSIP_PORT, MIN_GOSSIP_INTERVAL, MIN_ROUNDS_BEFORE_DEAD,
    SAMPLING_WINDOW,
};
pub use membership::{GossipHealth, Membership, MembershipError, Peer, PeerChanges, ShutdownError};
pub use node_state::{
    LoadReport, NodeDescription, NodeStats, NodeStatus, PeerAddresses, UnknownStatus, KEY_ACTIVE,
    KEY_CAPACITY, KEY_DEVICE, KEY_ENTRY, KEY_HTTP_ADDR, KEY_MODEL, KEY_QUEUE_DEPTH,
    KEY_QUEUE_LIMIT, KEY_QUIC_ADDR, KEY_SERVICE_EWMA_MS, KEY_STATS, KEY_STATUS, KEY_VERSION,
    LATENCY_BUCKETS_MS,
};
pub use sealed_transport::GossipStats;
