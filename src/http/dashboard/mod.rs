//! The cluster page every node serves: `GET /dashboard` (one self-contained HTML page,
//! embedded in the binary: no CDN, no framework, works offline), `GET /dashboard/events`
//! (server-sent events, one snapshot a second) and `GET /dashboard/snapshot` (the same
//! snapshot once, as JSON). `GET /` redirects to the page.
//!
//! The page shows the mesh as this node sees it through gossip: every live node's row, the
//! nodes that left (as `dead`, for ten minutes), mesh totals, the RabbitMQ queue and a
//! 5-minute history per node (`history.rs`).

mod history;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use self::history::{History, Observation};
use self::history::{Sample, Totals};
use super::cluster::{cluster_view, MemberRow};
use super::schema::ErrorBody;
use super::{ApiError, AppInner, AppState};

/// Time between two snapshots on the event stream.
const EVENT_EVERY: Duration = Duration::from_secs(1);
/// Pages open at once; one more is refused with 503 so viewers cannot grow memory.
pub(crate) const MAX_VIEWERS: usize = 64;

const PAGE: &str = include_str!("page.html");

/// The page's state on this node: the history and the viewer budget.
#[derive(Debug)]
pub struct Dashboard {
    history: Mutex<History>,
    last_rows: Mutex<BTreeMap<String, MemberRow>>,
    viewers: Arc<Semaphore>,
}

impl Default for Dashboard {
    fn default() -> Self {
        Self {
            history: Mutex::new(History::default()),
            last_rows: Mutex::new(BTreeMap::new()),
            viewers: Arc::new(Semaphore::new(MAX_VIEWERS)),
        }
    }
}

/// What the page shows, once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct DashboardSnapshot {
    /// Unix milliseconds of the snapshot.
    pub(crate) at_ms: u64,
    /// The node serving the page.
    pub(crate) node: String,
    /// This node first, then its live peers, then the dead.
    pub(crate) nodes: Vec<DashboardNode>,
    /// Mesh totals over the last minute.
    pub(crate) totals: Totals,
    /// The RabbitMQ task queue.
    pub(crate) queue: QueueView,
}

/// One row of the page.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct DashboardNode {
    /// The node as `/cluster` shows it (`state` is `dead` for nodes that left).
    #[serde(flatten)]
    pub(crate) row: MemberRow,
    /// Whether this is the node serving the page.
    pub(crate) is_self: bool,
    /// Tasks waiting for a slot.
    pub(crate) queued: u32,
    /// Share of its finished tasks that failed (0..1); absent before any finished.
    pub(crate) error_rate: Option<f64>,
    /// Milliseconds since it left the live set (dead nodes only).
    pub(crate) dead_for_ms: Option<u64>,
    /// Its last 5 minutes, one sample every 5 s.
    pub(crate) history: Vec<Sample>,
}

/// The RabbitMQ queue as the mesh sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct QueueView {
    /// Ready messages at the freshest look of any consuming node.
    pub(crate) depth: Option<u64>,
    /// Live nodes consuming from it.
    pub(crate) consumers: usize,
}

impl Dashboard {
    /// Feeds the history with the live set; the runtime calls it every gossip round.
    pub(crate) fn tick(&self, state: &AppInner) {
        let view = cluster_view(state);
        let rows: Vec<&MemberRow> = std::iter::once(&view.this).chain(&view.members).collect();
        let observations: Vec<Observation> = rows
            .iter()
            .map(|row| Observation {
                id: row.id.clone(),
                active: row.active,
                finished: row.done.unwrap_or(0) + row.failed.unwrap_or(0),
                latency_buckets: row.latency_buckets.clone(),
                generation: row.generation,
            })
            .collect();
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history.observe(Instant::now(), unix_ms(), &observations);
        let keep: Vec<String> = history
            .dead(Instant::now())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        drop(history);
        let mut last = self
            .last_rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for row in rows {
            last.insert(row.id.clone(), row.clone());
        }
        last.retain(|id, _| keep.contains(id) || observations.iter().any(|o| &o.id == id));
    }

