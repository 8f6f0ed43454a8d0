//! How the service subcommands wait: until the shutdown signal, or until a service ends by
//! itself. A service that ends without being asked to (an error, a panic, or returning `Ok`) is
//! logged as an ERROR naming it and why, the rest of the process is stopped gracefully, and the
//! subcommand returns an error, so the process exits non-zero and systemd's `Restart=on-failure`
//! starts it again. Half of `quantum run` never goes on alone.

use std::future::Future;

use service::{Exit, Running};
use tokio_util::sync::CancellationToken;

/// Runs one service until `shutdown` completes (then stops it gracefully) or it ends by itself
/// (an error).
pub async fn one(running: Running, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let name = running.name().to_string();
    let token = running.shutdown_token();
    let exit = running.exit();
    tokio::pin!(exit);
    tokio::select! {
        // Biased toward the service's end: one that died as the signal came is still an error.
        biased;
        exit = &mut exit => Err(died(&name, &exit)),
        () = shutdown => {
            token.cancel();
            match exit.await {
                exit if exit.is_failure() => Err(died(&name, &exit)),
                _ => Ok(()),
            }
        }
    }
}

/// Runs the execution service and the exit monitor until `shutdown` completes or one of them
/// ends by itself.
///
/// On `shutdown` the monitor stops first, so no close intent is sent to an execution service
/// that is leaving, then the execution service. When one service ends by itself, the other is
/// stopped gracefully (the execution service still finishes the intents in flight) and the
/// error names the one that ended and why.
pub async fn both(
    execution: Running,
    monitor: Running,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // From here on, `execution` and `monitor` are the names and tokens; the ends are awaited.
    let (execution, execution_exit) = (Named::of(&execution), execution.exit());
    let (monitor, monitor_exit) = (Named::of(&monitor), monitor.exit());
    tokio::pin!(shutdown, execution_exit, monitor_exit);
    tokio::select! {
        // Biased toward a service's end: one that died as the signal came is still reported,
        // and the process still exits non-zero.
        biased;
        exit = &mut monitor_exit => {
            Err(stop_after_death(&monitor, &exit, &execution, execution_exit).await)
        }
        exit = &mut execution_exit => {
            Err(stop_after_death(&execution, &exit, &monitor, monitor_exit).await)
        }
        () = &mut shutdown => {
            monitor.token.cancel();
            let monitor_end = (&mut monitor_exit).await;
            execution.token.cancel();
            let execution_end = (&mut execution_exit).await;
            let failures: Vec<String> = [(&monitor, monitor_end), (&execution, execution_end)]
                .into_iter()
                .filter(|(_, exit)| exit.is_failure())
                .map(|(service, exit)| died(&service.name, &exit).to_string())
                .collect();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(failures.join("; ")))
            }
        }
    }
}

/// Runs `services` (given the future that asks them to stop) with the journal beside them. On
/// `shutdown` the services stop first and the journal last, so it records what they published
/// before leaving. When the journal ends by itself the services are stopped gracefully too and
/// this is an error (the process restarts whole); when the services end, the journal is stopped.
pub async fn with_journal<F, Fut>(
    journal: Running,
    shutdown: impl Future<Output = ()>,
    services: F,
) -> anyhow::Result<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let journal_named = Named::of(&journal);
    let journal_exit = journal.exit();
    let stop = CancellationToken::new();
    let stop_services = stop.clone();
    let services = services(Box::pin(async move { stop_services.cancelled().await }));
    tokio::pin!(journal_exit, shutdown, services);
    let mut journal_died: Option<anyhow::Error> = None;
    let services_end = loop {
        tokio::select! {
            biased;
            exit = &mut journal_exit, if journal_died.is_none() => {
                tracing::error!("{} {exit}; stopping the services so that the process exits and can be restarted", journal_named.name);
                journal_died = Some(anyhow::anyhow!("{} {exit}", journal_named.name));
                stop.cancel();
            }
            () = &mut shutdown, if !stop.is_cancelled() => stop.cancel(),
            end = &mut services => break end,
        }
    };
    if journal_died.is_none() {
        journal_named.token.cancel();
        let end = (&mut journal_exit).await;
        if end.is_failure() {
            journal_died = Some(died(&journal_named.name, &end));
        }
    }
    match (services_end, journal_died) {
        (Ok(()), None) => Ok(()),
        (Err(e), None) | (Ok(()), Some(e)) => Err(e),
        (Err(services), Some(journal)) => Err(anyhow::anyhow!("{services}; {journal}")),
    }
}

