//! Fuzzing of the simulator's request surface (issue 11): the parameter parser, every REST
//! endpoint with random and signed parameters (numbers at and past every limit, garbage, unicode),
//! and the control API (`POST /sim/v1/faults`, `POST /sim/v1/price` with `Decimal::MAX` and the
//! like) followed by requests that use what was set. Most cases go through the router in
//! process (`simulator::fuzzing::Harness`, where a panic fails the test at once); a shorter run
//! goes through the real server on port 0. The property: every request gets an HTTP reply,
//! never a dropped connection or a 500 from a panic; every error reply is Binance's
//! `{"code":..,"msg":..}`. `cargo fuzz run sim_params` (in `fuzz/`) runs the same for longer.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use simulator::fuzzing::{parse_params, Harness, Reply};
use simulator::SimConfig;
use testkit::fuzz;

/// Every route of the simulator's REST table, and a few it does not have.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/fapi/v1/ping"),
    ("GET", "/fapi/v1/time"),
    ("GET", "/fapi/v1/ticker/24hr"),
    ("GET", "/fapi/v1/klines"),
    ("GET", "/fapi/v1/leverageBracket"),
    ("GET", "/fapi/v1/exchangeInfo"),
    ("GET", "/fapi/v1/premiumIndex"),
    ("GET", "/fapi/v2/ticker/price"),
    ("GET", "/fapi/v1/ticker/bookTicker"),
    ("GET", "/fapi/v1/depth"),
    ("POST", "/fapi/v1/order"),
    ("POST", "/fapi/v1/order"),
    ("POST", "/fapi/v1/order"),
    ("GET", "/fapi/v1/order"),
    ("DELETE", "/fapi/v1/order"),
    ("GET", "/fapi/v1/allOrders"),
    ("GET", "/fapi/v1/openOrders"),
    ("GET", "/fapi/v1/openOrder"),
    ("DELETE", "/fapi/v1/allOpenOrders"),
    ("GET", "/fapi/v1/userTrades"),
    ("POST", "/fapi/v1/leverage"),
    ("POST", "/fapi/v1/marginType"),
    ("GET", "/fapi/v1/positionSide/dual"),
    ("POST", "/fapi/v1/positionSide/dual"),
    ("GET", "/fapi/v3/positionRisk"),
    ("GET", "/fapi/v3/account"),
    ("GET", "/fapi/v3/balance"),
    ("POST", "/fapi/v1/countdownCancelAll"),
    ("POST", "/fapi/v1/algoOrder"),
    ("POST", "/fapi/v1/algoOrder"),
    ("GET", "/fapi/v1/algoOrder"),
    ("DELETE", "/fapi/v1/algoOrder"),
    ("DELETE", "/fapi/v1/algoOpenOrders"),
    ("GET", "/fapi/v1/openAlgoOrders"),
    ("GET", "/fapi/v1/allAlgoOrders"),
    ("POST", "/fapi/v1/listenKey"),
    ("PUT", "/fapi/v1/listenKey"),
    ("DELETE", "/fapi/v1/listenKey"),
    ("GET", "/fapi/v1/income"),
    ("GET", "/fapi/v1/forceOrders"),
    ("GET", "/fapi/v1/multiAssetsMargin"),
    ("GET", "/fapi/v1/rateLimit/order"),
    ("GET", "/fapi/v1/trades"),
    ("GET", "/fapi/v1/historicalTrades"),
    ("GET", "/fapi/v1/aggTrades"),
    ("GET", "/fapi/v1/markPriceKlines"),
    ("GET", "/fapi/v1/continuousKlines"),
    ("GET", "/fapi/v1/openInterest"),
    ("PUT", "/fapi/v1/order"),
    ("POST", "/fapi/v1/order/test"),
    ("GET", "/fapi/v1/orderAmendment"),
    ("POST", "/fapi/v1/batchOrders"),
    ("PUT", "/fapi/v1/batchOrders"),
    ("DELETE", "/fapi/v1/batchOrders"),
    ("PATCH", "/fapi/v1/order"),
    ("GET", "/sim/v1/price"),
    ("DELETE", "/sim/v1/faults"),
    ("POST6666", "/sim/v1/requests"),
    ("GET", "/fapi/v9/nothing"),
];

