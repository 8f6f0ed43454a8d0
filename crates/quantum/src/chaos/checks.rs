//! Invariant checks: the run's record (what was published, how each process ended, what the
//! final sweeps saw) held against the truth read at the end (the bus and the exchange). Each
//! invariant counts what it checked and lists its violations, each with the strings to look for
//! in the logs (intent ids, client order ids). An invariant whose data could not be read says
//! so (`unchecked`) instead of passing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;

use binance::{Order, OrderStatus};
use model::{Action, ClientOrderId, IntentId, TradeIntent};
use rust_decimal::Decimal;
use serde_json::Value;

use super::procs::Ended;
use super::scenario::{Body, EntryKind, Plan};
use super::truth::{self, orders_by_client_id, BusTruth, ExchangeTruth, ResultEntry};

/// One broken promise, and what to grep the logs for.
#[derive(Debug, Clone)]
pub struct Violation {
    pub detail: String,
    pub needles: Vec<String>,
}

/// One invariant's outcome.
#[derive(Debug, Clone)]
pub struct Invariant {
    pub name: &'static str,
    pub what: &'static str,
    pub checked: usize,
    pub violations: Vec<Violation>,
    /// Why (part of) it could not be checked.
    pub unchecked: Vec<String>,
    /// Observations that are not violations.
    pub notes: Vec<String>,
}

impl Invariant {
    fn new(name: &'static str, what: &'static str) -> Invariant {
        Invariant {
            name,
            what,
            checked: 0,
            violations: Vec::new(),
            unchecked: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn violate(&mut self, detail: String, needles: Vec<String>) {
        self.violations.push(Violation { detail, needles });
    }
}

/// What was published for one entry.
#[derive(Debug, Clone)]
pub struct Published {
    pub text: String,
    pub entry_id: String,
}

/// What the final sweeps saw.
#[derive(Debug, Clone)]
pub struct SweepRecord {
    /// Whether a final sweep ran at all.
    pub ran: bool,
    /// Positions open when the first final sweep began, by symbol.
    pub open_at_first: BTreeMap<String, Decimal>,
    /// Positions open when each later round began.
    pub open_later: BTreeMap<String, Decimal>,
    pub rounds: u32,
    /// Ok(ms it took) or what was still outstanding at the deadline.
    pub settled: Result<u64, String>,
}

impl Default for SweepRecord {
    fn default() -> Self {
        SweepRecord {
            ran: false,
            open_at_first: BTreeMap::new(),
            open_later: BTreeMap::new(),
            rounds: 0,
            settled: Err("no final sweep ran".into()),
        }
    }
}

/// Everything the checks read.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub plan: &'a Plan,
    pub published: &'a [Option<Published>],
    pub bus: &'a Result<BusTruth, String>,
    pub exchange: &'a ExchangeTruth,
    pub ended: &'a [Ended],
    pub start_errors: &'a [String],
    pub sweep: &'a SweepRecord,
    pub logs: &'a [(String, PathBuf)],
    /// The services' logs (a subset of `logs`).
    pub service_logs: &'a [(String, PathBuf)],
    /// When Redis answered again after its restart (RFC 3339, UTC, microseconds), if it did.
    pub redis_back: Option<std::time::SystemTime>,
    pub secret: &'a str,
}

fn cid(id: &str) -> Option<String> {
    IntentId::new(id)
        .ok()
        .map(|i| ClientOrderId::for_intent(&i).as_str().to_string())
}

fn needles(id: &str) -> Vec<String> {
    let mut out = vec![id.to_string()];
    if let Some(c) = cid(id) {
        if c != format!("q-{id}") {
            out.push(c);
        }
    }
    out
}

fn describe(order: &Order) -> String {
    format!(
        "orderId {} {} {} executedQty {} avgPrice {}{}",
        order.order_id,
        order.side.as_str(),
        order.status.as_str(),
        order.executed_qty.normalize(),
        order.avg_price.normalize(),
        if order.reduce_only { " reduceOnly" } else { "" }
    )
}

fn is_open(order: &Order) -> bool {
    matches!(
        order.status,
        OrderStatus::New | OrderStatus::PartiallyFilled
    )
}

fn decimal_of(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => Decimal::from_str(&n.to_string())
            .or_else(|_| Decimal::from_scientific(&n.to_string()))
            .ok(),
        Value::String(s) => Decimal::from_str(s).ok(),
        _ => None,
    }
}

