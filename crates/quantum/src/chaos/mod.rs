//! `quantum chaos`: a seeded chaos run of the whole system against ground truth.
//!
//! One run: the simulator in this process, a `redis-server` with append-only persistence, two
//! `quantum execution` processes and one `quantum exit-monitor` (children of this executable,
//! logs in the run directory). A [`scenario::Plan`] computed from the seed drives it: entries
//! published (valid intents with every kind of exit plan, duplicates, one id with two contents,
//! invalid and refused entries), prices pinned (a walk with spikes that cross every level),
//! faults switched on and off ([`faults`]), services killed with SIGKILL or SIGTERM and started
//! again ([`procs`]), Redis stopped and started once. Then the finale: faults lifted, everything
//! restarted, every entry answered, and final sweeps that move every price through every stop
//! until the book is flat. The truth is read ([`truth`]), the invariants checked ([`checks`]) and
//! a report printed ([`report`]); the run fails on any violation.
//!
//! Layout: `scenario` (PRNG, plan), `faults` (fault schedule), `procs` (process control),
//! `truth` (bus and exchange reads), `checks` (invariants), `report` (output); this file runs
//! the phases in order.

mod checks;
mod faults;
mod procs;
mod report;
mod scenario;
mod truth;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bus::{keys, Bus};
use model::Action;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use checks::{Published, SweepRecord};
use procs::{Launch, Redis, ServiceSpec, Services};
use scenario::{Body, EntryKind, Event, Market, Plan, Signal, SERVICES};

/// The symbols a run trades (BTCUSDT is left out: its 100 USDT minimum notional does not suit
/// the small sizes).
const SYMBOLS: [&str; 6] = [
    "AXSUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT",
];

const AFTER_HELP: &str = "\
What a run does:
  starts the simulator (in this process), a redis-server with append-only persistence, two
  `quantum execution` (exec-a, exec-b) and one `quantum exit-monitor`, each a child process of
  this executable with its log in the run directory; then plays the seeded schedule: entries
  (valid intents over six symbols, both sides, every kind of exit plan, duplicates, one id with
  two contents, invalid and refused documents), price pins (a walk with spikes of about 5 %),
  every fault knob of the simulator switched on and off, SIGKILL and SIGTERM of each service
  (restarted after a pause), one Redis stop and start. The same seed gives the same schedule
  (its fingerprint is printed; --dry-run prints the schedule itself).

  At the end it lifts the faults, starts what is down, waits until every entry is answered,
  sweeps every price through every stop (again if a position is left) until the book is flat,
  stops the services with SIGTERM, reads the exchange (orders, trades, positions, open orders
  and algo orders) and Redis (results, intents, dead letters) and checks: at most one order
  per intent; exactly one result per intent; bad input refused; every result agrees with the
  exchange (status, quantity, average price; fees separately); no fill without a price and
  quantity; every position flat after the sweeps and no order left open; exits reduce-only and
  once; no service ended unless killed, SIGTERM exits 0; no panic and no API secret in any log;
  the system settles in time.

Exit status: 0 when every invariant was checked and none is violated, 1 when one is violated
or could not be checked, 2 when the harness could not run.
The run directory (logs, schedule.txt, report.txt) is kept on failure, with --keep, or when
given with --run-dir.";

/// `quantum chaos` arguments.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct ChaosArgs {
    /// Seed of the scenario: entries, prices, faults, kills (the same seed replays the same schedule).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Entries to publish, all kinds together (valid, duplicate, invalid, refused).
    #[arg(long, default_value_t = 200)]
    pub intents: usize,
    /// Length of the scenario (publishing, faults, kills, prices), at least 45s, e.g. 90s [default: 300 ms per entry, at least 60s].
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// The services' --fill-timeout.
    #[arg(long, default_value = "10s")]
    pub fill_timeout: humantime::Duration,
    /// How long the finale may take to settle (every entry answered, the book flat) before the
    /// run counts as not settling.
    #[arg(long, default_value = "240s")]
    pub settle_timeout: humantime::Duration,
    /// Directory for logs, the schedule and the report [default: a new one under the temp dir].
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Keep the run directory even when the run passes.
    #[arg(long)]
    pub keep: bool,
    /// Print the schedule of the seed (and its fingerprint) and exit without running it.
    #[arg(long)]
    pub dry_run: bool,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Run the services from this quantum binary instead of this one (another build, e.g. an
    /// older commit, to see which seeds find its defects). It must take the same service
    /// options (`execution`/`exit-monitor` with --config, --redis-url, --rest-url, --ws-url,
    /// --fill-timeout, --consumer-name). The simulator and the checks stay this build's.
    #[arg(long, value_name = "PATH")]
    pub services_exe: Option<PathBuf>,
    /// The services' config file instead of the one the harness writes (claim_idle 15s,
    /// cancel_window 10s, tripwires off, reconcile_every 10s): your own settings, or a file an older build
    /// accepts. The command line still sets Redis, the simulator's URLs, the fill timeout and
    /// the consumer names.
    #[arg(long, value_name = "PATH")]
    pub services_config: Option<PathBuf>,
    /// Run on a hedge-mode account (dualSidePosition=true): a BUY opens LONG, a SELL opens SHORT,
    /// both sides of a symbol are held apart, a strategy's CLOSE names its side, and every check
    /// is made per side. The schedule (and its fingerprint) is the seed's, as in one-way mode.
    #[arg(long)]
    pub hedge: bool,
}

