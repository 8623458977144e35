// Volume rules shared by the controller and the node: StorageClass parameters,
// capacity ranges, volume capabilities, the records the stores hold, and the
// volume-context keys that carry placement from the operator to the node.
import { randomBytes } from 'node:crypto';
import {
  VolumeCapability_AccessMode_Mode as AccessMode,
  type CapacityRange,
  type VolumeCapability,
} from '../protos/gen/csi/v1/csi_pb.ts';
import { DEFAULTS, LIMITS, PATTERNS, normalizeWwn, type NormalizedVirtualDisk } from '../operator/api/virtualdisk.ts';
import { expectedPassthroughWwn } from '../operator/guest-paths.ts';
import { invalidArgument, outOfRange } from './errors.ts';

/** The plugin's name (GetPluginInfo) and the prefix of its keys. */
export const DRIVER_NAME = 'scsi.vhba.io';
/** Topology segment naming the node whose data directory holds a volume. */
export const TOPOLOGY_NODE_KEY = 'topology.scsi.vhba.io/node';

/** Volume-context keys. Placement and identity keys come from the
 * operator's claim (claim-parameters.ts) or the StorageClass parameters; the
 * others are written by CreateVolume. */
export const ContextKey = {
  vm: 'vhba.io/vm',
  controller: 'vhba.io/controller',
  target: 'vhba.io/target',
  lun: 'vhba.io/lun',
  /** An emulated disk's unit serial number (VPD 80h, SPC-4 §7.8.16): the
   * VirtualDisk's status.serial. Absent: derived from the volume id. */
  serial: 'vhba.io/serial',
  /** An emulated disk's NAA WWN (VPD 83h, SPC-4 §7.8.6.6), lowercase hex
   * without 0x in the context (0x accepted in parameters): the VirtualDisk's
   * status.wwn. Absent: derived from the volume id. */
  wwn: 'vhba.io/wwn',
  backingFile: 'scsi.vhba.io/backing-file',
  logicalBlockSize: 'scsi.vhba.io/logical-block-size',
  physicalBlockSize: 'scsi.vhba.io/physical-block-size',
  ioProfile: 'scsi.vhba.io/io-profile',
  // Passthrough volumes (deviceType lun, issue 8): the device and the policy,
  // from the operator's claim annotations (or StorageClass parameters), kept
  // in the volume record and handed to the node in the volume context.
  /** A host SCSI device (absolute path under /dev/, normally its /dev/disk/by-id/ link). */
  hostDevice: 'vhba.io/host-device',
  /** An iSCSI LUN reached from the engine: portal "host[:port]", target name, LUN, optional initiator name. */
  iscsiPortal: 'vhba.io/iscsi-portal',
  iscsiIqn: 'vhba.io/iscsi-iqn',
  iscsiLun: 'vhba.io/iscsi-lun',
  iscsiInitiatorName: 'vhba.io/iscsi-initiator-name',
  /** "true": let through the commands the passthrough policy refuses by default. */
  rawio: 'vhba.io/rawio',
  /** The identity the device must have (attach refuses another one): NAA hex, VPD 80h serial. */
  expectedWwn: 'vhba.io/expected-wwn',
  expectedSerial: 'vhba.io/expected-serial',
} as const;

/** The keys naming a passthrough device (either source). */
export const PASSTHROUGH_SOURCE_KEYS = [ContextKey.hostDevice, ContextKey.iscsiPortal, ContextKey.iscsiIqn, ContextKey.iscsiLun, ContextKey.iscsiInitiatorName] as const;
/** Every passthrough key (source and policy). */
export const PASSTHROUGH_KEYS = [...PASSTHROUGH_SOURCE_KEYS, ContextKey.rawio, ContextKey.expectedWwn, ContextKey.expectedSerial] as const;

