//! The simulator's request surface: the input is `METHOD PATH?QUERY` on the first line and the
//! form body after it. The parameter parser reads it; then the whole router answers it, signed
//! with a valid timestamp and signature (so it reaches the exchange's own checks) when the input
//! starts with `!`. A request to
//! `/sim/v1/price` or `/sim/v1/faults` takes the body as the control API's JSON. Every request
//! gets an HTTP reply, an error reply is Binance's `{"code","msg"}`, and nothing panics.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use simulator::fuzzing::{parse_params, Harness};
use simulator::SimConfig;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let (signed, data) = match data.strip_prefix(b"!") {
        Some(rest) => (true, rest),
        None => (false, data),
    };
    let text = String::from_utf8_lossy(data);
    let (line, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (method, target) = line.split_once(' ').unwrap_or(("GET", line));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    parse_params(query, body);
    if !path.starts_with('/') || method.is_empty() {
        return;
    }
    runtime().block_on(async {
        let sim = Harness::new(SimConfig {
            fill_delay: Duration::ZERO,
            result_wait: Duration::from_millis(50),
            enforce_rate_limits: false,
            ..SimConfig::default()
        })
        .expect("default config");
        let query = if signed { sim.sign(query, body) } else { query.to_string() };
        let target = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            sim.request(method, &target, true, body.as_bytes()),
        )
        .await;
        if let Ok(Ok(reply)) = reply {
            let (status, body) = reply.expect("an HTTP reply, not a dropped connection");
            assert_ne!(status, 500, "HTTP 500 for {method} {target}");
            // WebSocket routes (`/ws`, `/stream`, `/market/ws/..`) answer a request without an
            // upgrade with the HTTP library's plain-text refusal: not a REST reply.
            // A HEAD reply carries no body, by HTTP's rules.
            let websocket = path.contains("/ws") || path.contains("/stream");
            if status >= 400 && !websocket && !method.eq_ignore_ascii_case("HEAD") {
                let value: serde_json::Value =
                    serde_json::from_slice(&body).expect("a JSON error body");
                assert!(value["code"].is_i64() && value["msg"].is_string(), "{value}");
            }
        }
        sim.shutdown().await;
    });
});
