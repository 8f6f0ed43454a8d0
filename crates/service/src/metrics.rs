//! Prometheus metrics of both services, in one process-wide registry, served as text on
//! `/metrics` next to `/healthz` (`--metrics-addr`; the tasks' states come from
//! [`crate::health`]). Names start with `quantum_`. Counters and histograms only ever grow;
//! floats appear here and nowhere near money.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

use crate::health;

/// Latency buckets in seconds: from a millisecond to the default fill timeout.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Series (`name{labels}`) → value, by metric name for HELP/TYPE lines.
    counters: BTreeMap<&'static str, BTreeMap<String, f64>>,
    gauges: BTreeMap<&'static str, BTreeMap<String, f64>>,
    histograms: BTreeMap<&'static str, BTreeMap<String, Histogram>>,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    /// A std mutex: every update is a map lookup and an add, never held across an await.
    inner: Mutex<Inner>,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

/// The label set as it appears in a series name: `{k="v",...}`, or nothing.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Every metric quantum exports, with its HELP text. A name missing here is a bug the tests catch.
pub const METRICS: &[(&str, &str)] = &[
    (
        "quantum_untracked_positions",
        "Symbols where the exchange holds a position the exit monitor's book does not explain (not yet adopted).",
    ),
    (
        "quantum_trading_state",
        "The operator's trading state as this process last read it: 0 active, 1 reducing (no new entries), 2 halted (nothing new is sent).",
    ),
    (
        "quantum_intents_received_total",
        "Trade intents read from the bus.",
    ),
    (
        "quantum_orders_placed_total",
        "Orders the execution service sent to the exchange.",
    ),
    (
        "quantum_results_total",
        "Execution results published, by status.",
    ),
    (
        "quantum_ambiguous_submits_total",
        "Order submits whose outcome was unknown, by how they were resolved.",
    ),
    (
        "quantum_intent_waits_total",
        "Times an intent waited before a request the exchange held back for now (rate budget spent, 429, definite 5xx); nothing was executed.",
    ),
    (
        "quantum_fill_confirm_seconds",
        "From sending an order to its confirmed final state, by confirmation source.",
    ),
    (
        "quantum_user_stream_events_total",
        "User data stream connections and disconnections.",
    ),
    (
        "quantum_dead_letters_total",
        "Entries copied to the dead-letter stream, by source stream.",
    ),
    (
        "quantum_tracked_positions",
        "Lots the exit monitor tracks.",
    ),
    (
        "quantum_exit_triggers_total",
        "Exit triggers fired, by kind.",
    ),
    (
        "quantum_positions_closed_total",
        "Lots closed, by how.",
    ),
    (
        "quantum_invalid_results_total",
        "Execution results the exit monitor refused.",
    ),
    (
        "quantum_rate_limit_weight_used",
        "Request weight used in the current minute (the last reply's count plus what was sent since), by client.",
    ),
    (
        "quantum_rate_limit_weight_limit",
        "Request weight allowed per minute (exchangeInfo).",
    ),
    (
        "quantum_rate_limit_bans_total",
        "HTTP 429 (too many requests) and 418 (IP banned) replies from the exchange, by client and code.",
    ),
    (
        "quantum_oldest_working_order_seconds",
        "Seconds the execution service's oldest intent has had an order in the works (sent or about to be, not yet final): a stuck order when it grows past the fill timeout.",
    ),
    (
        "quantum_user_stream_connected",
        "1 while the user data stream is connected, else 0.",
    ),
    (
        "quantum_user_stream_last_event_age_seconds",
        "Seconds since the user data stream connected or last delivered an event (an idle account gets none).",
    ),
    (
        "quantum_mark_price_age_seconds",
        "Seconds since the last mark price of a held symbol.",
    ),
    (
        "quantum_exit_seconds",
        "From sending a close intent to its confirmed fill (the lot closed).",
    ),
    (
        "quantum_rest_requests_total",
        "Requests sent to the exchange's REST API, by client and endpoint.",
    ),
    (
        "quantum_exit_alarms",
        "Exit monitor alarms raised now, by kind (a position not protected, a close unanswered, ...).",
    ),
    (
        "quantum_exit_alarms_total",
        "Exit monitor alarms raised, by kind.",
    ),
    (
        "quantum_task_up",
        "1 while the service task runs (or is stopping gracefully), 0 when it is starting, stopped or failed; by task.",
    ),
];

