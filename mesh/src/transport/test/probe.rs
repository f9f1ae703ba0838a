//! A latency probe for later benchmarking (no criterion): the cost of one forwarded hop over
//! loopback QUIC against calling the handler in-process, at two image sizes.
//!
//! Run: `cargo test --release -p spheromesh-mesh transport::test::probe -- --ignored --nocapture`.

use super::*;

/// The sample at quantile `q` (nearest rank) of `samples`, which it sorts.
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let last = samples.len().saturating_sub(1);
    let rank = ((last as f64) * q).round() as usize;
    samples.get(rank.min(last)).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "latency probe: run with --ignored --nocapture, in release"]
async fn forwarded_hop_latency_probe() {
    let handler = TestHandler::new(Behavior::Echo);
    let pair = Pair::start(handler.clone(), TransportConfig::default());
    let timeout = Duration::from_secs(30);
    for (label, size, rounds) in [("64 KiB", 64 * 1024, 400), ("1 MiB", 1024 * 1024, 100)] {
        let req = request(label, size);
        for _ in 0..10 {
            pair.forward(&req, timeout).await.expect("warm-up forward");
        }
        let mut hop = Vec::with_capacity(rounds);
        let mut direct = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            let answer = pair.forward(&req, timeout).await.expect("forward");
            hop.push(start.elapsed());
            std::hint::black_box(answer);

            // The in-process baseline: what running the task here costs besides inference
            // (the handler consumes the request, so the clone is part of it).
            let start = Instant::now();
            let answer = handler.handle(req.clone(), pair.server_addr).await;
            direct.push(start.elapsed());
            std::hint::black_box(answer);
        }
        println!(
            "{label} request and echoed answer, {rounds} rounds: forwarded hop p50 {:?} p99 {:?}; \
             direct call p50 {:?} p99 {:?}",
            quantile(&mut hop, 0.50),
            quantile(&mut hop, 0.99),
            quantile(&mut direct, 0.50),
            quantile(&mut direct, 0.99),
        );
    }
    pair.server.shutdown().await.expect("clean shutdown");
}
