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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use binance::{
    NewOrder, OrderRef, ResponseType, RestClient, UserEvent, UserStream, UserStreamConfig,
};
use bus::{keys, Bus, Entry};
use engine::{risk, sizing, OrderPlan, Outcome, Report, ReportSource, Side, Tracker, TradeReport};
use model::{Action, ClientOrderId, ExecutionResult, ResultStatus, TradeIntent};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{ExecutionSettings, Settings};
use crate::metrics;
pub use crate::running::Running;

/// How long progress records live: far longer than any redelivery can come.
const PROGRESS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Intents worked on at once. Each mostly waits for its fill, so this bounds exchange load, not CPU.
const CONCURRENCY: usize = 8;
/// After the fill deadline, the cancel of what is left is tried again for this long (a cancel
/// refused by a rate limit is not an answer).
const SETTLE_WINDOW: Duration = Duration::from_secs(30);
/// Intents larger than this are refused unread (a real intent is a few hundred bytes).
const MAX_INTENT_BYTES: usize = 64 * 1024;
/// Reasons quoted in logs and results are cut to this many characters.
const MAX_REASON_CHARS: usize = 500;

/// `text` cut to `max` characters, saying how much was left out.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}... ({} bytes in all)", &text[..at], text.len()),
    }
}

/// Lookups of an ambiguous submit before concluding the order is not on the exchange.
const AMBIGUOUS_LOOKUPS: u32 = 4;

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
    #[error("exchange: {0}")]
    Exchange(#[from] binance::Error),
}

/// Milliseconds since the Unix epoch (the one clock read of the service).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The per-intent progress record kept on the bus: `working|<consumer>|<ms>` while an instance
/// works on the intent (refreshed as a heartbeat while it waits for the fill), then
/// `published|<consumer>|<status>|<order id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    Working { owner: String, at: i64 },
    Published,
}

impl Progress {
    fn working(consumer: &str) -> String {
        format!("working|{consumer}|{}", now_ms())
    }

    fn parse(text: &str) -> Progress {
        let mut parts = text.split('|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("published"), _, _) => Progress::Published,
            (Some("working"), Some(owner), Some(at)) => Progress::Working {
                owner: owner.to_string(),
                at: at.parse().unwrap_or(0),
            },
            // Unreadable records count as abandoned work, so the exchange is asked and the
            // intent finished rather than left hanging.
            _ => Progress::Working {
                owner: String::new(),
                at: 0,
            },
        }
    }
}

/// What the user-stream router hands an order waiting for its confirmation.
#[derive(Debug)]
enum Signal {
    Report(Report),
    /// The stream reconnected: events may have been missed, so ask REST now.
    Reconcile,
}

/// Routes user-stream events to the order they are about, by client order id.
#[derive(Debug, Default, Clone)]
struct Router {
    /// One std mutex: held only to look up or change the map, never across an await.
    waiters: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Signal>>>>,
    /// When the stream last connected or delivered an event (ms), and whether it is connected:
    /// the user-stream staleness gauges.
    last_event_ms: Arc<std::sync::atomic::AtomicI64>,
    connected: Arc<std::sync::atomic::AtomicBool>,
}

impl Router {
    fn register(&self, client_order_id: &str) -> mpsc::UnboundedReceiver<Signal> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(client_order_id.to_string(), tx);
        rx
    }

    fn unregister(&self, client_order_id: &str) {
        self.lock().remove(client_order_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Signal>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, client_order_id: &str, signal: Signal) {
        if let Some(tx) = self.lock().get(client_order_id) {
            let _ = tx.send(signal);
        }
    }

    fn reconcile_all(&self) {
        for tx in self.lock().values() {
            let _ = tx.send(Signal::Reconcile);
        }
    }

    /// Consumes the user stream until it ends.
    async fn run(self, mut events: mpsc::Receiver<UserEvent>) {
        use std::sync::atomic::Ordering;
        while let Some(event) = events.recv().await {
            self.last_event_ms.store(now_ms(), Ordering::Relaxed);
            match &event {
                UserEvent::Connected { .. } => self.connected.store(true, Ordering::Relaxed),
                UserEvent::Disconnected { .. } => self.connected.store(false, Ordering::Relaxed),
                _ => {}
            }
            match event {
                UserEvent::Connected { generation } => {
                    metrics::global().inc(
                        "quantum_user_stream_events_total",
                        &[("event", "connected")],
                    );
                    info!("user stream connected (generation {generation})");
                    if generation > 1 {
                        info!("user stream reconnected: reconciling in-flight orders over REST");
                        self.reconcile_all();
                    }
                }
                UserEvent::Disconnected { generation, reason } => {
                    metrics::global().inc(
                        "quantum_user_stream_events_total",
                        &[("event", "disconnected")],
                    );
                    warn!("user stream disconnected (generation {generation}): {reason}; in-flight orders fall back to REST polls");
                }
                UserEvent::OrderTradeUpdate(update) => {
                    let o = &update.order;
                    let Some(status) = model::OrderStatus::from_binance(o.status.as_str()) else {
                        warn!(
                            "ORDER_TRADE_UPDATE with unknown status {:?} for {}",
                            o.status.as_str(),
                            o.client_order_id
                        );
                        continue;
                    };
                    let trade =
                        (o.execution_type.as_str() == "TRADE" && o.trade_id > 0).then(|| {
                            TradeReport {
                                trade_id: o.trade_id,
                                qty: o.last_filled_qty,
                                price: o.last_filled_price,
                                commission: o.commission,
                                commission_asset: o.commission_asset.clone(),
                                time: o.trade_time,
                            }
                        });
                    let report = Report {
                        source: ReportSource::UserStream,
                        order_id: o.order_id,
                        status,
                        cumulative_qty: o.cumulative_filled_qty,
                        avg_price: o.avg_price,
                        trade,
                        time: update.transaction_time,
                    };
                    self.send(&o.client_order_id, Signal::Report(report));
                }
                UserEvent::TradeLite(lite) => {
                    // TRADE_LITE carries the fill but not the order's status; the fill counts
                    // (deduplicated by trade id) and the status comes from the other reports.
                    let report = Report {
                        source: ReportSource::UserStream,
                        order_id: lite.order_id,
                        status: model::OrderStatus::PartiallyFilled,
                        cumulative_qty: Decimal::ZERO,
                        avg_price: Decimal::ZERO,
                        trade: Some(TradeReport {
                            trade_id: lite.trade_id,
                            qty: lite.last_filled_qty,
                            price: lite.last_filled_price,
                            commission: None,
                            commission_asset: None,
                            time: lite.transaction_time,
                        }),
                        time: lite.transaction_time,
                    };
                    self.send(&lite.client_order_id, Signal::Report(report));
                }
                UserEvent::AccountUpdate(_) | UserEvent::AlgoUpdate(_) => {}
            }
        }
    }
}

