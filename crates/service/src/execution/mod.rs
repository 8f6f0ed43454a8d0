//! The execution service: reads trade intents from the bus, places each as one order on the
//! exchange, waits until the exchange confirms the outcome, and publishes exactly one execution
//! result per intent. The order of work for one intent:
//!
//! validate → claim the intent (progress key) → look the order up by its client order id (a
//! redelivered intent must not trade twice) → size → risk gate → leverage → place with
//! `newOrderRespType=RESULT` → confirm from whichever report comes first (the reply, the user
//! stream, a REST poll) → at the deadline cancel what is left and ask once more → publish → ack.
//!
//! An ambiguous submit (timeout, dropped connection, 503 "Unknown error", -1006, -1007) is never
//! sent again blindly: the order is looked up by client order id first, and only an order that
//! several lookups in a row definitely did not find ("does not exist", not a failed lookup) is
//! sent once more, with the same id. Lookups that fail are asked again until the fill timeout;
//! then the result is `failed` with OUTCOME UNKNOWN, never a resend.
//!
//! Layout: this file holds the service's task (reading intents, claiming stale ones, back-pressure
//! and shutdown); [`intake`] takes one bus entry from validation to its ack; [`progress`] is the
//! per-intent progress record's format; [`reports`] maps what the exchange says (replies, user
//! stream events, REST polls) onto the engine's reports; [`placement`] sizes, checks and places
//! the order with the ambiguity policy; [`confirmation`] waits for the outcome; [`results`] turns
//! an outcome into the published result; [`venue`] is the seam to the exchange (every request
//! per intent, in the engine's terms); [`account`] keeps what the streams say (mark prices,
//! leverage, positions) so that those requests are few.

mod account;
mod confirmation;
mod intake;
mod placement;
mod progress;
mod reports;
mod results;
mod venue;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use binance::{
    MarketStream, MarketStreamConfig, RestClient, UserStream, UserStreamConfig,
    ALL_MARK_PRICES_STREAM,
};
use bus::{keys, Bus};
use model::{Action, TradeIntent};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::now_ms;
use crate::config::{ExecutionSettings, Settings};
pub use crate::error::ServiceError;
use crate::metrics;
pub use crate::running::Running;

use reports::Router;

/// Intents worked on at once. Each mostly waits for its fill, so this bounds exchange load, not CPU.
const CONCURRENCY: usize = 8;

/// How long an order whose state the exchange cannot tell us now (a 429/418 ban, timeouts) is
/// waited for, heartbeat refreshed, before its result says OUTCOME UNKNOWN: longer than
/// Binance's first 418 ban (2 minutes). Applies to the lookup of a redelivered intent's order,
/// to the lookups after an ambiguous submit, and to the cancel at the fill deadline. Before,
/// these gave up after the fill timeout, and chaos runs found filled orders reported `failed`
/// because a ban outlasted it.
pub(super) const OUTCOME_PATIENCE: Duration = Duration::from_secs(5 * 60);

/// Connects to the exchange and the bus described by `settings` and starts the execution
/// service in a task.
pub async fn start(settings: Settings) -> Result<Running, ServiceError> {
    let bus = Bus::connect(&settings.bus_config()).await?;
    start_with_bus(settings, bus).await
}

/// Starts the execution service on a given bus (the in-process one for `quantum run
/// --in-process-bus` and demos).
pub async fn start_with_bus(settings: Settings, bus: Bus) -> Result<Running, ServiceError> {
    let rest = RestClient::new(settings.binance_config()?)?;
    crate::rate_budget::share(&rest, &bus);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Executor::new(rest, bus, settings).run(shutdown.clone()));
    Ok(Running::new(crate::health::EXECUTION, shutdown, task))
}

