//! Cluster tests: real UDP on 127.0.0.1, real time, default timings (200 ms rounds, 2 s
//! `dead_after`). Ports come from binding `127.0.0.1:0` first. Measured times are printed
//! (`cargo test -- --nocapture`).

use std::future::Future;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use super::*;
use crate::routing::NodeId;
use crate::security::ClusterKey;

/// Distinct free UDP ports: all bound at once, then released.
fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("addr").port())
        .collect()
}

fn config(port: u16, seeds: &[String]) -> MembershipConfig {
    MembershipConfig {
        seeds: seeds.to_vec(),
        ..MembershipConfig::for_test(port)
    }
}

fn seed(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn load(active: u32) -> LoadReport {
    LoadReport {
        active,
        capacity: 2,
        queue_limit: 4,
        service_ewma: Some(Duration::from_micros(123_456)),
        queue_depth: None,
        entry: false,
    }
}

async fn start_ready(config: MembershipConfig) -> Membership {
    let node = Membership::start(config).await.expect("start");
    node.set_status(NodeStatus::Ready);
    node.publish(&load(0));
    node
}

/// Starts `ports.len()` nodes, all seeded with the first.
async fn cluster(ports: &[u16]) -> Vec<Membership> {
    let mut nodes = Vec::new();
    for &port in ports {
        nodes.push(start_ready(config(port, &[seed(ports[0])])).await);
    }
    nodes
}

/// Polls `done` every 20 ms until it holds or `limit` passes; the time it took.
async fn wait_for<F, Fut>(limit: Duration, mut done: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn sees(node: &Membership, id: &NodeId) -> bool {
    node.peers().iter().any(|peer| &peer.id == id)
}

fn all_see(nodes: &[Membership], count: usize) -> bool {
    nodes.iter().all(|node| node.peers().len() == count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge() {
    let ports = free_ports(5);
    let nodes = cluster(&ports).await;
    let took = wait_for(Duration::from_secs(5), || async { all_see(&nodes, 4) })
        .await
        .expect("5 nodes did not converge within 5 s");
    println!("five_nodes_converge: every node sees 4 live peers after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_via_dns_seed_is_seen_by_all() {
    let ports = free_ports(5);
    let mut nodes = cluster(&ports[..4]).await;
    wait_for(Duration::from_secs(5), || async { all_see(&nodes, 3) })
        .await
        .expect("4 nodes did not converge");
    // A DNS name as seed, pointing at a node other than the first.
    let late = start_ready(config(ports[4], &[format!("localhost:{}", ports[2])])).await;
    nodes.push(late);
    let took = wait_for(Duration::from_secs(5), || async { all_see(&nodes, 4) })
        .await
        .expect("late joiner not seen by all within 5 s");
    println!("late_joiner: seen by all 4 and sees all 4 after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_leaves_every_live_set_within_3s() {
    let ports = free_ports(5);
    let mut nodes = cluster(&ports).await;
    wait_for(Duration::from_secs(5), || async { all_see(&nodes, 4) })
        .await
        .expect("did not converge");
    // Let the detectors learn the real heartbeat rate, as in a running cluster.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(all_see(&nodes, 4), "a live peer was declared dead");

    let victim = nodes.pop().expect("5 nodes");
    let victim_id = victim.node_id().clone();
    drop(victim); // abort: no goodbye, like a crash
    let mut last_seen = Duration::ZERO;
    let took = wait_for(Duration::from_secs(6), || {
        let gone = nodes.iter().all(|node| !sees(node, &victim_id));
        for node in &nodes {
            if let Some(peer) = node.peers().iter().find(|p| p.id == victim_id) {
                last_seen = last_seen.max(peer.last_heard);
            }
        }
        async move { gone }
    })
    .await
    .expect("killed node still live after 6 s");
    println!(
        "killed_node: gone from all 4 live sets after {took:?} (last_heard reached {last_seen:?})"
    );
    assert!(took < Duration::from_secs(3), "detection took {took:?}");
    assert!(all_see(&nodes, 3), "a live peer was declared dead");
    assert!(nodes.iter().all(|node| node.dead_count() == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_or_cluster_never_joins_and_is_counted() {
    let ports = free_ports(5);
    let nodes = cluster(&ports[..3]).await;
    let seeds = [seed(ports[0]), seed(ports[1])];
    let wrong_key = MembershipConfig {
        cluster_key: Some(ClusterKey::from_bytes([0xee; 32])),
        ..config(ports[3], &seeds)
    };
    let wrong_cluster = MembershipConfig {
        cluster_id: "other-cluster".to_owned(),
        ..config(ports[4], &seeds)
    };
    let intruders = [
        start_ready(wrong_key).await,
        start_ready(wrong_cluster).await,
    ];
    wait_for(Duration::from_secs(5), || async { all_see(&nodes, 2) })
        .await
        .expect("did not converge");
    // Ten rounds of the intruders knocking at both seeds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in &nodes {
        for intruder in &intruders {
            assert!(!sees(node, intruder.node_id()));
        }
        assert_eq!(node.peers().len(), 2);
    }
    for intruder in &intruders {
        assert!(intruder.peers().is_empty());
    }
    for node in &nodes[..2] {
        let stats = node.gossip_stats();
        println!("wrong_key: seed {} stats {stats:?}", node.node_id());
        assert!(stats.dropped_unauthenticated >= 10, "{stats:?}");
        assert_eq!(
            stats.dropped_replay + stats.dropped_malformed,
            0,
            "{stats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_propagates_within_two_rounds() {
    let ports = free_ports(3);
    let nodes = cluster(&ports).await;
    wait_for(Duration::from_secs(5), || async { all_see(&nodes, 2) })
        .await
        .expect("did not converge");
    let id = nodes[0].node_id().clone();
    nodes[0].set_draining();
    let took = wait_for(Duration::from_secs(3), || async {
        nodes[1..].iter().all(|node| {
            node.peers()
                .iter()
                .any(|p| p.id == id && p.view.draining && !p.view.is_candidate())
        })
    })
    .await
    .expect("draining not seen within 3 s");
    println!("draining: seen by both peers after {took:?}");
    // Publishing waits for the next round, then one round of gossip; allow scheduling slack.
    assert!(took < Duration::from_millis(1_000), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_keys_round_trip_into_peer_view() {
    let ports = free_ports(2);
    let nodes = cluster(&ports).await;
    // Many reports within one round: only the last is published.
    for active in 0..=5 {
        nodes[1].publish(&load(active));
    }
    let id = nodes[1].node_id().clone();
    wait_for(Duration::from_secs(5), || async {
        nodes[0]
            .peers()
            .iter()
            .any(|p| p.id == id && p.view.active == 5)
    })
    .await
    .expect("load not seen");
    let peer = nodes[0]
        .peers()
        .into_iter()
        .find(|p| p.id == id)
        .expect("peer");
    assert!(peer.view.ready && !peer.view.draining && peer.view.is_candidate());
    assert_eq!(
        (peer.view.capacity, peer.view.queue_limit),
        (2, 4),
        "{peer:?}"
    );
    assert_eq!(peer.view.service_ewma, Some(Duration::from_micros(123_456)));
    assert_eq!(peer.addresses.gossip.port(), ports[1]);
    assert_eq!(peer.addresses.quic.map(|a| a.port()), Some(ports[1]));
    assert_eq!(peer.generation, nodes[1].generation());
    assert_eq!(peer.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(peer.last_heard < Duration::from_secs(1), "{peer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicked_gossip_is_restarted_under_a_new_generation() {
    let ports = free_ports(3);
    let nodes = cluster(&ports).await;
    wait_for(Duration::from_secs(5), || async { all_see(&nodes, 2) })
        .await
        .expect("did not converge");
    let before = nodes[2].generation();
    nodes[2].transport.panic_next_recv();
    wait_for(Duration::from_secs(3), || async {
        nodes[2].restarts() == 1
    })
    .await
    .expect("not restarted");
    let after = nodes[2].generation();
    assert!(after > before);
    let id = nodes[2].node_id().clone();
    let took = wait_for(Duration::from_secs(5), || async {
        nodes[..2].iter().all(|node| {
            node.peers()
                .iter()
                .any(|p| p.id == id && p.generation == after && p.view.ready)
        }) && nodes[2].peers().len() == 2
    })
    .await
    .expect("restarted node not seen under its new generation");
    println!("restart: new generation seen by all after {took:?}");
    // Let the old generation die: it is not counted as a dead peer, the node is live.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(all_see(&nodes, 2));
    assert!(nodes.iter().all(|node| node.dead_count() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_announces_draining_then_leaves() {
    let ports = free_ports(2);
    let mut nodes = cluster(&ports).await;
    wait_for(Duration::from_secs(5), || async { all_see(&nodes, 1) })
        .await
        .expect("did not converge");
    let leaving = nodes.pop().expect("2 nodes");
    let id = leaving.node_id().clone();
    let shutdown = tokio::spawn(leaving.shutdown());
    wait_for(Duration::from_secs(2), || async {
        nodes[0]
            .peers()
            .iter()
            .any(|p| p.id == id && p.view.draining)
    })
    .await
    .expect("draining not announced");
    shutdown.await.expect("join").expect("clean shutdown");
    wait_for(Duration::from_secs(4), || async {
        nodes[0].peers().is_empty()
    })
    .await
    .expect("left node still live");
}

#[tokio::test]
async fn start_reports_config_and_bind_errors() {
    let bad = MembershipConfig {
        node_id: String::new(),
        ..MembershipConfig::for_test(7946)
    };
    assert!(matches!(
        Membership::start(bad).await,
        Err(MembershipError::Config(ConfigError::InvalidNodeId { .. }))
    ));
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    assert!(matches!(
        Membership::start(MembershipConfig::for_test(port)).await,
        Err(MembershipError::Start { .. })
    ));
}

/// Soak: clusters of 2, 3 and 5 nodes run for 20 s with no false death, then one node is
/// killed and the detection time printed. `cargo test -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs for about a minute"]
async fn soak_no_false_deaths_and_detection_by_cluster_size() {
    for size in [2usize, 3, 5] {
        let ports = free_ports(size);
        let mut nodes = cluster(&ports).await;
        wait_for(Duration::from_secs(5), || async {
            all_see(&nodes, size - 1)
        })
        .await
        .expect("did not converge");
        let soak = Instant::now();
        let mut worst = Duration::ZERO;
        while soak.elapsed() < Duration::from_secs(20) {
            assert!(
                all_see(&nodes, size - 1),
                "false death in a {size}-node cluster"
            );
            for node in &nodes {
                for peer in node.peers() {
                    worst = worst.max(peer.last_heard);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let victim = nodes.pop().expect("node");
        let victim_id = victim.node_id().clone();
        drop(victim);
        let took = wait_for(Duration::from_secs(6), || async {
            nodes.iter().all(|node| !sees(node, &victim_id))
        })
        .await
        .expect("not detected within 6 s");
        println!(
            "soak: {size} nodes, 20 s without false death (longest silence {worst:?}), \
             kill detected by all after {took:?}"
        );
        assert!(took < Duration::from_secs(3));
    }
}

#[test]
fn gossip_health_is_stopped_first_then_stuck_past_twice_dead_after() {
    use super::membership::classify_gossip;
    let dead = Duration::from_secs(2);
    let fresh = Duration::from_millis(100);
    assert_eq!(classify_gossip(false, fresh, dead), GossipHealth::Running);
    assert_eq!(
        classify_gossip(false, Duration::from_secs(4), dead),
        GossipHealth::Running,
        "exactly twice dead_after is still running"
    );
    assert_eq!(
        classify_gossip(false, Duration::from_secs(5), dead),
        GossipHealth::Stuck {
            since: Duration::from_secs(5)
        }
    );
    assert_eq!(classify_gossip(true, fresh, dead), GossipHealth::Stopped);
}

#[tokio::test]
async fn a_dead_membership_task_is_reported_not_hidden() {
    let port = free_ports(1)[0];
    let node = start_ready(config(port, &[])).await;
    assert_eq!(node.gossip_health(), GossipHealth::Running);
    node.abort_task_for_test();
    let until = Instant::now() + Duration::from_secs(5);
    while node.gossip_health() == GossipHealth::Running && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.gossip_health(), GossipHealth::Stopped);
}
