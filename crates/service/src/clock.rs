//! The services' one reading of the wall clock. The decision cores take time as an argument;
//! this is where the shell gets it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (the one clock read of the service).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
