//! Benchmark and check (issue 10): the execution service at the exchange's limits.
//!
//! ```text
//! cargo build --release -p quantum        # the workers are this binary; cargo does not build it for an example
//! cargo run --release -p service --example exec_limits -- burst [--intents N] [--workers K]
//! cargo run --release -p service --example exec_limits -- paced [--rate R] [--seconds S] [--workers K]
//! ```
//!
//! Each run starts the simulator in this process (Binance's limits enforced: 2,400 weight a
//! minute per IP, 300 orders per 10 s and 1,200 a minute per account; fills at zero delay), a
//! throwaway `redis-server`, and K `quantum execution` child processes on the same account, the
//! same Redis and the same consumer group, each its own consumer. It publishes small MARKET
//! intents (alternately BUY and SELL over a few symbols, so positions stay small) and waits,
//! with a deadline, until every intent has a result. It reports the results by status, the
//! exchange requests by endpoint (`GET /sim/v1/requests`, after minus before), the 429s and 418s,
//! the elapsed time and sustained intents per minute against the 1,200/min order limit, the
//! workers' CPU time per intent and their peak RSS, as markdown rows for BENCHMARKS.md.
//!
//! The order limits count in fixed windows aligned to the clock (as Binance's do), so a burst that
//! spans a minute boundary can fill more than 1,200 intents in 60 s (300 per 10 s window is the
//! binding limit then): a share above 100 % over less than two minutes is no error. Runs shorter
//! than a minute are marked `(< 1 min)`: their rate is a burst's, not a sustained one.
//!
//! It exits non-zero when an intent has no `filled` result (or more than one result), when the
//! exchange answered 429 or 418, or when a worker did not end cleanly: it is a check as well as
//! a benchmark. Nothing in the report is fixed in advance; every figure is measured.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus::{keys, Bus};
use rust_decimal::Decimal;
use serde_json::Value;
use simulator::SimConfig;

#[path = "common/percentiles.rs"]
mod percentiles;
#[path = "common/workers.rs"]
mod workers;

use workers::{ExecutionArgs, Worker};

/// The account's order limit per minute (the simulator's, Binance's).
const ORDER_LIMIT_1M: f64 = 1200.0;
/// The consumer group the benchmark reads results in (its own; nothing else reads there).
const RESULTS_GROUP: &str = "exec-limits";
/// What a worker logs once it reads intents.
const READY_MARKER: &str = "execution service reading";

/// Symbols and quantities the intents use: each well above the symbol's minimum notional and far
/// below the risk gate's default 1,000 USDT, at the simulator's start prices.
const SIZES: &[(&str, &str)] = &[
    ("DOGEUSDT", "100"),
    ("XRPUSDT", "10"),
    ("AXSUSDT", "5"),
    ("SOLUSDT", "0.1"),
];

const HELP: &str = "\
exec_limits: the execution service at Binance's rate limits (issue 10). A benchmark and a check.

USAGE:
    cargo build --release -p quantum
    cargo run --release -p service --example exec_limits -- burst [--intents N] [OPTIONS]
    cargo run --release -p service --example exec_limits -- paced [--rate R] [--seconds S] [OPTIONS]

SCENARIOS:
    burst    publish N intents at once (default 2000). Beyond 300 orders per 10 s and 1,200 a
             minute the exchange refuses orders, so a large burst must queue for minutes.
    paced    publish R intents a second (default 10) for S seconds (default 120).

OPTIONS:
    --intents N          burst size [default: 2000]
    --rate R             paced: intents per second [default: 10]
    --seconds S          paced: how long to publish [default: 120]
    --workers K[,K..]    execution processes on the same account, Redis and consumer group;
                         a list runs the scenario once per entry, each on a fresh simulator and
                         Redis [default: 1,2]
    --fill-timeout DUR   the workers' --fill-timeout [default: 60s]
    --max-age DUR        the workers' execution.max_age; a burst beyond the order limit waits
                         ~100 s per 2,000 intents, so the 10 s default would expire it [default: 1h]
    --timeout SECS       give up waiting for results after this long [default: twice the time
                         the order limit needs, plus the fill timeout, plus 90 s]
    --quantum-bin PATH   the quantum binary [default: target/<profile>/quantum next to this example]
    -h, --help           this text

Each run: the simulator in this process (rate limits enforced, fills at zero delay, 1,000,000
USDT), a throwaway redis-server, K `quantum execution` children (logs in a temp directory, named in
the output; stopped with SIGTERM, SIGKILL after the fill timeout + 20 s). Intents are MARKET BUY and
SELL by quantity, alternating per symbol over DOGEUSDT, XRPUSDT, AXSUSDT and SOLUSDT.

