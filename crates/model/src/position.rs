//! What happens to a position after its entry, as the exit monitor publishes it on the
//! position-events stream: a lot opened (or adopted), and a lot closed or exited, with the
//! reason, the exit price, the realized PnL net of fees and the fees. One JSON document per
//! event (the bus contract, like [`crate::ExecutionResult`]); the journal reads it.
//!
//! Prices, quantities, PnL and fees are JSON numbers with their exact decimal digits, as in
//! results.
//!
//! A lot opens once and leaves the book once, so `(kind, lot_id)` names an event (a part that
//! leaves early, `reduced`, is named by its time and quantity too): a consumer that sees one
//! twice (a republish after a crash) keeps the first.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::PositionSide;

/// Which way a lot is exposed: a long profits when the price rises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Long,
    Short,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Long => "long",
            Direction::Short => "short",
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        [Direction::Long, Direction::Short]
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

/// What happened to the lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A filled entry is tracked from its result.
    Opened,
    /// A position nothing explained is tracked (found by a position read).
    Adopted,
    /// quantum's own close filled for the whole lot.
    Closed,
    /// The lot left the book without a close of its own (see [`ExitReason`]).
    Exited,
    /// Part of the lot left the book (a partial close fill, a netting); the rest stays open.
    Reduced,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Adopted => "adopted",
            EventKind::Closed => "closed",
            EventKind::Exited => "exited",
            EventKind::Reduced => "reduced",
        }
    }

    /// Whether the event is about quantity leaving the book (and so carries a reason).
    pub fn is_exit(self) -> bool {
        matches!(
            self,
            EventKind::Closed | EventKind::Exited | EventKind::Reduced
        )
    }
}

/// Why a lot was closed or left the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    TakeProfit,
    StopLoss,
    TrailingStop,
    /// Closed by quantum without a trigger it remembers (the close of an adopted lot after a
    /// restart, for instance).
    Close,
    /// Closed on the exchange, not by quantum: its protective order fired, or by hand.
    Exchange,
    /// Netted away by an opposite entry (one-way mode).
    Netted,
    /// Reduced by a close fill the book did not expect (a late attempt, a CLOSE sent by someone
    /// else).
    UnexpectedClose,
    /// The lot of an adopted position handed over to the result that explains it.
    TakenOver,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::TakeProfit => "take_profit",
            ExitReason::StopLoss => "stop_loss",
            ExitReason::TrailingStop => "trailing_stop",
            ExitReason::Close => "close",
            ExitReason::Exchange => "exchange",
            ExitReason::Netted => "netted",
            ExitReason::UnexpectedClose => "unexpected_close",
            ExitReason::TakenOver => "taken_over",
        }
    }

    pub const ALL: [ExitReason; 8] = [
        ExitReason::TakeProfit,
        ExitReason::StopLoss,
        ExitReason::TrailingStop,
        ExitReason::Close,
        ExitReason::Exchange,
        ExitReason::Netted,
        ExitReason::UnexpectedClose,
        ExitReason::TakenOver,
    ];

    pub fn parse(text: &str) -> Option<ExitReason> {
        ExitReason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// One event of a lot's life. For `opened` / `adopted` the exit fields are `None`; for `closed` /
/// `exited` / `reduced` `exit_price` is `None` only when no fill price is known (a lot taken over), and
/// `realized_pnl` when it is unknown (no exit price, or an overflow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionEvent {
    pub kind: EventKind,
    /// The opening intent's id (or `exchange-<symbol>-<ms>` for an adopted position).
    pub lot_id: String,
    pub symbol: String,
    pub position_side: PositionSide,
    pub direction: Direction,
    /// The lot's quantity: what opened, or what left the book.
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub qty: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub entry_price: Decimal,
    /// When the lot was opened (ms since the epoch).
    pub opened_at: i64,
    /// When this event happened (ms since the epoch).
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ExitReason>,
    /// The monitor's words for an exit without a close of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub exit_price: Option<Decimal>,
    /// (exit − entry) × qty, signed by direction, less `fees`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub realized_pnl: Option<Decimal>,
    /// The lot's entry fee (its share, for what left) plus the exit fee where the exchange stated
    /// one (0 for an exit on the exchange: its fill's fee is not reported to quantum).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub fees: Option<Decimal>,
}

/// Why a position event document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid position event: {0}")]
pub struct PositionEventError(String);

impl PositionEvent {
    /// The event's identity: a lot opens once and leaves once; a part leaving is named by when
    /// and how much (a republished document keeps both).
    pub fn key(&self) -> String {
        match self.kind {
            EventKind::Reduced => format!("reduced:{}:{}:{}", self.lot_id, self.at, self.qty),
            kind => format!("{}:{}", kind.as_str(), self.lot_id),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a position event serializes")
    }

    /// Reads a document; an exit without a reason, or an entry with one, is refused.
    pub fn from_json(text: &str) -> Result<PositionEvent, PositionEventError> {
        let event: PositionEvent =
            serde_json::from_str(text).map_err(|e| PositionEventError(e.to_string()))?;
        let exit = event.kind.is_exit();
        if exit != event.reason.is_some() {
            return Err(PositionEventError(format!(
                "a {} event {} a reason",
                event.kind.as_str(),
                if exit { "needs" } else { "has no" }
            )));
        }
        if event.lot_id.is_empty() || event.symbol.is_empty() {
            return Err(PositionEventError("lot_id and symbol are required".into()));
        }
        Ok(event)
    }
}

/// What happened to an exchange-side protective order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtectionAction {
    Placed,
    Cancelled,
}

