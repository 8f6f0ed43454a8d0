//! Order entry over the WebSocket API against the simulator: place, query and cancel with HMAC
//! per request; a call while disconnected sends nothing (Transient, so the caller uses REST); a
//! request whose reply is lost is Ambiguous, and the order it placed is found by its client id.

use std::time::Duration;

use binance::{Error, NewOrder, OrderRef, Secret, Side, WsApiClient, WsApiConfig};
use rust_decimal::Decimal;
use serde_json::json;

use crate::support::{self, client_id, eventually, pin_price, WAIT};

fn ws_api(sim: &simulator::SimHandle) -> WsApiClient {
    WsApiClient::spawn(
        WsApiConfig {
            url: format!("{}/ws-fapi/v1", sim.ws_url()).parse().unwrap(),
            api_key: simulator::DEFAULT_API_KEY.into(),
            api_secret: Secret::new(simulator::DEFAULT_API_SECRET),
            ed25519: None,
            recv_window: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        },
        support::client_for(sim),
    )
}

#[tokio::test]
async fn orders_are_placed_queried_and_cancelled_over_the_websocket_api() {
    let (sim, rest) = support::start().await;
    pin_price(&sim, "BTCUSDT", "65000").await;
    let api = ws_api(&sim);
    assert!(api.wait_connected(WAIT).await, "connects");
    let coid = client_id("wsapi-limit");
    let placed = api
        .place_order(&NewOrder::limit(
            "BTCUSDT",
            Side::Buy,
            "0.010".parse().unwrap(),
            "64000".parse().unwrap(),
            &coid,
        ))
        .await
        .expect("order.place");
    assert_eq!(placed.client_order_id, coid);
    assert_eq!(placed.status.as_str(), "NEW");
    let queried = api
        .query_order("BTCUSDT", &OrderRef::ClientOrderId(coid.clone()))
        .await
        .expect("order.status");
    assert_eq!(queried.order_id, placed.order_id);
    // REST sees the same order: one exchange, two doors.
    let via_rest = rest
        .query_order("BTCUSDT", &OrderRef::OrderId(placed.order_id))
        .await
        .unwrap();
    assert_eq!(via_rest.client_order_id, coid);
    let cancelled = api
        .cancel_order("BTCUSDT", &OrderRef::OrderId(placed.order_id))
        .await
        .expect("order.cancel");
    assert_eq!(cancelled.status.as_str(), "CANCELED");
    let again = api
        .cancel_order("BTCUSDT", &OrderRef::OrderId(placed.order_id))
        .await
        .unwrap_err();
    assert!(matches!(again, Error::NotFound { .. }), "{again:?}");
    // A definite refusal keeps Binance's code.
    let refused = api
        .place_order(&NewOrder::market(
            "BTCUSDT",
            Side::Buy,
            "0.0001".parse().unwrap(),
            client_id("tiny"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Rejected { .. }), "{refused:?}");
    api.shutdown();
    sim.shutdown().await;
}

#[tokio::test]
async fn a_call_while_disconnected_sends_nothing() {
    let (sim, _) = support::start().await;
    let api = ws_api(&sim);
    api.shutdown();
    let err = api
        .place_order(&NewOrder::market(
            "BTCUSDT",
            Side::Buy,
            Decimal::ONE,
            client_id("down"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    sim.shutdown().await;
}

/// Regression guard for the incident's class of error: a lost reply is not a failure and not a
/// reason to resend; the order exists and is found by its client order id.
#[tokio::test]
async fn a_lost_reply_is_ambiguous_and_the_order_is_found_by_its_client_id() {
    let (sim, rest) = support::start().await;
    pin_price(&sim, "BTCUSDT", "65000").await;
    let api = ws_api(&sim);
    assert!(api.wait_connected(WAIT).await);
    support::faults(&sim, json!({"drop_order_responses": 1})).await;
    let coid = client_id("wsapi-lost");
    let err = api
        .place_order(&NewOrder::market(
            "BTCUSDT",
            Side::Buy,
            "0.010".parse().unwrap(),
            &coid,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Ambiguous { .. }), "{err:?}");
    let found = eventually("the order to be found", || {
        let rest = &rest;
        let coid = coid.clone();
        async move {
            rest.find_order("BTCUSDT", &OrderRef::ClientOrderId(coid))
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    assert_eq!(found.client_order_id, coid);
    // The client reconnects after the server closed the connection.
    assert!(api.wait_connected(WAIT).await, "reconnects");
    api.shutdown();
    sim.shutdown().await;
}

const ED25519_API_KEY: &str = "test-ed25519-key";
const ED25519_PRIVATE: &str = include_str!("../../../simulator/testdata/test-ed25519-private.pem");
const ED25519_PUBLIC: &str = include_str!("../../../simulator/testdata/test-ed25519-public.pem");

/// An account with only an Ed25519 key (no HMAC secret) trades over REST and the WebSocket API.
#[tokio::test]
async fn an_ed25519_key_signs_rest_and_websocket_api_requests() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(0),
        public_keys: vec![simulator::PublicApiKey {
            api_key: ED25519_API_KEY.into(),
            scheme: simulator::KeyScheme::Ed25519,
            public_key_pem: ED25519_PUBLIC.into(),
        }],
        ..simulator::SimConfig::default()
    })
    .await
    .unwrap();
    pin_price(&sim, "BTCUSDT", "65000").await;
    let key = binance::Ed25519Key::from_pem(ED25519_PRIVATE).expect("the test key reads");
    assert_eq!(format!("{key:?}"), "Ed25519Key(***)", "never printed");
    let mut config =
        binance::Config::custom(&sim.base_url(), &sim.ws_url(), ED25519_API_KEY, "").unwrap();
    config.ed25519 = Some(key.clone());
    let rest = binance::RestClient::new(config).unwrap();
    rest.sync_time().await.unwrap();
    let balances = rest
        .balances()
        .await
        .expect("a signed REST call with the Ed25519 key");
    assert!(!balances.is_empty());
    let over_rest = rest
        .place_order(&NewOrder::market(
            "BTCUSDT",
            Side::Buy,
            "0.010".parse().unwrap(),
            client_id("ed-rest"),
        ))
        .await
        .expect("an order over REST");
    assert_eq!(over_rest.status.as_str(), "NEW");

    let api = WsApiClient::spawn(
        WsApiConfig {
            url: format!("{}/ws-fapi/v1", sim.ws_url()).parse().unwrap(),
            api_key: ED25519_API_KEY.into(),
            api_secret: Secret::new(""),
            ed25519: Some(key),
            recv_window: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        },
        rest.clone(),
    );
    assert!(api.wait_connected(WAIT).await);
    let over_ws = api
        .place_order(&NewOrder::market(
            "BTCUSDT",
            Side::Sell,
            "0.010".parse().unwrap(),
            client_id("ed-ws"),
        ))
        .await
        .expect("an order over the WebSocket API");
    assert_eq!(over_ws.status.as_str(), "NEW");
    // The wrong key for the API key is refused as Binance does (-1022), not taken as a failure
    // to retry.
    let other = binance::Ed25519Key::from_secret_bytes(&[17; 32]);
    let mut wrong =
        binance::Config::custom(&sim.base_url(), &sim.ws_url(), ED25519_API_KEY, "").unwrap();
    wrong.ed25519 = Some(other);
    let wrong = binance::RestClient::new(wrong).unwrap();
    wrong.sync_time().await.unwrap();
    let err = wrong.balances().await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    api.shutdown();
    sim.shutdown().await;
}
