//! What the consumer is doing, for `/health` (`processing.rabbitmq_connected`,
//! `prefetch_count`), `/metrics` (`ml_queue_size`) and gossip.
//!
//! Plain atomics behind an `Arc`: the consumer writes, any number of readers take a
//! [`BrokerStatusSnapshot`] without locking. In-hand deliveries are counted by an RAII
//! guard ([`InHand`]) so that the count cannot leak on an early return or a panic (the
//! same idea as tower's `load::pending_requests::Handle`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Live counters and gauges of one node's RabbitMQ consumer. Create it with
/// [`BrokerStatus::new`], hand one `Arc` to [`run_consumer`](super::run_consumer) and
/// keep another for the HTTP handlers.
#[derive(Debug, Default)]
pub struct BrokerStatus {
    connected: AtomicBool,
    prefetch_bound: AtomicU32,
    /// `u64::MAX` while unknown.
    queue_depth: AtomicU64,
    in_hand: AtomicU32,
    tasks_completed: AtomicU64,
    tasks_failed: AtomicU64,
    requeued: AtomicU64,
    callbacks_ok: AtomicU64,
    callbacks_failed: AtomicU64,
    dead_lettered: AtomicU64,
    answered_from_cache: AtomicU64,
    reconnects: AtomicU64,
}

/// A copy of [`BrokerStatus`] at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BrokerStatusSnapshot {
    /// A channel to the broker is open.
    pub connected: bool,
    /// The configured prefetch upper bound (`processing.prefetch_count`).
    pub prefetch_bound: u32,
    /// Ready messages in the task queue at the last poll (`ml_queue_size`); `None` before
    /// the first poll or while disconnected.
    pub queue_depth: Option<u64>,
    /// Deliveries taken and not yet acked or requeued.
    pub in_hand: u32,
    /// Tasks answered with a `completed` callback and acked.
    pub tasks_completed: u64,
    /// Tasks answered with a `failed` callback and acked.
    pub tasks_failed: u64,
    /// Deliveries handed back to the queue (transient failure, callback window spent,
    /// drain).
    pub requeued: u64,
    /// Callbacks that got a 2xx.
    pub callbacks_ok: u64,
    /// Callbacks that ended without a 2xx (after all retries).
    pub callbacks_failed: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Redeliveries answered from the result cache without recomputing.
    pub answered_from_cache: u64,
    /// Broker sessions opened after the first.
    pub reconnects: u64,
}

impl BrokerStatus {
    /// A fresh status: disconnected, depth unknown, all counters zero.
    pub fn new() -> Arc<Self> {
        let s = Self::default();
        s.queue_depth.store(u64::MAX, Ordering::Relaxed);
        Arc::new(s)
    }

    /// Reads every field.
    pub fn snapshot(&self) -> BrokerStatusSnapshot {
        let depth = self.queue_depth.load(Ordering::Relaxed);
        BrokerStatusSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            prefetch_bound: self.prefetch_bound.load(Ordering::Relaxed),
            queue_depth: (depth != u64::MAX).then_some(depth),
            in_hand: self.in_hand.load(Ordering::Relaxed),
            tasks_completed: self.tasks_completed.load(Ordering::Relaxed),
            tasks_failed: self.tasks_failed.load(Ordering::Relaxed),
            requeued: self.requeued.load(Ordering::Relaxed),
            callbacks_ok: self.callbacks_ok.load(Ordering::Relaxed),
            callbacks_failed: self.callbacks_failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            answered_from_cache: self.answered_from_cache.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Whether a channel to the broker is open.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Deliveries in hand now.
    pub fn in_hand(&self) -> u32 {
        self.in_hand.load(Ordering::Relaxed)
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        if !connected {
            self.queue_depth.store(u64::MAX, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_prefetch_bound(&self, bound: u32) {
        self.prefetch_bound.store(bound, Ordering::Relaxed);
    }

    pub(crate) fn set_queue_depth(&self, depth: Option<u64>) {
        self.queue_depth
            .store(depth.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn count(&self, event: Event) {
        let counter = match event {
            Event::Completed => &self.tasks_completed,
            Event::Failed => &self.tasks_failed,
            Event::Requeued => &self.requeued,
            Event::CallbackOk => &self.callbacks_ok,
            Event::CallbackFailed => &self.callbacks_failed,
            Event::DeadLettered => &self.dead_lettered,
            Event::FromCache => &self.answered_from_cache,
            Event::Reconnect => &self.reconnects,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Something the consumer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Completed,
    Failed,
    Requeued,
    CallbackOk,
    CallbackFailed,
    DeadLettered,
    FromCache,
    Reconnect,
}

/// One delivery in hand; dropping it gives the count back.
#[derive(Debug)]
pub(crate) struct InHand(Arc<BrokerStatus>);

impl InHand {
    pub(crate) fn take(status: &Arc<BrokerStatus>) -> Self {
        status.in_hand.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(status))
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.in_hand.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_hand_guard_counts_and_gives_back() {
        let s = BrokerStatus::new();
        let a = InHand::take(&s);
        let b = InHand::take(&s);
        assert_eq!(s.in_hand(), 2);
        drop(a);
        assert_eq!(s.snapshot().in_hand, 1);
        drop(b);
        assert_eq!(s.in_hand(), 0);
    }

    #[test]
    fn depth_is_unknown_until_set_and_after_disconnect() {
        let s = BrokerStatus::new();
        assert_eq!(s.snapshot().queue_depth, None);
        s.set_connected(true);
        s.set_queue_depth(Some(3));
        assert_eq!(s.snapshot().queue_depth, Some(3));
        s.set_connected(false);
        assert_eq!(s.snapshot().queue_depth, None);
        assert!(!s.snapshot().connected);
    }
}
