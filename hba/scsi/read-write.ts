// READ/WRITE(6/10/12/16), VERIFY(10/16) and WRITE AND VERIFY(10/16)
// (SBC-3 §5.8–5.14, §5.29–5.40). CDB values are bigints, so LBA + length is
// checked without wrapping at 2^64; transfers are bounded by the Block
// Limits VPD MAXIMUM TRANSFER LENGTH before any buffer is allocated.
import {
  checkLbaRange,
  defineCommand,
  good,
  requireDataOut,
  requireWritable,
  type CommandContext,
  type CommandKind,
} from './command.ts';
import { ScsiError, invalidFieldInCdb, senseMiscompareDuringVerify } from './sense.ts';
import { Status, type ScsiResult } from './types.ts';

/** Where a CDB variant keeps its fields. */
interface TransferLayout {
  cdbLength: 6 | 10 | 12 | 16;
  lengthByte: number;
}

const LAYOUT_6: TransferLayout = { cdbLength: 6, lengthByte: 4 };
const LAYOUT_10: TransferLayout = { cdbLength: 10, lengthByte: 7 };
const LAYOUT_12: TransferLayout = { cdbLength: 12, lengthByte: 6 };
const LAYOUT_16: TransferLayout = { cdbLength: 16, lengthByte: 10 };

/** A block range named by a CDB. */
export interface BlockRange {
  lba: bigint;
  blocks: bigint;
  /** CDB byte of the TRANSFER LENGTH field, for field pointers. */
  lengthByte: number;
}

/** Decodes LBA and TRANSFER LENGTH. READ(6)/WRITE(6): 21-bit LBA, a length of 0 means 256 blocks (SBC-3 §5.8, §5.32). */
export function decodeBlockRange(cdb: Buffer, layout: TransferLayout): BlockRange {
  switch (layout.cdbLength) {
    case 6: {
      const lba = BigInt(((cdb[1]! & 0x1f) << 16) | cdb.readUInt16BE(2));
      const length = cdb[4]!;
      return { lba, blocks: BigInt(length === 0 ? 256 : length), lengthByte: 4 };
    }
    case 10:
      return { lba: BigInt(cdb.readUInt32BE(2)), blocks: BigInt(cdb.readUInt16BE(7)), lengthByte: 7 };
    case 12:
      return { lba: BigInt(cdb.readUInt32BE(2)), blocks: BigInt(cdb.readUInt32BE(6)), lengthByte: 6 };
    case 16:
      return { lba: cdb.readBigUInt64BE(2), blocks: BigInt(cdb.readUInt32BE(10)), lengthByte: 10 };
  }
}

/** A READ or WRITE as decoded. */
export interface TransferCommand extends BlockRange {
  /** Force unit access: for writes, durable before GOOD. */
  fua: boolean;
}

/** RDPROTECT/WRPROTECT (byte 1 bits 7..5) must be 0: no protection information (SBC-3 §5.11). */
function parseTransfer(cdb: Buffer, layout: TransferLayout): TransferCommand {
  const range = decodeBlockRange(cdb, layout);
  if (layout.cdbLength === 6) return { ...range, fua: false };
  const flags = cdb[1]!;
  if (flags & 0xe0) throw invalidFieldInCdb(1, 7);
  return { ...range, fua: (flags & 0x08) !== 0 }; // DPO (bit 4) is a caching hint: ignored
}

/** Refuses a transfer longer than the advertised MAXIMUM TRANSFER LENGTH (SBC-3 §6.6.3). */
function checkTransferLength(range: BlockRange, ctx: CommandContext): void {
  if (range.blocks > BigInt(ctx.unit.limits.maxTransferBlocks)) throw invalidFieldInCdb(range.lengthByte);
}

async function executeRead(cmd: TransferCommand, ctx: CommandContext): Promise<ScsiResult> {
  checkTransferLength(cmd, ctx);
  checkLbaRange(cmd.lba, cmd.blocks, ctx.unit);
  if (cmd.blocks === 0n) return good();
  const bs = ctx.unit.blockSize;
  const length = Number(cmd.blocks) * bs;
  const data = await ctx.backend.read(Number(cmd.lba) * bs, length);
  ctx.hooks.recordRead(length);
  return { status: Status.GOOD, dataIn: data };
}

/** Writes are durable before GOOD when FUA is set or the write cache is off (SBC-3 §4.15). */
async function executeWrite(cmd: TransferCommand, ctx: CommandContext): Promise<ScsiResult> {
  requireWritable(ctx);
  checkTransferLength(cmd, ctx);
  checkLbaRange(cmd.lba, cmd.blocks, ctx.unit);
  if (cmd.blocks === 0n) return { status: Status.GOOD, dataOutConsumed: 0 };
  const bs = ctx.unit.blockSize;
  const length = Number(cmd.blocks) * bs;
  const data = requireDataOut(ctx, length, cmd.lengthByte);
  await ctx.backend.write(Number(cmd.lba) * bs, data, cmd.fua || !ctx.unit.writeCacheEnabled);
  ctx.hooks.recordWrite(length);
  return { status: Status.GOOD, dataOutConsumed: length };
}

