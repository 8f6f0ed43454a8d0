//! Exit triggers: take-profit, stop-loss and trailing stop for one tracked lot, evaluated by a
//! pure function of (lot, plan, state, mark price). The trailing stop's peak only ever moves in
//! the position's favour, so the stop never loosens. An exit plan is resolved against the entry
//! price once, when the lot is opened, and refused there if it makes no sense (a callback outside
//! Binance's 0.1 to 10 percent, a level that overflows). All arithmetic is checked: a plan whose
//! prices overflow is a refusal with a reason, never a panic.

use model::{ExitLevel, ExitPlan};
use rust_decimal::Decimal;

/// Which way the lot makes money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Long,
    Short,
}

/// An exit plan in prices, for one lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub direction: Direction,
    pub entry: Decimal,
    pub take_profit: Option<Decimal>,
    pub stop_loss: Option<Decimal>,
    /// Trailing callback in percent.
    pub trailing_pct: Option<Decimal>,
}

/// Why a plan cannot protect the lot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("entry price {0} is not positive")]
    NoEntry(Decimal),
    #[error("stop-loss {stop} is on the wrong side of entry {entry} for a {direction:?}")]
    StopOnWrongSide {
        stop: Decimal,
        entry: Decimal,
        direction: Direction,
    },
    #[error("take-profit {target} is on the wrong side of entry {entry} for a {direction:?}")]
    TargetOnWrongSide {
        target: Decimal,
        entry: Decimal,
        direction: Direction,
    },
    #[error("trailing callback {0}% is outside Binance's 0.1 to 10%")]
    Callback(Decimal),
    #[error("a percentage of {0} would put the price at or below zero")]
    Percent(Decimal),
    #[error("a level of this plan does not fit in a decimal (overflow)")]
    Overflow,
}

impl Levels {
    /// No levels at all (for showing a lot whose plan could not be resolved).
    pub fn none(direction: Direction, entry: Decimal) -> Levels {
        Levels {
            direction,
            entry,
            take_profit: None,
            stop_loss: None,
            trailing_pct: None,
        }
    }

    /// Resolves `plan` against the lot's entry price, refusing levels on the wrong side of it
    /// (the execution service's check before an order is placed).
    pub fn resolve(
        direction: Direction,
        entry: Decimal,
        plan: &ExitPlan,
    ) -> Result<Levels, PlanError> {
        let levels = Levels::resolve_at_fill(direction, entry, plan)?;
        let (below, above) = (|p: Decimal| p < entry, |p: Decimal| p > entry);
        if let Some(stop) = levels.stop_loss {
            let ok = match direction {
                Direction::Long => below(stop),
                Direction::Short => above(stop),
            };
            if !ok {
                return Err(PlanError::StopOnWrongSide {
                    stop,
                    entry,
                    direction,
                });
            }
        }
        if let Some(target) = levels.take_profit {
            let ok = match direction {
                Direction::Long => above(target),
                Direction::Short => below(target),
            };
            if !ok {
                return Err(PlanError::TargetOnWrongSide {
                    target,
                    entry,
                    direction,
                });
            }
        }
        Ok(levels)
    }

    /// Resolves `plan` for a position that is already filled. An absolute level the fill went
    /// past (a take-profit at 3407 for a long filled at 3410.01) is kept: it is not a mistake of
    /// the plan but slippage, and the first evaluation fires it, so the position is closed at once
    /// instead of being left untracked.
    pub fn resolve_at_fill(
        direction: Direction,
        entry: Decimal,
        plan: &ExitPlan,
    ) -> Result<Levels, PlanError> {
        if entry <= Decimal::ZERO {
            return Err(PlanError::NoEntry(entry));
        }
        let pct = |p: Decimal, favourable: bool| -> Result<Decimal, PlanError> {
            let up = match direction {
                Direction::Long => favourable,
                Direction::Short => !favourable,
            };
            let factor = if up {
                Decimal::ONE_HUNDRED.checked_add(p)
            } else {
                Decimal::ONE_HUNDRED.checked_sub(p)
            }
            .ok_or(PlanError::Overflow)?;
            if p <= Decimal::ZERO || factor <= Decimal::ZERO {
                return Err(PlanError::Percent(p));
            }
            let level = entry
                .checked_mul(factor)
                .and_then(|v| v.checked_div(Decimal::ONE_HUNDRED))
                .ok_or(PlanError::Overflow)?;
            // At the 28-digit edge the product rounds: 49.5 % under an entry of 1e-28 is zero.
            if level <= Decimal::ZERO {
                return Err(PlanError::Percent(p));
            }
            Ok(level)
        };
        let level =
            |l: Option<ExitLevel>, favourable: bool| -> Result<Option<Decimal>, PlanError> {
                match l {
                    Some(ExitLevel::Pct(p)) => Ok(Some(pct(p, favourable)?)),
                    Some(ExitLevel::Price(p)) if p <= Decimal::ZERO => Err(PlanError::NoEntry(p)),
                    Some(ExitLevel::Price(p)) => Ok(Some(p)),
                    None => Ok(None),
                }
            };
        let take_profit = level(plan.take_profit, true)?;
        let stop_loss = level(plan.stop_loss, false)?;
        if let Some(t) = plan.trailing_pct {
            if t < Decimal::new(1, 1) || t > Decimal::TEN {
                return Err(PlanError::Callback(t));
            }
        }
        Ok(Levels {
            direction,
            entry,
            take_profit,
            stop_loss,
            trailing_pct: plan.trailing_pct,
        })
    }
}

