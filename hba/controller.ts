// One vhost-user-scsi controller: a listening unix socket, at most one
// front-end (QEMU) connection at a time with its session and virtio device,
// and the SCSI targets behind it. A protocol violation closes that connection
// only; the listener keeps accepting, and a new connection starts from a fresh
// device. A second connection while one is active is closed at once.
import { lchown, lstat, mkdir, unlink } from 'node:fs/promises';
import { checkSocketDir, claimSocketDir, socketDirMode, type SocketOwnership } from './security.ts'; // H9
import path from 'node:path';
import type pino from 'pino';
import type { FastPathDevices } from './fastpath.ts';
import type { NativeBinding, NativeVirtioDevice, UnixConnection, UnixListener, VirtioDevice } from './native/index.ts';
import { VirtioScsiDevice, type RequestQueueStats } from './virtio-scsi/device.ts';
import type { TargetLookup } from './virtio-scsi/tasks.ts';
import { MAX_MEM_TABLE_REGIONS } from './vhost-user/protocol.ts';
import { VhostUserSession } from './vhost-user/session.ts';

/** The parts of the native addon a controller uses (injectable for tests). */
export type ControllerNative = Pick<NativeBinding, 'listenUnix' | 'createDevice' | 'closeFd'>;

export interface ControllerConfig {
  id: string;
  socketPath: string;
  numRequestQueues: number;
  maxQueueSize: number;
  targets: TargetLookup;
  logger: pino.Logger;
  native: ControllerNative;
  /** Largest chain (readable + writable bytes); default 32 MiB + 64 KiB,
   * enough for QEMU's default max_sectors of 0xFFFF plus headers. */
  maxChainBytes?: number;
  /** Offer VHOST_USER_PROTOCOL_F_CONFIG (QEMU's vhost-user-scsi-pci does not use it). */
  offerConfig?: boolean;
  /** The native data path (issue 4, hba/fastpath.ts): told about each
   * connection's device so the controller's file LUNs are served natively. */
  fastPath?: FastPathDevices;
  /** Hand the socket and its directory to this uid:gid with this socket mode
   * (KubeVirt: QEMU runs as 107); default: ours, socket 0600, directory 0700. */
  socketOwner?: SocketOwnership;
}

const DEFAULT_MAX_CHAIN_BYTES = 0xffff * 512 + 64 * 1024;

interface ActiveConnection {
  connection: UnixConnection;
  session: VhostUserSession;
  device: VirtioDevice;
  scsi: VirtioScsiDevice;
}

/** A controller serving one socket. */
export class VhostUserScsiController {
  readonly config: ControllerConfig;
  readonly #log: pino.Logger;
  #listener: UnixListener | null = null;
  #active: ActiveConnection | null = null;
  #closed = false;
  /** Connections accepted so far (diagnostics and tests). */
  connectionCount = 0;

  constructor(config: ControllerConfig) {
    this.config = config;
    this.#log = config.logger.child({ controller: config.id });
  }

  /** Creates the socket directory (0700) and listens (socket mode 0600); with
   * `socketOwner`, the directory (0700/0750) and the socket are chowned to
   * it (docs/security.md). A stale socket file at the path is removed; any
   * other file is an error. */
  async start(): Promise<void> {
    const socketPath = this.config.socketPath;
    const owner = this.config.socketOwner;
    const socketMode = owner?.mode ?? 0o600;
    await mkdir(path.dirname(socketPath), { recursive: true, mode: socketDirMode(socketMode) });
    if (owner) claimSocketDir(path.dirname(socketPath), owner); // H9: only root and the owner reach it
    else checkSocketDir(path.dirname(socketPath)); // H9: nobody else may write the socket's directory
    const existing = await lstat(socketPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return null;
      throw err;
    });
    if (existing) {
      if (!existing.isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
      await unlink(socketPath);
    }
    this.#listener = this.config.native.listenUnix(socketPath, socketMode, (conn) => this.#accept(conn));
    if (owner) {
      // Until this lchown only we (and root) can connect: fails closed. lchown:
      // a symlink the owner swapped in is not followed.
      await lchown(socketPath, owner.uid, owner.gid).catch((err: unknown) => {
        this.#listener?.close();
        this.#listener = null;
        throw err;
      });
    }
    this.#log.info({ socketPath }, 'controller listening');
  }

  /** Whether a front-end is connected. */
  get connected(): boolean {
    return this.#active !== null;
  }

