//! The simulated exchange's state and rules: one account, its orders, algo orders, trades and
//! positions, the per-symbol markets, listen keys and fault knobs. Everything here is synchronous
//! and takes the time as an argument; the server holds it behind one mutex and turns the events
//! it queues into WebSocket frames.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::auth::Params;
use crate::config::{PriceFileSpec, SimConfig};
use crate::error::ApiError;
use crate::faults::Faults;
use crate::market::{self, parse_price_csv, AggTrade, Bar, Level, Market, PriceSource, SplitMix64};
use crate::model::{
    AlgoOrder, AlgoStatus, MarginType, Order, OrderStatus, OrderType, Position, PositionSide, Side,
    TimeInForce, Trade,
};
use crate::symbols::{self, SymbolSpec};
use crate::wire::{self, OrderShape};

mod algo;
mod amend;
mod history;
mod listen_keys;
mod new_order;
mod tickers;

pub(crate) use amend::ModifyRequest;

/// Taker and maker fee rates (Binance's base tier for USD-M).
const TAKER_FEE: Decimal = Decimal::from_parts(5, 0, 0, false, 4);
const MAKER_FEE: Decimal = Decimal::from_parts(2, 0, 0, false, 4);
const DEFAULT_LEVERAGE: u32 = 20;
/// Maintenance margin rate applied to every position's notional.
const MAINT_MARGIN_RATE: Decimal = Decimal::from_parts(4, 0, 0, false, 3);
/// Binance's cap on open conditional (algo) orders across all symbols.
const MAX_OPEN_ALGO_ORDERS: usize = 200;

/// Something the server must push to WebSocket subscribers.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// A user-data event (`e` names its type, used by the `events=` filter).
    User { event: &'static str, payload: Value },
    /// A market-stream payload for the stream named (lower-case symbol, as subscribed).
    Market { stream: String, payload: Value },
    /// Sent on, then the key's connections stop receiving.
    ListenKeyExpired { listen_key: String, payload: Value },
    /// The `disconnect_user_streams` fault: close every user-data connection.
    DisconnectUserStreams,
}

#[derive(Debug)]
struct ListenKey {
    expires_at: i64,
}

/// What happened to a taker order after one fill batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillStep {
    /// More batches to come after another delay.
    Continue,
    /// The order is final, or rests on the book.
    Done,
    /// `never_fill` is on: wait until faults change.
    Parked,
}

/// The exchange. See the module doc.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) markets: BTreeMap<String, Market>,
    pub(crate) faults: Faults,
    pub(crate) startup_faults: Faults,
    wallet: Decimal,
    dual_side: bool,
    leverage: HashMap<String, u32>,
    margin_type: HashMap<String, MarginType>,
    positions: BTreeMap<(String, PositionSide), Position>,
    orders: BTreeMap<i64, Order>,
    algos: BTreeMap<i64, AlgoOrder>,
    trades: Vec<Trade>,
    listen_keys: HashMap<String, ListenKey>,
    listen_key_ttl_ms: i64,
    countdowns: HashMap<String, (i64, i64)>,
    /// Every order modification, oldest first (`GET /fapi/v1/orderAmendment`).
    amendments: Vec<amend::Amendment>,
    next_amendment_id: i64,
    next_order_id: i64,
    next_algo_id: i64,
    rng: SplitMix64,
    tick_count: u64,
    /// Market streams with at least one subscriber, and how many.
    wanted: BTreeMap<String, usize>,
    /// The book-depth streams someone watches, by stream name, with what each last sent.
    depth_streams: BTreeMap<String, DepthCursor>,
    /// Events for the server to publish, in order.
    outbox: Vec<Outgoing>,
    /// Orders that need the asynchronous filler (taker orders, triggered algo orders).
    to_fill: Vec<i64>,
}

impl Exchange {
    pub(crate) fn new(config: &SimConfig) -> Result<Exchange, String> {
        let mut specs = symbols::builtin();
        for text in &config.extra_symbols {
            for part in text.split(',').filter(|p| !p.trim().is_empty()) {
                let spec = symbols::extra(part)?;
                specs.retain(|s| s.symbol != spec.symbol);
                specs.push(spec);
            }
        }
        let mut markets: BTreeMap<String, Market> = specs
            .into_iter()
            .map(|spec| (spec.symbol.clone(), Market::new(spec, config.seed)))
            .collect();
        for file in &config.price_files {
            let spec = PriceFileSpec::parse(file);
            let text = std::fs::read_to_string(&spec.path)
                .map_err(|e| format!("--price-file {}: {e}", spec.path.display()))?;
            let rows = parse_price_csv(&text, spec.symbol.as_deref())
                .map_err(|e| format!("--price-file {}: {e}", spec.path.display()))?;
            for (symbol, rows) in rows {
                let market = markets.get_mut(&symbol).ok_or_else(|| {
                    format!(
                        "--price-file {}: unknown symbol {symbol}",
                        spec.path.display()
                    )
                })?;
                let first = rows[0].1;
                market.set_price(
                    market
                        .spec
                        .round_price_down(first)
                        .max(market.spec.tick_size),
                    0,
                );
                market.source = PriceSource::Replay {
                    rows,
                    next: 0,
                    started_at: None,
                };
            }
        }
        let faults = Faults {
            fill_delay_ms: duration_ms(config.fill_delay),
            partial_fills: config.partial_fills.max(1),
            result_wait_ms: duration_ms(config.result_wait),
            ..Faults::default()
        };
        Ok(Exchange {
            markets,
            startup_faults: faults.clone(),
            faults,
            wallet: config.initial_balance,
            dual_side: config.dual_side_position,
            leverage: HashMap::new(),
            margin_type: HashMap::new(),
            positions: BTreeMap::new(),
            orders: BTreeMap::new(),
            algos: BTreeMap::new(),
            trades: Vec::new(),
            listen_keys: HashMap::new(),
            listen_key_ttl_ms: duration_ms(config.listen_key_ttl) as i64,
            countdowns: HashMap::new(),
            amendments: Vec::new(),
            next_amendment_id: 5_001,
            // Ids above 2^32, as on the live exchange, so clients that use 32-bit ids fail here too.
            next_order_id: 5_000_000_001,
            next_algo_id: 3_000_001,
            rng: SplitMix64::new(config.seed ^ 0x5EED),
            tick_count: 0,
            wanted: BTreeMap::new(),
            depth_streams: BTreeMap::new(),
            outbox: Vec::new(),
            to_fill: Vec::new(),
        })
    }

    /// Counts subscribers of market streams (`on` adds, otherwise removes). A book-depth stream
    /// starts its record of what it sent when its first subscriber comes, from the book as it is
    /// then, and forgets it when the last one leaves.
    pub(crate) fn watch(&mut self, streams: &std::collections::BTreeSet<String>, on: bool) {
        for stream in streams {
            if on {
                let count = self.wanted.entry(stream.clone()).or_default();
                *count += 1;
                if *count == 1 {
                    if let Some(cursor) = self.depth_cursor(stream) {
                        self.depth_streams.insert(stream.clone(), cursor);
                    }
                }
            } else if let Some(count) = self.wanted.get_mut(stream) {
                *count -= 1;
                if *count == 0 {
                    self.wanted.remove(stream);
                    self.depth_streams.remove(stream);
                }
            }
        }
    }

    /// A new record for `stream` if it names a book-depth stream of a known symbol.
    fn depth_cursor(&self, stream: &str) -> Option<DepthCursor> {
        let (symbol, levels, speed_ms) = parse_depth_stream(stream)?;
        let market = self.markets.get(&symbol)?;
        let (bids, asks) = if levels.is_none() {
            market.book(crate::symbols::BOOK_LEVELS)
        } else {
            (Vec::new(), Vec::new())
        };
        Some(DepthCursor {
            symbol,
            levels,
            speed_ms,
            next_due: i64::MIN,
            last_u: market.book_update_id,
            sent: false,
            bids,
            asks,
        })
    }

    /// True when some book-depth stream has a subscriber (the depth timer does nothing else).
    pub(crate) fn has_depth_streams(&self) -> bool {
        !self.depth_streams.is_empty()
    }

