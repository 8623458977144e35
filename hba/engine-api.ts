// The engine as its callers (vhba serve, the control API, the CSI node plugin)
// see it: controllers (one vhost-user socket each) carrying targets and LUNs.
// Implemented by hba/engine.ts. Failures are EngineError (hba/engine-errors.ts)
// with a code (NOT_FOUND, ALREADY_EXISTS, ...) and a message that says what to fix.
import type { LogicalUnitParams } from './scsi/types.ts';

/** virtio-scsi addressing limits (virtio 1.2 §5.6.6.1). */
export const MAX_TARGETS = 256;
export const MAX_LUNS_PER_TARGET = 16384;

export interface ControllerOptions {
  /** Stable id, e.g. "default/vm1/hba0". */
  id: string;
  /** Unix socket QEMU connects to, e.g. <socket-dir>/<vm>/hba0.sock. */
  socketPath: string;
  /** Request queues offered to the guest (virtio-scsi num_queues). Default 1. */
  numRequestQueues?: number;
  /** Max queue size (power of two). Default 1024. */
  maxQueueSize?: number;
}

export type Backing =
  | { kind: 'file'; path: string; sizeBytes: number }
  | { kind: 'memory'; sizeBytes: number };

export interface LunSpec {
  target: number;
  lun: number;
  backing: Backing;
  params: LogicalUnitParams;
}

export interface LunInfo extends LunSpec {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
}

export interface ControllerInfo {
  id: string;
  socketPath: string;
  numRequestQueues: number;
  /** Whether a front-end (QEMU) is connected and the device is running. */
  connected: boolean;
  luns: LunInfo[];
  /** Per request queue of the current connection (absent while no front-end
   * is connected): commands the TypeScript path ran and still runs, and the
   * queue's consumed avail index (16 bits, wraps), which also counts what the
   * native fast path served. */
  requestQueues?: { queue: number; commands: number; inFlight: number; availIndex: number }[];
}

export interface Engine {
  /** Idempotent: same id and options → no-op; same id, other options → error. */
  createController(opts: ControllerOptions): Promise<void>;
  deleteController(id: string): Promise<void>;
  /** Opens the backing (a file is created, or grown, to sizeBytes) and adds the LU. */
  attachLun(controllerId: string, spec: LunSpec): Promise<void>;
  detachLun(controllerId: string, target: number, lun: number): Promise<void>;
  resizeLun(controllerId: string, target: number, lun: number, sizeBytes: number): Promise<void>;
  /** Waits for the LUN's in-flight writes and flushes its backing (crash-consistent snapshot point). */
  flushLun(controllerId: string, target: number, lun: number): Promise<void>;
  /** Copies a file-backed LUN's image to destinationPath (a new file; thin,
   * reflinked where possible) at one point in time: the LUN's I/O is held
   * from the drain until the copy is complete, then resumes. */
  snapshotLun(controllerId: string, target: number, lun: number, destinationPath: string): Promise<void>;
  list(): ControllerInfo[];
  close(): Promise<void>;
}
