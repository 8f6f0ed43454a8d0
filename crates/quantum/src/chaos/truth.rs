//! Truth collection: what the bus and the exchange say at the end of a run, read once the
//! services are stopped. From Redis: every execution result, every entry of the intent stream
//! (to find the exit monitor's CLOSE intents), the dead letters and the consumer groups. From the
//! exchange, over signed REST with the simulator's keys: every order and every trade of each
//! symbol (paged with `orderId` / `fromId`, which `binance::RestClient::all_orders` does not
//! offer, so those two are signed here with `binance::signature`), positions (`positionRisk`),
//! open orders and open algo orders (through `binance::RestClient`).
//!
//! Each part is `Err(reason)` when it could not be read: the invariants that need it then say
//! they could not be checked, instead of passing on missing data.

use std::collections::BTreeMap;
use std::time::Duration;

use binance::types::{PositionRisk, UserTrade};
use binance::{AlgoOrder, Order, RestClient};
use bus::{keys, Bus, GroupInfo};
use model::ExecutionResult;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One result on the results stream.
#[derive(Debug, Clone)]
pub struct ResultEntry {
    pub entry_id: String,
    pub raw: String,
    /// The result as the exit monitor reads it, or why it cannot be read.
    pub parsed: Result<ExecutionResult, String>,
    /// `intent_id` as written (read from the JSON even when `parsed` fails).
    pub intent_id: String,
    pub status: String,
}

/// What the bus holds at the end.
#[derive(Debug, Default)]
pub struct BusTruth {
    /// Oldest first.
    pub results: Vec<ResultEntry>,
    /// Intent stream entries (id, text), oldest first.
    pub intents: Vec<(String, String)>,
    /// Dead letters as JSON, oldest first.
    pub dead_letters: Vec<Value>,
    pub intent_groups: Vec<GroupInfo>,
    pub result_groups: Vec<GroupInfo>,
}

/// What the exchange says at the end.
#[derive(Debug)]
pub struct ExchangeTruth {
    pub orders: Result<Vec<Order>, String>,
    pub trades: Result<Vec<UserTrade>, String>,
    /// Non-zero positions.
    pub positions: Result<Vec<PositionRisk>, String>,
    pub open_orders: Result<Vec<Order>, String>,
    pub open_algos: Result<Vec<AlgoOrder>, String>,
}

/// Reads the whole bus (stream entries newest first from Redis, returned oldest first).
pub async fn read_bus(bus: &Bus) -> Result<BusTruth, String> {
    let all = |stream: &'static str| async move {
        let len = bus
            .len(stream)
            .await
            .map_err(|e| format!("{stream}: {e}"))?;
        let mut entries = bus
            .latest(stream, len as usize + 100)
            .await
            .map_err(|e| format!("{stream}: {e}"))?;
        entries.reverse();
        Ok::<_, String>(entries)
    };
    let mut truth = BusTruth::default();
    for entry in all(keys::TRADE_EXECUTION_RESULT).await? {
        let raw = match entry.payload {
            Ok(text) => text,
            Err(m) => format!("<{}>", m.describe()),
        };
        let value: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
        truth.results.push(ResultEntry {
            entry_id: entry.id,
            parsed: ExecutionResult::from_json(&raw).map_err(|e| e.to_string()),
            intent_id: value["intent_id"].as_str().unwrap_or("").to_string(),
            status: value["status"].as_str().unwrap_or("").to_string(),
            raw,
        });
    }
    for entry in all(keys::TRADE_INTENT).await? {
        let text = entry.payload.unwrap_or_default();
        truth.intents.push((entry.id, text));
    }
    for entry in all(keys::DEAD_LETTER).await? {
        if let Ok(text) = entry.payload {
            truth
                .dead_letters
                .push(serde_json::from_str(&text).unwrap_or(Value::String(text)));
        }
    }
    truth.intent_groups = bus
        .group_info(keys::TRADE_INTENT)
        .await
        .map_err(|e| e.to_string())?;
    truth.result_groups = bus
        .group_info(keys::TRADE_EXECUTION_RESULT)
        .await
        .map_err(|e| e.to_string())?;
    Ok(truth)
}

/// Signed GETs with paging, for the two list endpoints the client cannot page.
#[derive(Debug)]
pub struct Pager {
    http: reqwest::Client,
    rest: RestClient,
    base: String,
    api_key: String,
    api_secret: String,
}

impl Pager {
    pub fn new(rest: RestClient, base: &str, api_key: &str, api_secret: &str) -> Pager {
        Pager {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            rest,
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            api_secret: api_secret.to_string(),
        }
    }

