//! Order entry over the WebSocket API (`execution.order_transport = "websocket"`): orders go over
//! the connection, not REST; a reply lost with the connection is ambiguous and resolved by a
//! lookup (one order, one result); while the connection is down, orders go over REST.

use std::time::Duration;

use serde_json::json;
use service::config::OrderTransport;

use crate::stack::{Options, Stack};

const REST_ORDER: &str = "POST /fapi/v1/order";

#[tokio::test]
async fn orders_go_over_the_websocket_api_and_a_dropped_connection_costs_no_second_order() {
    let mut stack = Stack::start(Options::default()).await;
    stack
        .restart_service_with(|s| s.execution.order_transport = OrderTransport::WebSocket)
        .await;
    stack.pin("ETHUSDT", "3400.00").await;
    // The connection is up once the simulator has seen its handshake (orders before it would
    // go over REST, which is also correct, but not what this test shows).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !stack.sim_requests().await.contains_key("GET /ws-fapi/v1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no WebSocket API connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stack
        .publish(
            &json!({"intent_id": "ws-1", "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
        )
        .await;
    let first = stack.result("ws-1").await;
    assert_eq!(first["status"], "filled", "{first}");
    let rest_orders_before = stack
        .sim_requests()
        .await
        .get(REST_ORDER)
        .copied()
        .unwrap_or(0);
    assert_eq!(
        rest_orders_before, 0,
        "the order went over the WebSocket API"
    );

    // The simulator executes the next order and closes the connection without a reply.
    stack.faults(json!({"drop_order_responses": 1})).await;
    stack
        .publish(
            &json!({"intent_id": "ws-2", "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
        )
        .await;
    let second = stack.result("ws-2").await;
    assert_eq!(second["status"], "filled", "{second}");
    let orders = stack.exchange_orders("ETHUSDT").await;
    let for_second = orders
        .iter()
        .filter(|o| o["clientOrderId"] == "q-ws-2")
        .count();
    assert_eq!(for_second, 1, "one order for the intent: {orders:?}");
    assert_eq!(stack.results_for("ws-2").await.len(), 1, "one result");

    // More intents, whatever the connection's state: one order and one result each.
    for n in 3..6 {
        let id = format!("ws-{n}");
        stack
            .publish(
                &json!({"intent_id": id, "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
            )
            .await;
        assert_eq!(stack.result(&id).await["status"], "filled");
    }
    let orders = stack.exchange_orders("ETHUSDT").await;
    assert_eq!(orders.len(), 5, "five intents, five orders: {orders:?}");
    stack.stop().await;
}
