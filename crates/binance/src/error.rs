//! The client's one error type, split by what the caller must do next: give up and report
//! ([`Error::Rejected`]), look the order up because it may exist ([`Error::Ambiguous`]), retry
//! later ([`Error::Transient`]), accept absence ([`Error::NotFound`]), or stop and fix the setup
//! ([`Error::Auth`], [`Error::Config`]). It also owns the rules that turn an HTTP outcome into one
//! of those, because those rules are where "never report an unconfirmed fill" and "never place a
//! duplicate" are won or lost.

use std::time::Duration;

use serde::Deserialize;

/// Whether a request can change state on the exchange. The same failure means different things
/// for the two: a timeout on a read is just a retry, a timeout on an order placement means the
/// order may exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Reads nothing but state (GET).
    Read,
    /// Places, cancels or changes something (POST, PUT, DELETE).
    Write,
}

/// An error from the Binance client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A definite refusal by the API (e.g. -2019 margin insufficient, -4164 min notional,
    /// -1111 precision). The request was not executed; resending it unchanged fails again.
    #[error("rejected by Binance (HTTP {status}, code {code}): {msg}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Binance's error code.
        code: i64,
        /// Binance's message.
        msg: String,
    },
    /// The request was (or may have been) sent and its outcome is unknown: a timeout or dropped
    /// connection after sending, HTTP 503 "Unknown error", -1006, -1007, or a success reply that
    /// cannot be decoded. **The order may exist.** Look it up by its client order id (or wait for
    /// the user stream) before doing anything else; never resend blindly.
    #[error("outcome unknown ({reason}); the request may have been executed")]
    Ambiguous {
        /// What happened, in words.
        reason: String,
        /// HTTP status, when a reply came.
        status: Option<u16>,
        /// Binance's error code, when the reply had one.
        code: Option<i64>,
        /// The raw reply body, when there was one.
        body: Option<String>,
    },
    /// A failure that did not execute anything and may succeed later: connection refused before
    /// sending, 429/418 (see `retry_after`), 503 "Service Unavailable", -1001, -1008, or a read
    /// that timed out.
    #[error("temporary failure ({reason}){}", retry_after.map(|d| format!("; retry after {d:?}")).unwrap_or_default())]
    Transient {
        /// What happened, in words.
        reason: String,
        /// HTTP status, when a reply came.
        status: Option<u16>,
        /// Binance's error code, when the reply had one.
        code: Option<i64>,
        /// How long Binance asked us to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    /// The order, algo order or listenKey does not exist (-2013, -2011, -1125).
    #[error("not found (code {code}): {msg}")]
    NotFound {
        /// Binance's error code.
        code: i64,
        /// Binance's message.
        msg: String,
    },
    /// The key, signature or permissions are wrong (-2014, -2015, -1022, HTTP 401/403). Stop:
    /// retrying cannot help.
    #[error("authentication failed (HTTP {status}{}): {msg}", code.map(|c| format!(", code {c}")).unwrap_or_default())]
    Auth {
        /// HTTP status.
        status: u16,
        /// Binance's error code, if any.
        code: Option<i64>,
        /// Binance's message.
        msg: String,
    },
    /// A read reply that could not be decoded: a bug in our types or an API change. The raw
    /// body is kept for the alert.
    #[error("cannot decode the reply of {endpoint}: {error}")]
    Decode {
        /// Which endpoint.
        endpoint: String,
        /// The decoder's complaint.
        error: String,
        /// The raw body.
        body: String,
    },
    /// The client refused to send the request because it could not be valid (e.g. a client
    /// order id that does not match Binance's pattern). Nothing was sent.
    #[error("invalid request, not sent: {0}")]
    InvalidRequest(String),
    /// The configuration is unusable (bad URL, unbuildable HTTP client).
    #[error("configuration error: {0}")]
    Config(String),
    /// [`crate::Venue::Mainnet`] was asked for without `allow_mainnet`.
    #[error("mainnet refused: pass allow_mainnet=true to trade real money")]
    MainnetNotAllowed,
}

impl Error {
    /// True when the request may have been executed and the caller must look it up.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Error::Ambiguous { .. })
    }

    /// True when nothing was executed and the same request may be sent again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// True for a definite refusal by the API.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Error::Rejected { .. })
    }

    /// True for "does not exist".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Binance's error code, when the reply carried one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Error::Rejected { code, .. } | Error::NotFound { code, .. } => Some(*code),
            Error::Ambiguous { code, .. }
            | Error::Transient { code, .. }
            | Error::Auth { code, .. } => *code,
            _ => None,
        }
    }

    /// How long Binance asked us to wait, for 429/418.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Binance's error body, `{"code": -1121, "msg": "Invalid symbol."}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ApiErrorBody {
    pub(crate) code: i64,
    #[serde(default)]
    pub(crate) msg: String,
}

