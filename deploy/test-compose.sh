#!/usr/bin/env bash
# deploy/test-compose.sh: end-to-end test of docker-compose.yml under churn.
#
# Builds the images (deploy/build-images.sh), starts the compose cluster
# (with the "ha" profile: two coordinators, two distributors) under a unique
# project name with the API on a free loopback port, and runs
# 2000 `sleep` tasks in six waves while it
#   1. scales workers 1 -> 3,
#   2. SIGKILLs one worker container (docker kill),
#   3. scales workers to 5,
#   4. scales workers back to 1,
#   5. restarts the coordinator,
#   6. restarts every role container one at a time (rolling restart),
#   7. upgrades every role by recreating its containers with a new image tag,
#      service by service,
# then waits: every submitted task must reach "succeeded" (none lost, none
# dead), checked by id against the API, and a last `submit --wait` must pass.
# Finally `drover snapshot export` inside the coordinator container backs up
# every task, and `drover snapshot import` restores it into a new namespace.
# Secrets are exercised both ways: signing keys in the environment, API
# tokens and the Redis password from mounted files (*_FILE).
# `down -v` cleans up on exit, also on failure. Exits non-zero on any failure.
#
# Environment (all optional):
#   DROVER_COMPOSE              compose command (default: "docker compose" if
#                               present, else docker-compose)
#   DROVER_SKIP_BUILD=1         use existing images (skip build-images.sh)
#   DROVER_SKIP_CARGO=1         build images from the existing target/release/drover
#   DROVER_TEST_TASKS=2000      tasks in total (six waves)
#   DROVER_TEST_SLEEP_MS=500    input of the builtin sleep handler (ms per task)
#   DROVER_TEST_CAPACITY=4      slots per worker (keeps the run long enough to
#                               churn under load)
#   DROVER_TEST_WAIT=420        seconds to wait for every task at the end
#   DROVER_TEST_KEEP=1          leave the cluster running for a look (no down -v)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
cd "$REPO"

TASKS="${DROVER_TEST_TASKS:-2000}"
SLEEP_MS="${DROVER_TEST_SLEEP_MS:-500}"
CAPACITY="${DROVER_TEST_CAPACITY:-4}"
WAIT_SECS="${DROVER_TEST_WAIT:-420}"
WAVES=6
WAVE=$((TASKS / WAVES))
BIN="$REPO/target/release/drover"

