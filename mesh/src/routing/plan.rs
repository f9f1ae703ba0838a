//! The routing loop of one task, as a pure state machine.
//!
//! The node that takes a task in (from HTTP or the broker) owns its [`Plan`]. The driver
//! (`src/node/dispatch.rs`) feeds it what just happened ([`Outcome`]) together with the
//! current views, the time and an RNG, and carries out the [`Step`] it answers: run here,
//! send to a peer, wait for what is in flight, refuse as busy, or fail. Nothing here does
//! IO or reads a clock, so every rule below is checked by property tests without processes.
//!
//! Rules:
//! * **Placement** ([`Policy::Fastest`]): the lowest expected completion among this node and
//!   the candidates of [`rank`]; this node keeps the task only when its own expected
//!   completion is no worse (strictly better when only its queue has room), so a task never
//!   waits in a slow node's queue while a faster node would finish it sooner.
//!   [`Policy::FreeSlotFirst`] (work the broker consumer pulled for a free slot) first takes
//!   a free slot here or at a peer that does not pull work itself.
//! * **Sends**: at most [`MAX_ATTEMPTS`] per task, each to a different peer, each with
//!   `hops = 1` so a task moves at most one hop (the receiver never forwards it again). A
//!   send after the first goes only if the deadline still leaves the target's expected
//!   completion ([`may_retry`]).
//! * **Failover**: a peer that answers busy, fails, or is lost (declared dead by membership
//!   or its breaker opened while the task was there; the driver cancels that send) is
//!   replaced at once by the next best peer, or this node.
//! * **Hedging**: a first or retry send carries a hedge delay ([`hedge_delay`] of its
//!   expected completion). If it passes unanswered ([`Outcome::Late`]) and the node's
//!   [`HedgeBudget`](super::HedgeBudget) allows, one second copy goes to the best other
//!   peer, or runs here if this node has a free slot and is no worse; whichever answers
//!   first wins and the driver cancels the other. At most one hedge per task.
//! * **Busy** only when neither this node nor any untried candidate has room; **fail** only
//!   past the deadline.

use std::time::{Duration, Instant};

use rand::Rng;

use super::candidates::{rank, Scored};
use super::hedge::hedge_delay;
use super::load::{Estimate, LocalView, NodeId, PeerView};
use super::retry::{may_retry, MAX_ATTEMPTS};

/// A send made while other options remain carries a refusal threshold of
/// `cost × REFUSE_FACTOR + REFUSE_SLACK` ([`refuse_above`]): the receiver answers busy
/// instead of queueing when its own cost is above it ([`refuses`]), so a placement made on a
/// stale view (a "free" slot that another entry node's task took meanwhile) is redone at
/// once with fresh numbers instead of waiting behind a slow task. The last possible send
/// carries none, so a task is never refused for this reason alone.
pub const REFUSE_FACTOR: f64 = 1.5;

/// See [`REFUSE_FACTOR`].
pub const REFUSE_SLACK: Duration = Duration::from_millis(50);

/// The refusal threshold for a send placed at `cost`.
pub fn refuse_above(cost: Duration) -> Duration {
    cost.mul_f64(REFUSE_FACTOR) + REFUSE_SLACK
}

/// Receiver side: whether a node with load `local` refuses a task sent with threshold
/// `limit` (its own placement cost for the task is above it).
pub fn refuses(local: &LocalView, limit: Option<Duration>, default_service: Duration) -> bool {
    limit.is_some_and(|limit| local.score(default_service) > limit.as_secs_f64())
}

/// Times this node may find its own room gone between the view and admission (another
/// task took the slot) before the task is refused as busy.
pub const MAX_LOCAL_RACES: u32 = 8;

/// How a task is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The lowest expected completion, here or at a peer (HTTP work).
    Fastest,
    /// A free slot first, here or at a peer that does not pull broker work itself, then as
    /// [`Policy::Fastest`]. For work the broker consumer pulled because it counted such a
    /// slot: otherwise the task could queue elsewhere while the slot it was pulled for stays
    /// empty.
    FreeSlotFirst,
}

