#!/usr/bin/env bash
# Build the test guest: a Debian kernel and an initramfs made only of Debian
# packages (busybox-static, systemd-udevd + udev rules + scsi_id, sg3-utils,
# fio, util-linux, kmod, e2fsprogs) with test/guest/init.sh as /init.
#
# Output in $VHBA_CACHE/guest (default ~/.cache/vhba/guest):
#   vmlinuz      the kernel of the package linux-image-amd64 depends on
#   initrd.img   zstd-compressed newc cpio, padded to 4 bytes so the harness can
#                append uncompressed archives (Linux accepts concatenated cpios)
#   stamp        the inputs (package versions, hashes of this script and init);
#                the image is rebuilt only when they change.
#   modules      the kernel modules /init loads, in order
#   layers/fio.cpio.zst  fio and the libraries the base lacks, for tests that
#                append it
#
#   bash scripts/build-guest-image.sh          # build if inputs changed
#   bash scripts/build-guest-image.sh --force  # rebuild anyway
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${VHBA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhba}"
out="$cache_root/guest"
debs="$cache_root/debs"
init_script="$repo/test/guest/init.sh"
force=false
if [[ "${1:-}" == "--force" ]]; then force=true; fi

log() { echo "build-guest-image: $*"; }

# Modules /init loads (modprobe pulls in their dependencies). Also packed but
# not loaded here: scsi_debug and loop, for tests that want a kernel-made LUN;
# 9p and 9pnet_virtio, to mount the host's root shared over virtio-9p
# (test/guest/host-root.ts); configfs, target_core_mod, target_core_file and
# tcm_loop, for a LIO LUN seen through two initiators
# (test/passthrough/guest-devices.sh).
LOAD_MODULES=(
  virtio_pci virtio_scsi scsi_mod sd_mod sg crc-t10dif crct10dif_generic
  t10-pi virtio_blk virtio_console ext4
)
EXTRA_MODULES=(
  scsi_debug loop crct10dif_pclmul
  9p 9pnet_virtio
  configfs target_core_mod target_core_file tcm_loop
)

# Userland binaries from the host's installed Debian packages (setup-host.sh
# installs them). Shared libraries follow with ldd.
USERLAND_PACKAGES=(busybox-static dash udev sg3-utils fio util-linux kmod e2fsprogs base-passwd libc6)
UTIL_LINUX_BINS=(/usr/bin/lsblk /usr/sbin/blockdev /usr/sbin/blkid /usr/bin/findmnt)
KMOD_LINKS=(modprobe insmod rmmod lsmod depmod modinfo)

# One build at a time per cache (test processes may start it concurrently).
mkdir -p "$cache_root"
exec 9>"$cache_root/guest.lock"
flock 9

# --- inputs -----------------------------------------------------------------
bash "$repo/scripts/setup-host.sh" >/dev/null

# The kernel: the package (and exact version) the linux-image-amd64
# meta-package depends on, e.g. "linux-image-6.1.0-56-amd64 6.1.192-2".
kernel_package() {
  apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
    sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -n1
}
# apt-cache is slow here (seconds): when no package list changed since the
# last build, the kernel recorded in its stamp is still the current one.
if [[ -f "$out/stamp" ]] && ! $force &&
  [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -newer "$out/stamp" -print -quit)" ]]; then
  kernel="$(sed -n 's/^kernel //p' "$out/stamp")"
else
  kernel=""
fi
[[ -n "$kernel" ]] || kernel="$(kernel_package || true)"
if [[ -z "$kernel" ]]; then
  log "apt lists do not know linux-image-amd64; apt-get update"
  apt-get update -qq
  kernel="$(kernel_package)"
fi
read -r kpkg kpkg_version <<<"$kernel"
kver="${kpkg#linux-image-}"

stamp_text="$({
  echo "kernel $kpkg $kpkg_version"
  dpkg-query -W -f='package ${Package} ${Version}\n' "${USERLAND_PACKAGES[@]}"
  echo "modules ${LOAD_MODULES[*]} | ${EXTRA_MODULES[*]}"
  sha256sum "${BASH_SOURCE[0]}" "$init_script" | awk '{ print "sha256 " $1 }'
})"

