//! The execution result quantum publishes on `quantum:stream:trade.execution.res`: one per
//! intent, saying what the exchange confirmed. Its constructors keep the invariants the incident
//! broke: `filled` only with a positive price and quantity, and the notional always equal to
//! price × quantity.

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use crate::ids::{ClientOrderId, IntentId, Symbol};
use crate::intent::{decimal_number, write_exit_plan, Action, ExitPlan, TradeIntent};
use crate::order::PositionSide;

/// The outcome, as the exchange reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultStatus {
    Filled,
    /// Final with part of the quantity filled and the rest cancelled or expired.
    PartiallyFilled,
    Rejected,
    Canceled,
    Expired,
    /// No fill was confirmed by the deadline and the order was cancelled (nothing filled).
    Timeout,
    /// quantum could not establish the outcome (the order may exist; see `error`).
    Failed,
}

impl ResultStatus {
    /// Every status, in the order of the enum.
    pub const ALL: [ResultStatus; 7] = [
        ResultStatus::Filled,
        ResultStatus::PartiallyFilled,
        ResultStatus::Rejected,
        ResultStatus::Canceled,
        ResultStatus::Expired,
        ResultStatus::Timeout,
        ResultStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Filled => "filled",
            ResultStatus::PartiallyFilled => "partially_filled",
            ResultStatus::Rejected => "rejected",
            ResultStatus::Canceled => "canceled",
            ResultStatus::Expired => "expired",
            ResultStatus::Timeout => "timeout",
            ResultStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<ResultStatus> {
        ResultStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the result carries a fill (and so a position to track).
    pub fn has_fill(self) -> bool {
        matches!(self, ResultStatus::Filled | ResultStatus::PartiallyFilled)
    }
}

/// Which report confirmed the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfirmedBy {
    ResultReply,
    UserStream,
    RestPoll,
}

impl ConfirmedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfirmedBy::ResultReply => "result_reply",
            ConfirmedBy::UserStream => "user_stream",
            ConfirmedBy::RestPoll => "rest_poll",
        }
    }
}

/// Confirmed execution figures of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub order_id: i64,
    pub avg_price: Decimal,
    pub executed_qty: Decimal,
    /// The fees of the order's trades; `None` when the exchange could not be asked (the result
    /// then says `"commission": null`, never a 0 the exchange did not state).
    pub commission: Option<Decimal>,
    pub commission_asset: String,
    /// The exchange's transaction time of the last fill (ms).
    pub filled_at: i64,
}

/// One execution result. The fields are private because they hold the invariants the incident
/// broke (a fill has a positive price and quantity, the notional is their product, the status
/// says whether there is a fill): a result is made by [`ExecutionResult::with_fill`],
/// [`ExecutionResult::without_fill`], [`ExecutionResult::rejected_input`] or read by
/// [`ExecutionResult::from_json`], and changed after that only in the few ways the methods below
/// allow.
///
/// `intent_id`, `symbol` and `action` are `None` only in a `rejected` result for a document that
/// was not a valid intent, where that field was missing or unreadable (on the wire: `""`, as
/// before they were typed). An `Option` rather than a placeholder value, because any placeholder
/// would be a valid id or symbol that some strategy could really use, and a reader could not tell
/// it from a real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionResult {
    intent_id: Option<IntentId>,
    symbol: Option<Symbol>,
    action: Option<Action>,
    /// Hedge mode: the side the order worked on; `None` on a one-way account (not written).
    position_side: Option<PositionSide>,
    status: ResultStatus,
    order_id: Option<i64>,
    client_order_id: Option<String>,
    entry_price: Decimal,
    executed_qty: Decimal,
    position_size_usd: Decimal,
    leverage: Option<u32>,
    /// `None`: unknown (a fill whose trades could not be read); a result without a fill has 0.
    commission: Option<Decimal>,
    commission_asset: String,
    reduce_only: bool,
    exit_plan: ExitPlan,
    confirmed_by: Option<ConfirmedBy>,
    error_code: Option<i64>,
    error: Option<String>,
    intent_at: Option<i64>,
    order_sent_at: Option<i64>,
    filled_at: Option<i64>,
    published_at: i64,
}

