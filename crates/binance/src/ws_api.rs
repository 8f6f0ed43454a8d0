//! Order entry over Binance's WebSocket API (`/ws-fapi/v1`): one persistent connection that
//! saves the TLS and HTTP round trip of every REST order. Requests are `{"id","method","params"}`
//! with HMAC-SHA256 over the parameters sorted by name (`k=v&...`), replies are matched by `id`.
//!
//! The outcome rules are REST's: a reply with an error is classified as a REST reply with the
//! same status and body ([`classify_reply`]). A request that was written but not answered (its
//! deadline passed, or the connection dropped while it waited) is [`Error::Ambiguous`] for an
//! order or a cancel: the order may exist, so look it up by its client order id, never resend it
//! blind. A call made while the connection is down sends nothing and is [`Error::Transient`], so
//! the caller can fall back to REST at once. A background task keeps the connection up, with a
//! capped backoff between attempts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use crate::config::Secret;
use crate::error::{classify_reply, Effect, Error};
use crate::sign::signature;
use crate::types::{Order, OrderRef};
use crate::ws;

/// Limit on one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one request got.
enum Outcome {
    Reply(Value),
    /// Written (or maybe written), then no reply: the connection went.
    Lost(String),
    /// Not written: the connection was down.
    Unsent(String),
}

struct Pending {
    id: String,
    frame: String,
    reply: oneshot::Sender<Outcome>,
}

