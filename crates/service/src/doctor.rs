//! `quantum doctor`: checks that answer an operator's questions before and while quantum trades,
//! each as one line with a verdict (pass, warn, fail, skip) and what to do about it. The last
//! check asks the incident's own question: of the recent orders, how many filled, and how many
//! are still `NEW`, and for how long.
//!
//! Doctor only reads, with one exception that changes nothing: it obtains and keeps alive the
//! account's listenKey (the one a running service uses, never a new one closed afterwards). It
//! places no order. The verdicts that need judgement (clock skew, the recent orders) are pure
//! functions of what was read and of `now`, so they are tested without an exchange.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use binance::{
    MarketEvent, MarketStream, MarketStreamConfig, OrderStatus, OrderType, RestClient,
    UserStreamConfig,
};
use bus::{keys, Bus};
use model::{ExecutionResult, ResultStatus};

use crate::clock::now_ms;
use crate::config::{Settings, Venue};

/// A check's verdict. `Fail` makes `quantum doctor` exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Pass,
    /// Could not be checked because something it needs failed or is not configured.
    Skip,
    Warn,
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Skip => "skip",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short stable name (`rest`, `clock`, `recent-orders`, ...), for scripts and tests.
    pub name: &'static str,
    pub level: Level,
    /// What was found, with figures.
    pub detail: String,
    /// What to do, when the verdict is not a pass.
    pub hint: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Pass,
            detail: detail.into(),
            hint: None,
        }
    }

    fn with(
        name: &'static str,
        level: Level,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check {
            name,
            level,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// Doctor's knobs.
#[derive(Debug, Clone)]
pub struct Options {
    /// A MARKET order still `NEW` after this long is stuck: on a healthy venue it fills in
    /// milliseconds.
    pub stuck_after: Duration,
    /// How long to wait for a WebSocket to open or deliver its first message.
    pub ws_timeout: Duration,
    /// How many of the latest results (and intents) to look at.
    pub recent: usize,
    /// Only orders younger than this count as recent.
    pub recent_window: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            stuck_after: Duration::from_secs(10),
            ws_timeout: Duration::from_secs(10),
            recent: 50,
            recent_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// The whole report, in the order the checks ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// The worst verdict (a skip counts as a pass: its cause has its own line).
    pub fn worst(&self) -> Level {
        self.checks
            .iter()
            .map(|c| c.level)
            .filter(|l| *l != Level::Skip)
            .max()
            .unwrap_or(Level::Pass)
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The report as the terminal shows it: one line per check, the hint indented below.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "[{:<4}] {:<16} {}\n",
                c.level.as_str(),
                c.name,
                c.detail
            ));
            if let Some(hint) = &c.hint {
                out.push_str(&format!("       {:<16} → {hint}\n", ""));
            }
        }
        let (fails, warns) = self.checks.iter().fold((0, 0), |(f, w), c| match c.level {
            Level::Fail => (f + 1, w),
            Level::Warn => (f, w + 1),
            _ => (f, w),
        });
        out.push_str(&match (fails, warns) {
            (0, 0) => "all checks passed\n".to_string(),
            (0, w) => format!("no failures, {w} warning(s)\n"),
            (f, w) => format!("{f} check(s) FAILED, {w} warning(s)\n"),
        });
        out
    }

    fn push(&mut self, check: Check) {
        self.checks.push(check);
    }
}

/// Runs every check. `rest` is `None` when no keys are set; `bus` is the caller's attempt to
/// connect to Redis (its error, in words, is reported as the `redis` line).
pub async fn run(
    settings: &Settings,
    rest: Option<&RestClient>,
    bus: Result<&Bus, String>,
    options: &Options,
) -> Report {
    let mut report = Report::default();
    report.push(venue_check(settings));
    let account_positions = match rest {
        Some(rest) => exchange_checks(settings, rest, options, &mut report).await,
        None => {
            report.push(Check::with(
                "api-key",
                Level::Fail,
                "BINANCE_API_KEY and BINANCE_SECRET_KEY are not both set",
                "put them in the environment (systemd: EnvironmentFile=/etc/quantum/quantum.env)",
            ));
            None
        }
    };
    let bus = match bus {
        Ok(bus) => match bus.ping().await {
            Ok(()) => Ok(bus),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e),
    };
    let redacted = settings.bus_config().redacted_url();
    let symbols = match &bus {
        Ok(bus) => {
            report.push(redis_check(&redacted, Ok(())));
            bus_checks(settings, bus, options, &mut report).await
        }
        Err(e) => {
            report.push(redis_check(&redacted, Err(e.clone())));
            BTreeSet::new()
        }
    };
    if let (Some(rest), Ok(bus)) = (rest, &bus) {
        report.push(exposure_verdict(crate::exposure::read(rest, bus).await));
    }
    match (rest, account_positions) {
        (Some(rest), Some(positions)) => {
            report.push(leverage_verdict(settings, &positions, &symbols));
            report.push(recent_orders_check(settings, rest, &symbols, options).await)
        }
        _ => {
            for name in ["leverage", "recent-orders"] {
                report.push(Check::with(
                    name,
                    Level::Skip,
                    "not checked",
                    "needs the exchange and valid keys (see above)",
                ));
            }
        }
    }
    report
}

