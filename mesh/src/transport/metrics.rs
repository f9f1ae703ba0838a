//! Counters of the forward server, one per thing an operator asks about a QUIC listener:
//! how many peers came, how many were turned away, and what happened to their tasks
//! (streams, RFC 9000 §2).
//!
//! Plain relaxed atomics: each counter is read on its own for logs and tests, never compared
//! with another in the same instant.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one server, from [`ServerHandle::metrics`](super::ServerHandle::metrics).
#[derive(Debug, Default)]
pub struct ServerMetrics {
    connections: AtomicU64,
    refused: AtomicU64,
    handshake_failures: AtomicU64,
    tasks_answered: AtomicU64,
    bad_frames: AtomicU64,
    cancelled: AtomicU64,
    handler_panics: AtomicU64,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Connections,
    Refused,
    HandshakeFailures,
    TasksAnswered,
    BadFrames,
    Cancelled,
    HandlerPanics,
}

impl ServerMetrics {
    /// Connections whose mutual-TLS handshake succeeded.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Connection attempts refused because the server held its maximum of connections.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Handshakes that failed: certificate not from the cluster CA, no common ALPN, or the
    /// peer vanished mid-handshake.
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    /// Tasks whose response was written and acknowledged by the peer.
    pub fn tasks_answered(&self) -> u64 {
        self.tasks_answered.load(Ordering::Relaxed)
    }

    /// Streams reset with `STREAM_BAD_REQUEST`: malformed, truncated or oversize request frames.
    pub fn bad_frames(&self) -> u64 {
        self.bad_frames.load(Ordering::Relaxed)
    }

    /// Tasks abandoned because the peer stopped waiting or its connection was lost.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Handler calls that panicked (answered with `STREAM_INTERNAL`).
    pub fn handler_panics(&self) -> u64 {
        self.handler_panics.load(Ordering::Relaxed)
    }

    /// Adds one to `counter`.
    pub(crate) fn inc(&self, counter: Counter) {
        let cell = match counter {
            Counter::Connections => &self.connections,
            Counter::Refused => &self.refused,
            Counter::HandshakeFailures => &self.handshake_failures,
            Counter::TasksAnswered => &self.tasks_answered,
            Counter::BadFrames => &self.bad_frames,
            Counter::Cancelled => &self.cancelled,
            Counter::HandlerPanics => &self.handler_panics,
        };
        cell.fetch_add(1, Ordering::Relaxed);
    }
}
