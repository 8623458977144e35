// The virtio-scsi device model of one connection: routes popped chains to the
// controlq handler, the eventq and the SCSI targets (virtio 1.2 §5.6.6), runs
// commands concurrently and completes each chain exactly once — or never, if
// the device was reset or the queue stopped meanwhile (such completions are
// dropped with a log line, never written to a dead or re-set-up ring).
// Implements the vhost-user session's DeviceModel.
import type pino from 'pino';
import type { PoppedChain } from '../native/index.ts';
import type { DeviceModel } from '../vhost-user/session.ts';
import { CONFIG_SIZE, ConfigOffset, CONTROL_QUEUE, encodeVirtioScsiConfig, EVENT_QUEUE, FIRST_REQUEST_QUEUE, VirtioScsiFeature, virtioScsiFeatures } from './config.ts';
import { handleControlRequest } from './control.ts';
import { EventQueue, paramChangeEvent, ResetReason, transportResetEvent } from './events.ts';
import { dataInCapacity, decodeCommandRequest, decodeLun, encodeScsiResult, encodeTransportResponse, FramingError, Response } from './framing.ts';
import { TaskSet, type TargetLookup } from './tasks.ts';

export interface VirtioScsiDeviceOptions {
  numRequestQueues: number;
  maxQueueSize: number;
  targets: TargetLookup;
  logger: pino.Logger;
  /** Writes a completion (VirtioDevice.complete); throws if the chain is not in flight. */
  complete: (queue: number, head: number, data: Buffer) => void;
  /** The driver framed a chain wrongly: the owner closes the connection. */
  onViolation: (reason: string) => void;
  /** Largest transfer advertised in the config space, in 512-byte sectors. */
  maxSectors?: number;
  /** How long a stopping queue waits for its in-flight commands. */
  drainTimeoutMs?: number;
  /** The features the driver acknowledged (SET_FEATURES); events are sent only
   * for those negotiated. Default: everything offered (tests). */
  negotiatedFeatures?: () => bigint;
}

/** Commands one request queue has seen (multiqueue diagnostics). */
export interface RequestQueueStats {
  /** Virtqueue index (2 = first request queue). */
  queue: number;
  /** Commands popped from this queue so far. */
  commands: number;
  /** Commands of this queue still running. */
  inFlight: number;
}

/** A chain between pop and completion. `live` turns false when the device is
 * reset or the queue stopped: its completion must then be dropped. */
interface InFlight {
  queue: number;
  head: number;
  live: boolean;
  done: Promise<void>;
}

/** Default max_sectors: 4 MiB transfers. */
const DEFAULT_MAX_SECTORS = 8192;
const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;

/** One connection's virtio-scsi device. */
export class VirtioScsiDevice implements DeviceModel {
  readonly features = virtioScsiFeatures();
  readonly numQueues: number;
  readonly maxQueueSize: number;
  /** The controller's task set (for task management). */
  readonly tasks = new TaskSet();
  /** The eventq: posted buffers and undelivered events. */
  readonly events: EventQueue;
  readonly #opts: VirtioScsiDeviceOptions;
  readonly #log: pino.Logger;
  readonly #config: Buffer;
  readonly #inflight = new Set<InFlight>();
  /** Commands popped per request queue (index 0 = virtqueue 2). */
  readonly #queueCommands: number[];
  #eventEpoch = 0;