/// Positions quantum does not track, or that have no stop on the exchange: a failure, since
/// nothing watches or limits them.
pub fn exposure_verdict(found: Result<Vec<crate::exposure::Finding>, String>) -> Check {
    match found {
        Ok(found) if found.is_empty() => Check::pass(
            "exposure",
            "every position on the exchange is tracked and has an exchange-side stop",
        ),
        Ok(found) => Check::with(
            "exposure",
            Level::Fail,
            found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            "is `quantum exit-monitor` running against this Redis? It adopts untracked positions and places their stops; or close them: `quantum intent --symbol S --action CLOSE`",
        ),
        Err(e) => Check::with(
            "exposure",
            Level::Warn,
            format!("not checked: {e}"),
            "`quantum positions` lists the exchange's positions against the tracked ones",
        ),
    }
}

/// The operator's trading state: `active` passes; `reducing` and `halted` warn (an operator chose
/// them, so they are not a fault, but nobody should forget them); unreadable warns too.
pub fn trading_state_verdict(
    read: Result<Option<model::TradingControl>, String>,
    kill_switch: bool,
) -> Check {
    let floor = if kill_switch {
        " (risk.kill_switch is on: at most reducing)"
    } else {
        ""
    };
    match read {
        Ok(None) if !kill_switch => Check::pass("trading-state", "active (never set)"),
        Ok(Some(c)) if c.state == model::TradingState::Active && !kill_switch => {
            Check::pass("trading-state", c.to_string())
        }
        Ok(control) => Check::with(
            "trading-state",
            Level::Warn,
            format!(
                "{}{floor}",
                control.map_or_else(|| "active (never set)".to_string(), |c| c.to_string())
            ),
            "new entries are refused while not active: `quantum resume` when it is time to trade again",
        ),
        Err(e) => Check::with(
            "trading-state",
            Level::Warn,
            format!("cannot read the trading state: {e}"),
            "`quantum trading-state` shows it; `quantum halt` / `quantum resume` rewrite it",
        ),
    }
}

fn venue_check(settings: &Settings) -> Check {
    let ex = &settings.exchange;
    let detail = format!(
        "{:?}: REST {}, WebSocket {}",
        ex.venue, ex.rest_url, ex.ws_url
    );
    match ex.venue {
        Venue::Mainnet => Check::with(
            "venue",
            Level::Warn,
            detail,
            "mainnet trades real money: keep risk.max_notional_usd and a default stop-loss set",
        ),
        _ => Check::pass("venue", detail),
    }
}

