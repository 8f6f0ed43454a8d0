//! The exit monitor: reads execution results, tracks every filled entry as a lot in an
//! [`engine::book::Book`], watches mark prices, and closes a lot on take-profit, stop-loss or
//! trailing stop by publishing one reduce-only CLOSE intent, which goes through the execution
//! service like any other intent. Every result it cannot use is logged as an ERROR naming it and
//! the reason, copied to the dead-letter stream, counted, and acked: never a silent drop.
//!
//! Tasks: an intake task reads the results stream and hands each entry to the engine loop, which
//! owns the book, applies results, price ticks and the REST fallback, and acks each entry once it
//! is applied. The book is saved on the bus after every change and, on start, rebuilt from it
//! and checked against the exchange's positions before any tick is acted on. Exchange-side
//! protective orders are kept in line with the lots (see [`crate::protection`]), and a position
//! that goes flat on the exchange without a close of ours is noticed within five seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use binance::{
    mark_price_stream, MarketEvent, MarketStream, MarketStreamConfig, RestClient,
    ALL_MARK_PRICES_STREAM,
};
use bus::{keys, Bus, Entry};
use engine::book::{Book, BookAction, CloseOutcome};
use model::{Action, ExecutionResult};
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::execution::{now_ms, ServiceError};
use crate::metrics;
use crate::monitor_state;
use crate::protection;
use crate::running::Running;

/// Counters the monitor keeps (exported as metrics with issue 5).
#[derive(Debug, Default)]
pub struct Counters {
    pub invalid_results: AtomicU64,
    pub lots_opened: AtomicU64,
    pub closes_sent: AtomicU64,
    pub lots_closed: AtomicU64,
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
    let shutdown = CancellationToken::new();
    let counters = Arc::new(Counters::default());
    let monitor = Monitor {
        rest,
        bus,
        settings: Arc::new(settings),
        counters: counters.clone(),
    };
    let task = tokio::spawn(monitor.run(shutdown.clone()));
    Ok((Running::new(shutdown, task), counters))
}

struct Monitor {
    rest: RestClient,
    bus: Bus,
    settings: Arc<Settings>,
    counters: Arc<Counters>,
}

const CONSUMER: &str = "exit-monitor-1";

