//! Scenario generation: the seeded PRNG and the [`Plan`], the whole schedule of a chaos run
//! computed before anything starts: which entries are published when (valid intents with every
//! kind of exit plan, duplicates, one id with two contents, invalid and refused entries), the
//! price path of every symbol (a mean-reverting walk with spikes that cross every level), the
//! fault steps (from [`super::faults`]), the kills and restarts of each service, and the one
//! Redis restart.
//!
//! Everything here is a pure function of the seed, the entry count, the duration and the
//! markets read from the simulator at start (its start prices and lot steps, themselves fixed by
//! the simulator's code): the same inputs give the same schedule, byte for byte, which
//! [`Plan::fingerprint`] condenses. Times are offsets from the start of the scenario; prices are
//! basis points of each symbol's start price, so the money arithmetic stays in `Decimal`.

use std::fmt::Write as _;

use model::{Action, ExitLevel, IntentBuilder, IntentId, PositionSide, Symbol, TradeIntent};
use rust_decimal::Decimal;

use super::faults::{self, FaultStep};

/// SplitMix64: a tiny, well-mixed generator whose stream is fixed forever by its code (no
/// dependency whose next version could change the schedule of a seed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    #[cfg(test)]
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream for one aspect of the scenario, so that, e.g., changing the number
    /// of entries does not move the faults.
    pub fn derive(seed: u64, aspect: &str) -> Rng {
        Rng(seed ^ fnv1a(aspect.as_bytes()).rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: no modulo bias worth speaking of for the small ranges used here.
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `permille` / 1000.
    pub fn chance(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut items: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
        items
    }
}

/// FNV-1a, 64 bits: the schedule's fingerprint and the PRNG's aspect salt.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One symbol as the simulator lists it at start.
#[derive(Debug, Clone)]
pub struct Market {
    pub symbol: String,
    pub start: Decimal,
    pub tick: Decimal,
    pub step: Decimal,
}

impl Market {
    /// The price at `bp` basis points of the start price, on the tick grid.
    pub fn price(&self, bp: i64) -> Decimal {
        let raw = self.start * Decimal::from(bp) / Decimal::from(10_000);
        round_to(raw, self.tick)
    }
}

fn round_to(value: Decimal, step: Decimal) -> Decimal {
    if step <= Decimal::ZERO {
        return value;
    }
    ((value / step).floor() * step).normalize()
}

/// The services of a run, by index in [`SERVICES`].
pub const SERVICES: [&str; 3] = ["exec-a", "exec-b", "exit-monitor"];

/// How a service is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Kill => "SIGKILL",
            Signal::Term => "SIGTERM",
        }
    }
}

/// What an entry is, and so what the checks expect of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A valid BUY/SELL intent (or a strategy's CLOSE): any outcome, as long as it is the
    /// exchange's, with one result and at most one order.
    Valid,
    /// The same text as entry `of`, published again: no second order, no second result.
    Duplicate { of: usize },
    /// Entry `of`'s id with other content: not executed (the first one's result stands).
    Conflict { of: usize },
    /// Not a valid intent document: a `rejected` result and a dead letter, never an order.
    Invalid { what: &'static str },
    /// A valid document the service must refuse (risk gate, exchange rules, its own expiry):
    /// `rejected` (or `expired`), never an order.
    Refused { what: &'static str },
}

impl EntryKind {
    pub fn label(&self) -> &'static str {
        match self {
            EntryKind::Valid => "valid",
            EntryKind::Duplicate { .. } => "duplicate",
            EntryKind::Conflict { .. } => "same id, other content",
            EntryKind::Invalid { .. } => "invalid",
            EntryKind::Refused { .. } => "refused",
        }
    }
}

