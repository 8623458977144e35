// The live topology at the engine's SCSI boundary: unit attentions raised by
// attach/detach/resize, REPORT LUNS at the 16,384-LUN limit through the
// virtio-scsi framing, and detach with a command in flight.
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MemoryBackend } from './backends/memory.ts';
import { createEngine, EngineError, type VhbaEngineInstance } from './engine.ts';
import type { LunSpec } from './engine-api.ts';
import { LogicalUnit } from './scsi/logical-unit.ts';
import { decodeLun as decodeReportedLun } from './scsi/report-luns.ts';
import { ScsiTarget } from './scsi/target.ts';
import type { BlockBackend, ScsiResult } from './scsi/types.ts';
import { VirtioScsiDevice } from './virtio-scsi/device.ts';
import { CMD_REQ_SIZE, CMD_RESP_SIZE, encodeLun, Response } from './virtio-scsi/framing.ts';
import type { TargetPort } from './virtio-scsi/tasks.ts';

const logger = pino({ level: 'silent' });
const params = { logicalBlockSize: 512, physicalBlockSize: 4096, wwn: '5000000000000001', readOnly: false };

function memLun(target: number, lun: number, sizeBytes = 1 << 20): LunSpec {
  return { target, lun, backing: { kind: 'memory', sizeBytes }, params: { ...params, serial: `S${target}-${lun}` } };
}

function cdb(...bytes: number[]): Buffer {
  const b = Buffer.alloc(32);
  b.set(bytes);
  return b;
}
const TUR = cdb(0x00, 0, 0, 0, 0, 0);
const REPORT_LUNS = cdb(0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0);
const READ10_ONE = cdb(0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0);

/** [sense key, ASC, ASCQ] of a CHECK CONDITION, or 'GOOD'. */
function outcome(r: ScsiResult): string {
  if (r.status === 0) return 'GOOD';
  const s = r.sense!;
  return `${s[2]! & 0x0f}/${s[12]!.toString(16)}/${s[13]!.toString(16)}`;
}

let dir: string;
let engine: VhbaEngineInstance;
/** While set, reads report that they started and wait until `open` resolves. */
let readGate: { started: () => void; open: Promise<void> } | undefined;
let closed: string[];

/** A memory backend whose reads can be held at `readGate` and whose close is recorded. */
class GatedBackend extends MemoryBackend {
  readonly label: string;
  constructor(size: number, label: string) {
    super(size);
    this.label = label;
  }
  override async read(offset: number, length: number): Promise<Buffer> {
    const g = readGate;
    if (g) {
      g.started();
      await g.open;
    }
    return super.read(offset, length);
  }
  override async close(): Promise<void> {
    closed.push(this.label);
    await super.close();
  }
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vhba-topology-'));
  closed = [];
  readGate = undefined;
  engine = createEngine(logger, { openBackend: async (spec) => new GatedBackend(spec.backing.kind === 'memory' ? spec.backing.sizeBytes : 0, `${spec.target}:${spec.lun}`) as BlockBackend });
  await engine.createController({ id: 'c', socketPath: path.join(dir, 'c.sock') });
});

afterEach(async () => {
  await engine.close();
  await rm(dir, { recursive: true, force: true });
});

function port(target: number): TargetPort {
  const p = engine.controller('c')!.config.targets(target);
  if (!p) throw new Error(`no target ${target}`);
  return p;
}

let tag = 0n;
function run(target: number, lun: number, c: Buffer, dataInCapacity = 4096): Promise<ScsiResult> {
  return port(target).execute(lun, { cdb: c, dataOut: Buffer.alloc(0), dataInCapacity, tag: ++tag });
}

/** Consumes the fresh LU's POWER ON unit attention. */
async function settle(target: number, lun: number): Promise<void> {
  expect(outcome(await run(target, lun, TUR))).toBe('6/29/0');
  expect(outcome(await run(target, lun, TUR))).toBe('GOOD');
}

describe('unit attentions from topology changes', () => {
  it('attach and detach raise REPORTED LUNS DATA HAS CHANGED on the other LUs; REPORT LUNS clears it', async () => {
    await engine.attachLun('c', memLun(0, 0));
    await settle(0, 0);
    await engine.attachLun('c', memLun(0, 7));
    expect(outcome(await run(0, 0, TUR))).toBe('6/3f/e');
    expect(outcome(await run(0, 0, TUR))).toBe('GOOD');
    await settle(0, 7);
    await engine.detachLun('c', 0, 7);
    // REPORT LUNS runs despite the pending UA and clears it (SPC-4 §6.33).
    const report = await run(0, 0, REPORT_LUNS);
    expect(report.dataIn!.readUInt32BE(0)).toBe(8);
    expect(outcome(await run(0, 0, TUR))).toBe('GOOD');
    // The detached LUN is absent: LOGICAL UNIT NOT SUPPORTED.
    expect(outcome(await run(0, 7, TUR))).toBe('5/25/0');
    // Another target is not told.
    await engine.attachLun('c', memLun(1, 0));
    expect(outcome(await run(0, 0, TUR))).toBe('GOOD');
  });

  it('resize raises CAPACITY DATA HAS CHANGED on that LU only, and shrinking is refused', async () => {
    await engine.attachLun('c', memLun(0, 0));
    await engine.attachLun('c', memLun(0, 1));
    await settle(0, 0);
    await settle(0, 1);
    await engine.resizeLun('c', 0, 0, 2 << 20);
    expect(outcome(await run(0, 0, TUR))).toBe('6/2a/9');
    expect(outcome(await run(0, 1, TUR))).toBe('GOOD');
    const cap = await run(0, 0, cdb(0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0), 8);
    expect(cap.dataIn!.readUInt32BE(0)).toBe((2 << 20) / 512 - 1);
    const err = await engine.resizeLun('c', 0, 0, 1 << 20).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('FAILED_PRECONDITION');
    expect((err as EngineError).message).toMatch(/shrinking from 2097152 to 1048576/);
  });
});

