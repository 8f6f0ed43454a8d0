//! A local exchange that speaks Binance USDⓈ-M Futures: the REST paths, JSON shapes, signatures,
//! error codes and rate-limit headers of `fapi`, the market and user-data WebSocket streams, and
//! the behaviour that matters most to quantum: a MARKET order is accepted as `NEW` with zeros and
//! filled later, asynchronously. Fault knobs reproduce what real exchanges do on bad days.
//!
//! This crate shares no wire types with quantum's Binance client; both are checked against the
//! JSON examples from Binance's documentation in `testdata/binance/`.
//!
//! Layout: [`config`] (settings), `symbols` and `market` (instruments, prices, book), `model`
//! (orders, positions, trades), `exchange` (the rules, synchronous), `wire` (JSON shapes),
//! `auth` and `ratelimit` (Binance's request checks), `faults` (knobs), `server` and `ws` (HTTP
//! and WebSocket streams), `ws_api` (the WebSocket API, `/ws-fapi/v1`).

mod auth;
pub mod config;
mod error;
mod exchange;
pub mod faults;
#[doc(hidden)]
pub mod fuzzing;
mod market;
mod model;
mod ratelimit;
mod server;
mod symbols;
mod wire;
mod ws;
mod ws_api;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{
    KeyScheme, PublicApiKey, SimConfig, DEFAULT_API_KEY, DEFAULT_API_SECRET,
    DEFAULT_ED25519_API_KEY, DEFAULT_RSA_API_KEY,
};
pub use error::ApiError;
pub use faults::Faults;

/// How soon after a 429 a request still counts as already in flight (not towards a ban).
pub const IN_FLIGHT_GRACE: std::time::Duration =
    std::time::Duration::from_millis(ratelimit::IN_FLIGHT_GRACE_MS as u64);

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// A running simulator. Dropping the handle does not stop it; call [`SimHandle::shutdown`].
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
}

impl SimHandle {
    /// The bound address (the real port when the config asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the REST base URL (paths start with `/fapi/`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT`, the WebSocket base URL (paths `/ws/..`, `/stream`, `/private/..`, and
    /// the WebSocket API at `/ws-fapi/v1`).
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Symbols the simulator lists, in exchangeInfo order.
    pub fn symbols(&self) -> Vec<String> {
        self.shared
            .with_exchange(|ex, _| ex.markets.keys().cloned().collect())
    }

    /// Stops accepting, closes every connection and waits for the simulator's tasks to end.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

/// Binds `config.listen` and starts serving in background tasks.
pub async fn spawn(config: SimConfig) -> Result<SimHandle, StartError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let shared =
        server::Shared::new(config, CancellationToken::new()).map_err(StartError::Config)?;
    shared.with_exchange(|ex, now| ex.start(now));
    shared
        .tasks
        .spawn(server::accept_loop(listener, Arc::clone(&shared)));
    shared.tasks.spawn(server::tick_loop(Arc::clone(&shared)));
    shared.tasks.spawn(server::depth_loop(Arc::clone(&shared)));
    Ok(SimHandle { addr, shared })
}

/// Runs the simulator until `shutdown` completes, then stops it cleanly. `on_ready` is called
/// with the handle once it is listening (the CLI prints the address and keys there).
pub async fn run(
    config: SimConfig,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&SimHandle),
) -> Result<(), StartError> {
    let handle = spawn(config).await?;
    on_ready(&handle);
    shutdown.await;
    handle.shutdown().await;
    Ok(())
}
