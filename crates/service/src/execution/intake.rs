//! One bus entry, start to ack: size limit, decoding, the claim through the progress record,
//! duplicates (same intent twice, same id with other content), expiry, dead letters, and the
//! atomic publication of the result with its progress record.

use std::time::Duration;

use bus::{keys, Entry};
use model::{ExecutionResult, ResultStatus, TradeIntent};
use tracing::{debug, error, info, warn};

use crate::clock::now_ms;
use crate::metrics;

use super::progress::Progress;

use super::progress::PROGRESS_TTL;
use super::{Executor, InFlight};

/// Intents larger than this are refused unread (a real intent is a few hundred bytes).
const MAX_INTENT_BYTES: usize = 64 * 1024;
/// Reasons quoted in logs and results are cut to this many characters.
const MAX_REASON_CHARS: usize = 500;

/// `text` cut to about `max` characters, saying how much was left out. The end is kept as well
/// as the start: a reason quoting a huge value says what is wrong with it after the quote
/// (`intent_id "yyyy..." must be 1 to 128 printable characters`), and cutting only the end left
/// a reason that did not say why.
fn clip(text: &str, max: usize) -> String {
    let chars = text.chars().count();
    if chars <= max {
        return text.to_string();
    }
    let tail = max / 5;
    let byte_at = |n: usize| text.char_indices().nth(n).map_or(text.len(), |(at, _)| at);
    let (head_end, tail_start) = (byte_at(max - tail), byte_at(chars - tail));
    format!(
        "{} ... ({} of {} bytes left out) ... {}",
        &text[..head_end],
        tail_start - head_end,
        text.len(),
        &text[tail_start..]
    )
}

impl Executor {
    /// One bus entry, start to ack. Bus errors leave the entry pending (it is retried).
    pub(super) async fn handle(&self, entry: Entry) {
        if let Err(e) = self.handle_inner(&entry).await {
            error!("intent entry {}: {e}; left pending for a retry", entry.id);
        }
    }

    pub(super) async fn handle_inner(&self, entry: &Entry) -> Result<(), bus::Error> {
        metrics::global().intents_received.get().inc();
        let raw = match &entry.payload {
            Ok(raw) if raw.len() > MAX_INTENT_BYTES => {
                // Refused without being validated, and not copied into the log or the result
                // (only its id is read, so the sender can match the refusal).
                let reason = format!(
                    "intent payload of {} bytes is larger than the {MAX_INTENT_BYTES} allowed; refused",
                    raw.len()
                );
                return self.reject_input(entry, raw, &reason).await;
            }
            Ok(raw) => raw.clone(),
            Err(malformed) => {
                let reason = format!("bad intent entry: {}", malformed.describe());
                return self.reject_input(entry, "", &reason).await;
            }
        };
        let intent = match TradeIntent::from_json(&raw) {
            Ok(intent) => intent,
            Err(e) => {
                return self
                    .reject_input(entry, &raw, &format!("invalid intent: {e}"))
                    .await
            }
        };
        let intent = match self.for_account(intent) {
            Ok(intent) => intent,
            Err(reason) => {
                return self
                    .reject_input(
                        entry,
                        &raw,
                        &format!("intent not for this account: {reason}"),
                    )
                    .await
            }
        };
        let key = keys::progress(intent.intent_id.as_str());
        let me = self.exec().consumer_name.clone();
        // Two entries of one intent in this process: the second waits for the first's result.
        let intent_key = format!("intent:{}", intent.intent_id);
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(intent_key.clone())
        {
            return self
                .wait_for_result(&intent, entry, &key, "this instance")
                .await;
        }
        let _working = InFlight(self.in_flight.clone(), intent_key);
        self.work_on(entry, &intent, &key, &me).await
    }

