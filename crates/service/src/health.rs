//! Which service tasks this process runs and how each one is doing: the registry behind
//! `/healthz` and the `quantum_task_up{task}` gauge.
//!
//! A task registers by name ([`EXECUTION`], [`EXIT_MONITOR`]) and moves through
//! [`TaskState`]s: starting → running → stopping → stopped, or failed with a reason from any of
//! them. [`crate::Running`] does this for the services: it registers the task as running when it
//! is started, as stopping when its shutdown token is cancelled, and records how the task ended
//! (stopped, or failed with the error, the panic message, "killed", or "ended without a
//! shutdown request"), whether or not anyone awaits it. So a task that dies unobserved still
//! turns `/healthz` to 503.
//!
//! One process-wide registry ([`global`]) feeds `/healthz` and the gauge; tests make their own
//! with [`Health::default`], which exports no gauge, so they cannot disturb each other.

use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};

use crate::metrics;

/// The execution service's task name.
pub const EXECUTION: &str = "execution";
/// The exit monitor's task name.
pub const EXIT_MONITOR: &str = "exit-monitor";
/// The trade journal's task (in `quantum run` and `quantum journal`).
pub const JOURNAL: &str = "journal";

/// Where a service task is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// Registered, not yet doing its work (connecting, loading state).
    Starting,
    /// Doing its work.
    Running,
    /// Asked to stop and finishing what it had started (graceful shutdown).
    Stopping,
    /// Ended after it was asked to stop.
    Stopped,
    /// Ended without being asked to, or with an error, a panic, or killed: the reason.
    Failed(String),
}

impl TaskState {
    /// The word `/healthz` prints for the state.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Stopping => "stopping",
            TaskState::Stopped => "stopped",
            TaskState::Failed(_) => "failed",
        }
    }

    /// True while the task does its work, including a graceful shutdown in progress: the
    /// `quantum_task_up` gauge is 1.
    pub fn is_up(&self) -> bool {
        matches!(self, TaskState::Running | TaskState::Stopping)
    }

    /// True when this state lets `/healthz` answer 200: up, or stopped because it was asked to.
    /// A task still starting is not healthy yet; a failed one never is.
    pub fn is_healthy(&self) -> bool {
        matches!(
            self,
            TaskState::Running | TaskState::Stopping | TaskState::Stopped
        )
    }
}

/// `running`, or `failed (reason)` with the reason on one line, so `/healthz` stays one line per
/// task and its second word is always the state.
impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskState::Failed(reason) => {
                let reason: Vec<&str> = reason.split_whitespace().collect();
                write!(f, "failed ({})", reason.join(" "))
            }
            other => f.write_str(other.as_str()),
        }
    }
}

/// A registry of service tasks. Cloning gives another handle on the same registry.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// A std mutex: every update is a map insert, never held across an await.
    inner: Arc<Mutex<Inner>>,
    /// Whether changes also set `quantum_task_up` in [`metrics::global`] (the global registry
    /// only, so tests' own registries leave the process-wide metrics alone).
    export: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Registrations handed out so far; the latest one of a name owns its entry.
    registrations: u64,
    /// Task name → (registration, state), in name order so `/healthz` is stable.
    tasks: BTreeMap<String, (u64, TaskState)>,
}

/// One task's entry in a [`Health`] registry. Its updates apply only while it is the latest
/// registration of its name, so an old instance that ends late (a killed service replaced by a
/// new one) cannot overwrite its successor's state.
#[derive(Debug, Clone)]
pub struct Registration {
    health: Health,
    name: String,
    id: u64,
}

/// What `/healthz` answers: whether every task is healthy, and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub healthy: bool,
    /// `ok` or `failing`, then one `name state` line per task.
    pub text: String,
}

/// The process-wide registry, behind `/healthz` and `quantum_task_up`.
pub fn global() -> &'static Health {
    static HEALTH: OnceLock<Health> = OnceLock::new();
    HEALTH.get_or_init(|| Health {
        inner: Arc::default(),
        export: true,
    })
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a task under `name` in `state`, replacing any earlier registration of the name.
    pub fn register(&self, name: &str, state: TaskState) -> Registration {
        let mut inner = self.lock();
        inner.registrations += 1;
        let id = inner.registrations;
        self.export(name, &state);
        inner.tasks.insert(name.to_string(), (id, state));
        Registration {
            health: self.clone(),
            name: name.to_string(),
            id,
        }
    }

    /// The state of the task registered as `name`.
    pub fn state(&self, name: &str) -> Option<TaskState> {
        self.lock().tasks.get(name).map(|(_, state)| state.clone())
    }

    /// Every registered task and its state, by name.
    pub fn tasks(&self) -> Vec<(String, TaskState)> {
        self.lock()
            .tasks
            .iter()
            .map(|(name, (_, state))| (name.clone(), state.clone()))
            .collect()
    }

    /// The `/healthz` answer: healthy when every registered task is (an empty registry is).
    pub fn report(&self) -> Report {
        let tasks = self.tasks();
        let healthy = tasks.iter().all(|(_, state)| state.is_healthy());
        let mut text = String::from(if healthy { "ok\n" } else { "failing\n" });
        for (name, state) in &tasks {
            let _ = writeln!(text, "{name} {state}");
        }
        Report { healthy, text }
    }

    fn export(&self, name: &str, state: &TaskState) {
        if self.export {
            metrics::global()
                .task_up
                .get_or_create(&metrics::TaskLabels {
                    task: name.to_string(),
                })
                .set(i64::from(state.is_up()));
        }
    }
}

impl Registration {
    /// Moves the task to `state`, unless a newer registration of the name has replaced this one.
    pub fn set(&self, state: TaskState) {
        let mut inner = self.health.lock();
        if let Some(entry) = inner.tasks.get_mut(&self.name) {
            if entry.0 == self.id {
                // Under the registry's lock, so the gauge follows the states in their order.
                self.health.export(&self.name, &state);
                entry.1 = state;
            }
        }
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_is_ok_while_every_task_runs_or_stops_and_failing_when_one_failed() {
        let health = Health::default();
        assert_eq!(health.report().text, "ok\n", "nothing registered");
        let execution = health.register(EXECUTION, TaskState::Starting);
        let monitor = health.register(EXIT_MONITOR, TaskState::Starting);
        assert!(!health.report().healthy, "still starting");
        execution.set(TaskState::Running);
        monitor.set(TaskState::Running);
        assert_eq!(
            health.report(),
            Report {
                healthy: true,
                text: "ok\nexecution running\nexit-monitor running\n".into()
            }
        );
        execution.set(TaskState::Stopping);
        assert!(health.report().healthy, "a graceful shutdown is healthy");
        monitor.set(TaskState::Failed("bus: gone\nfor good".into()));
        assert_eq!(
            health.report(),
            Report {
                healthy: false,
                text: "failing\nexecution stopping\nexit-monitor failed (bus: gone for good)\n"
                    .into()
            }
        );
    }

    #[test]
    fn a_replaced_registration_no_longer_changes_the_state() {
        let health = Health::default();
        let old = health.register("replaced", TaskState::Running);
        let new = health.register("replaced", TaskState::Running);
        old.set(TaskState::Failed("killed".into()));
        assert_eq!(health.state("replaced"), Some(TaskState::Running));
        new.set(TaskState::Stopped);
        assert_eq!(health.state("replaced"), Some(TaskState::Stopped));
    }
}
