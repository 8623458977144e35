// SYNCHRONIZE CACHE(10/16) (SBC-3 §5.22, §5.23): after the range check,
// every completed write becomes durable (backend.flush = fdatasync) before
// GOOD. The range only narrows what must be flushed, so flushing the whole
// backend is always correct. IMMED is accepted and ignored: we always answer
// after the flush.
import { checkLbaRange, defineCommand, good, type CommandContext, type CommandKind } from './command.ts';
import { invalidFieldInCdb } from './sense.ts';
import type { ScsiResult } from './types.ts';

/** A SYNCHRONIZE CACHE as decoded; blocks = 0 means "to the end of the medium". */
export interface SynchronizeCacheCommand {
  lba: bigint;
  blocks: bigint;
}

/** SYNCHRONIZE CACHE(10): LBA bytes 2..5, NUMBER OF LOGICAL BLOCKS bytes 7..8. */
export function parseSynchronizeCache10(cdb: Buffer): SynchronizeCacheCommand {
  if (cdb[1]! & 0xf9) throw invalidFieldInCdb(1, 7); // only SYNC_NV (obsolete, bit 2) and IMMED (bit 1)
  return { lba: BigInt(cdb.readUInt32BE(2)), blocks: BigInt(cdb.readUInt16BE(7)) };
}

/** SYNCHRONIZE CACHE(16): LBA bytes 2..9, NUMBER OF LOGICAL BLOCKS bytes 10..13. */
export function parseSynchronizeCache16(cdb: Buffer): SynchronizeCacheCommand {
  if (cdb[1]! & 0xf9) throw invalidFieldInCdb(1, 7);
  return { lba: cdb.readBigUInt64BE(2), blocks: BigInt(cdb.readUInt32BE(10)) };
}

async function executeSynchronizeCache(cmd: SynchronizeCacheCommand, ctx: CommandContext): Promise<ScsiResult> {
  checkLbaRange(cmd.lba, cmd.blocks, ctx.unit);
  await ctx.backend.flush();
  return good();
}

/** The SYNCHRONIZE CACHE rows of the opcode table. */
export const syncCommands: readonly CommandKind[] = [
  defineCommand({
    name: 'SYNCHRONIZE CACHE(10)', opcode: 0x35, cdbLength: 10, ioFailure: 'write',
    parse: parseSynchronizeCache10, execute: executeSynchronizeCache,
  }),
  defineCommand({
    name: 'SYNCHRONIZE CACHE(16)', opcode: 0x91, cdbLength: 16, ioFailure: 'write',
    parse: parseSynchronizeCache16, execute: executeSynchronizeCache,
  }),
];
