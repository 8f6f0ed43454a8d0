//! Simulator settings: everything `quantum sim` can be told on its command line, with the defaults
//! a new user gets when they pass nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;

/// The API key the simulator accepts when none is configured. Printed at start; documented in the
/// README. It is not a secret: the simulator holds no money.
pub const DEFAULT_API_KEY: &str = "quantum-sim-key";
/// The secret paired with [`DEFAULT_API_KEY`].
pub const DEFAULT_API_SECRET: &str = "quantum-sim-secret";
/// The API key `quantum sim` gives an Ed25519 public key when none is named.
pub const DEFAULT_ED25519_API_KEY: &str = "quantum-sim-ed25519-key";
/// The API key `quantum sim` gives an RSA public key when none is named.
pub const DEFAULT_RSA_API_KEY: &str = "quantum-sim-rsa-key";

/// How the simulator is set up. `SimConfig::default()` is what `quantum sim` runs with.
#[derive(Clone)]
pub struct SimConfig {
    /// Address to bind; port 0 picks a free port (tests use that).
    pub listen: SocketAddr,
    /// The one API key the simulator knows; requests with any other key get -2015.
    pub api_key: String,
    /// The HMAC-SHA256 secret paired with `api_key`.
    pub api_secret: String,
    /// Further API keys of the same account, signed with an asymmetric key pair (Binance's Ed25519
    /// and RSA API keys). Only the public half is configured. The WebSocket API's `session.logon`
    /// takes Ed25519 keys only, as Binance's.
    pub public_keys: Vec<PublicApiKey>,
    /// Delay between accepting a MARKET order (reply `NEW`) and its first fill. Like the testnet, the
    /// ACK reply never carries the fill, whatever this is set to.
    pub fill_delay: Duration,
    /// Number of fills a MARKET order is split into (1 = one fill event per book level crossed).
    pub partial_fills: u32,
    /// Seed of the per-symbol random walks; the same seed gives the same prices tick after tick.
    pub seed: u64,
    /// Symbols beyond the built-in seven, as `SYMBOL:PRICE` (e.g. `LINKUSDT:14.5`).
    pub extra_symbols: Vec<String>,
    /// CSV files to replay prices from, as `SYMBOL=PATH` (rows `timestamp,price`) or `PATH`
    /// (rows `timestamp,symbol,price`).
    pub price_files: Vec<String>,
    /// How often the price process moves and market streams publish.
    pub tick_interval: Duration,
    /// Interval of server-initiated WebSocket pings (Binance: 3 minutes).
    pub ws_ping_interval: Duration,
    /// How long a `newOrderRespType=RESULT` reply waits for the order's final state before it answers
    /// with the state it has (e.g. `NEW` when fills never come). Shorter than a client's usual 10 s
    /// request timeout, so such a client gets an answer rather than a timeout.
    pub result_wait: Duration,
    /// Starting USDT wallet balance of the simulated account.
    pub initial_balance: Decimal,
    /// Lifetime of a listenKey without keepalive (Binance: 60 minutes).
    pub listen_key_ttl: Duration,
    /// A WebSocket connection is closed after this long (Binance: 24 hours), so clients must
    /// reconnect and, for user streams, reconcile.
    pub ws_max_lifetime: Duration,
    /// Answer 429 when Binance's weight and order limits are crossed. The counters and their
    /// headers are kept either way; benchmarks turn enforcement off to measure the simulator.
    pub enforce_rate_limits: bool,
    /// Start the account in hedge mode (`dualSidePosition=true`); `POST /fapi/v1/positionSide/dual`
    /// changes it later, as on Binance (only with nothing open).
    pub dual_side_position: bool,
}

impl std::fmt::Debug for SimConfig {
    // The secret is not worth much here, but the habit is the point: secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("public_keys", &self.public_keys)
            .field("fill_delay", &self.fill_delay)
            .field("partial_fills", &self.partial_fills)
            .field("seed", &self.seed)
            .field("extra_symbols", &self.extra_symbols)
            .field("price_files", &self.price_files)
            .field("tick_interval", &self.tick_interval)
            .finish_non_exhaustive()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: DEFAULT_API_KEY.to_string(),
            api_secret: DEFAULT_API_SECRET.to_string(),
            public_keys: Vec::new(),
            fill_delay: Duration::from_millis(300),
            partial_fills: 1,
            seed: 42,
            extra_symbols: Vec::new(),
            price_files: Vec::new(),
            tick_interval: Duration::from_millis(1000),
            ws_ping_interval: Duration::from_secs(180),
            result_wait: Duration::from_secs(5),
            initial_balance: Decimal::from(10_000),
            listen_key_ttl: Duration::from_secs(3600),
            ws_max_lifetime: Duration::from_secs(24 * 3600),
            dual_side_position: false,
            enforce_rate_limits: true,
        }
    }
}

/// How an API key's requests are signed (Binance's three API key types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScheme {
    /// HMAC-SHA256 with a shared secret, hex signature.
    Hmac,
    /// Ed25519, base64 signature.
    Ed25519,
    /// RSASSA-PKCS1-v1_5 with SHA-256, base64 signature.
    Rsa,
}

impl std::fmt::Display for KeyScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyScheme::Hmac => "HMAC",
            KeyScheme::Ed25519 => "Ed25519",
            KeyScheme::Rsa => "RSA",
        })
    }
}

/// An API key whose requests are signed with a private key the client keeps; the simulator holds
/// the public key, as Binance does after the user uploads it. Public keys are not secrets, so
/// `Debug` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicApiKey {
    /// The API key clients send (`X-MBX-APIKEY`, or `apiKey` on the WebSocket API).
    pub api_key: String,
    /// [`KeyScheme::Ed25519`] or [`KeyScheme::Rsa`].
    pub scheme: KeyScheme,
    /// The public key as PEM text: `-----BEGIN PUBLIC KEY-----` (SPKI, both types), or
    /// `-----BEGIN RSA PUBLIC KEY-----` (PKCS#1) for RSA.
    pub public_key_pem: String,
}

/// A price file named on the command line, resolved.
#[derive(Debug, Clone)]
pub(crate) struct PriceFileSpec {
    pub(crate) symbol: Option<String>,
    pub(crate) path: PathBuf,
}

impl PriceFileSpec {
    pub(crate) fn parse(text: &str) -> PriceFileSpec {
        match text.split_once('=') {
            Some((symbol, path)) if !symbol.is_empty() && !symbol.contains('/') => PriceFileSpec {
                symbol: Some(symbol.to_ascii_uppercase()),
                path: PathBuf::from(path),
            },
            _ => PriceFileSpec {
                symbol: None,
                path: PathBuf::from(text),
            },
        }
    }
}
