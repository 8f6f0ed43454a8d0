//! The per-intent progress record kept on the bus, and its string format.

use std::time::Duration;

use crate::clock::now_ms;

/// How long progress records live: far longer than any redelivery can come.
pub(super) const PROGRESS_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The per-intent progress record kept on the bus: `working|<consumer>|<ms>` while an instance
/// works on the intent (refreshed as a heartbeat while it waits for the fill), then
/// `published|<consumer>|<status>|<order id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Progress {
    Working { owner: String, at: i64 },
    Published,
}

impl Progress {
    pub(super) fn working(consumer: &str) -> String {
        format!("working|{consumer}|{}", now_ms())
    }

    pub(super) fn published(consumer: &str, result: &model::ExecutionResult) -> String {
        format!(
            "published|{consumer}|{}|{}",
            result.status().as_str(),
            result.order_id().map_or(String::new(), |id| id.to_string())
        )
    }

    pub(super) fn parse(text: &str) -> Progress {
        let mut parts = text.split('|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("published"), _, _) => Progress::Published,
            (Some("working"), Some(owner), Some(at)) => Progress::Working {
                owner: owner.to_string(),
                at: at.parse().unwrap_or(0),
            },
            // Unreadable records count as abandoned work, so the exchange is asked and the
            // intent finished rather than left hanging.
            _ => Progress::Working {
                owner: String::new(),
                at: 0,
            },
        }
    }
}
