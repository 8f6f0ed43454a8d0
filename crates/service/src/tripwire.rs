//! Tripwires: conditions under which the execution service stops new entries on its own, by
//! setting the trading state to `reducing` (closes and exits go on) with itself as the setter
//! (`tripwire:<name>`) and the reason. A tripwire never loosens a state: it acts only while
//! trading is `active`, and only the operator resumes (`quantum resume`).
//!
//! - `failures`: `execution.tripwire_failures` results `failed` or `timeout` within
//!   `execution.tripwire_window` (the exchange misbehaving, or orders not filling).
//! - `user-stream`: the user data stream down for longer than `execution.tripwire_stream_outage`
//!   (fills are still confirmed over REST, but slower and at a cost in weight).

use std::collections::VecDeque;
use std::time::Duration;

use bus::Bus;
use model::TradingState;
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
