//! The exit monitor's decision core: a closed-event state machine. `Core::apply(now, event)`
//! takes one event (an execution result, a mark price, a position snapshot, news from the user
//! stream, the outcome of a command, or the timer) and returns the commands to run (publish a
//! close, place or cancel protection, read positions, raise or clear an alarm, persist, log).
//! It never awaits the exchange: the service runs the commands and feeds their outcomes back as
//! events. No I/O, no clock, checked arithmetic on everything that came from outside.
//!
//! The invariant, for every position the core tracks, at every moment: it is **protected on the
//! exchange** (a stop-loss order confirmed in place), **or a command that changes that is in
//! flight with a deadline** (a close, or a protection request), **or an alarm is raised**. Every
//! state has a deadline and a fallback: a close not answered in time raises an alarm, re-asserts
//! protection and is retried under a new id; a protection request not answered in time raises an
//! alarm and is re-sent; a position read not answered in time is asked again.
//!
//! Protection is never cancelled before a close: since Binance moved conditional orders to the
//! algo service (2025-12), an untriggered STOP_MARKET `closePosition` order is not in the order
//! book and does not make a reduce-only MARKET close fail (ARCHITECTURE.md, "Decisions"). It is
//! cancelled only once the symbol is flat in the book.

use std::collections::{BTreeMap, BTreeSet};

use model::{Action, ExecutionResult, ExitPlan, ExitReason, IntentId, PositionSide};
use rust_decimal::Decimal;

use crate::exits::{evaluate, trailing_stop, Direction, Levels, TrailState, Trigger};

/// How the core behaves; times in milliseconds.
#[derive(Debug, Clone)]
pub struct Config {
    /// Applied to a filled entry whose intent gave no exit plan, to a refused plan, and to a
    /// position adopted from the exchange. Its stop-loss also completes an intent's plan that
    /// has none (a take-profit or a trailing stop alone): no position goes without a stop unless
    /// the default plan has none either (`exit.allow_unprotected`).
    pub default_plan: ExitPlan,
    /// A close not answered within this raises an alarm and is retried under a new id; each
    /// further attempt of the same lot waits twice as long (up to `close_deadline_max`), so an
    /// execution service that is down does not collect a pile of closes.
    pub close_deadline: i64,
    pub close_deadline_max: i64,
    /// Keep a STOP_MARKET (and, budget allowing, a TAKE_PROFIT_MARKET) close-position order on
    /// the exchange for every held symbol.
    pub exchange_protection: bool,
    /// A protection request not answered within this raises an alarm and is sent again.
    pub protect_deadline: i64,
    /// While a stop on the right side is in place, the symbol's orders are adjusted (a new lot
    /// moved the loosest stop or the farthest target) at most this often.
    pub protect_min_interval: i64,
    /// How many conditional orders quantum may keep on the account (Binance allows 200 across all
    /// symbols; leave room for the user's own). Stops come first, take-profits where budget is left.
    pub conditional_budget: usize,
    /// The exchange-side orders sit this many percent beyond the monitor's own levels, so the
    /// monitor acts first while it runs.
    pub net_offset_pct: Decimal,
    /// Positions are read at least this often, and a read not answered in `protect_deadline` is
    /// asked again.
    pub reconcile_every: i64,
    /// News from the user stream about a held symbol triggers a position read at most this often.
    pub news_debounce: i64,
    /// A position the book does not explain is adopted only once it has been seen for this long,
    /// so a result still on its way is applied first and the position is not tracked twice.
    pub adopt_after: i64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            default_plan: ExitPlan::default(),
            close_deadline: 20_000,
            close_deadline_max: 120_000,
            exchange_protection: true,
            protect_deadline: 15_000,
            protect_min_interval: 2_000,
            conditional_budget: 190,
            net_offset_pct: Decimal::new(5, 1),
            reconcile_every: 30_000,
            news_debounce: 1_000,
            adopt_after: 10_000,
        }
    }
}

/// The position a lot belongs to: a symbol, and on a hedge-mode account one of its two sides
/// (`Both` on a one-way account). Everything the core keeps per position (lots, protection,
/// reconciliation, alarms) is kept per book, so a hedge account's LONG and SHORT of one symbol
/// are two positions with their own protective orders, as Binance keeps them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Book {
    pub symbol: String,
    pub side: PositionSide,
}

impl Book {
    pub fn new(symbol: impl Into<String>, side: PositionSide) -> Book {
        Book {
            symbol: symbol.into(),
            side,
        }
    }

    /// One-way mode's book of `symbol`.
    pub fn both(symbol: impl Into<String>) -> Book {
        Book::new(symbol, PositionSide::Both)
    }

    /// Whether a lot of this direction can be in this book (a hedge side holds one direction).
    fn admits(&self, direction: Direction) -> bool {
        match self.side {
            PositionSide::Both => true,
            PositionSide::Long => direction == Direction::Long,
            PositionSide::Short => direction == Direction::Short,
        }
    }
}

/// `AXSUSDT` in one-way mode, `AXSUSDT LONG` in hedge mode: what logs and alarms say.
impl std::fmt::Display for Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.side {
            PositionSide::Both => f.write_str(&self.symbol),
            side => write!(f, "{} {side}", self.symbol),
        }
    }
}

/// Where a lot is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Watching prices.
    Watching,
    /// A close is in flight.
    Closing(Closing),
    /// The last close failed; the next attempt goes out at `until`, whatever the price does (the
    /// decision to exit stands).
    Backoff { until: i64, trigger: Trigger },
}

/// A close in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub intent_id: String,
    pub trigger: Trigger,
    pub qty: Decimal,
    pub sent_at: i64,
    pub deadline: i64,
    pub attempt: u32,
}

/// One filled entry being watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    /// The opening intent's id (or `exchange-<symbol>-<ms>` for an adopted position).
    pub id: String,
    pub symbol: String,
    /// `Both` on a one-way account; the hedge side the lot is on otherwise.
    pub side: PositionSide,
    pub direction: Direction,
    pub qty: Decimal,
    pub entry: Decimal,
    pub entry_fee: Decimal,
    /// `None`: no plan could be resolved (the position is tracked, and alarmed).
    pub levels: Option<Levels>,
    pub trail: TrailState,
    pub opened_at: i64,
    /// When the core last changed the lot's quantity (a position read taken before this cannot
    /// judge it).
    pub changed_at: i64,
    pub adopted: bool,
    pub phase: Phase,
    /// Closes sent so far; attempt `n` has the id `IntentId::close_of(id, n)`.
    pub attempts: u32,
    pub failed_closes: u32,
}

impl Lot {
    /// The position the lot belongs to.
    pub fn book(&self) -> Book {
        Book::new(self.symbol.clone(), self.side)
    }

    fn signed(&self) -> Decimal {
        match self.direction {
            Direction::Long => self.qty,
            Direction::Short => -self.qty,
        }
    }

    /// Whether a close of this lot is in flight and not yet past its deadline.
    pub fn closing_until(&self) -> Option<i64> {
        match &self.phase {
            Phase::Closing(c) => Some(c.deadline),
            _ => None,
        }
    }
}

/// The exchange-side protection a symbol should have, in prices before rounding to the tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub direction: Direction,
    pub stop: Option<Decimal>,
    pub target: Option<Decimal>,
}

/// What kind of trouble an alarm is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmKind {
    /// A close was not answered by its deadline.
    CloseOverdue,
    /// A close was answered without a fill.
    CloseFailed,
    /// The exchange refused or did not answer a protection request.
    ProtectionFailed,
    /// Protection requested but not confirmed by its deadline.
    ProtectionOverdue,
    /// No stop fits in the conditional-order budget.
    NoBudget,
    /// The lots of the symbol have no stop-loss (configuration allows it, or no plan applies).
    NoStop,
    /// Position reads fail or go unanswered: the book cannot be checked against the exchange.
    PositionsUnknown,
}

impl AlarmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::CloseOverdue => "close_overdue",
            AlarmKind::CloseFailed => "close_failed",
            AlarmKind::ProtectionFailed => "protection_failed",
            AlarmKind::ProtectionOverdue => "protection_overdue",
            AlarmKind::NoBudget => "no_budget",
            AlarmKind::NoStop => "no_stop",
            AlarmKind::PositionsUnknown => "positions_unknown",
        }
    }

    pub const ALL: [AlarmKind; 7] = [
        AlarmKind::CloseOverdue,
        AlarmKind::CloseFailed,
        AlarmKind::ProtectionFailed,
        AlarmKind::ProtectionOverdue,
        AlarmKind::NoBudget,
        AlarmKind::NoStop,
        AlarmKind::PositionsUnknown,
    ];
}

/// An alarm's key: one per kind and book, as the book displays (`""` for the whole account).
pub type AlarmKey = (String, AlarmKind);

/// One exchange position, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub symbol: String,
    /// `Both` on a one-way account.
    pub side: PositionSide,
    /// Signed: positive long (a hedge account's SHORT side reads negative, as Binance sends it).
    pub amount: Decimal,
    pub entry: Decimal,
}

/// What happens to the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An execution result from the bus (an entry's or a close's).
    Result(Box<ExecutionResult>),
    /// A mark price.
    Mark { symbol: String, price: Decimal },
    /// The answer to `ReadPositions { seq }`: every non-zero position of the account, read by a
    /// request sent at `requested_at`.
    Positions {
        seq: u64,
        requested_at: i64,
        positions: Vec<Position>,
    },
    /// `ReadPositions { seq }` failed.
    PositionsFailed { seq: u64, error: String },
    /// The user stream says a position or one of its conditional orders changed;
    /// `exit_price` is the average price of a protective order of quantum's that filled.
    News {
        book: Book,
        exit_price: Option<Decimal>,
    },
    /// The outcome of `Protect { seq }`.
    Protected {
        book: Book,
        seq: u64,
        outcome: Result<(), String>,
    },
    /// The outcome of `PublishClose`.
    ClosePublished {
        intent_id: String,
        outcome: Result<(), String>,
    },
    /// Time passes (the service sends this a few times a second).
    Timer,
}

impl From<ExecutionResult> for Event {
    fn from(result: ExecutionResult) -> Event {
        Event::Result(Box::new(result))
    }
}

/// What the core asks the service to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Publish a reduce-only CLOSE intent for `qty` of `book`, closing `lots` (named after
    /// the first, `lot`).
    PublishClose {
        lot: String,
        lots: Vec<String>,
        book: Book,
        intent_id: String,
        qty: Decimal,
        trigger: Trigger,
        attempt: u32,
    },
    /// Make the book's exchange-side protective orders match `net` (`None`: cancel them all),
    /// then answer with `Event::Protected { seq }`. One per book at a time.
    Protect {
        book: Book,
        seq: u64,
        net: Option<Net>,
    },
    /// Read every position of the account, then answer with `Event::Positions { seq }`.
    ReadPositions { seq: u64 },
    /// Raise an alarm: an ERROR log and a metric, until cleared.
    Alarm { key: AlarmKey, message: String },
    /// The alarm's cause is gone.
    ClearAlarm { key: AlarmKey },
    /// The result entry cannot be used as it is: dead-letter it with the reason (the core may
    /// still act on it, e.g. track the position under the default plan).
    Refuse { intent_id: String, reason: String },
    /// Save these lots and forget those; remember these applied result ids (for redeliveries).
    Persist {
        lots: Vec<Lot>,
        removed: Vec<String>,
        applied: Vec<(String, i64)>,
        forgotten: Vec<String>,
    },
    /// Something worth an INFO/WARN line.
    Note(Box<Note>),
}

/// Where a new lot's levels came from, for the log line that says it is tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanSource {
    /// The intent's plan as given.
    Intent,
    /// The intent's plan, which had no stop-loss, with the default plan's stop-loss added.
    IntentWithDefaultStop,
    /// The default plan (the intent gave none, or its plan could not apply).
    Default,
}

