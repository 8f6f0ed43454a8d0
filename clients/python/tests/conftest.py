"""The integration tests' world: a redis-server of their own on a free port, `quantum sim` on a
free port and `quantum execution` between them, all started once per session and stopped at the
end. The binary is $QUANTUM_BIN, else target/debug/quantum at the repository root. Without the
binary or redis-server the integration tests are skipped, unless QUANTUM_REQUIRE_INTEGRATION=1
(run-tests.sh sets it), which makes that a failure."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
SIM_KEY = "quantum-sim-key"
SIM_SECRET = "quantum-sim-secret"

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], Optional[T]], timeout: float = 20.0, log: Optional[Path] = None) -> T:
    """Polls `check` until it returns something other than None, or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = "\n--- " + str(log) + " (last 40 lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            pytest.fail(f"timed out after {timeout} s waiting for {what}{tail}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process with its output in a log file; stopped (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, name: str, args: List[str], log: Path, env: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def search(self, pattern: str) -> Optional[str]:
        """The first group of `pattern` in the log; fails at once if the process has exited."""
        m = re.search(pattern, self.text())
        if m:
            return m.group(1)
        if not self.alive():
            pytest.fail(f"{self.name} exited with {self.proc.returncode}; its log:\n{self.text()}")
        return None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


def _missing(what: str) -> None:
    if os.environ.get("QUANTUM_REQUIRE_INTEGRATION") == "1":
        pytest.fail(f"{what} (QUANTUM_REQUIRE_INTEGRATION=1)")
    pytest.skip(what)


def quantum_bin() -> Path:
    path = Path(os.environ.get("QUANTUM_BIN", REPO_ROOT / "target" / "debug" / "quantum"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not os.access(path, os.X_OK):
        _missing(f"no quantum binary at {path}: build it (cargo build -p quantum) or set QUANTUM_BIN")
    return path


@dataclass
class Sim:
    """The simulator: its address and the calls the tests make to it (Binance REST, signed with
    the default keys, and the /sim/v1 control API)."""

    base: str

    @property
    def ws(self) -> str:
        return "ws" + self.base[len("http"):]

    def _call(self, method: str, path: str, body: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None) -> Any:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code} {e.read().decode(errors='replace')}") from None

    def signed_get(self, path: str, **params: Any) -> Any:
        params["timestamp"] = int(time.time() * 1000)
        query = urllib.parse.urlencode(params)
        sig = hmac.new(SIM_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
        return self._call("GET", f"{path}?{query}&signature={sig}", headers={"X-MBX-APIKEY": SIM_KEY})

    def order(self, symbol: str, client_order_id: str) -> Dict[str, Any]:
        return dict(self.signed_get("/fapi/v1/order", symbol=symbol, origClientOrderId=client_order_id))

    def trades(self, symbol: str, order_id: int) -> List[Dict[str, Any]]:
        return list(self.signed_get("/fapi/v1/userTrades", symbol=symbol, orderId=order_id))

    def faults(self, **knobs: Any) -> Any:
        return self._call("POST", "/sim/v1/faults", json.dumps(knobs).encode(), {"Content-Type": "application/json"})


@dataclass
class World:
    redis_url: str
    sim: Sim
    execution: Process


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    binary = quantum_bin()
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        _missing("redis-server is not installed (Debian: apt-get install redis-server)")
    assert redis_server is not None
    logs = tmp_path_factory.mktemp("quantum-world")
    started: List[Process] = []
    try:
        # 1. Redis, on a port nobody else uses (a port taken between the probe and the start
        #    makes redis-server exit: then another port is tried).
        redis_url = ""
        for attempt in range(5):
            port = free_port()
            p = Process(
                "redis-server",
                [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(logs)],
                logs / f"redis-{attempt}.log",
            )
            started.append(p)
            deadline = time.monotonic() + 20
            while p.alive() and "Ready to accept connections" not in p.text() and time.monotonic() < deadline:
                time.sleep(0.05)
            if p.alive() and "Ready to accept connections" in p.text():
                redis_url = f"redis://127.0.0.1:{port}"
                break
        if not redis_url:
            pytest.fail(f"redis-server did not start; its log:\n{started[-1].text()}")

        # 2. The simulator, on port 0: it prints the address it got.
        sim_proc = Process(
            "quantum sim",
            [str(binary), "sim", "--listen", "127.0.0.1:0", "--fill-delay-ms", "150", "--tick-ms", "200"],
            logs / "sim.log",
            env=_env(),
        )
        started.append(sim_proc)
        addr = wait_for("quantum sim's address", lambda: sim_proc.search(r"REST\s+http://(\S+)/fapi"), log=sim_proc.log)
        sim = Sim(f"http://{addr}")

        # 3. The execution service; ready when its /healthz answers 200.
        env = _env()
        env.update(BINANCE_API_KEY=SIM_KEY, BINANCE_SECRET_KEY=SIM_SECRET)
        execution = Process(
            "quantum execution",
            [
                str(binary), "execution",
                "--redis-url", redis_url,
                "--rest-url", sim.base,
                "--ws-url", sim.ws,
                "--metrics-addr", "127.0.0.1:0",
                "--consumer-name", "pytest",
                "--fill-timeout", "10s",
            ],
            logs / "execution.log",
            env=env,
        )
        started.append(execution)
        metrics = wait_for("quantum execution's metrics address", lambda: execution.search(r"metrics on http://(\S+)/metrics"), timeout=60, log=execution.log)

        def healthy() -> Optional[bool]:
            try:
                with urllib.request.urlopen(f"http://{metrics}/healthz", timeout=2) as r:
                    return True if r.status == 200 else None
            except (urllib.error.URLError, OSError):
                if not execution.alive():
                    pytest.fail(f"quantum execution exited; its log:\n{execution.text()}")
                return None

        wait_for("quantum execution to be healthy", healthy, timeout=60, log=execution.log)
        yield World(redis_url=redis_url, sim=sim, execution=execution)
    finally:
        for p in reversed(started):
            p.stop()


def _env() -> Dict[str, str]:
    """This environment without quantum's own variables (a QUANTUM_CONFIG or QUANTUM_REDIS_URL of
    the caller must not point the tests' processes elsewhere), with plain logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUANTUM_", "BINANCE_"))}
    env["NO_COLOR"] = "1"
    env["QUANTUM_LOG"] = "info"
    return env
