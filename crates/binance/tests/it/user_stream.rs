//! The user data stream against the simulator: order events in order, the Connected/Disconnected
//! contract across a dropped socket, an expired listenKey and a silent connection.

use std::str::FromStr;
use std::time::Duration;

use binance::events::ExecutionType;
use binance::{
    NewOrder, OrderStatus, Side, UserEvent, UserStream, UserStreamConfig, UserStreamPath,
};
use rust_decimal::Decimal;
use serde_json::json;
use simulator::SimConfig;
use tokio::sync::mpsc::Receiver;

use crate::support::{self, client_id, faults, next_where};

fn fast() -> UserStreamConfig {
    UserStreamConfig {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        connect_timeout: Duration::from_secs(2),
        ..UserStreamConfig::default()
    }
}

/// A small ETHUSDT market buy under client order id `id`: something for the stream to report.
async fn buy_eth(client: &binance::RestClient, id: &str) {
    client
        .place_order(&NewOrder::market(
            "ETHUSDT",
            Side::Buy,
            Decimal::from_str("0.01").unwrap(),
            id,
        ))
        .await
        .unwrap();
}

async fn connected(events: &mut Receiver<UserEvent>) -> u64 {
    next_where(events, "Connected", |e| match e {
        UserEvent::Connected { generation } => Some(*generation),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn order_events_arrive_new_then_trade_filled() {
    let (sim, client) = support::start().await;
    let (stream, mut events) = UserStream::spawn(client.clone(), fast());
    assert_eq!(connected(&mut events).await, 1);
    let id = client_id("stream");
    let qty = Decimal::from_str("0.01").unwrap();
    client
        .place_order(&NewOrder::market("ETHUSDT", Side::Buy, qty, id.clone()))
        .await
        .unwrap();
    let first = next_where(&mut events, "the NEW event", |e| match e {
        UserEvent::OrderTradeUpdate(u) if u.order.client_order_id == id => Some(u.clone()),
        _ => None,
    })
    .await;
    assert_eq!(first.order.execution_type, ExecutionType::New);
    assert_eq!(first.order.status, OrderStatus::New);
    let mut filled = Decimal::ZERO;
    let last = loop {
        let update = next_where(&mut events, "a TRADE event", |e| match e {
            UserEvent::OrderTradeUpdate(u) if u.order.client_order_id == id => Some(u.clone()),
            _ => None,
        })
        .await;
        assert_eq!(update.order.execution_type, ExecutionType::Trade);
        assert!(update.order.trade_id > 0);
        filled += update.order.last_filled_qty;
        if update.order.status == OrderStatus::Filled {
            break update;
        }
    };
    assert_eq!(filled, qty);
    assert_eq!(last.order.cumulative_filled_qty, qty);
    assert!(last.order.avg_price > Decimal::ZERO);
    next_where(&mut events, "the ACCOUNT_UPDATE", |e| match e {
        UserEvent::AccountUpdate(a) => Some(a.account.positions.len()),
        _ => None,
    })
    .await;
    stream.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_dropped_socket_reconnects_with_a_higher_generation() {
    let (sim, client) = support::start().await;
    // The legacy `/ws/<key>` form, to cover the other URL shape.
    let config = UserStreamConfig {
        path: UserStreamPath::Suffix {
            prefix: "/ws".into(),
        },
        ..fast()
    };
    let (stream, mut events) = UserStream::spawn(client.clone(), config);
    assert_eq!(connected(&mut events).await, 1);
    faults(&sim, json!({ "disconnect_user_streams": true })).await;
    let ended = next_where(&mut events, "Disconnected", |e| match e {
        UserEvent::Disconnected { generation, .. } => Some(*generation),
        _ => None,
    })
    .await;
    assert_eq!(ended, 1);
    assert_eq!(connected(&mut events).await, 2);
    // Events flow on the new connection.
    let id = client_id("after-drop");
    buy_eth(&client, &id).await;
    next_where(&mut events, "an event after reconnecting", |e| match e {
        UserEvent::OrderTradeUpdate(u) if u.order.client_order_id == id => Some(()),
        _ => None,
    })
    .await;
    stream.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_listen_key_is_rotated() {
    let (sim, client) = support::start().await;
    let (stream, mut events) = UserStream::spawn(client.clone(), fast());
    assert_eq!(connected(&mut events).await, 1);
    faults(&sim, json!({ "expire_listen_keys": true })).await;
    let reason = next_where(&mut events, "Disconnected", |e| match e {
        UserEvent::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("listenKeyExpired"), "{reason}");
    assert_eq!(connected(&mut events).await, 2);
    let id = client_id("after-expiry");
    buy_eth(&client, &id).await;
    next_where(&mut events, "an event on the new key", |e| match e {
        UserEvent::OrderTradeUpdate(u) if u.order.client_order_id == id => Some(()),
        _ => None,
    })
    .await;
    stream.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn pings_keep_a_quiet_stream_alive_and_silence_reconnects() {
    // Pings every 200 ms: a 1 s staleness limit is never reached while they flow.
    let (sim, client) = support::start_with(SimConfig {
        ws_ping_interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let config = UserStreamConfig {
        stale_after: Duration::from_secs(1),
        ..fast()
    };
    let (stream, mut events) = UserStream::spawn(client.clone(), config.clone());
    assert_eq!(connected(&mut events).await, 1);
    let quiet = tokio::time::timeout(Duration::from_millis(1_600), events.recv()).await;
    assert!(quiet.is_err(), "no reconnect while pings flow: {quiet:?}");
    stream.shutdown().await;
    sim.shutdown().await;

    // Default simulator pings (3 min): a quiet stream is declared dead after 1 s.
    let (sim, client) = support::start().await;
    let (stream, mut events) = UserStream::spawn(client, config);
    assert_eq!(connected(&mut events).await, 1);
    let reason = next_where(&mut events, "a staleness disconnect", |e| match e {
        UserEvent::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("no frame"), "{reason}");
    assert_eq!(connected(&mut events).await, 2);
    stream.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_keepalive_answered_with_1125_rotates_the_key() {
    let (sim, client) = support::start().await;
    // Without listenKeyExpired in the allow-list the expiry is silent, so only the keepalive
    // can notice it.
    let config = UserStreamConfig {
        keepalive_interval: Duration::from_millis(300),
        events: Some(vec!["ORDER_TRADE_UPDATE".into()]),
        ..fast()
    };
    let (stream, mut events) = UserStream::spawn(client.clone(), config);
    assert_eq!(connected(&mut events).await, 1);
    faults(&sim, json!({ "expire_listen_keys": true })).await;
    let reason = next_where(&mut events, "Disconnected", |e| match e {
        UserEvent::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("-1125"), "{reason}");
    assert_eq!(connected(&mut events).await, 2);
    let id = client_id("after-1125");
    buy_eth(&client, &id).await;
    next_where(&mut events, "an event on the rotated key", |e| match e {
        UserEvent::OrderTradeUpdate(u) if u.order.client_order_id == id => Some(()),
        _ => None,
    })
    .await;
    stream.shutdown().await;
    sim.shutdown().await;
}

/// Regression: a stopping stream used to DELETE the listenKey, which is the account's one key,
/// so stopping one execution instance cut the stream of every other process on the account.
#[tokio::test]
async fn stopping_one_stream_leaves_another_on_the_same_account_connected() {
    let (sim, client) = support::start().await;
    let (first, mut first_events) = UserStream::spawn(client.clone(), fast());
    assert_eq!(connected(&mut first_events).await, 1);
    let (second, mut second_events) = UserStream::spawn(client.clone(), fast());
    assert_eq!(connected(&mut second_events).await, 1);
    first.shutdown().await;
    let id = client_id("after-other-stopped");
    buy_eth(&client, &id).await;
    // The first thing the remaining stream delivers is the order, not a disconnection.
    let event = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match second_events.recv().await {
                Some(UserEvent::OrderTradeUpdate(u)) if u.order.client_order_id == id => {
                    return Ok(())
                }
                Some(UserEvent::Disconnected { reason, .. }) => return Err(reason),
                Some(_) => {}
                None => return Err("the stream ended".to_string()),
            }
        }
    })
    .await
    .expect("an event within 5 s");
    assert_eq!(event, Ok(()), "the other stream was cut");
    second.shutdown().await;
    sim.shutdown().await;
}
