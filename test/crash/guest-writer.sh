#!/bin/sh
# Guest side of the crash test (test/e2e/crash-guest.test.ts): writes 4 KiB
# blocks to the first SCSI disk with sg_raw WRITE(16) (FUA on every third),
# a SYNCHRONIZE CACHE (sg_sync) every fifth write, and prints one console
# line per step: "CRW seq lba fua" before a write is issued, "CRA seq" once it
# completed GOOD, "CRS seq"/"CRF seq" around a flush. Runs until the disk
# stops answering (the engine was killed; QEMU 7.2 does not reconnect).
# Usage: guest-writer.sh FIRST_SEQ BLOCKS
seq=$1
blocks=$2
dev=/dev/$(ls /sys/class/scsi_disk/*/device/block/ | head -n 1)
echo "CRDEV $dev"
while :; do
  lba=$(( (seq * 7919 % blocks) * 8 ))
  fua=0
  [ $((seq % 3)) -eq 0 ] && fua=1
  printf 'VHBAGST %011d %011d\n' "$seq" "$lba" > /tmp/line
  i=0; : > /tmp/blk
  while [ $i -lt 128 ]; do cat /tmp/line >> /tmp/blk; i=$((i + 1)); done
  echo "CRW $seq $lba $fua"
  flags=00
  [ $fua -eq 1 ] && flags=08
  sg_raw -s 4096 -i /tmp/blk "$dev" 8a $flags 00 00 00 00 00 00 $(printf '%02x %02x' $((lba >> 8)) $((lba & 255))) 00 00 00 08 00 00 >/dev/null 2>&1 || { echo "CRX $seq"; exit 1; }
  echo "CRA $seq"
  seq=$((seq + 1))
  if [ $((seq % 5)) -eq 0 ]; then
    echo "CRS $seq"
    sg_sync "$dev" >/dev/null 2>&1 || { echo "CRX $seq"; exit 1; }
    echo "CRF $seq"
    seq=$((seq + 1))
  fi
done
