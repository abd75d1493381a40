#!/usr/bin/env bash
# Tests of the Python client: installs it (with pytest, pytest-asyncio,
# mypy, and the mcp package for tests/test_mcp.py against `drover mcp`)
# into a fresh virtualenv, checks its types with mypy --strict, and runs
# its tests against a real `drover dev` started by the tests, with the
# release binary (DROVER_BIN, default target/release/drover: build it first).
# Run from anywhere; CI runs it from the repository root after the build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
source scripts/ensure-tools.sh
ensure_tool redis-server redis-server

export DROVER_BIN=${DROVER_BIN:-$repo/target/release/drover}
[ -x "$DROVER_BIN" ] || { echo "error: $DROVER_BIN is missing; run cargo build --release first" >&2; exit 1; }

venv=$(mktemp -d -t drover-pyclient.XXXXXX)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$here" pytest pytest-asyncio "mypy==2.4.1" "mcp==2.3.0"

echo "==> mypy --strict (package and tests)"
(cd "$here" && "$venv/bin/python" -m mypy --strict --no-incremental --cache-dir=/dev/null src/drover_client tests)

echo "==> pytest against drover dev ($DROVER_BIN)"
cd "$here"
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests
