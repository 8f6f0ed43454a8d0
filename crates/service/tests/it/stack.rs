//! The test stack: simulator, Redis, the execution service, and helpers that read what each of
//! them holds. The simulator is read with hand-signed requests, not with quantum's Binance
//! client, so an assertion about the exchange does not depend on the code under test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bus::{keys, Bus};
use hmac::{Hmac, Mac};
use serde_json::Value;
use service::Settings;
use sha2::Sha256;
use simulator::{SimConfig, SimHandle};
use testkit::RedisServer;

pub struct Stack {
    pub sim: SimHandle,
    pub redis: RedisServer,
    pub bus: Bus,
    service: Option<service::Running>,
    pub monitor: Option<(
        service::Running,
        std::sync::Arc<service::exit_monitor::Counters>,
    )>,
    pub fill_timeout: Duration,
    http: reqwest::Client,
}

pub struct Options {
    pub fill_delay: Duration,
    pub fill_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fill_delay: Duration::from_millis(100),
            fill_timeout: Duration::from_secs(10),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Stack {
    pub async fn start(options: Options) -> Stack {
        let sim = simulator::spawn(SimConfig {
            fill_delay: options.fill_delay,
            ..SimConfig::default()
        })
        .await
        .expect("simulator starts");
        let redis = RedisServer::start();
        let bus = Bus::connect(&bus::Config {
            url: redis.url(),
            ..bus::Config::default()
        })
        .await
        .expect("redis");
        let mut stack = Stack {
            monitor: None,
            sim,
            redis,
            bus,
            service: None,
            fill_timeout: options.fill_timeout,
            http: reqwest::Client::new(),
        };
        stack.start_service().await;
        stack
    }

    pub fn settings(&self) -> Settings {
        let mut settings = Settings::custom(
            &self.sim.base_url(),
            &self.sim.ws_url(),
            &self.redis.url(),
            simulator::DEFAULT_API_KEY,
            simulator::DEFAULT_API_SECRET,
        )
        .expect("settings");
        settings.execution.fill_timeout = self.fill_timeout;
        settings.execution.consumer_name = "test-consumer".into();
        settings.execution.poll_interval = Duration::from_millis(500);
        settings.execution.claim_idle = Duration::from_millis(500);
        settings.execution.cancel_window = Duration::from_secs(10);
        settings
    }

    /// Starts (or restarts) the execution service.
    pub async fn start_service(&mut self) {
        self.start_service_as("test-consumer").await;
    }

    /// Starts the execution service under another consumer name (another instance).
    pub async fn start_service_as(&mut self, consumer: &str) {
        let mut settings = self.settings();
        settings.execution.consumer_name = consumer.to_string();
        self.service = Some(service::start(settings).await.expect("the service starts"));
    }

    /// Restarts the execution service with adjusted settings.
    pub async fn restart_service_with(&mut self, adjust: impl FnOnce(&mut Settings)) {
        if let Some(running) = self.service.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), running.stop()).await;
        }
        let mut settings = self.settings();
        adjust(&mut settings);
        self.service = Some(service::start(settings).await.expect("the service starts"));
    }

    /// Starts the exit monitor with adjusted settings.
    pub async fn start_monitor_with(&mut self, adjust: impl FnOnce(&mut Settings)) {
        let mut settings = self.settings();
        adjust(&mut settings);
        self.monitor = Some(
            service::exit_monitor::start(settings)
                .await
                .expect("the monitor starts"),
        );
    }

    /// Starts the exit monitor.
    pub async fn start_monitor(&mut self) {
        self.monitor = Some(
            service::exit_monitor::start(self.settings())
                .await
                .expect("the monitor starts"),
        );
    }

    /// Kills the exit monitor as a crash would.
    pub async fn kill_monitor(&mut self) {
        if let Some((monitor, _)) = self.monitor.take() {
            monitor.kill().await;
        }
    }

    /// Lots the monitor has opened so far.
    pub fn lots_opened(&self) -> u64 {
        self.monitor.as_ref().map_or(0, |m| {
            m.1.lots_opened.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// The simulator's position amount for `symbol` (one-way mode).
    pub async fn position_amt(&self, symbol: &str) -> rust_decimal::Decimal {
        let rows = self
            .signed_get("/fapi/v2/positionRisk", &format!("symbol={symbol}"))
            .await;
        rows[0]["positionAmt"]
            .as_str()
            .expect("positionAmt")
            .parse()
            .unwrap()
    }

    /// Kills the service as a crash would: no shutdown, no acks for what it was doing.
    pub async fn kill_service(&mut self) {
        if let Some(running) = self.service.take() {
            running.kill().await;
        }
    }

    pub async fn stop(mut self) {
        if let Some((monitor, _)) = self.monitor.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), monitor.stop()).await;
        }
        if let Some(running) = self.service.take() {
            let _ = tokio::time::timeout(Duration::from_secs(20), running.stop()).await;
        }
        self.sim.shutdown().await;
    }

    pub async fn publish(&self, intent: &Value) {
        self.bus
            .publish(keys::TRADE_INTENT, &intent.to_string())
            .await
            .expect("publish intent");
    }

    pub async fn publish_raw(&self, text: &str) {
        self.bus
            .publish(keys::TRADE_INTENT, text)
            .await
            .expect("publish raw");
    }

    pub async fn results(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .bus
            .latest(keys::TRADE_EXECUTION_RESULT, 1000)
            .await
            .expect("results")
            .into_iter()
            .filter_map(|e| e.payload.ok())
            // Tests that inject garbage into the results stream expect it to be skipped here.
            .filter_map(|p| serde_json::from_str(&p).ok())
            .collect();
        out.reverse();
        out
    }

    pub async fn results_for(&self, intent_id: &str) -> Vec<Value> {
        self.results()
            .await
            .into_iter()
            .filter(|r| r["intent_id"] == intent_id)
            .collect()
    }

    /// Waits for the intent's result and returns it.
    pub async fn result(&self, intent_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + self.fill_timeout + Duration::from_secs(20);
        loop {
            if let Some(r) = self.results_for(intent_id).await.into_iter().next() {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no result for {intent_id}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn dead_letters(&self) -> Vec<Value> {
        self.bus
            .latest(keys::DEAD_LETTER, 1000)
            .await
            .expect("dead letters")
            .into_iter()
            .filter_map(|e| e.payload.ok())
            .map(|p| serde_json::from_str(&p).expect("dead letters are JSON"))
            .collect()
    }

    /// Places a MARKET order directly on the simulator, as a person would by hand.
    pub async fn place_on_exchange(&self, symbol: &str, side: &str, qty: &str) -> Value {
        self.signed_post_order(&format!(
            "symbol={symbol}&side={side}&type=MARKET&quantity={qty}&newOrderRespType=RESULT"
        ))
        .await
    }

    /// `POST /fapi/v1/order` with `params`, signed with the simulator's default key.
    async fn signed_post_order(&self, params: &str) -> Value {
        self.signed_post("/fapi/v1/order", params).await
    }

    /// Switches the simulated account to hedge mode (`dualSidePosition=true`); the services
    /// read the mode at start.
    pub async fn hedge_mode(&self) {
        let reply = self
            .signed_post("/fapi/v1/positionSide/dual", "dualSidePosition=true")
            .await;
        assert_eq!(reply["code"], 200, "hedge mode: {reply}");
    }

    /// The simulator's position amount for `symbol` on a hedge-mode `side` (`LONG`/`SHORT`).
    pub async fn position_amt_on(&self, symbol: &str, side: &str) -> rust_decimal::Decimal {
        let rows = self
            .signed_get("/fapi/v2/positionRisk", &format!("symbol={symbol}"))
            .await;
        let row = rows
            .as_array()
            .expect("positionRisk rows")
            .iter()
            .find(|r| r["positionSide"] == side)
            .unwrap_or_else(|| panic!("no {side} row: {rows}"));
        row["positionAmt"]
            .as_str()
            .expect("positionAmt")
            .parse()
            .unwrap()
    }

    /// A signed `POST` to the simulator with `params`, with the simulator's default key.
    async fn signed_post(&self, path: &str, params: &str) -> Value {
        let payload = format!("{params}&timestamp={}", now_ms());
        let mut mac =
            Hmac::<Sha256>::new_from_slice(simulator::DEFAULT_API_SECRET.as_bytes()).unwrap();
        mac.update(payload.as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        self.http
            .post(format!("{}{path}", self.sim.base_url()))
            .header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("{payload}&signature={sig}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn signed_get(&self, path: &str, query: &str) -> Value {
        let payload = format!("{query}&timestamp={}&recvWindow=60000", now_ms());
        let mut mac =
            Hmac::<Sha256>::new_from_slice(simulator::DEFAULT_API_SECRET.as_bytes()).unwrap();
        mac.update(payload.as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        self.http
            .get(format!(
                "{}{path}?{payload}&signature={sig}",
                self.sim.base_url()
            ))
            .header("X-MBX-APIKEY", simulator::DEFAULT_API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A resting GTC LIMIT order placed on the exchange outside quantum.
    pub async fn place_limit_on_exchange(
        &self,
        symbol: &str,
        side: &str,
        qty: &str,
        price: &str,
    ) -> Value {
        self.signed_post_order(&format!(
            "symbol={symbol}&side={side}&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}"
        ))
        .await
    }

    /// The simulator's open (non-conditional) orders of `symbol`.
    pub async fn open_orders(&self, symbol: &str) -> Vec<Value> {
        match self
            .signed_get("/fapi/v1/openOrders", &format!("symbol={symbol}"))
            .await
        {
            Value::Array(orders) => orders,
            other => panic!("openOrders: {other}"),
        }
    }

    /// The simulator's open algo (conditional) orders of `symbol`.
    pub async fn open_algo_orders(&self, symbol: &str) -> Vec<Value> {
        match self
            .signed_get("/fapi/v1/openAlgoOrders", &format!("symbol={symbol}"))
            .await
        {
            Value::Array(orders) => orders,
            other => panic!("openAlgoOrders: {other}"),
        }
    }

    /// The simulator's own list of orders of `symbol`.
    pub async fn exchange_orders(&self, symbol: &str) -> Vec<Value> {
        match self
            .signed_get("/fapi/v1/allOrders", &format!("symbol={symbol}"))
            .await
        {
            Value::Array(orders) => orders,
            other => panic!("allOrders: {other}"),
        }
    }

    /// Requests the simulator has received, by `METHOD path`.
    pub async fn sim_requests(&self) -> std::collections::BTreeMap<String, u64> {
        self.http
            .get(format!("{}/sim/v1/requests", self.sim.base_url()))
            .send()
            .await
            .expect("sim requests")
            .json()
            .await
            .expect("sim requests JSON")
    }

    pub async fn faults(&self, body: Value) {
        let reply = self
            .http
            .post(format!("{}/sim/v1/faults", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(reply.status().is_success(), "faults {body}");
    }

    /// Pins a symbol's price on the simulator (its random walk pauses).
    pub async fn pin(&self, symbol: &str, price: &str) {
        let body = serde_json::json!({"symbol": symbol, "price": price});
        let reply = self
            .http
            .post(format!("{}/sim/v1/price", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(reply.status().is_success(), "pin {symbol} {price}");
    }

    /// Waits until the simulator lists `n` orders for `symbol`.
    pub async fn wait_orders(&self, symbol: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let orders = self.exchange_orders(symbol).await;
            if orders.len() >= n {
                return orders;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{symbol}: {} orders, expected {n}",
                orders.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
