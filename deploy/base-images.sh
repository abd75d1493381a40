#!/usr/bin/env bash
# deploy/base-images.sh: make the two base images drover's images build on,
# locally, for machines that cannot pull from a container registry.
#
#   debian:bookworm-slim   a minimal Debian 12 root filesystem (debootstrap
#                          --variant=minbase), imported with `docker import`
#   drover-redis:7         that base plus Debian's redis-server 7.0, running
#                          as the unprivileged "redis" user in /data
#
# Images that already exist are left alone (set DROVER_REBUILD_BASE=1 to make
# them again). Run as root (or with sudo available): debootstrap and apt need
# it. Debian packages come from the mirror apt already uses on this host
# (override with DROVER_DEBIAN_MIRROR=http://...). Containers never need
# network access: every package is downloaded on the host.
#
# Environment:
#   DROVER_BASE_IMAGE    base image tag to create (default debian:bookworm-slim)
#   DROVER_REDIS_IMAGE   Redis image tag to create (default drover-redis:7)
#   DROVER_DEBIAN_MIRROR Debian mirror URL (default: read from /etc/apt)
#   DROVER_REBUILD_BASE  1 = rebuild even if the images exist
set -euo pipefail

BASE_IMAGE="${DROVER_BASE_IMAGE:-debian:bookworm-slim}"
REDIS_IMAGE="${DROVER_REDIS_IMAGE:-drover-redis:7}"
SUITE=bookworm
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

