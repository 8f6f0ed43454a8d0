//! Start-up settings that change behaviour: extra symbols, CSV price replay, server pings and the
//! listenKey lifetime.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use simulator::SimConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::orders::user_stream;
use crate::support::{self, next_event, wait_until};

#[tokio::test]
async fn extra_symbols_are_listed_and_tradable() {
    let config = SimConfig {
        extra_symbols: vec!["LINKUSDT:14.5".into()],
        // No walk during the test, so the start price is still there.
        tick_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    };
    let (sim, client) = support::start_with(config).await;
    let (_, _, info) = client
        .public(
            Method::GET,
            "/fapi/v1/exchangeInfo",
            &[("symbol", "LINKUSDT")],
        )
        .await;
    let link = info["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["symbol"] == "LINKUSDT")
        .expect("LINKUSDT listed");
    assert_eq!(link["filters"][0]["tickSize"], "0.001");
    let (_, _, price) = client
        .public(
            Method::GET,
            "/fapi/v1/ticker/price",
            &[("symbol", "LINKUSDT")],
        )
        .await;
    assert_eq!(price["price"], "14.500");
    let (status, _, reply) = client
        .signed(
            Method::POST,
            "/fapi/v1/order",
            &[
                ("symbol", "LINKUSDT"),
                ("side", "BUY"),
                ("type", "MARKET"),
                ("quantity", "1.0"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_price_file_is_replayed_at_its_timestamps() {
    let dir = std::env::temp_dir().join(format!("quantum-sim-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("axs.csv");
    std::fs::write(&path, "timestamp,price\n1000,6.100\n1300,6.400\n").unwrap();
    let config = SimConfig {
        price_files: vec![format!("AXSUSDT={}", path.display())],
        tick_interval: Duration::from_millis(50),
        ..SimConfig::default()
    };
    let (sim, client) = support::start_with(config).await;
    let price = || async {
        let (_, _, p) = client
            .public(
                Method::GET,
                "/fapi/v1/ticker/price",
                &[("symbol", "AXSUSDT")],
            )
            .await;
        p["price"].as_str().unwrap().to_string()
    };
    assert_eq!(
        price().await,
        "6.100",
        "the first row is the starting price"
    );
    wait_until(Duration::from_secs(3), "the second row", || async {
        (price().await == "6.400").then_some(())
    })
    .await;
    sim.shutdown().await;
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_bad_price_file_stops_the_start_with_a_clear_error() {
    let config = SimConfig {
        price_files: vec!["AXSUSDT=/nonexistent/prices.csv".into()],
        ..SimConfig::default()
    };
    let error = simulator::spawn(config)
        .await
        .expect_err("a missing file is an error");
    assert!(
        error.to_string().contains("/nonexistent/prices.csv"),
        "{error}"
    );
}

#[tokio::test]
async fn the_server_pings_every_websocket() {
    let config = SimConfig {
        ws_ping_interval: Duration::from_millis(200),
        ..SimConfig::default()
    };
    let (sim, _client) = support::start_with(config).await;
    let mut ws = support::ws_connect(&format!("{}/ws/btcusdt@aggTrade", sim.ws_url())).await;
    let frame = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(payload))) => return payload,
                Some(Ok(_)) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a ping within 3 s");
    assert!(!frame.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_listen_key_without_keepalive_expires_and_says_so() {
    let config = SimConfig {
        listen_key_ttl: Duration::from_millis(600),
        tick_interval: Duration::from_millis(100),
        ..SimConfig::default()
    };
    let (sim, client) = support::start_with(config).await;
    let mut ws = user_stream(&sim, &client).await;
    let event = next_event(&mut ws, "listenKeyExpired", Duration::from_secs(5)).await;
    assert!(event["E"].as_i64().is_some());
    let (status, _, body) = client
        .key_only(Method::PUT, "/fapi/v1/listenKey", &[])
        .await;
    assert_eq!(
        (status, body["code"].as_i64()),
        (StatusCode::BAD_REQUEST, Some(-1125))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_websocket_is_closed_at_the_end_of_its_lifetime() {
    let config = SimConfig {
        ws_max_lifetime: Duration::from_millis(300),
        ..SimConfig::default()
    };
    let (sim, client) = support::start_with(config).await;
    let mut ws = user_stream(&sim, &client).await;
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection was closed within 3 s");
    sim.shutdown().await;
}
