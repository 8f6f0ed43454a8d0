//! A throwaway PostgreSQL server for tests: Debian's package binaries (`initdb`, `postgres`,
//! `pg_isready`, `createdb` under `/usr/lib/postgresql/<version>/bin`), a fresh cluster in a
//! temporary directory, trust authentication on a free loopback port, fsync off; killed and
//! removed when dropped. Run as root (CI), the cluster belongs to the `postgres` user the package
//! creates, since PostgreSQL refuses to run as root.
//!
//! [`PostgresServer::start`] returns `None`, after saying so on stderr, only when the binaries
//! are not installed (`apt-get install postgresql`; `.ci/run` installs it).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// A running `postgres` child process and its cluster directory.
#[derive(Debug)]
pub struct PostgresServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    uid: Option<u32>,
}

impl PostgresServer {
    /// Starts a server and waits until it accepts connections; `None` when PostgreSQL is not
    /// installed, unless `QUANTUM_REQUIRE_POSTGRES` is set (`.ci/run` sets it, having installed
    /// it), when a missing server is a failure, not a skip. Panics when it is installed but does
    /// not start.
    pub fn start() -> Option<PostgresServer> {
        let Some(bin) = find_bin() else {
            assert!(
                std::env::var_os("QUANTUM_REQUIRE_POSTGRES").is_none(),
                "PostgreSQL is required (QUANTUM_REQUIRE_POSTGRES is set) and not installed: no /usr/lib/postgresql/*/bin/initdb"
            );
            eprintln!(
                "SKIPPED: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); \
                 install it with `apt-get install postgresql` to run this test (CI does)"
            );
            return None;
        };
        let uid = postgres_uid();
        let mut last_failure = String::new();
        for attempt in 0..START_ATTEMPTS {
            let dir = std::env::temp_dir().join(format!(
                "quantum-pg-{}-{}-{attempt}",
                std::process::id(),
                Instant::now().elapsed().as_nanos() ^ u128::from(free_port())
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create the cluster directory");
            if let Some(uid) = uid {
                std::os::unix::fs::chown(&dir, Some(uid), None)
                    .expect("chown the cluster directory");
            }
            let data = dir.join("data");
            let init = command(&bin, "initdb", uid)
                .args(["-D"])
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
                .stdout(Stdio::null())
                .output()
                .expect("run initdb");
            if !init.status.success() {
                panic!("initdb failed: {}", String::from_utf8_lossy(&init.stderr));
            }
            let port = free_port();
            let child = command(&bin, "postgres", uid)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
                .arg(&dir)
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start postgres");
            let mut server = PostgresServer {
                child,
                port,
                dir,
                bin: bin.clone(),
                uid,
            };
            match server.wait_ready() {
                Ok(()) => return Some(server),
                Err(failure) => last_failure = failure,
            }
        }
        panic!("postgres did not start after {START_ATTEMPTS} attempts: {last_failure}");
    }

    /// The URL of database `postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let out = command(&self.bin, "createdb", self.uid)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.database_url(name)
    }

    fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("postgres exited with {status}"));
            }
            let ready = TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && command(&self.bin, "pg_isready", self.uid)
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &self.port.to_string(),
                        "-U",
                        "postgres",
                    ])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no connection on port {} within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed version's binaries.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The `postgres` user's uid when running as root (PostgreSQL refuses root), else `None`.
fn postgres_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is who runs this process.
    let me = std::fs::metadata("/proc/self").ok()?.uid();
    if me != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let uid = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres")).then(|| fields.get(2)?.parse().ok())?
    });
    Some(uid.expect(
        "running as root and there is no postgres user to run PostgreSQL as (Debian's postgresql package creates it)",
    ))
}

fn command(bin: &Path, program: &str, uid: Option<u32>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(bin.join(program));
    if let Some(uid) = uid {
        command.uid(uid);
        // Its gid too, so files it creates are not root's group.
        if let Some(gid) = gid_of(uid) {
            command.gid(gid);
        }
    }
    command
}

fn gid_of(uid: u32) -> Option<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields.get(3)?.parse().ok())?
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
