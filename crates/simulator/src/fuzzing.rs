//! The simulator's request surface without a socket, for the fuzz tests (`tests/it/fuzz.rs`)
//! and the cargo-fuzz target `sim_params` (issue 11): the request parameter parser, and the
//! whole router (REST endpoints and the control API) answering one request at a time. Not part
//! of the simulator's interface: hidden from its docs, and free to change with the fuzzers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::auth::Params;
use crate::config::SimConfig;
use crate::server::{self, Shared};

/// Parses a query string and a form body as the simulator does, then reads every parameter
/// back the ways its handlers do (raw, decimal, integer, boolean, symbol). Returns how many
/// parameters there were.
pub fn parse_params(query: &str, body: &str) -> usize {
    let params = Params::parse(query, body);
    let keys: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .chain(form_urlencoded::parse(body.as_bytes()))
        .map(|(k, _)| k.into_owned())
        .chain(
            [
                "symbol",
                "quantity",
                "price",
                "timestamp",
                "recvWindow",
                "limit",
                "side",
                "reduceOnly",
            ]
            .map(String::from),
        )
        .collect();
    for key in &keys {
        let _ = params.get(key);
        let _ = params.required(key);
        let _ = params.decimal(key);
        let _ = params.int(key);
        let _ = params.boolean(key);
    }
    let _ = params.symbol();
    keys.len()
}

/// A simulator's router with its exchange, answering requests in the calling task (no socket,
/// no tick loop). Drop it to throw the exchange away.
#[derive(Debug)]
pub struct Harness {
    shared: Arc<Shared>,
    router: Router,
}

/// A reply: HTTP status and body, or `None` for a connection dropped without a reply.
pub type Reply = Option<(u16, Vec<u8>)>;

impl Harness {
    /// A harness over `config` (its `listen` is not used).
    ///
    /// # Errors
    /// The configuration's error, as `simulator::spawn` would give it.
    pub fn new(config: SimConfig) -> Result<Harness, String> {
        let shared = Shared::new(config, CancellationToken::new())?;
        let router = server::app(Arc::clone(&shared));
        Ok(Harness { shared, router })
    }

    /// Sends one request: `method`, `path_and_query` (`/fapi/v1/order?symbol=..`), the API key
    /// header when `with_key`, and `body` as a form. Must run inside a Tokio runtime.
    pub async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        with_key: bool,
        body: &[u8],
    ) -> Result<Reply, String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("Content-Type", "application/x-www-form-urlencoded");
        if with_key {
            builder = builder.header("X-MBX-APIKEY", self.shared.config.api_key.as_str());
        }
        let request = builder
            .body(Body::from(body.to_vec()))
            .map_err(|e| format!("not a request: {e}"))?;
        Ok(server::oneshot(&self.router, request)
            .await
            .map(|(status, body)| (status.as_u16(), body.to_vec())))
    }

    /// `query` with a current `timestamp` and a valid `signature` appended, signed over
    /// `query` followed by `body` as Binance signs, so a fuzzed request passes authentication
    /// and reaches the exchange's own checks.
    pub fn sign(&self, query: &str, body: &str) -> String {
        let sep = if query.is_empty() { "" } else { "&" };
        let query = format!("{query}{sep}timestamp={}", self.shared.now_ms());
        let mut mac = Hmac::<Sha256>::new_from_slice(self.shared.config.api_secret.as_bytes())
            .expect("HMAC takes any key");
        mac.update(format!("{query}{body}").as_bytes());
        format!(
            "{query}&signature={}",
            hex::encode(mac.finalize().into_bytes())
        )
    }

    /// Stops the tasks the exchange started (fills in flight).
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}
