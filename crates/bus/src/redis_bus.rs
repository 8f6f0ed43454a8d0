//! The Redis bus: every bus operation as one or a few Redis commands (`XADD MAXLEN ~`,
//! `XGROUP CREATE`, `XREADGROUP`, `XAUTOCLAIM`, `XACK`, `XPENDING`, `XREVRANGE`, `XINFO`, `SET PX`,
//! and `HSET`, `HDEL`, `HSCAN`, `MULTI`/`EXEC` for state maps) with a timeout on each, and the
//! parsing of their replies into [`Entry`] values.
//!
//! Two kinds of connection. Short commands share one [`ConnectionManager`], a multiplexed
//! connection that reconnects on its own after Redis restarts. Blocking reads must not use it:
//! Redis answers the commands of one connection strictly in order, so an `XREADGROUP BLOCK 5000`
//! would hold every publish, ack and progress write queued behind it for up to five seconds.
//! Blocking reads therefore take a dedicated connection from a small pool of idle ones, open a new
//! one when none is idle, and put it back afterwards. The pool grows to the number of concurrent
//! blocking readers (one per consumer loop, a handful) and a connection that failed or timed out
//! is dropped rather than reused, because a late reply could still be on its way.
//!
//! Replies of the stream commands are parsed by hand from [`Value`] rather than with the `redis`
//! crate's typed replies, because those reject an entry whose content is nil (a pending entry
//! trimmed from the stream) and would fail the whole read for one bad entry.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamInfoConsumersReply, StreamInfoGroupsReply};
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, FromRedisValue, RedisError, Value};

use crate::entry::{payload_from_fields, ConsumerInfo, Entry, GroupInfo, RawFields};
use crate::error::{Error, Result};
use crate::keys::{self, PAYLOAD_FIELD};
use crate::rate::{self, RateDecision, RateWindow};
use crate::Config;

/// How many entries one history read of [`RedisBus::pending_for`] asks for; it pages until done.
const PENDING_PAGE: usize = 100;

/// How many fields one `HSCAN` of [`RedisBus::map_all`] asks for; it pages until done. A hint to
/// Redis, not a limit: small hashes come back whole in one page.
const MAP_PAGE: usize = 1000;

/// The longest wait between two reconnect attempts of the shared command connection, in ms.
const RECONNECT_DELAY_CAP_MS: u64 = 1_000;

/// Reconnect attempts in one round; a command after a failed round starts the next one.
const RECONNECT_ATTEMPTS: usize = 6;

/// At most this many idle blocking-read connections are kept; more concurrent readers than this
/// still work, their extra connections are closed after use.
const MAX_IDLE_READERS: usize = 8;

/// A bus on a Redis server. Clones share the connections.
#[derive(Clone)]
pub struct RedisBus {
    /// Shared multiplexed connection for every non-blocking command; reconnects by itself.
    commands: ConnectionManager,
    /// Dedicated connections for blocking reads (see the module documentation).
    readers: Arc<Readers>,
    max_len: usize,
    op_timeout: Duration,
    redacted_url: String,
    /// Put in front of every key and stream name: empty, except on a bus of its own inside a
    /// shared Redis (see [`crate::Bus::namespaced`]).
    prefix: Arc<str>,
}

struct Readers {
    client: redis::Client,
    /// Connections not in use by a blocking read. A std mutex: it is only held to push or pop.
    idle: Mutex<Vec<MultiplexedConnection>>,
}

/// An entry as Redis returned it: its id and its fields, or `None` when the entry is gone.
type RawEntry = (String, Option<RawFields>);

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("url", &self.redacted_url)
            .field("max_len", &self.max_len)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

/// The SET of a progress record with its time to live.
fn set_progress(key: &str, value: &str, ttl: Duration) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value).arg("PX").arg(ttl_ms(ttl));
    cmd
}

/// The shared multiplexed connection for non-blocking commands, with the timeouts of the config.
async fn command_connection(
    client: &redis::Client,
    op_timeout: Duration,
) -> Result<ConnectionManager> {
    // The reconnect backoff, explicitly. redis 0.32 hands `factor` to backon as the multiplier
    // between delays (from a 1 s minimum), so its default of 100 made the second attempt wait a
    // minute and six attempts about five: services did not reach a restarted Redis again for
    // minutes (found by `quantum chaos`). Doubling, capped at one second, reconnects within about
    // two seconds of Redis coming back; once the attempts run out, the next command starts more.
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(op_timeout)
        .set_response_timeout(op_timeout)
        .set_exponent_base(2)
        .set_factor(2)
        .set_max_delay(RECONNECT_DELAY_CAP_MS)
        .set_number_of_retries(RECONNECT_ATTEMPTS);
    timed(
        "connect",
        op_timeout,
        client.get_connection_manager_with_config(manager_config),
    )
    .await
}

