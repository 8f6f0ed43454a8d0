//! The WebSocket API on the simulator's port at `/ws-fapi/v1` (Binance:
//! `wss://ws-fapi.binance.com/ws-fapi/v1`): one JSON request per text frame,
//! `{"id","method","params"}`, answered by one frame, `{"id","status":200,"result":..}` or
//! `{"id","status":4xx,"error":{"code","msg"}}`, each with the `rateLimits` array unless the
//! connection or the request turned it off (`returnRateLimits`).
//!
//! The methods are twins of REST endpoints and go through the same checks in the same order (IP
//! ban, weight, injected 429s, authentication, order counts) against the same counters, so REST
//! and WebSocket API traffic share one budget, as at Binance; then they call the same exchange
//! methods, so validation, errors and user-data events are those of REST. What belongs to this API
//! alone lives here: the envelope, the signature over the parameters sorted by name, and the
//! per-connection session of `session.logon` (Ed25519 keys only, as at Binance), after which a
//! request needs neither `apiKey` nor `signature`.
//!
//! Requests of one connection are answered one after the other, in the order they came: a
//! `newOrderRespType=RESULT` order that waits for its fills holds back the requests behind it on
//! the same connection (Binance documents no ordering; see ENDPOINTS.md).

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use axum::extract::{RawQuery, State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tracing::info;

use crate::auth::{Params, Security, TimeWindow};
use crate::config::KeyScheme;
use crate::error::ApiError;
use crate::faults::Faults;
use crate::ratelimit::{
    Admission, Exceeded, Usage, ORDER_LIMIT_10S, ORDER_LIMIT_1M, WEIGHT_LIMIT_1M,
};
use crate::server::{limited, place_order, under_order_faults, wall_ms, Faulted, Shared};
use crate::wire::OrderShape;

/// Where the WebSocket API is served.
pub(crate) const PATH: &str = "/ws-fapi/v1";
/// Binance: "WebSocket handshake attempt costs 5 weight".
const HANDSHAKE_WEIGHT: u32 = 5;
/// Largest frame read; requests are small JSON objects. A larger frame ends the connection (a
/// protocol error, not a request the simulator could answer).
const MAX_FRAME_BYTES: usize = 1024 * 1024;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route(PATH, get(upgrade))
}

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsMethod {
    SessionLogon,
    SessionStatus,
    SessionLogout,
    OrderPlace,
    OrderModify,
    OrderCancel,
    OrderStatus,
    AlgoOrderPlace,
    AlgoOrderCancel,
    AccountStatus,
    AccountStatusV2,
    AccountBalance,
    AccountBalanceV2,
    AccountPosition,
    AccountPositionV2,
    UserDataStreamStart,
    UserDataStreamPing,
    UserDataStreamStop,
    TickerPrice,
    TickerBook,
}

/// Every method served, with Binance's security type: the WebSocket API table of `ENDPOINTS.md`
/// is checked against this one in both directions (a test below), so neither can drift. A method
/// not listed is answered -1020.
pub(crate) const METHODS: &[(&str, WsMethod, Security)] = {
    use Security::{None as Public, Signed, UserStream};
    use WsMethod::*;
    &[
        // SIGNED, and Ed25519 keys only; handled apart from the other signed methods because it
        // is what opens a session rather than something a session authorizes.
        ("session.logon", SessionLogon, Signed),
        ("session.status", SessionStatus, Public),
        ("session.logout", SessionLogout, Public),
        ("order.place", OrderPlace, Signed),
        ("order.modify", OrderModify, Signed),
        ("order.cancel", OrderCancel, Signed),
        ("order.status", OrderStatus, Signed),
        ("algoOrder.place", AlgoOrderPlace, Signed),
        ("algoOrder.cancel", AlgoOrderCancel, Signed),
        ("account.status", AccountStatus, Signed),
        ("v2/account.status", AccountStatusV2, Signed),
        ("account.balance", AccountBalance, Signed),
        ("v2/account.balance", AccountBalanceV2, Signed),
        ("account.position", AccountPosition, Signed),
        ("v2/account.position", AccountPositionV2, Signed),
        ("userDataStream.start", UserDataStreamStart, UserStream),
        ("userDataStream.ping", UserDataStreamPing, UserStream),
        ("userDataStream.stop", UserDataStreamStop, UserStream),
        ("ticker.price", TickerPrice, Public),
        ("ticker.book", TickerBook, Public),
    ]
};

