//! The log markers operators grep for (`TP_HIT`, `SL_HIT`, `TRAIL_HIT`, `TRAIL_UPDATE`,
//! `Close order sent`, `position closed`), read from the real `quantum run` binary's log while the
//! simulator's prices are driven through a take-profit, a stop-loss and a trailing stop.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use bus::keys;
use serde_json::json;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_profit_stop_loss_and_trailing_exits_say_so_in_the_log() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut child = support::quantum("run", &sim, &redis.url())
        .args(["--metrics-addr", &metrics_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bus = support::bus(&redis.url()).await;
    let pin = |symbol: &'static str, price: &'static str| support::pin(&sim, symbol, price);
    let flat = |symbol: &'static str| {
        let sim_url = sim.base_url();
        async move {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            let query = format!("symbol={symbol}&timestamp={ts}");
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(
                simulator::DEFAULT_API_SECRET.as_bytes(),
            )
            .unwrap();
            mac.update(query.as_bytes());
            let sig = hex::encode(mac.finalize().into_bytes());
            let rows: serde_json::Value = reqwest::Client::new()
                .get(format!(
                    "{sim_url}/fapi/v2/positionRisk?{query}&signature={sig}"
                ))
                .header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            rows[0]["positionAmt"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
                .is_zero()
        }
    };
    pin("AXSUSDT", "6.250").await;
    pin("ETHUSDT", "3400.00").await;
    pin("SOLUSDT", "180.00").await;
    // Give the services a moment to create their consumer groups.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for intent in [
        json!({"intent_id": "m-tp", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "take_profit_pct": 2, "stop_loss_pct": 1}),
        json!({"intent_id": "m-sl", "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.05, "take_profit_pct": 3, "stop_loss_pct": 1}),
        json!({"intent_id": "m-tr", "symbol": "SOLUSDT", "action": "BUY", "quantity": 1, "stop_loss_pct": 5, "trailing_pct": 1}),
    ] {
        bus.publish(keys::TRADE_INTENT, &intent.to_string())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    pin("AXSUSDT", "6.380").await;
    pin("ETHUSDT", "3363.00").await;
    for price in ["185.00", "190.00", "187.50"] {
        pin("SOLUSDT", price).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for symbol in ["AXSUSDT", "ETHUSDT", "SOLUSDT"] {
        while !flat(symbol).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{symbol} never closed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = reqwest::get(format!("http://{metrics_addr}/healthz"))
        .await
        .unwrap();
    assert!(health.status().is_success());
    assert_eq!(
        health.text().await.unwrap(),
        "ok\nexecution running\nexit-monitor running\njournal running\n"
    );
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "quantum_intents_received_total 6",
        "quantum_orders_placed_total 6",
        "quantum_results_total{status=\"filled\"} 6",
        "quantum_fill_confirm_seconds_count{confirmed_by=",
        "quantum_exit_triggers_total{kind=\"TP_HIT\"} 1",
        "quantum_exit_triggers_total{kind=\"SL_HIT\"} 1",
        "quantum_exit_triggers_total{kind=\"TRAIL_HIT\"} 1",
        "quantum_positions_closed_total{by=\"quantum\"} 3",
        "quantum_tracked_positions 0",
        "quantum_exit_seconds_count 3",
        "quantum_user_stream_connected 1",
        "quantum_rate_limit_weight_limit{client=\"execution\"} 2400",
        "quantum_rate_limit_weight_limit{client=\"exit-monitor\"} 2400",
        "# TYPE quantum_rate_limit_weight_used gauge",
        "quantum_ambiguous_submits_total{resolution=\"unresolved\"} 0",
        "quantum_positions_closed_total{by=\"exchange\"} 0",
        "quantum_task_up{task=\"execution\"} 1",
        "quantum_task_up{task=\"exit-monitor\"} 1",
    ] {
        assert!(
            metrics.contains(series),
            "/metrics lacks {series}:\n{metrics}"
        );
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    for marker in [
        "TP_HIT lot=m-tp",
        "SL_HIT lot=m-sl",
        "TRAIL_UPDATE lot=m-tr",
        "TRAIL_HIT lot=m-tr",
        "Close order sent lot=m-tp",
        "Close order sent lot=m-sl",
        "Close order sent lot=m-tr",
        "position closed lot=m-tp",
        "position closed lot=m-sl",
        "position closed lot=m-tr",
        "order FILLED",
    ] {
        assert!(log.contains(marker), "the log lacks {marker:?}:\n{log}");
    }
    assert_eq!(
        log.matches("Close order sent lot=m-tp").count(),
        1,
        "one close per lot"
    );
    sim.shutdown().await;
}