T0=$SECONDS
PHASE_T=$SECONDS
PHASE_NAME=""
TIMINGS=()
log() { printf '[test-compose %4ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
phase() {
    if [ -n "$PHASE_NAME" ]; then
        TIMINGS+=("$(printf '%-34s %4d s' "$PHASE_NAME" "$((SECONDS - PHASE_T))")")
    fi
    PHASE_NAME="$1"
    PHASE_T=$SECONDS
    [ -n "$1" ] && log "== $1"
    return 0
}

# ---------------------------------------------------------------- tools
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then "${SUDO[@]}" apt-get update -qq; APT_UPDATED=1; fi
    log "installing $* from Debian's packages"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
command -v docker >/dev/null 2>&1 || apt_install docker.io
command -v python3 >/dev/null 2>&1 || apt_install python3
docker info >/dev/null 2>&1 || fail "cannot talk to the Docker daemon"
if [ -n "${DROVER_COMPOSE:-}" ]; then
    read -r -a COMPOSE_CMD <<<"$DROVER_COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
else
    command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
    COMPOSE_CMD=(docker-compose)
fi
log "compose: ${COMPOSE_CMD[*]} ($("${COMPOSE_CMD[@]}" version 2>/dev/null | head -n1))"

# ---------------------------------------------------------------- setup
PROJECT="drovertest${RANDOM}$$"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/drover-compose.XXXXXX")"
chmod 0755 "$TMP"
NEXT_TAG=""
cleanup() {
    local rc=$?
    set +e
    phase ""
    if [ "$rc" -ne 0 ] && [ -f "$TMP/compose.test.yml" ]; then
        log "--- state at failure"
        compose ps >&2
        compose logs --no-color --tail 40 >&2 2>/dev/null
    fi
    if [ "${DROVER_TEST_KEEP:-0}" = 1 ] && [ "$rc" -ne 0 ]; then
        log "DROVER_TEST_KEEP=1: leaving project $PROJECT running (files in $TMP)"
    else
        [ -f "$TMP/compose.test.yml" ] && compose down -v --remove-orphans -t 10 >/dev/null 2>&1
        [ -n "$NEXT_TAG" ] && docker rmi "$NEXT_TAG" >/dev/null 2>&1
        rm -rf "$TMP"
    fi
    if [ "${#TIMINGS[@]}" -gt 0 ]; then
        log "--- timings"
        printf '  %s\n' "${TIMINGS[@]}" >&2
    fi
    if [ "$rc" -eq 0 ]; then
        log "PASS in $((SECONDS - T0)) s"
    else
        log "FAILED (exit $rc) after $((SECONDS - T0)) s"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

phase "build images"
if [ "${DROVER_SKIP_BUILD:-0}" != 1 ]; then
    "$HERE/build-images.sh"
fi
IMAGE="${DROVER_IMAGE:-drover:local}"
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "image $IMAGE is missing"
[ -x "$BIN" ] || fail "$BIN is missing (cargo build --release)"

# A free loopback port for the published API.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
API_PORT="$(free_port)"

# Secrets: the keyring through the environment, the API token and the
# Redis password through files, so both ways are exercised.
# Files as docs/DEPLOYMENT.md ("Secrets") describes: readable by gid 10001,
# which the drover user has and Redis gets through group_add.
mkdir -p "$TMP/secrets"
TOKEN="$("$BIN" keygen --token)"
printf '%s:admin\n' "$TOKEN" >"$TMP/secrets/api-tokens"
python3 -c 'import secrets; print(secrets.token_hex(24))' >"$TMP/secrets/redis-password"
if [ "$(id -u)" -eq 0 ]; then
    chown -R 0:10001 "$TMP/secrets"
    chmod 0750 "$TMP/secrets"
    chmod 0640 "$TMP/secrets/"*
else
    chmod 0755 "$TMP/secrets"
    chmod 0644 "$TMP/secrets/"*
fi
DROVER_SIGNING_KEYS="$("$BIN" keygen --kid test1)"
export DROVER_SIGNING_KEYS
export DROVER_API_TOKENS="" DROVER_API_TOKENS_FILE="" DROVER_REDIS_PASSWORD="" DROVER_REDIS_PASSWORD_FILE=""
export DROVER_SIGNING_KEYS_FILE="" DROVER_SIGNING_KEY_ID=""
export DROVER_IMAGE="$IMAGE"
export DROVER_API_PUBLISH="127.0.0.1:$API_PORT"
export DROVER_API="http://127.0.0.1:$API_PORT" DROVER_API_TOKEN="$TOKEN"

cat >"$TMP/compose.test.yml" <<EOF
# Test override: secrets from files, smaller workers.
services:
  redis:
    group_add: ["10001"]
    environment:
      DROVER_REDIS_PASSWORD_FILE: /run/secrets/drover/redis-password
    volumes:
      - $TMP/secrets:/run/secrets/drover:ro
  coordinator:
    environment:
      DROVER_API_TOKENS_FILE: /run/secrets/drover/api-tokens
      DROVER_REDIS_PASSWORD_FILE: /run/secrets/drover/redis-password
    volumes:
      - $TMP/secrets:/run/secrets/drover:ro
  coordinator-2:
    environment:
      DROVER_API_TOKENS_FILE: /run/secrets/drover/api-tokens
      DROVER_REDIS_PASSWORD_FILE: /run/secrets/drover/redis-password
    volumes:
      - $TMP/secrets:/run/secrets/drover:ro
  distributor:
    environment:
      DROVER_REDIS_PASSWORD_FILE: /run/secrets/drover/redis-password
    volumes:
      - $TMP/secrets:/run/secrets/drover:ro
  distributor-2:
    environment:
      DROVER_REDIS_PASSWORD_FILE: /run/secrets/drover/redis-password
    volumes:
      - $TMP/secrets:/run/secrets/drover:ro
  worker:
    environment:
      DROVER_REDIS_PASSWORD_FILE: /run/secrets/drover/redis-password
      DROVER_WORKER_CAPACITY: "$CAPACITY"
    volumes:
      - $TMP/secrets:/run/secrets/drover:ro
EOF

# The "ha" profile adds coordinator-2 and distributor-2.
compose() {
    "${COMPOSE_CMD[@]}" -p "$PROJECT" --project-directory "$REPO" --profile ha \
        -f "$REPO/docker-compose.yml" -f "$TMP/compose.test.yml" "$@"
}
ROLE_SERVICES="coordinator coordinator-2 distributor distributor-2 worker"

# Task bookkeeping: every submitted id goes to ids.txt; tally.py lists all
# tasks through `drover tasks --json` and reports the state of those ids.
: >"$TMP/ids.txt"
cat >"$TMP/tally.py" <<'EOF'
import json, subprocess, sys
bin_, ids_file, mode = sys.argv[1], sys.argv[2], sys.argv[3]
ids = [l.strip() for l in open(ids_file) if l.strip()]
seen, cursor = {}, None
for _ in range(1000):
    cmd = [bin_, "tasks", "--json", "--limit", "1000"] + (["--cursor", cursor] if cursor else [])
    page = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    for t in page["tasks"]:
        seen[t["id"]] = t
    cursor = page.get("next_cursor")
    if not cursor:
        break
states, retried = {}, 0
for i in ids:
    t = seen.get(i)
    st = t["state"] if t else "missing"
    states[st] = states.get(st, 0) + 1
    if t and t["attempts"] > 1:
        retried += 1
terminal = sum(n for s, n in states.items() if s in ("succeeded", "dead", "cancelled"))
summary = " ".join(f"{s}={n}" for s, n in sorted(states.items()))
if mode == "line":
    print(f"{len(ids)} submitted: {summary}")
elif mode == "complete":
    # exit 0 when every id is terminal
    print(f"{len(ids)} submitted: {summary}")
    sys.exit(0 if terminal == len(ids) else 1)
elif mode == "final":
    ok = states.get("succeeded", 0) == len(ids)
    print(f"{len(ids)} submitted: {summary}; {retried} needed more than one attempt")
    if not ok:
        bad = [i for i in ids if seen.get(i, {}).get("state") != "succeeded"][:10]
        for i in bad:
            print("  not succeeded:", json.dumps(seen.get(i, {"id": i, "state": "missing"})))
    sys.exit(0 if ok else 1)
EOF
tally() { python3 "$TMP/tally.py" "$BIN" "$TMP/ids.txt" "$1"; }

# Live, non-draining workers as the API sees them.
worker_count() {
    "$BIN" workers --json 2>/dev/null \
        | python3 -c 'import json,sys; print(sum(1 for w in json.load(sys.stdin)["workers"] if not w.get("draining")))' \
        2>/dev/null || echo -1
}
wait_workers() {
    local want=$1 limit=${2:-90} start=$SECONDS n
    while :; do
        n="$(worker_count)"
        [ "$n" = "$want" ] && { log "workers live: $n"; return 0; }
        [ $((SECONDS - start)) -ge "$limit" ] && fail "expected $want live workers, API shows $n after ${limit}s"
        sleep 1
    done
}
wait_api() {
    local limit=90 start=$SECONDS
    until "$BIN" workers --json >/dev/null 2>&1; do
        [ $((SECONDS - start)) -ge "$limit" ] && fail "API at $DROVER_API not answering after ${limit}s"
        sleep 1
    done
}
# Waits until the container reports healthy.
wait_healthy() {
    local cid=$1 limit=${2:-90} start=$SECONDS st
    while :; do
        st="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$cid" 2>/dev/null || echo gone)"
        [ "$st" = healthy ] && return 0
        [ $((SECONDS - start)) -ge "$limit" ] && fail "container $(docker inspect -f '{{.Name}}' "$cid" 2>/dev/null) is $st after ${limit}s"
        sleep 1
    done
}
wait_service_healthy() {
    local svc=$1 cid
    for cid in $(compose ps -q "$svc"); do wait_healthy "$cid"; done
}
submit_wave() {
    local n=$1 out
    out="$("$BIN" submit sleep --input "$SLEEP_MS" --count "$n" --json)" || fail "submit failed"
    python3 -c 'import json,sys; [print(i) for i in json.load(sys.stdin)["ids"]]' <<<"$out" >>"$TMP/ids.txt"
    log "submitted $n sleep($SLEEP_MS ms) tasks; $(tally line)"
}

# ---------------------------------------------------------------- run
phase "up (1 worker)"
log "project $PROJECT, API $DROVER_API"
compose config -q
compose up -d --scale worker=1 >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; fail "compose up"; }
wait_api
wait_workers 1
for svc in redis $ROLE_SERVICES; do wait_service_healthy "$svc"; done
log "every container healthy"
# shellcheck disable=SC2016  # runs in the container
compose exec -T coordinator sh -c 'test "$(id -u)" = 10001 && ! touch /probe 2>/dev/null' \
    || fail "coordinator must run as uid 10001 on a read-only root filesystem"

