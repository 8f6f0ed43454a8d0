//! The REST transport: one [`RestClient`] per account, cheap to clone. It owns the HTTP client,
//! the server-time offset, the rate-limit governor and the exchangeInfo cache, and it is the only
//! place that sends bytes to `/fapi`. Endpoint methods live in `endpoints.rs`; this file decides
//! how a request is signed, when it may be retried and how its failure is classified.
//!
//! Retries are deliberately narrow. A request is resent only when the exchange is known not to
//! have executed it: after -1021 (refused at the gateway for its timestamp; we resync the clock
//! first), or for a read after a 429 with a short `Retry-After`. Anything that may have placed an
//! order is returned to the caller, classified, and never resent here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::config::Config;
use crate::error::{classify_reply, classify_transport, Effect, Error};
use crate::filters::SymbolRules;
use crate::ratelimit::{Governor, SharedBudget, Verdict};
use crate::sign;
use crate::types::ServerTime;

/// The longest a read waits on its own for a 429/418 to pass before retrying once. Longer bans
/// go back to the caller.
const MAX_READ_BACKOFF: Duration = Duration::from_secs(10);
/// The longest the governor holds a request for a full window before handing it back to the
/// caller as "not sent, rate limit" ([`Error::Transient`] with the wait): callers that wait
/// longer (an order held back until the next minute) do it themselves, between heartbeats and
/// with their own deadline and shutdown in view, rather than blocked in here.
const MAX_WINDOW_WAIT: Duration = Duration::from_secs(5);

/// How a request is authenticated (Binance's security types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// `NONE`: public market data.
    Public,
    /// `USER_STREAM` / `MARKET_DATA`: API key header, no signature.
    Key,
    /// `TRADE` / `USER_DATA`: API key header, `timestamp`, `recvWindow` and `signature`.
    Signed,
}

/// One request to send.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    pub(crate) params: Vec<(&'static str, String)>,
    pub(crate) security: Security,
    /// IP request weight, for the governor.
    pub(crate) weight: u32,
    /// Counts against the order-rate limits.
    pub(crate) is_order: bool,
}

impl Call {
    pub(crate) fn new(method: Method, path: &'static str, security: Security, weight: u32) -> Call {
        Call {
            method,
            path,
            params: Vec::new(),
            security,
            weight,
            is_order: false,
        }
    }

    pub(crate) fn param(mut self, name: &'static str, value: impl ToString) -> Call {
        self.params.push((name, value.to_string()));
        self
    }