/// The ids the run deals in.
struct Ids {
    /// Valid and refused entries' ids (one result each), with the entry index of the first.
    answered: BTreeMap<String, usize>,
    /// The exit monitor's close intents on the stream: id → parsed intent.
    closes: BTreeMap<String, TradeIntent>,
    /// Stream entries neither the harness nor the monitor wrote.
    foreign: Vec<String>,
}

fn ids(inputs: &Inputs, bus: &BusTruth) -> Ids {
    let mut answered = BTreeMap::new();
    for (n, entry) in inputs.plan.entries.iter().enumerate() {
        if inputs.published[n].is_none() {
            continue;
        }
        if let (Some(id), EntryKind::Valid | EntryKind::Refused { .. }) = (&entry.id, &entry.kind) {
            answered.entry(id.clone()).or_insert(n);
        }
        // A duplicate or conflict whose original never got out still asks for one answer.
        if let (Some(id), EntryKind::Duplicate { .. } | EntryKind::Conflict { .. }) =
            (&entry.id, &entry.kind)
        {
            answered.entry(id.clone()).or_insert(n);
        }
    }
    let ours: BTreeSet<&str> = inputs
        .published
        .iter()
        .flatten()
        .map(|p| p.entry_id.as_str())
        .collect();
    let texts: BTreeSet<&str> = inputs
        .published
        .iter()
        .flatten()
        .map(|p| p.text.as_str())
        .collect();
    let mut closes = BTreeMap::new();
    let mut foreign = Vec::new();
    for (entry_id, text) in &bus.intents {
        // A publish retried after a lost reply can land twice: same text, another entry id.
        if ours.contains(entry_id.as_str()) || texts.contains(text.as_str()) {
            continue;
        }
        match TradeIntent::from_json(text) {
            Ok(intent) if intent.action == Action::Close => {
                closes.insert(intent.intent_id.as_str().to_string(), intent);
            }
            _ => foreign.push(format!("{entry_id}: {text}")),
        }
    }
    Ids {
        answered,
        closes,
        foreign,
    }
}

