// An in-memory Store with the API server's rules that matter to the
// reconciler: resourceVersion preconditions (Conflict), AlreadyExists on
// create, deletion that waits for finalizers (deletionTimestamp), garbage
// collection of owned claims, a status that only patchStatus changes. Used by
// unit tests and by anything that wants the operator without Kubernetes.
import type { VirtualDiskStatus } from '../api/virtualdisk.ts';
import { objectKey, vmKeyOf, type ClaimObject, type ClaimSpec, type DiskObject } from '../objects.ts';
import type { EventSpec } from '../plan.ts';
import { StoreError, StoreErrorKind, type ChangeListener, type Store } from '../store.ts';

/** A recorded event. */
export interface MemoryEvent extends EventSpec {
  disk: string;
}

const clone = <T>(value: T): T => structuredClone(value);

/** See the file comment. */
export class MemoryStore implements Store {
  private readonly disks = new Map<string, DiskObject>();
  private readonly claims = new Map<string, ClaimObject>();
  /** claim key → VolumeAttachment names. */
  readonly attachments = new Map<string, string[]>();
  readonly events: MemoryEvent[] = [];
  private readonly listeners: ChangeListener[] = [];
  private revision = 0;
  private uidCounter = 0;
  /** Every write call, for tests ("no write when converged"). */
  writes = 0;

  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  onChange(listener: ChangeListener): void {
    this.listeners.push(listener);
  }

  private bump(): string {
    this.revision += 1;
    return String(this.revision);
  }

  private notify(vm: string): void {
    for (const listener of this.listeners) queueMicrotask(() => listener(vm));
  }

  // ---- what users (tests) do -------------------------------------------

  /** Creates or updates a disk's spec as a user would (generation bumps on spec change). */
  apply(disk: { metadata: { name: string; namespace?: string; uid?: string }; spec: DiskObject['spec'] }): DiskObject {
    const namespace = disk.metadata.namespace ?? 'default';
    const key = objectKey({ namespace, name: disk.metadata.name });
    const old = this.disks.get(key);
    const stored: DiskObject = old === undefined
      ? {
        apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk',
        metadata: { name: disk.metadata.name, namespace, uid: disk.metadata.uid ?? `uid-${++this.uidCounter}`, resourceVersion: this.bump(), generation: 1 },
        spec: clone(disk.spec),
      }
      : { ...clone(old), spec: clone(disk.spec), metadata: { ...clone(old.metadata), resourceVersion: this.bump(), generation: (old.metadata.generation ?? 1) + (JSON.stringify(old.spec) === JSON.stringify(disk.spec) ? 0 : 1) } };
    this.disks.set(key, stored);
    this.notify(vmKeyOf(stored));
    return clone(stored);
  }

  /** Deletes a disk as a user would: immediately without finalizers, else marks it. */
  delete(namespace: string, name: string): void {
    const key = objectKey({ namespace, name });
    const disk = this.disks.get(key);
    if (disk === undefined) return;
    if ((disk.metadata.finalizers ?? []).length === 0) this.remove(key);
    else if (disk.metadata.deletionTimestamp === undefined) {
      disk.metadata.deletionTimestamp = new Date(0).toISOString();
      disk.metadata.resourceVersion = this.bump();
    }
    this.notify(vmKeyOf(disk));
  }

  /** A second writer changing a disk (e.g. the CSI plugin setting a status field). */
  mutate(namespace: string, name: string, change: (disk: DiskObject) => void): DiskObject {
    const disk = this.mustGet(objectKey({ namespace, name }));
    change(disk);
    disk.metadata.resourceVersion = this.bump();
    this.notify(vmKeyOf(disk));
    return clone(disk);
  }

  /** The stored disk (a copy). */
  get(namespace: string, name: string): DiskObject | undefined {
    const disk = this.disks.get(objectKey({ namespace, name }));
    return disk === undefined ? undefined : clone(disk);
  }

  /** Every stored claim (copies). */
  allClaims(): ClaimObject[] {
    return [...this.claims.values()].map(clone);
  }

  private remove(key: string): void {
    const disk = this.disks.get(key);
    if (disk === undefined) return;
    this.disks.delete(key);
    // Garbage collection of dependents (claims owned by the disk).
    for (const [claimKey, claim] of this.claims) {
      if ((claim.metadata.ownerReferences ?? []).some((o) => o.uid === disk.metadata.uid)) this.claims.delete(claimKey);
    }
  }

  private mustGet(key: string): DiskObject {
    const disk = this.disks.get(key);
    if (disk === undefined) throw new StoreError(StoreErrorKind.NotFound, `virtualdisk ${key} not found`, 404);
    return disk;
  }

