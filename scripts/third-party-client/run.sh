#!/usr/bin/env bash
# Checks that an unchanged third-party Binance USD-M Futures client (python-binance, pinned in
# requirements.txt) works against `quantum sim`: builds quantum, starts the simulator on a free
# loopback port, runs check_python_binance.py against it, stops the simulator.
#
#   scripts/third-party-client/run.sh [--with-ccxt] [args for check_python_binance.py, e.g. --strict --verbose]
#
# --with-ccxt also runs check_ccxt.py (ccxt binanceusdm, own venv ${TMPDIR:-/tmp}/quantum-ccxt-venv).
#
# Exit status: 0 when every required step passed, non-zero otherwise.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${TMPDIR:-/tmp}/quantum-pyclient-venv"
CCXT_VENV="${TMPDIR:-/tmp}/quantum-ccxt-venv"
WITH_CCXT=""
if [ "${1:-}" = "--with-ccxt" ]; then
    WITH_CCXT=1
    shift
fi
PYTHON="${PYTHON:-python3}"
API_KEY="pyclient-check-key"
API_SECRET="pyclient-check-secret"
# An Ed25519 API key for the Ed25519 steps: the simulator gets the public half, the check the
# private half (test-only keys, see crates/simulator/testdata/README.md).
ED25519_API_KEY="pyclient-check-ed25519-key"
ED25519_PUBLIC="$ROOT/crates/simulator/testdata/test-ed25519-public.pem"
ED25519_PRIVATE="$ROOT/crates/simulator/testdata/test-ed25519-private.pem"

# 1. Python environment (reused when present).
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
echo "== installing requirements"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
if [ -n "$WITH_CCXT" ]; then
    [ -x "$CCXT_VENV/bin/python" ] || "$PYTHON" -m venv "$CCXT_VENV"
    "$CCXT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements-ccxt.txt"
fi

# 2. The simulator.
echo "== building quantum"
(cd "$ROOT" && cargo build --quiet -p quantum)
# Where cargo put it (honours CARGO_TARGET_DIR and .cargo/config).
TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/debug/quantum"

PORT="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:$PORT"
LOG="$(mktemp "${TMPDIR:-/tmp}/quantum-sim-pyclient.XXXXXX.log")"

echo "== starting: $BIN sim --listen 127.0.0.1:$PORT --api-key $API_KEY --api-secret *** --ed25519-api-key $ED25519_API_KEY --ed25519-public-key $ED25519_PUBLIC (log $LOG)"
"$BIN" sim --listen "127.0.0.1:$PORT" --api-key "$API_KEY" --api-secret "$API_SECRET" \
    --ed25519-api-key "$ED25519_API_KEY" --ed25519-public-key "$ED25519_PUBLIC" >"$LOG" 2>&1 &
SIM_PID=$!
cleanup() {
    if kill -0 "$SIM_PID" 2>/dev/null; then
        kill "$SIM_PID" 2>/dev/null || true
        wait "$SIM_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

# 3. Wait for GET /fapi/v1/ping.
ready=""
for _ in $(seq 1 100); do
    if ! kill -0 "$SIM_PID" 2>/dev/null; then
        echo "simulator exited before answering; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    if "$VENV/bin/python" - "$BASE/fapi/v1/ping" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
    then
        ready=1
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "simulator did not answer GET /fapi/v1/ping within 10 s; its log:" >&2
    cat "$LOG" >&2
    exit 1
fi

# 4. The check.
status=0
"$VENV/bin/python" "$HERE/check_python_binance.py" \
    --http "$BASE" --api-key "$API_KEY" --api-secret "$API_SECRET" \
    --ed25519-api-key "$ED25519_API_KEY" --ed25519-private-key "$ED25519_PRIVATE" "$@" || status=$?
if [ -n "$WITH_CCXT" ]; then
    echo "== ccxt binanceusdm"
    "$CCXT_VENV/bin/python" "$HERE/check_ccxt.py" \
        --http "$BASE" --api-key "$API_KEY" --api-secret "$API_SECRET" || status=$?
fi
if [ "$status" -ne 0 ]; then
    echo "== simulator log (last 40 lines of $LOG)"
    tail -n 40 "$LOG"
fi
exit "$status"
