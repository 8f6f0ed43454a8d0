//! The Redis key names quantum uses, in one place: the streams, the prefix of the
//! per-intent progress records and the exit monitor's state map. Nothing outside this crate
//! spells a Redis key.

/// Trade intents from strategies (and close intents from the exit monitor); the execution
/// service consumes it.
pub const TRADE_INTENT: &str = "quantum:stream:trade.intent";

/// Execution results, published only once the exchange has confirmed the outcome; the exit
/// monitor and `quantum results` read it.
pub const TRADE_EXECUTION_RESULT: &str = "quantum:stream:trade.execution.res";

/// What happens to positions after their entries, as the exit monitor sees it: a lot opened or
/// adopted, closed or exited (with the reason, the exit price, the realized PnL net of fees), one
/// JSON document per event (`model::PositionEvent`). The journal reads it.
pub const POSITION_EVENTS: &str = "quantum:stream:position.events";

/// The exchange-side protective orders the exit monitor places and cancels, one JSON document
/// per order placed or cancelled (`model::ProtectionEvent`). The journal reads it.
pub const PROTECTION_EVENTS: &str = "quantum:stream:protection.events";

/// Entries no consumer could handle (undecodable, missing `payload`, refused too often), with the
/// reason and the original text; see [`crate::Bus::dead_letter`].
pub const DEAD_LETTER: &str = "quantum:stream:dead-letter";

/// Prefix of the per-intent progress records, completed by the intent id.
pub const PROGRESS_PREFIX: &str = "quantum:intent:";

/// The exit monitor's book as a state map (a Redis hash, see [`crate::Bus::map_apply`]): one
/// field per lot, so a change rewrites only the lots it touched instead of the whole book. The
/// field names and values are the monitor's own format. `v2` because the book used to be one
/// JSON string under `quantum:monitor:lots`; a new name keeps the two formats (and Redis types)
/// from ever meeting under one key, and lets the old blob be read once for migration.
pub const MONITOR_LOTS: &str = "quantum:monitor:lots:v2";

/// The operator's controls (a Redis hash). Field [`TRADING_FIELD`] holds the trading state as one
/// JSON document (`model::TradingControl`), so a change is written in one step.
pub const CONTROL: &str = "quantum:control";

/// The field of [`CONTROL`] that holds the trading state.
pub const TRADING_FIELD: &str = "trading";

/// Every change of the trading state, oldest first (an audit trail for `quantum trading-state`).
pub const CONTROL_LOG: &str = "quantum:stream:control";

/// The field of a stream entry that holds its JSON document.
pub const PAYLOAD_FIELD: &str = "payload";

/// Prefix of the shared rate budget's counters and ban deadlines (see [`crate::Bus::rate_take`]).
pub const RATE_PREFIX: &str = "quantum:rate:";

/// The key of rate counter `name` in window number `index`.
pub fn rate_counter(name: &str, index: i64) -> String {
    format!("{RATE_PREFIX}{name}:{index}")
}

/// The key of ban deadline `name`.
pub fn rate_ban(name: &str) -> String {
    format!("{RATE_PREFIX}ban:{name}")
}

/// The realized PnL of one UTC day (days since the epoch), as the exit monitor's daily-loss
/// tripwire keeps it: a decimal string.
pub fn realized_pnl_day(day: i64) -> String {
    format!("quantum:pnl:realized:{day}")
}

/// The progress key of one intent, `quantum:intent:<intent_id>`.
pub fn progress(intent_id: &str) -> String {
    format!("{PROGRESS_PREFIX}{intent_id}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_key_is_prefix_plus_id() {
        assert_eq!(super::progress("abc-1"), "quantum:intent:abc-1");
    }
}
