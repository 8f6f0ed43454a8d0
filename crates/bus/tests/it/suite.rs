//! The behaviour every bus must have, written once and run against both implementations (see
//! `all_behaviour_tests!` in `main.rs`). Each test gets a fresh bus, so stream names can repeat.
//! Idle and TTL thresholds use short real durations because Redis keeps real time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bus::{keys, Bus, Config, Entry, Error, Malformed, MemoryBus};
use serde_json::Value;

use crate::support::RedisServer;

/// Short enough to keep the suite fast, long enough that a slow machine does not make an entry
/// idle by accident between two calls.
const MIN_IDLE: Duration = Duration::from_millis(200);

/// Which implementation a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Redis,
}

/// A bus under test plus a way to write entries behind its back, the way a foreign producer could.
pub struct Harness {
    pub bus: Bus,
    raw: Raw,
    // Dropped last: the server must outlive the connections to it.
    _server: Option<RedisServer>,
}

enum Raw {
    Memory(MemoryBus),
    Redis(redis::aio::MultiplexedConnection),
}

impl Backend {
    pub async fn start(self) -> Harness {
        self.start_with(Config::default().max_len).await
    }

    pub async fn start_with(self, max_len: usize) -> Harness {
        match self {
            Backend::Memory => {
                let memory = MemoryBus::new(max_len);
                Harness {
                    bus: Bus::Memory(memory.clone()),
                    raw: Raw::Memory(memory),
                    _server: None,
                }
            }
            Backend::Redis => {
                let server = RedisServer::start();
                let config = Config {
                    url: server.url(),
                    max_len,
                    op_timeout: Duration::from_secs(2),
                };
                let bus = Bus::connect(&config)
                    .await
                    .expect("connect to the test redis");
                let raw = redis::Client::open(server.url())
                    .expect("test redis url")
                    .get_multiplexed_async_connection()
                    .await
                    .expect("raw connection to the test redis");
                Harness {
                    bus,
                    raw: Raw::Redis(raw),
                    _server: Some(server),
                }
            }
        }
    }
}

impl Harness {
    /// Appends an entry with exactly these fields, bypassing [`Bus::publish`].
    pub async fn raw_xadd(&self, stream: &str, fields: &[(&str, &str)]) -> String {
        match &self.raw {
            Raw::Memory(memory) => memory.publish_fields(stream, fields).await.unwrap(),
            Raw::Redis(conn) => {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(stream).arg("*");
                for (name, value) in fields {
                    cmd.arg(name).arg(value);
                }
                cmd.query_async(&mut conn.clone()).await.unwrap()
            }
        }
    }
}

impl Harness {
    /// The whole state map `key` in one atomic read (`HGETALL` on Redis), bypassing
    /// [`Bus::map_all`], which pages and so is not a snapshot.
    pub async fn raw_map_snapshot(&self, key: &str) -> BTreeMap<String, String> {
        match &self.raw {
            Raw::Memory(memory) => memory.map_all(key).await.unwrap(),
            Raw::Redis(conn) => redis::cmd("HGETALL")
                .arg(key)
                .query_async(&mut conn.clone())
                .await
                .unwrap(),
        }
    }
}

fn payloads(entries: &[Entry]) -> Vec<&str> {
    entries
        .iter()
        .map(|entry| entry.payload.as_deref().expect("a well-formed entry"))
        .collect()
}

/// Stream ids compare as (milliseconds, sequence), not as text.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("stream id has a dash");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

async fn read_now(bus: &Bus, stream: &str, group: &str, consumer: &str) -> Vec<Entry> {
    bus.read(stream, group, consumer, 100, Duration::ZERO)
        .await
        .unwrap()
}

