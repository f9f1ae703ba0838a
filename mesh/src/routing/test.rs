//! Property and distribution tests for [`choose`](super::choose), with seeded RNGs.
//!
//! Invariants are checked the way linkerd checks its p2c pair (quickcheck over random pools,
//! linkerd/pool/p2c/src/lib.rs), here with proptest; the distribution tests draw many
//! decisions from a fixed seed.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{choose, pick, score, Decision, LocalView, NodeId, PeerView};

const DEFAULT: Duration = Duration::from_millis(200);

fn arb_service() -> impl Strategy<Value = Option<Duration>> {
    prop::option::of((0u64..2_000).prop_map(Duration::from_millis))
}

fn arb_local() -> impl Strategy<Value = LocalView> {
    (0u32..12, 0u32..6, 0u32..6, arb_service()).prop_map(
        |(active, capacity, queue_limit, service_ewma)| LocalView {
            active,
            capacity,
            queue_limit,
            service_ewma,
        },
    )
}

fn arb_peers() -> impl Strategy<Value = Vec<PeerView>> {
    let peer = (
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.2),
        0u32..12,
        0u32..6,
        0u32..6,
        arb_service(),
        0u32..6,
        prop::bool::weighted(0.2),
    );
    prop::collection::vec(peer, 0..10).prop_map(|fields| {
        fields
            .into_iter()
            .enumerate()
            .map(
                |(i, (ready, draining, active, capacity, queue, service, inflight, open))| {
                    PeerView {
                        id: NodeId::new(format!("p{i}")),
                        ready,
                        draining,
                        active,
                        capacity,
                        queue_limit: queue,
                        service_ewma: service,
                        local_inflight: inflight,
                        breaker_open: open,
                    }
                },
            )
            .collect()
    })
}

fn view<'a>(peers: &'a [PeerView], id: &NodeId) -> &'a PeerView {
    peers
        .iter()
        .find(|p| &p.id == id)
        .expect("chosen id is a peer")
}

fn decide(local: &LocalView, peers: &[PeerView], seed: u64) -> Decision {
    choose(local, peers, &mut ChaCha8Rng::seed_from_u64(seed), DEFAULT)
}

proptest! {
    // A fixed seed for proptest's own generator too, so a failure reproduces on every run.
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x5EED_0001),
        ..ProptestConfig::default()
    })]

    #[test]
    fn forwards_only_to_eligible_distinct_peers(local in arb_local(), peers in arb_peers(), seed: u64) {
        if let Decision::Forward { first, second } = decide(&local, &peers, seed) {
            let first = view(&peers, &first);
            prop_assert!(first.ready && !first.draining && !first.breaker_open);
            prop_assert!(first.has_room());
            if let Some(second) = second {
                prop_assert_ne!(&first.id, &second);
                let second = view(&peers, &second);
                prop_assert!(second.ready && !second.draining && !second.breaker_open);
                prop_assert!(second.has_room());
            }
        }
    }

    #[test]
    fn first_scores_no_worse_than_second(local in arb_local(), peers in arb_peers(), seed: u64) {
        if let Decision::Forward { first, second: Some(second) } = decide(&local, &peers, seed) {
            prop_assert!(score(view(&peers, &first), DEFAULT) <= score(view(&peers, &second), DEFAULT));
        }
    }

    #[test]
    fn keeps_task_when_local_has_a_free_slot_and_is_strictly_best(
        local in arb_local(), peers in arb_peers(), seed: u64,
    ) {
        let mine = local.score(DEFAULT);
        let best = peers.iter().filter(|p| p.is_candidate()).all(|p| mine < score(p, DEFAULT));
        if local.has_free_slot() && best {
            prop_assert_eq!(decide(&local, &peers, seed), Decision::Local);
        }
    }

    #[test]
    fn busy_exactly_when_nobody_has_room(local in arb_local(), peers in arb_peers(), seed: u64) {
        let nobody = !local.has_room() && !peers.iter().any(PeerView::is_candidate);
        prop_assert_eq!(decide(&local, &peers, seed) == Decision::Busy, nobody);
    }

    #[test]
    fn local_only_when_it_has_room(local in arb_local(), peers in arb_peers(), seed: u64) {
        if decide(&local, &peers, seed) == Decision::Local {
            prop_assert!(local.has_room());
        }
    }

    #[test]
    fn same_seed_same_decision(local in arb_local(), peers in arb_peers(), seed: u64) {
        let run = || pick(&local, &peers, &mut ChaCha8Rng::seed_from_u64(seed), DEFAULT);
        prop_assert_eq!(run(), run());
    }
}

