//! The trade intent: what a strategy asks quantum to do, as it arrives on
//! `quantum:stream:trade.intent`, and its exit plan. [`TradeIntent::from_json`] is the one way in:
//! it checks everything that can be checked without the exchange and names the field at fault.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{IdError, IntentId, Symbol};
use crate::order::{PositionSide, Side};

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Open or add to a long (or reduce a short, in one-way mode).
    Buy,
    /// Open or add to a short.
    Sell,
    /// Reduce-only close of the symbol's position.
    Close,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Buy, Action::Sell, Action::Close];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Buy => "BUY",
            Action::Sell => "SELL",
            Action::Close => "CLOSE",
        }
    }

    /// Reads an action case-insensitively (`buy` is `BUY`): strategies have sent both.
    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(text))
    }
}

/// A take-profit or stop-loss level: a distance from the entry in percent, or a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitLevel {
    Pct(Decimal),
    Price(Decimal),
}

/// How a position opened by an intent should be closed. Empty when the intent gave none (the exit
/// monitor then applies its configured defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitPlan {
    pub take_profit: Option<ExitLevel>,
    pub stop_loss: Option<ExitLevel>,
    /// Trailing-stop callback in percent (Binance allows 0.1 to 10).
    pub trailing_pct: Option<Decimal>,
}

impl ExitPlan {
    pub fn is_empty(&self) -> bool {
        self.take_profit.is_none() && self.stop_loss.is_none() && self.trailing_pct.is_none()
    }
}

/// A validated trade intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeIntent {
    pub intent_id: IntentId,
    pub symbol: Symbol,
    pub action: Action,
    /// Size in USDT notional; exactly one of this and `quantity` for BUY/SELL.
    pub position_size_usd: Option<Decimal>,
    /// Size in contracts; for CLOSE, absent means the whole position.
    pub quantity: Option<Decimal>,
    /// 1 to 125; `None` keeps the exchange's current leverage.
    pub leverage: Option<u32>,
    pub exit_plan: ExitPlan,
    pub source: Option<String>,
    /// When the strategy created the intent (ms since the epoch).
    pub created_at: Option<i64>,
    /// After this (ms since the epoch) the intent is not executed: its result is `expired`.
    pub expires_at: Option<i64>,
    /// Hedge mode only: the side the intent works on. A BUY opens LONG and a SELL opens SHORT
    /// (so either may leave it out); a CLOSE must name it on a hedge-mode account. `None` on a
    /// one-way account, where giving it is refused by the execution service.
    pub position_side: Option<PositionSide>,
}

/// Why an intent was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("unknown field {0:?} (a misspelt exit plan would leave a position unprotected)")]
    UnknownField(String),
    #[error("field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("field {0:?} is given twice (which value is meant cannot be told)")]
    Duplicate(String),
    #[error(transparent)]
    Id(#[from] IdError),
}

/// A document's top-level object read for its names only: the first name it gives twice.
struct UniqueNames(Option<String>);

impl<'de> Deserialize<'de> for UniqueNames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = UniqueNames;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueNames, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut twice = None;
                while let Some(name) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    if twice.is_none() && seen.contains(&name) {
                        twice = Some(name);
                    } else {
                        seen.insert(name);
                    }
                }
                Ok(UniqueNames(twice))
            }
        }
        d.deserialize_map(Names)
    }
}

const FIELDS: &[&str] = &[
    "intent_id",
    "symbol",
    "action",
    "position_size_usd",
    "quantity",
    "leverage",
    "take_profit_pct",
    "stop_loss_pct",
    "trailing_pct",
    "take_profit_price",
    "stop_loss_price",
    "source",
    "created_at",
    "expires_at",
    "position_side",
];

