//! What the exchange holds that quantum does not watch: positions the exit monitor's book does
//! not track (opened by hand, by another tool, or while the monitor was not running) and
//! positions without an exchange-side stop. `quantum positions` lists them and `quantum doctor`
//! fails on them; the comparison is pure, so it is tested on its own.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;

/// One position on the exchange (one-way mode: one signed amount per symbol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPosition {
    pub symbol: String,
    /// Signed: positive long, negative short.
    pub amount: Decimal,
}

/// A conditional order resting on the exchange, as far as protection is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestingStop {
    pub symbol: String,
    /// Whether it sells (protects a long) or buys (protects a short).
    pub sells: bool,
    /// A stop or trailing stop (loss protection), not a take-profit.
    pub is_stop: bool,
}

/// Something the operator should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The exchange holds more (or another side) than the book tracks.
    Untracked {
        symbol: String,
        exchange: Decimal,
        tracked: Decimal,
    },
    /// A position with no stop on the exchange: if quantum's processes stop, nothing limits
    /// its loss.
    Unprotected { symbol: String, amount: Decimal },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Untracked {
                symbol,
                exchange,
                tracked,
            } => write!(
                f,
                "{symbol}: the exchange holds {} but quantum tracks {}",
                exchange.normalize(),
                tracked.normalize()
            ),
            Finding::Unprotected { symbol, amount } => write!(
                f,
                "{symbol}: position {} has no stop on the exchange",
                amount.normalize()
            ),
        }
    }
}

/// Compares the exchange's positions with the book's net amounts (`tracked`, signed, by symbol)
/// and the stops resting on the exchange. A position is tracked when the book holds the same
/// side and at least as much (less is untracked: part of it is nobody's); it is protected when a
/// stop on the closing side rests for its symbol.
pub fn findings(
    held: &[HeldPosition],
    tracked: &BTreeMap<String, Decimal>,
    stops: &[RestingStop],
) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in held.iter().filter(|p| !p.amount.is_zero()) {
        let book = tracked.get(&p.symbol).copied().unwrap_or_default();
        let same_side = book.is_sign_positive() == p.amount.is_sign_positive() && !book.is_zero();
        if !same_side || book.abs() < p.amount.abs() {
            out.push(Finding::Untracked {
                symbol: p.symbol.clone(),
                exchange: p.amount,
                tracked: book,
            });
        }
        let long = p.amount.is_sign_positive();
        let protected = stops
            .iter()
            .any(|s| s.symbol == p.symbol && s.is_stop && s.sells == long);
        if !protected {
            out.push(Finding::Unprotected {
                symbol: p.symbol.clone(),
                amount: p.amount,
            });
        }
    }
    out
}

/// Reads the three sides (the exchange's positions and open algo orders, the monitor's saved
/// book) and compares them.
pub async fn read(rest: &binance::RestClient, bus: &bus::Bus) -> Result<Vec<Finding>, String> {
    let positions = rest
        .position_risk(None)
        .await
        .map_err(|e| format!("positions: {e}"))?;
    let algos = rest
        .open_algo_orders(None)
        .await
        .map_err(|e| format!("open algo orders: {e}"))?;
    let saved = crate::monitor_state::load(bus)
        .await
        .map_err(|e| format!("the exit monitor's book: {e}"))?;
    let mut held: BTreeMap<String, Decimal> = BTreeMap::new();
    for p in positions {
        let sum = held.entry(p.symbol).or_default();
        *sum = sum.checked_add(p.position_amt).unwrap_or(*sum);
    }
    let held: Vec<HeldPosition> = held
        .into_iter()
        .map(|(symbol, amount)| HeldPosition { symbol, amount })
        .collect();
    let mut tracked: BTreeMap<String, Decimal> = BTreeMap::new();
    for lot in &saved.lots {
        let signed = match lot.direction {
            engine::exits::Direction::Long => lot.qty,
            engine::exits::Direction::Short => -lot.qty,
        };
        let sum = tracked.entry(lot.symbol.clone()).or_default();
        *sum = sum.saturating_add(signed);
    }
    let stops: Vec<RestingStop> = algos
        .into_iter()
        .map(|a| RestingStop {
            symbol: a.symbol,
            sells: a.side == binance::Side::Sell,
            is_stop: matches!(
                a.order_type,
                binance::AlgoOrderType::StopMarket
                    | binance::AlgoOrderType::Stop
                    | binance::AlgoOrderType::TrailingStopMarket
            ),
        })
        .collect();
    Ok(findings(&held, &tracked, &stops))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn held(symbol: &str, amount: &str) -> HeldPosition {
        HeldPosition {
            symbol: symbol.into(),
            amount: d(amount),
        }
    }

    fn stop(symbol: &str, sells: bool) -> RestingStop {
        RestingStop {
            symbol: symbol.into(),
            sells,
            is_stop: true,
        }
    }

    #[test]
    fn a_tracked_and_protected_position_is_fine() {
        let tracked = BTreeMap::from([("BTCUSDT".to_string(), d("0.01"))]);
        assert!(findings(
            &[held("BTCUSDT", "0.01")],
            &tracked,
            &[stop("BTCUSDT", true)]
        )
        .is_empty());
    }

    #[test]
    fn a_position_opened_by_hand_is_untracked_and_unprotected() {
        let found = findings(&[held("ETHUSDT", "-0.5")], &BTreeMap::new(), &[]);
        assert_eq!(
            found,
            [
                Finding::Untracked {
                    symbol: "ETHUSDT".into(),
                    exchange: d("-0.5"),
                    tracked: Decimal::ZERO
                },
                Finding::Unprotected {
                    symbol: "ETHUSDT".into(),
                    amount: d("-0.5")
                },
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "ETHUSDT: position -0.5 has no stop on the exchange"
        );
    }

    #[test]
    fn more_on_the_exchange_or_the_other_side_is_untracked_and_a_take_profit_is_no_stop() {
        let tracked = BTreeMap::from([
            ("BTCUSDT".to_string(), d("0.01")),
            ("SOLUSDT".to_string(), d("2")),
        ]);
        let take_profit = RestingStop {
            symbol: "SOLUSDT".into(),
            sells: false,
            is_stop: false,
        };
        let found = findings(
            &[held("BTCUSDT", "0.02"), held("SOLUSDT", "-1")],
            &tracked,
            &[stop("BTCUSDT", true), take_profit, stop("SOLUSDT", true)],
        );
        let kinds: Vec<String> = found.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            kinds,
            [
                "BTCUSDT: the exchange holds 0.02 but quantum tracks 0.01",
                "SOLUSDT: the exchange holds -1 but quantum tracks 2",
                "SOLUSDT: position -1 has no stop on the exchange",
            ]
        );
    }

    #[test]
    fn flat_symbols_are_not_findings() {
        assert!(findings(&[held("BTCUSDT", "0")], &BTreeMap::new(), &[]).is_empty());
    }
}
