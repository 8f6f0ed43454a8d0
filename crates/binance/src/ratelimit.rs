//! The rate-limit governor: it keeps the request weight and order counts Binance reports in its
//! `X-MBX-USED-WEIGHT-1M` and `X-MBX-ORDER-COUNT-*` headers, the limits from exchangeInfo's
//! `rateLimits`, and any ban a 429/418 announced, and tells the REST client how long to wait
//! before the next request. It is synchronous and takes the time as an argument, so its rules are
//! tested without a clock.
//!
//! Waiting *before* sending is always safe: nothing has reached the exchange yet. Getting a 429
//! is worse, because continuing through 429s gets the IP banned (418).

use std::fmt;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::types::RateLimit;

/// What the governor (or a [`SharedBudget`]) says about the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send now.
    Go,
    /// The window is full: wait this long (until the window rolls), then ask again.
    Wait(Duration),
    /// Binance asked us to stop (429/418 `Retry-After`) for this much longer.
    Banned(Duration),
}

/// Binance's limits in force (from exchangeInfo's `rateLimits`, else the documented defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request weight per IP per minute.
    pub weight_1m: u32,
    /// Orders per account per 10 s.
    pub orders_10s: u32,
    /// Orders per account per minute.
    pub orders_1m: u32,
}

/// A rate budget shared with every other process on the same IP and account (Binance counts
/// per IP and per account, not per process). The client asks it after its own governor agreed,
/// and tells it about every 429/418, so one process's ban stops the others. An error (the budget
/// cannot be reached) is logged and the client goes on with its own governor alone.
pub trait SharedBudget: Send + Sync + fmt::Debug {
    /// Takes `weight` of IP weight and, if `is_order`, one order from the budget at `now_ms`
    /// (the exchange's clock), or says how long to wait without taking anything.
    fn take(
        &self,
        now_ms: i64,
        weight: u32,
        is_order: bool,
        limits: Limits,
    ) -> BoxFuture<'_, Result<Verdict, String>>;

    /// The exchange banned requests until `until_ms` (429/418 `Retry-After`).
    fn ban(&self, now_ms: i64, until_ms: i64) -> BoxFuture<'_, Result<(), String>>;
}

/// Counters and limits. One per REST client, behind a std mutex never held across an await.
#[derive(Debug, Clone)]
pub(crate) struct Governor {
    weight_limit_1m: u32,
    order_limit_10s: u32,
    order_limit_1m: u32,
    weight: Window,
    orders_10s: Window,
    orders_1m: Window,
    banned_until_ms: i64,
}

/// A count within one fixed window of `len_ms` (Binance's windows are aligned to the clock).
#[derive(Debug, Clone, Copy)]
struct Window {
    len_ms: i64,
    index: i64,
    used: u32,
}

impl Window {
    fn new(len_ms: i64) -> Window {
        Window {
            len_ms,
            index: 0,
            used: 0,
        }
    }

    /// The count now, zero once the window has rolled.
    fn used_at(&self, now_ms: i64) -> u32 {
        if now_ms.div_euclid(self.len_ms) == self.index {
            self.used
        } else {
            0
        }
    }

    fn set(&mut self, now_ms: i64, used: u32) {
        self.index = now_ms.div_euclid(self.len_ms);
        self.used = used;
    }

    fn add(&mut self, now_ms: i64, n: u32) {
        let used = self.used_at(now_ms).saturating_add(n);
        self.set(now_ms, used);
    }

    fn until_roll(&self, now_ms: i64) -> Duration {
        let next = (now_ms.div_euclid(self.len_ms) + 1) * self.len_ms;
        // A little margin, so we do not land in the old window on a slightly different clock.
        Duration::from_millis((next - now_ms).max(0) as u64 + 50)
    }
}

/// Binance's documented defaults, used until exchangeInfo says otherwise.
const DEFAULT_WEIGHT_1M: u32 = 2400;
const DEFAULT_ORDERS_10S: u32 = 300;
const DEFAULT_ORDERS_1M: u32 = 1200;