/// What the plan decides from: this node, its peers, the time.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// This node's own load.
    pub local: &'a LocalView,
    /// Routing views of the live peers (the dead are not in the list).
    pub peers: &'a [PeerView],
    /// Default service time and number of senders for scores.
    pub estimate: Estimate,
    /// Now.
    pub now: Instant,
    /// The node's hedge budget has a token.
    pub hedge_allowed: bool,
}

/// What happened since the last step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task has just arrived.
    Start,
    /// [`Step::RunHere`] found no room after all (another task took it first).
    LocalFull,
    /// The peer answered busy.
    Busy(NodeId),
    /// The send to the peer failed (lost stream, timeout, internal error); the task is
    /// idempotent and may go elsewhere.
    Failed(NodeId),
    /// The driver cancelled the send: membership declared the peer dead or its breaker
    /// opened.
    Lost(NodeId),
    /// The send's hedge delay passed without an answer.
    Late(NodeId),
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Run the task on this node (a hedge when `hedge`).
    RunHere {
        /// This run is the task's hedge, racing a send still in flight.
        hedge: bool,
    },
    /// Send the task to `peer`.
    Send {
        /// The target.
        peer: NodeId,
        /// Why this send.
        kind: SendKind,
        /// Report [`Outcome::Late`] for it if no answer came after this long.
        hedge_after: Option<Duration>,
        /// The receiver should refuse the task rather than queue it at a higher cost than
        /// this ([`refuse_above`]); `None` on the last possible send.
        refuse_above: Option<Duration>,
    },
    /// Wait for what is in flight.
    Wait,
    /// Nobody has room: refuse the task.
    Busy,
    /// The deadline passed.
    DeadlineExceeded,
}

/// Why a send goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    /// The task's first placement.
    First,
    /// After a busy answer, a failure or a lost peer.
    Retry,
    /// A second copy racing a late send.
    Hedge,
}

/// The routing state of one task on the node that took it in.
#[derive(Debug, Clone)]
pub struct Plan {
    policy: Policy,
    deadline: Instant,
    tried: Vec<NodeId>,
    in_flight: Vec<NodeId>,
    running_here: bool,
    hedged: bool,
    local_races: u32,
    /// The last run here found no room: prefer a peer for the next placement.
    local_just_full: bool,
}

impl Plan {
    /// A plan for a task due at `deadline`.
    pub fn new(policy: Policy, deadline: Instant) -> Self {
        Self {
            policy,
            deadline,
            tried: Vec::with_capacity(MAX_ATTEMPTS as usize),
            in_flight: Vec::with_capacity(2),
            running_here: false,
            hedged: false,
            local_races: 0,
            local_just_full: false,
        }
    }

    /// Sends made so far.
    fn sends(&self) -> u32 {
        u32::try_from(self.tried.len()).unwrap_or(u32::MAX)
    }

    /// Takes in `outcome` and answers the next step.
    pub fn next<R: Rng + ?Sized>(
        &mut self,
        outcome: Outcome,
        inputs: &Inputs<'_>,
        rng: &mut R,
    ) -> Step {
        if inputs.now >= self.deadline {
            return Step::DeadlineExceeded;
        }
        match outcome {
            Outcome::Start => {}
            Outcome::LocalFull => {
                self.running_here = false;
                self.local_races += 1;
                self.local_just_full = true;
            }
            Outcome::Busy(peer) | Outcome::Failed(peer) | Outcome::Lost(peer) => {
                self.in_flight.retain(|p| *p != peer);
            }
            Outcome::Late(peer) => {
                let alone = self.in_flight == [peer] && !self.running_here;
                if alone && !self.hedged && inputs.hedge_allowed {
                    return self.hedge(inputs, rng);
                }
            }
        }
        if self.running_here || !self.in_flight.is_empty() {
            return Step::Wait;
        }
        if self.local_races > MAX_LOCAL_RACES {
            return Step::Busy;
        }
        self.place(inputs, rng)
    }

