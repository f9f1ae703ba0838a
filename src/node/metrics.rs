//! Prometheus metrics of a node: the names the old service's dashboards and alerts use
//! (`ml_*`, backend contract section 6) plus the mesh's own (`mesh_*`).
//!
//! Every series carries the global label `instance` (the node's instance id), set when the
//! recorder is installed.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Tasks finished on this node, by `status` (`success|timeout|error`).
pub const TASKS_PROCESSED: &str = "ml_tasks_processed_total";
/// Time from admission to result of tasks run on this node (histogram, seconds).
pub const TASK_DURATION: &str = "ml_task_duration_seconds";
/// Tasks running or queued on this node.
pub const ACTIVE_TASKS: &str = "ml_active_tasks";
/// Depth of the RabbitMQ queue, as last seen (0 without a broker).
pub const QUEUE_SIZE: &str = "ml_queue_size";
/// Time tasks waited for a slot (histogram, seconds).
pub const QUEUE_WAIT: &str = "mesh_queue_wait_seconds";
/// Tasks this node sent to a peer, by `outcome`.
pub const TASKS_FORWARDED: &str = "mesh_tasks_forwarded_total";
/// Tasks peers sent to this node, by `outcome`.
pub const TASKS_RECEIVED: &str = "mesh_tasks_received_total";
/// Sends of a task to a second peer or back to this node after a peer failed or was busy.
pub const FORWARD_RETRIES: &str = "mesh_forward_retries_total";
/// Hedged second sends, by `outcome` (`sent`, `won`).
pub const HEDGES: &str = "mesh_hedges_total";
/// Sends cancelled and placed again because the peer died or its breaker opened.
pub const FAILOVERS: &str = "mesh_failovers_total";
/// Times this node noticed it had itself stalled and kept its peers through the stall.
pub const STALLS: &str = "mesh_stalls_total";
/// Tasks refused because no node had room.
pub const TASKS_REFUSED_BUSY: &str = "mesh_tasks_refused_busy_total";
/// Live peers by gossiped `state` (`ready|starting|draining`).
pub const PEERS: &str = "mesh_peers";
/// Peers whose circuit breaker is open.
pub const BREAKERS_OPEN: &str = "mesh_breakers_open";
/// Gossip packets sent / received / dropped (by `reason`).
pub const GOSSIP_PACKETS: &str = "mesh_gossip_packets_total";
/// Gossip task restarts after a panic.
pub const GOSSIP_RESTARTS: &str = "mesh_gossip_restarts_total";
/// QUIC handshakes that failed (e.g. a peer without a cluster certificate).
pub const QUIC_HANDSHAKE_FAILURES: &str = "mesh_quic_handshake_failures_total";
/// Forward frames refused as malformed or too large.
pub const QUIC_BAD_FRAMES: &str = "mesh_quic_bad_frames_total";
/// 1 while the broker consumer holds a connection, else 0.
pub const BROKER_CONNECTED: &str = "mesh_broker_connected";
/// Broker deliveries held and not yet acked or requeued.
pub const BROKER_UNACKED: &str = "mesh_broker_unacked";
/// Result callbacks by `outcome` (`ok|failed`, after retries).
pub const BROKER_CALLBACKS: &str = "mesh_broker_callbacks_total";
/// Messages moved to the dead-letter queue.
pub const BROKER_DEAD_LETTERED: &str = "mesh_broker_dead_lettered_total";
/// Deliveries handed back to the queue.
pub const BROKER_REQUEUED: &str = "mesh_broker_requeued_total";
/// Redeliveries answered from the result cache.
pub const BROKER_FROM_CACHE: &str = "mesh_broker_answered_from_cache_total";
/// Broker sessions opened after the first.
pub const BROKER_RECONNECTS: &str = "mesh_broker_reconnects_total";
/// HTTP answers by `code` (status code).
pub const HTTP_RESPONSES: &str = "mesh_http_responses_total";
/// This process's CPU use as a share of all the node's cores (0..1).
pub const PROCESS_CPU: &str = "spheromesh_process_cpu_ratio";
/// This process's resident memory in bytes.
pub const PROCESS_MEMORY: &str = "spheromesh_process_resident_memory_bytes";
/// Ready nodes this node counts, itself included (the autoscaler's current replicas).
pub const CURRENT_REPLICAS: &str = "spheromesh_current_replicas";
/// Tasks running or queued per slot over the ready nodes (above 1 when tasks queue).
pub const SLOT_UTILISATION: &str = "spheromesh_slot_utilisation";
/// Nodes the mesh should have, by the HPA rule (see `crate::scaling`).
pub const DESIRED_REPLICAS: &str = "spheromesh_desired_replicas";

/// Installs the global recorder with the `instance` label and histogram buckets.
///
/// # Errors
///
/// If a recorder is already installed in this process.
pub fn install(instance_id: &str) -> Result<PrometheusHandle, BuildError> {
    const DURATION_BUCKETS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ];
    PrometheusBuilder::new()
        .add_global_label("instance", instance_id)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)?
        .install_recorder()
}

/// Sets `ml_active_tasks`.
pub fn set_active(active: u32) {
    gauge!(ACTIVE_TASKS).set(f64::from(active));
}

/// Sets `ml_queue_size`.
pub fn set_queue_size(depth: u64) {
    gauge!(QUEUE_SIZE).set(depth as f64);
}

