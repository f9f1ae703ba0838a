//! The redelivery cap: a message that keeps failing is not requeued forever.
//!
//! The task queue is declared exactly as the backend declares it (a classic queue with no
//! arguments), so RabbitMQ counts nothing for us: a plain requeue only sets `redelivered`,
//! and quorum queues' `x-delivery-count` is not available. A per-node counter would let a
//! poison message cycle `cap x nodes` times and forget its count whenever a node restarts.
//! So a failure is requeued by **republishing** the message to the task queue with its
//! failure count in a header ([`FAILURES_HEADER`], the backend's own headers and properties
//! kept), waiting for the broker's confirm, and only then acking the original: the count
//! travels with the message across nodes and restarts, and nothing is lost if the publish
//! fails (the original is requeued plainly instead). At the cap the message goes to the
//! dead-letter queue with the reason.
//!
//! Only failures count: a task that failed inside the engine or ran past its deadline,
//! and a callback that was never accepted within its retry window. "Busy" and "draining"
//! requeues are the mesh saying "not now", say nothing about the message, and are plain
//! requeues that keep its place in the queue.

use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

use super::dead_letter::{self, DeadLetterError};

/// Header carrying how many times this message has failed so far.
pub const FAILURES_HEADER: &str = "x-spheromesh-failures";

/// Default for how many failures a message may have before it is dead-lettered.
pub(crate) const DEFAULT_MAX_FAILURES: u32 = 5;

/// What to do with a message that just failed once more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Put it back with this failure count.
    Retry {
        /// Failures including this one.
        failures: u32,
    },
    /// It has failed `failures` times (the cap): dead-letter it.
    GiveUp {
        /// Failures including this one.
        failures: u32,
    },
}

/// The decision for a message that had failed `so_far` times and just failed again.
pub(crate) fn after_failure(so_far: u32, max_failures: u32) -> AfterFailure {
    let failures = so_far.saturating_add(1);
    if failures >= max_failures {
        AfterFailure::GiveUp { failures }
    } else {
        AfterFailure::Retry { failures }
    }
}

/// The failure count a delivery carries (0 when it has none or it is not a number).
pub(crate) fn failures_so_far(properties: &BasicProperties) -> u32 {
    let Some(headers) = properties.headers() else {
        return 0;
    };
    let value = headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == FAILURES_HEADER)
        .map(|(_, v)| v);
    match value {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::ShortInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongString(s)) => s.to_string().trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// Republishes `body` to `queue` with `properties` (the original's) and the failure count
/// set to `failures`, persistent, and waits for the broker's confirm. `channel` must be in
/// confirm mode.
///
/// # Errors
/// [`DeadLetterError`]: the broker failed or refused the publish (requeue plainly then).
pub(crate) async fn republish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: &BasicProperties,
    failures: u32,
) -> Result<(), DeadLetterError> {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(FAILURES_HEADER.into(), AMQPValue::LongUInt(failures));
    let props = properties
        .clone()
        .with_delivery_mode(2)
        .with_headers(FieldTable::from(headers.inner().clone()));
    dead_letter::publish_confirmed(channel, queue, body, props).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;
    use proptest::prelude::*;

    fn with_header(value: AMQPValue) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(FAILURES_HEADER.into(), value);
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn the_count_is_read_from_any_integer_or_text_header() {
        assert_eq!(failures_so_far(&BasicProperties::default()), 0);
        assert_eq!(failures_so_far(&with_header(AMQPValue::LongUInt(3))), 3);
        assert_eq!(failures_so_far(&with_header(AMQPValue::LongInt(2))), 2);
        assert_eq!(failures_so_far(&with_header(AMQPValue::LongLongInt(4))), 4);
        assert_eq!(
            failures_so_far(&with_header(AMQPValue::LongString(LongString::from("7")))),
            7
        );
        assert_eq!(failures_so_far(&with_header(AMQPValue::LongInt(-1))), 0);
        assert_eq!(failures_so_far(&with_header(AMQPValue::Boolean(true))), 0);
    }

    #[test]
    fn the_message_is_given_up_on_its_max_th_failure() {
        assert_eq!(after_failure(0, 3), AfterFailure::Retry { failures: 1 });
        assert_eq!(after_failure(1, 3), AfterFailure::Retry { failures: 2 });
        assert_eq!(after_failure(2, 3), AfterFailure::GiveUp { failures: 3 });
        assert_eq!(after_failure(0, 1), AfterFailure::GiveUp { failures: 1 });
        assert_eq!(
            after_failure(u32::MAX, 5),
            AfterFailure::GiveUp { failures: u32::MAX }
        );
    }

    proptest! {
        /// Following the decisions from a fresh message, it is retried exactly
        /// `max - 1` times and then given up: never forever, never early.
        #[test]
        fn a_failing_message_is_retried_max_minus_one_times(max in 1u32..50) {
            let mut so_far = 0;
            let mut retries = 0;
            loop {
                match after_failure(so_far, max) {
                    AfterFailure::Retry { failures } => {
                        prop_assert_eq!(failures, so_far + 1);
                        so_far = failures;
                        retries += 1;
                    }
                    AfterFailure::GiveUp { failures } => {
                        prop_assert_eq!(failures, max);
                        break;
                    }
                }
                prop_assert!(retries < max, "retried past the cap");
            }
            prop_assert_eq!(retries, max - 1);
        }
    }
}
