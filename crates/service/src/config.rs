//! Configuration: a TOML file (every key documented in `config/quantum.example.toml`), layered
//! under `QUANTUM_*` environment variables and command-line flags, then checked into the typed
//! settings each part needs. Secrets come only from `BINANCE_API_KEY` / `BINANCE_SECRET_KEY` and
//! never reach a log or a `Debug` output.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use engine::RiskLimits;
use model::Symbol;
use rust_decimal::Decimal;
use serde::Deserialize;

/// Why the configuration cannot be used. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The URL schemes the Redis client accepts.
const REDIS_SCHEMES: [&str; 4] = ["redis", "rediss", "unix", "redis+unix"];

/// Checks that `url` parses and starts with one of `schemes`. A URL written without its scheme
/// (`127.0.0.1:8090`, `localhost:6379`) is the usual slip, and the URL parser's own words for it
/// ("relative URL without a base", or `localhost` taken for a scheme) do not say so: the message
/// names the URL that was probably meant.
fn check_scheme(key: &'static str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url);
    if parsed
        .as_ref()
        .is_ok_and(|parsed| schemes.contains(&parsed.scheme()))
    {
        return Ok(());
    }
    let expected = schemes
        .iter()
        .map(|s| format!("{s}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    if !url.contains("://") {
        return Err(invalid(
            key,
            format!(
                "{url:?} has no scheme (it must start with {expected}): did you mean \"{}://{url}\"?",
                schemes[0]
            ),
        ));
    }
    Err(invalid(
        key,
        match parsed {
            Err(e) => format!("{url:?}: {e}"),
            Ok(_) => format!("{url:?} must start with {expected}"),
        },
    ))
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The file, as written; every field optional so that flags and defaults can fill the gaps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub exchange: ExchangeFile,
    #[serde(default)]
    pub redis: RedisFile,
    #[serde(default)]
    pub execution: ExecutionFile,
    #[serde(default)]
    pub risk: RiskFile,
    #[serde(default)]
    pub exit: ExitFile,
    #[serde(default)]
    pub journal: JournalFile,
}

/// `[journal]`: where the trade journal is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalFile {
    /// `sqlite://<path>` (the default, `sqlite://quantum-journal.db`) or `postgres://...`.
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitFile {
    pub consumer_group: Option<String>,
    pub default_stop_loss_pct: Option<Decimal>,
    pub default_take_profit_pct: Option<Decimal>,
    pub default_trailing_pct: Option<Decimal>,
    pub allow_unprotected: Option<bool>,
    pub price_stale_after: Option<String>,
    pub exchange_protection: Option<bool>,
    pub all_market_stream_above: Option<usize>,
    pub close_deadline: Option<String>,
    pub conditional_budget: Option<usize>,
    pub reconcile_every: Option<String>,
    pub adopt_after: Option<String>,
    pub tripwire_daily_loss: Option<Decimal>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeFile {
    pub venue: Option<String>,
    pub rest_url: Option<String>,
    pub ws_url: Option<String>,
    pub ws_api_url: Option<String>,
    pub ed25519_private_key_file: Option<String>,
    pub rsa_private_key_file: Option<String>,
    pub allow_mainnet: Option<bool>,
    pub recv_window: Option<String>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    pub url: Option<String>,
    pub max_len: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionFile {
    pub consumer_group: Option<String>,
    pub consumer_name: Option<String>,
    pub fill_timeout: Option<String>,
    pub poll_interval: Option<String>,
    pub claim_idle: Option<String>,
    pub max_age: Option<String>,
    pub cancel_window: Option<String>,
    pub dead_man_countdown: Option<String>,
    pub tripwire_failures: Option<usize>,
    pub tripwire_window: Option<String>,
    pub tripwire_stream_outage: Option<String>,
    pub order_transport: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskFile {
    pub allowed_symbols: Option<Vec<String>>,
    pub max_notional_usd: Option<Decimal>,
    pub max_leverage: Option<u32>,
    pub kill_switch: Option<bool>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        FileConfig::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Values from flags or `QUANTUM_*` variables (clap reads both); they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub redis_url: Option<String>,
    pub venue: Option<String>,
    pub rest_url: Option<String>,
    pub ws_url: Option<String>,
    pub allow_mainnet: bool,
    pub fill_timeout: Option<String>,
    pub consumer_name: Option<String>,
}

/// Where the exchange is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Venue {
    Testnet,
    Mainnet,
    /// Explicit URLs, e.g. the simulator: `http://127.0.0.1:8090` and `ws://127.0.0.1:8090`.
    Custom,
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

/// Exchange connection settings.
#[derive(Debug, Clone)]
pub struct ExchangeSettings {
    pub venue: Venue,
    /// REST base, e.g. `https://demo-fapi.binance.com` (paths `/fapi/...` are added).
    pub rest_url: String,
    /// Stream base, e.g. `wss://fstream.binance.com` (paths `/private/ws`, `/market/stream` added).
    pub ws_url: String,
    /// WebSocket API (order entry), e.g. `wss://ws-fapi.binance.com/ws-fapi/v1`.
    pub ws_api_url: String,
    /// An Ed25519 private key (PKCS#8 PEM file): requests are signed with it instead of the
    /// HMAC secret (`BINANCE_API_KEY` is then the Ed25519 key's API key).
    pub ed25519_private_key_file: Option<std::path::PathBuf>,
    /// An RSA private key (PKCS#8 PEM file): REST requests and each WebSocket API request are
    /// signed with it (RSASSA-PKCS1-v1_5 / SHA-256) instead of the HMAC secret. Never together
    /// with `ed25519_private_key_file`: an API key has one type.
    pub rsa_private_key_file: Option<std::path::PathBuf>,
    pub api_key: Secret,
    pub api_secret: Secret,
    pub recv_window: Duration,
    pub request_timeout: Duration,
}

/// Execution service settings.
#[derive(Debug, Clone)]
pub struct ExecutionSettings {
    pub consumer_group: String,
    pub consumer_name: String,
    /// How long an order may take to fill before quantum cancels what is left.
    pub fill_timeout: Duration,
    /// REST poll interval while waiting for a fill (the fallback to the user stream).
    pub poll_interval: Duration,
    /// Pending intents idle this long (another consumer died on them) are claimed on start.
    pub claim_idle: Duration,
    /// An intent older than this when it is first read (by its `created_at`, else when it was
    /// published) is not executed: its result is `expired`. Zero: no limit.
    pub max_age: Duration,
    /// After the fill deadline, the cancel of what is left is tried again for this long (a
    /// cancel refused by a rate limit is not an answer); an order still open then is reported
    /// with what is confirmed filled and watched until it is final.
    pub cancel_window: Duration,
    /// The dead-man switch: while this service has an order working on a symbol, it keeps
    /// Binance's `countdownCancelAll` armed with this countdown (renewed every quarter of it), so
    /// a host that dies leaves no resting order behind. Zero: off.
    pub dead_man_countdown: Duration,
    /// Tripwire: this many `failed` or `timeout` results within `tripwire_window` set trading to
    /// `reducing` (see `tripwire`). 0: off.
    pub tripwire_failures: usize,
    pub tripwire_window: Duration,
    /// Tripwire: the user data stream down this long sets trading to `reducing`. 0: off.
    pub tripwire_stream_outage: Duration,
    /// How orders are sent: REST, or the WebSocket API with REST as the fallback.
    pub order_transport: OrderTransport,
}

/// How the execution service sends orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderTransport {
    Rest,
    /// One logged-on WebSocket API connection; REST when it is down (nothing was sent then).
    WebSocket,
}

/// Exit monitor settings.
#[derive(Debug, Clone)]
pub struct ExitSettings {
    pub consumer_group: String,
    /// Applied to a filled entry whose intent gave no exit plan.
    pub default_plan: model::ExitPlan,
    /// A symbol with no mark price for this long is polled over REST instead.
    pub price_stale_after: Duration,
    /// Keep STOP_MARKET / TAKE_PROFIT_MARKET close-position orders on the exchange.
    pub exchange_protection: bool,
    /// Above this many held symbols, one `!markPrice@arr@1s` stream replaces the per-symbol ones.
    pub all_market_stream_above: usize,
    /// A close not confirmed within this raises an alarm, re-asserts protection and is retried
    /// under a new id (each further attempt of a lot waits twice as long, up to 2 minutes).
    pub close_deadline: Duration,
    /// Conditional orders quantum may keep on the account (Binance allows 200 in all).
    pub conditional_budget: usize,
    /// Positions are read at least this often (and soon after the user stream reports a change).
    pub reconcile_every: Duration,
    /// A position the book does not explain is adopted once it has been seen this long.
    pub adopt_after: Duration,
    /// Tripwire: a realized loss (net of fees) beyond this many USDT within one UTC day sets
    /// trading to `reducing` (see `tripwire`). `None`: off.
    pub tripwire_daily_loss: Option<Decimal>,
}

/// Everything the services need.
#[derive(Debug, Clone)]
pub struct Settings {
    pub exchange: ExchangeSettings,
    pub redis_url: String,
    pub redis_max_len: usize,
    pub execution: ExecutionSettings,
    pub risk: RiskLimits,
    pub exit: ExitSettings,
    /// The trade journal's database (`journal.url`).
    pub journal_url: String,
}

/// The journal's database when the configuration names none: a SQLite file in the working
/// directory.
pub const DEFAULT_JOURNAL_URL: &str = "sqlite://quantum-journal.db";

pub const TESTNET_REST: &str = "https://demo-fapi.binance.com";
pub const TESTNET_WS: &str = "wss://fstream.binancefuture.com";
pub const MAINNET_REST: &str = "https://fapi.binance.com";
pub const MAINNET_WS: &str = "wss://fstream.binance.com";

/// Whether `host` is one of Binance's production hosts: anything under binance.com but its demo
/// (testnet) hosts. Unknown hosts under binance.com count as production, the safe side.
pub fn is_mainnet_host(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let binance = host == "binance.com" || host.ends_with(".binance.com");
    let demo = host.starts_with("demo-") || host.starts_with("testnet.");
    binance && !demo
}

/// `journal.url`, checked for a scheme the journal can open.
fn journal_url(url: Option<String>) -> Result<String, ConfigError> {
    let url = url.unwrap_or_else(|| DEFAULT_JOURNAL_URL.to_string());
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if known.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(url)
    } else {
        Err(invalid(
            "journal.url",
            format!("{url:?} is neither sqlite://<path> nor postgres://..."),
        ))
    }
}

/// Parses `30s`, `500ms`, `2m`.
pub fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            key,
            format!("{text:?} is not a duration like 30s or 500ms ({e})"),
        )
    })
}