const PARAM_KEYS: &[&str] = &[
    "symbol",
    "side",
    "type",
    "quantity",
    "price",
    "timeInForce",
    "reduceOnly",
    "newClientOrderId",
    "newOrderRespType",
    "orderId",
    "origClientOrderId",
    "limit",
    "leverage",
    "marginType",
    "dualSidePosition",
    "positionSide",
    "closePosition",
    "goodTillDate",
    "triggerPrice",
    "algoType",
    "algoId",
    "clientAlgoId",
    "workingType",
    "priceProtect",
    "activatePrice",
    "callbackRate",
    "startTime",
    "endTime",
    "fromId",
    "countdownTime",
    "listenKey",
    "interval",
    "recvWindow",
    "incomeType",
    "autoCloseType",
    "pair",
    "contractType",
    "batchOrders",
    "orderIdList",
    "origClientOrderIdList",
];

/// A value for `key`: mostly one the endpoint accepts (so requests get past the first check),
/// else a number at an edge or a nasty string.
fn param_value(key: &'static str) -> BoxedStrategy<String> {
    let fitting: BoxedStrategy<String> = match key {
        "symbol" => prop::sample::select(&["BTCUSDT", "ethusdt", "SOLUSDT", "AXSUSDT", "NOPE"][..])
            .prop_map(str::to_string)
            .boxed(),
        "side" => prop::sample::select(&["BUY", "SELL"][..])
            .prop_map(str::to_string)
            .boxed(),
        "type" => prop::sample::select(
            &[
                "MARKET",
                "MARKET",
                "MARKET",
                "LIMIT",
                "LIMIT",
                "STOP_MARKET",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
                "STOP",
            ][..],
        )
        .prop_map(str::to_string)
        .boxed(),
        "timeInForce" => prop::sample::select(&["GTC", "IOC", "FOK", "GTX", "GTD"][..])
            .prop_map(str::to_string)
            .boxed(),
        "newOrderRespType" => prop::sample::select(&["ACK", "RESULT"][..])
            .prop_map(str::to_string)
            .boxed(),
        "positionSide" => prop::sample::select(&["BOTH", "LONG", "SHORT"][..])
            .prop_map(str::to_string)
            .boxed(),
        "marginType" => prop::sample::select(&["ISOLATED", "CROSSED"][..])
            .prop_map(str::to_string)
            .boxed(),
        "algoType" => Just("CONDITIONAL".to_string()).boxed(),
        "workingType" => prop::sample::select(&["MARK_PRICE", "CONTRACT_PRICE"][..])
            .prop_map(str::to_string)
            .boxed(),
        "interval" => prop::sample::select(&["1m", "5m", "1h", "1d", "7x"][..])
            .prop_map(str::to_string)
            .boxed(),
        "reduceOnly" | "closePosition" | "priceProtect" | "dualSidePosition" => {
            prop::sample::select(&["true", "false", "TRUE"][..])
                .prop_map(str::to_string)
                .boxed()
        }
        "quantity" => prop::sample::select(&["0.001", "0.01", "1", "3"][..])
            .prop_map(str::to_string)
            .boxed(),
        "price" | "triggerPrice" | "activatePrice" => {
            prop::sample::select(&["95000", "3400.5", "180", "6.25"][..])
                .prop_map(str::to_string)
                .boxed()
        }
        "leverage" => (1u32..=125).prop_map(|l| l.to_string()).boxed(),
        "limit" => prop::sample::select(&["5", "10", "100", "500", "1000", "1500"][..])
            .prop_map(str::to_string)
            .boxed(),
        "callbackRate" => prop::sample::select(&["0.1", "1", "5", "10"][..])
            .prop_map(str::to_string)
            .boxed(),
        "recvWindow" => (1u64..=60_000).prop_map(|n| n.to_string()).boxed(),
        // Batches: lists of orders as clients send them (strings, numbers), of 0 to 7 elements,
        // and lists of ids; other values come from the nasty-text strategies below.
        "batchOrders" => prop::collection::vec(
            prop::sample::select(
                &[
                    r#"{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","timeInForce":"GTC","quantity":"0.01","price":"95000"}"#,
                    r#"{"symbol":"ETHUSDT","side":"SELL","type":"MARKET","quantity":1}"#,
                    r#"{"symbol":"BTCUSDT","orderId":5000000001,"side":"BUY","quantity":"0.02","price":"94000"}"#,
                    r#"{"symbol":{"nested":true}}"#,
                    r#"null"#,
                ][..],
            ),
            0..7,
        )
        .prop_map(|elements| format!("[{}]", elements.join(",")))
        .boxed(),
        "orderIdList" => prop::collection::vec(5_000_000_000i64..5_000_000_020, 0..12)
            .prop_map(|ids| format!("{ids:?}").replace(' ', ""))
            .boxed(),
        "origClientOrderIdList" => prop::sample::select(&[r#"["a","b"]"#, "[]", r#"[1]"#][..])
            .prop_map(str::to_string)
            .boxed(),
        "countdownTime" => prop::sample::select(&["0", "1000", "120000"][..])
            .prop_map(str::to_string)
            .boxed(),
        _ => (0u64..5_000_000_000_000)
            .prop_map(|n| n.to_string())
            .boxed(),
    };
    prop_oneof![
        10 => fitting,
        1 => fuzz::number_text(),
        1 => fuzz::nasty_string(),
    ]
    .boxed()
}

/// The parameters an endpoint needs, so most requests get past "mandatory parameter" to the
/// exchange's own checks (each value may still be replaced by a nasty one).
fn template(method: &str, path: &str) -> &'static [&'static str] {
    match (method, path) {
        ("POST", "/fapi/v1/order") => &[
            "symbol",
            "side",
            "type",
            "quantity",
            "price",
            "timeInForce",
            "newOrderRespType",
        ],
        ("POST", "/fapi/v1/order/test") => {
            &["symbol", "side", "type", "quantity", "price", "timeInForce"]
        }
        ("PUT", "/fapi/v1/order") => &["symbol", "orderId", "side", "quantity", "price"],
        (_, "/fapi/v1/orderAmendment") => &["symbol", "orderId", "limit"],
        ("DELETE", "/fapi/v1/batchOrders") => &["symbol", "orderIdList", "origClientOrderIdList"],
        (_, "/fapi/v1/batchOrders") => &["batchOrders"],
        (_, "/fapi/v1/order" | "/fapi/v1/openOrder") => &["symbol", "orderId", "origClientOrderId"],
        ("POST", "/fapi/v1/algoOrder") => &[
            "algoType",
            "symbol",
            "side",
            "type",
            "quantity",
            "triggerPrice",
            "closePosition",
            "callbackRate",
        ],
        (_, "/fapi/v1/algoOrder") => &["algoId", "clientAlgoId"],
        (_, "/fapi/v1/leverage") => &["symbol", "leverage"],
        (_, "/fapi/v1/marginType") => &["symbol", "marginType"],
        ("POST", "/fapi/v1/positionSide/dual") => &["dualSidePosition"],
        (_, "/fapi/v1/countdownCancelAll") => &["symbol", "countdownTime"],
        (_, "/fapi/v1/depth") => &["symbol", "limit"],
        (_, "/fapi/v1/klines") => &["symbol", "interval", "limit"],
        (_, "/fapi/v1/listenKey") => &["listenKey"],
        _ => &["symbol"],
    }
}

fn pair(key: &'static str) -> impl Strategy<Value = (String, String)> {
    param_value(key).prop_map(move |v| (key.to_string(), v))
}

/// The endpoint's own parameters, each present with a good chance, and a few others.
fn params(
    method: &'static str,
    path: &'static str,
) -> impl Strategy<Value = Vec<(String, String)>> {
    let own: Vec<_> = template(method, path)
        .iter()
        .map(|k| {
            // Parameters only some variants take (a LIMIT's price, a trailing stop's
            // callback) are there less often, so the other variants get through too.
            let optional = matches!(
                *k,
                "price"
                    | "timeInForce"
                    | "origClientOrderId"
                    | "callbackRate"
                    | "closePosition"
                    | "newOrderRespType"
            );
            prop::option::weighted(if optional { 0.4 } else { 0.9 }, pair(k))
        })
        .collect();
    let extra = prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(PARAM_KEYS).prop_flat_map(pair),
            1 => (fuzz::nasty_string(), fuzz::nasty_string()),
        ],
        0..3,
    );
    (own, extra).prop_map(|(own, extra)| own.into_iter().flatten().chain(extra).collect())
}

