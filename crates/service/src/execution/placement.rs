//! From a valid intent to an order on the exchange: symbol rules, sizing, the risk gate,
//! leverage, and the submit with its ambiguity policy (an ambiguous submit is looked up, never
//! sent again blindly).

use std::time::Duration;

use binance::{NewOrder, OrderRef, ResponseType};
use engine::{risk, sizing, OrderPlan, ReportSource, Side, Tracker};
use model::{Action, ClientOrderId, ExecutionResult, ResultStatus, TradeIntent};
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::clock::now_ms;
use crate::metrics;

use super::progress::Progress;
use super::reports::{report_from_order, Signal};

use super::progress::PROGRESS_TTL;
use super::Executor;

/// Lookups of an ambiguous submit before concluding the order is not on the exchange.
const AMBIGUOUS_LOOKUPS: u32 = 4;

impl Executor {
    /// Works one valid intent to its result.
    pub(super) async fn execute(
        &self,
        intent: &TradeIntent,
        progress_key: &str,
        fresh: bool,
    ) -> ExecutionResult {
        let coid = ClientOrderId::for_intent(&intent.intent_id);
        let symbol = intent.symbol.as_str();
        let reject = |code: Option<i64>, reason: String| {
            warn!("intent {} rejected: {reason}", intent.intent_id);
            ExecutionResult::without_fill(
                intent,
                Some(&coid),
                ResultStatus::Rejected,
                code,
                reason,
                now_ms(),
            )
        };
        let rules = match self.rest.load_symbol_rules(symbol).await {
            Ok(rules) => rules,
            Err(binance::Error::InvalidRequest(_)) => {
                return reject(
                    None,
                    format!("unknown symbol {symbol}: not listed on the exchange"),
                )
            }
            Err(e) => {
                return self.failed(
                    intent,
                    &coid,
                    format!("cannot load the rules of {symbol}: {e}"),
                )
            }
        };
        if rules.status != "TRADING" {
            return reject(
                None,
                format!("{symbol} is not trading (status {})", rules.status),
            );
        }
        // Waiting starts before anything is sent, so a fill reported before the reply is not lost.
        let mut signals = self.router.register(coid.as_str());
        let result = self
            .execute_registered(intent, &coid, &rules, &mut signals, progress_key, fresh)
            .await;
        self.router.unregister(coid.as_str());
        result
    }

    pub(super) async fn execute_registered(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        rules: &binance::SymbolRules,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
        progress_key: &str,
        fresh: bool,
    ) -> ExecutionResult {
        let symbol = intent.symbol.as_str();
        let mut tracker = Tracker::new();
        let reject = |code: Option<i64>, reason: String| {
            warn!("intent {} rejected: {reason}", intent.intent_id);
            ExecutionResult::without_fill(
                intent,
                Some(coid),
                ResultStatus::Rejected,
                code,
                reason,
                now_ms(),
            )
        };
        // A redelivered intent, or one with a progress record, may already have its order.
        let existing = match if fresh {
            Ok(None)
        } else {
            self.rest
                .find_order(symbol, &OrderRef::ClientOrderId(coid.to_string()))
                .await
        } {
            Ok(found) => found,
            Err(e) => {
                return self.failed(
                    intent,
                    coid,
                    format!("cannot check for an existing order {coid}: {e}"),
                )
            }
        };
        let order_sent_at;
        if let Some(order) = existing {
            info!(
                "order for intent {} already exists: orderId={} clientOrderId={coid} status={}; confirming it instead of placing another",
                intent.intent_id,
                order.order_id,
                order.status.as_str()
            );
            order_sent_at = order.time.unwrap_or(order.update_time);
            if let Some(report) = report_from_order(ReportSource::RestPoll, &order) {
                let _ = tracker.apply(&report);
            }
        } else {
            let plan = match self.plan(intent, coid, rules).await {
                Ok(plan) => plan,
                Err(result) => return *result,
            };
            let approved = match risk::check(intent, plan, &self.settings.risk) {
                Ok(approved) => approved,
                Err(refused) => return reject(None, format!("risk check: {refused}")),
            };
            if let Some(result) = self.set_leverage(intent, coid, approved.get()).await {
                return result;
            }
            if let Err(e) = self
                .bus
                .progress_set(
                    progress_key,
                    &Progress::working(&self.exec().consumer_name),
                    PROGRESS_TTL,
                )
                .await
            {
                return self.failed(
                    intent,
                    coid,
                    format!("cannot record progress before placing: {e}"),
                );
            }
            order_sent_at = now_ms();
            match self
                .place(intent, approved, &mut tracker, progress_key)
                .await
            {
                Ok(()) => {}
                Err(result) => return *result,
            }
        }
        self.confirm(intent, coid, tracker, signals, order_sent_at, progress_key)
            .await
    }

