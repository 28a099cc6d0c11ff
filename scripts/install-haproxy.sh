#!/usr/bin/env bash
# HAProxy from Debian's packages, for `make cluster` and the cluster tests (tests/test_cluster.py).
# Idempotent: does nothing when haproxy is already on the PATH. Needs root (or sudo) for apt-get.
set -euo pipefail
if command -v haproxy >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
echo "==> installing haproxy (Debian package)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends haproxy >/dev/null
# The package's own service is not wanted: the project starts haproxy with its own configuration.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
command -v haproxy >/dev/null
haproxy -v | head -1