/// Facts for the log and the metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    Opened {
        lot: Lot,
        plan: PlanSource,
    },
    Adopted {
        lot: Lot,
    },
    TrailUpdate {
        lot: String,
        symbol: String,
        peak: Decimal,
    },
    Triggered {
        lot: String,
        symbol: String,
        trigger: Trigger,
        mark: Decimal,
    },
    Closed {
        lot: Lot,
        exit_price: Decimal,
        exit_qty: Decimal,
        realized_pnl: Option<Decimal>,
        /// The lot's entry fee plus the close's commission (as far as the exchange stated it).
        fees: Decimal,
        /// What the close was sent for (`None`: a close the core no longer had in flight).
        trigger: Option<Trigger>,
        close_sent_at: i64,
    },
    /// Part of a lot left the book (a partial close fill, a netting, a partial exit on the
    /// exchange); the rest stays open.
    Reduced {
        lot: String,
        closed: Decimal,
        remaining: Decimal,
        /// The lot as it was before (side, direction, entry, when it opened).
        held: Box<Lot>,
        reason: ExitReason,
        exit_price: Option<Decimal>,
        /// Of the part that left, net of `fees`.
        realized_pnl: Option<Decimal>,
        /// The entry fee's share of the part, plus its share of the close's commission.
        fees: Decimal,
    },
    /// A lot that left the book without a close of its own: closed on the exchange (its
    /// protective order fired, by hand), netted by an opposite entry, closed by an unexpected
    /// fill, or taken over by its own result after an adoption. `exit_price` where known (the
    /// protective order's fill from ALGO_UPDATE, the fill that netted or closed it).
    Exited {
        lot: String,
        symbol: String,
        qty: Decimal,
        why: String,
        /// Closed on the exchange, not by quantum (counted as such).
        on_exchange: bool,
        exit_price: Option<Decimal>,
        realized_pnl: Option<Decimal>,
        /// The lot as it was before it left (side, direction, entry, when it opened).
        held: Box<Lot>,
        reason: ExitReason,
        /// The entry fee's share of what left (no exit fee is known for these exits).
        fees: Decimal,
    },
    /// A fill the book did not expect (a late close, a CLOSE intent sent by someone else) reduced
    /// the symbol's lots.
    UnexpectedClose {
        intent_id: String,
        symbol: String,
        qty: Decimal,
        unmatched: Decimal,
    },
    /// A BUY on a symbol held short (or a SELL on a long) reduced the opposite lots, as one-way
    /// mode nets it.
    Netted {
        intent_id: String,
        symbol: String,
        qty: Decimal,
    },
    Ignored {
        intent_id: String,
        why: String,
    },
}

#[derive(Debug, Clone, Default)]
struct SymbolState {
    mark: Option<Decimal>,
    /// What the exchange should hold; recomputed when the lots change.
    wanted: Option<Net>,
    /// The net without the budget, and when the oldest lot opened: cached per symbol, so a
    /// change of one symbol does not recompute the others.
    full: Option<Net>,
    first_opened: i64,
    /// When the last protection request completed (for the resync throttle).
    last_done: i64,
    /// The fill price of the symbol's protective order that fired, until the lots it closed are
    /// recorded.
    exchange_exit: Option<Decimal>,
    /// See `Core::band`.
    band: Option<(Option<Decimal>, Option<Decimal>)>,
    /// The mark price the symbol's lots were last evaluated at.
    evaluated_at: Option<Decimal>,
    /// What the exchange was last confirmed to hold: `None` unknown, `Some(None)` nothing.
    placed: Option<Option<Net>>,
    /// A protection request in flight: (seq, deadline), and the net it asked for.
    pending: Option<(u64, i64)>,
    request: Option<Net>,
    /// After a failure, the next request goes out at this time.
    retry_at: Option<i64>,
    failures: u32,
    /// A position the book does not explain: (first seen at, signed amount, entry).
    unexplained: Option<(i64, Decimal, Decimal)>,
}

/// The decision core.
#[derive(Debug)]
pub struct Core {
    config: Config,
    lots: BTreeMap<String, Lot>,
    by_symbol: BTreeMap<Book, BTreeSet<String>>,
    /// Close intent id → the lots it closes, for every attempt of every tracked lot. The lots of
    /// one symbol that trigger together are closed by one order.
    closes: BTreeMap<String, Vec<String>>,
    /// Result intent ids already applied (with when), so a redelivered result does nothing.
    applied: BTreeMap<String, i64>,
    symbols: BTreeMap<Book, SymbolState>,
    alarms: BTreeMap<AlarmKey, String>,
    next_seq: u64,
    /// A position read in flight: (seq, requested at, deadline).
    reading: Option<(u64, i64, i64)>,
    last_read: i64,
    read_failures: u32,
    /// The user stream reported a change since the last position read.
    news: bool,
    last_prune: i64,
    // What changed during one `apply`, for the one Persist command at its end.
    dirty: BTreeSet<String>,
    removed: BTreeSet<String>,
    newly_applied: Vec<(String, i64)>,
    forgotten: Vec<String>,
    nets_dirty: BTreeSet<Book>,
}

/// Redeliveries come within minutes; a week is far beyond that.
const APPLIED_KEEP: i64 = 7 * 24 * 3600 * 1000;

impl Core {
    pub fn new(config: Config) -> Core {
        Core {
            config,
            lots: BTreeMap::new(),
            by_symbol: BTreeMap::new(),
            closes: BTreeMap::new(),
            applied: BTreeMap::new(),
            symbols: BTreeMap::new(),
            alarms: BTreeMap::new(),
            next_seq: 1,
            reading: None,
            last_read: i64::MIN / 2,
            read_failures: 0,
            news: false,
            last_prune: 0,
            dirty: BTreeSet::new(),
            removed: BTreeSet::new(),
            newly_applied: Vec::new(),
            forgotten: Vec::new(),
            nets_dirty: BTreeSet::new(),
        }
    }

    /// Rebuilds a core from persisted lots and applied ids. Nothing is placed yet: the first
    /// `Timer` reads the positions and asserts protection for every held book.
    pub fn restore(
        config: Config,
        lots: impl IntoIterator<Item = Lot>,
        applied: impl IntoIterator<Item = (String, i64)>,
    ) -> Core {
        let mut core = Core::new(config);
        for lot in lots {
            core.insert(lot);
        }
        core.applied.extend(applied);
        let books: Vec<Book> = core.by_symbol.keys().cloned().collect();
        for book in books {
            // What the exchange holds is unknown (`placed: None`), so protection is re-asserted
            // on the first event.
            core.nets_dirty.insert(book);
        }
        core.dirty.clear();
        core
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn lots(&self) -> impl Iterator<Item = &Lot> {
        self.lots.values()
    }

    pub fn lot(&self, id: &str) -> Option<&Lot> {
        self.lots.get(id)
    }

    pub fn lots_of<'a>(&'a self, book: &Book) -> impl Iterator<Item = &'a Lot> + 'a {
        self.by_symbol
            .get(book)
            .into_iter()
            .flatten()
            .filter_map(|id| self.lots.get(id))
    }

    /// The books (positions) held.
    pub fn books(&self) -> impl Iterator<Item = &Book> {
        self.by_symbol.keys()
    }

