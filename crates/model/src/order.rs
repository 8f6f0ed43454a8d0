//! An exchange order's side, and its status as quantum tracks it with the one table of legal
//! moves. Reports arrive from three places (the RESULT reply, the user stream, REST polls) and can
//! arrive late or twice, so the table accepts stale news without moving backwards, and refuses
//! only what cannot be true (a filled order that is later cancelled).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The side of an exchange order, spelt `BUY` / `SELL` as Binance and the bus both spell it.
/// There is one `Side` in the workspace: the engine decides it and the Binance client sends and
/// reads it, so nothing maps one side type onto another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which position an order works on. `Both` is one-way mode's single netted position per
/// symbol; `Long` and `Short` are hedge mode's two positions (`dualSidePosition=true`), which
/// Binance keeps apart: a SELL on the LONG side closes it, a SELL on the SHORT side opens.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum PositionSide {
    #[default]
    Both,
    Long,
    Short,
}

impl PositionSide {
    pub fn as_str(self) -> &'static str {
        match self {
            PositionSide::Both => "BOTH",
            PositionSide::Long => "LONG",
            PositionSide::Short => "SHORT",
        }
    }

    /// Reads `LONG`, `SHORT` or `BOTH`, case-insensitively.
    pub fn parse(text: &str) -> Option<PositionSide> {
        [PositionSide::Both, PositionSide::Long, PositionSide::Short]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    /// The hedge-mode side an entry opens: a BUY opens the LONG side, a SELL the SHORT side.
    pub fn opened_by(side: Side) -> PositionSide {
        match side {
            Side::Buy => PositionSide::Long,
            Side::Sell => PositionSide::Short,
        }
    }

    /// The order side that closes this hedge-mode side (`None` for one-way mode's `Both`, whose
    /// closing side depends on the sign of the position).
    pub fn closing_side(self) -> Option<Side> {
        match self {
            PositionSide::Both => None,
            PositionSide::Long => Some(Side::Sell),
            PositionSide::Short => Some(Side::Buy),
        }
    }
}

impl fmt::Display for PositionSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Binance's order status (`status` / `X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
    Rejected,
}

/// Something an exchange report says happened to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEvent {
    /// The order is on the book (`NEW`).
    Accepted,
    /// Some quantity filled, the order stays open.
    PartialFill,
    /// The last quantity filled.
    Filled,
    Canceled,
    Expired,
    Rejected,
}

/// A report that contradicts what is already known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("order status {from:?} cannot take {event:?}")]
pub struct TransitionError {
    pub from: OrderStatus,
    pub event: OrderEvent,
}

impl OrderStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }

    /// Parses Binance's text (`EXPIRED_IN_MATCH` is an expiry too).
    pub fn from_binance(text: &str) -> Option<OrderStatus> {
        Some(match text {
            "NEW" => OrderStatus::New,
            "PARTIALLY_FILLED" => OrderStatus::PartiallyFilled,
            "FILLED" => OrderStatus::Filled,
            "CANCELED" => OrderStatus::Canceled,
            "EXPIRED" | "EXPIRED_IN_MATCH" => OrderStatus::Expired,
            "REJECTED" => OrderStatus::Rejected,
            _ => return None,
        })
    }

    /// The event a report of this status stands for.
    pub fn as_event(self) -> OrderEvent {
        match self {
            OrderStatus::New => OrderEvent::Accepted,
            OrderStatus::PartiallyFilled => OrderEvent::PartialFill,
            OrderStatus::Filled => OrderEvent::Filled,
            OrderStatus::Canceled => OrderEvent::Canceled,
            OrderStatus::Expired => OrderEvent::Expired,
            OrderStatus::Rejected => OrderEvent::Rejected,
        }
    }

    /// The transition table: every legal (status, event) pair, one per line.
    pub fn apply(self, event: OrderEvent) -> Result<OrderStatus, TransitionError> {
        use OrderEvent as E;
        use OrderStatus as S;
        let next = match (self, event) {
            (S::New, E::Accepted) => S::New,
            (S::New | S::PartiallyFilled, E::PartialFill) => S::PartiallyFilled,
            (S::New | S::PartiallyFilled, E::Filled) => S::Filled,
            (S::New | S::PartiallyFilled, E::Canceled) => S::Canceled,
            (S::New | S::PartiallyFilled, E::Expired) => S::Expired,
            (S::New, E::Rejected) => S::Rejected,
            // Late news: a NEW or partial report that arrives after a later state changes nothing.
            (S::PartiallyFilled, E::Accepted) => S::PartiallyFilled,
            (S::Filled | S::Canceled | S::Expired, E::Accepted | E::PartialFill) => self,
            // The same final report twice (stream and poll both saw it).
            (S::Filled, E::Filled)
            | (S::Canceled, E::Canceled)
            | (S::Expired, E::Expired)
            | (S::Rejected, E::Rejected) => self,
            _ => return Err(TransitionError { from: self, event }),
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [OrderStatus; 6] = [
        OrderStatus::New,
        OrderStatus::PartiallyFilled,
        OrderStatus::Filled,
        OrderStatus::Canceled,
        OrderStatus::Expired,
        OrderStatus::Rejected,
    ];
    const EVENTS: [OrderEvent; 6] = [
        OrderEvent::Accepted,
        OrderEvent::PartialFill,
        OrderEvent::Filled,
        OrderEvent::Canceled,
        OrderEvent::Expired,
        OrderEvent::Rejected,
    ];

    #[test]
    fn a_side_is_spelt_as_binance_spells_it() {
        for side in [Side::Buy, Side::Sell] {
            let json = serde_json::to_string(&side).unwrap();
            assert_eq!(json, format!("\"{}\"", side.as_str()));
            assert_eq!(serde_json::from_str::<Side>(&json).unwrap(), side);
            assert_eq!(side.to_string(), side.as_str());
        }
        assert!(serde_json::from_str::<Side>(r#""buy""#).is_err());
    }

    #[test]
    fn a_market_order_goes_new_then_filled() {
        let s = OrderStatus::New.apply(OrderEvent::Accepted).unwrap();
        assert_eq!(s.apply(OrderEvent::Filled), Ok(OrderStatus::Filled));
    }

    #[test]
    fn a_filled_order_cannot_be_cancelled_or_rejected() {
        assert!(OrderStatus::Filled.apply(OrderEvent::Canceled).is_err());
        assert!(OrderStatus::Filled.apply(OrderEvent::Rejected).is_err());
        assert!(OrderStatus::PartiallyFilled
            .apply(OrderEvent::Rejected)
            .is_err());
    }

    proptest! {
        /// Whatever order reports arrive in, a final status never turns into another status.
        #[test]
        fn final_statuses_never_move(events in proptest::collection::vec(0usize..6, 0..20)) {
            let mut status = OrderStatus::New;
            for i in events {
                if let Ok(next) = status.apply(EVENTS[i]) {
                    if status.is_final() {
                        prop_assert_eq!(next, status);
                    }
                    status = next;
                }
            }
        }
    }

    #[test]
    fn every_pair_is_either_in_the_table_or_an_error() {
        for s in ALL {
            for e in EVENTS {
                match s.apply(e) {
                    Ok(next) => assert!(!s.is_final() || next == s, "{s:?} + {e:?}"),
                    Err(err) => assert_eq!((err.from, err.event), (s, e)),
                }
            }
        }
    }
}
