//! Property and distribution tests of placement ([`rank`](super::rank)) and of the routing
//! loop ([`Plan`](super::Plan)), with seeded RNGs and no processes.
//!
//! The plan is driven by a small harness that plays an adversarial script of outcomes
//! (busy answers, failures, lost peers, late answers, lost local races) against it and
//! checks every step it takes, the way linkerd checks its p2c pair with quickcheck
//! (linkerd/pool/p2c/src/lib.rs), here with proptest.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::candidates::sample_by_speed;
use super::{
    rank, score, Estimate, Inputs, LocalView, NodeId, Outcome, PeerView, Plan, Policy, SendKind,
    Step, FULL_SCAN_MAX, MAX_ATTEMPTS, MAX_LOCAL_RACES,
};

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

fn arb_peers(max: usize) -> impl Strategy<Value = Vec<PeerView>> {
    let peer = (
        (prop::bool::weighted(0.8), prop::bool::weighted(0.2)),
        (0u32..12, 0u32..6, 0u32..6),
        arb_service(),
        0u32..6,
        (
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.5),
            prop::bool::weighted(0.3),
        ),
    );
    prop::collection::vec(peer, 0..max).prop_map(|fields| {
        fields
            .into_iter()
            .enumerate()
            .map(
                |(i, ((ready, draining), (active, capacity, queue), service, inflight, flags))| {
                    PeerView {
                        id: NodeId::new(format!("p{i}")),
                        ready,
                        draining,
                        active,
                        capacity,
                        queue_limit: queue,
                        service_ewma: service,
                        local_inflight: inflight,
                        breaker_open: flags.0,
                        entry: flags.1,
                        pulls_work: flags.2,
                    }
                },
            )
            .collect()
    })
}

fn arb_estimate() -> impl Strategy<Value = Estimate> {
    (1u32..6).prop_map(|senders| Estimate {
        default_service: DEFAULT,
        senders,
    })
}

/// What becomes of one send or local run in a scripted play.
#[derive(Debug, Clone, Copy)]
enum Fate {
    Done,
    Busy,
    Failed,
    Lost,
    LateThenBusy,
    LateThenFailed,
    LateThenDone,
    LocalFull,
}

fn arb_fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        Just(Fate::Done),
        Just(Fate::Busy),
        Just(Fate::Failed),
        Just(Fate::Lost),
        Just(Fate::LateThenBusy),
        Just(Fate::LateThenFailed),
        Just(Fate::LateThenDone),
        Just(Fate::LocalFull),
    ]
}

/// How a play ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Done,
    Busy,
    DeadlineExceeded,
}

/// Every step of one play, and how it ended.
#[derive(Debug, Clone, PartialEq)]
struct Trace {
    steps: Vec<Step>,
    end: End,
}

/// Plays `fates` (cycled) against a plan on fixed views; panics if the plan waits with
/// nothing in flight or takes more than 100 steps.
fn play(
    policy: Policy,
    local: &LocalView,
    peers: &[PeerView],
    estimate: Estimate,
    hedge_allowed: bool,
    fates: &[Fate],
    seed: u64,
) -> Trace {
    let now = Instant::now();
    let inputs = Inputs {
        local,
        peers,
        estimate,
        now,
        hedge_allowed,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plan = Plan::new(policy, now + Duration::from_secs(60));
    let mut fates = fates.iter().copied().cycle();
    let mut pending: VecDeque<Option<Outcome>> = VecDeque::new();
    let mut outcome = Outcome::Start;
    let mut steps = Vec::new();
    for _ in 0..100 {
        let step = plan.next(outcome, &inputs, &mut rng);
        steps.push(step.clone());
        let fate = fates.next().unwrap_or(Fate::Done);
        match &step {
            Step::Send { peer, .. } => match fate {
                Fate::Done => pending.push_back(None),
                Fate::Busy | Fate::LocalFull => {
                    pending.push_back(Some(Outcome::Busy(peer.clone())))
                }
                Fate::Failed => pending.push_back(Some(Outcome::Failed(peer.clone()))),
                Fate::Lost => pending.push_back(Some(Outcome::Lost(peer.clone()))),
                Fate::LateThenBusy | Fate::LateThenFailed | Fate::LateThenDone => {
                    pending.push_back(Some(Outcome::Late(peer.clone())));
                    pending.push_back(match fate {
                        Fate::LateThenBusy => Some(Outcome::Busy(peer.clone())),
                        Fate::LateThenFailed => Some(Outcome::Failed(peer.clone())),
                        _ => None,
                    });
                }
            },
            Step::RunHere { .. } => match fate {
                Fate::LocalFull => pending.push_back(Some(Outcome::LocalFull)),
                _ => pending.push_back(None),
            },
            Step::Wait => {}
            Step::Busy => {
                return Trace {
                    steps,
                    end: End::Busy,
                }
            }
            Step::DeadlineExceeded => {
                return Trace {
                    steps,
                    end: End::DeadlineExceeded,
                }
            }
        }
        match pending.pop_front() {
            Some(Some(next)) => outcome = next,
            Some(None) => {
                return Trace {
                    steps,
                    end: End::Done,
                }
            }
            None => panic!("the plan waits with nothing in flight: {steps:?}"),
        }
    }
    panic!("no end after 100 steps: {steps:?}");
}

fn view<'a>(peers: &'a [PeerView], id: &NodeId) -> &'a PeerView {
    peers
        .iter()
        .find(|p| &p.id == id)
        .expect("chosen id is a peer")
}