    /// The book-depth streams whose time has come (each at its speed: 100, 250 or 500 ms, slots
    /// aligned to the clock). A diff stream (`<symbol>@depth[@speed]`) sends the levels that
    /// changed since its previous event, and nothing when the book did not change; its `U` is
    /// the first update after its previous event (`pu + 1`), `u` the book's id now, `pu` its
    /// previous event's `u`. A partial stream (`<symbol>@depth<5|10|20>[@speed]`) sends its
    /// levels when the book changed and once when it is first subscribed, with `u` and `pu` as
    /// a diff stream's and `U = pu + 1` (or `u` when the book did not change).
    pub(crate) fn publish_depth(&mut self, now: i64) {
        for (stream, cursor) in &mut self.depth_streams {
            // A clock moved back (the clock_skew_ms knob) must not silence a stream until it
            // catches up: a slot further away than one period is recomputed.
            if now < cursor.next_due && cursor.next_due - now <= cursor.speed_ms {
                continue;
            }
            cursor.next_due = now
                .div_euclid(cursor.speed_ms)
                .saturating_add(1)
                .saturating_mul(cursor.speed_ms);
            let Some(market) = self.markets.get(&cursor.symbol) else {
                continue;
            };
            let id = market.book_update_id;
            let changed = id != cursor.last_u;
            let spec = &market.spec;
            let level = |l: &Level| json!([spec.fmt_price(l.price), spec.fmt_qty(l.qty)]);
            let payload = match cursor.levels {
                None => {
                    if !changed {
                        continue;
                    }
                    let (bids, asks) = market.book(crate::symbols::BOOK_LEVELS);
                    let b = market::diff_side(&cursor.bids, &bids);
                    let a = market::diff_side(&cursor.asks, &asks);
                    cursor.bids = bids;
                    cursor.asks = asks;
                    json!({
                        "e": "depthUpdate", "E": now, "T": market.book_changed_at,
                        "s": cursor.symbol, "U": cursor.last_u + 1, "u": id, "pu": cursor.last_u,
                        "b": b.iter().map(level).collect::<Vec<_>>(),
                        "a": a.iter().map(level).collect::<Vec<_>>(),
                    })
                }
                Some(levels) => {
                    if !changed && cursor.sent {
                        continue;
                    }
                    let (bids, asks) = market.book(levels);
                    json!({
                        "e": "depthUpdate", "E": now, "T": market.book_changed_at,
                        "s": cursor.symbol,
                        "U": if changed { cursor.last_u + 1 } else { id },
                        "u": id, "pu": cursor.last_u,
                        "b": bids.iter().map(level).collect::<Vec<_>>(),
                        "a": asks.iter().map(level).collect::<Vec<_>>(),
                    })
                }
            };
            cursor.last_u = id;
            cursor.sent = true;
            self.outbox.push(Outgoing::Market {
                stream: stream.clone(),
                payload,
            });
        }
    }

    /// Applies the `book_level_notional` knob to every book (it changes their quantities, so
    /// their update ids move and the depth streams report it).
    pub(crate) fn apply_book_knob(&mut self, now: i64) {
        let notional = self.faults.book_level_notional;
        for market in self.markets.values_mut() {
            market.set_level_notional(notional, now);
        }
    }

    /// Opens the first candle of every symbol at its starting price.
    pub(crate) fn start(&mut self, now: i64) {
        for market in self.markets.values_mut() {
            market.record(now, None);
        }
    }

    /// `GET /fapi/v1/ticker/24hr` for one symbol, from the candles of the last 24 hours.
    pub(crate) fn ticker_24hr(&self, symbol: &str, now: i64) -> Value {
        let market = &self.markets[symbol];
        let spec = &market.spec;
        let since = now - 24 * 3600 * 1000;
        let bars: Vec<&crate::market::Bar> = market
            .bars
            .iter()
            .filter(|b| b.open_time >= since - 60_000)
            .collect();
        let open = bars.first().map_or(market.last, |b| b.open);
        let high = bars.iter().map(|b| b.high).fold(market.last, Decimal::max);
        let low = bars.iter().map(|b| b.low).fold(market.last, Decimal::min);
        let volume: Decimal = bars.iter().map(|b| b.volume).sum();
        let quote: Decimal = bars.iter().map(|b| b.quote_volume).sum();
        let count: u64 = bars.iter().map(|b| b.trades).sum();
        let change = market.last - open;
        let percent = if open.is_zero() {
            Decimal::ZERO
        } else {
            (change / open * Decimal::ONE_HUNDRED).round_dp(3)
        };
        let weighted = if volume.is_zero() {
            market.last
        } else {
            quote / volume
        };
        let last_qty = market.tape.back().map_or(Decimal::ZERO, |t| t.qty);
        let first_id = bars
            .iter()
            .map(|b| b.first_trade_id)
            .find(|id| *id >= 0)
            .unwrap_or(-1);
        let last_id = bars
            .iter()
            .rev()
            .map(|b| b.last_trade_id)
            .find(|id| *id >= 0)
            .unwrap_or(-1);
        json!({
            "symbol": symbol,
            "priceChange": spec.fmt_price(change),
            "priceChangePercent": crate::symbols::fixed(percent, 3),
            "weightedAvgPrice": spec.fmt_price(weighted),
            "lastPrice": spec.fmt_price(market.last),
            "lastQty": spec.fmt_qty(last_qty),
            "openPrice": spec.fmt_price(open),
            "highPrice": spec.fmt_price(high),
            "lowPrice": spec.fmt_price(low),
            "volume": spec.fmt_qty(volume),
            "quoteVolume": crate::symbols::fixed(quote, 2),
            "openTime": since,
            "closeTime": now,
            "firstId": first_id,
            "lastId": last_id,
            "count": count,
        })
    }

    /// The candles a klines request asks for (`interval`, `startTime`, `endTime`, `limit` 1 to
    /// 1500, default 500), oldest first, with the interval's length.
    fn candle_page(&self, symbol: &str, params: &Params) -> Result<(Vec<Bar>, i64), ApiError> {
        let interval = params.required("interval")?;
        let interval_ms =
            interval_ms(interval).ok_or_else(|| ApiError::bad(-1120, "Invalid interval."))?;
        let limit = limit_param(params, 500, 1500)?;
        let start = params.int("startTime")?;
        let end = params.int("endTime")?;
        let mut rows: Vec<Bar> = self.markets[symbol]
            .candles(interval_ms, crate::market::MAX_BARS)
            .into_iter()
            .filter(|b| {
                start.is_none_or(|t| b.open_time + interval_ms > t)
                    && end.is_none_or(|t| b.open_time <= t)
            })
            .collect();
        page(&mut rows, false, limit);
        Ok((rows, interval_ms))
    }

    /// `GET /fapi/v1/klines`.
    pub(crate) fn klines(&self, params: &Params) -> Result<Value, ApiError> {
        let symbol = self.symbol_param(params)?;
        self.trade_klines(&symbol, params)
    }

    fn trade_klines(&self, symbol: &str, params: &Params) -> Result<Value, ApiError> {
        let (bars, interval_ms) = self.candle_page(symbol, params)?;
        let spec = &self.markets[symbol].spec;
        Ok(Value::Array(
            bars.iter()
                .map(|b| {
                    json!([
                        b.open_time,
                        spec.fmt_price(b.open),
                        spec.fmt_price(b.high),
                        spec.fmt_price(b.low),
                        spec.fmt_price(b.close),
                        spec.fmt_qty(b.volume),
                        b.open_time + interval_ms - 1,
                        crate::symbols::fixed(b.quote_volume, 5),
                        b.trades,
                        spec.fmt_qty(b.taker_buy_volume),
                        crate::symbols::fixed(b.taker_buy_quote, 5),
                        "0",
                    ])
                })
                .collect(),
        ))
    }

    /// `GET /fapi/v1/continuousKlines` (`pair`, `contractType`): the simulator lists perpetuals
    /// only, each its own pair, so `PERPETUAL` gives the symbol's klines and the other documented
    /// contract types (`CURRENT_QUARTER`, `NEXT_QUARTER`, `TRADIFI_PERPETUAL`) an empty list.
    pub(crate) fn continuous_klines(&self, params: &Params) -> Result<Value, ApiError> {
        let pair = params
            .get("pair")
            .map(str::to_ascii_uppercase)
            .ok_or_else(|| ApiError::mandatory("pair"))?;
        self.market(&pair)?;
        match params.required("contractType")? {
            "PERPETUAL" => self.trade_klines(&pair, params),
            "CURRENT_QUARTER" | "NEXT_QUARTER" | "TRADIFI_PERPETUAL" => {
                self.candle_page(&pair, params)?;
                Ok(json!([]))
            }
            _ => Err(ApiError::malformed("contractType")),
        }
    }

