//! The broker side of the chaos suite: the local RabbitMQ reached from the namespaces over
//! the bridge (a user of its own: `guest` may only log in from loopback), a publisher that
//! behaves like the SpherosegV4 backend (persistent messages on a durable queue, publisher
//! confirms, a failed publish retried after a reconnect), and the checker of callbacks
//! (the fake backend validates each one against the contract).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;

use crate::support::{self, FakeBackend};

/// The broker user the namespaced nodes log in as (a local test broker only).
const USER: &str = "spheromesh-chaos";
const PASSWORD: &str = "chaos-test-only";

/// AMQP heartbeat the nodes ask for in these tests, so the broker notices a node cut from
/// it within seconds instead of the default minute (`?heartbeat=` of `RABBITMQ_URL`).
pub const HEARTBEAT_SECS: u64 = 5;

/// Runs `rabbitmqctl args`, returning whether it succeeded and its stderr.
fn rabbitmqctl(args: &[&str]) -> (bool, String) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl {args:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The local broker with a user for the namespaces; `None` (printed) outside CI when there
/// is no local broker to control. Under `CI=true` that is a failure.
pub struct Broker {
    /// A queue of this test, declared as the backend declares it.
    pub queue: String,
    /// The URL nodes in the namespaces use (bridge address, own user, short heartbeat).
    pub node_url: String,
}

impl Broker {
    pub async fn new(test: &str, host: Ipv4Addr) -> Option<Self> {
        let (_, conn) = support::broker().await?;
        let (local, why) = rabbitmqctl(&["-q", "status"]);
        if !local {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "CI=true but rabbitmqctl cannot control the local broker: {why}"
            );
            eprintln!("SKIPPED: no local rabbitmqctl to add the namespaces' user with");
            return None;
        }
        let (added, why) = rabbitmqctl(&["add_user", USER, PASSWORD]);
        if !added {
            assert!(why.contains("already"), "rabbitmqctl add_user: {why}");
            let (changed, why) = rabbitmqctl(&["change_password", USER, PASSWORD]);
            assert!(changed, "rabbitmqctl change_password: {why}");
        }
        let (allowed, why) = rabbitmqctl(&["set_permissions", "-p", "/", USER, ".*", ".*", ".*"]);
        assert!(allowed, "rabbitmqctl set_permissions: {why}");
        let channel = conn.create_channel().await.expect("channel");
        let queue = support::unique_queue(test);
        support::declare(&channel, &queue).await;
        let node_url =
            format!("amqp://{USER}:{PASSWORD}@{host}:5672/%2f?heartbeat={HEARTBEAT_SECS}");
        Some(Self { queue, node_url })
    }

    /// The node flags that make a node consume this test's queue.
    pub fn node_args(&self, prefetch: u16, uploads: &std::path::Path) -> Vec<String> {
        vec![
            "--rabbitmq-url".into(),
            self.node_url.clone(),
            "--rabbitmq-queue".into(),
            self.queue.clone(),
            "--rabbitmq-prefetch-count".into(),
            prefetch.to_string(),
            "--uploads-root".into(),
            uploads.to_string_lossy().into_owned(),
        ]
    }

    /// Removes the test's queues (a fresh connection: the broker may have restarted).
    pub async fn cleanup(&self) {
        if let Ok(conn) =
            Connection::connect(&support::broker_url(), ConnectionProperties::default()).await
        {
            if let Ok(ch) = conn.create_channel().await {
                support::delete_queues(&ch, &self.queue).await;
            }
        }
    }
}

/// What the publisher did.
#[derive(Debug, Default)]
pub struct Published {
    /// Image ids of every task the broker confirmed, in order.
    pub ids: Vec<String>,
    /// When each was confirmed.
    pub at: Vec<Instant>,
    /// Publishes that failed (broker away) and were sent again after a reconnect.
    pub retried: usize,
}

