//! The account's history and standing settings that trading clients read at start or for
//! reports: `GET /fapi/v1/income` (realized PnL and commissions, from the account's trades),
//! `GET /fapi/v1/forceOrders` (liquidations: none are simulated), `GET /fapi/v1/multiAssetsMargin`
//! (single-asset mode) and `GET /fapi/v1/rateLimit/order` (the order limits the simulator
//! enforces).
//!
//! Income has no funding fees or transfers because the simulator has neither; a trade gives a
//! `COMMISSION` entry, and a `REALIZED_PNL` entry when it closed something.

use serde_json::{json, Value};

use super::{limit_param, Exchange};
use crate::auth::Params;
use crate::error::ApiError;
use crate::ratelimit::{ORDER_LIMIT_10S, ORDER_LIMIT_1M};
use crate::wire;

/// The income types this account can have, as Binance spells them.
const INCOME_TYPES: [&str; 2] = ["REALIZED_PNL", "COMMISSION"];
/// Binance: without `startTime` and `endTime`, the last 7 days.
const DEFAULT_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

impl Exchange {
    /// `GET /fapi/v1/income`: oldest first, `limit` 1 to 1000 (default 100).
    pub(crate) fn income(&self, params: &Params, now: i64) -> Result<Vec<Value>, ApiError> {
        let symbol = self.optional_symbol(params)?;
        let income_type = params.get("incomeType");
        if let Some(t) = income_type {
            // Binance's other types (TRANSFER, FUNDING_FEE, ...) are valid and find nothing here.
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                return Err(ApiError::malformed("incomeType"));
            }
        }
        let end = params.int("endTime")?;
        let start = params.int("startTime")?;
        let start = start.unwrap_or(end.unwrap_or(now).saturating_sub(DEFAULT_WINDOW_MS));
        let limit = limit_param(params, 100, 1000)?;
        let mut rows = Vec::new();
        for trade in &self.trades {
            if symbol.as_deref().is_some_and(|s| s != trade.symbol)
                || trade.time < start
                || end.is_some_and(|e| trade.time > e)
            {
                continue;
            }
            for kind in INCOME_TYPES {
                if income_type.is_some_and(|t| t != kind) {
                    continue;
                }
                let amount = match kind {
                    "REALIZED_PNL" if trade.realized_pnl.is_zero() => continue,
                    "REALIZED_PNL" => trade.realized_pnl,
                    _ => -trade.commission,
                };
                rows.push(json!({
                    "symbol": trade.symbol,
                    "incomeType": kind,
                    "income": wire::fmt8(amount),
                    "asset": "USDT",
                    "info": kind,
                    "time": trade.time,
                    // One transaction per trade and kind; Binance's ids are its own.
                    "tranId": trade.id * 10 + i64::from(kind == "COMMISSION"),
                    "tradeId": trade.id.to_string(),
                }));
            }
        }
        rows.truncate(limit);
        Ok(rows)
    }

    /// `GET /fapi/v1/forceOrders`: the account's liquidation and ADL orders. The simulator
    /// liquidates nobody, so the list is empty; the parameters are checked as Binance does.
    pub(crate) fn force_orders(&self, params: &Params) -> Result<Vec<Value>, ApiError> {
        self.optional_symbol(params)?;
        if let Some(kind) = params.get("autoCloseType") {
            if kind != "LIQUIDATION" && kind != "ADL" {
                return Err(ApiError::malformed("autoCloseType"));
            }
        }
        limit_param(params, 50, 100)?;
        Ok(Vec::new())
    }

    /// `GET /fapi/v1/multiAssetsMargin`: the simulator's account is in single-asset mode.
    pub(crate) fn multi_assets_margin(&self) -> Value {
        json!({ "multiAssetsMargin": false })
    }

    /// `GET /fapi/v1/rateLimit/order`: the account's order limits, the ones enforced here.
    pub(crate) fn order_rate_limits(&self) -> Value {
        json!([
            { "rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": ORDER_LIMIT_10S },
            { "rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": ORDER_LIMIT_1M },
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use rust_decimal::Decimal;

    const NOW: i64 = 1_800_000_000_000;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Params::parse(&query.join("&"), "")
    }

    /// An exchange where BTCUSDT was bought, then sold higher: two commissions, one PnL.
    fn traded() -> Exchange {
        let mut ex = Exchange::new(&SimConfig::default()).expect("default config");
        ex.start(NOW);
        for (side, at) in [("BUY", NOW + 1), ("SELL", NOW + 2)] {
            let id = ex
                .place_order(
                    &params(&[
                        ("symbol", "BTCUSDT"),
                        ("side", side),
                        ("type", "MARKET"),
                        ("quantity", "0.010"),
                    ]),
                    at,
                )
                .unwrap();
            let price =
                ex.markets["BTCUSDT"].last + Decimal::from(if side == "BUY" { 0 } else { 100 });
            ex.apply_fill(id, price, "0.010".parse().unwrap(), false, at);
        }
        ex
    }

    #[test]
    fn income_lists_each_trades_commission_and_the_realized_pnl_of_the_close() {
        let ex = traded();
        let rows = ex.income(&params(&[]), NOW + 10).unwrap();
        let kinds: Vec<&str> = rows
            .iter()
            .map(|r| r["incomeType"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["COMMISSION", "REALIZED_PNL", "COMMISSION"]);
        assert_eq!(rows[1]["income"], "1.00000000", "0.010 x 100 USDT");
        assert!(rows[0]["income"].as_str().unwrap().starts_with('-'));
        let pnl = ex
            .income(&params(&[("incomeType", "REALIZED_PNL")]), NOW + 10)
            .unwrap();
        assert_eq!(pnl.len(), 1);
        let none = ex
            .income(&params(&[("incomeType", "FUNDING_FEE")]), NOW + 10)
            .unwrap();
        assert!(none.is_empty());
        let ids: Vec<&Value> = rows.iter().map(|r| &r["tranId"]).collect();
        assert_eq!(ids.len(), 3);
        assert!(ids[0] != ids[1] && ids[1] != ids[2]);
    }

    #[test]
    fn income_outside_its_window_or_of_a_bad_type_is_refused_or_empty() {
        let ex = traded();
        let later = ex
            .income(&params(&[]), NOW + DEFAULT_WINDOW_MS + 100)
            .unwrap();
        assert!(
            later.is_empty(),
            "trades older than 7 days are outside the default window"
        );
        assert_eq!(
            ex.income(&params(&[("incomeType", "bad type")]), NOW)
                .unwrap_err()
                .code,
            -1102
        );
        assert_eq!(
            ex.income(&params(&[("limit", "0")]), NOW).unwrap_err().code,
            -1130
        );
    }

    #[test]
    fn no_liquidations_and_the_enforced_limits_are_what_the_account_reports() {
        let ex = traded();
        assert_eq!(ex.force_orders(&params(&[])).unwrap(), Vec::<Value>::new());
        assert_eq!(
            ex.force_orders(&params(&[("autoCloseType", "X")]))
                .unwrap_err()
                .code,
            -1102
        );
        let limits = ex.order_rate_limits();
        assert_eq!(limits[0]["limit"], ORDER_LIMIT_10S);
        assert_eq!(limits[1]["limit"], ORDER_LIMIT_1M);
    }
}
