// Decoders over byte layouts built field by field from the SPC-4 / SBC-3
// tables, and probeIdentity() against a scripted in-memory device.
import { describe, expect, it } from 'vitest';
import {
  UNIT_ATTENTION_ATTEMPTS,
  decodeDesignators,
  decodeLogicalUnitNaa,
  decodeReadCapacity10,
  decodeReadCapacity16,
  decodeStandardInquiry,
  decodeSupportedVpdPages,
  decodeUnitSerialNumber,
  describeResult,
  inquiryCdb,
  probeIdentity,
  readCapacity10Cdb,
  readCapacity16Cdb,
  senseCodeOf,
} from './passthrough-identity.ts';
import type { ScsiDevicePort } from './passthrough-unit.ts';
import { buildFixedSense, senseInvalidOpcode, senseMediumNotPresent, senseUaPowerOnReset } from './sense.ts';
import { Status, type ScsiResult } from './types.ts';

// ---- byte layouts ------------------------------------------------------------

function ascii(text: string, length: number): Buffer {
  return Buffer.from(text.padEnd(length, ' '), 'latin1');
}

/** Standard INQUIRY data (SPC-4 §6.6.2 table 142), 96 bytes. */
function standardInquiry(o: { qualifier?: number; type?: number; vendor?: string; product?: string; revision?: string } = {}): Buffer {
  const data = Buffer.alloc(96);
  data[0] = ((o.qualifier ?? 0) << 5) | (o.type ?? 0);
  data[2] = 0x06; // VERSION SPC-4
  data[3] = 0x02; // RESPONSE DATA FORMAT 2
  data[4] = data.length - 5; // ADDITIONAL LENGTH
  data[7] = 0x02; // CMDQUE
  ascii(o.vendor ?? 'Linux', 8).copy(data, 8);
  ascii(o.product ?? 'scsi_debug', 16).copy(data, 16);
  ascii(o.revision ?? '0191', 4).copy(data, 32);
  return data;
}

/** A VPD page: peripheral byte, page code, PAGE LENGTH, body (SPC-4 §7.8.1). */
function vpd(page: number, body: Buffer, type = 0): Buffer {
  const header = Buffer.from([type, page, body.length >> 8, body.length & 0xff]);
  return Buffer.concat([header, body]);
}

/** A designation descriptor (SPC-4 §7.8.6.1 table 589). */
function designator(o: { protocol?: number; codeSet: number; piv?: boolean; association: number; type: number; value: Buffer }): Buffer {
  const head = Buffer.from([
    ((o.protocol ?? 0) << 4) | o.codeSet,
    (o.piv ? 0x80 : 0) | (o.association << 4) | o.type,
    0,
    o.value.length,
  ]);
  return Buffer.concat([head, o.value]);
}

const NAA5 = Buffer.from('5001405b3b8b0e11', 'hex');
const NAA6 = Buffer.from('6001405f2a1b3c4d5e6f708192a3b4c5', 'hex');
const NAA3 = Buffer.from('3000000000000042', 'hex');
const NAA2 = Buffer.from('2000001122334455', 'hex');
const luNaa = (value: Buffer) => designator({ codeSet: 1, association: 0, type: 3, value });
const t10VendorId = designator({ codeSet: 2, association: 0, type: 1, value: Buffer.from('LIO-ORG fileio0 0b6c2c4e', 'latin1') });
const targetPortNaa = designator({ protocol: 6, codeSet: 1, piv: true, association: 1, type: 3, value: NAA6 });
const relativePort = designator({ protocol: 6, codeSet: 1, piv: true, association: 1, type: 4, value: Buffer.from([0, 0, 0, 1]) });

/** READ CAPACITY(16) parameter data (SBC-3 §5.16.2 table 66), 32 bytes. */
function capacity16(lastLba: bigint, blockLength: number, exponent = 0): Buffer {
  const data = Buffer.alloc(32);
  data.writeBigUInt64BE(lastLba, 0);
  data.writeUInt32BE(blockLength, 8);
  data[13] = exponent & 0x0f;
  data[14] = 0x80; // LBPME
  return data;
}

/** READ CAPACITY(10) parameter data (SBC-3 §5.15.2 table 63). */
function capacity10(lastLba: number, blockLength: number): Buffer {
  const data = Buffer.alloc(8);
  data.writeUInt32BE(lastLba, 0);
  data.writeUInt32BE(blockLength, 4);
  return data;
}

// ---- decoders ------------------------------------------------------------------

