//! Application error codes the forward protocol puts on the wire.
//!
//! QUIC leaves the meaning of the codes in CONNECTION_CLOSE (type 0x1d), RESET_STREAM and
//! STOP_SENDING frames to the application protocol (RFC 9000 §20.2). These are
//! `spheromesh/forward/1`'s; a peer that does not know a code treats it as a generic failure.
//! Code 0 means "no error" on a connection and "done, no more needed" on a stream (quinn sends
//! it when a stream handle is dropped).

/// Connection closed because this node is shutting down; the peer should dial elsewhere.
pub const CLOSE_SHUTDOWN: u32 = 0x01;
/// Connection closed because the server already holds its maximum number of connections.
pub const CLOSE_OVERLOADED: u32 = 0x02;

/// Stream reset by the server: the request frame was malformed or larger than the limit.
///
/// Sending the same bytes elsewhere would fail the same way, so the client does not retry.
pub const STREAM_BAD_REQUEST: u32 = 0x10;
/// Stream stopped by the client: it stopped waiting (timeout) and will not read the answer.
///
/// The server cancels the task's handler when it sees this.
pub const STREAM_CANCELLED: u32 = 0x11;
/// Stream reset by the server: the task was cancelled because the server is shutting down.
pub const STREAM_SHUTTING_DOWN: u32 = 0x12;
/// Stream reset by the server: its handler panicked; the task may succeed on another peer.
pub const STREAM_INTERNAL: u32 = 0x13;

/// Converts a code to quinn's variable-length integer (every `u32` fits).
pub(crate) fn varint(code: u32) -> quinn::VarInt {
    quinn::VarInt::from_u32(code)
}
