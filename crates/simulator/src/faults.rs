//! Fault knobs set through `POST /sim/v1/faults`: the misbehaviour of a real exchange (slow or
//! missing fills, lost requests and replies, "unknown" 503s, rate limits, rejects, clock skew,
//! dying user streams) on demand, so tests can show quantum survives each one.

use serde::{Deserialize, Serialize};

/// The current fault settings. Counters (`drop_order_responses`, ...) count down as they fire.
/// Knobs added after the first release carry serde defaults, so JSON written before them still
/// reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Faults {
    /// Delay before a MARKET order's first fill, in ms.
    pub fill_delay_ms: u64,
    /// Orders stay `NEW` and never fill while this is on, as on a broken testnet. Turning it off
    /// lets parked orders fill.
    pub never_fill: bool,
    /// Fills per MARKET order (1 = fill at once, as far as the book allows).
    pub partial_fills: u32,
    /// How long a `newOrderRespType=RESULT` reply waits for the final state; 0 answers at once
    /// with the state at acceptance (`NEW`), so the fill is only seen on the stream or by query.
    pub result_wait_ms: u64,
    /// The next N order requests are executed, but the connection is closed without a reply.
    pub drop_order_responses: u32,
    /// The next N order requests are executed and answered with 503 "Unknown error".
    pub unknown_status_503: u32,
    /// The next N order requests are answered with the same 503 "Unknown error" but are not
    /// executed: the ambiguous submit whose order does not exist.
    #[serde(default)]
    pub unknown_status_503_not_executed: u32,
    /// The next N order requests are not executed and their connection is closed without a reply:
    /// the request was lost on the way in (`drop_order_responses` loses it on the way out).
    #[serde(default)]
    pub drop_order_requests: u32,
    /// The next N requests (any endpoint) get 429 with `Retry-After`.
    pub rate_limit_429: u32,
    /// The next N cancel requests (`DELETE /fapi/v1/order`) get 429 with `Retry-After`, and
    /// nothing is cancelled: a rate limit that hits just the cancel at a fill deadline.
    #[serde(default)]
    pub cancel_429: u32,
    /// The next N order lookups (`GET /fapi/v1/order`) get 429 with `Retry-After`; everything
    /// else works: lookups that fail while the order exists.
    #[serde(default)]
    pub query_429: u32,
    /// Seconds the injected 429s (`rate_limit_429`, `cancel_429`, `query_429`) announce in
    /// `Retry-After`, and so how long the IP's back-off lasts (at least 1).
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u64,
    /// The next `count` order requests are rejected with `code`.
    pub reject_orders: Option<RejectOrders>,
    /// Added to the server clock (ms); positive means the server is ahead of the client.
    pub clock_skew_ms: i64,
    /// Notional per book level (USDT) for every symbol; small values make MARKET orders expire
    /// partly filled (expiry reason 9). `None` keeps each symbol's default depth.
    pub book_level_notional: Option<rust_decimal::Decimal>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fill_delay_ms: 0,
            never_fill: false,
            partial_fills: 0,
            result_wait_ms: 0,
            drop_order_responses: 0,
            unknown_status_503: 0,
            unknown_status_503_not_executed: 0,
            drop_order_requests: 0,
            rate_limit_429: 0,
            cancel_429: 0,
            query_429: 0,
            retry_after_s: default_retry_after_s(),
            reject_orders: None,
            clock_skew_ms: 0,
            book_level_notional: None,
        }
    }
}

/// What the injected 429s announced before `retry_after_s` existed.
fn default_retry_after_s() -> u64 {
    1
}

/// `reject_orders` knob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RejectOrders {
    pub code: i64,
    pub count: u32,
}

