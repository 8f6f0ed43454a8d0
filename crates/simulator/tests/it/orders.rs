//! Order lifecycle: the asynchronous MARKET fill that caused the incident, RESULT replies,
//! partial fills, expiry on a thin book, resting LIMIT orders, positions, fees and PnL, and the
//! order rules (filters, client ids, reduce-only, conditional types).

use std::str::FromStr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::support::{self, next_event, ws_connect, Client};

const WAIT: Duration = Duration::from_secs(5);

pub(crate) fn dec(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("{v} is not a decimal string")),
    )
    .unwrap_or_else(|e| panic!("{v}: {e}"))
}

pub(crate) async fn faults(client: &Client, body: Value) {
    let (status, reply) = client
        .control(Method::POST, "/sim/v1/faults", body.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "setting faults {body}: {reply}");
}

pub(crate) async fn order(client: &Client, params: &[(&str, &str)]) -> (StatusCode, Value) {
    let (status, _, body) = client.signed(Method::POST, "/fapi/v1/order", params).await;
    (status, body)
}

pub(crate) async fn query(client: &Client, symbol: &str, order_id: &Value) -> Value {
    let id = order_id.to_string();
    let (status, _, body) = client
        .signed(
            Method::GET,
            "/fapi/v1/order",
            &[("symbol", symbol), ("orderId", &id)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub(crate) async fn user_stream(sim: &simulator::SimHandle, client: &Client) -> support::Ws {
    let (_, _, body) = client
        .key_only(Method::POST, "/fapi/v1/listenKey", &[])
        .await;
    let key = body["listenKey"].as_str().expect("listenKey").to_string();
    ws_connect(&format!("{}/private/ws?listenKey={key}", sim.ws_url())).await
}

#[tokio::test]
async fn market_order_ack_says_new_with_zeros_and_the_fill_is_confirmed_later() {
    // Regression for the incident: the first reply is not the fill.
    let (sim, client) = support::start().await;
    faults(&client, json!({"fill_delay_ms": 400})).await;
    let mut ws = user_stream(&sim, &client).await;

    let (status, ack) = order(
        &client,
        &[
            ("symbol", "AXSUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "10"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["status"], "NEW");
    assert_eq!(ack["executedQty"], "0");
    assert_eq!(ack["cumQuote"], "0");
    assert_eq!(ack["avgPrice"], "0.00000");
    assert_eq!(
        query(&client, "AXSUSDT", &ack["orderId"]).await["status"],
        "NEW",
        "not filled before the delay"
    );

    let new = next_event(&mut ws, "ORDER_TRADE_UPDATE", WAIT).await;
    assert_eq!(
        (new["o"]["x"].as_str(), new["o"]["X"].as_str()),
        (Some("NEW"), Some("NEW"))
    );
    let fill = next_event(&mut ws, "ORDER_TRADE_UPDATE", WAIT).await;
    assert_eq!(fill["o"]["x"], "TRADE");
    assert_eq!(fill["o"]["X"], "FILLED");
    assert_eq!(fill["o"]["i"], ack["orderId"]);
    assert!(
        fill["o"]["t"].as_i64().unwrap() > 0,
        "a trade carries its trade id"
    );
    assert!(dec(&fill["o"]["ap"]) > Decimal::ZERO);

    let filled = query(&client, "AXSUSDT", &ack["orderId"]).await;
    assert_eq!(filled["status"], "FILLED");
    assert_eq!(dec(&filled["executedQty"]), Decimal::from(10));
    let avg = dec(&filled["avgPrice"]);
    assert!(avg > Decimal::ZERO);
    assert_eq!(
        (dec(&filled["cumQuote"]) / Decimal::from(10)).round_dp(5),
        avg.round_dp(5)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_result_reply_waits_for_the_final_state() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"fill_delay_ms": 200})).await;
    let (status, reply) = order(
        &client,
        &[
            ("symbol", "ETHUSDT"),
            ("side", "SELL"),
            ("type", "MARKET"),
            ("quantity", "0.050"),
            ("newOrderRespType", "RESULT"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["status"], "FILLED");
    assert_eq!(reply["executedQty"], "0.050");
    assert_eq!(reply["cumQty"], "0.050");
    assert!(dec(&reply["avgPrice"]) > Decimal::ZERO);
    sim.shutdown().await;
}

#[tokio::test]
async fn partial_fills_arrive_as_partially_filled_then_filled() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"partial_fills": 3, "fill_delay_ms": 50})).await;
    let mut ws = user_stream(&sim, &client).await;
    let (_, ack) = order(
        &client,
        &[
            ("symbol", "XRPUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "300"),
        ],
    )
    .await;
    let mut statuses = Vec::new();
    let mut filled = Decimal::ZERO;
    while statuses.last().map(String::as_str) != Some("FILLED") {
        let e = next_event(&mut ws, "ORDER_TRADE_UPDATE", WAIT).await;
        if e["o"]["x"] == "TRADE" {
            filled += dec(&e["o"]["l"]);
            assert_eq!(dec(&e["o"]["z"]), filled, "z is the running total of l");
        }
        statuses.push(e["o"]["X"].as_str().unwrap().to_string());
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "PARTIALLY_FILLED").count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(filled, Decimal::from(300));
    assert_eq!(
        query(&client, "XRPUSDT", &ack["orderId"]).await["status"],
        "FILLED"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_thin_book_fills_what_it_can_and_expires_the_rest_with_reason_9() {
    let (sim, client) = support::start().await;
    // 20 levels of about 50 USDT each: roughly 1000 USDT of asks.
    faults(&client, json!({"book_level_notional": "50"})).await;
    let mut ws = user_stream(&sim, &client).await;
    let (_, ack) = order(
        &client,
        &[
            ("symbol", "AXSUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "500"),
        ],
    )
    .await;
    let last = support::next_json_where(&mut ws, WAIT, "the EXPIRED update", |v| {
        v["o"]["X"] == "EXPIRED"
    })
    .await;
    assert_eq!(last["o"]["x"], "EXPIRED");
    assert_eq!(last["o"]["er"], "9");
    let order = query(&client, "AXSUSDT", &ack["orderId"]).await;
    assert_eq!(order["status"], "EXPIRED");
    let executed = dec(&order["executedQty"]);
    assert!(
        executed > Decimal::ZERO && executed < Decimal::from(500),
        "partly filled: {executed}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_limit_order_rests_until_the_price_crosses_it_and_fills_as_maker() {
    let (sim, client) = support::start().await;
    client.pin_price("SOLUSDT", "180.00").await;
    let (status, ack) = order(
        &client,
        &[
            ("symbol", "SOLUSDT"),
            ("side", "BUY"),
            ("type", "LIMIT"),
            ("timeInForce", "GTC"),
            ("quantity", "1"),
            ("price", "175.00"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    client.pin_price("SOLUSDT", "177.00").await;
    assert_eq!(
        query(&client, "SOLUSDT", &ack["orderId"]).await["status"],
        "NEW"
    );
    client.pin_price("SOLUSDT", "174.50").await;
    let order = query(&client, "SOLUSDT", &ack["orderId"]).await;
    assert_eq!(order["status"], "FILLED");
    assert_eq!(order["avgPrice"], "175.00000");
    let (_, _, trades) = client
        .signed(Method::GET, "/fapi/v1/userTrades", &[("symbol", "SOLUSDT")])
        .await;
    assert_eq!(trades[0]["maker"], true);
    assert_eq!(
        trades[0]["commission"], "0.03500000",
        "maker fee 0.02 % of 175"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn closing_a_long_at_a_higher_price_realizes_the_profit_net_of_fees() {
    let (sim, client) = support::start().await;
    client.pin_price("BNBUSDT", "600.000").await;
    let (_, open) = order(
        &client,
        &[
            ("symbol", "BNBUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "1.00"),
            ("newOrderRespType", "RESULT"),
        ],
    )
    .await;
    let entry = dec(&open["avgPrice"]);
    let (_, _, risk) = client
        .signed(
            Method::GET,
            "/fapi/v2/positionRisk",
            &[("symbol", "BNBUSDT")],
        )
        .await;
    assert_eq!(risk[0]["positionAmt"], "1.00");
    assert_eq!(dec(&risk[0]["entryPrice"]), entry);

    client.pin_price("BNBUSDT", "630.000").await;
    let (status, close) = order(
        &client,
        &[
            ("symbol", "BNBUSDT"),
            ("side", "SELL"),
            ("type", "MARKET"),
            ("quantity", "1.00"),
            ("reduceOnly", "true"),
            ("newOrderRespType", "RESULT"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{close}");
    let exit = dec(&close["avgPrice"]);
    let (_, _, risk) = client
        .signed(
            Method::GET,
            "/fapi/v2/positionRisk",
            &[("symbol", "BNBUSDT")],
        )
        .await;
    assert_eq!(risk[0]["positionAmt"], "0.00");
    let (_, _, trades) = client
        .signed(Method::GET, "/fapi/v1/userTrades", &[("symbol", "BNBUSDT")])
        .await;
    assert_eq!(dec(&trades[1]["realizedPnl"]), (exit - entry).round_dp(8));
    let fees: Decimal = trades
        .as_array()
        .unwrap()
        .iter()
        .map(|t| dec(&t["commission"]))
        .sum();
    let (_, _, balance) = client.signed(Method::GET, "/fapi/v2/balance", &[]).await;
    assert_eq!(
        dec(&balance[0]["balance"]),
        Decimal::from(10_000) + (exit - entry) - fees
    );
    sim.shutdown().await;
}

async fn rejected(client: &Client, params: &[(&str, &str)]) -> i64 {
    let (status, body) = order(client, params).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    body["code"].as_i64().expect("error code")
}

#[tokio::test]
async fn order_rules_give_binance_error_codes() {
    let (sim, client) = support::start().await;
    client.pin_price("BTCUSDT", "95000.00").await;
    let btc = |extra: &[(&'static str, &'static str)]| {
        let mut p = vec![("symbol", "BTCUSDT"), ("side", "BUY")];
        p.extend_from_slice(extra);
        p
    };
    let market = [("type", "MARKET")];
    assert_eq!(
        rejected(&client, &btc(&[("type", "MARKET"), ("quantity", "0.0015")])).await,
        -1111
    );
    assert_eq!(
        rejected(&client, &btc(&[("type", "MARKET"), ("quantity", "0")])).await,
        -4003
    );
    assert_eq!(
        rejected(
            &client,
            &btc(&[
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.010"),
                ("price", "94000.05")
            ])
        )
        .await,
        -4014
    );
    assert_eq!(
        rejected(
            &client,
            &btc(&[
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.010"),
                ("price", "94000.123")
            ])
        )
        .await,
        -1111
    );
    assert_eq!(
        rejected(
            &client,
            &btc(&[
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.010"),
                ("price", "120000.00")
            ])
        )
        .await,
        -4016
    );
    assert_eq!(
        rejected(&client, &btc(&[("type", "MARKET"), ("quantity", "0.001")])).await,
        -4164,
        "95 USDT < 100"
    );
    assert_eq!(
        rejected(&client, &btc(&[("type", "MARKET"), ("quantity", "50.000")])).await,
        -2019,
        "4.75M USDT on 10k"
    );
    assert_eq!(
        rejected(
            &client,
            &btc(&[
                ("type", "STOP_MARKET"),
                ("quantity", "0.010"),
                ("stopPrice", "90000")
            ])
        )
        .await,
        -4120
    );
    assert_eq!(
        rejected(
            &client,
            &btc(&[
                ("type", "MARKET"),
                ("quantity", "0.010"),
                ("reduceOnly", "true")
            ])
        )
        .await,
        -2022
    );
    assert_eq!(
        rejected(
            &client,
            &btc(&[
                ("type", "MARKET"),
                ("quantity", "0.010"),
                ("newClientOrderId", "x-01234567890123456789012345678901234")
            ])
        )
        .await,
        -4015
    );
    assert_eq!(
        rejected(
            &client,
            &btc(&[
                ("type", "MARKET"),
                ("quantity", "0.010"),
                ("positionSide", "LONG")
            ])
        )
        .await,
        -4061
    );
    assert_eq!(
        rejected(&client, &btc(&[("type", "MARKET"), ("quantity", "abc")])).await,
        -1102
    );
    assert_eq!(
        rejected(&client, &btc(&[("type", "TWAP"), ("quantity", "0.010")])).await,
        -1116
    );
    assert_eq!(
        rejected(&client, &btc(&market)).await,
        -1102,
        "quantity is mandatory"
    );
    assert_eq!(
        rejected(
            &client,
            &[
                ("symbol", "NOPEUSDT"),
                ("side", "BUY"),
                ("type", "MARKET"),
                ("quantity", "1")
            ]
        )
        .await,
        -1121
    );
    // A duplicate client id is refused only while the first order is open.
    let resting = btc(&[
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", "0.010"),
        ("price", "90000.00"),
        ("newClientOrderId", "intent-42"),
    ]);
    assert_eq!(order(&client, &resting).await.0, StatusCode::OK);
    assert_eq!(rejected(&client, &resting).await, -4116);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_post_only_order_that_would_take_is_rejected_and_ioc_without_liquidity_expires() {
    let (sim, client) = support::start().await;
    client.pin_price("ETHUSDT", "3400.00").await;
    let gtx = [
        ("symbol", "ETHUSDT"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTX"),
        ("quantity", "0.010"),
        ("price", "3410.00"),
    ];
    assert_eq!(rejected(&client, &gtx).await, -5022);
    let ioc = [
        ("symbol", "ETHUSDT"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "IOC"),
        ("quantity", "0.010"),
        ("price", "3300.00"),
    ];
    let (status, reply) = order(&client, &ioc).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        query(&client, "ETHUSDT", &reply["orderId"]).await["status"],
        "EXPIRED"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn hedge_mode_keeps_long_and_short_apart() {
    let (sim, client) = support::start().await;
    let (status, _, body) = client
        .signed(
            Method::POST,
            "/fapi/v1/positionSide/dual",
            &[("dualSidePosition", "true")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        rejected(
            &client,
            &[
                ("symbol", "DOGEUSDT"),
                ("side", "BUY"),
                ("type", "MARKET"),
                ("quantity", "100")
            ]
        )
        .await,
        -4061
    );
    for (side, position_side) in [("BUY", "LONG"), ("SELL", "SHORT")] {
        let (status, body) = order(
            &client,
            &[
                ("symbol", "DOGEUSDT"),
                ("side", side),
                ("positionSide", position_side),
                ("type", "MARKET"),
                ("quantity", "100"),
                ("newOrderRespType", "RESULT"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Closing more than the LONG side holds would open a short on the long side: refused.
    let too_much = [
        ("symbol", "DOGEUSDT"),
        ("side", "SELL"),
        ("positionSide", "LONG"),
        ("type", "MARKET"),
        ("quantity", "200"),
    ];
    assert_eq!(rejected(&client, &too_much).await, -2022);
    let (_, _, risk) = client
        .signed(
            Method::GET,
            "/fapi/v3/positionRisk",
            &[("symbol", "DOGEUSDT")],
        )
        .await;
    let amounts: Vec<(String, String)> = risk
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["positionSide"].as_str().unwrap().to_string(),
                r["positionAmt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        amounts,
        vec![
            ("LONG".to_string(), "100".to_string()),
            ("SHORT".to_string(), "-100".to_string())
        ]
    );
    sim.shutdown().await;
}
