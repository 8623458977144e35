// The engine as its callers (vhba serve, the control API, the CSI node plugin)
// see it: controllers (one vhost-user socket each) carrying targets and LUNs.
// Implemented by hba/engine.ts. Failures are EngineError (hba/engine-errors.ts)
// with a code (NOT_FOUND, ALREADY_EXISTS, ...) and a message that says what to fix.
import type { DeviceIdentity, LogicalUnitParams } from './scsi/types.ts';

export type { DeviceIdentity } from './scsi/types.ts';

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

/** How a passthrough LUN (issue 8) treats the guest's commands. */
export interface PassthroughPolicy {
  /** Let through the opcodes the default policy refuses with ILLEGAL REQUEST
   * (WRITE BUFFER, ATA PASS-THROUGH, vendor-specific, ...: hba/scsi/passthrough-policy.ts). */
  rawio: boolean;
  /** Per-command timeout in ms; absent or 0 → 30000. */
  timeoutMs?: number;
  /** If set, attach fails (FAILED_PRECONDITION) unless the device's VPD 83h
   * NAA designator (lowercase hex, no 0x) is this one: the wrong disk is never
   * handed to a guest. */
  expectedWwn?: string;
  /** Likewise for the VPD 80h unit serial number. */
  expectedSerial?: string;
}

/** Emulated backings carry the size; passthrough backings (issue 8) are a
 * whole host LUN whose identity and capacity are the device's own. */
export type Backing =
  | { kind: 'file'; path: string; sizeBytes: number }
  | { kind: 'memory'; sizeBytes: number }
  /** A SCSI device the host kernel sees: a block device (/dev/sdX, preferably
   * its /dev/disk/by-id/ link) or its /dev/sg* node; commands go by SG_IO. */
  | { kind: 'hostDevice'; path: string; policy: PassthroughPolicy }
  /** An iSCSI LUN reached from the engine itself (libiscsi). */
  | { kind: 'iscsi'; portal: string; iqn: string; lun: number; initiatorName?: string; policy: PassthroughPolicy };

/** Backing kinds whose commands go to a real SCSI device. */
export type PassthroughBacking = Extract<Backing, { kind: 'hostDevice' | 'iscsi' }>;

/** Whether a backing is a passthrough one. */
export function isPassthrough(backing: Backing): backing is PassthroughBacking {
  return backing.kind === 'hostDevice' || backing.kind === 'iscsi';
}

export interface LunSpec {
  target: number;
  lun: number;
  backing: Backing;
  /** Emulated disks: identity and geometry (required). Passthrough backings:
   * omit it — the device's own identity is what the guest sees (LunInfo.device). */
  params?: LogicalUnitParams;
}

export interface LunInfo extends LunSpec {
  reads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  /** Passthrough LUNs: the device's identity as probed at attach. */
  device?: DeviceIdentity;
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
  /** Opens the backing (a file is created, or grown, to sizeBytes; a
   * passthrough device is opened, checked to speak SCSI and probed) and adds
   * the LU. Resolves with the device's identity for passthrough backings. */
  attachLun(controllerId: string, spec: LunSpec): Promise<DeviceIdentity | void>;
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