impl Settings {
    /// Layers defaults < file < overrides, reads secrets from `env`, and checks the result.
    pub fn build(
        file: FileConfig,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let venue_text = overrides
            .venue
            .clone()
            .or(file.exchange.venue)
            .unwrap_or_else(|| "testnet".into());
        let rest_override = overrides.rest_url.clone().or(file.exchange.rest_url);
        let ws_override = overrides.ws_url.clone().or(file.exchange.ws_url);
        let venue = match venue_text.to_ascii_lowercase().as_str() {
            "testnet" if rest_override.is_some() || ws_override.is_some() => Venue::Custom,
            "testnet" => Venue::Testnet,
            "mainnet" => Venue::Mainnet,
            "custom" => Venue::Custom,
            other => {
                return Err(invalid(
                    "venue",
                    format!("{other:?} is not testnet, mainnet or custom"),
                ))
            }
        };
        let allow_mainnet = overrides.allow_mainnet || file.exchange.allow_mainnet.unwrap_or(false);
        if venue == Venue::Mainnet && !allow_mainnet {
            return Err(invalid(
                "venue",
                "mainnet trades real money: set exchange.allow_mainnet = true in the config or pass --allow-mainnet",
            ));
        }
        let (default_rest, default_ws) = match venue {
            Venue::Mainnet => (MAINNET_REST, MAINNET_WS),
            _ => (TESTNET_REST, TESTNET_WS),
        };
        if venue == Venue::Custom && (rest_override.is_none() || ws_override.is_none()) {
            return Err(invalid(
                "rest_url",
                "a custom venue needs both --rest-url and --ws-url",
            ));
        }
        let rest_url = rest_override.unwrap_or_else(|| default_rest.to_string());
        let ws_url = ws_override.unwrap_or_else(|| default_ws.to_string());
        let ws_api_url = match (&file.exchange.ws_api_url, &venue) {
            (Some(url), _) => url.clone(),
            (None, Venue::Mainnet) => "wss://ws-fapi.binance.com/ws-fapi/v1".to_string(),
            (None, Venue::Testnet) => "wss://testnet.binancefuture.com/ws-fapi/v1".to_string(),
            // The simulator serves it on its one port.
            (None, Venue::Custom) => format!("{}/ws-fapi/v1", ws_url.trim_end_matches('/')),
        };
        for (key, url, schemes) in [
            ("rest_url", &rest_url, &["http", "https"][..]),
            ("ws_url", &ws_url, &["ws", "wss"][..]),
            ("ws_api_url", &ws_api_url, &["ws", "wss"][..]),
        ] {
            check_scheme(key, url, schemes)?;
        }
        // The guard goes by host, whatever the venue is called: `--rest-url
        // https://fapi.binance.com` is mainnet too.
        if venue != Venue::Mainnet && !allow_mainnet {
            for (key, url) in [
                ("rest_url", &rest_url),
                ("ws_url", &ws_url),
                ("ws_api_url", &ws_api_url),
            ] {
                let host = url::Url::parse(url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
                if host.as_deref().is_some_and(is_mainnet_host) {
                    return Err(invalid(
                        key,
                        format!("{url:?} is Binance's production exchange: mainnet trades real money: set exchange.allow_mainnet = true in the config or pass --allow-mainnet"),
                    ));
                }
            }
        }
        if file.exchange.ed25519_private_key_file.is_some()
            && file.exchange.rsa_private_key_file.is_some()
        {
            return Err(invalid(
                "exchange.rsa_private_key_file",
                "exchange.ed25519_private_key_file is set too: an API key has one type; keep the one of BINANCE_API_KEY",
            ));
        }
        let exchange = ExchangeSettings {
            venue,
            rest_url: rest_url.trim_end_matches('/').to_string(),
            ws_url: ws_url.trim_end_matches('/').to_string(),
            ws_api_url,
            ed25519_private_key_file: file
                .exchange
                .ed25519_private_key_file
                .as_ref()
                .map(std::path::PathBuf::from),
            rsa_private_key_file: file
                .exchange
                .rsa_private_key_file
                .as_ref()
                .map(std::path::PathBuf::from),
            api_key: Secret::new(env("BINANCE_API_KEY").unwrap_or_default()),
            api_secret: Secret::new(env("BINANCE_SECRET_KEY").unwrap_or_default()),
            recv_window: parse_duration(
                "recv_window",
                file.exchange.recv_window.as_deref().unwrap_or("5s"),
            )?,
            request_timeout: parse_duration(
                "request_timeout",
                file.exchange.request_timeout.as_deref().unwrap_or("10s"),
            )?,
        };
        if exchange.recv_window > Duration::from_secs(60) {
            return Err(invalid("recv_window", "Binance accepts at most 60s"));
        }
        let fill_timeout_text = overrides
            .fill_timeout
            .clone()
            .or(file.execution.fill_timeout)
            .unwrap_or_else(|| "30s".into());
        let execution = ExecutionSettings {
            consumer_group: file
                .execution
                .consumer_group
                .unwrap_or_else(|| "quantum-execution".into()),
            consumer_name: overrides
                .consumer_name
                .clone()
                .or(file.execution.consumer_name)
                .or_else(|| env("HOSTNAME"))
                .unwrap_or_else(|| "execution-1".into()),
            fill_timeout: parse_duration("fill_timeout", &fill_timeout_text)?,
            poll_interval: parse_duration(
                "poll_interval",
                file.execution.poll_interval.as_deref().unwrap_or("1s"),
            )?,
            claim_idle: parse_duration(
                "claim_idle",
                file.execution.claim_idle.as_deref().unwrap_or("60s"),
            )?,
            max_age: parse_duration(
                "max_age",
                file.execution.max_age.as_deref().unwrap_or("10s"),
            )?,
            cancel_window: parse_duration(
                "cancel_window",
                file.execution.cancel_window.as_deref().unwrap_or("30s"),
            )?,
            dead_man_countdown: parse_duration(
                "dead_man_countdown",
                file.execution
                    .dead_man_countdown
                    .as_deref()
                    .unwrap_or("120s"),
            )?,
            tripwire_failures: file.execution.tripwire_failures.unwrap_or(5),
            tripwire_window: parse_duration(
                "tripwire_window",
                file.execution.tripwire_window.as_deref().unwrap_or("5m"),
            )?,
            order_transport: match file.execution.order_transport.as_deref() {
                None | Some("rest") => OrderTransport::Rest,
                Some("websocket") => OrderTransport::WebSocket,
                Some(other) => {
                    return Err(invalid(
                        "order_transport",
                        format!("{other:?} is not \"rest\" or \"websocket\""),
                    ))
                }
            },
            tripwire_stream_outage: parse_duration(
                "tripwire_stream_outage",
                file.execution
                    .tripwire_stream_outage
                    .as_deref()
                    .unwrap_or("5m"),
            )?,
        };
        if !execution.dead_man_countdown.is_zero()
            && execution.dead_man_countdown < Duration::from_secs(1)
        {
            return Err(invalid(
                "dead_man_countdown",
                "must be 0 (off) or at least 1s: Binance checks countdowns about every 10 ms, and a shorter one would cancel working orders between heartbeats",
            ));
        }
        if execution.fill_timeout.is_zero() {
            return Err(invalid("fill_timeout", "must be longer than zero"));
        }
        let allowed_symbols = match file.risk.allowed_symbols {
            None => None,
            Some(list) if list.is_empty() => None,
            Some(list) => Some(
                list.iter()
                    .map(|s| Symbol::new(s).map_err(|e| invalid("allowed_symbols", e.to_string())))
                    .collect::<Result<BTreeSet<_>, _>>()?,
            ),
        };
        let max_leverage = file.risk.max_leverage.unwrap_or(20);
        if !(1..=125).contains(&max_leverage) {
            return Err(invalid("max_leverage", "must be from 1 to 125"));
        }
        let risk = RiskLimits {
            allowed_symbols,
            max_notional_usd: file.risk.max_notional_usd.unwrap_or(Decimal::from(1_000)),
            max_leverage,
            kill_switch: file.risk.kill_switch.unwrap_or(false),
        };
        let pct = |key: &'static str,
                   v: Option<Decimal>|
         -> Result<Option<model::ExitLevel>, ConfigError> {
            match v {
                Some(p) if p <= Decimal::ZERO || p >= Decimal::ONE_HUNDRED => {
                    Err(invalid(key, "must be above 0 and below 100"))
                }
                Some(p) => Ok(Some(model::ExitLevel::Pct(p))),
                None => Ok(None),
            }
        };
        let default_plan = model::ExitPlan {
            stop_loss: pct(
                "default_stop_loss_pct",
                Some(file.exit.default_stop_loss_pct.unwrap_or(Decimal::from(2))),
            )?,
            take_profit: pct("default_take_profit_pct", file.exit.default_take_profit_pct)?,
            trailing_pct: file.exit.default_trailing_pct,
        };
        if let Some(t) = default_plan.trailing_pct {
            if t < Decimal::new(1, 1) || t > Decimal::TEN {
                return Err(invalid("default_trailing_pct", "Binance allows 0.1 to 10"));
            }
        }
        if default_plan.stop_loss.is_none() && !file.exit.allow_unprotected.unwrap_or(false) {
            return Err(invalid(
                "default_stop_loss_pct",
                "positions without a stop-loss need exit.allow_unprotected = true",
            ));
        }
        let exit = ExitSettings {
            consumer_group: file
                .exit
                .consumer_group
                .unwrap_or_else(|| "quantum-exit-monitor".into()),
            default_plan,
            price_stale_after: parse_duration(
                "price_stale_after",
                file.exit.price_stale_after.as_deref().unwrap_or("5s"),
            )?,
            exchange_protection: file.exit.exchange_protection.unwrap_or(true),
            all_market_stream_above: file.exit.all_market_stream_above.unwrap_or(10),
            close_deadline: parse_duration(
                "close_deadline",
                file.exit.close_deadline.as_deref().unwrap_or("20s"),
            )?,
            conditional_budget: match file.exit.conditional_budget.unwrap_or(190) {
                b if b > 200 => {
                    return Err(invalid(
                        "conditional_budget",
                        "Binance allows at most 200 conditional orders per account",
                    ))
                }
                b => b,
            },
            reconcile_every: parse_duration(
                "reconcile_every",
                file.exit.reconcile_every.as_deref().unwrap_or("30s"),
            )?,
            adopt_after: parse_duration(
                "adopt_after",
                file.exit.adopt_after.as_deref().unwrap_or("10s"),
            )?,
            tripwire_daily_loss: match file.exit.tripwire_daily_loss {
                Some(loss) if loss < Decimal::ZERO => {
                    return Err(invalid(
                        "tripwire_daily_loss",
                        "a loss in USDT, as a positive number (0 turns it off)",
                    ))
                }
                Some(loss) if loss.is_zero() => None,
                other => other,
            },
        };
        let redis_url = overrides
            .redis_url
            .clone()
            .or(file.redis.url)
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        check_scheme("redis_url", &redis_url, &REDIS_SCHEMES)?;
        Ok(Settings {
            exit,
            exchange,
            redis_url,
            redis_max_len: file.redis.max_len.unwrap_or(100_000),
            journal_url: journal_url(file.journal.url)?,
            execution,
            risk,
        })
    }
}

impl Settings {
    /// Settings for an exchange at explicit URLs (the simulator, in tests and demos) with the
    /// given keys, everything else at its default.
    pub fn custom(
        rest_url: &str,
        ws_url: &str,
        redis_url: &str,
        api_key: &str,
        api_secret: &str,
    ) -> Result<Settings, ConfigError> {
        let overrides = Overrides {
            redis_url: Some(redis_url.to_string()),
            rest_url: Some(rest_url.to_string()),
            ws_url: Some(ws_url.to_string()),
            ..Overrides::default()
        };
        Settings::build(FileConfig::default(), &overrides, |k| match k {
            "BINANCE_API_KEY" => Some(api_key.to_string()),
            "BINANCE_SECRET_KEY" => Some(api_secret.to_string()),
            _ => None,
        })
    }

