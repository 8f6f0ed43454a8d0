//! How to reach the bus: the Redis URL, how long the streams may grow, and how long one command
//! may take. The service builds this from its own config file; this crate reads no files.

use std::fmt;
use std::time::Duration;

/// Settings of the Redis bus. `Config::default()` talks to a local Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// `redis://[user:password@]host:port[/db]`. It may hold a password, so `Debug` redacts it.
    pub url: String,
    /// Approximate upper bound of every stream's length (`XADD ... MAXLEN ~ max_len`). Redis trims
    /// whole internal nodes only, so a stream can exceed this by up to one node (100 entries by
    /// default); the in-memory bus trims exactly.
    pub max_len: usize,
    /// Longest wait for one command (or for a connection) before the call fails with
    /// [`crate::Error::Unavailable`]. Blocking reads get their block time on top of this.
    pub op_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: "redis://127.0.0.1:6379".to_owned(),
            max_len: 100_000,
            op_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// The URL with any password replaced by `***`, for logs and `Debug`.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut parsed) if parsed.password().is_some() => {
                // Setting a password only fails for URLs that cannot carry one, and this one did.
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            Ok(_) => self.url.clone(),
            // An unparsable URL is shown as a placeholder: it might still contain a secret.
            Err(_) => "<invalid url>".to_owned(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.redacted_url())
            .field("max_len", &self.max_len)
            .field("op_timeout", &self.op_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn debug_redacts_the_password() {
        let config = Config {
            url: "redis://quantum:hunter2@redis.internal:6380/2".to_owned(),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("redis://quantum:***@redis.internal:6380/2"),
            "{shown}"
        );
    }

    #[test]
    fn debug_keeps_a_url_without_password() {
        let shown = format!("{:?}", Config::default());
        assert!(shown.contains("redis://127.0.0.1:6379"), "{shown}");
    }
}
