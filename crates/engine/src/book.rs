//! The exit monitor's position book: one lot per filled entry (symbol, direction, quantity,
//! entry price, exit levels, trailing state), closed by reduce-only CLOSE intents that re-enter
//! through the execution service. Pure: results, prices and time come in; actions go out.
//! A lot never has two closes in flight, and a failed close is retried with backoff.

use std::collections::BTreeMap;

use model::{Action, ExecutionResult, ExitPlan, ResultStatus};
use rust_decimal::Decimal;

use crate::exits::{evaluate, Direction, Levels, PlanError, TrailState, Trigger};

/// A close in flight for a lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub intent_id: String,
    pub trigger: Trigger,
    pub sent_at: i64,
    pub attempt: u32,
}

/// One filled entry being watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    /// The opening intent's id; the lot's name.
    pub id: String,
    pub symbol: String,
    pub direction: Direction,
    pub qty: Decimal,
    pub entry: Decimal,
    pub entry_fee: Decimal,
    pub levels: Levels,
    pub trail: TrailState,
    pub opened_at: i64,
    pub closing: Option<Closing>,
    /// A failed close waits until this time before the next attempt.
    pub retry_at: Option<i64>,
    pub failed_closes: u32,
}

/// What the monitor should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookAction {
    /// The trailing peak of a lot moved (log `TRAIL_UPDATE`).
    TrailUpdate { lot: String, peak: Decimal },
    /// Publish a reduce-only CLOSE intent for the lot's quantity.
    Close {
        lot: String,
        symbol: String,
        intent_id: String,
        qty: Decimal,
        trigger: Trigger,
        attempt: u32,
    },
}

/// A lot that was closed, with its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub lot: Lot,
    pub exit_price: Decimal,
    pub exit_qty: Decimal,
    /// (exit − entry) × quantity, signed by direction, minus both fees.
    pub realized_pnl: Decimal,
    /// When the close that filled was sent (ms), for the exit latency.
    pub close_sent_at: i64,
}

/// What a close result did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The lot is flat.
    Closed(Box<Closed>),
    /// Part of the lot closed; the rest stays tracked.
    Reduced {
        lot: String,
        closed: Decimal,
        remaining: Decimal,
        realized_pnl: Decimal,
    },
    /// The close did not fill; it is retried from `retry_at`.
    Failed {
        lot: String,
        status: ResultStatus,
        error: String,
        retry_at: i64,
        attempt: u32,
    },
    /// The result is not about any lot of this book.
    Unknown,
}

/// Backoff of failed closes: 1 s, 2 s, 4 s ... up to 30 s.
fn backoff_ms(failures: u32) -> i64 {
    (1000i64 << failures.min(5)).min(30_000)
}

/// The book.
#[derive(Debug, Clone, Default)]
pub struct Book {
    lots: BTreeMap<String, Lot>,
}

impl Book {
    pub fn lots(&self) -> impl Iterator<Item = &Lot> {
        self.lots.values()
    }

    pub fn lot(&self, id: &str) -> Option<&Lot> {
        self.lots.get(id)
    }

    pub fn symbols(&self) -> std::collections::BTreeSet<String> {
        self.lots.values().map(|l| l.symbol.clone()).collect()
    }

    /// Signed quantity the book holds for `symbol` (positive long).
    pub fn net_qty(&self, symbol: &str) -> Decimal {
        self.lots
            .values()
            .filter(|l| l.symbol == symbol)
            .map(|l| {
                if l.direction == Direction::Long {
                    l.qty
                } else {
                    -l.qty
                }
            })
            .sum()
    }

    /// Opens a lot from a filled BUY/SELL result. The intent's plan wins; `default_plan` fills
    /// in when the intent gave none.
    pub fn open(
        &mut self,
        result: &ExecutionResult,
        default_plan: &ExitPlan,
    ) -> Result<&Lot, PlanError> {
        let direction = if result.action == Action::Sell.as_str() {
            Direction::Short
        } else {
            Direction::Long
        };
        let plan = if result.exit_plan.is_empty() {
            *default_plan
        } else {
            result.exit_plan
        };
        let levels = Levels::resolve(direction, result.entry_price, &plan)?;
        let lot = Lot {
            id: result.intent_id.clone(),
            symbol: result.symbol.clone(),
            direction,
            qty: result.executed_qty,
            entry: result.entry_price,
            entry_fee: result.commission,
            trail: TrailState::new(&levels),
            levels,
            opened_at: result.filled_at.unwrap_or(result.published_at),
            closing: None,
            retry_at: None,
            failed_closes: 0,
        };
        Ok(self.lots.entry(lot.id.clone()).or_insert(lot))
    }

