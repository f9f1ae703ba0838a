//! Operating a mesh: the cluster page in a real headless Chromium, the OpenAPI document
//! (checked in, served, and fuzzed by schemathesis), JSON logs and the API token, all on
//! real `spheromesh node` processes.

#[path = "operations/chromium.rs"]
mod chromium;
#[path = "nodes/mod.rs"]
mod nodes;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nodes::{client, get_json, load, mesh, png, wait_until, Node, Pki, Spec, KEY};
use serde_json::Value;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The page's rows: node id, state and the `done` cell's text.
async fn page_rows(browser: &mut chromium::Browser) -> Vec<(String, String, String)> {
    let rows = browser
        .eval(
            "JSON.stringify(Array.from(document.querySelectorAll('#rows tr')).map(r => \
             [r.dataset.node, r.dataset.state, r.querySelector('[data-field=done]').textContent]))",
        )
        .await;
    let rows: Vec<(String, String, String)> =
        serde_json::from_str(rows.as_str().unwrap_or("[]")).expect("rows JSON");
    rows
}

fn done_of(rows: &[(String, String, String)], node: &str) -> Option<u64> {
    rows.iter()
        .find(|(id, _, _)| id == node)
        .and_then(|(_, _, done)| done.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_page_shows_every_node_live_and_a_killed_one_dead_within_5_s() {
    let Some(binary) = chromium::find() else {
        return;
    };
    let pki = Pki::new("spheromesh", KEY);
    let mut nodes = mesh(&pki, 3, 30, 2).await;
    let page_url = nodes[0].url("/dashboard");
    let mut browser = chromium::Browser::open(&binary, &page_url, 1500, 560).await;

    // Load spread over the mesh, so every row has numbers that move.
    let image = png(64, 64);
    let loads: Vec<_> = nodes
        .iter()
        .map(|n| tokio::spawn(load(n.url("/segment"), image.clone(), 400, 3, false)))
        .collect();

    let all_ready = poll_page(&mut browser, Duration::from_secs(15), |rows| {
        rows.len() == 3 && rows.iter().all(|(_, state, _)| state == "ready")
    })
    .await;
    assert!(
        all_ready.is_some(),
        "the page never showed three ready nodes: {:?}",
        page_rows(&mut browser).await
    );
    // Live: the counters on the page grow while the page stays open (no reload).
    let before = page_rows(&mut browser).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = page_rows(&mut browser).await;
    for node in &nodes {
        let (b, a) = (done_of(&before, &node.name), done_of(&after, &node.name));
        assert!(
            matches!((b, a), (Some(b), Some(a)) if a > b),
            "{}: done did not grow on the page ({b:?} -> {a:?})",
            node.name
        );
    }
    if let Some(path) = std::env::var_os("SPHEROMESH_SCREENSHOT") {
        std::fs::write(&path, browser.screenshot().await).expect("write screenshot");
        eprintln!("screenshot written to {}", Path::new(&path).display());
    }
    for task in loads {
        let outcome = task.await.expect("load");
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    }

    let victim = nodes.pop().expect("three nodes");
    let victim_name = victim.name.clone();
    let mut victim = victim;
    let killed = Instant::now();
    victim.kill9();
    let dead_after = poll_page(&mut browser, Duration::from_secs(10), |rows| {
        rows.iter()
            .any(|(id, state, _)| id == &victim_name && state == "dead")
    })
    .await;
    let took = killed.elapsed();
    assert!(
        dead_after.is_some() && took <= Duration::from_secs(5),
        "{victim_name} not shown dead within 5 s (took {took:?}): {:?}",
        page_rows(&mut browser).await
    );
    eprintln!("killed node shown dead on the page after {took:?}");
}

/// Reads the page's rows every 100 ms until `holds`; the time it took, or `None`.
async fn poll_page(
    browser: &mut chromium::Browser,
    within: Duration,
    holds: impl Fn(&[(String, String, String)]) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if holds(&page_rows(browser).await) {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checked_in_openapi_document_is_what_nodes_serve() {
    let pki = Pki::new("spheromesh", KEY);
    pki.issue("api");
    let node = Node::start(&Spec::synthetic("api", 5, 2), &pki);
    let served = get_json(&node.url("/openapi.json")).await;
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let checked_in: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("docs/openapi.json"))
            .expect("docs/openapi.json is JSON");
    assert!(
        served == checked_in,
        "docs/openapi.json is stale: run `cargo run --release -- openapi > docs/openapi.json`"
    );
    let paths = served["paths"].as_object().expect("paths");
    for route in [
        "/segment",
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/cluster",
        "/dashboard",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
}

/// schemathesis from the virtual environment scripts/test.sh makes, or from PATH.
fn schemathesis() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-schemathesis/bin/st");
    if venv.is_file() {
        return Some(venv);
    }
    let on_path = Command::new("st")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Some(PathBuf::from("st"));
    }
    assert!(
        !under_ci(),
        "schemathesis is not installed under CI=true (scripts/test.sh installs it)"
    );
    eprintln!("\n*** SKIPPING schemathesis: not installed (scripts/test.sh installs it)\n");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let Some(st) = schemathesis() else { return };
    let pki = Pki::new("spheromesh", KEY);
    pki.issue("fuzzed");
    let uploads = tempfile::tempdir().expect("uploads");
    std::fs::write(uploads.path().join("cells.png"), png(32, 32)).expect("image");
    let spec = Spec::synthetic("fuzzed", 2, 4)
        .arg("--uploads-root", uploads.path().to_str().expect("utf8"));
    let node = Node::start(&spec, &pki);
    let report = tempfile::tempdir().expect("report dir");
    let st = st.clone();
    let schema = node.url("/openapi.json");
    let junit = report.path().join("junit.xml");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args(["run", &schema, "--checks", "all", "--max-examples", "40"])
            // "Schema-valid data is accepted" cannot hold for an image API: random bytes fit
            // the schema's binary string and are rightly refused (415 or 422) as no image.
            .args(["--exclude-checks", "positive_data_acceptance"])
            // The event stream never ends; it is covered by the browser test.
            .args(["--exclude-path", "/dashboard/events"])
            .args(["--request-timeout", "20", "--seed", "1"])
            .arg("--report-junit-path")
            .arg(&junit)
            .args(["--report", "junit"])
            .env("NO_COLOR", "1")
            .output()
            .expect("run schemathesis")
    })
    .await
    .expect("schemathesis thread");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    let tail: Vec<&str> = text.lines().rev().take(12).collect();
    eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_instance_on_every_line_and_the_task_on_both_nodes() {
    let pki = Pki::new("spheromesh", KEY);
    for name in ["entry", "worker"] {
        pki.issue(name);
    }
    // The entry node is slow, the worker fast: the task goes to the worker.
    let entry = Node::start(
        &Spec::synthetic("entry", 3000, 1).arg("--log-format", "json"),
        &pki,
    );
    let worker = Node::start(
        &Spec::synthetic("worker", 10, 4)
            .seeds(&[entry.gossip])
            .arg("--log-format", "json"),
        &pki,
    );
    let seen = wait_until(Duration::from_secs(20), || async {
        nodes::routable(&entry).await.contains(&"worker".to_owned())
    })
    .await;
    assert!(seen.is_some(), "entry never saw the worker");
    let answer: Value = client()
        .post(entry.url("/segment"))
        .header("content-type", "image/png")
        .body(png(32, 32))
        .send()
        .await
        .expect("POST /segment")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["processed_by"], "worker", "{answer}");
    let task_id = answer["task_id"].as_str().expect("task_id").to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let lines_of = |node: &Node| -> Vec<Value> {
        let text = std::fs::read_to_string(&node.log).expect("log");
        text.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("{}: not one JSON object per line ({e}): {line}", node.name)
                })
            })
            .collect()
    };
    for node in [&entry, &worker] {
        let lines = lines_of(node);
        assert!(lines.len() >= 3, "{}: {} lines", node.name, lines.len());
        for line in &lines {
            assert_eq!(line["instance"], node.name.as_str(), "{line}");
            assert!(
                line["timestamp"].is_string() && line["level"].is_string(),
                "{line}"
            );
        }
    }
    let entry_task = lines_of(&entry)
        .into_iter()
        .find(|l| l["task_id"] == task_id.as_str() && l["message"] == "task done")
        .expect("the entry node logged the task");
    assert_eq!(entry_task["entry_node"], "entry");
    assert_eq!(entry_task["processed_by"], "worker");
    let worker_task = lines_of(&worker)
        .into_iter()
        .find(|l| l["task_id"] == task_id.as_str())
        .expect("the worker logged the task under the same id");
    assert_eq!(worker_task["entry_node"], "entry", "{worker_task}");
    assert_eq!(worker_task["processed_by"], "worker", "{worker_task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_guards_everything_but_the_health_probes() {
    let pki = Pki::new("spheromesh", KEY);
    pki.issue("guarded");
    let token = "s3cret-token-for-the-test";
    let node = Node::start(
        &Spec::synthetic("guarded", 5, 2).arg("--api-token", token),
        &pki,
    );
    let http = client();
    for open in ["/health", "/health/live", "/health/ready"] {
        let status = http.get(node.url(open)).send().await.expect("GET").status();
        assert_eq!(status, 200, "{open} must stay open for orchestrators");
    }
    for guarded in [
        "/cluster",
        "/metrics",
        "/dashboard",
        "/dashboard/snapshot",
        "/openapi.json",
    ] {
        let response = http.get(node.url(guarded)).send().await.expect("GET");
        assert_eq!(response.status(), 401, "{guarded} without a token");
        assert!(response.headers().contains_key("www-authenticate"));
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["code"], "unauthorized");
        let wrong = http
            .get(node.url(guarded))
            .bearer_auth("s3cret-token-for-the-tesT")
            .send()
            .await
            .expect("GET");
        assert_eq!(wrong.status(), 401, "{guarded} with a wrong token");
        let right = http
            .get(node.url(guarded))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        assert_eq!(right.status(), 200, "{guarded} with the token");
    }
    let segment = |auth: Option<&str>| {
        let mut request = http
            .post(node.url("/segment"))
            .header("content-type", "image/png")
            .body(png(16, 16));
        if let Some(auth) = auth {
            request = request.bearer_auth(auth);
        }
        request.send()
    };
    assert_eq!(segment(None).await.expect("POST").status(), 401);
    assert_eq!(segment(Some(token)).await.expect("POST").status(), 200);
    // The page's event stream takes the token in the query (EventSource sends no headers).
    let page = http
        .get(node.url(&format!("/dashboard/snapshot?access_token={token}")))
        .send()
        .await
        .expect("GET");
    assert_eq!(page.status(), 200);
    // A token too short to protect anything is refused at start, with the rule named.
    let out = Command::new(env!("CARGO_BIN_EXE_spheromesh"))
        .args(["node", "--model", "synthetic:1", "--api-token", "short"])
        .env_clear()
        .output()
        .expect("run node");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}
