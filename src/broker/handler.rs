//! What happens to one delivery, from the body to the ack (contract sections 2-3).
//!
//! | case | callback | then |
//! |---|---|---|
//! | malformed body | none (nobody to tell) | dead-letter queue with the reason, ack |
//! | result cached and already accepted by the backend (only the ack was lost) | none | ack |
//! | result cached, callback not yet accepted | `completed` from the cache | ack |
//! | bad parameter, image missing/unreadable/escaping, permanent task error | `failed` | ack |
//! | mesh busy or node shutting down | none | requeue |
//! | draining before the task started | none | requeue |
//! | task error that may pass (deadline, internal) | none | republish with the failure count; dead-letter queue at the cap |
//! | success | `completed` | ack |
//!
//! The ack is sent only after the callback got a 2xx. A callback that keeps failing for
//! the whole retry window counts as a failure of the message (republished with its count,
//! dead-lettered at the cap; see `redelivery`), and the result stays in the cache, so the
//! redelivery costs no model run; one the backend refuses outright (a 4xx other than
//! 408/429) goes to the dead-letter queue with the reason, since resending it can never
//! succeed.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::cache::{image_key, ResultCache};
use super::callback::{completed_body, failed_body, CallbackClient, CallbackError};
use super::dead_letter;
use super::error_chain;
use super::message::TaskMessage;
use super::redelivery::{self, AfterFailure};
use super::status::{BrokerStatus, Event, InHand};
use crate::node::{Policy, SegmentTask, TaskError, TaskRunner};
use crate::uploads::{PathError, UploadsRoot};

/// State every delivery handler shares.
#[derive(Debug)]
pub(crate) struct Shared<R> {
    pub(crate) runner: Arc<R>,
    pub(crate) status: Arc<BrokerStatus>,
    pub(crate) queue: String,
    pub(crate) dead_letter_queue: String,
    pub(crate) uploads: UploadsRoot,
    pub(crate) callback: CallbackClient,
    pub(crate) cache: ResultCache,
    pub(crate) task_timeout: Duration,
    /// Failures after which a message is dead-lettered instead of requeued.
    pub(crate) max_failures: u32,
    /// Deliveries taken whose task has not been handed to the runner yet.
    pub(crate) unstarted: AtomicU32,
}

/// A taken delivery whose task the runner has not seen yet; dropping it (the runner
/// polled the task once, or the handler gave up before) gives the count back.
#[derive(Debug)]
pub(crate) struct Unstarted<R>(Arc<Shared<R>>);

impl<R> Unstarted<R> {
    pub(crate) fn take(shared: &Arc<Shared<R>>) -> Self {
        shared.unstarted.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(shared))
    }
}

impl<R> Drop for Unstarted<R> {
    fn drop(&mut self) {
        self.0.unstarted.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What to do with the delivery once the handler is done.
#[derive(Debug)]
enum Settle {
    Ack,
    /// Hand it back to the queue after `delay` (a short pause stops a node whose capacity
    /// estimate is wrong from taking the same message back in a tight loop).
    Requeue {
        delay: Duration,
    },
    /// The message failed (not merely "not now"): after `delay`, republish it with its
    /// failure count, or dead-letter it at the cap.
    Failed {
        delay: Duration,
        reason: String,
    },
}

/// Processes one delivery and acks or requeues it. Never panics on bad input.
pub(crate) async fn handle<R: TaskRunner>(
    shared: Arc<Shared<R>>,
    dlq: Channel,
    delivery: Delivery,
    in_hand: InHand,
    unstarted: Unstarted<R>,
    drain: CancellationToken,
) {
    let mut settle = process(&shared, &dlq, &delivery, unstarted, &drain).await;
    if let Settle::Failed { delay, reason } = settle {
        settle = after_failure(&shared, &dlq, &delivery, delay, &reason).await;
    }
    match settle {
        Settle::Ack => {
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                // The channel is gone: the broker requeues the message by itself, and the
                // redelivery is answered from the result cache.
                warn!(cause = %e, "ack failed; the broker will redeliver");
            }
        }
        Settle::Requeue { delay } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            shared.status.count(Event::Requeued);
            let opts = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            if let Err(e) = delivery.acker.nack(opts).await {
                warn!(cause = %e, "requeue failed; the broker will redeliver");
            }
        }
        Settle::Failed { .. } => unreachable!("failures are settled above"),
    }
    drop(in_hand);
}

