#!/usr/bin/env bash
# Installs Debian's chromium for the Playwright browser tests. Playwright's own browser download
# cannot work on these machines (no internet beyond package registries), so the tests drive
# /usr/bin/chromium through executable_path instead.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "==> installing Debian's chromium for the browser tests"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
/usr/bin/chromium --version