fn sends(trace: &Trace) -> Vec<(&NodeId, SendKind)> {
    trace
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Send { peer, kind, .. } => Some((peer, *kind)),
            _ => None,
        })
        .collect()
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Fastest), Just(Policy::FreeSlotFirst)]
}

proptest! {
    // A fixed seed for proptest's own generator too, so a failure reproduces on every run.
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x5EED_0002),
        ..ProptestConfig::default()
    })]

    #[test]
    fn rank_lists_eligible_distinct_peers_best_first(
        peers in arb_peers(24), estimate in arb_estimate(), seed: u64, skip_every in 2usize..5,
    ) {
        let skipped = |id: &NodeId| id.as_str().trim_start_matches('p').parse::<usize>().unwrap_or(0) % skip_every == 0;
        let ranked = rank(&peers, skipped, &estimate, &mut ChaCha8Rng::seed_from_u64(seed));
        let eligible = peers.iter().filter(|p| p.is_candidate() && !skipped(&p.id)).count();
        if eligible <= FULL_SCAN_MAX {
            prop_assert_eq!(ranked.len(), eligible);
        } else {
            prop_assert_eq!(ranked.len(), super::SAMPLED);
        }
        for pair in ranked.windows(2) {
            prop_assert!(pair[0].score <= pair[1].score);
            prop_assert_ne!(&pair[0].id, &pair[1].id);
        }
        for c in &ranked {
            let p = view(&peers, &c.id);
            prop_assert!(p.is_candidate() && !skipped(&p.id));
            prop_assert_eq!(c.score, score(p, &estimate));
            prop_assert_eq!(c.free_slot, p.has_free_slot());
        }
    }

    #[test]
    fn every_play_ends_within_the_limits(
        policy in arb_policy(), local in arb_local(), peers in arb_peers(10), estimate in arb_estimate(),
        hedge_allowed: bool, fates in prop::collection::vec(arb_fate(), 1..12), seed: u64,
    ) {
        let trace = play(policy, &local, &peers, estimate, hedge_allowed, &fates, seed);
        let sent = sends(&trace);
        // Sends: within the limit, each to a different, eligible peer.
        prop_assert!(sent.len() <= MAX_ATTEMPTS as usize);
        for (i, (peer, _)) in sent.iter().enumerate() {
            let p = view(&peers, peer);
            prop_assert!(p.ready && !p.draining && !p.breaker_open && p.has_room(), "{p:?}");
            prop_assert!(sent[..i].iter().all(|(q, _)| q != peer), "sent twice to {peer}");
        }
        // The last send allowed is never refusable, so refusals alone never end a task.
        let refusable: Vec<bool> = trace.steps.iter().filter_map(|s| match s {
            Step::Send { refuse_above, .. } => Some(refuse_above.is_some()),
            _ => None,
        }).collect();
        if refusable.len() == MAX_ATTEMPTS as usize {
            prop_assert!(!refusable[MAX_ATTEMPTS as usize - 1], "the last send is refusable");
        }
        // At most one hedge, never as the first send, and only when the budget allows.
        let hedges = sent.iter().filter(|(_, k)| *k == SendKind::Hedge).count()
            + trace.steps.iter().filter(|s| **s == Step::RunHere { hedge: true }).count();
        prop_assert!(hedges <= 1);
        prop_assert!(hedge_allowed || hedges == 0);
        prop_assert!(sent.first().is_none_or(|(_, k)| *k == SendKind::First));
        // Runs here only with room (a hedge only into a free slot).
        for step in &trace.steps {
            match step {
                Step::RunHere { hedge: false } => prop_assert!(local.has_room()),
                Step::RunHere { hedge: true } => prop_assert!(local.has_free_slot()),
                _ => {}
            }
        }
        prop_assert_ne!(trace.end, End::DeadlineExceeded);
    }

    #[test]
    fn busy_only_when_nobody_untried_has_room(
        policy in arb_policy(), local in arb_local(), peers in arb_peers(10), estimate in arb_estimate(),
        fates in prop::collection::vec(arb_fate(), 1..12), seed: u64,
    ) {
        let trace = play(policy, &local, &peers, estimate, true, &fates, seed);
        if trace.end == End::Busy {
            let sent = sends(&trace);
            let races = trace.steps.iter().filter(|s| matches!(s, Step::RunHere { .. })).count();
            let local_gave_up = races as u32 > MAX_LOCAL_RACES || !local.has_room();
            let untried = peers.iter().filter(|p| p.is_candidate() && sent.iter().all(|(q, _)| *q != &p.id)).count();
            prop_assert!(local_gave_up, "busy although this node has room: {trace:?}");
            prop_assert!(untried == 0 || sent.len() == MAX_ATTEMPTS as usize,
                "busy with {untried} untried candidates after {} sends", sent.len());
        }
    }

    #[test]
    fn the_first_placement_is_the_fastest(
        local in arb_local(), peers in arb_peers(FULL_SCAN_MAX), estimate in arb_estimate(), seed: u64,
    ) {
        let trace = play(Policy::Fastest, &local, &peers, estimate, false, &[Fate::Done], seed);
        let mine = local.score(estimate.default_service);
        let candidates: Vec<f64> = peers.iter().filter(|p| p.is_candidate()).map(|p| score(p, &estimate)).collect();
        let best = candidates.iter().copied().fold(f64::INFINITY, f64::min);
        match &trace.steps[0] {
            Step::RunHere { .. } => {
                if local.has_free_slot() {
                    prop_assert!(mine <= best);
                } else {
                    prop_assert!(mine < best);
                }
            }
            Step::Send { peer, .. } => {
                let chosen = score(view(&peers, peer), &estimate);
                prop_assert_eq!(chosen, best, "not the lowest expected completion");
                let local_better = local.has_room() && if local.has_free_slot() { mine <= chosen } else { mine < chosen };
                prop_assert!(!local_better);
            }
            Step::Busy => {
                prop_assert!(!local.has_room() && candidates.is_empty());
            }
            other => prop_assert!(false, "unexpected first step {other:?}"),
        }
    }

    #[test]
    fn free_slot_first_takes_a_free_slot_of_a_non_pulling_node(
        local in arb_local(), peers in arb_peers(10), estimate in arb_estimate(), seed: u64,
    ) {
        let trace = play(Policy::FreeSlotFirst, &local, &peers, estimate, false, &[Fate::Done], seed);
        let free_peer = peers.iter().any(|p| p.is_candidate() && p.has_free_slot() && !p.pulls_work);
        match &trace.steps[0] {
            _ if local.has_free_slot() => prop_assert_eq!(&trace.steps[0], &Step::RunHere { hedge: false }),
            Step::Send { peer, .. } if free_peer => {
                let p = view(&peers, peer);
                prop_assert!(p.has_free_slot() && !p.pulls_work);
            }
            step => prop_assert!(!free_peer, "a free non-pulling peer was passed over: {step:?}"),
        }
    }

    #[test]
    fn same_seed_same_play(
        policy in arb_policy(), local in arb_local(), peers in arb_peers(24), estimate in arb_estimate(),
        fates in prop::collection::vec(arb_fate(), 1..8), seed: u64,
    ) {
        let run = || play(policy, &local, &peers, estimate, true, &fates, seed);
        prop_assert_eq!(run(), run());
    }
}

