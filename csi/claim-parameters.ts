// What a VirtualDisk's claim adds to CreateVolume in a cluster. The operator
// plans a disk's address and identity into its status and writes them, with
// the VM and (lun disks) the device, as annotations on the claim it creates
// (operator/objects.ts claimAnnotations). external-provisioner passes no
// claim annotations to CreateVolume, only the claim's name and namespace
// (--extra-create-metadata: csi.storage.k8s.io/pvc/name, /namespace). So the
// controller reads the claim itself.
//
// A claim's say-so is not enough (anyone who may create claims could name
// /dev/sda, or another disk's WWN): the annotations count only on a claim
// whose controller owner is a VirtualDisk with the same UID, and only as far
// as that VirtualDisk agrees:
//  - lun disk (passthrough): the device, rawio and expected identity must be
//    what its spec says (passthroughKeysOf);
//  - emulated disk: vhba.io/serial, vhba.io/wwn and vhba.io/controller,
//    /target, /lun must be its status.serial, status.wwn and status.address
//    (what status.guestDevicePaths are computed from), so the LUN the guest
//    sees is the one the status reports; the block sizes are its spec's.
// Both get the VM from the VirtualDisk ("namespace/vmName"). A mismatch is
// FAILED_PRECONDITION naming both values: the operator rewrites the claim
// when the assignment changes, and external-provisioner retries. A claim
// without a VirtualDisk owner (a user's own claim, csi-sanity) adds nothing.
// Nothing is read beyond the claim and its owner (RBAC: persistentvolumeclaims
// get, virtualdisks get; the reader: stores/claims.ts).
import { validateVirtualDisk } from '../operator/api/validate.ts';
import { API_VERSION, KIND, normalizeWwn, type NormalizedVirtualDisk } from '../operator/api/virtualdisk.ts';
import { failedPrecondition } from './errors.ts';
import { ContextKey, PASSTHROUGH_KEYS, PASSTHROUGH_SOURCE_KEYS, passthroughKeysOf } from './volumes.ts';

/** The claim's name and namespace external-provisioner adds (--extra-create-metadata). */
export const ClaimParameterKey = { name: 'csi.storage.k8s.io/pvc/name', namespace: 'csi.storage.k8s.io/pvc/namespace' } as const;

/** What is read of a claim. */
export interface ClaimView {
  annotations: Record<string, string>;
  ownerReferences: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
}

/** What is read of a VirtualDisk. */
export interface DiskView {
  uid: string;
  spec: unknown;
  /** The operator's status (address, serial, wwn), unchecked. */
  status?: unknown;
}

/** Reads claims and VirtualDisks (the Kubernetes API, or a test double). */
export interface ClaimReader {
  claim(namespace: string, name: string): Promise<ClaimView | undefined>;
  virtualDisk(namespace: string, name: string): Promise<DiskView | undefined>;
}

const ADDRESS_KEYS = [ContextKey.controller, ContextKey.target, ContextKey.lun] as const;

/** The parameters CreateVolume adds from the claim (see above); {} when the
 * claim is not named or not found, when it has no VirtualDisk owner and
 * names no device, or when the parameters (a StorageClass) name a device.
 * FAILED_PRECONDITION when the claim and its VirtualDisk disagree. */