describe('standard INQUIRY data', () => {
  it('decodes qualifier, type and the trimmed T10 strings', () => {
    const decoded = decodeStandardInquiry(standardInquiry({ qualifier: 1, type: 0x05, vendor: 'LIO-ORG', product: 'fileio0', revision: '4.0' }));
    expect(decoded).toEqual({ peripheralQualifier: 1, peripheralDeviceType: 5, vendor: 'LIO-ORG', product: 'fileio0', revision: '4.0' });
  });

  it('trims NUL padding too', () => {
    const data = standardInquiry();
    data.fill(0, 8 + 5, 16); // "Linux" then NULs
    expect(decodeStandardInquiry(data).vendor).toBe('Linux');
  });

  it('refuses data that ADDITIONAL LENGTH or the transfer cut below 36 bytes', () => {
    expect(() => decodeStandardInquiry(standardInquiry().subarray(0, 35))).toThrow(/35 valid bytes/);
    const short = standardInquiry();
    short[4] = 30;
    expect(() => decodeStandardInquiry(short)).toThrow(/ADDITIONAL LENGTH 30/);
    expect(() => decodeStandardInquiry(Buffer.alloc(3))).toThrow(/3 bytes/);
  });
});

describe('VPD pages', () => {
  it('lists the supported pages (00h)', () => {
    expect(decodeSupportedVpdPages(vpd(0x00, Buffer.from([0x00, 0x80, 0x83, 0xb0])))).toEqual([0x00, 0x80, 0x83, 0xb0]);
  });

  it('refuses a page other than the one asked for, or one cut short', () => {
    expect(() => decodeSupportedVpdPages(vpd(0x80, Buffer.from([0x00])))).toThrow(/returned page 80h/);
    expect(() => decodeSupportedVpdPages(vpd(0x00, Buffer.from([0x00, 0x80])).subarray(0, 5))).toThrow(/PAGE LENGTH 2/);
    expect(() => decodeUnitSerialNumber(Buffer.from([0, 0x80]))).toThrow(/header/);
  });

  it('trims the unit serial number (80h), right-aligned or left-aligned', () => {
    expect(decodeUnitSerialNumber(vpd(0x80, ascii('   6001405b3b8b0e11', 20)))).toBe('6001405b3b8b0e11');
    expect(decodeUnitSerialNumber(vpd(0x80, Buffer.from('SN0042\0\0', 'latin1')))).toBe('SN0042');
    expect(decodeUnitSerialNumber(vpd(0x80, ascii('', 8)))).toBe('');
  });

  it('walks the designation descriptors (83h)', () => {
    const designators = decodeDesignators(vpd(0x83, Buffer.concat([t10VendorId, luNaa(NAA5), targetPortNaa])));
    expect(designators.map((d) => [d.codeSet, d.association, d.designatorType, d.protocolIdentifier])).toEqual([
      [2, 0, 1, 0],
      [1, 0, 3, 0],
      [1, 1, 3, 6],
    ]);
    expect(designators[1]!.designator).toEqual(NAA5);
  });

  it('refuses a designator that overruns the page', () => {
    const bad = luNaa(NAA5);
    bad[3] = 9;
    expect(() => decodeDesignators(vpd(0x83, bad))).toThrow(/DESIGNATOR LENGTH 9/);
    expect(() => decodeDesignators(vpd(0x83, Buffer.concat([luNaa(NAA5), Buffer.from([1, 3])])))).toThrow(/stray bytes/);
  });

  it("takes the logical unit's NAA, preferring NAA 6 over 5, 3 and 2", () => {
    expect(decodeLogicalUnitNaa(vpd(0x83, Buffer.concat([t10VendorId, luNaa(NAA5), luNaa(NAA6), relativePort])))).toBe(NAA6.toString('hex'));
    expect(decodeLogicalUnitNaa(vpd(0x83, Buffer.concat([luNaa(NAA2), luNaa(NAA3)])))).toBe('3000000000000042');
    expect(decodeLogicalUnitNaa(vpd(0x83, Buffer.concat([luNaa(NAA2)])))).toBe('2000001122334455');
  });

  it('ignores target port NAAs, ASCII NAAs, wrong-size and unknown NAA designators', () => {
    const asciiNaa = designator({ codeSet: 2, association: 0, type: 3, value: Buffer.from('5001405b3b8b0e11') });
    const wrongSize = luNaa(Buffer.concat([NAA5, Buffer.from([0])]));
    const naa1 = luNaa(Buffer.from('1000000000000001', 'hex'));
    expect(decodeLogicalUnitNaa(vpd(0x83, Buffer.concat([targetPortNaa, asciiNaa, wrongSize, naa1, t10VendorId])))).toBe('');
    expect(decodeLogicalUnitNaa(vpd(0x83, Buffer.alloc(0)))).toBe('');
  });

  it('gives the NAA in lowercase hex', () => {
    expect(decodeLogicalUnitNaa(vpd(0x83, luNaa(Buffer.from('50014EE2B1A2C3D4', 'hex'))))).toBe('50014ee2b1a2c3d4');
  });
});

