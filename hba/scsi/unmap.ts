// UNMAP (SBC-3 §5.28) and WRITE SAME(10/16) (SBC-3 §5.41, §5.42). Every
// descriptor of an UNMAP is validated before any range is discarded; WRITE
// SAME is bounded by MAXIMUM WRITE SAME LENGTH (VPD B0h) and writes in
// bounded chunks, so no guest value can make us loop 2^32 times.
import {
  checkLbaRange,
  defineCommand,
  requireDataOut,
  requireWritable,
  type CommandContext,
  type CommandKind,
} from './command.ts';
import {
  ScsiError,
  invalidFieldInCdb,
  invalidFieldInParameterList,
  senseInvalidOpcode,
  senseLbaOutOfRange,
  senseParameterListLengthError,
} from './sense.ts';
import { Status, type ScsiResult } from './types.ts';

/** One UNMAP block descriptor (SBC-3 §5.28.2, table 87). */
export interface UnmapRange {
  lba: bigint;
  blocks: bigint;
}

/** UNMAP as decoded. */
export interface UnmapCommand {
  parameterListLength: number;
}

/** ANCHOR = 1 is refused: anchored LBAs are not supported (ANC_SUP = 0). */
export function parseUnmap(cdb: Buffer): UnmapCommand {
  if (cdb[1]! & 0x01) throw invalidFieldInCdb(1, 0);
  return { parameterListLength: cdb.readUInt16BE(7) };
}

/** Decodes and validates an UNMAP parameter list: header lengths consistent
 * with the list, descriptor count and total block count within the Block
 * Limits, every range on the medium. Returns the non-empty ranges. */
export function decodeUnmapList(
  list: Buffer,
  limits: { maxUnmapBlocks: number; maxUnmapDescriptors: number },
  blockCount: bigint,
): UnmapRange[] {
  if (list.length < 8) throw new ScsiError(senseParameterListLengthError);
  const dataLength = list.readUInt16BE(0);
  const descriptorDataLength = list.readUInt16BE(2);
  if (dataLength + 2 > list.length) throw new ScsiError(senseParameterListLengthError);
  if (descriptorDataLength + 8 > list.length || descriptorDataLength % 16 !== 0) {
    throw new ScsiError(senseParameterListLengthError);
  }
  const count = descriptorDataLength / 16;
  if (count > limits.maxUnmapDescriptors) throw invalidFieldInParameterList(2);
  const ranges: UnmapRange[] = [];
  let total = 0n;
  for (let i = 0; i < count; i++) {
    const offset = 8 + i * 16;
    const lba = list.readBigUInt64BE(offset);
    const blocks = BigInt(list.readUInt32BE(offset + 8));
    total += blocks;
    if (total > BigInt(limits.maxUnmapBlocks)) throw invalidFieldInParameterList(offset + 8);
    if (!(blocks <= blockCount && lba <= blockCount - blocks)) {
      throw new ScsiError(senseLbaOutOfRange);
    }
    if (blocks > 0n) ranges.push({ lba, blocks });
  }
  return ranges;
}

/** Deallocation is made durable before GOOD when the write cache is off. */
async function flushIfWriteThrough(ctx: CommandContext): Promise<void> {
  if (!ctx.unit.writeCacheEnabled) await ctx.backend.flush();
}

/** UNMAP on a fully provisioned LU (LBPME = 0) is an invalid opcode (SBC-3 §4.7.3.1). */
async function executeUnmap(cmd: UnmapCommand, ctx: CommandContext): Promise<ScsiResult> {
  if (!ctx.unit.thinProvisioned) throw new ScsiError(senseInvalidOpcode);
  requireWritable(ctx);
  if (cmd.parameterListLength === 0) return { status: Status.GOOD, dataOutConsumed: 0 };
  const list = requireDataOut(ctx, cmd.parameterListLength, 7);
  const ranges = decodeUnmapList(list, ctx.unit.limits, ctx.unit.blockCount);
  const bs = ctx.unit.blockSize;
  for (const r of ranges) await ctx.backend.discard(Number(r.lba) * bs, Number(r.blocks) * bs);
  if (ranges.length) await flushIfWriteThrough(ctx);
  return { status: Status.GOOD, dataOutConsumed: list.length };
}

/** WRITE SAME as decoded. */
export interface WriteSameCommand {
  lba: bigint;
  blocks: bigint;
  unmap: boolean;
  /** WRITE SAME(16) NDOB: no data-out buffer, the block is all zeros. */
  noDataOut: boolean;
  lengthByte: number;
}

