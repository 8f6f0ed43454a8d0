//! The HTTP side: one accept loop that can drop a connection mid-request (the
//! `drop_order_requests` and `drop_order_responses` faults), the REST route table with Binance's
//! security types and weights, the order of checks every request goes through (IP ban, weight,
//! injected 429s, authentication, order counts), the control API under `/sim/v1/`, and the tasks
//! that move time forward (price ticks, asynchronous fills).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::{parse_decimal, Credentials, Params, Security};
use crate::config::SimConfig;
use crate::error::ApiError;
use crate::exchange::{Exchange, FillStep, ModifyRequest, Outgoing, PriceKline};
use crate::faults::{Faults, FaultsUpdate};
use crate::ratelimit::{
    Admission, Exceeded, RateLimits, Usage, ORDER_LIMIT_10S, ORDER_LIMIT_1M, WEIGHT_LIMIT_1M,
};
use crate::wire::OrderShape;
use crate::ws;

/// Largest request body accepted; Binance requests are small forms.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Capacity of the event fan-out. A WebSocket that falls this far behind is disconnected, as
/// Binance drops slow consumers, and its client must reconnect and reconcile.
const EVENT_CHANNEL_CAPACITY: usize = 8192;

/// State shared by every connection and task.
pub(crate) struct Shared {
    /// The exchange itself. A std mutex: it is never held across an await, and every critical
    /// section is a short computation.
    exchange: Mutex<Exchange>,
    limits: Mutex<RateLimits>,
    /// Requests received, by `METHOD path` of a known endpoint (`GET /sim/v1/requests`), so a
    /// test or a benchmark can count what an operation cost the exchange.
    requests: Mutex<std::collections::BTreeMap<String, u64>>,
    pub(crate) credentials: Credentials,
    pub(crate) config: SimConfig,
    /// Every stream event, to every WebSocket connection, which filters what it subscribed to.
    pub(crate) events: broadcast::Sender<Arc<Outgoing>>,
    /// Woken after every exchange change, for `RESULT` replies waiting on a final state.
    order_changed: Notify,
    /// Woken when fault knobs change, for fills parked by `never_fill`.
    faults_changed: Notify,
    /// Cancelled at shutdown; every task and connection watches it.
    pub(crate) shutdown: CancellationToken,
    /// Tracks spawned tasks so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        config: SimConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Shared>, String> {
        let exchange = Exchange::new(&config)?;
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        Ok(Arc::new(Shared {
            exchange: Mutex::new(exchange),
            limits: Mutex::new(RateLimits::default()),
            requests: Mutex::new(std::collections::BTreeMap::new()),
            credentials: Credentials::from_config(&config)?,
            config,
            events,
            order_changed: Notify::new(),
            faults_changed: Notify::new(),
            shutdown,
            tasks: TaskTracker::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Exchange> {
        // A panic while holding the lock would be a simulator bug; keep serving with the state
        // as it is rather than poisoning every later request.
        self.exchange.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server clock in ms, including the `clock_skew_ms` fault.
    pub(crate) fn now_ms(&self) -> i64 {
        let skew = self.lock().faults.clock_skew_ms;
        wall_ms() + skew
    }

    /// Runs `f` on the exchange, then publishes what it queued and starts fills it asked for.
    pub(crate) fn with_exchange<T>(self: &Arc<Self>, f: impl FnOnce(&mut Exchange, i64) -> T) -> T {
        let (out, events, to_fill) = {
            let mut exchange = self.lock();
            let now = wall_ms() + exchange.faults.clock_skew_ms;
            let out = f(&mut exchange, now);
            (out, exchange.drain_outbox(), exchange.drain_to_fill())
        };
        for event in events {
            // No receivers is fine: nobody is subscribed yet.
            let _ = self.events.send(Arc::new(event));
        }
        for order_id in to_fill {
            self.spawn_filler(order_id);
        }
        self.order_changed.notify_waiters();
        out
    }

    /// Counts one request under `key` (`METHOD path` for REST, `WS <method>` for the WebSocket
    /// API), for `GET /sim/v1/requests`.
    pub(crate) fn count_request(&self, key: String) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// The depth timer's work: the depth streams that are due, published. Not
    /// [`Shared::with_exchange`], which would also wake every waiting `RESULT` reply 20 times a
    /// second for nothing: no order changes here.
    fn publish_depth(&self) {
        let events = {
            let mut exchange = self.lock();
            if !exchange.has_depth_streams() {
                return;
            }
            let now = wall_ms() + exchange.faults.clock_skew_ms;
            exchange.publish_depth(now);
            exchange.drain_outbox()
        };
        for event in events {
            let _ = self.events.send(Arc::new(event));
        }
    }

    pub(crate) fn limits(&self) -> MutexGuard<'_, RateLimits> {
        // As for the exchange: a panic while counting must not stop the counting.
        self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills a taker order in batches after the configured delay. The delay is read at each step,
    /// so a test can change it while orders are in flight.
    fn spawn_filler(self: &Arc<Self>, order_id: i64) {
        let shared = Arc::clone(self);
        self.tasks.spawn(async move {
            loop {
                let delay = Duration::from_millis(shared.faults().fill_delay_ms);
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                match shared.with_exchange(|ex, now| ex.fill_batch(order_id, now)) {
                    FillStep::Done => return,
                    FillStep::Continue => {}
                    FillStep::Parked => {
                        // Wait for a faults change; the timeout covers a change that raced this wait.
                        tokio::select! {
                            _ = shared.shutdown.cancelled() => return,
                            _ = shared.faults_changed.notified() => {}
                            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        }
                    }
                }
            }
        });
    }

    /// For `newOrderRespType=RESULT`: waits until the order is final or has stopped taking liquidity
    /// (a LIMIT order that rests answers at once, `NEW`), or until `result_wait` has passed.
    async fn wait_final(self: &Arc<Self>, order_id: i64) -> Value {
        let wait = Duration::from_millis(self.faults().result_wait_ms);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.order_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let exchange = self.lock();
                let order = exchange.order_by_id(order_id).expect("placed order exists");
                if !order.is_open()
                    || !order.taker_pending
                    || tokio::time::Instant::now() >= deadline
                {
                    return exchange.order_json(order, OrderShape::Reply);
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Marks the connection a request came on, so a handler can drop it without replying.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionKill(CancellationToken);

/// The client's address, for the IP named in a ban message. The ban itself is not keyed by it:
/// every client counts as the one simulated IP.
#[derive(Clone, Copy, Debug)]
struct PeerAddr(SocketAddr);

/// Builds the router (without a socket, so tests can call it directly).
pub(crate) fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/sim/v1/price", post(control_price).fallback(wrong_method))
        .route(
            "/sim/v1/faults",
            get(get_faults).post(post_faults).fallback(wrong_method),
        )
        .route("/sim/v1/requests", get(get_requests).fallback(wrong_method))
        .merge(ws::routes())
        .merge(crate::ws_api::routes())
        .fallback(any(dispatch))
        .with_state(shared)
}

/// One request through the router without a socket (the fuzz harness, [`crate::fuzzing`]): the
/// reply's status and body, or `None` when a handler dropped the connection (the
/// `drop_order_*` faults) instead of replying.
pub(crate) async fn oneshot(router: &Router, mut request: Request) -> Option<(StatusCode, Bytes)> {
    use tower::ServiceExt;
    let kill = CancellationToken::new();
    request
        .extensions_mut()
        .insert(ConnectionKill(kill.clone()));
    let response = tokio::select! {
        response = router.clone().oneshot(request) => match response {
            Ok(response) => response,
            Err(never) => match never {},
        },
        _ = kill.cancelled() => return None,
    };
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .ok()?;
    Some((status, body))
}

/// A control-API path called with a method it does not take: the same 404 JSON as any unknown
/// REST path and method (axum's own 405 has an empty body; found by the `sim_params` fuzzer).
async fn wrong_method(request: Request) -> Response {
    let msg = format!(
        "Path {}, Method {} is invalid",
        request.uri().path(),
        request.method()
    );
    ApiError::new(StatusCode::NOT_FOUND, -5000, msg).into_response()
}

/// Accepts connections until shutdown. Each connection is served by hyper directly (rather than
/// `axum::serve`) so a handler can close it without a reply.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let router = app(Arc::clone(&shared));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let shutdown = shared.shutdown.clone();
        shared
            .tasks
            .spawn(serve_connection(stream, peer, router, shutdown));
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;
    let _ = stream.set_nodelay(true);
    let kill = CancellationToken::new();
    let kill_for_requests = kill.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request = request.map(Body::new);
            request
                .extensions_mut()
                .insert(ConnectionKill(kill_for_requests.clone()));
            request.extensions_mut().insert(PeerAddr(peer));
            router.clone().oneshot(request)
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        _ = connection => {}
        // Dropping the connection future closes the socket with no reply written.
        _ = kill.cancelled() => {}
        _ = shutdown.cancelled() => {}
    }
}

/// How often the depth timer looks for book-depth streams that are due. Every speed (100, 250,
/// 500 ms) is a multiple of it, so a stream sends within this much of its slot.
const DEPTH_CHECK: Duration = Duration::from_millis(50);

/// Sends the book-depth streams at their own speeds until shutdown. They have a timer of their own
/// because their speeds (100 to 500 ms) are shorter than the default price tick; it costs one
/// uncontended lock every [`DEPTH_CHECK`] when nobody watches a depth stream.
pub(crate) async fn depth_loop(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(DEPTH_CHECK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = interval.tick() => shared.publish_depth(),
        }
    }
}

/// Advances prices every tick until shutdown.
pub(crate) async fn tick_loop(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(shared.config.tick_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; prices start moving one interval after start.
    interval.tick().await;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = interval.tick() => shared.with_exchange(|ex, now| ex.tick(now)),
        }
    }
}

// ----- REST dispatch -------------------------------------------------------------------------------

/// The REST endpoints, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Ping,
    Time,
    Ticker24hr,
    Klines,
    LeverageBracket,
    ExchangeInfo,
    PremiumIndex,
    TickerPrice,
    BookTicker,
    Depth,
    NewOrder,
    QueryOrder,
    CancelOrder,
    AllOrders,
    OpenOrders,
    OpenOrder,
    CancelAllOpenOrders,
    UserTrades,
    Leverage,
    MarginType,
    GetDualSide,
    SymbolConfig,
    AccountConfig,
    CommissionRate,
    SetDualSide,
    PositionRiskV2,
    PositionRiskV3,
    AccountV2,
    AccountV3,
    Balance,
    CountdownCancelAll,
    NewAlgo,
    QueryAlgo,
    CancelAlgo,
    CancelAllAlgos,
    OpenAlgos,
    AllAlgos,
    CreateListenKey,
    KeepaliveListenKey,
    CloseListenKey,
    Income,
    ForceOrders,
    GetMultiAssetsMargin,
    OrderRateLimit,
    TestOrder,
    ModifyOrder,
    OrderAmendment,
    BatchPlace,
    BatchModify,
    BatchCancel,
    RecentTrades,
    HistoricalTrades,
    AggTrades,
    ContinuousKlines,
    MarkPriceKlines,
    IndexPriceKlines,
    PremiumIndexKlines,
    OpenInterest,
}

/// Every REST endpoint served, by method and path: the router's table, which the endpoint
/// coverage table in `ENDPOINTS.md` is checked against (a test below), so neither can drift.
const ROUTES: &[(&str, &str, Endpoint, Security)] = {
    use Endpoint::*;
    use Security::{None as Public, Signed, UserStream};
    &[
        ("GET", "/fapi/v1/ping", Ping, Public),
        ("GET", "/fapi/v1/time", Time, Public),
        // Spot's ping and time, which python-binance's AsyncClient.create() calls before anything
        // else (its ThreadedWebsocketManager uses it); served so that client works unchanged.
        ("GET", "/api/v3/ping", Ping, Public),
        ("GET", "/api/v3/time", Time, Public),
        ("GET", "/fapi/v1/ticker/24hr", Ticker24hr, Public),
        ("GET", "/fapi/v1/klines", Klines, Public),
        ("GET", "/fapi/v1/leverageBracket", LeverageBracket, Signed),
        ("GET", "/fapi/v1/exchangeInfo", ExchangeInfo, Public),
        ("GET", "/fapi/v1/premiumIndex", PremiumIndex, Public),
        ("GET", "/fapi/v1/ticker/price", TickerPrice, Public),
        ("GET", "/fapi/v2/ticker/price", TickerPrice, Public),
        ("GET", "/fapi/v1/ticker/bookTicker", BookTicker, Public),
        ("GET", "/fapi/v1/depth", Depth, Public),
        ("POST", "/fapi/v1/order", NewOrder, Signed),
        ("GET", "/fapi/v1/order", QueryOrder, Signed),
        ("DELETE", "/fapi/v1/order", CancelOrder, Signed),
        ("GET", "/fapi/v1/allOrders", AllOrders, Signed),
        ("GET", "/fapi/v1/openOrders", OpenOrders, Signed),
        ("GET", "/fapi/v1/openOrder", OpenOrder, Signed),
        (
            "DELETE",
            "/fapi/v1/allOpenOrders",
            CancelAllOpenOrders,
            Signed,
        ),
        ("GET", "/fapi/v1/userTrades", UserTrades, Signed),
        ("POST", "/fapi/v1/leverage", Leverage, Signed),
        ("POST", "/fapi/v1/marginType", MarginType, Signed),
        ("GET", "/fapi/v1/positionSide/dual", GetDualSide, Signed),
        ("GET", "/fapi/v1/symbolConfig", SymbolConfig, Signed),
        ("GET", "/fapi/v1/accountConfig", AccountConfig, Signed),
        ("GET", "/fapi/v1/commissionRate", CommissionRate, Signed),
        ("POST", "/fapi/v1/positionSide/dual", SetDualSide, Signed),
        ("GET", "/fapi/v2/positionRisk", PositionRiskV2, Signed),
        ("GET", "/fapi/v3/positionRisk", PositionRiskV3, Signed),
        ("GET", "/fapi/v2/account", AccountV2, Signed),
        ("GET", "/fapi/v3/account", AccountV3, Signed),
        ("GET", "/fapi/v2/balance", Balance, Signed),
        ("GET", "/fapi/v3/balance", Balance, Signed),
        (
            "POST",
            "/fapi/v1/countdownCancelAll",
            CountdownCancelAll,
            Signed,
        ),
        ("POST", "/fapi/v1/algoOrder", NewAlgo, Signed),
        ("GET", "/fapi/v1/algoOrder", QueryAlgo, Signed),
        ("DELETE", "/fapi/v1/algoOrder", CancelAlgo, Signed),
        ("DELETE", "/fapi/v1/algoOpenOrders", CancelAllAlgos, Signed),
        ("GET", "/fapi/v1/openAlgoOrders", OpenAlgos, Signed),
        ("GET", "/fapi/v1/allAlgoOrders", AllAlgos, Signed),
        ("POST", "/fapi/v1/listenKey", CreateListenKey, UserStream),
        ("PUT", "/fapi/v1/listenKey", KeepaliveListenKey, UserStream),
        ("DELETE", "/fapi/v1/listenKey", CloseListenKey, UserStream),
        ("GET", "/fapi/v1/income", Income, Signed),
        ("GET", "/fapi/v1/forceOrders", ForceOrders, Signed),
        (
            "GET",
            "/fapi/v1/multiAssetsMargin",
            GetMultiAssetsMargin,
            Signed,
        ),
        ("GET", "/fapi/v1/rateLimit/order", OrderRateLimit, Signed),
        ("POST", "/fapi/v1/order/test", TestOrder, Signed),
        ("PUT", "/fapi/v1/order", ModifyOrder, Signed),
        ("GET", "/fapi/v1/orderAmendment", OrderAmendment, Signed),
        ("POST", "/fapi/v1/batchOrders", BatchPlace, Signed),
        ("PUT", "/fapi/v1/batchOrders", BatchModify, Signed),
        ("DELETE", "/fapi/v1/batchOrders", BatchCancel, Signed),
        // Public trades (issue 12, market data). historicalTrades is MARKET_DATA: the API key
        // without a signature, checked as USER_STREAM is.
        ("GET", "/fapi/v1/trades", RecentTrades, Public),
        (
            "GET",
            "/fapi/v1/historicalTrades",
            HistoricalTrades,
            UserStream,
        ),
        ("GET", "/fapi/v1/aggTrades", AggTrades, Public),
        ("GET", "/fapi/v1/continuousKlines", ContinuousKlines, Public),
        ("GET", "/fapi/v1/markPriceKlines", MarkPriceKlines, Public),
        ("GET", "/fapi/v1/indexPriceKlines", IndexPriceKlines, Public),
        (
            "GET",
            "/fapi/v1/premiumIndexKlines",
            PremiumIndexKlines,
            Public,
        ),
        ("GET", "/fapi/v1/openInterest", OpenInterest, Public),
    ]
};

fn route(method: &Method, path: &str) -> Option<(Endpoint, Security)> {
    ROUTES
        .iter()
        .find(|(m, p, _, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, endpoint, security)| (*endpoint, *security))
}

/// Request weight of an endpoint (Binance's documented IP weights).
fn weight(endpoint: Endpoint, params: &Params) -> u32 {
    use Endpoint::*;
    let has_symbol = params.get("symbol").is_some();
    match endpoint {
        PremiumIndex => {
            if has_symbol {
                1
            } else {
                10
            }
        }
        TickerPrice => {
            if has_symbol {
                1
            } else {
                2
            }
        }
        BookTicker => {
            if has_symbol {
                2
            } else {
                5
            }
        }
        Depth => match params.int("limit").ok().flatten().unwrap_or(500) {
            ..=50 => 2,
            51..=100 => 5,
            101..=500 => 10,
            _ => 20,
        },
        Ticker24hr => {
            if has_symbol {
                1
            } else {
                40
            }
        }
        Klines | ContinuousKlines | MarkPriceKlines | IndexPriceKlines | PremiumIndexKlines => {
            match params.int("limit").ok().flatten().unwrap_or(500) {
                ..=99 => 1,
                100..=499 => 2,
                500..=1000 => 5,
                _ => 10,
            }
        }
        OpenOrders | OpenAlgos => {
            if has_symbol {
                1
            } else {
                40
            }
        }
        // Order entry costs the account's order counts instead (see `order_cost`).
        NewOrder | NewAlgo | ModifyOrder | TestOrder => 0,
        BatchPlace | BatchModify => 5,
        AllOrders | UserTrades | PositionRiskV2 | PositionRiskV3 | AccountV2 | AccountV3
        | Balance | AllAlgos | SymbolConfig | AccountConfig => 5,
        CommissionRate => 20,
        Income | GetMultiAssetsMargin => 30,
        ForceOrders => {
            if has_symbol {
                20
            } else {
                50
            }
        }
        RecentTrades => 5,
        HistoricalTrades | AggTrades => 20,
        GetDualSide => 30,
        CountdownCancelAll => 10,
        _ => 1,
    }
}

async fn dispatch(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = handle(&shared, request).await;
    info!(
        target: "quantum_sim::http",
        "{method} {path} -> {} ({} ms)",
        response.status().as_u16(),
        started.elapsed().as_millis()
    );
    response
}

/// One REST request, through Binance's checks in the order that decides what a refused request
/// costs: the IP gate (ban, and counting requests that ignore a back-off), the IP's weight, the
/// injected 429s, authentication, then the account's order counts. Every reply to a known
/// endpoint carries `X-MBX-USED-WEIGHT-1M`; order replies also carry the order counts once the
/// order was counted.
async fn handle(shared: &Arc<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some((endpoint, security)) = route(&parts.method, parts.uri.path()) else {
        let msg = format!(
            "Path {}, Method {} is invalid",
            parts.uri.path(),
            parts.method
        );
        return ApiError::new(StatusCode::NOT_FOUND, -5000, msg).into_response();
    };
    *shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(format!("{} {}", parts.method, parts.uri.path()))
        .or_default() += 1;
    // The back-off and ban clock is real time, as the weight windows are: the clock_skew_ms
    // fault moves the timestamps the exchange checks and shows, not how long a Retry-After
    // lasts. (On the skewed clock, a skew change right after a 429 stretched or shrank its
    // back-off under the clients' feet, and chaos runs got 418s the clients had not earned.)
    let arrived = wall_ms();
    let admission = shared.limits().ban.admit(arrived);
    if let Admission::Banned {
        until_ms,
        retry_after,
    } = admission
    {
        let ip = parts
            .extensions
            .get::<PeerAddr>()
            .map_or_else(|| "127.0.0.1".to_string(), |p| p.0.ip().to_string());
        // Announced on the exchange's (skewed) clock, as Binance's message uses its own time.
        let until_ms = until_ms.saturating_add(shared.now_ms() - arrived);
        info!(target: "quantum_sim::ratelimit", "418: IP banned until {until_ms} ({retry_after} s)");
        let mut err = ApiError::new(
            StatusCode::IM_A_TEAPOT,
            -1003,
            format!("Way too many requests; IP({ip}) banned until {until_ms}. Please use the websocket for live updates to avoid bans."),
        );
        err.retry_after = Some(retry_after);
        let usage = shared.limits().usage(wall_ms());
        return with_usage(err.into_response(), usage);
    }

    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let err = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                -1104,
                "Request body too large.",
            );
            let usage = shared.limits().usage(wall_ms());
            return with_usage(err.into_response(), usage);
        }
    };
    let Ok(body) = std::str::from_utf8(&body).map(str::to_owned) else {
        let err = ApiError::bad(-1100, "Illegal characters found in a parameter.");
        let usage = shared.limits().usage(wall_ms());
        return with_usage(err.into_response(), usage);
    };
    let query = parts.uri.query().unwrap_or("").to_string();
    let params = Params::parse(&query, &body);
    let order_cost = order_cost(endpoint);
    let is_order = order_cost.is_some();
    let now = shared.now_ms();

    let weighed = shared
        .limits()
        .record_weight(wall_ms(), weight(endpoint, &params));
    let usage = match weighed {
        Ok(usage) => usage,
        Err((_, usage)) if !shared.config.enforce_rate_limits => usage,
        Err((exceeded, usage)) => {
            return with_usage(limited(shared, exceeded).into_response(), usage)
        }
    };

    let injected_429 = {
        let mut exchange = shared.lock();
        let faults = &mut exchange.faults;
        let fired = match endpoint {
            Endpoint::CancelOrder => Faults::take(&mut faults.cancel_429),
            Endpoint::QueryOrder => Faults::take(&mut faults.query_429),
            _ => false,
        } || Faults::take(&mut faults.rate_limit_429);
        fired.then_some(faults.retry_after_s.max(1))
    };
    if let Some(retry_after) = injected_429 {
        info!(target: "quantum_sim::faults", "{} {}: injected 429, Retry-After {retry_after}", parts.method, parts.uri.path());
        let exceeded = Exceeded::Weight { retry_after };
        return with_usage(limited(shared, exceeded).into_response(), usage);
    }

    if let Err(err) =
        shared
            .credentials
            .check(security, &parts.headers, &query, &body, &params, now)
    {
        return with_usage(err.into_response(), usage);
    }
    let usage = if let Some((ten_s, one_m)) = order_cost {
        let counted = shared
            .limits()
            .record_orders(wall_ms(), usage, ten_s, one_m);
        match counted {
            Ok(usage) => usage,
            Err((_, usage)) if !shared.config.enforce_rate_limits => usage,
            Err((exceeded, usage)) => {
                return with_usage(limited(shared, exceeded).into_response(), usage)
            }
        }
    } else {
        usage
    };
    let result = if is_order {
        new_order_request(shared, endpoint, &params, &parts).await
    } else {
        call(shared, endpoint, &params)
    };
    match result {
        Ok(value) => with_usage(Json(value).into_response(), usage),
        Err(err) => with_usage(err.into_response(), usage),
    }
}