/// The method a request names. Binance allows an explicit version prefix (`v3/order.place` in
/// its docs); `v1/` names the unprefixed methods here, while `v2/account.status` and the like are
/// methods of their own.
fn lookup(name: &str) -> Option<(WsMethod, Security)> {
    let find = |name: &str| {
        METHODS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, method, security)| (*method, *security))
    };
    find(name).or_else(|| name.strip_prefix("v1/").and_then(find))
}

/// Request weight, as each method's page documents it.
fn weight(method: WsMethod, params: &Params) -> u32 {
    use WsMethod::*;
    let has_symbol = params.get("symbol").is_some();
    match method {
        SessionLogon | SessionStatus | SessionLogout => 2,
        // IP weight 0; they count against the order limits instead.
        OrderPlace | OrderModify | AlgoOrderPlace => 0,
        OrderCancel | OrderStatus | AlgoOrderCancel => 1,
        AccountStatus | AccountStatusV2 | AccountBalance | AccountBalanceV2 | AccountPosition
        | AccountPositionV2 => 5,
        UserDataStreamStart | UserDataStreamPing | UserDataStreamStop => 1,
        TickerPrice => {
            if has_symbol {
                1
            } else {
                2
            }
        }
        TickerBook => {
            if has_symbol {
                2
            } else {
                5
            }
        }
    }
}

/// One connection's session.
#[derive(Debug)]
struct Session {
    connected_since: i64,
    /// The API key of the last successful `session.logon`, and when it logged on; `None` before
    /// and after `session.logout`.
    authorized: Option<(String, i64)>,
    /// Whether replies carry `rateLimits` when the request does not say (`?returnRateLimits=` on
    /// the connection URL; Binance's default is true).
    return_rate_limits: bool,
}

impl Session {
    fn status(&self, now: i64) -> Value {
        let (key, since) = match &self.authorized {
            Some((key, since)) => (json!(key), json!(since)),
            None => (Value::Null, Value::Null),
        };
        json!({
            "apiKey": key,
            "authorizedSince": since,
            "connectedSince": self.connected_since,
            "returnRateLimits": self.return_rate_limits,
            "serverTime": now,
        })
    }
}

/// `?returnRateLimits=true|false` on the connection URL (default true).
fn connection_return_rate_limits(query: Option<&str>) -> Result<bool, ApiError> {
    let Some(query) = query else {
        return Ok(true);
    };
    let params = Params::parse(query, "");
    Ok(params.boolean("returnRateLimits")?.unwrap_or(true))
}

/// The handshake: the IP gate and 5 weight, as a REST request would be, then the upgrade. A
/// refused handshake is an HTTP reply with Binance's error body, as REST's.
async fn upgrade(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    shared.count_request("GET /ws-fapi/v1".into());
    let admission = shared.limits().ban.admit(wall_ms());
    if let Admission::Banned {
        until_ms,
        retry_after,
    } = admission
    {
        return banned(&shared, until_ms, retry_after).into_response();
    }
    let weighed = shared.limits().record_weight(wall_ms(), HANDSHAKE_WEIGHT);
    if let Err((exceeded, _)) = weighed {
        if shared.config.enforce_rate_limits {
            return limited(&shared, exceeded).into_response();
        }
    }
    let return_rate_limits = match connection_return_rate_limits(query.as_deref()) {
        Ok(value) => value,
        Err(err) => return err.into_response(),
    };
    let session = Session {
        connected_since: shared.now_ms(),
        authorized: None,
        return_rate_limits,
    };
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| {
            let tasks = shared.tasks.clone();
            tasks.track_future(serve(socket, shared, session))
        })
}