phase "scale workers 1 -> 3"
compose up -d --no-recreate --scale worker=3 >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; fail "scale to 3"; }
wait_workers 3

phase "wave 1 + kill a busy worker"
submit_wave "$WAVE"
sleep 2
# The container of the worker with the most tasks running: its worker id is
# <container hostname>-<pid>, and the hostname is the short container id.
busiest="$("$BIN" workers --json | python3 -c 'import json,sys; ws=json.load(sys.stdin)["workers"]; print(max(ws, key=lambda w: w["used"])["id"] if ws else "")')"
victim=""
for cid in $(compose ps -q worker); do
    case "$busiest" in "${cid:0:12}"-*) victim="$cid" ;; esac
done
[ -n "$victim" ] || victim="$(compose ps -q worker | head -n1)"
log "in flight: $(tally line); docker kill $(docker inspect -f '{{.Name}}' "$victim") (worker $busiest)"
docker kill "$victim" >/dev/null

phase "wave 2 + scale workers to 5"
submit_wave "$WAVE"
compose up -d --no-recreate --scale worker=5 >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; fail "scale to 5"; }
wait_workers 5

phase "wave 3 + scale workers to 1"
submit_wave "$WAVE"
compose up -d --no-recreate --scale worker=1 >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; fail "scale to 1"; }
wait_workers 1