/// What an order-entry request costs on the account's order counts (10 s, 1 min), as Binance
/// documents it; `None` for requests that are not counted.
fn order_cost(endpoint: Endpoint) -> Option<(u32, u32)> {
    use Endpoint::*;
    match endpoint {
        NewOrder | NewAlgo | ModifyOrder => Some((1, 1)),
        BatchPlace | BatchModify => Some((5, 1)),
        _ => None,
    }
}

/// The 429 for a crossed limit (or an injected one, which says it crossed the weight limit), with
/// `Retry-After`; the IP's back-off starts here, so requests that ignore it count towards a ban.
pub(crate) fn limited(shared: &Shared, exceeded: Exceeded) -> ApiError {
    let (code, msg, retry_after) = match exceeded {
        Exceeded::Weight { retry_after } => (
            -1003,
            format!("Too many requests; current limit is {WEIGHT_LIMIT_1M} requests per minute. Please use the websocket for live updates to avoid polling the API."),
            retry_after,
        ),
        Exceeded::Orders {
            retry_after,
            interval,
            limit,
        } => (
            -1015,
            format!("Too many new orders; current limit is {limit} orders per {interval}."),
            retry_after,
        ),
    };
    shared.limits().ban.sent_429(wall_ms(), retry_after);
    let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, msg);
    err.retry_after = Some(retry_after);
    err
}

