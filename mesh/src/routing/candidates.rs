//! Which peers a task may go to, best first.
//!
//! Power of two choices (Mitzenmacher, IEEE TPDS 2001) samples candidates uniformly; that is
//! right for identical nodes and wrong for a mesh with one GPU node and several CPU nodes:
//! whenever the fast node is not among the two, a slow node must take the task, and that
//! forced share exceeds what the slow nodes can serve. Here instead:
//!
//! * up to [`FULL_SCAN_MAX`] eligible peers (every deployment we know of) are all scored, and
//!   equal scores are ordered at random so ties still spread;
//! * above that, [`SAMPLED`] distinct peers are drawn with probability in proportion to their
//!   speed, `capacity / service` (weighted sampling without replacement, Efraimidis and
//!   Spirakis, "Weighted random sampling with a reservoir", IPL 97(5), 2006: the largest
//!   `ln(u) / w` win), so a node twenty times faster is twenty times as likely to be looked
//!   at, and then scored.
//!
//! Scores are expected completion times ([`score`]). Everything is pure: the RNG is an
//! argument and a seeded one replays a ranking exactly.

use rand::Rng;

use super::load::{score, Estimate, NodeId, PeerView};

/// Up to this many eligible peers, every one is scored.
pub const FULL_SCAN_MAX: usize = 16;

/// Peers drawn (by speed) when more than [`FULL_SCAN_MAX`] are eligible.
pub const SAMPLED: usize = 3;

/// A candidate peer and its expected completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The peer.
    pub id: NodeId,
    /// Expected completion in seconds, see [`score`] (lower is better).
    pub score: f64,
    /// The peer has a slot free now (counting this node's in-flight sends).
    pub free_slot: bool,
}

/// The eligible peers ([`PeerView::is_candidate`]) that `skip` does not exclude, scored and
/// ordered best first (random order among equal scores); all of them up to
/// [`FULL_SCAN_MAX`], else a speed-weighted sample of [`SAMPLED`].
///
/// Draws one `u64` per eligible peer (full scan) or one `f64` per eligible peer (sample).
pub fn rank<R: Rng + ?Sized>(
    peers: &[PeerView],
    skip: impl Fn(&NodeId) -> bool,
    estimate: &Estimate,
    rng: &mut R,
) -> Vec<Scored> {
    let eligible: Vec<&PeerView> = peers
        .iter()
        .filter(|p| p.is_candidate() && !skip(&p.id))
        .collect();
    let chosen = if eligible.len() <= FULL_SCAN_MAX {
        eligible
    } else {
        sample_by_speed(&eligible, SAMPLED, estimate, rng)
    };
    let mut keyed: Vec<(Scored, u64)> = chosen
        .into_iter()
        .map(|p| {
            let scored = Scored {
                id: p.id.clone(),
                score: score(p, estimate),
                free_slot: p.has_free_slot(),
            };
            (scored, rng.gen())
        })
        .collect();
    keyed.sort_by(|(a, ka), (b, kb)| a.score.total_cmp(&b.score).then(ka.cmp(kb)));
    keyed.into_iter().map(|(scored, _)| scored).collect()
}

/// `k` distinct peers of `peers`, each drawn with probability in proportion to its speed
/// (`capacity / service`); peers of speed 0 only when nothing else is left.
pub(crate) fn sample_by_speed<'a, R: Rng + ?Sized>(
    peers: &[&'a PeerView],
    k: usize,
    estimate: &Estimate,
    rng: &mut R,
) -> Vec<&'a PeerView> {
    let mut keyed: Vec<(f64, &PeerView)> = peers
        .iter()
        .map(|p| {
            let weight = p.speed(estimate.default_service);
            // u in (0, 1]: ln(u) <= 0, and a larger ln(u) / w wins.
            let u: f64 = 1.0 - rng.gen::<f64>();
            let key = if weight > 0.0 && weight.is_finite() {
                u.ln() / weight
            } else {
                f64::NEG_INFINITY
            };
            (key, *p)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().take(k).map(|(_, p)| p).collect()
}
