//! Membership configuration and the tuning of chitchat's failure detector.
//!
//! chitchat's detector is the φ accrual failure detector of Hayashibara, Défago, Yared and
//! Katayama ("The φ Accrual Failure Detector", SRDS 2004), simplified to exponentially
//! distributed heartbeat inter-arrival times: a peer is suspected once
//! `φ = time since its last heartbeat / mean inter-arrival time` exceeds `phi_threshold`. The
//! mean is smoothed towards `initial_interval` with a weight of five samples, so it starts from
//! that prior and adapts to what is observed. [`MembershipConfig::failure_detector`] derives all
//! five knobs from `gossip_interval` and `dead_after`; see its documentation for the arithmetic.

use std::net::SocketAddr;
use std::time::Duration;

use chitchat::FailureDetectorConfig;

use super::node_state::NodeDescription;
use crate::security::{ClusterKey, MAX_SENDER_ID_LEN};

/// Default UDP port of gossip (the port memberlist and Serf use).
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;

/// Default time between two gossip rounds.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(200);

/// Default time after which a silent peer is declared dead (upper bound, see
/// [`MembershipConfig::failure_detector`]).
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(2);

/// Default time a dead peer's state is kept before it is forgotten.
pub const DEFAULT_DEAD_NODE_GRACE_PERIOD: Duration = Duration::from_secs(60);

/// Shortest gossip interval accepted: below it gossip costs more than it is worth.
pub const MIN_GOSSIP_INTERVAL: Duration = Duration::from_millis(10);

/// `dead_after` must span at least this many gossip rounds, or loss of a single datagram
/// would read as a death.
pub const MIN_ROUNDS_BEFORE_DEAD: u32 = 4;

/// Heartbeat inter-arrival samples kept per peer. At several reports per round this is a
/// few seconds to a few tens of seconds of history: enough for a stable mean, short enough to
/// follow a change of load.
pub const SAMPLING_WINDOW: usize = 100;

/// Cluster key of [`MembershipConfig::for_test`]; never use it outside tests.
const TEST_KEY: [u8; 32] = [0x5e; 32];

/// How this node takes part in gossip.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Identity of this node, unique in the cluster and stable across restarts (a restart
    /// is told apart by the generation, not the id). At most 255 bytes, no whitespace.
    pub node_id: String,
    /// Name of the cluster; gossip from another cluster is refused.
    pub cluster_id: String,
    /// UDP address gossip binds to.
    pub gossip_listen: SocketAddr,
    /// UDP address peers send gossip to: an address they can reach, not `0.0.0.0`.
    pub gossip_advertise: SocketAddr,
    /// Seeds as `host:port`. DNS names are re-resolved every gossip round and every address
    /// they resolve to is a seed, so a compose service name with several replicas works.
    pub seeds: Vec<String>,
    /// Time between two gossip rounds; also the period at which load keys are published.
    pub gossip_interval: Duration,
    /// A peer silent for this long is reported dead (the detector's upper bound).
    pub dead_after: Duration,
    /// How long a dead peer's state is kept (and the peer counted by `dead_count`) before
    /// it is forgotten.
    pub dead_node_grace_period: Duration,
    /// Key sealing every gossip packet. `None` gossips in clear: anyone who reaches the
    /// port can join and read the load of every node, so use it only on a trusted network.
    pub cluster_key: Option<ClusterKey>,
    /// Address of this node's HTTP API, published as `http_addr`.
    pub http_addr: Option<SocketAddr>,
    /// Address of this node's QUIC forward endpoint, published as `quic_addr`. A peer
    /// without one is never ready, since nothing can be forwarded to it.
    pub quic_addr: Option<SocketAddr>,
    /// Software version, published as `version`.
    pub version: String,
    /// Device and model, published as `device` and `model` for operators.
    pub description: NodeDescription,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        let port = DEFAULT_GOSSIP_PORT;
        MembershipConfig {
            node_id: "spheromesh".to_owned(),
            cluster_id: "spheromesh".to_owned(),
            gossip_listen: SocketAddr::from(([0, 0, 0, 0], port)),
            gossip_advertise: SocketAddr::from(([127, 0, 0, 1], port)),
            seeds: Vec::new(),
            gossip_interval: DEFAULT_GOSSIP_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
            dead_node_grace_period: DEFAULT_DEAD_NODE_GRACE_PERIOD,
            cluster_key: None,
            http_addr: None,
            quic_addr: None,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: NodeDescription::default(),
        }
    }
}

