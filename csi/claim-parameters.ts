// How a lun disk's device reaches CreateVolume in a cluster. The operator
// annotates the claim it creates for a VirtualDisk (operator/objects.ts:
// vhba.io/host-device or vhba.io/iscsi-*, vhba.io/rawio, vhba.io/expected-*),
// but external-provisioner passes no claim annotations to CreateVolume, only
// the claim's name and namespace (--extra-create-metadata:
// csi.storage.k8s.io/pvc/name, /namespace). So the controller reads the claim
// itself.
//
// A device reaches a VM's guest whole, so a claim's say-so is not enough
// (anyone who may create claims could name /dev/sda): the annotations count
// only on a claim whose controller owner is a VirtualDisk (same UID) whose
// spec is a lun disk naming the same device and policy; the parameters are
// then built from that VirtualDisk (its namespace/vmName as vhba.io/vm) and
// the address annotations. A claim without device annotations adds nothing,
// and nothing is read beyond the claim (RBAC: persistentvolumeclaims get,
// plus virtualdisks get for lun disks; the reader: stores/claims.ts).
import { validateVirtualDisk } from '../operator/api/validate.ts';
import { API_VERSION, KIND } from '../operator/api/virtualdisk.ts';
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
}

/** Reads claims and VirtualDisks (the Kubernetes API, or a test double). */
export interface ClaimReader {
  claim(namespace: string, name: string): Promise<ClaimView | undefined>;
  virtualDisk(namespace: string, name: string): Promise<DiskView | undefined>;
}

/** The parameters CreateVolume adds from the claim (see above); {} when the
 * claim is not named, not found, or names no device, or when the
 * parameters (a StorageClass) already name one. FAILED_PRECONDITION when a
 * claim names a device its VirtualDisk does not. */
export async function claimPassthroughParameters(parameters: Record<string, string>, reader: ClaimReader): Promise<Record<string, string>> {
  const namespace = parameters[ClaimParameterKey.namespace];
  const name = parameters[ClaimParameterKey.name];
  if (!namespace || !name || PASSTHROUGH_SOURCE_KEYS.some((k) => parameters[k] !== undefined)) return {};
  const claim = await reader.claim(namespace, name);
  const given = Object.fromEntries(Object.entries(claim?.annotations ?? {}).filter(([k]) => (PASSTHROUGH_KEYS as readonly string[]).includes(k)));
  if (claim === undefined || !PASSTHROUGH_SOURCE_KEYS.some((k) => given[k] !== undefined)) return {};
  const where = `PersistentVolumeClaim ${namespace}/${name}`;
  const owner = claim.ownerReferences.find((o) => o.controller === true && o.kind === KIND && o.apiVersion.split('/')[0] === API_VERSION.split('/')[0]);
  if (owner === undefined) throw failedPrecondition(`${where} names a passthrough device but is not owned by a VirtualDisk; only the claims the vhba operator creates for deviceType lun disks may name one`);
  const disk = await reader.virtualDisk(namespace, owner.name);
  if (disk === undefined || disk.uid !== owner.uid) throw failedPrecondition(`${where} is owned by VirtualDisk ${namespace}/${owner.name} (uid ${owner.uid}), which does not exist (any more)`);
  const checked = validateVirtualDisk({ apiVersion: API_VERSION, kind: KIND, metadata: { name: owner.name, namespace, uid: disk.uid }, spec: disk.spec as never });
  if (!checked.ok || checked.disk.deviceType !== 'lun') throw failedPrecondition(`${where} names a passthrough device but VirtualDisk ${namespace}/${owner.name} is not a valid deviceType lun disk`);
  const expected = passthroughKeysOf(checked.disk);
  for (const key of new Set([...Object.keys(given), ...Object.keys(expected)])) {
    if (given[key] !== expected[key]) {
      throw failedPrecondition(`${where} annotation ${key} is ${JSON.stringify(given[key] ?? null)} but VirtualDisk ${namespace}/${owner.name} says ${JSON.stringify(expected[key] ?? null)}; the operator rewrites it, retry`);
    }
  }
  const out: Record<string, string> = { ...expected, [ContextKey.vm]: `${namespace}/${checked.disk.vmName}` };
  for (const key of [ContextKey.controller, ContextKey.target, ContextKey.lun]) {
    const v = claim.annotations[key];
    if (v !== undefined && v !== '') out[key] = v; // checked by parseParameters
  }
  return out;
}
