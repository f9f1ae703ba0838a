//! Where a task runs: the node's side of routing. The decisions are the pure routing
//! [`Plan`] of `spheromesh_mesh::routing`; `driver.rs` carries them out; this file supplies
//! what they need from the node (views from gossip and the peer table, the executor, QUIC
//! sends, membership changes) and runs the tasks that peers forward here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use spheromesh_mesh::membership::{LoadReport, Membership, PeerChanges};
use spheromesh_mesh::protocol::{FailureKind, TaskRequest, TaskResponse};
use spheromesh_mesh::routing::{self, Estimate, HedgeBudget, Inputs, NodeId, Plan, Policy};
use spheromesh_mesh::transport::ForwardClient;
use tokio::sync::watch;
use tracing::{debug, info, info_span, warn, Instrument};

use super::driver::{self, Attempt, DriverEvent, Env, HealthSignal, SendResult};
use super::engine::Engine;
use super::executor::{Admission, Executor};
use super::metrics;
use super::peers::PeerTable;
use super::stats::WorkCounters;
use super::task::{SegmentTask, TaskError, TaskResult, TaskRunner};

/// Service time assumed for a node that has not measured one yet.
pub const DEFAULT_SERVICE: Duration = Duration::from_millis(500);

/// A node that took client work within this window gossips `entry` (see
/// `routing::Estimate::senders`).
pub const ENTRY_WINDOW: Duration = Duration::from_secs(10);

/// Routes tasks for one node; shared by the HTTP API, the broker consumer and the QUIC
/// server.
#[derive(Debug)]
pub struct Dispatcher {
    instance_id: String,
    executor: Arc<Executor>,
    membership: Arc<Membership>,
    client: ForwardClient,
    peers: Arc<PeerTable>,
    rng: Mutex<StdRng>,
    hedges: Mutex<HedgeBudget>,
    started: Instant,
    /// Milliseconds after `started` of the last client task, plus one (0: none yet).
    last_entry_ms: AtomicU64,
    counters: WorkCounters,
}

impl Dispatcher {
    /// A dispatcher for the node `instance_id`.
    pub fn new(
        instance_id: String,
        executor: Arc<Executor>,
        membership: Arc<Membership>,
        client: ForwardClient,
        peers: Arc<PeerTable>,
    ) -> Self {
        Self {
            instance_id,
            executor,
            membership,
            client,
            peers,
            rng: Mutex::new(StdRng::from_entropy()),
            hedges: Mutex::new(HedgeBudget::default()),
            started: Instant::now(),
            last_entry_ms: AtomicU64::new(0),
            counters: WorkCounters::default(),
        }
    }

    /// What this node has run, received and sent since it started.
    pub fn counters(&self) -> &WorkCounters {
        &self.counters
    }

    /// The load this node gossips: the executor's, and whether it takes client work.
    pub fn load_report(&self) -> LoadReport {
        LoadReport {
            entry: self.is_entry(),
            ..self.executor.load_report()
        }
    }

