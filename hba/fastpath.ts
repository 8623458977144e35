// The TypeScript half of the native data path (issue 4): keeps the LUN table
// of every connected native device of one controller in agreement with the
// controller's LogicalUnits, so the queue workers may execute READ, WRITE and
// SYNCHRONIZE CACHE themselves (hba/native/src/scsi_fastpath.cc) while
// everything else — and every command of a LUN with a pending unit attention —
// still goes through hba/scsi.
//
// What is mirrored, and when (LogicalUnitObserver, hba/scsi/logical-unit.ts):
//  - eligible: no unit attention pending (SAM-5 §5.14: the next command must
//    report it, and only the JS path does), and no resize in progress;
//  - read-only, WCE (MODE SELECT), capacity (resize: native I/O is stopped
//    and drained before the file changes size);
//  - attach/detach: a LUN is registered on every device; detach unregisters
//    it and waits until no native command uses it before the backend closes.
// Counters: LogicalUnit.stats() adds the native counters (live devices plus
// those folded in when a device or LUN went away).
//
// FileBackend LUNs and passthrough LUNs (issue 8) are served natively;
// others (memory) always use JS. A passthrough LUN is registered with its
// open device, the command policy as opcode bitmaps (refused: answered
// natively with ILLEGAL REQUEST; deferred: INQUIRY and REPORT LUNS go to
// PassthroughUnit) and the per-command timeout; it is eligible while the
// PassthroughUnit has none of our unit attentions pending (its observer
// keeps that in step). The device's own unit attentions are the device's:
// they reach the guest with the command, natively or not.
//
// How the native queues are served (thread per queue, batched completions,
// no polling window) and the measurements behind it: the comment above
// Device::runWorker in hba/native/src/device.cc.
import type pino from 'pino';
import type { FastPathLuns, NativeLunConfig, NativeLunCounters, NativePassthroughLunConfig, PassthroughDevice } from './native/index.ts';
import type { LogicalUnit, LogicalUnitStats } from './scsi/logical-unit.ts';
import { deferredOpcodeBitmap, refusedOpcodeBitmap } from './scsi/passthrough-policy.ts';
import type { PassthroughUnit } from './scsi/passthrough-unit.ts';

/** How a controller's connections report their native devices to the fast path. */
export interface FastPathDevices {
  /** A device was created for a new front-end connection: register every LUN. */
  attachDevice(device: FastPathLuns): void;
  /** The device's connection ended (its queues are stopped): unregister every LUN. */
  detachDevice(device: FastPathLuns): Promise<void>;
}

/** A backend the native side can serve: FileBackend exposes its fds. */
interface NativeCapableBackend {
  nativeFds(): { fd: number; dsyncFd: number } | undefined;
}

function isNativeCapable(backend: unknown): backend is NativeCapableBackend {
  return typeof (backend as Partial<NativeCapableBackend>).nativeFds === 'function';
}

/** How a passthrough LUN is registered natively. */
export interface PassthroughRegistration {
  /** The open device the queue workers forward commands to. */
  device: PassthroughDevice;
  /** Let the opcodes the default policy refuses through (rawio: true). */
  rawio: boolean;
  /** Per-command timeout in ms (> 0). */
  timeoutMs: number;
}

type RegisteredLun = {
  target: number;
  lun: number;
  /** Native I/O of devices that are gone. */
  retired: LogicalUnitStats;
  /** Resizes in progress (native I/O stopped). */
  quiesced: number;
} & (
  | { kind: 'file'; unit: LogicalUnit; fds: { fd: number; dsyncFd: number } }
  | { kind: 'passthrough'; unit: PassthroughUnit; config: Omit<NativePassthroughLunConfig, 'eligible'> }
);

const ZERO_STATS: LogicalUnitStats = Object.freeze({ reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0 });

function addCounters(into: LogicalUnitStats, c: NativeLunCounters | undefined): void {
  if (!c) return;
  into.reads += c.reads;
  into.writes += c.writes;
  into.bytesRead += c.bytesRead;
  into.bytesWritten += c.bytesWritten;
}

function key(target: number, lun: number): string {
  return `${target}:${lun}`;
}

/** The native fast path of one controller. */
export class FastPath implements FastPathDevices {
  readonly #log: pino.Logger | undefined;
  readonly #devices = new Set<FastPathLuns>();
  readonly #luns = new Map<string, RegisteredLun>();

  constructor(logger?: pino.Logger) {
    this.#log = logger;
  }

