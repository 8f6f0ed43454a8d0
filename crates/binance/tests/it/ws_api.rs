//! Order entry over the WebSocket API against the simulator: place, query and cancel with HMAC
//! per request; a call while disconnected sends nothing (Transient, so the caller uses REST); a
//! request whose reply is lost is Ambiguous, and the order it placed is found by its client id.
//! Keys: Ed25519 logs the connection on (`session.logon`, again after every reconnect) and a
//! refused logon leaves the connection down and says why; RSA signs REST and each WebSocket API
//! request, and a wrong RSA key is refused as `Auth`.

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
            private_key: None,
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
    let sim = ed25519_sim().await;
    let key = binance::Ed25519Key::from_pem(ED25519_PRIVATE).expect("the test key reads");
    assert_eq!(format!("{key:?}"), "Ed25519Key(***)", "never printed");
    let (rest, api) = keyed_clients(&sim, ED25519_API_KEY, key.into()).await;
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
    wrong.private_key = Some(other.into());
    let wrong = binance::RestClient::new(wrong).unwrap();
    wrong.sync_time().await.unwrap();
    let err = wrong.balances().await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    api.shutdown();
    sim.shutdown().await;
}

/// The simulator's request counts (`GET /sim/v1/requests`), by `METHOD path` / `WS <method>`.
async fn sim_count(sim: &simulator::SimHandle, what: &str) -> u64 {
    let counts: serde_json::Value = reqwest::get(format!("{}/sim/v1/requests", sim.base_url()))
        .await
        .expect("the control API answers")
        .json()
        .await
        .expect("JSON");
    counts[what].as_u64().unwrap_or(0)
}

async fn ed25519_sim() -> simulator::SimHandle {
    keyed_sim(
        ED25519_API_KEY,
        simulator::KeyScheme::Ed25519,
        ED25519_PUBLIC,
    )
    .await
}

/// A simulator that knows `api_key` by its public key, with BTCUSDT pinned.
async fn keyed_sim(
    api_key: &str,
    scheme: simulator::KeyScheme,
    public_key_pem: &str,
) -> simulator::SimHandle {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(0),
        public_keys: vec![simulator::PublicApiKey {
            api_key: api_key.into(),
            scheme,
            public_key_pem: public_key_pem.into(),
        }],
        ..simulator::SimConfig::default()
    })
    .await
    .unwrap();
    pin_price(&sim, "BTCUSDT", "65000").await;
    sim
}

/// A REST client and a WebSocket API client of `api_key`, signing with `key`.
async fn keyed_clients(
    sim: &simulator::SimHandle,
    api_key: &str,
    key: binance::PrivateKey,
) -> (binance::RestClient, WsApiClient) {
    let mut config = binance::Config::custom(&sim.base_url(), &sim.ws_url(), api_key, "").unwrap();
    config.private_key = Some(key.clone());
    let rest = binance::RestClient::new(config).unwrap();
    rest.sync_time().await.unwrap();
    let api = WsApiClient::spawn(
        WsApiConfig {
            url: format!("{}/ws-fapi/v1", sim.ws_url()).parse().unwrap(),
            api_key: api_key.into(),
            api_secret: Secret::new(""),
            private_key: Some(key),
            recv_window: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        },
        rest.clone(),
    );
    (rest, api)
}