function readKind(name: string, opcode: number, layout: TransferLayout): CommandKind {
  return defineCommand({
    name, opcode, cdbLength: layout.cdbLength, ioFailure: 'read',
    parse: (cdb) => parseTransfer(cdb, layout),
    execute: executeRead,
  });
}

function writeKind(name: string, opcode: number, layout: TransferLayout): CommandKind {
  return defineCommand({
    name, opcode, cdbLength: layout.cdbLength, ioFailure: 'write', writesMedium: true,
    parse: (cdb) => parseTransfer(cdb, layout),
    execute: executeWrite,
  });
}

/** BYTCHK values (SBC-3 §5.29 table 69): 0 = medium check only, 1 = compare
 * with data-out, 3 = compare every block with one data-out block. */
export type ByteCheck = 0 | 1 | 3;

/** A VERIFY or WRITE AND VERIFY as decoded. */
export interface VerifyCommand extends BlockRange {
  byteCheck: ByteCheck;
}

function parseVerify(cdb: Buffer, layout: TransferLayout, allowSingleBlock: boolean): VerifyCommand {
  const flags = cdb[1]!;
  if (flags & 0xe0) throw invalidFieldInCdb(1, 7); // VRPROTECT / WRPROTECT
  const byteCheck = (flags >> 1) & 0x03;
  if (byteCheck === 2 || (byteCheck === 3 && !allowSingleBlock)) throw invalidFieldInCdb(1, 2);
  return { ...decodeBlockRange(cdb, layout), byteCheck: byteCheck as ByteCheck };
}

/** Offset of the first differing byte, or -1. */
function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** VERIFY: with BYTCHK = 0 the medium is always readable, so GOOD after the range check. */
async function executeVerify(cmd: VerifyCommand, ctx: CommandContext): Promise<ScsiResult> {
  if (cmd.byteCheck !== 0) checkTransferLength(cmd, ctx);
  checkLbaRange(cmd.lba, cmd.blocks, ctx.unit);
  if (cmd.blocks === 0n || cmd.byteCheck === 0) return { status: Status.GOOD, dataOutConsumed: 0 };
  const bs = ctx.unit.blockSize;
  const length = Number(cmd.blocks) * bs;
  const expectedLength = cmd.byteCheck === 1 ? length : bs;
  const expected = requireDataOut(ctx, expectedLength, cmd.lengthByte);
  const medium = await ctx.backend.read(Number(cmd.lba) * bs, length);
  for (let offset = 0; offset < length; offset += expectedLength) {
    const diff = firstDifference(medium.subarray(offset, offset + expectedLength), expected);
    if (diff >= 0) {
      // INFORMATION: offset of the first miscompared byte (SBC-3 §5.29).
      throw new ScsiError(senseMiscompareDuringVerify, { information: BigInt(offset + diff) });
    }
  }
  return { status: Status.GOOD, dataOutConsumed: expectedLength };
}

/** WRITE AND VERIFY: the write is made durable, after which the medium is verified by construction. */
async function executeWriteAndVerify(cmd: VerifyCommand, ctx: CommandContext): Promise<ScsiResult> {
  return executeWrite({ lba: cmd.lba, blocks: cmd.blocks, lengthByte: cmd.lengthByte, fua: true }, ctx);
}

/** The READ/WRITE/VERIFY rows of the opcode table. */
export const readWriteCommands: readonly CommandKind[] = [
  readKind('READ(6)', 0x08, LAYOUT_6),
  readKind('READ(10)', 0x28, LAYOUT_10),
  readKind('READ(12)', 0xa8, LAYOUT_12),
  readKind('READ(16)', 0x88, LAYOUT_16),
  writeKind('WRITE(6)', 0x0a, LAYOUT_6),
  writeKind('WRITE(10)', 0x2a, LAYOUT_10),
  writeKind('WRITE(12)', 0xaa, LAYOUT_12),
  writeKind('WRITE(16)', 0x8a, LAYOUT_16),
  defineCommand({
    name: 'VERIFY(10)', opcode: 0x2f, cdbLength: 10, ioFailure: 'read',
    parse: (cdb) => parseVerify(cdb, LAYOUT_10, true),
    execute: executeVerify,
  }),
  defineCommand({
    name: 'VERIFY(16)', opcode: 0x8f, cdbLength: 16, ioFailure: 'read',
    parse: (cdb) => parseVerify(cdb, LAYOUT_16, true),
    execute: executeVerify,
  }),
  defineCommand({
    name: 'WRITE AND VERIFY(10)', opcode: 0x2e, cdbLength: 10, ioFailure: 'write', writesMedium: true,
    parse: (cdb) => parseVerify(cdb, LAYOUT_10, false),
    execute: executeWriteAndVerify,
  }),
  defineCommand({
    name: 'WRITE AND VERIFY(16)', opcode: 0x8e, cdbLength: 16, ioFailure: 'write', writesMedium: true,
    parse: (cdb) => parseVerify(cdb, LAYOUT_16, false),
    execute: executeWriteAndVerify,
  }),
];
