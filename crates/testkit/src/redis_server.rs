//! A throwaway `redis-server` for tests that talk to Redis: one per test, on a free loopback
//! port, with persistence off, killed when dropped. A server per test (rather than one per
//! binary) isolates the fixed dead-letter key between tests running in parallel, and it is the
//! only way the process is reliably killed: a server kept in a `static` is never dropped.
//!
//! There is deliberately no fallback to a shared Redis or a mock: if `redis-server` is missing
//! the tests fail and say how to install it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh server may take to answer PING before the start counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts before giving up. Another process can take the port between choosing it and the
/// server binding it; a second attempt with a new port gets past that.
const START_ATTEMPTS: usize = 5;

/// A running `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING. Panics, with installation advice, when
    /// `redis-server` is not on PATH.
    pub fn start() -> RedisServer {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            let child = match spawn(port) {
                Ok(child) => child,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server is not on PATH. Tests that claim to test the bus run against a real Redis and do \
                     not skip: install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: \
                     `brew install redis`); CI installs it."
                ),
                Err(err) => panic!("cannot start redis-server: {err}"),
            };
            let mut server = RedisServer { child, port };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("redis-server did not start after {START_ATTEMPTS} attempts: {last_failure}");
    }

    /// The URL to give the bus.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server now, so tests can watch the bus lose it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new, empty server on the same port after [`RedisServer::stop`] (or kills the
    /// running one first), as a restart of Redis under a running service would look. Panics when
    /// the port was taken in between or the server does not answer PING.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.child = spawn(port).unwrap_or_else(|err| panic!("cannot restart redis-server: {err}"));
        if let Err(failure) = self.wait_ready() {
            panic!("redis-server did not restart: {failure}");
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                ));
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "redis-server on port {} never answered PING",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `redis-server` on `port`, persistence off.
fn spawn(port: u16) -> std::io::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// A port nothing listens on right now (the OS picks it; it is free again once the probe closes).
fn free_port() -> u16 {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe socket on loopback");
    probe.local_addr().expect("probe address").port()
}

/// Whether a Redis on `port` answers an inline PING with `+PONG`.
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
