//! `quantum demo`: the whole promise in one command with nothing set up. The simulator (with the
//! testnet's NEW-then-fill behaviour), the in-process bus (or Redis with `--redis-url`), the
//! execution service and the exit monitor run in this process; a scripted scenario opens a long,
//! a short and a trailing long, drives prices so that one exits on take-profit, one on stop-loss
//! and one on the trailing stop, and prints the journal's table of the trades (the code of
//! `quantum trades` and `quantum pnl`, on an in-memory journal). It exits non-zero when a promise is broken:
//! a fill without a price, a duplicate order, a position left open.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use bus::{keys, Bus};
use model::{
    Action, ExecutionResult, ExitLevel, ExitReason, IntentBuilder, IntentId, ResultStatus, Symbol,
    TradeIntent,
};
use rust_decimal::Decimal;
use service::Settings;

/// `quantum demo` arguments.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Time scale of the scenario: 2 runs it twice as fast (pauses between price moves).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Seed of the simulator's price walks.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run the same scenario over this Redis instead of the in-process bus, on streams and keys
    /// of its own (under `quantum-demo-<run>:`), so services using the same Redis neither see
    /// nor take the demo's intents. Only this flag chooses it: the demo reads no QUANTUM_*
    /// setting.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
}

struct Leg {
    id: &'static str,
    symbol: &'static str,
    /// The entry, stamped with its creation time when it is sent.
    intent: IntentBuilder,
    /// Prices the scenario pins, in order, to drive the exit (each followed by a pause).
    path: &'static [&'static str],
    expected_exit: ExitReason,
}

fn legs(run: u64) -> anyhow::Result<Vec<Leg>> {
    let pct = |p: i64| ExitLevel::Pct(Decimal::from(p));
    // An entry of `usd` at leverage 5, under the id `demo-<run>-<name>`.
    let entry = |name: &str, symbol: &str, action: Action, usd: i64| {
        let id: &'static str = Box::leak(format!("demo-{run}-{name}").into_boxed_str());
        let intent = TradeIntent::builder(IntentId::new(id)?, Symbol::new(symbol)?, action)
            .position_size_usd(Decimal::from(usd))
            .leverage(5);
        anyhow::Ok((id, intent))
    };
    let (tp, tp_entry) = entry("tp", "AXSUSDT", Action::Buy, 100)?;
    let (sl, sl_entry) = entry("sl", "ETHUSDT", Action::Sell, 200)?;
    let (trail, trail_entry) = entry("trail", "SOLUSDT", Action::Buy, 150)?;
    Ok(vec![
        Leg {
            id: tp,
            symbol: "AXSUSDT",
            intent: tp_entry.take_profit(pct(2)).stop_loss(pct(1)),
            path: &["6.280", "6.330", "6.381"],
            expected_exit: ExitReason::TakeProfit,
        },
        Leg {
            id: sl,
            symbol: "ETHUSDT",
            intent: sl_entry.take_profit(pct(3)).stop_loss(pct(1)),
            path: &["3410.00", "3425.00", "3436.00"],
            expected_exit: ExitReason::StopLoss,
        },
        Leg {
            id: trail,
            symbol: "SOLUSDT",
            intent: trail_entry.stop_loss(pct(3)).trailing_pct(Decimal::ONE),
            path: &["183.00", "186.00", "189.00", "187.90", "186.50"],
            expected_exit: ExitReason::TrailingStop,
        },
    ])
}