    /// One signed GET; a 429/418 is waited out (its `Retry-After`) a few times.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<T, String> {
        for _attempt in 0..8 {
            let mut query: Vec<(&str, String)> = params.to_vec();
            query.push(("timestamp", self.rest.server_now_ms().to_string()));
            query.push(("recvWindow", "10000".to_string()));
            let encoded = query
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            let signature = binance::signature(&self.api_secret, &encoded);
            let url = format!("{}{path}?{encoded}&signature={signature}", self.base);
            let reply = self
                .http
                .get(&url)
                .header("X-MBX-APIKEY", &self.api_key)
                .send()
                .await
                .map_err(|e| format!("GET {path}: {e}"))?;
            let status = reply.status().as_u16();
            if status == 429 || status == 418 {
                let wait = reply
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1)
                    .min(30);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            let body = reply.text().await.map_err(|e| format!("GET {path}: {e}"))?;
            if status != 200 {
                return Err(format!("GET {path}: HTTP {status}: {body}"));
            }
            return serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"));
        }
        Err(format!("GET {path}: still rate-limited after 8 attempts"))
    }

    /// Every order of `symbol`, oldest first.
    pub async fn all_orders(&self, symbol: &str) -> Result<Vec<Order>, String> {
        let mut out: Vec<Order> = Vec::new();
        let mut from = 0i64;
        loop {
            let page: Vec<Order> = self
                .get(
                    "/fapi/v1/allOrders",
                    &[
                        ("symbol", symbol.to_string()),
                        ("orderId", from.to_string()),
                        ("limit", "1000".to_string()),
                    ],
                )
                .await?;
            let full = page.len() == 1000;
            if let Some(last) = page.last() {
                from = last.order_id + 1;
            }
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// Every trade of `symbol`, oldest first.
    pub async fn all_trades(&self, symbol: &str) -> Result<Vec<UserTrade>, String> {
        let mut out: Vec<UserTrade> = Vec::new();
        let mut from = 0i64;
        loop {
            let page: Vec<UserTrade> = self
                .get(
                    "/fapi/v1/userTrades",
                    &[
                        ("symbol", symbol.to_string()),
                        ("fromId", from.to_string()),
                        ("limit", "1000".to_string()),
                    ],
                )
                .await?;
            let full = page.len() == 1000;
            if let Some(last) = page.last() {
                from = last.id + 1;
            }
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }
}

/// Retries a client call a few times on errors that say "try later".
async fn with_retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, binance::Error>>,
{
    let mut last = String::new();
    for _ in 0..6 {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    Err(format!("{what}: {last}"))
}

/// A position as the report names it: the symbol on a one-way account, `SYMBOL LONG` /
/// `SYMBOL SHORT` on a hedge-mode one.
pub fn position_name(p: &PositionRisk) -> String {
    match p.position_side {
        binance::PositionSide::Both => p.symbol.clone(),
        ref side => format!("{} {side}", p.symbol),
    }
}

/// Whether a position name (see [`position_name`]) is one of `symbol`'s positions.
pub fn name_is_of(name: &str, symbol: &str) -> bool {
    name == symbol
        || name
            .strip_prefix(symbol)
            .is_some_and(|rest| rest.starts_with(' '))
}

/// Positions that are not zero (`Err` when they cannot be read).
pub async fn positions(rest: &RestClient) -> Result<Vec<PositionRisk>, String> {
    let all = with_retry("positionRisk", || rest.position_risk(None)).await?;
    Ok(all
        .into_iter()
        .filter(|p| !p.position_amt.is_zero())
        .collect())
}

/// Open algo orders of the account.
pub async fn open_algos(rest: &RestClient) -> Result<Vec<AlgoOrder>, String> {
    with_retry("openAlgoOrders", || rest.open_algo_orders(None)).await
}

/// Reads the exchange: orders and trades of `symbols`, positions, open orders and algo orders.
pub async fn read_exchange(rest: &RestClient, pager: &Pager, symbols: &[String]) -> ExchangeTruth {
    let _ = rest.sync_time().await;
    let mut orders = Ok(Vec::new());
    let mut trades = Ok(Vec::new());
    for symbol in symbols {
        match (&mut orders, pager.all_orders(symbol).await) {
            (Ok(all), Ok(mut some)) => all.append(&mut some),
            (Ok(_), Err(e)) => orders = Err(format!("{symbol}: {e}")),
            _ => {}
        }
        match (&mut trades, pager.all_trades(symbol).await) {
            (Ok(all), Ok(mut some)) => all.append(&mut some),
            (Ok(_), Err(e)) => trades = Err(format!("{symbol}: {e}")),
            _ => {}
        }
    }
    ExchangeTruth {
        orders,
        trades,
        positions: positions(rest).await,
        open_orders: with_retry("openOrders", || rest.open_orders(None)).await,
        open_algos: open_algos(rest).await,
    }
}

/// Orders by client order id.
pub fn orders_by_client_id(orders: &[Order]) -> BTreeMap<&str, Vec<&Order>> {
    let mut map: BTreeMap<&str, Vec<&Order>> = BTreeMap::new();
    for order in orders {
        map.entry(order.client_order_id.as_str())
            .or_default()
            .push(order);
    }
    map
}
