//! Fault schedule: every knob of the simulator's `POST /sim/v1/faults`, switched on and off at
//! random. A run injects each knob at least once (the first steps go through all knobs in a
//! seeded order, the rest are drawn at random); knobs with a state (delays, never-fill, partial
//! fills, RESULT wait, clock skew, thin books, Retry-After) are switched back to the simulator's
//! start-up value a few seconds later, counter knobs fire on the next N matching requests, and the
//! one-shot actions (user streams dropped, listenKeys expired) happen when posted. At the end of
//! the scenario everything is lifted with `{"reset":true,"lift_ban":true}`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::scenario::Rng;

/// The simulator's fill delay at start (and what `fill_delay_ms` returns to).
pub const BASE_FILL_DELAY_MS: u64 = 300;
/// The simulator's RESULT wait at start.
pub const BASE_RESULT_WAIT_MS: u64 = 5_000;

/// One fault knob of the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Knob {
    FillDelay,
    NeverFill,
    PartialFills,
    ResultWait,
    DropOrderResponses,
    DropOrderRequests,
    Unknown503,
    Unknown503NotExecuted,
    RateLimit429,
    Cancel429,
    Query429,
    RetryAfter,
    RejectOrders,
    ClockSkew,
    ThinBook,
    DisconnectUserStreams,
    ExpireListenKeys,
}

impl Knob {
    pub const ALL: [Knob; 17] = [
        Knob::FillDelay,
        Knob::NeverFill,
        Knob::PartialFills,
        Knob::ResultWait,
        Knob::DropOrderResponses,
        Knob::DropOrderRequests,
        Knob::Unknown503,
        Knob::Unknown503NotExecuted,
        Knob::RateLimit429,
        Knob::Cancel429,
        Knob::Query429,
        Knob::RetryAfter,
        Knob::RejectOrders,
        Knob::ClockSkew,
        Knob::ThinBook,
        Knob::DisconnectUserStreams,
        Knob::ExpireListenKeys,
    ];

    /// The knob's name in the control API.
    pub fn name(self) -> &'static str {
        match self {
            Knob::FillDelay => "fill_delay_ms",
            Knob::NeverFill => "never_fill",
            Knob::PartialFills => "partial_fills",
            Knob::ResultWait => "result_wait_ms",
            Knob::DropOrderResponses => "drop_order_responses",
            Knob::DropOrderRequests => "drop_order_requests",
            Knob::Unknown503 => "unknown_status_503",
            Knob::Unknown503NotExecuted => "unknown_status_503_not_executed",
            Knob::RateLimit429 => "rate_limit_429",
            Knob::Cancel429 => "cancel_429",
            Knob::Query429 => "query_429",
            Knob::RetryAfter => "retry_after_s",
            Knob::RejectOrders => "reject_orders",
            Knob::ClockSkew => "clock_skew_ms",
            Knob::ThinBook => "book_level_notional",
            Knob::DisconnectUserStreams => "disconnect_user_streams",
            Knob::ExpireListenKeys => "expire_listen_keys",
        }
    }

    /// Counter knobs: armed for the next N matching requests (reported left over at the end).
    pub fn is_counter(self) -> bool {
        matches!(
            self,
            Knob::DropOrderResponses
                | Knob::DropOrderRequests
                | Knob::Unknown503
                | Knob::Unknown503NotExecuted
                | Knob::RateLimit429
                | Knob::Cancel429
                | Knob::Query429
                | Knob::RejectOrders
        )
    }
}

/// One `POST /sim/v1/faults` of the schedule.
#[derive(Debug, Clone)]
pub struct FaultStep {
    pub knob: Knob,
    pub body: Value,
    /// True for a step that injects the fault (counted); false for one that switches it off.
    pub injects: bool,
}

impl FaultStep {
    pub fn describe(&self) -> String {
        format!("{} {}", if self.injects { "on " } else { "off" }, self.body)
    }
}

