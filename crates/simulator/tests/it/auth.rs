//! Binance's request security, checked with hand-built requests: the API key header, the
//! HMAC-SHA256 signature over query string + body, and the timestamp / recvWindow rules.

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::orders::faults;
use crate::support::{self, now_ms};

fn sign(secret: &str, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// GET /fapi/v2/balance with the given key, query (signed with `secret`) and timestamp.
async fn balance(
    base: &str,
    key: Option<&str>,
    secret: &str,
    timestamp: i64,
    recv_window: Option<i64>,
) -> (StatusCode, Value) {
    let mut query = format!("timestamp={timestamp}");
    if let Some(w) = recv_window {
        query.push_str(&format!("&recvWindow={w}"));
    }
    let url = format!(
        "{base}/fapi/v2/balance?{query}&signature={}",
        sign(secret, &query)
    );
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = key {
        request = request.header("X-MBX-APIKEY", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

const KEY: &str = simulator::DEFAULT_API_KEY;
const SECRET: &str = simulator::DEFAULT_API_SECRET;

#[tokio::test]
async fn a_correctly_signed_request_is_accepted() {
    let (sim, _) = support::start().await;
    let (status, body) = balance(&sim.base_url(), Some(KEY), SECRET, now_ms(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body[0]["asset"], "USDT");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_signature_made_with_another_secret_gets_1022() {
    let (sim, _) = support::start().await;
    let (status, body) =
        balance(&sim.base_url(), Some(KEY), "not-the-secret", now_ms(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"code": -1022, "msg": "Signature for this request is not valid."})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_key_gets_2015_and_a_missing_key_2014() {
    let (sim, _) = support::start().await;
    let (status, body) = balance(
        &sim.base_url(),
        Some("someone-else"),
        SECRET,
        now_ms(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], -2015);
    let (status, body) = balance(&sim.base_url(), None, SECRET, now_ms(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], -2014);
    sim.shutdown().await;
}

#[tokio::test]
async fn timestamps_outside_the_window_get_1021() {
    let (sim, _) = support::start().await;
    let base = sim.base_url();
    let (_, body) = balance(&base, Some(KEY), SECRET, now_ms() - 6_000, None).await;
    assert_eq!(
        body["code"], -1021,
        "older than the default 5000 ms window: {body}"
    );
    let (status, _) = balance(&base, Some(KEY), SECRET, now_ms() - 6_000, Some(10_000)).await;
    assert_eq!(status, StatusCode::OK, "a wider recvWindow accepts it");
    let (_, body) = balance(&base, Some(KEY), SECRET, now_ms() + 2_000, None).await;
    assert_eq!(
        body["code"], -1021,
        "more than 1000 ms ahead of the server: {body}"
    );
    let (_, body) = balance(&base, Some(KEY), SECRET, now_ms(), Some(70_000)).await;
    assert_eq!(body["code"], -1131, "recvWindow above 60000: {body}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_skewed_server_clock_makes_local_timestamps_fail_until_the_client_resyncs() {
    let (sim, client) = support::start().await;
    faults(&client, json!({"clock_skew_ms": -10_000})).await;
    let base = sim.base_url();
    let (_, body) = balance(&base, Some(KEY), SECRET, now_ms(), None).await;
    assert_eq!(body["code"], -1021, "{body}");
    let (_, _, time) = client
        .public(reqwest::Method::GET, "/fapi/v1/time", &[])
        .await;
    let server = time["serverTime"].as_i64().unwrap();
    assert!(
        (now_ms() - 10_000 - server).abs() < 1_000,
        "serverTime shows the skew"
    );
    let (status, _) = balance(&base, Some(KEY), SECRET, server, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "signing with the server's time works"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_signature_covers_the_query_string_followed_directly_by_the_body() {
    let (sim, _) = support::start().await;
    let query = "symbol=DOGEUSDT&side=BUY";
    let body = format!("type=MARKET&quantity=100&timestamp={}", now_ms());
    let signature = sign(SECRET, &format!("{query}{body}"));
    let response = reqwest::Client::new()
        .post(format!("{}/fapi/v1/order?{query}", sim.base_url()))
        .header("X-MBX-APIKEY", KEY)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("{body}&signature={signature}"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let reply: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["symbol"], "DOGEUSDT");
    sim.shutdown().await;
}
