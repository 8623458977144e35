// One vhost-user connection, as a state machine over received messages
// (QEMU docs/interop/vhost-user.rst). Pipeline per message:
//   header → known request → exact body size → allowed fd count → decode →
//   validate against the session state → apply to the VirtioDevice → reply.
// Messages are handled strictly in order, one at a time (some handlers wait,
// e.g. GET_VRING_BASE drains the queue's in-flight requests). Any violation
// closes the connection, resets the device and closes every received fd that
// was not handed on. Device-specific parts (features, config space, draining)
// come from a DeviceModel, so this file knows nothing about SCSI.
import type pino from 'pino';
import type { RawMessage, UnixConnection, VirtioDevice } from '../native/index.ts';
import {
  decodeMessage,
  encodeConfig,
  encodeReply,
  encodeU64,
  encodeVringState,
  ProtocolError,
  ProtocolFeature,
  Request,
  requestName,
  VHOST_USER_F_PROTOCOL_FEATURES,
  type DecodedMessage,
} from './protocol.ts';

/** What a session needs to know about the virtio device it serves. */
export interface DeviceModel {
  /** Virtio feature bits offered (the session adds VHOST_USER_F_PROTOCOL_FEATURES). */
  readonly features: bigint;
  /** Total virtqueues (virtio-scsi: 2 + request queues). */
  readonly numQueues: number;
  /** Largest queue size accepted (power of two, <= 32768). */
  readonly maxQueueSize: number;
  /** The device configuration space (GET_CONFIG). */
  readConfig(): Buffer;
  /** A SET_CONFIG write; false refuses it (nonzero REPLY_ACK, connection kept). */
  writeConfig(offset: number, data: Buffer): boolean;
  /** GET_VRING_BASE is about to stop the queue (it is still running): the
   * last chance to hand held buffers back to the driver. */
  beforeStop(queue: number): void;
  /** The queue was stopped: resolves when none of its chains is in flight any more. */
  drainQueue(queue: number): Promise<void>;
  /** Device reset or connection gone: forget every in-flight chain (their
   * completions are dropped, never written to a dead or re-set-up device). */
  reset(): void;
}

/** Protocol features we offer (vhost-user.rst "Protocol features"). */
export const OFFERED_PROTOCOL_FEATURES =
  (1n << BigInt(ProtocolFeature.MQ)) | (1n << BigInt(ProtocolFeature.REPLY_ACK)) | (1n << BigInt(ProtocolFeature.RESET_DEVICE));

/** CONFIG (GET/SET_CONFIG) is offered only on request: QEMU's
 * vhost-user-scsi-pci builds the virtio-scsi config space itself and warns
 * ("backend supports VHOST_USER_PROTOCOL_F_CONFIG but QEMU does not") when a
 * back-end offers it. Other front-ends (e.g. a benchmark) may want it. */
export const CONFIG_PROTOCOL_FEATURE = 1n << BigInt(ProtocolFeature.CONFIG);

const PROTOCOL_FEATURES_BIT = 1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES);
/** Largest split-ring index value (16-bit ring indices, virtio 1.2 §2.7). */
const MAX_VRING_BASE = 0xffff;

export interface SessionOptions {
  connection: Pick<UnixConnection, 'send' | 'close'>;
  device: VirtioDevice;
  model: DeviceModel;
  logger: pino.Logger;
  /** Closes an fd we received and did not hand on (native.closeFd). */
  closeFd: (fd: number) => void;
  /** Offer VHOST_USER_PROTOCOL_F_CONFIG (default false, see CONFIG_PROTOCOL_FEATURE). */
  offerConfig?: boolean;
}

/** The per-connection state machine. Feed it with `receive`; the owner calls
 * `connectionClosed` from the connection's onClose. */
export class VhostUserSession {
  readonly #conn: SessionOptions['connection'];
  readonly #device: VirtioDevice;
  readonly #model: DeviceModel;
  readonly #log: pino.Logger;
  readonly #closeFd: (fd: number) => void;
  readonly #offeredProtocolFeatures: bigint;
  #pending: Promise<void> = Promise.resolve();
  #closed = false;
  #closeReason: string | null = null;
  #features = 0n;
  #protocolFeatures = 0n;
  #owner = false;

  constructor(opts: SessionOptions) {
    this.#conn = opts.connection;
    this.#device = opts.device;
    this.#model = opts.model;
    this.#log = opts.logger;
    this.#closeFd = opts.closeFd;
    this.#offeredProtocolFeatures = OFFERED_PROTOCOL_FEATURES | (opts.offerConfig ? CONFIG_PROTOCOL_FEATURE : 0n);
  }

  /** Whether the session has shut down (violation or connection closed). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Why the session closed, if it closed on a violation. */
  get closeReason(): string | null {
    return this.#closeReason;
  }

  /** Features the front-end acknowledged with SET_FEATURES. */
  get ackedFeatures(): bigint {
    return this.#features;
  }

  /** Queues one message for in-order handling. */
  receive(msg: RawMessage): void {
    this.#pending = this.#pending.then(() => this.#handle(msg));
  }

