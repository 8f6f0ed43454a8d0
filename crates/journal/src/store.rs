//! The journal's database: SQLite (a file, the default) or PostgreSQL, chosen by the URL's scheme
//! through sqlx's `any` driver, with one portable schema (`migrations/`, embedded in the binary
//! and applied on open). The only SQL of the crate is here.
//!
//! Every write is an `INSERT ... ON CONFLICT DO NOTHING` keyed by what names the row on the bus
//! (a stream entry id, or the lot for a lot's events), so writing an entry twice, or reading a
//! whole stream again into the same database, changes nothing. Decimals are stored as their
//! exact text and read back with `Decimal::from_str`; no float is ever involved.

use std::borrow::Cow;
use std::str::FromStr;

use model::{
    Direction, EventKind, ExecutionResult, ExitReason, PositionEvent, PositionSide, ProtectionEvent,
};
use model::{TradeIntent, TradingControl};
use rust_decimal::Decimal;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Row};

use crate::report::Trade;
use crate::Error;

/// The schema, applied in order on open. A change to the schema is a new file here, never an
/// edit of an applied one (sqlx refuses a migration whose checksum changed).
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "journal", include_str!("../migrations/0001_journal.sql"))];

/// The embedded migrations as sqlx's migrator wants them.
#[derive(Debug)]
struct Embedded;

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>>
                + Send,
        >,
    > {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// An open journal database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

/// Which rows to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TradeFilter {
    /// Only trades closed at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    pub symbol: Option<String>,
}

impl Store {
    /// Opens (creating a SQLite file when missing) and migrates the database at `url`:
    /// `sqlite://<path>`, `sqlite::memory:` or `postgres://user@host/db`.
    pub async fn open(url: &str) -> Result<Store, Error> {
        Store::open_with(url, true).await
    }

    /// Opens an existing journal for the reports: a SQLite file that is not there is an error
    /// (a mistyped path must not report "no trades" from a fresh empty file).
    pub async fn open_existing(url: &str) -> Result<Store, Error> {
        Store::open_with(url, false).await
    }

