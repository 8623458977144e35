// The stored objects the reconciler reads and writes, as any Store holds
// them: VirtualDisks (with the metadata optimistic concurrency needs) and the
// volume claims the operator creates for them (PersistentVolumeClaims in
// Kubernetes). Plus the pure helpers that tie the two together: the claim's
// deterministic name, its annotations, and the assignment a status records.
import { ContextKey, passthroughKeysOf } from '../csi/volumes.ts';
import { IO_PROFILES, normalizeWwn, type NormalizedVirtualDisk, type VirtualDiskSpec, type VirtualDiskStatus } from './api/virtualdisk.ts';
import type { Assignment, DiskPlanResult } from './planner.ts';

/** The finalizer the operator puts on every VirtualDisk before anything else. */
export const FINALIZER = 'vhba.io/release-address';

/** Annotations on a claim carrying the assignment for the CSI plugin. */
export const ANNOTATIONS = {
  vm: 'vhba.io/vm',
  controller: 'vhba.io/controller',
  target: 'vhba.io/target',
  lun: 'vhba.io/lun',
  serial: 'vhba.io/serial',
  wwn: 'vhba.io/wwn',
  /** The VirtualDisk's name (the claim's name is derived from its UID). */
  disk: 'vhba.io/disk',
  /** source.file.path, when the disk names one (resolved by the CSI plugin). */
  sourceFile: 'vhba.io/source-file',
  // deviceType lun (passthrough): the device and policy, under the CSI
  // plugin's volume-context keys (csi/volumes.ts ContextKey).
  hostDevice: ContextKey.hostDevice,
  iscsiPortal: ContextKey.iscsiPortal,
  iscsiIqn: ContextKey.iscsiIqn,
  iscsiLun: ContextKey.iscsiLun,
  iscsiInitiatorName: ContextKey.iscsiInitiatorName,
  rawio: ContextKey.rawio,
  /** The identity the device must have, when known (spec, or a by-id path). */
  expectedWwn: ContextKey.expectedWwn,
  expectedSerial: ContextKey.expectedSerial,
} as const;

/** The storage request of a lun disk's claim: a placeholder (1 MiB). The
 * capacity is the device's own; the CSI plugin does not size the volume. */
export const PASSTHROUGH_CLAIM_REQUEST_BYTES = 1 << 20;

/** Label on every claim the operator creates (the claim informer's selector). */
export const MANAGED_BY_LABEL = { key: 'app.kubernetes.io/managed-by', value: 'vhba-operator' } as const;

/** StorageClass used when a disk names none. */
export const DEFAULT_STORAGE_CLASS = 'vhba';

/** Object metadata as stored (subset). */
export interface StoredMeta {
  name: string;
  namespace: string;
  uid: string;
  resourceVersion: string;
  generation?: number;
  finalizers?: string[];
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  creationTimestamp?: string;
}

/** metav1.OwnerReference. */
export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** A VirtualDisk as stored. spec is unknown-shaped until validated. */
export interface DiskObject {
  apiVersion: string;
  kind: string;
  metadata: StoredMeta;
  spec: VirtualDiskSpec;
  status?: VirtualDiskStatus & Record<string, unknown>;
}

/** A volume claim as stored (a PersistentVolumeClaim in Kubernetes). */
export interface ClaimObject {
  metadata: StoredMeta;
  /** Requested bytes. */
  requestBytes: number;
  storageClassName?: string;
  /** The bound volume (pvc.spec.volumeName), if any. */
  volumeName?: string;
}

/** A claim to create. */
export interface ClaimSpec {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  owner: OwnerReference;
  storageClassName: string;
  requestBytes: number;
}

/** "namespace/name". */
export function objectKey(meta: { namespace: string; name: string }): string {
  return `${meta.namespace}/${meta.name}`;
}

/** The planner's VM identity of a disk: "namespace/vmName" (operator mode). */
export function vmKeyOf(disk: DiskObject): string {
  const vm = typeof disk.spec?.vmName === 'string' ? disk.spec.vmName : '';
  return `${disk.metadata.namespace}/${vm}`;
}