fn help(name: &str) -> &'static str {
    METRICS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("quantum metric.", |(_, h)| h)
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Debug builds (the tests) refuse a name that is not in [`METRICS`], so the table, the
    /// HELP lines and the dashboard test cannot miss a metric.
    fn known(name: &str) {
        debug_assert!(
            METRICS.iter().any(|(n, _)| *n == name),
            "metric {name} is not in metrics::METRICS"
        );
    }

    pub fn inc(&self, name: &'static str, pairs: &[(&str, &str)]) {
        Self::known(name);
        *self
            .lock()
            .counters
            .entry(name)
            .or_default()
            .entry(labels(pairs))
            .or_default() += 1.0;
    }

    /// Makes counter series exist at 0 before their first event, so that `increase()` over a
    /// window sees the first event and a dashboard shows 0 rather than "no data".
    pub fn register(&self, name: &'static str, label: &str, values: &[&str]) {
        Self::known(name);
        let mut inner = self.lock();
        let family = inner.counters.entry(name).or_default();
        if values.is_empty() {
            family.entry(String::new()).or_default();
        }
        for value in values {
            family.entry(labels(&[(label, value)])).or_default();
        }
    }

    /// Sets a counter to a total counted elsewhere (a client's own count of requests).
    pub fn set_total(&self, name: &'static str, pairs: &[(&str, &str)], value: f64) {
        Self::known(name);
        self.lock()
            .counters
            .entry(name)
            .or_default()
            .insert(labels(pairs), value);
    }

    pub fn set(&self, name: &'static str, pairs: &[(&str, &str)], value: f64) {
        Self::known(name);
        self.lock()
            .gauges
            .entry(name)
            .or_default()
            .insert(labels(pairs), value);
    }

    pub fn observe(&self, name: &'static str, pairs: &[(&str, &str)], seconds: f64) {
        Self::known(name);
        let mut inner = self.lock();
        let h = inner
            .histograms
            .entry(name)
            .or_default()
            .entry(labels(pairs))
            .or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// Keeps only the series of gauge `name` whose label set passes `keep` (e.g. the price age of
    /// symbols still held), so a gauge does not report a level that no longer exists.
    pub fn retain(&self, name: &'static str, keep: impl Fn(&str) -> bool) {
        if let Some(series) = self.lock().gauges.get_mut(name) {
            series.retain(|labels, _| keep(labels));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        for (kind, family) in [("counter", &inner.counters), ("gauge", &inner.gauges)] {
            for (name, series) in family {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", help(name));
                for (labels, value) in series {
                    let _ = writeln!(out, "{name}{labels} {value}");
                }
            }
        }
        for (name, series) in &inner.histograms {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", help(name));
            for (labels, h) in series {
                let inner_labels = labels.trim_start_matches('{').trim_end_matches('}');
                let sep = if inner_labels.is_empty() { "" } else { "," };
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{inner_labels}{sep}le=\"{bound}\"}} {}",
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{inner_labels}{sep}le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{labels} {}", h.sum);
                let _ = writeln!(out, "{name}_count{labels} {}", h.count);
            }
        }
        out
    }
}

/// The request weight a REST client has used this minute and its limit, as gauges labelled by
/// the client (`execution`, `exit-monitor`: each service has its own client and view).
pub fn export_weight(rest: &binance::RestClient, client: &str) {
    let (used, limit) = rest.weight_usage();
    let m = global();
    m.set(
        "quantum_rate_limit_weight_used",
        &[("client", client)],
        f64::from(used),
    );
    m.set(
        "quantum_rate_limit_weight_limit",
        &[("client", client)],
        f64::from(limit),
    );
    for (status, n) in rest.bans_seen() {
        m.set_total(
            "quantum_rate_limit_bans_total",
            &[("client", client), ("code", &status.to_string())],
            n as f64,
        );
    }
    for (endpoint, n) in rest.requests_sent() {
        m.set_total(
            "quantum_rest_requests_total",
            &[("client", client), ("endpoint", &endpoint)],
            n as f64,
        );
    }
}

/// The execution service's counters, at 0 until they count.
pub fn register_execution() {
    let m = global();
    m.register("quantum_intents_received_total", "", &[]);
    m.register("quantum_orders_placed_total", "", &[]);
    m.register("quantum_intent_waits_total", "", &[]);
    m.register(
        "quantum_results_total",
        "status",
        &model::ResultStatus::ALL.map(model::ResultStatus::as_str),
    );
    m.register(
        "quantum_ambiguous_submits_total",
        "resolution",
        &["found", "resent", "unresolved"],
    );
    m.register(
        "quantum_user_stream_events_total",
        "event",
        &["connected", "disconnected"],
    );
    m.register(
        "quantum_dead_letters_total",
        "stream",
        &[bus::keys::TRADE_INTENT],
    );
}

/// The exit monitor's counters, at 0 until they count.
pub fn register_exit_monitor() {
    let m = global();
    m.register(
        "quantum_exit_triggers_total",
        "kind",
        &["TP_HIT", "SL_HIT", "TRAIL_HIT"],
    );
    m.register(
        "quantum_positions_closed_total",
        "by",
        &["quantum", "exchange"],
    );
    m.register("quantum_invalid_results_total", "", &[]);
    m.register(
        "quantum_dead_letters_total",
        "stream",
        &[bus::keys::TRADE_EXECUTION_RESULT],
    );
    let kinds: Vec<&str> = engine::monitor::AlarmKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    m.register("quantum_exit_alarms_total", "kind", &kinds);
    for kind in &kinds {
        m.set("quantum_exit_alarms", &[("kind", kind)], 0.0);
    }
}

/// Serves `/metrics` and `/healthz` (over the process-wide [`health::global`] registry) on `addr`
/// until `shutdown` is cancelled.
pub async fn serve(
    addr: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    listen(addr, app(health::global()), shutdown).await
}

/// The routes: `/metrics` (Prometheus text of [`global`]) and `/healthz` over `health`: 200 when
/// every registered task is healthy, else 503, with `ok` or `failing` on the first line and one
/// `name state` line per task (see [`health::Health::report`]).
pub fn app(health: &health::Health) -> axum::Router {
    use axum::routing::get;
    let health = health.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    global().render(),
                )
            }),
        )
        .route(
            "/healthz",
            get(move || async move {
                let report = health.report();
                let status = if report.healthy {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                };
                (status, [("content-type", "text/plain")], report.text)
            }),
        )
}

