//! `spheromesh loadtest` end to end: the built binary against real HTTP servers.
//!
//! The servers here are a TEST DOUBLE of the node API (`POST /segment`), not a
//! node: a small axum app on 127.0.0.1:0 that answers in a scripted, deterministic
//! way so the report's counts can be checked exactly. Process-level tests
//! against real nodes live with the node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// How the double answers.
#[derive(Clone, Copy)]
enum Script {
    /// Every 5th request (n = 4, 9, 14, ...) gets 503 `busy` with `Retry-After: 0`; the
    /// others 200 after `delay`, `processed_by` alternating node-a / node-b (node-b's
    /// answers say `hops: 1`).
    BusyEveryFifth { delay: Duration },
    /// By content type: PNG 200 from node-a, JPEG 422 `bad_image`, anything else a
    /// 502 with an HTML body (as a proxy in front of a node would send).
    ByContentType,
    /// 200 from node-a, but only after this long.
    Slow(Duration),
}

/// Test double of the node API: what it saw and how it answers.
struct Double {
    script: Script,
    requests: AtomicUsize,
    completed: AtomicUsize,
    content_types: Mutex<Vec<String>>,
    queries: Mutex<Vec<String>>,
}

async fn segment(
    State(double): State<Arc<Double>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let n = double.requests.fetch_add(1, Ordering::SeqCst);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    double
        .content_types
        .lock()
        .unwrap()
        .push(content_type.clone());
    double
        .queries
        .lock()
        .unwrap()
        .push(query.unwrap_or_default());
    assert!(!body.is_empty(), "the loadtest sent an empty body");
    let ok = |node: &str, hops: u8| {
        Json(json!({
            "polygons": [],
            "processing_time": 0.005,
            "processed_by": node,
            "entry_node": "node-a",
            "hops": hops,
            "timestamp": "2026-01-01T00:00:00Z",
            "task_id": format!("t{n}"),
        }))
        .into_response()
    };
    match double.script {
        Script::BusyEveryFifth { delay } => {
            if n % 5 == 4 {
                let body = Json(json!({"error": "every node of the mesh is busy", "code": "busy"}));
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "0")],
                    body,
                )
                    .into_response();
            }
            tokio::time::sleep(delay).await;
            let k = double.completed.fetch_add(1, Ordering::SeqCst);
            if k % 2 == 0 {
                ok("node-a", 0)
            } else {
                ok("node-b", 1)
            }
        }
        Script::ByContentType => match content_type.as_str() {
            "image/png" => ok("node-a", 0),
            "image/jpeg" => {
                let body = Json(json!({"error": "bad image: truncated", "code": "bad_image"}));
                (StatusCode::UNPROCESSABLE_ENTITY, body).into_response()
            }
            _ => (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response(),
        },
        Script::Slow(delay) => {
            tokio::time::sleep(delay).await;
            ok("node-a", 0)
        }
    }
}

/// A running double; the server thread ends with the test process.
struct Server {
    url: String,
    double: Arc<Double>,
}