/** A whole real SCSI LUN behind the HBA: where it is and how it is treated. */
export interface PassthroughVolume {
  source: { kind: 'hostDevice'; path: string } | { kind: 'iscsi'; portal: string; iqn: string; lun: number; initiatorName?: string };
  rawio: boolean;
  /** Lowercase NAA hex without 0x. */
  expectedWwn?: string;
  expectedSerial?: string;
}

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
  /** An emulated volume's identity, when given (vhba.io/serial, vhba.io/wwn). */
  identity?: VolumeIdentity;
  /** A passthrough volume's device and policy (no image file). */
  passthrough?: PassthroughVolume;
}

/** The identity an emulated volume's LUN reports; a missing part is derived
 * from the volume id at attach (node.ts). */
export interface VolumeIdentity {
  serial?: string;
  /** Lowercase NAA hex without 0x. */
  wwn?: string;
}

const PARAMETER_KEYS: readonly string[] = [
  'logicalBlockSize', 'physicalBlockSize', 'ioProfile', ContextKey.vm, ContextKey.controller, ContextKey.target, ContextKey.lun, ContextKey.serial, ContextKey.wwn, ...PASSTHROUGH_KEYS,
];

/** Reads vhba.io/serial and vhba.io/wwn of CreateVolume parameters or a
 * volume context; undefined when neither is given. INVALID_ARGUMENT naming
 * the key for a serial that is not 1–20 printable ASCII characters (SPC-4
 * §7.8.16) or a WWN that is not an NAA designator (SPC-4 §7.8.6.6). */
export function parseIdentity(values: Record<string, string>, where: 'parameter' | 'volume_context'): VolumeIdentity | undefined {
  const serial = values[ContextKey.serial];
  const wwn = values[ContextKey.wwn];
  if (serial === undefined && wwn === undefined) return undefined;
  const out: VolumeIdentity = {};
  if (serial !== undefined) {
    if (serial.length > LIMITS.serialMaxLength || !new RegExp(PATTERNS.serial).test(serial)) {
      throw invalidArgument(`${where} ${ContextKey.serial} ${JSON.stringify(serial)} must be printable ASCII without leading or trailing spaces, at most ${LIMITS.serialMaxLength} characters`);
    }
    out.serial = serial;
  }
  if (wwn !== undefined) {
    if (!new RegExp(PATTERNS.wwn).test(wwn)) throw invalidArgument(`${where} ${ContextKey.wwn} ${JSON.stringify(wwn)} must be an NAA designator in hex (optional 0x): 16 digits starting with 2, 3 or 5, or 32 digits starting with 6`);
    out.wwn = normalizeWwn(wwn);
  }
  return out;
}

/** The volume-context keys of an identity (parseIdentity reads them back). */
export function identityContext(identity: VolumeIdentity | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (identity?.serial !== undefined) out[ContextKey.serial] = identity.serial;
  if (identity?.wwn !== undefined) out[ContextKey.wwn] = identity.wwn;
  return out;
}

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
  const passthrough = parsePassthrough(params, 'parameter');
  const identity = parseIdentity(params, 'parameter');
  // A device reports its own identity; the expected one is vhba.io/expected-*.
  if (passthrough && identity) throw invalidArgument(`parameter ${Object.keys(identityContext(identity)).join(', ')} applies only to an emulated volume: a passthrough device reports its own identity; use ${ContextKey.expectedWwn} or ${ContextKey.expectedSerial} to require one`);
  return { logicalBlockSize: logical, physicalBlockSize: physical, ioProfile: io, placement, ...(passthrough ? { passthrough } : {}), ...(identity ? { identity } : {}) };
}

/** Reads the passthrough keys of CreateVolume parameters or a volume context
 * (`where` names which in messages); undefined when no source key is given.
 * Each problem is INVALID_ARGUMENT naming the key. Without vhba.io/expected-wwn
 * a /dev/disk/by-id/wwn-0x… or scsi-3… host device expects the WWN it names. */
