//! The execution-side subcommands: `quantum execution` (the service) and the incident's manual
//! checks as commands (`intent`, `orders`, `order`, `results`, `positions`, `doctor`, ...).
//!
//! Each command takes only the flags it uses: [`BusArgs`] (`--config`, `--redis-url`) for the
//! commands that read or write the bus, [`VenueArgs`] (`--config` and the exchange's) for those
//! that only ask the exchange, [`BusVenueArgs`] for both, and [`ServiceArgs`] for the services,
//! which add their own knobs. All are layered over the `--config` file by
//! [`service::Settings::build`]. Results go to stdout through `outln!`; progress and notes to
//! stderr (see [`crate::output`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bus::{keys, Bus};
use model::{
    Action, ClientOrderId, ExitLevel, IntentId, PositionSide, ResultStatus, Symbol, TradeIntent,
    TradingState,
};
use rust_decimal::Decimal;
use serde_json::json;
use service::{FileConfig, Overrides, Settings};

use crate::output;

/// `--config`, on every command that reads the settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// TOML config file (see config/quantum.example.toml for every key).
    #[arg(long, env = "QUANTUM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `--redis-url`, on the commands that talk to the bus.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArg {
    /// Redis URL, with its scheme [default: redis://127.0.0.1:6379].
    #[arg(long, env = "QUANTUM_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
}

/// Where the exchange is, on the commands that talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ExchangeArgs {
    /// testnet, mainnet or custom [default: testnet; custom when --rest-url/--ws-url are given].
    #[arg(long, env = "QUANTUM_VENUE")]
    pub venue: Option<String>,
    /// REST base URL, with its scheme (e.g. http://127.0.0.1:8090 for `quantum sim`).
    #[arg(long, env = "QUANTUM_REST_URL", value_name = "URL")]
    pub rest_url: Option<String>,
    /// WebSocket base URL, with its scheme (e.g. ws://127.0.0.1:8090 for `quantum sim`).
    #[arg(long, env = "QUANTUM_WS_URL", value_name = "URL")]
    pub ws_url: Option<String>,
    /// Allow trading on mainnet (real money).
    #[arg(long, env = "QUANTUM_ALLOW_MAINNET")]
    pub allow_mainnet: bool,
}

impl ExchangeArgs {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.venue = self.venue.clone();
        overrides.rest_url = self.rest_url.clone();
        overrides.ws_url = self.ws_url.clone();
        overrides.allow_mainnet = self.allow_mainnet;
    }
}

/// The settings from the config file and the given overrides (secrets from the environment).
fn load_settings(config: &ConfigArg, overrides: Overrides) -> anyhow::Result<Settings> {
    let file = match &config.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    Ok(Settings::build(file, &overrides, |k| {
        std::env::var(k).ok()
    })?)
}

/// The flags of a command that uses the bus only.
#[derive(Debug, Clone, clap::Args)]
pub struct BusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub redis: RedisArg,
}

impl BusArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let overrides = Overrides {
            redis_url: self.redis.redis_url.clone(),
            ..Overrides::default()
        };
        load_settings(&self.config, overrides)
    }
}

/// The flags of a command that asks the exchange only.
#[derive(Debug, Clone, clap::Args)]
pub struct VenueArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub exchange: ExchangeArgs,
}

impl VenueArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut overrides = Overrides::default();
        self.exchange.apply(&mut overrides);
        load_settings(&self.config, overrides)
    }
}

/// The flags of a command that uses both the bus and the exchange.
#[derive(Debug, Clone, clap::Args)]
pub struct BusVenueArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(flatten)]
    pub redis: RedisArg,
    #[command(flatten)]
    pub exchange: ExchangeArgs,
}

impl BusVenueArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut overrides = Overrides {
            redis_url: self.redis.redis_url.clone(),
            ..Overrides::default()
        };
        self.exchange.apply(&mut overrides);
        load_settings(&self.config, overrides)
    }
}

/// The flags of the services (`execution`, `exit-monitor`, `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub connection: BusVenueArgs,
    /// How long to wait for a fill before cancelling, e.g. 30s or 500ms [default: 30s].
    #[arg(long, env = "QUANTUM_FILL_TIMEOUT", value_name = "DURATION")]
    pub fill_timeout: Option<String>,
    /// This instance's consumer name in the group [default: $HOSTNAME].
    #[arg(long, env = "QUANTUM_CONSUMER_NAME", value_name = "NAME")]
    pub consumer_name: Option<String>,
    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "QUANTUM_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl ServiceArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let connection = &self.connection;
        let mut overrides = Overrides {
            redis_url: connection.redis.redis_url.clone(),
            fill_timeout: self.fill_timeout.clone(),
            consumer_name: self.consumer_name.clone(),
            ..Overrides::default()
        };
        connection.exchange.apply(&mut overrides);
        load_settings(&connection.config, overrides)
    }

    /// Starts the metrics endpoint when `--metrics-addr` is given; it stops with the process.
    pub async fn serve_metrics(&self) -> anyhow::Result<()> {
        serve_metrics(self.metrics_addr).await
    }
}

/// Starts the metrics endpoint on `addr`, if given; it stops with the process.
pub async fn serve_metrics(addr: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    if let Some(addr) = addr {
        let bound = service::metrics::serve(addr, tokio_util::sync::CancellationToken::new())
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        tracing::info!("metrics on http://{bound}/metrics, health on http://{bound}/healthz");
    }
    Ok(())
}