/// Runs `quantum chaos`: Ok(true) when every invariant held.
pub async fn run(args: ChaosArgs) -> anyhow::Result<bool> {
    if args.intents == 0 || args.intents > 1_000_000 {
        bail!("--intents must be between 1 and 1,000,000");
    }
    let epoch = Instant::now();
    let (run_dir, named) = match &args.run_dir {
        Some(dir) => {
            if dir.exists()
                && std::fs::read_dir(dir)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                bail!(
                    "--run-dir {} is not empty; give a new or empty directory",
                    dir.display()
                );
            }
            (dir.clone(), true)
        }
        None => (
            std::env::temp_dir().join(format!(
                "quantum-chaos-{}-{}-{}",
                args.seed,
                std::process::id(),
                service::clock::now_ms()
            )),
            false,
        ),
    };
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    init_logging(&run_dir.join("harness.log"))?;
    // The services, once started, so that an interruption or an error can stop them: the
    // process exits without running destructors.
    let started: Arc<Mutex<Started>> = Arc::default();
    // SIGTERM too (a `kill`, a CI timeout): without it the children outlived the harness.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let outcome = tokio::select! {
        outcome = run_in(&args, &run_dir, named, epoch, started.clone()) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
    };
    if outcome.is_err() {
        let mut started = started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(services) = started.services.take() {
            services.kill_all();
        }
        if let Some(redis) = started.redis.take() {
            redis.lock().unwrap_or_else(|e| e.into_inner()).stop();
        }
    }
    match outcome {
        Ok(passed) => {
            let keep = args.keep || named || !passed;
            if !keep {
                let _ = std::fs::remove_dir_all(&run_dir);
            }
            Ok(passed)
        }
        Err(e) => Err(e.context(format!("logs in {}", run_dir.display()))),
    }
}

/// The processes a run started, for the stop after an error or an interruption.
#[derive(Debug, Default)]
struct Started {
    services: Option<Services>,
    redis: Option<Arc<Mutex<Redis>>>,
}

/// The harness's own log (and the in-process simulator's) goes to a file of the run.
fn init_logging(path: &Path) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUANTUM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init();
    Ok(())
}

/// A line of progress on stdout.
fn say(epoch: Instant, text: &str) {
    outln!("[{:>6.1}s] {text}", epoch.elapsed().as_secs_f64());
    tracing::info!("chaos: {text}");
}

/// The simulator's control API.
#[derive(Debug, Clone)]
struct Control {
    http: reqwest::Client,
    base: String,
}

impl Control {
    async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let reply = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = reply.status();
        let value: Value = reply
            .json()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("POST {path} {body}: {status} {value}"));
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("GET {path}: {e}"))
    }

    async fn price(&self, symbol: &str, price: Decimal) -> Result<Value, String> {
        self.post(
            "/sim/v1/price",
            &json!({"symbol": symbol, "price": price.to_string()}),
        )
        .await
    }
}

/// What the scenario phase recorded.
#[derive(Debug, Default)]
struct Record {
    faults: BTreeMap<&'static str, usize>,
    fault_errors: usize,
    price_pins: usize,
    price_errors: usize,
    problems: Vec<String>,
}

async fn read_markets(rest: &binance::RestClient) -> anyhow::Result<Vec<Market>> {
    let mut markets = Vec::new();
    for symbol in SYMBOLS {
        let rules = rest
            .load_symbol_rules(symbol)
            .await
            .with_context(|| format!("rules of {symbol}"))?;
        let price = rest
            .premium_index(symbol)
            .await
            .with_context(|| format!("price of {symbol}"))?
            .mark_price;
        markets.push(Market {
            symbol: symbol.to_string(),
            start: price,
            tick: rules.price.tick_size,
            step: rules.market_lot.step_size,
        });
    }
    Ok(markets)
}

