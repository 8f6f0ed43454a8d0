//! The execution-side subcommands: `quantum execution` (the service) and the incident's manual
//! checks as commands (`intent`, `orders`, `order`, `results`). They share the connection flags
//! in [`ConnectionArgs`], layered over the `--config` file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bus::{keys, Bus};
use model::{Action, ClientOrderId, ExitLevel, IntentId, Symbol, TradeIntent, TradingState};
use rust_decimal::Decimal;
use service::{FileConfig, Overrides, Settings};

/// Connection flags shared by every subcommand that talks to the exchange or the bus.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// TOML config file (see config/quantum.example.toml for every key).
    #[arg(long, env = "QUANTUM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Redis URL [default: redis://127.0.0.1:6379].
    #[arg(long, env = "QUANTUM_REDIS_URL")]
    pub redis_url: Option<String>,
    /// testnet, mainnet or custom [default: testnet].
    #[arg(long, env = "QUANTUM_VENUE")]
    pub venue: Option<String>,
    /// REST base URL (e.g. http://127.0.0.1:8090 for `quantum sim`).
    #[arg(long, env = "QUANTUM_REST_URL")]
    pub rest_url: Option<String>,
    /// WebSocket base URL (e.g. ws://127.0.0.1:8090 for `quantum sim`).
    #[arg(long, env = "QUANTUM_WS_URL")]
    pub ws_url: Option<String>,
    /// Allow trading on mainnet (real money).
    #[arg(long, env = "QUANTUM_ALLOW_MAINNET")]
    pub allow_mainnet: bool,
    /// How long to wait for a fill before cancelling, e.g. 30s or 500ms [default: 30s].
    #[arg(long, env = "QUANTUM_FILL_TIMEOUT")]
    pub fill_timeout: Option<String>,
    /// This instance's consumer name in the group [default: $HOSTNAME].
    #[arg(long, env = "QUANTUM_CONSUMER_NAME")]
    pub consumer_name: Option<String>,
    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "QUANTUM_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl ConnectionArgs {
    /// Starts the metrics endpoint when `--metrics-addr` is given; it stops with the process.
    pub async fn serve_metrics(&self) -> anyhow::Result<()> {
        if let Some(addr) = self.metrics_addr {
            let bound = service::metrics::serve(addr, tokio_util::sync::CancellationToken::new())
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            tracing::info!("metrics on http://{bound}/metrics, health on http://{bound}/healthz");
        }
        Ok(())
    }
}

impl ConnectionArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let overrides = Overrides {
            redis_url: self.redis_url.clone(),
            venue: self.venue.clone(),
            rest_url: self.rest_url.clone(),
            ws_url: self.ws_url.clone(),
            allow_mainnet: self.allow_mainnet,
            fill_timeout: self.fill_timeout.clone(),
            consumer_name: self.consumer_name.clone(),
        };
        Ok(Settings::build(file, &overrides, |k| {
            std::env::var(k).ok()
        })?)
    }
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

pub async fn connect_bus(settings: &Settings) -> anyhow::Result<Bus> {
    let config = settings.bus_config();
    Bus::connect(&config)
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redacted_url()))
}

/// `quantum execution`.
pub async fn execution(
    args: ConnectionArgs,
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
    args: ConnectionArgs,
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
    pub connection: ConnectionArgs,
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

/// `quantum intent`: publishes one intent and waits for its result.
#[derive(Debug, clap::Args)]
pub struct IntentArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[arg(long, value_parser = |s: &str| Symbol::new(s))]
    pub symbol: Symbol,
    /// BUY, SELL or CLOSE.
    #[arg(long, value_parser = parse_action)]
    pub action: Action,
    /// Size in USDT.
    #[arg(long)]
    pub usd: Option<Decimal>,
    /// Size in contracts (instead of --usd).
    #[arg(long)]
    pub quantity: Option<Decimal>,
    #[arg(long)]
    pub leverage: Option<u32>,
    #[arg(long)]
    pub tp_pct: Option<Decimal>,
    #[arg(long)]
    pub sl_pct: Option<Decimal>,
    #[arg(long)]
    pub trail_pct: Option<Decimal>,
    /// Intent id [default: cli-<ms>].
    #[arg(long, value_parser = |s: &str| IntentId::new(s))]
    pub id: Option<IntentId>,
    /// How long to wait for the result.
    #[arg(long, default_value = "60s")]
    pub wait: humantime::Duration,
}

