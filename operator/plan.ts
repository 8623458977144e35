// The reconciler's brain: given what a Store holds for one VM (its disks,
// their claims, which volumes are still attached), the actions that move the
// world toward what the specs ask. PURE: no I/O, the clock passed in. The
// executor (executor.ts) runs the actions; re-planning the world they produce
// yields no actions (level-based, idempotent; plan.test.ts checks both).
//
// Per disk, in order (a failed action stops that disk's chain; the next
// reconcile re-plans from what is stored):
//   live disk:     addFinalizer (first, before any other side effect)
//                  → patchStatus (the assignment, persisted: status is the
//                    source of truth for "current" assignments)
//                  → createClaim / updateClaim (only once the assignment is
//                    persisted, so a claim's annotations always match it)
//   deleting disk: wait while the volume is attached → deleteClaim → wait
//                  until the claim is gone → removeFinalizer (the address is
//                  released: the disk leaves the planner's input).
//
// "Detached", precisely: (a) no VolumeAttachment names the PersistentVolume
// bound to the disk's claim (the Store reports them), and (b) the claim the
// operator created is gone from the API (Kubernetes' pvc-protection keeps it
// while any pod uses it). Disks with source.pvc (the user's claim) need (a)
// only: their claim is not ours to delete. Passthrough disks (deviceType lun:
// hostDevice, iscsi) get a claim like file-backed ones, whose annotations name
// the device (objects.ts) and whose request is a placeholder
// (PASSTHROUGH_CLAIM_REQUEST_BYTES: the capacity is the device's); the CSI
// plugin attaches the device on the node.
import { validateVirtualDisk } from './api/validate.ts';
import { formatAddress, type Condition, type NormalizedVirtualDisk, type VirtualDiskStatus } from './api/virtualdisk.ts';
import { intentFromDisk } from './intent.ts';
import {
  FINALIZER, MANAGED_BY_LABEL, PASSTHROUGH_CLAIM_REQUEST_BYTES, assignmentFromStatus, claimAnnotations, claimNameFor, claimRefOf, isOwnedBy, objectKey, ownerReferenceTo,
  type ClaimObject, type ClaimSpec, type DiskObject,
} from './objects.ts';
import { DEFAULT_PLAN_LIMITS, planAssignments, type Assignment, type DiskIntent, type DiskPlanResult, type PlanLimits } from './planner.ts';
import { statusFromPlan } from './status.ts';
import { formatBytes } from './api/quantity.ts';

/** What a Store holds that matters for one VM. */
export interface VmWorld {
  /** "namespace/vmName". */
  vm: string;
  /** Every disk whose namespace/spec.vmName is `vm`. */
  disks: readonly DiskObject[];
  /** Claims by "namespace/name" (at least those the disks name). */
  claims: ReadonlyMap<string, ClaimObject>;
  /** For deleting disks: disk key → VolumeAttachments still holding its volume. */
  attachments: ReadonlyMap<string, readonly string[]>;
  defaultStorageClass: string;
  /** RFC 3339 time for new conditions. */
  now: string;
  limits?: PlanLimits;
}

