//! The exit monitor's I/O shell around the decision core (`engine::monitor::Core`): it turns
//! what arrives (execution results from the bus, mark prices, the user stream's ACCOUNT_UPDATE
//! and ALGO_UPDATE, the outcomes of its own requests, a 250 ms timer) into events, applies each
//! to the core, and runs the commands that come out. Exchange and bus requests run in their own
//! tasks and come back as events, so a slow REST call never delays a tick of another symbol,
//! and price frames are taken before results, so a backlog of results never starves ticks.
//!
//! Closes are CLOSE intents on the intent stream, so they pass the same risk gate and
//! confirmation as any order. Every result it cannot use is logged as an ERROR naming it and the
//! reason, copied to the dead-letter stream, counted, and acked: never a silent drop. The book is
//! persisted incrementally (only what changed) by a writer task, and a result entry is acked
//! only once what it changed is written. On start, the book is rebuilt from what was saved, the
//! results waiting on the bus are read in before positions are read (so a position is never
//! adopted and tracked from its result twice), and protection is re-asserted for every symbol.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use binance::{
    mark_price_stream, MarketEvent, MarketStream, MarketStreamConfig, RestClient, UserEvent,
    UserStream, UserStreamConfig, ALL_MARK_PRICES_STREAM,
};
use bus::{keys, Bus, Entry};
use engine::monitor::{AlarmKind, Book, Command, Config, Core, Event, Note, PlanSource, Position};
use model::{
    Direction, EventKind, ExecutionResult, IntentId, PositionEvent, PositionSide, ProtectionEvent,
    Symbol, TradeIntent,
};
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::clock::now_ms;
use crate::config::Settings;
use crate::error::ServiceError;
use crate::metrics;
use crate::monitor_state::{self, Changes};
use crate::protection;
use crate::running::Running;

/// Counters the monitor keeps (exported as metrics too).
#[derive(Debug, Default)]
pub struct Counters {
    pub invalid_results: AtomicU64,
    pub lots_opened: AtomicU64,
    pub closes_sent: AtomicU64,
    pub lots_closed: AtomicU64,
    pub alarms: AtomicU64,
}

/// Connects and starts the exit monitor in a task.
pub async fn start(settings: Settings) -> Result<(Running, Arc<Counters>), ServiceError> {
    let bus = Bus::connect(&settings.bus_config()).await?;
    start_with_bus(settings, bus).await
}

/// Starts the exit monitor on a given bus (the in-process one for `quantum run --in-process-bus`).
pub async fn start_with_bus(
    settings: Settings,
    bus: Bus,
) -> Result<(Running, Arc<Counters>), ServiceError> {
    let rest = RestClient::new(settings.binance_config()?)?;
    crate::rate_budget::share(&rest, &bus);
    let shutdown = CancellationToken::new();
    let counters = Arc::new(Counters::default());
    let monitor = Monitor {
        rest,
        bus,
        settings: Arc::new(settings),
        counters: counters.clone(),
    };
    let task = tokio::spawn(monitor.run(shutdown.clone()));
    Ok((
        Running::new(crate::health::EXIT_MONITOR, shutdown, task),
        counters,
    ))
}

/// Publishes protective orders placed or cancelled, in a task of its own (a protection request
/// never waits for Redis), patiently (see [`publish_patiently`]).
fn publish_protection(bus: &Bus, events: Vec<ProtectionEvent>) {
    if events.is_empty() {
        return;
    }
    let bus = bus.clone();
    tokio::spawn(async move {
        for event in events {
            publish_patiently(
                &bus,
                keys::PROTECTION_EVENTS,
                event.to_json(),
                "protection event",
            )
            .await;
        }
    });
}

/// How long an event for the journal is retried while Redis is away (a restart takes seconds).
const EVENT_PATIENCE: Duration = Duration::from_secs(600);