  /** Serves `unit` natively on every device (now and later connections), if
   * its backend is a file; otherwise does nothing. */
  addLun(target: number, lun: number, unit: LogicalUnit): void {
    const backend: unknown = unit.backend;
    if (!isNativeCapable(backend)) return;
    const fds = backend.nativeFds();
    if (!fds) return;
    const k = key(target, lun);
    if (this.#luns.has(k)) throw new Error(`fast path: target ${target} lun ${lun} is already registered`);
    const entry: RegisteredLun = { kind: 'file', target, lun, unit, fds, retired: { ...ZERO_STATS }, quiesced: 0 };
    this.#luns.set(k, entry);
    unit.setObserver({
      stateChanged: () => this.#sync(entry),
      pauseExternalIo: () => this.#quiesce(entry),
      externalStats: () => this.#nativeStats(entry),
    });
    for (const device of this.#devices) this.#register(device, entry);
  }

  /** Serves a passthrough LUN natively on every device (now and later
   * connections): commands go straight to `registration.device` while the
   * unit has no unit attention of ours pending. */
  addPassthroughLun(target: number, lun: number, unit: PassthroughUnit, registration: PassthroughRegistration): void {
    if (!Number.isSafeInteger(registration.timeoutMs) || registration.timeoutMs <= 0) throw new RangeError(`timeoutMs ${registration.timeoutMs}: must be a positive integer`);
    const k = key(target, lun);
    if (this.#luns.has(k)) throw new Error(`fast path: target ${target} lun ${lun} is already registered`);
    const config = {
      device: registration.device,
      refusedOpcodes: refusedOpcodeBitmap(registration.rawio),
      deferredOpcodes: deferredOpcodeBitmap(),
      timeoutMs: registration.timeoutMs,
    };
    const entry: RegisteredLun = { kind: 'passthrough', target, lun, unit, config, retired: { ...ZERO_STATS }, quiesced: 0 };
    this.#luns.set(k, entry);
    unit.setObserver({ stateChanged: () => this.#sync(entry), externalStats: () => this.#nativeStats(entry) });
    for (const device of this.#devices) this.#register(device, entry);
  }

  /** Stops serving a LUN natively: resolves once no native command uses it
   * (call before the backend closes). Its native counters stay in the LU's stats. */
  async removeLun(target: number, lun: number): Promise<void> {
    const entry = this.#luns.get(key(target, lun));
    if (!entry) return;
    this.#luns.delete(key(target, lun));
    await Promise.all([...this.#devices].map(async (device) => addCounters(entry.retired, await device.removeLun(target, lun))));
    const final = { ...entry.retired };
    if (entry.kind === 'file') entry.unit.setObserver({ stateChanged: () => {}, pauseExternalIo: async () => () => {}, externalStats: () => final });
    else entry.unit.setObserver({ stateChanged: () => {}, externalStats: () => final });
  }

  attachDevice(device: FastPathLuns): void {
    if (typeof device.setLun !== 'function') return; // a device without the fast path
    this.#devices.add(device);
    for (const entry of this.#luns.values()) this.#register(device, entry);
  }

  async detachDevice(device: FastPathLuns): Promise<void> {
    if (!this.#devices.delete(device)) return;
    await Promise.all(
      [...this.#luns.values()].map(async (entry) => addCounters(entry.retired, await device.removeLun(entry.target, entry.lun))),
    );
  }

  /** LUNs served natively (diagnostics, tests). */
  get size(): number {
    return this.#luns.size;
  }

  #eligible(entry: RegisteredLun): boolean {
    return entry.quiesced === 0 && entry.unit.pendingUnitAttentions().length === 0;
  }

  #config(entry: RegisteredLun): NativeLunConfig | NativePassthroughLunConfig {
    if (entry.kind === 'passthrough') return { ...entry.config, eligible: this.#eligible(entry) };
    const s = entry.unit.snapshot();
    return {
      fd: entry.fds.fd,
      dsyncFd: entry.fds.dsyncFd,
      blockSize: s.blockSize,
      blockCount: s.blockCount,
      maxTransferBlocks: s.limits.maxTransferBlocks,
      readOnly: s.readOnly,
      writeCacheEnabled: s.writeCacheEnabled,
      eligible: this.#eligible(entry),
    };
  }

  #register(device: FastPathLuns, entry: RegisteredLun): void {
    try {
      device.setLun(entry.target, entry.lun, this.#config(entry));
    } catch (err) {
      // Not fatal: the LUN is then served by the JS path on this device.
      this.#log?.warn({ err, target: entry.target, lun: entry.lun }, 'native fast path refused the LUN');
    }
  }

  /** Pushes the LU's current state to every device. */
  #sync(entry: RegisteredLun): void {
    if (this.#luns.get(key(entry.target, entry.lun)) !== entry) return;
    const c = this.#config(entry);
    // A passthrough LUN's only mutable native state is eligibility.
    const update = 'fd' in c ? { blockCount: c.blockCount, readOnly: c.readOnly, writeCacheEnabled: c.writeCacheEnabled, eligible: c.eligible } : { eligible: c.eligible };
    for (const device of this.#devices) {
      try {
        device.updateLun(entry.target, entry.lun, update);
      } catch {
        // Not registered on this device (setLun refused it): nothing to keep in step.
      }
    }
  }

  /** Stops native I/O on the LUN and waits for what is in flight. */
  async #quiesce(entry: RegisteredLun): Promise<() => void> {
    entry.quiesced++;
    this.#sync(entry);
    await Promise.all([...this.#devices].map((device) => device.drainLun(entry.target, entry.lun)));
    let resumed = false;
    return () => {
      if (resumed) return;
      resumed = true;
      entry.quiesced--;
      this.#sync(entry);
    };
  }

  #nativeStats(entry: RegisteredLun): LogicalUnitStats {
    const total = { ...entry.retired };
    for (const device of this.#devices) addCounters(total, device.lunCounters(entry.target, entry.lun));
    return total;
  }
}