  /** Resolves when every message received so far has been handled. */
  settled(): Promise<void> {
    return this.#pending;
  }

  /** A guest-side protocol violation (also from the device's onError): close. */
  fail(reason: string): void {
    if (this.#closed) return;
    this.#log.warn({ reason }, 'vhost-user protocol violation, closing connection');
    this.#closeReason = reason;
    this.#shutdown();
    this.#conn.close();
  }

  /** The connection went away (EOF, read error, framing violation or our close). */
  connectionClosed(reason: string | null): void {
    if (this.#closed) return;
    if (reason) this.#log.warn({ reason }, 'vhost-user connection closed');
    else this.#log.info('vhost-user front-end disconnected');
    this.#closeReason = reason;
    this.#shutdown();
  }

  #shutdown(): void {
    this.#closed = true;
    this.#model.reset();
    try {
      this.#device.reset();
    } catch (err) {
      this.#log.error({ err }, 'device reset failed');
    }
  }

  async #handle(msg: RawMessage): Promise<void> {
    if (this.#closed) {
      this.#closeFds(msg.fds);
      return;
    }
    let decoded: DecodedMessage;
    try {
      decoded = decodeMessage(msg.header, msg.body, msg.fds.length);
    } catch (err) {
      this.#closeFds(msg.fds);
      this.fail(err instanceof Error ? err.message : String(err));
      return;
    }
    // From here on the fds are handed to the device or closed by #apply.
    try {
      const ok = await this.#apply(decoded, msg.fds);
      if (this.#closed) return;
      if (decoded.needReply && this.#hasProtocolFeature(ProtocolFeature.REPLY_ACK) && !hasExplicitReply(decoded.request)) {
        this.#send(decoded.request, encodeU64(ok ? 0n : 1n));
      }
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      this.fail(err instanceof ProtocolError ? reason : `${decoded.name}: ${reason}`);
    }
  }

  /** Applies one decoded request. Returns false for a refused-but-legal request
   * (REPLY_ACK nonzero). Throws on violations. Owns `fds`. */
  async #apply(m: DecodedMessage, fds: number[]): Promise<boolean> {
    const b = m.body;
    switch (m.request) {
      case Request.GET_FEATURES:
        this.#send(m.request, encodeU64(this.#model.features | PROTOCOL_FEATURES_BIT));
        return true;
      case Request.SET_FEATURES: {
        const value = expectU64(b);
        const offered = this.#model.features | PROTOCOL_FEATURES_BIT;
        if ((value & ~offered) !== 0n) throw new ProtocolError(`SET_FEATURES 0x${value.toString(16)} includes unoffered bits 0x${(value & ~offered).toString(16)}`);
        this.#features = value;
        this.#device.setFeatures(value & ~PROTOCOL_FEATURES_BIT);
        return true;
      }
      case Request.GET_PROTOCOL_FEATURES:
        this.#send(m.request, encodeU64(this.#offeredProtocolFeatures));
        return true;
      case Request.SET_PROTOCOL_FEATURES: {
        const value = expectU64(b);
        if ((value & ~this.#offeredProtocolFeatures) !== 0n) throw new ProtocolError(`SET_PROTOCOL_FEATURES 0x${value.toString(16)} includes unoffered bits`);
        this.#protocolFeatures = value;
        return true;
      }
      case Request.GET_QUEUE_NUM:
        this.#send(m.request, encodeU64(BigInt(this.#model.numQueues)));
        return true;
      case Request.SET_OWNER:
        this.#owner = true;
        return true;
      case Request.RESET_OWNER:
        // Deprecated; vhost-user.rst recommends ignoring it.
        this.#log.info('RESET_OWNER ignored (deprecated)');
        return true;
      case Request.RESET_DEVICE:
        this.#requireProtocolFeature(ProtocolFeature.RESET_DEVICE, m.name);
        this.#model.reset();
        this.#device.reset();
        this.#features = 0n;
        return true;
      case Request.SET_MEM_TABLE: {
        if (b.kind !== 'memTable') throw new ProtocolError('bad body');
        // Ownership of every fd passes to the device, which closes them after
        // mmap or on error (native contract).
        this.#device.setMemTable(b.regions.map((r, i) => ({ ...r, fd: fds[i]! })));
        return true;
      }
      case Request.SET_VRING_NUM: {
        const s = expectState(b);
        this.#checkQueue(s.index, m.name);
        if (s.num === 0 || s.num > this.#model.maxQueueSize || (s.num & (s.num - 1)) !== 0) {
          throw new ProtocolError(`SET_VRING_NUM: queue size ${s.num} is not a power of two in 1..${this.#model.maxQueueSize}`);
        }
        this.#device.setVringNum(s.index, s.num);
        return true;
      }
      case Request.SET_VRING_ADDR: {
        if (b.kind !== 'vringAddr') throw new ProtocolError('bad body');
        this.#checkQueue(b.addr.index, m.name);
        this.#device.setVringAddr(b.addr.index, {
          flags: b.addr.flags,
          descUserAddr: b.addr.desc,
          usedUserAddr: b.addr.used,
          availUserAddr: b.addr.avail,
          logGuestAddr: b.addr.log,
        });
        return true;
      }
      case Request.SET_VRING_BASE: {
        const s = expectState(b);
        this.#checkQueue(s.index, m.name);
        if (s.num > MAX_VRING_BASE) throw new ProtocolError(`SET_VRING_BASE: base ${s.num} exceeds ${MAX_VRING_BASE}`);
        this.#device.setVringBase(s.index, s.num);
        return true;
      }
      case Request.GET_VRING_BASE: {
        const s = expectState(b);
        this.#checkQueue(s.index, m.name);
        this.#model.beforeStop(s.index);
        const base = this.#device.getVringBase(s.index);
        // The ring is stopped; let requests already popped finish so their
        // completions land before the front-end reads the used ring.
        await this.#model.drainQueue(s.index);
        if (this.#closed) return true;
        this.#send(m.request, encodeVringState({ index: s.index, num: base }));
        return true;
      }
      case Request.SET_VRING_KICK:
      case Request.SET_VRING_CALL:
      case Request.SET_VRING_ERR: {
        if (b.kind !== 'vringFile') throw new ProtocolError('bad body');
        const fd = b.noFd ? -1 : fds[0]!;
        try {
          this.#checkQueue(b.queue, m.name);
        } catch (err) {
          if (fd >= 0) this.#closeFd(fd);
          throw err;
        }
        if (m.request === Request.SET_VRING_KICK) {
          // Without VHOST_USER_F_PROTOCOL_FEATURES the ring starts enabled
          // ("Ring states"); the device applies that rule itself.
          this.#device.setVringKick(b.queue, fd);
        } else if (m.request === Request.SET_VRING_CALL) this.#device.setVringCall(b.queue, fd);
        else this.#device.setVringErr(b.queue, fd);
        return true;
      }
      case Request.SET_VRING_ENABLE: {
        const s = expectState(b);
        this.#checkQueue(s.index, m.name);
        if (s.num > 1) throw new ProtocolError(`SET_VRING_ENABLE: value ${s.num} is not 0 or 1`);
        this.#device.setVringEnable(s.index, s.num === 1);
        return true;
      }
      case Request.GET_CONFIG: {
        this.#requireProtocolFeature(ProtocolFeature.CONFIG, m.name);
        if (b.kind !== 'config') throw new ProtocolError('bad body');
        const space = this.#model.readConfig();
        const { offset, size, flags } = b.config;
        if (offset + size > space.length) {
          // Zero-length payload signals an error to the front-end (vhost-user.rst GET_CONFIG).
          this.#send(m.request, encodeConfig({ offset, size: 0, flags, payload: Buffer.alloc(0) }));
          return true;
        }
        this.#send(m.request, encodeConfig({ offset, size, flags, payload: space.subarray(offset, offset + size) }));
        return true;
      }
      case Request.SET_CONFIG: {
        this.#requireProtocolFeature(ProtocolFeature.CONFIG, m.name);
        if (b.kind !== 'config') throw new ProtocolError('bad body');
        return this.#model.writeConfig(b.config.offset, b.config.payload);
      }
      default:
        throw new ProtocolError(`unsupported request ${requestName(m.request)}`);
    }
  }

  #checkQueue(index: number, name: string): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.#model.numQueues) {
      throw new ProtocolError(`${name}: queue index ${index} out of range (device has ${this.#model.numQueues} queues)`);
    }
  }

  #hasProtocolFeature(bit: number): boolean {
    return (this.#protocolFeatures & (1n << BigInt(bit))) !== 0n;
  }

  #requireProtocolFeature(bit: number, name: string): void {
    if (!this.#hasProtocolFeature(bit)) throw new ProtocolError(`${name} without its protocol feature negotiated`);
  }

  #send(request: number, payload: Buffer): void {
    try {
      this.#conn.send(encodeReply(request, payload));
    } catch (err) {
      throw new Error(`sending reply failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }

  #closeFds(fds: number[]): void {
    for (const fd of fds) {
      try {
        this.#closeFd(fd);
      } catch (err) {
        this.#log.error({ err, fd }, 'closing received fd failed');
      }
    }
  }

  /** Whether SET_OWNER was received (diagnostics). */
  get hasOwner(): boolean {
    return this.#owner;
  }
}

/** Requests answered with their own reply body; REPLY_ACK adds nothing to them. */
function hasExplicitReply(request: number): boolean {
  return (
    request === Request.GET_FEATURES ||
    request === Request.GET_PROTOCOL_FEATURES ||
    request === Request.GET_VRING_BASE ||
    request === Request.GET_QUEUE_NUM ||
    request === Request.GET_CONFIG
  );
}

function expectU64(b: DecodedMessage['body']): bigint {
  if (b.kind !== 'u64') throw new ProtocolError('bad body');
  return b.value;
}

function expectState(b: DecodedMessage['body']): { index: number; num: number } {
  if (b.kind !== 'vringState') throw new ProtocolError('bad body');
  return b.state;
}
