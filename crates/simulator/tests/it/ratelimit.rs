//! Rate-limit headers, the 429 that follows when the weight limit is crossed, and the 418 IP ban
//! that follows when a client keeps sending while a 429's `Retry-After` is in force.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::orders::{faults, order};
use crate::support::{self, now_ms, Client};

fn header(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u32> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn every_reply_carries_the_used_weight_and_order_replies_the_order_counts() {
    let (sim, client) = support::start().await;
    let (_, first, _) = client
        .public(Method::GET, "/fapi/v1/exchangeInfo", &[])
        .await;
    let (_, second, _) = client.signed(Method::GET, "/fapi/v2/account", &[]).await;
    let w1 = header(&first, "x-mbx-used-weight-1m").expect("weight header");
    let w2 = header(&second, "x-mbx-used-weight-1m").expect("weight header");
    // Both calls normally land in the same minute; across a minute boundary the count restarts.
    assert!(w2 == w1 + 5 || w2 == 5, "account weighs 5: {w1} then {w2}");
    assert!(header(&second, "x-mbx-order-count-10s").is_none());

    let (status, reply) = order(
        &client,
        &[
            ("symbol", "DOGEUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "100"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (_, headers, _) = client
        .signed(
            Method::POST,
            "/fapi/v1/order",
            &[
                ("symbol", "DOGEUSDT"),
                ("side", "BUY"),
                ("type", "MARKET"),
                ("quantity", "100"),
            ],
        )
        .await;
    let ten = header(&headers, "x-mbx-order-count-10s").expect("10s order count");
    let minute = header(&headers, "x-mbx-order-count-1m").expect("1m order count");
    assert!(
        (1..=2).contains(&ten) && (1..=2).contains(&minute),
        "{ten} {minute}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn crossing_the_weight_limit_gets_429_with_retry_after() {
    let (sim, client) = support::start().await;
    // positionSide/dual weighs 30: 2400 / 30 = 80 calls fill a minute. A minute boundary can
    // reset the count once, so allow enough calls to cross the limit in any case.
    for call in 0..200 {
        let (status, headers, body) = client
            .signed(Method::GET, "/fapi/v1/positionSide/dual", &[])
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["code"], -1003);
            assert!(header(&headers, "retry-after").is_some_and(|s| (1..=60).contains(&s)));
            assert!(header(&headers, "x-mbx-used-weight-1m").unwrap() > 2400);
            // Carrying on through the 429 bans the IP; a minute boundary may let one through.
            past_in_flight_grace().await;
            let mut answers = Vec::new();
            loop {
                let (status, headers, body) = client
                    .signed(Method::GET, "/fapi/v1/positionSide/dual", &[])
                    .await;
                answers.push(status);
                if status == StatusCode::IM_A_TEAPOT {
                    assert_eq!(body["code"], -1003, "{body}");
                    assert_eq!(header(&headers, "retry-after"), Some(120));
                    break;
                }
                assert!(
                    answers.len() < 3,
                    "not banned after {answers:?} during the back-off"
                );
            }
            let counts = requests(&client).await;
            assert!(counts["http_429"].as_u64().unwrap() >= 1, "{counts}");
            assert_eq!(counts["http_418"], 1, "{counts}");
            sim.shutdown().await;
            return;
        }
        assert_eq!(status, StatusCode::OK, "call {call}: {body}");
    }
    panic!("200 calls of weight 30 never crossed 2400 per minute");
}

/// `GET /sim/v1/requests`.
async fn requests(client: &Client) -> Value {
    let (status, counts) = client
        .control(Method::GET, "/sim/v1/requests", json!(null))
        .await;
    assert_eq!(status, StatusCode::OK);
    counts
}

/// Pings until one is refused with 418; returns that reply and how many pings got through first.
async fn ping_until_banned(client: &Client) -> (reqwest::header::HeaderMap, Value, u32) {
    past_in_flight_grace().await;
    let mut through = 0;
    loop {
        let (status, headers, body) = client.public(Method::GET, "/fapi/v1/ping", &[]).await;
        if status == StatusCode::IM_A_TEAPOT {
            return (headers, body, through);
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        through += 1;
        assert!(through < 10, "still not banned after {through} pings");
    }
}

/// Waits until requests no longer count as already in flight when the last 429 went out (they
/// do not count towards a ban), so the next ones are requests that ignore it.
async fn past_in_flight_grace() {
    tokio::time::sleep(simulator::IN_FLIGHT_GRACE + std::time::Duration::from_millis(5)).await;
}

/// The epoch ms in "... banned until <ms>. ...".
fn banned_until(msg: &str) -> i64 {
    let tail = msg
        .split_once("banned until ")
        .unwrap_or_else(|| panic!("no ban time in {msg:?}"))
        .1;
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|e| panic!("{msg:?}: {e}"))
}

#[tokio::test]
async fn ignoring_retry_after_gets_the_ip_banned_with_418_and_bans_double() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"rate_limit_429": 1})).await;
    let (status, _, _) = client.public(Method::GET, "/fapi/v1/ping", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    past_in_flight_grace().await;
    // The IP, not the connection, is what counts: a request from another client is one more.
    let other = reqwest::Client::new()
        .get(format!("{}/fapi/v1/ping", sim.base_url()))
        .send()
        .await
        .expect("a reply");
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "one request during the back-off"
    );
    let (headers, body, through) = ping_until_banned(&client).await;
    assert_eq!(
        through, 1,
        "the third request during the back-off is banned"
    );
    assert_eq!(body["code"], -1003);
    let msg = body["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("Way too many requests; IP(127.0.0.1) banned until ")
            && msg.ends_with(". Please use the websocket for live updates to avoid bans."),
        "{msg}"
    );
    let until = banned_until(msg);
    let left = until - now_ms();
    assert!(
        (110_000..=120_000).contains(&left),
        "two minutes: {left} ms"
    );
    assert_eq!(header(&headers, "retry-after"), Some(120));
    assert!(header(&headers, "x-mbx-used-weight-1m").is_some());

    // Every endpoint is refused while the ban lasts, signed ones too.
    let (status, headers, _) = client.signed(Method::GET, "/fapi/v2/account", &[]).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert!(header(&headers, "retry-after").is_some_and(|s| (110..=120).contains(&s)));
    let counts = requests(&client).await;
    assert_eq!(counts["http_429"], 1, "{counts}");
    assert_eq!(counts["http_418"], 2, "{counts}");
    assert_eq!(counts["banned_until"], until, "{counts}");
    assert_eq!(counts["GET /fapi/v1/ping"], 4, "refused requests count too");
    // Readers that take the reply as a map of counts still can.
    let as_map: BTreeMap<String, u64> = serde_json::from_value(counts).expect("all numbers");
    assert_eq!(as_map["GET /fapi/v2/account"], 1);

    faults(&client, json!({"lift_ban": true})).await;
    assert_eq!(
        client.public(Method::GET, "/fapi/v1/ping", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(requests(&client).await["banned_until"], Value::Null);

    // A repeat offence is banned twice as long; reset forgets the offences.
    faults(&client, json!({"rate_limit_429": 1})).await;
    client.public(Method::GET, "/fapi/v1/ping", &[]).await;
    let (headers, _, _) = ping_until_banned(&client).await;
    assert_eq!(header(&headers, "retry-after"), Some(240));
    faults(&client, json!({"reset": true, "rate_limit_429": 1})).await;
    client.public(Method::GET, "/fapi/v1/ping", &[]).await;
    let (headers, _, _) = ping_until_banned(&client).await;
    assert_eq!(header(&headers, "retry-after"), Some(120));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_client_that_waits_out_retry_after_is_never_banned() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"rate_limit_429": 3})).await;
    let mut refused = 0;
    loop {
        let (status, headers, _) = client.public(Method::GET, "/fapi/v1/ping", &[]).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        refused += 1;
        // Honouring Retry-After is the behaviour under test, so this sleep is the client's.
        let wait = header(&headers, "retry-after").expect("Retry-After on every 429");
        tokio::time::sleep(Duration::from_secs(wait.into())).await;
    }
    assert_eq!(refused, 3);
    let counts = requests(&client).await;
    assert_eq!(
        (&counts["http_429"], &counts["http_418"]),
        (&json!(3), &json!(0))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn order_counts_are_the_accounts_and_skip_requests_it_did_not_sign() {
    let (sim, client) = support::start().await;
    let buy = [
        ("symbol", "DOGEUSDT"),
        ("side", "BUY"),
        ("type", "MARKET"),
        ("quantity", "100"),
    ];
    let (status, headers, body) = client.signed(Method::POST, "/fapi/v1/order", &buy).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = header(&headers, "x-mbx-order-count-1m").expect("order count");
    // A badly signed order is refused before it reaches an account: weighed, but not counted.
    let forged = reqwest::Client::new()
        .post(format!("{}/fapi/v1/order", sim.base_url()))
        .header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "symbol=DOGEUSDT&side=BUY&type=MARKET&quantity=100&timestamp={}&signature=00",
            now_ms()
        ))
        .send()
        .await
        .expect("a reply");
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    assert!(header(forged.headers(), "x-mbx-used-weight-1m").is_some());
    assert!(header(forged.headers(), "x-mbx-order-count-1m").is_none());
    let (_, headers, _) = client.signed(Method::POST, "/fapi/v1/order", &buy).await;
    let second = header(&headers, "x-mbx-order-count-1m").expect("order count");
    // Both orders normally land in the same minute; across a boundary the count restarts.
    assert!(second == first + 1 || second == 1, "{first} then {second}");
    sim.shutdown().await;
}
