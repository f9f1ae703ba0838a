//! The node runtime: an [`Executor`] with bounded slots and queue, a [`Dispatcher`] that
//! runs each task here or forwards it over the mesh, and the task types every entry point
//! (HTTP, RabbitMQ, QUIC peers) shares.

mod dispatch;
mod driver;
mod engine;
mod executor;
pub mod metrics;
mod peers;
mod stats;
mod task;

pub use dispatch::{Dispatcher, DEFAULT_SERVICE, ENTRY_WINDOW};
pub use engine::{model_label, Engine, EngineOutput, SyntheticSpec, SYNTHETIC_PREFIX};
pub use executor::{Admission, Executor, ExecutorLimits, LocalRun};
pub use peers::{Inflight, PeerTable};
pub use stats::WorkCounters;
pub use task::{Policy, SegmentTask, TaskError, TaskResult, TaskRunner};