fn encode(pairs: &[(String, String)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        form.append_pair(k, v);
    }
    form.finish()
}

/// One REST request as the fuzzer draws it.
#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    path: &'static str,
    query: String,
    body: String,
    with_key: bool,
    signed: bool,
}

fn call() -> impl Strategy<Value = Call> {
    prop::sample::select(ENDPOINTS)
        .prop_flat_map(|(method, path)| {
            (
                Just((method, path)),
                params(method, path),
                any::<bool>(),
                prop_oneof![
                    14 => Just(None),
                    1 => "[%&=a-zA-Z0-9+ ]{0,60}".prop_map(Some),
                    1 => any::<String>().prop_map(Some),
                ],
                prop::bool::weighted(0.9),
                prop::bool::weighted(0.85),
            )
        })
        .prop_map(
            |((method, path), params, in_body, raw_query, with_key, signed)| {
                // The parameters go in the query or (not for a GET) the form body.
                let encoded = encode(&params);
                let (query, body) = if in_body && method != "GET" {
                    (String::new(), encoded)
                } else {
                    (encoded, String::new())
                };
                Call {
                    method,
                    path,
                    query: raw_query.unwrap_or(query),
                    body,
                    with_key,
                    signed,
                }
            },
        )
}

/// A valid order (MARKET, LIMIT, or a conditional on the algo endpoint) with at most one value
/// replaced by a nasty one: each number reaches the exchange's own arithmetic.
fn order_call() -> impl Strategy<Value = Call> {
    let valid = prop_oneof![
        Just(("/fapi/v1/order", "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.1&newOrderRespType=RESULT")),
        Just(("/fapi/v1/order", "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.002")),
        Just(("/fapi/v1/order", "symbol=SOLUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=150")),
        Just(("/fapi/v1/order", "symbol=DOGEUSDT&side=SELL&type=LIMIT&timeInForce=GTD&quantity=100&price=0.4&goodTillDate=4102444800000")),
        Just(("/fapi/v1/order", "symbol=ETHUSDT&side=SELL&type=MARKET&quantity=0.1&reduceOnly=true")),
        Just(("/fapi/v1/algoOrder", "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&triggerPrice=1000&closePosition=true")),
        Just(("/fapi/v1/algoOrder", "algoType=CONDITIONAL&symbol=ETHUSDT&side=SELL&type=TRAILING_STOP_MARKET&quantity=0.1&callbackRate=1&activatePrice=3500")),
        Just(("/fapi/v1/leverage", "symbol=BTCUSDT&leverage=20")),
        Just(("/fapi/v1/countdownCancelAll", "symbol=BTCUSDT&countdownTime=1000")),
    ];
    (
        valid,
        any::<usize>(),
        prop_oneof![
            1 => Just(None),
            3 => fuzz::number_text().prop_map(Some),
            1 => fuzz::nasty_string().prop_map(Some),
        ],
    )
        .prop_map(|((path, query), at, value)| {
            let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if let Some(value) = value {
                let i = at % pairs.len();
                pairs[i].1 = value;
            }
            Call {
                method: "POST",
                path,
                query: encode(&pairs),
                body: String::new(),
                with_key: true,
                signed: true,
            }
        })
}