pub fn rest_client(settings: &Settings) -> anyhow::Result<binance::RestClient> {
    let ex = &settings.exchange;
    let signs = !ex.api_secret.is_empty()
        || ex.ed25519_private_key_file.is_some()
        || ex.rsa_private_key_file.is_some();
    if ex.api_key.is_empty() || !signs {
        bail!(
            "BINANCE_API_KEY and BINANCE_SECRET_KEY (or exchange.ed25519_private_key_file or \
             exchange.rsa_private_key_file) must be set (for `quantum sim`: {} / {})",
            simulator::DEFAULT_API_KEY,
            simulator::DEFAULT_API_SECRET
        );
    }
    Ok(binance::RestClient::new(
        settings
            .binance_config()
            .context("exchange configuration")?,
    )?)
}

/// Connects to the settings' Redis, with what to do next when that fails.
pub async fn connect_bus(settings: &Settings) -> anyhow::Result<Bus> {
    let config = settings.bus_config();
    let url = config.redacted_url();
    Bus::connect(&config).await.map_err(|e| {
        let hint = redis_hint(&e);
        anyhow::Error::new(e).context(format!("cannot reach Redis at {url}{hint}"))
    })
}

/// What a person can do about a failed connection to Redis, as a suffix of the message.
fn redis_hint(error: &bus::Error) -> &'static str {
    let detail = error.to_string().to_ascii_lowercase();
    if detail.contains("refused") {
        " (connection refused: nothing listens there; start redis-server, or point --redis-url \
         or QUANTUM_REDIS_URL at the Redis the services use)"
    } else if detail.contains("no answer within") || detail.contains("timed out") {
        " (no answer: the host is unreachable, a firewall drops the connection, or Redis is \
         stuck; check the address and the network)"
    } else if detail.contains("lookup") || detail.contains("resolve") || detail.contains("name") {
        " (the host name does not resolve; check --redis-url)"
    } else {
        ""
    }
}
/// `quantum execution`.
pub async fn execution(
    args: ServiceArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = args.settings()?;
    tracing::info!(
        "execution service: venue {:?}, REST {}, WS {}, Redis {}, fill timeout {:?}",
        settings.exchange.venue,
        settings.exchange.rest_url,
        settings.exchange.ws_url,
        settings.redis_url,
        settings.execution.fill_timeout
    );
    // Fail early, with the hint about keys, before connecting anything.
    rest_client(&settings)?;
    args.serve_metrics().await?;
    starting(&[service::health::EXECUTION]);
    let running = service::start(settings)
        .await
        .context("cannot start the execution service")?;
    crate::supervise::one(running, shutdown).await?;
    tracing::info!("execution service stopped");
    Ok(())
}

/// Registers the services about to start, so that `/healthz` says they are starting (503) while
/// they connect, rather than `ok` about nothing. Each becomes running once started.
fn starting(tasks: &[&str]) {
    for task in tasks {
        service::health::global().register(task, service::health::TaskState::Starting);
    }
}

/// `quantum exit-monitor`.
pub async fn exit_monitor(
    args: ServiceArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = args.settings()?;
    rest_client(&settings)?;
    args.serve_metrics().await?;
    starting(&[service::health::EXIT_MONITOR]);
    let (running, _counters) = service::exit_monitor::start(settings)
        .await
        .context("cannot start the exit monitor")?;
    crate::supervise::one(running, shutdown).await
}

/// `quantum run` arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub connection: ServiceArgs,
    /// Use an in-process bus instead of Redis (nothing survives a restart; intents can only come
    /// from inside the process, so this is for demos and trying things out).
    #[arg(long)]
    pub in_process_bus: bool,
    #[command(flatten)]
    pub database: crate::journal_cmd::DatabaseArgs,
    /// Do not run the journal in this process (when `quantum journal` runs elsewhere).
    #[arg(long)]
    pub no_journal: bool,
}

/// `quantum run`: the execution service, the exit monitor and the journal in one process, until the shutdown
/// signal or until one of them ends by itself (then the other is stopped and this is an error,
/// so the process exits non-zero and can be restarted: see [`crate::supervise::both`]).
pub async fn run_both(
    args: RunArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    rest_client(&settings)?;
    args.connection.serve_metrics().await?;
    starting(&[service::health::EXECUTION, service::health::EXIT_MONITOR]);
    let bus = if args.in_process_bus {
        tracing::warn!(
            "in-process bus: intents, results and progress records live in this process only"
        );
        Bus::memory(settings.redis_max_len)
    } else {
        connect_bus(&settings).await?
    };
    // The journal first: it opens (and migrates) its database before any order is sent, so a
    // journal that cannot start stops `quantum run` before it trades.
    let journal = if args.no_journal {
        None
    } else {
        let url = args.database.url(&settings);
        Some(crate::journal_cmd::start(&bus, &url, journal::DEFAULT_GROUP).await?)
    };
    let execution = service::start_with_bus(settings.clone(), bus.clone())
        .await
        .context("cannot start the execution service")?;
    let (monitor, _counters) = service::exit_monitor::start_with_bus(settings, bus)
        .await
        .context("cannot start the exit monitor")?;
    match journal {
        Some(journal) => {
            crate::supervise::with_journal(journal, shutdown, |stop| {
                crate::supervise::both(execution, monitor, stop)
            })
            .await
        }
        None => crate::supervise::both(execution, monitor, shutdown).await,
    }
}

/// `quantum intent`'s exit statuses, for `--help` and the README.
pub const INTENT_EXIT_CODES: &str = "\
Exit status:
  0  filled: the whole quantity, at the confirmed price in the result
  1  error: the intent was refused before it was published (its reason on stderr), or Redis failed
  2  usage error (a flag missing or malformed)
  3  not filled: rejected, canceled, expired, timeout (nothing filled) or failed (see its error)
  4  partially filled: part of the quantity filled, the rest was canceled or expired
  5  no result within --wait: the intent may still be executed; look with `quantum results`

