//! What the exchange holds that quantum does not watch: positions the exit monitor's book does
//! not track (opened by hand, by another tool, or while the monitor was not running) and
//! positions without an exchange-side stop. `quantum positions` lists them and `quantum doctor`
//! fails on them; the comparison is pure, so it is tested on its own.

use std::collections::BTreeMap;
use std::fmt;

use engine::monitor::Book;
use model::PositionSide;
use rust_decimal::Decimal;

/// One position on the exchange: one signed amount per symbol on a one-way account, one per
/// side (LONG, SHORT) on a hedge-mode account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPosition {
    pub book: Book,
    /// Signed: positive long, negative short.
    pub amount: Decimal,
}

/// A conditional order resting on the exchange, as far as protection is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestingStop {
    /// The symbol and the `positionSide` the order carries (`BOTH` on a one-way account).
    pub book: Book,
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
        book: Book,
        exchange: Decimal,
        tracked: Decimal,
    },
    /// A position with no stop on the exchange: if quantum's processes stop, nothing limits
    /// its loss.
    Unprotected { book: Book, amount: Decimal },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Untracked {
                book,
                exchange,
                tracked,
            } => write!(
                f,
                "{book}: the exchange holds {} but quantum tracks {}",
                exchange.normalize(),
                tracked.normalize()
            ),
            Finding::Unprotected { book, amount } => write!(
                f,
                "{book}: position {} has no stop on the exchange",
                amount.normalize()
            ),
        }
    }
}

/// Compares the exchange's positions with the monitor's net amounts (`tracked`, signed, by
/// book) and the stops resting on the exchange. A position is tracked when the monitor holds the
/// same direction and at least as much in its book (less is untracked: part of it is nobody's);
/// it is protected when a stop on the closing side rests for its book (on a hedge account, a
/// stop of the other side protects nothing here).
pub fn findings(
    held: &[HeldPosition],
    tracked: &BTreeMap<Book, Decimal>,
    stops: &[RestingStop],
) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in held.iter().filter(|p| !p.amount.is_zero()) {
        let mine = tracked.get(&p.book).copied().unwrap_or_default();
        let same_side = mine.is_sign_positive() == p.amount.is_sign_positive() && !mine.is_zero();
        if !same_side || mine.abs() < p.amount.abs() {
            out.push(Finding::Untracked {
                book: p.book.clone(),
                exchange: p.amount,
                tracked: mine,
            });
        }
        let long = p.amount.is_sign_positive();
        let protected = stops
            .iter()
            .any(|s| s.book == p.book && s.is_stop && s.sells == long);
        if !protected {
            out.push(Finding::Unprotected {
                book: p.book.clone(),
                amount: p.amount,
            });
        }
    }
    out
}

/// The book a wire `positionSide` names (an unknown value reads as `BOTH`).
fn book(symbol: String, side: &binance::PositionSide) -> Book {
    Book::new(symbol, side.to_model().unwrap_or(PositionSide::Both))
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
    let mut held: BTreeMap<Book, Decimal> = BTreeMap::new();
    for p in positions {
        let sum = held.entry(book(p.symbol, &p.position_side)).or_default();
        *sum = sum.checked_add(p.position_amt).unwrap_or(*sum);
    }
    let held: Vec<HeldPosition> = held
        .into_iter()
        .map(|(book, amount)| HeldPosition { book, amount })
        .collect();
    let mut tracked: BTreeMap<Book, Decimal> = BTreeMap::new();
    for lot in &saved.lots {
        let signed = match lot.direction {
            engine::exits::Direction::Long => lot.qty,
            engine::exits::Direction::Short => -lot.qty,
        };
        let sum = tracked.entry(lot.book()).or_default();
        *sum = sum.saturating_add(signed);
    }
    let stops: Vec<RestingStop> = algos
        .into_iter()
        .map(|a| RestingStop {
            book: book(a.symbol, &a.position_side),
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
            book: Book::both(symbol),
            amount: d(amount),
        }
    }

    fn stop(symbol: &str, sells: bool) -> RestingStop {
        RestingStop {
            book: Book::both(symbol),
            sells,
            is_stop: true,
        }
    }

    #[test]
    fn a_tracked_and_protected_position_is_fine() {
        let tracked = BTreeMap::from([(Book::both("BTCUSDT"), d("0.01"))]);
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
                    book: Book::both("ETHUSDT"),
                    exchange: d("-0.5"),
                    tracked: Decimal::ZERO
                },
                Finding::Unprotected {
                    book: Book::both("ETHUSDT"),
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
            (Book::both("BTCUSDT"), d("0.01")),
            (Book::both("SOLUSDT"), d("2")),
        ]);
        let take_profit = RestingStop {
            book: Book::both("SOLUSDT"),
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

    /// Hedge mode: each side is a position of its own. The LONG side tracked and stopped is
    /// fine; the SHORT side of the same symbol, untracked, is found, and the LONG side's stop
    /// does not count as its protection.
    #[test]
    fn on_a_hedge_account_each_side_is_checked_on_its_own() {
        let long = Book::new("BTCUSDT", PositionSide::Long);
        let short = Book::new("BTCUSDT", PositionSide::Short);
        let tracked = BTreeMap::from([(long.clone(), d("0.01"))]);
        let found = findings(
            &[
                HeldPosition {
                    book: long.clone(),
                    amount: d("0.01"),
                },
                HeldPosition {
                    book: short.clone(),
                    amount: d("-0.02"),
                },
            ],
            &tracked,
            &[RestingStop {
                book: long,
                sells: true,
                is_stop: true,
            }],
        );
        let said: Vec<String> = found.iter().map(|f| f.to_string()).collect();
        assert_eq!(
            said,
            [
                "BTCUSDT SHORT: the exchange holds -0.02 but quantum tracks 0",
                "BTCUSDT SHORT: position -0.02 has no stop on the exchange",
            ]
        );
    }

    #[test]
    fn flat_symbols_are_not_findings() {
        assert!(findings(&[held("BTCUSDT", "0")], &BTreeMap::new(), &[]).is_empty());
    }
}
