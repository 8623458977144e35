// The opcode table of a disk logical unit: step one of the two-step parse
// (opcode, and service action where the opcode has them, → CommandKind).
// Also REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35), which is answered
// from this table.
import { capacityCommands } from './capacity.ts';
import { cdbLengthForOpcode, defineCommand, goodWithData, type CommandKind } from './command.ts';
import { inquiryCommand } from './inquiry.ts';
import { modeCommands } from './mode.ts';
import { readWriteCommands } from './read-write.ts';
import { parseReportLuns } from './report-luns.ts';
import { ScsiError, invalidFieldInCdb, senseInvalidOpcode } from './sense.ts';
import { syncCommands } from './sync.ts';
import { unitControlCommands } from './unit-control.ts';
import { unmapCommands } from './unmap.ts';

/** Opcodes whose CDB carries a SERVICE ACTION in byte 1 bits 4..0. */
export const MAINTENANCE_IN = 0xa3;
export const SA_REPORT_SUPPORTED_OPERATION_CODES = 0x0c;
/** REPORT LUNS (SPC-4 §6.33), answered by the target, not by a logical unit. */
export const REPORT_LUNS = 0xa0;

/** An opcode's row: one kind, or one kind per service action. */
type TableEntry = CommandKind | Map<number, CommandKind>;

/** The opcode → kind table. */
export class OpcodeTable {
  readonly #entries = new Map<number, TableEntry>();
  readonly #kinds: CommandKind[] = [];

  constructor(kinds: readonly CommandKind[]) {
    for (const kind of kinds) this.add(kind);
  }

  /** Adds a row; a duplicate opcode/service action is a programming error. */
  add(kind: CommandKind): void {
    if (cdbLengthForOpcode(kind.opcode) !== kind.cdbLength) throw new Error(`${kind.name}: CDB length disagrees with its group code`);
    const existing = this.#entries.get(kind.opcode);
    if (kind.serviceAction === undefined) {
      if (existing) throw new Error(`opcode ${kind.opcode.toString(16)} defined twice`);
      this.#entries.set(kind.opcode, kind);
    } else {
      if (existing && !(existing instanceof Map)) throw new Error(`opcode ${kind.opcode.toString(16)} mixes service actions`);
      const actions = existing ?? new Map<number, CommandKind>();
      if (actions.has(kind.serviceAction)) throw new Error(`${kind.name} defined twice`);
      actions.set(kind.serviceAction, kind);
      this.#entries.set(kind.opcode, actions);
    }
    this.#kinds.push(kind);
  }

  /** Whether `opcode` uses service actions; undefined when the opcode is unknown. */
  hasServiceActions(opcode: number): boolean | undefined {
    const entry = this.#entries.get(opcode);
    return entry === undefined ? undefined : entry instanceof Map;
  }

  /** The kind for (opcode, service action), or undefined. */
  find(opcode: number, serviceAction?: number): CommandKind | undefined {
    const entry = this.#entries.get(opcode);
    if (entry instanceof Map) return serviceAction === undefined ? undefined : entry.get(serviceAction);
    return entry;
  }

  /** Step one of the parse: the kind for this CDB. Unknown opcode →
   * INVALID COMMAND OPERATION CODE; unknown service action → INVALID FIELD IN CDB. */
  lookup(cdb: Buffer): CommandKind {
    if (cdb.length === 0) throw new ScsiError(senseInvalidOpcode);
    const entry = this.#entries.get(cdb[0]!);
    if (!entry) throw new ScsiError(senseInvalidOpcode);
    if (!(entry instanceof Map)) return entry;
    if (cdb.length < 2) throw invalidFieldInCdb(1, 4);
    const kind = entry.get(cdb[1]! & 0x1f);
    if (!kind) throw invalidFieldInCdb(1, 4);
    return kind;
  }

  /** Every kind, in the order added. */
  kinds(): readonly CommandKind[] {
    return this.#kinds;
  }
}

/** REPORT SUPPORTED OPERATION CODES as decoded. */
export interface ReportOpcodesCommand {
  reportingOptions: number;
  opcode: number;
  serviceAction: number;
  allocationLength: number;
}

