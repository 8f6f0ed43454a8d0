#!/usr/bin/env bash
# Tests of the Python client (clients/python): installs it into a venv as a user would
# (`pip install ./clients/python`), builds or locates the quantum binary, and runs pytest: the
# unit tests and the integration tests against the real binary (`quantum sim` and
# `quantum execution`) and a redis-server of their own on free ports.
#
#   clients/python/run-tests.sh [pytest args, e.g. -k integration -x]
#
# Environment: QUANTUM_BIN (skip the build and use this binary), PYTHON (default python3),
# QUANTUM_PY_VENV (default ${TMPDIR:-/tmp}/quantum-client-py-venv, reused when present).
# Needs python3 with venv, PyPI access (redis, pytest, setuptools) and redis-server.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${QUANTUM_PY_VENV:-${TMPDIR:-/tmp}/quantum-client-py-venv}"

# 1. Python environment (reused when present); the client installed from its directory, not
#    imported from the source tree, so the packaging is tested too.
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
echo "== installing ./clients/python and pytest"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$HERE" "pytest>=7"
# Again without dependencies: the same version number must not keep an older build installed.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$HERE"

# 2. The binary.
if [ -z "${QUANTUM_BIN:-}" ]; then
    echo "== building quantum"
    (cd "$ROOT" && cargo build --quiet --locked -p quantum)
    # Where cargo put it (honours CARGO_TARGET_DIR and .cargo/config).
    TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    export QUANTUM_BIN="$TARGET_DIR/debug/quantum"
fi
echo "== binary $QUANTUM_BIN"

# 3. The tests; a missing binary or redis-server is a failure here, not a skip.
export QUANTUM_REQUIRE_INTEGRATION=1
cd "$HERE"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -v --durations=5 tests "$@"