/// What the order faults do to one new-order request; at most one fires per request, in this
/// order of precedence.
enum OrderFault {
    None,
    /// `reject_orders`: refused with this code, not executed.
    Reject(i64),
    /// `drop_order_requests`: not executed, connection closed.
    DropRequest,
    /// `unknown_status_503_not_executed`: not executed, 503 "Unknown error".
    UnknownNotExecuted,
    /// `drop_order_responses`: executed, connection closed.
    DropResponse,
    /// `unknown_status_503`: executed, 503 "Unknown error".
    UnknownExecuted,
}

impl OrderFault {
    fn take(faults: &mut Faults) -> OrderFault {
        if let Some(code) = faults.take_reject() {
            OrderFault::Reject(code)
        } else if Faults::take(&mut faults.drop_order_requests) {
            OrderFault::DropRequest
        } else if Faults::take(&mut faults.unknown_status_503_not_executed) {
            OrderFault::UnknownNotExecuted
        } else if Faults::take(&mut faults.drop_order_responses) {
            OrderFault::DropResponse
        } else if Faults::take(&mut faults.unknown_status_503) {
            OrderFault::UnknownExecuted
        } else {
            OrderFault::None
        }
    }
}

/// What an order-entry request gets under the order faults: a reply, or none at all (the
/// connection is closed without one).
pub(crate) enum Faulted {
    Reply(Result<Value, ApiError>),
    Lost,
}

