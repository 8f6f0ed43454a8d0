//! A rate budget shared by every process on one bus: fixed-window counters (Binance's windows are
//! aligned to the clock: a minute, ten seconds) and a ban deadline, taken and checked in one
//! atomic step. Binance counts request weight per IP and orders per account, not per process, so
//! two execution workers on one VPS must draw from one budget; each process's own governor cannot
//! see the other's requests until a reply header tells it, which is too late.
//!
//! The decision is [`decide`], a pure function; Redis runs the same rules as a Lua script (one
//! `EVAL`, so no other client's take lands between the check and the increment), and the
//! in-memory bus runs [`decide`] under its lock. The caller names the counters; this crate only
//! adds the window index and its key prefix.

use std::time::Duration;

/// One counter of the budget: `cost` more units in the fixed window of `len_ms` that holds the
/// current time, allowed only while the window's total stays within `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateWindow {
    /// The counter's name, e.g. `ip:weight:1m` or `account:<tag>:orders:10s`.
    pub name: String,
    pub len_ms: i64,
    pub limit: u64,
    pub cost: u64,
}

/// What the budget says about one take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Taken: every counter was raised by its cost.
    Granted,
    /// A window is full: nothing was taken; ask again after this long (when it rolls).
    Wait(Duration),
    /// A ban announced by the exchange (429/418 `Retry-After`) is in force for this long.
    Banned(Duration),
}

/// The index of the window of `len_ms` that holds `now_ms`.
pub(crate) fn window_index(now_ms: i64, len_ms: i64) -> i64 {
    now_ms.div_euclid(len_ms.max(1))
}

/// How long until the window of `len_ms` that holds `now_ms` rolls over.
pub(crate) fn until_roll(now_ms: i64, len_ms: i64) -> i64 {
    let len = len_ms.max(1);
    (window_index(now_ms, len) + 1) * len - now_ms
}

/// The rules, given the ban deadline and each window's count now: banned → `Banned`; any window
/// that `cost` would take past its limit → `Wait` until the last such window rolls; else
/// `Granted` (the caller then adds the costs). A zero cost never waits.
pub(crate) fn decide(
    now_ms: i64,
    ban_now_ms: i64,
    banned_until_ms: i64,
    windows: &[RateWindow],
    used: &[u64],
) -> RateDecision {
    if banned_until_ms > ban_now_ms {
        return RateDecision::Banned(ms(banned_until_ms - ban_now_ms));
    }
    let wait = windows
        .iter()
        .zip(used)
        .filter(|(w, used)| w.cost > 0 && used.saturating_add(w.cost) > w.limit)
        .map(|(w, _)| until_roll(now_ms, w.len_ms))
        .max();
    match wait {
        Some(wait) => RateDecision::Wait(ms(wait)),
        None => RateDecision::Granted,
    }
}

pub(crate) fn ms(value: i64) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

/// The Redis side of [`decide`]. KEYS[1] is the ban key, KEYS[2..] the counters (already
/// suffixed with their window index); ARGV[1] is the time of the windows, ARGV[2] the time the
/// ban deadline is compared with, then `len, limit, cost` per counter.
/// Replies `{0, 0}` granted, `{1, ms}` wait, `{2, ms}` banned. Counters expire two windows after
/// their own, so nothing piles up. Lua numbers are doubles: milliseconds since 1970 are exact.
pub(crate) const TAKE_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local ban_now = tonumber(ARGV[2])
local ban = tonumber(redis.call('GET', KEYS[1]) or '0')
if ban > ban_now then return {2, ban - ban_now} end
local wait = 0
for i = 2, #KEYS do
  local at = 3 + (i - 2) * 3
  local len, limit, cost = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if cost > 0 and used + cost > limit then
    local roll = (math.floor(now / len) + 1) * len - now
    if roll > wait then wait = roll end
  end
end
if wait > 0 then return {1, wait} end
for i = 2, #KEYS do
  local at = 3 + (i - 2) * 3
  local len, cost = tonumber(ARGV[at]), tonumber(ARGV[at + 2])
  if cost > 0 then
    redis.call('INCRBY', KEYS[i], cost)
    redis.call('PEXPIRE', KEYS[i], len * 2)
  end
end
return {0, 0}
";

/// Raises the ban deadline (never lowers it). KEYS[1] the ban key, ARGV[1] the deadline (ms),
/// ARGV[2] how long the key lives (ms).
pub(crate) const BAN_SCRIPT: &str = r"
local deadline = tonumber(ARGV[1])
local ban = tonumber(redis.call('GET', KEYS[1]) or '0')
if deadline > ban then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 0
";

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 28_333_333 * 60_000;

    fn window(limit: u64, cost: u64) -> RateWindow {
        RateWindow {
            name: "w".into(),
            len_ms: 60_000,
            limit,
            cost,
        }
    }

    #[test]
    fn grants_up_to_the_limit_and_waits_for_the_roll_beyond_it() {
        assert_eq!(
            decide(T0 + 1_000, T0 + 1_000, 0, &[window(10, 1)], &[9]),
            RateDecision::Granted
        );
        assert_eq!(
            decide(T0 + 1_000, T0 + 1_000, 0, &[window(10, 1)], &[10]),
            RateDecision::Wait(Duration::from_millis(59_000))
        );
    }

    #[test]
    fn the_longest_wait_of_the_full_windows_counts() {
        let ten_s = RateWindow {
            len_ms: 10_000,
            ..window(1, 1)
        };
        assert_eq!(
            decide(T0 + 2_000, T0 + 2_000, 0, &[ten_s, window(1, 1)], &[1, 1]),
            RateDecision::Wait(Duration::from_millis(58_000))
        );
    }

    #[test]
    fn a_ban_beats_everything_and_a_zero_cost_never_waits() {
        assert_eq!(
            decide(T0, T0, T0 + 500, &[window(10, 0)], &[0]),
            RateDecision::Banned(Duration::from_millis(500))
        );
        assert_eq!(
            decide(T0, T0, 0, &[window(10, 0)], &[10]),
            RateDecision::Granted
        );
    }
}
