//! One forwarded task on the serving side: one bidirectional QUIC stream (RFC 9000 §2.1)
//! carrying one request frame in and one response frame out.
//!
//! Failures stay on the stream. A malformed, truncated or oversize request resets this
//! stream with `STREAM_BAD_REQUEST` (RESET_STREAM and STOP_SENDING, §3.5) and leaves the
//! connection and its other tasks alone. A client that stops the stream (timeout) or loses its
//! connection cancels the handler, since nobody would read the answer. A panicking handler
//! answers `STREAM_INTERNAL`; a task cut off by shutdown answers `STREAM_SHUTTING_DOWN`.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, error, warn, Span};

use super::codes::{varint, STREAM_BAD_REQUEST, STREAM_INTERNAL, STREAM_SHUTTING_DOWN};
use super::metrics::{Counter, ServerMetrics};
use super::server::TaskHandler;
use crate::protocol::{read_frame, write_frame, FrameError, TaskRequest};

/// Serves one stream: read the request, run the handler, write the answer.
pub(crate) async fn serve_stream<H: TaskHandler>(
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    handler: Arc<H>,
    remote: SocketAddr,
    metrics: Arc<ServerMetrics>,
    max_frame: usize,
) {
    // Dropped before the answer is finished (cancellation at shutdown, an early return), the
    // guard resets the stream; quinn would otherwise finish it and the peer would read a
    // clean end of stream instead of a failure.
    let mut reply = Reply { send, done: false };
    let request: TaskRequest = match read_frame(&mut recv, max_frame).await {
        Ok(request) => request,
        Err(FrameError::Io(error)) => {
            // The stream or connection failed under us: not the peer's frame's fault.
            debug!(%error, "request stream failed");
            return;
        }
        Err(error) => {
            metrics.inc(Counter::BadFrames);
            warn!(%error, "bad request frame, resetting the stream");
            // Both fail only if the stream is already closed, which is the aim anyway.
            let _ = recv.stop(varint(STREAM_BAD_REQUEST));
            reply.reset(STREAM_BAD_REQUEST);
            return;
        }
    };
    // Anything after the one request frame is not read; `recv` is stopped when dropped.
    drop(recv);
    Span::current().record("task_id", request.task_id.as_str());

    // The handler runs as its own task so that a panic in it is caught here (as a JoinError)
    // and answered, instead of unwinding through the connection's task.
    let task = AbortOnDropHandle::new(tokio::spawn(async move {
        handler.handle(request, remote).await
    }));
    let stopped = reply.send.stopped();
    let response = tokio::select! {
        joined = task => joined,
        stop = stopped => {
            // Dropping `task` at the end of this arm aborts the handler.
            metrics.inc(Counter::Cancelled);
            debug!(?stop, "peer gave up on the task, cancelling it");
            return;
        }
    };
    let response = match response {
        Ok(response) => response,
        Err(join_error) => {
            metrics.inc(Counter::HandlerPanics);
            error!(error = %join_error, "task handler panicked");
            reply.reset(STREAM_INTERNAL);
            return;
        }
    };
    match write_frame(&mut reply.send, &response, max_frame).await {
        Ok(()) => {}
        Err(FrameError::Io(error)) => {
            debug!(%error, "peer went away before the answer was sent");
            return;
        }
        Err(error) => {
            error!(%error, "cannot encode the answer");
            reply.reset(STREAM_INTERNAL);
            return;
        }
    }
    if reply.send.finish().is_err() {
        return;
    }
    reply.done = true;
    // Wait until the peer has acknowledged the whole answer (or stopped the stream), so a
    // shutdown that closes the connection right after this task ends cannot cut it off.
    // Bounded by the idle timeout if the peer vanishes.
    let _ = reply.send.stopped().await;
    metrics.inc(Counter::TasksAnswered);
}

/// The send side of a task's stream, reset with `STREAM_SHUTTING_DOWN` if dropped unanswered.
struct Reply {
    send: quinn::SendStream,
    done: bool,
}

impl Reply {
    /// Resets the stream with `code` (no-op if it is already finished or reset).
    fn reset(&mut self, code: u32) {
        self.done = true;
        let _ = self.send.reset(varint(code));
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.send.reset(varint(STREAM_SHUTTING_DOWN));
        }
    }
}