/// Runs an order-entry request (`execute`) under the order faults, for REST and the WebSocket
/// API alike: reject; lose the request (no reply, or 503 "Unknown error") without executing it;
/// or execute it and lose the reply the same two ways. At most one fires per request.
pub(crate) async fn under_order_faults<F, Fut>(shared: &Arc<Shared>, execute: F) -> Faulted
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Value, ApiError>>,
{
    let fault = OrderFault::take(&mut shared.lock().faults);
    match fault {
        OrderFault::Reject(code) => return Faulted::Reply(Err(ApiError::for_code(code))),
        OrderFault::DropRequest => {
            info!(target: "quantum_sim::faults", "drop_order_requests: closing the connection without executing the order request");
            return Faulted::Lost;
        }
        OrderFault::UnknownNotExecuted => {
            info!(target: "quantum_sim::faults", "unknown_status_503_not_executed: answering 503 Unknown error without executing the order request");
            return Faulted::Reply(Err(ApiError::unknown_status()));
        }
        OrderFault::None | OrderFault::DropResponse | OrderFault::UnknownExecuted => {}
    }
    let result = execute().await;
    match fault {
        OrderFault::DropResponse => {
            info!(target: "quantum_sim::faults", "drop_order_responses: executed the order request, closing the connection without a reply");
            Faulted::Lost
        }
        OrderFault::UnknownExecuted => {
            info!(target: "quantum_sim::faults", "unknown_status_503: executed the order request, answering 503 Unknown error");
            Faulted::Reply(Err(ApiError::unknown_status()))
        }
        _ => Faulted::Reply(result),
    }
}

