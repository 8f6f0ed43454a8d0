//! Benchmark: from a mark price tick that crosses a take-profit to the CLOSE intent on Redis.
//! Not a test; it asserts nothing about time.
//!
//! `cargo run --release -p service --example exit_latency [-- LOTS]`
//!
//! Starts the simulator, a throwaway redis-server and the exit monitor (no execution service:
//! the filled results are published directly, and the close intents are only read back). For
//! each lot: publish a filled result, wait until the monitor tracks it, pin the price over the
//! take-profit, and time until the close intent is on `quantum:stream:trade.intent`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bus::{keys, Bus};
use service::Settings;
use simulator::SimConfig;

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "n={} p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}",
        v.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        v[v.len() - 1]
    )
}

#[tokio::main]
async fn main() {
    let lots: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let sim = simulator::spawn(SimConfig {
        tick_interval: Duration::from_secs(3600),
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
    let (monitor, counters) = service::exit_monitor::start(settings).await.unwrap();
    let http = reqwest::Client::new();
    let pin = |price: String| {
        let http = http.clone();
        let url = format!("{}/sim/v1/price", sim.base_url());
        async move {
            http.post(url)
                .json(&serde_json::json!({"symbol": "ETHUSDT", "price": price}))
                .send()
                .await
                .unwrap();
        }
    };
    let mut samples = Vec::new();
    for i in 0..lots {
        pin("3000.00".into()).await;
        let id = format!("lat-{i}");
        let result = serde_json::json!({
            "intent_id": id, "symbol": "ETHUSDT", "action": "BUY", "status": "filled",
            "entry_price": 3000, "executed_qty": 0.01, "position_size_usd": 30, "commission": 0,
            "take_profit_pct": 1, "stop_loss_pct": 1, "published_at": 0,
        });
        let opened = counters.lots_opened.load(Ordering::Relaxed);
        bus.publish(keys::TRADE_EXECUTION_RESULT, &result.to_string())
            .await
            .unwrap();
        while counters.lots_opened.load(Ordering::Relaxed) == opened {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Let the stream subscription settle before the measured tick.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = Instant::now();
        pin("3040.00".into()).await;
        let want = format!("close-{id}-1");
        loop {
            let found = bus
                .latest(keys::TRADE_INTENT, 3)
                .await
                .unwrap()
                .into_iter()
                .any(|e| e.payload.is_ok_and(|p| p.contains(&want)));
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(started.elapsed());
        // Close the lot by answering its close intent, so the next lot starts from a clean book.
        let close = serde_json::json!({
            "intent_id": want, "symbol": "ETHUSDT", "action": "CLOSE", "status": "filled",
            "entry_price": 3040, "executed_qty": 0.01, "commission": 0, "reduce_only": true, "published_at": 0,
        });
        bus.publish(keys::TRADE_EXECUTION_RESULT, &close.to_string())
            .await
            .unwrap();
    }
    println!(
        "price tick (POST /sim/v1/price) -> CLOSE intent on Redis: {}",
        percentiles(samples)
    );
    monitor.stop().await.unwrap();
    sim.shutdown().await;
}
