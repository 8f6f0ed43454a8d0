//! The ticker and candle market streams: `<symbol>@ticker`, `<symbol>@miniTicker`, their
//! all-market forms `!ticker@arr` and `!miniTicker@arr`, `<symbol>@kline_<interval>`, and the
//! all-market `!bookTicker`. They are built from what the REST endpoints read (the 24-hour
//! ticker, the candles, the book), so a stream and its endpoint always agree.
//!
//! Only streams someone watches are built, once per price tick (`--tick-ms`, 1 s by default).
//! Binance sends `@ticker`/`@miniTicker` every 500 ms (`@arr` every 1000 ms) and klines every
//! 250 ms; between two ticks nothing here changes, so more frequent frames would repeat.

use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::{interval_ms, Exchange, Outgoing};
use crate::market::Market;

/// `<symbol>@kline_<interval>`, split; `None` for any other stream name.
fn parse_kline_stream(stream: &str) -> Option<(&str, &str, i64)> {
    let (symbol, interval) = stream.split_once("@kline_")?;
    if symbol.is_empty() || interval.contains('@') {
        return None;
    }
    Some((symbol, interval, interval_ms(interval)?))
}

impl Exchange {
    /// Builds and queues the ticker and kline streams that have subscribers (see the module doc).
    pub(crate) fn publish_tickers(&mut self, now: i64) {
        if self.wanted.is_empty() {
            return;
        }
        let mut out = Vec::new();
        let mut all_tickers = Vec::new();
        let mut all_minis = Vec::new();
        let want_all_tickers = self.wanted.contains_key("!ticker@arr");
        let want_all_minis = self.wanted.contains_key("!miniTicker@arr");
        for symbol in self.markets.keys() {
            let lower = symbol.to_ascii_lowercase();
            let ticker_stream = format!("{lower}@ticker");
            let mini_stream = format!("{lower}@miniTicker");
            let want_ticker = self.wanted.contains_key(&ticker_stream);
            let want_mini = self.wanted.contains_key(&mini_stream);
            if !(want_ticker || want_mini || want_all_tickers || want_all_minis) {
                continue;
            }
            let rest = self.ticker_24hr(symbol, now);
            let (ticker, mini) = ticker_events(&rest, now);
            if want_ticker {
                out.push(Outgoing::Market {
                    stream: ticker_stream,
                    payload: ticker.clone(),
                });
            }
            if want_mini {
                out.push(Outgoing::Market {
                    stream: mini_stream,
                    payload: mini.clone(),
                });
            }
            all_tickers.push(ticker);
            all_minis.push(mini);
        }
        if want_all_tickers {
            out.push(Outgoing::Market {
                stream: "!ticker@arr".into(),
                payload: Value::Array(all_tickers),
            });
        }
        if want_all_minis {
            out.push(Outgoing::Market {
                stream: "!miniTicker@arr".into(),
                payload: Value::Array(all_minis),
            });
        }
        for stream in self.wanted.keys() {
            let Some((lower, interval, length)) = parse_kline_stream(stream) else {
                continue;
            };
            let Some(market) = self.markets.get(&lower.to_ascii_uppercase()) else {
                continue;
            };
            if let Some(payload) = kline_event(market, interval, length, now) {
                out.push(Outgoing::Market {
                    stream: stream.clone(),
                    payload,
                });
            }
        }
        self.outbox.extend(out);
    }

    /// `!bookTicker`: every symbol's best bid and ask as it changes, the payload of its
    /// `<symbol>@bookTicker`, queued only when someone watches it.
    pub(crate) fn publish_all_book_ticker(&mut self, payload: &Value) {
        if self.wanted.contains_key("!bookTicker") {
            self.outbox.push(Outgoing::Market {
                stream: "!bookTicker".into(),
                payload: payload.clone(),
            });
        }
    }
}

/// The `24hrTicker` and `24hrMiniTicker` events for a `GET /fapi/v1/ticker/24hr` row.
fn ticker_events(rest: &Value, now: i64) -> (Value, Value) {
    let ticker = json!({
        "e": "24hrTicker", "E": now, "s": rest["symbol"],
        "p": rest["priceChange"], "P": rest["priceChangePercent"], "w": rest["weightedAvgPrice"],
        "c": rest["lastPrice"], "Q": rest["lastQty"], "o": rest["openPrice"],
        "h": rest["highPrice"], "l": rest["lowPrice"], "v": rest["volume"],
        "q": rest["quoteVolume"], "O": rest["openTime"], "C": rest["closeTime"],
        "F": rest["firstId"], "L": rest["lastId"], "n": rest["count"],
    });
    let mini = json!({
        "e": "24hrMiniTicker", "E": now, "s": rest["symbol"],
        "c": rest["lastPrice"], "o": rest["openPrice"], "h": rest["highPrice"],
        "l": rest["lowPrice"], "v": rest["volume"], "q": rest["quoteVolume"],
    });
    (ticker, mini)
}