pub async fn publish_read_ack(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    assert!(bus.ensure_group("s", "g").await.unwrap());
    let first = bus.publish("s", r#"{"n":1}"#).await.unwrap();
    let second = bus.publish("s", r#"{"n":2}"#).await.unwrap();
    assert!(id_key(&first) < id_key(&second), "{first} then {second}");

    let entries = read_now(bus, "s", "g", "a").await;
    assert_eq!(payloads(&entries), [r#"{"n":1}"#, r#"{"n":2}"#]);
    assert_eq!(entries[0].id, first);
    assert!(entries.iter().all(|entry| entry.deliveries == 1));
    assert!(read_now(bus, "s", "g", "a").await.is_empty(), "nothing new");

    assert!(bus.ack("s", "g", &first).await.unwrap());
    assert!(bus.ack("s", "g", &second).await.unwrap());
    assert!(
        !bus.ack("s", "g", &second).await.unwrap(),
        "second ack is a no-op"
    );
    assert!(bus.pending_for("s", "g", "a").await.unwrap().is_empty());
}

pub async fn new_group_sees_entries_published_before_it(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    bus.publish("s", "early").await.unwrap();
    assert!(bus.ensure_group("s", "g").await.unwrap());
    assert!(
        !bus.ensure_group("s", "g").await.unwrap(),
        "existing group is success"
    );
    bus.publish("s", "late").await.unwrap();
    assert_eq!(
        payloads(&read_now(bus, "s", "g", "a").await),
        ["early", "late"]
    );

    // Recreating the group must not rewind it.
    assert!(!bus.ensure_group("s", "g").await.unwrap());
    assert!(read_now(bus, "s", "g", "a").await.is_empty());
}

pub async fn read_blocks_until_an_entry_arrives(backend: Backend) {
    let h = backend.start().await;
    h.bus.ensure_group("s", "g").await.unwrap();
    let reader = {
        let bus = h.bus.clone();
        tokio::spawn(async move { bus.read("s", "g", "a", 10, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    h.bus.publish("s", "wake").await.unwrap();
    let entries = reader.await.unwrap().unwrap();
    assert_eq!(payloads(&entries), ["wake"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let nothing = h.bus.read("s", "g", "a", 10, MIN_IDLE).await.unwrap();
    assert!(nothing.is_empty());
    assert!(
        started.elapsed() >= MIN_IDLE - Duration::from_millis(20),
        "{:?}",
        started.elapsed()
    );
}

pub async fn blocking_read_does_not_hold_up_other_commands(backend: Backend) {
    let h = backend.start().await;
    h.bus.ensure_group("quiet", "g").await.unwrap();
    let reader = {
        let bus = h.bus.clone();
        tokio::spawn(async move {
            bus.read("quiet", "g", "a", 10, Duration::from_millis(1500))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    h.bus.publish("busy", "x").await.unwrap();
    h.bus.ping().await.unwrap();
    h.bus
        .progress_set("k", "v", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "commands waited behind a blocking read: {:?}",
        started.elapsed()
    );
    assert!(reader.await.unwrap().unwrap().is_empty());
}

pub async fn unacked_entries_come_back_via_pending_for(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    bus.ensure_group("s", "g").await.unwrap();
    bus.publish("s", "done").await.unwrap();
    bus.publish("s", "interrupted").await.unwrap();
    let entries = read_now(bus, "s", "g", "a").await;
    bus.ack("s", "g", &entries[0].id).await.unwrap();

    // "a" restarts under the same name and finds what it had not finished.
    let pending = bus.pending_for("s", "g", "a").await.unwrap();
    assert_eq!(payloads(&pending), ["interrupted"]);
    assert_eq!(pending[0].id, entries[1].id);
    assert_eq!(pending[0].deliveries, 2);
    let again = bus.pending_for("s", "g", "a").await.unwrap();
    assert_eq!(again[0].deliveries, 3);

    assert!(bus.pending_for("s", "g", "other").await.unwrap().is_empty());
    assert!(
        read_now(bus, "s", "g", "a").await.is_empty(),
        "pending is not new"
    );
}

pub async fn pending_for_pages_through_many_entries(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    bus.ensure_group("s", "g").await.unwrap();
    for n in 0..250 {
        bus.publish("s", &n.to_string()).await.unwrap();
    }
    let mut read = 0;
    loop {
        let batch = bus.read("s", "g", "a", 100, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        read += batch.len();
    }
    assert_eq!(read, 250);
    let pending = bus.pending_for("s", "g", "a").await.unwrap();
    assert_eq!(pending.len(), 250);
    assert_eq!(pending[0].payload.as_deref(), Ok("0"));
    assert_eq!(pending[249].payload.as_deref(), Ok("249"));
}

pub async fn stale_entries_move_to_another_consumer_only_after_min_idle(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    bus.ensure_group("s", "g").await.unwrap();
    bus.publish("s", "job").await.unwrap();
    let taken = read_now(bus, "s", "g", "a").await;
    assert_eq!(taken.len(), 1);

    // While "a" holds it and it is fresh, "b" gets it neither as new nor by claiming.
    assert!(read_now(bus, "s", "g", "b").await.is_empty());
    assert!(bus
        .claim_stale("s", "g", "b", MIN_IDLE, 10)
        .await
        .unwrap()
        .is_empty());

    tokio::time::sleep(MIN_IDLE + Duration::from_millis(50)).await;
    let claimed = bus.claim_stale("s", "g", "b", MIN_IDLE, 10).await.unwrap();
    assert_eq!(payloads(&claimed), ["job"]);
    assert_eq!(claimed[0].id, taken[0].id);
    assert_eq!(claimed[0].deliveries, 2);

    // It now belongs to "b", and is fresh again.
    assert!(bus.pending_for("s", "g", "a").await.unwrap().is_empty());
    assert!(bus
        .claim_stale("s", "g", "c", MIN_IDLE, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(bus.pending_for("s", "g", "b").await.unwrap().len(), 1);
    assert!(bus.ack("s", "g", &claimed[0].id).await.unwrap());
}

pub async fn claim_stale_takes_the_oldest_up_to_count(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    bus.ensure_group("s", "g").await.unwrap();
    for n in 0..5 {
        bus.publish("s", &n.to_string()).await.unwrap();
    }
    assert_eq!(read_now(bus, "s", "g", "a").await.len(), 5);
    tokio::time::sleep(MIN_IDLE + Duration::from_millis(50)).await;

    let first = bus.claim_stale("s", "g", "b", MIN_IDLE, 2).await.unwrap();
    assert_eq!(payloads(&first), ["0", "1"]);
    let rest = bus.claim_stale("s", "g", "b", MIN_IDLE, 10).await.unwrap();
    assert_eq!(payloads(&rest), ["2", "3", "4"]);
}

pub async fn streams_stay_bounded(backend: Backend) {
    let max_len = 10;
    let h = backend.start_with(max_len).await;
    let bus = &h.bus;
    let mut last = String::new();
    for n in 0..300 {
        last = bus.publish("s", &n.to_string()).await.unwrap();
    }
    let len = bus.len("s").await.unwrap();
    // Redis trims whole radix-tree nodes (100 entries by default), so MAXLEN ~ allows up to one
    // node more than asked; the memory bus trims exactly.
    assert!(
        (max_len as u64..=max_len as u64 + 100).contains(&len),
        "length {len}"
    );
    let newest = bus.latest("s", 1).await.unwrap();
    assert_eq!(newest[0].id, last);
    assert_eq!(bus.len("missing").await.unwrap(), 0);
}

pub async fn pending_entry_trimmed_away_is_reported_not_fatal(backend: Backend) {
    let h = backend.start_with(10).await;
    let bus = &h.bus;
    bus.ensure_group("s", "g").await.unwrap();
    bus.publish("s", "doomed").await.unwrap();
    let taken = read_now(bus, "s", "g", "a").await;
    for n in 0..300 {
        bus.publish("s", &n.to_string()).await.unwrap();
    }

    let pending = bus.pending_for("s", "g", "a").await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, taken[0].id);
    assert_eq!(pending[0].payload, Err(Malformed::Trimmed));

    // A claim drops it from the pending list instead of handing out an empty entry.
    tokio::time::sleep(MIN_IDLE + Duration::from_millis(50)).await;
    assert!(bus
        .claim_stale("s", "g", "b", MIN_IDLE, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(bus.pending_for("s", "g", "a").await.unwrap().is_empty());
}

pub async fn dead_letter_keeps_the_original_text(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    bus.ensure_group(keys::TRADE_INTENT, "exec").await.unwrap();
    bus.publish(keys::TRADE_INTENT, "not json {").await.unwrap();
    let entry = read_now(bus, keys::TRADE_INTENT, "exec", "a")
        .await
        .remove(0);

    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    let letter_id = bus
        .dead_letter(keys::TRADE_INTENT, &entry, "undecodable intent")
        .await
        .unwrap();
    bus.ack(keys::TRADE_INTENT, "exec", &entry.id)
        .await
        .unwrap();

    let letters = bus.latest(keys::DEAD_LETTER, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, letter_id);
    let doc: Value = serde_json::from_str(letters[0].payload.as_deref().unwrap()).unwrap();
    assert_eq!(doc["stream"], keys::TRADE_INTENT);
    assert_eq!(doc["entry_id"], entry.id.as_str());
    assert_eq!(doc["reason"], "undecodable intent");
    assert_eq!(doc["payload"], "not json {");
    assert_eq!(doc["deliveries"], 1);
    assert_eq!(doc["malformed"], Value::Null);
    let at = humantime::parse_rfc3339(doc["at"].as_str().expect("at is a string")).unwrap();
    assert!(at >= before, "{at:?}");
}

pub async fn latest_is_newest_first(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    for payload in ["a", "b", "c"] {
        bus.publish(keys::TRADE_EXECUTION_RESULT, payload)
            .await
            .unwrap();
    }
    let two = bus.latest(keys::TRADE_EXECUTION_RESULT, 2).await.unwrap();
    assert_eq!(payloads(&two), ["c", "b"]);
    assert!(two.iter().all(|entry| entry.deliveries == 0));
    assert_eq!(
        bus.latest(keys::TRADE_EXECUTION_RESULT, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(bus
        .latest(keys::TRADE_EXECUTION_RESULT, 0)
        .await
        .unwrap()
        .is_empty());
    assert!(bus.latest("missing", 5).await.unwrap().is_empty());
}

pub async fn progress_set_get_nx_and_ttl(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    let key = keys::progress("intent-1");
    let long = Duration::from_secs(60);
    assert_eq!(bus.progress_get(&key).await.unwrap(), None);
    assert!(bus
        .progress_set_if_absent(&key, "claimed", long)
        .await
        .unwrap());
    assert!(!bus
        .progress_set_if_absent(&key, "stolen", long)
        .await
        .unwrap());
    assert_eq!(
        bus.progress_get(&key).await.unwrap().as_deref(),
        Some("claimed")
    );
    bus.progress_set(&key, "order-placed", long).await.unwrap();
    assert_eq!(
        bus.progress_get(&key).await.unwrap().as_deref(),
        Some("order-placed")
    );

    let short = keys::progress("intent-2");
    bus.progress_set(&short, "claimed", MIN_IDLE).await.unwrap();
    assert!(bus.progress_get(&short).await.unwrap().is_some());
    tokio::time::sleep(MIN_IDLE + Duration::from_millis(100)).await;
    assert_eq!(bus.progress_get(&short).await.unwrap(), None);
    assert!(bus
        .progress_set_if_absent(&short, "again", long)
        .await
        .unwrap());
}

pub async fn entry_without_payload_is_malformed_not_fatal(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    bus.ensure_group("s", "g").await.unwrap();
    let bad_id = h.raw_xadd("s", &[("body", r#"{"n":1}"#)]).await;
    bus.publish("s", "fine").await.unwrap();

    let entries = read_now(bus, "s", "g", "a").await;
    assert_eq!(entries.len(), 2, "one bad entry does not fail the read");
    assert_eq!(entries[0].id, bad_id);
    assert_eq!(
        entries[0].payload,
        Err(Malformed::MissingPayload {
            fields: vec![("body".to_owned(), r#"{"n":1}"#.to_owned())]
        })
    );
    assert_eq!(entries[1].payload.as_deref(), Ok("fine"));

    bus.dead_letter("s", &entries[0], "no payload field")
        .await
        .unwrap();
    let letter = bus.latest(keys::DEAD_LETTER, 1).await.unwrap().remove(0);
    let doc: Value = serde_json::from_str(letter.payload.as_deref().unwrap()).unwrap();
    assert_eq!(doc["payload"], Value::Null);
    assert_eq!(doc["malformed"], "missing payload field");
    assert_eq!(doc["fields"]["body"], r#"{"n":1}"#);
}

pub async fn missing_group_is_reported_as_no_group(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    let no_stream = bus.read("s", "g", "a", 10, Duration::ZERO).await;
    assert!(
        matches!(no_stream, Err(Error::NoGroup { .. })),
        "{no_stream:?}"
    );
    bus.publish("s", "x").await.unwrap();
    let no_group = bus.read("s", "g", "a", 10, Duration::from_millis(50)).await;
    assert!(
        matches!(&no_group, Err(Error::NoGroup { stream, group }) if stream == "s" && group == "g"),
        "{no_group:?}"
    );
    let claim = bus.claim_stale("s", "g", "a", MIN_IDLE, 10).await;
    assert!(matches!(claim, Err(Error::NoGroup { .. })), "{claim:?}");
    bus.ensure_group("s", "g").await.unwrap();
    assert_eq!(read_now(bus, "s", "g", "a").await.len(), 1);
}

pub async fn group_info_reports_pending_lag_and_consumers(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    assert!(bus.group_info("s").await.unwrap().is_empty());
    bus.ensure_group("s", "g").await.unwrap();
    for n in 0..3 {
        bus.publish("s", &n.to_string()).await.unwrap();
    }
    let taken = bus.read("s", "g", "a", 2, Duration::ZERO).await.unwrap();
    assert_eq!(taken.len(), 2);

    let info = bus.group_info("s").await.unwrap();
    assert_eq!(info.len(), 1);
    let group = &info[0];
    assert_eq!(group.name, "g");
    assert_eq!(group.pending, 2);
    assert_eq!(group.last_delivered_id, taken[1].id);
    assert_eq!(group.lag, Some(1));
    assert_eq!(group.consumers.len(), 1);
    assert_eq!(group.consumers[0].name, "a");
    assert_eq!(group.consumers[0].pending, 2);
    assert!(group.consumers[0].idle < Duration::from_secs(5));
}

pub async fn ping_answers(backend: Backend) {
    let h = backend.start().await;
    h.bus.ping().await.unwrap();
}

/// `(field, value)` pairs as [`Bus::map_put`] takes them.
fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(field, value)| ((*field).to_owned(), (*value).to_owned()))
        .collect()
}

fn names(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|field| (*field).to_owned()).collect()
}

fn map_of(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs(items).into_iter().collect()
}

pub async fn map_put_overwrite_delete_round_trip(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    let key = keys::MONITOR_LOTS;
    assert!(bus.map_all(key).await.unwrap().is_empty(), "no map yet");

    bus.map_put(
        key,
        &pairs(&[("lot-1", r#"{"qty":"1"}"#), ("lot-2", "two")]),
    )
    .await
    .unwrap();
    // Overwrites one field, adds one, leaves the other alone; a repeated field's last value wins.
    bus.map_put(
        key,
        &pairs(&[
            ("lot-1", "stale"),
            ("lot-1", r#"{"qty":"0.5"}"#),
            ("lot-3", "ünïcode, spaces and \"quotes\""),
            ("lot-4", ""),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(
        bus.map_all(key).await.unwrap(),
        map_of(&[
            ("lot-1", r#"{"qty":"0.5"}"#),
            ("lot-2", "two"),
            ("lot-3", "ünïcode, spaces and \"quotes\""),
            ("lot-4", ""),
        ])
    );

    // Only fields that were there count; a repeated name counts once.
    assert_eq!(
        bus.map_delete(key, &names(&["lot-2", "lot-2", "lot-9"]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        bus.map_all(key).await.unwrap(),
        map_of(&[
            ("lot-1", r#"{"qty":"0.5"}"#),
            ("lot-3", "ünïcode, spaces and \"quotes\""),
            ("lot-4", ""),
        ])
    );
    assert_eq!(
        bus.map_delete("missing", &names(&["lot-1"])).await.unwrap(),
        0
    );

    // Maps under other keys are separate.
    bus.map_put("other", &pairs(&[("lot-1", "elsewhere")]))
        .await
        .unwrap();
    assert_eq!(bus.map_all(key).await.unwrap()["lot-1"], r#"{"qty":"0.5"}"#);

    // Deleting the last fields leaves no map, and a new put starts a fresh one.
    assert_eq!(
        bus.map_delete(key, &names(&["lot-1", "lot-3", "lot-4"]))
            .await
            .unwrap(),
        3
    );
    assert!(bus.map_all(key).await.unwrap().is_empty());
    bus.map_put(key, &pairs(&[("lot-5", "five")]))
        .await
        .unwrap();
    assert_eq!(
        bus.map_all(key).await.unwrap(),
        map_of(&[("lot-5", "five")])
    );
}

pub async fn map_apply_moves_a_record_atomically(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    let key = keys::MONITOR_LOTS;
    bus.map_put(key, &pairs(&[("lot-1", "open"), ("lot-2", "held")]))
        .await
        .unwrap();

    // A lot moves from one field to another, a second is updated, a third appears.
    bus.map_apply(
        key,
        &pairs(&[("lot-1b", "open"), ("lot-2", "trailing"), ("lot-3", "new")]),
        &names(&["lot-1", "never-there"]),
    )
    .await
    .unwrap();
    assert_eq!(
        bus.map_all(key).await.unwrap(),
        map_of(&[("lot-1b", "open"), ("lot-2", "trailing"), ("lot-3", "new")])
    );

    // Only one half given: each works alone.
    bus.map_apply(key, &[], &names(&["lot-3"])).await.unwrap();
    bus.map_apply(key, &pairs(&[("lot-4", "four")]), &[])
        .await
        .unwrap();
    // Deletes go first, so a field named in both keeps the new value.
    bus.map_apply(
        key,
        &pairs(&[("lot-2", "replaced")]),
        &names(&["lot-2", "lot-4"]),
    )
    .await
    .unwrap();
    assert_eq!(
        bus.map_all(key).await.unwrap(),
        map_of(&[("lot-1b", "open"), ("lot-2", "replaced")])
    );

    // Moving a lot back and forth while another connection takes snapshots: every snapshot
    // holds it exactly once, and the lot nobody touches is always there.
    let moves = 300;
    let mover = {
        let bus = h.bus.clone();
        tokio::spawn(async move {
            for n in 0..moves {
                let (from, to) = if n % 2 == 0 {
                    ("lot-1b", "lot-1a")
                } else {
                    ("lot-1a", "lot-1b")
                };
                bus.map_apply(key, &pairs(&[(to, "open")]), &names(&[from]))
                    .await
                    .unwrap();
            }
        })
    };
    loop {
        let done = mover.is_finished();
        let snapshot = h.raw_map_snapshot(key).await;
        let copies = ["lot-1a", "lot-1b"]
            .iter()
            .filter(|field| snapshot.contains_key(**field))
            .count();
        assert_eq!(
            copies, 1,
            "the moving lot is seen {copies} times: {snapshot:?}"
        );
        assert_eq!(snapshot.get("lot-2").map(String::as_str), Some("replaced"));
        if done {
            break;
        }
        tokio::task::yield_now().await;
    }
    mover.await.unwrap();
    assert_eq!(
        bus.map_all(key).await.unwrap(),
        map_of(&[("lot-1b", "open"), ("lot-2", "replaced")])
    );
}

pub async fn map_of_ten_thousand_fields_round_trips(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    let key = keys::MONITOR_LOTS;
    // About the size of a full book: 10 000 lots of some 250 bytes, 2.5 MB in all.
    let lot = |n: usize| {
        (
            format!("lot-{n:05}"),
            format!(r#"{{"id":"lot-{n:05}","pad":"{}"}}"#, "x".repeat(220)),
        )
    };
    let all: Vec<(String, String)> = (0..10_000).map(lot).collect();
    bus.map_put(key, &all).await.unwrap();
    let read = bus.map_all(key).await.unwrap();
    assert_eq!(read.len(), 10_000);
    assert_eq!(read, all.iter().cloned().collect::<BTreeMap<_, _>>());

    // Half of them replaced by new lots in one step.
    let gone: Vec<String> = (0..5_000).map(|n| lot(n).0).collect();
    let new: Vec<(String, String)> = (10_000..15_000).map(lot).collect();
    bus.map_apply(key, &new, &gone).await.unwrap();
    let expected: BTreeMap<String, String> = (5_000..15_000).map(lot).collect();
    assert_eq!(bus.map_all(key).await.unwrap(), expected);

    let everything: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(bus.map_delete(key, &everything).await.unwrap(), 10_000);
    assert!(bus.map_all(key).await.unwrap().is_empty());
}

pub async fn map_empty_inputs_are_no_ops(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    let key = keys::MONITOR_LOTS;
    bus.map_put(key, &[]).await.unwrap();
    assert_eq!(bus.map_delete(key, &[]).await.unwrap(), 0);
    bus.map_apply(key, &[], &[]).await.unwrap();
    assert!(bus.map_all(key).await.unwrap().is_empty());
    assert!(h.raw_map_snapshot(key).await.is_empty());

    let book = map_of(&[("lot-1", "one"), ("lot-2", "two")]);
    bus.map_put(key, &pairs(&[("lot-1", "one"), ("lot-2", "two")]))
        .await
        .unwrap();
    bus.map_put(key, &[]).await.unwrap();
    assert_eq!(bus.map_delete(key, &[]).await.unwrap(), 0);
    bus.map_apply(key, &[], &[]).await.unwrap();
    assert_eq!(bus.map_all(key).await.unwrap(), book);
}

pub async fn publish_and_set_does_both(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    let id = bus
        .publish_and_set(
            "results",
            "{\"intent_id\":\"i-1\"}",
            "quantum:progress:i-1",
            "published|me|filled|1",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let latest = bus.latest("results", 1).await.unwrap();
    assert_eq!(latest[0].id, id);
    assert_eq!(latest[0].payload.as_deref(), Ok("{\"intent_id\":\"i-1\"}"));
    assert_eq!(
        bus.progress_get("quantum:progress:i-1")
            .await
            .unwrap()
            .as_deref(),
        Some("published|me|filled|1")
    );
}

pub async fn a_released_entry_is_claimed_at_once(backend: Backend) {
    let h = backend.start().await;
    let bus = &h.bus;
    bus.ensure_group("intents", "g").await.unwrap();
    bus.publish("intents", "late").await.unwrap();
    let read = bus
        .read("intents", "g", "stopping", 10, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    // Not idle yet: nobody can claim it.
    let early = bus
        .claim_stale("intents", "g", "other", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert!(early.is_empty());
    bus.release("intents", "g", &[read[0].id.clone()])
        .await
        .unwrap();
    let claimed = bus
        .claim_stale("intents", "g", "other", Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "released: claimed at once");
    assert_eq!(claimed[0].payload.as_deref(), Ok("late"));
}

fn budget_window(name: &str, len_ms: i64, limit: u64, cost: u64) -> bus::RateWindow {
    bus::RateWindow {
        name: name.into(),
        len_ms,
        limit,
        cost,
    }
}

/// Two clones (two processes on one Redis) draw from one budget: together they get exactly the
/// limit, a take that would pass it takes nothing and says when the window rolls, and the next
/// window starts empty.
pub async fn rate_budget_is_shared_exact_and_windowed(backend: Backend) {
    let h = backend.start().await;
    let (a, b) = (h.bus.clone(), h.bus.separate().await.unwrap());
    let t0: i64 = 29_000_000 * 60_000;
    let take = |bus: bus::Bus, at: i64| async move {
        bus.rate_take(
            "ip",
            &[
                budget_window("ip:weight:1m", 60_000, 10, 2),
                budget_window("acct:orders:10s", 10_000, 3, 1),
            ],
            at,
            at,
        )
        .await
        .unwrap()
    };
    assert_eq!(take(a.clone(), t0 + 100).await, bus::RateDecision::Granted);
    assert_eq!(take(b.clone(), t0 + 200).await, bus::RateDecision::Granted);
    assert_eq!(take(a.clone(), t0 + 300).await, bus::RateDecision::Granted);
    // Orders: 3 of 3 in this 10 s window. Nothing is taken from either counter.
    assert_eq!(
        take(b.clone(), t0 + 4_000).await,
        bus::RateDecision::Wait(Duration::from_millis(6_000))
    );
    // Next 10 s window: orders free again; weight is 6 of 10 this minute.
    assert_eq!(
        take(b.clone(), t0 + 10_000).await,
        bus::RateDecision::Granted
    );
    assert_eq!(
        take(a.clone(), t0 + 10_001).await,
        bus::RateDecision::Granted
    );
    // Weight 10 of 10: the minute is full.
    assert_eq!(
        take(a.clone(), t0 + 20_000).await,
        bus::RateDecision::Wait(Duration::from_millis(40_000))
    );
    // A cost-free counter never waits, and the next minute starts empty.
    assert_eq!(
        a.rate_take(
            "ip",
            &[budget_window("ip:weight:1m", 60_000, 10, 0)],
            t0 + 20_000,
            t0 + 20_000,
        )
        .await
        .unwrap(),
        bus::RateDecision::Granted
    );
    assert_eq!(take(b, t0 + 60_000).await, bus::RateDecision::Granted);
}

/// A ban set by one process stops the others until it ends; a shorter ban never shortens it.
pub async fn rate_ban_stops_every_taker_until_it_ends(backend: Backend) {
    let h = backend.start().await;
    let (a, b) = (h.bus.clone(), h.bus.separate().await.unwrap());
    let t0: i64 = 29_000_000 * 60_000;
    let w = [budget_window("ip:weight:1m", 60_000, 100, 1)];
    a.rate_ban("ip", t0 + 5_000, t0).await.unwrap();
    a.rate_ban("ip", t0 + 1_000, t0).await.unwrap();
    assert_eq!(
        b.rate_take("ip", &w, t0 + 2_000, t0 + 2_000).await.unwrap(),
        bus::RateDecision::Banned(Duration::from_millis(3_000))
    );
    // The ban goes by the clock it was set on, whatever a taker believes the exchange's clock
    // says (regression: a process whose estimate was seconds ahead saw the ban as over).
    assert_eq!(
        b.rate_take("ip", &w, t0 + 9_000, t0 + 2_000).await.unwrap(),
        bus::RateDecision::Banned(Duration::from_millis(3_000))
    );
    assert_eq!(
        b.rate_take("other-ip", &w, t0 + 2_000, t0 + 2_000)
            .await
            .unwrap(),
        bus::RateDecision::Granted
    );
    assert_eq!(
        b.rate_take("ip", &w, t0 + 5_000, t0 + 5_000).await.unwrap(),
        bus::RateDecision::Granted
    );
}