/** WRPROTECT must be 0, ANCHOR is not supported, PBDATA/LBDATA are obsolete (SBC-3 §5.41). */
function checkWriteSameFlags(flags: number, allowNdob: boolean): void {
  if (flags & 0xe0) throw invalidFieldInCdb(1, 7);
  if (flags & 0x10) throw invalidFieldInCdb(1, 4);
  if (flags & 0x06) throw invalidFieldInCdb(1, 2);
  if (!allowNdob && flags & 0x01) throw invalidFieldInCdb(1, 0);
}

export function parseWriteSame10(cdb: Buffer): WriteSameCommand {
  checkWriteSameFlags(cdb[1]!, false);
  return { lba: BigInt(cdb.readUInt32BE(2)), blocks: BigInt(cdb.readUInt16BE(7)), unmap: (cdb[1]! & 0x08) !== 0, noDataOut: false, lengthByte: 7 };
}

export function parseWriteSame16(cdb: Buffer): WriteSameCommand {
  checkWriteSameFlags(cdb[1]!, true);
  return {
    lba: cdb.readBigUInt64BE(2), blocks: BigInt(cdb.readUInt32BE(10)),
    unmap: (cdb[1]! & 0x08) !== 0, noDataOut: (cdb[1]! & 0x01) !== 0, lengthByte: 10,
  };
}

/** Largest single write WRITE SAME issues when repeating a non-zero block. */
export const WRITE_SAME_CHUNK_BYTES = 1 << 20;

/** Writes `block` repeated over `blocks` blocks from `offset`, in chunks of at most WRITE_SAME_CHUNK_BYTES. */
async function writeRepeated(ctx: CommandContext, offset: number, block: Buffer, blocks: number): Promise<void> {
  const bs = block.length;
  const perChunk = Math.max(1, Math.floor(WRITE_SAME_CHUNK_BYTES / bs));
  const chunk = Buffer.alloc(Math.min(perChunk, blocks) * bs);
  for (let i = 0; i < chunk.length; i += bs) block.copy(chunk, i);
  const fua = !ctx.unit.writeCacheEnabled;
  for (let done = 0; done < blocks;) { // at most maxWriteSameBlocks / perChunk iterations
    const n = Math.min(perChunk, blocks - done);
    await ctx.backend.write(offset + done * bs, n * bs === chunk.length ? chunk : chunk.subarray(0, n * bs), fua);
    done += n;
  }
}

/** WRITE SAME: zero blocks are refused (WSNZ = 1), counts above MAXIMUM WRITE
 * SAME LENGTH are refused; an all-zero block with UNMAP deallocates (LBPRZ =
 * 1 keeps the data zero), an all-zero block writes zeroes, any other block is
 * repeated. */
async function executeWriteSame(cmd: WriteSameCommand, ctx: CommandContext): Promise<ScsiResult> {
  requireWritable(ctx);
  const unit = ctx.unit;
  if (cmd.blocks === 0n || cmd.blocks > BigInt(unit.limits.maxWriteSameBlocks)) throw invalidFieldInCdb(cmd.lengthByte);
  checkLbaRange(cmd.lba, cmd.blocks, unit);
  const bs = unit.blockSize;
  const block = cmd.noDataOut ? undefined : requireDataOut(ctx, bs, cmd.lengthByte);
  const offset = Number(cmd.lba) * bs;
  const blocks = Number(cmd.blocks);
  const zero = !block || block.every((b) => b === 0);
  if (zero && cmd.unmap && unit.thinProvisioned) {
    await ctx.backend.discard(offset, blocks * bs);
    await flushIfWriteThrough(ctx);
  } else if (zero) {
    await ctx.backend.writeZeroes(offset, blocks * bs);
    await flushIfWriteThrough(ctx);
    ctx.hooks.recordWrite(blocks * bs);
  } else {
    await writeRepeated(ctx, offset, block!, blocks);
    ctx.hooks.recordWrite(blocks * bs);
  }
  return { status: Status.GOOD, dataOutConsumed: block ? bs : 0 };
}

/** The UNMAP / WRITE SAME rows of the opcode table. */
export const unmapCommands: readonly CommandKind[] = [
  defineCommand({
    name: 'UNMAP', opcode: 0x42, cdbLength: 10, ioFailure: 'write', writesMedium: true,
    parse: parseUnmap, execute: executeUnmap,
  }),
  defineCommand({
    name: 'WRITE SAME(10)', opcode: 0x41, cdbLength: 10, ioFailure: 'write', writesMedium: true,
    parse: parseWriteSame10, execute: executeWriteSame,
  }),
  defineCommand({
    name: 'WRITE SAME(16)', opcode: 0x93, cdbLength: 16, ioFailure: 'write', writesMedium: true,
    parse: parseWriteSame16, execute: executeWriteSame,
  }),
];
