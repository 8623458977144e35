// The Engine (hba/engine-api.ts): controllers keyed by id, each a
// vhost-user-scsi controller with its socket, targets created on demand and
// LUNs (LogicalUnit over a FileBackend or MemoryBackend). Operations on one
// controller are serialized; different controllers proceed independently.
// The topology is live (virtio 1.2 §5.6.6.3): with a guest connected, attach
// raises TRANSPORT_RESET/RESCAN for the new LUN and detach TRANSPORT_RESET/
// REMOVED (F_HOTPLUG), resize raises CAPACITY DATA HAS CHANGED on the LU and
// PARAM_CHANGE 2Ah/09h (F_CHANGE); adding or removing a LUN raises REPORTED
// LUNS DATA HAS CHANGED on the target's other LUs (ScsiTarget.attach/detach).
// A detached LUN stops taking commands at once (later ones get the target's
// LOGICAL UNIT NOT SUPPORTED, or BAD_TARGET once the target is empty); its
// backing closes after the commands already running have finished.
// Passthrough LUNs (issue 8: hostDevice, iscsi) sit next to emulated ones:
// opened, probed and checked by hba/engine-passthrough.ts, held by a
// PassthroughUnit on the ScsiTarget and registered on the native fast path
// with the device itself; their capacity and data are the device's, so
// resize and snapshot are refused and flush is SYNCHRONIZE CACHE.
import { isDeepStrictEqual } from 'node:util';
import pino from 'pino';
import { copyImage } from './backends/copy.ts';
import { FileBackend } from './backends/file.ts';
import { MemoryBackend } from './backends/memory.ts';
import { VhostUserScsiController, type ControllerNative } from './controller.ts';
import type { PassthroughPort } from './backends/passthrough-port.ts';
import {
  isPassthrough,
  MAX_LUNS_PER_TARGET,
  MAX_TARGETS,
  type ControllerInfo,
  type ControllerOptions,
  type DeviceIdentity,
  type Engine,
  type LunInfo,
  type LunSpec,
  type PassthroughBacking,
} from './engine-api.ts';
import { EngineError } from './engine-errors.ts';
import { describePassthrough, deviceKey, openPassthroughLun, synchronizeCache, timeoutOf, validatePassthroughBacking, type OpenPassthrough } from './engine-passthrough.ts';
import { FastPath } from './fastpath.ts';
import { native as realNative, type NativeBinding } from './native/index.ts';
import { LogicalUnit } from './scsi/logical-unit.ts';
import { PassthroughUnit } from './scsi/passthrough-unit.ts';
import { ScsiTarget } from './scsi/target.ts';
import type { BlockBackend, LogicalUnitParams } from './scsi/types.ts';
import type { SocketOwnership } from './security.ts';
import type { TargetPort } from './virtio-scsi/tasks.ts';

export { EngineError } from './engine-errors.ts';
export type { EngineErrorCode } from './engine-errors.ts';

/** Test seams: the native addon and how a backing is opened. */
export interface EngineDeps {
  native?: ControllerNative;
  openBackend?: (spec: LunSpec) => Promise<BlockBackend>;
  /** How a passthrough device is opened (default: the addon's openPassthrough). */
  openPassthrough?: OpenPassthrough;
  /** Every controller's socket and directory go to this owner (`vhba engine --socket-owner`). */
  socketOwner?: SocketOwnership;
}

const DEFAULT_QUEUE_SIZE = 1024;

/** An attached LUN: an emulated disk, or a passthrough LUN with its open
 * device (the port) and the identity probed at attach. */
type AttachedLun =
  | { kind: 'emulated'; spec: LunSpec; unit: LogicalUnit }
  | { kind: 'passthrough'; spec: LunSpec; unit: PassthroughUnit; port: PassthroughPort; identity: DeviceIdentity; deviceKey: string };