/// Runs every check.
pub fn run(inputs: &Inputs) -> Vec<Invariant> {
    let mut out = Vec::new();
    let bus = inputs.bus.as_ref();
    let orders = inputs.exchange.orders.as_ref();
    let ids = bus.ok().map(|b| ids(inputs, b));
    let by_cid = orders.ok().map(|o| orders_by_client_id(o));
    let results: BTreeMap<&str, Vec<&ResultEntry>> = match bus {
        Ok(b) => {
            let mut map: BTreeMap<&str, Vec<&ResultEntry>> = BTreeMap::new();
            for r in &b.results {
                map.entry(r.intent_id.as_str()).or_default().push(r);
            }
            map
        }
        Err(_) => BTreeMap::new(),
    };

    // 1. At most one order per intent; no order no intent explains.
    let mut inv = Invariant::new(
        "one-order-per-intent",
        "at most one order on the exchange per intent id (client order id q-<intent_id>), and none that no intent explains",
    );
    match (&ids, &by_cid) {
        (Some(ids), Some(by_cid)) => {
            let mut known: BTreeSet<String> = BTreeSet::new();
            let readable = inputs.plan.entries.iter().filter_map(|e| e.id.clone());
            for id in readable.chain(ids.closes.keys().cloned()) {
                let Some(c) = cid(&id) else { continue };
                if !known.insert(c.clone()) {
                    continue;
                }
                inv.checked += 1;
                if let Some(list) = by_cid.get(c.as_str()).filter(|l| l.len() > 1) {
                    inv.violate(
                        format!(
                            "intent {id} has {} orders on the exchange (client order id {c}): {}",
                            list.len(),
                            list.iter()
                                .map(|o| describe(o))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                        needles(&id),
                    );
                }
            }
            for (c, list) in by_cid {
                if known.contains(*c) || service::protection::is_protective(c) {
                    continue;
                }
                inv.violate(
                    format!(
                        "{} order(s) with client order id {c} that no intent of the run explains: {}",
                        list.len(),
                        list.iter().map(|o| describe(o)).collect::<Vec<_>>().join("; ")
                    ),
                    vec![c.to_string()],
                );
            }
            for entry in &ids.foreign {
                inv.notes.push(format!(
                    "intent stream entry no one of the run wrote: {entry}"
                ));
            }
        }
        _ => inv.unchecked.push(unreadable(bus.err(), orders.err())),
    }
    out.push(inv);

    // 2. Exactly one result per intent.
    let mut inv = Invariant::new(
        "one-result-per-intent",
        "exactly one execution result per valid intent (entries and the exit monitor's closes)",
    );
    match &ids {
        Some(ids) => {
            let mut expected: BTreeSet<&str> = BTreeSet::new();
            for id in ids.answered.keys().chain(ids.closes.keys()) {
                expected.insert(id.as_str());
                inv.checked += 1;
                let got = results.get(id.as_str()).map_or(0, Vec::len);
                if got != 1 {
                    let statuses: Vec<String> = results
                        .get(id.as_str())
                        .map(|rs| {
                            rs.iter()
                                .map(|r| format!("{} ({})", r.status, r.entry_id))
                                .collect()
                        })
                        .unwrap_or_default();
                    inv.violate(
                        if got == 0 {
                            format!("intent {id} has no result")
                        } else {
                            format!("intent {id} has {got} results: {}", statuses.join(", "))
                        },
                        needles(id),
                    );
                }
            }
            let invalid: BTreeSet<&str> = inputs
                .plan
                .entries
                .iter()
                .filter(|e| matches!(e.kind, EntryKind::Invalid { .. }))
                .filter_map(|e| e.id.as_deref())
                .collect();
            for (id, rs) in &results {
                if id.is_empty() || expected.contains(id) || invalid.contains(id) {
                    continue;
                }
                if let Some(of) = id.strip_prefix("late-") {
                    if expected.contains(of) {
                        if rs.len() > 1 {
                            inv.violate(
                                format!("{} late-fill results for intent {of}", rs.len()),
                                needles(of),
                            );
                        }
                        continue;
                    }
                }
                inv.violate(
                    format!(
                        "{} result(s) for intent {id:?}, which no one of the run sent",
                        rs.len()
                    ),
                    vec![id.to_string()],
                );
            }
        }
        None => inv.unchecked.push(unreadable(bus.err(), None)),
    }
    out.push(inv);

    // 3. Bad input refused, never executed.
    out.push(refusals(
        inputs,
        &ids,
        &results,
        &by_cid,
        bus.err(),
        orders.err(),
    ));

    // 4-6. Results against the exchange.
    let (agree, fees, fills) = agreement(inputs, &ids, &results, &by_cid, bus, orders);
    out.push(agree);
    out.push(fees);
    out.push(fills);

    // 7. Positions flat after the final sweeps.
    out.push(positions(inputs));

    // 8. No order left open; exits executed once, reduce-only.
    out.push(leftovers(inputs));
    out.push(exits(&ids, &by_cid, bus.err(), orders.err()));

    // 9. Processes.
    let mut inv = Invariant::new(
        "services-exit-only-when-killed",
        "no service ended unless killed; every SIGTERM'd one exited 0 within its grace",
    );
    inv.checked = inputs.ended.len();
    for end in inputs.ended {
        if let Some(why) = &end.violation {
            let mut detail = format!(
                "{} (start #{}) at +{} ms: {why}",
                end.service, end.start, end.at_ms
            );
            if !end.tail.is_empty() {
                detail.push_str("\n      last lines of its log:\n");
                for line in &end.tail {
                    detail.push_str("        ");
                    detail.push_str(line);
                    detail.push('\n');
                }
            }
            inv.violate(detail, vec![]);
        }
    }
    for e in inputs.start_errors {
        inv.violate(format!("could not start a service: {e}"), vec![]);
    }
    out.push(inv);

    out.push(redis_recovery(inputs));
    out.push(stops(inputs));

    // 10-11. Logs.
    let mut panics = Invariant::new("no-panic-in-logs", "no \"panicked\" in any log");
    let mut secret = Invariant::new(
        "secret-not-in-logs",
        "the API secret appears in no log of the run",
    );
    for (name, path) in inputs.logs {
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                panics.unchecked.push(format!("{name}: {e}"));
                secret.unchecked.push(format!("{name}: {e}"));
                continue;
            }
        };
        panics.checked += 1;
        secret.checked += 1;
        for (n, line) in text.lines().enumerate() {
            if line.contains("panicked") {
                panics.violate(
                    format!("{name}:{}: {}", n + 1, clip(line, 400)),
                    vec!["panicked".into()],
                );
            }
        }
        if !inputs.secret.is_empty() && text.contains(inputs.secret) {
            let lines = text.lines().filter(|l| l.contains(inputs.secret)).count();
            secret.violate(
                format!("{name} contains the API secret on {lines} line(s)"),
                vec![],
            );
        }
    }
    out.push(panics);
    out.push(secret);

    // 12. Quiescence.
    let mut inv = Invariant::new(
        "system-settles",
        "once faults are lifted and services are back, every intent is answered, the streams are drained and the book is flat, within the deadline",
    );
    inv.checked = 1;
    if let Err(outstanding) = &inputs.sweep.settled {
        inv.violate(format!("did not settle: {outstanding}"), vec![]);
    }
    out.push(inv);
    out
}

