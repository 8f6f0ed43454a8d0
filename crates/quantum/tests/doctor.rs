//! `quantum doctor` as an operator runs it, against the simulator and a real redis-server: all
//! green after a confirmed trade; failing, with the incident's answer, when the venue accepts
//! MARKET orders and never fills them; failing on wrong keys, a skewed clock and a dead Redis.

use std::time::Duration;

use bus::{keys, Bus};
use serde_json::json;

mod support;

/// Runs `quantum doctor` with the connection flags; returns (success, stdout).
fn doctor(sim: &simulator::SimHandle, redis: &str, secret: &str, extra: &[&str]) -> (bool, String) {
    let out = support::quantum("doctor", sim, redis)
        .args(["--ws-timeout", "5s"])
        .args(extra)
        .env("BINANCE_SECRET_KEY", secret)
        .output()
        .expect("run quantum doctor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.success(),
        format!("{stdout}\n--- stderr ---\n{stderr}"),
    )
}

/// The report line of check `name`, e.g. `[pass] rest ...`.
fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.len() > 7 && l[7..].split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} line in:\n{report}"))
}

async fn faults(sim: &simulator::SimHandle, body: serde_json::Value) {
    let reply = reqwest::Client::new()
        .post(format!("{}/sim/v1/faults", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success());
}

/// Publishes a BUY intent and waits for its result on the bus.
async fn trade(bus: &Bus, id: &str) -> serde_json::Value {
    let intent = json!({"intent_id": id, "symbol": "AXSUSDT", "action": "BUY", "quantity": 16, "stop_loss_pct": 2});
    bus.publish(keys::TRADE_INTENT, &intent.to_string())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for entry in bus.latest(keys::TRADE_EXECUTION_RESULT, 20).await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&entry.payload.unwrap()).unwrap();
            if v["intent_id"] == id {
                return v;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no result for {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_every_check_after_a_confirmed_trade() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let settings = support::sim_settings(&sim, &redis.url());
    let bus = Bus::connect(&settings.bus_config()).await.unwrap();
    let execution = service::start(settings.clone()).await.unwrap();
    let (monitor, _) = service::exit_monitor::start(settings).await.unwrap();
    let result = trade(&bus, "doc-ok").await;
    assert_eq!(result["status"], "filled", "{result}");
    // The exit monitor places the position's stop on the exchange shortly after the fill; the
    // exposure check looks for it.
    let rest = binance::RestClient::new(
        support::sim_settings(&sim, &redis.url())
            .binance_config()
            .unwrap(),
    )
    .unwrap();
    rest.sync_time().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rest
        .open_algo_orders(Some("AXSUSDT"))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no exchange-side stop was placed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (ok, report) = tokio::task::block_in_place(|| {
        doctor(&sim, &redis.url(), simulator::DEFAULT_API_SECRET, &[])
    });
    assert!(ok, "doctor failed on a healthy setup:\n{report}");
    for name in [
        "rest",
        "clock",
        "websocket",
        "api-key",
        "listen-key",
        "position-mode",
        "leverage",
        "redis",
        "intent-stream",
        "result-stream",
        "results",
        "dead-letters",
        "recent-orders",
        "exposure",
    ] {
        assert!(
            line(&report, name).starts_with("[pass]"),
            "{name}:\n{report}"
        );
    }
    assert!(
        line(&report, "recent-orders").contains("1 MARKET orders: 1 FILLED"),
        "{report}"
    );
    assert!(
        line(&report, "results").contains("last result doc-ok filled"),
        "{report}"
    );
    assert!(
        line(&report, "leverage").contains("1 symbol(s) checked"),
        "{report}"
    );
    assert!(report.contains("all checks passed"), "{report}");

    monitor.stop().await.unwrap();
    execution.stop().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_when_the_venue_accepts_market_orders_and_never_fills_them() {
    let sim = simulator::spawn(simulator::SimConfig::default())
        .await
        .unwrap();
    faults(&sim, json!({"never_fill": true})).await;
    let redis = testkit::RedisServer::start();
    let mut settings = support::sim_settings(&sim, &redis.url());
    settings.execution.fill_timeout = Duration::from_secs(2);
    let bus = Bus::connect(&settings.bus_config()).await.unwrap();
    let execution = service::start(settings.clone()).await.unwrap();
    // quantum's own order: NEW, never filled, cancelled at the deadline, reported as a timeout.
    let result = trade(&bus, "doc-never").await;
    assert_eq!(result["status"], "timeout", "{result}");
    execution.stop().await.unwrap();
    // An order placed as the incident's system placed it, with nobody to cancel it: it stays NEW.
    let rest = binance::RestClient::new(settings.binance_config().unwrap()).unwrap();
    rest.sync_time().await.unwrap();
    let order = rest
        .place_order(&binance::NewOrder::market(
            "ETHUSDT",
            binance::Side::Buy,
            "0.01".parse().unwrap(),
            "incident-style-1",
        ))
        .await
        .unwrap();
    assert_eq!(order.status.as_str(), "NEW");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (ok, report) = tokio::task::block_in_place(|| {
        doctor(
            &sim,
            &redis.url(),
            simulator::DEFAULT_API_SECRET,
            &["--stuck-after", "1s"],
        )
    });
    assert!(!ok, "doctor must exit non-zero:\n{report}");
    let orders = line(&report, "recent-orders");
    assert!(orders.starts_with("[FAIL]"), "{report}");
    assert!(orders.contains("1 still NEW"), "{report}");
    assert!(
        orders.contains("stuck NEW: ETHUSDT incident-style-1"),
        "{report}"
    );
    assert!(orders.contains("1 ended with nothing filled"), "{report}");
    let results = line(&report, "results");
    assert!(
        results.starts_with("[warn]") && results.contains("1 timed out"),
        "{report}"
    );
    // Everything else is healthy: the failure names the real problem, not a symptom.
    for name in ["rest", "api-key", "listen-key", "redis"] {
        assert!(
            line(&report, name).starts_with("[pass]"),
            "{name}:\n{report}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_on_a_wrong_secret_a_skewed_clock_and_an_unreachable_redis() {
    let sim = simulator::spawn(simulator::SimConfig::default())
        .await
        .unwrap();
    faults(&sim, json!({"clock_skew_ms": 7000})).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_redis = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let (ok, report) =
        tokio::task::block_in_place(|| doctor(&sim, &dead_redis, "not-the-secret", &[]));
    assert!(!ok, "{report}");
    assert!(line(&report, "rest").starts_with("[pass]"), "{report}");
    let clock = line(&report, "clock");
    assert!(
        clock.starts_with("[FAIL]") && clock.contains("+7"),
        "{report}"
    );
    let key = line(&report, "api-key");
    assert!(
        key.starts_with("[FAIL]") && key.contains("-1022"),
        "{report}"
    );
    assert!(
        line(&report, "listen-key").starts_with("[skip]"),
        "{report}"
    );
    assert!(
        line(&report, "recent-orders").starts_with("[skip]"),
        "{report}"
    );
    assert!(line(&report, "redis").starts_with("[FAIL]"), "{report}");
    assert!(
        !report.contains("not-the-secret"),
        "the secret never reaches the output:\n{report}"
    );
    sim.shutdown().await;
}

/// Regression (issue 13): after the README's walk-through a position was open with no stop, and
/// `quantum doctor` exited 0 and `quantum positions` said only "no tracked positions". A position
/// opened outside quantum, with no exit monitor running, now fails doctor and is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_nobody_tracks_or_protects_fails_doctor_and_is_listed() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let settings = support::sim_settings(&sim, &redis.url());
    let rest = binance::RestClient::new(settings.binance_config().unwrap()).unwrap();
    rest.sync_time().await.unwrap();
    rest.place_order(&binance::NewOrder::market(
        "ETHUSDT",
        binance::Side::Sell,
        "0.05".parse().unwrap(),
        "by-hand-1",
    ))
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rest
        .position_risk(Some("ETHUSDT"))
        .await
        .unwrap()
        .iter()
        .all(|p| p.position_amt.is_zero())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order never filled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (ok, report) = tokio::task::block_in_place(|| {
        doctor(&sim, &redis.url(), simulator::DEFAULT_API_SECRET, &[])
    });
    assert!(!ok, "doctor must exit non-zero:\n{report}");
    let exposure = line(&report, "exposure");
    assert!(exposure.starts_with("[FAIL]"), "{report}");
    assert!(
        exposure.contains("ETHUSDT: the exchange holds -0.05 but quantum tracks 0"),
        "{report}"
    );
    assert!(
        exposure.contains("ETHUSDT: position -0.05 has no stop on the exchange"),
        "{report}"
    );

    let out = tokio::task::block_in_place(|| {
        support::quantum("positions", &sim, &redis.url())
            .env("BINANCE_SECRET_KEY", simulator::DEFAULT_API_SECRET)
            .output()
            .expect("run quantum positions")
    });
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("NOT WATCHED (2)"), "{listed}");
    assert!(
        listed.contains("ETHUSDT: position -0.05 has no stop on the exchange"),
        "{listed}"
    );
    sim.shutdown().await;
}
