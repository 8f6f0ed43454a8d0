//! The user data stream: a task that holds a listenKey, keeps it alive, keeps a WebSocket open on
//! it, and sends decoded account events into an mpsc channel.
//!
//! # The reconnect contract (read this)
//!
//! A user stream **loses events** whenever it is not connected: when the socket dies, goes
//! silent, is cut after 24 h, or its listenKey expires. Binance does not replay them. So after
//! every [`UserEvent::Disconnected`] there is a gap, and every [`UserEvent::Connected`] marks the
//! start of a new gapless stretch. On each `Connected` the consumer (the execution service)
//! **must reconcile over REST**: look up every in-flight order (`GET /fapi/v1/order` by client
//! order id, `userTrades` for fills) and the positions, because a fill may have happened in the
//! gap. This task does not reconcile; it only guarantees that it says when a gap may have
//! occurred. The first `Connected` (generation 1) also needs a reconciliation: orders placed
//! before it may have filled already.
//!
//! Lifecycle handled here: listenKey created with `POST`, kept alive with `PUT` every
//! `keepalive_interval` (Binance: the key lives 60 min), replaced when keepalive answers -1125 or
//! a `listenKeyExpired` event arrives; the socket reconnected with capped exponential backoff
//! when it closes, errs, or carries nothing (not even a ping) for `stale_after`; and proactively
//! reconnected before Binance's 24 h connection limit.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use crate::events::{
    decode_user_frame, AccountUpdate, AlgoUpdate, Decoded, OrderTradeUpdate, TradeLite, UserData,
};
use crate::rest::RestClient;
use crate::ws::{close, connect, Backoff, ConnectFailure, Socket};

/// Where the user stream lives, relative to the WebSocket base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserStreamPath {
    /// `{ws_url}{path}?listenKey=<key>`; Binance's routed form is `/private/ws`.
    Query {
        /// e.g. `/private/ws`.
        path: String,
    },
    /// `{ws_url}{prefix}/<key>`, e.g. `/ws/<key>` (the legacy form; the simulator serves it too).
    Suffix {
        /// e.g. `/ws`.
        prefix: String,
    },
}

impl Default for UserStreamPath {
    fn default() -> UserStreamPath {
        UserStreamPath::Query {
            path: "/private/ws".into(),
        }
    }
}

/// Settings of the user data stream.
#[derive(Debug, Clone)]
pub struct UserStreamConfig {
    /// URL shape.
    pub path: UserStreamPath,
    /// How often to `PUT` the listenKey. Binance's key lives 60 min; 30 min leaves room for one
    /// failed attempt.
    pub keepalive_interval: Duration,
    /// Reconnect after a connection has been up this long, before Binance cuts it at 24 h.
    pub max_connection_age: Duration,
    /// Reconnect when nothing (no event, no ping) arrived for this long. Binance and the
    /// simulator ping every 3 minutes, so 5 minutes means one ping went missing.
    pub stale_after: Duration,
    /// Limit on one connection attempt.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Binance's `events=` allow-list for the query form (e.g. `ORDER_TRADE_UPDATE`,
    /// `ACCOUNT_UPDATE`); `None` receives everything. The list is strict: leave out
    /// `listenKeyExpired` and an expiry is only noticed at the next keepalive (-1125), so the gap
    /// can last up to `keepalive_interval`. Ignored for [`UserStreamPath::Suffix`].
    pub events: Option<Vec<String>>,
    /// Capacity of the event channel. When the consumer falls behind, the task stops reading the
    /// socket (TCP pushes back) instead of dropping events.
    pub channel_capacity: usize,
}

impl Default for UserStreamConfig {
    fn default() -> UserStreamConfig {
        UserStreamConfig {
            path: UserStreamPath::default(),
            keepalive_interval: Duration::from_secs(30 * 60),
            max_connection_age: Duration::from_secs(23 * 3600),
            stale_after: Duration::from_secs(5 * 60),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            events: None,
            channel_capacity: 1024,
        }
    }
}

