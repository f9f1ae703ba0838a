//! `GET /cluster`: every member as this node sees it through gossip, with what only this
//! node knows (its forwards in flight, its breaker for the peer). The cluster page reads the
//! same rows.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use spheromesh_mesh::membership::{NodeStats, Peer};
use spheromesh_mesh::routing::BreakerState;
use utoipa::ToSchema;

use super::schema::ErrorBody;
use super::AppInner;
use super::AppState;

/// The answer of `GET /cluster`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ClusterResponse {
    /// This node.
    #[serde(rename = "self")]
    pub(crate) this: MemberRow,
    /// Its live peers.
    pub(crate) members: Vec<MemberRow>,
}

/// One node as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct MemberRow {
    /// Node id.
    pub(crate) id: String,
    /// Gossiped life stage: `starting`, `ready` or `draining`.
    pub(crate) status: String,
    /// What an operator should read: `starting`, `ready`, `draining`, `suspect` (silent
    /// for a while, not yet declared dead) or `dead` (the cluster page only).
    pub(crate) state: String,
    /// Whether this node would send it a task now.
    pub(crate) routable: bool,
    /// Gossip address.
    pub(crate) gossip_addr: String,
    /// HTTP API address.
    pub(crate) http_addr: Option<String>,
    /// QUIC forward address.
    pub(crate) quic_addr: Option<String>,
    /// Compute device of its model.
    pub(crate) device: Option<String>,
    /// Model it serves.
    pub(crate) model: Option<String>,
    /// Tasks running or queued.
    pub(crate) active: u32,
    /// Slots.
    pub(crate) capacity: u32,
    /// Queue room beyond the slots.
    pub(crate) queue_limit: u32,
    /// Mean task time, ms.
    pub(crate) service_ewma_ms: Option<f64>,
    /// Tasks it ran that succeeded.
    pub(crate) done: Option<u64>,
    /// Tasks it ran that failed or timed out.
    pub(crate) failed: Option<u64>,
    /// Tasks peers sent to it.
    pub(crate) forwarded_in: Option<u64>,
    /// Tasks it sent to peers.
    pub(crate) forwarded_out: Option<u64>,
    /// This node's sends to it in flight.
    pub(crate) local_inflight: usize,
    /// Of those, sends its last gossiped load does not include yet.
    pub(crate) local_inflight_unreported: u32,
    /// This node's circuit breaker for it: `closed`, `open` or `half_open`.
    pub(crate) breaker: String,
    /// Milliseconds since its heartbeat last reached this node.
    pub(crate) last_heard_ms: u64,
    /// Its gossip generation (Unix ms of its start).
    pub(crate) generation: u64,
    /// Its software version.
    pub(crate) version: Option<String>,
    /// The RabbitMQ queue depth it last saw, if it consumes.
    pub(crate) rabbitmq_queue_depth: Option<u64>,
    /// Its latency histogram (see `LATENCY_BUCKETS_MS` in docs/OPERATIONS.md).
    #[serde(skip)]
    pub(crate) latency_buckets: Vec<u64>,
}

/// Every member, this node first.
#[utoipa::path(get, path = "/cluster", tag = "mesh",
    responses(
        (status = 200, description = "The mesh as this node sees it", body = ClusterResponse),
        (status = 401, description = "API token missing or wrong (only when the node has one)", body = ErrorBody),
    ))]
pub(crate) async fn cluster(State(state): State<AppState>) -> Json<ClusterResponse> {
    Json(cluster_view(&state))
}

/// This node's row and its peers' rows.
pub(crate) fn cluster_view(state: &AppInner) -> ClusterResponse {
    let dispatcher = &state.dispatcher;
    let now = Instant::now();
    let peers = dispatcher.membership().peers();
    let views = dispatcher.peer_table().views(&peers, now);
    let breakers = dispatcher.peer_table().breaker_states(now);
    let members = peers
        .iter()
        .zip(&views)
        .map(|(peer, view)| {
            let status = if view.draining {
                "draining"
            } else if peer.view.ready {
                "ready"
            } else {
                "starting"
            };
            let breaker = breakers
                .iter()
                .find(|(id, _)| id == &peer.id)
                .map_or("closed", |(_, s)| breaker_name(*s));
            let stats = peer.stats.clone().unwrap_or_default();
            MemberRow {
                id: peer.id.as_str().to_owned(),
                status: status.to_owned(),
                state: operator_state(status, peer, state.suspect_after).to_owned(),
                routable: view.is_candidate(),
                gossip_addr: peer.addresses.gossip.to_string(),
                http_addr: peer.addresses.http.map(|a| a.to_string()),
                quic_addr: peer.addresses.quic.map(|a| a.to_string()),
                device: peer.description.device.clone(),
                model: peer.description.model.clone(),
                active: view.active,
                capacity: view.capacity,
                queue_limit: view.queue_limit,
                service_ewma_ms: view.service_ewma.map(|d| d.as_secs_f64() * 1e3),
                done: peer.stats.as_ref().map(|s| s.done),
                failed: peer.stats.as_ref().map(|s| s.failed),
                forwarded_in: peer.stats.as_ref().map(|s| s.forwarded_in),
                forwarded_out: peer.stats.as_ref().map(|s| s.forwarded_out),
                local_inflight: dispatcher.peer_table().inflight(&peer.id),
                local_inflight_unreported: view.local_inflight,
                breaker: breaker.to_owned(),
                last_heard_ms: peer.last_heard.as_millis() as u64,
                generation: peer.generation,
                version: peer.version.clone(),
                rabbitmq_queue_depth: peer.queue_depth,
                latency_buckets: stats.latency_buckets,
            }
        })
        .collect();
    ClusterResponse {
        this: self_row(state),
        members,
    }
}

fn self_row(state: &AppInner) -> MemberRow {
    let dispatcher = &state.dispatcher;
    let executor = dispatcher.executor();
    let load = executor.load_report();
    let stats: NodeStats = dispatcher.counters().snapshot();
    let status = if executor.is_draining() {
        "draining"
    } else if state.ready.load(std::sync::atomic::Ordering::Acquire) {
        "ready"
    } else {
        "starting"
    };
    MemberRow {
        id: state.dispatcher_id().to_owned(),
        status: status.to_owned(),
        state: status.to_owned(),
        routable: status == "ready",
        gossip_addr: state.addresses.gossip.to_string(),
        http_addr: Some(state.addresses.http.to_string()),
        quic_addr: Some(state.addresses.quic.to_string()),
        device: Some(executor.engine().device_name()),
        model: Some(crate::node::model_label(&state.model_path)),
        active: load.active,
        capacity: load.capacity,
        queue_limit: load.queue_limit,
        service_ewma_ms: load.service_ewma.map(|d| d.as_secs_f64() * 1e3),
        done: Some(stats.done),
        failed: Some(stats.failed),
        forwarded_in: Some(stats.forwarded_in),
        forwarded_out: Some(stats.forwarded_out),
        local_inflight: 0,
        local_inflight_unreported: 0,
        breaker: "closed".to_owned(),
        last_heard_ms: 0,
        generation: dispatcher.membership().generation(),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        rabbitmq_queue_depth: state.broker.as_ref().and_then(|b| b.snapshot().queue_depth),
        latency_buckets: stats.latency_buckets,
    }
}

/// `suspect` once a live peer has been silent for `suspect_after`, else its gossiped status.
fn operator_state(status: &'static str, peer: &Peer, suspect_after: Duration) -> &'static str {
    if peer.last_heard >= suspect_after {
        "suspect"
    } else {
        status
    }
}

fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}
