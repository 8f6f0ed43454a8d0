//! Fuzzing of the two bus decoders (issue 11): `TradeIntent::from_json` (what strategies send)
//! and `ExecutionResult::from_json` (what the exit monitor and operators read), plus
//! `ExecutionResult::rejected_input`, which takes any document the service refused. Inputs are
//! arbitrary text, random JSON, and valid documents mutated field by field (dropped, retyped,
//! numbers at and past every limit, NaN/Infinity as text, deep nesting, long strings, unicode).
//! The property: the decoder returns `Ok` or `Err`, never panics; and what it accepts reads back
//! as itself from the document it writes. `cargo fuzz run intent` / `result` (in `fuzz/`) run
//! the same decoders for as long as one likes.

use model::{ExecutionResult, TradeIntent};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};
use testkit::fuzz;

const INTENT_FIELDS: &[&str] = &[
    "intent_id",
    "symbol",
    "action",
    "position_size_usd",
    "quantity",
    "leverage",
    "take_profit_pct",
    "stop_loss_pct",
    "trailing_pct",
    "take_profit_price",
    "stop_loss_price",
    "source",
    "created_at",
    "expires_at",
];

const RESULT_FIELDS: &[&str] = &[
    "intent_id",
    "symbol",
    "action",
    "status",
    "order_id",
    "client_order_id",
    "entry_price",
    "executed_qty",
    "position_size_usd",
    "leverage",
    "commission",
    "commission_asset",
    "reduce_only",
    "take_profit_pct",
    "stop_loss_pct",
    "trailing_pct",
    "take_profit_price",
    "stop_loss_price",
    "confirmed_by",
    "error_code",
    "error",
    "intent_at",
    "order_sent_at",
    "filled_at",
    "published_at",
];

/// Valid intents of every shape: BUY by notional with a full plan, SELL by quantity with price
/// levels, a whole-position CLOSE, a partial close.
fn intents() -> Vec<Value> {
    vec![
        json!({"intent_id":"i-1","symbol":"BTCUSDT","action":"BUY","position_size_usd":100.5,
            "leverage":10,"take_profit_pct":2,"stop_loss_pct":1,"trailing_pct":0.5,
            "source":"fuzz","created_at":1_769_042_400_000i64,"expires_at":1_769_042_460_000i64}),
        json!({"intent_id":"i-2","symbol":"ETHUSDT","action":"sell","quantity":"0.25",
            "take_profit_price":"3100.5","stop_loss_price":3500}),
        json!({"intent_id":"c-1","symbol":"AXSUSDT","action":"CLOSE"}),
        json!({"intent_id":"c-2","symbol":"SOLUSDT","action":"CLOSE","quantity":3}),
    ]
}

/// Valid results: a fill with a plan, a rejected document that was not an intent, a failure.
fn results() -> Vec<Value> {
    vec![
        json!({"intent_id":"i-1","symbol":"BTCUSDT","action":"BUY","status":"filled",
            "order_id":5_000_000_001i64,"client_order_id":"q-i-1","entry_price":95000.1,
            "executed_qty":0.002,"position_size_usd":190.0002,"leverage":10,"commission":0.076,
            "commission_asset":"USDT","reduce_only":false,"take_profit_pct":2,"stop_loss_pct":1,
            "trailing_pct":0.5,"confirmed_by":"user_stream","error_code":null,"error":null,
            "intent_at":1000,"order_sent_at":1500,"filled_at":2000,"published_at":3000}),
        json!({"intent_id":"","symbol":"","action":"","status":"rejected","error":"not JSON",
            "entry_price":0,"executed_qty":0,"position_size_usd":0,"published_at":5}),
        json!({"intent_id":"c-1","symbol":"AXSUSDT","action":"CLOSE","status":"failed",
            "reduce_only":true,"error_code":-1007,"error":"OUTCOME UNKNOWN","published_at":9}),
        json!({"intent_id":"p-1","symbol":"ETHUSDT","action":"SELL","status":"partially_filled",
            "entry_price":"3400.25","executed_qty":"0.5","confirmed_by":"rest_poll",
            "stop_loss_price":3500,"published_at":9}),
    ]
}