interface ControllerEntry {
  options: Required<ControllerOptions>;
  controller: VhostUserScsiController;
  targets: Map<number, ScsiTarget>;
  ports: Map<number, TargetPort>;
  luns: Map<string, AttachedLun>;
  /** The native data path's view of the LUNs (issue 4, hba/fastpath.ts). */
  fastPath: FastPath;
  /** Set by deleteController; queued operations then find nothing. */
  deleted: boolean;
  /** Tail of this controller's operation queue. */
  lock: Promise<unknown>;
}

/** Opens the backing a LunSpec names: a file is created (0600) or grown to
 * sizeBytes. Emulated backings only (passthrough devices: engine-passthrough.ts). */
export async function openBacking(spec: LunSpec): Promise<BlockBackend> {
  const b = spec.backing;
  if (b.kind === 'memory') return new MemoryBackend(b.sizeBytes);
  if (b.kind === 'file') return FileBackend.open(b.path, { sizeBytes: b.sizeBytes, readOnly: spec.params?.readOnly ?? false, create: true });
  throw new EngineError('INVALID_ARGUMENT', `${describePassthrough(b)} is a passthrough device, not a block backend`);
}

/** An emulated LUN's params; INVALID_ARGUMENT if the spec lacks them. */
function paramsOf(spec: LunSpec): LogicalUnitParams {
  if (!spec.params) throw new EngineError('INVALID_ARGUMENT', `target ${spec.target} lun ${spec.lun}: a ${spec.backing.kind} backing needs params (identity and geometry)`);
  return spec.params;
}

/** The size of an emulated backing. */
function emulatedSize(spec: LunSpec): number {
  const b = spec.backing;
  if (b.kind !== 'file' && b.kind !== 'memory') throw new EngineError('FAILED_PRECONDITION', `target ${spec.target} lun ${spec.lun} is a passthrough LUN`);
  return b.sizeBytes;
}

function lunKey(target: number, lun: number): string {
  return `${target}:${lun}`;
}

function normalize(opts: ControllerOptions): Required<ControllerOptions> {
  const o = { id: opts.id, socketPath: opts.socketPath, numRequestQueues: opts.numRequestQueues ?? 1, maxQueueSize: opts.maxQueueSize ?? DEFAULT_QUEUE_SIZE };
  if (!o.id) throw new EngineError('INVALID_ARGUMENT', 'controller id is empty');
  if (!o.socketPath.startsWith('/')) throw new EngineError('INVALID_ARGUMENT', `socketPath ${o.socketPath} is not absolute`);
  if (!Number.isInteger(o.numRequestQueues) || o.numRequestQueues < 1 || o.numRequestQueues > 254) {
    throw new EngineError('INVALID_ARGUMENT', `numRequestQueues ${o.numRequestQueues}: must be 1..254`);
  }
  if (!Number.isInteger(o.maxQueueSize) || o.maxQueueSize < 4 || o.maxQueueSize > 32768 || (o.maxQueueSize & (o.maxQueueSize - 1)) !== 0) {
    throw new EngineError('INVALID_ARGUMENT', `maxQueueSize ${o.maxQueueSize}: must be a power of two in 4..32768`);
  }
  return o;
}

function checkAddress(target: number, lun: number): void {
  if (!Number.isInteger(target) || target < 0 || target >= MAX_TARGETS) throw new EngineError('INVALID_ARGUMENT', `target ${target}: must be 0..${MAX_TARGETS - 1}`);
  if (!Number.isInteger(lun) || lun < 0 || lun >= MAX_LUNS_PER_TARGET) throw new EngineError('INVALID_ARGUMENT', `lun ${lun}: must be 0..${MAX_LUNS_PER_TARGET - 1}`);
}

function checkSize(bytes: number, blockSize: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < blockSize || bytes % blockSize !== 0) {
    throw new EngineError('INVALID_ARGUMENT', `size ${bytes}: must be a positive multiple of the ${blockSize}-byte logical block`);
  }
}

