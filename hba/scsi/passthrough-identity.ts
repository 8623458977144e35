// What a passthrough device says about itself (issue 8): pure decoders of
// standard INQUIRY data (SPC-4 §6.6.2), the Supported VPD Pages (SPC-4
// §7.8.14), Unit Serial Number (§7.8.16) and Device Identification (§7.8.6)
// pages, READ CAPACITY(10) and (16) data (SBC-3 §5.15, §5.16), the CDBs that
// ask for them, and probeIdentity(), which asks a device at attach time.
// Every decoder checks the lengths it relies on and throws an Error saying
// which field of which page is wrong.
import type { ScsiDevicePort } from './passthrough-unit.ts';
import { SenseKey, decodeFixedSense } from './sense.ts';
import { Status, type DeviceIdentity, type ScsiResult } from './types.ts';

const INQUIRY = 0x12;
const READ_CAPACITY_10 = 0x25;
const SERVICE_ACTION_IN_16 = 0x9e;
const SA_READ_CAPACITY_16 = 0x10;

/** VPD pages the probe reads. */
export const ProbedVpdPage = {
  SUPPORTED_PAGES: 0x00,
  UNIT_SERIAL_NUMBER: 0x80,
  DEVICE_IDENTIFICATION: 0x83,
} as const;

// ---- CDBs ------------------------------------------------------------------

/** INQUIRY (SPC-4 §6.6.1): standard data, or the VPD page `vpdPage`. */
export function inquiryCdb(allocationLength: number, vpdPage?: number): Buffer {
  if (!Number.isInteger(allocationLength) || allocationLength < 0 || allocationLength > 0xffff) {
    throw new RangeError(`INQUIRY allocation length ${allocationLength}: must be 0..65535`);
  }
  const cdb = Buffer.alloc(6);
  cdb[0] = INQUIRY;
  if (vpdPage !== undefined) {
    cdb[1] = 0x01; // EVPD
    cdb[2] = vpdPage & 0xff;
  }
  cdb.writeUInt16BE(allocationLength, 3);
  return cdb;
}

/** Length of READ CAPACITY(16) parameter data (SBC-3 §5.16.2). */
export const READ_CAPACITY_16_DATA_LENGTH = 32;

/** READ CAPACITY(16): SERVICE ACTION IN(16) 9Eh / 10h (SBC-3 §5.16.1). */
export function readCapacity16Cdb(allocationLength = READ_CAPACITY_16_DATA_LENGTH): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = SERVICE_ACTION_IN_16;
  cdb[1] = SA_READ_CAPACITY_16;
  cdb.writeUInt32BE(allocationLength, 10);
  return cdb;
}

/** READ CAPACITY(10) (SBC-3 §5.15.1), PMI = 0. */
export function readCapacity10Cdb(): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = READ_CAPACITY_10;
  return cdb;
}

// ---- decoders --------------------------------------------------------------

/** Decoded standard INQUIRY data (the fields the identity needs). */
export interface StandardInquiry {
  /** Byte 0 bits 7..5: 000b = a logical unit is connected here. */
  peripheralQualifier: number;
  /** Byte 0 bits 4..0: 00h = direct access block device (SBC). */
  peripheralDeviceType: number;
  /** T10 VENDOR IDENTIFICATION (bytes 8..15), trimmed. */
  vendor: string;
  /** PRODUCT IDENTIFICATION (bytes 16..31), trimmed. */
  product: string;
  /** PRODUCT REVISION LEVEL (bytes 32..35), trimmed. */
  revision: string;
}

/** Standard INQUIRY data is at least 36 bytes (SPC-4 §6.6.2). */
export const STANDARD_INQUIRY_MIN_LENGTH = 36;

/** An ASCII field with its space (and stray NUL) padding removed. */
function asciiField(data: Buffer, start: number, end: number): string {
  return data.toString('latin1', start, end).replace(/^[\s\0]+|[\s\0]+$/g, '');
}

/** Throws unless `data` holds the 36 bytes of standard INQUIRY data the
 * identity fields live in (counting only what ADDITIONAL LENGTH covers). */
export function validateStandardInquiry(data: Buffer): void {
  if (data.length < 5) throw new Error(`standard INQUIRY data: ${data.length} bytes, need at least 5`);
  const valid = Math.min(data.length, 5 + data[4]!);
  if (valid < STANDARD_INQUIRY_MIN_LENGTH) {
    throw new Error(`standard INQUIRY data: ${valid} valid bytes (ADDITIONAL LENGTH ${data[4]}), need ${STANDARD_INQUIRY_MIN_LENGTH}`);
  }
}

