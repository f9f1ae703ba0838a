//! Messages of the forward protocol: one [`TaskRequest`] from the forwarding node, one
//! [`TaskResponse`] back, each in its own frame (see [`super::frame`]).
//!
//! Enums are externally tagged and structs are encoded as MessagePack maps with field names
//! (`rmp_serde::to_vec_named`), so a reader can tell which field is which. Any change that an
//! older peer cannot decode needs a new ALPN ([`super::ALPN`]); a peer that offers only the old
//! ALPN then fails the handshake instead of failing on a frame.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Largest task budget a receiver honours; a peer announcing more gets this much.
pub const MAX_BUDGET: Duration = Duration::from_secs(24 * 60 * 60);

/// A segmentation task forwarded from a busy node to a peer.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// Id of the task, as given by the entry node; it names the task in logs on every hop.
    pub task_id: String,
    /// The encoded image (PNG, JPEG, TIFF or BMP), exactly as the client sent it.
    #[serde(with = "serde_bytes")]
    pub image: Vec<u8>,
    /// Probability threshold for the mask, in `0.0..=1.0`.
    pub threshold: f32,
    /// Douglas–Peucker tolerance in pixels for the polygons; `None` keeps every vertex.
    pub simplify_tolerance: Option<f64>,
    /// Time left for the task, in milliseconds, when the request was sent.
    ///
    /// This is a budget, not a wall-clock deadline: peers' clocks differ, so the receiver
    /// turns it into its own [`Instant`] on arrival (see [`TaskRequest::deadline_from`]).
    pub deadline_ms: u64,
    /// How many times the task has been forwarded already; the entry node sends 0.
    pub hops: u8,
    /// Node id of the node that took the task from the queue and answers the client.
    pub entry_node: String,
    /// The sender placed the task here expecting a placement cost of about this many
    /// milliseconds: a receiver whose own cost for it is above this answers busy at once
    /// instead of queueing it, so the sender can place it again with fresh numbers (its view
    /// was stale). `None`: take it if there is room. Optional on the wire, like
    /// `active_after`.
    #[serde(default)]
    pub refuse_above_ms: Option<u64>,
}

impl TaskRequest {
    /// The local deadline of the task: `received_at` plus the remaining budget.
    ///
    /// The budget is capped at [`MAX_BUDGET`]: it comes from a peer, and `Instant + Duration`
    /// panics on overflow.
    pub fn deadline_from(&self, received_at: Instant) -> Instant {
        let budget = Duration::from_millis(self.deadline_ms).min(MAX_BUDGET);
        // Only fails on a platform whose `Instant` cannot reach one day ahead.
        received_at.checked_add(budget).unwrap_or(received_at)
    }
}

// A derived `Debug` would print every byte of the image into the logs.
impl fmt::Debug for TaskRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRequest")
            .field("task_id", &self.task_id)
            .field("image", &ByteLen(self.image.len()))
            .field("threshold", &self.threshold)
            .field("simplify_tolerance", &self.simplify_tolerance)
            .field("deadline_ms", &self.deadline_ms)
            .field("hops", &self.hops)
            .field("entry_node", &self.entry_node)
            .field("refuse_above_ms", &self.refuse_above_ms)
            .finish()
    }
}

/// The answer of the peer that received a [`TaskRequest`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskResponse {
    /// The peer segmented the image.
    Done {
        /// The contract's polygons JSON, already serialised; opaque to the mesh.
        #[serde(with = "serde_bytes")]
        polygons_json: Vec<u8>,
        /// Width of the decoded image in pixels.
        width: u32,
        /// Height of the decoded image in pixels.
        height: u32,
        /// Time the peer spent on the task, in milliseconds.
        processing_ms: u64,
        /// Node id of the peer that ran the model.
        processed_by: String,
        /// The peer's tasks running plus queued once this one finished: its load,
        /// piggybacked on the answer so the sender need not wait for the next gossip round.
        /// `None` from a peer that does not send it (the field is optional on the wire, so
        /// peers with and without it understand each other on the same ALPN).
        #[serde(default)]
        active_after: Option<u32>,
    },
    /// The peer has no capacity now; the sender may try it again after `retry_after_ms`.
    Busy {
        /// Suggested wait before the same peer is asked again, in milliseconds.
        retry_after_ms: u64,
        /// The peer's tasks running plus queued when it answered (optional on the wire).
        #[serde(default)]
        active_now: Option<u32>,
    },
    /// The peer took the task and failed it.
    Failed {
        /// What went wrong; decides whether another attempt can help.
        kind: FailureKind,
        /// Human-readable detail for logs; not meant to be matched on.
        message: String,
    },
}