impl Call {
    /// The path and query to send, signed when asked.
    fn target(&self, harness: &Harness) -> String {
        // A raw query may hold what a URI cannot; send it percent-encoded as a client would.
        let query: String = self
            .query
            .chars()
            .flat_map(|c| {
                if c.is_ascii_graphic() && c != '#' {
                    vec![c.to_string()]
                } else {
                    c.to_string()
                        .bytes()
                        .map(|b| format!("%{b:02X}"))
                        .collect::<Vec<_>>()
                }
            })
            .collect();
        let query = if self.signed {
            harness.sign(&query, &self.body)
        } else {
            query
        };
        if query.is_empty() {
            self.path.to_string()
        } else {
            format!("{}?{query}", self.path)
        }
    }
}

/// The start of a long text, for failure messages.
fn short(text: &str) -> String {
    match text.char_indices().nth(400) {
        Some((i, _)) => format!("{}… ({} bytes)", &text[..i], text.len()),
        None => text.to_string(),
    }
}

/// Every reply must be an HTTP reply; an error must be Binance's error JSON; nothing is a 500.
fn check(what: &str, reply: &Reply) -> Result<(), TestCaseError> {
    let Some((status, body)) = reply else {
        return Err(TestCaseError::fail(format!(
            "{what}: connection dropped, no reply"
        )));
    };
    prop_assert!(*status != 500, "{what}: HTTP 500");
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        TestCaseError::fail(format!(
            "{what}: HTTP {status} with a non-JSON body ({e}): {}",
            short(&String::from_utf8_lossy(body))
        ))
    })?;
    if *status >= 400 {
        prop_assert!(
            value["code"].is_i64() && value["msg"].is_string(),
            "{what}: HTTP {status} without Binance's error JSON: {value}"
        );
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The simulator the fuzz tests talk to: fills at once, `RESULT` replies within 200 ms, and no
/// weight limit (thousands of requests a minute would otherwise end in a ban, and every later
/// request would stop at the ban).
fn config() -> SimConfig {
    SimConfig {
        fill_delay: Duration::ZERO,
        result_wait: Duration::from_millis(200),
        enforce_rate_limits: false,
        ..SimConfig::default()
    }
}

fn harness() -> Harness {
    Harness::new(config()).unwrap()
}

/// How long one request may take; a `RESULT` order waits at most the configured 200 ms (or
/// what a fuzzed `result_wait_ms` says, which the control-API test allows for).
const REPLY_WITHIN: Duration = Duration::from_secs(3);

proptest! {
    #![proptest_config(Config { cases: fuzz::cases(3_000), failure_persistence: None, ..Config::default() })]

    #[test]
    fn any_query_and_body_parse(query in fuzz::any_text(PARAM_KEYS), body in fuzz::any_text(PARAM_KEYS)) {
        parse_params(&query, &body);
        parse_params(&body, &query);
    }
}

/// Random requests to every endpoint, most of them signed, through the router in process.
#[test]
fn any_request_gets_a_reply() {
    let rt = runtime();
    let sim = harness();
    let mut runner = TestRunner::new(Config {
        cases: fuzz::cases(1_500),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop_oneof![call(), order_call()], |call| {
            let target = call.target(&sim);
            let reply = rt.block_on(async {
                tokio::time::timeout(
                    REPLY_WITHIN,
                    sim.request(call.method, &target, call.with_key, call.body.as_bytes()),
                )
                .await
            });
            let what = short(&format!("{} {target} body {:?}", call.method, call.body));
            let reply =
                reply.map_err(|_| TestCaseError::fail(format!("{what}: no reply in time")))?;
            match reply {
                Ok(reply) => check(&what, &reply),
                // Not a request any client could send (a URI past the HTTP library's limit).
                Err(_) => Ok(()),
            }
        })
        .unwrap();
    rt.block_on(sim.shutdown());
}

/// A `POST /sim/v1/faults` body: any knob at any value (an edge of its type, the wrong type,
/// a nasty string), except the two that drop connections on purpose.
fn faults_body() -> impl Strategy<Value = Value> {
    let knob = prop::sample::select(
        &[
            "fill_delay_ms",
            "never_fill",
            "partial_fills",
            "result_wait_ms",
            "unknown_status_503",
            "unknown_status_503_not_executed",
            "rate_limit_429",
            "cancel_429",
            "query_429",
            "retry_after_s",
            "reject_orders",
            "clock_skew_ms",
            "book_level_notional",
            "disconnect_user_streams",
            "expire_listen_keys",
            "lift_ban",
            "reset",
            "unknown_knob",
        ][..],
    );
    let value = prop_oneof![
        4 => prop::sample::select(vec![
            json!(0), json!(1), json!(2), json!(50), json!(-1), json!(u32::MAX), json!(u64::MAX),
            json!(i64::MAX), json!(i64::MIN), json!(true), json!(false), json!(null),
            json!("79228162514264337593543950335"), json!("-79228162514264337593543950335"),
            json!("0.0000000000000000000000000001"), json!("0"), json!("-5"), json!("1000"),
            json!({"code": -2019, "count": 1}), json!({"code": i64::MIN, "count": u32::MAX}),
            json!({"code": 0, "count": 0}),
        ]),
        1 => fuzz::leaf(),
    ];
    prop::collection::vec((knob, value), 0..4).prop_map(|pairs| {
        Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    })
}

/// A `POST /sim/v1/price` body: a symbol and a price at any edge, or a release.
fn price_body() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["BTCUSDT", "ethusdt", "SOLUSDT", "NOPE", ""][..]),
        prop_oneof![
            4 => prop::sample::select(vec![
                "79228162514264337593543950335", "7922816251426433759354395033.5", "1e28",
                "100000000000000000000000000", "0.0000000000000000000000000001", "0.00000001",
                "1", "95000", "0", "-1", "NaN",
            ]).prop_map(|p| json!(p)),
            1 => fuzz::number_text().prop_map(|p| json!(p)),
            1 => fuzz::leaf(),
        ],
        any::<bool>(),
    )
        .prop_map(|(symbol, price, release)| {
            if release {
                json!({"symbol": symbol, "release": true})
            } else {
                json!({"symbol": symbol, "price": price})
            }
        })
}

