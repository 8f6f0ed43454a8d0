//! `quantum flatten` end to end (its library part, as the CLI runs it): two positions with
//! exchange-side stops and a resting entry become a flat account with no order of any kind left,
//! each close confirmed through the execution service, and trading left at `reducing`.

use std::time::Duration;

use model::TradingState;
use rust_decimal::Decimal;
use serde_json::json;

use crate::stack::{Options, Stack};

#[tokio::test]
async fn flatten_leaves_the_account_flat_and_clean_with_each_close_confirmed() {
    let mut stack = Stack::start(Options::default()).await;
    stack.start_monitor().await;
    stack.pin("AXSUSDT", "6.250").await;
    stack.pin("ETHUSDT", "3400.00").await;
    stack
        .publish(&json!({"intent_id": "long", "symbol": "AXSUSDT", "action": "BUY", "quantity": 20, "stop_loss_pct": 2}))
        .await;
    stack
        .publish(&json!({"intent_id": "short", "symbol": "ETHUSDT", "action": "SELL", "quantity": 0.05, "stop_loss_pct": 2}))
        .await;
    for id in ["long", "short"] {
        assert_eq!(stack.result(id).await["status"], "filled");
    }
    let resting = stack
        .place_limit_on_exchange("ETHUSDT", "BUY", "0.05", "3300.00")
        .await;
    assert_eq!(resting["status"], "NEW", "{resting}");
    // The monitor's stops are on the exchange before flatten starts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stack.open_algo_orders("AXSUSDT").await.is_empty()
        || stack.open_algo_orders("ETHUSDT").await.is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no exchange-side stops"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let rest = binance::RestClient::new(stack.settings().binance_config().unwrap()).unwrap();
    rest.sync_time().await.unwrap();
    let plans = service::flatten::plan(&rest, None).await.unwrap();
    let symbols: Vec<&str> = plans.iter().map(|p| p.symbol.as_str()).collect();
    assert_eq!(symbols, ["AXSUSDT", "ETHUSDT"]);
    let closed = service::flatten::run(
        &rest,
        &stack.bus,
        &plans,
        "test@ci",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(closed.len(), 2);
    for c in &closed {
        assert_eq!(c.status, "filled", "{c:?}");
        assert!(
            c.price
                .as_deref()
                .is_some_and(|p| p.parse::<Decimal>().unwrap() > Decimal::ZERO),
            "{c:?}"
        );
    }

    for symbol in ["AXSUSDT", "ETHUSDT"] {
        assert_eq!(
            stack.position_amt(symbol).await,
            Decimal::ZERO,
            "{symbol} flat"
        );
        assert!(
            stack.open_orders(symbol).await.is_empty(),
            "{symbol}: no resting order"
        );
        assert!(
            stack.open_algo_orders(symbol).await.is_empty(),
            "{symbol}: no protective order"
        );
    }
    assert!(service::flatten::plan(&rest, None)
        .await
        .unwrap()
        .is_empty());
    let state = service::control::read(&stack.bus).await.unwrap().unwrap();
    assert_eq!(
        state.state,
        TradingState::Reducing,
        "entries stay refused until resume"
    );
    stack.stop().await;
}

/// From `halted` too: flatten lets its closes through (it sets `reducing` first and waits for the
/// services to see it), so an operator who halted can still get flat.
#[tokio::test]
async fn flatten_works_when_trading_was_halted() {
    let stack = Stack::start(Options::default()).await;
    stack.pin("ETHUSDT", "3400.00").await;
    stack
        .publish(
            &json!({"intent_id": "held", "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
        )
        .await;
    assert_eq!(stack.result("held").await["status"], "filled");
    service::control::set(&stack.bus, TradingState::Halted, "test@ci", "incident")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rest = binance::RestClient::new(stack.settings().binance_config().unwrap()).unwrap();
    rest.sync_time().await.unwrap();
    let plans = service::flatten::plan(&rest, Some("ETHUSDT"))
        .await
        .unwrap();
    let closed = service::flatten::run(
        &rest,
        &stack.bus,
        &plans,
        "test@ci",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].status, "filled", "{closed:?}");
    assert_eq!(stack.position_amt("ETHUSDT").await, Decimal::ZERO);
    stack.stop().await;
}
