//! The in-process bus: the same streams, consumer groups, pending entries, claims, trimming,
//! progress records and state maps as the Redis bus, kept in a mutex-guarded map. It serves
//! `quantum run` without Redis and every unit test that needs a bus; the shared test suite in
//! `tests/it` holds it to the same behaviour as Redis.
//!
//! Differences from Redis, all deliberate: trimming is exact rather than approximate; nothing
//! survives the process; the group's `lag` is always known; a state map is read as a snapshot
//! (Redis pages through it, which callers must tolerate anyway); streams, progress records and
//! state maps each have their own names, where Redis would refuse a key used as two types. Time
//! is read from tokio's clock, so tests can pause it and step over idle and TTL thresholds
//! without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::entry::{payload_from_fields, ConsumerInfo, Entry, GroupInfo};
use crate::error::{Error, Result};
use crate::keys::PAYLOAD_FIELD;
use crate::rate::{self, RateDecision, RateWindow};

/// An in-process bus. Clones share the same streams.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Exact upper bound of every stream's length.
    max_len: usize,
    /// All streams and progress records. A std mutex, because no critical section awaits: each
    /// method does its book-keeping in one short synchronous step.
    state: Mutex<State>,
    /// Wakes blocked readers after every publish. Readers re-check their stream and go back to
    /// waiting if nothing new is there for their group, so a wake-up is a hint, never a promise.
    published: Notify,
}

#[derive(Default)]
struct State {
    streams: HashMap<String, Stream>,
    progress: HashMap<String, Progress>,
    /// The shared rate budget: counter name → (window index, count), and ban deadlines.
    rate_counters: HashMap<String, (i64, u64)>,
    rate_bans: HashMap<String, i64>,
    /// State maps; like a Redis hash, one without fields is removed.
    maps: HashMap<String, BTreeMap<String, String>>,
}

struct Progress {
    value: String,
    expires: Instant,
}

#[derive(Default)]
struct Stream {
    entries: BTreeMap<StreamId, Fields>,
    /// The last id handed out, kept after trimming so ids never go backwards.
    last_id: StreamId,
    groups: BTreeMap<String, Group>,
}

type Fields = Vec<(String, String)>;

struct Group {
    last_delivered: StreamId,
    /// The pending entries list: delivered, not yet acknowledged.
    pending: BTreeMap<StreamId, Pending>,
    /// Every consumer that has read or claimed, with the time it last did.
    consumers: BTreeMap<String, Instant>,
}

struct Pending {
    consumer: String,
    delivered_at: Instant,
    deliveries: u64,
}

/// Appends an entry to `stream` (created if missing), trimmed to `max_len` entries.
fn append(state: &mut State, stream: &str, fields: Fields, max_len: usize) -> StreamId {
    let stream = state.streams.entry(stream.to_owned()).or_default();
    let id = next_id(stream.last_id, SystemTime::now());
    stream.last_id = id;
    stream.entries.insert(id, fields);
    while stream.entries.len() > max_len {
        stream.entries.pop_first();
    }
    id
}

