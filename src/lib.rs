//! The spheromesh node: the runtime behind `spheromesh node`, its HTTP API and its
//! entry points.
//!
//! - [`node`]: executor, dispatch (local or forward over the mesh), metrics, and the task
//!   types every entry point shares;
//! - [`http`]: the axum API (`/segment`, `/health*`, `/metrics`, `/cluster`);
//! - [`logging`]: human or JSON log lines (instance id on every line, task spans);
//! - [`runtime`]: one running node, from binding its addresses to draining on SIGTERM;
//! - [`scaling`]: the autoscaling signal (the HPA rule over queue depth and slot demand);
//! - [`uploads`]: safe paths under the shared uploads volume;
//! - [`broker`]: the RabbitMQ drop-in: cooperative draining of `segmentation_tasks`, HTTP
//!   callbacks, dead-lettering;
//! - [`enrolment`]: the CA service that signs replicas' certificates and the node's side;
//! - [`loadtest`]: `spheromesh loadtest`, load over the HTTP API with throughput,
//!   latency percentiles, errors by kind and each node's share.
//!
//! The binary's `commands/` parse the command line and call into here.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod broker;
pub mod enrolment;
pub mod http;
pub mod loadtest;
pub mod logging;
pub mod node;
pub mod runtime;
pub mod scaling;
pub mod uploads;
