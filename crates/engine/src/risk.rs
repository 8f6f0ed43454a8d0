//! Pre-trade risk checks. [`check`] turns a sized order into a [`RiskApproved`] order or a
//! [`RiskRefused`] one; a refusal is an ordinary outcome (it becomes a `rejected` result), not an
//! error. `RiskApproved` has no public constructor: the exchange adapter demands one, so an order
//! that skipped these checks does not compile. Close intents pass through the same gate.

use std::collections::BTreeSet;

use model::{Action, ClientOrderId, Side, Symbol, TradeIntent, TradingState};
use rust_decimal::Decimal;

/// A sized order waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPlan {
    pub symbol: Symbol,
    pub side: Side,
    pub quantity: Decimal,
    pub reduce_only: bool,
    /// `Both` on a one-way account; the hedge side the order works on otherwise.
    pub position_side: model::PositionSide,
    pub client_order_id: ClientOrderId,
    /// Leverage to set before placing, when the intent asks for one.
    pub leverage: Option<u32>,
    /// The mark price the order was sized at.
    pub mark_price: Decimal,
}

impl OrderPlan {
    pub fn notional(&self) -> Decimal {
        self.quantity * self.mark_price
    }
}

/// Limits from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskLimits {
    /// `None` allows every symbol the exchange lists.
    pub allowed_symbols: Option<BTreeSet<Symbol>>,
    /// Largest notional of one opening order, in USDT.
    pub max_notional_usd: Decimal,
    pub max_leverage: u32,
    /// When on, every opening order is refused; reduce-only closes still pass, because refusing
    /// to reduce risk is never what an operator pulling the switch wants.
    pub kill_switch: bool,
}

/// Proof that an order passed [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskApproved<T>(T);

impl<T> RiskApproved<T> {
    pub fn get(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Why risk refused an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RiskRefused {
    #[error("kill switch is on: opening orders are refused")]
    KillSwitch,
    #[error("trading is {0}: opening orders are refused (quantum resume to trade again)")]
    NoEntries(TradingState),
    #[error("trading is halted: nothing new is sent, closes included (quantum resume, or quantum halt --reduce-only to let closes through)")]
    Halted,
    #[error("symbol {0} is not in the allowed symbols")]
    SymbolNotAllowed(Symbol),
    #[error("notional {notional} USDT is above the limit of {limit} USDT")]
    NotionalTooLarge { notional: Decimal, limit: Decimal },
    #[error("leverage {leverage} is above the limit of {limit}")]
    LeverageTooHigh { leverage: u32, limit: u32 },
}

/// Checks a sized order for an intent against the limits and the operator's trading state
/// (as the caller last read it).
pub fn check(
    intent: &TradeIntent,
    plan: OrderPlan,
    limits: &RiskLimits,
    state: TradingState,
) -> Result<RiskApproved<OrderPlan>, RiskRefused> {
    if !state.allows_reductions() {
        return Err(RiskRefused::Halted);
    }
    if let Some(allowed) = &limits.allowed_symbols {
        if !allowed.contains(&plan.symbol) {
            return Err(RiskRefused::SymbolNotAllowed(plan.symbol));
        }
    }
    let closing = intent.action == Action::Close || plan.reduce_only;
    if closing {
        return Ok(RiskApproved(plan));
    }
    if limits.kill_switch {
        return Err(RiskRefused::KillSwitch);
    }
    if !state.allows_entries() {
        return Err(RiskRefused::NoEntries(state));
    }
    if let Some(leverage) = plan.leverage {
        if leverage > limits.max_leverage {
            return Err(RiskRefused::LeverageTooHigh {
                leverage,
                limit: limits.max_leverage,
            });
        }
    }
    let notional = plan.notional();
    if notional > limits.max_notional_usd {
        return Err(RiskRefused::NotionalTooLarge {
            notional: notional.round_dp(2),
            limit: limits.max_notional_usd,
        });
    }
    Ok(RiskApproved(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RiskLimits {
        RiskLimits {
            allowed_symbols: Some([Symbol::new("AXSUSDT").unwrap()].into_iter().collect()),
            max_notional_usd: Decimal::from(1_000),
            max_leverage: 20,
            kill_switch: false,
        }
    }

    fn intent(action: &str) -> TradeIntent {
        let size = if action == "CLOSE" {
            ""
        } else {
            r#","quantity":10"#
        };
        TradeIntent::from_json(&format!(
            r#"{{"intent_id":"r","symbol":"AXSUSDT","action":"{action}"{size}}}"#
        ))
        .unwrap()
    }

    fn plan(qty: i64, leverage: Option<u32>, reduce_only: bool) -> OrderPlan {
        OrderPlan {
            symbol: Symbol::new("AXSUSDT").unwrap(),
            side: Side::Buy,
            quantity: Decimal::from(qty),
            reduce_only,
            position_side: model::PositionSide::Both,
            client_order_id: ClientOrderId::new("q-r").unwrap(),
            leverage,
            mark_price: Decimal::from(6),
        }
    }

    #[test]
    fn an_order_within_limits_is_approved() {
        assert!(check(
            &intent("BUY"),
            plan(10, Some(10), false),
            &limits(),
            TradingState::Active
        )
        .is_ok());
    }

    #[test]
    fn each_limit_refuses_with_its_reason() {
        assert_eq!(
            check(
                &intent("BUY"),
                plan(10, Some(50), false),
                &limits(),
                TradingState::Active
            ),
            Err(RiskRefused::LeverageTooHigh {
                leverage: 50,
                limit: 20
            })
        );
        assert!(matches!(
            check(
                &intent("BUY"),
                plan(200, None, false),
                &limits(),
                TradingState::Active
            ),
            Err(RiskRefused::NotionalTooLarge { .. })
        ));
        let mut other = plan(10, None, false);
        other.symbol = Symbol::new("BTCUSDT").unwrap();
        assert!(matches!(
            check(&intent("BUY"), other, &limits(), TradingState::Active),
            Err(RiskRefused::SymbolNotAllowed(_))
        ));
    }

    #[test]
    fn the_kill_switch_stops_opening_orders_but_lets_closes_through() {
        let killed = RiskLimits {
            kill_switch: true,
            ..limits()
        };
        assert_eq!(
            check(
                &intent("BUY"),
                plan(10, None, false),
                &killed,
                TradingState::Active
            ),
            Err(RiskRefused::KillSwitch)
        );
        assert!(check(
            &intent("CLOSE"),
            plan(10, None, true),
            &killed,
            TradingState::Active
        )
        .is_ok());
    }

    #[test]
    fn reducing_stops_entries_and_halted_stops_everything() {
        let buy = || plan(10, None, false);
        let close = || plan(10, None, true);
        assert_eq!(
            check(&intent("BUY"), buy(), &limits(), TradingState::Reducing),
            Err(RiskRefused::NoEntries(TradingState::Reducing))
        );
        assert!(check(&intent("CLOSE"), close(), &limits(), TradingState::Reducing).is_ok());
        assert_eq!(
            check(&intent("BUY"), buy(), &limits(), TradingState::Halted),
            Err(RiskRefused::Halted)
        );
        assert_eq!(
            check(&intent("CLOSE"), close(), &limits(), TradingState::Halted),
            Err(RiskRefused::Halted)
        );
    }
}