/// Records one queue wait.
pub fn record_queue_wait(wait: Duration) {
    histogram!(QUEUE_WAIT).record(wait.as_secs_f64());
}

/// Records a task that finished on this node (`status`: `success|timeout|error`).
pub fn record_processed(status: &'static str, took: Duration) {
    counter!(TASKS_PROCESSED, "status" => status).increment(1);
    histogram!(TASK_DURATION).record(took.as_secs_f64());
}

/// Counts a forward to a peer by outcome.
pub fn record_forward(outcome: &'static str) {
    counter!(TASKS_FORWARDED, "outcome" => outcome).increment(1);
}

/// Counts a task received from a peer by outcome.
pub fn record_received(outcome: &'static str) {
    counter!(TASKS_RECEIVED, "outcome" => outcome).increment(1);
}

/// Counts a retry.
pub fn record_retry() {
    counter!(FORWARD_RETRIES).increment(1);
}

/// Counts a hedge by what became of it: `sent`, then `won` when the hedge answered first.
pub fn record_hedge(outcome: &'static str) {
    counter!(HEDGES, "outcome" => outcome).increment(1);
}

/// Counts a send given up because its peer was declared dead or its breaker opened, and
/// placed again elsewhere.
pub fn record_failover() {
    counter!(FAILOVERS).increment(1);
}

/// Counts a task refused because the whole mesh was full.
pub fn record_busy() {
    counter!(TASKS_REFUSED_BUSY).increment(1);
}

/// Sets the process CPU share and resident memory.
pub fn set_process(cpu_ratio: f64, resident_bytes: u64) {
    gauge!(PROCESS_CPU).set(cpu_ratio);
    gauge!(PROCESS_MEMORY).set(resident_bytes as f64);
}

/// Sets the autoscaling gauges.
pub fn set_scaling(current: u32, slot_utilisation: f64, desired: u32) {
    gauge!(CURRENT_REPLICAS).set(f64::from(current));
    gauge!(SLOT_UTILISATION).set(slot_utilisation);
    gauge!(DESIRED_REPLICAS).set(f64::from(desired));
}

/// Counts an HTTP answer.
pub fn record_http(status: u16) {
    counter!(HTTP_RESPONSES, "code" => status.to_string()).increment(1);
}

/// Refreshes the gauges and counters read from membership: peers by state, open breakers,
/// gossip packets, gossip restarts and this node's own stalls.
pub fn update_mesh_gauges(
    peers: &[spheromesh_mesh::membership::Peer],
    open_breakers: usize,
    gossip: &spheromesh_mesh::membership::GossipStats,
    gossip_restarts: u64,
    stalls: u64,
) {
    counter!(STALLS).absolute(stalls);
    let (mut ready, mut draining, mut starting) = (0u32, 0u32, 0u32);
    for peer in peers {
        if peer.view.draining {
            draining += 1;
        } else if peer.view.ready {
            ready += 1;
        } else {
            starting += 1;
        }
    }
    gauge!(PEERS, "state" => "ready").set(f64::from(ready));
    gauge!(PEERS, "state" => "draining").set(f64::from(draining));
    gauge!(PEERS, "state" => "starting").set(f64::from(starting));
    gauge!(BREAKERS_OPEN).set(open_breakers as f64);
    counter!(GOSSIP_PACKETS, "kind" => "sent").absolute(gossip.sent);
    counter!(GOSSIP_PACKETS, "kind" => "received").absolute(gossip.received);
    counter!(GOSSIP_PACKETS, "kind" => "dropped_unauthenticated")
        .absolute(gossip.dropped_unauthenticated);
    counter!(GOSSIP_PACKETS, "kind" => "dropped_replay").absolute(gossip.dropped_replay);
    counter!(GOSSIP_PACKETS, "kind" => "dropped_malformed").absolute(gossip.dropped_malformed);
    counter!(GOSSIP_RESTARTS).absolute(gossip_restarts);
}

/// Copies the QUIC server's counters into the registry.
pub fn update_quic_counters(server: &spheromesh_mesh::transport::ServerMetrics) {
    counter!(QUIC_HANDSHAKE_FAILURES).absolute(server.handshake_failures());
    counter!(QUIC_BAD_FRAMES).absolute(server.bad_frames());
}

/// Copies the broker consumer's status into `ml_queue_size` and the `mesh_broker_*` series.
pub fn update_broker(status: &crate::broker::BrokerStatusSnapshot) {
    if let Some(depth) = status.queue_depth {
        gauge!(QUEUE_SIZE).set(depth as f64);
    }
    gauge!(BROKER_CONNECTED).set(if status.connected { 1.0 } else { 0.0 });
    gauge!(BROKER_UNACKED).set(f64::from(status.in_hand));
    counter!(BROKER_CALLBACKS, "outcome" => "ok").absolute(status.callbacks_ok);
    counter!(BROKER_CALLBACKS, "outcome" => "failed").absolute(status.callbacks_failed);
    counter!(BROKER_DEAD_LETTERED).absolute(status.dead_lettered);
    counter!(BROKER_REQUEUED).absolute(status.requeued);
    counter!(BROKER_FROM_CACHE).absolute(status.answered_from_cache);
    counter!(BROKER_RECONNECTS).absolute(status.reconnects);
}
