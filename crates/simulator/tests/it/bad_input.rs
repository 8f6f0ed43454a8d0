//! Malformed requests get Binance's error JSON with a fitting status: never a panic, a hang or an
//! empty 500.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support;

async fn raw(method: Method, url: String, body: Vec<u8>) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("non-JSON error body ({e}): {text:?}"));
    (status, value)
}

#[tokio::test]
async fn unknown_paths_and_methods_get_404_json() {
    let (sim, _) = support::start().await;
    let (status, body) = raw(
        Method::GET,
        format!("{}/fapi/v1/nothing", sim.base_url()),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({"code": -5000, "msg": "Path /fapi/v1/nothing, Method GET is invalid"})
    );
    // A known path with a method it does not take (PATCH on the order endpoint).
    let (status, body) = raw(
        Method::PATCH,
        format!("{}/fapi/v1/order", sim.base_url()),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], -5000);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_json() {
    let (sim, _) = support::start().await;
    let (status, body) = raw(
        Method::POST,
        format!("{}/fapi/v1/order", sim.base_url()),
        vec![b'a'; 200_000],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["code"], -1104);
    sim.shutdown().await;
}

#[tokio::test]
async fn garbage_parameters_get_request_errors() {
    let (sim, client) = support::start().await;
    let base = sim.base_url();
    for query in [
        "symbol=",
        "symbol=%ZZ",
        "limit=abc&symbol=BTCUSDT",
        "symbol=BTCUSDT&limit=7",
    ] {
        let (status, body) =
            raw(Method::GET, format!("{base}/fapi/v1/depth?{query}"), vec![]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body["code"].as_i64().unwrap() < 0, "{query}: {body}");
    }
    let (status, body) = raw(
        Method::POST,
        format!("{base}/fapi/v1/order"),
        vec![0xff, 0xfe],
    )
    .await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-1100)),
        "a body that is not UTF-8"
    );
    let (status, body) = client
        .control(
            Method::POST,
            "/sim/v1/price",
            json!({"symbol": "BTCUSDT", "price": "-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = client
        .control(
            Method::POST,
            "/sim/v1/price",
            json!({"symbol": "NOPE", "price": "1"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-1121))
    );
    sim.shutdown().await;
}