/// What comes out of the user stream.
#[derive(Debug, Clone, PartialEq)]
pub enum UserEvent {
    /// A connection is up; events from here on arrive without gaps until the next
    /// `Disconnected`. **Reconcile in-flight orders over REST now** (see the module docs).
    Connected {
        /// Counts connections from 1; a higher number means there was a gap before it.
        generation: u64,
    },
    /// The connection `generation` ended; events may be lost until the next `Connected`.
    Disconnected {
        /// Which connection ended.
        generation: u64,
        /// Why, in words.
        reason: String,
    },
    /// `ORDER_TRADE_UPDATE`.
    OrderTradeUpdate(OrderTradeUpdate),
    /// `TRADE_LITE`.
    TradeLite(TradeLite),
    /// `ACCOUNT_UPDATE`.
    AccountUpdate(AccountUpdate),
    /// `ALGO_UPDATE`.
    AlgoUpdate(AlgoUpdate),
}

/// A running user data stream. Events arrive on the receiver returned by
/// [`UserStream::spawn`]. The task stops on [`UserStream::shutdown`] or when the receiver is
/// dropped; dropping only this handle leaves it running.
#[derive(Debug)]
pub struct UserStream {
    /// Cancels the task; it then closes the socket (the listenKey is left to expire).
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl UserStream {
    /// Starts the stream task. The channel's first event is `Connected { generation: 1 }` once the
    /// socket is up.
    pub fn spawn(
        rest: RestClient,
        config: UserStreamConfig,
    ) -> (UserStream, mpsc::Receiver<UserEvent>) {
        let (events_tx, events_rx) = mpsc::channel(config.channel_capacity.max(1));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(rest, config, events_tx, cancel.clone()));
        (UserStream { cancel, task }, events_rx)
    }

    /// Stops the task and closes the socket. The listenKey is not closed: it is the account's
    /// one key and may be in use by another process; unused, it expires after 60 minutes.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            warn!(target: "binance::user_stream", "user stream task ended abnormally: {e}");
        }
    }
}

/// Checks that the account's user stream can be opened, for `quantum doctor`: obtains the
/// listenKey, keeps it alive once (`PUT`), opens the socket and closes the socket again. It does
/// **not** close the key: `POST` returns the account's active key, which a running execution
/// service may be listening on, and closing it would cut that service's stream.
///
/// # Errors
/// What failed, in words: the key request, the keepalive, or the socket.
pub async fn probe(rest: &RestClient, config: &UserStreamConfig) -> Result<Duration, String> {
    let started = Instant::now();
    let key = rest
        .create_listen_key()
        .await
        .map_err(|e| format!("POST /fapi/v1/listenKey failed: {e}"))?;
    rest.keepalive_listen_key(&key)
        .await
        .map_err(|e| format!("PUT /fapi/v1/listenKey failed: {e}"))?;
    let url = stream_url(
        &rest.config().ws_url,
        &config.path,
        &key,
        config.events.as_deref(),
    );
    let socket = connect(&url, config.connect_timeout)
        .await
        .map_err(|e| format!("the user stream socket did not open: {e}"))?;
    close(socket).await;
    Ok(started.elapsed())
}

/// How a session ended.
struct SessionEnd {
    reason: String,
    /// The listenKey is dead; get a new one before reconnecting.
    key_gone: bool,
    /// Reconnect at once (a planned rotation), not after a backoff.
    planned: bool,
    /// Stop the task (shutdown or the consumer went away).
    stop: bool,
}

impl SessionEnd {
    fn failure(reason: impl Into<String>) -> SessionEnd {
        SessionEnd {
            reason: reason.into(),
            key_gone: false,
            planned: false,
            stop: false,
        }
    }

    fn stop(reason: &str) -> SessionEnd {
        SessionEnd {
            stop: true,
            ..SessionEnd::failure(reason)
        }
    }
}

/// The key in use and when it must next be kept alive.
struct KeyState {
    key: String,
    next_keepalive: Instant,
}