/// What a client does after a control call: read the market, place and cancel orders, read
/// the account. Signed where the endpoint needs it.
const PROBES: &[(&str, &str, &str)] = &[
    ("GET", "/fapi/v1/depth", "symbol=BTCUSDT&limit=1000"),
    ("GET", "/fapi/v1/ticker/bookTicker", ""),
    ("GET", "/fapi/v1/premiumIndex", ""),
    ("GET", "/fapi/v2/ticker/price", ""),
    ("GET", "/fapi/v1/ticker/24hr", ""),
    ("GET", "/fapi/v1/klines", "symbol=BTCUSDT&interval=1m"),
    ("GET", "/fapi/v1/exchangeInfo", ""),
    ("POST", "/fapi/v1/order", "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.002&newOrderRespType=RESULT"),
    ("POST", "/fapi/v1/order", "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.001"),
    ("POST", "/fapi/v1/order", "symbol=ETHUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=3000"),
    ("POST", "/fapi/v1/algoOrder", "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&triggerPrice=1000&closePosition=true"),
    ("GET", "/fapi/v3/positionRisk", ""),
    ("GET", "/fapi/v3/account", ""),
    ("GET", "/fapi/v1/userTrades", "symbol=BTCUSDT"),
    ("DELETE", "/fapi/v1/allOpenOrders", "symbol=ETHUSDT"),
    ("DELETE", "/fapi/v1/algoOpenOrders", "symbol=BTCUSDT"),
    ("POST", "/fapi/v1/listenKey", ""),
    ("GET", "/sim/v1/requests", ""),
    ("GET", "/sim/v1/faults", ""),
];