    /// The books held on `symbol` (one in one-way mode, up to two in hedge mode).
    pub fn books_of<'a>(&'a self, symbol: &'a str) -> impl Iterator<Item = &'a Book> + 'a {
        self.by_symbol
            .range(Book::both(symbol)..)
            .map(|(book, _)| book)
            .take_while(move |book| book.symbol == symbol)
    }

    /// Signed quantity the core holds in `book` (positive long).
    pub fn net_qty(&self, book: &Book) -> Decimal {
        net(self.lots_of(book))
    }

    pub fn alarms(&self) -> impl Iterator<Item = (&AlarmKey, &String)> {
        self.alarms.iter()
    }

    /// Whether the book has a raised alarm.
    pub fn alarmed(&self, book: &Book) -> bool {
        let name = book.to_string();
        self.alarms.keys().any(|(s, _)| *s == name || s.is_empty())
    }

    /// Whether the exchange was confirmed to hold a stop for the book on the side of its lots
    /// (perhaps not yet at the level wanted now: adjustments are throttled).
    pub fn protected(&self, book: &Book) -> bool {
        self.symbols.get(book).is_some_and(|s| {
            // A request in flight may be changing what is placed.
            s.pending.is_none()
                && s.placed.flatten().zip(s.wanted).is_some_and(|(p, w)| {
                    p.stop.is_some() && w.stop.is_some() && p.direction == w.direction
                })
        })
    }

    /// Whether the exchange holds exactly what the book should have now.
    pub fn protection_settled(&self, book: &Book) -> bool {
        self.symbols
            .get(book)
            .is_none_or(|s| s.pending.is_none() && s.placed == Some(s.wanted))
    }

    /// Books where the exchange holds more than the core explains (seen in a position read,
    /// not yet adopted): positions quantum does not track.
    pub fn untracked_count(&self) -> usize {
        self.symbols
            .values()
            .filter(|s| s.unexplained.is_some())
            .count()
    }

    /// Lots tracked.
    pub fn len(&self) -> usize {
        self.lots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lots.is_empty()
    }

    /// Books held (symbols in one-way mode).
    pub fn book_count(&self) -> usize {
        self.by_symbol.len()
    }

    /// A protection request for the book in flight, with its deadline.
    pub fn protecting_until(&self, book: &Book) -> Option<i64> {
        self.symbols
            .get(book)
            .and_then(|s| s.pending.map(|(_, d)| d))
    }

    /// The net the book should have on the exchange.
    pub fn wanted(&self, book: &Book) -> Option<Net> {
        self.symbols.get(book).and_then(|s| s.wanted)
    }

    /// Applies one event at `now` (ms) and returns what to do.
    pub fn apply(&mut self, now: i64, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        // A mark price changes no net (levels are fixed when a lot opens): protection is looked
        // at on other events only, or when lots came or went, so a frame of 400 prices does not
        // scan 400 symbols 400 times.
        let look_at_protection = !matches!(event, Event::Mark { .. });
        match event {
            Event::Result(result) => self.on_result(now, *result, &mut out),
            Event::Mark { symbol, price } => self.on_mark(now, &symbol, price, &mut out),
            Event::Positions {
                seq,
                requested_at,
                positions,
            } => self.on_positions(now, seq, requested_at, positions, &mut out),
            Event::PositionsFailed { seq, error } => self.read_failed(seq, &error, &mut out),
            Event::News { book, exit_price } => {
                // A held book's position or protective order changed, or a position appeared
                // where the core holds nothing: read the positions (debounced).
                if let (Some(price), Some(state)) = (exit_price, self.symbols.get_mut(&book)) {
                    state.exchange_exit = Some(price);
                }
                self.news = true;
            }
            Event::Protected { book, seq, outcome } => {
                self.on_protected(now, &book, seq, outcome, &mut out)
            }
            Event::ClosePublished { intent_id, outcome } => {
                if let Err(error) = outcome {
                    self.on_close_unanswered(
                        now,
                        &intent_id,
                        &format!("the close could not be published: {error}"),
                        &mut out,
                    );
                }
            }
            Event::Timer => self.on_timer(now, &mut out),
        }
        let lots_changed = self.refresh(&mut out);
        if look_at_protection || lots_changed {
            self.plan_protection(now, &mut out);
        }
        self.settle(&mut out);
        out
    }

    // ----- results -----

    fn on_result(&mut self, now: i64, result: ExecutionResult, out: &mut Vec<Command>) {
        let (Some(intent_id), Some(symbol), Some(action)) =
            (result.intent_id(), result.symbol(), result.action())
        else {
            // Only a `rejected` result for a document that was not a valid intent lacks these
            // (`ExecutionResult` reads no other without them): no order was placed for it.
            out.push(Command::Note(Box::new(Note::Ignored {
                intent_id: result.intent_id_str().to_string(),
                why: format!(
                    "{} for a document that was not a valid intent: nothing to track",
                    result.status().as_str()
                ),
            })));
            return;
        };
        let answered = Answered {
            intent_id: intent_id.to_string(),
            book: Book::new(
                symbol.as_str(),
                result.position_side().unwrap_or(PositionSide::Both),
            ),
            result: &result,
        };
        let direction = match action {
            Action::Buy => Some(Direction::Long),
            Action::Sell => Some(Direction::Short),
            Action::Close => None,
        };
        if !result.status().has_fill() {
            if direction.is_none() {
                self.on_close_failed(now, &answered, out);
            } else {
                out.push(Command::Note(Box::new(Note::Ignored {
                    intent_id: answered.intent_id,
                    why: format!(
                        "{} with no fill: nothing to track",
                        result.status().as_str()
                    ),
                })));
            }
            return;
        }
        if self.applied.contains_key(&answered.intent_id) {
            out.push(Command::Note(Box::new(Note::Ignored {
                intent_id: answered.intent_id,
                why: "already applied (a redelivery)".into(),
            })));
            return;
        }
        self.applied.insert(answered.intent_id.clone(), now);
        self.newly_applied.push((answered.intent_id.clone(), now));
        match direction {
            Some(direction) => self.open(now, &answered, direction, out),
            None => self.on_close_fill(now, &answered, out),
        }
    }

    fn open(
        &mut self,
        now: i64,
        answered: &Answered<'_>,
        direction: Direction,
        out: &mut Vec<Command>,
    ) {
        let result = answered.result;
        let book = answered.book.clone();
        if !book.admits(direction) {
            // A hedge side holds one direction: a result that says otherwise was not written by
            // quantum's execution service. The position it claims is found by the next read.
            out.push(Command::Refuse {
                intent_id: answered.intent_id.clone(),
                reason: format!(
                    "a {} fill on the {} side: a hedge side holds one direction; not tracked from this result (the position read adopts what the exchange holds)",
                    result.action().map_or("", Action::as_str),
                    book.side
                ),
            });
            return;
        }
        let mut qty = result.executed_qty();
        // One-way mode nets: a SELL on a symbol held long first reduces the long lots (a hedge
        // side holds one direction, so there is nothing opposite in its book).
        let opposite: Vec<String> = self
            .lots_of(&book)
            .filter(|l| l.direction != direction)
            .map(|l| l.id.clone())
            .collect();
        if !opposite.is_empty() {
            let taken = self.reduce_lots(
                now,
                &book,
                &opposite,
                qty,
                "netted by an opposite entry",
                ExitReason::Netted,
                Exit::At(result.entry_price()),
                out,
            );
            out.push(Command::Note(Box::new(Note::Netted {
                intent_id: answered.intent_id.clone(),
                symbol: book.to_string(),
                qty: taken,
            })));
            qty -= taken;
            if qty <= Decimal::ZERO {
                return;
            }
        }
        // A position adopted from the exchange before this result arrived is this result's fill
        // (the adoption happened after the fill): the result's lot takes that quantity over.
        let filled_at = result.filled_at().unwrap_or(result.published_at());
        let adopted: Vec<String> = self
            .lots_of(&book)
            .filter(|l| l.adopted && l.direction == direction && l.opened_at >= filled_at)
            .map(|l| l.id.clone())
            .collect();
        if !adopted.is_empty() {
            self.reduce_lots(
                now,
                &book,
                &adopted,
                qty,
                "the result of an adopted position arrived",
                ExitReason::TakenOver,
                Exit::TakenOver,
                out,
            );
        }
        let (levels, plan) = self.resolve(answered, direction, out);
        let lot = Lot {
            id: answered.intent_id.clone(),
            symbol: book.symbol.clone(),
            side: book.side,
            direction,
            qty,
            entry: result.entry_price(),
            // Unknown fees (the result says null, and the service logged why) are left out of
            // the realized PnL rather than guessed.
            entry_fee: result.commission().unwrap_or_default(),
            trail: TrailState {
                peak: result.entry_price(),
            },
            levels,
            opened_at: filled_at,
            changed_at: now,
            adopted: false,
            phase: Phase::Watching,
            attempts: 0,
            failed_closes: 0,
        };
        out.push(Command::Note(Box::new(Note::Opened {
            lot: lot.clone(),
            plan,
        })));
        let id = lot.id.clone();
        self.insert(lot);
        // A fill already past a level (slippage beyond the target or the stop) closes at once.
        self.evaluate(now, &book, &[id], result.entry_price(), out);
    }

    /// The lot's levels: the intent's plan, else the default; a plan that cannot apply is
    /// refused (dead letter) and the default plan protects the position instead. A plan without
    /// a stop-loss gets the default's (regression: chaos seed 11 found lots with a take-profit
    /// or a trailing stop only, tracked and protected by nothing below the entry).
    fn resolve(
        &self,
        answered: &Answered<'_>,
        direction: Direction,
        out: &mut Vec<Command>,
    ) -> (Option<Levels>, PlanSource) {
        let result = answered.result;
        let entry = result.entry_price();
        if !result.exit_plan().is_empty() {
            match Levels::resolve_at_fill(direction, entry, result.exit_plan()) {
                Ok(levels) if levels.stop_loss.is_some() => {
                    return (Some(levels), PlanSource::Intent)
                }
                Ok(mut levels) => {
                    let stop_only = ExitPlan {
                        stop_loss: self.config.default_plan.stop_loss,
                        ..ExitPlan::default()
                    };
                    let default_stop = Levels::resolve_at_fill(direction, entry, &stop_only)
                        .ok()
                        .and_then(|l| l.stop_loss);
                    return match default_stop {
                        Some(stop) => {
                            levels.stop_loss = Some(stop);
                            (Some(levels), PlanSource::IntentWithDefaultStop)
                        }
                        // The default has no stop-loss (exit.allow_unprotected) or it cannot
                        // apply at this entry: the intent's plan as given.
                        None => (Some(levels), PlanSource::Intent),
                    };
                }
                Err(e) => out.push(Command::Refuse {
                    intent_id: answered.intent_id.clone(),
                    reason: format!("exit plan cannot apply ({e}); the position is tracked under the default plan"),
                }),
            }
        }
        match Levels::resolve_at_fill(direction, entry, &self.config.default_plan) {
            Ok(levels) => (Some(levels), PlanSource::Default),
            Err(e) => {
                out.push(Command::Refuse {
                    intent_id: answered.intent_id.clone(),
                    reason: format!("the default plan cannot apply either ({e}); the position is tracked without levels"),
                });
                (None, PlanSource::Default)
            }
        }
    }

    fn on_close_fill(&mut self, now: i64, answered: &Answered<'_>, out: &mut Vec<Command>) {
        let (result, intent_id) = (answered.result, &answered.intent_id);
        let book = answered.book.clone();
        let ids = self.closes.get(intent_id).cloned().unwrap_or_default();
        let mut left = result.executed_qty();
        // The lots this close was sent for take the fill in order; those it was the live close
        // of and that are not flat continue under a new id (the decision to exit stands).
        let mut continuing: Vec<(String, Trigger)> = Vec::new();
        for id in &ids {
            let Some(lot) = self.lots.get(id).cloned() else {
                continue;
            };
            let live = match &lot.phase {
                Phase::Closing(c) if &c.intent_id == intent_id => Some(c.clone()),
                _ => None,
            };
            let closed = left.min(lot.qty);
            left -= closed;
            let remaining = lot.qty - closed;
            // One close can cover several lots: each pays its share of the commission.
            let commission = result.commission().unwrap_or_default();
            let exit_fee =
                share_of(commission, closed, result.executed_qty()).unwrap_or(commission);
            if remaining.is_zero() {
                let pnl = realized(&lot, result.entry_price(), closed, exit_fee);
                self.remove(id);
                out.push(Command::Note(Box::new(Note::Closed {
                    lot: lot.clone(),
                    exit_price: result.entry_price(),
                    exit_qty: closed,
                    realized_pnl: pnl,
                    fees: share_of(lot.entry_fee, closed, lot.qty)
                        .and_then(|f| f.checked_add(exit_fee))
                        .unwrap_or(exit_fee),
                    trigger: live.as_ref().map(|c| c.trigger),
                    close_sent_at: live.as_ref().map_or(now, |c| c.sent_at),
                })));
                continue;
            }
            if !closed.is_zero() {
                let share = share_of(lot.entry_fee, closed, lot.qty);
                let pnl = realized(&lot, result.entry_price(), closed, exit_fee);
                let l = self.lots.get_mut(id).expect("checked");
                l.qty = remaining;
                l.entry_fee -= share.unwrap_or(Decimal::ZERO).min(l.entry_fee);
                l.changed_at = now;
                self.dirty.insert(id.clone());
                out.push(Command::Note(Box::new(Note::Reduced {
                    lot: id.clone(),
                    closed,
                    remaining,
                    held: Box::new(lot.clone()),
                    reason: exit_reason(live.as_ref().map(|c| &c.trigger)),
                    exit_price: Some(result.entry_price()),
                    realized_pnl: pnl,
                    fees: share
                        .and_then(|f| f.checked_add(exit_fee))
                        .unwrap_or(exit_fee),
                })));
            }
            if let Some(c) = live {
                continuing.push((id.clone(), c.trigger));
            }
        }
        if !continuing.is_empty() {
            self.send_close(now, &book, continuing, out);
        }
        self.clear_lot_alarms(&book, out);
        if left > Decimal::ZERO {
            // A late close of a lot already closed, or a CLOSE someone else sent: the exchange's
            // position shrank by this much, so the book does too.
            let ids: Vec<String> = self.lots_of(&book).map(|l| l.id.clone()).collect();
            let taken = self.reduce_lots(
                now,
                &book,
                &ids,
                left,
                "an unexpected close fill",
                ExitReason::UnexpectedClose,
                Exit::At(result.entry_price()),
                out,
            );
            out.push(Command::Note(Box::new(Note::UnexpectedClose {
                intent_id: intent_id.clone(),
                symbol: book.to_string(),
                qty: taken,
                unmatched: left - taken,
            })));
        }
    }

    fn on_close_failed(&mut self, now: i64, answered: &Answered<'_>, out: &mut Vec<Command>) {
        let result = answered.result;
        let why = format!(
            "{}: {}",
            result.status().as_str(),
            result.error().unwrap_or_default()
        );
        match self.closes.get(&answered.intent_id) {
            Some(_) => self.on_close_unanswered(now, &answered.intent_id, &why, out),
            None => out.push(Command::Note(Box::new(Note::Ignored {
                intent_id: answered.intent_id.clone(),
                why: format!("a close this monitor does not track ({why})"),
            }))),
        }
    }

    /// The live close `intent_id` will not fill (refused, failed, not published): its lots back
    /// off, the alarm is raised, and the positions are read (the exchange may have closed them).
    fn on_close_unanswered(
        &mut self,
        now: i64,
        intent_id: &str,
        why: &str,
        out: &mut Vec<Command>,
    ) {
        let ids = self.closes.get(intent_id).cloned().unwrap_or_default();
        let mut book = None;
        let mut worst = (0, 0);
        for id in &ids {
            let Some(lot) = self.lots.get_mut(id) else {
                continue;
            };
            let Phase::Closing(c) = &lot.phase else {
                continue;
            };
            if c.intent_id != intent_id {
                continue;
            }
            let trigger = c.trigger;
            lot.failed_closes += 1;
            let until = now + backoff(lot.failed_closes);
            lot.phase = Phase::Backoff { until, trigger };
            worst = worst.max((lot.failed_closes, until - now));
            book = Some(lot.book());
            self.dirty.insert(id.clone());
        }
        let Some(book) = book else {
            return;
        };
        self.alarm(
            &book,
            AlarmKind::CloseFailed,
            format!("close {intent_id} of {book} ({} lots) FAILED ({why}); the position is still open and protected by its exchange-side stop; retrying in {} ms (failure {})", ids.len(), worst.1, worst.0),
            out,
        );
        self.request_read(now, out);
    }

    // ----- prices -----

    fn on_mark(&mut self, now: i64, symbol: &str, price: Decimal, out: &mut Vec<Command>) {
        if price <= Decimal::ZERO {
            return;
        }
        // A hedge account holds up to two books per symbol; one price moves both.
        let books: Vec<Book> = self.books_of(symbol).cloned().collect();
        for book in &books {
            self.mark_book(now, book, price, out);
        }
    }

    fn mark_book(&mut self, now: i64, book: &Book, price: Decimal, out: &mut Vec<Command>) {
        let Some(ids) = self.by_symbol.get(book) else {
            return;
        };
        let Some(state) = self.symbols.get_mut(book) else {
            return;
        };
        state.mark = Some(price);
        // Nothing can happen at the price the lots were last evaluated at, nor strictly inside
        // the band of their levels: one comparison instead of a pass over the lots.
        let inside = state.band.is_some_and(|(below, above)| {
            below.is_none_or(|b| price > b) && above.is_none_or(|a| price < a)
        });
        if state.evaluated_at == Some(price) || inside {
            state.evaluated_at = Some(price);
            return;
        }
        state.evaluated_at = Some(price);
        let ids: Vec<String> = ids.iter().cloned().collect();
        self.evaluate(now, book, &ids, price, out);
    }

    /// Evaluates the lots `ids` of `book` at `price`; those that trigger are closed together,
    /// by one order.
    fn evaluate(
        &mut self,
        now: i64,
        book: &Book,
        ids: &[String],
        price: Decimal,
        out: &mut Vec<Command>,
    ) {
        let mut triggered = Vec::new();
        for id in ids {
            let Some(lot) = self.lots.get_mut(id) else {
                continue;
            };
            let Some(levels) = lot.levels else {
                continue;
            };
            let e = evaluate(&levels, lot.trail, price);
            if e.state != lot.trail {
                lot.trail = e.state;
                self.dirty.insert(id.clone());
                if e.peak_moved && levels.trailing_pct.is_some() {
                    out.push(Command::Note(Box::new(Note::TrailUpdate {
                        lot: id.clone(),
                        symbol: book.to_string(),
                        peak: e.state.peak,
                    })));
                }
            }
            let Some(trigger) = e.trigger else {
                continue;
            };
            if lot.phase != Phase::Watching {
                continue;
            }
            out.push(Command::Note(Box::new(Note::Triggered {
                lot: id.clone(),
                symbol: book.to_string(),
                trigger,
                mark: price,
            })));
            triggered.push((id.clone(), trigger));
        }
        if !triggered.is_empty() {
            self.send_close(now, book, triggered, out);
        }
    }

    /// Sends one close for `lots` (all of `book`), named after the first of them and its
    /// attempt count, so every attempt has an id of its own.
    fn send_close(
        &mut self,
        now: i64,
        book: &Book,
        lots: Vec<(String, Trigger)>,
        out: &mut Vec<Command>,
    ) {
        let Some((leader, first_trigger)) = lots.first().cloned() else {
            return;
        };
        let lead = self.lots.get_mut(&leader).expect("a tracked lot");
        lead.attempts += 1;
        let attempt = lead.attempts;
        let intent_id = IntentId::close_of(&leader, attempt).as_str().to_string();
        let mut qty = Decimal::ZERO;
        let mut ids = Vec::with_capacity(lots.len());
        for (id, trigger) in lots {
            let lot = self.lots.get_mut(&id).expect("a tracked lot");
            // Lots whose sum does not fit in a decimal cannot go in one order: this one stays
            // watching, triggers again on the next mark, and goes in a close of its own.
            let Some(total) = qty.checked_add(lot.qty) else {
                continue;
            };
            // The lot's round of closing: each after the first waits twice as long, up to the
            // maximum, so an execution service that is down does not collect a pile of closes.
            let round = match &lot.phase {
                Phase::Closing(c) => c.attempt + 1,
                Phase::Backoff { .. } => lot.failed_closes + 1,
                Phase::Watching => 1,
            };
            let wait = self
                .config
                .close_deadline
                .saturating_mul(1i64 << (round - 1).min(16))
                .min(
                    self.config
                        .close_deadline_max
                        .max(self.config.close_deadline),
                );
            lot.phase = Phase::Closing(Closing {
                intent_id: intent_id.clone(),
                trigger,
                qty: lot.qty,
                sent_at: now,
                deadline: now.saturating_add(wait),
                attempt: round,
            });
            qty = total;
            self.dirty.insert(id.clone());
            ids.push(id);
        }
        self.closes.insert(intent_id.clone(), ids.clone());
        out.push(Command::PublishClose {
            lot: leader,
            lots: ids,
            book: book.clone(),
            intent_id,
            qty,
            trigger: first_trigger,
            attempt,
        });
    }

    // ----- positions -----

    fn request_read(&mut self, now: i64, out: &mut Vec<Command>) {
        if self.reading.is_some() {
            return;
        }
        let seq = self.seq();
        self.reading = Some((seq, now, now.saturating_add(self.config.protect_deadline)));
        self.last_read = now;
        out.push(Command::ReadPositions { seq });
    }

    fn on_positions(
        &mut self,
        now: i64,
        seq: u64,
        requested_at: i64,
        positions: Vec<Position>,
        out: &mut Vec<Command>,
    ) {
        if self.reading.is_some_and(|(s, _, _)| s == seq) {
            self.reading = None;
        }
        self.read_failures = 0;
        self.clear_alarm("", AlarmKind::PositionsUnknown, out);
        let mut held: BTreeMap<Book, (Decimal, Decimal)> = BTreeMap::new();
        for p in positions.into_iter().filter(|p| !p.amount.is_zero()) {
            let e = held.entry(Book::new(p.symbol, p.side)).or_default();
            e.0 = e.0.checked_add(p.amount).unwrap_or(e.0);
            e.1 = p.entry;
        }
        let books: BTreeSet<Book> = held
            .keys()
            .cloned()
            .chain(self.by_symbol.keys().cloned())
            .collect();
        for book in books {
            let (amount, entry) = held.get(&book).copied().unwrap_or_default();
            self.reconcile_symbol(now, &book, amount, entry, requested_at, out);
        }
    }

    fn reconcile_symbol(
        &mut self,
        now: i64,
        book: &Book,
        amount: Decimal,
        entry: Decimal,
        as_of: i64,
        out: &mut Vec<Command>,
    ) {
        let lots: Vec<Lot> = self.lots_of(book).cloned().collect();
        // A close in flight settles itself (its result, or its deadline); a lot changed after the
        // read was sent cannot be judged by it.
        if lots
            .iter()
            .any(|l| matches!(l.phase, Phase::Closing(_)) || l.changed_at > as_of)
        {
            return;
        }
        let tracked = net(lots.iter());
        if tracked == amount {
            if let Some(s) = self.symbols.get_mut(book) {
                s.unexplained = None;
            }
            return;
        }
        let same_side = !tracked.is_zero()
            && !amount.is_zero()
            && tracked.is_sign_positive() == amount.is_sign_positive();
        if !tracked.is_zero() && (!same_side || amount.abs() < tracked.abs()) {
            // Flat, flipped or smaller on the exchange: an exchange-side stop fired, or someone
            // closed by hand. The newest lots go first.
            let excess = if same_side {
                tracked.abs() - amount.abs()
            } else {
                tracked.abs()
            };
            let mut newest: Vec<&Lot> = lots.iter().collect();
            newest.sort_by_key(|l| std::cmp::Reverse(l.opened_at));
            let newest: Vec<String> = newest.into_iter().map(|l| l.id.clone()).collect();
            // The protective order's fill price, when the user stream reported it.
            let price = self
                .symbols
                .get_mut(book)
                .and_then(|s| s.exchange_exit.take());
            self.reduce_lots(
                now,
                book,
                &newest,
                excess,
                "closed on the exchange",
                ExitReason::Exchange,
                Exit::OnExchange(price),
                out,
            );
            // What is taken equals `excess` but at the 28-digit edge, where subtracting lot
            // quantities rounds (found by the fuzz test: ...128 taken of ...129); what is left
            // over is reconciled by the next read, so a difference is not a reason to stop.
            if same_side {
                return;
            }
        }
        let tracked = self.net_qty(book);
        let extra = amount - tracked;
        if extra.is_zero() {
            return;
        }
        // More on the exchange than the core explains: adopt it once it has been seen for
        // `adopt_after` (a result on its way is applied first).
        let state = self.symbols.entry(book.clone()).or_default();
        let since = match state.unexplained {
            Some((since, seen, _)) if seen == extra => since,
            _ => {
                state.unexplained = Some((as_of, extra, entry));
                as_of
            }
        };
        if as_of.saturating_sub(since) < self.config.adopt_after {
            return;
        }
        state.unexplained = None;
        self.adopt(now, book, extra, entry, out);
    }

    fn adopt(
        &mut self,
        now: i64,
        book: &Book,
        amount: Decimal,
        entry: Decimal,
        out: &mut Vec<Command>,
    ) {
        let direction = if amount > Decimal::ZERO {
            Direction::Long
        } else {
            Direction::Short
        };
        let id = match book.side {
            PositionSide::Both => format!("exchange-{}-{now}", book.symbol),
            side => format!(
                "exchange-{}-{}-{now}",
                book.symbol,
                side.as_str().to_ascii_lowercase()
            ),
        };
        let levels = Levels::resolve_at_fill(direction, entry, &self.config.default_plan).ok();
        let lot = Lot {
            id: id.clone(),
            symbol: book.symbol.clone(),
            side: book.side,
            direction,
            qty: amount.abs(),
            entry,
            entry_fee: Decimal::ZERO,
            levels,
            trail: TrailState { peak: entry },
            opened_at: now,
            changed_at: now,
            adopted: true,
            phase: Phase::Watching,
            attempts: 0,
            failed_closes: 0,
        };
        out.push(Command::Note(Box::new(Note::Adopted { lot: lot.clone() })));
        self.insert(lot);
        if let Some(mark) = self.symbols.get(book).and_then(|s| s.mark) {
            self.evaluate(now, book, &[id], mark, out);
        }
    }

    /// Takes up to `qty` out of the lots `ids`, in that order; returns how much was taken.
    #[allow(clippy::too_many_arguments)]
    fn reduce_lots(
        &mut self,
        now: i64,
        book: &Book,
        ids: &[String],
        qty: Decimal,
        why: &str,
        reason: ExitReason,
        exit: Exit,
        out: &mut Vec<Command>,
    ) -> Decimal {
        let mut left = qty;
        for id in ids {
            if left <= Decimal::ZERO {
                break;
            }
            let Some(lot) = self.lots.get_mut(id) else {
                continue;
            };
            let take = left.min(lot.qty);
            left -= take;
            if take == lot.qty {
                let (on_exchange, exit_price) = match exit {
                    Exit::OnExchange(price) => (true, price),
                    Exit::At(price) => (false, Some(price)),
                    Exit::TakenOver => (false, None),
                };
                let realized_pnl = exit_price.and_then(|p| realized(lot, p, take, Decimal::ZERO));
                out.push(Command::Note(Box::new(Note::Exited {
                    lot: id.clone(),
                    symbol: book.to_string(),
                    qty: take,
                    why: why.to_string(),
                    on_exchange,
                    exit_price,
                    realized_pnl,
                    held: Box::new(lot.clone()),
                    reason: if on_exchange {
                        ExitReason::Exchange
                    } else {
                        reason
                    },
                    fees: share_of(lot.entry_fee, take, lot.qty).unwrap_or(lot.entry_fee),
                })));
                self.remove(id);
            } else {
                let held = Box::new(lot.clone());
                let (on_exchange, exit_price) = match exit {
                    Exit::OnExchange(price) => (true, price),
                    Exit::At(price) => (false, Some(price)),
                    Exit::TakenOver => (false, None),
                };
                let realized_pnl = exit_price.and_then(|p| realized(lot, p, take, Decimal::ZERO));
                // The part that left takes its share of the entry fee with it, as a partial
                // close does, so the lot's last exit does not count it again.
                let fees = share_of(lot.entry_fee, take, lot.qty).unwrap_or(Decimal::ZERO);
                lot.entry_fee -= fees.min(lot.entry_fee);
                lot.qty -= take;
                lot.changed_at = now;
                self.dirty.insert(id.clone());
                out.push(Command::Note(Box::new(Note::Reduced {
                    lot: format!("{id} ({why})"),
                    closed: take,
                    remaining: lot.qty,
                    held,
                    reason: if on_exchange {
                        ExitReason::Exchange
                    } else {
                        reason
                    },
                    exit_price,
                    realized_pnl,
                    fees,
                })));
            }
        }
        if !self.by_symbol.contains_key(book) {
            self.clear_lot_alarms(book, out);
        }
        qty - left
    }

    // ----- protection -----

    fn on_protected(
        &mut self,
        now: i64,
        book: &Book,
        seq: u64,
        outcome: Result<(), String>,
        out: &mut Vec<Command>,
    ) {
        let Some(state) = self.symbols.get_mut(book) else {
            return;
        };
        let Some((pending, _)) = state.pending else {
            return;
        };
        if pending != seq {
            return;
        }
        state.pending = None;
        state.last_done = now;
        match outcome {
            Ok(()) => {
                state.placed = Some(state.request);
                state.failures = 0;
                state.retry_at = None;
                self.clear_alarm(book, AlarmKind::ProtectionFailed, out);
                self.clear_alarm(book, AlarmKind::ProtectionOverdue, out);
                self.forget_if_flat(book);
            }
            Err(error) => {
                state.failures += 1;
                state.placed = None;
                state.retry_at = Some(now + backoff(state.failures));
                let failures = state.failures;
                let message = if self.by_symbol.contains_key(book) {
                    format!("{book} is NOT protected on the exchange: {error} (failure {failures}); the monitor's own triggers still watch it")
                } else {
                    format!("{book} is flat but its protective orders could not be cancelled: {error} (failure {failures})")
                };
                self.alarm(book, AlarmKind::ProtectionFailed, message, out);
            }
        }
    }

    /// Recomputes the nets of changed symbols and the conditional-order budget, and sends the
    /// protection requests that are due.
    fn plan_protection(&mut self, now: i64, out: &mut Vec<Command>) {
        if !self.config.exchange_protection {
            return;
        }
        let every = self.config.protect_min_interval;
        let due: Vec<Book> = self
            .symbols
            .iter()
            .filter(|(_, s)| {
                // A stop on the right side is already in place: the finer adjustment waits
                // `protect_min_interval`, so a burst of lots costs one resync, not one each.
                let covered = s
                    .placed
                    .flatten()
                    .zip(s.wanted)
                    .is_some_and(|(p, w)| p.stop.is_some() && p.direction == w.direction);
                s.pending.is_none()
                    && s.retry_at.is_none_or(|t| now >= t)
                    && s.placed != Some(s.wanted)
                    && (!covered || now.saturating_sub(s.last_done) >= every)
            })
            .map(|(book, _)| book.clone())
            .collect();
        for book in due {
            let seq = self.seq();
            let deadline = now.saturating_add(self.config.protect_deadline);
            let state = self.symbols.get_mut(&book).expect("listed");
            state.pending = Some((seq, deadline));
            let net = state.wanted;
            state.request = net;
            out.push(Command::Protect { book, seq, net });
        }
    }

    /// Recomputes what is cached per book whose lots came or went: the net without the
    /// budget, when its oldest lot opened, and the band of prices inside which none of its lots
    /// can trigger. Then the budget, when protection is on. Returns whether anything changed.
    fn refresh(&mut self, out: &mut Vec<Command>) -> bool {
        let changed = std::mem::take(&mut self.nets_dirty);
        if changed.is_empty() {
            return false;
        }
        for book in &changed {
            let full = self.full_net(book);
            let first = self.lots_of(book).map(|l| l.opened_at).min().unwrap_or(0);
            let band = self.band(book);
            if let Some(state) = self.symbols.get_mut(book) {
                state.full = full;
                state.first_opened = first;
                state.band = band;
                // New lots have not been evaluated at the last mark yet.
                state.evaluated_at = None;
            }
        }
        if self.config.exchange_protection {
            self.budget(out);
        }
        true
    }

    /// The prices strictly between which no lot of the book triggers: (highest level that
    /// fires when the price falls to it, lowest that fires when the price rises to it). `None`
    /// when a lot has a trailing stop (its peak moves with every price) or no levels.
    fn band(&self, book: &Book) -> Option<(Option<Decimal>, Option<Decimal>)> {
        let (mut below, mut above): (Option<Decimal>, Option<Decimal>) = (None, None);
        for lot in self.lots_of(book) {
            let levels = lot.levels?;
            if levels.trailing_pct.is_some() {
                return None;
            }
            let (falls, rises) = match lot.direction {
                Direction::Long => (levels.stop_loss, levels.take_profit),
                Direction::Short => (levels.take_profit, levels.stop_loss),
            };
            if let Some(l) = falls {
                below = Some(below.map_or(l, |b| b.max(l)));
            }
            if let Some(l) = rises {
                above = Some(above.map_or(l, |a| a.min(l)));
            }
        }
        Some((below, above))
    }

    /// Stops first, take-profits where budget is left; symbols in the order their oldest lot
    /// opened (a position keeps its orders when others come).
    fn budget(&mut self, out: &mut Vec<Command>) {
        let mut order: Vec<(i64, &Book, Option<Net>)> = self
            .by_symbol
            .keys()
            .filter_map(|s| self.symbols.get(s).map(|st| (st.first_opened, s, st.full)))
            .collect();
        order.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut left = self.config.conditional_budget;
        let mut nets: Vec<(Book, Option<Net>, Option<Net>)> = Vec::new();
        for (_, book, full) in &order {
            let stop = full.and_then(|n| n.stop);
            let stop = if stop.is_some() && left > 0 {
                left -= 1;
                stop
            } else {
                None
            };
            nets.push(((*book).clone(), full.map(|n| Net { stop, ..n }), *full));
        }
        for (_, net, full) in nets.iter_mut() {
            let target = full.and_then(|n| n.target);
            if let Some(n) = net.as_mut() {
                n.target = if target.is_some() && left > 0 {
                    left -= 1;
                    target
                } else {
                    None
                };
            }
        }
        for (book, net, full) in nets {
            let no_stop = net.is_none_or(|n| n.stop.is_none());
            if no_stop && full.is_some_and(|n| n.stop.is_some()) {
                self.alarm(&book, AlarmKind::NoBudget, format!("{book} has NO exchange-side stop: the {} conditional orders of the budget are used; only the monitor's own triggers protect it", self.config.conditional_budget), out);
            } else {
                self.clear_alarm(&book, AlarmKind::NoBudget, out);
            }
            if no_stop && full.is_none_or(|n| n.stop.is_none()) {
                self.alarm(&book, AlarmKind::NoStop, format!("{book} has NO stop-loss (no plan gives one, or its level cannot be computed); only the take-profit or nothing protects it"), out);
            } else {
                self.clear_alarm(&book, AlarmKind::NoStop, out);
            }
            // A net without any order is no net: nothing to place, everything to cancel.
            let net = net.filter(|n| n.stop.is_some() || n.target.is_some());
            self.symbols.entry(book).or_default().wanted = net;
        }
        // Flat symbols want nothing.
        let flat: Vec<Book> = self
            .symbols
            .keys()
            .filter(|s| !self.by_symbol.contains_key(*s))
            .cloned()
            .collect();
        for book in flat {
            self.symbols.get_mut(&book).expect("listed").wanted = None;
            self.forget_if_flat(&book);
        }
    }

    /// The book's protection without the budget: the loosest stop and the farthest target
    /// over its lots, `net_offset_pct` beyond; a level that cannot be computed is left out.
    fn full_net(&self, book: &Book) -> Option<Net> {
        let lots: Vec<&Lot> = self.lots_of(book).collect();
        let direction = lots.first()?.direction;
        let long = direction == Direction::Long;
        let all = |f: fn(&Levels) -> Option<Decimal>| -> Option<Vec<Decimal>> {
            lots.iter().map(|l| l.levels.as_ref().and_then(f)).collect()
        };
        // A stop is looser the farther it is from the price: lowest for a long. The net sits at
        // the loosest stop of the lots that have one: a lot without a stop (allowed by
        // configuration) is closed with the others rather than leave them all without a net.
        let stops = lots
            .iter()
            .filter_map(|l| l.levels.as_ref().and_then(|l| l.stop_loss));
        let stop = if long { stops.min() } else { stops.max() };
        // A take-profit closes the whole position, so it is placed only when every lot has one.
        let target = all(|l| l.take_profit).and_then(|v| {
            if long {
                v.into_iter().max()
            } else {
                v.into_iter().min()
            }
        });
        let beyond = |level: Decimal, up: bool| -> Option<Decimal> {
            let offset = level
                .checked_mul(self.config.net_offset_pct)?
                .checked_div(Decimal::ONE_HUNDRED)?;
            let v = if up {
                level.checked_add(offset)?
            } else {
                level.checked_sub(offset)?
            };
            (v > Decimal::ZERO).then_some(v)
        };
        Some(Net {
            direction,
            stop: stop.and_then(|s| beyond(s, !long)),
            target: target.and_then(|t| beyond(t, long)),
        })
    }

    // ----- the timer -----

    fn on_timer(&mut self, now: i64, out: &mut Vec<Command>) {
        // Closes past their deadline: alarm, re-assert protection, retry under a new id.
        let mut overdue: BTreeMap<String, Vec<(String, Trigger)>> = BTreeMap::new();
        for lot in self.lots.values() {
            if let Phase::Closing(c) = &lot.phase {
                if now >= c.deadline {
                    overdue
                        .entry(c.intent_id.clone())
                        .or_default()
                        .push((lot.id.clone(), c.trigger));
                }
            }
        }
        for (intent_id, lots) in overdue {
            let book = self.lots[&lots[0].0].book();
            self.alarm(
                &book,
                AlarmKind::CloseOverdue,
                format!("close {intent_id} of {book} ({} lots) got no answer by its deadline; protection re-asserted, retrying under a new id", lots.len()),
                out,
            );
            if let Some(s) = self.symbols.get_mut(&book) {
                // Ask the exchange again rather than trust what was placed.
                s.placed = None;
            }
            self.request_read(now, out);
            self.send_close(now, &book, lots, out);
        }
        let mut due: BTreeMap<Book, Vec<(String, Trigger)>> = BTreeMap::new();
        for lot in self.lots.values() {
            if let Phase::Backoff { until, trigger } = lot.phase {
                if now >= until {
                    due.entry(lot.book())
                        .or_default()
                        .push((lot.id.clone(), trigger));
                }
            }
        }
        for (book, lots) in due {
            self.send_close(now, &book, lots, out);
        }
        // Protection requests past their deadline.
        let late: Vec<Book> = self
            .symbols
            .iter()
            .filter(|(_, s)| s.pending.is_some_and(|(_, d)| now >= d))
            .map(|(book, _)| book.clone())
            .collect();
        for book in late {
            let state = self.symbols.get_mut(&book).expect("listed");
            state.pending = None;
            state.placed = None;
            state.failures += 1;
            if self.by_symbol.contains_key(&book) {
                self.alarm(&book, AlarmKind::ProtectionOverdue, format!("{book}: the protection request got no answer by its deadline; asking again"), out);
            }
        }
        // Position reads: overdue, periodic, or after news.
        if let Some((seq, _, deadline)) = self.reading {
            if now >= deadline {
                self.read_failed(seq, "no answer by the deadline", out);
            }
        }
        // Position reads: periodic (also with an empty book, so a position opened elsewhere is
        // found), soon after news, and while a position is still unexplained.
        let since = now.saturating_sub(self.last_read);
        let unexplained = self.symbols.values().any(|s| s.unexplained.is_some());
        if since >= self.config.reconcile_every
            || ((self.news || unexplained) && since >= self.config.news_debounce)
        {
            self.news = false;
            self.request_read(now, out);
        }
        // Closes whose lots are all gone (their group changed while they were in flight).
        if now.saturating_sub(self.last_prune) >= 60_000 {
            self.last_prune = now;
            let lots = &self.lots;
            self.closes
                .retain(|_, group| group.iter().any(|id| lots.contains_key(id)));
        }
        // Forget applied ids after a week.
        let old: Vec<String> = self
            .applied
            .iter()
            .filter(|(_, at)| now.saturating_sub(**at) > APPLIED_KEEP)
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            self.applied.remove(&id);
            self.forgotten.push(id);
        }
    }

    fn read_failed(&mut self, seq: u64, error: &str, out: &mut Vec<Command>) {
        if self.reading.is_none_or(|(s, _, _)| s != seq) {
            return;
        }
        self.reading = None;
        self.read_failures += 1;
        if self.read_failures >= 3 {
            self.alarm(
                "",
                AlarmKind::PositionsUnknown,
                format!("positions cannot be read ({error}, {} times in a row); the book is not checked against the exchange", self.read_failures),
                out,
            );
        }
    }

    // ----- book-keeping -----

    /// After every event: one Persist for what changed.
    fn settle(&mut self, out: &mut Vec<Command>) {
        if self.dirty.is_empty()
            && self.removed.is_empty()
            && self.newly_applied.is_empty()
            && self.forgotten.is_empty()
        {
            return;
        }
        let lots: Vec<Lot> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|id| self.lots.get(&id).cloned())
            .collect();
        out.push(Command::Persist {
            lots,
            removed: std::mem::take(&mut self.removed).into_iter().collect(),
            applied: std::mem::take(&mut self.newly_applied),
            forgotten: std::mem::take(&mut self.forgotten),
        });
    }

    fn insert(&mut self, lot: Lot) {
        let id = lot.id.clone();
        // Closes this lot led, and the live one (perhaps led by another lot of its group).
        for attempt in 1..=lot.attempts {
            let close = IntentId::close_of(&id, attempt).as_str().to_string();
            let lots = self.closes.entry(close).or_default();
            if !lots.contains(&id) {
                lots.push(id.clone());
            }
        }
        if let Phase::Closing(c) = &lot.phase {
            let lots = self.closes.entry(c.intent_id.clone()).or_default();
            if !lots.contains(&id) {
                lots.push(id.clone());
            }
        }
        let book = lot.book();
        self.by_symbol
            .entry(book.clone())
            .or_default()
            .insert(id.clone());
        self.nets_dirty.insert(book.clone());
        self.symbols.entry(book).or_default();
        self.removed.remove(&id);
        self.dirty.insert(id.clone());
        self.lots.insert(id, lot);
    }

    fn remove(&mut self, id: &str) -> Option<Lot> {
        let lot = self.lots.remove(id)?;
        // Its closes stay known while another lot of their group is tracked: a late fill of one
        // of them is still attributed to its group.
        let mut closes: Vec<String> = (1..=lot.attempts)
            .map(|n| IntentId::close_of(id, n).as_str().to_string())
            .collect();
        if let Phase::Closing(c) = &lot.phase {
            closes.push(c.intent_id.clone());
        }
        for close in closes {
            if let Some(lots) = self.closes.get(&close) {
                if lots.iter().all(|l| l == id || !self.lots.contains_key(l)) {
                    self.closes.remove(&close);
                }
            }
        }
        let book = lot.book();
        if let Some(set) = self.by_symbol.get_mut(&book) {
            set.remove(id);
            if set.is_empty() {
                self.by_symbol.remove(&book);
            }
        }
        self.nets_dirty.insert(book);
        self.dirty.remove(id);
        self.removed.insert(id.to_string());
        Some(lot)
    }

    /// A flat book with nothing on the exchange and nothing in flight needs no state.
    fn forget_if_flat(&mut self, book: &Book) {
        let idle = self.symbols.get(book).is_some_and(|s| {
            s.placed == Some(None) && s.pending.is_none() && s.unexplained.is_none()
        });
        if idle && !self.by_symbol.contains_key(book) {
            self.symbols.remove(book);
        }
    }

    fn seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Raises the alarm `kind` on `on` (a book, or `""` for the whole account).
    fn alarm(
        &mut self,
        on: impl std::fmt::Display,
        kind: AlarmKind,
        message: String,
        out: &mut Vec<Command>,
    ) {
        let key = (on.to_string(), kind);
        if self.alarms.get(&key) == Some(&message) {
            return;
        }
        self.alarms.insert(key.clone(), message.clone());
        out.push(Command::Alarm { key, message });
    }

    fn clear_alarm(&mut self, on: impl std::fmt::Display, kind: AlarmKind, out: &mut Vec<Command>) {
        let key = (on.to_string(), kind);
        if self.alarms.remove(&key).is_some() {
            out.push(Command::ClearAlarm { key });
        }
    }

    /// The close alarms of a book end when it has no lot left in trouble.
    fn clear_lot_alarms(&mut self, book: &Book, out: &mut Vec<Command>) {
        let troubled = self
            .lots_of(book)
            .any(|l| l.failed_closes > 0 || l.attempts > 1);
        if !troubled {
            self.clear_alarm(book, AlarmKind::CloseFailed, out);
            self.clear_alarm(book, AlarmKind::CloseOverdue, out);
        }
        if !self.by_symbol.contains_key(book) {
            // Protection alarms end only when the exchange confirms (see `on_protected`).
            for kind in [AlarmKind::NoBudget, AlarmKind::NoStop] {
                self.clear_alarm(book, kind, out);
            }
        }
    }
}

