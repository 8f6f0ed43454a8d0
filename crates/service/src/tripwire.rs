//! Tripwires: conditions under which the execution service stops new entries on its own, by
//! setting the trading state to `reducing` (closes and exits go on) with itself as the setter
//! (`tripwire:<name>`) and the reason. A tripwire never loosens a state: it acts only while
//! trading is `active`, and only the operator resumes (`quantum resume`).
//!
//! - `failures`: `execution.tripwire_failures` results `failed` or `timeout` within
//!   `execution.tripwire_window` (the exchange misbehaving, or orders not filling).
//! - `user-stream`: the user data stream down for longer than `execution.tripwire_stream_outage`
//!   (fills are still confirmed over REST, but slower and at a cost in weight).
//! - `daily-loss` (the exit monitor's): the realized loss of the current UTC day, net of fees,
//!   beyond `exit.tripwire_daily_loss` USDT. The day's sum is kept in Redis, so a restart does not
//!   forget the losses taken before it.

use std::collections::VecDeque;
use std::time::Duration;

use bus::Bus;
use model::TradingState;
use rust_decimal::Decimal;
use tracing::{error, warn};

/// Counts events in a sliding window; trips when `limit` fall within `window`.
#[derive(Debug, Clone)]
pub struct WindowCount {
    limit: usize,
    window_ms: i64,
    times: VecDeque<i64>,
}

impl WindowCount {
    /// `limit` 0 never trips.
    pub fn new(limit: usize, window: Duration) -> WindowCount {
        WindowCount {
            limit,
            window_ms: window.as_millis().min(i64::MAX as u128) as i64,
            times: VecDeque::new(),
        }
    }

    /// Records one event at `now_ms`; true when the window now holds `limit` events (and the
    /// count starts again, so one burst trips once).
    pub fn record(&mut self, now_ms: i64) -> bool {
        if self.limit == 0 {
            return false;
        }
        self.times.push_back(now_ms);
        while self
            .times
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) > self.window_ms)
        {
            self.times.pop_front();
        }
        if self.times.len() >= self.limit {
            self.times.clear();
            return true;
        }
        false
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The realized PnL of the current UTC day, and whether it went beyond the loss limit. Pure:
/// time comes in as an argument; the caller persists [`DailyLoss::day_key`] /
/// [`DailyLoss::realized`] and trips the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyLoss {
    limit: Decimal,
    /// Days since the epoch (UTC) the sum is for.
    day: i64,
    realized: Decimal,
    tripped: bool,
}

impl DailyLoss {
    /// `limit`: a loss in USDT (positive). `realized` is what was already recorded for the day of
    /// `now_ms` (read back after a restart).
    pub fn new(limit: Decimal, now_ms: i64, realized: Decimal) -> DailyLoss {
        DailyLoss {
            limit,
            day: now_ms.div_euclid(DAY_MS),
            realized,
            tripped: false,
        }
    }

    /// Records a realized PnL at `now_ms` (a new UTC day starts from 0). Returns the day's loss
    /// when it has just gone beyond the limit (once a day). A sum that does not fit in a decimal
    /// saturates towards the side it was going (outside figures must never panic).
    pub fn record(&mut self, now_ms: i64, pnl: Decimal) -> Option<Decimal> {
        let day = now_ms.div_euclid(DAY_MS);
        if day != self.day {
            *self = DailyLoss::new(self.limit, now_ms, Decimal::ZERO);
        }
        self.realized = self
            .realized
            .checked_add(pnl)
            .unwrap_or(if pnl < Decimal::ZERO {
                Decimal::MIN
            } else {
                Decimal::MAX
            });
        if !self.tripped && -self.realized > self.limit {
            self.tripped = true;
            return Some(-self.realized);
        }
        None
    }

    /// The day's realized PnL so far.
    pub fn realized(&self) -> Decimal {
        self.realized
    }

    /// The key the day's sum is kept under: `quantum:pnl:realized:<days since the epoch>`.
    pub fn day_key(&self) -> String {
        day_key(self.day * DAY_MS)
    }
}

