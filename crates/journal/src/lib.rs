//! The trade journal (issue 14): quantum's history. [`consumer::run`] reads the intent, result,
//! position-event and trading-state streams through consumer groups of its own and writes every
//! entry into a [`store::Store`] (SQLite by default, PostgreSQL by URL; one portable schema in
//! `migrations/`). Writes are idempotent, keyed by what names a row on the bus, so a journal
//! rebuilt from the streams equals the one written live. [`report`] holds the pure aggregation
//! and rendering behind `quantum trades` and `quantum pnl`.

pub mod consumer;
pub mod report;
pub mod store;

pub use consumer::{run, DEFAULT_GROUP, STREAMS};
pub use report::{
    parse_since, render_summaries, render_trades, summarize, Format, GroupBy, Summary, Trade,
};
pub use store::{Store, TradeFilter};

/// What can stop the journal or a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The database could not be opened, migrated, written or read.
    #[error("journal database: {0}")]
    Database(String),
    /// The bus refused something waiting cannot fix.
    #[error("journal bus: {0}")]
    Bus(String),
}
