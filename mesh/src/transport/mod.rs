//! The QUIC transport of the forward protocol: how a task and its image bytes travel from a
//! busy node to a peer and how the answer comes back.
//!
//! QUIC (RFC 9000) over UDP, secured by TLS 1.3 as RFC 9001 specifies, with mutual
//! certificates from the cluster CA (`crate::security`) and ALPN `spheromesh/forward/1`
//! (`crate::protocol::ALPN`).
//!
//! * [`MeshEndpoint`]: the node's one UDP socket, serving and dialling. Keep-alives and an
//!   idle timeout ([`TransportConfig`]) make each connection a failure detector for its peer.
//! * [`ForwardClient`]: one pooled connection per peer, one bidirectional stream per task
//!   (RFC 9000 §2); [`ForwardError`] says what failed and
//!   [`is_retryable`](ForwardError::is_retryable) whether another peer may take the task.
//! * [`serve`]: the accept loop, running each task through a [`TaskHandler`]; a bad request
//!   frame costs its own stream only. [`ServerHandle::shutdown`] drains in-flight tasks.
//! * [`codes`]: the application error codes on the wire (RFC 9000 §20.2).
//!
//! quinn's types stay inside this module: callers see the wrappers above only.
//!
//! # Example
//!
//! Two nodes of one cluster on loopback: one serves, the other forwards a task to it.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use spheromesh_mesh::protocol::{TaskRequest, TaskResponse};
//! use spheromesh_mesh::security::{generate_ca, issue_node_cert};
//! use spheromesh_mesh::transport::{
//!     serve, ForwardClient, MeshEndpoint, TaskHandler, TransportConfig,
//! };
//! use tokio_util::sync::CancellationToken;
//!
//! /// A node with no capacity: it answers every task with `Busy`.
//! struct AlwaysBusy;
//!
//! impl TaskHandler for AlwaysBusy {
//!     async fn handle(&self, _req: TaskRequest, _remote: SocketAddr) -> TaskResponse {
//!         TaskResponse::Busy {
//!             retry_after_ms: 100,
//!             active_now: None,
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = generate_ca("example-cluster")?;
//! let loopback: SocketAddr = "127.0.0.1:0".parse()?;
//! let b = issue_node_cert(&ca, "node-b", &[])?;
//! let server_endpoint =
//!     MeshEndpoint::bind(loopback, &b, ca.cert_pem(), TransportConfig::default())?;
//! let server_addr = server_endpoint.local_addr()?;
//! let server = serve(
//!     server_endpoint,
//!     Arc::new(AlwaysBusy),
//!     CancellationToken::new(),
//! );
//!
//! let a = issue_node_cert(&ca, "node-a", &[])?;
//! let client = ForwardClient::new(&MeshEndpoint::bind(
//!     loopback,
//!     &a,
//!     ca.cert_pem(),
//!     TransportConfig::default(),
//! )?);
//! let task = TaskRequest {
//!     task_id: "task-1".into(),
//!     image: vec![0; 1024],
//!     threshold: 0.5,
//!     simplify_tolerance: None,
//!     deadline_ms: 10_000,
//!     hops: 1,
//!     entry_node: "node-a".into(),
//!     refuse_above_ms: None,
//! };
//! let answer = client
//!     .forward(server_addr, "node-b", &task, Duration::from_secs(5))
//!     .await?;
//! assert_eq!(
//!     answer,
//!     TaskResponse::Busy {
//!         retry_after_ms: 100,
//!         active_now: None,
//!     }
//! );
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Tests run real QUIC on `127.0.0.1:0` with real certificates (`test/`). They use real time:
//! quinn's timers (keep-alive, idle timeout, loss recovery) would all fire at once under
//! tokio's paused clock.

mod client;
pub mod codes;
mod config;
mod endpoint;
mod error;
mod metrics;
mod server;
mod stream;

#[cfg(test)]
mod test;

pub use client::ForwardClient;
pub use config::{
    ConfigError, TransportConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_KEEP_ALIVE, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_STREAMS, DEFAULT_SHUTDOWN_GRACE,
};
pub use endpoint::{BindError, MeshEndpoint};
pub use error::{Cause, ForwardError, LinkError};
pub use metrics::ServerMetrics;
pub use server::{serve, ServeError, ServerHandle, TaskHandler};
