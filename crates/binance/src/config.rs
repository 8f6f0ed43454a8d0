//! Client settings: where the exchange is ([`Venue`]), the API credentials (with a [`Secret`] that
//! never prints), and the timing knobs every signed request needs (`recvWindow`, request timeout).
//! The mainnet guard lives here so that no other module can reach real money by accident.

use std::fmt;
use std::time::Duration;

use url::Url;

use crate::error::Error;

/// Mainnet REST base URL (paths `/fapi/v1/...`).
pub const MAINNET_REST_URL: &str = "https://fapi.binance.com";
/// Mainnet WebSocket base URL. Streams are routed by prefix: `/market/...`, `/public/...`,
/// `/private/...`.
pub const MAINNET_WS_URL: &str = "wss://fstream.binance.com";
/// Testnet ("demo trading") REST base URL, the one Binance's current docs name.
pub const TESTNET_REST_URL: &str = "https://demo-fapi.binance.com";
/// The legacy testnet REST host. Kept for reference: python-binance `testnet=True` and the
/// official SDK constants still use it, and reports disagree on whether it still works.
pub const LEGACY_TESTNET_REST_URL: &str = "https://testnet.binancefuture.com";
/// Testnet WebSocket base URL (the docs' `fstream.binancefuture.com`; both REST hosts use it).
pub const TESTNET_WS_URL: &str = "wss://fstream.binancefuture.com";

/// A string that must not reach logs: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for signing. Call sites are easy to audit by grepping for `expose`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

/// Which exchange to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Venue {
    /// Binance's futures testnet. The REST default is `demo-fapi.binance.com` because that is the
    /// host Binance's own documentation now names and ccxt points futures sandbox users to demo
    /// trading; the legacy `testnet.binancefuture.com` ([`LEGACY_TESTNET_REST_URL`]) is still used
    /// by python-binance and may still work, so reach it through [`Venue::Custom`] if needed.
    Testnet,
    /// Real money. Refused by [`Config::new`] unless `allow_mainnet` is true.
    Mainnet,
    /// Any other base URLs, e.g. the simulator (`http://127.0.0.1:PORT`, `ws://127.0.0.1:PORT`).
    Custom {
        /// REST base URL (without `/fapi`).
        rest: Url,
        /// WebSocket base URL (without `/ws`, `/stream` or `/private`).
        ws: Url,
    },
}

impl Venue {
    /// The REST and WebSocket base URLs of this venue.
    pub fn urls(&self) -> Result<(Url, Url), Error> {
        let parse = |text: &str| {
            Url::parse(text).map_err(|e| Error::Config(format!("invalid built-in URL {text}: {e}")))
        };
        match self {
            Venue::Testnet => Ok((parse(TESTNET_REST_URL)?, parse(TESTNET_WS_URL)?)),
            Venue::Mainnet => Ok((parse(MAINNET_REST_URL)?, parse(MAINNET_WS_URL)?)),
            Venue::Custom { rest, ws } => Ok((rest.clone(), ws.clone())),
        }
    }
}

/// Everything the REST client and the streams need to reach one account.
#[derive(Debug, Clone)]
pub struct Config {
    /// REST base URL, e.g. `https://fapi.binance.com`. Endpoint paths are absolute (`/fapi/v1/...`),
    /// so any path on this URL is replaced, not prefixed.
    pub rest_url: Url,
    /// WebSocket base URL, e.g. `wss://fstream.binance.com`.
    pub ws_url: Url,
    /// The API key, sent in `X-MBX-APIKEY`. Not secret on its own, so it prints.
    pub api_key: String,
    /// The HMAC-SHA256 secret.
    pub api_secret: Secret,
    /// An Ed25519 or RSA private key: when set, requests are signed with it (base64) instead of
    /// the HMAC secret, and `api_key` is that key's API key.
    pub private_key: Option<crate::sign::PrivateKey>,
    /// `recvWindow` sent with every signed request. Binance's default and advice is 5 s: a request
    /// that sits in a queue longer than that is refused (-1021) rather than executed late.
    pub recv_window: Duration,
    /// Upper bound on one HTTP exchange (connect, send, receive). A timeout after sending an order
    /// is ambiguous, so this must be long enough for a `RESULT` reply.
    pub request_timeout: Duration,
}

impl Config {
    /// A short tag of the API key (the first 12 hex digits of its SHA-256): names what is kept per
    /// account (the shared order budget) without spelling the key out.
    pub fn key_tag(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(self.api_key.as_bytes())[..6])
    }

    /// Default `recvWindow`.
    pub const DEFAULT_RECV_WINDOW: Duration = Duration::from_secs(5);
    /// Default request timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

    /// Builds a config for `venue` with default timings.
    ///
    /// # Errors
    /// [`Error::MainnetNotAllowed`] for [`Venue::Mainnet`] unless `allow_mainnet` is true: real
    /// orders must be an explicit decision, never a default.
    pub fn new(
        venue: Venue,
        api_key: impl Into<String>,
        api_secret: impl Into<Secret>,
        allow_mainnet: bool,
    ) -> Result<Config, Error> {
        if venue == Venue::Mainnet && !allow_mainnet {
            return Err(Error::MainnetNotAllowed);
        }
        let (rest_url, ws_url) = venue.urls()?;
        Ok(Config {
            rest_url,
            ws_url,
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            private_key: None,
            recv_window: Config::DEFAULT_RECV_WINDOW,
            request_timeout: Config::DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// A config for custom base URLs given as strings (tests, the simulator).
    ///
    /// # Errors
    /// [`Error::Config`] when a URL does not parse.
    pub fn custom(
        rest_url: &str,
        ws_url: &str,
        api_key: impl Into<String>,
        api_secret: impl Into<Secret>,
    ) -> Result<Config, Error> {
        let rest = Url::parse(rest_url)
            .map_err(|e| Error::Config(format!("invalid REST URL {rest_url}: {e}")))?;
        let ws = Url::parse(ws_url)
            .map_err(|e| Error::Config(format!("invalid WS URL {ws_url}: {e}")))?;
        Config::new(Venue::Custom { rest, ws }, api_key, api_secret, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let config = Config::new(Venue::Testnet, "key", "very-secret", false).unwrap();
        let printed = format!("{config:?} {}", config.api_secret);
        assert!(!printed.contains("very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"));
        assert_eq!(config.api_secret.expose(), "very-secret");
    }

    #[test]
    fn mainnet_needs_explicit_permission() {
        let refused = Config::new(Venue::Mainnet, "k", "s", false).unwrap_err();
        assert!(matches!(refused, Error::MainnetNotAllowed));
        let allowed = Config::new(Venue::Mainnet, "k", "s", true).unwrap();
        assert_eq!(allowed.rest_url.as_str(), "https://fapi.binance.com/");
    }

    #[test]
    fn testnet_defaults() {
        let config = Config::new(Venue::Testnet, "k", "s", false).unwrap();
        assert_eq!(config.rest_url.as_str(), "https://demo-fapi.binance.com/");
        assert_eq!(config.ws_url.as_str(), "wss://fstream.binancefuture.com/");
        assert_eq!(config.recv_window, Duration::from_secs(5));
        assert_eq!(config.request_timeout, Duration::from_secs(10));
    }
}