/// A rule of [`MembershipConfig`] that the values break.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The node id is empty, too long or contains whitespace or control characters.
    #[error("node id {node_id:?}: {reason}")]
    InvalidNodeId {
        /// The node id given.
        node_id: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The cluster id is empty.
    #[error("cluster id must not be empty")]
    EmptyClusterId,
    /// The gossip interval is below [`MIN_GOSSIP_INTERVAL`].
    #[error("gossip interval {interval:?} is below the minimum {min:?}")]
    GossipIntervalTooShort {
        /// The interval given.
        interval: Duration,
        /// The minimum.
        min: Duration,
    },
    /// `dead_after` spans fewer than [`MIN_ROUNDS_BEFORE_DEAD`] gossip rounds.
    #[error("dead_after {dead_after:?} must be at least {min:?} ({MIN_ROUNDS_BEFORE_DEAD} gossip rounds)")]
    DeadAfterTooShort {
        /// The value given.
        dead_after: Duration,
        /// The minimum for the configured gossip interval.
        min: Duration,
    },
    /// The grace period is shorter than `dead_after`: a peer would be forgotten before every
    /// node had seen it die.
    #[error("dead node grace period {grace:?} must be at least dead_after ({dead_after:?})")]
    GracePeriodTooShort {
        /// The grace period given.
        grace: Duration,
        /// `dead_after`.
        dead_after: Duration,
    },
    /// The advertised gossip address cannot be reached by peers.
    #[error("gossip advertise address {addr} is not reachable by peers ({reason})")]
    UnreachableAdvertise {
        /// The address given.
        addr: SocketAddr,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The gossip listen address has port 0, so peers could not know the port.
    #[error("gossip listen address {addr} needs an explicit port")]
    ListenPortZero {
        /// The address given.
        addr: SocketAddr,
    },
    /// A seed is not `host:port`.
    #[error("seed {seed:?} is not host:port: {reason}")]
    InvalidSeed {
        /// The seed given.
        seed: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
}

impl MembershipConfig {
    /// A configuration for tests: node `node-{port}` gossiping on `127.0.0.1:port` in
    /// cluster `test-cluster` with a fixed test key and the default timings.
    pub fn for_test(port: u16) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        MembershipConfig {
            node_id: format!("node-{port}"),
            cluster_id: "test-cluster".to_owned(),
            gossip_listen: addr,
            gossip_advertise: addr,
            cluster_key: Some(ClusterKey::from_bytes(TEST_KEY)),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8000))),
            quic_addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            ..MembershipConfig::default()
        }
    }

    /// Checks every rule above and names the first one broken.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] variant of the broken rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_node_id(&self.node_id)?;
        if self.cluster_id.is_empty() {
            return Err(ConfigError::EmptyClusterId);
        }
        if self.gossip_interval < MIN_GOSSIP_INTERVAL {
            return Err(ConfigError::GossipIntervalTooShort {
                interval: self.gossip_interval,
                min: MIN_GOSSIP_INTERVAL,
            });
        }
        let min_dead_after = self.gossip_interval * MIN_ROUNDS_BEFORE_DEAD;
        if self.dead_after < min_dead_after {
            return Err(ConfigError::DeadAfterTooShort {
                dead_after: self.dead_after,
                min: min_dead_after,
            });
        }
        if self.dead_node_grace_period < self.dead_after {
            return Err(ConfigError::GracePeriodTooShort {
                grace: self.dead_node_grace_period,
                dead_after: self.dead_after,
            });
        }
        let unreachable = |reason| ConfigError::UnreachableAdvertise {
            addr: self.gossip_advertise,
            reason,
        };
        if self.gossip_advertise.ip().is_unspecified() {
            return Err(unreachable("unspecified address"));
        }
        if self.gossip_advertise.port() == 0 {
            return Err(unreachable("port 0"));
        }
        if self.gossip_listen.port() == 0 {
            return Err(ConfigError::ListenPortZero {
                addr: self.gossip_listen,
            });
        }
        for seed in &self.seeds {
            check_seed(seed).map_err(|reason| ConfigError::InvalidSeed {
                seed: seed.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// chitchat's failure detector, tuned from `gossip_interval` and `dead_after`.
    ///
    /// A peer is declared dead once it has been silent for `φ_threshold × mean`, where `mean`
    /// is the mean time between two fresh heartbeats of that peer, and liveness is evaluated
    /// at the end of each gossip round. A peer's heartbeat reaches us at least once a round
    /// when the cluster is healthy (more often in larger clusters, since every digest carries
    /// every heartbeat), so with `mean ≤ gossip_interval`:
    ///
    /// * `phi_threshold = dead_after / gossip_interval − 1` bounds detection by
    ///   `dead_after` (one round is left for the evaluation);
    /// * `initial_interval = gossip_interval` is the prior mean, the right one for our own
    ///   cadence (chitchat's default of 5 s makes a fresh peer take ~40 s to die);
    /// * `max_interval = dead_after`: a longer gap means the peer was already declared dead,
    ///   and keeping it would inflate the mean after it comes back;
    /// * `sampling_window_size = `[`SAMPLING_WINDOW`];
    /// * `dead_node_grace_period` as configured.
    pub fn failure_detector(&self) -> FailureDetectorConfig {
        let rounds = self.dead_after.as_secs_f64() / self.gossip_interval.as_secs_f64();
        FailureDetectorConfig {
            phi_threshold: (rounds - 1.0).max(1.0),
            sampling_window_size: SAMPLING_WINDOW,
            max_interval: self.dead_after,
            initial_interval: self.gossip_interval,
            dead_node_grace_period: self.dead_node_grace_period,
        }
    }
}

fn validate_node_id(node_id: &str) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidNodeId {
        node_id: node_id.to_owned(),
        reason,
    };
    if node_id.is_empty() {
        return Err(invalid("must not be empty"));
    }
    // The node id is the sender id of sealed packets.
    if node_id.len() > MAX_SENDER_ID_LEN {
        return Err(invalid("longer than 255 bytes"));
    }
    if node_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains whitespace or control characters"));
    }
    Ok(())
}

