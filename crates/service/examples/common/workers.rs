//! Service processes for the benchmark examples (shared by `#[path]`; not an example itself):
//! finds the release `quantum` binary, runs `quantum execution` as child processes with their
//! logs in files, reads their CPU time and peak RSS from `/proc`, and stops them with SIGTERM
//! (SIGKILL when they do not stop in time, or when the benchmark itself panics).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The `quantum` binary: `explicit` when given, else the one next to this example's own profile
/// directory (`target/release/quantum` for `cargo run --release --example ...`), else the
/// workspace's `target/release/quantum`. Cargo does not build it for an example, so a missing
/// binary is an error that says how to build it.
pub fn quantum_bin(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!("--quantum-bin {}: no such file", path.display()))
        };
    }
    let mut candidates = Vec::new();
    // target/<profile>/examples/<this> -> target/<profile>/quantum
    if let Some(profile_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
    {
        candidates.push(profile_dir.join("quantum"));
    }
    candidates.push(workspace_root().join("target/release/quantum"));
    for candidate in &candidates {
        if candidate.is_file() {
            return Ok(candidate.clone());
        }
    }
    Err(format!(
        "the quantum binary is not built (looked for {}). Build it first, with the same profile as this example:\n    cargo build --release -p quantum",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    ))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The newest source file of the workspace (`crates/*/src`, `Cargo.lock`) that is newer than
/// `binary`, if any: a benchmark of a stale binary measures code that is no longer there.
pub fn newer_source_than(binary: &Path) -> Option<PathBuf> {
    fn newest(dir: &Path, best: &mut Option<(SystemTime, PathBuf)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                newest(&path, best);
            } else {
                newest_file(&path, best);
            }
        }
    }
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let root = workspace_root();
    let mut best = None;
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        for krate in crates.flatten() {
            newest(&krate.path().join("src"), &mut best);
        }
    }
    newest_file(&root.join("Cargo.lock"), &mut best);
    best.filter(|(t, _)| *t > built).map(|(_, p)| p)
}

fn newest_file(path: &Path, best: &mut Option<(SystemTime, PathBuf)>) {
    if let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) {
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            *best = Some((modified, path.to_path_buf()));
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, 100 when unknown).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

/// User + system CPU time of a process so far, in clock ticks (`/proc/<pid>/stat` fields 14 and
/// 15); `None` once it is gone. `pid` "self" is this process.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Peak resident set size of a process so far (`VmHWM`), in MB; `None` once it is gone.
pub fn peak_rss_mb(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a probe socket on loopback")
}

/// How to run one `quantum execution` process.
#[derive(Debug, Clone)]
pub struct ExecutionArgs {
    pub rest_url: String,
    pub ws_url: String,
    pub redis_url: String,
    pub api_key: String,
    pub api_secret: String,
    /// The TOML file given with `--config`.
    pub config: PathBuf,
    pub fill_timeout: String,
}

/// One `quantum execution` child process. Dropping it kills the process if it still runs.
#[derive(Debug)]
pub struct Worker {
    pub consumer: String,
    pub log: PathBuf,
    pub metrics_addr: String,
    child: Child,
    exit: Option<ExitStatus>,
}

impl Worker {
    /// Starts `quantum execution` as consumer `consumer`, its log (stderr and stdout) in `log`.
    /// `QUANTUM_*` and `BINANCE_*` variables of this process are not passed on, so only the
    /// flags and `args.config` decide how it runs.
    pub fn spawn(
        bin: &Path,
        args: &ExecutionArgs,
        consumer: &str,
        log: PathBuf,
    ) -> Result<Worker, String> {
        let file = std::fs::File::create(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let file2 = file
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(bin);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("QUANTUM_") || key_text.starts_with("BINANCE_") {
                command.env_remove(&key);
            }
        }
        command
            .arg("execution")
            .arg("--config")
            .arg(&args.config)
            .args(["--redis-url", &args.redis_url])
            .args(["--rest-url", &args.rest_url])
            .args(["--ws-url", &args.ws_url])
            .args(["--fill-timeout", &args.fill_timeout])
            .args(["--consumer-name", consumer])
            .args(["--metrics-addr", &metrics_addr])
            .env("BINANCE_API_KEY", &args.api_key)
            .env("BINANCE_SECRET_KEY", &args.api_secret)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file2);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(Worker {
            consumer: consumer.to_string(),
            log,
            metrics_addr,
            child,
            exit: None,
        })
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Its exit status, once it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits until its log contains `marker` (true), it exits, or `within` passes (false).
    pub async fn wait_for_log(&mut self, marker: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && self.exited().is_none() {
            if std::fs::read_to_string(&self.log).is_ok_and(|text| text.contains(marker)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM (a graceful stop: in-flight intents finish), then SIGKILL after `grace`. Returns
    /// how it ended and whether it had to be killed.
    pub async fn stop(&mut self, grace: Duration) -> (Option<ExitStatus>, bool) {
        if self.exited().is_none() {
            let sent = Command::new("kill")
                .args(["-TERM", &self.pid()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let deadline = Instant::now() + if sent { grace } else { Duration::ZERO };
            while Instant::now() < deadline && self.exited().is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if self.exited().is_some() {
            return (self.exit, false);
        }
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
        (self.exit, true)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
