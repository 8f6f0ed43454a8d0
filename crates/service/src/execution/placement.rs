//! From a valid intent to an order on the exchange: symbol rules, sizing, the risk gate,
//! leverage, and the submit with its ambiguity policy (an ambiguous submit is looked up, never
//! sent again blindly).
//!
//! Back-pressure: whatever the exchange refuses *for now* before anything executed (the rate
//! budget is spent, a 429 with its `Retry-After`, a 5xx that is a definite failure, a connection
//! that never opened) is waited out and asked again, with the heartbeat refreshed, for as long as
//! the intent lives (`expires_at`, or `execution.max_age` after its birth). An intent is never
//! `failed` for being held back: when its lifetime runs out first it is `expired`, nothing sent;
//! when the service stops first it stays pending for the next start. While these intents wait,
//! the reader takes no new ones (they stay on the stream), which is the back-pressure.

use std::future::Future;
use std::time::Duration;

use engine::{risk, sizing, OrderPlan, Tracker};
use model::{Action, ClientOrderId, ExecutionResult, ResultStatus, Side, TradeIntent};
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::clock::now_ms;
use crate::metrics;

use super::account::{Position, MARK_FRESH};
use super::progress::{Progress, PROGRESS_TTL};
use super::reports::Signal;
use super::venue::Rules;
use super::{Executor, OUTCOME_PATIENCE};

/// Binance's "Invalid symbol." code.
const INVALID_SYMBOL: i64 = -1121;

/// Lookups of an ambiguous submit before concluding the order is not on the exchange.
const AMBIGUOUS_LOOKUPS: u32 = 4;
/// How long a close waits for the user stream to report the position it closes (a fill's
/// ACCOUNT_UPDATE can come a moment after its confirmation) before reading it over REST.
const POSITION_WAIT: Duration = Duration::from_secs(1);
/// The heartbeat is refreshed at least this often while an intent waits.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// One intent being worked on: what every step needs to name it, report on it and keep it alive.
pub(super) struct Job<'a> {
    pub(super) intent: &'a TradeIntent,
    pub(super) coid: ClientOrderId,
    pub(super) progress_key: &'a str,
    /// When the order must have been sent by (ms since the epoch), if the intent has a lifetime.
    pub(super) act_by: Option<i64>,
    /// Never worked on and delivered once: no order can exist for it, so none is looked up.
    pub(super) fresh: bool,
}

/// How the work on an intent ended before its order could be confirmed.
pub(super) enum Stop {
    /// The result to publish (rejected, failed, expired).
    Result(Box<ExecutionResult>),
    /// The service is stopping and this instance sent nothing for the intent: its entry stays
    /// pending, and the next start looks the order up and finishes it.
    Abandoned,
}

impl From<ExecutionResult> for Stop {
    fn from(result: ExecutionResult) -> Stop {
        Stop::Result(Box::new(result))
    }
}

/// Why [`Executor::patiently`] gave up.
pub(super) enum Patience {
    /// A definite answer that is not success (a refusal, not found, an undecodable reply).
    Answered(binance::Error),
    /// Still held back when the time allowed ran out; the last refusal.
    OutOfTime(binance::Error),
    /// The service is stopping.
    Stopped,
}

impl Executor {
    /// Works one valid intent to its result; `None` when the service stopped before anything
    /// was sent (the entry stays pending).
    pub(super) async fn execute(
        &self,
        intent: &TradeIntent,
        progress_key: &str,
        fresh: bool,
        act_by: Option<i64>,
    ) -> Option<ExecutionResult> {
        let job = Job {
            intent,
            coid: ClientOrderId::for_intent(&intent.intent_id),
            progress_key,
            act_by,
            fresh,
        };
        // Waiting starts before anything is sent, so a fill reported before the reply is not lost.
        let mut signals = self.router.register(job.coid.as_str());
        let outcome = self.execute_registered(&job, &mut signals).await;
        self.router.unregister(job.coid.as_str());
        match outcome {
            Ok(result) => Some(result),
            Err(Stop::Result(result)) => Some(*result),
            Err(Stop::Abandoned) => None,
        }
    }

