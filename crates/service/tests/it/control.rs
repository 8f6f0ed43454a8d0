//! The operator's trading state, end to end: `quantum halt --reduce-only` during a burst of
//! entries stops new entries within a second while an exit still closes its position, and
//! `halted` stops closes too. The state is set through the bus as the CLI sets it.

use std::time::{Duration, Instant};

use model::TradingState;
use rust_decimal::Decimal;
use serde_json::json;

use crate::stack::{Options, Stack};

/// How soon a change must reach every decision (the issue asks for 1 s).
const WITHIN: Duration = Duration::from_secs(1);

#[tokio::test]
async fn reducing_during_a_burst_stops_entries_within_a_second_while_an_exit_still_runs() {
    let mut stack = Stack::start(Options::default()).await;
    stack.start_monitor().await;
    stack.pin("AXSUSDT", "6.250").await;
    stack.pin("ETHUSDT", "3400.00").await;
    stack
        .publish(&json!({"intent_id": "held", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "take_profit_pct": 2, "stop_loss_pct": 1}))
        .await;
    assert_eq!(stack.result("held").await["status"], "filled");

    // A burst of entries, one every 50 ms for 3 s; the operator switches to reducing at 1.5 s.
    let started = Instant::now();
    let mut published = Vec::new();
    let mut switched_at = None;
    for n in 0..60 {
        if switched_at.is_none() && started.elapsed() >= Duration::from_millis(1500) {
            service::control::set(&stack.bus, TradingState::Reducing, "test@ci", "burst test")
                .await
                .expect("the state is written");
            switched_at = Some(Instant::now());
        }
        let id = format!("burst-{n}");
        stack
            .publish(
                &json!({"intent_id": id, "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
            )
            .await;
        published.push((id, Instant::now()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let switched_at = switched_at.expect("the switch happened during the burst");

    let mut filled_before = 0;
    for (id, at) in &published {
        let result = stack.result(id).await;
        if *at >= switched_at + WITHIN {
            assert_eq!(
                result["status"], "rejected",
                "{id}, published after the switch: {result}"
            );
            let reason = result["error"].as_str().unwrap_or_default();
            assert!(reason.contains("trading is reducing"), "{id}: {reason}");
        } else if *at < switched_at && result["status"] == "filled" {
            filled_before += 1;
        }
    }
    assert!(filled_before > 0, "the burst was trading before the switch");
    let late = published
        .iter()
        .filter(|(_, at)| *at >= switched_at + WITHIN)
        .count();
    assert!(
        late >= 10,
        "enough entries after the switch to show it: {late}"
    );

    // Closes and exits go on: the take-profit of the held position closes it.
    stack.pin("AXSUSDT", "6.300").await;
    stack.pin("AXSUSDT", "6.380").await;
    let close = stack.result("close-held-1").await;
    assert_eq!(close["status"], "filled", "{close}");
    assert_eq!(stack.position_amt("AXSUSDT").await, Decimal::ZERO);
    stack.stop().await;
}

#[tokio::test]
async fn halted_refuses_closes_too_and_resume_trades_again() {
    let stack = Stack::start(Options::default()).await;
    stack.pin("ETHUSDT", "3400.00").await;
    stack
        .publish(
            &json!({"intent_id": "open", "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
        )
        .await;
    assert_eq!(stack.result("open").await["status"], "filled");
    service::control::set(&stack.bus, TradingState::Halted, "test@ci", "halt test")
        .await
        .unwrap();
    tokio::time::sleep(WITHIN).await;
    stack
        .publish(
            &json!({"intent_id": "close-while-halted", "symbol": "ETHUSDT", "action": "CLOSE"}),
        )
        .await;
    let refused = stack.result("close-while-halted").await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("halted"));
    assert_eq!(
        stack.position_amt("ETHUSDT").await,
        "0.02".parse::<Decimal>().unwrap()
    );

    service::control::set(&stack.bus, TradingState::Active, "test@ci", "")
        .await
        .unwrap();
    tokio::time::sleep(WITHIN).await;
    stack
        .publish(
            &json!({"intent_id": "close-after-resume", "symbol": "ETHUSDT", "action": "CLOSE"}),
        )
        .await;
    assert_eq!(stack.result("close-after-resume").await["status"], "filled");
    assert_eq!(stack.position_amt("ETHUSDT").await, Decimal::ZERO);
    stack.stop().await;
}

#[tokio::test]
async fn the_failures_tripwire_stops_entries_after_repeated_timeouts() {
    let mut stack = Stack::start(Options {
        fill_timeout: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    stack
        .restart_service_with(|s| {
            s.execution.tripwire_failures = 2;
            s.execution.cancel_window = Duration::from_secs(2);
        })
        .await;
    stack.pin("ETHUSDT", "3400.00").await;
    stack.faults(json!({"never_fill": true})).await;
    for id in ["t-1", "t-2"] {
        stack
            .publish(
                &json!({"intent_id": id, "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
            )
            .await;
        assert_eq!(stack.result(id).await["status"], "timeout");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let control = loop {
        if let Some(c) = service::control::read(&stack.bus).await.unwrap() {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tripwire never set a state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(control.state, TradingState::Reducing);
    assert_eq!(control.by, "tripwire:failures");
    stack.faults(json!({"never_fill": false})).await;
    tokio::time::sleep(WITHIN).await;
    stack
        .publish(
            &json!({"intent_id": "t-3", "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
        )
        .await;
    let refused = stack.result("t-3").await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    stack.stop().await;
}

/// The daily-loss tripwire: a stop-loss that realizes more than `exit.tripwire_daily_loss`
/// USDT (net of fees) in the day sets trading to `reducing`, by the tripwire; the day's sum is
/// kept in Redis for a restart of the monitor.
#[tokio::test]
async fn a_daily_realized_loss_beyond_the_limit_sets_reducing() {
    let mut stack = Stack::start(Options::default()).await;
    stack
        .start_monitor_with(|s| s.exit.tripwire_daily_loss = Some(Decimal::ONE))
        .await;
    stack.pin("AXSUSDT", "6.250").await;
    stack
        .publish(&json!({"intent_id": "dl-1", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "stop_loss_pct": 1}))
        .await;
    assert_eq!(stack.result("dl-1").await["status"], "filled");
    // Below the stop (6.1875), above the exchange-side stop: the monitor closes at a loss of
    // about 1.4 USDT plus fees.
    stack.pin("AXSUSDT", "6.180").await;
    assert_eq!(stack.result("close-dl-1-1").await["status"], "filled");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let control = loop {
        if let Some(c) = service::control::read(&stack.bus).await.unwrap() {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daily-loss tripwire never set a state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(control.state, TradingState::Reducing);
    assert_eq!(control.by, "tripwire:daily-loss");
    assert!(
        control.reason.contains("exit.tripwire_daily_loss = 1"),
        "{}",
        control.reason
    );
    let key = service::tripwire::day_key(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    // Saved by a task of its own: poll until it is there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let saved: Decimal = loop {
        if let Some(text) = stack.bus.progress_get(&key).await.unwrap() {
            break text.parse().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the day's sum is kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(saved < -Decimal::ONE, "{saved}");
    stack.stop().await;
}
