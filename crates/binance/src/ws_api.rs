//! Order entry over Binance's WebSocket API (`/ws-fapi/v1`): one persistent connection that
//! saves the TLS and HTTP round trip of every REST order, and carries the lookups and cancels of
//! those orders too. Requests are `{"id","method","params"}`, replies are matched by `id`.
//!
//! How requests are authenticated depends on the key ([`WsApiConfig::private_key`]):
//!
//! - HMAC (no private key): every request carries `apiKey` and the HMAC-SHA256 (hex) of its
//!   parameters sorted by name (`k=v&...`).
//! - Ed25519: after each connect, before it takes any request, the connection task sends
//!   `session.logon` signed with the key; later requests carry neither `apiKey` nor `signature`
//!   (Binance authorizes them by the session), only `timestamp` and `recvWindow`. A refused or
//!   unanswered logon leaves the connection down: calls send nothing, so the caller uses REST,
//!   and [`WsApiClient::logon_failure`] says why. Every reconnect logs on again.
//! - RSA: Binance's `session.logon` takes Ed25519 keys only, but its SIGNED request rules take
//!   an RSA signature on any single request, so every request is signed with the key (base64 of
//!   RSASSA-PKCS1-v1_5 / SHA-256 over the same sorted payload), as with HMAC.
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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use url::Url;

use crate::config::Secret;
use crate::error::{classify_reply, Effect, Error};
use crate::sign::{signature, Ed25519Key, PrivateKey};
use crate::types::{Order, OrderRef};
use crate::ws;

