#!/usr/bin/env bash
# Installs everything EggsFS needs on a fresh Debian 12 machine (as root), then builds it.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
command -v python3 >/dev/null || need_apt+=(python3)
command -v mount >/dev/null || need_apt+=(mount)
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
if [ "${EGGSFS_SETUP_TEST_DEPS:-0}" = 1 ]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v rsync >/dev/null || need_apt+=(rsync)
  [ -f /usr/include/fuse3/fuse_lowlevel.h ] || need_apt+=(libfuse3-dev pkg-config)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build --silent
echo "setup: done"