  private precondition(disk: DiskObject, stored: DiskObject): void {
    if (disk.metadata.resourceVersion !== stored.metadata.resourceVersion) {
      throw new StoreError(StoreErrorKind.Conflict, `virtualdisk ${objectKey(stored.metadata)}: the object has been modified`, 409);
    }
  }

  // ---- Store ------------------------------------------------------------

  vms(): string[] {
    return [...new Set([...this.disks.values()].map(vmKeyOf))].sort();
  }

  disksOfVm(vm: string): DiskObject[] {
    return [...this.disks.values()].filter((d) => vmKeyOf(d) === vm).map(clone);
  }

  allDisks(): DiskObject[] {
    return [...this.disks.values()].map(clone);
  }

  claim(namespace: string, name: string): ClaimObject | undefined {
    const claim = this.claims.get(objectKey({ namespace, name }));
    return claim === undefined ? undefined : clone(claim);
  }

  async refreshDisk(namespace: string, name: string): Promise<DiskObject | undefined> {
    return this.get(namespace, name);
  }

  async attachmentsOfClaim(namespace: string, name: string): Promise<string[]> {
    return [...(this.attachments.get(objectKey({ namespace, name })) ?? [])];
  }

  async setFinalizers(disk: DiskObject, finalizers: string[]): Promise<DiskObject> {
    this.writes += 1;
    const key = objectKey(disk.metadata);
    const stored = this.mustGet(key);
    this.precondition(disk, stored);
    stored.metadata.finalizers = [...finalizers];
    stored.metadata.resourceVersion = this.bump();
    this.notify(vmKeyOf(stored));
    if (stored.metadata.deletionTimestamp !== undefined && finalizers.length === 0) {
      this.remove(key);
      return clone(stored);
    }
    return clone(stored);
  }

  async patchStatus(disk: DiskObject, status: VirtualDiskStatus, remove: readonly string[]): Promise<DiskObject> {
    this.writes += 1;
    const stored = this.mustGet(objectKey(disk.metadata));
    this.precondition(disk, stored);
    const next: Record<string, unknown> = { ...(stored.status ?? {}), ...clone(status) };
    for (const key of remove) delete next[key];
    stored.status = next as DiskObject['status'];
    stored.metadata.resourceVersion = this.bump();
    this.notify(vmKeyOf(stored));
    return clone(stored);
  }

  async createClaim(spec: ClaimSpec): Promise<ClaimObject> {
    this.writes += 1;
    const key = objectKey(spec);
    if (this.claims.has(key)) throw new StoreError(StoreErrorKind.AlreadyExists, `persistentvolumeclaim ${key} already exists`, 409);
    const claim: ClaimObject = {
      metadata: {
        name: spec.name, namespace: spec.namespace, uid: `claim-uid-${++this.uidCounter}`, resourceVersion: this.bump(),
        labels: { ...spec.labels }, annotations: { ...spec.annotations }, ownerReferences: [clone(spec.owner)],
      },
      requestBytes: spec.requestBytes, storageClassName: spec.storageClassName,
    };
    this.claims.set(key, claim);
    this.notify(`${spec.namespace}/${spec.annotations['vhba.io/vm'] ?? ''}`);
    return clone(claim);
  }

  async updateClaim(namespace: string, name: string, annotations: Record<string, string>, requestBytes?: number): Promise<ClaimObject> {
    this.writes += 1;
    const claim = this.claims.get(objectKey({ namespace, name }));
    if (claim === undefined) throw new StoreError(StoreErrorKind.NotFound, `persistentvolumeclaim ${namespace}/${name} not found`, 404);
    claim.metadata.annotations = { ...(claim.metadata.annotations ?? {}), ...annotations };
    if (requestBytes !== undefined) claim.requestBytes = requestBytes;
    claim.metadata.resourceVersion = this.bump();
    this.notify(`${namespace}/${claim.metadata.annotations['vhba.io/vm'] ?? ''}`);
    return clone(claim);
  }

  async deleteClaim(namespace: string, name: string, uid: string): Promise<void> {
    this.writes += 1;
    const key = objectKey({ namespace, name });
    const claim = this.claims.get(key);
    if (claim === undefined) throw new StoreError(StoreErrorKind.NotFound, `persistentvolumeclaim ${key} not found`, 404);
    if (claim.metadata.uid !== uid) throw new StoreError(StoreErrorKind.Conflict, `persistentvolumeclaim ${key}: uid precondition failed`, 409);
    this.claims.delete(key);
    this.notify(`${namespace}/${claim.metadata.annotations?.['vhba.io/vm'] ?? ''}`);
  }

  async recordEvent(disk: DiskObject, event: EventSpec): Promise<void> {
    this.events.push({ disk: objectKey(disk.metadata), ...event });
  }
}
