//! A symbol's trading rules, taken from exchangeInfo, and the rounding that makes an order pass
//! them: quantities rounded **down** to the step (MARKET orders use MARKET_LOT_SIZE), prices
//! rounded to the tick in a chosen direction, and the min/max quantity, min-notional and
//! percent-price checks. Every check that fails returns a [`FilterError`] saying why; nothing is
//! ever silently rounded to zero, because a zero quantity sent to the exchange is an error at
//! best and a silent no-op at worst.

use rust_decimal::Decimal;

use model::Side;

use crate::types::{SymbolFilter, SymbolInfo};

/// Why an order cannot be made to fit a symbol's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Quantity or price was zero or negative.
    #[error("{what} must be positive, got {value}")]
    NotPositive {
        /// `quantity` or `price`.
        what: &'static str,
        /// The value given.
        value: Decimal,
    },
    /// The quantity (after rounding) is below the minimum.
    #[error("quantity {qty} is below the minimum {min}")]
    BelowMinQty {
        /// The quantity after rounding down.
        qty: Decimal,
        /// The minimum.
        min: Decimal,
    },
    /// The quantity is above the maximum.
    #[error("quantity {qty} is above the maximum {max}")]
    AboveMaxQty {
        /// The quantity.
        qty: Decimal,
        /// The maximum.
        max: Decimal,
    },
    /// The price is outside `[min, max]`.
    #[error("price {price} is outside [{min}, {max}]")]
    PriceOutOfRange {
        /// The price after rounding.
        price: Decimal,
        /// Lowest allowed.
        min: Decimal,
        /// Highest allowed (0 means no limit).
        max: Decimal,
    },
    /// price × quantity is below MIN_NOTIONAL (not checked for reduce-only orders).
    #[error("notional {notional} is below the minimum {min}")]
    BelowMinNotional {
        /// price × quantity.
        notional: Decimal,
        /// The minimum.
        min: Decimal,
    },
    /// A LIMIT price is too far from the mark price (PERCENT_PRICE).
    #[error("price {price} is outside the allowed band [{low}, {high}] around the mark price")]
    OutsidePercentPrice {
        /// The price.
        price: Decimal,
        /// Lowest allowed SELL price.
        low: Decimal,
        /// Highest allowed BUY price.
        high: Decimal,
    },
    /// The value, on the rules' grid, does not fit in a decimal (a price or quantity no market
    /// has, or rules no exchange sends): refused rather than a panic.
    #[error("{what} {value} does not fit the symbol's rules in a decimal (overflow)")]
    Overflow {
        /// `quantity`, `price` or `notional`.
        what: &'static str,
        /// The value given.
        value: Decimal,
    },
}

/// Which way to round a price to the tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Toward zero (a BUY limit that must not pay more).
    Down,
    /// Away from zero (a SELL limit that must not get less).
    Up,
    /// To the nearest tick, halves up.
    Nearest,
}

/// Whether the quantity is for a MARKET or a LIMIT order: they have separate lot filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LotKind {
    /// Uses MARKET_LOT_SIZE (falls back to LOT_SIZE when absent).
    Market,
    /// Uses LOT_SIZE.
    Limit,
}

/// A quantity range and grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LotSize {
    /// Smallest quantity.
    pub min_qty: Decimal,
    /// Largest quantity (0 means no limit).
    pub max_qty: Decimal,
    /// Grid, anchored at `min_qty` as Binance checks it (0 disables).
    pub step_size: Decimal,
}

/// A price range and grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceFilter {
    /// Lowest price (0 disables).
    pub min_price: Decimal,
    /// Highest price (0 disables).
    pub max_price: Decimal,
    /// Grid, anchored at `min_price` (0 disables).
    pub tick_size: Decimal,
}

/// The rules of one symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolRules {
    /// Symbol.
    pub symbol: String,
    /// `TRADING`, ...
    pub status: String,
    /// PRICE_FILTER.
    pub price: PriceFilter,
    /// LOT_SIZE.
    pub lot: LotSize,
    /// MARKET_LOT_SIZE (LOT_SIZE when the symbol has none).
    pub market_lot: LotSize,
    /// MIN_NOTIONAL, if present.
    pub min_notional: Option<Decimal>,
    /// PERCENT_PRICE `(multiplierUp, multiplierDown)`, if present.
    pub percent_price: Option<(Decimal, Decimal)>,
    /// Decimals allowed in a price.
    pub price_precision: u32,
    /// Decimals allowed in a quantity.
    pub quantity_precision: u32,
}

