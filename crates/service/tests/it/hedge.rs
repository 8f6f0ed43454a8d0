//! A hedge-mode account (`dualSidePosition=true`) end to end: the execution service, the exit
//! monitor, the simulator and a real Redis. A LONG and a SHORT of one symbol are held at once,
//! each protected by its own exchange-side orders (`positionSide` LONG / SHORT), and each goes
//! through a take-profit and a stop-loss: every exit closes its own side only, by a CLOSE that
//! names the side, exactly once.

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::stack::{Options, Stack};

/// A stack on a hedge-mode account, with the execution service and the monitor started after
/// the switch (they read the position mode at start).
async fn hedge_stack() -> Stack {
    let mut stack = Stack::start(Options::default()).await;
    stack.hedge_mode().await;
    stack.restart_service_with(|_| {}).await;
    stack.start_monitor().await;
    stack
}

async fn filled(stack: &Stack, intent: Value) -> Value {
    let id = intent["intent_id"].as_str().unwrap().to_string();
    stack.publish(&intent).await;
    let result = stack.result(&id).await;
    assert_eq!(result["status"], "filled", "{result}");
    result
}

/// Waits until the lots opened so far reach `n`.
async fn tracked(stack: &Stack, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stack.lots_opened() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the monitor tracks {} lots, expected {n}",
            stack.lots_opened()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the exchange holds a stop for each of `sides` of AXSUSDT, on that side.
async fn stops_on(stack: &Stack, sides: &[&str]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let algos = stack.open_algo_orders("AXSUSDT").await;
        let covered = sides.iter().all(|side| {
            algos.iter().any(|a| {
                a["positionSide"] == *side
                    && a["orderType"] == "STOP_MARKET"
                    && a["closePosition"] == true
                    && a["side"] == if *side == "LONG" { "SELL" } else { "BUY" }
            })
        });
        if covered {
            return algos;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stop on each of {sides:?}: {algos:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The close of `lot`: filled, on `side`, and that side flat on the exchange.
async fn closed(stack: &Stack, lot: &str, side: &str) -> Value {
    let close = stack.result(&format!("close-{lot}-1")).await;
    assert_eq!(close["status"], "filled", "{close}");
    assert_eq!(close["position_side"], side, "{close}");
    assert_eq!(close["action"], "CLOSE");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stack.position_amt_on("AXSUSDT", side).await != Decimal::ZERO {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{side} not flat after {close}: orders {:?}",
            stack.exchange_orders("AXSUSDT").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    close
}

#[tokio::test]
async fn a_hedge_accounts_long_and_short_each_go_through_a_take_profit_and_a_stop_loss() {
    let stack = hedge_stack().await;
    stack.pin("AXSUSDT", "6.250").await;

    // A CLOSE that names no side cannot be told apart on a hedge account: refused, with the
    // reason and a dead letter, before anything is sent.
    stack
        .publish(&json!({"intent_id": "hg-close", "symbol": "AXSUSDT", "action": "CLOSE"}))
        .await;
    let refused = stack.result("hg-close").await;
    assert_eq!(refused["status"], "rejected");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("must name position_side"),
        "{refused}"
    );

    // Round 1: the long's take-profit, then the short's stop-loss.
    let long = filled(&stack, json!({"intent_id": "hg-l1", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "take_profit_pct": 2, "stop_loss_pct": 1})).await;
    assert_eq!(
        long["position_side"], "LONG",
        "derived from the BUY: {long}"
    );
    let short = filled(&stack, json!({"intent_id": "hg-s1", "symbol": "AXSUSDT", "action": "SELL", "position_side": "SHORT", "quantity": 30, "take_profit_pct": 2, "stop_loss_pct": 3})).await;
    assert_eq!(short["position_side"], "SHORT");
    tracked(&stack, 2).await;
    // Not netted: both sides are open on the exchange, each with its own stop.
    assert_eq!(
        stack.position_amt_on("AXSUSDT", "LONG").await,
        Decimal::from(20)
    );
    assert_eq!(
        stack.position_amt_on("AXSUSDT", "SHORT").await,
        Decimal::from(-30)
    );
    stops_on(&stack, &["LONG", "SHORT"]).await;

    // 6.38 is past the long's take-profit (6.375), short of the short's stop (6.4375).
    stack.pin("AXSUSDT", "6.300").await;
    stack.pin("AXSUSDT", "6.380").await;
    let tp = closed(&stack, "hg-l1", "LONG").await;
    assert_eq!(tp["executed_qty"].to_string(), "20");
    assert_eq!(
        stack.position_amt_on("AXSUSDT", "SHORT").await,
        Decimal::from(-30),
        "the short is untouched by the long's exit"
    );
    stack.pin("AXSUSDT", "6.450").await;
    let sl = closed(&stack, "hg-s1", "SHORT").await;
    assert_eq!(sl["executed_qty"].to_string(), "30");

    // Round 2, at 6.45: a fall stops the long out, then takes the short's profit.
    filled(&stack, json!({"intent_id": "hg-l2", "symbol": "AXSUSDT", "action": "BUY", "position_side": "LONG", "quantity": 20, "take_profit_pct": 2, "stop_loss_pct": 1})).await;
    filled(&stack, json!({"intent_id": "hg-s2", "symbol": "AXSUSDT", "action": "SELL", "quantity": 30, "take_profit_pct": 2, "stop_loss_pct": 3})).await;
    tracked(&stack, 4).await;
    stops_on(&stack, &["LONG", "SHORT"]).await;
    // 6.37 is below the long's stop (6.3855 from 6.451) and above its exchange-side stop,
    // so the monitor acts first; 6.31 then passes the short's take-profit (6.320).
    stack.pin("AXSUSDT", "6.370").await;
    closed(&stack, "hg-l2", "LONG").await;
    assert_eq!(
        stack.position_amt_on("AXSUSDT", "SHORT").await,
        Decimal::from(-30)
    );
    stack.pin("AXSUSDT", "6.310").await;
    closed(&stack, "hg-s2", "SHORT").await;

    // Every exit happened once: 4 entries and 4 closes, and no protective order outlives its
    // position.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let closes: Vec<Value> = stack
        .results()
        .await
        .into_iter()
        .filter(|r| r["action"] == "CLOSE" && r["status"] == "filled")
        .collect();
    assert_eq!(closes.len(), 4, "{closes:?}");
    assert_eq!(stack.exchange_orders("AXSUSDT").await.len(), 8);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = stack.open_algo_orders("AXSUSDT").await;
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "protective orders left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.stop().await;
}

/// `quantum flatten` on a hedge account: each side gets a CLOSE of its own, both sides end
/// flat, and no protective order is left behind.
#[tokio::test]
async fn flatten_closes_both_sides_of_a_hedge_account() {
    let stack = hedge_stack().await;
    stack.pin("AXSUSDT", "6.250").await;
    filled(&stack, json!({"intent_id": "hf-l", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "stop_loss_pct": 2})).await;
    filled(&stack, json!({"intent_id": "hf-s", "symbol": "AXSUSDT", "action": "SELL", "quantity": 30, "stop_loss_pct": 2})).await;
    tracked(&stack, 2).await;
    stops_on(&stack, &["LONG", "SHORT"]).await;

    let rest = binance::RestClient::new(stack.settings().binance_config().unwrap()).unwrap();
    rest.sync_time().await.unwrap();
    let plans = service::flatten::plan(&rest, None).await.unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].describe_positions(), "LONG 20, SHORT -30");
    let closed = service::flatten::run(
        &rest,
        &stack.bus,
        &plans,
        "test@ci",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let books: Vec<(&str, &str)> = closed
        .iter()
        .map(|c| (c.book.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(
        books,
        [("AXSUSDT LONG", "filled"), ("AXSUSDT SHORT", "filled")]
    );
    assert_eq!(
        stack.position_amt_on("AXSUSDT", "LONG").await,
        Decimal::ZERO
    );
    assert_eq!(
        stack.position_amt_on("AXSUSDT", "SHORT").await,
        Decimal::ZERO
    );
    assert!(service::flatten::plan(&rest, None)
        .await
        .unwrap()
        .is_empty());
    stack.stop().await;
}

/// On a one-way account a side cannot be named: the intent is refused with the reason and a
/// dead letter, and nothing reaches the exchange.
#[tokio::test]
async fn a_position_side_on_a_one_way_account_is_refused_and_dead_lettered() {
    let stack = Stack::start(Options::default()).await;
    stack
        .publish(&json!({"intent_id": "ow-1", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "position_side": "LONG"}))
        .await;
    let result = stack.result("ow-1").await;
    assert_eq!(result["status"], "rejected");
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("one-way mode"), "{error}");
    assert!(
        stack
            .dead_letters()
            .await
            .iter()
            .any(|d| d.to_string().contains("ow-1")),
        "dead-lettered"
    );
    assert!(stack.exchange_orders("AXSUSDT").await.is_empty());
    stack.stop().await;
}

/// The position mode changed under a running service (possible with nothing open): its first
/// order is refused by the exchange (-4061, nothing executed, `rejected` with the reason), the
/// service reads the mode again, and the next intent is sent as the account now is.
#[tokio::test]
async fn a_mode_changed_under_a_running_service_is_read_again_after_the_exchange_refuses() {
    let stack = Stack::start(Options::default()).await;
    stack.pin("AXSUSDT", "6.250").await;
    filled(
        &stack,
        json!({"intent_id": "mc-0", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20}),
    )
    .await;
    filled(
        &stack,
        json!({"intent_id": "mc-c", "symbol": "AXSUSDT", "action": "CLOSE"}),
    )
    .await;
    stack.hedge_mode().await;
    stack
        .publish(
            &json!({"intent_id": "mc-1", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20}),
        )
        .await;
    let refused = stack.result("mc-1").await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["error_code"], -4061, "{refused}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut n = 2;
    loop {
        let id = format!("mc-{n}");
        stack
            .publish(
                &json!({"intent_id": id, "symbol": "AXSUSDT", "action": "BUY", "quantity": 20}),
            )
            .await;
        let result = stack.result(&id).await;
        if result["status"] == "filled" {
            assert_eq!(result["position_side"], "LONG", "{result}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service never read the new mode: {result}"
        );
        n += 1;
    }
    assert_eq!(
        stack.position_amt_on("AXSUSDT", "LONG").await,
        Decimal::from(20)
    );
    stack.stop().await;
}
