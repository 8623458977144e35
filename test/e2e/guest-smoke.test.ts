// The test guest against QEMU's OWN virtio-scsi (not vhba): proves the image
// (kernel, modules, udev, scsi_id, sg3-utils) and the harness work, and records
// what udev names SCSI disks in /dev/disk/by-id, which vhba must predict.
//
// Disk A: target 1, LUN 0, 512-byte blocks, serial + NAA WWN (locally assigned, NAA 3).
// Disk B: target 2, LUN 300 (flat addressing, LUN >= 256), 4096-byte blocks,
//         serial only: QEMU then reports a vendor-specific 0x83 designator.
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Guest } from '../guest/qemu.ts';

const MiB = 1024 * 1024;
const DISK_A = { hctl: '0:0:1:0', serial: 'VHTEST0001', wwn: '3123456789abcdef', bytes: 64 * MiB };
// Linux keeps the LUN's addressing-method bits (SAM-5 §4.7.7, flat space =
// 01b): LUN 300 reported as 0x412c is "LUN 16684" in H:C:T:L and sysfs.
const DISK_B = { hctl: `0:0:2:${0x4000 | 300}`, serial: 'VHTEST0002', bytes: 48 * MiB };

interface LsblkDevice {
  name: string;
  hctl: string | null;
  size: number;
  'log-sec': number;
  'phy-sec': number;
  serial: string | null;
  wwn: string | null;
}

