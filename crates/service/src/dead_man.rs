//! The dead-man switch: while the execution service has an order working on a symbol for longer
//! than [`ARM_AFTER`] (a MARKET order fills in milliseconds and never arms it, so the switch costs
//! no request per intent), Binance's `countdownCancelAll` stays armed for that symbol, renewed
//! every quarter of the countdown. If
//! the host dies (or the process hangs), the renewals stop and the exchange cancels the symbol's
//! resting orders when the countdown runs out: nothing stale is left working. When no order of
//! the service is working on the symbol any more, the countdown is stopped (`countdownTime=0`).
//!
//! The countdown cancels regular orders only. The exit monitor's protective stops are algo
//! orders (the Algo Order API), which `countdownCancelAll` does not touch: they survive a dead
//! host, which is what they are for. Failing renewals are logged (WARN) and retried at the next
//! heartbeat; a countdown that could not be renewed may fire and cancel a working order, which
//! the order's intent then reports from the exchange's answer, as for any cancel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long an order works before the switch arms for its symbol.
pub const ARM_AFTER: Duration = Duration::from_secs(1);

/// The symbols with working orders (each hold with when it began), shared by the intents (which
/// hold them) and the heartbeat.
#[derive(Debug, Clone, Default)]
pub struct DeadMan {
    working: Arc<Mutex<Working>>,
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Working {
    next_id: u64,
    holds: BTreeMap<String, BTreeMap<u64, Instant>>,
}

/// Held while an intent's order may be working; dropping it releases it.
#[derive(Debug)]
pub struct Hold {
    dead_man: DeadMan,
    symbol: String,
    id: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut working = self.dead_man.lock();
        if let Some(holds) = working.holds.get_mut(&self.symbol) {
            holds.remove(&self.id);
            if holds.is_empty() {
                working.holds.remove(&self.symbol);
            }
        }
        drop(working);
        self.dead_man.changed.notify_one();
    }
}

impl DeadMan {
    fn lock(&self) -> std::sync::MutexGuard<'_, Working> {
        self.working.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks an order as (possibly) working on `symbol` until the returned hold is dropped.
    pub fn hold(&self, symbol: &str) -> Hold {
        self.hold_since(symbol, Instant::now())
    }

    fn hold_since(&self, symbol: &str, since: Instant) -> Hold {
        let mut working = self.lock();
        let id = working.next_id;
        working.next_id += 1;
        working
            .holds
            .entry(symbol.to_string())
            .or_default()
            .insert(id, since);
        drop(working);
        self.changed.notify_one();
        Hold {
            dead_man: self.clone(),
            symbol: symbol.to_string(),
            id,
        }
    }

    /// Symbols with an order that has been working for at least `min_age` at `now`.
    pub fn working(&self, min_age: Duration, now: Instant) -> BTreeSet<String> {
        self.lock()
            .holds
            .iter()
            .filter(|(_, holds)| {
                holds
                    .values()
                    .any(|since| now.duration_since(*since) >= min_age)
            })
            .map(|(symbol, _)| symbol.clone())
            .collect()
    }

    /// How long the oldest order still held has been working at `now` (`None`: none is).
    pub fn oldest(&self, now: Instant) -> Option<Duration> {
        self.lock()
            .holds
            .values()
            .flat_map(|holds| holds.values())
            .map(|since| now.saturating_duration_since(*since))
            .max()
    }

    fn any(&self) -> bool {
        !self.lock().holds.is_empty()
    }
}

/// What one heartbeat must send: (symbols to arm, symbols to disarm), given the symbols with an
/// order working long enough to arm (`working`), the symbols with any order working at all
/// (`held`), and what was armed before. A symbol is disarmed only when nothing works there: a
/// young order after an old one keeps the countdown, instead of a disarm and a re-arm.
pub fn heartbeat_plan(
    working: &BTreeSet<String>,
    held: &BTreeSet<String>,
    armed: &BTreeSet<String>,
) -> (Vec<String>, Vec<String>) {
    let arm = working.iter().cloned().collect();
    let disarm = armed.difference(held).cloned().collect();
    (arm, disarm)
}

