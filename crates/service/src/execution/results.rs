//! Turning a confirmed outcome (or a failure) into the execution result that is published.

use engine::Outcome;
use model::{ClientOrderId, ExecutionResult, ResultStatus, TradeIntent};
use rust_decimal::Decimal;
use tracing::{error, info, warn};

use crate::clock::now_ms;
use crate::metrics;

use super::Executor;

/// Reads of an order's trades for its fees before the result goes out without them.
const FEE_READS: u32 = 3;
/// The pause between two of those reads.
const FEE_READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

impl Executor {
    /// The fees of a filled order from its trades: up to [`FEE_READS`] reads, [`FEE_READ_PAUSE`]
    /// apart, while the trades are not all listed yet or the read failed for a reason that may
    /// pass (a timeout, the rate budget held); not longer, because the result waits for it.
    async fn read_fees(
        &self,
        symbol: &str,
        outcome: &Outcome,
    ) -> Result<(Decimal, String), String> {
        let mut why = String::new();
        for attempt in 1..=FEE_READS {
            match self
                .venue
                .fees(symbol, outcome.order_id, outcome.executed_qty)
                .await
            {
                Ok(Some(fees)) => return Ok(fees),
                Ok(None) => why = "its trades are not all listed yet".to_string(),
                Err(e) => {
                    why = format!("its trades could not be read ({e})");
                    if !(e.is_transient() || e.is_ambiguous()) || e.retry_after().is_some() {
                        // A refusal, or a 429/418 ban: asking again now would only cost weight.
                        break;
                    }
                }
            }
            if attempt < FEE_READS {
                tokio::time::sleep(FEE_READ_PAUSE).await;
            }
        }
        Err(why)
    }

    pub(super) async fn build_result(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        mut outcome: Outcome,
        order_sent_at: i64,
    ) -> ExecutionResult {
        let symbol = intent.symbol.as_str();
        if outcome.status.has_fill() && outcome.commission.is_none() {
            // The confirming report had no per-fill fees (REST or RESULT reply): ask for the
            // trades, a few times. What cannot be read is published as unknown (null), never as
            // 0 (regression: chaos seed 11 found `commission 0` for a fill charged 0.0748, its
            // trades held back by a 418 ban).
            match self.read_fees(symbol, &outcome).await {
                Ok((commission, asset)) => {
                    outcome.commission = Some(commission);
                    outcome.commission_asset = asset;
                }
                Err(why) => warn!(
                    "order {} filled, but its fees are not known: {why}; the result says commission null (unknown)",
                    outcome.order_id
                ),
            }
        }
        let elapsed = now_ms() - order_sent_at;
        if outcome.status.has_fill() {
            metrics::global()
                .fill_confirm_seconds
                .get_or_create(&metrics::ConfirmLabels {
                    confirmed_by: outcome.confirmed_by,
                })
                .observe(elapsed.max(0) as f64 / 1000.0);
            let execution = model::Execution {
                order_id: outcome.order_id,
                avg_price: outcome.avg_price,
                executed_qty: outcome.executed_qty,
                commission: outcome.commission,
                commission_asset: outcome.commission_asset.clone(),
                filled_at: outcome.final_time,
            };
            match ExecutionResult::with_fill(
                intent,
                coid,
                outcome.status,
                &execution,
                outcome.confirmed_by,
                order_sent_at,
                now_ms(),
            ) {
                Ok(result) => {
                    let word = if outcome.status == ResultStatus::Filled {
                        "FILLED"
                    } else {
                        "PARTIALLY FILLED (rest cancelled or expired)"
                    };
                    info!(
                        "order {word} {symbol} avgPrice={} qty={} notional={} orderId={} clientOrderId={coid}, confirmed by {} after {elapsed} ms",
                        outcome.avg_price.normalize(),
                        outcome.executed_qty.normalize(),
                        result.position_size_usd().normalize(),
                        outcome.order_id,
                        outcome.confirmed_by.as_str()
                    );
                    result
                }
                Err(e) => self.failed(
                    intent,
                    coid,
                    format!("exchange report does not hold up: {e}"),
                ),
            }
        } else {
            let reason = match outcome.status {
                ResultStatus::Timeout => format!(
                    "no fill confirmed within {:?}; the order was cancelled with nothing filled",
                    self.exec().fill_timeout
                ),
                ResultStatus::Canceled => "the order was cancelled with nothing filled".to_string(),
                ResultStatus::Expired => "the order expired with nothing filled".to_string(),
                ResultStatus::Rejected => "the exchange rejected the order".to_string(),
                _ => "the exchange reported a fill with no quantity; not reporting it as a fill"
                    .to_string(),
            };
            warn!(
                "order {coid} for intent {}: {} — {reason} (orderId={}, after {elapsed} ms)",
                intent.intent_id,
                outcome.status.as_str(),
                outcome.order_id
            );
            ExecutionResult::without_fill(
                intent,
                Some(coid),
                outcome.status,
                None,
                reason,
                now_ms(),
            )
            .with_order(outcome.order_id, order_sent_at)
        }
    }

    pub(super) fn failed(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        reason: String,
    ) -> ExecutionResult {
        error!("intent {} failed: {reason}", intent.intent_id);
        ExecutionResult::without_fill(
            intent,
            Some(coid),
            ResultStatus::Failed,
            None,
            reason,
            now_ms(),
        )
    }
}