fn serve(script: Script) -> Server {
    let double = Arc::new(Double {
        script,
        requests: AtomicUsize::new(0),
        completed: AtomicUsize::new(0),
        content_types: Mutex::new(Vec::new()),
        queries: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/segment", post(segment))
        .with_state(double.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    Server {
        url: format!("http://{addr}"),
        double,
    }
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spheromesh"))
        .arg("loadtest")
        .args(args)
        // The env fallbacks must not leak in from the machine running the tests.
        .env_remove("NUM_TEST_TASKS")
        .env_remove("CONCURRENT_REQUESTS")
        .env_remove("ML_SERVICE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn report(args: &[&str]) -> Value {
    let out = loadtest(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "--json prints exactly one line: {stdout}"
    );
    serde_json::from_str(&stdout).unwrap()
}

fn errors(report: &Value) -> BTreeMap<String, u64> {
    serde_json::from_value(report["errors"].clone()).unwrap()
}

const SMALL: [&str; 4] = ["--generate", "2", "--image-size", "64x64"];

#[test]
fn json_report_counts_tasks_errors_and_shares() {
    let server = serve(Script::BusyEveryFifth {
        delay: Duration::from_millis(10),
    });
    let mut args = vec![
        "--json",
        "--targets",
        &server.url,
        "--tasks",
        "20",
        "--concurrency",
        "3",
    ];
    args.extend(SMALL);
    args.extend(["--threshold", "0.4"]);
    let r = report(&args);

    assert_eq!(r["tasks"], 20);
    assert_eq!(r["completed"], 16);
    assert_eq!(r["failed"], 4);
    assert_eq!(errors(&r), BTreeMap::from([("busy".to_owned(), 4)]));
    assert_eq!(r["processed_by"]["node-a"]["tasks"], 8);
    assert_eq!(r["processed_by"]["node-b"]["tasks"], 8);
    assert_eq!(r["processed_by"]["node-a"]["share"], 0.5);
    assert_eq!(r["forwarded"], 8);
    assert_eq!(r["retried_busy"], 0);
    assert_eq!(r["mode"], "closed");
    assert_eq!(r["concurrency"], 3);
    assert_eq!(r["images"], 2);

    let latency = &r["latency"];
    assert_eq!(latency["count"], 16);
    let at = |k: &str| latency[k].as_f64().unwrap();
    assert!(at("min_ms") >= 10.0, "the double sleeps 10 ms: {latency}");
    assert!(at("min_ms") <= at("p50_ms") && at("p50_ms") <= at("p95_ms"));
    assert!(at("p95_ms") <= at("p99_ms") && at("p99_ms") <= at("max_ms"));
    assert!((r["processing_time"]["p50_ms"].as_f64().unwrap() - 5.0).abs() < 1e-6);
    let (per_min, wall) = (
        r["tasks_per_min"].as_f64().unwrap(),
        r["wall_time_s"].as_f64().unwrap(),
    );
    assert!((per_min - 16.0 * 60.0 / wall).abs() < 1e-6 * per_min);

    // Every request reached the double, as PNG, with the threshold.
    assert_eq!(server.double.requests.load(Ordering::SeqCst), 20);
    assert!(server
        .double
        .content_types
        .lock()
        .unwrap()
        .iter()
        .all(|c| c == "image/png"));
    assert!(server
        .double
        .queries
        .lock()
        .unwrap()
        .iter()
        .all(|q| q == "threshold=0.4"));
}

#[test]
fn warmup_is_sent_but_not_counted() {
    let server = serve(Script::BusyEveryFifth {
        delay: Duration::ZERO,
    });
    let mut args = vec![
        "--json",
        "--targets",
        &server.url,
        "--tasks",
        "10",
        "--warmup",
        "5",
    ];
    args.extend(SMALL);
    let r = report(&args);
    // Requests 0..5 are the warmup (n = 4 busy); the measured ten are n = 5..15,
    // of which 9 and 14 are busy.
    assert_eq!(server.double.requests.load(Ordering::SeqCst), 15);
    assert_eq!(
        (r["tasks"].as_u64(), r["completed"].as_u64()),
        (Some(10), Some(8))
    );
    assert_eq!(r["warmup"], 5);
    assert_eq!(errors(&r), BTreeMap::from([("busy".to_owned(), 2)]));
}

#[test]
fn round_robin_spreads_over_targets_and_first_does_not() {
    let (a, b) = (serve(Script::ByContentType), serve(Script::ByContentType));
    let both = format!("{},{}", a.url, b.url);
    let mut args = vec!["--json", "--targets", &both, "--tasks", "10"];
    args.extend(SMALL);
    let r = report(&args);
    assert_eq!(r["completed"], 10);
    assert_eq!(r["spread"], "round-robin");
    assert_eq!(a.double.requests.load(Ordering::SeqCst), 5);
    assert_eq!(b.double.requests.load(Ordering::SeqCst), 5);

    args.extend(["--spread", "first"]);
    let r = report(&args);
    assert_eq!(r["spread"], "first");
    assert_eq!(a.double.requests.load(Ordering::SeqCst), 15);
    assert_eq!(b.double.requests.load(Ordering::SeqCst), 5);
}

#[test]
fn images_folder_and_error_codes() {
    let server = serve(Script::ByContentType);
    let dir = tempfile::tempdir().unwrap();
    // The double does not decode: any bytes will do.
    for name in ["a.png", "b.jpg", "c.bmp"] {
        std::fs::write(dir.path().join(name), name.as_bytes()).unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), b"not an image").unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let r = report(&[
        "--json",
        "--targets",
        &server.url,
        "--tasks",
        "6",
        "--concurrency",
        "1",
        "--images",
        dir_arg,
    ]);
    assert_eq!(r["images"], 3);
    assert_eq!(r["completed"], 2);
    assert_eq!(
        errors(&r),
        BTreeMap::from([("bad_image".to_owned(), 2), ("http_502".to_owned(), 2)])
    );
    let types = server.double.content_types.lock().unwrap().clone();
    assert_eq!(
        types,
        [
            "image/png",
            "image/jpeg",
            "image/bmp",
            "image/png",
            "image/jpeg",
            "image/bmp"
        ]
    );
}

#[test]
fn unreachable_target_counts_connect_errors() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut args = vec![
        "--json",
        "--targets",
        &url,
        "--tasks",
        "3",
        "--timeout",
        "5",
    ];
    args.extend(SMALL);
    let r = report(&args);
    assert_eq!(r["completed"], 0);
    assert_eq!(errors(&r), BTreeMap::from([("connect".to_owned(), 3)]));
    assert!(r["latency"].is_null());
    assert_eq!(r["tasks_per_min"], 0.0);
}

#[test]
fn slow_answers_count_as_timeouts() {
    let server = serve(Script::Slow(Duration::from_secs(3)));
    let mut args = vec![
        "--json",
        "--targets",
        &server.url,
        "--tasks",
        "2",
        "--timeout",
        "0.3",
    ];
    args.extend(SMALL);
    let r = report(&args);
    assert_eq!(errors(&r), BTreeMap::from([("timeout".to_owned(), 2)]));
    assert!(
        r["wall_time_s"].as_f64().unwrap() < 2.0,
        "the timeout did not cut the wait: {r}"
    );
}

#[test]
fn open_loop_keeps_the_rate_and_retries_busy_once() {
    let server = serve(Script::BusyEveryFifth {
        delay: Duration::ZERO,
    });
    let mut args = vec![
        "--json",
        "--targets",
        &server.url,
        "--tasks",
        "10",
        "--rate",
        "50",
        "--arrivals",
        "fixed",
        "--retry-busy",
    ];
    args.extend(SMALL);
    let r = report(&args);
    assert_eq!(r["mode"], "fixed");
    assert_eq!(r["rate_per_s"], 50.0);
    // Ten arrivals 20 ms apart: the last is due at 180 ms.
    assert!(r["wall_time_s"].as_f64().unwrap() >= 0.18);
    // Each busy answer was retried once; a retry can itself land on a busy slot
    // only if other requests interleave, so the counts are checked as a sum.
    let busy = errors(&r).get("busy").copied().unwrap_or(0);
    assert_eq!(r["completed"].as_u64().unwrap() + busy, 10);
    assert!(r["retried_busy"].as_u64().unwrap() >= 1);
    assert_eq!(
        server.double.requests.load(Ordering::SeqCst) as u64,
        10 + r["retried_busy"].as_u64().unwrap()
    );
}

#[test]
fn table_is_the_default_output() {
    let server = serve(Script::ByContentType);
    let mut args = vec!["--targets", &server.url, "--tasks", "4"];
    args.extend(SMALL);
    let out = loadtest(&args);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "tasks/min",
        "p95",
        "p99",
        "node-a",
        "100.0 %",
        "errors         none",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from:\n{table}");
    }
}

#[test]
fn bad_configuration_exits_64() {
    for bad in [
        &["--tasks", "0"][..],
        &["--threshold", "1.5"],
        &["--rate=-1"],
        &["--targets", "node-a:5002"],
        &["--timeout", "0"],
    ] {
        let out = loadtest(bad);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "{bad:?}"
        );
    }
}

