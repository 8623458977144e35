// A disk logical unit: identity and geometry (LogicalUnitParams), a block
// backend, the unit attention queue (SAM-5 §5.14), the write cache state
// (WCE), per-LU I/O counters. execute() runs one command: opcode → kind,
// unit attention check, CDB → typed command, execute on a frozen snapshot.
import {
  checkControlByte,
  type BlockLimits,
  type CommandContext,
  type CommandKind,
  type IoFailure,
  type UnitHooks,
  type UnitSnapshot,
} from './command.ts';
import { REPORT_LUNS, diskOpcodeTable, type OpcodeTable } from './opcode-table.ts';
import {
  ScsiError,
  buildFixedSense,
  invalidFieldInCdb,
  senseInternalTargetFailure,
  senseInvalidOpcode,
  senseMediumErrorRead,
  senseMediumErrorWrite,
  senseUaCapacityDataChanged,
  senseUaPowerOnReset,
  senseUaReportedLunsDataChanged,
  type SenseCode,
} from './sense.ts';
import { UnitActivity, type LogicalUnitStats } from './unit-activity.ts';
import { Status, type BlockBackend, type LogicalUnitParams, type ScsiCommand, type ScsiResult, type ScsiUnit } from './types.ts';

export type { LogicalUnitStats } from './unit-activity.ts';

/** Told about the LU state a native data path mirrors (hba/fastpath.ts,
 * issue 4): unit attentions pending or not, WCE, capacity. */
export interface LogicalUnitObserver {
  /** Unit attentions, WCE or capacity changed: re-read them now. */
  stateChanged(): void;
  /** Before the capacity changes or a snapshot is taken: stop I/O done
   * elsewhere and wait for it; the returned function lets it resume. */
  pauseExternalIo(): Promise<() => void>;
  /** I/O done outside this LU's execute(), added into stats(). */
  externalStats(): LogicalUnitStats;
}

/** Tuning a LogicalUnit beyond its params; defaults suit a Linux guest. */
export interface LogicalUnitOptions {
  /** Largest READ/WRITE in bytes (VPD B0h MAXIMUM TRANSFER LENGTH). Default 8 MiB. */
  maxTransferBytes?: number;
  /** Largest UNMAP in bytes, summed over descriptors. Default 1 GiB. */
  maxUnmapBytes?: number;
  /** Most UNMAP block descriptors per command. Default 256. */
  maxUnmapDescriptors?: number;
  /** Largest WRITE SAME in bytes. Default 1 GiB. */
  maxWriteSameBytes?: number;
  /** Told about backend failures that became MEDIUM ERROR / INTERNAL TARGET FAILURE. */
  onBackendError?: (error: unknown, command: string) => void;
}

/** Opcodes that run with a unit attention pending (SAM-5 §5.14): INQUIRY, REQUEST SENSE, REPORT LUNS. */
const OPCODES_IGNORING_UNIT_ATTENTION = new Set([0x12, 0x03, REPORT_LUNS]);

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** Throws a RangeError naming the first invalid field of `params`. */
export function validateLogicalUnitParams(params: LogicalUnitParams): void {
  const { logicalBlockSize: lbs, physicalBlockSize: pbs } = params;
  if (lbs !== 512 && lbs !== 4096) throw new RangeError(`logicalBlockSize ${lbs}: must be 512 or 4096`);
  if (!Number.isInteger(pbs) || pbs < lbs || pbs % lbs !== 0 || (pbs & (pbs - 1)) !== 0 || pbs / lbs > 1 << 15) {
    throw new RangeError(`physicalBlockSize ${pbs}: must be a power-of-two multiple of ${lbs}`);
  }
  if (params.serial.length < 1 || params.serial.length > 20 || !PRINTABLE_ASCII.test(params.serial)) {
    throw new RangeError('serial: 1 to 20 printable ASCII characters');
  }
  const wwn = params.wwn;
  const naa8 = /^[235][0-9a-fA-F]{15}$/.test(wwn);
  const naa16 = /^6[0-9a-fA-F]{31}$/.test(wwn);
  if (!naa8 && !naa16) throw new RangeError(`wwn ${wwn}: 16 hex digits starting 2, 3 or 5, or 32 starting 6`);
  if (params.product !== undefined && (params.product.length > 16 || !PRINTABLE_ASCII.test(params.product))) {
    throw new RangeError('product: at most 16 printable ASCII characters');
  }
}

/** A CHECK CONDITION result for a ScsiError. */
export function checkConditionResult(error: ScsiError): ScsiResult {
  return { status: Status.CHECK_CONDITION, sense: error.senseData() };
}

/** Cuts data-in to what the initiator's buffer holds (SPC-4 §4.2.5.6). */
export function fitDataIn(result: ScsiResult, capacity: number): ScsiResult {
  if (result.dataIn && result.dataIn.length > capacity) return { ...result, dataIn: result.dataIn.subarray(0, Math.max(0, capacity)) };
  return result;
}

const ioFailureSense: Record<IoFailure, SenseCode> = {
  read: senseMediumErrorRead,
  write: senseMediumErrorWrite,
  other: senseInternalTargetFailure,
};

