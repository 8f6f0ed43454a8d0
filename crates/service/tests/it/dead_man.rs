//! The dead-man switch end to end: an order that keeps working arms Binance's
//! `countdownCancelAll`; when the service is killed the heartbeat stops and the exchange cancels
//! the order. (That an order filled at once never arms it, so the switch costs no request per
//! intent, is `dead_man`'s unit test: a timing claim is not asserted on a loaded CI machine.)

use std::time::Duration;

use serde_json::json;

use crate::stack::{Options, Stack};

const COUNTDOWN: &str = "POST /fapi/v1/countdownCancelAll";

#[tokio::test]
async fn a_killed_service_leaves_no_working_order_behind() {
    let mut stack = Stack::start(Options {
        fill_timeout: Duration::from_secs(60),
        ..Options::default()
    })
    .await;
    stack
        .restart_service_with(|s| s.execution.dead_man_countdown = Duration::from_secs(2))
        .await;
    stack.pin("ETHUSDT", "3400.00").await;

    // An order the venue never fills keeps working: the switch arms for its symbol.
    stack.faults(json!({"never_fill": true})).await;
    stack
        .publish(
            &json!({"intent_id": "stuck", "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let working = stack.open_orders("ETHUSDT").await;
        let armed = stack
            .sim_requests()
            .await
            .get(COUNTDOWN)
            .copied()
            .unwrap_or(0);
        if !working.is_empty() && armed > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never armed: {working:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The host dies: nothing renews the countdown, and the exchange cancels the order.
    stack.kill_service().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !stack.open_orders("ETHUSDT").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the countdown never cancelled the order"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let orders = stack.exchange_orders("ETHUSDT").await;
    let stuck = orders
        .iter()
        .find(|o| o["clientOrderId"] == "q-stuck")
        .expect("the stuck order");
    assert_eq!(stuck["status"], "CANCELED", "{stuck}");
    stack.stop().await;
}