    /// Whether this node took client work within [`ENTRY_WINDOW`].
    pub fn is_entry(&self) -> bool {
        match self.last_entry_ms.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let since_start = self.started.elapsed().as_millis();
                since_start.saturating_sub(u128::from(at - 1)) < ENTRY_WINDOW.as_millis()
            }
        }
    }

    /// The local executor.
    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// The membership handle.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// The per-peer table (in-flight counts, breakers).
    pub fn peer_table(&self) -> &Arc<PeerTable> {
        &self.peers
    }

    /// Whether this node or any routable peer has room for one more task now.
    pub fn has_room_anywhere(&self) -> bool {
        if self.executor.local_view().has_room() {
            return true;
        }
        let members = self.membership.peers();
        self.peers
            .views(&members, Instant::now())
            .iter()
            .any(|v| v.is_candidate())
    }

    /// Suggested wait before a refused client tries again: about one service time.
    pub fn retry_after(&self) -> Duration {
        let service = self.executor.service_ewma().unwrap_or(DEFAULT_SERVICE);
        service.clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    /// Runs a task that entered the mesh at this node (from HTTP or the broker), placed by
    /// `policy`: here or at one peer, with retries, failover and one hedge as the routing
    /// [`Plan`] decides.
    ///
    /// # Errors
    ///
    /// [`TaskError`]: invalid input, busy when no node has room, deadline exceeded, or the
    /// task's own failure on the node that ran it.
    pub async fn place(&self, task: SegmentTask, policy: Policy) -> Result<TaskResult, TaskError> {
        let span = info_span!(
            "task",
            task_id = %task.task_id,
            entry_node = %self.instance_id,
            processed_by = tracing::field::Empty,
        );
        let started = Instant::now();
        let outcome = self
            .place_in_span(task, policy)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        let took_ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Ok(result) => {
                span.record(
                    "processed_by",
                    tracing::field::display(&result.processed_by),
                );
                info!(hops = result.hops, took_ms, "task done");
            }
            Err(error) => info!(code = error.code(), %error, took_ms, "task not done"),
        }
        outcome
    }

    async fn place_in_span(
        &self,
        task: SegmentTask,
        policy: Policy,
    ) -> Result<TaskResult, TaskError> {
        Engine::precheck(self.executor.engine().limits(), &task.image, task.threshold)?;
        let since_start = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_entry_ms
            .store(since_start.saturating_add(1), Ordering::Relaxed);
        self.lock_hedges().on_task();
        let deadline = task.deadline;
        let env = TaskEnv {
            dispatcher: self,
            request: TaskRequest {
                task_id: task.task_id,
                image: task.image,
                threshold: task.threshold,
                simplify_tolerance: task.simplify_tolerance,
                deadline_ms: 0,
                hops: 1,
                entry_node: self.instance_id.clone(),
                refuse_above_ms: None,
            },
            deadline,
        };
        let mut health = Health {
            members: self.membership.subscribe(),
            breakers: self.peers.breaker_openings(),
        };
        let mut rng = {
            let mut shared = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            StdRng::from_rng(&mut *shared).unwrap_or_else(|_| StdRng::from_entropy())
        };
        let plan = Plan::new(policy, deadline);
        driver::drive(
            &env,
            &mut health,
            plan,
            deadline,
            self.retry_after(),
            &mut rng,
        )
        .await
    }

    fn lock_hedges(&self) -> std::sync::MutexGuard<'_, HedgeBudget> {
        self.hedges.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a task that a peer forwarded here; it is never forwarded again.
    pub async fn run_forwarded(&self, request: TaskRequest) -> TaskResponse {
        let span = info_span!(
            "forwarded_task",
            task_id = %request.task_id,
            entry_node = %request.entry_node,
            processed_by = %self.instance_id,
        );
        let started = Instant::now();
        let response = self
            .run_forwarded_in_span(request)
            .instrument(span.clone())
            .await;
        let _entered = span.enter();
        let took_ms = started.elapsed().as_millis() as u64;
        match &response {
            TaskResponse::Done { .. } => info!(took_ms, "forwarded task done"),
            TaskResponse::Busy { .. } => debug!("forwarded task refused: busy"),
            TaskResponse::Failed { kind, message } => {
                info!(?kind, %message, took_ms, "forwarded task not done");
            }
        }
        response
    }

    async fn run_forwarded_in_span(&self, request: TaskRequest) -> TaskResponse {
        if self.executor.is_draining() {
            metrics::record_received("shutting_down");
            return TaskResponse::Failed {
                kind: FailureKind::ShuttingDown,
                message: format!("{} is draining", self.instance_id),
            };
        }
        let refuse_above = request.refuse_above_ms.map(Duration::from_millis);
        let default_service = self.executor.service_ewma().unwrap_or(DEFAULT_SERVICE);
        let refused = routing::refuses(&self.executor.local_view(), refuse_above, default_service);
        let admission = if refused {
            None
        } else {
            self.executor.try_admit()
        };
        let Some(admission) = admission else {
            metrics::record_received(if refused { "refused" } else { "busy" });
            let retry_after_ms = u64::try_from(self.retry_after().as_millis()).unwrap_or(u64::MAX);
            return TaskResponse::Busy {
                retry_after_ms,
                active_now: Some(self.executor.active()),
            };
        };
        let hops = request.hops;
        let deadline = request.deadline_from(Instant::now());
        match self.run_admitted(admission, request, hops, deadline).await {
            Ok(result) => {
                metrics::record_received("done");
                self.counters.record_forwarded_in();
                let polygons_json = serde_json::to_vec(&result.polygons).unwrap_or_default();
                TaskResponse::Done {
                    polygons_json,
                    width: result.width,
                    height: result.height,
                    processing_ms: u64::try_from(result.processing_time.as_millis())
                        .unwrap_or(u64::MAX),
                    processed_by: result.processed_by,
                    active_after: Some(self.executor.active()),
                }
            }
            Err(error) => {
                metrics::record_received("failed");
                self.counters.record_forwarded_in();
                let kind = match &error {
                    e if e.is_permanent() => FailureKind::BadImage,
                    TaskError::DeadlineExceeded => FailureKind::DeadlineExceeded,
                    TaskError::ShuttingDown => FailureKind::ShuttingDown,
                    _ => FailureKind::Internal,
                };
                TaskResponse::Failed {
                    kind,
                    message: error.to_string(),
                }
            }
        }
    }

    /// Runs an admitted task here and records its outcome.
    async fn run_admitted(
        &self,
        admission: Admission,
        request: TaskRequest,
        hops: u8,
        deadline: Instant,
    ) -> Result<TaskResult, TaskError> {
        let TaskRequest {
            task_id,
            image,
            threshold,
            simplify_tolerance,
            entry_node,
            ..
        } = request;
        let started = Instant::now();
        let outcome = self
            .executor
            .run(admission, image, threshold, simplify_tolerance, deadline)
            .await;
        let status = match &outcome {
            Ok(_) => "success",
            Err(TaskError::DeadlineExceeded) => "timeout",
            Err(_) => "error",
        };
        let took = started.elapsed();
        metrics::record_processed(status, took);
        self.counters.record_run(outcome.is_ok(), took);
        match outcome {
            Ok(run) => {
                debug!(%task_id, hops, queue_wait_ms = run.queue_wait.as_millis(), "task done");
                Ok(TaskResult {
                    polygons: run.output.polygons,
                    width: run.output.width,
                    height: run.output.height,
                    processing_time: run.total,
                    processed_by: self.instance_id.clone(),
                    entry_node,
                    hops,
                })
            }
            Err(error) => {
                debug!(%task_id, hops, %error, "task failed");
                Err(error)
            }
        }
    }

    /// Sends the task to `target` once and reports how it went to the peer table.
    async fn forward_once(
        &self,
        target: NodeId,
        mut request: TaskRequest,
        deadline: Instant,
    ) -> SendResult {
        let members = self.membership.peers();
        let Some(addr) = members
            .iter()
            .find(|p| p.id == target)
            .and_then(|p| p.addresses.quic)
        else {
            return SendResult::Failed;
        };
        let now = Instant::now();
        let Some(inflight) = self.peers.begin(&target, now) else {
            return SendResult::Failed;
        };
        let remaining = deadline.saturating_duration_since(now);
        request.deadline_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        let answer = self
            .client
            .forward(addr, target.as_str(), &request, remaining)
            .await;
        drop(inflight);
        self.counters.record_forwarded_out();
        match answer {
            Ok(TaskResponse::Done {
                polygons_json,
                width,
                height,
                processing_ms,
                processed_by,
                active_after,
            }) => {
                self.peers.on_success(&target);
                if let Some(active) = active_after {
                    self.peers.on_answer(&target, active, Instant::now());
                }
                metrics::record_forward("done");
                match serde_json::from_slice(&polygons_json) {
                    Ok(polygons) => SendResult::Done(TaskResult {
                        polygons,
                        width,
                        height,
                        processing_time: Duration::from_millis(processing_ms),
                        processed_by,
                        entry_node: self.instance_id.clone(),
                        hops: request.hops,
                    }),
                    Err(error) => {
                        warn!(%target, %error, "peer answered invalid polygons");
                        self.peers.on_failure(&target, Instant::now());
                        SendResult::Failed
                    }
                }
            }
            Ok(TaskResponse::Busy { active_now, .. }) => {
                self.peers.on_success(&target);
                if let Some(active) = active_now {
                    self.peers.on_answer(&target, active, Instant::now());
                }
                metrics::record_forward("busy");
                SendResult::Busy
            }
            Ok(TaskResponse::Failed { kind, message }) => {
                metrics::record_forward("failed");
                match kind {
                    FailureKind::BadImage => SendResult::Fatal(TaskError::BadImage(message)),
                    FailureKind::DeadlineExceeded => SendResult::Fatal(TaskError::DeadlineExceeded),
                    FailureKind::ShuttingDown => SendResult::Failed,
                    FailureKind::Internal => {
                        warn!(%target, %message, "peer failed the task");
                        self.peers.on_failure(&target, Instant::now());
                        SendResult::Failed
                    }
                }
            }
            Err(error) => {
                metrics::record_forward("error");
                if error.is_peer_failure() {
                    self.peers.on_failure(&target, Instant::now());
                    self.client.evict(addr);
                }
                warn!(%target, error = %error, retryable = error.is_retryable(), "forward failed");
                if error.is_retryable() {
                    SendResult::Failed
                } else {
                    SendResult::Fatal(TaskError::Internal(error.to_string()))
                }
            }
        }
    }
}

