//! A handle on a running service task: stop it gracefully, wait for it, or kill it as a crash
//! would (tests use that to show a restart does not double-trade).
//!
//! Each service task is watched by a small supervisor task that records its life in the health
//! registry ([`crate::health`]): running from the start, stopping once its shutdown token is
//! cancelled, then stopped, or failed with the error, the panic message, "killed", or "ended
//! without a shutdown request". The supervisor runs whether or not anyone awaits the handle, so
//! a task that dies unobserved still shows on `/healthz`.

use std::any::Any;
use std::fmt;

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::error::ServiceError;
use crate::health::{self, Health, Registration, TaskState};

/// A running service task (the execution service or the exit monitor).
#[derive(Debug)]
pub struct Running {
    name: String,
    shutdown: CancellationToken,
    /// Aborts the service task itself; the supervisor then records it as killed.
    abort: AbortHandle,
    /// The supervisor, which ends with the service task and hands on how it ended (with the
    /// panic's payload, so [`Running::wait`] can resume the unwind as awaiting the task would).
    supervisor: JoinHandle<(Exit, Option<PanicPayload>)>,
}

type PanicPayload = Box<dyn Any + Send + 'static>;

/// How a service task ended, for supervisors that report an end rather than unwind.
#[derive(Debug)]
pub enum Exit {
    /// It returned after its shutdown token was cancelled: the normal end.
    Stopped,
    /// It returned `Ok` although nobody asked it to stop.
    EndedUnasked,
    /// It returned an error.
    Failed(ServiceError),
    /// It panicked, with this message.
    Panicked(String),
    /// It was aborted ([`Running::kill`], or the runtime shutting down).
    Killed,
}

impl Exit {
    /// True for every end but a requested stop.
    pub fn is_failure(&self) -> bool {
        !matches!(self, Exit::Stopped)
    }

    /// The state the health registry records for this end.
    pub fn state(&self) -> TaskState {
        match self {
            Exit::Stopped => TaskState::Stopped,
            Exit::EndedUnasked => TaskState::Failed("ended without a shutdown request".into()),
            Exit::Failed(e) => TaskState::Failed(e.to_string()),
            Exit::Panicked(message) => TaskState::Failed(format!("panicked: {message}")),
            Exit::Killed => TaskState::Failed("killed".into()),
        }
    }
}

/// Reads after the task's name: "exit-monitor panicked: boom".
impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Stopped => f.write_str("stopped"),
            Exit::EndedUnasked => f.write_str("ended without a shutdown request"),
            Exit::Failed(e) => write!(f, "failed: {e}"),
            Exit::Panicked(message) => write!(f, "panicked: {message}"),
            Exit::Killed => f.write_str("was killed"),
        }
    }
}

impl Running {
    /// Watches `task`, the service task `name` stopped by `shutdown`, and registers it as running
    /// in the process-wide health registry ([`health::global`]). Call it inside the runtime.
    pub fn new(
        name: &str,
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), ServiceError>>,
    ) -> Running {
        Running::with_health(health::global(), name, shutdown, task)
    }

    /// [`Running::new`] with a given health registry (tests use their own).
    pub fn with_health(
        health: &Health,
        name: &str,
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), ServiceError>>,
    ) -> Running {
        // Registered before the supervisor exists, so its record of the end always comes last.
        let registration = health.register(name, TaskState::Running);
        let abort = task.abort_handle();
        let supervisor = tokio::spawn(watch(task, shutdown.clone(), registration));
        Running {
            name: name.to_string(),
            shutdown,
            abort,
            supervisor,
        }
    }

    /// The task's name in the health registry (`execution`, `exit-monitor`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stops taking intents, lets those in flight finish, and waits for the service to end.
    pub async fn stop(self) -> Result<(), ServiceError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits for the service to end by itself (an error, or a shutdown requested elsewhere). A
    /// panic of the task is resumed here, as awaiting its join handle would; a killed task is
    /// `Ok`.
    pub async fn wait(self) -> Result<(), ServiceError> {
        match self.ended().await {
            (Exit::Failed(e), _) => Err(e),
            (_, Some(payload)) => std::panic::resume_unwind(payload),
            _ => Ok(()),
        }
    }

    /// Waits for the service to end and says how, without unwinding on a panic: for supervisors
    /// that report the end and stop the rest of the process.
    pub async fn exit(self) -> Exit {
        self.ended().await.0
    }

    /// Ends the service at once, as a crash would: nothing in flight is finished or acked. The
    /// health registry records it as failed ("killed").
    pub async fn kill(self) {
        self.abort.abort();
        let _ = self.ended().await;
    }

    /// The token that stops the service when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    async fn ended(self) -> (Exit, Option<PanicPayload>) {
        match self.supervisor.await {
            Ok(ended) => ended,
            // The supervisor only awaits and records, so this is the runtime shutting down.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => (Exit::Killed, None),
        }
    }
}