    /// `GET /fapi/v1/markPriceKlines` (`symbol`), `indexPriceKlines` (`pair`) and
    /// `premiumIndexKlines` (`symbol`): candles of the mark price, which here is also the index
    /// price (the simulator has no basis), so the premium index is 0 throughout. The fields
    /// Binance marks "ignore" are `"0"`, except the count, which is the number of price updates
    /// in the candle.
    pub(crate) fn price_klines(
        &self,
        params: &Params,
        kind: PriceKline,
    ) -> Result<Value, ApiError> {
        let symbol = match kind {
            PriceKline::Index => {
                let pair = params
                    .get("pair")
                    .map(str::to_ascii_uppercase)
                    .ok_or_else(|| ApiError::mandatory("pair"))?;
                self.market(&pair)?;
                pair
            }
            PriceKline::Mark | PriceKline::Premium => self.symbol_param(params)?,
        };
        let (bars, interval_ms) = self.candle_page(&symbol, params)?;
        let f = wire::fmt8;
        Ok(Value::Array(
            bars.iter()
                .map(|b| {
                    let (open, high, low, close) = match kind {
                        PriceKline::Premium => {
                            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO)
                        }
                        _ => (b.mark_open, b.mark_high, b.mark_low, b.mark_close),
                    };
                    json!([
                        b.open_time,
                        f(open),
                        f(high),
                        f(low),
                        f(close),
                        "0",
                        b.open_time + interval_ms - 1,
                        "0",
                        b.mark_updates,
                        "0",
                        "0",
                        "0",
                    ])
                })
                .collect(),
        ))
    }

    /// `GET /fapi/v1/openInterest`: the contracts open on the symbol. The synthetic flow opens
    /// no positions, so they are the account's: its position (one-way), or its long and short
    /// positions together (hedge mode).
    pub(crate) fn open_interest(&self, params: &Params, now: i64) -> Result<Value, ApiError> {
        let symbol = self.symbol_param(params)?;
        let open: Decimal = self
            .positions
            .iter()
            .filter(|((s, _), _)| *s == symbol)
            .map(|(_, p)| p.amount.abs())
            .sum();
        Ok(json!({
            "openInterest": self.markets[&symbol].spec.fmt_qty(open),
            "symbol": symbol,
            "time": now,
        }))
    }

    /// `GET /fapi/v1/trades`: the most recent public trades, oldest first (`limit` 1 to 1000,
    /// default 500).
    pub(crate) fn recent_trades(&self, params: &Params) -> Result<Value, ApiError> {
        let symbol = self.symbol_param(params)?;
        let limit = limit_param(params, 500, 1000)?;
        let market = &self.markets[&symbol];
        let skip = market.tape.len().saturating_sub(limit);
        Ok(Value::Array(
            market
                .tape
                .iter()
                .skip(skip)
                .map(|t| wire::public_trade(t, &market.spec))
                .collect(),
        ))
    }

    /// `GET /fapi/v1/historicalTrades` (MARKET_DATA: the API key, no signature): from trade id
    /// `fromId` on, the first `limit` trades (1 to 500, default 100); without `fromId`, the most
    /// recent ones. Only the trades the tape still holds are found (see [`market::TAPE_LEN`]): a
    /// `fromId` older than those starts at the oldest kept.
    pub(crate) fn historical_trades(&self, params: &Params) -> Result<Value, ApiError> {
        let symbol = self.symbol_param(params)?;
        let limit = limit_param(params, 100, 500)?;
        let from_id = params.int("fromId")?;
        let market = &self.markets[&symbol];
        let mut rows: Vec<&market::PublicTrade> = market
            .tape
            .iter()
            .filter(|t| from_id.is_none_or(|id| t.id >= id))
            .collect();
        page(&mut rows, from_id.is_some(), limit);
        Ok(Value::Array(
            rows.into_iter()
                .map(|t| wire::public_trade(t, &market.spec))
                .collect(),
        ))
    }

    /// `GET /fapi/v1/aggTrades`: aggregate trades (`limit` 1 to 1000, default 500), oldest first.
    /// From `fromId` and/or `startTime` on, the first `limit` that also meet `endTime`; with
    /// neither, the most recent `limit` (at or before `endTime` when sent). `startTime` and
    /// `endTime` together must be less than an hour apart (-1127). Binance advises sending
    /// `fromId` or a time range, not both; the simulator applies both.
    pub(crate) fn agg_trades(&self, params: &Params) -> Result<Value, ApiError> {
        let symbol = self.symbol_param(params)?;
        let limit = limit_param(params, 500, 1000)?;
        let from_id = params.int("fromId")?;
        let start = params.int("startTime")?;
        let end = params.int("endTime")?;
        if let (Some(start), Some(end)) = (start, end) {
            if end.checked_sub(start).is_none_or(|span| span >= 3_600_000) {
                return Err(ApiError::bad(
                    -1127,
                    "More than 1 hours between startTime and endTime.",
                ));
            }
        }
        let market = &self.markets[&symbol];
        let mut rows: Vec<AggTrade> = market
            .agg_trades()
            .into_iter()
            .filter(|a| from_id.is_none_or(|id| a.id >= id))
            .filter(|a| start.is_none_or(|t| a.time >= t) && end.is_none_or(|t| a.time <= t))
            .collect();
        page(&mut rows, from_id.is_some() || start.is_some(), limit);
        Ok(Value::Array(
            rows.iter()
                .map(|a| wire::agg_trade(a, &market.spec))
                .collect(),
        ))
    }

    /// `GET /fapi/v1/leverageBracket`: one object with `symbol`, else a list of all symbols.
    pub(crate) fn leverage_brackets(&self, params: &Params) -> Result<Value, ApiError> {
        let row = |symbol: &str| {
            let brackets: Vec<Value> = BRACKETS
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    // Binance prints these as JSON numbers; they are constants here, never computed.
                    json!({
                        "bracket": i + 1,
                        "initialLeverage": b.leverage,
                        "notionalCap": b.cap,
                        "notionalFloor": b.floor,
                        "maintMarginRatio": b.maint_ratio,
                        "cum": b.cum,
                    })
                })
                .collect();
            json!({ "symbol": symbol, "notionalCoef": 1.0, "brackets": brackets })
        };
        Ok(match self.optional_symbol(params)? {
            Some(symbol) => row(&symbol),
            None => Value::Array(self.markets.keys().map(|s| row(s)).collect()),
        })
    }

    /// `GET /fapi/v1/symbolConfig`: margin type and leverage per symbol (one with `symbol`, else
    /// every symbol), the shape of `rest__symbol_config.json`.
    pub(crate) fn symbol_config(&self, params: &Params) -> Result<Value, ApiError> {
        let row = |symbol: &str| {
            let leverage = self.leverage_of(symbol);
            json!({
                "symbol": symbol,
                "marginType": self.margin_type_of(symbol).as_str(),
                "isAutoAddMargin": false,
                "leverage": leverage,
                "maxNotionalValue": max_notional(leverage),
            })
        };
        Ok(Value::Array(match self.optional_symbol(params)? {
            Some(symbol) => vec![row(&symbol)],
            None => self.markets.keys().map(|s| row(s)).collect(),
        }))
    }

    /// `GET /fapi/v1/accountConfig`: the account's trading flags, the shape of
    /// `rest__account_config.json` (fee tier 0, every permission, one-way or hedge mode as set).
    pub(crate) fn account_config(&self) -> Value {
        json!({
            "feeTier": 0,
            "canTrade": true,
            "canDeposit": true,
            "canWithdraw": true,
            "dualSidePosition": self.dual_side,
            "updateTime": 0,
            "multiAssetsMargin": false,
            "tradeGroupId": -1,
        })
    }

    /// `GET /fapi/v1/commissionRate` (`symbol` required): the fee rates every fill here pays,
    /// the shape of `rest__commission_rate.json`. The simulator has no RPI orders; it states
    /// Binance's documented example RPI rate, 0.00005, so clients that read it find a number.
    pub(crate) fn commission_rate(&self, params: &Params) -> Result<Value, ApiError> {
        let symbol = self.symbol_param(params)?;
        Ok(json!({
            "symbol": symbol,
            "makerCommissionRate": MAKER_FEE.normalize().to_string(),
            "takerCommissionRate": TAKER_FEE.normalize().to_string(),
            "rpiCommissionRate": "0.00005",
        }))
    }

    /// Events queued since the last call.
    pub(crate) fn drain_outbox(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.outbox)
    }

    /// Orders that the async filler must now work on.
    pub(crate) fn drain_to_fill(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.to_fill)
    }

    pub(crate) fn spec(&self, symbol: &str) -> Result<&SymbolSpec, ApiError> {
        self.markets
            .get(symbol)
            .map(|m| &m.spec)
            .ok_or_else(ApiError::invalid_symbol)
    }

    fn market(&self, symbol: &str) -> Result<&Market, ApiError> {
        self.markets
            .get(symbol)
            .ok_or_else(ApiError::invalid_symbol)
    }

    /// The symbol parameter, required and known.
    pub(crate) fn symbol_param(&self, params: &Params) -> Result<String, ApiError> {
        let symbol = params
            .symbol()
            .ok_or_else(|| ApiError::mandatory("symbol"))?;
        self.market(&symbol)?;
        Ok(symbol)
    }

    /// The symbol parameter if sent (it must then be known).
    pub(crate) fn optional_symbol(&self, params: &Params) -> Result<Option<String>, ApiError> {
        match params.symbol() {
            None => Ok(None),
            Some(symbol) => {
                self.market(&symbol)?;
                Ok(Some(symbol))
            }
        }
    }

    pub(crate) fn leverage_of(&self, symbol: &str) -> u32 {
        self.leverage
            .get(symbol)
            .copied()
            .unwrap_or(DEFAULT_LEVERAGE)
    }

    fn margin_type_of(&self, symbol: &str) -> MarginType {
        self.margin_type
            .get(symbol)
            .copied()
            .unwrap_or(MarginType::Crossed)
    }

    fn mark(&self, symbol: &str) -> Decimal {
        self.markets.get(symbol).map_or(Decimal::ZERO, |m| m.mark)
    }

    fn position(&self, symbol: &str, side: PositionSide) -> Position {
        self.positions
            .get(&(symbol.to_string(), side))
            .cloned()
            .unwrap_or_default()
    }

    // ----- account arithmetic --------------------------------------------------------------

    fn unrealized_total(&self) -> Decimal {
        self.positions
            .iter()
            .map(|((symbol, _), p)| wire::unrealized(p, self.mark(symbol)))
            .sum()
    }

    fn position_margin(&self) -> Decimal {
        self.positions
            .iter()
            .map(|((symbol, _), p)| {
                p.amount.abs() * self.mark(symbol) / Decimal::from(self.leverage_of(symbol))
            })
            .sum()
    }

    /// Maintenance margin at a flat 0.4 % of notional (Binance's lowest bracket for majors).
    fn maintenance_margin(&self) -> Decimal {
        self.positions
            .iter()
            .map(|((symbol, _), p)| p.amount.abs() * self.mark(symbol) * MAINT_MARGIN_RATE)
            .sum()
    }

    fn open_order_margin(&self) -> Decimal {
        self.orders
            .values()
            .filter(|o| o.is_open() && !o.reduce_only)
            .map(|o| {
                let price = if o.price.is_zero() {
                    self.mark(&o.symbol)
                } else {
                    o.price
                };
                o.remaining() * price / Decimal::from(self.leverage_of(&o.symbol))
            })
            .sum()
    }

    fn available_balance(&self) -> Decimal {
        (self.wallet + self.unrealized_total() - self.position_margin() - self.open_order_margin())
            .max(Decimal::ZERO)
    }

    // ----- orders ---------------------------------------------------------------------------

    fn client_order_id(&mut self, params: &Params, key: &str) -> Result<String, ApiError> {
        match params.get(key) {
            None => Ok(self.random_id(22)),
            Some(id) => check_client_id(id, key).map(|()| id.to_string()),
        }
    }

    fn random_id(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[(self.rng.next_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    fn position_side_param(&self, params: &Params) -> Result<PositionSide, ApiError> {
        let side = match params.get("positionSide") {
            None => PositionSide::Both,
            Some(text) => PositionSide::parse(text)?,
        };
        let fits = if self.dual_side {
            side != PositionSide::Both
        } else {
            side == PositionSide::Both
        };
        if !fits {
            return Err(ApiError::bad(
                -4061,
                "Order's position side does not match user's setting.",
            ));
        }
        Ok(side)
    }

    /// One fill batch of a taker order, at the current book. See [`FillStep`].
    pub(crate) fn fill_batch(&mut self, order_id: i64, now: i64) -> FillStep {
        let step = self.fill_batch_inner(order_id, now);
        if step == FillStep::Done {
            if let Some(order) = self.orders.get_mut(&order_id) {
                order.taker_pending = false;
            }
        }
        step
    }

    fn fill_batch_inner(&mut self, order_id: i64, now: i64) -> FillStep {
        let Some(order) = self.orders.get(&order_id).cloned() else {
            return FillStep::Done;
        };
        if !order.is_open() {
            return FillStep::Done;
        }
        if self.faults.never_fill {
            return FillStep::Parked;
        }
        let Some(market) = self.markets.get_mut(&order.symbol) else {
            return FillStep::Done;
        };
        market.set_level_notional(self.faults.book_level_notional, now);
        let market = market.clone();
        let spec = &market.spec;
        let mut qty = order.remaining();
        if order.chunks_left > 1 {
            qty = spec
                .round_qty_down(qty / Decimal::from(order.chunks_left))
                .max(spec.step_size)
                .min(qty);
        }
        // A hedge-mode closing order (SELL LONG, BUY SHORT) can only reduce its side, as a
        // reduce-only order can: one that arrives after the side was closed by another (an
        // exchange-side stop that fired first) fills what is left of it and expires.
        let caps = order.reduce_only || closes_hedge_side(&order);
        if caps {
            qty = qty.min(self.reducible(&order));
        }
        let limit = (order.order_type == OrderType::Limit).then_some(order.price);
        let (slices, unfilled) = market.walk(order.side == Side::Buy, qty, limit);
        if qty.is_zero() {
            // A reduce-only order with nothing left to reduce.
            self.finish(order_id, OrderStatus::Expired, 4, now);
            return FillStep::Done;
        }
        if order.time_in_force == TimeInForce::Fok && !unfilled.is_zero() {
            self.finish(order_id, OrderStatus::Expired, 2, now);
            return FillStep::Done;
        }
        for slice in slices {
            self.apply_fill(order_id, slice.price, slice.qty, false, now);
        }
        let order = &self.orders[&order_id];
        if !order.is_open() {
            return FillStep::Done;
        }
        if !unfilled.is_zero() {
            match order.order_type {
                // The book could not absorb a MARKET order: the remainder expires (reason 9).
                OrderType::Market => self.finish(order_id, OrderStatus::Expired, 9, now),
                // A LIMIT order rests with what it could not take, unless IOC.
                _ if order.time_in_force == TimeInForce::Ioc => {
                    self.finish(order_id, OrderStatus::Expired, 2, now)
                }
                _ => {}
            }
            return FillStep::Done;
        }
        let order = self.orders.get_mut(&order_id).expect("order exists");
        order.chunks_left = order.chunks_left.saturating_sub(1);
        if order.chunks_left == 0 {
            // The batches are used up: whatever a reduce-only cap left over can never fill.
            let (is_market, open, reduce_only) = (
                order.order_type == OrderType::Market,
                order.is_open(),
                order.reduce_only || closes_hedge_side(order),
            );
            if is_market && open {
                self.finish(
                    order_id,
                    OrderStatus::Expired,
                    if reduce_only { 4 } else { 9 },
                    now,
                );
            }
            return FillStep::Done;
        }
        FillStep::Continue
    }

    /// How much of an order's remaining quantity would only reduce its position.
    fn reducible(&self, order: &Order) -> Decimal {
        let position = self.position(&order.symbol, order.position_side);
        let reduces = match order.position_side {
            PositionSide::Both => {
                !position.amount.is_zero()
                    && position.amount.is_sign_positive() != (order.side == Side::Buy)
            }
            PositionSide::Long => order.side == Side::Sell,
            PositionSide::Short => order.side == Side::Buy,
        };
        if reduces {
            position.amount.abs().min(order.remaining())
        } else {
            Decimal::ZERO
        }
    }

    /// Executes `qty` of an order at `price`: trade, order, position, wallet, and the events.
    fn apply_fill(&mut self, order_id: i64, price: Decimal, qty: Decimal, maker: bool, now: i64) {
        let order = self.orders.get_mut(&order_id).expect("order exists");
        order.executed_qty += qty;
        order.cum_quote += price * qty;
        order.status = if order.executed_qty >= order.orig_qty {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
        order.update_time = now;
        let (symbol, side, position_side) = (order.symbol.clone(), order.side, order.position_side);

        let key = (symbol.clone(), position_side);
        let position = self.positions.entry(key).or_default();
        let signed = side.sign() * qty;
        let mut realized = Decimal::ZERO;
        if position.amount.is_zero()
            || position.amount.is_sign_positive() == signed.is_sign_positive()
        {
            let total = position.amount.abs() + qty;
            position.entry_price =
                (position.entry_price * position.amount.abs() + price * qty) / total;
            position.amount += signed;
        } else {
            let closed = qty.min(position.amount.abs());
            let direction = if position.amount.is_sign_positive() {
                Decimal::ONE
            } else {
                Decimal::NEGATIVE_ONE
            };
            realized = (price - position.entry_price) * closed * direction;
            position.amount += signed;
            if position.amount.is_zero() {
                position.entry_price = Decimal::ZERO;
            } else if position.amount.is_sign_positive() != direction.is_sign_positive() {
                // The fill flipped the position: the rest opens at this price.
                position.entry_price = price;
            }
        }
        position.realized += realized;
        position.update_time = now;
        let fee_rate = if maker { MAKER_FEE } else { TAKER_FEE };
        let commission = (price * qty * fee_rate).round_dp(8);
        self.wallet += realized - commission;

        // The fill is a trade of the market: on the public tape (which gives it its id), in the
        // candles and on the aggTrade stream.
        let printed = self
            .markets
            .get_mut(&symbol)
            .expect("known symbol")
            .print_fill(price, qty, side == Side::Buy, now);
        let trade = Trade {
            id: printed.first_id,
            order_id,
            symbol: symbol.clone(),
            side,
            position_side,
            price,
            qty,
            commission,
            realized_pnl: realized.round_dp(8),
            maker,
            time: now,
        };
        self.emit_order(order_id, "TRADE", Some(&trade), now);
        let order = &self.orders[&order_id];
        let spec = &self.markets[&symbol].spec;
        self.outbox.push(Outgoing::User {
            event: "TRADE_LITE",
            payload: wire::trade_lite(order, spec, &trade, now),
        });
        self.trades.push(trade);
        self.emit_agg_trades(&symbol, &[printed], now);
        self.emit_account_update(&symbol, position_side, now);
        if let Some(algo_id) = self.orders[&order_id].algo_id {
            if !self.orders[&order_id].is_open() {
                self.set_algo_status(algo_id, AlgoStatus::Finished, "", now);
            }
        }
    }

    /// Moves an order to a final state without a fill (cancel, expiry) and tells the stream.
    fn finish(&mut self, order_id: i64, status: OrderStatus, expire_reason: u8, now: i64) {
        let Some(order) = self.orders.get_mut(&order_id) else {
            return;
        };
        if !order.is_open() {
            return;
        }
        order.status = status;
        order.expire_reason = expire_reason;
        order.update_time = now;
        let execution = if status == OrderStatus::Canceled {
            "CANCELED"
        } else {
            "EXPIRED"
        };
        let algo_id = order.algo_id;
        self.emit_order(order_id, execution, None, now);
        if let Some(algo_id) = algo_id {
            self.set_algo_status(algo_id, AlgoStatus::Finished, "", now);
        }
    }

    fn emit_order(&mut self, order_id: i64, execution: &str, fill: Option<&Trade>, now: i64) {
        let order = &self.orders[&order_id];
        let spec = &self.markets[&order.symbol].spec;
        let payload = wire::order_trade_update(order, spec, execution, fill, now);
        self.outbox.push(Outgoing::User {
            event: "ORDER_TRADE_UPDATE",
            payload,
        });
    }

    fn emit_account_update(&mut self, symbol: &str, side: PositionSide, now: i64) {
        let position = self.position(symbol, side);
        let spec = &self.markets[symbol].spec;
        let row = wire::account_update_position(
            symbol,
            side,
            &position,
            spec,
            self.mark(symbol),
            self.margin_type_of(symbol).lower(),
        );
        let wallet = wire::fmt8(self.wallet);
        let payload = json!({
            "e": "ACCOUNT_UPDATE",
            "E": now,
            "T": now,
            "a": {
                "m": "ORDER",
                "B": [{ "a": "USDT", "wb": wallet, "cw": wallet, "bc": "0" }],
                "P": [row],
            }
        });
        self.outbox.push(Outgoing::User {
            event: "ACCOUNT_UPDATE",
            payload,
        });
    }

    /// `<symbol>@aggTrade` events, built only when someone watches the stream (the synthetic
    /// flow makes them on every tick for every symbol).
    fn emit_agg_trades(&mut self, symbol: &str, aggs: &[AggTrade], now: i64) {
        let stream = format!("{}@aggTrade", symbol.to_ascii_lowercase());
        if aggs.is_empty() || !self.wanted.contains_key(&stream) {
            return;
        }
        let spec = &self.markets[symbol].spec;
        for agg in aggs {
            let payload = json!({
                "e": "aggTrade", "E": now, "s": symbol, "a": agg.id,
                "p": spec.fmt_price(agg.price), "q": spec.fmt_qty(agg.qty),
                // No RPI orders here: the quantity without them is all of it.
                "nq": spec.fmt_qty(agg.qty),
                "f": agg.first_id, "l": agg.last_id, "T": agg.time, "m": agg.buyer_maker,
            });
            self.outbox.push(Outgoing::Market {
                stream: stream.clone(),
                payload,
            });
        }
    }

    /// Finds an order by `orderId` or `origClientOrderId` (client ids may repeat once closed: the
    /// newest wins, as on Binance).
    pub(crate) fn find_order(&self, params: &Params) -> Result<&Order, ApiError> {
        let symbol = self.symbol_param(params)?;
        let found = if let Some(id) = params.int("orderId")? {
            self.orders.get(&id).filter(|o| o.symbol == symbol)
        } else if let Some(client_id) = params.get("origClientOrderId") {
            self.orders
                .values()
                .rev()
                .find(|o| o.symbol == symbol && o.client_order_id == client_id)
        } else {
            return Err(ApiError::bad(
                -1102,
                "Either orderId or origClientOrderId must be sent.",
            ));
        };
        found.ok_or_else(|| ApiError::bad(-2013, "Order does not exist."))
    }

    pub(crate) fn order_json(&self, order: &Order, shape: OrderShape) -> Value {
        wire::order(order, &self.markets[&order.symbol].spec, shape)
    }

    pub(crate) fn order_by_id(&self, order_id: i64) -> Option<&Order> {
        self.orders.get(&order_id)
    }

    pub(crate) fn cancel_order(&mut self, params: &Params, now: i64) -> Result<Value, ApiError> {
        let order_id = match self.find_order(params) {
            Ok(order) if order.is_open() => order.order_id,
            Ok(_) | Err(ApiError { code: -2013, .. }) => {
                return Err(ApiError::bad(-2011, "Unknown order sent."))
            }
            Err(e) => return Err(e),
        };
        self.finish(order_id, OrderStatus::Canceled, 0, now);
        Ok(self.order_json(&self.orders[&order_id], OrderShape::Reply))
    }

    pub(crate) fn cancel_all(&mut self, symbol: &str, now: i64) {
        let ids: Vec<i64> = self
            .orders
            .values()
            .filter(|o| o.is_open() && o.symbol == symbol)
            .map(|o| o.order_id)
            .collect();
        for id in ids {
            self.finish(id, OrderStatus::Canceled, 0, now);
        }
    }

    pub(crate) fn open_orders(&self, symbol: Option<&str>) -> Vec<Value> {
        self.orders
            .values()
            .filter(|o| o.is_open() && symbol.is_none_or(|s| o.symbol == s))
            .map(|o| self.order_json(o, OrderShape::Query))
            .collect()
    }

    pub(crate) fn all_orders(&self, params: &Params) -> Result<Vec<Value>, ApiError> {
        let symbol = self.symbol_param(params)?;
        let from = params.int("orderId")?;
        let start = params.int("startTime")?;
        let end = params.int("endTime")?;
        let limit = params.int("limit")?.unwrap_or(500).clamp(1, 1000) as usize;
        let mut rows: Vec<&Order> = self
            .orders
            .values()
            .filter(|o| o.symbol == symbol)
            .filter(|o| from.is_none_or(|id| o.order_id >= id))
            .filter(|o| start.is_none_or(|t| o.time >= t) && end.is_none_or(|t| o.time <= t))
            .collect();
        page(&mut rows, from.is_some(), limit);
        Ok(rows
            .into_iter()
            .map(|o| self.order_json(o, OrderShape::Query))
            .collect())
    }

    pub(crate) fn user_trades(&self, params: &Params) -> Result<Vec<Value>, ApiError> {
        let symbol = self.symbol_param(params)?;
        let order_id = params.int("orderId")?;
        let from_id = params.int("fromId")?;
        let start = params.int("startTime")?;
        let end = params.int("endTime")?;
        let limit = params.int("limit")?.unwrap_or(500).clamp(1, 1000) as usize;
        let spec = self.spec(&symbol)?;
        let mut rows: Vec<&Trade> = self
            .trades
            .iter()
            .filter(|t| t.symbol == symbol)
            .filter(|t| order_id.is_none_or(|id| t.order_id == id))
            .filter(|t| from_id.is_none_or(|id| t.id >= id))
            .filter(|t| start.is_none_or(|s| t.time >= s) && end.is_none_or(|e| t.time <= e))
            .collect();
        page(&mut rows, from_id.is_some(), limit);
        Ok(rows.into_iter().map(|t| wire::trade(t, spec)).collect())
    }

    // ----- account settings -------------------------------------------------------------------

    pub(crate) fn set_leverage(&mut self, params: &Params) -> Result<Value, ApiError> {
        let symbol = self.symbol_param(params)?;
        let leverage = params
            .int("leverage")?
            .ok_or_else(|| ApiError::mandatory("leverage"))?;
        if !(1..=125).contains(&leverage) {
            return Err(ApiError::bad(
                -4028,
                format!("Leverage {leverage} is not valid"),
            ));
        }
        self.leverage.insert(symbol.clone(), leverage as u32);
        Ok(
            json!({ "leverage": leverage, "maxNotionalValue": max_notional(leverage as u32), "symbol": symbol }),
        )
    }

    pub(crate) fn set_margin_type(&mut self, params: &Params) -> Result<Value, ApiError> {
        let symbol = self.symbol_param(params)?;
        let margin_type = MarginType::parse(&params.required("marginType")?.to_ascii_uppercase())?;
        if self.margin_type_of(&symbol) == margin_type {
            return Err(ApiError::bad(-4046, "No need to change margin type."));
        }
        if self
            .orders
            .values()
            .any(|o| o.is_open() && o.symbol == symbol)
        {
            return Err(ApiError::bad(
                -4047,
                "Margin type cannot be changed if there exists open orders.",
            ));
        }
        if self
            .positions
            .iter()
            .any(|((s, _), p)| *s == symbol && !p.amount.is_zero())
        {
            return Err(ApiError::bad(
                -4048,
                "Margin type cannot be changed if there exists position.",
            ));
        }
        self.margin_type.insert(symbol, margin_type);
        Ok(json!({ "code": 200, "msg": "success" }))
    }

    pub(crate) fn dual_side(&self) -> bool {
        self.dual_side
    }

    pub(crate) fn set_dual_side(&mut self, params: &Params) -> Result<Value, ApiError> {
        let dual = params
            .boolean("dualSidePosition")?
            .ok_or_else(|| ApiError::mandatory("dualSidePosition"))?;
        if dual == self.dual_side {
            return Err(ApiError::bad(-4059, "No need to change position side."));
        }
        if self.positions.values().any(|p| !p.amount.is_zero())
            || self.orders.values().any(Order::is_open)
        {
            return Err(ApiError::bad(
                -4068,
                "Position side cannot be changed if there exists position.",
            ));
        }
        self.dual_side = dual;
        Ok(json!({ "code": 200, "msg": "success" }))
    }

    /// `POST /fapi/v1/countdownCancelAll`: cancel the symbol's open orders unless called again in time.
    pub(crate) fn countdown_cancel_all(
        &mut self,
        params: &Params,
        now: i64,
    ) -> Result<Value, ApiError> {
        let symbol = self.symbol_param(params)?;
        let countdown = params
            .int("countdownTime")?
            .ok_or_else(|| ApiError::mandatory("countdownTime"))?;
        if countdown < 0 {
            return Err(ApiError::malformed("countdownTime"));
        }
        if countdown == 0 {
            self.countdowns.remove(&symbol);
        } else {
            // A countdown past the end of the clock is malformed, not a panic.
            let deadline = now
                .checked_add(countdown)
                .ok_or_else(|| ApiError::malformed("countdownTime"))?;
            self.countdowns
                .insert(symbol.clone(), (deadline, countdown));
        }
        Ok(json!({ "symbol": symbol, "countdownTime": countdown.to_string() }))
    }

    // ----- positions and account views ----------------------------------------------------------

    /// Rows for positionRisk: v2 lists every symbol (or the one asked), v3 only symbols with a
    /// position or open orders.
    pub(crate) fn position_risk(&self, symbol: Option<&str>, v3: bool) -> Vec<Value> {
        let sides: &[PositionSide] = if self.dual_side {
            &[PositionSide::Long, PositionSide::Short]
        } else {
            &[PositionSide::Both]
        };
        let mut rows = Vec::new();
        for (name, market) in &self.markets {
            if symbol.is_some_and(|s| s != name) {
                continue;
            }
            let has_orders = self
                .orders
                .values()
                .any(|o| o.is_open() && o.symbol == *name);
            for side in sides {
                let position = self.position(name, *side);
                if v3 && position.amount.is_zero() && !has_orders {
                    continue;
                }
                rows.push(self.position_row(name, market, *side, &position, v3));
            }
        }
        rows
    }

    fn position_row(
        &self,
        symbol: &str,
        market: &Market,
        side: PositionSide,
        position: &Position,
        v3: bool,
    ) -> Value {
        let spec = &market.spec;
        let leverage = self.leverage_of(symbol);
        let notional = position.amount * market.mark;
        let initial = notional.abs() / Decimal::from(leverage);
        let upnl = wire::unrealized(position, market.mark);
        let margin_type = self.margin_type_of(symbol);
        if v3 {
            json!({
                "symbol": symbol,
                "positionSide": side.as_str(),
                "positionAmt": spec.fmt_qty(position.amount),
                "entryPrice": spec.fmt_avg(position.entry_price),
                "breakEvenPrice": spec.fmt_avg(position.entry_price),
                "markPrice": wire::fmt8(market.mark),
                "unRealizedProfit": wire::fmt8(upnl),
                "liquidationPrice": "0",
                "isolatedMargin": "0",
                "notional": wire::fmt8(notional),
                "marginAsset": "USDT",
                "isolatedWallet": "0",
                "initialMargin": wire::fmt8(initial),
                "maintMargin": wire::fmt8(notional.abs() * MAINT_MARGIN_RATE),
                "positionInitialMargin": wire::fmt8(initial),
                "openOrderInitialMargin": "0",
                "adl": 0,
                "bidNotional": "0",
                "askNotional": "0",
                "updateTime": position.update_time,
            })
        } else {
            json!({
                "entryPrice": spec.fmt_avg(position.entry_price),
                "breakEvenPrice": spec.fmt_avg(position.entry_price),
                "marginType": margin_type.lower(),
                "isAutoAddMargin": "false",
                "isolatedMargin": "0.00000000",
                "leverage": leverage.to_string(),
                "liquidationPrice": "0",
                "markPrice": wire::fmt8(market.mark),
                "maxNotionalValue": max_notional(leverage),
                "positionAmt": spec.fmt_qty(position.amount),
                "notional": wire::fmt8(notional),
                "isolatedWallet": "0",
                "symbol": symbol,
                "unRealizedProfit": wire::fmt8(upnl),
                "positionSide": side.as_str(),
                "updateTime": position.update_time,
            })
        }
    }

    pub(crate) fn account(&self, v3: bool, now: i64) -> Value {
        let upnl = self.unrealized_total();
        let position_margin = self.position_margin();
        let order_margin = self.open_order_margin();
        let available = self.available_balance();
        let maint = self.maintenance_margin();
        let f = wire::fmt8;
        let mut asset = json!({
            "asset": "USDT",
            "walletBalance": f(self.wallet),
            "unrealizedProfit": f(upnl),
            "marginBalance": f(self.wallet + upnl),
            "maintMargin": f(maint),
            "initialMargin": f(position_margin + order_margin),
            "positionInitialMargin": f(position_margin),
            "openOrderInitialMargin": f(order_margin),
            "crossWalletBalance": f(self.wallet),
            "crossUnPnl": f(upnl),
            "availableBalance": f(available),
            "maxWithdrawAmount": f(available),
            "updateTime": now,
        });
        let mut account = json!({
            "totalInitialMargin": f(position_margin + order_margin),
            "totalMaintMargin": f(maint),
            "totalWalletBalance": f(self.wallet),
            "totalUnrealizedProfit": f(upnl),
            "totalMarginBalance": f(self.wallet + upnl),
            "totalPositionInitialMargin": f(position_margin),
            "totalOpenOrderInitialMargin": f(order_margin),
            "totalCrossWalletBalance": f(self.wallet),
            "totalCrossUnPnl": f(upnl),
            "availableBalance": f(available),
            "maxWithdrawAmount": f(available),
        });
        let mut positions = Vec::new();
        for ((symbol, side), position) in &self.positions {
            if v3 && position.amount.is_zero() {
                continue;
            }
            let market = &self.markets[symbol];
            let spec = &market.spec;
            let leverage = self.leverage_of(symbol);
            let notional = position.amount * market.mark;
            let initial = notional.abs() / Decimal::from(leverage);
            let row = if v3 {
                json!({
                    "symbol": symbol, "positionSide": side.as_str(), "positionAmt": spec.fmt_qty(position.amount),
                    "unrealizedProfit": f(wire::unrealized(position, market.mark)), "isolatedMargin": f(Decimal::ZERO),
                    "notional": f(notional), "isolatedWallet": "0", "initialMargin": f(initial),
                    "maintMargin": f(notional.abs() * MAINT_MARGIN_RATE), "updateTime": position.update_time,
                })
            } else {
                json!({
                    "symbol": symbol, "initialMargin": f(initial), "maintMargin": f(notional.abs() * MAINT_MARGIN_RATE),
                    "unrealizedProfit": f(wire::unrealized(position, market.mark)), "positionInitialMargin": f(initial),
                    "openOrderInitialMargin": "0", "leverage": leverage.to_string(),
                    "isolated": self.margin_type_of(symbol) == MarginType::Isolated,
                    "entryPrice": spec.fmt_avg(position.entry_price), "maxNotional": max_notional(leverage),
                    "bidNotional": "0", "askNotional": "0", "positionSide": side.as_str(),
                    "positionAmt": spec.fmt_qty(position.amount), "updateTime": position.update_time,
                })
            };
            positions.push(row);
        }
        if !v3 {
            asset["marginAvailable"] = json!(true);
            let header = json!({
                "feeTier": 0, "canTrade": true, "feeBurn": false, "canDeposit": true, "canWithdraw": true, "updateTime": 0,
                "multiAssetsMargin": false, "tradeGroupId": -1,
            });
            for (k, v) in header.as_object().expect("object") {
                account[k] = v.clone();
            }
        }
        account["assets"] = json!([asset]);
        account["positions"] = Value::Array(positions);
        account
    }

    pub(crate) fn balance(&self, now: i64) -> Value {
        let f = wire::fmt8;
        let available = self.available_balance();
        json!([{
            "accountAlias": "SimA",
            "asset": "USDT",
            "balance": f(self.wallet),
            "crossWalletBalance": f(self.wallet),
            "crossUnPnl": f(self.unrealized_total()),
            "availableBalance": f(available),
            "maxWithdrawAmount": f(available),
            "marginAvailable": true,
            "updateTime": now,
        }])
    }

    // ----- time passing -----------------------------------------------------------------------

    /// One price tick: move the prices, fill resting LIMIT orders that the price crossed, trigger
    /// algo orders, fire countdowns, expire listen keys, and publish the market streams.
    pub(crate) fn tick(&mut self, now: i64) {
        self.tick_count += 1;
        let symbols: Vec<String> = self.markets.keys().cloned().collect();
        for symbol in &symbols {
            let changed = self.markets.get_mut(symbol).expect("known").tick(now);
            if changed {
                self.on_price_change(symbol, now);
            }
            // Other traders trade after the price moved, at the new price.
            let aggs = self.markets.get_mut(symbol).expect("known").flow(now);
            self.emit_agg_trades(symbol, &aggs, now);
        }
        self.publish_mark_prices(None, now);
        self.publish_tickers(now);
        let due: Vec<String> = self
            .countdowns
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for symbol in due {
            self.countdowns.remove(&symbol);
            self.cancel_all(&symbol, now);
        }
        let expired: Vec<String> = self
            .listen_keys
            .iter()
            .filter(|(_, k)| k.expires_at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.listen_keys.remove(&key);
            self.expire_key(key, now);
        }
    }

    /// The control API's price pin (`release` resumes the walk at the pinned price).
    pub(crate) fn pin_price(
        &mut self,
        symbol: &str,
        price: Option<Decimal>,
        now: i64,
    ) -> Result<Value, ApiError> {
        let market = self
            .markets
            .get_mut(symbol)
            .ok_or_else(ApiError::invalid_symbol)?;
        match price {
            Some(price) => {
                if price <= Decimal::ZERO {
                    return Err(ApiError::bad(-1102, "price must be positive"));
                }
                // Above maxPrice the book and every notional built on the price may not fit a
                // decimal (`Decimal::MAX` panicked the request, then every book read): refused.
                if price > market.spec.max_price {
                    return Err(ApiError::bad(
                        -1102,
                        format!(
                            "price {price} is above {symbol}'s maxPrice {}",
                            market.spec.max_price.normalize()
                        ),
                    ));
                }
                let price = market
                    .spec
                    .round_price_down(price)
                    .max(market.spec.tick_size);
                market.set_price(price, now);
                market.pinned = true;
            }
            None => market.pinned = false,
        }
        let reply = json!({
            "symbol": symbol,
            "price": market.spec.fmt_price(market.last),
            "pinned": market.pinned,
        });
        if price.is_some() {
            self.on_price_change(symbol, now);
            // Publish at once so tests that pin a price see the tick without waiting for the timer.
            // (Depth streams follow their own speeds: the depth timer sends the new book.)
            self.publish_mark_prices(Some(symbol), now);
        }
        Ok(reply)
    }

    fn on_price_change(&mut self, symbol: &str, now: i64) {
        self.markets
            .get_mut(symbol)
            .expect("known symbol")
            .record(now, None);
        self.match_resting(symbol, now);
        self.evaluate_algos(symbol, now);
        let market = &self.markets[symbol];
        let (bids, asks) = market.book(1);
        let spec = &market.spec;
        let payload = json!({
            "e": "bookTicker", "u": market.book_update_id, "E": now, "T": now, "s": symbol,
            "b": spec.fmt_price(bids[0].price), "B": spec.fmt_qty(bids[0].qty),
            "a": spec.fmt_price(asks[0].price), "A": spec.fmt_qty(asks[0].qty),
        });
        let stream = format!("{}@bookTicker", symbol.to_ascii_lowercase());
        self.publish_all_book_ticker(&payload);
        self.outbox.push(Outgoing::Market { stream, payload });
    }

    /// Resting LIMIT orders fill, as maker and at their own price, once the price crosses them.
    fn match_resting(&mut self, symbol: &str, now: i64) {
        let last = self.markets[symbol].last;
        let ids: Vec<i64> = self
            .orders
            .values()
            .filter(|o| o.is_open() && o.symbol == symbol && o.order_type == OrderType::Limit)
            .filter(|o| !self.to_fill.contains(&o.order_id))
            .filter(|o| {
                (o.side == Side::Buy && last <= o.price)
                    || (o.side == Side::Sell && last >= o.price)
            })
            .map(|o| o.order_id)
            .collect();
        for id in ids {
            let order = self.orders[&id].clone();
            let qty = if order.reduce_only {
                self.reducible(&order)
            } else {
                order.remaining()
            };
            if qty.is_zero() {
                self.finish(id, OrderStatus::Expired, 4, now);
                continue;
            }
            self.apply_fill(id, order.price, qty, true, now);
        }
    }

    pub(crate) fn mark_price_json(&self, market: &Market, now: i64) -> Value {
        json!({
            "e": "markPriceUpdate",
            "E": now,
            "s": market.spec.symbol,
            "p": wire::fmt8(market.mark),
            "ap": wire::fmt8(market.mark),
            "i": wire::fmt8(market.index),
            "P": wire::fmt8(market.index),
            "r": wire::fmt8(market.funding_rate),
            "T": next_funding_time(now),
        })
    }

    /// Mark price streams: `@1s` every tick, the plain 3-second stream every third tick (and
    /// always when a pin forces an update).
    fn publish_mark_prices(&mut self, only: Option<&str>, now: i64) {
        let every_third = self.tick_count.is_multiple_of(3) || only.is_some();
        let mut all = Vec::new();
        let mut out = Vec::new();
        for (symbol, market) in &self.markets {
            if only.is_some_and(|s| s != symbol) {
                continue;
            }
            let payload = self.mark_price_json(market, now);
            let lower = symbol.to_ascii_lowercase();
            out.push(Outgoing::Market {
                stream: format!("{lower}@markPrice@1s"),
                payload: payload.clone(),
            });
            if every_third {
                out.push(Outgoing::Market {
                    stream: format!("{lower}@markPrice"),
                    payload: payload.clone(),
                });
            }
            all.push(payload);
        }
        out.push(Outgoing::Market {
            stream: "!markPrice@arr@1s".into(),
            payload: Value::Array(all.clone()),
        });
        if every_third {
            out.push(Outgoing::Market {
                stream: "!markPrice@arr".into(),
                payload: Value::Array(all),
            });
        }
        self.outbox.extend(out);
    }
}

/// The price candles besides the trade candles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PriceKline {
    Mark,
    Index,
    Premium,
}

/// What a book-depth stream last sent: the ids its next event chains from and, for a diff stream,
/// the book its next diff is taken against.
#[derive(Debug, Clone)]
struct DepthCursor {
    symbol: String,
    /// `Some(n)` for a partial stream of `n` levels a side, `None` for a diff stream.
    levels: Option<usize>,
    speed_ms: i64,
    /// The start of the next slot at which the stream may send.
    next_due: i64,
    /// The `u` of the previous event (before the first one, the book's id at subscription).
    last_u: i64,
    sent: bool,
    bids: Vec<Level>,
    asks: Vec<Level>,
}

/// `<symbol>@depth[<5|10|20>][@100ms|@250ms|@500ms]` as (symbol, partial levels, speed in ms).
/// Without a suffix a stream runs at 250 ms, as Binance's do. Binance documents `@100ms` and
/// `@500ms` only; `@250ms` (the default spelled out) is served too.
fn parse_depth_stream(stream: &str) -> Option<(String, Option<usize>, i64)> {
    let mut parts = stream.split('@');
    let symbol = parts.next()?;
    let levels = match parts.next()?.strip_prefix("depth")? {
        "" => None,
        "5" => Some(5),
        "10" => Some(10),
        "20" => Some(20),
        _ => return None,
    };
    let speed_ms = match parts.next() {
        None | Some("250ms") => 250,
        Some("100ms") => 100,
        Some("500ms") => 500,
        Some(_) => return None,
    };
    if parts.next().is_some() || symbol.is_empty() {
        return None;
    }
    Some((symbol.to_ascii_uppercase(), levels, speed_ms))
}

/// Binance's paging of history lists: from a given id, the first `limit` rows; otherwise the
/// most recent `limit` rows.
fn page<T>(rows: &mut Vec<T>, from_an_id: bool, limit: usize) {
    if from_an_id {
        rows.truncate(limit);
    } else if rows.len() > limit {
        rows.drain(..rows.len() - limit);
    }
}

/// A `limit` parameter between 1 and `max`, `default` when not sent; out of range is -1130, as
/// `klines` answers.
fn limit_param(params: &Params, default: i64, max: i64) -> Result<usize, ApiError> {
    let limit = params.int("limit")?.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad(-1130, "Invalid data sent for a parameter."));
    }
    Ok(limit as usize)
}