describe('READ CAPACITY data', () => {
  it('(16): block count, logical size and physical size from the exponent', () => {
    expect(decodeReadCapacity16(capacity16(2047n, 512, 3))).toEqual({ blockCount: 2048n, logicalBlockSize: 512, physicalBlockSize: 4096 });
    expect(decodeReadCapacity16(capacity16(255n, 4096))).toEqual({ blockCount: 256n, logicalBlockSize: 4096, physicalBlockSize: 4096 });
    expect(decodeReadCapacity16(capacity16(0xffff_ffff_ffn, 512)).blockCount).toBe(0x1_0000_0000_00n);
  });

  it('(16): refuses short data and a zero block length', () => {
    expect(() => decodeReadCapacity16(capacity16(1n, 512).subarray(0, 13))).toThrow(/13 bytes/);
    expect(() => decodeReadCapacity16(capacity16(1n, 0))).toThrow(/LOGICAL BLOCK LENGTH/);
  });

  it('(10): block count and size; FFFFFFFFh means too large', () => {
    expect(decodeReadCapacity10(capacity10(2047, 512))).toEqual({ blockCount: 2048n, logicalBlockSize: 512, physicalBlockSize: 512 });
    expect(() => decodeReadCapacity10(capacity10(0xffff_ffff, 512))).toThrow(/too large/);
    expect(() => decodeReadCapacity10(Buffer.alloc(7))).toThrow(/7 bytes/);
  });
});

