//! Decoding helpers shared by the REST and stream types: decimals straight from Binance's decimal
//! strings (never through `f64`), empty strings as "absent", ids that are sometimes numbers and
//! sometimes strings, and string enums that keep unknown values instead of failing.
//!
//! Unknown enum values must not fail a decode: an order reply that cannot be decoded is treated
//! as ambiguous, so a new order type added by Binance would otherwise turn every successful
//! order into a lookup.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Parses a Binance decimal string (`"0.00000"`, `"-45.04"`) exactly.
pub(crate) fn parse_decimal(text: &str) -> Result<Decimal, rust_decimal::Error> {
    Decimal::from_str(text).or_else(|_| Decimal::from_scientific(text))
}

/// `Decimal` from a JSON string. Numbers are refused: they would have passed through `f64`.
pub(crate) mod dec {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_decimal(&text).map_err(|e| de::Error::custom(format!("bad decimal {text:?}: {e}")))
    }
}

/// `Option<Decimal>` from a JSON string; `""`, `null` and a missing field are `None`.
pub(crate) mod opt_dec {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Decimal>, D::Error> {
        let text = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        match text {
            None => Ok(None),
            Some(t) if t.is_empty() => Ok(None),
            Some(t) => parse_decimal(&t)
                .map(Some)
                .map_err(|e| de::Error::custom(format!("bad decimal {t:?}: {e}"))),
        }
    }
}

/// `Option<i64>` from a number, a numeric string, `""` or `null` (algo `actualOrderId`, `ai`).
pub(crate) mod loose_id {
    use super::*;

    struct IdVisitor;

    impl<'de> Visitor<'de> for IdVisitor {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer id, a numeric string, an empty string or null")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("id {v} too large")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<i64>()
                .map(Some)
                .map_err(|_| E::custom(format!("bad id {v:?}")))
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(IdVisitor)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_any(IdVisitor)
    }
}

/// A string that Binance sends as either `"200"` or `200` (the algo cancel `code`).
pub(crate) mod loose_string {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
    }
}

/// Declares a string enum with the listed wire spellings plus `Other(String)` for values this
/// client does not know yet. It serializes to and from the wire string.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this client does not know; kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Other(s) => s.as_str(),
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(match s {
                    $($wire => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                // Infallible: unknown spellings become `Other`.
                Ok(text.parse().unwrap_or_else(|never: std::convert::Infallible| match never {}))
            }
        }
    };
}

pub(crate) use wire_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        #[serde(with = "dec")]
        price: Decimal,
        #[serde(default, with = "opt_dec")]
        maybe: Option<Decimal>,
        #[serde(default, with = "loose_id")]
        id: Option<i64>,
    }

    #[test]
    fn decimals_keep_their_digits() {
        let s: Sample = serde_json::from_str(r#"{"price":"0.00000","maybe":"","id":""}"#).unwrap();
        assert_eq!(s.price, Decimal::ZERO);
        assert_eq!(s.price.scale(), 5);
        assert_eq!(s.maybe, None);
        assert_eq!(s.id, None);
        let s: Sample =
            serde_json::from_str(r#"{"price":"-45.04000000","maybe":"1.5","id":"34679383504"}"#)
                .unwrap();
        assert_eq!(s.price.to_string(), "-45.04000000");
        assert_eq!(s.maybe, Some(Decimal::new(15, 1)));
        assert_eq!(s.id, Some(34_679_383_504));
        let s: Sample = serde_json::from_str(r#"{"price":"1","id":42}"#).unwrap();
        assert_eq!(s.id, Some(42));
    }

    #[test]
    fn json_numbers_are_not_money() {
        assert!(serde_json::from_str::<Sample>(r#"{"price":0.1}"#).is_err());
        assert!(serde_json::from_str::<Sample>(r#"{"price":"abc"}"#).is_err());
    }
}
