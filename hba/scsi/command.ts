// The shape every command family shares: a CommandKind (one row of the opcode
// table) decodes a CDB into a typed, frozen command and executes it against a
// per-command snapshot of the logical unit. Two steps, as vhost-device-scsi
// does: opcode → kind (opcode-table.ts), then CDB → typed command (each
// family's parse function, with its validation beside it).
import { ScsiError, invalidFieldInCdb, senseLbaOutOfRange, senseWriteProtected } from './sense.ts';
import { Status, type BlockBackend, type LogicalUnitParams, type ScsiResult } from './types.ts';

/** Limits the target advertises in the Block Limits VPD page (SBC-3 §6.6.3)
 * and enforces; all counts are in logical blocks. */
export interface BlockLimits {
  readonly maxTransferBlocks: number;
  readonly optimalTransferBlocks: number;
  readonly maxUnmapBlocks: number;
  readonly maxUnmapDescriptors: number;
  readonly unmapGranularityBlocks: number;
  readonly maxWriteSameBlocks: number;
}

/** The logical unit as one command sees it: taken once when the command
 * starts and never changed while it runs. */
export interface UnitSnapshot {
  readonly params: Readonly<LogicalUnitParams>;
  readonly blockSize: number;
  readonly physicalBlockSize: number;
  /** log2(physical / logical), READ CAPACITY(16) LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT. */
  readonly physicalExponent: number;
  /** Capacity in logical blocks. */
  readonly blockCount: bigint;
  readonly readOnly: boolean;
  readonly writeCacheEnabled: boolean;
  readonly thinProvisioned: boolean;
  readonly limits: BlockLimits;
}

/** What a command may change on its logical unit. */
export interface UnitHooks {
  /** MODE SELECT: sets WCE for later commands. */
  setWriteCacheEnabled(enabled: boolean): void;
  /** REQUEST SENSE: removes and returns the oldest pending unit attention. */
  takeUnitAttention(): Buffer | undefined;
  recordRead(bytes: number): void;
  recordWrite(bytes: number): void;
}

/** Everything a command's execute step gets. */
export interface CommandContext {
  readonly unit: UnitSnapshot;
  readonly backend: BlockBackend;
  readonly dataOut: Buffer;
  readonly dataInCapacity: number;
  readonly hooks: UnitHooks;
}

/** Which sense a backend failure maps to (read → 03/11/00, write → 03/0C/00, other → 04/44/00). */
export type IoFailure = 'read' | 'write' | 'other';

/** A decoded command ready to run. */
export interface DecodedCommand {
  readonly command: unknown;
  execute(ctx: CommandContext): Promise<ScsiResult>;
}

/** One row of the opcode table. */
export interface CommandKind {
  readonly name: string;
  readonly opcode: number;
  /** For opcodes with service actions (9Eh, A3h): the action in CDB byte 1 bits 4..0. */
  readonly serviceAction?: number;
  readonly cdbLength: number;
  /** INQUIRY, REPORT LUNS and REQUEST SENSE run while a unit attention is pending (SAM-5 §5.14). */
  readonly ignoresUnitAttention: boolean;
  /** Refused with DATA PROTECT on a read-only LU (checked by the command itself after CDB validation). */
  readonly writesMedium: boolean;
  readonly ioFailure: IoFailure;
  /** Validates the CDB (exactly cdbLength bytes) and returns the typed command; throws ScsiError. */
  decode(cdb: Buffer): DecodedCommand;
}

/** The definition of one command: its parser and its executor, typed together. */
export interface CommandSpec<T> {
  name: string;
  opcode: number;
  serviceAction?: number;
  cdbLength: number;
  ignoresUnitAttention?: boolean;
  writesMedium?: boolean;
  ioFailure?: IoFailure;
  parse(cdb: Buffer): T;
  execute(command: T, ctx: CommandContext): ScsiResult | Promise<ScsiResult>;
}

/** Turns a CommandSpec into a table row; the parsed command is frozen. */
export function defineCommand<T extends object>(spec: CommandSpec<T>): CommandKind {
  return Object.freeze({
    name: spec.name,
    opcode: spec.opcode,
    serviceAction: spec.serviceAction,
    cdbLength: spec.cdbLength,
    ignoresUnitAttention: spec.ignoresUnitAttention ?? false,
    writesMedium: spec.writesMedium ?? false,
    ioFailure: spec.ioFailure ?? 'other',
    decode(cdb: Buffer): DecodedCommand {
      const command = Object.freeze(spec.parse(cdb));
      return { command, execute: async (ctx) => spec.execute(command, ctx) };
    },
  });
}

/** CDB length by group code (SPC-4 §4.2.5.1): opcode bits 7..5. Groups 3
 * (variable length), 6 and 7 (vendor specific) are not supported. */
export function cdbLengthForOpcode(opcode: number): number | undefined {
  return [6, 10, 10, undefined, 16, 12, undefined, undefined][(opcode >> 5) & 7];
}

/** The CONTROL byte is the last CDB byte (SAM-5 §5.2); NACA = 1 is refused
 * because ACA is not supported (SPC-4 §7.5.8 NormACA = 0). */
export function checkControlByte(cdb: Buffer): void {
  const last = cdb.length - 1;
  if (cdb[last]! & 0x04) throw invalidFieldInCdb(last, 2);
}

/** A GOOD result with no data. */
export function good(): ScsiResult {
  return { status: Status.GOOD };
}

/** A GOOD result carrying `data`, truncated to the CDB's ALLOCATION LENGTH (SPC-4 §4.2.5.6). */
export function goodWithData(data: Buffer, allocationLength: number): ScsiResult {
  return { status: Status.GOOD, dataIn: data.length > allocationLength ? data.subarray(0, allocationLength) : data };
}

/** The first `length` data-out bytes; a shorter data-out buffer than the CDB
 * announces is refused as INVALID FIELD IN CDB pointing at the length field. */
export function requireDataOut(ctx: CommandContext, length: number, lengthFieldByte: number): Buffer {
  if (ctx.dataOut.length < length) throw invalidFieldInCdb(lengthFieldByte);
  return ctx.dataOut.subarray(0, length);
}

/** Refuses commands that change the medium on a read-only LU: DATA PROTECT / WRITE PROTECTED. */
export function requireWritable(ctx: CommandContext): void {
  if (ctx.unit.readOnly) throw new ScsiError(senseWriteProtected);
}

/** Overflow-safe range check (SBC-3 §4.5): [lba, lba+count) must lie within
 * the capacity. By subtraction on bigints, so lba + count never wraps. */
export function lbaRangeValid(lba: bigint, count: bigint, blockCount: bigint): boolean {
  return count <= blockCount && lba <= blockCount - count;
}

/** Throws LOGICAL BLOCK ADDRESS OUT OF RANGE unless [lba, lba+count) is on the medium. */
export function checkLbaRange(lba: bigint, count: bigint, unit: UnitSnapshot): void {
  if (!lbaRangeValid(lba, count, unit.blockCount)) throw new ScsiError(senseLbaOutOfRange);
}