/// REST, clock, WebSocket, key, listenKey and position mode. Returns the account's per-symbol
/// rows when signed calls work (the leverage and recent-orders checks need them).
async fn exchange_checks(
    settings: &Settings,
    rest: &RestClient,
    options: &Options,
    report: &mut Report,
) -> Option<Vec<binance::AccountPosition>> {
    let started = Instant::now();
    if let Err(e) = rest.ping().await {
        report.push(Check::with(
            "rest",
            Level::Fail,
            format!(
                "GET /fapi/v1/ping to {} failed: {e}",
                settings.exchange.rest_url
            ),
            "check --rest-url / exchange.rest_url, DNS and outbound HTTPS from this host",
        ));
        for name in [
            "clock",
            "websocket",
            "api-key",
            "listen-key",
            "position-mode",
        ] {
            report.push(Check::with(
                name,
                Level::Skip,
                "not checked",
                "the REST API is unreachable",
            ));
        }
        return None;
    }
    report.push(Check::pass(
        "rest",
        format!(
            "GET /fapi/v1/ping answered in {} ms",
            started.elapsed().as_millis()
        ),
    ));

    // The offset `sync_time` measures (server − the round trip's midpoint) is the skew, and the
    // signed calls below then use it, as the services do.
    let sent = Instant::now();
    match rest.sync_time().await {
        Ok(offset) => report.push(clock_verdict(
            offset,
            sent.elapsed().as_millis() as i64,
            settings.exchange.recv_window,
        )),
        Err(e) => report.push(Check::with(
            "clock",
            Level::Fail,
            format!("GET /fapi/v1/time failed: {e}"),
            "signed requests need the server time",
        )),
    }

    report.push(websocket_check(settings, options).await);

    let account = match rest.account().await {
        Ok(account) => account,
        Err(e) => {
            let hint = if matches!(e, binance::Error::Auth { .. }) {
                "the key is unknown, lacks futures permission, or is IP-restricted to another address; \
                 testnet and mainnet keys are different"
            } else {
                "GET /fapi/v2/account failed for another reason; try again, then check the venue's status"
            };
            report.push(Check::with(
                "api-key",
                Level::Fail,
                format!("GET /fapi/v2/account: {e}"),
                hint,
            ));
            for name in ["listen-key", "position-mode"] {
                report.push(Check::with(
                    name,
                    Level::Skip,
                    "not checked",
                    "the API key does not work",
                ));
            }
            return None;
        }
    };
    report.push(match account.can_trade {
        Some(false) => Check::with(
            "api-key",
            Level::Fail,
            "the key is valid but canTrade=false",
            "enable futures trading for this key (API management), or use another key",
        ),
        Some(true) => Check::pass(
            "api-key",
            format!(
                "valid, canTrade=true; wallet {} USDT, available {}",
                account.total_wallet_balance.normalize(),
                account.available_balance.normalize()
            ),
        ),
        None => Check::with(
            "api-key",
            Level::Warn,
            "valid, but the account reply has no canTrade",
            "trading permission could not be confirmed; place a small testnet order with `quantum intent`",
        ),
    });

    report.push(
        match binance::user_stream::probe(
            rest,
            &UserStreamConfig {
                connect_timeout: options.ws_timeout,
                ..UserStreamConfig::default()
            },
        )
        .await
        {
            Ok(took) => Check::pass(
                "listen-key",
                format!(
                    "listenKey obtained, kept alive and its stream opened in {} ms",
                    took.as_millis()
                ),
            ),
            Err(e) => Check::with(
                "listen-key",
                Level::Fail,
                e,
                "without the user stream fills are confirmed by REST polls only (slower); check --ws-url",
            ),
        },
    );

    report.push(match rest.position_mode().await {
        Ok(mode) if mode.dual_side_position => Check::pass(
            "position-mode",
            "hedge mode (dualSidePosition=true): BUY opens LONG, SELL opens SHORT, a CLOSE names position_side",
        ),
        Ok(_) => Check::pass("position-mode", "one-way mode (dualSidePosition=false)"),
        Err(e) => Check::with(
            "position-mode",
            Level::Fail,
            format!("GET /fapi/v1/positionSide/dual: {e}"),
            "the position mode could not be read",
        ),
    });

    Some(account.positions)
}

/// Skew = server − local (the midpoint of the round trip). quantum signs with the measured
/// offset, so a skew is survivable; but a clock that jumps between measurements gets orders
/// refused with -1021, and log times stop matching the exchange's.
pub fn clock_verdict(skew_ms: i64, round_trip_ms: i64, recv_window: Duration) -> Check {
    let detail = format!("server − local = {skew_ms:+} ms (round trip {round_trip_ms} ms)");
    let window = i64::try_from(recv_window.as_millis()).unwrap_or(i64::MAX);
    if skew_ms.abs() <= 1000 {
        Check::pass("clock", detail)
    } else if skew_ms.abs() < window {
        Check::with(
            "clock",
            Level::Warn,
            detail,
            "quantum corrects for it, but sync the clock (chrony / systemd-timesyncd)",
        )
    } else {
        Check::with(
            "clock",
            Level::Fail,
            format!("{detail}, beyond recvWindow {window} ms"),
            "sync the clock now (chrony / systemd-timesyncd): a step in the clock gets orders refused with -1021",
        )
    }
}