async fn listen(
    addr: std::net::SocketAddr,
    app: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grafana_dashboard_uses_only_exported_metrics_and_shows_each_of_them() {
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../../deploy/grafana/quantum-dashboard.json"
        ))
        .expect("the dashboard is JSON");
        let mut used = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("quantum_") {
                        let base = ["_bucket", "_sum", "_count"]
                            .iter()
                            .find_map(|suffix| word.strip_suffix(suffix))
                            .filter(|b| METRICS.iter().any(|(n, _)| n == b))
                            .unwrap_or(word);
                        used.insert(base.to_string());
                    }
                }
            }
        }
        for name in &used {
            assert!(
                METRICS.iter().any(|(n, _)| n == name),
                "the dashboard queries {name}, which quantum does not export"
            );
        }
        for (name, _) in METRICS {
            assert!(used.contains(*name), "the dashboard does not show {name}");
        }
    }

    /// The alert rules in `deploy/` name only metrics quantum exports (a renamed metric would
    /// leave an alert that never fires), and cover what the operator must hear about: positions
    /// unprotected or untracked, stuck orders, the user stream down, rate-limit bans, dead
    /// letters.
    #[test]
    fn the_alert_rules_use_only_exported_metrics_and_cover_the_promises() {
        let rules = include_str!("../../../deploy/prometheus/quantum-alerts.yml");
        let mut used = std::collections::BTreeSet::new();
        for line in rules.lines().map(str::trim) {
            let Some(expr) = line.strip_prefix("expr:") else {
                continue;
            };
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("quantum_") {
                    assert!(
                        METRICS.iter().any(|(n, _)| *n == word),
                        "an alert queries {word}, which quantum does not export"
                    );
                    used.insert(word.to_string());
                }
            }
        }
        for needed in [
            "quantum_exit_alarms",
            "quantum_untracked_positions",
            "quantum_oldest_working_order_seconds",
            "quantum_user_stream_connected",
            "quantum_rate_limit_bans_total",
            "quantum_dead_letters_total",
        ] {
            assert!(used.contains(needed), "no alert on {needed}");
        }
        let alerts = rules
            .lines()
            .filter(|l| l.trim().starts_with("- alert:"))
            .count();
        let exprs = rules
            .lines()
            .filter(|l| l.trim().starts_with("expr:"))
            .count();
        assert_eq!(alerts, exprs, "every alert has one expr");
    }

    /// A service task that fails with a bus error once `go` is cancelled.
    fn failing_task(
        health: &health::Health,
        name: &str,
    ) -> (crate::Running, tokio_util::sync::CancellationToken) {
        let go = tokio_util::sync::CancellationToken::new();
        let go_task = go.clone();
        let handle = tokio::spawn(async move {
            go_task.cancelled().await;
            Err(crate::ServiceError::Bus(bus::Error::Unavailable {
                op: "XREADGROUP",
                detail: "connection refused".into(),
            }))
        });
        let running = crate::Running::with_health(
            health,
            name,
            tokio_util::sync::CancellationToken::new(),
            handle,
        );
        (running, go)
    }

    /// GETs `/healthz` until `done` accepts the answer, for at most five seconds.
    async fn healthz_until(
        addr: std::net::SocketAddr,
        done: impl Fn(reqwest::StatusCode, &str) -> bool,
    ) -> (reqwest::StatusCode, String) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let reply = reqwest::get(format!("http://{addr}/healthz"))
                .await
                .unwrap();
            let status = reply.status();
            let body = reply.text().await.unwrap();
            if done(status, &body) {
                return (status, body);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/healthz still answers {status}: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn healthz_answers_503_naming_a_service_task_that_returned_an_error() {
        let health = health::Health::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let addr = listen(([127, 0, 0, 1], 0).into(), app(&health), stop.clone())
            .await
            .unwrap();
        let (running, go) = failing_task(&health, health::EXIT_MONITOR);
        let (status, body) = healthz_until(addr, |_, _| true).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert_eq!(body, "ok\nexit-monitor running\n");

        go.cancel();
        let (status, body) =
            healthz_until(addr, |status, _| status != reqwest::StatusCode::OK).await;
        assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            body,
            "failing\nexit-monitor failed (bus: bus unavailable during XREADGROUP: connection refused)\n"
        );
        assert!(running.wait().await.is_err());
        stop.cancel();
    }

    #[tokio::test]
    async fn the_process_wide_registry_exports_task_up_and_serves_healthz() {
        // The registry `serve` uses is shared by every test of this binary: the task's name is
        // this test's own, and only its own lines are checked.
        let name = "metrics-test-task-up";
        let (running, go) = failing_task(health::global(), name);
        assert!(
            global()
                .render()
                .contains(&format!("quantum_task_up{{task=\"{name}\"}} 1")),
            "{}",
            global().render()
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let addr = serve(([127, 0, 0, 1], 0).into(), stop.clone())
            .await
            .unwrap();
        go.cancel();
        let line = format!("{name} failed (");
        let (status, body) = healthz_until(addr, |_, body| body.contains(&line)).await;
        assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.starts_with("failing\n"), "{body}");
        let text = global().render();
        assert!(
            text.contains(&format!("quantum_task_up{{task=\"{name}\"}} 0")),
            "{text}"
        );
        assert!(text.contains("# TYPE quantum_task_up gauge"), "{text}");
        assert!(running.wait().await.is_err());
        stop.cancel();
    }

    #[test]
    fn counters_gauges_and_histograms_render_as_prometheus_text() {
        let m = Metrics::default();
        m.inc("quantum_results_total", &[("status", "filled")]);
        m.inc("quantum_results_total", &[("status", "filled")]);
        m.set("quantum_tracked_positions", &[], 3.0);
        m.observe(
            "quantum_fill_confirm_seconds",
            &[("confirmed_by", "user_stream")],
            0.004,
        );
        let text = m.render();
        assert!(
            text.contains("# TYPE quantum_results_total counter"),
            "{text}"
        );
        assert!(
            text.contains("quantum_results_total{status=\"filled\"} 2"),
            "{text}"
        );
        assert!(text.contains("quantum_tracked_positions 3"), "{text}");
        assert!(
            text.contains(
                "quantum_fill_confirm_seconds_bucket{confirmed_by=\"user_stream\",le=\"0.001\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "quantum_fill_confirm_seconds_bucket{confirmed_by=\"user_stream\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("quantum_fill_confirm_seconds_count{confirmed_by=\"user_stream\"} 1"),
            "{text}"
        );
    }
}