The order limits count in fixed, clock-aligned windows (as Binance's), so a burst across a minute
boundary can exceed 1,200 in 60 s; rates over less than a minute are marked (< 1 min).

Exit status: 0 when every intent got exactly one result and it is `filled`, no 429 or 418 was
answered, and every worker stopped cleanly; 1 otherwise; 2 for a usage error.
";

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Burst { intents: usize },
    Paced { rate: f64, seconds: f64 },
}

impl Scenario {
    fn intents(self) -> usize {
        match self {
            Scenario::Burst { intents } => intents,
            Scenario::Paced { rate, seconds } => (rate * seconds).round() as usize,
        }
    }

    fn label(self) -> String {
        match self {
            Scenario::Burst { intents } => format!("burst {intents}"),
            Scenario::Paced { rate, seconds } => format!("paced {rate}/s × {seconds} s"),
        }
    }

    /// The shortest time the order limits allow for all intents (or the publishing time).
    fn expected(self) -> Duration {
        let by_limit = self.intents() as f64 / (ORDER_LIMIT_1M / 60.0);
        let publishing = match self {
            Scenario::Burst { .. } => 0.0,
            Scenario::Paced { seconds, .. } => seconds,
        };
        Duration::from_secs_f64(by_limit.max(publishing))
    }
}

