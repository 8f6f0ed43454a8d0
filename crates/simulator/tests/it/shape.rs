//! Structural comparison of a simulator reply with a JSON example from Binance's documentation.
//!
//! The fixtures in `testdata/binance/` are copied verbatim from the docs (see `SOURCES.md` there).
//! Their values are only examples, so nothing here compares values: what must agree is the shape a
//! client decodes — the same keys, the same JSON types, integers where the docs have integers, and
//! decimal strings where the docs have decimal strings. Every mismatch is collected before the
//! comparison panics, so one run shows everything that is wrong with a reply.

use std::path::PathBuf;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;

/// Differences a test accepts on purpose. Paths are JSON paths as printed in mismatch messages,
/// with `[*]` standing for any array index (`$.positions[*].adl`).
///
/// Every use should carry a comment saying why the documented example and the simulator may
/// legitimately differ there; anything else is more likely a simulator bug.
#[derive(Debug, Default, Clone)]
pub struct Allow {
    missing: Vec<String>,
    extra: Vec<String>,
}

impl Allow {
    /// No allowances: the reply must have exactly the fixture's shape.
    pub fn none() -> Allow {
        Allow::default()
    }

    /// Keys of the fixture that the simulator's reply may leave out.
    pub fn missing(mut self, paths: &[&str]) -> Allow {
        self.missing.extend(paths.iter().map(|p| generic(p)));
        self
    }

    /// Keys (or, for filter arrays, elements) the simulator's reply may have beyond the fixture's.
    pub fn extra(mut self, paths: &[&str]) -> Allow {
        self.extra.extend(paths.iter().map(|p| generic(p)));
        self
    }

    fn allows_missing(&self, path: &str) -> bool {
        self.missing.contains(&generic(path))
    }

    fn allows_extra(&self, path: &str) -> bool {
        self.extra.contains(&generic(path))
    }
}

/// Replaces every array index in a path with `[*]`, so concrete paths match allowance patterns.
fn generic(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        match rest[open..].find(']') {
            Some(close) => {
                out.push_str("[*]");
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/binance")
        .join(name)
}

/// Reads and parses `testdata/binance/<name>`.
pub fn load_fixture(name: &str) -> Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fixture {} is not valid JSON: {e}", path.display()))
}

/// Panics, listing every mismatch with its JSON path, unless `actual` has the shape of the fixture
/// `testdata/binance/<fixture_name>` (up to the differences in `allow`).
pub fn assert_matches_fixture(actual: &Value, fixture_name: &str, allow: &Allow) {
    let fixture = load_fixture(fixture_name);
    assert_matches(actual, &fixture, fixture_name, allow);
}

/// Like [`assert_matches_fixture`], with the fixture given as a value; `label` names it in the
/// panic message.
pub fn assert_matches(actual: &Value, fixture: &Value, label: &str, allow: &Allow) {
    let mismatches = mismatches(actual, fixture, allow);
    if !mismatches.is_empty() {
        let mut reply = serde_json::to_string_pretty(actual).unwrap_or_default();
        // A whole exchangeInfo reply would drown the list of mismatches.
        if reply.len() > 6000 {
            let mut cut = 6000;
            while !reply.is_char_boundary(cut) {
                cut -= 1;
            }
            reply.truncate(cut);
            reply.push_str("\n...(truncated)");
        }
        panic!(
            "simulator reply does not match fixture {label} ({} mismatch{}):\n  {}\nsimulator sent:\n{reply}",
            mismatches.len(),
            if mismatches.len() == 1 { "" } else { "es" },
            mismatches.join("\n  "),
        );
    }
}

/// Every difference in shape between `actual` and `fixture`, one line each, `path: what`.
pub fn mismatches(actual: &Value, fixture: &Value, allow: &Allow) -> Vec<String> {
    let mut out = Vec::new();
    compare(actual, fixture, "$", allow, &mut out);
    out
}

/// The kind of a JSON value, as far as the comparison cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Integer,
    Number,
    EmptyString,
    DecimalString,
    String,
    Array,
    Object,
}