/// Binance's 503 message meaning "sent, but the outcome is unknown".
const UNKNOWN_ERROR_MSG: &str = "Unknown error";

/// Turns a non-success HTTP reply into an [`Error`]. `retry_after` is the parsed `Retry-After`
/// header. Codes decide before statuses, because the same code (-1007) can come with different
/// statuses, and the classification follows the reference's §7. Public for the fuzz tests and
/// targets (issue 11): a reply's status and body are outside input.
pub fn classify_reply(
    effect: Effect,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Error {
    let api: Option<ApiErrorBody> = serde_json::from_str(body).ok();
    let code = api.as_ref().map(|a| a.code);
    let msg = api
        .as_ref()
        .map(|a| a.msg.clone())
        .unwrap_or_else(|| truncate(body));

    // The outcome is unknown: the request reached Binance and may have been executed.
    let unknown_outcome = |reason: &str| -> Error {
        match effect {
            Effect::Write => Error::Ambiguous {
                reason: format!("{reason}: {msg}"),
                status: Some(status),
                code,
                body: Some(body.to_string()),
            },
            // A read that may or may not have been answered changed nothing: just retry.
            Effect::Read => Error::Transient {
                reason: format!("{reason}: {msg}"),
                status: Some(status),
                code,
                retry_after,
            },
        }
    };
    let transient = |reason: &str| Error::Transient {
        reason: format!("{reason}: {msg}"),
        status: Some(status),
        code,
        retry_after,
    };

    if status == 429 || status == 418 {
        return transient(if status == 418 {
            "IP banned (418)"
        } else {
            "rate limited (429)"
        });
    }
    match code {
        Some(-1006) => return unknown_outcome("unexpected reply from the message bus (-1006)"),
        Some(-1007) => return unknown_outcome("backend timeout (-1007)"),
        Some(-1001) => return transient("internal error (-1001)"),
        Some(-1008) => return transient("throttled by system protection (-1008)"),
        Some(-1003) | Some(-1015) => return transient("rate limited"),
        Some(-1021) => return transient("timestamp outside recvWindow (-1021)"),
        Some(code @ (-2013 | -2011 | -1125)) => return Error::NotFound { code, msg },
        Some(-2014) | Some(-2015) | Some(-1022) => {
            return Error::Auth { status, code, msg };
        }
        _ => {}
    }
    if status == 503 {
        if msg.contains(UNKNOWN_ERROR_MSG) {
            return unknown_outcome("HTTP 503 unknown error");
        }
        if msg.contains("Service Unavailable") {
            return transient("HTTP 503 service unavailable");
        }
        // An unrecognised 503 might be either; assume the worst for writes.
        return unknown_outcome("HTTP 503");
    }
    if status == 408 {
        return unknown_outcome("HTTP 408 timeout waiting for the backend");
    }
    if status >= 500 {
        // A gateway error or server fault says nothing about whether the order went through.
        return unknown_outcome(&format!("HTTP {status}"));
    }
    if status == 401 || status == 403 {
        return Error::Auth { status, code, msg };
    }
    match code {
        Some(code) => Error::Rejected { status, code, msg },
        // A 4xx without Binance's error body: still a refusal by the front end (WAF, routing).
        None => Error::Rejected {
            status,
            code: 0,
            msg,
        },
    }
}

/// Turns a transport failure (no HTTP reply) into an [`Error`].
pub(crate) fn classify_transport(effect: Effect, endpoint: &str, error: &reqwest::Error) -> Error {
    if error.is_builder() {
        return Error::Config(format!("cannot build the request to {endpoint}: {error}"));
    }
    // A failure to connect happens before any byte of the request is sent, so nothing executed.
    if error.is_connect() {
        return Error::Transient {
            reason: format!("cannot connect for {endpoint}: {error:#}"),
            status: None,
            code: None,
            retry_after: None,
        };
    }
    let reason = if error.is_timeout() {
        format!("{endpoint} timed out: {error:#}")
    } else {
        format!("{endpoint} failed after sending: {error:#}")
    };
    match effect {
        Effect::Write => Error::Ambiguous {
            reason,
            status: None,
            code: None,
            body: None,
        },
        Effect::Read => Error::Transient {
            reason,
            status: None,
            code: None,
            retry_after: None,
        },
    }
}

/// Keeps error messages short when a body is not Binance's JSON (an HTML error page, say).
fn truncate(body: &str) -> String {
    const MAX: usize = 300;
    if body.len() <= MAX {
        return body.to_string();
    }
    let mut end = MAX;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i64, msg: &str) -> String {
        format!(r#"{{"code":{code},"msg":"{msg}"}}"#)
    }

    #[test]
    fn documented_error_fixture_decodes() {
        let fixture = include_str!("../../../testdata/binance/rest__error.json");
        let api: ApiErrorBody = serde_json::from_str(fixture).unwrap();
        assert_eq!(api.code, -1121);
        assert_eq!(api.msg, "Invalid symbol.");
        let error = classify_reply(Effect::Write, 400, None, fixture);
        assert!(
            matches!(error, Error::Rejected { code: -1121, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn unknown_503_is_ambiguous_for_orders_and_transient_for_reads() {
        let text = body(
            -1000,
            "Unknown error, please check your request or try again later.",
        );
        let write = classify_reply(Effect::Write, 503, None, &text);
        assert!(write.is_ambiguous(), "{write:?}");
        assert_eq!(write.code(), Some(-1000));
        let read = classify_reply(Effect::Read, 503, None, &text);
        assert!(read.is_transient(), "{read:?}");
    }

    #[test]
    fn service_unavailable_is_transient() {
        let error = classify_reply(Effect::Write, 503, None, "Service Unavailable.");
        assert!(error.is_transient(), "{error:?}");
    }

    #[test]
    fn timeouts_codes_are_ambiguous() {
        for code in [-1006, -1007] {
            let error = classify_reply(Effect::Write, 400, None, &body(code, "Timeout"));
            assert!(error.is_ambiguous(), "{code}: {error:?}");
        }
        let gateway = classify_reply(Effect::Write, 504, None, "<html>Gateway Timeout</html>");
        assert!(gateway.is_ambiguous());
        let bodyless = classify_reply(Effect::Write, 408, None, "");
        assert!(bodyless.is_ambiguous());
    }

    #[test]
    fn refusals_and_lookups() {
        let margin = classify_reply(
            Effect::Write,
            400,
            None,
            &body(-2019, "Margin is insufficient."),
        );
        assert!(matches!(
            margin,
            Error::Rejected {
                code: -2019,
                status: 400,
                ..
            }
        ));
        let notional = classify_reply(Effect::Write, 400, None, &body(-4164, "notional"));
        assert!(notional.is_rejected());
        let missing = classify_reply(
            Effect::Read,
            400,
            None,
            &body(-2013, "Order does not exist."),
        );
        assert!(matches!(missing, Error::NotFound { code: -2013, .. }));
        let cancel = classify_reply(
            Effect::Write,
            400,
            None,
            &body(-2011, "Unknown order sent."),
        );
        assert!(cancel.is_not_found());
        for code in [-2014, -2015, -1022] {
            let auth = classify_reply(Effect::Read, 401, None, &body(code, "bad key"));
            assert!(matches!(auth, Error::Auth { .. }), "{code}");
            // Displayed for people: the code as a number, not `Some(..)`.
            assert_eq!(
                auth.to_string(),
                format!("authentication failed (HTTP 401, code {code}): bad key")
            );
        }
        let bodyless = classify_reply(Effect::Read, 403, None, "");
        assert_eq!(bodyless.to_string(), "authentication failed (HTTP 403): ");
        let internal = classify_reply(Effect::Write, 500, None, &body(-1001, "Internal error"));
        assert!(internal.is_transient());
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let error = classify_reply(
            Effect::Write,
            429,
            Some(Duration::from_secs(3)),
            &body(-1003, "Too many requests"),
        );
        assert!(error.is_transient());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(3)));
        let banned = classify_reply(Effect::Read, 418, Some(Duration::from_secs(120)), "");
        assert_eq!(banned.retry_after(), Some(Duration::from_secs(120)));
    }

    #[test]
    fn long_bodies_are_truncated_in_messages_but_kept_raw() {
        let long = "é".repeat(400);
        let error = classify_reply(Effect::Write, 502, None, &long);
        match error {
            Error::Ambiguous { reason, body, .. } => {
                assert!(reason.len() < 400);
                assert_eq!(body.as_deref(), Some(long.as_str()));
            }
            other => panic!("expected ambiguous, got {other:?}"),
        }
    }
}