/// Publishes one event for the journal, retrying with backoff for [`EVENT_PATIENCE`] while the
/// bus is away (a Redis restart must not lose an exit from the history); what is still not
/// published then is an ERROR that holds the event. A publish that timed out may have landed:
/// the retry then writes it twice, which the journal's keys make harmless.
async fn publish_patiently(bus: &Bus, stream: &str, payload: String, what: &str) {
    let give_up = tokio::time::Instant::now() + EVENT_PATIENCE;
    let mut delay = Duration::from_millis(200);
    let mut failures = 0u32;
    loop {
        match bus.publish(stream, &payload).await {
            Ok(_) => {
                if failures > 0 {
                    info!("{what} published on {stream} after {failures} failed attempts");
                }
                return;
            }
            Err(e) if tokio::time::Instant::now() + delay < give_up => {
                failures += 1;
                if failures == 1 {
                    warn!("cannot publish a {what} on {stream} ({e}); retrying until it lands");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                error!(
                    "cannot publish a {what} on {stream} ({e}) for {EVENT_PATIENCE:?}; the journal will miss it: {payload}"
                );
                return;
            }
        }
    }
}

/// The bus event of a note about a lot's life (opened, adopted, closed, exited); `None` for
/// the others.
fn position_event(note: &Note, at: i64) -> Option<PositionEvent> {
    let event = |kind, lot: &engine::monitor::Lot, qty| PositionEvent {
        kind,
        lot_id: lot.id.clone(),
        symbol: lot.symbol.clone(),
        position_side: lot.side,
        direction: match lot.direction {
            engine::exits::Direction::Long => Direction::Long,
            engine::exits::Direction::Short => Direction::Short,
        },
        qty,
        entry_price: lot.entry,
        opened_at: lot.opened_at,
        at,
        reason: None,
        why: None,
        exit_price: None,
        realized_pnl: None,
        fees: None,
    };
    match note {
        Note::Opened { lot, .. } => Some(event(EventKind::Opened, lot, lot.qty)),
        Note::Adopted { lot } => Some(event(EventKind::Adopted, lot, lot.qty)),
        Note::Closed {
            lot,
            exit_price,
            exit_qty,
            realized_pnl,
            fees,
            trigger,
            ..
        } => Some(PositionEvent {
            reason: Some(engine::monitor::exit_reason(trigger.as_ref())),
            exit_price: Some(*exit_price),
            realized_pnl: *realized_pnl,
            fees: Some(*fees),
            ..event(EventKind::Closed, lot, *exit_qty)
        }),
        Note::Exited {
            qty,
            why,
            exit_price,
            realized_pnl,
            held,
            reason,
            fees,
            ..
        } => Some(PositionEvent {
            reason: Some(*reason),
            why: Some(why.clone()),
            exit_price: *exit_price,
            realized_pnl: *realized_pnl,
            fees: Some(*fees),
            ..event(EventKind::Exited, held, *qty)
        }),
        Note::Reduced {
            closed,
            held,
            reason,
            exit_price,
            realized_pnl,
            fees,
            ..
        } => Some(PositionEvent {
            reason: Some(*reason),
            exit_price: *exit_price,
            realized_pnl: *realized_pnl,
            fees: Some(*fees),
            ..event(EventKind::Reduced, held, *closed)
        }),
        _ => None,
    }
}

/// The core's configuration from the settings.
pub fn core_config(settings: &Settings) -> Config {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let exit = &settings.exit;
    Config {
        default_plan: exit.default_plan,
        close_deadline: ms(exit.close_deadline),
        close_deadline_max: ms(exit.close_deadline).max(120_000),
        exchange_protection: exit.exchange_protection,
        conditional_budget: exit.conditional_budget,
        net_offset_pct: protection::NET_OFFSET_PCT,
        reconcile_every: ms(exit.reconcile_every),
        adopt_after: ms(exit.adopt_after),
        ..Config::default()
    }
}

struct Monitor {
    rest: RestClient,
    bus: Bus,
    settings: Arc<Settings>,
    counters: Arc<Counters>,
}

const CONSUMER: &str = "exit-monitor-1";

/// How long reading in the results waiting on the bus may hold back deadlines and position reads.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);

/// What the intake task hands over.
enum Input {
    Entry(Entry),
    /// Everything that was on the results stream when the monitor started has been handed over.
    CaughtUp,
}

/// A batch for the writer: changes to persist, then entries to ack.
struct Write {
    changes: Changes,
    acks: Vec<String>,
}

impl Monitor {
    /// The daily-loss tripwire, with what the day has already realized (read from Redis, so a
    /// restart does not forget it). An unreadable sum is said loudly and counted from 0.
    async fn daily_loss(&self) -> Option<crate::tripwire::DailyLoss> {
        let limit = self.settings.exit.tripwire_daily_loss?;
        let now = now_ms();
        let key = crate::tripwire::day_key(now);
        let realized = match self.bus.progress_get(&key).await {
            Ok(None) => Decimal::ZERO,
            Ok(Some(text)) => text.parse().unwrap_or_else(|e| {
                error!("the day's realized PnL at {key} is unreadable ({text:?}: {e}); the daily-loss tripwire counts from 0");
                Decimal::ZERO
            }),
            Err(e) => {
                error!("cannot read the day's realized PnL at {key} ({e}); the daily-loss tripwire counts from 0");
                Decimal::ZERO
            }
        };
        info!("daily-loss tripwire at {limit} USDT; realized today so far: {realized}");
        Some(crate::tripwire::DailyLoss::new(limit, now, realized))
    }

    async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let group = self.settings.exit.consumer_group.clone();
        metrics::register_exit_monitor();
        self.bus
            .ensure_group(keys::TRADE_EXECUTION_RESULT, &group)
            .await?;
        if crate::startup::exchange_ready(&self.rest, &shutdown, "exit monitor")
            .await?
            .is_none()
        {
            return Ok(());
        }
        let saved = monitor_state::load(&self.bus).await?;
        for problem in &saved.unreadable {
            error!("saved monitor state: {problem}; that record is ignored and the position, if any, is adopted from the exchange");
        }
        let mut core = Core::restore(core_config(&self.settings), saved.lots, saved.applied);
        info!(
            "exit monitor restored {} lots over {} symbols",
            core.lots().count(),
            core.books().count()
        );
        if self.settings.exit.exchange_protection {
            let held: BTreeSet<Book> = core.books().cloned().collect();
            let cancelled = protection::cancel_orphans(&self.rest, &held).await;
            publish_protection(&self.bus, cancelled);
        } else {
            warn!("exchange-side protection is OFF (exit.exchange_protection = false): while the monitor is down, nothing protects the positions");
        }
        let ws_url = self.settings.binance_config()?.ws_url;
        let (prices, mut price_events) =
            MarketStream::spawn(ws_url, Vec::<String>::new(), MarketStreamConfig::default());
        let (user_stream, mut user_events) = UserStream::spawn(
            self.rest.clone(),
            UserStreamConfig {
                events: Some(vec!["ACCOUNT_UPDATE".into(), "ALGO_UPDATE".into()]),
                ..UserStreamConfig::default()
            },
        );
        let (inputs_tx, mut inputs) = mpsc::channel::<Input>(256);
        let intake = tokio::spawn(intake(
            self.bus.clone(),
            group.clone(),
            inputs_tx,
            shutdown.clone(),
        ));
        let (writes_tx, writes) = mpsc::unbounded_channel::<Write>();
        // The state batches get a connection of their own: a close intent never waits behind one.
        let state_bus = self.bus.separate().await?;
        let writer = tokio::spawn(writer(state_bus, group.clone(), writes));
        let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
        let mut shell = Shell {
            monitor: &self,
            events: events_tx,
            writes: writes_tx,
            changes: Changes::default(),
            caught_up: false,
            deferred_read: None,
            locks: BTreeMap::new(),
            placed: PlacedOrders::default(),
            subscribed: BTreeSet::new(),
            last_tick: BTreeMap::new(),
            stale_logged: BTreeSet::new(),
            polling: Arc::default(),
            prices: &prices,
            pnl_saves: None,
            daily_loss: self.daily_loss().await,
        };
        if shell.daily_loss.is_some() {
            let (saves, latest) = tokio::sync::watch::channel(None);
            tokio::spawn(save_daily_pnl(self.bus.clone(), latest));
            shell.pnl_saves = Some(saves);
        }
        // Reading in the results waiting on the bus has a deadline too: past it, deadlines and
        // position reads go ahead (a results stream that cannot be read must not freeze them).
        let catch_up = tokio::time::sleep(CATCH_UP_DEADLINE);
        tokio::pin!(catch_up);
        let mut user_stream_alive = true;
        let mut timer = tokio::time::interval(Duration::from_millis(250));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(
            "exit monitor reading {} as {group}",
            keys::TRADE_EXECUTION_RESULT
        );
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                event = price_events.recv() => match event {
                    Some(MarketEvent::MarkPrice(update)) => {
                        shell.tick(&mut core, update.symbol, update.mark_price).await;
                    }
                    Some(MarketEvent::MarkPrices(updates)) => {
                        for update in updates {
                            if core.books_of(&update.symbol).next().is_some() {
                                shell.tick(&mut core, update.symbol, update.mark_price).await;
                            }
                        }
                    }
                    Some(MarketEvent::Disconnected { reason, .. }) => warn!("mark price stream disconnected: {reason}; REST polling covers the gap"),
                    Some(_) => {}
                    None => break,
                },
                event = events.recv() => {
                    let Some(event) = event else { break };
                    shell.apply(&mut core, event, None).await;
                }
                event = user_events.recv(), if user_stream_alive => match event {
                    Some(UserEvent::AccountUpdate(update)) => {
                        for p in update.account.positions {
                            let book = Book::new(p.symbol, side_of(&p.position_side));
                            shell.apply(&mut core, Event::News { book, exit_price: None }, None).await;
                        }
                    }
                    Some(UserEvent::AlgoUpdate(update)) if protection::is_protective(&update.order.client_algo_id) => {
                        // The exchange changed one of ours (triggered, expired, cancelled by
                        // hand): what is placed is no longer known for certain.
                        let side = update.order.position_side.as_ref().map_or(PositionSide::Both, side_of);
                        let book = Book::new(update.order.symbol.clone(), side);
                        lock_placed(&shell.placed).remove(&book);
                        info!("protective order {} of {book} is {:?}", update.order.client_algo_id, update.order.status);
                        // A protective order that filled says at what price the position left.
                        let exit_price = update.order.avg_price.filter(|p| *p > Decimal::ZERO);
                        shell.apply(&mut core, Event::News { book, exit_price }, None).await;
                    }
                    Some(UserEvent::Connected { .. }) => {
                        // Events may have been missed before this connection: read positions.
                        shell.apply(&mut core, Event::News { book: Book::both(""), exit_price: None }, None).await;
                    }
                    Some(_) => {}
                    // The user stream task ended; positions are still read every reconcile period.
                    None => {
                        error!("the user stream has stopped; exchange-side exits are noticed by the periodic position read only");
                        user_stream_alive = false;
                    }
                },
                // Deadlines are acted on once the results waiting on the bus are read in: a
                // close that was answered while the monitor was down is not sent again.
                _ = timer.tick(), if shell.caught_up => shell.apply(&mut core, Event::Timer, None).await,
                _ = housekeeping.tick() => shell.housekeeping(&mut core).await,
                _ = &mut catch_up, if !shell.caught_up => {
                    error!("the results waiting on the bus were not read in within {CATCH_UP_DEADLINE:?}; acting on deadlines and reading positions anyway (a position whose result is still unread may be adopted, then taken over by its result)");
                    shell.caught_up = true;
                    if let Some(seq) = shell.deferred_read.take() {
                        shell.read_positions(seq);
                    }
                }
                input = inputs.recv() => match input {
                    Some(Input::Entry(entry)) => shell.on_entry(&mut core, entry).await,
                    Some(Input::CaughtUp) => {
                        shell.caught_up = true;
                        info!("results waiting on the bus are read in; reading positions");
                        if let Some(seq) = shell.deferred_read.take() {
                            shell.read_positions(seq);
                        }
                    }
                    None => break,
                },
            }
        }
        intake.abort();
        drop(shell);
        // The writer ends once every queued batch is written and acked.
        let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
        prices.shutdown().await;
        user_stream.shutdown().await;
        info!(
            "exit monitor stopped with {} lots tracked",
            core.lots().count()
        );
        Ok(())
    }
}

