//! Binance's error replies: `{"code":-1121,"msg":"Invalid symbol."}` with the HTTP status Binance
//! uses for each family (400 for request errors, 401 for key errors, 404 for unknown paths, 429 for
//! rate limits, 503 for "unknown" outcomes).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error reply, as Binance sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: i64,
    pub msg: String,
    /// Seconds for a `Retry-After` header (429 and 418 replies).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: i64, msg: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            msg: msg.into(),
            retry_after: None,
        }
    }

    /// A 400 with the given code.
    pub(crate) fn bad(code: i64, msg: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, msg)
    }

    pub(crate) fn mandatory(param: &str) -> ApiError {
        ApiError::bad(
            -1102,
            format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }

    pub(crate) fn malformed(param: &str) -> ApiError {
        ApiError::bad(
            -1102,
            format!("Mandatory parameter '{param}' was not sent, was empty/null, or malformed."),
        )
    }

    pub(crate) fn invalid_symbol() -> ApiError {
        ApiError::bad(-1121, "Invalid symbol.")
    }

    /// The error Binance answers with for `code`, used by the `reject_orders` fault knob.
    pub(crate) fn for_code(code: i64) -> ApiError {
        let msg = match code {
            -1000 => "An unknown error occured while processing the request.",
            -1001 => "Internal error; unable to process your request. Please try again.",
            -1006 => "An unexpected response was received from the message bus. Execution status unknown.",
            -1007 => "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
            -1008 => "Request throttled by system-level protection. Reduce-only/close-position orders are exempt. Please try again.",
            -2010 => "NEW_ORDER_REJECTED",
            -2019 => "Margin is insufficient.",
            -2020 => "Unable to fill.",
            -2022 => "ReduceOnly Order is rejected.",
            -4131 => "The counterparty's best price does not meet the PERCENT_PRICE filter limit.",
            -4164 => "Order's notional must be no smaller than 5 (unless you choose reduce only).",
            -5028 => "Timestamp for this request is outside of the ME recvWindow.",
            _ => "Order rejected by the simulator's reject_orders fault.",
        };
        let status = match code {
            -1006 | -1007 => StatusCode::REQUEST_TIMEOUT,
            -1000 | -1001 | -1008 => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, code, msg)
    }

    /// The 503 whose outcome is unknown: the request reached the matching engine, no reply came back.
    pub(crate) fn unknown_status() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            -1000,
            "Unknown error, please check your request or try again later.",
        )
    }
}

impl ApiError {
    /// The JSON body, also one element of a batch reply when that element failed.
    pub(crate) fn body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code, "msg": self.msg })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert("Retry-After", value);
            }
        }
        response
    }
}