impl SymbolRules {
    /// Extracts the rules from an exchangeInfo symbol. Missing filters disable their checks.
    pub fn from_info(info: &SymbolInfo) -> SymbolRules {
        let mut rules = SymbolRules {
            symbol: info.symbol.clone(),
            status: info.status.clone(),
            price: PriceFilter {
                min_price: Decimal::ZERO,
                max_price: Decimal::ZERO,
                tick_size: Decimal::ZERO,
            },
            lot: LotSize {
                min_qty: Decimal::ZERO,
                max_qty: Decimal::ZERO,
                step_size: Decimal::ZERO,
            },
            market_lot: LotSize {
                min_qty: Decimal::ZERO,
                max_qty: Decimal::ZERO,
                step_size: Decimal::ZERO,
            },
            min_notional: None,
            percent_price: None,
            price_precision: info.price_precision,
            quantity_precision: info.quantity_precision,
        };
        let mut has_market_lot = false;
        for filter in &info.filters {
            match filter {
                SymbolFilter::PriceFilter {
                    min_price,
                    max_price,
                    tick_size,
                } => {
                    rules.price = PriceFilter {
                        min_price: *min_price,
                        max_price: *max_price,
                        tick_size: *tick_size,
                    }
                }
                SymbolFilter::LotSize {
                    min_qty,
                    max_qty,
                    step_size,
                } => {
                    rules.lot = LotSize {
                        min_qty: *min_qty,
                        max_qty: *max_qty,
                        step_size: *step_size,
                    }
                }
                SymbolFilter::MarketLotSize {
                    min_qty,
                    max_qty,
                    step_size,
                } => {
                    has_market_lot = true;
                    rules.market_lot = LotSize {
                        min_qty: *min_qty,
                        max_qty: *max_qty,
                        step_size: *step_size,
                    }
                }
                SymbolFilter::MinNotional { notional } => rules.min_notional = Some(*notional),
                SymbolFilter::PercentPrice {
                    multiplier_up,
                    multiplier_down,
                } => rules.percent_price = Some((*multiplier_up, *multiplier_down)),
                SymbolFilter::MaxNumOrders { .. } | SymbolFilter::Other => {}
            }
        }
        if !has_market_lot {
            rules.market_lot = rules.lot;
        }
        rules
    }

    /// The lot filter for `kind`.
    pub fn lot_for(&self, kind: LotKind) -> &LotSize {
        match kind {
            LotKind::Market => &self.market_lot,
            LotKind::Limit => &self.lot,
        }
    }

    /// Rounds `qty` **down** to the step of the lot filter for `kind` and checks min/max.
    ///
    /// # Errors
    /// [`FilterError::NotPositive`], [`FilterError::BelowMinQty`] (including a quantity that would
    /// round to zero) or [`FilterError::AboveMaxQty`].
    pub fn round_qty(&self, qty: Decimal, kind: LotKind) -> Result<Decimal, FilterError> {
        round_qty_down(qty, self.lot_for(kind))
    }

    /// Rounds `price` to the tick in direction `rounding` and checks the price range.
    ///
    /// # Errors
    /// [`FilterError::NotPositive`] or [`FilterError::PriceOutOfRange`].
    pub fn round_price(&self, price: Decimal, rounding: Rounding) -> Result<Decimal, FilterError> {
        round_price(price, &self.price, rounding)
    }

