#!/usr/bin/env bash
# Quick start: builds drover, starts a local cluster with `drover dev` (its
# own redis-server on a free port, a coordinator, a distributor and two
# workers), runs a demo workload of 10000 tasks against it, shows the
# workers and one task, and stops the cluster. Installs redis-server from
# Debian's packages if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-tools.sh
ensure_tool redis-server redis-server
ensure_tool curl curl

cargo build --release --quiet
bin=target/release/drover
log=$(mktemp -t drover-dev.XXXXXX.log)
port=${DEMO_PORT:-7070}
admin=${DEMO_ADMIN_PORT:-9090}
export DROVER_API="http://127.0.0.1:$port"
export DROVER_API_TOKEN=${DROVER_API_TOKEN:-$("$bin" keygen --token)}

"$bin" dev --workers 2 --capacity 64 --http "127.0.0.1:$port" --admin-addr "127.0.0.1:$admin" >"$log" 2>&1 &
dev_pid=$!
trap 'kill -TERM $dev_pid 2>/dev/null; wait $dev_pid 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
  kill -0 $dev_pid 2>/dev/null || { echo "drover dev exited; its log:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$admin/ready" >/dev/null || { echo "drover dev did not become ready; log: $log" >&2; exit 1; }

echo "==> cluster up: API $DROVER_API (log: $log)"
"$bin" workers
echo "==> submitting 10000 noop tasks and waiting for them"
"$bin" submit noop --count 10000 --wait
echo "==> one echo task, end to end"
id=$("$bin" submit echo --input '{"hello":"drover"}')
"$bin" status "$id" --wait 10s
echo "==> stopping the cluster (SIGTERM drains every role)"