async fn websocket_check(settings: &Settings, options: &Options) -> Check {
    let symbol = settings
        .risk
        .allowed_symbols
        .as_ref()
        .and_then(|s| s.iter().next().map(|s| s.as_str().to_string()))
        .unwrap_or_else(|| "BTCUSDT".to_string());
    let url = match url::Url::parse(&settings.exchange.ws_url) {
        Ok(url) => url,
        Err(e) => {
            return Check::with(
                "websocket",
                Level::Fail,
                format!("bad ws_url: {e}"),
                "fix --ws-url",
            )
        }
    };
    let started = Instant::now();
    let (stream, mut events) = MarketStream::spawn(
        url,
        [binance::mark_price_stream(&symbol)],
        MarketStreamConfig {
            connect_timeout: options.ws_timeout,
            ..MarketStreamConfig::default()
        },
    );
    let waited = tokio::time::timeout(options.ws_timeout, async {
        let mut last_error = None;
        while let Some(event) = events.recv().await {
            match event {
                MarketEvent::MarkPrice(update) => return Ok(update.mark_price),
                MarketEvent::Disconnected { reason, .. } => last_error = Some(reason),
                _ => {}
            }
        }
        Err(last_error.unwrap_or_else(|| "the stream ended".into()))
    })
    .await;
    stream.shutdown().await;
    match waited {
        Ok(Ok(price)) => Check::pass(
            "websocket",
            format!(
                "{symbol}@markPrice@1s delivered {} after {} ms",
                price.normalize(),
                started.elapsed().as_millis()
            ),
        ),
        Ok(Err(reason)) => Check::with(
            "websocket",
            Level::Fail,
            format!("market stream on {}: {reason}", settings.exchange.ws_url),
            "check --ws-url / exchange.ws_url and outbound WSS from this host",
        ),
        Err(_) => Check::with(
            "websocket",
            Level::Fail,
            format!(
                "no mark price for {symbol} within {} s on {}",
                options.ws_timeout.as_secs_f32(),
                settings.exchange.ws_url
            ),
            "without mark prices the exit monitor falls back to REST polling; check --ws-url",
        ),
    }
}

/// The exchange's leverage setting of each symbol in use (allowed, held, or named by recent
/// intents and results) against `risk.max_leverage`. quantum sets the intent's leverage before
/// each order, so a higher setting is a warning: it applies to anything opened outside quantum.
pub fn leverage_verdict(
    settings: &Settings,
    positions: &[binance::AccountPosition],
    in_use: &BTreeSet<String>,
) -> Check {
    let max = settings.risk.max_leverage;
    let watched = |p: &&binance::AccountPosition| {
        !p.position_amt.is_zero()
            || in_use.contains(&p.symbol)
            || settings
                .risk
                .allowed_symbols
                .as_ref()
                .is_some_and(|allowed| allowed.iter().any(|s| s.as_str() == p.symbol))
    };
    let above: Vec<String> = positions
        .iter()
        .filter(watched)
        .filter(|p| p.leverage > max)
        .map(|p| format!("{} {}x", p.symbol, p.leverage))
        .collect();
    let seen = positions.iter().filter(watched).count();
    if above.is_empty() {
        Check::pass(
            "leverage",
            format!("{seen} symbol(s) checked, none above risk.max_leverage {max}x"),
        )
    } else {
        Check::with(
            "leverage",
            Level::Warn,
            format!("above risk.max_leverage {max}x: {}", above.join(", ")),
            "quantum sets each intent's leverage before its order; lower these for positions opened by hand",
        )
    }
}

/// The line for Redis itself.
fn redis_check(url: &str, connected: Result<(), String>) -> Check {
    match connected {
        Ok(()) => Check::pass("redis", format!("{url} answers PING")),
        Err(e) => Check::with(
            "redis",
            Level::Fail,
            format!("{url}: {e}"),
            "start redis-server (systemctl status redis-server) or fix --redis-url",
        ),
    }
}

