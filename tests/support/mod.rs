//! Shared helpers of the broker tests: the real RabbitMQ (started by
//! `scripts/rabbitmq.sh`), a fake backend, a test-double runner, images and messages.
#![allow(dead_code)]

pub mod backend;
pub mod runner;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use spheromesh::broker::{run_consumer, BrokerConfig, BrokerStatus};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use backend::FakeBackend;
pub use runner::SlotRunner;

pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker URL (`RABBITMQ_URL`, else the local one the script starts).
pub fn broker_url() -> String {
    std::env::var("RABBITMQ_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Lock coordinating the tests that share the local broker: ordinary broker tests hold it
/// shared, the outage test (which stops the broker app) holds it exclusively, so parallel
/// `cargo test` runs (several worktrees on one machine) cannot see each other's outage.
pub struct BrokerLock(std::fs::File);

impl BrokerLock {
    fn open() -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("spheromesh-rabbitmq-tests.lock"))
            .expect("open lock file")
    }

    pub fn shared() -> Self {
        let f = Self::open();
        f.lock_shared().expect("shared lock");
        Self(f)
    }

    pub fn exclusive() -> Self {
        let f = Self::open();
        f.lock().expect("exclusive lock");
        Self(f)
    }
}

/// A connection to the test broker, or `None` (test skipped) when it is unreachable
/// outside CI. Under `CI=true` an unreachable broker fails the test.
pub async fn broker() -> Option<(String, Connection)> {
    let url = broker_url();
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await;
    match res {
        Ok(Ok(conn)) => Some((url, conn)),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "connect timed out".to_owned(),
            };
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("RabbitMQ at {url} is unreachable under CI=true: {why} (run scripts/rabbitmq.sh)");
            }
            // Straight to the process's stderr: the test harness captures `eprintln!` of
            // passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPING broker test: RabbitMQ at {url} unreachable ({why}).\n\
                 *** Start it with `bash scripts/rabbitmq.sh`; under CI=true this fails.\n"
            );
            None
        }
    }
}

/// A queue name no other test uses.
pub fn unique_queue(test: &str) -> String {
    format!("spheromesh-test.{test}.{}", uuid::Uuid::new_v4().simple())
}

/// Declares `queue` as the backend does (durable, no arguments).
pub async fn declare(ch: &Channel, queue: &str) {
    try_declare(ch, queue).await.expect("declare queue");
}

/// [`declare`] for callers that recover from a broken connection.
pub async fn try_declare(ch: &Channel, queue: &str) -> lapin::Result<()> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|_| ())
}

/// Publishes like the backend: default exchange, persistent, no content type.
pub async fn publish(ch: &Channel, queue: &str, body: &[u8]) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .expect("publish")
    .await
    .expect("publish confirm");
}

pub async fn publish_json(ch: &Channel, queue: &str, msg: &Value) {
    publish(ch, queue, &serde_json::to_vec(msg).expect("json")).await;
}

/// Ready messages in `queue` (passive declare; a fresh channel since a failed passive
/// declare closes its channel).
pub async fn depth(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    let _ = ch.close(200, "".into()).await;
    q.message_count()
}

/// Takes one message from `queue` (acked), or `None` when empty.
pub async fn get_one(ch: &Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
}

/// The `x-spheromesh-reason` header of a dead letter.
pub fn dead_letter_reason(m: &lapin::message::BasicGetMessage) -> String {
    let headers = m.delivery.properties.headers().clone().expect("headers");
    match headers.inner().get(spheromesh::broker::REASON_HEADER) {
        Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("reason header: {other:?}"),
    }
}

pub async fn delete_queues(ch: &Channel, queue: &str) {
    for q in [queue.to_owned(), format!("{queue}.dead_letter")] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

/// Writes a small valid PNG (a bright disk on a dark background) and returns its path.
pub fn write_png(dir: &Path, name: &str, w: u32, h: u32) -> std::path::PathBuf {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as i64 - w as i64 / 2, y as i64 - h as i64 / 2);
        if dx * dx + dy * dy < (w.min(h) as i64 / 3).pow(2) {
            image::Rgb([220, 220, 220])
        } else {
            image::Rgb([30, 30, 30])
        }
    });
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    img.save(&path).expect("save png");
    path
}

/// A task message like the backend's.
pub fn task(
    task_id: Value,
    image_id: Value,
    image_path: &str,
    callback_url: &str,
    params: Value,
) -> Value {
    serde_json::json!({
        "taskId": task_id, "imageId": image_id, "imagePath": image_path,
        "parameters": params, "retries": 0, "callbackUrl": callback_url,
    })
}

/// A consumer running in the background.
pub struct Running {
    pub status: Arc<BrokerStatus>,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<()>,
}

impl Running {
    pub fn start(config: BrokerConfig, runner: Arc<SlotRunner>) -> Self {
        Self::start_with(config, runner, CancellationToken::new())
    }

    pub fn start_with(
        config: BrokerConfig,
        runner: Arc<SlotRunner>,
        shutdown: CancellationToken,
    ) -> Self {
        let status = BrokerStatus::new();
        let handle = tokio::spawn({
            let status = Arc::clone(&status);
            let shutdown = shutdown.clone();
            async move {
                run_consumer(config, runner, status, shutdown)
                    .await
                    .expect("consumer runs");
            }
        });
        Self {
            status,
            shutdown,
            handle,
        }
    }

    /// Cancels and waits for the drain (panics if it takes longer than `limit`).
    pub async fn stop(self, limit: Duration) -> Arc<BrokerStatus> {
        self.shutdown.cancel();
        tokio::time::timeout(limit, self.handle)
            .await
            .expect("drain finished in time")
            .expect("consumer task");
        self.status
    }
}

/// Polls `cond` every 20 ms until true (panics with `what` after `timeout`).
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
