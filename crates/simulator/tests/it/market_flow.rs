//! The market as other traders make it (issue 12): diff book-depth streams a client can keep a
//! local book with, by Binance's documented procedure; the synthetic flow of public trades on
//! `@aggTrade`; and the public-trade endpoints `trades`, `historicalTrades` and `aggTrades`, with
//! their limits, errors and documented shapes.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use simulator::SimConfig;

use crate::orders::{faults, order};
use crate::shape::{assert_matches_fixture, Allow};
use crate::support::{self, next_json_where, start_with, wait_until, ws_connect, Client, Ws};

/// How long a test waits for an asynchronous effect.
const WAIT: Duration = Duration::from_secs(10);

/// A simulator whose prices move (and whose market trades) five times a second, so a few
/// seconds hold many book changes and trades; fills are immediate.
async fn start_busy() -> (simulator::SimHandle, Client) {
    start_with(SimConfig {
        tick_interval: Duration::from_millis(200),
        fill_delay: Duration::ZERO,
        ..SimConfig::default()
    })
    .await
}

fn int(v: &Value) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("{v} is not an integer"))
}

fn dec(v: &Value) -> Decimal {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"));
    Decimal::from_str(text).unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// A 200 reply's body.
async fn get(client: &Client, path: &str, params: &[(&str, &str)]) -> Value {
    let (status, _, body) = client.public(Method::GET, path, params).await;
    assert_eq!(status, StatusCode::OK, "GET {path} {params:?}: {body}");
    body
}

/// A refusal's (status, code).
async fn refused(client: &Client, path: &str, params: &[(&str, &str)]) -> (StatusCode, i64) {
    let (status, _, body) = client.public(Method::GET, path, params).await;
    (status, body["code"].as_i64().unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// A local order book, kept as Binance's "How to manage a local order book correctly" says.
// ---------------------------------------------------------------------------------------------

/// One side of a book: price to quantity.
type Side = BTreeMap<Decimal, Decimal>;

fn side_of(levels: &Value) -> Side {
    levels
        .as_array()
        .unwrap_or_else(|| panic!("{levels} is not a list of levels"))
        .iter()
        .map(|l| (dec(&l[0]), dec(&l[1])))
        .collect()
}

/// A book built from a REST snapshot and the diff events that follow it.
struct LocalBook {
    snapshot_id: i64,
    bids: Side,
    asks: Side,
    /// The `u` of the last event applied; `None` until the first one.
    last_u: Option<i64>,
    applied: usize,
}

impl LocalBook {
    fn from_snapshot(snapshot: &Value) -> LocalBook {
        LocalBook {
            snapshot_id: int(&snapshot["lastUpdateId"]),
            bids: side_of(&snapshot["bids"]),
            asks: side_of(&snapshot["asks"]),
            last_u: None,
            applied: 0,
        }
    }

    /// Steps 4 to 8 of Binance's procedure for one event; panics where the procedure would
    /// have the client start again, since here that would be the exchange's fault.
    fn apply(&mut self, event: &Value) {
        assert_eq!(event["e"], "depthUpdate", "{event}");
        let (first, last, previous) = (int(&event["U"]), int(&event["u"]), int(&event["pu"]));
        if last < self.snapshot_id {
            return; // Older than the snapshot: dropped.
        }
        match self.last_u {
            None => assert!(
                first <= self.snapshot_id && last >= self.snapshot_id,
                "the first event after snapshot {} must cover it: {event}",
                self.snapshot_id
            ),
            Some(u) => assert_eq!(previous, u, "pu must be the previous event's u: {event}"),
        }
        for (levels, side) in [(&event["b"], &mut self.bids), (&event["a"], &mut self.asks)] {
            for (price, qty) in side_of(levels) {
                if qty.is_zero() {
                    side.remove(&price);
                } else {
                    side.insert(price, qty);
                }
            }
        }
        self.last_u = Some(last);
        self.applied += 1;
    }
}

async fn next_depth_event(ws: &mut Ws) -> Value {
    next_json_where(ws, WAIT, "a depthUpdate", |v| v["e"] == "depthUpdate").await
}

/// Reads and applies diff events until `count` more have been applied.
async fn apply_events(ws: &mut Ws, book: &mut LocalBook, count: usize) {
    let target = book.applied + count;
    while book.applied < target {
        let event = next_depth_event(ws).await;
        book.apply(&event);
    }
}

async fn depth_snapshot(client: &Client, symbol: &str) -> Value {
    get(
        client,
        "/fapi/v1/depth",
        &[("symbol", symbol), ("limit", "1000")],
    )
    .await
}

#[tokio::test]
async fn a_local_book_from_a_snapshot_and_diff_events_stays_equal_to_the_exchange_book() {
    let (sim, client) = start_busy().await;
    let mut ws = ws_connect(&format!("{}/public/ws/btcusdt@depth@100ms", sim.ws_url())).await;
    // Steps 1 to 3: the stream is open and buffering (one event has come) before the snapshot.
    let buffered = next_depth_event(&mut ws).await;
    let mut book = LocalBook::from_snapshot(&depth_snapshot(&client, "BTCUSDT").await);
    book.apply(&buffered);
    apply_events(&mut ws, &mut book, 3).await;

    // The account trades meanwhile: a bid rests, a MARKET order fills.
    let price =
        dec(&get(&client, "/fapi/v1/ticker/price", &[("symbol", "BTCUSDT")]).await["price"]);
    let bid = (price * Decimal::new(97, 2)).round_dp(1).to_string();
    let limit = [
        ("symbol", "BTCUSDT"),
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", "0.010"),
        ("price", bid.as_str()),
    ];
    let (status, reply) = order(&client, &limit).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let market = [
        ("symbol", "BTCUSDT"),
        ("side", "BUY"),
        ("type", "MARKET"),
        ("quantity", "0.010"),
        ("newOrderRespType", "RESULT"),
    ];
    let (status, reply) = order(&client, &market).await;
    assert_eq!(
        (status, &reply["status"]),
        (StatusCode::OK, &json!("FILLED")),
        "{reply}"
    );
    apply_events(&mut ws, &mut book, 3).await;

    // Every level's quantity changes with the book_level_notional knob, and back.
    faults(&client, json!({"book_level_notional": "20000"})).await;
    apply_events(&mut ws, &mut book, 2).await;
    faults(&client, json!({"book_level_notional": null})).await;
    apply_events(&mut ws, &mut book, 2).await;

    // Freeze the book, then catch up to a fresh snapshot: the two books are the same.
    client.pin_price("BTCUSDT", "70000.00").await;
    let fresh = depth_snapshot(&client, "BTCUSDT").await;
    let fresh_id = int(&fresh["lastUpdateId"]);
    while book.last_u < Some(fresh_id) {
        let event = next_depth_event(&mut ws).await;
        book.apply(&event);
    }
    assert_eq!(book.last_u, Some(fresh_id), "nothing changes a pinned book");
    assert_eq!(book.bids, side_of(&fresh["bids"]));
    assert_eq!(book.asks, side_of(&fresh["asks"]));
    assert_eq!(book.bids.len(), 20, "the whole synthetic book");
    assert!(book.applied >= 11, "{} events applied", book.applied);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_diff_depth_event_has_the_documented_shape() {
    let (sim, _client) = start_busy().await;
    let mut ws = ws_connect(&format!("{}/public/ws/solusdt@depth@500ms", sim.ws_url())).await;
    // A book that moved and moved back within one slot makes an event with no levels: skip it.
    let event = next_json_where(&mut ws, WAIT, "a depthUpdate with levels", |v| {
        v["e"] == "depthUpdate" && v["b"].as_array().is_some_and(|b| !b.is_empty())
    })
    .await;
    assert_matches_fixture(&event, "ws__depth_update_diff.json", &Allow::none());
    assert!(int(&event["T"]) <= int(&event["E"]), "{event}");
    assert_eq!(int(&event["U"]), int(&event["pu"]) + 1, "{event}");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The market's trades on the aggregate-trade stream.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_market_trades_on_the_aggregate_trade_stream_without_any_order_of_ours() {
    let (sim, client) = start_busy().await;
    let mut ws = ws_connect(&format!("{}/market/ws/ethusdt@aggTrade", sim.ws_url())).await;
    let mut events: Vec<Value> = Vec::new();
    while events.len() < 8 {
        events.push(next_json_where(&mut ws, WAIT, "an aggTrade", |v| v["e"] == "aggTrade").await);
    }
    assert_matches_fixture(&events[0], "ws__agg_trade.json", &Allow::none());
    for pair in events.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        assert_eq!(
            int(&after["a"]),
            int(&before["a"]) + 1,
            "{before} then {after}"
        );
        assert_eq!(
            int(&after["f"]),
            int(&before["l"]) + 1,
            "{before} then {after}"
        );
        assert!(int(&after["T"]) >= int(&before["T"]));
    }
    for event in &events {
        assert!(int(&event["f"]) <= int(&event["l"]), "{event}");
        assert!(dec(&event["q"]) > Decimal::ZERO, "{event}");
        assert_eq!(event["q"], event["nq"], "no RPI orders: {event}");
    }
    // The same aggregates, by id, over REST.
    let first = int(&events[0]["a"]).to_string();
    let listed = get(
        &client,
        "/fapi/v1/aggTrades",
        &[("symbol", "ETHUSDT"), ("fromId", &first), ("limit", "8")],
    )
    .await;
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 8);
    for (rest, stream) in listed.iter().zip(&events) {
        for key in ["a", "p", "q", "f", "l", "T", "m"] {
            assert_eq!(rest[key], stream[key], "{key}: {rest} vs {stream}");
        }
    }
    sim.shutdown().await;
}

/// The first 30 trades of XRPUSDT's tape: (id, price, qty, isBuyerMaker), once there are 30.
async fn first_trades(client: &Client) -> Vec<(Value, Value, Value, Value)> {
    wait_until(WAIT, "30 market trades", || async {
        let (status, _, rows) = client
            .key_only(
                Method::GET,
                "/fapi/v1/historicalTrades",
                &[("symbol", "XRPUSDT"), ("fromId", "1"), ("limit", "30")],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        let rows = rows.as_array().cloned().unwrap_or_default();
        (rows.len() == 30).then(|| {
            rows.iter()
                .map(|t| {
                    let field = |k: &str| t[k].clone();
                    (
                        field("id"),
                        field("price"),
                        field("qty"),
                        field("isBuyerMaker"),
                    )
                })
                .collect()
        })
    })
    .await
}

#[tokio::test]
async fn two_simulators_with_the_same_seed_print_the_same_market_trades() {
    let (one, client_one) = start_busy().await;
    let (two, client_two) = start_busy().await;
    // Real time decides when the ticks come, not what they print: the n-th trade is the same.
    assert_eq!(
        first_trades(&client_one).await,
        first_trades(&client_two).await
    );
    one.shutdown().await;
    two.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// GET /fapi/v1/trades, historicalTrades, aggTrades.
// ---------------------------------------------------------------------------------------------

/// Waits until the tape of `symbol` holds at least `count` trades, and returns the oldest id.
async fn wait_for_trades(client: &Client, symbol: &str, count: usize) -> i64 {
    wait_until(WAIT, "market trades on the tape", || async {
        let rows = get(
            client,
            "/fapi/v1/trades",
            &[("symbol", symbol), ("limit", "1000")],
        )
        .await;
        let rows = rows.as_array().cloned().unwrap_or_default();
        (rows.len() >= count).then(|| int(&rows[0]["id"]))
    })
    .await
}

#[tokio::test]
async fn recent_trades_are_the_newest_trades_oldest_first_in_the_documented_shape() {
    let (sim, client) = start_busy().await;
    wait_for_trades(&client, "BNBUSDT", 10).await;
    let (status, _, rows) = client
        .public(
            Method::GET,
            "/fapi/v1/trades",
            &[("symbol", "BNBUSDT"), ("limit", "5")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_matches_fixture(&rows, "rest__trades.json", &Allow::none());
    let rows = rows.as_array().expect("a list");
    assert_eq!(rows.len(), 5);
    assert!(rows
        .windows(2)
        .all(|w| int(&w[1]["id"]) == int(&w[0]["id"]) + 1));
    for t in rows {
        assert_eq!(
            dec(&t["quoteQty"]),
            dec(&t["price"]) * dec(&t["qty"]),
            "{t}"
        );
        assert_eq!(t["isRPITrade"], false);
    }
    let newest = get(&client, "/fapi/v1/trades", &[("symbol", "BNBUSDT")]).await;
    let newest = newest.as_array().expect("a list");
    assert!(
        !newest.is_empty() && newest.len() <= 500,
        "default limit 500"
    );

    for limit in ["0", "1001", "-3"] {
        assert_eq!(
            refused(
                &client,
                "/fapi/v1/trades",
                &[("symbol", "BNBUSDT"), ("limit", limit)]
            )
            .await,
            (StatusCode::BAD_REQUEST, -1130),
            "limit {limit}"
        );
    }
    assert_eq!(
        refused(&client, "/fapi/v1/trades", &[]).await,
        (StatusCode::BAD_REQUEST, -1102)
    );
    assert_eq!(
        refused(&client, "/fapi/v1/trades", &[("symbol", "NOPEUSDT")]).await,
        (StatusCode::BAD_REQUEST, -1121)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_own_fill_is_on_the_public_tape_with_its_user_trade_id() {
    let (sim, client) = support::start().await;
    client.pin_price("DOGEUSDT", "0.400000").await;
    let (status, reply) = order(
        &client,
        &[
            ("symbol", "DOGEUSDT"),
            ("side", "SELL"),
            ("type", "MARKET"),
            ("quantity", "100"),
            ("newOrderRespType", "RESULT"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (_, _, mine) = client
        .signed(
            Method::GET,
            "/fapi/v1/userTrades",
            &[("symbol", "DOGEUSDT")],
        )
        .await;
    let mine = &mine[0];
    let id = int(&mine["id"]);
    let public = get(
        &client,
        "/fapi/v1/trades",
        &[("symbol", "DOGEUSDT"), ("limit", "1000")],
    )
    .await;
    let public = public
        .as_array()
        .and_then(|rows| rows.iter().find(|t| int(&t["id"]) == id))
        .unwrap_or_else(|| panic!("trade {id} is not on the tape: {public}"));
    assert_eq!(public["price"], mine["price"]);
    assert_eq!(public["qty"], mine["qty"]);
    assert_eq!(
        public["isBuyerMaker"], true,
        "we sold as taker: the buyer made"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn historical_trades_need_the_api_key_and_page_from_an_id() {
    let (sim, client) = start_busy().await;
    let oldest = wait_for_trades(&client, "SOLUSDT", 12).await;
    assert_eq!(
        refused(
            &client,
            "/fapi/v1/historicalTrades",
            &[("symbol", "SOLUSDT")]
        )
        .await,
        (StatusCode::UNAUTHORIZED, -2014),
        "MARKET_DATA: the key is required"
    );
    let from = (oldest + 2).to_string();
    let (status, _, rows) = client
        .key_only(
            Method::GET,
            "/fapi/v1/historicalTrades",
            &[("symbol", "SOLUSDT"), ("fromId", &from), ("limit", "3")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    assert_matches_fixture(&rows, "rest__trades.json", &Allow::none());
    let ids: Vec<i64> = rows
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| int(&t["id"]))
        .collect();
    assert_eq!(ids, vec![oldest + 2, oldest + 3, oldest + 4]);
    let (_, _, newest) = client
        .key_only(
            Method::GET,
            "/fapi/v1/historicalTrades",
            &[("symbol", "SOLUSDT")],
        )
        .await;
    let newest = newest.as_array().expect("a list");
    assert!(
        !newest.is_empty() && newest.len() <= 100,
        "default limit 100"
    );
    let (status, _, body) = client
        .key_only(
            Method::GET,
            "/fapi/v1/historicalTrades",
            &[("symbol", "SOLUSDT"), ("limit", "501")],
        )
        .await;
    assert_eq!(
        (status, int(&body["code"])),
        (StatusCode::BAD_REQUEST, -1130)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn agg_trades_page_by_id_and_time_and_refuse_a_range_of_an_hour() {
    let (sim, client) = start_busy().await;
    wait_for_trades(&client, "AXSUSDT", 12).await;
    let all = get(&client, "/fapi/v1/aggTrades", &[("symbol", "AXSUSDT")]).await;
    assert_matches_fixture(&all, "rest__agg_trades.json", &Allow::none());
    let all = all.as_array().expect("a list").clone();
    assert!(all.len() >= 4, "{all:?}");
    assert!(all
        .windows(2)
        .all(|w| int(&w[1]["f"]) == int(&w[0]["l"]) + 1));

    let second = int(&all[1]["a"]).to_string();
    let from = get(
        &client,
        "/fapi/v1/aggTrades",
        &[("symbol", "AXSUSDT"), ("fromId", &second), ("limit", "2")],
    )
    .await;
    assert_eq!(from, json!([all[1], all[2]]));

    // A time window: from the second aggregate's time to the third's, both inclusive.
    let (start, end) = (int(&all[1]["T"]).to_string(), int(&all[2]["T"]).to_string());
    let window = get(
        &client,
        "/fapi/v1/aggTrades",
        &[
            ("symbol", "AXSUSDT"),
            ("startTime", &start),
            ("endTime", &end),
        ],
    )
    .await;
    let window = window.as_array().expect("a list");
    assert!(
        window.contains(&all[1]) && window.contains(&all[2]),
        "{window:?}"
    );
    assert!(window
        .iter()
        .all(|a| int(&a["T"]) >= int(&all[1]["T"]) && int(&a["T"]) <= int(&all[2]["T"])));

    let hour_later = (int(&all[1]["T"]) + 3_600_000).to_string();
    assert_eq!(
        refused(
            &client,
            "/fapi/v1/aggTrades",
            &[
                ("symbol", "AXSUSDT"),
                ("startTime", &start),
                ("endTime", &hour_later)
            ],
        )
        .await,
        (StatusCode::BAD_REQUEST, -1127)
    );
    assert_eq!(
        refused(
            &client,
            "/fapi/v1/aggTrades",
            &[("symbol", "AXSUSDT"), ("limit", "1001")]
        )
        .await,
        (StatusCode::BAD_REQUEST, -1130)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn market_trades_fill_the_candles_in_the_documented_kline_shape() {
    let (sim, client) = start_busy().await;
    wait_for_trades(&client, "ETHUSDT", 5).await;
    let klines = get(
        &client,
        "/fapi/v1/klines",
        &[("symbol", "ETHUSDT"), ("interval", "1m")],
    )
    .await;
    assert_matches_fixture(&klines, "rest__klines.json", &Allow::none());
    let traded: i64 = klines
        .as_array()
        .expect("a list")
        .iter()
        .map(|k| int(&k[8]))
        .sum();
    assert!(
        traded >= 5,
        "the candles count the market's trades: {klines}"
    );
    let ticker = get(&client, "/fapi/v1/ticker/24hr", &[("symbol", "ETHUSDT")]).await;
    assert!(int(&ticker["firstId"]) > 0 && int(&ticker["lastId"]) >= int(&ticker["firstId"]));
    assert!(dec(&ticker["volume"]) > Decimal::ZERO, "{ticker}");
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Price candles and open interest.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mark_index_premium_and_continuous_klines_come_from_the_same_candles() {
    let (sim, client) = support::start().await;
    client.pin_price("BTCUSDT", "65000.00").await;
    let mark = get(
        &client,
        "/fapi/v1/markPriceKlines",
        &[("symbol", "BTCUSDT"), ("interval", "1m"), ("limit", "3")],
    )
    .await;
    // The documented kline row: markPriceKlines' own example is not valid JSON (a tab inside a
    // string), and its shape is the klines' one with "ignore" fields.
    assert_matches_fixture(&mark, "rest__klines.json", &Allow::none());
    let last = mark
        .as_array()
        .and_then(|rows| rows.last())
        .expect("a candle");
    assert_eq!(dec(&last[4]), Decimal::from(65_000), "{last}");
    let index = get(
        &client,
        "/fapi/v1/indexPriceKlines",
        &[("pair", "BTCUSDT"), ("interval", "1m"), ("limit", "3")],
    )
    .await;
    assert_eq!(index, mark, "no basis: the index is the mark");
    let premium = get(
        &client,
        "/fapi/v1/premiumIndexKlines",
        &[("symbol", "BTCUSDT"), ("interval", "1m")],
    )
    .await;
    assert_matches_fixture(&premium, "rest__klines.json", &Allow::none());
    assert!(premium
        .as_array()
        .expect("a list")
        .iter()
        .all(|row| (1..=4).all(|i| dec(&row[i]).is_zero())));

    let perpetual = get(
        &client,
        "/fapi/v1/continuousKlines",
        &[
            ("pair", "BTCUSDT"),
            ("contractType", "PERPETUAL"),
            ("interval", "5m"),
        ],
    )
    .await;
    let klines = get(
        &client,
        "/fapi/v1/klines",
        &[("symbol", "BTCUSDT"), ("interval", "5m")],
    )
    .await;
    assert_eq!(
        perpetual, klines,
        "a pinned symbol's candles do not move in between"
    );
    let quarter = get(
        &client,
        "/fapi/v1/continuousKlines",
        &[
            ("pair", "BTCUSDT"),
            ("contractType", "CURRENT_QUARTER"),
            ("interval", "5m"),
        ],
    )
    .await;
    assert_eq!(quarter, json!([]), "only perpetuals are listed");
    assert_eq!(
        refused(
            &client,
            "/fapi/v1/continuousKlines",
            &[
                ("pair", "BTCUSDT"),
                ("contractType", "WEEKLY"),
                ("interval", "5m")
            ],
        )
        .await,
        (StatusCode::BAD_REQUEST, -1102)
    );
    assert_eq!(
        refused(
            &client,
            "/fapi/v1/markPriceKlines",
            &[("symbol", "BTCUSDT"), ("interval", "1m"), ("limit", "1501")],
        )
        .await,
        (StatusCode::BAD_REQUEST, -1130)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn open_interest_is_the_accounts_open_position() {
    let (sim, client) = support::start().await;
    client.pin_price("ETHUSDT", "3000.00").await;
    let before = get(&client, "/fapi/v1/openInterest", &[("symbol", "ETHUSDT")]).await;
    assert_eq!(before["openInterest"], "0.000", "{before}");
    assert_eq!(before["symbol"], "ETHUSDT");
    assert!(before["time"].is_i64(), "{before}");
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
    let after = get(&client, "/fapi/v1/openInterest", &[("symbol", "ETHUSDT")]).await;
    assert_eq!(
        after["openInterest"], "0.050",
        "a short is open interest too: {after}"
    );
    sim.shutdown().await;
}