    async fn execute_registered(
        &self,
        job: &Job<'_>,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
    ) -> Result<ExecutionResult, Stop> {
        let (intent, coid) = (job.intent, &job.coid);
        let symbol = intent.symbol.as_str();
        let mut tracker = Tracker::new();
        // A redelivered intent, or one with a progress record, may already have its order. A
        // lookup that fails proves nothing: it is asked again, and if it cannot be answered
        // within OUTCOME_PATIENCE the outcome is unknown (never a blind placement).
        let existing = if job.fresh {
            None
        } else {
            let give_up = now_ms() + millis(self.exec().fill_timeout.max(OUTCOME_PATIENCE));
            match self
                .patiently(job, "the lookup of an earlier order", Some(give_up), || {
                    self.venue.lookup(symbol, coid)
                })
                .await
            {
                Ok(found) => found,
                Err(Patience::Stopped) => return Err(Stop::Abandoned),
                // -1121 "Invalid symbol": no order can exist on a symbol the exchange does not
                // list; the intent goes on and is refused by the symbol rules like a first
                // delivery (regression: a chaos long run published a redelivered intent for
                // an unlisted symbol as failed, OUTCOME UNKNOWN).
                Err(Patience::Answered(e)) if e.code() == Some(INVALID_SYMBOL) => None,
                Err(Patience::Answered(e) | Patience::OutOfTime(e)) => {
                    return Err(self
                        .failed(
                            intent,
                            coid,
                            format!("OUTCOME UNKNOWN: cannot check for an existing order {coid} ({e}); an earlier attempt may have placed it, so none is placed now; check with `quantum order --client-id {coid}`"),
                        )
                        .into())
                }
            }
        };
        // From here until the outcome is confirmed an order may be working on the exchange: the
        // dead-man switch keeps the symbol's countdown armed meanwhile.
        let _working = self.dead_man.hold(symbol);
        let order_sent_at;
        if let Some(order) = existing {
            info!(
                "order for intent {} already exists: orderId={} clientOrderId={coid} status={}; confirming it instead of placing another",
                intent.intent_id,
                order.order_id,
                order.status
            );
            order_sent_at = order.created_at;
            if let Some(report) = &order.report {
                let _ = tracker.apply(report);
            }
        } else {
            if let Some(by) = job.act_by.filter(|by| now_ms() > *by) {
                return Err(self.expired(
                    job,
                    format!(
                        "its lifetime ended {} ms ago, before its order was sent; nothing was sent",
                        now_ms() - by
                    ),
                ));
            }
            let rules = self.rules(job).await?;
            let plan = self.plan(job, &rules).await?;
            let state = self.gate.state().await;
            let approved = match risk::check(intent, plan, &self.settings.risk, state) {
                Ok(approved) => approved,
                Err(refused) => {
                    return Err(self.reject(job, None, format!("risk check: {refused}")))
                }
            };
            self.set_leverage(job, approved.get()).await?;
            self.record_working(job).await?;
            // When the order went out (the send that was answered, after any wait for rate
            // capacity), not when the wait began.
            order_sent_at = self.place(job, approved, &mut tracker).await?;
        }
        Ok(self
            .confirm(
                intent,
                coid,
                tracker,
                signals,
                order_sent_at,
                job.progress_key,
            )
            .await)
    }

