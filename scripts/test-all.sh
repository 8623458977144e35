#!/usr/bin/env bash
# Sets up everything the tests need on a fresh Debian machine (idempotent,
# cached under $VHBA_CACHE) and runs every test: lint, typecheck, unit tests,
# and the end-to-end tests against real parts (QEMU guest, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
export VHBA_CACHE="${VHBA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhba}"
mkdir -p "$VHBA_CACHE"

step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }

step "host packages"
bash scripts/setup-host.sh

step "npm ci"
if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  echo "node_modules up to date"
fi
export PATH="$PWD/node_modules/.bin:$PATH"
node --version

step "guest image"
bash scripts/build-guest-image.sh

if [ -f scripts/build-go-tools.sh ]; then
  step "go tools"
  bash scripts/build-go-tools.sh
fi

step "native fuzzing (bounded; npm run fuzz -- --minutes N for longer)"
bash scripts/fuzz.sh --seconds "${VHBA_FUZZ_SECONDS:-15}"

step "lint and typecheck"
npm run --silent lint

step "tests"
results="$VHBA_CACHE/vitest-results.json"
rc=0
vitest run --reporter=default --reporter=json --outputFile="$results" || rc=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = (r.numPendingTests || 0) + (r.numTodoTests || 0);
  console.log(`\nvitest: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
' "$results" || true
step "done"
exit $rc
