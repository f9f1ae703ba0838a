//! **Broker outage** (its own test binary, and an exclusive lock on the shared local
//! broker: it stops the RabbitMQ app with `rabbitmqctl stop_app` mid-run, which every
//! other broker test would notice).
//!
//! Every task still gets its completed callback; the status says `connected=false` while
//! the broker is away and the consumer reconnects by itself.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use support::{FakeBackend, Running, SlotRunner};
use uuid::Uuid;

fn rabbitmqctl(arg: &str) {
    let out = std::process::Command::new("rabbitmqctl")
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl {arg}: {e}"));
    assert!(
        out.status.success(),
        "rabbitmqctl {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the broker app again whatever happens to the test.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_mid_run_completes_every_task() {
    let _lock = tokio::task::spawn_blocking(support::BrokerLock::exclusive)
        .await
        .expect("lock");
    let Some((url, conn)) = support::broker().await else {
        return;
    };
    let local = std::process::Command::new("rabbitmqctl")
        .args(["-q", "status"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !local {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but rabbitmqctl cannot control the broker"
        );
        eprintln!("*** SKIPPING outage test: no local rabbitmqctl to stop the broker with");
        return;
    }
    let ch = conn.create_channel().await.expect("channel");
    let queue = support::unique_queue("outage");
    support::declare(&ch, &queue).await;
    let dir = tempfile::tempdir().expect("tempdir");
    support::write_png(dir.path(), "a.png", 32, 32);
    let backend = FakeBackend::start().await;
    let runner = Arc::new(SlotRunner::new("node-a", 2, Duration::from_millis(300)));
    let consumer = Running::start(
        spheromesh::broker::BrokerConfig::for_test(&url, &queue, dir.path()),
        Arc::clone(&runner),
    );
    let mut images = HashSet::new();
    for i in 0..20 {
        let image = Uuid::new_v4();
        let msg = support::task(
            json!(format!("t{i}")),
            json!(image.to_string()),
            "a.png",
            &backend.callback_url(image),
            json!({}),
        );
        support::publish_json(&ch, &queue, &msg).await;
        images.insert(image);
    }
    drop(ch);
    drop(conn);
    backend.wait_for(3, Duration::from_secs(60)).await;

    let restart = RestartOnDrop;
    tokio::task::spawn_blocking(|| rabbitmqctl("stop_app"))
        .await
        .expect("stop_app");
    let status = Arc::clone(&consumer.status);
    support::eventually("connected=false", Duration::from_secs(30), || {
        !status.connected()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!status.connected(), "still down while the app is stopped");
    assert_eq!(status.snapshot().queue_depth, None);
    tokio::task::spawn_blocking(|| rabbitmqctl("start_app"))
        .await
        .expect("start_app");
    drop(restart);

    support::eventually("reconnected", Duration::from_secs(60), || {
        status.connected()
    })
    .await;
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let done: HashSet<Uuid> = backend.accepted().iter().map(|c| c.image_id).collect();
        if done == images {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{} of 20 answered",
            done.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = consumer.stop(Duration::from_secs(60)).await;
    let s = status.snapshot();
    assert!(s.reconnects >= 1, "{s:?}");
    for cb in backend.accepted() {
        assert_eq!(cb.body["status"], "completed");
    }
    assert!(backend.refused().is_empty(), "{:?}", backend.refused());
    let (_, conn) = support::broker().await.expect("broker back");
    assert_eq!(
        support::depth(&conn, &queue).await,
        0,
        "everything acked in the end"
    );
    let ch = conn.create_channel().await.expect("channel");
    support::delete_queues(&ch, &queue).await;
}
