#!/usr/bin/env bash
# Builds the Go test tools the integration tests run against, from the Go
# module proxy only (no release downloads): kube-apiserver, kubectl and etcd
# (module tools/k8s), csi-sanity and helm (go install <pkg>@<version>).
#
# Everything lands under $VHBA_CACHE (default: ~/.cache/vhba) so CI can cache
# it:
#   bin/<tool>            the binaries
#   stamps/<tool>         what the binary was built from; equal stamp => skip
#   go/mod, go/build      GOMODCACHE and GOCACHE
#
# Usage: scripts/build-go-tools.sh [tool...]   (default: all tools)
# Env:   GO (go binary), VHBA_GO_BUILD_P (go build -p, default 2),
#        VHBA_NICE (nice level, default 15).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export VHBA_CACHE="${VHBA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhba}"

CSI_TEST_VERSION=v5.4.0
HELM_VERSION=v3.22.0
ALL_TOOLS=(kube-apiserver etcd kubectl csi-sanity helm)

GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[ -x "$GO" ] || { echo "build-go-tools: no Go toolchain (set GO=/path/to/go)" >&2; exit 1; }
bin="$VHBA_CACHE/bin"
stamps="$VHBA_CACHE/stamps"
mkdir -p "$bin" "$stamps" "$VHBA_CACHE/go/mod" "$VHBA_CACHE/go/build"
export GOMODCACHE="$VHBA_CACHE/go/mod" GOCACHE="$VHBA_CACHE/go/build"
# -trimpath keeps paths (and the build cache) independent of the checkout dir;
# -mod=readonly: tools/k8s/go.sum is the lock file and must not drift.
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
export CGO_ENABLED=0
jobs="${VHBA_GO_BUILD_P:-2}"
nice_level="${VHBA_NICE:-15}"
go_version="$("$GO" env GOVERSION)"

# One builder at a time per cache (vitest setup and a developer may race).
exec 9>"$VHBA_CACHE/go-tools.lock"
flock 9

# Version of a module required by tools/k8s/go.mod (the single source of truth).
k8s_module_version() {
  (cd "$repo/tools/k8s" && "$GO" list -m -f '{{.Version}}' "$1")
}

# Hash of the tools/k8s lock files: any edit there rebuilds its tools.
k8s_lock_hash() {
  cat "$repo/tools/k8s/go.mod" "$repo/tools/k8s/go.sum" | sha256sum | cut -c1-16
}

# Prints the stamp text for a tool: everything its binary depends on.
stamp_for() {
  local tool=$1
  case "$tool" in
    kube-apiserver|kubectl) echo "$tool k8s.io/kubernetes@$kube_version lock=$lock_hash $go_version" ;;
    etcd) echo "$tool go.etcd.io/etcd/server/v3@$etcd_version lock=$lock_hash $go_version" ;;
    csi-sanity) echo "$tool csi-test@$CSI_TEST_VERSION $go_version" ;;
    helm) echo "$tool helm@$HELM_VERSION $go_version" ;;
    *) echo "build-go-tools: unknown tool '$tool' (known: ${ALL_TOOLS[*]})" >&2; return 1 ;;
  esac
}

# go build/install at low priority with bounded parallelism.
go_low() { nice -n "$nice_level" "$GO" "$@"; }

# Builds one tool into $1 (a temporary path).
build_tool() {
  local tool=$1 out=$2
  local kube_ld="-X k8s.io/component-base/version.gitVersion=$kube_version \
-X k8s.io/component-base/version.gitMajor=$kube_major -X k8s.io/component-base/version.gitMinor=$kube_minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$kube_version \
-X k8s.io/client-go/pkg/version.gitMajor=$kube_major -X k8s.io/client-go/pkg/version.gitMinor=$kube_minor \
-X k8s.io/client-go/pkg/version.gitTreeState=clean"
  case "$tool" in
    kube-apiserver|kubectl)
      (cd "$repo/tools/k8s" && go_low build -p "$jobs" -ldflags="-s -w $kube_ld" -o "$out" "k8s.io/kubernetes/cmd/$tool") ;;
    etcd)
      (cd "$repo/tools/k8s" && go_low build -p "$jobs" -ldflags="-s -w" -o "$out" go.etcd.io/etcd/server/v3) ;;
    csi-sanity|helm)
      local gobin pkg ld="-s -w"
      gobin="$(mktemp -d "$bin/.gobin.XXXXXX")"
      if [ "$tool" = helm ]; then
        pkg="helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
        # Same version variables helm's Makefile sets (k8s minor from its client-go).
        ld="$ld -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
-X helm.sh/helm/v3/internal/version.gitTreeState=clean \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kube_minor \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$kube_minor"
      else
        pkg="github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION"
      fi
      # go install pkg@version ignores the local module; -mod must not be set.
      (cd "$gobin" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="$gobin" go_low install -p "$jobs" -ldflags="$ld" "$pkg")
      mv "$gobin/$tool" "$out"
      rmdir "$gobin" ;;
  esac
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=("${ALL_TOOLS[@]}")

lock_hash="$(k8s_lock_hash)"
kube_version="$(k8s_module_version k8s.io/kubernetes)"
etcd_version="$(k8s_module_version go.etcd.io/etcd/server/v3)"
kube_major="${kube_version#v}"; kube_major="${kube_major%%.*}"
kube_minor="${kube_version#v*.}"; kube_minor="${kube_minor%%.*}"

summary=()
for tool in "${tools[@]}"; do
  want="$(stamp_for "$tool")"
  if [ -x "$bin/$tool" ] && [ "$(cat "$stamps/$tool" 2>/dev/null)" = "$want" ]; then
    summary+=("$(printf '%-15s cached %-22s %6s  %s' "$tool" '' "$(du -h "$bin/$tool" | cut -f1)" "$want")")
    continue
  fi
  echo "build-go-tools: building $tool ($want)"
  tmp="$bin/.$tool.tmp.$$"
  timing="$bin/.$tool.time.$$"
  # Wall and CPU time (CPU/cores ~ wall time on an idle machine).
  if ! { TIMEFORMAT='%0R %0U %0S'; time build_tool "$tool" "$tmp" 2>&3; } 3>&2 2>"$timing"; then
    rm -f "$tmp" "$timing"
    echo "build-go-tools: FAILED to build $tool" >&2
    exit 1
  fi
  mv -f "$tmp" "$bin/$tool"   # atomic: a half-built binary is never visible
  echo "$want" > "$stamps/$tool"
  read -r wall user sys < "$timing"; rm -f "$timing"
  took="${wall}s wall, $((user + sys))s cpu"
  summary+=("$(printf '%-15s built %-22s %6s  %s' "$tool" "$took" "$(du -h "$bin/$tool" | cut -f1)" "$want")")
  echo "build-go-tools: built $tool in $took"
done

echo "build-go-tools: tools in $bin"
printf '  %s\n' "${summary[@]}"
