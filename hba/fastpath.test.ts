// hba/fastpath.ts: the native LUN table follows every LogicalUnit's state
// (unit attentions, WCE, capacity, detach), and LU stats include native I/O.
// First against a recording FastPathLuns, then end to end: a real native
// device, the mock virtio driver, VirtioScsiDevice and a ScsiTarget.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileBackend } from './backends/file.ts';
import { MemoryBackend } from './backends/memory.ts';
import { FastPath } from './fastpath.ts';
import { FakePassthroughDevice } from './backends/fake-passthrough-device.ts';
import { PassthroughPort } from './backends/passthrough-port.ts';
import { native, type FastPathLuns, type NativeLunConfig, type NativeLunCounters, type NativeLunUpdate, type NativePassthroughLunConfig, type NativeVirtioDevice } from './native/index.ts';
import { LogicalUnit } from './scsi/logical-unit.ts';
import { deferredOpcodeBitmap, refusedOpcodeBitmap } from './scsi/passthrough-policy.ts';
import { PassthroughUnit } from './scsi/passthrough-unit.ts';
import { ScsiTarget } from './scsi/target.ts';
import { cdb10, run, testParams } from './scsi/testing.ts';
import { MockGuestMemory, MockSplitQueue } from './virtio/mock-driver.ts';
import { VirtioFeature } from './virtio/ring-layout.ts';
import { VirtioScsiDevice } from './virtio-scsi/device.ts';
import { CMD_REQ_SIZE, CMD_RESP_SIZE, encodeLun } from './virtio-scsi/framing.ts';

const MiB = 1 << 20;

/** A FastPathLuns that records what it is told. */
class RecordingLuns implements FastPathLuns {
  luns = new Map<string, NativeLunConfig>();
  drained: { key: string; eligible: boolean }[] = [];
  counters: NativeLunCounters = { reads: 3, writes: 2, bytesRead: 3 * 4096, bytesWritten: 2 * 512, flushes: 1, errors: 0 };
  setLun(target: number, lun: number, config: NativeLunConfig): void {
    this.luns.set(`${target}:${lun}`, { ...config });
  }
  updateLun(target: number, lun: number, update: NativeLunUpdate): void {
    const c = this.luns.get(`${target}:${lun}`);
    if (!c) throw new Error('not registered');
    Object.assign(c, update);
  }
  async removeLun(target: number, lun: number): Promise<NativeLunCounters | undefined> {
    return this.luns.delete(`${target}:${lun}`) ? { ...this.counters } : undefined;
  }
  async drainLun(target: number, lun: number): Promise<void> {
    const key = `${target}:${lun}`;
    this.drained.push({ key, eligible: this.luns.get(key)!.eligible });
  }
  lunCounters(target: number, lun: number): NativeLunCounters | undefined {
    return this.luns.has(`${target}:${lun}`) ? { ...this.counters } : undefined;
  }
}

let dir: string;
const units: LogicalUnit[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vhba-fastpath-ts-'));
});
afterEach(async () => {
  for (const u of units.splice(0)) await u.close();
  rmSync(dir, { recursive: true, force: true });
});

async function fileUnit(name: string, params: Partial<typeof testParams> = {}): Promise<LogicalUnit> {
  const backend = await FileBackend.open(join(dir, name), { sizeBytes: MiB, create: true, readOnly: params.readOnly ?? false });
  const unit = new LogicalUnit({ ...testParams, ...params }, backend);
  units.push(unit);
  return unit;
}

