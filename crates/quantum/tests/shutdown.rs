//! Graceful shutdown as systemd does it: SIGTERM to `quantum execution` while an order is on the
//! exchange and not yet filled. The service stops taking intents, waits for the order to reach a
//! terminal state, publishes its result, acks it, and exits 0. An intent published after the
//! signal is not started: left on the stream, or, when the last read already received it, handed
//! back for another instance to claim at once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bus::{keys, Bus};
use serde_json::json;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_order_in_flight_ends_with_its_filled_result_not_a_lost_one() {
    // The fill comes 3 s after the order is accepted, and the RESULT reply does not wait for it
    // (as on the testnet): the order is NEW on the exchange when the signal comes.
    let sim = simulator::spawn(simulator::SimConfig {
        fill_delay: Duration::from_secs(3),
        result_wait: Duration::ZERO,
        ..Default::default()
    })
    .await
    .unwrap();
    let redis = testkit::RedisServer::start();
    let bus = Bus::connect(&bus::Config {
        url: redis.url(),
        ..bus::Config::default()
    })
    .await
    .unwrap();
    let mut child = support::quantum("execution", &sim, &redis.url())
        .args(["--consumer-name", "exec-a"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Log lines arrive on a channel, so the test can wait for a given one.
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let wait_for = |needle: &str, log: &mut Vec<String>| loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "no log line with {needle:?}; log so far:\n{}",
                    log.join("\n")
                )
            });
        log.push(line.clone());
        if line.contains(needle) {
            return;
        }
    };
    wait_for("execution service reading", &mut log);
    let first =
        json!({"intent_id": "term-1", "symbol": "AXSUSDT", "action": "BUY", "quantity": 16});
    bus.publish(keys::TRADE_INTENT, &first.to_string())
        .await
        .unwrap();
    wait_for("order placed AXSUSDT", &mut log);
    assert!(
        log.last().unwrap().contains("status=NEW"),
        "the order is on the exchange and not filled when the signal comes: {log:?}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(
        "shutting down: no new intents; waiting for 1 in flight",
        &mut log,
    );
    // Published after the service stopped reading: it must not be started.
    let second =
        json!({"intent_id": "term-2", "symbol": "AXSUSDT", "action": "BUY", "quantity": 16});
    bus.publish(keys::TRADE_INTENT, &second.to_string())
        .await
        .unwrap();

    let exit = tokio::task::block_in_place(|| child.wait()).unwrap();
    for line in lines.try_iter() {
        log.push(line);
    }
    let log = log.join("\n");
    assert!(exit.success(), "exit status {exit:?}:\n{log}");
    assert!(log.contains("order FILLED AXSUSDT"), "{log}");
    assert!(log.contains("execution service stopped"), "{log}");

    let results: Vec<serde_json::Value> = bus
        .latest(keys::TRADE_EXECUTION_RESULT, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::from_str(&e.payload.unwrap()).unwrap())
        .collect();
    assert_eq!(
        results.len(),
        1,
        "one result, for the intent in flight: {results:?}"
    );
    assert_eq!(results[0]["intent_id"], "term-1");
    assert_eq!(results[0]["status"], "filled");
    assert!(results[0]["entry_price"].as_f64().unwrap() > 0.0);

    // The finished intent is acked. The one published after the signal was either not read
    // (it waits on the stream) or read by the last read and handed back (pending, but claimable
    // at once by another instance); either way it was not started, and no order was placed.
    let groups = bus.group_info(keys::TRADE_INTENT).await.unwrap();
    let group = groups
        .iter()
        .find(|g| g.name == "quantum-execution")
        .unwrap();
    match (group.pending, group.lag) {
        (0, Some(1)) => {}
        (1, Some(0)) => {
            let claimed = bus
                .claim_stale(
                    keys::TRADE_INTENT,
                    "quantum-execution",
                    "another-instance",
                    Duration::from_secs(60),
                    10,
                )
                .await
                .unwrap();
            assert_eq!(claimed.len(), 1, "handed back: claimable at once");
        }
        _ => panic!("the late intent is neither waiting nor handed back: {group:?}"),
    }
    let rest = binance::RestClient::new(
        support::sim_settings(&sim, &redis.url())
            .binance_config()
            .unwrap(),
    )
    .unwrap();
    let placed = rest.all_orders("AXSUSDT", None).await.unwrap();
    assert_eq!(
        placed.len(),
        1,
        "no order for the intent published after SIGTERM: {placed:?}"
    );
    assert_eq!(placed[0].client_order_id, "q-term-1");
    sim.shutdown().await;
}
