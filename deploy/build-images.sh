#!/usr/bin/env bash
# deploy/build-images.sh: compile drover and build its container image.
#
#   deploy/build-images.sh          # cargo build --release, then drover:local
#
# Steps: `cargo build --release`; make debian:bookworm-slim and drover-redis:7
# with deploy/base-images.sh if either is missing (no registry needed); copy
# the binary (debug info stripped) and roles/ into a small build context under
# target/; `docker build -f deploy/Dockerfile`.
#
# Environment:
#   DROVER_IMAGE         tag of the drover image (default drover:local)
#   DROVER_BASE_IMAGE    base image (default debian:bookworm-slim)
#   DROVER_REDIS_IMAGE   Redis image (default drover-redis:7)
#   DROVER_SKIP_CARGO=1  use the existing target/release/drover as it is
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
IMAGE="${DROVER_IMAGE:-drover:local}"
export DROVER_BASE_IMAGE="${DROVER_BASE_IMAGE:-debian:bookworm-slim}"
export DROVER_REDIS_IMAGE="${DROVER_REDIS_IMAGE:-drover-redis:7}"

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker is not installed"
t0=$SECONDS

cd "$REPO"
if [ "${DROVER_SKIP_CARGO:-0}" != 1 ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed (or set DROVER_SKIP_CARGO=1 with a built target/release/drover)"
    log "cargo build --release"
    cargo build --release --bin drover
    log "cargo build: $((SECONDS - t0)) s"
fi
BIN="$REPO/target/release/drover"
[ -x "$BIN" ] || die "$BIN is missing: run cargo build --release"

t1=$SECONDS
if ! docker image inspect "$DROVER_BASE_IMAGE" >/dev/null 2>&1 \
    || ! docker image inspect "$DROVER_REDIS_IMAGE" >/dev/null 2>&1; then
    "$HERE/base-images.sh"
    log "base images: $((SECONDS - t1)) s"
fi

t2=$SECONDS
CTX="$REPO/target/image-context"
rm -rf "$CTX"
mkdir -p "$CTX"
cp -r "$REPO/roles" "$CTX/roles"
# The release profile keeps debug info for backtraces on the host; the image
# keeps the symbol table only.
if command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-debug "$BIN" "$CTX/drover"
else
    cp "$BIN" "$CTX/drover"
fi
log "docker build -> $IMAGE ($(du -h "$CTX/drover" | cut -f1) binary)"
previous="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
docker build \
    --build-arg "BASE_IMAGE=$DROVER_BASE_IMAGE" \
    --build-arg "DROVER_BIN=drover" \
    --label "org.opencontainers.image.title=drover" \
    --label "org.opencontainers.image.version=$("$BIN" --version | awk '{print $2}')" \
    --label "org.opencontainers.image.revision=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    -f "$HERE/Dockerfile" -t "$IMAGE" "$CTX" >"$CTX.log" 2>&1 \
    || { cat "$CTX.log" >&2; die "docker build failed"; }
docker run --rm --read-only "$IMAGE" --version >/dev/null || die "$IMAGE does not start"
# Drop the image this tag pointed at before, unless something still uses it.
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true
fi
log "$IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}') (docker build $((SECONDS - t2)) s)"
log "done in $((SECONDS - t0)) s"