/// An intent to build at publication time (its `created_at` is when it is sent).
#[derive(Debug, Clone)]
pub struct Draft {
    pub symbol: String,
    pub action: Action,
    pub usd: Option<Decimal>,
    pub quantity: Option<Decimal>,
    pub leverage: Option<u32>,
    pub take_profit: Option<ExitLevel>,
    pub stop_loss: Option<ExitLevel>,
    pub trailing: Option<Decimal>,
    /// `expires_at` = `created_at` + this (negative: already past when sent).
    pub expires_in_ms: Option<i64>,
    /// The kind of exit plan, for the report.
    pub plan: &'static str,
    /// The side a CLOSE names on a hedge-mode account (`quantum chaos --hedge`); not drawn from
    /// the seed's random stream, so a schedule is the same in either mode.
    pub close_side: PositionSide,
}

impl Draft {
    /// The intent document, stamped `created_at = now`; `Err` when the builder refuses it (a
    /// harness bug: drafts are meant to be valid documents).
    pub fn build(&self, id: &str, now: i64, hedge: bool) -> Result<TradeIntent, String> {
        let id = IntentId::new(id).map_err(|e| e.to_string())?;
        let symbol = Symbol::new(&self.symbol).map_err(|e| e.to_string())?;
        let builder: IntentBuilder = match self.action {
            Action::Close => TradeIntent::close(id, symbol),
            action => TradeIntent::builder(id, symbol, action),
        };
        let mut builder = builder
            .position_size_usd(self.usd)
            .quantity(self.quantity)
            .leverage(self.leverage)
            .take_profit(self.take_profit)
            .stop_loss(self.stop_loss)
            .trailing_pct(self.trailing)
            .source("quantum-chaos")
            .created_at(now);
        if let Some(ms) = self.expires_in_ms {
            builder = builder.expires_at(now + ms);
        }
        if hedge && self.action == Action::Close {
            builder = builder.position_side(self.close_side);
        }
        builder.build().map_err(|e| e.to_string())
    }

    fn describe(&self) -> String {
        let mut text = format!("{} {}", self.action.as_str(), self.symbol);
        if let Some(usd) = self.usd {
            let _ = write!(text, " usd={usd}");
        }
        if let Some(q) = self.quantity {
            let _ = write!(text, " qty={q}");
        }
        if let Some(l) = self.leverage {
            let _ = write!(text, " lev={l}");
        }
        let level = |l: &ExitLevel| match l {
            ExitLevel::Pct(p) => format!("{p}%"),
            ExitLevel::Price(p) => format!("@{p}"),
        };
        if let Some(tp) = &self.take_profit {
            let _ = write!(text, " tp={}", level(tp));
        }
        if let Some(sl) = &self.stop_loss {
            let _ = write!(text, " sl={}", level(sl));
        }
        if let Some(t) = self.trailing {
            let _ = write!(text, " trail={t}%");
        }
        if let Some(e) = self.expires_in_ms {
            let _ = write!(text, " expires_in={e}ms");
        }
        let _ = write!(text, " [{}]", self.plan);
        text
    }
}

/// What is published for an entry.
#[derive(Debug, Clone)]
pub enum Body {
    Intent(Draft),
    /// Text published as is (invalid entries).
    Raw(String),
    /// The text published for entry `n`, again.
    Same(usize),
}

/// One entry of the scenario.
#[derive(Debug, Clone)]
pub struct PlannedEntry {
    /// The intent id the entry carries, `None` when the document has none that can be read.
    pub id: Option<String>,
    pub kind: EntryKind,
    pub body: Body,
}

/// One step of the schedule.
#[derive(Debug, Clone)]
pub enum Event {
    Publish(usize),
    /// Pin `market`'s price at `bp` basis points of its start price.
    Price {
        market: usize,
        bp: i64,
    },
    Fault(FaultStep),
    Kill {
        service: usize,
        signal: Signal,
        pause_ms: u64,
    },
    RedisRestart {
        pause_ms: u64,
    },
}

/// An event at an offset from the start of the scenario.
#[derive(Debug, Clone)]
pub struct Timed {
    pub at_ms: u64,
    pub event: Event,
}