/// REST's order-entry requests, under the order faults; a lost reply closes the connection.
async fn new_order_request(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    params: &Params,
    parts: &axum::http::request::Parts,
) -> Result<Value, ApiError> {
    let faulted = under_order_faults(shared, || async {
        match endpoint {
            Endpoint::NewAlgo => shared.with_exchange(|ex, now| ex.place_algo(params, now)),
            Endpoint::ModifyOrder => modify_order(shared, params),
            Endpoint::BatchPlace => place_batch(shared, params).await,
            Endpoint::BatchModify => modify_batch(shared, params),
            _ => place_order(shared, params).await,
        }
    })
    .await;
    match faulted {
        Faulted::Reply(result) => result,
        Faulted::Lost => {
            drop_connection(parts).await;
            unreachable!("drop_connection never returns")
        }
    }
}

/// Closes the request's connection with no reply written, and never returns: the connection task
/// drops this handler with it.
async fn drop_connection(parts: &axum::http::request::Parts) {
    if let Some(kill) = parts.extensions.get::<ConnectionKill>() {
        kill.0.cancel();
    }
    std::future::pending::<()>().await;
}

pub(crate) async fn place_order(shared: &Arc<Shared>, params: &Params) -> Result<Value, ApiError> {
    let result_reply = match params.get("newOrderRespType") {
        None | Some("ACK") => false,
        Some("RESULT") => true,
        Some(_) => return Err(ApiError::malformed("newOrderRespType")),
    };
    let (order_id, ack) = shared.with_exchange(|ex, now| {
        let order_id = ex.place_order(params, now)?;
        let order = ex.order_by_id(order_id).expect("just placed");
        Ok::<_, ApiError>((order_id, ex.order_json(order, OrderShape::Reply)))
    })?;
    if result_reply {
        Ok(shared.wait_final(order_id).await)
    } else {
        // The ACK shows the order as accepted: NEW, nothing executed, average price zero.
        Ok(ack)
    }
}

/// `PUT /fapi/v1/order` (and the WebSocket API's `order.modify`).
pub(crate) fn modify_order(shared: &Arc<Shared>, params: &Params) -> Result<Value, ApiError> {
    let request = ModifyRequest::from_params(params)?;
    shared.with_exchange(|ex, now| {
        let order_id = ex.modify(&request, now)?;
        Ok(ex.modify_reply(order_id))
    })
}

/// Binance's cap on the orders of one `batchOrders` request (place and modify).
const MAX_BATCH_ORDERS: usize = 5;
/// Binance's cap on the ids of one `DELETE /fapi/v1/batchOrders`.
const MAX_BATCH_CANCELS: usize = 10;