/// What moves while a lot is open: the best price seen since entry (for the trailing stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailState {
    pub peak: Decimal,
}

impl TrailState {
    pub fn new(levels: &Levels) -> TrailState {
        TrailState { peak: levels.entry }
    }
}

/// Why a lot should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    TakeProfit { level: Decimal },
    StopLoss { level: Decimal },
    Trailing { peak: Decimal, stop: Decimal },
}

impl Trigger {
    /// The log marker of the trigger (`TP_HIT`, `SL_HIT`, `TRAIL_HIT`).
    pub fn marker(&self) -> &'static str {
        match self {
            Trigger::TakeProfit { .. } => "TP_HIT",
            Trigger::StopLoss { .. } => "SL_HIT",
            Trigger::Trailing { .. } => "TRAIL_HIT",
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    pub state: TrailState,
    /// The peak moved (log `TRAIL_UPDATE`).
    pub peak_moved: bool,
    pub trigger: Option<Trigger>,
}

/// The trailing stop price for a peak: `callback` percent back from it; `None` when it does not
/// fit in a decimal.
pub fn trailing_stop(
    direction: Direction,
    peak: Decimal,
    callback_pct: Decimal,
) -> Option<Decimal> {
    let back = peak
        .checked_mul(callback_pct)?
        .checked_div(Decimal::ONE_HUNDRED)?;
    match direction {
        Direction::Long => peak.checked_sub(back),
        Direction::Short => peak.checked_add(back),
    }
}

/// Evaluates one mark price. Stop-loss is checked first: when a gap crosses both levels at
/// once, protecting the lot wins over the better exit.
pub fn evaluate(levels: &Levels, state: TrailState, mark: Decimal) -> Evaluation {
    let favourable = |a: Decimal, b: Decimal| match levels.direction {
        Direction::Long => a > b,
        Direction::Short => a < b,
    };
    let mut next = state;
    let peak_moved = favourable(mark, state.peak);
    if peak_moved {
        next.peak = mark;
    }
    let reached = |level: Decimal, towards_profit: bool| match (levels.direction, towards_profit) {
        (Direction::Long, true) | (Direction::Short, false) => mark >= level,
        (Direction::Long, false) | (Direction::Short, true) => mark <= level,
    };
    let trigger = if let Some(stop) = levels.stop_loss.filter(|s| reached(*s, false)) {
        Some(Trigger::StopLoss { level: stop })
    } else if let Some(target) = levels.take_profit.filter(|t| reached(*t, true)) {
        Some(Trigger::TakeProfit { level: target })
    } else if let Some(stop) = levels
        .trailing_pct
        .and_then(|callback| trailing_stop(levels.direction, next.peak, callback))
    {
        // The trail only arms once the price has moved in the lot's favour past its callback
        // distance; before that it would sit at or behind the entry and act as a second stop.
        let armed = favourable(next.peak, levels.entry) && favourable(stop, levels.entry)
            || stop == levels.entry;
        (armed && reached(stop, false)).then_some(Trigger::Trailing {
            peak: next.peak,
            stop,
        })
    } else {
        None
    };
    Evaluation {
        state: next,
        peak_moved,
        trigger,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn plan(tp: Option<&str>, sl: Option<&str>, trail: Option<&str>) -> ExitPlan {
        ExitPlan {
            take_profit: tp.map(|p| ExitLevel::Pct(d(p))),
            stop_loss: sl.map(|p| ExitLevel::Pct(d(p))),
            trailing_pct: trail.map(d),
        }
    }

    /// Regression (found by the fuzz test with a random seed): a 49.5 % stop under an entry of
    /// 1e-28 rounded to a stop at 0, a level no price can cross. It is refused with its reason.
    #[test]
    fn a_percentage_level_that_rounds_to_zero_is_refused() {
        let tiny = d("0.0000000000000000000000000001");
        for direction in [Direction::Long, Direction::Short] {
            let favourable = direction == Direction::Short;
            let p = if favourable {
                plan(Some("49.5"), None, None)
            } else {
                plan(None, Some("49.5"), None)
            };
            assert_eq!(
                Levels::resolve_at_fill(direction, tiny, &p),
                Err(PlanError::Percent(d("49.5"))),
                "{direction:?}"
            );
        }
    }

    #[test]
    fn percentages_resolve_around_the_entry_for_longs_and_shorts() {
        let long =
            Levels::resolve(Direction::Long, d("100"), &plan(Some("2"), Some("1"), None)).unwrap();
        assert_eq!(
            (long.take_profit, long.stop_loss),
            (Some(d("102")), Some(d("99")))
        );
        let short = Levels::resolve(
            Direction::Short,
            d("100"),
            &plan(Some("2"), Some("1"), None),
        )
        .unwrap();
        assert_eq!(
            (short.take_profit, short.stop_loss),
            (Some(d("98")), Some(d("101")))
        );
    }

    #[test]
    fn plans_that_make_no_sense_are_refused() {
        let above = ExitPlan {
            stop_loss: Some(ExitLevel::Price(d("105"))),
            ..ExitPlan::default()
        };
        assert!(matches!(
            Levels::resolve(Direction::Long, d("100"), &above),
            Err(PlanError::StopOnWrongSide { .. })
        ));
        let below = ExitPlan {
            take_profit: Some(ExitLevel::Price(d("95"))),
            ..ExitPlan::default()
        };
        assert!(matches!(
            Levels::resolve(Direction::Long, d("100"), &below),
            Err(PlanError::TargetOnWrongSide { .. })
        ));
        assert!(matches!(
            Levels::resolve(Direction::Long, d("100"), &plan(None, None, Some("20"))),
            Err(PlanError::Callback(_))
        ));
        assert!(matches!(
            Levels::resolve(Direction::Long, d("100"), &plan(None, Some("100"), None)),
            Err(PlanError::Percent(_))
        ));
        assert!(matches!(
            Levels::resolve(Direction::Long, d("0"), &plan(None, Some("1"), None)),
            Err(PlanError::NoEntry(_))
        ));
    }

    #[test]
    fn take_profit_and_stop_loss_fire_at_their_levels() {
        let l =
            Levels::resolve(Direction::Long, d("100"), &plan(Some("2"), Some("1"), None)).unwrap();
        let s = TrailState::new(&l);
        assert_eq!(evaluate(&l, s, d("101")).trigger, None);
        assert_eq!(
            evaluate(&l, s, d("102")).trigger,
            Some(Trigger::TakeProfit { level: d("102") })
        );
        assert_eq!(
            evaluate(&l, s, d("99")).trigger,
            Some(Trigger::StopLoss { level: d("99") })
        );
    }

    #[test]
    fn a_trailing_stop_follows_the_peak_and_fires_on_the_callback() {
        let l =
            Levels::resolve(Direction::Long, d("100"), &plan(None, Some("5"), Some("1"))).unwrap();
        let mut s = TrailState::new(&l);
        for (mark, moved) in [("101", true), ("110", true), ("109", false)] {
            let e = evaluate(&l, s, d(mark));
            assert_eq!((e.peak_moved, e.trigger), (moved, None), "at {mark}");
            s = e.state;
        }
        let e = evaluate(&l, s, d("108.9"));
        assert_eq!(
            e.trigger,
            Some(Trigger::Trailing {
                peak: d("110"),
                stop: d("108.9")
            })
        );
    }

    #[test]
    fn a_trailing_stop_does_not_fire_before_it_is_in_profit() {
        let l = Levels::resolve(Direction::Long, d("100"), &plan(None, None, Some("1"))).unwrap();
        let s = TrailState::new(&l);
        assert_eq!(
            evaluate(&l, s, d("99.5")).trigger,
            None,
            "no trail behind the entry"
        );
    }

    proptest! {
        /// However the price moves, the trailing stop of a long only ever rises (of a short only
        /// ever falls).
        #[test]
        fn a_trailing_stop_never_loosens(moves in proptest::collection::vec(-300i64..300, 1..60), short in any::<bool>()) {
            let direction = if short { Direction::Short } else { Direction::Long };
            let l = Levels::resolve(direction, d("1000"), &plan(None, None, Some("2"))).unwrap();
            let mut s = TrailState::new(&l);
            let mut price = d("1000");
            let mut last_stop = trailing_stop(direction, s.peak, d("2")).unwrap();
            for m in moves {
                price = (price + Decimal::new(m, 1)).max(d("1"));
                s = evaluate(&l, s, price).state;
                let stop = trailing_stop(direction, s.peak, d("2")).unwrap();
                match direction {
                    Direction::Long => prop_assert!(stop >= last_stop),
                    Direction::Short => prop_assert!(stop <= last_stop),
                }
                last_stop = stop;
            }
        }

        /// A resolved long always has its stop-loss below the entry and its take-profit above.
        #[test]
        fn a_longs_stop_is_below_its_entry(entry in 1i64..10_000_000, sl in 1i64..9_999, tp in 1i64..100_000) {
            let entry = Decimal::new(entry, 2);
            let p = ExitPlan {
                stop_loss: Some(ExitLevel::Pct(Decimal::new(sl, 2))),
                take_profit: Some(ExitLevel::Pct(Decimal::new(tp, 2))),
                trailing_pct: None,
            };
            let l = Levels::resolve(Direction::Long, entry, &p).unwrap();
            prop_assert!(l.stop_loss.unwrap() < entry);
            prop_assert!(l.take_profit.unwrap() > entry);
        }
    }
}
