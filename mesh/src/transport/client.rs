//! The forwarding side: send one task to a peer and wait for its one answer.
//!
//! Each peer gets one QUIC connection (RFC 9000), kept in a pool keyed by its address and
//! shared by every task sent to it: streams are cheap (§2), a handshake (RFC 9001 §4) is not.
//! Each task gets its own bidirectional stream (§2.1), so a slow or failed task never blocks
//! another, and the peer's stream limit (§4.6) bounds how many run at once. A connection that
//! closed or failed is dropped from the pool and the next task dials again.
//!
//! The exchange follows the forward protocol (`crate::protocol`): write the request frame,
//! finish the send side (FIN, §3.1), read exactly one response frame bounded by
//! [`TransportConfig::max_frame`](super::TransportConfig::max_frame). A peer that dies
//! mid-task shows up here as a lost connection or reset stream
//! ([`ForwardError::Stream`]), independently of gossip.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, instrument};

use super::codes::{varint, STREAM_BAD_REQUEST, STREAM_CANCELLED};
use super::endpoint::MeshEndpoint;
use super::error::{Cause, ForwardError, LinkError};
use crate::protocol::{self, read_frame, FrameError, TaskRequest, TaskResponse};

/// Sends tasks to peers over pooled QUIC connections.
///
/// Share one per node (behind an `Arc`); its methods take `&self`.
#[derive(Debug)]
pub struct ForwardClient {
    endpoint: MeshEndpoint,
    pool: Mutex<HashMap<SocketAddr, Arc<Slot>>>,
}

/// The pooled connection to one peer. The async lock makes concurrent first tasks to a peer
/// wait for one handshake instead of each dialling.
#[derive(Debug, Default)]
struct Slot(tokio::sync::Mutex<Option<Pooled>>);

#[derive(Debug)]
struct Pooled {
    connection: quinn::Connection,
    server_name: String,
}