/// The `batchOrders` parameter: a JSON list of 1 to 5 objects, each one order's parameters.
fn batch_elements(params: &Params) -> Result<Vec<Params>, ApiError> {
    let text = params.required("batchOrders")?;
    let list: Vec<Value> =
        serde_json::from_str(text).map_err(|_| ApiError::malformed("batchOrders"))?;
    if list.is_empty() || list.len() > MAX_BATCH_ORDERS {
        return Err(ApiError::bad(
            -4082,
            format!("Invalid number of batch place orders: {}", list.len()),
        ));
    }
    list.iter()
        .map(|element| Params::from_json(element).ok_or_else(|| ApiError::malformed("batchOrders")))
        .collect()
}

/// One element of a batch reply: the order, or Binance's `{code,msg}` for that element.
fn element(result: Result<Value, ApiError>) -> Value {
    result.unwrap_or_else(|err| err.body())
}

/// `POST /fapi/v1/batchOrders`: each element as `POST /fapi/v1/order` would take it, in list
/// order (Binance matches a batch's orders concurrently; here they go one after another, which
/// is one of the orders Binance may pick). The order faults apply to the request as a whole.
async fn place_batch(shared: &Arc<Shared>, params: &Params) -> Result<Value, ApiError> {
    let mut replies = Vec::new();
    for order in batch_elements(params)? {
        replies.push(element(place_order(shared, &order).await));
    }
    Ok(Value::Array(replies))
}

/// `PUT /fapi/v1/batchOrders`: each element as `PUT /fapi/v1/order` would take it.
fn modify_batch(shared: &Arc<Shared>, params: &Params) -> Result<Value, ApiError> {
    let replies = batch_elements(params)?
        .iter()
        .map(|order| element(modify_order(shared, order)))
        .collect();
    Ok(Value::Array(replies))
}

/// `DELETE /fapi/v1/batchOrders`: `symbol` and `orderIdList` (JSON list of ids) or
/// `origClientOrderIdList` (JSON list of strings), at most 10; one reply element per id.
fn cancel_batch(ex: &mut Exchange, params: &Params, now: i64) -> Result<Value, ApiError> {
    let symbol = ex.symbol_param(params)?;
    // Binance also takes the lower-case spellings, which ccxt and python-binance send (ccxt's
    // PR #22890 shows testnet answering 200 to `orderidlist=%5B...%5D`).
    let id_list = params.get("orderIdList").or(params.get("orderidlist"));
    let client_id_list = params
        .get("origClientOrderIdList")
        .or(params.get("origclientorderidlist"));
    let refs: Vec<(&str, String)> = if let Some(text) = id_list {
        let ids: Vec<i64> =
            serde_json::from_str(text).map_err(|_| ApiError::malformed("orderIdList"))?;
        ids.into_iter()
            .map(|id| ("orderId", id.to_string()))
            .collect()
    } else if let Some(text) = client_id_list {
        let ids: Vec<String> =
            serde_json::from_str(text).map_err(|_| ApiError::malformed("origClientOrderIdList"))?;
        ids.into_iter()
            .map(|id| ("origClientOrderId", id))
            .collect()
    } else {
        return Err(ApiError::bad(
            -1102,
            "Either orderIdList or origClientOrderIdList must be sent.",
        ));
    };
    if refs.is_empty() || refs.len() > MAX_BATCH_CANCELS {
        return Err(ApiError::bad(
            -1130,
            "Data sent for parameter 'orderIdList' is not valid.",
        ));
    }
    let replies = refs
        .into_iter()
        .map(|(key, id)| {
            let one = Params::default().with("symbol", &symbol).with(key, id);
            element(ex.cancel_order(&one, now))
        })
        .collect();
    Ok(Value::Array(replies))
}

