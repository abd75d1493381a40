#!/usr/bin/env bash
# Builds drover-test-busybox:latest, the image the container handler's tests run
# (src/handlers/container/; its testing.rs holds the helpers those tests share).
# No registry can be reached where the tests run, so
# the image is made FROM scratch out of Debian's statically linked busybox.
#
# Usage: tests/container/build-test-image.sh [TAG]    (default drover-test-busybox:latest)
set -euo pipefail

tag="${1:-drover-test-busybox:latest}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
busybox=/bin/busybox

# A dynamically linked busybox (Debian's `busybox` package) would not run in an
# image with no libc, so insist on the static one.
is_static() { [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1; }

if ! is_static "$busybox"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "build-test-image: installing busybox-static" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q busybox-static >&2 ||
            { apt-get update -q >&2 && apt-get install -y -q busybox-static >&2; }
    fi
    if ! is_static "$busybox"; then
        echo "build-test-image: $busybox is missing or not static; install busybox-static" >&2
        exit 1
    fi
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$busybox" "$context/busybox"
cp "$here/Dockerfile" "$context/Dockerfile"
# -q keeps the output to the image id; the legacy builder's deprecation notice
# (no buildx here) goes to stderr.
docker build -q -t "$tag" "$context"
