//! One running node: binds its three addresses, joins gossip, serves HTTP and peers, and
//! drains on a signal.
//!
//! Drain order (backend contract section 6, mesh issue item 8): `/health/ready` turns 503,
//! the executor admits nothing and gossip says `draining`; every HTTP answer says
//! `Connection: close` and new requests go to peers; once peers have stopped routing here
//! (three gossip rounds), `drain_listen` has passed and local work is done, the HTTP
//! listener closes; in-flight work gets `drain_grace` in all to finish; then the QUIC
//! server and gossip stop and `run` returns.

mod config;
mod credentials;
mod observe;
mod signals;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use spheromesh_mesh::membership::{Membership, MembershipConfig, NodeDescription, NodeStatus};
use spheromesh_mesh::routing::{BreakerConfig, BreakerState};
use spheromesh_mesh::security::ClusterKey;
use spheromesh_mesh::transport::{
    self, ForwardClient, MeshEndpoint, ServerHandle, TransportConfig,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::NodeConfig;
pub use signals::shutdown_signal;

use crate::broker::BrokerStatus;
use crate::http::{self, AppInner, Dashboard, NodeAddresses};
use crate::node::{metrics, Dispatcher, Engine, Executor, PeerTable};
use crate::uploads::UploadsRoot;

/// Something else the node runs until shutdown (the RabbitMQ consumer).
pub type Sidecar =
    Box<dyn FnOnce(Arc<Dispatcher>, CancellationToken) -> tokio::task::JoinHandle<()> + Send>;

/// Runs a node until `shutdown` resolves, then drains and returns.
///
/// `sidecar` (the broker consumer) is started once the node serves, and is cancelled
/// first when draining starts.
///
/// # Errors
///
/// If an address cannot be bound, the credentials cannot be read, or gossip cannot start.
pub async fn run(
    config: NodeConfig,
    engine: Engine,
    broker: Option<Arc<BrokerStatus>>,
    sidecar: Option<Sidecar>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let prometheus = metrics::install(&config.instance_id).context("installing metrics")?;
    let (ca_pem, credentials) = credentials::load(&config).await?;

    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_listen))?;
    let http_addr = config.advertised(http_listener.local_addr()?);
    let transport_config =
        TransportConfig::sized_to_failure_detector(config.dead_after, config.drain_grace);
    let endpoint = MeshEndpoint::bind(config.quic_listen, &credentials, &ca_pem, transport_config)
        .with_context(|| format!("binding QUIC on {}", config.quic_listen))?;
    let quic_addr = config.advertised(endpoint.local_addr()?);
    let gossip_addr = config.advertised(config.gossip_listen);
    let cluster_key = match config.cluster_key.clone() {
        Some(key) => key,
        None => {
            warn!("no cluster key: gossip sealed with a random key, this node will not join peers");
            ClusterKey::generate().context("generating a cluster key")?
        }
    };
    let membership = Membership::start(MembershipConfig {
        node_id: config.instance_id.clone(),
        cluster_id: config.cluster_id.clone(),
        gossip_listen: config.gossip_listen,
        gossip_advertise: gossip_addr,
        seeds: config.seeds.clone(),
        gossip_interval: config.gossip_interval,
        dead_after: config.dead_after,
        cluster_key: Some(cluster_key),
        http_addr: Some(http_addr),
        quic_addr: Some(quic_addr),
        description: NodeDescription {
            device: Some(engine.device_name()),
            model: Some(crate::node::model_label(&config.model_path)),
        },
        ..MembershipConfig::default()
    })
    .await
    .context("starting gossip")?;
    let membership = Arc::new(membership);

    let engine_is_synthetic = matches!(engine, Engine::Synthetic { .. });
    let executor = Executor::new(engine, config.limits);
    if let Some(measured) = config.measured_service {
        executor.seed_service(measured);
    }
    let peers = PeerTable::with_report_slack(BreakerConfig::default(), config.gossip_interval)
        .context("breaker settings")?;
    let dispatcher = Arc::new(Dispatcher::new(
        config.instance_id.clone(),
        Arc::clone(&executor),
        Arc::clone(&membership),
        ForwardClient::new(&endpoint),
        peers,
    ));
    let stop = CancellationToken::new();
    let quic_server = transport::serve(endpoint, Arc::clone(&dispatcher), stop.child_token());

    let state = Arc::new(AppInner {
        dispatcher: Arc::clone(&dispatcher),
        prometheus: prometheus.clone(),
        model_path: config.model_path.clone(),
        engine_is_synthetic,
        request_timeout: config.request_timeout,
        ready: AtomicBool::new(false),
        uploads_root: config
            .uploads_root
            .clone()
            .map(|root| UploadsRoot::new(root, executor.engine().limits().max_bytes as u64)),
        addresses: NodeAddresses {
            http: http_addr,
            quic: quic_addr,
            gossip: gossip_addr,
        },
        broker: broker.clone(),
        system: Mutex::new(sysinfo::System::new()),
        body_budget: Arc::new(tokio::sync::Semaphore::new(config.http_body_budget)),
        suspect_after: config.dead_after / 2,
        dashboard: Dashboard::default(),
        api_token: config.api_token.clone(),
    });
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn({
        let app = http::router(Arc::clone(&state));
        let http_stop = http_stop.clone();
        async move {
            axum::serve(http_listener, app)
                .with_graceful_shutdown(http_stop.cancelled_owned())
                .await
        }
    });

    membership.set_status(NodeStatus::Ready);
    state.ready.store(true, Ordering::Release);
    info!(
        instance_id = %config.instance_id,
        cluster = %config.cluster_id,
        %http_addr, %quic_addr, %gossip_addr,
        http_listen = %config.http_listen,
        quic_listen = %config.quic_listen,
        gossip_listen = %config.gossip_listen,
        seeds = ?config.seeds,
        generation = membership.generation(),
        engine = %executor.engine().describe(),
        slots = config.limits.capacity,
        queue_limit = config.limits.queue_limit,
        "node serving"
    );
    // One machine-readable line on stdout, for `spheromesh up` and the cluster tests.
    println!(
        "{}",
        serde_json::json!({
            "event": "ready",
            "instance_id": config.instance_id,
            "http": http_addr.to_string(),
            "quic": quic_addr.to_string(),
            "gossip": gossip_addr.to_string(),
        })
    );

    let consumer_stop = CancellationToken::new();
    let consumer = sidecar.map(|start| start(Arc::clone(&dispatcher), consumer_stop.clone()));

    tokio::select! {
        () = shutdown => {}
        () = publish_loop(
            &state,
            &dispatcher,
            &quic_server,
            broker.as_deref(),
            &prometheus,
            config.gossip_interval,
            observe::Observer::new(config.scaling.clone()),
        ) => {}
    }
    let drain_started = Instant::now();
    info!(grace = ?config.drain_grace, "draining: not ready, gossiping draining");
    state.ready.store(false, Ordering::Release);
    executor.start_draining();
    membership.set_draining();
    consumer_stop.cancel();
    if let Some(consumer) = consumer {
        if tokio::time::timeout(config.drain_grace, consumer)
            .await
            .is_err()
        {
            warn!("broker consumer did not stop within the grace period");
        }
    }
    // Peers see `draining` within a round or two and stop routing here. The listener stays
    // open for `drain_listen` and while local work runs: a client that resolved this node
    // (DNS, an endpoint list) just before it left still gets an answer, from a peer.
    tokio::time::sleep(config.gossip_interval * 3).await;
    let listen_until = drain_started + config.drain_listen;
    let grace_ends = drain_started + config.drain_grace;
    while Instant::now() < grace_ends && (Instant::now() < listen_until || executor.active() > 0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    http_stop.cancel();
    let left = config.drain_grace.saturating_sub(drain_started.elapsed());
    match tokio::time::timeout(left, http_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => warn!(%error, "HTTP server ended with an error"),
        Ok(Err(error)) => warn!(%error, "HTTP server task failed"),
        Err(_) => warn!("HTTP requests still open after the grace period"),
    }
    wait_idle(
        &executor,
        config.drain_grace.saturating_sub(drain_started.elapsed()),
    )
    .await;
    stop_quic(quic_server).await;
    stop.cancel();
    drop(state);
    drop(dispatcher);
    match Arc::try_unwrap(membership) {
        Ok(membership) => {
            if let Err(error) = membership.shutdown().await {
                warn!(%error, "gossip did not stop cleanly");
            }
        }
        Err(_) => warn!("gossip still referenced at exit; stopping it abruptly"),
    }
    info!(took = ?drain_started.elapsed(), "drained");
    Ok(())
}

