//! The journal end to end, through the real binary: `quantum run` (execution service, exit
//! monitor and journal) against the simulator and a throwaway Redis, three positions driven
//! through a take-profit, a stop-loss and a trailing stop; then `quantum trades` and
//! `quantum pnl` read the journal, and their totals equal what the exchange says it realized and
//! charged (`GET /fapi/v1/income`: REALIZED_PNL and COMMISSION), and the protective orders
//! placed and cancelled are in it.

use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bus::keys;
use rust_decimal::Decimal;
use serde_json::{json, Value};

mod support;

/// A signed GET of the simulator's REST API.
async fn signed_get(sim: &simulator::SimHandle, path: &str, query: &str) -> Value {
    use hmac::Mac;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let query = if query.is_empty() {
        format!("timestamp={ts}")
    } else {
        format!("{query}&timestamp={ts}")
    };
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(simulator::DEFAULT_API_SECRET.as_bytes())
            .unwrap();
    mac.update(query.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    reqwest::Client::new()
        .get(format!("{}{path}?{query}&signature={sig}", sim.base_url()))
        .header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `quantum <args>` on the journal at `url`; its stdout.
fn report(args: &[&str], url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_quantum"))
        .args(args)
        .args(["--journal-url", url])
        .env("NO_COLOR", "1")
        .env_remove("QUANTUM_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "quantum {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn decimal(value: &Value) -> Decimal {
    Decimal::from_str(
        value
            .as_str()
            .unwrap_or_else(|| panic!("{value} is not a string")),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pnl_from_the_journal_equals_the_exchanges_realized_pnl_and_fees() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let journal_url = support::temp_journal_url();
    let mut child = support::quantum("run", &sim, &redis.url())
        .args(["--journal-url", &journal_url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bus = support::bus(&redis.url()).await;
    let pin = |symbol: &'static str, price: &'static str| support::pin(&sim, symbol, price);
    pin("AXSUSDT", "6.250").await;
    pin("ETHUSDT", "3400.00").await;
    pin("SOLUSDT", "180.00").await;
    for intent in [
        json!({"intent_id": "j-tp", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "take_profit_pct": 2, "stop_loss_pct": 1}),
        json!({"intent_id": "j-sl", "symbol": "ETHUSDT", "action": "SELL", "quantity": 0.05, "take_profit_pct": 3, "stop_loss_pct": 1}),
        json!({"intent_id": "j-tr", "symbol": "SOLUSDT", "action": "BUY", "quantity": 1, "stop_loss_pct": 5, "trailing_pct": 1}),
    ] {
        bus.publish(keys::TRADE_INTENT, &intent.to_string())
            .await
            .unwrap();
    }
    // The three lots are opened (the journal has them) before the prices move.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let opened = bus.latest(keys::POSITION_EVENTS, 10).await.unwrap();
        if opened.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the three lots were never opened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pin("AXSUSDT", "6.380").await;
    pin("ETHUSDT", "3436.00").await;
    for price in ["185.00", "190.00", "187.50"] {
        pin("SOLUSDT", price).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The journal has the three trades.
    let deadline = Instant::now() + Duration::from_secs(30);
    let trades: Value = loop {
        let trades: Value =
            serde_json::from_str(&report(&["trades", "--json"], &journal_url)).unwrap();
        if trades.as_array().unwrap().len() == 3 {
            break trades;
        }
        assert!(
            Instant::now() < deadline,
            "the journal never had the three trades: {trades:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Every protective order the monitor placed is recorded, and so is its cancellation once
    // the position was flat.
    let store = journal::Store::open_existing(&journal_url).await.unwrap();
    loop {
        let rows = store.dump().await.unwrap();
        let placed: Vec<&str> = rows
            .iter()
            .filter_map(|r| {
                r.strip_prefix("protective_orders|")?
                    .split_once("|placed|")
                    .map(|(id, _)| id)
            })
            .collect();
        let cancelled = |id: &str| {
            rows.iter()
                .any(|r| r.starts_with(&format!("protective_orders|{id}|cancelled|")))
        };
        if !placed.is_empty() && placed.iter().all(|id| cancelled(id)) {
            assert!(placed.iter().any(|id| id.starts_with("qsl-")), "{rows:#?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "protective orders not all recorded as placed and cancelled: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.close().await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "quantum run ended with {status}");

    let mut reasons: Vec<(String, String)> = trades
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["lot_id"].as_str().unwrap().to_string(),
                t["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("j-sl".to_string(), "stop_loss".to_string()),
            ("j-tp".to_string(), "take_profit".to_string()),
            ("j-tr".to_string(), "trailing_stop".to_string())
        ]
    );

    // What the exchange realized and charged over the run.
    let income = signed_get(&sim, "/fapi/v1/income", "limit=1000").await;
    let (mut realized, mut commission) = (Decimal::ZERO, Decimal::ZERO);
    for row in income.as_array().unwrap() {
        let amount = decimal(&row["income"]);
        match row["incomeType"].as_str().unwrap() {
            "REALIZED_PNL" => realized += amount,
            "COMMISSION" => commission -= amount,
            other => panic!("unexpected income {other}"),
        }
    }
    assert!(commission > Decimal::ZERO, "{income:#}");

    let pnl: Value = serde_json::from_str(&report(&["pnl", "--json"], &journal_url)).unwrap();
    let total = &pnl[0];
    assert_eq!(total["group"], "total");
    assert_eq!(total["trades"], 3);
    assert_eq!(total["unknown_pnl"], 0);
    assert_eq!(
        decimal(&total["fees"]).round_dp(8),
        commission,
        "the journal's fees against the exchange's commissions"
    );
    assert_eq!(
        decimal(&total["net_pnl"]).round_dp(8),
        realized - commission,
        "the journal's net PnL against the exchange's realized PnL less commissions"
    );
    assert_eq!(total["wins"], 2, "{pnl:#}");

    // The other shapes of the same numbers.
    let by_reason = report(&["pnl", "--by", "reason", "--csv"], &journal_url);
    assert!(by_reason.starts_with("group,trades,wins,"), "{by_reason}");
    for group in [
        "stop_loss,1,0,",
        "take_profit,1,1,",
        "trailing_stop,1,1,",
        "total,3,2,",
    ] {
        assert!(by_reason.contains(group), "{group} in {by_reason}");
    }
    let table = report(
        &["trades", "--symbol", "ethusdt", "--since", "1h"],
        &journal_url,
    );
    assert!(
        table.contains("stop-loss") && table.contains("j-sl"),
        "{table}"
    );
    assert!(!table.contains("j-tp"), "{table}");
    sim.shutdown().await;
    if let Some(dir) = journal_url
        .strip_prefix("sqlite://")
        .and_then(|path| std::path::Path::new(path).parent())
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}
