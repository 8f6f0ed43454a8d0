//! Exchange-side protection: for every symbol the exit monitor holds, a STOP_MARKET and a
//! TAKE_PROFIT_MARKET algo order with `closePosition=true`, so the position stays protected while
//! the monitor is down. They are a net behind the monitor, placed `NET_OFFSET_PCT` beyond the
//! loosest stop-loss and the farthest take-profit of the symbol's lots, so while the monitor runs
//! its own trigger fires first and the exchange's order only acts when the monitor does not. They are cancelled before the monitor sends a close (a resting
//! close-position order is what gets reduce-only closes refused with -2022 / -4118), put back if
//! the close fails, and cancelled when the symbol is flat: no protective order outlives its
//! position.
//!
//! The exit monitor owns these orders (not the execution service) because it owns the exit
//! plans and the positions they protect; the execution service only turns intents into orders.

use binance::{AlgoOrderType, AlgoRef, NewAlgoOrder, RestClient, Rounding, Side};
use engine::book::Lot;
use engine::exits::Direction;
use rust_decimal::Decimal;
use tracing::{error, info, warn};

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

/// The levels the exchange-side orders of a symbol should have: the loosest stop and the
/// farthest target over the symbol's lots (all lots of one symbol share a direction in one-way
/// mode). `None` when the symbol holds nothing.
fn wanted(lots: &[&Lot]) -> Option<(Direction, Option<Decimal>, Option<Decimal>)> {
    let direction = lots.first()?.direction;
    let long = direction == Direction::Long;
    let pick = |values: Vec<Decimal>, loosest_low: bool| {
        if loosest_low {
            values.into_iter().min()
        } else {
            values.into_iter().max()
        }
    };
    let stops: Vec<Decimal> = lots.iter().filter_map(|l| l.levels.stop_loss).collect();
    let targets: Vec<Decimal> = lots.iter().filter_map(|l| l.levels.take_profit).collect();
    // A stop is looser the farther it is from the price: lowest for a long, highest for a short.
    let stop = if stops.len() == lots.len() {
        pick(stops, long)
    } else {
        None
    };
    let target = if targets.len() == lots.len() {
        pick(targets, !long)
    } else {
        None
    };
    let beyond = |level: Decimal, up: bool| {
        let offset = level * NET_OFFSET_PCT / Decimal::ONE_HUNDRED;
        if up {
            level + offset
        } else {
            level - offset
        }
    };
    // Beyond means lower for a long's stop and a short's target, higher for the others.
    let stop = stop.map(|s| beyond(s, !long));
    let target = target.map(|t| beyond(t, long));
    Some((direction, stop, target))
}

/// Makes the symbol's protective orders match its lots: cancels what is wrong or no longer
/// needed, places what is missing. Errors are logged loudly; the monitor's own triggers keep
/// working whatever happens here.
pub async fn sync(rest: &RestClient, symbol: &str, lots: &[&Lot]) {
    let open = match rest.open_algo_orders(Some(symbol)).await {
        Ok(open) => open,
        Err(e) => {
            error!("cannot list the protective orders of {symbol}: {e}; exchange-side protection unknown");
            return;
        }
    };
    let ours: Vec<_> = open
        .into_iter()
        .filter(|a| is_protective(&a.client_algo_id))
        .collect();
    let want = wanted(lots);
    let rules = match rest.load_symbol_rules(symbol).await {
        Ok(r) => Some(r),
        Err(e) => {
            error!("cannot load the rules of {symbol}: {e}");
            None
        }
    };
    let mut keep = Vec::new();
    if let (Some((direction, stop, target)), Some(rules)) = (want, rules) {
        let close_side = if direction == Direction::Long {
            Side::Sell
        } else {
            Side::Buy
        };
        // Rounded away from the price, so the exchange's order is never tighter than the plan.
        let (stop_round, target_round) = if direction == Direction::Long {
            (Rounding::Down, Rounding::Up)
        } else {
            (Rounding::Up, Rounding::Down)
        };
        for (kind, level, rounding, prefix) in [
            (AlgoOrderType::StopMarket, stop, stop_round, STOP_PREFIX),
            (
                AlgoOrderType::TakeProfitMarket,
                target,
                target_round,
                TARGET_PREFIX,
            ),
        ] {
            let Some(level) = level else { continue };
            let Ok(price) = rules.round_price(level, rounding) else {
                warn!("{symbol}: {} level {level} is outside the price filter; no exchange-side order", kind.as_str());
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
                Err(e) if e.code() == Some(-2021) => {
                    warn!("{symbol}: exchange-side {} at {price} would trigger at once; the monitor's own trigger handles it", kind.as_str());
                }
                Err(e) => error!("{symbol}: exchange-side {} at {price} NOT placed: {e}; only the monitor protects the position", kind.as_str()),
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
            Err(e) => error!(
                "cannot cancel protective order {} of {symbol}: {e}",
                stale.algo_id
            ),
        }
    }
}

/// Cancels every protective order of quantum's on a symbol (before a close, or when flat).
pub async fn cancel_all(rest: &RestClient, symbol: &str) {
    sync(rest, symbol, &[]).await;
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
                cancel_all(rest, &symbol).await;
            }
        }
        Err(e) => error!("cannot list open algo orders to clean up leftovers: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::exits::{Levels, TrailState};

    fn lot(direction: Direction, sl: &str, tp: &str) -> Lot {
        let levels = Levels {
            direction,
            entry: Decimal::from(100),
            take_profit: Some(tp.parse().unwrap()),
            stop_loss: Some(sl.parse().unwrap()),
            trailing_pct: None,
        };
        Lot {
            id: "x".into(),
            symbol: "S".into(),
            direction,
            qty: Decimal::ONE,
            entry: Decimal::from(100),
            entry_fee: Decimal::ZERO,
            levels,
            trail: TrailState::new(&levels),
            opened_at: 0,
            closing: None,
            retry_at: None,
            failed_closes: 0,
        }
    }

    #[test]
    fn the_net_sits_at_the_loosest_stop_and_the_farthest_target() {
        let (a, b) = (
            lot(Direction::Long, "98", "104"),
            lot(Direction::Long, "95", "110"),
        );
        assert_eq!(
            wanted(&[&a, &b]),
            Some((
                Direction::Long,
                Some("94.525".parse().unwrap()),
                Some("110.55".parse().unwrap())
            ))
        );
        let (c, d) = (
            lot(Direction::Short, "102", "96"),
            lot(Direction::Short, "105", "90"),
        );
        assert_eq!(
            wanted(&[&c, &d]),
            Some((
                Direction::Short,
                Some("105.525".parse().unwrap()),
                Some("89.55".parse().unwrap())
            ))
        );
        assert_eq!(wanted(&[]), None);
    }
}