/// What to do with a request's connection.
enum Outcome {
    Reply(Value),
    /// Close the connection without replying (the `drop_order_*` faults).
    Drop,
}

async fn serve(mut socket: WebSocket, shared: Arc<Shared>, mut session: Session) {
    let mut ping = tokio::time::interval(shared.config.ws_ping_interval);
    ping.tick().await; // The first tick is immediate; pings start one interval after connecting.
    let end_of_life = tokio::time::sleep(shared.config.ws_max_lifetime);
    tokio::pin!(end_of_life);
    info!(target: "quantum_sim::ws_api", "WebSocket API connection opened");
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            _ = &mut end_of_life => {
                info!(target: "quantum_sim::ws_api", "WebSocket API connection reached its maximum lifetime; closing it");
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(b"quantum-sim".to_vec().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                let outcome = match incoming {
                    Some(Ok(Message::Text(text))) => {
                        // A RESULT order may wait for its fills; shutdown does not wait for it.
                        tokio::select! {
                            outcome = handle(&shared, &mut session, text.as_str()) => outcome,
                            _ = shared.shutdown.cancelled() => break,
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let err = ApiError::bad(-1102, "Requests must be sent as JSON in text frames.");
                        Outcome::Reply(error_frame(&Value::Null, &err, None, false))
                    }
                    Some(Ok(Message::Close(_))) => {
                        // Flushes the close frame the WebSocket layer queued in answer, so the
                        // client's close handshake completes instead of waiting for its timeout.
                        let _ = futures_util::SinkExt::close(&mut socket).await;
                        break;
                    }
                    None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue, // Pings (axum answers them) and pongs.
                };
                match outcome {
                    Outcome::Reply(frame) => {
                        if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                    // Dropped without a close frame, like a connection that dies.
                    Outcome::Drop => break,
                }
            }
        }
    }
    info!(target: "quantum_sim::ws_api", "WebSocket API connection closed");
}

/// One request, parsed.
#[derive(Debug)]
struct Request {
    id: Value,
    method: String,
    params: Params,
}

/// Reads the envelope. An unreadable request is answered with `id` null when no id could be read.
/// Parameter values become the text the signature covers: strings as they are, numbers as written
/// (`43187.00` stays `43187.00`), booleans as `true`/`false`.
fn parse_request(text: &str) -> Result<Request, (Value, ApiError)> {
    let malformed = |id: &Value, what: &str| (id.clone(), ApiError::malformed(what));
    let Ok(Value::Object(mut request)) = serde_json::from_str::<Value>(text) else {
        return Err((
            Value::Null,
            ApiError::bad(-1102, "Malformed request: a request is one JSON object."),
        ));
    };
    let id = match request.remove("id") {
        Some(id @ (Value::String(_) | Value::Null)) => id,
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n),
        Some(_) => return Err(malformed(&Value::Null, "id")),
        None => return Err((Value::Null, ApiError::mandatory("id"))),
    };
    let method = match request.remove("method") {
        Some(Value::String(method)) if !method.is_empty() => method,
        _ => return Err(malformed(&id, "method")),
    };
    let params = match request.remove("params") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(params)) => params,
        Some(_) => return Err(malformed(&id, "params")),
    };
    let mut pairs = Vec::with_capacity(params.len());
    for (key, value) in params {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null | Value::Array(_) | Value::Object(_) => return Err(malformed(&id, &key)),
        };
        pairs.push((key, text));
    }
    Ok(Request {
        id,
        method,
        params: Params::from_pairs(pairs),
    })
}

