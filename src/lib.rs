//! The spheromesh node: the runtime behind `spheromesh node`, its HTTP API and its
//! entry points.
//!
//! - [`node`]: executor, dispatch (local or forward over the mesh), the QUIC task handler,
//!   drain, and the task types every entry point shares;
//! - [`loadtest`]: `spheromesh loadtest`, load over the HTTP API with throughput,
//!   latency percentiles, errors by kind and each node's share;
//! - the binary's `commands/` parse the command line and call into here.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod loadtest;
pub mod node;
