//! Benchmark: the exit monitor at scale. Not a test; it asserts nothing about time.
//!
//! `cargo run --release -p service --example exit_scale [-- SYMBOLS LOTS_PER_SYMBOL]`
//! (default 400 symbols × 25 lots = 10,000 lots)
//!
//! Starts the simulator (with `SYMBOLS` extra contracts, Binance's rate limits enforced, prices
//! pinned), a throwaway redis-server and the exit monitor with exchange-side protection on. Opens
//! one position per symbol on the exchange, then publishes one filled result per lot (the
//! positions' quantities add up), and measures:
//!
//! - read-in: from the first result published to every lot tracked;
//! - tick → CLOSE intent on Redis: `POST /sim/v1/price` over a symbol's take-profits until the
//!   first of its CLOSE intents is read from `quantum:stream:trade.intent` (a blocking XREADGROUP
//!   on its own connection), while results are still arriving and once they are all in;
//! - the process's peak RSS (simulator included; Redis is a separate process);
//! - then starts the execution service, lets the triggered closes execute, and counts the exit
//!   monitor's exchange requests per close.
//!
//! Prices are pinned (the simulator sends their frames every second, as Binance does). Per-symbol
//! mark price streams are used (`all_market_stream_above` above the symbol count): the
//! all-market stream delivers a frame once a second, which would measure the stream's period.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binance::{NewOrder, RestClient, Side};
use bus::{keys, Bus};
use rust_decimal::Decimal;
use service::Settings;
use simulator::SimConfig;

#[path = "common/percentiles.rs"]
mod percentiles;
use percentiles::percentiles;

fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn symbol(i: usize) -> String {
    format!("Q{i:03}USDT")
}

