//! The gated consumer loop: sessions, reconnects and drain.
//!
//! # Why `basic.get` gated by capacity, not `basic.consume` + `basic.qos`
//! With a push consumer the broker sends up to `prefetch` messages whether or not this
//! node (or any peer it knows) can start them; a held message then waits behind a long
//! task while another node idles - head-of-line blocking, the old service's problem with
//! `prefetch_count=4`. Shrinking the window with `basic.qos` at run time does not take back
//! what was already pushed (RabbitMQ applies a new prefetch to future deliveries only), so
//! extras would have to be requeued, reordering the queue and churning redeliveries.
//!
//! Pulling with `basic.get` gives exactly the wanted rule: a delivery is taken only when
//! `unstarted < runner.startable_now()` (there is a free slot for it here or at an idle
//! peer) and `in_hand < prefetch` (the configured upper bound). The cost is one round
//! trip per task and a poll while the queue is empty, backed off exponentially from
//! `empty_poll_backoff` (20 ms to 0.5 s by default) - negligible next to a segmentation
//! that takes a second or more.
//!
//! # Sessions
//! A session is one connection with three channels: tasks (`basic.get`, acks), dead
//! letters (publisher confirms) and depth (passive declares, which close their channel on
//! error). When the connection or the task channel fails, the session ends, the status
//! says `connected=false` and the loop reconnects with capped, jittered exponential
//! backoff. Tasks already running keep running across a reconnect: their callbacks still
//! go out, their acks fail (the broker has requeued those messages with the connection),
//! and the redeliveries are answered from the result cache.
//!
//! # Drain
//! On `shutdown`: take nothing more, let every handler finish (a handler that has not
//! handed its task to the runner yet requeues it; started ones finish, call back, ack),
//! then close the connection and return. Bound it from outside with a grace period
//! (`tokio::time::timeout`) if needed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties};
use rand::SeedableRng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::cache::ResultCache;
use super::callback::CallbackClient;
use super::config::{redact_url, BrokerConfig, ConfigError};
use super::dead_letter;
use super::error_chain;
use super::handler::{handle, Shared, Unstarted};
use super::status::{BrokerStatus, Event, InHand};
use crate::node::TaskRunner;
use crate::uploads::UploadsRoot;

/// Time limit of one broker round trip (connect, declare, get); past it the session is
/// considered dead. Heartbeats detect a silent peer too, but only after ~2 intervals.
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the consumer stopped without being asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The configuration cannot work (checked before connecting).
    #[error("invalid broker configuration")]
    Config(#[from] ConfigError),
}

/// Why one broker session ended (then the consumer reconnects).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("broker error during {during}")]
    Broker {
        during: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("broker did not answer {during} within {RPC_TIMEOUT:?}")]
    Timeout { during: &'static str },
    #[error("connection to the broker lost")]
    Lost,
    #[error("a delivery handler panicked; closing the session so the broker requeues its message")]
    HandlerPanicked,
}

/// Runs `f` with the RPC time limit, naming the step in the error.
async fn rpc<T>(
    during: &'static str,
    f: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(RPC_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(SessionError::Broker { during, source }),
        Err(_) => Err(SessionError::Timeout { during }),
    }
}

/// Consumes `config.queue` until `shutdown`, running each task through `runner` and
/// reporting into `status`. Reconnects by itself while the broker is unreachable (the
/// node keeps serving meanwhile; `status` says `connected=false`).
///
/// Returns after the drain described in the module docs.
///
/// # Errors
/// [`ConsumerError::Config`] when the configuration is invalid; broker outages are never
/// an error (they are retried until `shutdown`).
pub async fn run_consumer<R: TaskRunner>(
    config: BrokerConfig,
    runner: Arc<R>,
    status: Arc<BrokerStatus>,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    config.validate()?;
    let shared = Arc::new(Shared {
        runner,
        status: Arc::clone(&status),
        queue: config.queue.clone(),
        dead_letter_queue: config.dead_letter_queue.clone(),
        uploads: UploadsRoot::new(config.uploads_root.clone(), config.max_image_bytes),
        callback: CallbackClient::new(&config)?,
        cache: ResultCache::new(config.result_cache_capacity, config.result_cache_ttl),
        task_timeout: config.task_timeout,
        max_failures: config.max_failures,
        unstarted: 0.into(),
    });
    status.set_prefetch_bound(u32::from(config.prefetch));
    info!(url = %redact_url(&config.amqp_url), queue = %config.queue,
          dead_letter_queue = %config.dead_letter_queue, prefetch = config.prefetch,
          uploads_root = %config.uploads_root.display(), "rabbitmq consumer starting");

    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut failures: u32 = 0;
    let mut sessions: u64 = 0;
    while !shutdown.is_cancelled() {
        let session = match Session::open(&config, shared.runner.instance_id()).await {
            Ok(s) => s,
            Err(e) => {
                let delay = config.reconnect_backoff.delay(failures, &mut rng);
                failures = failures.saturating_add(1);
                warn!(cause = %error_chain(&e), retry_in = ?delay, attempt = failures,
                      "cannot reach the broker");
                wait_reaping(&mut tasks, delay, &shutdown).await;
                continue;
            }
        };
        failures = 0;
        if sessions > 0 {
            status.count(Event::Reconnect);
        }
        sessions += 1;
        status.set_connected(true);
        info!("connected to the broker");
        match session.run(&config, &shared, &mut tasks, &shutdown).await {
            Ok(()) => {
                drain(&mut tasks).await;
                session.close("spheromesh drained").await;
                status.set_connected(false);
                info!("rabbitmq consumer drained");
                return Ok(());
            }
            Err(e) => {
                status.set_connected(false);
                error!(cause = %error_chain(&e), "broker session ended; reconnecting");
                // Close explicitly: handlers still hold clones of the session's channels,
                // which would keep a half-broken connection (and its unacked deliveries)
                // alive until they finish.
                session.close("spheromesh session error").await;
                let delay = config.reconnect_backoff.delay(0, &mut rng);
                wait_reaping(&mut tasks, delay, &shutdown).await;
            }
        }
    }
    // Cancelled while disconnected: the running handlers still call back; their acks
    // fail and the broker redelivers those messages (answered from another node's work
    // or recomputed).
    drain(&mut tasks).await;
    status.set_connected(false);
    info!("rabbitmq consumer drained (disconnected)");
    Ok(())
}

