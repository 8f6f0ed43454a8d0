//! The market stream against the simulator: a pinned mark price arrives, a runtime SUBSCRIBE
//! adds a stream, and the task reconnects with backoff when the server goes away and comes back.

use std::str::FromStr;
use std::time::Duration;

use binance::{
    book_ticker_stream, mark_price_stream, MarketEvent, MarketStream, MarketStreamConfig,
};
use rust_decimal::Decimal;
use simulator::SimConfig;
use url::Url;

use crate::support::{self, next_where, pin_price};

fn fast() -> MarketStreamConfig {
    MarketStreamConfig {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        ..MarketStreamConfig::default()
    }
}

#[tokio::test]
async fn a_pinned_mark_price_arrives_and_subscriptions_change_at_runtime() {
    let (sim, _) = support::start().await;
    let ws_url = Url::parse(&sim.ws_url()).unwrap();
    let (stream, mut events) = MarketStream::spawn(ws_url, [mark_price_stream("BTCUSDT")], fast());
    next_where(&mut events, "Connected", |e| {
        matches!(e, MarketEvent::Connected { generation: 1 }).then_some(())
    })
    .await;
    pin_price(&sim, "BTCUSDT", "91234.50").await;
    let pinned = Decimal::from_str("91234.50").unwrap();
    next_where(&mut events, "the pinned mark price", |e| match e {
        MarketEvent::MarkPrice(m) if m.symbol == "BTCUSDT" && m.mark_price == pinned => Some(()),
        _ => None,
    })
    .await;

    stream
        .subscribe(vec![book_ticker_stream("ETHUSDT")])
        .await
        .unwrap();
    pin_price(&sim, "ETHUSDT", "3333.33").await;
    let book = next_where(&mut events, "the ETH book ticker", |e| match e {
        MarketEvent::BookTicker(b) if b.symbol == "ETHUSDT" => Some(b.clone()),
        _ => None,
    })
    .await;
    assert!(book.bid_price < book.ask_price);
    stream
        .unsubscribe(vec![mark_price_stream("BTCUSDT")])
        .await
        .unwrap();
    stream.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_stream_reconnects_when_the_server_returns() {
    // Find a free port, then start the stream before anything listens there.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let ws_url = Url::parse(&format!("ws://{addr}")).unwrap();
    let (stream, mut events) = MarketStream::spawn(ws_url, [mark_price_stream("ETHUSDT")], fast());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let config = || SimConfig {
        listen: addr,
        tick_interval: Duration::from_millis(100),
        ..SimConfig::default()
    };
    let sim = simulator::spawn(config())
        .await
        .expect("simulator on the port");
    next_where(&mut events, "the first connection", |e| {
        matches!(e, MarketEvent::Connected { generation: 1 }).then_some(())
    })
    .await;
    next_where(&mut events, "a mark price", |e| {
        matches!(e, MarketEvent::MarkPrice(_)).then_some(())
    })
    .await;
    sim.shutdown().await;
    next_where(&mut events, "Disconnected", |e| {
        matches!(e, MarketEvent::Disconnected { generation: 1, .. }).then_some(())
    })
    .await;
    let sim = simulator::spawn(config()).await.expect("simulator again");
    next_where(&mut events, "the second connection", |e| {
        matches!(e, MarketEvent::Connected { generation: 2 }).then_some(())
    })
    .await;
    next_where(&mut events, "a mark price after reconnecting", |e| {
        matches!(e, MarketEvent::MarkPrice(_)).then_some(())
    })
    .await;
    stream.shutdown().await;
    sim.shutdown().await;
}
