#!/bin/sh
# PID 1 of the vhba test guest. /bin/sh is dash; the other basic commands are
# busybox applets unless a Debian package's real binary is in the image. scripts/build-guest-image.sh copies
# this file to /init in the initramfs.
#
# Brings up /proc, /sys, /dev, /run, loads the storage modules, starts
# systemd-udevd and waits for it to settle (so /dev/disk/by-id exists), then:
#   - if /test.sh exists (the harness appends it as an extra cpio archive):
#     runs it, prints `VHBA-EXIT:<rc>` and powers off;
#   - otherwise serves a shell on ttyS0 for the harness (test/guest/qemu.ts),
#     announced by `VHBA-READY`.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs -o mode=0755 devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /root /var
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
ln -sf /run /var/run

# Only emergencies on the console from now on: the harness parses it.
dmesg -n 1

while read -r module; do
  case "$module" in ''|'#'*) continue ;; esac
  modprobe -q "$module" || echo "vhba-init: modprobe $module failed"
done < /etc/vhba-modules

# Let udev name the devices exactly as a distribution would.
/lib/systemd/systemd-udevd --daemon --resolve-names=never
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=120 || echo "vhba-init: udevadm settle timed out"

echo "VHBA-BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"

if [ -f /test.sh ]; then
  /bin/sh /test.sh </dev/null
  rc=$?
  sync
  echo "VHBA-EXIT:$rc"
  poweroff -f
fi

# The harness's shell: no echo (commands arrive base64-encoded; only their
# output is wanted), empty prompts. Restarted if it ever exits.
while :; do
  # Absolute paths: busybox's setsid would otherwise run its own ash applet.
  setsid -c /bin/sh -c 'stty -echo; export PS1= PS2=; echo VHBA-READY; exec /bin/sh -i' \
    </dev/ttyS0 >/dev/ttyS0 2>&1
  echo "vhba-init: shell exited, restarting"
  sleep 1
done