/** A Kubernetes Event to record once an action succeeded. */
export interface EventSpec {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

/** The status fields the operator owns; others (e.g. set by the CSI plugin) are left alone. */
export const MANAGED_STATUS_KEYS = [
  'address', 'scsiAddress', 'serial', 'wwn', 'guestDevicePaths', 'ioProfile', 'phase', 'conditions', 'observedGeneration',
] as const;

/** One side effect. `disk` is the VirtualDisk's "namespace/name". */
export type Action =
  | { kind: 'addFinalizer'; disk: string }
  | { kind: 'patchStatus'; disk: string; status: VirtualDiskStatus; event?: EventSpec }
  | { kind: 'createClaim'; disk: string; claim: ClaimSpec; event: EventSpec }
  | { kind: 'updateClaim'; disk: string; claim: string; annotations: Record<string, string>; requestBytes?: number; event: EventSpec }
  | { kind: 'deleteClaim'; disk: string; claim: string; uid: string; event: EventSpec }
  | { kind: 'removeFinalizer'; disk: string; event: EventSpec };

/** The plan for one VM. */
export interface VmPlan {
  /** disk key → its actions, in order. Disks with nothing to do are absent. */
  steps: Map<string, Action[]>;
  /** Disks waiting on the outside world (a volume still attached): re-check later. */
  waiting: { disk: string; message: string }[];
  /** Disks with a problem no retry fixes (invalid spec that slipped past admission). */
  terminal: { disk: string; message: string }[];
  /** The planner's answer for live disks (for tests and logs). */
  results: Map<string, DiskPlanResult>;
}

/** Reason set while a deleted disk waits to release its address. */
export const RELEASING_REASON = 'Releasing';
/** Reason when the stored spec is invalid. */
export const INVALID_SPEC_REASON = 'InvalidSpec';

function validate(disk: DiskObject): ReturnType<typeof validateVirtualDisk> {
  const { name, namespace, uid, generation } = disk.metadata;
  return validateVirtualDisk({ apiVersion: disk.apiVersion, kind: disk.kind, metadata: { name, namespace, uid, ...(generation === undefined ? {} : { generation }) }, spec: disk.spec });
}

/** Whether the disk gets a claim created by the operator (every source but pvc). */
function wantsOwnedClaim(disk: NormalizedVirtualDisk): boolean {
  return disk.source === undefined || !('pvc' in disk.source);
}

/** The storage a disk's claim requests: its capacity, or for a lun disk the
 * placeholder (the device's own capacity is what the guest sees). */
function claimRequestBytes(disk: NormalizedVirtualDisk): number {
  return disk.deviceType === 'lun' ? PASSTHROUGH_CLAIM_REQUEST_BYTES : disk.capacityBytes;
}

/** JSON with object keys sorted (the API server returns keys in its own order). */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : v));
}

function sameJson(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

/** Replaces the Assigned condition in `existing`, keeping lastTransitionTime
 * when the condition's status did not change, and every other type as is. */
function mergeCondition(existing: readonly Condition[] | undefined, next: Condition): Condition[] {
  const others = (existing ?? []).filter((c) => c.type !== next.type);
  const old = (existing ?? []).find((c) => c.type === next.type);
  const merged = { ...next };
  if (old !== undefined && old.status === next.status && old.lastTransitionTime !== undefined) merged.lastTransitionTime = old.lastTransitionTime;
  return [...others, merged].sort((x, y) => (x.type < y.type ? -1 : x.type > y.type ? 1 : 0));
}

/** The managed part of a status, normalised for comparison. */
function managedPart(status: VirtualDiskStatus | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of MANAGED_STATUS_KEYS) {
    const value = (status as Record<string, unknown> | undefined)?.[key];
    if (value !== undefined) out[key] = key === 'conditions' ? [...(value as Condition[])].sort((x, y) => (x.type < y.type ? -1 : 1)) : value;
  }
  return out;
}

/** Whether the Assigned condition changes in a way worth an Event. */
function assignedChanged(before: VirtualDiskStatus | undefined, after: VirtualDiskStatus): Condition | undefined {
  const a = before?.conditions?.find((c) => c.type === 'Assigned');
  const b = after.conditions?.find((c) => c.type === 'Assigned');
  if (b === undefined) return undefined;
  if (a !== undefined && a.status === b.status && a.reason === b.reason && a.message === b.message) return undefined;
  return b;
}

/** The status a live, valid disk should have after planning. */
export function desiredStatus(disk: DiskObject, result: DiskPlanResult, assignment: Assignment | undefined, now: string): VirtualDiskStatus {
  const fromPlan = statusFromPlan(result, disk.metadata.generation, now);
  const existing = disk.status;
  const [assigned, ...more] = fromPlan.conditions ?? [];
  let conditions = assigned === undefined ? [] : mergeCondition(existing?.conditions, assigned);
  for (const c of more) conditions = mergeCondition(conditions, c); // e.g. DeviceIdentity of a lun disk
  const status: VirtualDiskStatus = { ...fromPlan, conditions };
  if (result.ok && result.address !== undefined) {
    status.scsiAddress = formatAddress(result.address);
    if (assignment !== undefined) status.ioProfile = assignment.ioProfile;
    if (existing?.phase === 'Attached' || existing?.phase === 'Ready') status.phase = existing.phase;
  }
  return status;
}

/** The status of a disk whose stored spec is invalid: Failed, with every
 * field error; a recorded assignment stays (its address stays reserved). */
