// Many LUNs behind one controller with a real guest: by default 256 LUNs
// (4 targets × 64) as CI runs it; VHBA_SCALE_LUNS=1024 runs the 1,024-LUN
// case (4 × 256). Every LUN is an in-memory sparse disk. The guest must
// enumerate all of them (REPORT LUNS scan per target); the engine's resident
// memory per attached LUN is measured and printed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, type VhbaEngineInstance } from '../../hba/engine.ts';
import { Guest } from '../guest/qemu.ts';

const TOTAL = Number(process.env.VHBA_SCALE_LUNS ?? 256);
const TARGETS = 4;
const PER_TARGET = Math.ceil(TOTAL / TARGETS);
const ID = 'e2e/scale/hba0';

function wwnOf(target: number, lun: number): string {
  return `5000c5${target.toString(16).padStart(2, '0')}${lun.toString(16).padStart(8, '0')}`;
}

describe(`scale: one controller with ${TOTAL} LUNs and a real guest`, () => {
  let dir = '';
  let engine: VhbaEngineInstance | undefined;
  let guest: Guest | undefined;
  let rssBefore = 0;
  let rssAttached = 0;
  let heapBefore = 0;
  let heapAttached = 0;
  let attachMs = 0;

  beforeAll(async () => {
    if (!Number.isInteger(TOTAL) || TOTAL < 1 || TOTAL > TARGETS * 16384) throw new Error(`VHBA_SCALE_LUNS=${process.env.VHBA_SCALE_LUNS} is not a LUN count`);
    dir = mkdtempSync(join(tmpdir(), 'vhba-scale-'));
    engine = createEngine(pino({ level: process.env.VHBA_TEST_LOG ?? 'warn' }));
    const socketPath = join(dir, 'scale', 'hba0.sock');
    await engine.createController({ id: ID, socketPath });
    rssBefore = process.memoryUsage().rss;
    heapBefore = process.memoryUsage().heapUsed;
    const t0 = Date.now();
    let n = 0;
    for (let target = 0; target < TARGETS && n < TOTAL; target++) {
      for (let lun = 0; lun < PER_TARGET && n < TOTAL; lun++, n++) {
        await engine.attachLun(ID, {
          target, lun,
          backing: { kind: 'memory', sizeBytes: 1 << 20 },
          params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: `SC${target}L${lun}`, wwn: wwnOf(target, lun), readOnly: false },
        });
      }
    }
    attachMs = Date.now() - t0;
    rssAttached = process.memoryUsage().rss;
    heapAttached = process.memoryUsage().heapUsed;
    guest = await Guest.boot({
      name: 'scale', memory: TOTAL > 256 ? '1G' : '512M', timeoutMs: 1_200_000,
      extraArgs: ['-chardev', `socket,id=c0,path=${socketPath}`, '-device', 'vhost-user-scsi-pci,chardev=c0,num_queues=1'],
    });
    console.log(`scale: attached ${TOTAL} LUNs in ${attachMs} ms; guest boot ${guest.bootMs} ms; log ${guest.consoleLogPath}`);
  });

  afterAll(async () => {
    await guest?.shutdown();
    await engine?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`the guest enumerates all ${TOTAL} LUNs as disks with their WWNs`, async () => {
    const t0 = Date.now();
    const out = await guest!.run(
      // udevd may be too busy to answer `udevadm settle` with this many new
      // disks, so poll for the links themselves (at most 30 minutes).
      `n=0; while [ $(ls /sys/class/scsi_disk | wc -l) -lt ${TOTAL} ] && [ $n -lt 9000 ]; do n=$((n+1)); sleep 0.2; done
       n=0; while [ $(ls /dev/disk/by-id | grep -c '^wwn-0x5000c5') -lt ${TOTAL} ] && [ $n -lt 9000 ]; do n=$((n+1)); sleep 0.2; done
       ls /sys/class/scsi_disk | wc -l; ls /dev/disk/by-id | grep -c '^wwn-0x5000c5'`,
      { timeoutMs: 2_400_000 },
    );
    const [disks, links] = out.output.trim().split(/\s+/).map(Number);
    console.log(`scale: guest sees ${disks} SCSI disks and ${links} wwn- links (${TOTAL} attached); waited ${Date.now() - t0} ms after boot`);
    expect(disks).toBe(TOTAL);
    expect(links).toBe(TOTAL);
    // Spot checks: the last LUN of the last target, by its WWN.
    const lastTarget = Math.floor((TOTAL - 1) / PER_TARGET);
    const lastLun = (TOTAL - 1) % PER_TARGET;
    const hctl = await guest!.check(`n=$(basename $(readlink -f /dev/disk/by-id/wwn-0x${wwnOf(lastTarget, lastLun)})); ls /sys/block/$n/device/scsi_device`);
    expect(hctl.trim()).toMatch(new RegExp(`^\\d+:0:${lastTarget}:${lastLun >= 256 ? 0x4000 | lastLun : lastLun}$`));
  });

  it('reports the engine memory per attached LUN', () => {
    const rssNow = process.memoryUsage().rss;
    const heapNow = process.memoryUsage().heapUsed;
    console.log(`scale: JS heap used +${((heapAttached - heapBefore) / 2 ** 20).toFixed(1)} MiB after attaching (${((heapAttached - heapBefore) / TOTAL / 1024).toFixed(1)} KiB/LUN), +${((heapNow - heapBefore) / 2 ** 20).toFixed(1)} MiB after enumeration (${((heapNow - heapBefore) / TOTAL / 1024).toFixed(1)} KiB/LUN; includes garbage not yet collected)`);
    const perLunAttach = (rssAttached - rssBefore) / TOTAL;
    const perLunServed = (rssNow - rssBefore) / TOTAL;
    console.log(`scale: engine RSS ${(rssBefore / 2 ** 20).toFixed(1)} MiB before, +${((rssAttached - rssBefore) / 2 ** 20).toFixed(1)} MiB after attaching ${TOTAL} LUNs (${(perLunAttach / 1024).toFixed(1)} KiB/LUN), +${((rssNow - rssBefore) / 2 ** 20).toFixed(1)} MiB after the guest enumerated them (${(perLunServed / 1024).toFixed(1)} KiB/LUN)`);
    const luns = engine!.list()[0]!.luns;
    expect(luns).toHaveLength(TOTAL);
    // Every LUN was touched by the scan (INQUIRY/READ CAPACITY are not counted; the partition probe reads are).
    expect(luns.filter((l) => l.reads > 0).length).toBe(TOTAL);
  });
});
