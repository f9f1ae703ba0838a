//! Power-of-two-choices placement: run a task here or pick the peer to forward it to.
//!
//! Sample two distinct eligible peers uniformly at random and take the one with the lower
//! load; Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing" (IEEE TPDS,
//! 2001), shows that this cuts the maximum queue from `Θ(log n / log log n)` to
//! `Θ(log log n)` over one random choice, without looking at every peer. Like tower's
//! `p2c_ready_index` (tower/src/balance/p2c/service.rs) the choice is pure: the RNG is an
//! argument and the result carries both candidates and their scores so the caller can
//! trace them. Scores come from [`score`]; see the `load` module.
//!
//! The sampled pair is kept as an ordered fallback: `first` is the better one, `second` the
//! one to try if `first` answers busy.

use std::time::Duration;

use rand::Rng;

use super::load::{score, LocalView, NodeId, PeerView};

/// Where one task goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run the task on this node.
    Local,
    /// Forward the task to `first`; if `first` answers busy, to `second`.
    Forward {
        /// The better-scored sampled peer.
        first: NodeId,
        /// The other sampled peer, `None` when only one peer was eligible.
        second: Option<NodeId>,
    },
    /// No node, this one included, has room: refuse the task.
    Busy,
}

/// A sampled peer and its score, for traces.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The peer.
    pub id: NodeId,
    /// Its score in seconds (lower is better).
    pub score: f64,
}

/// A [`Decision`] together with what it was made from, so both candidates can be logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// The decision.
    pub decision: Decision,
    /// This node's own score (`f64::INFINITY` when it has no capacity).
    pub local_score: f64,
    /// How many peers were eligible to sample from.
    pub eligible: usize,
    /// The better sampled peer, if any was eligible.
    pub first: Option<Scored>,
    /// The other sampled peer, if two were eligible.
    pub second: Option<Scored>,
}

/// Decides where a task goes; [`pick`] without the trace details.
pub fn choose<R: Rng + ?Sized>(
    local: &LocalView,
    peers: &[PeerView],
    rng: &mut R,
    default_service: Duration,
) -> Decision {
    pick(local, peers, rng, default_service).decision
}

/// Decides where a task goes and reports both sampled candidates.
///
/// Eligible peers are those for which [`PeerView::is_candidate`] holds: ready, not draining,
/// breaker closed, and `active + local_inflight < capacity + queue_limit`. Two distinct ones
/// are drawn (one if only one is eligible) and ordered by [`score`], ties keeping draw order.
/// The task stays [`Decision::Local`] when this node has a free slot and its own score is no
/// worse than the better candidate's (that keeps work off the network), or when only its
/// queue has room and its score is strictly better. Otherwise it is
/// [`Decision::Forward`] to the candidates, and [`Decision::Busy`] when neither this node
/// nor any peer has room.
///
/// Consumes exactly two `usize` draws from `rng` when two or more peers are eligible, none
/// otherwise, so a seeded RNG gives a reproducible sequence of decisions.
pub fn pick<R: Rng + ?Sized>(
    local: &LocalView,
    peers: &[PeerView],
    rng: &mut R,
    default_service: Duration,
) -> Pick {
    let local_score = local.score(default_service);
    let eligible: Vec<&PeerView> = peers.iter().filter(|p| p.is_candidate()).collect();
    let scored = |p: &PeerView| Scored {
        id: p.id.clone(),
        score: score(p, default_service),
    };

    let (first, second) = match sample_two(eligible.len(), rng) {
        None => (None, None),
        Some((a, None)) => (Some(scored(eligible[a])), None),
        Some((a, Some(b))) => {
            let (x, y) = (scored(eligible[a]), scored(eligible[b]));
            // Strict comparison: equal scores keep the random draw order, so ties split evenly.
            if y.score < x.score {
                (Some(y), Some(x))
            } else {
                (Some(x), Some(y))
            }
        }
    };

    // With a free slot, a tie keeps the task here (no network hop); with only queue room
    // left, this node must be strictly better, or a tie would queue here while a peer
    // at the same expected wait may have a slot free by the time the task lands.
    let local_ok = local.has_room()
        && first.as_ref().is_none_or(|f| {
            if local.has_free_slot() {
                local_score <= f.score
            } else {
                local_score < f.score
            }
        });
    let decision = match &first {
        _ if local_ok => Decision::Local,
        Some(f) => Decision::Forward {
            first: f.id.clone(),
            second: second.as_ref().map(|s| s.id.clone()),
        },
        None => Decision::Busy,
    };
    Pick {
        decision,
        local_score,
        eligible: eligible.len(),
        first,
        second,
    }
}

/// Decision for a task that already took its one hop: run it here if it fits, else busy.
///
/// See `must_run_locally`: a forwarded task is never forwarded again.
pub fn local_only(local: &LocalView) -> Decision {
    if local.has_room() {
        Decision::Local
    } else {
        Decision::Busy
    }
}

/// Two distinct indices below `n`, uniformly (one if `n == 1`, none if `n == 0`).
///
/// Same trick as linkerd's `gen_pair_distinct` (linkerd/pool/p2c/src/lib.rs): draw the second
/// from `n - 1` values and skip over the first.
fn sample_two<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Option<(usize, Option<usize>)> {
    match n {
        0 => None,
        1 => Some((0, None)),
        _ => {
            let a = rng.gen_range(0..n);
            let mut b = rng.gen_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            Some((a, Some(b)))
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn sample_two_is_distinct_and_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(sample_two(0, &mut rng), None);
        assert_eq!(sample_two(1, &mut rng), Some((0, None)));
        for n in 2..20 {
            for _ in 0..200 {
                let Some((a, Some(b))) = sample_two(n, &mut rng) else {
                    panic!("two indices expected for n = {n}");
                };
                assert!(a < n && b < n && a != b);
            }
        }
    }

    #[test]
    fn local_only_ignores_peers() {
        let mut local = LocalView {
            active: 0,
            capacity: 1,
            queue_limit: 0,
            service_ewma: None,
        };
        assert_eq!(local_only(&local), Decision::Local);
        local.active = 1;
        assert_eq!(local_only(&local), Decision::Busy);
    }
}