/// Why a result could not be built as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    #[error("a {status} result needs a positive price and quantity, got price {price} qty {qty}")]
    NoFill {
        status: &'static str,
        price: Decimal,
        qty: Decimal,
    },
    #[error("{0:?} is not a status that carries a fill")]
    NotAFillStatus(ResultStatus),
    /// Price × quantity does not fit a decimal: figures no real fill has, refused rather than
    /// a panic.
    #[error("the notional of price {price} × qty {qty} overflows")]
    Overflow { price: Decimal, qty: Decimal },
}

impl ExecutionResult {
    fn base(intent: &TradeIntent, coid: Option<&ClientOrderId>, now: i64) -> ExecutionResult {
        ExecutionResult {
            intent_id: Some(intent.intent_id.clone()),
            symbol: Some(intent.symbol.clone()),
            action: Some(intent.action),
            position_side: intent.position_side,
            status: ResultStatus::Failed,
            order_id: None,
            client_order_id: coid.map(ToString::to_string),
            entry_price: Decimal::ZERO,
            executed_qty: Decimal::ZERO,
            position_size_usd: Decimal::ZERO,
            leverage: intent.leverage,
            commission: Some(Decimal::ZERO),
            commission_asset: "USDT".into(),
            reduce_only: intent.action == Action::Close,
            exit_plan: intent.exit_plan,
            confirmed_by: None,
            error_code: None,
            error: None,
            intent_at: intent.created_at,
            order_sent_at: None,
            filled_at: None,
            published_at: now,
        }
    }

    /// A result with a confirmed fill (`filled` or `partially_filled`).
    pub fn with_fill(
        intent: &TradeIntent,
        coid: &ClientOrderId,
        status: ResultStatus,
        execution: &Execution,
        confirmed_by: ConfirmedBy,
        order_sent_at: i64,
        now: i64,
    ) -> Result<ExecutionResult, ResultError> {
        if !status.has_fill() {
            return Err(ResultError::NotAFillStatus(status));
        }
        if execution.avg_price <= Decimal::ZERO || execution.executed_qty <= Decimal::ZERO {
            return Err(ResultError::NoFill {
                status: status.as_str(),
                price: execution.avg_price,
                qty: execution.executed_qty,
            });
        }
        let notional = execution
            .avg_price
            .checked_mul(execution.executed_qty)
            .ok_or(ResultError::Overflow {
                price: execution.avg_price,
                qty: execution.executed_qty,
            })?;
        let mut result = ExecutionResult::base(intent, Some(coid), now);
        result.status = status;
        result.order_id = Some(execution.order_id);
        result.entry_price = execution.avg_price;
        result.executed_qty = execution.executed_qty;
        result.position_size_usd = notional;
        result.commission = execution.commission;
        result.commission_asset = execution.commission_asset.clone();
        result.confirmed_by = Some(confirmed_by);
        result.order_sent_at = Some(order_sent_at);
        result.filled_at = Some(execution.filled_at);
        Ok(result)
    }

    /// A result without a fill: rejected, canceled, expired, timeout or failed, with the reason.
    pub fn without_fill(
        intent: &TradeIntent,
        coid: Option<&ClientOrderId>,
        status: ResultStatus,
        error_code: Option<i64>,
        error: impl Into<String>,
        now: i64,
    ) -> ExecutionResult {
        debug_assert!(!status.has_fill(), "fills go through with_fill");
        let mut result = ExecutionResult::base(intent, coid, now);
        result.status = if status.has_fill() {
            ResultStatus::Failed
        } else {
            status
        };
        result.error_code = error_code;
        result.error = Some(error.into());
        result
    }

    /// A `rejected` result for a document that is not a valid intent. Whatever could be read of
    /// it (`intent_id`, `symbol`, `action`, each only if valid: a refused document may hold
    /// anything, of any size) is carried so the sender can match it; the reason names the value
    /// at fault.
    pub fn rejected_input(raw: &str, reason: &str, now: i64) -> ExecutionResult {
        let doc: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
        let field = |k: &str| doc.get(k).and_then(Value::as_str);
        ExecutionResult {
            intent_id: field("intent_id").and_then(|v| IntentId::new(v).ok()),
            symbol: field("symbol").and_then(|v| Symbol::new(v).ok()),
            action: field("action").and_then(Action::parse),
            position_side: None,
            status: ResultStatus::Rejected,
            order_id: None,
            client_order_id: None,
            entry_price: Decimal::ZERO,
            executed_qty: Decimal::ZERO,
            position_size_usd: Decimal::ZERO,
            leverage: None,
            commission: Some(Decimal::ZERO),
            commission_asset: "USDT".into(),
            reduce_only: false,
            exit_plan: ExitPlan::default(),
            confirmed_by: None,
            error_code: None,
            error: Some(reason.to_string()),
            intent_at: None,
            order_sent_at: None,
            filled_at: None,
            published_at: now,
        }
    }