/// Settings of a [`WsApiClient`].
#[derive(Clone)]
pub struct WsApiConfig {
    /// `wss://ws-fapi.binance.com/ws-fapi/v1`, or the simulator's `ws://HOST:PORT/ws-fapi/v1`.
    pub url: Url,
    pub api_key: String,
    pub api_secret: Secret,
    /// When set, requests are signed with this Ed25519 key (base64) instead of the HMAC secret.
    pub ed25519: Option<crate::sign::Ed25519Key>,
    pub recv_window: Duration,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for WsApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsApiConfig")
            .field("url", &self.url.as_str())
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

/// A WebSocket API connection for order entry (cheap to clone; clones share it).
#[derive(Clone)]
pub struct WsApiClient {
    config: Arc<WsApiConfig>,
    /// For the exchange's clock (timestamps) and the account's order budget, shared with REST.
    rest: crate::RestClient,
    requests: mpsc::Sender<Pending>,
    connected: Arc<AtomicBool>,
    next_id: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl std::fmt::Debug for WsApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsApiClient")
            .field("url", &self.config.url.as_str())
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl WsApiClient {
    /// Starts the connection task; calls made before it connects are [`Error::Transient`].
    /// `rest` gives the exchange's clock (as measured by its `sync_time`) and the rate budget
    /// that orders sent here count against, as REST's do.
    pub fn spawn(config: WsApiConfig, rest: crate::RestClient) -> WsApiClient {
        let (requests, rx) = mpsc::channel(256);
        let connected = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        tokio::spawn(run(config.url.clone(), rx, connected.clone(), stop.clone()));
        WsApiClient {
            config: Arc::new(config),
            rest,
            requests,
            connected,
            next_id: Arc::new(AtomicU64::new(1)),
            stop,
        }
    }

    /// Whether the connection is up now (a call may still find it down).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Closes the connection; later calls are [`Error::Transient`].
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Waits until connected, up to `timeout`; whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// `order.place`. The same rules as [`crate::RestClient::place_order`]: an ACK is not a fill.
    ///
    /// # Errors
    /// [`Error::Ambiguous`] when the request was written and not answered (look the order up);
    /// [`Error::Transient`] when nothing was sent (e.g. the connection is down: use REST).
    pub async fn place_order(&self, order: &crate::NewOrder) -> Result<Order, Error> {
        if !crate::types::is_valid_client_id(&order.client_order_id) {
            return Err(Error::InvalidRequest(format!(
                "client order id {:?} does not match ^[.A-Z:/a-z0-9_-]{{1,36}}$",
                order.client_order_id
            )));
        }
        if !self.is_connected() {
            return Err(not_sent("the WebSocket API is not connected"));
        }
        self.rest.admit_order().await?;
        let result = self
            .call("order.place", order.params(), Effect::Write)
            .await?;
        decode(result)
    }

    /// `order.status`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown order, plus the transport errors.
    pub async fn query_order(&self, symbol: &str, order: &OrderRef) -> Result<Order, Error> {
        let params = with_ref(vec![("symbol", symbol.to_string())], order);
        decode(self.call("order.status", params, Effect::Read).await?)
    }

    /// `order.cancel`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the order is not open, plus the transport errors.
    pub async fn cancel_order(&self, symbol: &str, order: &OrderRef) -> Result<Order, Error> {
        let params = with_ref(vec![("symbol", symbol.to_string())], order);
        decode(self.call("order.cancel", params, Effect::Write).await?)
    }

    async fn call(
        &self,
        method: &str,
        params: Vec<(&'static str, String)>,
        effect: Effect,
    ) -> Result<Value, Error> {
        self.call_raw(method, params, effect)
            .await
            .map_err(|fail| match fail {
                Fail::NotSent(reason) => not_sent(&reason),
                Fail::Error(e) => e,
            })
    }

    /// `order.place` when the connection can take it; `None` when it was down and nothing was
    /// sent (send it over REST, with the same client order id). Otherwise as [`Self::place_order`].
    pub async fn try_place_order(&self, order: &crate::NewOrder) -> Option<Result<Order, Error>> {
        if !self.is_connected() {
            return None;
        }
        if let Err(e) = self.rest.admit_order().await {
            return Some(Err(e));
        }
        match self
            .call_raw("order.place", order.params(), Effect::Write)
            .await
        {
            Ok(result) => Some(decode(result)),
            Err(Fail::NotSent(_)) => None,
            Err(Fail::Error(e)) => Some(Err(e)),
        }
    }

    async fn call_raw(
        &self,
        method: &str,
        params: Vec<(&'static str, String)>,
        effect: Effect,
    ) -> Result<Value, Fail> {
        if !self.is_connected() {
            return Err(Fail::NotSent("the WebSocket API is not connected".into()));
        }
        let id = format!("q{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let frame = self.frame(&id, method, params);
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Pending {
                id: id.clone(),
                frame,
                reply,
            })
            .await
            .map_err(|_| Fail::NotSent("the WebSocket API client is shut down".into()))?;
        let outcome = match tokio::time::timeout(self.config.request_timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Lost("the connection task ended".into()),
            Err(_) => Outcome::Lost(format!("no reply within {:?}", self.config.request_timeout)),
        };
        match outcome {
            Outcome::Unsent(reason) => Err(Fail::NotSent(reason)),
            Outcome::Lost(reason) => Err(Fail::Error(match effect {
                Effect::Write => Error::Ambiguous {
                    reason: format!("{method} over the WebSocket API: {reason}"),
                    status: None,
                    code: None,
                    body: None,
                },
                // A read changed nothing: it can be asked again, over REST or here.
                Effect::Read => Error::Transient {
                    reason: format!("{method} over the WebSocket API: {reason}"),
                    status: None,
                    code: None,
                    retry_after: None,
                },
            })),
            Outcome::Reply(reply) => {
                let status = reply["status"].as_u64().unwrap_or(0) as u16;
                if status == 200 {
                    return Ok(reply["result"].clone());
                }
                let retry_after = reply["error"]["data"]["retryAfter"]
                    .as_i64()
                    .map(|ms| Duration::from_millis(ms.max(0) as u64));
                Err(Fail::Error(classify_reply(
                    effect,
                    status,
                    retry_after,
                    &reply["error"].to_string(),
                )))
            }
        }
    }

    /// The request frame: the parameters with `apiKey`, `timestamp` and `recvWindow`, signed over
    /// `k=v&...` sorted by name. Numbers are sent as JSON numbers (as the API's INT parameters
    /// are), everything else as strings, and signed in the spelling sent.
    fn frame(&self, id: &str, method: &str, params: Vec<(&'static str, String)>) -> String {
        let timestamp = self.rest.server_now_ms();
        let mut all: Vec<(&str, Value)> = params
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        all.push(("apiKey", Value::String(self.config.api_key.clone())));
        all.push(("timestamp", json!(timestamp)));
        all.push((
            "recvWindow",
            json!(self.config.recv_window.as_millis() as u64),
        ));
        all.sort_by(|a, b| a.0.cmp(b.0));
        let payload = all
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut map = Map::new();
        for (k, v) in all {
            map.insert(k.to_string(), v);
        }
        map.insert(
            "signature".into(),
            Value::String(match &self.config.ed25519 {
                Some(key) => key.sign_base64(&payload),
                None => signature(self.config.api_secret.expose(), &payload),
            }),
        );
        json!({ "id": id, "method": method, "params": map }).to_string()
    }
}

/// Why a call did not succeed: nothing was sent, or the error of what was sent.
enum Fail {
    NotSent(String),
    Error(Error),
}

fn not_sent(reason: &str) -> Error {
    Error::Transient {
        reason: format!("{reason}; nothing was sent"),
        status: None,
        code: None,
        retry_after: None,
    }
}

fn with_ref(
    mut params: Vec<(&'static str, String)>,
    order: &OrderRef,
) -> Vec<(&'static str, String)> {
    match order {
        OrderRef::OrderId(id) => params.push(("orderId", id.to_string())),
        OrderRef::ClientOrderId(c) => params.push(("origClientOrderId", c.clone())),
    }
    params
}

fn decode(result: Value) -> Result<Order, Error> {
    let text = result.to_string();
    serde_json::from_value(result).map_err(|e| Error::Ambiguous {
        reason: format!("the reply could not be decoded: {e}"),
        status: Some(200),
        code: None,
        body: Some(text),
    })
}

/// The connection task: connects, writes requests, routes replies, reconnects.
async fn run(
    url: Url,
    mut requests: mpsc::Receiver<Pending>,
    connected: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let mut socket = match ws::connect(&url, CONNECT_TIMEOUT).await {
            Ok(socket) => {
                info!(target: "binance::ws_api", "WebSocket API connected: {url}");
                backoff = Duration::from_millis(100);
                socket
            }
            Err(e) => {
                warn!(target: "binance::ws_api", "WebSocket API {url}: {e}; retrying in {backoff:?}");
                // Calls made meanwhile are answered at once: nothing is sent.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        _ = &mut wait => break,
                        _ = stop.cancelled() => return,
                        req = requests.recv() => match req {
                            Some(p) => { let _ = p.reply.send(Outcome::Unsent("the WebSocket API is not connected".into())); }
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        connected.store(true, Ordering::Relaxed);
        let mut waiting: HashMap<String, oneshot::Sender<Outcome>> = HashMap::new();
        let why = loop {
            tokio::select! {
                _ = stop.cancelled() => break "shut down".to_string(),
                req = requests.recv() => {
                    let Some(p) = req else { break "client dropped".to_string() };
                    match ws::send(&mut socket, Message::text(p.frame)).await {
                        Ok(()) => { waiting.insert(p.id, p.reply); }
                        Err(e) => {
                            // Part of the frame may have left: the outcome is unknown.
                            let _ = p.reply.send(Outcome::Lost(format!("write failed: {e}")));
                            break format!("write failed: {e}");
                        }
                    }
                }
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<Value>(&text) {
                            Ok(reply) => {
                                let id = reply["id"].as_str().map(str::to_string);
                                match id.and_then(|id| waiting.remove(&id)) {
                                    Some(tx) => { let _ = tx.send(Outcome::Reply(reply)); }
                                    None => debug!(target: "binance::ws_api", "a reply nobody waits for: {text}"),
                                }
                            }
                            Err(e) => warn!(target: "binance::ws_api", "undecodable frame ({e}): {text}"),
                        }
                    }
                    Some(Ok(Message::Close(frame))) => break format!("closed by the server: {frame:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.to_string(),
                    None => break "the connection ended".to_string(),
                },
            }
        };
        connected.store(false, Ordering::Relaxed);
        for (_, tx) in waiting.drain() {
            let _ = tx.send(Outcome::Lost(format!("connection lost ({why})")));
        }
        ws::close(socket).await;
        if stop.is_cancelled() {
            return;
        }
        warn!(target: "binance::ws_api", "WebSocket API connection lost ({why}); reconnecting");
    }
}
