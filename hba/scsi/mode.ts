// MODE SENSE(6/10) and MODE SELECT(6/10) (SPC-4 §6.11–6.14, §7.5) with the
// caching page (SBC-3 §6.4.5) and the control page (SPC-4 §7.5.8). Only WCE
// is changeable. MODE SELECT decodes and validates the whole parameter list,
// every page, before it applies anything.
import {
  defineCommand,
  good,
  goodWithData,
  requireDataOut,
  type CommandContext,
  type CommandKind,
  type UnitSnapshot,
} from './command.ts';
import {
  ScsiError,
  invalidFieldInCdb,
  invalidFieldInParameterList,
  senseParameterListLengthError,
  senseSavingParametersNotSupported,
} from './sense.ts';
import type { ScsiResult } from './types.ts';

/** Page control (SPC-4 §6.11.1, table 101). */
export const PageControl = { CURRENT: 0, CHANGEABLE: 1, DEFAULT: 2, SAVED: 3 } as const;

/** Mode page codes we implement. */
export const ModePage = { CACHING: 0x08, CONTROL: 0x0a, ALL: 0x3f } as const;

/** One mode page: its code and how its bytes look (2-byte header included). */
interface ModePageDefinition {
  code: number;
  /** Bytes of the page including the 2-byte header. */
  length: number;
  build(unit: UnitSnapshot, pc: number): Buffer;
}

/** WCE bit of the caching page, byte 2 bit 2 (SBC-3 §6.4.5). */
const CACHING_WCE = 0x04;

const cachingPage: ModePageDefinition = {
  code: ModePage.CACHING,
  length: 20,
  build(unit, pc) {
    const page = Buffer.alloc(20);
    page[0] = ModePage.CACHING;
    page[1] = 18;
    if (pc === PageControl.CHANGEABLE) page[2] = CACHING_WCE;
    else {
      const wce = pc === PageControl.DEFAULT ? (unit.params.writeCacheEnabled ?? true) : unit.writeCacheEnabled;
      page[2] = wce ? CACHING_WCE : 0; // RCD = 0: the read cache is on
    }
    return page;
  },
};

