//! A handle on a running service task: stop it gracefully, wait for it, or kill it as a crash
//! would (tests use that to show a restart does not double-trade).

use tokio_util::sync::CancellationToken;

use crate::execution::ServiceError;

/// A running service task (the execution service or the exit monitor).
#[derive(Debug)]
pub struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

impl Running {
    pub(crate) fn new(
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), ServiceError>>,
    ) -> Running {
        Running { shutdown, task }
    }

    /// Stops taking intents, lets those in flight finish, and waits for the service to end.
    pub async fn stop(self) -> Result<(), ServiceError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits for the service to end by itself (an error, or a shutdown requested elsewhere).
    pub async fn wait(self) -> Result<(), ServiceError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Ends the service at once, as a crash would: nothing in flight is finished or acked.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// The token that stops the service when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}