/// A `POST /sim/v1/faults` body: every field optional; absent fields keep their value. The
/// one-shot actions happen once, when posted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsUpdate {
    pub(crate) fill_delay_ms: Option<u64>,
    pub(crate) never_fill: Option<bool>,
    pub(crate) partial_fills: Option<u32>,
    pub(crate) result_wait_ms: Option<u64>,
    pub(crate) drop_order_responses: Option<u32>,
    pub(crate) unknown_status_503: Option<u32>,
    pub(crate) unknown_status_503_not_executed: Option<u32>,
    pub(crate) drop_order_requests: Option<u32>,
    pub(crate) rate_limit_429: Option<u32>,
    pub(crate) cancel_429: Option<u32>,
    pub(crate) query_429: Option<u32>,
    pub(crate) retry_after_s: Option<u64>,
    /// `null` clears it.
    #[serde(default, with = "double_option")]
    pub(crate) reject_orders: Option<Option<RejectOrders>>,
    pub(crate) clock_skew_ms: Option<i64>,
    #[serde(default, with = "double_option")]
    pub(crate) book_level_notional: Option<Option<rust_decimal::Decimal>>,
    /// One-shot: close every user-data WebSocket now.
    #[serde(default)]
    pub(crate) disconnect_user_streams: bool,
    /// One-shot: expire every listenKey now (subscribers get `listenKeyExpired`).
    #[serde(default)]
    pub(crate) expire_listen_keys: bool,
    /// One-shot: end the IP ban (418) and the 429 back-off now. Later offences still get longer
    /// bans; `reset` forgets them too.
    #[serde(default)]
    pub(crate) lift_ban: bool,
    /// Resets every knob to the start-up values, and the IP's ban and offence count, before
    /// applying the rest of this body.
    #[serde(default)]
    pub(crate) reset: bool,
}

/// Largest `clock_skew_ms` either way (ten years): past it the server clock overflows.
const MAX_CLOCK_SKEW_MS: i64 = 10 * 365 * 86_400_000;
/// Largest `fill_delay_ms` and `result_wait_ms` (a day, forever for any test): past `u64` ms
/// a deadline overflows the clock.
const MAX_WAIT_MS: u64 = 86_400_000;
/// Largest `book_level_notional` (USDT per level): past it a level's quantity at a low price
/// does not fit a decimal.
const MAX_LEVEL_NOTIONAL: i64 = 1_000_000_000_000;

impl FaultsUpdate {
    /// Refuses values the simulator's clock and book arithmetic cannot carry, with the reason.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(skew) = self.clock_skew_ms {
            if skew.unsigned_abs() > MAX_CLOCK_SKEW_MS.unsigned_abs() {
                return Err(format!(
                    "clock_skew_ms must be within ±{MAX_CLOCK_SKEW_MS}, got {skew}"
                ));
            }
        }
        for (knob, value) in [
            ("fill_delay_ms", self.fill_delay_ms),
            ("result_wait_ms", self.result_wait_ms),
        ] {
            if let Some(ms) = value.filter(|ms| *ms > MAX_WAIT_MS) {
                return Err(format!("{knob} must be at most {MAX_WAIT_MS}, got {ms}"));
            }
        }
        if let Some(Some(notional)) = self.book_level_notional {
            if notional <= rust_decimal::Decimal::ZERO
                || notional > rust_decimal::Decimal::from(MAX_LEVEL_NOTIONAL)
            {
                return Err(format!(
                    "book_level_notional must be above 0 and at most {MAX_LEVEL_NOTIONAL}, got {notional}"
                ));
            }
        }
        Ok(())
    }
}