/// Streams, groups, pending entries and lag, the age of the last result, and the recent results.
/// Returns the symbols the recent intents and results name, for the order check.
async fn bus_checks(
    settings: &Settings,
    bus: &Bus,
    options: &Options,
    report: &mut Report,
) -> BTreeSet<String> {
    for (stream, group, service) in [
        (
            keys::TRADE_INTENT,
            settings.execution.consumer_group.as_str(),
            "quantum execution",
        ),
        (
            keys::TRADE_EXECUTION_RESULT,
            settings.exit.consumer_group.as_str(),
            "quantum exit-monitor",
        ),
    ] {
        report.push(group_check(bus, stream, group, service).await);
    }
    report.push(trading_state_verdict(
        crate::control::read(bus).await.map_err(|e| e.to_string()),
        settings.risk.kill_switch,
    ));
    report.push(match crate::monitor_state::load_alarms(bus).await {
        Ok(saved) => alarms_verdict(saved.as_ref(), now_ms()),
        Err(e) => Check::with(
            "exit-alarms",
            Level::Warn,
            format!("cannot read the exit monitor's alarms: {e}"),
            "check Redis",
        ),
    });
    let mut symbols = BTreeSet::new();
    let results = match bus
        .latest(keys::TRADE_EXECUTION_RESULT, options.recent)
        .await
    {
        Ok(entries) => entries,
        Err(e) => {
            report.push(Check::with(
                "results",
                Level::Fail,
                format!("cannot read results: {e}"),
                "check Redis",
            ));
            return symbols;
        }
    };
    let now = now_ms();
    let mut parsed = Vec::new();
    let mut invalid = 0usize;
    for entry in &results {
        match entry.payload.as_deref().map(ExecutionResult::from_json) {
            Ok(Ok(r)) => parsed.push(r),
            _ => invalid += 1,
        }
    }
    symbols.extend(
        parsed
            .iter()
            .filter_map(|r| r.symbol())
            .map(|s| s.to_string()),
    );
    if let Ok(intents) = bus.latest(keys::TRADE_INTENT, options.recent).await {
        for entry in intents {
            // Only valid intents: a dead-lettered one may name a symbol that does not exist.
            if let Some(intent) = entry
                .payload
                .ok()
                .and_then(|p| model::TradeIntent::from_json(&p).ok())
            {
                symbols.insert(intent.symbol.as_str().to_string());
            }
        }
    }
    report.push(results_verdict(&parsed, invalid, now));
    match bus.len(keys::DEAD_LETTER).await {
        Ok(0) => report.push(Check::pass("dead-letters", "none")),
        Ok(n) => report.push(Check::with(
            "dead-letters",
            Level::Warn,
            format!("{n} entries on {}", keys::DEAD_LETTER),
            "each is a refused intent or result; read them with redis-cli XREVRANGE quantum:stream:dead-letter + - COUNT 10",
        )),
        Err(e) => report.push(Check::with("dead-letters", Level::Warn, format!("cannot read: {e}"), "check Redis")),
    }
    symbols
}

async fn group_check(bus: &Bus, stream: &str, group: &str, service: &str) -> Check {
    let name = if stream == keys::TRADE_INTENT {
        "intent-stream"
    } else {
        "result-stream"
    };
    let groups = match bus.group_info(stream).await {
        Ok(groups) => groups,
        Err(e) => return Check::with(name, Level::Fail, format!("{stream}: {e}"), "check Redis"),
    };
    let Some(info) = groups.iter().find(|g| g.name == group) else {
        return Check::with(
            name,
            Level::Warn,
            format!("{stream} has no consumer group {group}"),
            format!("`{service}` creates it when it starts; is it running against this Redis?"),
        );
    };
    let consumers: Vec<String> = info
        .consumers
        .iter()
        .map(|c| {
            format!(
                "{} (pending {}, idle {:.0}s)",
                c.name,
                c.pending,
                c.idle.as_secs_f64()
            )
        })
        .collect();
    let detail = format!(
        "{stream} group {group}: pending {}, lag {}, consumers {}",
        info.pending,
        info.lag.map_or("unknown".to_string(), |l| l.to_string()),
        if consumers.is_empty() {
            "none".to_string()
        } else {
            consumers.join(", ")
        }
    );
    if info.lag.unwrap_or(0) > 0 {
        return Check::with(
            name,
            Level::Warn,
            detail,
            format!("entries are waiting to be read: is `{service}` running?"),
        );
    }
    if info.pending > 0
        && info
            .consumers
            .iter()
            .all(|c| c.idle > Duration::from_secs(60))
    {
        return Check::with(
            name,
            Level::Warn,
            detail,
            format!("pending entries with every consumer idle over a minute: `{service}` may have died mid-work; a restart resumes them"),
        );
    }
    Check::pass(name, detail)
}