async fn run_in(
    args: &ChaosArgs,
    run_dir: &Path,
    named: bool,
    epoch: Instant,
    started: Arc<Mutex<Started>>,
) -> anyhow::Result<bool> {
    let api_key = simulator::DEFAULT_API_KEY;
    let api_secret = simulator::DEFAULT_API_SECRET;
    let sim = simulator::spawn(simulator::SimConfig {
        seed: args.seed,
        fill_delay: Duration::from_millis(faults::BASE_FILL_DELAY_MS),
        dual_side_position: args.hedge,
        ..simulator::SimConfig::default()
    })
    .await
    .context("cannot start the simulator")?;
    let rest = binance::RestClient::new(binance::Config::custom(
        &sim.base_url(),
        &sim.ws_url(),
        api_key,
        api_secret,
    )?)?;
    // Read at once: the simulator's prices start moving one tick (1 s) after start.
    let markets = read_markets(&rest).await?;
    let duration_ms = match args.duration {
        Some(d) => Duration::from(d).as_millis() as u64,
        None => (args.intents as u64 * 300).max(60_000),
    };
    if duration_ms < 45_000 {
        bail!("--duration must be at least 45s: the scenario holds a Redis restart, {} s without kills after it, and kills before and after", scenario::QUIET_AFTER_REDIS_MS / 1000);
    }
    let plan = Plan::generate(args.seed, args.intents, duration_ms, markets);
    std::fs::write(run_dir.join("schedule.txt"), plan.render())?;
    if args.dry_run {
        // Written, not printed: `| head` closing the pipe is no error.
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = write!(stdout, "{}", plan.render());
        let _ = writeln!(stdout, "schedule fingerprint {}", plan.fingerprint());
        sim.shutdown().await;
        if !named && !args.keep {
            let _ = std::fs::remove_dir_all(run_dir);
        }
        return Ok(true);
    }
    say(
        epoch,
        &format!(
            "quantum chaos: seed {} · {} entries over {:.0} s · schedule fingerprint {} · run dir {}",
            args.seed,
            plan.entries.len(),
            plan.duration_ms as f64 / 1000.0,
            plan.fingerprint(),
            run_dir.display()
        ),
    );
    let control = Control {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        base: sim.base_url(),
    };
    for m in &plan.markets {
        control
            .price(&m.symbol, m.price(10_000))
            .await
            .map_err(anyhow::Error::msg)?;
    }

    // Redis and the services.
    let mut redis = Redis::new(&args.redis_server, run_dir)?;
    redis.start()?;
    let redis_url = redis.url();
    let redis_log = redis.log().to_path_buf();
    let redis = Arc::new(Mutex::new(redis));
    started.lock().unwrap_or_else(|e| e.into_inner()).redis = Some(redis.clone());
    let config = run_dir.join("quantum.toml");
    match &args.services_config {
        Some(path) => {
            std::fs::copy(path, &config)
                .with_context(|| format!("cannot copy {}", path.display()))?;
        }
        None => std::fs::write(
            &config,
            // The tripwires are off: the harness injects failures on purpose, and a tripwire
            // would turn the rest of the run into closes only.
            "# written by quantum chaos\n[execution]\nclaim_idle = \"15s\"\ncancel_window = \"10s\"\ntripwire_failures = 0\ntripwire_stream_outage = \"0s\"\n\n[exit]\nreconcile_every = \"10s\"\n",
        )?,
    }
    let fill_timeout = Duration::from(args.fill_timeout);
    let launch = Launch {
        exe: match &args.services_exe {
            Some(path) => path.clone(),
            None => std::env::current_exe().context("cannot find this executable")?,
        },
        config,
        redis_url: redis_url.clone(),
        rest_url: sim.base_url(),
        ws_url: sim.ws_url(),
        fill_timeout: humantime::format_duration(fill_timeout).to_string(),
        api_key: api_key.to_string(),
        api_secret: api_secret.to_string(),
        // The execution service finishes what is in flight: fill_timeout + 15 s at most.
        term_grace: fill_timeout + Duration::from_secs(30),
    };
    let specs = vec![
        ServiceSpec {
            name: SERVICES[0],
            subcommand: "execution",
            ready_marker: "execution service reading",
        },
        ServiceSpec {
            name: SERVICES[1],
            subcommand: "execution",
            ready_marker: "execution service reading",
        },
        ServiceSpec {
            name: SERVICES[2],
            subcommand: "exit-monitor",
            ready_marker: "exit monitor reading",
        },
    ];
    let services = Services::new(launch, specs, run_dir, epoch);
    started.lock().unwrap_or_else(|e| e.into_inner()).services = Some(services.clone());
    services.start_all()?;
    let stop_watch = CancellationToken::new();
    let watcher = tokio::spawn(services.clone().watch(stop_watch.clone()));
    services
        .wait_ready(Duration::from_secs(60))
        .await
        .context("the services did not start")?;
    let bus = Bus::connect(&bus::Config {
        url: redis_url.clone(),
        ..bus::Config::default()
    })
    .await
    .context("cannot connect to the run's Redis")?;
    say(
        epoch,
        "simulator, redis and services are up; scenario starts",
    );

    // The scenario.
    let published: Arc<Mutex<Vec<Option<Published>>>> =
        Arc::new(Mutex::new(vec![None; plan.entries.len()]));
    let (publish_tx, publish_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    let publisher = tokio::spawn(publisher(
        redis_url.clone(),
        bus.clone(),
        publish_rx,
        published.clone(),
    ));
    let mut record = Record::default();
    let mut texts: Vec<Option<String>> = vec![None; plan.entries.len()];
    let redis_events: Arc<Mutex<Vec<String>>> = Arc::default();
    let redis_back: Arc<Mutex<Option<std::time::SystemTime>>> = Arc::default();
    let mut redis_task: Option<tokio::task::JoinHandle<()>> = None;
    let start = tokio::time::Instant::now();
    let mut next_progress = 10_000u64;
    for timed in &plan.events {
        tokio::time::sleep_until(start + Duration::from_millis(timed.at_ms)).await;
        if timed.at_ms >= next_progress {
            let sent = published
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .flatten()
                .count();
            say(
                epoch,
                &format!(
                    "scenario +{:.0} s: {sent}/{} entries published, {} faults injected, {} kills",
                    timed.at_ms as f64 / 1000.0,
                    plan.entries.len(),
                    record.faults.values().sum::<usize>(),
                    services.kills().len()
                ),
            );
            next_progress += 10_000;
        }
        match &timed.event {
            Event::Publish(n) => {
                let entry = &plan.entries[*n];
                let text = match &entry.body {
                    Body::Intent(draft) => {
                        let id = entry.id.clone().unwrap_or_default();
                        match draft.build(&id, service::clock::now_ms(), args.hedge) {
                            Ok(intent) => Some(intent.to_json().to_string()),
                            Err(e) => {
                                record
                                    .problems
                                    .push(format!("entry #{n} could not be built: {e}"));
                                None
                            }
                        }
                    }
                    Body::Raw(text) => Some(text.clone()),
                    Body::Same(of) => texts[*of].clone(),
                };
                if let Some(text) = text {
                    texts[*n] = Some(text.clone());
                    let _ = publish_tx.send((*n, text));
                }
            }
            Event::Price { market, bp } => {
                let m = &plan.markets[*market];
                match control.price(&m.symbol, m.price(*bp)).await {
                    Ok(_) => record.price_pins += 1,
                    Err(e) => {
                        record.price_errors += 1;
                        tracing::warn!("chaos: {e}");
                    }
                }
            }
            Event::Fault(step) => match control.post("/sim/v1/faults", &step.body).await {
                Ok(_) => {
                    if step.injects {
                        *record.faults.entry(step.knob.name()).or_default() += 1;
                    }
                    tracing::info!("chaos: fault {}", step.describe());
                }
                Err(e) => {
                    record.fault_errors += 1;
                    tracing::warn!("chaos: fault {}: {e}", step.describe());
                }
            },
            Event::Kill {
                service,
                signal,
                pause_ms,
            } => services.kill(*service, *signal, *pause_ms),
            Event::RedisRestart { pause_ms } => {
                let redis = redis.clone();
                let events = redis_events.clone();
                let back = redis_back.clone();
                let pause = *pause_ms;
                let at = epoch.elapsed().as_millis() as u64;
                tracing::info!("chaos: stopping redis for {pause} ms");
                redis_task = Some(tokio::task::spawn_blocking(move || {
                    let mut redis = redis.lock().unwrap_or_else(|e| e.into_inner());
                    let stopped = redis.stop();
                    std::thread::sleep(Duration::from_millis(pause));
                    let started = redis.start();
                    if started.is_ok() {
                        *back.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(std::time::SystemTime::now());
                    }
                    let line = format!(
                        "stopped at +{at} ms ({}), started again after {pause} ms{}",
                        stopped.map_or("was not running".to_string(), |s| s.to_string()),
                        match &started {
                            Ok(()) => String::new(),
                            Err(e) => format!(": START FAILED: {e:#}"),
                        }
                    );
                    tracing::info!("chaos: redis {line}");
                    events.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }));
            }
        }
    }
    tokio::time::sleep_until(start + Duration::from_millis(plan.duration_ms)).await;

    // The finale: faults lifted, everything back, every entry answered, sweeps until flat.
    say(
        epoch,
        "scenario done: lifting every fault, restarting what is down",
    );
    let unfired = match control.get("/sim/v1/faults").await {
        Ok(current) => faults::unfired(&current),
        Err(e) => {
            record.problems.push(format!("cannot read the faults: {e}"));
            BTreeMap::new()
        }
    };
    if let Err(e) = control
        .post("/sim/v1/faults", &json!({"reset": true, "lift_ban": true}))
        .await
    {
        record.problems.push(format!("cannot lift the faults: {e}"));
    }
    drop(publish_tx);
    let _ = publisher.await;
    if let Some(task) = redis_task.take() {
        let _ = task.await;
    }
    if !redis_up(&redis_url).await {
        let started = redis.lock().unwrap_or_else(|e| e.into_inner()).start();
        if let Err(e) = started {
            record
                .problems
                .push(format!("redis could not be started again: {e:#}"));
        }
    }
    // The harness's own connection may be one that never recovered from the Redis restart (the
    // services' connections are what the run tests): the finale reads on a new one.
    drop(bus);
    let bus = connect(&redis_url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the run's Redis after the scenario: {e}"))?;
    let settle_deadline = Instant::now() + Duration::from(args.settle_timeout);
    services.restart_down_now();
    // A service waiting out an exchange ban it saw (the simulator's is lifted, its memory of
    // it is not) starts reading only when the ban would have ended.
    if let Err(e) = services
        .wait_ready(Duration::from(args.settle_timeout) / 2)
        .await
    {
        record.problems.push(format!("after the scenario: {e:#}"));
    }
    let published_now: Vec<Option<Published>> =
        published.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let expected = expected_ids(&plan, &published_now);
    let answer_deadline =
        Instant::now() + settle_deadline.saturating_duration_since(Instant::now()) / 2;
    say(
        epoch,
        &format!(
            "waiting until every one of {} intents is answered",
            expected.len()
        ),
    );
    loop {
        match outstanding(&bus, &expected, None).await {
            Ok(()) => break,
            Err(what) if Instant::now() > answer_deadline => {
                say(
                    epoch,
                    &format!("not every intent is answered ({what}); sweeping anyway"),
                );
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let mut sweep = SweepRecord::default();
    let finale_start = Instant::now();
    let mut current: Vec<i64> = plan.path_end.clone();
    // The lowest and highest price pinned so far, per market (basis points).
    let mut reached: Vec<(i64, i64)> = plan.path_range.clone();
    for round in 1..=3u32 {
        let open = match truth::positions(&rest).await {
            Ok(open) => open,
            Err(e) => {
                sweep.settled = Err(format!("positions could not be read: {e}"));
                break;
            }
        };
        let open: BTreeMap<String, Decimal> = open
            .iter()
            .map(|p| (truth::position_name(p), p.position_amt))
            .collect();
        let held = |symbol: &str| open.keys().any(|k| truth::name_is_of(k, symbol));
        if round == 1 {
            sweep.open_at_first = open.clone();
            sweep.ran = true;
        } else {
            sweep.open_later.extend(open.clone());
        }
        let targets: Vec<(usize, i64, i64)> = plan
            .markets
            .iter()
            .enumerate()
            .filter(|(_, m)| round == 1 || held(&m.symbol))
            .map(|(i, _)| {
                if round == 1 {
                    let (lo, hi) = plan.path_range[i];
                    (i, hi * 106 / 100, lo * 94 / 100)
                } else {
                    // A position still open was opened, or adopted with the default plan, at a
                    // price pinned before (an earlier sweep's included): its levels lie within
                    // 3 % of some price in `reached`.
                    let (lo, hi) = reached[i];
                    (i, hi * 104 / 100, lo * 96 / 100)
                }
            })
            .collect();
        say(
            epoch,
            &format!(
                "final sweep {round}: {} open position(s) ({}); moving {} price(s) up past every level, then down",
                open.len(),
                open.iter()
                    .map(|(s, a)| format!("{s} {}", a.normalize()))
                    .collect::<Vec<_>>()
                    .join(", "),
                targets.len()
            ),
        );
        sweep.rounds = round;
        sweep_prices(&control, &plan.markets, &mut current, &targets, &mut record).await;
        // Each sweep went up to its high, then down to its low.
        for (i, hi, lo) in &targets {
            reached[*i] = (reached[*i].0.min(*lo), reached[*i].1.max(*hi));
        }
        let wait_until = (Instant::now() + Duration::from_secs(60)).min(settle_deadline);
        let mut last = String::new();
        let settled = loop {
            match outstanding(&bus, &expected, Some(&rest)).await {
                Ok(()) => break true,
                Err(what) => last = what,
            }
            if Instant::now() > wait_until {
                break false;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        if settled {
            sweep.settled = Ok(finale_start.elapsed().as_millis() as u64);
            break;
        }
        sweep.settled = Err(last.clone());
        say(epoch, &format!("not settled after sweep {round}: {last}"));
        if Instant::now() > settle_deadline {
            break;
        }
    }
    match &sweep.settled {
        Ok(ms) => say(
            epoch,
            &format!(
                "settled {:.1} s after the first final sweep began",
                *ms as f64 / 1000.0
            ),
        ),
        Err(what) => say(epoch, &format!("did not settle: {what}")),
    }

    // Stop the services (the monitor first, as `quantum run` does), then read the truth.
    say(epoch, "stopping the services with SIGTERM");
    services
        .stop_all(&[SERVICES[2], SERVICES[0], SERVICES[1]])
        .await;
    stop_watch.cancel();
    let _ = watcher.await;
    say(epoch, "reading the exchange and the bus");
    let bus_truth = truth::read_bus(&bus).await;
    let pager = truth::Pager::new(rest.clone(), &sim.base_url(), api_key, api_secret);
    let symbols: Vec<String> = plan.markets.iter().map(|m| m.symbol.clone()).collect();
    let exchange = truth::read_exchange(&rest, &pager, &symbols).await;
    let requests = control.get("/sim/v1/requests").await.ok();
    drop(bus);
    redis.lock().unwrap_or_else(|e| e.into_inner()).stop();
    sim.shutdown().await;

    // Checks and report.
    let service_logs = services.logs();
    let mut logs = service_logs.clone();
    logs.push(("harness".into(), run_dir.join("harness.log")));
    logs.push(("redis".into(), redis_log));
    let ended = services.ended();
    let start_errors = services.start_errors();
    let invariants = checks::run(&checks::Inputs {
        plan: &plan,
        published: &published_now,
        bus: &bus_truth,
        exchange: &exchange,
        ended: &ended,
        start_errors: &start_errors,
        sweep: &sweep,
        logs: &logs,
        service_logs: &service_logs,
        redis_back: *redis_back.lock().unwrap_or_else(|e| e.into_inner()),
        secret: api_secret,
    });
    // Unchecked is not passed: a run that could not look is no evidence.
    let passed = invariants
        .iter()
        .all(|i| i.violations.is_empty() && i.unchecked.is_empty());
    let summary = summarize(
        args,
        &plan,
        &published_now,
        &bus_truth,
        &record,
        unfired,
        &services,
        &redis_events.lock().unwrap_or_else(|e| e.into_inner()),
        &sweep,
        run_dir,
        args.keep || named || !passed,
        epoch,
    );
    let mut summary = summary;
    if let Some(r) = requests {
        let total: u64 = r
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| k.contains(' '))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        summary.exchange = format!(
            "{total} requests, {} of them POST /fapi/v1/order; answered 429: {}, 418: {}",
            r["POST /fapi/v1/order"].as_u64().unwrap_or(0),
            r["http_429"].as_u64().unwrap_or(0),
            r["http_418"].as_u64().unwrap_or(0)
        );
    }
    let text = report::render(&summary, &invariants, &logs);
    out!("{text}");
    std::fs::write(run_dir.join("report.txt"), &text)?;
    Ok(passed)
}

async fn redis_up(url: &str) -> bool {
    match Bus::connect(&bus::Config {
        url: url.to_string(),
        ..bus::Config::default()
    })
    .await
    {
        Ok(bus) => bus.ping().await.is_ok(),
        Err(_) => false,
    }
}

/// A new connection to the run's Redis (tried for up to 10 s).
async fn connect(url: &str) -> Result<Bus, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Bus::connect(&bus::Config {
            url: url.to_string(),
            ..bus::Config::default()
        })
        .await
        {
            Ok(bus) => return Ok(bus),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Publishes entries in order; a failed publish (Redis down) is retried for a minute, each time
/// on a new connection (a bus connection that sent a command while Redis was down may never
/// answer again).
async fn publisher(
    url: String,
    mut bus: Bus,
    mut entries: tokio::sync::mpsc::UnboundedReceiver<(usize, String)>,
    published: Arc<Mutex<Vec<Option<Published>>>>,
) {
    while let Some((n, text)) = entries.recv().await {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match bus.publish(keys::TRADE_INTENT, &text).await {
                Ok(entry_id) => {
                    published.lock().unwrap_or_else(|e| e.into_inner())[n] =
                        Some(Published { text, entry_id });
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(
                        "chaos: publishing entry #{n}: {e}; trying again on a new connection"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if let Ok(fresh) = connect(&url).await {
                        bus = fresh;
                    }
                }
                Err(e) => {
                    tracing::error!("chaos: entry #{n} not published: {e}");
                    break;
                }
            }
        }
    }
}

/// The intent ids that must have a result: every published valid, refused, duplicate or
/// conflicting entry's id.
fn expected_ids(plan: &Plan, published: &[Option<Published>]) -> BTreeSet<String> {
    plan.entries
        .iter()
        .zip(published)
        .filter(|(e, p)| {
            p.is_some()
                && matches!(
                    e.kind,
                    EntryKind::Valid
                        | EntryKind::Refused { .. }
                        | EntryKind::Duplicate { .. }
                        | EntryKind::Conflict { .. }
                )
        })
        .filter_map(|(e, _)| e.id.clone())
        .collect()
}

/// What keeps the run from being settled: intents without a result (entries and the exit
/// monitor's closes), entries pending or not yet read in a group, and, with `rest`, positions
/// not flat and open algo orders. Ok when nothing.
async fn outstanding(
    bus: &Bus,
    expected: &BTreeSet<String>,
    rest: Option<&binance::RestClient>,
) -> Result<(), String> {
    let mut out = Vec::new();
    let len = bus
        .len(keys::TRADE_EXECUTION_RESULT)
        .await
        .map_err(|e| format!("results unreadable: {e}"))?;
    let answered: BTreeSet<String> = bus
        .latest(keys::TRADE_EXECUTION_RESULT, len as usize + 100)
        .await
        .map_err(|e| format!("results unreadable: {e}"))?
        .into_iter()
        .filter_map(|e| e.payload.ok())
        .filter_map(|p| serde_json::from_str::<Value>(&p).ok())
        .filter_map(|v| v["intent_id"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !answered.contains(*id))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "{} intent(s) without a result (e.g. {})",
            missing.len(),
            missing
                .iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if rest.is_some() {
        let len = bus
            .len(keys::TRADE_INTENT)
            .await
            .map_err(|e| format!("intents unreadable: {e}"))?;
        let closes: Vec<String> = bus
            .latest(keys::TRADE_INTENT, len as usize + 100)
            .await
            .map_err(|e| format!("intents unreadable: {e}"))?
            .into_iter()
            .filter_map(|e| e.payload.ok())
            .filter_map(|p| model::TradeIntent::from_json(&p).ok())
            .filter(|i| i.action == Action::Close && i.source.as_deref() != Some("quantum-chaos"))
            .map(|i| i.intent_id.as_str().to_string())
            .filter(|id| !answered.contains(id))
            .collect();
        if !closes.is_empty() {
            out.push(format!(
                "{} close intent(s) without a result (e.g. {})",
                closes.len(),
                closes
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for (stream, group) in [
        (keys::TRADE_INTENT, "quantum-execution"),
        (keys::TRADE_EXECUTION_RESULT, "quantum-exit-monitor"),
    ] {
        match bus.group_info(stream).await {
            Ok(groups) => match groups.iter().find(|g| g.name == group) {
                Some(g) if g.pending > 0 || g.lag.unwrap_or(0) > 0 => out.push(format!(
                    "group {group}: {} pending, {} not yet read",
                    g.pending,
                    g.lag.map_or("?".into(), |l| l.to_string())
                )),
                Some(_) => {}
                None => out.push(format!("group {group} does not exist")),
            },
            Err(e) => out.push(format!("groups unreadable: {e}")),
        }
    }
    if let Some(rest) = rest {
        match truth::positions(rest).await {
            Ok(open) if !open.is_empty() => out.push(format!(
                "positions open: {}",
                open.iter()
                    .map(|p| format!("{} {}", truth::position_name(p), p.position_amt.normalize()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Ok(_) => {}
            Err(e) => out.push(format!("positions unreadable: {e}")),
        }
        match truth::open_algos(rest).await {
            Ok(algos) if !algos.is_empty() => out.push(format!(
                "{} algo order(s) open ({})",
                algos.len(),
                algos
                    .iter()
                    .take(4)
                    .map(|a| a.client_algo_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Ok(_) => {}
            Err(e) => out.push(format!("algo orders unreadable: {e}")),
        }
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out.join("; "))
    }
}

/// Moves the targets' prices up to their high in 4 steps, holds, down to their low in 8 steps,
/// holds; each step 1.2 s, so the monitor sees every level (mark price frames are sent on each
/// pin).
async fn sweep_prices(
    control: &Control,
    markets: &[Market],
    current: &mut [i64],
    targets: &[(usize, i64, i64)],
    record: &mut Record,
) {
    let pin = |m: usize, bp: i64| {
        let control = control.clone();
        let market = markets[m].clone();
        async move { control.price(&market.symbol, market.price(bp)).await }
    };
    let legs: [(usize, bool); 2] = [(4, true), (8, false)];
    for (steps, up) in legs {
        let from: Vec<i64> = targets.iter().map(|(m, _, _)| current[*m]).collect();
        for k in 1..=steps as i64 {
            for (t, (m, hi, lo)) in targets.iter().enumerate() {
                let to = if up { *hi } else { *lo };
                let bp = from[t] + (to - from[t]) * k / steps as i64;
                match pin(*m, bp).await {
                    Ok(_) => record.price_pins += 1,
                    Err(e) => {
                        record.price_errors += 1;
                        tracing::warn!("chaos: sweep: {e}");
                    }
                }
                current[*m] = bp;
            }
            tokio::time::sleep(Duration::from_millis(1_200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    args: &ChaosArgs,
    plan: &Plan,
    published: &[Option<Published>],
    bus: &Result<truth::BusTruth, String>,
    record: &Record,
    unfired: BTreeMap<&'static str, u64>,
    services: &Services,
    redis_events: &[String],
    sweep: &SweepRecord,
    run_dir: &Path,
    kept: bool,
    epoch: Instant,
) -> report::Summary {
    let mut s = report::Summary {
        seed: args.seed,
        hedge: args.hedge,
        fingerprint: plan.fingerprint(),
        duration_ms: plan.duration_ms,
        elapsed_ms: epoch.elapsed().as_millis() as u64,
        run_dir: run_dir.display().to_string(),
        kept,
        faults: record.faults.clone(),
        unfired,
        fault_errors: record.fault_errors,
        price_pins: record.price_pins,
        price_errors: record.price_errors,
        harness_problems: record.problems.clone(),
        redis: redis_events.to_vec(),
        ..report::Summary::default()
    };
    for (n, entry) in plan.entries.iter().enumerate() {
        let slot = s
            .entries_by_kind
            .entry(entry.kind.label().to_string())
            .or_default();
        slot.0 += 1;
        if published[n].is_some() {
            slot.1 += 1;
        } else {
            s.unpublished.push(format!(
                "#{n} {} {}",
                entry.kind.label(),
                entry.id.as_deref().unwrap_or("")
            ));
        }
    }
    match bus {
        Ok(b) => {
            for r in &b.results {
                *s.results_by_status.entry(r.status.clone()).or_default() += 1;
                if r.intent_id.starts_with("late-") {
                    s.late_results += 1;
                }
            }
            s.dead_letters = b.dead_letters.len();
            s.monitor_closes = b
                .intents
                .iter()
                .filter_map(|(_, t)| model::TradeIntent::from_json(t).ok())
                .filter(|i| {
                    i.action == Action::Close && i.source.as_deref() != Some("quantum-chaos")
                })
                .count();
        }
        Err(e) => s
            .harness_problems
            .push(format!("the bus could not be read: {e}")),
    }
    let kills = services.kills();
    for (name, starts) in services.starts() {
        let mine = kills.iter().filter(|k| k.service == name);
        let sent = |signal: Signal| {
            mine.clone()
                .filter(|k| k.sent && k.signal == signal)
                .count()
        };
        let skipped = mine.clone().filter(|k| !k.sent).count();
        s.kills.insert(
            name,
            (sent(Signal::Kill), sent(Signal::Term), skipped, starts),
        );
    }
    s.unexpected_exits = services
        .ended()
        .iter()
        .filter(|e| e.ordered.is_none())
        .count();
    s.sweep = match &sweep.settled {
        Ok(ms) => format!(
            "{} round(s), {} position(s) open at the first, settled after {:.1} s",
            sweep.rounds,
            sweep.open_at_first.len(),
            *ms as f64 / 1000.0
        ),
        Err(what) => format!(
            "{} round(s), {} position(s) open at the first, NOT settled: {what}",
            sweep.rounds,
            sweep.open_at_first.len()
        ),
    };
    s
}
