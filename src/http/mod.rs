//! The HTTP API every node serves (axum): `POST /segment`, `GET /health`,
//! `/health/live`, `/health/ready`, `/metrics`, `/cluster`.

mod cluster;
mod error;
mod health;
mod segment;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::ApiError;

use crate::broker::BrokerStatus;
use crate::node::{Dispatcher, TaskRunner};
use crate::uploads::UploadsRoot;

/// The addresses a node publishes, for `/cluster`.
#[derive(Debug, Clone, Copy)]
pub struct NodeAddresses {
    /// HTTP API.
    pub http: SocketAddr,
    /// QUIC forward endpoint.
    pub quic: SocketAddr,
    /// Gossip.
    pub gossip: SocketAddr,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppInner {
    /// Routes tasks.
    pub dispatcher: Arc<Dispatcher>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// The `--model` value, for `/health`.
    pub model_path: String,
    /// Whether the engine is the synthetic test double.
    pub engine_is_synthetic: bool,
    /// Longest time a request may take.
    pub request_timeout: Duration,
    /// False until the node serves, and again once it drains.
    pub ready: AtomicBool,
    /// Root for JSON `image_path` requests; `None` refuses them.
    pub uploads_root: Option<UploadsRoot>,
    /// Published addresses.
    pub addresses: NodeAddresses,
    /// The broker consumer's status, if this node has one.
    pub broker: Option<Arc<BrokerStatus>>,
    /// CPU/memory sampler for `/health` (CPU usage is measured between two calls).
    pub system: Mutex<sysinfo::System>,
    /// Bytes of request bodies this node holds at once (one permit per byte, up to a
    /// 32-bit count per request); a request that does not fit is refused with 503 before
    /// its body is read, so a flood cannot grow memory without bound.
    pub body_budget: Arc<tokio::sync::Semaphore>,
}

/// Shared state of the handlers.
pub type AppState = Arc<AppInner>;

impl AppInner {
    fn broker_connected(&self) -> Option<bool> {
        self.broker.as_ref().map(|b| b.connected())
    }

    fn broker_prefetch(&self) -> u32 {
        self.broker
            .as_ref()
            .map_or(0, |b| b.snapshot().prefetch_bound)
    }

    fn resources(&self) -> serde_json::Value {
        let mut system = self.system.lock().unwrap_or_else(PoisonError::into_inner);
        health::sample_resources(&mut system)
    }

    fn dispatcher_id(&self) -> &str {
        self.dispatcher.instance_id()
    }
}

/// The router of the API.
pub fn router(state: AppState) -> Router {
    let body_limit = state.dispatcher.executor().engine().limits().max_bytes + 64 * 1024;
    Router::new()
        .route("/segment", post(segment::segment))
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics))
        .route("/cluster", get(cluster::cluster))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus.render(),
    )
}
