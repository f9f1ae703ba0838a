//! Routing: decide, for each task, whether to run it on this node or forward it to a peer.
//!
//! The choice is power of two choices (Mitzenmacher, "The Power of Two Choices in Randomized
//! Load Balancing", IEEE TPDS 12(10), 2001), shaped like tower's p2c balancer
//! (tower/src/balance/p2c): sample two eligible peers, keep the less loaded one. Everything
//! here is pure: no IO, no clock (time comes in as `Instant`/`Duration` arguments), and the
//! RNG is an argument, so a seeded RNG replays a decision exactly.
//!
//! # How the pieces fit
//!
//! * `load`: [`PeerView`] is this node's view of a peer, gossiped state (`ready`,
//!   `draining`, `active`, `capacity`, `queue_limit`, `service_ewma`) plus what only this
//!   node knows (`local_inflight`, `breaker_open`). [`score`] turns it into an expected
//!   completion time, `(active + local_inflight + 1) / capacity × service_ewma`; gossip is
//!   100–500 ms stale and `local_inflight` (forwards sent since the peer's last report)
//!   corrects that between rounds.
//! * `p2c`: [`choose`] (or [`pick`], which also returns both candidates for tracing) gives a
//!   [`Decision`]: `Local`, `Forward { first, second }` or `Busy`.
//! * `breaker`: one [`CircuitBreaker`] per peer; `would_allow(now)` fills `breaker_open`,
//!   `allow(now)` is called before a send, and every answer or failure is reported back.
//! * `retry`: one [`RetryBudget`] per task on the node that accepted it.
//!
//! A task accepted from a client (`hops == 0`) then goes like this:
//!
//! 1. `choose`. `Local` runs it here; `Busy` refuses it to the client.
//! 2. `Forward`: send to `first` with `hops = 1` and record the attempt.
//! 3. `first` answers busy (a healthy answer for its breaker): send to `second` if there is
//!    one and the budget allows, else run here if there is room, else answer busy.
//! 4. `first` fails: report it to its breaker; if [`may_retry`], `choose` again without the
//!    peers already tried (which may now say `Local`), else fail the task.
//!
//! # At most one forward per task
//!
//! A forwarded task carries `hops = 1`. A node receiving a task with `hops >= MAX_HOPS`
//! ([`must_run_locally`]) runs it or answers busy ([`local_only`]) and never forwards it
//! again. Stale gossip can make two nodes each think the other is idler; without this rule a
//! task could bounce between them. Retries come from the accepting node, so a task still
//! travels at most one hop, and [`MAX_ATTEMPTS`] bounds how many peers see it.

mod breaker;
mod load;
mod p2c;
mod retry;
#[cfg(test)]
mod test;

pub use breaker::{BreakerConfig, BreakerConfigError, BreakerState, CircuitBreaker};
pub use load::{score, LocalView, NodeId, PeerView, MIN_SERVICE};
pub use p2c::{choose, local_only, pick, Decision, Pick, Scored};
pub use retry::{may_retry, RetryBudget, MAX_ATTEMPTS};

/// Hops a task may take from the node that accepted it: one forward, never a second.
pub const MAX_HOPS: u8 = 1;

/// Whether a task that has already taken `hops` hops must run here (or be refused) rather
/// than be forwarded again.
pub fn must_run_locally(hops: u8) -> bool {
    hops >= MAX_HOPS
}