export function parseReportOpcodes(cdb: Buffer): ReportOpcodesCommand {
  if (cdb[2]! & 0x80) throw invalidFieldInCdb(2, 7); // RCTD: no command timeouts descriptors
  const reportingOptions = cdb[2]! & 0x07;
  if (reportingOptions > 3) throw invalidFieldInCdb(2, 2);
  return { reportingOptions, opcode: cdb[3]!, serviceAction: cdb.readUInt16BE(4), allocationLength: cdb.readUInt32BE(6) };
}

/** CDB USAGE DATA (SPC-4 §6.35.3): opcode, service action, every other bit
 * declared usable except the control byte (no NACA). Coarse but never claims
 * less than we accept. */
function cdbUsage(kind: CommandKind): Buffer {
  const usage = Buffer.alloc(kind.cdbLength, 0xff);
  usage[0] = kind.opcode;
  if (kind.serviceAction !== undefined) usage[1] = (usage[1]! & 0xe0) | kind.serviceAction;
  usage[kind.cdbLength - 1] = 0x00;
  return usage;
}

/** The parameter data for REPORT SUPPORTED OPERATION CODES. */
export function reportOpcodesData(table: OpcodeTable, cmd: ReportOpcodesCommand): Buffer {
  if (cmd.reportingOptions === 0) {
    const kinds = table.kinds();
    const data = Buffer.alloc(4 + kinds.length * 8);
    data.writeUInt32BE(kinds.length * 8, 0);
    kinds.forEach((kind, i) => {
      const d = 4 + i * 8;
      data[d] = kind.opcode;
      if (kind.serviceAction !== undefined) {
        data.writeUInt16BE(kind.serviceAction, d + 2);
        data[d + 5] = 0x01; // SERVACTV
      }
      data.writeUInt16BE(kind.cdbLength, d + 6);
    });
    return data;
  }
  const usesActions = table.hasServiceActions(cmd.opcode);
  if (cmd.reportingOptions === 1 && usesActions) throw invalidFieldInCdb(2, 2);
  if (cmd.reportingOptions === 2 && usesActions === false) throw invalidFieldInCdb(2, 2);
  const kind = usesActions ? table.find(cmd.opcode, cmd.serviceAction) : table.find(cmd.opcode);
  if (!kind) return Buffer.from([0, 0x01, 0, 0]); // SUPPORT 001b: not supported
  const usage = cdbUsage(kind);
  const header = Buffer.from([0, 0x03, 0, 0]); // SUPPORT 011b: supported as in the standard
  header.writeUInt16BE(usage.length, 2);
  return Buffer.concat([header, usage]);
}

/** Builds the table of a disk LU: every command family plus REPORT SUPPORTED OPERATION CODES. */
export function buildDiskOpcodeTable(): OpcodeTable {
  const table = new OpcodeTable([
    inquiryCommand,
    ...unitControlCommands,
    ...capacityCommands,
    ...readWriteCommands,
    ...syncCommands,
    ...modeCommands,
    ...unmapCommands,
    // Listed so REPORT SUPPORTED OPERATION CODES names it; ScsiTarget answers it before any LU sees it.
    defineCommand({
      name: 'REPORT LUNS', opcode: REPORT_LUNS, cdbLength: 12, ignoresUnitAttention: true, parse: parseReportLuns,
      execute: () => { throw new ScsiError(senseInvalidOpcode); },
    }),
  ]);
  table.add(defineCommand({
    name: 'REPORT SUPPORTED OPERATION CODES', opcode: MAINTENANCE_IN, serviceAction: SA_REPORT_SUPPORTED_OPERATION_CODES,
    cdbLength: 12, parse: parseReportOpcodes,
    execute: (cmd) => goodWithData(reportOpcodesData(table, cmd), cmd.allocationLength),
  }));
  return table;
}

/** The disk opcode table, shared by every LogicalUnit (immutable after build). */
export const diskOpcodeTable: OpcodeTable = buildDiskOpcodeTable();
