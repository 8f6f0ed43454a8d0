//! Binance WebSocket frames: any bytes as a user-data frame and as a market-data frame (raw or
//! in the combined-stream envelope). Every frame is an event, unknown, or invalid with the
//! reason. Never a panic.
#![no_main]

use binance::events::{decode_market_frame, decode_user_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = decode_user_frame(&text);
    let _ = decode_market_frame(&text);
});