/// A result that names its intent, symbol and action (every result but a rejected
/// non-intent), with those as the book keys them.
#[derive(Debug)]
struct Answered<'a> {
    intent_id: String,
    book: Book,
    result: &'a ExecutionResult,
}

/// How a lot left the book without a close of its own, and at what price if known.
#[derive(Debug, Clone, Copy)]
enum Exit {
    OnExchange(Option<Decimal>),
    At(Decimal),
    TakenOver,
}

/// Backoff of failures: 1 s, 2 s, 4 s ... up to 30 s.
fn backoff(failures: u32) -> i64 {
    (1000i64 << failures.saturating_sub(1).min(5)).min(30_000)
}

/// `part` of `total`'s `amount`, checked.
fn share_of(amount: Decimal, part: Decimal, total: Decimal) -> Option<Decimal> {
    if total.is_zero() {
        return Some(Decimal::ZERO);
    }
    amount.checked_mul(part)?.checked_div(total)
}

/// Why a close was sent, as the position events say it (`None`: a close the core no longer had
/// in flight).
pub fn exit_reason(trigger: Option<&Trigger>) -> ExitReason {
    match trigger {
        Some(Trigger::TakeProfit { .. }) => ExitReason::TakeProfit,
        Some(Trigger::StopLoss { .. }) => ExitReason::StopLoss,
        Some(Trigger::Trailing { .. }) => ExitReason::TrailingStop,
        None => ExitReason::Close,
    }
}

