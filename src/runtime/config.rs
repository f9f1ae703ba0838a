//! The resolved settings of one node (the command line parses into this).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use spheromesh_mesh::security::ClusterKey;

use crate::enrolment::EnrolSettings;
use crate::http::ApiToken;
use crate::node::ExecutorLimits;
use crate::scaling::ScalingSettings;

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
    /// Get credentials from an enrolment CA at start instead (exclusive with `tls_dir`).
    pub enrolment: Option<EnrolSettings>,
    /// Least time the HTTP listener stays open after draining starts.
    pub drain_listen: Duration,
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
    /// Service time measured before joining (the model's second warm-up pass); the node
    /// advertises it until its first task is measured. `None` for the test double.
    pub measured_service: Option<Duration>,
    /// When set, every HTTP route but the health probes requires this bearer token.
    pub api_token: Option<ApiToken>,
    /// Targets of the autoscaling signal (validated).
    pub scaling: ScalingSettings,
}

impl NodeConfig {
    /// The address peers reach `bound` at: `advertise_host`, else the bound IP, else (bound
    /// to 0.0.0.0) the local address of the route to the first seed, else 127.0.0.1.
    ///
    /// Advertising 127.0.0.1 to peers on other hosts would make them dial themselves.
    pub fn advertised(&self, bound: SocketAddr) -> SocketAddr {
        let ip = self.advertise_host.unwrap_or_else(|| {
            if bound.ip().is_unspecified() {
                self.route_to_seeds()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
            } else {
                bound.ip()
            }
        });
        SocketAddr::new(ip, bound.port())
    }

    /// The local IP the OS would use to reach the first resolvable, non-loopback seed
    /// (a connected UDP socket sends nothing; it only picks the route).
    fn route_to_seeds(&self) -> Option<IpAddr> {
        use std::net::{ToSocketAddrs, UdpSocket};
        self.seeds.iter().find_map(|seed| {
            let target = seed
                .to_socket_addrs()
                .ok()?
                .find(|a| !a.ip().is_loopback())?;
            let socket = UdpSocket::bind(if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })
            .ok()?;
            socket.connect(target).ok()?;
            socket.local_addr().ok().map(|a| a.ip())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seeds: &[&str], advertise_host: Option<IpAddr>) -> NodeConfig {
        NodeConfig {
            instance_id: "n".into(),
            cluster_id: "c".into(),
            http_listen: "0.0.0.0:0".parse().expect("addr"),
            quic_listen: "0.0.0.0:0".parse().expect("addr"),
            gossip_listen: "0.0.0.0:0".parse().expect("addr"),
            advertise_host,
            seeds: seeds.iter().map(|s| (*s).to_owned()).collect(),
            model_path: String::new(),
            limits: ExecutorLimits {
                capacity: 1,
                queue_limit: 0,
                inference_threads: 1,
            },
            tls_dir: None,
            enrolment: None,
            drain_listen: Duration::ZERO,
            cluster_key: None,
            drain_grace: Duration::from_secs(1),
            gossip_interval: Duration::from_millis(200),
            dead_after: Duration::from_secs(2),
            request_timeout: Duration::from_secs(1),
            uploads_root: None,
            http_body_budget: 1,
            measured_service: None,
            scaling: ScalingSettings::default(),
            api_token: None,
        }
    }

    #[test]
    fn advertised_address_never_defaults_to_loopback_for_remote_seeds() {
        let any: SocketAddr = "0.0.0.0:5002".parse().expect("addr");
        let local_only = config(&["127.0.0.1:7946"], None).advertised(any);
        assert_eq!(local_only.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        // A documentation-range address routes via the default interface, if there is one.
        if let Some(ip) = config(&["192.0.2.1:7946"], None).route_to_seeds() {
            assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
        }
        let explicit: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(config(&[], Some(explicit)).advertised(any).ip(), explicit);
        let bound: SocketAddr = "10.9.9.9:1".parse().expect("addr");
        assert_eq!(config(&[], None).advertised(bound), bound);
    }
}