/// The fault steps of a run: `(at_ms, step)`, one injection every 1.5 s on average (at least one
/// per knob) between 2 s and 90 % of the scenario, each stateful one followed by its switch-off.
pub fn schedule(seed: u64, duration_ms: u64) -> Vec<(u64, FaultStep)> {
    let mut rng = Rng::derive(seed, "faults");
    let (from, to) = (2_000, (duration_ms * 9 / 10).max(3_000));
    let count = ((duration_ms / 1_500) as usize).max(Knob::ALL.len());
    let mut times: Vec<u64> = (0..count).map(|_| from + rng.below(to - from)).collect();
    times.sort_unstable();
    // The first steps go through every knob (in a seeded order, each as soon as it is allowed).
    let mut uncovered: Vec<Knob> = rng
        .permutation(Knob::ALL.len())
        .into_iter()
        .map(|i| Knob::ALL[i])
        .collect();
    let mut state = Spacing::default();
    let mut out = Vec::new();
    for at in times {
        let knob = match uncovered
            .iter()
            .position(|k| state.allows(*k, at, uncovered.is_empty()))
        {
            Some(i) => uncovered.remove(i),
            None => weighted(&mut rng, |k| state.allows(k, at, uncovered.is_empty())),
        };
        let (on, off) = steps(knob, &mut rng);
        out.push((
            at,
            FaultStep {
                knob,
                body: on,
                injects: true,
            },
        ));
        if is_429(knob) {
            state.last_429 = Some(at);
        }
        if let Some((after, body)) = off {
            state.busy_until.insert(knob, at + after);
            out.push((
                at + after,
                FaultStep {
                    knob,
                    body,
                    injects: false,
                },
            ));
        }
    }
    out
}

/// What decides whether a knob may be injected at a moment.
#[derive(Debug, Default)]
struct Spacing {
    /// Stateful knobs are not switched on again while they are on.
    busy_until: BTreeMap<Knob, u64>,
    last_429: Option<u64>,
}

impl Spacing {
    fn allows(&self, knob: Knob, at: u64, covered: bool) -> bool {
        if self.busy_until.get(&knob).is_some_and(|until| *until > at) {
            return false;
        }
        // (A clock skew may come at any time: the simulator keeps back-offs and bans on real
        // time, so a skew changed during one does not stretch it behind the clients' backs.)
        !(is_429(knob)
            && covered
            && self
                .last_429
                .is_some_and(|t| at < t + RATE_LIMIT_SPACING_MS))
    }
}

/// After the first round over every knob, a 429 knob is injected at most once in this long.
/// Each 429 starts the IP's back-off, and the requests the processes have in flight at that
/// moment readily make it a 418 ban (2 minutes, then twice as long each time), which would idle
/// the rest of a run; the other knobs are what a long run repeats.
const RATE_LIMIT_SPACING_MS: u64 = 300_000;

fn is_429(knob: Knob) -> bool {
    matches!(knob, Knob::RateLimit429 | Knob::Cancel429 | Knob::Query429)
}

/// A knob drawn at random among those `allowed`: the 429 knobs a third as often as the others.
fn weighted(rng: &mut Rng, allowed: impl Fn(Knob) -> bool) -> Knob {
    let weight = |k: Knob| match k {
        _ if !allowed(k) => 0,
        k if is_429(k) => 1,
        _ => 3,
    };
    let total: u64 = Knob::ALL.iter().map(|k| weight(*k)).sum();
    if total == 0 {
        return Knob::DropOrderRequests;
    }
    let mut pick = rng.below(total);
    for knob in Knob::ALL {
        if pick < weight(knob) {
            return knob;
        }
        pick -= weight(knob);
    }
    Knob::DropOrderRequests
}

