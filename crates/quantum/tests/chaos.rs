//! `quantum chaos` as a contributor runs it: the same seed gives the same schedule, and a short
//! seeded run (a simulator, an append-only Redis, two execution services and an exit monitor as
//! child processes; faults, kills and a Redis restart) keeps every promise.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_quantum");

/// `quantum chaos <args>` with none of this environment's quantum settings.
fn chaos(args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.arg("chaos").args(args).env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("QUANTUM_") || key_text.starts_with("BINANCE_") {
            command.env_remove(&key);
        }
    }
    command.output().expect("run quantum chaos")
}

fn fingerprint(seed: &str) -> String {
    let out = chaos(&["--seed", seed, "--intents", "80", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("schedule fingerprint "))
        .unwrap_or_else(|| panic!("no fingerprint in:\n{text}"))
        .to_string()
}

#[test]
fn the_same_seed_replays_the_same_schedule() {
    let a = fingerprint("5");
    assert_eq!(a, fingerprint("5"), "same seed, same schedule");
    assert_ne!(a, fingerprint("6"), "another seed, another schedule");
}

#[test]
fn help_names_the_options_and_the_exit_status() {
    let out = Command::new(BIN)
        .args(["chaos", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--seed",
        "--intents",
        "--duration",
        "--run-dir",
        "--keep",
        "--dry-run",
        "Exit status",
    ] {
        assert!(text.contains(needle), "help mentions {needle}:\n{text}");
    }
}

/// About 90 s on a 2-core machine (60 s of scenario, then the finale); longer only if the
/// services earn a 418 ban, which itself lasts two minutes. The run directory is kept when it
/// fails (its path is in the report).
#[test]
fn a_short_seeded_chaos_run_keeps_every_promise() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("quantum-chaos-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = chaos(&[
        "--seed",
        "11",
        "--intents",
        "60",
        "--duration",
        "60s",
        "--run-dir",
        dir.to_str().unwrap(),
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quantum chaos failed ({}):\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("verdict: PASS"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
