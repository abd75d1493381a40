#!/usr/bin/env bash
# The full test suite: unit tests and integration tests against real
# redis-server processes (each test starts its own). Installs redis-server
# from Debian's packages if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_tool redis-server redis-server
cargo test --all-targets "$@"
