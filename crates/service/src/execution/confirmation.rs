//! Waiting for the exchange to confirm an order's outcome (reply, user stream, REST polls,
//! whichever comes first), and at the fill deadline cancelling what is left until the order is
//! final.

use std::time::Duration;

use binance::OrderRef;
use engine::{Outcome, ReportSource, Tracker};
use model::{ClientOrderId, ExecutionResult, TradeIntent};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::reports::{report_from_order, Signal};

use super::Executor;

/// How long a confirmed fill waits for its fees on the user stream before asking REST.
const FEES_WAIT: Duration = Duration::from_secs(2);

/// After the fill deadline, the cancel of what is left is tried again for this long (a cancel
/// refused by a rate limit is not an answer).
const SETTLE_WINDOW: Duration = Duration::from_secs(30);

impl Executor {
    /// Waits for the exchange to confirm the outcome; at the deadline cancels what is left.
    pub(super) async fn confirm(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        mut tracker: Tracker,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
        order_sent_at: i64,
        progress_key: &str,
    ) -> ExecutionResult {
        let symbol = intent.symbol.as_str();
        let lookup = OrderRef::ClientOrderId(coid.to_string());
        let deadline = tokio::time::Instant::now() + self.exec().fill_timeout;
        let mut poll = tokio::time::interval(self.exec().poll_interval);
        poll.tick().await;
        let mut deadline_cancel = false;
        while tracker.outcome(false).is_none() {
            tokio::select! {
                // Reports first: a confirmation already in hand beats a poll or the deadline.
                biased;
                signal = signals.recv() => match signal {
                    Some(Signal::Report(report)) => {
                        if let Err(e) = tracker.apply(&report) {
                            error!("order {coid}: contradictory report from the user stream: {e}");
                        }
                    }
                    Some(Signal::Reconcile) => self.poll_order(symbol, &lookup, &mut tracker).await,
                    None => {}
                },
                _ = poll.tick() => {
                    self.poll_order(symbol, &lookup, &mut tracker).await;
                    self.heartbeat(progress_key, intent).await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(
                        "order {coid} not confirmed within {:?} (status {:?}, executed {}); cancelling what is left",
                        self.exec().fill_timeout, tracker.status(), tracker.executed_qty()
                    );
                    // Cancel what is left and keep at it until the order is final: a cancel
                    // refused by a rate limit or a network error is not an answer, and what
                    // was filled meanwhile must be reported, not lost.
                    let settle_until = tokio::time::Instant::now() + SETTLE_WINDOW;
                    let mut delay = Duration::from_millis(500);
                    loop {
                        match self.rest.cancel_order(symbol, &lookup).await {
                            Ok(order) => {
                                deadline_cancel = true;
                                if let Some(report) = report_from_order(ReportSource::RestPoll, &order) {
                                    let _ = tracker.apply(&report);
                                }
                            }
                            Err(e) if e.is_not_found() => info!("cancel of {coid}: not open any more ({e}); asking for its final state"),
                            Err(e) => error!("cancel of {coid} failed: {e}; {} confirmed filled so far; trying again", tracker.executed_qty()),
                        }
                        self.poll_order(symbol, &lookup, &mut tracker).await;
                        if tracker.status().is_final() || tokio::time::Instant::now() >= settle_until {
                            break;
                        }
                        self.heartbeat(progress_key, intent).await;
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    break;
                }
            }
        }
        let Some(outcome) = tracker.outcome(deadline_cancel) else {
            let reason = format!(
                "OUTCOME UNKNOWN: order {coid} still {:?} after the deadline and {SETTLE_WINDOW:?} of cancel attempts, with {} confirmed filled so far; check it with `quantum order --client-id {coid}`",
                tracker.status(),
                tracker.executed_qty()
            );
            error!("{reason}");
            return self.failed(intent, coid, reason);
        };
        let outcome = self
            .await_fees(coid, &mut tracker, signals, outcome, deadline_cancel)
            .await;
        self.build_result(intent, coid, outcome, order_sent_at)
            .await
    }

    /// The reply that confirmed a fill carries no fees; the user stream's TRADE events do, an
    /// instant later. While the stream is up they are waited for (at most [`FEES_WAIT`]), so
    /// the fees cost no `userTrades` request (weight 5); `build_result` asks REST only if they
    /// do not come.
    async fn await_fees(
        &self,
        coid: &ClientOrderId,
        tracker: &mut Tracker,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
        outcome: Outcome,
        deadline_cancel: bool,
    ) -> Outcome {
        use std::sync::atomic::Ordering;
        if !outcome.status.has_fill()
            || outcome.commission.is_some()
            || !self.router.connected.load(Ordering::Relaxed)
        {
            return outcome;
        }
        let until = tokio::time::Instant::now() + FEES_WAIT;
        while let Ok(Some(signal)) = tokio::time::timeout_at(until, signals.recv()).await {
            if let Signal::Report(report) = signal {
                if let Err(e) = tracker.apply(&report) {
                    error!("order {coid}: contradictory report from the user stream: {e}");
                }
            }
            match tracker.outcome(deadline_cancel) {
                Some(complete) if complete.commission.is_some() => return complete,
                _ => {}
            }
        }
        debug!("order {coid}: fees not on the user stream within {FEES_WAIT:?}; asking REST");
        outcome
    }

    pub(super) async fn poll_order(&self, symbol: &str, lookup: &OrderRef, tracker: &mut Tracker) {
        match self.rest.find_order(symbol, lookup).await {
            Ok(Some(order)) => {
                if let Some(report) = report_from_order(ReportSource::RestPoll, &order) {
                    if let Err(e) = tracker.apply(&report) {
                        error!(
                            "order {}: contradictory REST report: {e}",
                            order.client_order_id
                        );
                    }
                }
            }
            Ok(None) => debug!("poll: order {lookup:?} not found yet"),
            Err(e) => warn!("poll of order {lookup:?} failed: {e}"),
        }
    }
}
