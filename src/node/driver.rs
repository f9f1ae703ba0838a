//! The thin async driver around the routing [`Plan`]: it carries out each [`Step`], races
//! the sends and the local run it started, and turns what happens into the next
//! [`Outcome`]: an answer, a hedge timer, a peer declared dead or its breaker opening, the
//! deadline.
//!
//! The node around it is the [`Env`] trait, implemented by the `Dispatcher` with real QUIC
//! forwards, membership and the executor; the unit tests below implement it with scripted
//! peers on tokio's paused clock, so every path of the loop is checked without processes.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use rand::Rng;
use spheromesh_mesh::routing::{Inputs, NodeId, Outcome, Plan, SendKind, Step};

use super::task::{TaskError, TaskResult};

/// How one send to a peer ended.
#[derive(Debug)]
pub(crate) enum SendResult {
    /// The peer ran the task.
    Done(TaskResult),
    /// The peer answered busy.
    Busy,
    /// The send failed in a way that another peer may be tried (lost stream, timeout,
    /// internal error, the peer is shutting down).
    Failed,
    /// The task itself failed (bad image, deadline): no other node would do better.
    Fatal(TaskError),
}

/// A running attempt (a send or the local run), boxed so both kinds race in one list.
pub(crate) type Attempt<'a> = Pin<Box<dyn Future<Output = SendResult> + Send + 'a>>;

/// What the driver needs from the node it runs on.
pub(crate) trait Env: Sync {
    /// Fills in the views the plan decides from, as of `now`.
    fn with_inputs<T>(
        &self,
        now: Instant,
        hedge_allowed: bool,
        decide: impl FnOnce(&Inputs<'_>) -> T,
    ) -> T;

    /// Whether the node's hedge budget has a token now.
    fn hedge_allowed(&self) -> bool;

    /// Takes a hedge token (the plan decided to hedge).
    fn take_hedge(&self);

    /// Starts the local run, or `None` when no place is free after all.
    fn start_local(&self) -> Option<Attempt<'_>>;

    /// Starts a send to `peer`, to be refused by the peer above `refuse_above`.
    fn start_send(&self, peer: &NodeId, refuse_above: Option<Duration>) -> Attempt<'_>;

    /// Whether a send in flight to `peer` should be given up: membership declared it dead,
    /// or its breaker opened.
    fn is_lost(&self, peer: &NodeId) -> bool;

    /// Counts what the driver did, for metrics.
    fn record(&self, event: DriverEvent);
}

/// Wakes the driver when membership or a breaker changed; then [`Env::is_lost`] is asked
/// for every peer with a send in flight.
pub(crate) trait HealthSignal: Send {
    /// Resolves at the next change.
    fn changed(&mut self) -> impl Future<Output = ()> + Send;
}

/// Something the driver did that metrics count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DriverEvent {
    /// A send after a busy answer or a failure.
    Retry,
    /// A hedge went out.
    Hedged,
    /// The hedge answered first.
    HedgeWon,
    /// A send was cancelled because its peer was declared dead or its breaker opened.
    Failover,
    /// The task was refused as busy.
    Busy,
}

/// Who an attempt runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Runner {
    Here,
    Peer(NodeId),
}

struct Running<'a> {
    runner: Runner,
    hedge: bool,
    attempt: Attempt<'a>,
}

/// What woke the driver.
enum Event {
    Finished(Runner, bool, SendResult),
    Late(NodeId),
    HealthChanged,
    Deadline,
}