export function parsePassthrough(values: Record<string, string>, where: 'parameter' | 'volume_context'): PassthroughVolume | undefined {
  const bad = (key: string, why: string): never => { throw invalidArgument(`${where} ${key} ${JSON.stringify(values[key])} ${why}`); };
  const has = (key: string) => values[key] !== undefined;
  const device = values[ContextKey.hostDevice];
  const iscsiGiven = [ContextKey.iscsiPortal, ContextKey.iscsiIqn, ContextKey.iscsiLun, ContextKey.iscsiInitiatorName].filter(has);
  if (device === undefined && iscsiGiven.length === 0) {
    const stray = [ContextKey.rawio, ContextKey.expectedWwn, ContextKey.expectedSerial].filter(has);
    if (stray.length > 0) throw invalidArgument(`${where} ${stray.join(', ')} applies only to a passthrough volume: give ${ContextKey.hostDevice} or ${ContextKey.iscsiPortal}, ${ContextKey.iscsiIqn} and ${ContextKey.iscsiLun}`);
    return undefined;
  }
  if (device !== undefined && iscsiGiven.length > 0) {
    throw invalidArgument(`${where} ${ContextKey.hostDevice} and ${iscsiGiven.join(', ')} name two devices: give either a host device or an iSCSI LUN`);
  }
  let source: PassthroughVolume['source'];
  if (device !== undefined) {
    if (!new RegExp(PATTERNS.hostDevicePath).test(device) || device.length > LIMITS.pathMaxLength) bad(ContextKey.hostDevice, 'must be an absolute path under /dev/ without "." or ".." segments, e.g. /dev/disk/by-id/wwn-0x5000c500abcdef01');
    source = { kind: 'hostDevice', path: device };
  } else {
    for (const key of [ContextKey.iscsiPortal, ContextKey.iscsiIqn, ContextKey.iscsiLun]) {
      if (!has(key)) throw invalidArgument(`${where} ${key} is required with ${iscsiGiven.join(', ')}: an iSCSI LUN needs ${ContextKey.iscsiPortal}, ${ContextKey.iscsiIqn} and ${ContextKey.iscsiLun}`);
    }
    const portal = values[ContextKey.iscsiPortal]!;
    if (portal.length > LIMITS.portalMaxLength || !new RegExp(PATTERNS.iscsiPortal).test(portal)) bad(ContextKey.iscsiPortal, 'must be host or host:port (a DNS name, an IPv4 address or a bracketed IPv6 address; port 1-65535), e.g. 192.0.2.10:3260');
    const iqn = values[ContextKey.iscsiIqn]!;
    const iscsiName = new RegExp(PATTERNS.iscsiName);
    if (iqn.length > LIMITS.iscsiNameMaxLength || !iscsiName.test(iqn)) bad(ContextKey.iscsiIqn, 'must be an iSCSI name: iqn.YYYY-MM.<reversed domain>[:<id>], eui.<16 hex> or naa.<16 or 32 hex>');
    const lunText = values[ContextKey.iscsiLun]!;
    if (!/^[0-9]{1,5}$/.test(lunText) || Number(lunText) > LIMITS.maxIscsiLun) bad(ContextKey.iscsiLun, `must be a whole number from 0 to ${LIMITS.maxIscsiLun}`);
    const initiator = values[ContextKey.iscsiInitiatorName];
    if (initiator !== undefined && (initiator.length > LIMITS.iscsiNameMaxLength || !iscsiName.test(initiator))) bad(ContextKey.iscsiInitiatorName, 'must be an iSCSI name (iqn., eui. or naa.)');
    // A portal without a port gets the iSCSI well-known port (RFC 7143 §13.2), as the VirtualDisk API normalises it.
    const hasPort = portal.startsWith('[') ? portal.includes(']:') : portal.includes(':');
    const withPort = hasPort ? portal : `${portal}:${DEFAULTS.iscsiPort}`;
    source = { kind: 'iscsi', portal: withPort, iqn, lun: Number(lunText), ...(initiator === undefined ? {} : { initiatorName: initiator }) };
  }
  const rawioText = values[ContextKey.rawio] ?? 'false';
  if (rawioText !== 'true' && rawioText !== 'false') bad(ContextKey.rawio, 'must be "true" or "false"');
  const out: PassthroughVolume = { source, rawio: rawioText === 'true' };
  const wwnText = values[ContextKey.expectedWwn];
  if (wwnText !== undefined) {
    if (!new RegExp(PATTERNS.wwn).test(wwnText)) bad(ContextKey.expectedWwn, 'must be an NAA designator in hex (optional 0x): 16 digits starting with 2, 3 or 5, or 32 digits starting with 6');
    out.expectedWwn = normalizeWwn(wwnText);
  } else {
    const fromPath = expectedPassthroughWwn(undefined, device);
    if (fromPath !== undefined) out.expectedWwn = fromPath;
  }
  const serial = values[ContextKey.expectedSerial];
  if (serial !== undefined) {
    if (serial.length > 255 || !new RegExp(PATTERNS.serial).test(serial)) bad(ContextKey.expectedSerial, 'must be printable ASCII without leading or trailing spaces, at most 255 characters');
    out.expectedSerial = serial;
  }
  return out;
}