/// One request through Binance's checks, in REST's order: IP gate, weight, injected 429s,
/// authentication, order counts; then the method.
async fn handle(shared: &Arc<Shared>, session: &mut Session, text: &str) -> Outcome {
    let request = match parse_request(text) {
        Ok(request) => request,
        Err((id, err)) => {
            info!(target: "quantum_sim::ws_api", "unreadable request -> {}", err.code);
            return Outcome::Reply(error_frame(&id, &err, None, false));
        }
    };
    let show = match request.params.boolean("returnRateLimits") {
        Ok(value) => value.unwrap_or(session.return_rate_limits),
        Err(err) => return Outcome::Reply(error_frame(&request.id, &err, None, false)),
    };
    let id = &request.id;
    let params = &request.params;
    shared.count_request(format!("WS {}", request.method));
    let Some((method, security)) = lookup(&request.method) else {
        info!(target: "quantum_sim::ws_api", "{:?}: unknown method -> -1020", request.method);
        let usage = shared.limits().usage(wall_ms());
        let err = ApiError::bad(-1020, "This operation is not supported.");
        return Outcome::Reply(error_frame(id, &err, Some(usage), show));
    };

    let admission = shared.limits().ban.admit(wall_ms());
    if let Admission::Banned {
        until_ms,
        retry_after,
    } = admission
    {
        let usage = shared.limits().usage(wall_ms());
        let err = banned(shared, until_ms, retry_after);
        return Outcome::Reply(error_frame(id, &err, Some(usage), show));
    }
    let weighed = shared
        .limits()
        .record_weight(wall_ms(), weight(method, params));
    let usage = match weighed {
        Ok(usage) => usage,
        Err((_, usage)) if !shared.config.enforce_rate_limits => usage,
        Err((exceeded, usage)) => {
            let err = limited(shared, exceeded);
            return Outcome::Reply(error_frame(id, &err, Some(usage), show));
        }
    };
    let injected_429 = shared.with_exchange(|ex, _| {
        let faults = &mut ex.faults;
        let fired = match method {
            WsMethod::OrderCancel => Faults::take(&mut faults.cancel_429),
            WsMethod::OrderStatus => Faults::take(&mut faults.query_429),
            _ => false,
        } || Faults::take(&mut faults.rate_limit_429);
        fired.then_some(faults.retry_after_s.max(1))
    });
    if let Some(retry_after) = injected_429 {
        info!(target: "quantum_sim::faults", "WebSocket API {}: injected 429, Retry-After {retry_after}", request.method);
        let err = limited(shared, Exceeded::Weight { retry_after });
        return Outcome::Reply(error_frame(id, &err, Some(usage), show));
    }

    let now = shared.now_ms();
    let authenticated = if method == WsMethod::SessionLogon {
        Ok(())
    } else {
        authenticate(shared, session, security, params, now)
    };
    if let Err(err) = authenticated {
        info!(target: "quantum_sim::ws_api", "{} -> {} {}", request.method, err.status.as_u16(), err.code);
        return Outcome::Reply(error_frame(id, &err, Some(usage), show));
    }
    let usage = if matches!(
        method,
        WsMethod::OrderPlace | WsMethod::OrderModify | WsMethod::AlgoOrderPlace
    ) {
        let counted = shared.limits().record_orders(wall_ms(), usage, 1, 1);
        match counted {
            Ok(usage) => usage,
            Err((_, usage)) if !shared.config.enforce_rate_limits => usage,
            Err((exceeded, usage)) => {
                let err = limited(shared, exceeded);
                return Outcome::Reply(error_frame(id, &err, Some(usage), show));
            }
        }
    } else {
        usage
    };

    let result = match execute(shared, session, method, params).await {
        Some(result) => result,
        None => return Outcome::Drop,
    };
    let status = result
        .as_ref()
        .map_or_else(|e| e.status, |_| StatusCode::OK);
    info!(target: "quantum_sim::ws_api", "{} -> {}", request.method, status.as_u16());
    Outcome::Reply(match result {
        Ok(value) => ok_frame(id, value, usage, show),
        Err(err) => error_frame(id, &err, Some(usage), show),
    })
}

