//! The RabbitMQ drop-in end to end: real RabbitMQ (scripts/rabbitmq.sh), real
//! `spheromesh node` processes (3-node mesh, 2 of them consuming), and a fake backend that
//! checks every callback the way the real backend does.
//!
//! Nodes run the synthetic engine (a labelled test double that only takes time). Under
//! `CI=true` an unreachable broker fails these tests; otherwise they are skipped loudly.

#[path = "nodes/mod.rs"]
mod nodes;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use nodes::{Node, Pki, Spec, KEY};
use serde_json::{json, Value};
use support::{BrokerLock, FakeBackend};

/// A 3-node mesh on one broker queue: node-1 and node-2 consume (1 slot each, prefetch 4),
/// node-3 (2 slots) only takes forwarded work.
struct Setup {
    _pki: Pki,
    nodes: Vec<Node>,
    queue: String,
    uploads: tempfile::TempDir,
    backend: FakeBackend,
    conn: lapin::Connection,
    channel: lapin::Channel,
}

async fn setup(test: &str, service_ms: u64) -> Option<Setup> {
    let (url, conn) = support::broker().await?;
    let queue = support::unique_queue(test);
    let channel = conn.create_channel().await.expect("channel");
    support::declare(&channel, &queue).await;
    let uploads = tempfile::tempdir().expect("uploads");
    let backend = FakeBackend::start().await;
    let pki = Pki::new(test, KEY);
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=3 {
        let name = format!("node-{i}");
        pki.issue(&name);
        // Consumers get 1 slot and the plain node 2, so the mesh's spare capacity sits on
        // the node that does not pull work: pulled tasks must cross the mesh to use it.
        let slots = if i <= 2 { 1 } else { 2 };
        let mut spec = Spec::synthetic(&name, service_ms, slots);
        spec.queue = 2;
        if let Some(first) = nodes.first() {
            spec = spec.seeds(&[first.gossip]);
        }
        let uploads_root = uploads.path().to_string_lossy().into_owned();
        spec = spec.arg("--uploads-root", &uploads_root);
        if i <= 2 {
            spec = spec
                .arg("--rabbitmq-url", &url)
                .arg("--rabbitmq-queue", &queue)
                .arg("--rabbitmq-prefetch-count", "4");
        }
        nodes.push(Node::start(&spec, &pki));
    }
    for node in &nodes {
        let ok = nodes::wait_until(Duration::from_secs(20), || async {
            nodes::routable(node).await.len() == 2
        })
        .await;
        assert!(ok.is_some(), "{} did not see its peers", node.name);
    }
    Some(Setup {
        _pki: pki,
        nodes,

        queue,
        uploads,
        backend,
        conn,
        channel,
    })
}

impl Setup {
    /// Publishes `n` valid tasks, each for its own image; returns the image ids (the
    /// callback URL names the image, so that is how callbacks are told apart).
    async fn publish_tasks(&self, n: usize) -> Vec<String> {
        support::write_png(self.uploads.path(), "proj/a.png", 64, 48);
        let mut ids = Vec::new();
        for i in 0..n {
            let image = uuid::Uuid::new_v4();
            let msg = support::task(
                json!(format!("task-{i}")),
                json!(image.to_string()),
                "proj/a.png",
                &self.backend.callback_url(image),
                json!({"threshold": 0.5, "model_type": "resunet", "priority": 1}),
            );
            support::publish_json(&self.channel, &self.queue, &msg).await;
            ids.push(image.to_string());
        }
        ids
    }

    /// Waits until every id has a callback; returns callbacks per id.
    async fn wait_all(&self, ids: &[String], within: Duration) -> HashMap<String, Vec<Value>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let per_task = by_task(&self.backend);
            let missing: Vec<&String> = ids.iter().filter(|i| !per_task.contains_key(*i)).collect();
            if missing.is_empty() {
                return per_task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} tasks have no callback after {within:?} (e.g. {:?}); refused: {:?}",
                missing.len(),
                ids.len(),
                missing.first(),
                self.backend.refused()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn cleanup(self) {
        support::delete_queues(&self.channel, &self.queue).await;
    }
}