/// Reads `text` as an intent; what is accepted must read back as itself, and its fingerprint
/// and the rejected result for the same text must not panic either.
fn check_intent(text: &str) -> Result<(), TestCaseError> {
    match TradeIntent::from_json(text) {
        Ok(intent) => {
            let written = intent.to_json().to_string();
            let read = TradeIntent::from_json(&written);
            prop_assert_eq!(read.as_ref(), Ok(&intent), "{} -> {}", text, written);
            let _ = intent.fingerprint();
        }
        Err(e) => {
            // What the service publishes for a refused document must itself be a valid result.
            let rejected = ExecutionResult::rejected_input(text, &e.to_string(), 1);
            let written = rejected.to_json().to_string();
            prop_assert_eq!(ExecutionResult::from_json(&written), Ok(rejected));
        }
    }
    Ok(())
}

/// Reads `text` as a result; what is accepted must read back as itself.
fn check_result(text: &str) -> Result<(), TestCaseError> {
    if let Ok(result) = ExecutionResult::from_json(text) {
        let written = result.to_json().to_string();
        let read = ExecutionResult::from_json(&written);
        prop_assert_eq!(read.as_ref(), Ok(&result), "{} -> {}", text, written);
        prop_assert!(
            !result.status().has_fill()
                || result.entry_price() > rust_decimal::Decimal::ZERO
                    && result.executed_qty() > rust_decimal::Decimal::ZERO,
            "a fill without a price or quantity: {text}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: fuzz::cases(2_000), failure_persistence: None, ..Config::default() })]

    #[test]
    fn any_text_is_an_intent_or_a_reason(text in fuzz::any_text(INTENT_FIELDS)) {
        check_intent(&text)?;
    }

    #[test]
    fn any_text_is_a_result_or_a_reason(text in fuzz::any_text(RESULT_FIELDS)) {
        check_result(&text)?;
    }

    #[test]
    fn a_mutated_intent_is_an_intent_or_a_reason(
        text in prop::sample::select(intents()).prop_flat_map(|doc| fuzz::mutated_text(doc, INTENT_FIELDS)),
    ) {
        check_intent(&text)?;
        // An intent document is also what a confused producer might put on the results stream.
        check_result(&text)?;
    }

    #[test]
    fn a_mutated_result_is_a_result_or_a_reason(
        text in prop::sample::select(results()).prop_flat_map(|doc| fuzz::mutated_text(doc, RESULT_FIELDS)),
    ) {
        check_result(&text)?;
        check_intent(&text)?;
    }
}

proptest! {
    #![proptest_config(Config { cases: fuzz::cases(1_000), failure_persistence: None, ..Config::default() })]

    /// Every field of a valid document set to every kind of nasty number, one at a time: the
    /// numeric checks (positive, ranges, price × quantity) see each edge.
    #[test]
    fn every_field_takes_every_nasty_number(
        doc in prop::sample::select(intents().into_iter().chain(results()).collect::<Vec<_>>()),
        field in prop::sample::select(INTENT_FIELDS.iter().chain(RESULT_FIELDS).copied().collect::<Vec<_>>()),
        number in fuzz::number_text(),
        as_string in any::<bool>(),
    ) {
        let mut doc = doc;
        doc[field] = if as_string { Value::String(number) } else { fuzz::json_number(&number) };
        let text = doc.to_string();
        check_intent(&text)?;
        check_result(&text)?;
    }
}

/// The documents the issue's catalogue names, each decoded without a panic.
#[test]
fn the_catalogue_of_bad_documents_is_refused_or_read() {
    let huge = "9".repeat(1_000_000);
    let long_id = "x".repeat(129);
    let docs = [
        String::new(),
        "null".into(),
        "[]".into(),
        "{".into(),
        "[".repeat(100_000),
        format!(r#"{{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":{huge}}}"#),
        format!(r#"{{"intent_id":"{long_id}","symbol":"BTCUSDT","action":"BUY","quantity":1}}"#),
        r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":"NaN"}"#.into(),
        r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","position_size_usd":"Infinity"}"#
            .into(),
        r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1e-400}"#.into(),
        r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1,"leverage":126}"#.into(),
        r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1,"leverage":0}"#.into(),
        r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1,"leverage":1e2}"#.into(),
        r#"{"intent_id":"a","symbol":"₿USDT","action":"BUY","quantity":1}"#.into(),
        r#"{"status":"filled","intent_id":"a","symbol":"BTCUSDT","action":"BUY","entry_price":"79228162514264337593543950335","executed_qty":2}"#.into(),
    ];
    for doc in &docs {
        let _ = TradeIntent::from_json(doc);
        let _ = ExecutionResult::from_json(doc);
        let _ = ExecutionResult::rejected_input(doc, "bad", 0);
    }
}
