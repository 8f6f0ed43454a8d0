//! Each fault knob of `/sim/v1/faults`, shown doing what the README says it does.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::orders::{faults, order, query, user_stream};
use crate::support::{self, next_event, now_ms, wait_until};

const BUY_DOGE: [(&str, &str); 4] = [
    ("symbol", "DOGEUSDT"),
    ("side", "BUY"),
    ("type", "MARKET"),
    ("quantity", "100"),
];

#[tokio::test]
async fn get_faults_shows_the_knobs_and_reset_restores_them() {
    let (sim, client) = support::start().await;
    faults(
        &client,
        json!({"never_fill": true, "reject_orders": {"code": -2019, "count": 2}}),
    )
    .await;
    let (status, shown) = client
        .control(Method::GET, "/sim/v1/faults", json!(null))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["never_fill"], true);
    assert_eq!(shown["reject_orders"], json!({"code": -2019, "count": 2}));
    faults(&client, json!({"reset": true})).await;
    let (_, shown) = client
        .control(Method::GET, "/sim/v1/faults", json!(null))
        .await;
    assert_eq!(shown["never_fill"], false);
    assert_eq!(shown["reject_orders"], json!(null));
    let (status, body) = client
        .control(Method::POST, "/sim/v1/faults", json!({"never_fil": true}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown knobs are refused: {body}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn never_fill_keeps_orders_new_until_it_is_turned_off() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"never_fill": true})).await;
    let (_, ack) = order(&client, &BUY_DOGE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        query(&client, "DOGEUSDT", &ack["orderId"]).await["status"],
        "NEW"
    );
    faults(&client, json!({"never_fill": false})).await;
    wait_until(
        Duration::from_secs(5),
        "the parked order to fill",
        || async {
            (query(&client, "DOGEUSDT", &ack["orderId"]).await["status"] == "FILLED").then_some(())
        },
    )
    .await;
    sim.shutdown().await;
}

