//! Test helpers: a simulator on port 0 with a client pointed at it, the simulator's control API
//! (faults, pinned prices), and a poll-until helper. The control API is called with plain
//! reqwest because it is not part of Binance and the client must not know it.

use std::future::Future;
use std::time::Duration;

use binance::{Config, RestClient};
use simulator::{SimConfig, SimHandle};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A simulator with a short fill delay (so ACK and fill are visibly separate) and a client.
pub async fn start() -> (SimHandle, RestClient) {
    start_with(SimConfig {
        fill_delay: Duration::from_millis(100),
        tick_interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
}

/// A simulator with `config` and a client for it.
pub async fn start_with(config: SimConfig) -> (SimHandle, RestClient) {
    let sim = simulator::spawn(config).await.expect("simulator starts");
    let client = client_for(&sim);
    (sim, client)
}

/// A fresh client (its own clock offset, governor and cache) for `sim`.
pub fn client_for(sim: &SimHandle) -> RestClient {
    let mut config = Config::custom(
        &sim.base_url(),
        &sim.ws_url(),
        simulator::DEFAULT_API_KEY,
        simulator::DEFAULT_API_SECRET,
    )
    .expect("valid URLs");
    config.request_timeout = Duration::from_secs(5);
    RestClient::new(config).expect("client builds")
}

/// `POST /sim/v1/faults` with `body`.
pub async fn faults(sim: &SimHandle, body: serde_json::Value) {
    control(sim, "/sim/v1/faults", body).await;
}

/// Pins `symbol`'s price.
pub async fn pin_price(sim: &SimHandle, symbol: &str, price: &str) {
    control(
        sim,
        "/sim/v1/price",
        serde_json::json!({ "symbol": symbol, "price": price }),
    )
    .await;
}

async fn control(sim: &SimHandle, path: &str, body: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .json(&body)
        .timeout(WAIT)
        .send()
        .await
        .expect("control API answers");
    assert!(
        response.status().is_success(),
        "control call {path} {body} failed: {}",
        response.status()
    );
}

/// Polls `probe` every 50 ms until it returns `Some`, failing the test after `WAIT`.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client order id unique within the test binary.
pub fn client_id(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("it-{tag}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The next event that `pick` accepts, skipping others; fails after `WAIT`.
pub async fn next_where<E, T>(
    events: &mut tokio::sync::mpsc::Receiver<E>,
    what: &str,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|| panic!("stream ended while waiting for {what}"));
        if let Some(found) = pick(&event) {
            return found;
        }
    }
}