fn invalid(field: &'static str, reason: impl Into<String>) -> IntentError {
    IntentError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A decimal given as a JSON number (exact digits) or a string.
fn decimal(
    obj: &serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Option<Decimal>, IntentError> {
    let text = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(invalid(field, format!("expected a number, got {other}"))),
    };
    // Exact: a value with more digits than a decimal holds is refused, not rounded (rounding
    // read 1e-31 as 0 and refused it as "must be greater than zero, got 0.000...").
    let value = match Decimal::from_str_exact(&text) {
        Ok(value) => value,
        Err(rust_decimal::Error::Underflow) => {
            return Err(invalid(
                field,
                format!("{text:?} has more digits than a decimal holds (28 decimals at most)"),
            ))
        }
        Err(_) => Decimal::from_scientific(&text)
            .map_err(|_| invalid(field, format!("{text:?} is not a decimal number")))?,
    };
    Ok(Some(value))
}

fn positive(field: &'static str, value: Option<Decimal>) -> Result<Option<Decimal>, IntentError> {
    match value {
        Some(v) if v <= Decimal::ZERO => Err(invalid(
            field,
            format!("must be greater than zero, got {v}"),
        )),
        other => Ok(other),
    }
}

fn level(
    obj: &serde_json::Map<String, Value>,
    pct_field: &'static str,
    price_field: &'static str,
) -> Result<Option<ExitLevel>, IntentError> {
    let pct = positive(pct_field, decimal(obj, pct_field)?)?;
    let price = positive(price_field, decimal(obj, price_field)?)?;
    match (pct, price) {
        (Some(_), Some(_)) => Err(invalid(
            pct_field,
            format!("give {pct_field} or {price_field}, not both"),
        )),
        (Some(p), None) if p >= Decimal::ONE_HUNDRED => {
            Err(invalid(pct_field, "must be below 100"))
        }
        (Some(p), None) => Ok(Some(ExitLevel::Pct(p))),
        (None, Some(p)) => Ok(Some(ExitLevel::Price(p))),
        (None, None) => Ok(None),
    }
}

impl TradeIntent {
    /// Parses and validates an intent document.
    pub fn from_json(text: &str) -> Result<TradeIntent, IntentError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| IntentError::NotJson(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(IntentError::NotJson("the document is not an object".into()));
        };
        // A name given twice is read by serde_json as its last value, so
        // `"stop_loss_pct":1,"stop_loss_pct":null` would open a position without its stop.
        // Which value the sender meant cannot be told: refused.
        if let Ok(UniqueNames(Some(name))) = serde_json::from_str(text) {
            return Err(IntentError::Duplicate(name));
        }
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(IntentError::UnknownField(unknown.clone()));
        }
        let string = |field: &'static str| -> Result<Option<&str>, IntentError> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(invalid(field, format!("expected a string, got {other}"))),
            }
        };
        let intent_id =
            IntentId::new(string("intent_id")?.ok_or(IntentError::Missing("intent_id"))?)?;
        let symbol = Symbol::new(string("symbol")?.ok_or(IntentError::Missing("symbol"))?)?;
        let action_text = string("action")?.ok_or(IntentError::Missing("action"))?;
        let action = Action::parse(action_text).ok_or_else(|| {
            invalid(
                "action",
                format!(
                    "{:?} is not BUY, SELL or CLOSE",
                    action_text.to_ascii_uppercase()
                ),
            )
        })?;
        let position_size_usd = positive("position_size_usd", decimal(&obj, "position_size_usd")?)?;
        let quantity = positive("quantity", decimal(&obj, "quantity")?)?;
        match (action, position_size_usd, quantity) {
            (Action::Close, Some(_), _) => {
                return Err(invalid(
                    "position_size_usd",
                    "a CLOSE takes quantity (or nothing for the whole position)",
                ))
            }
            (Action::Buy | Action::Sell, None, None) => {
                return Err(IntentError::Missing("position_size_usd or quantity"))
            }
            (Action::Buy | Action::Sell, Some(_), Some(_)) => {
                return Err(invalid(
                    "quantity",
                    "give position_size_usd or quantity, not both",
                ))
            }
            _ => {}
        }
        let leverage = match obj.get("leverage") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(l @ 1..=125) => Some(l as u32),
                _ => {
                    return Err(invalid(
                        "leverage",
                        format!("must be a whole number from 1 to 125, got {n}"),
                    ))
                }
            },
            Some(other) => {
                return Err(invalid(
                    "leverage",
                    format!("expected a number, got {other}"),
                ))
            }
        };
        let trailing_pct = decimal(&obj, "trailing_pct")?;
        if let Some(t) = trailing_pct {
            if t < Decimal::new(1, 1) || t > Decimal::TEN {
                return Err(invalid(
                    "trailing_pct",
                    format!("Binance allows a callback of 0.1 to 10 percent, got {t}"),
                ));
            }
        }
        let exit_plan = ExitPlan {
            take_profit: level(&obj, "take_profit_pct", "take_profit_price")?,
            stop_loss: level(&obj, "stop_loss_pct", "stop_loss_price")?,
            trailing_pct,
        };
        if action == Action::Close && !exit_plan.is_empty() {
            return Err(invalid("action", "a CLOSE takes no exit plan"));
        }
        let millis = |field: &'static str| -> Result<Option<i64>, IntentError> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => {
                    Ok(Some(n.as_i64().ok_or_else(|| {
                        invalid(field, "must be integer milliseconds")
                    })?))
                }
                Some(other) => Err(invalid(
                    field,
                    format!("expected milliseconds, got {other}"),
                )),
            }
        };
        let created_at = millis("created_at")?;
        let expires_at = millis("expires_at")?;
        let position_side = match string("position_side")? {
            None => None,
            Some(text) => match PositionSide::parse(text) {
                Some(PositionSide::Both) | None => {
                    return Err(invalid(
                        "position_side",
                        format!("{text:?} is not LONG or SHORT (leave it out in one-way mode)"),
                    ))
                }
                Some(side) => Some(side),
            },
        };
        // In hedge mode a BUY on the SHORT side closes it: a close is a CLOSE, so what an entry
        // opens cannot be mistaken for what it reduces.
        let opens = match action {
            Action::Buy => Some(Side::Buy),
            Action::Sell => Some(Side::Sell),
            Action::Close => None,
        };
        if let (Some(side), Some(given)) = (opens, position_side) {
            if PositionSide::opened_by(side) != given {
                return Err(invalid(
                    "position_side",
                    format!(
                        "a {} opens the {} side, not {given}; close a position with CLOSE and position_side",
                        action.as_str(),
                        PositionSide::opened_by(side)
                    ),
                ));
            }
        }
        Ok(TradeIntent {
            intent_id,
            symbol,
            action,
            position_size_usd,
            quantity,
            leverage,
            exit_plan,
            source: string("source")?.map(str::to_string),
            created_at,
            expires_at,
            position_side,
        })
    }

    /// The side an entry opens in hedge mode, or the side a CLOSE names: what the intent gives,
    /// else what a BUY or SELL implies. `None` for a CLOSE that names no side.
    pub fn hedge_side(&self) -> Option<PositionSide> {
        self.position_side.or(match self.action {
            Action::Buy => Some(PositionSide::Long),
            Action::Sell => Some(PositionSide::Short),
            Action::Close => None,
        })
    }

    /// A digest of what the intent asks for (symbol, action, size, leverage, exit plan; not when
    /// or by whom it was sent), to tell a redelivery or a resend of the same intent from a
    /// different intent that reuses its id.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut doc = self.to_json();
        if let Value::Object(obj) = &mut doc {
            for metadata in ["created_at", "expires_at", "source"] {
                obj.remove(metadata);
            }
        }
        let digest = Sha256::digest(doc.to_string().as_bytes());
        hex::encode(&digest[..16])
    }

    /// The intent as its JSON document: what is published on the intent stream (see
    /// [`IntentBuilder`]), and what [`TradeIntent::from_json`] reads back as the same intent.
    pub fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert(
            "intent_id".into(),
            Value::String(self.intent_id.to_string()),
        );
        obj.insert("symbol".into(), Value::String(self.symbol.to_string()));
        obj.insert("action".into(), Value::String(self.action.as_str().into()));
        insert_decimal(&mut obj, "position_size_usd", self.position_size_usd);
        insert_decimal(&mut obj, "quantity", self.quantity);
        if let Some(l) = self.leverage {
            obj.insert("leverage".into(), Value::from(l));
        }
        write_exit_plan(&mut obj, &self.exit_plan);
        if let Some(s) = &self.source {
            obj.insert("source".into(), Value::String(s.clone()));
        }
        if let Some(t) = self.created_at {
            obj.insert("created_at".into(), Value::from(t));
        }
        if let Some(t) = self.expires_at {
            obj.insert("expires_at".into(), Value::from(t));
        }
        if let Some(side) = self.position_side {
            obj.insert("position_side".into(), Value::String(side.as_str().into()));
        }
        Value::Object(obj)
    }
}