    pub(super) async fn work_on(
        &self,
        entry: &Entry,
        intent: &TradeIntent,
        key: &str,
        me: &str,
    ) -> Result<(), bus::Error> {
        let group = &self.exec().consumer_group;
        let me = me.to_string();
        let state = self.bus.progress_get(key).await?;
        // Never worked on by anyone and delivered once: no order can exist for it, so none is
        // looked up (one exchange request less per intent). A redelivery, a claim, or an intent
        // with a progress record is always looked up first.
        let fresh = state.is_none() && entry.deliveries <= 1;
        let digest_key = format!("{key}:digest");
        // Seen before: the same intent redelivered, or another one reusing its id?
        if state.is_some() && self.refuse_if_reused(entry, intent, key).await? {
            return Ok(());
        }
        match state.as_deref().map(Progress::parse) {
            Some(Progress::Published) => {
                info!(
                    "intent {} already has its result; acking the duplicate entry {}",
                    intent.intent_id, entry.id
                );
                self.bus.ack(keys::TRADE_INTENT, group, &entry.id).await?;
                return Ok(());
            }
            Some(Progress::Working { owner, at })
                if owner != me && now_ms() - at < self.claim_idle_ms() =>
            {
                // Another instance is alive and working on this intent (its heartbeat is fresh).
                self.wait_for_result(intent, entry, key, &owner).await?;
                return Ok(());
            }
            Some(Progress::Working { owner, .. }) => {
                info!(
                    "intent {} was left unfinished by {owner} (delivery {}); taking it over and asking the exchange first",
                    intent.intent_id, entry.deliveries
                );
                self.bus
                    .progress_set(key, &Progress::working(&me), PROGRESS_TTL)
                    .await?;
            }
            None => {
                if !self
                    .bus
                    .progress_set_if_absent(key, &Progress::working(&me), PROGRESS_TTL)
                    .await?
                {
                    // Another entry with the same intent got there first, an instant ago.
                    self.wait_for_result(intent, entry, key, "another entry")
                        .await?;
                    return Ok(());
                }
                self.bus
                    .progress_set(&digest_key, &intent.fingerprint(), PROGRESS_TTL)
                    .await?;
                // Never worked on: too old to execute? (Once worked on, an order may exist, so a
                // redelivery is always looked up and finished, whatever its age.)
                if let Some(reason) = self.too_old(intent, entry, now_ms()) {
                    warn!("intent {} expired: {reason}", intent.intent_id);
                    let result = ExecutionResult::without_fill(
                        intent,
                        None,
                        ResultStatus::Expired,
                        None,
                        reason,
                        now_ms(),
                    );
                    return self.finish(entry, key, &me, &result).await;
                }
            }
        }
        info!(
            "intent {} received: {} {} size_usd={} qty={} leverage={}",
            intent.intent_id,
            intent.action.as_str(),
            intent.symbol,
            intent
                .position_size_usd
                .map_or("-".into(), |d| d.to_string()),
            intent.quantity.map_or("-".into(), |d| d.to_string()),
            intent.leverage.map_or("-".into(), |l| l.to_string()),
        );
        let act_by = self.act_by(intent, entry);
        let Some(result) = self.execute(intent, key, fresh, act_by).await else {
            // Stopping, and nothing was sent for it: not acked, so the next start (or another
            // instance, once this one's heartbeat is stale) finishes it.
            return Ok(());
        };
        if result.status() == ResultStatus::Rejected && result.order_id().is_none() {
            self.bus
                .dead_letter(
                    keys::TRADE_INTENT,
                    entry,
                    result.error().unwrap_or("rejected"),
                )
                .await?;
            metrics::global()
                .dead_letters
                .get_or_create(&metrics::DeadLetterLabels {
                    stream: metrics::DeadLetterStream::TradeIntent,
                })
                .inc();
        }
        self.finish(entry, key, &me, &result).await
    }

