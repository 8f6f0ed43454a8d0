//! The `quantum` binary as a user runs it: help text, and `quantum sim` starting, answering and
//! stopping cleanly on SIGTERM and SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quantum");

#[test]
fn help_lists_the_sim_subcommand_and_its_flags() {
    let out = Command::new(BIN).args(["sim", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--api-key",
        "--api-secret",
        "--fill-delay-ms",
        "--seed",
        "--symbols",
        "--price-file",
        "--ed25519-public-key",
        "--ed25519-api-key",
        "--rsa-public-key",
        "--rsa-api-key",
    ] {
        assert!(text.contains(flag), "help mentions {flag}:\n{text}");
    }
}

#[test]
fn a_private_key_given_as_the_public_key_stops_the_start_without_echoing_it() {
    let private = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../simulator/testdata/test-ed25519-private.pem"
    );
    let out = Command::new(BIN)
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--ed25519-public-key",
            private,
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("not an Ed25519 public key") && text.contains("quantum-sim-ed25519-key"),
        "{text}"
    );
    let pem = std::fs::read_to_string(private).unwrap();
    let body = pem.lines().nth(1).unwrap();
    assert!(
        !text.contains(body),
        "the key's text reached the output: {text}"
    );
}

fn stops_cleanly_on(signal: &str) {
    let mut child = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // The banner names the REST address and the API key; read until the key line.
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push(line.clone());
        if line.contains("api key") {
            break;
        }
    }
    let rest = banner
        .iter()
        .find(|l| l.contains("REST"))
        .expect("REST line in the banner")
        .clone();
    let addr = rest
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(
        banner
            .iter()
            .any(|l| l.contains(simulator::DEFAULT_API_KEY)),
        "{banner:?}"
    );
    let reply = std::net::TcpStream::connect(&addr).map(|mut s| {
        use std::io::{Read, Write};
        s.write_all(b"GET /fapi/v1/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    });
    assert!(reply.unwrap().ends_with("{}"), "ping answers {{}}");
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "exit status {exit:?} after {signal}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("shutting down") && stderr.contains("stopped"),
        "logs say so:\n{stderr}"
    );
    assert!(
        stderr.contains("GET /fapi/v1/ping -> 200"),
        "each request is logged in one line:\n{stderr}"
    );
}

#[test]
fn sim_stops_cleanly_on_sigterm() {
    stops_cleanly_on("-TERM");
}

#[test]
fn sim_stops_cleanly_on_sigint() {
    stops_cleanly_on("-INT");
}

#[test]
fn the_demo_runs_its_scenario_keeps_every_promise_and_prints_the_table() {
    let out = Command::new(BIN)
        .args(["demo", "--speed", "4"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "take-profit",
        "stop-loss",
        "trailing stop",
        "all promises kept",
    ] {
        assert!(stdout.contains(needle), "{needle} missing:\n{stdout}");
    }
    for marker in [
        "status=NEW",
        "confirmed by user_stream",
        "TP_HIT",
        "SL_HIT",
        "TRAIL_HIT",
        "position closed",
    ] {
        assert!(stderr.contains(marker), "the log lacks {marker}:\n{stderr}");
    }
}