  constructor(opts: VirtioScsiDeviceOptions) {
    if (!Number.isInteger(opts.numRequestQueues) || opts.numRequestQueues < 1 || opts.numRequestQueues > 254) {
      throw new RangeError(`numRequestQueues ${opts.numRequestQueues} outside 1..254`);
    }
    this.#opts = opts;
    this.#log = opts.logger;
    this.numQueues = FIRST_REQUEST_QUEUE + opts.numRequestQueues;
    this.maxQueueSize = opts.maxQueueSize;
    this.#config = encodeVirtioScsiConfig({
      numRequestQueues: opts.numRequestQueues,
      maxQueueSize: opts.maxQueueSize,
      maxSectors: opts.maxSectors ?? DEFAULT_MAX_SECTORS,
      cmdPerLun: opts.maxQueueSize,
    });
    this.events = new EventQueue((head, data) => this.#completeEvent(head, data));
    this.#queueCommands = new Array<number>(opts.numRequestQueues).fill(0);
  }

  // --- hotplug and parameter change events (virtio 1.2 §5.6.6.3) ----------

  /** Whether the driver acknowledged a virtio-scsi feature bit. */
  negotiated(bit: number): boolean {
    const features = this.#opts.negotiatedFeatures?.() ?? this.features;
    return (features & (1n << BigInt(bit))) !== 0n;
  }

  /** A LUN appeared: TRANSPORT_RESET / EVT_RESET_RESCAN (§5.6.6.3.1), if
   * VIRTIO_SCSI_F_HOTPLUG was negotiated. Returns whether an event was raised. */
  lunAdded(target: number, lun: number): boolean {
    if (!this.negotiated(VirtioScsiFeature.HOTPLUG)) return false;
    this.events.deliver(transportResetEvent(target, lun, ResetReason.RESCAN));
    return true;
  }

  /** A LUN went away: TRANSPORT_RESET / EVT_RESET_REMOVED, if F_HOTPLUG was negotiated. */
  lunRemoved(target: number, lun: number): boolean {
    if (!this.negotiated(VirtioScsiFeature.HOTPLUG)) return false;
    this.events.deliver(transportResetEvent(target, lun, ResetReason.REMOVED));
    return true;
  }

  /** A LUN's parameters changed (§5.6.6.3.3): PARAM_CHANGE carrying the unit
   * attention's ASC/ASCQ, e.g. 2Ah/09h CAPACITY DATA HAS CHANGED, if
   * VIRTIO_SCSI_F_CHANGE was negotiated. */
  lunParametersChanged(target: number, lun: number, asc: number, ascq: number): boolean {
    if (!this.negotiated(VirtioScsiFeature.CHANGE)) return false;
    this.events.deliver(paramChangeEvent(target, lun, asc, ascq));
    return true;
  }

  /** Per request queue: commands popped and still running. */
  requestQueueStats(): RequestQueueStats[] {
    const running = new Array<number>(this.#queueCommands.length).fill(0);
    for (const f of this.#inflight) {
      const i = f.queue - FIRST_REQUEST_QUEUE;
      if (i >= 0 && i < running.length) running[i]!++;
    }
    return this.#queueCommands.map((commands, i) => ({ queue: FIRST_REQUEST_QUEUE + i, commands, inFlight: running[i]! }));
  }

  /** Routes a batch of popped chains (VirtioDevice onChains). */
  handleChains(chains: PoppedChain[]): void {
    for (const chain of chains) {
      try {
        this.#route(chain);
      } catch (err) {
        if (err instanceof FramingError) {
          this.#opts.onViolation(`queue ${chain.queue}: ${err.message}`);
          return;
        }
        throw err;
      }
    }
  }

  /** Commands and control requests in flight (diagnostics, tests). */
  get inFlightCount(): number {
    return this.#inflight.size;
  }

  // --- DeviceModel -------------------------------------------------------

  readConfig(): Buffer {
    return Buffer.from(this.#config);
  }

  /** The driver may write sense_size and cdb_size (§5.6.4); we accept only
   * the values we already have, anything else is refused. */
  writeConfig(offset: number, data: Buffer): boolean {
    if (offset + data.length > CONFIG_SIZE) return false;
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      const writable = (at >= ConfigOffset.senseSize && at < ConfigOffset.senseSize + 4) || (at >= ConfigOffset.cdbSize && at < ConfigOffset.cdbSize + 4);
      if (!writable || data[i] !== this.#config[at]) return false;
    }
    return true;
  }

  /** Before the eventq stops, its held buffers go back to the driver as
   * NO_EVENT: the front-end's GET_VRING_BASE counts them as consumed, so a
   * restarted ring would never offer them again, and the driver (Linux
   * virtscsi_handle_event) re-posts a buffer after any event, NO_EVENT included. */
  beforeStop(queue: number): void {
    if (queue === EVENT_QUEUE) this.events.returnBuffers();
  }

  async drainQueue(queue: number): Promise<void> {
    if (queue === EVENT_QUEUE) {
      // Anything posted between beforeStop and the stop can no longer be used.
      this.events.dropBuffers();
      this.#eventEpoch++;
      return;
    }
    const pending = [...this.#inflight].filter((f) => f.queue === queue);
    if (pending.length === 0) return;
    const timeoutMs = this.#opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const result = await Promise.race([Promise.all(pending.map((f) => f.done)).then(() => 'drained' as const), timedOut]);
    clearTimeout(timer);
    if (result === 'timeout') {
      this.#log.warn({ queue, stuck: pending.filter((f) => f.live).length }, 'queue stopped with commands still running; their completions will be dropped');
      for (const f of pending) f.live = false;
    }
  }

  reset(): void {
    for (const f of this.#inflight) f.live = false;
    this.#inflight.clear();
    this.events.dropBuffers();
    // The driver starts over and scans the bus itself: queued events are stale.
    this.events.clearPending();
    this.#eventEpoch++;
  }

  // --- routing -----------------------------------------------------------

  #route(chain: PoppedChain): void {
    if (!Number.isInteger(chain.queue) || chain.queue < 0 || chain.queue >= this.numQueues) {
      throw new FramingError(`chain from queue ${chain.queue}, device has ${this.numQueues}`);
    }
    if (chain.queue === EVENT_QUEUE) {
      this.events.post(chain.head, chain.readable.length, chain.writableLength);
      return;
    }
    if (chain.queue === CONTROL_QUEUE) {
      this.#track(chain, handleControlRequest(chain.readable, chain.writableLength, { targets: this.#opts.targets, tasks: this.tasks }));
      return;
    }
    this.#runCommand(chain);
  }

  #runCommand(chain: PoppedChain): void {
    // Both checks throw FramingError before anything is tracked.
    const req = decodeCommandRequest(chain.readable);
    const capacity = dataInCapacity(chain.writableLength);
    this.#queueCommands[chain.queue - FIRST_REQUEST_QUEUE]!++;
    const addr = decodeLun(req.lunField);
    const port = addr.ok ? this.#opts.targets(addr.target) : undefined;
    if (!addr.ok || !port) {
      // §5.6.6.1: a LUN field that does not address an existing target.
      this.#track(chain, Promise.resolve(encodeTransportResponse(Response.BAD_TARGET, chain.writableLength)));
      return;
    }
    const { task, finish } = this.tasks.add({ queue: chain.queue, head: chain.head, target: addr.target, lun: addr.lun, tag: req.tag });
    const response = port
      .execute(addr.lun, { cdb: req.cdb, dataOut: req.dataOut, dataInCapacity: capacity, tag: task.tag })
      .then(
        (result) => encodeScsiResult(result, req.dataOut.length, chain.writableLength),
        (err: unknown) => {
          this.#log.error({ err, target: addr.target, lun: addr.lun, cdb0: req.cdb[0] }, 'SCSI command failed unexpectedly');
          return encodeTransportResponse(Response.TARGET_FAILURE, chain.writableLength);
        },
      );
    this.#track(chain, response, finish);
  }

  /** Completes the chain when `response` resolves, if it is still live. */
  #track(chain: PoppedChain, response: Promise<Buffer>, finish?: () => void): void {
    let settle!: () => void;
    const entry: InFlight = {
      queue: chain.queue,
      head: chain.head,
      live: true,
      done: new Promise<void>((resolve) => {
        settle = resolve;
      }),
    };
    this.#inflight.add(entry);
    response
      .then(
        (data) => {
          if (!entry.live) {
            this.#log.debug({ queue: chain.queue, head: chain.head }, 'completion dropped: device reset or queue stopped');
            return;
          }
          try {
            this.#opts.complete(chain.queue, chain.head, data);
          } catch (err) {
            this.#log.warn({ err, queue: chain.queue, head: chain.head }, 'completion refused by the device');
          }
        },
        (err: unknown) => {
          if (err instanceof FramingError) {
            if (entry.live) this.#opts.onViolation(`queue ${chain.queue}: ${err.message}`);
          } else this.#log.error({ err, queue: chain.queue }, 'request handling failed');
        },
      )
      .finally(() => {
        this.#inflight.delete(entry);
        finish?.();
        settle();
      });
  }

  #completeEvent(head: number, data: Buffer): void {
    try {
      this.#opts.complete(EVENT_QUEUE, head, data);
    } catch (err) {
      this.#log.warn({ err, head, epoch: this.#eventEpoch }, 'event completion refused by the device');
    }
  }
}