/// Settles a failed message: republished with one more failure (then the original can be
/// acked), dead-lettered at the cap, or requeued plainly when the publish fails.
async fn after_failure<R: TaskRunner>(
    shared: &Arc<Shared<R>>,
    dlq: &Channel,
    delivery: &Delivery,
    delay: Duration,
    reason: &str,
) -> Settle {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let so_far = redelivery::failures_so_far(&delivery.properties);
    match redelivery::after_failure(so_far, shared.max_failures) {
        AfterFailure::GiveUp { failures } => {
            let why = format!("gave up after {failures} failures; last: {reason}");
            dead_letter(shared, dlq, &delivery.data, &why).await
        }
        AfterFailure::Retry { failures } => {
            let sent = redelivery::republish(
                dlq,
                &shared.queue,
                &delivery.data,
                &delivery.properties,
                failures,
            )
            .await;
            match sent {
                Ok(()) => {
                    shared.status.count(Event::Requeued);
                    info!(failures, %reason, "task failed; republished with its failure count");
                    Settle::Ack
                }
                Err(e) => {
                    warn!(cause = %error_chain(&e), "republish failed; requeueing plainly");
                    Settle::Requeue {
                        delay: Duration::ZERO,
                    }
                }
            }
        }
    }
}

async fn process<R: TaskRunner>(
    shared: &Arc<Shared<R>>,
    dlq: &Channel,
    delivery: &Delivery,
    unstarted: Unstarted<R>,
    drain: &CancellationToken,
) -> Settle {
    let msg = match TaskMessage::parse(&delivery.data) {
        Ok(m) => m,
        Err(reason) => {
            warn!(%reason, bytes = delivery.data.len(), "malformed task message");
            // Nothing will start: free the gate before the (slow) publish.
            drop(unstarted);
            return dead_letter(shared, dlq, &delivery.data, &reason.to_string()).await;
        }
    };
    tracing::Span::current().record("task_id", msg.task_id.as_str());
    debug!(image_id = %msg.image_id, redelivered = delivery.redelivered, "task taken");
    let key = image_key(&msg.image_id, &msg.image_path, &msg.parameters);
    if let Some(cached) = shared.cache.get(&msg.task_id, &key) {
        drop(unstarted);
        shared.status.count(Event::FromCache);
        if cached.delivered {
            // The backend has this result; the ack was lost (connection or broker gone).
            info!("redelivered task already answered; acking without a second callback");
            return Settle::Ack;
        }
        info!("answering a redelivered task from the result cache");
        return answer(shared, dlq, delivery, &msg, &cached.body, Event::Completed).await;
    }
    let params = match msg.params() {
        Ok(p) => p,
        Err(reason) => {
            drop(unstarted);
            return fail(shared, dlq, delivery, &msg, &reason).await;
        }
    };
    let image = match shared.uploads.read(&msg.image_path).await {
        Ok(bytes) => bytes,
        Err(e @ PathError::Root { .. }) => {
            // Not the task's fault: this node cannot see the uploads volume. Another node
            // may; requeue and say so loudly.
            error!(cause = %e, "uploads root unusable; requeueing");
            return Settle::Requeue {
                delay: Duration::from_secs(1),
            };
        }
        Err(e) => {
            drop(unstarted);
            return fail(shared, dlq, delivery, &msg, &error_chain(&e)).await;
        }
    };
    if drain.is_cancelled() {
        debug!("draining before the task started; requeueing");
        return Settle::Requeue {
            delay: Duration::ZERO,
        };
    }
    let task = SegmentTask {
        task_id: msg.task_id.clone(),
        image,
        threshold: params.threshold,
        simplify_tolerance: params.simplify_tolerance,
        deadline: Instant::now() + shared.task_timeout,
    };
    match run_marking_start(shared.runner.run(task, Policy::FreeSlotFirst), unstarted).await {
        Ok(result) => {
            let body = completed_body(&result, &msg.parameters);
            shared.cache.put(&msg.task_id, key, body.clone());
            info!(processed_by = %result.processed_by, hops = result.hops,
                  secs = result.processing_time.as_secs_f64(), "task segmented");
            answer(shared, dlq, delivery, &msg, &body, Event::Completed).await
        }
        Err(e) if e.is_permanent() => {
            info!(code = e.code(), cause = %e, "task failed");
            fail(shared, dlq, delivery, &msg, &e.to_string()).await
        }
        Err(TaskError::Busy { retry_after }) => {
            debug!("mesh busy; requeueing");
            Settle::Requeue {
                delay: retry_after.min(Duration::from_secs(1)),
            }
        }
        Err(TaskError::ShuttingDown) => {
            debug!("shutting down; requeueing");
            Settle::Requeue {
                delay: Duration::ZERO,
            }
        }
        Err(e) => {
            warn!(code = e.code(), cause = %e, "transient task error");
            Settle::Failed {
                delay: Duration::from_millis(200),
                reason: format!("{}: {e}", e.code()),
            }
        }
    }
}

