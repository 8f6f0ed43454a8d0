//! The reports of `quantum trades` and `quantum pnl`: pure functions of the journal's trades (no
//! I/O, no clock), and their renderings as a table, CSV or JSON.
//!
//! PnL is the monitor's realized PnL, net of fees (the entry fee's share and the exit fee). A
//! trade whose PnL is unknown (an exit without a price) is counted as a trade but not in the
//! sums, the wins or the win rate, and the report says how many there are. Sums saturate rather
//! than overflow (they add numbers that came from outside). JSON gives decimals as strings with
//! their exact digits.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use model::{Direction, ExitReason, PositionSide};
use rust_decimal::Decimal;
use serde::Serialize;

/// A lot closed or exited, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Trade {
    pub lot_id: String,
    pub symbol: String,
    pub position_side: PositionSide,
    pub direction: Direction,
    pub qty: Decimal,
    pub entry_price: Decimal,
    pub exit_price: Option<Decimal>,
    pub reason: ExitReason,
    /// Net of `fees`.
    pub realized_pnl: Option<Decimal>,
    pub fees: Option<Decimal>,
    pub opened_at: i64,
    /// When its last part left.
    pub closed_at: i64,
    /// How many exits made it (more than 1: partial closes before the last).
    pub parts: u32,
}

/// A lot's exit rows (its parts, then its close), as one trade each, in the order of each
/// lot's last exit. Quantities, PnL and fees add up (PnL is unknown when a part's is); the exit
/// price is the quantity-weighted mean (unknown when a part's is); the reason is the last
/// part's. Sums that overflow leave the value unknown.
pub fn merge_parts(parts: Vec<Trade>) -> Vec<Trade> {
    let mut order: Vec<String> = Vec::new();
    let mut by_lot: BTreeMap<String, Vec<Trade>> = BTreeMap::new();
    for part in parts {
        if !by_lot.contains_key(&part.lot_id) {
            order.push(part.lot_id.clone());
        }
        by_lot.entry(part.lot_id.clone()).or_default().push(part);
    }
    let mut trades: Vec<Trade> = order
        .iter()
        .filter_map(|lot| by_lot.remove(lot))
        .filter_map(|mut parts| {
            parts.sort_by_key(|p| p.closed_at);
            let last = parts.last()?.clone();
            let qty = parts
                .iter()
                .try_fold(Decimal::ZERO, |sum, p| sum.checked_add(p.qty));
            let notional = parts.iter().try_fold(Decimal::ZERO, |sum, p| {
                sum.checked_add(p.exit_price?.checked_mul(p.qty)?)
            });
            let sum = |f: fn(&Trade) -> Option<Decimal>| {
                parts
                    .iter()
                    .try_fold(Decimal::ZERO, |sum, p| sum.checked_add(f(p)?))
            };
            Some(Trade {
                qty: qty.unwrap_or(last.qty),
                exit_price: match (notional, qty) {
                    (Some(n), Some(q)) if !q.is_zero() => n.checked_div(q),
                    _ => None,
                },
                realized_pnl: sum(|p| p.realized_pnl),
                fees: sum(|p| p.fees),
                parts: parts.len() as u32,
                opened_at: parts
                    .iter()
                    .map(|p| p.opened_at)
                    .min()
                    .unwrap_or(last.opened_at),
                ..last
            })
        })
        .collect();
    trades.sort_by_key(|t| t.closed_at);
    trades
}

impl Trade {
    /// How long the lot was held (ms; 0 when the clock says it closed before it opened).
    pub fn held_ms(&self) -> i64 {
        self.closed_at.saturating_sub(self.opened_at).max(0)
    }
}

/// How `quantum pnl` groups trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One line for everything.
    Total,
    Symbol,
    /// The UTC day the trade closed.
    Day,
    Reason,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<GroupBy> {
        match text {
            "total" => Some(GroupBy::Total),
            "symbol" => Some(GroupBy::Symbol),
            "day" => Some(GroupBy::Day),
            "reason" => Some(GroupBy::Reason),
            _ => None,
        }
    }

    fn key(self, trade: &Trade) -> String {
        match self {
            GroupBy::Total => "total".into(),
            GroupBy::Symbol => trade.symbol.clone(),
            GroupBy::Day => utc_day(trade.closed_at),
            GroupBy::Reason => trade.reason.as_str().into(),
        }
    }
}