/// The latest results: their age, and how many did not fill. A result the exit monitor would
/// refuse (the incident's `filled` with a zero price) is a failure.
/// The exit monitor's alarms: none raised passes; any raised fails (a position may be without
/// protection); a record older than a minute means the monitor is not running.
pub fn alarms_verdict(saved: Option<&crate::monitor_state::SavedAlarms>, now: i64) -> Check {
    let Some(saved) = saved else {
        return Check::with(
            "exit-alarms",
            Level::Warn,
            "the exit monitor has not written its alarms (never started against this Redis, or not for a day)",
            "start `quantum exit-monitor` (or `quantum run`)",
        );
    };
    let age = (now - saved.at).max(0) / 1000;
    if age > 60 {
        return Check::with(
            "exit-alarms",
            Level::Fail,
            format!("the exit monitor last wrote its alarms {age} s ago: it is not running, and nothing but the exchange-side orders protects the positions"),
            "start `quantum exit-monitor`; `systemctl status quantum-exit-monitor`",
        );
    }
    if saved.alarms.is_empty() {
        return Check::pass("exit-alarms", "none raised");
    }
    let list: Vec<String> = saved
        .alarms
        .iter()
        .map(|a| {
            let symbol = if a.symbol.is_empty() {
                "account"
            } else {
                &a.symbol
            };
            format!("{} {symbol}: {}", a.kind, a.message)
        })
        .collect();
    Check::with(
        "exit-alarms",
        Level::Fail,
        format!("{} raised: {}", saved.alarms.len(), list.join(" | ")),
        "each says what is wrong and what the monitor does about it; see README, \"The promise, and how it is kept\"",
    )
}

pub fn results_verdict(results: &[ExecutionResult], invalid: usize, now: i64) -> Check {
    if invalid > 0 {
        return Check::with(
            "results",
            Level::Fail,
            format!("{invalid} of the latest results are not valid results (e.g. a fill without a price)"),
            "something other than quantum publishes on the result stream, or an old version does; find it before trading",
        );
    }
    let Some(last) = results.first() else {
        return Check::pass("results", "no results yet");
    };
    let age = (now - last.published_at()).max(0) as f64 / 1000.0;
    let filled = results.iter().filter(|r| r.status().has_fill()).count();
    let timeouts = results
        .iter()
        .filter(|r| r.status() == ResultStatus::Timeout)
        .count();
    let detail = format!(
        "last result {} {} {age:.0}s ago; of the latest {}: {filled} with a fill, {timeouts} timed out with nothing filled",
        last.intent_id_str(),
        last.status().as_str(),
        results.len()
    );
    if timeouts > 0 {
        Check::with(
            "results",
            Level::Warn,
            detail,
            "orders that time out unfilled mean the venue is not filling MARKET orders (see recent-orders)",
        )
    } else {
        Check::pass("results", detail)
    }
}

/// An order as the recent-orders verdict sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    pub symbol: String,
    pub client_order_id: String,
    pub is_market: bool,
    pub status: OrderStatus,
    /// Whether anything filled.
    pub filled_any: bool,
    /// When it was placed (ms).
    pub time: i64,
}

async fn recent_orders_check(
    settings: &Settings,
    rest: &RestClient,
    bus_symbols: &BTreeSet<String>,
    options: &Options,
) -> Check {
    let mut symbols = bus_symbols.clone();
    if let Some(allowed) = &settings.risk.allowed_symbols {
        symbols.extend(allowed.iter().map(|s| s.as_str().to_string()));
    }
    let mut orders = Vec::new();
    let mut errors = Vec::new();
    // Open orders of every symbol: a stuck NEW order shows here even on a symbol nothing names.
    match rest.open_orders(None).await {
        Ok(open) => orders.extend(open),
        Err(e) => errors.push(format!("openOrders: {e}")),
    }
    for symbol in &symbols {
        match rest.all_orders(symbol, Some(50)).await {
            Ok(list) => orders.extend(list),
            Err(e) => errors.push(format!("allOrders {symbol}: {e}")),
        }
    }
    let mut seen = BTreeSet::new();
    let summaries: Vec<OrderSummary> = orders
        .into_iter()
        .filter(|o| seen.insert((o.symbol.clone(), o.order_id)))
        .map(|o| OrderSummary {
            is_market: o.orig_type.unwrap_or(o.order_type) == OrderType::Market,
            status: o.status,
            filled_any: !o.executed_qty.is_zero(),
            time: o.time.unwrap_or(o.update_time),
            symbol: o.symbol,
            client_order_id: o.client_order_id,
        })
        .collect();
    let mut check = orders_verdict(&summaries, rest.server_now_ms(), options);
    if !errors.is_empty() {
        check
            .detail
            .push_str(&format!(" (not read: {})", errors.join("; ")));
        if check.level == Level::Pass {
            check.level = Level::Warn;
            check.hint = Some("some order lists could not be read".into());
        }
    }
    check
}

