//! `TradeIntent::from_json` on any bytes: an intent is accepted (and reads back as itself from
//! the document it writes) or refused with a reason, and the `rejected` result published for a
//! refused document is itself a readable result. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::{ExecutionResult, TradeIntent};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match TradeIntent::from_json(&text) {
        Ok(intent) => {
            let written = intent.to_json().to_string();
            assert_eq!(TradeIntent::from_json(&written).as_ref(), Ok(&intent), "{written}");
            let _ = intent.fingerprint();
        }
        Err(e) => {
            let rejected = ExecutionResult::rejected_input(&text, &e.to_string(), 1);
            let written = rejected.to_json().to_string();
            assert_eq!(ExecutionResult::from_json(&written), Ok(rejected), "{written}");
        }
    }
});
