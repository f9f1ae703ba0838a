//! spheromesh mesh: how nodes find each other, decide where a task runs and
//! hand it over.
//!
//! Work in progress (see the mesh issue). Today this crate holds:
//! - [`routing`]: speed-aware placement by expected completion, the per-task routing
//!   loop as a state machine (retries, failover, one hedge), per-peer circuit breakers,
//!   as pure functions with no IO and no clock;
//! - [`protocol`]: the forward protocol's messages and bounded MessagePack
//!   frames (ALPN `spheromesh/forward/1`);
//! - [`security`]: the cluster CA and node certificates (rcgen), mutual-TLS
//!   rustls configurations, and sealing of gossip packets with the cluster key.
//!
//! - [`membership`]: chitchat gossip over a sealed UDP transport, seeds
//!   re-resolved every round, load keys, a tuned failure detector.
//!
//! - [`transport`]: QUIC (quinn) with mutual TLS against the cluster CA: a
//!   pooled forward client and an accept loop that serves one task per stream.
//!
//! The node runtime (HTTP API, executor, drain) builds on these.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod membership;
pub mod protocol;
pub mod routing;
pub mod security;
pub mod transport;