/// Checks that `seed` is `host:port` (IPv6 hosts in brackets) with a non-zero port.
pub(crate) fn check_seed(seed: &str) -> Result<(), &'static str> {
    if let Ok(addr) = seed.parse::<SocketAddr>() {
        return if addr.port() == 0 {
            Err("port 0")
        } else {
            Ok(())
        };
    }
    let (host, port) = seed.rsplit_once(':').ok_or("no port")?;
    if host.is_empty() {
        return Err("empty host");
    }
    if host.contains(':') || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("host is not a DNS name or an address (IPv6 needs brackets)");
    }
    match port.parse::<u16>() {
        Ok(0) => Err("port 0"),
        Ok(_) => Ok(()),
        Err(_) => Err("port is not a number in 1..=65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_test_config_are_valid() {
        MembershipConfig::default().validate().expect("default");
        MembershipConfig::for_test(7000)
            .validate()
            .expect("for_test");
    }

    #[test]
    fn each_rule_names_the_value() {
        let ok = MembershipConfig::for_test(7000);
        let check = |config: MembershipConfig| config.validate().expect_err("invalid");
        assert!(matches!(
            check(MembershipConfig {
                node_id: "a b".into(),
                ..ok.clone()
            }),
            ConfigError::InvalidNodeId { .. }
        ));
        assert!(matches!(
            check(MembershipConfig {
                node_id: "n".repeat(256),
                ..ok.clone()
            }),
            ConfigError::InvalidNodeId { .. }
        ));
        assert_eq!(
            check(MembershipConfig {
                cluster_id: String::new(),
                ..ok.clone()
            }),
            ConfigError::EmptyClusterId
        );
        assert!(matches!(
            check(MembershipConfig {
                gossip_interval: Duration::from_millis(1),
                ..ok.clone()
            }),
            ConfigError::GossipIntervalTooShort { .. }
        ));
        assert_eq!(
            check(MembershipConfig {
                dead_after: Duration::from_millis(700),
                ..ok.clone()
            }),
            ConfigError::DeadAfterTooShort {
                dead_after: Duration::from_millis(700),
                min: Duration::from_millis(800),
            }
        );
        assert!(matches!(
            check(MembershipConfig {
                dead_node_grace_period: Duration::from_secs(1),
                ..ok.clone()
            }),
            ConfigError::GracePeriodTooShort { .. }
        ));
        let anywhere = SocketAddr::from(([0, 0, 0, 0], 7000));
        assert!(matches!(
            check(MembershipConfig {
                gossip_advertise: anywhere,
                ..ok.clone()
            }),
            ConfigError::UnreachableAdvertise { .. }
        ));
        let port_zero = SocketAddr::from(([127, 0, 0, 1], 0));
        assert!(matches!(
            check(MembershipConfig {
                gossip_listen: port_zero,
                ..ok.clone()
            }),
            ConfigError::ListenPortZero { .. }
        ));
        let seeds = vec!["mesh:7946".to_owned(), "mesh".to_owned()];
        assert_eq!(
            check(MembershipConfig { seeds, ..ok }),
            ConfigError::InvalidSeed {
                seed: "mesh".into(),
                reason: "no port"
            }
        );
    }

    #[test]
    fn seeds_are_host_and_port() {
        for good in [
            "10.0.0.1:7946",
            "[::1]:7946",
            "spheromesh:7946",
            "a.b-c.internal:1",
        ] {
            assert_eq!(check_seed(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "mesh",
            ":7946",
            "mesh:",
            "mesh:0",
            "mesh:65536",
            "::1:7946",
            "a b:1",
        ] {
            assert!(check_seed(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn detector_bounds_detection_by_dead_after() {
        let detector = MembershipConfig::default().failure_detector();
        // 2 s / 200 ms = 10 rounds, one left for the evaluation.
        assert!((detector.phi_threshold - 9.0).abs() < 1e-9);
        assert_eq!(detector.initial_interval, DEFAULT_GOSSIP_INTERVAL);
        assert_eq!(detector.max_interval, DEFAULT_DEAD_AFTER);
        assert_eq!(
            detector.dead_node_grace_period,
            DEFAULT_DEAD_NODE_GRACE_PERIOD
        );
        assert_eq!(detector.sampling_window_size, SAMPLING_WINDOW);
    }
}
