//! Inputs for the decoders' fuzz tests (issue 11): proptest strategies for arbitrary text, random
//! JSON, and structure-aware mutations of a valid document (fields dropped, types swapped,
//! numbers at and past every limit, NaN and Infinity spelt as text, deep nesting, long strings,
//! unicode), so every crate that reads outside input tests its decoders the same way: whatever
//! comes in, the decoder answers `Ok` or `Err` and never panics.
//!
//! The strategies are plain `proptest` strategies; a test runs them with a fixed number of cases
//! (a few hundred to a few thousand), so `cargo test` stays fast. The cargo-fuzz targets in
//! `fuzz/` are the long-running counterpart.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// The number of cases for a fuzz test: `default` times `QUANTUM_FUZZ_SCALE` (a whole number,
/// 1 when unset), so a longer run is `QUANTUM_FUZZ_SCALE=100 cargo test ... fuzz`.
pub fn cases(default: u32) -> u32 {
    let scale = std::env::var("QUANTUM_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    default.saturating_mul(scale)
}

/// Decimal texts at and past every edge the decoders care about: rust_decimal's 96-bit range and
/// 28-digit scale, i64/u64 limits, exponents, signs, spellings no parser should accept, and
/// digits that are not ASCII.
pub const NASTY_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "1",
    "-1",
    "0.1",
    "100",
    "125",
    "126",
    "1e3",
    "1E-3",
    "1e26",
    "1e28",
    "1e29",
    "1e308",
    "1e400",
    "-1e400",
    "1e-28",
    "1e-29",
    "1e-400",
    "1e4294967296",
    "1e-4294967296",
    "1e9223372036854775807",
    "0.0000000000000000000000000001",
    "0.00000000000000000000000000001",
    "79228162514264337593543950335",
    "79228162514264337593543950336",
    "-79228162514264337593543950335",
    "-79228162514264337593543950336",
    "7922816251426433759354395033.5",
    "100000000000000000000000000",
    "99999999999999999999999999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "4294967295",
    "4294967296",
    "123456789012345678901234567890.123456789",
    "3.14159265358979323846264338327950288419716939937510",
];

/// Texts that look like numbers to a person but not to a strict parser, or that a float parser
/// takes: none of them may panic a decimal parser.
pub const NASTY_STRINGS: &[&str] = &[
    "",
    " ",
    " 1",
    "1 ",
    "NaN",
    "nan",
    "-NaN",
    "Infinity",
    "-Infinity",
    "inf",
    "+1",
    "--1",
    "1.",
    ".5",
    "-.5",
    "1..2",
    "1.2.3",
    "0x10",
    "1_000",
    "1,5",
    "1e",
    "e1",
    "1e+",
    "-",
    ".",
    "١٢٣",
    "１２３",
    "½",
    "💥",
    "\u{0}",
    "\u{202e}1",
    "null",
    "true",
    "BUY",
    "buy",
    "CLOSE",
    "filled",
    "BTCUSDT",
    "btc/usdt",
    "ÄÖÜ",
];

/// A number text from [`NASTY_NUMBERS`], or a random decimal of any size, sign and scale.
pub fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NASTY_NUMBERS).prop_map(str::to_string),
        1 => "-?[0-9]{1,40}(\\.[0-9]{1,40})?([eE][-+]?[0-9]{1,12})?",
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| f.to_string()),
    ]
}

/// A string a decoder may meet where it expects something else: nasty texts, numbers as text,
/// unicode, control characters, and long strings (up to 70,000 characters).
pub fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(NASTY_STRINGS).prop_map(str::to_string),
        3 => number_text(),
        2 => any::<String>(),
        1 => "[A-Z0-9]{0,40}",
        1 => (prop::sample::select(&["A", "é", "💥", "\u{7f}", "0"][..]), 100usize..70_000)
            .prop_map(|(c, n)| c.repeat(n)),
    ]
}

/// A JSON number carrying `text` exactly (serde_json's `arbitrary_precision`), or the text as a
/// string when it is not valid JSON number syntax (`NaN`, `1.`).
pub fn json_number(text: &str) -> Value {
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_number)
        .unwrap_or_else(|| Value::String(text.to_string()))
}

/// A leaf value of any JSON type, biased towards the ones that break decoders.
pub fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        4 => number_text().prop_map(|t| json_number(&t)),
        4 => nasty_string().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