    async fn open_with(url: &str, create: bool) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let url = if sqlite && !url.contains("mode=") && !url.contains(":memory:") {
            let separator = if url.contains('?') { '&' } else { '?' };
            let mode = if create { "rwc" } else { "rw" };
            format!("{url}{separator}mode={mode}")
        } else {
            url.to_string()
        };
        // SQLite takes one writer at a time: one connection avoids "database is locked"
        // between the journal's stream readers (they take turns, which is all it could do).
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 4 })
            .connect(&url)
            .await
            .map_err(|e| Error::Database(format!("cannot open {}: {e}", redact(&url))))?;
        let migrator = Migrator::new(Embedded)
            .await
            .map_err(|e| Error::Database(format!("cannot read the journal's migrations: {e}")))?;
        migrator
            .run(&pool)
            .await
            .map_err(|e| Error::Database(format!("cannot migrate {}: {e}", redact(&url))))?;
        Ok(Store { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn insert_intent(
        &self,
        entry_id: &str,
        published_at: i64,
        intent: Option<&TradeIntent>,
        payload: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO intents (entry_id, published_at, intent_id, symbol, action, position_side, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(entry_id)
        .bind(published_at)
        .bind(intent.map(|i| i.intent_id.as_str().to_string()))
        .bind(intent.map(|i| i.symbol.as_str().to_string()))
        .bind(intent.map(|i| i.action.as_str().to_string()))
        .bind(intent.and_then(|i| i.position_side).map(|s| s.as_str().to_string()))
        .bind(payload)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(write_error)
    }

    pub async fn insert_result(
        &self,
        entry_id: &str,
        published_at: i64,
        result: &ExecutionResult,
        payload: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO results (entry_id, published_at, intent_id, symbol, action, position_side, status, \
             order_id, client_order_id, executed_qty, avg_price, commission, commission_asset, confirmed_by, \
             error, payload) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT DO NOTHING",
        )
        .bind(entry_id)
        .bind(published_at)
        .bind(result.intent_id_str().to_string())
        .bind(result.symbol().map_or("", |s| s.as_str()).to_string())
        .bind(result.action().map_or("", |a| a.as_str()).to_string())
        .bind(result.position_side().map(|s| s.as_str().to_string()))
        .bind(result.status().as_str().to_string())
        .bind(result.order_id())
        .bind(result.client_order_id().map(str::to_string))
        .bind(result.executed_qty().to_string())
        .bind(result.entry_price().to_string())
        .bind(result.commission().map(|c| c.to_string()))
        .bind(result.commission_asset().to_string())
        .bind(result.confirmed_by().map(|c| c.as_str().to_string()))
        .bind(result.error().map(str::to_string))
        .bind(payload)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(write_error)
    }

    /// A lot opened or adopted goes to `lots`; a lot closed or exited, or a part of it that
    /// left, to `exits`; an event already recorded is ignored.
    pub async fn insert_position_event(
        &self,
        entry_id: &str,
        event: &PositionEvent,
    ) -> Result<(), Error> {
        let query = match event.kind {
            EventKind::Opened | EventKind::Adopted => sqlx::query(
                "INSERT INTO lots (lot_id, entry_id, kind, symbol, position_side, direction, qty, \
                 entry_price, opened_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            )
            .bind(event.lot_id.clone())
            .bind(entry_id.to_string())
            .bind(event.kind.as_str().to_string())
            .bind(event.symbol.clone())
            .bind(event.position_side.as_str().to_string())
            .bind(event.direction.as_str().to_string())
            .bind(event.qty.to_string())
            .bind(event.entry_price.to_string())
            .bind(event.opened_at),
            EventKind::Closed | EventKind::Exited | EventKind::Reduced => sqlx::query(
                "INSERT INTO exits (exit_key, lot_id, entry_id, kind, symbol, position_side, direction, qty, \
                 entry_price, exit_price, reason, why, realized_pnl, fees, opened_at, closed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT DO NOTHING",
            )
            .bind(match event.kind {
                EventKind::Reduced => event.key(),
                _ => event.lot_id.clone(),
            })
            .bind(event.lot_id.clone())
            .bind(entry_id.to_string())
            .bind(event.kind.as_str().to_string())
            .bind(event.symbol.clone())
            .bind(event.position_side.as_str().to_string())
            .bind(event.direction.as_str().to_string())
            .bind(event.qty.to_string())
            .bind(event.entry_price.to_string())
            .bind(event.exit_price.map(|p| p.to_string()))
            .bind(
                event
                    .reason
                    .map_or(ExitReason::Close, |r| r)
                    .as_str()
                    .to_string(),
            )
            .bind(event.why.clone())
            .bind(event.realized_pnl.map(|p| p.to_string()))
            .bind(event.fees.map(|f| f.to_string()))
            .bind(event.opened_at)
            .bind(event.at),
        };
        query
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(write_error)
    }

    pub async fn insert_protection(
        &self,
        entry_id: &str,
        event: &ProtectionEvent,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO protective_orders (client_algo_id, action, entry_id, kind, symbol, position_side, \
             algo_id, trigger_price, at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(event.client_algo_id.as_str())
        .bind(event.action.as_str())
        .bind(entry_id)
        .bind(event.kind.as_str())
        .bind(event.symbol.as_str())
        .bind(event.position_side.as_str())
        .bind(event.algo_id)
        .bind(event.trigger_price.map(|p| p.to_string()))
        .bind(event.at)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(write_error)
    }

    pub async fn insert_trading_state(
        &self,
        entry_id: &str,
        control: &TradingControl,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO trading_state (entry_id, state, set_by, reason, at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(entry_id)
        .bind(control.state.as_str())
        .bind(control.by.as_str())
        .bind(control.reason.as_str())
        .bind(control.at_ms)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(write_error)
    }

    /// An entry the journal cannot read, kept with why.
    pub async fn insert_unreadable(
        &self,
        stream: &str,
        entry_id: &str,
        reason: &str,
        payload: Option<&str>,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO unreadable (stream, entry_id, reason, payload) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(stream)
        .bind(entry_id)
        .bind(reason)
        .bind(payload.map(str::to_string))
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(write_error)
    }

    /// The trades (a lot's exits together), in the order their last part closed.
    pub async fn trades(&self, filter: &TradeFilter) -> Result<Vec<Trade>, Error> {
        Ok(crate::report::merge_parts(self.exit_parts(filter).await?))
    }

    /// Every exit row (whole lots and parts), oldest first.
    pub async fn exit_parts(&self, filter: &TradeFilter) -> Result<Vec<Trade>, Error> {
        let rows = sqlx::query(
            "SELECT lot_id, symbol, position_side, direction, qty, entry_price, exit_price, reason, \
             realized_pnl, fees, opened_at, closed_at FROM exits \
             WHERE closed_at >= $1 AND ($2 = '' OR symbol = $2) ORDER BY closed_at, exit_key",
        )
        .bind(filter.since_ms.unwrap_or(i64::MIN))
        .bind(filter.symbol.clone().unwrap_or_default())
        .fetch_all(&self.pool)
        .await
        .map_err(read_error)?;
        rows.iter().map(trade_of).collect()
    }

    /// Every row of every table, each as one line of text, in key order: what the replay tests
    /// compare (two journals of the same streams are equal when these are).
    pub async fn dump(&self) -> Result<Vec<String>, Error> {
        let mut lines = Vec::new();
        let tables = [
            ("intents", "entry_id, published_at, intent_id, symbol, action, position_side, payload", "entry_id"),
            ("results", "entry_id, published_at, intent_id, symbol, action, position_side, status, order_id, client_order_id, executed_qty, avg_price, commission, commission_asset, confirmed_by, error, payload", "entry_id"),
            ("lots", "lot_id, entry_id, kind, symbol, position_side, direction, qty, entry_price, opened_at", "lot_id"),
            ("exits", "exit_key, lot_id, entry_id, kind, symbol, position_side, direction, qty, entry_price, exit_price, reason, why, realized_pnl, fees, opened_at, closed_at", "exit_key"),
            ("protective_orders", "client_algo_id, action, entry_id, kind, symbol, position_side, algo_id, trigger_price, at_ms", "client_algo_id, action"),
            ("trading_state", "entry_id, state, set_by, reason, at_ms", "entry_id"),
            ("unreadable", "stream, entry_id, reason, payload", "stream, entry_id"),
        ];
        for (table, columns, order) in tables {
            // Every column as text, so one reader serves every table on both databases.
            let select: Vec<String> = columns
                .split(", ")
                .map(|c| format!("CAST({c} AS TEXT)"))
                .collect();
            let sql = format!("SELECT {} FROM {table} ORDER BY {order}", select.join(", "));
            let rows = sqlx::query(&sql)
                .fetch_all(&self.pool)
                .await
                .map_err(read_error)?;
            for row in rows {
                let mut fields = vec![table.to_string()];
                for i in 0..row.len() {
                    let value: Option<String> = row.try_get(i).map_err(read_error)?;
                    fields.push(value.unwrap_or_else(|| "NULL".into()));
                }
                lines.push(fields.join("|"));
            }
        }
        Ok(lines)
    }
}

fn trade_of(row: &AnyRow) -> Result<Trade, Error> {
    let text = |name: &str| -> Result<String, Error> { row.try_get(name).map_err(read_error) };
    let optional =
        |name: &str| -> Result<Option<String>, Error> { row.try_get(name).map_err(read_error) };
    let decimal = |name: &str, value: String| -> Result<Decimal, Error> {
        Decimal::from_str(&value)
            .map_err(|e| Error::Database(format!("exits.{name} {value:?} is not a decimal: {e}")))
    };
    let optional_decimal = |name: &str| -> Result<Option<Decimal>, Error> {
        optional(name)?.map(|v| decimal(name, v)).transpose()
    };
    let side = text("position_side")?;
    let direction = text("direction")?;
    let reason = text("reason")?;
    Ok(Trade {
        lot_id: text("lot_id")?,
        symbol: text("symbol")?,
        position_side: PositionSide::parse(&side)
            .ok_or_else(|| Error::Database(format!("exits.position_side {side:?}")))?,
        direction: Direction::parse(&direction)
            .ok_or_else(|| Error::Database(format!("exits.direction {direction:?}")))?,
        qty: decimal("qty", text("qty")?)?,
        entry_price: decimal("entry_price", text("entry_price")?)?,
        exit_price: optional_decimal("exit_price")?,
        reason: ExitReason::parse(&reason)
            .ok_or_else(|| Error::Database(format!("exits.reason {reason:?}")))?,
        realized_pnl: optional_decimal("realized_pnl")?,
        fees: optional_decimal("fees")?,
        opened_at: row.try_get("opened_at").map_err(read_error)?,
        closed_at: row.try_get("closed_at").map_err(read_error)?,
        parts: 1,
    })
}

fn write_error(e: sqlx::Error) -> Error {
    Error::Database(format!("cannot write to the journal: {e}"))
}

fn read_error(e: sqlx::Error) -> Error {
    Error::Database(format!("cannot read the journal: {e}"))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            super::redact("postgres://q:secret@db:5432/journal"),
            "postgres://q:***@db:5432/journal"
        );
        assert_eq!(
            super::redact("sqlite://quantum-journal.db"),
            "sqlite://quantum-journal.db"
        );
    }
}