/// Awaits `run`, dropping `unstarted` as soon as the runner has polled the task once.
///
/// This is the point where the task counts against the runner's own capacity
/// (`startable_now` drops), so from here on it must no longer count as a held, unstarted
/// delivery - or the gate would count it twice and stall.
async fn run_marking_start<F: Future, R>(run: F, unstarted: Unstarted<R>) -> F::Output {
    let mut run = std::pin::pin!(run);
    let mut unstarted = Some(unstarted);
    std::future::poll_fn(move |cx| {
        let out: Poll<F::Output> = run.as_mut().poll(cx);
        unstarted.take();
        out
    })
    .await
}

async fn fail<R: TaskRunner>(
    shared: &Arc<Shared<R>>,
    dlq: &Channel,
    delivery: &Delivery,
    msg: &TaskMessage,
    reason: &str,
) -> Settle {
    let body = failed_body(reason, &msg.parameters);
    answer(shared, dlq, delivery, msg, &body, Event::Failed).await
}

/// Sends the callback and decides the delivery's fate from its outcome.
async fn answer<R: TaskRunner>(
    shared: &Arc<Shared<R>>,
    dlq: &Channel,
    delivery: &Delivery,
    msg: &TaskMessage,
    body: &Value,
    outcome: Event,
) -> Settle {
    match shared.callback.send(&msg.callback_url, body).await {
        Ok(()) => {
            if outcome == Event::Completed {
                shared.cache.mark_delivered(&msg.task_id);
            }
            shared.status.count(Event::CallbackOk);
            shared.status.count(outcome);
            Settle::Ack
        }
        Err(e @ CallbackError::Rejected { .. }) => {
            shared.status.count(Event::CallbackFailed);
            let reason = format!("callback refused: {e}");
            dead_letter(shared, dlq, &delivery.data, &reason).await
        }
        Err(e @ CallbackError::GaveUp { .. }) => {
            shared.status.count(Event::CallbackFailed);
            warn!(cause = %e, "callback window spent");
            Settle::Failed {
                delay: Duration::ZERO,
                reason: format!("callback never accepted: {e}"),
            }
        }
    }
}

async fn dead_letter<R: TaskRunner>(
    shared: &Arc<Shared<R>>,
    dlq: &Channel,
    body: &[u8],
    reason: &str,
) -> Settle {
    match dead_letter::publish(
        dlq,
        &shared.dead_letter_queue,
        body,
        reason,
        &shared.queue,
        shared.runner.instance_id(),
    )
    .await
    {
        Ok(()) => {
            shared.status.count(Event::DeadLettered);
            info!(queue = %shared.dead_letter_queue, %reason, "message dead-lettered");
            Settle::Ack
        }
        Err(e) => {
            error!(cause = %error_chain(&e), %reason, "dead-lettering failed; requeueing");
            Settle::Requeue {
                delay: Duration::from_secs(1),
            }
        }
    }
}
