import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createEngine, EngineError, type VhbaEngineInstance } from './engine.ts';
import type { LunSpec } from './engine-api.ts';

const logger = pino({ level: 'silent' });
const params = { logicalBlockSize: 512, physicalBlockSize: 4096, serial: 'SER0', wwn: '5000000000000001', readOnly: false };

function memLun(target: number, lun: number, sizeBytes = 1 << 20, extra: Partial<LunSpec['params']> = {}): LunSpec {
  return { target, lun, backing: { kind: 'memory', sizeBytes }, params: { ...params, serial: `S${target}-${lun}`, ...extra } };
}

let dir: string;
let engine: VhbaEngineInstance;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vhba-engine-'));
  engine = createEngine(logger);
});

afterEach(async () => {
  await engine.close();
  await rm(dir, { recursive: true, force: true });
});

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EngineError);
  expect((err as EngineError).code).toBe(code);
}

describe('controllers', () => {
  it('listens on a 0600 socket in a 0700 directory, idempotently', async () => {
    const socketPath = path.join(dir, 'vm1', 'hba0.sock');
    await engine.createController({ id: 'vm1/hba0', socketPath });
    await engine.createController({ id: 'vm1/hba0', socketPath, numRequestQueues: 1, maxQueueSize: 1024 });
    const s = await stat(socketPath);
    expect(s.isSocket()).toBe(true);
    expect(s.mode & 0o777).toBe(0o600);
    expect((await stat(path.dirname(socketPath))).mode & 0o777).toBe(0o700);
    expect(engine.list()).toEqual([{ id: 'vm1/hba0', socketPath, numRequestQueues: 1, connected: false, luns: [] }]);
  });

  it('refuses the same id with other options, and a socket used twice', async () => {
    const socketPath = path.join(dir, 'a.sock');
    await engine.createController({ id: 'a', socketPath });
    await expectCode(engine.createController({ id: 'a', socketPath, numRequestQueues: 2 }), 'ALREADY_EXISTS');
    await expectCode(engine.createController({ id: 'b', socketPath }), 'ALREADY_EXISTS');
    await expectCode(engine.createController({ id: 'c', socketPath: 'relative.sock' }), 'INVALID_ARGUMENT');
    await expectCode(engine.createController({ id: 'c', socketPath: path.join(dir, 'c.sock'), maxQueueSize: 100 }), 'INVALID_ARGUMENT');
  });

  it('deleteController removes the socket; deleting again is fine', async () => {
    const socketPath = path.join(dir, 'd.sock');
    await engine.createController({ id: 'd', socketPath });
    await engine.attachLun('d', memLun(0, 0));
    await engine.deleteController('d');
    await engine.deleteController('d');
    await expect(stat(socketPath)).rejects.toThrow(/ENOENT/);
    expect(engine.list()).toEqual([]);
  });

  it('replaces a stale socket file but refuses to clobber a regular file', async () => {
    const socketPath = path.join(dir, 'stale.sock');
    await engine.createController({ id: 's', socketPath });
    const other = createEngine(logger);
    // The first engine still holds it; a second engine takes the path over (stale socket semantics).
    await other.createController({ id: 's', socketPath });
    await other.close();
    const regular = path.join(dir, 'regular');
    await (await import('node:fs/promises')).writeFile(regular, 'x');
    await expect(engine.createController({ id: 'r', socketPath: regular })).rejects.toThrow(/not a socket/);
  });
});

describe('LUNs', () => {
  beforeEach(async () => {
    await engine.createController({ id: 'c', socketPath: path.join(dir, 'c.sock') });
  });

  it('attaches on targets created on demand and lists them with counters', async () => {
    await engine.attachLun('c', memLun(1, 300));
    await engine.attachLun('c', memLun(0, 0));
    await engine.attachLun('c', memLun(0, 0)); // idempotent
    const luns = engine.list()[0]!.luns;
    expect(luns.map((l) => [l.target, l.lun])).toEqual([[0, 0], [1, 300]]);
    expect(luns[0]).toMatchObject({ reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, backing: { kind: 'memory', sizeBytes: 1 << 20 } });
    const targets = engine.controller('c')!.config.targets;
    expect(targets(0)!.hasLun(0)).toBe(true);
    expect(targets(1)!.hasLun(300)).toBe(true);
    expect(targets(2)).toBeUndefined();
  });

  it('routes commands to the LU and counts them', async () => {
    await engine.attachLun('c', memLun(0, 5));
    const port = engine.controller('c')!.config.targets(0)!;
    const cdb = Buffer.alloc(32);
    cdb.set([0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0]); // READ(10) 2 blocks
    let r = await port.execute(5, { cdb, dataOut: Buffer.alloc(0), dataInCapacity: 1024, tag: 1n });
    expect(r.status).toBe(2); // POWER ON unit attention first
    r = await port.execute(5, { cdb, dataOut: Buffer.alloc(0), dataInCapacity: 1024, tag: 2n });
    expect(r.status).toBe(0);
    expect(r.dataIn?.length).toBe(1024);
    expect(engine.list()[0]!.luns[0]).toMatchObject({ reads: 1, bytesRead: 1024 });
  });

  it('refuses a different spec at a taken address and invalid addresses or sizes', async () => {
    await engine.attachLun('c', memLun(0, 0));
    await expectCode(engine.attachLun('c', memLun(0, 0, 2 << 20)), 'ALREADY_EXISTS');
    await expectCode(engine.attachLun('c', memLun(256, 0)), 'INVALID_ARGUMENT');
    await expectCode(engine.attachLun('c', memLun(0, 16384)), 'INVALID_ARGUMENT');
    await expectCode(engine.attachLun('c', memLun(0, 1, 1000)), 'INVALID_ARGUMENT');
    await expectCode(engine.attachLun('c', memLun(0, 2, 1 << 20, { serial: '' })), 'INVALID_ARGUMENT');
    await expectCode(engine.attachLun('nope', memLun(0, 0)), 'NOT_FOUND');
  });

  it('detaches (absent is fine) and drops empty targets', async () => {
    await engine.attachLun('c', memLun(3, 1));
    await engine.detachLun('c', 3, 1);
    await engine.detachLun('c', 3, 1);
    await engine.detachLun('nope', 0, 0);
    expect(engine.list()[0]!.luns).toEqual([]);
    expect(engine.controller('c')!.config.targets(3)).toBeUndefined();
  });

  it('resizes and flushes', async () => {
    await engine.attachLun('c', memLun(0, 0));
    await engine.resizeLun('c', 0, 0, 4 << 20);
    expect(engine.list()[0]!.luns[0]!.backing).toEqual({ kind: 'memory', sizeBytes: 4 << 20 });
    await engine.flushLun('c', 0, 0);
    await expectCode(engine.resizeLun('c', 0, 9, 4096), 'NOT_FOUND');
    await expectCode(engine.resizeLun('c', 0, 0, 100), 'INVALID_ARGUMENT');
  });

  it('creates and grows a file backing', async () => {
    const file = path.join(dir, 'disk.img');
    await engine.attachLun('c', { ...memLun(0, 0), backing: { kind: 'file', path: file, sizeBytes: 8 << 20 } });
    expect((await stat(file)).size).toBe(8 << 20);
    await expectCode(engine.attachLun('c', { ...memLun(0, 1), backing: { kind: 'file', path: file, sizeBytes: 8 << 20 } }), 'ALREADY_EXISTS');
  });
});