/// An intent being written: what `quantum intent`, the demo and the exit monitor's closes
/// publish, built from typed values instead of a hand-written document. It starts from what every
/// intent names (id, symbol, action) with nothing else set, and takes the rest as settings.
/// [`IntentBuilder::build`] writes the document and reads it back with [`TradeIntent::from_json`],
/// so what it returns is exactly what the execution service will read, and a draft the service
/// would refuse (a CLOSE with an exit plan, a BUY without a size, ...) is refused here with the
/// same reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentBuilder {
    draft: TradeIntent,
}

impl TradeIntent {
    /// An intent to `action` `symbol`, with nothing but its id, symbol and action set yet.
    pub fn builder(intent_id: IntentId, symbol: Symbol, action: Action) -> IntentBuilder {
        IntentBuilder {
            draft: TradeIntent {
                intent_id,
                symbol,
                action,
                position_size_usd: None,
                quantity: None,
                leverage: None,
                exit_plan: ExitPlan::default(),
                source: None,
                created_at: None,
                expires_at: None,
                position_side: None,
            },
        }
    }

    /// A reduce-only CLOSE of `symbol`'s whole position; [`IntentBuilder::quantity`] closes
    /// only that much.
    pub fn close(intent_id: IntentId, symbol: Symbol) -> IntentBuilder {
        TradeIntent::builder(intent_id, symbol, Action::Close)
    }
}

