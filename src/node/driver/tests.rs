//! The driver against scripted peers on tokio's paused clock: every wait below is virtual
//! time, so the timings asserted are exact and the tests take milliseconds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use spheromesh_mesh::routing::{
    Estimate, HedgeBudget, Inputs, LocalView, NodeId, PeerView, Plan, Policy,
};
use tokio::sync::watch;

use super::{drive, Attempt, DriverEvent, Env, HealthSignal, SendResult};
use crate::node::task::{TaskError, TaskResult};

const MS: Duration = Duration::from_millis(1);

/// What a scripted peer does with a task.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Done,
    Busy,
    Failed,
    BadImage,
    Never,
}

struct Scripted {
    local: LocalView,
    local_admits: bool,
    local_takes: Duration,
    peers: Vec<PeerView>,
    answers: HashMap<NodeId, (Duration, Answer)>,
    lost: Mutex<HashSet<NodeId>>,
    hedges: Mutex<HedgeBudget>,
    sends: Mutex<Vec<NodeId>>,
    events: Mutex<Vec<DriverEvent>>,
    cancelled: Arc<AtomicUsize>,
}

fn peer(id: &str, service_ms: u64) -> PeerView {
    PeerView {
        queue_limit: 4,
        ..PeerView::idle(id, 2, Some(Duration::from_millis(service_ms)))
    }
}