    /// Records that this consumer is about to place the order (the record a redelivery looks
    /// at). Redis being away for a moment (a restart) is waited out like the exchange holding a
    /// request back: nothing was sent, so it is not a failure. The intent expires when its
    /// lifetime ends first; a redelivered intent (no lifetime) waits until the service stops.
    /// Regression: chaos seed 11 found a close published as `failed` ("cannot record progress
    /// before placing: ... Connection reset by peer") during Redis's restart.
    async fn record_working(&self, job: &Job<'_>) -> Result<(), Stop> {
        let mut wait = Duration::from_millis(100);
        let mut logged = false;
        loop {
            let error = match self
                .bus
                .progress_set(
                    job.progress_key,
                    &Progress::working(&self.exec().consumer_name),
                    PROGRESS_TTL,
                )
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => e,
                Err(e) => {
                    return Err(self
                        .failed(
                            job.intent,
                            &job.coid,
                            format!("cannot record progress before placing: {e}; nothing was sent"),
                        )
                        .into())
                }
            };
            if job.act_by.is_some_and(|by| now_ms() + millis(wait) > by) {
                return Err(self.expired(
                    job,
                    format!("Redis could not record its progress before its lifetime ran out (last: {error}); nothing was sent"),
                ));
            }
            if !logged {
                warn!(
                    "intent {}: cannot record progress before placing ({error}); nothing was sent, trying again",
                    job.intent.intent_id
                );
                logged = true;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Err(Stop::Abandoned),
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Calls `op` until it answers. What the exchange refuses for now (nothing executed: a rate
    /// limit, a definite 5xx, no connection) is waited out, heartbeat refreshed, until `until`
    /// (ms since the epoch; `None`: until the service stops).
    pub(super) async fn patiently<T, F, Fut>(
        &self,
        job: &Job<'_>,
        what: &str,
        until: Option<i64>,
        mut op: F,
    ) -> Result<T, Patience>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, binance::Error>>,
    {
        let mut tries = 0u32;
        loop {
            let error = match op().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(Patience::Answered(e)),
            };
            tries += 1;
            let wait = error
                .retry_after()
                .unwrap_or_else(|| Duration::from_millis(250 << tries.min(5)))
                .max(Duration::from_millis(50));
            if until.is_some_and(|until| now_ms() + millis(wait) > until) {
                return Err(Patience::OutOfTime(error));
            }
            metrics::global().intent_waits.get().inc();
            if tries == 1 {
                info!(
                    "intent {}: {what} held back ({error}); nothing was executed, waiting {wait:?} and asking again",
                    job.intent.intent_id
                );
            } else {
                debug!(
                    "intent {}: {what} held back again ({error}), try {tries}; waiting {wait:?}",
                    job.intent.intent_id
                );
            }
            if !self.pause(job, wait).await {
                return Err(Patience::Stopped);
            }
        }
    }

    /// Sleeps for `wait`, refreshing the heartbeat on the way; false when the service stops first.
    async fn pause(&self, job: &Job<'_>, wait: Duration) -> bool {
        self.pause_for(job.progress_key, job.intent, wait).await
    }

    /// How long a wait may sleep before the heartbeat is refreshed again: often enough that no
    /// other instance takes the intent as abandoned (`claim_idle`).
    pub(super) fn nap(&self, left: Duration) -> Duration {
        left.min(HEARTBEAT_EVERY).min(self.exec().claim_idle / 3)
    }

    /// [`Executor::pause`] for an intent by its progress key.
    pub(super) async fn pause_for(
        &self,
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
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(self.nap(left)) => {}
            }
        }
    }

    /// A step that must happen before the order, held back past the intent's lifetime or stopped.
    fn held_back(&self, job: &Job<'_>, what: &str, patience: Patience) -> Stop {
        match patience {
            Patience::Stopped => Stop::Abandoned,
            Patience::OutOfTime(e) => self.expired(
                job,
                format!("{what} was held back by the exchange until the intent's lifetime ended (last: {e}); nothing was sent"),
            ),
            Patience::Answered(e) => self
                .failed(job.intent, &job.coid, format!("{what}: {e}"))
                .into(),
        }
    }

    fn reject(&self, job: &Job<'_>, code: Option<i64>, reason: String) -> Stop {
        warn!("intent {} rejected: {reason}", job.intent.intent_id);
        ExecutionResult::without_fill(
            job.intent,
            Some(&job.coid),
            ResultStatus::Rejected,
            code,
            reason,
            now_ms(),
        )
        .into()
    }

    fn expired(&self, job: &Job<'_>, reason: String) -> Stop {
        warn!("intent {} expired: {reason}", job.intent.intent_id);
        ExecutionResult::without_fill(
            job.intent,
            Some(&job.coid),
            ResultStatus::Expired,
            None,
            reason,
            now_ms(),
        )
        .into()
    }

    /// The symbol's trading rules (cached by the client; refreshed with exchangeInfo).
    async fn rules(&self, job: &Job<'_>) -> Result<Rules, Stop> {
        let symbol = job.intent.symbol.as_str();
        let rules = match self
            .patiently(job, "loading the symbol rules", job.act_by, || {
                self.venue.rules(symbol)
            })
            .await
        {
            Ok(Some(rules)) => rules,
            Ok(None) => {
                return Err(self.reject(
                    job,
                    None,
                    format!("unknown symbol {symbol}: not listed on the exchange"),
                ))
            }
            Err(p) => {
                return Err(self.held_back(job, &format!("cannot load the rules of {symbol}"), p))
            }
        };
        if rules.status != "TRADING" {
            return Err(self.reject(
                job,
                None,
                format!("{symbol} is not trading (status {})", rules.status),
            ));
        }
        Ok(rules)
    }

