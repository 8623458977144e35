// The vhba Engine serving a real Linux guest: QEMU (TCG) with
// vhost-user-scsi-pci connected to an in-process Engine. Two targets, a LUN
// >= 256 (flat addressing), a 4096-byte-sector disk, a 512e disk and a
// read-only disk; the guest must see them all with the right geometry, and
// data must round-trip through the engine.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, type VhbaEngineInstance } from '../../hba/engine.ts';
import type { LunSpec } from '../../hba/engine-api.ts';
import { Guest } from '../guest/qemu.ts';

const MiB = 1024 * 1024;

interface DiskCase {
  name: string;
  target: number;
  lun: number;
  /** H:C:T:L as Linux shows it (flat-addressed LUNs keep their 0x4000 bit). */
  hctl: string;
  bytes: number;
  logical: number;
  physical: number;
  serial: string;
  wwn: string;
  readOnly: boolean;
}

const DISKS: DiskCase[] = [
  { name: 'boot', target: 0, lun: 0, bytes: 64 * MiB, logical: 512, physical: 4096, serial: 'VHBAE2E0000', wwn: '5000c50000000001', readOnly: false },
  { name: '4k', target: 0, lun: 1, bytes: 32 * MiB, logical: 4096, physical: 4096, serial: 'VHBAE2E0001', wwn: '5000c50000000002', readOnly: false },
  { name: 'lun300', target: 2, lun: 300, bytes: 48 * MiB, logical: 512, physical: 512, serial: 'VHBAE2E0300', wwn: '5000c50000000300', readOnly: false },
  { name: 'ro', target: 2, lun: 1, bytes: 16 * MiB, logical: 512, physical: 4096, serial: 'VHBAE2E0RO1', wwn: '5000c500000000ff', readOnly: true },
].map((d) => ({ ...d, hctl: `0:0:${d.target}:${d.lun >= 256 ? 0x4000 | d.lun : d.lun}` }));

interface LsblkDevice {
  name: string;
  hctl: string | null;
  size: number;
  'log-sec': number;
  'phy-sec': number;
  ro: boolean;
  serial: string | null;
  wwn: string | null;
}

describe('engine + real guest (vhost-user-scsi-pci)', () => {
  let dir = '';
  let engine: VhbaEngineInstance | undefined;
  let guest: Guest | undefined;
  const dev = new Map<string, string>();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhba-engine-guest-'));
    engine = createEngine(pino({ level: process.env.VHBA_TEST_LOG ?? 'warn' }));
    const socketPath = join(dir, 'vm', 'hba0.sock');
    await engine.createController({ id: 'e2e/vm/hba0', socketPath });
    for (const d of DISKS) {
      const spec: LunSpec = {
        target: d.target,
        lun: d.lun,
        backing: { kind: 'file', path: join(dir, `${d.name}.img`), sizeBytes: d.bytes },
        params: { logicalBlockSize: d.logical, physicalBlockSize: d.physical, serial: d.serial, wwn: d.wwn, readOnly: d.readOnly },
      };
      await engine.attachLun('e2e/vm/hba0', spec);
    }
    guest = await Guest.boot({
      name: 'engine-guest',
      extraArgs: ['-chardev', `socket,id=c0,path=${socketPath}`, '-device', 'vhost-user-scsi-pci,chardev=c0,num_queues=1'],
    });
    console.log(`engine-guest: boot ${guest.bootMs} ms; log ${guest.consoleLogPath}`);
  });

  afterAll(async () => {
    await guest?.shutdown();
    await engine?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the front-end is connected', () => {
    expect(engine!.list()[0]!.connected).toBe(true);
  });

  it('lsblk sees every disk at its H:C:T:L with size, block sizes and read-only flag', async () => {
    const out = await guest!.check('lsblk -J -b -d -o NAME,HCTL,SIZE,LOG-SEC,PHY-SEC,RO,SERIAL,WWN');
    const devices = (JSON.parse(out) as { blockdevices: LsblkDevice[] }).blockdevices;
    console.log('lsblk:', JSON.stringify(devices));
    for (const d of DISKS) {
      const seen = devices.find((x) => x.hctl === d.hctl);
      expect(seen, `disk ${d.name} at ${d.hctl}`).toBeDefined();
      dev.set(d.name, `/dev/${seen!.name}`);
      expect(seen!.size, d.name).toBe(d.bytes);
      expect(seen!['log-sec'], d.name).toBe(d.logical);
      expect(seen!['phy-sec'], d.name).toBe(d.physical);
      expect(seen!.ro, d.name).toBe(d.readOnly);
    }
    expect(devices.filter((x) => x.hctl?.startsWith('0:0:')).length).toBe(DISKS.length);
  });

  it('udev derives by-id names from the serial and NAA designators', async () => {
    const byId = await guest!.check('ls -l /dev/disk/by-id/');
    console.log(`ls -l /dev/disk/by-id/:\n${byId}`);
    for (const d of DISKS) {
      const name = dev.get(d.name)!.slice(5);
      expect(byId).toContain(`wwn-0x${d.wwn} -> ../../${name}`);
      expect(byId).toContain(`scsi-3${d.wwn} -> ../../${name}`);
    }
  });

  it('data written to several disks reads back with the same checksum', async () => {
    const targets = ['boot', '4k', 'lun300'].map((n) => dev.get(n)!);
    const script = [
      'set -e',
      'head -c 1048576 /dev/urandom > /tmp/pattern',
      'want=$(sha256sum < /tmp/pattern)',
      `for d in ${targets.join(' ')}; do`,
      '  dd if=/tmp/pattern of=$d bs=65536 seek=5 oflag=direct conv=fsync 2>/dev/null',
      '  echo 3 > /proc/sys/vm/drop_caches',
      '  got=$(dd if=$d bs=65536 skip=5 count=16 iflag=direct 2>/dev/null | sha256sum)',
      '  [ "$got" = "$want" ] || { echo "mismatch on $d"; exit 1; }',
      'done',
      'echo ok',
    ].join('\n');
    expect((await guest!.check(script, { timeoutMs: 180_000 })).trim()).toBe('ok');
    const luns = engine!.list()[0]!.luns;
    for (const n of ['boot', '4k', 'lun300']) {
      const d = DISKS.find((x) => x.name === n)!;
      const info = luns.find((l) => l.target === d.target && l.lun === d.lun)!;
      expect(info.bytesWritten, n).toBeGreaterThanOrEqual(MiB);
    }
  });

  it('the read-only disk rejects a write with DATA PROTECT and shows write-protect', async () => {
    const ro = dev.get('ro')!;
    // The kernel refuses to open a write-protected disk for writing, so send
    // WRITE(10) of one block through SG_IO on a read-only open.
    const r = await guest!.run(`head -c 512 /dev/zero > /tmp/blk; sg_raw -R -s 512 -i /tmp/blk ${ro} 2a 00 00 00 00 00 00 00 01 00 2>&1; echo rc=$?`, { timeoutMs: 60_000 });
    console.log(`write to read-only disk:\n${r.output}`);
    expect(r.output).toMatch(/[Dd]ata [Pp]rotect/);
    const modes = await guest!.check(`sg_modes -6 ${ro} 2>&1 | head -5`);
    expect(modes).toMatch(/WP=1/);
  });
});
