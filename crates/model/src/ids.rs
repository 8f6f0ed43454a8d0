//! Validated identifiers. Construction checks the value, and deserialization goes through the
//! same check, so an invalid id cannot exist past the edge where data enters.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("symbol {0:?} must be 2 to 20 upper-case letters or digits")]
    Symbol(String),
    #[error("intent_id {0:?} must be 1 to 128 printable characters")]
    IntentId(String),
    #[error("client order id {0:?} must match ^[.A-Z:/a-z0-9_-]{{1,36}}$")]
    ClientOrderId(String),
}

macro_rules! string_id {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::new(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A USDⓈ-M contract symbol such as `BTCUSDT` (upper-cased on entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);
string_id!(Symbol);

impl Symbol {
    pub fn new(text: &str) -> Result<Symbol, IdError> {
        let upper = text.trim().to_ascii_uppercase();
        if (2..=20).contains(&upper.len()) && upper.chars().all(|c| c.is_ascii_alphanumeric()) {
            Ok(Symbol(upper))
        } else {
            Err(IdError::Symbol(text.to_string()))
        }
    }
}

/// The strategy's id of one intent; unique per intent, and the key of every idempotency check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntentId(String);
string_id!(IntentId);

impl IntentId {
    pub fn new(text: &str) -> Result<IntentId, IdError> {
        if (1..=128).contains(&text.chars().count()) && !text.chars().any(char::is_control) {
            Ok(IntentId(text.to_string()))
        } else {
            Err(IdError::IntentId(text.to_string()))
        }
    }
}

impl IntentId {
    /// The id of the `attempt`-th CLOSE intent the exit monitor sends for the lot named `lot`.
    /// Every attempt gets its own id, because the execution service answers each intent id
    /// exactly once: a second close under the first one's id would never be answered. The id is
    /// `close-<lot>-<attempt>` when that fits an intent id, else `close-` and 32 hex digits of
    /// the lot's SHA-256, so any lot, however long its name, has valid close ids.
    pub fn close_of(lot: &str, attempt: u32) -> IntentId {
        IntentId::new(&format!("close-{lot}-{attempt}")).unwrap_or_else(|_| {
            let digest = Sha256::digest(lot.as_bytes());
            IntentId(format!("close-{}-{attempt}", &hex::encode(digest)[..32]))
        })
    }

    /// The id under which a fill of `intent`'s order that came after its result was published
    /// is reported (`late-<intent>`): a result of its own, because every consumer takes one
    /// result per intent id. Too long an id becomes `late-` and 32 hex digits of its SHA-256.
    pub fn late_fill_of(intent: &IntentId) -> IntentId {
        IntentId::new(&format!("late-{intent}")).unwrap_or_else(|_| {
            let digest = Sha256::digest(intent.as_str().as_bytes());
            IntentId(format!("late-{}", &hex::encode(digest)[..32]))
        })
    }
}

/// A Binance `newClientOrderId`: 1 to 36 characters of `[.A-Z:/a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientOrderId(String);
string_id!(ClientOrderId);

/// Prefix of every client order id quantum derives, so its orders are recognisable on the exchange.
const PREFIX: &str = "q-";

impl ClientOrderId {
    pub fn new(text: &str) -> Result<ClientOrderId, IdError> {
        let valid = (1..=36).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '_' | '-'));
        if valid {
            Ok(ClientOrderId(text.to_string()))
        } else {
            Err(IdError::ClientOrderId(text.to_string()))
        }
    }

    /// The client order id of an intent's order. It is a pure function of the intent id, so a
    /// redelivered intent (crash, restart, claim) asks the exchange about the same order instead
    /// of placing a new one. Short ids in Binance's charset are kept readable (`q-<intent_id>`);
    /// anything else becomes `q-` and 32 hex digits of its SHA-256.
    pub fn for_intent(intent: &IntentId) -> ClientOrderId {
        let readable = format!("{PREFIX}{}", intent.as_str());
        ClientOrderId::new(&readable).unwrap_or_else(|_| {
            let digest = Sha256::digest(intent.as_str().as_bytes());
            ClientOrderId(format!("{PREFIX}{}", &hex::encode(digest)[..32]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn close_ids_are_unique_per_attempt_and_valid_for_any_lot() {
        assert_eq!(IntentId::close_of("t2", 2).as_str(), "close-t2-2");
        let long = "x".repeat(125);
        let (a, b) = (IntentId::close_of(&long, 1), IntentId::close_of(&long, 2));
        assert_ne!(a, b);
        assert!(IntentId::new(a.as_str()).is_ok(), "{a}");
        assert!(a.as_str().len() <= 128);
    }

    #[test]
    fn symbols_are_upper_cased_and_checked() {
        assert_eq!(Symbol::new("axsusdt").unwrap().as_str(), "AXSUSDT");
        assert!(Symbol::new("BTC/USDT").is_err());
        assert!(Symbol::new("").is_err());
    }

    #[test]
    fn a_short_intent_id_stays_readable_in_the_client_order_id() {
        let id = IntentId::new("sig-2026-11-24-001").unwrap();
        assert_eq!(
            ClientOrderId::for_intent(&id).as_str(),
            "q-sig-2026-11-24-001"
        );
    }

    #[test]
    fn a_long_or_exotic_intent_id_is_hashed() {
        let id =
            IntentId::new("strategy alpha / BTC long #42 (with spaces) and more text").unwrap();
        let coid = ClientOrderId::for_intent(&id);
        assert_eq!(coid.as_str().len(), 34);
        assert!(coid.as_str().starts_with("q-"));
    }

    proptest! {
        #[test]
        fn every_intent_id_gives_a_valid_stable_client_order_id(text in "\\PC{1,128}") {
            let id = IntentId::new(&text).unwrap();
            let a = ClientOrderId::for_intent(&id);
            prop_assert!(ClientOrderId::new(a.as_str()).is_ok());
            prop_assert_eq!(a, ClientOrderId::for_intent(&id));
        }
    }
}
