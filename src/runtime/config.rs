//! The resolved settings of one node (the command line parses into this).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use spheromesh_mesh::security::ClusterKey;

use crate::node::ExecutorLimits;

/// Everything `spheromesh node` needs to run.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Identity: labels metrics, logs, `/health` and `processed_by`; names the node's
    /// certificate.
    pub instance_id: String,
    /// Cluster name; gossip from another cluster is refused.
    pub cluster_id: String,
    /// HTTP API listen address (TCP).
    pub http_listen: SocketAddr,
    /// QUIC forward endpoint listen address (UDP).
    pub quic_listen: SocketAddr,
    /// Gossip listen address (UDP).
    pub gossip_listen: SocketAddr,
    /// Host peers reach this node at; `None`: the listen IP, or 127.0.0.1 when it is
    /// unspecified (0.0.0.0).
    pub advertise_host: Option<IpAddr>,
    /// Seeds as `host:port` (gossip addresses).
    pub seeds: Vec<String>,
    /// The `--model` value, for `/health` and logs.
    pub model_path: String,
    /// Slots, queue and compute permits.
    pub limits: ExecutorLimits,
    /// Folder with `ca.pem`, `<instance_id>.pem` and `<instance_id>.key`; `None` uses
    /// throwaway credentials (this node then cannot exchange tasks with any peer).
    pub tls_dir: Option<PathBuf>,
    /// Key sealing gossip; `None` generates a random one (this node then never joins).
    pub cluster_key: Option<ClusterKey>,
    /// Time in-flight work gets to finish on SIGTERM.
    pub drain_grace: Duration,
    /// Gossip round period.
    pub gossip_interval: Duration,
    /// Silence after which a peer is dead.
    pub dead_after: Duration,
    /// Longest time an HTTP request may take.
    pub request_timeout: Duration,
    /// Root of JSON `image_path` requests; `None` refuses them.
    pub uploads_root: Option<PathBuf>,
    /// Bytes of HTTP request bodies held at once; beyond it requests get 503.
    pub http_body_budget: usize,
}

impl NodeConfig {
    /// The address peers reach `bound` at.
    pub fn advertised(&self, bound: SocketAddr) -> SocketAddr {
        let ip = self.advertise_host.unwrap_or_else(|| {
            if bound.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                bound.ip()
            }
        });
        SocketAddr::new(ip, bound.port())
    }
}