impl Faults {
    pub(crate) fn apply(&mut self, update: &FaultsUpdate, startup: &Faults) {
        if update.reset {
            *self = startup.clone();
        }
        if let Some(v) = update.fill_delay_ms {
            self.fill_delay_ms = v;
        }
        if let Some(v) = update.never_fill {
            self.never_fill = v;
        }
        if let Some(v) = update.partial_fills {
            self.partial_fills = v.max(1);
        }
        if let Some(v) = update.result_wait_ms {
            self.result_wait_ms = v;
        }
        if let Some(v) = update.drop_order_responses {
            self.drop_order_responses = v;
        }
        if let Some(v) = update.unknown_status_503 {
            self.unknown_status_503 = v;
        }
        if let Some(v) = update.unknown_status_503_not_executed {
            self.unknown_status_503_not_executed = v;
        }
        if let Some(v) = update.drop_order_requests {
            self.drop_order_requests = v;
        }
        if let Some(v) = update.rate_limit_429 {
            self.rate_limit_429 = v;
        }
        if let Some(v) = update.cancel_429 {
            self.cancel_429 = v;
        }
        if let Some(v) = update.query_429 {
            self.query_429 = v;
        }
        if let Some(v) = update.retry_after_s {
            // A 429 always asks for a wait; "Retry-After: 0" would open no back-off at all.
            self.retry_after_s = v.max(1);
        }
        if let Some(v) = &update.reject_orders {
            self.reject_orders = v.clone().filter(|r| r.count > 0);
        }
        if let Some(v) = update.clock_skew_ms {
            self.clock_skew_ms = v;
        }
        if let Some(v) = update.book_level_notional {
            self.book_level_notional = v;
        }
    }

    /// Consumes one use of a counter knob; true when it fired.
    pub(crate) fn take(counter: &mut u32) -> bool {
        if *counter > 0 {
            *counter -= 1;
            true
        } else {
            false
        }
    }

    /// Consumes one use of `reject_orders`, returning the code to reject with.
    pub(crate) fn take_reject(&mut self) -> Option<i64> {
        let reject = self.reject_orders.as_mut()?;
        let code = reject.code;
        reject.count -= 1;
        if reject.count == 0 {
            self.reject_orders = None;
        }
        Some(code)
    }
}

/// Distinguishes "absent" from "null" so `{"reject_orders":null}` can clear the knob.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_from_before_the_newer_knobs_still_reads() {
        let old = r#"{"fill_delay_ms":0,"never_fill":false,"partial_fills":1,"result_wait_ms":5000,
            "drop_order_responses":0,"unknown_status_503":0,"rate_limit_429":0,"reject_orders":null,
            "clock_skew_ms":0,"book_level_notional":null}"#;
        let faults: Faults = serde_json::from_str(old).unwrap();
        assert_eq!(faults.retry_after_s, 1);
        assert_eq!(
            (
                faults.cancel_429,
                faults.query_429,
                faults.drop_order_requests,
                faults.unknown_status_503_not_executed
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(Faults::default().retry_after_s, 1);
    }

    #[test]
    fn new_knobs_are_set_kept_and_reset() {
        let startup = Faults::default();
        let mut faults = startup.clone();
        let update: FaultsUpdate = serde_json::from_str(
            r#"{"unknown_status_503_not_executed":2,"drop_order_requests":1,"query_429":3,"retry_after_s":7}"#,
        )
        .unwrap();
        faults.apply(&update, &startup);
        assert_eq!(faults.unknown_status_503_not_executed, 2);
        assert_eq!(faults.drop_order_requests, 1);
        assert_eq!(faults.query_429, 3);
        assert_eq!(faults.retry_after_s, 7);
        // Absent fields keep their value; a zero wait is raised to one second.
        let update: FaultsUpdate = serde_json::from_str(r#"{"retry_after_s":0}"#).unwrap();
        faults.apply(&update, &startup);
        assert_eq!((faults.query_429, faults.retry_after_s), (3, 1));
        let update: FaultsUpdate =
            serde_json::from_str(r#"{"reset":true,"lift_ban":true}"#).unwrap();
        faults.apply(&update, &startup);
        assert_eq!(faults, startup);
    }

    #[test]
    fn counters_count_down_to_zero() {
        let mut n = 2;
        assert!(Faults::take(&mut n));
        assert!(Faults::take(&mut n));
        assert!(!Faults::take(&mut n));
        assert_eq!(n, 0);
    }
}
