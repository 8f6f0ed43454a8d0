//! Market data streams: one combined-stream connection (`{ws_url}{path}?streams=a/b`, frames
//! `{"stream","data"}`) carrying mark prices and book tickers into an mpsc channel, with
//! SUBSCRIBE/UNSUBSCRIBE at runtime and reconnects with capped exponential backoff. The task
//! owns the set of subscribed streams, so a reconnect resubscribes to exactly what the caller
//! asked for.
//!
//! Binance routes streams by path since 2026: `@markPrice` is on `/market`, `@bookTicker` on
//! `/public`. One connection serves one route, so on Binance run one `MarketStream` per route
//! (the simulator serves every stream on every route). As with the user stream, a
//! [`MarketEvent::Disconnected`] means updates were missed; prices resume at the next
//! [`MarketEvent::Connected`].

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use crate::events::{decode_market_frame, BookTicker, Decoded, MarkPriceUpdate, MarketData};
use crate::ws::{close, connect, send, Backoff, Socket};

/// `<symbol>@markPrice@1s` (the symbol lower-cased, as Binance requires).
pub fn mark_price_stream(symbol: &str) -> String {
    format!("{}@markPrice@1s", symbol.to_ascii_lowercase())
}

/// `!markPrice@arr@1s`: all symbols' mark prices every second, in one stream.
pub const ALL_MARK_PRICES_STREAM: &str = "!markPrice@arr@1s";

/// `<symbol>@bookTicker`.
pub fn book_ticker_stream(symbol: &str) -> String {
    format!("{}@bookTicker", symbol.to_ascii_lowercase())
}

/// Settings of a market stream connection.
#[derive(Debug, Clone)]
pub struct MarketStreamConfig {
    /// Combined-stream path: `/market/stream` for mark prices, `/public/stream` for book tickers.
    pub path: String,
    /// Reconnect when no frame arrived for this long while something is subscribed.
    pub stale_after: Duration,
    /// Limit on one connection attempt.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Capacity of the event channel; a slow consumer slows reading rather than losing events.
    pub channel_capacity: usize,
}

impl Default for MarketStreamConfig {
    fn default() -> MarketStreamConfig {
        MarketStreamConfig {
            path: "/market/stream".into(),
            stale_after: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            channel_capacity: 4096,
        }
    }
}

/// What comes out of a market stream.
#[derive(Debug, Clone, PartialEq)]
pub enum MarketEvent {
    /// Connected (generation counts from 1), subscribed to every requested stream.
    Connected {
        /// Connection number.
        generation: u64,
    },
    /// The connection ended; updates are missed until the next `Connected`.
    Disconnected {
        /// Which connection ended.
        generation: u64,
        /// Why, in words.
        reason: String,
    },
    /// A mark price update.
    MarkPrice(MarkPriceUpdate),
    /// A best bid/ask update.
    BookTicker(BookTicker),
    /// Every symbol's mark price (`!markPrice@arr@1s`).
    MarkPrices(Vec<MarkPriceUpdate>),
}

/// The market stream task has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the market stream has stopped")]
pub struct StreamClosed;

enum Command {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
}

/// A running market stream. The task stops on [`MarketStream::shutdown`] or when the event
/// receiver is dropped; dropping only this handle keeps the events flowing.
#[derive(Debug)]
pub struct MarketStream {
    /// Subscription changes for the task; small, since changes are rare.
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl MarketStream {
    /// Starts a connection to `{ws_url}{config.path}` subscribed to `streams`.
    pub fn spawn(
        ws_url: Url,
        streams: impl IntoIterator<Item = String>,
        config: MarketStreamConfig,
    ) -> (MarketStream, mpsc::Receiver<MarketEvent>) {
        let (events_tx, events_rx) = mpsc::channel(config.channel_capacity.max(1));
        let (commands_tx, commands_rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let streams = streams.into_iter().collect();
        let task = tokio::spawn(run(
            ws_url,
            streams,
            config,
            events_tx,
            commands_rx,
            cancel.clone(),
        ));
        (
            MarketStream {
                commands: commands_tx,
                cancel,
                task,
            },
            events_rx,
        )
    }

    /// Adds streams (sent as SUBSCRIBE now, and kept across reconnects).
    ///
    /// # Errors
    /// [`StreamClosed`] when the task has stopped.
    pub async fn subscribe(&self, streams: Vec<String>) -> Result<(), StreamClosed> {
        self.commands
            .send(Command::Subscribe(streams))
            .await
            .map_err(|_| StreamClosed)
    }

    /// Removes streams.
    ///
    /// # Errors
    /// [`StreamClosed`] when the task has stopped.
    pub async fn unsubscribe(&self, streams: Vec<String>) -> Result<(), StreamClosed> {
        self.commands
            .send(Command::Unsubscribe(streams))
            .await
            .map_err(|_| StreamClosed)
    }

    /// Stops the task and closes the socket.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            warn!(target: "binance::market_stream", "market stream task ended abnormally: {e}");
        }
    }
}

/// Task state that survives reconnects.
struct State {
    streams: BTreeSet<String>,
    next_request_id: u64,
    /// False once the handle (the command sender) is dropped.
    commands_open: bool,
}

