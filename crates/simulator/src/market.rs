//! Prices and the order book of each symbol: a deterministic seeded random walk (or a CSV replay),
//! a pin set through the control API, and a synthetic book around the last price that market
//! orders walk through, so large orders pay slippage and a thin book leaves a remainder.

use std::collections::BTreeMap;
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
    /// Sequence numbers for bookTicker `u` and aggTrade `a`.
    pub(crate) book_update_id: i64,
    pub(crate) agg_trade_id: i64,
    /// Per-level notional override from the `book_level_notional` fault knob.
    pub(crate) level_notional_override: Option<Decimal>,
    /// One-minute candles since start (newest last, at most [`MAX_BARS`]), for klines and the
    /// 24-hour ticker.
    pub(crate) bars: std::collections::VecDeque<Bar>,
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
            agg_trade_id: 5_000_000,
            level_notional_override: None,
            bars: std::collections::VecDeque::new(),
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
                self.set_price(next);
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
                    self.set_price(price);
                }
            }
        }
        self.last != before
    }

    /// Sets last, mark and index price together (the simulator has no basis between them).
    pub(crate) fn set_price(&mut self, price: Decimal) {
        self.last = price;
        self.mark = price;
        self.index = price;
        self.book_update_id += 1;
    }

    /// Records the current price (and a trade, when `traded` is given as `(qty, taker_buys)`)
    /// in the candle of `now`'s minute.
    pub(crate) fn record(&mut self, now: i64, traded: Option<(Decimal, Decimal, bool)>) {
        let minute = now - now.rem_euclid(MINUTE_MS);
        let price = traded.map_or(self.last, |(p, _, _)| p);
        if self.bars.back().is_none_or(|b| b.open_time < minute) {
            let open = self.bars.back().map_or(price, |b| b.close);
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
            });
            if self.bars.len() > MAX_BARS {
                self.bars.pop_front();
            }
        }
        let bar = self.bars.back_mut().expect("a bar exists");
        bar.high = bar.high.max(price);
        bar.low = bar.low.min(price);
        bar.close = price;
        if let Some((price, qty, taker_buys)) = traded {
            bar.volume += qty;
            bar.quote_volume += price * qty;
            bar.trades += 1;
            if taker_buys {
                bar.taker_buy_volume += qty;
                bar.taker_buy_quote += price * qty;
            }
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
        m.set_price(Decimal::from(60_000));
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
            m.set_price(Decimal::from(*price));
            m.record(
                t0 + i as i64 * 60_000,
                Some((Decimal::from(*price), Decimal::ONE, true)),
            );
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