export async function claimParameters(parameters: Record<string, string>, reader: ClaimReader): Promise<Record<string, string>> {
  const namespace = parameters[ClaimParameterKey.namespace];
  const name = parameters[ClaimParameterKey.name];
  if (!namespace || !name || PASSTHROUGH_SOURCE_KEYS.some((k) => parameters[k] !== undefined)) return {};
  const claim = await reader.claim(namespace, name);
  if (claim === undefined) return {};
  const given = Object.fromEntries(Object.entries(claim.annotations).filter(([k]) => (PASSTHROUGH_KEYS as readonly string[]).includes(k)));
  const namesDevice = PASSTHROUGH_SOURCE_KEYS.some((k) => given[k] !== undefined);
  const where = `PersistentVolumeClaim ${namespace}/${name}`;
  const owner = claim.ownerReferences.find((o) => o.controller === true && o.kind === KIND && o.apiVersion.split('/')[0] === API_VERSION.split('/')[0]);
  if (owner === undefined) {
    if (!namesDevice) return {}; // not the operator's: plain CSI use
    throw failedPrecondition(`${where} names a passthrough device but is not owned by a VirtualDisk; only the claims the vhba operator creates for deviceType lun disks may name one`);
  }
  const disk = await reader.virtualDisk(namespace, owner.name);
  if (disk === undefined || disk.uid !== owner.uid) throw failedPrecondition(`${where} is owned by VirtualDisk ${namespace}/${owner.name} (uid ${owner.uid}), which does not exist (any more)`);
  const diskName = `VirtualDisk ${namespace}/${owner.name}`;
  const checked = validateVirtualDisk({ apiVersion: API_VERSION, kind: KIND, metadata: { name: owner.name, namespace, uid: disk.uid }, spec: disk.spec as never });
  if (namesDevice && (!checked.ok || checked.disk.deviceType !== 'lun')) throw failedPrecondition(`${where} names a passthrough device but ${diskName} is not a valid deviceType lun disk`);
  if (!checked.ok) throw failedPrecondition(`${where} is owned by ${diskName}, whose spec is not valid (its status says why); fix the spec`);
  if (checked.disk.deviceType === 'lun' && !namesDevice) throw failedPrecondition(`${where} names no device but ${diskName} is a deviceType lun disk; the operator rewrites the claim, retry`);
  const out = namesDevice ? lunParameters(where, diskName, given, checked.disk) : emulatedParameters(where, diskName, claim.annotations, checked.disk, disk.status);
  out[ContextKey.vm] = `${namespace}/${checked.disk.vmName}`;
  for (const key of ADDRESS_KEYS) {
    const v = claim.annotations[key];
    if (v !== undefined && v !== '') out[key] = v; // checked by parseParameters
  }
  return out;
}

/** A lun disk's device, rawio and expected identity: the claim's must be its spec's. */
function lunParameters(where: string, diskName: string, given: Record<string, string>, disk: NormalizedVirtualDisk): Record<string, string> {
  const expected = passthroughKeysOf(disk);
  for (const key of new Set([...Object.keys(given), ...Object.keys(expected)])) {
    if (given[key] !== expected[key]) {
      throw failedPrecondition(`${where} annotation ${key} is ${JSON.stringify(given[key] ?? null)} but ${diskName} says ${JSON.stringify(expected[key] ?? null)}; the operator rewrites it, retry`);
    }
  }
  return { ...expected };
}

/** An emulated disk's identity (the claim's, checked against the status) and
 * block sizes (the spec's). The address is checked here, copied by the caller. */
function emulatedParameters(where: string, diskName: string, annotations: Record<string, string>, disk: NormalizedVirtualDisk, rawStatus: unknown): Record<string, string> {
  const status = (rawStatus !== null && typeof rawStatus === 'object' ? rawStatus : {}) as { address?: Record<string, unknown>; serial?: unknown; wwn?: unknown };
  const text = (v: unknown) => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);
  const mismatch = (key: string, claimValue: string | undefined, field: string, statusValue: string | undefined) => failedPrecondition(
    `${where} annotation ${key} is ${JSON.stringify(claimValue ?? null)} but ${diskName} ${field} is ${JSON.stringify(statusValue ?? null)}; `
    + 'the guest would not see what the status reports. The operator rewrites the claim when the assignment changes, retry',
  );
  const serial = annotations[ContextKey.serial];
  if (serial === undefined || serial !== text(status.serial)) throw mismatch(ContextKey.serial, serial, 'status.serial', text(status.serial));
  const wwn = annotations[ContextKey.wwn];
  const statusWwn = text(status.wwn);
  if (wwn === undefined || statusWwn === undefined || normalizeWwn(wwn) !== normalizeWwn(statusWwn)) throw mismatch(ContextKey.wwn, wwn, 'status.wwn', statusWwn);
  for (const key of ADDRESS_KEYS) {
    const field = key.slice('vhba.io/'.length) as 'controller' | 'target' | 'lun';
    const want = text(status.address?.[field]);
    if (annotations[key] !== want) throw mismatch(key, annotations[key], `status.address.${field}`, want);
  }
  return {
    [ContextKey.serial]: serial, [ContextKey.wwn]: normalizeWwn(wwn),
    logicalBlockSize: String(disk.logicalBlockSize), physicalBlockSize: String(disk.physicalBlockSize),
  };
}
