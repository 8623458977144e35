import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../backends/memory.ts';
import { defineCommand } from './command.ts';
import { LogicalUnit, validateLogicalUnitParams } from './logical-unit.ts';
import { OpcodeTable } from './opcode-table.ts';
import {
  decodeFixedSense,
  senseInternalTargetFailure,
  senseInvalidFieldInCdb,
  senseInvalidOpcode,
  senseLbaOutOfRange,
  senseMediumErrorWrite,
  senseNoSense,
  senseUaCapacityDataChanged,
  senseUaPowerOnReset,
  senseUaReportedLunsDataChanged,
} from './sense.ts';
import { cdb10, cdb16, codeOf, expected, makeUnit, pattern, run, senseOf, testParams } from './testing.ts';
import { Status } from './types.ts';

const TUR = [0x00, 0, 0, 0, 0, 0];
const INQUIRY = [0x12, 0, 0, 0, 36, 0];
const REQUEST_SENSE = [0x03, 0, 0, 0, 18, 0];
const READ_CAPACITY_16 = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];

describe('unit attentions (SAM-5 §5.14)', () => {
  it('reports POWER ON, RESET on the first command, once', async () => {
    const { lu } = await makeUnit({ keepPowerOnUa: true });
    expect(codeOf(await run(lu, TUR))).toEqual(expected(senseUaPowerOnReset));
    expect(await run(lu, TUR)).toEqual({ status: Status.GOOD });
  });

  it('INQUIRY and REQUEST SENSE run with a UA pending; INQUIRY leaves it pending', async () => {
    const { lu } = await makeUnit({ keepPowerOnUa: true });
    expect((await run(lu, INQUIRY)).status).toBe(Status.GOOD);
    expect(lu.pendingUnitAttentions()).toEqual([senseUaPowerOnReset]);
    const rs = await run(lu, REQUEST_SENSE);
    expect(rs.status).toBe(Status.GOOD);
    expect(decodeFixedSense(rs.dataIn!)).toMatchObject(expected(senseUaPowerOnReset));
    expect(lu.pendingUnitAttentions()).toEqual([]);
    const none = await run(lu, REQUEST_SENSE);
    expect(decodeFixedSense(none.dataIn!)).toMatchObject(expected(senseNoSense));
    expect(none.dataIn!.length).toBe(18);
  });

  it('a UA is reported before the CDB is even looked at (unknown opcode included)', async () => {
    const { lu } = await makeUnit({ keepPowerOnUa: true });
    expect(codeOf(await run(lu, [0xff, 0, 0, 0, 0, 0]))).toEqual(expected(senseUaPowerOnReset));
    expect(codeOf(await run(lu, [0xff, 0, 0, 0, 0, 0]))).toEqual(expected(senseInvalidOpcode));
  });

  it('reports queued UAs oldest first, without duplicates', async () => {
    const { lu } = await makeUnit();
    lu.raiseReportedLunsChanged();
    lu.raiseCapacityChanged();
    lu.raiseReportedLunsChanged();
    expect(codeOf(await run(lu, READ_CAPACITY_16))).toEqual(expected(senseUaReportedLunsDataChanged));
    expect(codeOf(await run(lu, READ_CAPACITY_16))).toEqual(expected(senseUaCapacityDataChanged));
    expect((await run(lu, READ_CAPACITY_16)).status).toBe(Status.GOOD);
  });

  it('nothing queues behind a pending POWER ON, RESET; reset() replaces the queue', async () => {
    const { lu } = await makeUnit({ keepPowerOnUa: true });
    lu.raiseCapacityChanged();
    expect(lu.pendingUnitAttentions()).toEqual([senseUaPowerOnReset]);
    await run(lu, TUR);
    lu.raiseCapacityChanged();
    lu.reset();
    expect(lu.pendingUnitAttentions()).toEqual([senseUaPowerOnReset]);
  });

  it('REQUEST SENSE refuses DESC=1 (descriptor format not implemented)', async () => {
    const { lu } = await makeUnit();
    expect(senseOf(await run(lu, [0x03, 1, 0, 0, 18, 0]))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 1, bit: 0 } });
  });
});