    /// The snapshot the page renders.
    pub(crate) fn snapshot(&self, state: &AppInner) -> DashboardSnapshot {
        let now = Instant::now();
        let view = cluster_view(state);
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let node_of = |row: MemberRow, is_self: bool, dead_for: Option<Duration>| {
            let finished = row.done.unwrap_or(0) + row.failed.unwrap_or(0);
            DashboardNode {
                is_self,
                queued: row.active.saturating_sub(row.capacity),
                error_rate: (finished > 0)
                    .then(|| row.failed.unwrap_or(0) as f64 / finished as f64),
                dead_for_ms: dead_for.map(|d| d.as_millis() as u64),
                history: history.samples(&row.id),
                row,
            }
        };
        let consumers = std::iter::once(&view.this)
            .chain(&view.members)
            .filter(|row| row.rabbitmq_queue_depth.is_some())
            .count()
            + usize::from(view.this.rabbitmq_queue_depth.is_none() && state.broker.is_some());
        let depth = std::iter::once(&view.this)
            .chain(&view.members)
            .filter_map(|row| row.rabbitmq_queue_depth)
            .max();
        let mut nodes = vec![node_of(view.this, true, None)];
        nodes.extend(
            view.members
                .into_iter()
                .map(|row| node_of(row, false, None)),
        );
        let last = self
            .last_rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (id, dead_for) in history.dead(now) {
            if nodes.iter().any(|n| n.row.id == id) {
                continue;
            }
            if let Some(row) = last.get(&id) {
                let mut row = row.clone();
                row.state = "dead".to_owned();
                row.routable = false;
                row.active = 0;
                nodes.push(node_of(row, false, Some(dead_for)));
            }
        }
        DashboardSnapshot {
            at_ms: unix_ms(),
            node: state.dispatcher_id().to_owned(),
            nodes,
            totals: history.totals(),
            queue: QueueView { depth, consumers },
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `GET /`: the cluster page.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 303, description = "Redirect to /dashboard")))]
pub(crate) async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// The cluster page (HTML, self-contained).
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses(
        (status = 200, description = "The page", content_type = "text/html"),
        (status = 401, description = "API token missing or wrong (only when the node has one)", body = ErrorBody),
    ))]
pub(crate) async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE)).into_response()
}

/// The page's data once.
#[utoipa::path(get, path = "/dashboard/snapshot", tag = "dashboard",
    responses(
        (status = 200, description = "What the page shows now", body = DashboardSnapshot),
        (status = 401, description = "API token missing or wrong (only when the node has one)", body = ErrorBody),
    ))]
pub(crate) async fn snapshot(State(state): State<AppState>) -> Json<DashboardSnapshot> {
    Json(state.dashboard.snapshot(&state))
}

/// The page's data as server-sent events (`snapshot` events, one a second).
#[utoipa::path(get, path = "/dashboard/events", tag = "dashboard",
    responses(
        (status = 200, description = "An event stream of DashboardSnapshot JSON", content_type = "text/event-stream"),
        (status = 401, description = "API token missing or wrong (only when the node has one)", body = ErrorBody),
        (status = 503, description = "Too many pages open on this node", body = ErrorBody),
    ))]
pub(crate) async fn events(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Ok(permit) = Arc::clone(&state.dashboard.viewers).try_acquire_owned() else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{MAX_VIEWERS} cluster pages are open on this node already"),
        )
        .with_retry_after(5));
    };
    Ok(Sse::new(snapshots(state, permit))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn snapshots(
    state: AppState,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut tick = tokio::time::interval(EVENT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    stream::unfold(
        (state, tick, permit),
        |(state, mut tick, permit)| async move {
            tick.tick().await;
            let snapshot = state.dashboard.snapshot(&state);
            let event = Event::default()
                .event("snapshot")
                .json_data(&snapshot)
                .unwrap_or_else(|_| Event::default().comment("snapshot failed to serialise"));
            Some((Ok(event), (state, tick, permit)))
        },
    )
}