phase "wave 4 + restart coordinator"
submit_wave "$WAVE"
compose restart -t 30 coordinator >/dev/null 2>&1 || fail "restart coordinator"
wait_api
wait_service_healthy coordinator
compose up -d --no-recreate --scale worker=2 >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; fail "scale to 2"; }
wait_workers 2

phase "wave 5 + rolling restart"
submit_wave "$WAVE"
for svc in $ROLE_SERVICES; do
    for cid in $(compose ps -q "$svc"); do
        log "restart $(docker inspect -f '{{.Name}}' "$cid") (in flight: $(tally line))"
        docker restart -t 40 "$cid" >/dev/null
        wait_healthy "$cid"
    done
done
wait_api
wait_workers 2

phase "wave 6 + upgrade (new image tag)"
# A new image reference makes compose recreate the containers, as an upgrade
# does: service by service, each healthy before the next.
NEXT_TAG="drover:test-next-$PROJECT"
docker tag "$IMAGE" "$NEXT_TAG"
export DROVER_IMAGE="$NEXT_TAG"
submit_wave $((TASKS - 5 * WAVE))
for svc in $ROLE_SERVICES; do
    log "upgrade $svc (in flight: $(tally line))"
    scale=()
    [ "$svc" = worker ] && scale=(--scale worker=2)   # up without --scale would go back to 1
    compose up -d --no-deps "${scale[@]}" "$svc" >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log" >&2; fail "upgrade $svc"; }
    wait_service_healthy "$svc"
    for cid in $(compose ps -q "$svc"); do
        [ "$(docker inspect -f '{{.Config.Image}}' "$cid")" = "$NEXT_TAG" ] || fail "$svc still runs the old image"
    done
