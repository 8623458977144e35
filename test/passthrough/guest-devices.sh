#!/bin/sh
# Makes the real SCSI devices the passthrough tests drive, in the test guest
# (run as root by the guest's own sh, outside any chroot: modprobe needs the
# guest kernel's modules). Two kinds:
#
#   scsi_debug  one LUN, 4096-byte logical blocks, SCSI_DEBUG_MB MiB (default 8).
#               scsi_debug keeps no PERSISTENT RESERVE state (it does not
#               implement PR), hence the second device:
#   LIO         a fileio backstore on a file in /run (tmpfs), attrib/block_size
#               4096, LIO_MB MiB (default 16), exported through two tcm_loop
#               targets, each with its own I_T nexus (initiator port name), so
#               the one LUN appears as two /dev/sd* devices = two initiators as
#               far as the LUN's PERSISTENT RESERVE state goes (SPC-4 §5.12).
#
# LIO is configured through configfs by hand (no targetcli): the same steps
# targetcli takes (Documentation/target/tcm_mod_builder, tcm_loop).
#
#   sh guest-devices.sh [JSON-FILE]
#
# Output: human-readable lines, then one JSON document on a line of its own
# between VHBA-DEVICES-BEGIN and VHBA-DEVICES-END (also written to JSON-FILE
# if given):
#   { "scsiDebug": DEV, "lioA": DEV, "lioB": DEV, "lioSerial": "...",
#     "byId": { "<link>": "/dev/sdX", ... } }
# where DEV = { hctl, host, block: "/dev/sdX", sg: "/dev/sgN", vendor, model,
#               initiator (LIO only), byId: [links to this device] }.
set -eu

SCSI_DEBUG_MB="${SCSI_DEBUG_MB:-8}"
LIO_MB="${LIO_MB:-16}"
LIO_SERIAL="${LIO_SERIAL:-vhbalio0001}"
LIO_FILE=/run/vhba-lio/disk0.img
CFG=/sys/kernel/config/target
# tcm_loop: WWN and nexus names must both be NAA (SAS) names, 16 hex digits.
TARGET_A=naa.5001405000000a01
TARGET_B=naa.5001405000000b01
INITIATOR_A=naa.5001405000000a99
INITIATOR_B=naa.5001405000000b99

log() { echo "guest-devices: $*"; }
die() { echo "guest-devices: $*" >&2; exit 1; }

# --- scsi_debug ---------------------------------------------------------------
modprobe scsi_debug sector_size=4096 dev_size_mb="$SCSI_DEBUG_MB" num_tgts=1 max_luns=1 add_host=1 \
  || die "modprobe scsi_debug failed"

# --- LIO ----------------------------------------------------------------------
# LIO writes PERSISTENT RESERVE state (the APTPL file, even to record that
# there is none) under its db_root, <db_root>/pr/aptpl_<serial>; without that
# directory PR OUT REGISTER fails with LOGICAL UNIT COMMUNICATION FAILURE.
# db_root is /etc/target if that exists when target_core_mod loads.
mkdir -p /etc/target/pr
modprobe configfs
grep -q ' /sys/kernel/config configfs ' /proc/mounts || mount -t configfs configfs /sys/kernel/config
modprobe target_core_mod
modprobe target_core_file
modprobe tcm_loop
[ -d "$CFG" ] || die "$CFG missing after loading target_core_mod"

mkdir -p "${LIO_FILE%/*}"
truncate -s "$((LIO_MB * 1024 * 1024))" "$LIO_FILE"
backstore="$CFG/core/fileio_0/disk0"
mkdir -p "$backstore"
echo "fd_dev_name=$LIO_FILE,fd_dev_size=$((LIO_MB * 1024 * 1024)),fd_buffered_io=1" >"$backstore/control"
echo "$LIO_SERIAL" >"$backstore/wwn/vpd_unit_serial"
echo 1 >"$backstore/enable"
# The block size may only change while the backstore is exported nowhere.
echo 4096 >"$backstore/attrib/block_size"

