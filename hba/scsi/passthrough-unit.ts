// A passthrough logical unit (issue 8): a real SCSI LUN behind our target.
// The device answers for itself — INQUIRY, VPD pages, READ CAPACITY, MODE
// SENSE/SELECT, PERSISTENT RESERVE IN/OUT, its own unit attentions and sense —
// and this class adds only what belongs to the HBA, in this order:
//  1. our unit attention (REPORTED LUNS DATA HAS CHANGED, SPC-4 §6.33: the
//     target's inventory is ours, so the device cannot know), reported as
//     CHECK CONDITION before any command but INQUIRY, REPORT LUNS and REQUEST
//     SENSE (SAM-5 §5.14); REQUEST SENSE returns and clears it (SPC-4 §6.39);
//  2. the command policy (passthrough-policy.ts): refused opcodes get ILLEGAL
//     REQUEST / INVALID COMMAND OPERATION CODE and never reach the device;
//     bidirectional commands get INVALID FIELD IN CDB (no transport here
//     carries both directions); REPORT LUNS is never the device's;
//  3. the Block Limits VPD page (SBC-3 §6.6.3): MAXIMUM TRANSFER LENGTH
//     lowered to what the host path takes in one command, OPTIMAL TRANSFER
//     LENGTH not above it. Every other byte is the device's, unchanged.
// The native data path (hba/fastpath.ts) serves the LUN's commands itself
// while no unit attention of ours is pending; what it defers comes here.
import { UnitActivity, type LogicalUnitStats } from './unit-activity.ts';
import { isRefused } from './passthrough-policy.ts';
import {
  ScsiError,
  invalidFieldInCdb,
  senseInvalidFieldInCdb,
  senseInvalidOpcode,
  senseUaReportedLunsDataChanged,
  buildFixedSense,
  type SenseCode,
} from './sense.ts';
import { Status, type DeviceIdentity, type ScsiCommand, type ScsiResult, type ScsiUnit } from './types.ts';

/** The device as the SCSI layer drives it (hba/backends/passthrough-port.ts
 * adapts a native PassthroughDevice). Never rejects for device or transport
 * errors: the device's status and sense come back in the result, and a
 * command that did not complete comes back with `serviceFailure` set. */
export interface ScsiDevicePort {
  /** Runs one command: data-out bytes or a data-in buffer of `dataInCapacity`
   * bytes (never both); dataIn in the result holds what was transferred. */
  execute(cdb: Buffer, dataOut: Buffer, dataInCapacity: number): Promise<ScsiResult>;
}

/** How a PassthroughUnit treats the guest's commands. */
export interface PassthroughUnitOptions {
  /** Let refused opcodes (firmware download, vendor-specific, ...) through. */
  rawio: boolean;
  /** Largest data transfer of the host path in bytes; 0 = no host limit. */
  maxTransferBytes: number;
}

/** The native fast path's hook (hba/fastpath.ts); a LogicalUnitObserver fits. */
export interface PassthroughUnitObserver {
  /** Our unit attention queue changed: the native path is eligible only while it is empty. */
  stateChanged(): void;
  /** Commands served natively, added into stats(). */
  externalStats?(): LogicalUnitStats;
}

const INQUIRY = 0x12;
const REQUEST_SENSE = 0x03;
const REPORT_LUNS = 0xa0;
const VPD_BLOCK_LIMITS = 0xb0;

/** Opcodes that run with a unit attention pending (SAM-5 §5.14). */
const OPCODES_IGNORING_UNIT_ATTENTION: ReadonlySet<number> = new Set([INQUIRY, REQUEST_SENSE, REPORT_LUNS]);

/** A CHECK CONDITION with fixed-format sense for `code` (plus details). */
function checkCondition(error: ScsiError): ScsiResult {
  return { status: Status.CHECK_CONDITION, sense: error.senseData() };
}

/** Descriptor-format sense data (SPC-4 §4.5.2), header only: REQUEST SENSE with DESC = 1. */
function descriptorSense(code: SenseCode): Buffer {
  const data = Buffer.alloc(8);
  data[0] = 0x72; // current error, descriptor format
  data[1] = code.key & 0x0f;
  data[2] = code.asc;
  data[3] = code.ascq;
  return data; // ADDITIONAL SENSE LENGTH 0: no descriptors
}

