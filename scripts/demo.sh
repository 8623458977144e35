#!/usr/bin/env bash
# The main job on a fresh Debian machine (root): installs what it needs
# (idempotent, cached under $VHBA_CACHE), then runs `vhba serve` on the
# example disks, boots a real guest against it and prints what the guest sees
# beside what vhba predicted. Exits non-zero if anything differs.
set -euo pipefail
cd "$(dirname "$0")/.."
export VHBA_CACHE="${VHBA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhba}"
mkdir -p "$VHBA_CACHE"
bash scripts/setup-host.sh
if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
export PATH="$PWD/node_modules/.bin:$PATH"
bash scripts/build-guest-image.sh
exec node scripts/demo.ts "$@"