describe('FastPath mirrors LogicalUnit state', () => {
  it('registers file LUNs on current and later devices, ineligible while a unit attention is pending', async () => {
    const fp = new FastPath();
    const early = new RecordingLuns();
    fp.attachDevice(early);
    const unit = await fileUnit('a.img');
    fp.addLun(1, 300, unit);
    const late = new RecordingLuns();
    fp.attachDevice(late);
    for (const d of [early, late]) {
      expect(d.luns.get('1:300')).toMatchObject({ blockSize: 512, blockCount: 2048n, readOnly: false, writeCacheEnabled: true, eligible: false });
      expect(d.luns.get('1:300')!.dsyncFd).toBeGreaterThanOrEqual(0);
    }
    // The POWER ON unit attention is reported by the JS path; then native I/O may start.
    expect((await run(unit, [0x00, 0, 0, 0, 0, 0])).status).toBe(2);
    expect(early.luns.get('1:300')!.eligible).toBe(true);
    expect(late.luns.get('1:300')!.eligible).toBe(true);
    unit.raiseReportedLunsChanged();
    expect(early.luns.get('1:300')!.eligible).toBe(false);
    // REQUEST SENSE consumes it too.
    expect((await run(unit, [0x03, 0, 0, 0, 252, 0])).status).toBe(0);
    expect(early.luns.get('1:300')!.eligible).toBe(true);
    unit.reset();
    expect(early.luns.get('1:300')!.eligible).toBe(false);
  });

  it('serves memory LUNs through JS only', async () => {
    const fp = new FastPath();
    const d = new RecordingLuns();
    fp.attachDevice(d);
    fp.addLun(0, 0, new LogicalUnit(testParams, new MemoryBackend(MiB)));
    expect(d.luns.size).toBe(0);
    expect(fp.size).toBe(0);
  });

  it('mirrors read-only and WCE (MODE SELECT)', async () => {
    const fp = new FastPath();
    const d = new RecordingLuns();
    fp.attachDevice(d);
    const ro = await fileUnit('ro.img', { readOnly: true });
    const unit = await fileUnit('w.img');
    fp.addLun(0, 0, unit);
    fp.addLun(0, 1, ro);
    await run(unit, [0x00, 0, 0, 0, 0, 0]);
    // Caching page with WCE=0 (SPC-4 §6.9, SBC-3 §6.5.5).
    const sense = (await run(unit, [0x1a, 0x08, 0x08, 0, 255, 0])).dataIn!;
    const page = Buffer.from(sense.subarray(4));
    page[2] = page[2]! & ~0x04;
    const list = Buffer.concat([Buffer.from([0, 0, 0, 0]), page]);
    expect((await run(unit, [0x15, 0x10, 0, 0, list.length, 0], { dataOut: list })).status).toBe(0);
    expect(d.luns.get('0:0')).toMatchObject({ writeCacheEnabled: false, eligible: true });
    expect(d.luns.get('0:1')).toMatchObject({ readOnly: true, dsyncFd: -1, writeCacheEnabled: true });
  });

  it('stops and drains native I/O before a resize, then follows the new capacity', async () => {
    const fp = new FastPath();
    const d = new RecordingLuns();
    fp.attachDevice(d);
    const unit = await fileUnit('r.img');
    fp.addLun(0, 0, unit);
    await run(unit, [0x00, 0, 0, 0, 0, 0]);
    expect(d.luns.get('0:0')!.eligible).toBe(true);
    await unit.resize(2 * MiB);
    expect(d.drained).toEqual([{ key: '0:0', eligible: false }]);
    expect(d.luns.get('0:0')).toMatchObject({ blockCount: 4096n, eligible: false }); // CAPACITY DATA HAS CHANGED pending
    await run(unit, [0x00, 0, 0, 0, 0, 0]);
    expect(d.luns.get('0:0')!.eligible).toBe(true);
  });

  it('adds native counters into the LU stats, also after devices and the LUN are gone', async () => {
    const fp = new FastPath();
    const a = new RecordingLuns();
    const b = new RecordingLuns();
    fp.attachDevice(a);
    fp.attachDevice(b);
    const unit = await fileUnit('s.img');
    fp.addLun(0, 0, unit);
    await run(unit, [0x00, 0, 0, 0, 0, 0]);
    await run(unit, cdb10(0x28, 0, 2));
    const jsOnly = { reads: 1, writes: 0, bytesRead: 1024, bytesWritten: 0 };
    const native = { reads: 3, writes: 2, bytesRead: 3 * 4096, bytesWritten: 1024 };
    const sum = (n: number) => ({ reads: jsOnly.reads + n * native.reads, writes: n * native.writes, bytesRead: jsOnly.bytesRead + n * native.bytesRead, bytesWritten: n * native.bytesWritten });
    expect(unit.stats()).toEqual(sum(2));
    await fp.detachDevice(a);
    expect(unit.stats()).toEqual(sum(2)); // a's counters are retired, b's still live
    await fp.removeLun(0, 0);
    expect(b.luns.size).toBe(0);
    expect(unit.stats()).toEqual(sum(2));
    unit.raiseReportedLunsChanged(); // no longer mirrored anywhere
    expect(b.luns.size).toBe(0);
  });
});

