//! Benchmark (a) of the mesh issue: the latency one forwarded hop adds over running a task
//! where it arrived, for 64 KiB and 1 MiB images.
//!
//! Two endpoints on loopback, mutual TLS from one cluster CA, the real [`ForwardClient`]
//! and [`serve`]; the handler answers at once with a small polygon list (as a node does
//! after inference), so the time measured is what the hop adds: encode, QUIC + TLS over
//! loopback, decode, and the way back. Running locally adds nothing comparable (the image
//! is already in memory), so the added latency is the hop's round trip.
//!
//! Run: `cargo bench -p spheromesh-mesh --bench forward_hop` (prints a Markdown table).
//! Several runs of many round trips each; reports the median over runs of p50 and p99 and
//! their min-max spread across runs.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spheromesh_mesh::protocol::{TaskRequest, TaskResponse};
use spheromesh_mesh::security::{generate_ca, issue_node_cert};
use spheromesh_mesh::transport::{
    serve, ForwardClient, MeshEndpoint, TaskHandler, TransportConfig,
};
use tokio_util::sync::CancellationToken;

/// A one-polygon answer.
const POLYGONS: &[u8] = br##"[{"id":"polygon-00000000","points":[{"x":1,"y":2}],"type":"external","class":"spheroid","color":"#FF5733"}]"##;

/// Answers every task at once with a small, realistic result.
struct InstantAnswer;

impl TaskHandler for InstantAnswer {
    async fn handle(&self, req: TaskRequest, _remote: SocketAddr) -> TaskResponse {
        std::hint::black_box(&req.image);
        TaskResponse::Done {
            polygons_json: POLYGONS.to_vec(),
            width: 1024,
            height: 1024,
            processing_ms: 0,
            processed_by: "server".into(),
            active_after: Some(0),
        }
    }
}

fn endpoint(name: &str, ca: &spheromesh_mesh::security::CaBundle) -> MeshEndpoint {
    let node = issue_node_cert(ca, name, &[]).expect("node certificate");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
    MeshEndpoint::from_socket(socket, &node, ca.cert_pem(), TransportConfig::default())
        .expect("endpoint")
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let last = sorted.len() - 1;
    sorted[((last as f64) * q).round() as usize]
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ca = generate_ca("bench").expect("CA");
        let server_ep = endpoint("server", &ca);
        let server_addr = server_ep.local_addr().expect("addr");
        let server = serve(server_ep, Arc::new(InstantAnswer), CancellationToken::new());
        let client = ForwardClient::new(&endpoint("client", &ca));
        let timeout = Duration::from_secs(30);
        println!("| payload | rounds x runs | p50 (median of runs) | p50 spread | p99 (median of runs) | p99 spread |");
        println!("|---|---|---|---|---|---|");
        for (label, size, rounds, runs) in [("64 KiB", 64 * 1024, 2000, 5), ("1 MiB", 1 << 20, 300, 5)] {
            let req = TaskRequest {
                task_id: "bench".into(),
                image: (0..size).map(|i| (i % 251) as u8).collect(),
                threshold: 0.5,
                simplify_tolerance: None,
                deadline_ms: 30_000,
                hops: 1,
                entry_node: "client".into(),
                refuse_above_ms: None,
            };
            for _ in 0..50 {
                client.forward(server_addr, "server", &req, timeout).await.expect("warm-up");
            }
            let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let mut samples = Vec::with_capacity(rounds);
                for _ in 0..rounds {
                    let start = Instant::now();
                    let answer = client.forward(server_addr, "server", &req, timeout).await;
                    samples.push(start.elapsed());
                    std::hint::black_box(answer.expect("forward"));
                }
                samples.sort_unstable();
                p50s.push(quantile(&samples, 0.50));
                p99s.push(quantile(&samples, 0.99));
            }
            let spread = |v: &[Duration]| {
                let (lo, hi) = (v.iter().min().copied(), v.iter().max().copied());
                format!("{}-{}", micros(lo.unwrap_or_default()), micros(hi.unwrap_or_default()))
            };
            println!(
                "| {label} | {rounds} x {runs} | {} | {} | {} | {} |",
                micros(median(p50s.clone())),
                spread(&p50s),
                micros(median(p99s.clone())),
                spread(&p99s)
            );
        }
        server.shutdown().await.expect("shutdown");
    });
}