    /// The exchange's order behind a result without a fill (it was placed, and was cancelled,
    /// expired or rejected with nothing filled).
    pub fn with_order(mut self, order_id: i64, order_sent_at: i64) -> ExecutionResult {
        self.order_id = Some(order_id);
        self.order_sent_at = Some(order_sent_at);
        self
    }

    /// Replaces the explanation (`error`): what a reader should know about this outcome.
    pub fn with_error(mut self, error: impl Into<String>) -> ExecutionResult {
        self.error = Some(error.into());
        self
    }

    /// Sets when the result is published; the publisher calls it just before it writes the
    /// document.
    pub fn stamp_published(&mut self, at: i64) {
        self.published_at = at;
    }

    /// The id of the intent this answers (`None` only for a document that was not an intent).
    pub fn intent_id(&self) -> Option<&IntentId> {
        self.intent_id.as_ref()
    }

    /// `intent_id` as written on the wire: `""` when there is none.
    pub fn intent_id_str(&self) -> &str {
        self.intent_id.as_ref().map_or("", IntentId::as_str)
    }

    pub fn symbol(&self) -> Option<&Symbol> {
        self.symbol.as_ref()
    }

    pub fn action(&self) -> Option<Action> {
        self.action
    }

    /// The hedge-mode side (`None` on a one-way account).
    pub fn position_side(&self) -> Option<PositionSide> {
        self.position_side
    }

    pub fn status(&self) -> ResultStatus {
        self.status
    }

    pub fn order_id(&self) -> Option<i64> {
        self.order_id
    }

    pub fn client_order_id(&self) -> Option<&str> {
        self.client_order_id.as_deref()
    }

    /// The average fill price (zero without a fill).
    pub fn entry_price(&self) -> Decimal {
        self.entry_price
    }

    pub fn executed_qty(&self) -> Decimal {
        self.executed_qty
    }

    /// The notional: `entry_price` × `executed_qty`.
    pub fn position_size_usd(&self) -> Decimal {
        self.position_size_usd
    }

    pub fn leverage(&self) -> Option<u32> {
        self.leverage
    }

    /// The fees paid, as the exchange stated them; `None` when they could not be read.
    pub fn commission(&self) -> Option<Decimal> {
        self.commission
    }

    pub fn commission_asset(&self) -> &str {
        &self.commission_asset
    }

    pub fn reduce_only(&self) -> bool {
        self.reduce_only
    }

    pub fn exit_plan(&self) -> &ExitPlan {
        &self.exit_plan
    }

    pub fn confirmed_by(&self) -> Option<ConfirmedBy> {
        self.confirmed_by
    }

