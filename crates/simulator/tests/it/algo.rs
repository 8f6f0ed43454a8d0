//! Algo (conditional) orders: STOP_MARKET and TAKE_PROFIT_MARKET with closePosition, the
//! trailing stop, and what each sends on the user stream when the mark price triggers it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::orders::{order, user_stream};
use crate::support::{self, next_json_where, wait_until, Client};

const WAIT: Duration = Duration::from_secs(5);

async fn algo(client: &Client, params: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut all = vec![("algoType", "CONDITIONAL")];
    all.extend_from_slice(params);
    let (status, _, body) = client
        .signed(Method::POST, "/fapi/v1/algoOrder", &all)
        .await;
    (status, body)
}

async fn position_amount(client: &Client, symbol: &str) -> String {
    let (_, _, risk) = client
        .signed(Method::GET, "/fapi/v2/positionRisk", &[("symbol", symbol)])
        .await;
    risk[0]["positionAmt"].as_str().unwrap().to_string()
}

async fn open_long(client: &Client, symbol: &str, qty: &str) {
    let (status, body) = order(
        client,
        &[
            ("symbol", symbol),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", qty),
            ("newOrderRespType", "RESULT"),
        ],
    )
    .await;
    assert_eq!(body["status"], "FILLED", "{status} {body}");
}