done
wait_api
wait_workers 2

phase "wait for every task"
start=$SECONDS
until tally complete >"$TMP/tally.txt" 2>&1; do
    [ $((SECONDS - start)) -ge "$WAIT_SECS" ] && { cat "$TMP/tally.txt" >&2; fail "tasks still unfinished after ${WAIT_SECS}s"; }
    [ $(((SECONDS - start) % 10)) -lt 3 ] && log "$(cat "$TMP/tally.txt")"
    sleep 3
done

phase "verify"
tally final >"$TMP/final.txt" || { cat "$TMP/final.txt" >&2; fail "not every task succeeded"; }
log "$(cat "$TMP/final.txt")"
[ "$(wc -l <"$TMP/ids.txt")" -eq "$TASKS" ] || fail "expected $TASKS ids, have $(wc -l <"$TMP/ids.txt")"
# A few ids, one by one, through `drover status`.
# An API error (e.g. 503) is retried; a wrong state is not.
for id in $(shuf -n 5 "$TMP/ids.txt"); do
    for try in 1 2 3; do
        out="$("$BIN" status --json "$id" 2>&1)" && break
        log "drover status $id (try $try): $out"
        [ "$try" = 3 ] && fail "drover status $id failed"
        sleep 2
    done
    case "$out" in *'"state": "succeeded"'*) ;; *) fail "drover status $id: not succeeded: $out" ;; esac
done
after="$("$BIN" submit noop --count 200 --wait)" || fail "submit --wait after the upgrade: $after"
log "after the upgrade: $after"
# Backup and restore with the tool in the image: export everything, copy
# the file out, import it into a fresh namespace of the same Redis.
EXPECT_FINISHED=$((TASKS + 200))
out="$(compose exec -T coordinator drover snapshot export --config /etc/drover/roles/coordinator.toml \
    --results --out /tmp/snapshot.jsonl)" || fail "snapshot export: $out"
log "snapshot: $out"
case "$out" in *"exported 0 live and $EXPECT_FINISHED finished"*) ;; *) fail "snapshot export: expected 0 live and $EXPECT_FINISHED finished tasks" ;; esac
compose exec -T coordinator cat /tmp/snapshot.jsonl >"$TMP/snapshot.jsonl" || fail "copying the snapshot out"
out="$(compose exec -T coordinator drover snapshot import --config /etc/drover/roles/coordinator.toml \
    --namespace restored --in /dev/stdin <"$TMP/snapshot.jsonl")" || fail "snapshot import: $out"
log "snapshot: $out"
case "$out" in *": $EXPECT_FINISHED terminal"*) ;; *) fail "snapshot import: expected $EXPECT_FINISHED terminal tasks" ;; esac

# Churn may leave stale messages (refused by version and fence checks, as
# designed); any other rejection means a wrong key or a corrupt message.
compose logs --no-color >"$TMP/all.log" 2>/dev/null || true
reasons="$(grep 'message rejected' "$TMP/all.log" | grep -o '"reason":"[a-z]*"' | sort | uniq -c | tr -s ' \n' ' ' || true)"
refused="$(grep -c 'completion refused' "$TMP/all.log" || true)"
log "log lines: 'message rejected' by reason: ${reasons:-none}; 'completion refused': $refused"
if grep 'message rejected' "$TMP/all.log" | grep -v '"reason":"stale"' | grep -q .; then
    grep 'message rejected' "$TMP/all.log" | grep -v '"reason":"stale"' | head -n 5 >&2
    fail "messages rejected for a reason other than stale"
fi
phase ""
