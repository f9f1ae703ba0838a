//! Routing: decide, for each task, whether to run it on this node or forward it to a peer,
//! and what to do when the peer answers busy, fails, dies or is late.
//!
//! Everything here is pure: no IO, no clock (time comes in as `Instant`/`Duration`
//! arguments), and the RNG is an argument, so a seeded RNG replays a decision exactly.
//!
//! # How the pieces fit
//!
//! * `load`: [`PeerView`] is this node's view of a peer, gossiped state (`ready`,
//!   `draining`, `active`, `capacity`, `queue_limit`, `service_ewma`, `entry`,
//!   `pulls_work`) plus what only this node knows (`local_inflight`, `breaker_open`).
//!   [`score`] turns it into a placement cost, the expected completion with the queue wait
//!   counted twice: `service × (1 + 2 × max(0, (outstanding + 1) / capacity - 1))`, where
//!   the sends this node made since the peer's last report count once per entry node of the
//!   mesh (C3's concurrency compensation against herding).
//! * `candidates`: [`rank`] scores every eligible peer (a speed-weighted sample in large
//!   meshes) and orders them best first, ties at random.
//! * `plan`: one [`Plan`] per task is the routing loop as a state machine: (views, local
//!   load, last [`Outcome`], now, rng) → [`Step`] (run here, send, wait, busy, deadline).
//!   It covers placement, retries after busy answers and failures, failover of sends to a
//!   peer that died, one hedged copy of a late send, and the refusal threshold a send
//!   carries so that a receiver whose real load is worse than the sender's stale view says
//!   busy instead of queueing ([`refuses`]).
//! * `hedge`: the hedge delay derived from the expected completion, and the node's
//!   [`HedgeBudget`].
//! * `breaker`: one [`CircuitBreaker`] per peer; `would_allow(now)` fills `breaker_open`,
//!   `allow(now)` is called before a send, and every answer or failure is reported back.
//! * `retry`: [`may_retry`], the per-task send limit and the deadline rule.
//!
//! # At most one forward per task
//!
//! A forwarded task carries `hops = 1`. A node receiving a task over the mesh runs it or
//! answers busy: the receiving path has no way to forward it again. Stale gossip
//! can make two nodes each think the other is idler; without this rule a task could bounce
//! between them. Retries and hedges come from the accepting node, so a task still travels at
//! most one hop, and [`MAX_ATTEMPTS`] bounds how many peers see it.

mod breaker;
mod candidates;
mod hedge;
mod load;
mod plan;
mod retry;
#[cfg(test)]
mod test;

pub use breaker::{BreakerConfig, BreakerConfigError, BreakerState, CircuitBreaker};
pub use candidates::{rank, Scored, FULL_SCAN_MAX, SAMPLED};
pub use hedge::{hedge_delay, HedgeBudget, HEDGE_BURST, HEDGE_MIN_SLACK, HEDGE_RATIO};
pub use load::{score, Estimate, LocalView, NodeId, PeerView, MIN_SERVICE, QUEUE_WAIT_WEIGHT};
pub use plan::{
    refuse_above, refuses, Inputs, Outcome, Plan, Policy, SendKind, Step, MAX_LOCAL_RACES,
    REFUSE_FACTOR, REFUSE_SLACK,
};
pub use retry::{may_retry, MAX_ATTEMPTS};