impl Scripted {
    /// This node is full; peers p0 (100 ms), p1 (150 ms), p2 (200 ms) answer as given.
    fn new(answers: &[(&str, u64, Answer)]) -> Self {
        Self {
            local: LocalView {
                active: 2,
                capacity: 2,
                queue_limit: 0,
                service_ewma: Some(100 * MS),
            },
            local_admits: false,
            local_takes: 100 * MS,
            peers: vec![peer("p0", 100), peer("p1", 150), peer("p2", 200)],
            answers: answers
                .iter()
                .map(|(id, after, answer)| {
                    (NodeId::new(*id), (Duration::from_millis(*after), *answer))
                })
                .collect(),
            lost: Mutex::new(HashSet::new()),
            hedges: Mutex::new(HedgeBudget::default()),
            sends: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            cancelled: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn no_hedges(self) -> Self {
        let mut empty = HedgeBudget::default();
        while empty.take() {}
        *self.hedges.lock().expect("lock") = empty;
        self
    }

    fn sent(&self) -> Vec<String> {
        let sends = self.sends.lock().expect("lock");
        sends.iter().map(|id| id.to_string()).collect()
    }

    fn events(&self) -> Vec<DriverEvent> {
        self.events.lock().expect("lock").clone()
    }
}

fn result(by: &str) -> TaskResult {
    TaskResult {
        polygons: serde_json::json!([]),
        width: 1,
        height: 1,
        processing_time: Duration::ZERO,
        processed_by: by.to_owned(),
        entry_node: "entry".to_owned(),
        hops: 1,
    }
}

/// Counts attempts dropped before they finished.
struct CancelGuard {
    count: Arc<AtomicUsize>,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Env for Scripted {
    fn with_inputs<T>(
        &self,
        now: Instant,
        hedge_allowed: bool,
        decide: impl FnOnce(&Inputs<'_>) -> T,
    ) -> T {
        decide(&Inputs {
            local: &self.local,
            peers: &self.peers,
            estimate: Estimate::single(100 * MS),
            now,
            hedge_allowed,
        })
    }

    fn hedge_allowed(&self) -> bool {
        self.hedges.lock().expect("lock").can_hedge()
    }

    fn take_hedge(&self) {
        self.hedges.lock().expect("lock").take();
    }

    fn start_local(&self) -> Option<Attempt<'_>> {
        if !self.local_admits {
            return None;
        }
        let takes = self.local_takes;
        Some(Box::pin(async move {
            tokio::time::sleep(takes).await;
            SendResult::Done(result("here"))
        }))
    }

    fn start_send(&self, peer: &NodeId, _refuse_above: Option<Duration>) -> Attempt<'_> {
        self.sends.lock().expect("lock").push(peer.clone());
        let (after, answer) = self
            .answers
            .get(peer)
            .copied()
            .unwrap_or((Duration::ZERO, Answer::Done));
        let name = peer.to_string();
        let guard = CancelGuard {
            count: Arc::clone(&self.cancelled),
            armed: true,
        };
        Box::pin(async move {
            // Moved whole (not just its field), so dropping the attempt drops it.
            let mut guard = guard;
            tokio::time::sleep(after).await;
            if let Answer::Never = answer {
                std::future::pending::<()>().await;
            }
            guard.armed = false;
            match answer {
                Answer::Done => SendResult::Done(result(&name)),
                Answer::Busy => SendResult::Busy,
                Answer::Failed => SendResult::Failed,
                Answer::BadImage => SendResult::Fatal(TaskError::BadImage("bad".into())),
                Answer::Never => unreachable!("never answers"),
            }
        })
    }

    fn is_lost(&self, peer: &NodeId) -> bool {
        self.lost.lock().expect("lock").contains(peer)
    }

    fn record(&self, event: DriverEvent) {
        self.events.lock().expect("lock").push(event);
    }
}

struct Signal(watch::Receiver<()>);

impl HealthSignal for Signal {
    async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs one task through the driver; returns its result and how long it took.
async fn run(
    env: &Scripted,
    health: watch::Receiver<()>,
    deadline_ms: u64,
) -> (Result<TaskResult, TaskError>, Duration) {
    let started = tokio::time::Instant::now();
    let deadline = started.into_std() + Duration::from_millis(deadline_ms);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let plan = Plan::new(Policy::Fastest, deadline);
    let outcome = drive(
        env,
        &mut Signal(health),
        plan,
        deadline,
        1_000 * MS,
        &mut rng,
    )
    .await;
    (outcome, started.elapsed())
}

/// Runs one task while, 50 ms in, membership declares `peer` lost and signals a change.
async fn run_with_loss_at_50ms(
    env: &Scripted,
    peer: &str,
) -> (Result<TaskResult, TaskError>, Duration) {
    let (tx, rx) = watch::channel(());
    tokio::join!(run(env, rx, 10_000), async {
        tokio::time::sleep(50 * MS).await;
        env.lost.lock().expect("lock").insert(NodeId::new(peer));
        tx.send(()).expect("driver listens");
    })
    .0
}

fn quiet() -> watch::Receiver<()> {
    let (tx, rx) = watch::channel(());
    std::mem::forget(tx);
    rx
}

fn by(outcome: &Result<TaskResult, TaskError>) -> &str {
    &outcome.as_ref().expect("a result").processed_by
}

#[tokio::test(start_paused = true)]
async fn the_fastest_peer_runs_the_task() {
    let env = Scripted::new(&[("p0", 100, Answer::Done)]);
    let (outcome, took) = run(&env, quiet(), 10_000).await;
    assert_eq!(by(&outcome), "p0");
    assert_eq!(took, 100 * MS);
    assert_eq!(env.sent(), ["p0"]);
    assert!(env.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_busy_answer_moves_the_task_to_the_next_best_peer() {
    let env = Scripted::new(&[("p0", 5, Answer::Busy), ("p1", 150, Answer::Done)]);
    let (outcome, took) = run(&env, quiet(), 10_000).await;
    assert_eq!(by(&outcome), "p1");
    assert_eq!(took, 155 * MS);
    assert_eq!(env.sent(), ["p0", "p1"]);
    assert_eq!(env.events(), [DriverEvent::Retry]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_hedged_and_the_loser_cancelled() {
    // p0 never answers (a stopped process). Hedge delay for its 100 ms expectation: 200 ms.
    let env = Scripted::new(&[("p0", 0, Answer::Never), ("p1", 150, Answer::Done)]);
    let (outcome, took) = run(&env, quiet(), 10_000).await;
    assert_eq!(by(&outcome), "p1");
    assert_eq!(took, 350 * MS);
    assert_eq!(env.sent(), ["p0", "p1"]);
    assert_eq!(env.events(), [DriverEvent::Hedged, DriverEvent::HedgeWon]);
    assert_eq!(
        env.cancelled.load(Ordering::SeqCst),
        1,
        "p0's send is dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_answer_wins_when_the_late_peer_answers_before_the_hedge() {
    let env = Scripted::new(&[("p0", 250, Answer::Done), ("p1", 150, Answer::Done)]);
    let (outcome, took) = run(&env, quiet(), 10_000).await;
    assert_eq!(by(&outcome), "p0");
    assert_eq!(took, 250 * MS);
    assert_eq!(
        env.cancelled.load(Ordering::SeqCst),
        1,
        "the hedge to p1 is dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_declared_dead_fails_over_at_once() {
    let env = Scripted::new(&[("p0", 0, Answer::Never), ("p1", 150, Answer::Done)]).no_hedges();
    let (outcome, took) = run_with_loss_at_50ms(&env, "p0").await;
    assert_eq!(by(&outcome), "p1");
    assert_eq!(took, 200 * MS, "50 ms to the death, 150 ms on p1");
    assert_eq!(env.events(), [DriverEvent::Failover, DriverEvent::Retry]);
    assert_eq!(env.cancelled.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_health_change_that_spares_the_peer_changes_nothing() {
    let env = Scripted::new(&[("p0", 100, Answer::Done)]).no_hedges();
    let (outcome, took) = run_with_loss_at_50ms(&env, "p2").await;
    assert_eq!(by(&outcome), "p0");
    assert_eq!(took, 100 * MS);
    assert!(env.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_a_hedge_token_a_silent_peer_runs_into_the_deadline() {
    let env = Scripted::new(&[("p0", 0, Answer::Never)]).no_hedges();
    let (outcome, took) = run(&env, quiet(), 3_000).await;
    assert_eq!(outcome.expect_err("deadline"), TaskError::DeadlineExceeded);
    assert_eq!(took, 3_000 * MS);
}

#[tokio::test(start_paused = true)]
async fn everybody_busy_is_an_explicit_busy() {
    let env = Scripted::new(&[
        ("p0", 1, Answer::Busy),
        ("p1", 1, Answer::Busy),
        ("p2", 1, Answer::Busy),
    ]);
    let (outcome, _) = run(&env, quiet(), 10_000).await;
    assert_eq!(
        outcome.expect_err("busy"),
        TaskError::Busy {
            retry_after: 1_000 * MS
        }
    );
    assert_eq!(env.sent(), ["p0", "p1", "p2"]);
    assert_eq!(env.events().last(), Some(&DriverEvent::Busy));
}

#[tokio::test(start_paused = true)]
async fn failures_fall_back_to_this_node_when_it_has_room() {
    let mut env = Scripted::new(&[
        ("p0", 10, Answer::Failed),
        ("p1", 10, Answer::Failed),
        ("p2", 10, Answer::Failed),
    ]);
    // A queue place here, but every peer looks better at first.
    env.local.queue_limit = 1;
    env.local.service_ewma = Some(1_000 * MS);
    env.local_admits = true;
    let (outcome, took) = run(&env, quiet(), 10_000).await;
    assert_eq!(by(&outcome), "here");
    assert_eq!(env.sent(), ["p0", "p1", "p2"]);
    assert_eq!(took, 130 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_bad_image_is_not_retried() {
    let env = Scripted::new(&[("p0", 10, Answer::BadImage)]);
    let (outcome, _) = run(&env, quiet(), 10_000).await;
    assert!(matches!(outcome, Err(TaskError::BadImage(_))));
    assert_eq!(env.sent(), ["p0"]);
}
