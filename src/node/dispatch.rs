//! Where a task runs: here, or on the peer that power-of-two-choices picks, with one
//! fallback to the second choice, retries after a failed peer, and busy when the whole
//! mesh is full.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use spheromesh_mesh::membership::{Membership, Peer};
use spheromesh_mesh::protocol::{FailureKind, TaskRequest, TaskResponse};
use spheromesh_mesh::routing::{self, Decision, NodeId, RetryBudget, MAX_ATTEMPTS};
use spheromesh_mesh::transport::ForwardClient;
use tracing::{debug, warn};

use super::engine::Engine;
use super::executor::{Admission, Executor};
use super::metrics;
use super::peers::PeerTable;
use super::task::{SegmentTask, TaskError, TaskResult, TaskRunner};

/// Service time assumed for a node that has not measured one yet.
pub const DEFAULT_SERVICE: Duration = Duration::from_millis(500);

/// Upper bound on routing rounds for one task (each round either runs, sends, or ends the
/// task; a round repeats only when a local slot was taken between the view and admission).
const MAX_ROUNDS: usize = 8;

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
}

/// How a task is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Power of two choices on the expected completion time (HTTP work).
    Best,
    /// A free slot first, here or at a peer that does not pull work itself, then as
    /// [`Placement::Best`]. For work the broker consumer pulled because
    /// [`TaskRunner::startable_now`] counted such a slot: comparing service-time EWMAs,
    /// which vary with the task mix, could otherwise send it to queue behind a long task
    /// while the slot it was pulled for stays empty.
    FreeSlot,
}

/// What one send to a peer came to.
enum Step {
    Done(TaskResult),
    Busy,
    Retry,
    Fail(TaskError),
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

    /// Runs a task that entered the mesh at this node.
    ///
    /// # Errors
    ///
    /// [`TaskError`]: invalid input, busy when no node has room, deadline exceeded, or an
    /// internal failure when every attempt failed.
    pub async fn submit(&self, task: SegmentTask) -> Result<TaskResult, TaskError> {
        self.route(task, Placement::Best).await
    }

    async fn route(
        &self,
        task: SegmentTask,
        placement: Placement,
    ) -> Result<TaskResult, TaskError> {
        Engine::precheck(self.executor.engine().limits(), &task.image, task.threshold)?;
        let deadline = task.deadline;
        let mut request = TaskRequest {
            task_id: task.task_id,
            image: task.image,
            threshold: task.threshold,
            simplify_tolerance: task.simplify_tolerance,
            deadline_ms: 0,
            hops: 1,
            entry_node: self.instance_id.clone(),
        };
        let mut budget = RetryBudget::new(deadline);
        if placement == Placement::FreeSlot {
            if let Some(admission) = self.executor.try_admit_to_slot() {
                return self.run_admitted(admission, request, 0, deadline).await;
            }
            if let Some(target) = self.free_non_consuming_peer() {
                budget.record_attempt(target.clone());
                let members = self.membership.peers();
                match self
                    .forward(&target, &members, &mut request, deadline)
                    .await
                {
                    Step::Done(result) => return Ok(result),
                    Step::Fail(error) => return Err(error),
                    Step::Busy | Step::Retry => {}
                }
            }
        }
        for _ in 0..MAX_ROUNDS {
            let now = Instant::now();
            if now >= deadline {
                return Err(TaskError::DeadlineExceeded);
            }
            let members = self.membership.peers();
            let mut views = self.peers.views(&members, now);
            views.retain(|v| !budget.has_tried(&v.id));
            let local = self.executor.local_view();
            let decision = if budget.attempts() >= MAX_ATTEMPTS {
                routing::local_only(&local)
            } else {
                let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
                // Peers that have not measured a service time yet are assumed as fast as
                // this node, not slower: a node that has measured nothing yet is new.
                let default_service = self.executor.service_ewma().unwrap_or(DEFAULT_SERVICE);
                let pick = routing::pick(&local, &views, &mut *rng, default_service);
                debug!(task_id = %request.task_id, ?pick, "routing");
                pick.decision
            };
            match decision {
                Decision::Local => {
                    if let Some(admission) = self.executor.try_admit() {
                        if budget.attempts() > 0 {
                            metrics::record_retry();
                        }
                        return self.run_admitted(admission, request, 0, deadline).await;
                    }
                }
                Decision::Forward { first, second } => {
                    for target in std::iter::once(first).chain(second) {
                        if budget.attempts() > 0 {
                            let expected = self.executor.service_ewma().unwrap_or(DEFAULT_SERVICE);
                            if !budget.may_retry(Instant::now(), expected) {
                                break;
                            }
                            metrics::record_retry();
                        }
                        budget.record_attempt(target.clone());
                        match self
                            .forward(&target, &members, &mut request, deadline)
                            .await
                        {
                            Step::Done(result) => return Ok(result),
                            Step::Busy => continue,
                            Step::Retry => break,
                            Step::Fail(error) => return Err(error),
                        }
                    }
                }
                Decision::Busy => break,
            }
        }
        if Instant::now() >= deadline {
            return Err(TaskError::DeadlineExceeded);
        }
        metrics::record_busy();
        Err(TaskError::Busy {
            retry_after: self.retry_after(),
        })
    }

