//! Settings of the QUIC transport, with their defaults in one place.
//!
//! QUIC (RFC 9000 §10.1) closes a connection that hears nothing from its peer for the idle
//! timeout; a keep-alive (a PING frame, RFC 9000 §19.2) sent well inside that timeout keeps a
//! healthy but quiet connection open, so the idle timeout becomes a failure detector: a peer
//! that crashed or lost its network is noticed by every connection to it within
//! [`TransportConfig::idle_timeout`], whether or not gossip has noticed yet.

use std::time::Duration;

use crate::protocol::DEFAULT_MAX_FRAME;

/// Default interval between keep-alive PINGs on an otherwise quiet connection.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Default idle timeout: a connection that hears nothing for this long is dead.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a forward may spend dialling a peer before it counts as unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default number of tasks one peer may have in flight on one connection.
pub const DEFAULT_MAX_STREAMS: u32 = 64;
/// Default number of connections a server keeps at once; more are refused.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default time in-flight tasks get to finish when a server shuts down.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Settings of a [`MeshEndpoint`](super::MeshEndpoint), its client and its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Interval between keep-alive PINGs; must be shorter than `idle_timeout`.
    pub keep_alive: Duration,
    /// Silence after which a connection is declared dead (the lower of both ends' values is
    /// used, RFC 9000 §10.1); bounds how long a dead peer goes unnoticed.
    pub idle_timeout: Duration,
    /// How long [`ForwardClient::forward`](super::ForwardClient::forward) may spend opening a
    /// connection before it fails with a connect error (retrying elsewhere is then safe).
    pub connect_timeout: Duration,
    /// Bidirectional streams, i.e. tasks, a peer may have open at once on one connection
    /// (QUIC stream flow control, RFC 9000 §4.6). A forward beyond that waits for a slot.
    pub max_concurrent_streams: u32,
    /// Largest request frame body a server reads, and largest response a client reads.
    pub max_frame: usize,
    /// Connections a server holds at once; further handshakes are refused.
    pub max_connections: usize,
    /// Time in-flight tasks get to finish on shutdown before they are cancelled.
    pub shutdown_grace: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            keep_alive: DEFAULT_KEEP_ALIVE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_concurrent_streams: DEFAULT_MAX_STREAMS,
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// A rule of [`TransportConfig`] that a value breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The keep-alive would not keep the connection alive.
    #[error(
        "keep-alive {keep_alive:?} must be non-zero and shorter than idle timeout {idle_timeout:?}"
    )]
    KeepAlive {
        /// The keep-alive interval given.
        keep_alive: Duration,
        /// The idle timeout given.
        idle_timeout: Duration,
    },
    /// QUIC encodes the idle timeout in milliseconds as a variable-length integer.
    #[error("idle timeout {idle_timeout:?} must be between 1 ms and 2^62 ms")]
    IdleTimeout {
        /// The idle timeout given.
        idle_timeout: Duration,
    },
    /// A count or duration that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// Name of the field.
        field: &'static str,
    },
}

impl TransportConfig {
    /// Settings for loopback tests: short timeouts so a dead peer is noticed in about a second.
    pub fn for_test() -> Self {
        Self {
            keep_alive: Duration::from_millis(200),
            idle_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            ..Self::default()
        }
    }

    /// Settings for a node whose gossip declares a silent peer dead after `dead_after`: the
    /// idle timeout equals `dead_after` and a keep-alive goes every quarter of it, so a
    /// connection to a peer that crashed, froze or lost its link is closed about when
    /// gossip declares the peer dead (the defaults' 10 s left tasks on a killed peer
    /// waiting five times longer than gossip). In-flight tasks get `shutdown_grace` at
    /// shutdown. Everything else is the default.
    pub fn sized_to_failure_detector(dead_after: Duration, shutdown_grace: Duration) -> Self {
        Self {
            keep_alive: dead_after / 4,
            idle_timeout: dead_after,
            shutdown_grace,
            ..Self::default()
        }
    }

    /// Checks every rule and names the first one broken.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for the first broken rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return Err(ConfigError::KeepAlive {
                keep_alive: self.keep_alive,
                idle_timeout: self.idle_timeout,
            });
        }
        if self.idle_timeout < Duration::from_millis(1)
            || quinn::IdleTimeout::try_from(self.idle_timeout).is_err()
        {
            return Err(ConfigError::IdleTimeout {
                idle_timeout: self.idle_timeout,
            });
        }
        let zero = [
            ("connect_timeout", self.connect_timeout.is_zero()),
            ("max_concurrent_streams", self.max_concurrent_streams == 0),
            ("max_frame", self.max_frame == 0),
            ("max_connections", self.max_connections == 0),
        ];
        if let Some((field, _)) = zero.into_iter().find(|(_, is_zero)| *is_zero) {
            return Err(ConfigError::Zero { field });
        }
        Ok(())
    }

    /// quinn's transport parameters for one side: the server side accepts
    /// `max_concurrent_streams` bidirectional streams, the client side accepts none (peers
    /// never open streams towards the node that dialled them). Neither accepts unidirectional
    /// streams.
    pub(crate) fn quinn_transport(&self, server: bool) -> quinn::TransportConfig {
        let mut transport = quinn::TransportConfig::default();
        let streams = if server {
            self.max_concurrent_streams
        } else {
            0
        };
        transport
            .keep_alive_interval(Some(self.keep_alive))
            // `validate` checked that the timeout fits; `None` (never time out) is not reachable.
            .max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok())
            .max_concurrent_bidi_streams(streams.into())
            .max_concurrent_uni_streams(0u8.into());
        transport
    }
}