/// Binance's checks for a request of `security` on this connection. A signed request either
/// carries `apiKey` and `signature` (over the sorted parameters), which override the session
/// for this request as Binance documents, or rides on the session's key; `timestamp` and
/// `recvWindow` are checked either way. The simulator's choices where Binance is silent: a
/// missing `apiKey` (no session) is -1102 for `apiKey`; an `apiKey` other than the session's
/// without a signature is -1102 for `signature`.
fn authenticate(
    shared: &Shared,
    session: &Session,
    security: Security,
    params: &Params,
    now: i64,
) -> Result<(), ApiError> {
    let credentials = &shared.credentials;
    match security {
        Security::None => Ok(()),
        Security::UserStream => match params.get("apiKey") {
            Some(key) => credentials.scheme_of(key).map(|_| ()),
            None if session.authorized.is_some() => Ok(()),
            None => Err(ApiError::mandatory("apiKey")),
        },
        Security::Signed => {
            if let Some(signature) = params.get("signature") {
                let key = params.required("apiKey")?;
                credentials.scheme_of(key)?;
                let window = TimeWindow::of(params)?;
                credentials.verify(key, &params.sorted_payload(), &unescape(signature))?;
                return window.check(now);
            }
            match (&session.authorized, params.get("apiKey")) {
                (Some((session_key, _)), key) if key.is_none_or(|k| k == session_key) => {
                    TimeWindow::of(params)?.check(now)
                }
                (_, None) => Err(ApiError::mandatory("apiKey")),
                (_, Some(key)) => {
                    credentials.scheme_of(key)?;
                    Err(ApiError::mandatory("signature"))
                }
            }
        }
    }
}

/// `session.logon`: only an Ed25519 key can open a session. Binance answers a logon with an HMAC
/// key -1022 (a report on Binance's developer forum, dev.binance.vision topic 19997); the
/// simulator answers every non-Ed25519 key that way, and says why in its log.
fn logon(
    shared: &Shared,
    session: &mut Session,
    params: &Params,
    now: i64,
) -> Result<Value, ApiError> {
    let credentials = &shared.credentials;
    let key = params.required("apiKey")?;
    let scheme = credentials.scheme_of(key)?;
    let window = TimeWindow::of(params)?;
    let signature = params.required("signature")?;
    if scheme != KeyScheme::Ed25519 {
        info!(target: "quantum_sim::ws_api", "session.logon with an {scheme} key: refused with -1022, as Binance takes Ed25519 keys only");
        return Err(ApiError::bad(
            -1022,
            "Signature for this request is not valid.",
        ));
    }
    credentials.verify(key, &params.sorted_payload(), &unescape(signature))?;
    window.check(now)?;
    session.authorized = Some((key.to_string(), now));
    Ok(session.status(now))
}

/// A signature as the checks read it. Binance's WebSocket API takes the base64 of an Ed25519 or
/// RSA signature as a plain JSON string; python-binance 1.0.36 sends it percent-encoded, as for
/// REST (`_sign_ws_params` calls `_generate_signature` with `uri_encode=True`). Binance documents
/// neither acceptance nor refusal; the simulator accepts both, which is unambiguous: `%` is not a
/// base64 character (nor a hex one, so HMAC signatures never change here).
fn unescape(signature: &str) -> std::borrow::Cow<'_, str> {
    if !signature.contains('%') {
        return std::borrow::Cow::Borrowed(signature);
    }
    let decoded: String = form_urlencoded::parse(format!("s={signature}").as_bytes())
        .map(|(_, value)| value.into_owned())
        .next()
        .unwrap_or_default();
    std::borrow::Cow::Owned(decoded)
}

