//! Mutual TLS over real QUIC: a node from another cluster CA is refused in both directions,
//! and the handler never sees its task.

use super::*;

/// The error must be a connect failure caused by the TLS handshake.
fn assert_tls_refused(error: &ForwardError) {
    assert!(
        matches!(
            error,
            ForwardError::Connect {
                source: LinkError::Tls { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable(), "another peer may still be fine");
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_cannot_connect() {
    let handler = TestHandler::new(Behavior::Echo);
    let pair = Pair::start(handler.clone(), TransportConfig::for_test());
    // The intruder trusts the cluster CA (so it accepts the server) but its own certificate
    // comes from a CA of its own.
    let rogue_ca = generate_ca("rogue").expect("rogue CA");
    let intruder = endpoint(
        &credentials(&rogue_ca, CLIENT),
        pair.ca.cert_pem(),
        TransportConfig::for_test(),
    );
    let client = ForwardClient::new(&intruder);

    let result = client
        .forward(
            pair.server_addr,
            SERVER,
            &request("t-rogue", 100),
            Duration::from_secs(5),
        )
        .await;

    assert_tls_refused(&result.expect_err("refused"));
    assert_eq!(handler.calls(), 0, "the handler never sees the task");
    assert_eq!(pair.server.metrics().connections(), 0);
    assert!(
        eventually(Duration::from_secs(2), || pair
            .server
            .metrics()
            .handshake_failures()
            >= 1)
        .await
    );
    // The legitimate client is unaffected.
    pair.forward(&request("t-ok", 100), Duration::from_secs(5))
        .await
        .expect("forward");
    pair.server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_by_the_client() {
    let ca = generate_ca("cluster").expect("CA");
    let rogue_ca = generate_ca("rogue").expect("rogue CA");
    // The impostor would accept our client (it trusts our CA) but proves a rogue identity.
    let impostor = endpoint(
        &credentials(&rogue_ca, SERVER),
        ca.cert_pem(),
        TransportConfig::for_test(),
    );
    let impostor_addr = impostor.local_addr().expect("addr");
    let handler = TestHandler::new(Behavior::Echo);
    let server = serve(impostor, handler.clone(), CancellationToken::new());
    let client_endpoint = endpoint(
        &credentials(&ca, CLIENT),
        ca.cert_pem(),
        TransportConfig::for_test(),
    );
    let client = ForwardClient::new(&client_endpoint);

    let result = client
        .forward(
            impostor_addr,
            SERVER,
            &request("t-impostor", 100),
            Duration::from_secs(5),
        )
        .await;

    assert_tls_refused(&result.expect_err("refused"));
    assert_eq!(handler.calls(), 0);
    assert_eq!(
        client.open_connections(),
        0,
        "a refused connection is not pooled"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_server_with_another_node_name_is_refused() {
    let handler = TestHandler::new(Behavior::Echo);
    let pair = Pair::start(handler.clone(), TransportConfig::for_test());

    let result = pair
        .client
        .forward(
            pair.server_addr,
            "other.test",
            &request("t-name", 10),
            Duration::from_secs(5),
        )
        .await;

    assert_tls_refused(&result.expect_err("wrong name"));
    assert_eq!(handler.calls(), 0);
    let bad_name = pair
        .client
        .forward(
            pair.server_addr,
            "not a dns name",
            &request("t-name", 10),
            Duration::from_secs(5),
        )
        .await;
    assert!(
        matches!(bad_name, Err(ForwardError::InvalidServerName { .. })),
        "{bad_name:?}"
    );
    pair.server.shutdown().await.expect("clean shutdown");
}