    pub fn error_code(&self) -> Option<i64> {
        self.error_code
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The intent's `created_at` (ms).
    pub fn intent_at(&self) -> Option<i64> {
        self.intent_at
    }

    pub fn order_sent_at(&self) -> Option<i64> {
        self.order_sent_at
    }

    /// The exchange's transaction time of the last fill (ms).
    pub fn filled_at(&self) -> Option<i64> {
        self.filled_at
    }

    pub fn published_at(&self) -> i64 {
        self.published_at
    }

    /// The JSON document: prices and quantities as numbers with the exchange's exact digits.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        let s = |v: &str| Value::String(v.to_string());
        obj.insert("intent_id".into(), s(self.intent_id_str()));
        obj.insert(
            "symbol".into(),
            s(self.symbol.as_ref().map_or("", Symbol::as_str)),
        );
        obj.insert("action".into(), s(self.action.map_or("", Action::as_str)));
        if let Some(side) = self.position_side {
            obj.insert("position_side".into(), s(side.as_str()));
        }
        obj.insert("status".into(), s(self.status.as_str()));
        obj.insert(
            "order_id".into(),
            self.order_id.map_or(Value::Null, Value::from),
        );
        obj.insert(
            "client_order_id".into(),
            self.client_order_id.as_deref().map_or(Value::Null, s),
        );
        obj.insert("entry_price".into(), decimal_number(self.entry_price));
        obj.insert("executed_qty".into(), decimal_number(self.executed_qty));
        obj.insert(
            "position_size_usd".into(),
            decimal_number(self.position_size_usd),
        );
        obj.insert(
            "leverage".into(),
            self.leverage.map_or(Value::Null, Value::from),
        );
        obj.insert(
            "commission".into(),
            self.commission.map_or(Value::Null, decimal_number),
        );
        obj.insert("commission_asset".into(), s(&self.commission_asset));
        obj.insert("reduce_only".into(), Value::Bool(self.reduce_only));
        write_exit_plan(&mut obj, &self.exit_plan);
        obj.insert(
            "confirmed_by".into(),
            self.confirmed_by.map_or(Value::Null, |c| s(c.as_str())),
        );
        obj.insert(
            "error_code".into(),
            self.error_code.map_or(Value::Null, Value::from),
        );
        obj.insert("error".into(), self.error.as_deref().map_or(Value::Null, s));
        for (key, value) in [
            ("intent_at", self.intent_at),
            ("order_sent_at", self.order_sent_at),
            ("filled_at", self.filled_at),
            ("published_at", Some(self.published_at)),
        ] {
            obj.insert(key.into(), value.map_or(Value::Null, Value::from));
        }
        Value::Object(obj)
    }
}

/// Why a document on the results stream cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultDocError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("missing or empty field {0}")]
    Missing(&'static str),
    #[error("field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("a {status} result with entry_price {price} and executed_qty {qty}: a fill needs both above zero")]
    FillWithoutPrice {
        status: &'static str,
        price: Decimal,
        qty: Decimal,
    },
}

fn doc_decimal(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Decimal>, ResultDocError> {
    let text = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ResultDocError::Invalid {
                field,
                reason: format!("expected a number, got {other}"),
            })
        }
    };
    text.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(&text))
        .map(Some)
        .map_err(|_| ResultDocError::Invalid {
            field,
            reason: format!("{text:?} is not a number"),
        })
}

/// `intent_id`, `symbol` or `action` of a result document: required and valid, except in a
/// `rejected` result, where a missing or unreadable value is `None`.
fn identity<T>(
    obj: &Map<String, Value>,
    field: &'static str,
    rejected: bool,
    read: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ResultDocError> {
    let text = match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ if rejected => return Ok(None),
        _ => return Err(ResultDocError::Missing(field)),
    };
    match read(text) {
        Ok(value) => Ok(Some(value)),
        Err(_) if rejected => Ok(None),
        Err(reason) => Err(ResultDocError::Invalid { field, reason }),
    }
}