    /// Sizes the order.
    pub(super) async fn plan(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        rules: &binance::SymbolRules,
    ) -> Result<OrderPlan, Box<ExecutionResult>> {
        let symbol = intent.symbol.as_str();
        let reject = |reason: String| {
            warn!("intent {} rejected: {reason}", intent.intent_id);
            Box::new(ExecutionResult::without_fill(
                intent,
                Some(coid),
                ResultStatus::Rejected,
                None,
                reason,
                now_ms(),
            ))
        };
        let mark = match self.rest.premium_index(symbol).await {
            Ok(p) => p.mark_price,
            Err(e) => {
                return Err(Box::new(self.failed(
                    intent,
                    coid,
                    format!("cannot read the mark price of {symbol}: {e}"),
                )))
            }
        };
        let sizing_rules = sizing::SymbolRules {
            step_size: rules.market_lot.step_size,
            min_qty: rules.market_lot.min_qty,
            max_qty: if rules.market_lot.max_qty.is_zero() {
                Decimal::MAX
            } else {
                rules.market_lot.max_qty
            },
            min_notional: rules.min_notional.unwrap_or(Decimal::ZERO),
        };
        // An exit plan that cannot protect the position is refused now, against the mark price,
        // rather than discovered after the fill (a long's stop above the price, ...).
        if intent.action != Action::Close && !intent.exit_plan.is_empty() {
            let direction = if intent.action == Action::Buy {
                engine::exits::Direction::Long
            } else {
                engine::exits::Direction::Short
            };
            if let Err(e) = engine::exits::Levels::resolve(direction, mark, &intent.exit_plan) {
                return Err(reject(format!("exit plan at mark price {mark}: {e}")));
            }
        }
        let (side, quantity, reduce_only) = match intent.action {
            Action::Buy | Action::Sell => {
                let qty = sizing::size_order(
                    intent.position_size_usd,
                    intent.quantity,
                    mark,
                    &sizing_rules,
                )
                .map_err(|e| reject(format!("sizing: {e}")))?;
                let side = if intent.action == Action::Buy {
                    Side::Buy
                } else {
                    Side::Sell
                };
                (side, qty, false)
            }
            Action::Close => {
                let positions = match self.rest.position_risk(Some(symbol)).await {
                    Ok(p) => p,
                    Err(e) => {
                        return Err(Box::new(self.failed(
                            intent,
                            coid,
                            format!("cannot read the position of {symbol}: {e}"),
                        )))
                    }
                };
                let amount: Decimal = positions
                    .iter()
                    .filter(|p| p.symbol == symbol)
                    .map(|p| p.position_amt)
                    .sum();
                let qty = sizing::size_close(intent.quantity, amount, &sizing_rules)
                    .map_err(|e| reject(format!("close: {e}")))?;
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
            client_order_id: coid.clone(),
            leverage: intent.leverage,
            mark_price: mark,
        })
    }