/// One line of `quantum pnl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The group (a symbol, a day `YYYY-MM-DD`, a reason) or `total`.
    pub group: String,
    pub trades: u64,
    /// Trades with a known PnL above zero.
    pub wins: u64,
    /// Trades whose PnL is unknown (not in the sums).
    pub unknown_pnl: u64,
    /// Sum of the known PnL, net of fees.
    pub net_pnl: Decimal,
    pub fees: Decimal,
    /// Wins over trades with a known PnL, in percent (two decimals); `None` without any.
    pub win_rate_pct: Option<Decimal>,
    /// Mean holding time in ms (`None` without trades).
    pub avg_hold_ms: Option<i64>,
    /// How many trades ended for each reason.
    pub reasons: BTreeMap<String, u64>,
}

impl Summary {
    /// Each reason's share of the trades, in percent (one decimal), largest first.
    pub fn reason_shares(&self) -> Vec<(String, Decimal)> {
        let mut shares: Vec<(String, Decimal)> = self
            .reasons
            .iter()
            .map(|(reason, n)| (reason.clone(), percent(*n, self.trades, 1)))
            .collect();
        shares.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        shares
    }
}

/// Groups `trades` and sums each group; groups in key order, then the total (only when there
/// is more than one group, or when grouping by total).
pub fn summarize(trades: &[Trade], by: GroupBy) -> Vec<Summary> {
    let mut groups: BTreeMap<String, Vec<&Trade>> = BTreeMap::new();
    for trade in trades {
        groups.entry(by.key(trade)).or_default().push(trade);
    }
    let mut lines: Vec<Summary> = groups
        .iter()
        .map(|(group, trades)| summary(group, trades))
        .collect();
    if by == GroupBy::Total || lines.len() != 1 {
        let all: Vec<&Trade> = trades.iter().collect();
        let total = summary("total", &all);
        if by == GroupBy::Total {
            lines = vec![total];
        } else {
            lines.push(total);
        }
    }
    lines
}

fn summary(group: &str, trades: &[&Trade]) -> Summary {
    let mut line = Summary {
        group: group.to_string(),
        trades: trades.len() as u64,
        wins: 0,
        unknown_pnl: 0,
        net_pnl: Decimal::ZERO,
        fees: Decimal::ZERO,
        win_rate_pct: None,
        avg_hold_ms: None,
        reasons: BTreeMap::new(),
    };
    let mut held: i128 = 0;
    for trade in trades {
        match trade.realized_pnl {
            Some(pnl) => {
                line.net_pnl = line.net_pnl.saturating_add(pnl);
                if pnl > Decimal::ZERO {
                    line.wins += 1;
                }
            }
            None => line.unknown_pnl += 1,
        }
        line.fees = line
            .fees
            .saturating_add(trade.fees.unwrap_or(Decimal::ZERO));
        held += i128::from(trade.held_ms());
        *line
            .reasons
            .entry(trade.reason.as_str().to_string())
            .or_default() += 1;
    }
    let known = line.trades - line.unknown_pnl;
    if known > 0 {
        line.win_rate_pct = Some(percent(line.wins, known, 2));
    }
    if !trades.is_empty() {
        line.avg_hold_ms = i64::try_from(held / trades.len() as i128).ok();
    }
    line
}

/// `part` of `whole` in percent, rounded to `dp` decimals (0 for an empty whole).
fn percent(part: u64, whole: u64, dp: u32) -> Decimal {
    if whole == 0 {
        return Decimal::ZERO;
    }
    (Decimal::from(part) * Decimal::ONE_HUNDRED / Decimal::from(whole)).round_dp(dp)
}