fn report_from_order(source: ReportSource, order: &binance::Order) -> Option<Report> {
    let status = model::OrderStatus::from_binance(order.status.as_str())?;
    Some(Report {
        source,
        order_id: order.order_id,
        status,
        cumulative_qty: order.executed_qty,
        avg_price: order.avg_price,
        trade: None,
        time: order.update_time,
    })
}

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
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Executor::new(rest, bus, settings).run(shutdown.clone()));
    Ok(Running::new(crate::health::EXECUTION, shutdown, task))
}

/// The execution service's shared parts.
#[derive(Debug, Clone)]
pub struct Executor {
    rest: RestClient,
    bus: Bus,
    settings: Arc<Settings>,
    router: Router,
    /// Leverage last set per symbol, so it is only changed when an intent asks for another.
    leverage: Arc<Mutex<HashMap<String, u32>>>,
    /// Bus entries this process is working on. A periodic claim can hand this consumer its own
    /// long-running entries back; those are skipped, not started twice.
    in_flight: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Executor {
    pub fn new(rest: RestClient, bus: Bus, settings: Settings) -> Executor {
        Executor {
            rest,
            bus,
            settings: Arc::new(settings),
            router: Router::default(),
            leverage: Arc::new(Mutex::new(HashMap::new())),
            in_flight: Arc::new(Mutex::new(std::collections::HashSet::new())),
        }
    }

    fn exec(&self) -> &ExecutionSettings {
        &self.settings.execution
    }

    /// Runs until `shutdown` is cancelled; then stops reading intents and lets those in flight
    /// finish (each is bounded by the fill timeout).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let group = self.exec().consumer_group.clone();
        let consumer = self.exec().consumer_name.clone();
        metrics::register_execution();
        self.bus.ensure_group(keys::TRADE_INTENT, &group).await?;
        if !crate::startup::exchange_ready(&self.rest, &shutdown, "execution service").await? {
            return Ok(());
        }
        let (stream, events) = UserStream::spawn(self.rest.clone(), UserStreamConfig::default());
        let router_task = tokio::spawn(self.router.clone().run(events));
        let gauges_task = tokio::spawn(self.clone().export_gauges());

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
                    let id = entry.id.clone();
                    executor.handle(entry).await;
                    executor
                        .in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
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
        stream.shutdown().await;
        router_task.abort();
        gauges_task.abort();
        Ok(())
    }