/** Cuts data-in to the initiator's buffer (SPC-4 §4.2.5.6). */
function fitDataIn(result: ScsiResult, capacity: number): ScsiResult {
  const room = Math.max(0, capacity);
  if (result.dataIn && result.dataIn.length > room) return { ...result, dataIn: result.dataIn.subarray(0, room) };
  return result;
}

/** A whole LUN of a real device, shared with its other users. */
export class PassthroughUnit implements ScsiUnit {
  readonly #port: ScsiDevicePort;
  readonly #identity: DeviceIdentity;
  readonly #options: Readonly<PassthroughUnitOptions>;
  /** Our pending unit attentions: at most REPORTED LUNS DATA HAS CHANGED. */
  #unitAttentions: SenseCode[] = [];
  #observer: PassthroughUnitObserver | undefined;
  readonly #activity = new UnitActivity();
  #closed = false;

  constructor(port: ScsiDevicePort, identity: DeviceIdentity, options: PassthroughUnitOptions) {
    if (!Number.isSafeInteger(options.maxTransferBytes) || options.maxTransferBytes < 0) {
      throw new RangeError(`maxTransferBytes ${options.maxTransferBytes}: must be a non-negative integer`);
    }
    this.#port = port;
    this.#identity = Object.freeze({ ...identity });
    this.#options = Object.freeze({ rawio: options.rawio, maxTransferBytes: options.maxTransferBytes });
  }

  /** What the device reported about itself at attach. */
  get identity(): DeviceIdentity {
    return this.#identity;
  }

  /** The policy and host limit this unit was built with. */
  get options(): Readonly<PassthroughUnitOptions> {
    return this.#options;
  }

  /** Runs one command. Never rejects. After close() began, every command
   * gets the BAD TARGET service response (the LUN is gone). */
  async execute(cmd: ScsiCommand): Promise<ScsiResult> {
    if (this.#closed) return { serviceFailure: 'bad-target', status: Status.GOOD };
    return this.#activity.track(async () => fitDataIn(await this.#run(cmd), cmd.dataInCapacity));
  }

  async #run(cmd: ScsiCommand): Promise<ScsiResult> {
    const cdb = cmd.cdb;
    if (cdb.length === 0) return checkCondition(new ScsiError(senseInvalidOpcode));
    const opcode = cdb[0]!;
    if (this.#unitAttentions.length > 0) {
      if (!OPCODES_IGNORING_UNIT_ATTENTION.has(opcode)) return checkCondition(new ScsiError(this.#takeUnitAttention()));
      if (opcode === REQUEST_SENSE) return this.#requestSense(cdb);
    }
    // The LUN inventory is the target's (ScsiTarget answers REPORT LUNS before
    // a unit sees it); the device's own list must never reach the guest.
    if (opcode === REPORT_LUNS || isRefused(opcode, this.#options.rawio)) return checkCondition(new ScsiError(senseInvalidOpcode));
    if (cmd.dataOut.length > 0 && cmd.dataInCapacity > 0) return checkCondition(new ScsiError(senseInvalidFieldInCdb));
    let result: ScsiResult;
    try {
      result = await this.#port.execute(cdb, cmd.dataOut, Math.max(0, cmd.dataInCapacity));
    } catch {
      // The port broke its contract (it must resolve): the command did not complete.
      return { serviceFailure: 'failure', status: Status.GOOD };
    }
    if (result.serviceFailure) return result;
    this.#count(cmd, result);
    if (opcode === INQUIRY && (cdb[1]! & 0x01) !== 0 && cdb[2] === VPD_BLOCK_LIMITS) return this.#clampBlockLimits(result);
    return result;
  }

  /** REQUEST SENSE while our unit attention is pending: it is the sense data,
   * and reporting it clears it (SPC-4 §6.39, SAM-5 §5.14). */
  #requestSense(cdb: Buffer): ScsiResult {
    if (cdb.length < 6) return checkCondition(invalidFieldInCdb(0));
    if (cdb[5]! & 0x04) return checkCondition(invalidFieldInCdb(5, 2)); // NACA: ACA is not supported
    const code = this.#takeUnitAttention();
    const data = (cdb[1]! & 0x01) !== 0 ? descriptorSense(code) : buildFixedSense(code);
    const allocationLength = cdb[4]!;
    return { status: Status.GOOD, dataIn: data.subarray(0, Math.min(data.length, allocationLength)) };
  }

  /** Lowers MAXIMUM TRANSFER LENGTH (bytes 8..11) of a Block Limits page to
   * the host path's limit and keeps OPTIMAL TRANSFER LENGTH (bytes 12..15)
   * at or below it (SBC-3 §6.6.3); both in logical blocks, 0 = no limit. */
  #clampBlockLimits(result: ScsiResult): ScsiResult {
    const data = result.dataIn;
    const hostBytes = this.#options.maxTransferBytes;
    const blockSize = this.#identity.logicalBlockSize;
    if (result.status !== Status.GOOD || !data || data.length < 12 || data[1] !== VPD_BLOCK_LIMITS || hostBytes === 0 || blockSize === 0) {
      return result;
    }
    const hostBlocks = Math.min(0xffff_ffff, Math.max(1, Math.floor(hostBytes / blockSize)));
    const deviceMax = data.readUInt32BE(8);
    const max = deviceMax === 0 ? hostBlocks : Math.min(deviceMax, hostBlocks);
    const clamped = Buffer.from(data); // the device's buffer stays as it was
    clamped.writeUInt32BE(max, 8);
    if (clamped.length >= 16 && clamped.readUInt32BE(12) > max) clamped.writeUInt32BE(max, 12);
    return { ...result, dataIn: clamped };
  }

  /** Counts a forwarded command that completed with GOOD, by direction. */
  #count(cmd: ScsiCommand, result: ScsiResult): void {
    if (result.status !== Status.GOOD) return;
    if (cmd.dataOut.length > 0) {
      this.#activity.stats.writes++;
      this.#activity.stats.bytesWritten += result.dataOutConsumed ?? cmd.dataOut.length;
    } else if (cmd.dataInCapacity > 0) {
      this.#activity.stats.reads++;
      this.#activity.stats.bytesRead += Math.min(result.dataIn?.length ?? 0, cmd.dataInCapacity);
    }
  }

  #takeUnitAttention(): SenseCode {
    const code = this.#unitAttentions.shift()!;
    this.#observer?.stateChanged();
    return code;
  }