    /// The mark price to size and check the order against: the streamed one while it is fresh
    /// (no request), else `premiumIndex`.
    async fn mark_price(&self, job: &Job<'_>) -> Result<Decimal, Stop> {
        let symbol = job.intent.symbol.as_str();
        match self.account.last_mark(symbol, tokio::time::Instant::now()) {
            Some((mark, age)) if age <= MARK_FRESH => return Ok(mark),
            Some((_, age)) => debug!(
                "mark price of {symbol}: the last streamed one is {age:?} old; reading premiumIndex"
            ),
            None => debug!("mark price of {symbol}: none streamed yet; reading premiumIndex"),
        }
        match self
            .patiently(job, "reading the mark price", job.act_by, || {
                self.venue.mark_price(symbol)
            })
            .await
        {
            Ok(mark) => {
                // As good as a frame: the intents that follow in the next seconds use it too
                // (a burst right after start came before the stream's first frame, and each of
                // its intents read premiumIndex: 0.16 extra requests per intent over 2,000).
                self.account.mark(symbol, mark, tokio::time::Instant::now());
                Ok(mark)
            }
            Err(p) => {
                Err(self.held_back(job, &format!("cannot read the mark price of {symbol}"), p))
            }
        }
    }

    /// The signed position amount of the intent's symbol, for a close: the user stream's when it
    /// can be trusted and covers the quantity asked for (an ACCOUNT_UPDATE of a fill an instant
    /// ago may still be on its way), else `positionRisk`.
    async fn position_amount(&self, job: &Job<'_>) -> Result<Decimal, Stop> {
        let symbol = job.intent.symbol.as_str();
        let side = job.intent.position_side.unwrap_or_default();
        let covers = |amount: Decimal| {
            !amount.is_zero() && job.intent.quantity.is_none_or(|q| q <= amount.abs())
        };
        let ticket = match self
            .account
            .position_when(symbol, side, POSITION_WAIT, covers)
            .await
        {
            Position::Known(amount) if covers(amount) => return Ok(amount),
            Position::Known(_) => None,
            Position::Ask(ticket) => Some(ticket),
        };
        match self
            .patiently(job, "reading the position", job.act_by, || {
                self.venue.position(symbol, side)
            })
            .await
        {
            Ok(amount) => {
                if let Some(ticket) = ticket {
                    self.account.read_position(symbol, side, amount, ticket);
                }
                Ok(amount)
            }
            Err(p) => Err(self.held_back(job, &format!("cannot read the position of {symbol}"), p)),
        }
    }

    /// Sizes the order.
    async fn plan(&self, job: &Job<'_>, rules: &Rules) -> Result<OrderPlan, Stop> {
        let intent = job.intent;
        let mark = self.mark_price(job).await?;
        let sizing_rules = &rules.sizing;
        // An exit plan that cannot protect the position is refused now, against the mark price,
        // rather than discovered after the fill (a long's stop above the price, ...).
        if intent.action != Action::Close && !intent.exit_plan.is_empty() {
            let direction = if intent.action == Action::Buy {
                engine::exits::Direction::Long
            } else {
                engine::exits::Direction::Short
            };
            if let Err(e) = engine::exits::Levels::resolve(direction, mark, &intent.exit_plan) {
                return Err(self.reject(job, None, format!("exit plan at mark price {mark}: {e}")));
            }
        }
        let (side, quantity, reduce_only) = match intent.action {
            Action::Buy | Action::Sell => {
                let qty = sizing::size_order(
                    intent.position_size_usd,
                    intent.quantity,
                    mark,
                    sizing_rules,
                )
                .map_err(|e| self.reject(job, None, format!("sizing: {e}")))?;
                let side = if intent.action == Action::Buy {
                    Side::Buy
                } else {
                    Side::Sell
                };
                (side, qty, false)
            }
            Action::Close => {
                let amount = self.position_amount(job).await?;
                let qty = sizing::size_close(intent.quantity, amount, sizing_rules)
                    .map_err(|e| self.reject(job, None, format!("close: {e}")))?;
                // A hedge side is closed by the order side opposite to it (its amount reads
                // negative for SHORT, as one-way mode's short does).
                let side = if amount > Decimal::ZERO {
                    Side::Sell
                } else {
                    Side::Buy
                };
                (side, qty, true)
            }
        };
        Ok(OrderPlan {
            symbol: intent.symbol.clone(),
            side,
            quantity,
            reduce_only,
            position_side: intent.position_side.unwrap_or_default(),
            client_order_id: job.coid.clone(),
            leverage: intent.leverage,
            mark_price: mark,
        })
    }

