//! The node runtime.

mod task;

pub use task::{SegmentTask, TaskError, TaskResult, TaskRunner};
