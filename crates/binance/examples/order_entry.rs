//! Benchmark of order entry over REST against the WebSocket API, on one simulator in one run, so
//! the two transports meet the same exchange: the time from sending a MARKET order to its
//! acknowledgement (`newOrderRespType=ACK`), alternating the transports order by order. Not a
//! test: it asserts nothing about time.
//!
//! `cargo run --release -p binance --example order_entry [-- ORDERS]` (300 of each by default,
//! one pair every 100 ms, so about a minute).
//!
//! Against `quantum sim` on loopback there is no TLS, so this measures the HTTP exchange and the
//! client's work per request, not the TLS handshake a fresh connection to Binance costs (quantum's
//! REST client keeps connections alive, so that cost is paid once per connection, not per order).

use std::time::{Duration, Instant};

use binance::{Config, NewOrder, RestClient, Secret, Side, WsApiClient, WsApiConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50={:.3}ms p90={:.3}ms p99={:.3}ms max={:.3}ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1000.0,
        percentile(&samples, 0.90).as_secs_f64() * 1000.0,
        percentile(&samples, 0.99).as_secs_f64() * 1000.0,
        samples.last().unwrap().as_secs_f64() * 1000.0,
    );
}

#[tokio::main]
async fn main() {
    let orders: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(0),
        enforce_rate_limits: false,
        ..simulator::SimConfig::default()
    })
    .await
    .expect("simulator");
    let mut config = Config::custom(
        &sim.base_url(),
        &sim.ws_url(),
        simulator::DEFAULT_API_KEY,
        simulator::DEFAULT_API_SECRET,
    )
    .unwrap();
    config.request_timeout = Duration::from_secs(5);
    let rest = RestClient::new(config).unwrap();
    rest.sync_time().await.unwrap();
    let ws = WsApiClient::spawn(
        WsApiConfig {
            url: format!("{}/ws-fapi/v1", sim.ws_url()).parse().unwrap(),
            api_key: simulator::DEFAULT_API_KEY.into(),
            api_secret: Secret::new(simulator::DEFAULT_API_SECRET),
            private_key: None,
            recv_window: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        },
        rest.clone(),
    );
    assert!(ws.wait_connected(Duration::from_secs(5)).await);
    // Warm both paths (connection pool, caches).
    for n in 0..10 {
        let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
        let qty = "0.002".parse().unwrap();
        rest.place_order(&NewOrder::market(
            "BTCUSDT",
            side,
            qty,
            format!("warm-r{n}"),
        ))
        .await
        .unwrap();
        ws.place_order(&NewOrder::market(
            "BTCUSDT",
            side,
            qty,
            format!("warm-w{n}"),
        ))
        .await
        .unwrap();
    }
    let (mut over_rest, mut over_ws) = (Vec::new(), Vec::new());
    // One pair every 100 ms: 20 orders/s stays inside the account's 1,200 per minute, which the
    // client's governor counts for both transports (an order is an order, whichever door).
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    for n in 0..orders {
        pace.tick().await;
        // Alternate sides so the position stays near flat (and margin never runs out).
        let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
        let qty = "0.002".parse().unwrap();
        let t = Instant::now();
        rest.place_order(&NewOrder::market(
            "BTCUSDT",
            side,
            qty,
            format!("bench-r{n}"),
        ))
        .await
        .unwrap();
        over_rest.push(t.elapsed());
        let t = Instant::now();
        ws.place_order(&NewOrder::market(
            "BTCUSDT",
            side,
            qty,
            format!("bench-w{n}"),
        ))
        .await
        .unwrap();
        over_ws.push(t.elapsed());
    }
    report("REST POST /fapi/v1/order (ACK)", over_rest);
    report("WebSocket API order.place (ACK)", over_ws);
    ws.shutdown();
    sim.shutdown().await;
}