impl Default for Governor {
    fn default() -> Governor {
        Governor {
            weight_limit_1m: DEFAULT_WEIGHT_1M,
            order_limit_10s: DEFAULT_ORDERS_10S,
            order_limit_1m: DEFAULT_ORDERS_1M,
            weight: Window::new(60_000),
            orders_10s: Window::new(10_000),
            orders_1m: Window::new(60_000),
            banned_until_ms: 0,
        }
    }
}

impl Governor {
    /// Takes the limits from exchangeInfo's `rateLimits`.
    pub(crate) fn set_limits(&mut self, limits: &[RateLimit]) {
        for limit in limits {
            let window_ms = interval_ms(&limit.interval) * i64::from(limit.interval_num);
            match (limit.rate_limit_type.as_str(), window_ms) {
                ("REQUEST_WEIGHT", 60_000) => self.weight_limit_1m = limit.limit,
                ("ORDERS", 10_000) => self.order_limit_10s = limit.limit,
                ("ORDERS", 60_000) => self.order_limit_1m = limit.limit,
                _ => {}
            }
        }
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            weight_1m: self.weight_limit_1m,
            orders_10s: self.order_limit_10s,
            orders_1m: self.order_limit_1m,
        }
    }

    /// Decides about a request of `weight` (and one order if `is_order`). On `Go` the request is
    /// counted at once, so concurrent callers cannot all squeeze into the last slot.
    pub(crate) fn admit(&mut self, now_ms: i64, weight: u32, is_order: bool) -> Verdict {
        let verdict = self.check(now_ms, weight, is_order);
        if verdict == Verdict::Go {
            self.count(now_ms, weight, is_order);
        }
        verdict
    }

    /// [`Governor::admit`] without counting: for a request a [`SharedBudget`] must agree to
    /// too, counted with [`Governor::count`] once it did.
    pub(crate) fn check(&self, now_ms: i64, weight: u32, is_order: bool) -> Verdict {
        if now_ms < self.banned_until_ms {
            return Verdict::Banned(Duration::from_millis(
                (self.banned_until_ms - now_ms) as u64,
            ));
        }
        let mut wait = Duration::ZERO;
        if self.weight.used_at(now_ms).saturating_add(weight) > self.weight_limit_1m {
            wait = wait.max(self.weight.until_roll(now_ms));
        }
        if is_order {
            if self.orders_10s.used_at(now_ms).saturating_add(1) > self.order_limit_10s {
                wait = wait.max(self.orders_10s.until_roll(now_ms));
            }
            if self.orders_1m.used_at(now_ms).saturating_add(1) > self.order_limit_1m {
                wait = wait.max(self.orders_1m.until_roll(now_ms));
            }
        }
        if wait > Duration::ZERO {
            return Verdict::Wait(wait);
        }
        Verdict::Go
    }

    /// Counts a request that was let through.
    pub(crate) fn count(&mut self, now_ms: i64, weight: u32, is_order: bool) {
        self.weight.add(now_ms, weight);
        if is_order {
            self.orders_10s.add(now_ms, 1);
            self.orders_1m.add(now_ms, 1);
        }
    }

    /// Records the counts a reply reported. Binance's numbers raise ours (they include requests
    /// of other processes on the same IP or account) but never lower them: a reply reports the
    /// count when the server handled its request, before the requests this client sent since,
    /// which are already counted here. Overwriting with it undercounted whenever requests were
    /// in flight together, and ran into 429s.
    pub(crate) fn observe(
        &mut self,
        now_ms: i64,
        used_weight_1m: Option<u32>,
        orders_10s: Option<u32>,
        orders_1m: Option<u32>,
    ) {
        for (window, reported) in [
            (&mut self.weight, used_weight_1m),
            (&mut self.orders_10s, orders_10s),
            (&mut self.orders_1m, orders_1m),
        ] {
            if let Some(reported) = reported {
                let used = window.used_at(now_ms).max(reported);
                window.set(now_ms, used);
            }
        }
    }

    /// Request weight used in the current minute and the minute's limit, for metrics.
    pub(crate) fn weight_usage(&self, now_ms: i64) -> (u32, u32) {
        (self.weight.used_at(now_ms), self.weight_limit_1m)
    }

    /// Records a 429/418: no request goes out for `retry_after`.
    pub(crate) fn ban(&mut self, now_ms: i64, retry_after: Duration) {
        let until = now_ms.saturating_add(retry_after.as_millis().min(i64::MAX as u128) as i64);
        self.banned_until_ms = self.banned_until_ms.max(until);
    }
}