describe('FastPath registers passthrough LUNs (issue 8)', () => {
  /** Records setLun configs of either kind. */
  class RecordingAnyLuns extends RecordingLuns {
    passthrough = new Map<string, NativePassthroughLunConfig>();
    override setLun(target: number, lun: number, config: NativeLunConfig | NativePassthroughLunConfig): void {
      if ('device' in config) this.passthrough.set(`${target}:${lun}`, { ...config });
      else super.setLun(target, lun, config);
    }
    override updateLun(target: number, lun: number, update: NativeLunUpdate): void {
      const c = this.passthrough.get(`${target}:${lun}`);
      if (!c) return super.updateLun(target, lun, update);
      expect(Object.keys(update)).toEqual(['eligible']); // only eligibility is mutable natively
      Object.assign(c, update);
    }
    override async removeLun(target: number, lun: number): Promise<NativeLunCounters | undefined> {
      if (this.passthrough.delete(`${target}:${lun}`)) return { ...this.counters };
      return super.removeLun(target, lun);
    }
    override lunCounters(target: number, lun: number): NativeLunCounters | undefined {
      return this.passthrough.has(`${target}:${lun}`) ? { ...this.counters } : super.lunCounters(target, lun);
    }
  }

  function passthroughUnit(device: FakePassthroughDevice): PassthroughUnit {
    const identity = { peripheralDeviceType: 0, vendor: 'V', product: 'P', revision: '1', serial: 'S', wwn: '', logicalBlockSize: 512, physicalBlockSize: 512, sizeBytes: 1 << 20 };
    return new PassthroughUnit(new PassthroughPort(device, { timeoutMs: 1000 }), identity, { rawio: false, maxTransferBytes: 0 });
  }

  it('registers with the policy bitmaps and timeout on every device; eligible follows our unit attention', async () => {
    const fp = new FastPath();
    const early = new RecordingAnyLuns();
    fp.attachDevice(early);
    const device = new FakePassthroughDevice();
    const unit = passthroughUnit(device);
    fp.addPassthroughLun(2, 7, unit, { device, rawio: false, timeoutMs: 1234 });
    const late = new RecordingAnyLuns();
    fp.attachDevice(late);
    for (const d of [early, late]) {
      const c = d.passthrough.get('2:7')!;
      expect(c.device).toBe(device);
      expect(c.timeoutMs).toBe(1234);
      expect(c.eligible).toBe(true); // no unit attention of ours on a fresh LUN
      expect(c.refusedOpcodes.equals(refusedOpcodeBitmap(false))).toBe(true);
      expect(c.deferredOpcodes.equals(deferredOpcodeBitmap())).toBe(true);
    }
    unit.raiseReportedLunsChanged();
    expect(early.passthrough.get('2:7')!.eligible).toBe(false);
    expect(late.passthrough.get('2:7')!.eligible).toBe(false);
    expect((await unit.execute({ cdb: Buffer.from([0, 0, 0, 0, 0, 0]), dataOut: Buffer.alloc(0), dataInCapacity: 0, tag: 1n })).status).toBe(2);
    expect(early.passthrough.get('2:7')!.eligible).toBe(true);
    // rawio: nothing refused.
    const raw = new FakePassthroughDevice();
    fp.addPassthroughLun(2, 8, passthroughUnit(raw), { device: raw, rawio: true, timeoutMs: 1 });
    expect(early.passthrough.get('2:8')!.refusedOpcodes.equals(Buffer.alloc(32))).toBe(true);
  });

  it('folds native counters into the unit\'s stats and keeps them after removal', async () => {
    const fp = new FastPath();
    const d = new RecordingAnyLuns();
    fp.attachDevice(d);
    const device = new FakePassthroughDevice();
    const unit = passthroughUnit(device);
    fp.addPassthroughLun(0, 1, unit, { device, rawio: false, timeoutMs: 1000 });
    expect(unit.stats()).toEqual({ reads: 3, writes: 2, bytesRead: 3 * 4096, bytesWritten: 2 * 512 });
    await fp.removeLun(0, 1);
    expect(d.passthrough.has('0:1')).toBe(false);
    expect(fp.size).toBe(0);
    expect(unit.stats()).toEqual({ reads: 3, writes: 2, bytesRead: 3 * 4096, bytesWritten: 2 * 512 });
    unit.raiseReportedLunsChanged(); // no longer mirrored: nothing to update
    expect(d.passthrough.size).toBe(0);
  });

  it('a device that refuses the LUN leaves it to the JS path', () => {
    const fp = new FastPath(pino({ level: 'silent' }));
    const d = new RecordingAnyLuns();
    d.setLun = () => {
      throw new TypeError('device must be a PassthroughDevice from openPassthrough');
    };
    fp.attachDevice(d);
    const device = new FakePassthroughDevice();
    expect(() => fp.addPassthroughLun(0, 0, passthroughUnit(device), { device, rawio: false, timeoutMs: 1000 })).not.toThrow();
    expect(() => fp.addPassthroughLun(0, 1, passthroughUnit(device), { device, rawio: false, timeoutMs: 0 })).toThrow(RangeError);
  });
});

