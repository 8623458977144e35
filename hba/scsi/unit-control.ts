// Commands about the state of the unit rather than its data: TEST UNIT READY
// (SPC-4 §6.47), REQUEST SENSE (SPC-4 §6.39), START STOP UNIT (SBC-3 §5.25)
// and PREVENT ALLOW MEDIUM REMOVAL (SBC-3 §5.13).
import { defineCommand, good, goodWithData, type CommandContext, type CommandKind } from './command.ts';
import { buildFixedSense, invalidFieldInCdb, senseNoSense } from './sense.ts';
import type { ScsiResult } from './types.ts';

/** TEST UNIT READY as decoded: nothing but the control byte. */
export type TestUnitReadyCommand = Record<string, never>;

/** REQUEST SENSE as decoded. */
export interface RequestSenseCommand {
  allocationLength: number;
}

/** DESC = 1 asks for descriptor-format sense, which we do not implement (SPC-4 §6.39). */
export function parseRequestSense(cdb: Buffer): RequestSenseCommand {
  if (cdb[1]! & 0x01) throw invalidFieldInCdb(1, 0);
  return { allocationLength: cdb[4]! };
}

/** REQUEST SENSE returns (and clears) the oldest pending unit attention, else NO SENSE. */
function executeRequestSense(cmd: RequestSenseCommand, ctx: CommandContext): ScsiResult {
  const sense = ctx.hooks.takeUnitAttention() ?? buildFixedSense(senseNoSense);
  return goodWithData(sense, cmd.allocationLength);
}

/** START STOP UNIT as decoded. */
export interface StartStopUnitCommand {
  start: boolean;
  loadEject: boolean;
  noFlush: boolean;
  powerCondition: number;
}

export function parseStartStopUnit(cdb: Buffer): StartStopUnitCommand {
  const b = cdb[4]!;
  return { start: (b & 0x01) !== 0, loadEject: (b & 0x02) !== 0, noFlush: (b & 0x04) !== 0, powerCondition: b >> 4 };
}

/** Accepted: a virtual disk is always spinning. Stopping without NO_FLUSH
 * flushes the write cache first, as a real disk would (SBC-3 §5.25). */
async function executeStartStopUnit(cmd: StartStopUnitCommand, ctx: CommandContext): Promise<ScsiResult> {
  if (!cmd.start && !cmd.noFlush && cmd.powerCondition === 0) await ctx.backend.flush();
  return good();
}

/** PREVENT ALLOW MEDIUM REMOVAL as decoded. */
export interface PreventAllowCommand {
  prevent: boolean;
}

/** PREVENT 00b/01b are accepted (the medium cannot be removed anyway);
 * 10b/11b concern medium changers (obsolete in SBC-3) and are refused. */
export function parsePreventAllow(cdb: Buffer): PreventAllowCommand {
  const prevent = cdb[4]! & 0x03;
  if (prevent & 0x02) throw invalidFieldInCdb(4, 1);
  return { prevent: prevent === 1 };
}

/** The unit-state rows of the opcode table. */
export const unitControlCommands: readonly CommandKind[] = [
  defineCommand({ name: 'TEST UNIT READY', opcode: 0x00, cdbLength: 6, parse: (): TestUnitReadyCommand => ({}), execute: good }),
  defineCommand({
    name: 'REQUEST SENSE', opcode: 0x03, cdbLength: 6, ignoresUnitAttention: true,
    parse: parseRequestSense, execute: executeRequestSense,
  }),
  defineCommand({
    name: 'START STOP UNIT', opcode: 0x1b, cdbLength: 6, ioFailure: 'write',
    parse: parseStartStopUnit, execute: executeStartStopUnit,
  }),
  defineCommand({ name: 'PREVENT ALLOW MEDIUM REMOVAL', opcode: 0x1e, cdbLength: 6, parse: parsePreventAllow, execute: good }),
];