/// Sends the probes; a probe that does not answer in time is a failure unless it is an order
/// waiting for a `RESULT` the fuzzed `result_wait_ms` allows to be long.
async fn probe(sim: &Harness, controls: &str) -> Result<(), TestCaseError> {
    let faults = match sim.request("GET", "/sim/v1/faults", false, b"").await {
        Ok(Some((200, body))) => serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
        other => {
            return Err(TestCaseError::fail(format!(
                "{controls}: GET /sim/v1/faults: {other:?}"
            )))
        }
    };
    let long_result_wait = faults["result_wait_ms"]
        .as_u64()
        .is_none_or(|ms| ms >= 2_000);
    for (method, path, query) in PROBES {
        let signed = !path.starts_with("/sim/")
            && (*method != "GET"
                || path.contains("position")
                || path.contains("account")
                || path.contains("userTrades"));
        let query = if signed {
            sim.sign(query, "")
        } else {
            query.to_string()
        };
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let what = short(&format!("after {controls}: {method} {target}"));
        let reply =
            tokio::time::timeout(REPLY_WITHIN, sim.request(method, &target, true, b"")).await;
        match reply {
            Ok(Ok(reply)) => check(&what, &reply)?,
            Ok(Err(e)) => return Err(TestCaseError::fail(format!("{what}: {e}"))),
            Err(_) if query.contains("RESULT") && long_result_wait => {}
            Err(_) => return Err(TestCaseError::fail(format!("{what}: no reply in time"))),
        }
    }
    Ok(())
}

