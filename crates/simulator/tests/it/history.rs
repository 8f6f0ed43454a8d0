//! The account's history and settings over HTTP, in Binance's documented shapes: income from
//! the account's own trades, the multi-assets mode, the order limits, and liquidations (none).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::shape::{assert_matches_fixture, Allow};
use crate::support::{start, wait_until, Client};

const WAIT: Duration = Duration::from_secs(5);

async fn ok(client: &Client, path: &str, params: &[(&str, &str)]) -> Value {
    let (status, _, body) = client.signed(Method::GET, path, params).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

async fn market(client: &Client, side: &str) {
    let params = [
        ("symbol", "BTCUSDT"),
        ("side", side),
        ("type", "MARKET"),
        ("quantity", "0.010"),
    ];
    let (status, _, body) = client.signed(Method::POST, "/fapi/v1/order", &params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn income_lists_the_commissions_and_realized_pnl_of_the_accounts_trades() {
    let (sim, client) = start().await;
    client.pin_price("BTCUSDT", "65000").await;
    market(&client, "BUY").await;
    market(&client, "SELL").await;
    let rows = wait_until(WAIT, "both fills in the income history", || {
        let client = &client;
        async move {
            let rows = ok(client, "/fapi/v1/income", &[("symbol", "BTCUSDT")]).await;
            let commissions = rows
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["incomeType"] == "COMMISSION")
                .count();
            (commissions == 2).then_some(rows)
        }
    })
    .await;
    assert_matches_fixture(&rows, "rest__income.json", &Allow::none());
    let mode = ok(&client, "/fapi/v1/multiAssetsMargin", &[]).await;
    assert_matches_fixture(&mode, "rest__multi_assets_margin_get.json", &Allow::none());
    assert_eq!(mode, json!({"multiAssetsMargin": false}));
    let limits = ok(&client, "/fapi/v1/rateLimit/order", &[]).await;
    assert_eq!(limits[0]["limit"], 300);
    assert_eq!(limits[1]["limit"], 1200);
    let liquidations = ok(&client, "/fapi/v1/forceOrders", &[("symbol", "BTCUSDT")]).await;
    assert_eq!(liquidations, json!([]));
    sim.shutdown().await;
}