/// The state of the shell around one core.
struct Shell<'a> {
    monitor: &'a Monitor,
    events: mpsc::UnboundedSender<Event>,
    writes: mpsc::UnboundedSender<Write>,
    changes: Changes,
    caught_up: bool,
    deferred_read: Option<u64>,
    /// One protection request per book at a time.
    locks: BTreeMap<Book, Arc<tokio::sync::Mutex<()>>>,
    /// The protective orders placed, by book, as far as known for certain (absent: list them).
    placed: PlacedOrders,
    subscribed: BTreeSet<String>,
    last_tick: BTreeMap<String, i64>,
    stale_logged: BTreeSet<String>,
    /// A REST price poll is under way.
    polling: Arc<std::sync::atomic::AtomicBool>,
    prices: &'a MarketStream,
    /// The daily realized-loss tripwire (`exit.tripwire_daily_loss`), when on.
    daily_loss: Option<crate::tripwire::DailyLoss>,
    /// The day's sum to keep in Redis, latest first (see [`save_daily_pnl`]).
    pnl_saves: Option<tokio::sync::watch::Sender<Option<(String, Decimal)>>>,
}

impl Shell<'_> {
    /// Adds a closed or exited lot's realized PnL to the day's sum (kept in Redis by a task of
    /// its own, so the decisions never wait for Redis), and trips `reducing` when the day's loss
    /// goes beyond the limit.
    fn record_pnl(&mut self, note: &Note) {
        let (Note::Closed {
            realized_pnl: Some(pnl),
            ..
        }
        | Note::Exited {
            realized_pnl: Some(pnl),
            ..
        }
        | Note::Reduced {
            realized_pnl: Some(pnl),
            ..
        }) = note
        else {
            return;
        };
        let Some(daily) = self.daily_loss.as_mut() else {
            return;
        };
        let tripped = daily.record(now_ms(), *pnl);
        if let Some(saves) = &self.pnl_saves {
            saves.send_replace(Some((daily.day_key(), daily.realized())));
        }
        if let Some(loss) = tripped {
            let limit = self
                .monitor
                .settings
                .exit
                .tripwire_daily_loss
                .unwrap_or_default();
            let bus = self.monitor.bus.clone();
            tokio::spawn(async move {
                crate::tripwire::trip(
                    &bus,
                    "daily-loss",
                    &format!("the realized loss of the day (UTC) is {loss} USDT, beyond exit.tripwire_daily_loss = {limit}"),
                )
                .await;
            });
        }
    }

    async fn tick(&mut self, core: &mut Core, symbol: String, price: Decimal) {
        self.last_tick.insert(symbol.clone(), now_ms());
        if self.stale_logged.remove(&symbol) {
            info!("mark price stream for {symbol} is live again");
        }
        self.apply(core, Event::Mark { symbol, price }, None).await;
    }

    async fn on_entry(&mut self, core: &mut Core, entry: Entry) {
        let parsed = match &entry.payload {
            Ok(raw) => ExecutionResult::from_json(raw).map_err(|e| format!("invalid result: {e}")),
            Err(m) => Err(format!("bad result entry: {}", m.describe())),
        };
        match parsed {
            Ok(result) => self.apply(core, Event::from(result), Some(&entry)).await,
            Err(reason) => {
                self.refuse(&entry, &reason).await;
                self.flush(Some(entry.id.clone()));
            }
        }
    }

    /// Applies one event, runs what the core asks, and hands the changes to the writer (with
    /// the entry to ack once they are written).
    async fn apply(&mut self, core: &mut Core, event: Event, entry: Option<&Entry>) {
        let held_before = core.book_count();
        let commands = core.apply(now_ms(), event);
        for command in commands {
            self.run(core, command, entry).await;
        }
        self.flush(entry.map(|e| e.id.clone()));
        metrics::global()
            .untracked_positions
            .get()
            .set(core.untracked_count() as i64);
        if core.book_count() != held_before || self.subscribed.is_empty() {
            self.sync_streams(core).await;
        }
    }

    fn flush(&mut self, ack: Option<String>) {
        if self.changes.is_empty() && ack.is_none() {
            return;
        }
        let changes = std::mem::take(&mut self.changes);
        let _ = self.writes.send(Write {
            changes,
            acks: ack.into_iter().collect(),
        });
    }

    async fn run(&mut self, core: &Core, command: Command, entry: Option<&Entry>) {
        let m = self.monitor;
        match command {
            Command::PublishClose {
                lot,
                lots,
                book,
                intent_id,
                qty,
                trigger,
                attempt,
            } => {
                let intent = close_intent(&intent_id, &book, qty);
                let (bus, events, counters) =
                    (m.bus.clone(), self.events.clone(), m.counters.clone());
                tokio::spawn(async move {
                    // A close the execution service would refuse is not published: the core
                    // takes it as a failed publish (alarm, backoff, a new attempt).
                    let outcome = match intent {
                        Ok(intent) => bus
                            .publish(keys::TRADE_INTENT, &intent.to_json().to_string())
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    };
                    let outcome = match outcome {
                        Ok(id) => {
                            counters.closes_sent.fetch_add(1, Ordering::Relaxed);
                            let others = if lots.len() > 1 {
                                format!(" (with {} more lots of {book})", lots.len() - 1)
                            } else {
                                String::new()
                            };
                            info!("Close order sent lot={lot}{others} {book} intent={intent_id} qty={qty} trigger={} attempt={attempt} entry={id}", trigger.marker());
                            Ok(())
                        }
                        Err(e) => Err(e),
                    };
                    let _ = events.send(Event::ClosePublished { intent_id, outcome });
                });
            }
            Command::Protect { book, seq, net } => {
                let lock = self.locks.entry(book.clone()).or_default().clone();
                let (rest, events, bus) = (m.rest.clone(), self.events.clone(), m.bus.clone());
                let placed = self.placed.clone();
                tokio::spawn(async move {
                    let _guard = lock.lock().await;
                    let known = lock_placed(&placed).remove(&book);
                    let mut changes = Vec::new();
                    let (outcome, held) =
                        protection::apply(&rest, &book, net, known, &mut changes).await;
                    publish_protection(&bus, changes);
                    if let Some(held) = held.filter(|h| !h.is_empty()) {
                        lock_placed(&placed).insert(book.clone(), held);
                    }
                    let _ = events.send(Event::Protected { book, seq, outcome });
                });
            }
            Command::ReadPositions { seq } => {
                if self.caught_up {
                    self.read_positions(seq);
                } else {
                    // Results still on the bus are applied first; the read waits for them.
                    self.deferred_read = Some(seq);
                }
            }
            Command::Alarm { key, message } => {
                m.counters.alarms.fetch_add(1, Ordering::Relaxed);
                metrics::global()
                    .exit_alarms_total
                    .get_or_create(&metrics::AlarmLabels { kind: key.1 })
                    .inc();
                error!("ALARM {} {}: {message}", key.1.as_str(), key.0);
                export_alarms(core);
            }
            Command::ClearAlarm { key } => {
                info!("alarm {} {} cleared", key.1.as_str(), key.0);
                export_alarms(core);
            }
            Command::Refuse { intent_id, reason } => match entry {
                Some(entry) => self.refuse(entry, &format!("{intent_id}: {reason}")).await,
                None => error!("{intent_id} refused: {reason}"),
            },
            Command::Persist {
                lots,
                removed,
                applied,
                forgotten,
            } => {
                self.changes.add(lots, removed, applied, forgotten);
                metrics::global()
                    .tracked_positions
                    .get()
                    .set(core.len() as i64);
            }
            Command::Note(note) => {
                self.record_pnl(&note);
                if let Some(event) = position_event(&note, now_ms()) {
                    self.publish_event(event);
                }
                self.note(*note)
            }
        }
    }

    /// Publishes a position event in its own task: the monitor's decisions never wait for it.
    /// A failed publish is an ERROR naming the event (the journal misses it; the log has it).
    fn publish_event(&self, event: PositionEvent) {
        let bus = self.monitor.bus.clone();
        tokio::spawn(async move {
            let what = format!("position event {}", event.key());
            publish_patiently(&bus, keys::POSITION_EVENTS, event.to_json(), &what).await;
        });
    }

    fn read_positions(&self, seq: u64) {
        let (rest, events) = (self.monitor.rest.clone(), self.events.clone());
        tokio::spawn(async move {
            let requested_at = now_ms();
            let event = match rest.position_risk(None).await {
                Ok(positions) => Event::Positions {
                    seq,
                    requested_at,
                    positions: positions
                        .into_iter()
                        .map(|p| Position {
                            side: side_of(&p.position_side),
                            symbol: p.symbol,
                            amount: p.position_amt,
                            entry: p.entry_price,
                        })
                        .collect(),
                },
                Err(e) => {
                    warn!("cannot read positions: {e}");
                    Event::PositionsFailed {
                        seq,
                        error: e.to_string(),
                    }
                }
            };
            let _ = events.send(event);
        });
    }

    fn note(&self, note: Note) {
        let counters = &self.monitor.counters;
        match note {
            Note::Opened { lot, plan } => {
                counters.lots_opened.fetch_add(1, Ordering::Relaxed);
                let levels = lot
                    .levels
                    .unwrap_or(engine::exits::Levels::none(lot.direction, lot.entry));
                info!(
                    "tracking lot={} {} {:?} qty={} entry={} take_profit={:?} stop_loss={:?} trailing_pct={:?}{}",
                    lot.id, lot.symbol, lot.direction, lot.qty, lot.entry, levels.take_profit,
                    levels.stop_loss, levels.trailing_pct, match plan {
                        PlanSource::Intent => "",
                        PlanSource::IntentWithDefaultStop => " (the intent's plan with the default stop-loss)",
                        PlanSource::Default => " (default plan)",
                    }
                );
            }
            Note::Adopted { lot } => {
                counters.lots_opened.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "position {} {:?} {} @ {} on the exchange is unknown to quantum: tracking it as {} with the default plan (stop_loss={:?} take_profit={:?})",
                    lot.symbol, lot.direction, lot.qty, lot.entry, lot.id,
                    lot.levels.and_then(|l| l.stop_loss), lot.levels.and_then(|l| l.take_profit)
                );
            }
            Note::TrailUpdate { lot, symbol, peak } => {
                info!("TRAIL_UPDATE lot={lot} {symbol} peak={peak}")
            }
            Note::Triggered {
                lot,
                symbol,
                trigger,
                mark,
            } => {
                metrics::global()
                    .exit_triggers
                    .get_or_create(&metrics::TriggerLabels {
                        kind: (&trigger).into(),
                    })
                    .inc();
                info!(
                    "{} lot={lot} {symbol} mark={mark} trigger={trigger:?}",
                    trigger.marker()
                );
            }
            Note::Closed {
                lot,
                exit_price,
                exit_qty,
                realized_pnl,
                close_sent_at,
                ..
            } => {
                counters.lots_closed.fetch_add(1, Ordering::Relaxed);
                let m = metrics::global();
                m.positions_closed
                    .get_or_create(&metrics::ClosedByLabels {
                        by: metrics::ClosedBy::Quantum,
                    })
                    .inc();
                m.exit_seconds
                    .get()
                    .observe((now_ms() - close_sent_at).max(0) as f64 / 1000.0);
                let pnl = realized_pnl.map_or("unknown (overflow)".to_string(), |p| {
                    p.round_dp(8).to_string()
                });
                info!(
                    "position closed lot={} {} {:?} qty={} entry={} exit={} realized_pnl={pnl} (net of fees)",
                    lot.id, lot.symbol, lot.direction, exit_qty, lot.entry, exit_price
                );
            }
            Note::Reduced {
                lot,
                closed,
                remaining,
                ..
            } => warn!("lot {lot}: {closed} closed, {remaining} still open (a close under way for the rest says so: 'Close order sent')"),
            Note::Exited {
                lot,
                symbol,
                qty,
                why,
                on_exchange,
                exit_price,
                realized_pnl,
                ..
            } => {
                let price = exit_price.map_or("unknown".to_string(), |p| p.to_string());
                let pnl = realized_pnl.map_or("unknown".to_string(), |p| {
                    format!("{} (net of the entry fee)", p.round_dp(8))
                });
                if on_exchange {
                    counters.lots_closed.fetch_add(1, Ordering::Relaxed);
                    metrics::global()
                        .positions_closed
                        .get_or_create(&metrics::ClosedByLabels {
                            by: metrics::ClosedBy::Exchange,
                        })
                        .inc();
                    info!("lot {lot} {symbol} ({qty}) closed on the exchange, not by quantum (its protective order fired, or by hand); recorded as exited at {price}, realized_pnl={pnl}");
                } else {
                    info!("lot {lot} {symbol} ({qty}) left the book: {why}; exit price {price}, realized_pnl={pnl}");
                }
            }
            Note::UnexpectedClose {
                intent_id,
                symbol,
                qty,
                unmatched,
            } => warn!("close {intent_id} on {symbol} filled {qty} the book did not expect (a late attempt, or a CLOSE sent by someone else); the symbol's lots are reduced by it{}", if unmatched.is_zero() { String::new() } else { format!(" ({unmatched} matched no lot)") }),
            Note::Netted {
                intent_id,
                symbol,
                qty,
            } => warn!("{intent_id} on {symbol} is opposite to the lots held: {qty} of them are netted away (one-way mode)"),
            Note::Ignored { intent_id, why } => info!("result {intent_id}: {why}"),
        }
    }

    async fn refuse(&self, entry: &Entry, reason: &str) {
        let m = self.monitor;
        m.counters.invalid_results.fetch_add(1, Ordering::Relaxed);
        let exported = metrics::global();
        exported.invalid_results.get().inc();
        exported
            .dead_letters
            .get_or_create(&metrics::DeadLetterLabels {
                stream: metrics::DeadLetterStream::TradeExecutionResult,
            })
            .inc();
        let shown = entry.payload.as_deref().unwrap_or("<no payload>");
        error!(
            "result entry {} refused: {reason}; dead-lettered: {shown}",
            entry.id
        );
        if let Err(e) = m
            .bus
            .dead_letter(keys::TRADE_EXECUTION_RESULT, entry, reason)
            .await
        {
            error!("cannot dead-letter result entry {}: {e}", entry.id);
        }
    }

    /// Every second: metrics, the price feed record, and REST prices for symbols whose stream
    /// went quiet.
    async fn housekeeping(&mut self, core: &mut Core) {
        let m = self.monitor;
        metrics::export_rest(&m.rest, metrics::Client::ExitMonitor);
        let symbols: BTreeSet<&String> = core.books().map(|b| &b.symbol).collect();
        let held: BTreeMap<String, i64> = symbols
            .into_iter()
            .map(|s| {
                (
                    s.clone(),
                    *self.last_tick.entry(s.clone()).or_insert(now_ms()),
                )
            })
            .collect();
        // The price age of a symbol no longer held is dropped, not left at its last level. Every
        // symbol with a series was in `last_tick` at the last housekeeping (which set it), and
        // leaves `last_tick` only here.
        let ages = &metrics::global().mark_price_age_seconds;
        for gone in self.last_tick.keys().filter(|s| !held.contains_key(*s)) {
            ages.remove(&metrics::SymbolLabels {
                symbol: gone.clone(),
            });
        }
        self.last_tick.retain(|s, _| held.contains_key(s));
        for (symbol, at) in &held {
            ages.get_or_create(&metrics::SymbolLabels {
                symbol: symbol.clone(),
            })
            .set((now_ms() - at).max(0) as f64 / 1000.0);
        }
        {
            let alarms = monitor_state::SavedAlarms {
                at: now_ms(),
                alarms: core
                    .alarms()
                    .map(|((symbol, kind), message)| monitor_state::AlarmRecord {
                        symbol: symbol.clone(),
                        kind: kind.as_str().to_string(),
                        message: message.clone(),
                    })
                    .collect(),
            };
            let (bus, held) = (m.bus.clone(), held.clone());
            tokio::spawn(async move {
                if let Err(e) = monitor_state::save_feed(&bus, &held).await {
                    warn!("cannot save the price feed times: {e}");
                }
                if let Err(e) = monitor_state::save_alarms(&bus, &alarms).await {
                    warn!("cannot save the alarms: {e}");
                }
            });
        }
        let stale_after =
            i64::try_from(m.settings.exit.price_stale_after.as_millis()).unwrap_or(i64::MAX);
        let mut stale: Vec<String> = Vec::new();
        for (symbol, at) in held {
            let age = now_ms() - at;
            if age < stale_after {
                continue;
            }
            if self.stale_logged.insert(symbol.clone()) {
                warn!("no mark price for {symbol} for {age} ms: falling back to REST premiumIndex polling");
            }
            stale.push(symbol);
        }
        if stale.is_empty() || self.polling.swap(true, Ordering::AcqRel) {
            return;
        }
        // One poll at a time; for more than ten symbols, one request for all (weight 10) costs
        // less than one per symbol.
        let (rest, events, polling) = (m.rest.clone(), self.events.clone(), self.polling.clone());
        tokio::spawn(async move {
            let prices = if stale.len() > 10 {
                tokio::time::timeout(Duration::from_secs(5), rest.premium_index_all())
                    .await
                    .map_err(|_| "timed out".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            } else {
                let mut all = Vec::new();
                let mut failed = None;
                for symbol in &stale {
                    match tokio::time::timeout(Duration::from_secs(5), rest.premium_index(symbol))
                        .await
                    {
                        Ok(Ok(p)) => all.push(p),
                        Ok(Err(e)) => failed = Some(e.to_string()),
                        Err(_) => failed = Some("timed out".into()),
                    }
                }
                match failed {
                    Some(e) if all.is_empty() => Err(e),
                    _ => Ok(all),
                }
            };
            match prices {
                Ok(prices) => {
                    for p in prices.into_iter().filter(|p| stale.contains(&p.symbol)) {
                        let _ = events.send(Event::Mark {
                            symbol: p.symbol,
                            price: p.mark_price,
                        });
                    }
                }
                Err(e) => error!(
                    "{} held symbols have no price: premiumIndex failed: {e}",
                    stale.len()
                ),
            }
            polling.store(false, Ordering::Release);
        });
    }

    /// Subscribes the mark price streams the held symbols need: one `<symbol>@markPrice@1s`
    /// each, or `!markPrice@arr@1s` alone once more than `all_market_stream_above` symbols are
    /// held (fewer streams, one frame a second with every price).
    async fn sync_streams(&mut self, core: &Core) {
        let all_above = self.monitor.settings.exit.all_market_stream_above;
        // A hedge account's two books of a symbol share its price stream.
        let symbols: BTreeSet<&String> = core.books().map(|b| &b.symbol).collect();
        let wanted: BTreeSet<String> = if symbols.len() > all_above {
            [ALL_MARK_PRICES_STREAM.to_string()].into_iter().collect()
        } else {
            symbols.iter().map(|s| mark_price_stream(s)).collect()
        };
        let added: Vec<String> = wanted.difference(&self.subscribed).cloned().collect();
        let removed: Vec<String> = self.subscribed.difference(&wanted).cloned().collect();
        if !added.is_empty() && self.prices.subscribe(added).await.is_err() {
            error!(
                "the mark price stream has stopped; held symbols are priced by REST polling only"
            );
        }
        if !removed.is_empty() {
            let _ = self.prices.unsubscribe(removed).await;
        }
        self.subscribed = wanted;
    }
}