/// Limit on one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Wait before logging on again after Binance refused the key (-1022, -2015): the key does not
/// become valid by itself within seconds, and REST carries the traffic meanwhile.
const REFUSED_LOGON_WAIT: Duration = Duration::from_secs(30);

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
    /// When set, used instead of the HMAC secret: an Ed25519 key logs the connection on
    /// (`session.logon`) and requests are authorized by the session; an RSA key signs each
    /// request (see the module documentation).
    pub private_key: Option<PrivateKey>,
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
    /// True while a connection is up and, with an Ed25519 key, logged on: only then are
    /// requests taken.
    connected: Arc<AtomicBool>,
    /// The error of the last `session.logon` while the connection is down because of it;
    /// cleared by a successful logon. A std mutex: held for a clone or a store, never across an
    /// await.
    logon_failure: Arc<Mutex<Option<Arc<Error>>>>,
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
        let logon_failure = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let logon = match &config.private_key {
            Some(PrivateKey::Ed25519(key)) => Some(Logon {
                api_key: config.api_key.clone(),
                key: key.clone(),
                rest: rest.clone(),
                recv_window: config.recv_window,
                timeout: config.request_timeout,
            }),
            // HMAC and RSA sign every request; Binance refuses both for session.logon.
            Some(PrivateKey::Rsa(_)) | None => None,
        };
        tokio::spawn(run(
            config.url.clone(),
            rx,
            Link {
                connected: connected.clone(),
                logon_failure: logon_failure.clone(),
                stop: stop.clone(),
            },
            logon,
        ));
        WsApiClient {
            config: Arc::new(config),
            rest,
            requests,
            connected,
            logon_failure,
            next_id: Arc::new(AtomicU64::new(1)),
            stop,
        }
    }

    /// Whether the connection is up now (and logged on, with an Ed25519 key); a call may still
    /// find it down.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Why the last `session.logon` failed (Binance's refusal, classified as REST's: a wrong key
    /// is [`Error::Auth`]), while the connection is down because of it; `None` once a logon
    /// succeeds, and always for HMAC and RSA keys, which do not log on.
    pub fn logon_failure(&self) -> Option<Arc<Error>> {
        self.logon_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// "not connected", with the failed logon when that is why.
    fn down_reason(&self) -> String {
        match self.logon_failure() {
            Some(e) => format!("the WebSocket API is not connected (session.logon failed: {e})"),
            None => "the WebSocket API is not connected".into(),
        }
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
            return Err(not_sent(&self.down_reason()));
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
        self.rest
            .admit_weight("ws-fapi order.status", 1, Effect::Read)
            .await?;
        decode(self.call("order.status", params, Effect::Read).await?)
    }

    /// `order.cancel`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the order is not open, [`Error::Ambiguous`] when the cancel was
    /// written and not answered (it may have happened: ask for the order's state), plus the
    /// transport errors.
    pub async fn cancel_order(&self, symbol: &str, order: &OrderRef) -> Result<Order, Error> {
        let params = with_ref(vec![("symbol", symbol.to_string())], order);
        self.rest
            .admit_weight("ws-fapi order.cancel", 1, Effect::Write)
            .await?;
        decode(self.call("order.cancel", params, Effect::Write).await?)
    }

    /// `order.status` when the connection can take it; `None` when it was down and nothing was
    /// sent (ask over REST). A request written and not answered is [`Error::Transient`]: a
    /// lookup without a reply is no answer, and is asked again. Otherwise as
    /// [`Self::query_order`].
    pub async fn try_query_order(
        &self,
        symbol: &str,
        order: &OrderRef,
    ) -> Option<Result<Order, Error>> {
        self.try_order_call(
            "order.status",
            "ws-fapi order.status",
            Effect::Read,
            symbol,
            order,
        )
        .await
    }

    /// `order.cancel` when the connection can take it; `None` when it was down and nothing was
    /// sent (cancel over REST). A cancel written and not answered is [`Error::Ambiguous`], never
    /// "cancelled". Otherwise as [`Self::cancel_order`].
    pub async fn try_cancel_order(
        &self,
        symbol: &str,
        order: &OrderRef,
    ) -> Option<Result<Order, Error>> {
        self.try_order_call(
            "order.cancel",
            "ws-fapi order.cancel",
            Effect::Write,
            symbol,
            order,
        )
        .await
    }

    /// `method` about one order (weight 1, counted against the shared budget as `what`) when
    /// the connection can take it; `None` when it was down and nothing was sent.
    async fn try_order_call(
        &self,
        method: &'static str,
        what: &'static str,
        effect: Effect,
        symbol: &str,
        order: &OrderRef,
    ) -> Option<Result<Order, Error>> {
        if !self.is_connected() {
            return None;
        }
        if let Err(e) = self.rest.admit_weight(what, 1, effect).await {
            return Some(Err(e));
        }
        let params = with_ref(vec![("symbol", symbol.to_string())], order);
        match self.call_raw(method, params, effect).await {
            Ok(result) => Some(decode(result)),
            Err(Fail::NotSent(_)) => None,
            Err(Fail::Error(e)) => Some(Err(e)),
        }
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
            return Err(Fail::NotSent(self.down_reason()));
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

    /// The request frame: the parameters with `timestamp` and `recvWindow`, and how the key
    /// wants it authenticated (module documentation): `apiKey` and a signature over `k=v&...`
    /// sorted by name, or, on an Ed25519 key's logged-on session, neither.
    fn frame(&self, id: &str, method: &str, params: Vec<(&'static str, String)>) -> String {
        let signing = match &self.config.private_key {
            None => Signing::Hmac(&self.config.api_secret),
            // The connection task takes requests only once `session.logon` succeeded on the
            // connection they go out on, so an Ed25519 client's requests never need their own.
            Some(PrivateKey::Ed25519(_)) => Signing::Session,
            Some(key @ PrivateKey::Rsa(_)) => Signing::Key(key),
        };
        request_frame(
            id,
            method,
            params,
            &self.config.api_key,
            self.rest.server_now_ms(),
            self.config.recv_window,
            signing,
        )
    }
}

/// How one request is authenticated.
enum Signing<'a> {
    /// `apiKey` and `hex(HMAC-SHA256(secret, payload))`.
    Hmac(&'a Secret),
    /// `apiKey` and the key's base64 signature of the payload.
    Key(&'a PrivateKey),
    /// Neither: the connection's `session.logon` authorizes it.
    Session,
}

/// `{"id","method","params"}` with `timestamp` and `recvWindow` added and signed as `signing`
/// says. Numbers are sent as JSON numbers (as the API's INT parameters are), everything else as
/// strings, and signed in the spelling sent.
fn request_frame(
    id: &str,
    method: &str,
    params: Vec<(&'static str, String)>,
    api_key: &str,
    timestamp: i64,
    recv_window: Duration,
    signing: Signing<'_>,
) -> String {
    let mut all: Vec<(&str, Value)> = params
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    if !matches!(signing, Signing::Session) {
        all.push(("apiKey", Value::String(api_key.to_string())));
    }
    all.push(("timestamp", json!(timestamp)));
    all.push(("recvWindow", json!(recv_window.as_millis() as u64)));
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
    let signature = match signing {
        Signing::Hmac(secret) => Some(signature(secret.expose(), &payload)),
        Signing::Key(key) => Some(key.sign_base64(&payload)),
        Signing::Session => None,
    };
    if let Some(signature) = signature {
        map.insert("signature".into(), Value::String(signature));
    }
    json!({ "id": id, "method": method, "params": map }).to_string()
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

/// What the connection task shares with the client.
struct Link {
    connected: Arc<AtomicBool>,
    logon_failure: Arc<Mutex<Option<Arc<Error>>>>,
    stop: CancellationToken,
}

impl Link {
    fn set_logon_failure(&self, failure: Option<Error>) {
        *self
            .logon_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = failure.map(Arc::new);
    }
}

/// What `session.logon` needs: an Ed25519 key and its API key, and the exchange's clock.
struct Logon {
    api_key: String,
    key: Ed25519Key,
    rest: crate::RestClient,
    recv_window: Duration,
    /// How long the logon waits for its reply.
    timeout: Duration,
}

impl Logon {
    /// Sends `session.logon` on a fresh connection and waits for its reply. Nothing else is on
    /// the connection yet: the task takes requests only after this succeeds.
    ///
    /// # Errors
    /// Binance's refusal classified as a read's (a wrong key is [`Error::Auth`]), or
    /// [`Error::Transient`] when the connection failed or no reply came in time.
    async fn log_on(&self, socket: &mut ws::Socket, id: &str) -> Result<(), Error> {
        let lost = |reason: String| Error::Transient {
            reason: format!("session.logon: {reason}"),
            status: None,
            code: None,
            retry_after: None,
        };
        let key = PrivateKey::Ed25519(self.key.clone());
        let frame = request_frame(
            id,
            "session.logon",
            Vec::new(),
            &self.api_key,
            self.rest.server_now_ms(),
            self.recv_window,
            Signing::Key(&key),
        );
        ws::send(socket, Message::text(frame))
            .await
            .map_err(|e| lost(format!("write failed: {e}")))?;
        let reply = tokio::time::timeout(self.timeout, async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<Value>(&text) {
                        Ok(reply) if reply["id"].as_str() == Some(id) => return Ok(reply),
                        Ok(_) => debug!(target: "binance::ws_api", "a frame before the logon reply: {text}"),
                        Err(e) => warn!(target: "binance::ws_api", "undecodable frame ({e}): {text}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        return Err(format!("closed by the server: {frame:?}"))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the connection ended".into()),
                }
            }
        })
        .await
        .map_err(|_| lost(format!("no reply within {:?}", self.timeout)))?
        .map_err(lost)?;
        let status = reply["status"].as_u64().unwrap_or(0) as u16;
        if status == 200 {
            return Ok(());
        }
        let retry_after = reply["error"]["data"]["retryAfter"]
            .as_i64()
            .map(|ms| Duration::from_millis(ms.max(0) as u64));
        Err(classify_reply(
            Effect::Read,
            status,
            retry_after,
            &reply["error"].to_string(),
        ))
    }
}

/// Waits `wait` while answering every call at once with "not sent"; false when the client is
/// stopped or dropped.
async fn idle(
    wait: Duration,
    requests: &mut mpsc::Receiver<Pending>,
    stop: &CancellationToken,
) -> bool {
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            _ = stop.cancelled() => return false,
            req = requests.recv() => match req {
                Some(p) => { let _ = p.reply.send(Outcome::Unsent("the WebSocket API is not connected".into())); }
                None => return false,
            },
        }
    }
}

/// The connection task: connects, logs on (Ed25519 keys), writes requests, routes replies,
/// reconnects.
async fn run(url: Url, mut requests: mpsc::Receiver<Pending>, link: Link, logon: Option<Logon>) {
    let Link {
        connected, stop, ..
    } = &link;
    let mut backoff = Duration::from_millis(100);
    let mut logons = 0u64;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let mut socket = match ws::connect(&url, CONNECT_TIMEOUT).await {
            Ok(socket) => {
                info!(target: "binance::ws_api", "WebSocket API connected: {url}");
                socket
            }
            Err(e) => {
                warn!(target: "binance::ws_api", "WebSocket API {url}: {e}; retrying in {backoff:?}");
                // Calls made meanwhile are answered at once: nothing is sent.
                if !idle(backoff, &mut requests, stop).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if let Some(logon) = &logon {
            logons += 1;
            let id = format!("logon-{logons}");
            let logged_on = tokio::select! {
                result = logon.log_on(&mut socket, &id) => Some(result),
                _ = stop.cancelled() => None,
            };
            let Some(logged_on) = logged_on else {
                ws::close(socket).await;
                return;
            };
            match logged_on {
                Ok(()) => {
                    link.set_logon_failure(None);
                    info!(target: "binance::ws_api", "WebSocket API session logged on with the Ed25519 key of API key {}; requests on this connection are authorized by the session", logon.api_key);
                }
                Err(e) => {
                    // The connection counts as down: calls send nothing and go over REST.
                    let wait = if matches!(e, Error::Auth { .. }) {
                        REFUSED_LOGON_WAIT
                    } else {
                        backoff
                    };
                    error!(target: "binance::ws_api", "WebSocket API session.logon failed: {e}; the connection counts as down (REST carries the requests); logging on again in {wait:?}");
                    link.set_logon_failure(Some(e));
                    ws::close(socket).await;
                    if !idle(wait, &mut requests, stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        backoff = Duration::from_millis(100);
        connected.store(true, Ordering::Relaxed);
        let mut waiting: HashMap<String, oneshot::Sender<Outcome>> = HashMap::new();
        let why = loop {
            tokio::select! {
                _ = stop.cancelled() => break "shut down".to_string(),
                req = requests.recv() => {
                    let Some(p) = req else { break "client dropped".to_string() };
                    if p.reply.is_closed() {
                        // Its caller stopped waiting (deadline passed while the request queued)
                        // and reported it unanswered; sending it now would execute what the
                        // caller is already resolving another way.
                        debug!(target: "binance::ws_api", "request {} dropped unsent: its caller gave up", p.id);
                        continue;
                    }
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
                            // Binance's notice that the session's key was revoked or expired
                            // (id null, 401): log on again on a new connection.
                            Ok(reply) if logon.is_some() && reply["id"].is_null() && reply["status"] == 401 => {
                                break format!("the session was ended by the server: {}", reply["error"]);
                            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params_of(frame: &str) -> Map<String, Value> {
        let frame: Value = serde_json::from_str(frame).unwrap();
        frame["params"].as_object().unwrap().clone()
    }

    #[test]
    fn a_session_request_carries_neither_api_key_nor_signature() {
        let frame = request_frame(
            "q1",
            "order.status",
            vec![("symbol", "BTCUSDT".into()), ("orderId", "7".into())],
            "the-key",
            1_700_000_000_000,
            Duration::from_secs(5),
            Signing::Session,
        );
        let params = params_of(&frame);
        assert!(!params.contains_key("apiKey"), "{frame}");
        assert!(!params.contains_key("signature"), "{frame}");
        assert_eq!(params["timestamp"], json!(1_700_000_000_000_i64));
        assert_eq!(params["recvWindow"], json!(5000));
    }

    #[test]
    fn hmac_and_key_requests_are_signed_over_the_sorted_parameters() {
        let secret = Secret::new("s3cret");
        let frame = request_frame(
            "q2",
            "order.status",
            vec![("symbol", "BTCUSDT".into()), ("orderId", "7".into())],
            "the-key",
            1,
            Duration::from_secs(5),
            Signing::Hmac(&secret),
        );
        let params = params_of(&frame);
        assert_eq!(params["apiKey"], "the-key");
        let payload = "apiKey=the-key&orderId=7&recvWindow=5000&symbol=BTCUSDT&timestamp=1";
        assert_eq!(params["signature"], signature("s3cret", payload));

        let key = PrivateKey::Ed25519(Ed25519Key::from_secret_bytes(&[7; 32]));
        let frame = request_frame(
            "q3",
            "session.logon",
            Vec::new(),
            "the-key",
            1,
            Duration::from_secs(5),
            Signing::Key(&key),
        );
        let params = params_of(&frame);
        assert_eq!(
            params["signature"],
            key.sign_base64("apiKey=the-key&recvWindow=5000&timestamp=1")
        );
    }
}
