//! Fuzzing of everything the client decodes from Binance (issue 11): the user-data and market
//! frames (`decode_user_frame`, `decode_market_frame`), every REST reply type, error replies
//! (`classify_reply`), and the symbol rules made from exchangeInfo with the rounding and checks
//! applied to them. Inputs are arbitrary text, random JSON, and the documented fixtures in
//! `testdata/binance/` mutated field by field. Last, the real [`RestClient`] against a server
//! that answers with any status, headers and body. The property: `Ok` or `Err`, never a panic.
//! `cargo fuzz run binance_rest` / `binance_ws` (in `fuzz/`) run the same for as long as one likes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use binance::error::{classify_reply, Effect};
use binance::events::{decode_market_frame, decode_user_frame};
use binance::types::{
    Account, AlgoCancel, AlgoOrder, Balance, ExchangeInfo, LeverageChange, ListenKey, Order,
    PositionMode, PositionRisk, PremiumIndex, ServerTime, UserTrade,
};
use binance::{Config, LotKind, NewOrder, OrderRef, RestClient, Rounding, Side, SymbolRules};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use rust_decimal::Decimal;
use serde_json::Value;
use testkit::fuzz;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

macro_rules! fixtures {
    ($($name:literal),+ $(,)?) => {
        vec![$(($name, include_str!(concat!("../../../../testdata/binance/", $name)))),+]
    };
}

/// Binance's short field names and the REST names the types read, so random documents and
/// inserted fields hit real fields.
const WIRE_KEYS: &[&str] = &[
    "e",
    "E",
    "T",
    "s",
    "o",
    "c",
    "S",
    "q",
    "p",
    "ap",
    "x",
    "X",
    "i",
    "l",
    "L",
    "z",
    "n",
    "N",
    "t",
    "m",
    "R",
    "ps",
    "rp",
    "er",
    "a",
    "B",
    "P",
    "wb",
    "cw",
    "bc",
    "pa",
    "ep",
    "bep",
    "cr",
    "up",
    "mt",
    "iw",
    "caid",
    "aid",
    "at",
    "ai",
    "aq",
    "tp",
    "cp",
    "tt",
    "rm",
    "r",
    "b",
    "A",
    "u",
    "stream",
    "data",
    "listenKey",
    "symbol",
    "markPrice",
    "status",
    "orderId",
    "filters",
    "filterType",
    "tickSize",
    "stepSize",
    "minQty",
    "maxQty",
    "minPrice",
    "maxPrice",
    "notional",
    "multiplierUp",
    "multiplierDown",
    "rateLimits",
    "intervalNum",
    "interval",
    "limit",
    "serverTime",
    "code",
    "msg",
    "avgPrice",
    "executedQty",
    "origQty",
    "price",
    "positionAmt",
    "entryPrice",
    "leverage",
    "algoId",
    "actualOrderId",
    "symbols",
];

fn ws_fixtures() -> Vec<Value> {
    let mut docs: Vec<Value> = fixtures![
        "ws__account_config_update_leverage.json",
        "ws__account_config_update_multi_assets.json",
        "ws__account_update.json",
        "ws__agg_trade.json",
        "ws__algo_update.json",
        "ws__book_ticker.json",
        "ws__listen_key_expired.json",
        "ws__margin_call.json",
        "ws__mark_price_update.json",
        "ws__mark_price_update_arr.json",
        "ws__order_trade_update_new.json",
        "ws__subscribe_response.json",
        "ws__trade_lite.json",
    ]
    .into_iter()
    .map(|(name, text)| fuzz::fixture(name, text))
    .collect();
    // The combined-stream envelope around each.
    let combined: Vec<Value> = docs
        .iter()
        .map(|d| serde_json::json!({"stream": "btcusdt@markPrice@1s", "data": d}))
        .collect();
    docs.extend(combined);
    docs
}

