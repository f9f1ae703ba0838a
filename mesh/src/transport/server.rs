//! The serving side: accept peers' QUIC connections (RFC 9000) after mutual TLS (RFC 9001),
//! and run each forwarded task through a [`TaskHandler`].
//!
//! Shaped like iroh's router accept loop (iroh/src/protocol.rs): a `CancellationToken`, a
//! `JoinSet` of connection tasks and a `biased` `select!` that checks the token first. Each
//! connection is its own task, and each stream (task) of it is its own task again, so a slow
//! task never holds up another; QUIC's stream limit (`max_concurrent_bidi_streams`, §4.6)
//! bounds the tasks one peer has open, and a semaphore bounds the connections.
//!
//! Shutdown goes in order: stop accepting connections and streams, let in-flight tasks
//! finish within the grace period, cancel what is left, close the endpoint (CONNECTION_CLOSE
//! with `CLOSE_SHUTDOWN`, §10.2), then abort and drain the tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, debug_span, error, info, warn, Instrument};

use super::codes::{varint, CLOSE_SHUTDOWN};
use super::endpoint::MeshEndpoint;
use super::metrics::{Counter, ServerMetrics};
use super::stream::serve_stream;
use crate::protocol::{TaskRequest, TaskResponse};

/// Runs the tasks that peers forward to this node.
///
/// Each call gets one decoded request and the peer's address; the returned future is dropped
/// (cancelled) if the peer stops waiting, its connection is lost, or shutdown's grace period
/// runs out. A panic answers the peer with `STREAM_INTERNAL` and the server keeps serving.
pub trait TaskHandler: Send + Sync + 'static {
    /// Runs `req`, received from `remote`, and returns the answer for the peer.
    fn handle(
        &self,
        req: TaskRequest,
        remote: SocketAddr,
    ) -> impl Future<Output = TaskResponse> + Send;
}

/// Why a server stopped other than by a clean shutdown.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The accept loop or a connection task panicked (a bug in the transport, not in a handler).
    #[error("a server task panicked: {message}")]
    Panicked {
        /// The panic message, if it was a string.
        message: String,
    },
}

/// A running server; see [`serve`].
#[must_use = "the server is aborted when its handle is dropped"]
#[derive(Debug)]
pub struct ServerHandle {
    accepting: CancellationToken,
    task: AbortOnDropHandle<Result<(), ServeError>>,
    metrics: Arc<ServerMetrics>,
}

impl ServerHandle {
    /// Starts shutdown without waiting for it; see [`shutdown`](Self::shutdown).
    pub fn initiate_shutdown(&self) {
        self.accepting.cancel();
    }

    /// Stops accepting, lets in-flight tasks finish (up to the grace period), closes the
    /// endpoint and waits until all of it is done.
    ///
    /// # Errors
    ///
    /// [`ServeError::Panicked`] if a server task panicked while serving.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.accepting.cancel();
        match self.task.await {
            Ok(outcome) => outcome,
            Err(join_error) => Err(panicked(join_error)),
        }
    }

    /// The server's counters.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }
}

/// What every task of one server shares.
struct Shared {
    /// Cancelled to stop accepting connections and streams (a child of the caller's token).
    accepting: CancellationToken,
    /// Cancelled to cut off in-flight tasks once the grace period is over.
    handlers: CancellationToken,
    metrics: Arc<ServerMetrics>,
    max_frame: usize,
}