describe('resize', () => {
  it('changes the capacity and raises CAPACITY DATA HAS CHANGED', async () => {
    const { lu, backend } = await makeUnit();
    await lu.resize(2 << 20);
    expect(backend.size()).toBe(2 << 20);
    expect(codeOf(await run(lu, READ_CAPACITY_16))).toEqual(expected(senseUaCapacityDataChanged));
    expect((await run(lu, READ_CAPACITY_16)).dataIn!.readBigUInt64BE(0)).toBe(4095n);
    expect((await run(lu, cdb10(0x28, 4095, 1))).status).toBe(Status.GOOD);
    await lu.resize(512 * 10);
    await run(lu, TUR);
    expect(codeOf(await run(lu, cdb10(0x28, 10, 1)))).toEqual(expected(senseLbaOutOfRange));
  });

  it('refuses sizes that are not whole blocks', async () => {
    const { lu } = await makeUnit();
    await expect(lu.resize(1000)).rejects.toThrow(RangeError);
    await expect(lu.resize(0)).rejects.toThrow(RangeError);
  });
});

describe('CDB validation', () => {
  it('unknown opcode: INVALID COMMAND OPERATION CODE', async () => {
    const { lu } = await makeUnit();
    for (const op of [0x01, 0x7f, 0xc0, 0xff, 0x9f]) expect(codeOf(await run(lu, [op]))).toEqual(expected(senseInvalidOpcode));
    expect(codeOf(await run(lu, Buffer.alloc(0)))).toEqual(expected(senseInvalidOpcode));
  });

  it('a CDB shorter than its group code says: INVALID FIELD IN CDB', async () => {
    const { lu } = await makeUnit();
    expect(codeOf(await run(lu, Buffer.from([0x28, 0, 0, 0, 0, 0, 0, 0, 1])))).toEqual(expected(senseInvalidFieldInCdb));
    expect(codeOf(await run(lu, Buffer.from([0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0])))).toEqual(expected(senseInvalidFieldInCdb));
  });

  it('NACA=1 in the CONTROL byte: INVALID FIELD IN CDB pointing at it', async () => {
    const { lu } = await makeUnit();
    const cdb = cdb10(0x28, 0, 1);
    cdb[9] = 0x04;
    expect(senseOf(await run(lu, cdb))).toMatchObject({ asc: 0x24, fieldPointer: { inCdb: true, byte: 9, bit: 2 } });
    expect(senseOf(await run(lu, [0x00, 0, 0, 0, 0, 0x04]))).toMatchObject({ fieldPointer: { byte: 5, bit: 2 } });
  });

  it('bytes after the CDB length are ignored (a transport passes its whole CDB area)', async () => {
    const { lu } = await makeUnit();
    const area = Buffer.alloc(32, 0xff);
    cdb10(0x28, 0, 1).copy(area);
    expect((await run(lu, area)).status).toBe(Status.GOOD);
  });

  it('arbitrary CDBs and data never crash and always give GOOD or CHECK CONDITION with fixed sense', async () => {
    const { lu } = await makeUnit({ options: { maxTransferBytes: 1 << 16 } });
    const known = fc.constantFrom(0x00, 0x03, 0x08, 0x0a, 0x12, 0x15, 0x1a, 0x1b, 0x1e, 0x25, 0x28, 0x2a, 0x2e, 0x2f, 0x35, 0x41, 0x42,
      0x55, 0x5a, 0x88, 0x8a, 0x8e, 0x8f, 0x91, 0x93, 0x9e, 0xa0, 0xa3, 0xa8, 0xaa);
    const cdb = fc.tuple(fc.oneof(known, fc.integer({ min: 0, max: 255 })), fc.uint8Array({ minLength: 0, maxLength: 31 }))
      .map(([op, rest]) => Buffer.concat([Buffer.from([op]), Buffer.from(rest)]));
    await fc.assert(
      fc.asyncProperty(cdb, fc.uint8Array({ maxLength: 2048 }), fc.integer({ min: 0, max: 1 << 17 }), async (c, out, capacity) => {
        const r = await lu.execute({ cdb: c, dataOut: Buffer.from(out), dataInCapacity: capacity, tag: 0n });
        expect([Status.GOOD, Status.CHECK_CONDITION]).toContain(r.status);
        if (r.status === Status.CHECK_CONDITION) expect(decodeFixedSense(r.sense!)).toBeDefined();
        expect(r.dataIn?.length ?? 0).toBeLessThanOrEqual(capacity);
        expect(r.dataOutConsumed ?? 0).toBeLessThanOrEqual(out.length);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('SYNCHRONIZE CACHE (SBC-3 §5.22, §5.23)', () => {
  it('flushes after the range check', async () => {
    const { lu, backend } = await makeUnit();
    expect((await run(lu, cdb10(0x35, 0, 0))).status).toBe(Status.GOOD);
    expect((await run(lu, cdb16(0x91, 100n, 10))).status).toBe(Status.GOOD);
    expect(backend.flushes).toBe(2);
    expect(codeOf(await run(lu, cdb10(0x35, 2040, 9)))).toEqual(expected(senseLbaOutOfRange));
    expect(codeOf(await run(lu, cdb16(0x91, 0xffff_ffff_ffff_fff0n, 0x20)))).toEqual(expected(senseLbaOutOfRange));
    expect(backend.flushes).toBe(2);
  });

  it('IMMED is accepted; a failed flush is a MEDIUM ERROR (write)', async () => {
    const { lu, backend } = await makeUnit();
    expect((await run(lu, cdb10(0x35, 0, 0, 0x02))).status).toBe(Status.GOOD);
    backend.failOn('flush');
    expect(codeOf(await run(lu, cdb10(0x35, 0, 0)))).toEqual(expected(senseMediumErrorWrite));
  });

  it('writes then SYNCHRONIZE CACHE: data flushed after the writes', async () => {
    const { lu, backend } = await makeUnit();
    await run(lu, cdb10(0x2a, 0, 1), { dataOut: pattern(1, 512) });
    await run(lu, cdb10(0x35, 0, 0));
    expect([backend.cachedWrites, backend.flushes]).toEqual([1, 1]);
  });
});

describe('unit control commands', () => {
  it('TEST UNIT READY is GOOD', async () => {
    const { lu } = await makeUnit();
    expect(await run(lu, TUR)).toEqual({ status: Status.GOOD });
  });

  it('START STOP UNIT is accepted; stop flushes unless NO_FLUSH', async () => {
    const { lu, backend } = await makeUnit();
    expect((await run(lu, [0x1b, 0, 0, 0, 0x01, 0])).status).toBe(Status.GOOD);
    expect(backend.flushes).toBe(0);
    expect((await run(lu, [0x1b, 0, 0, 0, 0x00, 0])).status).toBe(Status.GOOD);
    expect(backend.flushes).toBe(1);
    expect((await run(lu, [0x1b, 1, 0, 0, 0x04, 0])).status).toBe(Status.GOOD);
    expect(backend.flushes).toBe(1);
  });

  it('PREVENT ALLOW MEDIUM REMOVAL: 00b/01b accepted, medium changer values refused', async () => {
    const { lu } = await makeUnit();
    expect((await run(lu, [0x1e, 0, 0, 0, 0, 0])).status).toBe(Status.GOOD);
    expect((await run(lu, [0x1e, 0, 0, 0, 1, 0])).status).toBe(Status.GOOD);
    expect(senseOf(await run(lu, [0x1e, 0, 0, 0, 2, 0]))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 4 } });
  });

  it('a non-SCSI error in a non-I/O command is INTERNAL TARGET FAILURE', async () => {
    const errors: unknown[] = [];
    const table = new OpcodeTable([
      defineCommand({ name: 'TEST UNIT READY', opcode: 0x00, cdbLength: 6, parse: () => ({}), execute: () => { throw new TypeError('boom'); } }),
    ]);
    const lu = new LogicalUnit(testParams, new MemoryBackend(1 << 20), { onBackendError: (e) => errors.push(e) }, table);
    expect(codeOf(await run(lu, TUR))).toEqual(expected(senseUaPowerOnReset));
    expect(codeOf(await run(lu, TUR))).toEqual(expected(senseInternalTargetFailure));
    expect(errors).toHaveLength(1);
  });
});

describe('REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35)', () => {
  function rsoc(options: number, opcode = 0, sa = 0, allocation = 0x10000): number[] {
    return [0xa3, 0x0c, options, opcode, sa >> 8, sa & 0xff, allocation >>> 24, (allocation >> 16) & 0xff, (allocation >> 8) & 0xff, allocation & 0xff, 0, 0];
  }

  it('lists every command with its CDB length', async () => {
    const { lu } = await makeUnit();
    const d = (await run(lu, rsoc(0))).dataIn!;
    const count = d.readUInt32BE(0) / 8;
    const entries = Array.from({ length: count }, (_, i) => d.subarray(4 + i * 8, 12 + i * 8));
    const writeSame16 = entries.find((e) => e[0] === 0x93)!;
    expect(writeSame16.readUInt16BE(6)).toBe(16);
    const readCap16 = entries.find((e) => e[0] === 0x9e)!;
    expect([readCap16.readUInt16BE(2), readCap16[5]! & 1]).toEqual([0x10, 1]);
    expect(entries.some((e) => e[0] === 0xa0)).toBe(true); // REPORT LUNS
  });

  it('one command: supported with usage data, or not supported', async () => {
    const { lu } = await makeUnit();
    const ws = (await run(lu, rsoc(1, 0x93))).dataIn!;
    expect(ws[1]! & 7).toBe(3);
    expect(ws.readUInt16BE(2)).toBe(16);
    expect(ws[4]).toBe(0x93);
    const none = (await run(lu, rsoc(1, 0x01))).dataIn!;
    expect(none[1]! & 7).toBe(1);
    const rc = (await run(lu, rsoc(2, 0x9e, 0x10))).dataIn!;
    expect([rc[1]! & 7, rc[4], rc[5]! & 0x1f]).toEqual([3, 0x9e, 0x10]);
    expect(codeOf(await run(lu, rsoc(1, 0x9e)))).toEqual(expected(senseInvalidFieldInCdb));
    expect(codeOf(await run(lu, rsoc(2, 0x28)))).toEqual(expected(senseInvalidFieldInCdb));
  });
});

describe('params validation and lifecycle', () => {
  it('refuses invalid params', () => {
    const bad = [
      { logicalBlockSize: 1024 },
      { physicalBlockSize: 256 },
      { physicalBlockSize: 1536 },
      { serial: '' },
      { serial: 'x'.repeat(21) },
      { serial: 'caf\u00e9' },
      { wwn: '4000c50012345678' },
      { wwn: '5000c5001234567' },
      { wwn: '5000c500123456789abcdef012345678' },
      { wwn: '6000c50012345678' },
      { product: 'x'.repeat(17) },
    ];
    for (const b of bad) expect(() => validateLogicalUnitParams({ ...testParams, ...b })).toThrow(RangeError);
    expect(() => validateLogicalUnitParams({ ...testParams, logicalBlockSize: 4096, physicalBlockSize: 4096 })).not.toThrow();
  });

  it('close() waits for in-flight commands before closing the backend', async () => {
    const backend = new MemoryBackend(1 << 20);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const read = backend.read.bind(backend);
    backend.read = async (o, l) => {
      await gate;
      return read(o, l);
    };
    const lu = new LogicalUnit(testParams, backend);
    await run(lu, TUR);
    const pending = run(lu, cdb10(0x28, 0, 1));
    expect(lu.inFlight).toBe(1);
    let closed = false;
    const closing = lu.close().then(() => (closed = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(closed).toBe(false);
    release();
    expect((await pending).status).toBe(Status.GOOD);
    await closing;
    expect(closed).toBe(true);
  });

  it('snapshots are frozen and a change makes a new one, leaving the old intact', async () => {
    const { lu } = await makeUnit({ params: { writeCacheEnabled: false } });
    const before = lu.snapshot();
    expect(Object.isFrozen(before)).toBe(true);
    const page = Buffer.from((await run(lu, [0x1a, 0x08, 0x08, 0, 255, 0])).dataIn!.subarray(4));
    page[2] = page[2]! | 0x04;
    const list = Buffer.concat([Buffer.alloc(4), page]);
    expect((await run(lu, [0x15, 0x10, 0, 0, list.length, 0], { dataOut: list })).status).toBe(Status.GOOD);
    expect(before.writeCacheEnabled).toBe(false);
    expect(lu.snapshot().writeCacheEnabled).toBe(true);
    expect(lu.snapshot()).toBe(lu.snapshot());
  });
});