impl IntentBuilder {
    /// Size in USDT notional (BUY/SELL). The optional settings take a value or an `Option`, so
    /// an optional argument passes straight through.
    pub fn position_size_usd(mut self, usd: impl Into<Option<Decimal>>) -> IntentBuilder {
        self.draft.position_size_usd = usd.into();
        self
    }

    /// Size in contracts; for a CLOSE, how much of the position to close.
    pub fn quantity(mut self, quantity: impl Into<Option<Decimal>>) -> IntentBuilder {
        self.draft.quantity = quantity.into();
        self
    }

    pub fn leverage(mut self, leverage: impl Into<Option<u32>>) -> IntentBuilder {
        self.draft.leverage = leverage.into();
        self
    }

    pub fn take_profit(mut self, level: impl Into<Option<ExitLevel>>) -> IntentBuilder {
        self.draft.exit_plan.take_profit = level.into();
        self
    }

    pub fn stop_loss(mut self, level: impl Into<Option<ExitLevel>>) -> IntentBuilder {
        self.draft.exit_plan.stop_loss = level.into();
        self
    }

    pub fn trailing_pct(mut self, pct: impl Into<Option<Decimal>>) -> IntentBuilder {
        self.draft.exit_plan.trailing_pct = pct.into();
        self
    }

    /// Who sent the intent (`exit-monitor`, `quantum-cli`, ...).
    pub fn source(mut self, source: impl Into<String>) -> IntentBuilder {
        self.draft.source = Some(source.into());
        self
    }

    /// When the intent was created (ms since the epoch).
    pub fn created_at(mut self, at: i64) -> IntentBuilder {
        self.draft.created_at = Some(at);
        self
    }

    /// After this (ms since the epoch) the intent is not executed.
    pub fn expires_at(mut self, at: i64) -> IntentBuilder {
        self.draft.expires_at = Some(at);
        self
    }

    /// Hedge mode: the side to work on (`None` in one-way mode).
    pub fn position_side(mut self, side: impl Into<Option<PositionSide>>) -> IntentBuilder {
        self.draft.position_side = side.into();
        self
    }

    /// The intent, checked by the parser the execution service uses.
    pub fn build(self) -> Result<TradeIntent, IntentError> {
        TradeIntent::from_json(&self.draft.to_json().to_string())
    }
}

