// INQUIRY (SPC-4 §6.6): standard data and the VPD pages a Linux guest reads
// to name and tune a disk: 00h supported pages, 80h unit serial number, 83h
// device identification (SPC-4 §7.8), B0h block limits, B1h block device
// characteristics, B2h logical block provisioning (SBC-3 §6.6).
import packageJson from '../../package.json' with { type: 'json' };
import { defineCommand, goodWithData, type CommandContext, type CommandKind, type UnitSnapshot } from './command.ts';
import { invalidFieldInCdb } from './sense.ts';
import type { ScsiResult } from './types.ts';

/** T10 vendor identification in standard INQUIRY data and the T10 vendor ID designator. */
export const VENDOR_ID = 'VHBA    ';
/** Product identification when LogicalUnitParams.product is absent. */
export const DEFAULT_PRODUCT = 'VIRTUAL-DISK';
/** Product revision level: the package version's first four characters. */
export const PRODUCT_REVISION = packageJson.version.slice(0, 4).padEnd(4, ' ');

/** Peripheral byte of a present direct-access block device (SBC-3). */
const PERIPHERAL_DISK = 0x00;
/** Peripheral qualifier 011b / device type 1Fh: no logical unit here (SPC-4 §6.6.2). */
export const PERIPHERAL_NO_LUN = 0x7f;

/** VPD page codes, in ascending order as page 00h lists them. */
export const VpdPage = {
  SUPPORTED_PAGES: 0x00,
  UNIT_SERIAL_NUMBER: 0x80,
  DEVICE_IDENTIFICATION: 0x83,
  BLOCK_LIMITS: 0xb0,
  BLOCK_DEVICE_CHARACTERISTICS: 0xb1,
  LOGICAL_BLOCK_PROVISIONING: 0xb2,
} as const;

/** INQUIRY as decoded. */
export interface InquiryCommand {
  evpd: boolean;
  pageCode: number;
  allocationLength: number;
}

/** CMDDT (obsolete) must be 0; EVPD = 0 requires PAGE CODE = 0 (SPC-4 §6.6.1). */
export function parseInquiry(cdb: Buffer): InquiryCommand {
  const flags = cdb[1]!;
  if (flags & 0x02) throw invalidFieldInCdb(1, 1);
  const evpd = (flags & 0x01) !== 0;
  const pageCode = cdb[2]!;
  if (!evpd && pageCode !== 0) throw invalidFieldInCdb(2);
  return { evpd, pageCode, allocationLength: cdb.readUInt16BE(3) };
}

function ascii(text: string, length: number): Buffer {
  return Buffer.from(text.slice(0, length).padEnd(length, ' '), 'latin1');
}

/** Standard INQUIRY data (SPC-4 §6.6.2), 74 bytes with three version descriptors.
 * `unit` undefined: the answer for an absent LUN (peripheral qualifier 011b). */
export function standardInquiryData(unit: UnitSnapshot | undefined): Buffer {
  const data = Buffer.alloc(74);
  data[0] = unit ? PERIPHERAL_DISK : PERIPHERAL_NO_LUN;
  data[1] = 0x00; // RMB = 0: not removable
  data[2] = 0x06; // VERSION: SPC-4
  data[3] = 0x12; // HISUP | RESPONSE DATA FORMAT 2
  data[4] = data.length - 5; // ADDITIONAL LENGTH
  data[7] = 0x02; // CMDQUE
  ascii(VENDOR_ID, 8).copy(data, 8);
  ascii(unit?.params.product ?? DEFAULT_PRODUCT, 16).copy(data, 16);
  ascii(PRODUCT_REVISION, 4).copy(data, 32);
  // VERSION DESCRIPTORS (SPC-4 table 142): SAM-5, SPC-4, SBC-3.
  data.writeUInt16BE(0x00a0, 58);
  data.writeUInt16BE(0x0460, 60);
  data.writeUInt16BE(0x04c0, 62);
  return data;
}

/** A VPD page: 4-byte header (peripheral byte, page code, 16-bit page length) + body. */
function vpdPage(peripheral: number, pageCode: number, body: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header[0] = peripheral;
  header[1] = pageCode;
  header.writeUInt16BE(body.length, 2);
  return Buffer.concat([header, body]);
}

/** Supported VPD pages (SPC-4 §7.8.16); an absent LUN supports only page 00h. */
export function supportedPagesVpd(unit: UnitSnapshot | undefined): Buffer {
  if (!unit) return vpdPage(PERIPHERAL_NO_LUN, VpdPage.SUPPORTED_PAGES, Buffer.from([VpdPage.SUPPORTED_PAGES]));
  return vpdPage(PERIPHERAL_DISK, VpdPage.SUPPORTED_PAGES, Buffer.from(Object.values(VpdPage)));
}

/** Unit Serial Number (SPC-4 §7.8.17): the serial in ASCII. */
export function unitSerialVpd(unit: UnitSnapshot): Buffer {
  return vpdPage(PERIPHERAL_DISK, VpdPage.UNIT_SERIAL_NUMBER, Buffer.from(unit.params.serial, 'latin1'));
}

/** One designation descriptor (SPC-4 §7.8.6.1). */
function designator(codeSet: number, association: number, type: number, value: Buffer): Buffer {
  const header = Buffer.from([codeSet & 0x0f, ((association & 0x03) << 4) | (type & 0x0f), 0, value.length]);
  return Buffer.concat([header, value]);
}

