//! Binance's rate-limit counters: request weight per minute per IP (`X-MBX-USED-WEIGHT-1M`), order
//! counts per 10 seconds and per minute per account (`X-MBX-ORDER-COUNT-10S`, `-1M`), with 429 and
//! -1003 / -1015 when a limit is crossed, and the IP ban (418) that follows when a client keeps
//! sending while a 429's `Retry-After` is in force. Windows are fixed and aligned to the clock,
//! like Binance's.

/// exchangeInfo's REQUEST_WEIGHT limit per minute.
pub(crate) const WEIGHT_LIMIT_1M: u32 = 2400;
/// exchangeInfo's ORDERS limits.
pub(crate) const ORDER_LIMIT_10S: u32 = 300;
pub(crate) const ORDER_LIMIT_1M: u32 = 1200;

/// Requests that may arrive during a 429's back-off before the IP is banned; the one that reaches
/// it gets the first 418. Binance documents no number ("repeatedly ... failing to back off after
/// receiving 429s"). One or two are allowed because a client cannot recall requests that were
/// already in flight when the 429 went out (several tasks share one IP, and quantum runs two
/// services on one host), so a well-behaved client must not be banned for them; three is still
/// small enough that a client ignoring `Retry-After` is banned within a few milliseconds of
/// hammering, which is what a test wants to see.
pub(crate) const BAN_AFTER_REQUESTS_IN_BACKOFF: u32 = 3;
/// Requests arriving this soon after a 429 do not count towards a ban: they were on their way
/// before the client could have read the 429 (every task of every process on the IP may have one
/// in flight: quantum runs two execution workers of up to 8 intents each and an exit monitor).
/// Binance documents nothing finer than "failing to back off"; without this window a chaos run's
/// injected 429 met four requests already in flight and became a two-minute 418 ban the clients
/// had not earned. 50 ms is many round trips on one host and still far shorter than any
/// Retry-After (at least 1 s), so a client that ignores one is banned all the same.
pub(crate) const IN_FLIGHT_GRACE_MS: i64 = 50;
/// First ban: Binance's documented minimum ("from 2 minutes to 3 days").
pub(crate) const FIRST_BAN_MS: i64 = 120_000;
/// Longest ban: Binance's documented maximum.
pub(crate) const MAX_BAN_MS: i64 = 3 * 24 * 3_600_000;

#[derive(Debug, Default)]
pub(crate) struct Window {
    start_ms: i64,
    count: u32,
}

impl Window {
    fn current(&mut self, now_ms: i64, len_ms: i64) -> &mut u32 {
        let start = now_ms - now_ms.rem_euclid(len_ms);
        if start != self.start_ms {
            self.start_ms = start;
            self.count = 0;
        }
        &mut self.count
    }

    /// Seconds until this window rolls over.
    fn retry_after(&self, now_ms: i64, len_ms: i64) -> u64 {
        let end = self.start_ms + len_ms;
        ((end - now_ms).max(0) as u64).div_ceil(1000).max(1)
    }
}

/// The counters. The simulator serves one account from what it treats as one IP (every client,
/// whatever its address), so one set is enough; the fields say which of the two each belongs to,
/// because that decides when it is counted (weight on arrival, orders once the account is known).
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    /// Per IP: every request to a Binance endpoint, authenticated or not.
    weight_1m: Window,
    /// Per account: new-order requests that passed authentication.
    orders_10s: Window,
    orders_1m: Window,
    /// Per IP: the 429 back-off and the 418 ban.
    pub(crate) ban: IpBan,
}

/// The counters after a request, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) weight_1m: u32,
    /// Present on order endpoints only, once the order was counted.
    pub(crate) orders: Option<(u32, u32)>,
}

/// Which limit a request crossed, with the seconds until it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Weight {
        retry_after: u64,
    },
    Orders {
        retry_after: u64,
        interval: &'static str,
        limit: u32,
    },
}

impl RateLimits {
    /// Counts a request of `weight` against the IP.
    pub(crate) fn record_weight(
        &mut self,
        now_ms: i64,
        weight: u32,
    ) -> Result<Usage, (Exceeded, Usage)> {
        let used = {
            let w = self.weight_1m.current(now_ms, 60_000);
            *w = w.saturating_add(weight);
            *w
        };
        let usage = Usage {
            weight_1m: used,
            orders: None,
        };
        if used > WEIGHT_LIMIT_1M {
            let retry_after = self.weight_1m.retry_after(now_ms, 60_000);
            return Err((Exceeded::Weight { retry_after }, usage));
        }
        Ok(usage)
    }

    /// Counts one order against the account, adding the counts to `usage`.
    #[cfg(test)]
    pub(crate) fn record_order(
        &mut self,
        now_ms: i64,
        usage: Usage,
    ) -> Result<Usage, (Exceeded, Usage)> {
        self.record_orders(now_ms, usage, 1, 1)
    }