/// (exit − entry) × quantity, signed by direction, minus the entry fee's share and the exit fee;
/// `None` when it does not fit in a decimal.
fn realized(lot: &Lot, exit: Decimal, qty: Decimal, exit_fee: Decimal) -> Option<Decimal> {
    let diff = match lot.direction {
        Direction::Long => exit.checked_sub(lot.entry)?,
        Direction::Short => lot.entry.checked_sub(exit)?,
    };
    diff.checked_mul(qty)?
        .checked_sub(share_of(lot.entry_fee, qty, lot.qty)?)?
        .checked_sub(exit_fee)
}

/// The trailing stop of a lot now, for display.
pub fn trail_stop(lot: &Lot) -> Option<Decimal> {
    let levels = lot.levels?;
    trailing_stop(levels.direction, lot.trail.peak, levels.trailing_pct?)
}

/// The signed sum of lots (positive long). Quantities come from outside (fills), so the sum is
/// saturating: lots whose total does not fit in a decimal compare as the largest decimal rather
/// than panic (found by the fuzz test: two fills of 79228162514264337593543950335 and 90).
fn net<'a>(lots: impl Iterator<Item = &'a Lot>) -> Decimal {
    lots.map(Lot::signed)
        .fold(Decimal::ZERO, |sum, q| sum.saturating_add(q))
}

