//! Prometheus metrics of both services, in one process-wide registry ([`global`]) served as
//! Prometheus text on `/metrics` next to `/healthz` (`--metrics-addr`; the tasks' states come
//! from [`crate::health`]). Names start with `quantum_`; the process's own CPU, memory, file
//! descriptors and threads follow the usual `process_*` names.
//!
//! Built on `prometheus-client`: every metric is a typed handle, a field of [`Metrics`]
//! registered once with its HELP text; label sets are structs, and closed sets of label values
//! are enums, so a call site cannot misspell a name or a label. Each series appears when it is
//! first used, or registered at 0 when a service starts ([`register_execution`],
//! [`register_exit_monitor`]), so a metric one service sets does not show a misleading 0 in a
//! process running only the other. Every metric's `# HELP` and `# TYPE` lines are always
//! rendered, series or not: the tests read the exported names from them. Floats appear here
//! and nowhere near money.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelSetEncoder,
    LabelValueEncoder, MetricEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::health;

/// A gauge holding seconds (an age, a wait).
pub type SecondsGauge = Gauge<f64, AtomicU64>;

/// Histograms built with their own buckets.
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets of `quantum_fill_confirm_seconds` (order sent → final state confirmed): a reply or a
/// user-stream event takes milliseconds to a second; a REST poll, or an order the exchange leaves
/// `NEW`, up to the fill timeout (30 s by default) and a little past it.
pub const FILL_CONFIRM_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Buckets of `quantum_exit_seconds` (close intent sent → close confirmed): the intent crosses
/// the bus to the execution service and back, so tens of milliseconds at best; a close that
/// waits out a rate-limit ban or is retried takes minutes.
pub const EXIT_BUCKETS: [f64; 12] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0,
];

/// Enums of label values (a closed set), each value written as its `as_str`.
macro_rules! label_values {
    ($($(#[$meta:meta])* $name:ident { $($variant:ident => $text:expr),+ $(,)? })+) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    )+};
}

label_values! {
    /// How an order submit whose outcome was unknown was resolved.
    Resolution { Found => "found", Resent => "resent", Unresolved => "unresolved" }
    /// A user data stream connection event.
    StreamEvent { Connected => "connected", Disconnected => "disconnected" }
    /// Who closed a lot: quantum, or the exchange (a protective order, by hand).
    ClosedBy { Quantum => "quantum", Exchange => "exchange" }
    /// The service a REST client belongs to (each has its own client and weight view).
    Client { Execution => "execution", ExitMonitor => "exit-monitor" }
    /// The stream an entry was dead-lettered from.
    DeadLetterStream {
        TradeIntent => bus::keys::TRADE_INTENT,
        TradeExecutionResult => bus::keys::TRADE_EXECUTION_RESULT,
    }
    /// The kind of an exit trigger, as its log marker.
    ExitTrigger { TpHit => "TP_HIT", SlHit => "SL_HIT", TrailHit => "TRAIL_HIT" }
}

impl From<&engine::exits::Trigger> for ExitTrigger {
    fn from(trigger: &engine::exits::Trigger) -> Self {
        match trigger {
            engine::exits::Trigger::TakeProfit { .. } => ExitTrigger::TpHit,
            engine::exits::Trigger::StopLoss { .. } => ExitTrigger::SlHit,
            engine::exits::Trigger::Trailing { .. } => ExitTrigger::TrailHit,
        }
    }
}

/// Label sets of one label whose value is an enum of another crate (which cannot implement
/// `EncodeLabelValue` here): the label is written as the enum's `as_str`.
macro_rules! foreign_label_set {
    ($($(#[$meta:meta])* $name:ident { $key:ident: $ty:ty })+) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name {
            pub $key: $ty,
        }

        impl EncodeLabelSet for $name {
            fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
                EncodeLabelSet::encode(&[(stringify!($key), self.$key.as_str())], encoder)
            }
        }
    )+};
}

foreign_label_set! {
    /// `{status}` of `quantum_results_total`.
    StatusLabels { status: model::ResultStatus }
    /// `{confirmed_by}` of `quantum_fill_confirm_seconds`.
    ConfirmLabels { confirmed_by: model::ConfirmedBy }
    /// `{kind}` of `quantum_exit_alarms` and `quantum_exit_alarms_total`.
    AlarmLabels { kind: engine::monitor::AlarmKind }
}

/// `{resolution}` of `quantum_ambiguous_submits_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ResolutionLabels {
    pub resolution: Resolution,
}

/// `{event}` of `quantum_user_stream_events_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct StreamEventLabels {
    pub event: StreamEvent,
}

