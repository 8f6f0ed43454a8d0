//! The operator's trading state, shared by every quantum process through the bus:
//! `active` (everything goes), `reducing` (no new entries; closes and exits go on) and `halted`
//! (nothing new is sent; exchange-side protection stays). [`TradingControl`] is the state with who
//! set it, why and when, as the bus stores it (one JSON document, written in one step).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How much trading the operator allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TradingState {
    /// Entries, closes and exits are sent.
    Active,
    /// No new entries; closes and exits are sent, so risk only goes down.
    Reducing,
    /// Nothing new is sent. Orders already at the exchange, and the exchange-side protective
    /// orders, stay.
    Halted,
}

impl TradingState {
    pub fn as_str(self) -> &'static str {
        match self {
            TradingState::Active => "active",
            TradingState::Reducing => "reducing",
            TradingState::Halted => "halted",
        }
    }

    /// The gauge value of `quantum_trading_state`: 0 active, 1 reducing, 2 halted.
    pub fn level(self) -> u8 {
        match self {
            TradingState::Active => 0,
            TradingState::Reducing => 1,
            TradingState::Halted => 2,
        }
    }

    /// Whether an order that opens or adds to a position may be sent.
    pub fn allows_entries(self) -> bool {
        self == TradingState::Active
    }

    /// Whether an order that only reduces a position (a close, an exit) may be sent.
    pub fn allows_reductions(self) -> bool {
        self != TradingState::Halted
    }
}

impl fmt::Display for TradingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The trading state as set: the state, who set it (`user@host`, or a tripwire's name), why,
/// and when (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradingControl {
    pub state: TradingState,
    pub by: String,
    pub reason: String,
    pub at_ms: i64,
}

/// Why a stored trading state could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored trading state is not readable: {0}")]
pub struct ControlError(String);

/// Longest reason kept: a reason is for people reading logs and `quantum doctor`.
const MAX_REASON_CHARS: usize = 300;

impl TradingControl {
    pub fn new(state: TradingState, by: &str, reason: &str, at_ms: i64) -> TradingControl {
        TradingControl {
            state,
            by: by.chars().take(100).collect(),
            reason: reason.chars().take(MAX_REASON_CHARS).collect(),
            at_ms,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a trading control serializes")
    }

    pub fn from_json(text: &str) -> Result<TradingControl, ControlError> {
        serde_json::from_str(text).map_err(|e| ControlError(e.to_string()))
    }
}

impl fmt::Display for TradingControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (set by {}", self.state, self.by)?;
        if !self.reason.is_empty() {
            write!(f, ": {}", self.reason)?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_reads_back_as_written() {
        let c = TradingControl::new(TradingState::Reducing, "ops@vps", "news at 14:30", 1_700);
        assert_eq!(TradingControl::from_json(&c.to_json()), Ok(c.clone()));
        assert!(c.to_json().contains(r#""state":"reducing""#));
        assert_eq!(c.to_string(), "reducing (set by ops@vps: news at 14:30)");
    }

    #[test]
    fn what_each_state_lets_through() {
        use TradingState::*;
        let table = [
            (Active, true, true),
            (Reducing, false, true),
            (Halted, false, false),
        ];
        for (state, entries, reductions) in table {
            assert_eq!(state.allows_entries(), entries, "{state}");
            assert_eq!(state.allows_reductions(), reductions, "{state}");
        }
        assert_eq!(
            [Active.level(), Reducing.level(), Halted.level()],
            [0, 1, 2]
        );
    }

    #[test]
    fn an_unknown_state_or_garbage_is_an_error_not_a_guess() {
        assert!(
            TradingControl::from_json(r#"{"state":"paused","by":"x","reason":"","at_ms":1}"#)
                .is_err()
        );
        assert!(TradingControl::from_json("not json").is_err());
        let long = "x".repeat(1_000);
        assert_eq!(
            TradingControl::new(TradingState::Halted, &long, &long, 0)
                .reason
                .len(),
            300
        );
    }
}
