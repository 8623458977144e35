import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  senseInvalidFieldInCdb,
  senseInvalidOpcode,
  senseLbaOutOfRange,
  senseParameterListLengthError,
  senseWriteProtected,
} from './sense.ts';
import { cdb10, cdb16, codeOf, expected, makeUnit, pattern, run, senseOf } from './testing.ts';
import { Status } from './types.ts';

/** An UNMAP parameter list with the given descriptors. */
function unmapList(ranges: [bigint, number][]): Buffer {
  const list = Buffer.alloc(8 + ranges.length * 16);
  list.writeUInt16BE(list.length - 2, 0);
  list.writeUInt16BE(ranges.length * 16, 2);
  ranges.forEach(([lba, blocks], i) => {
    list.writeBigUInt64BE(lba, 8 + i * 16);
    list.writeUInt32BE(blocks, 16 + i * 16);
  });
  return list;
}

function unmapCdb(length: number, anchor = false): number[] {
  return [0x42, anchor ? 1 : 0, 0, 0, 0, 0, 0, length >> 8, length & 0xff, 0];
}

describe('UNMAP (SBC-3 §5.28)', () => {
  it('discards every range and the data reads back as zeros', async () => {
    const { lu, backend } = await makeUnit();
    await run(lu, cdb10(0x2a, 0, 16), { dataOut: pattern(16, 512, 1) });
    const list = unmapList([[2n, 3], [10n, 2], [15n, 0]]);
    expect(await run(lu, unmapCdb(list.length), { dataOut: list })).toEqual({ status: Status.GOOD, dataOutConsumed: list.length });
    expect(backend.discards).toEqual([[1024, 1536], [5120, 1024]]);
    const back = (await run(lu, cdb10(0x28, 0, 16))).dataIn!;
    const expectedData = pattern(16, 512, 1);
    expectedData.fill(0, 1024, 2560);
    expectedData.fill(0, 5120, 6144);
    expect(back).toEqual(expectedData);
  });

  it('PARAMETER LIST LENGTH 0 does nothing', async () => {
    const { lu, backend } = await makeUnit();
    expect((await run(lu, unmapCdb(0))).status).toBe(Status.GOOD);
    expect(backend.discards).toEqual([]);
  });

  it('validates the whole list before discarding anything', async () => {
    const { lu, backend } = await makeUnit();
    const list = unmapList([[0n, 8], [2047n, 2]]);
    expect(codeOf(await run(lu, unmapCdb(list.length), { dataOut: list }))).toEqual(expected(senseLbaOutOfRange));
    expect(backend.discards).toEqual([]);
  });

  it('rejects LBA + count overflowing 2^64', async () => {
    const { lu } = await makeUnit();
    const list = unmapList([[0xffff_ffff_ffff_fff0n, 0x20]]);
    expect(codeOf(await run(lu, unmapCdb(list.length), { dataOut: list }))).toEqual(expected(senseLbaOutOfRange));
  });

  it('enforces the descriptor count and total block limits', async () => {
    const { lu } = await makeUnit({ sizeBytes: 1 << 30, options: { maxUnmapDescriptors: 2, maxUnmapBytes: 64 * 512 } });
    let list = unmapList([[0n, 1], [1n, 1], [2n, 1]]);
    expect(senseOf(await run(lu, unmapCdb(list.length), { dataOut: list }))).toMatchObject({ asc: 0x26, fieldPointer: { inCdb: false, byte: 2 } });
    list = unmapList([[0n, 40], [100n, 25]]);
    expect(senseOf(await run(lu, unmapCdb(list.length), { dataOut: list }))).toMatchObject({ asc: 0x26, fieldPointer: { byte: 8 + 16 + 8 } });
    list = unmapList([[0n, 40], [100n, 24]]);
    expect((await run(lu, unmapCdb(list.length), { dataOut: list })).status).toBe(Status.GOOD);
  });

  it('PARAMETER LIST LENGTH ERROR for inconsistent lengths', async () => {
    const { lu } = await makeUnit();
    const good = unmapList([[0n, 1]]);
    const bad: Buffer[] = [good.subarray(0, 7), Buffer.from(good), Buffer.from(good), Buffer.from(good)];
    bad[1]!.writeUInt16BE(100, 0); // UNMAP DATA LENGTH beyond the list
    bad[2]!.writeUInt16BE(32, 2); // descriptor data beyond the list
    bad[3]!.writeUInt16BE(15, 2); // not a multiple of 16
    for (const list of bad) {
      expect(codeOf(await run(lu, unmapCdb(list.length), { dataOut: list }))).toEqual(expected(senseParameterListLengthError));
    }
  });

  it('refuses ANCHOR, read-only LUs, and fully provisioned LUs', async () => {
    const list = unmapList([[0n, 1]]);
    const { lu } = await makeUnit();
    expect(senseOf(await run(lu, unmapCdb(list.length, true), { dataOut: list }))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 1, bit: 0 } });
    const ro = (await makeUnit({ params: { readOnly: true } })).lu;
    expect(codeOf(await run(ro, unmapCdb(list.length), { dataOut: list }))).toEqual(expected(senseWriteProtected));
    const full = (await makeUnit({ params: { thinProvisioned: false } })).lu;
    expect(codeOf(await run(full, unmapCdb(list.length), { dataOut: list }))).toEqual(expected(senseInvalidOpcode));
  });

  it('flushes the deallocation when the write cache is off', async () => {
    const { lu, backend } = await makeUnit({ params: { writeCacheEnabled: false } });
    const list = unmapList([[0n, 8]]);
    await run(lu, unmapCdb(list.length), { dataOut: list });
    expect(backend.flushes).toBe(1);
  });

  it('arbitrary UNMAP lists never discard outside the medium', async () => {
    const { lu, backend } = await makeUnit();
    const lba = fc.oneof(fc.bigInt({ min: 0n, max: 2100n }), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }));
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(lba, fc.integer({ min: 0, max: 0xffffffff })), { maxLength: 6 }), async (ranges) => {
        const list = unmapList(ranges);
        const r = await run(lu, unmapCdb(list.length), { dataOut: list });
        expect([Status.GOOD, Status.CHECK_CONDITION]).toContain(r.status);
      }),
      { numRuns: 1000 },
    );
    for (const [offset, length] of backend.discards) expect(offset + length).toBeLessThanOrEqual(1 << 20);
  });
});