/// The body that injects `knob`, and for a stateful knob the delay and body that switch it off.
fn steps(knob: Knob, rng: &mut Rng) -> (Value, Option<(u64, Value)>) {
    let n = |rng: &mut Rng, hi: i64| rng.range(1, hi);
    let off_after = |rng: &mut Rng, lo: i64, hi: i64| rng.range(lo, hi) as u64;
    match knob {
        Knob::FillDelay => (
            json!({"fill_delay_ms": rng.range(1_000, 4_000)}),
            Some((
                off_after(rng, 2_000, 8_000),
                json!({"fill_delay_ms": BASE_FILL_DELAY_MS}),
            )),
        ),
        Knob::NeverFill => (
            json!({"never_fill": true}),
            Some((off_after(rng, 2_000, 12_000), json!({"never_fill": false}))),
        ),
        Knob::PartialFills => (
            json!({"partial_fills": rng.range(2, 4)}),
            Some((off_after(rng, 3_000, 10_000), json!({"partial_fills": 1}))),
        ),
        Knob::ResultWait => (
            json!({"result_wait_ms": if rng.chance(500) { 0 } else { rng.range(200, 2_000) }}),
            Some((
                off_after(rng, 3_000, 10_000),
                json!({"result_wait_ms": BASE_RESULT_WAIT_MS}),
            )),
        ),
        Knob::DropOrderResponses => (json!({"drop_order_responses": n(rng, 2)}), None),
        Knob::DropOrderRequests => (json!({"drop_order_requests": n(rng, 2)}), None),
        Knob::Unknown503 => (json!({"unknown_status_503": n(rng, 2)}), None),
        Knob::Unknown503NotExecuted => {
            (json!({"unknown_status_503_not_executed": n(rng, 2)}), None)
        }
        Knob::RateLimit429 => (json!({"rate_limit_429": n(rng, 2)}), None),
        Knob::Cancel429 => (json!({"cancel_429": n(rng, 2)}), None),
        Knob::Query429 => (json!({"query_429": n(rng, 2)}), None),
        Knob::RetryAfter => (
            json!({"retry_after_s": rng.range(2, 4)}),
            Some((off_after(rng, 3_000, 8_000), json!({"retry_after_s": 1}))),
        ),
        // Definite refusals, and Binance's -1006/-1007 ("execution status unknown"), which the
        // client must treat as ambiguous: look the order up, never resend blindly.
        Knob::RejectOrders => (
            json!({"reject_orders": {"code": *rng.pick(&[-2019, -2022, -4131, -1006, -1007]), "count": n(rng, 2)}}),
            None,
        ),
        Knob::ClockSkew => {
            let skew = rng.range(1_500, 4_000) * if rng.chance(500) { 1 } else { -1 };
            (
                json!({"clock_skew_ms": skew}),
                Some((off_after(rng, 2_000, 6_000), json!({"clock_skew_ms": 0}))),
            )
        }
        Knob::ThinBook => (
            json!({"book_level_notional": rng.range(40, 200).to_string()}),
            Some((
                off_after(rng, 2_000, 6_000),
                json!({"book_level_notional": null}),
            )),
        ),
        Knob::DisconnectUserStreams => (json!({"disconnect_user_streams": true}), None),
        Knob::ExpireListenKeys => (json!({"expire_listen_keys": true}), None),
    }
}

/// Counter knobs still armed (not fired) in a `GET /sim/v1/faults` answer.
pub fn unfired(current: &Value) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for knob in Knob::ALL.into_iter().filter(|k| k.is_counter()) {
        let left = match knob {
            Knob::RejectOrders => current
                .get("reject_orders")
                .and_then(|r| r.get("count"))
                .and_then(Value::as_u64),
            _ => current.get(knob.name()).and_then(Value::as_u64),
        };
        if let Some(left) = left.filter(|n| *n > 0) {
            out.insert(knob.name(), left);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_knob_is_injected_and_429s_are_spaced_after_the_first_round() {
        for (seed, duration) in (0..300).zip([45_000, 60_000, 90_000, 600_000].into_iter().cycle())
        {
            let steps = schedule(seed, duration);
            let injected: std::collections::BTreeSet<Knob> = steps
                .iter()
                .filter(|(_, s)| s.injects)
                .map(|(_, s)| s.knob)
                .collect();
            assert_eq!(
                injected.len(),
                Knob::ALL.len(),
                "seed {seed}: {injected:?} {:?}",
                steps
                    .iter()
                    .map(|(at, s)| format!("{at} {}", s.describe()))
                    .collect::<Vec<_>>()
            );
            // After every knob had its turn, 429 knobs come at most once per spacing.
            let first_round_done = {
                let mut seen = std::collections::BTreeSet::new();
                steps
                    .iter()
                    .filter(|(_, s)| s.injects)
                    .find(|(_, s)| {
                        seen.insert(s.knob);
                        seen.len() == Knob::ALL.len()
                    })
                    .map(|(at, _)| *at)
                    .unwrap()
            };
            let all_429s: Vec<u64> = steps
                .iter()
                .filter(|(_, s)| s.injects && is_429(s.knob))
                .map(|(at, _)| *at)
                .collect();
            for pair in all_429s.windows(2).filter(|p| p[1] > first_round_done) {
                assert!(
                    pair[1] - pair[0] >= RATE_LIMIT_SPACING_MS,
                    "seed {seed}: 429s at {pair:?}"
                );
            }
        }
    }
}
