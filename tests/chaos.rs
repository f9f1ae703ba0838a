//! Failure resilience on separate hosts: the check that the worst-case drain on SIGTERM
//! fits every compose `stop_grace_period`, and faults between nodes in their own network
//! namespaces (`tests/chaos/netns.rs`): a full and an asymmetric partition, random loss,
//! kill -9 and SIGSTOP under HTTP load; a broker restart, a node cut from the broker only
//! and a rolling restart under a backend-like RabbitMQ publisher and HTTP load, with every
//! callback checked (`tests/chaos/broker.rs`); work forwarded to a node that is then
//! partitioned away. What is not covered yet is listed in
//! docs/RESILIENCE.md.

#[path = "chaos/compose_budget.rs"]
mod compose_budget;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compose_budget::{
    compose_files, env_values, help_default, parse_compose_duration, stop_grace_periods,
};

/// What a node may still need after its drain grace: the consumer wait is bounded by the
/// grace itself, then `3 * gossip_interval` of "draining" gossip (src/runtime/mod.rs),
/// then QUIC close and gossip shutdown, which get this much at most before compose's
/// SIGKILL would land.
const TEARDOWN_MARGIN: Duration = Duration::from_secs(5);

/// The longest a node takes from SIGTERM to exit (see `src/runtime/mod.rs`: every drain
/// step after the consumer wait is bounded by what is left of `drain_grace`, the gossip
/// announcement is not), plus the teardown margin.
fn worst_case_drain(drain_grace: Duration, gossip_interval: Duration) -> Duration {
    drain_grace + gossip_interval * 3 + TEARDOWN_MARGIN
}

/// `Err` naming the numbers when the drain does not fit.
fn check_fits(stop_grace: Duration, drain: Duration, gossip: Duration) -> Result<(), String> {
    let needed = worst_case_drain(drain, gossip);
    if needed <= stop_grace {
        Ok(())
    } else {
        Err(format!(
            "worst-case drain {needed:?} (grace {drain:?} + 3 x gossip {gossip:?} + \
             teardown {TEARDOWN_MARGIN:?}) exceeds stop_grace_period {stop_grace:?}"
        ))
    }
}