#[cfg(test)]
mod tests {
    //! The reproductions of the exit-path issue, as specifications of the core. The service's
    //! end-to-end tests show the same against the simulator and Redis.
    use super::*;
    use model::{ClientOrderId, ConfirmedBy, Execution, ExitLevel, ResultStatus, TradeIntent};

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn config() -> Config {
        Config {
            default_plan: ExitPlan {
                stop_loss: Some(ExitLevel::Pct(d("2"))),
                ..ExitPlan::default()
            },
            ..Config::default()
        }
    }

    fn filled(json: &str, price: &str, qty: &str, at: i64) -> ExecutionResult {
        filled_intent(&TradeIntent::from_json(json).unwrap(), price, qty, at)
    }

    fn filled_intent(intent: &TradeIntent, price: &str, qty: &str, at: i64) -> ExecutionResult {
        let coid = ClientOrderId::for_intent(&intent.intent_id);
        let e = Execution {
            order_id: 1,
            avg_price: d(price),
            executed_qty: d(qty),
            commission: Some(d("0.01")),
            commission_asset: "USDT".into(),
            filled_at: at,
        };
        let status = ResultStatus::Filled;
        ExecutionResult::with_fill(intent, &coid, status, &e, ConfirmedBy::UserStream, at, at)
            .unwrap()
    }