/// One task's view of the node, for the driver.
struct TaskEnv<'a> {
    dispatcher: &'a Dispatcher,
    request: TaskRequest,
    deadline: Instant,
}

impl Env for TaskEnv<'_> {
    fn with_inputs<T>(
        &self,
        now: Instant,
        hedge_allowed: bool,
        decide: impl FnOnce(&Inputs<'_>) -> T,
    ) -> T {
        let d = self.dispatcher;
        let members = d.membership.peers();
        let views = d.peers.views(&members, now);
        let local = d.executor.local_view();
        let senders = 1 + views.iter().filter(|v| v.entry).count();
        // Peers that have not measured a service time yet are assumed as fast as this
        // node, not slower: a node that has measured nothing yet is new.
        let estimate = Estimate {
            default_service: d.executor.service_ewma().unwrap_or(DEFAULT_SERVICE),
            senders: u32::try_from(senders).unwrap_or(u32::MAX),
        };
        let inputs = Inputs {
            local: &local,
            peers: &views,
            estimate,
            now,
            hedge_allowed,
        };
        decide(&inputs)
    }

    fn hedge_allowed(&self) -> bool {
        self.dispatcher.lock_hedges().can_hedge()
    }

    fn take_hedge(&self) {
        self.dispatcher.lock_hedges().take();
    }

    fn start_local(&self) -> Option<Attempt<'_>> {
        let admission = self.dispatcher.executor.try_admit()?;
        let request = self.request.clone();
        Some(Box::pin(async move {
            match self
                .dispatcher
                .run_admitted(admission, request, 0, self.deadline)
                .await
            {
                Ok(result) => SendResult::Done(result),
                Err(error) => SendResult::Fatal(error),
            }
        }))
    }

    fn start_send(&self, peer: &NodeId, refuse_above: Option<Duration>) -> Attempt<'_> {
        debug!(task_id = %self.request.task_id, %peer, ?refuse_above, "sending");
        let request = TaskRequest {
            refuse_above_ms: refuse_above
                .map(|limit| u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)),
            ..self.request.clone()
        };
        Box::pin(
            self.dispatcher
                .forward_once(peer.clone(), request, self.deadline),
        )
    }

    fn is_lost(&self, peer: &NodeId) -> bool {
        let d = self.dispatcher;
        !d.membership.is_live(peer) || d.peers.is_open(peer, Instant::now())
    }

    fn record(&self, event: DriverEvent) {
        match event {
            DriverEvent::Retry => metrics::record_retry(),
            DriverEvent::Hedged => metrics::record_hedge("sent"),
            DriverEvent::HedgeWon => metrics::record_hedge("won"),
            DriverEvent::Failover => metrics::record_failover(),
            DriverEvent::Busy => metrics::record_busy(),
        }
    }
}

