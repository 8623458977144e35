#!/usr/bin/env bash
# Checks that our protos/csi/v1/csi.proto is wire- and JSON-compatible with the
# official csi.proto of the CSI spec's Go module (v1.12.0): `buf breaking` with
# the WIRE_JSON rules, in both directions (ours against theirs catches changed
# or removed fields, enums and methods; theirs against ours catches additions),
# so any difference in a field's number, type, name (JSON) or cardinality fails.
#
# Usage: scripts/check-csi-proto.sh [path/to/our/csi.proto]
# Needs: go (the Go module proxy), buf (node_modules/.bin).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$root/node_modules/.bin:$PATH"
ours="${1:-$root/protos/csi/v1/csi.proto}"
spec_version="${CSI_SPEC_VERSION:-v1.12.0}"

command -v go >/dev/null || { echo "check-csi-proto: go is required" >&2; exit 2; }
command -v buf >/dev/null || { echo "check-csi-proto: buf is required (npm ci)" >&2; exit 2; }
[ -f "$ours" ] || { echo "check-csi-proto: $ours: no such file" >&2; exit 2; }

# `go mod download -json` prints the module's extracted directory as "Dir".
json="$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "github.com/container-storage-interface/spec@$spec_version")"
dir="$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
official="$dir/csi.proto"
[ -f "$official" ] || { echo "check-csi-proto: official csi.proto not found (go mod download said: $json)" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for side in ours theirs; do
  mkdir -p "$work/$side/csi/v1"
  printf 'version: v2\n' > "$work/$side/buf.yaml"
done
cp "$ours" "$work/ours/csi/v1/csi.proto"
cp "$official" "$work/theirs/csi/v1/csi.proto"
config='{"version":"v2","breaking":{"use":["WIRE_JSON"]}}'

rc=0
echo "check-csi-proto: ours ($ours) against official ($official)"
buf breaking "$work/ours" --against "$work/theirs" --config "$config" || rc=1
echo "check-csi-proto: official against ours"
buf breaking "$work/theirs" --against "$work/ours" --config "$config" || rc=1
if [ "$rc" -eq 0 ]; then echo "check-csi-proto: wire- and JSON-compatible with CSI $spec_version"; fi
exit "$rc"