/// The control API given any body, then used: every control call and every request after it
/// gets a reply (a refused body a 400 with Binance's error JSON), through the router in process.
#[test]
fn the_control_api_takes_any_body_and_the_exchange_goes_on() {
    let rt = runtime();
    let mut runner = TestRunner::new(Config {
        cases: fuzz::cases(250),
        failure_persistence: None,
        ..Config::default()
    });
    let control = prop::collection::vec(
        prop_oneof![
            faults_body().prop_map(|b| ("/sim/v1/faults", b.to_string())),
            price_body().prop_map(|b| ("/sim/v1/price", b.to_string())),
            fuzz::any_text(&[
                "symbol",
                "price",
                "release",
                "fill_delay_ms",
                "clock_skew_ms"
            ])
            .prop_map(|t| ("/sim/v1/faults", t)),
        ],
        1..4,
    );
    runner
        .run(&control, |calls| {
            rt.block_on(async {
                let sim = harness();
                let controls = short(&format!("{calls:?}"));
                for (path, body) in &calls {
                    let reply = sim.request("POST", path, false, body.as_bytes()).await;
                    let what = short(&format!("POST {path} {body}"));
                    let reply = reply.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
                    check(&what, &reply)?;
                    if let Some((status, _)) = &reply {
                        prop_assert!(*status == 200 || *status == 400, "{what}: HTTP {status}");
                    }
                }
                let outcome = probe(&sim, &controls).await;
                sim.shutdown().await;
                outcome
            })
        })
        .unwrap();
}

/// Regression (issue 11, found by the `sim_params` fuzz target): a control-API path called
/// with a method it does not take got axum's 405 with an empty body; now Binance's 404 JSON.
#[test]
fn a_control_path_with_a_wrong_method_gets_binance_json() {
    let rt = runtime();
    rt.block_on(async {
        let sim = harness();
        for (method, path) in [
            ("POST6666", "/sim/v1/price"),
            ("GET", "/sim/v1/price"),
            ("PUT", "/sim/v1/faults"),
        ] {
            let reply = sim.request(method, path, false, b"{}").await.unwrap();
            let (status, body) = reply.expect("a reply");
            assert_eq!(status, 404);
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["code"], -5000, "{value}");
        }
        sim.shutdown().await;
    });
}

