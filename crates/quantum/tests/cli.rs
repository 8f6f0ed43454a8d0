//! The `quantum` binary as a user runs it: help text, `quantum sim` starting, answering and
//! stopping cleanly on SIGTERM and SIGINT, and the CLI as scripts use it (issue 14, item 4):
//! results alone on stdout, `--json` everywhere, exit statuses that mean something, no panic on
//! a closed pipe, no colour in piped logs, errors that say what to do next, and a demo that
//! keeps to itself.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

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
    // NO_COLOR unset: logs into a pipe are plain text all the same.
    let mut child = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
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
    assert!(
        !stderr.contains("\x1b["),
        "no ANSI colour codes in logs that go to a pipe:\n{stderr:?}"
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
    // The demo reads no QUANTUM_* setting: a QUANTUM_REDIS_URL (here one where nothing listens)
    // does not move it off its in-process bus.
    let out = Command::new(BIN)
        .args(["demo", "--speed", "4"])
        .env(
            "QUANTUM_REDIS_URL",
            format!("redis://127.0.0.1:{}", refused_port()),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for needle in [
        "in-process bus",
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

/// A loopback port where nothing listens (bound, then released): a connection is refused.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The one JSON document a `--json` command printed: all of stdout, nothing else.
fn json_of(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "one line of JSON on stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}\n{}", text(&out.stderr)))
}

fn no_panic(out: &Output) {
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "panicked:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs a prepared `quantum` command from inside a multi-threaded tokio test.
fn output(command: &mut Command) -> Output {
    tokio::task::block_in_place(|| command.output().expect("run quantum"))
}

/// Runs a prepared `quantum` command with its stdout on a pipe whose reader is already gone,
/// so its first write fails (the `| head -1` case, made deterministic).
fn output_into_closed_pipe(command: &mut Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    tokio::task::block_in_place(|| {
        command
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run quantum")
    })
}

#[test]
fn each_command_offers_only_the_flags_it_uses() {
    let help = |command: &str| {
        let out = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command} --help");
        text(&out.stdout)
    };
    let redis_only = ["intent", "results", "halt", "resume", "trading-state"];
    let exchange_only = ["orders", "order"];
    let both = ["positions", "doctor", "flatten"];
    let services = ["execution", "exit-monitor", "run"];
    for command in redis_only {
        let text = help(command);
        assert!(text.contains("--redis-url"), "{command}:\n{text}");
        for flag in [
            "--rest-url",
            "--ws-url",
            "--venue",
            "--fill-timeout",
            "--metrics-addr",
        ] {
            assert!(!text.contains(flag), "{command} offers {flag}:\n{text}");
        }
    }
    for command in exchange_only {
        let text = help(command);
        assert!(text.contains("--rest-url"), "{command}:\n{text}");
        for flag in ["--redis-url", "--fill-timeout", "--consumer-name"] {
            assert!(!text.contains(flag), "{command} offers {flag}:\n{text}");
        }
    }
    for command in both {
        let text = help(command);
        assert!(
            text.contains("--rest-url") && text.contains("--redis-url"),
            "{command}:\n{text}"
        );
        assert!(!text.contains("--fill-timeout"), "{command}:\n{text}");
    }
    for command in services {
        let text = help(command);
        for flag in [
            "--redis-url",
            "--rest-url",
            "--fill-timeout",
            "--consumer-name",
            "--metrics-addr",
        ] {
            assert!(text.contains(flag), "{command} lacks {flag}:\n{text}");
        }
    }
    let demo = help("demo");
    assert!(!demo.contains("QUANTUM_REDIS_URL="), "{demo}");
    let intent = help("intent");
    for code in [
        "0  filled",
        "3  not filled",
        "4  partially filled",
        "5  no result",
    ] {
        assert!(
            intent.contains(code),
            "intent --help documents exit status {code}:\n{intent}"
        );
    }
}

#[test]
fn a_url_without_its_scheme_is_refused_with_the_url_meant() {
    let out = Command::new(BIN)
        .args(["results", "--redis-url", "localhost:6379"])
        .env_remove("QUANTUM_CONFIG")
        .output()
        .unwrap();
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("did you mean \"redis://localhost:6379\"?"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = Command::new(BIN)
        .args([
            "orders",
            "--symbol",
            "BTCUSDT",
            "--rest-url",
            "127.0.0.1:8090",
            "--ws-url",
            "ws://127.0.0.1:8090",
        ])
        .env_remove("QUANTUM_CONFIG")
        .env("BINANCE_API_KEY", "k")
        .env("BINANCE_SECRET_KEY", "s")
        .output()
        .unwrap();
    no_panic(&out);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("did you mean \"http://127.0.0.1:8090\"?"),
        "{stderr}"
    );
    assert!(!stderr.contains("relative URL without a base"), "{stderr}");
}

#[test]
fn a_refused_redis_connection_is_called_that_with_what_to_do() {
    let port = refused_port();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args([
            "results",
            "--redis-url",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .env_remove("QUANTUM_CONFIG")
        .output()
        .unwrap();
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.to_ascii_lowercase().contains("refused"), "{stderr}");
    assert!(stderr.contains("start redis-server"), "{stderr}");
    assert!(!stderr.contains("no answer within"), "{stderr}");
    assert_eq!(
        stderr.matches("cannot reach Redis").count(),
        1,
        "said once:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a refusal is reported at once, not after the connect timeout"
    );
}

/// Everything a script does with the CLI, against the simulator, a Redis of the test's own and
/// the execution service running in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_get_results_on_stdout_json_and_exit_statuses_that_mean_something() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let settings = support::sim_settings(&sim, &url);
    let service = service::start(settings).await.unwrap();
    let quantum = |subcommand: &str, args: &[&str]| {
        let mut command = support::quantum(subcommand, &sim, &url);
        command.args(args);
        command
    };

    // A filled intent: the result alone on stdout, as one JSON line; progress on stderr; exit 0.
    let out = output(&mut quantum(
        "intent",
        &[
            "--symbol",
            "AXSUSDT",
            "--action",
            "BUY",
            "--usd",
            "100",
            "--leverage",
            "5",
            "--id",
            "script-1",
            "--wait",
            "20s",
            "--json",
        ],
    ));
    no_panic(&out);
    let result = json_of(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{result}\n{}",
        text(&out.stderr)
    );
    assert_eq!(result["status"], "filled");
    assert_eq!(result["intent_id"], "script-1");
    assert!(
        text(&out.stderr).contains("published intent script-1"),
        "{}",
        text(&out.stderr)
    );

    // A rejected intent (a symbol the exchange does not list): exit 3, the result still on stdout.
    let out = output(&mut quantum(
        "intent",
        &[
            "--symbol", "NOPEUSDT", "--action", "BUY", "--usd", "100", "--id", "script-2",
            "--wait", "20s", "--json",
        ],
    ));
    no_panic(&out);
    let result = json_of(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{result}\n{}",
        text(&out.stderr)
    );
    assert_ne!(result["status"], "filled");
    assert!(
        text(&out.stderr).contains("was not filled"),
        "{}",
        text(&out.stderr)
    );

    // Every reporting command's --json is one JSON document on stdout.
    let results = json_of(&output(&mut quantum(
        "results",
        &["--count", "5", "--json"],
    )));
    let listed = results.as_array().expect("results --json is an array");
    assert!(
        listed
            .iter()
            .any(|r| r["result"]["intent_id"] == "script-1"),
        "{results}"
    );
    assert!(listed.iter().all(|r| r["time_ms"].is_i64()), "{results}");

    let orders = json_of(&output(&mut quantum(
        "orders",
        &["--symbol", "AXSUSDT", "--json"],
    )));
    let mine = orders
        .as_array()
        .expect("orders --json is an array")
        .iter()
        .find(|o| o["clientOrderId"] == "q-script-1")
        .unwrap_or_else(|| panic!("q-script-1 in {orders}"))
        .clone();
    assert_eq!(mine["status"], "FILLED");
    assert!(mine["updateTime"].is_i64(), "epoch ms kept in JSON: {mine}");

    let order = json_of(&output(&mut quantum(
        "order",
        &["--symbol", "AXSUSDT", "--client-id", "q-script-1", "--json"],
    )));
    assert_eq!(order["status"], "FILLED");
    assert_eq!(order["type"], "MARKET");

    let positions = json_of(&output(&mut quantum("positions", &["--json"])));
    assert!(positions["lots"].is_array(), "{positions}");

    let state = json_of(&output(&mut quantum("trading-state", &["--json"])));
    assert!(state.is_null() || state["state"].is_string(), "{state}");

    let out = output(&mut quantum("doctor", &["--ws-timeout", "5s", "--json"]));
    no_panic(&out);
    let doctor = json_of(&out);
    let checks = doctor["checks"].as_array().expect("checks");
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "redis" && c["level"] == "pass"),
        "{doctor}"
    );
    assert_eq!(doctor["passed"], out.status.success(), "{doctor}");

    let flatten = json_of(&output(&mut quantum("flatten", &["--dry-run", "--json"])));
    assert_eq!(flatten["dry_run"], true, "{flatten}");
    assert!(
        flatten["plan"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["symbol"] == "AXSUSDT"),
        "{flatten}"
    );

    // Human output: times in RFC 3339 UTC, not epoch milliseconds.
    let out = output(&mut quantum("orders", &["--symbol", "AXSUSDT"]));
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("q-script-1"))
        .expect("the order's row");
    assert!(row.contains('T') && row.trim_end().ends_with('Z'), "{row}");
    let out = output(&mut quantum(
        "order",
        &["--symbol", "AXSUSDT", "--client-id", "q-script-1"],
    ));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("status") && shown.contains("FILLED"),
        "{shown}"
    );
    assert!(
        !shown.contains("Some(") && !shown.contains("orig_type"),
        "no Rust debug dump:\n{shown}"
    );

    // The intent id given where the client order id belongs: the message names the right one.
    let out = output(&mut quantum(
        "order",
        &["--symbol", "AXSUSDT", "--client-id", "script-1"],
    ));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("client order id for intent script-1 is q-script-1"),
        "{stderr}"
    );

    // A reader that has gone away: no panic, and the exit status is the command's own.
    let out = output_into_closed_pipe(&mut quantum("orders", &["--symbol", "AXSUSDT"]));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = output_into_closed_pipe(&mut quantum("results", &["--count", "5"]));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = output_into_closed_pipe(&mut quantum(
        "intent",
        &[
            "--symbol", "NOPEUSDT", "--action", "BUY", "--usd", "100", "--id", "script-3",
            "--wait", "20s",
        ],
    ));
    no_panic(&out);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // The demo over this Redis, with the execution service reading it: the demo runs on streams
    // of its own, so the service takes none of its intents and the demo gets all its results.
    let out = output(
        Command::new(BIN)
            .args(["demo", "--speed", "4", "--redis-url", &url])
            .env_remove("QUANTUM_REDIS_URL")
            .env("NO_COLOR", "1"),
    );
    no_panic(&out);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("all promises kept"),
        "{}",
        text(&out.stdout)
    );
    assert!(stderr.contains("under quantum-demo-"), "{stderr}");
    let results = json_of(&output(&mut quantum(
        "results",
        &["--count", "100", "--json"],
    )));
    assert!(
        results
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r["result"]["intent_id"]
                .as_str()
                .unwrap_or("")
                .contains("demo-")),
        "the demo's intents stayed off the service's streams: {results}"
    );

    service.stop().await.unwrap();
    sim.shutdown().await;
}