/// The whole schedule of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub duration_ms: u64,
    pub markets: Vec<Market>,
    pub entries: Vec<PlannedEntry>,
    pub events: Vec<Timed>,
    /// Per market: the lowest and highest basis points the path reaches.
    pub path_range: Vec<(i64, i64)>,
    /// Per market: the basis points the path ends on.
    pub path_end: Vec<i64>,
}

/// Exit plans every run cycles through before choosing at random.
const PLAN_KINDS: [&str; 10] = [
    "tp+sl pct",
    "sl pct",
    "tp pct",
    "trailing+sl pct",
    "trailing",
    "tp+sl price",
    "sl price",
    "tp price",
    "none",
    "tp+sl+trailing pct",
];

/// Invalid documents, cycled through.
const INVALID_KINDS: [&str; 15] = [
    "not JSON",
    "unknown field",
    "leverage 0",
    "leverage 126",
    "negative size",
    "zero quantity",
    "missing symbol",
    "size and quantity",
    "trailing 20%",
    "CLOSE with an exit plan",
    "malformed symbol",
    "not an object",
    "number too large",
    "action HOLD",
    "NaN size",
];

/// Valid documents the service must refuse, cycled through.
const REFUSED_KINDS: [&str; 5] = [
    "notional above risk.max_notional_usd",
    "leverage above risk.max_leverage",
    "unlisted symbol",
    "below the minimum notional",
    "already expired",
];

/// The id of entry `n`.
pub fn entry_id(n: usize) -> String {
    format!("ci-{n:05}")
}

impl Plan {
    pub fn generate(seed: u64, count: usize, duration_ms: u64, markets: Vec<Market>) -> Plan {
        let duration_ms = duration_ms.max(10_000);
        let (paths, path_range, path_end) = price_paths(seed, duration_ms, markets.len());
        let entries_times = entry_times(seed, count, duration_ms);
        let entries = entries(seed, count, &markets, &paths, &entries_times);
        let mut events: Vec<Timed> = Vec::new();
        for (n, at) in entries_times.iter().enumerate() {
            events.push(Timed {
                at_ms: *at,
                event: Event::Publish(n),
            });
        }
        for (m, path) in paths.iter().enumerate() {
            for (at, bp) in path {
                events.push(Timed {
                    at_ms: *at,
                    event: Event::Price { market: m, bp: *bp },
                });
            }
        }
        for (at, step) in faults::schedule(seed, duration_ms) {
            events.push(Timed {
                at_ms: at,
                event: Event::Fault(step),
            });
        }
        let mut rng = Rng::derive(seed, "redis");
        let redis_at = duration_ms * rng.range(30, 45) as u64 / 100;
        let redis_pause = rng.range(1_000, 3_000) as u64;
        events.push(Timed {
            at_ms: redis_at,
            event: Event::RedisRestart {
                pause_ms: redis_pause,
            },
        });
        events.extend(kills(seed, duration_ms, redis_at, redis_pause));
        // Stable: events at the same instant keep the order they were generated in.
        events.sort_by_key(|t| t.at_ms);
        Plan {
            seed,
            duration_ms,
            markets,
            entries,
            events,
            path_range,
            path_end,
        }
    }