pub async fn intent(args: IntentArgs) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    let bus = connect_bus(&settings).await?;
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
        .source("quantum-cli")
        .created_at(now)
        .build()
        .context("invalid intent")?;
    let id = bus
        .publish(keys::TRADE_INTENT, &intent.to_json().to_string())
        .await?;
    println!(
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
                println!("{}", serde_json::to_string_pretty(&result)?);
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!(
        "no result for intent {} within {}; is `quantum execution` running?",
        intent.intent_id,
        args.wait
    )
}

/// `--action`, read as the service reads an intent's action (case-insensitively).
fn parse_action(text: &str) -> Result<Action, String> {
    Action::parse(text).ok_or_else(|| format!("{text:?} is not BUY, SELL or CLOSE"))
}

/// `quantum results`: the latest execution results.
pub async fn results(connection: ConnectionArgs, count: usize) -> anyhow::Result<()> {
    let settings = connection.settings()?;
    let bus = connect_bus(&settings).await?;
    let entries = bus.latest(keys::TRADE_EXECUTION_RESULT, count).await?;
    if entries.is_empty() {
        println!("no results on {}", keys::TRADE_EXECUTION_RESULT);
    }
    for entry in entries {
        match entry.payload {
            Ok(payload) => println!("{} {payload}", entry.id),
            Err(m) => println!("{} <{}>", entry.id, m.describe()),
        }
    }
    Ok(())
}

/// `quantum halt`.
#[derive(Debug, clap::Args)]
pub struct HaltArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
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
    pub connection: ConnectionArgs,
    /// Why, for the logs and the audit trail.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// `quantum trading-state`.
#[derive(Debug, clap::Args)]
pub struct TradingStateArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
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
    pub connection: ConnectionArgs,
    /// Only this symbol (default: every symbol of the account).
    #[arg(long)]
    pub symbol: Option<String>,
    /// Print what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long to wait for each close's confirmed result.
    #[arg(long, default_value = "60s")]
    pub wait: humantime::Duration,
}

