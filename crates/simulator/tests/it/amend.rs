//! Order modification, its history, batch orders and the test order, over HTTP: the documented
//! reply shapes (fixtures in `testdata/binance/`), the `AMENDMENT` user-stream event, per-element
//! errors in batches, and what each request costs on the account's order counts.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::shape::{assert_matches_fixture, Allow};
use crate::support::{next_json_where, start, wait_until, ws_connect, Client};

const WAIT: Duration = Duration::from_secs(5);
/// BTCUSDT is pinned here so that the prices below pass the PERCENT_PRICE filter.
const BTC_PRICE: &str = "65000";
const BID: &str = "64000.00";
const LOWER_BID: &str = "63900.00";
const QTY: &str = "0.010";

/// The documented order examples are trailing stops, with fields a LIMIT order has not.
const TRAILING_ONLY: [&str; 2] = ["$.activatePrice", "$.priceRate"];
const TRAILING_ONLY_IN_LIST: [&str; 2] = ["$[*].activatePrice", "$[*].priceRate"];

async fn trading() -> (simulator::SimHandle, Client) {
    let (sim, client) = start().await;
    client.pin_price("BTCUSDT", BTC_PRICE).await;
    (sim, client)
}

async fn ok(client: &Client, method: Method, path: &str, params: &[(&str, &str)]) -> Value {
    let (status, _, body) = client.signed(method.clone(), path, params).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}: {body}");
    body
}