    /// The schedule as text, one event a line.
    pub fn render(&self) -> String {
        let mut out = format!(
            "chaos schedule: seed {} entries {} duration {} ms\n",
            self.seed,
            self.entries.len(),
            self.duration_ms
        );
        for m in &self.markets {
            let _ = writeln!(
                out,
                "market {} start {} tick {} step {}",
                m.symbol, m.start, m.tick, m.step
            );
        }
        for t in &self.events {
            let what = match &t.event {
                Event::Publish(n) => {
                    let e = &self.entries[*n];
                    let body = match &e.body {
                        Body::Intent(d) => d.describe(),
                        Body::Raw(text) => format!("raw {text}"),
                        Body::Same(of) => format!("the text of entry {of} again"),
                    };
                    let detail = match &e.kind {
                        EntryKind::Invalid { what } | EntryKind::Refused { what } => {
                            format!(" ({what})")
                        }
                        EntryKind::Duplicate { of } | EntryKind::Conflict { of } => {
                            format!(" (of entry {of})")
                        }
                        EntryKind::Valid => String::new(),
                    };
                    format!(
                        "publish #{n} {}{detail} id={} {body}",
                        e.kind.label(),
                        e.id.as_deref().unwrap_or("<none>")
                    )
                }
                Event::Price { market, bp } => {
                    let m = &self.markets[*market];
                    format!("price {} {} ({bp} bp)", m.symbol, m.price(*bp))
                }
                Event::Fault(step) => format!("fault {}", step.describe()),
                Event::Kill {
                    service,
                    signal,
                    pause_ms,
                } => format!(
                    "{} {} (restart after {pause_ms} ms)",
                    signal.name(),
                    SERVICES[*service]
                ),
                Event::RedisRestart { pause_ms } => {
                    format!("redis restart (down for {pause_ms} ms)")
                }
            };
            let _ = writeln!(out, "{:>8} ms  {what}", t.at_ms);
        }
        out
    }

    /// 16 hex digits that are equal for equal schedules.
    pub fn fingerprint(&self) -> String {
        format!("{:016x}", fnv1a(self.render().as_bytes()))
    }
}

/// When each entry is published: sorted random offsets in the first 90 % of the scenario.
fn entry_times(seed: u64, count: usize, duration_ms: u64) -> Vec<u64> {
    let mut rng = Rng::derive(seed, "entry-times");
    let last = duration_ms * 9 / 10;
    let mut times: Vec<u64> = (0..count)
        .map(|_| 1_000 + rng.below(last.saturating_sub(1_000).max(1)))
        .collect();
    times.sort_unstable();
    times
}

/// Per market: `(at_ms, bp)` pins once a second, a mean-reverting walk with spikes of about
/// ±5 % (up and back, or down and back) every 9 to 16 s; plus each path's range and last value.
#[allow(clippy::type_complexity)]
fn price_paths(
    seed: u64,
    duration_ms: u64,
    markets: usize,
) -> (Vec<Vec<(u64, i64)>>, Vec<(i64, i64)>, Vec<i64>) {
    let mut paths = Vec::new();
    let mut ranges = Vec::new();
    let mut ends = Vec::new();
    for m in 0..markets {
        let mut rng = Rng::derive(seed, &format!("price-{m}"));
        let offset = 100 + (1_000 * m as u64) / markets.max(1) as u64;
        let mut path = Vec::new();
        let mut bp: i64 = 10_000;
        let (mut lo, mut hi) = (bp, bp);
        let mut next_spike = rng.range(4_000, 12_000) as u64;
        let mut up = rng.chance(500);
        let mut at = offset;
        while at < duration_ms {
            if at >= next_spike {
                let amplitude = rng.range(450, 650);
                let base = bp;
                let sign = if up { 1 } else { -1 };
                let mut steps = Vec::new();
                for k in 1..=3 {
                    steps.push(base + sign * amplitude * k / 3);
                }
                steps.push(base + sign * amplitude);
                steps.push(base + sign * amplitude);
                for k in (0..3).rev() {
                    steps.push(base + sign * amplitude * k / 3);
                }
                for value in steps {
                    if at >= duration_ms {
                        break;
                    }
                    bp = value;
                    path.push((at, bp));
                    lo = lo.min(bp);
                    hi = hi.max(bp);
                    at += 1_000;
                }
                up = !up;
                next_spike = at + rng.range(9_000, 16_000) as u64;
                continue;
            }
            bp += rng.range(-20, 20) + (10_000 - bp) / 8;
            path.push((at, bp));
            lo = lo.min(bp);
            hi = hi.max(bp);
            at += 1_000;
        }
        paths.push(path);
        ranges.push((lo, hi));
        ends.push(bp);
    }
    (paths, ranges, ends)
}

