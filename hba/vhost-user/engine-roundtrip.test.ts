// End to end without QEMU: the real Engine (native sockets, native virtqueues,
// SCSI target, memory and file backends) driven by the TS test front-end.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, type VhbaEngineInstance } from '../engine.ts';
import type { LunSpec } from '../engine-api.ts';
import { native } from '../native/index.ts';
import { ControlType, TmfSubtype, TMF_REQ_SIZE } from '../virtio-scsi/control.ts';
import { encodeLun, Response } from '../virtio-scsi/framing.ts';
import { encodeBody, encodeRequest, HeaderFlags, Request } from './protocol.ts';
import { TestFrontend } from './test-frontend.ts';

const logger = pino({ level: process.env.VHBA_TEST_LOG ?? 'silent' });
const GOOD = 0;
const CHECK_CONDITION = 2;

let dir: string;
let engine: VhbaEngineInstance;
let sockA: string;
let sockB: string;
const frontends: TestFrontend[] = [];

function lun(target: number, l: number, sizeBytes: number, extra: Partial<LunSpec['params']> = {}, file?: string): LunSpec {
  return {
    target,
    lun: l,
    backing: file ? { kind: 'file', path: file, sizeBytes } : { kind: 'memory', sizeBytes },
    params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: `SER-${target}-${l}`, wwn: `50000000000${String(target).padStart(2, '0')}${String(l).padStart(3, '0')}`, readOnly: false, ...extra },
  };
}

async function connect(socketPath: string): Promise<TestFrontend> {
  const fe = TestFrontend.connect(socketPath);
  frontends.push(fe);
  await fe.setup();
  return fe;
}

/** Runs a command, retrying once past a unit attention (SAM-5 §5.14). */
async function run(fe: TestFrontend, target: number, l: number, cdb: number[], opts: Parameters<TestFrontend['command']>[3] = {}) {
  let r = await fe.command(target, l, cdb, opts);
  if (r.status === CHECK_CONDITION && (r.sense[2]! & 0x0f) === 6) r = await fe.command(target, l, cdb, opts);
  return r;
}

function rw10(op: number, lba: number, blocks: number): number[] {
  return [op, 0, (lba >>> 24) & 0xff, (lba >>> 16) & 0xff, (lba >>> 8) & 0xff, lba & 0xff, 0, (blocks >>> 8) & 0xff, blocks & 0xff, 0];
}

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 10));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vhba-rt-'));
  engine = createEngine(logger);
  sockA = path.join(dir, 'vmA', 'hba0.sock');
  sockB = path.join(dir, 'vmB', 'hba0.sock');
  await engine.createController({ id: 'A', socketPath: sockA });
  await engine.createController({ id: 'B', socketPath: sockB });
  await engine.attachLun('A', lun(0, 0, 4 << 20));
  await engine.attachLun('A', lun(1, 300, 1 << 20, { logicalBlockSize: 4096 }, path.join(dir, 'disk300.img')));
  await engine.attachLun('A', lun(1, 2, 1 << 20, { readOnly: true }));
  await engine.attachLun('B', lun(0, 0, 1 << 20));
});

afterAll(async () => {
  for (const fe of frontends) fe.close();
  await engine.close();
  await rm(dir, { recursive: true, force: true });
});

