//! WebSocket routing and behaviour: raw and combined market streams, SUBSCRIBE, the routed
//! `/market` and `/public` prefixes, and user-stream `events=` filters.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::orders::order;
use crate::shape::{assert_matches_fixture, Allow};
use crate::support::{self, next_json, next_json_where, send_json, ws_connect};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_combined_stream_wraps_each_payload_with_its_stream_name() {
    let (sim, client) = support::start().await;
    let mut ws = ws_connect(&format!(
        "{}/market/stream?streams=btcusdt@markPrice@1s/ethusdt@bookTicker",
        sim.ws_url()
    ))
    .await;
    client.pin_price("ETHUSDT", "3333.33").await;
    // The random walk may publish its own tick first; wait for the pinned one.
    let book = next_json_where(&mut ws, WAIT, "the pinned book ticker", |v| {
        v["stream"] == "ethusdt@bookTicker" && v["data"]["b"] == "3333.32"
    })
    .await;
    assert_eq!(book["data"]["e"], "bookTicker");
    assert_eq!(
        book["data"]["a"], "3333.34",
        "one tick either side of the pinned price"
    );
    let mark = next_json_where(&mut ws, WAIT, "the mark price", |v| {
        v["stream"] == "btcusdt@markPrice@1s"
    })
    .await;
    assert_eq!(mark["data"]["s"], "BTCUSDT");
    sim.shutdown().await;
}

