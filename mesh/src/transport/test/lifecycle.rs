//! A peer's life and death: killed mid-task, gone silent, restarted, shut down gracefully.
//! The client must notice each through the connection itself, without gossip.

use std::sync::atomic::AtomicBool;

use tokio_util::task::AbortOnDropHandle;

use super::*;

#[tokio::test]
async fn killing_the_server_mid_task_fails_the_forward_promptly() {
    let handler = TestHandler::new(Behavior::Hang);
    let pair = Pair::start(handler.clone(), TransportConfig::for_test());
    let Pair {
        server,
        server_endpoint,
        server_addr,
        client,
        ..
    } = pair;
    let forward = tokio::spawn(async move {
        client
            .forward(
                server_addr,
                SERVER,
                &request("t-kill", 1000),
                Duration::from_secs(30),
            )
            .await
    });
    handler.started.notified().await;

    let killed = Instant::now();
    drop(server); // aborts the accept loop, its connections and their tasks
    drop(server_endpoint);
    let result = tokio::time::timeout(Duration::from_secs(5), forward)
        .await
        .expect("the forward must not hang")
        .expect("join");

    let error = result.expect_err("the server is gone");
    assert!(
        matches!(
            error,
            ForwardError::Stream { .. } | ForwardError::Connect { .. }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "took {:?}",
        killed.elapsed()
    );
}

/// A UDP relay between a client and a server that can go silent, like a crashed host.
struct Relay {
    addr: SocketAddr,
    silent: Arc<AtomicBool>,
    _task: AbortOnDropHandle<()>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Self {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = front.local_addr().expect("addr");
        let silent = Arc::new(AtomicBool::new(false));
        let quiet = Arc::clone(&silent);
        let task = tokio::spawn(async move {
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            let mut client = None;
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut up) => {
                        client = Some(from);
                        if !quiet.load(Ordering::SeqCst) {
                            let _ = back.send_to(&up[..n], server).await;
                        }
                    }
                    Ok((n, _)) = back.recv_from(&mut down) => {
                        if let (Some(to), false) = (client, quiet.load(Ordering::SeqCst)) {
                            let _ = front.send_to(&down[..n], to).await;
                        }
                    }
                }
            }
        });
        Relay {
            addr,
            silent,
            _task: AbortOnDropHandle::new(task),
        }
    }
}

#[tokio::test]
async fn a_peer_that_goes_silent_is_detected_by_the_idle_timeout() {
    let handler = TestHandler::new(Behavior::Hang);
    let pair = Pair::start(handler.clone(), TransportConfig::for_test());
    let relay = Relay::start(pair.server_addr).await;
    let (client, relay_addr) = (Arc::clone(&pair.client), relay.addr);
    let forward = tokio::spawn(async move {
        client
            .forward(
                relay_addr,
                SERVER,
                &request("t-silent", 1000),
                Duration::from_secs(30),
            )
            .await
    });
    handler.started.notified().await;

    relay.silent.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), forward)
        .await
        .expect("the idle timeout must end the forward")
        .expect("join");

    let error = result.expect_err("the peer is unreachable");
    assert!(
        matches!(
            error,
            ForwardError::Stream {
                source: LinkError::TimedOut,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable() && error.is_peer_failure());
    // for_test: 1 s idle timeout; allow for quinn's 3 × PTO floor and a loaded machine.
    assert!(
        cut.elapsed() < Duration::from_secs(4),
        "took {:?}",
        cut.elapsed()
    );
    pair.server.shutdown().await.expect("clean shutdown");
}

/// Binds `addr` again, waiting for the previous owner's socket to be released.
async fn rebind(addr: SocketAddr) -> UdpSocket {
    for _ in 0..200 {
        if let Ok(socket) = UdpSocket::bind(addr) {
            return socket;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{addr} was not released");
}

#[tokio::test]
async fn the_pool_reconnects_after_the_server_restarts_on_the_same_port() {
    let pair = Pair::start(
        TestHandler::new(Behavior::Echo),
        TransportConfig::for_test(),
    );
    pair.forward(&request("t-before", 100), Duration::from_secs(5))
        .await
        .expect("before");
    let Pair {
        ca,
        server,
        server_endpoint,
        server_addr,
        client,
    } = pair;
    server.shutdown().await.expect("clean shutdown");
    drop(server_endpoint);

    let socket = rebind(server_addr).await;
    let restarted = MeshEndpoint::from_socket(
        socket,
        &credentials(&ca, SERVER),
        ca.cert_pem(),
        TransportConfig::for_test(),
    )
    .expect("endpoint");
    let handler = TestHandler::new(Behavior::Echo);
    let server = serve(restarted, handler.clone(), CancellationToken::new());

    let req = request("t-after", 100);
    let response = client
        .forward(server_addr, SERVER, &req, Duration::from_secs(5))
        .await;

    assert_eq!(response.expect("forward after restart"), echo(req));
    assert_eq!(handler.calls(), 1);
    assert_eq!(server.metrics().connections(), 1);
    assert_eq!(client.open_connections(), 1);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_lets_in_flight_tasks_finish() {
    let handler = TestHandler::new(Behavior::Sleep(Duration::from_millis(300)));
    let pair = Pair::start(handler.clone(), TransportConfig::for_test());
    let (client, addr) = (Arc::clone(&pair.client), pair.server_addr);
    let req = request("t-drain", 1000);
    let sent = req.clone();
    let forward = tokio::spawn(async move {
        client
            .forward(addr, SERVER, &sent, Duration::from_secs(10))
            .await
    });
    handler.started.notified().await;

    pair.server.shutdown().await.expect("clean shutdown");

    let response = forward
        .await
        .expect("join")
        .expect("answered before the server closed");
    assert_eq!(response, echo(req));
    let late = pair
        .client
        .forward(addr, SERVER, &request("t-late", 10), Duration::from_secs(5))
        .await;
    assert!(
        matches!(late, Err(ForwardError::Connect { .. })),
        "{late:?}"
    );
}
