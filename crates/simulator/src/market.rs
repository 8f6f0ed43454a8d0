//! Prices and the order book of each symbol: a deterministic seeded random walk (or a CSV replay),
//! a pin set through the control API, and a synthetic book around the last price that market
//! orders walk through, so large orders pay slippage and a thin book leaves a remainder.
//!
//! It also owns what the market as a whole does: the book's update id (it moves whenever the book
//! changes, which is what diff depth streams and REST snapshots are numbered by, see
//! [`diff_side`]), the public trade tape (the account's fills and a seeded synthetic flow of other
//! traders' trades, [`Market::flow`]), and the candles built from both.

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;

use rust_decimal::Decimal;

use crate::symbols::{SymbolSpec, BOOK_LEVELS};

/// SplitMix64: a tiny, well-known generator. We need determinism per seed, not cryptographic
/// quality, and a hand-rolled one keeps `rand` out of the dependency tree.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A step in [-1, 1] with 4 decimal places, built from integers so no float touches a price.
    fn unit_step(&mut self) -> Decimal {
        let n = (self.next_u64() % 20_001) as i64 - 10_000;
        Decimal::new(n, 4)
    }
}

/// Where a symbol's next price comes from.
#[derive(Debug, Clone)]
pub(crate) enum PriceSource {
    /// Multiplicative random walk: each tick moves by up to `volatility` (a fraction) either way.
    Walk {
        rng: SplitMix64,
        volatility: Decimal,
    },
    /// Rows `(offset_ms_from_start, price)` replayed at their timestamps; the last price holds.
    Replay {
        rows: Vec<(i64, Decimal)>,
        next: usize,
        started_at: Option<i64>,
    },
}

/// Price state of one symbol.
#[derive(Debug, Clone)]
pub(crate) struct Market {
    pub(crate) spec: SymbolSpec,
    pub(crate) last: Decimal,
    pub(crate) mark: Decimal,
    pub(crate) index: Decimal,
    /// Set by `POST /sim/v1/price`: the walk pauses and the price stays here until released.
    pub(crate) pinned: bool,
    pub(crate) source: PriceSource,
    pub(crate) funding_rate: Decimal,
    /// The book's update id (REST depth `lastUpdateId`, depth streams `u`, bookTicker `u`). It
    /// moves by one each time the book changes, and only then, so a snapshot's id names exactly
    /// the book it shows.
    pub(crate) book_update_id: i64,
    /// When the book last changed (a depth event's `T`).
    pub(crate) book_changed_at: i64,
    /// The last aggregate trade id handed out (aggTrade `a`).
    pub(crate) agg_trade_id: i64,
    /// The next public trade id. Ids are per symbol, as on Binance; the account's own fills take
    /// theirs from here too, so `userTrades` ids are ids of the public tape.
    next_trade_id: i64,
    /// Per-level notional override from the `book_level_notional` fault knob.
    level_notional_override: Option<Decimal>,
    /// The generator of the synthetic market flow. It is separate from the walk's so that the
    /// flow left every seed's price path as it was, and the account's fills draw nothing from it:
    /// the same seed and the same ticks give the same flow.
    flow_rng: SplitMix64,
    /// The last [`TAPE_LEN`] public trades, oldest first, for `trades`, `historicalTrades` and
    /// `aggTrades`. Trades leave in whole aggregates, so every aggregate here is complete.
    pub(crate) tape: VecDeque<PublicTrade>,
    /// One-minute candles since start (newest last, at most [`MAX_BARS`]), for klines and the
    /// 24-hour ticker.
    pub(crate) bars: VecDeque<Bar>,
}

/// Public trades kept per symbol: the largest page `GET /fapi/v1/trades` serves. A bound, because
/// the flow never stops and a simulator with hundreds of symbols must stay small.
pub(crate) const TAPE_LEN: usize = 1000;