/** Decodes standard INQUIRY data (SPC-4 §6.6.2). */
export function decodeStandardInquiry(data: Buffer): StandardInquiry {
  validateStandardInquiry(data);
  return {
    peripheralQualifier: data[0]! >> 5,
    peripheralDeviceType: data[0]! & 0x1f,
    vendor: asciiField(data, 8, 16),
    product: asciiField(data, 16, 32),
    revision: asciiField(data, 32, 36),
  };
}

/** Throws unless `data` is VPD page `pageCode` with its whole PAGE LENGTH
 * present (SPC-4 §7.8.1: 4-byte header, page length in bytes 2..3). */
export function validateVpdPage(data: Buffer, pageCode: number): void {
  const name = `VPD page ${hex(pageCode)}`;
  if (data.length < 4) throw new Error(`${name}: ${data.length} bytes, shorter than the 4-byte header`);
  if (data[1] !== pageCode) throw new Error(`${name}: the device returned page ${hex(data[1]!)}`);
  const pageLength = data.readUInt16BE(2);
  if (data.length < 4 + pageLength) throw new Error(`${name}: PAGE LENGTH ${pageLength} but only ${data.length - 4} bytes follow the header`);
}

/** The body of VPD page `pageCode` (after the header, PAGE LENGTH bytes). */
function vpdBody(data: Buffer, pageCode: number): Buffer {
  validateVpdPage(data, pageCode);
  return data.subarray(4, 4 + data.readUInt16BE(2));
}

/** The page codes the Supported VPD Pages page lists (SPC-4 §7.8.14). */
export function decodeSupportedVpdPages(data: Buffer): number[] {
  return [...vpdBody(data, ProbedVpdPage.SUPPORTED_PAGES)];
}

/** PRODUCT SERIAL NUMBER of the Unit Serial Number page (SPC-4 §7.8.16), trimmed. */
export function decodeUnitSerialNumber(data: Buffer): string {
  const body = vpdBody(data, ProbedVpdPage.UNIT_SERIAL_NUMBER);
  return asciiField(body, 0, body.length);
}

/** One designation descriptor of the Device Identification page (SPC-4 §7.8.6.1). */
export interface Designator {
  protocolIdentifier: number;
  /** 1 binary, 2 ASCII, 3 UTF-8. */
  codeSet: number;
  /** 00b logical unit, 01b target port, 10b target device. */
  association: number;
  /** 3 = NAA (SPC-4 §7.8.6.6). */
  designatorType: number;
  designator: Buffer;
}

/** Walks the designation descriptors (bounded by PAGE LENGTH); throws if one
 * overruns the page. */
export function decodeDesignators(data: Buffer): Designator[] {
  const body = vpdBody(data, ProbedVpdPage.DEVICE_IDENTIFICATION);
  const out: Designator[] = [];
  let offset = 0;
  while (offset < body.length) {
    if (body.length - offset < 4) throw new Error(`VPD page 83h: ${body.length - offset} stray bytes at offset ${4 + offset}`);
    const length = body[offset + 3]!;
    if (length > body.length - offset - 4) {
      throw new Error(`VPD page 83h: designator at offset ${4 + offset} has DESIGNATOR LENGTH ${length}, past the page end`);
    }
    out.push({
      protocolIdentifier: body[offset]! >> 4,
      codeSet: body[offset]! & 0x0f,
      association: (body[offset + 1]! >> 4) & 0x03,
      designatorType: body[offset + 1]! & 0x0f,
      designator: body.subarray(offset + 4, offset + 4 + length),
    });
    offset += 4 + length;
  }
  return out;
}

/** Designator length of each NAA format (SPC-4 §7.8.6.6), best first. */
const NAA_LENGTHS: ReadonlyMap<number, number> = new Map([
  [6, 16], // IEEE Registered Extended
  [5, 8], // IEEE Registered
  [3, 8], // Locally Assigned
  [2, 8], // IEEE Extended
]);
const NAA_PREFERENCE = [...NAA_LENGTHS.keys()];

/** The logical unit's NAA designator (association 00b, type 3, binary code
 * set) as lowercase hex: NAA 6 preferred over 5, 3, 2; '' if it has none. */
export function decodeLogicalUnitNaa(data: Buffer): string {
  let best: Buffer | undefined;
  let bestRank = NAA_PREFERENCE.length;
  for (const d of decodeDesignators(data)) {
    if (d.association !== 0 || d.designatorType !== 3 || d.codeSet !== 1 || d.designator.length === 0) continue;
    const naa = d.designator[0]! >> 4;
    const rank = NAA_PREFERENCE.indexOf(naa);
    if (rank < 0 || d.designator.length !== NAA_LENGTHS.get(naa)) continue; // unknown NAA or wrong size: not usable
    if (rank < bestRank) [best, bestRank] = [d.designator, rank];
  }
  return best ? best.toString('hex') : '';
}

