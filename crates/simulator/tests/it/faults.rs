//! Each fault knob of `/sim/v1/faults`, shown doing what the README says it does.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

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

#[tokio::test]
async fn drop_order_responses_executes_the_order_but_closes_the_connection() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"drop_order_responses": 1})).await;
    // A raw request: the test client would panic on the closed connection.
    let ts = now_ms();
    let payload = format!("symbol=DOGEUSDT&side=BUY&type=MARKET&quantity=100&newClientOrderId=dropped-1&timestamp={ts}");
    let sig = {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(simulator::DEFAULT_API_SECRET.as_bytes()).unwrap();
        mac.update(payload.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let result = reqwest::Client::new()
        .post(format!("{}/fapi/v1/order", sim.base_url()))
        .header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("{payload}&signature={sig}"))
        .send()
        .await;
    assert!(result.is_err(), "no reply is written: {result:?}");
    let (status, _, found) = client
        .signed(
            Method::GET,
            "/fapi/v1/order",
            &[("symbol", "DOGEUSDT"), ("origClientOrderId", "dropped-1")],
        )
        .await;
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
