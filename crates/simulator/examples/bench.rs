//! Benchmark of the simulator itself, so later latency figures (fill confirmation, tick to close
//! intent) can be read against what the simulator adds. Not a test: it asserts nothing about time.
//!
//! `cargo run --release -p simulator --example bench [-- ORDERS]`
//!
//! Measures, with fills at zero delay and rate limits not enforced:
//! 1. sequential `POST /fapi/v1/order` MARKET with `newOrderRespType=RESULT` (round trip to FILLED);
//! 2. concurrent ACK orders from 8 clients (throughput);
//! 3. `POST /sim/v1/price` to the `markPriceUpdate` frame on a WebSocket (price-to-stream latency).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use simulator::SimConfig;
use tokio_tungstenite::tungstenite::Message;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn signed_body(params: &str) -> String {
    let payload = format!("{params}&timestamp={}", now_ms());
    let mut mac = Hmac::<Sha256>::new_from_slice(simulator::DEFAULT_API_SECRET.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    format!(
        "{payload}&signature={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

async fn place(http: &reqwest::Client, base: &str, params: &str) -> serde_json::Value {
    http.post(format!("{base}/fapi/v1/order"))
        .header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(signed_body(params))
        .send()
        .await
        .expect("order request")
        .json()
        .await
        .expect("JSON reply")
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "n={} p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}",
        samples.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        samples[samples.len() - 1]
    )
}

#[tokio::main]
async fn main() {
    let orders: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let config = SimConfig {
        fill_delay: Duration::ZERO,
        enforce_rate_limits: false,
        initial_balance: rust_decimal::Decimal::from(1_000_000_000),
        ..SimConfig::default()
    };
    let sim = simulator::spawn(config).await.expect("simulator starts");
    let base = sim.base_url();
    let http = reqwest::Client::new();

    // 1. Sequential RESULT orders: each waits for its own fill.
    let mut latencies = Vec::with_capacity(orders);
    for i in 0..orders {
        let side = if i % 2 == 0 { "BUY" } else { "SELL" };
        let started = Instant::now();
        let reply = place(
            &http,
            &base,
            &format!(
                "symbol=DOGEUSDT&side={side}&type=MARKET&quantity=100&newOrderRespType=RESULT"
            ),
        )
        .await;
        latencies.push(started.elapsed());
        assert_eq!(reply["status"], "FILLED", "{reply}");
    }
    println!(
        "sequential MARKET RESULT (place -> FILLED reply): {}",
        percentiles(latencies)
    );

    // 2. Concurrent ACK orders.
    let clients = 8;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, base) = (http.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..orders / clients {
                let side = if (i + c) % 2 == 0 { "BUY" } else { "SELL" };
                let reply = place(
                    &http,
                    &base,
                    &format!("symbol=XRPUSDT&side={side}&type=MARKET&quantity=10"),
                )
                .await;
                assert_eq!(reply["status"], "NEW", "{reply}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let total = (orders / clients) * clients;
    println!(
        "concurrent MARKET ACK, {clients} clients: {total} orders in {elapsed:.2?} = {:.0} orders/s",
        total as f64 / elapsed.as_secs_f64()
    );

    // 3. Pinned price to markPriceUpdate frame.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/market/ws/ethusdt@markPrice@1s",
        sim.ws_url()
    ))
    .await
    .unwrap();
    let mut latencies = Vec::new();
    for i in 0..200 {
        let price = format!("{}.00", 3000 + i);
        let started = Instant::now();
        http.post(format!("{base}/sim/v1/price"))
            .json(&serde_json::json!({"symbol": "ETHUSDT", "price": price}))
            .send()
            .await
            .unwrap();
        let wanted = format!("{price}000000");
        loop {
            let Some(Ok(Message::Text(text))) = ws.next().await else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["p"].as_str() == Some(wanted.as_str()) {
                break;
            }
        }
        latencies.push(started.elapsed());
    }
    println!(
        "pin price -> markPriceUpdate frame: {}",
        percentiles(latencies)
    );
    sim.shutdown().await;
}