/// `{by}` of `quantum_positions_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ClosedByLabels {
    pub by: ClosedBy,
}

/// `{client}` of the rate-limit weight gauges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ClientLabels {
    pub client: Client,
}

/// `{stream}` of `quantum_dead_letters_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub stream: DeadLetterStream,
}

/// `{kind}` of `quantum_exit_triggers_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct TriggerLabels {
    pub kind: ExitTrigger,
}

/// `{symbol}` of `quantum_mark_price_age_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct SymbolLabels {
    pub symbol: String,
}

/// `{task}` of `quantum_task_up`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct TaskLabels {
    pub task: String,
}

/// `{client,endpoint}` of `quantum_rest_requests_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct RequestLabels {
    client: Client,
    endpoint: String,
}

/// `{client,code}` of `quantum_rate_limit_bans_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct BanLabels {
    client: Client,
    code: u16,
}

/// The empty label set of a metric without labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(&self, _encoder: &mut LabelSetEncoder) -> fmt::Result {
        Ok(())
    }
}

/// A metric without labels whose one series appears when first used (not at 0 in a process
/// that never uses it: the exit monitor alone exports no `quantum_user_stream_connected`).
#[derive(Debug, Clone)]
pub struct Single<M, C = fn() -> M>(Family<NoLabels, M, C>);

impl<M: Default> Default for Single<M> {
    fn default() -> Self {
        Single(Family::default())
    }
}

impl<M: Clone, C: MetricConstructor<M>> Single<M, C> {
    /// The series (created at 0 on first use); a handle on the same value.
    pub fn get(&self) -> M {
        self.0.get_or_create_owned(&NoLabels)
    }
}

/// Every metric quantum exports, one typed handle each.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub intents_received: Single<Counter>,
    pub orders_placed: Single<Counter>,
    pub intent_waits: Single<Counter>,
    pub results: Family<StatusLabels, Counter>,
    pub ambiguous_submits: Family<ResolutionLabels, Counter>,
    pub fill_confirm_seconds: HistogramFamily<ConfirmLabels>,
    pub user_stream_events: Family<StreamEventLabels, Counter>,
    pub user_stream_connected: Single<Gauge>,
    pub user_stream_last_event_age_seconds: Single<SecondsGauge>,
    pub oldest_working_order_seconds: Single<SecondsGauge>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    pub invalid_results: Single<Counter>,
    pub tracked_positions: Single<Gauge>,
    pub untracked_positions: Single<Gauge>,
    pub trading_state: Single<Gauge>,
    pub mark_price_age_seconds: Family<SymbolLabels, SecondsGauge>,
    pub exit_triggers: Family<TriggerLabels, Counter>,
    pub exit_seconds: Single<Histogram, fn() -> Histogram>,
    pub positions_closed: Family<ClosedByLabels, Counter>,
    pub exit_alarms: Family<AlarmLabels, Gauge>,
    pub exit_alarms_total: Family<AlarmLabels, Counter>,
    pub rate_limit_weight_used: Family<ClientLabels, Gauge>,
    pub rate_limit_weight_limit: Family<ClientLabels, Gauge>,
    pub task_up: Family<TaskLabels, Gauge>,
    /// `quantum_rest_requests_total` and `quantum_rate_limit_bans_total`, as the REST clients
    /// count them ([`Metrics::record_rest`]).
    rest: Arc<RestCounts>,
}

/// Registers metrics so that their `# HELP` and `# TYPE` lines are rendered even before the
/// first series (prometheus-client leaves out a family with none).
#[derive(Debug)]
struct Listed(Box<dyn prometheus_client::registry::Metric>);