    /// Counts an order-entry request that costs `ten_s` on the 10-second count and `one_m` on the
    /// minute count (a batch costs 5 and 1), adding the counts to `usage`.
    pub(crate) fn record_orders(
        &mut self,
        now_ms: i64,
        usage: Usage,
        ten_s: u32,
        one_m: u32,
    ) -> Result<Usage, (Exceeded, Usage)> {
        let ten = {
            let c = self.orders_10s.current(now_ms, 10_000);
            *c = c.saturating_add(ten_s);
            *c
        };
        let one = {
            let c = self.orders_1m.current(now_ms, 60_000);
            *c = c.saturating_add(one_m);
            *c
        };
        let usage = Usage {
            orders: Some((ten, one)),
            ..usage
        };
        if ten > ORDER_LIMIT_10S {
            let retry_after = self.orders_10s.retry_after(now_ms, 10_000);
            return Err((
                Exceeded::Orders {
                    retry_after,
                    interval: "10s",
                    limit: ORDER_LIMIT_10S,
                },
                usage,
            ));
        }
        if one > ORDER_LIMIT_1M {
            let retry_after = self.orders_1m.retry_after(now_ms, 60_000);
            return Err((
                Exceeded::Orders {
                    retry_after,
                    interval: "1m",
                    limit: ORDER_LIMIT_1M,
                },
                usage,
            ));
        }
        Ok(usage)
    }

    /// The IP's weight so far this minute, without counting anything: for replies to requests
    /// refused before they were weighed (a ban, an unreadable body), which still carry the header.
    pub(crate) fn usage(&mut self, now_ms: i64) -> Usage {
        Usage {
            weight_1m: *self.weight_1m.current(now_ms, 60_000),
            orders: None,
        }
    }
}

/// What the IP gate decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Go,
    /// Answer 418: the IP is banned until `until_ms`, `retry_after` seconds from now.
    Banned {
        until_ms: i64,
        retry_after: u64,
    },
}

/// The IP's standing: the back-off announced by the last 429s, the requests that ignored it, the
/// ban they led to, and the 429s and 418s sent (for `GET /sim/v1/requests`).
#[derive(Debug, Default)]
pub(crate) struct IpBan {
    /// Requests before this time (ms) ignore a 429's `Retry-After`.
    backoff_until_ms: i64,
    /// When the 429 that started the current back-off went out: requests within
    /// [`IN_FLIGHT_GRACE_MS`] of it are not counted. Later 429s of the same back-off do not move
    /// it, or a client hammering through 429s would never be banned.
    backoff_started_ms: i64,
    /// Requests that arrived during the current back-off.
    requests_in_backoff: u32,
    banned_until_ms: Option<i64>,
    /// Bans so far; each doubles the next one's length. Kept across `lift`, so a test can lift a
    /// ban and watch the next offence get a longer one.
    offences: u32,
    pub(crate) sent_429: u64,
    pub(crate) sent_418: u64,
}

impl IpBan {
    /// Decides one request from the IP, before anything else is looked at: refused while a ban
    /// lasts, and counted when it arrives during a back-off (the request that reaches
    /// [`BAN_AFTER_REQUESTS_IN_BACKOFF`] starts a ban and is refused itself).
    pub(crate) fn admit(&mut self, now_ms: i64) -> Admission {
        if let Some(until_ms) = self.banned_until_ms {
            if now_ms < until_ms {
                self.sent_418 += 1;
                return Admission::Banned {
                    until_ms,
                    retry_after: seconds_until(now_ms, until_ms),
                };
            }
            self.banned_until_ms = None;
        }
        if now_ms >= self.backoff_until_ms {
            self.requests_in_backoff = 0;
            return Admission::Go;
        }
        if now_ms < self.backoff_started_ms.saturating_add(IN_FLIGHT_GRACE_MS) {
            return Admission::Go;
        }
        self.requests_in_backoff += 1;
        if self.requests_in_backoff < BAN_AFTER_REQUESTS_IN_BACKOFF {
            return Admission::Go;
        }
        let until_ms = now_ms.saturating_add(ban_length_ms(self.offences));
        self.offences = self.offences.saturating_add(1);
        self.banned_until_ms = Some(until_ms);
        // The ban replaces the back-off: once it ends the IP starts with a clean slate.
        self.backoff_until_ms = 0;
        self.requests_in_backoff = 0;
        self.sent_418 += 1;
        Admission::Banned {
            until_ms,
            retry_after: seconds_until(now_ms, until_ms),
        }
    }