fn bp_in(path: &[(u64, i64)], at_ms: u64) -> i64 {
    path.iter()
        .take_while(|(t, _)| *t <= at_ms)
        .last()
        .map_or(10_000, |(_, bp)| *bp)
}

/// `pct` tenths of a percent as a Decimal percent (15 → 1.5).
fn tenths(n: i64) -> Decimal {
    Decimal::new(n, 1)
}

fn entries(
    seed: u64,
    count: usize,
    markets: &[Market],
    paths: &[Vec<(u64, i64)>],
    times: &[u64],
) -> Vec<PlannedEntry> {
    let mut rng = Rng::derive(seed, "entries");
    let mut out: Vec<PlannedEntry> = Vec::with_capacity(count);
    let (mut plans, mut invalids, mut refused) = (0usize, 0usize, 0usize);
    for (n, at) in times.iter().enumerate() {
        let id = entry_id(n);
        let originals: Vec<usize> = out
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, e)| {
                e.kind == EntryKind::Valid
                    && matches!(&e.body, Body::Intent(d) if d.action != Action::Close)
            })
            .map(|(i, _)| i)
            .take(10)
            .collect();
        let roll = rng.below(1000);
        let entry = if roll < 50 && !originals.is_empty() {
            let of = *rng.pick(&originals);
            PlannedEntry {
                id: out[of].id.clone(),
                kind: EntryKind::Duplicate { of },
                body: Body::Same(of),
            }
        } else if roll < 80 && !originals.is_empty() {
            let of = *rng.pick(&originals);
            let Body::Intent(first) = &out[of].body else {
                unreachable!("originals are drafts")
            };
            let mut other = first.clone();
            other.action = if first.action == Action::Buy {
                Action::Sell
            } else {
                Action::Buy
            };
            other.usd = Some(Decimal::from(rng.range(25, 150)));
            other.quantity = None;
            other.plan = "other content";
            PlannedEntry {
                id: out[of].id.clone(),
                kind: EntryKind::Conflict { of },
                body: Body::Intent(other),
            }
        } else if roll < 140 {
            let what = INVALID_KINDS[invalids % INVALID_KINDS.len()];
            invalids += 1;
            let market = &markets[rng.below(markets.len() as u64) as usize];
            let (body, readable) = invalid_body(what, &id, &market.symbol);
            PlannedEntry {
                id: readable.then_some(id),
                kind: EntryKind::Invalid { what },
                body: Body::Raw(body),
            }
        } else if roll < 180 {
            let what = REFUSED_KINDS[refused % REFUSED_KINDS.len()];
            refused += 1;
            let m = rng.below(markets.len() as u64) as usize;
            let mut draft = plain_draft(&markets[m], Action::Buy, 50);
            match what {
                "notional above risk.max_notional_usd" => draft.usd = Some(Decimal::from(5_000)),
                "leverage above risk.max_leverage" => draft.leverage = Some(50),
                "unlisted symbol" => draft.symbol = "FOOUSDT".into(),
                "below the minimum notional" => draft.usd = Some(Decimal::ONE),
                _ => draft.expires_in_ms = Some(-1_000),
            }
            draft.plan = what;
            PlannedEntry {
                id: Some(id),
                kind: EntryKind::Refused { what },
                body: Body::Intent(draft),
            }
        } else if roll < 210 {
            let m = rng.below(markets.len() as u64) as usize;
            let mut draft = plain_draft(&markets[m], Action::Close, 0);
            draft.usd = None;
            draft.leverage = None;
            draft.plan = "strategy close of the whole position";
            draft.close_side = if n % 2 == 0 {
                PositionSide::Long
            } else {
                PositionSide::Short
            };
            PlannedEntry {
                id: Some(id),
                kind: EntryKind::Valid,
                body: Body::Intent(draft),
            }
        } else {
            let m = rng.below(markets.len() as u64) as usize;
            let market = &markets[m];
            let action = if rng.chance(500) {
                Action::Buy
            } else {
                Action::Sell
            };
            let usd = rng.range(25, 150);
            let mut draft = plain_draft(market, action, usd);
            let price = market.price(bp_in(&paths[m], *at));
            if rng.chance(150) && market.step > Decimal::ZERO && price > Decimal::ZERO {
                // By quantity: the size rounded down to the lot step, well above the minimum.
                let usd = Decimal::from(rng.range(40, 150));
                let qty = round_to(usd / price, market.step);
                if qty > Decimal::ZERO {
                    draft.usd = None;
                    draft.quantity = Some(qty);
                }
            }
            draft.leverage = if rng.chance(300) {
                None
            } else {
                Some(rng.range(2, 20) as u32)
            };
            if rng.chance(50) {
                draft.expires_in_ms = Some(rng.range(5_000, 30_000));
            }
            let kind = if plans < PLAN_KINDS.len() {
                PLAN_KINDS[plans]
            } else {
                *rng.pick(&PLAN_KINDS)
            };
            plans += 1;
            apply_plan(&mut draft, kind, price, market.tick, &mut rng);
            PlannedEntry {
                id: Some(id),
                kind: EntryKind::Valid,
                body: Body::Intent(draft),
            }
        };
        out.push(entry);
    }
    out
}