/// Waits for every handler to finish.
async fn drain(tasks: &mut JoinSet<()>) {
    if !tasks.is_empty() {
        info!(
            in_flight = tasks.len(),
            "draining: waiting for started tasks"
        );
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            error!(cause = %e, "delivery handler failed during drain");
        }
    }
}

/// Sleeps `delay` (or until shutdown) while reaping finished handlers.
async fn wait_reaping(tasks: &mut JoinSet<()>, delay: Duration, shutdown: &CancellationToken) {
    let deadline = tokio::time::sleep(delay);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = &mut deadline => return,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    error!(cause = %e, "delivery handler failed");
                }
            }
        }
    }
}

struct Session {
    conn: Connection,
    tasks: Channel,
    dead_letters: Channel,
    depth: Channel,
}

impl Session {
    async fn open(config: &BrokerConfig, instance: &str) -> Result<Self, SessionError> {
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("spheromesh {instance}")));
        let conn = rpc("connect", Connection::connect(&config.amqp_url, props)).await?;
        let tasks = rpc("channel.open", conn.create_channel()).await?;
        // Declared exactly as the backend declares it: durable, not exclusive, not
        // auto-delete, no arguments (any argument makes one side's declare fail).
        let opts = QueueDeclareOptions {
            durable: true,
            exclusive: false,
            auto_delete: false,
            ..QueueDeclareOptions::default()
        };
        rpc(
            "queue.declare",
            tasks.queue_declare(config.queue.as_str().into(), opts, FieldTable::default()),
        )
        .await?;
        let dead_letters = rpc("channel.open", conn.create_channel()).await?;
        rpc(
            "confirm.select",
            dead_letters.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        rpc(
            "queue.declare",
            dead_letter::declare(&dead_letters, &config.dead_letter_queue),
        )
        .await?;
        let depth = rpc("channel.open", conn.create_channel()).await?;
        Ok(Self {
            conn,
            tasks,
            dead_letters,
            depth,
        })
    }

    /// The gated take loop; returns `Ok` on shutdown, `Err` when the session broke.
    async fn run<R: TaskRunner>(
        &self,
        config: &BrokerConfig,
        shared: &Arc<Shared<R>>,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut empty_polls: u32 = 0;
        let mut next_depth = Instant::now();
        let prefetch = u32::from(config.prefetch);
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if !self.conn.status().connected() || !self.tasks.status().connected() {
                return Err(SessionError::Lost);
            }
            if Instant::now() >= next_depth {
                self.poll_depth(config, shared).await;
                next_depth = Instant::now() + config.depth_poll;
            }
            let in_hand = shared.status.in_hand();
            let unstarted = shared.unstarted.load(Ordering::Relaxed);
            let room = in_hand < prefetch && unstarted < shared.runner.startable_now();
            let wait = if room {
                let got = rpc(
                    "basic.get",
                    self.tasks.basic_get(
                        config.queue.as_str().into(),
                        BasicGetOptions { no_ack: false },
                    ),
                )
                .await?;
                match got {
                    Some(msg) => {
                        empty_polls = 0;
                        let span = info_span!(
                            "broker_task",
                            task_id = tracing::field::Empty,
                            tag = msg.delivery.delivery_tag
                        );
                        let handler = handle(
                            Arc::clone(shared),
                            self.dead_letters.clone(),
                            msg.delivery,
                            InHand::take(&shared.status),
                            Unstarted::take(shared),
                            shutdown.clone(),
                        );
                        tasks.spawn(handler.instrument(span));
                        continue;
                    }
                    None => {
                        let d = config.empty_poll_backoff.delay(empty_polls, &mut rng);
                        empty_polls = empty_polls.saturating_add(1);
                        d
                    }
                }
            } else {
                config.capacity_poll
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = joined {
                        if e.is_panic() {
                            return Err(SessionError::HandlerPanicked);
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Reads the queue depth with a passive declare (on its own channel: a failed
    /// passive declare closes the channel it ran on).
    async fn poll_depth<R>(&self, config: &BrokerConfig, shared: &Shared<R>) {
        let opts = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let res = rpc(
            "queue.declare(passive)",
            self.depth
                .queue_declare(config.queue.as_str().into(), opts, FieldTable::default()),
        )
        .await;
        match res {
            Ok(q) => shared
                .status
                .set_queue_depth(Some(u64::from(q.message_count()))),
            Err(e) => {
                shared.status.set_queue_depth(None);
                debug!(cause = %error_chain(&e), "queue depth poll failed");
            }
        }
    }

    /// Closes the connection (best effort, bounded): the broker requeues whatever is
    /// still unacked on it.
    async fn close(self, reason: &str) {
        match tokio::time::timeout(RPC_TIMEOUT, self.conn.close(200, reason.into())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(cause = %e, "closing the broker connection"),
            Err(_) => debug!("closing the broker connection timed out"),
        }
    }
}
