//! The spheromesh node: the runtime behind `spheromesh node`, its HTTP API and its
//! entry points.
//!
//! - [`node`]: executor, dispatch (local or forward over the mesh), the QUIC task handler,
//!   drain, and the task types every entry point shares;
//! - the binary's `commands/` parse the command line and call into here.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod broker;
pub mod node;
