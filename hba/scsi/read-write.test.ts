import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  senseInvalidFieldInCdb,
  senseLbaOutOfRange,
  senseMediumErrorRead,
  senseMediumErrorWrite,
  senseMiscompareDuringVerify,
  senseWriteProtected,
} from './sense.ts';
import { cdb10, cdb16, codeOf, expected, makeUnit, pattern, run, senseOf } from './testing.ts';
import { Status } from './types.ts';

const READ_16 = 0x88;
const WRITE_16 = 0x8a;
const FUA = 0x08;
const MiB = 1 << 20;

describe('READ/WRITE round trips (SBC-3 §5.8–5.14, §5.32–5.37)', () => {
  it('writes with every variant and reads back with every variant', async () => {
    const { lu } = await makeUnit();
    const data = pattern(4, 512, 7);
    const w6 = Buffer.from([0x0a, 0, 0, 8, 4, 0]);
    expect((await run(lu, w6, { dataOut: data })).status).toBe(Status.GOOD);
    const w12 = Buffer.alloc(12);
    w12[0] = 0xaa;
    w12.writeUInt32BE(16, 2);
    w12.writeUInt32BE(4, 6);
    expect((await run(lu, w12, { dataOut: data })).status).toBe(Status.GOOD);
    expect((await run(lu, cdb10(0x2a, 24, 4), { dataOut: data })).status).toBe(Status.GOOD);
    expect((await run(lu, cdb16(WRITE_16, 32n, 4), { dataOut: data })).status).toBe(Status.GOOD);
    for (const lba of [8, 16, 24, 32]) {
      expect((await run(lu, Buffer.from([0x08, 0, 0, lba, 4, 0]))).dataIn).toEqual(data);
      expect((await run(lu, cdb10(0x28, lba, 4))).dataIn).toEqual(data);
      const r12 = Buffer.alloc(12);
      r12[0] = 0xa8;
      r12.writeUInt32BE(lba, 2);
      r12.writeUInt32BE(4, 6);
      expect((await run(lu, r12)).dataIn).toEqual(data);
      expect((await run(lu, cdb16(READ_16, BigInt(lba), 4))).dataIn).toEqual(data);
    }
  });

  it('READ(6) and WRITE(6) with TRANSFER LENGTH 0 move 256 blocks', async () => {
    const { lu } = await makeUnit();
    const data = pattern(256, 512, 3);
    const w = await run(lu, Buffer.from([0x0a, 0x00, 0x00, 0x10, 0, 0]), { dataOut: data });
    expect(w).toMatchObject({ status: Status.GOOD, dataOutConsumed: 256 * 512 });
    const r = await run(lu, Buffer.from([0x08, 0x00, 0x00, 0x10, 0, 0]));
    expect(r.dataIn?.length).toBe(256 * 512);
    expect(r.dataIn).toEqual(data);
  });

  it('READ(6) uses a 21-bit LBA', async () => {
    const { lu } = await makeUnit({ sizeBytes: 1 << 30 });
    const data = pattern(1, 512, 9);
    await run(lu, cdb10(0x2a, 0x1fffff, 1), { dataOut: data });
    const r = await run(lu, Buffer.from([0x08, 0xff, 0xff, 0xff, 1, 0])); // top bits of byte 1 are ignored
    expect(r.dataIn).toEqual(data);
  });

  it('TRANSFER LENGTH 0 on READ(10)/WRITE(10) transfers nothing and is GOOD', async () => {
    const { lu, backend } = await makeUnit();
    expect(await run(lu, cdb10(0x28, 0, 0))).toEqual({ status: Status.GOOD });
    expect(await run(lu, cdb10(0x2a, 0, 0))).toEqual({ status: Status.GOOD, dataOutConsumed: 0 });
    expect(backend.cachedWrites + backend.fuaWrites).toBe(0);
    expect(lu.stats()).toEqual({ reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0 });
  });

  it('truncates data-in to the initiator buffer', async () => {
    const { lu } = await makeUnit();
    const r = await run(lu, cdb10(0x28, 0, 8), { dataInCapacity: 1000 });
    expect(r.dataIn?.length).toBe(1000);
  });

  it('counts reads and writes per LU', async () => {
    const { lu } = await makeUnit();
    await run(lu, cdb10(0x2a, 0, 2), { dataOut: pattern(2, 512) });
    await run(lu, cdb10(0x28, 0, 3));
    await run(lu, cdb10(0x28, 0, 1));
    expect(lu.stats()).toEqual({ reads: 2, writes: 1, bytesRead: 2048, bytesWritten: 1024 });
  });
});