/// One trade on the public tape (the account's or the synthetic flow's).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PublicTrade {
    pub(crate) id: i64,
    /// The aggregate trade it belongs to.
    pub(crate) agg_id: i64,
    pub(crate) price: Decimal,
    pub(crate) qty: Decimal,
    pub(crate) time: i64,
    /// The buyer was the maker, so the taker sold (`isBuyerMaker`, aggTrade `m`).
    pub(crate) buyer_maker: bool,
}

/// Consecutive trades of one taking side at one price and time, as aggTrade reports them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AggTrade {
    pub(crate) id: i64,
    pub(crate) price: Decimal,
    pub(crate) qty: Decimal,
    pub(crate) first_id: i64,
    pub(crate) last_id: i64,
    pub(crate) time: i64,
    pub(crate) buyer_maker: bool,
}

/// Candles kept per symbol: a little over a day of minutes.
pub(crate) const MAX_BARS: usize = 1500;
const MINUTE_MS: i64 = 60_000;

/// One one-minute candle.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bar {
    pub(crate) open_time: i64,
    pub(crate) open: Decimal,
    pub(crate) high: Decimal,
    pub(crate) low: Decimal,
    pub(crate) close: Decimal,
    pub(crate) volume: Decimal,
    pub(crate) quote_volume: Decimal,
    pub(crate) trades: u64,
    pub(crate) taker_buy_volume: Decimal,
    pub(crate) taker_buy_quote: Decimal,
    /// First and last public trade id in the candle, -1 when it has no trade (the 24-hour
    /// ticker's `firstId`/`lastId`).
    pub(crate) first_trade_id: i64,
    pub(crate) last_trade_id: i64,
    /// The mark price's candle (mark and index price klines), and how many price updates it saw.
    pub(crate) mark_open: Decimal,
    pub(crate) mark_high: Decimal,
    pub(crate) mark_low: Decimal,
    pub(crate) mark_close: Decimal,
    pub(crate) mark_updates: u64,
}

/// One level of the synthetic book.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Level {
    pub(crate) price: Decimal,
    pub(crate) qty: Decimal,
}

/// A slice of a taker order matched at one level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slice {
    pub(crate) price: Decimal,
    pub(crate) qty: Decimal,
}

impl Market {
    pub(crate) fn new(spec: SymbolSpec, seed: u64) -> Market {
        // Each symbol gets its own stream from the seed, so adding a symbol does not change the
        // prices of the others.
        let mut mix = seed;
        for byte in spec.symbol.bytes() {
            mix = mix.rotate_left(5) ^ u64::from(byte);
        }
        let price = spec.start_price;
        Market {
            last: price,
            mark: price,
            index: price,
            pinned: false,
            source: PriceSource::Walk {
                rng: SplitMix64::new(mix),
                volatility: Decimal::new(5, 4),
            },
            funding_rate: Decimal::new(1, 4),
            book_update_id: 1_000_000,
            book_changed_at: 0,
            agg_trade_id: 5_000_000,
            next_trade_id: 700_000_001,
            level_notional_override: None,
            flow_rng: SplitMix64::new(mix ^ 0xF10E_F10E_F10E_F10E),
            tape: VecDeque::new(),
            bars: VecDeque::new(),
            spec,
        }
    }

    /// Advances the price one tick. Returns true when the price changed.
    pub(crate) fn tick(&mut self, now_ms: i64) -> bool {
        if self.pinned {
            return false;
        }
        let before = self.last;
        match &mut self.source {
            PriceSource::Walk { rng, volatility } => {
                let change = rng.unit_step() * *volatility;
                let next = self.last * (Decimal::ONE + change);
                let next = self.spec.round_price_down(next).max(self.spec.tick_size);
                self.set_price(next, now_ms);
            }
            PriceSource::Replay {
                rows,
                next,
                started_at,
            } => {
                let start = *started_at.get_or_insert(now_ms);
                let mut price = None;
                while *next < rows.len() && rows[*next].0 <= now_ms - start {
                    price = Some(rows[*next].1);
                    *next += 1;
                }
                if let Some(price) = price {
                    let price = self.spec.round_price_down(price).max(self.spec.tick_size);
                    self.set_price(price, now_ms);
                }
            }
        }
        self.last != before
    }

