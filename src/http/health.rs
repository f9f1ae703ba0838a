//! `GET /health` (the old service's keys, plus the mesh), `/health/live`, `/health/ready`.
//!
//! `/health` answers 200 whenever this node can accept work, through itself or a peer, and
//! 503 only when it cannot: while it drains or before it serves. A mesh whose slots and
//! queues are full at this instant still accepts work - the broker queue holds it, and
//! HTTP clients get 503 `busy` per request - so that is `degraded`, not 503: the backend
//! stops publishing on anything but 200, and a false 503 would stop the whole app for a
//! polling interval (the old service's 503 on 90% memory did exactly that).

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use spheromesh_mesh::membership::GossipHealth;
use sysinfo::{Disks, MemoryRefreshKind, System};

use super::schema::{
    HealthResponse, LoadBody, MeshHealth, ModelHealth, ProbeStatus, Processing, Resources,
};
use super::AppState;
use crate::node::TaskRunner;

/// The node's state, in the old service's shape plus the mesh.
#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "This node can accept work (status healthy or degraded)", body = HealthResponse),
        (status = 503, description = "Draining or not yet serving (status unhealthy)", body = HealthResponse),
    ))]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let executor = state.dispatcher.executor();
    let peers = state.dispatcher.membership().peers();
    let ready_peers = peers
        .iter()
        .filter(|p| p.view.ready && !p.view.draining)
        .count();
    let draining = executor.is_draining();
    let can_take_work = !draining && state.ready.load(Ordering::Acquire);
    let room_now = state.dispatcher.has_room_anywhere();
    let broker_connected = state.broker_connected();
    let status = if !can_take_work {
        "unhealthy"
    } else if broker_connected == Some(false) || !room_now {
        "degraded"
    } else {
        "healthy"
    };
    let model_path = state.model_path.clone();
    let model_size = std::fs::metadata(&model_path).ok().map(|m| m.len());
    let limits = executor.limits();
    let load = executor.load_report();
    let body = HealthResponse {
        status: status.to_owned(),
        timestamp: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        instance_id: state.dispatcher.instance_id().to_owned(),
        model_path: model_path.clone(),
        model_exists: model_size.is_some() || state.engine_is_synthetic,
        model: ModelHealth {
            path: model_path,
            exists: model_size.is_some(),
            size_mb: model_size.map(|b| b as f64 / (1024.0 * 1024.0)),
            engine: executor.engine().describe(),
        },
        resources: state.resources(),
        processing: Processing {
            active_tasks: executor.active(),
            max_concurrent: limits.capacity,
            queue_limit: limits.queue_limit,
            rabbitmq_connected: broker_connected.unwrap_or(false),
            prefetch_count: state.broker_prefetch(),
        },
        mesh: MeshHealth {
            generation: state.dispatcher.membership().generation(),
            draining,
            peers: peers.len(),
            ready_peers,
            startable_now: state.dispatcher.startable_now(),
            room_now,
            load: LoadBody {
                active: load.active,
                capacity: load.capacity,
                queue_limit: load.queue_limit,
                service_ewma_ms: load.service_ewma.map(|d| d.as_secs_f64() * 1e3),
            },
        },
    };
    let code = if can_take_work {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// 200 while the process and its membership task work; 503 when the membership task has
/// stopped or hung, which nothing inside the process can repair (it restarts the gossip
/// server it owns, not itself): the orchestrator's liveness probe restarts the node.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses(
        (status = 200, description = "The process and its membership task run", body = ProbeStatus),
        (status = 503, description = "The membership task stopped or hung: restart the node", body = ProbeStatus),
    ))]
pub(crate) async fn live(State(state): State<AppState>) -> Response {
    let (code, status, since_secs) = match state.dispatcher.membership().gossip_health() {
        GossipHealth::Running => (StatusCode::OK, "alive", None),
        GossipHealth::Stuck { since } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "gossip_stuck",
            Some(since.as_secs_f64()),
        ),
        GossipHealth::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "gossip_stopped", None),
    };
    probe(code, status, since_secs)
}

/// 200 while the node serves; 503 before it serves and once it drains.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Serving", body = ProbeStatus),
        (status = 503, description = "Starting or draining", body = ProbeStatus),
    ))]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) && !state.dispatcher.executor().is_draining() {
        probe(StatusCode::OK, "ready", None)
    } else {
        probe(StatusCode::SERVICE_UNAVAILABLE, "not_ready", None)
    }
}

fn probe(code: StatusCode, status: &str, since_secs: Option<f64>) -> Response {
    let body = ProbeStatus {
        status: status.to_owned(),
        since_secs,
    };
    (code, Json(body)).into_response()
}

/// CPU, memory and disk figures for `/health`.
pub(crate) fn sample_resources(system: &mut System) -> Resources {
    system.refresh_cpu_usage();
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    let total = system.total_memory().max(1);
    let available = system.available_memory();
    let disks = Disks::new_with_refreshed_list();
    let cwd = std::env::current_dir().unwrap_or_default();
    let disk = disks
        .list()
        .iter()
        .filter(|d| cwd.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len());
    let (disk_percent, disk_free_gb) = disk.map_or((0.0, 0.0), |d| {
        let total = d.total_space().max(1) as f64;
        let free = d.available_space() as f64;
        (100.0 * (total - free) / total, free / 1e9)
    });
    Resources {
        cpu_percent: system.global_cpu_usage(),
        memory_percent: 100.0 * (total - available.min(total)) as f64 / total as f64,
        memory_available_mb: available as f64 / (1024.0 * 1024.0),
        disk_percent,
        disk_free_gb,
    }
}
