//! Request parameters and Binance's security rules: the API key (the `X-MBX-APIKEY` header on
//! REST, the `apiKey` parameter on the WebSocket API), the signature of each key type (HMAC-SHA256
//! hex, Ed25519 and RSA PKCS#1 v1.5 / SHA-256 in base64) over the payload each API signs (REST: the
//! query string followed directly by the body; WebSocket API: the parameters sorted by name), and
//! the `timestamp`/`recvWindow` window. Only public keys are held for Ed25519 and RSA keys: the
//! simulator verifies, it never signs.

use std::collections::HashMap;
use std::str::FromStr;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use sha2::Sha256;

use crate::config::{KeyScheme, SimConfig};
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

#[cfg(test)]
impl Security {
    /// The security column of the coverage tables in `ENDPOINTS.md`.
    pub(crate) fn from_table(name: &str) -> Option<Security> {
        match name {
            "public" => Some(Security::None),
            "signed" => Some(Security::Signed),
            "API key" => Some(Security::UserStream),
            _ => None,
        }
    }
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

    /// Parameters given as name/value pairs (the WebSocket API's `params`, already turned to text).
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Params {
        Params {
            values: pairs.into_iter().collect(),
        }
    }

    /// The WebSocket API's signed payload: every parameter except `signature`, sorted by name
    /// (byte order, as Python's `sorted` and Binance's examples), joined as `k=v&k=v`.
    pub(crate) fn sorted_payload(&self) -> String {
        let mut pairs: Vec<(&String, &String)> = self
            .values
            .iter()
            .filter(|(k, _)| k.as_str() != "signature")
            .collect();
        pairs.sort();
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
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

/// How one API key's signatures are checked: Binance's three key types.
#[derive(Clone)]
enum Verifier {
    /// `hex(HMAC-SHA256(secret, payload))`, compared case-insensitively.
    Hmac(String),
    /// `base64(Ed25519(payload))`.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// `base64(RSASSA-PKCS1-v1_5(SHA-256(payload)))`.
    Rsa(rsa::pkcs1v15::VerifyingKey<Sha256>),
}

impl Verifier {
    fn scheme(&self) -> KeyScheme {
        match self {
            Verifier::Hmac(_) => KeyScheme::Hmac,
            Verifier::Ed25519(_) => KeyScheme::Ed25519,
            Verifier::Rsa(_) => KeyScheme::Rsa,
        }
    }

    /// Whether `signature` (as the client sent it, URL-decoding already undone) signs `payload`.
    fn verifies(&self, payload: &str, signature: &str) -> bool {
        // Both crates implement the `signature` crate's trait, which ed25519-dalek re-exports.
        use ed25519_dalek::Verifier as _;
        match self {
            Verifier::Hmac(secret) => {
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
                    return false;
                };
                mac.update(payload.as_bytes());
                hex::encode(mac.finalize().into_bytes()).eq_ignore_ascii_case(signature)
            }
            Verifier::Ed25519(key) => {
                let Some(bytes) = decode_base64(signature) else {
                    return false;
                };
                let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
                    return false;
                };
                key.verify(payload.as_bytes(), &signature).is_ok()
            }
            Verifier::Rsa(key) => {
                let Some(bytes) = decode_base64(signature) else {
                    return false;
                };
                let Ok(signature) = rsa::pkcs1v15::Signature::try_from(bytes.as_slice()) else {
                    return false;
                };
                key.verify(payload.as_bytes(), &signature).is_ok()
            }
        }
    }
}

/// Standard base64 with padding, what Binance's examples and python-binance produce. A signature
/// that was not URL-encoded on REST arrives with its `+` turned into spaces and fails here, as it
/// would at Binance, whose docs require the encoding.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// One API key the simulator accepts.
#[derive(Clone)]
struct ApiKey {
    key: String,
    verifier: Verifier,
}

/// The account's API keys as the simulator knows them: the HMAC key of [`SimConfig::api_key`]
/// and any Ed25519 and RSA keys of [`SimConfig::public_keys`].
#[derive(Clone)]
pub(crate) struct Credentials {
    keys: Vec<ApiKey>,
}