    /// The best-scored routable peer with a free slot that does not consume the broker
    /// queue itself.
    fn free_non_consuming_peer(&self) -> Option<NodeId> {
        let members = self.membership.peers();
        let views = self.peers.views(&members, Instant::now());
        let default_service = self.executor.service_ewma().unwrap_or(DEFAULT_SERVICE);
        members
            .iter()
            .zip(&views)
            .filter(|(peer, view)| {
                peer.queue_depth.is_none()
                    && view.is_candidate()
                    && view.outstanding() < u64::from(view.capacity)
            })
            .map(|(_, view)| (routing::score(view, default_service), &view.id))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, id)| id.clone())
    }

    /// Runs a task that a peer forwarded here; it is never forwarded again.
    pub async fn run_forwarded(&self, request: TaskRequest) -> TaskResponse {
        if self.executor.is_draining() {
            metrics::record_received("shutting_down");
            return TaskResponse::Failed {
                kind: FailureKind::ShuttingDown,
                message: format!("{} is draining", self.instance_id),
            };
        }
        let Some(admission) = self.executor.try_admit() else {
            metrics::record_received("busy");
            let retry_after_ms = u64::try_from(self.retry_after().as_millis()).unwrap_or(u64::MAX);
            return TaskResponse::Busy { retry_after_ms };
        };
        let hops = request.hops;
        let deadline = request.deadline_from(Instant::now());
        match self.run_admitted(admission, request, hops, deadline).await {
            Ok(result) => {
                metrics::record_received("done");
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
        metrics::record_processed(status, started.elapsed());
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

    /// Sends the task to `target` once.
    async fn forward(
        &self,
        target: &NodeId,
        members: &[Peer],
        request: &mut TaskRequest,
        deadline: Instant,
    ) -> Step {
        let Some(addr) = members
            .iter()
            .find(|p| &p.id == target)
            .and_then(|p| p.addresses.quic)
        else {
            return Step::Retry;
        };
        let now = Instant::now();
        let Some(inflight) = self.peers.begin(target, now) else {
            return Step::Retry;
        };
        let remaining = deadline.saturating_duration_since(now);
        request.deadline_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        let answer = self
            .client
            .forward(addr, target.as_str(), request, remaining)
            .await;
        drop(inflight);
        match answer {
            Ok(TaskResponse::Done {
                polygons_json,
                width,
                height,
                processing_ms,
                processed_by,
                active_after,
            }) => {
                self.peers.on_success(target);
                if let Some(active) = active_after {
                    self.peers.on_answer(target, active, Instant::now());
                }
                metrics::record_forward("done");
                match serde_json::from_slice(&polygons_json) {
                    Ok(polygons) => Step::Done(TaskResult {
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
                        self.peers.on_failure(target, Instant::now());
                        Step::Retry
                    }
                }
            }
            Ok(TaskResponse::Busy { .. }) => {
                self.peers.on_success(target);
                metrics::record_forward("busy");
                Step::Busy
            }
            Ok(TaskResponse::Failed { kind, message }) => {
                metrics::record_forward("failed");
                match kind {
                    FailureKind::BadImage => Step::Fail(TaskError::BadImage(message)),
                    FailureKind::DeadlineExceeded => Step::Fail(TaskError::DeadlineExceeded),
                    FailureKind::ShuttingDown => Step::Retry,
                    FailureKind::Internal => {
                        warn!(%target, %message, "peer failed the task");
                        self.peers.on_failure(target, Instant::now());
                        Step::Retry
                    }
                }
            }
            Err(error) => {
                metrics::record_forward("error");
                if error.is_peer_failure() {
                    self.peers.on_failure(target, Instant::now());
                    self.client.evict(addr);
                }
                warn!(%target, error = %error, retryable = error.is_retryable(), "forward failed");
                if error.is_retryable() {
                    Step::Retry
                } else {
                    Step::Fail(TaskError::Internal(error.to_string()))
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
        let remote: u64 = members
            .iter()
            .zip(&views)
            .filter(|(peer, view)| peer.queue_depth.is_none() && view.is_candidate())
            .map(|(_, v)| u64::from(v.capacity).saturating_sub(v.outstanding()))
            .sum();
        let total = u64::from(self.executor.free_slots()) + remote;
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    async fn run(&self, task: SegmentTask) -> Result<TaskResult, TaskError> {
        self.route(task, Placement::FreeSlot).await
    }
}

impl spheromesh_mesh::transport::TaskHandler for Dispatcher {
    async fn handle(&self, req: TaskRequest, remote: std::net::SocketAddr) -> TaskResponse {
        debug!(task_id = %req.task_id, %remote, entry = %req.entry_node, "task from peer");
        self.run_forwarded(req).await
    }
}