fn interval_ms(interval: &str) -> i64 {
    match interval {
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 28_333_333 * 60_000; // A whole minute.

    #[test]
    fn waits_for_the_minute_to_roll_when_weight_would_exceed() {
        let mut governor = Governor::default();
        governor.observe(T0 + 1_000, Some(2395), None, None);
        assert_eq!(governor.admit(T0 + 2_000, 5, false), Verdict::Go);
        assert_eq!(
            governor.admit(T0 + 2_000, 1, false),
            Verdict::Wait(Duration::from_millis(58_050))
        );
        // The next minute starts empty.
        assert_eq!(governor.admit(T0 + 60_000, 20, false), Verdict::Go);
    }

    #[test]
    fn limits_come_from_exchange_info() {
        let info: crate::types::ExchangeInfo = serde_json::from_str(include_str!(
            "../../../testdata/binance/rest__exchange_info.json"
        ))
        .unwrap();
        let mut governor = Governor::default();
        governor.set_limits(&[RateLimit {
            rate_limit_type: "REQUEST_WEIGHT".into(),
            interval: "MINUTE".into(),
            interval_num: 1,
            limit: 10,
        }]);
        governor.observe(T0, Some(9), None, None);
        assert!(matches!(governor.admit(T0, 2, false), Verdict::Wait(_)));
        governor.set_limits(&info.rate_limits);
        assert_eq!(governor.weight_limit_1m, 2400);
        assert_eq!(governor.order_limit_1m, 1200);
        assert_eq!(governor.admit(T0, 2, false), Verdict::Go);
    }

    #[test]
    fn order_counts_have_their_own_windows() {
        let mut governor = Governor::default();
        governor.observe(T0 + 3_000, None, Some(300), Some(300));
        assert_eq!(governor.admit(T0 + 3_000, 0, false), Verdict::Go);
        assert_eq!(
            governor.admit(T0 + 3_000, 0, true),
            Verdict::Wait(Duration::from_millis(7_050))
        );
        assert_eq!(governor.admit(T0 + 10_000, 0, true), Verdict::Go);
    }

    /// Regression (issue 10): with 8 requests in flight, a reply to the first one overwrote the
    /// count with its own (older) number, and the governor let requests through into 429s.
    #[test]
    fn a_stale_reply_never_lowers_the_count() {
        let mut governor = Governor::default();
        for _ in 0..8 {
            assert_eq!(governor.admit(T0, 300, false), Verdict::Go);
        }
        governor.observe(T0 + 5, Some(300), None, None);
        assert_eq!(
            governor.weight_usage(T0 + 5).0,
            2400,
            "still counts the 8 in flight"
        );
        assert!(matches!(governor.admit(T0 + 6, 1, false), Verdict::Wait(_)));
        // A reply that knows of more (another process on the IP) raises it.
        let mut other = Governor::default();
        other.admit(T0, 10, false);
        other.observe(T0 + 1, Some(2000), None, None);
        assert_eq!(other.weight_usage(T0 + 1).0, 2000);
    }

    #[test]
    fn a_ban_stops_everything_until_it_ends() {
        let mut governor = Governor::default();
        governor.ban(T0, Duration::from_secs(2));
        assert_eq!(
            governor.admit(T0 + 500, 1, false),
            Verdict::Banned(Duration::from_millis(1_500))
        );
        assert_eq!(governor.admit(T0 + 2_000, 1, false), Verdict::Go);
    }
}