/// How long after Redis is back a service may still fail to reach it.
const REDIS_RECOVERY_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

fn redis_recovery(inputs: &Inputs) -> Invariant {
    let mut inv = Invariant::new(
        "services-recover-after-redis-restart",
        "no service still fails to reach Redis 15 s after it is back from its restart (one failed command that reconnects is fine; timeouts, or failures for 5 s or more, are not)",
    );
    let Some(back) = inputs.redis_back else {
        inv.unchecked
            .push("Redis was not restarted (or did not come back)".into());
        return inv;
    };
    // Log lines start with an RFC 3339 UTC time with microseconds: compared as text.
    let after = humantime::format_rfc3339_micros(back + REDIS_RECOVERY_GRACE).to_string();
    let back_text = humantime::format_rfc3339_micros(back).to_string();
    let stamp = |line: &str| -> Option<std::time::SystemTime> {
        humantime::parse_rfc3339(line.get(..after.len())?).ok()
    };
    for (name, path) in inputs.service_logs {
        let Ok(bytes) = std::fs::read(path) else {
            inv.unchecked.push(format!("{name}: log unreadable"));
            continue;
        };
        inv.checked += 1;
        let text = String::from_utf8_lossy(&bytes);
        // Per start of the process (the harness writes a marker line before each).
        let mut segment: Vec<(usize, &str)> = Vec::new();
        let mut segments: Vec<Vec<(usize, &str)>> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("===== quantum chaos: start") {
                segments.push(std::mem::take(&mut segment));
                continue;
            }
            if line.contains("bus unavailable")
                && line.get(..after.len()).is_some_and(|t| t > after.as_str())
            {
                segment.push((n, line));
            }
        }
        segments.push(segment);
        for late in segments.into_iter().filter(|s| !s.is_empty()) {
            let (first_n, first) = late[0];
            let (_, last) = late[late.len() - 1];
            let span = match (stamp(first), stamp(last)) {
                (Some(a), Some(b)) => b.duration_since(a).unwrap_or_default(),
                _ => std::time::Duration::ZERO,
            };
            let timeouts = late
                .iter()
                .filter(|(_, l)| l.contains("no answer within"))
                .count();
            if timeouts == 0 && span < std::time::Duration::from_secs(5) {
                continue;
            }
            inv.violate(
                format!(
                    "{name}: Redis was back at {back_text}, but {} \"bus unavailable\" line(s) ({timeouts} timeouts) follow more than {} s later, over {:.0} s until {}; first at {name}:{}: {}",
                    late.len(),
                    REDIS_RECOVERY_GRACE.as_secs(),
                    span.as_secs_f64(),
                    last.get(..after.len()).unwrap_or(""),
                    first_n + 1,
                    clip(first, 300)
                ),
                vec!["bus unavailable".into()],
            );
        }
    }
    inv
}

/// Every lot the exit monitor tracks has a stop-loss (the intent's, else the default), as its
/// `tracking lot=<id> ... stop_loss=<level>` log line says.
fn stops(inputs: &Inputs) -> Invariant {
    let mut inv = Invariant::new(
        "every-lot-has-a-stop",
        "every position the exit monitor tracks has a stop-loss, the intent's or the default (exit.allow_unprotected is off)",
    );
    let Some((name, path)) = inputs
        .service_logs
        .iter()
        .find(|(name, _)| name == "exit-monitor")
    else {
        inv.unchecked.push("no exit monitor log".into());
        return inv;
    };
    let Ok(bytes) = std::fs::read(path) else {
        inv.unchecked.push(format!("{name}: log unreadable"));
        return inv;
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let Some(rest) = line.split("tracking lot=").nth(1) else {
            continue;
        };
        let lot = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        if !seen.insert(lot.clone()) {
            continue;
        }
        inv.checked += 1;
        if line.contains("stop_loss=None") {
            inv.violate(
                format!(
                    "lot {lot} is tracked without a stop-loss ({name}:{}: {})",
                    n + 1,
                    clip(line, 300)
                ),
                vec![format!("lot={lot} "), format!("ALARM no_stop")],
            );
        }
    }
    let fills = inputs.bus.as_ref().map_or(0, |b| {
        b.results
            .iter()
            .filter(|r| r.status == "filled" && !r.intent_id.starts_with("close-"))
            .count()
    });
    if inv.checked == 0 && fills > 0 {
        inv.unchecked.push(format!(
            "{fills} entries filled, but the exit monitor's log has no \"tracking lot=\" line to read the levels from"
        ));
    }
    inv
}

