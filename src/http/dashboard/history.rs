//! The cluster page's memory: a ring buffer of samples per node (5 minutes at one sample
//! every 5 s), nodes that left the live set kept as `dead` for a while, and mesh totals
//! (tasks per minute, latency quantiles) from the gossiped counters. Pure: time comes in as
//! an argument.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use spheromesh_mesh::membership::LATENCY_BUCKETS_MS;
use utoipa::ToSchema;

/// Time between two samples of a node.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept per node: 5 minutes.
pub(crate) const SAMPLES_KEPT: usize = 60;
/// Window of the mesh totals.
pub(crate) const TOTALS_WINDOW: Duration = Duration::from_secs(60);
/// How long a node that left stays on the page as `dead`.
pub(crate) const FORGET_DEAD_AFTER: Duration = Duration::from_secs(600);
/// Most nodes tracked; beyond it the longest-dead is forgotten first.
pub(crate) const MAX_NODES: usize = 1024;

/// One node's numbers at one instant, as the history needs them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observation {
    pub(crate) id: String,
    pub(crate) active: u32,
    /// Tasks run, successful or not, since the node started.
    pub(crate) finished: u64,
    /// The node's latency histogram (not cumulative; may be empty before its first report).
    pub(crate) latency_buckets: Vec<u64>,
    /// Its generation: a restart resets its counters.
    pub(crate) generation: u64,
}

/// One point of a node's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Sample {
    /// Unix milliseconds.
    pub(crate) at_ms: u64,
    /// Tasks running or queued.
    pub(crate) active: u32,
    /// Tasks finished per minute since the previous sample.
    pub(crate) tasks_per_min: f64,
}

/// Mesh totals over the last minute.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct Totals {
    /// Tasks finished per minute, all nodes.
    pub(crate) tasks_per_min: f64,
    /// Median task time, ms (bucket-interpolated); absent without tasks.
    pub(crate) p50_ms: Option<f64>,
    /// 95th percentile task time, ms; absent without tasks.
    pub(crate) p95_ms: Option<f64>,
}

#[derive(Debug)]
struct Track {
    samples: VecDeque<Sample>,
    /// Recent raw counters for the totals window: (when, finished, buckets).
    recent: VecDeque<(Instant, u64, Vec<u64>)>,
    last_sample_at: Option<Instant>,
    generation: u64,
    gone_since: Option<Instant>,
}

/// Per-node history and the dead list.
#[derive(Debug)]
pub(crate) struct History {
    nodes: BTreeMap<String, Track>,
    max_nodes: usize,
}

impl Default for History {
    fn default() -> Self {
        Self::with_max_nodes(MAX_NODES)
    }
}

impl History {
    /// A history tracking at most `max_nodes` nodes (the longest-dead is forgotten first;
    /// live nodes are always kept).
    pub(crate) fn with_max_nodes(max_nodes: usize) -> Self {
        Self {
            nodes: BTreeMap::new(),
            max_nodes,
        }
    }

