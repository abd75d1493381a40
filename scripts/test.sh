#!/usr/bin/env bash
# The full test suite: unit tests and integration tests against real
# redis-server processes (each test starts its own), and the alert rules
# against promtool and a real Prometheus. Installs redis-server and
# prometheus from Debian's packages if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_tool redis-server redis-server
ensure_tool prometheus prometheus   # also provides promtool
ensure_tool faketime faketime       # clock-skew tests (libfaketime)
ensure_tool openssl openssl         # certificates for the Redis TLS test
cargo test --all-targets "$@"
