//! The Docker side of the orchestrator tests: commands, images, containers, events, and a
//! load phase run by `spheromesh loadtest` in a container on the stack's network (the way
//! the backend reaches the nodes: by the service name, any replica an entry).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The node image the stacks run.
pub const IMAGE: &str = "spheromesh:local";

/// Runs a command; panics with its stderr unless it succeeds. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command, returning whether it succeeded (output discarded).
pub fn try_run(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// Whether a Docker engine answers; under `CI=true` its absence is a failure.
pub fn engine_or_skip() -> bool {
    let up = try_run(Command::new("docker").arg("info"));
    if !up {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but no Docker engine answers `docker info`"
        );
        eprintln!("SKIPPED: no Docker engine");
    }
    up
}

/// Builds the base (once per machine), RabbitMQ and node images with the binary under test.
pub fn build_images(root: &Path) {
    let started = Instant::now();
    run(Command::new("bash")
        .arg(root.join("scripts/docker-image.sh"))
        .env("SPHEROMESH_BIN", env!("CARGO_BIN_EXE_spheromesh"))
        .current_dir(root));
    eprintln!("images built in {:.1?}", started.elapsed());
}

/// Seconds since the epoch, for `docker events --since/--until`.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A fresh secret from the image (`certs key` or `ca token`).
pub fn secret(what: &[&str]) -> String {
    let mut args = vec!["run", "--rm", IMAGE];
    args.extend_from_slice(what);
    docker(&args).trim().to_owned()
}

/// Running container ids carrying `label` (`key=value`).
pub fn containers(label: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Kills a container's main process with SIGKILL from the host, as a crash or the kernel's
/// OOM killer would: unlike `docker kill`, which counts as a deliberate stop, the
/// container's restart policy (compose) or the service (swarm) brings a replacement back.
pub fn crash(container: &str) {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", container]);
    run(Command::new("kill").args(["-KILL", pid.trim()]));
}

/// Waits until `container` (crashed a moment ago) has stopped running or was restarted in
/// place, so that a following [`wait_mesh`] sees the mesh after the crash, not before it.
pub fn wait_crashed(container: &str, restarts_before: u64, within: Duration) {
    let started = Instant::now();
    loop {
        let state = docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.RestartCount}}",
            container,
        ]);
        let mut parts = state.split_whitespace();
        let running = parts.next() == Some("true");
        let restarts: u64 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if !running || restarts > restarts_before {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{container} still running after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How often Docker restarted `container` in place.
pub fn restart_count(container: &str) -> u64 {
    docker(&["inspect", "-f", "{{.RestartCount}}", container])
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Prints each container's addresses, what it resolves the stack's service names to, the
/// broker's queues (in the broker's container), its health-check log and last log lines
/// (for a failed test).
pub fn dump(label: &str) {
    for c in docker(&["ps", "-aq", "--filter", &format!("label={label}")]).lines() {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec 1>&2; echo \"== {c}\"; \
                 docker inspect -f '{{{{.Name}}}} {{{{.State.Status}}}} addresses:{{{{range .NetworkSettings.Networks}}}} {{{{.IPAddress}}}}{{{{end}}}}' {c}; \
                 docker exec {c} sh -c 'for h in rabbitmq ca ml; do echo $h: $(getent ahostsv4 $h | while read a rest; do echo $a; done | sort -u); done; \
                   if command -v rabbitmqctl >/dev/null; then rabbitmqctl -q list_queues name messages_ready messages_unacknowledged consumers; fi' 2>/dev/null; \
                 docker inspect -f '{{{{json .State.Health}}}}' {c}; docker logs --tail 15 {c} 2>&1"
            ))
            .status();
    }
}

