// Volume rules shared by the controller and the node: StorageClass parameters,
// capacity ranges, volume capabilities, the records the stores hold, and the
// volume-context keys that carry placement from the operator to the node.
import { randomBytes } from 'node:crypto';
import {
  VolumeCapability_AccessMode_Mode as AccessMode,
  type CapacityRange,
  type VolumeCapability,
} from '../protos/gen/csi/v1/csi_pb.ts';
import { invalidArgument, outOfRange } from './errors.ts';

/** The plugin's name (GetPluginInfo) and the prefix of its keys. */
export const DRIVER_NAME = 'scsi.vhba.io';
/** Topology segment naming the node whose data directory holds a volume. */
export const TOPOLOGY_NODE_KEY = 'topology.scsi.vhba.io/node';

/** Volume-context keys. Placement keys come from the operator (or the
 * StorageClass parameters); the others are written by CreateVolume. */
export const ContextKey = {
  vm: 'vhba.io/vm',
  controller: 'vhba.io/controller',
  target: 'vhba.io/target',
  lun: 'vhba.io/lun',
  backingFile: 'scsi.vhba.io/backing-file',
  logicalBlockSize: 'scsi.vhba.io/logical-block-size',
  physicalBlockSize: 'scsi.vhba.io/physical-block-size',
  ioProfile: 'scsi.vhba.io/io-profile',
} as const;

/** Pod information kubelet adds to NodePublish's volume context (podInfoOnMount). */
export const PodInfoKey = { name: 'csi.storage.k8s.io/pod.name', namespace: 'csi.storage.k8s.io/pod.namespace' } as const;

/** Default size when the request gives none: 1 GiB. */
export const DEFAULT_CAPACITY_BYTES = 1 << 30;
/** Largest volume: 64 TiB. */
export const MAX_CAPACITY_BYTES = 64 * 2 ** 40;

/** Validated StorageClass parameters. */
export interface VolumeParameters {
  logicalBlockSize: 512 | 4096;
  physicalBlockSize: number;
  ioProfile: 'shared' | 'dedicated';
  /** Placement keys (vhba.io/*), passed on in the volume context. */
  placement: Record<string, string>;
}

const PARAMETER_KEYS = ['logicalBlockSize', 'physicalBlockSize', 'ioProfile', ContextKey.vm, ContextKey.controller, ContextKey.target, ContextKey.lun];

/** Checks a placement number (controller, target, lun) against its range. */
export function parsePlacementNumber(value: string, key: string, max: number): number {
  if (!/^[0-9]{1,5}$/.test(value) || Number(value) > max) throw invalidArgument(`${key} ${JSON.stringify(value)} must be a whole number from 0 to ${max}`);
  return Number(value);
}

/** Validates the VM name of vhba.io/vm: "name" or "namespace/name", each a
 * DNS-1123 label (it becomes a directory under the socket directory). */
export function parseVmName(value: string, key: string): { namespace?: string; name: string } {
  const label = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
  const parts = value.split('/');
  if (parts.length > 2 || !parts.every((p) => label.test(p))) {
    throw invalidArgument(`${key} ${JSON.stringify(value)} must be "name" or "namespace/name" with lowercase DNS labels (a-z, 0-9, "-", at most 63 characters)`);
  }
  return parts.length === 2 ? { namespace: parts[0]!, name: parts[1]! } : { name: parts[0]! };
}

/** Validates CreateVolume parameters; messages name the key and the allowed values. */
export function parseParameters(params: Record<string, string>): VolumeParameters {
  for (const key of Object.keys(params)) {
    if (key.startsWith('csi.storage.k8s.io/')) continue; // added by external-provisioner
    if (!PARAMETER_KEYS.includes(key)) throw invalidArgument(`parameter ${JSON.stringify(key)} is not known; allowed: ${PARAMETER_KEYS.join(', ')}`);
  }
  const lbsText = params.logicalBlockSize ?? '512';
  if (lbsText !== '512' && lbsText !== '4096') throw invalidArgument(`parameter logicalBlockSize ${JSON.stringify(lbsText)} is not supported: use "512" or "4096"`);
  const logical = Number(lbsText) as 512 | 4096;
  const pbsText = params.physicalBlockSize ?? String(Math.max(logical, 4096));
  const physical = /^[0-9]{1,6}$/.test(pbsText) ? Number(pbsText) : NaN;
  if (!(physical >= logical && physical <= 65536 && (physical & (physical - 1)) === 0)) {
    throw invalidArgument(`parameter physicalBlockSize ${JSON.stringify(pbsText)} must be a power of two from logicalBlockSize (${logical}) to 65536`);
  }
  const io = params.ioProfile ?? 'shared';
  if (io !== 'shared' && io !== 'dedicated') throw invalidArgument(`parameter ioProfile ${JSON.stringify(io)} is not supported: use "shared" or "dedicated"`);
  const placement: Record<string, string> = {};
  const vm = params[ContextKey.vm];
  if (vm !== undefined) { parseVmName(vm, ContextKey.vm); placement[ContextKey.vm] = vm; }
  const ranges: [string, number][] = [[ContextKey.controller, 255], [ContextKey.target, 255], [ContextKey.lun, 16383]];
  for (const [key, max] of ranges) {
    const v = params[key];
    if (v !== undefined) { parsePlacementNumber(v, key, max); placement[key] = v; }
  }
  return { logicalBlockSize: logical, physicalBlockSize: physical, ioProfile: io, placement };
}

