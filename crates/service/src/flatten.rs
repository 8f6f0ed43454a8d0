//! `quantum flatten`: get the account flat, through the same path every order takes.
//!
//! 1. Trading goes to `reducing` (from `active` or `halted`): nothing new opens while the account
//!    is being emptied, and closes may pass.
//! 2. Resting orders that are not protection (entries waiting on the book) are cancelled.
//! 3. Each position gets a CLOSE intent on the bus; the execution service sizes it from the
//!    position, sends a reduce-only MARKET order, and publishes the confirmed result, which is
//!    reported (price, quantity).
//! 4. Once a symbol is flat, its protective orders are cancelled, and the account is read again
//!    to show it is flat and clean.
//!
//! Trading stays `reducing` afterwards: `quantum resume` is the operator's decision.

use std::collections::BTreeMap;
use std::time::Duration;

use bus::{keys, Bus};
use engine::monitor::Book;
use model::{IntentId, PositionSide, Symbol, TradeIntent, TradingState};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::clock::now_ms;

/// What flatten plans for one symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolPlan {
    pub symbol: String,
    /// Signed amount of each position of the symbol that is not flat: one `BOTH` on a one-way
    /// account, `LONG` and/or `SHORT` on a hedge-mode one (empty: only orders to cancel).
    pub positions: Vec<(PositionSide, Decimal)>,
    /// Resting orders (not protection) to cancel: (order id, client order id).
    pub resting: Vec<(i64, String)>,
    /// Conditional orders to cancel once flat: (algo id, client algo id).
    pub conditional: Vec<(i64, String)>,
}

