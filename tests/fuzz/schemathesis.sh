#!/usr/bin/env bash
# API fuzzing of the coordinator with schemathesis, against real processes.
#
# Starts its own redis-server (free port, temp dir, no persistence) and a
# cluster of separate roles (coordinator, distributor, one worker with
# roles/worker.toml's builtin handlers) with three API tokens, admin, read
# and submit, then runs:
#   1. auth matrix   every documented operation: 401 without / with a bad
#                    token, 403 for the wrong scope (tests/fuzz/auth_matrix.py)
#   2. no token      schemathesis, every operation must answer 401
#   3. read token    schemathesis on the POST operations: all 403
#   4. submit token  schemathesis on the GET operations: all 403
#   5. admin token   schemathesis with every check (no 5xx, status codes,
#                    content types, headers and bodies as documented,
#                    schema-valid data accepted and invalid data rejected,
#                    stateful links, auth not ignored), coverage + fuzzing +
#                    stateful phases
#   6. cluster       every process still running and ready, no panic logged
# and stops everything it started. Exits 1 if any step failed.
#
# Needs python3 (3.9+) and PyPI (schemathesis goes into a venv under
# ${TMPDIR:-/tmp}/drover-fuzz-venv, reused), cargo (builds target/debug/drover
# when missing or older than the sources), redis-server (installed from
# Debian's packages when missing, as scripts/test.sh does).
#
# Knobs (environment):
#   DROVER_FUZZ_SEED      seed for every schemathesis run (default: random, printed)
#   DROVER_FUZZ_EXAMPLES  max examples per operation and phase, admin run (default 50)
#   DROVER_FUZZ_MAX_TIME  time budget of the admin run in seconds (default 90)
#   DROVER_FUZZ_AUTH_TIME time budget of each token run in seconds (default 12)
#   DROVER_FUZZ_WORKERS   schemathesis workers (default 1; see ST_WORKERS below)
#   DROVER_BIN            drover binary to test (default target/debug/drover, built if needed)
#   DROVER_FUZZ_SPEC      an OpenAPI file to fuzz with instead of the server's
#                         /v1/openapi.json (to try a document fix before building it)
#   DROVER_FUZZ_KEEP=1    keep the work dir (logs, reports) even when all passed
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/fuzz
TMP_BASE=${TMPDIR:-/tmp}
VENV=$TMP_BASE/drover-fuzz-venv
ST_VERSION=4.32.5
SEED=${DROVER_FUZZ_SEED:-$(( (RANDOM << 15) | RANDOM ))}
EXAMPLES=${DROVER_FUZZ_EXAMPLES:-50}
MAX_TIME=${DROVER_FUZZ_MAX_TIME:-90}
AUTH_TIME=${DROVER_FUZZ_AUTH_TIME:-12}
BIN=${DROVER_BIN:-$ROOT/target/debug/drover}
# One schemathesis worker: with several threads, hypothesis' strategy reprs
# (ast.parse) hit CPython 3.11's "AST constructor recursion depth mismatch"
# SystemError (python/cpython#106905) and the run reports a runtime error.
ST_WORKERS=${DROVER_FUZZ_WORKERS:-1}
START=$SECONDS
SPEC_FILE=""
if [ -n "${DROVER_FUZZ_SPEC:-}" ]; then
  SPEC_FILE=$(realpath "$DROVER_FUZZ_SPEC")
  [ -f "$SPEC_FILE" ] || { echo "fuzz: error: DROVER_FUZZ_SPEC=$DROVER_FUZZ_SPEC is not a file" >&2; exit 1; }
fi

say() { printf '==> %s\n' "$*"; }
die() { printf 'fuzz: error: %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------

command -v python3 >/dev/null || die "python3 is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "python3 >= 3.9 is required"

ensure_schemathesis() {
  if [ -x "$VENV/bin/st" ] && [ "$("$VENV/bin/st" --version 2>/dev/null)" = "st, version $ST_VERSION" ]; then
    return 0
  fi
  say "installing schemathesis $ST_VERSION into $VENV"
  if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      # Debian's python3 keeps venv in a package of its own.
      source "$ROOT/scripts/ensure-tools.sh"
      local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
      $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    fi
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$ST_VERSION"
  [ "$("$VENV/bin/st" --version)" = "st, version $ST_VERSION" ] || die "schemathesis $ST_VERSION did not install"
}
if command -v flock >/dev/null; then
  exec 9>"$VENV.lock"
  flock 9
  ensure_schemathesis
  flock -u 9
else
  ensure_schemathesis
fi
ST=$VENV/bin/st

source "$ROOT/scripts/ensure-tools.sh"
ensure_tool redis-server redis-server

if [ -z "${DROVER_BIN:-}" ]; then
  if [ ! -x "$BIN" ] || [ -n "$(cd "$ROOT" && find src lua Cargo.toml Cargo.lock -newer "$BIN" -print -quit 2>/dev/null)" ]; then
    say "cargo build (target/debug/drover is missing or older than the sources)"
    (cd "$ROOT" && cargo build --quiet --bin drover)
  fi
fi
[ -x "$BIN" ] || die "no drover binary at $BIN"

# --- cluster ---------------------------------------------------------------

WORK=$(mktemp -d "$TMP_BASE/drover-fuzz.XXXXXX")
PIDS=()
FAILED=0

cleanup() {
  local rc=$?
  # Roles first (they drain; the worker's grace is 1 s here), Redis last.
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + 10))
  for pid in "${PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "${REDIS_PID:-}" ]; then
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  if [ "$rc" -eq 0 ] && [ "$FAILED" -eq 0 ] && [ "${DROVER_FUZZ_KEEP:-}" != 1 ]; then
    rm -rf "$WORK"
  else
    echo "fuzz: logs and reports kept in $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r REDIS_PORT HTTP_PORT ADMIN_C ADMIN_D ADMIN_W < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)