/// The supervisor: awaits the service task, records its states, and returns how it ended.
async fn watch(
    mut task: JoinHandle<Result<(), ServiceError>>,
    shutdown: CancellationToken,
    registration: Registration,
) -> (Exit, Option<PanicPayload>) {
    let joined = tokio::select! {
        // Biased: a task that has already ended is recorded as ended, not as stopping.
        biased;
        joined = &mut task => joined,
        () = shutdown.cancelled() => {
            registration.set(TaskState::Stopping);
            task.await
        }
    };
    let ended = match joined {
        Ok(Ok(())) if shutdown.is_cancelled() => (Exit::Stopped, None),
        Ok(Ok(())) => (Exit::EndedUnasked, None),
        Ok(Err(e)) => (Exit::Failed(e), None),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            (
                Exit::Panicked(panic_message(payload.as_ref())),
                Some(payload),
            )
        }
        Err(_) => (Exit::Killed, None),
    };
    registration.set(ended.0.state());
    ended
}

/// The message of a panic (`panic!("...")` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message.to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bus_down() -> ServiceError {
        ServiceError::Bus(bus::Error::Unavailable {
            op: "XREADGROUP",
            detail: "connection refused".into(),
        })
    }

    /// Starts a task that ends as `end` says once `go` is cancelled (or its shutdown token is).
    fn task(
        health: &Health,
        name: &str,
        end: impl FnOnce() -> Result<(), ServiceError> + Send + 'static,
    ) -> (Running, CancellationToken) {
        let go = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let (go_task, shutdown_task) = (go.clone(), shutdown.clone());
        let handle = tokio::spawn(async move {
            tokio::select! {
                () = go_task.cancelled() => end(),
                () = shutdown_task.cancelled() => Ok(()),
            }
        });
        (Running::with_health(health, name, shutdown, handle), go)
    }

    /// Polls `health` until `name` is in `state`, for at most five seconds.
    async fn state_becomes(health: &Health, name: &str, wanted: impl Fn(&TaskState) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = health.state(name);
            if state.as_ref().is_some_and(&wanted) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {state:?}; health:\n{}",
                health.report().text
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_task_that_returns_an_error_shows_failed_with_the_error_without_being_awaited() {
        let health = Health::default();
        let (running, go) = task(&health, "fails", || Err(bus_down()));
        assert_eq!(health.state("fails"), Some(TaskState::Running));
        assert!(health.report().healthy);
        go.cancel();
        state_becomes(&health, "fails", |s| matches!(s, TaskState::Failed(_))).await;
        let report = health.report();
        assert!(!report.healthy);
        assert_eq!(
            report.text,
            "failing\nfails failed (bus: bus unavailable during XREADGROUP: connection refused)\n"
        );
        // Waiting still hands the error on.
        assert!(matches!(running.wait().await, Err(ServiceError::Bus(_))));
    }

    #[tokio::test]
    async fn a_task_that_panics_shows_failed_with_the_message_and_wait_resumes_the_panic() {
        let health = Health::default();
        let (running, go) = task(&health, "panics", || panic!("the book is inconsistent"));
        go.cancel();
        state_becomes(&health, "panics", |s| matches!(s, TaskState::Failed(_))).await;
        assert_eq!(
            health.state("panics"),
            Some(TaskState::Failed(
                "panicked: the book is inconsistent".into()
            ))
        );
        let unwound = tokio::spawn(running.wait()).await.unwrap_err();
        assert!(unwound.is_panic(), "wait() resumes the panic");
        let payload = unwound.into_panic();
        assert_eq!(panic_message(payload.as_ref()), "the book is inconsistent");
    }

    #[tokio::test]
    async fn a_stop_goes_through_stopping_to_stopped_and_stays_healthy() {
        let health = Health::default();
        // A task that takes its time to stop, until the test lets it.
        let shutdown = CancellationToken::new();
        let finish = CancellationToken::new();
        let (shutdown_task, finish_task) = (shutdown.clone(), finish.clone());
        let handle = tokio::spawn(async move {
            shutdown_task.cancelled().await;
            finish_task.cancelled().await;
            Ok(())
        });
        let running = Running::with_health(&health, "stops", shutdown.clone(), handle);
        shutdown.cancel();
        state_becomes(&health, "stops", |s| *s == TaskState::Stopping).await;
        assert!(health.report().healthy, "{}", health.report().text);
        finish.cancel();
        running.wait().await.unwrap();
        assert_eq!(health.state("stops"), Some(TaskState::Stopped));
        assert_eq!(health.report().text, "ok\nstops stopped\n");
    }

    #[tokio::test]
    async fn ending_without_a_shutdown_request_or_being_killed_is_a_failure() {
        let health = Health::default();
        let (running, go) = task(&health, "returns", || Ok(()));
        go.cancel();
        assert!(matches!(running.exit().await, Exit::EndedUnasked));
        assert_eq!(
            health.state("returns"),
            Some(TaskState::Failed("ended without a shutdown request".into()))
        );

        let (running, _go) = task(&health, "killed", || Ok(()));
        running.kill().await;
        assert_eq!(
            health.state("killed"),
            Some(TaskState::Failed("killed".into()))
        );
    }
}