fn unreadable(bus: Option<&String>, orders: Option<&String>) -> String {
    let mut parts = Vec::new();
    if let Some(e) = bus {
        parts.push(format!("the bus could not be read ({e})"));
    }
    if let Some(e) = orders {
        parts.push(format!("the exchange's orders could not be read ({e})"));
    }
    parts.join("; ")
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}...", &text[..at]),
    }
}

fn refusals(
    inputs: &Inputs,
    ids: &Option<Ids>,
    results: &BTreeMap<&str, Vec<&ResultEntry>>,
    by_cid: &Option<BTreeMap<&str, Vec<&Order>>>,
    bus_err: Option<&String>,
    orders_err: Option<&String>,
) -> Invariant {
    let mut inv = Invariant::new(
        "bad-input-refused",
        "invalid entries get a rejected result and a dead letter; refused ones a rejected (or expired) result; none an order",
    );
    let (Some(_), Ok(bus)) = (ids, inputs.bus.as_ref()) else {
        inv.unchecked.push(unreadable(bus_err, None));
        return inv;
    };
    if by_cid.is_none() {
        inv.unchecked.push(unreadable(None, orders_err));
    }
    let dead: BTreeSet<&str> = bus
        .dead_letters
        .iter()
        .filter_map(|d| d["payload"].as_str())
        .collect();
    let anonymous_rejections = results
        .get("")
        .map_or(0, |rs| rs.iter().filter(|r| r.status == "rejected").count());
    let mut anonymous_sent = 0usize;
    let has_order = |id: &str| -> Option<String> {
        let c = cid(id)?;
        let list = by_cid.as_ref()?.get(c.as_str())?;
        Some(
            list.iter()
                .map(|o| describe(o))
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    for (n, entry) in inputs.plan.entries.iter().enumerate() {
        let Some(published) = &inputs.published[n] else {
            continue;
        };
        match &entry.kind {
            EntryKind::Invalid { what } => {
                inv.checked += 1;
                if !dead.contains(published.text.as_str()) {
                    inv.violate(
                        format!(
                            "invalid entry #{n} ({what}) has no dead letter: {}",
                            published.text
                        ),
                        entry.id.iter().cloned().collect(),
                    );
                }
                match &entry.id {
                    Some(id) => {
                        let rs = results.get(id.as_str()).cloned().unwrap_or_default();
                        if !rs.iter().any(|r| r.status == "rejected") {
                            inv.violate(
                                format!("invalid entry {id} ({what}) has no rejected result (results: {:?})", rs.iter().map(|r| &r.status).collect::<Vec<_>>()),
                                needles(id),
                            );
                        } else if rs.len() > 1 {
                            inv.notes.push(format!(
                                "invalid entry {id} ({what}) was rejected {} times (a redelivery after a crash; harmless)",
                                rs.len()
                            ));
                        }
                        if let Some(o) = has_order(id) {
                            inv.violate(
                                format!("invalid entry {id} ({what}) reached the exchange: {o}"),
                                needles(id),
                            );
                        }
                    }
                    None => anonymous_sent += 1,
                }
            }
            EntryKind::Refused { what } => {
                inv.checked += 1;
                let id = entry.id.as_deref().unwrap_or_default();
                let rs = results.get(id).cloned().unwrap_or_default();
                let allowed: &[&str] = if *what == "already expired" {
                    &["expired"]
                } else {
                    &["rejected", "expired"]
                };
                if let Some(bad) = rs.iter().find(|r| !allowed.contains(&r.status.as_str())) {
                    inv.violate(
                        format!(
                            "entry {id} ({what}) should be refused ({}), got {}: {}",
                            allowed.join(" or "),
                            bad.status,
                            clip(&bad.raw, 300)
                        ),
                        needles(id),
                    );
                }
                if let Some(o) = has_order(id) {
                    inv.violate(
                        format!("entry {id} ({what}) reached the exchange: {o}"),
                        needles(id),
                    );
                }
            }
            EntryKind::Conflict { of } => {
                inv.checked += 1;
                let id = entry.id.as_deref().unwrap_or_default();
                let (Body::Intent(first), Body::Intent(second)) =
                    (&inputs.plan.entries[*of].body, &entry.body)
                else {
                    continue;
                };
                if inputs.published[*of].is_none() {
                    continue;
                }
                // Executed at most once is checked by one-order / one-result; which content
                // wins depends on which entry a worker reads first (a redelivered earlier entry
                // can come after the later one), so it is noted, not judged.
                for r in results.get(id).cloned().unwrap_or_default() {
                    let Ok(parsed) = &r.parsed else { continue };
                    if parsed.action() == Some(second.action) && second.action != first.action {
                        inv.notes.push(format!(
                            "intent id {id} was sent with two contents; the later one ({} {}) was answered ({}), the earlier ({} {}) refused",
                            second.action.as_str(),
                            second.symbol,
                            r.status,
                            first.action.as_str(),
                            first.symbol
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    if anonymous_rejections < anonymous_sent {
        inv.violate(
            format!(
                "{anonymous_sent} entries without a readable intent id were sent, but only {anonymous_rejections} rejected results without an id were published"
            ),
            vec![],
        );
    }
    inv
}

/// Results against the exchange's orders: status, quantity, average price; fees; and the fill
/// fields of every result.
fn agreement(
    inputs: &Inputs,
    ids: &Option<Ids>,
    results: &BTreeMap<&str, Vec<&ResultEntry>>,
    by_cid: &Option<BTreeMap<&str, Vec<&Order>>>,
    bus: Result<&BusTruth, &String>,
    orders: Result<&Vec<Order>, &String>,
) -> (Invariant, Invariant, Invariant) {
    let mut agree = Invariant::new(
        "results-match-exchange",
        "every result agrees with the exchange's order: status, executed quantity, average price (a late-<id> result covering what filled after it)",
    );
    let mut fees = Invariant::new(
        "result-fees-match-exchange",
        "the commission of every result with a fill equals the exchange's trades of its order",
    );
    let mut fills = Invariant::new(
        "fill-has-price-and-qty",
        "every result is readable, and one with a fill has a positive price and quantity and notional = price x qty",
    );
    // Fill fields, on every result.
    match bus {
        Ok(b) => {
            for r in &b.results {
                let value: Value = serde_json::from_str(&r.raw).unwrap_or(Value::Null);
                let has_fill = matches!(r.status.as_str(), "filled" | "partially_filled");
                if let Err(e) = &r.parsed {
                    fills.checked += 1;
                    fills.violate(
                        format!(
                            "result {} is not a readable result: {e}: {}",
                            r.entry_id,
                            clip(&r.raw, 300)
                        ),
                        needles(&r.intent_id),
                    );
                    continue;
                }
                if !has_fill {
                    continue;
                }
                fills.checked += 1;
                let price = decimal_of(&value["entry_price"]).unwrap_or_default();
                let qty = decimal_of(&value["executed_qty"]).unwrap_or_default();
                let notional = decimal_of(&value["position_size_usd"]).unwrap_or_default();
                if price <= Decimal::ZERO || qty <= Decimal::ZERO {
                    fills.violate(
                        format!(
                            "result for {} says {} with entry_price {price} and executed_qty {qty}",
                            r.intent_id, r.status
                        ),
                        needles(&r.intent_id),
                    );
                } else if notional != price * qty {
                    fills.violate(
                        format!("result for {}: position_size_usd {notional} is not entry_price x executed_qty ({})", r.intent_id, price * qty),
                        needles(&r.intent_id),
                    );
                }
            }
        }
        Err(e) => fills
            .unchecked
            .push(format!("the bus could not be read ({e})")),
    }
    let (Some(ids), Some(by_cid)) = (ids, by_cid) else {
        let why = unreadable(bus.err(), orders.err());
        agree.unchecked.push(why.clone());
        fees.unchecked.push(why);
        return (agree, fees, fills);
    };
    let trades = inputs.exchange.trades.as_ref();
    if let Err(e) = trades {
        fees.unchecked
            .push(format!("the exchange's trades could not be read ({e})"));
    }
    let mut unknown_fees = 0usize;
    let mut commission: BTreeMap<i64, Decimal> = BTreeMap::new();
    if let Ok(trades) = trades {
        for t in trades {
            *commission.entry(t.order_id).or_default() += t.commission;
        }
    }
    for id in ids.answered.keys().chain(ids.closes.keys()) {
        let Some(rs) = results.get(id.as_str()) else {
            continue;
        };
        let Some(c) = cid(id) else { continue };
        let list: Vec<&Order> = by_cid.get(c.as_str()).cloned().unwrap_or_default();
        let late = results
            .get(format!("late-{id}").as_str())
            .and_then(|l| l.first())
            .and_then(|l| l.parsed.as_ref().ok())
            .map_or(Decimal::ZERO, |l| l.executed_qty());
        for r in rs {
            let Ok(parsed) = &r.parsed else { continue };
            agree.checked += 1;
            let status = r.status.as_str();
            let qty = parsed.executed_qty();
            let order = match parsed.order_id() {
                Some(oid) => list.iter().find(|o| o.order_id == oid).copied(),
                None => list.first().copied(),
            };
            let mut problems: Vec<String> = Vec::new();
            match order {
                None => {
                    if let Some(oid) = parsed.order_id() {
                        problems.push(format!(
                            "names orderId {oid}, which the exchange does not have under {c}"
                        ));
                    } else if status == "filled" || status == "partially_filled" {
                        problems.push(format!("says {status}, but the exchange has no order {c}"));
                    }
                }
                Some(o) => {
                    let total = o.executed_qty;
                    if is_open(o) {
                        problems.push(format!(
                            "its order is still open on the exchange at the end ({})",
                            describe(o)
                        ));
                    }
                    match status {
                        "filled" => {
                            if o.status != OrderStatus::Filled {
                                problems.push(format!(
                                    "says filled; the exchange says {}",
                                    describe(o)
                                ));
                            }
                            if qty != total {
                                problems.push(format!(
                                    "executed_qty {} but the exchange filled {}",
                                    qty.normalize(),
                                    total.normalize()
                                ));
                            }
                            if parsed.entry_price() != o.avg_price {
                                problems.push(format!(
                                    "entry_price {} but the exchange's avgPrice is {}",
                                    parsed.entry_price().normalize(),
                                    o.avg_price.normalize()
                                ));
                            }
                        }
                        "partially_filled" | "timeout" | "canceled" | "expired" | "failed"
                        | "rejected" => {
                            if qty + late != total {
                                problems.push(format!(
                                    "says {status} with executed_qty {}{}; the exchange filled {} ({})",
                                    qty.normalize(),
                                    if late.is_zero() {
                                        String::new()
                                    } else {
                                        format!(" (+{} in late-{id})", late.normalize())
                                    },
                                    total.normalize(),
                                    describe(o)
                                ));
                            }
                            if status == "partially_filled"
                                && late.is_zero()
                                && parsed.entry_price() != o.avg_price
                            {
                                problems.push(format!(
                                    "entry_price {} but the exchange's avgPrice is {}",
                                    parsed.entry_price().normalize(),
                                    o.avg_price.normalize()
                                ));
                            }
                            if status == "expired" && parsed.order_id().is_none() {
                                problems.push(format!(
                                    "says expired with nothing sent, but the exchange has {}",
                                    describe(o)
                                ));
                            }
                        }
                        _ => {}
                    }
                    if status == "filled" || status == "partially_filled" {
                        fees.checked += 1;
                        if trades.is_ok() {
                            let paid = commission.get(&o.order_id).copied().unwrap_or_default();
                            match parsed.commission() {
                                // Unknown, and saying so (null) is the truth; counted, not a
                                // violation.
                                None => unknown_fees += 1,
                                Some(said) if late.is_zero() && paid != said => fees.violate(
                                    format!(
                                        "result for {id} says commission {} {}; the exchange's trades of orderId {} charged {}",
                                        said.normalize(),
                                        parsed.commission_asset(),
                                        o.order_id,
                                        paid.normalize()
                                    ),
                                    needles(id),
                                ),
                                Some(_) => {}
                            }
                        }
                    }
                }
            }
            if !problems.is_empty() {
                agree.violate(
                    format!("result for {id} ({status}): {}", problems.join("; ")),
                    needles(id),
                );
            }
        }
    }
    if unknown_fees > 0 {
        fees.notes.push(format!(
            "{unknown_fees} result(s) said their fees were unknown (commission null): their trades could not be read"
        ));
    }
    (agree, fees, fills)
}

fn positions(inputs: &Inputs) -> Invariant {
    let mut inv = Invariant::new(
        "positions-closed-after-stops",
        "every position open when the final sweep crossed its stop is flat at the end, and no other is open",
    );
    let end = match &inputs.exchange.positions {
        Ok(p) => p,
        Err(e) => {
            inv.unchecked
                .push(format!("positions could not be read ({e})"));
            return inv;
        }
    };
    if !inputs.sweep.ran {
        inv.unchecked
            .push("no final sweep ran (the run ended before it)".into());
    }
    let names: Vec<(String, Decimal)> = end
        .iter()
        .map(|p| (truth::position_name(p), p.position_amt))
        .collect();
    let open: BTreeMap<&str, Decimal> = names.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    for (symbol, amt) in &inputs.sweep.open_at_first {
        inv.checked += 1;
        if let Some(left) = open.get(symbol.as_str()) {
            inv.violate(
                format!(
                    "{symbol}: position {} when the final sweep crossed every stop, still {} at the end",
                    amt.normalize(),
                    left.normalize()
                ),
                vec![symbol.clone()],
            );
        }
    }
    for (symbol, left) in &open {
        if inputs.sweep.open_at_first.contains_key(*symbol) {
            continue;
        }
        inv.checked += 1;
        inv.violate(
            format!(
                "{symbol}: position {} open at the end that was not open when the final sweep began{}",
                left.normalize(),
                if inputs.sweep.open_later.contains_key(*symbol) {
                    " (it was open at a later round, whose sweep crossed its stop too)"
                } else {
                    ""
                }
            ),
            vec![symbol.to_string()],
        );
    }
    inv
}

fn leftovers(inputs: &Inputs) -> Invariant {
    let mut inv = Invariant::new(
        "no-order-left-open",
        "no protective (algo) order and no other order left open once the book is flat",
    );
    match &inputs.exchange.open_algos {
        Ok(algos) => {
            inv.checked += inputs.plan.markets.len();
            for a in algos {
                inv.violate(
                    format!(
                        "algo order {} ({}) of {} left open: {} trigger {}",
                        a.client_algo_id,
                        a.algo_id,
                        a.symbol,
                        a.order_type.as_str(),
                        a.trigger_price
                            .map_or("-".into(), |p| p.normalize().to_string())
                    ),
                    vec![a.client_algo_id.clone(), a.symbol.clone()],
                );
            }
        }
        Err(e) => inv
            .unchecked
            .push(format!("open algo orders could not be read ({e})")),
    }
    match &inputs.exchange.open_orders {
        Ok(open) => {
            for o in open {
                inv.violate(
                    format!(
                        "order {} of {} left open: {}",
                        o.client_order_id,
                        o.symbol,
                        describe(o)
                    ),
                    vec![o.client_order_id.clone()],
                );
            }
        }
        Err(e) => inv
            .unchecked
            .push(format!("open orders could not be read ({e})")),
    }
    inv
}

fn exits(
    ids: &Option<Ids>,
    by_cid: &Option<BTreeMap<&str, Vec<&Order>>>,
    bus_err: Option<&String>,
    orders_err: Option<&String>,
) -> Invariant {
    let mut inv = Invariant::new(
        "exits-once-reduce-only",
        "every close order is reduce-only, and no close attempt of a lot fills after an attempt that filled all it asked for",
    );
    let (Some(ids), Some(by_cid)) = (ids, by_cid) else {
        inv.unchecked.push(unreadable(bus_err, orders_err));
        return inv;
    };
    // close-<lot>-<attempt>: attempts by lot.
    let mut lots: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
    for id in ids.closes.keys() {
        let Some((lot, attempt)) = id.rsplit_once('-') else {
            continue;
        };
        let Ok(attempt) = attempt.parse::<u32>() else {
            continue;
        };
        lots.entry(lot.to_string())
            .or_default()
            .push((attempt, id.clone()));
    }
    for (lot, mut attempts) in lots {
        attempts.sort();
        inv.checked += 1;
        let mut full: Option<(String, i64)> = None;
        for (_, id) in attempts {
            let Some(c) = cid(&id) else { continue };
            for o in by_cid.get(c.as_str()).cloned().unwrap_or_default() {
                // On a hedge account a close is a SELL on LONG or a BUY on SHORT: Binance takes
                // no reduceOnly there, and such an order can only reduce its side.
                let hedge_close = matches!(
                    (&o.position_side, o.side),
                    (binance::PositionSide::Long, binance::Side::Sell)
                        | (binance::PositionSide::Short, binance::Side::Buy)
                );
                if !o.reduce_only && !o.close_position && !hedge_close {
                    inv.violate(
                        format!("close {id} was placed without reduceOnly: {}", describe(o)),
                        needles(&id),
                    );
                }
                if let Some((first, oid)) = &full {
                    if o.executed_qty > Decimal::ZERO {
                        inv.violate(
                            format!(
                                "{lot}: close {id} filled {} after close {first} (orderId {oid}) had already filled in full: the exit was executed twice",
                                o.executed_qty.normalize()
                            ),
                            needles(&id),
                        );
                    }
                } else if o.status == OrderStatus::Filled
                    && ids.closes.get(&id).is_none_or(|intent| {
                        intent.quantity.is_none_or(|asked| o.executed_qty >= asked)
                    })
                {
                    // In full: what the close asked for (the service may size a close down to
                    // the position it knows; then the rest is a legitimate next attempt).
                    full = Some((id.clone(), o.order_id));
                }
            }
        }
    }
    inv.notes.push(
        "exits are followed per lot name; a lot closed as part of another lot's close order is not followed".into(),
    );
    inv
}
