//! quantum's event bus: the streams the services talk through (trade intents in, execution
//! results out, dead letters aside), consumer groups with acknowledgement and reclaiming of stale
//! entries, a small expiring key-value store for per-intent progress, and state maps (Redis
//! hashes) that a service saves field by field. It is the only crate that knows Redis commands
//! and key names.
//!
//! [`Bus`] is the one type callers hold. It is either a [`RedisBus`] (production) or a
//! [`MemoryBus`] (the embedded default and unit tests); both behave the same, and one test suite
//! (`tests/it`) runs against each. An enum rather than a trait object keeps the async methods
//! plain `async fn`s with no boxing.
//!
//! Delivery is at least once. A consumer loop goes like this:
//!
//! 1. [`Bus::ensure_group`] on start (again after [`Error::NoGroup`]).
//! 2. [`Bus::pending_for`] with its own stable consumer name: entries it read before a crash and
//!    never acknowledged.
//! 3. [`Bus::claim_stale`] now and then: entries another consumer left pending for too long.
//! 4. [`Bus::read`] in a loop for new entries.
//! 5. For each entry: do the work, then [`Bus::ack`]. An entry that cannot be understood goes to
//!    [`Bus::dead_letter`] and is then acknowledged.
//!
//! Because an entry can come back after a crash (steps 2 and 3), work with outside effects must
//! be idempotent. The progress store makes it so: claim an intent with
//! [`Bus::progress_set_if_absent`] under [`keys::progress`], record each step with
//! [`Bus::progress_set`], and on redelivery read [`Bus::progress_get`] to resume instead of
//! placing a second order.
//!
//! A service whose state is a collection of records (the exit monitor's lots) keeps it in a
//! state map, one field per record: [`Bus::map_apply`] writes only what changed, in one atomic
//! step, and [`Bus::map_all`] reads it all back on start.
//!
//! Layout: [`keys`] (names), [`Config`], [`Error`], `entry` (what reads return, dead-letter
//! document), `redis_bus` and `memory` (the two implementations).

mod config;
mod entry;
mod error;
pub mod keys;
mod memory;
mod rate;
mod redis_bus;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

pub use config::Config;
pub use entry::{ConsumerInfo, Entry, GroupInfo, Malformed};
pub use error::{Error, Result};
pub use memory::MemoryBus;
pub use rate::{RateDecision, RateWindow};
pub use redis_bus::RedisBus;

/// The bus a service uses. Cheap to clone; clones share connections (or, in memory, streams).
#[derive(Debug, Clone)]
pub enum Bus {
    Redis(RedisBus),
    Memory(MemoryBus),
}

/// Calls the same method on whichever implementation `self` holds.
macro_rules! dispatch {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Bus::Redis(bus) => bus.$method($($arg),*).await,
            Bus::Memory(bus) => bus.$method($($arg),*).await,
        }
    };
}

impl Bus {
    /// Connects to Redis; see [`RedisBus::connect`].
    pub async fn connect(config: &Config) -> Result<Bus> {
        RedisBus::connect(config).await.map(Bus::Redis)
    }

    /// A fresh in-process bus whose streams keep at most `max_len` entries.
    pub fn memory(max_len: usize) -> Bus {
        Bus::Memory(MemoryBus::new(max_len))
    }

    /// The same bus with a command connection of its own, so that large writes on one (a
    /// state batch) never queue ahead of small urgent ones on the other (a close intent). Redis
    /// answers a connection's commands in order; a second connection is the way around that.
    /// In memory there is no connection: a clone.
    pub async fn separate(&self) -> Result<Bus> {
        match self {
            Bus::Redis(bus) => bus.separate().await.map(Bus::Redis),
            Bus::Memory(bus) => Ok(Bus::Memory(bus.clone())),
        }
    }

    /// The same bus under a namespace of its own: on Redis every key and stream name gets
    /// `<namespace>:` in front (`demo-1:quantum:stream:trade.intent`), so services on this bus
    /// and services on the plain one share a server and nothing else: not an intent, a consumer
    /// group, a progress record or a rate budget. `quantum demo --redis-url` runs on one. An
    /// in-process bus is private to its process already and comes back unchanged.
    pub fn namespaced(&self, namespace: &str) -> Bus {
        match self {
            Bus::Redis(bus) => Bus::Redis(bus.namespaced(namespace)),
            Bus::Memory(bus) => Bus::Memory(bus.clone()),
        }
    }

