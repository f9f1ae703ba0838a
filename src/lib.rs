//! The spheromesh node: the runtime behind `spheromesh node`, its HTTP API and its
//! entry points.
//!
//! - [`node`]: executor, dispatch (local or forward over the mesh), metrics, and the task
//!   types every entry point shares;
//! - [`http`]: the axum API (`/segment`, `/health*`, `/metrics`, `/cluster`);
//! - [`runtime`]: one running node, from binding its addresses to draining on SIGTERM;
//! - [`uploads`]: safe paths under the shared uploads volume.
//!
//! The binary's `commands/` parse the command line and call into here.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod http;
pub mod node;
pub mod runtime;
pub mod uploads;