/// `curl` of a node's own HTTP port from inside its container.
pub fn node_get(container: &str, path: &str) -> Option<String> {
    let out = Command::new("docker")
        .args([
            "exec",
            container,
            "curl",
            "-fsS",
            "--max-time",
            "3",
            &format!("http://127.0.0.1:5002{path}"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Routable peers in a node's `/cluster`.
pub fn routable_peers(container: &str) -> Option<usize> {
    let cluster: Value = serde_json::from_str(&node_get(container, "/cluster")?).ok()?;
    Some(
        cluster["members"]
            .as_array()?
            .iter()
            .filter(|m| m["routable"] == true)
            .count(),
    )
}

/// Tasks this node ran itself (`ml_tasks_processed_total`, all statuses).
pub fn processed(container: &str) -> Option<f64> {
    let text = node_get(container, "/metrics")?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("ml_tasks_processed_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// Waits until exactly `n` containers with `label` run, each ready and seeing the `n - 1`
/// others as routable. Returns them and how long it took.
pub fn wait_mesh(label: &str, n: usize, within: Duration) -> (Vec<String>, Duration) {
    let started = Instant::now();
    loop {
        let running = containers(label);
        let whole = running.len() == n
            && running.iter().all(|c| {
                node_get(c, "/health/ready").is_some() && routable_peers(c) == Some(n - 1)
            });
        if whole {
            return (running, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "mesh of {n} not whole after {within:?}: {} running, peers {:?}",
            running.len(),
            running
                .iter()
                .map(|c| routable_peers(c))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until each of `fresh` ran at least one task; returns the slowest time, from `since`.
pub fn wait_taking_work(fresh: &[String], since: Instant, within: Duration) -> Duration {
    let mut pending: Vec<&String> = fresh.iter().collect();
    let mut slowest = Duration::ZERO;
    while !pending.is_empty() {
        pending.retain(|c| {
            if processed(c).unwrap_or(0.0) > 0.0 {
                slowest = slowest.max(since.elapsed());
                false
            } else {
                true
            }
        });
        assert!(
            since.elapsed() < within,
            "{} new replicas took no work within {within:?}",
            pending.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    slowest
}

/// One container's end as `docker events` saw it.
#[derive(Debug)]
pub struct Death {
    pub name: String,
    pub exit_code: i64,
    /// From its first `kill` signal to `die`.
    pub drain: Option<Duration>,
}

/// Containers with `label` that died between `since` and `until` (unix seconds).
pub fn deaths(label: &str, since: f64, until: f64) -> Vec<Death> {
    let out = docker(&[
        "events",
        "--since",
        &format!("{since:.3}"),
        "--until",
        &format!("{until:.3}"),
        "--filter",
        "type=container",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{json .}}",
    ]);
    let mut killed: BTreeMap<String, i64> = BTreeMap::new();
    let mut out_deaths = Vec::new();
    for line in out.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        let at = event["timeNano"].as_i64().unwrap_or_default();
        match event["status"].as_str() {
            Some("kill") => {
                killed.entry(id).or_insert(at);
            }
            Some("die") => {
                let attrs = &event["Actor"]["Attributes"];
                out_deaths.push(Death {
                    name: attrs["name"].as_str().unwrap_or_default().to_owned(),
                    exit_code: attrs["exitCode"]
                        .as_str()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(-1),
                    drain: killed
                        .get(&id)
                        .map(|k| Duration::from_nanos((at - k).max(0) as u64)),
                });
            }
            _ => {}
        }
    }
    out_deaths
}

/// An HTTP load phase in flight: `spheromesh loadtest` in a container on `network`.
pub struct Load(std::thread::JoinHandle<Value>);

impl Load {
    /// Offers `rate` tasks/s (Poisson) for `tasks` tasks to `http://ml:5002`.
    pub fn start(network: &str, rate: f64, tasks: usize, retry_transport: bool) -> Self {
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "--network",
            network,
            IMAGE,
            "loadtest",
            "--targets",
            "http://ml:5002",
            "--rate",
            &rate.to_string(),
            "--tasks",
            &tasks.to_string(),
            "--concurrency",
            "64",
            "--generate",
            "2",
            "--image-size",
            "96x96",
            "--timeout",
            "60",
            "--json",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if retry_transport {
            args.push("--retry-transport".into());
        }
        Load(std::thread::spawn(move || {
            let out = run(Command::new("docker").args(&args));
            serde_json::from_str(out.lines().last().unwrap_or_default())
                .unwrap_or_else(|e| panic!("loadtest printed no JSON ({e}): {out}"))
        }))
    }

    /// Waits for the report; panics if any task failed other than with an explicit 503
    /// `busy` (with Retry-After).
    pub fn finish(self, phase: &str) -> Value {
        let report = self.0.join().expect("load thread");
        let errors = report["errors"].as_object().cloned().unwrap_or_default();
        let busy = errors.get("busy").and_then(Value::as_u64).unwrap_or(0);
        let other: Vec<_> = errors.iter().filter(|(k, _)| *k != "busy").collect();
        eprintln!(
            "{phase}: {} tasks, {} completed, {busy} busy (503 + Retry-After), other errors \
             {other:?}, retried after a broken connection {}, p99 {} ms, by node {}",
            report["tasks"],
            report["completed"],
            report["retried_transport"],
            report["latency"]["p99_ms"],
            report["processed_by"]
                .as_object()
                .map_or(0, serde_json::Map::len),
        );
        assert!(
            other.is_empty(),
            "{phase}: failed HTTP requests besides explicit 503s: {other:?}"
        );
        assert_eq!(
            report["completed"].as_u64().unwrap_or(0) + busy,
            report["tasks"].as_u64().unwrap_or(0),
            "{phase}: tasks unaccounted for"
        );
        report
    }
}