impl RedisBus {
    /// Connects to `config.url`, waiting at most `config.op_timeout`. Fails with
    /// [`Error::Unavailable`] when Redis cannot be reached now (the caller retries), and with
    /// [`Error::Config`] when the URL is invalid.
    pub async fn connect(config: &Config) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|err| Error::Config(format!("redis url {}: {err}", config.redacted_url())))?;
        // One plain connection first. The connection manager retries a failed connect with
        // backoff until the timeout, so a Redis that refused at once would be reported as "no
        // answer within 5s"; this attempt fails with what actually happened (connection refused,
        // unknown host, or the timeout), which is what a person needs to fix it.
        drop(
            timed(
                "connect",
                config.op_timeout,
                client.get_multiplexed_async_connection(),
            )
            .await?,
        );
        let commands = command_connection(&client, config.op_timeout).await?;
        Ok(RedisBus {
            commands,
            readers: Arc::new(Readers {
                client,
                idle: Mutex::new(Vec::new()),
            }),
            max_len: config.max_len.max(1),
            op_timeout: config.op_timeout,
            redacted_url: config.redacted_url(),
            prefix: Arc::from(""),
        })
    }

    /// See [`crate::Bus::namespaced`].
    pub fn namespaced(&self, namespace: &str) -> RedisBus {
        RedisBus {
            prefix: Arc::from(format!("{}{namespace}:", self.prefix)),
            ..self.clone()
        }
    }

    /// The Redis key of `name` on this bus: `name` behind the namespace, if any.
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// See [`crate::Bus::separate`].
    pub async fn separate(&self) -> Result<Self> {
        let commands = command_connection(&self.readers.client, self.op_timeout).await?;
        Ok(RedisBus {
            commands,
            ..self.clone()
        })
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
        let stream: &str = &self.key(stream);
        let key: &str = &self.key(key);
        // MULTI/EXEC, as `map_apply`: both or neither, whatever happens to the connection or the
        // server between them.
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.add_command(self.xadd(stream, payload));
        pipe.add_command(set_progress(key, value, ttl)).ignore();
        let mut conn = self.commands.clone();
        let (id,): (String,) = timed(
            "publish and set",
            self.op_timeout,
            pipe.query_async(&mut conn),
        )
        .await?;
        Ok(id)
    }

    /// The XADD of one entry, trimmed to about `max_len`.
    fn xadd(&self, stream: &str, payload: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg(PAYLOAD_FIELD)
            .arg(payload);
        cmd
    }

    /// See [`crate::Bus::publish`].
    pub async fn publish(&self, stream: &str, payload: &str) -> Result<String> {
        let stream: &str = &self.key(stream);
        self.query("publish", &self.xadd(stream, payload)).await
    }

    /// See [`crate::Bus::ensure_group`].
    pub async fn ensure_group(&self, stream: &str, group: &str) -> Result<bool> {
        let stream: &str = &self.key(stream);
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM");
        let mut conn = self.commands.clone();
        match timed_redis(
            "ensure group",
            self.op_timeout,
            cmd.query_async::<Value>(&mut conn),
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(false),
            Err(err) => Err(classify("ensure group", err)),
        }
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
        let stream: &str = &self.key(stream);
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if block.is_zero() {
            // BLOCK 0 would mean "forever" to Redis; a zero block means "do not wait" here, so
            // the command goes without BLOCK, over the shared connection.
            cmd.arg("STREAMS").arg(stream).arg(">");
            let reply: Value = self.query_in_group("read", &cmd, stream, group).await?;
            return parsed(
                "read",
                parse_read_reply(&reply).map(|raw| with_deliveries(raw, 1)),
            );
        }
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
        cmd.arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(stream)
            .arg(">");
        let mut conn = self.readers.take(self.op_timeout).await?;
        let result = timed_redis(
            "read",
            block.saturating_add(self.op_timeout),
            cmd.query_async::<Value>(&mut conn),
        )
        .await;
        // A connection goes back to the pool only when Redis answered (even with a refusal). After
        // an I/O error or a timeout it may be broken or still owe a reply, so it is closed.
        if !matches!(&result, Err(err) if err.is_io_error()) {
            self.readers.give_back(conn);
        }
        let reply = result.map_err(|err| classify_in_group("read", err, stream, group))?;
        parsed(
            "read",
            parse_read_reply(&reply).map(|raw| with_deliveries(raw, 1)),
        )
    }

    /// See [`crate::Bus::pending_for`].
    pub async fn pending_for(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<Vec<Entry>> {
        let stream: &str = &self.key(stream);
        let mut raw = Vec::new();
        let mut after = "0".to_owned();
        loop {
            // A history read (any id but `>`) returns this consumer's own pending entries with
            // ids greater than `after`, so paging by the last id seen walks the whole list
            // without needing acks in between.
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(group)
                .arg(consumer)
                .arg("COUNT")
                .arg(PENDING_PAGE)
                .arg("STREAMS")
                .arg(stream)
                .arg(&after);
            let reply: Value = self
                .query_in_group("pending for", &cmd, stream, group)
                .await?;
            let page = parsed("pending for", parse_read_reply(&reply))?;
            let full = page.len() >= PENDING_PAGE;
            match page.last() {
                Some((id, _)) => after.clone_from(id),
                None => break,
            }
            raw.extend(page);
            if !full {
                break;
            }
        }
        // Redis counts a history read as a delivery, so every entry here has been delivered at
        // least twice.
        Ok(self.with_pending_counts(stream, group, raw, 2).await)
    }

    /// See [`crate::Bus::release`].
    pub async fn release(&self, stream: &str, group: &str, ids: &[String]) -> Result<()> {
        let stream: &str = &self.key(stream);
        if ids.is_empty() {
            return Ok(());
        }
        // XCLAIM to the same owner with min-idle 0 changes nothing but the idle time, which
        // IDLE sets: a week, longer than any claim waits for. JUSTID: no delivery is counted.
        // The owner is read from XPENDING, so the entry stays where it is until someone claims it.
        for id in ids {
            let mut pending = redis::cmd("XPENDING");
            pending.arg(stream).arg(group).arg(id).arg(id).arg(1);
            let reply: Value = self
                .query_in_group("release", &pending, stream, group)
                .await?;
            let owner = match &reply {
                Value::Array(rows) => rows.first().and_then(|row| match row {
                    Value::Array(fields) => fields.get(1).and_then(|v| match v {
                        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
                        Value::SimpleString(s) => Some(s.clone()),
                        _ => None,
                    }),
                    _ => None,
                }),
                _ => None,
            };
            let Some(owner) = owner else { continue };
            let mut claim = redis::cmd("XCLAIM");
            claim
                .arg(stream)
                .arg(group)
                .arg(owner)
                .arg(0)
                .arg(id)
                .arg("IDLE")
                .arg(7u64 * 24 * 3600 * 1000)
                .arg("JUSTID");
            let _: Value = self
                .query_in_group("release", &claim, stream, group)
                .await?;
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
        let stream: &str = &self.key(stream);
        let count = count.max(1);
        let min_idle_ms = u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX);
        let mut raw = Vec::new();
        let mut cursor = "0-0".to_owned();
        // XAUTOCLAIM scans a bounded slice of the pending list per call and returns a cursor;
        // loop until the cursor comes back to 0-0 (the whole list was scanned) or enough entries
        // were claimed. Entries claimed here are no longer idle, so a later call starting again
        // from 0-0 does not take them twice.
        loop {
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(stream)
                .arg(group)
                .arg(consumer)
                .arg(min_idle_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(count - raw.len());
            let reply: Value = self
                .query_in_group("claim stale", &cmd, stream, group)
                .await?;
            let (next, claimed, trimmed) = parsed("claim stale", parse_autoclaim(&reply))?;
            if !trimmed.is_empty() {
                tracing::warn!(
                    stream,
                    group,
                    ids = ?trimmed,
                    "pending entries were trimmed before anyone acknowledged them",
                );
            }
            raw.extend(claimed);
            cursor = next;
            if cursor == "0-0" || raw.len() >= count {
                break;
            }
        }
        Ok(self.with_pending_counts(stream, group, raw, 2).await)
    }

    /// See [`crate::Bus::ack`].
    pub async fn ack(&self, stream: &str, group: &str, id: &str) -> Result<bool> {
        let stream: &str = &self.key(stream);
        let mut cmd = redis::cmd("XACK");
        cmd.arg(stream).arg(group).arg(id);
        let acked: u64 = self.query("ack", &cmd).await?;
        Ok(acked > 0)
    }

    /// See [`crate::Bus::latest`].
    pub async fn latest(&self, stream: &str, count: usize) -> Result<Vec<Entry>> {
        let stream: &str = &self.key(stream);
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(stream).arg("+").arg("-").arg("COUNT").arg(count);
        let reply: Value = self.query("latest", &cmd).await?;
        parsed(
            "latest",
            parse_entries(&reply).map(|raw| with_deliveries(raw, 0)),
        )
    }

    /// See [`crate::Bus::len`].
    pub async fn len(&self, stream: &str) -> Result<u64> {
        let stream: &str = &self.key(stream);
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(stream);
        self.query("len", &cmd).await
    }

    /// See [`crate::Bus::group_info`].
    pub async fn group_info(&self, stream: &str) -> Result<Vec<GroupInfo>> {
        let stream: &str = &self.key(stream);
        let mut cmd = redis::cmd("XINFO");
        cmd.arg("GROUPS").arg(stream);
        let mut conn = self.commands.clone();
        let groups = match timed_redis(
            "group info",
            self.op_timeout,
            cmd.query_async::<StreamInfoGroupsReply>(&mut conn),
        )
        .await
        {
            Ok(groups) => groups.groups,
            // A stream that does not exist has no groups; Redis calls that an error.
            Err(err)
                if err.kind() == ErrorKind::ResponseError
                    && err
                        .detail()
                        .is_some_and(|detail| detail.contains("no such key")) =>
            {
                return Ok(Vec::new());
            }
            Err(err) => return Err(classify("group info", err)),
        };
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let mut cmd = redis::cmd("XINFO");
            cmd.arg("CONSUMERS").arg(stream).arg(&group.name);
            let consumers: StreamInfoConsumersReply = self.query("group info", &cmd).await?;
            out.push(GroupInfo {
                name: group.name,
                pending: group.pending as u64,
                last_delivered_id: group.last_delivered_id,
                lag: group.lag.map(|lag| lag as u64),
                consumers: consumers
                    .consumers
                    .into_iter()
                    .map(|consumer| ConsumerInfo {
                        name: consumer.name,
                        pending: consumer.pending as u64,
                        idle: Duration::from_millis(consumer.idle as u64),
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// See [`crate::Bus::progress_get`].
    pub async fn progress_get(&self, key: &str) -> Result<Option<String>> {
        let key: &str = &self.key(key);
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.query("progress get", &cmd).await
    }

    /// See [`crate::Bus::progress_set`].
    pub async fn progress_set(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let key: &str = &self.key(key);
        let _: Value = self
            .query("progress set", &set_progress(key, value, ttl))
            .await?;
        Ok(())
    }

    /// See [`crate::Bus::progress_set_if_absent`].
    pub async fn progress_set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let key: &str = &self.key(key);
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("PX").arg(ttl_ms(ttl));
        let reply: Value = self.query("progress set if absent", &cmd).await?;
        // SET NX answers OK when it wrote and nil when the key was already there.
        Ok(!matches!(reply, Value::Nil))
    }

    /// See [`crate::Bus::map_put`].
    pub async fn map_put(&self, key: &str, entries: &[(String, String)]) -> Result<()> {
        let key: &str = &self.key(key);
        // Redis refuses an HSET without fields; nothing to write is no write.
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key);
        for (field, value) in entries {
            cmd.arg(field).arg(value);
        }
        let _: Value = self.query("map put", &cmd).await?;
        Ok(())
    }

    /// See [`crate::Bus::map_delete`].
    pub async fn map_delete(&self, key: &str, fields: &[String]) -> Result<u64> {
        let key: &str = &self.key(key);
        if fields.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(key).arg(fields);
        self.query("map delete", &cmd).await
    }

    /// See [`crate::Bus::map_all`].
    ///
    /// Pages with `HSCAN ... COUNT 1000` instead of asking for everything with one `HGETALL`.
    /// The exit monitor's book is up to some 10 000 fields and 2.5 MB. One HGETALL would build
    /// that whole reply on Redis's single thread while every other client waits, and the reply
    /// would then hold this process's shared connection for the whole transfer, so each publish,
    /// ack and progress write queued behind it would wait too (the reason blocking reads have
    /// connections of their own). Pages of 1000 fields let other commands in between, and each
    /// page has the operation timeout to itself instead of the whole read having to fit in one.
    /// The price is that the read is not a snapshot ([`crate::Bus::map_all`] says what that
    /// means for callers), which the one reader that needs it, the exit monitor loading its book
    /// before its writer starts, does not mind.
    pub async fn map_all(&self, key: &str) -> Result<BTreeMap<String, String>> {
        let key: &str = &self.key(key);
        let mut out = BTreeMap::new();
        let mut cursor = "0".to_owned();
        loop {
            let mut cmd = redis::cmd("HSCAN");
            cmd.arg(key).arg(&cursor).arg("COUNT").arg(MAP_PAGE);
            let reply: Value = self.query("map all", &cmd).await?;
            let (next, fields) = parsed("map all", parse_scan_reply(&reply))?;
            // HSCAN may return a field more than once (when the hash is resized between pages);
            // the map keeps one.
            out.extend(fields);
            // The scan is complete when Redis hands back cursor 0.
            if next == "0" {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }

    /// See [`crate::Bus::map_apply`].
    pub async fn map_apply(
        &self,
        key: &str,
        put: &[(String, String)],
        delete: &[String],
    ) -> Result<()> {
        let key: &str = &self.key(key);
        if put.is_empty() && delete.is_empty() {
            return Ok(());
        }
        // MULTI/EXEC: Redis runs the queued commands back to back with no other client's command
        // in between, and runs none of them if the connection drops before EXEC arrives. The
        // pipeline goes out as one write on the shared connection, so this process's other
        // commands cannot land inside the transaction either. Empty halves are left out, because
        // Redis refuses HDEL and HSET without fields.
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !delete.is_empty() {
            pipe.cmd("HDEL").arg(key).arg(delete).ignore();
        }
        if !put.is_empty() {
            pipe.cmd("HSET").arg(key);
            for (field, value) in put {
                pipe.arg(field).arg(value);
            }
            pipe.ignore();
        }
        let mut conn = self.commands.clone();
        // An error of either command inside EXEC (WRONGTYPE) comes back as the pipeline's error.
        timed(
            "map apply",
            self.op_timeout,
            pipe.query_async::<()>(&mut conn),
        )
        .await
    }

    /// See [`crate::Bus::rate_take`].
    pub async fn rate_take(
        &self,
        ban: &str,
        windows: &[RateWindow],
        now_ms: i64,
        ban_now_ms: i64,
    ) -> Result<RateDecision> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(rate::TAKE_SCRIPT)
            .arg(windows.len() + 1)
            .arg(self.key(&keys::rate_ban(ban)));
        for w in windows {
            cmd.arg(self.key(&keys::rate_counter(
                &w.name,
                rate::window_index(now_ms, w.len_ms),
            )));
        }
        cmd.arg(now_ms).arg(ban_now_ms);
        for w in windows {
            cmd.arg(w.len_ms.max(1)).arg(w.limit).arg(w.cost);
        }
        let (kind, wait): (i64, i64) = self.query("rate take", &cmd).await?;
        Ok(match kind {
            0 => RateDecision::Granted,
            1 => RateDecision::Wait(rate::ms(wait)),
            _ => RateDecision::Banned(rate::ms(wait)),
        })
    }

    /// See [`crate::Bus::rate_ban`].
    pub async fn rate_ban(&self, ban: &str, until_ms: i64, now_ms: i64) -> Result<()> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(rate::BAN_SCRIPT)
            .arg(1)
            .arg(self.key(&keys::rate_ban(ban)))
            .arg(until_ms)
            .arg((until_ms - now_ms).max(1));
        let _: i64 = self.query("rate ban", &cmd).await?;
        Ok(())
    }

    /// See [`crate::Bus::ping`].
    pub async fn ping(&self) -> Result<()> {
        let _: String = self.query("ping", &redis::cmd("PING")).await?;
        Ok(())
    }

    /// Runs one short command on the shared connection, within the operation timeout.
    async fn query<T: FromRedisValue>(&self, op: &'static str, cmd: &Cmd) -> Result<T> {
        let mut conn = self.commands.clone();
        timed_redis(op, self.op_timeout, cmd.query_async::<T>(&mut conn))
            .await
            .map_err(|err| classify(op, err))
    }

    /// Like [`RedisBus::query`], for a command on consumer group `group` of `stream`, so that a
    /// missing group comes back as [`Error::NoGroup`].
    async fn query_in_group<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
        stream: &str,
        group: &str,
    ) -> Result<T> {
        let mut conn = self.commands.clone();
        timed_redis(op, self.op_timeout, cmd.query_async::<T>(&mut conn))
            .await
            .map_err(|err| classify_in_group(op, err, stream, group))
    }

    /// Turns raw entries into [`Entry`] values whose `deliveries` come from the pending list.
    /// The counts are best effort: when `XPENDING` fails, or an entry was acknowledged in the
    /// meantime, `fallback` (a lower bound) is used and the entries are still returned, because
    /// they have already been delivered to this consumer.
    async fn with_pending_counts(
        &self,
        stream: &str,
        group: &str,
        raw: Vec<RawEntry>,
        fallback: u64,
    ) -> Vec<Entry> {
        if raw.is_empty() {
            return Vec::new();
        }
        let mut pipe = redis::pipe();
        for (id, _) in &raw {
            pipe.cmd("XPENDING")
                .arg(stream)
                .arg(group)
                .arg(id)
                .arg(id)
                .arg(1);
        }
        let mut conn = self.commands.clone();
        let counts: HashMap<String, u64> = match timed_redis(
            "pending counts",
            self.op_timeout,
            pipe.query_async::<Vec<Value>>(&mut conn),
        )
        .await
        {
            Ok(replies) => replies.iter().filter_map(parse_pending_count).collect(),
            Err(err) => {
                tracing::warn!(stream, group, error = %err, "cannot read delivery counts");
                HashMap::new()
            }
        };
        raw.into_iter()
            .map(|(id, fields)| Entry {
                deliveries: counts.get(&id).copied().unwrap_or(fallback),
                payload: payload_from_fields(fields),
                id,
            })
            .collect()
    }
}

impl Readers {
    /// An idle blocking-read connection, or a new one.
    async fn take(&self, op_timeout: Duration) -> Result<MultiplexedConnection> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(conn) = idle {
            return Ok(conn);
        }
        // No response timeout on the connection itself: each read sets its own, block included.
        let conn_config = AsyncConnectionConfig::new().set_connection_timeout(op_timeout);
        timed(
            "open read connection",
            op_timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&conn_config),
        )
        .await
    }

    fn give_back(&self, conn: MultiplexedConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// Awaits a Redis future for at most `limit`, classifying both failures.
async fn timed<T>(
    op: &'static str,
    limit: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T> {
    timed_redis(op, limit, fut)
        .await
        .map_err(|err| classify(op, err))
}

/// Awaits a Redis future for at most `limit`, turning the timeout into an I/O `TimedOut` error
/// so callers can still inspect server error codes (BUSYGROUP, no such key) before classifying.
async fn timed_redis<T>(
    op: &'static str,
    limit: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "{op}: no answer within {}",
                humantime::format_duration(limit)
            ),
        ))),
    }
}