    pub(crate) fn params(mut self, params: Vec<(&'static str, String)>) -> Call {
        self.params.extend(params);
        self
    }

    pub(crate) fn order(mut self) -> Call {
        self.is_order = true;
        self
    }

    fn effect(&self) -> Effect {
        if self.method == Method::GET {
            Effect::Read
        } else {
            Effect::Write
        }
    }

    fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// A Binance USD-M Futures REST client. Clones share the connection pool, clock offset,
/// governor and exchangeInfo cache.
#[derive(Debug, Clone)]
pub struct RestClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: Config,
    /// serverTime − local time, in ms; added to the local clock for every `timestamp`.
    offset_ms: AtomicI64,
    /// Whether `offset_ms` was ever measured; the first signed call measures it if not.
    synced: AtomicBool,
    /// Std mutex: held only for the few arithmetic steps of a decision, never across an await.
    governor: Mutex<Governor>,
    /// The budget shared with other processes on the same IP and account, once set.
    shared: std::sync::OnceLock<Arc<dyn SharedBudget>>,
    /// When the shared budget last failed (ms), so its failures are logged once a minute.
    shared_failed_ms: AtomicI64,
    /// Symbol rules from the last exchangeInfo, by symbol. Replaced wholesale on refresh.
    symbols: RwLock<HashMap<String, Arc<SymbolRules>>>,
    /// Requests sent, by `METHOD path`: every request costs capacity, so it is counted.
    sent: Mutex<std::collections::BTreeMap<String, u64>>,
    /// 429 / 418 replies, by status.
    bans: Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl RestClient {
    /// Builds a client. No request is sent until the first call.
    ///
    /// # Errors
    /// [`Error::Config`] when the HTTP client cannot be built.
    pub fn new(config: Config) -> Result<RestClient, Error> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(RestClient {
            inner: Arc::new(Inner {
                http,
                config,
                offset_ms: AtomicI64::new(0),
                synced: AtomicBool::new(false),
                governor: Mutex::new(Governor::default()),
                shared: std::sync::OnceLock::new(),
                shared_failed_ms: AtomicI64::new(0),
                symbols: RwLock::new(HashMap::new()),
                sent: Mutex::new(std::collections::BTreeMap::new()),
                bans: Mutex::new(std::collections::BTreeMap::new()),
            }),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The current estimate of serverTime − local time in signed milliseconds.
    pub fn time_offset_ms(&self) -> i64 {
        self.inner.offset_ms.load(Ordering::Relaxed)
    }

    /// Measures the server clock with `GET /fapi/v1/time`: offset = serverTime − the midpoint of
    /// send and receive, which cancels a symmetric network delay. Returns the offset in ms.
    ///
    /// # Errors
    /// Any error of the time request.
    pub async fn sync_time(&self) -> Result<i64, Error> {
        let sent = local_ms();
        let time: ServerTime = self
            .send_checked(&Call::new(
                Method::GET,
                "/fapi/v1/time",
                Security::Public,
                1,
            ))
            .await?;
        let received = local_ms();
        // A server time that puts the offset past an i64 is no clock (outside input must never
        // panic): the reply is refused as undecodable, the offset kept.
        let offset = time
            .server_time
            .checked_sub((sent + received) / 2)
            .ok_or_else(|| Error::Decode {
                endpoint: "GET /fapi/v1/time".into(),
                error: format!("serverTime {} is out of range", time.server_time),
                body: String::new(),
            })?;
        self.inner.offset_ms.store(offset, Ordering::Relaxed);
        self.inner.synced.store(true, Ordering::Relaxed);
        debug!(
            target: "binance::time",
            offset_ms = offset,
            round_trip_ms = received - sent,
            "server time synchronised"
        );
        Ok(offset)
    }

    /// The server's clock as we estimate it, in ms.
    pub fn server_now_ms(&self) -> i64 {
        local_ms().saturating_add(self.inner.offset_ms.load(Ordering::Relaxed))
    }

    /// Request weight used in the current minute (as the last reply reported it, plus what this
    /// client sent since) and the limit from exchangeInfo, for the
    /// `quantum_rate_limit_weight_*` gauges.
    pub fn weight_usage(&self) -> (u32, u32) {
        self.governor().weight_usage(self.server_now_ms())
    }

    /// Makes every request of this client (and its clones) also take its cost from `budget`,
    /// shared with the other processes on the same IP and account, and report 429/418 bans to
    /// it. Set once; a second call is refused with the budget given back.
    ///
    /// # Errors
    /// The budget given, when one is already set.
    pub fn share_budget(&self, budget: Arc<dyn SharedBudget>) -> Result<(), Arc<dyn SharedBudget>> {
        self.inner.shared.set(budget)
    }

    /// Requests sent so far by this client, by `METHOD path` (for `quantum_rest_requests_total`
    /// and for benchmarks that count what an operation costs).
    pub fn requests_sent(&self) -> Vec<(String, u64)> {
        self.inner
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// 429 and 418 replies this client has had, by status (for
    /// `quantum_rate_limit_bans_total`).
    pub fn bans_seen(&self) -> Vec<(u16, u64)> {
        self.inner
            .bans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    pub(crate) fn cache_rules(&self, rules: HashMap<String, Arc<SymbolRules>>) {
        *self
            .inner
            .symbols
            .write()
            .unwrap_or_else(PoisonError::into_inner) = rules;
    }

    pub(crate) fn cached_rules(&self, symbol: &str) -> Option<Arc<SymbolRules>> {
        self.inner
            .symbols
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(symbol)
            .cloned()
    }

    pub(crate) fn set_rate_limits(&self, limits: &[crate::types::RateLimit]) {
        self.governor().set_limits(limits);
    }

    fn governor(&self) -> std::sync::MutexGuard<'_, Governor> {
        self.inner
            .governor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `call` with the retry rules in the module docs and decodes the reply as `T`.
    pub(crate) async fn send<T: DeserializeOwned>(&self, call: Call) -> Result<T, Error> {
        if call.security == Security::Signed && !self.inner.synced.load(Ordering::Relaxed) {
            self.sync_time().await?;
        }
        let mut resynced = false;
        let mut waited_for_ban = false;
        loop {
            match self.send_checked(&call).await {
                Err(error)
                    if error.code() == Some(-1021)
                        && call.security == Security::Signed
                        && !resynced =>
                {
                    // -1021 is checked at the gateway before anything executes, so this exact
                    // request (with a fresh timestamp) can be sent once more.
                    warn!(target: "binance::time", "{}: -1021, resynchronising the clock and retrying once", call.describe());
                    resynced = true;
                    self.sync_time().await?;
                }
                Err(Error::Transient {
                    retry_after: Some(wait),
                    ..
                }) if call.effect() == Effect::Read
                    && !waited_for_ban
                    && wait <= MAX_READ_BACKOFF =>
                {
                    // A read changes nothing, so waiting out a short ban and asking again is safe.
                    waited_for_ban = true;
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Asks the governor, then sends once.
    async fn send_checked<T: DeserializeOwned>(&self, call: &Call) -> Result<T, Error> {
        self.admit(call).await?;
        self.send_once(call).await
    }

    /// Asks this client's governor and then the shared budget (if any) about `call`, counting it
    /// where both agree. A shared budget that cannot be reached leaves the decision to the
    /// governor alone (logged once a minute): the exchange's own headers still raise its counts.
    async fn verdict(&self, call: &Call) -> Verdict {
        let now = self.server_now_ms();
        let Some(shared) = self.inner.shared.get() else {
            return self.governor().admit(now, call.weight, call.is_order);
        };
        let (local, limits) = {
            let governor = self.governor();
            (
                governor.check(now, call.weight, call.is_order),
                governor.limits(),
            )
        };
        if local != Verdict::Go {
            return local;
        }
        match shared.take(now, call.weight, call.is_order, limits).await {
            Ok(Verdict::Go) => {
                self.governor().count(now, call.weight, call.is_order);
                Verdict::Go
            }
            Ok(wait) => wait,
            Err(e) => {
                let last = self.inner.shared_failed_ms.swap(now, Ordering::Relaxed);
                if now - last > 60_000 {
                    warn!(target: "binance::ratelimit", "the shared rate budget cannot be reached ({e}); counting this process's requests alone until it can");
                }
                self.governor().admit(now, call.weight, call.is_order)
            }
        }
    }

    /// Waits for the account's order budget (this client's governor and the shared budget) for an
    /// order sent through another door, the WebSocket API: the order limits are the account's,
    /// whichever way an order goes. Fails like an order request held back (nothing sent).
    ///
    /// # Errors
    /// [`Error::Transient`] when the budget is spent or a ban is in force.
    pub async fn admit_order(&self) -> Result<(), Error> {
        self.admit(&Call::new(Method::POST, "ws-fapi order.place", Security::Signed, 0).order())
            .await
    }

    /// Waits for the IP's request weight for a request sent through the WebSocket API (an order
    /// lookup or cancel): the weight budget is the IP's, whichever door a request takes. A read
    /// waits out a short ban as REST's reads do; a write fails without sending.
    ///
    /// # Errors
    /// [`Error::Transient`] when the budget is spent or a ban is in force (nothing was sent).
    pub(crate) async fn admit_weight(
        &self,
        what: &'static str,
        weight: u32,
        effect: Effect,
    ) -> Result<(), Error> {
        let method = match effect {
            Effect::Read => Method::GET,
            Effect::Write => Method::DELETE,
        };
        self.admit(&Call::new(method, what, Security::Signed, weight))
            .await
    }

    /// Waits until the governor (and the shared budget) lets `call` go. A ban makes reads wait
    /// (briefly) and writes fail without sending, so the caller decides about orders.
    async fn admit(&self, call: &Call) -> Result<(), Error> {
        let mut waited = Duration::ZERO;
        loop {
            let verdict = self.verdict(call).await;
            match verdict {
                Verdict::Go => return Ok(()),
                Verdict::Wait(wait) if waited < MAX_WINDOW_WAIT => {
                    // Short naps, asking again after each: the window may roll, and a shared
                    // budget may free up sooner than its first answer said.
                    let nap = wait.min(MAX_WINDOW_WAIT - waited);
                    debug!(target: "binance::ratelimit", "{}: rate window full for {wait:?}, waiting {nap:?}", call.describe());
                    waited += nap;
                    tokio::time::sleep(nap).await;
                }
                Verdict::Banned(wait)
                    if call.effect() == Effect::Read && waited + wait <= MAX_READ_BACKOFF =>
                {
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
                Verdict::Wait(wait) | Verdict::Banned(wait) => {
                    return Err(Error::Transient {
                        reason: format!(
                            "{}: not sent, rate limit in force for {wait:?}",
                            call.describe()
                        ),
                        status: None,
                        code: None,
                        retry_after: Some(wait),
                    })
                }
            }
        }
    }

    async fn send_once<T: DeserializeOwned>(&self, call: &Call) -> Result<T, Error> {
        *self
            .inner
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(format!("{} {}", call.method, call.path))
            .or_default() += 1;
        let config = &self.inner.config;
        let effect = call.effect();
        let mut params = call.params.clone();
        if call.security == Security::Signed {
            params.push(("timestamp", self.server_now_ms().to_string()));
            params.push(("recvWindow", config.recv_window.as_millis().to_string()));
        }
        let mut encoded = sign::encode_params(&params);
        if call.security == Security::Signed {
            encoded = match &config.private_key {
                Some(key) => sign::append_key_signature(key, &encoded),
                None => sign::append_signature(config.api_secret.expose(), &encoded),
            };
        }
        let mut url = config
            .rest_url
            .join(call.path)
            .map_err(|e| Error::Config(format!("bad path {}: {e}", call.path)))?;
        let in_body = call.method == Method::POST || call.method == Method::PUT;
        let mut request = if in_body {
            self.inner
                .http
                .request(call.method.clone(), url)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(encoded)
        } else {
            if !encoded.is_empty() {
                url.set_query(Some(&encoded));
            }
            self.inner.http.request(call.method.clone(), url)
        };
        if call.security != Security::Public {
            request = request.header("X-MBX-APIKEY", &config.api_key);
        }
        let endpoint = call.describe();
        let response = request
            .send()
            .await
            .map_err(|e| classify_transport(effect, &endpoint, &e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        self.observe_headers(&headers);
        // Reading the body can fail too (connection cut mid-reply): still a transport failure.
        let body = response
            .text()
            .await
            .map_err(|e| classify_transport(effect, &endpoint, &e))?;
        debug!(target: "binance::http", "{endpoint} -> {status}");
        if (200..300).contains(&status) {
            return serde_json::from_str(&body).map_err(|e| match effect {
                // The request succeeded but we cannot read what it did: the caller must look.
                Effect::Write => Error::Ambiguous {
                    reason: format!("{endpoint}: undecodable success reply: {e}"),
                    status: Some(status),
                    code: None,
                    body: Some(body.clone()),
                },
                Effect::Read => Error::Decode {
                    endpoint: endpoint.clone(),
                    error: e.to_string(),
                    body: body.clone(),
                },
            });
        }
        let retry_after = header_u64(&headers, "retry-after").map(Duration::from_secs);
        if status == 429 || status == 418 {
            let ban = retry_after.unwrap_or(if status == 418 {
                Duration::from_secs(120)
            } else {
                Duration::from_secs(1)
            });
            let now = self.server_now_ms();
            self.governor().ban(now, ban);
            if let Some(shared) = self.inner.shared.get() {
                let until = now.saturating_add(i64::try_from(ban.as_millis()).unwrap_or(i64::MAX));
                if let Err(e) = shared.ban(now, until).await {
                    warn!(target: "binance::ratelimit", "cannot tell the shared rate budget about the ban: {e}");
                }
            }
            warn!(target: "binance::ratelimit", "{endpoint}: HTTP {status}, pausing requests for {ban:?}");
            *self
                .inner
                .bans
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(status)
                .or_default() += 1;
        }
        Err(classify_reply(effect, status, retry_after, &body))
    }

    fn observe_headers(&self, headers: &HeaderMap) {
        let weight = header_u64(headers, "x-mbx-used-weight-1m").map(saturate);
        let orders_10s = header_u64(headers, "x-mbx-order-count-10s").map(saturate);
        let orders_1m = header_u64(headers, "x-mbx-order-count-1m").map(saturate);
        if weight.is_some() || orders_10s.is_some() || orders_1m.is_some() {
            let now = self.server_now_ms();
            self.governor().observe(now, weight, orders_10s, orders_1m);
        }
    }
}

fn saturate(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Local wall-clock time in ms since the epoch.
pub(crate) fn local_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
