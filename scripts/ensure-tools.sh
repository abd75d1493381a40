#!/usr/bin/env bash
# Installs, from Debian's packages, the tools drover's demo and tests need
# when they are missing. Sourced by scripts/demo.sh and scripts/test.sh.
# Usage: ensure_tool COMMAND PACKAGE
set -euo pipefail

_apt_updated=0
ensure_tool() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  echo "==> $cmd not found: installing Debian package $pkg" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: $cmd is missing and this user cannot install $pkg (no root, no sudo)" >&2; return 1; }
    sudo=sudo
  fi
  if [ "$_apt_updated" -eq 0 ]; then
    $sudo apt-get update -qq
    _apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
  command -v "$cmd" >/dev/null 2>&1 || { echo "error: installing $pkg did not provide $cmd" >&2; return 1; }
}
