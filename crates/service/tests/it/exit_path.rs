//! Regression tests for the exit path's broken promises (issue 9), each the reproduction from
//! the issue run against the simulator and a real Redis: a partly filled close that stranded the
//! rest, protection removed before the close was handed off, a fill past its take-profit left
//! untracked, a restart that tracked a position twice, an overflowing plan that killed the
//! monitor, a lower-case `sell` tracked as a long, a long intent id whose closes could never be
//! sent, and a position opened while the monitor runs that was never adopted.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bus::keys;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::stack::{Options, Stack};

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Polls `check` until it returns `Some`, or fails with `what` after `secs` seconds.
async fn until<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn flat(stack: &Stack, symbol: &str, secs: u64) {
    until(secs, &format!("{symbol} flat on the exchange"), || async {
        (stack.position_amt(symbol).await == Decimal::ZERO).then_some(())
    })
    .await
}

fn closes(results: &[Value], lot: &str) -> Vec<Value> {
    results
        .iter()
        .filter(|r| {
            r["action"] == "CLOSE"
                && r["intent_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&format!("close-{lot}-")))
        })
        .cloned()
        .collect()
}

fn alarms(stack: &Stack) -> u64 {
    stack
        .monitor
        .as_ref()
        .map_or(0, |m| m.1.alarms.load(Ordering::Relaxed))
}

async fn saved_lots(stack: &Stack) -> Vec<engine::monitor::Lot> {
    service::monitor_state::load_lots(&stack.bus).await.unwrap()
}

#[tokio::test]
async fn a_partly_filled_close_continues_with_the_rest_under_a_new_id() {
    let mut stack = Stack::start(Options::default()).await;
    stack.start_monitor().await;
    stack.pin("AXSUSDT", "6.250").await;
    stack.publish(&json!({"intent_id":"t2","symbol":"AXSUSDT","action":"BUY","position_size_usd":200,"leverage":5,"take_profit_pct":3,"stop_loss_pct":2})).await;
    let entry = stack.result("t2").await;
    assert_eq!(entry["status"], "filled", "{entry}");
    until(10, "lot t2 tracked", || async {
        (stack.lots_opened() == 1).then_some(())
    })
    .await;
    // A thin book: the close fills only in part.
    stack.faults(json!({"book_level_notional": "2"})).await;
    stack.pin("AXSUSDT", "6.100").await;
    let first = stack.result("close-t2-1").await;
    assert!(
        first["executed_qty"]
            .to_string()
            .parse::<Decimal>()
            .unwrap()
            < entry["executed_qty"]
                .to_string()
                .parse::<Decimal>()
                .unwrap(),
        "the first close fills only in part: {first}"
    );
    stack.faults(json!({"book_level_notional": null})).await;
    // The rest goes out under a new id, which the execution service answers.
    let second = stack.result("close-t2-2").await;
    assert_eq!(second["status"], "filled", "{second}");
    flat(&stack, "AXSUSDT", 15).await;
    until(10, "no protective order left", || async {
        stack
            .open_algo_orders("AXSUSDT")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn protection_stays_until_the_close_is_confirmed_and_an_unanswered_close_is_alarmed_and_retried(
) {
    let mut stack = Stack::start(Options::default()).await;
    stack
        .start_monitor_with(|s| s.exit.close_deadline = Duration::from_secs(2))
        .await;
    stack.pin("ETHUSDT", "3400.00").await;
    stack.publish(&json!({"intent_id":"p2","symbol":"ETHUSDT","action":"BUY","quantity":0.05,"take_profit_pct":3,"stop_loss_pct":1})).await;
    assert_eq!(stack.result("p2").await["status"], "filled");
    until(10, "protective orders placed", || async {
        (stack.open_algo_orders("ETHUSDT").await.len() == 2).then_some(())
    })
    .await;
    // The execution service is down when the stop-loss fires.
    stack.kill_service().await;
    stack.pin("ETHUSDT", "3360.00").await;
    until(15, "a second close attempt after the deadline", || async {
        let intents = stack.bus.latest(keys::TRADE_INTENT, 100).await.unwrap();
        intents
            .iter()
            .any(|e| e.payload.as_deref().is_ok_and(|p| p.contains("close-p2-2")))
            .then_some(())
    })
    .await;
    assert!(alarms(&stack) >= 1, "the unanswered close raised an alarm");
    assert_eq!(
        stack.open_algo_orders("ETHUSDT").await.len(),
        2,
        "the exchange-side orders stay while no close is confirmed"
    );
    assert_eq!(stack.position_amt("ETHUSDT").await, d("0.05"));
    // The execution service comes back: the position closes, exactly once.
    stack.start_service().await;
    flat(&stack, "ETHUSDT", 30).await;
    until(15, "no protective order left", || async {
        stack
            .open_algo_orders("ETHUSDT")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let filled: Vec<Value> = closes(&stack.results().await, "p2")
        .into_iter()
        .filter(|r| r["status"] == "filled")
        .collect();
    assert_eq!(
        filled.len(),
        1,
        "one close filled, the others refused: {filled:?}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_fill_past_its_take_profit_is_closed_at_once_not_dropped() {
    let mut stack = Stack::start(Options {
        fill_delay: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    stack.start_monitor().await;
    stack.pin("ETHUSDT", "3400.00").await;
    stack.publish(&json!({"intent_id":"f3","symbol":"ETHUSDT","action":"BUY","quantity":0.05,"take_profit_price":3407,"stop_loss_price":3350})).await;
    // The price moves past the target while the order waits for its fill.
    until(5, "the order is on the exchange", || async {
        (!stack.exchange_orders("ETHUSDT").await.is_empty()).then_some(())
    })
    .await;
    stack.pin("ETHUSDT", "3410.00").await;
    let entry = stack.result("f3").await;
    assert_eq!(entry["status"], "filled", "{entry}");
    let close = stack.result("close-f3-1").await;
    assert_eq!(close["status"], "filled", "{close}");
    flat(&stack, "ETHUSDT", 15).await;
    assert!(
        stack
            .dead_letters()
            .await
            .iter()
            .all(|l| !l.to_string().contains("f3")),
        "not refused"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_fill_while_the_monitor_was_down_is_tracked_once_with_its_own_plan() {
    let mut stack = Stack::start(Options::default()).await;
    stack.pin("ETHUSDT", "3400.00").await;
    stack.publish(&json!({"intent_id":"r4","symbol":"ETHUSDT","action":"BUY","quantity":0.15,"stop_loss_pct":6})).await;
    assert_eq!(stack.result("r4").await["status"], "filled");
    stack
        .start_monitor_with(|s| s.exit.adopt_after = Duration::from_millis(500))
        .await;
    let lots = until(10, "the lot is tracked", || async {
        let lots = saved_lots(&stack).await;
        (!lots.is_empty()).then_some(lots)
    })
    .await;
    // Long enough for several position reads and any adoption.
    tokio::time::timeout(Duration::from_secs(3), std::future::pending::<()>())
        .await
        .unwrap_err();
    let lots_after = saved_lots(&stack).await;
    let tracked: Decimal = lots_after.iter().map(|l| l.qty).sum();
    assert_eq!(tracked, d("0.15"), "tracked once: {lots_after:?}");
    assert_eq!(lots[0].id, "r4");
    assert_eq!(
        lots_after[0].levels.unwrap().stop_loss.unwrap().round_dp(2),
        (lots_after[0].entry * d("0.94")).round_dp(2),
        "the intent's 6 % stop, not the default 2 %"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_plan_whose_target_overflows_does_not_kill_the_monitor() {
    let mut stack = Stack::start(Options::default()).await;
    stack.start_monitor().await;
    stack.pin("BTCUSDT", "95000.00").await;
    stack.publish(&json!({"intent_id":"o5","symbol":"BTCUSDT","action":"BUY","quantity":0.002,"take_profit_price":"79000000000000000000000000000","stop_loss_pct":2})).await;
    assert_eq!(stack.result("o5").await["status"], "filled");
    // Protected by its stop; the target cannot be placed and is left out.
    let orders = until(10, "the stop is placed", || async {
        let orders = stack.open_algo_orders("BTCUSDT").await;
        (!orders.is_empty()).then_some(orders)
    })
    .await;
    assert!(
        orders.iter().all(|o| o["orderType"] == "STOP_MARKET"),
        "{orders:?}"
    );
    // The monitor is alive and acts: the stop-loss closes the position.
    stack.pin("BTCUSDT", "93000.00").await;
    assert_eq!(stack.result("close-o5-1").await["status"], "filled");
    flat(&stack, "BTCUSDT", 15).await;
    stack.stop().await;
}

#[tokio::test]
async fn a_lower_case_sell_is_tracked_as_a_short() {
    let mut stack = Stack::start(Options::default()).await;
    stack.start_monitor().await;
    stack.pin("ETHUSDT", "3400.00").await;
    // A short opened on the exchange, and a result for it that says "sell".
    let order = stack.place_on_exchange("ETHUSDT", "SELL", "0.05").await;
    assert_eq!(order["status"], "FILLED", "{order}");
    let result = json!({"intent_id":"s6","symbol":"ETHUSDT","action":"sell","status":"filled","entry_price":3399.99,"executed_qty":0.05,"position_size_usd":169.9995,"stop_loss_pct":1,"filled_at":now_ms(),"published_at":now_ms()});
    stack
        .bus
        .publish(keys::TRADE_EXECUTION_RESULT, &result.to_string())
        .await
        .unwrap();
    let orders = until(10, "the short's stop is placed", || async {
        let orders = stack.open_algo_orders("ETHUSDT").await;
        (!orders.is_empty()).then_some(orders)
    })
    .await;
    assert_eq!(
        orders[0]["side"], "BUY",
        "a short is closed by buying: {orders:?}"
    );
    let lots = saved_lots(&stack).await;
    assert_eq!(lots.len(), 1, "{lots:?}");
    assert_eq!(lots[0].direction, engine::exits::Direction::Short);
    stack.stop().await;
}

#[tokio::test]
async fn a_lot_with_a_128_character_intent_id_is_closed_by_the_monitor() {
    let mut stack = Stack::start(Options::default()).await;
    stack.start_monitor().await;
    stack.pin("XRPUSDT", "2.3000").await;
    let id = format!("long-{}", "x".repeat(123));
    stack.publish(&json!({"intent_id": id,"symbol":"XRPUSDT","action":"BUY","quantity":10,"take_profit_pct":1,"stop_loss_pct":1})).await;
    assert_eq!(stack.result(&id).await["status"], "filled");
    until(10, "tracked", || async {
        (stack.lots_opened() == 1).then_some(())
    })
    .await;
    stack.pin("XRPUSDT", "2.3250").await;
    flat(&stack, "XRPUSDT", 15).await;
    let closes = until(10, "the close's result", || async {
        let closes: Vec<Value> = stack
            .results()
            .await
            .into_iter()
            .filter(|r| r["action"] == "CLOSE")
            .collect();
        (!closes.is_empty()).then_some(closes)
    })
    .await;
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0]["status"], "filled");
    stack.stop().await;
}

#[tokio::test]
async fn a_position_opened_while_the_monitor_runs_is_adopted_and_protected() {
    let mut stack = Stack::start(Options::default()).await;
    stack
        .start_monitor_with(|s| s.exit.adopt_after = Duration::from_millis(500))
        .await;
    stack.pin("DOGEUSDT", "0.400000").await;
    // Give the monitor time to start with an empty book, then open a position by hand.
    until(10, "the monitor reads positions", || async {
        stack
            .bus
            .progress_get(service::monitor_state::FEED_KEY)
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    let order = stack.place_on_exchange("DOGEUSDT", "BUY", "100").await;
    assert_eq!(order["status"], "FILLED", "{order}");
    let orders = until(20, "the adopted position is protected", || async {
        let orders = stack.open_algo_orders("DOGEUSDT").await;
        (!orders.is_empty()).then_some(orders)
    })
    .await;
    assert_eq!(orders[0]["orderType"], "STOP_MARKET");
    stack.pin("DOGEUSDT", "0.391000").await;
    flat(&stack, "DOGEUSDT", 15).await;
    stack.stop().await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