describe('round trips through the engine', () => {
  let fe: TestFrontend;
  beforeAll(async () => {
    fe = await connect(sockA);
    await waitFor(() => engine.list().find((c) => c.id === 'A')!.connected);
  });

  it('INQUIRY returns standard data with vendor VHBA', async () => {
    const r = await fe.command(0, 0, [0x12, 0, 0, 0, 96, 0], { dataInLength: 96 });
    expect(r.response).toBe(Response.OK);
    expect(r.status).toBe(GOOD);
    expect(r.dataIn[0]! & 0x1f).toBe(0); // direct-access block device
    expect(r.dataIn.subarray(8, 16).toString()).toBe('VHBA    ');
    expect(r.usedLength).toBe(108 + r.dataIn.length);
    expect(r.resid).toBe(96 - r.dataIn.length);
  });

  it('TEST UNIT READY reports the power-on unit attention once', async () => {
    const first = await fe.command(0, 0, [0, 0, 0, 0, 0, 0]);
    expect(first.status).toBe(CHECK_CONDITION);
    expect(first.sense[2]! & 0x0f).toBe(6);
    expect(first.sense[12]).toBe(0x29);
    const second = await fe.command(0, 0, [0, 0, 0, 0, 0, 0]);
    expect(second.status).toBe(GOOD);
  });

  it('READ CAPACITY(10) of a 4096-byte LUN ≥ 256 on target 1', async () => {
    const r = await run(fe, 1, 300, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], { dataInLength: 8 });
    expect(r.status).toBe(GOOD);
    expect(r.dataIn.readUInt32BE(0)).toBe((1 << 20) / 4096 - 1);
    expect(r.dataIn.readUInt32BE(4)).toBe(4096);
  });

  it('WRITE(10) then READ(10) returns the data (memory and file backings)', async () => {
    for (const [t, l, bs] of [[0, 0, 512], [1, 300, 4096]] as const) {
      const data = Buffer.alloc(2 * bs);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7 + l) & 0xff;
      const w = await run(fe, t, l, rw10(0x2a, 3, 2), { dataOut: data });
      expect(w.status).toBe(GOOD);
      expect(w.resid).toBe(0);
      const r = await run(fe, t, l, rw10(0x28, 3, 2), { dataInLength: 2 * bs });
      expect(r.status).toBe(GOOD);
      expect(r.dataIn.equals(data)).toBe(true);
    }
    const info = engine.list().find((c) => c.id === 'A')!.luns.find((x) => x.lun === 300)!;
    expect(info.writes).toBeGreaterThanOrEqual(1);
    expect(info.bytesWritten).toBeGreaterThanOrEqual(8192);
  });

  it('a read-only LUN answers DATA PROTECT to WRITE', async () => {
    const r = await run(fe, 1, 2, rw10(0x2a, 0, 1), { dataOut: Buffer.alloc(512) });
    expect(r.status).toBe(CHECK_CONDITION);
    expect(r.sense[2]! & 0x0f).toBe(7);
  });

  it('REPORT LUNS lists the target’s LUNs', async () => {
    const r = await run(fe, 1, 0, [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], { dataInLength: 64 });
    expect(r.status).toBe(GOOD);
    expect(r.dataIn.readUInt32BE(0)).toBe(16);
  });

  it('an absent target answers BAD_TARGET', async () => {
    const r = await fe.command(9, 0, [0x12, 0, 0, 0, 36, 0], { dataInLength: 36 });
    expect(r.response).toBe(Response.BAD_TARGET);
  });

  it('LOGICAL UNIT RESET on the controlq completes and raises a unit attention', async () => {
    const tmf = Buffer.alloc(TMF_REQ_SIZE);
    tmf.writeUInt32LE(ControlType.TMF, 0);
    tmf.writeUInt32LE(TmfSubtype.LOGICAL_UNIT_RESET, 4);
    encodeLun(0, 0).copy(tmf, 8);
    const { written } = await fe.submit(0, tmf, 1);
    expect(written[0]).toBe(Response.FUNCTION_COMPLETE);
    const tur = await fe.command(0, 0, [0, 0, 0, 0, 0, 0]);
    expect(tur.status).toBe(CHECK_CONDITION);
    expect(tur.sense[12]).toBe(0x29);
  });

  it('a queue stopped with GET_VRING_BASE and restarted keeps serving', async () => {
    const before = await run(fe, 0, 0, [0, 0, 0, 0, 0, 0]);
    expect(before.status).toBe(GOOD);
    const base = await fe.stopAndRestart(2);
    expect(base).toBeGreaterThan(5);
    const after = await run(fe, 0, 0, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], { dataInLength: 8 });
    expect(after.status).toBe(GOOD);
    expect(after.dataIn.readUInt32BE(0)).toBe((4 << 20) / 512 - 1);
  });

  it('a second front-end on a busy socket is closed at once', async () => {
    const second = TestFrontend.connect(sockA);
    frontends.push(second);
    await second.closed;
    const r = await run(fe, 0, 0, [0, 0, 0, 0, 0, 0]);
    expect(r.status).toBe(GOOD);
  });
});