/// Sorts a Redis error by what the caller should do next.
fn classify(op: &'static str, err: RedisError) -> Error {
    let detail = err.to_string();
    let retry_later = err.is_io_error()
        || matches!(
            err.kind(),
            ErrorKind::BusyLoadingError
                | ErrorKind::TryAgain
                | ErrorKind::ClusterDown
                | ErrorKind::MasterDown
        );
    if retry_later {
        Error::Unavailable { op, detail }
    } else {
        Error::Protocol { op, detail }
    }
}

/// Like [`classify`], but a NOGROUP refusal becomes [`Error::NoGroup`], which names what to
/// recreate.
fn classify_in_group(op: &'static str, err: RedisError, stream: &str, group: &str) -> Error {
    if err.code() == Some("NOGROUP") {
        return Error::NoGroup {
            stream: stream.to_owned(),
            group: group.to_owned(),
        };
    }
    classify(op, err)
}

/// A parse failure of a reply becomes a protocol error of `op`.
fn parsed<T>(op: &'static str, result: Result<T, String>) -> Result<T> {
    result.map_err(|detail| Error::Protocol { op, detail })
}

fn with_deliveries(raw: Vec<RawEntry>, deliveries: u64) -> Vec<Entry> {
    raw.into_iter()
        .map(|(id, fields)| Entry {
            id,
            payload: payload_from_fields(fields),
            deliveries,
        })
        .collect()
}

