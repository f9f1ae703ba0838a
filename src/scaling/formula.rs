//! The HPA rule and its scale-down stabilisation, as pure functions of load and time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ScalingSettings;

/// What the mesh looks like to one node at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshLoad {
    /// Ready nodes, this one included (the HPA's "current replicas").
    pub replicas: u32,
    /// Messages waiting in the RabbitMQ task queue (0 without a broker).
    pub queue_depth: u64,
    /// Tasks running or queued on the ready nodes.
    pub active: u64,
    /// Slots of the ready nodes.
    pub slots: u64,
}

impl MeshLoad {
    /// Tasks per slot, mesh-wide (above 1 when tasks queue); 0 without slots.
    pub fn slot_utilisation(&self) -> f64 {
        if self.slots == 0 {
            0.0
        } else {
            self.active as f64 / self.slots as f64
        }
    }
}

/// Slack on the tolerance test, so a ratio written as 1.1 counts as within 0.1 of 1 despite
/// binary rounding.
const ROUNDING_SLACK: f64 = 1e-9;

/// One signal's recommendation: `ceil(current × ratio)`, or `current` when `ratio` is within
/// `tolerance` of 1. `ratio` is the metric over its target.
pub fn hpa_recommendation(current: u32, ratio: f64, tolerance: f64) -> u32 {
    if !ratio.is_finite() || (ratio - 1.0).abs() <= tolerance + ROUNDING_SLACK {
        return current;
    }
    let wanted = (f64::from(current) * ratio).ceil();
    if wanted >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        wanted.max(0.0) as u32
    }
}

/// The larger recommendation of the two signals, clamped to the settings' bounds, before
/// stabilisation.
pub fn raw_desired(load: &MeshLoad, settings: &ScalingSettings) -> u32 {
    let current = load.replicas.max(1);
    let queue_ratio = load.queue_depth as f64 / f64::from(current) / settings.queue_per_replica;
    let slot_ratio = load.slot_utilisation() / settings.slot_utilisation;
    let by_queue = hpa_recommendation(current, queue_ratio, settings.tolerance);
    let by_slots = hpa_recommendation(current, slot_ratio, settings.tolerance);
    by_queue
        .max(by_slots)
        .clamp(settings.min_replicas, settings.max_replicas)
}

/// Scale-down stabilisation: remembers the recommendations of the last window and answers
/// the highest of them.
#[derive(Debug, Clone)]
pub struct Stabiliser {
    window: Duration,
    history: VecDeque<(Instant, u32)>,
}