impl Kind {
    fn of(value: &Value) -> Kind {
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(n) if n.is_i64() || n.is_u64() => Kind::Integer,
            Value::Number(_) => Kind::Number,
            Value::String(s) if s.is_empty() => Kind::EmptyString,
            Value::String(s) if is_decimal(s) => Kind::DecimalString,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Integer => "integer",
            Kind::Number => "non-integer number",
            Kind::EmptyString => "empty string",
            Kind::DecimalString => "decimal string",
            Kind::String => "non-decimal string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }
}

/// A plain decimal as Binance prints it: optional minus, digits, optional fraction. Checking the
/// characters first keeps out what `Decimal::from_str` would also accept, such as `1_000`.
fn is_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && Decimal::from_str(text).is_ok()
}

/// Whether a value of kind `actual` may stand where the fixture has kind `fixture`.
fn accepts(fixture: Kind, actual: Kind) -> bool {
    match fixture {
        // The docs print null for optional values, so any type may appear there.
        Kind::Null => true,
        // An unset decimal (algo orders' activatePrice) is "", a set one a decimal string.
        Kind::EmptyString => matches!(actual, Kind::EmptyString | Kind::DecimalString),
        // A non-decimal string in the docs is an enum, id or name: any string will do, including
        // one that happens to look numeric (a client order id "10002").
        Kind::String => matches!(
            actual,
            Kind::String | Kind::DecimalString | Kind::EmptyString
        ),
        Kind::Number => matches!(actual, Kind::Number | Kind::Integer),
        other => other == actual,
    }
}

fn compare(actual: &Value, fixture: &Value, path: &str, allow: &Allow, out: &mut Vec<String>) {
    let (fixture_kind, actual_kind) = (Kind::of(fixture), Kind::of(actual));
    if !accepts(fixture_kind, actual_kind) {
        out.push(format!(
            "{path}: fixture has {}, simulator sent {} {}",
            fixture_kind.describe(),
            actual_kind.describe(),
            short(actual),
        ));
        return;
    }
    match (fixture, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, want_value) in want {
                let child = format!("{path}.{key}");
                match got.get(key) {
                    Some(got_value) => compare(got_value, want_value, &child, allow, out),
                    None if allow.allows_missing(&child) => {}
                    None => out.push(format!(
                        "{child}: key missing from simulator reply (fixture has {})",
                        Kind::of(want_value).describe()
                    )),
                }
            }
            for (key, got_value) in got {
                let child = format!("{path}.{key}");
                if !want.contains_key(key) && !allow.allows_extra(&child) {
                    out.push(format!(
                        "{child}: key not in fixture (simulator sent {} {})",
                        Kind::of(got_value).describe(),
                        short(got_value),
                    ));
                }
            }
        }
        (Value::Array(want), Value::Array(got)) => compare_arrays(got, want, path, allow, out),
        _ => {}
    }
}

fn compare_arrays(got: &[Value], want: &[Value], path: &str, allow: &Allow, out: &mut Vec<String>) {
    if want.is_empty() {
        // The docs show no element, so there is nothing to compare elements with.
        return;
    }
    if got.is_empty() {
        out.push(format!(
            "{path}: fixture array has elements, simulator sent an empty array (the test must arrange state so the list is non-empty)"
        ));
        return;
    }
    if want.iter().all(|w| w.get("filterType").is_some()) {
        compare_filters(got, want, path, allow, out);
        return;
    }
    for (i, got_item) in got.iter().enumerate() {
        let child = format!("{path}[{i}]");
        // Element [0] is the template. When the docs show several elements (hedge-mode positions,
        // exchangeInfo assets with `"autoAssetExchange": null`), an element that matches any of
        // them is accepted, so a fixture always matches itself; the reported mismatches are those
        // against element [0].
        let first = mismatches_at(got_item, &want[0], &child, allow);
        let matches_another = !first.is_empty()
            && want[1..]
                .iter()
                .any(|w| mismatches_at(got_item, w, &child, allow).is_empty());
        if !matches_another {
            out.extend(first);
        }
    }
}

fn mismatches_at(actual: &Value, fixture: &Value, path: &str, allow: &Allow) -> Vec<String> {
    let mut out = Vec::new();
    compare(actual, fixture, path, allow, &mut out);
    out
}

