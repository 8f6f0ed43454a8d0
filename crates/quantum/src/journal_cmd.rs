//! The journal's subcommands: `quantum journal` (the recorder, standalone; `quantum run` runs
//! it too), and the reports read from it, `quantum trades` and `quantum pnl`. The reports' code
//! is the `journal` crate's ([`journal::report`]); this is flags and printing.

use std::path::PathBuf;

use anyhow::{bail, Context};
use bus::Bus;
use journal::{Format, GroupBy, Store, TradeFilter};
use service::{FileConfig, Running, Settings};
use tokio_util::sync::CancellationToken;

use crate::commands::BusArgs;

/// `quantum journal`.
#[derive(Debug, clap::Args)]
pub struct JournalArgs {
    #[command(flatten)]
    pub connection: BusArgs,
    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g. 127.0.0.1:9466).
    #[arg(long, env = "QUANTUM_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The journal's consumer group on each stream (a new group reads the streams from their
    /// beginning: a rebuild).
    #[arg(long, default_value = journal::DEFAULT_GROUP)]
    pub group: String,
}

/// Where the journal is.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// The journal's database: sqlite://<path> or postgres://user@host/db [default: journal.url of
    /// the config, else sqlite://quantum-journal.db].
    #[arg(long, env = "QUANTUM_JOURNAL_URL")]
    pub journal_url: Option<String>,
}

impl DatabaseArgs {
    /// The flag, else `journal.url` of the settings.
    pub fn url(&self, settings: &Settings) -> String {
        self.journal_url
            .clone()
            .unwrap_or_else(|| settings.journal_url.clone())
    }
}

/// The flags of the reports: the config (for `journal.url`), the database, the format.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// TOML config file (its journal.url).
    #[arg(long, env = "QUANTUM_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only trades closed since: a duration back from now (1d, 12h, 30m, 2w), a date
    /// (2026-12-01, UTC) or a UTC time (2026-12-01T08:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only trades of this symbol.
    #[arg(long)]
    pub symbol: Option<String>,
    /// Print JSON (decimals as strings with their exact digits).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV.
    #[arg(long)]
    pub csv: bool,
}

impl ReportArgs {
    fn format(&self) -> Format {
        match (self.json, self.csv) {
            (true, _) => Format::Json,
            (_, true) => Format::Csv,
            _ => Format::Table,
        }
    }

    async fn open(&self) -> anyhow::Result<(Store, TradeFilter)> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let url = match &self.database.journal_url {
            Some(url) => url.clone(),
            None => file
                .journal
                .url
                .clone()
                .unwrap_or_else(|| service::config::DEFAULT_JOURNAL_URL.to_string()),
        };
        let since_ms = self
            .since
            .as_deref()
            .map(|s| journal::parse_since(s, service::clock::now_ms()))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
        let store = Store::open_existing(&url).await.with_context(|| {
            format!(
                "cannot open the journal at {}",
                journal::store::redact(&url)
            )
        })?;
        Ok((
            store,
            TradeFilter {
                since_ms,
                symbol: self.symbol.as_ref().map(|s| s.to_ascii_uppercase()),
            },
        ))
    }
}

/// `quantum pnl`.
#[derive(Debug, clap::Args)]
pub struct PnlArgs {
    #[command(flatten)]
    pub report: ReportArgs,
    /// One line per symbol, UTC day (of the close) or exit reason, then the total.
    #[arg(long, value_parser = ["total", "symbol", "day", "reason"], default_value = "total")]
    pub by: String,
}

/// Starts the journal as a supervised task on `bus`, writing into the database at `url`.
pub async fn start(bus: &Bus, url: &str, group: &str) -> anyhow::Result<Running> {
    let store = Store::open(url)
        .await
        .with_context(|| format!("cannot open the journal at {}", journal::store::redact(url)))?;
    let bus = bus
        .separate()
        .await
        .context("cannot open the journal's bus connection")?;
    let shutdown = CancellationToken::new();
    let (token, group) = (shutdown.clone(), group.to_string());
    let task = tokio::spawn(async move {
        let end = journal::run(bus, store.clone(), group, token).await;
        store.close().await;
        end.map_err(|e| service::ServiceError::Journal(e.to_string()))
    });
    tracing::info!("journal: recording into {}", journal::store::redact(url));
    Ok(Running::new(service::health::JOURNAL, shutdown, task))
}

/// `quantum journal`: records the streams into the journal until the shutdown signal.
pub async fn run(
    args: JournalArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = args.connection.settings()?;
    crate::commands::serve_metrics(args.metrics_addr).await?;
    let bus = crate::commands::connect_bus(&settings).await?;
    let url = args.database.url(&settings);
    let running = start(&bus, &url, &args.group).await?;
    crate::supervise::one(running, shutdown).await?;
    tracing::info!("journal stopped");
    Ok(())
}

/// `quantum trades`.
pub async fn trades(args: ReportArgs) -> anyhow::Result<()> {
    let (store, filter) = args.open().await?;
    let trades = store.trades(&filter).await?;
    store.close().await;
    print!("{}", journal::render_trades(&trades, args.format()));
    Ok(())
}

/// `quantum pnl`.
pub async fn pnl(args: PnlArgs) -> anyhow::Result<()> {
    let Some(by) = GroupBy::parse(&args.by) else {
        bail!("--by {} is not total, symbol, day or reason", args.by);
    };
    let (store, filter) = args.report.open().await?;
    let trades = store.trades(&filter).await?;
    store.close().await;
    let lines = journal::summarize(&trades, by);
    print!(
        "{}",
        journal::render_summaries(&lines, args.report.format())
    );
    Ok(())
}