fn call(shared: &Arc<Shared>, endpoint: Endpoint, params: &Params) -> Result<Value, ApiError> {
    use Endpoint::*;
    shared.with_exchange(|ex, now| match endpoint {
        Ping => Ok(json!({})),
        Time => Ok(json!({ "serverTime": now })),
        ExchangeInfo => Ok(exchange_info(ex, now)),
        Ticker24hr => per_symbol(ex, params, |ex, symbol| ex.ticker_24hr(symbol, now)),
        Klines => ex.klines(params),
        LeverageBracket => ex.leverage_brackets(params),
        PremiumIndex => per_symbol(ex, params, |ex, symbol| {
            let m = &ex.markets[symbol];
            json!({
                "symbol": symbol,
                "markPrice": crate::wire::fmt8(m.mark),
                "indexPrice": crate::wire::fmt8(m.index),
                "estimatedSettlePrice": crate::wire::fmt8(m.index),
                "lastFundingRate": crate::wire::fmt8(m.funding_rate),
                "interestRate": "0.00010000",
                "nextFundingTime": (now / 28_800_000 + 1) * 28_800_000,
                "time": now,
            })
        }),
        TickerPrice => per_symbol(ex, params, |ex, symbol| {
            let m = &ex.markets[symbol];
            json!({ "symbol": symbol, "price": m.spec.fmt_price(m.last), "time": now })
        }),
        BookTicker => per_symbol(ex, params, |ex, symbol| {
            let m = &ex.markets[symbol];
            let (bids, asks) = m.book(1);
            json!({
                "symbol": symbol,
                "bidPrice": m.spec.fmt_price(bids[0].price), "bidQty": m.spec.fmt_qty(bids[0].qty),
                "askPrice": m.spec.fmt_price(asks[0].price), "askQty": m.spec.fmt_qty(asks[0].qty),
                "time": now,
            })
        }),
        Depth => {
            let symbol = ex.symbol_param(params)?;
            let limit = params.int("limit")?.unwrap_or(500);
            if ![5, 10, 20, 50, 100, 500, 1000].contains(&limit) {
                return Err(ApiError::bad(-1130, "Invalid data sent for a parameter."));
            }
            let m = &ex.markets[&symbol];
            let (bids, asks) = m.book(limit as usize);
            let level = |l: &crate::market::Level| {
                json!([m.spec.fmt_price(l.price), m.spec.fmt_qty(l.qty)])
            };
            Ok(json!({
                "lastUpdateId": m.book_update_id, "E": now, "T": now,
                "bids": bids.iter().map(level).collect::<Vec<_>>(),
                "asks": asks.iter().map(level).collect::<Vec<_>>(),
            }))
        }
        QueryOrder => ex
            .find_order(params)
            .map(|o| ex.order_json(o, OrderShape::Query)),
        CancelOrder => ex.cancel_order(params, now),
        AllOrders => ex.all_orders(params).map(Value::Array),
        OpenOrders => {
            let symbol = ex.optional_symbol(params)?;
            Ok(Value::Array(ex.open_orders(symbol.as_deref())))
        }
        OpenOrder => {
            let order = ex.find_order(params)?;
            if !order.is_open() {
                return Err(ApiError::bad(-2013, "Order does not exist."));
            }
            Ok(ex.order_json(order, OrderShape::Query))
        }
        CancelAllOpenOrders => {
            let symbol = ex.symbol_param(params)?;
            ex.cancel_all(&symbol, now);
            Ok(json!({ "code": 200, "msg": "The operation of cancel all open order is done." }))
        }
        UserTrades => ex.user_trades(params).map(Value::Array),
        Leverage => ex.set_leverage(params),
        MarginType => ex.set_margin_type(params),
        GetDualSide => Ok(json!({ "dualSidePosition": ex.dual_side() })),
        SymbolConfig => ex.symbol_config(params),
        AccountConfig => Ok(ex.account_config()),
        CommissionRate => ex.commission_rate(params),
        SetDualSide => ex.set_dual_side(params),
        PositionRiskV2 | PositionRiskV3 => {
            let symbol = ex.optional_symbol(params)?;
            Ok(Value::Array(ex.position_risk(
                symbol.as_deref(),
                endpoint == PositionRiskV3,
            )))
        }
        AccountV2 => Ok(ex.account(false, now)),
        AccountV3 => Ok(ex.account(true, now)),
        Balance => Ok(ex.balance(now)),
        CountdownCancelAll => ex.countdown_cancel_all(params, now),
        QueryAlgo => ex.query_algo(params),
        CancelAlgo => ex.cancel_algo(params, now),
        CancelAllAlgos => {
            let symbol = ex.symbol_param(params)?;
            ex.cancel_all_algos(&symbol, now);
            Ok(json!({ "code": 200, "msg": "The operation of cancel all open order is done." }))
        }
        OpenAlgos => {
            let symbol = ex.optional_symbol(params)?;
            Ok(Value::Array(ex.open_algos(symbol.as_deref())))
        }
        AllAlgos => ex.all_algos(params).map(Value::Array),
        CreateListenKey => Ok(json!({ "listenKey": ex.create_listen_key(now) })),
        KeepaliveListenKey => ex
            .keepalive_listen_key(params.get("listenKey"), now)
            .map(|key| json!({ "listenKey": key })),
        CloseListenKey => ex
            .close_listen_key(params.get("listenKey"), now)
            .map(|()| json!({})),
        RecentTrades => ex.recent_trades(params),
        HistoricalTrades => ex.historical_trades(params),
        AggTrades => ex.agg_trades(params),
        ContinuousKlines => ex.continuous_klines(params),
        MarkPriceKlines => ex.price_klines(params, PriceKline::Mark),
        IndexPriceKlines => ex.price_klines(params, PriceKline::Index),
        PremiumIndexKlines => ex.price_klines(params, PriceKline::Premium),
        OpenInterest => ex.open_interest(params, now),
        TestOrder => ex.test_order(params, now),
        Income => ex.income(params, now).map(Value::Array),
        ForceOrders => ex.force_orders(params).map(Value::Array),
        GetMultiAssetsMargin => Ok(ex.multi_assets_margin()),
        OrderRateLimit => Ok(ex.order_rate_limits()),
        OrderAmendment => ex.order_amendments(params).map(Value::Array),
        BatchCancel => cancel_batch(ex, params, now),
        NewOrder | NewAlgo | ModifyOrder | BatchPlace | BatchModify => {
            unreachable!("order-entry requests go through new_order_request")
        }
    })
}

/// Endpoints that answer one object with `symbol`, or an array of all symbols without it.
fn per_symbol(
    ex: &Exchange,
    params: &Params,
    row: impl Fn(&Exchange, &str) -> Value,
) -> Result<Value, ApiError> {
    match ex.optional_symbol(params)? {
        Some(symbol) => Ok(row(ex, &symbol)),
        None => Ok(Value::Array(
            ex.markets.keys().map(|s| row(ex, s)).collect(),
        )),
    }
}

fn exchange_info(ex: &Exchange, now: i64) -> Value {
    let symbols: Vec<Value> = ex
        .markets
        .values()
        .map(|m| {
            let s = &m.spec;
            json!({
                "symbol": s.symbol,
                "pair": s.symbol,
                "contractType": "PERPETUAL",
                "deliveryDate": 4_133_404_800_000i64,
                "onboardDate": s.onboard_date,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": s.base_asset,
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "pricePrecision": s.price_precision,
                "quantityPrecision": s.qty_scale(),
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [underlying_sub_type(&s.symbol)],
                "settlePlan": 0,
                "triggerProtect": "0.0500",
                "filters": [
                    { "filterType": "PRICE_FILTER", "maxPrice": s.fmt_price(s.max_price), "minPrice": s.fmt_price(s.min_price), "tickSize": s.tick_size.to_string() },
                    { "filterType": "LOT_SIZE", "maxQty": s.max_qty.normalize().to_string(), "minQty": s.min_qty.normalize().to_string(), "stepSize": s.step_size.normalize().to_string() },
                    { "filterType": "MARKET_LOT_SIZE", "maxQty": s.market_max_qty.normalize().to_string(), "minQty": s.market_min_qty.normalize().to_string(), "stepSize": s.market_step_size.normalize().to_string() },
                    { "filterType": "MAX_NUM_ORDERS", "limit": s.max_num_orders },
                    { "filterType": "MIN_NOTIONAL", "notional": s.min_notional.normalize().to_string() },
                    { "filterType": "PERCENT_PRICE", "multiplierUp": s.multiplier_up.to_string(), "multiplierDown": s.multiplier_down.to_string(), "multiplierDecimal": "4" },
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
            })
        })
        .collect();
    json!({
        "exchangeFilters": [],
        "rateLimits": [
            { "interval": "MINUTE", "intervalNum": 1, "limit": WEIGHT_LIMIT_1M, "rateLimitType": "REQUEST_WEIGHT" },
            { "interval": "MINUTE", "intervalNum": 1, "limit": ORDER_LIMIT_1M, "rateLimitType": "ORDERS" },
            { "interval": "SECOND", "intervalNum": 10, "limit": ORDER_LIMIT_10S, "rateLimitType": "ORDERS" },
        ],
        "serverTime": now,
        "assets": [
            { "asset": "USDT", "marginAvailable": true, "autoAssetExchange": "-10000" },
        ],
        "symbols": symbols,
        "timezone": "UTC",
    })
}

/// The category Binance lists a contract under (informational only).
fn underlying_sub_type(symbol: &str) -> &'static str {
    match symbol {
        "BTCUSDT" => "PoW",
        "DOGEUSDT" => "Meme",
        "AXSUSDT" => "GameFi",
        "XRPUSDT" => "Payment",
        _ => "Layer-1",
    }
}