/// The heartbeat task: arms at once when a symbol starts working, renews every quarter of
/// `countdown`, disarms when it stops working; on stop (a graceful shutdown) disarms everything.
pub async fn run(
    dead_man: DeadMan,
    rest: binance::RestClient,
    countdown: Duration,
    stop: CancellationToken,
) {
    let countdown_ms = countdown.as_millis() as u64;
    let beat = countdown / 4;
    let mut armed: BTreeSet<String> = BTreeSet::new();
    // Symbols whose arming failed since the last renewal: tried again at the next one, not in a
    // tight loop.
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut next_renewal = tokio::time::Instant::now();
    loop {
        let now = Instant::now();
        let working = dead_man.working(ARM_AFTER, now);
        let held = dead_man.working(Duration::ZERO, now);
        let due = tokio::time::Instant::now() >= next_renewal;
        if due {
            failed.clear();
        }
        let newly = working
            .iter()
            .any(|s| !armed.contains(s) && !failed.contains(s));
        if newly || due || armed.difference(&held).next().is_some() {
            let (arm, disarm) = heartbeat_plan(&working, &held, &armed);
            // Between renewals only the symbols not armed yet are sent.
            let arm: Vec<String> = if due {
                arm
            } else {
                arm.into_iter()
                    .filter(|s| !armed.contains(s) && !failed.contains(s))
                    .collect()
            };
            for symbol in arm {
                match rest.countdown_cancel_all(&symbol, countdown_ms).await {
                    Ok(()) => {
                        if armed.insert(symbol.clone()) {
                            info!(target: "quantum::dead_man", "{symbol}: countdownCancelAll armed ({} s, renewed every {} s)", countdown.as_secs(), beat.as_secs_f64());
                        }
                    }
                    Err(e) => {
                        warn!(target: "quantum::dead_man", "{symbol}: cannot arm or renew countdownCancelAll ({e}); tried again at the next heartbeat");
                        failed.insert(symbol);
                    }
                }
            }
            for symbol in disarm {
                match rest.countdown_cancel_all(&symbol, 0).await {
                    Ok(()) => {
                        armed.remove(&symbol);
                    }
                    Err(e) => {
                        warn!(target: "quantum::dead_man", "{symbol}: cannot stop countdownCancelAll ({e}); tried again at the next heartbeat")
                    }
                }
            }
            if due || newly {
                next_renewal = tokio::time::Instant::now() + beat;
            }
        }
        // While orders work, look again soon (one may pass ARM_AFTER); otherwise sleep until a
        // hold changes or a renewal is due.
        let look_again = if dead_man.any() {
            tokio::time::Instant::now() + Duration::from_millis(250)
        } else {
            next_renewal
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = dead_man.changed.notified() => {}
            _ = tokio::time::sleep_until(look_again.min(next_renewal)) => {}
        }
    }
    // A graceful stop leaves no countdown behind that could cancel another instance's orders.
    for symbol in armed {
        if let Err(e) = rest.countdown_cancel_all(&symbol, 0).await {
            warn!(target: "quantum::dead_man", "{symbol}: cannot stop countdownCancelAll at shutdown ({e})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn holds_count_per_symbol_release_on_drop_and_arm_only_once_old_enough() {
        let dm = DeadMan::default();
        let t0 = Instant::now();
        let later = t0 + ARM_AFTER;
        let a = dm.hold_since("BTCUSDT", t0);
        let b = dm.hold_since("BTCUSDT", later);
        let c = dm.hold_since("ETHUSDT", later);
        assert_eq!(
            dm.working(ARM_AFTER, later),
            set(&["BTCUSDT"]),
            "ETHUSDT's order is too young"
        );
        assert_eq!(
            dm.working(Duration::ZERO, later),
            set(&["BTCUSDT", "ETHUSDT"])
        );
        assert_eq!(
            dm.oldest(later),
            Some(ARM_AFTER),
            "the stuck-order gauge reads the oldest hold"
        );
        drop(a);
        assert_eq!(dm.oldest(later), Some(Duration::ZERO));
        assert!(
            dm.working(ARM_AFTER, later).is_empty(),
            "the old BTCUSDT order is done"
        );
        assert_eq!(
            dm.working(ARM_AFTER, later + ARM_AFTER),
            set(&["BTCUSDT", "ETHUSDT"])
        );
        drop(b);
        drop(c);
        assert!(!dm.any());
        assert_eq!(dm.oldest(later), None);
    }

    #[test]
    fn a_heartbeat_renews_what_works_and_stops_what_no_longer_does() {
        let (arm, disarm) = heartbeat_plan(
            &set(&["BTCUSDT"]),
            &set(&["BTCUSDT", "SOLUSDT"]),
            &set(&["BTCUSDT", "ETHUSDT", "SOLUSDT"]),
        );
        assert_eq!(arm, ["BTCUSDT"]);
        assert_eq!(
            disarm,
            ["ETHUSDT"],
            "SOLUSDT still has a (young) order working"
        );
        let (arm, disarm) = heartbeat_plan(&set(&[]), &set(&[]), &set(&[]));
        assert!(arm.is_empty() && disarm.is_empty());
    }
}