/// The CLOSE intent for `qty` of `book`, written by the one intent builder and checked by the
/// parser the execution service applies; on a hedge account it names the side it closes. The
/// core names closes and symbols with strings (a symbol can come from an exchange position), so
/// they are checked here too.
fn close_intent(intent_id: &str, book: &Book, qty: Decimal) -> Result<TradeIntent, String> {
    let refused = |e: String| format!("close intent {intent_id} for {book} not sent: {e}");
    let id = IntentId::new(intent_id).map_err(|e| refused(e.to_string()))?;
    let symbol = Symbol::new(&book.symbol).map_err(|e| refused(e.to_string()))?;
    let side = (book.side != PositionSide::Both).then_some(book.side);
    TradeIntent::close(id, symbol)
        .quantity(qty)
        .position_side(side)
        .source("exit-monitor")
        .created_at(now_ms())
        .build()
        .map_err(|e| refused(e.to_string()))
}

/// Keeps the day's realized PnL in Redis: always the latest sum (one that is replaced while a
/// write is failing is not written), retried with backoff while Redis is away, so a restart of
/// the monitor does not count the day's losses from 0.
async fn save_daily_pnl(
    bus: Bus,
    mut latest: tokio::sync::watch::Receiver<Option<(String, Decimal)>>,
) {
    while latest.changed().await.is_ok() {
        let mut delay = Duration::from_millis(200);
        loop {
            let Some((key, realized)) = latest.borrow_and_update().clone() else {
                break;
            };
            match bus
                .progress_set(&key, &realized.to_string(), DAILY_PNL_KEEP)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    error!("cannot save the day's realized PnL ({realized}) to {key}: {e}; retrying (a restart now would count the day's losses from 0)");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// How long a day's realized PnL is kept in Redis (the tripwire reads only today's).
const DAILY_PNL_KEEP: Duration = Duration::from_secs(3 * 24 * 3600);

/// The book side a wire `positionSide` names (an unknown value reads as `Both`).
fn side_of(side: &binance::PositionSide) -> PositionSide {
    side.to_model().unwrap_or(PositionSide::Both)
}

type PlacedOrders = Arc<std::sync::Mutex<BTreeMap<Book, Vec<protection::Placed>>>>;

fn lock_placed(
    placed: &PlacedOrders,
) -> std::sync::MutexGuard<'_, BTreeMap<Book, Vec<protection::Placed>>> {
    placed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The number of raised alarms by kind, as a gauge.
fn export_alarms(core: &Core) {
    for kind in AlarmKind::ALL {
        let n = core.alarms().filter(|((_, k), _)| *k == kind).count();
        metrics::global()
            .exit_alarms
            .get_or_create(&metrics::AlarmLabels { kind })
            .set(n as i64);
    }
}

/// Writes batches of changes, coalesced, then acks their entries: an entry is acked only once
/// what it changed is saved. A write that fails is retried; nothing is acked before it lands.
async fn writer(bus: Bus, group: String, mut writes: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = writes.recv().await {
        let mut changes = first.changes;
        let mut acks = first.acks;
        while let Ok(more) = writes.try_recv() {
            changes.merge(more.changes);
            acks.extend(more.acks);
        }
        let mut delay = Duration::from_millis(200);
        loop {
            match changes.write(&bus).await {
                Ok(()) => break,
                Err(e) => {
                    error!("cannot save the monitor state ({e}); retrying in {delay:?}; results are not acked until it is saved");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for id in acks {
            if let Err(e) = bus.ack(keys::TRADE_EXECUTION_RESULT, &group, &id).await {
                error!("cannot ack result entry {id}: {e}");
            }
        }
    }
}

/// Reads results and hands them to the engine loop, which acks them once applied and saved.
/// Says `CaughtUp` once the first read comes back empty: everything that was waiting is handed
/// over.
async fn intake(bus: Bus, group: String, out: mpsc::Sender<Input>, shutdown: CancellationToken) {
    let mut backlog = match bus
        .pending_for(keys::TRADE_EXECUTION_RESULT, &group, CONSUMER)
        .await
    {
        Ok(pending) => pending,
        Err(e) => {
            error!("cannot read pending results: {e}");
            Vec::new()
        }
    };
    let mut caught_up = false;
    loop {
        for entry in backlog.drain(..) {
            if out.send(Input::Entry(entry)).await.is_err() {
                return;
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        match bus
            .read(
                keys::TRADE_EXECUTION_RESULT,
                &group,
                CONSUMER,
                64,
                Duration::from_millis(500),
            )
            .await
        {
            Ok(entries) if entries.is_empty() && !caught_up => {
                caught_up = true;
                if out.send(Input::CaughtUp).await.is_err() {
                    return;
                }
            }
            Ok(entries) => backlog = entries,
            Err(bus::Error::NoGroup { .. }) => {
                let _ = bus.ensure_group(keys::TRADE_EXECUTION_RESULT, &group).await;
            }
            Err(e) => {
                error!("cannot read results: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 14): an exit published while Redis was restarting was lost to the
    /// journal. It is retried until Redis is back, and lands.
    #[tokio::test]
    async fn an_event_published_while_redis_is_down_lands_once_it_is_back() {
        let mut redis = testkit::RedisServer::start();
        let bus = Bus::connect(&bus::Config {
            url: redis.url(),
            ..bus::Config::default()
        })
        .await
        .expect("redis");
        redis.stop();
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                publish_patiently(
                    &bus,
                    keys::POSITION_EVENTS,
                    r#"{"event":"test"}"#.into(),
                    "test event",
                )
                .await
            })
        };
        // The outage lasts a moment (part of the scenario, not a wait for a condition).
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.restart();
        tokio::time::timeout(Duration::from_secs(60), publisher)
            .await
            .expect("published within a minute of Redis coming back")
            .unwrap();
        let entries = bus.latest(keys::POSITION_EVENTS, 10).await.unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
    }

    #[test]
    fn a_close_intent_is_the_document_the_execution_service_reads() {
        let intent =
            close_intent("close-t2-1", &Book::both("AXSUSDT"), Decimal::new(3200, 2)).unwrap();
        let doc = intent.to_json();
        assert_eq!(doc["intent_id"], "close-t2-1");
        assert_eq!(doc["symbol"], "AXSUSDT");
        assert_eq!(doc["action"], "CLOSE");
        assert_eq!(doc["quantity"].to_string(), "32");
        assert_eq!(doc["source"], "exit-monitor");
        assert!(doc["created_at"].as_i64().is_some());
        assert_eq!(
            doc.as_object().unwrap().len(),
            6,
            "nothing else is sent: {doc}"
        );
        assert_eq!(TradeIntent::from_json(&doc.to_string()), Ok(intent));
        // On a hedge account the close names the side it closes.
        let hedge = close_intent(
            "close-t2-1",
            &Book::new("AXSUSDT", PositionSide::Short),
            Decimal::ONE,
        )
        .unwrap();
        assert_eq!(hedge.to_json()["position_side"], "SHORT");
    }

    #[test]
    fn a_close_the_service_would_refuse_is_not_sent() {
        let bad_symbol =
            close_intent("close-x-1", &Book::both("BTCUSDT_250328"), Decimal::ONE).unwrap_err();
        assert!(bad_symbol.contains("BTCUSDT_250328"), "{bad_symbol}");
        assert!(close_intent("close-x-1", &Book::both("ETHUSDT"), Decimal::ZERO).is_err());
    }
}