impl EncodeMetric for Listed {
    fn encode(&self, encoder: MetricEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric and the process metrics (on Linux).
    pub fn new() -> Self {
        let fill_confirm_seconds: HistogramFamily<ConfirmLabels> =
            Family::new_with_constructor(|| Histogram::new(FILL_CONFIRM_BUCKETS));
        let exit_seconds: Single<Histogram, fn() -> Histogram> =
            Single(Family::new_with_constructor(|| {
                Histogram::new(EXIT_BUCKETS)
            }));
        let m = Metrics {
            registry: Registry::default(),
            intents_received: Single::default(),
            orders_placed: Single::default(),
            intent_waits: Single::default(),
            results: Family::default(),
            ambiguous_submits: Family::default(),
            fill_confirm_seconds,
            user_stream_events: Family::default(),
            user_stream_connected: Single::default(),
            user_stream_last_event_age_seconds: Single::default(),
            oldest_working_order_seconds: Single::default(),
            dead_letters: Family::default(),
            invalid_results: Single::default(),
            tracked_positions: Single::default(),
            untracked_positions: Single::default(),
            trading_state: Single::default(),
            mark_price_age_seconds: Family::default(),
            exit_triggers: Family::default(),
            exit_seconds,
            positions_closed: Family::default(),
            exit_alarms: Family::default(),
            exit_alarms_total: Family::default(),
            rate_limit_weight_used: Family::default(),
            rate_limit_weight_limit: Family::default(),
            task_up: Family::default(),
            rest: Arc::default(),
        };
        let mut registry = Registry::default();
        // The name as exposed and the HELP text ending in a full stop, which prometheus-client
        // adds back; a counter is registered without `_total`, which it appends.
        let mut add = |name: &str, help: &str, metric: Listed| {
            let help = help.strip_suffix('.').unwrap_or(help);
            let name = match metric.metric_type() {
                MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            registry.register(name, help, metric);
        };
        add(
            "quantum_untracked_positions",
            "Symbols where the exchange holds a position the exit monitor's book does not explain (not yet adopted).",
            listed(&m.untracked_positions.0),
        );
        add(
            "quantum_trading_state",
            "The operator's trading state as this process last read it: 0 active, 1 reducing (no new entries), 2 halted (nothing new is sent).",
            listed(&m.trading_state.0),
        );
        add(
            "quantum_intents_received_total",
            "Trade intents read from the bus.",
            listed(&m.intents_received.0),
        );
        add(
            "quantum_orders_placed_total",
            "Orders the execution service sent to the exchange.",
            listed(&m.orders_placed.0),
        );
        add(
            "quantum_results_total",
            "Execution results published, by status.",
            listed(&m.results),
        );
        add(
            "quantum_ambiguous_submits_total",
            "Order submits whose outcome was unknown, by how they were resolved.",
            listed(&m.ambiguous_submits),
        );
        add(
            "quantum_intent_waits_total",
            "Times an intent waited before a request the exchange held back for now (rate budget spent, 429, definite 5xx); nothing was executed.",
            listed(&m.intent_waits.0),
        );
        add(
            "quantum_fill_confirm_seconds",
            "From sending an order to its confirmed final state, by confirmation source.",
            listed(&m.fill_confirm_seconds),
        );
        add(
            "quantum_user_stream_events_total",
            "User data stream connections and disconnections.",
            listed(&m.user_stream_events),
        );
        add(
            "quantum_dead_letters_total",
            "Entries copied to the dead-letter stream, by source stream.",
            listed(&m.dead_letters),
        );
        add(
            "quantum_tracked_positions",
            "Lots the exit monitor tracks.",
            listed(&m.tracked_positions.0),
        );
        add(
            "quantum_exit_triggers_total",
            "Exit triggers fired, by kind.",
            listed(&m.exit_triggers),
        );
        add(
            "quantum_positions_closed_total",
            "Lots closed, by how.",
            listed(&m.positions_closed),
        );
        add(
            "quantum_invalid_results_total",
            "Execution results the exit monitor refused.",
            listed(&m.invalid_results.0),
        );
        add(
            "quantum_rate_limit_weight_used",
            "Request weight used in the current minute (the last reply's count plus what was sent since), by client.",
            listed(&m.rate_limit_weight_used),
        );
        add(
            "quantum_rate_limit_weight_limit",
            "Request weight allowed per minute (exchangeInfo).",
            listed(&m.rate_limit_weight_limit),
        );
        add(
            "quantum_oldest_working_order_seconds",
            "Seconds the execution service's oldest intent has had an order in the works (sent or about to be, not yet final): a stuck order when it grows past the fill timeout.",
            listed(&m.oldest_working_order_seconds.0),
        );
        add(
            "quantum_user_stream_connected",
            "1 while the user data stream is connected, else 0.",
            listed(&m.user_stream_connected.0),
        );
        add(
            "quantum_user_stream_last_event_age_seconds",
            "Seconds since the user data stream connected or last delivered an event (an idle account gets none).",
            listed(&m.user_stream_last_event_age_seconds.0),
        );
        add(
            "quantum_mark_price_age_seconds",
            "Seconds since the last mark price of a held symbol.",
            listed(&m.mark_price_age_seconds),
        );
        add(
            "quantum_exit_seconds",
            "From sending a close intent to its confirmed fill (the lot closed).",
            listed(&m.exit_seconds.0),
        );
        add(
            "quantum_exit_alarms",
            "Exit monitor alarms raised now, by kind (a position not protected, a close unanswered, ...).",
            listed(&m.exit_alarms),
        );
        add(
            "quantum_exit_alarms_total",
            "Exit monitor alarms raised, by kind.",
            listed(&m.exit_alarms_total),
        );
        add(
            "quantum_task_up",
            "1 while the service task runs (or is stopping gracefully), 0 when it is starting, stopped or failed; by task.",
            listed(&m.task_up),
        );
        registry.register_collector(Box::new(m.rest.clone()));
        if cfg!(target_os = "linux") {
            registry.register_collector(Box::new(ProcessCollector));
        }
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, nor can the encoders of these metrics.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Mirrors a REST client's own counts of requests sent (by endpoint) and 429/418 replies
    /// (by status), totals since the client was made.
    pub fn record_rest(&self, client: Client, requests: Vec<(String, u64)>, bans: Vec<(u16, u64)>) {
        self.rest
            .lock()
            .insert(client, ClientCounts { requests, bans });
    }
}

fn listed<M: prometheus_client::registry::Metric + Clone>(metric: &M) -> Listed {
    Listed(Box::new(metric.clone()))
}

/// The REST clients' own counts, by client, as last recorded.
///
/// The clients count every request and every 429/418 themselves (the counts `quantum doctor` and
/// the exchange's weight accounting use); these are mirrored, not counted twice. A collector
/// writes them as constant counters at each scrape, exactly as the client counted: counting
/// the difference since the last look into a `Counter` would need the last value of every
/// series kept as well, and would go wrong when a client is replaced (a service restarted in
/// the same process starts its counts at 0 again; here the counter resets, as Prometheus
/// expects of a restart).
#[derive(Debug, Default)]
struct RestCounts(Mutex<BTreeMap<Client, ClientCounts>>);

#[derive(Debug, Default, Clone)]
struct ClientCounts {
    requests: Vec<(String, u64)>,
    bans: Vec<(u16, u64)>,
}

impl RestCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Client, ClientCounts>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Collector for RestCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let counts = self.lock().clone();
        let mut requests = encoder.encode_descriptor(
            "quantum_rest_requests",
            "Requests sent to the exchange's REST API, by client and endpoint.",
            None,
            MetricType::Counter,
        )?;
        for (client, c) in &counts {
            for (endpoint, n) in &c.requests {
                let labels = RequestLabels {
                    client: *client,
                    endpoint: endpoint.clone(),
                };
                ConstCounter::new(*n).encode(requests.encode_family(&labels)?)?;
            }
        }
        let mut bans = encoder.encode_descriptor(
            "quantum_rate_limit_bans",
            "HTTP 429 (too many requests) and 418 (IP banned) replies from the exchange, by client and code.",
            None,
            MetricType::Counter,
        )?;
        for (client, c) in &counts {
            for (code, n) in &c.bans {
                let labels = BanLabels {
                    client: *client,
                    code: *code,
                };
                ConstCounter::new(*n).encode(bans.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The process's CPU time, memory, file descriptors, threads and start time, read from
/// `/proc/self` at each scrape, under the names other Prometheus clients use. Linux only: it is
/// not registered elsewhere (no `/proc`), and a file it cannot read leaves out its metrics.
#[derive(Debug)]
struct ProcessCollector;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`): 100 on every Linux platform
/// (the kernel's ABI; client_golang's procfs assumes it too, and reading `sysconf` would take
/// `unsafe`).
const USER_HZ: f64 = 100.0;

/// The fields of `/proc/self/stat` used here.
#[derive(Debug)]
struct Stat {
    cpu_ticks: u64,
    threads: u64,
    start_ticks: u64,
    virtual_bytes: u64,
}

impl Stat {
    /// Parses `/proc/self/stat`: fields after the command name (in parentheses, which may itself
    /// hold spaces and parentheses), numbered as in proc(5).
    fn parse(text: &str) -> Option<Stat> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state).
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        Some(Stat {
            cpu_ticks: field(14)? + field(15)?,
            threads: field(20)?,
            start_ticks: field(22)?,
            virtual_bytes: field(23)?,
        })
    }
}

/// A `Name:   value kB` line of `/proc/self/status`, in bytes.
fn status_kb(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The soft limit of open files, from `/proc/self/limits` (none when unlimited).
fn max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (Unix seconds), from the `btime` line of `/proc/stat`.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        if let Some(stat) = read("/proc/self/stat").as_deref().and_then(Stat::parse) {
            let cpu = ConstCounter::new(stat.cpu_ticks as f64 / USER_HZ);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?)?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.virtual_bytes,
            )?;
            gauge(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process.",
                stat.threads,
            )?;
            if let Some(boot) = read("/proc/stat").as_deref().and_then(boot_time) {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    boot as f64 + stat.start_ticks as f64 / USER_HZ,
                )?;
            }
        }
        if let Some(rss) = read("/proc/self/status")
            .as_deref()
            .and_then(|s| status_kb(s, "VmRSS:"))
        {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                rss,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // Less the descriptor reading the directory, which the listing includes.
            let open = dir.count().saturating_sub(1) as u64;
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                open,
            )?;
        }
        if let Some(max) = read("/proc/self/limits").as_deref().and_then(max_fds) {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        Ok(())
    }
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The request weight a REST client has used this minute and its limit, as gauges labelled by
/// the client (each service has its own client and view), and its own counts of requests and
/// 429/418 replies.
pub fn export_rest(rest: &binance::RestClient, client: Client) {
    let (used, limit) = rest.weight_usage();
    let m = global();
    let labels = ClientLabels { client };
    m.rate_limit_weight_used
        .get_or_create(&labels)
        .set(i64::from(used));
    m.rate_limit_weight_limit
        .get_or_create(&labels)
        .set(i64::from(limit));
    m.record_rest(client, rest.requests_sent(), rest.bans_seen());
}

/// The execution service's counters, at 0 until they count.
pub fn register_execution() {
    let m = global();
    m.intents_received.get();
    m.orders_placed.get();
    m.intent_waits.get();
    for status in model::ResultStatus::ALL {
        m.results.get_or_create_owned(&StatusLabels { status });
    }
    for &resolution in Resolution::ALL {
        m.ambiguous_submits
            .get_or_create_owned(&ResolutionLabels { resolution });
    }
    for &event in StreamEvent::ALL {
        m.user_stream_events
            .get_or_create_owned(&StreamEventLabels { event });
    }
    m.dead_letters.get_or_create_owned(&DeadLetterLabels {
        stream: DeadLetterStream::TradeIntent,
    });
}

/// The exit monitor's counters, at 0 until they count, and its alarm gauges at 0.
pub fn register_exit_monitor() {
    let m = global();
    for &kind in ExitTrigger::ALL {
        m.exit_triggers.get_or_create_owned(&TriggerLabels { kind });
    }
    for &by in ClosedBy::ALL {
        m.positions_closed
            .get_or_create_owned(&ClosedByLabels { by });
    }
    m.invalid_results.get();
    m.dead_letters.get_or_create_owned(&DeadLetterLabels {
        stream: DeadLetterStream::TradeExecutionResult,
    });
    for kind in engine::monitor::AlarmKind::ALL {
        m.exit_alarms_total
            .get_or_create_owned(&AlarmLabels { kind });
        m.exit_alarms.get_or_create_owned(&AlarmLabels { kind });
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

/// The routes: `/metrics` (the Prometheus text format, version 0.0.4, of [`global`], with its
/// content type) and `/healthz` over `health`: 200 when every registered task is healthy, else
/// 503, with `ok` or `failing` on the first line and one `name state` line per task (see
/// [`health::Health::report`]).
pub fn app(health: &health::Health) -> axum::Router {
    use axum::routing::get;
    let health = health.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        "content-type",
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    )],
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

    /// The metrics quantum exports, by name as queried (`quantum_results_total`), with their
    /// type: read from the `# TYPE` lines of a new registry, which lists every metric.
    fn exported() -> BTreeMap<String, String> {
        Metrics::new()
            .render()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .filter(|(name, _)| name.starts_with("quantum_"))
            .map(|(name, kind)| (name.to_string(), kind.to_string()))
            .collect()
    }

    #[test]
    fn every_metric_is_listed_with_its_help_and_type_before_its_first_series() {
        let names = exported();
        assert_eq!(names.len(), 26, "{names:?}");
        assert_eq!(names["quantum_results_total"], "counter");
        assert_eq!(names["quantum_rest_requests_total"], "counter");
        assert_eq!(names["quantum_rate_limit_bans_total"], "counter");
        assert_eq!(names["quantum_task_up"], "gauge");
        assert_eq!(names["quantum_exit_seconds"], "histogram");
        let text = Metrics::new().render();
        assert!(
            text.contains(
                "# HELP quantum_intents_received_total Trade intents read from the bus.\n"
            ),
            "{text}"
        );
        // No series before the first use: a process running only the exit monitor does not
        // export a user stream reported down.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(!line.starts_with("quantum_"), "{line}");
        }
    }

    #[test]
    fn the_grafana_dashboard_uses_only_exported_metrics_and_shows_each_of_them() {
        let exported = exported();
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
                            .filter(|b| exported.get(*b).is_some_and(|k| k == "histogram"))
                            .unwrap_or(word);
                        used.insert(base.to_string());
                    }
                }
            }
        }
        for name in &used {
            assert!(
                exported.contains_key(name),
                "the dashboard queries {name}, which quantum does not export"
            );
        }
        for name in exported.keys() {
            assert!(used.contains(name), "the dashboard does not show {name}");
        }
    }

