//! Two `quantum execution` processes on one account and one Redis, and a burst of intents past
//! Binance's order limit (300 per 10 s, enforced by the simulator). Binance counts per IP and per
//! account, not per process, so each process's own governor cannot keep the pair inside the
//! limit: they draw from the rate budget shared on the bus. The burst must end with every intent
//! `filled`, exactly one order per intent, and not a single 429 or 418.
//!
//! Regression (issue 10): a burst of 2,000 intents ended 346 filled and 1,654 failed, and 429s
//! led towards an IP ban.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bus::{keys, Bus};
use serde_json::{json, Value};

mod support;

/// More than the 300 orders one 10-second window allows.
const INTENTS: usize = 360;

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_account_fill_a_burst_past_the_order_limit_without_a_429() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::ZERO,
        ..Default::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let bus = Bus::connect(&bus::Config {
        url: redis.url(),
        ..bus::Config::default()
    })
    .await
    .unwrap();
    // The burst waits for the next window, longer than the default max_age of 10 s.
    let dir = std::env::temp_dir().join(format!("quantum-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("quantum.toml");
    std::fs::write(&config, "[execution]\nmax_age = \"3m\"\n").unwrap();
    let workers = Workers(
        ["exec-a", "exec-b"]
            .into_iter()
            .map(|name| {
                support::quantum("execution", &sim, &redis.url())
                    .args(["--consumer-name", name, "--config"])
                    .arg(&config)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    // Both read the stream before the burst, so both take part in it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let groups = bus.group_info(keys::TRADE_INTENT).await.unwrap();
        if groups.iter().any(|g| g.consumers.len() == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "both workers read: {groups:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Alternating buys and sells of one small quantity keep the position small.
    for n in 0..INTENTS {
        let side = if n % 2 == 0 { "BUY" } else { "SELL" };
        let intent = json!({"intent_id": format!("burst-{n}"), "symbol": "XRPUSDT", "action": side, "quantity": 26});
        bus.publish(keys::TRADE_INTENT, &intent.to_string())
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let results = loop {
        let results: Vec<Value> = bus
            .latest(keys::TRADE_EXECUTION_RESULT, INTENTS * 2)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| serde_json::from_str(&e.payload.ok()?).ok())
            .collect();
        if results.len() >= INTENTS {
            break results;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {INTENTS} results within the deadline (logs in {})",
            results.len(),
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    drop(workers);

    let not_filled: Vec<&Value> = results.iter().filter(|r| r["status"] != "filled").collect();
    assert!(
        not_filled.is_empty(),
        "{} not filled, e.g. {}",
        not_filled.len(),
        not_filled[0]
    );
    let mut ids: Vec<&str> = results
        .iter()
        .map(|r| r["intent_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), INTENTS, "one result per intent");

    let requests: Value = reqwest::get(format!("{}/sim/v1/requests", sim.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        requests["POST /fapi/v1/order"].as_u64(),
        Some(INTENTS as u64),
        "one order per intent: {requests}"
    );
    for refusal in ["http_429", "http_418"] {
        assert_eq!(
            requests[refusal].as_u64().unwrap_or(0),
            0,
            "no {refusal}: {requests}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
