//! Fill confirmation: one [`Tracker`] per order gathers what the exchange reports about it, from
//! the RESULT reply, the user stream (ORDER_TRADE_UPDATE / TRADE_LITE) and REST polls, whichever
//! comes first, and says when the outcome is confirmed and what it is. Fills are counted once per
//! trade id however many times they are reported; statuses only move forward through
//! [`model::OrderStatus::apply`]. Nothing here decides that an order filled unless a report says so.

use std::collections::BTreeMap;

use model::{ConfirmedBy, OrderStatus, ResultStatus, TransitionError};
use rust_decimal::Decimal;

/// Where a report came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource {
    ResultReply,
    UserStream,
    RestPoll,
}

impl ReportSource {
    fn confirmed_by(self) -> ConfirmedBy {
        match self {
            ReportSource::ResultReply => ConfirmedBy::ResultReply,
            ReportSource::UserStream => ConfirmedBy::UserStream,
            ReportSource::RestPoll => ConfirmedBy::RestPoll,
        }
    }
}

/// One fill, as the user stream (or userTrades) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeReport {
    pub trade_id: i64,
    pub qty: Decimal,
    pub price: Decimal,
    /// Absent when the event carried none.
    pub commission: Option<Decimal>,
    pub commission_asset: Option<String>,
    /// The exchange's trade time (ms).
    pub time: i64,
}

/// One report about the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub source: ReportSource,
    pub order_id: i64,
    pub status: OrderStatus,
    /// Cumulative executed quantity as reported (`executedQty` / `z`).
    pub cumulative_qty: Decimal,
    /// Average price as reported (`avgPrice` / `ap`); zero when nothing filled.
    pub avg_price: Decimal,
    /// The fill this report carries (user-stream TRADE events).
    pub trade: Option<TradeReport>,
    /// The exchange's time of this report (ms): update or transaction time.
    pub time: i64,
}

/// What the exchange confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: ResultStatus,
    pub order_id: i64,
    pub executed_qty: Decimal,
    pub avg_price: Decimal,
    /// Sum of the fills' commissions when every fill is known with its commission; `None`
    /// otherwise (the caller fetches the order's trades to complete it).
    pub commission: Option<Decimal>,
    pub commission_asset: String,
    pub confirmed_by: ConfirmedBy,
    /// Time of the last fill, or of the final report when nothing filled.
    pub final_time: i64,
}