impl Monitor {
    async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let group = self.settings.exit.consumer_group.clone();
        metrics::register_exit_monitor();
        self.bus
            .ensure_group(keys::TRADE_EXECUTION_RESULT, &group)
            .await?;
        self.rest.sync_time().await?;
        let ws_url = self.settings.binance_config()?.ws_url;
        let (prices, mut price_events) =
            MarketStream::spawn(ws_url, Vec::<String>::new(), MarketStreamConfig::default());
        let (entries_tx, mut entries) = mpsc::channel::<Entry>(256);
        let intake = tokio::spawn(intake(
            self.bus.clone(),
            group.clone(),
            entries_tx,
            shutdown.clone(),
        ));
        let mut book = self.restore().await?;
        if self.settings.exit.exchange_protection {
            for symbol in book.symbols() {
                self.protect(&book, &symbol).await;
            }
            protection::cancel_orphans(&self.rest, &book.symbols()).await;
        }
        let mut position_check = tokio::time::interval(Duration::from_secs(5));
        let mut watched: BTreeSet<String> = BTreeSet::new();
        // Streams subscribed now: one per held symbol, or the all-market stream when many are held.
        let mut subscribed: BTreeSet<String> = BTreeSet::new();
        let all_above = self.settings.exit.all_market_stream_above;
        let mut last_tick: BTreeMap<String, i64> = BTreeMap::new();
        let mut stale_logged: BTreeSet<String> = BTreeSet::new();
        let mut fallback = tokio::time::interval(Duration::from_secs(1));
        if !book.symbols().is_empty() {
            sync_streams(&prices, &mut subscribed, &book.symbols(), all_above).await;
            for s in book.symbols() {
                last_tick.insert(s.clone(), now_ms());
            }
            watched = book.symbols();
        }
        info!(
            "exit monitor reading {} as {group}",
            keys::TRADE_EXECUTION_RESULT
        );
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                entry = entries.recv() => {
                    let Some(entry) = entry else { break };
                    self.on_entry(&mut book, &entry).await;
                    self.save(&book).await;
                    let symbol = entry.payload.as_ref().ok()
                        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                        .and_then(|v| v["symbol"].as_str().map(str::to_string));
                    if let Some(symbol) = symbol {
                        // A close that failed may have failed because the exchange closed the
                        // position first (its protective order fired in the same move): look.
                        if book.lots().any(|l| l.symbol == symbol && l.retry_at.is_some()) && self.check_positions(&mut book).await {
                            self.save(&book).await;
                        }
                        self.protect(&book, &symbol).await;
                    }
                    if let Err(e) = self.bus.ack(keys::TRADE_EXECUTION_RESULT, &group, &entry.id).await {
                        error!("cannot ack result entry {}: {e}", entry.id);
                    }
                    let symbols = book.symbols();
                    sync_streams(&prices, &mut subscribed, &symbols, all_above).await;
                    for s in symbols.difference(&watched) {
                        last_tick.insert(s.clone(), now_ms());
                    }
                    watched = symbols;
                }
                event = price_events.recv() => match event {
                    Some(MarketEvent::MarkPrice(update)) => {
                        last_tick.insert(update.symbol.clone(), now_ms());
                        if stale_logged.remove(&update.symbol) {
                            info!("mark price stream for {} is live again", update.symbol);
                        }
                        if self.on_price(&mut book, &update.symbol, update.mark_price).await {
                            self.save(&book).await;
                        }
                    }
                    Some(MarketEvent::MarkPrices(updates)) => {
                        let mut changed = false;
                        for update in updates.iter().filter(|u| watched.contains(&u.symbol)) {
                            last_tick.insert(update.symbol.clone(), now_ms());
                            stale_logged.remove(&update.symbol);
                            changed |= self.on_price(&mut book, &update.symbol, update.mark_price).await;
                        }
                        if changed {
                            self.save(&book).await;
                        }
                    }
                    Some(MarketEvent::Disconnected { reason, .. }) => warn!("mark price stream disconnected: {reason}; REST polling covers the gap"),
                    Some(_) => {}
                    None => break,
                },
                _ = position_check.tick(), if !watched.is_empty() => {
                    if self.check_positions(&mut book).await {
                        self.save(&book).await;
                    }
                }
                _ = fallback.tick() => {
                    metrics::export_weight(&self.rest, "exit-monitor");
                    let held: BTreeMap<String, i64> = last_tick.iter().filter(|(s, _)| watched.contains(*s)).map(|(s, t)| (s.clone(), *t)).collect();
                    metrics::global().retain("quantum_mark_price_age_seconds", |labels| held.keys().any(|s| labels == metrics::labels(&[("symbol", s)])));
                    for (symbol, at) in &held {
                        metrics::global().set("quantum_mark_price_age_seconds", &[("symbol", symbol)], (now_ms() - at).max(0) as f64 / 1000.0);
                    }
                    if let Err(e) = monitor_state::save_feed(&self.bus, &held).await {
                        warn!("cannot save the price feed times: {e}");
                    }
                    let stale_after = i64::try_from(self.settings.exit.price_stale_after.as_millis()).unwrap_or(i64::MAX);
                    for symbol in watched.clone() {
                        let age = now_ms() - last_tick.get(&symbol).copied().unwrap_or(0);
                        if age < stale_after {
                            continue;
                        }
                        if stale_logged.insert(symbol.clone()) {
                            warn!("no mark price for {symbol} for {age} ms: falling back to REST premiumIndex polling");
                        }
                        match self.rest.premium_index(&symbol).await {
                            Ok(p) => {
                                if self.on_price(&mut book, &symbol, p.mark_price).await {
                                    self.save(&book).await;
                                }
                            }
                            Err(e) => error!("{symbol} is held and its price is unknown: premiumIndex failed: {e}"),
                        }
                    }
                }
            }
        }
        intake.abort();
        prices.shutdown().await;
        info!(
            "exit monitor stopped with {} lots tracked",
            book.lots().count()
        );
        Ok(())
    }

    async fn on_entry(&self, book: &mut Book, entry: &Entry) {
        let raw = match &entry.payload {
            Ok(raw) => raw,
            Err(m) => {
                return self
                    .invalid(entry, &format!("bad result entry: {}", m.describe()))
                    .await
            }
        };
        let result = match ExecutionResult::from_json(raw) {
            Ok(r) => r,
            Err(e) => return self.invalid(entry, &format!("invalid result: {e}")).await,
        };
        if result.action == Action::Close.as_str() {
            match book.on_close_result(&result, now_ms()) {
                CloseOutcome::Closed(c) => {
                    self.counters.lots_closed.fetch_add(1, Ordering::Relaxed);
                    metrics::global().inc("quantum_positions_closed_total", &[("by", "quantum")]);
                    metrics::global().observe(
                        "quantum_exit_seconds",
                        &[],
                        (now_ms() - c.close_sent_at).max(0) as f64 / 1000.0,
                    );
                    info!(
                        "position closed lot={} {} {:?} qty={} entry={} exit={} realized_pnl={} (net of fees)",
                        c.lot.id, c.lot.symbol, c.lot.direction, c.exit_qty, c.lot.entry, c.exit_price, c.realized_pnl.round_dp(8)
                    );
                }
                CloseOutcome::Reduced {
                    lot,
                    closed,
                    remaining,
                    realized_pnl,
                } => {
                    warn!("close of lot {lot} filled {closed} of it; {remaining} still open (realized_pnl={realized_pnl}); the next trigger closes the rest");
                }
                CloseOutcome::Failed {
                    lot,
                    status,
                    error,
                    retry_at,
                    attempt,
                } => {
                    error!(
                        "close of lot {lot} FAILED ({}: {error}); the position is still open, retrying in {} ms (attempt {attempt})",
                        status.as_str(),
                        retry_at - now_ms()
                    );
                }
                CloseOutcome::Unknown => info!(
                    "close result {} is not for a lot this monitor tracks",
                    result.intent_id
                ),
            }
            return;
        }
        if !result.status.has_fill() {
            info!(
                "result {} is {} with no fill: nothing to track",
                result.intent_id,
                result.status.as_str()
            );
            return;
        }
        match book.open(&result, &self.settings.exit.default_plan) {
            Ok(lot) => {
                self.counters.lots_opened.fetch_add(1, Ordering::Relaxed);
                info!(
                    "tracking lot={} {} {:?} qty={} entry={} take_profit={:?} stop_loss={:?} trailing_pct={:?}{}",
                    lot.id,
                    lot.symbol,
                    lot.direction,
                    lot.qty,
                    lot.entry,
                    lot.levels.take_profit,
                    lot.levels.stop_loss,
                    lot.levels.trailing_pct,
                    if result.exit_plan.is_empty() { " (default plan)" } else { "" }
                );
                if lot.levels.stop_loss.is_none() {
                    warn!("lot {} has NO stop-loss (allowed by configuration)", lot.id);
                }
            }
            Err(e) => {
                error!("filled position {} {} CANNOT BE PROTECTED: its exit plan is invalid ({e}); it is not tracked", result.intent_id, result.symbol);
                self.invalid(
                    entry,
                    &format!("exit plan cannot protect the position: {e}"),
                )
                .await;
            }
        }
    }

    async fn invalid(&self, entry: &Entry, reason: &str) {
        self.counters
            .invalid_results
            .fetch_add(1, Ordering::Relaxed);
        metrics::global().inc("quantum_invalid_results_total", &[]);
        metrics::global().inc(
            "quantum_dead_letters_total",
            &[("stream", keys::TRADE_EXECUTION_RESULT)],
        );
        let shown = entry.payload.as_deref().unwrap_or("<no payload>");
        error!(
            "result entry {} refused: {reason}; dead-lettered: {shown}",
            entry.id
        );
        if let Err(e) = self
            .bus
            .dead_letter(keys::TRADE_EXECUTION_RESULT, entry, reason)
            .await
        {
            error!("cannot dead-letter result entry {}: {e}", entry.id);
        }
    }

    /// Applies a mark price; returns true when the book changed (to be saved).
    async fn on_price(&self, book: &mut Book, symbol: &str, mark: Decimal) -> bool {
        let actions = book.on_price(symbol, mark, now_ms());
        let changed = !actions.is_empty();
        for action in actions {
            match action {
                BookAction::TrailUpdate { lot, peak } => {
                    info!("TRAIL_UPDATE lot={lot} {symbol} peak={peak}")
                }
                BookAction::Close {
                    lot,
                    symbol,
                    intent_id,
                    qty,
                    trigger,
                    attempt,
                } => {
                    info!(
                        "{} lot={lot} {symbol} mark={mark} trigger={trigger:?}",
                        trigger.marker()
                    );
                    metrics::global()
                        .inc("quantum_exit_triggers_total", &[("kind", trigger.marker())]);
                    if self.settings.exit.exchange_protection {
                        // A resting close-position order would get the reduce-only close refused;
                        // the monitor is live and closing, and puts them back if the close fails.
                        protection::cancel_all(&self.rest, &symbol).await;
                    }
                    let intent = serde_json::json!({
                        "intent_id": intent_id,
                        "symbol": symbol,
                        "action": "CLOSE",
                        "quantity": model::intent::decimal_number(qty),
                        "source": "exit-monitor",
                        "created_at": now_ms(),
                    });
                    match self
                        .bus
                        .publish(keys::TRADE_INTENT, &intent.to_string())
                        .await
                    {
                        Ok(id) => {
                            self.counters.closes_sent.fetch_add(1, Ordering::Relaxed);
                            info!("Close order sent lot={lot} intent={intent_id} qty={qty} attempt={attempt} entry={id}");
                        }
                        Err(e) => error!(
                            "cannot send the close of lot {lot}: {e}; the position is still open"
                        ),
                    }
                }
            }
        }
        changed
    }

    /// Brings the symbol's exchange-side orders in line with its lots (none while a close is in
    /// flight: see `protection`).
    async fn protect(&self, book: &Book, symbol: &str) {
        if !self.settings.exit.exchange_protection {
            return;
        }
        let lots: Vec<&engine::book::Lot> = book.lots().filter(|l| l.symbol == symbol).collect();
        if lots.iter().any(|l| l.closing.is_some()) {
            protection::cancel_all(&self.rest, symbol).await;
        } else {
            protection::sync(&self.rest, symbol, &lots).await;
        }
    }

    /// Notices positions that went flat on the exchange without a close of ours (an
    /// exchange-side stop fired, or someone closed by hand): records the exit and cancels what
    /// is left of the protective orders. Returns true when the book changed.
    async fn check_positions(&self, book: &mut Book) -> bool {
        let positions = match self.rest.position_risk(None).await {
            Ok(p) => p,
            Err(e) => {
                warn!("cannot read positions to check for exchange-side exits: {e}");
                return false;
            }
        };
        let held: BTreeSet<String> = positions
            .iter()
            .filter(|p| !p.position_amt.is_zero())
            .map(|p| p.symbol.clone())
            .collect();
        let mut changed = false;
        for symbol in book.symbols() {
            let lots: Vec<engine::book::Lot> = book
                .lots()
                .filter(|l| l.symbol == symbol)
                .cloned()
                .collect();
            if held.contains(&symbol) || lots.iter().any(|l| l.closing.is_some()) {
                continue;
            }
            for lot in lots {
                info!(
                    "lot {} {} closed on the exchange, not by quantum (its protective order fired, or by hand); recorded as exited",
                    lot.id, lot.symbol
                );
                book.remove(&lot.id);
                self.counters.lots_closed.fetch_add(1, Ordering::Relaxed);
                metrics::global().inc("quantum_positions_closed_total", &[("by", "exchange")]);
            }
            if self.settings.exit.exchange_protection {
                protection::cancel_all(&self.rest, &symbol).await;
            }
            changed = true;
        }
        changed
    }

    async fn save(&self, book: &Book) {
        metrics::global().set("quantum_tracked_positions", &[], book.lots().count() as f64);
        if let Err(e) = monitor_state::save(&self.bus, book.lots()).await {
            error!("cannot save the monitor state ({e}); a restart now would rebuild it from the exchange only");
        }
    }

    /// Rebuilds the book before any tick is acted on: the saved lots, checked against the
    /// exchange's positions. A saved lot whose symbol is flat on the exchange was closed while
    /// the monitor was down; an exchange position the book does not know gets the default plan.
    async fn restore(&self) -> Result<Book, ServiceError> {
        let mut book = Book::default();
        match monitor_state::load(&self.bus).await? {
            Ok(lots) => {
                for lot in lots {
                    book.restore(lot);
                }
            }
            Err(e) => error!("{e}; rebuilding the book from the exchange's positions only"),
        }
        let positions = self.rest.position_risk(None).await?;
        let mut held: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
        for p in positions.iter().filter(|p| !p.position_amt.is_zero()) {
            let e = held.entry(p.symbol.clone()).or_default();
            e.0 += p.position_amt;
            e.1 = p.entry_price;
        }
        for lot in book.lots().cloned().collect::<Vec<_>>() {
            if !held.contains_key(&lot.symbol) {
                info!(
                    "lot {} {} is flat on the exchange: it was closed while the monitor was down (protective order or by hand); no longer tracked",
                    lot.id, lot.symbol
                );
                book.remove(&lot.id);
            }
        }
        for (symbol, (amount, entry)) in held {
            let tracked = book.net_qty(&symbol);
            if tracked.is_zero() {
                match book.adopt(&symbol, amount, entry, &self.settings.exit.default_plan, now_ms()) {
                    Ok(lot) => warn!(
                        "position {symbol} {amount} @ {entry} on the exchange is unknown to quantum: tracking it as {} with the default plan (stop_loss={:?} take_profit={:?})",
                        lot.id, lot.levels.stop_loss, lot.levels.take_profit
                    ),
                    Err(e) => error!("position {symbol} {amount} @ {entry} is UNPROTECTED: the default plan cannot apply ({e})"),
                }
            } else if tracked != amount {
                warn!("{symbol}: the exchange holds {amount}, the saved lots {tracked}; trusting the lots' plans, check with `quantum orders`");
            }
        }
        info!("exit monitor restored {} lots", book.lots().count());
        self.save(&book).await;
        Ok(book)
    }
}