async fn run(
    rest: RestClient,
    config: UserStreamConfig,
    events_tx: mpsc::Sender<UserEvent>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut generation = 0u64;
    let mut key: Option<KeyState> = None;
    loop {
        if cancel.is_cancelled() || events_tx.is_closed() {
            break;
        }
        // A key first: POST returns the active key (extended) or a new one.
        let current = match key.take() {
            Some(state) => state,
            None => match rest.create_listen_key().await {
                Ok(k) => {
                    info!(target: "binance::user_stream", "listenKey obtained");
                    KeyState {
                        key: k,
                        next_keepalive: Instant::now() + config.keepalive_interval,
                    }
                }
                Err(e) => {
                    warn!(target: "binance::user_stream", "cannot create a listenKey: {e}");
                    if sleep_or_cancel(backoff.next_delay(), &cancel).await {
                        break;
                    }
                    continue;
                }
            },
        };
        let url = stream_url(
            &rest.config().ws_url,
            &config.path,
            &current.key,
            config.events.as_deref(),
        );
        let socket = match connect(&url, config.connect_timeout).await {
            Ok(socket) => socket,
            Err(failure) => {
                warn!(target: "binance::user_stream", "user stream connect failed: {failure}");
                // A refused upgrade most likely means the key is dead (-1125); get a new one.
                if !matches!(failure, ConnectFailure::Refused { .. }) {
                    key = Some(current);
                }
                if sleep_or_cancel(backoff.next_delay(), &cancel).await {
                    break;
                }
                continue;
            }
        };
        generation += 1;
        info!(target: "binance::user_stream", generation, "user stream connected");
        if events_tx
            .send(UserEvent::Connected { generation })
            .await
            .is_err()
        {
            break;
        }
        let connected_at = Instant::now();
        let (end, state) = session(&rest, &config, socket, current, &events_tx, &cancel).await;
        if connected_at.elapsed() >= config.backoff_max || end.planned {
            backoff.reset();
        }
        info!(target: "binance::user_stream", generation, reason = %end.reason, "user stream disconnected");
        if end.stop {
            // The key is left to expire, not closed: POST returns the account's one active key,
            // so another process on the same account (a second execution instance, `quantum
            // doctor`) may be listening on it, and a DELETE would cut its stream.
            break;
        }
        if events_tx
            .send(UserEvent::Disconnected {
                generation,
                reason: end.reason.clone(),
            })
            .await
            .is_err()
        {
            break;
        }
        key = if end.key_gone { None } else { state };
        if !end.planned && sleep_or_cancel(backoff.next_delay(), &cancel).await {
            break;
        }
    }
    debug!(target: "binance::user_stream", "user stream task finished");
}