#[tokio::test]
async fn a_stop_market_close_position_fires_when_the_mark_falls_to_it_and_closes_the_long() {
    let (sim, client) = support::start().await;
    client.pin_price("AXSUSDT", "6.250").await;
    open_long(&client, "AXSUSDT", "10").await;
    let mut ws = user_stream(&sim, &client).await;
    let (status, stop) = algo(
        &client,
        &[
            ("symbol", "AXSUSDT"),
            ("side", "SELL"),
            ("type", "STOP_MARKET"),
            ("triggerPrice", "6.000"),
            ("closePosition", "true"),
            ("clientAlgoId", "sl-lot-1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stop}");
    assert_eq!(stop["algoStatus"], "NEW");

    client.pin_price("AXSUSDT", "6.100").await;
    assert_eq!(
        position_amount(&client, "AXSUSDT").await,
        "10",
        "above the trigger nothing happens"
    );
    client.pin_price("AXSUSDT", "5.990").await;

    let triggered = next_json_where(&mut ws, WAIT, "ALGO_UPDATE TRIGGERED", |v| {
        v["e"] == "ALGO_UPDATE" && v["o"]["X"] == "TRIGGERED"
    })
    .await;
    let actual_id = triggered["o"]["ai"].as_str().unwrap().to_string();
    assert!(!actual_id.is_empty(), "the triggered order's id is given");
    let fill = next_json_where(&mut ws, WAIT, "the close fill", |v| {
        v["e"] == "ORDER_TRADE_UPDATE" && v["o"]["X"] == "FILLED"
    })
    .await;
    assert_eq!(fill["o"]["c"], "sl-lot-1");
    assert_eq!(fill["o"]["ot"], "STOP_MARKET");
    assert_eq!(fill["o"]["R"], true);
    assert_eq!(fill["o"]["i"].to_string(), actual_id);
    next_json_where(&mut ws, WAIT, "ALGO_UPDATE FINISHED", |v| {
        v["e"] == "ALGO_UPDATE" && v["o"]["X"] == "FINISHED"
    })
    .await;
    assert_eq!(position_amount(&client, "AXSUSDT").await, "0");
    let (_, _, open) = client
        .signed(
            Method::GET,
            "/fapi/v1/openAlgoOrders",
            &[("symbol", "AXSUSDT")],
        )
        .await;
    assert_eq!(open, serde_json::json!([]));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_take_profit_market_fires_when_the_mark_rises_to_it() {
    let (sim, client) = support::start().await;
    client.pin_price("ETHUSDT", "3400.00").await;
    open_long(&client, "ETHUSDT", "0.100").await;
    let (_, tp) = algo(
        &client,
        &[
            ("symbol", "ETHUSDT"),
            ("side", "SELL"),
            ("type", "TAKE_PROFIT_MARKET"),
            ("triggerPrice", "3500.00"),
            ("closePosition", "true"),
        ],
    )
    .await;
    client.pin_price("ETHUSDT", "3500.00").await;
    let id = tp["algoId"].to_string();
    wait_until(WAIT, "the take-profit to finish", || async {
        let (_, _, q) = client
            .signed(Method::GET, "/fapi/v1/algoOrder", &[("algoId", &id)])
            .await;
        (q["algoStatus"] == "FINISHED").then_some(())
    })
    .await;
    wait_until(WAIT, "the position to be flat", || async {
        (position_amount(&client, "ETHUSDT").await == "0.000").then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_trailing_stop_follows_the_peak_and_fires_on_the_callback() {
    let (sim, client) = support::start().await;
    client.pin_price("SOLUSDT", "180.00").await;
    open_long(&client, "SOLUSDT", "5").await;
    let (status, trail) = algo(
        &client,
        &[
            ("symbol", "SOLUSDT"),
            ("side", "SELL"),
            ("type", "TRAILING_STOP_MARKET"),
            ("quantity", "5"),
            ("reduceOnly", "true"),
            ("activatePrice", "185.00"),
            ("callbackRate", "2"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let id = trail["algoId"].to_string();
    let status_of = || async {
        let (_, _, q) = client
            .signed(Method::GET, "/fapi/v1/algoOrder", &[("algoId", &id)])
            .await;
        q["algoStatus"].as_str().unwrap().to_string()
    };
    // Not active yet: a 2 % fall from 180 does nothing.
    client.pin_price("SOLUSDT", "176.00").await;
    assert_eq!(status_of().await, "NEW");
    // Activated at 185, the peak moves to 200; 2 % below the peak is 196.
    for price in ["185.00", "200.00", "197.00"] {
        client.pin_price("SOLUSDT", price).await;
        assert_eq!(status_of().await, "NEW", "at {price}");
    }
    client.pin_price("SOLUSDT", "195.90").await;
    wait_until(WAIT, "the trailing stop to finish", || async {
        (status_of().await == "FINISHED").then_some(())
    })
    .await;
    wait_until(WAIT, "the position to be flat", || async {
        (position_amount(&client, "SOLUSDT").await == "0.00").then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn algo_order_rules() {
    let (sim, client) = support::start().await;
    client.pin_price("BTCUSDT", "95000.00").await;
    let stop = |trigger: &'static str| {
        vec![
            ("symbol", "BTCUSDT"),
            ("side", "SELL"),
            ("type", "STOP_MARKET"),
            ("triggerPrice", trigger),
            ("closePosition", "true"),
        ]
    };
    let (status, body) = algo(&client, &stop("96000.00")).await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-2021)),
        "a sell stop above the mark would trigger at once"
    );
    let mut with_qty = stop("90000.00");
    with_qty.push(("quantity", "0.010"));
    assert_eq!(
        algo(&client, &with_qty).await.1["code"],
        -1106,
        "closePosition takes no quantity"
    );
    let (_, _, body) = client
        .signed(
            Method::POST,
            "/fapi/v1/algoOrder",
            &[
                ("symbol", "BTCUSDT"),
                ("side", "SELL"),
                ("type", "STOP_MARKET"),
                ("triggerPrice", "90000.00"),
                ("closePosition", "true"),
            ],
        )
        .await;
    assert_eq!(body["code"], -1102, "algoType is mandatory");
    let (status, placed) = algo(&client, &stop("90000.00")).await;
    assert_eq!(status, StatusCode::OK, "{placed}");
    let id = placed["algoId"].to_string();
    let (status, _, cancelled) = client
        .signed(Method::DELETE, "/fapi/v1/algoOrder", &[("algoId", &id)])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["msg"], "success");
    let (_, _, again) = client
        .signed(Method::DELETE, "/fapi/v1/algoOrder", &[("algoId", &id)])
        .await;
    assert_eq!(again["code"], -2011);
    // A close-position stop that triggers with no position expires instead of opening one.
    let (_, placed) = algo(&client, &stop("90000.00")).await;
    client.pin_price("BTCUSDT", "89000.00").await;
    let id = placed["algoId"].to_string();
    let (_, _, q) = client
        .signed(Method::GET, "/fapi/v1/algoOrder", &[("algoId", &id)])
        .await;
    assert_eq!(q["algoStatus"], "EXPIRED");
    assert_eq!(position_amount(&client, "BTCUSDT").await, "0.000");
    sim.shutdown().await;
}
