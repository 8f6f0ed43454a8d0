//! The bus's one error type, split by what the caller does next: wait and retry
//! ([`Error::Unavailable`]), recreate the consumer group ([`Error::NoGroup`]), or stop and tell a
//! human ([`Error::Protocol`], [`Error::Config`]). An entry that cannot be understood is not an
//! error at all: it comes back as an [`crate::Entry`] whose payload is a [`crate::Malformed`], so
//! one bad entry never fails a whole read.

/// What went wrong talking to the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis could not be reached, dropped the connection, is still loading, or did not answer
    /// within the timeout. Nothing was learned about the command's effect: retry later, and make
    /// the retry safe (a publish may have happened; an ack may be repeated harmlessly).
    #[error("bus unavailable during {op}: {detail}")]
    Unavailable { op: &'static str, detail: String },
    /// The consumer group (or its stream) does not exist, typically because Redis restarted
    /// without persistence. Call [`crate::Bus::ensure_group`] and read again.
    #[error("consumer group {group:?} does not exist on stream {stream:?}")]
    NoGroup { stream: String, group: String },
    /// Redis refused the command or answered in a shape this crate does not understand (wrong key
    /// type, bad id, authentication failure). Retrying will not help.
    #[error("bus protocol error during {op}: {detail}")]
    Protocol { op: &'static str, detail: String },
    /// The configuration cannot work (for example an unparsable URL).
    #[error("invalid bus configuration: {0}")]
    Config(String),
}

impl Error {
    /// True when waiting and trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
