//! Happy paths and the client-side limits: round trips, pooling, timeouts, handler panics.

use super::*;
use crate::protocol::FrameError;

#[tokio::test]
async fn forwards_a_one_megabyte_image_and_gets_it_back() {
    let handler = TestHandler::new(Behavior::Echo);
    let pair = Pair::start(handler.clone(), TransportConfig::for_test());
    let req = request("t-1mb", 1024 * 1024);

    let response = pair
        .forward(&req, Duration::from_secs(10))
        .await
        .expect("forward");

    assert_eq!(response, echo(req));
    assert_eq!(handler.calls(), 1);
    pair.server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_forwards_share_one_pooled_connection() {
    // More tasks than the stream limit: the extra ones wait for stream credit (RFC 9000 §4.6).
    let config = TransportConfig {
        max_concurrent_streams: 8,
        ..TransportConfig::for_test()
    };
    let handler = TestHandler::new(Behavior::Sleep(Duration::from_millis(20)));
    let pair = Pair::start(handler.clone(), config);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let client = Arc::clone(&pair.client);
        let addr = pair.server_addr;
        tasks.spawn(async move {
            let req = request(&format!("t{i}"), 16 * 1024 + i);
            let response = client
                .forward(addr, SERVER, &req, Duration::from_secs(20))
                .await;
            (req, response)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (req, response) = joined.expect("task");
        assert_eq!(response.expect("forward"), echo(req));
    }

    assert_eq!(handler.calls(), 40);
    assert_eq!(
        pair.server.metrics().connections(),
        1,
        "one connection for all tasks"
    );
    assert_eq!(pair.client.open_connections(), 1);
    assert!(
        eventually(Duration::from_secs(2), || pair
            .server
            .metrics()
            .tasks_answered()
            == 40)
        .await
    );
    pair.server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_handler_that_never_answers_times_out_and_is_cancelled() {
    let handler = TestHandler::new(Behavior::Hang);
    let pair = Pair::start(handler.clone(), TransportConfig::for_test());
    let limit = Duration::from_millis(300);
    let started = Instant::now();

    let error = pair
        .forward(&request("t-hang", 10), limit)
        .await
        .expect_err("no answer");

    assert!(
        matches!(error, ForwardError::Timeout { after, .. } if after == limit),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // STREAM_CANCELLED reaches the server, which drops the handler's future.
    assert!(
        eventually(Duration::from_secs(2), || pair.server.metrics().cancelled()
            == 1)
        .await
    );
    pair.server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_task() {
    let pair = Pair::start(
        TestHandler::new(Behavior::Panic),
        TransportConfig::for_test(),
    );

    let error = pair
        .forward(&request("t-panic", 10), Duration::from_secs(5))
        .await
        .expect_err("panics");

    let internal = u64::from(codes::STREAM_INTERNAL);
    assert!(
        matches!(&error, ForwardError::Stream { source: LinkError::StreamReset { code }, .. } if *code == internal),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_eq!(pair.server.metrics().handler_panics(), 1);
    // The server keeps serving: the connection still takes tasks.
    let again = pair
        .forward(&request("t-panic-2", 10), Duration::from_secs(5))
        .await;
    assert!(
        matches!(again, Err(ForwardError::Stream { .. })),
        "{again:?}"
    );
    assert_eq!(pair.server.metrics().connections(), 1);
    pair.server
        .shutdown()
        .await
        .expect("a handler panic is not a server failure");
}

#[tokio::test]
async fn an_oversize_request_is_refused_before_dialling() {
    let config = TransportConfig {
        max_frame: 1024,
        ..TransportConfig::for_test()
    };
    let handler = TestHandler::new(Behavior::Echo);
    let pair = Pair::start(handler.clone(), config);

    let error = pair
        .forward(&request("t-big", 4096), Duration::from_secs(5))
        .await
        .expect_err("too big");

    assert!(
        matches!(
            &error,
            ForwardError::Request {
                source: FrameError::TooLarge { max: 1024, .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(pair.client.open_connections(), 0, "nothing was dialled");
    assert_eq!(handler.calls(), 0);
}

#[test]
fn invalid_configs_name_the_broken_rule() {
    let base = TransportConfig::default();
    assert_eq!(base.validate(), Ok(()));
    let slow_keep_alive = TransportConfig {
        keep_alive: base.idle_timeout,
        ..base.clone()
    };
    assert!(matches!(
        slow_keep_alive.validate(),
        Err(ConfigError::KeepAlive { .. })
    ));
    let no_streams = TransportConfig {
        max_concurrent_streams: 0,
        ..base
    };
    assert_eq!(
        no_streams.validate(),
        Err(ConfigError::Zero {
            field: "max_concurrent_streams"
        })
    );
}