    /// Sets the symbol's leverage when the intent asks for one the account does not have yet.
    async fn set_leverage(&self, job: &Job<'_>, plan: &OrderPlan) -> Result<(), Stop> {
        let Some(wanted) = plan.leverage else {
            return Ok(());
        };
        let symbol = plan.symbol.as_str();
        if self.account.leverage(symbol) == Some(wanted) {
            return Ok(());
        }
        // Setting a leverage is idempotent, and a transient refusal executed nothing.
        match self
            .patiently(job, "setting the leverage", job.act_by, || {
                self.venue.set_leverage(symbol, wanted)
            })
            .await
        {
            Ok(_) => {
                info!("leverage of {symbol} set to {wanted}");
                self.account.set_leverage(symbol, wanted);
                Ok(())
            }
            Err(Patience::Answered(e)) if e.is_rejected() => Err(self.reject(
                job,
                e.code(),
                format!("leverage {wanted} refused by the exchange: {e}"),
            )),
            Err(p) => Err(self.held_back(job, &format!("cannot set the leverage of {symbol}"), p)),
        }
    }

    /// Tells other instances this intent is still being worked on (its progress record's
    /// heartbeat), during every wait.
    pub(super) async fn heartbeat(&self, progress_key: &str, intent: &TradeIntent) {
        if let Err(e) = self
            .bus
            .progress_set(
                progress_key,
                &Progress::working(&self.exec().consumer_name),
                PROGRESS_TTL,
            )
            .await
        {
            warn!(
                "cannot refresh the progress of intent {}: {e}",
                intent.intent_id
            );
        }
    }