/** The size to allocate for a capacity range: required_bytes rounded up to
 * `alignment`, within limit_bytes; DEFAULT_CAPACITY_BYTES (capped by the
 * limit) when neither is given. CSI spec CapacityRange. */
export function sizeForRange(range: CapacityRange | undefined, alignment: number, fallback = DEFAULT_CAPACITY_BYTES): number {
  const required = range?.requiredBytes ?? 0n;
  const limit = range?.limitBytes ?? 0n;
  if (required < 0n || limit < 0n) throw invalidArgument('capacity_range bytes must not be negative');
  if (limit > 0n && required > limit) throw invalidArgument(`capacity_range.required_bytes ${required} exceeds limit_bytes ${limit}`);
  const align = BigInt(alignment);
  let size = required > 0n ? ((required + align - 1n) / align) * align : BigInt(fallback);
  if (required === 0n && limit > 0n && size > limit) size = (limit / align) * align;
  if (limit > 0n && size > limit) throw outOfRange(`capacity ${required} rounded up to the ${alignment}-byte block is ${size}, above limit_bytes ${limit}; raise the limit to at least ${size}`);
  if (size === 0n) throw outOfRange(`limit_bytes ${limit} is smaller than one ${alignment}-byte block`);
  if (size > BigInt(MAX_CAPACITY_BYTES)) throw outOfRange(`capacity ${size} is above the largest supported volume (${MAX_CAPACITY_BYTES} bytes)`);
  return Number(size);
}

function modeName(mode: number): string {
  return Object.entries(AccessMode).find(([, v]) => v === mode)?.[0] ?? String(mode);
}

/** Why a capability cannot be served, or undefined when it can. vhba hands a
 * whole disk to one VM: block or a mount without a file system, accessed
 * from a single node. */
export function capabilityProblem(cap: VolumeCapability | undefined): string | undefined {
  if (!cap) return 'a volume capability is required';
  const mode = cap.accessMode?.mode ?? AccessMode.UNKNOWN;
  if (mode === AccessMode.UNKNOWN) return 'volume_capability.access_mode is required';
  if (mode !== AccessMode.SINGLE_NODE_WRITER && mode !== AccessMode.SINGLE_NODE_READER_ONLY) {
    return `access mode ${modeName(mode)} is not supported: a vhba disk belongs to one VM on one node; use SINGLE_NODE_WRITER or SINGLE_NODE_READER_ONLY`;
  }
  if (cap.accessType.case === undefined) return 'volume_capability needs an access type (block or mount)';
  if (cap.accessType.case === 'mount' && cap.accessType.value.fsType !== '') {
    return `fs_type ${JSON.stringify(cap.accessType.value.fsType)} is not supported: vhba gives the VM the whole disk and creates no file system; leave fsType empty or use volumeMode: Block`;
  }
  return undefined;
}

/** Whether a capability asks for read-only access. */
export function isReadOnlyMode(cap: VolumeCapability | undefined): boolean {
  return cap?.accessMode?.mode === AccessMode.SINGLE_NODE_READER_ONLY;
}

/** Validates a list of capabilities (CreateVolume); throws on the first problem. */
export function checkCapabilities(caps: readonly VolumeCapability[], field = 'volume_capabilities'): void {
  if (caps.length === 0) throw invalidArgument(`${field} is required: give at least one capability`);
  for (const cap of caps) {
    const problem = capabilityProblem(cap);
    if (problem) throw invalidArgument(`${field}: ${problem}`);
  }
}

/** A controller's record of a volume. */
export interface VolumeRecord {
  id: string;
  name: string;
  capacityBytes: number;
  /** Backing image path, generated by us at creation. */
  path: string;
  parameters: VolumeParameters;
  /** Raw parameters, for the idempotency comparison. */
  rawParameters: Record<string, string>;
  contentSource?: { kind: 'snapshot' | 'volume'; id: string };
  /** The node whose data directory holds the image. */
  node: string;
  /** creating: record written, image not yet complete (a crash here is
   * repaired by the next CreateVolume with the same name). */
  state: 'creating' | 'ready';
  /** Nodes this volume is ControllerPublished to, with the readonly flag. */
  published: Record<string, { readonly: boolean }>;
}

/** A controller's record of a snapshot. */
export interface SnapshotRecord {
  id: string;
  name: string;
  sourceVolumeId: string;
  sizeBytes: number;
  path: string;
  /** Milliseconds since the epoch. */
  createdAtMs: number;
  state: 'creating' | 'ready';
}

const ID_PATTERN = /^(vol|snap)-[0-9a-f]{32}$/;

/** A fresh id: "vol-" or "snap-" and 128 random bits in hex. */
export function newId(kind: 'vol' | 'snap'): string {
  return `${kind}-${randomBytes(16).toString('hex')}`;
}

/** Whether an id has the shape we generate (anything else cannot exist). */
export function isOurId(id: string, kind: 'vol' | 'snap'): boolean {
  return ID_PATTERN.test(id) && id.startsWith(`${kind}-`);
}