const START_PRICES: [(&str, &str); 3] = [
    ("AXSUSDT", "6.250"),
    ("ETHUSDT", "3400.00"),
    ("SOLUSDT", "180.00"),
];

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !(args.speed > 0.0 && args.speed <= 100.0) {
        bail!("--speed must be above 0 and at most 100");
    }
    let pause = |ms: u64| Duration::from_millis((ms as f64 / args.speed) as u64);
    outln!(
        "quantum demo: simulator + {} + execution service + exit monitor, in this process",
        if args.redis_url.is_some() {
            "Redis"
        } else {
            "in-process bus"
        }
    );
    let sim = simulator::spawn(simulator::SimConfig {
        seed: args.seed,
        fill_delay: Duration::from_millis(400),
        ..simulator::SimConfig::default()
    })
    .await
    .context("cannot start the simulator")?;
    let http = reqwest_like::Client::new(sim.base_url());
    // The testnet's behaviour: the first reply says NEW with zeros; the fill comes later.
    http.post("/sim/v1/faults", serde_json::json!({"result_wait_ms": 0}))
        .await?;
    for (symbol, price) in START_PRICES {
        http.post(
            "/sim/v1/price",
            serde_json::json!({"symbol": symbol, "price": price}),
        )
        .await?;
    }
    let redis = args
        .redis_url
        .clone()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let settings = Settings::custom(
        &sim.base_url(),
        &sim.ws_url(),
        &redis,
        simulator::DEFAULT_API_KEY,
        simulator::DEFAULT_API_SECRET,
    )?;
    let run_id = service::clock::now_ms() as u64;
    let bus = match &args.redis_url {
        // The bus keys are fixed names; on a shared Redis the demo's services would otherwise
        // read the real intent stream (a running execution service would take the demo's
        // intents, and the demo's would take intents queued for a stopped one).
        Some(_) => {
            let namespace = format!("quantum-demo-{run_id}");
            eprintln!(
                "the demo's streams and keys are under {namespace}: on {}; they stay after the \
                 demo (redis-cli --scan --pattern '{namespace}:*' lists them)",
                settings.bus_config().redacted_url()
            );
            crate::commands::connect_bus(&settings)
                .await?
                .namespaced(&namespace)
        }
        None => Bus::memory(settings.redis_max_len),
    };
    let execution = service::start_with_bus(settings.clone(), bus.clone()).await?;
    let (monitor, counters) =
        service::exit_monitor::start_with_bus(settings.clone(), bus.clone()).await?;
    let legs = legs(run_id)?;
    // The journal, in memory: the table at the end is `quantum trades`' and `quantum pnl`'s.
    // A group of its own per run, so a shared Redis's other journals are left alone.
    let store = journal::Store::open("sqlite::memory:").await?;
    let journal_stop = tokio_util::sync::CancellationToken::new();
    let journal_task = tokio::spawn(journal::run(
        bus.separate().await?,
        store.clone(),
        format!("quantum-demo-{run_id}"),
        journal_stop.clone(),
    ));

    tokio::time::sleep(pause(500)).await;
    for leg in &legs {
        let intent = leg
            .intent
            .clone()
            .created_at(service::clock::now_ms())
            .build()
            .with_context(|| format!("the demo's intent {}", leg.id))?;
        let doc = intent.to_json();
        outln!(
            "-> intent {} {} {} {doc}",
            leg.id,
            intent.action.as_str(),
            leg.symbol,
        );
        bus.publish(keys::TRADE_INTENT, &doc.to_string()).await?;
    }
    let entries = wait_results(
        &bus,
        legs.iter().map(|l| l.id.to_string()).collect(),
        Duration::from_secs(30),
    )
    .await?;
    for leg in &legs {
        let r = &entries[leg.id];
        outln!(
            "<- result {} {} entry_price={} qty={} confirmed_by={} after {}ms",
            leg.id,
            r.status().as_str(),
            r.entry_price(),
            r.executed_qty(),
            r.confirmed_by().map_or("-", |c| c.as_str()),
            r.published_at() - r.order_sent_at().unwrap_or(r.published_at())
        );
    }
    // Let the monitor subscribe and place its protective orders before prices move.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counters
        .lots_opened
        .load(std::sync::atomic::Ordering::Relaxed)
        < legs.len() as u64
    {
        if tokio::time::Instant::now() > deadline {
            bail!("the exit monitor did not track the positions");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(pause(1000)).await;
    for step in 0..legs.iter().map(|l| l.path.len()).max().unwrap_or(0) {
        for leg in &legs {
            if let Some(price) = leg.path.get(step) {
                outln!("~~ price {} -> {price}", leg.symbol);
                http.post(
                    "/sim/v1/price",
                    serde_json::json!({"symbol": leg.symbol, "price": price}),
                )
                .await?;
            }
        }
        tokio::time::sleep(pause(700)).await;
    }
    let closes = wait_results(
        &bus,
        legs.iter().map(|l| format!("close-{}-1", l.id)).collect(),
        Duration::from_secs(30),
    )
    .await?;
    tokio::time::sleep(pause(500)).await;

    // The table (the journal's, as `quantum trades` and `quantum pnl` print it), and the
    // promises.
    let ids: Vec<&str> = legs.iter().map(|l| l.id).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let trades = loop {
        let trades: Vec<journal::Trade> = store
            .trades(&journal::TradeFilter::default())
            .await?
            .into_iter()
            .filter(|t| ids.contains(&t.lot_id.as_str()))
            .collect();
        if trades.len() == legs.len() {
            break trades;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the journal recorded {} of the {} exits",
                trades.len(),
                legs.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    outln!();
    out!(
        "{}",
        journal::render_trades(&trades, journal::Format::Table)
    );
    outln!();
    out!(
        "{}",
        journal::render_summaries(
            &journal::summarize(&trades, journal::GroupBy::Total),
            journal::Format::Table
        )
    );
    let rest = binance::RestClient::new(settings.binance_config()?)?;
    let mut broken = Vec::new();
    for leg in &legs {
        let entry = &entries[leg.id];
        let close = &closes[&format!("close-{}-1", leg.id)];
        for r in [entry, close] {
            if r.status() != ResultStatus::Filled
                || r.entry_price() <= Decimal::ZERO
                || r.executed_qty() <= Decimal::ZERO
            {
                broken.push(format!(
                    "{} is {} with price {} qty {}",
                    r.intent_id_str(),
                    r.status().as_str(),
                    r.entry_price(),
                    r.executed_qty()
                ));
            }
        }
        let trade = trades.iter().find(|t| t.lot_id == leg.id);
        let reason = trade.map(|t| t.reason);
        if reason != Some(leg.expected_exit) {
            broken.push(format!(
                "{} exited by {}, expected {}",
                leg.id,
                reason.map_or("nothing", |r| r.as_str()),
                leg.expected_exit.as_str()
            ));
        }
        if trade.is_some_and(|t| t.realized_pnl.is_none()) {
            broken.push(format!("{}: the journal has no PnL for it", leg.id));
        }
        let orders = rest.all_orders(leg.symbol, Some(100)).await?;
        let mine = orders
            .iter()
            .filter(|o| o.client_order_id.contains(leg.id))
            .count();
        if mine != 2 {
            broken.push(format!(
                "{}: {mine} orders on the exchange for one entry and one close",
                leg.id
            ));
        }
        let open: Decimal = rest
            .position_risk(Some(leg.symbol))
            .await?
            .iter()
            .map(|p| p.position_amt)
            .sum();
        if !open.is_zero() {
            broken.push(format!("{} left open on the exchange: {open}", leg.symbol));
        }
        let protective = rest.open_algo_orders(Some(leg.symbol)).await?;
        if !protective.is_empty() {
            broken.push(format!(
                "{}: {} protective orders outlived the position",
                leg.symbol,
                protective.len()
            ));
        }
    }
    monitor.stop().await?;
    execution.stop().await?;
    journal_stop.cancel();
    journal_task.await??;
    store.close().await;
    sim.shutdown().await;
    outln!();
    if broken.is_empty() {
        outln!("all promises kept: every fill confirmed with a real price, one order per intent, every position closed and no protective order left");
        Ok(())
    } else {
        for b in &broken {
            eprintln!("PROMISE BROKEN: {b}");
        }
        bail!("{} promise(s) broken", broken.len())
    }
}

async fn wait_results(
    bus: &Bus,
    ids: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, ExecutionResult>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut found = BTreeMap::new();
    while found.len() < ids.len() {
        for entry in bus.latest(keys::TRADE_EXECUTION_RESULT, 200).await? {
            let Ok(payload) = entry.payload else { continue };
            let Ok(result) = ExecutionResult::from_json(&payload) else {
                continue;
            };
            if ids.iter().any(|id| id == result.intent_id_str()) {
                found
                    .entry(result.intent_id_str().to_string())
                    .or_insert(result);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no result within {timeout:?} for {:?}",
                ids.iter()
                    .filter(|i| !found.contains_key(*i))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(found)
}

/// A tiny JSON client for the simulator's control API.
mod reqwest_like {
    use anyhow::Context;

    pub struct Client {
        base: String,
        http: reqwest::Client,
    }

    impl Client {
        pub fn new(base: String) -> Client {
            Client {
                base,
                http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(5))
                    .build()
                    .expect("HTTP client builds"),
            }
        }

        pub async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
            let reply = self
                .http
                .post(format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await
                .with_context(|| format!("POST {path}"))?;
            if !reply.status().is_success() {
                anyhow::bail!(
                    "POST {path} {body}: {}",
                    reply.text().await.unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}
