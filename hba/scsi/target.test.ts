import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryBackend } from '../backends/memory.ts';
import { LogicalUnit } from './logical-unit.ts';
import { MAX_LUN, decodeLun, decodeLunLevel, encodeLun } from './report-luns.ts';
import {
  decodeFixedSense,
  senseInvalidFieldInCdb,
  senseLogicalUnitNotSupported,
  senseUaCapacityDataChanged,
  senseUaPowerOnReset,
  senseUaReportedLunsDataChanged,
} from './sense.ts';
import { ScsiTarget } from './target.ts';
import { cdb10, codeOf, expected, padCdb, testParams } from './testing.ts';
import { Status, type ScsiResult } from './types.ts';

function reportLuns(select = 0, allocation = 0xffffffff): Buffer {
  const cdb = Buffer.alloc(12);
  cdb[0] = 0xa0;
  cdb[2] = select;
  cdb.writeUInt32BE(allocation, 6);
  return cdb;
}

function exec(target: ScsiTarget, lun: number, cdb: Buffer | number[], dataInCapacity = 1 << 20): Promise<ScsiResult> {
  return target.execute(lun, { cdb: Buffer.isBuffer(cdb) ? cdb : padCdb(cdb), dataOut: Buffer.alloc(0), dataInCapacity, tag: 0n });
}

function unit(): LogicalUnit {
  return new LogicalUnit(testParams, new MemoryBackend(1 << 20));
}

function listedLuns(data: Buffer): number[] {
  const n = data.readUInt32BE(0) / 8;
  return Array.from({ length: n }, (_, i) => decodeLun(data.subarray(8 + i * 8, 16 + i * 8))!);
}

describe('SAM-5 LUN format', () => {
  it('uses peripheral device addressing below 256 and flat space from 256', () => {
    expect(encodeLun(0).toString('hex')).toBe('0000000000000000');
    expect(encodeLun(255).toString('hex')).toBe('00ff000000000000');
    expect(encodeLun(256).toString('hex')).toBe('4100000000000000');
    expect(encodeLun(16383).toString('hex')).toBe('7fff000000000000');
    expect(() => encodeLun(16384)).toThrow(RangeError);
    expect(() => encodeLun(-1)).toThrow(RangeError);
  });

  it('decodes what it encodes, for every LUN', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: MAX_LUN }), (lun) => decodeLun(encodeLun(lun)) === lun));
  });

  it('refuses second levels, other methods and non-zero bus', () => {
    expect(decodeLun(Buffer.from('0001000100000000', 'hex'))).toBeUndefined();
    expect(decodeLun(Buffer.from('8001000000000000', 'hex'))).toBeUndefined();
    expect(decodeLun(Buffer.from('0101000000000000', 'hex'))).toBeUndefined();
    expect(decodeLun(Buffer.alloc(7))).toBeUndefined();
    expect(decodeLunLevel(0x40, 0x05)).toBe(5); // flat space may name a LUN below 256 too
  });
});

describe('REPORT LUNS (SPC-4 §6.33)', () => {
  it('works with LUN 0 absent, listing LUNs in ascending order', async () => {
    const target = new ScsiTarget();
    target.attach(300, unit());
    target.attach(5, unit());
    const r = await exec(target, 0, reportLuns());
    expect(r.status).toBe(Status.GOOD);
    expect(listedLuns(r.dataIn!)).toEqual([5, 300]);
    expect(r.dataIn!.subarray(16, 24).toString('hex')).toBe('412c000000000000');
  });

  it('reports 16,384 LUNs', async () => {
    const target = new ScsiTarget();
    const shared = unit();
    for (let lun = MAX_LUN; lun >= 0; lun--) target.attach(lun, shared, { notify: false });
    const r = await exec(target, 7, reportLuns(), 1 << 20);
    expect(r.dataIn!.readUInt32BE(0)).toBe(16384 * 8);
    expect(r.dataIn!.length).toBe(8 + 16384 * 8);
    const luns = listedLuns(r.dataIn!);
    expect(luns).toEqual(Array.from({ length: 16384 }, (_, i) => i));
  });

  it('truncates to the allocation length and the data-in buffer, keeping the full list length', async () => {
    const target = new ScsiTarget();
    for (let lun = 0; lun < 10; lun++) target.attach(lun, unit());
    const r = await exec(target, 0, reportLuns(0, 20));
    expect(r.dataIn!.length).toBe(20);
    expect(r.dataIn!.readUInt32BE(0)).toBe(80);
    expect((await exec(target, 0, reportLuns(0, 4096), 12)).dataIn!.length).toBe(12);
  });

  it('SELECT REPORT 1 (well-known only) is empty, 2 is all, others refused', async () => {
    const target = new ScsiTarget();
    target.attach(1, unit());
    expect((await exec(target, 0, reportLuns(1))).dataIn!.readUInt32BE(0)).toBe(0);
    expect(listedLuns((await exec(target, 0, reportLuns(2))).dataIn!)).toEqual([1]);
    expect(codeOf(await exec(target, 0, reportLuns(0x10)))).toEqual(expected(senseInvalidFieldInCdb));
  });

  it('does not report or consume a pending unit attention', async () => {
    const target = new ScsiTarget();
    const lu = unit();
    target.attach(0, lu);
    expect((await exec(target, 0, reportLuns())).status).toBe(Status.GOOD);
    expect(lu.pendingUnitAttentions()).toEqual([senseUaPowerOnReset]);
  });

  it('refuses NACA', async () => {
    const cdb = reportLuns();
    cdb[11] = 0x04;
    expect(codeOf(await exec(new ScsiTarget(), 0, cdb))).toEqual(expected(senseInvalidFieldInCdb));
  });
});

