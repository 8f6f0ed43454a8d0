//! Process control: the append-only `redis-server` and the service processes (`quantum
//! execution` twice, `quantum exit-monitor` once, children of this executable), each with its
//! log in a file of the run directory. Kills are SIGKILL or SIGTERM sent by pid; one watcher
//! loop notices every exit, tells an ordered stop from an unexpected one, escalates a SIGTERM
//! that is not obeyed within its grace to SIGKILL, and restarts what is down after its pause (an
//! unexpected exit after 1 s, as `Restart=on-failure` would). Every start and end is recorded
//! for the report and the "no service exited except when killed" invariant.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::scenario::Signal;

/// A `redis-server` with append-only persistence in its own directory, on a fixed port so it
/// can be stopped and started again at the same address.
#[derive(Debug)]
pub struct Redis {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl Redis {
    pub fn new(binary: &Path, run_dir: &Path) -> anyhow::Result<Redis> {
        let dir = run_dir.join("redis");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Redis {
            binary: binary.to_path_buf(),
            port: free_port()?,
            dir,
            log: run_dir.join("redis.log"),
            child: None,
            starts: 0,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Starts the server (the same directory, so the append-only file is replayed) and waits
    /// until it answers PING with its data loaded.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let spawned = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .arg("--logfile")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} not found: quantum chaos runs a real redis-server (Debian: apt-get install redis-server; or --redis-server PATH)",
                self.binary.display()
            ),
            Err(e) => bail!("cannot start {}: {e}", self.binary.display()),
        };
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    bail!(
                        "redis-server on port {} exited at start ({status}); see {}",
                        self.port,
                        self.log.display()
                    );
                }
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {} never answered PING", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server as an operator would (SIGTERM: it writes the append-only file and
    /// exits), SIGKILL after 10 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), Signal::Term);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("bind a probe socket")?;
    Ok(probe.local_addr()?.port())
}