    /// Publishes the intent's result, marks it published and acks its entry.
    pub(super) async fn finish(
        &self,
        entry: &Entry,
        key: &str,
        me: &str,
        result: &ExecutionResult,
    ) -> Result<(), bus::Error> {
        let done = Progress::published(me, result);
        // The result and the record that says it was published go together (one transaction):
        // a crash or a Redis restart between them cannot leave a result whose intent would be
        // executed and published again.
        self.publish(result, Some((key, &done))).await?;
        self.bus
            .ack(keys::TRADE_INTENT, &self.exec().consumer_group, &entry.id)
            .await?;
        Ok(())
    }

    /// Refuses `intent` when its id was first used by an intent with other content (the digest
    /// kept next to the first one's progress record): a WARN, a dead letter and the ack. True
    /// when it was refused. Checked wherever a second entry of an id ends up, including the one
    /// that waited for the first one's result while both were in flight.
    async fn refuse_if_reused(
        &self,
        entry: &Entry,
        intent: &TradeIntent,
        key: &str,
    ) -> Result<bool, bus::Error> {
        let Some(digest) = self.bus.progress_get(&format!("{key}:digest")).await? else {
            return Ok(false);
        };
        if digest == intent.fingerprint() {
            return Ok(false);
        }
        let reason = format!(
            "intent_id {} was already used by an intent with different content; this one is not executed (the first one's result stands)",
            intent.intent_id
        );
        warn!("intent entry {} refused: {reason}", entry.id);
        self.bus
            .dead_letter(keys::TRADE_INTENT, entry, &reason)
            .await?;
        metrics::global()
            .dead_letters
            .get_or_create(&metrics::DeadLetterLabels {
                stream: metrics::DeadLetterStream::TradeIntent,
            })
            .inc();
        self.bus
            .ack(keys::TRADE_INTENT, &self.exec().consumer_group, &entry.id)
            .await?;
        Ok(true)
    }

    /// When the intent was born, for its age, and by what: its `created_at`, else its
    /// publication on the stream, whichever is earlier. A `created_at` later than the entry
    /// (a clock ahead, microseconds for milliseconds) cannot make it younger than its entry:
    /// taken as given, it let a stale intent be executed a minute late.
    fn born(intent: &TradeIntent, entry: &Entry) -> Option<(i64, &'static str)> {
        match (intent.created_at, entry.published_ms()) {
            (Some(created), Some(published)) if published < created => Some((
                published,
                "its publication on the stream (its created_at is later)",
            )),
            (Some(created), _) => Some((created, "created_at")),
            (None, published) => published.map(|p| (p, "its publication on the stream")),
        }
    }