    /// Tracks a position found on the exchange that no result told this book about (opened by
    /// hand, or while results were lost), under `default_plan`.
    pub fn adopt(
        &mut self,
        symbol: &str,
        amount: Decimal,
        entry: Decimal,
        default_plan: &ExitPlan,
        now: i64,
    ) -> Result<&Lot, PlanError> {
        let direction = if amount > Decimal::ZERO {
            Direction::Long
        } else {
            Direction::Short
        };
        let levels = Levels::resolve(direction, entry, default_plan)?;
        let lot = Lot {
            id: format!("exchange-{symbol}-{now}"),
            symbol: symbol.to_string(),
            direction,
            qty: amount.abs(),
            entry,
            entry_fee: Decimal::ZERO,
            trail: TrailState::new(&levels),
            levels,
            opened_at: now,
            closing: None,
            retry_at: None,
            failed_closes: 0,
        };
        Ok(self.lots.entry(lot.id.clone()).or_insert(lot))
    }

    /// Puts back a lot restored from persisted state or the exchange.
    pub fn restore(&mut self, lot: Lot) {
        self.lots.insert(lot.id.clone(), lot);
    }

    /// Removes a lot without a close result (e.g. the exchange shows the symbol flat).
    pub fn remove(&mut self, id: &str) -> Option<Lot> {
        self.lots.remove(id)
    }

    /// One mark price for `symbol` at `now`: trailing updates and closes to send.
    pub fn on_price(&mut self, symbol: &str, mark: Decimal, now: i64) -> Vec<BookAction> {
        let mut actions = Vec::new();
        for lot in self.lots.values_mut().filter(|l| l.symbol == symbol) {
            let evaluation = evaluate(&lot.levels, lot.trail, mark);
            lot.trail = evaluation.state;
            if evaluation.peak_moved && lot.levels.trailing_pct.is_some() {
                actions.push(BookAction::TrailUpdate {
                    lot: lot.id.clone(),
                    peak: lot.trail.peak,
                });
            }
            let Some(trigger) = evaluation.trigger else {
                continue;
            };
            // Never a second close while one is in flight, nor before a failed one's backoff.
            if lot.closing.is_some() || lot.retry_at.is_some_and(|t| now < t) {
                continue;
            }
            let attempt = lot.failed_closes + 1;
            let intent_id = format!("close-{}-{attempt}", lot.id);
            lot.closing = Some(Closing {
                intent_id: intent_id.clone(),
                trigger,
                sent_at: now,
                attempt,
            });
            lot.retry_at = None;
            actions.push(BookAction::Close {
                lot: lot.id.clone(),
                symbol: lot.symbol.clone(),
                intent_id,
                qty: lot.qty,
                trigger,
                attempt,
            });
        }
        actions
    }