/// Whether a Redis on `port` answers an inline PING with `+PONG` (`-LOADING` while it replays
/// the append-only file does not count).
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// Sends `signal` to `pid` with kill(1) (no libc binding in this crate).
pub fn signal(pid: u32, signal: Signal) -> bool {
    let flag = match signal {
        Signal::Kill => "-KILL",
        Signal::Term => "-TERM",
    };
    Command::new("kill")
        .args([flag, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How to start one service.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: &'static str,
    /// `execution` or `exit-monitor`.
    pub subcommand: &'static str,
    /// What its log says once it reads its stream.
    pub ready_marker: &'static str,
}

/// What every service is started with.
#[derive(Debug, Clone)]
pub struct Launch {
    pub exe: PathBuf,
    pub config: PathBuf,
    pub redis_url: String,
    pub rest_url: String,
    pub ws_url: String,
    pub fill_timeout: String,
    pub api_key: String,
    pub api_secret: String,
    /// How long a SIGTERM'd service may take to stop before it is killed.
    pub term_grace: Duration,
}

/// One end of a service process.
#[derive(Debug, Clone)]
pub struct Ended {
    pub service: &'static str,
    /// Which start of the service this was (1 = the first).
    pub start: u32,
    /// Milliseconds since the harness started.
    pub at_ms: u64,
    /// The signal the harness sent it, if any.
    pub ordered: Option<Signal>,
    /// Why this end breaks "no service exited except when killed", if it does.
    pub violation: Option<String>,
    /// The last lines of its log of this start (for unexpected ends).
    pub tail: Vec<String>,
}

/// A kill the harness asked for.
#[derive(Debug, Clone)]
pub struct KillRecord {
    pub service: &'static str,
    pub signal: Signal,
    /// False when the service was not running at that moment (nothing was sent).
    pub sent: bool,
}

#[derive(Debug)]
struct Proc {
    spec: ServiceSpec,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// Where this start's lines begin in the log.
    log_offset: u64,
    /// The signal sent and when (harness ms), while its end is awaited.
    ordered: Option<(Signal, u64)>,
    /// A SIGTERM not obeyed within the grace was escalated.
    escalated: bool,
    /// When to start it again (harness ms), while it is down.
    restart_at: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    procs: Vec<Proc>,
    ended: Vec<Ended>,
    kills: Vec<KillRecord>,
    /// No restarts any more (the final stop).
    hold: bool,
    start_errors: Vec<String>,
}

/// The service processes and their watcher.
#[derive(Debug, Clone)]
pub struct Services {
    launch: Arc<Launch>,
    state: Arc<Mutex<State>>,
    epoch: Instant,
}

impl Services {
    pub fn new(
        launch: Launch,
        specs: Vec<ServiceSpec>,
        run_dir: &Path,
        epoch: Instant,
    ) -> Services {
        let procs = specs
            .into_iter()
            .map(|spec| Proc {
                log: run_dir.join(format!("{}.log", spec.name)),
                spec,
                child: None,
                starts: 0,
                log_offset: 0,
                ordered: None,
                escalated: false,
                restart_at: None,
            })
            .collect();
        Services {
            launch: Arc::new(launch),
            state: Arc::new(Mutex::new(State {
                procs,
                ..State::default()
            })),
            epoch,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log files, one per service.
    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        self.lock()
            .procs
            .iter()
            .map(|p| (p.spec.name.to_string(), p.log.clone()))
            .collect()
    }

    /// Starts every service that is not running.
    pub fn start_all(&self) -> anyhow::Result<()> {
        let mut state = self.lock();
        let now = self.now_ms();
        for proc in &mut state.procs {
            if proc.child.is_none() {
                start(&self.launch, proc, now)?;
            }
        }
        Ok(())
    }

    /// Waits until every service is running and its log of the current start shows its ready
    /// marker; `Err` names the ones that are not, after `within`.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let not_ready: Vec<String> = {
                let state = self.lock();
                state
                    .procs
                    .iter()
                    .filter(|p| {
                        p.child.is_none()
                            || p.ordered.is_some()
                            || !log_since(&p.log, p.log_offset).contains(p.spec.ready_marker)
                    })
                    .map(|p| p.spec.name.to_string())
                    .collect()
            };
            if not_ready.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "not ready within {within:?}: {} (see their logs)",
                    not_ready.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` to service `index` and has it restarted `pause_ms` after (once it ended).
    pub fn kill(&self, index: usize, signal: Signal, pause_ms: u64) {
        let now = self.now_ms();
        let mut state = self.lock();
        let proc = &mut state.procs[index];
        let name = proc.spec.name;
        let sent = match (&proc.child, proc.ordered) {
            (Some(child), None) => {
                let sent = signal_child(child, signal);
                if sent {
                    proc.ordered = Some((signal, now));
                    proc.restart_at = Some(now + pause_ms);
                }
                sent
            }
            _ => false,
        };
        tracing::info!(
            "chaos: {} {name}{}",
            signal.name(),
            if sent {
                ""
            } else {
                " skipped: it is not running (or already stopping)"
            }
        );
        state.kills.push(KillRecord {
            service: name,
            signal,
            sent,
        });
    }

    /// One round of the watcher: notices ends, escalates overdue SIGTERMs, restarts what is due.
    pub fn poll(&self) {
        let now = self.now_ms();
        let mut state = self.lock();
        let hold = state.hold;
        let mut ended = Vec::new();
        let mut errors = Vec::new();
        for proc in &mut state.procs {
            if let Some(child) = proc.child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        proc.child = None;
                        ended.push(end_of(proc, status, now));
                        if proc.restart_at.is_none() || proc.ordered.is_none() {
                            proc.restart_at = Some(now + 1_000);
                        }
                        proc.ordered = None;
                        proc.escalated = false;
                    }
                    Ok(None) => {
                        if let Some((Signal::Term, at)) = proc.ordered {
                            let grace = self.launch.term_grace.as_millis() as u64;
                            if !proc.escalated && now.saturating_sub(at) > grace {
                                let _ = child.kill();
                                proc.escalated = true;
                                tracing::warn!(
                                    "chaos: {} did not stop within {grace} ms of SIGTERM; SIGKILL",
                                    proc.spec.name
                                );
                            }
                        }
                    }
                    Err(e) => errors.push(format!("{}: cannot wait: {e}", proc.spec.name)),
                }
            } else if !hold && proc.restart_at.is_some_and(|t| now >= t) {
                proc.restart_at = None;
                if let Err(e) = start(&self.launch, proc, now) {
                    errors.push(format!("{}: {e:#}", proc.spec.name));
                    proc.restart_at = Some(now + 2_000);
                }
            }
        }
        state.ended.extend(ended);
        state.start_errors.extend(errors);
    }

    /// Runs [`Services::poll`] every 100 ms until `stop` is cancelled.
    pub async fn watch(self, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.poll(),
            }
        }
    }

    /// Starts at once whatever is down (waiting out no pause): the finale.
    pub fn restart_down_now(&self) {
        let now = self.now_ms();
        let mut state = self.lock();
        for proc in &mut state.procs {
            if proc.child.is_none() && proc.restart_at.is_some() {
                proc.restart_at = Some(now);
            }
        }
        drop(state);
        self.poll();
    }

    /// The final stop: no more restarts; SIGTERM to each running service in `order` (names), one
    /// after the other, each awaited (escalated to SIGKILL after the grace).
    pub async fn stop_all(&self, order: &[&str]) {
        self.lock().hold = true;
        for name in order {
            let now = self.now_ms();
            {
                let mut state = self.lock();
                if let Some(proc) = state.procs.iter_mut().find(|p| p.spec.name == *name) {
                    if let (Some(child), None) = (&proc.child, proc.ordered) {
                        if signal_child(child, Signal::Term) {
                            proc.ordered = Some((Signal::Term, now));
                        }
                    }
                }
            }
            loop {
                self.poll();
                let running = self
                    .lock()
                    .procs
                    .iter()
                    .any(|p| p.spec.name == *name && p.child.is_some());
                if !running {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Kills every service now and starts none again (the harness is giving up).
    pub fn kill_all(&self) {
        let mut state = self.lock();
        state.hold = true;
        for proc in &mut state.procs {
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    pub fn ended(&self) -> Vec<Ended> {
        self.lock().ended.clone()
    }

    pub fn kills(&self) -> Vec<KillRecord> {
        self.lock().kills.clone()
    }

    /// Starts per service.
    pub fn starts(&self) -> Vec<(&'static str, u32)> {
        self.lock()
            .procs
            .iter()
            .map(|p| (p.spec.name, p.starts))
            .collect()
    }

    pub fn start_errors(&self) -> Vec<String> {
        self.lock().start_errors.clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal_child(child: &Child, signal: Signal) -> bool {
    self::signal(child.id(), signal)
}

/// Starts `proc` (its log appended to, after a marker line).
fn start(launch: &Launch, proc: &mut Proc, now_ms: u64) -> anyhow::Result<()> {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&proc.log)
        .with_context(|| format!("cannot open {}", proc.log.display()))?;
    proc.starts += 1;
    writeln!(
        log,
        "===== quantum chaos: start #{} of {} at +{now_ms} ms =====",
        proc.starts, proc.spec.name
    )?;
    log.flush()?;
    proc.log_offset = std::fs::metadata(&proc.log).map_or(0, |m| m.len());
    let stderr = log.try_clone()?;
    let mut command = Command::new(&launch.exe);
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("QUANTUM_") || key_text.starts_with("BINANCE_") {
            command.env_remove(&key);
        }
    }
    command
        .arg(proc.spec.subcommand)
        .arg("--config")
        .arg(&launch.config)
        .args(["--redis-url", &launch.redis_url])
        .args(["--rest-url", &launch.rest_url])
        .args(["--ws-url", &launch.ws_url])
        .args(["--fill-timeout", &launch.fill_timeout])
        .args(["--consumer-name", proc.spec.name])
        .env("BINANCE_API_KEY", &launch.api_key)
        .env("BINANCE_SECRET_KEY", &launch.api_secret)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", launch.exe.display()))?;
    tracing::info!(
        "chaos: started {} #{} (pid {})",
        proc.spec.name,
        proc.starts,
        child.id()
    );
    proc.child = Some(child);
    Ok(())
}

/// The record of `proc`'s end with `status`.
fn end_of(proc: &Proc, status: ExitStatus, now_ms: u64) -> Ended {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    };
    let violation = match (proc.ordered, status.code(), status.signal()) {
        (Some((Signal::Kill, _)), _, Some(9)) => None,
        (Some((Signal::Term, _)), Some(0), _) => None,
        (Some((Signal::Term, at)), _, Some(9)) if proc.escalated => Some(format!(
            "did not stop within the grace after SIGTERM (sent at +{at} ms) and was killed"
        )),
        (Some((Signal::Term, _)), _, _) => Some(format!(
            "SIGTERM'd, but ended with {how} (a graceful stop exits 0)"
        )),
        (Some((Signal::Kill, _)), _, _) => {
            Some(format!("ended with {how} before the SIGKILL took effect"))
        }
        (None, _, _) => Some(format!("exited by itself with {how}; nobody killed it")),
    };
    let tail = if violation.is_some() {
        let text = log_since(&proc.log, proc.log_offset);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(12)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    } else {
        Vec::new()
    };
    tracing::info!("chaos: {} #{} ended: {how}", proc.spec.name, proc.starts);
    Ended {
        service: proc.spec.name,
        start: proc.starts,
        at_ms: now_ms,
        ordered: proc.ordered.map(|(s, _)| s),
        violation,
        tail,
    }
}

/// The log from `offset` on (lossy UTF-8; empty when unreadable).
fn log_since(path: &Path, offset: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}
