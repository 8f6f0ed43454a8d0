//! The exit monitor's persisted state: one Redis hash (`bus::keys::MONITOR_LOTS`) with a field
//! per lot (`lot:<id>`) and per applied result id (`applied:<intent_id>`), written incrementally
//! (only what an event changed, one atomic `map_apply` per batch) and read on start, so a
//! restarted monitor knows its positions, their plans, trailing peaks and closes in flight before
//! it acts on a tick. A saved record that cannot be read is reported, never silently dropped.
//! The state of the version before (one JSON array under `quantum:monitor:lots`) is read once and
//! moved into the hash. The format is private to the monitor.

use std::collections::BTreeMap;
use std::time::Duration;

use bus::{keys, Bus};
use engine::exits::{Direction, Levels, TrailState, Trigger};
use engine::monitor::{Closing, Lot, Phase};
use model::PositionSide;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Where the version before kept its lots (one JSON array).
pub const LEGACY_KEY: &str = "quantum:monitor:lots";
/// Where the monitor writes, every second, when it last had a price for each held symbol.
pub const FEED_KEY: &str = "quantum:monitor:feed";
/// Where the monitor writes, every second, the alarms raised now (for `quantum positions` and
/// `quantum doctor`).
pub const ALARMS_KEY: &str = "quantum:monitor:alarms";

const LOT: &str = "lot:";
const APPLIED: &str = "applied:";

