//! Binance's rate-limit counters: request weight per minute (`X-MBX-USED-WEIGHT-1M`) and order
//! counts per 10 seconds and per minute (`X-MBX-ORDER-COUNT-10S`, `-1M`), with 429 and -1003 /
//! -1015 when a limit is crossed. Windows are fixed and aligned to the clock, like Binance's.

/// exchangeInfo's REQUEST_WEIGHT limit per minute.
pub(crate) const WEIGHT_LIMIT_1M: u32 = 2400;
/// exchangeInfo's ORDERS limits.
pub(crate) const ORDER_LIMIT_10S: u32 = 300;
pub(crate) const ORDER_LIMIT_1M: u32 = 1200;

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

/// Counters for the single simulated IP and account.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    weight_1m: Window,
    orders_10s: Window,
    orders_1m: Window,
}

/// The counters after a request, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) weight_1m: u32,
    /// Present on order endpoints only.
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
    /// Counts a request of `weight` (and one order when `is_order`).
    pub(crate) fn record(
        &mut self,
        now_ms: i64,
        weight: u32,
        is_order: bool,
    ) -> Result<Usage, (Exceeded, Usage)> {
        let used = {
            let w = self.weight_1m.current(now_ms, 60_000);
            *w += weight;
            *w
        };
        let orders = if is_order {
            let ten = {
                let c = self.orders_10s.current(now_ms, 10_000);
                *c += 1;
                *c
            };
            let one = {
                let c = self.orders_1m.current(now_ms, 60_000);
                *c += 1;
                *c
            };
            Some((ten, one))
        } else {
            None
        };
        let usage = Usage {
            weight_1m: used,
            orders,
        };
        if used > WEIGHT_LIMIT_1M {
            return Err((
                Exceeded::Weight {
                    retry_after: self.weight_1m.retry_after(now_ms, 60_000),
                },
                usage,
            ));
        }
        if let Some((ten, one)) = orders {
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
        }
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_accumulates_within_a_minute_and_resets_after() {
        let mut rl = RateLimits::default();
        assert_eq!(rl.record(60_000, 5, false).unwrap().weight_1m, 5);
        assert_eq!(rl.record(119_999, 5, false).unwrap().weight_1m, 10);
        assert_eq!(rl.record(120_000, 1, false).unwrap().weight_1m, 1);
    }

    #[test]
    fn crossing_the_weight_limit_says_when_to_retry() {
        let mut rl = RateLimits::default();
        rl.record(60_000, WEIGHT_LIMIT_1M, false).unwrap();
        let (exceeded, _) = rl.record(90_000, 1, false).unwrap_err();
        assert_eq!(exceeded, Exceeded::Weight { retry_after: 30 });
    }

    #[test]
    fn order_counts_have_two_windows() {
        let mut rl = RateLimits::default();
        for _ in 0..ORDER_LIMIT_10S {
            rl.record(0, 0, true).unwrap();
        }
        let (exceeded, usage) = rl.record(1, 0, true).unwrap_err();
        assert!(matches!(
            exceeded,
            Exceeded::Orders {
                interval: "10s",
                ..
            }
        ));
        assert_eq!(
            usage.orders,
            Some((ORDER_LIMIT_10S + 1, ORDER_LIMIT_10S + 1))
        );
        assert_eq!(
            rl.record(10_000, 0, true).unwrap().orders,
            Some((1, ORDER_LIMIT_10S + 2))
        );
    }
}
