//! The exit monitor's persisted state: the lots it tracks, saved on the bus after every change
//! and loaded on start, so a restarted monitor knows its positions, their plans and their
//! trailing peaks before it acts on a new tick. The format is private to the monitor.

use std::time::Duration;

use bus::Bus;
use engine::book::{Closing, Lot};
use engine::exits::{Direction, Levels, TrailState, Trigger};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Where the lots are kept.
pub const KEY: &str = "quantum:monitor:lots";
/// Where the monitor writes, every second, when it last had a price for each held symbol.
pub const FEED_KEY: &str = "quantum:monitor:feed";
/// Kept far longer than any outage; rewritten on every change.
const TTL: Duration = Duration::from_secs(90 * 24 * 3600);

#[derive(Debug, Serialize, Deserialize)]
struct LotRecord {
    id: String,
    symbol: String,
    long: bool,
    qty: Decimal,
    entry: Decimal,
    entry_fee: Decimal,
    take_profit: Option<Decimal>,
    stop_loss: Option<Decimal>,
    trailing_pct: Option<Decimal>,
    peak: Decimal,
    opened_at: i64,
    closing: Option<ClosingRecord>,
    retry_at: Option<i64>,
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
}

fn to_record(lot: &Lot) -> LotRecord {
    LotRecord {
        id: lot.id.clone(),
        symbol: lot.symbol.clone(),
        long: lot.direction == Direction::Long,
        qty: lot.qty,
        entry: lot.entry,
        entry_fee: lot.entry_fee,
        take_profit: lot.levels.take_profit,
        stop_loss: lot.levels.stop_loss,
        trailing_pct: lot.levels.trailing_pct,
        peak: lot.trail.peak,
        opened_at: lot.opened_at,
        closing: lot.closing.as_ref().map(|c| {
            let (level, peak) = match c.trigger {
                Trigger::TakeProfit { level } | Trigger::StopLoss { level } => {
                    (level, Decimal::ZERO)
                }
                Trigger::Trailing { peak, stop } => (stop, peak),
            };
            ClosingRecord {
                intent_id: c.intent_id.clone(),
                marker: c.trigger.marker().into(),
                level,
                peak,
                sent_at: c.sent_at,
                attempt: c.attempt,
            }
        }),
        retry_at: lot.retry_at,
        failed_closes: lot.failed_closes,
    }
}

fn from_record(r: LotRecord) -> Lot {
    let direction = if r.long {
        Direction::Long
    } else {
        Direction::Short
    };
    Lot {
        id: r.id,
        symbol: r.symbol,
        direction,
        qty: r.qty,
        entry: r.entry,
        entry_fee: r.entry_fee,
        levels: Levels {
            direction,
            entry: r.entry,
            take_profit: r.take_profit,
            stop_loss: r.stop_loss,
            trailing_pct: r.trailing_pct,
        },
        trail: TrailState { peak: r.peak },
        opened_at: r.opened_at,
        closing: r.closing.map(|c| Closing {
            intent_id: c.intent_id,
            trigger: match c.marker.as_str() {
                "TP_HIT" => Trigger::TakeProfit { level: c.level },
                "TRAIL_HIT" => Trigger::Trailing {
                    peak: c.peak,
                    stop: c.level,
                },
                _ => Trigger::StopLoss { level: c.level },
            },
            sent_at: c.sent_at,
            attempt: c.attempt,
        }),
        retry_at: r.retry_at,
        failed_closes: r.failed_closes,
    }
}

/// Saves every lot.
pub async fn save<'a>(bus: &Bus, lots: impl Iterator<Item = &'a Lot>) -> Result<(), bus::Error> {
    let records: Vec<LotRecord> = lots.map(to_record).collect();
    let text = serde_json::to_string(&records).expect("lot records serialize");
    bus.progress_set(KEY, &text, TTL).await
}

/// Loads the saved lots; an unreadable record is an error the caller reports, never a silent
/// empty book.
pub async fn load(bus: &Bus) -> Result<Result<Vec<Lot>, String>, bus::Error> {
    let Some(text) = bus.progress_get(KEY).await? else {
        return Ok(Ok(Vec::new()));
    };
    Ok(serde_json::from_str::<Vec<LotRecord>>(&text)
        .map(|records| records.into_iter().map(from_record).collect())
        .map_err(|e| format!("saved monitor state {KEY} is unreadable: {e}")))
}

/// Saves the time of the last mark price per held symbol (ms), for `quantum positions`.
pub async fn save_feed(
    bus: &Bus,
    last_tick: &std::collections::BTreeMap<String, i64>,
) -> Result<(), bus::Error> {
    let text = serde_json::to_string(last_tick).expect("a map of times serializes");
    bus.progress_set(FEED_KEY, &text, Duration::from_secs(24 * 3600))
        .await
}

/// The saved last-price times, empty when the monitor never wrote them.
pub async fn load_feed(bus: &Bus) -> Result<std::collections::BTreeMap<String, i64>, bus::Error> {
    Ok(bus
        .progress_get(FEED_KEY)
        .await?
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lot_survives_the_round_trip() {
        let levels = Levels {
            direction: Direction::Short,
            entry: Decimal::from(100),
            take_profit: Some(Decimal::from(95)),
            stop_loss: Some(Decimal::from(102)),
            trailing_pct: Some(Decimal::ONE),
        };
        let lot = Lot {
            id: "L".into(),
            symbol: "ETHUSDT".into(),
            direction: Direction::Short,
            qty: Decimal::new(5, 2),
            entry: Decimal::from(100),
            entry_fee: Decimal::new(1, 3),
            levels,
            trail: TrailState {
                peak: Decimal::from(97),
            },
            opened_at: 5,
            closing: Some(Closing {
                intent_id: "close-L-1".into(),
                trigger: Trigger::Trailing {
                    peak: Decimal::from(97),
                    stop: Decimal::new(9797, 2),
                },
                sent_at: 9,
                attempt: 1,
            }),
            retry_at: None,
            failed_closes: 0,
        };
        let text = serde_json::to_string(&vec![to_record(&lot)]).unwrap();
        let back: Vec<LotRecord> = serde_json::from_str(&text).unwrap();
        assert_eq!(from_record(back.into_iter().next().unwrap()), lot);
    }
}