/** A TargetPort over the SCSI layer's ScsiTarget. */
function portFor(target: ScsiTarget): TargetPort {
  return {
    execute: (lun, cmd) => target.execute(lun, cmd),
    hasLun: (lun) => target.get(lun) !== undefined,
    resetLun: (lun) => target.get(lun)?.reset(),
    resetNexus: () => target.reset(),
  };
}

class VhbaEngine implements Engine {
  readonly #log: pino.Logger;
  readonly #native: ControllerNative;
  readonly #openBackend: (spec: LunSpec) => Promise<BlockBackend>;
  readonly #openPassthrough: OpenPassthrough;
  readonly #socketOwner: SocketOwnership | undefined;
  readonly #controllers = new Map<string, ControllerEntry>();
  /** Serializes controller creation and deletion. */
  #registryLock: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(logger: pino.Logger, deps: EngineDeps) {
    this.#log = logger;
    this.#native = deps.native ?? realNative;
    this.#openBackend = deps.openBackend ?? openBacking;
    // Looked up per call: an addon built without passthrough still runs emulated disks.
    const addon = (deps.native as Partial<NativeBinding> | undefined)?.openPassthrough ? (deps.native as NativeBinding) : realNative;
    this.#openPassthrough = deps.openPassthrough ?? ((address, options) => addon.openPassthrough(address, options));
    this.#socketOwner = deps.socketOwner;
  }

  createController(opts: ControllerOptions): Promise<void> {
    return this.#serialRegistry(async () => {
      if (this.#closed) throw new Error('engine is closed');
      const options = normalize(opts);
      const existing = this.#controllers.get(options.id);
      if (existing) {
        if (isDeepStrictEqual(existing.options, options)) return;
        throw new EngineError('ALREADY_EXISTS', `controller ${options.id} exists with other options`);
      }
      for (const other of this.#controllers.values()) {
        if (other.options.socketPath === options.socketPath) throw new EngineError('ALREADY_EXISTS', `socket ${options.socketPath} is used by controller ${other.options.id}`);
      }
      const entry: ControllerEntry = { options, controller: undefined as never, targets: new Map(), ports: new Map(), luns: new Map(), fastPath: new FastPath(this.#log), deleted: false, lock: Promise.resolve() };
      entry.controller = new VhostUserScsiController({
        id: options.id,
        socketPath: options.socketPath,
        numRequestQueues: options.numRequestQueues,
        maxQueueSize: options.maxQueueSize,
        targets: (t) => entry.ports.get(t),
        logger: this.#log,
        native: this.#native,
        fastPath: entry.fastPath,
        ...(this.#socketOwner ? { socketOwner: this.#socketOwner } : {}),
      });
      await entry.controller.start();
      this.#controllers.set(options.id, entry);
    });
  }

  deleteController(id: string): Promise<void> {
    return this.#serialRegistry(async () => {
      const entry = this.#controllers.get(id);
      if (!entry) return;
      this.#controllers.delete(id);
      entry.deleted = true;
      await this.#serial(entry, async () => {
        await entry.controller.close();
        const units = [...entry.luns.values()];
        entry.luns.clear();
        entry.targets.clear();
        entry.ports.clear();
        await Promise.all(units.map((a) => this.#closeUnit(a)));
      });
    });
  }

  async attachLun(controllerId: string, spec: LunSpec): Promise<DeviceIdentity | void> {
    const entry = this.#entry(controllerId);
    return this.#serial(entry, async () => {
      if (entry.deleted) throw new EngineError('NOT_FOUND', `controller ${controllerId} was deleted`);
      checkAddress(spec.target, spec.lun);
      const b = spec.backing;
      if (isPassthrough(b)) {
        validatePassthroughBacking(b);
        if (spec.params !== undefined) throw new EngineError('INVALID_ARGUMENT', `target ${spec.target} lun ${spec.lun}: a passthrough LUN takes no params; the guest sees the device's own identity and geometry`);
      } else {
        checkSize(emulatedSize(spec), paramsOf(spec).logicalBlockSize);
      }
      const key = lunKey(spec.target, spec.lun);
      const existing = entry.luns.get(key);
      if (existing) {
        if (isDeepStrictEqual(existing.spec, spec)) return existing.kind === 'passthrough' ? { ...existing.identity } : undefined;
        throw new EngineError('ALREADY_EXISTS', `controller ${controllerId} target ${spec.target} lun ${spec.lun} is attached with other parameters`);
      }
      if (isPassthrough(b)) return this.#attachPassthrough(entry, controllerId, spec, b);
      if (b.kind === 'file') {
        const path = b.path;
        for (const other of entry.luns.values()) {
          if (other.spec.backing.kind === 'file' && other.spec.backing.path === path) throw new EngineError('ALREADY_EXISTS', `${path} already backs target ${other.spec.target} lun ${other.spec.lun}`);
        }
      }
      const backend = await this.#openBackend(spec);
      let unit: LogicalUnit;
      try {
        unit = new LogicalUnit(paramsOf(spec), backend, { onBackendError: (err, command) => this.#log.error({ err, command, controller: controllerId, target: spec.target, lun: spec.lun }, 'backend I/O failed') });
      } catch (err) {
        await backend.close();
        throw new EngineError('INVALID_ARGUMENT', err instanceof Error ? err.message : String(err));
      }
      this.#targetFor(entry, spec.target).attach(spec.lun, unit);
      entry.fastPath.addLun(spec.target, spec.lun, unit); // native fast path for file LUNs
      entry.luns.set(key, { kind: 'emulated', spec: structuredClone(spec), unit });
      const event = entry.controller.lunAdded(spec.target, spec.lun);
      this.#log.info({ controller: controllerId, target: spec.target, lun: spec.lun, backing: spec.backing, event }, 'LUN attached');
    });
  }

  /** passthrough.md §Attach: open → probe → expected identity → unit on the
   * target → native registration on every device → hotplug event. */
  async #attachPassthrough(entry: ControllerEntry, controllerId: string, spec: LunSpec, b: PassthroughBacking): Promise<DeviceIdentity> {
    const key = await deviceKey(b);
    for (const other of entry.luns.values()) {
      if (other.kind === 'passthrough' && other.deviceKey === key) {
        throw new EngineError('ALREADY_EXISTS', `${describePassthrough(b)} is already target ${other.spec.target} lun ${other.spec.lun} of controller ${controllerId}`);
      }
    }
    const where = { controller: controllerId, target: spec.target, lun: spec.lun };
    const { port, identity } = await openPassthroughLun(b, this.#openPassthrough, (failure, error, opcode) =>
      this.#log.warn({ ...where, failure, error, opcode }, 'passthrough command did not complete'),
    );
    let unit: PassthroughUnit;
    try {
      unit = new PassthroughUnit(port, identity, { rawio: b.policy.rawio, maxTransferBytes: port.device.maxTransferBytes });
    } catch (err) {
      port.close();
      throw new EngineError('FAILED_PRECONDITION', `${describePassthrough(b)}: ${err instanceof Error ? err.message : String(err)}`);
    }
    this.#targetFor(entry, spec.target).attach(spec.lun, unit);
    entry.fastPath.addPassthroughLun(spec.target, spec.lun, unit, { device: port.device, rawio: b.policy.rawio, timeoutMs: timeoutOf(b) });
    entry.luns.set(lunKey(spec.target, spec.lun), { kind: 'passthrough', spec: structuredClone(spec), unit, port, identity, deviceKey: key });
    const event = entry.controller.lunAdded(spec.target, spec.lun);
    this.#log.info({ ...where, backing: spec.backing, device: port.device.description, identity, event }, 'passthrough LUN attached');
    return { ...identity };
  }

  /** The ScsiTarget at `target`, created on demand. */
  #targetFor(entry: ControllerEntry, target: number): ScsiTarget {
    let scsiTarget = entry.targets.get(target);
    if (!scsiTarget) {
      scsiTarget = new ScsiTarget();
      entry.targets.set(target, scsiTarget);
      entry.ports.set(target, portFor(scsiTarget));
    }
    return scsiTarget;
  }

  detachLun(controllerId: string, target: number, lun: number): Promise<void> {
    const entry = this.#controllers.get(controllerId);
    if (!entry) return Promise.resolve();
    return this.#serial(entry, async () => {
      const key = lunKey(target, lun);
      const attached = entry.luns.get(key);
      if (!attached) return;
      entry.luns.delete(key);
      // Native fast path first: its commands finish; meanwhile new ones go through the LU below.
      await entry.fastPath.removeLun(target, lun);
      // From here on new commands no longer find the LU; running ones hold it.
      const scsiTarget = entry.targets.get(target);
      scsiTarget?.detach(lun);
      if (scsiTarget && scsiTarget.size === 0) {
        entry.targets.delete(target);
        entry.ports.delete(target);
      }
      const event = entry.controller.lunRemoved(target, lun);
      const inFlight = attached.unit.inFlight;
      // The unit's close waits for the running commands (a passthrough
      // device's are bounded by its timeout), then the backing or device closes.
      await this.#closeUnit(attached);
      this.#log.info({ controller: controllerId, target, lun, event, drained: inFlight }, 'LUN detached');
    });
  }

  async resizeLun(controllerId: string, target: number, lun: number, sizeBytes: number): Promise<void> {
    const entry = this.#entry(controllerId);
    await this.#serial(entry, async () => {
      const attached = entry.luns.get(lunKey(target, lun));
      if (!attached) throw new EngineError('NOT_FOUND', `controller ${controllerId} has no target ${target} lun ${lun}`);
      if (attached.kind === 'passthrough') {
        throw new EngineError('FAILED_PRECONDITION', `target ${target} lun ${lun} of ${controllerId} is a passthrough LUN: the capacity of a passthrough LUN is the device's; grow the device and the guest gets the device's own CAPACITY DATA HAS CHANGED`);
      }
      checkSize(sizeBytes, paramsOf(attached.spec).logicalBlockSize);
      const backing = attached.spec.backing;
      if (backing.kind !== 'file' && backing.kind !== 'memory') throw new EngineError('FAILED_PRECONDITION', `target ${target} lun ${lun} has no emulated backing`);
      const current = backing.sizeBytes;
      if (current === sizeBytes) return;
      if (sizeBytes < current) {
        throw new EngineError('FAILED_PRECONDITION', `controller ${controllerId} target ${target} lun ${lun}: shrinking from ${current} to ${sizeBytes} bytes would cut off data the guest may use; only growing is allowed`);
      }
      // Raises CAPACITY DATA HAS CHANGED on the LU (SBC-3 §4.9), then tells the driver.
      await attached.unit.resize(sizeBytes);
      backing.sizeBytes = sizeBytes;
      const event = entry.controller.capacityChanged(target, lun);
      this.#log.info({ controller: controllerId, target, lun, sizeBytes, event }, 'LUN resized');
    });
  }

  async flushLun(controllerId: string, target: number, lun: number): Promise<void> {
    const entry = this.#entry(controllerId);
    await this.#serial(entry, async () => {
      const attached = entry.luns.get(lunKey(target, lun));
      if (!attached) throw new EngineError('NOT_FOUND', `controller ${controllerId} has no target ${target} lun ${lun}`);
      if (attached.kind === 'passthrough') {
        // The device's own write cache: what it acknowledged becomes durable (SBC-3 §5.22).
        await synchronizeCache(attached.port, `target ${target} lun ${lun} of ${controllerId} (${attached.port.device.description})`);
        return;
      }
      // Commands that started before this point finish (JS and native fast
      // path alike: quiesce holds both); then everything written is made durable.
      const release = await attached.unit.quiesce();
      try {
        await attached.unit.backend.flush();
      } finally {
        release();
      }
    });
  }

  async snapshotLun(controllerId: string, target: number, lun: number, destinationPath: string): Promise<void> {
    const entry = this.#entry(controllerId);
    await this.#serial(entry, async () => {
      const attached = entry.luns.get(lunKey(target, lun));
      if (!attached) throw new EngineError('NOT_FOUND', `controller ${controllerId} has no target ${target} lun ${lun}`);
      const backing = attached.spec.backing;
      if (attached.kind === 'passthrough') {
        throw new EngineError('FAILED_PRECONDITION', `target ${target} lun ${lun} of ${controllerId} is a passthrough LUN: its data lives on the device, so snapshot it where the device is (storage array, host volume manager)`);
      }
      if (backing.kind !== 'file') throw new EngineError('FAILED_PRECONDITION', `target ${target} lun ${lun} of ${controllerId} has no file backing to snapshot`);
      // One point in time: new commands wait (JS and native), in-flight ones
      // finish, the data is made durable and copied, then I/O continues.
      const release = await attached.unit.quiesce();
      try {
        await attached.unit.backend.flush();
        await copyImage(backing.path, destinationPath);
      } finally {
        release();
      }
    });
  }

  list(): ControllerInfo[] {
    return [...this.#controllers.values()].map((entry) => ({
      id: entry.options.id,
      socketPath: entry.options.socketPath,
      numRequestQueues: entry.options.numRequestQueues,
      connected: entry.controller.connected,
      luns: [...entry.luns.values()]
        .sort((a, b) => a.spec.target - b.spec.target || a.spec.lun - b.spec.lun)
        .map((a): LunInfo => ({ ...structuredClone(a.spec), ...a.unit.stats(), ...(a.kind === 'passthrough' ? { device: { ...a.identity } } : {}) })),
      ...(entry.controller.connected ? { requestQueues: entry.controller.requestQueueStats() } : {}),
    }));
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const id of [...this.#controllers.keys()]) await this.deleteController(id);
  }

  /** The active front-end connection's controller, for tests and diagnostics. */
  controller(id: string): VhostUserScsiController | undefined {
    return this.#controllers.get(id)?.controller;
  }

  #entry(id: string): ControllerEntry {
    const entry = this.#controllers.get(id);
    if (!entry) throw new EngineError('NOT_FOUND', `no controller ${id}`);
    return entry;
  }

  async #closeUnit(a: AttachedLun): Promise<void> {
    try {
      await a.unit.close();
    } catch (err) {
      this.#log.error({ err, target: a.spec.target, lun: a.spec.lun }, 'closing LUN backend failed');
    }
    if (a.kind === 'passthrough') {
      try {
        a.port.close(); // the fd / iSCSI session goes once the native side lets go too
      } catch (err) {
        this.#log.error({ err, target: a.spec.target, lun: a.spec.lun }, 'closing passthrough device failed');
      }
    }
  }

  #serial<T>(entry: ControllerEntry, op: () => Promise<T>): Promise<T> {
    const run = entry.lock.then(op, op);
    entry.lock = run.catch(() => undefined);
    return run;
  }

  #serialRegistry<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#registryLock.then(op, op);
    this.#registryLock = run.catch(() => undefined);
    return run;
  }
}

/** The engine implementation behind hba/engine-api.ts. */
export type VhbaEngineInstance = Engine & { controller(id: string): VhostUserScsiController | undefined };

/** Creates an engine. `deps` replaces the native addon or backing opener in tests. */
export function createEngine(logger?: pino.Logger, deps: EngineDeps = {}): VhbaEngineInstance {
  return new VhbaEngine(logger ?? pino({ name: 'vhba-engine' }), deps);
}