function invalidStatus(disk: DiskObject, message: string, now: string): VirtualDiskStatus {
  const existing = disk.status ?? {};
  const condition: Condition = { type: 'Assigned', status: 'False', reason: INVALID_SPEC_REASON, message, lastTransitionTime: now };
  if (disk.metadata.generation !== undefined) condition.observedGeneration = disk.metadata.generation;
  const status: VirtualDiskStatus = { ...pickManaged(existing), phase: 'Failed', conditions: mergeCondition(existing.conditions, condition) };
  if (disk.metadata.generation !== undefined) status.observedGeneration = disk.metadata.generation;
  return status;
}

function pickManaged(status: VirtualDiskStatus): VirtualDiskStatus {
  const out: Record<string, unknown> = {};
  for (const key of MANAGED_STATUS_KEYS) if ((status as Record<string, unknown>)[key] !== undefined) out[key] = (status as Record<string, unknown>)[key];
  return out as VirtualDiskStatus;
}

/** The status of a deleted disk waiting to release its address. */
function releasingStatus(disk: DiskObject, why: string, now: string): VirtualDiskStatus {
  const existing = disk.status ?? {};
  const at = existing.scsiAddress ?? (existing.address === undefined ? 'its address' : formatAddress(existing.address));
  const condition: Condition = { type: 'Assigned', status: 'True', reason: RELEASING_REASON, message: `being deleted; ${at} is released once ${why}`, lastTransitionTime: now };
  return { ...pickManaged(existing), conditions: mergeCondition(existing.conditions, condition) };
}

function statusAction(disk: DiskObject, status: VirtualDiskStatus, eventFor: (c: Condition) => EventSpec | undefined): Action | undefined {
  if (sameJson(managedPart(disk.status), managedPart(status))) return undefined;
  const changed = assignedChanged(disk.status, status);
  const event = changed === undefined ? undefined : eventFor(changed);
  return { kind: 'patchStatus', disk: objectKey(disk.metadata), status, ...(event === undefined ? {} : { event }) };
}

const conditionEvent = (c: Condition): EventSpec => ({
  type: c.status === 'True' && c.reason !== 'SpecChangeIgnored' ? 'Normal' : 'Warning',
  reason: c.reason,
  message: c.message,
});

