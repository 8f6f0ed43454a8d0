//! Waiting for the exchange to confirm an order's outcome (reply, user stream, REST polls,
//! whichever comes first), and at the fill deadline cancelling what is left until the order is
//! final.

use std::time::Duration;

use engine::{Outcome, Tracker};
use model::{ClientOrderId, ExecutionResult, IntentId, ResultStatus, TradeIntent};
use rust_decimal::Decimal;

use crate::clock::now_ms;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::reports::Signal;

use super::{Executor, OUTCOME_PATIENCE};

/// How long an order that was not final when its result was published is watched.
const LATE_WATCH: Duration = Duration::from_secs(24 * 3600);
/// How long a confirmed fill waits for its fees on the user stream before asking REST.
const FEES_WAIT: Duration = Duration::from_secs(2);

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
                    Some(Signal::Reconcile) => self.poll_order(symbol, coid, &mut tracker).await,
                    None => {}
                },
                _ = poll.tick() => {
                    self.poll_order(symbol, coid, &mut tracker).await;
                    self.heartbeat(progress_key, intent).await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(
                        "order {coid} not confirmed within {:?} (status {:?}, executed {}); cancelling what is left",
                        self.exec().fill_timeout, tracker.status(), tracker.executed_qty()
                    );
                    // Cancel what is left and keep at it until the order is final: a cancel
                    // refused by a rate limit or a network error is not an answer, and what
                    // was filled meanwhile must be reported, not lost. A ban with an announced
                    // end is waited out (up to OUTCOME_PATIENCE), with the user stream's
                    // reports still applied, rather than published as an unknown outcome.
                    let settle_start = tokio::time::Instant::now();
                    let mut settle_until = settle_start + self.exec().cancel_window;
                    let patience_end = settle_start + self.exec().cancel_window.max(OUTCOME_PATIENCE);
                    let mut delay = Duration::from_millis(500);
                    let mut extended = false;
                    loop {
                        let mut banned_for = None;
                        match self.venue.cancel(symbol, coid).await {
                            Ok(order) => {
                                deadline_cancel = true;
                                if let Some(report) = &order.report {
                                    let _ = tracker.apply(report);
                                }
                            }
                            Err(e) if e.is_not_found() => info!("cancel of {coid}: not open any more ({e}); asking for its final state"),
                            Err(e) => {
                                banned_for = e.retry_after();
                                error!("cancel of {coid} failed: {e}; {} confirmed filled so far; trying again", tracker.executed_qty());
                            }
                        }
                        self.poll_order(symbol, coid, &mut tracker).await;
                        let now = tokio::time::Instant::now();
                        // Once: a ban that outlasts the window moves its end past the ban. A
                        // string of short refusals (a 429 on every cancel) is not waited out for
                        // minutes; after the window it is an unknown outcome, watched.
                        if let Some(ban) = banned_for.filter(|ban| !extended && now + *ban > settle_until) {
                            settle_until = (now + ban + Duration::from_secs(1)).min(patience_end);
                            extended = true;
                        }
                        if tracker.status().is_final() || now >= settle_until {
                            break;
                        }
                        let wait = banned_for.unwrap_or(delay).min(settle_until - now);
                        if !self.settle_wait(coid, &mut tracker, signals, progress_key, intent, wait).await {
                            break;
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    break;
                }
            }
        }
        let Some(outcome) = tracker.outcome(deadline_cancel) else {
            let cancel_window = self.exec().cancel_window;
            // Not final after the deadline and the settle window (the exchange refuses the
            // cancel, a ban, no connection). What is confirmed filled is reported now, and the
            // order is watched until it is final, so a later fill is published too.
            let so_far = tracker.confirmed_so_far();
            self.watch_until_final(intent, coid, tracker.clone(), order_sent_at);
            let Some(partial) = so_far else {
                let reason = format!(
                    "OUTCOME UNKNOWN: order {coid} still {:?} after the deadline and {cancel_window:?} of cancel attempts, with nothing confirmed filled; it is watched until final and a later fill is published as intent {}; check it with `quantum order --client-id {coid}`",
                    tracker.status(),
                    IntentId::late_fill_of(&intent.intent_id)
                );
                error!("{reason}");
                return self.failed(intent, coid, reason);
            };
            error!(
                "order {coid} still {:?} after the deadline and {cancel_window:?} of cancel attempts: reporting the {} confirmed filled; the rest is watched until final and a later fill is published as intent {}",
                tracker.status(),
                partial.executed_qty,
                IntentId::late_fill_of(&intent.intent_id)
            );
            let result = self
                .build_result(intent, coid, partial, order_sent_at)
                .await;
            if result.status() == ResultStatus::PartiallyFilled {
                return result.with_error(format!(
                    "the rest of order {coid} was still open when this was published (its cancel kept failing); it is watched, and any later fill is published as intent {}",
                    IntentId::late_fill_of(&intent.intent_id)
                ));
            }
            return result;
        };
        let outcome = self
            .await_fees(coid, &mut tracker, signals, outcome, deadline_cancel)
            .await;
        self.build_result(intent, coid, outcome, order_sent_at)
            .await
    }

    /// Waits `wait` between two cancel attempts at the fill deadline, applying the user
    /// stream's reports and refreshing the heartbeat meanwhile. False when the order became
    /// final (no need to wait longer). A stop does not end the wait: publishing now would say
    /// OUTCOME UNKNOWN for an order that may fill; the shutdown bound ends the task instead, the
    /// intent stays pending, and the next start looks the order up.
    async fn settle_wait(
        &self,
        coid: &ClientOrderId,
        tracker: &mut Tracker,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
        progress_key: &str,
        intent: &TradeIntent,
        wait: Duration,
    ) -> bool {
        let end = tokio::time::Instant::now() + wait;
        loop {
            self.heartbeat(progress_key, intent).await;
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return true;
            }
            tokio::select! {
                signal = signals.recv() => match signal {
                    Some(Signal::Report(report)) => {
                        if let Err(e) = tracker.apply(&report) {
                            error!("order {coid}: contradictory report from the user stream: {e}");
                        }
                        if tracker.status().is_final() {
                            return false;
                        }
                    }
                    // A reconcile request: the next attempt polls anyway.
                    Some(_) => {}
                    // No sender left (the router is gone): only the clock remains.
                    None => tokio::time::sleep(self.nap(left)).await,
                },
                _ = tokio::time::sleep(self.nap(left)) => {}
            }
        }
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

    /// Polls (and tries to cancel) an order that was not final when its result was published,
    /// until it is, in a task of its own; a fill beyond what the result reported is published
    /// as a result of intent `late-<id>` (same order, the extra quantity), so the exit monitor
    /// tracks it. Gives up loudly after [`LATE_WATCH`]. If the service stops first, the exit
    /// monitor's position reads still find the position and adopt it.
    fn watch_until_final(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        mut tracker: Tracker,
        order_sent_at: i64,
    ) {
        let (executor, intent, coid) = (self.clone(), intent.clone(), coid.clone());
        let reported = tracker
            .confirmed_so_far()
            .map_or(Decimal::ZERO, |o| o.executed_qty);
        let reported_avg = tracker
            .confirmed_so_far()
            .map_or(Decimal::ZERO, |o| o.avg_price);
        tokio::spawn(async move {
            let symbol = intent.symbol.as_str();
            let give_up = tokio::time::Instant::now() + LATE_WATCH;
            let mut delay = Duration::from_secs(5);
            while !tracker.status().is_final() {
                if tokio::time::Instant::now() >= give_up {
                    error!("order {coid} is still {:?} after {LATE_WATCH:?} of watching; a fill beyond the {reported} reported is not published; check it with `quantum order --client-id {coid}`", tracker.status());
                    return;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
                match executor.venue.cancel(symbol, &coid).await {
                    Ok(order) => {
                        if let Some(report) = &order.report {
                            let _ = tracker.apply(report);
                        }
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => debug!("watch of {coid}: cancel failed again: {e}"),
                }
                executor.poll_order(symbol, &coid, &mut tracker).await;
            }
            let Some(outcome) = tracker.outcome(true) else {
                return;
            };
            if outcome.executed_qty <= reported {
                info!(
                    "order {coid} is final ({:?}); nothing filled after its result",
                    tracker.status()
                );
                return;
            }
            // The extra quantity and its average price, from the exchange's cumulative figures.
            let late_qty = outcome.executed_qty - reported;
            let late_avg = outcome
                .avg_price
                .checked_mul(outcome.executed_qty)
                .and_then(|all| {
                    reported_avg
                        .checked_mul(reported)
                        .and_then(|r| all.checked_sub(r))
                })
                .and_then(|late| late.checked_div(late_qty))
                .map(|avg| avg.round_dp(8).normalize());
            let mut late_intent = intent.clone();
            late_intent.intent_id = IntentId::late_fill_of(&intent.intent_id);
            let result = late_avg
                .ok_or_else(|| "the late fill's price overflows".to_string())
                .and_then(|avg| {
                    let execution = model::Execution {
                        order_id: outcome.order_id,
                        avg_price: avg,
                        executed_qty: late_qty,
                        // Fees of the whole order less what was reported are not known here:
                        // the result says null rather than a 0 nobody charged.
                        commission: None,
                        commission_asset: outcome.commission_asset.clone(),
                        filled_at: outcome.final_time,
                    };
                    ExecutionResult::with_fill(
                        &late_intent,
                        &coid,
                        ResultStatus::Filled,
                        &execution,
                        outcome.confirmed_by,
                        order_sent_at,
                        now_ms(),
                    )
                    .map_err(|e| e.to_string())
                });
            match result {
                Ok(result) => {
                    warn!(
                        "LATE FILL: order {coid} filled {late_qty} more at {} after its result was published; published as intent {}",
                        result.entry_price(),
                        late_intent.intent_id
                    );
                    if let Err(e) = executor.publish(&result, None).await {
                        error!("cannot publish the late fill of {coid}: {e}; the exit monitor adopts the position from its position reads");
                    }
                }
                Err(e) => error!("order {coid} filled {late_qty} after its result, but {e}; the exit monitor adopts the position from its position reads"),
            }
        });
    }

    pub(super) async fn poll_order(
        &self,
        symbol: &str,
        coid: &ClientOrderId,
        tracker: &mut Tracker,
    ) {
        match self.venue.lookup(symbol, coid).await {
            Ok(Some(order)) => {
                if let Some(report) = &order.report {
                    if let Err(e) = tracker.apply(report) {
                        error!("order {coid}: contradictory REST report: {e}");
                    }
                }
            }
            Ok(None) => debug!("poll: order {coid} not found yet"),
            Err(e) => warn!("poll of order {coid} failed: {e}"),
        }
    }
}