fn with_usage(mut response: Response, usage: Usage) -> Response {
    let headers = response.headers_mut();
    insert_header(headers, "X-MBX-USED-WEIGHT-1M", usage.weight_1m);
    if let Some((ten, minute)) = usage.orders {
        insert_header(headers, "X-MBX-ORDER-COUNT-10S", ten);
        insert_header(headers, "X-MBX-ORDER-COUNT-1M", minute);
    }
    response
}

fn insert_header(headers: &mut HeaderMap, name: &'static str, value: u32) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(name, v);
    }
}

// ----- control API ---------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceRequest {
    symbol: String,
    price: Option<String>,
    #[serde(default)]
    release: bool,
}

async fn control_price(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: PriceRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad(-1102, format!("invalid JSON body: {e}")).into_response(),
    };
    let symbol = request.symbol.to_ascii_uppercase();
    let price = match (request.price.as_deref(), request.release) {
        (Some(text), false) => match parse_decimal(text).filter(|p| *p > Decimal::ZERO) {
            Some(p) => Some(p),
            None => {
                return ApiError::bad(-1102, "price must be a positive decimal string")
                    .into_response()
            }
        },
        (None, true) => None,
        _ => {
            return ApiError::bad(-1102, "send either \"price\" or \"release\": true")
                .into_response()
        }
    };
    let result = shared.with_exchange(|ex, now| ex.pin_price(&symbol, price, now));
    match result {
        Ok(value) => {
            info!(target: "quantum_sim::control", "price {symbol} -> {}", value["price"]);
            Json(value).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /sim/v1/requests`: the requests received so far, by `METHOD path`, next to the IP's rate
/// limit standing: `http_429` and `http_418` (replies sent so far) and, only while a ban is in
/// force, `banned_until` (epoch ms). Every value is a number, so a reader that takes the reply as
/// a map of counts keeps working; one that indexes JSON gets `null` for `banned_until` when there
/// is no ban.
async fn get_requests(State(shared): State<Arc<Shared>>) -> Response {
    let mut reply: serde_json::Map<String, Value> = shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(endpoint, count)| (endpoint.clone(), json!(count)))
        .collect();
    let now = shared.now_ms();
    let limits = shared.limits();
    reply.insert("http_429".into(), json!(limits.ban.sent_429));
    reply.insert("http_418".into(), json!(limits.ban.sent_418));
    if let Some(until) = limits.ban.banned_until(wall_ms()) {
        // On the exchange's clock, as the 418 message says it.
        reply.insert("banned_until".into(), json!(until + (now - wall_ms())));
    }
    Json(Value::Object(reply)).into_response()
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.faults()).into_response()
}

async fn post_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let update: FaultsUpdate = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => return ApiError::bad(-1102, format!("invalid faults body: {e}")).into_response(),
    };
    if let Err(reason) = update.check() {
        return ApiError::bad(-1102, format!("invalid faults body: {reason}")).into_response();
    }
    let faults = shared.with_exchange(|ex, now| {
        let startup = ex.startup_faults.clone();
        ex.faults.apply(&update, &startup);
        ex.apply_book_knob(now);
        if update.expire_listen_keys {
            ex.expire_all_listen_keys(now);
        }
        if update.disconnect_user_streams {
            ex.disconnect_user_streams();
        }
        ex.faults.clone()
    });
    if update.reset {
        shared.limits().ban.forget();
    } else if update.lift_ban {
        shared.limits().ban.lift();
    }
    shared.faults_changed.notify_waiters();
    info!(target: "quantum_sim::control", "faults now {}", serde_json::to_string(&faults).unwrap_or_default());
    Json(faults).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ENDPOINTS.md`'s REST rows (the table before the first `## ` section): method, path,
    /// security, status.
    fn coverage_rows() -> Vec<(String, String, String, String)> {
        include_str!("../ENDPOINTS.md")
            .lines()
            .take_while(|line| !line.starts_with("## "))
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<String> = line
                    .split('|')
                    .map(|c| c.trim().trim_matches('`').to_string())
                    .collect();
                (
                    cells[1].clone(),
                    cells[2].clone(),
                    cells[3].clone(),
                    cells[4].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn public_trade_lists_weigh_what_binance_documents() {
        let none = Params::default();
        assert_eq!(weight(Endpoint::RecentTrades, &none), 5);
        assert_eq!(weight(Endpoint::HistoricalTrades, &none), 20);
        assert_eq!(weight(Endpoint::AggTrades, &none), 20);
        assert_eq!(
            route(&Method::GET, "/fapi/v1/historicalTrades").map(|(_, s)| s),
            Some(Security::UserStream),
            "MARKET_DATA: the key, no signature"
        );
    }

    #[test]
    fn the_coverage_table_matches_the_router() {
        let rows = coverage_rows();
        assert!(rows.len() >= ROUTES.len(), "{} rows", rows.len());
        for (method, path, security, status) in &rows {
            let method_ = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
            let routed = route(&method_, path);
            match status.as_str() {
                "implemented" => {
                    let (_, served) =
                        routed.unwrap_or_else(|| panic!("{method} {path} is marked implemented"));
                    let expected = Security::from_table(security).unwrap_or_else(|| {
                        panic!("{method} {path}: unknown security {security:?}")
                    });
                    assert_eq!(served, expected, "{method} {path}");
                }
                "not yet" | "out of scope" => assert!(
                    routed.is_none(),
                    "{method} {path} is served; mark it implemented"
                ),
                other => panic!("{method} {path}: unknown status {other:?}"),
            }
        }
        for (method, path, _, _) in ROUTES {
            assert!(
                rows.iter()
                    .any(|(m, p, _, s)| m == method && p == path && s == "implemented"),
                "{method} {path} is served but has no implemented row in ENDPOINTS.md"
            );
        }
    }
}