  /** Queues REPORTED LUNS DATA HAS CHANGED (once; SPC-4 §6.33). */
  raiseReportedLunsChanged(): void {
    if (this.#unitAttentions.includes(senseUaReportedLunsDataChanged)) return;
    this.#unitAttentions.push(senseUaReportedLunsDataChanged);
    this.#observer?.stateChanged();
  }

  /** Drops our pending unit attention with this ASC/ASCQ (REPORT LUNS clears 3Fh/0Eh). */
  clearUnitAttention(code: { asc: number; ascq: number }): void {
    const before = this.#unitAttentions.length;
    this.#unitAttentions = this.#unitAttentions.filter((s) => s.asc !== code.asc || s.ascq !== code.ascq);
    if (this.#unitAttentions.length !== before) this.#observer?.stateChanged();
  }

  /** Our pending unit attentions, oldest first (the device's are its own). */
  pendingUnitAttentions(): readonly SenseCode[] {
    return [...this.#unitAttentions];
  }

  /** LOGICAL UNIT RESET / I_T NEXUS RESET: clears our unit attentions. The
   * device is not reset: the host and other initiators share it. */
  reset(): void {
    if (this.#unitAttentions.length === 0) return;
    this.#unitAttentions = [];
    this.#observer?.stateChanged();
  }

  /** Attaches (or with undefined detaches) the native fast path's observer. */
  setObserver(observer: PassthroughUnitObserver | undefined): void {
    this.#observer = observer;
  }

  /** Counters of commands run here plus those the observer reports (native). */
  stats(): LogicalUnitStats {
    return this.#activity.total(this.#observer?.externalStats?.());
  }

  /** Commands currently executing. */
  get inFlight(): number {
    return this.#activity.inFlight;
  }

  /** Resolves when no command is executing. */
  drain(): Promise<void> {
    return this.#activity.drain();
  }

  /** Refuses new commands and waits for running ones. The port stays open:
   * its owner (the engine) closes the device. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.drain();
  }
}
