//! WebSocket streams on the REST port: market streams (`/ws/<stream>`, `/stream?streams=a/b`, also
//! under `/market` and `/public`) with SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, and the user
//! data stream (`/ws/<listenKey>`, `/private/ws/<listenKey>`, `/private/ws?listenKey=..&events=..`).
//! Every connection gets server pings; frames follow Binance's raw and combined shapes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::exchange::Outgoing;
use crate::server::Shared;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    let mut router = Router::new();
    for prefix in ["", "/market", "/public"] {
        router = router
            .route(&format!("{prefix}/ws"), get(raw_root))
            .route(&format!("{prefix}/ws/{{*stream}}"), get(raw_stream))
            .route(&format!("{prefix}/stream"), get(combined));
    }
    router
        .route("/private/ws", get(private_query))
        .route("/private/ws/{key}", get(private_path))
        .route("/private/stream", get(private_combined))
}

/// What one connection listens to.
#[derive(Debug, Clone)]
enum Feed {
    Market {
        streams: BTreeSet<String>,
    },
    User {
        listen_key: String,
        events: Option<BTreeSet<String>>,
    },
}

#[derive(Debug, Clone)]
struct Connection {
    feed: Feed,
    /// Combined mode wraps each payload as `{"stream":..,"data":..}`.
    combined: bool,
}

async fn raw_root(ws: WebSocketUpgrade, State(shared): State<Arc<Shared>>) -> Response {
    upgrade(
        ws,
        shared,
        Connection {
            feed: Feed::Market {
                streams: BTreeSet::new(),
            },
            combined: false,
        },
    )
}

async fn raw_stream(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    Path(stream): Path<String>,
) -> Response {
    // `/ws/<listenKey>` is the user stream when the key is live; anything else is a market stream.
    let now = shared.now_ms();
    if shared.with_exchange(|ex, _| ex.listen_key_valid(&stream, now)) {
        let feed = Feed::User {
            listen_key: stream,
            events: None,
        };
        return upgrade(
            ws,
            shared,
            Connection {
                feed,
                combined: false,
            },
        );
    }
    let streams = stream
        .split('/')
        .filter(|s| !s.is_empty())
        .map(normalize_stream)
        .collect();
    upgrade(
        ws,
        shared,
        Connection {
            feed: Feed::Market { streams },
            combined: false,
        },
    )
}

async fn combined(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let streams = query
        .get("streams")
        .map(|s| {
            s.split('/')
                .filter(|s| !s.is_empty())
                .map(normalize_stream)
                .collect()
        })
        .unwrap_or_default();
    upgrade(
        ws,
        shared,
        Connection {
            feed: Feed::Market { streams },
            combined: true,
        },
    )
}

async fn private_query(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    private(
        ws,
        shared,
        query.get("listenKey").cloned(),
        query.get("events").cloned(),
        false,
    )
}

async fn private_path(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
) -> Response {
    private(ws, shared, Some(key), None, false)
}

async fn private_combined(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    private(
        ws,
        shared,
        query.get("listenKey").cloned(),
        query.get("events").cloned(),
        true,
    )
}

fn private(
    ws: WebSocketUpgrade,
    shared: Arc<Shared>,
    key: Option<String>,
    events: Option<String>,
    combined: bool,
) -> Response {
    let Some(listen_key) = key else {
        return ApiError::mandatory("listenKey").into_response();
    };
    let now = shared.now_ms();
    if !shared.with_exchange(|ex, _| ex.listen_key_valid(&listen_key, now)) {
        return ApiError::bad(-1125, "This listenKey does not exist.").into_response();
    }
    // `events` is a strict allow-list ('/'-separated); without it every event is delivered.
    let events = events.map(|e| {
        e.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    });
    upgrade(
        ws,
        shared,
        Connection {
            feed: Feed::User { listen_key, events },
            combined,
        },
    )
}

