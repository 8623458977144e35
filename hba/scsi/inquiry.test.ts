import { describe, expect, it } from 'vitest';
import { PRODUCT_REVISION, standardInquiryData } from './inquiry.ts';
import { senseInvalidFieldInCdb } from './sense.ts';
import { codeOf, expected, makeUnit, run, senseOf } from './testing.ts';
import { Status } from './types.ts';

function inquiry(evpd: boolean, page: number, allocation = 0xffff): number[] {
  return [0x12, evpd ? 1 : 0, page, allocation >> 8, allocation & 0xff, 0];
}

/** Splits a VPD 83h page into its designation descriptors. */
function designators(page: Buffer): { codeSet: number; association: number; type: number; value: Buffer }[] {
  const out = [];
  const end = 4 + page.readUInt16BE(2);
  for (let o = 4; o < end;) {
    const length = page[o + 3]!;
    out.push({ codeSet: page[o]! & 0x0f, association: (page[o + 1]! >> 4) & 3, type: page[o + 1]! & 0x0f, value: page.subarray(o + 4, o + 4 + length) });
    o += 4 + length;
  }
  return out;
}

describe('standard INQUIRY (SPC-4 §6.6.2)', () => {
  it('describes a disk: SPC-4, HiSup, format 2, CmdQue, vendor VHBA, product and revision', async () => {
    const { lu } = await makeUnit({ params: { product: 'MY-DISK' } });
    const d = (await run(lu, inquiry(false, 0))).dataIn!;
    expect(d[0]).toBe(0x00);
    expect(d[1]).toBe(0x00);
    expect(d[2]).toBe(0x06);
    expect(d[3]).toBe(0x12);
    expect(d[4]).toBe(d.length - 5);
    expect(d[7]).toBe(0x02);
    expect(d.toString('latin1', 8, 16)).toBe('VHBA    ');
    expect(d.toString('latin1', 16, 32)).toBe('MY-DISK         ');
    expect(d.toString('latin1', 32, 36)).toBe(PRODUCT_REVISION);
    expect(PRODUCT_REVISION).toHaveLength(4);
  });

  it('defaults the product to VIRTUAL-DISK', () => {
    expect(standardInquiryData(undefined).toString('latin1', 16, 32)).toBe('VIRTUAL-DISK    ');
  });

  it('honours the allocation length, including 0', async () => {
    const { lu } = await makeUnit();
    expect((await run(lu, inquiry(false, 0, 5))).dataIn!.length).toBe(5);
    expect((await run(lu, inquiry(false, 0, 0))).dataIn!.length).toBe(0);
    expect((await run(lu, inquiry(false, 0, 36), { dataInCapacity: 20 })).dataIn!.length).toBe(20);
  });

  it('refuses EVPD=0 with a page code, and CMDDT', async () => {
    const { lu } = await makeUnit();
    expect(senseOf(await run(lu, inquiry(false, 0x80)))).toMatchObject({ asc: 0x24, fieldPointer: { inCdb: true, byte: 2 } });
    expect(senseOf(await run(lu, [0x12, 0x02, 0, 0, 36, 0]))).toMatchObject({ asc: 0x24, fieldPointer: { byte: 1, bit: 1 } });
  });
});