    /// `"redis"` or `"memory"`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Bus::Redis(_) => "redis",
            Bus::Memory(_) => "memory",
        }
    }

    /// Appends `payload` (a JSON document, by convention) to `stream` as the entry's `payload`
    /// field, trimming the stream to about [`Config::max_len`] entries. Returns the new entry's id.
    ///
    /// On [`Error::Unavailable`] the entry may or may not have been appended; a retry can publish
    /// it twice, so consumers must tolerate duplicates (intents carry their own id).
    pub async fn publish(&self, stream: &str, payload: &str) -> Result<String> {
        dispatch!(self.publish(stream, payload))
    }

    /// Publishes `payload` on `stream` and sets the progress record `key` to `value`, atomically:
    /// both happen or neither does, so a record that says "published" always has its entry, and
    /// an entry always has its record (a crash or a Redis restart between two separate calls
    /// could leave an entry whose record was never written, and a redelivery would publish twice).
    pub async fn publish_and_set(
        &self,
        stream: &str,
        payload: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<String> {
        dispatch!(self.publish_and_set(stream, payload, key, value, ttl))
    }

    /// Hands pending entries back without acknowledging them: they stay pending, but look idle
    /// for a week, so any consumer's [`Bus::claim_stale`] takes them at once. For a consumer that
    /// is stopping and received entries it will not work on.
    pub async fn release(&self, stream: &str, group: &str, ids: &[String]) -> Result<()> {
        dispatch!(self.release(stream, group, ids))
    }

    /// Creates consumer group `group` on `stream` (and the stream, if missing). Returns true when
    /// it created the group, false when it already existed; an existing group is left untouched.
    ///
    /// A new group starts at the beginning of the stream (`0`), not at its end (`$`): intents a
    /// strategy published before the execution service first started must still be executed,
    /// and the exit monitor must see every result. The stream is bounded by MAXLEN, so "the
    /// beginning" is at most that many entries old; refusing intents that are too old to act on
    /// is the engine's job (an intent carries its own deadline), and it has to do that anyway for
    /// entries redelivered after a long outage.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> Result<bool> {
        dispatch!(self.ensure_group(stream, group))
    }

    /// Up to `count` (at least 1) entries of `stream` never delivered to `group`, now pending for
    /// `consumer` until acknowledged. Waits up to `block` for the first one to arrive; a zero
    /// `block` returns at once. Each entry has `deliveries == 1`.
    ///
    /// Fails with [`Error::NoGroup`] when the group does not exist.
    pub async fn read(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>> {
        dispatch!(self.read(stream, group, consumer, count, block))
    }

    /// Every entry pending for `consumer` (delivered to it, not acknowledged), oldest first: what
    /// a consumer with a stable name finds after a restart. Re-reading counts as a delivery.
    /// Entries trimmed from the stream meanwhile come back with [`Malformed::Trimmed`]; ack them.
    pub async fn pending_for(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Vec<Entry>> {
        dispatch!(self.pending_for(stream, group, consumer))
    }

    /// Takes over up to `count` entries of `group` that have been pending (for any consumer) for
    /// at least `min_idle`, oldest first, and returns them as pending for `consumer`. Entries
    /// younger than `min_idle` stay with the consumer that has them. Pending entries that were
    /// trimmed from the stream are dropped from the pending list and not returned.
    pub async fn claim_stale(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>> {
        dispatch!(self.claim_stale(stream, group, consumer, min_idle, count))
    }

    /// Acknowledges entry `id`: the work is done and it must not be delivered again. Returns
    /// whether it was pending; acknowledging twice is harmless and returns false.
    pub async fn ack(&self, stream: &str, group: &str, id: &str) -> Result<bool> {
        dispatch!(self.ack(stream, group, id))
    }

    /// Publishes a JSON document about `entry` of `original_stream` on [`keys::DEAD_LETTER`]:
    /// `{"stream", "entry_id", "reason", "payload", "deliveries", "malformed", "fields", "at"}`,
    /// where `payload` is the original text even when it is not JSON (null when the entry had
    /// none) and `at` is RFC 3339 UTC. Returns the dead letter's id.
    ///
    /// It does not acknowledge `entry`; the caller does that next. A crash in between makes the
    /// entry come back and be dead-lettered twice, which is harmless.
    pub async fn dead_letter(
        &self,
        original_stream: &str,
        entry: &Entry,
        reason: &str,
    ) -> Result<String> {
        let document =
            entry::dead_letter_document(original_stream, entry, reason, SystemTime::now());
        self.publish(keys::DEAD_LETTER, &document).await
    }

    /// The newest `count` entries of `stream`, newest first, read outside any group (no pending
    /// state changes; `deliveries` is 0). For `quantum results`.
    pub async fn latest(&self, stream: &str, count: usize) -> Result<Vec<Entry>> {
        dispatch!(self.latest(stream, count))
    }

    /// The number of entries in `stream` (0 when it does not exist).
    pub async fn len(&self, stream: &str) -> Result<u64> {
        dispatch!(self.len(stream))
    }

    /// The consumer groups of `stream` with their pending counts, lag and consumers (empty when
    /// the stream does not exist). Best effort, for `quantum doctor`.
    pub async fn group_info(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        dispatch!(self.group_info(stream))
    }

    /// The progress record under `key`, if present and not expired.
    pub async fn progress_get(&self, key: &str) -> Result<Option<String>> {
        dispatch!(self.progress_get(key))
    }

    /// Stores `value` under `key`, replacing any previous value, expiring after `ttl` (a zero
    /// `ttl` counts as 1 ms).
    pub async fn progress_set(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        dispatch!(self.progress_set(key, value, ttl))
    }

    /// Stores `value` under `key` only if nothing live is there; returns whether it stored. Use
    /// it to claim an intent so that exactly one consumer acts on it.
    pub async fn progress_set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool> {
        dispatch!(self.progress_set_if_absent(key, value, ttl))
    }

    /// Sets fields of the state map `key` (creating it if needed), replacing the values of
    /// fields already there; other fields are left alone. One round trip (`HSET`). When a field
    /// appears more than once in `entries`, the last value wins. An empty `entries` is a no-op:
    /// no map is created, and Redis is not asked (it refuses an `HSET` without fields).
    ///
    /// On [`Error::Unavailable`] the fields may or may not have been written; writing the same
    /// values again is harmless.
    pub async fn map_put(&self, key: &str, entries: &[(String, String)]) -> Result<()> {
        dispatch!(self.map_put(key, entries))
    }

    /// Removes `fields` from the state map `key`; returns how many were there. Missing fields
    /// (or a missing map) are not an error. A map left without fields no longer exists, which
    /// reads the same as an empty one. An empty `fields` is a no-op returning 0.
    pub async fn map_delete(&self, key: &str, fields: &[String]) -> Result<u64> {
        dispatch!(self.map_delete(key, fields))
    }

    /// Every field of the state map `key` with its value (empty when the map does not exist).
    ///
    /// On Redis the map is read in pages (see `RedisBus::map_all`), so this is not a snapshot:
    /// a field written or removed while the read is under way may be seen either way, and a
    /// [`Bus::map_apply`] that moves a record from one field to another during the read may show
    /// it in both or in neither. Fields left untouched during the read are always returned, once.
    /// Read a map while nothing else writes it: the exit monitor loads its book on start, before
    /// its one writer (the engine loop) runs.
    pub async fn map_all(&self, key: &str) -> Result<BTreeMap<String, String>> {
        dispatch!(self.map_all(key))
    }

    /// Removes `delete` from the state map `key` and sets `put`, as one atomic step (`MULTI`,
    /// `HDEL`, `HSET`, `EXEC` in one round trip): no reader ever sees some of the changes without
    /// the others, so a record that moves from one field to another never exists twice or not at
    /// all, even if the process dies in between. Deletes go first, so a field named in both ends
    /// up with its value from `put`. Empty `put` and `delete` together are a no-op.
    ///
    /// On [`Error::Unavailable`] either all of it or none of it happened; applying the same
    /// change again gives the same map.
    pub async fn map_apply(
        &self,
        key: &str,
        put: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        dispatch!(self.map_apply(key, put, delete))
    }

    /// Takes `windows` from the rate budget shared by every process on this bus, in one atomic
    /// step at `now_ms` (the caller's estimate of the exchange's clock, which the windows are
    /// aligned to): either every counter is raised by its cost ([`RateDecision::Granted`]) or
    /// none is and the answer says how long to wait (a full window, or the ban deadline `ban` in
    /// force at `ban_now_ms`). Ban deadlines are kept on the local wall clock, which every
    /// process on a host shares, rather than on each process's own estimate of the exchange's
    /// clock: two estimates seconds apart let one process see a ban as over and earn a 418.
    /// See the `rate` module.
    pub async fn rate_take(
        &self,
        ban: &str,
        windows: &[RateWindow],
        now_ms: i64,
        ban_now_ms: i64,
    ) -> Result<RateDecision> {
        dispatch!(self.rate_take(ban, windows, now_ms, ban_now_ms))
    }

    /// Raises ban deadline `ban` to `until_ms` (a later deadline already set stays), so every
    /// process sharing the budget stops, not only the one that got the 429 or 418.
    pub async fn rate_ban(&self, ban: &str, until_ms: i64, now_ms: i64) -> Result<()> {
        dispatch!(self.rate_ban(ban, until_ms, now_ms))
    }

    /// Checks that the bus answers.
    pub async fn ping(&self) -> Result<()> {
        dispatch!(self.ping())
    }
}

impl From<RedisBus> for Bus {
    fn from(bus: RedisBus) -> Self {
        Bus::Redis(bus)
    }
}

impl From<MemoryBus> for Bus {
    fn from(bus: MemoryBus) -> Self {
        Bus::Memory(bus)
    }
}