/// Symbols are lower-case in stream names; the `!` array streams and suffixes keep their case.
fn normalize_stream(name: &str) -> String {
    match name.split_once('@') {
        Some((symbol, rest)) if !symbol.starts_with('!') => {
            format!("{}@{rest}", symbol.to_ascii_lowercase())
        }
        _ => name.to_string(),
    }
}

fn upgrade(ws: WebSocketUpgrade, shared: Arc<Shared>, connection: Connection) -> Response {
    ws.on_upgrade(move |socket| {
        let tasks = shared.tasks.clone();
        tasks.track_future(serve(socket, shared, connection))
    })
}

async fn serve(mut socket: WebSocket, shared: Arc<Shared>, mut connection: Connection) {
    let mut events = shared.events.subscribe();
    let mut ping = tokio::time::interval(shared.config.ws_ping_interval);
    ping.tick().await; // The first tick is immediate; pings start one interval after connecting.
    let kind = match &connection.feed {
        Feed::Market { streams } => format!("market streams {streams:?}"),
        Feed::User { .. } => "user data stream".to_string(),
    };
    info!(target: "quantum_sim::ws", "websocket opened: {kind}");
    // The exchange builds payloads only for streams someone watches (depth snapshots are not free).
    let mut watched = market_streams(&connection);
    shared.with_exchange(|ex, _| ex.watch(&watched, true));
    // Set when this connection's listenKey expired: the socket stays open but carries nothing.
    let mut silenced = false;
    let end_of_life = tokio::time::sleep(shared.config.ws_max_lifetime);
    tokio::pin!(end_of_life);
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            _ = &mut end_of_life => {
                info!(target: "quantum_sim::ws", "websocket reached its maximum lifetime; closing it");
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(b"quantum-sim".to_vec().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = control_message(&mut connection, text.as_str());
                    let now_watched = market_streams(&connection);
                    if now_watched != watched {
                        let added = now_watched.difference(&watched).cloned().collect();
                        let removed = watched.difference(&now_watched).cloned().collect();
                        shared.with_exchange(|ex, _| {
                            ex.watch(&added, true);
                            ex.watch(&removed, false);
                        });
                        watched = now_watched;
                    }
                    if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {} // Pongs and pings (axum answers pings itself).
            },
            event = events.recv() => match event {
                Ok(event) => match deliver(&connection, &event, &mut silenced) {
                    Delivery::Send(frame) => {
                        if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                    Delivery::Skip => {}
                    Delivery::Drop => {
                        info!(target: "quantum_sim::ws", "disconnect_user_streams: dropping a user data stream");
                        // Dropped without a close frame, like a connection that dies.
                        break;
                    }
                },
                Err(RecvError::Lagged(n)) => {
                    warn!(target: "quantum_sim::ws", "websocket fell {n} events behind; disconnecting it");
                    break;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    shared.with_exchange(|ex, _| ex.watch(&watched, false));
    info!(target: "quantum_sim::ws", "websocket closed: {kind}");
}

fn market_streams(connection: &Connection) -> BTreeSet<String> {
    match &connection.feed {
        Feed::Market { streams } => streams.clone(),
        Feed::User { .. } => BTreeSet::new(),
    }
}

enum Delivery {
    Send(Value),
    Skip,
    Drop,
}

fn deliver(connection: &Connection, event: &Outgoing, silenced: &mut bool) -> Delivery {
    let wrap = |stream: &str, payload: &Value| {
        if connection.combined {
            json!({ "stream": stream, "data": payload })
        } else {
            payload.clone()
        }
    };
    match (&connection.feed, event) {
        (Feed::Market { streams }, Outgoing::Market { stream, payload })
            if streams.contains(stream) =>
        {
            Delivery::Send(wrap(stream, payload))
        }
        (Feed::User { listen_key, events }, Outgoing::User { event, payload }) if !*silenced => {
            if events
                .as_ref()
                .is_none_or(|allowed| allowed.contains(*event))
            {
                Delivery::Send(wrap(listen_key, payload))
            } else {
                Delivery::Skip
            }
        }
        (
            Feed::User { listen_key, events },
            Outgoing::ListenKeyExpired {
                listen_key: expired,
                payload,
            },
        ) if listen_key == expired && !*silenced => {
            *silenced = true;
            if events
                .as_ref()
                .is_none_or(|allowed| allowed.contains("listenKeyExpired"))
            {
                Delivery::Send(wrap(listen_key, payload))
            } else {
                Delivery::Skip
            }
        }
        (Feed::User { .. }, Outgoing::DisconnectUserStreams) => Delivery::Drop,
        _ => Delivery::Skip,
    }
}

/// SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY.
fn control_message(connection: &mut Connection, text: &str) -> Value {
    let Ok(request) = serde_json::from_str::<Value>(text) else {
        return json!({ "code": 3, "msg": "Invalid JSON: expected value at line 1 column 1" });
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    let params: Vec<String> = request
        .get("params")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let Feed::Market { streams } = &mut connection.feed else {
        return json!({ "code": 2, "msg": "Invalid request: user data streams take no commands", "id": id });
    };
    match method {
        "SUBSCRIBE" => {
            streams.extend(params.iter().map(|p| normalize_stream(p)));
            json!({ "result": null, "id": id })
        }
        "UNSUBSCRIBE" => {
            for p in &params {
                streams.remove(&normalize_stream(p));
            }
            json!({ "result": null, "id": id })
        }
        "LIST_SUBSCRIPTIONS" => json!({ "result": streams.iter().collect::<Vec<_>>(), "id": id }),
        "SET_PROPERTY" => {
            if params.first().map(String::as_str) == Some("combined") {
                connection.combined = request["params"]
                    .get(1)
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                json!({ "result": null, "id": id })
            } else {
                json!({ "code": 2, "msg": "Invalid request: unknown property", "id": id })
            }
        }
        "GET_PROPERTY" => json!({ "result": connection.combined, "id": id }),
        _ => {
            json!({ "code": 2, "msg": format!("Invalid request: unknown method {method:?}"), "id": id })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_lower_case_the_symbol_only() {
        assert_eq!(
            normalize_stream("BTCUSDT@markPrice@1s"),
            "btcusdt@markPrice@1s"
        );
        assert_eq!(normalize_stream("!markPrice@arr@1s"), "!markPrice@arr@1s");
    }

    #[test]
    fn subscribe_then_list_then_unsubscribe() {
        let mut c = Connection {
            feed: Feed::Market {
                streams: BTreeSet::new(),
            },
            combined: false,
        };
        let r = control_message(
            &mut c,
            r#"{"method":"SUBSCRIBE","params":["btcusdt@aggTrade"],"id":1}"#,
        );
        assert_eq!(r, json!({"result": null, "id": 1}));
        let r = control_message(&mut c, r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#);
        assert_eq!(r, json!({"result": ["btcusdt@aggTrade"], "id": 3}));
        control_message(
            &mut c,
            r#"{"method":"UNSUBSCRIBE","params":["btcusdt@aggTrade"],"id":2}"#,
        );
        let r = control_message(&mut c, r#"{"method":"LIST_SUBSCRIPTIONS","id":4}"#);
        assert_eq!(r, json!({"result": [], "id": 4}));
    }

    #[test]
    fn an_events_allow_list_without_listen_key_expired_hides_it() {
        let c = Connection {
            feed: Feed::User {
                listen_key: "k".into(),
                events: Some(["ORDER_TRADE_UPDATE".to_string()].into()),
            },
            combined: false,
        };
        let mut silenced = false;
        let expired = Outgoing::ListenKeyExpired {
            listen_key: "k".into(),
            payload: json!({}),
        };
        assert!(matches!(
            deliver(&c, &expired, &mut silenced),
            Delivery::Skip
        ));
        assert!(
            silenced,
            "the connection goes quiet even when the event is filtered out"
        );
    }
}