describe('FastPath end to end with the native device', () => {
  it('answers the pending unit attention through JS, then serves READ/WRITE natively', async () => {
    const memory = new MockGuestMemory(native, 4 * MiB);
    const queue = new MockSplitQueue(memory, 32);
    const unit = await fileUnit('e2e.img');
    const target = new ScsiTarget();
    target.attach(5, unit);
    const fp = new FastPath();
    const scsi = new VirtioScsiDevice({
      numRequestQueues: 1,
      maxQueueSize: 32,
      targets: (t) => (t === 2 ? { execute: (lun, cmd) => target.execute(lun, cmd), hasLun: (lun) => target.get(lun) !== undefined, resetLun: () => {}, resetNexus: () => {} } : undefined),
      logger: pino({ level: 'silent' }),
      complete: (q, head, data) => device.complete(q, head, data),
      onViolation: (reason) => {
        throw new Error(reason);
      },
    });
    let jsChains = 0;
    const device: NativeVirtioDevice = native.createDevice({
      numQueues: scsi.numQueues,
      maxQueueSize: 32,
      maxChainBytes: MiB,
      maxRegions: 8,
      onChains: (chains) => {
        jsChains += chains.length;
        scsi.handleChains(chains);
      },
      onError: (q, reason) => {
        throw new Error(`queue ${q}: ${reason}`);
      },
    });
    try {
      device.setFeatures(VirtioFeature.VERSION_1 | VirtioFeature.RING_EVENT_IDX);
      device.setMemTable(await memory.regions());
      await queue.configure(device, 2);
      fp.attachDevice(device);
      fp.addLun(2, 5, unit);

      const command = async (cdb: Buffer, opts: { dataOut?: Buffer; dataIn?: number } = {}) => {
        const req = Buffer.alloc(CMD_REQ_SIZE);
        encodeLun(2, 5).copy(req, 0);
        cdb.copy(req, 19);
        const segs = [{ data: req }, ...(opts.dataOut ? [{ data: opts.dataOut }] : []), { writableLength: CMD_RESP_SIZE + (opts.dataIn ?? 0) }];
        queue.addChain(segs);
        queue.publishAndKick();
        const deadline = Date.now() + 3000;
        for (;;) {
          const used = queue.reclaim();
          if (used.length) return { status: used[0]!.data[10]!, senseKey: used[0]!.data[14]! & 0x0f, data: used[0]!.data.subarray(CMD_RESP_SIZE) };
          if (Date.now() > deadline) throw new Error('no completion');
          await new Promise((r) => setTimeout(r, 2));
        }
      };
      const payload = Buffer.alloc(1024, 0x3c);
      // POWER ON unit attention: CHECK CONDITION from the JS path, no data written.
      expect(await command(cdb10(0x2a, 4, 2), { dataOut: payload })).toMatchObject({ status: 2, senseKey: 6 });
      expect(jsChains).toBe(1);
      expect((await command(cdb10(0x2a, 4, 2), { dataOut: payload })).status).toBe(0);
      const read = await command(cdb10(0x28, 4, 2), { dataIn: 1024 });
      expect(read.status).toBe(0);
      expect(read.data).toEqual(payload);
      expect(jsChains).toBe(1); // both served natively
      expect(device.lunCounters(2, 5)).toMatchObject({ reads: 1, writes: 1 });
      expect(unit.stats()).toEqual({ reads: 1, writes: 1, bytesRead: 1024, bytesWritten: 1024 });
      // A unit attention raised now sends the next command to JS again.
      unit.raiseCapacityChanged();
      expect((await command(cdb10(0x28, 4, 2), { dataIn: 1024 })).senseKey).toBe(6);
      expect(jsChains).toBe(2);
      await fp.removeLun(2, 5);
      expect((await command(cdb10(0x28, 4, 2), { dataIn: 1024 })).data).toEqual(payload);
      expect(jsChains).toBe(3);
      expect(unit.stats()).toEqual({ reads: 2, writes: 1, bytesRead: 2048, bytesWritten: 1024 });
    } finally {
      device.reset();
      await fp.detachDevice(device);
      queue.close();
      memory.close();
    }
  });
});