/// Runs `plan` to its end: the first result, a fatal error, busy or the deadline.
///
/// Dropping the returned future cancels every attempt still in flight; so does returning,
/// which cancels the loser of a hedge.
///
/// # Errors
///
/// [`TaskError::Busy`] (with `retry_after`), [`TaskError::DeadlineExceeded`], or the task's
/// own error from the node that ran it.
pub(crate) async fn drive<E: Env, H: HealthSignal, R: Rng + Send>(
    env: &E,
    health: &mut H,
    mut plan: Plan,
    deadline: Instant,
    retry_after: Duration,
    rng: &mut R,
) -> Result<TaskResult, TaskError> {
    let mut running: Vec<Running<'_>> = Vec::with_capacity(2);
    let mut timers: Vec<(Instant, NodeId)> = Vec::with_capacity(2);
    let mut outcome = Outcome::Start;
    loop {
        let hedge_allowed = env.hedge_allowed();
        let now = tokio::time::Instant::now().into_std();
        let step = env.with_inputs(now, hedge_allowed, |inputs| {
            let step = plan.next(outcome.clone(), inputs, rng);
            tracing::debug!(?outcome, ?step, local = ?inputs.local, peers = ?inputs.peers, "routing step");
            step
        });
        match step {
            Step::RunHere { hedge } => match env.start_local() {
                Some(attempt) => {
                    if hedge {
                        env.take_hedge();
                        env.record(DriverEvent::Hedged);
                    }
                    running.push(Running {
                        runner: Runner::Here,
                        hedge,
                        attempt,
                    });
                }
                None => {
                    outcome = Outcome::LocalFull;
                    continue;
                }
            },
            Step::Send {
                peer,
                kind,
                hedge_after,
                refuse_above,
            } => {
                match kind {
                    SendKind::First => {}
                    SendKind::Retry => env.record(DriverEvent::Retry),
                    SendKind::Hedge => {
                        env.take_hedge();
                        env.record(DriverEvent::Hedged);
                    }
                }
                if let Some(after) = hedge_after {
                    timers.push((now + after, peer.clone()));
                }
                running.push(Running {
                    attempt: env.start_send(&peer, refuse_above),
                    runner: Runner::Peer(peer),
                    hedge: kind == SendKind::Hedge,
                });
            }
            Step::Wait => {}
            Step::Busy => {
                env.record(DriverEvent::Busy);
                return Err(TaskError::Busy { retry_after });
            }
            Step::DeadlineExceeded => return Err(TaskError::DeadlineExceeded),
        }
        outcome = loop {
            match next_event(health, &mut running, &timers, deadline).await {
                Event::Finished(runner, hedge, result) => match (runner, result) {
                    (_, SendResult::Done(result)) => {
                        if hedge {
                            env.record(DriverEvent::HedgeWon);
                        }
                        return Ok(result);
                    }
                    (_, SendResult::Fatal(error)) => return Err(error),
                    (Runner::Peer(peer), SendResult::Busy) => break Outcome::Busy(peer),
                    (Runner::Peer(peer), SendResult::Failed) => break Outcome::Failed(peer),
                    // A local run that cannot finish is a task error, never busy or failed.
                    (Runner::Here, SendResult::Busy | SendResult::Failed) => {
                        return Err(TaskError::Internal("local run failed".to_owned()))
                    }
                },
                Event::Late(peer) => {
                    timers.retain(|(_, p)| *p != peer);
                    break Outcome::Late(peer);
                }
                Event::HealthChanged => {
                    let lost = running
                        .iter()
                        .position(|r| matches!(&r.runner, Runner::Peer(p) if env.is_lost(p)));
                    if let Some(index) = lost {
                        // Dropping the attempt resets its stream: the peer, if it is still
                        // there, cancels the task.
                        let gone = running.swap_remove(index);
                        let Runner::Peer(peer) = gone.runner else {
                            unreachable!("only sends are lost")
                        };
                        timers.retain(|(_, p)| *p != peer);
                        env.record(DriverEvent::Failover);
                        break Outcome::Lost(peer);
                    }
                }
                Event::Deadline => return Err(TaskError::DeadlineExceeded),
            }
        };
    }
}

/// Waits for the first of: an attempt finishing, a hedge timer, a health change, the
/// deadline.
async fn next_event<H: HealthSignal>(
    health: &mut H,
    running: &mut Vec<Running<'_>>,
    timers: &[(Instant, NodeId)],
    deadline: Instant,
) -> Event {
    let timer = timers.iter().min_by_key(|(at, _)| *at).cloned();
    let finished = poll_fn(|cx| {
        for index in 0..running.len() {
            if let Poll::Ready(result) = running[index].attempt.as_mut().poll(cx) {
                let done = running.swap_remove(index);
                return Poll::Ready((done.runner, done.hedge, result));
            }
        }
        Poll::Pending
    });
    let late = async {
        match &timer {
            Some((at, peer)) => {
                tokio::time::sleep_until(tokio::time::Instant::from_std(*at)).await;
                peer.clone()
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        (runner, hedge, result) = finished => Event::Finished(runner, hedge, result),
        () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => Event::Deadline,
        peer = late => Event::Late(peer),
        () = health.changed() => Event::HealthChanged,
    }
}

#[cfg(test)]
mod tests;