    pub(super) async fn set_leverage(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        plan: &OrderPlan,
    ) -> Option<ExecutionResult> {
        let wanted = plan.leverage?;
        let symbol = plan.symbol.as_str();
        let known = self
            .leverage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(symbol)
            .copied();
        if known == Some(wanted) {
            return None;
        }
        match self.rest.change_leverage(symbol, wanted).await {
            Ok(_) => {
                info!("leverage of {symbol} set to {wanted}");
                self.leverage
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(symbol.to_string(), wanted);
                None
            }
            Err(e) if e.is_rejected() => {
                let reason = format!("leverage {wanted} refused by the exchange: {e}");
                warn!("intent {} rejected: {reason}", intent.intent_id);
                Some(ExecutionResult::without_fill(
                    intent,
                    Some(coid),
                    ResultStatus::Rejected,
                    e.code(),
                    reason,
                    now_ms(),
                ))
            }
            Err(e) => Some(self.failed(
                intent,
                coid,
                format!("cannot set leverage of {symbol}: {e}"),
            )),
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
    pub(super) async fn place(
        &self,
        intent: &TradeIntent,
        approved: risk::RiskApproved<OrderPlan>,
        tracker: &mut Tracker,
        progress_key: &str,
    ) -> Result<(), Box<ExecutionResult>> {
        let plan = approved.into_inner();
        let symbol = plan.symbol.as_str();
        let side = match plan.side {
            Side::Buy => binance::Side::Buy,
            Side::Sell => binance::Side::Sell,
        };
        let order = NewOrder::market(symbol, side, plan.quantity, plan.client_order_id.as_str())
            .reduce_only(plan.reduce_only)
            .response_type(ResponseType::Result);
        let coid = &plan.client_order_id;
        let mut sends = 0;
        let mut transient: u32 = 0;
        loop {
            sends += 1;
            match self.rest.place_order(&order).await {
                Ok(reply) => {
                    metrics::global().inc("quantum_orders_placed_total", &[]);
                    info!(
                        "order placed {symbol} {} qty={} reduceOnly={} status={} orderId={} clientOrderId={coid}",
                        plan.side.as_str(),
                        plan.quantity,
                        plan.reduce_only,
                        reply.status.as_str(),
                        reply.order_id
                    );
                    if let Some(report) = report_from_order(ReportSource::ResultReply, &reply) {
                        if let Err(e) = tracker.apply(&report) {
                            error!("order {coid}: contradictory reply {e}");
                        }
                    }
                    return Ok(());
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
                    // filled orders. Failed lookups are asked again until the fill timeout.
                    let give_up = tokio::time::Instant::now() + self.exec().fill_timeout;
                    let mut absent = 0u32;
                    let mut attempt = 0u32;
                    while absent < AMBIGUOUS_LOOKUPS {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(8))))
                            .await;
                        self.heartbeat(progress_key, intent).await;
                        match self
                            .rest
                            .find_order(symbol, &OrderRef::ClientOrderId(coid.to_string()))
                            .await
                        {
                            Ok(Some(found)) => {
                                metrics::global().inc(
                                    "quantum_ambiguous_submits_total",
                                    &[("resolution", "found")],
                                );
                                info!(
                                    "ambiguous submit resolved: the order exists, orderId={} status={} clientOrderId={coid}",
                                    found.order_id,
                                    found.status.as_str()
                                );
                                if let Some(report) =
                                    report_from_order(ReportSource::RestPoll, &found)
                                {
                                    let _ = tracker.apply(&report);
                                }
                                return Ok(());
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
                                if tokio::time::Instant::now() >= give_up {
                                    metrics::global().inc(
                                        "quantum_ambiguous_submits_total",
                                        &[("resolution", "unresolved")],
                                    );
                                    return Err(Box::new(self.failed(
                                        intent,
                                        coid,
                                        format!("OUTCOME UNKNOWN: the order submit was ambiguous and clientOrderId={coid} could not be looked up within {:?} (last: {e}); the order may exist and may have filled, so it is not sent again; check with `quantum order`", self.exec().fill_timeout),
                                    )));
                                }
                            }
                        }
                    }
                    if sends >= 2 {
                        metrics::global().inc(
                            "quantum_ambiguous_submits_total",
                            &[("resolution", "unresolved")],
                        );
                        return Err(Box::new(self.failed(
                            intent,
                            coid,
                            format!("order submit ambiguous twice and clientOrderId={coid} not found; not sending a third time"),
                        )));
                    }
                    metrics::global().inc(
                        "quantum_ambiguous_submits_total",
                        &[("resolution", "resent")],
                    );
                    warn!("ambiguous submit resolved: clientOrderId={coid} is not on the exchange after {AMBIGUOUS_LOOKUPS} lookups; sending it once more with the same id");
                }
                Err(e) if e.is_rejected() => {
                    let reason = format!("order rejected by the exchange: {e}");
                    warn!("intent {} rejected: {reason}", intent.intent_id);
                    return Err(Box::new(ExecutionResult::without_fill(
                        intent,
                        Some(coid),
                        ResultStatus::Rejected,
                        e.code(),
                        reason,
                        now_ms(),
                    )));
                }
                Err(e) if e.is_transient() && transient < 3 => {
                    transient += 1;
                    let wait = e
                        .retry_after()
                        .unwrap_or(Duration::from_millis(500 * u64::from(transient)));
                    warn!("order submit for intent {} refused for now ({e}); nothing was executed, retrying in {wait:?}", intent.intent_id);
                    self.heartbeat(progress_key, intent).await;
                    tokio::time::sleep(wait).await;
                    self.heartbeat(progress_key, intent).await;
                }
                Err(e) => {
                    return Err(Box::new(self.failed(
                        intent,
                        coid,
                        format!("order not placed: {e}"),
                    )));
                }
            }
        }
    }
}