mkdir -p "$WORK/redis" "$WORK/reports"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save '' --appendonly no \
  --maxmemory-policy noeviction --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!

ADMIN_TOKEN=$("$BIN" keygen --token)
READ_TOKEN=$("$BIN" keygen --token)
SUBMIT_TOKEN=$("$BIN" keygen --token)
DROVER_SIGNING_KEYS=$("$BIN" keygen --kid k1)
export DROVER_SIGNING_KEYS
export DROVER_API_TOKENS="$ADMIN_TOKEN:admin;$READ_TOKEN:read;$SUBMIT_TOKEN:submit"
export DROVER_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export DROVER_NAMESPACE=fuzz
export DROVER_LOG_FORMAT=text
# Long-polls of /wait end after 2 s instead of 60, so the stateful phase
# spends its time on requests; a stopping worker hands tasks back after 1 s.
export DROVER_WAIT_MAX=2s
export DROVER_WORKER_GRACE=1s

cd "$ROOT"
"$BIN" coordinator --config roles/coordinator.toml --id fuzz-coordinator \
  --http-addr "127.0.0.1:$HTTP_PORT" --admin-addr "127.0.0.1:$ADMIN_C" >"$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
"$BIN" distributor --config roles/distributor.toml --id fuzz-distributor \
  --admin-addr "127.0.0.1:$ADMIN_D" >"$WORK/distributor.log" 2>&1 &
PIDS+=($!)
"$BIN" worker --config roles/worker.toml --id fuzz-worker-1 \
  --admin-addr "127.0.0.1:$ADMIN_W" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)
unset DROVER_SIGNING_KEYS DROVER_API_TOKENS

API=http://127.0.0.1:$HTTP_PORT
say "cluster: API $API, redis :$REDIS_PORT, admin :$ADMIN_C :$ADMIN_D :$ADMIN_W, work dir $WORK"

# Ready on every admin port, and the worker's handlers registered.
if ! python3 - "$API" "$ADMIN_TOKEN" "$ADMIN_C" "$ADMIN_D" "$ADMIN_W" <<'EOF'
import json, sys, time, urllib.request
api, token, *admins = sys.argv[1:]
deadline = time.time() + 60
def get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as r:
            return r.status, r.read()
    except Exception:
        return None, b""
while time.time() < deadline:
    ready = all(get(f"http://127.0.0.1:{p}/ready")[0] == 200 for p in admins)
    st, body = get(f"{api}/v1/workers", {"Authorization": f"Bearer {token}"})
    if ready and st == 200 and any("noop" in w["handlers"] for w in json.loads(body)["workers"]):
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
EOF
then
  for f in redis coordinator distributor worker; do echo "--- $f.log (tail)"; tail -n 20 "$WORK/$f.log"; done
  die "the cluster did not become ready within 60 s"
fi

# --- steps -----------------------------------------------------------------

STEP_NAMES=()
STEP_RESULTS=()

# step NAME LOG COMMAND...: runs COMMAND with output to LOG; prints the
# failures section on failure, the closing summary otherwise.
step() {
  local name=$1 log=$2; shift 2
  local t0=$SECONDS rc=0
  say "$name"
  "$@" >"$log" 2>&1 || rc=$?
  if [ "$rc" -eq 0 ]; then
    grep -E '^(auth matrix:|3 roles running|Test cases:|  [0-9]+ generated|=+ .* in [0-9.]+s =+$)' "$log" | sed 's/^/    /' || true
    STEP_RESULTS+=("PASS $((SECONDS - t0))s")
  else
    if grep -q '^=* FAILURES =*$' "$log"; then
      sed -n '/^=* FAILURES =*$/,$p' "$log"
    else
      tail -n 60 "$log"
    fi
    STEP_RESULTS+=("FAIL $((SECONDS - t0))s (exit $rc, full log $log)")
    FAILED=$((FAILED + 1))
  fi
  STEP_NAMES+=("$name")
}