    /// Checks price × qty against MIN_NOTIONAL. Reduce-only orders are exempt on Binance, so the
    /// caller passes `reduce_only`. For a MARKET order pass the mark price.
    ///
    /// # Errors
    /// [`FilterError::BelowMinNotional`].
    pub fn check_notional(
        &self,
        price: Decimal,
        qty: Decimal,
        reduce_only: bool,
    ) -> Result<(), FilterError> {
        match self.min_notional {
            Some(min) if !reduce_only => {
                let notional = price.checked_mul(qty).ok_or(FilterError::Overflow {
                    what: "notional",
                    value: price,
                })?;
                if notional < min {
                    Err(FilterError::BelowMinNotional { notional, min })
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Checks a LIMIT price against PERCENT_PRICE: a BUY at most mark × multiplierUp, a SELL at
    /// least mark × multiplierDown.
    ///
    /// # Errors
    /// [`FilterError::OutsidePercentPrice`].
    pub fn check_percent_price(
        &self,
        side: Side,
        price: Decimal,
        mark: Decimal,
    ) -> Result<(), FilterError> {
        let Some((up, down)) = self.percent_price else {
            return Ok(());
        };
        // A band that does not fit a decimal has no bound on that side.
        let high = mark.checked_mul(up).unwrap_or(Decimal::MAX);
        let low = mark.checked_mul(down).unwrap_or(Decimal::ZERO);
        let outside = match side {
            Side::Buy => price > high,
            Side::Sell => price < low,
        };
        if outside {
            Err(FilterError::OutsidePercentPrice { price, low, high })
        } else {
            Ok(())
        }
    }

    /// Rounds and checks a MARKET order's quantity: step (down), min/max and min notional at
    /// `mark_price`. Returns the quantity to send.
    ///
    /// # Errors
    /// Any [`FilterError`] of the checks.
    pub fn market_qty(
        &self,
        qty: Decimal,
        mark_price: Decimal,
        reduce_only: bool,
    ) -> Result<Decimal, FilterError> {
        let qty = self.round_qty(qty, LotKind::Market)?;
        self.check_notional(mark_price, qty, reduce_only)?;
        Ok(qty)
    }
}

/// Rounds `qty` down onto `lot`'s grid and checks its range.
fn round_qty_down(qty: Decimal, lot: &LotSize) -> Result<Decimal, FilterError> {
    if qty <= Decimal::ZERO {
        return Err(FilterError::NotPositive {
            what: "quantity",
            value: qty,
        });
    }
    if qty < lot.min_qty {
        return Err(FilterError::BelowMinQty {
            qty,
            min: lot.min_qty,
        });
    }
    let overflow = FilterError::Overflow {
        what: "quantity",
        value: qty,
    };
    let rounded = if lot.step_size > Decimal::ZERO {
        // Binance checks (qty - minQty) % stepSize == 0, so the grid starts at minQty.
        let steps = qty
            .checked_sub(lot.min_qty)
            .and_then(|above| above.checked_div(lot.step_size))
            .ok_or(overflow.clone())?
            .floor();
        steps
            .checked_mul(lot.step_size)
            .and_then(|on_grid| lot.min_qty.checked_add(on_grid))
            .ok_or(overflow)?
    } else {
        qty
    }
    .normalize();
    if rounded <= Decimal::ZERO {
        // Only reachable with a zero minQty: refuse rather than send nothing.
        return Err(FilterError::BelowMinQty {
            qty: rounded,
            min: lot.step_size,
        });
    }
    if lot.max_qty > Decimal::ZERO && rounded > lot.max_qty {
        return Err(FilterError::AboveMaxQty {
            qty: rounded,
            max: lot.max_qty,
        });
    }
    Ok(rounded)
}

/// Rounds `price` onto `filter`'s grid and checks its range.
fn round_price(
    price: Decimal,
    filter: &PriceFilter,
    rounding: Rounding,
) -> Result<Decimal, FilterError> {
    if price <= Decimal::ZERO {
        return Err(FilterError::NotPositive {
            what: "price",
            value: price,
        });
    }
    let overflow = FilterError::Overflow {
        what: "price",
        value: price,
    };
    let rounded = if filter.tick_size > Decimal::ZERO {
        let ticks = price
            .checked_sub(filter.min_price)
            .and_then(|above| above.checked_div(filter.tick_size))
            .ok_or(overflow.clone())?;
        let ticks = match rounding {
            Rounding::Down => ticks.floor(),
            Rounding::Up => ticks.ceil(),
            Rounding::Nearest => ticks
                .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero),
        };
        ticks
            .checked_mul(filter.tick_size)
            .and_then(|on_grid| filter.min_price.checked_add(on_grid))
            .ok_or(overflow)?
    } else {
        price
    }
    .normalize();
    let below = rounded <= Decimal::ZERO || rounded < filter.min_price;
    let above = filter.max_price > Decimal::ZERO && rounded > filter.max_price;
    if below || above {
        return Err(FilterError::PriceOutOfRange {
            price: rounded,
            min: filter.min_price,
            max: filter.max_price,
        });
    }
    Ok(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ExchangeInfo;

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    fn blz() -> SymbolRules {
        let info: ExchangeInfo = serde_json::from_str(include_str!(
            "../../../testdata/binance/rest__exchange_info.json"
        ))
        .unwrap();
        SymbolRules::from_info(&info.symbols[0])
    }

    fn btc() -> SymbolRules {
        SymbolRules {
            symbol: "BTCUSDT".into(),
            status: "TRADING".into(),
            price: PriceFilter {
                min_price: d("261.10"),
                max_price: d("809484"),
                tick_size: d("0.10"),
            },
            lot: LotSize {
                min_qty: d("0.001"),
                max_qty: d("1000"),
                step_size: d("0.001"),
            },
            market_lot: LotSize {
                min_qty: d("0.001"),
                max_qty: d("120"),
                step_size: d("0.001"),
            },
            min_notional: Some(d("100")),
            percent_price: Some((d("1.05"), d("0.95"))),
            price_precision: 2,
            quantity_precision: 3,
        }
    }

    #[test]
    fn fixture_rules() {
        let rules = blz();
        assert_eq!(rules.price.tick_size, d("0.0001"));
        assert_eq!(rules.lot.max_qty, d("10000000"));
        assert_eq!(rules.market_lot.max_qty, d("590119"));
        assert_eq!(rules.min_notional, Some(d("5.0")));
        assert_eq!(rules.round_qty(d("12.9"), LotKind::Market), Ok(d("12")));
        assert_eq!(
            rules.round_qty(d("600000"), LotKind::Market),
            Err(FilterError::AboveMaxQty {
                qty: d("600000"),
                max: d("590119")
            })
        );
        assert_eq!(
            rules.round_qty(d("600000"), LotKind::Limit),
            Ok(d("600000"))
        );
    }

    #[test]
    fn quantity_rounds_down_never_to_zero() {
        let rules = btc();
        assert_eq!(
            rules.round_qty(d("0.0019"), LotKind::Market),
            Ok(d("0.001"))
        );
        assert_eq!(
            rules.round_qty(d("0.0009"), LotKind::Market),
            Err(FilterError::BelowMinQty {
                qty: d("0.0009"),
                min: d("0.001")
            })
        );
        assert!(matches!(
            rules.round_qty(Decimal::ZERO, LotKind::Market),
            Err(FilterError::NotPositive { .. })
        ));
    }

    #[test]
    fn price_rounding_directions() {
        let rules = btc();
        assert_eq!(
            rules.round_price(d("95000.05"), Rounding::Down),
            Ok(d("95000"))
        );
        assert_eq!(
            rules.round_price(d("95000.05"), Rounding::Up),
            Ok(d("95000.1"))
        );
        assert_eq!(
            rules.round_price(d("95000.05"), Rounding::Nearest),
            Ok(d("95000.1"))
        );
        assert_eq!(
            rules.round_price(d("95000.04"), Rounding::Nearest),
            Ok(d("95000"))
        );
        assert!(matches!(
            rules.round_price(d("100"), Rounding::Down),
            Err(FilterError::PriceOutOfRange { .. })
        ));
    }

    /// Regression (issue 11, found by the fuzz test): a price or quantity past what the grid can
    /// hold (the exit monitor rounds its levels, which may be ~7.9e28, to the tick) panicked with
    /// `Division overflowed`; so did a notional or a percent band past `Decimal::MAX`.
    #[test]
    fn values_past_a_decimal_on_the_grid_are_refused_not_a_panic() {
        let rules = btc();
        let huge = d("50000000000000000000000000000");
        assert!(matches!(
            rules.round_price(huge, Rounding::Up),
            Err(FilterError::Overflow { what: "price", .. })
        ));
        assert!(matches!(
            rules.round_qty(huge, LotKind::Market),
            Err(FilterError::Overflow {
                what: "quantity",
                ..
            })
        ));
        assert!(matches!(
            rules.check_notional(Decimal::MAX, d("2"), false),
            Err(FilterError::Overflow {
                what: "notional",
                ..
            })
        ));
        assert_eq!(
            rules.check_percent_price(Side::Buy, d("100"), Decimal::MAX),
            Ok(())
        );
    }

    #[test]
    fn notional_and_percent_price() {
        let rules = btc();
        assert_eq!(
            rules.market_qty(d("0.001"), d("95000"), false),
            Err(FilterError::BelowMinNotional {
                notional: d("95.000"),
                min: d("100")
            })
        );
        assert_eq!(
            rules.market_qty(d("0.001"), d("95000"), true),
            Ok(d("0.001"))
        );
        assert_eq!(
            rules.market_qty(d("0.0025"), d("95000"), false),
            Ok(d("0.002"))
        );
        assert!(rules
            .check_percent_price(Side::Buy, d("99751"), d("95000"))
            .is_err());
        assert!(rules
            .check_percent_price(Side::Buy, d("99750"), d("95000"))
            .is_ok());
        assert!(rules
            .check_percent_price(Side::Sell, d("90249"), d("95000"))
            .is_err());
    }

    mod property_tests {
        use super::*;
        use proptest::prelude::*;

        /// Steps like Binance's: 10^-k or 5·10^-k, min a multiple of the step.
        fn lot() -> impl Strategy<Value = LotSize> {
            (0u32..6, prop::bool::ANY, 1i64..5, 0i64..1000).prop_map(
                |(scale, five, min_steps, max_extra)| {
                    let step = Decimal::new(if five { 5 } else { 1 }, scale);
                    let min_qty = step * Decimal::from(min_steps);
                    LotSize {
                        min_qty,
                        max_qty: min_qty + step * Decimal::from(max_extra * 1000),
                        step_size: step,
                    }
                },
            )
        }

        proptest! {
            #[test]
            fn rounded_quantity_is_on_the_grid_and_never_larger(
                lot in lot(),
                mantissa in 1i64..10_000_000_000,
                scale in 0u32..10,
            ) {
                let qty = Decimal::new(mantissa, scale);
                match round_qty_down(qty, &lot) {
                    Ok(rounded) => {
                        prop_assert!(rounded > Decimal::ZERO);
                        prop_assert!(rounded <= qty);
                        prop_assert!(rounded >= lot.min_qty);
                        prop_assert!(rounded <= lot.max_qty);
                        prop_assert_eq!(rounded % lot.step_size, Decimal::ZERO);
                        // Rounding down loses less than one step.
                        prop_assert!(qty - rounded < lot.step_size);
                    }
                    Err(FilterError::BelowMinQty { min, .. }) => prop_assert!(qty < min),
                    Err(FilterError::AboveMaxQty { qty: q, max }) => prop_assert!(q > max),
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }

            #[test]
            fn tiny_quantities_are_refused_not_zeroed(lot in lot(), fraction in 1i64..100) {
                // Strictly below the minimum: must be a refusal.
                let qty = lot.min_qty * Decimal::new(fraction, 2);
                let result = round_qty_down(qty, &lot);
                prop_assert!(
                    matches!(result, Err(FilterError::BelowMinQty { .. })),
                    "got {:?}",
                    result
                );
            }

            #[test]
            fn rounded_price_is_on_the_tick(
                mantissa in 1i64..100_000_000,
                scale in 0u32..6,
                tick_scale in 0u32..5,
                direction in 0u8..3,
            ) {
                let filter = PriceFilter {
                    min_price: Decimal::new(1, tick_scale),
                    max_price: Decimal::from(1_000_000_000),
                    tick_size: Decimal::new(1, tick_scale),
                };
                let price = Decimal::new(mantissa, scale);
                let rounding = [Rounding::Down, Rounding::Up, Rounding::Nearest][direction as usize];
                if let Ok(rounded) = round_price(price, &filter, rounding) {
                    prop_assert_eq!(rounded % filter.tick_size, Decimal::ZERO);
                    prop_assert!((rounded - price).abs() < filter.tick_size);
                    match rounding {
                        Rounding::Down => prop_assert!(rounded <= price),
                        Rounding::Up => prop_assert!(rounded >= price),
                        Rounding::Nearest => prop_assert!((rounded - price).abs() * Decimal::TWO <= filter.tick_size),
                    }
                } else {
                    prop_assert!(price < filter.min_price + filter.tick_size);
                }
            }
        }
    }
}