/// Requests the exit monitor sent, from the metrics registry it exports to every second.
fn monitor_requests() -> BTreeMap<String, f64> {
    let text = service::metrics::global().render();
    text.lines()
        .filter(|l| l.starts_with("quantum_rest_requests_total{client=\"exit-monitor\""))
        .filter_map(|l| {
            let endpoint = l
                .split("endpoint=\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_string();
            let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((endpoint, n))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let symbols = args.first().copied().unwrap_or(400);
    let per_symbol = args.get(1).copied().unwrap_or(25);
    let lots = symbols * per_symbol;
    let sim = simulator::spawn(SimConfig {
        // Mark price frames every second, as Binance's `@markPrice@1s`; every price is pinned.
        tick_interval: Duration::from_secs(1),
        fill_delay: Duration::ZERO,
        enforce_rate_limits: true,
        initial_balance: Decimal::from(1_000_000_000),
        extra_symbols: (0..symbols).map(|i| format!("{}:100", symbol(i))).collect(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let mut settings = Settings::custom(
        &sim.base_url(),
        &sim.ws_url(),
        &redis.url(),
        simulator::DEFAULT_API_KEY,
        simulator::DEFAULT_API_SECRET,
    )
    .unwrap();
    settings.exit.all_market_stream_above = symbols + 1;
    let bus = Bus::connect(&settings.bus_config()).await.unwrap();
    let rest = RestClient::new(settings.binance_config().unwrap()).unwrap();
    let http = reqwest::Client::new();
    let pin = |symbol: String, price: &'static str| {
        let (http, url) = (http.clone(), format!("{}/sim/v1/price", sim.base_url()));
        async move {
            http.post(url)
                .json(&serde_json::json!({"symbol": symbol, "price": price}))
                .send()
                .await
                .unwrap();
        }
    };

    // One position per symbol, paced under the order-rate limits (300 per 10 s).
    let setup = Instant::now();
    for i in 0..symbols {
        pin(symbol(i), "100.00").await;
        let order = NewOrder::market(
            symbol(i),
            Side::Buy,
            Decimal::from(per_symbol),
            format!("bench-{i}"),
        );
        rest.place_order(&order).await.unwrap();
        tokio::time::sleep(Duration::from_millis(35)).await;
    }
    println!(
        "setup: {symbols} positions opened in {:.1?}",
        setup.elapsed()
    );

    // Who reads the close intents: a group of its own on a connection of its own.
    bus.ensure_group(keys::TRADE_INTENT, "bench").await.unwrap();
    let seen: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let reader = {
        let (bus, seen) = (
            Bus::connect(&settings.bus_config()).await.unwrap(),
            seen.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok(entries) = bus
                    .read(
                        keys::TRADE_INTENT,
                        "bench",
                        "bench",
                        100,
                        Duration::from_millis(200),
                    )
                    .await
                else {
                    continue;
                };
                let now = Instant::now();
                for e in entries {
                    if let Ok(p) = e.payload {
                        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
                        let id = v["intent_id"].as_str().unwrap_or_default().to_string();
                        seen.lock().unwrap().insert(id, now);
                    }
                }
            }
        })
    };

    let (monitor, counters) = service::exit_monitor::start(settings.clone())
        .await
        .unwrap();
    let (rss0, _) = rss_mb();

    // The results: one per lot, each its own take-profit between 2 and 2.25 %.
    let results: Vec<String> = (0..lots)
        .map(|n| {
            let (i, j) = (n / per_symbol, n % per_symbol);
            serde_json::json!({
                "intent_id": format!("L{i:03}-{j:02}"), "symbol": symbol(i), "action": "BUY",
                "status": "filled", "entry_price": 100, "executed_qty": 1, "position_size_usd": 100,
                "commission": 0.04, "commission_asset": "USDT",
                "take_profit_pct": Decimal::new(200 + j as i64, 2), "stop_loss_pct": 2,
                "filled_at": 1_700_000_000_000i64 + n as i64, "published_at": 1_700_000_000_000i64 + n as i64,
            })
            .to_string()
        })
        .collect();
    let started = Instant::now();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for r in results {
                bus.publish(keys::TRADE_EXECUTION_RESULT, &r).await.unwrap();
            }
        })
    };

    // Ticks while results arrive: a symbol whose lots are all tracked, pinned over its targets
    // (2.25 %) and short of the exchange-side take-profit behind them (0.5 % further).
    let mut during = Vec::new();
    let mut next_symbol = 0;
    while counters.lots_opened.load(Ordering::Relaxed) < lots as u64 {
        let opened = counters.lots_opened.load(Ordering::Relaxed) as usize;
        if opened / per_symbol > next_symbol + 2 && during.len() < 100 {
            let s = symbol(next_symbol);
            let want = format!("close-L{next_symbol:03}-00-1");
            let t0 = Instant::now();
            pin(s, "102.30").await;
            loop {
                if let Some(at) = seen.lock().unwrap().get(&want) {
                    during.push(at.saturating_duration_since(t0));
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    println!("no close for {want} within 10 s");
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            next_symbol += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let read_in = started.elapsed();
    publisher.await.unwrap();
    let (_, hwm_read_in) = rss_mb();
    println!(
        "read-in: {lots} results over {symbols} symbols tracked in {read_in:.2?} ({:.0} results/s)",
        lots as f64 / read_in.as_secs_f64()
    );
    println!(
        "tick -> CLOSE intent on Redis while results arrive: {}",
        percentiles(during)
    );

    // Steady state: every lot tracked, protection settling.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut steady = Vec::new();
    for i in next_symbol..(next_symbol + 100).min(symbols) {
        let want = format!("close-L{i:03}-00-1");
        let t0 = Instant::now();
        pin(symbol(i), "102.30").await;
        loop {
            if let Some(at) = seen.lock().unwrap().get(&want) {
                steady.push(at.saturating_duration_since(t0));
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                println!("no close for {want} within 10 s");
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed_symbols = next_symbol + steady.len();
    println!(
        "tick -> CLOSE intent on Redis, all lots in: {}",
        percentiles(steady)
    );
    let (rss, hwm) = rss_mb();
    println!(
        "RSS: {rss0:.0} MB after start, peak {hwm_read_in:.0} MB during read-in, {rss:.0} MB now (peak {hwm:.0} MB), simulator included"
    );
    match rest.open_algo_orders(None).await {
        Ok(open) => println!("conditional orders on the account: {}", open.len()),
        Err(e) => println!("conditional orders on the account: unknown ({e})"),
    }

    // Exchange requests per close: the execution service executes the triggered closes.
    let before = monitor_requests();
    let closed_before = counters.lots_closed.load(Ordering::Relaxed);
    let execution = service::start(settings.clone()).await.unwrap();
    let want = (closed_symbols * per_symbol) as u64;
    let t0 = Instant::now();
    while counters.lots_closed.load(Ordering::Relaxed) - closed_before < want
        && t0.elapsed() < Duration::from_secs(300)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the flat symbols' protection be cancelled and the next position read happen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let closed = counters.lots_closed.load(Ordering::Relaxed) - closed_before;
    let after = monitor_requests();
    let mut total = 0.0;
    for (endpoint, n) in &after {
        let d = n - before.get(endpoint).copied().unwrap_or(0.0);
        if d > 0.0 {
            println!("  exit monitor {endpoint}: {d}");
            total += d;
        }
    }
    println!(
        "{closed} lots closed over {closed_symbols} symbols in {:.1?}: the exit monitor sent {total} exchange requests ({:.2} per lot closed, {:.2} per symbol closed); closes sent {}",
        t0.elapsed(),
        total / closed.max(1) as f64,
        total / closed_symbols.max(1) as f64,
        counters.closes_sent.load(Ordering::Relaxed),
    );
    reader.abort();
    monitor.stop().await.unwrap();
    execution.stop().await.unwrap();
    sim.shutdown().await;
}