  /** The active connection's virtio-scsi device (events, diagnostics), if any. */
  get device(): VirtioScsiDevice | null {
    return this.#active?.scsi ?? null;
  }

  // --- topology events for the connected guest (virtio 1.2 §5.6.6.3) ------
  // Without a front-end nothing is sent: a guest that connects later scans
  // the bus itself. Each returns whether an event was raised.

  /** A LUN was attached: TRANSPORT_RESET / RESCAN. */
  lunAdded(target: number, lun: number): boolean {
    return this.#active?.scsi.lunAdded(target, lun) ?? false;
  }

  /** A LUN was detached: TRANSPORT_RESET / REMOVED. */
  lunRemoved(target: number, lun: number): boolean {
    return this.#active?.scsi.lunRemoved(target, lun) ?? false;
  }

  /** A LUN's capacity changed: PARAM_CHANGE with CAPACITY DATA HAS CHANGED (2Ah/09h). */
  capacityChanged(target: number, lun: number): boolean {
    return this.#active?.scsi.lunParametersChanged(target, lun, 0x2a, 0x09) ?? false;
  }

  /** Per request queue counters of the active connection (empty without
   * one): commands the TypeScript path ran, and the queue's consumed avail
   * index, which also counts the chains the native fast path served. */
  requestQueueStats(): (RequestQueueStats & { availIndex: number })[] {
    const active = this.#active;
    if (!active) return [];
    return active.scsi.requestQueueStats().map((q) => {
      let availIndex = 0;
      try {
        availIndex = active.device.queueState(q.queue).lastAvail;
      } catch {
        // queue not set up yet
      }
      return { ...q, availIndex };
    });
  }

  /** Resolves when the active session has handled every message received so far. */
  async settled(): Promise<void> {
    await this.#active?.session.settled();
  }

  /** Stops listening and drops the active connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener?.close();
    this.#listener = null;
    const active = this.#active;
    if (active) {
      active.session.connectionClosed(null);
      active.connection.close();
      this.#active = null;
    }
    this.#log.info('controller closed');
  }

  #accept(conn: UnixConnection): void {
    if (this.#closed) {
      conn.close();
      return;
    }
    if (this.#active) {
      this.#log.warn('second front-end connection refused: one is already active');
      conn.close();
      return;
    }
    this.connectionCount++;
    const cfg = this.config;
    const log = this.#log.child({ connection: this.connectionCount });
    let session: VhostUserSession | null = null;
    const scsi: VirtioScsiDevice = new VirtioScsiDevice({
      numRequestQueues: cfg.numRequestQueues,
      maxQueueSize: cfg.maxQueueSize,
      targets: cfg.targets,
      logger: log,
      complete: (queue, head, data) => device.complete(queue, head, data),
      onViolation: (reason) => session?.fail(reason),
      negotiatedFeatures: () => session?.ackedFeatures ?? 0n,
    });
    const device: NativeVirtioDevice = cfg.native.createDevice({
      numQueues: scsi.numQueues,
      maxQueueSize: cfg.maxQueueSize,
      maxChainBytes: cfg.maxChainBytes ?? DEFAULT_MAX_CHAIN_BYTES,
      maxRegions: MAX_MEM_TABLE_REGIONS,
      onChains: (chains) => {
        if (session && !session.closed) scsi.handleChains(chains);
      },
      onError: (queue, reason) => session?.fail(`virtqueue ${queue}: ${reason}`),
    });
    session = new VhostUserSession({ connection: conn, device, model: scsi, logger: log, closeFd: (fd) => cfg.native.closeFd(fd), offerConfig: cfg.offerConfig ?? false });
    const active: ActiveConnection = { connection: conn, session, device, scsi };
    this.#active = active;
    cfg.fastPath?.attachDevice(device); // native fast path: register the LUNs before any ring starts
    try {
      const peer = conn.peerCredentials();
      log.info({ peer }, 'front-end connected');
    } catch {
      log.info('front-end connected');
    }
    const s = session;
    conn.start(
      (msg) => s.receive(msg),
      (reason) => {
        s.connectionClosed(reason);
        if (this.#active === active) this.#active = null;
        // Native fast path: the device's queues are stopped; unregister its LUNs.
        cfg.fastPath?.detachDevice(device).catch((err: unknown) => log.warn({ err }, 'fast path: detaching the device failed'));
      },
    );
  }
}