/** The passthrough keys a validated lun disk stands for: the annotations the
 * operator puts on its claim, the parameters CreateVolume takes. */
export function passthroughKeysOf(disk: NormalizedVirtualDisk): Record<string, string> {
  const out: Record<string, string> = {};
  const source = disk.source;
  if (source !== undefined && 'hostDevice' in source) out[ContextKey.hostDevice] = source.hostDevice.path;
  if (source !== undefined && 'iscsi' in source) {
    out[ContextKey.iscsiPortal] = source.iscsi.portal;
    out[ContextKey.iscsiIqn] = source.iscsi.iqn;
    out[ContextKey.iscsiLun] = String(source.iscsi.lun);
    if (source.iscsi.initiatorName !== undefined) out[ContextKey.iscsiInitiatorName] = source.iscsi.initiatorName;
  }
  out[ContextKey.rawio] = String(disk.rawio);
  const wwn = expectedPassthroughWwn(disk.wwn, source !== undefined && 'hostDevice' in source ? source.hostDevice.path : undefined);
  if (wwn !== undefined) out[ContextKey.expectedWwn] = wwn;
  if (disk.serial !== undefined) out[ContextKey.expectedSerial] = disk.serial;
  return out;
}

/** The volume-context keys of a passthrough volume (parsePassthrough reads them back). */
export function passthroughContext(p: PassthroughVolume): Record<string, string> {
  const out: Record<string, string> = {};
  if (p.source.kind === 'hostDevice') out[ContextKey.hostDevice] = p.source.path;
  else {
    out[ContextKey.iscsiPortal] = p.source.portal;
    out[ContextKey.iscsiIqn] = p.source.iqn;
    out[ContextKey.iscsiLun] = String(p.source.lun);
    if (p.source.initiatorName !== undefined) out[ContextKey.iscsiInitiatorName] = p.source.initiatorName;
  }
  out[ContextKey.rawio] = String(p.rawio);
  if (p.expectedWwn !== undefined) out[ContextKey.expectedWwn] = p.expectedWwn;
  if (p.expectedSerial !== undefined) out[ContextKey.expectedSerial] = p.expectedSerial;
  return out;
}

/** The device of a passthrough volume in words, for messages. */
export function describePassthrough(p: PassthroughVolume): string {
  return p.source.kind === 'hostDevice' ? `host device ${p.source.path}` : `iSCSI LUN ${p.source.lun} of ${p.source.iqn} at ${p.source.portal}`;
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
  /** 0 for a passthrough volume: its capacity is the device's, unknown here. */
  capacityBytes: number;
  /** Backing image path, generated by us at creation; '' for a passthrough
   * volume (parameters.passthrough: no image). */
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