/// `YYYY-MM-DD` of a time in ms since the epoch (UTC; proleptic Gregorian).
pub fn utc_day(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{} {:02}:{:02}:{:02}",
        utc_day(ms),
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 → (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since the epoch of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A `--since` value: a duration back from `now_ms` (`1d`, `12h`, `30m`, `2w`), a date
/// (`2026-12-01`, UTC midnight) or an RFC 3339 UTC time (`2026-12-01T08:00:00Z`).
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let bad = || {
        format!("{text:?} is neither a duration like 1d, 12h, 30m, nor a date 2026-12-01 or a time 2026-12-01T08:00:00Z")
    };
    let duration = !text.contains('-');
    if let Some(unit) = text
        .chars()
        .last()
        .filter(|c| duration && c.is_ascii_alphabetic())
    {
        let number: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
        let unit_ms: i64 = match unit {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        let back = number.checked_mul(unit_ms).ok_or_else(bad)?;
        return Ok(now_ms.saturating_sub(back));
    }
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d): (i64, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if let Some(time) = time {
        let time = time.strip_suffix('Z').ok_or_else(|| {
            format!("{text:?}: give the time in UTC, ending with Z (2026-12-01T08:00:00Z)")
        })?;
        let hms: Vec<&str> = time.split(':').collect();
        let [h, mi, s] = hms.as_slice() else {
            return Err(bad());
        };
        let (h, mi): (i64, i64) = (
            h.parse().map_err(|_| bad())?,
            mi.parse().map_err(|_| bad())?,
        );
        let s: f64 = s.parse().map_err(|_| bad())?;
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0.0..61.0).contains(&s) {
            return Err(bad());
        }
        ms += (h * 3600 + mi * 60) * 1000 + (s * 1000.0).round() as i64;
    }
    Ok(ms)
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// A duration in ms as `1h02m`, `3m05s`, `4.2s`.
pub fn human_duration(ms: i64) -> String {
    let secs = ms / 1000;
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn reason_words(reason: ExitReason) -> &'static str {
    match reason {
        ExitReason::TakeProfit => "take-profit",
        ExitReason::StopLoss => "stop-loss",
        ExitReason::TrailingStop => "trailing stop",
        ExitReason::Close => "close",
        ExitReason::Exchange => "on exchange",
        ExitReason::Netted => "netted",
        ExitReason::UnexpectedClose => "unexpected close",
        ExitReason::TakenOver => "taken over",
    }
}

fn text_or<T: ToString>(value: Option<T>, none: &str) -> String {
    value.map_or_else(|| none.to_string(), |v| v.to_string())
}

/// `quantum trades` (and the demo's table).
pub fn render_trades(trades: &[Trade], format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Json => {
            out = serde_json::to_string(trades).expect("trades serialize");
            out.push('\n');
        }
        Format::Csv => {
            out.push_str("lot_id,symbol,position_side,direction,qty,entry_price,exit_price,reason,realized_pnl,fees,opened_at,closed_at,held_ms,parts\n");
            for t in trades {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    csv(&t.lot_id),
                    csv(&t.symbol),
                    t.position_side.as_str(),
                    t.direction.as_str(),
                    t.qty,
                    t.entry_price,
                    text_or(t.exit_price, ""),
                    t.reason.as_str(),
                    text_or(t.realized_pnl, ""),
                    text_or(t.fees, ""),
                    t.opened_at,
                    t.closed_at,
                    t.held_ms(),
                    t.parts
                );
            }
        }
        Format::Table => {
            let _ = writeln!(
                out,
                "{:<19} {:<10} {:<6} {:>12} {:>12} {:>10} {:<14} {:>12} {:>10} {:>8}  lot",
                "closed (UTC)",
                "symbol",
                "side",
                "entry",
                "exit",
                "qty",
                "exit reason",
                "PnL (net)",
                "fees",
                "held"
            );
            for t in trades {
                let side = match t.position_side {
                    PositionSide::Both => t.direction.as_str().to_string(),
                    side => side.as_str().to_ascii_lowercase(),
                };
                let _ = writeln!(
                    out,
                    "{:<19} {:<10} {:<6} {:>12} {:>12} {:>10} {:<14} {:>12} {:>10} {:>8}  {}",
                    utc_time(t.closed_at),
                    t.symbol,
                    side,
                    t.entry_price.to_string(),
                    text_or(t.exit_price, "?"),
                    t.qty.to_string(),
                    reason_words(t.reason),
                    text_or(t.realized_pnl.map(|p| p.round_dp(4)), "?"),
                    text_or(t.fees.map(|p| p.round_dp(4)), "?"),
                    human_duration(t.held_ms()),
                    t.lot_id
                );
            }
            if trades.is_empty() {
                out.push_str("(no trades)\n");
            }
        }
    }
    out
}

