// READ CAPACITY(10) (SBC-3 §5.15) and READ CAPACITY(16), the SERVICE ACTION
// IN(16) 9Eh/10h (SBC-3 §5.16).
import { defineCommand, goodWithData, type CommandContext, type CommandKind } from './command.ts';
import { invalidFieldInCdb } from './sense.ts';
import type { ScsiResult } from './types.ts';

/** SERVICE ACTION IN(16) operation code and its READ CAPACITY(16) action. */
export const SERVICE_ACTION_IN_16 = 0x9e;
export const SA_READ_CAPACITY_16 = 0x10;

/** READ CAPACITY(10) as decoded (PMI and the LBA field are obsolete in SBC-3 and only validated). */
export type ReadCapacity10Command = Record<string, never>;

/** PMI = 0 with a non-zero LOGICAL BLOCK ADDRESS is INVALID FIELD IN CDB (SBC-3 §5.15.1). */
export function parseReadCapacity10(cdb: Buffer): ReadCapacity10Command {
  if (cdb[1]! & 0x01) throw invalidFieldInCdb(1, 0); // RELADR is obsolete (SCSI-2)
  const pmi = (cdb[8]! & 0x01) !== 0;
  if (!pmi && cdb.readUInt32BE(2) !== 0) throw invalidFieldInCdb(2);
  return {};
}

/** The 8-byte READ CAPACITY(10) data: last LBA (FFFFFFFFh when it does not fit) and block length. */
export function readCapacity10Data(ctx: CommandContext): Buffer {
  const data = Buffer.alloc(8);
  const lastLba = ctx.unit.blockCount - 1n;
  data.writeUInt32BE(lastLba > 0xffff_fffen ? 0xffff_ffff : Number(lastLba < 0n ? 0n : lastLba), 0);
  data.writeUInt32BE(ctx.unit.blockSize, 4);
  return data;
}

/** READ CAPACITY(16) as decoded. */
export interface ReadCapacity16Command {
  allocationLength: number;
}

export function parseReadCapacity16(cdb: Buffer): ReadCapacity16Command {
  return { allocationLength: cdb.readUInt32BE(10) };
}

/** Length of the READ CAPACITY(16) parameter data (SBC-3 §5.16.2). */
export const READ_CAPACITY_16_LENGTH = 32;

/** READ CAPACITY(16) data: last LBA, block length, LOGICAL BLOCKS PER PHYSICAL
 * BLOCK EXPONENT, LBPME and LBPRZ (set together when thin provisioned). */
export function readCapacity16Data(ctx: CommandContext): Buffer {
  const unit = ctx.unit;
  const data = Buffer.alloc(READ_CAPACITY_16_LENGTH);
  const lastLba = unit.blockCount - 1n;
  data.writeBigUInt64BE(lastLba < 0n ? 0n : lastLba, 0);
  data.writeUInt32BE(unit.blockSize, 8);
  data[13] = unit.physicalExponent & 0x0f;
  if (unit.thinProvisioned) data[14] = 0xc0; // LBPME | LBPRZ; LOWEST ALIGNED LBA = 0
  return data;
}

/** The READ CAPACITY rows of the opcode table. */
export const capacityCommands: readonly CommandKind[] = [
  defineCommand({
    name: 'READ CAPACITY(10)', opcode: 0x25, cdbLength: 10,
    parse: parseReadCapacity10,
    execute: (_cmd, ctx): ScsiResult => goodWithData(readCapacity10Data(ctx), 8),
  }),
  defineCommand({
    name: 'READ CAPACITY(16)', opcode: SERVICE_ACTION_IN_16, serviceAction: SA_READ_CAPACITY_16, cdbLength: 16,
    parse: parseReadCapacity16,
    execute: (cmd, ctx): ScsiResult => goodWithData(readCapacity16Data(ctx), cmd.allocationLength),
  }),
];