/// Marks a bus entry (or an intent id) as worked on by this process until dropped.
struct InFlight(Arc<Mutex<std::collections::HashSet<String>>>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// The execution service's shared parts.
#[derive(Debug, Clone)]
pub struct Executor {
    /// For the streams, the start-up checks and the weight gauges; per-intent requests go
    /// through `venue`.
    rest: RestClient,
    venue: venue::Venue,
    bus: Bus,
    settings: Arc<Settings>,
    router: Router,
    /// Mark prices, leverage and positions as the streams tell them (see `account`).
    account: account::AccountView,
    /// Bus entries this process is working on. A periodic claim can hand this consumer its own
    /// long-running entries back; those are skipped, not started twice.
    in_flight: Arc<Mutex<std::collections::HashSet<String>>>,
    /// The operator's trading state (`quantum halt` / `resume`), read before each order.
    gate: crate::control::TradingGate,
    /// Symbols with an order of this service working, for the dead-man switch.
    dead_man: crate::dead_man::DeadMan,
    /// The `failures` tripwire's count.
    failures: Arc<Mutex<crate::tripwire::WindowCount>>,
    /// The account's position mode, read at start (Binance refuses a change while a position or
    /// an order is open) and again when an order is refused for not matching it (-4061).
    hedge: Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled when the service stops: an intent still waiting to send its order (held back
    /// by the rate budget) gives up and stays pending for the next start.
    stop: CancellationToken,
}

impl Executor {
    pub fn new(rest: RestClient, bus: Bus, settings: Settings) -> Executor {
        let account = account::AccountView::default();
        let floor = if settings.risk.kill_switch {
            model::TradingState::Reducing
        } else {
            model::TradingState::Active
        };
        Executor {
            gate: crate::control::TradingGate::new(bus.clone(), floor),
            dead_man: crate::dead_man::DeadMan::default(),
            failures: Arc::new(Mutex::new(crate::tripwire::WindowCount::new(
                settings.execution.tripwire_failures,
                settings.execution.tripwire_window,
            ))),
            venue: venue::Venue::new(rest.clone()),
            rest,
            bus,
            settings: Arc::new(settings),
            router: Router {
                account: account.clone(),
                ..Router::default()
            },
            account,
            in_flight: Arc::new(Mutex::new(std::collections::HashSet::new())),
            hedge: Arc::default(),
            stop: CancellationToken::new(),
        }
    }

    fn exec(&self) -> &ExecutionSettings {
        &self.settings.execution
    }

    /// Whether the account is in hedge mode (as last read).
    fn hedge_mode(&self) -> bool {
        self.hedge.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reads the account's position mode, retrying until it is known or the service stops:
    /// sending orders in the wrong mode would have every one of them refused (-4061).
    async fn read_position_mode(&self, shutdown: &CancellationToken) {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.venue.hedge_mode().await {
                Ok(hedge) => {
                    let was = self.hedge.swap(hedge, std::sync::atomic::Ordering::AcqRel);
                    if hedge {
                        info!("the account is in hedge mode: BUY opens LONG, SELL opens SHORT, a CLOSE names its position_side");
                    } else if was {
                        warn!("the account is back in one-way mode");
                    } else {
                        info!("the account is in one-way mode");
                    }
                    return;
                }
                Err(e) => {
                    warn!("cannot read the position mode ({e}); retrying in {delay:?}");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// The intent as it is executed on this account: on a hedge-mode account a BUY or SELL
    /// names the side it opens (so its result says it) and a CLOSE must name the side it
    /// closes; on a one-way account no side may be named. `Err` is the reason it cannot run here.
    fn for_account(&self, mut intent: TradeIntent) -> Result<TradeIntent, String> {
        match (self.hedge_mode(), intent.position_side, intent.action) {
            (false, Some(side), _) => Err(format!(
                "position_side {side} is for hedge mode, and the account is in one-way mode (dualSidePosition=false); leave it out"
            )),
            (false, None, _) => Ok(intent),
            (true, None, Action::Close) => Err(
                "the account is in hedge mode: a CLOSE must name position_side LONG or SHORT".into(),
            ),
            (true, _, _) => {
                intent.position_side = intent.hedge_side();
                Ok(intent)
            }
        }
    }

    /// Runs until `shutdown` is cancelled; then stops reading intents and lets those in flight
    /// finish (each is bounded by the fill timeout).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        self.stop = shutdown.clone();
        let group = self.exec().consumer_group.clone();
        let consumer = self.exec().consumer_name.clone();
        metrics::register_execution();
        self.bus.ensure_group(keys::TRADE_INTENT, &group).await?;
        // Says the trading state at start (and sets its gauge) before any intent is read.
        self.gate.refresh().await;
        let Some(snapshot) =
            crate::startup::exchange_ready(&self.rest, &shutdown, "execution service").await?
        else {
            return Ok(());
        };
        self.account.seed(&snapshot);
        self.read_position_mode(&shutdown).await;
        let ws_api = if self.exec().order_transport == crate::config::OrderTransport::WebSocket {
            let client =
                binance::WsApiClient::spawn(self.settings.ws_api_config()?, self.rest.clone());
            info!(
                "orders go over the WebSocket API ({}), REST when it is down",
                self.settings.exchange.ws_api_url
            );
            self.venue = self.venue.clone().with_ws_api(client.clone());
            Some(client)
        } else {
            None
        };
        let (stream, events) = UserStream::spawn(self.rest.clone(), UserStreamConfig::default());
        let router_task = tokio::spawn(self.router.clone().run(events));
        // Every symbol's mark price once a second, for sizing without a request per intent.
        let (marks, mark_events) = MarketStream::spawn(
            self.settings.binance_config()?.ws_url,
            [ALL_MARK_PRICES_STREAM.to_string()],
            MarketStreamConfig::default(),
        );
        let marks_task = tokio::spawn(account::follow_marks(self.account.clone(), mark_events));
        let gauges_task = tokio::spawn(self.clone().export_gauges());
        // The dead-man switch stops with the intents: after them, so it covers the orders still
        // working during the shutdown's grace, and it disarms what it armed.
        let dead_man_stop = CancellationToken::new();
        let countdown = self.exec().dead_man_countdown;
        let dead_man_task = (!countdown.is_zero()).then(|| {
            tokio::spawn(crate::dead_man::run(
                self.dead_man.clone(),
                self.rest.clone(),
                countdown,
                dead_man_stop.clone(),
            ))
        });
        // If this task is killed (aborted, as a crash would end it), the heartbeat dies with it:
        // its countdowns then run out and cancel what was left working, which is its purpose.
        let _heartbeat_dies_with_us = dead_man_task
            .as_ref()
            .map(|t| AbortOnDrop(t.abort_handle()));

        let limit = Arc::new(Semaphore::new(CONCURRENCY));
        let mut tasks = JoinSet::new();
        // Intents this consumer held when it stopped, then those other consumers left behind.
        let mut backlog = self
            .bus
            .pending_for(keys::TRADE_INTENT, &group, &consumer)
            .await?;
        let claimed = self
            .bus
            .claim_stale(
                keys::TRADE_INTENT,
                &group,
                &consumer,
                self.exec().claim_idle,
                1000,
            )
            .await?;
        if !backlog.is_empty() || !claimed.is_empty() {
            info!(
                "resuming {} pending and {} claimed intents",
                backlog.len(),
                claimed.len()
            );
        }
        backlog.extend(claimed);
        info!(
            "execution service reading {} as {group}/{consumer}",
            keys::TRADE_INTENT
        );
        let mut failures = 0u32;
        // Entries another consumer died on are claimed while running too, not only at start:
        // otherwise a crashed instance's intents would wait for a restart of a surviving one.
        let claim_every = self.exec().claim_idle.max(Duration::from_millis(100));
        let mut next_claim = tokio::time::Instant::now() + claim_every;
        loop {
            // A read in flight is never dropped (an XREADGROUP that was sent has delivered its
            // entries to this consumer, whether anyone waits for the reply or not): the stop and
            // the claims are looked at between reads, and a read blocks for at most a second.
            if shutdown.is_cancelled() {
                break;
            }
            let entries = if !backlog.is_empty() {
                std::mem::take(&mut backlog)
            } else if tokio::time::Instant::now() >= next_claim {
                next_claim = tokio::time::Instant::now() + claim_every;
                match self
                    .bus
                    .claim_stale(
                        keys::TRADE_INTENT,
                        &group,
                        &consumer,
                        self.exec().claim_idle,
                        100,
                    )
                    .await
                {
                    Ok(claimed) if !claimed.is_empty() => {
                        info!(
                            "claimed {} intents left idle by another consumer",
                            claimed.len()
                        );
                        claimed
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        warn!("cannot claim stale intents: {e}");
                        continue;
                    }
                }
            } else {
                match self
                    .bus
                    .read(
                        keys::TRADE_INTENT,
                        &group,
                        &consumer,
                        CONCURRENCY,
                        Duration::from_secs(1),
                    )
                    .await
                {
                    Ok(entries) => {
                        failures = 0;
                        entries
                    }
                    Err(bus::Error::NoGroup { .. }) => {
                        warn!(
                            "consumer group {group} is gone (Redis restarted?); creating it again"
                        );
                        self.bus.ensure_group(keys::TRADE_INTENT, &group).await.ok();
                        continue;
                    }
                    Err(e) => {
                        failures += 1;
                        let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                        error!("cannot read intents: {e}; retrying in {wait:?}");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        continue;
                    }
                }
            };
            if shutdown.is_cancelled() && !entries.is_empty() {
                // Received while stopping: not started here. Handed back (still pending, but
                // claimable at once by any other instance; this one resumes them on its start).
                let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
                info!(
                    "stopping: {} intents received after the stop are handed back, not started ({})",
                    ids.len(),
                    ids.join(", ")
                );
                if let Err(e) = self.bus.release(keys::TRADE_INTENT, &group, &ids).await {
                    warn!(
                        "cannot hand back {}: {e}; they stay pending on {consumer}",
                        ids.join(", ")
                    );
                }
                break;
            }
            for entry in entries {
                if !self
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(entry.id.clone())
                {
                    debug!(
                        "entry {} is already being worked on here; not starting it twice",
                        entry.id
                    );
                    continue;
                }
                let permit = limit
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed");
                let executor = self.clone();
                tasks.spawn(async move {
                    // Removed however the task ends, a panic included: an entry left marked
                    // would never be started again by this process.
                    let _working = InFlight(executor.in_flight.clone(), entry.id.clone());
                    executor.handle(entry).await;
                    drop(permit);
                });
            }
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    error!("an intent task ended abnormally: {e}");
                }
            }
        }
        info!(
            "shutting down: no new intents; waiting for {} in flight",
            tasks.len()
        );
        let grace = self.exec().fill_timeout + Duration::from_secs(15);
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            error!("intents still in flight after {grace:?}; they stay pending and are resumed on the next start");
        }
        dead_man_stop.cancel();
        if let Some(task) = dead_man_task {
            // Let it disarm (the guard above aborts only a task that is still running when this
            // function is dropped, i.e. killed).
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                warn!("the dead-man switch did not disarm within 5 s; its countdowns run out on their own");
            }
        }
        if let Some(client) = ws_api {
            client.shutdown();
        }
        stream.shutdown().await;
        marks.shutdown().await;
        marks_task.abort();
        router_task.abort();
        gauges_task.abort();
        Ok(())
    }

    /// Every second: the request weight used this minute and the user stream's state, as gauges
    /// (they are levels, not events, so they are sampled rather than counted).
    async fn export_gauges(self) {
        use std::sync::atomic::Ordering;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The `user-stream` tripwire: since when the stream has been down (tripped once per
        // outage).
        let mut down_since: Option<tokio::time::Instant> = None;
        let mut tripped = false;
        let outage = self.exec().tripwire_stream_outage;
        loop {
            tick.tick().await;
            let m = metrics::global();
            metrics::export_rest(&self.rest, metrics::Client::Execution);
            let connected = self.router.connected.load(Ordering::Relaxed);
            if connected {
                down_since = None;
                tripped = false;
            } else {
                let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
                if !outage.is_zero() && !tripped && since.elapsed() >= outage {
                    tripped = true;
                    let reason = format!(
                        "the user data stream has been down for {} s",
                        since.elapsed().as_secs()
                    );
                    crate::tripwire::trip(&self.bus, "user-stream", &reason).await;
                }
            }
            m.user_stream_connected.get().set(i64::from(connected));
            // An intent whose order has been in the works this long is stuck (an order left
            // NEW, a ban waited out, lookups that get no answer): the `QuantumStuckOrder` alert.
            let oldest = self
                .dead_man
                .oldest(std::time::Instant::now())
                .unwrap_or_default();
            m.oldest_working_order_seconds
                .get()
                .set(oldest.as_secs_f64());
            let last = self.router.last_event_ms.load(Ordering::Relaxed);
            if last > 0 {
                m.user_stream_last_event_age_seconds
                    .get()
                    .set((now_ms() - last).max(0) as f64 / 1000.0);
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