    /// Applies the result of a CLOSE intent this book sent.
    pub fn on_close_result(&mut self, result: &ExecutionResult, now: i64) -> CloseOutcome {
        let Some(lot) = self.lots.values_mut().find(|l| {
            l.closing
                .as_ref()
                .is_some_and(|c| c.intent_id == result.intent_id)
        }) else {
            return CloseOutcome::Unknown;
        };
        let sign = if lot.direction == Direction::Long {
            Decimal::ONE
        } else {
            Decimal::NEGATIVE_ONE
        };
        if result.status.has_fill() {
            let closed = result.executed_qty.min(lot.qty);
            let entry_fee_share = if lot.qty.is_zero() {
                Decimal::ZERO
            } else {
                lot.entry_fee * closed / lot.qty
            };
            let pnl = (result.entry_price - lot.entry) * closed * sign
                - entry_fee_share
                - result.commission;
            lot.qty -= closed;
            lot.entry_fee -= entry_fee_share;
            let close_sent_at = lot.closing.take().map_or(now, |c| c.sent_at);
            if lot.qty.is_zero() {
                let lot = lot.clone();
                self.lots.remove(&lot.id);
                return CloseOutcome::Closed(Box::new(Closed {
                    lot,
                    exit_price: result.entry_price,
                    exit_qty: closed,
                    realized_pnl: pnl,
                    close_sent_at,
                }));
            }
            return CloseOutcome::Reduced {
                lot: lot.id.clone(),
                closed,
                remaining: lot.qty,
                realized_pnl: pnl,
            };
        }
        lot.closing = None;
        lot.failed_closes += 1;
        let retry_at = now + backoff_ms(lot.failed_closes - 1);
        lot.retry_at = Some(retry_at);
        CloseOutcome::Failed {
            lot: lot.id.clone(),
            status: result.status,
            error: result.error.clone().unwrap_or_default(),
            retry_at,
            attempt: lot.failed_closes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{ClientOrderId, ConfirmedBy, Execution, TradeIntent};

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn filled(json: &str, price: &str, qty: &str, fee: &str) -> ExecutionResult {
        let intent = TradeIntent::from_json(json).unwrap();
        let coid = ClientOrderId::for_intent(&intent.intent_id);
        let e = Execution {
            order_id: 1,
            avg_price: d(price),
            executed_qty: d(qty),
            commission: d(fee),
            commission_asset: "USDT".into(),
            filled_at: 10,
        };
        ExecutionResult::with_fill(
            &intent,
            &coid,
            ResultStatus::Filled,
            &e,
            ConfirmedBy::UserStream,
            5,
            11,
        )
        .unwrap()
    }

    fn long_with_plan() -> ExecutionResult {
        filled(
            r#"{"intent_id":"L1","symbol":"AXSUSDT","action":"BUY","quantity":10,"take_profit_pct":2,"stop_loss_pct":1}"#,
            "10",
            "10",
            "0.05",
        )
    }

    #[test]
    fn a_take_profit_sends_one_close_and_its_fill_closes_the_lot_with_net_pnl() {
        let mut book = Book::default();
        book.open(&long_with_plan(), &ExitPlan::default()).unwrap();
        assert!(book.on_price("AXSUSDT", d("10.1"), 20).is_empty());
        let actions = book.on_price("AXSUSDT", d("10.2"), 21);
        let BookAction::Close {
            intent_id,
            qty,
            trigger,
            ..
        } = &actions[0]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(
            (intent_id.as_str(), *qty, trigger.marker()),
            ("close-L1-1", d("10"), "TP_HIT")
        );
        assert!(
            book.on_price("AXSUSDT", d("10.3"), 22).is_empty(),
            "no second close while one is in flight"
        );
        let close = filled(
            r#"{"intent_id":"close-L1-1","symbol":"AXSUSDT","action":"CLOSE","quantity":10}"#,
            "10.2",
            "10",
            "0.051",
        );
        let CloseOutcome::Closed(c) = book.on_close_result(&close, 30) else {
            panic!()
        };
        assert_eq!(c.realized_pnl, d("2") - d("0.05") - d("0.051"));
        assert_eq!(book.lots().count(), 0);
    }

    #[test]
    fn a_failed_close_is_retried_after_a_backoff() {
        let mut book = Book::default();
        book.open(&long_with_plan(), &ExitPlan::default()).unwrap();
        book.on_price("AXSUSDT", d("9.9"), 100);
        let intent = TradeIntent::from_json(
            r#"{"intent_id":"close-L1-1","symbol":"AXSUSDT","action":"CLOSE"}"#,
        )
        .unwrap();
        let failed = ExecutionResult::without_fill(
            &intent,
            None,
            ResultStatus::Rejected,
            Some(-2022),
            "ReduceOnly Order is rejected.",
            200,
        );
        let CloseOutcome::Failed {
            retry_at, attempt, ..
        } = book.on_close_result(&failed, 200)
        else {
            panic!()
        };
        assert_eq!((retry_at, attempt), (1200, 1));
        assert!(
            book.on_price("AXSUSDT", d("9.8"), 500).is_empty(),
            "still backing off"
        );
        let actions = book.on_price("AXSUSDT", d("9.8"), 1200);
        assert!(
            matches!(&actions[0], BookAction::Close { intent_id, attempt: 2, .. } if intent_id == "close-L1-2")
        );
    }

    #[test]
    fn the_default_plan_protects_a_lot_whose_intent_gave_none() {
        let mut book = Book::default();
        let bare = filled(
            r#"{"intent_id":"S1","symbol":"ETHUSDT","action":"SELL","quantity":1}"#,
            "100",
            "1",
            "0",
        );
        let default = ExitPlan {
            stop_loss: Some(model::ExitLevel::Pct(d("2"))),
            ..ExitPlan::default()
        };
        let lot = book.open(&bare, &default).unwrap();
        assert_eq!(
            lot.levels.stop_loss,
            Some(d("102")),
            "a short's stop is above its entry"
        );
        assert_eq!(book.net_qty("ETHUSDT"), d("-1"));
    }
}
