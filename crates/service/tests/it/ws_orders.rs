//! Order entry over the WebSocket API (`execution.order_transport = "websocket"`): orders go over
//! the connection, not REST; a reply lost with the connection is ambiguous and resolved by a
//! lookup (one order, one result); while the connection is down, orders go over REST. The
//! order's lookups and its cancel at the fill deadline take the same connection.

use std::time::Duration;

use serde_json::json;
use service::config::OrderTransport;

use crate::stack::{Options, Stack};

const REST_ORDER: &str = "POST /fapi/v1/order";
const REST_LOOKUP: &str = "GET /fapi/v1/order";
const REST_CANCEL: &str = "DELETE /fapi/v1/order";

/// Restarts the stack's execution service with websocket transport and waits until the
/// simulator has seen its WebSocket API handshake (requests before it would go over REST, which
/// is also correct, but not what these tests show).
async fn over_websocket(stack: &mut Stack) {
    stack
        .restart_service_with(|s| s.execution.order_transport = OrderTransport::WebSocket)
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !stack.sim_requests().await.contains_key("GET /ws-fapi/v1") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no WebSocket API connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(requests: &std::collections::BTreeMap<String, u64>, what: &str) -> u64 {
    requests.get(what).copied().unwrap_or(0)
}

#[tokio::test]
async fn orders_go_over_the_websocket_api_and_a_dropped_connection_costs_no_second_order() {
    let mut stack = Stack::start(Options::default()).await;
    over_websocket(&mut stack).await;
    stack.pin("ETHUSDT", "3400.00").await;

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

/// An order that does not fill by the deadline: the lookups while it waits and the cancel at the
/// deadline go over the WebSocket API, none over REST; the order ends cancelled on the exchange,
/// and the result says so.
#[tokio::test]
async fn with_websocket_transport_an_orders_lookups_and_cancel_go_over_the_websocket_api() {
    let mut stack = Stack::start(Options {
        fill_timeout: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    over_websocket(&mut stack).await;
    stack.pin("ETHUSDT", "3400.00").await;
    stack.faults(json!({"never_fill": true})).await;
    let before = stack.sim_requests().await;
    stack
        .publish(
            &json!({"intent_id": "ws-cancel-1", "symbol": "ETHUSDT", "action": "BUY", "quantity": 0.02}),
        )
        .await;
    let result = stack.result("ws-cancel-1").await;
    assert!(
        ["timeout", "canceled"].contains(&result["status"].as_str().unwrap_or("")),
        "{result}"
    );
    assert_eq!(result["executed_qty"], json!(0), "{result}");
    let orders = stack.exchange_orders("ETHUSDT").await;
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["status"], "CANCELED", "{orders:?}");

    let after = stack.sim_requests().await;
    assert!(
        count(&after, "WS order.cancel") > count(&before, "WS order.cancel"),
        "{after:?}"
    );
    assert!(
        count(&after, "WS order.status") > count(&before, "WS order.status"),
        "{after:?}"
    );
    for rest in [REST_ORDER, REST_LOOKUP, REST_CANCEL] {
        assert_eq!(
            count(&after, rest),
            count(&before, rest),
            "{rest} was not used: {after:?}"
        );
    }
    stack.stop().await;
}
