//! Replay is idempotent: the journal written live (with a downtime in the middle) equals the
//! journal rebuilt from the streams into a fresh database, and replaying the streams again into
//! the same database changes nothing. On SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use bus::{keys, Bus};
use journal::{Store, TradeFilter};
use model::{
    Direction, EventKind, ExitReason, PositionEvent, PositionSide, ProtectionAction,
    ProtectionEvent, ProtectiveKind, TradingControl, TradingState,
};
use rust_decimal::Decimal;
use testkit::{PostgresServer, RedisServer};
use tokio_util::sync::CancellationToken;

async fn bus(redis: &RedisServer) -> Bus {
    Bus::connect(&bus::Config {
        url: redis.url(),
        ..bus::Config::default()
    })
    .await
    .expect("connect to redis")
}

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn event(kind: EventKind, lot: &str, reason: Option<ExitReason>, pnl: Option<&str>) -> String {
    PositionEvent {
        kind,
        lot_id: lot.into(),
        symbol: "AXSUSDT".into(),
        position_side: PositionSide::Both,
        direction: Direction::Long,
        qty: d("16"),
        entry_price: d("6.251"),
        opened_at: 1_000,
        at: 9_000,
        reason,
        why: None,
        exit_price: reason.map(|_| d("6.380")),
        realized_pnl: pnl.map(d),
        fees: reason.map(|_| d("0.09000")),
    }
    .to_json()
}

fn protection(action: ProtectionAction) -> String {
    ProtectionEvent {
        action,
        kind: ProtectiveKind::StopMarket,
        symbol: "AXSUSDT".into(),
        position_side: PositionSide::Both,
        client_algo_id: "qsl-AXSUSDT-1".into(),
        algo_id: 7,
        trigger_price: Some(d("6.15000")),
        at: 9_000,
    }
    .to_json()
}

fn result(intent: &str) -> String {
    format!(
        r#"{{"intent_id":"{intent}","symbol":"AXSUSDT","action":"BUY","status":"filled","entry_price":6.251,"executed_qty":16,"position_size_usd":100.016,"commission":0.04000800,"commission_asset":"USDT","order_id":5000000001,"client_order_id":"q-{intent}","confirmed_by":"user_stream"}}"#
    )
}

