//! The shared behaviour suite against a real Redis, plus what only Redis can do: fail to
//! connect, lose its server, and hold bytes that are not UTF-8.

use std::time::{Duration, Instant};

use bus::{Bus, Config, Error, Malformed};

use crate::suite::Backend;
use crate::support::RedisServer;

all_behaviour_tests!(Backend::Redis);

#[tokio::test]
async fn connecting_to_nothing_is_unavailable_within_the_timeout() {
    // A port that was free a moment ago; nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config {
        url: format!("redis://127.0.0.1:{port}"),
        op_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let started = Instant::now();
    let err = Bus::connect(&config).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_invalid_url_is_a_config_error() {
    let config = Config {
        url: "http://not-redis".to_owned(),
        ..Config::default()
    };
    let err = Bus::connect(&config).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_lost_server_makes_calls_unavailable_not_stuck() {
    let mut server = RedisServer::start();
    let config = Config {
        url: server.url(),
        op_timeout: Duration::from_millis(500),
        ..Config::default()
    };
    let bus = Bus::connect(&config).await.unwrap();
    bus.ping().await.unwrap();
    server.stop();

    let started = Instant::now();
    let err = bus.publish("s", "x").await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let err = bus
        .read("s", "g", "a", 1, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_payload_that_is_not_utf8_is_malformed() {
    let server = RedisServer::start();
    let config = Config {
        url: server.url(),
        ..Config::default()
    };
    let bus = Bus::connect(&config).await.unwrap();
    bus.ensure_group("s", "g").await.unwrap();
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("s")
        .arg("*")
        .arg("payload")
        .arg(&b"ok \xff\xfe"[..])
        .query_async(&mut raw)
        .await
        .unwrap();
    let entries = bus.read("s", "g", "a", 10, Duration::ZERO).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].payload,
        Err(Malformed::NotUtf8 {
            lossy: "ok \u{fffd}\u{fffd}".to_owned()
        })
    );
}