/// How idle a released entry looks: longer than any claim waits for.
const RELEASED_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A Redis-style stream id: milliseconds since the epoch and a sequence within the millisecond.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId {
    ms: u64,
    seq: u64,
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = Error;

    /// Parses `<ms>-<seq>` or `<ms>` (sequence 0), as Redis accepts.
    fn from_str(text: &str) -> Result<Self> {
        let invalid = || Error::Protocol {
            op: "parse stream id",
            detail: format!("invalid stream id {text:?}"),
        };
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        Ok(StreamId {
            ms: ms.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus")
            .field("max_len", &self.inner.max_len)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryBus {
    /// Streams bounded like the Redis default, 100 000 entries.
    fn default() -> Self {
        MemoryBus::new(crate::Config::default().max_len)
    }
}

impl MemoryBus {
    /// An empty bus whose streams keep at most `max_len` entries (at least 1).
    pub fn new(max_len: usize) -> Self {
        MemoryBus {
            inner: Arc::new(Inner {
                max_len: max_len.max(1),
                state: Mutex::new(State::default()),
                published: Notify::new(),
            }),
        }
    }

    /// See [`crate::Bus::publish`].
    pub async fn publish(&self, stream: &str, payload: &str) -> Result<String> {
        self.publish_fields(stream, &[(PAYLOAD_FIELD, payload)])
            .await
    }

    /// See [`crate::Bus::publish_and_set`].
    pub async fn publish_and_set(
        &self,
        stream: &str,
        payload: &str,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<String> {
        // One lock for both: no reader sees one without the other.
        let id = {
            let mut state = self.lock();
            let id = append(
                &mut state,
                stream,
                vec![(PAYLOAD_FIELD.to_owned(), payload.to_owned())],
                self.inner.max_len,
            );
            state.progress.insert(key.to_owned(), progress(value, ttl));
            id
        };
        self.inner.published.notify_waiters();
        Ok(id.to_string())
    }

    /// Appends an entry with arbitrary fields, the in-memory counterpart of a raw `XADD`. Only
    /// tests need it, to create entries without a `payload` field the way a foreign producer
    /// could.
    pub async fn publish_fields(&self, stream: &str, fields: &[(&str, &str)]) -> Result<String> {
        let fields = fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let id = append(&mut self.lock(), stream, fields, self.inner.max_len);
        self.inner.published.notify_waiters();
        Ok(id.to_string())
    }

    /// See [`crate::Bus::ensure_group`].
    pub async fn ensure_group(&self, stream: &str, group: &str) -> Result<bool> {
        let mut state = self.lock();
        let stream = state.streams.entry(stream.to_owned()).or_default();
        if stream.groups.contains_key(group) {
            return Ok(false);
        }
        stream.groups.insert(
            group.to_owned(),
            Group {
                last_delivered: StreamId::default(),
                pending: BTreeMap::new(),
                consumers: BTreeMap::new(),
            },
        );
        Ok(true)
    }

    /// See [`crate::Bus::read`].
    pub async fn read(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>> {
        // An absurdly long block (past the clock's range) waits for about a year instead.
        let deadline = Instant::now()
            .checked_add(block)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
        loop {
            // Register interest before looking, so a publish between the look and the wait still
            // wakes this reader.
            let published = self.inner.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();

            let entries = self.deliver_new(stream, group, consumer, count.max(1))?;
            if !entries.is_empty() || block.is_zero() {
                return Ok(entries);
            }
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// See [`crate::Bus::pending_for`].
    pub async fn pending_for(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Vec<Entry>> {
        let now = Instant::now();
        let mut state = self.lock();
        let Stream {
            entries, groups, ..
        } = stream_mut(&mut state, stream, group)?;
        let group_state = group_mut(groups, stream, group)?;
        group_state.consumers.insert(consumer.to_owned(), now);
        let mut out = Vec::new();
        for (id, pending) in &mut group_state.pending {
            if pending.consumer != consumer {
                continue;
            }
            // Like Redis, re-reading one's own history counts as a delivery.
            pending.delivered_at = now;
            pending.deliveries += 1;
            out.push(entry(*id, entries.get(id), pending.deliveries));
        }
        Ok(out)
    }

    /// See [`crate::Bus::release`].
    pub async fn release(&self, stream: &str, group: &str, ids: &[String]) -> Result<()> {
        let now = Instant::now();
        // As idle as an `Instant` can say: any claim's minimum idle time is met.
        let long_ago = now.checked_sub(RELEASED_IDLE).unwrap_or(now);
        let mut state = self.lock();
        let Stream { groups, .. } = stream_mut(&mut state, stream, group)?;
        let group_state = group_mut(groups, stream, group)?;
        for id in ids {
            let id: StreamId = id.parse()?;
            if let Some(pending) = group_state.pending.get_mut(&id) {
                pending.delivered_at = long_ago;
            }
        }
        Ok(())
    }

    /// See [`crate::Bus::claim_stale`].
    pub async fn claim_stale(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let now = Instant::now();
        let count = count.max(1);
        let mut state = self.lock();
        let Stream {
            entries, groups, ..
        } = stream_mut(&mut state, stream, group)?;
        let group_state = group_mut(groups, stream, group)?;
        group_state.consumers.insert(consumer.to_owned(), now);
        let mut out = Vec::new();
        let mut trimmed = Vec::new();
        for (id, pending) in &mut group_state.pending {
            if out.len() >= count {
                break;
            }
            if now.duration_since(pending.delivered_at) < min_idle {
                continue;
            }
            match entries.get(id) {
                // Redis 7 drops trimmed entries from the pending list when XAUTOCLAIM meets
                // them, and does not return them; so does this bus.
                None => trimmed.push(*id),
                Some(fields) => {
                    pending.consumer = consumer.to_owned();
                    pending.delivered_at = now;
                    pending.deliveries += 1;
                    out.push(entry(*id, Some(fields), pending.deliveries));
                }
            }
        }
        for id in trimmed {
            group_state.pending.remove(&id);
        }
        Ok(out)
    }

    /// See [`crate::Bus::ack`].
    pub async fn ack(&self, stream: &str, group: &str, id: &str) -> Result<bool> {
        let id: StreamId = id.parse()?;
        let mut state = self.lock();
        let removed = state
            .streams
            .get_mut(stream)
            .and_then(|stream| stream.groups.get_mut(group))
            .and_then(|group| group.pending.remove(&id));
        Ok(removed.is_some())
    }

    /// See [`crate::Bus::latest`].
    pub async fn latest(&self, stream: &str, count: usize) -> Result<Vec<Entry>> {
        let state = self.lock();
        let Some(stream) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        Ok(stream
            .entries
            .iter()
            .rev()
            .take(count)
            .map(|(id, fields)| entry(*id, Some(fields), 0))
            .collect())
    }

    /// See [`crate::Bus::len`].
    pub async fn len(&self, stream: &str) -> Result<u64> {
        let state = self.lock();
        Ok(state
            .streams
            .get(stream)
            .map_or(0, |stream| stream.entries.len() as u64))
    }

    /// See [`crate::Bus::group_info`].
    pub async fn group_info(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        let now = Instant::now();
        let state = self.lock();
        let Some(stream) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        Ok(stream
            .groups
            .iter()
            .map(|(name, group)| GroupInfo {
                name: name.clone(),
                pending: group.pending.len() as u64,
                last_delivered_id: group.last_delivered.to_string(),
                lag: Some(
                    stream
                        .entries
                        .range(next_after(group.last_delivered)..)
                        .count() as u64,
                ),
                consumers: group
                    .consumers
                    .iter()
                    .map(|(consumer, seen)| ConsumerInfo {
                        name: consumer.clone(),
                        pending: group
                            .pending
                            .values()
                            .filter(|pending| &pending.consumer == consumer)
                            .count() as u64,
                        idle: now.duration_since(*seen),
                    })
                    .collect(),
            })
            .collect())
    }

    /// See [`crate::Bus::progress_get`].
    pub async fn progress_get(&self, key: &str) -> Result<Option<String>> {
        let mut state = self.lock();
        Ok(live_progress(&mut state, key).map(|progress| progress.value.clone()))
    }

    /// See [`crate::Bus::progress_set`].
    pub async fn progress_set(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let mut state = self.lock();
        state.progress.insert(key.to_owned(), progress(value, ttl));
        Ok(())
    }

    /// See [`crate::Bus::progress_set_if_absent`].
    pub async fn progress_set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut state = self.lock();
        if live_progress(&mut state, key).is_some() {
            return Ok(false);
        }
        state.progress.insert(key.to_owned(), progress(value, ttl));
        Ok(true)
    }

    /// See [`crate::Bus::rate_take`].
    pub async fn rate_take(
        &self,
        ban: &str,
        windows: &[RateWindow],
        now_ms: i64,
        ban_now_ms: i64,
    ) -> Result<RateDecision> {
        let mut state = self.lock();
        let banned_until = state.rate_bans.get(ban).copied().unwrap_or(0);
        let used: Vec<u64> = windows
            .iter()
            .map(|w| match state.rate_counters.get(&w.name) {
                Some((index, used)) if *index == rate::window_index(now_ms, w.len_ms) => *used,
                _ => 0,
            })
            .collect();
        let decision = rate::decide(now_ms, ban_now_ms, banned_until, windows, &used);
        if decision == RateDecision::Granted {
            for (w, used) in windows.iter().zip(used) {
                state.rate_counters.insert(
                    w.name.clone(),
                    (
                        rate::window_index(now_ms, w.len_ms),
                        used.saturating_add(w.cost),
                    ),
                );
            }
        }
        Ok(decision)
    }

    /// See [`crate::Bus::rate_ban`].
    pub async fn rate_ban(&self, ban: &str, until_ms: i64, _now_ms: i64) -> Result<()> {
        let mut state = self.lock();
        let deadline = state.rate_bans.entry(ban.to_owned()).or_insert(0);
        *deadline = (*deadline).max(until_ms);
        Ok(())
    }

    /// See [`crate::Bus::map_put`].
    pub async fn map_put(&self, key: &str, entries: &[(String, String)]) -> Result<()> {
        let mut state = self.lock();
        put_fields(&mut state, key, entries);
        Ok(())
    }

    /// See [`crate::Bus::map_delete`].
    pub async fn map_delete(&self, key: &str, fields: &[String]) -> Result<u64> {
        let mut state = self.lock();
        Ok(delete_fields(&mut state, key, fields))
    }

    /// See [`crate::Bus::map_all`].
    pub async fn map_all(&self, key: &str) -> Result<BTreeMap<String, String>> {
        let state = self.lock();
        Ok(state.maps.get(key).cloned().unwrap_or_default())
    }

    /// See [`crate::Bus::map_apply`].
    pub async fn map_apply(
        &self,
        key: &str,
        put: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        // One critical section is what MULTI/EXEC is on Redis: no reader sees half of it.
        // Deletes first, as on Redis, so a field in both keeps its value from `put`.
        let mut state = self.lock();
        delete_fields(&mut state, key, delete);
        put_fields(&mut state, key, put);
        Ok(())
    }

    /// See [`crate::Bus::ping`].
    pub async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Moves up to `count` never-delivered entries into `consumer`'s pending list.
    fn deliver_new(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let now = Instant::now();
        let mut state = self.lock();
        let Stream {
            entries, groups, ..
        } = stream_mut(&mut state, stream, group)?;
        let group_state = group_mut(groups, stream, group)?;
        group_state.consumers.insert(consumer.to_owned(), now);
        let mut out = Vec::new();
        for (id, fields) in entries
            .range(next_after(group_state.last_delivered)..)
            .take(count)
        {
            group_state.last_delivered = *id;
            group_state.pending.insert(
                *id,
                Pending {
                    consumer: consumer.to_owned(),
                    delivered_at: now,
                    deliveries: 1,
                },
            );
            out.push(entry(*id, Some(fields), 1));
        }
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters
        // more than losing the whole bus, so a poisoned lock is used as it is.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The next id after `last` for an entry published at `now`: the current millisecond, or the
/// last id's millisecond with the next sequence when the clock has not moved on (or went back).
fn next_id(last: StreamId, now: SystemTime) -> StreamId {
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    if ms > last.ms {
        StreamId { ms, seq: 0 }
    } else {
        StreamId {
            ms: last.ms,
            seq: last.seq + 1,
        }
    }
}

/// The smallest id greater than `id`, the start of an exclusive range.
fn next_after(id: StreamId) -> StreamId {
    match id.seq.checked_add(1) {
        Some(seq) => StreamId { ms: id.ms, seq },
        None => StreamId {
            ms: id.ms + 1,
            seq: 0,
        },
    }
}

fn entry(id: StreamId, fields: Option<&Fields>, deliveries: u64) -> Entry {
    let raw = fields.map(|fields| {
        fields
            .iter()
            .map(|(name, value)| (name.clone().into_bytes(), value.clone().into_bytes()))
            .collect()
    });
    Entry {
        id: id.to_string(),
        payload: payload_from_fields(raw),
        deliveries,
    }
}

fn stream_mut<'a>(state: &'a mut State, stream: &str, group: &str) -> Result<&'a mut Stream> {
    state
        .streams
        .get_mut(stream)
        .ok_or_else(|| no_group(stream, group))
}

fn group_mut<'a>(
    groups: &'a mut BTreeMap<String, Group>,
    stream: &str,
    group: &str,
) -> Result<&'a mut Group> {
    groups.get_mut(group).ok_or_else(|| no_group(stream, group))
}

fn no_group(stream: &str, group: &str) -> Error {
    Error::NoGroup {
        stream: stream.to_owned(),
        group: group.to_owned(),
    }
}

fn progress(value: &str, ttl: Duration) -> Progress {
    Progress {
        value: value.to_owned(),
        // Redis rejects a zero expiry; both buses treat it as the shortest one instead.
        expires: Instant::now() + ttl.max(Duration::from_millis(1)),
    }
}

/// Sets `entries` in map `key`, the last value of a repeated field winning, like `HSET`. Nothing
/// to set creates no map.
fn put_fields(state: &mut State, key: &str, entries: &[(String, String)]) {
    if entries.is_empty() {
        return;
    }
    let map = state.maps.entry(key.to_owned()).or_default();
    for (field, value) in entries {
        map.insert(field.clone(), value.clone());
    }
}

/// Removes `fields` from map `key`, like `HDEL`: returns how many were there, and removes the map
/// once it has no field left.
fn delete_fields(state: &mut State, key: &str, fields: &[String]) -> u64 {
    let Some(map) = state.maps.get_mut(key) else {
        return 0;
    };
    let removed = fields
        .iter()
        .filter(|field| map.remove(field.as_str()).is_some())
        .count();
    if map.is_empty() {
        state.maps.remove(key);
    }
    removed as u64
}

/// The progress record under `key` if it has not expired; an expired one is removed.
fn live_progress<'a>(state: &'a mut State, key: &str) -> Option<&'a Progress> {
    if state
        .progress
        .get(key)
        .is_some_and(|progress| progress.expires <= Instant::now())
    {
        state.progress.remove(key);
    }
    state.progress.get(key)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{next_id, MemoryBus, StreamId};

    #[test]
    fn ids_increase_even_when_the_clock_stalls_or_goes_back() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000);
        let first = next_id(StreamId::default(), at);
        let second = next_id(first, at);
        let third = next_id(second, at - Duration::from_millis(5));
        assert_eq!(first.to_string(), "1000-0");
        assert_eq!(second.to_string(), "1000-1");
        assert_eq!(third.to_string(), "1000-2");
        assert_eq!(
            next_id(third, at + Duration::from_millis(1)).to_string(),
            "1001-0"
        );
    }

    #[test]
    fn ids_parse_with_and_without_sequence() {
        assert_eq!(
            "5-3".parse::<StreamId>().unwrap(),
            StreamId { ms: 5, seq: 3 }
        );
        assert_eq!("5".parse::<StreamId>().unwrap(), StreamId { ms: 5, seq: 0 });
        assert!("x-1".parse::<StreamId>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn claim_waits_for_exactly_min_idle() {
        let bus = MemoryBus::new(100);
        bus.ensure_group("s", "g").await.unwrap();
        bus.publish("s", "{}").await.unwrap();
        let read = bus.read("s", "g", "a", 10, Duration::ZERO).await.unwrap();
        assert_eq!(read.len(), 1);

        tokio::time::advance(Duration::from_secs(59)).await;
        let early = bus
            .claim_stale("s", "g", "b", Duration::from_secs(60), 10)
            .await
            .unwrap();
        assert!(early.is_empty());

        tokio::time::advance(Duration::from_secs(1)).await;
        let claimed = bus
            .claim_stale("s", "g", "b", Duration::from_secs(60), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].deliveries, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_expires_at_its_ttl() {
        let bus = MemoryBus::new(100);
        bus.progress_set("k", "placed", Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(
            bus.progress_get("k").await.unwrap().as_deref(),
            Some("placed")
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(bus.progress_get("k").await.unwrap(), None);
        assert!(bus
            .progress_set_if_absent("k", "again", Duration::from_secs(1))
            .await
            .unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_reader_wakes_on_publish() {
        let bus = MemoryBus::new(100);
        bus.ensure_group("s", "g").await.unwrap();
        let reader = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.read("s", "g", "a", 10, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        bus.publish("s", "late").await.unwrap();
        let entries = reader.await.unwrap().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].payload.as_deref(), Ok("late"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_reader_gives_up_after_block() {
        let bus = MemoryBus::new(100);
        bus.ensure_group("s", "g").await.unwrap();
        let started = tokio::time::Instant::now();
        let entries = bus
            .read("s", "g", "a", 10, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(entries.is_empty());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