/// Membership refreshes and breaker openings, for the driver's failover.
struct Health {
    members: PeerChanges,
    breakers: watch::Receiver<u64>,
}

impl HealthSignal for Health {
    async fn changed(&mut self) {
        tokio::select! {
            () = self.members.changed() => {}
            changed = self.breakers.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

impl TaskRunner for Dispatcher {
    fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Free slots here, plus those of routable peers that do not consume the broker queue
    /// themselves (they gossip no queue depth). A consuming peer pulls work for its own
    /// free slots; counting them here too would let two consumers claim the same slot, and
    /// one of the two tasks would wait behind the other (measured: drain makespan 1.16-1.32x
    /// the lower bound with the double count).
    fn startable_now(&self) -> u32 {
        let now = Instant::now();
        let members = self.membership.peers();
        let views = self.peers.views(&members, now);
        let remote: u64 = views
            .iter()
            .filter(|view| !view.pulls_work && view.is_candidate())
            .map(|v| u64::from(v.capacity).saturating_sub(v.outstanding()))
            .sum();
        let total = u64::from(self.executor.free_slots()) + remote;
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    async fn run(&self, task: SegmentTask, policy: Policy) -> Result<TaskResult, TaskError> {
        self.place(task, policy).await
    }
}

impl spheromesh_mesh::transport::TaskHandler for Dispatcher {
    async fn handle(&self, req: TaskRequest, remote: std::net::SocketAddr) -> TaskResponse {
        debug!(task_id = %req.task_id, %remote, entry = %req.entry_node, "task from peer");
        self.run_forwarded(req).await
    }
}
