//! Request parameters and Binance's security rules: the `X-MBX-APIKEY` header, HMAC-SHA256 over
//! the query string followed directly by the body, and the `timestamp`/`recvWindow` window.

use std::collections::HashMap;
use std::str::FromStr;

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use sha2::Sha256;

use crate::error::ApiError;

/// What an endpoint needs to be called (Binance's "security type").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// Public market data.
    None,
    /// API key only: USER_STREAM (listenKey endpoints) and MARKET_DATA (historicalTrades), which
    /// Binance checks alike.
    UserStream,
    /// API key and signature (`TRADE`, `USER_DATA`).
    Signed,
}

/// Parameters of one request: the query string and the form body merged, the query winning when
/// a key is in both (as Binance documents).
#[derive(Debug, Default, Clone)]
pub(crate) struct Params {
    values: HashMap<String, String>,
}

impl Params {
    pub(crate) fn parse(query: &str, body: &str) -> Params {
        let mut values = HashMap::new();
        for (k, v) in form_urlencoded::parse(body.as_bytes()) {
            values.insert(k.into_owned(), v.into_owned());
        }
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            values.insert(k.into_owned(), v.into_owned());
        }
        Params { values }
    }

    /// The raw value, treating an empty string as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key).ok_or_else(|| ApiError::mandatory(key))
    }

    pub(crate) fn decimal(&self, key: &str) -> Result<Option<Decimal>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(text) => parse_decimal(text)
                .map(Some)
                .ok_or_else(|| ApiError::malformed(key)),
        }
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(text) => text
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::malformed(key)),
        }
    }

    /// Binance booleans are the strings `true`/`false` (any case).
    pub(crate) fn boolean(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(text) => match text.to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => Err(ApiError::bad(
                    -1102,
                    format!("Param '{key}' must be true or false."),
                )),
            },
        }
    }

    /// The symbol parameter, upper-cased as Binance accepts either case.
    pub(crate) fn symbol(&self) -> Option<String> {
        self.get("symbol").map(str::to_ascii_uppercase)
    }

    /// The parameters of one element of a batch (`batchOrders=[{...},...]`): a JSON object whose
    /// values are strings, numbers or booleans, read as a single request's parameters. `None`
    /// for anything else (a nested object or list, `null`): Binance refuses such a batch.
    pub(crate) fn from_json(element: &serde_json::Value) -> Option<Params> {
        let object = element.as_object()?;
        let mut values = HashMap::new();
        for (key, value) in object {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            values.insert(key.clone(), text);
        }
        Some(Params { values })
    }

    /// A copy with one more parameter (a batch element inherits the request's `symbol`).
    pub(crate) fn with(mut self, key: &str, value: impl Into<String>) -> Params {
        self.values.insert(key.to_string(), value.into());
        self
    }
}

/// Parses a plain decimal (no exponent, no sign other than '-').
pub(crate) fn parse_decimal(text: &str) -> Option<Decimal> {
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
    {
        return None;
    }
    Decimal::from_str(text).ok()
}

/// The account's credentials as the simulator knows them.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) api_key: String,
    pub(crate) api_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

/// Default recvWindow when the request does not send one.
const DEFAULT_RECV_WINDOW_MS: i64 = 5000;
/// Binance's maximum accepted recvWindow (the Spot limit; the USD-M docs do not state one).
const MAX_RECV_WINDOW_MS: i64 = 60_000;

impl Credentials {
    /// Checks key, signature and timestamp for an endpoint of `security`. `server_now_ms` is the
    /// simulator's clock, including any `clock_skew_ms` fault.
    pub(crate) fn check(
        &self,
        security: Security,
        headers: &HeaderMap,
        raw_query: &str,
        raw_body: &str,
        params: &Params,
        server_now_ms: i64,
    ) -> Result<(), ApiError> {
        if security == Security::None {
            return Ok(());
        }
        let key = headers
            .get("X-MBX-APIKEY")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if key.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                -2014,
                "API-key format invalid.",
            ));
        }
        if key != self.api_key {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                -2015,
                "Invalid API-key, IP, or permissions for action, request ip: 127.0.0.1",
            ));
        }
        if security == Security::UserStream {
            return Ok(());
        }
        let timestamp = params
            .int("timestamp")?
            .ok_or_else(|| ApiError::mandatory("timestamp"))?;
        let recv_window = params.int("recvWindow")?.unwrap_or(DEFAULT_RECV_WINDOW_MS);
        if recv_window <= 0 || recv_window > MAX_RECV_WINDOW_MS {
            return Err(ApiError::bad(-1131, "recvWindow must be less than 60000"));
        }
        let signature = params
            .get("signature")
            .ok_or_else(|| ApiError::mandatory("signature"))?;
        // The signed payload is the query string followed directly by the body, each without the
        // signature parameter itself (it is the last parameter of whichever part carries it).
        let payload = format!(
            "{}{}",
            strip_signature(raw_query),
            strip_signature(raw_body)
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(self.api_secret.as_bytes())
            .map_err(|_| ApiError::bad(-1022, "Signature for this request is not valid."))?;
        mac.update(payload.as_bytes());
        let expected = hex::encode(mac.finalize().into_bytes());
        if !expected.eq_ignore_ascii_case(signature) {
            return Err(ApiError::bad(
                -1022,
                "Signature for this request is not valid.",
            ));
        }
        if timestamp >= server_now_ms + 1000 {
            return Err(ApiError::bad(
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            ));
        }
        if server_now_ms - timestamp > recv_window {
            return Err(ApiError::bad(
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            ));
        }
        Ok(())
    }
}

/// Removes the `signature=...` pair from a raw query string or form body.
fn strip_signature(raw: &str) -> String {
    raw.split('&')
        .filter(|pair| !pair.starts_with("signature="))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, payload: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(payload.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn creds() -> Credentials {
        Credentials {
            api_key: "k".into(),
            api_secret: "s".into(),
        }
    }

    fn headers(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("X-MBX-APIKEY", key.parse().unwrap());
        h
    }

    #[test]
    fn signature_covers_query_then_body_without_separator() {
        let query = "symbol=BTCUSDT&timestamp=1000";
        let body = "side=BUY&type=MARKET&quantity=1";
        let sig = sign("s", &format!("{query}{body}"));
        let body_signed = format!("{body}&signature={sig}");
        let params = Params::parse(query, &body_signed);
        assert_eq!(
            creds().check(
                Security::Signed,
                &headers("k"),
                query,
                &body_signed,
                &params,
                1500
            ),
            Ok(())
        );
        // Inserting '&' between the two parts is a different payload.
        let wrong = sign("s", &format!("{query}&{body}"));
        let body_wrong = format!("{body}&signature={wrong}");
        let params = Params::parse(query, &body_wrong);
        let err = creds()
            .check(
                Security::Signed,
                &headers("k"),
                query,
                &body_wrong,
                &params,
                1500,
            )
            .unwrap_err();
        assert_eq!(err.code, -1022);
    }

    #[test]
    fn the_query_string_wins_over_the_body() {
        let p = Params::parse("symbol=ETHUSDT", "symbol=BTCUSDT&side=BUY");
        assert_eq!(p.get("symbol"), Some("ETHUSDT"));
        assert_eq!(p.get("side"), Some("BUY"));
    }

    #[test]
    fn decimals_in_exponent_form_are_malformed() {
        assert_eq!(parse_decimal("1e3"), None);
        assert_eq!(parse_decimal("0.001"), Some(Decimal::new(1, 3)));
    }
}
