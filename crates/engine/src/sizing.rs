//! Order sizing: turns an intent's `position_size_usd` (at the mark price) or `quantity` into a
//! quantity the exchange accepts, rounded down to the step size and checked against minimum
//! quantity and minimum notional. A size that rounds to nothing is refused with the reason, never
//! sent as zero. All arithmetic on the intent's numbers is checked: a size that does not fit in a
//! decimal is refused with the reason, never a panic.

use rust_decimal::Decimal;

/// The symbol's filters that sizing needs (from exchangeInfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolRules {
    /// MARKET_LOT_SIZE step and bounds (quantum sends MARKET orders).
    pub step_size: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    /// MIN_NOTIONAL (reduce-only orders are exempt).
    pub min_notional: Decimal,
}

/// Why no quantity could be sized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizingError {
    #[error("the mark price {0} is not positive")]
    NoPrice(Decimal),
    #[error("quantity {qty} (from {requested}) is below the minimum quantity {min_qty}")]
    BelowMinQty {
        requested: Decimal,
        qty: Decimal,
        min_qty: Decimal,
    },
    #[error("quantity {qty} is above the maximum quantity {max_qty} for one order")]
    AboveMaxQty { qty: Decimal, max_qty: Decimal },
    #[error("notional {notional} USDT is below the minimum notional {min_notional} USDT")]
    BelowMinNotional {
        notional: Decimal,
        min_notional: Decimal,
    },
    #[error("there is no open position to close")]
    NothingToClose,
    #[error("{0} does not fit in a decimal (overflow)")]
    Overflow(String),
}

/// Rounds `qty` down to a multiple of `step` (counted from zero, as Binance's steps are
/// powers of ten or integers); `None` when the number of steps does not fit in a decimal.
pub fn round_down(qty: Decimal, step: Decimal) -> Option<Decimal> {
    if step <= Decimal::ZERO {
        return Some(qty);
    }
    let rounded = qty.checked_div(step)?.floor().checked_mul(step)?;
    // At the 28-digit edge the quotient and the product are themselves rounded to fit, and can
    // land above `qty` (7922816251426433759354395033.5 in steps of 0.3597930 came back as
    // ...034): a quantity is never rounded up, so such figures do not fit.
    if rounded > qty {
        return None;
    }
    Some(rounded.normalize())
}

/// Sizes an opening order: from `usd` at `mark`, or from an explicit `qty`.
pub fn size_order(
    usd: Option<Decimal>,
    qty: Option<Decimal>,
    mark: Decimal,
    rules: &SymbolRules,
) -> Result<Decimal, SizingError> {
    if mark <= Decimal::ZERO {
        return Err(SizingError::NoPrice(mark));
    }
    let requested = match (usd, qty) {
        (_, Some(q)) => q,
        (Some(usd), None) => usd.checked_div(mark).ok_or_else(|| {
            SizingError::Overflow(format!("position_size_usd {usd} at the mark price {mark}"))
        })?,
        (None, None) => Decimal::ZERO,
    };
    let qty = round_down(requested, rules.step_size).ok_or_else(|| {
        SizingError::Overflow(format!(
            "quantity {requested} in steps of {}",
            rules.step_size
        ))
    })?;
    // Never zero, nor below: whatever the figures (a negative size, rules with a negative
    // minimum), what is sent is a positive quantity or nothing.
    if qty < rules.min_qty || qty <= Decimal::ZERO {
        return Err(SizingError::BelowMinQty {
            requested: requested.round_dp(8),
            qty,
            min_qty: rules.min_qty,
        });
    }
    if qty > rules.max_qty {
        return Err(SizingError::AboveMaxQty {
            qty,
            max_qty: rules.max_qty,
        });
    }
    let notional = qty
        .checked_mul(mark)
        .ok_or_else(|| SizingError::Overflow(format!("notional {qty} x {mark}")))?;
    if notional < rules.min_notional {
        return Err(SizingError::BelowMinNotional {
            notional: notional.round_dp(8),
            min_notional: rules.min_notional,
        });
    }
    Ok(qty)
}