/// `quantum pnl`.
pub fn render_summaries(lines: &[Summary], format: Format) -> String {
    let mut out = String::new();
    let shares = |line: &Summary| {
        line.reason_shares()
            .iter()
            .map(|(reason, pct)| format!("{reason} {pct}%"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match format {
        Format::Json => {
            out = serde_json::to_string(lines).expect("summaries serialize");
            out.push('\n');
        }
        Format::Csv => {
            out.push_str(
                "group,trades,wins,unknown_pnl,net_pnl,fees,win_rate_pct,avg_hold_ms,reasons\n",
            );
            for l in lines {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{}",
                    csv(&l.group),
                    l.trades,
                    l.wins,
                    l.unknown_pnl,
                    l.net_pnl,
                    l.fees,
                    text_or(l.win_rate_pct, ""),
                    text_or(l.avg_hold_ms, ""),
                    csv(&shares(l))
                );
            }
        }
        Format::Table => {
            let _ = writeln!(
                out,
                "{:<14} {:>6} {:>8} {:>14} {:>12} {:>8}  exit reasons",
                "group", "trades", "win rate", "PnL (net)", "fees", "avg hold"
            );
            for l in lines {
                let unknown = if l.unknown_pnl > 0 {
                    format!(" ({} without a known PnL)", l.unknown_pnl)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{:<14} {:>6} {:>8} {:>14} {:>12} {:>8}  {}{unknown}",
                    l.group,
                    l.trades,
                    text_or(l.win_rate_pct.map(|p| format!("{}%", p.round_dp(1))), "-"),
                    l.net_pnl.round_dp(4).to_string(),
                    l.fees.round_dp(4).to_string(),
                    text_or(l.avg_hold_ms.map(human_duration), "-"),
                    shares(l)
                );
            }
            if lines.is_empty() {
                out.push_str("(no trades)\n");
            }
        }
    }
    out
}

/// A CSV field, quoted when it needs to be.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn trade(id: &str, symbol: &str, reason: ExitReason, pnl: Option<&str>, held_s: i64) -> Trade {
        let closed_at = 1_764_892_800_000; // 2025-12-05T00:00:00Z
        Trade {
            lot_id: id.into(),
            symbol: symbol.into(),
            position_side: PositionSide::Both,
            direction: Direction::Long,
            qty: d("1"),
            entry_price: d("100"),
            exit_price: pnl.map(|p| d("100") + d(p)),
            reason,
            realized_pnl: pnl.map(d),
            fees: Some(d("0.1")),
            opened_at: closed_at - held_s * 1000,
            closed_at,
            parts: 1,
        }
    }

    #[test]
    fn a_lot_closed_in_parts_is_one_trade() {
        let mut first = trade("a", "AXSUSDT", ExitReason::TakeProfit, Some("1.5"), 60);
        first.qty = d("1");
        first.exit_price = Some(d("102"));
        first.closed_at -= 1_000;
        let mut last = trade("a", "AXSUSDT", ExitReason::TakeProfit, Some("2.5"), 60);
        last.qty = d("3");
        last.exit_price = Some(d("101"));
        let other = trade("b", "ETHUSDT", ExitReason::StopLoss, Some("-1"), 30);
        let trades = merge_parts(vec![first, other, last]);
        assert_eq!(trades.len(), 2);
        let a = trades.iter().find(|t| t.lot_id == "a").unwrap();
        assert_eq!(a.parts, 2);
        assert_eq!(a.qty, d("4"));
        assert_eq!(a.realized_pnl, Some(d("4.0")));
        assert_eq!(a.fees, Some(d("0.2")));
        // (102 × 1 + 101 × 3) / 4
        assert_eq!(a.exit_price, Some(d("101.25")));
        assert_eq!((a.opened_at, a.held_ms()), (a.closed_at - 60_000, 60_000));

        let mut unknown = trade("c", "X", ExitReason::Exchange, None, 1);
        unknown.closed_at -= 5;
        let known = trade("c", "X", ExitReason::Close, Some("1"), 1);
        let c = &merge_parts(vec![unknown, known])[0];
        assert_eq!(
            (c.realized_pnl, c.exit_price, c.reason),
            (None, None, ExitReason::Close)
        );
    }

    #[test]
    fn the_total_is_net_of_fees_with_win_rate_hold_time_and_reason_shares() {
        let trades = [
            trade("a", "AXSUSDT", ExitReason::TakeProfit, Some("2.5"), 60),
            trade("b", "ETHUSDT", ExitReason::StopLoss, Some("-1.25"), 120),
            trade("c", "AXSUSDT", ExitReason::TakeProfit, Some("0.75"), 180),
            trade("d", "SOLUSDT", ExitReason::TrailingStop, Some("0"), 240),
        ];
        let lines = summarize(&trades, GroupBy::Total);
        assert_eq!(lines.len(), 1);
        let total = &lines[0];
        assert_eq!(total.group, "total");
        assert_eq!(total.trades, 4);
        assert_eq!(total.net_pnl, d("2.00"));
        assert_eq!(total.fees, d("0.4"));
        // A trade at exactly zero is not a win.
        assert_eq!(total.wins, 2);
        assert_eq!(total.win_rate_pct, Some(d("50")));
        assert_eq!(total.avg_hold_ms, Some(150_000));
        assert_eq!(
            total.reason_shares(),
            vec![
                ("take_profit".to_string(), d("50")),
                ("stop_loss".to_string(), d("25")),
                ("trailing_stop".to_string(), d("25")),
            ]
        );
    }

    #[test]
    fn groups_come_in_key_order_then_the_total() {
        let trades = [
            trade("a", "ETHUSDT", ExitReason::TakeProfit, Some("2"), 1),
            trade("b", "AXSUSDT", ExitReason::StopLoss, Some("-1"), 1),
            trade("c", "ETHUSDT", ExitReason::StopLoss, Some("-3"), 1),
        ];
        let by_symbol = summarize(&trades, GroupBy::Symbol);
        let groups: Vec<(&str, Decimal, u64)> = by_symbol
            .iter()
            .map(|l| (l.group.as_str(), l.net_pnl, l.trades))
            .collect();
        assert_eq!(
            groups,
            vec![
                ("AXSUSDT", d("-1"), 1),
                ("ETHUSDT", d("-1"), 2),
                ("total", d("-2"), 3)
            ]
        );
        let by_reason = summarize(&trades, GroupBy::Reason);
        assert_eq!(by_reason[0].group, "stop_loss");
        assert_eq!(by_reason[0].net_pnl, d("-4"));
        let by_day = summarize(&trades, GroupBy::Day);
        // One group: no separate total line.
        assert_eq!(by_day.len(), 1);
        assert_eq!(by_day[0].group, "2025-12-05");
    }

    #[test]
    fn an_unknown_pnl_is_counted_but_not_summed_nor_judged() {
        let trades = [
            trade("a", "AXSUSDT", ExitReason::Exchange, None, 1),
            trade("b", "AXSUSDT", ExitReason::TakeProfit, Some("1"), 1),
        ];
        let total = &summarize(&trades, GroupBy::Total)[0];
        assert_eq!((total.trades, total.unknown_pnl, total.wins), (2, 1, 1));
        assert_eq!(total.win_rate_pct, Some(d("100")));
        assert_eq!(total.net_pnl, d("1"));
        assert!(render_summaries(std::slice::from_ref(total), Format::Table)
            .contains("1 without a known PnL"));
    }

    #[test]
    fn no_trades_no_rates() {
        let lines = summarize(&[], GroupBy::Total);
        assert_eq!(lines[0].trades, 0);
        assert_eq!(lines[0].win_rate_pct, None);
        assert_eq!(lines[0].avg_hold_ms, None);
        assert!(
            summarize(&[], GroupBy::Symbol).is_empty()
                || summarize(&[], GroupBy::Symbol)[0].trades == 0
        );
    }

    #[test]
    fn sums_saturate_instead_of_overflowing() {
        let mut a = trade("a", "X", ExitReason::TakeProfit, None, 1);
        a.realized_pnl = Some(Decimal::MAX);
        let b = a.clone();
        assert_eq!(summarize(&[a, b], GroupBy::Total)[0].net_pnl, Decimal::MAX);
    }

    #[test]
    fn csv_and_json_carry_exact_digits() {
        let trades = [trade(
            "a,1",
            "AXSUSDT",
            ExitReason::TakeProfit,
            Some("1.23456789"),
            61,
        )];
        let csv = render_trades(&trades, Format::Csv);
        assert!(
            csv.contains(
                "\"a,1\",AXSUSDT,BOTH,long,1,100,101.23456789,take_profit,1.23456789,0.1,"
            ),
            "{csv}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_trades(&trades, Format::Json)).unwrap();
        assert_eq!(json[0]["realized_pnl"], "1.23456789");
        let table = render_trades(&trades, Format::Table);
        assert!(
            table.contains("take-profit") && table.contains("1m01s"),
            "{table}"
        );
        let pnl = render_summaries(&summarize(&trades, GroupBy::Total), Format::Csv);
        assert!(
            pnl.contains("total,1,1,0,1.23456789,0.1,100,61000,take_profit 100%"),
            "{pnl}"
        );
    }

    #[test]
    fn since_takes_durations_dates_and_utc_times() {
        let now = 1_764_892_800_000; // 2025-12-05T00:00:00Z
        assert_eq!(parse_since("1d", now), Ok(now - 86_400_000));
        assert_eq!(parse_since("30m", now), Ok(now - 1_800_000));
        assert_eq!(parse_since("2025-12-05", now), Ok(now));
        assert_eq!(
            parse_since("2025-12-05T01:02:03Z", now),
            Ok(now + 3_723_000)
        );
        assert_eq!(parse_since("1970-01-01", now), Ok(0));
        assert!(parse_since("2025-12-05T01:02:03+01:00", now).is_err());
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("2025-13-01", now).is_err());
        assert!(parse_since("99999999999999999d", now).is_err());
        assert_eq!(utc_time(now + 3_723_000), "2025-12-05 01:02:03");
        assert_eq!(utc_day(-1), "1969-12-31");
    }
}