/// Writes a decimal as a JSON number with its exact digits.
pub(crate) fn insert_decimal(
    obj: &mut serde_json::Map<String, Value>,
    key: &str,
    value: Option<Decimal>,
) {
    if let Some(v) = value {
        obj.insert(key.into(), decimal_number(v));
    }
}

/// A JSON number carrying exactly the decimal's digits (needs serde_json's arbitrary_precision).
pub(crate) fn decimal_number(value: Decimal) -> Value {
    let text = value.normalize().to_string();
    serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))
}

/// The exit plan's fields, flat, as both the intent and the result carry them.
pub(crate) fn write_exit_plan(obj: &mut serde_json::Map<String, Value>, plan: &ExitPlan) {
    let (tp_pct, tp_price) = split(plan.take_profit);
    let (sl_pct, sl_price) = split(plan.stop_loss);
    insert_decimal(obj, "take_profit_pct", tp_pct);
    insert_decimal(obj, "stop_loss_pct", sl_pct);
    insert_decimal(obj, "trailing_pct", plan.trailing_pct);
    insert_decimal(obj, "take_profit_price", tp_price);
    insert_decimal(obj, "stop_loss_price", sl_price);
}

fn split(level: Option<ExitLevel>) -> (Option<Decimal>, Option<Decimal>) {
    match level {
        Some(ExitLevel::Pct(p)) => (Some(p), None),
        Some(ExitLevel::Price(p)) => (None, Some(p)),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_tells_another_intent_from_a_resend() {
        let a = TradeIntent::from_json(
            r#"{"intent_id":"f","symbol":"ETHUSDT","action":"BUY","quantity":1,"created_at":1}"#,
        )
        .unwrap();
        let resent = TradeIntent::from_json(r#"{"intent_id":"f","symbol":"ETHUSDT","action":"BUY","quantity":1.0,"created_at":2,"source":"retry"}"#).unwrap();
        let other = TradeIntent::from_json(
            r#"{"intent_id":"f","symbol":"ETHUSDT","action":"BUY","quantity":2}"#,
        )
        .unwrap();
        assert_eq!(a.fingerprint(), resent.fingerprint());
        assert_ne!(a.fingerprint(), other.fingerprint());
    }

    fn parse(json: &str) -> Result<TradeIntent, IntentError> {
        TradeIntent::from_json(json)
    }

    #[test]
    fn a_full_intent_round_trips_with_exact_digits() {
        let text = r#"{"intent_id":"i-1","symbol":"axsusdt","action":"BUY","position_size_usd":100.10,
            "leverage":10,"take_profit_pct":2,"stop_loss_price":5.905,"trailing_pct":0.5,"source":"ai","created_at":1769042400000}"#;
        let intent = parse(text).unwrap();
        assert_eq!(intent.symbol.as_str(), "AXSUSDT");
        assert_eq!(intent.position_size_usd, Some(Decimal::new(10010, 2)));
        assert_eq!(
            intent.exit_plan.stop_loss,
            Some(ExitLevel::Price(Decimal::new(5905, 3)))
        );
        let json = intent.to_json().to_string();
        assert!(json.contains(r#""stop_loss_price":5.905"#), "{json}");
        assert!(json.contains(r#""position_size_usd":100.1"#), "{json}");
        assert_eq!(parse(&json).unwrap(), intent);
    }

    #[test]
    fn bad_intents_name_the_field_at_fault() {
        let cases = [
            ("not json", "not a JSON object"),
            (
                r#"{"symbol":"BTCUSDT","action":"BUY","quantity":1}"#,
                "intent_id",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTC/USDT","action":"BUY","quantity":1}"#,
                "symbol",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"HOLD","quantity":1}"#,
                "action",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY"}"#,
                "position_size_usd or quantity",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":0}"#,
                "quantity",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","position_size_usd":-5}"#,
                "position_size_usd",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1,"leverage":200}"#,
                "leverage",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1,"trailing_pct":20}"#,
                "trailing_pct",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1,"stop_loss_pct":-1}"#,
                "stop_loss_pct",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1,"stop_los_pct":1}"#,
                "stop_los_pct",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1,"take_profit_pct":1,"take_profit_price":9}"#,
                "not both",
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":1,"stop_loss_pct":1,"stop_loss_pct":null}"#,
                r#"field "stop_loss_pct" is given twice"#,
            ),
            (
                r#"{"intent_id":"a","symbol":"BTCUSDT","action":"BUY","quantity":0.0000000000000000000000000000001}"#,
                "quantity: \"0.0000000000000000000000000000001\" has more digits than a decimal holds",
            ),
        ];
        for (json, needle) in cases {
            let err = parse(json).expect_err(json).to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    fn id(text: &str) -> IntentId {
        IntentId::new(text).unwrap()
    }

    fn symbol(text: &str) -> Symbol {
        Symbol::new(text).unwrap()
    }

    #[test]
    fn a_built_close_is_the_document_the_exit_monitor_always_sent() {
        let close = TradeIntent::close(id("close-t2-1"), symbol("AXSUSDT"))
            .quantity(Decimal::new(3200, 2))
            .source("exit-monitor")
            .created_at(1_769_042_400_000)
            .build()
            .unwrap();
        assert_eq!(
            close.to_json().to_string(),
            r#"{"action":"CLOSE","created_at":1769042400000,"intent_id":"close-t2-1","quantity":32,"source":"exit-monitor","symbol":"AXSUSDT"}"#
        );
        let whole = TradeIntent::close(id("c"), symbol("ETHUSDT"))
            .build()
            .unwrap();
        assert_eq!((whole.action, whole.quantity), (Action::Close, None));
    }

    #[test]
    fn a_draft_the_service_would_refuse_is_refused_with_its_reason() {
        let plan_on_close = TradeIntent::close(id("c"), symbol("ETHUSDT"))
            .stop_loss(ExitLevel::Pct(Decimal::ONE))
            .build();
        assert!(plan_on_close
            .unwrap_err()
            .to_string()
            .contains("a CLOSE takes no exit plan"));
        let no_size = TradeIntent::builder(id("b"), symbol("ETHUSDT"), Action::Buy).build();
        assert_eq!(
            no_size,
            Err(IntentError::Missing("position_size_usd or quantity"))
        );
    }

    #[test]
    fn actions_are_read_case_insensitively() {
        assert_eq!(Action::parse("sell"), Some(Action::Sell));
        assert_eq!(Action::parse("Close"), Some(Action::Close));
        assert_eq!(Action::parse("HOLD"), None);
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
        }
    }

    proptest::proptest! {
        /// Whatever a builder is given, what it builds is what the service reads back from the
        /// document it publishes, and a draft within the documented limits is never refused.
        #[test]
        fn a_built_intent_reads_back_as_itself(
            action in 0usize..3,
            usd in proptest::option::of(-5i64..1_000_000),
            qty in proptest::option::of((-5i64..1_000_000, 0u32..6)),
            leverage in proptest::option::of(0u32..130),
            tp in proptest::option::of((0i64..20_000, 0u32..3, proptest::bool::ANY)),
            sl in proptest::option::of((0i64..20_000, 0u32..3, proptest::bool::ANY)),
            trailing in proptest::option::of((0i64..120, 1u32..2)),
            source in proptest::option::of("[a-z-]{0,12}"),
            created_at in proptest::option::of(0i64..2_000_000_000_000),
            expires_at in proptest::option::of(0i64..2_000_000_000_000),
        ) {
            let action = Action::ALL[action];
            let level = |(n, scale, pct): (i64, u32, bool)| {
                let v = Decimal::new(n, scale);
                if pct { ExitLevel::Pct(v) } else { ExitLevel::Price(v) }
            };
            let mut draft = TradeIntent::builder(id("p-1"), symbol("ETHUSDT"), action)
                .position_size_usd(usd.map(Decimal::from))
                .quantity(qty.map(|(n, scale)| Decimal::new(n, scale)))
                .leverage(leverage)
                .take_profit(tp.map(level))
                .stop_loss(sl.map(level))
                .trailing_pct(trailing.map(|(n, scale)| Decimal::new(n, scale)));
            if let Some(s) = &source {
                draft = draft.source(s.as_str());
            }
            if let Some(t) = created_at {
                draft = draft.created_at(t);
            }
            if let Some(t) = expires_at {
                draft = draft.expires_at(t);
            }
            let positive = |d: Option<Decimal>| d.is_none_or(|d| d > Decimal::ZERO);
            let level_ok = |l: Option<ExitLevel>| match l {
                Some(ExitLevel::Pct(p)) => p > Decimal::ZERO && p < Decimal::ONE_HUNDRED,
                Some(ExitLevel::Price(p)) => p > Decimal::ZERO,
                None => true,
            };
            let d = &draft.draft;
            let valid = positive(d.position_size_usd)
                && positive(d.quantity)
                && d.leverage.is_none_or(|l| (1..=125).contains(&l))
                && level_ok(d.exit_plan.take_profit)
                && level_ok(d.exit_plan.stop_loss)
                && d.exit_plan.trailing_pct.is_none_or(|t| t >= Decimal::new(1, 1) && t <= Decimal::TEN)
                && match action {
                    Action::Close => d.position_size_usd.is_none() && d.exit_plan.is_empty(),
                    Action::Buy | Action::Sell => d.position_size_usd.is_some() != d.quantity.is_some(),
                };
            let expected = d.clone();
            match draft.build() {
                Ok(intent) => {
                    proptest::prop_assert!(valid);
                    proptest::prop_assert_eq!(&intent, &expected);
                    let read = TradeIntent::from_json(&intent.to_json().to_string());
                    proptest::prop_assert_eq!(read, Ok(intent));
                }
                Err(e) => proptest::prop_assert!(!valid, "refused {e}"),
            }
        }
    }

    /// Hedge mode: a BUY opens LONG and a SELL opens SHORT, so either may name its side but
    /// not the other one (that would be a close); a CLOSE names the side it closes.
    #[test]
    fn position_side_is_the_side_an_entry_opens_or_a_close_closes() {
        let buy =
            parse(r#"{"intent_id":"h1","symbol":"BTCUSDT","action":"BUY","quantity":1}"#).unwrap();
        assert_eq!(buy.position_side, None);
        assert_eq!(buy.hedge_side(), Some(PositionSide::Long));
        let sell = parse(
            r#"{"intent_id":"h2","symbol":"BTCUSDT","action":"SELL","quantity":1,"position_side":"short"}"#,
        )
        .unwrap();
        assert_eq!(sell.position_side, Some(PositionSide::Short));
        let close = parse(
            r#"{"intent_id":"h3","symbol":"BTCUSDT","action":"CLOSE","position_side":"LONG"}"#,
        )
        .unwrap();
        assert_eq!(close.hedge_side(), Some(PositionSide::Long));
        assert_eq!(
            TradeIntent::from_json(&close.to_json().to_string()),
            Ok(close)
        );
        let unnamed = parse(r#"{"intent_id":"h4","symbol":"BTCUSDT","action":"CLOSE"}"#).unwrap();
        assert_eq!(unnamed.hedge_side(), None);
        for (doc, says) in [
            (
                r#"{"intent_id":"h5","symbol":"BTCUSDT","action":"BUY","quantity":1,"position_side":"SHORT"}"#,
                "a BUY opens the LONG side, not SHORT",
            ),
            (
                r#"{"intent_id":"h6","symbol":"BTCUSDT","action":"CLOSE","position_side":"BOTH"}"#,
                "is not LONG or SHORT",
            ),
            (
                r#"{"intent_id":"h7","symbol":"BTCUSDT","action":"CLOSE","position_side":1}"#,
                "expected a string",
            ),
        ] {
            let e = parse(doc).unwrap_err().to_string();
            assert!(e.contains(says), "{doc}: {e}");
            assert!(e.contains("position_side"), "{doc}: {e}");
        }
    }

    #[test]
    fn a_close_needs_no_size_and_takes_no_exit_plan() {
        let close = parse(r#"{"intent_id":"c","symbol":"ETHUSDT","action":"close"}"#).unwrap();
        assert_eq!((close.action, close.quantity), (Action::Close, None));
        assert!(parse(
            r#"{"intent_id":"c","symbol":"ETHUSDT","action":"CLOSE","stop_loss_pct":1}"#
        )
        .is_err());
    }
}