/// The key of the UTC day of `now_ms`'s realized PnL.
pub fn day_key(now_ms: i64) -> String {
    bus::keys::realized_pnl_day(now_ms.div_euclid(DAY_MS))
}

/// Sets `reducing` for tripwire `name` unless trading is already not `active`.
pub async fn trip(bus: &Bus, name: &str, reason: &str) {
    let current = match crate::control::read(bus).await {
        Ok(c) => c.map_or(TradingState::Active, |c| c.state),
        Err(e) => {
            error!(target: "quantum::control", "tripwire {name}: {reason}; cannot read the trading state ({e}), so cannot set reducing");
            return;
        }
    };
    if current != TradingState::Active {
        warn!(target: "quantum::control", "tripwire {name}: {reason}; trading is already {current}");
        return;
    }
    match crate::control::set(
        bus,
        TradingState::Reducing,
        &format!("tripwire:{name}"),
        reason,
    )
    .await
    {
        Ok(c) => {
            error!(target: "quantum::control", "TRIPWIRE {name}: {reason}; trading state set to {c}; `quantum resume` once understood")
        }
        Err(e) => {
            error!(target: "quantum::control", "tripwire {name}: {reason}; cannot set reducing: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_once_when_the_window_holds_the_limit() {
        let mut w = WindowCount::new(3, Duration::from_secs(60));
        assert!(!w.record(0));
        assert!(!w.record(10_000));
        assert!(w.record(59_000), "three within a minute");
        assert!(!w.record(59_500), "the count starts again after a trip");
    }

    #[test]
    fn events_spread_wider_than_the_window_never_trip_and_zero_is_off() {
        let mut w = WindowCount::new(2, Duration::from_secs(1));
        for t in [0, 2_000, 4_000, 6_000] {
            assert!(!w.record(t), "{t}");
        }
        let mut off = WindowCount::new(0, Duration::from_secs(1));
        assert!((0..10).all(|t| !off.record(t)));
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn the_daily_loss_trips_once_beyond_the_limit_and_a_new_day_starts_from_zero() {
        let day = DAY_MS * 20_000;
        // 30 lost before a restart, read back.
        let mut loss = DailyLoss::new(d("100"), day + 1_000, d("-30"));
        assert_eq!(loss.record(day + 2_000, d("25.5")), None, "a win");
        assert_eq!(
            loss.record(day + 3_000, d("-95.5")),
            None,
            "exactly 100 lost"
        );
        assert_eq!(loss.record(day + 4_000, d("-0.01")), Some(d("100.01")));
        assert_eq!(loss.record(day + 5_000, d("-50")), None, "once a day");
        assert_eq!(loss.realized(), d("-150.01"));
        assert_eq!(loss.day_key(), format!("quantum:pnl:realized:{}", 20_000));
        // Midnight UTC: a new day, a new sum, a new chance to trip.
        assert_eq!(loss.record(day + DAY_MS, d("-60")), None);
        assert_eq!(loss.realized(), d("-60"));
        assert_eq!(loss.record(day + DAY_MS + 1, d("-41")), Some(d("101")));
    }

    #[test]
    fn a_daily_sum_that_overflows_saturates_and_trips() {
        let mut loss = DailyLoss::new(d("100"), 0, Decimal::MIN);
        assert_eq!(loss.record(1, d("-1")), Some(Decimal::MAX));
    }

    #[tokio::test]
    async fn a_trip_sets_reducing_only_from_active() {
        let bus = Bus::memory(100);
        trip(&bus, "failures", "5 failed").await;
        let c = crate::control::read(&bus).await.unwrap().unwrap();
        assert_eq!(
            (c.state, c.by.as_str()),
            (TradingState::Reducing, "tripwire:failures")
        );
        crate::control::set(&bus, TradingState::Halted, "ops", "")
            .await
            .unwrap();
        trip(&bus, "failures", "again").await;
        let c = crate::control::read(&bus).await.unwrap().unwrap();
        assert_eq!(c.state, TradingState::Halted, "never loosened");
    }
}