/// The incident's question. Fails when a MARKET order has been `NEW` longer than
/// `stuck_after` (a healthy venue fills it in milliseconds), or when recent MARKET orders ended
/// with nothing filled and none filled; warns when some ended unfilled.
pub fn orders_verdict(orders: &[OrderSummary], now: i64, options: &Options) -> Check {
    let window = i64::try_from(options.recent_window.as_millis()).unwrap_or(i64::MAX);
    let recent: Vec<&OrderSummary> = orders
        .iter()
        .filter(|o| o.is_market && now - o.time <= window)
        .collect();
    if recent.is_empty() {
        return Check::pass(
            "recent-orders",
            format!(
                "no MARKET orders in the last {} h on the symbols in use",
                options.recent_window.as_secs() / 3600
            ),
        );
    }
    let filled = recent
        .iter()
        .filter(|o| o.status == OrderStatus::Filled)
        .count();
    let partial = recent
        .iter()
        .filter(|o| o.filled_any && o.status != OrderStatus::Filled)
        .count();
    let new: Vec<&OrderSummary> = recent
        .iter()
        .copied()
        .filter(|o| o.status == OrderStatus::New)
        .collect();
    let unfilled_ended = recent
        .iter()
        .filter(|o| {
            !o.filled_any
                && matches!(
                    o.status,
                    OrderStatus::Canceled | OrderStatus::Expired | OrderStatus::ExpiredInMatch
                )
        })
        .count();
    let stuck_ms = i64::try_from(options.stuck_after.as_millis()).unwrap_or(i64::MAX);
    let stuck: Vec<&OrderSummary> = new
        .iter()
        .copied()
        .filter(|o| now - o.time > stuck_ms)
        .collect();
    let oldest_new = new.iter().map(|o| now - o.time).max().unwrap_or(0);
    let detail = format!(
        "{} MARKET orders: {filled} FILLED, {partial} partly filled, {} still NEW (oldest {:.1}s), {unfilled_ended} ended with nothing filled",
        recent.len(),
        new.len(),
        oldest_new as f64 / 1000.0
    );
    if !stuck.is_empty() {
        let names: Vec<String> = stuck
            .iter()
            .take(5)
            .map(|o| {
                format!(
                    "{} {} ({:.0}s)",
                    o.symbol,
                    o.client_order_id,
                    (now - o.time) as f64 / 1000.0
                )
            })
            .collect();
        return Check::with(
            "recent-orders",
            Level::Fail,
            format!("{detail}; stuck NEW: {}", names.join(", ")),
            "the venue accepts MARKET orders but does not fill them (the incident's state): do not trade; \
             quantum reports nothing as filled until it is, but check the venue's status",
        );
    }
    if unfilled_ended > 0 && filled == 0 && partial == 0 {
        return Check::with(
            "recent-orders",
            Level::Fail,
            detail,
            "no recent MARKET order filled: the venue is not filling; do not trade until it does",
        );
    }
    if unfilled_ended > 0 || !new.is_empty() {
        return Check::with(
            "recent-orders",
            Level::Warn,
            detail,
            "some MARKET orders did not fill; look at them with `quantum orders --symbol S`",
        );
    }
    Check::pass("recent-orders", detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trading_state_other_than_active_is_a_warning_with_the_way_back() {
        use model::{TradingControl, TradingState};
        let set = |state| Ok(Some(TradingControl::new(state, "ops@vps", "news", 0)));
        assert_eq!(trading_state_verdict(Ok(None), false).level, Level::Pass);
        assert_eq!(
            trading_state_verdict(set(TradingState::Active), false).level,
            Level::Pass
        );
        let reducing = trading_state_verdict(set(TradingState::Reducing), false);
        assert_eq!(reducing.level, Level::Warn);
        assert!(
            reducing.detail.contains("reducing (set by ops@vps: news)"),
            "{}",
            reducing.detail
        );
        assert!(reducing.hint.unwrap().contains("quantum resume"));
        assert_eq!(
            trading_state_verdict(Ok(None), true).level,
            Level::Warn,
            "the kill switch"
        );
        assert_eq!(
            trading_state_verdict(Err("down".into()), false).level,
            Level::Warn
        );
    }

    #[test]
    fn exit_alarms_pass_when_none_fail_when_raised_or_stale_and_warn_when_never_written() {
        use crate::monitor_state::{AlarmRecord, SavedAlarms};
        let now = 1_000_000;
        let none = SavedAlarms {
            at: now - 2_000,
            alarms: vec![],
        };
        assert_eq!(alarms_verdict(Some(&none), now).level, Level::Pass);
        let raised = SavedAlarms {
            at: now - 2_000,
            alarms: vec![AlarmRecord {
                symbol: "ETHUSDT".into(),
                kind: "close_overdue".into(),
                message: "close close-x-1 got no answer".into(),
            }],
        };
        let check = alarms_verdict(Some(&raised), now);
        assert_eq!(check.level, Level::Fail);
        assert!(
            check.detail.contains("close_overdue ETHUSDT"),
            "{}",
            check.detail
        );
        let stale = SavedAlarms {
            at: now - 120_000,
            alarms: vec![],
        };
        assert_eq!(alarms_verdict(Some(&stale), now).level, Level::Fail);
        assert_eq!(alarms_verdict(None, now).level, Level::Warn);
    }

    fn order(status: &str, filled_any: bool, age_ms: i64) -> OrderSummary {
        OrderSummary {
            symbol: "AXSUSDT".into(),
            client_order_id: format!("q-{status}-{age_ms}"),
            is_market: true,
            status: status.parse().unwrap(),
            filled_any,
            time: 1_000_000 - age_ms,
        }
    }

    const NOW: i64 = 1_000_000;

    #[test]
    fn a_market_order_new_beyond_the_threshold_fails_the_incident_check() {
        let options = Options::default();
        let check = orders_verdict(
            &[order("FILLED", true, 60_000), order("NEW", false, 11_000)],
            NOW,
            &options,
        );
        assert_eq!(check.level, Level::Fail, "{check:?}");
        assert!(check.detail.contains("1 still NEW"), "{}", check.detail);
        assert!(
            check.detail.contains("stuck NEW: AXSUSDT q-NEW-11000"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn a_market_order_new_for_a_moment_is_only_a_warning() {
        let check = orders_verdict(&[order("NEW", false, 200)], NOW, &Options::default());
        assert_eq!(check.level, Level::Warn, "{check:?}");
    }

    #[test]
    fn orders_that_all_ended_unfilled_fail_and_a_mix_warns() {
        let options = Options::default();
        let none = orders_verdict(
            &[
                order("CANCELED", false, 5_000),
                order("EXPIRED", false, 9_000),
            ],
            NOW,
            &options,
        );
        assert_eq!(none.level, Level::Fail, "{none:?}");
        let mixed = orders_verdict(
            &[
                order("CANCELED", false, 5_000),
                order("FILLED", true, 9_000),
            ],
            NOW,
            &options,
        );
        assert_eq!(mixed.level, Level::Warn, "{mixed:?}");
    }

    #[test]
    fn filled_orders_pass_and_old_or_limit_orders_do_not_count() {
        let options = Options::default();
        let mut limit = order("NEW", false, 50_000);
        limit.is_market = false;
        let ancient = order("NEW", false, 2 * 24 * 3600 * 1000);
        let check = orders_verdict(
            &[order("FILLED", true, 1_000), limit, ancient],
            NOW,
            &options,
        );
        assert_eq!(check.level, Level::Pass, "{check:?}");
        assert!(
            check.detail.starts_with("1 MARKET orders: 1 FILLED"),
            "{}",
            check.detail
        );
    }

    #[test]
    fn clock_skew_passes_within_a_second_warns_within_recv_window_and_fails_beyond() {
        let window = Duration::from_secs(5);
        assert_eq!(clock_verdict(-400, 3, window).level, Level::Pass);
        assert_eq!(clock_verdict(2_500, 3, window).level, Level::Warn);
        assert_eq!(clock_verdict(-7_000, 3, window).level, Level::Fail);
    }

    #[test]
    fn the_worst_verdict_decides_and_skips_do_not_count() {
        let mut report = Report::default();
        report.push(Check::pass("a", "ok"));
        report.push(Check::with("b", Level::Skip, "not checked", "x"));
        assert_eq!(report.worst(), Level::Pass);
        report.push(Check::with("c", Level::Warn, "meh", "y"));
        assert_eq!(report.worst(), Level::Warn);
        assert!(report.render().contains("no failures, 1 warning(s)"));
    }
}