/** Plans one VM. */
export function planVm(world: VmWorld): VmPlan {
  const plan: VmPlan = { steps: new Map(), waiting: [], terminal: [], results: new Map() };
  const disks = [...world.disks].sort((a, b) => (objectKey(a.metadata) < objectKey(b.metadata) ? -1 : 1));
  const add = (key: string, action: Action | undefined): void => {
    if (action === undefined) return;
    const list = plan.steps.get(key) ?? [];
    list.push(action);
    plan.steps.set(key, list);
  };

  // Planner input: live valid disks, plus every disk still holding an
  // assignment (deleting, or invalid): their addresses stay taken.
  const intents: DiskIntent[] = [];
  const current = new Map<string, Assignment>();
  const validated = new Map<string, NormalizedVirtualDisk>();
  const errors = new Map<string, string>();
  for (const disk of disks) {
    const key = objectKey(disk.metadata);
    const ours = (disk.metadata.finalizers ?? []).includes(FINALIZER);
    const deleting = disk.metadata.deletionTimestamp !== undefined;
    if (deleting && !ours) continue; // already released (or never held anything)
    const assignment = assignmentFromStatus(disk);
    if (assignment !== undefined) current.set(key, assignment);
    const checked = validate(disk);
    if (checked.ok) validated.set(key, checked.disk);
    else errors.set(key, checked.errors.map((e) => `${e.field}: ${e.message}`).join('; '));
    if (!deleting && checked.ok) intents.push(intentFromDisk(checked.disk, 'operator'));
    else if (assignment !== undefined) {
      intents.push({ key, identitySeed: disk.metadata.uid, vmName: assignment.vmName, ioProfile: assignment.ioProfile });
    }
  }
  const planned = planAssignments(intents, current, world.limits ?? DEFAULT_PLAN_LIMITS);

  for (const disk of disks) {
    const key = objectKey(disk.metadata);
    const ns = disk.metadata.namespace;
    const ours = (disk.metadata.finalizers ?? []).includes(FINALIZER);
    if (disk.metadata.deletionTimestamp !== undefined) {
      if (!ours) continue;
      planRelease(world, disk, plan, add);
      continue;
    }
    if (!ours) add(key, { kind: 'addFinalizer', disk: key });
    const valid = validated.get(key);
    if (valid === undefined) {
      const message = `the stored spec is invalid (fix it; nothing is retried until it changes): ${errors.get(key) ?? 'unknown error'}`;
      plan.terminal.push({ disk: key, message });
      add(key, statusAction(disk, invalidStatus(disk, message, world.now), conditionEvent));
      continue;
    }
    const result = planned.results.get(key);
    if (result === undefined) continue; // cannot happen: every valid live disk is an intent
    plan.results.set(key, result);
    const assignment = planned.assignments.get(key);
    add(key, statusAction(disk, desiredStatus(disk, result, assignment, world.now), conditionEvent));
    if (!result.ok || !wantsOwnedClaim(valid)) continue;

    const claimName = claimNameFor(disk);
    const claim = world.claims.get(`${ns}/${claimName}`);
    const annotations = claimAnnotations(disk, result, valid);
    const requestBytes = claimRequestBytes(valid);
    if (claim === undefined) {
      const storageClassName = valid.storageClassName ?? world.defaultStorageClass;
      add(key, {
        kind: 'createClaim', disk: key,
        claim: {
          namespace: ns, name: claimName, labels: { [MANAGED_BY_LABEL.key]: MANAGED_BY_LABEL.value }, annotations,
          owner: ownerReferenceTo(disk), storageClassName, requestBytes,
        },
        event: { type: 'Normal', reason: 'ClaimCreated', message: `created PersistentVolumeClaim ${claimName} (StorageClass ${storageClassName}, ${valid.deviceType === 'lun' ? `${formatBytes(requestBytes)} placeholder: the device's own capacity` : formatBytes(requestBytes)}) for ${result.vmName} at ${result.address === undefined ? '?' : formatAddress(result.address)}` },
      });
      continue;
    }
    if (!isOwnedBy(claim, disk)) {
      const message = `PersistentVolumeClaim ${claimName} exists but is not owned by this VirtualDisk (uid ${disk.metadata.uid}); delete it`;
      plan.terminal.push({ disk: key, message });
      continue;
    }
    const staleAnnotations = Object.entries(annotations).some(([k, v]) => claim.metadata.annotations?.[k] !== v);
    // A claim's request may only grow once it is bound (Kubernetes refuses
    // spec changes of unbound claims); until then the new size waits.
    const grow = claim.requestBytes < requestBytes && claim.volumeName !== undefined;
    if (staleAnnotations || grow) {
      add(key, {
        kind: 'updateClaim', disk: key, claim: claimName, annotations, ...(grow ? { requestBytes } : {}),
        event: { type: 'Normal', reason: 'ClaimUpdated', message: `updated PersistentVolumeClaim ${claimName}: ${[staleAnnotations ? 'assignment annotations' : '', grow ? `request ${formatBytes(requestBytes)}` : ''].filter(Boolean).join(', ')}` },
      });
    }
  }
  return plan;
}

/** The release steps of a deleted disk that still carries our finalizer. */
function planRelease(world: VmWorld, disk: DiskObject, plan: VmPlan, add: (key: string, action: Action | undefined) => void): void {
  const key = objectKey(disk.metadata);
  const claimRef = claimRefOf(disk);
  const claim = world.claims.get(`${disk.metadata.namespace}/${claimRef.name}`);
  const attached = world.attachments.get(key) ?? [];
  const at = disk.status?.scsiAddress ?? (disk.status?.address === undefined ? 'no address' : formatAddress(disk.status.address));
  const wait = (why: string): void => {
    plan.waiting.push({ disk: key, message: why });
    add(key, statusAction(disk, releasingStatus(disk, why, world.now), (c) => ({ type: 'Normal', reason: 'WaitingForDetach', message: c.message })));
  };
  if (attached.length > 0) {
    wait(`the volume is detached (still attached: VolumeAttachment ${attached.join(', ')})`);
    return;
  }
  if (claimRef.owned && claim !== undefined && isOwnedBy(claim, disk)) {
    if (claim.metadata.deletionTimestamp === undefined) {
      add(key, { kind: 'deleteClaim', disk: key, claim: claimRef.name, uid: claim.metadata.uid, event: { type: 'Normal', reason: 'ClaimDeleted', message: `deleted PersistentVolumeClaim ${claimRef.name}` } });
    } else {
      wait(`PersistentVolumeClaim ${claimRef.name} is gone (it is being deleted; a pod may still use it)`);
    }
    return;
  }
  add(key, { kind: 'removeFinalizer', disk: key, event: { type: 'Normal', reason: 'Released', message: `volume detached; released ${at} on VM ${world.vm}` } });
}
