//! What a service proves before it takes any work: the exchange answers, the clock offset is
//! measured, the exchange's rules are loaded, and the API key and secret are accepted by a signed
//! call. A refused key (-2014, -2015, -1022, HTTP 401/403) is fatal, with the reason: a service
//! with a wrong secret must not consume intents it can only fail. Anything transient (429 with
//! its Retry-After, 418, a network error, a 5xx) is waited out with backoff, saying why each
//! time, until it passes or the service is asked to stop.

use std::time::Duration;

use binance::RestClient;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::ServiceError;

/// Waits until the exchange is ready for `who` (a service's name, for the log), and returns the
/// account as the signed call saw it (leverage per symbol, positions). `Ok(None)`: stopped
/// before it was.
pub async fn exchange_ready(
    rest: &RestClient,
    shutdown: &CancellationToken,
    who: &str,
) -> Result<Option<binance::Account>, ServiceError> {
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = async {
            let offset = rest.sync_time().await?;
            rest.exchange_info().await?;
            // A signed call: proves the key and the secret before any intent is read.
            let account = rest.account().await?;
            Ok::<_, binance::Error>((offset, account))
        };
        let error = match attempt.await {
            Ok((offset, account)) => {
                info!("{who}: exchange ready (clock offset {offset} ms, rules loaded, API key accepted)");
                return Ok(Some(account));
            }
            Err(e @ binance::Error::Auth { .. }) => {
                error!("{who}: the API key or secret is refused by the exchange ({e}); not starting (check BINANCE_API_KEY / BINANCE_SECRET_KEY and the key's permissions)");
                return Err(ServiceError::Exchange(e));
            }
            Err(e) if e.is_transient() || e.is_ambiguous() => e,
            Err(e) => return Err(ServiceError::Exchange(e)),
        };
        let wait = error.retry_after().unwrap_or(delay).max(delay);
        warn!("{who}: the exchange is not ready ({error}); trying again in {wait:?}");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(wait) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}