/// Exchange filters differ per element by `filterType`: each reply filter is compared with the
/// fixture filter of the same type, and every documented type must be present.
fn compare_filters(
    got: &[Value],
    want: &[Value],
    path: &str,
    allow: &Allow,
    out: &mut Vec<String>,
) {
    let filter_type = |v: &Value| {
        v.get("filterType")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    for (i, got_item) in got.iter().enumerate() {
        let child = format!("{path}[{i}]");
        let Some(kind) = filter_type(got_item) else {
            out.push(format!(
                "{child}: filter without a string filterType: {}",
                short(got_item)
            ));
            continue;
        };
        match want
            .iter()
            .find(|w| filter_type(w).as_deref() == Some(kind.as_str()))
        {
            Some(want_item) => compare(got_item, want_item, &child, allow, out),
            None if allow.allows_extra(&child) => {}
            None => out.push(format!(
                "{child}: filterType {kind:?} is not in the fixture"
            )),
        }
    }
    for want_item in want {
        let kind = filter_type(want_item);
        if !got.iter().any(|g| filter_type(g) == kind) {
            out.push(format!(
                "{path}: fixture has filterType {:?}, simulator sent none",
                kind.unwrap_or_default()
            ));
        }
    }
}

/// A value as it appears in a message: scalars in full, containers summarised.
fn short(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("([{} elements])", items.len()),
        Value::Object(map) => format!("({{{} keys}})", map.len()),
        scalar => format!("({scalar})"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Runs the comparison and returns its panic message, or `None` when it passed.
    fn failure(actual: &Value, fixture: &Value, allow: &Allow) -> Option<String> {
        let result = std::panic::catch_unwind(|| assert_matches(actual, fixture, "inline", allow));
        result.err().map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default()
        })
    }

    fn all_fixture_names() -> Vec<String> {
        let dir = fixture_path("");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn every_fixture_matches_itself() {
        let names = all_fixture_names();
        assert!(names.len() > 60, "fixtures not found: {names:?}");
        for name in names {
            let fixture = load_fixture(&name);
            let result = std::panic::catch_unwind(|| {
                assert_matches_fixture(&fixture, &name, &Allow::none())
            });
            assert!(result.is_ok(), "{name} does not match itself");
        }
    }

    #[test]
    fn a_changed_type_fails_with_its_path() {
        let fixture = load_fixture("rest__exchange_info.json");
        let mut actual = fixture.clone();
        actual["symbols"][0]["pricePrecision"] = json!("5");
        let message = failure(&actual, &fixture, &Allow::none()).expect("must fail");
        assert!(
            message.contains(
                "$.symbols[0].pricePrecision: fixture has integer, simulator sent decimal string"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_number_instead_of_a_decimal_string_fails() {
        let fixture = load_fixture("rest__exchange_info.json");
        let mut actual = fixture.clone();
        actual["symbols"][0]["filters"][1]["stepSize"] = json!(1);
        let message = failure(&actual, &fixture, &Allow::none()).expect("must fail");
        assert!(
            message.contains("$.symbols[0].filters[1].stepSize: fixture has decimal string, simulator sent integer"),
            "{message}"
        );
    }

    #[test]
    fn a_non_decimal_string_where_the_fixture_has_a_decimal_fails() {
        let fixture = json!({"price": "6000.01"});
        for bad in [
            json!({"price": "abc"}),
            json!({"price": "1e3"}),
            json!({"price": ""}),
        ] {
            assert!(
                failure(&bad, &fixture, &Allow::none()).is_some(),
                "{bad} passed"
            );
        }
        for good in ["0", "-0.91539999", "5.0", "0.00000"] {
            assert_eq!(
                failure(&json!({"price": good}), &fixture, &Allow::none()),
                None
            );
        }
    }

    #[test]
    fn a_missing_key_fails_unless_allowed() {
        let fixture = load_fixture("rest__position_risk_v3_oneway.json");
        let mut actual = fixture.clone();
        actual[0].as_object_mut().unwrap().remove("adl");
        let message = failure(&actual, &fixture, &Allow::none()).expect("must fail");
        assert!(
            message.contains("$[0].adl: key missing from simulator reply"),
            "{message}"
        );
        let allow = Allow::none().missing(&["$[*].adl"]);
        assert_eq!(failure(&actual, &fixture, &allow), None);
    }

    #[test]
    fn an_extra_key_fails_unless_allowed() {
        let fixture = load_fixture("rest__time.json");
        let actual = json!({"serverTime": 1, "timezone": "UTC"});
        let message = failure(&actual, &fixture, &Allow::none()).expect("must fail");
        assert!(
            message.contains("$.timezone: key not in fixture"),
            "{message}"
        );
        let allow = Allow::none().extra(&["$.timezone"]);
        assert_eq!(failure(&actual, &fixture, &allow), None);
    }

    #[test]
    fn every_mismatch_is_listed_not_just_the_first() {
        let fixture = load_fixture("rest__ticker_price_v2.json");
        let actual = json!({"symbol": "BTCUSDT", "price": 6000.01, "time": "1589437530011"});
        let message = failure(&actual, &fixture, &Allow::none()).expect("must fail");
        assert!(message.contains("2 mismatches"), "{message}");
        assert!(message.contains("$.price:"), "{message}");
        assert!(message.contains("$.time:"), "{message}");
    }

    #[test]
    fn an_integer_is_required_where_the_fixture_has_one() {
        let fixture = json!({"orderId": 22542179});
        assert!(failure(&json!({"orderId": 1.5}), &fixture, &Allow::none()).is_some());
        assert_eq!(
            failure(&json!({"orderId": 7}), &fixture, &Allow::none()),
            None
        );
    }

    #[test]
    fn a_fixture_null_accepts_any_type() {
        let fixture = json!({"icebergQuantity": null});
        for value in [json!(null), json!("0.5"), json!(3), json!({"a": 1})] {
            assert_eq!(
                failure(&json!({"icebergQuantity": value}), &fixture, &Allow::none()),
                None
            );
        }
    }

    #[test]
    fn an_empty_fixture_string_accepts_empty_or_decimal() {
        let fixture = json!({"activatePrice": ""});
        assert_eq!(
            failure(&json!({"activatePrice": ""}), &fixture, &Allow::none()),
            None
        );
        assert_eq!(
            failure(
                &json!({"activatePrice": "9020.5"}),
                &fixture,
                &Allow::none()
            ),
            None
        );
        assert!(failure(&json!({"activatePrice": "NONE"}), &fixture, &Allow::none()).is_some());
    }

    #[test]
    fn an_empty_array_fails_where_the_fixture_has_elements() {
        let fixture = load_fixture("rest__open_orders.json");
        let message = failure(&json!([]), &fixture, &Allow::none()).expect("must fail");
        assert!(
            message.contains("$: fixture array has elements"),
            "{message}"
        );
    }

    #[test]
    fn every_array_element_is_compared() {
        let fixture = load_fixture("rest__depth.json");
        let mut actual = fixture.clone();
        actual["bids"] = json!([["4.00", "1"], ["3.99", 2]]);
        let message = failure(&actual, &fixture, &Allow::none()).expect("must fail");
        assert!(
            message.contains("$.bids[1][1]: fixture has decimal string, simulator sent integer"),
            "{message}"
        );
    }

    #[test]
    fn filters_are_matched_by_filter_type() {
        let fixture = load_fixture("rest__exchange_info.json");
        let mut actual = fixture.clone();
        // Reordering the filters is fine: each is compared with the fixture filter of its type.
        actual["symbols"][0]["filters"]
            .as_array_mut()
            .unwrap()
            .reverse();
        assert_eq!(failure(&actual, &fixture, &Allow::none()), None);

        let filters = actual["symbols"][0]["filters"].as_array_mut().unwrap();
        filters.retain(|f| f["filterType"] != "MIN_NOTIONAL");
        filters.push(json!({"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10}));
        let message = failure(&actual, &fixture, &Allow::none()).expect("must fail");
        assert!(
            message.contains("fixture has filterType \"MIN_NOTIONAL\", simulator sent none"),
            "{message}"
        );
        assert!(
            message.contains("filterType \"MAX_NUM_ALGO_ORDERS\" is not in the fixture"),
            "{message}"
        );
    }

    #[test]
    fn allowance_paths_match_any_index() {
        assert_eq!(
            generic("$.symbols[12].filters[3].x"),
            "$.symbols[*].filters[*].x"
        );
        assert_eq!(generic("$[0]"), "$[*]");
        assert_eq!(generic("$.a"), "$.a");
    }
}