/// What quantum knows about one order.
#[derive(Debug, Clone)]
pub struct Tracker {
    order_id: Option<i64>,
    status: OrderStatus,
    reported_qty: Decimal,
    reported_avg: Decimal,
    fills: BTreeMap<i64, TradeReport>,
    last_time: i64,
    final_source: Option<ReportSource>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker {
            order_id: None,
            status: OrderStatus::New,
            reported_qty: Decimal::ZERO,
            reported_avg: Decimal::ZERO,
            fills: BTreeMap::new(),
            last_time: 0,
            final_source: None,
        }
    }

    pub fn status(&self) -> OrderStatus {
        self.status
    }

    pub fn order_id(&self) -> Option<i64> {
        self.order_id
    }

    /// Quantity filled so far, as far as any report knows.
    pub fn executed_qty(&self) -> Decimal {
        self.reported_qty.max(self.fills_qty())
    }

    fn fills_qty(&self) -> Decimal {
        self.fills.values().map(|f| f.qty).sum()
    }

    /// Takes one report. A report that contradicts what is known (a FILLED order reported
    /// cancelled) is refused with the error and changes nothing; the caller logs it loudly.
    /// Returns true when the report brought news (a new fill or a new status).
    pub fn apply(&mut self, report: &Report) -> Result<bool, TransitionError> {
        let next = self.status.apply(report.status.as_event())?;
        let mut news = next != self.status;
        self.order_id = Some(report.order_id);
        if let Some(trade) = &report.trade {
            match self.fills.entry(trade.trade_id) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(trade.clone());
                    news = true;
                }
                // The same fill again. A TRADE_LITE (no fees) often comes before the
                // ORDER_TRADE_UPDATE of the same trade (with fees): the fees are filled in.
                std::collections::btree_map::Entry::Occupied(mut known) => {
                    let known = known.get_mut();
                    if known.commission.is_none() && trade.commission.is_some() {
                        known.commission = trade.commission;
                        known.commission_asset = trade.commission_asset.clone();
                        news = true;
                    }
                }
            }
        }
        // Cumulative figures only grow; an older report cannot lower them. A report of the same
        // quantity that carries the average where the one before did not (a TRADE_LITE, then
        // the ORDER_TRADE_UPDATE) fills it in.
        let fills_in_avg = report.cumulative_qty == self.reported_qty
            && self.reported_avg.is_zero()
            && report.avg_price > Decimal::ZERO;
        if report.cumulative_qty > self.reported_qty || fills_in_avg {
            self.reported_qty = report.cumulative_qty;
            self.reported_avg = report.avg_price;
            news = true;
        }
        self.last_time = self.last_time.max(report.time);
        if next.is_final() && !self.status.is_final() {
            self.final_source = Some(report.source);
        }
        self.status = next;
        Ok(news)
    }

    /// The confirmed outcome, once the order is final. `deadline_cancel` says the final
    /// cancellation was quantum's own, at the fill deadline, so an unfilled order is a `timeout`.
    pub fn outcome(&self, deadline_cancel: bool) -> Option<Outcome> {
        if !self.status.is_final() {
            return None;
        }
        let status = match (self.status, self.executed_qty().is_zero()) {
            (OrderStatus::Filled, false) => ResultStatus::Filled,
            (OrderStatus::Canceled | OrderStatus::Expired, false) => ResultStatus::PartiallyFilled,
            (OrderStatus::Canceled, true) if deadline_cancel => ResultStatus::Timeout,
            (OrderStatus::Canceled, true) => ResultStatus::Canceled,
            (OrderStatus::Expired, true) => ResultStatus::Expired,
            (OrderStatus::Rejected, _) => ResultStatus::Rejected,
            // FILLED with nothing executed cannot be believed: never report it as a fill.
            (OrderStatus::Filled, true) => ResultStatus::Failed,
            (OrderStatus::New | OrderStatus::PartiallyFilled, _) => return None,
        };
        self.summary(status)
    }

    /// What is confirmed filled of an order that is not final (its rest still open, e.g. a
    /// cancel that keeps failing): a `PartiallyFilled` outcome of the quantity confirmed so far,
    /// or `None` when nothing is. A final order gives its [`Tracker::outcome`].
    pub fn confirmed_so_far(&self) -> Option<Outcome> {
        if self.status.is_final() {
            return self.outcome(false);
        }
        if self.executed_qty().is_zero() {
            return None;
        }
        self.summary(ResultStatus::PartiallyFilled)
    }

    fn summary(&self, status: ResultStatus) -> Option<Outcome> {
        let executed = self.executed_qty();
        let fills_qty = self.fills_qty();
        // The exchange's own average (`avgPrice` / `ap`) for the whole executed quantity, as it
        // sent it: it is what the account shows. The fills' weighted average is computed only
        // when no report carried one; it can have many more digits than the exchange prints.
        let avg_price = if self.reported_qty >= executed && self.reported_avg > Decimal::ZERO {
            self.reported_avg
        } else if !fills_qty.is_zero() && fills_qty >= executed {
            self.fills
                .values()
                .try_fold(Decimal::ZERO, |sum, f| {
                    f.price.checked_mul(f.qty).and_then(|v| sum.checked_add(v))
                })
                .and_then(|total| total.checked_div(fills_qty))
                .unwrap_or(self.reported_avg)
        } else {
            self.reported_avg
        };
        let complete = fills_qty >= executed && self.fills.values().all(|f| f.commission.is_some());
        let commission = complete.then(|| self.fills.values().filter_map(|f| f.commission).sum());
        let final_time = self
            .fills
            .values()
            .map(|f| f.time)
            .max()
            .unwrap_or(self.last_time);
        Some(Outcome {
            status,
            order_id: self.order_id?,
            executed_qty: executed,
            avg_price,
            commission,
            commission_asset: self
                .fills
                .values()
                .find_map(|f| f.commission_asset.clone())
                .unwrap_or_else(|| "USDT".to_string()),
            confirmed_by: self
                .final_source
                .unwrap_or(ReportSource::RestPoll)
                .confirmed_by(),
            final_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn report(source: ReportSource, status: OrderStatus, cum: &str, avg: &str) -> Report {
        Report {
            source,
            order_id: 7,
            status,
            cumulative_qty: d(cum),
            avg_price: d(avg),
            trade: None,
            time: 100,
        }
    }

    fn fill(id: i64, qty: &str, price: &str, cum: &str, status: OrderStatus) -> Report {
        Report {
            source: ReportSource::UserStream,
            order_id: 7,
            status,
            cumulative_qty: d(cum),
            avg_price: Decimal::ZERO,
            trade: Some(TradeReport {
                trade_id: id,
                qty: d(qty),
                price: d(price),
                commission: Some(d("0.01")),
                commission_asset: Some("USDT".into()),
                time: 100 + id,
            }),
            time: 100 + id,
        }
    }

    /// Regression (issue 10): a TRADE_LITE without fees came first, and the ORDER_TRADE_UPDATE of
    /// the same trade with its fees was dropped as a duplicate, so every fill cost a userTrades
    /// request for fees the stream had already sent.
    #[test]
    fn what_is_confirmed_of_an_open_order_is_a_partial_fill() {
        let mut tracker = Tracker::new();
        tracker
            .apply(&report(ReportSource::RestPoll, OrderStatus::New, "0", "0"))
            .unwrap();
        assert_eq!(tracker.confirmed_so_far(), None, "nothing filled yet");
        tracker
            .apply(&fill(1, "19", "10", "19", OrderStatus::PartiallyFilled))
            .unwrap();
        assert_eq!(tracker.outcome(false), None, "not final");
        let so_far = tracker.confirmed_so_far().unwrap();
        assert_eq!(so_far.status, ResultStatus::PartiallyFilled);
        assert_eq!(so_far.executed_qty, d("19"));
        tracker
            .apply(&fill(2, "1", "10", "20", OrderStatus::Filled))
            .unwrap();
        assert_eq!(
            tracker.confirmed_so_far().unwrap().status,
            ResultStatus::Filled
        );
    }

    #[test]
    fn fees_of_a_fill_first_seen_without_them_are_filled_in() {
        let mut tracker = Tracker::new();
        let mut lite = fill(1, "2", "10", "0", OrderStatus::PartiallyFilled);
        if let Some(trade) = lite.trade.as_mut() {
            trade.commission = None;
            trade.commission_asset = None;
        }
        tracker.apply(&lite).unwrap();
        tracker
            .apply(&report(
                ReportSource::ResultReply,
                OrderStatus::Filled,
                "2",
                "10",
            ))
            .unwrap();
        assert_eq!(tracker.outcome(false).unwrap().commission, None);
        let full = fill(1, "2", "10", "2", OrderStatus::Filled);
        assert!(tracker.apply(&full).unwrap(), "the fees are news");
        assert_eq!(tracker.outcome(false).unwrap().commission, Some(d("0.01")));
        assert!(
            !tracker.apply(&full).unwrap(),
            "the same report again is not"
        );
    }

    #[test]
    fn an_ack_with_zeros_confirms_nothing() {
        // Regression for the incident: the first reply is NEW, executedQty 0, avgPrice 0.00.
        let mut t = Tracker::new();
        t.apply(&report(
            ReportSource::ResultReply,
            OrderStatus::New,
            "0",
            "0.00000",
        ))
        .unwrap();
        assert_eq!(t.outcome(false), None);
    }

    #[test]
    fn fills_from_the_stream_confirm_with_exact_average_and_commission() {
        let mut t = Tracker::new();
        t.apply(&fill(1, "10", "6.250", "10", OrderStatus::PartiallyFilled))
            .unwrap();
        t.apply(&fill(2, "6", "6.260", "16", OrderStatus::Filled))
            .unwrap();
        let o = t.outcome(false).unwrap();
        assert_eq!(o.status, ResultStatus::Filled);
        assert_eq!(o.executed_qty, d("16"));
        assert_eq!(o.avg_price, d("100.06") / d("16"));
        assert_eq!(o.commission, Some(d("0.02")));
        assert_eq!(o.confirmed_by, ConfirmedBy::UserStream);
        assert_eq!(o.final_time, 102);
    }

    /// Regression (issue 10): the result said 2.1735937... where the exchange says 2.17359.
    #[test]
    fn the_exchanges_average_price_is_reported_as_sent() {
        let mut t = Tracker::new();
        t.apply(&fill(1, "7", "2.1735", "7", OrderStatus::PartiallyFilled))
            .unwrap();
        t.apply(&fill(2, "9", "2.1736", "16", OrderStatus::PartiallyFilled))
            .unwrap();
        t.apply(&report(
            ReportSource::UserStream,
            OrderStatus::Filled,
            "16",
            "2.17359",
        ))
        .unwrap();
        assert_eq!(t.outcome(false).unwrap().avg_price.to_string(), "2.17359");
    }

    #[test]
    fn the_same_fill_reported_twice_counts_once() {
        let mut t = Tracker::new();
        assert!(t
            .apply(&fill(1, "10", "6.25", "10", OrderStatus::PartiallyFilled))
            .unwrap());
        assert!(!t
            .apply(&fill(1, "10", "6.25", "10", OrderStatus::PartiallyFilled))
            .unwrap());
        assert_eq!(t.executed_qty(), d("10"));
    }

    #[test]
    fn a_rest_poll_can_confirm_before_the_stream_and_commission_is_then_unknown() {
        let mut t = Tracker::new();
        t.apply(&report(
            ReportSource::RestPoll,
            OrderStatus::Filled,
            "16",
            "6.25100",
        ))
        .unwrap();
        let o = t.outcome(false).unwrap();
        assert_eq!(
            (o.status, o.avg_price, o.confirmed_by),
            (ResultStatus::Filled, d("6.251"), ConfirmedBy::RestPoll)
        );
        assert_eq!(o.commission, None);
    }

    #[test]
    fn a_cancel_at_the_deadline_is_a_timeout_or_a_partial_fill() {
        let mut t = Tracker::new();
        t.apply(&report(
            ReportSource::RestPoll,
            OrderStatus::Canceled,
            "0",
            "0",
        ))
        .unwrap();
        assert_eq!(t.outcome(true).unwrap().status, ResultStatus::Timeout);
        let mut t = Tracker::new();
        t.apply(&fill(1, "4", "6.25", "4", OrderStatus::PartiallyFilled))
            .unwrap();
        t.apply(&report(
            ReportSource::RestPoll,
            OrderStatus::Canceled,
            "4",
            "6.25",
        ))
        .unwrap();
        assert_eq!(
            t.outcome(true).unwrap().status,
            ResultStatus::PartiallyFilled
        );
    }

    #[test]
    fn expiry_with_a_remainder_is_partially_filled() {
        let mut t = Tracker::new();
        t.apply(&fill(1, "3", "6.25", "3", OrderStatus::Expired))
            .unwrap();
        assert_eq!(
            t.outcome(false).unwrap().status,
            ResultStatus::PartiallyFilled
        );
    }

    #[test]
    fn a_contradiction_is_refused_and_changes_nothing() {
        let mut t = Tracker::new();
        t.apply(&report(
            ReportSource::UserStream,
            OrderStatus::Filled,
            "16",
            "6.25",
        ))
        .unwrap();
        assert!(t
            .apply(&report(
                ReportSource::RestPoll,
                OrderStatus::Canceled,
                "16",
                "6.25"
            ))
            .is_err());
        assert_eq!(t.status(), OrderStatus::Filled);
    }

    proptest! {
        /// However fills are repeated and interleaved, the executed quantity is the sum of the
        /// distinct fills, and a final outcome never shows a fill with a zero price.
        #[test]
        fn executed_quantity_is_the_sum_of_distinct_fills(order in proptest::collection::vec(0usize..5, 1..30)) {
            let qtys = ["1", "2", "3", "4", "5"];
            let mut t = Tracker::new();
            let mut seen = std::collections::BTreeSet::new();
            for i in order {
                seen.insert(i);
                let cum: Decimal = seen.iter().map(|j| d(qtys[*j])).sum();
                let _ = t.apply(&fill(i as i64, qtys[i], "10", &cum.to_string(), OrderStatus::PartiallyFilled));
            }
            let expected: Decimal = seen.iter().map(|j| d(qtys[*j])).sum();
            prop_assert_eq!(t.executed_qty(), expected);
            t.apply(&report(ReportSource::RestPoll, OrderStatus::Canceled, &expected.to_string(), "10")).unwrap();
            let o = t.outcome(true).unwrap();
            prop_assert!(o.avg_price > Decimal::ZERO);
            prop_assert_eq!(o.status, ResultStatus::PartiallyFilled);
        }
    }
}