/// Runs an authorized request. `None` means: close the connection without a reply.
async fn execute(
    shared: &Arc<Shared>,
    session: &mut Session,
    method: WsMethod,
    params: &Params,
) -> Option<Result<Value, ApiError>> {
    use WsMethod::*;
    let now = shared.now_ms();
    let result = match method {
        SessionLogon => logon(shared, session, params, now),
        SessionStatus => Ok(session.status(now)),
        SessionLogout => {
            session.authorized = None;
            Ok(session.status(now))
        }
        OrderPlace | OrderModify | AlgoOrderPlace => return place(shared, method, params).await,
        OrderCancel => shared.with_exchange(|ex, now| ex.cancel_order(params, now)),
        OrderStatus => shared.with_exchange(|ex, _| {
            ex.find_order(params)
                .map(|order| ex.order_json(order, OrderShape::Query))
        }),
        AlgoOrderCancel => shared.with_exchange(|ex, now| ex.cancel_algo(params, now)),
        // `account.status` is REST's `GET /fapi/v2/account` and `v2/account.status` its v3, as the
        // documented replies show (v2's positions carry the v3 fields only); the same for
        // positions.
        AccountStatus => shared.with_exchange(|ex, now| Ok(ex.account(false, now))),
        AccountStatusV2 => shared.with_exchange(|ex, now| Ok(ex.account(true, now))),
        AccountBalance | AccountBalanceV2 => shared.with_exchange(|ex, now| Ok(ex.balance(now))),
        AccountPosition | AccountPositionV2 => shared.with_exchange(|ex, _| {
            let symbol = ex.optional_symbol(params)?;
            Ok(Value::Array(ex.position_risk(
                symbol.as_deref(),
                method == AccountPositionV2,
            )))
        }),
        UserDataStreamStart => {
            shared.with_exchange(|ex, now| Ok(json!({ "listenKey": ex.create_listen_key(now) })))
        }
        UserDataStreamPing => shared.with_exchange(|ex, now| {
            ex.keepalive_listen_key(params.get("listenKey"), now)
                .map(|key| json!({ "listenKey": key }))
        }),
        UserDataStreamStop => shared.with_exchange(|ex, now| {
            ex.close_listen_key(params.get("listenKey"), now)
                .map(|()| json!({}))
        }),
        TickerPrice => shared.with_exchange(|ex, now| {
            per_symbol(ex, params, |ex, symbol| {
                let m = &ex.markets[symbol];
                Ok(json!({ "symbol": symbol, "price": m.spec.fmt_price(m.last), "time": now }))
            })
        }),
        TickerBook => shared.with_exchange(|ex, now| {
            per_symbol(ex, params, |ex, symbol| {
                let m = &ex.markets[symbol];
                let (bids, asks) = m.book(1);
                let (Some(bid), Some(ask)) = (bids.first(), asks.first()) else {
                    return Err(ApiError::bad(-1112, "No orders on book for symbol."));
                };
                Ok(json!({
                    "lastUpdateId": m.book_update_id,
                    "symbol": symbol,
                    "bidPrice": m.spec.fmt_price(bid.price), "bidQty": m.spec.fmt_qty(bid.qty),
                    "askPrice": m.spec.fmt_price(ask.price), "askQty": m.spec.fmt_qty(ask.qty),
                    "time": now,
                }))
            })
        }),
    };
    Some(result)
}

/// `order.place`, `order.modify` and `algoOrder.place`, where the order-entry faults apply as on
/// `POST /fapi/v1/order`, `PUT /fapi/v1/order` and `POST /fapi/v1/algoOrder`: `reject_orders`
/// (refused with its code), `drop_order_requests` (not executed, connection closed),
/// `unknown_status_503_not_executed` (not executed, status 503 -1000), `drop_order_responses`
/// (executed, connection closed) and `unknown_status_503` (executed, status 503 -1000). At most
/// one fires per request, in that order of precedence.
async fn place(
    shared: &Arc<Shared>,
    method: WsMethod,
    params: &Params,
) -> Option<Result<Value, ApiError>> {
    let faulted = under_order_faults(shared, || async {
        match method {
            WsMethod::AlgoOrderPlace => shared.with_exchange(|ex, now| ex.place_algo(params, now)),
            WsMethod::OrderModify => crate::server::modify_order(shared, params),
            _ => place_order(shared, params).await,
        }
    })
    .await;
    match faulted {
        Faulted::Reply(result) => Some(result),
        Faulted::Lost => None,
    }
}