    fn close_result(id: &str, symbol: &str, price: &str, qty: &str, at: i64) -> ExecutionResult {
        filled(
            &format!(r#"{{"intent_id":"{id}","symbol":"{symbol}","action":"CLOSE"}}"#),
            price,
            qty,
            at,
        )
    }

    fn closes(commands: &[Command]) -> Vec<(String, Decimal)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::PublishClose { intent_id, qty, .. } => Some((intent_id.clone(), *qty)),
                _ => None,
            })
            .collect()
    }

    fn protects(commands: &[Command]) -> Vec<(u64, Option<Net>)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Protect { seq, net, .. } => Some((*seq, *net)),
                _ => None,
            })
            .collect()
    }

    fn alarms(commands: &[Command]) -> Vec<AlarmKind> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Alarm { key, .. } => Some(key.1),
                _ => None,
            })
            .collect()
    }

    /// Hedge mode: a LONG and a SHORT of one symbol are two books, each with its own stop on
    /// the exchange; a price that stops the long out closes the LONG side only (a CLOSE that
    /// names it), and a position read with both sides reconciles each against its own lots
    /// rather than netting them.
    #[test]
    fn a_hedge_accounts_long_and_short_of_one_symbol_are_two_protected_books() {
        let mut core = Core::new(config());
        let long = Book::new("AXSUSDT", PositionSide::Long);
        let short = Book::new("AXSUSDT", PositionSide::Short);
        let out = core.apply(
            1_000,
            filled(
                r#"{"intent_id":"h-long","symbol":"AXSUSDT","action":"BUY","quantity":10,"stop_loss_pct":2,"take_profit_pct":4,"position_side":"LONG"}"#,
                "10",
                "10",
                1_000,
            )
            .into(),
        );
        assert_eq!(protects(&out).len(), 1);
        let out = core.apply(
            1_100,
            filled(
                r#"{"intent_id":"h-short","symbol":"AXSUSDT","action":"SELL","quantity":4,"stop_loss_pct":3,"position_side":"SHORT"}"#,
                "10",
                "4",
                1_100,
            )
            .into(),
        );
        // No netting: the short is a lot of its own, the long keeps its 10.
        assert_eq!(core.net_qty(&long), d("10"));
        assert_eq!(core.net_qty(&short), d("-4"));
        let asked: Vec<(Book, Option<Net>)> = out
            .iter()
            .filter_map(|c| match c {
                Command::Protect { book, net, .. } => Some((book.clone(), *net)),
                _ => None,
            })
            .collect();
        assert_eq!(asked.len(), 1, "{out:?}");
        assert_eq!(asked[0].0, short);
        assert_eq!(asked[0].1.unwrap().direction, Direction::Short);
        for (book, seq) in [(long.clone(), 1), (short.clone(), 2)] {
            core.apply(
                1_200,
                Event::Protected {
                    book,
                    seq,
                    outcome: Ok(()),
                },
            );
        }
        assert!(core.protected(&long) && core.protected(&short));
        assert_eq!(core.books_of("AXSUSDT").count(), 2);
        // The exchange holds both sides: nothing to adopt, nothing closed.
        let out = core.apply(5_000, Event::Timer);
        let Some(Command::ReadPositions { seq }) = out
            .iter()
            .find(|c| matches!(c, Command::ReadPositions { .. }))
            .cloned()
        else {
            panic!("a position read: {out:?}")
        };
        let position = |side, amount: &str| Position {
            symbol: "AXSUSDT".into(),
            side,
            amount: d(amount),
            entry: d("10"),
        };
        let out = core.apply(
            5_100,
            Event::Positions {
                seq,
                requested_at: 5_000,
                positions: vec![
                    position(PositionSide::Long, "10"),
                    position(PositionSide::Short, "-4"),
                ],
            },
        );
        assert!(
            !out.iter().any(|c| matches!(c, Command::Note(n) if matches!(**n, Note::Exited { .. } | Note::Adopted { .. }))),
            "{out:?}"
        );
        // The price falls through the long's stop (9.8), not the short's (10.3).
        let out = core.apply(
            6_000,
            Event::Mark {
                symbol: "AXSUSDT".into(),
                price: d("9.7"),
            },
        );
        let sent: Vec<(Book, Decimal)> = out
            .iter()
            .filter_map(|c| match c {
                Command::PublishClose { book, qty, .. } => Some((book.clone(), *qty)),
                _ => None,
            })
            .collect();
        assert_eq!(sent, vec![(long.clone(), d("10"))]);
        // Its result names the side; the short stays tracked and protected.
        let out = core.apply(
            6_500,
            filled(
                &format!(
                    r#"{{"intent_id":"{}","symbol":"AXSUSDT","action":"CLOSE","position_side":"LONG"}}"#,
                    IntentId::close_of("h-long", 1).as_str()
                ),
                "9.7",
                "10",
                6_500,
            )
            .into(),
        );
        assert!(
            out.iter()
                .any(|c| matches!(c, Command::Note(n) if matches!(**n, Note::Closed { .. }))),
            "{out:?}"
        );
        assert_eq!(core.net_qty(&long), Decimal::ZERO);
        assert_eq!(core.net_qty(&short), d("-4"));
        assert!(core.protected(&short));
    }

    /// A core with the AXS long of reproduction 1 open and protected.
    fn axs_long() -> Core {
        let mut core = Core::new(config());
        let out = core.apply(0, Event::from(filled(r#"{"intent_id":"t2","symbol":"AXSUSDT","action":"BUY","quantity":32,"take_profit_pct":3,"stop_loss_pct":2}"#, "6.25", "32", 0)));
        let (seq, net) = protects(&out)[0];
        assert!(net.unwrap().stop.is_some());
        core.apply(
            10,
            Event::Protected {
                book: Book::both("AXSUSDT"),
                seq,
                outcome: Ok(()),
            },
        );
        assert!(core.protected(&Book::both("AXSUSDT")));
        core
    }

    #[test]
    fn a_partly_filled_close_continues_with_the_rest_under_a_new_id() {
        let mut core = axs_long();
        let out = core.apply(
            100,
            Event::Mark {
                symbol: "AXSUSDT".into(),
                price: d("6.10"),
            },
        );
        assert_eq!(closes(&out), vec![("close-t2-1".to_string(), d("32"))]);
        let out = core.apply(
            200,
            Event::from(close_result("close-t2-1", "AXSUSDT", "6.10", "20", 200)),
        );
        assert_eq!(
            closes(&out),
            vec![("close-t2-2".to_string(), d("12"))],
            "the remainder goes out at once, under an id the execution service has not answered"
        );
        // The part that left has its PnL: (6.10 - 6.25) x 20, less 20/32 of the entry fee
        // (0.01) and the close's commission (0.01).
        let part = out.iter().find_map(|c| match c {
            Command::Note(n) => match &**n {
                Note::Reduced {
                    realized_pnl,
                    fees,
                    reason,
                    ..
                } => Some((*realized_pnl, *fees, *reason)),
                _ => None,
            },
            _ => None,
        });
        assert_eq!(
            part,
            Some((Some(d("-3.01625")), d("0.01625"), ExitReason::StopLoss))
        );
        let out = core.apply(
            300,
            Event::from(close_result("close-t2-2", "AXSUSDT", "6.09", "12", 300)),
        );
        // The rest: (6.09 - 6.25) x 12, less what is left of the entry fee and the commission;
        // with the part, the gross loss less every fee (0.03).
        let last = out.iter().find_map(|c| match c {
            Command::Note(n) => match &**n {
                Note::Closed {
                    realized_pnl, fees, ..
                } => Some((*realized_pnl, *fees)),
                _ => None,
            },
            _ => None,
        });
        assert_eq!(last, Some((Some(d("-1.93375")), d("0.01375"))));
        assert_eq!(d("-3.01625") + d("-1.93375"), d("-4.92") - d("0.03"));
        assert_eq!(core.lots().count(), 0);
        assert_eq!(
            protects(&out),
            vec![(2, None)],
            "flat: protection is cancelled now"
        );
    }

    #[test]
    fn lots_of_a_symbol_that_trigger_together_are_closed_by_one_order() {
        let mut core = Core::new(config());
        for (id, tp) in [("g1", "2"), ("g2", "3"), ("g3", "9")] {
            core.apply(0, Event::from(filled(&format!(r#"{{"intent_id":"{id}","symbol":"SOLUSDT","action":"BUY","quantity":1,"take_profit_pct":{tp},"stop_loss_pct":2}}"#), "100", "1", 0)));
        }
        let out = core.apply(
            1,
            Event::Mark {
                symbol: "SOLUSDT".into(),
                price: d("103.5"),
            },
        );
        assert_eq!(
            closes(&out),
            vec![("close-g1-1".to_string(), d("2"))],
            "g1 and g2, one order"
        );
        // Half of it fills: g1 is closed, g2 continues alone under a new id.
        let out = core.apply(
            2,
            Event::from(close_result("close-g1-1", "SOLUSDT", "103.5", "1", 2)),
        );
        assert_eq!(closes(&out), vec![("close-g2-1".to_string(), d("1"))]);
        assert!(core.lot("g1").is_none());
        assert!(matches!(core.lot("g3").unwrap().phase, Phase::Watching));
    }

    #[test]
    fn lots_closed_by_one_order_share_its_commission() {
        let mut core = Core::new(config());
        for id in ["h1", "h2"] {
            core.apply(0, Event::from(filled(&format!(r#"{{"intent_id":"{id}","symbol":"SOLUSDT","action":"BUY","quantity":1,"take_profit_pct":2,"stop_loss_pct":2}}"#), "100", "1", 0)));
        }
        let out = core.apply(
            1,
            Event::Mark {
                symbol: "SOLUSDT".into(),
                price: d("102.5"),
            },
        );
        assert_eq!(closes(&out), vec![("close-h1-1".to_string(), d("2"))]);
        let out = core.apply(
            2,
            Event::from(close_result("close-h1-1", "SOLUSDT", "102.5", "2", 2)),
        );
        let closed: Vec<(Option<Decimal>, Decimal)> = out
            .iter()
            .filter_map(|c| match c {
                Command::Note(n) => match &**n {
                    Note::Closed {
                        realized_pnl, fees, ..
                    } => Some((*realized_pnl, *fees)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        // Each lot: 2.5 less its entry fee (0.01) and half the close's commission (0.005).
        assert_eq!(closed, vec![(Some(d("2.485")), d("0.015")); 2]);
    }

    #[test]
    fn protection_stays_while_a_close_is_in_flight_and_an_unanswered_close_is_alarmed_and_retried()
    {
        let mut core = axs_long();
        let out = core.apply(
            100,
            Event::Mark {
                symbol: "AXSUSDT".into(),
                price: d("6.10"),
            },
        );
        assert!(
            protects(&out).is_empty(),
            "nothing is cancelled before the close"
        );
        assert!(core.protected(&Book::both("AXSUSDT")));
        // The execution service is down: no answer.
        assert!(closes(&core.apply(19_000, Event::Timer)).is_empty());
        let out = core.apply(20_100, Event::Timer);
        assert_eq!(alarms(&out), vec![AlarmKind::CloseOverdue]);
        assert_eq!(closes(&out), vec![("close-t2-2".to_string(), d("32"))]);
        assert_eq!(protects(&out).len(), 1, "protection is re-asserted");
        // The second attempt waits twice as long.
        assert!(closes(&core.apply(50_000, Event::Timer)).is_empty());
        assert_eq!(closes(&core.apply(60_200, Event::Timer)).len(), 1);
    }

    #[test]
    fn a_fill_already_past_its_take_profit_is_closed_at_once() {
        let mut core = Core::new(config());
        let out = core.apply(0, Event::from(filled(r#"{"intent_id":"e3","symbol":"ETHUSDT","action":"BUY","quantity":0.05,"take_profit_price":3407,"stop_loss_price":3350}"#, "3410.01", "0.05", 0)));
        assert_eq!(closes(&out), vec![("close-e3-1".to_string(), d("0.05"))]);
        assert!(out.iter().all(|c| !matches!(c, Command::Refuse { .. })));
        let (_, net) = protects(&out)[0];
        assert!(
            net.unwrap().stop.is_some(),
            "and protected by its stop meanwhile"
        );
    }

    #[test]
    fn a_position_adopted_before_its_result_arrived_is_tracked_once() {
        let mut core = Core::new(Config {
            adopt_after: 1000,
            ..config()
        });
        // The monitor was down while the entry filled at t=50; it reads the positions first.
        let position = |seq| Event::Positions {
            seq,
            requested_at: 0,
            positions: vec![Position {
                side: PositionSide::Both,
                symbol: "ETHUSDT".into(),
                amount: d("0.15"),
                entry: d("3400"),
            }],
        };
        let out = core.apply(100, Event::Timer);
        assert!(out
            .iter()
            .any(|c| matches!(c, Command::ReadPositions { seq: 1 })));
        core.apply(100, position(1));
        assert_eq!(core.lots().count(), 0, "not adopted at first sight");
        core.apply(
            1_200,
            Event::News {
                book: Book::both("ETHUSDT"),
                exit_price: None,
            },
        );
        core.apply(2_300, Event::Timer);
        core.apply(
            2_400,
            Event::Positions {
                seq: 2,
                requested_at: 2_300,
                positions: vec![Position {
                    side: PositionSide::Both,
                    symbol: "ETHUSDT".into(),
                    amount: d("0.15"),
                    entry: d("3400"),
                }],
            },
        );
        assert_eq!(core.lots().count(), 1, "adopted once seen for adopt_after");
        // Now its result arrives: the intent's lot takes the quantity over, with its plan.
        core.apply(2_500, Event::from(filled(r#"{"intent_id":"e4","symbol":"ETHUSDT","action":"BUY","quantity":0.15,"stop_loss_pct":6}"#, "3400", "0.15", 50)));
        assert_eq!(
            core.net_qty(&Book::both("ETHUSDT")),
            d("0.15"),
            "tracked once, not twice"
        );
        let lot = core.lots().next().unwrap();
        assert_eq!(
            (lot.id.as_str(), lot.levels.unwrap().stop_loss),
            ("e4", Some(d("3196")))
        );
    }

    #[test]
    fn a_plan_that_overflows_is_refused_and_the_position_is_tracked_under_the_default_plan() {
        let mut core = Core::new(config());
        // No document can carry such a plan (the parser refuses a target of 100 % or more), so
        // the intent is changed after parsing: the core must not trust its inputs' ranges.
        let mut intent = TradeIntent::from_json(
            r#"{"intent_id":"b5","symbol":"BTCUSDT","action":"BUY","quantity":0.01,"stop_loss_pct":3}"#,
        )
        .unwrap();
        intent.exit_plan.take_profit = Some(ExitLevel::Pct(d("79000000000000000000000000000")));
        let result = filled_intent(&intent, "95000", "0.01", 0);
        let out = core.apply(0, Event::from(result));
        assert!(
            out.iter().any(
                |c| matches!(c, Command::Refuse { reason, .. } if reason.contains("default plan"))
            ),
            "{out:?}"
        );
        let lot = core.lot("b5").unwrap();
        assert_eq!(lot.levels.unwrap().stop_loss, Some(d("93100")));
        // A huge target alone resolves, but its exchange-side order cannot be computed: no panic.
        let out = core.apply(1, Event::from(filled(r#"{"intent_id":"b6","symbol":"SOLUSDT","action":"BUY","quantity":1,"take_profit_price":"79000000000000000000000000000","stop_loss_pct":2}"#, "180", "1", 1)));
        let (_, net) = protects(&out)[0];
        assert_eq!(net.unwrap().target, None);
        assert!(net.unwrap().stop.is_some());
        core.apply(
            2,
            Event::Mark {
                symbol: "SOLUSDT".into(),
                price: d("79000000000000000000000000000"),
            },
        );
    }

    /// Regression (chaos seed 11): an intent with a take-profit or a trailing stop and no
    /// stop-loss was tracked, and protected on the exchange, with no stop below the entry.
    #[test]
    fn a_plan_without_a_stop_loss_gets_the_default_stop_loss() {
        let mut core = Core::new(config());
        let out = core.apply(0, Event::from(filled(r#"{"intent_id":"tp","symbol":"BTCUSDT","action":"BUY","quantity":0.01,"take_profit_pct":3}"#, "95000", "0.01", 0)));
        let levels = core.lot("tp").unwrap().levels.unwrap();
        assert_eq!(levels.take_profit, Some(d("97850")));
        assert_eq!(levels.stop_loss, Some(d("93100")));
        assert!(
            out.iter().any(|c| matches!(c, Command::Note(n) if matches!(**n, Note::Opened { plan: PlanSource::IntentWithDefaultStop, .. }))),
            "{out:?}"
        );
        let (_, net) = protects(&out)[0];
        assert!(net.unwrap().stop.is_some(), "protected by a stop: {out:?}");

        core.apply(1, Event::from(filled(r#"{"intent_id":"tr","symbol":"ETHUSDT","action":"SELL","quantity":1,"trailing_pct":1}"#, "3000", "1", 1)));
        let levels = core.lot("tr").unwrap().levels.unwrap();
        assert_eq!(levels.trailing_pct, Some(d("1")));
        assert_eq!(levels.stop_loss, Some(d("3060")), "a short's stop is above");

        // With no default stop-loss (exit.allow_unprotected), the intent's plan stays as given.
        let mut unprotected = Core::new(Config {
            default_plan: ExitPlan::default(),
            ..config()
        });
        unprotected.apply(0, Event::from(filled(r#"{"intent_id":"tp","symbol":"BTCUSDT","action":"BUY","quantity":0.01,"take_profit_pct":3}"#, "95000", "0.01", 0)));
        assert_eq!(
            unprotected.lot("tp").unwrap().levels.unwrap().stop_loss,
            None
        );
    }

    #[test]
    fn actions_are_read_case_insensitively_and_anything_else_is_refused() {
        let mut core = Core::new(config());
        let short = filled(
            r#"{"intent_id":"s6","symbol":"ETHUSDT","action":"SELL","quantity":1}"#,
            "3400",
            "1",
            0,
        );
        // The action is typed since the document was read: what a strategy's lower-case `sell`
        // or an unknown action becomes is settled by `ExecutionResult::from_json`.
        let mut doc = short.to_json();
        doc["action"] = "sell".into();
        let short = ExecutionResult::from_json(&doc.to_string()).unwrap();
        core.apply(0, Event::from(short));
        assert_eq!(
            core.net_qty(&Book::both("ETHUSDT")),
            d("-1"),
            "a lower-case sell is a short"
        );
        doc["action"] = "HOLD".into();
        let refused = ExecutionResult::from_json(&doc.to_string()).unwrap_err();
        assert!(refused.to_string().contains("HOLD"), "{refused}");
    }

    #[test]
    fn a_rejected_document_that_was_not_an_intent_is_ignored() {
        let mut core = Core::new(config());
        for raw in [
            "{{{",
            r#"{"intent_id":"n1","symbol":"ETH/USDT","action":"BUY"}"#,
        ] {
            let result = ExecutionResult::rejected_input(raw, "not an intent", 0);
            let out = core.apply(0, Event::from(result));
            assert!(
                matches!(&out[..], [Command::Note(n)] if matches!(**n, Note::Ignored { .. })),
                "{out:?}"
            );
        }
        assert_eq!(core.book_count(), 0);
    }

    #[test]
    fn a_lot_with_a_128_character_id_gets_valid_close_ids() {
        let mut core = Core::new(config());
        let id = "L".repeat(128);
        core.apply(0, Event::from(filled(&format!(r#"{{"intent_id":"{id}","symbol":"ETHUSDT","action":"BUY","quantity":1,"stop_loss_pct":1}}"#), "3400", "1", 0)));
        let out = core.apply(
            1,
            Event::Mark {
                symbol: "ETHUSDT".into(),
                price: d("3300"),
            },
        );
        let (close, _) = &closes(&out)[0];
        assert!(
            IntentId::new(close).is_ok() && close.len() <= 128,
            "{close}"
        );
        let out = core.apply(
            2,
            Event::from(close_result(close, "ETHUSDT", "3300", "1", 2)),
        );
        assert!(out
            .iter()
            .any(|c| matches!(c, Command::Note(n) if matches!(**n, Note::Closed { .. }))));
    }

    #[test]
    fn a_failed_result_for_an_order_that_filled_is_adopted_by_the_next_reads() {
        let mut core = Core::new(Config {
            adopt_after: 5_000,
            ..config()
        });
        let read = |core: &mut Core, now: i64| {
            core.apply(
                now,
                Event::News {
                    book: Book::both("BNBUSDT"),
                    exit_price: None,
                },
            );
            let out = core.apply(now + 1_000, Event::Timer);
            let seq = out
                .iter()
                .find_map(|c| match c {
                    Command::ReadPositions { seq } => Some(*seq),
                    _ => None,
                })
                .expect("a read");
            core.apply(
                now + 1_100,
                Event::Positions {
                    seq,
                    requested_at: now + 1_000,
                    positions: vec![Position {
                        side: PositionSide::Both,
                        symbol: "BNBUSDT".into(),
                        amount: d("0.2"),
                        entry: d("650"),
                    }],
                },
            )
        };
        read(&mut core, 0);
        let out = read(&mut core, 10_000);
        assert!(out
            .iter()
            .any(|c| matches!(c, Command::Note(n) if matches!(**n, Note::Adopted { .. }))));
        assert_eq!(core.net_qty(&Book::both("BNBUSDT")), d("0.2"));
    }

    #[test]
    fn an_exit_on_the_exchange_is_recorded_with_its_fill_price() {
        let mut core = Core::new(config());
        core.apply(0, Event::from(filled(r#"{"intent_id":"x1","symbol":"ETHUSDT","action":"BUY","quantity":2,"stop_loss_pct":2}"#, "100", "2", 0)));
        // ALGO_UPDATE: the protective stop filled at 97.4; ACCOUNT_UPDATE: flat.
        core.apply(
            1_000,
            Event::News {
                book: Book::both("ETHUSDT"),
                exit_price: Some(d("97.4")),
            },
        );
        let out = core.apply(2_100, Event::Timer);
        let seq = out
            .iter()
            .find_map(|c| match c {
                Command::ReadPositions { seq } => Some(*seq),
                _ => None,
            })
            .expect("a read");
        let out = core.apply(
            2_200,
            Event::Positions {
                seq,
                requested_at: 2_100,
                positions: vec![],
            },
        );
        let exited = out.iter().find_map(|c| match c {
            Command::Note(n) => match &**n {
                Note::Exited {
                    on_exchange: true,
                    exit_price,
                    realized_pnl,
                    ..
                } => Some((*exit_price, *realized_pnl)),
                _ => None,
            },
            _ => None,
        });
        assert_eq!(
            exited,
            Some((Some(d("97.4")), Some(d("-5.21")))),
            "(97.4 - 100) x 2 - the entry fee 0.01"
        );
        assert!(core.is_empty());
    }

    #[test]
    fn a_redelivered_result_does_nothing() {
        let mut core = Core::new(config());
        let r = filled(
            r#"{"intent_id":"r1","symbol":"ETHUSDT","action":"BUY","quantity":1}"#,
            "3400",
            "1",
            0,
        );
        core.apply(0, Event::from(r.clone()));
        core.apply(1, Event::from(r));
        assert_eq!(core.net_qty(&Book::both("ETHUSDT")), d("1"));
    }

    #[test]
    fn stops_come_first_under_the_conditional_order_budget() {
        let mut core = Core::new(Config {
            conditional_budget: 3,
            ..config()
        });
        for (i, symbol) in ["AXSUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
            .iter()
            .enumerate()
        {
            core.apply(i as i64, Event::from(filled(&format!(r#"{{"intent_id":"b{i}","symbol":"{symbol}","action":"BUY","quantity":1,"take_profit_pct":5,"stop_loss_pct":2}}"#), "100", "1", i as i64)));
        }
        let wanted: Vec<Option<Net>> = ["AXSUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]
            .iter()
            .map(|s| core.wanted(&Book::both(*s)))
            .collect();
        assert_eq!(
            wanted
                .iter()
                .filter(|n| n.is_some_and(|n| n.stop.is_some()))
                .count(),
            3
        );
        assert_eq!(
            wanted
                .iter()
                .filter(|n| n.is_some_and(|n| n.target.is_some()))
                .count(),
            0
        );
        assert!(core
            .alarms()
            .any(|((s, k), _)| s == "BNBUSDT" && *k == AlarmKind::NoBudget));
    }
}
