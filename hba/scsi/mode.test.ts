import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  senseParameterListLengthError,
  senseSavingParametersNotSupported,
} from './sense.ts';
import { cdb10, codeOf, expected, makeUnit, pattern, run, senseOf } from './testing.ts';
import { Status } from './types.ts';

function modeSense6(page: number, opts: { dbd?: boolean; pc?: number; subpage?: number; allocation?: number } = {}): number[] {
  return [0x1a, opts.dbd ? 0x08 : 0, ((opts.pc ?? 0) << 6) | page, opts.subpage ?? 0, opts.allocation ?? 255, 0];
}

function modeSense10(page: number, opts: { dbd?: boolean; llbaa?: boolean; pc?: number; allocation?: number } = {}): number[] {
  const a = opts.allocation ?? 0xffff;
  return [0x5a, (opts.dbd ? 0x08 : 0) | (opts.llbaa ? 0x10 : 0), ((opts.pc ?? 0) << 6) | page, 0, 0, 0, 0, a >> 8, a & 0xff, 0];
}

function modeSelect6(length: number, flags = 0x10): number[] {
  return [0x15, flags, 0, 0, length, 0];
}

function modeSelect10(length: number, flags = 0x10): number[] {
  return [0x55, flags, 0, 0, 0, 0, 0, length >> 8, length & 0xff, 0];
}

/** The current caching page as MODE SENSE(6) with DBD returns it. */
async function cachingPage(lu: Parameters<typeof run>[0]): Promise<Buffer> {
  const d = (await run(lu, modeSense6(0x08, { dbd: true }))).dataIn!;
  return Buffer.from(d.subarray(4));
}

/** A MODE SELECT(6) parameter list: 4-byte header (+ descriptor) + pages. */
function list6(pages: Buffer[], descriptor?: Buffer): Buffer {
  const header = Buffer.from([0, 0, 0, descriptor?.length ?? 0]);
  return Buffer.concat([header, descriptor ?? Buffer.alloc(0), ...pages]);
}

describe('MODE SENSE (SPC-4 §6.11, §6.12)', () => {
  it('MODE SENSE(6) caching page with short block descriptor, WCE and DPOFUA', async () => {
    const { lu } = await makeUnit();
    const d = (await run(lu, modeSense6(0x08))).dataIn!;
    expect(d[0]).toBe(d.length - 1);
    expect(d[2]).toBe(0x10); // DPOFUA, not WP
    expect(d[3]).toBe(8);
    expect(d.readUInt32BE(4)).toBe(2048);
    expect(d.readUIntBE(9, 3)).toBe(512);
    expect(d[12]).toBe(0x08);
    expect(d[13]).toBe(0x12);
    expect(d[14]! & 0x05).toBe(0x04); // WCE=1, RCD=0
  });

  it('sets WP for a read-only LU', async () => {
    const { lu } = await makeUnit({ params: { readOnly: true } });
    expect((await run(lu, modeSense6(0x3f))).dataIn![2]! & 0x80).toBe(0x80);
    expect((await run(lu, modeSense10(0x3f))).dataIn![3]! & 0x80).toBe(0x80);
  });

  it('DBD drops the block descriptor', async () => {
    const { lu } = await makeUnit();
    const d = (await run(lu, modeSense6(0x08, { dbd: true }))).dataIn!;
    expect(d[3]).toBe(0);
    expect(d.length).toBe(4 + 20);
  });

  it('MODE SENSE(10) with LLBAA gives a 16-byte descriptor and LONGLBA', async () => {
    const { lu } = await makeUnit({ sizeBytes: 2 ** 42 });
    const d = (await run(lu, modeSense10(0x0a, { llbaa: true }))).dataIn!;
    expect(d.readUInt16BE(0)).toBe(d.length - 2);
    expect(d[4]! & 1).toBe(1);
    expect(d.readUInt16BE(6)).toBe(16);
    expect(d.readBigUInt64BE(8)).toBe(2n ** 42n / 512n);
    expect(d.readUInt32BE(20)).toBe(512);
    expect(d[24]).toBe(0x0a);
    const short = (await run(lu, modeSense10(0x0a))).dataIn!;
    expect(short.readUInt16BE(6)).toBe(8);
    expect(short.readUInt32BE(8)).toBe(0xffffffff); // capacity beyond 32 bits
  });

  it('page 3Fh returns caching then control', async () => {
    const { lu } = await makeUnit();
    const d = (await run(lu, modeSense6(0x3f, { dbd: true }))).dataIn!;
    expect(d.length).toBe(4 + 20 + 12);
    expect(d[4]).toBe(0x08);
    expect(d[24]).toBe(0x0a);
    expect((await run(lu, modeSense6(0x3f, { dbd: true, subpage: 0xff }))).dataIn).toEqual(d);
  });

  it('changeable values show only WCE; default values follow the params', async () => {
    const { lu } = await makeUnit({ params: { writeCacheEnabled: false } });
    const changeable = (await run(lu, modeSense6(0x3f, { dbd: true, pc: 1 }))).dataIn!;
    expect(changeable[6]).toBe(0x04);
    expect(changeable.subarray(7, 24).every((b) => b === 0)).toBe(true);
    expect(changeable.subarray(26).every((b) => b === 0)).toBe(true);
    const defaults = (await run(lu, modeSense6(0x08, { dbd: true, pc: 2 }))).dataIn!;
    expect(defaults[6]! & 0x04).toBe(0);
  });

  it('saved values: SAVING PARAMETERS NOT SUPPORTED', async () => {
    const { lu } = await makeUnit();
    expect(codeOf(await run(lu, modeSense6(0x08, { pc: 3 })))).toEqual(expected(senseSavingParametersNotSupported));
  });

  it('refuses unknown pages and subpages', async () => {
    const { lu } = await makeUnit();
    expect(senseOf(await run(lu, modeSense6(0x1c)))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 2, bit: 5 } });
    expect(senseOf(await run(lu, modeSense6(0x08, { subpage: 1 })))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 3 } });
  });

  it('honours the allocation length', async () => {
    const { lu } = await makeUnit();
    expect((await run(lu, modeSense6(0x3f, { allocation: 4 }))).dataIn!.length).toBe(4);
  });
});

