//! The keys each node gossips about itself, how often they change, and how a peer's keys
//! become a routing [`PeerView`].
//!
//! chitchat replicates each node's key-value map with Scuttlebutt (van Renesse et al.,
//! "Efficient Reconciliation and Flow Control for Anti-Entropy Protocols", LADIS 2008): every
//! write gets a new version and a delta carries each changed key once. Load changes with
//! every task, so writes are coalesced: [`Publisher`] keeps the latest [`LoadReport`] and the
//! membership task writes it once per gossip round, which is as often as peers could see it
//! anyway. chitchat skips a write whose value did not change, so an idle node gossips no
//! new versions at all.
//!
//! Values are plain text: integers in decimal, `service_ewma_ms` in milliseconds with
//! microsecond precision (empty until measured), addresses as `ip:port`.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::routing::{NodeId, PeerView};

/// Key of the node's [`NodeStatus`].
pub const KEY_STATUS: &str = "status";
/// Key of the tasks running plus queued.
pub const KEY_ACTIVE: &str = "active";
/// Key of the parallel task slots.
pub const KEY_CAPACITY: &str = "capacity";
/// Key of the queue room beyond `capacity`.
pub const KEY_QUEUE_LIMIT: &str = "queue_limit";
/// Key of the mean task time in milliseconds (empty until measured).
pub const KEY_SERVICE_EWMA_MS: &str = "service_ewma_ms";
/// Key of the HTTP API address.
pub const KEY_HTTP_ADDR: &str = "http_addr";
/// Key of the QUIC forward endpoint address.
pub const KEY_QUIC_ADDR: &str = "quic_addr";
/// Key of the software version.
pub const KEY_VERSION: &str = "version";
/// Key of the RabbitMQ task queue depth the node last saw (absent without a broker).
pub const KEY_QUEUE_DEPTH: &str = "queue_depth";
/// Key of the node's work counters and latency histogram ([`NodeStats`]).
pub const KEY_STATS: &str = "stats";
/// Key of the compute device the node's model runs on (free text, for operators).
pub const KEY_DEVICE: &str = "device";
/// Key of the model the node serves (free text, for operators).
pub const KEY_MODEL: &str = "model";
/// Key saying whether the node takes client work itself (`1`) or not (`0`): entry nodes
/// compete for their peers' free room, see `routing::Estimate::senders`.
pub const KEY_ENTRY: &str = "entry";

/// Where a node is in its life, as gossiped under [`KEY_STATUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    /// Up but not yet able to serve (model loading).
    Starting,
    /// Serving and accepting tasks.
    Ready,
    /// Shutting down: finishes its tasks, takes no new ones.
    Draining,
}

impl NodeStatus {
    /// The gossiped text: `starting`, `ready` or `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Starting => "starting",
            NodeStatus::Ready => "ready",
            NodeStatus::Draining => "draining",
        }
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status text that is none of `starting`, `ready`, `draining`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown node status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for NodeStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "starting" => Ok(NodeStatus::Starting),
            "ready" => Ok(NodeStatus::Ready),
            "draining" => Ok(NodeStatus::Draining),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// This node's load, as published to its peers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// Tasks running plus queued.
    pub active: u32,
    /// Tasks run in parallel (slots).
    pub capacity: u32,
    /// Tasks queued beyond `capacity` before answering busy.
    pub queue_limit: u32,
    /// Mean task time; `None` until measured.
    pub service_ewma: Option<Duration>,
    /// Depth of the RabbitMQ task queue at this node's last look; `None` without a broker.
    pub queue_depth: Option<u64>,
    /// The node took client work (HTTP or broker) recently.
    pub entry: bool,
}

/// Upper bounds, in milliseconds, of the buckets of [`NodeStats::latency_buckets`]; a last
/// bucket without bound follows.
pub const LATENCY_BUCKETS_MS: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 120_000,
];

/// What a node has done since it started, for operators (never for routing): counters and
/// a histogram of the time its tasks took. Peers sum them into mesh totals.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeStats {
    /// Tasks run here that succeeded.
    pub done: u64,
    /// Tasks run here that failed or timed out.
    pub failed: u64,
    /// Tasks peers sent here.
    pub forwarded_in: u64,
    /// Tasks this node sent to peers.
    pub forwarded_out: u64,
    /// Tasks run here by duration: `latency_buckets[i]` counts those within
    /// `LATENCY_BUCKETS_MS[i]` and above the bound before; the last entry counts the rest.
    /// Not cumulative; `LATENCY_BUCKETS_MS.len() + 1` entries when well formed.
    pub latency_buckets: Vec<u64>,
}

impl NodeStats {
    /// The gossiped text: `done failed in out b0,b1,...`.
    fn encode(&self) -> String {
        let buckets: Vec<String> = self.latency_buckets.iter().map(u64::to_string).collect();
        format!(
            "{} {} {} {} {}",
            self.done,
            self.failed,
            self.forwarded_in,
            self.forwarded_out,
            buckets.join(",")
        )
    }

