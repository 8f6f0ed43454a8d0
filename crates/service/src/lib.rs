//! quantum's services, the async shell around the pure `engine`: configuration ([`config`]) and
//! the execution service ([`execution`]), which owns the task topology of reading intents,
//! talking to the exchange and publishing results, and its shutdown order.

pub mod clock;
pub mod config;
pub mod control;
pub mod dead_man;
pub mod doctor;
mod error;
pub mod execution;
pub mod exit_monitor;
pub mod exposure;
pub mod flatten;
pub mod health;
pub mod metrics;
pub mod monitor_state;
pub mod protection;
pub mod rate_budget;
mod running;
pub mod startup;
pub mod tripwire;

pub use config::{ConfigError, FileConfig, Overrides, Settings};
pub use execution::{start, start_with_bus, Executor, Running, ServiceError};
pub use running::Exit;