if ! $force && [[ -f "$out/stamp" && -f "$out/vmlinuz" && -f "$out/initrd.img" ]] &&
  [[ "$(cat "$out/stamp")" == "$stamp_text" ]]; then
  log "up to date in $out ($kpkg $kpkg_version)"
  exit 0
fi

started=$SECONDS
mkdir -p "$out" "$debs"
work="$(mktemp -d "$cache_root/guest-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --- kernel -----------------------------------------------------------------
deb="$debs/${kpkg}_${kpkg_version//:/%3a}_amd64.deb"
if [[ ! -f "$deb" ]]; then
  log "apt-get download $kpkg=$kpkg_version"
  (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kpkg_version")
  find "$debs" -name 'linux-image-*.deb' ! -name "$(basename "$deb")" -delete
fi
log "extracting $(basename "$deb")"
dpkg-deb -x "$deb" "$work/kernel"
depmod -b "$work/kernel" "$kver"

root="$work/root"
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,etc,proc,sys,dev,run,tmp,root,var,mnt}
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"

kmods="$root/usr/lib/modules/$kver"
mkdir -p "$kmods"
: >"$work/module-files"
for m in "${LOAD_MODULES[@]}" "${EXTRA_MODULES[@]}"; do
  modprobe -d "$work/kernel" -S "$kver" --show-depends "$m" |
    awk '$1 == "insmod" { print $2 }' >>"$work/module-files"
done
sort -u "$work/module-files" | while read -r ko; do
  rel="${ko#"$work/kernel/lib/modules/$kver/"}"
  mkdir -p "$kmods/$(dirname "$rel")"
  cp "$ko" "$kmods/$rel"
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
  cp "$work/kernel/lib/modules/$kver/$f" "$kmods/"
done
depmod -b "$root/usr" "$kver" 2>/dev/null || depmod -b "$root" "$kver"
printf '%s\n' "${LOAD_MODULES[@]}" >"$root/etc/vhba-modules"
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
log "kernel $kver (${SECONDS}s): $(sort -u "$work/module-files" | wc -l) modules"

