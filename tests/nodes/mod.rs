//! Real `spheromesh node` processes on loopback for the cluster tests: a cluster CA and key,
//! free ports, start / kill -9 / SIGTERM, and a small HTTP load generator.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spheromesh_mesh::security::{generate_ca, issue_node_cert, CaBundle};

/// A cluster CA in a temporary folder, and a cluster key.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: CaBundle,
    pub key: String,
}

impl Pki {
    pub fn new(cluster: &str, key: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = generate_ca(cluster).expect("CA");
        ca.save(dir.path()).expect("save CA");
        Self {
            dir,
            ca,
            key: key.to_owned(),
        }
    }

    pub fn issue(&self, name: &str) {
        issue_node_cert(&self.ca, name, &[])
            .expect("issue")
            .save(self.dir.path())
            .expect("save cert");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Credentials from this CA that are not written anywhere (a test's own client).
    pub fn credentials(&self, name: &str) -> spheromesh_mesh::security::NodeCredentials {
        issue_node_cert(&self.ca, name, &[]).expect("issue")
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }
}

/// A key every test cluster shares unless a test wants another.
pub const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// How to start one node.
#[derive(Clone)]
pub struct Spec {
    pub name: String,
    pub model: String,
    pub slots: u32,
    pub queue: u32,
    pub seeds: Vec<SocketAddr>,
    pub extra: Vec<String>,
}

impl Spec {
    pub fn synthetic(name: &str, service_ms: u64, slots: u32) -> Self {
        Self {
            name: name.to_owned(),
            model: format!("synthetic:{service_ms}"),
            slots,
            queue: 8,
            seeds: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn seeds(mut self, seeds: &[SocketAddr]) -> Self {
        self.seeds = seeds.to_vec();
        self
    }

    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.extra.push(flag.to_owned());
        self.extra.push(value.to_owned());
        self
    }
}

/// A running node process; killed when dropped.
pub struct Node {
    pub name: String,
    pub http: SocketAddr,
    pub quic: SocketAddr,
    pub gossip: SocketAddr,
    pub child: Child,
    pub log: PathBuf,
}

/// A UDP port free a moment ago, for gossip: a node refuses to advertise port 0 to its
/// peers, so this one is probed and can be taken by another socket before the node binds
/// it (then `start_with` retries with a fresh one).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind udp")
        .local_addr()
        .expect("addr")
        .port()
}

impl Node {
    /// Starts a node with certificates from `pki` and waits for its `ready` line.
    pub fn start(spec: &Spec, pki: &Pki) -> Node {
        Self::start_with(spec, pki.path(), &pki.key)
    }

    /// Starts a node, retrying with a fresh gossip port when the probed one was taken
    /// between the probe and the node's bind (HTTP and QUIC bind port 0 and report it).
    pub fn start_with(spec: &Spec, tls_dir: &Path, key: &str) -> Node {
        const TRIES: usize = 3;
        for attempt in 1..=TRIES {
            match Self::try_start(spec, tls_dir, key) {
                Ok(node) => return node,
                Err(log) if attempt < TRIES && log.contains("Address already in use") => {
                    eprintln!("{}: port taken before bind, retrying:\n{log}", spec.name);
                }
                Err(log) => panic!("{} did not become ready; log:\n{log}", spec.name),
            }
        }
        unreachable!("the last try returns or panics")
    }

    /// One start: the node's `ready` line, or its log when it exited or stayed silent.
    fn try_start(spec: &Spec, tls_dir: &Path, key: &str) -> Result<Node, String> {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let gossip: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
        let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let start = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = logs.join(format!("{}-{}-{start}.log", spec.name, std::process::id()));
        let seeds: Vec<String> = spec.seeds.iter().map(ToString::to_string).collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_spheromesh"));
        command
            .arg("node")
            .args(["--instance-id", &spec.name])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--quic-listen", "127.0.0.1:0"])
            .args(["--gossip-listen", &gossip.to_string()])
            .args(["--model", &spec.model])
            .args(["--max-concurrent-tasks", &spec.slots.to_string()])
            .args(["--queue-limit", &spec.queue.to_string()])
            .args(["--drain-grace-secs", "15"])
            .arg("--tls-dir")
            .arg(tls_dir)
            .args(&spec.extra)
            // Only what the test says: CI exports RABBITMQ_URL for the broker tests, and a
            // node inheriting it would consume the default queue.
            .env_clear()
            .env("SPHEROMESH_CLUSTER_KEY", key)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if !seeds.is_empty() {
            command.args(["--seeds", &seeds.join(",")]);
        }
        let mut child = command.spawn().expect("spawn spheromesh node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("\"event\":\"ready\"") {
                    let _ = tx.send(line);
                }
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        };
        let ready: serde_json::Value = serde_json::from_str(&line).expect("ready json");
        let addr = |k: &str| ready[k].as_str().expect(k).parse().expect("addr");
        Ok(Node {
            name: spec.name.clone(),
            http: addr("http"),
            quic: addr("quic"),
            gossip: addr("gossip"),
            child,
            log,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// Stops the process (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn sigstop(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Resumes a stopped process (SIGCONT).
    pub fn sigcont(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .unwrap_or_else(|e| panic!("{signal}: {e}"));
    }

    pub fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
    }

    /// Waits for the process to exit, up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Peak resident memory of the process (VmHWM), in kB.
    pub fn peak_rss_kb(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .expect("json")
}

/// The node's `/metrics` text.
pub async fn metrics_text(node: &Node) -> String {
    client()
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Ids of the members `node` can route to, from its `/cluster`.
pub async fn routable(node: &Node) -> Vec<String> {
    let cluster = get_json(&node.url("/cluster")).await;
    cluster["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["routable"] == true)
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Forwards `node` has sent to `peer` and not seen answered, from its `/cluster`.
pub async fn inflight_to(node: &Node, peer: &str) -> u64 {
    let cluster = get_json(&node.url("/cluster")).await;
    cluster["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["id"] == peer)
        .and_then(|m| m["local_inflight"].as_u64())
        .unwrap_or(0)
}

/// Polls `check` every 50 ms until it holds; returns the time it took, or `None`.
pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A small PNG.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 7])
    })
    .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
    .expect("encode");
    out
}

/// A PNG of noise, about `width * height * 3` bytes (it does not compress).
pub fn noisy_png(width: u32, height: u32) -> Vec<u8> {
    let mut state: u32 = 0x9E37_79B9;
    let mut out = Vec::new();
    image::RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [a, b, c, _] = state.to_le_bytes();
        image::Rgb([a, b, c])
    })
    .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
    .expect("encode");
    out
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Tasks per `processed_by`.
    pub shares: BTreeMap<String, usize>,
    /// Failed requests: status (0 for transport errors) and body.
    pub failures: Vec<(u16, String)>,
    /// 503 answers and whether each had `Retry-After`.
    pub busy: Vec<bool>,
    /// The slowest request, whatever its answer.
    pub slowest: Duration,
    /// Every request's latency, whatever its answer.
    pub latencies: Vec<Duration>,
}

impl LoadOutcome {
    pub fn ok(&self) -> usize {
        self.shares.values().sum()
    }