/** Name of the claim the operator creates for a disk: "vhba-" + UID. Derived
 * from the UID so a disk deleted and recreated under the same name never
 * inherits the old claim (the old one is garbage-collected with its owner). */
export function claimNameFor(disk: DiskObject): string {
  return `vhba-${disk.metadata.uid}`;
}

/** The claim whose volume backs a disk: the user's (source.pvc, `owned`
 * false) or the one the operator creates (every other source, lun disks too). */
export function claimRefOf(disk: DiskObject): { name: string; owned: boolean } {
  const source = disk.spec?.source as unknown;
  if (source !== null && typeof source === 'object' && 'pvc' in source) return { name: (source as { pvc: { claimName: string } }).pvc.claimName, owned: false };
  return { name: claimNameFor(disk), owned: true };
}

/** The assignment a disk's status records, or undefined when it has none (or
 * it is malformed). vmName comes from the spec (immutable by a CEL rule). */
export function assignmentFromStatus(disk: DiskObject): Assignment | undefined {
  const status = disk.status;
  const address = status?.address;
  // A passthrough (deviceType lun) disk reports the device's identity only
  // when its spec names the expected one: absent means '' (planner.ts).
  const passthrough = disk.spec?.deviceType === 'lun';
  const serial = status?.serial ?? (passthrough ? '' : undefined);
  const statusWwn = status?.wwn ?? (passthrough ? '' : undefined);
  if (status === undefined || address === undefined || typeof serial !== 'string' || typeof statusWwn !== 'string') return undefined;
  const int = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (!int(address.controller) || !int(address.target) || !int(address.lun)) return undefined;
  const wwn = normalizeWwn(statusWwn);
  if (!(passthrough ? /^([0-9a-f]{16}([0-9a-f]{16})?)?$/ : /^[0-9a-f]{16}([0-9a-f]{16})?$/).test(wwn)) return undefined;
  const recorded = status.ioProfile ?? disk.spec?.ioProfile ?? 'shared';
  if (!IO_PROFILES.includes(recorded)) return undefined;
  return {
    key: objectKey(disk.metadata), vmName: vmKeyOf(disk), ioProfile: recorded,
    controller: address.controller, target: address.target, lun: address.lun, serial, wwn,
  };
}

/** The annotations a claim carries for an assigned disk (`valid` is its
 * validated spec). A lun disk's carry its device, rawio and the expected
 * identity (result.serial/wwn: from the spec or a by-id path) instead of a
 * serial and WWN of ours. */
export function claimAnnotations(disk: DiskObject, result: DiskPlanResult, valid: NormalizedVirtualDisk): Record<string, string> {
  const a = result.address;
  const annotations: Record<string, string> = {
    [ANNOTATIONS.disk]: disk.metadata.name,
    [ANNOTATIONS.vm]: String(disk.spec.vmName),
    [ANNOTATIONS.controller]: String(a?.controller ?? ''),
    [ANNOTATIONS.target]: String(a?.target ?? ''),
    [ANNOTATIONS.lun]: String(a?.lun ?? ''),
  };
  const source = valid.source;
  if (valid.deviceType !== 'lun') {
    annotations[ANNOTATIONS.serial] = result.serial;
    annotations[ANNOTATIONS.wwn] = `0x${result.wwn}`;
    if (source !== undefined && 'file' in source) annotations[ANNOTATIONS.sourceFile] = source.file.path;
    return annotations;
  }
  // The device, rawio and expected identity (spec, or a by-id path: the
  // planner's result.serial/wwn are the same values).
  return { ...annotations, ...passthroughKeysOf(valid) };
}

/** Owner reference from a claim to its VirtualDisk (garbage collection, and
 * the proof that a claim is ours). */
export function ownerReferenceTo(disk: DiskObject): OwnerReference {
  return { apiVersion: disk.apiVersion, kind: disk.kind, name: disk.metadata.name, uid: disk.metadata.uid, controller: true, blockOwnerDeletion: true };
}

/** Whether `claim` is owned by `disk` (controller owner reference with its UID). */
export function isOwnedBy(claim: ClaimObject, disk: DiskObject): boolean {
  return (claim.metadata.ownerReferences ?? []).some((o) => o.uid === disk.metadata.uid && o.controller === true);
}