describe('VPD pages', () => {
  it('00h lists the supported pages in ascending order', async () => {
    const { lu } = await makeUnit();
    const d = (await run(lu, inquiry(true, 0x00))).dataIn!;
    expect([...d]).toEqual([0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
  });

  it('80h carries the serial', async () => {
    const { lu } = await makeUnit();
    const d = (await run(lu, inquiry(true, 0x80))).dataIn!;
    expect(d[1]).toBe(0x80);
    expect(d.toString('latin1', 4, 4 + d.readUInt16BE(2))).toBe('SERIAL0001');
  });

  it('83h: NAA (8 bytes), T10 vendor ID with the serial, relative target port', async () => {
    const { lu } = await makeUnit();
    const d = (await run(lu, inquiry(true, 0x83))).dataIn!;
    const [naa, t10, port] = designators(d);
    expect(naa).toMatchObject({ codeSet: 1, association: 0, type: 3 });
    expect(naa!.value.toString('hex')).toBe('5000c50012345678');
    expect(t10).toMatchObject({ codeSet: 2, association: 0, type: 1 });
    expect(t10!.value.toString('latin1')).toBe('VHBA    SERIAL0001');
    expect(port).toMatchObject({ codeSet: 1, association: 1, type: 4 });
    expect(port!.value.readUInt32BE(0)).toBe(1);
  });

  it('83h: a 16-byte NAA 6 designator', async () => {
    const wwn = '6001405abcdef0123456789abcdef012';
    const { lu } = await makeUnit({ params: { wwn } });
    const [naa] = designators((await run(lu, inquiry(true, 0x83))).dataIn!);
    expect(naa!.value.length).toBe(16);
    expect(naa!.value.toString('hex')).toBe(wwn);
  });

  it('B0h: block limits in logical blocks', async () => {
    const { lu } = await makeUnit({ params: { logicalBlockSize: 4096, physicalBlockSize: 4096 }, options: { maxTransferBytes: 8 << 20 } });
    const d = (await run(lu, inquiry(true, 0xb0))).dataIn!;
    expect(d.readUInt16BE(2)).toBe(0x3c);
    expect(d[4]! & 1).toBe(1); // WSNZ
    expect(d.readUInt32BE(8)).toBe(2048); // MAXIMUM TRANSFER LENGTH
    expect(d.readUInt32BE(20)).toBe((1 << 30) / 4096); // MAXIMUM UNMAP LBA COUNT
    expect(d.readUInt32BE(24)).toBe(256); // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
    expect(d.readUInt32BE(28)).toBe(1); // OPTIMAL UNMAP GRANULARITY
    expect(d.readBigUInt64BE(36)).toBe(BigInt((1 << 30) / 4096)); // MAXIMUM WRITE SAME LENGTH
  });

  it('B0h: unmap granularity is one physical block for 512e', async () => {
    const { lu } = await makeUnit();
    const d = (await run(lu, inquiry(true, 0xb0))).dataIn!;
    expect(d.readUInt16BE(6)).toBe(8);
    expect(d.readUInt32BE(28)).toBe(8);
  });

  it('B1h: non-rotating medium', async () => {
    const { lu } = await makeUnit();
    const d = (await run(lu, inquiry(true, 0xb1))).dataIn!;
    expect(d.readUInt16BE(4)).toBe(1);
  });

  it('B2h: thin provisioning bits, or none when fully provisioned', async () => {
    const thin = (await run((await makeUnit()).lu, inquiry(true, 0xb2))).dataIn!;
    expect(thin[5]).toBe(0xe4); // LBPU | LBPWS | LBPWS10 | LBPRZ
    expect(thin[6]! & 7).toBe(2);
    const full = (await run((await makeUnit({ params: { thinProvisioned: false } })).lu, inquiry(true, 0xb2))).dataIn!;
    expect(full[5]).toBe(0);
    expect(full[6]! & 7).toBe(0);
  });

  it('refuses unknown pages with INVALID FIELD IN CDB at byte 2', async () => {
    const { lu } = await makeUnit();
    const r = await run(lu, inquiry(true, 0x89));
    expect(codeOf(r)).toEqual(expected(senseInvalidFieldInCdb));
    expect(senseOf(r).fieldPointer).toEqual({ inCdb: true, byte: 2 });
  });

  it('truncates VPD pages to the allocation length', async () => {
    const { lu } = await makeUnit();
    const r = await run(lu, inquiry(true, 0x83, 4));
    expect(r.status).toBe(Status.GOOD);
    expect(r.dataIn!.length).toBe(4);
    expect(r.dataIn!.readUInt16BE(2)).toBeGreaterThan(0); // the page length still tells the full size
  });
});