/// This node cannot take the task, so every placement is a send.
const FULL: LocalView = LocalView {
    active: 4,
    capacity: 4,
    queue_limit: 0,
    service_ewma: None,
};

fn peer(i: usize, capacity: u32, service_ms: u64) -> PeerView {
    PeerView {
        queue_limit: 1_000,
        ..PeerView::idle(
            format!("p{i}"),
            capacity,
            Some(Duration::from_millis(service_ms)),
        )
    }
}

/// A play with this node full, hedges allowed, one sender.
fn play_full(peers: &[PeerView], fates: &[Fate], seed: u64) -> Trace {
    play(
        Policy::Fastest,
        &FULL,
        peers,
        Estimate::single(DEFAULT),
        true,
        fates,
        seed,
    )
}

fn first_send(local: &LocalView, peers: &[PeerView], rng: &mut ChaCha8Rng) -> Option<NodeId> {
    let inputs = Inputs {
        local,
        peers,
        estimate: Estimate::single(DEFAULT),
        now: Instant::now(),
        hedge_allowed: false,
    };
    let deadline = inputs.now + Duration::from_secs(60);
    match Plan::new(Policy::Fastest, deadline).next(Outcome::Start, &inputs, rng) {
        Step::Send { peer, .. } => Some(peer),
        _ => None,
    }
}