describe('MODE SELECT (SPC-4 §6.9, §6.10)', () => {
  it('turns WCE off the way Linux sd does, and writes become durable', async () => {
    const { lu, backend } = await makeUnit();
    const page = await cachingPage(lu);
    page[2] = page[2]! & ~0x04;
    const list = list6([page]);
    expect(await run(lu, modeSelect6(list.length), { dataOut: list })).toEqual({ status: Status.GOOD, dataOutConsumed: list.length });
    expect(lu.writeCacheEnabled).toBe(false);
    expect((await cachingPage(lu))[2]! & 0x04).toBe(0);
    await run(lu, cdb10(0x2a, 0, 1), { dataOut: pattern(1, 512) });
    expect(backend.fuaWrites).toBe(1);
    // and back on, with MODE SELECT(10) and a block descriptor that changes nothing
    page[2] = page[2]! | 0x04;
    const descriptor = Buffer.alloc(8);
    descriptor.writeUInt32BE(2048, 0);
    descriptor.writeUIntBE(512, 5, 3);
    const list10 = Buffer.concat([Buffer.from([0, 0, 0, 0, 0, 0, 0, 8]), descriptor, page]);
    expect((await run(lu, modeSelect10(list10.length), { dataOut: list10 })).status).toBe(Status.GOOD);
    expect(lu.writeCacheEnabled).toBe(true);
  });

  it('requires PF=1 and refuses SP=1', async () => {
    const { lu } = await makeUnit();
    const list = list6([await cachingPage(lu)]);
    expect(senseOf(await run(lu, modeSelect6(list.length, 0x00), { dataOut: list }))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 1, bit: 4 } });
    expect(senseOf(await run(lu, modeSelect6(list.length, 0x11), { dataOut: list }))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 1, bit: 0 } });
  });

  it('PARAMETER LIST LENGTH 0 is GOOD and changes nothing', async () => {
    const { lu } = await makeUnit();
    expect((await run(lu, modeSelect6(0))).status).toBe(Status.GOOD);
    expect(lu.writeCacheEnabled).toBe(true);
  });

  it('refuses a change to a non-changeable bit with a pointer to it', async () => {
    const { lu } = await makeUnit();
    const page = await cachingPage(lu);
    page[2] = page[2]! | 0x01; // RCD
    const list = list6([page]);
    const s = senseOf(await run(lu, modeSelect6(list.length), { dataOut: list }));
    expect(s).toMatchObject({ key: 5, asc: 0x26, fieldPointer: { inCdb: false, byte: 4 + 2, bit: 0 } });
  });

  it('validates every page before applying any', async () => {
    const { lu } = await makeUnit();
    const caching = await cachingPage(lu);
    caching[2] = 0; // WCE off: valid on its own
    const control = Buffer.from((await run(lu, modeSense6(0x0a, { dbd: true }))).dataIn!.subarray(4));
    control[2] = control[2]! | 0x04; // D_SENSE: not changeable
    const list = list6([caching, control]);
    const s = senseOf(await run(lu, modeSelect6(list.length), { dataOut: list }));
    expect(s).toMatchObject({ asc: 0x26, fieldPointer: { byte: 4 + 20 + 2, bit: 2 } });
    expect(lu.writeCacheEnabled).toBe(true);
  });

  it('accepts an unchanged control page', async () => {
    const { lu } = await makeUnit();
    const control = Buffer.from((await run(lu, modeSense6(0x0a, { dbd: true }))).dataIn!.subarray(4));
    const list = list6([control]);
    expect((await run(lu, modeSelect6(list.length), { dataOut: list })).status).toBe(Status.GOOD);
  });

  it('refuses a block descriptor that changes the block size or capacity', async () => {
    const { lu } = await makeUnit();
    const page = await cachingPage(lu);
    const descriptor = Buffer.alloc(8);
    descriptor.writeUIntBE(4096, 5, 3);
    let list = list6([page], descriptor);
    expect(senseOf(await run(lu, modeSelect6(list.length), { dataOut: list }))).toMatchObject({ asc: 0x26, fieldPointer: { byte: 4 + 5 } });
    descriptor.writeUIntBE(512, 5, 3);
    descriptor.writeUInt32BE(100, 0);
    list = list6([page], descriptor);
    expect(senseOf(await run(lu, modeSelect6(list.length), { dataOut: list }))).toMatchObject({ asc: 0x26, fieldPointer: { byte: 4 } });
    descriptor.writeUInt32BE(0, 0);
    list = list6([page], descriptor);
    expect((await run(lu, modeSelect6(list.length), { dataOut: list })).status).toBe(Status.GOOD);
  });

  it('refuses bad descriptor lengths, unknown pages, wrong page lengths, subpage format', async () => {
    const { lu } = await makeUnit();
    const page = await cachingPage(lu);
    const cases: [Buffer, number][] = [
      [Buffer.concat([Buffer.from([0, 0, 0, 4]), Buffer.alloc(4)]), 3],
      [list6([Buffer.from([0x1c, 0x0a, ...Buffer.alloc(10)])]), 4],
      [list6([Buffer.concat([Buffer.from([0x08, 0x10]), page.subarray(2, 18)])]), 5],
      [list6([Buffer.from([0x48, 0x00, 0x00, 0x10])]), 4],
      [Buffer.from([0, 5, 0, 0]), 1], // medium type
    ];
    for (const [list, byte] of cases) {
      const s = senseOf(await run(lu, modeSelect6(list.length), { dataOut: list }));
      expect(s).toMatchObject({ asc: 0x26, fieldPointer: { inCdb: false, byte } });
    }
  });

  it('PARAMETER LIST LENGTH ERROR for lists cut short', async () => {
    const { lu } = await makeUnit();
    const page = await cachingPage(lu);
    for (const list of [Buffer.from([0, 0, 0]), list6([page]).subarray(0, 10), Buffer.from([0, 0, 0, 8, 0, 0, 0, 0]), Buffer.from([0, 0, 0, 0, 0x08])]) {
      expect(codeOf(await run(lu, modeSelect6(list.length), { dataOut: list }))).toEqual(expected(senseParameterListLengthError));
    }
  });

  it('refuses a data-out buffer shorter than PARAMETER LIST LENGTH', async () => {
    const { lu } = await makeUnit();
    const list = list6([await cachingPage(lu)]);
    expect(senseOf(await run(lu, modeSelect6(list.length + 4), { dataOut: list }))).toMatchObject({ asc: 0x24, fieldPointer: { inCdb: true, byte: 4 } });
  });

  it('arbitrary parameter lists never crash, and WCE changes only on GOOD', async () => {
    const { lu } = await makeUnit();
    const page = await cachingPage(lu);
    const mutated = fc.tuple(fc.integer({ min: 0, max: 23 }), fc.integer({ min: 0, max: 255 })).map(([i, v]) => {
      const l = list6([page]);
      l[i] = v;
      return l;
    });
    await fc.assert(
      fc.asyncProperty(fc.oneof(mutated, fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a))), fc.boolean(), async (list, ten) => {
        const before = lu.writeCacheEnabled;
        const r = await run(lu, ten ? modeSelect10(list.length) : modeSelect6(list.length), { dataOut: list });
        expect([Status.GOOD, Status.CHECK_CONDITION]).toContain(r.status);
        if (r.status !== Status.GOOD) expect(lu.writeCacheEnabled).toBe(before);
      }),
      { numRuns: 1500 },
    );
  });
});
