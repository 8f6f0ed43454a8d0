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
use engine::monitor::{Book, Net};
use model::{PositionSide, ProtectionAction, ProtectionEvent, ProtectiveKind};
use rust_decimal::Decimal;
use tracing::{error, info};

use crate::clock::now_ms;

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

/// One of quantum's protective orders on the exchange, as the monitor remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub algo_id: i64,
    pub client_algo_id: String,
    pub side: Side,
    pub trigger_price: Option<Decimal>,
}

/// Makes the book's protective orders match `net` (`None`: cancel them all): cancels what is
/// wrong or no longer wanted, places what is missing. `known` is what the monitor remembers
/// placing (its ids kept in memory, so an adjustment costs a place and a cancel, not a listing
/// too); `None` lists them on the exchange. Returns whether the exchange holds what was asked
/// (`Err` says why not; the core raises the alarm and asks again) and what it now holds, when
/// that is certain. On a hedge-mode account a book is one side of the symbol: its orders carry
/// that `positionSide`, and the other side's orders are not touched. Every order placed or
/// cancelled is added to `events` (for the protection stream).
pub async fn apply(
    rest: &RestClient,
    book: &Book,
    net: Option<Net>,
    known: Option<Vec<Placed>>,
    events: &mut Vec<ProtectionEvent>,
) -> (Result<(), String>, Option<Vec<Placed>>) {
    let symbol = book.symbol.as_str();
    let ours = match known {
        Some(known) => known,
        None => match rest.open_algo_orders(Some(symbol)).await {
            Ok(open) => open
                .into_iter()
                .filter(|a| {
                    is_protective(&a.client_algo_id) && side_of(&a.position_side) == book.side
                })
                .map(|a| Placed {
                    algo_id: a.algo_id,
                    client_algo_id: a.client_algo_id,
                    side: a.side,
                    trigger_price: a.trigger_price,
                })
                .collect(),
            Err(e) => return (Err(format!("cannot list the protective orders: {e}")), None),
        },
    };
    let mut now_held: Vec<Placed> = Vec::new();
    let mut problems = Vec::new();
    let mut certain = true;
    if let Some(net) = net {
        let rules = match rest.load_symbol_rules(symbol).await {
            Ok(r) => r,
            Err(e) => {
                return (
                    Err(format!("cannot load the rules of {symbol}: {e}")),
                    Some(ours),
                )
            }
        };
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
            if let Some(existing) = ours.iter().find(|a| {
                a.client_algo_id.starts_with(prefix)
                    && a.trigger_price == Some(price)
                    && a.side == close_side
            }) {
                now_held.push(existing.clone());
                continue;
            }
            let id = format!("{prefix}{symbol}-{}", now_ms() % 1_000_000_000);
            let mut order =
                NewAlgoOrder::close_position(symbol, close_side, kind.clone(), price, &id);
            if book.side != PositionSide::Both {
                order.position_side = Some(book.side.into());
            }
            match rest.place_algo_order(&order).await {
                Ok(placed) => {
                    info!("exchange-side {} for {book} placed at {price} (algoId={} clientAlgoId={id})", kind.as_str(), placed.algo_id);
                    events.push(event(
                        ProtectionAction::Placed,
                        book,
                        &id,
                        placed.algo_id,
                        Some(price),
                    ));
                    now_held.push(Placed {
                        algo_id: placed.algo_id,
                        client_algo_id: id,
                        side: close_side,
                        trigger_price: Some(price),
                    });
                }
                Err(e) if e.code() == Some(-2021) => problems.push(format!(
                    "{} at {price} would trigger at once (the price is already past it)",
                    kind.as_str()
                )),
                Err(e) => {
                    // A placement that timed out may exist: list the orders next time.
                    certain &= e.code().is_some();
                    problems.push(format!("{} at {price} NOT placed: {e}", kind.as_str()));
                }
            }
        }
    }
    for stale in ours
        .iter()
        .filter(|a| !now_held.iter().any(|h| h.algo_id == a.algo_id))
    {
        match rest
            .cancel_algo_order(&AlgoRef::AlgoId(stale.algo_id))
            .await
        {
            Ok(_) => {
                info!(
                    "exchange-side order {} of {book} at {:?} cancelled (algoId={})",
                    stale.client_algo_id, stale.trigger_price, stale.algo_id
                );
                events.push(event(
                    ProtectionAction::Cancelled,
                    book,
                    &stale.client_algo_id,
                    stale.algo_id,
                    stale.trigger_price,
                ));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                certain = false;
                problems.push(format!(
                    "cannot cancel protective order {}: {e}",
                    stale.algo_id
                ));
            }
        }
    }
    let held = certain.then_some(now_held);
    if problems.is_empty() {
        (Ok(()), held)
    } else {
        (Err(problems.join("; ")), held)
    }
}

/// The protection event of one of quantum's orders (its kind read from its client algo id).
fn event(
    action: ProtectionAction,
    book: &Book,
    client_algo_id: &str,
    algo_id: i64,
    trigger_price: Option<Decimal>,
) -> ProtectionEvent {
    ProtectionEvent {
        action,
        kind: if client_algo_id.starts_with(TARGET_PREFIX) {
            ProtectiveKind::TakeProfitMarket
        } else {
            ProtectiveKind::StopMarket
        },
        symbol: book.symbol.clone(),
        position_side: book.side,
        client_algo_id: client_algo_id.to_string(),
        algo_id,
        trigger_price,
        at: now_ms(),
    }
}

/// The book side an order's `positionSide` names (an unknown value reads as `Both`, which a
/// hedge account's orders never carry, so such an order is left alone by hedge books).
fn side_of(side: &binance::PositionSide) -> PositionSide {
    side.to_model().unwrap_or(PositionSide::Both)
}

/// Cancels quantum's protective orders of every book not in `held` (left over after a
/// position closed while the monitor was down). Returns the cancellations as events.
pub async fn cancel_orphans(
    rest: &RestClient,
    held: &std::collections::BTreeSet<Book>,
) -> Vec<ProtectionEvent> {
    let mut events = Vec::new();
    match rest.open_algo_orders(None).await {
        Ok(open) => {
            let orphans: std::collections::BTreeSet<Book> = open
                .into_iter()
                .filter(|a| is_protective(&a.client_algo_id))
                .map(|a| Book::new(a.symbol, side_of(&a.position_side)))
                .filter(|book| !held.contains(book))
                .collect();
            for book in orphans {
                info!("{book} is flat: cancelling its leftover protective orders");
                if let (Err(e), _) = apply(rest, &book, None, None, &mut events).await {
                    error!("{book}: {e}");
                }
            }
        }
        Err(e) => error!("cannot list open algo orders to clean up leftovers: {e}"),
    }
    events
}