    /// The alert rules in `deploy/` name only metrics quantum exports (a renamed metric would
    /// leave an alert that never fires), and cover what the operator must hear about: positions
    /// unprotected or untracked, stuck orders, the user stream down, rate-limit bans, dead
    /// letters.
    #[test]
    fn the_alert_rules_use_only_exported_metrics_and_cover_the_promises() {
        let exported = exported();
        let rules = include_str!("../../../deploy/prometheus/quantum-alerts.yml");
        let mut used = std::collections::BTreeSet::new();
        for line in rules.lines().map(str::trim) {
            let Some(expr) = line.strip_prefix("expr:") else {
                continue;
            };
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("quantum_") {
                    assert!(
                        exported.contains_key(word),
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
        let reply = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap();
        assert_eq!(
            reply.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let served = reply.text().await.unwrap();
        assert!(
            served.contains(&format!("quantum_task_up{{task=\"{name}\"}} 0\n")),
            "{served}"
        );
        assert!(running.wait().await.is_err());
        stop.cancel();
    }

    #[test]
    fn counters_gauges_and_histograms_render_as_prometheus_text() {
        let m = Metrics::new();
        let filled = StatusLabels {
            status: model::ResultStatus::Filled,
        };
        m.results.get_or_create(&filled).inc();
        m.results.get_or_create(&filled).inc();
        m.tracked_positions.get().set(3);
        m.user_stream_last_event_age_seconds.get().set(1.5);
        m.fill_confirm_seconds
            .get_or_create(&ConfirmLabels {
                confirmed_by: model::ConfirmedBy::UserStream,
            })
            .observe(0.004);
        m.exit_seconds.get().observe(0.2);
        let text = m.render();
        for expected in [
            "# TYPE quantum_results_total counter\n",
            "quantum_results_total{status=\"filled\"} 2\n",
            "quantum_tracked_positions 3\n",
            "quantum_user_stream_last_event_age_seconds 1.5\n",
            "# TYPE quantum_fill_confirm_seconds histogram\n",
            "quantum_fill_confirm_seconds_bucket{confirmed_by=\"user_stream\",le=\"0.005\"} 1\n",
            "quantum_fill_confirm_seconds_bucket{confirmed_by=\"user_stream\",le=\"60\"} 1\n",
            "quantum_fill_confirm_seconds_bucket{confirmed_by=\"user_stream\",le=\"+Inf\"} 1\n",
            "quantum_fill_confirm_seconds_count{confirmed_by=\"user_stream\"} 1\n",
            // Each histogram has its own buckets: exits go up to ten minutes.
            "quantum_exit_seconds_bucket{le=\"0.1\"} 0\n",
            "quantum_exit_seconds_bucket{le=\"0.25\"} 1\n",
            "quantum_exit_seconds_bucket{le=\"600\"} 1\n",
            "quantum_exit_seconds_count 1\n",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        assert!(!text.contains("le=\"0.001\""), "{text}");
        assert!(
            !text.contains(
                "quantum_fill_confirm_seconds_bucket{confirmed_by=\"user_stream\",le=\"600\"}"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_rest_clients_counts_are_mirrored_as_counters() {
        let m = Metrics::new();
        m.record_rest(
            Client::ExitMonitor,
            vec![("GET /fapi/v3/positionRisk".into(), 7)],
            vec![(429, 2)],
        );
        m.record_rest(
            Client::Execution,
            vec![("POST /fapi/v1/order".into(), 3)],
            vec![],
        );
        let text = m.render();
        for expected in [
            "# TYPE quantum_rest_requests_total counter\n",
            "quantum_rest_requests_total{client=\"exit-monitor\",endpoint=\"GET /fapi/v3/positionRisk\"} 7\n",
            "quantum_rest_requests_total{client=\"execution\",endpoint=\"POST /fapi/v1/order\"} 3\n",
            "# TYPE quantum_rate_limit_bans_total counter\n",
            "quantum_rate_limit_bans_total{client=\"exit-monitor\",code=\"429\"} 2\n",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        // A later count replaces the earlier one (the client's own total, not added to).
        m.record_rest(
            Client::ExitMonitor,
            vec![("GET /fapi/v3/positionRisk".into(), 9)],
            vec![(429, 2)],
        );
        assert!(
            m.render().contains(
                "quantum_rest_requests_total{client=\"exit-monitor\",endpoint=\"GET /fapi/v3/positionRisk\"} 9\n"
            )
        );
    }

    #[test]
    fn a_stale_symbol_series_is_removed() {
        let m = Metrics::new();
        for symbol in ["BTCUSDT", "ETHUSDT"] {
            m.mark_price_age_seconds
                .get_or_create(&SymbolLabels {
                    symbol: symbol.into(),
                })
                .set(2.0);
        }
        m.mark_price_age_seconds.remove(&SymbolLabels {
            symbol: "BTCUSDT".into(),
        });
        let text = m.render();
        assert!(!text.contains("BTCUSDT"), "{text}");
        assert!(
            text.contains("quantum_mark_price_age_seconds{symbol=\"ETHUSDT\"} 2.0\n"),
            "{text}"
        );
    }

    /// A sample's name, labels and value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// One sample line of the text format, its label values unescaped; `None` unless the line is
    /// well formed: `name{key="value",...} number`, values escaping backslashes, quotes and
    /// newlines.
    fn parse_sample(line: &str) -> Option<Sample> {
        let is_name = |s: &str, colon: bool| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
        };
        let name_end = line.find(['{', ' '])?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return None;
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(mut body) = rest.strip_prefix('{') {
            loop {
                let (key, after) = body.split_once("=\"")?;
                if !is_name(key, false) {
                    return None;
                }
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next()? {
                        (_, '\\') => match chars.next()?.1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            _ => return None,
                        },
                        (i, '"') => break i + 1,
                        (_, '\n') => return None,
                        (_, c) => value.push(c),
                    }
                };
                labels.push((key.to_string(), value));
                let after = &after[end..];
                match after.strip_prefix(',') {
                    Some(next) => body = next,
                    None => {
                        rest = after.strip_prefix('}')?;
                        break;
                    }
                }
            }
        }
        let value = match rest.strip_prefix(' ')? {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().ok()?,
        };
        Some((name.to_string(), labels, value))
    }

    #[test]
    fn label_values_with_quotes_backslashes_and_newlines_render_as_valid_text() {
        let m = Metrics::new();
        let odd = "BTC\"USDT\\x\ny";
        m.mark_price_age_seconds
            .get_or_create(&SymbolLabels { symbol: odd.into() })
            .set(1.0);
        m.task_up
            .get_or_create(&TaskLabels { task: odd.into() })
            .set(1);
        m.record_rest(
            Client::Execution,
            vec![(format!("GET /fapi/{odd}"), 4)],
            vec![],
        );
        let text = m.render();
        assert!(
            text.contains(r#"quantum_mark_price_age_seconds{symbol="BTC\"USDT\\x\ny"} 1.0"#),
            "{text}"
        );
        let mut odd_series = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            let (name, labels, value) =
                parse_sample(line).unwrap_or_else(|| panic!("not exposition text: {line:?}"));
            for (key, label) in labels {
                if label.contains("BTC") {
                    odd_series.push((name.clone(), key, label, value));
                }
            }
        }
        odd_series.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            odd_series,
            [
                (
                    "quantum_mark_price_age_seconds".to_string(),
                    "symbol".to_string(),
                    odd.to_string(),
                    1.0
                ),
                (
                    "quantum_rest_requests_total".to_string(),
                    "endpoint".to_string(),
                    format!("GET /fapi/{odd}"),
                    4.0
                ),
                (
                    "quantum_task_up".to_string(),
                    "task".to_string(),
                    odd.to_string(),
                    1.0
                ),
            ]
        );
    }

    #[test]
    fn proc_stat_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let line = "42 (we (ird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 1048576 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(stat.cpu_ticks, 300);
        assert_eq!(stat.threads, 7);
        assert_eq!(stat.start_ticks, 12345);
        assert_eq!(stat.virtual_bytes, 1_048_576);
        assert_eq!(
            status_kb("Name:\tx\nVmRSS:\t    2048 kB\nThreads:\t7\n", "VmRSS:"),
            Some(2_097_152)
        );
        assert_eq!(
            max_fds("Limit Soft Limit Hard Limit Units\nMax open files            1024                 524288               files\n"),
            Some(1024)
        );
        assert_eq!(
            max_fds("Max open files            unlimited            unlimited            files\n"),
            None
        );
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_metrics_are_read_from_proc_self() {
        let text = Metrics::new().render();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {name}: {text}"))
        };
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let rss = value("process_resident_memory_bytes");
        assert!(rss > 1_000_000.0, "{text}");
        assert!(value("process_virtual_memory_bytes") >= rss, "{text}");
        let open = value("process_open_fds");
        assert!(open >= 1.0, "{text}");
        assert!(value("process_max_fds") >= open, "{text}");
        assert!(value("process_threads") >= 1.0, "{text}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "started at {start}, now {now}"
        );
    }
}