describe('CDBs', () => {
  it('INQUIRY standard and VPD (SPC-4 §6.6.1)', () => {
    expect([...inquiryCdb(36)]).toEqual([0x12, 0, 0, 0, 36, 0]);
    expect([...inquiryCdb(0x1234, 0x83)]).toEqual([0x12, 1, 0x83, 0x12, 0x34, 0]);
    expect(() => inquiryCdb(0x10000)).toThrow(RangeError);
  });

  it('READ CAPACITY(16) and (10) (SBC-3 §5.16.1, §5.15.1)', () => {
    expect([...readCapacity16Cdb()]).toEqual([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
    expect([...readCapacity10Cdb()]).toEqual([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  });
});

describe('sense for messages', () => {
  it('reads fixed and descriptor format', () => {
    expect(senseCodeOf(buildFixedSense(senseMediumNotPresent))).toEqual({ key: 2, asc: 0x3a, ascq: 0 });
    expect(senseCodeOf(Buffer.from([0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0]))).toEqual({ key: 6, asc: 0x29, ascq: 0 });
    expect(senseCodeOf(Buffer.from([0x00, 1, 2]))).toBeUndefined();
    expect(senseCodeOf(undefined)).toBeUndefined();
  });

  it('names the sense key, ASC/ASCQ, status or service response', () => {
    expect(describeResult({ status: Status.CHECK_CONDITION, sense: buildFixedSense(senseInvalidOpcode) })).toBe('CHECK CONDITION, ILLEGAL REQUEST (5h) 20h/00h');
    expect(describeResult({ status: Status.RESERVATION_CONFLICT })).toBe('status RESERVATION CONFLICT (18h)');
    expect(describeResult({ status: 0, serviceFailure: 'bad-target' })).toBe('service response bad-target');
  });
});

// ---- probeIdentity -------------------------------------------------------------

/** What a scripted device answers: a result, or a function of the attempt number. */
type Answer = ScsiResult | ((attempt: number) => ScsiResult);

/** A device that answers by CDB key ("12", "12/83", "9e/10", "25") and records every CDB it got. */
class ScriptedDevice implements ScsiDevicePort {
  readonly seen: string[] = [];
  readonly capacities: number[] = [];
  readonly answers: Map<string, Answer>;
  readonly #attempts = new Map<string, number>();
  constructor(answers: Record<string, Answer>) {
    this.answers = new Map(Object.entries(answers));
  }
  async execute(cdb: Buffer, dataOut: Buffer, dataInCapacity: number): Promise<ScsiResult> {
    expect(dataOut.length).toBe(0);
    const key = cdb[0] === 0x12 ? (cdb[1]! & 1 ? `12/${cdb[2]!.toString(16).padStart(2, '0')}` : '12') : cdb[0] === 0x9e ? '9e/10' : cdb[0]!.toString(16);
    this.seen.push(key);
    this.capacities.push(dataInCapacity);
    const attempt = this.#attempts.get(key) ?? 0;
    this.#attempts.set(key, attempt + 1);
    const answer = this.answers.get(key);
    if (!answer) return checkCondition(buildFixedSense(senseInvalidOpcode));
    const result = typeof answer === 'function' ? answer(attempt) : answer;
    return result.dataIn ? { ...result, dataIn: result.dataIn.subarray(0, dataInCapacity) } : result;
  }
}

const good = (data: Buffer): ScsiResult => ({ status: Status.GOOD, dataIn: data });
const checkCondition = (sense: Buffer): ScsiResult => ({ status: Status.CHECK_CONDITION, sense });
const powerOn = checkCondition(buildFixedSense(senseUaPowerOnReset));

/** A 4096-byte-sector LIO-like disk: every page answered. */
function lioDisk(): Record<string, Answer> {
  return {
    '12': good(standardInquiry({ vendor: 'LIO-ORG', product: 'fileio0', revision: '4.0' })),
    '12/00': good(vpd(0x00, Buffer.from([0x00, 0x80, 0x83, 0xb0]))),
    '12/80': good(vpd(0x80, ascii('0b6c2c4e-1f2a', 13))),
    '12/83': good(vpd(0x83, Buffer.concat([luNaa(NAA5), t10VendorId, luNaa(NAA6), targetPortNaa, relativePort]))),
    '9e/10': good(capacity16(262143n, 4096)),
  };
}

const LIO_IDENTITY = {
  peripheralDeviceType: 0,
  vendor: 'LIO-ORG',
  product: 'fileio0',
  revision: '4.0',
  serial: '0b6c2c4e-1f2a',
  wwn: NAA6.toString('hex'),
  logicalBlockSize: 4096,
  physicalBlockSize: 4096,
  sizeBytes: 262144 * 4096,
};

describe('probeIdentity', () => {
  it('asks INQUIRY, the pages 00h lists, READ CAPACITY(16); a 4096-byte device stays 4096', async () => {
    const device = new ScriptedDevice(lioDisk());
    expect(await probeIdentity(device)).toEqual(LIO_IDENTITY);
    expect(device.seen).toEqual(['12', '12/00', '12/80', '12/83', '9e/10']);
  });

  it('512e: physical size from the exponent', async () => {
    const device = new ScriptedDevice({ ...lioDisk(), '9e/10': good(capacity16(2047n, 512, 3)) });
    expect(await probeIdentity(device)).toMatchObject({ logicalBlockSize: 512, physicalBlockSize: 4096, sizeBytes: 2048 * 512 });
  });

  it('retries a command that reports UNIT ATTENTION (POWER ON first, descriptor sense too)', async () => {
    const uaDescriptor = checkCondition(Buffer.from([0x72, 0x06, 0x2a, 0x09, 0, 0, 0, 0]));
    const answers = lioDisk();
    const inquiry = answers['12'] as ScsiResult;
    const capacity = answers['9e/10'] as ScsiResult;
    const device = new ScriptedDevice({
      ...answers,
      '12': (attempt) => (attempt === 0 ? powerOn : inquiry),
      '9e/10': (attempt) => (attempt < 2 ? uaDescriptor : capacity),
    });
    expect(await probeIdentity(device)).toEqual(LIO_IDENTITY);
    expect(device.seen).toEqual(['12', '12', '12/00', '12/80', '12/83', '9e/10', '9e/10', '9e/10']);
  });

  it('gives up after a few UNIT ATTENTIONs, naming the command and the sense', async () => {
    const device = new ScriptedDevice({ ...lioDisk(), '12': powerOn });
    await expect(probeIdentity(device)).rejects.toThrow('INQUIRY failed: CHECK CONDITION, UNIT ATTENTION (6h) 29h/00h');
    expect(device.seen).toEqual(Array(UNIT_ATTENTION_ATTEMPTS).fill('12'));
  });

  it('refuses an address without a logical unit (peripheral qualifier not 000b)', async () => {
    const device = new ScriptedDevice({ ...lioDisk(), '12': good(standardInquiry({ qualifier: 3, type: 0x1f })) });
    await expect(probeIdentity(device)).rejects.toThrow(/no logical unit at this address.*011b/);
    expect(device.seen).toEqual(['12']);
  });

  it('asks only the pages 00h lists', async () => {
    const device = new ScriptedDevice({ ...lioDisk(), '12/00': good(vpd(0x00, Buffer.from([0x00, 0x80]))) });
    expect(await probeIdentity(device)).toMatchObject({ serial: '0b6c2c4e-1f2a', wwn: '' });
    expect(device.seen).not.toContain('12/83');
  });

  it('a device without VPD pages (EVPD refused) has no serial and no WWN', async () => {
    const answers = lioDisk();
    delete answers['12/00'];
    const device = new ScriptedDevice(answers);
    expect(await probeIdentity(device)).toMatchObject({ serial: '', wwn: '', sizeBytes: LIO_IDENTITY.sizeBytes });
  });

  it('re-reads a VPD page longer than 255 bytes with its whole length', async () => {
    const many = Buffer.concat([...Array(20)].map(() => t10VendorId)); // 20 × 28 bytes
    const page = vpd(0x83, Buffer.concat([many, luNaa(NAA5)]));
    expect(page.length).toBeGreaterThan(255);
    const device = new ScriptedDevice({ ...lioDisk(), '12/83': good(page) });
    expect((await probeIdentity(device)).wwn).toBe(NAA5.toString('hex'));
    expect(device.seen.filter((k) => k === '12/83')).toHaveLength(2);
    expect(device.capacities[device.seen.lastIndexOf('12/83')]).toBe(page.length);
  });

  it('falls back to READ CAPACITY(10) when (16) is refused or returns nothing', async () => {
    const refused = lioDisk();
    delete refused['9e/10'];
    const device = new ScriptedDevice({ ...refused, '25': good(capacity10(262143, 4096)) });
    expect(await probeIdentity(device)).toEqual(LIO_IDENTITY);
    expect(device.seen.slice(-2)).toEqual(['9e/10', '25']);

    const empty = new ScriptedDevice({ ...lioDisk(), '9e/10': good(Buffer.alloc(0)), '25': good(capacity10(1023, 512)) });
    expect(await probeIdentity(empty)).toMatchObject({ logicalBlockSize: 512, physicalBlockSize: 512, sizeBytes: 1024 * 512 });
  });

  it('does not fall back when (16) fails otherwise', async () => {
    const device = new ScriptedDevice({ ...lioDisk(), '9e/10': checkCondition(buildFixedSense(senseMediumNotPresent)), '25': good(capacity10(1, 512)) });
    await expect(probeIdentity(device)).rejects.toThrow('READ CAPACITY(16) failed: CHECK CONDITION, NOT READY (2h) 3Ah/00h');
    expect(device.seen).not.toContain('25');
  });

  it('a device too large for (10) without (16) is an error', async () => {
    const answers = lioDisk();
    delete answers['9e/10'];
    const device = new ScriptedDevice({ ...answers, '25': good(capacity10(0xffff_ffff, 512)) });
    await expect(probeIdentity(device)).rejects.toThrow(/too large/);
  });

  it('skips READ CAPACITY on a device that is not a disk', async () => {
    const device = new ScriptedDevice({ ...lioDisk(), '12': good(standardInquiry({ type: 0x01, vendor: 'HP', product: 'Ultrium 6-SCSI' })) });
    expect(await probeIdentity(device)).toMatchObject({ peripheralDeviceType: 1, vendor: 'HP', product: 'Ultrium 6-SCSI', logicalBlockSize: 0, physicalBlockSize: 0, sizeBytes: 0 });
    expect(device.seen).not.toContain('9e/10');
  });

  it('a service failure is an error naming the command', async () => {
    const device = new ScriptedDevice({ ...lioDisk(), '12/80': { status: Status.GOOD, serviceFailure: 'transport-failure' } });
    await expect(probeIdentity(device)).rejects.toThrow('INQUIRY VPD page 80h failed: service response transport-failure');
  });

  it('a malformed page is an error saying what is wrong', async () => {
    const device = new ScriptedDevice({ ...lioDisk(), '12/83': good(vpd(0x80, Buffer.alloc(4))) });
    await expect(probeIdentity(device)).rejects.toThrow(/VPD page 83h: the device returned page 80h/);
  });
});
