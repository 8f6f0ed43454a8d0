//! The instruments the simulator lists: their exchangeInfo filters, start prices and book depth,
//! and the decimal formatting Binance applies to each (prices at tick precision, quantities at step
//! precision).

use std::str::FromStr;

use rust_decimal::Decimal;

/// One tradable perpetual contract.
#[derive(Debug, Clone)]
pub(crate) struct SymbolSpec {
    pub(crate) symbol: String,
    pub(crate) base_asset: String,
    pub(crate) start_price: Decimal,
    pub(crate) tick_size: Decimal,
    pub(crate) min_price: Decimal,
    pub(crate) max_price: Decimal,
    pub(crate) step_size: Decimal,
    pub(crate) min_qty: Decimal,
    pub(crate) max_qty: Decimal,
    pub(crate) market_step_size: Decimal,
    pub(crate) market_min_qty: Decimal,
    pub(crate) market_max_qty: Decimal,
    pub(crate) min_notional: Decimal,
    pub(crate) multiplier_up: Decimal,
    pub(crate) multiplier_down: Decimal,
    pub(crate) max_num_orders: u32,
    /// `pricePrecision`: decimals a price may carry (-1111 beyond). Usually the tick's scale, but
    /// BTCUSDT allows two decimals with a 0.10 tick, so an off-tick price there gets -4014.
    pub(crate) price_precision: u32,
    /// Notional (USDT) resting at each simulated book level; the book has [`BOOK_LEVELS`] levels a side.
    pub(crate) level_notional: Decimal,
    pub(crate) onboard_date: i64,
}

/// Levels on each side of the simulated book.
pub(crate) const BOOK_LEVELS: usize = 20;

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).expect("static decimal literal")
}

#[allow(clippy::too_many_arguments)]
fn spec(
    symbol: &str,
    price: &str,
    tick: &str,
    (min_price, max_price): (&str, &str),
    (step, min_qty, max_qty): (&str, &str, &str),
    market_max_qty: &str,
    min_notional: &str,
    level_notional: &str,
    onboard_date: i64,
) -> SymbolSpec {
    SymbolSpec {
        symbol: symbol.to_string(),
        base_asset: symbol.trim_end_matches("USDT").to_string(),
        start_price: d(price),
        tick_size: d(tick),
        min_price: d(min_price),
        max_price: d(max_price),
        step_size: d(step),
        min_qty: d(min_qty),
        max_qty: d(max_qty),
        market_step_size: d(step),
        market_min_qty: d(min_qty),
        market_max_qty: d(market_max_qty),
        min_notional: d(min_notional),
        multiplier_up: d("1.0500"),
        multiplier_down: d("0.9500"),
        max_num_orders: 200,
        // The literal's own scale: "0.010" means prices print with three decimals.
        price_precision: d(tick).scale(),
        level_notional: d(level_notional),
        onboard_date,
    }
}

/// The built-in symbols, with filters as Binance lists them for these contracts (tick, step and
/// minimum notional taken from the live exchangeInfo shapes in the reference; prices are round
/// figures of recent levels).
pub(crate) fn builtin() -> Vec<SymbolSpec> {
    let mut specs = vec![
        spec(
            "AXSUSDT",
            "6.250",
            "0.001",
            ("0.100", "2000"),
            ("1", "1", "1000000"),
            "150000",
            "5",
            "20000",
            1_599_642_000_000,
        ),
        spec(
            "BTCUSDT",
            "95000.00",
            "0.10",
            ("556.80", "4529764"),
            ("0.001", "0.001", "1000"),
            "120",
            "100",
            "400000",
            1_569_398_400_000,
        ),
        spec(
            "ETHUSDT",
            "3400.00",
            "0.01",
            ("39.86", "306177"),
            ("0.001", "0.001", "10000"),
            "2000",
            "20",
            "200000",
            1_569_398_400_000,
        ),
        spec(
            "SOLUSDT",
            "180.0000",
            "0.0100",
            ("0.4200", "6857"),
            ("0.01", "0.01", "1000000"),
            "5000",
            "5",
            "100000",
            1_569_398_400_000,
        ),
        spec(
            "BNBUSDT",
            "650.000",
            "0.010",
            ("6.600", "100000"),
            ("0.01", "0.01", "100000"),
            "2000",
            "5",
            "100000",
            1_569_398_400_000,
        ),
        spec(
            "XRPUSDT",
            "2.3000",
            "0.0001",
            ("0.0143", "100000"),
            ("0.1", "0.1", "10000000"),
            "2000000",
            "5",
            "100000",
            1_569_398_400_000,
        ),
        spec(
            "DOGEUSDT",
            "0.380000",
            "0.000010",
            ("0.002440", "30"),
            ("1", "1", "50000000"),
            "30000000",
            "5",
            "100000",
            1_569_398_400_000,
        ),
    ];
    for spec in &mut specs {
        if spec.symbol == "BTCUSDT" {
            spec.price_precision = 2;
        }
    }
    specs
}