impl Stabiliser {
    /// A stabiliser over `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            history: VecDeque::new(),
        }
    }

    /// Records `recommendation` made at `now` and answers the highest recommendation made
    /// within the window before it. Calls must come in time order.
    pub fn desired(&mut self, now: Instant, recommendation: u32) -> u32 {
        while let Some(&(at, _)) = self.history.front() {
            if now.saturating_duration_since(at) > self.window {
                self.history.pop_front();
            } else {
                break;
            }
        }
        // An older, lower recommendation can never win again while this one is in the
        // window: drop it, so the history stays short under any call rate.
        while self
            .history
            .back()
            .is_some_and(|&(_, value)| value <= recommendation)
        {
            self.history.pop_back();
        }
        self.history.push_back((now, recommendation));
        self.history.front().map_or(recommendation, |&(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn load(replicas: u32, queue_depth: u64, active: u64, slots: u64) -> MeshLoad {
        MeshLoad {
            replicas,
            queue_depth,
            active,
            slots,
        }
    }

    #[test]
    fn the_hpa_examples() {
        // The HPA documentation's example: 1 replica at 200m against a 100m target -> 2.
        assert_eq!(hpa_recommendation(1, 2.0, 0.1), 2);
        // 50m against 100m halves 4 replicas.
        assert_eq!(hpa_recommendation(4, 0.5, 0.1), 2);
        // Within the tolerance nothing moves, on either side.
        assert_eq!(hpa_recommendation(10, 1.1, 0.1), 10);
        assert_eq!(hpa_recommendation(10, 0.9, 0.1), 10);
        // Just outside it the ceiling applies.
        assert_eq!(hpa_recommendation(10, 1.11, 0.1), 12);
        assert_eq!(hpa_recommendation(10, 0.89, 0.1), 9);
    }

    #[test]
    fn the_seed_triggers_move_the_signal() {
        let settings = ScalingSettings::default();
        // Queue depth above 50 on 3 replicas with the default 10 per replica: 6 replicas.
        assert_eq!(raw_desired(&load(3, 60, 0, 12), &settings), 6);
        // Nothing active and nothing queued: down to the minimum.
        assert_eq!(raw_desired(&load(3, 0, 0, 12), &settings), 1);
        // Slots at the 0.7 target: stay.
        assert_eq!(raw_desired(&load(2, 0, 7, 10), &settings), 2);
        // Every slot busy and as many queued behind: 2 / 0.7 -> ceil(2 x 2.857) = 6.
        assert_eq!(raw_desired(&load(2, 0, 20, 10), &settings), 6);
        // Clamped to the maximum.
        let small = ScalingSettings {
            max_replicas: 4,
            ..settings
        };
        assert_eq!(raw_desired(&load(3, 10_000, 0, 12), &small), 4);
    }

    #[test]
    fn a_dip_only_wins_after_the_window_and_a_rise_wins_at_once() {
        let t0 = Instant::now();
        let mut stabiliser = Stabiliser::new(Duration::from_secs(300));
        assert_eq!(stabiliser.desired(t0, 5), 5);
        assert_eq!(stabiliser.desired(t0 + Duration::from_secs(10), 2), 5);
        assert_eq!(stabiliser.desired(t0 + Duration::from_secs(300), 2), 5);
        assert_eq!(stabiliser.desired(t0 + Duration::from_secs(301), 2), 2);
        assert_eq!(stabiliser.desired(t0 + Duration::from_secs(302), 8), 8);
        assert_eq!(stabiliser.desired(t0 + Duration::from_secs(303), 3), 8);
    }

    proptest! {
        #[test]
        fn recommendation_is_the_hpa_rule(current in 1u32..1000, ratio in 0.0f64..20.0, tolerance in 0.0f64..0.5) {
            let got = hpa_recommendation(current, ratio, tolerance);
            if (ratio - 1.0).abs() <= tolerance + ROUNDING_SLACK {
                prop_assert_eq!(got, current);
            } else {
                let exact = f64::from(current) * ratio;
                prop_assert!(f64::from(got) >= exact && f64::from(got) < exact + 1.0);
                prop_assert_eq!(got > current, ratio > 1.0);
            }
        }

        #[test]
        fn more_load_never_asks_for_fewer_replicas(
            replicas in 1u32..50, queue in 0u64..1000, more_queue in 0u64..1000,
            active in 0u64..500, more_active in 0u64..500, slots in 1u64..200,
        ) {
            let settings = ScalingSettings::default();
            let low = raw_desired(&load(replicas, queue, active, slots), &settings);
            let high = raw_desired(&load(replicas, queue + more_queue, active + more_active, slots), &settings);
            prop_assert!(high >= low);
            prop_assert!((settings.min_replicas..=settings.max_replicas).contains(&low));
        }

        #[test]
        fn stabilised_value_is_the_max_over_the_window(
            steps in proptest::collection::vec((0u64..120, 1u32..30), 1..60),
        ) {
            let window = Duration::from_secs(300);
            let t0 = Instant::now();
            let mut stabiliser = Stabiliser::new(window);
            let mut seen: Vec<(Instant, u32)> = Vec::new();
            let mut now = t0;
            for (gap, value) in steps {
                now += Duration::from_secs(gap);
                seen.push((now, value));
                let expected = seen
                    .iter()
                    .filter(|(at, _)| now.duration_since(*at) <= window)
                    .map(|(_, v)| *v)
                    .max()
                    .expect("this step is in the window");
                prop_assert_eq!(stabiliser.desired(now, value), expected);
                prop_assert!(stabiliser.history.len() <= seen.len());
            }
        }
    }
}