/// Runs one connection until it ends. Returns why, and the key state to keep (if still valid).
async fn session(
    rest: &RestClient,
    config: &UserStreamConfig,
    mut socket: Socket,
    mut key: KeyState,
    events_tx: &mpsc::Sender<UserEvent>,
    cancel: &CancellationToken,
) -> (SessionEnd, Option<KeyState>) {
    let stale = tokio::time::sleep(config.stale_after);
    tokio::pin!(stale);
    let max_age = tokio::time::sleep(config.max_connection_age);
    tokio::pin!(max_age);
    loop {
        let keepalive = tokio::time::sleep_until(key.next_keepalive);
        // Biased: shutdown first, then timers, then frames, so a flood of frames cannot starve
        // the keepalive or hide staleness.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                close(socket).await;
                return (SessionEnd::stop("shutdown"), Some(key));
            }
            _ = &mut max_age => {
                close(socket).await;
                // A fresh POST before reconnecting: Binance returns the live key (extended) or a new one.
                let end = SessionEnd { planned: true, key_gone: true, ..SessionEnd::failure("connection reached its maximum age; reconnecting before Binance's 24 h cut") };
                return (end, None);
            }
            _ = &mut stale => {
                return (SessionEnd::failure(format!("no frame for {:?}; connection considered dead", config.stale_after)), Some(key));
            }
            _ = keepalive => {
                match rest.keepalive_listen_key(&key.key).await {
                    Ok(()) => {
                        debug!(target: "binance::user_stream", "listenKey kept alive");
                        key.next_keepalive = Instant::now() + config.keepalive_interval;
                    }
                    Err(e) if e.code() == Some(-1125) => {
                        close(socket).await;
                        let end = SessionEnd { key_gone: true, planned: true, ..SessionEnd::failure("listenKey no longer exists (-1125 on keepalive); rotating it") };
                        return (end, None);
                    }
                    Err(e) => {
                        // The key still has most of its hour; try again soon rather than give up.
                        warn!(target: "binance::user_stream", "listenKey keepalive failed, retrying in a minute: {e}");
                        key.next_keepalive = Instant::now() + config.keepalive_interval.min(Duration::from_secs(60));
                    }
                }
            }
            frame = socket.next() => {
                stale.as_mut().reset(Instant::now() + config.stale_after);
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => {
                        return (SessionEnd::failure(format!("server closed the connection: {close:?}")), Some(key));
                    }
                    // Pings are answered by tungstenite on the next read; pongs and binary
                    // frames carry nothing for us.
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return (SessionEnd::failure(format!("socket error: {e}")), Some(key)),
                    None => return (SessionEnd::failure("connection ended without a close frame"), Some(key)),
                };
                let event = match decode_user_frame(text.as_str()) {
                    Decoded::Event(UserData::ListenKeyExpired(expired)) => {
                        if !expired.listen_key.is_empty() && expired.listen_key != key.key {
                            debug!(target: "binance::user_stream", "listenKeyExpired for another key; ignored");
                            continue;
                        }
                        close(socket).await;
                        let end = SessionEnd { key_gone: true, planned: true, ..SessionEnd::failure("listenKeyExpired; rotating the key") };
                        return (end, None);
                    }
                    Decoded::Event(UserData::OrderTradeUpdate(e)) => UserEvent::OrderTradeUpdate(e),
                    Decoded::Event(UserData::TradeLite(e)) => UserEvent::TradeLite(e),
                    Decoded::Event(UserData::AccountUpdate(e)) => UserEvent::AccountUpdate(e),
                    Decoded::Event(UserData::AlgoUpdate(e)) => UserEvent::AlgoUpdate(e),
                    Decoded::Unknown(kind) => {
                        debug!(target: "binance::user_stream", "skipping user event of unhandled type {kind:?}");
                        continue;
                    }
                    Decoded::Invalid(why) => {
                        warn!(target: "binance::user_stream", "undecodable user frame ({why}): {}", text.as_str());
                        continue;
                    }
                };
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return (SessionEnd::stop("shutdown"), Some(key)),
                    sent = events_tx.send(event) => if sent.is_err() {
                        return (SessionEnd::stop("event receiver dropped"), Some(key));
                    },
                }
                // Time spent waiting for a slow consumer is not silence on the socket.
                stale.as_mut().reset(Instant::now() + config.stale_after);
            }
        }
    }
}

/// Builds the stream URL for `key`.
fn stream_url(base: &Url, path: &UserStreamPath, key: &str, events: Option<&[String]>) -> Url {
    let mut url = base.clone();
    match path {
        UserStreamPath::Query { path } => {
            url.set_path(path);
            let mut query = format!("listenKey={key}");
            if let Some(events) = events {
                // Event names are plain identifiers and '/' separates them, unescaped.
                query.push_str("&events=");
                query.push_str(&events.join("/"));
            }
            url.set_query(Some(&query));
        }
        UserStreamPath::Suffix { prefix } => {
            url.set_path(&format!("{}/{key}", prefix.trim_end_matches('/')));
            url.set_query(None);
        }
    }
    url
}

/// Sleeps unless cancelled first; true when cancelled.
async fn sleep_or_cancel(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let base = Url::parse("wss://fstream.binance.com").unwrap();
        assert_eq!(
            stream_url(&base, &UserStreamPath::default(), "abc", None).as_str(),
            "wss://fstream.binance.com/private/ws?listenKey=abc"
        );
        let events = [
            "ORDER_TRADE_UPDATE".to_string(),
            "listenKeyExpired".to_string(),
        ];
        assert_eq!(
            stream_url(&base, &UserStreamPath::default(), "abc", Some(&events)).as_str(),
            "wss://fstream.binance.com/private/ws?listenKey=abc&events=ORDER_TRADE_UPDATE/listenKeyExpired"
        );
        let suffix = UserStreamPath::Suffix {
            prefix: "/ws/".into(),
        };
        assert_eq!(
            stream_url(&base, &suffix, "abc", None).as_str(),
            "wss://fstream.binance.com/ws/abc"
        );
    }
}
