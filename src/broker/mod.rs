//! The RabbitMQ drop-in: consumes the SpherosegV4 backend's `segmentation_tasks` queue and
//! answers through its HTTP callback, exactly as the old Python service did (backend
//! contract sections 1-3), with three differences that the contract asks for:
//!
//! - a node takes a message only when it or an idle peer can start it now (no
//!   head-of-line blocking behind a long task; see [`run_consumer`]'s module notes);
//! - a malformed message is moved to a dead-letter queue with the reason, never dropped;
//! - a message is acked only after its callback got a 2xx; failing callbacks are retried
//!   for a bounded time, then the message is requeued.
//!
//! Wiring: flatten [`BrokerArgs`] into the node's arguments, turn it into a
//! [`BrokerConfig`] with [`BrokerConfig::from_args`] (`None`: no broker configured), create
//! a [`BrokerStatus`], and spawn [`run_consumer`] with the node's [`TaskRunner`].
//!
//! [`TaskRunner`]: crate::node::TaskRunner

mod backoff;
mod cache;
mod callback;
mod config;
mod consumer;
mod dead_letter;
mod handler;
mod message;
mod redelivery;
mod status;

pub use crate::uploads::PathError;
pub use backoff::{Backoff, InvalidBackoff};
pub use callback::CallbackError;
pub use config::{
    BrokerArgs, BrokerConfig, ConfigError, DEFAULT_QUEUE, DEFAULT_UPLOADS_ROOT, DEFAULT_USER_AGENT,
};
pub use consumer::{run_consumer, ConsumerError};
pub use dead_letter::{INSTANCE_HEADER, REASON_HEADER, SOURCE_QUEUE_HEADER};
pub use message::Malformed;
pub use redelivery::FAILURES_HEADER;
pub use status::{BrokerStatus, BrokerStatusSnapshot};

/// `error: cause: cause`, for logs and the `failed` callback's human-readable reason.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