    /// Sets last, mark and index price together (the simulator has no basis between them).
    pub(crate) fn set_price(&mut self, price: Decimal, now: i64) {
        let before = self.book_key();
        self.last = price;
        self.mark = price;
        self.index = price;
        self.book_touched(before, now);
    }

    /// Sets the `book_level_notional` override (None: the symbol's own figure).
    pub(crate) fn set_level_notional(&mut self, notional: Option<Decimal>, now: i64) {
        if self.level_notional_override == notional {
            return;
        }
        let before = self.book_key();
        self.level_notional_override = notional;
        self.book_touched(before, now);
    }

    /// What the synthetic book is a function of: best bid, best ask, quantity per level and the
    /// gap between levels. Two books are equal exactly when their keys are (a different best
    /// price, quantity or gap shows in the first two levels), so comparing keys is how a change
    /// is detected without building the book.
    fn book_key(&self) -> (Decimal, Decimal, Decimal, Decimal) {
        (
            self.best_bid(),
            self.best_ask(),
            self.level_qty(),
            self.level_gap(),
        )
    }

    /// Moves the update id when the book differs from the one `before` describes.
    fn book_touched(&mut self, before: (Decimal, Decimal, Decimal, Decimal), now: i64) {
        if self.book_key() != before {
            self.book_update_id += 1;
            self.book_changed_at = now;
        }
    }

    /// Puts one trade on the tape, in aggregate `agg_id`, and in the candle of its minute.
    fn print(&mut self, agg_id: i64, price: Decimal, qty: Decimal, buyer_maker: bool, now: i64) {
        let trade = PublicTrade {
            id: self.next_trade_id,
            agg_id,
            price,
            qty,
            time: now,
            buyer_maker,
        };
        self.next_trade_id += 1;
        self.record(now, Some(&trade));
        self.tape.push_back(trade);
        while self.tape.len() > TAPE_LEN {
            // Whole aggregates leave together, so aggTrades never shows one with its first
            // trades missing.
            let Some(oldest) = self.tape.front().map(|t| t.agg_id) else {
                break;
            };
            while self.tape.front().is_some_and(|t| t.agg_id == oldest) {
                self.tape.pop_front();
            }
        }
    }

    /// One fill of the account's orders, on the public tape as a trade of its own aggregate (a
    /// fill is one order against one book level). Returns the aggregate; its `first_id` is the
    /// trade's id.
    pub(crate) fn print_fill(
        &mut self,
        price: Decimal,
        qty: Decimal,
        taker_buys: bool,
        now: i64,
    ) -> AggTrade {
        self.agg_trade_id += 1;
        let agg_id = self.agg_trade_id;
        self.print(agg_id, price, qty, !taker_buys, now);
        self.aggregate_of_last()
    }

    /// The aggregate the newest trade belongs to.
    fn aggregate_of_last(&self) -> AggTrade {
        let mut trades = self.tape.iter().rev();
        let last = trades.next().expect("a trade was just printed");
        let mut agg = AggTrade {
            id: last.agg_id,
            price: last.price,
            qty: last.qty,
            first_id: last.id,
            last_id: last.id,
            time: last.time,
            buyer_maker: last.buyer_maker,
        };
        for t in trades.take_while(|t| t.agg_id == agg.id) {
            agg.qty += t.qty;
            agg.first_id = t.id;
        }
        agg
    }