/// Sizes a reduce-only close: the intent's quantity (capped at the position) or the whole
/// position. `position` is the signed position amount.
pub fn size_close(
    qty: Option<Decimal>,
    position: Decimal,
    rules: &SymbolRules,
) -> Result<Decimal, SizingError> {
    let open = position.abs();
    if open.is_zero() {
        return Err(SizingError::NothingToClose);
    }
    let wanted = qty.map_or(open, |q| q.min(open));
    let qty = round_down(wanted, rules.step_size).ok_or_else(|| {
        SizingError::Overflow(format!("quantity {wanted} in steps of {}", rules.step_size))
    })?;
    if qty <= Decimal::ZERO || qty < rules.min_qty {
        return Err(SizingError::BelowMinQty {
            requested: wanted,
            qty,
            min_qty: rules.min_qty,
        });
    }
    if rules.max_qty <= Decimal::ZERO {
        // Rules no exchange sends (the service reads a maximum of 0 as no limit): refused
        // rather than sized to nothing.
        return Err(SizingError::AboveMaxQty {
            qty,
            max_qty: rules.max_qty,
        });
    }
    Ok(qty.min(rules.max_qty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_that_overflow_are_refused_not_a_panic() {
        let huge: Decimal = "79228162514264337593543950335".parse().unwrap();
        let mark: Decimal = "0.001".parse().unwrap();
        assert!(matches!(
            size_order(Some(huge), None, mark, &axs()),
            Err(SizingError::Overflow(_))
        ));
        let qty: Decimal = "100000000000000000000000000".parse().unwrap();
        assert!(matches!(
            size_order(None, Some(qty), Decimal::ONE, &btc()),
            Err(SizingError::Overflow(_))
        ));
        assert!(matches!(
            size_close(Some(qty), qty, &btc()),
            Err(SizingError::Overflow(_))
        ));
    }

    /// Regression (issue 11, found by the fuzz test): a negative size with rules whose minimum
    /// is negative was sized as a negative quantity; a close under a maximum of 0 as zero.
    #[test]
    fn a_size_is_never_zero_or_negative_whatever_the_rules() {
        let odd = SymbolRules {
            step_size: Decimal::ONE,
            min_qty: Decimal::from(-10_000_000),
            max_qty: Decimal::ZERO,
            min_notional: Decimal::NEGATIVE_ONE,
        };
        assert!(matches!(
            size_order(Some(Decimal::NEGATIVE_ONE), None, Decimal::ONE, &odd),
            Err(SizingError::BelowMinQty { .. })
        ));
        assert!(matches!(
            size_close(Some(Decimal::NEGATIVE_ONE), Decimal::from(5), &odd),
            Err(SizingError::BelowMinQty { .. })
        ));
        assert!(matches!(
            size_close(None, Decimal::from(5), &odd),
            Err(SizingError::AboveMaxQty { .. })
        ));
    }

    /// Regression (CI, found by the fuzz test with a random seed): at the 28-digit edge the
    /// rounding of `qty / step` and of its product carried a close above the position
    /// (7922816251426433759354395033.5 closed as ...034). A size is never rounded up.
    #[test]
    fn a_close_at_the_decimal_edge_is_never_above_the_position() {
        let position: Decimal = "7922816251426433759354395033.5".parse().unwrap();
        let step: Decimal = "0.3597930".parse().unwrap();
        assert_eq!(round_down(position, step), None);
        let rules = SymbolRules {
            step_size: step,
            min_qty: Decimal::MIN,
            max_qty: Decimal::MAX,
            min_notional: Decimal::ZERO,
        };
        assert!(matches!(
            size_close(None, position, &rules),
            Err(SizingError::Overflow(_))
        ));
        assert!(matches!(
            size_order(None, Some(position), Decimal::ONE, &rules),
            Err(SizingError::Overflow(_))
        ));
    }

    fn axs() -> SymbolRules {
        SymbolRules {
            step_size: Decimal::ONE,
            min_qty: Decimal::ONE,
            max_qty: Decimal::from(150_000),
            min_notional: Decimal::from(5),
        }
    }

    fn btc() -> SymbolRules {
        SymbolRules {
            step_size: Decimal::new(1, 3),
            min_qty: Decimal::new(1, 3),
            max_qty: Decimal::from(120),
            min_notional: Decimal::from(100),
        }
    }

    #[test]
    fn usd_is_converted_at_the_mark_and_rounded_down() {
        assert_eq!(
            size_order(Some(Decimal::from(100)), None, Decimal::new(625, 2), &axs()),
            Ok(Decimal::from(16))
        );
        assert_eq!(
            size_order(
                Some(Decimal::from(250)),
                None,
                Decimal::from(95_000),
                &btc()
            ),
            Ok(Decimal::new(2, 3))
        );
    }

    #[test]
    fn too_small_an_order_is_refused_with_the_reason() {
        let err =
            size_order(Some(Decimal::from(50)), None, Decimal::from(95_000), &btc()).unwrap_err();
        assert!(matches!(err, SizingError::BelowMinQty { .. }), "{err}");
        let err = size_order(
            Some(Decimal::from(180)),
            None,
            Decimal::from(95_000),
            &btc(),
        )
        .unwrap_err();
        assert!(
            matches!(err, SizingError::BelowMinNotional { .. }),
            "95 USDT < 100: {err}"
        );
    }

    #[test]
    fn a_close_takes_the_whole_position_or_less() {
        assert_eq!(
            size_close(None, Decimal::from(-16), &axs()),
            Ok(Decimal::from(16))
        );
        assert_eq!(
            size_close(Some(Decimal::from(40)), Decimal::from(16), &axs()),
            Ok(Decimal::from(16))
        );
        assert_eq!(
            size_close(None, Decimal::ZERO, &axs()),
            Err(SizingError::NothingToClose)
        );
    }

    proptest! {
        #[test]
        fn a_sized_quantity_is_a_step_multiple_no_larger_than_asked_and_never_zero(
            usd in 1u32..1_000_000u32, mark_cents in 1u32..10_000_000u32, step_exp in 0u32..4,
        ) {
            let rules = SymbolRules {
                step_size: Decimal::new(1, step_exp),
                min_qty: Decimal::new(1, step_exp),
                max_qty: Decimal::from(1_000_000_000u64),
                min_notional: Decimal::from(5),
            };
            let mark = Decimal::new(i64::from(mark_cents), 2);
            let usd = Decimal::from(usd);
            match size_order(Some(usd), None, mark, &rules) {
                Ok(qty) => {
                    prop_assert!(qty > Decimal::ZERO);
                    prop_assert!((qty % rules.step_size).is_zero());
                    prop_assert!(qty * mark <= usd);
                    prop_assert!(qty * mark >= rules.min_notional);
                }
                Err(e) => prop_assert!(!matches!(e, SizingError::NoPrice(_))),
            }
        }
    }
}