/// Builds a generic contract for `SYMBOL:PRICE` given with `--symbols`: tick size gives about five
/// significant digits, the step size keeps one step worth under ten USDT.
pub(crate) fn extra(text: &str) -> Result<SymbolSpec, String> {
    let (symbol, price) = text.split_once(':').ok_or_else(|| {
        format!("--symbols entry {text:?} must be SYMBOL:PRICE, e.g. LINKUSDT:14.5")
    })?;
    let symbol = symbol.trim().to_ascii_uppercase();
    if symbol.is_empty()
        || !symbol.ends_with("USDT")
        || !symbol.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "--symbols entry {text:?}: symbol must be alphanumeric and end in USDT"
        ));
    }
    let price = Decimal::from_str(price.trim())
        .ok()
        .filter(|p| *p > Decimal::ZERO)
        .ok_or_else(|| format!("--symbols entry {text:?}: price must be a positive decimal"))?;
    let magnitude = decimal_log10_floor(price);
    let tick = pow10(magnitude - 4);
    let step = pow10(-decimal_log10_floor(price).max(0)).min(Decimal::ONE);
    let step = if step >= Decimal::ONE {
        Decimal::ONE
    } else {
        step
    };
    let mut spec = SymbolSpec {
        symbol: symbol.clone(),
        base_asset: symbol.trim_end_matches("USDT").to_string(),
        start_price: price.round_dp(tick.scale()),
        tick_size: tick,
        min_price: tick,
        max_price: price * Decimal::from(100),
        step_size: step,
        min_qty: step,
        max_qty: Decimal::from(1_000_000_000) * step,
        market_step_size: step,
        market_min_qty: step,
        market_max_qty: Decimal::from(100_000_000) * step,
        min_notional: Decimal::from(5),
        multiplier_up: d("1.0500"),
        multiplier_down: d("0.9500"),
        max_num_orders: 200,
        price_precision: tick.normalize().scale(),
        level_notional: Decimal::from(50_000),
        onboard_date: 1_600_000_000_000,
    };
    spec.max_price = spec.max_price.round_dp(tick.scale());
    Ok(spec)
}

fn decimal_log10_floor(value: Decimal) -> i32 {
    let mut exp = 0i32;
    let ten = Decimal::TEN;
    let mut v = value;
    while v >= ten {
        v /= ten;
        exp += 1;
    }
    while v < Decimal::ONE {
        v *= ten;
        exp -= 1;
    }
    exp
}

fn pow10(exp: i32) -> Decimal {
    if exp >= 0 {
        Decimal::from(10u64.pow(exp as u32))
    } else {
        Decimal::new(1, (-exp) as u32)
    }
}

impl SymbolSpec {
    /// Decimals printed for prices: `pricePrecision` (BTCUSDT prints "95000.10" with a 0.10 tick).
    pub(crate) fn price_scale(&self) -> u32 {
        self.price_precision.max(self.tick_size.normalize().scale())
    }

    pub(crate) fn qty_scale(&self) -> u32 {
        self.step_size.normalize().scale()
    }

    /// Formats a price the way Binance prints this symbol's prices.
    pub(crate) fn fmt_price(&self, price: Decimal) -> String {
        fixed(price, self.price_scale())
    }

    pub(crate) fn fmt_qty(&self, qty: Decimal) -> String {
        fixed(qty, self.qty_scale())
    }

    /// Average prices carry at least five decimals (`"0.00000"` in the ACK reply).
    pub(crate) fn fmt_avg(&self, price: Decimal) -> String {
        fixed(price, self.price_scale().max(5))
    }

    pub(crate) fn round_price_down(&self, price: Decimal) -> Decimal {
        (price / self.tick_size).floor() * self.tick_size
    }

    pub(crate) fn round_price_up(&self, price: Decimal) -> Decimal {
        (price / self.tick_size).ceil() * self.tick_size
    }

    pub(crate) fn round_qty_down(&self, qty: Decimal) -> Decimal {
        ((qty / self.step_size).floor() * self.step_size).round_dp(self.qty_scale())
    }
}

/// Formats with exactly `scale` decimals (rounding half-even when there are more).
pub(crate) fn fixed(value: Decimal, scale: u32) -> String {
    let mut v = value.round_dp(scale);
    v.rescale(scale);
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_prices_sit_on_their_tick_grid() {
        for spec in builtin() {
            assert_eq!(
                spec.round_price_down(spec.start_price),
                spec.start_price,
                "{}",
                spec.symbol
            );
            assert!(
                spec.start_price * spec.step_size < spec.min_notional * Decimal::from(10),
                "{}",
                spec.symbol
            );
        }
    }

    #[test]
    fn fixed_keeps_binance_style_trailing_zeros() {
        assert_eq!(fixed(Decimal::ZERO, 5), "0.00000");
        assert_eq!(fixed(d("89.82"), 5), "89.82000");
        assert_eq!(fixed(d("1.23456789"), 2), "1.23");
    }

    #[test]
    fn extra_symbols_get_sensible_filters() {
        let link = extra("linkusdt:14.5").unwrap();
        assert_eq!(link.symbol, "LINKUSDT");
        assert_eq!(link.tick_size, d("0.001"));
        assert_eq!(link.step_size, d("0.1"));
        let pepe = extra("PEPEUSDT:0.00001234").unwrap();
        assert_eq!(pepe.tick_size, d("0.000000001"));
        assert_eq!(pepe.step_size, Decimal::ONE);
        assert!(extra("LINKUSDT").is_err());
        assert!(extra("LINK:1").is_err());
        assert!(extra("LINKUSDT:-1").is_err());
    }
}