/// Redis refuses `PX 0`; the shortest expiry stands in for it.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The bytes of a string-like reply.
fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        Value::SimpleString(text) => Some(text.clone().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.clone().into_bytes()),
        Value::Int(number) => Some(number.to_string().into_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Result<String, String> {
    bytes(value)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| format!("expected a string, got {value:?}"))
}

/// An `XREADGROUP` reply: nil when nothing arrived, else one `[key, entries]` pair per stream
/// (an array in RESP2, a map in RESP3). Only one stream is ever asked for.
fn parse_read_reply(value: &Value) -> Result<Vec<RawEntry>, String> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for stream in streams {
                match stream {
                    Value::Array(pair) if pair.len() == 2 => out.extend(parse_entries(&pair[1])?),
                    other => return Err(format!("unexpected stream in read reply: {other:?}")),
                }
            }
            Ok(out)
        }
        Value::Map(streams) => {
            let mut out = Vec::new();
            for (_, entries) in streams {
                out.extend(parse_entries(entries)?);
            }
            Ok(out)
        }
        other => Err(format!("unexpected read reply: {other:?}")),
    }
}

/// A list of entries, each `[id, [field, value, ...]]` or `[id, nil]` when the entry is gone.
/// A bare nil element (Redis 6.2 XAUTOCLAIM for a deleted entry) carries no id and is skipped.
fn parse_entries(value: &Value) -> Result<Vec<RawEntry>, String> {
    let Value::Array(items) = value else {
        return match value {
            Value::Nil => Ok(Vec::new()),
            other => Err(format!("expected a list of entries, got {other:?}")),
        };
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Nil => {}
            Value::Array(parts) if parts.len() == 2 => {
                let id = text(&parts[0])?;
                let fields = match &parts[1] {
                    Value::Nil => None,
                    fields => Some(parse_fields(fields)?),
                };
                out.push((id, fields));
            }
            other => return Err(format!("unexpected entry: {other:?}")),
        }
    }
    Ok(out)
}

