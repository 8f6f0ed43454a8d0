//! Latency percentiles for the benchmark examples (shared by `#[path]`; not an example itself).

use std::time::Duration;

/// `n=… p50=… p90=… p99=… max=…` of `v` (nearest rank).
pub fn percentiles(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "n=0".into();
    }
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "n={} p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?}",
        v.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        v[v.len() - 1]
    )
}