/// Publishes a task every `every` until `stop` is set on the broker at `broker_url`, like
/// the backend: one image per task, the callback at `callback_url(image)`. A publish the broker does not confirm is retried on a
/// new connection until it is (the backend would report the error and the user would
/// retry; here nothing is given up). `progress` counts confirmed tasks.
#[allow(clippy::too_many_arguments)]
pub async fn publish_like_the_backend(
    broker_url: String,
    queue: String,
    callback_url: impl Fn(uuid::Uuid) -> String,
    image_path: String,
    every: Duration,
    progress: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Published {
    let mut out = Published::default();
    let mut channel: Option<Channel> = None;
    let start = Instant::now();
    for i in 0u32.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = start + every * i;
        tokio::time::sleep_until(due.into()).await;
        let image = uuid::Uuid::new_v4();
        let msg = support::task(
            json!(format!("chaos-{i}")),
            json!(image.to_string()),
            &image_path,
            &callback_url(image),
            json!({"threshold": 0.5, "model_type": "resunet", "priority": 1}),
        );
        let body = serde_json::to_vec(&msg).expect("json");
        loop {
            if channel.is_none() {
                channel = confirming_channel(&broker_url, &queue).await;
            }
            let Some(ch) = channel.as_ref() else {
                out.retried += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if publish_confirmed(ch, &queue, &body).await {
                break;
            }
            out.retried += 1;
            channel = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        out.ids.push(image.to_string());
        out.at.push(Instant::now());
        progress.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// A channel in confirm mode on which the task queue is declared, as the backend declares
/// it before publishing (durable): a message published to a queue nobody declared yet is
/// dropped by the broker and still confirmed.
async fn confirming_channel(broker_url: &str, queue: &str) -> Option<Channel> {
    let conn = tokio::time::timeout(
        Duration::from_secs(3),
        Connection::connect(broker_url, ConnectionProperties::default()),
    )
    .await
    .ok()?
    .ok()?;
    let ch = conn.create_channel().await.ok()?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .ok()?;
    support::try_declare(&ch, queue).await.ok()?;
    Some(ch)
}

/// Publishes persistently on the default exchange; whether the broker confirmed it.
async fn publish_confirmed(ch: &Channel, queue: &str, body: &[u8]) -> bool {
    let sent = tokio::time::timeout(Duration::from_secs(5), async {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await
    })
    .await;
    matches!(sent, Ok(Ok(confirmation)) if confirmation.is_ack())
}

/// Starts the broker app again whatever happens to the test (`rabbitmqctl start_app`).
pub struct StartAppOnDrop;

impl Drop for StartAppOnDrop {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["start_app"]);
    }
}

/// Stops the broker app (every connection closes; durable queues and persistent messages
/// stay), waits `down`, starts it again.
pub fn restart_app(down: Duration) {
    let (stopped, why) = rabbitmqctl(&["stop_app"]);
    assert!(stopped, "rabbitmqctl stop_app: {why}");
    std::thread::sleep(down);
    let (started, why) = rabbitmqctl(&["start_app"]);
    assert!(started, "rabbitmqctl start_app: {why}");
}

/// The callbacks of a scenario, per task.
#[derive(Debug)]
pub struct CallbackReport {
    pub tasks: usize,
    /// Callbacks beyond the first of a task.
    pub duplicates: usize,
    /// Tasks whose callbacks said `failed`.
    pub failed: usize,
    /// From the broker's confirm to the first callback: the 99th percentile and the
    /// slowest task.
    pub p99: Duration,
    pub slowest: Duration,
}

/// Waits (up to `within`) until every published task has a callback the backend accepted,
/// then a little longer for late duplicates. Panics naming what is missing; the fake
/// backend refusing any callback (contract violation) is a failure too.
pub async fn check_callbacks(
    scenario: &str,
    backend: &FakeBackend,
    published: &Published,
    within: Duration,
) -> CallbackReport {
    let deadline = Instant::now() + within;
    loop {
        let per = per_task(backend);
        // Which tasks, and when the broker confirmed them (seconds after the first).
        let missing: Vec<String> = published
            .ids
            .iter()
            .zip(&published.at)
            .enumerate()
            .filter(|(_, (id, _))| !per.contains_key(id.as_str()))
            .map(|(i, (_, at))| {
                let since = published
                    .at
                    .first()
                    .map_or(0.0, |first| at.duration_since(*first).as_secs_f64());
                format!("#{i} at {since:.1}s")
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{scenario}: {} of {} tasks have no callback after {within:?} (lost): {missing:?}; \
             refused: {:?}",
            missing.len(),
            published.ids.len(),
            backend.refused()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A duplicate comes from a redelivery after a lost ack: give it time to show.
    tokio::time::sleep(Duration::from_secs(2 * HEARTBEAT_SECS)).await;
    let refused = backend.refused();
    assert!(
        refused.is_empty(),
        "{scenario}: callbacks the backend refused (contract): {refused:?}"
    );
    let per = per_task(backend);
    let unknown: Vec<&String> = per
        .keys()
        .filter(|id| !published.ids.contains(id))
        .collect();
    assert!(
        unknown.is_empty(),
        "{scenario}: callbacks for tasks never published: {unknown:?}"
    );
    let mut report = CallbackReport {
        tasks: published.ids.len(),
        duplicates: 0,
        failed: 0,
        p99: Duration::ZERO,
        slowest: Duration::ZERO,
    };
    for calls in per.values() {
        report.duplicates += calls.len() - 1;
        if calls.iter().any(|(status, _)| status != "completed") {
            report.failed += 1;
        }
    }
    let mut waits: Vec<Duration> = published
        .ids
        .iter()
        .zip(&published.at)
        .filter_map(|(id, sent)| {
            let first = per.get(id)?.iter().map(|(_, at)| *at).min()?;
            Some(first.saturating_duration_since(*sent))
        })
        .collect();
    waits.sort();
    report.p99 = percentile(&waits, 0.99);
    report.slowest = waits.last().copied().unwrap_or_default();
    eprintln!(
        "{scenario}: {} tasks, {} retried publishes, every one called back; {} duplicates, \
         {} failed; confirm to callback p99 {:?}, max {:?}",
        report.tasks,
        published.retried,
        report.duplicates,
        report.failed,
        report.p99,
        report.slowest
    );
    report
}

/// The `q` quantile of sorted `values` (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Callbacks per image id: (status, when it arrived).
fn per_task(backend: &FakeBackend) -> BTreeMap<String, Vec<(String, Instant)>> {
    let mut out: BTreeMap<String, Vec<(String, Instant)>> = BTreeMap::new();
    for cb in backend.accepted() {
        let status = cb.body["status"].as_str().unwrap_or_default().to_owned();
        out.entry(cb.image_id.to_string())
            .or_default()
            .push((status, cb.at));
    }
    out
}