/// An entry's fields: a flat `[name, value, ...]` array (or a map in RESP3).
fn parse_fields(value: &Value) -> Result<RawFields, String> {
    let pairs: Vec<(&Value, &Value)> = match value {
        Value::Array(flat) if flat.len() % 2 == 0 => flat
            .chunks_exact(2)
            .map(|pair| (&pair[0], &pair[1]))
            .collect(),
        Value::Map(map) => map.iter().map(|(name, value)| (name, value)).collect(),
        other => return Err(format!("unexpected entry fields: {other:?}")),
    };
    pairs
        .into_iter()
        .map(|(name, value)| match (bytes(name), bytes(value)) {
            (Some(name), Some(value)) => Ok((name, value)),
            _ => Err(format!("unexpected field {name:?} = {value:?}")),
        })
        .collect()
}

/// An `XAUTOCLAIM` reply: `[next cursor, entries]`, plus the ids of trimmed entries it removed
/// from the pending list (Redis 7 and later).
fn parse_autoclaim(value: &Value) -> Result<(String, Vec<RawEntry>, Vec<String>), String> {
    let Value::Array(parts) = value else {
        return Err(format!("unexpected claim reply: {value:?}"));
    };
    let (Some(cursor), Some(entries)) = (parts.first(), parts.get(1)) else {
        return Err(format!("short claim reply: {value:?}"));
    };
    let trimmed = match parts.get(2) {
        Some(Value::Array(ids)) => ids.iter().map(text).collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok((text(cursor)?, parse_entries(entries)?, trimmed))
}

/// An `HSCAN` reply: `[next cursor, [field, value, ...]]`. Fields and values must be UTF-8, as
/// [`RedisBus::map_put`] writes them; anything else was written behind the bus's back and is
/// refused, naming the field, rather than silently altered.
fn parse_scan_reply(value: &Value) -> Result<(String, Vec<(String, String)>), String> {
    let Value::Array(parts) = value else {
        return Err(format!("unexpected scan reply: {value:?}"));
    };
    let [cursor, fields] = parts.as_slice() else {
        return Err(format!("scan reply of {} parts: {value:?}", parts.len()));
    };
    let fields = parse_fields(fields)?
        .into_iter()
        .map(
            |(name, value)| match (String::from_utf8(name), String::from_utf8(value)) {
                (Ok(name), Ok(value)) => Ok((name, value)),
                (Ok(name), Err(_)) => Err(format!(
                    "map field {name:?} holds a value that is not UTF-8"
                )),
                (Err(name), _) => Err(format!(
                    "map field name is not UTF-8: {:?}",
                    String::from_utf8_lossy(name.as_bytes())
                )),
            },
        )
        .collect::<Result<_, _>>()?;
    Ok((text(cursor)?, fields))
}

/// One `XPENDING key group id id 1` reply: `[[id, consumer, idle, deliveries]]`, or empty when the
/// entry is no longer pending.
fn parse_pending_count(value: &Value) -> Option<(String, u64)> {
    let Value::Array(rows) = value else {
        return None;
    };
    let Value::Array(row) = rows.first()? else {
        return None;
    };
    let id = text(row.first()?).ok()?;
    let deliveries = text(row.get(3)?).ok()?.parse().ok()?;
    Some((id, deliveries))
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::{parse_autoclaim, parse_pending_count, parse_read_reply, parse_scan_reply};

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn read_reply_keeps_trimmed_entries_as_none() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("payload"), bulk("{}")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(&reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            (
                "1-0".to_owned(),
                Some(vec![(b"payload".to_vec(), b"{}".to_vec())])
            )
        );
        assert_eq!(entries[1], ("2-0".to_owned(), None));
    }

    #[test]
    fn read_reply_accepts_resp3_maps_and_nil() {
        assert!(parse_read_reply(&Value::Nil).unwrap().is_empty());
        let reply = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Map(vec![(bulk("payload"), bulk("x"))]),
            ])]),
        )]);
        assert_eq!(parse_read_reply(&reply).unwrap().len(), 1);
    }

    #[test]
    fn read_reply_rejects_nonsense() {
        assert!(parse_read_reply(&Value::Int(3)).is_err());
        let odd_fields = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("payload")]),
            ])]),
        ])]);
        assert!(parse_read_reply(&odd_fields).is_err());
    }

    #[test]
    fn autoclaim_reply_with_and_without_deleted_ids() {
        let redis7 = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("payload"), bulk("y")]),
            ])]),
            Value::Array(vec![bulk("1-0")]),
        ]);
        let (cursor, entries, trimmed) = parse_autoclaim(&redis7).unwrap();
        assert_eq!(cursor, "0-0");
        assert_eq!(entries.len(), 1);
        assert_eq!(trimmed, vec!["1-0".to_owned()]);

        let redis62 = Value::Array(vec![bulk("5-0"), Value::Array(vec![Value::Nil])]);
        let (cursor, entries, trimmed) = parse_autoclaim(&redis62).unwrap();
        assert_eq!(cursor, "5-0");
        assert!(entries.is_empty());
        assert!(trimmed.is_empty());
    }

    #[test]
    fn scan_reply_pages_and_refuses_bytes_that_are_not_utf8() {
        let page = Value::Array(vec![
            bulk("17"),
            Value::Array(vec![bulk("lot-1"), bulk("{}"), bulk("lot-2"), bulk("")]),
        ]);
        let (cursor, fields) = parse_scan_reply(&page).unwrap();
        assert_eq!(cursor, "17");
        assert_eq!(
            fields,
            [
                ("lot-1".to_owned(), "{}".to_owned()),
                ("lot-2".to_owned(), String::new())
            ]
        );

        let last = Value::Array(vec![bulk("0"), Value::Array(vec![])]);
        assert_eq!(parse_scan_reply(&last).unwrap(), ("0".to_owned(), vec![]));

        let binary = Value::Array(vec![
            bulk("0"),
            Value::Array(vec![bulk("lot-1"), Value::BulkString(b"\xff".to_vec())]),
        ]);
        let err = parse_scan_reply(&binary).unwrap_err();
        assert!(err.contains("lot-1"), "{err}");
        assert!(parse_scan_reply(&Value::Array(vec![bulk("0")])).is_err());
        assert!(parse_scan_reply(&Value::Nil).is_err());
    }

    #[test]
    fn pending_count_row() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("7-1"),
            bulk("c1"),
            Value::Int(12),
            Value::Int(4),
        ])]);
        assert_eq!(parse_pending_count(&reply), Some(("7-1".to_owned(), 4)));
        assert_eq!(parse_pending_count(&Value::Array(vec![])), None);
    }
}