/// Methods that answer one object with `symbol`, or an array of every symbol without it.
fn per_symbol(
    ex: &crate::exchange::Exchange,
    params: &Params,
    row: impl Fn(&crate::exchange::Exchange, &str) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    match ex.optional_symbol(params)? {
        Some(symbol) => row(ex, &symbol),
        None => ex
            .markets
            .keys()
            .map(|symbol| row(ex, symbol))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
    }
}

/// The 418 of a banned IP, announced on the exchange's (skewed) clock as REST announces it.
fn banned(shared: &Shared, until_ms: i64, retry_after: u64) -> ApiError {
    let until_ms = until_ms.saturating_add(shared.now_ms() - wall_ms());
    let mut err = ApiError::new(
        StatusCode::IM_A_TEAPOT,
        -1003,
        format!("Way too many requests; IP(127.0.0.1) banned until {until_ms}. Please use the websocket for live updates to avoid bans."),
    );
    err.retry_after = Some(retry_after);
    err
}

/// Binance's `rateLimits`: the IP's weight this minute, and the account's order counts once the
/// request was counted as an order.
fn rate_limits(usage: Usage) -> Value {
    let mut limits = vec![json!({
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": WEIGHT_LIMIT_1M,
        "count": usage.weight_1m,
    })];
    if let Some((ten_seconds, minute)) = usage.orders {
        limits.push(json!({
            "rateLimitType": "ORDERS",
            "interval": "SECOND",
            "intervalNum": 10,
            "limit": ORDER_LIMIT_10S,
            "count": ten_seconds,
        }));
        limits.push(json!({
            "rateLimitType": "ORDERS",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": ORDER_LIMIT_1M,
            "count": minute,
        }));
    }
    Value::Array(limits)
}

fn ok_frame(id: &Value, result: Value, usage: Usage, show: bool) -> Value {
    let mut frame = json!({ "id": id, "status": 200, "result": result });
    if show {
        frame["rateLimits"] = rate_limits(usage);
    }
    frame
}

