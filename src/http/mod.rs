//! The HTTP API every node serves (axum): `POST /segment`, `GET /health`,
//! `/health/live`, `/health/ready`, `/metrics`, `/cluster`, the cluster page
//! (`/dashboard`, `/dashboard/events`, `/dashboard/snapshot`, `/` redirecting to it) and
//! `/openapi.json`, the OpenAPI 3 document generated from the handlers (checked in as
//! `docs/openapi.json`). Every error, unknown routes and methods included, is JSON
//! `{"error", "code"}`.

mod auth;
mod cluster;
mod dashboard;
mod error;
mod health;
mod schema;
mod segment;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{ApiToken, TokenError, MIN_TOKEN_LEN};
pub use dashboard::Dashboard;
pub use error::ApiError;
pub use schema::{ErrorBody, SegmentResponse};

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
    /// A live peer silent this long shows as `suspect` on the cluster page.
    pub suspect_after: Duration,
    /// The cluster page's history.
    pub dashboard: Dashboard,
    /// When set, every route but the health probes requires it.
    pub api_token: Option<ApiToken>,
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

    fn resources(&self) -> schema::Resources {
        let mut system = self.system.lock().unwrap_or_else(PoisonError::into_inner);
        health::sample_resources(&mut system)
    }

    fn dispatcher_id(&self) -> &str {
        self.dispatcher.instance_id()
    }
}

/// The router of the API and its OpenAPI document.
pub fn router(state: AppState) -> Router {
    let body_limit = state.dispatcher.executor().engine().limits().max_bytes + 64 * 1024;
    let (router, api) = api_router().split_for_parts();
    let api = Arc::new(api);
    router
        .route(
            "/openapi.json",
            get(move || {
                let api = Arc::clone(&api);
                async move { Json(api.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            close_when_draining,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// While the node drains, every answer says `Connection: close`: a client's next request
/// opens a new connection, which DNS or the load balancer sends to a node that stays,
/// instead of racing this node's listener closing under an idle keep-alive connection.
async fn close_when_draining(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    if !state.ready.load(std::sync::atomic::Ordering::Acquire) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The OpenAPI document the node serves at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(segment::segment))
        .routes(routes!(health::health))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(metrics))
        .routes(routes!(cluster::cluster))
        .routes(routes!(dashboard::root))
        .routes(routes!(dashboard::page))
        .routes(routes!(dashboard::snapshot))
        .routes(routes!(dashboard::events))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "spheromesh node API",
        description = "Every node of the mesh serves this API; any node is an entry point. \
            Errors are JSON {\"error\", \"code\"}. With API_TOKEN set, every route but \
            /health, /health/live and /health/ready needs Authorization: Bearer <token>.",
        license(name = "MIT"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "segmentation", description = "Segment an image"),
        (name = "health", description = "Probes for the backend and orchestrators"),
        (name = "mesh", description = "The mesh as this node sees it"),
        (name = "dashboard", description = "The cluster page"),
        (name = "metrics", description = "Prometheus"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Prometheus metrics of this node (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses(
        (status = 200, description = "Every series, labelled with this node's instance id", content_type = "text/plain"),
        (status = 401, description = "API token missing or wrong (only when the node has one)", body = ErrorBody),
    ))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus.render(),
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {}; see /openapi.json", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; see /openapi.json",
            uri.path()
        ),
    )
}