describe('WRITE SAME (SBC-3 §5.41, §5.42)', () => {
  it('repeats a non-zero block', async () => {
    const { lu, backend } = await makeUnit();
    const block = pattern(1, 512, 0x5a);
    expect(await run(lu, cdb10(0x41, 100, 300), { dataOut: block })).toEqual({ status: Status.GOOD, dataOutConsumed: 512 });
    const back = (await run(lu, cdb10(0x28, 99, 302))).dataIn!;
    expect(back.subarray(0, 512).every((b) => b === 0)).toBe(true);
    for (let i = 1; i <= 300; i++) expect(back.subarray(i * 512, (i + 1) * 512)).toEqual(block);
    expect(back.subarray(301 * 512).every((b) => b === 0)).toBe(true);
    expect(backend.discards).toEqual([]);
    expect(lu.stats().bytesWritten).toBe(300 * 512);
  });

  it('all-zero block: writeZeroes; with UNMAP: discard', async () => {
    const { lu, backend } = await makeUnit();
    const zero = Buffer.alloc(512);
    await run(lu, cdb10(0x41, 8, 16), { dataOut: zero });
    expect(backend.zeroedRanges).toEqual([[4096, 8192]]);
    await run(lu, cdb16(0x93, 64n, 8, 0x08), { dataOut: zero });
    expect(backend.discards).toEqual([[32768, 4096]]);
  });

  it('UNMAP with non-zero data writes the data', async () => {
    const { lu, backend } = await makeUnit();
    const block = pattern(1, 512, 1);
    await run(lu, cdb10(0x41, 0, 2, 0x08), { dataOut: block });
    expect(backend.discards).toEqual([]);
    expect((await run(lu, cdb10(0x28, 1, 1))).dataIn).toEqual(block);
  });

  it('NDOB writes zeros without a data-out buffer', async () => {
    const { lu, backend } = await makeUnit();
    await run(lu, cdb10(0x2a, 4, 1), { dataOut: pattern(1, 512, 9) });
    expect(await run(lu, cdb16(0x93, 4n, 1, 0x01))).toEqual({ status: Status.GOOD, dataOutConsumed: 0 });
    expect((await run(lu, cdb10(0x28, 4, 1))).dataIn!.every((b) => b === 0)).toBe(true);
    expect(backend.zeroedRanges.length).toBe(1);
    expect(senseOf(await run(lu, cdb10(0x41, 4, 1, 0x01), { dataOut: Buffer.alloc(512) }))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 1, bit: 0 } });
  });

  it('refuses zero blocks (WSNZ) and counts above MAXIMUM WRITE SAME LENGTH', async () => {
    const { lu, backend } = await makeUnit({ sizeBytes: 2 ** 44, options: { maxWriteSameBytes: 1 << 20 } });
    const block = pattern(1, 512);
    expect(senseOf(await run(lu, cdb10(0x41, 0, 0), { dataOut: block }))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 7 } });
    expect(senseOf(await run(lu, cdb16(0x93, 0n, 2049), { dataOut: block }))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 10 } });
    expect(codeOf(await run(lu, cdb16(0x93, 0n, 0xffffffff, 0x08), { dataOut: Buffer.alloc(512) }))).toEqual(expected(senseInvalidFieldInCdb));
    expect(backend.discards.length + backend.zeroedRanges.length + backend.cachedWrites).toBe(0);
  });

  it('checks the range with bigints and the data-out length', async () => {
    const { lu } = await makeUnit();
    expect(codeOf(await run(lu, cdb16(0x93, 0xffff_ffff_ffff_ffffn, 2), { dataOut: Buffer.alloc(512) }))).toEqual(expected(senseLbaOutOfRange));
    expect(codeOf(await run(lu, cdb16(0x93, 2047n, 2), { dataOut: Buffer.alloc(512) }))).toEqual(expected(senseLbaOutOfRange));
    expect(senseOf(await run(lu, cdb10(0x41, 0, 1), { dataOut: Buffer.alloc(100) }))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 7 } });
  });

  it('refuses read-only LUs, WRPROTECT, ANCHOR and PBDATA/LBDATA', async () => {
    const ro = (await makeUnit({ params: { readOnly: true } })).lu;
    expect(codeOf(await run(ro, cdb10(0x41, 0, 1), { dataOut: Buffer.alloc(512) }))).toEqual(expected(senseWriteProtected));
    const { lu } = await makeUnit();
    for (const [flags, bit] of [[0x20, 7], [0x10, 4], [0x04, 2], [0x02, 2]] as const) {
      expect(senseOf(await run(lu, cdb10(0x41, 0, 1, flags), { dataOut: Buffer.alloc(512) }))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 1, bit } });
    }
  });

  it('writes durably when the write cache is off', async () => {
    const { lu, backend } = await makeUnit({ params: { writeCacheEnabled: false } });
    await run(lu, cdb10(0x41, 0, 4), { dataOut: pattern(1, 512, 3) });
    expect(backend.fuaWrites).toBe(1);
    await run(lu, cdb10(0x41, 0, 4), { dataOut: Buffer.alloc(512) });
    expect(backend.flushes).toBe(1);
  });
});