fn plain_draft(market: &Market, action: Action, usd: i64) -> Draft {
    Draft {
        symbol: market.symbol.clone(),
        action,
        usd: Some(Decimal::from(usd)),
        quantity: None,
        leverage: Some(10),
        take_profit: None,
        stop_loss: None,
        trailing: None,
        expires_in_ms: None,
        plan: "none",
        close_side: PositionSide::Long,
    }
}

fn apply_plan(draft: &mut Draft, kind: &'static str, price: Decimal, tick: Decimal, rng: &mut Rng) {
    let long = draft.action == Action::Buy;
    let pct = |rng: &mut Rng| tenths(rng.range(5, 30));
    // A price level `pct` percent away from `price`, beyond it in the direction of profit
    // (`favourable`) or of loss.
    let level = |rng: &mut Rng, favourable: bool| {
        let distance = price * pct(rng) / Decimal::ONE_HUNDRED;
        let up = favourable == long;
        let raw = if up {
            price + distance
        } else {
            price - distance
        };
        ExitLevel::Price(round_to(raw, tick).max(tick))
    };
    match kind {
        "tp+sl pct" => {
            draft.take_profit = Some(ExitLevel::Pct(pct(rng)));
            draft.stop_loss = Some(ExitLevel::Pct(pct(rng)));
        }
        "sl pct" => draft.stop_loss = Some(ExitLevel::Pct(pct(rng))),
        "tp pct" => draft.take_profit = Some(ExitLevel::Pct(pct(rng))),
        "trailing+sl pct" => {
            draft.trailing = Some(tenths(rng.range(3, 20)));
            draft.stop_loss = Some(ExitLevel::Pct(pct(rng)));
        }
        "trailing" => draft.trailing = Some(tenths(rng.range(3, 20))),
        "tp+sl price" => {
            draft.take_profit = Some(level(rng, true));
            draft.stop_loss = Some(level(rng, false));
        }
        "sl price" => draft.stop_loss = Some(level(rng, false)),
        "tp price" => draft.take_profit = Some(level(rng, true)),
        "tp+sl+trailing pct" => {
            draft.take_profit = Some(ExitLevel::Pct(pct(rng)));
            draft.stop_loss = Some(ExitLevel::Pct(pct(rng)));
            draft.trailing = Some(tenths(rng.range(3, 20)));
        }
        _ => {}
    }
    draft.plan = kind;
}

