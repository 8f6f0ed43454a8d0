//! The operator's trading state as the services see it (`quantum halt`, `quantum resume`): the
//! state lives on the bus (`bus::keys::CONTROL`) so every process sees a change; each process
//! keeps the last state it read and reads again when that is older than [`REFRESH`], so a change
//! reaches every intent decided a little later (well within a second).
//!
//! When the bus cannot be read, the last state read stays in force and a warning says so. A
//! process that has never read one (Redis away at start) uses the configuration's floor:
//! `risk.kill_switch = true` is `reducing`, otherwise `active`. A stored state that is not
//! readable counts as `halted`: it was written to stop something, and guessing would be worse.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::Bus;
use model::{TradingControl, TradingState};
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::metrics;

/// How old the last read may be before the next decision reads again.
pub const REFRESH: Duration = Duration::from_millis(250);

/// Reads the stored trading state: `None` when none was ever set (that is `active`). A stored
/// state that is not readable is `halted`, with the reason saying so (a gate logs it when its
/// state changes, not at every read).
pub async fn read(bus: &Bus) -> Result<Option<TradingControl>, bus::Error> {
    let map = bus.map_all(bus::keys::CONTROL).await?;
    Ok(map.get(bus::keys::TRADING_FIELD).map(|text| {
        TradingControl::from_json(text).unwrap_or_else(|e| {
            TradingControl::new(
                TradingState::Halted,
                "quantum",
                &format!("{e}; treated as halted until `quantum resume` or `quantum halt` writes a readable one"),
                0,
            )
        })
    }))
}

/// Sets the trading state (one write), and appends the change to the audit stream.
pub async fn write(bus: &Bus, control: &TradingControl) -> Result<(), bus::Error> {
    bus.map_put(
        bus::keys::CONTROL,
        &[(bus::keys::TRADING_FIELD.to_string(), control.to_json())],
    )
    .await?;
    bus.publish(bus::keys::CONTROL_LOG, &control.to_json())
        .await?;
    Ok(())
}

/// One process's view of the trading state (cheap to clone; clones share it).
#[derive(Debug, Clone)]
pub struct TradingGate {
    bus: Bus,
    floor: TradingState,
    inner: Arc<Mutex<Seen>>,
}

#[derive(Debug)]
struct Seen {
    control: Option<TradingControl>,
    read_at: Option<Instant>,
    /// Whether the last read failed (a warning is logged once per outage, not per intent).
    failing: bool,
}

impl TradingGate {
    /// `floor` is the state from the configuration (`reducing` with the kill switch on).
    pub fn new(bus: Bus, floor: TradingState) -> TradingGate {
        TradingGate {
            bus,
            floor,
            inner: Arc::new(Mutex::new(Seen {
                control: None,
                read_at: None,
                failing: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state an order decided now must obey: the stricter of the stored state and the floor.
    pub async fn state(&self) -> TradingState {
        let stale = self.lock().read_at.is_none_or(|at| at.elapsed() >= REFRESH);
        if stale {
            self.refresh().await;
        }
        let stored = self
            .lock()
            .control
            .as_ref()
            .map_or(TradingState::Active, |c| c.state);
        stored.max(self.floor)
    }

    /// Reads the stored state now; logs and exports a change.
    pub async fn refresh(&self) {
        let read = read(&self.bus).await;
        let mut seen = self.lock();
        seen.read_at = Some(Instant::now());
        match read {
            Ok(control) => {
                if seen.failing {
                    info!(target: "quantum::control", "the trading state is readable again");
                }
                seen.failing = false;
                let before = seen.control.as_ref().map(|c| c.state);
                let after = control.as_ref().map(|c| c.state);
                if before != after {
                    match &control {
                        Some(c) => warn_or_info(c),
                        None => {
                            info!(target: "quantum::control", "trading state: active (never set)")
                        }
                    }
                }
                seen.control = control;
            }
            Err(e) => {
                if !seen.failing {
                    warn!(target: "quantum::control", "cannot read the trading state ({e}); the last one read stays in force: {}", seen.control.as_ref().map_or_else(|| format!("{} (the configuration's)", self.floor), |c| c.to_string()));
                }
                seen.failing = true;
            }
        }
        let state = seen
            .control
            .as_ref()
            .map_or(TradingState::Active, |c| c.state)
            .max(self.floor);
        metrics::global()
            .trading_state
            .get()
            .set(i64::from(state.level()));
    }
}

fn warn_or_info(c: &TradingControl) {
    if c.state == TradingState::Active {
        info!(target: "quantum::control", "trading state: {c}");
    } else {
        warn!(target: "quantum::control", "trading state: {c}; {}", match c.state {
            TradingState::Reducing => "new entries are refused, closes and exits go on",
            _ => "nothing new is sent, closes and exits included; exchange-side protection stays",
        });
    }
}

/// Who is setting the state from this machine: `$USER@host`, as far as they are known.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// Sets the state as `by` with `reason`, now; returns what was written.
pub async fn set(
    bus: &Bus,
    state: TradingState,
    by: &str,
    reason: &str,
) -> Result<TradingControl, bus::Error> {
    let control = TradingControl::new(state, by, reason, now_ms());
    write(bus, &control).await?;
    Ok(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_follows_the_bus_and_never_goes_below_its_floor() {
        let bus = Bus::memory(100);
        let gate = TradingGate::new(bus.clone(), TradingState::Active);
        assert_eq!(
            gate.state().await,
            TradingState::Active,
            "never set is active"
        );
        set(&bus, TradingState::Halted, "ops@vps", "test")
            .await
            .unwrap();
        gate.refresh().await;
        assert_eq!(gate.state().await, TradingState::Halted);
        let floored = TradingGate::new(bus.clone(), TradingState::Reducing);
        set(&bus, TradingState::Active, "ops@vps", "")
            .await
            .unwrap();
        assert_eq!(
            floored.state().await,
            TradingState::Reducing,
            "the kill switch is a floor"
        );
        let log = bus.latest(bus::keys::CONTROL_LOG, 10).await.unwrap();
        assert_eq!(log.len(), 2, "every change is in the audit stream");
    }

    #[tokio::test]
    async fn an_unreadable_stored_state_counts_as_halted() {
        let bus = Bus::memory(100);
        bus.map_put(
            bus::keys::CONTROL,
            &[(bus::keys::TRADING_FIELD.to_string(), "{garbage".to_string())],
        )
        .await
        .unwrap();
        let gate = TradingGate::new(bus, TradingState::Active);
        assert_eq!(gate.state().await, TradingState::Halted);
    }
}