export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}
export SCHEMATHESIS_HOOKS=drover_checks PYTHONDONTWRITEBYTECODE=1
# schemathesis keeps its crash files (for `st replay ID`) under the cwd.
cd "$WORK"
SPEC=(--url "$API" "$API/v1/openapi.json")
if [ -n "${DROVER_FUZZ_SPEC:-}" ]; then
  SPEC=(--url "$API" "$SPEC_FILE")
  say "using the document $DROVER_FUZZ_SPEC instead of the server's"
fi
COMMON=(--seed "$SEED" --no-color --warnings off --request-timeout 10 --generation-database none)
AUTH_CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,drover_expected_status
say "schemathesis $ST_VERSION, seed $SEED (DROVER_FUZZ_SEED=$SEED to repeat)"

step "auth matrix (every operation, every token)" "$WORK/auth-matrix.log" \
  python3 "$HERE/auth_matrix.py" "$API" "$ADMIN_TOKEN" "$READ_TOKEN" "$SUBMIT_TOKEN"

step "schemathesis without a token: every operation 401" "$WORK/st-no-token.log" \
  env DROVER_FUZZ_EXPECT_STATUS=401 DROVER_FUZZ_AUTH_DESC="no token" \
  "$ST" run "${SPEC[@]}" "${COMMON[@]}" --checks "$AUTH_CHECKS" --phases coverage,fuzzing \
  --max-examples 20 --max-time "$AUTH_TIME" --workers "$ST_WORKERS" \
  --report junit --report-junit-path "$WORK/reports/no-token.xml"

step "schemathesis with a read-only token: POST operations 403" "$WORK/st-read-token.log" \
  env DROVER_FUZZ_EXPECT_STATUS=403 DROVER_FUZZ_TOKEN="$READ_TOKEN" DROVER_FUZZ_AUTH_DESC="read-only token on POST" \
  "$ST" run "${SPEC[@]}" "${COMMON[@]}" -H "Authorization: Bearer $READ_TOKEN" --include-method POST \
  --checks "$AUTH_CHECKS" --phases coverage,fuzzing --max-examples 20 --max-time "$AUTH_TIME" --workers "$ST_WORKERS" \
  --report junit --report-junit-path "$WORK/reports/read-token.xml"

step "schemathesis with a submit-only token: GET operations 403" "$WORK/st-submit-token.log" \
  env DROVER_FUZZ_EXPECT_STATUS=403 DROVER_FUZZ_TOKEN="$SUBMIT_TOKEN" DROVER_FUZZ_AUTH_DESC="submit-only token on GET" \
  "$ST" run "${SPEC[@]}" "${COMMON[@]}" -H "Authorization: Bearer $SUBMIT_TOKEN" --include-method GET \
  --checks "$AUTH_CHECKS" --phases coverage,fuzzing --max-examples 20 --max-time "$AUTH_TIME" --workers "$ST_WORKERS" \
  --report junit --report-junit-path "$WORK/reports/submit-token.xml"

# positive_data_acceptance is replaced by drover_positive_data_acceptance
# (tests/fuzz/drover_checks.py): the same check, except for the 422s of the
# submit operations that no schema can express (unknown handler, ...).
step "schemathesis with the admin token: all checks" "$WORK/st-admin.log" \
  "$ST" run "${SPEC[@]}" "${COMMON[@]}" -H "Authorization: Bearer $ADMIN_TOKEN" \
  --checks all --exclude-checks positive_data_acceptance,drover_expected_status \
  --phases examples,coverage,fuzzing,stateful --max-examples "$EXAMPLES" --max-time "$MAX_TIME" --workers "$ST_WORKERS" \
  --report junit,ndjson --report-junit-path "$WORK/reports/admin.xml" --report-ndjson-path "$WORK/reports/admin.ndjson"

check_cluster() {
  local bad=0 pid name
  local names=(coordinator distributor worker)
  for i in 0 1 2; do
    pid=${PIDS[$i]}; name=${names[$i]}
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name (pid $pid) is no longer running"; bad=1
    fi
  done
  for port in "$ADMIN_C" "$ADMIN_D" "$ADMIN_W"; do
    python3 -c 'import sys,urllib.request; urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ready", timeout=5)' "$port" \
      || { echo "/ready on :$port is not 200"; bad=1; }
  done
  for name in "${names[@]}"; do
    if grep -nE 'panicked|ERROR' "$WORK/$name.log" | head -n 20 | grep .; then
      echo "^ errors in $name.log"; bad=1
    fi
  done
  [ "$bad" -eq 0 ] && echo "3 roles running and ready, no panic or ERROR in their logs"
  return "$bad"
}
step "cluster survived (processes, /ready, logs)" "$WORK/cluster.log" check_cluster

# --- summary -----------------------------------------------------------------

echo
echo "================ drover API fuzzing summary ================"
for i in "${!STEP_NAMES[@]}"; do
  printf '  %-58s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"
done
echo "  seed $SEED, schemathesis $ST_VERSION, $((SECONDS - START)) s in all"
echo "fuzz: $(( ${#STEP_NAMES[@]} - FAILED )) passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