impl ExecutionResult {
    /// Reads a result document from the bus, refusing what the incident let through: a fill
    /// with a zero price or quantity, a missing field, an unknown status.
    pub fn from_json(text: &str) -> Result<ExecutionResult, ResultDocError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ResultDocError::NotJson(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(ResultDocError::NotJson(
                "the document is not an object".into(),
            ));
        };
        let text_field = |field: &'static str| -> Result<String, ResultDocError> {
            match obj.get(field) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(ResultDocError::Missing(field)),
            }
        };
        let int = |field: &'static str| obj.get(field).and_then(Value::as_i64);
        let status_text = text_field("status")?;
        let status = ResultStatus::parse(&status_text).ok_or_else(|| ResultDocError::Invalid {
            field: "status",
            reason: format!("unknown status {status_text:?}"),
        })?;
        let entry_price = doc_decimal(&obj, "entry_price")?.unwrap_or(Decimal::ZERO);
        let executed_qty = doc_decimal(&obj, "executed_qty")?.unwrap_or(Decimal::ZERO);
        if status.has_fill() {
            let zero_price = obj.get("entry_price").is_some() && entry_price <= Decimal::ZERO;
            if !zero_price {
                for field in ["entry_price", "executed_qty"] {
                    if obj.get(field).is_none_or(Value::is_null) {
                        return Err(ResultDocError::Missing(field));
                    }
                }
            }
            if entry_price <= Decimal::ZERO || executed_qty <= Decimal::ZERO {
                return Err(ResultDocError::FillWithoutPrice {
                    status: status.as_str(),
                    price: entry_price,
                    qty: executed_qty,
                });
            }
        }
        let plan_json = Value::Object(
            obj.iter()
                .filter(|(k, _)| {
                    k.ends_with("_pct") || k.ends_with("_price") && *k != "entry_price"
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain([
                    ("intent_id".to_string(), Value::String("x".into())),
                    ("symbol".to_string(), Value::String("XX".into())),
                    ("action".to_string(), Value::String("BUY".into())),
                    ("quantity".to_string(), Value::from(1)),
                ])
                .collect(),
        );
        // The exit plan is read by the intent parser, so both documents share one set of rules.
        let exit_plan = TradeIntent::from_json(&plan_json.to_string())
            .map_err(|e| ResultDocError::Invalid {
                field: "exit plan",
                reason: e.to_string(),
            })?
            .exit_plan;
        let confirmed_by = match obj.get("confirmed_by").and_then(Value::as_str) {
            Some("result_reply") => Some(ConfirmedBy::ResultReply),
            Some("user_stream") => Some(ConfirmedBy::UserStream),
            Some("rest_poll") => Some(ConfirmedBy::RestPoll),
            _ => None,
        };
        // Absent, the notional is price × quantity; figures whose product does not fit a
        // decimal are refused with the reason (outside input must never panic the reader).
        let position_size_usd = match doc_decimal(&obj, "position_size_usd")? {
            Some(notional) => notional,
            None => entry_price.checked_mul(executed_qty).ok_or_else(|| {
                ResultDocError::Invalid {
                    field: "position_size_usd",
                    reason: format!(
                        "absent, and entry_price {entry_price} × executed_qty {executed_qty} overflows"
                    ),
                }
            })?,
        };
        // Only a `rejected` result may lack what it answers (a document that was not a valid
        // intent, see `rejected_input`); there an unreadable value reads as absent, as
        // `rejected_input` itself writes it.
        let rejected = status == ResultStatus::Rejected;
        let intent_id = identity(&obj, "intent_id", rejected, |t| {
            IntentId::new(t).map_err(|e| e.to_string())
        })?;
        let symbol = identity(&obj, "symbol", rejected, |t| {
            Symbol::new(t).map_err(|e| e.to_string())
        })?;
        let action = identity(&obj, "action", rejected, |t| {
            Action::parse(t.trim()).ok_or_else(|| format!("{t:?} is not BUY, SELL or CLOSE"))
        })?;
        let position_side = match obj.get("position_side") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => match PositionSide::parse(text) {
                Some(PositionSide::Both) => None,
                Some(side) => Some(side),
                None => {
                    return Err(ResultDocError::Invalid {
                        field: "position_side",
                        reason: format!("{text:?} is not LONG or SHORT"),
                    })
                }
            },
            Some(other) => {
                return Err(ResultDocError::Invalid {
                    field: "position_side",
                    reason: format!("expected a string, got {other}"),
                })
            }
        };
        Ok(ExecutionResult {
            intent_id,
            symbol,
            action,
            position_side,
            status,
            order_id: int("order_id"),
            client_order_id: obj
                .get("client_order_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            entry_price,
            executed_qty,
            position_size_usd,
            leverage: obj
                .get("leverage")
                .and_then(Value::as_u64)
                .and_then(|l| u32::try_from(l).ok()),
            // Missing or null: not known (a result of an older version without the field
            // included); never read as 0.
            commission: doc_decimal(&obj, "commission")?,
            commission_asset: obj
                .get("commission_asset")
                .and_then(Value::as_str)
                .unwrap_or("USDT")
                .to_string(),
            reduce_only: obj
                .get("reduce_only")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            exit_plan,
            confirmed_by,
            error_code: int("error_code"),
            error: obj.get("error").and_then(Value::as_str).map(str::to_string),
            intent_at: int("intent_at"),
            order_sent_at: int("order_sent_at"),
            filled_at: int("filled_at"),
            published_at: int("published_at").unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> TradeIntent {
        TradeIntent::from_json(
            r#"{"intent_id":"i-7","symbol":"AXSUSDT","action":"BUY","position_size_usd":100,"leverage":10,"stop_loss_pct":1,"created_at":1000}"#,
        )
        .unwrap()
    }

    fn execution(price: &str, qty: &str) -> Execution {
        Execution {
            order_id: 5_000_000_001,
            avg_price: price.parse().unwrap(),
            executed_qty: qty.parse().unwrap(),
            commission: Some("0.03125".parse().unwrap()),
            commission_asset: "USDT".into(),
            filled_at: 2_000,
        }
    }

    /// Regression (chaos seed 11): a fill whose trades could not be read was published with
    /// `"commission": 0` while the exchange had charged fees. Unknown fees are `null` on the
    /// wire and `None` when read back; a result without a fill says 0.
    #[test]
    fn unknown_fees_are_null_not_zero() {
        let i = intent();
        let coid = ClientOrderId::for_intent(&i.intent_id);
        let unknown = Execution {
            commission: None,
            ..execution("6.262", "16")
        };
        let r = ExecutionResult::with_fill(
            &i,
            &coid,
            ResultStatus::Filled,
            &unknown,
            ConfirmedBy::ResultReply,
            1_500,
            3_000,
        )
        .unwrap();
        let json = r.to_json();
        assert!(json["commission"].is_null(), "{json}");
        assert_eq!(
            ExecutionResult::from_json(&json.to_string())
                .unwrap()
                .commission(),
            None
        );
        let known = ExecutionResult::with_fill(
            &i,
            &coid,
            ResultStatus::Filled,
            &execution("6.262", "16"),
            ConfirmedBy::ResultReply,
            1_500,
            3_000,
        )
        .unwrap();
        assert_eq!(
            ExecutionResult::from_json(&known.to_json().to_string())
                .unwrap()
                .commission(),
            Some("0.03125".parse().unwrap())
        );
        let none = ExecutionResult::without_fill(
            &i,
            Some(&coid),
            ResultStatus::Rejected,
            None,
            "no",
            3_000,
        );
        assert_eq!(none.commission(), Some(Decimal::ZERO));
    }

    #[test]
    fn the_incident_result_cannot_be_built() {
        // Regression: status=NEW, executedQty=0, avgPrice=0.00 was published as "filled".
        let coid = ClientOrderId::for_intent(&intent().intent_id);
        let err = ExecutionResult::with_fill(
            &intent(),
            &coid,
            ResultStatus::Filled,
            &execution("0.00", "0"),
            ConfirmedBy::ResultReply,
            1_500,
            3_000,
        );
        assert!(matches!(err, Err(ResultError::NoFill { .. })));
    }

    #[test]
    fn a_filled_result_carries_exact_digits_and_the_product_as_notional() {
        let i = intent();
        let coid = ClientOrderId::for_intent(&i.intent_id);
        let r = ExecutionResult::with_fill(
            &i,
            &coid,
            ResultStatus::Filled,
            &execution("6.251", "16"),
            ConfirmedBy::UserStream,
            1_500,
            3_000,
        )
        .unwrap();
        let json = r.to_json().to_string();
        for needle in [
            r#""entry_price":6.251"#,
            r#""executed_qty":16"#,
            r#""position_size_usd":100.016"#,
            r#""status":"filled""#,
            r#""confirmed_by":"user_stream""#,
            r#""client_order_id":"q-i-7""#,
            r#""order_id":5000000001"#,
            r#""stop_loss_pct":1"#,
            r#""filled_at":2000"#,
            r#""intent_at":1000"#,
        ] {
            assert!(json.contains(needle), "{needle} in {json}");
        }
    }

    proptest::proptest! {
        /// Whatever figures a report brings, a fill result exists only with a positive price and
        /// quantity, and its notional is their product, written with exact digits.
        #[test]
        fn a_fill_result_holds_its_invariants(price in 0i64..10_000_000, price_scale in 0u32..8, qty in 0i64..1_000_000, qty_scale in 0u32..4) {
            let i = intent();
            let coid = ClientOrderId::for_intent(&i.intent_id);
            let mut e = execution("1", "1");
            e.avg_price = Decimal::new(price, price_scale);
            e.executed_qty = Decimal::new(qty, qty_scale);
            match ExecutionResult::with_fill(&i, &coid, ResultStatus::Filled, &e, ConfirmedBy::RestPoll, 1, 2) {
                Ok(r) => {
                    proptest::prop_assert!(r.entry_price > Decimal::ZERO && r.executed_qty > Decimal::ZERO);
                    proptest::prop_assert_eq!(r.position_size_usd, r.entry_price * r.executed_qty);
                    let json = r.to_json();
                    let notional: Decimal = json["position_size_usd"].to_string().parse().unwrap();
                    proptest::prop_assert_eq!(notional, r.position_size_usd);
                }
                Err(_) => proptest::prop_assert!(price == 0 || qty == 0),
            }
        }
    }

    /// Outside figures whose product does not fit a decimal are refused with the reason, never a
    /// panic (the exchange's reply is outside input).
    #[test]
    fn a_notional_that_overflows_is_refused() {
        let i = intent();
        let coid = ClientOrderId::for_intent(&i.intent_id);
        let mut e = execution("1", "1");
        e.avg_price = Decimal::MAX;
        e.executed_qty = Decimal::from(2);
        let refused = ExecutionResult::with_fill(
            &i,
            &coid,
            ResultStatus::Filled,
            &e,
            ConfirmedBy::RestPoll,
            1,
            2,
        );
        assert!(
            matches!(refused, Err(ResultError::Overflow { .. })),
            "{refused:?}"
        );
    }

    /// Regression (issue 11, found by the fuzz test): a result document without
    /// `position_size_usd` whose price × quantity does not fit a decimal panicked the reader
    /// (`Multiplication overflowed`); it is refused with the reason.
    #[test]
    fn a_result_whose_notional_overflows_is_refused_not_a_panic() {
        let doc = r#"{"status":"filled","intent_id":"a","symbol":"BTCUSDT","action":"BUY","entry_price":"79228162514264337593543950335","executed_qty":2}"#;
        let refused = ExecutionResult::from_json(doc);
        assert!(
            matches!(
                &refused,
                Err(ResultDocError::Invalid { field: "position_size_usd", reason }) if reason.contains("overflows")
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_result_reads_back_as_it_was_written() {
        let i = intent();
        let coid = ClientOrderId::for_intent(&i.intent_id);
        let r = ExecutionResult::with_fill(
            &i,
            &coid,
            ResultStatus::Filled,
            &execution("6.251", "16"),
            ConfirmedBy::UserStream,
            1_500,
            3_000,
        )
        .unwrap();
        assert_eq!(ExecutionResult::from_json(&r.to_json().to_string()), Ok(r));
    }

    #[test]
    fn the_incidents_result_is_refused_with_its_reason() {
        let doc = r#"{"symbol":"AXSUSDT","action":"BUY","entry_price":0.0,"position_size_usd":0.0,"leverage":10.0,"status":"filled","intent_id":"x"}"#;
        let err = ExecutionResult::from_json(doc).unwrap_err();
        assert!(
            matches!(err, ResultDocError::FillWithoutPrice { .. }),
            "{err}"
        );
        assert_eq!(
            ExecutionResult::from_json(
                r#"{"status":"filled","intent_id":"x","symbol":"A","action":"BUY","entry_price":1}"#
            ),
            Err(ResultDocError::Missing("executed_qty"))
        );
        assert!(matches!(
            ExecutionResult::from_json(
                r#"{"status":"done","intent_id":"x","symbol":"A","action":"BUY"}"#
            ),
            Err(ResultDocError::Invalid {
                field: "status",
                ..
            })
        ));
        assert!(matches!(
            ExecutionResult::from_json("[]"),
            Err(ResultDocError::NotJson(_))
        ));
    }

    #[test]
    fn a_rejected_input_keeps_what_could_be_read() {
        let r = ExecutionResult::rejected_input(
            r#"{"intent_id":"x","symbol":"NOPE","action":"BUY","leverage":900}"#,
            "leverage 900",
            5,
        );
        assert_eq!(r.intent_id_str(), "x");
        assert_eq!(r.symbol().map(Symbol::as_str), Some("NOPE"));
        assert_eq!(r.action(), Some(Action::Buy));
        let v = r.to_json();
        assert_eq!(v["status"], "rejected");
        assert_eq!(v["intent_id"], "x");
        assert_eq!(v["symbol"], "NOPE");
        assert_eq!(v["action"], "BUY");
        assert_eq!(v["error"], "leverage 900");
        assert_eq!(ExecutionResult::from_json(&v.to_string()), Ok(r));
    }

    #[test]
    fn a_rejected_input_that_names_nothing_readable_is_still_a_result() {
        // Unreadable values are not echoed: the reason names the value at fault.
        let long = "x".repeat(129);
        for raw in [
            "{{{".to_string(),
            r#"{"symbol":"BTC/USDT","action":"HOLD"}"#.to_string(),
            format!(r#"{{"intent_id":"{long}","symbol":7,"action":null}}"#),
        ] {
            let r = ExecutionResult::rejected_input(&raw, "not an intent", 5);
            assert_eq!((r.intent_id(), r.symbol(), r.action()), (None, None, None));
            let v = r.to_json();
            for field in ["intent_id", "symbol", "action"] {
                assert_eq!(v[field], "", "{field} of {raw}");
            }
            // It reads back as what it is, so readers of the stream need not refuse it.
            assert_eq!(ExecutionResult::from_json(&v.to_string()), Ok(r));
        }
        let partly = ExecutionResult::rejected_input(
            r#"{"intent_id":"p-1","symbol":"BTC/USDT","action":"sell"}"#,
            "symbol",
            5,
        )
        .to_json();
        assert_eq!(
            (&partly["intent_id"], &partly["symbol"], &partly["action"]),
            (&"p-1".into(), &"".into(), &"SELL".into())
        );
    }

    #[test]
    fn only_a_rejected_result_may_lack_what_it_answers() {
        let doc = |status: &str, intent_id: &str, symbol: &str, action: &str| {
            format!(
                r#"{{"status":"{status}","intent_id":"{intent_id}","symbol":"{symbol}","action":"{action}","error":"e"}}"#
            )
        };
        assert_eq!(
            ExecutionResult::from_json(&doc("failed", "", "ETHUSDT", "BUY")),
            Err(ResultDocError::Missing("intent_id"))
        );
        assert!(matches!(
            ExecutionResult::from_json(&doc("timeout", "t", "ETH/USDT", "BUY")),
            Err(ResultDocError::Invalid {
                field: "symbol",
                ..
            })
        ));
        assert!(matches!(
            ExecutionResult::from_json(&doc("canceled", "t", "ETHUSDT", "HOLD")),
            Err(ResultDocError::Invalid {
                field: "action",
                ..
            })
        ));
        let lower = ExecutionResult::from_json(&doc("canceled", "t", "ethusdt", " sell")).unwrap();
        assert_eq!(
            (lower.symbol().map(Symbol::as_str), lower.action()),
            (Some("ETHUSDT"), Some(Action::Sell))
        );
        let rejected =
            ExecutionResult::from_json(&doc("rejected", "", "ETH/USDT", "HOLD")).unwrap();
        assert_eq!(
            (rejected.intent_id(), rejected.symbol(), rejected.action()),
            (None, None, None)
        );
    }

    #[test]
    fn the_wire_names_the_intent_symbol_and_action_as_strings() {
        let i = intent();
        let coid = ClientOrderId::for_intent(&i.intent_id);
        let r = ExecutionResult::with_fill(
            &i,
            &coid,
            ResultStatus::Filled,
            &execution("6.251", "16"),
            ConfirmedBy::UserStream,
            1_500,
            3_000,
        )
        .unwrap();
        let json = r.to_json().to_string();
        for needle in [
            r#""intent_id":"i-7""#,
            r#""symbol":"AXSUSDT""#,
            r#""action":"BUY""#,
            r#""reduce_only":false"#,
        ] {
            assert!(json.contains(needle), "{needle} in {json}");
        }
        let close = TradeIntent::close(
            IntentId::new("c-1").unwrap(),
            Symbol::new("AXSUSDT").unwrap(),
        )
        .build()
        .unwrap();
        let v = ExecutionResult::without_fill(
            &close,
            None,
            ResultStatus::Rejected,
            Some(-2022),
            "no position",
            9,
        )
        .to_json();
        assert_eq!(
            (&v["action"], &v["reduce_only"]),
            (&"CLOSE".into(), &true.into())
        );
    }
}
