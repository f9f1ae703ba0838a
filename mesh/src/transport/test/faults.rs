//! Faults that cost one stream or one connection: bad frames, rejected requests and the
//! connection limit.

use super::*;

/// Reads `recv` to its end and expects the server's `STREAM_BAD_REQUEST` reset.
async fn expect_bad_request_reset(recv: &mut quinn::RecvStream) {
    let read = recv.read_to_end(1024).await;
    let code = quinn::VarInt::from_u32(codes::STREAM_BAD_REQUEST);
    assert!(
        matches!(read, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(c))) if c == code),
        "{read:?}"
    );
}

#[tokio::test]
async fn bad_frames_close_only_their_stream() {
    let max_frame = 64 * 1024;
    let config = TransportConfig {
        max_frame,
        ..TransportConfig::for_test()
    };
    let handler = TestHandler::new(Behavior::Echo);
    let pair = Pair::start(handler.clone(), config);
    let connection = pair
        .client
        .connection(pair.server_addr, SERVER)
        .await
        .expect("connect");

    // A header announcing one byte over the limit; the server acts on the header alone.
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    let oversize = u32::try_from(max_frame + 1).expect("fits");
    send.write_all(&oversize.to_be_bytes())
        .await
        .expect("write");
    expect_bad_request_reset(&mut recv).await;

    // A well-formed length with a body that is not MessagePack (0xc1 is never used).
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    let mut garbage = 8u32.to_be_bytes().to_vec();
    garbage.extend([0xc1; 8]);
    send.write_all(&garbage).await.expect("write");
    send.finish().expect("finish");
    expect_bad_request_reset(&mut recv).await;

    // The same connection still serves a valid task.
    let req = request("t-after-garbage", 1000);
    let response = pair
        .forward(&req, Duration::from_secs(5))
        .await
        .expect("forward");
    assert_eq!(response, echo(req));
    let pooled = pair
        .client
        .connection(pair.server_addr, SERVER)
        .await
        .expect("pooled");
    assert_eq!(
        pooled.stable_id(),
        connection.stable_id(),
        "same connection"
    );
    assert_eq!(pair.server.metrics().bad_frames(), 2);
    assert_eq!(pair.server.metrics().connections(), 1);
    assert_eq!(handler.calls(), 1);
    pair.server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_request_over_the_peers_limit_is_rejected_not_retried() {
    let server_config = TransportConfig {
        max_frame: 1024,
        ..TransportConfig::for_test()
    };
    let handler = TestHandler::new(Behavior::Echo);
    let pair = Pair::start(handler.clone(), server_config);
    let client_endpoint = endpoint(
        &credentials(&pair.ca, CLIENT),
        pair.ca.cert_pem(),
        TransportConfig::for_test(),
    );
    let client = ForwardClient::new(&client_endpoint);

    let result = client
        .forward(
            pair.server_addr,
            SERVER,
            &request("t-large", 4096),
            Duration::from_secs(5),
        )
        .await;

    let error = result.expect_err("rejected");
    assert!(matches!(error, ForwardError::Rejected { .. }), "{error:?}");
    assert!(!error.is_retryable() && !error.is_peer_failure());
    assert_eq!(handler.calls(), 0);
    pair.server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let config = TransportConfig {
        max_connections: 1,
        ..TransportConfig::for_test()
    };
    let pair = Pair::start(TestHandler::new(Behavior::Echo), config);
    pair.forward(&request("t-first", 10), Duration::from_secs(5))
        .await
        .expect("first");
    let second = endpoint(
        &credentials(&pair.ca, "second.test"),
        pair.ca.cert_pem(),
        TransportConfig::for_test(),
    );
    let client = ForwardClient::new(&second);

    let result = client
        .forward(
            pair.server_addr,
            SERVER,
            &request("t-second", 10),
            Duration::from_secs(5),
        )
        .await;

    assert!(
        matches!(result, Err(ForwardError::Connect { .. })),
        "{result:?}"
    );
    assert_eq!(pair.server.metrics().refused(), 1);
    pair.server.shutdown().await.expect("clean shutdown");
}
