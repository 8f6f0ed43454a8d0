//! The shared behaviour suite against a real Redis, plus what only Redis can do: fail to
//! connect, lose its server, hold bytes that are not UTF-8 and keys of the wrong type, and count
//! the commands it ran.

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
async fn a_refused_connection_says_refused_not_no_answer() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config {
        url: format!("redis://127.0.0.1:{port}"),
        ..Config::default()
    };
    let err = Bus::connect(&config).await.unwrap_err().to_string();
    assert!(err.to_ascii_lowercase().contains("refused"), "{err}");
    assert!(!err.contains("no answer within"), "{err}");
}

#[tokio::test]
async fn a_namespaced_bus_shares_the_server_and_nothing_else() {
    let server = RedisServer::start();
    let plain = Bus::connect(&impatient(&server)).await.unwrap();
    let demo = plain.namespaced("demo-1");
    let stream = bus::keys::TRADE_INTENT;
    plain.publish(stream, "{\"plain\":1}").await.unwrap();
    demo.publish(stream, "{\"demo\":1}").await.unwrap();
    demo.ensure_group(stream, "g").await.unwrap();
    demo.progress_set("k", "v", Duration::from_secs(60))
        .await
        .unwrap();
    let seen = |entries: Vec<bus::Entry>| -> Vec<String> {
        entries.into_iter().map(|e| e.payload.unwrap()).collect()
    };
    assert_eq!(
        seen(plain.latest(stream, 10).await.unwrap()),
        ["{\"plain\":1}"]
    );
    assert_eq!(
        seen(demo.latest(stream, 10).await.unwrap()),
        ["{\"demo\":1}"]
    );
    assert!(plain.group_info(stream).await.unwrap().is_empty());
    assert_eq!(demo.group_info(stream).await.unwrap().len(), 1);
    assert_eq!(plain.progress_get("k").await.unwrap(), None);
    assert_eq!(demo.progress_get("k").await.unwrap().as_deref(), Some("v"));
    // Under its prefix on the server, for whoever looks with redis-cli.
    let raw = plain.namespaced("demo-1");
    assert_eq!(raw.len(stream).await.unwrap(), 1);
    assert_eq!(
        plain.len(&format!("demo-1:{stream}")).await.unwrap(),
        1,
        "the namespaced stream is demo-1:{stream}"
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

/// A config for `server` whose calls give up after half a second, so a lost server shows fast.
fn impatient(server: &RedisServer) -> Config {
    Config {
        url: server.url(),
        op_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_lost_server_makes_calls_unavailable_not_stuck() {
    let mut server = RedisServer::start();
    let bus = Bus::connect(&impatient(&server)).await.unwrap();
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

/// Regression (found by `quantum chaos`): after Redis restarted under running services, they
/// never reached it again. Every kind of call must work again once the server is back, within a
/// few operation timeouts, on the same `Bus` and on a separate one made before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_works_again_after_redis_restarts() {
    let mut server = RedisServer::start();
    let bus = Bus::connect(&impatient(&server)).await.unwrap();
    let writer = bus.separate().await.unwrap();
    bus.ensure_group("s", "g").await.unwrap();
    bus.publish("s", "before").await.unwrap();
    assert_eq!(
        bus.read("s", "g", "a", 10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );

    server.stop();
    // While it is down, calls fail as retryable, and a blocking read does not hang.
    assert!(bus.publish("s", "x").await.unwrap_err().is_retryable());
    assert!(bus
        .read("s", "g", "a", 1, Duration::from_millis(100))
        .await
        .unwrap_err()
        .is_retryable());
    // Down long enough for the client's reconnect attempts to back off.
    for _ in 0..3 {
        let _ = bus.ping().await;
        let _ = writer.ping().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.restart();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            bus.ping().await?;
            writer.ping().await?;
            bus.ensure_group("s", "g").await?;
            bus.publish("s", "after").await?;
            writer.map_put("m", &pairs(&[("k", "v")])).await?;
            let read = bus
                .read("s", "g", "a", 10, Duration::from_millis(100))
                .await?;
            Ok::<_, Error>(read)
        };
        let last = match attempt.await {
            Ok(read) if !read.is_empty() => break,
            Ok(_) => "read returned nothing".to_owned(),
            Err(err) => format!("{err:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "the bus never reached the restarted Redis: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

/// A bus on a fresh server plus a raw connection to it, for the state map tests below.
async fn bus_and_raw(server: &RedisServer) -> (Bus, redis::aio::MultiplexedConnection) {
    let config = Config {
        url: server.url(),
        ..Config::default()
    };
    let bus = Bus::connect(&config).await.unwrap();
    let raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (bus, raw)
}

/// How many times the server has run `command` (lower case), from `INFO commandstats`.
async fn command_calls(raw: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(field, value)| ((*field).to_owned(), (*value).to_owned()))
        .collect()
}

#[tokio::test]
async fn map_apply_is_one_transaction() {
    let server = RedisServer::start();
    let (bus, mut raw) = bus_and_raw(&server).await;
    bus.map_put("m", &pairs(&[("a", "1")])).await.unwrap();
    bus.map_apply("m", &pairs(&[("b", "1")]), &["a".to_owned()])
        .await
        .unwrap();
    assert_eq!(command_calls(&mut raw, "multi").await, 1);
    assert_eq!(command_calls(&mut raw, "exec").await, 1);
    // Empty inputs never reach Redis.
    bus.map_put("m", &[]).await.unwrap();
    bus.map_delete("m", &[]).await.unwrap();
    bus.map_apply("m", &[], &[]).await.unwrap();
    assert_eq!(command_calls(&mut raw, "hset").await, 2);
    assert_eq!(command_calls(&mut raw, "hdel").await, 1);
    assert_eq!(command_calls(&mut raw, "exec").await, 1);
}

#[tokio::test]
async fn publish_and_set_is_one_transaction() {
    let server = RedisServer::start();
    let (bus, mut raw) = bus_and_raw(&server).await;
    bus.publish_and_set("s", "x", "k", "v", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(command_calls(&mut raw, "multi").await, 1);
    assert_eq!(command_calls(&mut raw, "exec").await, 1);
    assert_eq!(command_calls(&mut raw, "xadd").await, 1);
    assert_eq!(command_calls(&mut raw, "set").await, 1);
}

#[tokio::test]
async fn map_all_pages_through_a_large_map() {
    let server = RedisServer::start();
    let (bus, mut raw) = bus_and_raw(&server).await;
    let all: Vec<(String, String)> = (0..10_000)
        .map(|n| (format!("lot-{n}"), n.to_string()))
        .collect();
    bus.map_put("m", &all).await.unwrap();
    assert_eq!(command_calls(&mut raw, "hset").await, 1, "one round trip");
    assert_eq!(bus.map_all("m").await.unwrap().len(), 10_000);
    // COUNT is a hint, so the exact number of pages is Redis's; about ten of 1000 fields.
    let pages = command_calls(&mut raw, "hscan").await;
    assert!((5..=30).contains(&pages), "{pages} pages");
    assert_eq!(command_calls(&mut raw, "hgetall").await, 0);
}

#[tokio::test]
async fn a_map_on_a_key_of_another_type_is_a_protocol_error() {
    let server = RedisServer::start();
    let (bus, _raw) = bus_and_raw(&server).await;
    bus.publish("s", "x").await.unwrap();
    let errors = [
        bus.map_put("s", &pairs(&[("a", "1")])).await.unwrap_err(),
        bus.map_delete("s", &["a".to_owned()]).await.unwrap_err(),
        bus.map_all("s").await.unwrap_err(),
        bus.map_apply("s", &pairs(&[("a", "1")]), &["b".to_owned()])
            .await
            .unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }
    assert_eq!(bus.len("s").await.unwrap(), 1, "the stream is untouched");
}

#[tokio::test]
async fn a_map_value_that_is_not_utf8_is_a_protocol_error_naming_the_field() {
    let server = RedisServer::start();
    let (bus, mut raw) = bus_and_raw(&server).await;
    let _: u64 = redis::cmd("HSET")
        .arg("m")
        .arg("lot-7")
        .arg(&b"\xff\xfe"[..])
        .query_async(&mut raw)
        .await
        .unwrap();
    let err = bus.map_all("m").await.unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("lot-7"), "{err}");
}

#[tokio::test]
async fn a_separate_bus_has_a_connection_of_its_own_on_the_same_data() {
    let server = RedisServer::start();
    let bus = Bus::connect(&Config {
        url: server.url(),
        ..Config::default()
    })
    .await
    .unwrap();
    let before = connected_clients(&server.url()).await;
    let other = bus.separate().await.unwrap();
    assert_eq!(connected_clients(&server.url()).await, before + 1);
    other.publish("s", "from-the-other").await.unwrap();
    let seen = bus.latest("s", 1).await.unwrap();
    assert_eq!(seen[0].payload.as_deref(), Ok("from-the-other"));
}

/// Clients connected to the server, not counting the one asking.
async fn connected_clients(url: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines().count() - 1
}