#[derive(Debug, Serialize, Deserialize)]
struct LotRecord {
    id: String,
    symbol: String,
    /// Hedge mode's side; absent (one-way mode, and every record of the versions before) is
    /// `BOTH`.
    #[serde(default, skip_serializing_if = "is_both")]
    position_side: PositionSide,
    long: bool,
    qty: Decimal,
    entry: Decimal,
    entry_fee: Decimal,
    #[serde(default)]
    has_levels: Option<bool>,
    take_profit: Option<Decimal>,
    stop_loss: Option<Decimal>,
    trailing_pct: Option<Decimal>,
    peak: Decimal,
    opened_at: i64,
    #[serde(default)]
    changed_at: Option<i64>,
    #[serde(default)]
    adopted: bool,
    closing: Option<ClosingRecord>,
    retry_at: Option<i64>,
    #[serde(default)]
    backoff_trigger: Option<TriggerRecord>,
    #[serde(default)]
    attempts: Option<u32>,
    failed_closes: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClosingRecord {
    intent_id: String,
    /// `TP_HIT`, `SL_HIT` or `TRAIL_HIT`.
    marker: String,
    level: Decimal,
    peak: Decimal,
    sent_at: i64,
    attempt: u32,
    #[serde(default)]
    qty: Option<Decimal>,
    #[serde(default)]
    deadline: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TriggerRecord {
    marker: String,
    level: Decimal,
    peak: Decimal,
}

fn trigger_record(t: &Trigger) -> TriggerRecord {
    let (level, peak) = match *t {
        Trigger::TakeProfit { level } | Trigger::StopLoss { level } => (level, Decimal::ZERO),
        Trigger::Trailing { peak, stop } => (stop, peak),
    };
    TriggerRecord {
        marker: t.marker().into(),
        level,
        peak,
    }
}

fn trigger_of(marker: &str, level: Decimal, peak: Decimal) -> Trigger {
    match marker {
        "TP_HIT" => Trigger::TakeProfit { level },
        "TRAIL_HIT" => Trigger::Trailing { peak, stop: level },
        _ => Trigger::StopLoss { level },
    }
}

fn to_record(lot: &Lot) -> LotRecord {
    let levels = lot.levels.as_ref();
    let (closing, retry_at, backoff_trigger) = match &lot.phase {
        Phase::Watching => (None, None, None),
        Phase::Closing(c) => {
            let t = trigger_record(&c.trigger);
            (
                Some(ClosingRecord {
                    intent_id: c.intent_id.clone(),
                    marker: t.marker,
                    level: t.level,
                    peak: t.peak,
                    sent_at: c.sent_at,
                    attempt: c.attempt,
                    qty: Some(c.qty),
                    deadline: Some(c.deadline),
                }),
                None,
                None,
            )
        }
        Phase::Backoff { until, trigger } => (None, Some(*until), Some(trigger_record(trigger))),
    };
    LotRecord {
        id: lot.id.clone(),
        symbol: lot.symbol.clone(),
        position_side: lot.side,
        long: lot.direction == Direction::Long,
        qty: lot.qty,
        entry: lot.entry,
        entry_fee: lot.entry_fee,
        has_levels: Some(levels.is_some()),
        take_profit: levels.and_then(|l| l.take_profit),
        stop_loss: levels.and_then(|l| l.stop_loss),
        trailing_pct: levels.and_then(|l| l.trailing_pct),
        peak: lot.trail.peak,
        opened_at: lot.opened_at,
        changed_at: Some(lot.changed_at),
        adopted: lot.adopted,
        closing,
        retry_at,
        backoff_trigger,
        attempts: Some(lot.attempts),
        failed_closes: lot.failed_closes,
    }
}

fn is_both(side: &PositionSide) -> bool {
    *side == PositionSide::Both
}

/// A close deadline for a record of the version before, which had none.
const LEGACY_DEADLINE_MS: i64 = 20_000;

fn from_record(r: LotRecord) -> Lot {
    let direction = if r.long {
        Direction::Long
    } else {
        Direction::Short
    };
    let phase = match (r.closing.as_ref(), r.retry_at) {
        (Some(c), _) => Phase::Closing(Closing {
            intent_id: c.intent_id.clone(),
            trigger: trigger_of(&c.marker, c.level, c.peak),
            qty: c.qty.unwrap_or(r.qty),
            sent_at: c.sent_at,
            deadline: c
                .deadline
                .unwrap_or(c.sent_at.saturating_add(LEGACY_DEADLINE_MS)),
            attempt: c.attempt,
        }),
        (None, Some(until)) => Phase::Backoff {
            until,
            trigger: r
                .backoff_trigger
                .as_ref()
                .map(|t| trigger_of(&t.marker, t.level, t.peak))
                .unwrap_or(Trigger::StopLoss {
                    level: r.stop_loss.unwrap_or(r.entry),
                }),
        },
        (None, None) => Phase::Watching,
    };
    // The version before numbered attempts by failures; its ids were `close-<id>-<attempt>`.
    let attempts = r
        .attempts
        .unwrap_or(r.closing.as_ref().map_or(r.failed_closes, |c| c.attempt));
    Lot {
        levels: r.has_levels.unwrap_or(true).then_some(Levels {
            direction,
            entry: r.entry,
            take_profit: r.take_profit,
            stop_loss: r.stop_loss,
            trailing_pct: r.trailing_pct,
        }),
        id: r.id,
        symbol: r.symbol,
        side: r.position_side,
        direction,
        qty: r.qty,
        entry: r.entry,
        entry_fee: r.entry_fee,
        trail: TrailState { peak: r.peak },
        opened_at: r.opened_at,
        changed_at: r.changed_at.unwrap_or(r.opened_at),
        adopted: r.adopted,
        phase,
        attempts,
        failed_closes: r.failed_closes,
    }
}

/// One batch of changes, as the core's `Persist` commands say them: the field's new value, or
/// `None` to delete it. Lots are kept as values and serialized only when written (by the
/// writer task, off the monitor's loop).
#[derive(Debug, Default, Clone)]
pub struct Changes {
    lots: BTreeMap<String, Option<Lot>>,
    applied: BTreeMap<String, Option<i64>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.lots.is_empty() && self.applied.is_empty()
    }

    /// Adds a `Persist` command's content; later changes of the same field win.
    pub fn add(
        &mut self,
        lots: Vec<Lot>,
        removed: Vec<String>,
        applied: Vec<(String, i64)>,
        forgotten: Vec<String>,
    ) {
        for lot in lots {
            self.lots.insert(lot.id.clone(), Some(lot));
        }
        for id in removed {
            self.lots.insert(id, None);
        }
        for (id, at) in applied {
            self.applied.insert(id, Some(at));
        }
        for id in forgotten {
            self.applied.insert(id, None);
        }
    }

    /// Adds a later batch; its changes win.
    pub fn merge(&mut self, later: Changes) {
        self.lots.extend(later.lots);
        self.applied.extend(later.applied);
    }

    /// Writes the batch in one atomic step.
    pub async fn write(&self, bus: &Bus) -> Result<(), bus::Error> {
        let mut put: Vec<(String, String)> = Vec::new();
        let mut delete: Vec<String> = Vec::new();
        for (id, lot) in &self.lots {
            let field = format!("{LOT}{id}");
            match lot {
                Some(lot) => put.push((
                    field,
                    serde_json::to_string(&to_record(lot)).expect("lot records serialize"),
                )),
                None => delete.push(field),
            }
        }
        for (id, at) in &self.applied {
            let field = format!("{APPLIED}{id}");
            match at {
                Some(at) => put.push((field, at.to_string())),
                None => delete.push(field),
            }
        }
        bus.map_apply(keys::MONITOR_LOTS, &put, &delete).await
    }
}

/// What was saved: the lots, the applied result ids, and the records that could not be read.
#[derive(Debug, Default)]
pub struct Saved {
    pub lots: Vec<Lot>,
    pub applied: Vec<(String, i64)>,
    pub unreadable: Vec<String>,
}

/// Loads the saved state, moving the version before's state into the hash first.
pub async fn load(bus: &Bus) -> Result<Saved, bus::Error> {
    if let Some(text) = bus.progress_get(LEGACY_KEY).await? {
        let mut changes = Changes::default();
        match serde_json::from_str::<Vec<LotRecord>>(&text) {
            Ok(records) => {
                let lots: Vec<Lot> = records.into_iter().map(from_record).collect();
                changes.add(lots, Vec::new(), Vec::new(), Vec::new());
                changes.write(bus).await?;
                bus.progress_set(LEGACY_KEY, "[]", Duration::from_secs(60))
                    .await?;
            }
            Err(e) => {
                tracing::error!("saved monitor state {LEGACY_KEY} (the version before's format) is unreadable: {e}; rebuilding from the exchange's positions")
            }
        }
    }
    let mut saved = Saved::default();
    for (field, value) in bus.map_all(keys::MONITOR_LOTS).await? {
        if let Some(id) = field.strip_prefix(LOT) {
            match serde_json::from_str::<LotRecord>(&value) {
                Ok(r) => saved.lots.push(from_record(r)),
                Err(e) => saved.unreadable.push(format!("lot {id}: {e}")),
            }
        } else if let Some(id) = field.strip_prefix(APPLIED) {
            match value.parse::<i64>() {
                Ok(at) => saved.applied.push((id.to_string(), at)),
                Err(e) => saved.unreadable.push(format!("applied {id}: {e}")),
            }
        } else {
            saved.unreadable.push(format!("unknown field {field}"));
        }
    }
    Ok(saved)
}

/// The saved lots alone (for `quantum positions`).
pub async fn load_lots(bus: &Bus) -> Result<Vec<Lot>, bus::Error> {
    Ok(load(bus).await?.lots)
}

/// Saves the time of the last mark price per held symbol (ms), for `quantum positions`.
pub async fn save_feed(bus: &Bus, last_tick: &BTreeMap<String, i64>) -> Result<(), bus::Error> {
    let text = serde_json::to_string(last_tick).expect("a map of times serializes");
    bus.progress_set(FEED_KEY, &text, Duration::from_secs(24 * 3600))
        .await
}

/// One alarm raised now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// Empty for the whole account.
    pub symbol: String,
    pub kind: String,
    pub message: String,
}