impl std::fmt::Debug for Credentials {
    // The HMAC secret never reaches a log; the key names and their types may.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<(&str, KeyScheme)> = self
            .keys
            .iter()
            .map(|k| (k.key.as_str(), k.verifier.scheme()))
            .collect();
        f.debug_struct("Credentials")
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

/// Default recvWindow when the request does not send one.
const DEFAULT_RECV_WINDOW_MS: i64 = 5000;
/// Binance's maximum accepted recvWindow (the Spot limit; the USD-M docs do not state one).
const MAX_RECV_WINDOW_MS: i64 = 60_000;

/// Signature checks fail with this, whatever the reason (wrong key type included), as on Binance.
fn invalid_signature() -> ApiError {
    ApiError::bad(-1022, "Signature for this request is not valid.")
}

/// The reply to an API key the simulator does not know.
pub(crate) fn unknown_key() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        -2015,
        "Invalid API-key, IP, or permissions for action, request ip: 127.0.0.1",
    )
}

impl Credentials {
    /// The keys of `config`; an unreadable public key or a key name used twice is an error that
    /// names the key, never the PEM text.
    pub(crate) fn from_config(config: &SimConfig) -> Result<Credentials, String> {
        let mut keys = vec![ApiKey {
            key: config.api_key.clone(),
            verifier: Verifier::Hmac(config.api_secret.clone()),
        }];
        for public in &config.public_keys {
            if public.api_key.is_empty() {
                return Err(format!(
                    "the {} public key has an empty API key",
                    public.scheme
                ));
            }
            if keys.iter().any(|k| k.key == public.api_key) {
                return Err(format!(
                    "API key {:?} is configured twice; each key has one type",
                    public.api_key
                ));
            }
            let verifier =
                parse_public_key(public.scheme, &public.public_key_pem).map_err(|e| {
                    format!(
                        "{} public key of API key {:?}: {e}",
                        public.scheme, public.api_key
                    )
                })?;
            keys.push(ApiKey {
                key: public.api_key.clone(),
                verifier,
            });
        }
        Ok(Credentials { keys })
    }

    fn find(&self, key: &str) -> Option<&ApiKey> {
        self.keys.iter().find(|k| k.key == key)
    }

    /// The type of `key`, or -2015 when the simulator does not know it.
    pub(crate) fn scheme_of(&self, key: &str) -> Result<KeyScheme, ApiError> {
        self.find(key)
            .map(|k| k.verifier.scheme())
            .ok_or_else(unknown_key)
    }

    /// Checks that `signature` signs `payload` for the known key `key`: -2015 for an unknown key,
    /// -1022 for a signature that does not verify.
    pub(crate) fn verify(&self, key: &str, payload: &str, signature: &str) -> Result<(), ApiError> {
        let api_key = self.find(key).ok_or_else(unknown_key)?;
        if api_key.verifier.verifies(payload, signature) {
            Ok(())
        } else {
            Err(invalid_signature())
        }
    }

    /// Checks key, signature and timestamp for a REST endpoint of `security`. `server_now_ms` is
    /// the simulator's clock, including any `clock_skew_ms` fault.
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
        self.scheme_of(key)?;
        if security == Security::UserStream {
            return Ok(());
        }
        let window = TimeWindow::of(params)?;
        let signature = params
            .get("signature")
            .ok_or_else(|| ApiError::mandatory("signature"))?;
        // The signed payload is the query string followed directly by the body, each without the
        // signature parameter itself (it is the last parameter of whichever part carries it).
        // Ed25519 and RSA keys sign the same payload as HMAC; their base64 signature arrives
        // URL-encoded and `params` holds it decoded.
        let payload = format!(
            "{}{}",
            strip_signature(raw_query),
            strip_signature(raw_body)
        );
        self.verify(key, &payload, signature)?;
        window.check(server_now_ms)
    }
}

/// A request's `timestamp` and `recvWindow`, read and range-checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeWindow {
    timestamp: i64,
    recv_window: i64,
}

impl TimeWindow {
    /// `timestamp` is mandatory; `recvWindow` defaults to 5000 and must be in (0, 60000].
    pub(crate) fn of(params: &Params) -> Result<TimeWindow, ApiError> {
        let timestamp = params
            .int("timestamp")?
            .ok_or_else(|| ApiError::mandatory("timestamp"))?;
        let recv_window = params.int("recvWindow")?.unwrap_or(DEFAULT_RECV_WINDOW_MS);
        if recv_window <= 0 || recv_window > MAX_RECV_WINDOW_MS {
            return Err(ApiError::bad(-1131, "recvWindow must be less than 60000"));
        }
        Ok(TimeWindow {
            timestamp,
            recv_window,
        })
    }