# One tcm_loop target per initiator: the nexus comes first (commands without
# one fail), the LUN link makes tcm_loop add the SCSI device.
export_lun() { # target initiator
  tpg="$CFG/loopback/$1/tpgt_1"
  mkdir -p "$tpg/lun/lun_0"
  echo "$2" >"$tpg/nexus"
  ln -s "$backstore" "$tpg/lun/lun_0/disk0"
}
export_lun "$TARGET_A" "$INITIATOR_A"
export_lun "$TARGET_B" "$INITIATOR_B"

udevadm settle --timeout=60 || log "udevadm settle timed out"

# --- what is where ------------------------------------------------------------
# The SCSI device H:C:T:L directories of a host.
devices_of_host() { # host-number
  for d in /sys/bus/scsi/devices/"$1":*:*:*; do
    [ -d "$d/block" ] && echo "${d##*/}"
  done
}
first_entry() { # dir: the name of its first entry
  for e in "$1"/*; do [ -e "$e" ] && { echo "${e##*/}"; return 0; }; done
  return 1
}
trim() { sed -e 's/[[:space:]]*$//' -e 's/^[[:space:]]*//'; }
json_links() { # /dev/sdX: the by-id links resolving to it, as a JSON array
  out="" ; sep=""
  for l in /dev/disk/by-id/*; do
    [ -L "$l" ] || continue
    if [ "$(readlink -f "$l")" = "$1" ]; then out="$out$sep\"$l\""; sep=","; fi
  done
  echo "[$out]"
}
json_device() { # hctl [initiator]
  dir="/sys/bus/scsi/devices/$1"
  block="/dev/$(first_entry "$dir/block")"
  sg="/dev/$(first_entry "$dir/scsi_generic")"
  vendor="$(trim <"$dir/vendor")"
  model="$(trim <"$dir/model")"
  log "$1 $block $sg vendor=\"$vendor\" model=\"$model\"${2:+ initiator=$2}" >&2
  printf '{"hctl":"%s","host":%s,"block":"%s","sg":"%s","vendor":"%s","model":"%s"%s,"byId":%s}' \
    "$1" "${1%%:*}" "$block" "$sg" "$vendor" "$model" "${2:+,\"initiator\":\"$2\"}" "$(json_links "$block")"
}

sdebug_host=""
for h in /sys/bus/pseudo/drivers/scsi_debug/adapter*/host*; do
  [ -d "$h" ] && sdebug_host="${h##*/host}"
done
[ -n "$sdebug_host" ] || die "no scsi_debug host"
sdebug_hctl="$(devices_of_host "$sdebug_host" | head -n1)"
[ -n "$sdebug_hctl" ] || die "scsi_debug host$sdebug_host has no disk"

lio_hctl() { # target: H:C:T:L of its LUN 0 (configfs `address` is H:C:T)
  address="$(cat "$CFG/loopback/$1/tpgt_1/address")"
  hctl="$address:0"
  [ -d "/sys/bus/scsi/devices/$hctl/block" ] || die "no disk at $hctl for $1"
  echo "$hctl"
}
lio_a_hctl="$(lio_hctl "$TARGET_A")"
lio_b_hctl="$(lio_hctl "$TARGET_B")"

by_id=""; sep=""
for l in /dev/disk/by-id/*; do
  [ -L "$l" ] || continue
  by_id="$by_id$sep\"$l\":\"$(readlink -f "$l")\""; sep=","
  log "by-id $l -> $(readlink -f "$l")" >&2
done

json="{\"scsiDebug\":$(json_device "$sdebug_hctl"),\"lioA\":$(json_device "$lio_a_hctl" "$INITIATOR_A"),\"lioB\":$(json_device "$lio_b_hctl" "$INITIATOR_B"),\"lioSerial\":\"$LIO_SERIAL\",\"byId\":{$by_id}}"
if [ -n "${1:-}" ]; then echo "$json" >"$1"; fi
echo VHBA-DEVICES-BEGIN
echo "$json"
echo VHBA-DEVICES-END