/// The alarms raised now, and when the monitor wrote them (ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedAlarms {
    pub at: i64,
    pub alarms: Vec<AlarmRecord>,
}

/// Saves the alarms raised now; kept a day (a monitor that stopped writing is itself news).
pub async fn save_alarms(bus: &Bus, alarms: &SavedAlarms) -> Result<(), bus::Error> {
    let text = serde_json::to_string(alarms).expect("alarms serialize");
    bus.progress_set(ALARMS_KEY, &text, Duration::from_secs(24 * 3600))
        .await
}

/// The alarms the monitor last wrote; `None` when it never did (or they expired).
pub async fn load_alarms(bus: &Bus) -> Result<Option<SavedAlarms>, bus::Error> {
    Ok(bus
        .progress_get(ALARMS_KEY)
        .await?
        .and_then(|t| serde_json::from_str(&t).ok()))
}

/// The saved last-price times, empty when the monitor never wrote them.
pub async fn load_feed(bus: &Bus) -> Result<BTreeMap<String, i64>, bus::Error> {
    Ok(bus
        .progress_get(FEED_KEY)
        .await?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(phase: Phase) -> Lot {
        let levels = Levels {
            direction: Direction::Short,
            entry: Decimal::from(100),
            take_profit: Some(Decimal::from(95)),
            stop_loss: Some(Decimal::from(102)),
            trailing_pct: Some(Decimal::ONE),
        };
        Lot {
            id: "L".into(),
            symbol: "ETHUSDT".into(),
            side: PositionSide::Short,
            direction: Direction::Short,
            qty: Decimal::new(5, 2),
            entry: Decimal::from(100),
            entry_fee: Decimal::new(1, 3),
            levels: Some(levels),
            trail: TrailState {
                peak: Decimal::from(97),
            },
            opened_at: 5,
            changed_at: 6,
            adopted: false,
            phase,
            attempts: 1,
            failed_closes: 0,
        }
    }

    #[test]
    fn a_lot_survives_the_round_trip_in_every_phase() {
        let trigger = Trigger::Trailing {
            peak: Decimal::from(97),
            stop: Decimal::new(9797, 2),
        };
        for phase in [
            Phase::Watching,
            Phase::Closing(Closing {
                intent_id: "close-L-1".into(),
                trigger,
                qty: Decimal::new(5, 2),
                sent_at: 9,
                deadline: 20_009,
                attempt: 1,
            }),
            Phase::Backoff { until: 99, trigger },
        ] {
            let lot = lot(phase);
            let text = serde_json::to_string(&to_record(&lot)).unwrap();
            let back: LotRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(from_record(back), lot);
        }
    }

    #[test]
    fn a_record_of_the_version_before_is_read_with_its_close_in_flight() {
        let old = r#"{"id":"t2","symbol":"AXSUSDT","long":true,"qty":"12","entry":"6.25","entry_fee":"0","take_profit":"6.4375","stop_loss":"6.125","trailing_pct":null,"peak":"6.25","opened_at":1,"closing":{"intent_id":"close-t2-1","marker":"SL_HIT","level":"6.125","peak":"0","sent_at":10,"attempt":1},"retry_at":null,"failed_closes":0}"#;
        let lot = from_record(serde_json::from_str(old).unwrap());
        assert_eq!(lot.attempts, 1, "the next close gets a new id");
        assert!(
            matches!(lot.phase, Phase::Closing(ref c) if c.deadline == 20_010),
            "{:?}",
            lot.phase
        );
    }
}