/// Regression (issue 11): `POST /sim/v1/price` with `Decimal::MAX` panicked the request task
/// (`Division overflowed` rounding it to the tick; then the book around it), so the client saw
/// a dropped connection; every later book read panicked too. Now the price is refused with a
/// 400 and Binance's error JSON, and the exchange goes on at its old price.
#[test]
fn a_price_of_decimal_max_is_refused_and_the_exchange_goes_on() {
    let rt = runtime();
    rt.block_on(async {
        let sim = harness();
        for price in [
            "79228162514264337593543950335",
            "1e28",
            "100000000000000000000000000",
        ] {
            let body = json!({"symbol": "BTCUSDT", "price": price}).to_string();
            let reply = sim
                .request("POST", "/sim/v1/price", false, body.as_bytes())
                .await
                .unwrap();
            let (status, body) = reply.expect("a reply, not a dropped connection");
            assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["code"], -1102, "{value}");
        }
        probe(&sim, "Decimal::MAX").await.unwrap();
        sim.shutdown().await;
    });
}

/// The same over a socket, shorter: the real server on port 0 answers random requests and
/// control calls with HTTP replies, never a dropped connection or a 500.
#[test]
fn the_real_server_answers_every_fuzzed_request() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(simulator::spawn(config()))
        .expect("simulator starts");
    // Signs like the in-process harness: the same key, secret and clock.
    let signer = harness();
    // A fresh connection per request: a pooled keep-alive connection that the server closed
    // after an earlier case (a dropped-reply fault, a timed-out RESULT order) races the next
    // send and fails it with "error sending request" although this request was never served.
    let http = reqwest::Client::builder()
        .timeout(REPLY_WITHIN)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let base = server.base_url();
    let mut runner = TestRunner::new(Config {
        cases: fuzz::cases(200),
        failure_persistence: None,
        ..Config::default()
    });
    let step = prop_oneof![
        2 => call().prop_map(Ok),
        2 => order_call().prop_map(Ok),
        1 => faults_body().prop_map(|b| Err(("/sim/v1/faults", b.to_string()))),
        1 => price_body().prop_map(|b| Err(("/sim/v1/price", b.to_string()))),
    ];
    runner
        .run(&step, |step| {
            rt.block_on(async {
                let (method, target, with_key, body) = match &step {
                    Ok(call) => (
                        call.method,
                        call.target(&signer),
                        call.with_key,
                        call.body.clone(),
                    ),
                    Err((path, body)) => ("POST", path.to_string(), false, body.clone()),
                };
                let what = short(&format!("{method} {target} body {body:?}"));
                let mut request = http
                    .request(method.parse().unwrap(), format!("{base}{target}"))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone());
                if with_key {
                    request = request.header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY);
                }
                let reply = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body = response
                            .bytes()
                            .await
                            .map_err(|e| TestCaseError::fail(format!("{what}: body cut ({e})")))?;
                        Some((status, body.to_vec()))
                    }
                    Err(e) if e.is_timeout() && target.contains("RESULT") => return Ok(()),
                    // Not a request the client can send (a URL past its limit).
                    Err(e) if e.is_builder() => return Ok(()),
                    Err(e) => return Err(TestCaseError::fail(format!("{what}: no reply ({e})"))),
                };
                check(&what, &reply)?;
                // Keep the next request's chances: no knob stays on, no ban lasts.
                if step.is_err() {
                    let reset = http
                        .post(format!("{base}/sim/v1/faults"))
                        .body(r#"{"reset":true}"#)
                        .send()
                        .await
                        .map_err(|e| TestCaseError::fail(format!("reset after {what}: {e}")))?;
                    if !reset.status().is_success() {
                        return Err(TestCaseError::fail(format!(
                            "reset after {what}: HTTP {}",
                            reset.status()
                        )));
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(async {
        server.shutdown().await;
        signer.shutdown().await;
    });
}