const CODE_SET_BINARY = 1;
const CODE_SET_ASCII = 2;
const ASSOCIATION_LU = 0;
const ASSOCIATION_TARGET_PORT = 1;
const DESIGNATOR_T10_VENDOR = 1;
const DESIGNATOR_NAA = 3;
const DESIGNATOR_RELATIVE_TARGET_PORT = 4;

/** Device Identification (SPC-4 §7.8.6): the NAA designator from params.wwn
 * (8 bytes for NAA 2/3/5, 16 for NAA 6), a T10 vendor ID designator
 * ('VHBA    ' + serial), and relative target port 1. */
export function deviceIdentificationVpd(unit: UnitSnapshot): Buffer {
  const naa = Buffer.from(unit.params.wwn, 'hex');
  const t10 = Buffer.concat([ascii(VENDOR_ID, 8), Buffer.from(unit.params.serial, 'latin1')]);
  const relativePort = Buffer.from([0, 0, 0, 1]);
  return vpdPage(PERIPHERAL_DISK, VpdPage.DEVICE_IDENTIFICATION, Buffer.concat([
    designator(CODE_SET_BINARY, ASSOCIATION_LU, DESIGNATOR_NAA, naa),
    designator(CODE_SET_ASCII, ASSOCIATION_LU, DESIGNATOR_T10_VENDOR, t10),
    designator(CODE_SET_BINARY, ASSOCIATION_TARGET_PORT, DESIGNATOR_RELATIVE_TARGET_PORT, relativePort),
  ]));
}

/** Block Limits (SBC-3 §6.6.3), page length 3Ch. WSNZ = 1: WRITE SAME with
 * zero blocks is refused. The unmap fields are zero unless thin provisioned. */
export function blockLimitsVpd(unit: UnitSnapshot): Buffer {
  const body = Buffer.alloc(0x3c);
  const l = unit.limits;
  body[0] = 0x01; // WSNZ
  body.writeUInt16BE(l.unmapGranularityBlocks, 2); // OPTIMAL TRANSFER LENGTH GRANULARITY (one physical block)
  body.writeUInt32BE(l.maxTransferBlocks, 4);
  body.writeUInt32BE(l.optimalTransferBlocks, 8);
  if (unit.thinProvisioned) {
    body.writeUInt32BE(l.maxUnmapBlocks, 16);
    body.writeUInt32BE(l.maxUnmapDescriptors, 20);
    body.writeUInt32BE(l.unmapGranularityBlocks, 24);
  }
  body.writeBigUInt64BE(BigInt(l.maxWriteSameBlocks), 32);
  return vpdPage(PERIPHERAL_DISK, VpdPage.BLOCK_LIMITS, body);
}

/** Block Device Characteristics (SBC-3 §6.6.1): MEDIUM ROTATION RATE 1 = non-rotating. */
export function blockDeviceCharacteristicsVpd(): Buffer {
  const body = Buffer.alloc(0x3c);
  body.writeUInt16BE(0x0001, 0);
  return vpdPage(PERIPHERAL_DISK, VpdPage.BLOCK_DEVICE_CHARACTERISTICS, body);
}

/** Logical Block Provisioning (SBC-3 §6.6.4): LBPU, LBPWS, LBPWS10 and LBPRZ
 * with provisioning type 2 (thin) when thin provisioned; all clear otherwise. */
export function logicalBlockProvisioningVpd(unit: UnitSnapshot): Buffer {
  const body = Buffer.alloc(4);
  if (unit.thinProvisioned) {
    body[1] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU | LBPWS | LBPWS10 | LBPRZ
    body[2] = 0x02; // PROVISIONING TYPE: thin
  }
  return vpdPage(PERIPHERAL_DISK, VpdPage.LOGICAL_BLOCK_PROVISIONING, body);
}

/** The VPD page `pageCode` of a present LU; INVALID FIELD IN CDB for pages we do not have. */
export function vpdPageData(unit: UnitSnapshot, pageCode: number): Buffer {
  switch (pageCode) {
    case VpdPage.SUPPORTED_PAGES: return supportedPagesVpd(unit);
    case VpdPage.UNIT_SERIAL_NUMBER: return unitSerialVpd(unit);
    case VpdPage.DEVICE_IDENTIFICATION: return deviceIdentificationVpd(unit);
    case VpdPage.BLOCK_LIMITS: return blockLimitsVpd(unit);
    case VpdPage.BLOCK_DEVICE_CHARACTERISTICS: return blockDeviceCharacteristicsVpd();
    case VpdPage.LOGICAL_BLOCK_PROVISIONING: return logicalBlockProvisioningVpd(unit);
    default: throw invalidFieldInCdb(2);
  }
}

/** The INQUIRY answer for an LU, or for an absent LUN when `unit` is undefined. */
export function inquiryData(cmd: InquiryCommand, unit: UnitSnapshot | undefined): Buffer {
  if (!cmd.evpd) return standardInquiryData(unit);
  if (unit) return vpdPageData(unit, cmd.pageCode);
  if (cmd.pageCode === VpdPage.SUPPORTED_PAGES) return supportedPagesVpd(undefined);
  throw invalidFieldInCdb(2);
}

/** The INQUIRY row of the opcode table; it runs with a unit attention pending (SAM-5 §5.14). */
export const inquiryCommand: CommandKind = defineCommand({
  name: 'INQUIRY', opcode: 0x12, cdbLength: 6, ignoresUnitAttention: true,
  parse: parseInquiry,
  execute: (cmd, ctx: CommandContext): ScsiResult => goodWithData(inquiryData(cmd, ctx.unit), cmd.allocationLength),
});