    /// Binance's rule: `timestamp < serverTime + 1000` and `serverTime - timestamp <= recvWindow`.
    pub(crate) fn check(self, server_now_ms: i64) -> Result<(), ApiError> {
        if self.timestamp >= server_now_ms.saturating_add(1000) {
            return Err(ApiError::bad(
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            ));
        }
        if server_now_ms.saturating_sub(self.timestamp) > self.recv_window {
            return Err(ApiError::bad(
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            ));
        }
        Ok(())
    }
}

/// Reads a public key: SPKI PEM (`BEGIN PUBLIC KEY`, what Binance asks to upload) for both types,
/// and PKCS#1 PEM (`BEGIN RSA PUBLIC KEY`) for RSA. The error says what was expected, not what
/// the text held: a private key pasted by mistake must not end up in a log.
fn parse_public_key(scheme: KeyScheme, pem: &str) -> Result<Verifier, String> {
    match scheme {
        KeyScheme::Hmac => Err("an HMAC key has a secret, not a public key".to_string()),
        KeyScheme::Ed25519 => {
            use ed25519_dalek::pkcs8::DecodePublicKey as _;
            ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
                .map(Verifier::Ed25519)
                .map_err(|_| {
                    "not an Ed25519 public key in PEM form (-----BEGIN PUBLIC KEY-----)".to_string()
                })
        }
        KeyScheme::Rsa => {
            use rsa::pkcs1::DecodeRsaPublicKey as _;
            use rsa::pkcs8::DecodePublicKey as _;
            let text = pem.trim();
            rsa::RsaPublicKey::from_public_key_pem(text)
                .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(text))
                .map(|key| Verifier::Rsa(rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)))
                .map_err(|_| {
                    "not an RSA public key in PEM form (-----BEGIN PUBLIC KEY----- or -----BEGIN RSA PUBLIC KEY-----)"
                        .to_string()
                })
        }
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
        Credentials::from_config(&SimConfig {
            api_key: "k".into(),
            api_secret: "s".into(),
            ..SimConfig::default()
        })
        .unwrap()
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

    const ED25519_PRIVATE: &str = include_str!("../testdata/test-ed25519-private.pem");
    const ED25519_PUBLIC: &str = include_str!("../testdata/test-ed25519-public.pem");
    const RSA_PRIVATE: &str = include_str!("../testdata/test-rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("../testdata/test-rsa-public.pem");

    /// The HMAC key `k`, an Ed25519 key `ed` and an RSA key `rsa`.
    fn all_keys() -> Credentials {
        Credentials::from_config(&SimConfig {
            api_key: "k".into(),
            api_secret: "s".into(),
            public_keys: vec![
                crate::config::PublicApiKey {
                    api_key: "ed".into(),
                    scheme: KeyScheme::Ed25519,
                    public_key_pem: ED25519_PUBLIC.into(),
                },
                crate::config::PublicApiKey {
                    api_key: "rsa".into(),
                    scheme: KeyScheme::Rsa,
                    public_key_pem: RSA_PUBLIC.into(),
                },
            ],
            ..SimConfig::default()
        })
        .unwrap()
    }

    fn ed25519_sign(payload: &str) -> String {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(ED25519_PRIVATE).unwrap();
        base64::engine::general_purpose::STANDARD.encode(key.sign(payload.as_bytes()).to_bytes())
    }

    fn rsa_sign(payload: &str) -> String {
        use rsa::pkcs8::DecodePrivateKey as _;
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PRIVATE).unwrap();
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
        base64::engine::general_purpose::STANDARD.encode(signer.sign(payload.as_bytes()).to_vec())
    }

    /// A signed REST check of `query` with `signature` appended URL-encoded, as Binance asks.
    fn check_rest(
        creds: &Credentials,
        key: &str,
        query: &str,
        signature: &str,
    ) -> Result<(), ApiError> {
        let encoded: String = form_urlencoded::byte_serialize(signature.as_bytes()).collect();
        let raw = format!("{query}&signature={encoded}");
        let params = Params::parse(&raw, "");
        creds.check(Security::Signed, &headers(key), &raw, "", &params, 1500)
    }

    #[test]
    fn ed25519_and_rsa_keys_sign_the_rest_payload_in_base64() {
        let creds = all_keys();
        let query = "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1&timestamp=1000";
        assert_eq!(
            check_rest(&creds, "ed", query, &ed25519_sign(query)),
            Ok(())
        );
        assert_eq!(check_rest(&creds, "rsa", query, &rsa_sign(query)), Ok(()));
        // A signature of another payload, or made with the other key, does not verify.
        let other = "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=1&timestamp=1000";
        for (key, signature) in [
            ("ed", ed25519_sign(other)),
            ("rsa", rsa_sign(other)),
            ("ed", rsa_sign(query)),
            ("rsa", ed25519_sign(query)),
            ("ed", sign("s", query)),
            ("k", ed25519_sign(query)),
            ("ed", "not base64!".to_string()),
        ] {
            let err = check_rest(&creds, key, query, &signature).unwrap_err();
            assert_eq!(err.code, -1022, "{key} with {signature}");
        }
    }

    #[test]
    fn a_base64_signature_sent_without_url_encoding_fails_as_at_binance() {
        let creds = all_keys();
        let query = "symbol=BTCUSDT&timestamp=1000";
        // Find a payload whose signature has a '+', which an unencoded query turns into a space.
        let (query, signature) = (0..200)
            .map(|n| format!("{query}&recvWindow={}", 1000 + n))
            .map(|q| {
                let s = ed25519_sign(&q);
                (q, s)
            })
            .find(|(_, s)| s.contains('+'))
            .expect("some signature has a '+'");
        let raw = format!("{query}&signature={signature}");
        let params = Params::parse(&raw, "");
        let err = creds
            .check(Security::Signed, &headers("ed"), &raw, "", &params, 1500)
            .unwrap_err();
        assert_eq!(err.code, -1022);
    }

    #[test]
    fn the_websocket_payload_is_every_parameter_but_the_signature_sorted_by_name() {
        let params = Params::from_pairs([
            ("timestamp".to_string(), "1000".to_string()),
            ("apiKey".to_string(), "ed".to_string()),
            ("symbol".to_string(), "BTCUSDT".to_string()),
            ("signature".to_string(), "x".to_string()),
        ]);
        let payload = params.sorted_payload();
        assert_eq!(payload, "apiKey=ed&symbol=BTCUSDT&timestamp=1000");
        let creds = all_keys();
        assert_eq!(
            creds.verify("ed", &payload, &ed25519_sign(&payload)),
            Ok(())
        );
        assert_eq!(creds.verify("rsa", &payload, &rsa_sign(&payload)), Ok(()));
        assert_eq!(creds.verify("k", &payload, &sign("s", &payload)), Ok(()));
        assert_eq!(
            creds.verify("nobody", &payload, "x").unwrap_err().code,
            -2015
        );
    }

    #[test]
    fn key_types_are_known_by_key() {
        let creds = all_keys();
        assert_eq!(creds.scheme_of("k"), Ok(KeyScheme::Hmac));
        assert_eq!(creds.scheme_of("ed"), Ok(KeyScheme::Ed25519));
        assert_eq!(creds.scheme_of("rsa"), Ok(KeyScheme::Rsa));
    }

    #[test]
    fn a_bad_public_key_or_a_key_configured_twice_is_a_start_up_error_that_shows_no_pem() {
        let with = |api_key: &str, scheme, pem: &str| SimConfig {
            api_key: "k".into(),
            public_keys: vec![crate::config::PublicApiKey {
                api_key: api_key.into(),
                scheme,
                public_key_pem: pem.into(),
            }],
            ..SimConfig::default()
        };
        // A private key pasted where the public one belongs must not be echoed.
        let err =
            Credentials::from_config(&with("ed", KeyScheme::Ed25519, ED25519_PRIVATE)).unwrap_err();
        assert!(err.contains("Ed25519") && !err.contains("MC4C"), "{err}");
        let err =
            Credentials::from_config(&with("rsa", KeyScheme::Rsa, ED25519_PUBLIC)).unwrap_err();
        assert!(err.contains("RSA"), "{err}");
        let err =
            Credentials::from_config(&with("k", KeyScheme::Ed25519, ED25519_PUBLIC)).unwrap_err();
        assert!(err.contains("configured twice"), "{err}");
        // PKCS#1 RSA public keys are read too.
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        use rsa::pkcs8::DecodePublicKey as _;
        let pkcs1 = rsa::RsaPublicKey::from_public_key_pem(RSA_PUBLIC)
            .unwrap()
            .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
            .unwrap();
        assert!(Credentials::from_config(&with("rsa", KeyScheme::Rsa, &pkcs1)).is_ok());
    }

    #[test]
    fn credentials_debug_shows_keys_and_types_but_no_secret() {
        let shown = format!("{:?}", all_keys());
        assert!(
            shown.contains("\"ed\"") && shown.contains("Ed25519"),
            "{shown}"
        );
        assert!(!shown.contains("\"s\""), "{shown}");
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