/** Block geometry from READ CAPACITY. */
export interface Capacity {
  /** RETURNED LOGICAL BLOCK ADDRESS + 1. */
  blockCount: bigint;
  logicalBlockSize: number;
  /** logicalBlockSize × 2^(LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT). */
  physicalBlockSize: number;
}

function checkBlockLength(length: number, command: string): void {
  if (length === 0) throw new Error(`${command} data: LOGICAL BLOCK LENGTH IN BYTES is 0`);
}

/** READ CAPACITY(16) parameter data (SBC-3 §5.16.2): at least the 14 bytes up
 * to the exponent (byte 13 bits 3..0). */
export function decodeReadCapacity16(data: Buffer): Capacity {
  if (data.length < 14) throw new Error(`READ CAPACITY(16) data: ${data.length} bytes, need 14`);
  const logicalBlockSize = data.readUInt32BE(8);
  checkBlockLength(logicalBlockSize, 'READ CAPACITY(16)');
  const exponent = data[13]! & 0x0f;
  return { blockCount: data.readBigUInt64BE(0) + 1n, logicalBlockSize, physicalBlockSize: logicalBlockSize * 2 ** exponent };
}

/** READ CAPACITY(10) parameter data (SBC-3 §5.15.2); a last LBA of FFFFFFFFh
 * means the capacity does not fit (READ CAPACITY(16) is needed): an Error. */
export function decodeReadCapacity10(data: Buffer): Capacity {
  if (data.length < 8) throw new Error(`READ CAPACITY(10) data: ${data.length} bytes, need 8`);
  const lastLba = data.readUInt32BE(0);
  if (lastLba === 0xffff_ffff) throw new Error('READ CAPACITY(10): capacity too large for (10), and READ CAPACITY(16) is not supported');
  const logicalBlockSize = data.readUInt32BE(4);
  checkBlockLength(logicalBlockSize, 'READ CAPACITY(10)');
  return { blockCount: BigInt(lastLba) + 1n, logicalBlockSize, physicalBlockSize: logicalBlockSize };
}

// ---- sense, for messages and retries --------------------------------------

const SENSE_KEY_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(SenseKey).map(([name, key]) => [key, name.replace(/_/g, ' ')]));

/** Sense key and ASC/ASCQ of fixed (70h/71h) or descriptor (72h/73h) sense
 * data (SPC-4 §4.5.2, §4.5.3); undefined if neither. */
export function senseCodeOf(sense: Buffer | undefined): { key: number; asc: number; ascq: number } | undefined {
  if (!sense || sense.length < 1) return undefined;
  const responseCode = sense[0]! & 0x7f;
  if ((responseCode === 0x72 || responseCode === 0x73) && sense.length >= 4) {
    return { key: sense[1]! & 0x0f, asc: sense[2]!, ascq: sense[3]! };
  }
  const fixed = decodeFixedSense(sense);
  return fixed && { key: fixed.key, asc: fixed.asc, ascq: fixed.ascq };
}

function hex(byte: number): string {
  return `${byte.toString(16).toUpperCase().padStart(2, '0')}h`;
}

/** e.g. "CHECK CONDITION, ILLEGAL REQUEST (5h) 24h/00h" or "service response transport-failure". */
export function describeResult(result: ScsiResult): string {
  if (result.serviceFailure) return `service response ${result.serviceFailure}`;
  if (result.status !== Status.CHECK_CONDITION) {
    const name = Object.entries(Status).find(([, v]) => v === result.status)?.[0].replace(/_/g, ' ');
    return `status ${name ?? 'unknown'} (${hex(result.status)})`;
  }
  const code = senseCodeOf(result.sense);
  if (!code) return 'CHECK CONDITION without decodable sense';
  const key = `${SENSE_KEY_NAMES.get(code.key) ?? 'sense key'} (${code.key.toString(16).toUpperCase()}h)`;
  return `CHECK CONDITION, ${key} ${hex(code.asc)}/${hex(code.ascq)}`;
}

// ---- the probe -------------------------------------------------------------

/** Attempts per command while the device reports UNIT ATTENTION (a fresh or
 * reset device reports POWER ON first; SAM-5 §5.14). */
export const UNIT_ATTENTION_ATTEMPTS = 5;

/** A command that did not complete with GOOD. */
export class ProbeCommandError extends Error {
  readonly result: ScsiResult;
  constructor(command: string, result: ScsiResult) {
    super(`${command} failed: ${describeResult(result)}`);
    this.name = 'ProbeCommandError';
    this.result = result;
  }
  /** CHECK CONDITION with sense key ILLEGAL REQUEST (the device does not support it). */
  get illegalRequest(): boolean {
    return !this.result.serviceFailure && this.result.status === Status.CHECK_CONDITION && senseCodeOf(this.result.sense)?.key === SenseKey.ILLEGAL_REQUEST;
  }
}