describe('guest smoke: QEMU virtio-scsi + scsi-hd', () => {
  let guest: Guest | undefined;
  let dir = '';
  const dev: Record<string, string> = {};

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhba-smoke-'));
    const a = join(dir, 'a.raw');
    const b = join(dir, 'b.raw');
    writeFileSync(a, '');
    writeFileSync(b, '');
    truncateSync(a, DISK_A.bytes);
    truncateSync(b, DISK_B.bytes);
    guest = await Guest.boot({
      name: 'guest-smoke',
      extraArgs: [
        '-device', 'virtio-scsi-pci,id=scsi0',
        '-drive', `if=none,id=d0,file=${a},format=raw,cache=none,aio=threads`,
        '-device', `scsi-hd,drive=d0,bus=scsi0.0,scsi-id=1,lun=0,serial=${DISK_A.serial},wwn=0x${DISK_A.wwn}`,
        '-drive', `if=none,id=d1,file=${b},format=raw,cache=none,aio=threads`,
        '-device', `scsi-hd,drive=d1,bus=scsi0.0,scsi-id=2,lun=300,serial=${DISK_B.serial},logical_block_size=4096,physical_block_size=4096`,
      ],
    });
    console.log(`guest-smoke: boot ${guest.bootMs} ms wall, guest uptime ${guest.guestUptimeAtBoot} s at /init ready; log ${guest.consoleLogPath}`);
  });

  afterAll(async () => {
    await guest?.shutdown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('lsblk sees both disks at their H:C:T:L with the right sizes', async () => {
    const out = await guest!.check('lsblk -J -b -d -o NAME,HCTL,SIZE,LOG-SEC,PHY-SEC,SERIAL,WWN,TYPE');
    const devices = (JSON.parse(out) as { blockdevices: LsblkDevice[] }).blockdevices;
    console.log('lsblk:', JSON.stringify(devices));
    const a = devices.find((d) => d.hctl === DISK_A.hctl);
    const b = devices.find((d) => d.hctl === DISK_B.hctl);
    expect(a, `disk at ${DISK_A.hctl}`).toBeDefined();
    expect(b, `disk at ${DISK_B.hctl}`).toBeDefined();
    dev.a = `/dev/${a!.name}`;
    dev.b = `/dev/${b!.name}`;
    expect(a!.size).toBe(DISK_A.bytes);
    expect(b!.size).toBe(DISK_B.bytes);
    expect(a!.serial).toBe(DISK_A.serial);
    expect(a!.wwn).toBe(`0x${DISK_A.wwn}`);
  });

  it('block sizes: 512/512 and 4096/4096', async () => {
    expect(dev.a).toBeDefined();
    const sizes = await guest!.check(`for d in ${dev.a} ${dev.b}; do echo $(blockdev --getss $d) $(blockdev --getpbsz $d) $(blockdev --getsize64 $d); done`);
    expect(sizes.trim().split('\n')).toEqual([`512 512 ${DISK_A.bytes}`, `4096 4096 ${DISK_B.bytes}`]);
  });

  it('sg3-utils talk to the disks: INQUIRY, VPD 0x80/0x83, READ CAPACITY, TEST UNIT READY', async () => {
    const inq = await guest!.check(`sg_inq ${dev.a}`);
    expect(inq).toMatch(/Vendor identification: QEMU/);
    const vpd80 = await guest!.check(`sg_vpd -p 0x80 ${dev.a}`);
    expect(vpd80).toContain(DISK_A.serial);
    const vpd83 = await guest!.check(`sg_vpd -p 0x83 ${dev.a}; echo ----; sg_vpd -p 0x83 ${dev.b}`);
    console.log(`sg_vpd -p 0x83:\n${vpd83}`);
    expect(vpd83).toMatch(new RegExp(`0x${DISK_A.wwn}`, 'i'));
    const cap = await guest!.check(`sg_readcap -16 ${dev.b}`);
    expect(cap).toMatch(/Logical block length=4096 bytes/);
    await guest!.check(`sg_turs ${dev.a} && sg_turs ${dev.b}`);
  });

  it('udev names the disks in /dev/disk/by-id from scsi_id', async () => {
    const byId = await guest!.check('ls -l /dev/disk/by-id/');
    console.log(`ls -l /dev/disk/by-id/:\n${byId}`);
    const scsiIdA = await guest!.check(`/lib/udev/scsi_id --export --whitelisted -d ${dev.a}`);
    const scsiIdB = await guest!.check(`/lib/udev/scsi_id --export --whitelisted -d ${dev.b}`);
    console.log(`scsi_id ${dev.a}:\n${scsiIdA}\nscsi_id ${dev.b}:\n${scsiIdB}`);
    const props = await guest!.check(`udevadm info --query=property ${dev.a} | grep -E '^(ID_|DEVLINKS)'; echo ----; udevadm info --query=property ${dev.b} | grep -E '^(ID_|DEVLINKS)'`);
    console.log(`udev properties:\n${props}`);
    // Which rule lines made the links (udevadm test logs file:line per action).
    const rules = await guest!.run(`udevadm test /sys/class/block/${dev.a!.slice(5)} 2>&1 | grep -E 'persistent-storage.rules:[0-9]+' | grep -E 'LINK|IMPORT|ID_SERIAL|ID_WWN|ID_BUS' | head -40`, { timeoutMs: 120_000 });
    console.log(`udevadm test (rule lines):\n${rules.output}`);

    // NAA designator (id type 3) wins: ID_SERIAL = '3' + hex WWN.
    expect(scsiIdA).toContain(`ID_SERIAL=3${DISK_A.wwn}`);
    expect(scsiIdA).toContain(`ID_SERIAL_SHORT=${DISK_A.wwn}`);
    expect(scsiIdA).toContain(`ID_WWN=0x${DISK_A.wwn}`);
    expect(scsiIdA).toContain(`ID_SCSI_SERIAL=${DISK_A.serial}`);
    expect(byId).toContain(`scsi-3${DISK_A.wwn} -> ../../${dev.a!.slice(5)}`);
    expect(byId).toContain(`wwn-0x${DISK_A.wwn} -> ../../${dev.a!.slice(5)}`);
    // Without a WWN QEMU only has a vendor-specific designator: '0' + vendor + product + serial.
    expect(scsiIdB).toMatch(/ID_SERIAL=0QEMU_QEMU_HARDDISK_VHTEST0002/);
    expect(byId).toContain(`scsi-0QEMU_QEMU_HARDDISK_${DISK_B.serial} -> ../../${dev.b!.slice(5)}`);
  });

  // vhba's VPD 0x83 carries an NAA designator and a T10 vendor ID designator.
  // The kernel's scsi_debug has both kinds (T10 first, then NAA-3), so it shows
  // which one scsi_id turns into ID_SERIAL: the NAA one, whatever the order.
  it('scsi_id picks the NAA designator over a T10 vendor ID designator (scsi_debug)', async () => {
    await guest!.check('modprobe scsi_debug dev_size_mb=8 && udevadm settle --timeout=60', { timeoutMs: 120_000 });
    const list = JSON.parse(await guest!.check('lsblk -J -d -o NAME,VENDOR,MODEL')) as { blockdevices: { name: string; model: string | null }[] };
    const sd = list.blockdevices.find((d) => (d.model ?? '').trim() === 'scsi_debug');
    expect(sd, 'scsi_debug disk').toBeDefined();
    const vpd = await guest!.check(`sg_vpd -p 0x83 /dev/${sd!.name}`);
    const scsiId = await guest!.check(`/lib/udev/scsi_id --export --whitelisted -d /dev/${sd!.name}`);
    const byId = await guest!.check(`ls -l /dev/disk/by-id/ | grep -w ${sd!.name}`);
    console.log(`scsi_debug sg_vpd -p 0x83:\n${vpd}\nscsi_id:\n${scsiId}\nby-id:\n${byId}`);
    expect(vpd).toMatch(/designator type: T10 vendor identification/);
    // The first NAA designator in the "Addressed logical unit" section.
    const lu = vpd.split(/Target port:|Target device that contains/)[0] ?? '';
    const naa = /designator type: NAA,\s+code set: Binary\s+0x([0-9a-f]{16})/.exec(lu)?.[1];
    expect(naa, 'NAA logical-unit designator').toBeDefined();
    expect(scsiId).toContain(`ID_SERIAL=3${naa}\n`);
    expect(scsiId).toContain(`ID_WWN=0x${naa}\n`);
    expect(byId).toContain(`scsi-3${naa} ->`);
    expect(byId).toContain(`wwn-0x${naa} ->`);
  });

  it('harness: long commands, exit codes, and a timed-out command leaves the shell usable', async () => {
    const long = `x='${'a'.repeat(20_000)}'; echo \${#x}; exit 3`;
    expect(await guest!.run(long)).toEqual({ output: '20000\n', exitCode: 3 });
    await expect(guest!.run('sleep 30', { timeoutMs: 1_000 })).rejects.toThrow(/timed out/);
    expect(await guest!.run('echo still here')).toEqual({ output: 'still here\n', exitCode: 0 });
  });

  it('data written to each disk reads back with the same checksum', async () => {
    const script = [
      'set -e',
      'head -c 1048576 /dev/urandom > /tmp/pattern',
      'want=$(sha256sum < /tmp/pattern)',
      `for d in ${dev.a} ${dev.b}; do`,
      '  dd if=/tmp/pattern of=$d bs=65536 seek=3 oflag=direct conv=fsync 2>/dev/null',
      '  echo 3 > /proc/sys/vm/drop_caches',
      '  got=$(dd if=$d bs=65536 skip=3 count=16 iflag=direct 2>/dev/null | sha256sum)',
      '  [ "$got" = "$want" ] || { echo "mismatch on $d"; exit 1; }',
      'done',
      'echo ok',
    ].join('\n');
    expect((await guest!.check(script, { timeoutMs: 120_000 })).trim()).toBe('ok');
  });
});