# --- userland ---------------------------------------------------------------
# Copy a file to the same path in the merged-/usr guest root (following
# symlinks), and the shared libraries it needs.
declare -A copied=()
declare -A made_dirs=()
guest_path() { # host path -> $GP, the path in the guest (/bin, /sbin, /lib* live under /usr)
  case "$1" in
    /bin/* | /sbin/* | /lib/* | /lib64/*) GP="/usr$1" ;;
    *) GP="$1" ;;
  esac
}
ensure_dir() {
  [[ -n "${made_dirs[$1]:-}" ]] && return 0
  made_dirs[$1]=1
  mkdir -p "$1"
}
copy_file() { # host-path [guest-name]
  local src="$1" dest
  guest_path "${2:-$1}"
  dest="$root$GP"
  [[ -n "${copied[$dest]:-}" ]] && return 0
  copied[$dest]=1
  ensure_dir "${dest%/*}"
  cp -L "$src" "$dest"
}
copy_binary() { # host-path [guest-name]
  copy_file "$@"
  local lib
  while read -r lib; do
    [[ -n "$lib" ]] && copy_file "$lib"
  done < <(ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}

# busybox first as the base; real binaries copied later replace its links.
copy_file /bin/busybox
while read -r applet; do
  guest_path "/$applet"
  ensure_dir "$root${GP%/*}"
  [[ -e "$root$GP" ]] || ln -s /usr/bin/busybox "$root$GP"
done < <(/bin/busybox --list-full)

replace_link() { guest_path "$1"; rm -f "$root$GP"; }
install_binary() { replace_link "${2:-$1}"; copy_binary "$@"; }

# /bin/sh is dash (package dash), as on Debian: Debian's busybox-static ash
# prefers its own applets to PATH, which would shadow the real tools below
# (blockdev, modprobe, …). Busybox still provides the commands nobody else does.
install_binary /bin/dash
replace_link /usr/bin/sh
ln -s dash "$root/usr/bin/sh"

# systemd-udevd, udevadm, helpers, rules, config (package udev).
install_binary /lib/systemd/systemd-udevd
install_binary /bin/udevadm
for helper in scsi_id ata_id cdrom_id; do install_binary "/lib/udev/$helper"; done
while read -r rules; do copy_file "$rules"; done < <(dpkg -L udev | grep -E '^/(usr/)?lib/udev/rules\.d/.*\.rules$')
copy_file /etc/udev/udev.conf

# sg3-utils: every program.
while read -r bin; do
  [[ -f "$bin" && -x "$bin" ]] && install_binary "$bin"
done < <(dpkg -L sg3-utils | grep -E '^/(usr/)?s?bin/[^/]+$')

for bin in "${UTIL_LINUX_BINS[@]}"; do install_binary "$bin"; done
install_binary /bin/kmod
for l in "${KMOD_LINKS[@]}"; do
  replace_link "/usr/sbin/$l"
  replace_link "/usr/bin/$l"
  ln -s /usr/bin/kmod "$root/usr/sbin/$l"
done
install_binary /sbin/mke2fs
for l in mkfs.ext4 mkfs.ext2; do replace_link "/usr/sbin/$l"; ln -s mke2fs "$root/usr/sbin/$l"; done

# fio and its ~70 MiB of libraries (ceph, gluster, icu…) would double the
# time the kernel spends unpacking the base image, so they form a layer of
# their own, appended only by tests that ask for it (boot({ layers: ['fio'] })).
base_root="$root"
root="$work/layer-fio"
mkdir -p "$root/usr/bin"
copy_layer_file() { # host-path: into the layer unless the base has it
  guest_path "$1"
  [[ -e "$base_root$GP" ]] && return 0
  copy_file "$1"
}
copy_layer_file /usr/bin/fio
while read -r lib; do
  [[ -n "$lib" ]] && copy_layer_file "$lib"
done < <(ldd /usr/bin/fio | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
root="$base_root"

cp /usr/share/base-passwd/passwd.master "$root/etc/passwd"
cp /usr/share/base-passwd/group.master "$root/etc/group"
: >"$root/etc/fstab"
# One ld.so.cache that knows the libraries of the base and of every layer.
mkdir -p "$work/all-layers"
cp -a "$root/." "$work/all-layers/"
cp -a "$work/layer-fio/." "$work/all-layers/"
ldconfig -r "$work/all-layers"
cp "$work/all-layers/etc/ld.so.cache" "$root/etc/ld.so.cache"
rm -rf "$work/all-layers"
install -m 0755 "$init_script" "$root/init"

# --- pack -------------------------------------------------------------------
pack() { # dir output: zstd newc cpio padded to 4 bytes (the kernel looks for
  # the next archive of a concatenation at 4-byte alignment, init/initramfs.c)
  (cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc --owner=0:0 --reproducible --quiet) | zstd -q -T0 -9 -o "$2"
  local size pad
  size=$(stat -c %s "$2")
  pad=$(((4 - size % 4) % 4))
  if ((pad > 0)); then head -c "$pad" /dev/zero >>"$2"; fi
}
log "packing initramfs (${SECONDS}s)"
pack "$root" "$work/initrd.img"
mkdir -p "$work/layers"
pack "$work/layer-fio" "$work/layers/fio.cpio.zst"

printf '%s\n' "${LOAD_MODULES[@]}" >"$work/modules"
mv -f "$work/vmlinuz" "$out/vmlinuz"
mv -f "$work/initrd.img" "$out/initrd.img"
mv -f "$work/modules" "$out/modules"
rm -rf "$out/layers"
mv -f "$work/layers" "$out/layers"
printf '%s\n' "$stamp_text" >"$out/stamp.tmp" && mv -f "$out/stamp.tmp" "$out/stamp"
log "built $out in $((SECONDS - started))s: initrd $(du -h "$out/initrd.img" | cut -f1), kernel $kver"