fn peer(i: usize, service_ms: u64) -> PeerView {
    PeerView {
        id: NodeId::new(format!("p{i}")),
        ready: true,
        draining: false,
        active: 2,
        capacity: 4,
        queue_limit: 1_000,
        service_ewma: Some(Duration::from_millis(service_ms)),
        local_inflight: 0,
        breaker_open: false,
    }
}

/// This node cannot take the task, so every decision is a forward.
const FULL: LocalView = LocalView {
    active: 4,
    capacity: 4,
    queue_limit: 0,
    service_ewma: None,
};

/// Counts `first` over `draws` decisions on fixed views.
fn tally(peers: &[PeerView], draws: usize, seed: u64) -> HashMap<NodeId, usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = HashMap::new();
    for _ in 0..draws {
        match choose(&FULL, peers, &mut rng, DEFAULT) {
            Decision::Forward { first, .. } => *counts.entry(first).or_default() += 1,
            other => panic!("expected a forward, got {other:?}"),
        }
    }
    counts
}

#[test]
fn equal_peers_are_picked_about_uniformly() {
    let peers: Vec<_> = (0..5).map(|i| peer(i, 100)).collect();
    let counts = tally(&peers, 10_000, 42);
    // Expected 2,000 each; binomial sd is 40, so ±200 is five sigma.
    for p in &peers {
        let n = counts.get(&p.id).copied().unwrap_or(0);
        assert!((1_800..=2_200).contains(&n), "{} picked {n} times", p.id);
    }
}

#[test]
fn four_times_faster_peer_is_picked_clearly_more() {
    let mut peers: Vec<_> = (0..5).map(|i| peer(i, 400)).collect();
    peers[0].service_ewma = Some(Duration::from_millis(100));
    let counts = tally(&peers, 10_000, 7);
    // It wins every pair it is drawn into: 2/5 of draws, against 3/20 for each other peer.
    let fast = counts[&peers[0].id];
    assert!(
        (3_800..=4_200).contains(&fast),
        "fast peer picked {fast} times"
    );
    for p in &peers[1..] {
        assert!(
            fast > 2 * counts[&p.id],
            "{} picked {}",
            p.id,
            counts[&p.id]
        );
    }
}

#[test]
fn four_times_faster_peer_gets_about_four_times_the_work() {
    // Tasks pile up (none finish) and `local_inflight` tracks them, as between gossip rounds.
    let mut peers = vec![peer(0, 100), peer(1, 400)];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..1_000 {
        let Decision::Forward { first, .. } = choose(&FULL, &peers, &mut rng, DEFAULT) else {
            panic!("expected a forward");
        };
        let target = peers.iter_mut().find(|p| p.id == first).expect("a peer");
        target.local_inflight += 1;
    }
    let (fast, slow) = (peers[0].local_inflight, peers[1].local_inflight);
    assert!(
        (3.8..=4.2).contains(&(f64::from(fast + 3) / f64::from(slow + 3))),
        "fast {fast}, slow {slow}"
    );
}

#[test]
fn trace_reports_both_candidates() {
    let peers = vec![peer(0, 100), peer(1, 400)];
    let p = pick(&FULL, &peers, &mut ChaCha8Rng::seed_from_u64(1), DEFAULT);
    assert_eq!(p.eligible, 2);
    let (first, second) = (p.first.expect("first"), p.second.expect("second"));
    assert_eq!((first.id.as_str(), second.id.as_str()), ("p0", "p1"));
    assert!(first.score < second.score);
    assert_eq!(
        p.decision,
        Decision::Forward {
            first: first.id,
            second: Some(second.id)
        }
    );
}

#[test]
fn queued_local_beats_a_worse_peer_but_not_a_better_one() {
    let local = LocalView {
        active: 4,
        capacity: 4,
        queue_limit: 4,
        service_ewma: Some(Duration::from_millis(100)),
    };
    // Local: (4 + 1) / 4 × 0.1 = 0.125 s. Peer at 400 ms: (2 + 1) / 4 × 0.4 = 0.3 s.
    assert_eq!(decide(&local, &[peer(0, 400)], 0), Decision::Local);
    // Peer at 10 ms: 0.0075 s.
    let fast = decide(&local, &[peer(0, 10)], 0);
    assert!(matches!(fast, Decision::Forward { second: None, .. }));
}