async fn run(
    ws_url: Url,
    streams: BTreeSet<String>,
    config: MarketStreamConfig,
    events_tx: mpsc::Sender<MarketEvent>,
    mut commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) {
    let mut state = State {
        streams,
        next_request_id: 1,
        commands_open: true,
    };
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut generation = 0u64;
    loop {
        if cancel.is_cancelled() || events_tx.is_closed() {
            break;
        }
        let url = combined_url(&ws_url, &config.path, &state.streams);
        let socket = match connect(&url, config.connect_timeout).await {
            Ok(socket) => socket,
            Err(failure) => {
                warn!(target: "binance::market_stream", "market stream connect failed: {failure}");
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        generation += 1;
        info!(target: "binance::market_stream", generation, "market stream connected");
        if events_tx
            .send(MarketEvent::Connected { generation })
            .await
            .is_err()
        {
            break;
        }
        let connected_at = Instant::now();
        let outcome = session(
            socket,
            &config,
            &mut state,
            &events_tx,
            &mut commands,
            &cancel,
        )
        .await;
        let reason = match outcome {
            Outcome::Stop => break,
            Outcome::Reconnect(reason) => reason,
        };
        info!(target: "binance::market_stream", generation, %reason, "market stream disconnected");
        if events_tx
            .send(MarketEvent::Disconnected { generation, reason })
            .await
            .is_err()
        {
            break;
        }
        if connected_at.elapsed() >= config.backoff_max {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    debug!(target: "binance::market_stream", "market stream task finished");
}

enum Outcome {
    Stop,
    Reconnect(String),
}

async fn session(
    mut socket: Socket,
    config: &MarketStreamConfig,
    state: &mut State,
    events_tx: &mpsc::Sender<MarketEvent>,
    commands: &mut mpsc::Receiver<Command>,
    cancel: &CancellationToken,
) -> Outcome {
    let stale = tokio::time::sleep(config.stale_after);
    tokio::pin!(stale);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                close(socket).await;
                return Outcome::Stop;
            }
            _ = &mut stale => {
                if state.streams.is_empty() {
                    // Nothing subscribed, so silence is expected.
                    stale.as_mut().reset(Instant::now() + config.stale_after);
                    continue;
                }
                return Outcome::Reconnect(format!("no frame for {:?}", config.stale_after));
            }
            command = commands.recv(), if state.commands_open => {
                let Some(command) = command else {
                    // The handle is gone: nobody can change subscriptions any more, but events
                    // still flow until the receiver is dropped.
                    state.commands_open = false;
                    continue;
                };
                let (method, names) = match command {
                    Command::Subscribe(names) => {
                        let names: Vec<String> = names.into_iter().filter(|n| state.streams.insert(n.clone())).collect();
                        ("SUBSCRIBE", names)
                    }
                    Command::Unsubscribe(names) => {
                        let names: Vec<String> = names.into_iter().filter(|n| state.streams.remove(n)).collect();
                        ("UNSUBSCRIBE", names)
                    }
                };
                if names.is_empty() {
                    continue;
                }
                let id = state.next_request_id;
                state.next_request_id += 1;
                let request = serde_json::json!({ "method": method, "params": names, "id": id });
                if let Err(e) = send(&mut socket, Message::text(request.to_string())).await {
                    // The set is already updated, so the reconnect URL carries the change.
                    return Outcome::Reconnect(format!("cannot send {method}: {e}"));
                }
            }
            frame = socket.next() => {
                stale.as_mut().reset(Instant::now() + config.stale_after);
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(close))) => return Outcome::Reconnect(format!("server closed the connection: {close:?}")),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Outcome::Reconnect(format!("socket error: {e}")),
                    None => return Outcome::Reconnect("connection ended without a close frame".into()),
                };
                let event = match decode_market_frame(text.as_str()) {
                    Decoded::Event(MarketData::MarkPrice(e)) => MarketEvent::MarkPrice(e),
                    Decoded::Event(MarketData::BookTicker(e)) => MarketEvent::BookTicker(e),
                    Decoded::Event(MarketData::MarkPrices(e)) => MarketEvent::MarkPrices(e),
                    Decoded::Unknown(kind) => {
                        debug!(target: "binance::market_stream", "skipping market frame {kind:?}: {}", text.as_str());
                        continue;
                    }
                    Decoded::Invalid(why) => {
                        warn!(target: "binance::market_stream", "undecodable market frame ({why}): {}", text.as_str());
                        continue;
                    }
                };
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Outcome::Stop,
                    sent = events_tx.send(event) => if sent.is_err() {
                        return Outcome::Stop;
                    },
                }
                // Time spent waiting for a slow consumer is not silence on the socket.
                stale.as_mut().reset(Instant::now() + config.stale_after);
            }
        }
    }
}

fn combined_url(base: &Url, path: &str, streams: &BTreeSet<String>) -> Url {
    let mut url = base.clone();
    url.set_path(path);
    // Stream names contain '@' and '!', which Binance expects unescaped.
    let joined = streams.iter().cloned().collect::<Vec<_>>().join("/");
    url.set_query(Some(&format!("streams={joined}")));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_and_url() {
        assert_eq!(mark_price_stream("BTCUSDT"), "btcusdt@markPrice@1s");
        assert_eq!(book_ticker_stream("BTCUSDT"), "btcusdt@bookTicker");
        let streams: BTreeSet<String> =
            [mark_price_stream("ETHUSDT"), book_ticker_stream("ETHUSDT")]
                .into_iter()
                .collect();
        let url = combined_url(
            &Url::parse("wss://fstream.binance.com").unwrap(),
            "/market/stream",
            &streams,
        );
        assert_eq!(
            url.as_str(),
            "wss://fstream.binance.com/market/stream?streams=ethusdt@bookTicker/ethusdt@markPrice@1s"
        );
    }
}
