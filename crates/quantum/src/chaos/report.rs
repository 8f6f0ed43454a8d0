//! The report: what the run did (seed and schedule fingerprint, entries by kind, results by
//! status, faults injected per knob, kills and restarts, prices), one line per invariant with
//! what it checked and how many violations, and the first violation with the log lines that
//! mention its intent or client order id. Plain text, written to stdout and `report.txt`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::checks::Invariant;

/// Everything the report says besides the invariants.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    /// The account ran in hedge mode (`--hedge`).
    pub hedge: bool,
    pub fingerprint: String,
    pub duration_ms: u64,
    pub elapsed_ms: u64,
    pub run_dir: String,
    pub kept: bool,
    pub entries_by_kind: BTreeMap<String, (usize, usize)>,
    pub unpublished: Vec<String>,
    pub monitor_closes: usize,
    pub late_results: usize,
    pub results_by_status: BTreeMap<String, usize>,
    pub dead_letters: usize,
    pub faults: BTreeMap<&'static str, usize>,
    pub unfired: BTreeMap<&'static str, u64>,
    pub fault_errors: usize,
    /// Per service: (SIGKILL sent, SIGTERM sent, skipped because down, starts).
    pub kills: BTreeMap<&'static str, (usize, usize, usize, u32)>,
    pub unexpected_exits: usize,
    pub redis: Vec<String>,
    pub price_pins: usize,
    pub price_errors: usize,
    pub sweep: String,
    /// What the exchange answered (`GET /sim/v1/requests`).
    pub exchange: String,
    pub harness_problems: Vec<String>,
}

/// Lines of the logs that contain any of `needles`, at most `max`, as `file:line: text`.
pub fn grep_logs(logs: &[(String, PathBuf)], needles: &[String], max: usize) -> Vec<String> {
    let mut out = Vec::new();
    if needles.is_empty() {
        return out;
    }
    for (name, path) in logs {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle.as_str())) {
                let shown: String = line.chars().take(300).collect();
                out.push(format!("{name}:{}: {shown}", n + 1));
                if out.len() >= max {
                    out.push(format!("(more lines cut; grep the logs for {needles:?})"));
                    return out;
                }
            }
        }
    }
    out
}

