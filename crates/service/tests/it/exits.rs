//! The exit monitor with the execution service, the simulator and a real Redis: a take-profit,
//! a stop-loss and a trailing stop each close the position exactly once, driven by pinned prices;
//! an invalid result is refused loudly while the monitor keeps working.

use std::time::Duration;

use bus::keys;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::stack::{Options, Stack};

async fn stack_with_monitor() -> Stack {
    let mut stack = Stack::start(Options::default()).await;
    stack.start_monitor().await;
    stack
}

async fn open(stack: &Stack, intent: Value) -> Value {
    let id = intent["intent_id"].as_str().unwrap().to_string();
    let before = stack.lots_opened();
    stack.publish(&intent).await;
    let result = stack.result(&id).await;
    assert_eq!(result["status"], "filled", "{result}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stack.lots_opened() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the monitor never tracked {id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    result
}

/// Waits for the close result of a lot, then checks the position is flat and exactly one close
/// order was placed.
async fn assert_closed_once(stack: &Stack, lot: &str, symbol: &str) -> Value {
    let close = stack.result(&format!("close-{lot}-1")).await;
    assert_eq!(close["status"], "filled", "{close}");
    assert_eq!(close["reduce_only"], true);
    assert_eq!(
        stack.position_amt(symbol).await,
        Decimal::ZERO,
        "flat on the exchange"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let closes: Vec<Value> = stack
        .results()
        .await
        .into_iter()
        .filter(|r| r["action"] == "CLOSE")
        .collect();
    assert_eq!(closes.len(), 1, "exactly one close: {closes:?}");
    assert_eq!(
        stack.exchange_orders(symbol).await.len(),
        2,
        "one entry and one close order"
    );
    assert!(
        stack.open_algo_orders(symbol).await.is_empty(),
        "no protective order outlives its position"
    );
    close
}

#[tokio::test]
async fn a_take_profit_closes_the_long_exactly_once() {
    let stack = stack_with_monitor().await;
    stack.pin("AXSUSDT", "6.250").await;
    open(&stack, json!({"intent_id": "tp-1", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "take_profit_pct": 2, "stop_loss_pct": 1})).await;
    stack.pin("AXSUSDT", "6.300").await;
    stack.pin("AXSUSDT", "6.380").await;
    assert_closed_once(&stack, "tp-1", "AXSUSDT").await;
    stack.stop().await;
}

#[tokio::test]
async fn a_stop_loss_closes_the_short_exactly_once() {
    let stack = stack_with_monitor().await;
    stack.pin("ETHUSDT", "3400.00").await;
    open(&stack, json!({"intent_id": "sl-1", "symbol": "ETHUSDT", "action": "SELL", "quantity": 0.05, "stop_loss_pct": 1})).await;
    stack.pin("ETHUSDT", "3450.00").await;
    assert_closed_once(&stack, "sl-1", "ETHUSDT").await;
    stack.stop().await;
}

#[tokio::test]
async fn a_trailing_stop_closes_after_the_peak_exactly_once() {
    let stack = stack_with_monitor().await;
    stack.pin("SOLUSDT", "180.00").await;
    open(&stack, json!({"intent_id": "tr-1", "symbol": "SOLUSDT", "action": "BUY", "quantity": 1, "stop_loss_pct": 5, "trailing_pct": 1})).await;
    for price in ["185.00", "190.00", "189.00"] {
        stack.pin("SOLUSDT", price).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stack.position_amt("SOLUSDT").await,
        Decimal::ONE,
        "still open above the trailing stop"
    );
    stack.pin("SOLUSDT", "187.50").await;
    let close = assert_closed_once(&stack, "tr-1", "SOLUSDT").await;
    assert!(
        close["entry_price"].to_string().parse::<Decimal>().unwrap() > Decimal::from(180),
        "closed in profit"
    );
    stack.stop().await;
}

#[tokio::test]
async fn an_invalid_result_is_dead_lettered_and_the_monitor_keeps_working() {
    let stack = stack_with_monitor().await;
    // The incident's own result: "filled" with a zero price.
    let incident = r#"{"symbol":"AXSUSDT","action":"BUY","entry_price":0.0,"position_size_usd":0.0,"leverage":10.0,"status":"filled","intent_id":"bad-1"}"#;
    stack
        .bus
        .publish(keys::TRADE_EXECUTION_RESULT, incident)
        .await
        .unwrap();
    stack
        .bus
        .publish(keys::TRADE_EXECUTION_RESULT, "not json")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let letters = stack.dead_letters().await;
        if letters
            .iter()
            .filter(|l| l["stream"] == keys::TRADE_EXECUTION_RESULT)
            .count()
            == 2
        {
            assert!(
                letters.iter().any(|l| l["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("a fill needs both above zero")),
                "{letters:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not dead-lettered: {letters:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let invalid = stack
        .monitor
        .as_ref()
        .unwrap()
        .1
        .invalid_results
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(invalid, 2);
    stack.pin("XRPUSDT", "2.3000").await;
    open(&stack, json!({"intent_id": "ok-1", "symbol": "XRPUSDT", "action": "BUY", "quantity": 10, "take_profit_pct": 1, "stop_loss_pct": 1})).await;
    stack.pin("XRPUSDT", "2.3250").await;
    assert_closed_once(&stack, "ok-1", "XRPUSDT").await;
    stack.stop().await;
}

#[tokio::test]
async fn a_monitor_killed_and_restarted_with_a_position_open_still_closes_it() {
    let mut stack = stack_with_monitor().await;
    stack.pin("BNBUSDT", "650.000").await;
    open(&stack, json!({"intent_id": "rs-1", "symbol": "BNBUSDT", "action": "BUY", "quantity": 0.2, "take_profit_pct": 2, "stop_loss_pct": 1})).await;
    stack.kill_monitor().await;
    stack.start_monitor().await;
    stack.pin("BNBUSDT", "664.000").await;
    assert_closed_once(&stack, "rs-1", "BNBUSDT").await;
    stack.stop().await;
}

#[tokio::test]
async fn a_position_unknown_to_quantum_gets_the_default_stop_loss_on_start() {
    let mut stack = Stack::start(Options::default()).await;
    stack.pin("DOGEUSDT", "0.400000").await;
    // Opened by hand on the exchange: no intent, no result.
    let order = stack.place_on_exchange("DOGEUSDT", "BUY", "100").await;
    assert_eq!(order["status"], "FILLED", "{order}");
    stack.start_monitor().await;
    // The default plan's stop-loss is 2 % below the exchange's entry price.
    stack.pin("DOGEUSDT", "0.391000").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while stack.position_amt("DOGEUSDT").await != Decimal::ZERO {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the adopted position was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The exchange is flat as soon as the close fills; its result is published a moment later.
    let closes = loop {
        let closes: Vec<Value> = stack
            .results()
            .await
            .into_iter()
            .filter(|r| r["action"] == "CLOSE")
            .collect();
        if !closes.is_empty() {
            break closes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no result for the close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0]["status"], "filled");
    stack.stop().await;
}

/// Waits until the simulator shows `n` open algo orders for `symbol`.
async fn wait_algo_orders(stack: &Stack, symbol: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let orders = stack.open_algo_orders(symbol).await;
        if orders.len() == n {
            return orders;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{symbol}: {} algo orders, expected {n}: {orders:?}",
            orders.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tracked_position_is_protected_on_the_exchange_behind_its_stop_and_target() {
    let stack = stack_with_monitor().await;
    stack.pin("AXSUSDT", "6.250").await;
    open(&stack, json!({"intent_id": "pr-1", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "take_profit_pct": 4, "stop_loss_pct": 2})).await;
    let orders = wait_algo_orders(&stack, "AXSUSDT", 2).await;
    for order in &orders {
        assert_eq!(order["closePosition"], true, "{order}");
        assert_eq!(order["side"], "SELL");
        let trigger: Decimal = order["triggerPrice"].as_str().unwrap().parse().unwrap();
        match order["orderType"].as_str().unwrap() {
            // Entry 6.251-ish: the monitor's stop is 2 % below, the exchange's 0.5 % beyond it.
            "STOP_MARKET" => assert!(
                trigger < "6.13".parse::<Decimal>().unwrap()
                    && trigger > "6.05".parse::<Decimal>().unwrap(),
                "{order}"
            ),
            "TAKE_PROFIT_MARKET" => assert!(
                trigger > "6.50".parse::<Decimal>().unwrap()
                    && trigger < "6.56".parse::<Decimal>().unwrap(),
                "{order}"
            ),
            other => panic!("unexpected {other}"),
        }
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_exchange_stop_fires_while_the_monitor_is_down_and_on_restart_nothing_is_left_open() {
    let mut stack = stack_with_monitor().await;
    stack.pin("ETHUSDT", "3400.00").await;
    open(&stack, json!({"intent_id": "dn-1", "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.05, "take_profit_pct": 3, "stop_loss_pct": 1})).await;
    wait_algo_orders(&stack, "ETHUSDT", 2).await;
    stack.kill_monitor().await;
    // The monitor is down; the exchange's own stop closes the position.
    stack.pin("ETHUSDT", "3300.00").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stack.position_amt("ETHUSDT").await != Decimal::ZERO {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exchange-side stop did not close the position"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.start_monitor().await;
    // On restart the exit is recorded, the sibling take-profit is cancelled, and no close is sent.
    wait_algo_orders(&stack, "ETHUSDT", 0).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        stack.results().await.iter().all(|r| r["action"] != "CLOSE"),
        "no close intent for a position already flat"
    );
    assert_eq!(stack.position_amt("ETHUSDT").await, Decimal::ZERO);
    stack.stop().await;
}

#[tokio::test]
async fn a_position_closed_on_the_exchange_while_the_monitor_runs_is_noticed_and_its_orders_cancelled(
) {
    let stack = stack_with_monitor().await;
    stack.pin("BNBUSDT", "650.000").await;
    open(&stack, json!({"intent_id": "hx-1", "symbol": "BNBUSDT", "action": "BUY", "quantity": 0.2, "take_profit_pct": 3, "stop_loss_pct": 2})).await;
    wait_algo_orders(&stack, "BNBUSDT", 2).await;
    // Closed by hand on the exchange, not through quantum.
    let closed = stack.place_on_exchange("BNBUSDT", "SELL", "0.20").await;
    assert_eq!(closed["status"], "FILLED", "{closed}");
    wait_algo_orders(&stack, "BNBUSDT", 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stack.results().await.iter().all(|r| r["action"] != "CLOSE"));
    stack.stop().await;
}

#[tokio::test]
async fn both_services_work_over_the_in_process_bus() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap();
    // Redis is never contacted: the URL points nowhere on purpose.
    let settings = service::Settings::custom(
        &sim.base_url(),
        &sim.ws_url(),
        "redis://127.0.0.1:1",
        simulator::DEFAULT_API_KEY,
        simulator::DEFAULT_API_SECRET,
    )
    .unwrap();
    let bus = bus::Bus::memory(10_000);
    let execution = service::start_with_bus(settings.clone(), bus.clone())
        .await
        .unwrap();
    let (monitor, counters) = service::exit_monitor::start_with_bus(settings, bus.clone())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let pin = |price: &'static str| {
        let (http, url) = (http.clone(), format!("{}/sim/v1/price", sim.base_url()));
        async move {
            http.post(url)
                .json(&json!({"symbol": "XRPUSDT", "price": price}))
                .send()
                .await
                .unwrap();
        }
    };
    pin("2.3000").await;
    let intent = json!({"intent_id": "mem-1", "symbol": "XRPUSDT", "action": "BUY", "quantity": 10, "take_profit_pct": 1, "stop_loss_pct": 1});
    bus.publish(keys::TRADE_INTENT, &intent.to_string())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counters
        .lots_opened
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "never tracked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pin("2.3250").await;
    while counters
        .lots_closed
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline, "never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = bus.latest(keys::TRADE_EXECUTION_RESULT, 10).await.unwrap();
    assert!(results.iter().any(|e| e
        .payload
        .as_ref()
        .is_ok_and(|p| p.contains("close-mem-1-1") && p.contains("\"filled\""))));
    monitor.stop().await.unwrap();
    execution.stop().await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn with_many_symbols_held_the_all_market_stream_drives_the_exits() {
    let mut stack = Stack::start(Options::default()).await;
    // Threshold 1: two held symbols switch the monitor to !markPrice@arr@1s.
    stack
        .start_monitor_with(|s| s.exit.all_market_stream_above = 1)
        .await;
    stack.pin("AXSUSDT", "6.250").await;
    stack.pin("XRPUSDT", "2.3000").await;
    open(&stack, json!({"intent_id": "arr-1", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "take_profit_pct": 2, "stop_loss_pct": 1})).await;
    open(&stack, json!({"intent_id": "arr-2", "symbol": "XRPUSDT", "action": "BUY", "quantity": 10, "take_profit_pct": 1, "stop_loss_pct": 1})).await;
    // Pinned prices reach the all-market stream on the next tick (each second).
    stack.pin("XRPUSDT", "2.3250").await;
    let close = stack.result("close-arr-2-1").await;
    assert_eq!(close["status"], "filled", "{close}");
    assert_eq!(
        stack.position_amt("AXSUSDT").await,
        Decimal::from(20),
        "the other position stays open"
    );
    stack.stop().await;
}
