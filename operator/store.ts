// Where the reconciler reads the world and writes its decisions. Implemented
// by the Kubernetes API (stores/kubernetes.ts) and, for tests, by an
// in-memory store with the same concurrency rules (stores/memory.ts); a
// directory store for `vhba serve` fits the same shape (claims and
// attachments are then empty).
//
// Reads come from a cache kept current by watches (cheap, maybe stale);
// writes carry the resourceVersion the caller read and fail with a Conflict
// StoreError when the object changed meanwhile (optimistic concurrency: the
// caller re-reads and re-plans, so no update is ever lost).
import type { VirtualDiskStatus } from './api/virtualdisk.ts';
import type { ClaimObject, ClaimSpec, DiskObject } from './objects.ts';
import type { EventSpec } from './plan.ts';

/** Why a store call failed. Conflict/NotFound/AlreadyExists are expected in
 * normal operation; Invalid is terminal; Transient is retried with backoff. */
export const StoreErrorKind = {
  Conflict: 'Conflict',
  NotFound: 'NotFound',
  AlreadyExists: 'AlreadyExists',
  Invalid: 'Invalid',
  Transient: 'Transient',
} as const;
export type StoreErrorKind = (typeof StoreErrorKind)[keyof typeof StoreErrorKind];

/** A failed store call, classified. */
export class StoreError extends Error {
  readonly kind: StoreErrorKind;
  readonly status: number | undefined;
  constructor(kind: StoreErrorKind, message: string, status?: number) {
    super(message);
    this.name = 'StoreError';
    this.kind = kind;
    this.status = status;
  }
}

/** Whether `error` is a StoreError of `kind`. */
export function isStoreError(error: unknown, kind: StoreErrorKind): error is StoreError {
  return error instanceof StoreError && error.kind === kind;
}

/** Called with a VM key ("namespace/vmName") whenever something of that VM changed. */
export type ChangeListener = (vm: string) => void;

/** The reconciler's view of its backing store. */
export interface Store {
  /** Starts watching; resolves once the cache holds a complete first list. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Registers a listener for changes (disks and claims, mapped to their VM). */
  onChange(listener: ChangeListener): void;

  /** Every VM key with at least one disk in the cache. */
  vms(): string[];
  /** The cached disks of one VM (namespace/spec.vmName). */
  disksOfVm(vm: string): DiskObject[];
  /** Every cached disk (metrics). */
  allDisks(): DiskObject[];
  /** The cached claim "namespace/name", if any. */
  claim(namespace: string, name: string): ClaimObject | undefined;
  /** Reads a disk fresh from the store (after a conflict); undefined if gone. */
  refreshDisk(namespace: string, name: string): Promise<DiskObject | undefined>;
  /** VolumeAttachments still holding the volume of claim namespace/name. */
  attachmentsOfClaim(namespace: string, name: string): Promise<string[]>;

  /** Sets metadata.finalizers (precondition: disk.metadata.resourceVersion). */
  setFinalizers(disk: DiskObject, finalizers: string[]): Promise<DiskObject>;
  /** Merge-patches the status: keys in `status` set, keys in `remove` deleted (precondition: resourceVersion). */
  patchStatus(disk: DiskObject, status: VirtualDiskStatus, remove: readonly string[]): Promise<DiskObject>;
  /** Creates a claim; AlreadyExists if the name is taken. */
  createClaim(claim: ClaimSpec): Promise<ClaimObject>;
  /** Sets annotations (and, when given, a larger request) on a claim. */
  updateClaim(namespace: string, name: string, annotations: Record<string, string>, requestBytes?: number): Promise<ClaimObject>;
  /** Deletes a claim if its UID is still `uid`; NotFound if already gone. */
  deleteClaim(namespace: string, name: string, uid: string): Promise<void>;
  /** Records an event about a disk. Failures are the caller's to log; never fatal. */
  recordEvent(disk: DiskObject, event: EventSpec): Promise<void>;
}