    /// Records a 429 that told the client to wait `retry_after` seconds.
    pub(crate) fn sent_429(&mut self, now_ms: i64, retry_after: u64) {
        self.sent_429 += 1;
        if now_ms >= self.backoff_until_ms {
            // A new back-off, not an extension of one still in force.
            self.requests_in_backoff = 0;
            self.backoff_started_ms = now_ms;
        }
        let secs = i64::try_from(retry_after).unwrap_or(i64::MAX);
        let until = now_ms.saturating_add(secs.saturating_mul(1000));
        self.backoff_until_ms = self.backoff_until_ms.max(until);
    }

    /// When the ban in force ends, if there is one.
    pub(crate) fn banned_until(&self, now_ms: i64) -> Option<i64> {
        self.banned_until_ms.filter(|&until| now_ms < until)
    }

    /// Ends the ban and the back-off now; the offence count stays (see `offences`).
    pub(crate) fn lift(&mut self) {
        self.banned_until_ms = None;
        self.backoff_until_ms = 0;
        self.requests_in_backoff = 0;
    }

    /// Back to a first offender, as at start-up. The 429/418 counters keep counting, like the
    /// request counts they sit next to.
    pub(crate) fn forget(&mut self) {
        self.lift();
        self.offences = 0;
    }
}

/// Length of the ban after `offences` earlier ones: 2 minutes, doubling, at most 3 days.
fn ban_length_ms(offences: u32) -> i64 {
    FIRST_BAN_MS
        .saturating_mul(1i64 << offences.min(32))
        .min(MAX_BAN_MS)
}

