//! The incident's manual checks as commands, run as a user runs them: `quantum intent` publishes
//! and waits for the result, `quantum results`, `quantum orders` and `quantum order` show what the
//! bus and the exchange hold. The simulator, a real redis-server and the execution service run in
//! this test process; the commands are the real binary.

use std::process::Command;
use std::time::Duration;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_quantum");

fn run(args: &[&str], sim: &simulator::SimHandle, redis: &str) -> (bool, String, String) {
    let (subcommand, rest) = args.split_first().expect("a subcommand");
    let out = support::quantum(subcommand, sim, redis)
        .args(rest)
        .output()
        .expect("run quantum");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intent_results_orders_and_order_show_one_confirmed_trade() {
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let settings = support::sim_settings(&sim, &redis.url());
    let service = service::start(settings).await.unwrap();

    let url = redis.url();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        run(
            &[
                "intent",
                "--symbol",
                "AXSUSDT",
                "--action",
                "BUY",
                "--usd",
                "100",
                "--leverage",
                "10",
                "--sl-pct",
                "1",
                "--id",
                "cli-1",
                "--wait",
                "20s",
            ],
            &sim,
            &url,
        )
    });
    assert!(ok, "quantum intent failed:\n{out}\n{err}");
    assert!(out.contains("\"status\": \"filled\""), "{out}");
    assert!(out.contains("\"client_order_id\": \"q-cli-1\""), "{out}");

    let (ok, out, _) =
        tokio::task::block_in_place(|| run(&["results", "--count", "5"], &sim, &url));
    assert!(ok && out.contains("\"intent_id\":\"cli-1\""), "{out}");

    let (ok, out, err) =
        tokio::task::block_in_place(|| run(&["orders", "--symbol", "AXSUSDT"], &sim, &url));
    assert!(ok, "{err}");
    assert!(out.contains("q-cli-1") && out.contains("FILLED"), "{out}");

    let (ok, out, err) = tokio::task::block_in_place(|| {
        run(
            &["order", "--symbol", "AXSUSDT", "--client-id", "q-cli-1"],
            &sim,
            &url,
        )
    });
    assert!(ok, "{err}");
    assert!(out.contains("Filled") || out.contains("FILLED"), "{out}");

    let (ok, _, err) = tokio::task::block_in_place(|| {
        run(
            &[
                "intent", "--symbol", "AXSUSDT", "--action", "HOLD", "--usd", "10",
            ],
            &sim,
            &url,
        )
    });
    assert!(
        !ok && err.contains("action"),
        "a bad intent is refused before it is published: {err}"
    );

    service.stop().await.unwrap();
    sim.shutdown().await;
}

#[test]
fn mainnet_is_refused_without_allow_mainnet() {
    let out = Command::new(BIN)
        .args(["execution", "--venue", "mainnet"])
        .env("BINANCE_API_KEY", "k")
        .env("BINANCE_SECRET_KEY", "s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow-mainnet"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_shows_the_plan_the_distances_and_the_exchange_side_orders() {
    let sim = simulator::spawn(simulator::SimConfig::default())
        .await
        .unwrap();
    let redis = testkit::RedisServer::start();
    let settings = support::sim_settings(&sim, &redis.url());
    let execution = service::start(settings.clone()).await.unwrap();
    let (monitor, _) = service::exit_monitor::start(settings).await.unwrap();
    let url = redis.url();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        run(
            &[
                "intent",
                "--symbol",
                "ETHUSDT",
                "--action",
                "BUY",
                "--quantity",
                "0.05",
                "--tp-pct",
                "3",
                "--sl-pct",
                "1",
                "--id",
                "pos-1",
                "--wait",
                "20s",
            ],
            &sim,
            &url,
        )
    });
    assert!(ok, "{out}\n{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let out = loop {
        let (ok, out, err) = tokio::task::block_in_place(|| run(&["positions"], &sim, &url));
        assert!(ok, "quantum positions failed: {err}");
        if out.contains("STOP_MARKET@")
            && out.contains("TAKE_PROFIT_MARKET@")
            && !out.contains("feed age: unknown")
        {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "positions never showed the protection:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(out.contains("pos-1 ETHUSDT Long qty 0.05"), "{out}");
    assert!(
        out.contains("take-profit") && out.contains("stop-loss") && out.contains('%'),
        "{out}"
    );
    monitor.stop().await.unwrap();
    execution.stop().await.unwrap();
    sim.shutdown().await;
}
