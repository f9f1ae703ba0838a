//! The forward protocol: how a busy node hands a task to a peer.
//!
//! The forwarding node opens a QUIC connection (RFC 9000) secured by TLS 1.3 (RFC 9001) with
//! [`ALPN`] and mutual certificates from the cluster CA (see `crate::security`), opens one
//! bidirectional stream per task, writes one [`TaskRequest`] frame and finishes its send side;
//! the peer answers with one [`TaskResponse`] frame and finishes too. Frames are a 4-byte
//! big-endian length and a MessagePack body (see [`read_frame`]); every read is bounded by
//! [`DEFAULT_MAX_FRAME`], sized for the largest image a node accepts.
//!
//! The protocol version lives in the ALPN, not in the frames: an incompatible change gets a new
//! ALPN (`spheromesh/forward/2`), and a node that supports both lists both.

mod frame;
mod messages;

#[cfg(test)]
mod test;

pub use frame::{
    decode, encode, read_frame, read_frame_body, write_frame, FrameError, DEFAULT_MAX_FRAME,
    HEADER_LEN, MAX_IMAGE_BYTES,
};
pub use messages::{FailureKind, TaskRequest, TaskResponse, MAX_BUDGET};

/// ALPN protocol id of the forward protocol, version included (RFC 7301).
pub const ALPN: &[u8] = b"spheromesh/forward/1";