impl TaskResponse {
    /// Whether sending the same task again (to this or another peer) may succeed.
    ///
    /// `Busy` is retryable, `Done` needs no retry, and `Failed` follows
    /// [`FailureKind::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        match self {
            TaskResponse::Done { .. } => false,
            TaskResponse::Busy { .. } => true,
            TaskResponse::Failed { kind, .. } => kind.is_retryable(),
        }
    }
}

// A derived `Debug` would print the whole polygons JSON into the logs.
impl fmt::Debug for TaskResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskResponse::Done {
                polygons_json,
                width,
                height,
                processing_ms,
                processed_by,
                active_after,
            } => f
                .debug_struct("Done")
                .field("polygons_json", &ByteLen(polygons_json.len()))
                .field("width", width)
                .field("height", height)
                .field("processing_ms", processing_ms)
                .field("processed_by", processed_by)
                .field("active_after", active_after)
                .finish(),
            TaskResponse::Busy {
                retry_after_ms,
                active_now,
            } => f
                .debug_struct("Busy")
                .field("active_now", active_now)
                .field("retry_after_ms", retry_after_ms)
                .finish(),
            TaskResponse::Failed { kind, message } => f
                .debug_struct("Failed")
                .field("kind", kind)
                .field("message", message)
                .finish(),
        }
    }
}

/// Why a peer failed a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The image could not be decoded or is out of bounds: permanent, every peer would fail it.
    BadImage,
    /// An error inside the peer (model, resources): another attempt may succeed.
    Internal,
    /// The task's budget ran out on the peer: permanent, the entry node's budget is spent too.
    DeadlineExceeded,
    /// The peer is draining and took no work: another peer can take the task.
    ShuttingDown,
}

impl FailureKind {
    /// Whether another attempt, on this or another peer, may succeed.
    ///
    /// `BadImage` is a property of the input and `DeadlineExceeded` means the budget that
    /// started at the entry node is gone, so neither is retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            FailureKind::BadImage | FailureKind::DeadlineExceeded => false,
            FailureKind::Internal | FailureKind::ShuttingDown => true,
        }
    }
}

/// Debug helper that prints a byte count instead of the bytes.
struct ByteLen(usize);

impl fmt::Debug for ByteLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(!FailureKind::BadImage.is_retryable());
        assert!(!FailureKind::DeadlineExceeded.is_retryable());
        assert!(FailureKind::Internal.is_retryable());
        assert!(FailureKind::ShuttingDown.is_retryable());
        assert!(TaskResponse::Busy {
            retry_after_ms: 5,
            active_now: None,
        }
        .is_retryable());
        let bad = TaskResponse::Failed {
            kind: FailureKind::BadImage,
            message: "not a png".into(),
        };
        assert!(!bad.is_retryable());
    }

    #[test]
    fn debug_hides_payload_bytes() {
        let request = TaskRequest {
            task_id: "t1".into(),
            image: vec![7; 1000],
            threshold: 0.5,
            simplify_tolerance: None,
            deadline_ms: 1,
            hops: 0,
            entry_node: "a".into(),
            refuse_above_ms: None,
        };
        let text = format!("{request:?}");
        assert!(text.contains("<1000 bytes>"), "{text}");
        assert!(!text.contains("7, 7"), "{text}");
    }

    #[test]
    fn deadline_saturates_on_huge_budget() {
        let now = Instant::now();
        let request = TaskRequest {
            task_id: "t".into(),
            image: Vec::new(),
            threshold: 0.5,
            simplify_tolerance: Some(1.0),
            deadline_ms: u64::MAX,
            hops: 1,
            entry_node: "a".into(),
            refuse_above_ms: None,
        };
        assert_eq!(request.deadline_from(now), now + MAX_BUDGET);
        let short = TaskRequest {
            deadline_ms: 250,
            ..request
        };
        assert_eq!(short.deadline_from(now), now + Duration::from_millis(250));
    }
}