/// Subscribes the mark price streams the held symbols need: one `<symbol>@markPrice@1s` each, or
/// `!markPrice@arr@1s` alone once more than `all_above` symbols are held (fewer streams, one frame
/// a second with every price).
async fn sync_streams(
    prices: &MarketStream,
    subscribed: &mut BTreeSet<String>,
    symbols: &BTreeSet<String>,
    all_above: usize,
) {
    let wanted: BTreeSet<String> = if symbols.len() > all_above {
        [ALL_MARK_PRICES_STREAM.to_string()].into_iter().collect()
    } else {
        symbols.iter().map(|s| mark_price_stream(s)).collect()
    };
    let added: Vec<String> = wanted.difference(subscribed).cloned().collect();
    let removed: Vec<String> = subscribed.difference(&wanted).cloned().collect();
    if !added.is_empty() && prices.subscribe(added).await.is_err() {
        error!("the mark price stream has stopped; held symbols are priced by REST polling only");
    }
    if !removed.is_empty() {
        let _ = prices.unsubscribe(removed).await;
    }
    *subscribed = wanted;
}

/// Reads results and hands them to the engine loop, which acks them once applied.
async fn intake(bus: Bus, group: String, out: mpsc::Sender<Entry>, shutdown: CancellationToken) {
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
    loop {
        for entry in backlog.drain(..) {
            if out.send(entry).await.is_err() {
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