The result goes to stdout (pretty JSON, or one line with --json); progress goes to stderr.";

/// Exit status: the intent filled.
const INTENT_FILLED: u8 = 0;
/// Exit status: a result came and nothing filled.
const INTENT_NOT_FILLED: u8 = 3;
/// Exit status: part of it filled.
const INTENT_PARTIALLY_FILLED: u8 = 4;
/// Exit status: no result within `--wait`.
const INTENT_NO_RESULT: u8 = 5;

/// `quantum intent`: publishes one intent and waits for its result.
#[derive(Debug, clap::Args)]
pub struct IntentArgs {
    #[command(flatten)]
    pub connection: BusArgs,
    /// Symbol to trade, e.g. BTCUSDT.
    #[arg(long, value_parser = |s: &str| Symbol::new(s))]
    pub symbol: Symbol,
    /// BUY, SELL or CLOSE.
    #[arg(long, value_parser = parse_action)]
    pub action: Action,
    /// Size in USDT.
    #[arg(long, value_name = "USDT")]
    pub usd: Option<Decimal>,
    /// Size in contracts (instead of --usd).
    #[arg(long)]
    pub quantity: Option<Decimal>,
    /// Leverage to set on the symbol before the order (at most risk.max_leverage).
    #[arg(long)]
    pub leverage: Option<u32>,
    /// Take-profit, in percent of the entry price (e.g. 2 for 2%).
    #[arg(long, value_name = "PCT")]
    pub tp_pct: Option<Decimal>,
    /// Stop-loss, in percent of the entry price.
    #[arg(long, value_name = "PCT")]
    pub sl_pct: Option<Decimal>,
    /// Trailing stop, in percent from the best price since the entry.
    #[arg(long, value_name = "PCT")]
    pub trail_pct: Option<Decimal>,
    /// Hedge-mode accounts only: the side to work on, LONG or SHORT (a BUY opens LONG and a SELL
    /// SHORT, so entries may leave it out; a CLOSE must name it).
    #[arg(long, value_name = "SIDE", value_parser = parse_position_side)]
    pub position_side: Option<PositionSide>,
    /// Intent id [default: cli-<ms>]; the order's client order id is q-<id>.
    #[arg(long, value_parser = |s: &str| IntentId::new(s))]
    pub id: Option<IntentId>,
    /// How long to wait for the result.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub wait: humantime::Duration,
    /// Print the result as one line of JSON (exactly as published on the result stream).
    #[arg(long)]
    pub json: bool,
}

