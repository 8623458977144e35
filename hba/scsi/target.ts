// A SCSI target: its LUN map and the commands the target itself answers.
// REPORT LUNS is answered here for every LUN, present or not (SPC-4 §6.33:
// LUN 0 need not exist for REPORT LUNS to work); INQUIRY to an absent LUN
// returns peripheral qualifier 011b; anything else to an absent LUN is
// ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED (SPC-4 §4.5.1 / SAM-5 §5.9).
import { checkControlByte, goodWithData } from './command.ts';
import { inquiryData, parseInquiry } from './inquiry.ts';
import { checkConditionResult, fitDataIn } from './logical-unit.ts';
import { REPORT_LUNS } from './opcode-table.ts';
import { MAX_LUN, parseReportLuns, reportLunsData } from './report-luns.ts';
import {
  ScsiError,
  buildFixedSense,
  invalidFieldInCdb,
  senseLogicalUnitNotSupported,
  senseUaReportedLunsDataChanged,
} from './sense.ts';
import { Status, type ScsiCommand, type ScsiResult, type ScsiUnit } from './types.ts';

const INQUIRY = 0x12;
const REQUEST_SENSE = 0x03;

/** The exact CDB bytes of a target-level command, with its control byte checked. */
function exactCdb(cdb: Buffer, length: number): Buffer {
  if (cdb.length < length) throw invalidFieldInCdb(0);
  const exact = Buffer.from(cdb.subarray(0, length));
  checkControlByte(exact);
  return exact;
}

/** LUNs 0..16383 behind one virtio-scsi target (or any other transport's). */
export class ScsiTarget {
  readonly #luns = new Map<number, ScsiUnit>();

  /** Adds `unit` at `lun` and (unless `notify` is false, e.g. while a
   * target is built before any initiator sees it) raises REPORTED LUNS DATA
   * HAS CHANGED on the other LUs: O(LUs) per call. Throws if the LUN is out
   * of range or taken. */
  attach(lun: number, unit: ScsiUnit, options: { notify?: boolean } = {}): void {
    if (!Number.isInteger(lun) || lun < 0 || lun > MAX_LUN) throw new RangeError(`LUN ${lun} outside 0..${MAX_LUN}`);
    if (this.#luns.has(lun)) throw new Error(`LUN ${lun} is already attached`);
    if (options.notify ?? true) for (const other of this.#luns.values()) other.raiseReportedLunsChanged();
    this.#luns.set(lun, unit);
  }

  /** Removes the LU at `lun` (returned, so the caller can close it after its
   * in-flight commands drain) and tells the other LUs unless `notify` is false. */
  detach(lun: number, options: { notify?: boolean } = {}): ScsiUnit | undefined {
    const unit = this.#luns.get(lun);
    if (!unit) return undefined;
    this.#luns.delete(lun);
    if (options.notify ?? true) for (const other of this.#luns.values()) other.raiseReportedLunsChanged();
    return unit;
  }

  /** The LU at `lun`, if any. */
  get(lun: number): ScsiUnit | undefined {
    return this.#luns.get(lun);
  }

  /** Attached LUNs, ascending. */
  luns(): number[] {
    return [...this.#luns.keys()].sort((a, b) => a - b);
  }

  /** Number of attached LUs. */
  get size(): number {
    return this.#luns.size;
  }

  /** Target reset / I_T nexus reset: every LU gets POWER ON, RESET. */
  reset(): void {
    for (const unit of this.#luns.values()) unit.reset();
  }

  /** Runs `cmd` addressed to `lun`. Never rejects. */
  async execute(lun: number, cmd: ScsiCommand): Promise<ScsiResult> {
    if (cmd.cdb[0] === REPORT_LUNS) return fitDataIn(this.#reportLuns(cmd), cmd.dataInCapacity);
    const unit = this.#luns.get(lun);
    if (unit) return unit.execute(cmd);
    return fitDataIn(this.#absent(cmd), cmd.dataInCapacity);
  }

  /** REPORT LUNS; it also clears REPORTED LUNS DATA HAS CHANGED on every LU,
   * the initiator having now seen the new inventory (SPC-4 §6.33). */
  #reportLuns(cmd: ScsiCommand): ScsiResult {
    try {
      const parsed = parseReportLuns(exactCdb(cmd.cdb, 12));
      const data = reportLunsData(parsed, this.#luns.keys());
      for (const unit of this.#luns.values()) unit.clearUnitAttention(senseUaReportedLunsDataChanged);
      return goodWithData(data, parsed.allocationLength);
    } catch (error) {
      if (error instanceof ScsiError) return checkConditionResult(error);
      throw error;
    }
  }

  /** A LUN with no logical unit (SPC-4 §6.6.2, §6.39). */
  #absent(cmd: ScsiCommand): ScsiResult {
    try {
      if (cmd.cdb[0] === INQUIRY) {
        const parsed = parseInquiry(exactCdb(cmd.cdb, 6));
        return goodWithData(inquiryData(parsed, undefined), parsed.allocationLength);
      }
      if (cmd.cdb[0] === REQUEST_SENSE) {
        const cdb = exactCdb(cmd.cdb, 6);
        return goodWithData(buildFixedSense(senseLogicalUnitNotSupported), cdb[4]!);
      }
      return { status: Status.CHECK_CONDITION, sense: buildFixedSense(senseLogicalUnitNotSupported) };
    } catch (error) {
      if (error instanceof ScsiError) return checkConditionResult(error);
      throw error;
    }
  }
}