/// Every REST fixture with the decoder of its reply.
fn rest_fixtures() -> Vec<(&'static str, Value)> {
    fixtures![
        "rest__account_v2_multi_assets.json",
        "rest__account_v2_single_asset.json",
        "rest__account_v3_multi_assets.json",
        "rest__account_v3_single_asset.json",
        "rest__algo_order_cancel.json",
        "rest__algo_order_new.json",
        "rest__algo_order_query.json",
        "rest__all_algo_orders.json",
        "rest__all_orders.json",
        "rest__balance_v2.json",
        "rest__balance_v3.json",
        "rest__cancel_order.json",
        "rest__error.json",
        "rest__exchange_info.json",
        "rest__leverage.json",
        "rest__listen_key_create.json",
        "rest__new_order.json",
        "rest__open_algo_orders.json",
        "rest__open_order.json",
        "rest__open_orders.json",
        "rest__position_risk_v2_hedge.json",
        "rest__position_risk_v2_oneway.json",
        "rest__position_risk_v3_hedge.json",
        "rest__position_risk_v3_oneway.json",
        "rest__position_side_dual_get.json",
        "rest__premium_index.json",
        "rest__premium_index_list.json",
        "rest__query_order.json",
        "rest__time.json",
        "rest__user_trades.json",
    ]
    .into_iter()
    .map(|(name, text)| (name, fuzz::fixture(name, text)))
    .collect()
}

/// Decodes `text` as every REST reply type; what exchangeInfo yields is made into rules and
/// every rounding and check is applied to `figures`.
fn decode_rest(text: &str, figures: &[Decimal]) {
    fn de<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
        serde_json::from_str(text).ok()
    }
    let _ = de::<ServerTime>(text);
    let _ = de::<PremiumIndex>(text);
    let _ = de::<Vec<PremiumIndex>>(text);
    let _ = de::<LeverageChange>(text);
    let _ = de::<PositionMode>(text);
    let _ = de::<Order>(text);
    let _ = de::<Vec<Order>>(text);
    let _ = de::<Vec<UserTrade>>(text);
    let _ = de::<Vec<PositionRisk>>(text);
    let _ = de::<Account>(text);
    let _ = de::<Vec<Balance>>(text);
    let _ = de::<ListenKey>(text);
    let _ = de::<AlgoOrder>(text);
    let _ = de::<Vec<AlgoOrder>>(text);
    let _ = de::<AlgoCancel>(text);
    if let Some(order) = de::<Order>(text) {
        let _ = order.status.is_final();
    }
    if let Some(info) = de::<ExchangeInfo>(text) {
        for symbol in &info.symbols {
            let rules = SymbolRules::from_info(symbol);
            apply_rules(&rules, figures);
        }
    }
    for status in [
        200u16, 400, 401, 403, 404, 408, 418, 429, 500, 502, 503, 504, 0, 999,
    ] {
        for effect in [Effect::Read, Effect::Write] {
            let _ = classify_reply(effect, status, None, text).to_string();
        }
    }
}

/// Every rounding and check of the rules, on every figure.
fn apply_rules(rules: &SymbolRules, figures: &[Decimal]) {
    for &x in figures {
        for kind in [LotKind::Market, LotKind::Limit] {
            if let Ok(q) = rules.round_qty(x, kind) {
                assert!(q > Decimal::ZERO, "{x} rounded to {q}");
            }
        }
        for rounding in [Rounding::Down, Rounding::Up, Rounding::Nearest] {
            if let Ok(p) = rules.round_price(x, rounding) {
                assert!(p > Decimal::ZERO, "{x} rounded to {p}");
            }
        }
        for &y in figures {
            let _ = rules.check_notional(x, y, false);
            let _ = rules.market_qty(x, y, false);
            let _ = rules.check_percent_price(Side::Buy, x, y);
            let _ = rules.check_percent_price(Side::Sell, x, y);
        }
    }
}