    /// Places the approved order. An ambiguous submit is looked up, never blindly sent again.
    async fn place(
        &self,
        job: &Job<'_>,
        approved: risk::RiskApproved<OrderPlan>,
        tracker: &mut Tracker,
    ) -> Result<i64, Stop> {
        let (intent, progress_key) = (job.intent, job.progress_key);
        let plan = approved.get();
        let symbol = plan.symbol.as_str();
        let coid = &plan.client_order_id;
        let mut sends = 0;
        let mut held_back: u32 = 0;
        let mut sent_at;
        loop {
            sends += 1;
            sent_at = now_ms();
            match self.venue.place(&approved).await {
                Ok(reply) => {
                    metrics::global().orders_placed.get().inc();
                    let side = match plan.position_side {
                        model::PositionSide::Both => String::new(),
                        side => format!(" positionSide={side}"),
                    };
                    info!(
                        "order placed {symbol} {}{side} qty={} reduceOnly={} status={} orderId={} clientOrderId={coid}",
                        plan.side.as_str(),
                        plan.quantity,
                        // What is sent: hedge mode takes no reduceOnly.
                        plan.reduce_only && plan.position_side == model::PositionSide::Both,
                        reply.status,
                        reply.order_id
                    );
                    if let Some(report) = &reply.report {
                        if let Err(e) = tracker.apply(report) {
                            error!("order {coid}: contradictory reply {e}");
                        }
                    }
                    return Ok(sent_at);
                }
                Err(e) if e.is_ambiguous() => {
                    warn!("order submit for intent {} ambiguous ({e}); looking up clientOrderId={coid} before anything else", intent.intent_id);
                    if let binance::Error::Ambiguous {
                        body: Some(body), ..
                    } = &e
                    {
                        warn!("raw reply of the ambiguous submit: {body}");
                    }
                    // Only a definite "does not exist" counts as absence, and only when the
                    // last AMBIGUOUS_LOOKUPS answers all said so: a lookup that failed (429, a
                    // timeout) proves nothing, and resending on it is how an intent became two
                    // filled orders. Failed lookups are asked again for OUTCOME_PATIENCE.
                    let patience = self.exec().fill_timeout.max(OUTCOME_PATIENCE);
                    let give_up = tokio::time::Instant::now() + patience;
                    let mut absent = 0u32;
                    let mut attempt = 0u32;
                    while absent < AMBIGUOUS_LOOKUPS {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(8))))
                            .await;
                        self.heartbeat(progress_key, intent).await;
                        match self.venue.lookup(symbol, coid).await {
                            Ok(Some(found)) => {
                                metrics::global()
                                    .ambiguous_submits
                                    .get_or_create(&metrics::ResolutionLabels {
                                        resolution: metrics::Resolution::Found,
                                    })
                                    .inc();
                                info!(
                                    "ambiguous submit resolved: the order exists, orderId={} status={} clientOrderId={coid}",
                                    found.order_id,
                                    found.status
                                );
                                if let Some(report) = &found.report {
                                    let _ = tracker.apply(report);
                                }
                                return Ok(sent_at);
                            }
                            Ok(None) => {
                                absent += 1;
                                debug!(
                                    "lookup {attempt}: clientOrderId={coid} not on the exchange ({absent} definite answers in a row)"
                                );
                            }
                            Err(e) => {
                                absent = 0;
                                warn!("lookup {attempt} of clientOrderId={coid} failed: {e}; a failed lookup proves nothing, asking again");
                                // A ban with an announced end: ask again when it ends (or at
                                // the give-up time), heartbeat refreshed meanwhile.
                                if let Some(ban) = e.retry_after() {
                                    let left = give_up
                                        .saturating_duration_since(tokio::time::Instant::now());
                                    if !self.pause_for(progress_key, intent, ban.min(left)).await {
                                        return Err(Stop::Abandoned);
                                    }
                                }
                                if tokio::time::Instant::now() >= give_up {
                                    metrics::global()
                                        .ambiguous_submits
                                        .get_or_create(&metrics::ResolutionLabels {
                                            resolution: metrics::Resolution::Unresolved,
                                        })
                                        .inc();
                                    return Err(Stop::from(self.failed(
                                        intent,
                                        coid,
                                        format!("OUTCOME UNKNOWN: the order submit was ambiguous and clientOrderId={coid} could not be looked up within {patience:?} (last: {e}); the order may exist and may have filled, so it is not sent again; check with `quantum order`"),
                                    )));
                                }
                            }
                        }
                    }
                    if sends >= 2 {
                        metrics::global()
                            .ambiguous_submits
                            .get_or_create(&metrics::ResolutionLabels {
                                resolution: metrics::Resolution::Unresolved,
                            })
                            .inc();
                        return Err(Stop::from(self.failed(
                            intent,
                            coid,
                            format!("order submit ambiguous twice and clientOrderId={coid} not found; not sending a third time"),
                        )));
                    }
                    metrics::global()
                        .ambiguous_submits
                        .get_or_create(&metrics::ResolutionLabels {
                            resolution: metrics::Resolution::Resent,
                        })
                        .inc();
                    warn!("ambiguous submit resolved: clientOrderId={coid} is not on the exchange after {AMBIGUOUS_LOOKUPS} lookups; sending it once more with the same id");
                }
                Err(e) if e.is_rejected() => {
                    let reason = format!("order rejected by the exchange: {e}");
                    warn!("intent {} rejected: {reason}", intent.intent_id);
                    if e.code() == Some(-4061) {
                        // The position mode changed since it was read (possible with nothing
                        // open): read it again, so the next intents are sent as it now is.
                        warn!("the exchange says the order's position side does not match the account's mode; reading the position mode again");
                        let me = self.clone();
                        tokio::spawn(async move {
                            let stop = me.stop.clone();
                            me.read_position_mode(&stop).await
                        });
                    }
                    return Err(Stop::from(ExecutionResult::without_fill(
                        intent,
                        Some(coid),
                        ResultStatus::Rejected,
                        e.code(),
                        reason,
                        now_ms(),
                    )));
                }
                Err(e) if e.is_transient() => {
                    // Refused before it executed (the rate budget, a 429, a definite 5xx): not an
                    // answer about the intent. Waited out for as long as the intent lives.
                    held_back += 1;
                    let wait = e
                        .retry_after()
                        .unwrap_or_else(|| Duration::from_millis(250 << held_back.min(5)))
                        .max(Duration::from_millis(50));
                    if job.act_by.is_some_and(|by| now_ms() + millis(wait) > by) {
                        return Err(self.expired(
                            job,
                            format!("the order was held back by the exchange until the intent's lifetime ended (last: {e}); nothing was executed"),
                        ));
                    }
                    metrics::global().intent_waits.get().inc();
                    if held_back == 1 {
                        info!("order submit for intent {} held back ({e}); nothing was executed, sending it again in {wait:?}", intent.intent_id);
                    } else {
                        debug!(
                            "order submit for intent {} held back again ({e}), try {held_back}",
                            intent.intent_id
                        );
                    }
                    if !self.pause(job, wait).await {
                        info!("intent {}: stopping before its order could be sent; it stays pending for the next start", intent.intent_id);
                        return Err(Stop::Abandoned);
                    }
                    sends -= 1;
                }
                Err(e) => {
                    return Err(Stop::from(self.failed(
                        intent,
                        coid,
                        format!("order not placed: {e}"),
                    )));
                }
            }
        }
    }
}

/// `d` in whole milliseconds, for arithmetic with the millisecond clock.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
