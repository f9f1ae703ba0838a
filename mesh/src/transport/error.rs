//! Errors of the transport's client side, in terms that never name quinn's types.
//!
//! A QUIC connection (RFC 9000) fails as a whole (idle timeout §10.1, CONNECTION_CLOSE §10.2,
//! stateless reset §10.3) or one stream at a time (RESET_STREAM / STOP_SENDING, §3.2–3.5). A
//! TLS alert during the handshake arrives as a CRYPTO_ERROR close, code `0x100 + alert`
//! (RFC 9001 §4.8). [`LinkError`] names those cases; [`ForwardError`] says at which step of a
//! forward they happened, which decides whether the task can safely go to another peer.

use std::error::Error;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::FrameError;

/// The underlying error, kept for logs (`Display` and `source()`) without exposing its type.
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync>);

impl Cause {
    pub(crate) fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// What went wrong on a QUIC connection or stream.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Nothing was heard from the peer for the idle timeout: it is down or unreachable.
    #[error("no answer from the peer within the idle timeout")]
    TimedOut,
    /// The TLS handshake was refused, by the peer or by us (certificate not from the cluster
    /// CA, wrong server name, no common ALPN).
    #[error("TLS handshake refused")]
    Tls {
        /// The TLS alert or verifier error.
        #[source]
        cause: Cause,
    },
    /// The peer refused the connection (QUIC CONNECTION_REFUSED, RFC 9000 §20.1), e.g. because
    /// it holds its maximum of connections or is shutting down.
    #[error("peer refused the connection")]
    Refused,
    /// The peer closed the connection with an application code (see `transport::codes`).
    #[error("peer closed the connection with code {code}")]
    PeerClosed {
        /// The peer's code, e.g. `CLOSE_SHUTDOWN`.
        code: u64,
    },
    /// The peer reset its side of the stream with an application code.
    #[error("peer reset the stream with code {code}")]
    StreamReset {
        /// The peer's code, e.g. `STREAM_SHUTTING_DOWN`.
        code: u64,
    },
    /// The peer stopped reading our side of the stream with an application code.
    #[error("peer stopped reading the stream with code {code}")]
    StreamStopped {
        /// The peer's code.
        code: u64,
    },
    /// The peer ended the stream cleanly without sending a whole response.
    #[error("peer ended the stream before a whole response")]
    EndedEarly,
    /// This node's endpoint is closed (it is shutting down).
    #[error("the local endpoint is closed")]
    LocallyClosed,
    /// The connection was lost another way (stateless reset, protocol violation, …).
    #[error("connection lost")]
    Lost {
        /// quinn's description.
        #[source]
        cause: Cause,
    },
}

impl LinkError {
    /// Maps a connection-level failure.
    pub(crate) fn from_connection(error: quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as E;
        match error {
            E::TimedOut => Self::TimedOut,
            E::LocallyClosed => Self::LocallyClosed,
            E::ApplicationClosed(close) => Self::PeerClosed {
                code: close.error_code.into_inner(),
            },
            E::TransportError(ref e) if is_crypto(e.code) => Self::Tls {
                cause: Cause::new(error),
            },
            E::ConnectionClosed(ref close) if is_crypto(close.error_code) => Self::Tls {
                cause: Cause::new(error),
            },
            E::ConnectionClosed(ref close)
                if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                Self::Refused
            }
            other => Self::Lost {
                cause: Cause::new(other),
            },
        }
    }

    /// Maps a failure to read from a stream.
    pub(crate) fn from_read(error: quinn::ReadError) -> Self {
        match error {
            quinn::ReadError::Reset(code) => Self::StreamReset {
                code: code.into_inner(),
            },
            quinn::ReadError::ConnectionLost(e) => Self::from_connection(e),
            other => Self::Lost {
                cause: Cause::new(other),
            },
        }
    }

    /// Maps a failure to write to a stream.
    pub(crate) fn from_write(error: quinn::WriteError) -> Self {
        match error {
            quinn::WriteError::Stopped(code) => Self::StreamStopped {
                code: code.into_inner(),
            },
            quinn::WriteError::ConnectionLost(e) => Self::from_connection(e),
            other => Self::Lost {
                cause: Cause::new(other),
            },
        }
    }

    /// Maps an `io::Error` from quinn's `AsyncRead`/`AsyncWrite` impls, which wrap a
    /// `ReadError` or `WriteError`.
    pub(crate) fn from_io(error: std::io::Error) -> Self {
        let Some(inner) = error.get_ref() else {
            return Self::Lost {
                cause: Cause::new(error),
            };
        };
        if let Some(read) = inner.downcast_ref::<quinn::ReadError>() {
            return Self::from_read(read.clone());
        }
        if let Some(write) = inner.downcast_ref::<quinn::WriteError>() {
            return Self::from_write(write.clone());
        }
        Self::Lost {
            cause: Cause::new(error),
        }
    }
}

