//! What a read returns: stream entries with their text payload or the reason they have none,
//! consumer-group statistics, and the JSON document a dead letter carries. Both bus
//! implementations build these same values, so callers cannot tell them apart.

use std::time::{Duration, SystemTime};

use serde_json::json;

/// One stream entry as handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream id, `<milliseconds>-<sequence>`; pass it to [`crate::Bus::ack`].
    pub id: String,
    /// The text of the `payload` field, or why there is none. Decoding the JSON is the caller's
    /// business; an entry that fails here or there goes to [`crate::Bus::dead_letter`] and is then
    /// acknowledged, so it does not come back forever.
    pub payload: Result<String, Malformed>,
    /// How many times the group has delivered this entry, this delivery included: 1 for a fresh
    /// read, more for a re-read of pending entries or a claim. It comes from the pending entries
    /// list (`XPENDING`) after the read, so it is best effort: if the entry is acknowledged in
    /// between, it reads as 1. Reads outside a group ([`crate::Bus::latest`]) report 0.
    pub deliveries: u64,
}

impl Entry {
    /// When the entry was published (ms since the epoch), read from its id; `None` for an id not
    /// of the `<ms>-<seq>` form.
    pub fn published_ms(&self) -> Option<i64> {
        self.id.split('-').next()?.parse().ok()
    }
}

/// Why an entry carries no usable payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// The entry has no `payload` field. Its fields are kept (lossily decoded as UTF-8) so the dead
    /// letter loses nothing.
    MissingPayload { fields: Vec<(String, String)> },
    /// The `payload` field is not UTF-8; this is its lossy decoding.
    NotUtf8 { lossy: String },
    /// The entry was trimmed from the stream (MAXLEN) while it was still pending, so only its id
    /// is left. Acknowledge it; its content is gone.
    Trimmed,
}

impl Malformed {
    /// A short description, used as the dead letter's `malformed` field.
    pub fn describe(&self) -> &'static str {
        match self {
            Malformed::MissingPayload { .. } => "missing payload field",
            Malformed::NotUtf8 { .. } => "payload is not utf-8",
            Malformed::Trimmed => "entry trimmed from the stream while pending",
        }
    }
}

/// One consumer group of a stream, for `quantum doctor`. Best effort: Redis reports `lag` only
/// when it can compute it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    /// Entries delivered to some consumer and not yet acknowledged.
    pub pending: u64,
    /// The id of the newest entry delivered to the group.
    pub last_delivered_id: String,
    /// Entries in the stream not yet delivered to the group, when known.
    pub lag: Option<u64>,
    pub consumers: Vec<ConsumerInfo>,
}

/// One consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub name: String,
    /// Entries this consumer holds unacknowledged.
    pub pending: u64,
    /// Time since the consumer last read or claimed.
    pub idle: Duration,
}

/// An entry's fields as stored: names and values are bytes, in stream order.
pub(crate) type RawFields = Vec<(Vec<u8>, Vec<u8>)>;

/// The payload of an entry from its raw fields, shared by both implementations so they classify
/// malformed entries alike. `None` means the entry's content is gone (trimmed while pending).
pub(crate) fn payload_from_fields(fields: Option<RawFields>) -> Result<String, Malformed> {
    let Some(fields) = fields else {
        return Err(Malformed::Trimmed);
    };
    match fields
        .iter()
        .find(|(name, _)| name.as_slice() == crate::keys::PAYLOAD_FIELD.as_bytes())
    {
        Some((_, value)) => String::from_utf8(value.clone()).map_err(|err| Malformed::NotUtf8 {
            lossy: String::from_utf8_lossy(err.as_bytes()).into_owned(),
        }),
        None => Err(Malformed::MissingPayload {
            fields: fields
                .iter()
                .map(|(name, value)| {
                    (
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    )
                })
                .collect(),
        }),
    }
}

/// The JSON text published on the dead-letter stream for `entry`, taken from `stream`:
/// `{"stream", "entry_id", "reason", "payload", "deliveries", "malformed", "fields", "at"}`.
/// `payload` is the original text (even when it is not JSON), or null when the entry had none;
/// `malformed` says why not; `fields` keeps the raw fields of an entry without `payload`; `at` is
/// RFC 3339 UTC with milliseconds.
pub(crate) fn dead_letter_document(
    stream: &str,
    entry: &Entry,
    reason: &str,
    at: SystemTime,
) -> String {
    let (payload, malformed, fields) = match &entry.payload {
        Ok(text) => (Some(text.as_str()), None, None),
        Err(bad @ Malformed::NotUtf8 { lossy }) => {
            (Some(lossy.as_str()), Some(bad.describe()), None)
        }
        Err(bad @ Malformed::MissingPayload { fields }) => {
            let fields: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(name, value)| (name.clone(), json!(value)))
                .collect();
            (None, Some(bad.describe()), Some(fields))
        }
        Err(bad @ Malformed::Trimmed) => (None, Some(bad.describe()), None),
    };
    json!({
        "stream": stream,
        "entry_id": entry.id,
        "reason": reason,
        "payload": payload,
        "deliveries": entry.deliveries,
        "malformed": malformed,
        "fields": fields,
        "at": humantime::format_rfc3339_millis(at).to_string(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::{json, Value};

    use super::{dead_letter_document, Entry, Malformed};

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
    }

    #[test]
    fn keeps_non_json_payload_text_verbatim() {
        let entry = Entry {
            id: "1-0".to_owned(),
            payload: Ok("not {json".to_owned()),
            deliveries: 3,
        };
        let doc: Value =
            serde_json::from_str(&dead_letter_document("s", &entry, "bad json", at())).unwrap();
        assert_eq!(
            doc,
            json!({
                "stream": "s", "entry_id": "1-0", "reason": "bad json", "payload": "not {json",
                "deliveries": 3, "malformed": null, "fields": null,
                "at": "2023-11-14T22:13:20.123Z",
            })
        );
    }

    #[test]
    fn keeps_the_fields_of_an_entry_without_payload() {
        let entry = Entry {
            id: "2-5".to_owned(),
            payload: Err(Malformed::MissingPayload {
                fields: vec![("body".to_owned(), "{}".to_owned())],
            }),
            deliveries: 1,
        };
        let doc: Value =
            serde_json::from_str(&dead_letter_document("s", &entry, "no payload", at())).unwrap();
        assert_eq!(doc["payload"], Value::Null);
        assert_eq!(doc["malformed"], "missing payload field");
        assert_eq!(doc["fields"], json!({"body": "{}"}));
    }
}
