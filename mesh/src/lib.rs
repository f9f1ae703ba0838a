//! spheromesh mesh: how nodes find each other, decide where a task runs and
//! hand it over.
//!
//! Work in progress (see the mesh issue). Today this crate holds:
//! - [`routing`]: power-of-two-choices placement, per-peer circuit breakers
//!   and the retry budget, as pure functions with no IO and no clock;
//! - [`protocol`]: the forward protocol's messages and bounded MessagePack
//!   frames (ALPN `spheromesh/forward/1`);
//! - [`security`]: the cluster CA and node certificates (rcgen), mutual-TLS
//!   rustls configurations, and sealing of gossip packets with the cluster key.
//!
//! Membership (chitchat), the QUIC transport and the node runtime build on it.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod protocol;
pub mod routing;
pub mod security;