    /// Other traders' trading during one tick, from the seeded flow generator: up to three taker
    /// orders, each matched against one to three maker orders, every trade at the last price
    /// (the simulator's book is a spread around it, so printing there keeps the candles, the
    /// ticker and the tape on one price) and of 1 to 25 % of a book level. Takers on the same
    /// side in one tick trade at one price and time, so, as Binance aggregates them, they make
    /// one aggregate trade: at most two per tick, buyers' first. A pinned symbol's flow pauses
    /// with its price. None of this touches the book or anyone's orders.
    pub(crate) fn flow(&mut self, now: i64) -> Vec<AggTrade> {
        if self.pinned {
            return Vec::new();
        }
        let level = self.level_qty();
        let mut buys = Vec::new();
        let mut sells = Vec::new();
        for _ in 0..self.flow_rng.next_u64() % 4 {
            let taker_buys = self.flow_rng.next_u64().is_multiple_of(2);
            for _ in 0..1 + self.flow_rng.next_u64() % 3 {
                let percent = Decimal::from(1 + self.flow_rng.next_u64() % 25);
                // Checked: the level quantity comes from a fault knob, which may be huge.
                let Some(qty) = level.checked_mul(percent) else {
                    continue;
                };
                let qty = self
                    .spec
                    .round_qty_down(qty / Decimal::ONE_HUNDRED)
                    .max(self.spec.min_qty)
                    .max(self.spec.step_size);
                if taker_buys {
                    buys.push(qty);
                } else {
                    sells.push(qty);
                }
            }
        }
        let mut out = Vec::new();
        for (fills, taker_buys) in [(buys, true), (sells, false)] {
            if fills.is_empty() {
                continue;
            }
            self.agg_trade_id += 1;
            let agg_id = self.agg_trade_id;
            for qty in fills {
                self.print(agg_id, self.last, qty, !taker_buys, now);
            }
            out.push(self.aggregate_of_last());
        }
        out
    }

    /// The tape as aggregate trades, oldest first.
    pub(crate) fn agg_trades(&self) -> Vec<AggTrade> {
        let mut out: Vec<AggTrade> = Vec::new();
        for t in &self.tape {
            match out.last_mut() {
                Some(agg) if agg.id == t.agg_id => {
                    agg.qty += t.qty;
                    agg.last_id = t.id;
                }
                _ => out.push(AggTrade {
                    id: t.agg_id,
                    price: t.price,
                    qty: t.qty,
                    first_id: t.id,
                    last_id: t.id,
                    time: t.time,
                    buyer_maker: t.buyer_maker,
                }),
            }
        }
        out
    }

    /// Records the current price (and a trade, when `traded` is given) in the candle of `now`'s
    /// minute.
    pub(crate) fn record(&mut self, now: i64, traded: Option<&PublicTrade>) {
        let minute = now - now.rem_euclid(MINUTE_MS);
        let price = traded.map_or(self.last, |t| t.price);
        if self.bars.back().is_none_or(|b| b.open_time < minute) {
            let open = self.bars.back().map_or(price, |b| b.close);
            let mark_open = self.bars.back().map_or(self.mark, |b| b.mark_close);
            self.bars.push_back(Bar {
                open_time: minute,
                open,
                high: open.max(price),
                low: open.min(price),
                close: price,
                volume: Decimal::ZERO,
                quote_volume: Decimal::ZERO,
                trades: 0,
                taker_buy_volume: Decimal::ZERO,
                taker_buy_quote: Decimal::ZERO,
                first_trade_id: -1,
                last_trade_id: -1,
                mark_open,
                mark_high: mark_open,
                mark_low: mark_open,
                mark_close: mark_open,
                mark_updates: 0,
            });
            if self.bars.len() > MAX_BARS {
                self.bars.pop_front();
            }
        }
        let bar = self.bars.back_mut().expect("a bar exists");
        bar.high = bar.high.max(price);
        bar.low = bar.low.min(price);
        bar.close = price;
        bar.mark_high = bar.mark_high.max(self.mark);
        bar.mark_low = bar.mark_low.min(self.mark);
        bar.mark_close = self.mark;
        if traded.is_none() {
            bar.mark_updates += 1;
        }
        if let Some(trade) = traded {
            let quote = trade.price * trade.qty;
            bar.volume += trade.qty;
            bar.quote_volume += quote;
            bar.trades += 1;
            if !trade.buyer_maker {
                bar.taker_buy_volume += trade.qty;
                bar.taker_buy_quote += quote;
            }
            if bar.first_trade_id < 0 {
                bar.first_trade_id = trade.id;
            }
            bar.last_trade_id = trade.id;
        }
    }