#[derive(Debug)]
struct Args {
    scenario: Scenario,
    workers: Vec<usize>,
    fill_timeout: String,
    max_age: String,
    timeout: Option<Duration>,
    quantum_bin: Option<PathBuf>,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut scenario_name = None;
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            print!("{HELP}");
            std::process::exit(0);
        }
        if let Some(flag) = arg.strip_prefix("--") {
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => (
                    flag.to_string(),
                    it.next()
                        .ok_or_else(|| format!("--{flag} needs a value"))?
                        .clone(),
                ),
            };
            if flags.insert(name.clone(), value).is_some() {
                return Err(format!("--{name} given twice"));
            }
        } else if scenario_name.is_none() {
            scenario_name = Some(arg.clone());
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    let mut take = |name: &str| flags.remove(name);
    fn number<T: std::str::FromStr>(
        name: &str,
        v: Option<String>,
        default: T,
    ) -> Result<T, String> {
        match v {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("--{name} {text:?} is not a valid number")),
        }
    }
    let scenario = match scenario_name.as_deref() {
        Some("burst") => {
            let intents = number("intents", take("intents"), 2000usize)?;
            if intents == 0 {
                return Err("--intents must be at least 1".into());
            }
            Scenario::Burst { intents }
        }
        Some("paced") => {
            let rate = number("rate", take("rate"), 10.0f64)?;
            let seconds = number("seconds", take("seconds"), 120.0f64)?;
            if !(rate > 0.0 && rate <= 10_000.0 && seconds > 0.0 && seconds <= 86_400.0) {
                return Err("--rate and --seconds must be above zero (and sane)".into());
            }
            if (rate * seconds).round() < 1.0 {
                return Err("--rate × --seconds must make at least one intent".into());
            }
            Scenario::Paced { rate, seconds }
        }
        Some(other) => return Err(format!("unknown scenario {other:?}: burst or paced")),
        None => return Err("name a scenario: burst or paced".into()),
    };
    let workers = match take("workers") {
        None => vec![1, 2],
        Some(text) => text
            .split(',')
            .map(|k| match k.trim().parse::<usize>() {
                Ok(k) if (1..=16).contains(&k) => Ok(k),
                _ => Err(format!(
                    "--workers {text:?}: numbers from 1 to 16, comma-separated"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let duration = |name: &str, v: Option<String>, default: &str| -> Result<String, String> {
        let text = v.unwrap_or_else(|| default.to_string());
        humantime::parse_duration(&text)
            .map(|_| text.clone())
            .map_err(|e| format!("--{name} {text:?} is not a duration like 60s or 1h ({e})"))
    };
    let fill_timeout = duration("fill-timeout", take("fill-timeout"), "60s")?;
    let max_age = duration("max-age", take("max-age"), "1h")?;
    let timeout = match take("timeout") {
        None => None,
        Some(text) => Some(Duration::from_secs(
            text.parse()
                .map_err(|_| format!("--timeout {text:?}: whole seconds"))?,
        )),
    };
    let quantum_bin = take("quantum-bin").map(PathBuf::from);
    if let Some(name) = flags.keys().next() {
        let hint = match (name.as_str(), scenario) {
            ("intents", Scenario::Paced { .. }) => " (--intents is for burst)",
            ("rate" | "seconds", Scenario::Burst { .. }) => " (--rate and --seconds are for paced)",
            _ => "",
        };
        return Err(format!("unknown option --{name}{hint}"));
    }
    Ok(Args {
        scenario,
        workers,
        fill_timeout,
        max_age,
        timeout,
        quantum_bin,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Counts of the simulator's HTTP answers by endpoint and status, from its access log (the
/// `quantum_sim::http` events, one per request, "GET /fapi/v1/order -> 429 (1 ms)"). A second
/// source for 429 and 418 while `GET /sim/v1/requests` does not count them.
mod access_log {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::subscriber::Interest;
    use tracing::{Event, Metadata, Subscriber};

    const TARGET: &str = "quantum_sim::http";

    pub type Counts = BTreeMap<(String, u16), u64>;

    static COUNTS: Mutex<Counts> = Mutex::new(BTreeMap::new());

    #[derive(Debug)]
    struct Counter;

    #[derive(Debug, Default)]
    struct Message(String);

    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }

    /// "GET /fapi/v1/order -> 429 (1 ms)" → ("GET /fapi/v1/order", 429).
    fn parse(line: &str) -> Option<(String, u16)> {
        let (endpoint, rest) = line.split_once(" -> ")?;
        let status = rest.split_whitespace().next()?.parse().ok()?;
        Some((endpoint.to_string(), status))
    }

    impl Subscriber for Counter {
        fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
            if self.enabled(metadata) {
                Interest::always()
            } else {
                Interest::never()
            }
        }

        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.is_event() && metadata.target() == TARGET
        }

        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }

        fn record(&self, _: &Id, _: &Record<'_>) {}

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            let mut message = Message::default();
            event.record(&mut message);
            if let Some(key) = parse(&message.0) {
                *COUNTS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key)
                    .or_default() += 1;
            }
        }

        fn enter(&self, _: &Id) {}

        fn exit(&self, _: &Id) {}
    }

    /// Installs the counter as this process's tracing subscriber (nothing else is logged).
    pub fn install() {
        let _ = tracing::subscriber::set_global_default(Counter);
    }

    pub fn snapshot() -> Counts {
        COUNTS.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `after - before`, entries that did not change left out.
    pub fn delta(before: &Counts, after: &Counts) -> Counts {
        after
            .iter()
            .filter_map(|(k, n)| {
                let d = n - before.get(k).copied().unwrap_or(0);
                (d > 0).then(|| (k.clone(), d))
            })
            .collect()
    }
}

/// What `GET /sim/v1/requests` says. Today a map `"METHOD /path": count`; `http_429`, `http_418`
/// and `banned_until` are read when present (at the top or one level down, as a number or a map
/// of numbers), so a later simulator that adds them is reported without a change here.
#[derive(Debug, Default, Clone)]
struct SimCounts {
    by_endpoint: BTreeMap<String, u64>,
    http_429: Option<u64>,
    http_418: Option<u64>,
    banned_until: Option<Value>,
}

impl SimCounts {
    fn parse(v: &Value) -> SimCounts {
        fn looks_like_endpoint(key: &str) -> bool {
            key.split_once(' ').is_some_and(|(method, path)| {
                !method.is_empty()
                    && method.chars().all(|c| c.is_ascii_uppercase())
                    && path.starts_with('/')
            })
        }
        fn total(v: &Value) -> Option<u64> {
            match v {
                Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
                Value::Object(map) => Some(map.values().filter_map(total).sum()),
                _ => None,
            }
        }
        fn walk(v: &Value, depth: usize, out: &mut SimCounts) {
            let Value::Object(map) = v else { return };
            for (key, value) in map {
                match key.as_str() {
                    "http_429" => out.http_429 = total(value),
                    "http_418" => out.http_418 = total(value),
                    "banned_until" => out.banned_until = Some(value.clone()),
                    _ if looks_like_endpoint(key) => {
                        if let Some(n) = value.as_u64() {
                            *out.by_endpoint.entry(key.clone()).or_default() += n;
                        }
                    }
                    _ if depth < 2 => walk(value, depth + 1, out),
                    _ => {}
                }
            }
        }
        let mut out = SimCounts::default();
        walk(v, 0, &mut out);
        out
    }

    async fn fetch(http: &reqwest::Client, base: &str) -> Result<SimCounts, String> {
        let url = format!("{base}/sim/v1/requests");
        let reply = http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let value: Value = reply
            .json()
            .await
            .map_err(|e| format!("GET {url}: not JSON: {e}"))?;
        Ok(SimCounts::parse(&value))
    }
}

/// One result as the benchmark needs it.
#[derive(Debug, Clone)]
struct Seen {
    status: String,
    error: Option<String>,
    /// `published_at` of the result, else when it was read.
    published_ms: i64,
    /// `order_sent_at` of the result (when its order went out), if it has one.
    sent_ms: Option<i64>,
}

/// One run's figures: a row of the report.
#[derive(Debug)]
struct Row {
    scenario: String,
    workers: usize,
    intents: usize,
    statuses: BTreeMap<String, usize>,
    duplicates: usize,
    complete: bool,
    elapsed: Duration,
    filled: usize,
    requests: u64,
    by_endpoint: BTreeMap<String, u64>,
    sim_429: Option<u64>,
    sim_418: Option<u64>,
    log_429: Option<u64>,
    log_418: Option<u64>,
    cpu_ms_per_intent: Option<f64>,
    peak_rss_mb: Vec<Option<f64>>,
    latency_ms: Vec<i64>,
    /// Orders sent in each clock minute the run covered from start to end (Binance's minute
    /// windows are aligned to the clock), first and last minute excluded: what the run sustained.
    full_minutes: Vec<usize>,
    problems: Vec<String>,
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `840 ms`, `12.3 s`.
fn secs(ms: i64) -> String {
    if ms.abs() < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

fn or_na(v: Option<u64>) -> String {
    v.map_or("n/a".into(), |n| n.to_string())
}

impl Row {
    fn results_cell(&self) -> String {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect();
        if self.duplicates > 0 {
            parts.push(format!("duplicates {}", self.duplicates));
        }
        parts.join(", ")
    }

    fn per_minute(&self) -> f64 {
        self.filled as f64 / self.elapsed.as_secs_f64().max(1e-3) * 60.0
    }

    /// The rate per minute and its share of the order limit; over less than a minute it is a
    /// burst's rate, not a sustained one, and is marked so.
    fn rate_cells(&self) -> (String, String) {
        let mark = if self.elapsed < Duration::from_secs(60) {
            " (< 1 min)"
        } else {
            ""
        };
        (
            format!("{:.0}{mark}", self.per_minute()),
            format!("{:.0} %{mark}", self.per_minute() / ORDER_LIMIT_1M * 100.0),
        )
    }

    fn markdown(&self) -> String {
        let mut latency = self.latency_ms.clone();
        latency.sort_unstable();
        let latency = if latency.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{} / {} / {}",
                secs(pct(&latency, 0.5)),
                secs(pct(&latency, 0.99)),
                secs(latency[latency.len() - 1])
            )
        };
        let rss = self
            .peak_rss_mb
            .iter()
            .map(|r| r.map_or("?".into(), |mb| format!("{mb:.0}")))
            .collect::<Vec<_>>()
            .join(" + ");
        let (rate, share) = self.rate_cells();
        format!(
            "| {} | {} | {} | {} | {}{} | {rate} | {share} | {:.2} | {} · {} | {} · {} | {} | {} MB | {} |",
            self.scenario,
            self.workers,
            self.intents,
            self.results_cell(),
            if self.complete { "" } else { "gave up after " },
            secs(self.elapsed.as_millis() as i64),
            self.requests as f64 / self.intents as f64,
            or_na(self.sim_429),
            or_na(self.log_429),
            or_na(self.sim_418),
            or_na(self.log_418),
            self.cpu_ms_per_intent
                .map_or("?".into(), |ms| format!("{ms:.2} ms")),
            rss,
            latency,
        )
    }
}

const TABLE_HEADER: &str = "\
| scenario | workers | intents | results | elapsed (first publish → last result) | filled/min | of 1,200/min | exchange requests per intent | 429 (sim · log) | 418 (sim · log) | worker CPU per intent | peak RSS per worker | intent → result p50 / p99 / max |
|---|---|---|---|---|---|---|---|---|---|---|---|---|";

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "exec_limits: {e}\nusage: exec_limits burst [--intents N] [--workers K] | paced [--rate R] [--seconds S] [--workers K]  (--help for all options)"
            );
            std::process::exit(2);
        }
    };
    let bin = match workers::quantum_bin(args.quantum_bin.as_deref()) {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("exec_limits: {e}");
            std::process::exit(2);
        }
    };
    if let Some(newer) = workers::newer_source_than(&bin) {
        eprintln!(
            "WARNING: {} is older than {}: the workers run code that is no longer in the tree; rebuild with `cargo build --release -p quantum`",
            bin.display(),
            newer.display()
        );
    }
    access_log::install();
    let (machine_cpus, clk_tck) = (
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        workers::clock_ticks(),
    );
    println!(
        "exec_limits: {} on {machine_cpus} CPUs; workers {:?}; binary {}",
        args.scenario.label(),
        args.workers,
        bin.display()
    );
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for &k in &args.workers {
        match run(&args, &bin, k, clk_tck).await {
            Ok(row) => rows.push(row),
            Err(e) => {
                eprintln!("exec_limits: the run with {k} workers could not be measured: {e}");
                failed.push(format!("{k} workers: not measured ({e})"));
                break;
            }
        }
    }
    if !rows.is_empty() {
        println!("\n## exec_limits: {}\n", args.scenario.label());
        println!("{TABLE_HEADER}");
        for row in &rows {
            println!("{}", row.markdown());
        }
    }
    failed.splice(
        0..0,
        rows.iter().flat_map(|r| {
            r.problems
                .iter()
                .map(move |p| format!("{} workers: {p}", r.workers))
        }),
    );
    if failed.is_empty() {
        println!(
            "\ncheck passed: every intent filled once, no 429 or 418, every worker stopped cleanly"
        );
    } else {
        println!("\nCHECK FAILED:");
        for p in &failed {
            println!("  - {p}");
        }
        std::process::exit(1);
    }
}