    /// Records what the live set looks like at `now` (`unix_ms` the same instant on the wall
    /// clock). Nodes absent from `live` are marked gone; gone ones are forgotten after
    /// [`FORGET_DEAD_AFTER`].
    pub(crate) fn observe(&mut self, now: Instant, unix_ms: u64, live: &[Observation]) {
        for node in live {
            let track = self.nodes.entry(node.id.clone()).or_insert_with(|| Track {
                samples: VecDeque::with_capacity(SAMPLES_KEPT),
                recent: VecDeque::new(),
                last_sample_at: None,
                generation: node.generation,
                gone_since: None,
            });
            track.gone_since = None;
            if track.generation != node.generation {
                // A restart: its counters began again, the old ones mean nothing now.
                track.recent.clear();
                track.generation = node.generation;
            }
            let due = track
                .last_sample_at
                .is_none_or(|at| now.saturating_duration_since(at) >= SAMPLE_EVERY);
            if !due {
                continue;
            }
            let tasks_per_min = match (track.recent.back(), track.last_sample_at) {
                (Some((_, before, _)), Some(at)) => {
                    let secs = now.saturating_duration_since(at).as_secs_f64().max(1e-3);
                    node.finished.saturating_sub(*before) as f64 * 60.0 / secs
                }
                _ => 0.0,
            };
            if track.samples.len() == SAMPLES_KEPT {
                track.samples.pop_front();
            }
            track.samples.push_back(Sample {
                at_ms: unix_ms,
                active: node.active,
                tasks_per_min,
            });
            track
                .recent
                .push_back((now, node.finished, node.latency_buckets.clone()));
            // Keep one entry older than the window as its start.
            while track.recent.len() > 2
                && track
                    .recent
                    .get(1)
                    .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= TOTALS_WINDOW)
            {
                track.recent.pop_front();
            }
            track.last_sample_at = Some(now);
        }
        for (id, track) in &mut self.nodes {
            if track.gone_since.is_none() && !live.iter().any(|n| &n.id == id) {
                track.gone_since = Some(now);
            }
        }
        self.nodes.retain(|_, track| {
            track
                .gone_since
                .is_none_or(|since| now.saturating_duration_since(since) < FORGET_DEAD_AFTER)
        });
        while self.nodes.len() > self.max_nodes {
            let oldest = self
                .nodes
                .iter()
                .filter_map(|(id, t)| t.gone_since.map(|s| (s, id.clone())))
                .min();
            match oldest {
                Some((_, id)) => self.nodes.remove(&id),
                None => break,
            };
        }
    }

    /// Ids of the nodes that left the live set and are not forgotten yet, with how long ago.
    pub(crate) fn dead(&self, now: Instant) -> Vec<(String, Duration)> {
        self.nodes
            .iter()
            .filter_map(|(id, t)| {
                t.gone_since
                    .map(|s| (id.clone(), now.saturating_duration_since(s)))
            })
            .collect()
    }

    /// A node's samples, oldest first.
    pub(crate) fn samples(&self, id: &str) -> Vec<Sample> {
        self.nodes
            .get(id)
            .map(|t| t.samples.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Tasks per minute and latency quantiles over the last minute, summed over live nodes.
    pub(crate) fn totals(&self) -> Totals {
        let mut finished = 0u64;
        let mut span = Duration::ZERO;
        let mut buckets = vec![0u64; LATENCY_BUCKETS_MS.len() + 1];
        for track in self.nodes.values().filter(|t| t.gone_since.is_none()) {
            let (Some(first), Some(last)) = (track.recent.front(), track.recent.back()) else {
                continue;
            };
            finished += last.1.saturating_sub(first.1);
            span = span.max(last.0.saturating_duration_since(first.0));
            if first.2.len() == buckets.len() && last.2.len() == buckets.len() {
                for (i, slot) in buckets.iter_mut().enumerate() {
                    *slot += last.2[i].saturating_sub(first.2[i]);
                }
            }
        }
        let secs = span.as_secs_f64();
        Totals {
            tasks_per_min: if secs > 0.0 {
                finished as f64 * 60.0 / secs
            } else {
                0.0
            },
            p50_ms: quantile(&buckets, 0.5),
            p95_ms: quantile(&buckets, 0.95),
        }
    }
}

/// The `q` quantile of a histogram over [`LATENCY_BUCKETS_MS`] (not cumulative), linearly
/// interpolated inside its bucket as Prometheus' `histogram_quantile` does; a quantile in
/// the open last bucket is its lower bound. `None` for an empty histogram.
pub(crate) fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = if i == 0 {
                0.0
            } else {
                LATENCY_BUCKETS_MS[i - 1] as f64
            };
            let Some(&upper) = LATENCY_BUCKETS_MS.get(i) else {
                return Some(lower);
            };
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper as f64 - lower) * within);
        }
        below += count;
    }
    LATENCY_BUCKETS_MS.last().map(|&b| b as f64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node(id: &str, active: u32, finished: u64, fast: u64) -> Observation {
        let mut latency_buckets = vec![0; LATENCY_BUCKETS_MS.len() + 1];
        latency_buckets[2] = fast; // 25..50 ms
        Observation {
            id: id.into(),
            active,
            finished,
            latency_buckets,
            generation: 1,
        }
    }

    #[test]
    fn samples_every_five_seconds_and_keeps_five_minutes() {
        let t0 = Instant::now();
        let mut history = History::default();
        for step in 0..400u64 {
            let now = t0 + Duration::from_secs(step);
            history.observe(now, step * 1000, &[node("a", 1, step * 10, step * 10)]);
        }
        let samples = history.samples("a");
        assert_eq!(samples.len(), SAMPLES_KEPT);
        // 10 tasks a second is 600 a minute.
        assert!((samples.last().expect("sample").tasks_per_min - 600.0).abs() < 1e-6);
        let totals = history.totals();
        assert!((totals.tasks_per_min - 600.0).abs() < 1e-6, "{totals:?}");
        let p50 = totals.p50_ms.expect("tasks ran");
        assert!((25.0..=50.0).contains(&p50), "{p50}");
    }

    #[test]
    fn a_node_that_leaves_is_dead_until_forgotten() {
        let t0 = Instant::now();
        let mut history = History::default();
        history.observe(t0, 0, &[node("a", 0, 0, 0), node("b", 0, 0, 0)]);
        history.observe(t0 + Duration::from_secs(1), 1000, &[node("a", 0, 0, 0)]);
        let dead = history.dead(t0 + Duration::from_secs(2));
        assert_eq!(dead, vec![("b".to_owned(), Duration::from_secs(1))]);
        history.observe(
            t0 + Duration::from_secs(2),
            2000,
            &[node("a", 0, 0, 0), node("b", 0, 0, 0)],
        );
        assert!(
            history.dead(t0 + Duration::from_secs(2)).is_empty(),
            "back alive"
        );
        history.observe(t0 + Duration::from_secs(3), 3000, &[]);
        let later = t0 + Duration::from_secs(3) + FORGET_DEAD_AFTER;
        history.observe(later, 0, &[]);
        assert!(history.dead(later).is_empty() && history.samples("a").is_empty());
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let mut buckets = vec![0; LATENCY_BUCKETS_MS.len() + 1];
        assert_eq!(quantile(&buckets, 0.5), None);
        buckets[0] = 10; // 0..10 ms
        assert_eq!(quantile(&buckets, 0.5), Some(5.0));
        buckets[3] = 10; // 50..100 ms
        assert_eq!(quantile(&buckets, 0.75), Some(75.0));
        let last = LATENCY_BUCKETS_MS.len();
        buckets[last] = 1000;
        assert_eq!(quantile(&buckets, 0.99), Some(120_000.0));
    }

    proptest! {
        #[test]
        fn quantiles_are_ordered_and_bounded(counts in proptest::collection::vec(0u64..50, 13)) {
            let p50 = quantile(&counts, 0.5);
            let p95 = quantile(&counts, 0.95);
            prop_assert_eq!(p50.is_some(), counts.iter().any(|&c| c > 0));
            if let (Some(a), Some(b)) = (p50, p95) {
                prop_assert!(a <= b && a >= 0.0 && b <= 120_000.0);
            }
        }

        #[test]
        fn memory_stays_bounded_under_churn(ids in proptest::collection::vec(0u32..5000, 1..300)) {
            let t0 = Instant::now();
            let mut history = History::with_max_nodes(16);
            for (i, id) in ids.iter().enumerate() {
                let now = t0 + Duration::from_millis(200 * i as u64);
                history.observe(now, 0, &[node(&format!("n{id}"), 0, 0, 0)]);
                prop_assert!(history.nodes.len() <= 16);
                for track in history.nodes.values() {
                    prop_assert!(track.samples.len() <= SAMPLES_KEPT);
                    prop_assert!(track.recent.len() <= 2 + (TOTALS_WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize);
                }
            }
        }
    }
}