    /// Candles of `interval_ms` (a multiple of a minute) built from the one-minute candles, oldest
    /// first, the last `limit` of them.
    pub(crate) fn candles(&self, interval_ms: i64, limit: usize) -> Vec<Bar> {
        let mut out: Vec<Bar> = Vec::new();
        for bar in &self.bars {
            let start = bar.open_time - bar.open_time.rem_euclid(interval_ms);
            match out.last_mut() {
                Some(last) if last.open_time == start => {
                    last.high = last.high.max(bar.high);
                    last.low = last.low.min(bar.low);
                    last.close = bar.close;
                    last.volume += bar.volume;
                    last.quote_volume += bar.quote_volume;
                    last.trades += bar.trades;
                    last.taker_buy_volume += bar.taker_buy_volume;
                    last.taker_buy_quote += bar.taker_buy_quote;
                    if last.first_trade_id < 0 {
                        last.first_trade_id = bar.first_trade_id;
                    }
                    if bar.last_trade_id >= 0 {
                        last.last_trade_id = bar.last_trade_id;
                    }
                    last.mark_high = last.mark_high.max(bar.mark_high);
                    last.mark_low = last.mark_low.min(bar.mark_low);
                    last.mark_close = bar.mark_close;
                    last.mark_updates += bar.mark_updates;
                }
                _ => out.push(Bar {
                    open_time: start,
                    ..bar.clone()
                }),
            }
        }
        let skip = out.len().saturating_sub(limit);
        out.split_off(skip)
    }

    fn level_qty(&self) -> Decimal {
        let notional = self
            .level_notional_override
            .unwrap_or(self.spec.level_notional);
        let qty = self.spec.round_qty_down(notional / self.last);
        qty.max(self.spec.step_size)
    }

    fn level_gap(&self) -> Decimal {
        // About one basis point between levels, never less than one tick.
        let gap = self.spec.round_price_down(self.last * Decimal::new(1, 4));
        gap.max(self.spec.tick_size)
    }

    pub(crate) fn best_bid(&self) -> Decimal {
        self.spec
            .round_price_down(self.last - self.spec.tick_size / Decimal::TWO)
            .max(self.spec.tick_size)
    }

    pub(crate) fn best_ask(&self) -> Decimal {
        self.spec
            .round_price_up(self.last + self.spec.tick_size / Decimal::TWO)
    }

    /// The book's `levels` best levels on each side: (bids high→low, asks low→high).
    pub(crate) fn book(&self, levels: usize) -> (Vec<Level>, Vec<Level>) {
        let qty = self.level_qty();
        let gap = self.level_gap();
        let mut bids = Vec::new();
        let mut asks = Vec::new();
        for i in 0..levels.min(BOOK_LEVELS) {
            let offset = gap * Decimal::from(i as u64);
            let bid = self.best_bid() - offset;
            if bid > Decimal::ZERO {
                bids.push(Level { price: bid, qty });
            }
            asks.push(Level {
                price: self.best_ask() + offset,
                qty,
            });
        }
        (bids, asks)
    }

    /// Walks the opposite side of the book for `qty` (a buy takes asks). Stops at `limit` when
    /// given. Returns the slices and the quantity the book could not absorb.
    pub(crate) fn walk(
        &self,
        buy: bool,
        qty: Decimal,
        limit: Option<Decimal>,
    ) -> (Vec<Slice>, Decimal) {
        let (bids, asks) = self.book(BOOK_LEVELS);
        let levels = if buy { asks } else { bids };
        let mut remaining = qty;
        let mut slices = Vec::new();
        for level in levels {
            if remaining <= Decimal::ZERO {
                break;
            }
            if let Some(limit) = limit {
                if (buy && level.price > limit) || (!buy && level.price < limit) {
                    break;
                }
            }
            let take = remaining.min(level.qty);
            slices.push(Slice {
                price: level.price,
                qty: take,
            });
            remaining -= take;
        }
        (slices, remaining)
    }
}

