import { describe, expect, it } from 'vitest';
import {
  FIXED_SENSE_LENGTH,
  ScsiError,
  buildFixedSense,
  decodeFixedSense,
  invalidFieldInCdb,
  invalidFieldInParameterList,
  senseInvalidFieldInCdb,
  senseMediumErrorRead,
  senseUaCapacityDataChanged,
  senseWriteProtected,
} from './sense.ts';

describe('fixed-format sense (SPC-4 §4.5.3)', () => {
  it('lays out response code, key, additional length, ASC and ASCQ', () => {
    const s = buildFixedSense(senseWriteProtected);
    expect(s.length).toBe(FIXED_SENSE_LENGTH);
    expect(s[0]).toBe(0x70);
    expect(s[2]).toBe(0x07);
    expect(s[7]).toBe(10);
    expect(s[12]).toBe(0x27);
    expect(s[13]).toBe(0x00);
    expect(s.subarray(14)).toEqual(Buffer.alloc(4));
  });

  it('carries the ASCQ of unit attentions', () => {
    const s = buildFixedSense(senseUaCapacityDataChanged);
    expect([s[2], s[12], s[13]]).toEqual([0x06, 0x2a, 0x09]);
  });

  it('sets VALID and INFORMATION only when it fits in 32 bits', () => {
    const s = buildFixedSense(senseMediumErrorRead, { information: 0x12345678n });
    expect(s[0]).toBe(0xf0);
    expect(s.readUInt32BE(3)).toBe(0x12345678);
    const big = buildFixedSense(senseMediumErrorRead, { information: 1n << 40n });
    expect(big[0]).toBe(0x70);
    expect(big.readUInt32BE(3)).toBe(0);
  });

  it('encodes a CDB field pointer with bit pointer (SPC-4 §4.5.2.4.2)', () => {
    const s = invalidFieldInCdb(9, 2).senseData();
    expect([s[2], s[12], s[13]]).toEqual([0x05, 0x24, 0x00]);
    expect(s[15]).toBe(0x80 | 0x40 | 0x08 | 2);
    expect(s.readUInt16BE(16)).toBe(9);
  });

  it('encodes a parameter-list field pointer without C/D and without BPV when no bit is given', () => {
    const s = invalidFieldInParameterList(300).senseData();
    expect([s[12], s[13]]).toEqual([0x26, 0x00]);
    expect(s[15]).toBe(0x80);
    expect(s.readUInt16BE(16)).toBe(300);
  });

  it('round-trips through decodeFixedSense', () => {
    const e = new ScsiError(senseInvalidFieldInCdb, { fieldPointer: { inCdb: true, byte: 1, bit: 7 } });
    expect(decodeFixedSense(e.senseData())).toEqual({
      responseCode: 0x70, key: 5, asc: 0x24, ascq: 0, fieldPointer: { inCdb: true, byte: 1, bit: 7 },
    });
    expect(decodeFixedSense(Buffer.from([0x72, 0, 0]))).toBeUndefined();
  });
});
