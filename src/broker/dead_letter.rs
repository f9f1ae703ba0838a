//! Moving a message spheromesh cannot use to a separate durable queue, with the reason.
//!
//! The task queue itself must be declared with no arguments (contract section 1.2), so
//! RabbitMQ's own dead-lettering (`x-dead-letter-exchange`) is not available: we publish
//! the original body ourselves, wait for the broker's publisher confirm, and only then ack
//! the original. A message is never dropped silently; if the publish fails, the original
//! is requeued instead.

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation};

/// Header carrying why the message was dead-lettered.
pub const REASON_HEADER: &str = "x-spheromesh-reason";
/// Header naming the queue the message came from.
pub const SOURCE_QUEUE_HEADER: &str = "x-spheromesh-source-queue";
/// Header naming the node that dead-lettered it.
pub const INSTANCE_HEADER: &str = "x-spheromesh-instance";

/// Why a message could not be dead-lettered (it is requeued instead).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeadLetterError {
    /// The publish or its confirm failed.
    #[error("dead-letter publish failed")]
    Broker(#[from] lapin::Error),
    /// The broker answered the publish with a negative confirm.
    #[error("broker refused (nack) the dead-letter publish")]
    Nacked,
}

/// Declares the dead-letter queue: durable, no arguments, like the task queue.
pub(crate) async fn declare(channel: &Channel, queue: &str) -> lapin::Result<()> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ())
}

/// Publishes `body` to `queue` (persistent, with the reason headers) and waits for the
/// broker's confirm. `channel` must be in confirm mode.
///
/// # Errors
/// [`DeadLetterError`]: the broker failed or refused the publish.
pub(crate) async fn publish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    reason: &str,
    source_queue: &str,
    instance: &str,
) -> Result<(), DeadLetterError> {
    let mut headers = FieldTable::default();
    for (k, v) in [
        (REASON_HEADER, reason),
        (SOURCE_QUEUE_HEADER, source_queue),
        (INSTANCE_HEADER, instance),
    ] {
        headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    }
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    publish_confirmed(channel, queue, body, props).await
}

/// Publishes `body` with `props` to `queue` on the default exchange and waits for the
/// broker's confirm (`channel` in confirm mode).
///
/// # Errors
/// [`DeadLetterError`]: the broker failed or refused (nack) the publish.
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), DeadLetterError> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
        Confirmation::Nack(_) => Err(DeadLetterError::Nacked),
    }
}