/// Hedge mode from the command line: a SELL opens the SHORT side (the result says so), a CLOSE
/// names the side with `--position-side`, and a CLOSE that names none is refused with the reason
/// (exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intent_takes_a_position_side_on_a_hedge_mode_account() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(100),
        dual_side_position: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let url = redis.url();
    let service = service::start(support::sim_settings(&sim, &url))
        .await
        .unwrap();
    let intent = |args: &[&str]| {
        let mut command = support::quantum("intent", &sim, &url);
        command.args(args).args(["--wait", "20s", "--json"]);
        output(&mut command)
    };
    let out = intent(&[
        "--symbol",
        "AXSUSDT",
        "--action",
        "SELL",
        "--quantity",
        "30",
        "--id",
        "hg-cli-1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json_of(&out)["position_side"], "SHORT");
    let out = intent(&[
        "--symbol", "AXSUSDT", "--action", "CLOSE", "--id", "hg-cli-2",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let refused = json_of(&out);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("must name position_side"),
        "{refused}"
    );
    let out = intent(&[
        "--symbol",
        "AXSUSDT",
        "--action",
        "CLOSE",
        "--position-side",
        "short",
        "--id",
        "hg-cli-3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let closed = json_of(&out);
    assert_eq!(
        (
            closed["position_side"].as_str(),
            closed["executed_qty"].to_string().as_str()
        ),
        (Some("SHORT"), "30")
    );
    let _ = tokio::time::timeout(Duration::from_secs(20), service.stop()).await;
    sim.shutdown().await;
}
