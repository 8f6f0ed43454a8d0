//! Exchange-side protection, the I/O half: for every symbol the exit monitor holds, a STOP_MARKET
//! and (budget allowing) a TAKE_PROFIT_MARKET algo order with `closePosition=true`, so the
//! position stays protected while the monitor is down. Where they sit, and whether a symbol gets
//! a take-profit at all under the account's 200 conditional orders, is decided by the core
//! (`engine::monitor`, `Net`): `NET_OFFSET_PCT` beyond the loosest stop-loss and the farthest
//! take-profit of the symbol's lots, so while the monitor runs its own trigger fires first. This
//! module only makes the exchange match a `Net` and says whether it did. The orders stay in
//! place while a close is in flight (a resting algo order does not block a reduce-only close;
//! ARCHITECTURE.md) and are cancelled once the symbol is flat in the book.
//!
//! The exit monitor owns these orders (not the execution service) because it owns the exit
//! plans and the positions they protect; the execution service only turns intents into orders.

use binance::{AlgoOrderType, AlgoRef, NewAlgoOrder, RestClient, Rounding, Side};
use engine::exits::Direction;
use engine::monitor::Net;
use rust_decimal::Decimal;
use tracing::{error, info};

use crate::execution::now_ms;

/// How far beyond the monitor's levels the exchange-side orders sit, in percent of the level.
/// Far enough that a normal tick reaches the monitor's level first, close enough to protect.
pub const NET_OFFSET_PCT: Decimal = Decimal::from_parts(5, 0, 0, false, 1);

/// Prefixes of the client algo ids quantum gives its protective orders.
const STOP_PREFIX: &str = "qsl-";
const TARGET_PREFIX: &str = "qtp-";

/// Whether an algo order is one of quantum's protective orders.
pub fn is_protective(client_algo_id: &str) -> bool {
    client_algo_id.starts_with(STOP_PREFIX) || client_algo_id.starts_with(TARGET_PREFIX)
}

/// Makes the symbol's protective orders match `net` (`None`: cancel them all): cancels what is
/// wrong or no longer wanted, places what is missing. `Err` says why the exchange does not hold
/// what was asked; the core raises the alarm and asks again.
pub async fn apply(rest: &RestClient, symbol: &str, net: Option<Net>) -> Result<(), String> {
    let open = rest
        .open_algo_orders(Some(symbol))
        .await
        .map_err(|e| format!("cannot list the protective orders: {e}"))?;
    let ours: Vec<_> = open
        .into_iter()
        .filter(|a| is_protective(&a.client_algo_id))
        .collect();
    let mut keep = Vec::new();
    let mut problems = Vec::new();
    if let Some(net) = net {
        let rules = rest
            .load_symbol_rules(symbol)
            .await
            .map_err(|e| format!("cannot load the rules of {symbol}: {e}"))?;
        let long = net.direction == Direction::Long;
        let close_side = if long { Side::Sell } else { Side::Buy };
        // Rounded away from the price, so the exchange's order is never tighter than the plan.
        let (stop_round, target_round) = if long {
            (Rounding::Down, Rounding::Up)
        } else {
            (Rounding::Up, Rounding::Down)
        };
        for (kind, level, rounding, prefix) in [
            (AlgoOrderType::StopMarket, net.stop, stop_round, STOP_PREFIX),
            (
                AlgoOrderType::TakeProfitMarket,
                net.target,
                target_round,
                TARGET_PREFIX,
            ),
        ] {
            let Some(level) = level else { continue };
            let Ok(price) = rules.round_price(level, rounding) else {
                problems.push(format!(
                    "{} level {level} is outside the price filter",
                    kind.as_str()
                ));
                continue;
            };
            if let Some(existing) = ours
                .iter()
                .find(|a| a.client_algo_id.starts_with(prefix) && a.trigger_price == Some(price))
            {
                keep.push(existing.algo_id);
                continue;
            }
            let id = format!("{prefix}{symbol}-{}", now_ms() % 1_000_000_000);
            let order =
                NewAlgoOrder::close_position(symbol, close_side.clone(), kind.clone(), price, &id);
            match rest.place_algo_order(&order).await {
                Ok(placed) => {
                    info!("exchange-side {} for {symbol} placed at {price} (algoId={} clientAlgoId={id})", kind.as_str(), placed.algo_id);
                    keep.push(placed.algo_id);
                }
                Err(e) if e.code() == Some(-2021) => problems.push(format!(
                    "{} at {price} would trigger at once (the price is already past it)",
                    kind.as_str()
                )),
                Err(e) => problems.push(format!("{} at {price} NOT placed: {e}", kind.as_str())),
            }
        }
    }
    for stale in ours.iter().filter(|a| !keep.contains(&a.algo_id)) {
        match rest
            .cancel_algo_order(&AlgoRef::AlgoId(stale.algo_id))
            .await
        {
            Ok(_) => info!(
                "exchange-side {} of {symbol} at {:?} cancelled (algoId={})",
                stale.order_type.as_str(),
                stale.trigger_price,
                stale.algo_id
            ),
            Err(e) if e.is_not_found() => {}
            Err(e) => problems.push(format!(
                "cannot cancel protective order {}: {e}",
                stale.algo_id
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Cancels quantum's protective orders on every symbol not in `held` (left over after a
/// position closed while the monitor was down).
pub async fn cancel_orphans(rest: &RestClient, held: &std::collections::BTreeSet<String>) {
    match rest.open_algo_orders(None).await {
        Ok(open) => {
            let orphans: std::collections::BTreeSet<String> = open
                .into_iter()
                .filter(|a| is_protective(&a.client_algo_id) && !held.contains(&a.symbol))
                .map(|a| a.symbol)
                .collect();
            for symbol in orphans {
                info!("{symbol} is flat: cancelling its leftover protective orders");
                if let Err(e) = apply(rest, &symbol, None).await {
                    error!("{symbol}: {e}");
                }
            }
        }
        Err(e) => error!("cannot list open algo orders to clean up leftovers: {e}"),
    }
}