    /// Reads [`NodeStats::encode`]'s text; `None` if it is malformed.
    fn decode(text: &str) -> Option<NodeStats> {
        let mut parts = text.split(' ');
        let mut number = || parts.next()?.parse::<u64>().ok();
        let (done, failed, forwarded_in, forwarded_out) =
            (number()?, number()?, number()?, number()?);
        let buckets = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let latency_buckets = buckets
            .split(',')
            .map(|b| b.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()?;
        (latency_buckets.len() == LATENCY_BUCKETS_MS.len() + 1).then_some(NodeStats {
            done,
            failed,
            forwarded_in,
            forwarded_out,
            latency_buckets,
        })
    }
}

/// Addresses a peer publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddresses {
    /// Where it gossips.
    pub gossip: SocketAddr,
    /// Its HTTP API, if published.
    pub http: Option<SocketAddr>,
    /// Its QUIC forward endpoint, if published.
    pub quic: Option<SocketAddr>,
}

/// Everything this node publishes, and whether it changed since the last flush.
#[derive(Debug)]
pub(crate) struct Publisher {
    inner: Mutex<Published>,
}

#[derive(Debug)]
struct Published {
    status: NodeStatus,
    load: Option<LoadReport>,
    stats: Option<NodeStats>,
    /// Static keys: addresses and version.
    fixed: Vec<(&'static str, String)>,
    dirty: bool,
}

impl Publisher {
    /// Starts in `status` with no load; `fixed` are keys that never change.
    pub(crate) fn new(status: NodeStatus, fixed: Vec<(&'static str, String)>) -> Self {
        Publisher {
            inner: Mutex::new(Published {
                status,
                load: None,
                stats: None,
                fixed,
                dirty: false,
            }),
        }
    }

    /// Replaces the load to publish at the next flush.
    pub(crate) fn set_load(&self, report: &LoadReport) {
        let mut inner = self.lock();
        inner.dirty |= inner.load.as_ref() != Some(report);
        inner.load = Some(report.clone());
    }

    /// Replaces the counters to publish at the next flush.
    pub(crate) fn set_stats(&self, stats: &NodeStats) {
        let mut inner = self.lock();
        inner.dirty |= inner.stats.as_ref() != Some(stats);
        inner.stats = Some(stats.clone());
    }

    /// Replaces the status to publish at the next flush.
    pub(crate) fn set_status(&self, status: NodeStatus) {
        let mut inner = self.lock();
        inner.dirty |= inner.status != status;
        inner.status = status;
    }

    /// The status last set.
    pub(crate) fn status(&self) -> NodeStatus {
        self.lock().status
    }

    /// The keys to write if anything changed since the last call, else `None`.
    pub(crate) fn take_changes(&self) -> Option<Vec<(String, String)>> {
        let mut inner = self.lock();
        if !std::mem::take(&mut inner.dirty) {
            return None;
        }
        Some(inner.key_values())
    }

    /// Every key, for a (re)start of chitchat; clears the change flag.
    pub(crate) fn all(&self) -> Vec<(String, String)> {
        let mut inner = self.lock();
        inner.dirty = false;
        inner.key_values()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Published> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Published {
    fn key_values(&self) -> Vec<(String, String)> {
        let mut kvs = vec![(KEY_STATUS.to_owned(), self.status.as_str().to_owned())];
        if let Some(load) = &self.load {
            kvs.extend([
                (KEY_ACTIVE.to_owned(), load.active.to_string()),
                (KEY_CAPACITY.to_owned(), load.capacity.to_string()),
                (KEY_QUEUE_LIMIT.to_owned(), load.queue_limit.to_string()),
                (
                    KEY_SERVICE_EWMA_MS.to_owned(),
                    format_ewma(load.service_ewma),
                ),
            ]);
            kvs.push((KEY_ENTRY.to_owned(), u8::from(load.entry).to_string()));
            kvs.extend(
                load.queue_depth
                    .map(|depth| (KEY_QUEUE_DEPTH.to_owned(), depth.to_string())),
            );
        }
        kvs.extend(
            self.stats
                .as_ref()
                .map(|stats| (KEY_STATS.to_owned(), stats.encode())),
        );
        kvs.extend(self.fixed.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        kvs
    }
}

/// What a node says about itself for operators: free text, never read by routing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeDescription {
    /// The compute device its model runs on, e.g. `cpu` or `cuda:0`.
    pub device: Option<String>,
    /// The model it serves, e.g. a file name.
    pub model: Option<String>,
}

/// The static keys of a node: its addresses, version and description.
pub(crate) fn fixed_keys(
    http: Option<SocketAddr>,
    quic: Option<SocketAddr>,
    version: &str,
    description: &NodeDescription,
) -> Vec<(&'static str, String)> {
    let mut keys = vec![(KEY_VERSION, version.to_owned())];
    keys.extend(description.device.clone().map(|d| (KEY_DEVICE, d)));
    keys.extend(description.model.clone().map(|m| (KEY_MODEL, m)));
    keys.extend(http.map(|addr| (KEY_HTTP_ADDR, addr.to_string())));
    keys.extend(quic.map(|addr| (KEY_QUIC_ADDR, addr.to_string())));
    keys
}

fn format_ewma(ewma: Option<Duration>) -> String {
    ewma.map_or_else(String::new, |d| format!("{:.3}", d.as_secs_f64() * 1e3))
}

fn parse_ewma(text: &str) -> Option<Option<Duration>> {
    if text.is_empty() {
        return Some(None);
    }
    let ms: f64 = text.parse().ok()?;
    Duration::try_from_secs_f64(ms / 1e3).ok().map(Some)
}

/// A peer's state as seen through its keys.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedPeer {
    pub(crate) view: PeerView,
    pub(crate) addresses: PeerAddresses,
    pub(crate) version: Option<String>,
    pub(crate) queue_depth: Option<u64>,
    pub(crate) description: NodeDescription,
    pub(crate) stats: Option<NodeStats>,
}

/// Reads a peer's keys through `get`. The peer is ready only if its status is `ready` and its
/// load keys and QUIC address are all present and well formed; anything missing or garbled
/// leaves it not ready (with zero load), never an error.
pub(crate) fn parse_peer<'a>(
    id: NodeId,
    gossip: SocketAddr,
    get: impl Fn(&str) -> Option<&'a str>,
) -> ParsedPeer {
    let status = get(KEY_STATUS).and_then(|s| s.parse::<NodeStatus>().ok());
    let number = |key| get(key).and_then(|v| v.parse::<u32>().ok());
    let load = (|| {
        Some(LoadReport {
            active: number(KEY_ACTIVE)?,
            capacity: number(KEY_CAPACITY)?,
            queue_limit: number(KEY_QUEUE_LIMIT)?,
            service_ewma: parse_ewma(get(KEY_SERVICE_EWMA_MS)?)?,
            queue_depth: get(KEY_QUEUE_DEPTH).and_then(|v| v.parse().ok()),
            entry: get(KEY_ENTRY) == Some("1"),
        })
    })();
    let addr = |key| get(key).and_then(|v| v.parse::<SocketAddr>().ok());
    let addresses = PeerAddresses {
        gossip,
        http: addr(KEY_HTTP_ADDR),
        quic: addr(KEY_QUIC_ADDR),
    };
    let ready = status == Some(NodeStatus::Ready) && load.is_some() && addresses.quic.is_some();
    let load = load.unwrap_or_default();
    ParsedPeer {
        view: PeerView {
            id,
            ready,
            draining: status == Some(NodeStatus::Draining),
            active: load.active,
            capacity: load.capacity,
            queue_limit: load.queue_limit,
            service_ewma: load.service_ewma,
            local_inflight: 0,
            breaker_open: false,
            entry: load.entry,
            pulls_work: load.queue_depth.is_some(),
        },
        addresses,
        version: get(KEY_VERSION).map(str::to_owned),
        queue_depth: load.queue_depth,
        description: NodeDescription {
            device: get(KEY_DEVICE).map(str::to_owned),
            model: get(KEY_MODEL).map(str::to_owned),
        },
        stats: get(KEY_STATS).and_then(NodeStats::decode),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const GOSSIP: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7946);

    fn parse(kvs: &[(String, String)]) -> ParsedPeer {
        let map: HashMap<&str, &str> = kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        parse_peer(NodeId::new("peer"), GOSSIP, |key| map.get(key).copied())
    }

    fn publisher() -> Publisher {
        let quic = SocketAddr::from(([10, 0, 0, 2], 4433));
        let http = SocketAddr::from(([10, 0, 0, 2], 8000));
        Publisher::new(
            NodeStatus::Starting,
            fixed_keys(
                Some(http),
                Some(quic),
                "1.2.3",
                &NodeDescription {
                    device: Some("cuda:0".into()),
                    model: Some("m.safetensors".into()),
                },
            ),
        )
    }

    #[test]
    fn status_text_round_trips() {
        for status in [
            NodeStatus::Starting,
            NodeStatus::Ready,
            NodeStatus::Draining,
        ] {
            assert_eq!(status.as_str().parse(), Ok(status));
        }
        assert_eq!("up".parse::<NodeStatus>(), Err(UnknownStatus("up".into())));
    }

    #[test]
    fn published_keys_parse_back_into_the_same_view() {
        let publisher = publisher();
        let report = LoadReport {
            active: 3,
            capacity: 2,
            queue_limit: 8,
            service_ewma: Some(Duration::from_micros(250_125)),
            queue_depth: None,
            entry: false,
        };
        publisher.set_load(&report);
        publisher.set_status(NodeStatus::Ready);
        let parsed = parse(&publisher.all());
        assert!(parsed.view.ready && !parsed.view.draining);
        assert_eq!(
            (
                parsed.view.active,
                parsed.view.capacity,
                parsed.view.queue_limit
            ),
            (3, 2, 8)
        );
        assert_eq!(parsed.view.service_ewma, report.service_ewma);
        assert_eq!(
            parsed.addresses.quic,
            Some(SocketAddr::from(([10, 0, 0, 2], 4433)))
        );
        assert_eq!(
            parsed.addresses.http,
            Some(SocketAddr::from(([10, 0, 0, 2], 8000)))
        );
        assert_eq!(parsed.version.as_deref(), Some("1.2.3"));
        assert_eq!(parsed.description.device.as_deref(), Some("cuda:0"));
        assert_eq!(parsed.description.model.as_deref(), Some("m.safetensors"));

        // No EWMA yet is fine; draining is never ready.
        publisher.set_load(&LoadReport {
            service_ewma: None,
            queue_depth: None,
            entry: false,
            ..report
        });
        publisher.set_status(NodeStatus::Draining);
        let parsed = parse(&publisher.all());
        assert!(parsed.view.draining && !parsed.view.ready);
        assert_eq!(parsed.view.service_ewma, None);
    }

    #[test]
    fn missing_or_garbled_keys_mean_not_ready() {
        let publisher = publisher();
        publisher.set_status(NodeStatus::Ready);
        // No load report yet.
        assert!(!parse(&publisher.all()).view.ready);
        publisher.set_load(&LoadReport {
            capacity: 1,
            ..LoadReport::default()
        });
        let good = publisher.all();
        assert!(parse(&good).view.ready);
        for (key, bad) in [
            (KEY_STATUS, "up"),
            (KEY_ACTIVE, "-1"),
            (KEY_CAPACITY, "many"),
            (KEY_QUEUE_LIMIT, ""),
            (KEY_SERVICE_EWMA_MS, "NaN"),
            (KEY_SERVICE_EWMA_MS, "-5"),
            (KEY_QUIC_ADDR, "localhost"),
        ] {
            let garbled: Vec<_> = good
                .iter()
                .map(|(k, v)| (k.clone(), if k == key { bad.to_owned() } else { v.clone() }))
                .collect();
            let view = parse(&garbled).view;
            assert!(!view.ready && !view.is_candidate(), "{key}={bad}");
            let missing: Vec<_> = good.iter().filter(|(k, _)| k != key).cloned().collect();
            assert!(!parse(&missing).view.ready, "{key} missing");
        }
    }

    #[test]
    fn changes_are_coalesced_until_taken() {
        let publisher = publisher();
        assert!(publisher.take_changes().is_none());
        for active in 0..100 {
            publisher.set_load(&LoadReport {
                active,
                ..LoadReport::default()
            });
        }
        let changes = publisher.take_changes().expect("changed");
        assert!(changes.contains(&(KEY_ACTIVE.to_owned(), "99".to_owned())));
        assert!(publisher.take_changes().is_none());
        // Setting the same values again is not a change.
        publisher.set_load(&LoadReport {
            active: 99,
            ..LoadReport::default()
        });
        publisher.set_status(NodeStatus::Starting);
        assert!(publisher.take_changes().is_none());
        publisher.set_status(NodeStatus::Draining);
        assert!(publisher.take_changes().is_some());
    }

    #[test]
    fn stats_round_trip_and_garbled_stats_are_absent() {
        let publisher = publisher();
        assert_eq!(parse(&publisher.all()).stats, None);
        let stats = NodeStats {
            done: 7,
            failed: 1,
            forwarded_in: 3,
            forwarded_out: 2,
            latency_buckets: (0..=LATENCY_BUCKETS_MS.len() as u64).collect(),
        };
        publisher.set_stats(&stats);
        assert!(publisher.take_changes().is_some());
        publisher.set_stats(&stats);
        assert!(
            publisher.take_changes().is_none(),
            "same stats are no change"
        );
        assert_eq!(parse(&publisher.all()).stats, Some(stats.clone()));
        for bad in [
            "",
            "1 2 3",
            "1 2 3 4 5",
            "1 2 3 4 1,2",
            "a 2 3 4 0,0,0,0,0,0,0,0,0,0,0,0,0",
            "1 2 3 4 0,0,0,0,0,0,0,0,0,0,0,0,0 9",
        ] {
            let kvs = vec![(KEY_STATS.to_owned(), bad.to_owned())];
            assert_eq!(parse(&kvs).stats, None, "{bad:?}");
        }
    }
}