log() { printf '[base-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "run as root, or install sudo: debootstrap and apt need root"
    SUDO=(sudo)
fi

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

need_base=1
need_redis=1
if [ "${DROVER_REBUILD_BASE:-0}" != 1 ]; then
    have_image "$BASE_IMAGE" && need_base=0
    have_image "$REDIS_IMAGE" && need_redis=0
fi
if [ "$need_base" = 0 ] && [ "$need_redis" = 0 ]; then
    log "$BASE_IMAGE and $REDIS_IMAGE exist; nothing to do"
    exit 0
fi

command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (is it running, may this user use it?)"

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        apt_updated=1
    fi
}
apt_install() {
    apt_update
    log "installing $* from Debian's packages"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The first mirror apt uses for the bookworm suite: deb822 .sources files
# first (URIs: / Suites:), then one-line sources.list entries.
find_mirror() {
    if [ -n "${DROVER_DEBIAN_MIRROR:-}" ]; then
        echo "$DROVER_DEBIAN_MIRROR"
        return
    fi
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") {
                    split(uris, u, " "); print u[1]; found = 1; exit
                }
                types = ""; uris = ""; suites = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^#/ { next }
            tolower($1) == "types:"  { $1 = ""; types = $0 }
            tolower($1) == "uris:"   { $1 = ""; sub(/^ +/, ""); uris = $0 }
            tolower($1) == "suites:" { $1 = ""; sub(/^ +/, ""); suites = $0 }
            END { if (!found) flush() }
        ' "$f" | head -n1
    done | head -n1 | grep . && return
    local lists=()
    [ -f /etc/apt/sources.list ] && lists+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && lists+=("$f"); done
    if [ "${#lists[@]}" -gt 0 ]; then
        awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }
        ' "${lists[@]}" | head -n1 | grep . && return
    fi
    echo "http://deb.debian.org/debian"
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/drover-base.XXXXXX")"
cleanup() {
    # The rootfs belongs to root; remove it with the same rights.
    "${SUDO[@]}" rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

t0=$SECONDS

if [ "$need_base" = 1 ]; then
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || apt_install debian-archive-keyring
    MIRROR="$(find_mirror)"
    ROOTFS="$WORK/rootfs"
    log "debootstrap --variant=minbase $SUITE from $MIRROR"
    if ! "${SUDO[@]}" debootstrap --variant=minbase --components=main \
        --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 30 "$WORK/debootstrap.log" >&2
        [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    fi

    log "slimming the root filesystem"
    # shellcheck disable=SC2016  # expanded by the inner bash
    "${SUDO[@]}" bash -euo pipefail -c '
        r="$1"; mirror="$2"; suite="$3"
        # Keep documentation out of packages installed later, as slim images do.
        mkdir -p "$r/etc/dpkg/dpkg.cfg.d"
        cat >"$r/etc/dpkg/dpkg.cfg.d/slim" <<EOF
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
        # No service may start while packages are installed in an image.
        printf "#!/bin/sh\nexit 101\n" >"$r/usr/sbin/policy-rc.d"
        chmod 0755 "$r/usr/sbin/policy-rc.d"
        cat >"$r/etc/apt/apt.conf.d/docker-clean" <<EOF
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
        printf "Acquire::Languages \"none\";\n" >"$r/etc/apt/apt.conf.d/docker-no-languages"
        printf "deb %s %s main\n" "$mirror" "$suite" >"$r/etc/apt/sources.list"
        rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin "$r/var/cache/apt/archives/"*.deb \
               "$r/var/log/"*.log "$r/var/log/apt/"* "$r/debootstrap" \
               "$r/usr/share/man/"* "$r/usr/share/info/"* "$r/usr/share/groff/"* \
               "$r/usr/share/lintian/"*
        find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
        find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
        # Docker provides these at run time.
        : >"$r/etc/resolv.conf"
        : >"$r/etc/hostname"
        rm -f "$r/etc/machine-id" && : >"$r/etc/machine-id"
    ' _ "$ROOTFS" "$MIRROR" "$SUITE"

    log "docker import -> $BASE_IMAGE"
    "${SUDO[@]}" tar --numeric-owner -C "$ROOTFS" -c . \
        | docker import \
            --change 'CMD ["bash"]' \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --message "debootstrap --variant=minbase $SUITE" \
            - "$BASE_IMAGE" >/dev/null
    "${SUDO[@]}" rm -rf "$ROOTFS"
    log "$BASE_IMAGE: $(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}') ($((SECONDS - t0)) s)"
fi

if [ "$need_redis" = 1 ]; then
    t1=$SECONDS
    # Resolve redis-server's dependencies against the base image's own dpkg
    # state, download the .deb files on the host, install them in the build.
    CTX="$WORK/redis"
    mkdir -p "$CTX/debs" "$WORK/apt/archives/partial" "$WORK/apt/state"
    cid="$(docker create "$BASE_IMAGE" true)"
    docker cp "$cid:/var/lib/dpkg/status" "$WORK/apt/state/status" >/dev/null
    docker rm "$cid" >/dev/null
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        apt_update
    fi
    log "downloading redis-server and its dependencies"
    dl() {
        "${SUDO[@]}" apt-get install -y -qq --download-only --no-install-recommends \
            -o Dir::State::status="$WORK/apt/state/status" \
            -o Dir::Cache::archives="$WORK/apt/archives/" \
            -o Debug::NoLocking=1 \
            -o APT::Sandbox::User=root \
            redis-server >"$WORK/apt.log" 2>&1
    }
    if ! dl; then
        # Stale package lists on the host: refresh once and retry.
        apt_update
        dl || { cat "$WORK/apt.log" >&2; die "cannot download redis-server"; }
    fi
    "${SUDO[@]}" find "$WORK/apt/archives" -maxdepth 1 -name '*.deb' -exec cp {} "$CTX/debs/" \;
    "${SUDO[@]}" chown -R "$(id -u):$(id -g)" "$CTX"
    ls "$CTX/debs"/redis-server_*.deb >/dev/null 2>&1 || die "redis-server .deb not downloaded"
    log "packages: $(find "$CTX/debs" -name '*.deb' -printf '%f\n' | sed 's/_.*//' | sort | tr '\n' ' ')"
    cp "$REPO/deploy/redis/redis.conf" "$CTX/redis.conf"
    cat >"$CTX/Dockerfile" <<EOF
FROM $BASE_IMAGE
COPY debs/ /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb \\
 && rm -rf /tmp/debs /var/log/apt/* /var/log/dpkg.log \\
 && mkdir -p /data /usr/local/etc/redis \\
 && chown redis:redis /data \\
 && redis-server --version
COPY redis.conf /usr/local/etc/redis/redis.conf
WORKDIR /data
VOLUME /data
USER redis
EXPOSE 6379
CMD ["redis-server", "/usr/local/etc/redis/redis.conf"]
EOF
    log "docker build -> $REDIS_IMAGE"
    if ! docker build -q -t "$REDIS_IMAGE" "$CTX" >"$WORK/build.log" 2>&1; then
        cat "$WORK/build.log" >&2
        die "building $REDIS_IMAGE failed"
    fi
    log "$REDIS_IMAGE: $(docker run --rm "$REDIS_IMAGE" redis-server --version | awk '{print $3}') ($((SECONDS - t1)) s)"
fi

log "done in $((SECONDS - t0)) s"