/// The intent documents: alternately BUY and SELL per symbol, ids unique to this run.
fn intents(n: usize, symbols: &[(&str, &str)], run_id: &str) -> Vec<(String, Value)> {
    (0..n)
        .map(|i| {
            let (symbol, qty) = symbols[i % symbols.len()];
            let side = if (i / symbols.len()).is_multiple_of(2) {
                "BUY"
            } else {
                "SELL"
            };
            let id = format!("xl-{run_id}-{i}");
            let quantity: Value = serde_json::from_str(qty).expect("quantity literal is a number");
            let doc = serde_json::json!({
                "intent_id": id, "symbol": symbol, "action": side, "quantity": quantity,
                "source": "exec_limits",
            });
            (id, doc)
        })
        .collect()
}

async fn run(args: &Args, bin: &Path, k: usize, clk_tck: u64) -> Result<Row, String> {
    let scenario = args.scenario;
    let n = scenario.intents();
    println!(
        "\n== {} with {k} worker{}",
        scenario.label(),
        if k == 1 { "" } else { "s" }
    );
    let sim = simulator::spawn(SimConfig {
        fill_delay: Duration::ZERO,
        enforce_rate_limits: true,
        initial_balance: Decimal::from(1_000_000),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("simulator: {e}"))?;
    let result = run_on(args, bin, k, clk_tck, n, &sim).await;
    sim.shutdown().await;
    result
}

async fn run_on(
    args: &Args,
    bin: &Path,
    k: usize,
    clk_tck: u64,
    n: usize,
    sim: &simulator::SimHandle,
) -> Result<Row, String> {
    let scenario = args.scenario;
    let redis = testkit::RedisServer::start();
    let dir = std::env::temp_dir().join(format!(
        "quantum-exec-limits-{}-{}-w{k}",
        std::process::id(),
        match scenario {
            Scenario::Burst { .. } => "burst",
            Scenario::Paced { .. } => "paced",
        }
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("quantum.toml");
    std::fs::write(
        &config,
        format!(
            "# written by the exec_limits benchmark\n[execution]\nmax_age = \"{}\"\n",
            args.max_age
        ),
    )
    .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let listed = sim.symbols();
    let symbols: Vec<(&str, &str)> = SIZES
        .iter()
        .copied()
        .filter(|(s, _)| listed.iter().any(|l| l == s))
        .collect();
    if symbols.is_empty() {
        return Err(format!(
            "the simulator lists none of {:?} (it lists {listed:?})",
            SIZES.iter().map(|s| s.0).collect::<Vec<_>>()
        ));
    }
    let exec_args = ExecutionArgs {
        rest_url: sim.base_url(),
        ws_url: sim.ws_url(),
        redis_url: redis.url(),
        api_key: simulator::DEFAULT_API_KEY.into(),
        api_secret: simulator::DEFAULT_API_SECRET.into(),
        config,
        fill_timeout: args.fill_timeout.clone(),
    };
    let fill_timeout = humantime::parse_duration(&args.fill_timeout).expect("checked when parsed");

    // The workers, each its own consumer in the service's group.
    let mut pool = Vec::new();
    for i in 1..=k {
        let consumer = format!("exec-limits-{i}");
        let log = dir.join(format!("{consumer}.log"));
        pool.push(Worker::spawn(bin, &exec_args, &consumer, log)?);
    }
    for w in &mut pool {
        if !w.wait_for_log(READY_MARKER, Duration::from_secs(60)).await {
            if let Some(status) = w.exited() {
                return Err(format!(
                    "worker {} ended before reading intents ({status}); its log {}:\n{}",
                    w.consumer,
                    w.log.display(),
                    w.log_tail(20)
                ));
            }
            eprintln!(
                "WARNING: worker {} did not log {READY_MARKER:?} within 60 s; going on (its log: {})",
                w.consumer,
                w.log.display()
            );
        }
    }
    println!(
        "simulator {} (rate limits enforced, fill delay 0), redis {}, {k} × `quantum execution` (pids {}), logs in {}",
        sim.base_url(),
        redis.url(),
        pool.iter().map(Worker::pid).collect::<Vec<_>>().join(", "),
        dir.display()
    );

    let bus_config = bus::Config {
        url: redis.url(),
        ..bus::Config::default()
    };
    let publisher = Bus::connect(&bus_config)
        .await
        .map_err(|e| format!("redis: {e}"))?;
    let reader = Bus::connect(&bus_config)
        .await
        .map_err(|e| format!("redis: {e}"))?;
    reader
        .ensure_group(keys::TRADE_EXECUTION_RESULT, RESULTS_GROUP)
        .await
        .map_err(|e| format!("redis: {e}"))?;

    let http = reqwest::Client::new();
    let run_id = now_ms().to_string();
    let docs = intents(n, &symbols, &run_id);
    let ids: HashMap<String, usize> = docs
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.clone(), i))
        .collect();

    // Before: what the exchange has been asked, what it answered, what the workers have used.
    let sim_before = SimCounts::fetch(&http, &sim.base_url()).await?;
    let log_before = access_log::snapshot();
    let cpu_before: Vec<Option<u64>> = pool.iter().map(|w| workers::cpu_ticks(&w.pid())).collect();
    let self_cpu_before = workers::cpu_ticks("self");

    let started = Instant::now();
    let publish_task = {
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut published_ms = vec![0i64; docs.len()];
            let mut max_lag = Duration::ZERO;
            let t0 = tokio::time::Instant::now();
            for (i, (_, mut doc)) in docs.into_iter().enumerate() {
                if let Scenario::Paced { rate, .. } = scenario {
                    let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    max_lag =
                        max_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
                }
                let at = now_ms();
                doc["created_at"] = at.into();
                publisher
                    .publish(keys::TRADE_INTENT, &doc.to_string())
                    .await
                    .map_err(|e| format!("publishing intent {i}: {e}"))?;
                published_ms[i] = at;
            }
            Ok::<_, String>((published_ms, t0.elapsed(), max_lag))
        })
    };

    let deadline_after = args
        .timeout
        .unwrap_or_else(|| scenario.expected() * 2 + fill_timeout + Duration::from_secs(90));
    let deadline = started + deadline_after;
    let mut seen: HashMap<String, Vec<Seen>> = HashMap::new();
    let mut foreign = 0usize;
    let mut last_result = started;
    let mut next_progress = started + Duration::from_secs(10);
    let mut gave_up = None;
    while seen.len() < n {
        if Instant::now() >= deadline {
            gave_up = Some(format!(
                "{} of {n} intents have no result after {deadline_after:?} (--timeout)",
                n - seen.len()
            ));
            break;
        }
        if pool.iter_mut().all(|w| w.exited().is_some()) {
            gave_up = Some(format!(
                "every worker has ended; {} of {n} intents have no result",
                n - seen.len()
            ));
            break;
        }
        let entries = match reader
            .read(
                keys::TRADE_EXECUTION_RESULT,
                RESULTS_GROUP,
                "bench",
                500,
                Duration::from_millis(200),
            )
            .await
        {
            Ok(entries) => entries,
            Err(e) => {
                eprintln!("reading results: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let read_at = now_ms();
        for entry in entries {
            let doc: Option<Value> = entry
                .payload
                .as_ref()
                .ok()
                .and_then(|p| serde_json::from_str(p).ok());
            let _ = reader
                .ack(keys::TRADE_EXECUTION_RESULT, RESULTS_GROUP, &entry.id)
                .await;
            let Some(doc) = doc else {
                foreign += 1;
                continue;
            };
            let id = doc["intent_id"].as_str().unwrap_or_default().to_string();
            if !ids.contains_key(&id) {
                foreign += 1;
                continue;
            }
            seen.entry(id).or_default().push(Seen {
                status: doc["status"].as_str().unwrap_or("(no status)").to_string(),
                error: doc["error"].as_str().map(str::to_string),
                published_ms: doc["published_at"].as_i64().unwrap_or(read_at),
                sent_ms: doc["order_sent_at"].as_i64(),
            });
            last_result = Instant::now();
        }
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(10);
            let mut by: BTreeMap<&str, usize> = BTreeMap::new();
            for s in seen.values() {
                *by.entry(s[0].status.as_str()).or_default() += 1;
            }
            let log_now = access_log::delta(&log_before, &access_log::snapshot());
            let limited: u64 = log_now
                .iter()
                .filter(|((_, status), _)| *status == 429 || *status == 418)
                .map(|(_, n)| n)
                .sum();
            eprintln!(
                "[{:>4.0} s] results {}/{n} {by:?}; 429/418 answered so far: {limited}",
                started.elapsed().as_secs_f64(),
                seen.len()
            );
        }
    }
    let elapsed = if gave_up.is_some() {
        started.elapsed()
    } else {
        last_result.duration_since(started)
    };

    // After: the same readings, before the workers stop (their /proc entries go with them).
    let sim_after = SimCounts::fetch(&http, &sim.base_url()).await?;
    let log_delta = access_log::delta(&log_before, &access_log::snapshot());
    let cpu_after: Vec<Option<u64>> = pool.iter().map(|w| workers::cpu_ticks(&w.pid())).collect();
    let self_cpu_after = workers::cpu_ticks("self");
    let peak_rss_mb: Vec<Option<f64>> = pool
        .iter()
        .map(|w| workers::peak_rss_mb(&w.pid()))
        .collect();
    let mut worker_metrics = Vec::new();
    for w in &pool {
        worker_metrics.push(scrape(&http, &w.metrics_addr).await);
    }

    let (published_ms, publish_time, max_lag) = match publish_task.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(format!("publisher task: {e}")),
    };

    let mut problems = Vec::new();
    if let Some(why) = &gave_up {
        problems.push(why.clone());
    }
    // Stop the workers: SIGTERM, then SIGKILL after the service's own grace period.
    let grace = fill_timeout + Duration::from_secs(20);
    for w in &mut pool {
        let (status, killed) = w.stop(grace).await;
        let ended = match (status, killed) {
            (_, true) => {
                problems.push(format!(
                    "worker {} did not stop within {grace:?} of SIGTERM and was killed",
                    w.consumer
                ));
                "killed".to_string()
            }
            (Some(s), false) if s.success() => "exit 0".to_string(),
            (Some(s), false) => {
                problems.push(format!(
                    "worker {} ended with {s} (log {})",
                    w.consumer,
                    w.log.display()
                ));
                s.to_string()
            }
            (None, false) => "unknown".to_string(),
        };
        println!("worker {} (pid {}) stopped: {ended}", w.consumer, w.pid());
    }
    drop(pool);
    drop(redis);

    // Results.
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut duplicates = 0;
    let mut latency_ms = Vec::new();
    let mut examples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
    for results in seen.values() {
        if let Some(sent) = results[0].sent_ms {
            *per_minute.entry(sent.div_euclid(60_000)).or_default() += 1;
        }
    }
    let full_minutes: Vec<usize> = match (per_minute.keys().next(), per_minute.keys().last()) {
        (Some(&first), Some(&last)) if last > first + 1 => ((first + 1)..last)
            .map(|m| per_minute.get(&m).copied().unwrap_or(0))
            .collect(),
        _ => Vec::new(),
    };
    for (id, results) in &seen {
        let first = &results[0];
        *statuses.entry(first.status.clone()).or_default() += 1;
        duplicates += results.len() - 1;
        latency_ms.push(first.published_ms - published_ms[ids[id]]);
        if first.status != "filled" {
            let list = examples.entry(first.status.clone()).or_default();
            if list.len() < 3 {
                list.push(format!(
                    "{id}: {}",
                    first.error.as_deref().unwrap_or("(no error text)")
                ));
            }
        }
    }
    let missing = n - seen.len();
    if missing > 0 {
        statuses.insert("no result".into(), missing);
    }
    let filled = statuses.get("filled").copied().unwrap_or(0);
    if filled < n {
        problems.push(format!("{} of {n} intents not filled", n - filled));
    }
    if duplicates > 0 {
        problems.push(format!(
            "{duplicates} extra results for intents already answered"
        ));
    }

    // Exchange requests in the window.
    let mut by_endpoint = BTreeMap::new();
    for (endpoint, after) in &sim_after.by_endpoint {
        let d = after - sim_before.by_endpoint.get(endpoint).copied().unwrap_or(0);
        if d > 0 {
            by_endpoint.insert(endpoint.clone(), d);
        }
    }
    let requests: u64 = by_endpoint.values().sum();
    let sim_429 = sim_after
        .http_429
        .map(|a| a.saturating_sub(sim_before.http_429.unwrap_or(0)));
    let sim_418 = sim_after
        .http_418
        .map(|a| a.saturating_sub(sim_before.http_418.unwrap_or(0)));
    // The access log is a valid source only if it saw the requests at all.
    let logged: u64 = log_delta.values().sum();
    let log_status = |code: u16| {
        (logged > 0).then(|| {
            log_delta
                .iter()
                .filter(|((_, s), _)| *s == code)
                .map(|(_, n)| n)
                .sum::<u64>()
        })
    };
    let (log_429, log_418) = (log_status(429), log_status(418));
    for (source, code, count) in [
        ("simulator counter", 429, sim_429),
        ("simulator access log", 429, log_429),
        ("simulator counter", 418, sim_418),
        ("simulator access log", 418, log_418),
    ] {
        if let Some(c) = count.filter(|&c| c > 0) {
            problems.push(format!("{c} HTTP {code} answers ({source})"));
        }
    }

    let cpu_ticks: Option<u64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .sum();
    let cpu_ms_per_intent = cpu_ticks.map(|t| t as f64 * 1000.0 / clk_tck as f64 / n as f64);

    let row = Row {
        scenario: scenario.label(),
        workers: k,
        intents: n,
        statuses,
        duplicates,
        complete: gave_up.is_none(),
        elapsed,
        filled,
        requests,
        by_endpoint,
        sim_429,
        sim_418,
        log_429,
        log_418,
        cpu_ms_per_intent,
        peak_rss_mb,
        latency_ms,
        full_minutes,
        problems,
    };

    // The run's details.
    let mut out = String::new();
    match scenario {
        Scenario::Burst { .. } => {
            let _ = writeln!(out, "published {n} intents in {publish_time:.2?}");
        }
        Scenario::Paced { rate, .. } => {
            let _ = writeln!(
                out,
                "published {n} intents at {rate}/s in {publish_time:.2?} (latest publish {max_lag:.2?} behind schedule)"
            );
        }
    }
    let _ = writeln!(out, "results: {}", row.results_cell());
    if foreign > 0 {
        let _ = writeln!(
            out,
            "  ({foreign} entries on the results stream were not for this run's intents)"
        );
    }
    for (status, list) in &examples {
        for e in list {
            let _ = writeln!(out, "  e.g. {status}: {e}");
        }
    }
    let _ = writeln!(
        out,
        "intent published -> result published: {}",
        percentiles::percentiles(
            row.latency_ms
                .iter()
                .map(|&ms| Duration::from_millis(ms.max(0) as u64))
                .collect()
        )
    );
    if row.full_minutes.is_empty() {
        let _ = writeln!(
            out,
            "orders per full clock minute: none (the run did not cover a whole clock minute)"
        );
    } else {
        let min = row.full_minutes.iter().min().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "orders per full clock minute: {:?}; the lowest is {:.1} % of the 1,200/min order limit",
            row.full_minutes,
            min as f64 / ORDER_LIMIT_1M * 100.0
        );
    }
    let (rate, share) = row.rate_cells();
    let _ = writeln!(
        out,
        "elapsed {}: {} filled = {rate} intents/min, {share} of the 1,200/min order limit",
        secs(row.elapsed.as_millis() as i64),
        row.filled,
    );
    if row.per_minute() > ORDER_LIMIT_1M {
        let _ = writeln!(
            out,
            "  (above 1,200/min: the limit's windows are fixed minutes, and this run spans a boundary)"
        );
    }
    let _ = writeln!(
        out,
        "exchange requests (GET /sim/v1/requests, after - before): {requests} = {:.2} per intent",
        requests as f64 / n as f64
    );
    let _ = writeln!(out, "| endpoint | requests | per intent |\n|---|---|---|");
    for (endpoint, count) in &row.by_endpoint {
        let _ = writeln!(
            out,
            "| `{endpoint}` | {count} | {:.2} |",
            *count as f64 / n as f64
        );
    }
    let not_ok: Vec<String> = log_delta
        .iter()
        .filter(|((_, s), _)| *s >= 400)
        .map(|((e, s), c)| format!("{e} -> {s}: {c}"))
        .collect();
    let _ = writeln!(
        out,
        "HTTP 429: {} (simulator counter) / {} (simulator access log); HTTP 418: {} / {}; banned_until: {}",
        or_na(row.sim_429),
        or_na(row.log_429),
        or_na(row.sim_418),
        or_na(row.log_418),
        match (&sim_after.banned_until, sim_after.http_429) {
            (Some(v), _) if !v.is_null() => v.to_string(),
            // The simulator counts 429s but names no ban: none is in force.
            (_, Some(_)) => "none".to_string(),
            _ => "n/a".to_string(),
        }
    );
    if !not_ok.is_empty() {
        let _ = writeln!(
            out,
            "error answers by endpoint (access log): {}",
            not_ok.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "worker CPU (utime+stime) in the window: {} ({} per intent); simulator + benchmark process: {}",
        cpu_ticks.map_or("?".into(), |t| format!("{:.2} s", t as f64 / clk_tck as f64)),
        row.cpu_ms_per_intent
            .map_or("?".into(), |ms| format!("{ms:.2} ms")),
        match (self_cpu_before, self_cpu_after) {
            (Some(b), Some(a)) => format!("{:.2} s", (a - b) as f64 / clk_tck as f64),
            _ => "?".into(),
        }
    );
    for (i, m) in worker_metrics.iter().enumerate() {
        let _ = writeln!(
            out,
            "worker exec-limits-{}: peak RSS {}; its /metrics: {m}",
            i + 1,
            row.peak_rss_mb[i].map_or("?".into(), |mb| format!("{mb:.1} MB"))
        );
    }
    print!("{out}");
    println!("{TABLE_HEADER}\n{}", row.markdown());
    Ok(row)
}

/// A worker's own count of what it did since it started, from its `/metrics`: intents received
/// and orders placed (how the work was shared between the workers).
async fn scrape(http: &reqwest::Client, addr: &str) -> String {
    let text = match http
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(reply) => reply.text().await.unwrap_or_default(),
        Err(e) => return format!("unreachable ({e})"),
    };
    let sum = |prefix: &str| -> Option<f64> {
        let values: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let show = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v:.0}"));
    format!(
        "intents received {}, orders placed {}",
        show(sum("quantum_intents_received_total")),
        show(sum("quantum_orders_placed_total")),
    )
}