    /// When the intent's order must have been sent by (ms since the epoch): its own
    /// `expires_at`, or `max_age` after its birth (see [`Executor::born`]), whichever comes
    /// first. `None` when it has no lifetime (`max_age` 0, no `expires_at`): then it waits for
    /// the exchange as long as it takes.
    pub(super) fn act_by(&self, intent: &TradeIntent, entry: &Entry) -> Option<i64> {
        let max_age = i64::try_from(self.exec().max_age.as_millis()).unwrap_or(i64::MAX);
        let by_age = (max_age > 0)
            .then(|| Self::born(intent, entry))
            .flatten()
            .map(|(born, _)| born.saturating_add(max_age));
        match (intent.expires_at, by_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Why the intent is too old to execute at `now`, if it is: past its own `expires_at`, or
    /// older than `max_age` since its birth (see [`Executor::born`]).
    pub(super) fn too_old(&self, intent: &TradeIntent, entry: &Entry, now: i64) -> Option<String> {
        if let Some(expires_at) = intent.expires_at.filter(|t| now > *t) {
            return Some(format!(
                "its expires_at {expires_at} passed {} ms ago; nothing was sent",
                now - expires_at
            ));
        }
        let max_age = i64::try_from(self.exec().max_age.as_millis()).unwrap_or(i64::MAX);
        self.act_by(intent, entry).filter(|by| now > *by)?;
        let (born, from) = Self::born(intent, entry)?;
        Some(format!(
            "it is {} ms old by {from}, more than execution.max_age ({max_age} ms); nothing was sent",
            now.saturating_sub(born)
        ))
    }

    pub(super) fn claim_idle_ms(&self) -> i64 {
        i64::try_from(self.exec().claim_idle.as_millis()).unwrap_or(i64::MAX)
    }

    /// A duplicate of an intent someone else is working on: wait for its result rather than
    /// trading twice, then ack this entry.
    pub(super) async fn wait_for_result(
        &self,
        intent: &TradeIntent,
        entry: &Entry,
        key: &str,
        owner: &str,
    ) -> Result<(), bus::Error> {
        warn!(
            "intent {} is already in progress ({owner}); entry {} is a duplicate, waiting for its result",
            intent.intent_id, entry.id
        );
        let deadline =
            tokio::time::Instant::now() + self.exec().fill_timeout + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if matches!(
                self.bus
                    .progress_get(key)
                    .await?
                    .as_deref()
                    .map(Progress::parse),
                Some(Progress::Published)
            ) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The first one is done: was this really the same intent?
        if self.refuse_if_reused(entry, intent, key).await? {
            return Ok(());
        }
        self.bus
            .ack(keys::TRADE_INTENT, &self.exec().consumer_group, &entry.id)
            .await?;
        Ok(())
    }

    pub(super) async fn reject_input(
        &self,
        entry: &Entry,
        raw: &str,
        reason: &str,
    ) -> Result<(), bus::Error> {
        // A reason quotes the value at fault, which may be huge: the log and the result get the
        // start of it (the dead letter keeps the entry whole).
        let reason = clip(reason, MAX_REASON_CHARS);
        let reason = reason.as_str();
        warn!("intent entry {} rejected: {reason}", entry.id);
        self.bus
            .dead_letter(keys::TRADE_INTENT, entry, reason)
            .await?;
        metrics::global()
            .dead_letters
            .get_or_create(&metrics::DeadLetterLabels {
                stream: metrics::DeadLetterStream::TradeIntent,
            })
            .inc();
        self.publish(
            &ExecutionResult::rejected_input(raw, reason, now_ms()),
            None,
        )
        .await?;
        self.bus
            .ack(keys::TRADE_INTENT, &self.exec().consumer_group, &entry.id)
            .await?;
        Ok(())
    }

    /// Publishes a result; with `progress`, sets that progress record in the same transaction.
    pub(super) async fn publish(
        &self,
        result: &ExecutionResult,
        progress: Option<(&str, &str)>,
    ) -> Result<(), bus::Error> {
        let mut result = result.clone();
        result.stamp_published(now_ms());
        let payload = result.to_json().to_string();
        match progress {
            Some((key, value)) => {
                self.bus
                    .publish_and_set(
                        keys::TRADE_EXECUTION_RESULT,
                        &payload,
                        key,
                        value,
                        PROGRESS_TTL,
                    )
                    .await?
            }
            None => {
                self.bus
                    .publish(keys::TRADE_EXECUTION_RESULT, &payload)
                    .await?
            }
        };
        metrics::global()
            .results
            .get_or_create(&metrics::StatusLabels {
                status: result.status(),
            })
            .inc();
        if matches!(
            result.status(),
            ResultStatus::Failed | ResultStatus::Timeout
        ) {
            let tripped = self
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(now_ms());
            if tripped {
                let e = self.exec();
                let reason = format!(
                    "{} failed or timed-out results within {}",
                    e.tripwire_failures,
                    humantime::format_duration(e.tripwire_window)
                );
                crate::tripwire::trip(&self.bus, "failures", &reason).await;
            }
        }
        debug!(
            "result for intent {} published: {}",
            result.intent_id_str(),
            result.status().as_str()
        );
        Ok(())
    }
}
