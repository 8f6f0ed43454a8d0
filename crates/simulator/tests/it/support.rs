//! A small Binance-style client for talking to a real simulator on a free port: public, signed
//! (HMAC-SHA256) and key-only REST calls, the simulator's control API, and WebSocket helpers.
//!
//! It is deliberately independent of any production client: it signs and encodes requests the way
//! Binance's docs describe, so a test failing here points at the simulator, not at shared code.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::Sha256;
use simulator::{SimConfig, SimHandle};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket connection to the simulator.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a single REST call may take before the test gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a simulator on a free port with fills applied immediately, and a client for it.
pub async fn start() -> (SimHandle, Client) {
    start_with(SimConfig {
        fill_delay: Duration::from_millis(0),
        ..SimConfig::default()
    })
    .await
}

/// Starts a simulator with `config` (its `listen` should keep port 0) and a client for it.
pub async fn start_with(config: SimConfig) -> (SimHandle, Client) {
    let (key, secret) = (config.api_key.clone(), config.api_secret.clone());
    let sim = simulator::spawn(config)
        .await
        .expect("simulator starts on a free port");
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("HTTP client builds"),
        base: sim.base_url(),
        key,
        secret,
    };
    (sim, client)
}

/// REST access to one simulator with its API key and secret.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    secret: String,
}

impl Client {
    /// An unauthenticated market-data call (`NONE` security).
    pub async fn public(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let query = encode(params);
        self.send(method, path, query, String::new(), false).await
    }

    /// A `TRADE`/`USER_DATA` call: adds `timestamp` and `recvWindow`, signs, sends the key header.
    /// GET and DELETE carry everything in the query string; POST and PUT in a form body.
    pub async fn signed(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let timestamp = now_ms().to_string();
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push(("timestamp", &timestamp));
        all.push(("recvWindow", "5000"));
        let payload = encode(&all);
        // Binance signs the query string followed directly by the body; only one of them is
        // non-empty here, so the signature covers exactly the payload as sent.
        let signed = format!("{payload}&signature={}", self.sign(&payload));
        if in_body(&method) {
            self.send(method, path, String::new(), signed, true).await
        } else {
            self.send(method, path, signed, String::new(), true).await
        }
    }

    /// A `USER_STREAM` call (the listenKey endpoints): API key header, no signature.
    pub async fn key_only(
        &self,
        method: Method,
        path: &str,
        params: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let payload = encode(params);
        if in_body(&method) {
            self.send(method, path, String::new(), payload, true).await
        } else {
            self.send(method, path, payload, String::new(), true).await
        }
    }

    /// A call to the simulator's own control API (`/sim/v1/...`), which takes JSON bodies.
    pub async fn control(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, parse_body(&method, path, &text))
    }

    /// Pins the price of `symbol` through the control API.
    pub async fn pin_price(&self, symbol: &str, price: &str) {
        let body = serde_json::json!({"symbol": symbol, "price": price});
        let (status, reply) = self.control(Method::POST, "/sim/v1/price", body).await;
        assert!(
            status.is_success(),
            "pinning {symbol} at {price}: {status} {reply}"
        );
    }

    fn sign(&self, payload: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(payload.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: String,
        body: String,
        with_key: bool,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut request = self.http.request(method.clone(), url);
        if with_key {
            request = request.header("X-MBX-APIKEY", &self.key);
        }
        if !body.is_empty() {
            request = request
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        (status, headers, parse_body(&method, path, &text))
    }
}

fn in_body(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT
}

fn encode(params: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish()
}

fn parse_body(method: &Method, path: &str, text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{method} {path} replied with non-JSON ({e}): {text}"))
}

/// Milliseconds since the Unix epoch, as Binance timestamps are.
pub fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock is after 1970");
    i64::try_from(since_epoch.as_millis()).expect("milliseconds fit in i64")
}

/// Polls `poll` every 20 ms until it returns `Some`, and returns that value; panics naming `what`
/// after `timeout`. Use it instead of sleeping for a state change to happen.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut poll: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = poll().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a WebSocket to `url` (`ws://...`).
pub async fn ws_connect(url: &str) -> Ws {
    let (ws, _response) =
        tokio::time::timeout(REQUEST_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("connecting to {url} timed out"))
            .unwrap_or_else(|e| panic!("connecting to {url} failed: {e}"));
    ws
}

/// Sends one JSON text frame.
pub async fn send_json(ws: &mut Ws, value: &Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("WebSocket send");
}

/// The next JSON message, skipping ping and pong frames; panics on timeout or close.
pub async fn next_json(ws: &mut Ws, timeout: Duration) -> Value {
    next_json_where(ws, timeout, "any JSON message", |_| true).await
}

/// The next JSON message for which `wanted` is true, skipping other messages and control frames;
/// panics naming `what` on timeout or close.
pub async fn next_json_where(
    ws: &mut Ws,
    timeout: Duration,
    what: &str,
    mut wanted: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut skipped = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; skipped messages: {skipped:?}"
                )
            });
        let text = match frame {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Close(frame))) => {
                panic!("socket closed while waiting for {what}: {frame:?}")
            }
            Some(Err(e)) => panic!("socket error while waiting for {what}: {e}"),
            None => panic!("socket ended while waiting for {what}"),
        };
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("non-JSON WebSocket message ({e}): {text}"));
        if wanted(&value) {
            return value;
        }
        skipped.push(value);
    }
}

/// The next user-data event whose `e` is `event`.
pub async fn next_event(ws: &mut Ws, event: &str, timeout: Duration) -> Value {
    next_json_where(ws, timeout, &format!("a {event} event"), |v| {
        v["e"] == event
    })
    .await
}
