//! A fake SpherosegV4 backend: the callback route checked the way the real backend checks
//! it (contract section 3), recording what it accepted.
//!
//! `PUT /api/images/{id}/segmentation`, `id` a UUID; JSON object body; `status`
//! completed|failed; `result_data` an object, required when completed, with a contract
//! polygon list; `parameters` an object (null is a 400); User-Agent containing
//! `python-requests`, else 401 unless an `Authorization` header is present.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::Router;
use serde_json::Value;

/// One callback the backend accepted.
#[derive(Debug, Clone)]
pub struct Callback {
    pub image_id: uuid::Uuid,
    pub body: Value,
    pub user_agent: String,
    pub authorization: Option<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
pub struct Inner {
    pub accepted: Mutex<Vec<Callback>>,
    /// Requests refused by validation (status, reason): a correct client causes none.
    pub refused: Mutex<Vec<(u16, String)>>,
    /// Answer 500 to this many valid callbacks first.
    pub fail_first: AtomicU32,
    /// Answer 500 to every valid callback while set.
    pub fail_all: AtomicBool,
    /// Valid callbacks answered 500 on purpose.
    pub failed_on_purpose: AtomicU64,
}

/// Handle to a running fake backend.
#[derive(Debug, Clone)]
pub struct FakeBackend {
    pub addr: SocketAddr,
    pub state: Arc<Inner>,
}

impl FakeBackend {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    /// Like [`FakeBackend::start`] on a given address (the drain benchmark's fixed port).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let state = Arc::new(Inner::default());
        let app = Router::new()
            .route("/api/images/{id}/segmentation", put(callback))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind fake backend");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake backend serves");
        });
        Self { addr, state }
    }

    /// The callback URL the backend would put in a task for `image`.
    pub fn callback_url(&self, image: uuid::Uuid) -> String {
        format!("http://{}/api/images/{image}/segmentation", self.addr)
    }

    pub fn accepted(&self) -> Vec<Callback> {
        self.state.accepted.lock().unwrap().clone()
    }

    pub fn refused(&self) -> Vec<(u16, String)> {
        self.state.refused.lock().unwrap().clone()
    }

    /// Waits until `n` callbacks were accepted (panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Callback> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "only {} of {n} callbacks after {timeout:?}; refused: {:?}",
                got.len(),
                self.refused()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn refuse(state: &Inner, status: StatusCode, reason: String) -> (StatusCode, String) {
    state
        .refused
        .lock()
        .unwrap()
        .push((status.as_u16(), reason.clone()));
    (status, reason)
}

async fn callback(
    State(state): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let Ok(image_id) = uuid::Uuid::parse_str(&id) else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            format!("id {id} is not a UUID"),
        );
    };
    let user_agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if !user_agent.contains("python-requests") && authorization.is_none() {
        return refuse(
            &state,
            StatusCode::UNAUTHORIZED,
            format!("user agent {user_agent:?}"),
        );
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            format!("content type {content_type:?}"),
        );
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(&state, StatusCode::BAD_REQUEST, format!("json: {e}")),
    };
    if let Err(reason) = validate(&body) {
        return refuse(&state, StatusCode::BAD_REQUEST, reason);
    }
    if state.fail_all.load(Ordering::SeqCst)
        || state
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        state.failed_on_purpose.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again".into());
    }
    state.accepted.lock().unwrap().push(Callback {
        image_id,
        body,
        user_agent,
        authorization,
        at: std::time::Instant::now(),
    });
    (StatusCode::OK, "{\"message\":\"ok\"}".into())
}

/// The backend's body validation, plus a check of each polygon's shape.
pub fn validate(body: &Value) -> Result<(), String> {
    let obj = body.as_object().ok_or("body is not an object")?;
    let status = obj
        .get("status")
        .and_then(Value::as_str)
        .ok_or("status missing")?;
    if !matches!(status, "completed" | "failed") {
        return Err(format!("status {status}"));
    }
    match obj.get("parameters") {
        Some(Value::Object(_)) => {}
        other => return Err(format!("parameters must be an object, got {other:?}")),
    }
    match obj.get("result_data") {
        None if status == "failed" => {}
        Some(Value::Object(rd)) => {
            if status == "completed" {
                let polys = rd
                    .get("polygons")
                    .and_then(Value::as_array)
                    .ok_or("result_data.polygons must be a list")?;
                for p in polys {
                    check_polygon(p)?;
                }
                rd.get("processing_time")
                    .and_then(Value::as_f64)
                    .ok_or("processing_time must be a number")?;
                let ts = rd
                    .get("timestamp")
                    .and_then(Value::as_str)
                    .ok_or("timestamp must be a string")?;
                humantime::parse_rfc3339(ts).map_err(|e| format!("timestamp {ts}: {e}"))?;
                rd.get("processed_by")
                    .and_then(Value::as_str)
                    .ok_or("processed_by must be a string")?;
            }
        }
        other => return Err(format!("result_data must be an object, got {other:?}")),
    }
    if status == "failed" {
        obj.get("error")
            .and_then(Value::as_str)
            .ok_or("failed needs an error string")?;
    }
    Ok(())
}

fn check_polygon(p: &Value) -> Result<(), String> {
    let id = p.get("id").and_then(Value::as_str).ok_or("polygon id")?;
    let kind = p
        .get("type")
        .and_then(Value::as_str)
        .ok_or("polygon type")?;
    p.get("class")
        .and_then(Value::as_str)
        .ok_or("polygon class")?;
    p.get("color")
        .and_then(Value::as_str)
        .ok_or("polygon color")?;
    let points = p
        .get("points")
        .and_then(Value::as_array)
        .ok_or("polygon points")?;
    for pt in points {
        if pt.get("x").and_then(Value::as_i64).is_none()
            || pt.get("y").and_then(Value::as_i64).is_none()
        {
            return Err(format!("point {pt}"));
        }
    }
    match kind {
        "external" if id.starts_with("polygon-") => Ok(()),
        "internal"
            if id.starts_with("hole-") && p.get("parentId").and_then(Value::as_str).is_some() =>
        {
            Ok(())
        }
        _ => Err(format!("polygon {p}")),
    }
}
