//! What the binary's integration tests share: the settings of quantum's services against a
//! simulator and a throwaway Redis. Each test file is its own crate and uses part of this.
#![allow(dead_code)]

use service::Settings;

/// Settings for the services of a test: the simulator's URLs and default keys, the given Redis.
pub fn sim_settings(sim: &simulator::SimHandle, redis_url: &str) -> Settings {
    Settings::custom(
        &sim.base_url(),
        &sim.ws_url(),
        redis_url,
        simulator::DEFAULT_API_KEY,
        simulator::DEFAULT_API_SECRET,
    )
    .expect("settings for the simulator")
}

/// The real binary, `quantum <subcommand>`, pointed at the simulator and `redis_url` (each only
/// where the subcommand takes it: `orders` has no `--redis-url`, `results` no `--rest-url`) with
/// the simulator's keys and plain (uncoloured) logs. Add the subcommand's own flags to it.
pub fn quantum(
    subcommand: &str,
    sim: &simulator::SimHandle,
    redis_url: &str,
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_quantum"));
    command.arg(subcommand);
    let services = ["execution", "exit-monitor", "run"];
    let exchange = ["orders", "order", "positions", "doctor", "flatten"];
    let bus = [
        "intent",
        "results",
        "positions",
        "doctor",
        "halt",
        "resume",
        "trading-state",
        "flatten",
    ];
    if services.contains(&subcommand) || exchange.contains(&subcommand) {
        command.args(["--rest-url", &sim.base_url(), "--ws-url", &sim.ws_url()]);
    }
    if services.contains(&subcommand) || bus.contains(&subcommand) {
        command.args(["--redis-url", redis_url]);
    }
    command
        .env("BINANCE_API_KEY", simulator::DEFAULT_API_KEY)
        .env("BINANCE_SECRET_KEY", simulator::DEFAULT_API_SECRET)
        .env("NO_COLOR", "1")
        // `quantum run` keeps a journal: a throwaway file, never one in the source tree.
        .env("QUANTUM_JOURNAL_URL", temp_journal_url())
        .env_remove("QUANTUM_CONFIG")
        .env_remove("QUANTUM_REDIS_URL");
    command
}

/// A SQLite journal URL in a fresh temporary directory (removed by the OS's temp cleaning).
pub fn temp_journal_url() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "quantum-test-journal-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite://{}", dir.join("journal.db").display())
}

/// Pins `symbol`'s price on the simulator (its control API; the walk pauses).
pub async fn pin(sim: &simulator::SimHandle, symbol: &str, price: &str) {
    reqwest::Client::new()
        .post(format!("{}/sim/v1/price", sim.base_url()))
        .json(&serde_json::json!({"symbol": symbol, "price": price}))
        .send()
        .await
        .expect("the simulator pins the price");
}

/// A bus on the Redis at `url`.
pub async fn bus(url: &str) -> bus::Bus {
    bus::Bus::connect(&bus::Config {
        url: url.to_string(),
        ..bus::Config::default()
    })
    .await
    .expect("redis")
}