const controlPage: ModePageDefinition = {
  code: ModePage.CONTROL,
  length: 12,
  build(_unit, pc) {
    const page = Buffer.alloc(12);
    page[0] = ModePage.CONTROL;
    page[1] = 10;
    if (pc !== PageControl.CHANGEABLE) {
      page[2] = 0x02; // GLTSD: no log parameters are saved; D_SENSE = 0: fixed-format sense
      page[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering; QERR = 0
    }
    return page;
  },
};

const modePages: readonly ModePageDefinition[] = [cachingPage, controlPage];

function findPage(code: number): ModePageDefinition | undefined {
  return modePages.find((p) => p.code === code);
}

/** MODE SENSE as decoded. */
export interface ModeSenseCommand {
  ten: boolean;
  disableBlockDescriptors: boolean;
  longLba: boolean;
  pageControl: number;
  pageCode: number;
  subpageCode: number;
  allocationLength: number;
}

export function parseModeSense6(cdb: Buffer): ModeSenseCommand {
  return {
    ten: false, disableBlockDescriptors: (cdb[1]! & 0x08) !== 0, longLba: false,
    pageControl: cdb[2]! >> 6, pageCode: cdb[2]! & 0x3f, subpageCode: cdb[3]!, allocationLength: cdb[4]!,
  };
}

export function parseModeSense10(cdb: Buffer): ModeSenseCommand {
  return {
    ten: true, disableBlockDescriptors: (cdb[1]! & 0x08) !== 0, longLba: (cdb[1]! & 0x10) !== 0,
    pageControl: cdb[2]! >> 6, pageCode: cdb[2]! & 0x3f, subpageCode: cdb[3]!, allocationLength: cdb.readUInt16BE(7),
  };
}

/** The pages MODE SENSE asks for; subpages are not implemented (only 00h, or FFh = all). */
function selectPages(cmd: ModeSenseCommand): readonly ModePageDefinition[] {
  if (cmd.subpageCode !== 0x00 && cmd.subpageCode !== 0xff) throw invalidFieldInCdb(3);
  if (cmd.pageCode === ModePage.ALL) return modePages;
  const page = findPage(cmd.pageCode);
  if (!page) throw invalidFieldInCdb(2, 5);
  return [page];
}

/** Short (8-byte) or long (16-byte) LBA block descriptor (SBC-3 §6.4.2). */
export function blockDescriptor(unit: UnitSnapshot, long: boolean): Buffer {
  if (long) {
    const d = Buffer.alloc(16);
    d.writeBigUInt64BE(unit.blockCount, 0);
    d.writeUInt32BE(unit.blockSize, 12);
    return d;
  }
  const d = Buffer.alloc(8);
  d.writeUInt32BE(unit.blockCount > 0xffff_ffffn ? 0xffff_ffff : Number(unit.blockCount), 0);
  d.writeUIntBE(unit.blockSize, 5, 3);
  return d;
}

/** DEVICE-SPECIFIC PARAMETER for direct access (SBC-3 §6.4.1): WP and DPOFUA (FUA supported). */
function deviceSpecificParameter(unit: UnitSnapshot): number {
  return (unit.readOnly ? 0x80 : 0) | 0x10;
}

/** The mode parameter data: header, block descriptor, pages (SPC-4 §7.5.4–7.5.5). */
export function modeSenseData(cmd: ModeSenseCommand, unit: UnitSnapshot): Buffer {
  if (cmd.pageControl === PageControl.SAVED) throw new ScsiError(senseSavingParametersNotSupported);
  const pages = selectPages(cmd).map((p) => p.build(unit, cmd.pageControl));
  const descriptor = cmd.disableBlockDescriptors ? Buffer.alloc(0) : blockDescriptor(unit, cmd.longLba);
  const header = Buffer.alloc(cmd.ten ? 8 : 4);
  const total = header.length + descriptor.length + pages.reduce((n, p) => n + p.length, 0);
  if (cmd.ten) {
    header.writeUInt16BE(total - 2, 0);
    header[3] = deviceSpecificParameter(unit);
    header[4] = descriptor.length === 16 ? 0x01 : 0; // LONGLBA
    header.writeUInt16BE(descriptor.length, 6);
  } else {
    header[0] = total - 1;
    header[2] = deviceSpecificParameter(unit);
    header[3] = descriptor.length;
  }
  return Buffer.concat([header, descriptor, ...pages]);
}

/** MODE SELECT as decoded. */
export interface ModeSelectCommand {
  ten: boolean;
  parameterListLength: number;
  lengthByte: number;
}

/** PF must be 1 (SPC-4 page format); SP = 1 is refused: nothing is savable (SPC-4 §6.9). */
function parseModeSelect(cdb: Buffer, ten: boolean): ModeSelectCommand {
  const flags = cdb[1]!;
  if (!(flags & 0x10)) throw invalidFieldInCdb(1, 4);
  if (flags & 0x01) throw invalidFieldInCdb(1, 0);
  return ten
    ? { ten, parameterListLength: cdb.readUInt16BE(7), lengthByte: 7 }
    : { ten, parameterListLength: cdb[4]!, lengthByte: 4 };
}

export const parseModeSelect6 = (cdb: Buffer): ModeSelectCommand => parseModeSelect(cdb, false);
export const parseModeSelect10 = (cdb: Buffer): ModeSelectCommand => parseModeSelect(cdb, true);

/** What a valid MODE SELECT parameter list asks to change. */
export interface ModeChanges {
  writeCacheEnabled?: boolean;
}

function highestBit(value: number): number {
  return 31 - Math.clz32(value);
}

/** Validates the block descriptor: the block size and capacity may not change. */
function checkBlockDescriptor(list: Buffer, offset: number, length: number, unit: UnitSnapshot): void {
  if (length === 16) {
    const blocks = list.readBigUInt64BE(offset);
    if (blocks !== 0n && blocks !== unit.blockCount) throw invalidFieldInParameterList(offset);
    if (list.readUInt32BE(offset + 12) !== unit.blockSize) throw invalidFieldInParameterList(offset + 12);
  } else {
    const blocks = list.readUInt32BE(offset);
    const shown = unit.blockCount > 0xffff_ffffn ? 0xffff_ffff : Number(unit.blockCount);
    if (blocks !== 0 && blocks !== shown) throw invalidFieldInParameterList(offset);
    if (list.readUIntBE(offset + 5, 3) !== unit.blockSize) throw invalidFieldInParameterList(offset + 5);
  }
}

/** Decodes and validates a whole MODE SELECT parameter list (SPC-4 §6.9,
 * §7.5.4) against the current values; any change outside the changeable
 * mask is INVALID FIELD IN PARAMETER LIST, a list cut short is PARAMETER
 * LIST LENGTH ERROR. Pure: returns the changes, applies nothing. */
export function decodeModeSelectList(list: Buffer, ten: boolean, unit: UnitSnapshot): ModeChanges {
  const headerLength = ten ? 8 : 4;
  if (list.length < headerLength) throw new ScsiError(senseParameterListLengthError);
  const mediumTypeByte = ten ? 2 : 1;
  if (list[mediumTypeByte] !== 0) throw invalidFieldInParameterList(mediumTypeByte);
  // MODE DATA LENGTH is reserved in MODE SELECT and the device-specific parameter (WP, DPOFUA) is ignored (SBC-3 §6.4.1).
  const longLba = ten && (list[4]! & 0x01) !== 0;
  const descriptorLength = ten ? list.readUInt16BE(6) : list[3]!;
  const descriptorLengthByte = ten ? 6 : 3;
  if (descriptorLength !== 0 && descriptorLength !== (longLba ? 16 : 8)) {
    throw invalidFieldInParameterList(descriptorLengthByte);
  }
  if (headerLength + descriptorLength > list.length) throw new ScsiError(senseParameterListLengthError);
  if (descriptorLength) checkBlockDescriptor(list, headerLength, descriptorLength, unit);

  const changes: ModeChanges = {};
  let offset = headerLength + descriptorLength;
  while (offset < list.length) { // each step consumes at least 2 bytes
    if (offset + 2 > list.length) throw new ScsiError(senseParameterListLengthError);
    const first = list[offset]!;
    if (first & 0x40) throw invalidFieldInParameterList(offset, 6); // SPF: no subpages implemented
    const page = findPage(first & 0x3f); // PS (bit 7) is reserved in MODE SELECT
    if (!page) throw invalidFieldInParameterList(offset, 5);
    const pageLength = list[offset + 1]! + 2;
    if (offset + pageLength > list.length) throw new ScsiError(senseParameterListLengthError);
    if (pageLength !== page.length) throw invalidFieldInParameterList(offset + 1);
    const given = list.subarray(offset, offset + pageLength);
    const current = page.build(unit, PageControl.CURRENT);
    const changeable = page.build(unit, PageControl.CHANGEABLE);
    for (let i = 2; i < pageLength; i++) {
      const forbidden = (given[i]! ^ current[i]!) & ~changeable[i]!;
      if (forbidden) throw invalidFieldInParameterList(offset + i, highestBit(forbidden));
    }
    if (page.code === ModePage.CACHING) changes.writeCacheEnabled = (given[2]! & CACHING_WCE) !== 0;
    offset += pageLength;
  }
  return changes;
}

/** Validates the whole list, then applies it. PARAMETER LIST LENGTH 0
 * changes nothing (SPC-4 §6.9). With one initiator per LU there is no other
 * I_T nexus to tell, so no MODE PARAMETERS CHANGED unit attention (SPC-4 §7.5.3). */
function executeModeSelect(cmd: ModeSelectCommand, ctx: CommandContext): ScsiResult {
  if (cmd.parameterListLength === 0) return { ...good(), dataOutConsumed: 0 };
  const list = requireDataOut(ctx, cmd.parameterListLength, cmd.lengthByte);
  const changes = decodeModeSelectList(list, cmd.ten, ctx.unit);
  if (changes.writeCacheEnabled !== undefined) ctx.hooks.setWriteCacheEnabled(changes.writeCacheEnabled);
  return { ...good(), dataOutConsumed: list.length };
}

/** The MODE SENSE / MODE SELECT rows of the opcode table. */
export const modeCommands: readonly CommandKind[] = [
  defineCommand({
    name: 'MODE SENSE(6)', opcode: 0x1a, cdbLength: 6, parse: parseModeSense6,
    execute: (cmd, ctx) => goodWithData(modeSenseData(cmd, ctx.unit), cmd.allocationLength),
  }),
  defineCommand({
    name: 'MODE SENSE(10)', opcode: 0x5a, cdbLength: 10, parse: parseModeSense10,
    execute: (cmd, ctx) => goodWithData(modeSenseData(cmd, ctx.unit), cmd.allocationLength),
  }),
  defineCommand({
    name: 'MODE SELECT(6)', opcode: 0x15, cdbLength: 6, parse: parseModeSelect6, execute: executeModeSelect,
  }),
  defineCommand({
    name: 'MODE SELECT(10)', opcode: 0x55, cdbLength: 10, parse: parseModeSelect10, execute: executeModeSelect,
  }),
];