/// The first half of the history, published before the journal first runs.
async fn publish_first(bus: &Bus) -> usize {
    let entries = [
        (keys::TRADE_INTENT, r#"{"intent_id":"t-1","symbol":"AXSUSDT","action":"BUY","position_size_usd":100,"leverage":5}"#.to_string()),
        (keys::TRADE_INTENT, "not an intent".to_string()),
        (keys::TRADE_EXECUTION_RESULT, result("t-1")),
        (keys::TRADE_EXECUTION_RESULT, r#"{"status":"filled"}"#.to_string()),
        (keys::POSITION_EVENTS, event(EventKind::Opened, "t-1", None, None)),
        (keys::CONTROL_LOG, TradingControl::new(TradingState::Reducing, "ops@vps", "news at 14:30", 5_000).to_json()),
    ];
    for (stream, payload) in &entries {
        bus.publish(stream, payload).await.expect("publish");
    }
    entries.len()
}

/// The second half, published while the journal is down.
async fn publish_second(bus: &Bus) -> usize {
    let entries = [
        // A part of t-1 leaves first (a partial close fill): one trade with its close.
        (
            keys::POSITION_EVENTS,
            event(
                EventKind::Reduced,
                "t-1",
                Some(ExitReason::TakeProfit),
                Some("0.5"),
            ),
        ),
        (
            keys::POSITION_EVENTS,
            event(
                EventKind::Closed,
                "t-1",
                Some(ExitReason::TakeProfit),
                Some("1.97400000"),
            ),
        ),
        // The same exit published twice (a republish after a crash): one trade.
        (
            keys::POSITION_EVENTS,
            event(
                EventKind::Closed,
                "t-1",
                Some(ExitReason::TakeProfit),
                Some("1.97400000"),
            ),
        ),
        (
            keys::POSITION_EVENTS,
            event(EventKind::Exited, "t-2", Some(ExitReason::Exchange), None),
        ),
        (
            keys::CONTROL_LOG,
            TradingControl::new(TradingState::Active, "ops@vps", "", 6_000).to_json(),
        ),
        (
            keys::PROTECTION_EVENTS,
            protection(ProtectionAction::Placed),
        ),
        (
            keys::PROTECTION_EVENTS,
            protection(ProtectionAction::Cancelled),
        ),
    ];
    for (stream, payload) in &entries {
        bus.publish(stream, payload).await.expect("publish");
    }
    entries.len() - 1
}

/// Runs the journal (consumer group `group`) into `url` until the store holds `rows` rows,
/// then stops it and returns the store's rows.
async fn journal_until(bus: &Bus, url: &str, group: &str, rows: usize) -> Vec<String> {
    let store = Store::open(url).await.expect("open the journal");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(journal::run(
        bus.separate().await.unwrap(),
        store.clone(),
        group.to_string(),
        shutdown.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let dump = loop {
        let dump = store.dump().await.expect("dump");
        if dump.len() >= rows {
            break dump;
        }
        assert!(
            Instant::now() < deadline,
            "the journal {group} holds {} rows of {rows} after 20 s: {dump:#?}",
            dump.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    shutdown.cancel();
    task.await.unwrap().expect("the journal ends cleanly");
    store.close().await;
    assert_eq!(dump.len(), rows, "{dump:#?}");
    dump
}

async fn replay_is_idempotent(live_url: &str, fresh_url: &str) {
    let redis = RedisServer::start();
    let bus = bus(&redis).await;
    let first = publish_first(&bus).await;
    journal_until(&bus, live_url, journal::DEFAULT_GROUP, first).await;
    // Downtime: what is published meanwhile is caught up on the next start.
    let second = publish_second(&bus).await;
    let live = journal_until(&bus, live_url, journal::DEFAULT_GROUP, first + second).await;

    // Every kind of row is there, decimals with their exact digits.
    for needle in [
        "intents|",
        "results|",
        "lots|t-1|",
        "exits|t-1|t-1|",
        "exits|reduced:t-1:9000:16|t-1|",
        "exits|t-2|",
        "trading_state|",
        "protective_orders|qsl-AXSUSDT-1|placed|",
        "protective_orders|qsl-AXSUSDT-1|cancelled|",
        "|6.15000|",
        "unreadable|quantum:stream:trade.execution.res|",
        "|1.97400000|0.09000|",
        "|0.04000800|",
    ] {
        assert!(
            live.iter().any(|row| row.contains(needle)),
            "{needle} in {live:#?}"
        );
    }

    // Rebuilt from the streams into a fresh database: the same rows.
    let rebuilt = journal_until(&bus, fresh_url, "replay-fresh", first + second).await;
    assert_eq!(rebuilt, live);
    // Replayed into the same database again: nothing changes.
    let again = journal_until(&bus, live_url, "replay-same", first + second).await;
    assert_eq!(again, live);

    // The trades as the reports read them.
    let store = Store::open(live_url).await.unwrap();
    let trades = store.trades(&TradeFilter::default()).await.unwrap();
    let summary = &journal::summarize(&trades, journal::GroupBy::Total)[0];
    assert_eq!(
        (summary.trades, summary.unknown_pnl, summary.wins),
        (2, 1, 1)
    );
    assert_eq!(summary.net_pnl, d("2.474"));
    assert_eq!(trades[0].parts, 2, "{trades:#?}");
    let only_t2 = store
        .trades(&TradeFilter {
            since_ms: Some(0),
            symbol: Some("ETHUSDT".into()),
        })
        .await
        .unwrap();
    assert!(only_t2.is_empty());
    store.close().await;
}

fn temp_db(name: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "quantum-journal-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("journal.db").display());
    (dir, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_is_idempotent_on_sqlite() {
    let (live_dir, live) = temp_db("live");
    let (fresh_dir, fresh) = temp_db("fresh");
    replay_is_idempotent(&live, &fresh).await;
    let _ = std::fs::remove_dir_all(live_dir);
    let _ = std::fs::remove_dir_all(fresh_dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_is_idempotent_on_postgres() {
    let Some(postgres) = PostgresServer::start() else {
        return;
    };
    let live = postgres.create_database("journal_live");
    let fresh = postgres.create_database("journal_fresh");
    replay_is_idempotent(&live, &fresh).await;
}
