// Multiqueue with a real guest: a controller with num_queues=2 and a 2-vCPU
// guest. blk-mq gives the disk two hardware queues (/sys/block/sdX/mq/0 and
// 1), maps one per CPU, and I/O issued on each CPU arrives on its own
// virtqueue — the engine's per-queue counters must show both busy, and data
// written through one queue reads back through the other.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, type VhbaEngineInstance } from '../../hba/engine.ts';
import { Guest } from '../guest/qemu.ts';

const WWN = '5000c50000000a01';
const ID = 'e2e/mq/hba0';

describe('multiqueue: num_queues=2 with a real guest', () => {
  let dir = '';
  let engine: VhbaEngineInstance | undefined;
  let guest: Guest | undefined;
  let dev = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vhba-mq-'));
    engine = createEngine(pino({ level: process.env.VHBA_TEST_LOG ?? 'warn' }));
    const socketPath = join(dir, 'mq', 'hba0.sock');
    await engine.createController({ id: ID, socketPath, numRequestQueues: 2 });
    await engine.attachLun(ID, {
      target: 0, lun: 0,
      backing: { kind: 'file', path: join(dir, 'mq.img'), sizeBytes: 64 << 20 },
      params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: 'VHBAMQ0001', wwn: WWN, readOnly: false },
    });
    guest = await Guest.boot({
      name: 'multiqueue', smp: 2,
      extraArgs: ['-chardev', `socket,id=c0,path=${socketPath}`, '-device', 'vhost-user-scsi-pci,chardev=c0,num_queues=2'],
    });
    console.log(`multiqueue: boot ${guest.bootMs} ms; log ${guest.consoleLogPath}`);
    dev = (await guest.check(`readlink -f /dev/disk/by-id/wwn-0x${WWN}`)).trim();
  });

  afterAll(async () => {
    await guest?.shutdown();
    await engine?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Chains each request queue consumed: its avail index, which counts
   * commands served by the native fast path as well as by TypeScript. */
  function queueCommands(): number[] {
    return (engine!.list()[0]!.requestQueues ?? []).map((q) => q.availIndex);
  }

  it('the guest sees two CPUs and the disk has two hardware queues', async () => {
    expect((await guest!.check('nproc')).trim()).toBe('2');
    const mq = await guest!.check(`ls /sys/block/${dev.slice(5)}/mq`);
    console.log(`multiqueue: /sys/block/${dev.slice(5)}/mq: ${mq.trim().split(/\s+/).join(' ')}`);
    expect(mq.trim().split(/\s+/).sort()).toEqual(['0', '1']);
    expect(engine!.list()[0]!.requestQueues?.map((q) => q.queue)).toEqual([2, 3]);
  });

  it('I/O from each CPU lands on its own request queue, and data crosses queues intact', async () => {
    const before = queueCommands();
    await guest!.check([
      'set -e',
      'head -c 4194304 /dev/urandom > /tmp/pat',
      `taskset -c 1 dd if=/tmp/pat of=${dev} bs=4096 oflag=direct conv=fsync 2>/dev/null`,
      `taskset -c 0 dd if=${dev} bs=4096 count=1024 iflag=direct 2>/dev/null | sha256sum > /tmp/got`,
      'sha256sum < /tmp/pat > /tmp/want',
      'cmp /tmp/got /tmp/want',
      // Both CPUs at once.
      `taskset -c 0 dd if=${dev} of=/dev/null bs=4096 count=2000 iflag=direct 2>/dev/null & taskset -c 1 dd if=${dev} of=/dev/null bs=4096 count=2000 skip=4096 iflag=direct 2>/dev/null & wait`,
      'echo ok',
    ].join('\n'), { timeoutMs: 600_000 });
    const after = queueCommands();
    const delta = after.map((n, i) => (n - (before[i] ?? 0) + 0x10000) % 0x10000); // 16-bit index; < 65,536 commands here
    console.log(`multiqueue: commands per request queue during the test: q0=${delta[0]} q1=${delta[1]} (totals ${after.join(', ')})`);
    // 1,024 writes on CPU 1 + 2,000 reads on each CPU (blk-mq may merge; take a floor).
    expect(delta[0]).toBeGreaterThan(1000);
    expect(delta[1]).toBeGreaterThan(1000);
    const lun = engine!.list()[0]!.luns[0]!;
    expect(lun.bytesWritten).toBeGreaterThanOrEqual(4 << 20);
  });
});