/// With an Ed25519 key the connection logs on once, then places, queries and cancels without a
/// signature per request (the simulator refuses an unsigned request on a connection that did not
/// log on); after the connection drops, it logs on again before taking requests.
#[tokio::test]
async fn an_ed25519_key_logs_the_connection_on_and_again_after_a_reconnect() {
    let sim = ed25519_sim().await;
    let key = binance::Ed25519Key::from_pem(ED25519_PRIVATE).unwrap();
    let (_rest, api) = keyed_clients(&sim, ED25519_API_KEY, key.into()).await;
    assert!(api.wait_connected(WAIT).await, "connects and logs on");
    assert_eq!(sim_count(&sim, "WS session.logon").await, 1);
    assert!(api.logon_failure().is_none());
    let coid = client_id("ed-session");
    let placed = api
        .place_order(&NewOrder::limit(
            "BTCUSDT",
            Side::Buy,
            "0.010".parse().unwrap(),
            "64000".parse().unwrap(),
            &coid,
        ))
        .await
        .expect("order.place on the session");
    let queried = api
        .query_order("BTCUSDT", &OrderRef::ClientOrderId(coid.clone()))
        .await
        .expect("order.status on the session");
    assert_eq!(queried.order_id, placed.order_id);
    let cancelled = api
        .try_cancel_order("BTCUSDT", &OrderRef::ClientOrderId(coid.clone()))
        .await
        .expect("sent over the connection")
        .expect("order.cancel on the session");
    assert_eq!(cancelled.status.as_str(), "CANCELED");
    assert_eq!(
        sim_count(&sim, "WS session.logon").await,
        1,
        "one logon per connection"
    );

    // The simulator executes the next order and drops the connection without a reply.
    support::faults(&sim, json!({"drop_order_responses": 1})).await;
    let err = api
        .place_order(&NewOrder::market(
            "BTCUSDT",
            Side::Buy,
            "0.010".parse().unwrap(),
            client_id("ed-dropped"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Ambiguous { .. }), "{err:?}");
    eventually("a second logon after the reconnect", || {
        let sim = &sim;
        let api = &api;
        async move {
            (sim_count(sim, "WS session.logon").await == 2 && api.is_connected()).then_some(())
        }
    })
    .await;
    let again = api
        .try_query_order("BTCUSDT", &OrderRef::ClientOrderId(coid))
        .await
        .expect("sent over the new connection")
        .expect("order.status on the new session");
    assert_eq!(again.status.as_str(), "CANCELED");
    api.shutdown();
    sim.shutdown().await;
}

/// A logon the exchange refuses is reported (as `Auth`), and the connection counts as down: a
/// call sends nothing, so the caller uses REST. Never taken as logged on.
#[tokio::test]
async fn a_refused_logon_is_reported_and_the_connection_counts_as_down() {
    let sim = ed25519_sim().await;
    let wrong = binance::Ed25519Key::from_secret_bytes(&[17; 32]);
    let (_rest, api) = keyed_clients(&sim, ED25519_API_KEY, wrong.into()).await;
    let failure = eventually("the logon's refusal", || {
        let api = &api;
        async move { api.logon_failure() }
    })
    .await;
    assert!(matches!(*failure, Error::Auth { .. }), "{failure:?}");
    assert!(!api.is_connected());
    let order = NewOrder::market(
        "BTCUSDT",
        Side::Buy,
        "0.010".parse().unwrap(),
        client_id("ed-refused"),
    );
    assert!(
        api.try_place_order(&order).await.is_none(),
        "nothing is sent on a connection that is not logged on"
    );
    let err = api.place_order(&order).await.unwrap_err();
    assert!(
        matches!(&err, Error::Transient { reason, .. } if reason.contains("session.logon")),
        "{err:?}"
    );
    assert_eq!(sim_count(&sim, "WS order.place").await, 0);
    assert!(sim_count(&sim, "WS session.logon").await >= 1);
    api.shutdown();
    sim.shutdown().await;
}

const RSA_API_KEY: &str = "test-rsa-key";
const RSA_PRIVATE: &str = include_str!("../../../simulator/testdata/test-rsa-private.pem");
const RSA_PUBLIC: &str = include_str!("../../../simulator/testdata/test-rsa-public.pem");
const RSA_OTHER_PRIVATE: &str =
    include_str!("../../../simulator/testdata/test-rsa-other-private.pem");

/// An RSA key signs REST requests (balances, an order) and each WebSocket API request (Binance
/// takes no RSA key for session.logon, so none is sent); another RSA key is refused as `Auth`.
#[tokio::test]
async fn an_rsa_key_signs_rest_and_each_websocket_api_request_and_a_wrong_one_is_auth() {
    let sim = keyed_sim(RSA_API_KEY, simulator::KeyScheme::Rsa, RSA_PUBLIC).await;
    let key = binance::RsaKey::from_pem(RSA_PRIVATE).expect("the test key reads");
    assert_eq!(format!("{key:?}"), "RsaKey(***)", "never printed");
    let (rest, api) = keyed_clients(&sim, RSA_API_KEY, key.into()).await;
    let balances = rest
        .balances()
        .await
        .expect("a signed REST call with the RSA key");
    assert!(!balances.is_empty());
    let over_rest = rest
        .place_order(&NewOrder::market(
            "BTCUSDT",
            Side::Buy,
            "0.010".parse().unwrap(),
            client_id("rsa-rest"),
        ))
        .await
        .expect("an order over REST");
    assert_eq!(over_rest.status.as_str(), "NEW");
    assert!(api.wait_connected(WAIT).await);
    let coid = client_id("rsa-ws");
    api.place_order(&NewOrder::market(
        "BTCUSDT",
        Side::Sell,
        "0.010".parse().unwrap(),
        &coid,
    ))
    .await
    .expect("an order over the WebSocket API");
    api.query_order("BTCUSDT", &OrderRef::ClientOrderId(coid))
        .await
        .expect("a lookup over the WebSocket API");
    assert_eq!(sim_count(&sim, "WS session.logon").await, 0);

    let other = binance::RsaKey::from_pem(RSA_OTHER_PRIVATE).unwrap();
    let (wrong, wrong_api) = keyed_clients(&sim, RSA_API_KEY, other.into()).await;
    let err = wrong.balances().await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(wrong_api.wait_connected(WAIT).await);
    let err = wrong_api
        .query_order("BTCUSDT", &OrderRef::OrderId(over_rest.order_id))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    api.shutdown();
    wrong_api.shutdown();
    sim.shutdown().await;
}