/// The client order id rule: `^[\.A-Z\:/a-z0-9_-]{1,36}$`.
pub(crate) fn check_client_id(id: &str, key: &str) -> Result<(), ApiError> {
    if id.len() > 36 {
        return Err(ApiError::bad(
            -4015,
            "Client order id length should be less than 36 chars",
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '_' | '-'))
    {
        return Err(ApiError::bad(-1100, format!("Illegal characters found in parameter '{key}'; legal range is '^[\\.A-Z\\:/a-z0-9_-]{{1,36}}$'.")));
    }
    Ok(())
}

/// LOT_SIZE (or MARKET_LOT_SIZE) checks, in Binance's order: sign, precision, range, step.
pub(crate) fn check_quantity(
    spec: &SymbolSpec,
    qty: Decimal,
    market: bool,
) -> Result<(), ApiError> {
    let (min, max, step) = if market {
        (
            spec.market_min_qty,
            spec.market_max_qty,
            spec.market_step_size,
        )
    } else {
        (spec.min_qty, spec.max_qty, spec.step_size)
    };
    if qty <= Decimal::ZERO {
        return Err(ApiError::bad(-4003, "Quantity less than or equal to zero."));
    }
    if qty.normalize().scale() > spec.qty_scale() {
        return Err(ApiError::bad(
            -1111,
            "Precision is over the maximum defined for this asset.",
        ));
    }
    if qty < min {
        return Err(ApiError::bad(-4004, "Quantity less than min qty."));
    }
    if qty > max {
        return Err(ApiError::bad(-4005, "Quantity greater than max qty."));
    }
    if !((qty - min) % step).is_zero() {
        return Err(ApiError::bad(-4023, "Quantity not increased by step size."));
    }
    Ok(())
}

/// PRICE_FILTER checks: precision (-1111), range (-4013/-4002), tick (-4014).
pub(crate) fn check_price(spec: &SymbolSpec, price: Decimal) -> Result<(), ApiError> {
    if price <= Decimal::ZERO {
        return Err(ApiError::bad(-4001, "Price less than 0."));
    }
    if price.normalize().scale() > spec.price_precision {
        return Err(ApiError::bad(
            -1111,
            "Precision is over the maximum defined for this asset.",
        ));
    }
    if price < spec.min_price {
        return Err(ApiError::bad(-4013, "Price less than min price."));
    }
    if price > spec.max_price {
        return Err(ApiError::bad(-4002, "Price greater than max price."));
    }
    if !((price - spec.min_price) % spec.tick_size).is_zero() {
        return Err(ApiError::bad(-4014, "Price not increased by tick size."));
    }
    Ok(())
}

/// One notional bracket: up to `cap`, positions may use up to `leverage`.
struct Bracket {
    leverage: u32,
    floor: u64,
    cap: u64,
    maint_ratio: f64,
    cum: u64,
}

/// The leverage brackets of every simulated symbol (BTCUSDT's shape, simplified).
const BRACKETS: [Bracket; 6] = [
    Bracket {
        leverage: 125,
        floor: 0,
        cap: 50_000,
        maint_ratio: 0.004,
        cum: 0,
    },
    Bracket {
        leverage: 100,
        floor: 50_000,
        cap: 250_000,
        maint_ratio: 0.005,
        cum: 50,
    },
    Bracket {
        leverage: 50,
        floor: 250_000,
        cap: 1_000_000,
        maint_ratio: 0.01,
        cum: 1_300,
    },
    Bracket {
        leverage: 20,
        floor: 1_000_000,
        cap: 10_000_000,
        maint_ratio: 0.025,
        cum: 16_300,
    },
    Bracket {
        leverage: 10,
        floor: 10_000_000,
        cap: 20_000_000,
        maint_ratio: 0.05,
        cum: 266_300,
    },
    Bracket {
        leverage: 5,
        floor: 20_000_000,
        cap: 50_000_000,
        maint_ratio: 0.1,
        cum: 1_266_300,
    },
];

/// The notional cap Binance shows for a leverage: the cap of the largest bracket that allows it.
fn max_notional(leverage: u32) -> String {
    BRACKETS
        .iter()
        .rev()
        .find(|b| b.leverage >= leverage)
        .map_or(BRACKETS[0].cap, |b| b.cap)
        .to_string()
}

/// Kline interval names and their length in ms.
fn interval_ms(interval: &str) -> Option<i64> {
    const MINUTE: i64 = 60_000;
    Some(match interval {
        "1m" => MINUTE,
        "3m" => 3 * MINUTE,
        "5m" => 5 * MINUTE,
        "15m" => 15 * MINUTE,
        "30m" => 30 * MINUTE,
        "1h" => 60 * MINUTE,
        "2h" => 120 * MINUTE,
        "4h" => 240 * MINUTE,
        "6h" => 360 * MINUTE,
        "8h" => 480 * MINUTE,
        "12h" => 720 * MINUTE,
        "1d" => 1440 * MINUTE,
        _ => return None,
    })
}

/// Funding happens every 8 hours at 00:00, 08:00 and 16:00 UTC.
fn next_funding_time(now: i64) -> i64 {
    let period = 8 * 3600 * 1000;
    (now / period + 1) * period
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether an order closes a hedge-mode side (a SELL on LONG, a BUY on SHORT).
fn closes_hedge_side(order: &Order) -> bool {
    matches!(
        (order.position_side, order.side),
        (PositionSide::Long, Side::Sell) | (PositionSide::Short, Side::Buy)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const T0: i64 = 1_700_000_000_000;

    fn exchange(seed: u64) -> Exchange {
        let config = SimConfig {
            seed,
            ..SimConfig::default()
        };
        let mut ex = Exchange::new(&config).expect("the default configuration is valid");
        ex.start(T0);
        ex
    }

    fn streams(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Every symbol's tape: (symbol, id, aggregate, price, qty, time, buyer is maker).
    fn tapes(ex: &Exchange) -> Vec<(String, i64, i64, Decimal, Decimal, i64, bool)> {
        ex.markets
            .iter()
            .flat_map(|(s, m)| {
                m.tape.iter().map(move |t| {
                    (
                        s.clone(),
                        t.id,
                        t.agg_id,
                        t.price,
                        t.qty,
                        t.time,
                        t.buyer_maker,
                    )
                })
            })
            .collect()
    }

    #[test]
    fn two_exchanges_with_the_same_seed_and_ticks_trade_the_same_flow() {
        let (mut a, mut b, mut c) = (exchange(42), exchange(42), exchange(43));
        for i in 1..=120 {
            let now = T0 + i * 1000;
            a.tick(now);
            b.tick(now);
            c.tick(now);
        }
        assert!(tapes(&a).len() > 500, "{} trades", tapes(&a).len());
        assert_eq!(tapes(&a), tapes(&b));
        assert_ne!(tapes(&a), tapes(&c), "another seed, another flow");
        let klines = |ex: &Exchange| {
            let params = Params::parse("symbol=ETHUSDT&interval=1m", "");
            ex.klines(&params).expect("klines")
        };
        assert_eq!(klines(&a), klines(&b), "the same candles");
    }

    #[test]
    fn an_own_fill_is_a_trade_of_the_public_tape() {
        let mut ex = exchange(42);
        ex.tick(T0 + 1000);
        let params = Params::parse("symbol=DOGEUSDT&side=BUY&type=MARKET&quantity=100", "");
        let order_id = ex.place_order(&params, T0 + 1100).expect("order accepted");
        assert_eq!(ex.fill_batch(order_id, T0 + 1200), FillStep::Done);
        let own = ex.trades.last().expect("a fill").clone();
        let market = &ex.markets["DOGEUSDT"];
        let public = market.tape.back().expect("on the tape");
        assert_eq!(
            (public.id, public.price, public.qty, public.buyer_maker),
            (own.id, own.price, own.qty, false)
        );
    }

    #[test]
    fn the_flow_leaves_the_account_alone() {
        let mut ex = exchange(42);
        let params = Params::parse(
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.010&price=50000",
            "",
        );
        ex.place_order(&params, T0).expect("a resting bid");
        for i in 1..=60 {
            ex.tick(T0 + i * 1000);
        }
        assert!(ex.trades.is_empty(), "no fill of the account's");
        assert_eq!(ex.open_orders(Some("BTCUSDT")).len(), 1);
        assert!(!ex.markets["BTCUSDT"].tape.is_empty());
    }

    /// Runs `ticks` price ticks, one a second, with the depth timer every 50 ms in between and
    /// for half a second after, and returns the events sent on `stream`.
    fn run_depth(ex: &mut Exchange, stream: &str, ticks: i64) -> Vec<Value> {
        let mut events = Vec::new();
        for i in 0..ticks * 20 + 10 {
            let now = T0 + i * 50;
            if i % 20 == 19 && i < ticks * 20 {
                ex.tick(now);
            }
            ex.publish_depth(now);
            for out in ex.drain_outbox() {
                if let Outgoing::Market { stream: s, payload } = out {
                    if s == stream {
                        events.push(payload);
                    }
                }
            }
        }
        events
    }

    fn side_map(levels: &Value) -> BTreeMap<String, String> {
        levels
            .as_array()
            .expect("levels")
            .iter()
            .map(|l| (l[0].as_str().unwrap().into(), l[1].as_str().unwrap().into()))
            .collect()
    }

    #[test]
    fn a_diff_depth_stream_chains_its_ids_and_rebuilds_the_book() {
        let mut ex = exchange(42);
        ex.watch(&streams(&["ethusdt@depth@100ms"]), true);
        let market = &ex.markets["ETHUSDT"];
        let (bids, asks) = market.book(crate::symbols::BOOK_LEVELS);
        let spec = market.spec.clone();
        let to_map = |side: &[Level]| -> BTreeMap<String, String> {
            side.iter()
                .map(|l| (spec.fmt_price(l.price), spec.fmt_qty(l.qty)))
                .collect()
        };
        let (mut local_bids, mut local_asks) = (to_map(&bids), to_map(&asks));
        let mut last_u = market.book_update_id;
        let events = run_depth(&mut ex, "ethusdt@depth@100ms", 20);
        assert!(events.len() >= 10, "{} events in 20 ticks", events.len());
        for event in &events {
            assert_eq!(event["pu"], last_u, "pu chains: {event}");
            assert_eq!(event["U"], last_u + 1);
            last_u = event["u"].as_i64().unwrap();
            for (side, local) in [("b", &mut local_bids), ("a", &mut local_asks)] {
                for (price, qty) in side_map(&event[side]) {
                    if dec(&qty).is_zero() {
                        local.remove(&price);
                    } else {
                        local.insert(price, qty);
                    }
                }
            }
        }
        let market = &ex.markets["ETHUSDT"];
        let (bids, asks) = market.book(crate::symbols::BOOK_LEVELS);
        assert_eq!(last_u, market.book_update_id);
        assert_eq!(local_bids, to_map(&bids));
        assert_eq!(local_asks, to_map(&asks));
    }

    fn dec(text: &str) -> Decimal {
        text.parse().expect("a decimal")
    }

    #[test]
    fn depth_streams_keep_to_their_speeds_and_send_only_changes() {
        let mut ex = exchange(42);
        ex.markets.get_mut("BTCUSDT").unwrap().pinned = true;
        ex.watch(&streams(&["btcusdt@depth@500ms", "btcusdt@depth10"]), true);
        // Pinned: one snapshot for the partial stream's new subscriber, then nothing.
        let quiet = run_depth(&mut ex, "btcusdt@depth10", 3);
        assert_eq!(quiet.len(), 1, "{quiet:?}");
        assert_eq!(quiet[0]["b"].as_array().map(Vec::len), Some(10));
        assert!(run_depth(&mut ex, "btcusdt@depth@500ms", 3).is_empty());
        // A price moved every 50 ms: the 500 ms stream sends twice a second, no more.
        let mut sent = Vec::new();
        for i in 0..40 {
            let now = T0 + 10_000 + i * 50;
            let price = Decimal::from(60_000 + i);
            ex.markets.get_mut("BTCUSDT").unwrap().set_price(price, now);
            ex.publish_depth(now);
            for out in ex.drain_outbox() {
                if let Outgoing::Market { stream, payload } = out {
                    if stream == "btcusdt@depth@500ms" {
                        sent.push(payload["E"].as_i64().unwrap());
                    }
                }
            }
        }
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert!(sent.windows(2).all(|w| w[1] - w[0] == 500), "{sent:?}");
    }

    #[test]
    fn depth_stream_names_parse_to_symbol_levels_and_speed() {
        assert_eq!(
            parse_depth_stream("btcusdt@depth"),
            Some(("BTCUSDT".into(), None, 250))
        );
        assert_eq!(
            parse_depth_stream("btcusdt@depth@100ms"),
            Some(("BTCUSDT".into(), None, 100))
        );
        assert_eq!(
            parse_depth_stream("ethusdt@depth20@500ms"),
            Some(("ETHUSDT".into(), Some(20), 500))
        );
        for silent in [
            "btcusdt@depth7",
            "btcusdt@depth@1000ms",
            "btcusdt@depth@100ms@x",
            "btcusdt@aggTrade",
            "@depth",
        ] {
            assert_eq!(parse_depth_stream(silent), None, "{silent}");
        }
    }
}
