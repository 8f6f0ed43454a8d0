//! Market data beyond the basics: 24-hour ticker, klines, leverage brackets, partial depth
//! streams, the spot ping/time that python-binance calls first, and RESULT replies for orders
//! that rest.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::orders::{dec, order};
use crate::shape::{assert_matches_fixture, Allow};
use crate::support::{self, next_json_where, ws_connect};

#[tokio::test]
async fn the_24hr_ticker_reports_last_price_range_and_traded_volume() {
    let (sim, client) = support::start().await;
    client.pin_price("XRPUSDT", "2.5000").await;
    client.pin_price("XRPUSDT", "2.2000").await;
    let (status, reply) = order(
        &client,
        &[
            ("symbol", "XRPUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "10.0"),
            ("newOrderRespType", "RESULT"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (_, _, t) = client
        .public(
            Method::GET,
            "/fapi/v1/ticker/24hr",
            &[("symbol", "XRPUSDT")],
        )
        .await;
    assert_eq!(t["lastPrice"], "2.2000");
    assert_eq!(t["openPrice"], "2.3000", "the start price opened the day");
    assert_eq!(t["highPrice"], "2.5000");
    assert_eq!(t["lowPrice"], "2.2000");
    assert_eq!(t["volume"], "10.0");
    assert_eq!(t["count"], 1);
    assert_eq!(t["priceChange"], "-0.1000");
    let (_, _, all) = client
        .public(Method::GET, "/fapi/v1/ticker/24hr", &[])
        .await;
    assert_eq!(all.as_array().map(Vec::len), Some(7));
    sim.shutdown().await;
}

#[tokio::test]
async fn klines_are_ohlc_candles_with_string_decimals() {
    let (sim, client) = support::start().await;
    client.pin_price("BNBUSDT", "660.000").await;
    let (status, _, rows) = client
        .public(
            Method::GET,
            "/fapi/v1/klines",
            &[("symbol", "BNBUSDT"), ("interval", "1m"), ("limit", "5")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    let last = rows
        .as_array()
        .and_then(|r| r.last())
        .expect("at least one candle");
    assert_eq!(last.as_array().map(Vec::len), Some(12));
    let open_time = last[0].as_i64().unwrap();
    assert_eq!(open_time % 60_000, 0);
    assert_eq!(last[6].as_i64().unwrap(), open_time + 59_999);
    assert_eq!(last[4], "660.000", "close is the last price");
    assert!(dec(&last[2]) >= Decimal::from(660) && dec(&last[3]) <= dec(&last[1]));
    let (status, _, body) = client
        .public(
            Method::GET,
            "/fapi/v1/klines",
            &[("symbol", "BNBUSDT"), ("interval", "7m")],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-1120))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn leverage_brackets_have_the_documented_shape() {
    let (sim, client) = support::start().await;
    let (status, _, list) = client
        .signed(Method::GET, "/fapi/v1/leverageBracket", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_matches_fixture(&list, "rest__leverage_bracket_list.json", &Allow::none());
    let (_, _, one) = client
        .signed(
            Method::GET,
            "/fapi/v1/leverageBracket",
            &[("symbol", "ETHUSDT")],
        )
        .await;
    assert_matches_fixture(&one, "rest__leverage_bracket_symbol.json", &Allow::none());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_partial_depth_stream_sends_the_documented_shape() {
    let (sim, client) = support::start().await;
    let mut ws = ws_connect(&format!("{}/public/ws/btcusdt@depth5@100ms", sim.ws_url())).await;
    client.pin_price("BTCUSDT", "94000.00").await;
    // A new subscriber first gets the book as it is, which may be from before the pin; wait for
    // the pinned one.
    let update: Value = next_json_where(&mut ws, Duration::from_secs(5), "the pinned book", |v| {
        v["e"] == "depthUpdate" && v["b"][0][0] == "93999.90"
    })
    .await;
    assert_matches_fixture(&update, "ws__depth_update_partial.json", &Allow::none());
    assert_eq!(update["b"].as_array().map(Vec::len), Some(5));
    assert_eq!(update["b"][0][0], "93999.90");
    sim.shutdown().await;
}

#[tokio::test]
async fn spot_ping_and_time_answer_for_clients_that_call_them_first() {
    let (sim, client) = support::start().await;
    let (status, _, ping) = client.public(Method::GET, "/api/v3/ping", &[]).await;
    assert_eq!((status, ping), (StatusCode::OK, serde_json::json!({})));
    let (_, _, time) = client.public(Method::GET, "/api/v3/time", &[]).await;
    assert!(time["serverTime"].as_i64().is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_result_reply_for_a_resting_limit_order_comes_at_once_with_new() {
    let (sim, client) = support::start().await;
    client.pin_price("ETHUSDT", "3400.00").await;
    let started = std::time::Instant::now();
    let (status, reply) = order(
        &client,
        &[
            ("symbol", "ETHUSDT"),
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", "0.010"),
            ("price", "3300.00"),
            ("newOrderRespType", "RESULT"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["status"], "NEW");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    sim.shutdown().await;
}
