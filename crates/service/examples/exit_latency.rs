//! Benchmark: from a mark price tick that crosses a take-profit to the CLOSE intent on Redis.
//! Not a test; it asserts nothing about time.
//!
//! `cargo run --release -p service --example exit_latency [-- LOTS]`
//!
//! Starts the simulator (fills at once), a throwaway redis-server, the execution service and the
//! exit monitor, with its exchange-side protective orders: their cancellation comes before the
//! close intent, so it is part of the measured time. For each lot: open a position with an
//! intent, wait until the monitor tracks it, pin the price over its take-profit (and short of the
//! exchange-side order behind it), time until the close intent is on
//! `quantum:stream:trade.intent`, then wait until the lot is closed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bus::{keys, Bus};
use service::Settings;
use simulator::SimConfig;

#[path = "common/percentiles.rs"]
mod percentiles;
use percentiles::percentiles;

async fn wait(mut done: impl FnMut() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main]
async fn main() {
    let lots: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let sim = simulator::spawn(SimConfig {
        tick_interval: Duration::from_secs(3600),
        fill_delay: Duration::ZERO,
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
    let execution = service::start(settings.clone()).await.unwrap();
    let (monitor, counters) = service::exit_monitor::start(settings).await.unwrap();
    let http = reqwest::Client::new();
    let pin = |price: &'static str| {
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
        pin("3000.00").await;
        let id = format!("lat-{i}");
        let intent = serde_json::json!({
            "intent_id": id, "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.01,
            "take_profit_pct": 1, "stop_loss_pct": 1,
        });
        let opened = counters.lots_opened.load(Ordering::Relaxed);
        bus.publish(keys::TRADE_INTENT, &intent.to_string())
            .await
            .unwrap();
        wait(|| counters.lots_opened.load(Ordering::Relaxed) > opened).await;
        // Let the stream subscription and the protective orders settle before the measured tick.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        // About 1.03 % over the entry: past the 1 % take-profit, short of the exchange's net.
        pin("3031.00").await;
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
        wait(|| counters.lots_closed.load(Ordering::Relaxed) > i as u64).await;
    }
    println!(
        "price tick (POST /sim/v1/price) -> CLOSE intent on Redis: {}",
        percentiles(samples)
    );
    monitor.stop().await.unwrap();
    execution.stop().await.unwrap();
    sim.shutdown().await;
}