#[test]
fn weighted_sampling_follows_speed() {
    // 20 peers (above the full scan): one 20 ms x 1 slot (speed 50/s), 19 at 400 ms x 2 slots
    // (5/s each). Drawing one, the fast one should come up 50 / (50 + 95) of the time.
    let mut peers = vec![peer(0, 1, 20)];
    peers.extend((1..20).map(|i| peer(i, 2, 400)));
    let refs: Vec<&PeerView> = peers.iter().collect();
    let estimate = Estimate::single(DEFAULT);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut counts: HashMap<NodeId, u32> = HashMap::new();
    let draws = 20_000;
    for _ in 0..draws {
        let drawn = sample_by_speed(&refs, 1, &estimate, &mut rng);
        *counts.entry(drawn[0].id.clone()).or_default() += 1;
    }
    let expect_fast = f64::from(draws) * 50.0 / 145.0;
    let sd = (expect_fast * (1.0 - 50.0 / 145.0)).sqrt();
    let fast = f64::from(counts[&peers[0].id]);
    assert!(
        (fast - expect_fast).abs() < 5.0 * sd,
        "fast drawn {fast}, expected {expect_fast:.0}"
    );
    for p in &peers[1..] {
        let n = f64::from(counts.get(&p.id).copied().unwrap_or(0));
        let expect = f64::from(draws) * 5.0 / 145.0;
        assert!(
            (n - expect).abs() < 5.0 * expect.sqrt() + 20.0,
            "{} drawn {n}",
            p.id
        );
    }
}

