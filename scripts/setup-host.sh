#!/usr/bin/env bash
# Install the Debian packages vhba's tests need on this host.
#
# Idempotent and fast when everything is present: `dpkg-query` decides what is
# missing, and `apt-get update` runs only when something has to be installed.
# Needs root (CI and the developer machines run as root).
#
#   bash scripts/setup-host.sh            # install what is missing
#   bash scripts/setup-host.sh --check    # only report; exit 1 if something is missing
set -euo pipefail

# The packages, and why each is here.
PACKAGES=(
  qemu-system-x86     # qemu-system-x86_64: boots the test guest (TCG)
  qemu-system-common  # qemu-storage-daemon: vhost-user-blk peer (tests, bench)
  qemu-utils          # qemu-img
  busybox-static      # the guest's base tools
  dash                # the guest's /bin/sh
  sg3-utils           # sg_inq, sg_vpd, … in the guest
  fio                 # I/O load in the guest and on the host
  udev                # systemd-udevd, udevadm, scsi_id, persistent-storage rules for the guest
  kmod                # modprobe/depmod for the guest's modules
  cpio                # initramfs archives
  zstd                # initramfs compression
  xz-utils            # kernel package / module decompression
  e2fsprogs           # mkfs.ext4 for filesystem tests
  util-linux          # lsblk, blockdev for the guest
  base-passwd         # /etc/passwd and /etc/group masters for the guest
  ca-certificates     # apt-get download over https mirrors
  librsvg2-bin        # rsvg-convert: the benchmark's PNG plot
  g++                 # the native addon and the benchmark front-end
  make                # the benchmark front-end's Makefile
  python3             # node-gyp
  openssl             # certificates for the test kube-apiserver
  clang-14            # libFuzzer targets (scripts/fuzz.sh)
  strace              # the durability matrix traces the engine's syscalls
  libclang-rt-14-dev  # ASan/UBSan/libFuzzer runtimes for clang-14
  libiscsi-dev        # the engine's iSCSI passthrough transport (issue 8; links libiscsi7)
  libiscsi-bin        # iscsi-inq, iscsi-ls: looking at a tgtd target directly
  tgt                 # tgtd: the userspace iSCSI target the passthrough tests talk to
  qemu-block-extra    # qemu-storage-daemon's iSCSI driver: the passthrough benchmark's peer
)

check_only=false
if [[ "${1:-}" == "--check" ]]; then check_only=true; fi

# One dpkg-query for all: installed packages print "<name> ii".
declare -A installed=()
while read -r name status; do
  [[ "$status" == ii* ]] && installed[$name]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)
missing=()
for pkg in "${PACKAGES[@]}"; do
  [[ -n "${installed[$pkg]:-}" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup-host: all ${#PACKAGES[@]} packages present, nothing to do"
  exit 0
fi

echo "setup-host: missing: ${missing[*]}"
if $check_only; then exit 1; fi

if [[ "$(id -u)" -ne 0 ]]; then
  echo "setup-host: must run as root to install packages" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "setup-host: apt-get update"
apt-get update -qq
echo "setup-host: apt-get install ${missing[*]}"
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup-host: installed ${#missing[@]} package(s)"