const MAX_PENDING_UNIT_ATTENTIONS = 8;

/** A direct-access block device (SBC-3) over a BlockBackend. */
export class LogicalUnit implements ScsiUnit {
  /** Identity and geometry, validated and frozen. */
  readonly params: Readonly<LogicalUnitParams>;
  readonly backend: BlockBackend;
  readonly #table: OpcodeTable;
  readonly #options: LogicalUnitOptions;
  readonly #hooks: UnitHooks;
  #capacityBytes: number;
  #writeCacheEnabled: boolean;
  /** Pending unit attentions, oldest first; a fresh LU reports POWER ON first. */
  #unitAttentions: SenseCode[] = [senseUaPowerOnReset];
  #snapshot: UnitSnapshot | undefined;
  readonly #activity = new UnitActivity();
  /** Set while quiesce() holds the LU still; new commands wait for it. */
  #hold: Promise<void> | undefined;
  /** The native fast path's hook (issue 4), if one is attached. */
  #observer: LogicalUnitObserver | undefined;

  constructor(params: LogicalUnitParams, backend: BlockBackend, options: LogicalUnitOptions = {}, table: OpcodeTable = diskOpcodeTable) {
    validateLogicalUnitParams(params);
    this.params = Object.freeze({ ...params });
    this.backend = backend;
    this.#table = table;
    this.#options = options;
    this.#capacityBytes = backend.size();
    this.#writeCacheEnabled = params.writeCacheEnabled ?? true;
    this.#hooks = {
      setWriteCacheEnabled: (enabled) => {
        this.#writeCacheEnabled = enabled;
        this.#snapshot = undefined;
        this.#observer?.stateChanged(); // fast path: WCE mirror
      },
      takeUnitAttention: () => {
        const ua = this.#unitAttentions.shift();
        if (ua) this.#observer?.stateChanged(); // fast path: UA mirror
        return ua && buildFixedSense(ua);
      },
      recordRead: (bytes) => {
        this.#activity.stats.reads++;
        this.#activity.stats.bytesRead += bytes;
      },
      recordWrite: (bytes) => {
        this.#activity.stats.writes++;
        this.#activity.stats.bytesWritten += bytes;
      },
    };
  }

  /** The LU as a command sees it; rebuilt only after a change (resize, MODE SELECT). */
  snapshot(): UnitSnapshot {
    if (this.#snapshot) return this.#snapshot;
    const bs = this.params.logicalBlockSize;
    const o = this.#options;
    const blocks = (bytes: number) => Math.min(0xffff_ffff, Math.max(1, Math.floor(bytes / bs)));
    const limits: BlockLimits = Object.freeze({
      maxTransferBlocks: blocks(o.maxTransferBytes ?? 8 << 20),
      optimalTransferBlocks: 0, // not reported: no preferred size to tell the guest's mkfs
      maxUnmapBlocks: blocks(o.maxUnmapBytes ?? 1 << 30),
      maxUnmapDescriptors: o.maxUnmapDescriptors ?? 256,
      unmapGranularityBlocks: this.params.physicalBlockSize / bs,
      maxWriteSameBlocks: blocks(o.maxWriteSameBytes ?? 1 << 30),
    });
    this.#snapshot = Object.freeze({
      params: this.params,
      blockSize: bs,
      physicalBlockSize: this.params.physicalBlockSize,
      physicalExponent: Math.log2(this.params.physicalBlockSize / bs),
      blockCount: BigInt(Math.floor(this.#capacityBytes / bs)),
      readOnly: this.params.readOnly,
      writeCacheEnabled: this.#writeCacheEnabled,
      thinProvisioned: this.params.thinProvisioned ?? true,
      limits,
    });
    return this.#snapshot;
  }

  /** Runs one command. Never rejects: every failure is a CHECK CONDITION. */
  async execute(cmd: ScsiCommand): Promise<ScsiResult> {
    while (this.#hold) await this.#hold; // quiesced for a snapshot: wait, do not fail
    return this.#activity.track(async () => fitDataIn(await this.#run(cmd), cmd.dataInCapacity));
  }

  async #run(cmd: ScsiCommand): Promise<ScsiResult> {
    const cdb = cmd.cdb;
    if (cdb.length === 0) return checkConditionResult(new ScsiError(senseInvalidOpcode));
    if (!OPCODES_IGNORING_UNIT_ATTENTION.has(cdb[0]!)) {
      const ua = this.#unitAttentions.shift();
      if (ua) {
        this.#observer?.stateChanged(); // fast path: eligible again once none is pending
        return checkConditionResult(new ScsiError(ua));
      }
    }
    let kind: CommandKind;
    let decoded;
    try {
      kind = this.#table.lookup(cdb);
      if (cdb.length < kind.cdbLength) throw invalidFieldInCdb(0);
      const exact = Buffer.from(cdb.subarray(0, kind.cdbLength)); // our own copy: the command's state is immutable
      checkControlByte(exact);
      decoded = kind.decode(exact);
    } catch (error) {
      return this.#failure(error, 'other', 'CDB');
    }
    const ctx: CommandContext = {
      unit: this.snapshot(),
      backend: this.backend,
      dataOut: cmd.dataOut,
      dataInCapacity: cmd.dataInCapacity,
      hooks: this.#hooks,
    };
    try {
      return await decoded.execute(ctx);
    } catch (error) {
      return this.#failure(error, kind.ioFailure, kind.name);
    }
  }

  #failure(error: unknown, io: IoFailure, command: string): ScsiResult {
    if (error instanceof ScsiError) return checkConditionResult(error);
    this.#options.onBackendError?.(error, command);
    return checkConditionResult(new ScsiError(ioFailureSense[io]));
  }

  /** Queues a unit attention. A pending POWER ON/RESET already tells the
   * initiator everything may have changed, so nothing is queued behind it;
   * a code already pending is not queued twice. */
  raiseUnitAttention(sense: SenseCode): void {
    const pending = this.#unitAttentions;
    if (pending.includes(senseUaPowerOnReset) || pending.includes(sense)) return;
    if (pending.length >= MAX_PENDING_UNIT_ATTENTIONS) return;
    pending.push(sense);
    this.#observer?.stateChanged(); // fast path: commands must reach execute() to report it
  }

  /** CAPACITY DATA HAS CHANGED (SBC-3 §4.9). */
  raiseCapacityChanged(): void {
    this.raiseUnitAttention(senseUaCapacityDataChanged);
  }

  /** REPORTED LUNS DATA HAS CHANGED (SPC-4 §6.33): a LUN was added or removed on the target. */
  raiseReportedLunsChanged(): void {
    this.raiseUnitAttention(senseUaReportedLunsDataChanged);
  }

  /** Removes a pending unit attention with this ASC/ASCQ (REPORT LUNS clears REPORTED LUNS DATA HAS CHANGED). */
  clearUnitAttention(code: { asc: number; ascq: number }): void {
    this.#unitAttentions = this.#unitAttentions.filter((s) => s.asc !== code.asc || s.ascq !== code.ascq);
    this.#observer?.stateChanged();
  }

  /** Pending unit attentions, oldest first (diagnostics, tests). */
  pendingUnitAttentions(): readonly SenseCode[] {
    return [...this.#unitAttentions];
  }

  /** Logical unit reset (SAM-5 §6.3.2): pending unit attentions are replaced
   * by POWER ON, RESET. WCE keeps the guest's last MODE SELECT choice, the
   * safer reading for durability. In-flight commands are not aborted here. */
  reset(): void {
    this.#unitAttentions = [senseUaPowerOnReset];
    this.#observer?.stateChanged();
  }

  /** Grows or shrinks the backend to `bytes` (a multiple of the logical
   * block size) and raises CAPACITY DATA HAS CHANGED. */
  async resize(bytes: number): Promise<void> {
    const bs = this.params.logicalBlockSize;
    if (!Number.isSafeInteger(bytes) || bytes < bs || bytes % bs !== 0) {
      throw new RangeError(`resize to ${bytes}: must be a positive multiple of ${bs}`);
    }
    // Native I/O stops (and in-flight native I/O finishes) before the file
    // changes size, and resumes with the new capacity and the unit attention.
    const resume = await this.#observer?.pauseExternalIo();
    try {
      await this.backend.resize(bytes);
      this.#capacityBytes = bytes;
      this.#snapshot = undefined;
      this.raiseCapacityChanged();
    } finally {
      resume?.();
    }
  }

  /** Attaches (or with undefined detaches) the native fast path's observer. */
  setObserver(observer: LogicalUnitObserver | undefined): void {
    this.#observer = observer;
  }

  /** Capacity in bytes (whole logical blocks are what the guest sees). */
  get capacityBytes(): number {
    return this.#capacityBytes;
  }

  /** Current WCE. */
  get writeCacheEnabled(): boolean {
    return this.#writeCacheEnabled;
  }

  /** A copy of the I/O counters. */
  stats(): LogicalUnitStats {
    return this.#activity.total(this.#observer?.externalStats());
  }

  /** Commands currently executing. */
  get inFlight(): number {
    return this.#activity.inFlight;
  }

  /** Resolves when no command is executing. */
  drain(): Promise<void> {
    return this.#activity.drain();
  }

  /** Holds the LU at one point in time (a crash-consistent snapshot point):
   * new commands wait (they are not failed), commands in flight here and in
   * the native fast path finish. Resolves with the function that lets I/O
   * continue; holds do not nest (a second quiesce waits for the first). */
  async quiesce(): Promise<() => void> {
    while (this.#hold) await this.#hold;
    let release!: () => void;
    this.#hold = new Promise<void>((resolve) => (release = resolve));
    let resumeExternal: (() => void) | undefined;
    try {
      resumeExternal = await this.#observer?.pauseExternalIo();
      await this.drain();
    } catch (err) {
      this.#hold = undefined;
      release();
      throw err;
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#hold = undefined;
      release();
      resumeExternal?.();
    };
  }

  /** Waits for in-flight commands, then closes the backend. */
  async close(): Promise<void> {
    await this.drain();
    await this.backend.close();
  }
}