fn figure() -> impl Strategy<Value = Decimal> {
    fuzz::number_text().prop_map(|t| {
        t.parse::<Decimal>()
            .or_else(|_| Decimal::from_scientific(&t))
            .unwrap_or(Decimal::MAX)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz::cases(1_500), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_is_a_frame_or_a_reason(text in fuzz::any_text(WIRE_KEYS)) {
        let _ = decode_user_frame(&text);
        let _ = decode_market_frame(&text);
        decode_rest(&text, &[Decimal::ONE]);
    }

    #[test]
    fn a_mutated_stream_frame_is_an_event_or_a_reason(
        text in prop::sample::select(ws_fixtures()).prop_flat_map(|doc| fuzz::mutated_text(doc, WIRE_KEYS)),
    ) {
        let _ = decode_user_frame(&text);
        let _ = decode_market_frame(&text);
    }

    #[test]
    fn a_mutated_rest_reply_is_a_value_or_a_reason(
        text in prop::sample::select(rest_fixtures()).prop_flat_map(|(_, doc)| fuzz::mutated_text(doc, WIRE_KEYS)),
        figures in prop::collection::vec(figure(), 1..4),
    ) {
        decode_rest(&text, &figures);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz::cases(500), failure_persistence: None, ..ProptestConfig::default() })]

    /// exchangeInfo's filters set to every nasty number, one field at a time: the rules made
    /// from them round and check any figure without a panic.
    #[test]
    fn symbol_rules_from_any_filters_round_without_a_panic(
        filter in 0usize..6,
        field in prop::sample::select(&["tickSize", "stepSize", "minQty", "maxQty", "minPrice", "maxPrice", "notional", "multiplierUp", "multiplierDown"][..]),
        number in fuzz::number_text(),
        figures in prop::collection::vec(figure(), 1..5),
    ) {
        let mut info = fuzz::fixture("exchange_info", include_str!("../../../../testdata/binance/rest__exchange_info.json"));
        if let Some(f) = info["symbols"][0]["filters"].get_mut(filter) {
            if f.get(field).is_some() {
                f[field] = Value::String(number);
            }
        }
        decode_rest(&info.to_string(), &figures);
    }
}

// ----- the real client against any reply ----------------------------------------------------

/// One reply of the fake exchange.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