describe('LUN inventory changes', () => {
  it('attach and detach raise REPORTED LUNS DATA HAS CHANGED on the other LUs; REPORT LUNS clears it', async () => {
    const target = new ScsiTarget();
    const a = unit();
    const b = unit();
    target.attach(0, a);
    await exec(target, 0, [0x00, 0, 0, 0, 0, 0]); // consume a's POWER ON
    target.attach(1, b);
    expect(a.pendingUnitAttentions()).toEqual([senseUaReportedLunsDataChanged]);
    expect(b.pendingUnitAttentions()).toEqual([senseUaPowerOnReset]);
    expect(codeOf(await exec(target, 0, cdb10(0x28, 0, 1)))).toEqual(expected(senseUaReportedLunsDataChanged));
    target.detach(1);
    a.raiseCapacityChanged();
    expect(a.pendingUnitAttentions()).toEqual([senseUaReportedLunsDataChanged, senseUaCapacityDataChanged]);
    await exec(target, 5, reportLuns());
    expect(a.pendingUnitAttentions()).toEqual([senseUaCapacityDataChanged]);
  });

  it('refuses LUNs out of range or taken; detach of an absent LUN is undefined', () => {
    const target = new ScsiTarget();
    target.attach(0, unit());
    expect(() => target.attach(0, unit())).toThrow();
    expect(() => target.attach(16384, unit())).toThrow(RangeError);
    expect(() => target.attach(1.5, unit())).toThrow(RangeError);
    expect(target.detach(9)).toBeUndefined();
  });

  it('notify: false attaches and detaches without unit attentions', async () => {
    const target = new ScsiTarget();
    const first = unit();
    target.attach(0, first);
    await exec(target, 0, [0x00, 0, 0, 0, 0, 0]);
    target.attach(1, unit(), { notify: false });
    target.detach(1, { notify: false });
    expect(first.pendingUnitAttentions()).toEqual([]);
    target.attach(1, unit());
    expect(first.pendingUnitAttentions()).toEqual([senseUaReportedLunsDataChanged]);
    expect(target.luns()).toEqual([0, 1]);
  });

  it('reset() gives every LU a POWER ON, RESET', async () => {
    const target = new ScsiTarget();
    const a = unit();
    target.attach(3, a);
    await exec(target, 3, [0x00, 0, 0, 0, 0, 0]);
    target.reset();
    expect(codeOf(await exec(target, 3, [0x00, 0, 0, 0, 0, 0]))).toEqual(expected(senseUaPowerOnReset));
  });
});

describe('absent LUNs', () => {
  it('INQUIRY: peripheral qualifier 011b, type 1Fh, with vendor data', async () => {
    const target = new ScsiTarget();
    const r = await exec(target, 4, [0x12, 0, 0, 0, 96, 0]);
    expect(r.status).toBe(Status.GOOD);
    expect(r.dataIn![0]).toBe(0x7f);
    expect(r.dataIn!.toString('latin1', 8, 16)).toBe('VHBA    ');
    const vpd = await exec(target, 4, [0x12, 1, 0, 0, 96, 0]);
    expect([...vpd.dataIn!]).toEqual([0x7f, 0, 0, 1, 0]);
    expect(codeOf(await exec(target, 4, [0x12, 1, 0x80, 0, 96, 0]))).toEqual(expected(senseInvalidFieldInCdb));
    expect(codeOf(await exec(target, 4, [0x12, 0, 0x80, 0, 96, 0]))).toEqual(expected(senseInvalidFieldInCdb));
  });

  it('REQUEST SENSE returns LOGICAL UNIT NOT SUPPORTED as data', async () => {
    const r = await exec(new ScsiTarget(), 2, [0x03, 0, 0, 0, 18, 0]);
    expect(r.status).toBe(Status.GOOD);
    expect(decodeFixedSense(r.dataIn!)).toMatchObject(expected(senseLogicalUnitNotSupported));
  });

  it('anything else: CHECK CONDITION, LOGICAL UNIT NOT SUPPORTED', async () => {
    const target = new ScsiTarget();
    target.attach(0, unit());
    for (const cdb of [[0x00, 0, 0, 0, 0, 0], [...cdb10(0x28, 0, 1)], [0xff]]) {
      expect(codeOf(await exec(target, 1, cdb))).toEqual(expected(senseLogicalUnitNotSupported));
    }
    expect(codeOf(await exec(target, 99999, [0x00, 0, 0, 0, 0, 0]))).toEqual(expected(senseLogicalUnitNotSupported));
  });

  it('a detached LU is absent for new commands', async () => {
    const target = new ScsiTarget();
    target.attach(2, unit());
    const lu = target.detach(2)!;
    expect(lu).toBeInstanceOf(LogicalUnit);
    expect(codeOf(await exec(target, 2, [0x00, 0, 0, 0, 0, 0]))).toEqual(expected(senseLogicalUnitNotSupported));
  });
});
