//! What the commands print, and where. The rule: a command's result goes to standard output and
//! nothing else does (progress, notes and logs go to standard error), so `quantum … | jq` and
//! `quantum … | head -1` work. `outln!` and `out!` replace `println!` and `print!` for that
//! result: `println!` panics when the reader has gone (`| head -1` closes the pipe), and a panic
//! is exit status 101 and a backtrace for what is a normal way to stop reading. Here a write to a
//! closed pipe ends the command's output quietly instead; the command still finishes what it was
//! doing and exits with its own status (an `intent` that was rejected still exits 3), because
//! the status is what a script reads when it does not read the output. Times in human output are
//! RFC 3339 in UTC ([`time`]); `--json` keeps Binance's and the bus's epoch milliseconds.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

/// Set once a write to standard output failed: the reader is gone, so nothing more is written.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to standard output, flushed, unless the reader has gone away.
pub fn write(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::warn!("cannot write to standard output any more: {e}");
        }
    }
}

/// `println!` for a command's result; see the module doc.
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for a command's result; see the module doc.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// One JSON document on one line, for `--json`.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// An epoch-milliseconds time as RFC 3339 in UTC with milliseconds (`2026-12-04T23:10:26.123Z`),
/// the one format of times in human output.
pub fn time(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => ms.to_string(),
    }
}

/// Whether logs may carry colour: only when standard error is a terminal and `NO_COLOR` is not
/// set (<https://no-color.org>: present and not empty). Files, pipes and the journal get plain
/// text, so the README's grep recipes match.
pub fn colour_logs() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(super::time(1_796_425_826_123), "2026-12-04T23:10:26.123Z");
        assert_eq!(super::time(-5), "-5");
    }
}