#[test]
fn equal_peers_share_ties_about_uniformly() {
    let peers: Vec<_> = (0..5).map(|i| peer(i, 4, 100)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut counts: HashMap<NodeId, usize> = HashMap::new();
    for _ in 0..10_000 {
        let id = first_send(&FULL, &peers, &mut rng).expect("a send");
        *counts.entry(id).or_default() += 1;
    }
    // Expected 2,000 each; binomial sd is 40, so ±200 is five sigma.
    for p in &peers {
        let n = counts.get(&p.id).copied().unwrap_or(0);
        assert!((1_800..=2_200).contains(&n), "{} picked {n} times", p.id);
    }
}

#[test]
fn the_fast_node_queues_only_while_its_doubled_wait_beats_a_slow_free_slot() {
    // Strongly mixed mesh: one 20 ms x 1 slot node, four 400 ms x 2 slot nodes, nothing
    // finishing. The fast node costs 20 ms x (1 + 2 x waiting): it takes 10 tasks (cost up
    // to 380 ms) before the slow nodes' free slots (400 ms) are used, and only once those
    // are full (the next slow cost is 800 ms) does it queue deeper, up to 20 (cost 780 ms).
    let mut peers = vec![peer(0, 1, 20)];
    peers.extend((1..5).map(|i| peer(i, 2, 400)));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut send = |peers: &mut Vec<PeerView>| {
        let id = first_send(&FULL, peers, &mut rng).expect("a send");
        peers
            .iter_mut()
            .find(|p| p.id == id)
            .expect("a peer")
            .local_inflight += 1;
    };
    for _ in 0..10 {
        send(&mut peers);
    }
    assert_eq!(peers[0].local_inflight, 10, "{peers:?}");
    assert!(peers[1..].iter().all(|p| p.local_inflight == 0));
    for _ in 0..8 {
        send(&mut peers);
    }
    assert_eq!(peers[0].local_inflight, 10, "{peers:?}");
    assert!(
        peers[1..].iter().all(|p| p.local_inflight == 2),
        "{peers:?}"
    );
    for _ in 0..10 {
        send(&mut peers);
    }
    assert_eq!(peers[0].local_inflight, 20, "{peers:?}");
    assert!(
        peers[1..].iter().all(|p| p.local_inflight == 2),
        "{peers:?}"
    );
}

#[test]
fn a_late_send_is_hedged_once_to_the_next_best_peer() {
    let peers = vec![peer(0, 2, 100), peer(1, 2, 150), peer(2, 2, 200)];
    let trace = play_full(
        &peers,
        &[Fate::LateThenDone, Fate::LateThenDone, Fate::Done],
        1,
    );
    let sent = sends(&trace);
    assert_eq!(
        sent,
        vec![
            (&peers[0].id, SendKind::First),
            (&peers[1].id, SendKind::Hedge)
        ]
    );
    match &trace.steps[0] {
        Step::Send { hedge_after, .. } => {
            assert_eq!(*hedge_after, Some(Duration::from_millis(200)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lost_peer_fails_over_at_once_and_a_hedge_waits_for_its_twin() {
    let peers = vec![peer(0, 2, 100), peer(1, 2, 150), peer(2, 2, 200)];
    // First send lost (dead peer): retry to the next best at once.
    let trace = play_full(&peers, &[Fate::Lost, Fate::Done], 1);
    assert_eq!(
        sends(&trace),
        vec![
            (&peers[0].id, SendKind::First),
            (&peers[1].id, SendKind::Retry)
        ]
    );
    // Hedged, then the first answers busy: the plan waits for the hedge instead of sending
    // a third copy.
    let trace = play_full(&peers, &[Fate::LateThenBusy, Fate::Done], 1);
    assert_eq!(trace.steps.last(), Some(&Step::Wait));
    assert_eq!(sends(&trace).len(), 2);
}

#[test]
fn a_hedge_runs_here_when_this_node_has_a_free_slot_and_is_no_worse() {
    let local = LocalView {
        active: 0,
        capacity: 1,
        queue_limit: 0,
        service_ewma: Some(Duration::from_millis(100)),
    };
    // The peer is far faster, so the task goes there first; late, it is hedged here.
    let peers = vec![peer(0, 4, 10)];
    let trace = play(
        Policy::Fastest,
        &local,
        &peers,
        Estimate::single(DEFAULT),
        true,
        &[Fate::LateThenDone, Fate::Done],
        3,
    );
    assert!(matches!(trace.steps[0], Step::Send { .. }));
    assert_eq!(trace.steps[1], Step::RunHere { hedge: true });
}

#[test]
fn past_the_deadline_the_plan_fails() {
    let peers = vec![peer(0, 2, 100)];
    let now = Instant::now();
    let inputs = Inputs {
        local: &FULL,
        peers: &peers,
        estimate: Estimate::single(DEFAULT),
        now,
        hedge_allowed: true,
    };
    let mut plan = Plan::new(Policy::Fastest, now);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    assert_eq!(
        plan.next(Outcome::Start, &inputs, &mut rng),
        Step::DeadlineExceeded
    );
}

#[test]
fn herding_compensation_spreads_unreported_sends() {
    // Two idle 2-slot peers at 100 ms. With one sender, two sends fill p0's slots before it
    // looks worse than p1; with four senders, one unreported send already does.
    let mut peers = [peer(0, 2, 100), peer(1, 2, 100)];
    peers[0].local_inflight = 1;
    let one = Estimate::single(DEFAULT);
    let four = Estimate { senders: 4, ..one };
    assert_eq!(score(&peers[0], &one), score(&peers[1], &one));
    assert!(score(&peers[0], &four) > score(&peers[1], &four));
}

#[test]
fn a_receiver_refuses_only_above_the_threshold() {
    let free = LocalView {
        active: 1,
        capacity: 2,
        queue_limit: 8,
        service_ewma: Some(Duration::from_millis(400)),
    };
    // Placed on a free 400 ms slot: refused above 400 × 1.5 + 50 = 650 ms.
    let limit = super::refuse_above(Duration::from_millis(400));
    assert_eq!(limit, Duration::from_millis(650));
    assert!(!super::refuses(&free, Some(limit), DEFAULT));
    // Both slots taken meanwhile: its own cost is 400 × (1 + 2 × 0.5) = 800 ms.
    let full = LocalView { active: 2, ..free };
    assert!(super::refuses(&full, Some(limit), DEFAULT));
    assert!(!super::refuses(&full, None, DEFAULT));
}
