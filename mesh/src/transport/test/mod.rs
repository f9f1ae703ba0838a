//! Loopback tests of the QUIC transport: real QUIC on `127.0.0.1:0` sockets, real
//! certificates from `security::generate_ca` / `issue_node_cert`, no in-memory double.
//!
//! Helpers live here; the tests are grouped by what they check.

mod faults;
mod lifecycle;
mod round_trip;
mod security;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::protocol::{TaskRequest, TaskResponse};
use crate::security::{generate_ca, issue_node_cert, CaBundle, NodeCredentials};

/// Node name of every test server; clients dial it as the TLS server name.
const SERVER: &str = "server.test";
/// Node name of every test client.
const CLIENT: &str = "client.test";

/// What a [`TestHandler`] does with a task.
#[derive(Debug, Clone, Copy)]
enum Behavior {
    /// Answer at once with the image bytes as `polygons_json`.
    Echo,
    /// Sleep, then echo.
    Sleep(Duration),
    /// Never answer.
    Hang,
    /// Panic.
    Panic,
}

/// A handler that counts its calls and signals when one starts.
#[derive(Debug)]
struct TestHandler {
    behavior: Behavior,
    calls: AtomicUsize,
    started: Notify,
}

impl TestHandler {
    fn new(behavior: Behavior) -> Arc<Self> {
        Arc::new(Self {
            behavior,
            calls: AtomicUsize::new(0),
            started: Notify::new(),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TaskHandler for TestHandler {
    async fn handle(&self, req: TaskRequest, _remote: SocketAddr) -> TaskResponse {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        match self.behavior {
            Behavior::Echo => {}
            Behavior::Sleep(delay) => tokio::time::sleep(delay).await,
            Behavior::Hang => std::future::pending::<()>().await,
            Behavior::Panic => panic!("test handler panics on purpose"),
        }
        echo(req)
    }
}

/// The answer [`Behavior::Echo`] gives.
fn echo(req: TaskRequest) -> TaskResponse {
    TaskResponse::Done {
        polygons_json: req.image,
        width: 1,
        height: 1,
        processing_ms: 0,
        processed_by: SERVER.into(),
        active_after: None,
    }
}

/// A task whose image is `len` bytes of a fixed pattern.
fn request(task_id: &str, len: usize) -> TaskRequest {
    TaskRequest {
        task_id: task_id.into(),
        image: (0..len).map(|i| (i % 251) as u8).collect(),
        threshold: 0.5,
        simplify_tolerance: Some(1.0),
        deadline_ms: 30_000,
        hops: 1,
        entry_node: CLIENT.into(),
        refuse_above_ms: None,
    }
}

fn credentials(ca: &CaBundle, name: &str) -> NodeCredentials {
    issue_node_cert(ca, name, &[]).expect("node certificate")
}

/// An endpoint on a fresh `127.0.0.1:0` socket.
fn endpoint(node: &NodeCredentials, ca_pem: &str, config: TransportConfig) -> MeshEndpoint {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    MeshEndpoint::from_socket(socket, node, ca_pem, config).expect("endpoint")
}

/// A served node and a client node from the same cluster CA.
struct Pair {
    ca: CaBundle,
    server: ServerHandle,
    server_endpoint: MeshEndpoint,
    server_addr: SocketAddr,
    client: Arc<ForwardClient>,
}

impl Pair {
    fn start(handler: Arc<TestHandler>, config: TransportConfig) -> Self {
        let ca = generate_ca("transport-test").expect("CA");
        let server_endpoint = endpoint(&credentials(&ca, SERVER), ca.cert_pem(), config.clone());
        let server_addr = server_endpoint.local_addr().expect("server addr");
        let server = serve(server_endpoint.clone(), handler, CancellationToken::new());
        let client_endpoint = endpoint(&credentials(&ca, CLIENT), ca.cert_pem(), config);
        let client = Arc::new(ForwardClient::new(&client_endpoint));
        Pair {
            ca,
            server,
            server_endpoint,
            server_addr,
            client,
        }
    }

    async fn forward(
        &self,
        req: &TaskRequest,
        timeout: Duration,
    ) -> Result<TaskResponse, ForwardError> {
        self.client
            .forward(self.server_addr, SERVER, req, timeout)
            .await
    }
}

/// Polls `check` until it holds or `limit` passes; returns whether it held.
async fn eventually(limit: Duration, check: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