/// A QUIC error code carrying a TLS alert (RFC 9001 §4.8).
fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..=0x1ff).contains(&u64::from(code))
}

/// Why [`ForwardClient::forward`](super::ForwardClient::forward) gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The request could not be encoded, or is larger than the frame limit; checked before
    /// anything is sent.
    #[error("request for task {task_id} cannot be sent")]
    Request {
        /// Id of the task.
        task_id: String,
        /// Why encoding failed (`FrameError::TooLarge` or `FrameError::Encode`).
        #[source]
        source: FrameError,
    },
    /// The peer's server name is not a valid DNS name.
    #[error("invalid server name {server_name:?}")]
    InvalidServerName {
        /// The name given.
        server_name: String,
    },
    /// No connection to the peer: unreachable within the connect timeout, TLS refused by
    /// either side, or connections refused. Nothing of the task reached the peer's handler.
    #[error("cannot connect to {peer}")]
    Connect {
        /// The peer dialled.
        peer: SocketAddr,
        /// What failed.
        #[source]
        source: LinkError,
    },
    /// The peer failed mid-task: the connection was lost (peer crashed, idle timeout) or the
    /// stream was reset. The peer may have started the task; no answer will come.
    #[error("stream to {peer} failed mid-task")]
    Stream {
        /// The peer.
        peer: SocketAddr,
        /// What failed.
        #[source]
        source: LinkError,
    },
    /// The peer refused the request frame as malformed or too large (`STREAM_BAD_REQUEST`).
    #[error("{peer} rejected the request frame")]
    Rejected {
        /// The peer.
        peer: SocketAddr,
    },
    /// No answer within the caller's timeout; the stream was cancelled (`STREAM_CANCELLED`).
    #[error("no answer from {peer} within {after:?}")]
    Timeout {
        /// The peer.
        peer: SocketAddr,
        /// The timeout that ran out.
        after: Duration,
    },
    /// The peer's answer is not a valid response frame.
    #[error("invalid response from {peer}")]
    Protocol {
        /// The peer.
        peer: SocketAddr,
        /// What is wrong with the frame.
        #[source]
        source: FrameError,
    },
}

impl ForwardError {
    /// Whether sending the same task to another peer is safe and may succeed.
    ///
    /// True when the failure belongs to this peer or this link: connect failures (nothing was
    /// delivered), streams lost mid-task (segmentation is a pure function of the request, so a
    /// peer that died half-way leaves nothing to undo), timeouts and invalid answers. False when
    /// any peer would fail the same way (the request itself is bad or was rejected), and when
    /// this node's endpoint is closed. The caller's retry budget still decides whether there is
    /// time left (`routing::RetryBudget`).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Request { .. } | Self::Rejected { .. } => false,
            Self::Connect { source, .. } | Self::Stream { source, .. } => {
                !matches!(source, LinkError::LocallyClosed)
            }
            Self::InvalidServerName { .. } | Self::Timeout { .. } | Self::Protocol { .. } => true,
        }
    }

    /// Whether the failure should count against the peer (its circuit breaker).
    ///
    /// False for failures of this node (bad request, invalid name, endpoint closed), for a
    /// request the peer rightly rejected, and for a peer that said it is shutting down
    /// (`CLOSE_SHUTDOWN`, `STREAM_SHUTTING_DOWN`): gossip takes a draining peer out of routing.
    pub fn is_peer_failure(&self) -> bool {
        use super::codes::{CLOSE_SHUTDOWN, STREAM_SHUTTING_DOWN};
        match self {
            Self::Request { .. } | Self::InvalidServerName { .. } | Self::Rejected { .. } => false,
            Self::Connect { source, .. } | Self::Stream { source, .. } => match source {
                LinkError::LocallyClosed => false,
                LinkError::PeerClosed { code } => *code != u64::from(CLOSE_SHUTDOWN),
                LinkError::StreamReset { code } => *code != u64::from(STREAM_SHUTTING_DOWN),
                _ => true,
            },
            Self::Timeout { .. } | Self::Protocol { .. } => true,
        }
    }
}
