// The VirtualDisk resource (vhba.io/v1alpha1): what a user writes (spec) and
// what vhba reports (status). One definition shared by `vhba serve` (a
// directory of manifests), the operator (the Kubernetes API) and the CSI
// plugin. The limits and patterns below are the single source for both the
// validator (validate.ts) and the OpenAPI schema (schema.ts).
//
// Paths: `source.file.path` may be absolute, or relative; a relative path is
// resolved against the data directory of the program reading the manifest
// (`vhba serve --data-dir`, default <state-dir>/data), so example manifests
// are portable. A relative path may not contain ".." segments.
//
// Passthrough (`deviceType: lun`, issue 8): the disk is a whole real SCSI LUN,
// `source.hostDevice` (a host device under /dev/, normally its stable
// /dev/disk/by-id/ link) or `source.iscsi` (a LUN the engine reaches itself).
// Its capacity, block sizes and write protection are the device's own, so a
// lun disk has no capacity/logicalBlockSize/physicalBlockSize/readOnly; its
// serial and wwn, when given, are the identity the device is EXPECTED to have
// (attach fails on any other device), not one vhba gives it.

/** API group/version and kind of the resource. */
export const API_VERSION = 'vhba.io/v1alpha1';
export const KIND = 'VirtualDisk';

/** Limits (virtio 1.2 §5.6.6.1: target 0–255, LUN 0–16383 with flat addressing). */
export const LIMITS = {
  /** Controllers (vhost-user-scsi-pci devices) one VM may have. */
  maxControllersPerVm: 8,
  maxTargets: 256,
  maxLunsPerTarget: 16384,
  serialMaxLength: 20,
  /** Request queues per controller a disk may ask for. */
  maxNumQueues: 64,
  dns1123LabelMaxLength: 63,
  dns1123SubdomainMaxLength: 253,
  pathMaxLength: 4096,
  /** iSCSI names (RFC 3720 §3.2.6.1): at most 223 bytes. */
  iscsiNameMaxLength: 223,
  /** LUN at an iSCSI target (flat addressing, SAM-5 §4.7.7: 0–16383). */
  maxIscsiLun: 16383,
  /** host:port of an iSCSI portal. */
  portalMaxLength: 262,
} as const;

/** Allowed values of the enumerated fields (first is the default). */
export const DEVICE_TYPES = ['disk', 'lun'] as const;
export const IO_PROFILES = ['shared', 'dedicated'] as const;
export const BLOCK_SIZES = [512, 4096] as const;

/** Defaults applied by normalisation. */
export const DEFAULTS = {
  namespace: 'default',
  deviceType: 'disk',
  readOnly: false,
  logicalBlockSize: 512,
  physicalBlockSize: 4096,
  ioProfile: 'shared',
  rawio: false,
  /** iSCSI well-known port (RFC 7143 §13.2), used when a portal has none. */
  iscsiPort: 3260,
} as const;

/** Regular expressions for the string fields. */
export const PATTERNS = {
  /** RFC 1123 label (Kubernetes DNS-1123 label). */
  dns1123Label: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$',
  /** RFC 1123 subdomain (Kubernetes object names). */
  dns1123Subdomain: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$',
  /** Printable ASCII, no leading or trailing space (SPC-4 §7.8.16 unit serial number). */
  serial: '^[\\x21-\\x7e]([\\x20-\\x7e]*[\\x21-\\x7e])?$',
  /** NAA designator (SPC-4 §7.8.6.6): 16 hex digits NAA 2/3/5 or 32 hex digits NAA 6, optional 0x. */
  wwn: '^(0[xX])?([235][0-9a-fA-F]{15}|6[0-9a-fA-F]{31})$',
  /** Host device paths: absolute, under /dev/, no empty, "." or ".." segments, no trailing slash. */
  hostDevicePath: '^/dev(/([^/.][^/]*|\\.[^/.][^/]*|\\.\\.[^/]+))+$',
  /** iSCSI portal: a DNS name, an IPv4 address or a bracketed IPv6 address, optional :port (1–65535). */
  iscsiPortal: '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?)(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$',
  /** iSCSI names (RFC 3720 §3.2.6.3): iqn.YYYY-MM.<reversed domain>[:<id>], eui.<16 hex>, naa.<16 or 32 hex>. */
  iscsiName: '^(iqn\\.[0-9]{4}-[0-9]{2}\\.[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[-A-Za-z0-9.:]+)?|eui\\.[0-9a-fA-F]{16}|naa\\.([0-9a-fA-F]{16}|[0-9a-fA-F]{32}))$',
} as const;

export type DeviceType = (typeof DEVICE_TYPES)[number];
export type IoProfile = (typeof IO_PROFILES)[number];
export type BlockSize = (typeof BLOCK_SIZES)[number];