describe('durability: FUA and WCE (SBC-3 §4.15)', () => {
  it('WCE=1: plain writes are cached, FUA writes are durable', async () => {
    const { lu, backend } = await makeUnit();
    await run(lu, cdb10(0x2a, 0, 1), { dataOut: pattern(1, 512) });
    await run(lu, cdb10(0x2a, 0, 1, FUA), { dataOut: pattern(1, 512) });
    await run(lu, cdb16(WRITE_16, 0n, 1, FUA), { dataOut: pattern(1, 512) });
    expect([backend.cachedWrites, backend.fuaWrites]).toEqual([1, 2]);
  });

  it('WCE=0: every write is durable before GOOD', async () => {
    const { lu, backend } = await makeUnit({ params: { writeCacheEnabled: false } });
    await run(lu, cdb10(0x2a, 0, 1), { dataOut: pattern(1, 512) });
    await run(lu, Buffer.from([0x0a, 0, 0, 0, 1, 0]), { dataOut: pattern(1, 512) });
    expect([backend.cachedWrites, backend.fuaWrites]).toEqual([0, 2]);
  });
});

describe('READ/WRITE errors', () => {
  it('refuses writes to a read-only LU with DATA PROTECT / WRITE PROTECTED', async () => {
    const { lu, backend } = await makeUnit({ params: { readOnly: true } });
    for (const cdb of [cdb10(0x2a, 0, 1), cdb16(WRITE_16, 0n, 1), Buffer.from([0x0a, 0, 0, 0, 1, 0]), cdb10(0x2e, 0, 1)]) {
      expect(codeOf(await run(lu, cdb, { dataOut: pattern(1, 512) }))).toEqual(expected(senseWriteProtected));
    }
    expect(backend.cachedWrites + backend.fuaWrites).toBe(0);
    expect((await run(lu, cdb10(0x28, 0, 1))).status).toBe(Status.GOOD);
  });

  it('refuses RDPROTECT/WRPROTECT != 0 pointing at byte 1 bit 7', async () => {
    const { lu } = await makeUnit();
    const s = senseOf(await run(lu, cdb10(0x28, 0, 1, 0x20)));
    expect(s).toMatchObject({ asc: 0x24, fieldPointer: { inCdb: true, byte: 1, bit: 7 } });
    expect(codeOf(await run(lu, cdb16(WRITE_16, 0n, 1, 0x40), { dataOut: pattern(1, 512) }))).toEqual(expected(senseInvalidFieldInCdb));
  });

  it('refuses transfers above MAXIMUM TRANSFER LENGTH before touching the backend', async () => {
    const { lu } = await makeUnit({ sizeBytes: 1 << 30, options: { maxTransferBytes: MiB } });
    const s = senseOf(await run(lu, cdb16(READ_16, 0n, 2049)));
    expect(s).toMatchObject({ key: 5, asc: 0x24, fieldPointer: { inCdb: true, byte: 10 } });
    expect((await run(lu, cdb16(READ_16, 0n, 2048))).status).toBe(Status.GOOD);
  });

  it('refuses a data-out buffer shorter than the transfer, consuming nothing', async () => {
    const { lu, backend } = await makeUnit();
    const r = await run(lu, cdb10(0x2a, 0, 2), { dataOut: pattern(1, 512) });
    expect(senseOf(r)).toMatchObject({ asc: 0x24, fieldPointer: { inCdb: true, byte: 7 } });
    expect(backend.cachedWrites).toBe(0);
  });

  it('consumes only what the CDB asks from a longer data-out buffer', async () => {
    const { lu } = await makeUnit();
    const r = await run(lu, cdb10(0x2a, 0, 1), { dataOut: pattern(3, 512) });
    expect(r).toEqual({ status: Status.GOOD, dataOutConsumed: 512 });
  });

  it('maps backend failures to MEDIUM ERROR', async () => {
    const errors: string[] = [];
    const { lu, backend } = await makeUnit({ options: { onBackendError: (_e, name) => errors.push(name) } });
    backend.failOn('read');
    expect(codeOf(await run(lu, cdb10(0x28, 0, 1)))).toEqual(expected(senseMediumErrorRead));
    backend.failOn('write');
    expect(codeOf(await run(lu, cdb10(0x2a, 0, 1), { dataOut: pattern(1, 512) }))).toEqual(expected(senseMediumErrorWrite));
    expect(errors).toEqual(['READ(10)', 'WRITE(10)']);
  });

  it('checks ranges at the edge of the capacity', async () => {
    const { lu } = await makeUnit(); // 2048 blocks
    expect((await run(lu, cdb10(0x28, 2047, 1))).status).toBe(Status.GOOD);
    expect((await run(lu, cdb10(0x28, 2048, 0))).status).toBe(Status.GOOD);
    expect(codeOf(await run(lu, cdb10(0x28, 2047, 2)))).toEqual(expected(senseLbaOutOfRange));
    expect(codeOf(await run(lu, cdb10(0x28, 2049, 0)))).toEqual(expected(senseLbaOutOfRange));
    expect(codeOf(await run(lu, cdb16(READ_16, 0xffff_ffff_ffff_ffffn, 2)))).toEqual(expected(senseLbaOutOfRange));
  });
});

