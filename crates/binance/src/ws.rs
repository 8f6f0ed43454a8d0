//! WebSocket plumbing shared by the user and market streams: connecting with a timeout, and the
//! capped exponential backoff between reconnects. Frames are read with `tokio-tungstenite`,
//! which queues the pong for a server ping and flushes it on the next read, so a stream task
//! that keeps reading answers pings without doing anything itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

/// A connected socket.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection attempt failed.
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    /// The handshake did not finish in time.
    Timeout,
    /// The server refused the upgrade with an HTTP reply (e.g. 400 -1125 for a dead listenKey).
    Refused { status: u16, body: String },
    /// Anything else (DNS, TCP, TLS).
    Other(String),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Timeout => f.write_str("connect timed out"),
            ConnectFailure::Refused { status, body } => {
                write!(f, "upgrade refused with HTTP {status}: {body}")
            }
            ConnectFailure::Other(e) => write!(f, "connect failed: {e}"),
        }
    }
}

/// Connects to `url`, giving up after `timeout`.
pub(crate) async fn connect(url: &Url, timeout: Duration) -> Result<Socket, ConnectFailure> {
    match tokio::time::timeout(timeout, tokio_tungstenite::connect_async(url.as_str())).await {
        Err(_) => Err(ConnectFailure::Timeout),
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(ConnectFailure::Refused {
                status: response.status().as_u16(),
                body,
            })
        }
        Ok(Err(e)) => Err(ConnectFailure::Other(e.to_string())),
    }
}

/// Limit on writing one frame (a SUBSCRIBE, a close). A peer that stops reading must not hang
/// the stream task.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `message`, failing after [`WRITE_TIMEOUT`].
pub(crate) async fn send(socket: &mut Socket, message: Message) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("write timed out after {WRITE_TIMEOUT:?}")),
    }
}

/// Closes the socket politely, giving up after [`WRITE_TIMEOUT`]; the connection is being
/// abandoned either way, so errors only matter for logs.
pub(crate) async fn close(mut socket: Socket) {
    if let Err(e) = send(&mut socket, Message::Close(None)).await {
        tracing::debug!(target: "binance::ws", "closing a websocket: {e}");
    }
}

/// Capped exponential backoff: `initial`, 2×, 4×, ... up to `max`, plus up to 10 % jitter taken
/// from the clock's sub-second nanoseconds so that many clients do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = base.mul_f64(f64::from(nanos % 100) / 1000.0);
        (base + jitter).min(self.max)
    }

    /// Starts over from `initial` (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        for (delay, base) in delays.iter().zip([100u64, 200, 400, 800, 1000, 1000]) {
            assert!(*delay >= Duration::from_millis(base), "{delay:?} < {base}");
            assert!(*delay <= Duration::from_millis(base * 11 / 10).min(Duration::from_secs(1)));
        }
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(111));
    }
}
