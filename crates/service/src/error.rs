//! Why a service stopped: the one error type the services' tasks end with, split by the
//! boundary that failed (the bus or the exchange), so a supervisor can tell which to wait for.

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("bus: {0}")]
    Bus(#[from] bus::Error),
    #[error("exchange: {0}")]
    Exchange(#[from] binance::Error),
    /// The trade journal (its own crate) stopped: what it said.
    #[error("{0}")]
    Journal(String),
}