/// Random JSON up to a few levels deep, with keys from `keys` (a decoder's own field names make
/// the random documents reach past its first check) or random keys.
pub fn json(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        3 => prop::sample::select(if keys.is_empty() { &["e"][..] } else { keys }).prop_map(str::to_string),
        1 => any::<String>(),
    ];
    leaf().prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One change to a document, at the place a path index picks.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Remove the value (a field of an object, an element of an array).
    Drop,
    /// Put another value in its place.
    Replace(Value),
    /// A number becomes its text, a string its JSON number (when it is one) or a number,
    /// anything else a string.
    SwapType,
    /// Put it inside an array or an object.
    Wrap(bool),
    /// Replace it with `n` nested arrays (deep nesting, past serde_json's recursion limit).
    Nest(usize),
    /// Add a field to the object at (or containing) the place.
    Insert(String, Value),
    /// Replace it with a nasty number.
    Number(String),
}

fn mutation(keys: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    let key = prop_oneof![
        3 => prop::sample::select(if keys.is_empty() { &["e"][..] } else { keys }).prop_map(str::to_string),
        1 => nasty_string(),
    ];
    prop_oneof![
        3 => Just(Mutation::Drop),
        3 => leaf().prop_map(Mutation::Replace),
        1 => json(keys).prop_map(Mutation::Replace),
        3 => Just(Mutation::SwapType),
        1 => any::<bool>().prop_map(Mutation::Wrap),
        1 => prop_oneof![1usize..16, 120usize..140, 200usize..400].prop_map(Mutation::Nest),
        2 => (key, leaf()).prop_map(|(k, v)| Mutation::Insert(k, v)),
        5 => number_text().prop_map(Mutation::Number),
    ]
}