/// Serves forwarded tasks arriving at `endpoint` with `handler` until `cancel` is cancelled
/// or [`ServerHandle::shutdown`] is called; either runs the same orderly shutdown, which
/// closes `endpoint` (and with it any [`ForwardClient`](super::ForwardClient) using it).
///
/// Dropping the handle aborts the server at once: connections are closed without waiting
/// for their tasks.
///
/// # Panics
///
/// If called outside a tokio runtime.
pub fn serve<H: TaskHandler>(
    endpoint: MeshEndpoint,
    handler: Arc<H>,
    cancel: CancellationToken,
) -> ServerHandle {
    let metrics = Arc::new(ServerMetrics::default());
    // A child token: the caller's token stops us, but our stopping (e.g. after a panic) does
    // not cancel whatever else the caller hangs on its token.
    let accepting = cancel.child_token();
    let shared = Arc::new(Shared {
        accepting: accepting.clone(),
        handlers: CancellationToken::new(),
        metrics: Arc::clone(&metrics),
        max_frame: endpoint.config().max_frame,
    });
    let task = tokio::spawn(accept_loop(endpoint, handler, shared));
    ServerHandle {
        accepting,
        task: AbortOnDropHandle::new(task),
        metrics,
    }
}

async fn accept_loop<H: TaskHandler>(
    endpoint: MeshEndpoint,
    handler: Arc<H>,
    shared: Arc<Shared>,
) -> Result<(), ServeError> {
    let limit = Arc::new(Semaphore::new(endpoint.config().max_connections));
    let mut connections = JoinSet::new();
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            biased;
            () = shared.accepting.cancelled() => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(join_error) = joined {
                    error!(error = %join_error, "connection task failed, stopping the server");
                    outcome = Err(panicked(join_error));
                    break;
                }
            }
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let remote = incoming.remote_address();
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    shared.metrics.inc(Counter::Refused);
                    warn!(%remote, "connection limit reached, refusing");
                    incoming.refuse();
                    continue;
                };
                let span = debug_span!("peer", %remote);
                let task = serve_connection(incoming, Arc::clone(&handler), Arc::clone(&shared), permit);
                connections.spawn(task.instrument(span));
            }
        }
    }

    shared.accepting.cancel();
    let grace = endpoint.config().shutdown_grace;
    let drain = async {
        while let Some(joined) = connections.join_next().await {
            if let (Err(join_error), Ok(())) = (joined, &outcome) {
                outcome = Err(panicked(join_error));
            }
        }
    };
    if tokio::time::timeout(grace, drain).await.is_ok() {
        info!("in-flight tasks finished");
    } else {
        warn!(
            ?grace,
            "in-flight tasks outlived the grace period, cancelling them"
        );
    }
    shared.handlers.cancel();
    endpoint.close().await;
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    outcome
}

async fn serve_connection<H: TaskHandler>(
    incoming: quinn::Incoming,
    handler: Arc<H>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            shared.metrics.inc(Counter::HandshakeFailures);
            warn!(%error, "handshake failed");
            return;
        }
    };
    shared.metrics.inc(Counter::Connections);
    let remote = connection.remote_address();
    debug!("peer connected");
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shared.accepting.cancelled() => break,
            Some(joined) = streams.join_next(), if !streams.is_empty() => rethrow_panic(joined),
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let token = shared.handlers.child_token();
                    let task = serve_stream(send, recv, Arc::clone(&handler), remote, Arc::clone(&shared.metrics), shared.max_frame);
                    let span = debug_span!("task", task_id = tracing::field::Empty);
                    streams.spawn(async move { token.run_until_cancelled(task).await; }.instrument(span));
                }
                Err(error) => {
                    debug!(%error, "connection ended");
                    break;
                }
            },
        }
    }
    // Let the tasks already accepted finish; `handlers` cuts them off after the grace period.
    while let Some(joined) = streams.join_next().await {
        rethrow_panic(joined);
    }
    if shared.accepting.is_cancelled() {
        connection.close(varint(CLOSE_SHUTDOWN), b"shutting down");
    }
}

/// A stream task's panic is a transport bug: pass it up so the accept loop stops.
fn rethrow_panic(joined: Result<(), JoinError>) {
    if let Err(join_error) = joined {
        if join_error.is_panic() {
            std::panic::resume_unwind(join_error.into_panic());
        }
    }
}

fn panicked(join_error: JoinError) -> ServeError {
    let message = if join_error.is_panic() {
        let payload = join_error.into_panic();
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned())
    } else {
        join_error.to_string()
    };
    ServeError::Panicked { message }
}