/// An error reply. A 429 or 418 also says, under `error.data`, when the client may send again
/// (`retryAfter`, epoch ms) next to `serverTime`: the form Binance's Spot WebSocket API documents;
/// the USDⓈ-M pages show no rate-limit error of this API.
fn error_frame(id: &Value, err: &ApiError, usage: Option<Usage>, show: bool) -> Value {
    let mut error = json!({ "code": err.code, "msg": err.msg });
    if let Some(secs) = err.retry_after {
        let now = wall_ms();
        let wait_ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        error["data"] = json!({ "serverTime": now, "retryAfter": now.saturating_add(wait_ms) });
    }
    let mut frame = json!({ "id": id, "status": err.status.as_u16(), "error": error });
    if let (true, Some(usage)) = (show, usage) {
        frame["rateLimits"] = rate_limits(usage);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_spelling_and_the_payload_is_sorted_by_name() {
        let request = parse_request(
            r#"{"id":"a","method":"order.place","params":{"timestamp":1702555533821,"price":43187.00,"quantity":"0.1","apiKey":"k","reduceOnly":false,"signature":"x"}}"#,
        )
        .unwrap();
        assert_eq!(
            request.params.sorted_payload(),
            "apiKey=k&price=43187.00&quantity=0.1&reduceOnly=false&timestamp=1702555533821"
        );
    }

    #[test]
    fn unreadable_envelopes_are_refused_with_the_id_when_there_is_one() {
        let (id, err) = parse_request("not json").unwrap_err();
        assert_eq!((id, err.code), (Value::Null, -1102));
        let (id, err) = parse_request(r#"{"id":7,"params":{}}"#).unwrap_err();
        assert_eq!((id, err.code), (json!(7), -1102));
        let (id, err) =
            parse_request(r#"{"id":"x","method":"order.place","params":[1]}"#).unwrap_err();
        assert_eq!((id, err.code), (json!("x"), -1102));
        let (_, err) =
            parse_request(r#"{"id":1,"method":"order.status","params":{"orderId":[1]}}"#)
                .unwrap_err();
        assert!(err.msg.contains("'orderId'"), "{}", err.msg);
        let (id, _) = parse_request(r#"{"id":{"a":1},"method":"session.status"}"#).unwrap_err();
        assert_eq!(id, Value::Null);
    }

    #[test]
    fn a_percent_encoded_base64_signature_is_read_as_its_base64() {
        assert_eq!(unescape("ab%2Bcd%2F%3D%3D"), "ab+cd/==");
        assert_eq!(unescape("ab+cd/=="), "ab+cd/==");
        assert_eq!(unescape("0f04368b"), "0f04368b");
    }

    #[test]
    fn a_v1_prefix_names_the_unprefixed_method_and_v2_methods_are_their_own() {
        assert_eq!(
            lookup("v1/order.place").map(|m| m.0),
            Some(WsMethod::OrderPlace)
        );
        assert_eq!(
            lookup("v2/account.status").map(|m| m.0),
            Some(WsMethod::AccountStatusV2)
        );
        assert_eq!(lookup("v2/order.place"), None);
        assert_eq!(lookup("order.nothing"), None);
    }

    #[test]
    fn rate_limits_list_orders_only_once_counted() {
        let weight_only = rate_limits(Usage {
            weight_1m: 7,
            orders: None,
        });
        assert_eq!(weight_only.as_array().map(Vec::len), Some(1));
        assert_eq!(weight_only[0]["count"], 7);
        let with_orders = rate_limits(Usage {
            weight_1m: 7,
            orders: Some((2, 3)),
        });
        assert_eq!(with_orders[1]["count"], 2);
        assert_eq!(with_orders[2]["count"], 3);
    }

    /// `ENDPOINTS.md`'s WebSocket API rows: method, security, status.
    fn coverage_rows() -> Vec<(String, String, String)> {
        include_str!("../ENDPOINTS.md")
            .lines()
            .skip_while(|line| !line.starts_with("## WebSocket API"))
            .skip(1)
            .take_while(|line| !line.starts_with("## "))
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<String> = line
                    .split('|')
                    .map(|c| c.trim().trim_matches('`').to_string())
                    .collect();
                (cells[1].clone(), cells[2].clone(), cells[3].clone())
            })
            .collect()
    }

    #[test]
    fn the_coverage_table_matches_the_method_table() {
        let rows = coverage_rows();
        assert!(rows.len() >= METHODS.len(), "{} rows", rows.len());
        for (method, security, status) in &rows {
            let served = lookup(method);
            match status.as_str() {
                "implemented" => {
                    let (_, served) =
                        served.unwrap_or_else(|| panic!("{method} is marked implemented"));
                    let expected = Security::from_table(security)
                        .unwrap_or_else(|| panic!("{method}: unknown security {security:?}"));
                    assert_eq!(served, expected, "{method}");
                }
                "not yet" | "out of scope" => {
                    assert!(served.is_none(), "{method} is served; mark it implemented")
                }
                other => panic!("{method}: unknown status {other:?}"),
            }
        }
        for (method, _, _) in METHODS {
            assert!(
                rows.iter()
                    .any(|(m, _, s)| m == method && s == "implemented"),
                "{method} is served but has no implemented row in ENDPOINTS.md's WebSocket API table"
            );
        }
    }
}