/// What changed on one side of the book from `old` to `new`, as a diff depth event says it: every
/// level of `new` that is not in `old` with the same quantity, with its quantity, then every price
/// of `old` that `new` no longer has, with quantity zero ("remove this level"). Quantities are
/// absolute, so applying the result to `old` gives `new`, and applying it to `new` changes
/// nothing.
pub(crate) fn diff_side(old: &[Level], new: &[Level]) -> Vec<Level> {
    let mut out: Vec<Level> = new
        .iter()
        .filter(|level| !old.contains(level))
        .copied()
        .collect();
    out.extend(
        old.iter()
            .filter(|level| !new.iter().any(|n| n.price == level.price))
            .map(|level| Level {
                price: level.price,
                qty: Decimal::ZERO,
            }),
    );
    out
}

/// Parses a replay CSV: rows `timestamp,price` (with `symbol` given) or `timestamp,symbol,price`.
/// A header row is allowed. Timestamps are milliseconds; they are replayed relative to the first.
pub(crate) fn parse_price_csv(
    text: &str,
    symbol: Option<&str>,
) -> Result<BTreeMap<String, Vec<(i64, Decimal)>>, String> {
    let mut out: BTreeMap<String, Vec<(i64, Decimal)>> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (ts, sym, price) = match (fields.as_slice(), symbol) {
            ([ts, price], Some(symbol)) => (*ts, symbol.to_string(), *price),
            ([ts, sym, price], None) => (*ts, sym.to_ascii_uppercase(), *price),
            ([_, _], None) => {
                return Err(format!(
                    "line {}: two columns need the symbol given as SYMBOL=PATH",
                    number + 1
                ))
            }
            _ => {
                return Err(format!(
                    "line {}: expected timestamp,price or timestamp,symbol,price",
                    number + 1
                ))
            }
        };
        let Ok(ts) = ts.parse::<i64>() else {
            if number == 0 {
                continue; // header row
            }
            return Err(format!(
                "line {}: timestamp {ts:?} is not an integer (ms)",
                number + 1
            ));
        };
        let price = Decimal::from_str(price)
            .ok()
            .filter(|p| *p > Decimal::ZERO)
            .ok_or_else(|| {
                format!(
                    "line {}: price {price:?} is not a positive decimal",
                    number + 1
                )
            })?;
        out.entry(sym).or_default().push((ts, price));
    }
    for rows in out.values_mut() {
        rows.sort_by_key(|(ts, _)| *ts);
        let first = rows.first().map(|(ts, _)| *ts).unwrap_or(0);
        for row in rows.iter_mut() {
            row.0 -= first;
        }
    }
    if out.is_empty() {
        return Err("no price rows".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::builtin;

    fn btc() -> Market {
        let spec = builtin()
            .into_iter()
            .find(|s| s.symbol == "BTCUSDT")
            .unwrap();
        Market::new(spec, 7)
    }

    #[test]
    fn the_same_seed_gives_the_same_walk() {
        let (mut a, mut b) = (btc(), btc());
        for t in 0..100 {
            a.tick(t);
            b.tick(t);
            assert_eq!(a.last, b.last);
        }
        assert_ne!(a.last, btc().last, "a hundred ticks should move the price");
    }

    #[test]
    fn a_pinned_price_does_not_move() {
        let mut m = btc();
        m.set_price(Decimal::from(60_000), 0);
        m.pinned = true;
        assert!(!m.tick(1));
        assert_eq!(m.mark, Decimal::from(60_000));
    }

    #[test]
    fn a_large_buy_walks_up_the_book_and_a_thin_book_leaves_a_remainder() {
        let mut m = btc();
        let (slices, rest) = m.walk(true, Decimal::new(10, 0), None);
        assert_eq!(rest, Decimal::ZERO);
        assert!(slices.len() > 1);
        assert!(slices.windows(2).all(|w| w[0].price < w[1].price));
        m.level_notional_override = Some(Decimal::from(1000));
        let (_, rest) = m.walk(true, Decimal::new(10, 0), None);
        assert!(rest > Decimal::ZERO);
    }

    #[test]
    fn candles_aggregate_minutes_into_longer_intervals() {
        let mut m = btc();
        // A multiple of five minutes, so the six one-minute candles split 5 + 1.
        let t0 = 1_699_999_800_000;
        for (i, price) in [100, 105, 95, 102, 101, 110].iter().enumerate() {
            let t = t0 + i as i64 * 60_000;
            m.set_price(Decimal::from(*price), t);
            m.print_fill(Decimal::from(*price), Decimal::ONE, true, t);
        }
        let five = m.candles(300_000, 10);
        assert_eq!(five.len(), 2);
        assert_eq!(
            (five[0].open, five[0].high, five[0].low, five[0].close),
            (100.into(), 105.into(), 95.into(), 101.into())
        );
        assert_eq!(five[0].trades, 5);
        assert_eq!(
            five[1].open,
            Decimal::from(101),
            "a candle opens at the previous close"
        );
        assert_eq!(m.candles(60_000, 2).len(), 2, "limit keeps the newest");
    }

    fn level(price: i64, qty: i64) -> Level {
        Level {
            price: Decimal::from(price),
            qty: Decimal::from(qty),
        }
    }

    /// Applies one side's diff to a map of price to quantity, as a client keeping a book does.
    fn apply(book: &mut BTreeMap<Decimal, Decimal>, diff: &[Level]) {
        for l in diff {
            if l.qty.is_zero() {
                book.remove(&l.price);
            } else {
                book.insert(l.price, l.qty);
            }
        }
    }

    fn as_map(levels: &[Level]) -> BTreeMap<Decimal, Decimal> {
        levels.iter().map(|l| (l.price, l.qty)).collect()
    }

    #[test]
    fn the_book_id_moves_when_the_book_changes_and_only_then() {
        let mut m = btc();
        let start = m.book_update_id;
        m.set_price(m.last, 5);
        assert_eq!(m.book_update_id, start, "the same price is the same book");
        m.set_price(Decimal::from(60_000), 7);
        assert_eq!((m.book_update_id, m.book_changed_at), (start + 1, 7));
        m.set_level_notional(Some(Decimal::from(1000)), 9);
        assert_eq!(m.book_update_id, start + 2, "new quantities are a new book");
        m.set_level_notional(Some(Decimal::from(1000)), 11);
        assert_eq!((m.book_update_id, m.book_changed_at), (start + 2, 9));
    }

    #[test]
    fn a_diff_gives_new_and_changed_levels_and_zeroes_the_removed_ones() {
        let old = [level(100, 1), level(99, 1), level(98, 1)];
        let new = [level(101, 2), level(100, 1), level(99, 3)];
        assert_eq!(
            diff_side(&old, &new),
            vec![level(101, 2), level(99, 3), level(98, 0)]
        );
        assert!(diff_side(&new, &new).is_empty());
    }

    #[test]
    fn a_diff_applied_to_the_old_book_gives_the_new_one_and_changes_nothing_twice() {
        let mut m = btc();
        let (old_bids, old_asks) = m.book(BOOK_LEVELS);
        m.set_price(m.last + Decimal::from(3), 1);
        m.set_level_notional(Some(Decimal::from(90_000)), 1);
        let (bids, asks) = m.book(BOOK_LEVELS);
        for (old, new) in [(&old_bids, &bids), (&old_asks, &asks)] {
            let diff = diff_side(old, new);
            let mut local = as_map(old);
            apply(&mut local, &diff);
            assert_eq!(local, as_map(new));
            apply(&mut local, &diff);
            assert_eq!(local, as_map(new), "quantities are absolute");
        }
    }

    /// The flow of one tick without its ids: (price, qty, buyer is maker, time) per aggregate.
    fn without_ids(aggs: &[AggTrade]) -> Vec<(Decimal, Decimal, bool, i64)> {
        aggs.iter()
            .map(|a| (a.price, a.qty, a.buyer_maker, a.time))
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_flow_whatever_the_account_does() {
        let (mut a, mut b) = (btc(), btc());
        let mut printed = 0;
        for t in 0..200 {
            a.tick(t);
            b.tick(t);
            if t == 50 {
                // An own fill takes ids from the tape but nothing from the flow's generator.
                b.print_fill(b.last, Decimal::ONE, true, t);
            }
            let (fa, fb) = (a.flow(t), b.flow(t));
            assert_eq!(without_ids(&fa), without_ids(&fb), "tick {t}");
            printed += fa.len();
        }
        assert!(printed > 100, "200 ticks printed only {printed} aggregates");
        let mut other = Market::new(btc().spec, 8);
        let other_flow: Vec<_> = (0..20).flat_map(|t| other.flow(t)).collect();
        let mut same = btc();
        let same_flow: Vec<_> = (0..20).flat_map(|t| same.flow(t)).collect();
        assert_ne!(without_ids(&other_flow), without_ids(&same_flow));
    }

    #[test]
    fn flow_trades_print_at_the_last_price_in_aggregates_of_consecutive_trades() {
        let mut m = btc();
        let mut emitted = Vec::new();
        for t in 0..100 {
            m.tick(t * 1000);
            for agg in m.flow(t * 1000) {
                assert_eq!(agg.price, m.last);
                assert!(agg.qty >= m.spec.min_qty);
                emitted.push(agg);
            }
        }
        assert_eq!(
            m.agg_trades(),
            emitted,
            "the tape groups into what was emitted"
        );
        for pair in emitted.windows(2) {
            assert_eq!(pair[1].id, pair[0].id + 1);
            assert_eq!(pair[1].first_id, pair[0].last_id + 1);
        }
        let volume: Decimal = m.bars.iter().map(|b| b.volume).sum();
        assert_eq!(volume, m.tape.iter().map(|t| t.qty).sum::<Decimal>());
    }

    #[test]
    fn a_pinned_symbol_has_no_flow() {
        let mut m = btc();
        m.pinned = true;
        assert!((0..50).all(|t| m.flow(t).is_empty()));
        assert!(m.tape.is_empty());
    }

    #[test]
    fn the_tape_keeps_its_last_trades_and_drops_whole_aggregates() {
        let mut m = btc();
        let mut emitted = Vec::new();
        for t in 0..2000 {
            emitted.extend(m.flow(t));
        }
        assert!(m.tape.len() <= TAPE_LEN && m.tape.len() > TAPE_LEN - 10);
        let kept = m.agg_trades();
        let oldest = &kept[0];
        assert!(
            emitted.contains(oldest),
            "the oldest aggregate kept is whole: {oldest:?}"
        );
        assert_eq!(kept.last(), emitted.last());
    }

    #[test]
    fn replay_csv_accepts_both_layouts() {
        let two =
            parse_price_csv("timestamp,price\n1000,6.1\n2000,6.2\n", Some("AXSUSDT")).unwrap();
        assert_eq!(
            two["AXSUSDT"],
            vec![(0, Decimal::new(61, 1)), (1000, Decimal::new(62, 1))]
        );
        let three = parse_price_csv("5,btcusdt,100\n", None).unwrap();
        assert_eq!(three["BTCUSDT"].len(), 1);
        assert!(parse_price_csv("1,abc\n", Some("X")).is_err());
        assert!(parse_price_csv("1,2\n", None).is_err());
    }
}