/// An invalid document of kind `what`, and whether its intent id can be read from it.
fn invalid_body(what: &str, id: &str, symbol: &str) -> (String, bool) {
    let base = |extra: &str| {
        format!(
            r#"{{"intent_id":"{id}","symbol":"{symbol}","action":"BUY","position_size_usd":50{extra}}}"#
        )
    };
    match what {
        "not JSON" => (
            format!(
                r#"{{"intent_id":"{id}","symbol":"{symbol}","action":"BUY","position_size_usd":50"#
            ),
            false,
        ),
        "unknown field" => (base(r#","take_profit_pcnt":2"#), true),
        "leverage 0" => (base(r#","leverage":0"#), true),
        "leverage 126" => (base(r#","leverage":126"#), true),
        "negative size" => (
            format!(
                r#"{{"intent_id":"{id}","symbol":"{symbol}","action":"SELL","position_size_usd":-50}}"#
            ),
            true,
        ),
        "zero quantity" => (
            format!(r#"{{"intent_id":"{id}","symbol":"{symbol}","action":"BUY","quantity":0}}"#),
            true,
        ),
        "missing symbol" => (
            format!(r#"{{"intent_id":"{id}","action":"BUY","position_size_usd":50}}"#),
            true,
        ),
        "size and quantity" => (base(r#","quantity":3"#), true),
        "trailing 20%" => (base(r#","trailing_pct":20"#), true),
        "CLOSE with an exit plan" => (
            format!(
                r#"{{"intent_id":"{id}","symbol":"{symbol}","action":"CLOSE","stop_loss_pct":1}}"#
            ),
            true,
        ),
        "malformed symbol" => (
            format!(
                r#"{{"intent_id":"{id}","symbol":"BTC-USD","action":"BUY","position_size_usd":50}}"#
            ),
            true,
        ),
        "not an object" => (format!(r#"["{id}","{symbol}","BUY",50]"#), false),
        "number too large" => (
            format!(
                r#"{{"intent_id":"{id}","symbol":"{symbol}","action":"BUY","position_size_usd":1e40}}"#
            ),
            true,
        ),
        "action HOLD" => (
            format!(
                r#"{{"intent_id":"{id}","symbol":"{symbol}","action":"HOLD","position_size_usd":50}}"#
            ),
            true,
        ),
        _ => (
            format!(
                r#"{{"intent_id":"{id}","symbol":"{symbol}","action":"BUY","position_size_usd":"NaN"}}"#
            ),
            true,
        ),
    }
}

/// No kill this long after Redis is back: the services must recover from the restart by
/// themselves (a kill would hand them fresh connections and hide a failure to reconnect).
pub const QUIET_AFTER_REDIS_MS: u64 = 30_000;

/// Kills of each service: about one per 25 s of scenario, at least one SIGKILL and one SIGTERM
/// each, at random moments between 10 % and 85 % of the scenario but not from 3 s before the
/// Redis restart until [`QUIET_AFTER_REDIS_MS`] after Redis is back; one per time slot, so a
/// service is back before its next kill.
fn kills(seed: u64, duration_ms: u64, redis_at: u64, redis_pause: u64) -> Vec<Timed> {
    let windows: Vec<(u64, u64)> = [
        (duration_ms / 10, redis_at.saturating_sub(3_000)),
        (
            redis_at + redis_pause + QUIET_AFTER_REDIS_MS,
            duration_ms * 85 / 100,
        ),
    ]
    .into_iter()
    .filter(|(from, to)| to > from)
    .collect();
    let total: u64 = windows.iter().map(|(from, to)| to - from).sum();
    // A position in the windows, laid end to end, as a time.
    let at = |mut p: u64| {
        for (from, to) in &windows {
            if p < to - from {
                return from + p;
            }
            p -= to - from;
        }
        windows.last().map_or(0, |(_, to)| *to)
    };
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    for (service, name) in SERVICES.iter().enumerate() {
        let mut rng = Rng::derive(seed, &format!("kills-{name}"));
        let count = (duration_ms / 25_000).max(2);
        let slot = total / count;
        let first_term = rng.chance(500);
        for k in 0..count {
            let p = k * slot + slot / 5 + rng.below((slot * 3 / 5).max(1));
            let signal = match k {
                0 if first_term => Signal::Term,
                0 => Signal::Kill,
                1 if first_term => Signal::Kill,
                1 => Signal::Term,
                _ if rng.chance(500) => Signal::Term,
                _ => Signal::Kill,
            };
            out.push(Timed {
                at_ms: at(p),
                event: Event::Kill {
                    service,
                    signal,
                    pause_ms: rng.range(500, 3_000) as u64,
                },
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markets() -> Vec<Market> {
        vec![
            Market {
                symbol: "AXSUSDT".into(),
                start: Decimal::new(625, 2),
                tick: Decimal::new(1, 3),
                step: Decimal::ONE,
            },
            Market {
                symbol: "ETHUSDT".into(),
                start: Decimal::from(3400),
                tick: Decimal::new(1, 2),
                step: Decimal::new(1, 3),
            },
        ]
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let a = Plan::generate(7, 120, 40_000, markets());
        let b = Plan::generate(7, 120, 40_000, markets());
        let c = Plan::generate(8, 120, 40_000, markets());
        assert_eq!(a.render(), b.render());
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn every_valid_draft_builds_and_every_kind_appears() {
        let plan = Plan::generate(3, 300, 90_000, markets());
        let mut kinds = std::collections::BTreeSet::new();
        for (n, e) in plan.entries.iter().enumerate() {
            kinds.insert(e.kind.label());
            if let (Body::Intent(d), EntryKind::Valid | EntryKind::Refused { .. }) =
                (&e.body, &e.kind)
            {
                d.build(e.id.as_deref().unwrap(), 1_000_000, false)
                    .unwrap_or_else(|err| panic!("entry {n} {d:?}: {err}"));
            }
            if let (Body::Raw(text), EntryKind::Invalid { what }) = (&e.body, &e.kind) {
                assert!(TradeIntent::from_json(text).is_err(), "{what}: {text}");
            }
        }
        for label in [
            "valid",
            "duplicate",
            "same id, other content",
            "invalid",
            "refused",
        ] {
            assert!(kinds.contains(label), "{label} in {kinds:?}");
        }
        let faults: std::collections::BTreeSet<&str> = plan
            .events
            .iter()
            .filter_map(|t| match &t.event {
                Event::Fault(step) if step.injects => Some(step.knob.name()),
                _ => None,
            })
            .collect();
        assert_eq!(faults.len(), faults::Knob::ALL.len(), "{faults:?}");
        for service in 0..SERVICES.len() {
            for signal in [Signal::Kill, Signal::Term] {
                assert!(plan.events.iter().any(|t| matches!(
                    t.event,
                    Event::Kill { service: s, signal: g, .. } if s == service && g == signal
                )));
            }
        }
    }

    #[test]
    fn no_kill_comes_near_the_redis_restart() {
        for seed in 0..50 {
            let plan = Plan::generate(seed, 100, 60_000, markets());
            let (at, pause) = plan
                .events
                .iter()
                .find_map(|t| match t.event {
                    Event::RedisRestart { pause_ms } => Some((t.at_ms, pause_ms)),
                    _ => None,
                })
                .unwrap();
            let kills: Vec<u64> = plan
                .events
                .iter()
                .filter(|t| matches!(t.event, Event::Kill { .. }))
                .map(|t| t.at_ms)
                .collect();
            assert_eq!(kills.len(), 6, "seed {seed}");
            for k in kills {
                assert!(
                    k + 3_000 <= at || k >= at + pause + QUIET_AFTER_REDIS_MS,
                    "seed {seed}: kill at {k}, redis restart at {at} for {pause}"
                );
            }
        }
    }

    #[test]
    fn rng_ranges_stay_inside() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let v = rng.range(-3, 4);
            assert!((-3..=4).contains(&v));
        }
        let p = rng.permutation(17);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..17).collect::<Vec<_>>());
    }
}
