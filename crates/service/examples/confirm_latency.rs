//! Benchmark: how long after the exchange's fill the execution result is on Redis.
//! Not a test; it asserts nothing about time.
//!
//! `cargo run --release -p service --example confirm_latency [-- INTENTS]`
//!
//! Starts the simulator (fill delay 300 ms, the testnet-like default), a throwaway redis-server
//! and the execution service in one process, publishes intents one after another and reads, for
//! each result, `published_at - filled_at` (simulator fill time to result publication) and
//! `published_at - intent_at` (intent to result, including the fill delay).

use std::time::Duration;

use bus::{keys, Bus};
use service::Settings;
use simulator::SimConfig;

fn percentiles(mut v: Vec<i64>) -> String {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "n={} p50={} ms p90={} ms p99={} ms max={} ms",
        v.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        v[v.len() - 1]
    )
}

#[tokio::main]
async fn main() {
    let intents: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let sim = simulator::spawn(SimConfig {
        fill_delay: Duration::from_millis(300),
        enforce_rate_limits: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let settings = Settings::custom(
        &sim.base_url(),
        &sim.ws_url(),
        &redis.url(),
        simulator::DEFAULT_API_KEY,
        simulator::DEFAULT_API_SECRET,
    )
    .unwrap();
    let bus = Bus::connect(&settings.bus_config()).await.unwrap();
    let service = service::start(settings).await.unwrap();
    for (label, result_wait_ms) in [
        ("RESULT reply carries the fill", 5000),
        ("RESULT reply says NEW; fill from the user stream", 0),
    ] {
        let body = serde_json::json!({"result_wait_ms": result_wait_ms});
        reqwest::Client::new()
            .post(format!("{}/sim/v1/faults", sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        println!("== {label}");
        measure(&bus, intents, label).await;
    }
    service.stop().await.unwrap();
    sim.shutdown().await;
}

async fn measure(bus: &Bus, intents: usize, label: &str) {
    let mut fill_to_result = Vec::new();
    let mut intent_to_result = Vec::new();
    let mut by = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..intents {
        let side = if i % 2 == 0 { "BUY" } else { "SELL" };
        let id = format!("bench-{}-{i}", label.len());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let intent = serde_json::json!({"intent_id": id, "symbol": "DOGEUSDT", "action": side, "quantity": 100, "created_at": now});
        bus.publish(keys::TRADE_INTENT, &intent.to_string())
            .await
            .unwrap();
        let result = loop {
            let found = bus
                .latest(keys::TRADE_EXECUTION_RESULT, 5)
                .await
                .unwrap()
                .into_iter()
                .find_map(|e| {
                    let v: serde_json::Value = serde_json::from_str(&e.payload.ok()?).ok()?;
                    (v["intent_id"] == id.as_str()).then_some(v)
                });
            if let Some(v) = found {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert_eq!(result["status"], "filled", "{result}");
        let published = result["published_at"].as_i64().unwrap();
        fill_to_result.push(published - result["filled_at"].as_i64().unwrap());
        intent_to_result.push(published - result["intent_at"].as_i64().unwrap());
        *by.entry(result["confirmed_by"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    println!(
        "simulator fill -> result on Redis: {}",
        percentiles(fill_to_result)
    );
    println!(
        "intent published -> result on Redis (fill delay 300 ms): {}",
        percentiles(intent_to_result)
    );
    println!("confirmed by: {by:?}");
}