/// A TCP front for `backend` that drops its first `drops` connections after reading a
/// little of the request (as a node killed mid-request does) and relays the later ones.
fn breaking_front(backend: &str, drops: usize) -> String {
    use std::io::{Read, Write};
    let backend: SocketAddr = backend
        .trim_start_matches("http://")
        .parse()
        .expect("backend address");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut client) = conn else { continue };
            if n < drops {
                let mut head = [0u8; 64];
                let _ = client.read(&mut head);
                drop(client);
                continue;
            }
            let Ok(mut upstream) = std::net::TcpStream::connect(backend) else {
                continue;
            };
            let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut u2);
                let _ = u2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut upstream, &mut client);
                let _ = client.flush();
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn retry_transport_resends_on_new_connections_up_to_three_times() {
    let server = serve(Script::Slow(Duration::ZERO));
    let run = |drops: usize, retry: bool| {
        let front = breaking_front(&server.url, drops);
        let mut args = vec!["--json", "--targets", &front, "--tasks", "1"];
        if retry {
            args.push("--retry-transport");
        }
        args.extend(SMALL);
        report(&args)
    };
    let plain = run(1, false);
    assert_eq!(plain["completed"], 0);
    assert_eq!(errors(&plain), BTreeMap::from([("io".to_owned(), 1)]));

    // The first try and two resends break; the third resend goes through.
    let saved = run(3, true);
    assert_eq!(saved["completed"], 1, "{saved}");
    assert_eq!(saved["retried_transport"], 1, "{saved}");

    // Four broken connections are one more than the resends: the task fails.
    let lost = run(4, true);
    assert_eq!(lost["completed"], 0, "{lost}");
    assert_eq!(errors(&lost), BTreeMap::from([("io".to_owned(), 1)]));
}
