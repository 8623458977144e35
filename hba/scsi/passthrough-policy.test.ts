import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  JS_OWNED_OPCODES,
  OPCODE_BITMAP_BYTES,
  REFUSED_OPCODES,
  bitmapHas,
  deferredOpcodeBitmap,
  isRefused,
  opcodeBitmap,
  refusedOpcodeBitmap,
} from './passthrough-policy.ts';

const ALL_OPCODES = Array.from({ length: 256 }, (_, i) => i);

describe('refused opcodes', () => {
  it('refuses firmware download, ATA pass-through, security, maintenance out and vendor-specific opcodes', () => {
    for (const opcode of [0x3b, 0x85, 0xa1, 0xa4, 0xb5]) expect(isRefused(opcode, false), `opcode ${opcode.toString(16)}`).toBe(true);
    for (let opcode = 0xc0; opcode <= 0xff; opcode++) expect(isRefused(opcode, false)).toBe(true);
    expect(REFUSED_OPCODES.size).toBe(5 + 64);
  });

  it('lets the commands a guest needs to own its LUN reach the device', () => {
    // TEST UNIT READY, REQUEST SENSE, FORMAT UNIT, READ(10/16), WRITE(10/16), INQUIRY, MODE SELECT/SENSE,
    // SYNCHRONIZE CACHE, READ BUFFER, UNMAP, PERSISTENT RESERVE IN/OUT, SERVICE ACTION IN(16), SECURITY PROTOCOL IN.
    for (const opcode of [0x00, 0x03, 0x04, 0x28, 0x88, 0x2a, 0x8a, 0x12, 0x15, 0x55, 0x1a, 0x5a, 0x35, 0x91, 0x3c, 0x42, 0x5e, 0x5f, 0x9e, 0xa2]) {
      expect(isRefused(opcode, false), `opcode ${opcode.toString(16)}`).toBe(false);
    }
  });

  it('gives every refused opcode a reason that cites its standard', () => {
    for (const [opcode, reason] of REFUSED_OPCODES) {
      expect(opcode).toBeGreaterThanOrEqual(0);
      expect(opcode).toBeLessThanOrEqual(0xff);
      expect(reason).toMatch(/(SPC-4|SAT-3) §\d/);
    }
  });

  it('rawio refuses nothing', () => {
    for (const opcode of ALL_OPCODES) expect(isRefused(opcode, true)).toBe(false);
  });
});

describe('opcode bitmaps', () => {
  it('sets bit (opcode & 7) of byte (opcode >> 3)', () => {
    const bitmap = opcodeBitmap([0x00, 0x3b, 0xff]);
    expect(bitmap.length).toBe(OPCODE_BITMAP_BYTES);
    const expected = Buffer.alloc(32);
    expected[0] = 0x01;
    expected[7] = 0x08; // 3Bh: byte 7, bit 3
    expected[31] = 0x80;
    expect(bitmap).toEqual(expected);
  });

  it('rejects values that are not opcodes', () => {
    for (const bad of [-1, 256, 1.5, Number.NaN]) expect(() => opcodeBitmap([bad])).toThrow(RangeError);
  });

  it('holds exactly the opcodes given', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 255 })), (opcodes) => {
        const bitmap = opcodeBitmap(opcodes);
        const set = new Set(opcodes);
        for (const opcode of ALL_OPCODES) expect(bitmapHas(bitmap, opcode)).toBe(set.has(opcode));
      }),
    );
  });

  it('refusedOpcodeBitmap agrees with isRefused, and is empty with rawio', () => {
    const refused = refusedOpcodeBitmap(false);
    for (const opcode of ALL_OPCODES) expect(bitmapHas(refused, opcode)).toBe(isRefused(opcode, false));
    expect(refusedOpcodeBitmap(true)).toEqual(Buffer.alloc(32));
  });

  it('defers exactly REPORT LUNS and INQUIRY to JS', () => {
    expect([...JS_OWNED_OPCODES].sort((a, b) => a - b)).toEqual([0x12, 0xa0]);
    const deferred = deferredOpcodeBitmap();
    expect(ALL_OPCODES.filter((opcode) => bitmapHas(deferred, opcode))).toEqual([0x12, 0xa0]);
  });

  it('never defers a refused opcode and never refuses a JS-owned one', () => {
    for (const opcode of JS_OWNED_OPCODES) expect(REFUSED_OPCODES.has(opcode)).toBe(false);
  });
});
