//! Rate-limit headers and the 429 that follows when the weight limit is crossed.

use reqwest::{Method, StatusCode};

use crate::orders::order;
use crate::support;

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
            sim.shutdown().await;
            return;
        }
        assert_eq!(status, StatusCode::OK, "call {call}: {body}");
    }
    panic!("200 calls of weight 30 never crossed 2400 per minute");
}