async fn wait_idle(executor: &Executor, within: Duration) {
    let until = Instant::now() + within;
    while executor.active() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if executor.active() > 0 {
        warn!(
            active = executor.active(),
            "tasks still running after the grace period"
        );
    }
}

async fn stop_quic(server: ServerHandle) {
    if let Err(error) = server.shutdown().await {
        warn!(%error, "QUIC server stopped with an error");
    }
}

/// Publishes this node's load and counters once per gossip round, refreshes the mesh and
/// scaling gauges and feeds the cluster page's history; runs
/// until the caller stops polling it.
async fn publish_loop(
    state: &AppInner,
    dispatcher: &Dispatcher,
    quic_server: &ServerHandle,
    broker: Option<&BrokerStatus>,
    prometheus: &metrics_exporter_prometheus::PrometheusHandle,
    interval: Duration,
    mut observer: observe::Observer,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds: u64 = 0;
    loop {
        tick.tick().await;
        rounds += 1;
        let membership = dispatcher.membership();
        let mut report = dispatcher.load_report();
        // A consuming node always publishes a depth (0 until its first poll): peers read
        // its presence as "pulls its own work" (see Dispatcher::startable_now).
        report.queue_depth = broker.map(|b| b.snapshot().queue_depth.unwrap_or(0));
        membership.publish(&report);
        membership.publish_stats(&dispatcher.counters().snapshot());
        let peers = membership.peers();
        observer.tick(dispatcher, &peers, report.queue_depth);
        state.dashboard.tick(state);
        dispatcher.peer_table().retain(&peers);
        metrics::update_mesh_gauges(
            &peers,
            dispatcher
                .peer_table()
                .breaker_states(Instant::now())
                .into_iter()
                .filter(|(_, s)| *s != BreakerState::Closed)
                .count(),
            &membership.gossip_stats(),
            membership.restarts(),
            membership.stalls(),
        );
        metrics::update_quic_counters(quic_server.metrics());
        match broker {
            Some(broker) => metrics::update_broker(&broker.snapshot()),
            // The contract's dashboards expect the series on every node.
            None => metrics::set_queue_size(0),
        }
        if rounds.is_multiple_of(50) {
            prometheus.run_upkeep();
        }
    }
}