fn node_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_spheromesh"))
        .args(["node", "--help"])
        .env_clear()
        .output()
        .expect("spheromesh node --help");
    assert!(out.status.success(), "node --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

#[test]
fn worst_case_drain_fits_every_compose_stop_grace_period() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = compose_files(&root.join("compose"));
    files.extend(compose_files(&root.join("deploy/swarm")));
    let help = node_help();
    let default_drain = help_default(&help, "--drain-grace-secs");
    let default_gossip = help_default(&help, "--gossip-interval-ms");

    let graces = stop_grace_periods(&files);
    assert!(
        !graces.is_empty(),
        "no stop_grace_period in {files:?}: compose would SIGKILL after its 10 s default"
    );
    let mut drains: Vec<u64> = env_values(&files, "DRAIN_GRACE_SECS")
        .into_iter()
        .map(|v| v.unwrap_or(default_drain))
        .collect();
    drains.push(default_drain);
    let mut gossips: Vec<u64> = env_values(&files, "GOSSIP_INTERVAL_MS")
        .into_iter()
        .map(|v| v.unwrap_or(default_gossip))
        .collect();
    gossips.push(default_gossip);
    let drain = Duration::from_secs(*drains.iter().max().expect("a drain value"));
    let gossip = Duration::from_millis(*gossips.iter().max().expect("a gossip value"));

    let broken: Vec<String> = graces
        .iter()
        .filter_map(|g| {
            check_fits(g.period, drain, gossip)
                .err()
                .map(|why| format!("{}:{}: {why}", g.file.display(), g.line))
        })
        .collect();
    eprintln!(
        "drain budget: {} stop_grace_period(s), longest drain {drain:?}, gossip {gossip:?}, \
         worst case {:?}",
        graces.len(),
        worst_case_drain(drain, gossip)
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_budget_check_refuses_a_grace_period_that_is_too_short() {
    let drain = Duration::from_secs(30);
    let gossip = Duration::from_millis(200);
    assert!(check_fits(parse_compose_duration("40s"), drain, gossip).is_ok());
    // Exactly the drain grace leaves nothing for gossip and teardown: refused.
    assert!(check_fits(parse_compose_duration("30s"), drain, gossip).is_err());
    assert!(check_fits(parse_compose_duration("35s"), drain, gossip).is_err());
}

#[test]
fn compose_durations_parse_like_compose() {
    assert_eq!(parse_compose_duration("40s"), Duration::from_secs(40));
    assert_eq!(parse_compose_duration("1m30s"), Duration::from_secs(90));
    assert_eq!(parse_compose_duration("500ms"), Duration::from_millis(500));
    assert_eq!(parse_compose_duration("2m"), Duration::from_secs(120));
}

#[path = "chaos/broker.rs"]
mod broker;
#[path = "chaos/netns.rs"]
mod netns;
#[path = "nodes/mod.rs"]
mod nodes;
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::Instant;

/// A node process inside a namespace; killed when dropped.
struct NsNode {
    http: SocketAddr,
    child: Child,
}

impl NsNode {
    /// Starts node-`i` in its namespace with the synthetic engine taking `service_ms` per
    /// task, seeded by `seed`, with more flags (e.g. the broker's); waits until it is ready.
    fn start_with(
        net: &netns::Net,
        i: usize,
        pki: &nodes::Pki,
        seed: Option<SocketAddr>,
        service_ms: u64,
        extra: &[String],
    ) -> Self {
        let name = format!("node-{i}");
        pki.issue(&name);
        let http = SocketAddr::from((net.addr(i), 5002));
        let gossip = SocketAddr::from((net.addr(i), 7946));
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &net.ns(i)])
            .arg(env!("CARGO_BIN_EXE_spheromesh"))
            .args(["node", "--instance-id", &name])
            .args(["--http-listen", &http.to_string()])
            .args(["--quic-listen", &http.to_string()])
            .args(["--gossip-listen", &gossip.to_string()])
            .args(["--model", &format!("synthetic:{service_ms}")])
            .args(["--max-concurrent-tasks", "2"])
            .arg("--tls-dir")
            .arg(pki.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SPHEROMESH_CLUSTER_KEY", &pki.key)
            .env("RUST_LOG", "warn")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(seed) = seed {
            command.args(["--seeds", &seed.to_string()]);
        }
        let mut child = command.spawn().expect("spawn node in netns");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"event\":\"ready\"") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{name} in {} did not become ready", net.ns(i)));
        Self { http, child }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .unwrap_or_else(|e| panic!("{signal}: {e}"));
    }

    /// Waits for the process to exit; its status, or `None` after `within`.
    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Peak resident memory of the node process so far (`VmHWM`), in MiB. `ip netns exec`
    /// execs the node, so the child's pid is the node's.
    fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kib / 1024
    }

    async fn routable(&self) -> usize {
        let cluster = nodes::get_json(&self.url("/cluster")).await;
        cluster["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter(|m| m["routable"] == true)
            .count()
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs `n` images to `node` one after another; returns (200s, others).
async fn serve_count(node: &NsNode, n: usize) -> (usize, Vec<u16>) {
    let client = nodes::client();
    let image = nodes::png(32, 32);
    let (mut ok, mut other) = (0, Vec::new());
    for _ in 0..n {
        let status = client
            .post(node.url("/segment"))
            .header("content-type", "image/png")
            .body(image.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        if status == 200 {
            ok += 1;
        } else {
            other.push(status);
        }
    }
    (ok, other)
}

/// Starts node-1..3 in the namespaces (node-1 seeds the others) with the engine taking
/// `service_ms` and more flags, and waits until every node routes to both peers.
async fn start_mesh_with(
    net: &netns::Net,
    pki: &nodes::Pki,
    service_ms: u64,
    extra: &[String],
) -> Vec<NsNode> {
    let seed = SocketAddr::from((net.addr(1), 7946));
    let mesh: Vec<NsNode> = (1..=3)
        .map(|i| NsNode::start_with(net, i, pki, (i > 1).then_some(seed), service_ms, extra))
        .collect();
    for node in &mesh {
        let took = nodes::wait_until(Duration::from_secs(20), || async {
            node.routable().await == 2
        })
        .await;
        assert!(took.is_some(), "{} never saw both peers", node.http);
    }
    mesh
}

/// Waits until every live node of `mesh` routes to `peers` others; the time it took.
async fn converge(mesh: &[&NsNode], peers: usize, within: Duration) -> Option<Duration> {
    nodes::wait_until(within, || async {
        for node in mesh {
            if node.routable().await != peers {
                return false;
            }
        }
        true
    })
    .await
}

/// Right after a heal: every node routes to both peers again within 3 s.
async fn assert_converges_after_heal(scenario: &str, mesh: &[NsNode]) {
    let healed = Instant::now();
    let all: Vec<&NsNode> = mesh.iter().collect();
    let converged = converge(&all, 2, Duration::from_secs(10)).await;
    eprintln!(
        "{scenario}: converged {:?} after the heal",
        converged.map(|_| healed.elapsed())
    );
    let converged = converged.expect("membership never converged after the heal");
    assert!(
        converged <= Duration::from_secs(3),
        "{scenario}: membership took {converged:?} to converge after the heal (limit 3 s)"
    );
}

/// The HTTP invariants of every scenario: each request answered 200 or an explicit 503
/// carrying `Retry-After`, nothing else, none slower than `bound`.
fn assert_answered(scenario: &str, outcome: &nodes::LoadOutcome, bound: Duration) {
    eprintln!(
        "{scenario}: {} x 200 {:?}, {} x 503, {} failed, p99 {:?}, slowest {:?}",
        outcome.ok(),
        outcome.shares,
        outcome.busy.len(),
        outcome.failures.len(),
        outcome.p99(),
        outcome.slowest
    );
    assert!(
        outcome.failures.is_empty(),
        "{scenario}: answers other than 200 / 503: {:?}",
        outcome.failures
    );
    assert!(
        outcome.busy.iter().all(|&retry_after| retry_after),
        "{scenario}: a 503 without Retry-After"
    );
    assert!(
        outcome.slowest <= bound,
        "{scenario}: slowest request {:?} (bound {bound:?})",
        outcome.slowest
    );
    assert!(outcome.ok() > 0, "{scenario}: nothing was served");
}

/// Full partition of node-3 from node-1 and node-2 (iptables DROP both ways inside
/// node-3's namespace; the load generator on the bridge still reaches all three). Both
/// sides keep serving, each side stops routing to the other, and after the heal every
/// node routes to both peers again within 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_partition_both_sides_serve_and_membership_converges_after_heal() {
    let _lock = shared_broker_lock().await;
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let Some((side, mesh)) = mesh_with_broker("chaos-full", &net, &pki).await else {
        return;
    };
    let publisher = side.start_publishing();

    let peers: Vec<String> = [1, 2].iter().map(|&i| net.addr(i).to_string()).collect();
    let rules: Vec<[&str; 5]> = peers
        .iter()
        .flat_map(|p| {
            [
                ["INPUT", "-s", p.as_str(), "-j", "DROP"],
                ["OUTPUT", "-d", p.as_str(), "-j", "DROP"],
            ]
        })
        .collect();
    for rule in &rules {
        net.rule_add(3, rule);
    }
    let split = nodes::wait_until(Duration::from_secs(10), || async {
        mesh[0].routable().await == 1 && mesh[2].routable().await == 0
    })
    .await;
    assert!(
        split.is_some(),
        "the partition was never seen by membership"
    );
    for (side, node) in [("majority", &mesh[0]), ("minority", &mesh[2])] {
        let (ok, other) = serve_count(node, 10).await;
        assert_eq!(
            ok, 10,
            "{side} side during the partition answered {other:?}"
        );
    }

    for rule in &rules {
        net.rule_del(3, rule);
    }
    eprintln!("partition: seen after {split:?}");
    assert_converges_after_heal("partition", &mesh).await;
    finish_broker_side("partition", &side, publisher, &mesh).await;
}

/// The node-1 -> node-3 direction is cut (node-3 drops what node-1 sends), node-3 -> node-1
/// still flows. Load into node-1 and node-3 at once: every request is answered 200 or 503
/// with `Retry-After`, and after the heal membership converges within 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asymmetric_partition_answers_every_request_and_converges_after_heal() {
    let _lock = shared_broker_lock().await;
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let Some((side, mesh)) = mesh_with_broker("chaos-asymmetric", &net, &pki).await else {
        return;
    };
    let publisher = side.start_publishing();
    let from_1 = net.addr(1).to_string();
    let rule = ["INPUT", "-s", from_1.as_str(), "-j", "DROP"];
    net.rule_add(3, &rule);
    let image = nodes::png(32, 32);
    let (into_1, into_3) = tokio::join!(
        nodes::load(mesh[0].url("/segment"), image.clone(), 120, 3, false),
        nodes::load(mesh[2].url("/segment"), image, 120, 3, false),
    );
    assert_answered("asymmetric, into node-1", &into_1, Duration::from_secs(10));
    assert_answered("asymmetric, into node-3", &into_3, Duration::from_secs(10));
    net.rule_del(3, &rule);
    assert_converges_after_heal("asymmetric", &mesh).await;
    finish_broker_side("asymmetric", &side, publisher, &mesh).await;
}

/// 10% of the datagrams and segments between the nodes are dropped at random on every
/// host for the whole run (iptables `statistic`), with load into node-1: no node is ever
/// declared dead (sampled every 200 ms) and every request is answered 200 or 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_loss_between_nodes_causes_no_false_death() {
    let _lock = shared_broker_lock().await;
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let Some((side, mesh)) = mesh_with_broker("chaos-random", &net, &pki).await else {
        return;
    };
    let publisher = side.start_publishing();
    let addrs: Vec<String> = (1..=3).map(|i| net.addr(i).to_string()).collect();
    let mut rules = Vec::new();
    for host in 1..=3 {
        for (peer, addr) in addrs.iter().enumerate() {
            if peer + 1 != host {
                rules.push((host, addr.clone()));
            }
        }
    }
    let rule = |addr: &str| -> Vec<String> {
        [
            "INPUT",
            "-s",
            addr,
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.10",
            "-j",
            "DROP",
        ]
        .iter()
        .map(ToString::to_string)
        .collect()
    };
    for (host, addr) in &rules {
        let r = rule(addr);
        net.rule_add(*host, &r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let stop = stop.clone();
        let urls: Vec<String> = mesh.iter().map(|n| n.url("/cluster")).collect();
        tokio::spawn(async move {
            let mut fewest = 2;
            let mut samples = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for url in &urls {
                    let cluster = nodes::get_json(url).await;
                    let seen = cluster["members"]
                        .as_array()
                        .expect("members")
                        .iter()
                        .filter(|m| m["routable"] == true)
                        .count();
                    fewest = fewest.min(seen);
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (fewest, samples)
        })
    };
    let outcome = nodes::load(mesh[0].url("/segment"), nodes::png(32, 32), 1000, 4, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (fewest, samples) = watch.await.expect("watcher");
    for (host, addr) in &rules {
        let r = rule(addr);
        net.rule_del(*host, &r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    assert_answered("10% loss", &outcome, Duration::from_secs(10));
    eprintln!("10% loss: fewest routable peers seen by any node {fewest} over {samples} rounds");
    assert_eq!(fewest, 2, "a node was declared dead under 10% loss");
    finish_broker_side("10% loss", &side, publisher, &mesh).await;
}

/// kill -9 of node-3 while node-1 takes load: every request is still answered 200 or 503
/// (work forwarded to node-3 fails over), none slower than 5 s, and the two survivors drop
/// node-3 from their views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_answers_every_request() {
    let _lock = shared_broker_lock().await;
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let Some((side, mut mesh)) = mesh_with_broker("chaos-kill9", &net, &pki).await else {
        return;
    };
    let publisher = side.start_publishing();
    let url = mesh[0].url("/segment");
    let load = tokio::spawn(nodes::load(url, nodes::png(32, 32), 1000, 4, false));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !load.is_finished(),
        "the load ended before the fault: lengthen it"
    );
    let victim = mesh.pop().expect("node-3");
    drop(victim); // SIGKILL, then reaped
    let outcome = load.await.expect("load");
    assert_answered("kill -9", &outcome, Duration::from_secs(5));
    assert!(
        outcome.shares.get("node-3").is_some_and(|&n| n > 0),
        "node-3 took no work before the kill: the scenario tested nothing"
    );
    let survivors: Vec<&NsNode> = mesh.iter().collect();
    let gone = converge(&survivors, 1, Duration::from_secs(10)).await;
    assert!(
        gone.is_some(),
        "the survivors kept routing to the killed node"
    );
    finish_broker_side("kill -9", &side, publisher, &mesh).await;
}

/// SIGSTOP of node-3 for 5 s while node-1 takes load (a paused process keeps its sockets
/// and answers nothing): every request answered 200 or 503 within 5 s; after SIGCONT all
/// three converge again within 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_under_load_answers_every_request_and_rejoins() {
    let _lock = shared_broker_lock().await;
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let Some((side, mesh)) = mesh_with_broker("chaos-sigstop", &net, &pki).await else {
        return;
    };
    let publisher = side.start_publishing();
    let url = mesh[0].url("/segment");
    let load = tokio::spawn(nodes::load(url, nodes::png(32, 32), 1400, 4, false));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mesh[2].signal(nix::sys::signal::Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !load.is_finished(),
        "the load ended during the pause: lengthen it"
    );
    mesh[2].signal(nix::sys::signal::Signal::SIGCONT);
    let resumed = Instant::now();
    let outcome = load.await.expect("load");
    assert_answered("SIGSTOP 5 s", &outcome, Duration::from_secs(5));
    assert!(
        outcome.shares.get("node-3").is_some_and(|&n| n > 0),
        "node-3 took no work: the scenario tested nothing"
    );
    let all: Vec<&NsNode> = mesh.iter().collect();
    let back = converge(&all, 2, Duration::from_secs(10)).await;
    eprintln!(
        "SIGSTOP: rejoined {:?} after SIGCONT",
        back.map(|_| resumed.elapsed())
    );
    let back = back.expect("node-3 never rejoined");
    assert!(
        resumed.elapsed() <= Duration::from_secs(3) || back <= Duration::from_secs(3),
        "rejoin took {back:?} (limit 3 s)"
    );
    finish_broker_side("SIGSTOP 5 s", &side, publisher, &mesh).await;
}

/// Most unacknowledged deliveries each consuming node holds in the broker scenarios.
const PREFETCH: u16 = 4;
/// Engine time per task in the broker scenarios: long enough that every consumer holds
/// deliveries at any instant (3 nodes x 2 slots / 200 ms = 30 tasks/s of capacity), so a
/// fault always lands on unacknowledged work.
const BROKER_SERVICE_MS: u64 = 200;
/// A node's peak resident memory in these scenarios stays under this (bounded queues).
const RSS_LIMIT_MIB: u64 = 256;

/// The RabbitMQ side of a scenario: the broker with a queue of this test, the fake backend
/// on the bridge (validating every callback), the uploads with the task image.
struct BrokerSide {
    rabbit: broker::Broker,
    backend: support::FakeBackend,
    uploads: tempfile::TempDir,
    progress: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BrokerSide {
    async fn new(test: &str, net: &netns::Net) -> Option<Self> {
        let rabbit = broker::Broker::new(test, net.host_addr()).await?;
        let backend = support::FakeBackend::start_on(SocketAddr::from((net.host_addr(), 0))).await;
        let uploads = tempfile::tempdir().expect("uploads");
        support::write_png(uploads.path(), "proj/a.png", 64, 48);
        Some(Self {
            rabbit,
            backend,
            uploads,
            progress: std::sync::Arc::default(),
            stop: std::sync::Arc::default(),
        })
    }

    fn node_args(&self) -> Vec<String> {
        self.rabbit.node_args(PREFETCH, self.uploads.path())
    }

    /// Starts the backend-like publisher: a task every 60 ms (16.7/s, 55% of the nodes'
    /// capacity; the HTTP load, one request at a time, adds about 15%) until
    /// [`BrokerSide::stop_publishing`].
    fn start_publishing(&self) -> tokio::task::JoinHandle<broker::Published> {
        let backend = self.backend.clone();
        tokio::spawn(broker::publish_like_the_backend(
            support::broker_url(),
            self.rabbit.queue.clone(),
            move |image| backend.callback_url(image),
            "proj/a.png".into(),
            Duration::from_millis(60),
            self.progress.clone(),
            self.stop.clone(),
        ))
    }

    fn published(&self) -> usize {
        self.progress.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn stop_publishing(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Starts node-1..3 consuming the broker side's queue (node-1 seeds) and waits until every
/// node routes to both peers and holds a broker session.
async fn start_consuming_mesh(
    net: &netns::Net,
    pki: &nodes::Pki,
    side: &BrokerSide,
) -> Vec<NsNode> {
    start_consuming_mesh_with(net, pki, side, BROKER_SERVICE_MS).await
}

/// Like [`start_consuming_mesh`] with the engine taking `service_ms`.
async fn start_consuming_mesh_with(
    net: &netns::Net,
    pki: &nodes::Pki,
    side: &BrokerSide,
    service_ms: u64,
) -> Vec<NsNode> {
    let mesh = start_mesh_with(net, pki, service_ms, &side.node_args()).await;
    for node in &mesh {
        let took = nodes::wait_until(Duration::from_secs(20), || broker_connected(node)).await;
        assert!(took.is_some(), "{} never got a broker session", node.http);
    }
    mesh
}

/// Whether the node's `mesh_broker_connected` gauge says 1.
async fn broker_connected(node: &NsNode) -> bool {
    let Ok(response) = nodes::client().get(node.url("/metrics")).send().await else {
        return false;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("mesh_broker_connected"))
        .any(|l| l.trim_end().ends_with(" 1"))
}

/// HTTP load into `url` in rounds of 10 requests, one at a time, until `stop`; all rounds
/// merged.
fn load_until(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<nodes::LoadOutcome> {
    tokio::spawn(async move {
        let image = nodes::png(32, 32);
        let mut total = nodes::LoadOutcome::default();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let part = nodes::load(url.clone(), image.clone(), 10, 1, false).await;
            total.merge(part);
        }
        total
    })
}

/// The mesh-fault scenarios with RabbitMQ load too: the broker side and the three nodes
/// consuming it with the 20 ms engine. The caller holds the broker lock, taken before the
/// network (the order every scenario keeps, so none waits on the other's lock).
async fn mesh_with_broker(
    test: &str,
    net: &netns::Net,
    pki: &nodes::Pki,
) -> Option<(BrokerSide, Vec<NsNode>)> {
    let side = BrokerSide::new(test, net).await?;
    let mesh = start_consuming_mesh_with(net, pki, &side, 20).await;
    Some((side, mesh))
}

/// The shared broker lock, taken on a blocking thread.
async fn shared_broker_lock() -> support::BrokerLock {
    tokio::task::spawn_blocking(support::BrokerLock::shared)
        .await
        .expect("broker lock")
}

/// Stops the publisher and checks the RabbitMQ invariants of a mesh fault: every task
/// called back, none failed, at most one node's prefetch of duplicates; memory bounded.
async fn finish_broker_side(
    scenario: &str,
    side: &BrokerSide,
    publisher: tokio::task::JoinHandle<broker::Published>,
    mesh: &[NsNode],
) {
    side.stop_publishing();
    let published = publisher.await.expect("publisher");
    assert!(
        !published.ids.is_empty(),
        "{scenario}: nothing was published"
    );
    let report =
        broker::check_callbacks(scenario, &side.backend, &published, Duration::from_secs(60)).await;
    assert!(
        report.duplicates <= usize::from(PREFETCH),
        "{scenario}: {} duplicate callbacks, more than one node's prefetch {PREFETCH}",
        report.duplicates
    );
    assert_eq!(report.failed, 0, "{scenario}: tasks called back as failed");
    assert_memory_bounded(scenario, mesh);
    side.rabbit.cleanup().await;
}

/// Every node's peak RSS stays under the limit.
fn assert_memory_bounded(scenario: &str, mesh: &[NsNode]) {
    let peaks: Vec<u64> = mesh.iter().map(NsNode::peak_rss_mib).collect();
    eprintln!("{scenario}: peak RSS per node {peaks:?} MiB");
    assert!(
        peaks.iter().all(|&p| p <= RSS_LIMIT_MIB),
        "{scenario}: a node's peak RSS {peaks:?} MiB is above {RSS_LIMIT_MIB} MiB"
    );
}

/// The broker app restarts (every connection dropped for 3 s) while the backend-like
/// publisher and HTTP load run: every task gets its callback (none lost), duplicates stay
/// within what the three consumers held unacknowledged, every HTTP request is answered
/// 200 or 503 with `Retry-After`, and every node gets its broker session back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_under_load_loses_no_task() {
    let _lock = tokio::task::spawn_blocking(support::BrokerLock::exclusive)
        .await
        .expect("broker lock");
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let Some(side) = BrokerSide::new("chaos-restart", &net).await else {
        return;
    };
    let _restart_on_panic = broker::StartAppOnDrop;
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let mesh = start_consuming_mesh(&net, &pki, &side).await;
    let publisher = side.start_publishing();
    let http_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = load_until(mesh[2].url("/segment"), http_stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        side.published() > 0,
        "nothing was published before the fault"
    );
    tokio::task::spawn_blocking(|| broker::restart_app(Duration::from_secs(3)))
        .await
        .expect("restart");
    let restarted = Instant::now();
    for node in &mesh {
        let back = nodes::wait_until(Duration::from_secs(30), || broker_connected(node)).await;
        assert!(
            back.is_some(),
            "{} never got its broker session back",
            node.http
        );
    }
    eprintln!(
        "broker restart: every node reconnected {:?} after start_app",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    side.stop_publishing();
    http_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = publisher.await.expect("publisher");
    let outcome = http.await.expect("http load");
    assert_answered("broker restart", &outcome, Duration::from_secs(5));
    let report = broker::check_callbacks(
        "broker restart",
        &side.backend,
        &published,
        Duration::from_secs(60),
    )
    .await;
    let held = 3 * usize::from(PREFETCH);
    assert!(
        report.duplicates <= held,
        "broker restart: {} duplicate callbacks, more than the {held} deliveries the nodes held",
        report.duplicates
    );
    assert_eq!(
        report.failed, 0,
        "broker restart: tasks called back as failed"
    );
    assert_memory_bounded("broker restart", &mesh);
    side.rabbit.cleanup().await;
}

/// node-1 loses the broker (its namespace drops AMQP both ways for 18 s) but not the mesh,
/// under the publisher and HTTP load into node-1: node-1 keeps serving HTTP, every task is
/// called back, duplicates stay within node-1's prefetch (the broker redelivers what it
/// held once the heartbeat gives up on it), and node-1 reconnects after the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_from_the_broker_only_loses_no_task() {
    let _lock = shared_broker_lock().await;
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let Some(side) = BrokerSide::new("chaos-broker-cut", &net).await else {
        return;
    };
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let mesh = start_consuming_mesh(&net, &pki, &side).await;
    let publisher = side.start_publishing();
    let http_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http = load_until(mesh[0].url("/segment"), http_stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let host = net.host_addr().to_string();
    let rules = [
        [
            "OUTPUT",
            "-d",
            host.as_str(),
            "-p",
            "tcp",
            "--dport",
            "5672",
            "-j",
            "DROP",
        ],
        [
            "INPUT",
            "-s",
            host.as_str(),
            "-p",
            "tcp",
            "--sport",
            "5672",
            "-j",
            "DROP",
        ],
    ];
    for rule in &rules {
        net.rule_add(1, rule);
    }
    let cut = Instant::now();
    // The fault must land: node-1 notices that its session is gone while the cut lasts.
    // Two missed heartbeats (2 x 5 s; 10.3-10.5 s measured) give it away, so the cut
    // lasts 18 s to leave room on a slow machine.
    let lost = nodes::wait_until(Duration::from_secs(17), || async {
        !broker_connected(&mesh[0]).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(18).saturating_sub(cut.elapsed())).await;
    for rule in &rules {
        net.rule_del(1, rule);
    }
    eprintln!("cut from the broker: node-1 saw its session gone after {lost:?}");
    assert!(
        lost.is_some(),
        "node-1 never noticed it was cut from the broker"
    );
    let healed = Instant::now();
    let back = nodes::wait_until(Duration::from_secs(30), || broker_connected(&mesh[0])).await;
    eprintln!(
        "cut from the broker: node-1 reconnected {:?} after the heal",
        back.map(|_| healed.elapsed())
    );
    assert!(back.is_some(), "node-1 never got its broker session back");
    tokio::time::sleep(Duration::from_secs(2)).await;
    side.stop_publishing();
    http_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = publisher.await.expect("publisher");
    let outcome = http.await.expect("http load");
    assert_answered("cut from the broker", &outcome, Duration::from_secs(5));
    let report = broker::check_callbacks(
        "cut from the broker",
        &side.backend,
        &published,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        report.duplicates <= usize::from(PREFETCH),
        "cut from the broker: {} duplicate callbacks, more than node-1's prefetch {PREFETCH}",
        report.duplicates
    );
    assert_eq!(
        report.failed, 0,
        "cut from the broker: tasks called back as failed"
    );
    assert_memory_bounded("cut from the broker", &mesh);
    side.rabbit.cleanup().await;
}

/// Every node in turn gets SIGTERM, drains, exits 0 and starts again under the same id,
/// while the publisher runs and HTTP load goes into a node that is not restarting: every
/// HTTP request answered 200 or 503 with `Retry-After`, every task called back exactly
/// once (a drain hands back what it has not started, so no duplicate), and the mesh whole
/// again after each restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_answers_everything_and_duplicates_nothing() {
    let _lock = shared_broker_lock().await;
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let Some(side) = BrokerSide::new("chaos-rolling", &net).await else {
        return;
    };
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let mut mesh = start_consuming_mesh(&net, &pki, &side).await;
    let publisher = side.start_publishing();
    let args = side.node_args();
    let mut outcomes = Vec::new();
    let mut drains = Vec::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        let http_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let http = load_until(mesh[(i + 1) % 3].url("/segment"), http_stop.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        mesh[i].signal(nix::sys::signal::Signal::SIGTERM);
        let terminated = Instant::now();
        let status = mesh[i].wait_exit(Duration::from_secs(40));
        drains.push(terminated.elapsed());
        assert!(
            status.is_some_and(|s| s.success()),
            "node-{} did not exit 0 after SIGTERM: {status:?}",
            i + 1
        );
        let seed_host = if i == 0 { 2 } else { 1 };
        let seed = SocketAddr::from((net.addr(seed_host), 7946));
        mesh[i] = NsNode::start_with(&net, i + 1, &pki, Some(seed), BROKER_SERVICE_MS, &args);
        let all: Vec<&NsNode> = mesh.iter().collect();
        let whole = converge(&all, 2, Duration::from_secs(20)).await;
        assert!(
            whole.is_some(),
            "the mesh was not whole again after node-{} restarted",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        http_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        outcomes.push(http.await.expect("http load"));
    }
    side.stop_publishing();
    let published = publisher.await.expect("publisher");
    eprintln!("rolling restart: SIGTERM to exit per node {drains:?}");
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_answered(
            &format!("rolling restart of node-{}", i + 1),
            outcome,
            Duration::from_secs(5),
        );
    }
    let report = broker::check_callbacks(
        "rolling restart",
        &side.backend,
        &published,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        report.duplicates, 0,
        "rolling restart: a drain left work to be redone"
    );
    assert_eq!(
        report.failed, 0,
        "rolling restart: tasks called back as failed"
    );
    assert_memory_bounded("rolling restart", &mesh);
    side.rabbit.cleanup().await;
}

/// Sum of the counter `name` in a node's `/metrics` (all label sets).
async fn counter(node: &NsNode, name: &str) -> f64 {
    let Ok(response) = nodes::client().get(node.url("/metrics")).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Forwards that node-1 has sent to `peer` and not seen answered (its `/cluster`).
async fn inflight_to(node: &NsNode, peer: &str) -> u64 {
    let cluster = nodes::get_json(&node.url("/cluster")).await;
    cluster["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["id"] == peer)
        .and_then(|m| m["local_inflight"].as_u64())
        .unwrap_or(0)
}

/// node-1 (the entry) has tasks forwarded to node-3 when node-3 is cut from node-1 only
/// (both ways; node-2 still reaches both, so gossip through node-2 keeps node-3 alive in
/// node-1's view and membership alone would never move the work). Every request is still
/// answered 200 within 5 s: node-1 moves the work it had on node-3 to a reachable node
/// (failover or hedge), well inside the request deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_forwarded_to_a_node_then_partitioned_away_is_done_elsewhere_in_time() {
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let mesh = start_mesh_with(&net, &pki, 1000, &[]).await;
    // Six at a time into node-1's two slots: four go to node-2 and node-3.
    let load = tokio::spawn(nodes::load(
        mesh[0].url("/segment"),
        nodes::png(32, 32),
        30,
        6,
        false,
    ));
    let forwarded = nodes::wait_until(Duration::from_secs(10), || async {
        inflight_to(&mesh[0], "node-3").await > 0
    })
    .await;
    assert!(
        forwarded.is_some(),
        "node-1 never forwarded to node-3: the scenario tests nothing"
    );
    let before = counter(&mesh[0], "mesh_failovers_total").await
        + counter(&mesh[0], "mesh_hedges_total").await;
    let node1 = net.addr(1).to_string();
    let rules = [
        ["INPUT", "-s", node1.as_str(), "-j", "DROP"],
        ["OUTPUT", "-d", node1.as_str(), "-j", "DROP"],
    ];
    for rule in &rules {
        net.rule_add(3, rule);
    }
    let outcome = load.await.expect("load");
    let moved = counter(&mesh[0], "mesh_failovers_total").await
        + counter(&mesh[0], "mesh_hedges_total").await
        - before;
    for rule in &rules {
        net.rule_del(3, rule);
    }
    assert_answered(
        "forwarded, then partitioned",
        &outcome,
        Duration::from_secs(5),
    );
    eprintln!("forwarded, then partitioned: node-1 moved {moved} task(s) off node-3");
    assert!(
        moved >= 1.0,
        "node-1 moved nothing off the partitioned node"
    );
    assert_converges_after_heal("forwarded, then partitioned", &mesh).await;
}

/// kill -9 of node-3 under `spheromesh loadtest` in open loop: Poisson arrivals at 36/s,
/// 60% of the mesh's capacity (3 nodes x 2 slots / 100 ms), spread round-robin over node-1
/// and node-2, so arrivals keep coming while node-3's forwarded work fails over (a closed
/// loop would slow down instead). Every request answered 200 or 503 `busy` with
/// `Retry-After`, none past 5 s, and node-3 had taken work before it died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_open_loop_loadtest_answers_every_request() {
    let Some(net) = netns::Net::new(3) else {
        return;
    };
    let pki = nodes::Pki::new("chaos", nodes::KEY);
    let mut mesh = start_mesh_with(&net, &pki, 100, &[]).await;
    let targets = format!("{},{}", mesh[0].url(""), mesh[1].url(""));
    let loadtest = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_spheromesh"))
            .args(["loadtest", "--targets", &targets, "--tasks", "400"])
            .args(["--rate", "36", "--arrivals", "poisson", "--seed", "7"])
            .args([
                "--generate",
                "4",
                "--image-size",
                "64x64",
                "--timeout",
                "5",
                "--json",
            ])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run spheromesh loadtest")
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    if loadtest.is_finished() {
        let output = loadtest.await.expect("loadtest");
        panic!(
            "the load ended before the fault: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    drop(mesh.pop().expect("node-3")); // SIGKILL, then reaped
    let output = loadtest.await.expect("loadtest");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadtest failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).expect("loadtest JSON");
    let errors = report["errors"].as_object().expect("errors");
    let busy = errors
        .get("busy")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    eprintln!(
        "kill -9, open loop: {} completed, {busy} busy, errors {errors:?}, latency p99 {} ms, max {} ms, by node {}",
        report["completed"], report["latency"]["p99_ms"], report["latency"]["max_ms"], report["processed_by"]
    );
    assert!(
        errors.keys().all(|kind| kind == "busy"),
        "answers other than 200 / 503 busy with Retry-After (or past the 5 s timeout): {errors:?}"
    );
    assert_eq!(
        report["completed"].as_u64().unwrap_or(0) + busy,
        400,
        "requests unaccounted for"
    );
    assert!(
        report["processed_by"]["node-3"]["tasks"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "node-3 took no work before the kill: the scenario tested nothing ({})",
        report["processed_by"]
    );
    let survivors: Vec<&NsNode> = mesh.iter().collect();
    assert!(
        converge(&survivors, 1, Duration::from_secs(10))
            .await
            .is_some(),
        "the survivors kept routing to the killed node"
    );
}