describe('hostile front-ends', () => {
  /** Each case: connect to B, misbehave, see the connection closed; then B
   * serves a fresh, well-behaved front-end, and A is unaffected. */
  const cases: [string, (fe: TestFrontend) => void][] = [
    ['wrong fd count', (fe) => {
      const fd = native.eventfd();
      fe.send(Request.SET_VRING_CALL, encodeBody.u64(0n), [fd, fd]);
      native.closeFd(fd);
    }],
    ['fd on a request that takes none', (fe) => {
      const fd = native.eventfd();
      fe.send(Request.SET_OWNER, Buffer.alloc(0), [fd]);
      native.closeFd(fd);
    }],
    ['truncated message', (fe) => {
      const raw = encodeRequest(Request.SET_VRING_ADDR, Buffer.alloc(40));
      fe.sendRaw(raw.subarray(0, 30));
      fe.connection.close();
    }],
    ['body shorter than the request needs', (fe) => fe.send(Request.SET_VRING_ADDR, Buffer.alloc(20))],
    ['unknown request', (fe) => fe.send(99)],
    ['oversized body (beyond the 4 KiB framing limit)', (fe) => fe.sendRaw(encodeRequest(Request.SET_FEATURES, Buffer.alloc(8192)))],
    ['oversized body (within framing, wrong for the request)', (fe) => fe.send(Request.SET_FEATURES, Buffer.alloc(64))],
    ['memory table with more fds than regions', (fe) => {
      const fds = [native.eventfd(), native.eventfd()];
      fe.send(Request.SET_MEM_TABLE, encodeBody.memTable([{ guestPhysAddr: 0n, size: 4096n, userAddr: 0x1000n, mmapOffset: 0n }]), fds);
      for (const fd of fds) native.closeFd(fd);
    }],
    ['bad queue index', (fe) => fe.send(Request.SET_VRING_NUM, encodeBody.vringState({ index: 7, num: 128 }))],
    ['reply flag on a request', (fe) => fe.send(Request.GET_FEATURES, Buffer.alloc(0), [], HeaderFlags.VERSION | HeaderFlags.REPLY)],
  ];

  it.each(cases)('%s closes the connection; the engine keeps serving', async (_name, misbehave) => {
    const bad = TestFrontend.connect(sockB);
    frontends.push(bad);
    await bad.call(Request.GET_FEATURES);
    misbehave(bad);
    await bad.closed;
    await waitFor(() => !engine.list().find((c) => c.id === 'B')!.connected);

    const good = await connect(sockB);
    const r = await run(good, 0, 0, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], { dataInLength: 8 });
    expect(r.status).toBe(GOOD);
    good.close();
    await waitFor(() => !engine.list().find((c) => c.id === 'B')!.connected);

    const other = frontends[0]!;
    expect(other.isClosed).toBe(false);
    expect((await run(other, 0, 0, [0, 0, 0, 0, 0, 0])).status).toBe(GOOD);
  });

  it('leaks no fds across hostile and well-behaved connections', async () => {
    const { readdirSync } = await import('node:fs');
    const count = () => readdirSync('/proc/self/fd').length;
    const cycle = async () => {
      const bad = TestFrontend.connect(sockB);
      await bad.call(Request.GET_FEATURES);
      const fds = [native.eventfd(), native.eventfd(), native.eventfd()];
      bad.send(Request.SET_VRING_KICK, encodeBody.u64(0n), fds);
      for (const fd of fds) native.closeFd(fd);
      await bad.closed;
      bad.close();
      const good = TestFrontend.connect(sockB);
      await good.setup();
      expect((await run(good, 0, 0, [0, 0, 0, 0, 0, 0])).status).toBe(GOOD);
      good.close();
      await waitFor(() => !engine.list().find((c) => c.id === 'B')!.connected);
    };
    await cycle();
    const baseline = count();
    for (let i = 0; i < 5; i++) await cycle();
    await new Promise((r) => setTimeout(r, 50));
    expect(count()).toBeLessThanOrEqual(baseline);
  });

  it('a descriptor loop (reported by the native queue) closes the connection', async () => {
    const fe = await connect(sockB);
    const q = fe.queue(2);
    const buf = q.memory.alloc(64);
    q.writeDescriptor(0, { addr: buf, len: 64, flags: 1 /* NEXT */, next: 0 });
    q.pushAvail(0);
    q.publishAndKick();
    expect(await fe.closed).toBeNull();
    await waitFor(() => !engine.list().find((c) => c.id === 'B')!.connected);
    const good = await connect(sockB);
    expect((await run(good, 0, 0, [0, 0, 0, 0, 0, 0])).status).toBe(GOOD);
    good.close();
    await waitFor(() => !engine.list().find((c) => c.id === 'B')!.connected);
  });

  it('a request chain too short for its header closes the connection', async () => {
    const fe = await connect(sockB);
    const submit = fe.submit(2, Buffer.alloc(10), 108, 1000).catch((e: unknown) => e);
    await fe.closed;
    expect(await submit).toBeInstanceOf(Error);
    await waitFor(() => !engine.list().find((c) => c.id === 'B')!.connected);
  });
});
