//! Cluster tests with real `spheromesh node` processes on loopback: gossip, QUIC forwarding
//! with mutual TLS, balancing, kill -9, SIGTERM drain, intruders, malformed frames, floods.
//!
//! Nodes run the synthetic engine (a labelled test double that only takes time) except
//! where a test says it uses the shipped model.

#[path = "nodes/mod.rs"]
mod nodes;

use std::time::{Duration, Instant};

use nodes::{get_json, inflight_to, load, mesh, png, routable, wait_until, Node, Pki, Spec, KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_converge_and_a_late_node_receives_work() {
    let pki = Pki::new("converge", KEY);
    let started = Instant::now();
    let mut nodes = mesh(&pki, 4, 50, 1).await;
    eprintln!(
        "4 nodes converged {:?} after the first start",
        started.elapsed()
    );
    pki.issue("node-5");
    let late = Node::start(
        &Spec::synthetic("node-5", 50, 1).seeds(&[nodes[0].gossip]),
        &pki,
    );
    nodes.push(late);
    for node in &nodes {
        let took = wait_until(Duration::from_secs(10), || async {
            routable(node).await.len() == 4
        })
        .await;
        assert!(
            took.is_some(),
            "{} does not route to all 4 peers",
            node.name
        );
    }
    // A load needing every slot, all into node-1: the late node takes part.
    let outcome = load(nodes[0].url("/segment"), png(64, 48), 100, 10, true).await;
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert_eq!(outcome.ok(), 100);
    let late_share = outcome.shares.get("node-5").copied().unwrap_or(0);
    assert!(
        late_share > 0,
        "the late node got no work: {:?}",
        outcome.shares
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_entry_node_spreads_work_over_three() {
    let pki = Pki::new("balance", KEY);
    let nodes = mesh(&pki, 3, 100, 2).await;
    // Concurrency = total slots, every request into node-1.
    let outcome = load(nodes[0].url("/segment"), png(64, 48), 180, 6, true).await;
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert_eq!(outcome.ok(), 180);
    eprintln!("shares: {:?}", outcome.shares);
    for node in &nodes {
        let share = outcome.shares.get(&node.name).copied().unwrap_or(0) as f64 / 180.0;
        assert!(
            (0.25..=0.45).contains(&share),
            "{} processed {:.0}% of the tasks: {:?}",
            node.name,
            share * 100.0,
            outcome.shares
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_request_and_leaves_routing_within_3s() {
    let pki = Pki::new("kill", KEY);
    let mut nodes = mesh(&pki, 3, 100, 2).await;
    let running = tokio::spawn(load(nodes[0].url("/segment"), png(64, 48), 240, 6, true));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[2].kill9();
    let killed_at = Instant::now();
    let mut gone_after = Vec::new();
    for survivor in &nodes[..2] {
        let took = wait_until(Duration::from_secs(10), || async {
            !routable(survivor).await.contains(&"node-3".to_owned())
        })
        .await
        .map(|_| killed_at.elapsed());
        gone_after.push(took);
    }
    let outcome = running.await.expect("load task");
    eprintln!(
        "node-3 out of routing after {gone_after:?}; shares {:?}",
        outcome.shares
    );
    assert!(
        outcome.failures.is_empty(),
        "failed requests: {:?}",
        outcome.failures
    );
    assert_eq!(outcome.ok(), 240);
    assert!(
        outcome.shares.get("node-3").copied().unwrap_or(0) > 0,
        "node-3 never worked"
    );
    for (survivor, took) in nodes[..2].iter().zip(gone_after) {
        let took = took.unwrap_or_else(|| panic!("{} still routes to node-3", survivor.name));
        assert!(
            took <= Duration::from_secs(3),
            "{}: {took:?}",
            survivor.name
        );
    }
}

/// A fault of a peer that has tasks in flight.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill9,
    /// SIGSTOP for this long, then SIGCONT.
    Stop(Duration),
}

/// Bound of the mesh issue for the slowest request through a peer's fault: `dead_after`
/// (2 s) + 1 s + one service time (100 ms), rounded up for a noisy 2-core machine.
const FAULT_BOUND: Duration = Duration::from_secs(4);

/// 3 nodes x 2 slots x 100 ms, closed-loop load of 3 (half the slots) into node-1; the
/// fault hits node-3 while node-1 has a forward in flight there. Every request must succeed,
/// none slower than [`FAULT_BOUND`].
async fn fault_with_tasks_in_flight(name: &str, fault: Fault) {
    let pki = Pki::new(name, KEY);
    let mut nodes = mesh(&pki, 3, 100, 2).await;
    let running = tokio::spawn(load(nodes[0].url("/segment"), png(64, 48), 150, 3, true));
    let caught = wait_until(Duration::from_secs(10), || async {
        inflight_to(&nodes[0], "node-3").await > 0
    })
    .await;
    assert!(
        caught.is_some(),
        "node-1 never had a task in flight on node-3"
    );
    let resume = match fault {
        Fault::Kill9 => {
            nodes[2].kill9();
            None
        }
        Fault::Stop(pause) => {
            nodes[2].sigstop();
            let pid = nodes[2].pid();
            Some(tokio::spawn(async move {
                tokio::time::sleep(pause).await;
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGCONT,
                )
                .expect("SIGCONT");
            }))
        }
    };
    let outcome = running.await.expect("load task");
    if let Some(resume) = resume {
        resume.await.expect("resume task");
    }
    let metrics = nodes::metrics_text(&nodes[0]).await;
    eprintln!(
        "{fault:?}: slowest {:?}, shares {:?}, hedges sent {}, failovers {}",
        outcome.slowest,
        outcome.shares,
        metric_with(&metrics, "mesh_hedges_total", "outcome=\"sent\""),
        metric(&metrics, "mesh_failovers_total"),
    );
    assert!(
        outcome.failures.is_empty(),
        "failed requests: {:?}",
        outcome.failures
    );
    assert_eq!(outcome.ok(), 150);
    assert!(
        outcome.slowest < FAULT_BOUND,
        "slowest request {:?} (bound {FAULT_BOUND:?})",
        outcome.slowest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_peer_with_tasks_in_flight_fails_none_within_the_detector_bound() {
    fault_with_tasks_in_flight("inflight-kill", Fault::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigstop_5s_of_a_peer_with_tasks_in_flight_fails_none_within_the_detector_bound() {
    fault_with_tasks_in_flight("inflight-stop", Fault::Stop(Duration::from_secs(5))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_paused_for_3s_keeps_its_live_peers_when_it_resumes() {
    let pki = Pki::new("paused", KEY);
    let nodes = mesh(&pki, 6, 50, 1).await;
    let paused = &nodes[5];
    // Gossip sent to it while it is stopped is dropped, as a full socket buffer drops it in a
    // large mesh; with a few nodes the kernel would otherwise hand the stopped node fresh
    // heartbeats the moment it resumes, and its failure detector would never be tested.
    let Some(blackhole) = nodes::UdpBlackhole::new(paused.gossip.port()) else {
        return;
    };
    paused.sigstop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(blackhole);
    paused.sigcont();
    // For 3 s after it resumes, every answer of its /cluster lists all 5 live peers.
    let until = Instant::now() + Duration::from_secs(3);
    let mut fewest = usize::MAX;
    while Instant::now() < until {
        fewest = fewest.min(routable(paused).await.len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let text = nodes::metrics_text(paused).await;
    eprintln!(
        "fewest routable peers after resuming: {fewest}; stalls noticed: {}",
        metric(&text, "mesh_stalls_total")
    );
    assert_eq!(fewest, 5, "the resumed node dropped live peers");
    assert!(metric(&text, "mesh_stalls_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_under_load_without_failures() {
    let pki = Pki::new("drain", KEY);
    let mut nodes = mesh(&pki, 3, 100, 2).await;
    let running = tokio::spawn(load(nodes[0].url("/segment"), png(64, 48), 240, 6, true));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[2].sigterm();
    let status = tokio::task::block_in_place(|| nodes[2].wait_exit(Duration::from_secs(20)))
        .expect("node-3 did not exit within 20 s of SIGTERM");
    assert!(status.success(), "node-3 exited with {status}");
    let gone = wait_until(Duration::from_secs(5), || async {
        !routable(&nodes[0]).await.contains(&"node-3".to_owned())
    })
    .await;
    assert!(
        gone.is_some(),
        "node-1 still routes to node-3 after its drain"
    );
    let outcome = running.await.expect("load task");
    eprintln!("shares {:?}", outcome.shares);
    assert!(
        outcome.failures.is_empty(),
        "failed requests: {:?}",
        outcome.failures
    );
    assert_eq!(outcome.ok(), 240);
    assert!(
        outcome.shares.get("node-3").copied().unwrap_or(0) > 0,
        "node-3 never worked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let pki = Pki::new("real", KEY);
    let nodes = mesh(&pki, 2, 100, 2).await;
    // Same gossip key (it hears the members) but a certificate from its own CA.
    let rogue_pki = Pki::new("rogue", KEY);
    rogue_pki.issue("node-x");
    let rogue = Node::start(
        &Spec::synthetic("node-x", 100, 1).seeds(&[nodes[0].gossip]),
        &rogue_pki,
    );
    let heard = wait_until(Duration::from_secs(10), || async {
        routable(&rogue).await.len() == 2
    })
    .await;
    assert!(
        heard.is_some(),
        "the rogue node should hear gossip (same key)"
    );
    // More work than its one slot: it tries to forward, and every handshake is refused.
    let outcome = load(rogue.url("/segment"), png(64, 48), 30, 4, true).await;
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert_eq!(
        outcome.shares.get("node-x").copied(),
        Some(30),
        "{:?}",
        outcome.shares
    );
    let mut refused = 0.0;
    for node in &nodes {
        let text = nodes::metrics_text(node).await;
        assert!(
            !text.contains("ml_tasks_processed_total{"),
            "{} processed a task from the rogue node",
            node.name
        );
        refused += metric(&text, "mesh_quic_handshake_failures_total");
    }
    assert!(refused > 0.0, "no handshake was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_the_wrong_gossip_key_never_appears() {
    let pki = Pki::new("keys", KEY);
    let nodes = mesh(&pki, 2, 50, 1).await;
    pki.issue("node-k");
    let wrong_key = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    let outsider = Node::start_with(
        &Spec::synthetic("node-k", 50, 1).seeds(&[nodes[0].gossip]),
        pki.path(),
        wrong_key,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &nodes {
        let cluster = get_json(&node.url("/cluster")).await;
        let ids: Vec<&str> = cluster["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["id"].as_str().expect("id"))
            .collect();
        assert!(
            !ids.contains(&"node-k"),
            "{} lists the outsider: {ids:?}",
            node.name
        );
    }
    assert!(routable(&outsider).await.is_empty(), "the outsider joined");
    let text = nodes::metrics_text(&nodes[0]).await;
    let dropped = metric_with(
        &text,
        "mesh_gossip_packets_total",
        "dropped_unauthenticated",
    );
    assert!(dropped > 0.0, "no unauthenticated gossip counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_beyond_capacity_gets_503_with_retry_after_and_bounded_memory() {
    let pki = Pki::new("flood", KEY);
    pki.issue("node-f");
    let mut spec = Spec::synthetic("node-f", 300, 1).arg("--http-body-budget-mb", "8");
    spec.queue = 1;
    let node = Node::start(&spec, &pki);
    let baseline_kb = node.peak_rss_kb();
    // ~1 MB images, 64 at once, far beyond 1 slot + 1 queue place.
    let image = nodes::noisy_png(600, 600);
    assert!(image.len() > 1_000_000);
    let first = load(node.url("/segment"), image.clone(), 256, 64, false).await;
    let after_first_kb = node.peak_rss_kb();
    // Twice the volume at the same concurrency: memory must not grow with the volume.
    let second_kb_sent = (512 * image.len() / 1024) as u64;
    let second = load(node.url("/segment"), image, 512, 64, false).await;
    let after_second_kb = node.peak_rss_kb();
    eprintln!("peak RSS {baseline_kb} kB at start, {after_first_kb} kB after 256, {after_second_kb} kB after 512 more");
    for outcome in [&first, &second] {
        assert!(
            outcome.failures.is_empty(),
            "unexpected failures: {:?}",
            outcome.failures
        );
        assert!(
            outcome.ok() >= 2,
            "nothing was served: {:?}",
            outcome.shares
        );
        assert!(
            outcome.busy.iter().all(|has| *has),
            "a 503 without Retry-After"
        );
    }
    assert!(
        first.busy.len() > 100,
        "only {} busy answers",
        first.busy.len()
    );
    // Bodies held are capped at 8 MB; the rest is per-connection buffers (64 connections),
    // one decoded image, and the allocator's arenas.
    assert!(
        after_first_kb < baseline_kb + 160 * 1024,
        "peak RSS grew from {baseline_kb} to {after_first_kb} kB"
    );
    // Buffering what arrives would grow by the ~550 MB sent; allow 5% for allocator churn.
    assert!(
        after_second_kb < after_first_kb + second_kb_sent / 20,
        "peak RSS kept growing with the volume: {after_first_kb} -> {after_second_kb} kB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_and_oversize_frames_close_only_their_stream() {
    use spheromesh_mesh::protocol::{encode, TaskRequest, TaskResponse, DEFAULT_MAX_FRAME};
    use spheromesh_mesh::security::client_config;

    let pki = Pki::new("frames", KEY);
    pki.issue("node-q");
    let node = Node::start(&Spec::synthetic("node-q", 10, 1), &pki);
    // A client with a certificate from the cluster CA, speaking raw QUIC.
    let tls = client_config(pki.ca_pem(), &pki.credentials("prober")).expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("ep");
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let connection = endpoint
        .connect(node.quic, "node-q")
        .expect("connect")
        .await
        .expect("handshake");
    let bad_request =
        quinn::VarInt::from_u32(spheromesh_mesh::transport::codes::STREAM_BAD_REQUEST);

    // An announced length over the limit, then a well-formed length with garbage.
    let oversize = u32::try_from(DEFAULT_MAX_FRAME + 1)
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    let mut garbage = 8u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xc1; 8]);
    for frame in [oversize, garbage] {
        let (mut send, mut recv) = connection.open_bi().await.expect("stream");
        send.write_all(&frame).await.expect("write");
        let _ = send.finish();
        let read = recv.read_to_end(1024).await;
        assert!(
            matches!(read, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(c))) if c == bad_request),
            "{read:?}"
        );
    }

    // The same connection still carries a valid task.
    let request = TaskRequest {
        task_id: "after-garbage".into(),
        image: png(32, 32),
        threshold: 0.5,
        simplify_tolerance: None,
        deadline_ms: 10_000,
        hops: 1,
        entry_node: "prober".into(),
        refuse_above_ms: None,
    };
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    send.write_all(&encode(&request, DEFAULT_MAX_FRAME).expect("encode"))
        .await
        .expect("write");
    let _ = send.finish();
    let answer = recv.read_to_end(1 << 20).await.expect("answer");
    let response: TaskResponse =
        spheromesh_mesh::protocol::decode(&answer, DEFAULT_MAX_FRAME).expect("decode");
    assert!(
        matches!(&response, TaskResponse::Done { processed_by, .. } if processed_by == "node-q"),
        "{response:?}"
    );
    // And HTTP still serves; both bad frames were counted.
    let outcome = load(node.url("/segment"), png(16, 16), 3, 1, true).await;
    assert_eq!(outcome.ok(), 3, "{:?}", outcome.failures);
    // The QUIC counters reach /metrics on the next publish round (200 ms).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = nodes::metrics_text(&node).await;
    assert!(metric(&text, "mesh_quic_bad_frames_total") >= 2.0, "{text}");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metric_with(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
