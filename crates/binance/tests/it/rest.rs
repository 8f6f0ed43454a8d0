//! REST against the simulator: clock sync and the -1021 retry, the ACK-then-fill life of a MARKET
//! order, RESULT replies, lookups, and how each fault is classified (ambiguous orders must exist
//! when looked up; rejected ones must not).

use std::str::FromStr;
use std::time::{Duration, Instant};

use binance::types::{AlgoOrderType, AlgoRef, AlgoStatus};
use binance::{
    Error, FilterError, LotKind, NewAlgoOrder, NewOrder, OrderRef, OrderStatus, ResponseType,
    Rounding, Side,
};
use rust_decimal::Decimal;
use serde_json::json;

use crate::support::{self, client_id, eventually, faults};

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

/// How many ETHUSDT orders carry client order id `id`.
async fn placed_with(client: &binance::RestClient, id: &str) -> usize {
    let all = client.all_orders("ETHUSDT", Some(1000)).await.unwrap();
    all.iter().filter(|o| o.client_order_id == id).count()
}

#[tokio::test]
async fn signed_calls_work_against_a_skewed_server_clock() {
    let (sim, _) = support::start().await;
    faults(&sim, json!({ "clock_skew_ms": -10_000 })).await;
    // A fresh client syncs on its first signed call, without being told to.
    let client = support::client_for(&sim);
    let balances = client
        .balances()
        .await
        .expect("signed call after lazy sync");
    let usdt = balances.iter().find(|b| b.asset == "USDT").expect("USDT");
    assert_eq!(usdt.balance, d("10000"));
    let offset = client.time_offset_ms();
    assert!((-11_000..=-9_000).contains(&offset), "offset {offset}");
    // An explicit sync measures the same thing.
    let offset = client.sync_time().await.unwrap();
    assert!((-11_000..=-9_000).contains(&offset), "offset {offset}");
    assert!(client.ping().await.is_ok());
    let server = client.server_time().await.unwrap();
    assert!((server - client.server_now_ms()).abs() < 1_000);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_1021_resyncs_and_retries_once_without_duplicating_the_order() {
    let (sim, client) = support::start().await;
    client.sync_time().await.unwrap();
    // The server jumps 10 s ahead: our timestamps are now older than recvWindow (5 s).
    faults(&sim, json!({ "clock_skew_ms": 10_000 })).await;
    let mode = client.position_mode().await.expect("resynced read");
    assert!(!mode.dual_side_position);
    assert!(client.time_offset_ms() > 9_000);

    faults(&sim, json!({ "clock_skew_ms": -10_000 })).await;
    let id = client_id("skew");
    let order = NewOrder::market("ETHUSDT", Side::Buy, d("0.01"), id.clone());
    let placed = client.place_order(&order).await.expect("resynced order");
    assert_eq!(placed.client_order_id, id);
    assert_eq!(
        placed_with(&client, &id).await,
        1,
        "the -1021 retry must not place a second order"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_market_ack_is_new_with_zeros_and_only_a_query_confirms_the_fill() {
    let (sim, client) = support::start().await;
    let rules = client.load_symbol_rules("ETHUSDT").await.unwrap();
    assert_eq!(rules.price.tick_size, d("0.01"));
    let mark = client.premium_index("ETHUSDT").await.unwrap().mark_price;
    assert!(mark > Decimal::ZERO);
    // 0.0159 rounds down to the 0.001 step; 0.015 ETH is above the 20 USDT minimum notional.
    let qty = rules.market_qty(d("0.0159"), mark, false).unwrap();
    assert_eq!(qty, d("0.015"));
    assert_eq!(
        rules.market_qty(d("0.001"), mark, false),
        Err(FilterError::BelowMinNotional {
            notional: mark * d("0.001"),
            min: d("20")
        })
    );

    let id = client_id("ack");
    let ack = client
        .place_order(&NewOrder::market("ETHUSDT", Side::Buy, qty, id.clone()))
        .await
        .unwrap();
    assert_eq!(ack.status, OrderStatus::New);
    assert_eq!(ack.executed_qty, Decimal::ZERO);
    assert_eq!(ack.avg_price, Decimal::ZERO);
    assert_eq!(ack.orig_qty, qty);

    let filled = eventually("the order to fill", || async {
        let order = client
            .query_order("ETHUSDT", &OrderRef::OrderId(ack.order_id))
            .await
            .unwrap();
        (order.status == OrderStatus::Filled).then_some(order)
    })
    .await;
    assert_eq!(filled.executed_qty, qty);
    assert!(filled.avg_price > Decimal::ZERO);
    assert!(filled.status.is_final());

    let trades = client
        .user_trades("ETHUSDT", Some(ack.order_id))
        .await
        .unwrap();
    let traded: Decimal = trades.iter().map(|t| t.qty).sum();
    assert_eq!(traded, qty);
    let positions = client.position_risk(Some("ETHUSDT")).await.unwrap();
    assert_eq!(positions[0].position_amt, qty);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_result_reply_carries_the_final_fill() {
    let (sim, client) = support::start().await;
    let order = NewOrder::market("ETHUSDT", Side::Sell, d("0.01"), client_id("result"))
        .response_type(ResponseType::Result);
    let result = client.place_order(&order).await.unwrap();
    assert_eq!(result.status, OrderStatus::Filled);
    assert_eq!(result.executed_qty, d("0.01"));
    assert!(result.avg_price > Decimal::ZERO);
    assert!(result.cum_quote > Decimal::ZERO);
    sim.shutdown().await;
}

#[tokio::test]
async fn lookups_by_client_id_cancel_and_not_found() {
    let (sim, client) = support::start().await;
    let rules = client.load_symbol_rules("ETHUSDT").await.unwrap();
    let mark = client.premium_index("ETHUSDT").await.unwrap().mark_price;
    let price = rules.round_price(mark * d("0.95"), Rounding::Down).unwrap();
    let qty = rules.round_qty(d("0.05"), LotKind::Limit).unwrap();
    let id = client_id("limit");
    let placed = client
        .place_order(&NewOrder::limit(
            "ETHUSDT",
            Side::Buy,
            qty,
            price,
            id.clone(),
        ))
        .await
        .unwrap();
    let by_client = client
        .query_order("ETHUSDT", &OrderRef::ClientOrderId(id.clone()))
        .await
        .unwrap();
    assert_eq!(by_client.order_id, placed.order_id);
    assert_eq!(by_client.price, price);
    let open = client.open_orders(Some("ETHUSDT")).await.unwrap();
    assert!(open.iter().any(|o| o.client_order_id == id));
    let canceled = client
        .cancel_order("ETHUSDT", &OrderRef::ClientOrderId(id.clone()))
        .await
        .unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled);

    let missing = OrderRef::ClientOrderId("never-placed".into());
    assert!(client
        .find_order("ETHUSDT", &missing)
        .await
        .unwrap()
        .is_none());
    let error = client.query_order("ETHUSDT", &missing).await.unwrap_err();
    assert!(
        matches!(error, Error::NotFound { code: -2013, .. }),
        "{error:?}"
    );
    let error = client.cancel_order("ETHUSDT", &missing).await.unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_status_503_is_ambiguous_and_the_order_exists() {
    let (sim, client) = support::start().await;
    client.sync_time().await.unwrap();
    faults(&sim, json!({ "unknown_status_503": 1 })).await;
    let id = client_id("503");
    let error = client
        .place_order(&NewOrder::market(
            "ETHUSDT",
            Side::Buy,
            d("0.01"),
            id.clone(),
        ))
        .await
        .unwrap_err();
    assert!(error.is_ambiguous(), "{error:?}");
    assert_eq!(error.code(), Some(-1000));
    let found = client
        .find_order("ETHUSDT", &OrderRef::ClientOrderId(id.clone()))
        .await
        .unwrap();
    assert!(found.is_some(), "the order behind a 503 exists");
    assert_eq!(placed_with(&client, &id).await, 1, "sent exactly once");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_dropped_reply_is_ambiguous_and_the_order_exists() {
    let (sim, client) = support::start().await;
    client.sync_time().await.unwrap();
    faults(&sim, json!({ "drop_order_responses": 1 })).await;
    let id = client_id("drop");
    let error = client
        .place_order(&NewOrder::market(
            "ETHUSDT",
            Side::Buy,
            d("0.01"),
            id.clone(),
        ))
        .await
        .unwrap_err();
    assert!(error.is_ambiguous(), "{error:?}");
    let found = client
        .find_order("ETHUSDT", &OrderRef::ClientOrderId(id.clone()))
        .await
        .unwrap();
    assert!(found.is_some(), "the order behind a dropped reply exists");
    assert_eq!(placed_with(&client, &id).await, 1, "sent exactly once");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_rejected_order_is_rejected_and_absent() {
    let (sim, client) = support::start().await;
    faults(
        &sim,
        json!({ "reject_orders": { "code": -2019, "count": 1 } }),
    )
    .await;
    let id = client_id("reject");
    let error = client
        .place_order(&NewOrder::market(
            "ETHUSDT",
            Side::Buy,
            d("0.01"),
            id.clone(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Rejected { code: -2019, .. }),
        "{error:?}"
    );
    assert!(!error.is_ambiguous());
    let found = client
        .find_order("ETHUSDT", &OrderRef::ClientOrderId(id))
        .await
        .unwrap();
    assert!(found.is_none());
    // The exchange's own filter refusal is also a definite rejection.
    let error = client
        .place_order(&NewOrder::market(
            "ETHUSDT",
            Side::Buy,
            d("0.001"),
            client_id("small"),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Rejected { code: -4164, .. }),
        "{error:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_429_returns_retry_after_for_orders_and_reads_wait_it_out() {
    let (sim, client) = support::start().await;
    client.sync_time().await.unwrap();
    faults(&sim, json!({ "rate_limit_429": 1 })).await;
    let id = client_id("429");
    let error = client
        .place_order(&NewOrder::market(
            "ETHUSDT",
            Side::Buy,
            d("0.01"),
            id.clone(),
        ))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    // During the pause the next order is not even sent.
    let error = client
        .place_order(&NewOrder::market(
            "ETHUSDT",
            Side::Buy,
            d("0.01"),
            id.clone(),
        ))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    // A read waits the pause out and succeeds.
    let started = Instant::now();
    let found = client
        .find_order("ETHUSDT", &OrderRef::ClientOrderId(id))
        .await
        .unwrap();
    assert!(found.is_none(), "neither attempt placed an order");
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A read that itself gets the 429 waits Retry-After and retries once.
    faults(&sim, json!({ "rate_limit_429": 1 })).await;
    let started = Instant::now();
    client.position_mode().await.expect("retried after the 429");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Both 429s are counted, for quantum_rate_limit_bans_total.
    assert_eq!(client.bans_seen(), [(429, 2)]);
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_client_ids_are_refused_locally() {
    let (sim, client) = support::start().await;
    let error = client
        .place_order(&NewOrder::market(
            "ETHUSDT",
            Side::Buy,
            d("0.01"),
            "has space",
        ))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn account_settings_and_algo_orders() {
    let (sim, client) = support::start().await;
    let leverage = client.change_leverage("ETHUSDT", 10).await.unwrap();
    assert_eq!(leverage.leverage, 10);
    let info = client.exchange_info().await.unwrap();
    assert!(info.symbols.iter().any(|s| s.symbol == "BTCUSDT"));
    assert!(client.symbol_rules("BTCUSDT").is_some());

    let id = client_id("algo");
    let algo = NewAlgoOrder::close_position(
        "ETHUSDT",
        Side::Sell,
        AlgoOrderType::StopMarket,
        d("1000"),
        id.clone(),
    );
    let placed = client.place_algo_order(&algo).await.unwrap();
    assert_eq!(placed.algo_status, AlgoStatus::New);
    assert!(placed.close_position);
    let queried = client
        .query_algo_order(&AlgoRef::ClientAlgoId(id.clone()))
        .await
        .unwrap();
    assert_eq!(queried.algo_id, placed.algo_id);
    assert_eq!(queried.trigger_price, Some(d("1000")));
    let open = client.open_algo_orders(Some("ETHUSDT")).await.unwrap();
    assert!(open.iter().any(|a| a.client_algo_id == id));
    let canceled = client
        .cancel_algo_order(&AlgoRef::AlgoId(placed.algo_id))
        .await
        .unwrap();
    assert_eq!(canceled.code, "200");
    let after = client
        .query_algo_order(&AlgoRef::AlgoId(placed.algo_id))
        .await
        .unwrap();
    assert_eq!(after.algo_status, AlgoStatus::Canceled);
    let missing = client
        .find_algo_order(&AlgoRef::ClientAlgoId("never-placed".into()))
        .await
        .unwrap();
    assert!(missing.is_none());
    sim.shutdown().await;
}