/** Runs a data-in command, repeating it while it returns UNIT ATTENTION;
 * resolves with the data of a GOOD completion, else throws ProbeCommandError. */
async function dataIn(port: ScsiDevicePort, command: string, cdb: Buffer, capacity: number): Promise<Buffer> {
  let result: ScsiResult | undefined;
  for (let attempt = 0; attempt < UNIT_ATTENTION_ATTEMPTS; attempt++) {
    result = await port.execute(cdb, Buffer.alloc(0), capacity);
    const unitAttention = !result.serviceFailure && result.status === Status.CHECK_CONDITION && senseCodeOf(result.sense)?.key === SenseKey.UNIT_ATTENTION;
    if (!unitAttention) break;
  }
  if (result!.serviceFailure || result!.status !== Status.GOOD) throw new ProbeCommandError(command, result!);
  return result!.dataIn ?? Buffer.alloc(0);
}

/** Reads a whole VPD page: first 255 bytes (what old devices expect), then
 * again with the PAGE LENGTH the device announced if that was more. */
async function readVpdPage(port: ScsiDevicePort, page: number): Promise<Buffer> {
  const command = `INQUIRY VPD page ${hex(page)}`;
  let data = await dataIn(port, command, inquiryCdb(0xff, page), 0xff);
  if (data.length >= 4) {
    const total = Math.min(0xffff, 4 + data.readUInt16BE(2));
    if (total > data.length && total > 0xff) data = await dataIn(port, command, inquiryCdb(total, page), total);
  }
  return data;
}

/** Reads the capacity with READ CAPACITY(16), falling back to (10) when the
 * device refuses (16) with ILLEGAL REQUEST or returns no data for it. */
async function readCapacity(port: ScsiDevicePort): Promise<Capacity> {
  try {
    const data = await dataIn(port, 'READ CAPACITY(16)', readCapacity16Cdb(), READ_CAPACITY_16_DATA_LENGTH);
    if (data.length > 0) return decodeReadCapacity16(data);
  } catch (error) {
    if (!(error instanceof ProbeCommandError && error.illegalRequest)) throw error;
  }
  return decodeReadCapacity10(await dataIn(port, 'READ CAPACITY(10)', readCapacity10Cdb(), 8));
}

/** Asks a device who it is: standard INQUIRY (peripheral qualifier must be
 * 000b), the VPD pages 80h and 83h it lists in page 00h, and for a
 * direct-access device (type 0) its capacity. Throws an Error naming the
 * command and the sense or service response that failed. */
export async function probeIdentity(port: ScsiDevicePort): Promise<DeviceIdentity> {
  const inquiry = decodeStandardInquiry(await dataIn(port, 'INQUIRY', inquiryCdb(STANDARD_INQUIRY_MIN_LENGTH), STANDARD_INQUIRY_MIN_LENGTH));
  if (inquiry.peripheralQualifier !== 0) {
    throw new Error(`no logical unit at this address (INQUIRY peripheral qualifier ${inquiry.peripheralQualifier.toString(2).padStart(3, '0')}b)`);
  }
  let pages: number[] = [];
  try {
    pages = decodeSupportedVpdPages(await readVpdPage(port, ProbedVpdPage.SUPPORTED_PAGES));
  } catch (error) {
    // A device without VPD pages (pre-SPC-3) refuses EVPD = 1: no serial, no WWN.
    if (!(error instanceof ProbeCommandError && error.illegalRequest)) throw error;
  }
  const serial = pages.includes(ProbedVpdPage.UNIT_SERIAL_NUMBER)
    ? decodeUnitSerialNumber(await readVpdPage(port, ProbedVpdPage.UNIT_SERIAL_NUMBER))
    : '';
  const wwn = pages.includes(ProbedVpdPage.DEVICE_IDENTIFICATION)
    ? decodeLogicalUnitNaa(await readVpdPage(port, ProbedVpdPage.DEVICE_IDENTIFICATION))
    : '';
  const identity: DeviceIdentity = {
    peripheralDeviceType: inquiry.peripheralDeviceType,
    vendor: inquiry.vendor,
    product: inquiry.product,
    revision: inquiry.revision,
    serial,
    wwn,
    logicalBlockSize: 0,
    physicalBlockSize: 0,
    sizeBytes: 0,
  };
  if (inquiry.peripheralDeviceType !== 0) return identity; // no block geometry (tape, changer, enclosure, ...)
  const capacity = await readCapacity(port);
  const sizeBytes = capacity.blockCount * BigInt(capacity.logicalBlockSize);
  if (sizeBytes > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`READ CAPACITY: ${sizeBytes} bytes is beyond 2^53 - 1`);
  return { ...identity, logicalBlockSize: capacity.logicalBlockSize, physicalBlockSize: capacity.physicalBlockSize, sizeBytes: Number(sizeBytes) };
}
