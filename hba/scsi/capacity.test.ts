import { describe, expect, it } from 'vitest';
import { makeUnit, run, senseOf } from './testing.ts';

const readCapacity10 = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
function readCapacity16(allocation = 32): number[] {
  return [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, allocation >>> 24, (allocation >> 16) & 0xff, (allocation >> 8) & 0xff, allocation & 0xff, 0, 0];
}

describe('READ CAPACITY(10) (SBC-3 §5.15)', () => {
  it('returns the last LBA and the block length', async () => {
    const { lu } = await makeUnit({ sizeBytes: 1 << 20 });
    const d = (await run(lu, readCapacity10)).dataIn!;
    expect(d.readUInt32BE(0)).toBe(2047);
    expect(d.readUInt32BE(4)).toBe(512);
  });

  it('returns FFFFFFFFh when the last LBA does not fit in 32 bits', async () => {
    const { lu } = await makeUnit({ sizeBytes: 2 ** 32 * 512 + 512 * 2 }); // sparse: no memory used
    expect((await run(lu, readCapacity10)).dataIn!.readUInt32BE(0)).toBe(0xffffffff);
    const { lu: edge } = await makeUnit({ sizeBytes: 2 ** 32 * 512 - 512 }); // last LBA FFFFFFFEh fits
    expect((await run(edge, readCapacity10)).dataIn!.readUInt32BE(0)).toBe(0xfffffffe);
    const { lu: exact } = await makeUnit({ sizeBytes: 2 ** 32 * 512 }); // last LBA FFFFFFFFh: reported as "use (16)"
    expect((await run(exact, readCapacity10)).dataIn!.readUInt32BE(0)).toBe(0xffffffff);
  });

  it('refuses a non-zero LBA with PMI = 0', async () => {
    const { lu } = await makeUnit();
    expect(senseOf(await run(lu, [0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 2 } });
    expect((await run(lu, [0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0])).dataIn!.readUInt32BE(0)).toBe(2047);
  });
});

describe('READ CAPACITY(16) (SBC-3 §5.16)', () => {
  it('returns 64-bit last LBA, block length, physical exponent, LBPME and LBPRZ', async () => {
    const { lu } = await makeUnit({ sizeBytes: 2 ** 40 });
    const d = (await run(lu, readCapacity16())).dataIn!;
    expect(d.length).toBe(32);
    expect(d.readBigUInt64BE(0)).toBe(2n ** 40n / 512n - 1n);
    expect(d.readUInt32BE(8)).toBe(512);
    expect(d[13]! & 0x0f).toBe(3); // 4096 / 512 = 2^3
    expect(d[14]! & 0xc0).toBe(0xc0);
  });

  it('4Kn fully provisioned: exponent 0, no LBPME', async () => {
    const { lu } = await makeUnit({ params: { logicalBlockSize: 4096, physicalBlockSize: 4096, thinProvisioned: false } });
    const d = (await run(lu, readCapacity16())).dataIn!;
    expect(d.readBigUInt64BE(0)).toBe(255n);
    expect(d.readUInt32BE(8)).toBe(4096);
    expect(d[13]).toBe(0);
    expect(d[14]).toBe(0);
  });

  it('honours the allocation length', async () => {
    const { lu } = await makeUnit();
    expect((await run(lu, readCapacity16(12))).dataIn!.length).toBe(12);
  });

  it('refuses other SERVICE ACTION IN(16) actions with INVALID FIELD IN CDB at byte 1', async () => {
    const { lu } = await makeUnit();
    const cdb = readCapacity16();
    cdb[1] = 0x12; // GET LBA STATUS: not implemented
    expect(senseOf(await run(lu, cdb))).toMatchObject({ key: 5, asc: 0x24, fieldPointer: { byte: 1, bit: 4 } });
  });
});
