//! The HTTP API of one real node process: the contract's health keys and metric names,
//! every input form of `POST /segment`, the error codes, and health during a drain.
//! The node runs the synthetic engine (a labelled test double that only takes time).

#[path = "nodes/mod.rs"]
mod nodes;

use std::time::Duration;

use nodes::{client, png, Node, Pki, Spec, KEY};
use serde_json::Value;

fn start(name: &str, service_ms: u64, uploads: &std::path::Path) -> (Pki, Node) {
    let pki = Pki::new(name, KEY);
    pki.issue(name);
    let spec = Spec::synthetic(name, service_ms, 1)
        .arg("--uploads-root", &uploads.to_string_lossy())
        .arg("--max-bytes", "200000");
    let node = Node::start(&spec, &pki);
    (pki, node)
}

async fn post(node: &Node, query: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = client()
        .post(node.url(&format!("/segment{query}")))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST /segment");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// HTTP status of `GET path` on `node`.
async fn status_of(node: &Node, path: &str) -> u16 {
    client()
        .get(node.url(path))
        .send()
        .await
        .expect(path)
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_inputs_errors_health_and_metrics() {
    let uploads = tempfile::tempdir().expect("uploads");
    std::fs::create_dir_all(uploads.path().join("proj")).expect("mkdir");
    std::fs::write(uploads.path().join("proj/a.png"), png(80, 60)).expect("write");
    let (_pki, node) = start("api-node", 20, uploads.path());

    // Raw body.
    let (status, body) = post(&node, "?threshold=0.4", "image/png", png(64, 48)).await;
    assert_eq!(status, 200, "{body}");
    for key in [
        "polygons",
        "processing_time",
        "processed_by",
        "entry_node",
        "hops",
        "timestamp",
    ] {
        assert!(body.get(key).is_some(), "answer lacks {key}: {body}");
    }
    assert_eq!(body["processed_by"], "api-node");
    assert_eq!(body["hops"], 0);
    assert_eq!(
        (body["image_width"].as_u64(), body["image_height"].as_u64()),
        (Some(64), Some(48))
    );

    // Multipart field `image`.
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(png(32, 32)).file_name("x.png"),
    );
    let response = client()
        .post(node.url("/segment"))
        .multipart(form)
        .send()
        .await
        .expect("multipart");
    assert_eq!(response.status().as_u16(), 200);

    // JSON image_path under the uploads root, and one escaping it.
    let json =
        |path: &str| serde_json::to_vec(&serde_json::json!({"image_path": path})).expect("json");
    let (status, body) = post(&node, "", "application/json", json("proj/a.png")).await;
    assert_eq!(
        (status, body["image_width"].as_u64()),
        (200, Some(80)),
        "{body}"
    );
    let (status, body) = post(&node, "", "application/json", json("../../etc/passwd")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("path_outside_uploads_root")),
        "{body}"
    );
    let (status, _) = post(&node, "", "application/json", json("proj/missing.png")).await;
    assert_eq!(status, 404);

    // Errors: JSON {error, code} with the contract's statuses.
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "",
            "image/png",
            b"\x89PNG\r\n\x1a\n garbage".to_vec(),
            422,
            "bad_image",
        ),
        (
            "",
            "image/gif",
            b"GIF89a\x01\x00\x01\x00".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "",
            "text/plain",
            b"hello".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "",
            "image/png",
            vec![0x89; 300_000],
            413,
            "payload_too_large",
        ),
        (
            "?threshold=1.5",
            "image/png",
            png(8, 8),
            400,
            "invalid_request",
        ),
        ("", "image/png", Vec::new(), 422, "bad_image"),
    ];
    for (query, content_type, bytes, want_status, want_code) in cases {
        let (status, body) = post(&node, query, content_type, bytes).await;
        assert_eq!(status, want_status, "{content_type} {query}: {body}");
        assert_eq!(body["code"], want_code, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }

    // Health: the old service's keys (a superset), and 200.
    let response = client()
        .get(node.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ct")
        .starts_with("application/json"));
    let health: Value = response.json().await.expect("json");
    for pointer in [
        "/status",
        "/timestamp",
        "/instance_id",
        "/model_path",
        "/model_exists",
        "/model/path",
        "/model/exists",
        "/resources/cpu_percent",
        "/resources/memory_percent",
        "/resources/memory_available_mb",
        "/resources/disk_percent",
        "/resources/disk_free_gb",
        "/processing/active_tasks",
        "/processing/max_concurrent",
        "/processing/rabbitmq_connected",
        "/processing/prefetch_count",
        "/mesh/peers",
    ] {
        assert!(
            health.pointer(pointer).is_some(),
            "/health lacks {pointer}: {health}"
        );
    }
    assert_eq!(health["instance_id"], "api-node");
    for path in ["/health/live", "/health/ready"] {
        assert_eq!(status_of(&node, path).await, 200, "{path}");
    }

    // Metrics: the names the old dashboards use, labelled with the instance.
    let response = client()
        .get(node.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.expect("text");
    for name in [
        "ml_tasks_processed_total{instance=\"api-node\",status=\"success\"}",
        "ml_tasks_processed_total{instance=\"api-node\",status=\"error\"}",
        "ml_task_duration_seconds_bucket{instance=\"api-node\"",
        "ml_active_tasks{instance=\"api-node\"}",
        "ml_queue_size{instance=\"api-node\"}",
        "mesh_http_responses_total{",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_health_503_and_finishes_the_request_in_flight() {
    let uploads = tempfile::tempdir().expect("uploads");
    let (_pki, mut node) = start("drain-node", 1500, uploads.path());
    let url = node.url("/segment");
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .header("content-type", "image/png")
            .body(png(16, 16))
            .send()
            .await
            .expect("send")
            .status()
            .as_u16()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.sigterm();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for path in ["/health", "/health/ready"] {
        assert_eq!(status_of(&node, path).await, 503, "{path} while draining");
    }
    assert_eq!(
        in_flight.await.expect("join"),
        200,
        "the request in flight must finish"
    );
    let status = tokio::task::block_in_place(|| node.wait_exit(Duration::from_secs(20)))
        .expect("exit after drain");
    assert!(status.success(), "{status}");
}
