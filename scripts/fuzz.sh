#!/usr/bin/env bash
# Coverage-guided fuzzing of the native addon's guest-facing code (issue 9):
# builds each target in hba/native/fuzz with clang + libFuzzer under ASan and
# UBSan (core .cc files only, no N-API), replays every committed crash input
# (hba/native/fuzz/crashes/<target>/), then fuzzes each target for a bounded
# time from its committed seeds (hba/native/fuzz/corpus/<target>/) and prints
# executions, coverage (libFuzzer cov/ft) and findings per target. New
# findings are written to hba/native/fuzz/crashes/<target>/; exit status 1 if
# any replay or run found something.
#
#   bash scripts/fuzz.sh                     # 20 s per target (CI)
#   bash scripts/fuzz.sh --seconds 60        # per target
#   npm run fuzz -- --minutes 10             # per target
#   bash scripts/fuzz.sh --target virtqueue --seconds 30
#   bash scripts/fuzz.sh --replay-only       # build and replay crashes + seeds
#   bash scripts/fuzz.sh --merge-seeds       # fold new coverage into the committed seeds
#
# Needs clang-14 with libFuzzer (Debian: clang-14 libclang-rt-14-dev). Builds
# and the working corpus live in $VHBA_CACHE/fuzz (default ~/.cache/vhba/fuzz).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
fuzzdir=$repo/hba/native/fuzz
src=$repo/hba/native/src
cache=${VHBA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhba}/fuzz
seconds=20
only=""
replayOnly=0
mergeSeeds=0
seedLimit=48  # committed seeds per target

while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --minutes) seconds=$(( $2 * 60 )); shift 2 ;;
    --target) only=$2; shift 2 ;;
    --replay-only) replayOnly=1; shift ;;
    --merge-seeds) mergeSeeds=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# target name → core sources it links (relative to hba/native/src).
declare -A sources=(
  [virtqueue]="virtqueue.cc guest_memory.cc"
  [guest_memory]="guest_memory.cc"
  [message_reader]="message_reader.cc fd_util.cc"
  [scsi_fastpath]="scsi_fastpath.cc virtqueue.cc guest_memory.cc fd_util.cc"
  [passthrough_fastpath]="scsi_fastpath.cc virtqueue.cc guest_memory.cc fd_util.cc"
)
order=(virtqueue guest_memory message_reader scsi_fastpath passthrough_fastpath)

cxx=""
for c in clang++-14 clang++; do
  if command -v "$c" >/dev/null 2>&1; then cxx=$c; break; fi
done
if [ -z "$cxx" ]; then
  echo "fuzz.sh: clang++ not found; install clang-14 libclang-rt-14-dev (apt-get)" >&2
  exit 2
fi

mkdir -p "$cache/bin" "$cache/corpus" "$cache/logs"
flags=(-std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -I"$src")

# Builds target $1 unless its binary is newer than every input file.
build() {
  local name=$1 out=$cache/bin/$1 files=("$fuzzdir/$1_fuzz.cc" "$fuzzdir"/fuzz_*.h)
  local f
  for f in ${sources[$1]}; do files+=("$src/$f"); done
  files+=("$src"/*.h)
  for f in "${files[@]}"; do [ -e "$f" ] || { echo "missing $f" >&2; return 1; }; done
  local stale=0
  [ -x "$out" ] || stale=1
  for f in "${files[@]}"; do [ "$f" -nt "$out" ] && stale=1; done
  if [ $stale = 1 ]; then
    echo "== build $name"
    local cc=("$fuzzdir/$1_fuzz.cc")
    for f in ${sources[$1]}; do cc+=("$src/$f"); done
    nice "$cxx" "${flags[@]}" "${cc[@]}" -o "$out.tmp" && mv "$out.tmp" "$out"
  fi
}

failed=0
summary=()
for name in "${order[@]}"; do
  [ -n "$only" ] && [ "$only" != "$name" ] && continue
  if [ ! -e "$fuzzdir/${name}_fuzz.cc" ]; then continue; fi
  if ! build "$name"; then
    summary+=("$(printf '%-15s BUILD FAILED' "$name")"); failed=1; continue
  fi
  bin=$cache/bin/$name
  seeds=$fuzzdir/corpus/$name
  crashes=$fuzzdir/crashes/$name
  work=$cache/corpus/$name
  log=$cache/logs/$name.log
  mkdir -p "$seeds" "$crashes" "$work"

  # 1. Regression inputs: every committed crash, then every seed, must pass.
  replayStatus=ok
  mapfile -t replay < <(find "$crashes" "$seeds" -type f ! -name '.*' | sort)
  if [ ${#replay[@]} -gt 0 ]; then
    if ! "$bin" -runs=1 "${replay[@]}" >"$log.replay" 2>&1; then
      replayStatus=FAILED; failed=1
      echo "== $name: a regression input fails; see $log.replay" >&2
      grep -E 'ERROR|FUZZ_CHECK|SUMMARY|Running:' "$log.replay" | tail -5 >&2 || true
    fi
  fi
  if [ $replayOnly = 1 ]; then
    summary+=("$(printf '%-15s replayed %4d inputs: %s' "$name" "${#replay[@]}" "$replayStatus")")
    continue
  fi

  # 2. Bounded coverage-guided run; new corpus units go to the cache, findings to crashes/.
  before=$(find "$crashes" -type f ! -name '.*' | wc -l)
  echo "== fuzz $name for ${seconds}s"
  set +e
  "$bin" "$work" "$seeds" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -artifact_prefix="$crashes/" -print_final_stats=1 -close_fd_mask=1 >"$log" 2>&1
  rc=$?
  set -e
  after=$(find "$crashes" -type f ! -name '.*' | wc -l)
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
  findings=$(( after - before ))
  if [ $rc -ne 0 ] || [ $findings -gt 0 ]; then
    failed=1
    grep -E 'ERROR|FUZZ_CHECK|SUMMARY|Test unit written' "$log" | head -8 >&2 || true
  fi
  if [ $mergeSeeds = 1 ]; then
    # Fold new coverage into the committed seeds, then keep them small: the
    # $seedLimit largest inputs (they exercise the most actions); the full
    # corpus stays in the cache.
    "$bin" -merge=1 -max_len=4096 "$seeds" "$work" >"$log.merge" 2>&1 || true
    ls -S "$seeds" | tail -n +$((seedLimit + 1)) | while read -r f; do rm -f "$seeds/$f"; done
  fi
  summary+=("$(printf '%-15s %5ss  execs %9s  %-22s  findings %d  replay %s (%d inputs)' \
    "$name" "$seconds" "${execs:-0}" "${cov:-cov: ?}" "$findings" "$replayStatus" "${#replay[@]}")")
done

echo
echo "fuzz summary (logs in $cache/logs):"
for line in "${summary[@]}"; do echo "  $line"; done
exit $failed
