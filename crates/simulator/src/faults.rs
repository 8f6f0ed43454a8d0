//! Fault knobs set through `POST /sim/v1/faults`: the misbehaviour of a real exchange (slow or
//! missing fills, lost replies, "unknown" 503s, rate limits, rejects, clock skew, dying user
//! streams) on demand, so tests can show quantum survives each one.

use serde::{Deserialize, Serialize};

/// The current fault settings. Counters (`drop_order_responses`, ...) count down as they fire.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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
    /// The next N requests (any endpoint) get 429 with `Retry-After`.
    pub rate_limit_429: u32,
    /// The next N cancel requests (`DELETE /fapi/v1/order`) get 429 with `Retry-After`, and
    /// nothing is cancelled: a rate limit that hits just the cancel at a fill deadline.
    #[serde(default)]
    pub cancel_429: u32,
    /// The next `count` order requests are rejected with `code`.
    pub reject_orders: Option<RejectOrders>,
    /// Added to the server clock (ms); positive means the server is ahead of the client.
    pub clock_skew_ms: i64,
    /// Notional per book level (USDT) for every symbol; small values make MARKET orders expire
    /// partly filled (expiry reason 9). `None` keeps each symbol's default depth.
    pub book_level_notional: Option<rust_decimal::Decimal>,
}

/// `reject_orders` knob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RejectOrders {
    pub code: i64,
    pub count: u32,
}

/// A `POST /sim/v1/faults` body: every field optional; absent fields keep their value. The two
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
    pub(crate) rate_limit_429: Option<u32>,
    pub(crate) cancel_429: Option<u32>,
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
    /// Resets every knob to the start-up values before applying the rest of this body.
    #[serde(default)]
    pub(crate) reset: bool,
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
        if let Some(v) = update.rate_limit_429 {
            self.rate_limit_429 = v;
        }
        if let Some(v) = update.cancel_429 {
            self.cancel_429 = v;
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