/// A new-order request sent on its own connection, so a test can see the connection close
/// without a reply (the test client would panic on it).
async fn raw_order(
    sim: &simulator::SimHandle,
    client_order_id: &str,
) -> reqwest::Result<reqwest::Response> {
    let payload = format!(
        "symbol=DOGEUSDT&side=BUY&type=MARKET&quantity=100&newClientOrderId={client_order_id}&timestamp={}",
        now_ms()
    );
    let sig = {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(simulator::DEFAULT_API_SECRET.as_bytes()).unwrap();
        mac.update(payload.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    reqwest::Client::new()
        .post(format!("{}/fapi/v1/order", sim.base_url()))
        .header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("{payload}&signature={sig}"))
        .send()
        .await
}

/// The order with this client id, looked up: `(status, body)`.
async fn lookup(client: &support::Client, client_order_id: &str) -> (StatusCode, Value) {
    let (status, _, body) = client
        .signed(
            Method::GET,
            "/fapi/v1/order",
            &[
                ("symbol", "DOGEUSDT"),
                ("origClientOrderId", client_order_id),
            ],
        )
        .await;
    (status, body)
}

/// Every DOGEUSDT order the exchange has.
async fn all_orders(client: &support::Client) -> Vec<Value> {
    let (status, _, body) = client
        .signed(Method::GET, "/fapi/v1/allOrders", &[("symbol", "DOGEUSDT")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn drop_order_responses_executes_the_order_but_closes_the_connection() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"drop_order_responses": 1})).await;
    let result = raw_order(&sim, "dropped-1").await;
    assert!(result.is_err(), "no reply is written: {result:?}");
    let (status, found) = lookup(&client, "dropped-1").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the order exists although the client saw no reply: {found}"
    );
    // The knob counts down: the next order gets its reply.
    assert_eq!(order(&client, &BUY_DOGE).await.0, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_order_requests_closes_the_connection_and_places_nothing() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"drop_order_requests": 1})).await;
    let result = raw_order(&sim, "lost-1").await;
    assert!(result.is_err(), "no reply is written: {result:?}");
    let (status, found) = lookup(&client, "lost-1").await;
    assert_eq!(
        (status, &found["code"]),
        (StatusCode::BAD_REQUEST, &json!(-2013)),
        "the request never reached the matching engine: {found}"
    );
    assert!(all_orders(&client).await.is_empty());
    // The knob counts down: the same order sent again is placed, once.
    let result = raw_order(&sim, "lost-1").await.expect("a reply this time");
    assert_eq!(result.status(), StatusCode::OK);
    assert_eq!(lookup(&client, "lost-1").await.0, StatusCode::OK);
    assert_eq!(all_orders(&client).await.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_status_503_not_executed_answers_unknown_error_and_places_nothing() {
    let (sim, client) = support::start().await;
    let mut ws = user_stream(&sim, &client).await;
    faults(&client, json!({"unknown_status_503_not_executed": 1})).await;
    let mut params = BUY_DOGE.to_vec();
    params.push(("newClientOrderId", "not-1"));
    let (status, headers, body) = client.signed(Method::POST, "/fapi/v1/order", &params).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({"code": -1000, "msg": "Unknown error, please check your request or try again later."}),
        "the same reply as unknown_status_503"
    );
    assert!(header_u64(&headers, "x-mbx-used-weight-1m").is_some());
    assert!(
        header_u64(&headers, "x-mbx-order-count-10s").is_some(),
        "the request was counted against the account"
    );
    let (status, found) = lookup(&client, "not-1").await;
    assert_eq!(
        (status, &found["code"]),
        (StatusCode::BAD_REQUEST, &json!(-2013)),
        "{found}"
    );
    assert!(all_orders(&client).await.is_empty());
    // The knob counts down: the retry is placed and is the first order the user stream reports.
    let (status, placed) = order(&client, &params).await;
    assert_eq!(status, StatusCode::OK, "{placed}");
    let update = next_event(&mut ws, "ORDER_TRADE_UPDATE", Duration::from_secs(5)).await;
    assert_eq!(update["o"]["c"], "not-1");
    assert_eq!(update["o"]["i"], placed["orderId"]);
    assert_eq!(all_orders(&client).await.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn query_429_refuses_lookups_of_an_existing_order_and_nothing_else() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"never_fill": true})).await;
    let mut params = BUY_DOGE.to_vec();
    params.push(("newClientOrderId", "q429-1"));
    assert_eq!(order(&client, &params).await.0, StatusCode::OK);
    faults(&client, json!({"query_429": 2})).await;
    let lookup_params = [("symbol", "DOGEUSDT"), ("origClientOrderId", "q429-1")];
    let (status, headers, body) = client
        .signed(Method::GET, "/fapi/v1/order", &lookup_params)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["code"], -1003);
    assert_eq!(header_u64(&headers, "retry-after"), Some(1), "the default");
    assert!(header_u64(&headers, "x-mbx-used-weight-1m").is_some());
    // Other requests work, and show the order exists.
    let (status, _, open) = client
        .signed(
            Method::GET,
            "/fapi/v1/openOrders",
            &[("symbol", "DOGEUSDT")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{open}");
    assert_eq!(open[0]["clientOrderId"], "q429-1");
    let (status, _, _) = client
        .signed(Method::GET, "/fapi/v1/order", &lookup_params)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Two requests ignored the back-off; clear it rather than wait, so the next is not the third.
    faults(&client, json!({"lift_ban": true})).await;
    let (status, found) = lookup(&client, "q429-1").await;
    assert_eq!(
        (status, found["status"].as_str()),
        (StatusCode::OK, Some("NEW")),
        "the knob counted down: {found}"
    );
    let (_, counts) = client
        .control(Method::GET, "/sim/v1/requests", json!(null))
        .await;
    assert_eq!(counts["http_429"], 2, "{counts}");
    assert_eq!(counts["http_418"], 0, "{counts}");
    sim.shutdown().await;
}

#[tokio::test]
async fn retry_after_s_sets_the_wait_every_injected_429_announces() {
    let (sim, client) = support::start().await;
    faults(
        &client,
        json!({"retry_after_s": 7, "rate_limit_429": 1, "cancel_429": 1, "query_429": 1}),
    )
    .await;
    let (status, headers, _) = client.public(Method::GET, "/fapi/v1/ping", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_u64(&headers, "retry-after"), Some(7));
    let lookup_params = [("symbol", "DOGEUSDT"), ("orderId", "1")];
    for method in [Method::GET, Method::DELETE] {
        let (status, headers, _) = client
            .signed(method.clone(), "/fapi/v1/order", &lookup_params)
            .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{method}");
        assert_eq!(header_u64(&headers, "retry-after"), Some(7), "{method}");
    }
    let (_, shown) = client
        .control(Method::GET, "/sim/v1/faults", json!(null))
        .await;
    assert_eq!(shown["retry_after_s"], 7);
    faults(&client, json!({"reset": true})).await;
    let (_, shown) = client
        .control(Method::GET, "/sim/v1/faults", json!(null))
        .await;
    assert_eq!(shown["retry_after_s"], 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_status_503_executes_the_order_and_answers_unknown_error() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"unknown_status_503": 1})).await;
    let mut params = BUY_DOGE.to_vec();
    params.push(("newClientOrderId", "maybe-1"));
    let (status, body) = order(&client, &params).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["msg"],
        "Unknown error, please check your request or try again later."
    );
    let (status, _, found) = client
        .signed(
            Method::GET,
            "/fapi/v1/order",
            &[("symbol", "DOGEUSDT"), ("origClientOrderId", "maybe-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_429_answers_the_next_requests_with_retry_after() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"rate_limit_429": 2})).await;
    for _ in 0..2 {
        let (status, headers, body) = client.public(Method::GET, "/fapi/v1/ping", &[]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(body["code"], -1003);
        assert!(headers.get("retry-after").is_some());
    }
    assert_eq!(
        client.public(Method::GET, "/fapi/v1/ping", &[]).await.0,
        StatusCode::OK
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn cancel_429_refuses_the_next_cancels_and_cancels_nothing() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"never_fill": true, "cancel_429": 1})).await;
    let mut params = BUY_DOGE.to_vec();
    params.push(("newClientOrderId", "c429-1"));
    let (status, _) = order(&client, &params).await;
    assert_eq!(status, StatusCode::OK);
    let cancel = [("symbol", "DOGEUSDT"), ("origClientOrderId", "c429-1")];
    let (status, headers, body) = client
        .signed(Method::DELETE, "/fapi/v1/order", &cancel)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.get("retry-after").is_some());
    // Other requests were not limited, and the order is still open.
    let (status, _, found) = client.signed(Method::GET, "/fapi/v1/order", &cancel).await;
    assert_eq!(
        (status, found["status"].as_str()),
        (StatusCode::OK, Some("NEW"))
    );
    let (status, _, cancelled) = client
        .signed(Method::DELETE, "/fapi/v1/order", &cancel)
        .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("CANCELED"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn reject_orders_refuses_the_next_orders_with_the_code_and_places_nothing() {
    let (sim, client) = support::start().await;
    faults(
        &client,
        json!({"reject_orders": {"code": -2019, "count": 1}}),
    )
    .await;
    let mut params = BUY_DOGE.to_vec();
    params.push(("newClientOrderId", "rejected-1"));
    let (status, body) = order(&client, &params).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"code": -2019, "msg": "Margin is insufficient."})
    );
    let (status, _, _) = client
        .signed(
            Method::GET,
            "/fapi/v1/order",
            &[("symbol", "DOGEUSDT"), ("origClientOrderId", "rejected-1")],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a rejected order does not exist"
    );
    assert_eq!(order(&client, &params).await.0, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn fill_delay_ms_delays_the_fill() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"fill_delay_ms": 800})).await;
    let started = std::time::Instant::now();
    let (_, ack) = order(&client, &BUY_DOGE).await;
    wait_until(Duration::from_secs(5), "the fill", || async {
        (query(&client, "DOGEUSDT", &ack["orderId"]).await["status"] == "FILLED").then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "filled after {:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn disconnect_user_streams_drops_user_sockets() {
    let (sim, client) = support::start().await;
    let mut ws = user_stream(&sim, &client).await;
    faults(&client, json!({"disconnect_user_streams": true})).await;
    let next = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut ws),
    )
    .await;
    match next {
        Ok(None) | Ok(Some(Err(_))) => {}
        other => panic!("expected the socket to end, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn expire_listen_keys_sends_listen_key_expired_and_keepalive_then_fails() {
    let (sim, client) = support::start().await;
    let mut ws = user_stream(&sim, &client).await;
    faults(&client, json!({"expire_listen_keys": true})).await;
    let expired = next_event(&mut ws, "listenKeyExpired", Duration::from_secs(5)).await;
    assert!(expired["listenKey"].as_str().is_some_and(|k| !k.is_empty()));
    let (status, _, body) = client
        .key_only(Method::PUT, "/fapi/v1/listenKey", &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], -1125);
    // Nothing more arrives on the expired key, even when orders fill.
    order(&client, &BUY_DOGE).await;
    let more = tokio::time::timeout(
        Duration::from_millis(700),
        support::next_json(&mut ws, Duration::from_secs(1)),
    )
    .await;
    assert!(more.is_err(), "no events after listenKeyExpired");
    sim.shutdown().await;
}

#[tokio::test]
async fn result_wait_ms_zero_makes_a_result_reply_answer_new_at_once() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"result_wait_ms": 0, "fill_delay_ms": 300})).await;
    let mut params = BUY_DOGE.to_vec();
    params.push(("newOrderRespType", "RESULT"));
    let (status, reply) = order(&client, &params).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["status"], "NEW");
    assert_eq!(reply["executedQty"], "0");
    wait_until(Duration::from_secs(5), "the fill", || async {
        (query(&client, "DOGEUSDT", &reply["orderId"]).await["status"] == "FILLED").then_some(())
    })
    .await;
    sim.shutdown().await;
}
