//! quantum's decisions, pure and synchronous. Nothing here does I/O, spawns a task or reads a
//! clock: time, prices and exchange reports come in as arguments, decisions go out as values.
//! The same code therefore serves the live service, the tests and replays.
//!
//! Modules in the order an intent flows through them: [`sizing`] (how many contracts, rounded to
//! the symbol's filters), [`risk`] (allowed or refused; an approval is a type only this crate can
//! make), [`confirm`] (exchange reports in, a confirmed outcome out), and for open positions
//! [`exits`] (mark price in, take-profit / stop-loss / trailing trigger out) and [`monitor`] (the
//! exit monitor's state machine: lots, closes in flight with deadlines, protection, alarms).

pub mod confirm;
pub mod exits;
pub mod monitor;
pub mod risk;
pub mod sizing;

pub use confirm::{Outcome, Report, ReportSource, Tracker, TradeReport};
pub use risk::{OrderPlan, RiskApproved, RiskLimits, RiskRefused};
pub use sizing::{size_order, SizingError, SymbolRules};
