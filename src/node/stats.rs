//! What this node has done since it started, for the cluster page and peers' mesh totals:
//! lock-free counters beside the Prometheus series (which the process can render but not
//! read back), gossiped once per round as [`NodeStats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use spheromesh_mesh::membership::{NodeStats, LATENCY_BUCKETS_MS};

const BUCKETS: usize = LATENCY_BUCKETS_MS.len() + 1;

/// Counters of tasks run, received and sent, and a histogram of task time.
#[derive(Debug, Default)]
pub struct WorkCounters {
    done: AtomicU64,
    failed: AtomicU64,
    forwarded_in: AtomicU64,
    forwarded_out: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl WorkCounters {
    /// Counts a task run here, successful or not, and its time.
    pub fn record_run(&self, succeeded: bool, took: Duration) {
        let counter = if succeeded { &self.done } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.latency[bucket_of(took)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a task a peer sent here that was run here.
    pub fn record_forwarded_in(&self) {
        self.forwarded_in.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a task sent to a peer (whatever its answer).
    pub fn record_forwarded_out(&self) {
        self.forwarded_out.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as gossiped.
    pub fn snapshot(&self) -> NodeStats {
        NodeStats {
            done: self.done.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            forwarded_in: self.forwarded_in.load(Ordering::Relaxed),
            forwarded_out: self.forwarded_out.load(Ordering::Relaxed),
            latency_buckets: self
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The histogram bucket of a task that took `took`: the first bound it does not exceed.
fn bucket_of(took: Duration) -> usize {
    let ms = took.as_millis();
    LATENCY_BUCKETS_MS
        .iter()
        .position(|&bound| ms <= u128::from(bound))
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_land_in_the_bucket_of_their_bound_and_the_rest_in_the_last() {
        let counters = WorkCounters::default();
        counters.record_run(true, Duration::from_millis(10));
        counters.record_run(true, Duration::from_millis(11));
        counters.record_run(false, Duration::from_secs(600));
        counters.record_forwarded_in();
        counters.record_forwarded_out();
        counters.record_forwarded_out();
        let stats = counters.snapshot();
        assert_eq!((stats.done, stats.failed), (2, 1));
        assert_eq!((stats.forwarded_in, stats.forwarded_out), (1, 2));
        assert_eq!(stats.latency_buckets.len(), BUCKETS);
        assert_eq!(stats.latency_buckets[0], 1);
        assert_eq!(stats.latency_buckets[1], 1);
        assert_eq!(stats.latency_buckets[BUCKETS - 1], 1);
        assert_eq!(stats.latency_buckets.iter().sum::<u64>(), 3);
    }
}