/// Renders the report; `logs` are searched for the first violation's ids.
pub fn render(summary: &Summary, invariants: &[Invariant], logs: &[(String, PathBuf)]) -> String {
    let mut out = String::new();
    let s = summary;
    let _ = writeln!(
        out,
        "\n== quantum chaos report ==\nseed {}{}  schedule fingerprint {}  scenario {:.0} s  whole run {:.0} s",
        s.seed,
        if s.hedge { "  hedge-mode account" } else { "" },
        s.fingerprint,
        s.duration_ms as f64 / 1000.0,
        s.elapsed_ms as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "run directory: {}{}",
        s.run_dir,
        if s.kept { " (kept)" } else { " (removed)" }
    );
    let total: usize = s.entries_by_kind.values().map(|(n, _)| n).sum();
    let published: usize = s.entries_by_kind.values().map(|(_, p)| p).sum();
    let kinds: Vec<String> = s
        .entries_by_kind
        .iter()
        .map(|(k, (n, p))| {
            if n == p {
                format!("{k} {n}")
            } else {
                format!("{k} {p} of {n}")
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "entries published: {published} of {total} ({})",
        kinds.join(", ")
    );
    for u in &s.unpublished {
        let _ = writeln!(out, "  not published: {u}");
    }
    let _ = writeln!(
        out,
        "exit monitor close intents: {}; late-fill results: {}; dead letters: {}",
        s.monitor_closes, s.late_results, s.dead_letters
    );
    let statuses: Vec<String> = s
        .results_by_status
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(out, "results by status: {}", statuses.join(", "));
    let faults: Vec<String> = s
        .faults
        .iter()
        .map(|(k, n)| match s.unfired.get(k) {
            Some(left) => format!("{k} {n} ({left} unfired)"),
            None => format!("{k} {n}"),
        })
        .collect();
    let _ = writeln!(
        out,
        "faults injected ({} in all{}): {}",
        s.faults.values().sum::<usize>(),
        if s.fault_errors > 0 {
            format!(", {} control requests failed", s.fault_errors)
        } else {
            String::new()
        },
        faults.join(", ")
    );
    let kills: Vec<String> = s
        .kills
        .iter()
        .map(|(name, (k, t, skipped, starts))| {
            format!(
                "{name} SIGKILL {k} SIGTERM {t}{} starts {starts}",
                if *skipped > 0 {
                    format!(" (skipped {skipped}: down)")
                } else {
                    String::new()
                }
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "kills: {}; unexpected exits: {}",
        kills.join("; "),
        s.unexpected_exits
    );
    let _ = writeln!(out, "redis: {}", s.redis.join("; "));
    let _ = writeln!(
        out,
        "prices: {} pins{}; final sweep: {}",
        s.price_pins,
        if s.price_errors > 0 {
            format!(" ({} failed)", s.price_errors)
        } else {
            String::new()
        },
        s.sweep
    );
    if !s.exchange.is_empty() {
        let _ = writeln!(out, "exchange: {}", s.exchange);
    }
    for p in &s.harness_problems {
        let _ = writeln!(out, "harness: {p}");
    }
    let _ = writeln!(
        out,
        "\n{:<38} {:>8} {:>9}  note",
        "invariant", "checked", "violated"
    );
    for inv in invariants {
        let note = if !inv.unchecked.is_empty() {
            format!("NOT (fully) CHECKED: {}", inv.unchecked.join("; "))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<38} {:>8} {:>9}  {note}",
            inv.name,
            inv.checked,
            inv.violations.len()
        );
    }
    let notes: Vec<String> = invariants
        .iter()
        .flat_map(|i| i.notes.iter().map(move |n| format!("{}: {n}", i.name)))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nnotes:");
        for n in notes.iter().take(20) {
            let _ = writeln!(out, "  {n}");
        }
        if notes.len() > 20 {
            let _ = writeln!(out, "  ({} more)", notes.len() - 20);
        }
    }
    let violated: Vec<&Invariant> = invariants
        .iter()
        .filter(|i| !i.violations.is_empty())
        .collect();
    if let Some(first) = violated.first() {
        let v = &first.violations[0];
        let _ = writeln!(
            out,
            "\nFIRST VIOLATION ({}: {})\n  {}",
            first.name, first.what, v.detail
        );
        let lines = grep_logs(logs, &v.needles, 40);
        if !lines.is_empty() {
            let _ = writeln!(out, "  log lines mentioning {:?}:", v.needles);
            for l in lines {
                let _ = writeln!(out, "    {l}");
            }
        }
        let _ = writeln!(out, "\nall violations:");
        for inv in &violated {
            for v in inv.violations.iter().take(10) {
                let _ = writeln!(out, "  [{}] {}", inv.name, v.detail);
            }
            if inv.violations.len() > 10 {
                let _ = writeln!(
                    out,
                    "  [{}] ... {} more",
                    inv.name,
                    inv.violations.len() - 10
                );
            }
        }
    }
    let count: usize = invariants.iter().map(|i| i.violations.len()).sum();
    let unchecked = invariants
        .iter()
        .filter(|i| !i.unchecked.is_empty())
        .count();
    let _ = writeln!(
        out,
        "\nverdict: {}",
        match (count, unchecked) {
            (0, 0) => "PASS: every invariant checked, none violated".to_string(),
            (0, n) => format!(
                "INCONCLUSIVE: no violation, but {n} invariant(s) could not be fully checked (see above)"
            ),
            (c, 0) => format!("FAIL: {c} violation(s) of {} invariant(s)", violated.len()),
            (c, n) => format!(
                "FAIL: {c} violation(s) of {} invariant(s); {n} invariant(s) not fully checked",
                violated.len()
            ),
        }
    );
    out
}