/// The `kline` event for the candle of `length` ms that `now` falls in (the one
/// `GET /fapi/v1/klines` shows last), `x` true once its close time has passed.
fn kline_event(market: &Market, interval: &str, length: i64, now: i64) -> Option<Value> {
    let bar = market.candles(length, 1).into_iter().last()?;
    let spec = &market.spec;
    let close_time = bar.open_time + length - 1;
    let quote = |d: Decimal| crate::symbols::fixed(d, 5);
    Some(json!({
        "e": "kline", "E": now, "s": spec.symbol,
        "k": {
            "t": bar.open_time, "T": close_time, "s": spec.symbol, "i": interval,
            "f": bar.first_trade_id, "L": bar.last_trade_id,
            "o": spec.fmt_price(bar.open), "c": spec.fmt_price(bar.close),
            "h": spec.fmt_price(bar.high), "l": spec.fmt_price(bar.low),
            "v": spec.fmt_qty(bar.volume), "n": bar.trades, "x": now > close_time,
            "q": quote(bar.quote_volume), "V": spec.fmt_qty(bar.taker_buy_volume),
            "Q": quote(bar.taker_buy_quote), "B": "0",
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use std::collections::BTreeSet;

    const NOW: i64 = 1_800_000_000_000;

    fn watching(names: &[&str]) -> Exchange {
        let mut ex = Exchange::new(&SimConfig::default()).expect("default config");
        ex.start(NOW);
        let streams: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
        ex.watch(&streams, true);
        ex
    }

    fn published(ex: &mut Exchange) -> Vec<(String, Value)> {
        ex.drain_outbox()
            .into_iter()
            .filter_map(|o| match o {
                Outgoing::Market { stream, payload } => Some((stream, payload)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn nothing_is_built_for_streams_nobody_watches() {
        let mut ex = watching(&[]);
        ex.publish_tickers(NOW);
        assert!(published(&mut ex).is_empty());
    }

    #[test]
    fn tickers_agree_with_the_rest_24_hour_ticker() {
        let mut ex = watching(&["btcusdt@ticker", "btcusdt@miniTicker", "!miniTicker@arr"]);
        ex.tick(NOW + 1_000);
        ex.drain_outbox();
        ex.publish_tickers(NOW + 1_000);
        let out = published(&mut ex);
        let names: Vec<&str> = out.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names,
            ["btcusdt@ticker", "btcusdt@miniTicker", "!miniTicker@arr"]
        );
        let rest = ex.ticker_24hr("BTCUSDT", NOW + 1_000);
        let ticker = &out[0].1;
        assert_eq!(ticker["e"], "24hrTicker");
        assert_eq!(ticker["c"], rest["lastPrice"]);
        assert_eq!(ticker["n"], rest["count"]);
        assert_eq!(out[1].1["c"], rest["lastPrice"]);
        let all = out[2].1.as_array().unwrap();
        assert_eq!(all.len(), ex.markets.len());
    }

    #[test]
    fn a_kline_stream_shows_the_current_candle_of_its_interval() {
        let mut ex = watching(&["ethusdt@kline_1m", "ethusdt@kline_7x", "ethusdt@kline_1m@x"]);
        let now = NOW + 61_000;
        ex.tick(now);
        ex.drain_outbox();
        ex.publish_tickers(now);
        let out = published(&mut ex);
        assert_eq!(out.len(), 1, "{out:?}");
        let (stream, event) = &out[0];
        assert_eq!(stream, "ethusdt@kline_1m");
        let k = &event["k"];
        assert_eq!(k["i"], "1m");
        let open = k["t"].as_i64().unwrap();
        assert_eq!(open % 60_000, 0);
        assert!(open <= now && now <= k["T"].as_i64().unwrap());
        assert_eq!(k["x"], false);
        assert_eq!(
            ex.markets["ETHUSDT"]
                .spec
                .fmt_price(ex.markets["ETHUSDT"].last),
            k["c"].as_str().unwrap()
        );
    }

    #[test]
    fn kline_stream_names_parse_to_symbol_and_interval() {
        assert_eq!(
            parse_kline_stream("btcusdt@kline_15m"),
            Some(("btcusdt", "15m", 900_000))
        );
        for bad in [
            "btcusdt@kline_",
            "@kline_1m",
            "btcusdt@kline_1m@x",
            "btcusdt@klines_1m",
        ] {
            assert_eq!(parse_kline_stream(bad), None, "{bad}");
        }
    }
}
