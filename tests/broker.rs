//! The RabbitMQ drop-in against a real broker (`scripts/rabbitmq.sh` starts one; `.ci/run`
//! calls it). Each test uses queues of its own, so they run in parallel. Under `CI=true`
//! an unreachable broker fails the tests; elsewhere they skip loudly.
//!
//! The runner is a test double (`support::runner::SlotRunner`); the broker, the
//! callbacks' HTTP and the files are real.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use spheromesh::broker::BrokerConfig;
use support::{FakeBackend, Running, SlotRunner};
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);

struct Env {
    _lock: support::BrokerLock,
    url: String,
    conn: lapin::Connection,
    ch: lapin::Channel,
    queue: String,
    dir: tempfile::TempDir,
    backend: FakeBackend,
}

impl Env {
    /// Broker, a queue of its own, an uploads dir and a fake backend; `None` = skip.
    async fn new(test: &str) -> Option<Self> {
        let lock = tokio::task::spawn_blocking(support::BrokerLock::shared)
            .await
            .expect("lock");
        let (url, conn) = support::broker().await?;
        let ch = conn.create_channel().await.expect("channel");
        let queue = support::unique_queue(test);
        support::declare(&ch, &queue).await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("uploads")).expect("mkdir");
        let backend = FakeBackend::start().await;
        Some(Self {
            _lock: lock,
            url,
            conn,
            ch,
            queue,
            dir,
            backend,
        })
    }

    fn uploads(&self) -> std::path::PathBuf {
        self.dir.path().join("uploads")
    }

    fn config(&self) -> BrokerConfig {
        BrokerConfig::for_test(&self.url, &self.queue, self.uploads())
    }

    /// Publishes a task for a fresh image id; returns (task id, image id).
    async fn publish_task(&self, task_id: &str, image_path: &str, params: Value) -> Uuid {
        let image = Uuid::new_v4();
        let msg = support::task(
            json!(task_id),
            json!(image.to_string()),
            image_path,
            &self.backend.callback_url(image),
            params,
        );
        support::publish_json(&self.ch, &self.queue, &msg).await;
        image
    }

    async fn depth(&self) -> u32 {
        support::depth(&self.conn, &self.queue).await
    }

    async fn cleanup(self) {
        support::delete_queues(&self.ch, &self.queue).await;
        assert!(
            self.backend.refused().is_empty(),
            "the backend refused callbacks: {:?}",
            self.backend.refused()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_tasks_give_hundred_valid_completed_callbacks() {
    let Some(env) = Env::new("hundred").await else {
        return;
    };
    for i in 0..5 {
        support::write_png(&env.uploads(), &format!("p/img{i}.png"), 64 + 8 * i, 48);
    }
    let runner = Arc::new(SlotRunner::new("node-a", 4, Duration::from_millis(10)));
    let consumer = Running::start(env.config(), Arc::clone(&runner));
    let mut images = HashSet::new();
    for i in 0..100u32 {
        // Absolute paths as the backend sends them, and relative ones.
        let path = if i % 2 == 0 {
            env.uploads()
                .join(format!("p/img{}.png", i % 5))
                .display()
                .to_string()
        } else {
            format!("p/img{}.png", i % 5)
        };
        images.insert(
            env.publish_task(
                &format!("task-{i}"),
                &path,
                json!({"threshold": 0.5, "i": i}),
            )
            .await,
        );
    }
    let got = env.backend.wait_for(100, LONG).await;
    let status = consumer.stop(LONG).await;
    assert_eq!(got.len(), 100, "no duplicates");
    let seen: HashSet<Uuid> = got.iter().map(|c| c.image_id).collect();
    assert_eq!(seen, images, "0 missing");
    for cb in &got {
        assert_eq!(cb.body["status"], "completed");
        assert_eq!(cb.body["result_data"]["processed_by"], "node-a");
        assert_eq!(
            cb.body["result_data"]["polygons"].as_array().map(Vec::len),
            Some(1)
        );
        assert!(cb.body["parameters"]["i"].is_u64(), "parameters echoed");
        assert!(cb.user_agent.contains("python-requests"));
    }
    assert_eq!(env.depth().await, 0, "everything acked");
    let s = status.snapshot();
    assert_eq!(
        (s.tasks_completed, s.callbacks_ok, s.in_hand),
        (100, 100, 0)
    );
    assert!(runner.max_running() <= 4);
    assert_eq!(s.prefetch_bound, 4);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_only_what_it_can_start_and_leaves_the_rest_queued() {
    let Some(env) = Env::new("gate").await else {
        return;
    };
    support::write_png(&env.uploads(), "a.png", 32, 32);
    // 2 slots, prefetch 4: the old consumer would hold 4; we must hold 2.
    let runner = Arc::new(SlotRunner::new("node-a", 2, Duration::from_millis(1500)));
    for i in 0..6 {
        env.publish_task(&format!("t{i}"), "a.png", json!({})).await;
    }
    let consumer = Running::start(env.config(), Arc::clone(&runner));
    let status = Arc::clone(&consumer.status);
    support::eventually("two tasks running", LONG, || runner.max_running() == 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status.in_hand(), 2, "holds only what it can start");
    assert_eq!(
        env.depth().await,
        4,
        "the rest stays in the queue for other nodes"
    );
    support::eventually("queue depth in status", LONG, || {
        status.snapshot().queue_depth == Some(4)
    })
    .await;
    assert!(status.connected());
    env.backend.wait_for(6, LONG).await;
    consumer.stop(LONG).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_missing_image_gets_exactly_one_failed_callback_and_is_acked() {
    let Some(env) = Env::new("corrupt").await else {
        return;
    };
    std::fs::write(
        env.uploads().join("corrupt.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .expect("write");
    let runner = Arc::new(SlotRunner::new("node-a", 2, Duration::from_millis(1)));
    let consumer = Running::start(env.config(), Arc::clone(&runner));
    let corrupt = env
        .publish_task("bad", "corrupt.png", json!({"priority": 1}))
        .await;
    let missing = env
        .publish_task("gone", "nope/missing.png", json!(null))
        .await;
    let got = env.backend.wait_for(2, LONG).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = consumer.stop(LONG).await;
    assert_eq!(env.backend.accepted().len(), 2, "exactly one callback each");
    for cb in &got {
        assert_eq!(cb.body["status"], "failed");
        let error = cb.body["error"].as_str().expect("error string");
        if cb.image_id == corrupt {
            assert!(error.starts_with("bad image"), "{error}");
            assert_eq!(cb.body["parameters"], json!({"priority": 1}));
        } else {
            assert_eq!(cb.image_id, missing);
            assert!(error.contains("does not exist"), "{error}");
            assert_eq!(
                cb.body["parameters"],
                json!({}),
                "null parameters echoed as {{}}"
            );
        }
    }
    assert_eq!(env.depth().await, 0, "acked");
    assert_eq!(status.snapshot().tasks_failed, 2);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_escaping_the_uploads_root_is_refused_with_a_failed_callback() {
    let Some(env) = Env::new("escape").await else {
        return;
    };
    support::write_png(env.dir.path(), "outside.png", 16, 16);
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        env.dir.path().join("outside.png"),
        env.uploads().join("link.png"),
    )
    .expect("symlink");
    let runner = Arc::new(SlotRunner::new("node-a", 2, Duration::from_millis(1)));
    let consumer = Running::start(env.config(), Arc::clone(&runner));
    env.publish_task("dotdot", "../outside.png", json!({}))
        .await;
    let abs = env.dir.path().join("outside.png").display().to_string();
    env.publish_task("abs", &abs, json!({})).await;
    #[cfg(unix)]
    env.publish_task("link", "link.png", json!({})).await;
    let n = if cfg!(unix) { 3 } else { 2 };
    let got = env.backend.wait_for(n, LONG).await;
    consumer.stop(LONG).await;
    for cb in got {
        assert_eq!(cb.body["status"], "failed");
        assert!(cb.body["error"]
            .as_str()
            .expect("error")
            .contains("escapes the uploads root"));
    }
    assert_eq!(runner.runs(), 0, "the file was never handed to the runner");
    assert_eq!(env.depth().await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_task_and_image_ids_are_accepted() {
    let Some(env) = Env::new("intids").await else {
        return;
    };
    support::write_png(&env.uploads(), "a.png", 24, 24);
    let runner = Arc::new(SlotRunner::new("node-a", 1, Duration::from_millis(1)));
    let consumer = Running::start(env.config(), Arc::clone(&runner));
    let image = Uuid::new_v4();
    let msg = support::task(
        json!(17),
        json!(18),
        "a.png",
        &env.backend.callback_url(image),
        json!({}),
    );
    support::publish_json(&env.ch, &env.queue, &msg).await;
    let got = env.backend.wait_for(1, LONG).await;
    consumer.stop(LONG).await;
    assert_eq!(got[0].body["status"], "completed");
    assert_eq!(runner.started.lock().unwrap().as_slice(), ["17"]);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_land_in_the_dead_letter_queue_with_the_reason() {
    let Some(env) = Env::new("malformed").await else {
        return;
    };
    let runner = Arc::new(SlotRunner::new("node-a", 2, Duration::from_millis(1)));
    let consumer = Running::start(env.config(), Arc::clone(&runner));
    let cb = env.backend.callback_url(Uuid::new_v4());
    let bodies: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not valid JSON"),
        (
            serde_json::to_vec(&json!({"imageId": "i", "imagePath": "a.png", "callbackUrl": cb}))
                .expect("json"),
            "missing or empty taskId",
        ),
        (
            serde_json::to_vec(
                &json!({"taskId": "t", "imageId": "i", "imagePath": "", "callbackUrl": cb}),
            )
            .expect("json"),
            "missing or empty imagePath",
        ),
        (
            serde_json::to_vec(
                &json!({"taskId": "t", "imageId": 1.5, "imagePath": "a.png", "callbackUrl": cb}),
            )
            .expect("json"),
            "imageId must be",
        ),
    ];
    for (body, _) in &bodies {
        support::publish(&env.ch, &env.queue, body).await;
    }
    let status = Arc::clone(&consumer.status);
    support::eventually("4 dead letters", LONG, || {
        status.snapshot().dead_lettered == 4
    })
    .await;
    consumer.stop(LONG).await;
    assert_eq!(env.depth().await, 0, "originals acked");
    let dlq = format!("{}.dead_letter", env.queue);
    let mut found = Vec::new();
    while let Some(m) = support::get_one(&env.ch, &dlq).await {
        let reason = support::dead_letter_reason(&m);
        assert_eq!(
            m.delivery.properties.delivery_mode(),
            &Some(2),
            "persistent"
        );
        found.push((m.delivery.data.clone(), reason));
    }
    assert_eq!(found.len(), 4);
    for (body, want) in &bodies {
        let (_, reason) = found
            .iter()
            .find(|(b, _)| b == body)
            .expect("original body kept");
        assert!(reason.contains(want), "{reason:?} should mention {want:?}");
    }
    assert!(env.backend.accepted().is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_failing_a_few_times_is_retried_then_succeeds() {
    let Some(env) = Env::new("retry").await else {
        return;
    };
    support::write_png(&env.uploads(), "a.png", 24, 24);
    env.backend.state.fail_first.store(3, Ordering::SeqCst);
    let runner = Arc::new(SlotRunner::new("node-a", 1, Duration::from_millis(1)));
    let consumer = Running::start(env.config(), Arc::clone(&runner));
    env.publish_task("t", "a.png", json!({})).await;
    let got = env.backend.wait_for(1, LONG).await;
    let status = consumer.stop(LONG).await;
    assert_eq!(got[0].body["status"], "completed");
    assert_eq!(
        env.backend.state.failed_on_purpose.load(Ordering::SeqCst),
        3
    );
    let s = status.snapshot();
    assert_eq!((s.callbacks_ok, s.callbacks_failed, s.requeued), (1, 0, 0));
    assert_eq!(runner.runs(), 1);
    assert_eq!(env.depth().await, 0);
    env.cleanup().await;
}

/// Publishes one task with `params` while every callback fails and a 600 ms retry window,
/// and returns once the consumer has requeued it at least once (the backend still failing).
async fn requeue_after_failed_callbacks(env: &Env, params: Value) -> (Arc<SlotRunner>, Running) {
    support::write_png(&env.uploads(), "a.png", 24, 24);
    env.backend.state.fail_all.store(true, Ordering::SeqCst);
    let runner = Arc::new(SlotRunner::new("node-a", 1, Duration::from_millis(1)));
    let mut config = env.config();
    config.callback_retry_for = Duration::from_millis(600);
    let consumer = Running::start(config, Arc::clone(&runner));
    env.publish_task("t", "a.png", params).await;
    let status = Arc::clone(&consumer.status);
    support::eventually("a requeue", LONG, || status.snapshot().requeued >= 1).await;
    (runner, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_failing_past_the_retry_window_requeues_the_message() {
    let Some(env) = Env::new("requeue").await else {
        return;
    };
    let (_runner, consumer) = requeue_after_failed_callbacks(&env, json!({})).await;
    let status = Arc::clone(&consumer.status);
    consumer.stop(LONG).await;
    assert!(env.backend.accepted().is_empty());
    assert_eq!(
        env.depth().await,
        1,
        "the message is back in the queue, not lost"
    );
    assert!(status.snapshot().callbacks_failed >= 1);
    env.cleanup().await;
}

/// A message whose callback is never accepted is put back with its failure count (a
/// header that travels with it) and, at the cap, moved to the dead-letter queue with the
/// reason: never requeued forever. The model ran once (redeliveries hit the cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_dead_lettered_at_the_failure_cap() {
    let Some(env) = Env::new("capped").await else {
        return;
    };
    support::write_png(&env.uploads(), "a.png", 24, 24);
    env.backend.state.fail_all.store(true, Ordering::SeqCst);
    let runner = Arc::new(SlotRunner::new("node-a", 1, Duration::from_millis(1)));
    let mut config = env.config();
    config.callback_retry_for = Duration::from_millis(300);
    config.max_failures = 3;
    let consumer = Running::start(config, Arc::clone(&runner));
    env.publish_task("t", "a.png", json!({})).await;
    let status = Arc::clone(&consumer.status);
    support::eventually("a dead letter", LONG, || {
        status.snapshot().dead_lettered == 1
    })
    .await;
    consumer.stop(LONG).await;
    let s = status.snapshot();
    assert_eq!(
        s.requeued, 2,
        "failures 1 and 2 are put back, the 3rd is final"
    );
    assert_eq!(env.depth().await, 0, "nothing left to cycle");
    assert_eq!(runner.runs(), 1, "the model ran once");
    let dlq = format!("{}.dead_letter", env.queue);
    let m = support::get_one(&env.ch, &dlq).await.expect("dead letter");
    let reason = support::dead_letter_reason(&m);
    assert!(reason.contains("gave up after 3 failures"), "{reason}");
    assert!(reason.contains("callback never accepted"), "{reason}");
    assert!(env.backend.accepted().is_empty());
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_task_is_answered_from_the_cache_without_recomputing() {
    let Some(env) = Env::new("cache").await else {
        return;
    };
    let (runner, consumer) = requeue_after_failed_callbacks(&env, json!({"threshold": 0.3})).await;
    let status = Arc::clone(&consumer.status);
    env.backend.state.fail_all.store(false, Ordering::SeqCst);
    let got = env.backend.wait_for(1, LONG).await;
    consumer.stop(LONG).await;
    assert_eq!(got[0].body["status"], "completed");
    assert_eq!(got[0].body["parameters"], json!({"threshold": 0.3}));
    assert_eq!(runner.runs(), 1, "the model ran once");
    assert!(status.snapshot().answered_from_cache >= 1);
    assert_eq!(env.depth().await, 0);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_refused_by_the_backend_is_dead_lettered_not_retried_forever() {
    let Some(env) = Env::new("refused").await else {
        return;
    };
    support::write_png(&env.uploads(), "a.png", 24, 24);
    let runner = Arc::new(SlotRunner::new("node-a", 1, Duration::from_millis(1)));
    let consumer = Running::start(env.config(), Arc::clone(&runner));
    // The backend answers 400: the image id in the route is not a UUID.
    let url = format!(
        "http://{}/api/images/not-a-uuid/segmentation",
        env.backend.addr
    );
    let msg = support::task(json!("t"), json!("i"), "a.png", &url, json!({}));
    support::publish_json(&env.ch, &env.queue, &msg).await;
    let status = Arc::clone(&consumer.status);
    support::eventually("a dead letter", LONG, || {
        status.snapshot().dead_lettered == 1
    })
    .await;
    consumer.stop(LONG).await;
    assert_eq!(env.depth().await, 0);
    let dlq = format!("{}.dead_letter", env.queue);
    let m = support::get_one(&env.ch, &dlq).await.expect("dead letter");
    let reason = support::dead_letter_reason(&m);
    assert!(reason.contains("HTTP 400"), "{reason}");
    // The fake backend refused it on purpose; clear that before the cleanup check.
    env.backend.state.refused.lock().unwrap().clear();
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_started_tasks_and_requeues_the_rest() {
    let Some(env) = Env::new("drain").await else {
        return;
    };
    support::write_png(&env.uploads(), "a.png", 24, 24);
    let shutdown = tokio_util::sync::CancellationToken::new();
    // One real slot, but the runner claims 3 more (a peer that gossip still shows idle):
    // the consumer takes 4, one starts, three wait inside the runner.
    let runner = Arc::new(
        SlotRunner::new("node-a", 1, Duration::from_millis(1500)).lying(3, shutdown.clone()),
    );
    for i in 0..6 {
        env.publish_task(&format!("t{i}"), "a.png", json!({})).await;
    }
    let consumer = Running::start_with(env.config(), Arc::clone(&runner), shutdown);
    let status = Arc::clone(&consumer.status);
    support::eventually("4 in hand", LONG, || status.in_hand() == 4).await;
    support::eventually("1 started", LONG, || runner.max_running() == 1).await;
    let status = consumer.stop(LONG).await;
    let got = env.backend.accepted();
    assert_eq!(got.len(), 1, "the started task finished and called back");
    assert_eq!(got[0].body["status"], "completed");
    let s = status.snapshot();
    assert_eq!((s.tasks_completed, s.requeued, s.in_hand), (1, 3, 0));
    assert!(!s.connected);
    assert_eq!(env.depth().await, 5, "3 requeued + 2 never taken");
    env.cleanup().await;
}

/// The drain benchmark's spheromesh side, in-process (run by `benches/drain/run.sh`, which
/// fills `DRAIN_BENCH_QUEUE` first): `DRAIN_BENCH_WORKERS` gated consumers, each with a
/// 1-slot test-double runner that sleeps the image width in ms. Prints the makespan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark; run by benches/drain/run.sh"]
async fn drain_benchmark_gated_consumers() {
    let (Ok(queue), Ok(port)) = (
        std::env::var("DRAIN_BENCH_QUEUE"),
        std::env::var("DRAIN_BENCH_CALLBACK_PORT"),
    ) else {
        eprintln!("run this through benches/drain/run.sh");
        return;
    };
    let workers: usize = std::env::var("DRAIN_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(3);
    let (url, conn) = support::broker().await.expect("broker");
    let count = support::depth(&conn, &queue).await as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    for ms in [100, 2000] {
        support::write_png(dir.path(), &format!("bench/{ms}.png"), ms, 4);
    }
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let backend = FakeBackend::start_on(addr).await;
    let mut consumers = Vec::new();
    let mut runners = Vec::new();
    for i in 0..workers {
        let runner =
            Arc::new(SlotRunner::new(&format!("node-{i}"), 1, Duration::ZERO).width_is_work());
        let config = BrokerConfig::for_test(&url, &queue, dir.path());
        consumers.push(Running::start(config, Arc::clone(&runner)));
        runners.push(runner);
    }
    let got = backend.wait_for(count, Duration::from_secs(300)).await;
    let first = runners
        .iter()
        .filter_map(|r| *r.first_start.lock().unwrap())
        .min()
        .expect("a start");
    let last = got.iter().map(|c| c.at).max().expect("a callback");
    println!("DRAIN_BENCH makespan_s={:.2}", (last - first).as_secs_f64());
    for c in consumers {
        c.stop(LONG).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_the_connection_up_while_a_long_task_runs() {
    let Some(env) = Env::new("heartbeat").await else {
        return;
    };
    support::write_png(&env.uploads(), "a.png", 24, 24);
    // 1 s heartbeats, a 4 s task, and no other traffic while it runs (1 slot, so no
    // basic.get; depth polls pushed out): only heartbeats keep the connection alive.
    let runner = Arc::new(SlotRunner::new("node-a", 1, Duration::from_secs(4)));
    let mut config = env.config();
    let sep = if config.amqp_url.contains('?') {
        '&'
    } else {
        '?'
    };
    config.amqp_url = format!("{}{sep}heartbeat=1", config.amqp_url);
    config.depth_poll = Duration::from_secs(3600);
    let consumer = Running::start(config, Arc::clone(&runner));
    env.publish_task("long", "a.png", json!({})).await;
    let got = env.backend.wait_for(1, LONG).await;
    let status = consumer.stop(LONG).await;
    assert_eq!(got[0].body["status"], "completed");
    let s = status.snapshot();
    assert_eq!((s.reconnects, s.requeued), (0, 0), "{s:?}");
    assert_eq!(env.depth().await, 0, "acked on the original connection");
    env.cleanup().await;
}
