//! A segmentation task as every entry point (HTTP, RabbitMQ) hands it to the node, its
//! result, and the ways it can fail.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

pub use spheromesh_mesh::routing::Policy;

/// One image to segment, with its per-request parameters.
#[derive(Clone)]
pub struct SegmentTask {
    /// Id naming the task in logs on every node it touches.
    pub task_id: String,
    /// The encoded image bytes (PNG, JPEG, TIFF or BMP).
    pub image: Vec<u8>,
    /// Probability threshold, strictly between 0 and 1.
    pub threshold: f32,
    /// Optional polygon simplification tolerance in pixels.
    pub simplify_tolerance: Option<f64>,
    /// When the answer stops being useful; work not finished by then fails with
    /// [`TaskError::DeadlineExceeded`].
    pub deadline: Instant,
}

// A derived `Debug` would print every byte of the image into the logs.
impl fmt::Debug for SegmentTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentTask")
            .field("task_id", &self.task_id)
            .field("image_bytes", &self.image.len())
            .field("threshold", &self.threshold)
            .field("simplify_tolerance", &self.simplify_tolerance)
            .finish_non_exhaustive()
    }
}

/// A segmented image.
#[derive(Debug, Clone)]
pub struct TaskResult {
    /// The contract's polygon list (section 4 of the backend contract).
    pub polygons: serde_json::Value,
    /// Width of the image in pixels.
    pub width: u32,
    /// Height of the image in pixels.
    pub height: u32,
    /// Time the task took on the node that ran it (queue wait plus compute).
    pub processing_time: Duration,
    /// Instance id of the node that ran the model.
    pub processed_by: String,
    /// Instance id of the node that took the task in.
    pub entry_node: String,
    /// How many times the task was forwarded (0: it ran where it came in).
    pub hops: u8,
}

/// Why a task produced no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// A request parameter is invalid (e.g. a threshold outside 0..1).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The image is larger than the configured byte limit.
    #[error("{0}")]
    TooLarge(String),
    /// The bytes are not a supported image format.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The image could not be decoded (corrupt, truncated, zero pixels, too many pixels).
    #[error("bad image: {0}")]
    BadImage(String),
    /// Neither this node nor any peer has room now; try again after `retry_after`.
    #[error("every node of the mesh is busy")]
    Busy {
        /// Suggested wait before trying again.
        retry_after: Duration,
    },
    /// This node is draining and takes no new work.
    #[error("this node is shutting down")]
    ShuttingDown,
    /// The deadline passed before the result was ready.
    #[error("the task did not finish before its deadline")]
    DeadlineExceeded,
    /// Something inside the mesh failed (model error, every attempt failed).
    #[error("internal error: {0}")]
    Internal(String),
}

impl TaskError {
    /// Whether the failure is a property of the task itself, so running it again anywhere
    /// would fail the same way (the RabbitMQ consumer sends `failed` and acks these, and
    /// requeues the rest).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TaskError::InvalidRequest(_)
                | TaskError::TooLarge(_)
                | TaskError::UnsupportedMediaType(_)
                | TaskError::BadImage(_)
        )
    }

    /// A short stable name for logs, metrics and the HTTP `code` field.
    pub fn code(&self) -> &'static str {
        match self {
            TaskError::InvalidRequest(_) => "invalid_request",
            TaskError::TooLarge(_) => "payload_too_large",
            TaskError::UnsupportedMediaType(_) => "unsupported_media_type",
            TaskError::BadImage(_) => "bad_image",
            TaskError::Busy { .. } => "busy",
            TaskError::ShuttingDown => "shutting_down",
            TaskError::DeadlineExceeded => "deadline_exceeded",
            TaskError::Internal(_) => "internal",
        }
    }
}

/// What an entry point needs from the node: run a task somewhere in the mesh, and know how
/// much work the mesh could start right now.
pub trait TaskRunner: Send + Sync + 'static {
    /// This node's instance id (`processed_by` / `entry_node` of what it runs / takes in).
    fn instance_id(&self) -> &str;

    /// Tasks that could start now without queueing: free slots here plus free slots of
    /// the ready, non-draining peers this node knows of.
    fn startable_now(&self) -> u32;

    /// Runs `task` here or on a peer, placed by `policy` (HTTP work:
    /// [`Policy::Fastest`]; broker work pulled for a free slot: [`Policy::FreeSlotFirst`]),
    /// and waits for its result.
    fn run(
        &self,
        task: SegmentTask,
        policy: Policy,
    ) -> impl Future<Output = Result<TaskResult, TaskError>> + Send;
}