describe('LBA range property (overflow-safe at 2^64)', () => {
  const blocks = 2048n; // the 1 MiB test disk in 512-byte blocks
  const near = (anchor: bigint) => fc.bigInt({ min: -4n, max: 4n }).map((d) => anchor + d).filter((v) => v >= 0n && v < 1n << 64n);
  const lba = fc.oneof(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), near(0n), near(blocks), near(1n << 32n), near((1n << 64n) - 1n));
  const length = fc.oneof(fc.integer({ min: 0, max: 16 }), fc.integer({ min: 0, max: 0xffff_ffff }), fc.constantFrom(0xffff_ffff, 2048, 2049));

  it('READ(16) is GOOD exactly when lba + length <= capacity, never wrapping', async () => {
    const { lu } = await makeUnit({ options: { maxTransferBytes: 1 << 30 } });
    await fc.assert(
      fc.asyncProperty(lba, length, async (l, n) => {
        const r = await run(lu, cdb16(READ_16, l, n), { dataInCapacity: 0 });
        const fits = l + BigInt(n) <= blocks; // exact, bigint
        if (BigInt(n) > (1n << 30n) / 512n) expect(codeOf(r)).toEqual(expected(senseInvalidFieldInCdb));
        else if (fits) expect(r.status).toBe(Status.GOOD);
        else expect(codeOf(r)).toEqual(expected(senseLbaOutOfRange));
      }),
      { numRuns: 2000 },
    );
  });

  it('WRITE(16) never writes outside the medium', async () => {
    const { lu, backend } = await makeUnit();
    await fc.assert(
      fc.asyncProperty(lba, fc.integer({ min: 0, max: 8 }), async (l, n) => {
        const r = await run(lu, cdb16(WRITE_16, l, n), { dataOut: pattern(n, 512) });
        expect(r.status === Status.GOOD).toBe(l + BigInt(n) <= blocks);
      }),
      { numRuns: 1000 },
    );
    expect(backend.size()).toBe(1 << 20);
  });
});

describe('VERIFY and WRITE AND VERIFY (SBC-3 §5.29, §5.38)', () => {
  it('BYTCHK=0 is GOOD after the range check, without reading', async () => {
    const { lu, backend } = await makeUnit();
    backend.failOn('read');
    expect((await run(lu, cdb10(0x2f, 0, 2048))).status).toBe(Status.GOOD);
    expect(codeOf(await run(lu, cdb16(0x8f, 2040n, 9)))).toEqual(expected(senseLbaOutOfRange));
  });

  it('BYTCHK=1 compares data-out with the medium and reports the first miscompare offset', async () => {
    const { lu } = await makeUnit();
    const data = pattern(2, 512, 5);
    await run(lu, cdb10(0x2a, 10, 2), { dataOut: data });
    expect(await run(lu, cdb10(0x2f, 10, 2, 0x02), { dataOut: data })).toEqual({ status: Status.GOOD, dataOutConsumed: 1024 });
    const wrong = Buffer.from(data);
    wrong[700] = wrong[700]! ^ 1;
    const s = senseOf(await run(lu, cdb16(0x8f, 10n, 2, 0x02), { dataOut: wrong }));
    expect(s).toMatchObject({ key: senseMiscompareDuringVerify.key, asc: 0x1d, information: 700 });
  });

  it('BYTCHK=3 compares one block against each block; BYTCHK=2 is refused', async () => {
    const { lu } = await makeUnit();
    const block = pattern(1, 512, 0x42);
    await run(lu, cdb10(0x2a, 0, 1), { dataOut: block });
    await run(lu, cdb10(0x2a, 1, 1), { dataOut: block });
    expect((await run(lu, cdb10(0x2f, 0, 2, 0x06), { dataOut: block })).status).toBe(Status.GOOD);
    expect(senseOf(await run(lu, cdb10(0x2f, 1, 2, 0x06), { dataOut: block }))).toMatchObject({ asc: 0x1d, information: 512 });
    expect(senseOf(await run(lu, cdb10(0x2f, 0, 1, 0x04), { dataOut: block }))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 1, bit: 2 } });
  });

  it('WRITE AND VERIFY writes durably', async () => {
    const { lu, backend } = await makeUnit();
    const data = pattern(1, 512, 8);
    expect((await run(lu, cdb10(0x2e, 3, 1), { dataOut: data })).status).toBe(Status.GOOD);
    expect(backend.fuaWrites).toBe(1);
    expect((await run(lu, cdb10(0x28, 3, 1))).dataIn).toEqual(data);
  });
});
