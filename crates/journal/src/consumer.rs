//! The journal's reader: one consumer group of its own (`quantum-journal` by default) on each of
//! the five streams it records (intents, results, position events, protective orders,
//! trading-state changes), so
//! it takes nothing from the services' groups, can run anywhere, and after downtime catches up
//! from where its group stopped (a new group starts at the beginning of each stream).
//!
//! Each entry is written, then acknowledged: a crash in between leaves it pending, and the next
//! start writes it again, which changes nothing (the store's inserts are idempotent). A write
//! that fails is retried (the entry stays unacknowledged) until it succeeds or the journal is
//! stopped. An entry it cannot read is kept in the `unreadable` table with the reason and a
//! WARN; dead-lettering is the business of the stream's own consumer, not of the journal.

use std::time::Duration;

use bus::{keys, Bus, Entry};
use model::{ExecutionResult, PositionEvent, ProtectionEvent, TradeIntent, TradingControl};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::store::Store;
use crate::Error;

/// The journal's consumer group when the configuration names none.
pub const DEFAULT_GROUP: &str = "quantum-journal";

/// The journal's consumer name within its group: one journal per group.
const CONSUMER: &str = "journal";

/// The streams the journal records, in the order it reads them each round.
pub const STREAMS: [&str; 5] = [
    keys::TRADE_INTENT,
    keys::TRADE_EXECUTION_RESULT,
    keys::POSITION_EVENTS,
    keys::PROTECTION_EVENTS,
    keys::CONTROL_LOG,
];

/// Entries taken per stream per read.
const BATCH: usize = 200;

/// How long to wait after a round that found nothing new, or after a failure.
const IDLE: Duration = Duration::from_millis(250);
const RETRY: Duration = Duration::from_secs(1);

/// Reads the streams into `store` until `shutdown` is cancelled. Returns an error only for what
/// waiting cannot fix (the bus refusing the group for good, a protocol error).
pub async fn run(
    bus: Bus,
    store: Store,
    group: String,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let group = group.as_str();
    for stream in STREAMS {
        ensure_group(&bus, stream, group, &shutdown).await?;
    }
    // What was delivered to this consumer before a crash and not acknowledged comes first.
    for stream in STREAMS {
        let pending = retry(&shutdown, "read pending entries", || {
            bus.pending_for(stream, group, CONSUMER)
        })
        .await?;
        let Some(pending) = pending else {
            return Ok(());
        };
        if !pending.is_empty() {
            info!(
                "journal: {} entries of {stream} were pending, writing them again",
                pending.len()
            );
        }
        for entry in pending {
            if !record(&bus, &store, stream, group, &entry, &shutdown).await? {
                return Ok(());
            }
        }
    }
    info!("journal: recording {} into its store", STREAMS.join(", "));
    while !shutdown.is_cancelled() {
        let mut found = false;
        for stream in STREAMS {
            let entries = match bus
                .read(stream, group, CONSUMER, BATCH, Duration::ZERO)
                .await
            {
                Ok(entries) => entries,
                Err(bus::Error::NoGroup { .. }) => {
                    warn!("journal: the group {group} of {stream} is gone (Redis restarted?); creating it again");
                    ensure_group(&bus, stream, group, &shutdown).await?;
                    continue;
                }
                Err(e @ bus::Error::Unavailable { .. }) => {
                    warn!("journal: cannot read {stream}: {e}; retrying");
                    pause(&shutdown, RETRY).await;
                    continue;
                }
                Err(e) => return Err(Error::Bus(e.to_string())),
            };
            found |= !entries.is_empty();
            for entry in entries {
                if !record(&bus, &store, stream, group, &entry, &shutdown).await? {
                    return Ok(());
                }
            }
        }
        if !found {
            pause(&shutdown, IDLE).await;
        }
    }
    Ok(())
}

/// Writes one entry and acknowledges it. Returns false when stopped before it was written.
async fn record(
    bus: &Bus,
    store: &Store,
    stream: &str,
    group: &str,
    entry: &Entry,
    shutdown: &CancellationToken,
) -> Result<bool, Error> {
    loop {
        match write(store, stream, entry).await {
            Ok(()) => break,
            Err(e) => {
                error!(
                    "journal: cannot record entry {} of {stream}: {e}; retrying",
                    entry.id
                );
                if !pause(shutdown, RETRY).await {
                    return Ok(false);
                }
            }
        }
    }
    let acked = retry(shutdown, "acknowledge an entry", || {
        bus.ack(stream, group, &entry.id)
    })
    .await?;
    Ok(acked.is_some())
}

/// The entry into its table; what cannot be read goes to `unreadable`.
async fn write(store: &Store, stream: &str, entry: &Entry) -> Result<(), Error> {
    let published_at = entry.published_ms().unwrap_or(0);
    let payload = match &entry.payload {
        Ok(payload) => payload.as_str(),
        Err(malformed) => {
            warn!(
                "journal: entry {} of {stream} has no payload ({})",
                entry.id,
                malformed.describe()
            );
            return store
                .insert_unreadable(stream, &entry.id, malformed.describe(), None)
                .await;
        }
    };
    let unreadable = |reason: String| async move {
        warn!(
            "journal: entry {} of {stream} is not readable: {reason}",
            entry.id
        );
        store
            .insert_unreadable(stream, &entry.id, &reason, Some(payload))
            .await
    };
    match stream {
        // Every intent is kept, a refused one too (with what could be read of it: nothing).
        keys::TRADE_INTENT => {
            let intent = TradeIntent::from_json(payload).ok();
            store
                .insert_intent(&entry.id, published_at, intent.as_ref(), payload)
                .await
        }
        keys::TRADE_EXECUTION_RESULT => match ExecutionResult::from_json(payload) {
            Ok(result) => {
                store
                    .insert_result(&entry.id, published_at, &result, payload)
                    .await
            }
            Err(e) => unreadable(e.to_string()).await,
        },
        keys::POSITION_EVENTS => match PositionEvent::from_json(payload) {
            Ok(event) => store.insert_position_event(&entry.id, &event).await,
            Err(e) => unreadable(e.to_string()).await,
        },
        keys::PROTECTION_EVENTS => match ProtectionEvent::from_json(payload) {
            Ok(event) => store.insert_protection(&entry.id, &event).await,
            Err(e) => unreadable(e.to_string()).await,
        },
        keys::CONTROL_LOG => match TradingControl::from_json(payload) {
            Ok(control) => store.insert_trading_state(&entry.id, &control).await,
            Err(e) => unreadable(e.to_string()).await,
        },
        other => Err(Error::Bus(format!("the journal does not record {other}"))),
    }
}

async fn ensure_group(
    bus: &Bus,
    stream: &str,
    group: &str,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    retry(shutdown, "create the journal's consumer group", || {
        bus.ensure_group(stream, group)
    })
    .await
    .map(drop)
}

/// Runs a bus call until it succeeds, waiting out an unavailable bus; `None` when stopped first.
async fn retry<T, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut call: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, bus::Error>>,
{
    loop {
        match call().await {
            Ok(value) => return Ok(Some(value)),
            Err(e @ bus::Error::Unavailable { .. }) => {
                warn!("journal: cannot {what}: {e}; retrying");
                if !pause(shutdown, RETRY).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(Error::Bus(format!("cannot {what}: {e}"))),
        }
    }
}

/// Waits `duration`; false when stopped meanwhile.
async fn pause(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}