/// What the supervisor keeps of a service once it awaits the service's end.
struct Named {
    name: String,
    token: CancellationToken,
}

impl Named {
    fn of(running: &Running) -> Named {
        Named {
            name: running.name().to_string(),
            token: running.shutdown_token(),
        }
    }
}

/// Logs the end of `name` as an ERROR and gives the error the subcommand returns.
fn died(name: &str, exit: &Exit) -> anyhow::Error {
    tracing::error!("{name} {exit}");
    anyhow::anyhow!("{name} {exit}")
}

/// After `dead` ended by itself: logs it, stops `other` gracefully, and gives the error.
async fn stop_after_death(
    dead: &Named,
    exit: &Exit,
    other: &Named,
    other_exit: impl Future<Output = Exit>,
) -> anyhow::Error {
    tracing::error!(
        "{} {exit}; stopping {} so that the process exits and can be restarted",
        dead.name,
        other.name
    );
    other.token.cancel();
    match other_exit.await {
        end if end.is_failure() => tracing::error!("{} {end} while stopping", other.name),
        _ => tracing::info!("{} stopped", other.name),
    }
    anyhow::anyhow!("{} {exit}", dead.name)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use service::health::{Health, TaskState, EXECUTION, EXIT_MONITOR, JOURNAL};
    use service::ServiceError;

    use super::*;

    /// The order in which the test services saw their shutdown requests.
    type Stops = Arc<Mutex<Vec<&'static str>>>;

    /// A service task that runs until its shutdown token is cancelled (then notes it in `stops`
    /// and returns `Ok`), or until `end` completes.
    fn service(
        health: &Health,
        name: &'static str,
        stops: &Stops,
        end: impl Future<Output = Result<(), ServiceError>> + Send + 'static,
    ) -> Running {
        let shutdown = CancellationToken::new();
        let (token, stops) = (shutdown.clone(), stops.clone());
        let task = tokio::spawn(async move {
            tokio::select! {
                result = end => result,
                () = token.cancelled() => {
                    stops.lock().unwrap().push(name);
                    Ok(())
                }
            }
        });
        Running::with_health(health, name, shutdown, task)
    }

    fn bus_down() -> ServiceError {
        ServiceError::Bus(bus::Error::Unavailable {
            op: "XREADGROUP",
            detail: "connection refused".into(),
        })
    }

    async fn panics() -> Result<(), ServiceError> {
        panic!("the book is inconsistent")
    }

    /// [`both`] with a deadline, so a supervisor that does not notice an end fails the test
    /// instead of hanging it.
    async fn supervise_both(
        execution: Running,
        monitor: Running,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(10), both(execution, monitor, shutdown))
            .await
            .expect("the supervisor returns once a service ended")
    }

    #[tokio::test]
    async fn a_failed_exit_monitor_stops_the_execution_service_and_is_an_error() {
        let (health, stops) = (Health::default(), Stops::default());
        let execution = service(&health, EXECUTION, &stops, std::future::pending());
        let monitor = service(&health, EXIT_MONITOR, &stops, async { Err(bus_down()) });
        let error = supervise_both(execution, monitor, std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "exit-monitor failed: bus: bus unavailable during XREADGROUP: connection refused"
        );
        assert_eq!(*stops.lock().unwrap(), ["execution"], "stopped gracefully");
        assert_eq!(health.state(EXECUTION), Some(TaskState::Stopped));
        assert!(matches!(
            health.state(EXIT_MONITOR),
            Some(TaskState::Failed(_))
        ));
    }

    #[tokio::test]
    async fn a_panicking_execution_service_stops_the_exit_monitor_and_is_an_error() {
        let (health, stops) = (Health::default(), Stops::default());
        let execution = service(&health, EXECUTION, &stops, panics());
        let monitor = service(&health, EXIT_MONITOR, &stops, std::future::pending());
        let error = supervise_both(execution, monitor, std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "execution panicked: the book is inconsistent"
        );
        assert_eq!(*stops.lock().unwrap(), ["exit-monitor"]);
        assert_eq!(health.state(EXIT_MONITOR), Some(TaskState::Stopped));
    }

    #[tokio::test]
    async fn a_service_that_returns_without_being_asked_is_an_error_too() {
        let (health, stops) = (Health::default(), Stops::default());
        let execution = service(&health, EXECUTION, &stops, std::future::pending());
        let monitor = service(&health, EXIT_MONITOR, &stops, async { Ok(()) });
        let error = supervise_both(execution, monitor, std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "exit-monitor ended without a shutdown request"
        );
        assert_eq!(*stops.lock().unwrap(), ["execution"]);
    }

    #[tokio::test]
    async fn the_shutdown_signal_stops_the_monitor_first_then_the_execution_service() {
        let (health, stops) = (Health::default(), Stops::default());
        let execution = service(&health, EXECUTION, &stops, std::future::pending());
        let monitor = service(&health, EXIT_MONITOR, &stops, std::future::pending());
        supervise_both(execution, monitor, std::future::ready(()))
            .await
            .unwrap();
        assert_eq!(*stops.lock().unwrap(), ["exit-monitor", "execution"]);
        assert_eq!(
            health.report().text,
            "ok\nexecution stopped\nexit-monitor stopped\n"
        );
    }

    #[tokio::test]
    async fn the_journal_stops_last_and_its_death_stops_the_services() {
        let (health, stops) = (Health::default(), Stops::default());
        let execution = service(&health, EXECUTION, &stops, std::future::pending());
        let monitor = service(&health, EXIT_MONITOR, &stops, std::future::pending());
        let journal = service(&health, JOURNAL, &stops, std::future::pending());
        tokio::time::timeout(
            Duration::from_secs(10),
            with_journal(journal, std::future::ready(()), |stop| {
                both(execution, monitor, stop)
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            *stops.lock().unwrap(),
            ["exit-monitor", "execution", "journal"]
        );

        let (health, stops) = (Health::default(), Stops::default());
        let execution = service(&health, EXECUTION, &stops, std::future::pending());
        let monitor = service(&health, EXIT_MONITOR, &stops, std::future::pending());
        let journal = service(&health, JOURNAL, &stops, async {
            Err(ServiceError::Journal("journal database: disk full".into()))
        });
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            with_journal(journal, std::future::pending(), |stop| {
                both(execution, monitor, stop)
            }),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "journal failed: journal database: disk full"
        );
        assert_eq!(*stops.lock().unwrap(), ["exit-monitor", "execution"]);
    }

    #[tokio::test]
    async fn one_service_that_fails_is_an_error_and_one_that_is_stopped_is_not() {
        let (health, stops) = (Health::default(), Stops::default());
        let failing = service(&health, EXECUTION, &stops, async { Err(bus_down()) });
        let error = tokio::time::timeout(
            Duration::from_secs(10),
            one(failing, std::future::pending()),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert!(
            error.to_string().starts_with("execution failed: bus:"),
            "{error}"
        );

        let running = service(&health, EXIT_MONITOR, &stops, std::future::pending());
        tokio::time::timeout(
            Duration::from_secs(10),
            one(running, std::future::ready(())),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(health.state(EXIT_MONITOR), Some(TaskState::Stopped));
    }
}
