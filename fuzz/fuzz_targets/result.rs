//! `ExecutionResult::from_json` on any bytes: a result is accepted (and reads back as itself,
//! a fill always with a positive price and quantity) or refused with a reason. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::ExecutionResult;
use rust_decimal::Decimal;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(result) = ExecutionResult::from_json(&text) {
        let written = result.to_json().to_string();
        assert_eq!(ExecutionResult::from_json(&written).as_ref(), Ok(&result), "{written}");
        assert!(
            !result.status().has_fill()
                || result.entry_price() > Decimal::ZERO && result.executed_qty() > Decimal::ZERO
        );
    }
});