    /// The Binance client configuration these settings describe.
    pub fn binance_config(&self) -> Result<binance::Config, binance::Error> {
        let ex = &self.exchange;
        let mut config = binance::Config::custom(
            &ex.rest_url,
            &ex.ws_url,
            ex.api_key.expose(),
            ex.api_secret.expose().to_string(),
        )?;
        config.recv_window = ex.recv_window;
        config.request_timeout = ex.request_timeout;
        config.private_key = self.private_key()?;
        Ok(config)
    }

    /// The signing key, when `exchange.ed25519_private_key_file` or
    /// `exchange.rsa_private_key_file` names one (`build` refuses both). The error names the
    /// setting and the file, never the file's content.
    fn private_key(&self) -> Result<Option<binance::PrivateKey>, binance::Error> {
        let ex = &self.exchange;
        let (setting, path) = match (&ex.ed25519_private_key_file, &ex.rsa_private_key_file) {
            (None, None) => return Ok(None),
            (Some(path), None) => ("exchange.ed25519_private_key_file", path),
            (None, Some(path)) => ("exchange.rsa_private_key_file", path),
            (Some(_), Some(_)) => {
                return Err(binance::Error::Config(
                    "exchange.ed25519_private_key_file and exchange.rsa_private_key_file are both set; an API key has one type".into(),
                ))
            }
        };
        let unusable =
            |e: String| binance::Error::Config(format!("{setting} {}: {e}", path.display()));
        let pem = std::fs::read_to_string(path).map_err(|e| unusable(e.to_string()))?;
        let key = if ex.ed25519_private_key_file.is_some() {
            binance::Ed25519Key::from_pem(&pem).map(binance::PrivateKey::Ed25519)
        } else {
            binance::RsaKey::from_pem(&pem).map(binance::PrivateKey::Rsa)
        };
        key.map(Some).map_err(unusable)
    }

