//! `quantum`: the one user-facing binary. A thin shell over the workspace's libraries: it parses
//! the command line, sets up logging, and runs the subcommand until SIGINT or SIGTERM. A
//! command's result goes to standard output, everything else to standard error (see
//! [`output`]); an error ends the process with status 1 and one `error: …` line.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

#[macro_use]
mod output;
mod chaos;
mod commands;
mod demo;
mod journal_cmd;
mod supervise;

/// Confirmed-fill trade execution for Binance USDⓈ-M Futures.
#[derive(Debug, Parser)]
#[command(name = "quantum", version, about, long_about = None)]
struct Cli {
    /// Log output format (logs go to stderr; text is coloured only on a terminal without NO_COLOR).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "QUANTUM_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One line per event, for people and grep.
    Text,
    /// One JSON object per event, for log shippers.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole system on embedded defaults (simulator, in-process bus, both services) through a scripted scenario.
    Demo(demo::DemoArgs),
    /// Run the Binance USDⓈ-M Futures exchange simulator (REST + WebSocket on one port).
    Sim(SimArgs),
    /// Run a seeded chaos scenario (faults, kills, restarts) against the real services and check the promises against the exchange's truth.
    Chaos(chaos::ChaosArgs),
    /// Run the execution service: intents from Redis to confirmed results.
    Execution(commands::ServiceArgs),
    /// Run the exit monitor: track filled positions and close them on TP / SL / trailing stop.
    ExitMonitor(commands::ServiceArgs),
    /// Run the execution service, the exit monitor and the journal in one process.
    Run(commands::RunArgs),
    /// Record intents, results, exits and trading-state changes from the bus into the journal (SQLite or PostgreSQL); `quantum run` does it too.
    Journal(journal_cmd::JournalArgs),
    /// List the trades (lots closed or exited) in the journal: entry, exit, reason, PnL net of fees, fees, hold time.
    Trades(journal_cmd::ReportArgs),
    /// Sum the journal's trades: PnL net of fees, fees, win rate, average hold time, the exit reasons' share; by symbol, day or reason.
    Pnl(journal_cmd::PnlArgs),
    /// Publish one trade intent and wait for its result; the exit status says how it ended.
    #[command(after_help = commands::INTENT_EXIT_CODES)]
    Intent(commands::IntentArgs),
    /// List recent orders of a symbol on the exchange, newest first.
    Orders(commands::OrdersArgs),
    /// Show one order on the exchange, by order id or client order id.
    Order(commands::OrderArgs),
    /// Show each tracked position: plan, distance to each trigger, protective orders, feed age.
    Positions(commands::PositionsArgs),
    /// Check the exchange, the keys, Redis and the recent orders; one line per check, non-zero exit on a failure.
    Doctor(commands::DoctorArgs),
    /// Stop new trading on every quantum process within a second: `halted` sends nothing new (closes and exits included; exchange-side stops stay), `--reduce-only` sends closes and exits only.
    Halt(commands::HaltArgs),
    /// Get the account flat: trading to `reducing`, resting entries cancelled, every position closed through the execution service (confirmed prices reported), then its protective orders cancelled.
    Flatten(commands::FlattenArgs),
    /// Let every quantum process trade again (trading state `active`).
    Resume(commands::ResumeArgs),
    /// Show the trading state, who set it and why, and its recent changes.
    TradingState(commands::TradingStateArgs),
    /// Show the latest execution results on the bus, newest first.
    Results(commands::ResultsArgs),
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Address to listen on (REST and WebSocket).
    #[arg(long, default_value = "127.0.0.1:8090", env = "QUANTUM_SIM_LISTEN")]
    listen: SocketAddr,
    /// API key the simulator accepts (default printed at start; not a secret).
    #[arg(long, env = "QUANTUM_SIM_API_KEY", default_value = simulator::DEFAULT_API_KEY)]
    api_key: String,
    /// HMAC-SHA256 secret paired with --api-key.
    #[arg(long, env = "QUANTUM_SIM_API_SECRET", default_value = simulator::DEFAULT_API_SECRET, hide_default_value = false)]
    api_secret: String,
    /// Ed25519 public key (PEM file) of --ed25519-api-key; only such keys can session.logon.
    #[arg(long, env = "QUANTUM_SIM_ED25519_PUBLIC_KEY", value_name = "PEM_FILE")]
    ed25519_public_key: Option<std::path::PathBuf>,
    /// API key of --ed25519-public-key.
    #[arg(long, env = "QUANTUM_SIM_ED25519_API_KEY", value_name = "KEY", default_value = simulator::DEFAULT_ED25519_API_KEY)]
    ed25519_api_key: String,
    /// RSA public key (PEM file) of --rsa-api-key (PKCS#1 v1.5 signatures, SHA-256).
    #[arg(long, env = "QUANTUM_SIM_RSA_PUBLIC_KEY", value_name = "PEM_FILE")]
    rsa_public_key: Option<std::path::PathBuf>,
    /// API key of --rsa-public-key.
    #[arg(long, env = "QUANTUM_SIM_RSA_API_KEY", value_name = "KEY", default_value = simulator::DEFAULT_RSA_API_KEY)]
    rsa_api_key: String,
    /// Delay before a MARKET order's first fill. The ACK reply never carries the fill.
    #[arg(long, default_value_t = 300, env = "QUANTUM_SIM_FILL_DELAY_MS")]
    fill_delay_ms: u64,
    /// Fills per MARKET order (more than 1 gives PARTIALLY_FILLED updates).
    #[arg(long, default_value_t = 1)]
    partial_fills: u32,
    /// Seed of the price random walks.
    #[arg(long, default_value_t = 42, env = "QUANTUM_SIM_SEED")]
    seed: u64,
    /// Extra symbols as SYMBOL:PRICE, comma-separated (e.g. LINKUSDT:14.5,ADAUSDT:0.92).
    #[arg(long, value_delimiter = ',')]
    symbols: Vec<String>,
    /// Replay prices from CSV: SYMBOL=PATH (rows timestamp,price) or PATH (rows timestamp,symbol,price). Repeatable.
    #[arg(long)]
    price_file: Vec<String>,
    /// Interval of price ticks and market-stream updates.
    #[arg(long, default_value_t = 1000)]
    tick_ms: u64,
    /// Interval of server pings on WebSockets.
    #[arg(long, default_value_t = 180)]
    ws_ping_secs: u64,
    /// Starting USDT balance of the simulated account.
    #[arg(long, default_value = "10000")]
    balance: rust_decimal::Decimal,
    /// Start the account in hedge mode (dualSidePosition=true: LONG and SHORT positions apart);
    /// `POST /fapi/v1/positionSide/dual` switches it later, with nothing open.
    #[arg(long)]
    hedge_mode: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            use std::io::Write;
            // `{:#}`: the whole chain on one line, each cause after a colon. A closed stderr is
            // not worth a panic.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Runs the command; `Ok` carries the exit status (0 unless the command's outcome says
/// otherwise: `doctor` with a failed check, `intent` not filled, `chaos` with a broken promise).
fn run(cli: Cli) -> anyhow::Result<u8> {
    // Doctor's report is its output; only warnings and errors of the libraries go with it.
    let default_filter = match cli.command {
        Command::Doctor(_) => "warn",
        _ => "info",
    };
    // A chaos run logs to a file of its run directory; stdout is its progress and report.
    if !matches!(cli.command, Command::Chaos(_)) {
        init_logging(cli.log_format, default_filter);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let done = |result: anyhow::Result<()>| result.map(|()| 0);
    match cli.command {
        Command::Chaos(args) => match runtime.block_on(chaos::run(args)) {
            Ok(true) => Ok(0),
            Ok(false) => Ok(1),
            Err(e) => {
                eprintln!("quantum chaos could not run: {e:#}");
                Ok(2)
            }
        },
        Command::Sim(args) => done(runtime.block_on(run_sim(args))),
        Command::Demo(args) => done(runtime.block_on(demo::run(args))),
        Command::Execution(args) => {
            done(runtime.block_on(async { commands::execution(args, shutdown_signal()).await }))
        }
        Command::ExitMonitor(args) => {
            done(runtime.block_on(async { commands::exit_monitor(args, shutdown_signal()).await }))
        }
        Command::Run(args) => {
            done(runtime.block_on(async { commands::run_both(args, shutdown_signal()).await }))
        }
        Command::Journal(args) => {
            done(runtime.block_on(async { journal_cmd::run(args, shutdown_signal()).await }))
        }
        Command::Trades(args) => done(runtime.block_on(journal_cmd::trades(args))),
        Command::Pnl(args) => done(runtime.block_on(journal_cmd::pnl(args))),
        Command::Intent(args) => runtime.block_on(commands::intent(args)),
        Command::Positions(args) => done(runtime.block_on(commands::positions(args))),
        Command::Doctor(args) => Ok(if runtime.block_on(commands::doctor(args))? {
            0
        } else {
            1
        }),
        Command::Orders(args) => done(runtime.block_on(commands::orders(args))),
        Command::Order(args) => done(runtime.block_on(commands::order(args))),
        Command::Halt(args) => done(runtime.block_on(commands::halt(args))),
        Command::Flatten(args) => done(runtime.block_on(commands::flatten(args))),
        Command::Resume(args) => done(runtime.block_on(commands::resume(args))),
        Command::TradingState(args) => done(runtime.block_on(commands::trading_state(args))),
        Command::Results(args) => done(runtime.block_on(commands::results(args))),
    }
}

fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("QUANTUM_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(output::colour_logs())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    let mut public_keys = Vec::new();
    for (path, api_key, scheme) in [
        (
            &args.ed25519_public_key,
            &args.ed25519_api_key,
            simulator::KeyScheme::Ed25519,
        ),
        (
            &args.rsa_public_key,
            &args.rsa_api_key,
            simulator::KeyScheme::Rsa,
        ),
    ] {
        if let Some(path) = path {
            let public_key_pem = std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the {scheme} public key {}", path.display())
            })?;
            public_keys.push(simulator::PublicApiKey {
                api_key: api_key.clone(),
                scheme,
                public_key_pem,
            });
        }
    }
    let config = simulator::SimConfig {
        listen: args.listen,
        api_key: args.api_key,
        api_secret: args.api_secret,
        public_keys,
        fill_delay: Duration::from_millis(args.fill_delay_ms),
        partial_fills: args.partial_fills.max(1),
        seed: args.seed,
        extra_symbols: args.symbols,
        price_files: args.price_file,
        tick_interval: Duration::from_millis(args.tick_ms.max(10)),
        ws_ping_interval: Duration::from_secs(args.ws_ping_secs.max(1)),
        initial_balance: args.balance,
        dual_side_position: args.hedge_mode,
        ..simulator::SimConfig::default()
    };
    let api_key = config.api_key.clone();
    let public_keys: Vec<(String, simulator::KeyScheme)> = config
        .public_keys
        .iter()
        .map(|k| (k.api_key.clone(), k.scheme))
        .collect();
    let custom_secret = config.api_secret != simulator::DEFAULT_API_SECRET;
    simulator::run(config, shutdown_signal(), |handle| {
        let addr = handle.addr();
        tracing::info!("quantum sim listening on {addr}");
        outln!("quantum sim: Binance USDⓈ-M Futures simulator");
        outln!("  REST       http://{addr}/fapi/v1/...");
        outln!("  WebSocket  ws://{addr}/ws/<stream>  ws://{addr}/stream?streams=a/b  ws://{addr}/private/ws?listenKey=<key>");
        outln!("  WS API     ws://{addr}/ws-fapi/v1");
        outln!("  control    http://{addr}/sim/v1/price  http://{addr}/sim/v1/faults");
        outln!("  api key    {api_key}");
        if custom_secret {
            outln!("  api secret (as configured; not printed)");
        } else {
            outln!("  api secret {} (the documented default)", simulator::DEFAULT_API_SECRET);
        }
        for (key, scheme) in &public_keys {
            outln!("  api key    {key} ({scheme} public key)");
        }
        outln!("  symbols    {}", handle.symbols().join(" "));
        outln!("Ctrl-C stops it.");
    })
    .await
    .context("simulator failed")?;
    tracing::info!("quantum sim stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (systemd stop). The handlers are installed when this
/// is called, not when the future is first polled: a signal that arrives while the service is
/// still starting must stop it cleanly too, not kill it with the default action. Call it inside
/// the runtime.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        let (mut interrupt, mut terminate) = match (interrupt, terminate) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot listen for SIGINT/SIGTERM: {e}; stop with SIGKILL");
                return std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C received, shutting down");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag of every command says what it is for in `--help`.
    #[test]
    fn every_flag_has_help_text() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&super::Cli::command(), "quantum", &mut missing);
        assert!(missing.is_empty(), "flags without help: {missing:?}");
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