/// `quantum flatten`: see `service::flatten`.
pub async fn flatten(args: FlattenArgs) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    let rest = rest_client(&settings)?;
    rest.sync_time().await?;
    let only = args.symbol.as_ref().map(|s| s.to_ascii_uppercase());
    let plans = service::flatten::plan(&rest, only.as_deref()).await?;
    if plans.is_empty() {
        println!("nothing to do: no position, no resting order, no conditional order");
        return Ok(());
    }
    for p in &plans {
        println!(
            "{}: position {}; {} resting order(s) to cancel; {} conditional order(s) to cancel once flat",
            p.symbol,
            p.describe_positions(),
            p.resting.len(),
            p.conditional.len()
        );
    }
    if args.dry_run {
        println!("dry run: nothing was changed");
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
            "filled" => println!(
                "{}: closed {} at {} ({})",
                c.book,
                c.qty.as_deref().unwrap_or("?"),
                c.price.as_deref().unwrap_or("?"),
                c.intent_id
            ),
            other => {
                failed += 1;
                println!(
                    "{}: close {other}: {} ({})",
                    c.book,
                    c.error.as_deref().unwrap_or("-"),
                    c.intent_id
                )
            }
        }
    }
    let after = service::flatten::plan(&rest, only.as_deref()).await?;
    if after.is_empty() {
        println!("flat: no position, no resting order, no conditional order");
    } else {
        for p in &after {
            println!(
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
    connection: &ConnectionArgs,
    state: TradingState,
    reason: &str,
) -> anyhow::Result<()> {
    let settings = connection.settings()?;
    let bus = connect_bus(&settings).await?;
    let before = service::control::read(&bus).await?;
    let by = service::control::operator();
    let control = service::control::set(&bus, state, &by, reason).await?;
    let was = before.map_or(TradingState::Active, |c| c.state);
    println!("trading state: {control} (was {was})");
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
        println!("{}", serde_json::to_string(&control)?);
        return Ok(());
    }
    match &control {
        Some(c) => println!("trading state: {c}, {}", age(c.at_ms)),
        None => println!("trading state: active (never set)"),
    }
    if settings.risk.kill_switch {
        println!(
            "risk.kill_switch is on in this configuration: at most `reducing` for its services"
        );
    }
    let log = bus.latest(keys::CONTROL_LOG, args.history).await?;
    if !log.is_empty() {
        println!("recent changes (newest first):");
    }
    for entry in log {
        match entry
            .payload
            .ok()
            .map(|p| model::TradingControl::from_json(&p))
        {
            Some(Ok(c)) => println!("  {c}, {}", age(c.at_ms)),
            _ => println!("  {} <not readable>", entry.id),
        }
    }
    Ok(())
}

/// "12 s ago" / "3 h ago" for a time in ms.
fn age(at_ms: i64) -> String {
    let secs = (service::clock::now_ms() - at_ms).max(0) / 1000;
    if secs < 120 {
        format!("{secs} s ago")
    } else if secs < 7_200 {
        format!("{} min ago", secs / 60)
    } else {
        format!("{} h ago", secs / 3600)
    }
}

/// `quantum orders`: recent orders of a symbol.
pub async fn orders(connection: ConnectionArgs, symbol: &str, limit: u32) -> anyhow::Result<()> {
    let settings = connection.settings()?;
    let rest = rest_client(&settings)?;
    rest.sync_time().await?;
    let mut orders = rest
        .all_orders(&symbol.to_ascii_uppercase(), Some(limit))
        .await?;
    orders.reverse();
    println!(
        "{:>14}  {:<36}  {:<16}  {:>14}  {:>16}  {:>13}",
        "orderId", "clientOrderId", "status", "executedQty", "avgPrice", "time"
    );
    for o in orders {
        println!(
            "{:>14}  {:<36}  {:<16}  {:>14}  {:>16}  {:>13}",
            o.order_id,
            o.client_order_id,
            o.status.as_str(),
            o.executed_qty.normalize(),
            o.avg_price.normalize(),
            o.time.unwrap_or(o.update_time)
        );
    }
    Ok(())
}

/// `quantum order`: one order by id or client id.
pub async fn order(
    connection: ConnectionArgs,
    symbol: &str,
    order_id: Option<i64>,
    client_id: Option<String>,
) -> anyhow::Result<()> {
    let settings = connection.settings()?;
    let rest = rest_client(&settings)?;
    rest.sync_time().await?;
    let reference = match (order_id, client_id) {
        (Some(id), None) => binance::OrderRef::OrderId(id),
        (None, Some(c)) => binance::OrderRef::ClientOrderId(c),
        _ => bail!("give exactly one of --order-id and --client-id"),
    };
    match rest
        .find_order(&symbol.to_ascii_uppercase(), &reference)
        .await?
    {
        Some(o) => println!("{o:#?}"),
        None => bail!("no such order on the exchange"),
    }
    Ok(())
}

/// `quantum positions`: each tracked position with its plan, the distance to each trigger, the
/// protective orders on the exchange and the age of its price feed.
pub async fn positions(connection: ConnectionArgs) -> anyhow::Result<()> {
    let settings = connection.settings()?;
    let bus = connect_bus(&settings).await?;
    let rest = rest_client(&settings)?;
    rest.sync_time().await?;
    match service::control::read(&bus).await {
        Ok(Some(c)) if c.state != TradingState::Active => {
            println!("TRADING IS {}: {c}", c.state.as_str().to_uppercase())
        }
        Ok(_) => println!("trading state: active"),
        Err(e) => eprintln!("trading state: cannot read it: {e}"),
    }
    let saved = service::monitor_state::load(&bus).await?;
    for problem in &saved.unreadable {
        eprintln!("saved monitor state: {problem}");
    }
    let lots = saved.lots;
    let feed = service::monitor_state::load_feed(&bus).await?;
    let now = service::clock::now_ms();
    match service::monitor_state::load_alarms(&bus).await? {
        Some(saved) if !saved.alarms.is_empty() => {
            println!(
                "ALARMS raised by the exit monitor ({:.0} s ago):",
                (now - saved.at) as f64 / 1000.0
            );
            for a in &saved.alarms {
                let symbol = if a.symbol.is_empty() {
                    "account"
                } else {
                    &a.symbol
                };
                println!("  {} {symbol}: {}", a.kind, a.message);
            }
        }
        Some(saved) if now - saved.at > 60_000 => println!(
            "the exit monitor last reported {:.0} s ago: is it running?",
            (now - saved.at) as f64 / 1000.0
        ),
        Some(_) => println!("no alarms raised"),
        None => {
            println!("the exit monitor has not reported alarms (is it running against this Redis?)")
        }
    }
    match service::exposure::read(&rest, &bus).await {
        Ok(found) if found.is_empty() => {}
        Ok(found) => {
            println!("NOT WATCHED ({}): positions on the exchange quantum does not track, or without a stop there:", found.len());
            for f in &found {
                println!("  {f}");
            }
            println!("  (`quantum exit-monitor` adopts untracked positions and places their stops; `quantum doctor` fails until then)");
        }
        Err(e) => eprintln!("cannot compare the exchange's positions with the tracked ones: {e}"),
    }
    if lots.is_empty() {
        println!("no tracked positions (is `quantum exit-monitor` running against this Redis?)");
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
    for lot in &lots {
        let mark = match rest.premium_index(&lot.symbol).await {
            Ok(p) => p.mark_price,
            Err(e) => {
                eprintln!("{}: cannot read the mark price: {e}", lot.symbol);
                Decimal::ZERO
            }
        };
        let protective: Vec<String> = rest
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
                    .map(|o| {
                        format!(
                            "{}@{}",
                            o.order_type.as_str(),
                            o.trigger_price
                                .map_or("?".into(), |p| p.normalize().to_string())
                        )
                    })
                    .collect()
            })
            .unwrap_or_else(|e| vec![format!("unknown ({e})")]);
        let levels = lot
            .levels
            .unwrap_or(engine::exits::Levels::none(lot.direction, lot.entry));
        let trail = match levels.trailing_pct.and_then(|cb| {
            Some((
                cb,
                engine::exits::trailing_stop(lot.direction, lot.trail.peak, cb)?,
            ))
        }) {
            Some((cb, stop)) => {
                // The trail arms once its stop has passed the entry (see engine::exits).
                let armed = match lot.direction {
                    engine::exits::Direction::Long => stop >= lot.entry,
                    engine::exits::Direction::Short => stop <= lot.entry,
                };
                format!(
                    "{cb}% peak {} stop {}{}",
                    lot.trail.peak.normalize(),
                    distance(Some(stop), mark),
                    if armed {
                        ""
                    } else {
                        " (not armed until the stop passes the entry)"
                    }
                )
            }
            None => "-".to_string(),
        };
        let feed_age = feed.get(&lot.symbol).map_or("unknown".to_string(), |t| {
            format!("{:.1}s", (now - t) as f64 / 1000.0)
        });
        println!(
            "{} {} {:?} qty {} entry {} mark {}",
            lot.id,
            lot.book(),
            lot.direction,
            lot.qty.normalize(),
            lot.entry.normalize(),
            mark.normalize()
        );
        println!(
            "    take-profit {}  stop-loss {}  trailing {}",
            distance(levels.take_profit, mark),
            distance(levels.stop_loss, mark),
            trail
        );
        println!(
            "    on the exchange: {}  price feed age: {feed_age}{}",
            if protective.is_empty() {
                "NONE".to_string()
            } else {
                protective.join(", ")
            },
            match &lot.phase {
                engine::monitor::Phase::Watching => String::new(),
                engine::monitor::Phase::Closing(c) => format!(
                    "  close in flight: {} (attempt {}, deadline in {:.1}s)",
                    c.intent_id,
                    c.attempt,
                    (c.deadline - now) as f64 / 1000.0
                ),
                engine::monitor::Phase::Backoff { until, .. } => format!(
                    "  last close FAILED; next attempt in {:.1}s",
                    (until - now) as f64 / 1000.0
                ),
            }
        );
    }
    Ok(())
}

/// `quantum doctor` arguments.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// A MARKET order still NEW after this long counts as stuck (a healthy venue fills it in
    /// milliseconds).
    #[arg(long, default_value = "10s")]
    pub stuck_after: humantime::Duration,
    /// How long to wait for a WebSocket to open or deliver its first message.
    #[arg(long, default_value = "10s")]
    pub ws_timeout: humantime::Duration,
    /// How many of the latest results and intents to look at.
    #[arg(long, default_value_t = 50)]
    pub recent: usize,
}

/// `quantum doctor`: one line per check. Returns false when a check failed (the binary then
/// exits with status 1; the report already says what failed, so no error message is added).
pub async fn doctor(args: DoctorArgs) -> anyhow::Result<bool> {
    let settings = args.connection.settings()?;
    println!(
        "quantum doctor: {:?} venue, Redis {}",
        settings.exchange.venue,
        settings.bus_config().redacted_url()
    );
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
    print!("{}", report.render());
    Ok(report.worst() != service::doctor::Level::Fail)
}