describe('detach with a command in flight', () => {
  it('lets the running READ finish, answers later commands as absent, closes the backing last', async () => {
    await engine.attachLun('c', memLun(2, 3));
    await engine.attachLun('c', memLun(2, 4));
    await settle(2, 3);
    let open!: () => void;
    let started!: () => void;
    const readStarted = new Promise<void>((r) => (started = r));
    readGate = { started, open: new Promise((r) => (open = r)) };
    const read = run(2, 3, READ10_ONE, 512);
    await readStarted;
    let detached = false;
    const detach = engine.detachLun('c', 2, 3).then(() => (detached = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(detached).toBe(false);
    expect(closed).toEqual([]);
    expect(engine.list()[0]!.luns.map((l) => l.lun)).toEqual([4]);
    expect(outcome(await run(2, 3, TUR))).toBe('5/25/0');
    readGate = undefined;
    open();
    const r = await read;
    expect(outcome(r)).toBe('GOOD');
    expect(r.dataIn!.length).toBe(512);
    await detach;
    expect(closed).toEqual(['2:3']);
    // The last LUN of the target goes: the target goes with it.
    await engine.detachLun('c', 2, 4);
    expect(engine.controller('c')!.config.targets(2)).toBeUndefined();
  });
});

describe('REPORT LUNS at the limit', () => {
  it('lists 16,384 LUNs of one target in order through the virtio-scsi framing', async () => {
    const target = new ScsiTarget();
    for (let lun = 0; lun < 16384; lun++) {
      target.attach(lun, new LogicalUnit({ ...params, serial: `L${lun}` }, new MemoryBackend(4096)), { notify: false });
    }
    const tp: TargetPort = { execute: (l, c) => target.execute(l, c), hasLun: (l) => target.get(l) !== undefined, resetLun: () => undefined, resetNexus: () => undefined };
    const done: Buffer[] = [];
    const dev = new VirtioScsiDevice({
      numRequestQueues: 1, maxQueueSize: 128, targets: (t) => (t === 9 ? tp : undefined), logger,
      complete: (_q, _h, data) => void done.push(data), onViolation: (r) => { throw new Error(r); },
    });
    const listBytes = 16384 * 8;
    const req = Buffer.alloc(CMD_REQ_SIZE);
    encodeLun(9, 0).copy(req, 0);
    const c = cdb(0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    c.writeUInt32BE(8 + listBytes, 6);
    c.copy(req, 19, 0, 12);
    dev.handleChains([{ queue: 2, head: 0, readable: req, writableLength: CMD_RESP_SIZE + 8 + listBytes + 100 }]);
    await new Promise((r) => setImmediate(r));
    expect(done).toHaveLength(1);
    const resp = done[0]!;
    expect(resp[11]).toBe(Response.OK);
    expect(resp[10]).toBe(0);
    expect(resp.readUInt32LE(4)).toBe(100); // residual
    const data = resp.subarray(CMD_RESP_SIZE);
    expect(data.readUInt32BE(0)).toBe(listBytes);
    for (let i = 0; i < 16384; i++) {
      expect(decodeReportedLun(data.subarray(8 + i * 8, 16 + i * 8))).toBe(i);
    }
    // Flat space addressing from 256 (SAM-5 §4.7.7), peripheral below.
    expect([...data.subarray(8 + 255 * 8, 8 + 255 * 8 + 2)]).toEqual([0x00, 0xff]);
    expect([...data.subarray(8 + 256 * 8, 8 + 256 * 8 + 2)]).toEqual([0x41, 0x00]);
    expect([...data.subarray(8 + 16383 * 8, 8 + 16383 * 8 + 2)]).toEqual([0x7f, 0xff]);
    // A short allocation length truncates the list but keeps the full LUN LIST LENGTH.
    c.writeUInt32BE(16, 6);
    c.copy(req, 19, 0, 12);
    dev.handleChains([{ queue: 2, head: 1, readable: req, writableLength: CMD_RESP_SIZE + 16 }]);
    await new Promise((r) => setImmediate(r));
    expect(done[1]!.subarray(CMD_RESP_SIZE).readUInt32BE(0)).toBe(listBytes);
  });
});