    /// A placement with nothing in flight.
    fn place<R: Rng + ?Sized>(&mut self, inputs: &Inputs<'_>, rng: &mut R) -> Step {
        let local = inputs.local;
        let ranked = self.ranked(inputs, rng);
        let local_just_full = std::mem::take(&mut self.local_just_full);
        let first_try = self.tried.is_empty() && self.local_races == 0;
        if self.policy == Policy::FreeSlotFirst && first_try {
            if local.has_free_slot() {
                return self.run_here(false);
            }
            let free_elsewhere = ranked.iter().find(|c| {
                c.free_slot && inputs.peers.iter().any(|p| p.id == c.id && !p.pulls_work)
            });
            if let Some(candidate) = free_elsewhere {
                return self.send(candidate, SendKind::First, true);
            }
        }
        let local_score = local.score(inputs.estimate.default_service);
        let best = ranked.first();
        let local_ok = local.has_room()
            && !(local_just_full && best.is_some())
            && best.is_none_or(|b| {
                if local.has_free_slot() {
                    local_score <= b.score
                } else {
                    local_score < b.score
                }
            });
        if local_ok {
            return self.run_here(false);
        }
        if let Some(best) = best {
            let kind = if self.tried.is_empty() {
                SendKind::First
            } else {
                SendKind::Retry
            };
            let expected = secs(best.score);
            if may_retry(self.sends(), self.deadline, inputs.now, expected) {
                let alternative = ranked.len() > 1 || local.has_room();
                return self.send(best, kind, alternative);
            }
        }
        if local.has_room() {
            return self.run_here(false);
        }
        Step::Busy
    }

    /// The hedge for the one late send, or [`Step::Wait`] when nothing better is at hand.
    fn hedge<R: Rng + ?Sized>(&mut self, inputs: &Inputs<'_>, rng: &mut R) -> Step {
        let local = inputs.local;
        let ranked = self.ranked(inputs, rng);
        let best = ranked.first();
        let local_score = local.score(inputs.estimate.default_service);
        if local.has_free_slot() && best.is_none_or(|b| local_score <= b.score) {
            self.hedged = true;
            return self.run_here(true);
        }
        if let Some(best) = best {
            if may_retry(self.sends(), self.deadline, inputs.now, secs(best.score)) {
                self.hedged = true;
                return self.send(best, SendKind::Hedge, false);
            }
        }
        Step::Wait
    }

    fn ranked<R: Rng + ?Sized>(&self, inputs: &Inputs<'_>, rng: &mut R) -> Vec<Scored> {
        let tried = &self.tried;
        rank(inputs.peers, |id| tried.contains(id), &inputs.estimate, rng)
    }

    fn run_here(&mut self, hedge: bool) -> Step {
        self.running_here = true;
        Step::RunHere { hedge }
    }

    /// Sends to `candidate`; with a refusal threshold when `alternative` (another option
    /// remains) and this is not the last send allowed.
    fn send(&mut self, candidate: &Scored, kind: SendKind, alternative: bool) -> Step {
        self.tried.push(candidate.id.clone());
        self.in_flight.push(candidate.id.clone());
        let cost = secs(candidate.score);
        let hedge_after = (kind != SendKind::Hedge).then(|| hedge_delay(cost));
        let refuse = alternative && self.sends() < MAX_ATTEMPTS;
        Step::Send {
            peer: candidate.id.clone(),
            kind,
            hedge_after,
            refuse_above: refuse.then(|| refuse_above(cost)),
        }
    }
}

/// A score in seconds as a duration (scores are finite for any candidate with capacity).
fn secs(score: f64) -> Duration {
    Duration::try_from_secs_f64(score).unwrap_or(Duration::MAX)
}