/// Callback bodies per image id.
fn by_task(backend: &FakeBackend) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for cb in backend.accepted() {
        out.entry(cb.image_id.to_string())
            .or_default()
            .push(cb.body);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_tasks_through_three_nodes_two_consuming() {
    let _lock = BrokerLock::shared();
    let Some(s) = setup("mesh100", 100).await else {
        return;
    };
    let ids = s.publish_tasks(100).await;
    let callbacks = s.wait_all(&ids, Duration::from_secs(90)).await;
    assert!(s.backend.refused().is_empty(), "{:?}", s.backend.refused());
    let mut processed_by: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        let got = &callbacks[id];
        assert_eq!(got.len(), 1, "task {id} got {} callbacks", got.len());
        assert_eq!(got[0]["status"], "completed", "{}", got[0]);
        let by = got[0]["result_data"]["processed_by"]
            .as_str()
            .expect("processed_by");
        *processed_by.entry(by.to_owned()).or_default() += 1;
    }
    eprintln!("processed_by: {processed_by:?}");
    assert!(
        processed_by.get("node-3").copied().unwrap_or(0) > 0,
        "the non-consuming node never ran a pulled task: {processed_by:?}"
    );
    assert_eq!(support::depth(&s.conn, &s.queue).await, 0);

    // A corrupt image: exactly one `failed` callback, and acked.
    std::fs::write(
        s.uploads.path().join("proj/corrupt.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .expect("write");
    let image = uuid::Uuid::new_v4();
    let corrupt = support::task(
        json!("corrupt-1"),
        json!(image.to_string()),
        "proj/corrupt.png",
        &s.backend.callback_url(image),
        json!({}),
    );
    support::publish_json(&s.channel, &s.queue, &corrupt).await;
    // A malformed message: to the dead-letter queue with the reason.
    support::publish(&s.channel, &s.queue, b"{\"taskId\": 1, \"imagePath\": ").await;
    let corrupt_cbs = wait_for_image(&s.backend, image, Duration::from_secs(30)).await;
    assert_eq!(corrupt_cbs.len(), 1);
    assert_eq!(corrupt_cbs[0]["status"], "failed", "{}", corrupt_cbs[0]);
    let dlq = format!("{}.dead_letter", s.queue);
    let dead = poll_get(&s.channel, &dlq, Duration::from_secs(20)).await;
    assert!(
        support::dead_letter_reason(&dead).contains("JSON"),
        "{}",
        support::dead_letter_reason(&dead)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        support::depth(&s.conn, &s.queue).await,
        0,
        "something was left unacked"
    );
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_consuming_node_mid_run_completes_every_task() {
    let _lock = BrokerLock::shared();
    let Some(mut s) = setup("mesh-kill", 200).await else {
        return;
    };
    let ids = s.publish_tasks(60).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.nodes[1].kill9();
    let callbacks = s.wait_all(&ids, Duration::from_secs(120)).await;
    let duplicates: usize = callbacks.values().map(|c| c.len() - 1).sum();
    eprintln!("duplicates after kill -9: {duplicates}");
    // At most what the killed node held unacked: its prefetch bound.
    assert!(duplicates <= 4, "{duplicates} duplicate callbacks");
    for id in &ids {
        assert!(
            callbacks[id].iter().all(|c| c["status"] == "completed"),
            "{id}"
        );
    }
    assert!(s.backend.refused().is_empty(), "{:?}", s.backend.refused());
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_of_a_consuming_node_mid_run_loses_nothing() {
    let _lock = BrokerLock::shared();
    let Some(mut s) = setup("mesh-term", 200).await else {
        return;
    };
    let ids = s.publish_tasks(60).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.nodes[1].sigterm();
    let status = tokio::task::block_in_place(|| s.nodes[1].wait_exit(Duration::from_secs(30)))
        .expect("node-2 did not exit after SIGTERM");
    assert!(status.success(), "node-2 exited with {status}");
    let callbacks = s.wait_all(&ids, Duration::from_secs(120)).await;
    let duplicates: usize = callbacks.values().map(|c| c.len() - 1).sum();
    assert_eq!(duplicates, 0, "a drained node must not cause duplicates");
    assert!(s.backend.refused().is_empty(), "{:?}", s.backend.refused());
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_restart_mid_run_completes_every_task() {
    // Stops the shared broker: no other broker test may run meanwhile.
    let _lock = BrokerLock::exclusive();
    let Some(s) = setup("mesh-restart", 200).await else {
        return;
    };
    let ids = s.publish_tasks(40).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rabbitmqctl("stop_app");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let health = nodes::client()
        .get(s.nodes[0].url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(
        health.status().as_u16(),
        200,
        "/health must stay 200 during an outage"
    );
    let body: Value = health.json().await.expect("json");
    assert_eq!(body["processing"]["rabbitmq_connected"], false, "{body}");
    rabbitmqctl("start_app");
    let callbacks = s.wait_all(&ids, Duration::from_secs(120)).await;
    let duplicates: usize = callbacks.values().map(|c| c.len() - 1).sum();
    eprintln!("duplicates after a broker restart: {duplicates}");
    for id in &ids {
        assert!(
            callbacks[id].iter().all(|c| c["status"] == "completed"),
            "{id}"
        );
    }
    s.cleanup().await;
}

fn rabbitmqctl(action: &str) {
    let status = std::process::Command::new("rabbitmqctl")
        .arg(action)
        .status()
        .expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {action}");
}

async fn wait_for_image(backend: &FakeBackend, image: uuid::Uuid, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got: Vec<Value> = backend
            .accepted()
            .into_iter()
            .filter(|c| c.image_id == image)
            .map(|c| c.body)
            .collect();
        if !got.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return backend
                .accepted()
                .into_iter()
                .filter(|c| c.image_id == image)
                .map(|c| c.body)
                .collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no callback for {image}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn poll_get(
    channel: &lapin::Channel,
    queue: &str,
    within: Duration,
) -> lapin::message::BasicGetMessage {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(m) = support::get_one(channel, queue).await {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing in {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
