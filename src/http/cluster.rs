//! `GET /cluster`: every member as this node sees it through gossip, with what only this
//! node knows (its forwards in flight, its breaker for the peer).

use std::time::Instant;

use axum::extract::State;
use axum::Json;
use spheromesh_mesh::routing::BreakerState;

use super::AppState;

pub(crate) async fn cluster(State(state): State<AppState>) -> Json<serde_json::Value> {
    let dispatcher = &state.dispatcher;
    let now = Instant::now();
    let peers = dispatcher.membership().peers();
    let views = dispatcher.peer_table().views(&peers, now);
    let breakers = dispatcher.peer_table().breaker_states(now);
    let members: Vec<serde_json::Value> = peers
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
            serde_json::json!({
                "id": peer.id.as_str(),
                "status": status,
                "routable": view.is_candidate(),
                "gossip_addr": peer.addresses.gossip.to_string(),
                "http_addr": peer.addresses.http.map(|a| a.to_string()),
                "quic_addr": peer.addresses.quic.map(|a| a.to_string()),
                "active": view.active,
                "capacity": view.capacity,
                "queue_limit": view.queue_limit,
                "service_ewma_ms": view.service_ewma.map(|d| d.as_secs_f64() * 1e3),
                "local_inflight": dispatcher.peer_table().inflight(&peer.id),
                "local_inflight_unreported": view.local_inflight,
                "breaker": breaker,
                "last_heard_ms": peer.last_heard.as_millis() as u64,
                "generation": peer.generation,
                "version": peer.version,
                "rabbitmq_queue_depth": peer.queue_depth,
            })
        })
        .collect();
    let executor = dispatcher.executor();
    let load = executor.load_report();
    Json(serde_json::json!({
        "self": {
            "id": state.dispatcher_id(),
            "status": if executor.is_draining() { "draining" } else { "ready" },
            "http_addr": state.addresses.http.to_string(),
            "quic_addr": state.addresses.quic.to_string(),
            "gossip_addr": state.addresses.gossip.to_string(),
            "active": load.active,
            "capacity": load.capacity,
            "queue_limit": load.queue_limit,
            "service_ewma_ms": load.service_ewma.map(|d| d.as_secs_f64() * 1e3),
            "generation": dispatcher.membership().generation(),
        },
        "members": members,
    }))
}

fn breaker_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}