/** An iSCSI LUN reached from the engine (deviceType lun). */
export interface IscsiSource {
  /** "host:port" (normalised: a portal without a port gets DEFAULTS.iscsiPort). */
  portal: string;
  /** Target name. */
  iqn: string;
  lun: number;
  /** Our initiator name; absent → the engine's default. */
  initiatorName?: string;
}

/** Where a disk's bytes live. Exactly one member is set. */
export type DiskSource =
  | { file: { path: string } }
  | { pvc: { claimName: string } }
  | { hostDevice: { path: string } }
  | { iscsi: IscsiSource };

/** Source kinds of a passthrough (deviceType lun) disk. */
export const PASSTHROUGH_SOURCE_KINDS = ['hostDevice', 'iscsi'] as const;

/** A pinned address; the controller may be left to the planner. */
export interface PinnedAddress {
  controller?: number;
  target: number;
  lun: number;
}

/** A full SCSI address on a VM: controller (HBA) index, target, LUN. */
export interface DiskAddress {
  controller: number;
  target: number;
  lun: number;
}

/** What the user asks for. */
export interface VirtualDiskSpec {
  vmName: string;
  /** Kubernetes quantity ("256Mi", "1Gi", "10G"); not for deviceType lun. */
  capacity?: string | number;
  source?: DiskSource;
  storageClassName?: string;
  deviceType?: DeviceType;
  serial?: string;
  wwn?: string;
  readOnly?: boolean;
  logicalBlockSize?: BlockSize;
  physicalBlockSize?: BlockSize;
  ioProfile?: IoProfile;
  address?: PinnedAddress;
  /** Request queues wanted on this disk's controller (hint; the largest wins). */
  numQueues?: number;
  /** deviceType lun: let through the commands refused by default (firmware download, vendor-specific, ...). */
  rawio?: boolean;
}

/** Kubernetes-style condition (metav1.Condition subset). */
export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime?: string;
  observedGeneration?: number;
}

/** Lifecycle phase shown to users. */
export const PHASES = ['Pending', 'Assigned', 'Attached', 'Ready', 'Failed'] as const;
export type Phase = (typeof PHASES)[number];

/** What vhba reports. */
export interface VirtualDiskStatus {
  address?: DiskAddress;
  serial?: string;
  /** "0x" + lowercase hex, as lsblk and /dev/disk/by-id/wwn-* show it. */
  wwn?: string;
  guestDevicePaths?: string[];
  /** The address as "C:T:L" (the ADDRESS printer column; set with address). */
  scsiAddress?: string;
  /** The I/O profile the address was assigned for (kept while the disk lives). */
  ioProfile?: IoProfile;
  phase?: Phase;
  conditions?: Condition[];
  observedGeneration?: number;
}

/** Object metadata (the subset vhba uses). */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
}

/** The resource as written. */
export interface VirtualDisk {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  spec: VirtualDiskSpec;
  status?: VirtualDiskStatus;
}

/** A validated disk with every default applied and the capacity in bytes. */
export interface NormalizedVirtualDisk {
  name: string;
  namespace: string;
  uid?: string;
  generation?: number;
  /** "namespace/name": the disk's key everywhere in vhba. */
  key: string;
  vmName: string;
  /** deviceType lun: 0 (the capacity is the device's own). */
  capacityBytes: number;
  source: DiskSource | undefined;
  storageClassName?: string;
  deviceType: DeviceType;
  /** As given (explicit); undefined means derive (identity.ts). deviceType
   * lun: the serial the device must have; undefined: whatever it has. */
  serial?: string;
  /** As given, normalised to lowercase hex without 0x; undefined means derive.
   * deviceType lun: the WWN the device must have; undefined: whatever it has. */
  wwn?: string;
  /** deviceType lun: false (the device reports its own write protection). */
  readOnly: boolean;
  /** deviceType lun: the defaults, unused (the device's own apply). */
  logicalBlockSize: BlockSize;
  physicalBlockSize: BlockSize;
  /** Only ever true for deviceType lun. */
  rawio: boolean;
  ioProfile: IoProfile;
  address?: PinnedAddress;
  numQueues?: number;
}

/** The disk's key: "namespace/name". */
export function diskKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** Normalises a WWN as written ("0x5000C500..." ) to lowercase hex without 0x. */
export function normalizeWwn(wwn: string): string {
  return wwn.replace(/^0[xX]/, '').toLowerCase();
}

/** Formats a bare-hex WWN as users see it: "0x" + lowercase hex. */
export function formatWwn(hex: string): string {
  return `0x${hex.toLowerCase()}`;
}

/** Whether a disk is a passthrough LUN (the device's own identity and geometry). */
export function isPassthroughDisk(disk: Pick<NormalizedVirtualDisk, 'deviceType'>): boolean {
  return disk.deviceType === 'lun';
}

/** Formats an address as C:T:L. */
export function formatAddress(address: DiskAddress): string {
  return `${address.controller}:${address.target}:${address.lun}`;
}