/// Whole seconds from `now_ms` to `until_ms`, rounded up and at least 1: a client that waits this
/// long is never early.
fn seconds_until(now_ms: i64, until_ms: i64) -> u64 {
    ((until_ms - now_ms).max(0) as u64).div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_accumulates_within_a_minute_and_resets_after() {
        let mut rl = RateLimits::default();
        assert_eq!(rl.record_weight(60_000, 5).unwrap().weight_1m, 5);
        assert_eq!(rl.record_weight(119_999, 5).unwrap().weight_1m, 10);
        assert_eq!(rl.usage(119_999).weight_1m, 10, "peeking counts nothing");
        assert_eq!(rl.record_weight(120_000, 1).unwrap().weight_1m, 1);
    }

    #[test]
    fn crossing_the_weight_limit_says_when_to_retry() {
        let mut rl = RateLimits::default();
        rl.record_weight(60_000, WEIGHT_LIMIT_1M).unwrap();
        let (exceeded, _) = rl.record_weight(90_000, 1).unwrap_err();
        assert_eq!(exceeded, Exceeded::Weight { retry_after: 30 });
    }

    #[test]
    fn order_counts_have_two_windows_and_keep_the_weight() {
        let mut rl = RateLimits::default();
        for _ in 0..ORDER_LIMIT_10S {
            let usage = rl.record_weight(0, 0).unwrap();
            rl.record_order(0, usage).unwrap();
        }
        let usage = rl.record_weight(1, 1).unwrap();
        let (exceeded, usage) = rl.record_order(1, usage).unwrap_err();
        assert!(matches!(
            exceeded,
            Exceeded::Orders {
                interval: "10s",
                ..
            }
        ));
        assert_eq!(usage.weight_1m, 1);
        assert_eq!(
            usage.orders,
            Some((ORDER_LIMIT_10S + 1, ORDER_LIMIT_10S + 1))
        );
        let usage = rl.record_weight(10_000, 0).unwrap();
        assert_eq!(
            rl.record_order(10_000, usage).unwrap().orders,
            Some((1, ORDER_LIMIT_10S + 2))
        );
    }

    const T0: i64 = 1_700_000_000_000;

    /// Sends requests at `at` until the gate refuses one; returns how many went through.
    fn admitted_before_ban(ban: &mut IpBan, at: i64) -> u32 {
        let mut admitted = 0;
        while ban.admit(at) == Admission::Go {
            admitted += 1;
            assert!(admitted < 100, "never banned");
        }
        admitted
    }

    #[test]
    fn requests_that_respect_retry_after_are_never_banned() {
        let mut ban = IpBan::default();
        for round in 0..10 {
            let t = T0 + round * 2_000;
            assert_eq!(ban.admit(t), Admission::Go);
            ban.sent_429(t, 2);
            // The next request comes exactly when Retry-After says it may.
        }
        assert_eq!(ban.admit(T0 + 20_000), Admission::Go);
        assert_eq!(ban.sent_429, 10);
        assert_eq!(ban.sent_418, 0);
    }

    #[test]
    fn the_threshold_request_during_a_back_off_is_banned_for_two_minutes() {
        // Past the in-flight grace: these requests were sent after the 429 could be read.
        const LATE: i64 = IN_FLIGHT_GRACE_MS + 10;
        let mut ban = IpBan::default();
        ban.sent_429(T0, 1);
        assert_eq!(
            admitted_before_ban(&mut ban, T0 + LATE),
            BAN_AFTER_REQUESTS_IN_BACKOFF - 1
        );
        assert_eq!(ban.banned_until(T0 + LATE), Some(T0 + LATE + FIRST_BAN_MS));
        // Every request during the ban is refused, with the seconds left.
        assert_eq!(
            ban.admit(T0 + LATE + 60_000),
            Admission::Banned {
                until_ms: T0 + LATE + FIRST_BAN_MS,
                retry_after: 60
            }
        );
        assert_eq!(
            ban.admit(T0 + LATE + FIRST_BAN_MS - 1),
            Admission::Banned {
                until_ms: T0 + LATE + FIRST_BAN_MS,
                retry_after: 1
            }
        );
        assert_eq!(ban.sent_418, 3);
        // It ends by itself, with no back-off left over.
        assert_eq!(ban.admit(T0 + LATE + FIRST_BAN_MS), Admission::Go);
        assert_eq!(ban.banned_until(T0 + LATE + FIRST_BAN_MS), None);
        assert_eq!(ban.admit(T0 + LATE + FIRST_BAN_MS), Admission::Go);
    }

    /// Regression (chaos long run): a 429 met four requests of three processes already on
    /// their way, and the third of them started a two-minute ban.
    #[test]
    fn requests_already_in_flight_when_the_429_went_out_do_not_count() {
        let mut ban = IpBan::default();
        ban.sent_429(T0, 1);
        for _ in 0..20 {
            assert_eq!(ban.admit(T0 + IN_FLIGHT_GRACE_MS - 1), Admission::Go);
        }
        assert_eq!(
            admitted_before_ban(&mut ban, T0 + IN_FLIGHT_GRACE_MS),
            BAN_AFTER_REQUESTS_IN_BACKOFF - 1
        );
    }

    #[test]
    fn requests_in_an_earlier_back_off_do_not_count_towards_a_later_one() {
        let mut ban = IpBan::default();
        ban.sent_429(T0, 1);
        for _ in 1..BAN_AFTER_REQUESTS_IN_BACKOFF {
            assert_eq!(ban.admit(T0 + 500), Admission::Go);
        }
        // Back-off over; a new 429 starts a new count.
        assert_eq!(ban.admit(T0 + 1_000), Admission::Go);
        ban.sent_429(T0 + 1_000, 1);
        for _ in 1..BAN_AFTER_REQUESTS_IN_BACKOFF {
            assert_eq!(ban.admit(T0 + 1_500), Admission::Go);
        }
        assert!(matches!(ban.admit(T0 + 1_500), Admission::Banned { .. }));
    }

    #[test]
    fn a_429_during_a_back_off_extends_it_and_keeps_the_count() {
        let mut ban = IpBan::default();
        ban.sent_429(T0, 1);
        assert_eq!(ban.admit(T0 + 900), Admission::Go);
        ban.sent_429(T0 + 900, 5);
        for _ in 2..BAN_AFTER_REQUESTS_IN_BACKOFF {
            assert_eq!(ban.admit(T0 + 4_000), Admission::Go);
        }
        assert!(matches!(ban.admit(T0 + 5_000), Admission::Banned { .. }));
    }

    #[test]
    fn repeat_offences_double_the_ban_up_to_three_days_and_forget_starts_over() {
        let mut ban = IpBan::default();
        let mut t = T0;
        let mut lengths = Vec::new();
        for _ in 0..14 {
            ban.sent_429(t, 1);
            let late = t + IN_FLIGHT_GRACE_MS;
            admitted_before_ban(&mut ban, late);
            let until = ban.banned_until(late).expect("banned");
            lengths.push(until - late);
            ban.lift();
            assert_eq!(ban.banned_until(t), None);
            t = until;
        }
        assert_eq!(&lengths[..4], &[120_000, 240_000, 480_000, 960_000]);
        assert_eq!(lengths[11], 120_000 * 2048);
        assert_eq!(lengths[12], MAX_BAN_MS);
        assert_eq!(lengths[13], MAX_BAN_MS);
        ban.forget();
        ban.sent_429(t, 1);
        let late = t + IN_FLIGHT_GRACE_MS;
        admitted_before_ban(&mut ban, late);
        assert_eq!(ban.banned_until(late), Some(late + FIRST_BAN_MS));
    }

    #[test]
    fn lifting_also_clears_the_back_off() {
        let mut ban = IpBan::default();
        ban.sent_429(T0, 60);
        for _ in 1..BAN_AFTER_REQUESTS_IN_BACKOFF {
            assert_eq!(ban.admit(T0 + 1), Admission::Go);
        }
        ban.lift();
        for _ in 0..10 {
            assert_eq!(ban.admit(T0 + 2), Admission::Go);
        }
    }
}