    /// Every second: the request weight used this minute and the user stream's state, as gauges
    /// (they are levels, not events, so they are sampled rather than counted).
    async fn export_gauges(self) {
        use std::sync::atomic::Ordering;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let m = metrics::global();
            metrics::export_weight(&self.rest, "execution");
            let connected = self.router.connected.load(Ordering::Relaxed);
            m.set(
                "quantum_user_stream_connected",
                &[],
                if connected { 1.0 } else { 0.0 },
            );
            let last = self.router.last_event_ms.load(Ordering::Relaxed);
            if last > 0 {
                m.set(
                    "quantum_user_stream_last_event_age_seconds",
                    &[],
                    (now_ms() - last).max(0) as f64 / 1000.0,
                );
            }
        }
    }

    /// One bus entry, start to ack. Bus errors leave the entry pending (it is retried).
    async fn handle(&self, entry: Entry) {
        if let Err(e) = self.handle_inner(&entry).await {
            error!("intent entry {}: {e}; left pending for a retry", entry.id);
        }
    }

    async fn handle_inner(&self, entry: &Entry) -> Result<(), bus::Error> {
        metrics::global().inc("quantum_intents_received_total", &[]);
        let raw = match &entry.payload {
            Ok(raw) if raw.len() > MAX_INTENT_BYTES => {
                // Refused without being validated, and not copied into the log or the result
                // (only its id is read, so the sender can match the refusal).
                let reason = format!(
                    "intent payload of {} bytes is larger than the {MAX_INTENT_BYTES} allowed; refused",
                    raw.len()
                );
                return self.reject_input(entry, raw, &reason).await;
            }
            Ok(raw) => raw.clone(),
            Err(malformed) => {
                let reason = format!("bad intent entry: {}", malformed.describe());
                return self.reject_input(entry, "", &reason).await;
            }
        };
        let intent = match TradeIntent::from_json(&raw) {
            Ok(intent) => intent,
            Err(e) => {
                return self
                    .reject_input(entry, &raw, &format!("invalid intent: {e}"))
                    .await
            }
        };
        let key = keys::progress(intent.intent_id.as_str());
        let me = self.exec().consumer_name.clone();
        // Two entries of one intent in this process: the second waits for the first's result.
        let intent_key = format!("intent:{}", intent.intent_id);
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(intent_key.clone())
        {
            return self
                .wait_for_result(&intent, entry, &key, "this instance")
                .await;
        }
        let outcome = self.work_on(entry, &intent, &key, &me).await;
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&intent_key);
        outcome
    }

    async fn work_on(
        &self,
        entry: &Entry,
        intent: &TradeIntent,
        key: &str,
        me: &str,
    ) -> Result<(), bus::Error> {
        let group = &self.exec().consumer_group;
        let me = me.to_string();
        let state = self.bus.progress_get(key).await?;
        // Never worked on by anyone and delivered once: no order can exist for it, so none is
        // looked up (one exchange request less per intent). A redelivery, a claim, or an intent
        // with a progress record is always looked up first.
        let fresh = state.is_none() && entry.deliveries <= 1;
        let digest_key = format!("{key}:digest");
        if state.is_some() {
            // Seen before: the same intent redelivered, or another one reusing its id?
            if let Some(digest) = self.bus.progress_get(&digest_key).await? {
                if digest != intent.fingerprint() {
                    let reason = format!(
                        "intent_id {} was already used by an intent with different content; this one is not executed (the first one's result stands)",
                        intent.intent_id
                    );
                    warn!("intent entry {} refused: {reason}", entry.id);
                    self.bus
                        .dead_letter(keys::TRADE_INTENT, entry, &reason)
                        .await?;
                    metrics::global().inc(
                        "quantum_dead_letters_total",
                        &[("stream", keys::TRADE_INTENT)],
                    );
                    self.bus.ack(keys::TRADE_INTENT, group, &entry.id).await?;
                    return Ok(());
                }
            }
        }
        match state.as_deref().map(Progress::parse) {
            Some(Progress::Published) => {
                info!(
                    "intent {} already has its result; acking the duplicate entry {}",
                    intent.intent_id, entry.id
                );
                self.bus.ack(keys::TRADE_INTENT, group, &entry.id).await?;
                return Ok(());
            }
            Some(Progress::Working { owner, at })
                if owner != me && now_ms() - at < self.claim_idle_ms() =>
            {
                // Another instance is alive and working on this intent (its heartbeat is fresh).
                self.wait_for_result(intent, entry, key, &owner).await?;
                return Ok(());
            }
            Some(Progress::Working { owner, .. }) => {
                info!(
                    "intent {} was left unfinished by {owner} (delivery {}); taking it over and asking the exchange first",
                    intent.intent_id, entry.deliveries
                );
                self.bus
                    .progress_set(key, &Progress::working(&me), PROGRESS_TTL)
                    .await?;
            }
            None => {
                if !self
                    .bus
                    .progress_set_if_absent(key, &Progress::working(&me), PROGRESS_TTL)
                    .await?
                {
                    // Another entry with the same intent got there first, an instant ago.
                    self.wait_for_result(intent, entry, key, "another entry")
                        .await?;
                    return Ok(());
                }
                self.bus
                    .progress_set(&digest_key, &intent.fingerprint(), PROGRESS_TTL)
                    .await?;
                // Never worked on: too old to execute? (Once worked on, an order may exist, so a
                // redelivery is always looked up and finished, whatever its age.)
                if let Some(reason) = self.too_old(intent, entry, now_ms()) {
                    warn!("intent {} expired: {reason}", intent.intent_id);
                    let result = ExecutionResult::without_fill(
                        intent,
                        None,
                        ResultStatus::Expired,
                        None,
                        reason,
                        now_ms(),
                    );
                    return self.finish(entry, key, &me, &result).await;
                }
            }
        }
        info!(
            "intent {} received: {} {} size_usd={} qty={} leverage={}",
            intent.intent_id,
            intent.action.as_str(),
            intent.symbol,
            intent
                .position_size_usd
                .map_or("-".into(), |d| d.to_string()),
            intent.quantity.map_or("-".into(), |d| d.to_string()),
            intent.leverage.map_or("-".into(), |l| l.to_string()),
        );
        let result = self.execute(intent, key, fresh).await;
        if result.status == ResultStatus::Rejected && result.order_id.is_none() {
            self.bus
                .dead_letter(
                    keys::TRADE_INTENT,
                    entry,
                    result.error.as_deref().unwrap_or("rejected"),
                )
                .await?;
            metrics::global().inc(
                "quantum_dead_letters_total",
                &[("stream", keys::TRADE_INTENT)],
            );
        }
        self.finish(entry, key, &me, &result).await
    }

    /// Publishes the intent's result, marks it published and acks its entry.
    async fn finish(
        &self,
        entry: &Entry,
        key: &str,
        me: &str,
        result: &ExecutionResult,
    ) -> Result<(), bus::Error> {
        let done = format!(
            "published|{}|{}|{}",
            me,
            result.status.as_str(),
            result.order_id.map_or(String::new(), |id| id.to_string())
        );
        // The result and the record that says it was published go together (one transaction):
        // a crash or a Redis restart between them cannot leave a result whose intent would be
        // executed and published again.
        self.publish(result, Some((key, &done))).await?;
        self.bus
            .ack(keys::TRADE_INTENT, &self.exec().consumer_group, &entry.id)
            .await?;
        Ok(())
    }

    /// Why the intent is too old to execute at `now`, if it is: past its own `expires_at`, or
    /// older than `max_age` by its `created_at` (else by when it was published).
    fn too_old(&self, intent: &TradeIntent, entry: &Entry, now: i64) -> Option<String> {
        if let Some(expires_at) = intent.expires_at.filter(|t| now > *t) {
            return Some(format!(
                "its expires_at {expires_at} passed {} ms ago; nothing was sent",
                now - expires_at
            ));
        }
        let max_age = i64::try_from(self.exec().max_age.as_millis()).unwrap_or(i64::MAX);
        if max_age == 0 {
            return None;
        }
        let (born, by) = match intent.created_at {
            Some(t) => (t, "created_at"),
            None => (entry.published_ms()?, "its publication on the stream"),
        };
        let age = now.saturating_sub(born);
        (age > max_age).then(|| {
            format!("it is {age} ms old by {by}, more than execution.max_age ({max_age} ms); nothing was sent")
        })
    }

    fn claim_idle_ms(&self) -> i64 {
        i64::try_from(self.exec().claim_idle.as_millis()).unwrap_or(i64::MAX)
    }

    /// A duplicate of an intent someone else is working on: wait for its result rather than
    /// trading twice, then ack this entry.
    async fn wait_for_result(
        &self,
        intent: &TradeIntent,
        entry: &Entry,
        key: &str,
        owner: &str,
    ) -> Result<(), bus::Error> {
        warn!(
            "intent {} is already in progress ({owner}); entry {} is a duplicate, waiting for its result",
            intent.intent_id, entry.id
        );
        let deadline =
            tokio::time::Instant::now() + self.exec().fill_timeout + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if matches!(
                self.bus
                    .progress_get(key)
                    .await?
                    .as_deref()
                    .map(Progress::parse),
                Some(Progress::Published)
            ) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.bus
            .ack(keys::TRADE_INTENT, &self.exec().consumer_group, &entry.id)
            .await?;
        Ok(())
    }

    async fn reject_input(&self, entry: &Entry, raw: &str, reason: &str) -> Result<(), bus::Error> {
        // A reason quotes the value at fault, which may be huge: the log and the result get the
        // start of it (the dead letter keeps the entry whole).
        let reason = clip(reason, MAX_REASON_CHARS);
        let reason = reason.as_str();
        warn!("intent entry {} rejected: {reason}", entry.id);
        self.bus
            .dead_letter(keys::TRADE_INTENT, entry, reason)
            .await?;
        metrics::global().inc(
            "quantum_dead_letters_total",
            &[("stream", keys::TRADE_INTENT)],
        );
        self.publish(
            &ExecutionResult::rejected_input(raw, reason, now_ms()),
            None,
        )
        .await?;
        self.bus
            .ack(keys::TRADE_INTENT, &self.exec().consumer_group, &entry.id)
            .await?;
        Ok(())
    }

    /// Publishes a result; with `progress`, sets that progress record in the same transaction.
    async fn publish(
        &self,
        result: &ExecutionResult,
        progress: Option<(&str, &str)>,
    ) -> Result<(), bus::Error> {
        let mut result = result.clone();
        result.published_at = now_ms();
        let payload = result.to_json().to_string();
        match progress {
            Some((key, value)) => {
                self.bus
                    .publish_and_set(
                        keys::TRADE_EXECUTION_RESULT,
                        &payload,
                        key,
                        value,
                        PROGRESS_TTL,
                    )
                    .await?
            }
            None => {
                self.bus
                    .publish(keys::TRADE_EXECUTION_RESULT, &payload)
                    .await?
            }
        };
        metrics::global().inc(
            "quantum_results_total",
            &[("status", result.status.as_str())],
        );
        debug!(
            "result for intent {} published: {}",
            result.intent_id,
            result.status.as_str()
        );
        Ok(())
    }

    /// Works one valid intent to its result.
    async fn execute(
        &self,
        intent: &TradeIntent,
        progress_key: &str,
        fresh: bool,
    ) -> ExecutionResult {
        let coid = ClientOrderId::for_intent(&intent.intent_id);
        let symbol = intent.symbol.as_str();
        let reject = |code: Option<i64>, reason: String| {
            warn!("intent {} rejected: {reason}", intent.intent_id);
            ExecutionResult::without_fill(
                intent,
                Some(&coid),
                ResultStatus::Rejected,
                code,
                reason,
                now_ms(),
            )
        };
        let rules = match self.rest.load_symbol_rules(symbol).await {
            Ok(rules) => rules,
            Err(binance::Error::InvalidRequest(_)) => {
                return reject(
                    None,
                    format!("unknown symbol {symbol}: not listed on the exchange"),
                )
            }
            Err(e) => {
                return self.failed(
                    intent,
                    &coid,
                    format!("cannot load the rules of {symbol}: {e}"),
                )
            }
        };
        if rules.status != "TRADING" {
            return reject(
                None,
                format!("{symbol} is not trading (status {})", rules.status),
            );
        }
        // Waiting starts before anything is sent, so a fill reported before the reply is not lost.
        let mut signals = self.router.register(coid.as_str());
        let result = self
            .execute_registered(intent, &coid, &rules, &mut signals, progress_key, fresh)
            .await;
        self.router.unregister(coid.as_str());
        result
    }

    async fn execute_registered(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        rules: &binance::SymbolRules,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
        progress_key: &str,
        fresh: bool,
    ) -> ExecutionResult {
        let symbol = intent.symbol.as_str();
        let mut tracker = Tracker::new();
        let reject = |code: Option<i64>, reason: String| {
            warn!("intent {} rejected: {reason}", intent.intent_id);
            ExecutionResult::without_fill(
                intent,
                Some(coid),
                ResultStatus::Rejected,
                code,
                reason,
                now_ms(),
            )
        };
        // A redelivered intent, or one with a progress record, may already have its order.
        let existing = match if fresh {
            Ok(None)
        } else {
            self.rest
                .find_order(symbol, &OrderRef::ClientOrderId(coid.to_string()))
                .await
        } {
            Ok(found) => found,
            Err(e) => {
                return self.failed(
                    intent,
                    coid,
                    format!("cannot check for an existing order {coid}: {e}"),
                )
            }
        };
        let order_sent_at;
        if let Some(order) = existing {
            info!(
                "order for intent {} already exists: orderId={} clientOrderId={coid} status={}; confirming it instead of placing another",
                intent.intent_id,
                order.order_id,
                order.status.as_str()
            );
            order_sent_at = order.time.unwrap_or(order.update_time);
            if let Some(report) = report_from_order(ReportSource::RestPoll, &order) {
                let _ = tracker.apply(&report);
            }
        } else {
            let plan = match self.plan(intent, coid, rules).await {
                Ok(plan) => plan,
                Err(result) => return *result,
            };
            let approved = match risk::check(intent, plan, &self.settings.risk) {
                Ok(approved) => approved,
                Err(refused) => return reject(None, format!("risk check: {refused}")),
            };
            if let Some(result) = self.set_leverage(intent, coid, approved.get()).await {
                return result;
            }
            if let Err(e) = self
                .bus
                .progress_set(
                    progress_key,
                    &Progress::working(&self.exec().consumer_name),
                    PROGRESS_TTL,
                )
                .await
            {
                return self.failed(
                    intent,
                    coid,
                    format!("cannot record progress before placing: {e}"),
                );
            }
            order_sent_at = now_ms();
            match self
                .place(intent, approved, &mut tracker, progress_key)
                .await
            {
                Ok(()) => {}
                Err(result) => return *result,
            }
        }
        self.confirm(intent, coid, tracker, signals, order_sent_at, progress_key)
            .await
    }

    /// Sizes the order.
    async fn plan(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        rules: &binance::SymbolRules,
    ) -> Result<OrderPlan, Box<ExecutionResult>> {
        let symbol = intent.symbol.as_str();
        let reject = |reason: String| {
            warn!("intent {} rejected: {reason}", intent.intent_id);
            Box::new(ExecutionResult::without_fill(
                intent,
                Some(coid),
                ResultStatus::Rejected,
                None,
                reason,
                now_ms(),
            ))
        };
        let mark = match self.rest.premium_index(symbol).await {
            Ok(p) => p.mark_price,
            Err(e) => {
                return Err(Box::new(self.failed(
                    intent,
                    coid,
                    format!("cannot read the mark price of {symbol}: {e}"),
                )))
            }
        };
        let sizing_rules = sizing::SymbolRules {
            step_size: rules.market_lot.step_size,
            min_qty: rules.market_lot.min_qty,
            max_qty: if rules.market_lot.max_qty.is_zero() {
                Decimal::MAX
            } else {
                rules.market_lot.max_qty
            },
            min_notional: rules.min_notional.unwrap_or(Decimal::ZERO),
        };
        // An exit plan that cannot protect the position is refused now, against the mark price,
        // rather than discovered after the fill (a long's stop above the price, ...).
        if intent.action != Action::Close && !intent.exit_plan.is_empty() {
            let direction = if intent.action == Action::Buy {
                engine::exits::Direction::Long
            } else {
                engine::exits::Direction::Short
            };
            if let Err(e) = engine::exits::Levels::resolve(direction, mark, &intent.exit_plan) {
                return Err(reject(format!("exit plan at mark price {mark}: {e}")));
            }
        }
        let (side, quantity, reduce_only) = match intent.action {
            Action::Buy | Action::Sell => {
                let qty = sizing::size_order(
                    intent.position_size_usd,
                    intent.quantity,
                    mark,
                    &sizing_rules,
                )
                .map_err(|e| reject(format!("sizing: {e}")))?;
                let side = if intent.action == Action::Buy {
                    Side::Buy
                } else {
                    Side::Sell
                };
                (side, qty, false)
            }
            Action::Close => {
                let positions = match self.rest.position_risk(Some(symbol)).await {
                    Ok(p) => p,
                    Err(e) => {
                        return Err(Box::new(self.failed(
                            intent,
                            coid,
                            format!("cannot read the position of {symbol}: {e}"),
                        )))
                    }
                };
                let amount: Decimal = positions
                    .iter()
                    .filter(|p| p.symbol == symbol)
                    .map(|p| p.position_amt)
                    .sum();
                let qty = sizing::size_close(intent.quantity, amount, &sizing_rules)
                    .map_err(|e| reject(format!("close: {e}")))?;
                let side = if amount > Decimal::ZERO {
                    Side::Sell
                } else {
                    Side::Buy
                };
                (side, qty, true)
            }
        };
        Ok(OrderPlan {
            symbol: intent.symbol.clone(),
            side,
            quantity,
            reduce_only,
            client_order_id: coid.clone(),
            leverage: intent.leverage,
            mark_price: mark,
        })
    }

    async fn set_leverage(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        plan: &OrderPlan,
    ) -> Option<ExecutionResult> {
        let wanted = plan.leverage?;
        let symbol = plan.symbol.as_str();
        let known = self
            .leverage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(symbol)
            .copied();
        if known == Some(wanted) {
            return None;
        }
        match self.rest.change_leverage(symbol, wanted).await {
            Ok(_) => {
                info!("leverage of {symbol} set to {wanted}");
                self.leverage
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(symbol.to_string(), wanted);
                None
            }
            Err(e) if e.is_rejected() => {
                let reason = format!("leverage {wanted} refused by the exchange: {e}");
                warn!("intent {} rejected: {reason}", intent.intent_id);
                Some(ExecutionResult::without_fill(
                    intent,
                    Some(coid),
                    ResultStatus::Rejected,
                    e.code(),
                    reason,
                    now_ms(),
                ))
            }
            Err(e) => Some(self.failed(
                intent,
                coid,
                format!("cannot set leverage of {symbol}: {e}"),
            )),
        }
    }

    /// Tells other instances this intent is still being worked on (its progress record's
    /// heartbeat), during every wait.
    async fn heartbeat(&self, progress_key: &str, intent: &TradeIntent) {
        if let Err(e) = self
            .bus
            .progress_set(
                progress_key,
                &Progress::working(&self.exec().consumer_name),
                PROGRESS_TTL,
            )
            .await
        {
            warn!(
                "cannot refresh the progress of intent {}: {e}",
                intent.intent_id
            );
        }
    }

    /// Places the approved order. An ambiguous submit is looked up, never blindly sent again.
    async fn place(
        &self,
        intent: &TradeIntent,
        approved: risk::RiskApproved<OrderPlan>,
        tracker: &mut Tracker,
        progress_key: &str,
    ) -> Result<(), Box<ExecutionResult>> {
        let plan = approved.into_inner();
        let symbol = plan.symbol.as_str();
        let side = match plan.side {
            Side::Buy => binance::Side::Buy,
            Side::Sell => binance::Side::Sell,
        };
        let order = NewOrder::market(symbol, side, plan.quantity, plan.client_order_id.as_str())
            .reduce_only(plan.reduce_only)
            .response_type(ResponseType::Result);
        let coid = &plan.client_order_id;
        let mut sends = 0;
        let mut transient: u32 = 0;
        loop {
            sends += 1;
            match self.rest.place_order(&order).await {
                Ok(reply) => {
                    metrics::global().inc("quantum_orders_placed_total", &[]);
                    info!(
                        "order placed {symbol} {} qty={} reduceOnly={} status={} orderId={} clientOrderId={coid}",
                        plan.side.as_str(),
                        plan.quantity,
                        plan.reduce_only,
                        reply.status.as_str(),
                        reply.order_id
                    );
                    if let Some(report) = report_from_order(ReportSource::ResultReply, &reply) {
                        if let Err(e) = tracker.apply(&report) {
                            error!("order {coid}: contradictory reply {e}");
                        }
                    }
                    return Ok(());
                }
                Err(e) if e.is_ambiguous() => {
                    warn!("order submit for intent {} ambiguous ({e}); looking up clientOrderId={coid} before anything else", intent.intent_id);
                    if let binance::Error::Ambiguous {
                        body: Some(body), ..
                    } = &e
                    {
                        warn!("raw reply of the ambiguous submit: {body}");
                    }
                    // Only a definite "does not exist" counts as absence, and only when the
                    // last AMBIGUOUS_LOOKUPS answers all said so: a lookup that failed (429, a
                    // timeout) proves nothing, and resending on it is how an intent became two
                    // filled orders. Failed lookups are asked again until the fill timeout.
                    let give_up = tokio::time::Instant::now() + self.exec().fill_timeout;
                    let mut absent = 0u32;
                    let mut attempt = 0u32;
                    while absent < AMBIGUOUS_LOOKUPS {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt.min(8))))
                            .await;
                        self.heartbeat(progress_key, intent).await;
                        match self
                            .rest
                            .find_order(symbol, &OrderRef::ClientOrderId(coid.to_string()))
                            .await
                        {
                            Ok(Some(found)) => {
                                metrics::global().inc(
                                    "quantum_ambiguous_submits_total",
                                    &[("resolution", "found")],
                                );
                                info!(
                                    "ambiguous submit resolved: the order exists, orderId={} status={} clientOrderId={coid}",
                                    found.order_id,
                                    found.status.as_str()
                                );
                                if let Some(report) =
                                    report_from_order(ReportSource::RestPoll, &found)
                                {
                                    let _ = tracker.apply(&report);
                                }
                                return Ok(());
                            }
                            Ok(None) => {
                                absent += 1;
                                debug!(
                                    "lookup {attempt}: clientOrderId={coid} not on the exchange ({absent} definite answers in a row)"
                                );
                            }
                            Err(e) => {
                                absent = 0;
                                warn!("lookup {attempt} of clientOrderId={coid} failed: {e}; a failed lookup proves nothing, asking again");
                                if tokio::time::Instant::now() >= give_up {
                                    metrics::global().inc(
                                        "quantum_ambiguous_submits_total",
                                        &[("resolution", "unresolved")],
                                    );
                                    return Err(Box::new(self.failed(
                                        intent,
                                        coid,
                                        format!("OUTCOME UNKNOWN: the order submit was ambiguous and clientOrderId={coid} could not be looked up within {:?} (last: {e}); the order may exist and may have filled, so it is not sent again; check with `quantum order`", self.exec().fill_timeout),
                                    )));
                                }
                            }
                        }
                    }
                    if sends >= 2 {
                        metrics::global().inc(
                            "quantum_ambiguous_submits_total",
                            &[("resolution", "unresolved")],
                        );
                        return Err(Box::new(self.failed(
                            intent,
                            coid,
                            format!("order submit ambiguous twice and clientOrderId={coid} not found; not sending a third time"),
                        )));
                    }
                    metrics::global().inc(
                        "quantum_ambiguous_submits_total",
                        &[("resolution", "resent")],
                    );
                    warn!("ambiguous submit resolved: clientOrderId={coid} is not on the exchange after {AMBIGUOUS_LOOKUPS} lookups; sending it once more with the same id");
                }
                Err(e) if e.is_rejected() => {
                    let reason = format!("order rejected by the exchange: {e}");
                    warn!("intent {} rejected: {reason}", intent.intent_id);
                    return Err(Box::new(ExecutionResult::without_fill(
                        intent,
                        Some(coid),
                        ResultStatus::Rejected,
                        e.code(),
                        reason,
                        now_ms(),
                    )));
                }
                Err(e) if e.is_transient() && transient < 3 => {
                    transient += 1;
                    let wait = e
                        .retry_after()
                        .unwrap_or(Duration::from_millis(500 * u64::from(transient)));
                    warn!("order submit for intent {} refused for now ({e}); nothing was executed, retrying in {wait:?}", intent.intent_id);
                    self.heartbeat(progress_key, intent).await;
                    tokio::time::sleep(wait).await;
                    self.heartbeat(progress_key, intent).await;
                }
                Err(e) => {
                    return Err(Box::new(self.failed(
                        intent,
                        coid,
                        format!("order not placed: {e}"),
                    )));
                }
            }
        }
    }

    /// Waits for the exchange to confirm the outcome; at the deadline cancels what is left.
    async fn confirm(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        mut tracker: Tracker,
        signals: &mut mpsc::UnboundedReceiver<Signal>,
        order_sent_at: i64,
        progress_key: &str,
    ) -> ExecutionResult {
        let symbol = intent.symbol.as_str();
        let lookup = OrderRef::ClientOrderId(coid.to_string());
        let deadline = tokio::time::Instant::now() + self.exec().fill_timeout;
        let mut poll = tokio::time::interval(self.exec().poll_interval);
        poll.tick().await;
        let mut deadline_cancel = false;
        while tracker.outcome(false).is_none() {
            tokio::select! {
                // Reports first: a confirmation already in hand beats a poll or the deadline.
                biased;
                signal = signals.recv() => match signal {
                    Some(Signal::Report(report)) => {
                        if let Err(e) = tracker.apply(&report) {
                            error!("order {coid}: contradictory report from the user stream: {e}");
                        }
                    }
                    Some(Signal::Reconcile) => self.poll_order(symbol, &lookup, &mut tracker).await,
                    None => {}
                },
                _ = poll.tick() => {
                    self.poll_order(symbol, &lookup, &mut tracker).await;
                    self.heartbeat(progress_key, intent).await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(
                        "order {coid} not confirmed within {:?} (status {:?}, executed {}); cancelling what is left",
                        self.exec().fill_timeout, tracker.status(), tracker.executed_qty()
                    );
                    // Cancel what is left and keep at it until the order is final: a cancel
                    // refused by a rate limit or a network error is not an answer, and what
                    // was filled meanwhile must be reported, not lost.
                    let settle_until = tokio::time::Instant::now() + SETTLE_WINDOW;
                    let mut delay = Duration::from_millis(500);
                    loop {
                        match self.rest.cancel_order(symbol, &lookup).await {
                            Ok(order) => {
                                deadline_cancel = true;
                                if let Some(report) = report_from_order(ReportSource::RestPoll, &order) {
                                    let _ = tracker.apply(&report);
                                }
                            }
                            Err(e) if e.is_not_found() => info!("cancel of {coid}: not open any more ({e}); asking for its final state"),
                            Err(e) => error!("cancel of {coid} failed: {e}; {} confirmed filled so far; trying again", tracker.executed_qty()),
                        }
                        self.poll_order(symbol, &lookup, &mut tracker).await;
                        if tracker.status().is_final() || tokio::time::Instant::now() >= settle_until {
                            break;
                        }
                        self.heartbeat(progress_key, intent).await;
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    break;
                }
            }
        }
        let Some(outcome) = tracker.outcome(deadline_cancel) else {
            let reason = format!(
                "OUTCOME UNKNOWN: order {coid} still {:?} after the deadline and {SETTLE_WINDOW:?} of cancel attempts, with {} confirmed filled so far; check it with `quantum order --client-id {coid}`",
                tracker.status(),
                tracker.executed_qty()
            );
            error!("{reason}");
            return self.failed(intent, coid, reason);
        };
        self.build_result(intent, coid, outcome, order_sent_at)
            .await
    }

    async fn poll_order(&self, symbol: &str, lookup: &OrderRef, tracker: &mut Tracker) {
        match self.rest.find_order(symbol, lookup).await {
            Ok(Some(order)) => {
                if let Some(report) = report_from_order(ReportSource::RestPoll, &order) {
                    if let Err(e) = tracker.apply(&report) {
                        error!(
                            "order {}: contradictory REST report: {e}",
                            order.client_order_id
                        );
                    }
                }
            }
            Ok(None) => debug!("poll: order {lookup:?} not found yet"),
            Err(e) => warn!("poll of order {lookup:?} failed: {e}"),
        }
    }

    async fn build_result(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        mut outcome: Outcome,
        order_sent_at: i64,
    ) -> ExecutionResult {
        let symbol = intent.symbol.as_str();
        if outcome.status.has_fill() && outcome.commission.is_none() {
            // The confirming report had no per-fill fees (REST or RESULT reply): ask for the trades.
            match self.rest.user_trades(symbol, Some(outcome.order_id)).await {
                Ok(trades) if !trades.is_empty() => {
                    outcome.commission = Some(trades.iter().map(|t| t.commission).sum());
                    outcome.commission_asset = trades[0].commission_asset.clone();
                }
                Ok(_) => warn!(
                    "no trades listed yet for order {}; commission reported as 0",
                    outcome.order_id
                ),
                Err(e) => warn!(
                    "cannot read the trades of order {}: {e}; commission reported as 0",
                    outcome.order_id
                ),
            }
        }
        let elapsed = now_ms() - order_sent_at;
        if outcome.status.has_fill() {
            metrics::global().observe(
                "quantum_fill_confirm_seconds",
                &[("confirmed_by", outcome.confirmed_by.as_str())],
                elapsed.max(0) as f64 / 1000.0,
            );
            let execution = model::Execution {
                order_id: outcome.order_id,
                avg_price: outcome.avg_price,
                executed_qty: outcome.executed_qty,
                commission: outcome.commission.unwrap_or(Decimal::ZERO),
                commission_asset: outcome.commission_asset.clone(),
                filled_at: outcome.final_time,
            };
            match ExecutionResult::with_fill(
                intent,
                coid,
                outcome.status,
                &execution,
                outcome.confirmed_by,
                order_sent_at,
                now_ms(),
            ) {
                Ok(result) => {
                    let word = if outcome.status == ResultStatus::Filled {
                        "FILLED"
                    } else {
                        "PARTIALLY FILLED (rest cancelled or expired)"
                    };
                    info!(
                        "order {word} {symbol} avgPrice={} qty={} notional={} orderId={} clientOrderId={coid}, confirmed by {} after {elapsed} ms",
                        outcome.avg_price.normalize(),
                        outcome.executed_qty.normalize(),
                        result.position_size_usd.normalize(),
                        outcome.order_id,
                        outcome.confirmed_by.as_str()
                    );
                    result
                }
                Err(e) => self.failed(
                    intent,
                    coid,
                    format!("exchange report does not hold up: {e}"),
                ),
            }
        } else {
            let reason = match outcome.status {
                ResultStatus::Timeout => format!(
                    "no fill confirmed within {:?}; the order was cancelled with nothing filled",
                    self.exec().fill_timeout
                ),
                ResultStatus::Canceled => "the order was cancelled with nothing filled".to_string(),
                ResultStatus::Expired => "the order expired with nothing filled".to_string(),
                ResultStatus::Rejected => "the exchange rejected the order".to_string(),
                _ => "the exchange reported a fill with no quantity; not reporting it as a fill"
                    .to_string(),
            };
            warn!(
                "order {coid} for intent {}: {} — {reason} (orderId={}, after {elapsed} ms)",
                intent.intent_id,
                outcome.status.as_str(),
                outcome.order_id
            );
            let mut result = ExecutionResult::without_fill(
                intent,
                Some(coid),
                outcome.status,
                None,
                reason,
                now_ms(),
            );
            result.order_id = Some(outcome.order_id);
            result.order_sent_at = Some(order_sent_at);
            result
        }
    }

    fn failed(
        &self,
        intent: &TradeIntent,
        coid: &ClientOrderId,
        reason: String,
    ) -> ExecutionResult {
        error!("intent {} failed: {reason}", intent.intent_id);
        ExecutionResult::without_fill(
            intent,
            Some(coid),
            ResultStatus::Failed,
            None,
            reason,
            now_ms(),
        )
    }
}