#[tokio::test]
async fn subscribe_adds_a_stream_to_a_raw_connection() {
    let (sim, client) = support::start().await;
    let mut ws = ws_connect(&format!("{}/public/ws", sim.ws_url())).await;
    send_json(
        &mut ws,
        &json!({"method": "SUBSCRIBE", "params": ["AXSUSDT@bookTicker"], "id": 7}),
    )
    .await;
    let ack = next_json_where(&mut ws, WAIT, "the ack", |v| v.get("id").is_some()).await;
    assert_eq!(ack, json!({"result": null, "id": 7}));
    client.pin_price("AXSUSDT", "7.000").await;
    let tick = next_json_where(&mut ws, WAIT, "the book ticker", |v| v["e"] == "bookTicker").await;
    assert_eq!(tick["s"], "AXSUSDT");
    send_json(&mut ws, &json!({"method": "LIST_SUBSCRIPTIONS", "id": 8})).await;
    let list = next_json_where(&mut ws, WAIT, "the list", |v| v["id"] == 8).await;
    assert_eq!(list["result"], json!(["axsusdt@bookTicker"]));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_pinned_price_is_published_on_the_mark_price_stream_at_once() {
    let (sim, client) = support::start().await;
    let mut ws = ws_connect(&format!("{}/ws/dogeusdt@markPrice", sim.ws_url())).await;
    client.pin_price("DOGEUSDT", "0.420000").await;
    let mark = next_json_where(&mut ws, Duration::from_secs(3), "the pinned mark", |v| {
        v["p"] == "0.42000000"
    })
    .await;
    assert_eq!(mark["e"], "markPriceUpdate");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_events_filter_delivers_only_the_listed_user_events() {
    let (sim, client) = support::start().await;
    let (_, _, key) = client
        .key_only(Method::POST, "/fapi/v1/listenKey", &[])
        .await;
    let key = key["listenKey"].as_str().unwrap().to_string();
    let mut ws = ws_connect(&format!(
        "{}/private/ws?listenKey={key}&events=TRADE_LITE/listenKeyExpired",
        sim.ws_url()
    ))
    .await;
    order(
        &client,
        &[
            ("symbol", "DOGEUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "100"),
        ],
    )
    .await;
    let first = support::next_json(&mut ws, WAIT).await;
    assert_eq!(
        first["e"], "TRADE_LITE",
        "ORDER_TRADE_UPDATE and ACCOUNT_UPDATE are filtered out"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_user_stream_is_also_served_on_the_raw_ws_path_and_an_unknown_key_is_refused() {
    let (sim, client) = support::start().await;
    let (_, _, key) = client
        .key_only(Method::POST, "/fapi/v1/listenKey", &[])
        .await;
    let key = key["listenKey"].as_str().unwrap().to_string();
    let mut ws = ws_connect(&format!("{}/ws/{key}", sim.ws_url())).await;
    order(
        &client,
        &[
            ("symbol", "DOGEUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "100"),
        ],
    )
    .await;
    let update = support::next_event(&mut ws, "ORDER_TRADE_UPDATE", WAIT).await;
    assert_eq!(update["o"]["x"], "NEW");
    let refused =
        tokio_tungstenite::connect_async(format!("{}/private/ws?listenKey=nope", sim.ws_url()))
            .await;
    assert!(refused.is_err(), "an unknown listenKey is refused");
    sim.shutdown().await;
}

/// The rows of the stream coverage table in `ENDPOINTS.md`: (example stream, event type,
/// implemented?). The user-data row is checked by the user-stream tests, not here.
fn stream_rows() -> Vec<(String, String, bool)> {
    let text = include_str!("../../ENDPOINTS.md");
    let section = text
        .split("## Market and user-data streams")
        .nth(1)
        .expect("ENDPOINTS.md has the stream coverage table");
    let section = section.split("\n## ").next().unwrap_or(section);
    let cell = |c: &str| c.trim().trim_matches('`').to_string();
    section
        .lines()
        .filter(|l| l.starts_with("| `") && !l.starts_with("| user data"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').collect();
            (
                cell(cells[2]),
                cell(cells[3]),
                match cells[4].trim() {
                    "implemented" => true,
                    "not yet" => false,
                    other => panic!("unknown status {other:?} in {l}"),
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn every_stream_of_the_coverage_table_behaves_as_its_row_says() {
    let rows = stream_rows();
    assert!(rows.len() >= 15, "{} rows", rows.len());
    let (sim, _) = support::start_with(simulator::SimConfig {
        tick_interval: Duration::from_millis(50),
        ..simulator::SimConfig::default()
    })
    .await;
    for (stream, event, _) in rows.iter().filter(|r| r.2) {
        let mut ws = ws_connect(&format!("{}/stream?streams={stream}", sim.ws_url())).await;
        let frame = next_json_where(&mut ws, WAIT, &format!("a {event} on {stream}"), |v| {
            let data = &v["data"];
            let first = if data.is_array() { &data[0] } else { data };
            v["stream"] == stream.as_str() && first["e"] == event.as_str()
        })
        .await;
        assert!(
            frame["data"].is_object() || frame["data"].is_array(),
            "{frame}"
        );
    }
    // Binance acknowledges any name, so only silence tells a stream is not served. The
    // simulator ticks every 50 ms here: 20 ticks without a frame is silence.
    let silent: Vec<&str> = rows.iter().filter(|r| !r.2).map(|r| r.0.as_str()).collect();
    assert!(!silent.is_empty());
    let mut ws = ws_connect(&format!(
        "{}/stream?streams={}",
        sim.ws_url(),
        silent.join("/")
    ))
    .await;
    let heard = tokio::time::timeout(Duration::from_secs(1), next_json(&mut ws, WAIT)).await;
    assert!(
        heard.is_err(),
        "a stream the table says is not served sent {heard:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn ticker_and_kline_streams_have_the_documented_shapes() {
    let (sim, _) = support::start_with(simulator::SimConfig {
        tick_interval: Duration::from_millis(50),
        ..simulator::SimConfig::default()
    })
    .await;
    for (stream, fixture) in [
        ("btcusdt@kline_1m", "ws__kline.json"),
        ("btcusdt@ticker", "ws__ticker.json"),
        ("btcusdt@miniTicker", "ws__mini_ticker.json"),
    ] {
        let mut ws = ws_connect(&format!("{}/ws/{stream}", sim.ws_url())).await;
        let event = next_json_where(&mut ws, WAIT, stream, |v| v["s"] == "BTCUSDT").await;
        assert_matches_fixture(&event, fixture, &Allow::none());
    }
    sim.shutdown().await;
}