/// `quantum intent`; returns the exit status (see [`INTENT_EXIT_CODES`]).
pub async fn intent(args: IntentArgs) -> anyhow::Result<u8> {
    let settings = args.connection.settings()?;
    let now = service::clock::now_ms();
    let intent_id = match args.id {
        Some(id) => id,
        None => IntentId::new(&format!("cli-{now}"))?,
    };
    // `build` applies the same check as the service, so a mistake is caught here with its reason.
    let intent = TradeIntent::builder(intent_id, args.symbol, args.action)
        .position_size_usd(args.usd)
        .quantity(args.quantity)
        .leverage(args.leverage)
        .take_profit(args.tp_pct.map(ExitLevel::Pct))
        .stop_loss(args.sl_pct.map(ExitLevel::Pct))
        .trailing_pct(args.trail_pct)
        .position_side(args.position_side)
        .source("quantum-cli")
        .created_at(now)
        .build()
        .context("invalid intent")?;
    let bus = connect_bus(&settings).await?;
    let id = bus
        .publish(keys::TRADE_INTENT, &intent.to_json().to_string())
        .await?;
    eprintln!(
        "published intent {} as {id}; waiting for its result (client order id {})",
        intent.intent_id,
        ClientOrderId::for_intent(&intent.intent_id)
    );
    let deadline = tokio::time::Instant::now() + Duration::from(args.wait);
    while tokio::time::Instant::now() < deadline {
        for entry in bus.latest(keys::TRADE_EXECUTION_RESULT, 200).await? {
            let Ok(payload) = entry.payload else { continue };
            let Ok(result) = serde_json::from_str::<serde_json::Value>(&payload) else {
                continue;
            };
            if result["intent_id"] == intent.intent_id.as_str() {
                if args.json {
                    output::json(&result)?;
                } else {
                    outln!("{}", serde_json::to_string_pretty(&result)?);
                }
                let status = result["status"].as_str().unwrap_or_default();
                return Ok(match ResultStatus::parse(status) {
                    Some(ResultStatus::Filled) => INTENT_FILLED,
                    Some(ResultStatus::PartiallyFilled) => INTENT_PARTIALLY_FILLED,
                    _ => {
                        eprintln!(
                            "intent {} was not filled: {status}{}",
                            intent.intent_id,
                            result["error"]
                                .as_str()
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default()
                        );
                        INTENT_NOT_FILLED
                    }
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "no result for intent {} within {}; it may still be executed: is `quantum execution` \
         running against this Redis? (`quantum results`, `quantum doctor`)",
        intent.intent_id, args.wait
    );
    Ok(INTENT_NO_RESULT)
}

/// `--action`, read as the service reads an intent's action (case-insensitively).
fn parse_position_side(text: &str) -> Result<PositionSide, String> {
    match PositionSide::parse(text) {
        Some(side @ (PositionSide::Long | PositionSide::Short)) => Ok(side),
        _ => Err(format!("{text:?} is not LONG or SHORT")),
    }
}

fn parse_action(text: &str) -> Result<Action, String> {
    Action::parse(text).ok_or_else(|| format!("{text:?} is not BUY, SELL or CLOSE"))
}

/// `quantum results` arguments.
#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    #[command(flatten)]
    pub connection: BusArgs,
    /// How many of the latest results to show.
    #[arg(long, default_value_t = 5)]
    pub count: usize,
    /// One JSON array on stdout: `{"id", "time_ms", "result"}` per entry (`"unreadable"` instead
    /// of `"result"` for an entry that is not a JSON document).
    #[arg(long)]
    pub json: bool,
}

/// The time in a stream entry id (`<ms>-<seq>`), when it has one.
fn entry_ms(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}

/// `quantum results`: the latest execution results.
pub async fn results(args: ResultsArgs) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    let bus = connect_bus(&settings).await?;
    let entries = bus.latest(keys::TRADE_EXECUTION_RESULT, args.count).await?;
    if entries.is_empty() {
        eprintln!("no results on {}", keys::TRADE_EXECUTION_RESULT);
    }
    if args.json {
        let docs: Vec<serde_json::Value> = entries
            .into_iter()
            .map(|entry| {
                let time_ms = entry_ms(&entry.id);
                match entry
                    .payload
                    .map_err(|m| m.describe().to_string())
                    .and_then(|p| {
                        serde_json::from_str::<serde_json::Value>(&p).map_err(|e| e.to_string())
                    }) {
                    Ok(result) => json!({"id": entry.id, "time_ms": time_ms, "result": result}),
                    Err(why) => json!({"id": entry.id, "time_ms": time_ms, "unreadable": why}),
                }
            })
            .collect();
        return output::json(&docs);
    }
    for entry in entries {
        let time = entry_ms(&entry.id).map_or_else(|| "-".to_string(), output::time);
        match entry.payload {
            Ok(payload) => outln!("{time} {} {payload}", entry.id),
            Err(m) => outln!("{time} {} <{}>", entry.id, m.describe()),
        }
    }
    Ok(())
}

/// `quantum halt`.
#[derive(Debug, clap::Args)]
pub struct HaltArgs {
    #[command(flatten)]
    pub connection: BusArgs,
    /// Let closes and exits through (trading state `reducing`) instead of stopping everything new.
    #[arg(long)]
    pub reduce_only: bool,
    /// Why, for the logs, `quantum doctor` and whoever looks next.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `quantum resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub connection: BusArgs,
    /// Why, for the logs and the audit trail.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `quantum trading-state`.
#[derive(Debug, clap::Args)]
pub struct TradingStateArgs {
    #[command(flatten)]
    pub connection: BusArgs,
    /// How many recent changes to list.
    #[arg(long, default_value_t = 5)]
    pub history: usize,
    /// One JSON document on stdout (the state as stored, `null` when never set).
    #[arg(long)]
    pub json: bool,
}

/// `quantum flatten`.
#[derive(Debug, clap::Args)]
pub struct FlattenArgs {
    #[command(flatten)]
    pub connection: BusVenueArgs,
    /// Only this symbol (default: every symbol of the account).
    #[arg(long)]
    pub symbol: Option<String>,
    /// Print what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for each close's confirmed result.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub wait: humantime::Duration,
    /// One JSON document on stdout: the plan, the closes and whether the account is flat.
    #[arg(long)]
    pub json: bool,
}

/// A flatten plan as JSON.
fn plans_json(plans: &[service::flatten::SymbolPlan]) -> serde_json::Value {
    plans
        .iter()
        .map(|p| {
            json!({
                "symbol": p.symbol,
                "positions": p.positions.iter().map(|(side, amount)| json!({
                    "position_side": side.as_str(),
                    "amount": amount.normalize().to_string(),
                })).collect::<Vec<_>>(),
                "resting_orders": p.resting.iter().map(|(id, client)| json!({
                    "order_id": id, "client_order_id": client,
                })).collect::<Vec<_>>(),
                "conditional_orders": p.conditional.iter().map(|(id, client)| json!({
                    "algo_id": id, "client_algo_id": client,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// `quantum flatten`: see `service::flatten`.
pub async fn flatten(args: FlattenArgs) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    let rest = rest_client(&settings)?;
    rest.sync_time().await?;
    let only = args.symbol.as_ref().map(|s| s.to_ascii_uppercase());
    let plans = service::flatten::plan(&rest, only.as_deref()).await?;
    let human = !args.json;
    if plans.is_empty() {
        if args.json {
            output::json(
                &json!({"plan": [], "dry_run": args.dry_run, "closed": [], "still_open": [], "flat": true}),
            )?;
        } else {
            outln!("nothing to do: no position, no resting order, no conditional order");
        }
        return Ok(());
    }
    for p in plans.iter().filter(|_| human) {
        outln!(
            "{}: position {}; {} resting order(s) to cancel; {} conditional order(s) to cancel once flat",
            p.symbol,
            p.describe_positions(),
            p.resting.len(),
            p.conditional.len()
        );
    }
    if args.dry_run {
        if args.json {
            output::json(
                &json!({"plan": plans_json(&plans), "dry_run": true, "closed": [], "still_open": plans_json(&plans), "flat": false}),
            )?;
        } else {
            outln!("dry run: nothing was changed");
        }
        return Ok(());
    }
    let bus = connect_bus(&settings).await?;
    eprintln!("trading goes to `reducing` (no new entries) until `quantum resume`");
    let closed = service::flatten::run(
        &rest,
        &bus,
        &plans,
        &service::control::operator(),
        Duration::from(args.wait),
    )
    .await?;
    let mut failed = 0;
    for c in &closed {
        match c.status.as_str() {
            "filled" if human => outln!(
                "{}: closed {} at {} ({})",
                c.book,
                c.qty.as_deref().unwrap_or("?"),
                c.price.as_deref().unwrap_or("?"),
                c.intent_id
            ),
            "filled" => {}
            other => {
                failed += 1;
                if human {
                    outln!(
                        "{}: close {other}: {} ({})",
                        c.book,
                        c.error.as_deref().unwrap_or("-"),
                        c.intent_id
                    )
                }
            }
        }
    }
    let after = service::flatten::plan(&rest, only.as_deref()).await?;
    if args.json {
        let closed: Vec<serde_json::Value> = closed
            .iter()
            .map(|c| {
                json!({
                    "book": c.book, "intent_id": c.intent_id, "status": c.status,
                    "price": c.price, "qty": c.qty, "error": c.error,
                })
            })
            .collect();
        output::json(&json!({
            "plan": plans_json(&plans),
            "dry_run": false,
            "closed": closed,
            "still_open": plans_json(&after),
            "flat": failed == 0 && after.is_empty(),
        }))?;
    } else if after.is_empty() {
        outln!("flat: no position, no resting order, no conditional order");
    } else {
        for p in &after {
            outln!(
                "STILL OPEN {}: position {}, {} resting, {} conditional",
                p.symbol,
                p.describe_positions(),
                p.resting.len(),
                p.conditional.len()
            );
        }
    }
    if failed > 0 || !after.is_empty() {
        bail!("the account is not flat and clean; run `quantum flatten` again or look at `quantum positions`");
    }
    Ok(())
}

/// `quantum halt`: writes the state every process reads before its next order.
pub async fn halt(args: HaltArgs) -> anyhow::Result<()> {
    let state = if args.reduce_only {
        TradingState::Reducing
    } else {
        TradingState::Halted
    };
    set_trading_state(&args.connection, state, &args.reason).await
}

/// `quantum resume`.
pub async fn resume(args: ResumeArgs) -> anyhow::Result<()> {
    set_trading_state(&args.connection, TradingState::Active, &args.reason).await
}

async fn set_trading_state(
    connection: &BusArgs,
    state: TradingState,
    reason: &str,
) -> anyhow::Result<()> {
    let settings = connection.settings()?;
    let bus = connect_bus(&settings).await?;
    let before = service::control::read(&bus).await?;
    let by = service::control::operator();
    let control = service::control::set(&bus, state, &by, reason).await?;
    let was = before.map_or(TradingState::Active, |c| c.state);
    outln!("trading state: {control} (was {was})");
    eprintln!(
        "{}",
        match state {
            TradingState::Active => "every quantum process on this bus trades again from its next order",
            TradingState::Reducing => "every quantum process refuses new entries from its next decision (within a second); closes and exits go on",
            TradingState::Halted => "every quantum process sends nothing new from its next decision (within a second), closes and exits included; orders already at the exchange and its protective orders stay",
        }
    );
    if settings.risk.kill_switch && state == TradingState::Active {
        eprintln!("note: risk.kill_switch is on in this configuration, so the services it configures stay at `reducing`");
    }
    Ok(())
}

/// `quantum trading-state`: the state and its recent changes.
pub async fn trading_state(args: TradingStateArgs) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    let bus = connect_bus(&settings).await?;
    let control = service::control::read(&bus).await?;
    if args.json {
        outln!("{}", serde_json::to_string(&control)?);
        return Ok(());
    }
    match &control {
        Some(c) => outln!("trading state: {c}, {}", age(c.at_ms)),
        None => outln!("trading state: active (never set)"),
    }
    if settings.risk.kill_switch {
        outln!("risk.kill_switch is on in this configuration: at most `reducing` for its services");
    }
    let log = bus.latest(keys::CONTROL_LOG, args.history).await?;
    if !log.is_empty() {
        outln!("recent changes (newest first):");
    }
    for entry in log {
        match entry
            .payload
            .ok()
            .map(|p| model::TradingControl::from_json(&p))
        {
            Some(Ok(c)) => outln!("  {c}, {}", age(c.at_ms)),
            _ => outln!("  {} <not readable>", entry.id),
        }
    }
    Ok(())
}

/// "at 2026-12-04T23:10:26.123Z, 12 s ago" for a time in ms.
fn age(at_ms: i64) -> String {
    let secs = (service::clock::now_ms() - at_ms).max(0) / 1000;
    let ago = if secs < 120 {
        format!("{secs} s ago")
    } else if secs < 7_200 {
        format!("{} min ago", secs / 60)
    } else {
        format!("{} h ago", secs / 3600)
    };
    format!("at {}, {ago}", output::time(at_ms))
}

/// `quantum orders` arguments.
#[derive(Debug, clap::Args)]
pub struct OrdersArgs {
    #[command(flatten)]
    pub connection: VenueArgs,
    /// Symbol whose orders to list, e.g. BTCUSDT.
    #[arg(long)]
    pub symbol: String,
    /// How many of the latest orders to list.
    #[arg(long, default_value_t = 10)]
    pub limit: u32,
    /// One JSON array on stdout, Binance's field names, times in epoch milliseconds.
    #[arg(long)]
    pub json: bool,
}

/// `quantum order` arguments.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["order_id", "client_id"])))]
pub struct OrderArgs {
    #[command(flatten)]
    pub connection: VenueArgs,
    /// Symbol of the order (Binance looks orders up per symbol).
    #[arg(long)]
    pub symbol: String,
    /// The exchange's order id.
    #[arg(long)]
    pub order_id: Option<i64>,
    /// The client order id; quantum's is q-<intent id> (see `quantum intent --help`).
    #[arg(long)]
    pub client_id: Option<String>,
    /// One JSON object on stdout, Binance's field names, times in epoch milliseconds.
    #[arg(long)]
    pub json: bool,
}

/// An order as JSON: Binance's field names and spellings, decimals as strings, times in ms.
fn order_json(o: &binance::Order) -> serde_json::Value {
    json!({
        "orderId": o.order_id,
        "symbol": o.symbol,
        "clientOrderId": o.client_order_id,
        "status": o.status.as_str(),
        "side": o.side.as_str(),
        "positionSide": o.position_side.as_str(),
        "type": o.order_type.as_str(),
        "origType": o.orig_type.as_ref().map(|t| t.as_str()),
        "timeInForce": o.time_in_force.as_str(),
        "price": o.price.normalize().to_string(),
        "avgPrice": o.avg_price.normalize().to_string(),
        "origQty": o.orig_qty.normalize().to_string(),
        "executedQty": o.executed_qty.normalize().to_string(),
        "cumQuote": o.cum_quote.normalize().to_string(),
        "stopPrice": o.stop_price.map(|p| p.normalize().to_string()),
        "workingType": o.working_type.as_ref().map(|t| t.as_str()),
        "reduceOnly": o.reduce_only,
        "closePosition": o.close_position,
        "time": o.time,
        "updateTime": o.update_time,
    })
}

/// `quantum orders`: recent orders of a symbol.
pub async fn orders(args: OrdersArgs) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    let rest = rest_client(&settings)?;
    rest.sync_time().await?;
    let mut orders = rest
        .all_orders(&args.symbol.to_ascii_uppercase(), Some(args.limit))
        .await?;
    orders.reverse();
    if args.json {
        return output::json(&orders.iter().map(order_json).collect::<Vec<_>>());
    }
    if orders.is_empty() {
        eprintln!(
            "no orders of {} on the exchange",
            args.symbol.to_ascii_uppercase()
        );
        return Ok(());
    }
    outln!(
        "{:>14}  {:<36}  {:<16}  {:>14}  {:>16}  {:<24}",
        "orderId",
        "clientOrderId",
        "status",
        "executedQty",
        "avgPrice",
        "time (UTC)"
    );
    for o in orders {
        outln!(
            "{:>14}  {:<36}  {:<16}  {:>14}  {:>16}  {:<24}",
            o.order_id,
            o.client_order_id,
            o.status.as_str(),
            o.executed_qty.normalize(),
            o.avg_price.normalize(),
            output::time(o.time.unwrap_or(o.update_time))
        );
    }
    Ok(())
}

/// `quantum order`: one order by id or client id.
pub async fn order(args: OrderArgs) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    let rest = rest_client(&settings)?;
    rest.sync_time().await?;
    let symbol = args.symbol.to_ascii_uppercase();
    let reference = match (args.order_id, &args.client_id) {
        (Some(id), None) => binance::OrderRef::OrderId(id),
        (None, Some(c)) => binance::OrderRef::ClientOrderId(c.clone()),
        _ => bail!("give exactly one of --order-id and --client-id"),
    };
    let Some(o) = rest.find_order(&symbol, &reference).await? else {
        bail!(
            "{}",
            not_found(&symbol, args.order_id, args.client_id.as_deref())
        );
    };
    if args.json {
        return output::json(&order_json(&o));
    }
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    for (name, value) in [
        ("orderId", o.order_id.to_string()),
        ("symbol", o.symbol.clone()),
        ("clientOrderId", o.client_order_id.clone()),
        ("status", o.status.as_str().to_string()),
        ("side", o.side.as_str().to_string()),
        ("positionSide", o.position_side.as_str().to_string()),
        ("type", o.order_type.as_str().to_string()),
        (
            "origType",
            or_dash(o.orig_type.as_ref().map(|t| t.as_str().to_string())),
        ),
        ("timeInForce", o.time_in_force.as_str().to_string()),
        ("price", o.price.normalize().to_string()),
        ("avgPrice", o.avg_price.normalize().to_string()),
        ("origQty", o.orig_qty.normalize().to_string()),
        ("executedQty", o.executed_qty.normalize().to_string()),
        ("cumQuote", o.cum_quote.normalize().to_string()),
        (
            "stopPrice",
            or_dash(o.stop_price.map(|p| p.normalize().to_string())),
        ),
        (
            "workingType",
            or_dash(o.working_type.as_ref().map(|t| t.as_str().to_string())),
        ),
        ("reduceOnly", o.reduce_only.to_string()),
        ("closePosition", o.close_position.to_string()),
        ("time", or_dash(o.time.map(output::time))),
        ("updateTime", output::time(o.update_time)),
    ] {
        outln!("{name:<14} {value}");
    }
    Ok(())
}

/// "No such order", with the likely slip: an intent id given where quantum's client order id
/// (`q-<intent id>`) belongs.
fn not_found(symbol: &str, order_id: Option<i64>, client_id: Option<&str>) -> String {
    match (order_id, client_id) {
        (_, Some(client)) => {
            let mut text = format!("no order with client order id {client:?} on {symbol}");
            if !client.starts_with("q-") {
                if let Ok(intent) = IntentId::new(client) {
                    text.push_str(&format!(
                        "; quantum's client order id for intent {client} is {}: try --client-id {}",
                        ClientOrderId::for_intent(&intent),
                        ClientOrderId::for_intent(&intent)
                    ));
                }
            }
            text
        }
        (Some(id), None) => {
            format!(
                "no order {id} on {symbol} (orders are looked up per symbol: is --symbol right?)"
            )
        }
        (None, None) => "no order given".to_string(),
    }
}

/// `quantum positions` arguments.
#[derive(Debug, clap::Args)]
pub struct PositionsArgs {
    #[command(flatten)]
    pub connection: BusVenueArgs,
    /// One JSON document on stdout: trading state, alarms, unwatched positions and each tracked
    /// lot with its levels, protective orders and feed age (times in epoch milliseconds).
    #[arg(long)]
    pub json: bool,
}

/// `quantum positions`: each tracked position with its plan, the distance to each trigger, the
/// protective orders on the exchange and the age of its price feed. The human report is built
/// line by line next to the JSON document, from the same values, and only one is printed.
pub async fn positions(args: PositionsArgs) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    let bus = connect_bus(&settings).await?;
    let rest = rest_client(&settings)?;
    rest.sync_time().await?;
    let mut lines: Vec<String> = Vec::new();
    let mut doc = serde_json::Map::new();
    match service::control::read(&bus).await {
        Ok(Some(c)) => {
            if c.state != TradingState::Active {
                lines.push(format!(
                    "TRADING IS {}: {c}",
                    c.state.as_str().to_uppercase()
                ));
            } else {
                lines.push("trading state: active".to_string());
            }
            doc.insert("trading_state".into(), serde_json::to_value(&c)?);
        }
        Ok(None) => {
            lines.push("trading state: active".to_string());
            doc.insert("trading_state".into(), serde_json::Value::Null);
        }
        Err(e) => {
            eprintln!("trading state: cannot read it: {e}");
            doc.insert("trading_state_error".into(), json!(e.to_string()));
        }
    }
    let saved = service::monitor_state::load(&bus).await?;
    for problem in &saved.unreadable {
        eprintln!("saved monitor state: {problem}");
    }
    let lots = saved.lots;
    let feed = service::monitor_state::load_feed(&bus).await?;
    let now = service::clock::now_ms();
    let alarms = service::monitor_state::load_alarms(&bus).await?;
    match &alarms {
        Some(saved) if !saved.alarms.is_empty() => {
            lines.push(format!(
                "ALARMS raised by the exit monitor ({:.0} s ago):",
                (now - saved.at) as f64 / 1000.0
            ));
            for a in &saved.alarms {
                let symbol = if a.symbol.is_empty() {
                    "account"
                } else {
                    &a.symbol
                };
                lines.push(format!("  {} {symbol}: {}", a.kind, a.message));
            }
        }
        Some(saved) if now - saved.at > 60_000 => lines.push(format!(
            "the exit monitor last reported {:.0} s ago: is it running?",
            (now - saved.at) as f64 / 1000.0
        )),
        Some(_) => lines.push("no alarms raised".to_string()),
        None => lines.push(
            "the exit monitor has not reported alarms (is it running against this Redis?)"
                .to_string(),
        ),
    }
    doc.insert("alarms".into(), serde_json::to_value(&alarms)?);
    match service::exposure::read(&rest, &bus).await {
        Ok(found) => {
            if !found.is_empty() {
                lines.push(format!("NOT WATCHED ({}): positions on the exchange quantum does not track, or without a stop there:", found.len()));
                for f in &found {
                    lines.push(format!("  {f}"));
                }
                lines.push("  (`quantum exit-monitor` adopts untracked positions and places their stops; `quantum doctor` fails until then)".to_string());
            }
            doc.insert(
                "not_watched".into(),
                json!(found.iter().map(ToString::to_string).collect::<Vec<_>>()),
            );
        }
        Err(e) => {
            eprintln!("cannot compare the exchange's positions with the tracked ones: {e}");
            doc.insert("not_watched_error".into(), json!(e));
        }
    }
    if lots.is_empty() {
        lines.push(
            "no tracked positions (is `quantum exit-monitor` running against this Redis?)"
                .to_string(),
        );
    }
    let distance = |level: Option<Decimal>, mark: Decimal| match level {
        Some(l) if !mark.is_zero() => format!(
            "{} ({:+.2}%)",
            l.normalize(),
            (l - mark) / mark * Decimal::ONE_HUNDRED
        ),
        Some(l) => l.normalize().to_string(),
        None => "-".to_string(),
    };
    let decimal = |d: Option<Decimal>| d.map(|d| d.normalize().to_string());
    let mut lots_json = Vec::new();
    for lot in &lots {
        let mark = match rest.premium_index(&lot.symbol).await {
            Ok(p) => Some(p.mark_price),
            Err(e) => {
                eprintln!("{}: cannot read the mark price: {e}", lot.symbol);
                None
            }
        };
        let protective: Result<Vec<(String, Option<Decimal>)>, String> = rest
            .open_algo_orders(Some(&lot.symbol))
            .await
            .map(|orders| {
                orders
                    .into_iter()
                    // On a hedge account only the orders of the lot's own side protect it.
                    .filter(|o| {
                        service::protection::is_protective(&o.client_algo_id)
                            && o.position_side.to_model() == Some(lot.side)
                    })
                    .map(|o| (o.order_type.as_str().to_string(), o.trigger_price))
                    .collect()
            })
            .map_err(|e| e.to_string());
        let protective_text: Vec<String> = match &protective {
            Ok(orders) => orders
                .iter()
                .map(|(kind, trigger)| {
                    format!(
                        "{kind}@{}",
                        trigger.map_or("?".into(), |p| p.normalize().to_string())
                    )
                })
                .collect(),
            Err(e) => vec![format!("unknown ({e})")],
        };
        let levels = lot
            .levels
            .unwrap_or(engine::exits::Levels::none(lot.direction, lot.entry));
        let trail = levels.trailing_pct.and_then(|cb| {
            let stop = engine::exits::trailing_stop(lot.direction, lot.trail.peak, cb)?;
            // The trail arms once its stop has passed the entry (see engine::exits).
            let armed = match lot.direction {
                engine::exits::Direction::Long => stop >= lot.entry,
                engine::exits::Direction::Short => stop <= lot.entry,
            };
            Some((cb, stop, armed))
        });
        let mark_or_zero = mark.unwrap_or(Decimal::ZERO);
        let trail_text = match trail {
            Some((cb, stop, armed)) => format!(
                "{cb}% peak {} stop {}{}",
                lot.trail.peak.normalize(),
                distance(Some(stop), mark_or_zero),
                if armed {
                    ""
                } else {
                    " (not armed until the stop passes the entry)"
                }
            ),
            None => "-".to_string(),
        };
        let feed_at = feed.get(&lot.symbol).copied();
        let feed_age = feed_at.map_or("unknown".to_string(), |t| {
            format!("{:.1}s", (now - t) as f64 / 1000.0)
        });
        let (phase_text, phase_json) = match &lot.phase {
            engine::monitor::Phase::Watching => (String::new(), json!({"state": "watching"})),
            engine::monitor::Phase::Closing(c) => (
                format!(
                    "  close in flight: {} (attempt {}, deadline in {:.1}s)",
                    c.intent_id,
                    c.attempt,
                    (c.deadline - now) as f64 / 1000.0
                ),
                json!({"state": "closing", "intent_id": c.intent_id, "attempt": c.attempt, "deadline_ms": c.deadline}),
            ),
            engine::monitor::Phase::Backoff { until, .. } => (
                format!(
                    "  last close FAILED; next attempt in {:.1}s",
                    (until - now) as f64 / 1000.0
                ),
                json!({"state": "backoff", "next_attempt_ms": until}),
            ),
        };
        // `AXSUSDT Long` on a one-way account, `AXSUSDT SHORT` on a hedge one (the side says
        // the direction there).
        let position = match lot.side {
            model::PositionSide::Both => format!("{} {:?}", lot.symbol, lot.direction),
            _ => lot.book().to_string(),
        };
        lines.push(format!(
            "{} {position} qty {} entry {} mark {}",
            lot.id,
            lot.qty.normalize(),
            lot.entry.normalize(),
            mark_or_zero.normalize()
        ));
        lines.push(format!(
            "    take-profit {}  stop-loss {}  trailing {}",
            distance(levels.take_profit, mark_or_zero),
            distance(levels.stop_loss, mark_or_zero),
            trail_text
        ));
        lines.push(format!(
            "    on the exchange: {}  price feed age: {feed_age}{phase_text}",
            if protective_text.is_empty() {
                "NONE".to_string()
            } else {
                protective_text.join(", ")
            },
        ));
        lots_json.push(json!({
            "id": lot.id,
            "symbol": lot.symbol,
            "position_side": lot.side.as_str(),
            "direction": format!("{:?}", lot.direction).to_ascii_lowercase(),
            "qty": lot.qty.normalize().to_string(),
            "entry": lot.entry.normalize().to_string(),
            "mark": decimal(mark),
            "take_profit": decimal(levels.take_profit),
            "stop_loss": decimal(levels.stop_loss),
            "trailing": trail.map(|(cb, stop, armed)| json!({
                "pct": cb.normalize().to_string(),
                "peak": lot.trail.peak.normalize().to_string(),
                "stop": stop.normalize().to_string(),
                "armed": armed,
            })),
            "protective_orders": match &protective {
                Ok(orders) => json!(orders.iter().map(|(kind, trigger)| json!({
                    "type": kind, "trigger_price": decimal(*trigger),
                })).collect::<Vec<_>>()),
                Err(_) => serde_json::Value::Null,
            },
            "protective_orders_error": protective.as_ref().err(),
            "feed_at_ms": feed_at,
            "phase": phase_json,
        }));
    }
    if args.json {
        doc.insert("lots".into(), json!(lots_json));
        return output::json(&doc);
    }
    for line in lines {
        outln!("{line}");
    }
    Ok(())
}

/// `quantum doctor` arguments.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub connection: BusVenueArgs,
    /// A MARKET order still NEW after this long counts as stuck (a healthy venue fills it in
    /// milliseconds).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub stuck_after: humantime::Duration,
    /// How long to wait for a WebSocket to open or deliver its first message.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub ws_timeout: humantime::Duration,
    /// How many of the latest results and intents to look at.
    #[arg(long, default_value_t = 50)]
    pub recent: usize,
    /// One JSON document on stdout: `{"venue", "redis", "checks": [{"name", "level", "detail",
    /// "hint"}], "worst"}`; the exit status is the same.
    #[arg(long)]
    pub json: bool,
}

/// `quantum doctor`: one line per check. Returns false when a check failed (the binary then
/// exits with status 1; the report already says what failed, so no error message is added).
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<bool> {
    let settings = args.connection.settings()?;
    let venue = format!("{:?}", settings.exchange.venue);
    let redis = settings.bus_config().redacted_url();
    if !args.json {
        outln!("quantum doctor: {venue} venue, Redis {redis}");
    }
    let rest = match rest_client(&settings) {
        Ok(rest) => Some(rest),
        Err(e) => {
            tracing::debug!("no REST client: {e}");
            None
        }
    };
    let bus = connect_bus(&settings).await.map_err(|e| format!("{e:#}"));
    let options = service::doctor::Options {
        stuck_after: args.stuck_after.into(),
        ws_timeout: args.ws_timeout.into(),
        recent: args.recent.max(1),
        ..service::doctor::Options::default()
    };
    let report = service::doctor::run(
        &settings,
        rest.as_ref(),
        bus.as_ref().map_err(Clone::clone),
        &options,
    )
    .await;
    let passed = report.worst() != service::doctor::Level::Fail;
    if args.json {
        let checks: Vec<serde_json::Value> = report
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "level": c.level.as_str().to_ascii_lowercase(),
                    "detail": c.detail,
                    "hint": c.hint,
                })
            })
            .collect();
        output::json(&json!({
            "venue": venue.to_ascii_lowercase(),
            "redis": redis,
            "checks": checks,
            "worst": report.worst().as_str().to_ascii_lowercase(),
            "passed": passed,
        }))?;
    } else {
        out!("{}", report.render());
    }
    Ok(passed)
}