    /// The WebSocket API client's settings (order entry).
    pub fn ws_api_config(&self) -> Result<binance::WsApiConfig, binance::Error> {
        let ex = &self.exchange;
        Ok(binance::WsApiConfig {
            url: ex.ws_api_url.parse().map_err(|e| {
                binance::Error::Config(format!("ws_api_url {:?}: {e}", ex.ws_api_url))
            })?,
            api_key: ex.api_key.expose().to_string(),
            api_secret: binance::Secret::new(ex.api_secret.expose()),
            private_key: self.private_key()?,
            recv_window: ex.recv_window,
            request_timeout: ex.request_timeout,
        })
    }

    /// The bus configuration these settings describe.
    pub fn bus_config(&self) -> bus::Config {
        bus::Config {
            url: self.redis_url.clone(),
            max_len: self.redis_max_len,
            ..bus::Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_point_at_the_testnet_and_local_redis() {
        let s = Settings::build(FileConfig::default(), &Overrides::default(), no_env).unwrap();
        assert_eq!(s.exchange.venue, Venue::Testnet);
        assert_eq!(s.exchange.rest_url, TESTNET_REST);
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(s.execution.fill_timeout, Duration::from_secs(30));
    }

    #[test]
    fn an_ed25519_key_file_signs_and_a_missing_one_is_named_not_printed() {
        let dir = std::env::temp_dir().join(format!("quantum-ed25519-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        std::fs::write(
            &key,
            include_str!("../../simulator/testdata/test-ed25519-private.pem"),
        )
        .unwrap();
        let file = FileConfig::parse(&format!(
            "[exchange]\ned25519_private_key_file = {:?}\n[execution]\norder_transport = \"websocket\"\n",
            key.display().to_string()
        ))
        .unwrap();
        let s = Settings::build(file, &Overrides::default(), no_env).unwrap();
        assert!(matches!(
            s.binance_config().unwrap().private_key,
            Some(binance::PrivateKey::Ed25519(_))
        ));
        assert!(matches!(
            s.ws_api_config().unwrap().private_key,
            Some(binance::PrivateKey::Ed25519(_))
        ));
        assert_eq!(s.execution.order_transport, OrderTransport::WebSocket);
        assert_eq!(
            s.exchange.ws_api_url,
            "wss://testnet.binancefuture.com/ws-fapi/v1"
        );
        let missing =
            FileConfig::parse("[exchange]\ned25519_private_key_file = \"/nonexistent/k.pem\"\n")
                .unwrap();
        let s = Settings::build(missing, &Overrides::default(), no_env).unwrap();
        let err = s.binance_config().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/k.pem"), "{err}");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let file = FileConfig::parse(&format!(
            "[exchange]\ned25519_private_key_file = {:?}\n",
            key.display().to_string()
        ))
        .unwrap();
        let err = Settings::build(file, &Overrides::default(), no_env)
            .unwrap()
            .binance_config()
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("not a key"),
            "the key text never prints: {err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_rsa_key_file_signs_and_a_bad_one_is_named_not_printed() {
        let dir = std::env::temp_dir().join(format!("quantum-rsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("rsa.pem");
        std::fs::write(
            &key,
            include_str!("../../simulator/testdata/test-rsa-private.pem"),
        )
        .unwrap();
        let with_key = |extra: &str| {
            FileConfig::parse(&format!(
                "[exchange]\nrsa_private_key_file = {:?}\n{extra}",
                key.display().to_string()
            ))
            .unwrap()
        };
        let s = Settings::build(with_key(""), &Overrides::default(), no_env).unwrap();
        let config = s.binance_config().unwrap();
        assert!(matches!(
            config.private_key,
            Some(binance::PrivateKey::Rsa(_))
        ));
        assert!(
            !format!("{config:?}").contains("BEGIN"),
            "the key never prints: {config:?}"
        );
        assert!(matches!(
            s.ws_api_config().unwrap().private_key,
            Some(binance::PrivateKey::Rsa(_))
        ));

        // Both key types at once: refused when the configuration is built, naming both.
        let both = with_key("ed25519_private_key_file = \"/etc/quantum/ed.pem\"\n");
        let err = Settings::build(both, &Overrides::default(), no_env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rsa_private_key_file") && err.contains("ed25519_private_key_file"),
            "{err}"
        );

        let missing =
            FileConfig::parse("[exchange]\nrsa_private_key_file = \"/nonexistent/rsa.pem\"\n")
                .unwrap();
        let err = Settings::build(missing, &Overrides::default(), no_env)
            .unwrap()
            .binance_config()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/rsa.pem") && err.contains("exchange.rsa_private_key_file"),
            "{err}"
        );

        // An Ed25519 key in the RSA setting, or any other text: named, never echoed.
        for content in [
            include_str!("../../simulator/testdata/test-ed25519-private.pem"),
            "-----BEGIN PRIVATE KEY-----\nsecret-looking text\n-----END PRIVATE KEY-----\n",
        ] {
            std::fs::write(&key, content).unwrap();
            let err = Settings::build(with_key(""), &Overrides::default(), no_env)
                .unwrap()
                .binance_config()
                .unwrap_err()
                .to_string();
            assert!(err.contains(&key.display().to_string()), "{err}");
            assert!(
                !err.contains("secret-looking") && !err.contains("BEGIN"),
                "the file's text never prints: {err}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_url_without_its_scheme_is_refused_with_the_url_meant() {
        let build = |o: Overrides| {
            Settings::build(FileConfig::default(), &o, no_env)
                .unwrap_err()
                .to_string()
        };
        let err = build(Overrides {
            redis_url: Some("localhost:6379".into()),
            ..Overrides::default()
        });
        assert!(
            err.contains("did you mean \"redis://localhost:6379\"?"),
            "{err}"
        );
        let err = build(Overrides {
            rest_url: Some("127.0.0.1:8090".into()),
            ws_url: Some("ws://127.0.0.1:8090".into()),
            ..Overrides::default()
        });
        assert!(
            err.contains("did you mean \"http://127.0.0.1:8090\"?"),
            "{err}"
        );
        let err = build(Overrides {
            rest_url: Some("http://127.0.0.1:8090".into()),
            ws_url: Some("localhost:8090".into()),
            ..Overrides::default()
        });
        assert!(
            err.contains("did you mean \"ws://localhost:8090\"?"),
            "{err}"
        );
        let err = build(Overrides {
            redis_url: Some("http://localhost:6379".into()),
            ..Overrides::default()
        });
        assert!(err.contains("must start with redis://"), "{err}");
        for url in ["redis://h:1/2", "rediss://h", "unix:///tmp/redis.sock"] {
            let o = Overrides {
                redis_url: Some(url.into()),
                ..Overrides::default()
            };
            assert!(
                Settings::build(FileConfig::default(), &o, no_env).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn mainnet_is_refused_unless_allowed() {
        let o = Overrides {
            venue: Some("mainnet".into()),
            ..Overrides::default()
        };
        let err = Settings::build(FileConfig::default(), &o, no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow-mainnet"), "{err}");
        let o = Overrides {
            allow_mainnet: true,
            ..o
        };
        assert_eq!(
            Settings::build(FileConfig::default(), &o, no_env)
                .unwrap()
                .exchange
                .rest_url,
            MAINNET_REST
        );
    }

    #[test]
    fn a_custom_venue_on_binances_production_host_needs_allow_mainnet_too() {
        for (rest, ws) in [
            (
                "https://fapi.binance.com",
                "wss://fstream.binancefuture.com",
            ),
            (
                "https://demo-fapi.binance.com",
                "wss://fstream.binance.com/",
            ),
            ("https://FAPI.binance.com.", "wss://x"),
        ] {
            let o = Overrides {
                rest_url: Some(rest.into()),
                ws_url: Some(ws.into()),
                ..Overrides::default()
            };
            let err = Settings::build(FileConfig::default(), &o, no_env)
                .unwrap_err()
                .to_string();
            assert!(err.contains("allow-mainnet"), "{rest} {ws}: {err}");
            let o = Overrides {
                allow_mainnet: true,
                ..o
            };
            assert!(Settings::build(FileConfig::default(), &o, no_env).is_ok());
        }
        // The demo (testnet) hosts and local simulators need nothing.
        for (rest, ws) in [
            (
                "https://demo-fapi.binance.com",
                "wss://fstream.binancefuture.com",
            ),
            ("http://127.0.0.1:8090", "ws://127.0.0.1:8090"),
        ] {
            let o = Overrides {
                rest_url: Some(rest.into()),
                ws_url: Some(ws.into()),
                ..Overrides::default()
            };
            assert!(
                Settings::build(FileConfig::default(), &o, no_env).is_ok(),
                "{rest}"
            );
        }
    }

    #[test]
    fn flags_win_over_the_file_and_urls_make_a_custom_venue() {
        let file = FileConfig::parse(
            "[execution]\nfill_timeout = \"10s\"\n[redis]\nurl = \"redis://file:6379\"\n",
        )
        .unwrap();
        let o = Overrides {
            fill_timeout: Some("500ms".into()),
            rest_url: Some("http://127.0.0.1:8090".into()),
            ws_url: Some("ws://127.0.0.1:8090".into()),
            ..Overrides::default()
        };
        let s = Settings::build(file, &o, no_env).unwrap();
        assert_eq!(s.execution.fill_timeout, Duration::from_millis(500));
        assert_eq!(s.redis_url, "redis://file:6379");
        assert_eq!(s.exchange.venue, Venue::Custom);
    }

    #[test]
    fn secrets_come_from_the_environment_and_never_print() {
        let env = |k: &str| match k {
            "BINANCE_API_KEY" => Some("key-123".to_string()),
            "BINANCE_SECRET_KEY" => Some("very-secret".to_string()),
            _ => None,
        };
        let s = Settings::build(FileConfig::default(), &Overrides::default(), env).unwrap();
        assert_eq!(s.exchange.api_secret.expose(), "very-secret");
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("very-secret") && !debug.contains("key-123"),
            "{debug}"
        );
    }

    #[test]
    fn mistakes_in_the_file_are_named() {
        assert!(FileConfig::parse("[risk]\nmax_levrage = 5\n")
            .unwrap_err()
            .contains("max_levrage"));
        let file = FileConfig::parse("[execution]\nfill_timeout = \"soon\"\n").unwrap();
        let err = Settings::build(file, &Overrides::default(), no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fill_timeout"), "{err}");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn the_example_file_parses_and_builds() {
        let text = include_str!("../../../config/quantum.example.toml");
        let file = FileConfig::parse(text).unwrap();
        let settings = Settings::build(file, &Overrides::default(), |_| None).unwrap();
        assert_eq!(settings.execution.consumer_group, "quantum-execution");
        assert_eq!(settings.risk.max_leverage, 20);
    }
}