async fn refused(
    client: &Client,
    method: Method,
    path: &str,
    params: &[(&str, &str)],
) -> (StatusCode, i64) {
    let (status, _, body) = client.signed(method.clone(), path, params).await;
    assert_ne!(
        status,
        StatusCode::OK,
        "{method} {path} was accepted: {body}"
    );
    let code = body["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("error without a code: {body}"));
    (status, code)
}

fn limit_bid(price: &str) -> Vec<(&'static str, String)> {
    vec![
        ("symbol", "BTCUSDT".into()),
        ("side", "BUY".into()),
        ("type", "LIMIT".into()),
        ("timeInForce", "GTC".into()),
        ("quantity", QTY.into()),
        ("price", price.into()),
    ]
}

async fn place_bid(client: &Client) -> i64 {
    let params = limit_bid(BID);
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let order = ok(client, Method::POST, "/fapi/v1/order", &pairs).await;
    order["orderId"].as_i64().expect("integer orderId")
}

#[tokio::test]
async fn a_modified_order_replies_in_the_documented_shape_and_keeps_its_id() {
    let (sim, client) = trading().await;
    let id = place_bid(&client).await.to_string();
    let modify = [
        ("symbol", "BTCUSDT"),
        ("orderId", id.as_str()),
        ("side", "BUY"),
        ("quantity", "0.020"),
        ("price", LOWER_BID),
    ];
    let reply = ok(&client, Method::PUT, "/fapi/v1/order", &modify).await;
    // The documented reply carries COIN-M's `pair` and `cumBase` instead of `cumQuote`; the
    // simulator answers as the USDⓈ-M WebSocket API's order.modify does (ENDPOINTS.md).
    let allow = Allow::none()
        .missing(&["$.pair", "$.cumBase"])
        .extra(&["$.cumQuote"]);
    assert_matches_fixture(&reply, "rest__modify_order.json", &allow);
    assert_eq!(reply["orderId"].to_string(), id);
    assert_eq!(
        (reply["price"].as_str(), reply["origQty"].as_str()),
        (Some(LOWER_BID), Some("0.020"))
    );

    let query = ok(
        &client,
        Method::GET,
        "/fapi/v1/order",
        &[("symbol", "BTCUSDT"), ("orderId", &id)],
    )
    .await;
    assert_eq!(
        (query["price"].as_str(), query["status"].as_str()),
        (Some(LOWER_BID), Some("NEW"))
    );

    let history = ok(
        &client,
        Method::GET,
        "/fapi/v1/orderAmendment",
        &[("symbol", "BTCUSDT"), ("orderId", &id)],
    )
    .await;
    assert_matches_fixture(&history, "rest__order_amendment.json", &Allow::none());
    assert_eq!(history[0]["amendment"]["price"]["before"], BID);
    assert_eq!(history[0]["amendment"]["price"]["after"], LOWER_BID);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_user_stream_announces_a_modification_as_amendment() {
    let (sim, client) = trading().await;
    let (_, _, key) = client
        .key_only(Method::POST, "/fapi/v1/listenKey", &[])
        .await;
    let key = key["listenKey"].as_str().expect("listenKey").to_owned();
    let mut ws = ws_connect(&format!("{}/ws/{key}", sim.ws_url())).await;
    let id = place_bid(&client).await;
    let modify = [
        ("symbol", "BTCUSDT"),
        ("orderId", &id.to_string()),
        ("side", "BUY"),
        ("quantity", QTY),
        ("price", LOWER_BID),
    ];
    ok(&client, Method::PUT, "/fapi/v1/order", &modify).await;
    let event = next_json_where(
        &mut ws,
        WAIT,
        "an ORDER_TRADE_UPDATE with x=AMENDMENT",
        |v| v["e"] == "ORDER_TRADE_UPDATE" && v["o"]["x"] == "AMENDMENT",
    )
    .await;
    assert_eq!(event["o"]["i"], id);
    assert_eq!(event["o"]["X"], "NEW");
    assert_eq!(event["o"]["p"], LOWER_BID);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_bid_moved_above_the_ask_fills_like_a_taker_order() {
    let (sim, client) = trading().await;
    let id = place_bid(&client).await.to_string();
    // 65,500 is above the ask around the pinned 65,000 and inside PERCENT_PRICE.
    let modify = [
        ("symbol", "BTCUSDT"),
        ("orderId", id.as_str()),
        ("side", "BUY"),
        ("quantity", QTY),
        ("price", "65500.0"),
    ];
    ok(&client, Method::PUT, "/fapi/v1/order", &modify).await;
    let filled = wait_until(WAIT, "the modified bid to fill", || {
        let client = &client;
        let id = id.clone();
        async move {
            let order = ok(
                client,
                Method::GET,
                "/fapi/v1/order",
                &[("symbol", "BTCUSDT"), ("orderId", &id)],
            )
            .await;
            (order["status"] == "FILLED").then_some(order)
        }
    })
    .await;
    assert_eq!(filled["executedQty"], QTY);
    sim.shutdown().await;
}

#[tokio::test]
async fn modifications_binance_refuses_are_refused_with_its_codes() {
    let (sim, client) = trading().await;
    let id = place_bid(&client).await.to_string();
    let cases: [(&[(&str, &str)], i64); 5] = [
        // Nothing changes.
        (&[("side", "BUY"), ("quantity", QTY), ("price", BID)], -5027),
        // Off the tick grid.
        (
            &[("side", "BUY"), ("quantity", QTY), ("price", "63900.05")],
            -4014,
        ),
        // Price missing: both quantity and price are mandatory on USDⓈ-M.
        (&[("side", "BUY"), ("quantity", QTY)], -1102),
        // Under the minimum notional (BTCUSDT: 100 USDT).
        (
            &[("side", "BUY"), ("quantity", "0.001"), ("price", BID)],
            -5029,
        ),
        // Another side than the order's.
        (
            &[("side", "SELL"), ("quantity", QTY), ("price", LOWER_BID)],
            -1102,
        ),
    ];
    for (figures, code) in cases {
        let mut params = vec![("symbol", "BTCUSDT"), ("orderId", id.as_str())];
        params.extend_from_slice(figures);
        let (status, got) = refused(&client, Method::PUT, "/fapi/v1/order", &params).await;
        assert_eq!(
            (status, got),
            (StatusCode::BAD_REQUEST, code),
            "{figures:?}"
        );
    }
    let market = ok(
        &client,
        Method::POST,
        "/fapi/v1/order",
        &[
            ("symbol", "BTCUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", QTY),
        ],
    )
    .await;
    let market_id = market["orderId"].to_string();
    // A MARKET order is not modifiable (whether still open or already filled).
    let (_, code) = refused(
        &client,
        Method::PUT,
        "/fapi/v1/order",
        &[
            ("symbol", "BTCUSDT"),
            ("orderId", &market_id),
            ("side", "BUY"),
            ("quantity", QTY),
            ("price", BID),
        ],
    )
    .await;
    assert!(code == -5025 || code == -2013, "{code}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_batch_places_each_order_or_says_why_not_in_list_order() {
    let (sim, client) = trading().await;
    let batch = json!([
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": QTY, "price": BID},
        // Reduce-only with no position to reduce.
        {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": QTY, "price": "66000.0", "reduceOnly": "true"},
        // Numbers instead of strings, as some clients send them.
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": 0.01, "price": 63000},
    ])
    .to_string();
    let (status, headers, reply) = client
        .signed(
            Method::POST,
            "/fapi/v1/batchOrders",
            &[("batchOrders", &batch)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_matches_fixture(
        &Value::Array(reply.as_array().unwrap()[..2].to_vec()),
        "rest__batch_orders_new.json",
        &Allow::none(),
    );
    assert_eq!(reply[0]["status"], "NEW");
    assert_eq!(reply[1]["code"], -2022);
    assert_eq!(reply[2]["price"], "63000.00");
    // A batch costs 5 on the 10-second order count and 1 on the minute count.
    assert_eq!(headers["x-mbx-order-count-10s"], "5");
    assert_eq!(headers["x-mbx-order-count-1m"], "1");

    let open = ok(
        &client,
        Method::GET,
        "/fapi/v1/openOrders",
        &[("symbol", "BTCUSDT")],
    )
    .await;
    assert_eq!(open.as_array().unwrap().len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_batch_modify_and_a_batch_cancel_answer_per_order() {
    let (sim, client) = trading().await;
    let first = place_bid(&client).await;
    let second = place_bid(&client).await;
    let batch = json!([
        {"symbol": "BTCUSDT", "orderId": first, "side": "BUY", "quantity": QTY, "price": LOWER_BID},
        {"symbol": "BTCUSDT", "orderId": 42, "side": "BUY", "quantity": QTY, "price": LOWER_BID},
    ])
    .to_string();
    let modified = ok(
        &client,
        Method::PUT,
        "/fapi/v1/batchOrders",
        &[("batchOrders", &batch)],
    )
    .await;
    let allow = Allow::none()
        .missing(&["$[*].pair", "$[*].cumBase"])
        .extra(&["$[*].cumQuote"]);
    assert_eq!(modified[1]["code"], -2013);
    assert_matches_fixture(
        &json!([modified[0].clone(), {"code": -2022, "msg": "shape of an error element"}]),
        "rest__batch_orders_modify.json",
        &allow,
    );
    assert_eq!(modified[0]["price"], LOWER_BID);

    let ids = json!([second, 42]).to_string();
    let cancelled = ok(
        &client,
        Method::DELETE,
        "/fapi/v1/batchOrders",
        &[("symbol", "BTCUSDT"), ("orderIdList", &ids)],
    )
    .await;
    assert_matches_fixture(
        &cancelled,
        "rest__batch_orders_cancel.json",
        // The documented batch-cancel example has no `avgPrice`, which the single cancel's has;
        // each element here is the single cancel's reply.
        &Allow::none()
            .missing(&TRAILING_ONLY_IN_LIST)
            .extra(&["$[*].avgPrice"]),
    );
    assert_eq!(cancelled[0]["status"], "CANCELED");
    assert_eq!(cancelled[1]["code"], -2011);
    // The lower-case spelling ccxt and python-binance send is taken too.
    let third = place_bid(&client).await;
    let ids = json!([third]).to_string();
    let cancelled = ok(
        &client,
        Method::DELETE,
        "/fapi/v1/batchOrders",
        &[("symbol", "BTCUSDT"), ("orderidlist", &ids)],
    )
    .await;
    assert_eq!(cancelled[0]["status"], "CANCELED");
    sim.shutdown().await;
}

#[tokio::test]
async fn batches_outside_binance_limits_are_refused_whole() {
    let (sim, client) = trading().await;
    let one = json!({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": QTY, "price": BID});
    let six = Value::Array(vec![one.clone(); 6]).to_string();
    let (_, code) = refused(
        &client,
        Method::POST,
        "/fapi/v1/batchOrders",
        &[("batchOrders", &six)],
    )
    .await;
    assert_eq!(code, -4082);
    let (_, code) = refused(
        &client,
        Method::POST,
        "/fapi/v1/batchOrders",
        &[("batchOrders", "[")],
    )
    .await;
    assert_eq!(code, -1102);
    let nested = json!([{"symbol": {"x": 1}}]).to_string();
    let (_, code) = refused(
        &client,
        Method::POST,
        "/fapi/v1/batchOrders",
        &[("batchOrders", &nested)],
    )
    .await;
    assert_eq!(code, -1102);
    let eleven = json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).to_string();
    let (_, code) = refused(
        &client,
        Method::DELETE,
        "/fapi/v1/batchOrders",
        &[("symbol", "BTCUSDT"), ("orderIdList", &eleven)],
    )
    .await;
    assert_eq!(code, -1130);
    let open = ok(
        &client,
        Method::GET,
        "/fapi/v1/openOrders",
        &[("symbol", "BTCUSDT")],
    )
    .await;
    assert_eq!(open, json!([]), "nothing was placed");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_test_order_is_checked_like_a_new_order_and_leaves_nothing_behind() {
    let (sim, client) = trading().await;
    let params = limit_bid(BID);
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, headers, reply) = client
        .signed(Method::POST, "/fapi/v1/order/test", &pairs)
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_matches_fixture(
        &reply,
        "rest__new_order_test.json",
        &Allow::none().missing(&TRAILING_ONLY),
    );
    assert_eq!(reply["orderId"], 0);
    assert!(
        headers.get("x-mbx-order-count-10s").is_none(),
        "not counted as an order"
    );
    let open = ok(
        &client,
        Method::GET,
        "/fapi/v1/openOrders",
        &[("symbol", "BTCUSDT")],
    )
    .await;
    assert_eq!(open, json!([]));
    // The same checks as a real order: a price off the tick grid is refused the same way.
    let mut bad = pairs.clone();
    bad.retain(|(k, _)| *k != "price");
    bad.push(("price", "64000.05"));
    let (_, code) = refused(&client, Method::POST, "/fapi/v1/order/test", &bad).await;
    assert_eq!(code, -4014);
    sim.shutdown().await;
}