/// JSON-pointer-like paths of every value in `doc` (the root is the empty path).
fn paths(doc: &Value) -> Vec<Vec<PathStep>> {
    fn walk(value: &Value, here: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
        out.push(here.clone());
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    here.push(PathStep::Key(k.clone()));
                    walk(v, here, out);
                    here.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    here.push(PathStep::Index(i));
                    walk(v, here, out);
                    here.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, &mut Vec::new(), &mut out);
    out
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn get_mut<'a>(doc: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    let mut here = doc;
    for step in path {
        here = match (step, here) {
            (PathStep::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (PathStep::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(here)
}

fn swap_type(value: &Value) -> Value {
    match value {
        Value::Number(n) => Value::String(n.to_string()),
        Value::String(s) => {
            let number = json_number(s);
            if number.is_number() {
                number
            } else {
                Value::from(s.len())
            }
        }
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Null => Value::String("null".into()),
        other => Value::String(other.to_string()),
    }
}

/// Applies `mutation` at the place `at` picks among `doc`'s values.
pub fn apply(doc: &mut Value, at: usize, mutation: &Mutation) {
    let all = paths(doc);
    let path = &all[at % all.len()];
    if let Mutation::Drop = mutation {
        if let Some((last, parent)) = path.split_last() {
            match (last, get_mut(doc, parent)) {
                (PathStep::Key(k), Some(Value::Object(map))) => {
                    map.remove(k);
                }
                (PathStep::Index(i), Some(Value::Array(items))) if *i < items.len() => {
                    items.remove(*i);
                }
                _ => {}
            }
        } else {
            *doc = Value::Null;
        }
        return;
    }
    if let Mutation::Insert(key, value) = mutation {
        // The object at the place, or the nearest object above it.
        for depth in (0..=path.len()).rev() {
            if let Some(Value::Object(map)) = get_mut(doc, &path[..depth]) {
                map.insert(key.clone(), value.clone());
                return;
            }
        }
        return;
    }
    let Some(target) = get_mut(doc, path) else {
        return;
    };
    *target = match mutation {
        Mutation::Replace(v) => v.clone(),
        Mutation::SwapType => swap_type(target),
        Mutation::Wrap(true) => Value::Array(vec![target.take()]),
        Mutation::Wrap(false) => {
            let mut map = Map::new();
            map.insert("v".into(), target.take());
            Value::Object(map)
        }
        Mutation::Nest(n) => {
            let mut v = Value::Array(vec![]);
            for _ in 0..*n {
                v = Value::Array(vec![v]);
            }
            v
        }
        Mutation::Number(text) => {
            if matches!(target, Value::String(_)) {
                Value::String(text.clone())
            } else {
                json_number(text)
            }
        }
        Mutation::Drop | Mutation::Insert(..) => unreachable!("handled above"),
    };
}

/// `doc` with one to four [`Mutation`]s applied at random places. `keys` are the decoder's own
/// field names, used for inserted fields and random sub-documents.
pub fn mutated(doc: Value, keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::vec((any::<usize>(), mutation(keys)), 1..5).prop_map(move |steps| {
        let mut doc = doc.clone();
        for (at, m) in &steps {
            apply(&mut doc, *at, m);
        }
        doc
    })
}

/// Damage to the text of a document: what a truncated frame, a flipped byte or a duplicated key
/// looks like to a parser.
#[derive(Debug, Clone)]
pub enum TextDamage {
    None,
    /// Cut at a byte (on a char boundary).
    Truncate(usize),
    /// Insert a string at a byte.
    Insert(usize, String),
    /// The first field twice: `{"k":1,"k":1,...}`.
    DuplicateKey,
    /// `n` opening brackets in front of it.
    Brackets(usize),
}

fn text_damage() -> impl Strategy<Value = TextDamage> {
    prop_oneof![
        6 => Just(TextDamage::None),
        1 => any::<usize>().prop_map(TextDamage::Truncate),
        1 => (any::<usize>(), prop_oneof![nasty_string(), "[\\[\\]{}:,\"\\\\]{1,4}"])
            .prop_map(|(i, s)| TextDamage::Insert(i, s)),
        1 => Just(TextDamage::DuplicateKey),
        1 => prop_oneof![1usize..200, 1_000usize..20_000].prop_map(TextDamage::Brackets),
    ]
}

fn boundary(text: &str, at: usize) -> usize {
    let mut i = at % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Applies text damage to a serialized document.
pub fn damage(text: String, damage: &TextDamage) -> String {
    match damage {
        TextDamage::None => text,
        TextDamage::Truncate(at) => text[..boundary(&text, *at)].to_string(),
        TextDamage::Insert(at, s) => {
            let i = boundary(&text, *at);
            format!("{}{s}{}", &text[..i], &text[i..])
        }
        TextDamage::DuplicateKey => {
            // Repeat the first `"key":value` pair right after the opening brace (a rough cut:
            // when the first value holds a comma the result is broken JSON, also worth a try).
            match (text.find('{'), text.find(',')) {
                (Some(open), Some(comma)) if comma > open => {
                    let pair = &text[open + 1..comma];
                    format!("{{{pair},{}", &text[open + 1..])
                }
                _ => text,
            }
        }
        TextDamage::Brackets(n) => format!("{}{text}", "[".repeat(*n)),
    }
}

/// The text of `doc` mutated ([`mutated`]) and then possibly damaged ([`TextDamage`]).
pub fn mutated_text(doc: Value, keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    (mutated(doc, keys), text_damage()).prop_map(|(doc, d)| damage(doc.to_string(), &d))
}

/// Any text: random bytes read as UTF-8 (lossily), random unicode, JSON-ish token soup, or
/// random JSON with `keys`.
pub fn any_text(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..512)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => any::<String>(),
        2 => "[\\[\\]{}:,\"0-9eE.+\\-a-z ]{0,200}",
        3 => json(keys).prop_map(|v| v.to_string()),
    ]
}

/// Parses a fixture and panics with its name when it is not JSON (the fixtures are valid).
pub fn fixture(name: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture {name} is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn mutations_keep_the_document_json_and_change_it() {
        let doc = serde_json::json!({"a": 1, "b": {"c": [1, "2", null]}, "d": "x"});
        let mut runner = TestRunner::deterministic();
        let strategy = mutated(doc.clone(), &["a", "b"]);
        let mut changed = 0;
        for _ in 0..200 {
            let m = strategy.new_tree(&mut runner).unwrap().current();
            // Deep nesting past the parser's limit is refused, never a panic.
            let _ = serde_json::from_str::<Value>(&m.to_string());
            if m != doc {
                changed += 1;
            }
        }
        assert!(changed > 150, "{changed} of 200 changed");
    }

    #[test]
    fn damage_cuts_on_char_boundaries() {
        let text = r#"{"é":"💥","b":1}"#.to_string();
        for at in 0..=text.len() + 3 {
            let _ = damage(text.clone(), &TextDamage::Truncate(at));
            let _ = damage(text.clone(), &TextDamage::Insert(at, "x".into()));
        }
        assert_eq!(
            damage(text.clone(), &TextDamage::DuplicateKey),
            r#"{"é":"💥","é":"💥","b":1}"#
        );
    }
}