impl ForwardClient {
    /// A client dialling from `endpoint`, with an empty pool.
    pub fn new(endpoint: &MeshEndpoint) -> Self {
        Self {
            endpoint: endpoint.clone(),
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` to the peer at `peer`, whose certificate must name `server_name`, and
    /// returns its answer.
    ///
    /// The whole call, dialling included, takes at most `timeout`; on expiry the stream is
    /// cancelled with `STREAM_CANCELLED` so the peer can stop the task.
    ///
    /// # Errors
    ///
    /// [`ForwardError::Request`] if `req` does not encode within the frame limit (checked
    /// first), [`ForwardError::InvalidServerName`], [`ForwardError::Connect`] if no stream
    /// could be opened (nothing reached the peer), [`ForwardError::Stream`] if the connection
    /// or stream failed after the request was sent, [`ForwardError::Rejected`] if the peer
    /// refused the frame, [`ForwardError::Timeout`], and [`ForwardError::Protocol`] for an
    /// invalid answer. [`ForwardError::is_retryable`] says whether another peer may be tried.
    #[instrument(skip_all, fields(task_id = %req.task_id, %peer))]
    pub async fn forward(
        &self,
        peer: SocketAddr,
        server_name: &str,
        req: &TaskRequest,
        timeout: Duration,
    ) -> Result<TaskResponse, ForwardError> {
        let max = self.endpoint.config().max_frame;
        let frame = protocol::encode(req, max).map_err(|source| ForwardError::Request {
            task_id: req.task_id.clone(),
            source,
        })?;
        let started = Instant::now();
        let timed_out = || ForwardError::Timeout {
            peer,
            after: timeout,
        };
        let (mut send, mut recv) = tokio::time::timeout(timeout, self.open(peer, server_name))
            .await
            .map_err(|_| timed_out())??;
        let left = timeout.saturating_sub(started.elapsed());
        let result = tokio::time::timeout(left, exchange(&mut send, &mut recv, &frame, max)).await;
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(failure)) => {
                let error = failure.into_forward(peer);
                debug!(error = %error, retryable = error.is_retryable(), "forward failed");
                Err(error)
            }
            Err(_) => {
                // Tell the peer we gave up so it can cancel the handler. Both calls only fail
                // when the stream is already closed, in which case there is nothing to tell.
                let _ = recv.stop(varint(STREAM_CANCELLED));
                let _ = send.reset(varint(STREAM_CANCELLED));
                debug!(?timeout, "forward timed out");
                Err(timed_out())
            }
        }
    }

    /// Drops the pooled connection to `peer`, e.g. when it leaves the mesh. Tasks in flight
    /// on it finish; the connection closes when the last one ends.
    pub fn evict(&self, peer: SocketAddr) {
        self.lock_pool().remove(&peer);
    }

    /// Number of peers with a pooled connection that is still open.
    pub fn open_connections(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self.lock_pool().values().cloned().collect();
        slots
            .iter()
            .filter(|slot| {
                slot.0.try_lock().is_ok_and(|pooled| {
                    pooled
                        .as_ref()
                        .is_some_and(|p| p.connection.close_reason().is_none())
                })
            })
            .count()
    }

    /// Opens one bidirectional stream to `peer`, dialling if the pool has no open connection.
    ///
    /// A pooled connection can have died since its last use (the peer restarted, or closed
    /// it while idle); if opening a stream on it fails, it is replaced once by a fresh one.
    async fn open(
        &self,
        peer: SocketAddr,
        server_name: &str,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ForwardError> {
        // Nothing of the task has been sent yet, so every failure here is a connect failure.
        let connect_failure = |e| ForwardError::Connect {
            peer,
            source: LinkError::from_connection(e),
        };
        let (connection, reused) = self.checkout(peer, server_name).await?;
        match connection.open_bi().await {
            Ok(streams) => Ok(streams),
            Err(error) if reused => {
                debug!(%error, "pooled connection is gone, dialling again");
                let (connection, _) = self.checkout(peer, server_name).await?;
                connection.open_bi().await.map_err(connect_failure)
            }
            Err(error) => Err(connect_failure(error)),
        }
    }

    /// The pooled connection to `peer`, dialled anew if there is none or it is closed.
    #[cfg(test)]
    pub(crate) async fn connection(
        &self,
        peer: SocketAddr,
        server_name: &str,
    ) -> Result<quinn::Connection, ForwardError> {
        self.checkout(peer, server_name).await.map(|(c, _)| c)
    }

    /// The pooled connection to `peer` and `true`, or a new one and `false` if the pool had
    /// none open for `server_name`.
    async fn checkout(
        &self,
        peer: SocketAddr,
        server_name: &str,
    ) -> Result<(quinn::Connection, bool), ForwardError> {
        let slot = Arc::clone(self.lock_pool().entry(peer).or_default());
        let mut pooled = slot.0.lock().await;
        if let Some(p) = pooled.as_ref() {
            if p.connection.close_reason().is_none() && p.server_name == server_name {
                return Ok((p.connection.clone(), true));
            }
        }
        *pooled = None;
        let connect_error = |source| ForwardError::Connect { peer, source };
        let connecting = self
            .endpoint
            .connect(peer, server_name)
            .map_err(|e| match e {
                quinn::ConnectError::InvalidServerName(name) => {
                    ForwardError::InvalidServerName { server_name: name }
                }
                quinn::ConnectError::EndpointStopping => connect_error(LinkError::LocallyClosed),
                other => connect_error(LinkError::Lost {
                    cause: Cause::new(other),
                }),
            })?;
        let limit = self.endpoint.config().connect_timeout;
        let connection = match tokio::time::timeout(limit, connecting).await {
            Err(_) => return Err(connect_error(LinkError::TimedOut)),
            Ok(Err(e)) => return Err(connect_error(LinkError::from_connection(e))),
            Ok(Ok(connection)) => connection,
        };
        debug!(%peer, server_name, "connected to peer");
        *pooled = Some(Pooled {
            connection: connection.clone(),
            server_name: server_name.to_owned(),
        });
        Ok((connection, false))
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Slot>>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A failure of the exchange, before it is told apart into a [`ForwardError`].
enum Failure {
    Link(LinkError),
    Frame(FrameError),
}

impl Failure {
    fn into_forward(self, peer: SocketAddr) -> ForwardError {
        let source = match self {
            Failure::Frame(FrameError::Io(e)) => LinkError::from_io(e),
            Failure::Frame(FrameError::Closed | FrameError::Truncated { .. }) => {
                LinkError::EndedEarly
            }
            Failure::Frame(source) => return ForwardError::Protocol { peer, source },
            Failure::Link(link) => link,
        };
        let bad_request = u64::from(STREAM_BAD_REQUEST);
        match source {
            // The server verifies our certificate after our side of the handshake is done,
            // so its refusal can arrive only once the stream is in use.
            LinkError::Tls { .. } => ForwardError::Connect { peer, source },
            LinkError::StreamReset { code } | LinkError::StreamStopped { code }
                if code == bad_request =>
            {
                ForwardError::Rejected { peer }
            }
            source => ForwardError::Stream { peer, source },
        }
    }
}

/// Writes the request frame, finishes the send side and reads one response frame.
async fn exchange(
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    frame: &[u8],
    max: usize,
) -> Result<TaskResponse, Failure> {
    send.write_all(frame)
        .await
        .map_err(|e| Failure::Link(LinkError::from_write(e)))?;
    send.finish().map_err(|e| {
        Failure::Link(LinkError::Lost {
            cause: Cause::new(e),
        })
    })?;
    read_frame(recv, max).await.map_err(Failure::Frame)
}