    /// Adds what another run (or worker) saw.
    pub fn merge(&mut self, part: LoadOutcome) {
        for (k, v) in part.shares {
            *self.shares.entry(k).or_default() += v;
        }
        self.failures.extend(part.failures);
        self.busy.extend(part.busy);
        self.slowest = self.slowest.max(part.slowest);
        self.latencies.extend(part.latencies);
    }

    /// The 99th percentile latency (nearest rank); zero without requests.
    pub fn p99(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = (sorted.len() * 99).div_ceil(100);
        sorted[rank.max(1) - 1]
    }
}

/// Sends `tasks` POST /segment requests to `url` from `concurrency` workers.
/// With `busy_is_failure = false`, 503 answers are recorded in `busy` instead.
pub async fn load(
    url: String,
    image: Vec<u8>,
    tasks: usize,
    concurrency: usize,
    busy_is_failure: bool,
) -> LoadOutcome {
    let next = Arc::new(AtomicUsize::new(0));
    let image = Arc::new(image);
    let client = client();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, image, client, url) = (next.clone(), image.clone(), client.clone(), url.clone());
        workers.spawn(async move {
            let mut out = LoadOutcome::default();
            while next.fetch_add(1, Ordering::Relaxed) < tasks {
                let started = Instant::now();
                let sent = client
                    .post(&url)
                    .header("content-type", "image/png")
                    .body(image.as_ref().clone())
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let retry_after = response.headers().contains_key("retry-after");
                        let body = response.text().await.unwrap_or_default();
                        if status == 200 {
                            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
                            let by = v["processed_by"].as_str().expect("processed_by").to_owned();
                            *out.shares.entry(by).or_default() += 1;
                        } else if status == 503 && !busy_is_failure {
                            out.busy.push(retry_after);
                        } else {
                            out.failures.push((status, body));
                        }
                    }
                    Err(error) => out.failures.push((0, error.to_string())),
                }
                let took = started.elapsed();
                out.slowest = out.slowest.max(took);
                out.latencies.push(took);
            }
            out
        });
    }
    let mut total = LoadOutcome::default();
    while let Some(part) = workers.join_next().await {
        let part = part.expect("worker");
        total.merge(part);
    }
    total
}

/// Starts `n` synthetic nodes `node-1..n`, node-1 seeding the rest, and waits until every
/// node routes to all others.
pub async fn mesh(pki: &Pki, n: usize, service_ms: u64, slots: u32) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=n {
        let name = format!("node-{i}");
        pki.issue(&name);
        let mut spec = Spec::synthetic(&name, service_ms, slots);
        if let Some(first) = nodes.first() {
            spec = spec.seeds(&[first.gossip]);
        }
        nodes.push(Node::start(&spec, pki));
    }
    for node in &nodes {
        let took = wait_until(Duration::from_secs(20), || async {
            routable(node).await.len() == n - 1
        })
        .await;
        assert!(took.is_some(), "{} did not see all peers", node.name);
    }
    nodes
}

/// Drops every UDP datagram to a loopback port (iptables), until dropped. Needs root:
/// `None` (the caller skips, loudly) when iptables cannot be used, except under `CI=true`,
/// where that is a failure.
pub struct UdpBlackhole {
    rule: Vec<String>,
}

impl UdpBlackhole {
    pub fn new(port: u16) -> Option<Self> {
        let rule: Vec<String> = [
            "INPUT",
            "-i",
            "lo",
            "-p",
            "udp",
            "--dport",
            &port.to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let added = Command::new("iptables")
            .arg("-I")
            .args(&rule)
            .status()
            .is_ok_and(|s| s.success());
        if !added {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CI=true but iptables cannot add a rule (root and iptables are required)"
            );
            eprintln!("SKIPPED: iptables unavailable (needs root)");
            return None;
        }
        Some(Self { rule })
    }
}

impl Drop for UdpBlackhole {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.rule).status();
    }
}