impl ProtectionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtectionAction::Placed => "placed",
            ProtectionAction::Cancelled => "cancelled",
        }
    }
}

/// Which protective order: the stop (STOP_MARKET) or the take-profit (TAKE_PROFIT_MARKET), both
/// `closePosition` algo orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectiveKind {
    StopMarket,
    TakeProfitMarket,
}

impl ProtectiveKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtectiveKind::StopMarket => "stop_market",
            ProtectiveKind::TakeProfitMarket => "take_profit_market",
        }
    }
}

/// An exchange-side protective order the exit monitor placed or cancelled, as published on the
/// protection stream. `client_algo_id` is unique per placement, so `(client_algo_id, action)`
/// names the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectionEvent {
    pub action: ProtectionAction,
    pub kind: ProtectiveKind,
    pub symbol: String,
    pub position_side: PositionSide,
    pub client_algo_id: String,
    pub algo_id: i64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::arbitrary_precision_option"
    )]
    pub trigger_price: Option<Decimal>,
    /// When it was placed or cancelled (ms since the epoch).
    pub at: i64,
}

impl ProtectionEvent {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a protection event serializes")
    }

    pub fn from_json(text: &str) -> Result<ProtectionEvent, PositionEventError> {
        let event: ProtectionEvent =
            serde_json::from_str(text).map_err(|e| PositionEventError(e.to_string()))?;
        if event.client_algo_id.is_empty() || event.symbol.is_empty() {
            return Err(PositionEventError(
                "client_algo_id and symbol are required".into(),
            ));
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn closed() -> PositionEvent {
        PositionEvent {
            kind: EventKind::Closed,
            lot_id: "i-1".into(),
            symbol: "AXSUSDT".into(),
            position_side: PositionSide::Long,
            direction: Direction::Long,
            qty: Decimal::from_str("16").unwrap(),
            entry_price: Decimal::from_str("6.251").unwrap(),
            opened_at: 1_000,
            at: 5_000,
            reason: Some(ExitReason::TakeProfit),
            why: None,
            exit_price: Some(Decimal::from_str("6.380").unwrap()),
            realized_pnl: Some(Decimal::from_str("1.96300000").unwrap()),
            fees: Some(Decimal::from_str("0.100").unwrap()),
        }
    }

    #[test]
    fn an_event_reads_back_as_written_with_its_exact_digits() {
        let event = closed();
        let text = event.to_json();
        assert!(text.contains(r#""exit_price":6.380"#), "{text}");
        assert!(text.contains(r#""reason":"take_profit""#), "{text}");
        assert!(text.contains(r#""position_side":"LONG""#), "{text}");
        assert_eq!(PositionEvent::from_json(&text), Ok(event.clone()));
        assert_eq!(event.key(), "closed:i-1");
    }

    #[test]
    fn an_exit_needs_a_reason_and_an_entry_has_none() {
        let mut event = closed();
        event.reason = None;
        assert!(PositionEvent::from_json(&event.to_json()).is_err());
        event.kind = EventKind::Opened;
        assert!(PositionEvent::from_json(&event.to_json()).is_ok());
        event.reason = Some(ExitReason::StopLoss);
        assert!(PositionEvent::from_json(&event.to_json()).is_err());
        assert!(PositionEvent::from_json("{}").is_err());
    }

    #[test]
    fn a_protection_event_reads_back_as_written() {
        let event = ProtectionEvent {
            action: ProtectionAction::Placed,
            kind: ProtectiveKind::StopMarket,
            symbol: "AXSUSDT".into(),
            position_side: PositionSide::Both,
            client_algo_id: "qsl-AXSUSDT-1".into(),
            algo_id: 7,
            trigger_price: Some(Decimal::from_str("6.150").unwrap()),
            at: 1_000,
        };
        let text = event.to_json();
        assert!(text.contains(r#""trigger_price":6.150"#), "{text}");
        assert!(text.contains(r#""kind":"stop_market""#), "{text}");
        assert_eq!(ProtectionEvent::from_json(&text), Ok(event));
        assert!(ProtectionEvent::from_json(r#"{"action":"placed"}"#).is_err());
    }

    #[test]
    fn reasons_and_directions_are_spelt_one_way() {
        for reason in ExitReason::ALL {
            assert_eq!(ExitReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Direction::parse("short"), Some(Direction::Short));
        assert_eq!(Direction::parse("SHORT"), None);
    }
}