impl SymbolPlan {
    /// The positions as a person reads them: `0.5`, or `LONG 0.5, SHORT -0.2` in hedge mode,
    /// `0` when flat.
    pub fn describe_positions(&self) -> String {
        if self.positions.is_empty() {
            return "0".into();
        }
        self.positions
            .iter()
            .map(|(side, amount)| match side {
                PositionSide::Both => amount.normalize().to_string(),
                side => format!("{side} {}", amount.normalize()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One position's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The position closed: `AXSUSDT`, or `AXSUSDT LONG` on a hedge-mode account.
    pub book: String,
    pub intent_id: String,
    /// The result's status and, when filled, its average price and quantity.
    pub status: String,
    pub price: Option<String>,
    pub qty: Option<String>,
    pub error: Option<String>,
}

/// Why flatten could not finish.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("exchange: {0}")]
    Exchange(#[from] binance::Error),
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
    #[error("no result for {intent} within {waited:?}: is `quantum execution` running against this Redis?")]
    NoResult { intent: String, waited: Duration },
    #[error("{0}")]
    Intent(String),
}

/// What the account holds and what flatten would do about it, for one symbol or all.
pub async fn plan(
    rest: &binance::RestClient,
    only: Option<&str>,
) -> Result<Vec<SymbolPlan>, FlattenError> {
    let mut plans: BTreeMap<String, SymbolPlan> = BTreeMap::new();
    let entry = |plans: &mut BTreeMap<String, SymbolPlan>, symbol: &str| {
        plans
            .entry(symbol.to_string())
            .or_insert_with(|| SymbolPlan {
                symbol: symbol.to_string(),
                positions: Vec::new(),
                resting: Vec::new(),
                conditional: Vec::new(),
            })
            .symbol
            .clone()
    };
    for p in rest.position_risk(only).await? {
        if !p.position_amt.is_zero() {
            let key = entry(&mut plans, &p.symbol);
            let plan = plans.get_mut(&key).expect("just inserted");
            let side = p.position_side.to_model().ok_or_else(|| {
                FlattenError::Intent(format!(
                    "{}: position side {} is not one quantum knows",
                    p.symbol, p.position_side
                ))
            })?;
            plan.positions.push((side, p.position_amt));
        }
    }
    for o in rest.open_orders(only).await? {
        let key = entry(&mut plans, &o.symbol);
        plans
            .get_mut(&key)
            .expect("just inserted")
            .resting
            .push((o.order_id, o.client_order_id.clone()));
    }
    for a in rest.open_algo_orders(only).await? {
        let key = entry(&mut plans, &a.symbol);
        plans
            .get_mut(&key)
            .expect("just inserted")
            .conditional
            .push((a.algo_id, a.client_algo_id.clone()));
    }
    Ok(plans.into_values().collect())
}

/// Runs the plan (see the module doc); `wait` bounds each close's result.
pub async fn run(
    rest: &binance::RestClient,
    bus: &Bus,
    plans: &[SymbolPlan],
    by: &str,
    wait: Duration,
) -> Result<Vec<Closed>, FlattenError> {
    let current = crate::control::read(bus)
        .await?
        .map_or(TradingState::Active, |c| c.state);
    if current != TradingState::Reducing {
        crate::control::set(bus, TradingState::Reducing, by, "quantum flatten").await?;
    }
    if current == TradingState::Halted {
        // The services re-read the state within REFRESH; a close sent before they have would
        // still meet `halted` and be refused.
        tokio::time::sleep(crate::control::REFRESH * 3).await;
    }
    for plan in plans {
        for (id, _) in &plan.resting {
            // An order that filled or went away meanwhile is not a failure of flatten.
            if let Err(e) = rest
                .cancel_order(&plan.symbol, &binance::OrderRef::OrderId(*id))
                .await
            {
                tracing::warn!(target: "quantum::flatten", "{}: cancelling order {id}: {e}", plan.symbol);
            }
        }
    }
    let now = now_ms();
    let mut sent = Vec::new();
    for plan in plans {
        for (side, _) in &plan.positions {
            let symbol =
                Symbol::new(&plan.symbol).map_err(|e| FlattenError::Intent(e.to_string()))?;
            // One close per position: a hedge account's sides are closed each by its own.
            let (suffix, named) = match side {
                PositionSide::Both => (String::new(), None),
                side => (format!("-{}", side.as_str().to_lowercase()), Some(*side)),
            };
            let intent_id = IntentId::new(&format!(
                "flatten-{}{suffix}-{now}",
                plan.symbol.to_lowercase()
            ))
            .map_err(|e| FlattenError::Intent(e.to_string()))?;
            let intent = TradeIntent::close(intent_id.clone(), symbol)
                .position_side(named)
                .source("quantum-flatten")
                .created_at(now)
                .build()
                .map_err(|e| FlattenError::Intent(e.to_string()))?;
            bus.publish(keys::TRADE_INTENT, &intent.to_json().to_string())
                .await?;
            let book = Book::new(plan.symbol.clone(), *side).to_string();
            sent.push((book, intent_id.as_str().to_string()));
        }
    }
    let mut closed = Vec::new();
    for (book, intent_id) in sent {
        let result = wait_result(bus, &intent_id, wait).await?;
        let text = |k: &str| match &result[k] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        closed.push(Closed {
            book,
            intent_id,
            status: text("status").unwrap_or_default(),
            price: text("entry_price"),
            qty: text("executed_qty"),
            error: text("error"),
        });
    }
    // Protection of symbols that are now flat goes; a symbol still holding keeps its stop.
    for plan in plans {
        let flat = rest
            .position_risk(Some(&plan.symbol))
            .await?
            .iter()
            .all(|p| p.position_amt.is_zero());
        if !flat {
            continue;
        }
        for algo in rest.open_algo_orders(Some(&plan.symbol)).await? {
            if let Err(e) = rest
                .cancel_algo_order(&binance::AlgoRef::AlgoId(algo.algo_id))
                .await
            {
                tracing::warn!(target: "quantum::flatten", "{}: cancelling conditional order {}: {e}", plan.symbol, algo.algo_id);
            }
        }
    }
    Ok(closed)
}

async fn wait_result(bus: &Bus, intent_id: &str, wait: Duration) -> Result<Value, FlattenError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        for entry in bus.latest(keys::TRADE_EXECUTION_RESULT, 500).await? {
            let Ok(payload) = entry.payload else { continue };
            let Ok(result) = serde_json::from_str::<Value>(&payload) else {
                continue;
            };
            if result["intent_id"] == intent_id {
                return Ok(result);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(FlattenError::NoResult {
                intent: intent_id.to_string(),
                waited: wait,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