fn reply() -> impl Strategy<Value = Reply> {
    let header = prop_oneof![
        (
            prop::sample::select(
                &[
                    "Retry-After",
                    "X-MBX-USED-WEIGHT-1M",
                    "X-MBX-ORDER-COUNT-10S",
                    "X-MBX-ORDER-COUNT-1M",
                ][..]
            ),
            fuzz::number_text(),
        )
            .prop_map(|(k, v)| (k.to_string(), v)),
        Just(("Content-Type".to_string(), "text/html".to_string())),
    ];
    let body = prop_oneof![
        2 => prop::sample::select(rest_fixtures())
            .prop_flat_map(|(_, doc)| fuzz::mutated_text(doc, WIRE_KEYS)),
        1 => fuzz::any_text(WIRE_KEYS),
        1 => fuzz::number_text().prop_map(|t| format!(r#"{{"serverTime":{t}}}"#)),
    ];
    (
        prop::sample::select(
            &[
                200u16, 200, 200, 400, 401, 404, 408, 418, 429, 500, 503, 504, 302, 204,
            ][..],
        ),
        prop::collection::vec(header, 0..3),
        body,
    )
        .prop_map(|(status, headers, body)| Reply {
            status,
            headers: headers
                .into_iter()
                // Header values must be visible ASCII to be sent at all.
                .filter(|(_, v)| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
                .collect(),
            body,
        })
}

/// A server that answers each request with the next queued reply (a 200 `{}` once they are
/// used up), after reading the request whole.
async fn fake_exchange(replies: Arc<Mutex<VecDeque<Reply>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let replies = Arc::clone(&replies);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then the body by Content-Length.
                let head_end = loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while request.len() < head_end + length {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let reply = replies.lock().unwrap().pop_front().unwrap_or(Reply {
                    status: 200,
                    headers: vec![],
                    body: "{}".into(),
                });
                let mut text = format!(
                    "HTTP/1.1 {} Fuzz\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reply.status,
                    reply.body.len()
                );
                for (k, v) in &reply.headers {
                    text.push_str(&format!("{k}: {v}\r\n"));
                }
                text.push_str("\r\n");
                text.push_str(&reply.body);
                let _ = stream.write_all(text.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// The client's calls, each taking whatever the fake exchange answers.
async fn drive(client: &RestClient, call: u8) {
    match call % 12 {
        0 => drop(client.sync_time().await),
        1 => drop(client.server_time().await),
        2 => drop(client.exchange_info().await),
        3 => drop(client.load_symbol_rules("BTCUSDT").await),
        4 => drop(client.premium_index("BTCUSDT").await),
        5 => drop(client.premium_index_all().await),
        6 => drop(
            client
                .place_order(&NewOrder::market(
                    "BTCUSDT",
                    Side::Buy,
                    Decimal::ONE,
                    "fuzz-1",
                ))
                .await,
        ),
        7 => drop(
            client
                .query_order("BTCUSDT", &OrderRef::ClientOrderId("fuzz-1".into()))
                .await,
        ),
        8 => drop(client.position_risk(None).await),
        9 => drop(client.account().await),
        10 => drop(client.balances().await),
        _ => drop(client.create_listen_key().await),
    }
    let _ = client.server_now_ms();
    let _ = client.weight_usage();
}

fn client_for(base: &str) -> RestClient {
    let mut config = Config::custom(base, "ws://127.0.0.1:9", "key", "secret").expect("valid URLs");
    config.request_timeout = Duration::from_secs(5);
    RestClient::new(config).expect("client builds")
}

/// The replies at the edges, each to every call: a server clock at either end of `i64`, a
/// ban for `u64::MAX` seconds, counts past `u32`. Regression (issue 11, found here): a
/// `serverTime` of `i64::MIN` panicked `sync_time` (`attempt to subtract with overflow`).
#[tokio::test]
async fn the_client_takes_replies_at_the_edges() {
    let replies = Arc::new(Mutex::new(VecDeque::new()));
    let base = fake_exchange(Arc::clone(&replies)).await;
    let edges = [
        (200, vec![], format!(r#"{{"serverTime":{}}}"#, i64::MIN)),
        (200, vec![], format!(r#"{{"serverTime":{}}}"#, i64::MAX)),
        (
            429,
            vec![("Retry-After".to_string(), u64::MAX.to_string())],
            r#"{"code":-1003,"msg":"x"}"#.to_string(),
        ),
        (
            418,
            vec![("Retry-After".to_string(), "0".to_string())],
            String::new(),
        ),
        (
            200,
            vec![("X-MBX-USED-WEIGHT-1M".to_string(), u64::MAX.to_string())],
            "{}".to_string(),
        ),
    ];
    for (status, headers, body) in edges {
        for call in 0..12 {
            let client = client_for(&base);
            {
                let mut queue = replies.lock().unwrap();
                queue.clear();
                for _ in 0..3 {
                    queue.push_back(Reply {
                        status,
                        headers: headers.clone(),
                        body: body.clone(),
                    });
                }
            }
            tokio::time::timeout(Duration::from_secs(10), drive(&client, call))
                .await
                .unwrap_or_else(|_| panic!("call {call} hung on {status} {body}"));
        }
    }
}

/// The real client, every endpoint, against replies of any status, headers and body (a
/// 429/418 with a huge `Retry-After`, a `serverTime` of `i64::MIN`, a body that is half a
/// fixture): every call returns, `Ok` or `Err`, and no task panics.
#[test]
fn the_client_takes_any_reply_without_a_panic() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let replies = Arc::new(Mutex::new(VecDeque::new()));
    let base = runtime.block_on(fake_exchange(Arc::clone(&replies)));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: fuzz::cases(150),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(prop::collection::vec(reply(), 1..4), any::<u8>()),
            |(script, call)| {
                replies.lock().unwrap().clear();
                replies.lock().unwrap().extend(script);
                let client = client_for(&base);
                let outcome = runtime.block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), drive(&client, call)).await
                });
                prop_assert!(outcome.is_ok(), "call {call} hung");
                Ok(())
            },
        )
        .unwrap();
}
