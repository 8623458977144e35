// Validation of VirtualDisk objects as parsed from YAML/JSON (unknown input).
// Never throws: every problem becomes a FieldError naming the field and what
// is allowed. On success the disk comes back normalised (defaults applied,
// capacity in bytes, WWN as lowercase hex). Limits come from virtualdisk.ts,
// shared with the OpenAPI schema.
import { parseByteQuantity } from './quantity.ts';
import {
  API_VERSION,
  BLOCK_SIZES,
  DEFAULTS,
  DEVICE_TYPES,
  IO_PROFILES,
  KIND,
  LIMITS,
  PATTERNS,
  diskKey,
  normalizeWwn,
  type BlockSize,
  type DeviceType,
  type DiskSource,
  type IoProfile,
  type IscsiSource,
  type NormalizedVirtualDisk,
  type PinnedAddress,
} from './virtualdisk.ts';

/** One problem with one field, e.g. {field: "spec.serial", message: "… allowed: …"}. */
export interface FieldError {
  field: string;
  message: string;
}

/** Validation outcome: the normalised disk when there are no errors. */
export type ValidationResult =
  | { ok: true; disk: NormalizedVirtualDisk; errors: [] }
  | { ok: false; errors: FieldError[] };

/** The spec fields the validator knows (schema.test.ts checks the schema has the same). */
export const SPEC_FIELDS = [
  'vmName', 'capacity', 'source', 'storageClassName', 'deviceType', 'serial', 'wwn',
  'readOnly', 'logicalBlockSize', 'physicalBlockSize', 'ioProfile', 'address', 'numQueues', 'rawio',
] as const;
const TOP_FIELDS = ['apiVersion', 'kind', 'metadata', 'spec', 'status'] as const;
const SOURCE_KINDS = ['file', 'pvc', 'hostDevice', 'iscsi'] as const;
const SOURCE_KINDS_TEXT = 'exactly one of file, pvc (deviceType disk), hostDevice, iscsi (deviceType lun)';
/** Spec fields a lun disk takes from its device, and why each is refused. */
const DEVICE_OWN_FIELDS = ['capacity', 'logicalBlockSize', 'physicalBlockSize', 'readOnly'] as const;

const dns1123Label = new RegExp(PATTERNS.dns1123Label);
const dns1123Subdomain = new RegExp(PATTERNS.dns1123Subdomain);
const serialPattern = new RegExp(PATTERNS.serial);
const wwnPattern = new RegExp(PATTERNS.wwn);
const hostDevicePattern = new RegExp(PATTERNS.hostDevicePath);
const portalPattern = new RegExp(PATTERNS.iscsiPortal);
const iscsiNamePattern = new RegExp(PATTERNS.iscsiName);

type Obj = Record<string, unknown>;

function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'object') return 'an object';
  return String(value);
}

/** Collects errors for one object; each check returns the value when valid. */
class Checker {
  readonly errors: FieldError[] = [];

  add(field: string, message: string): void {
    this.errors.push({ field, message });
  }

  unknownFields(obj: Obj, prefix: string, allowed: readonly string[]): void {
    for (const name of Object.keys(obj)) {
      if (!allowed.includes(name)) this.add(`${prefix}${name}`, `unknown field; allowed: ${allowed.join(', ')}`);
    }
  }

  dnsName(value: unknown, field: string, kind: 'label' | 'subdomain'): string | undefined {
    const max = kind === 'label' ? LIMITS.dns1123LabelMaxLength : LIMITS.dns1123SubdomainMaxLength;
    const pattern = kind === 'label' ? dns1123Label : dns1123Subdomain;
    const allowed = kind === 'label'
      ? `allowed: a DNS-1123 label (lowercase letters, digits and "-", starting and ending with a letter or digit, at most ${max} characters)`
      : `allowed: a DNS-1123 subdomain (lowercase letters, digits, "-" and ".", starting and ending with a letter or digit, at most ${max} characters)`;
    if (typeof value !== 'string' || value.length > max || !pattern.test(value)) {
      this.add(field, `${describe(value)} is not a valid name; ${allowed}`);
      return undefined;
    }
    return value;
  }

  integerIn(value: unknown, field: string, min: number, max: number): number | undefined {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      this.add(field, `${describe(value)} is out of range; allowed: an integer from ${min} to ${max}`);
      return undefined;
    }
    return value;
  }

  oneOf<T extends string | number>(value: unknown, field: string, allowed: readonly T[]): T | undefined {
    if (!allowed.includes(value as T)) {
      this.add(field, `${describe(value)} is not allowed; allowed: ${allowed.join(', ')}`);
      return undefined;
    }
    return value as T;
  }

  path(value: unknown, field: string, mustBeAbsolute: boolean): string | undefined {
    if (typeof value !== 'string' || value.length === 0 || value.length > LIMITS.pathMaxLength || value.includes('\0')) {
      this.add(field, `${describe(value)} is not a path; allowed: a non-empty string of at most ${LIMITS.pathMaxLength} characters without NUL`);
      return undefined;
    }
    const absolute = value.startsWith('/');
    if (mustBeAbsolute && !absolute) {
      this.add(field, `${describe(value)} is relative; allowed: an absolute path such as /dev/disk/by-id/…`);
      return undefined;
    }
    if (!absolute && value.split('/').includes('..')) {
      this.add(field, `${describe(value)} leaves the data directory; allowed: an absolute path, or a relative path without ".." segments`);
      return undefined;
    }
    return value;
  }
}

function checkSource(c: Checker, value: unknown): DiskSource | undefined {
  if (!isObject(value)) {
    c.add('spec.source', `${describe(value)} is not an object; allowed: ${SOURCE_KINDS_TEXT}`);
    return undefined;
  }
  const kinds = Object.keys(value);
  c.unknownFields(value, 'spec.source.', SOURCE_KINDS);
  const present = SOURCE_KINDS.filter((k) => k in value);
  if (present.length === 0 && kinds.length > 0) return undefined; // only unknown members, already reported
  if (present.length !== 1) {
    c.add('spec.source', `has ${present.length === 0 ? 'no source' : present.join(' and ')}; allowed: ${SOURCE_KINDS_TEXT}`);
    return undefined;
  }
  if (kinds.length !== 1) return undefined; // unknown members already reported
  const kind = present[0] as (typeof SOURCE_KINDS)[number];
  const member = value[kind];
  const field = `spec.source.${kind}`;
  if (!isObject(member)) {
    const shape = kind === 'pvc' ? '{claimName}' : kind === 'iscsi' ? '{portal, iqn, lun, initiatorName?}' : '{path}';
    c.add(field, `${describe(member)} is not an object; allowed: ${shape}`);
    return undefined;
  }
  if (kind === 'pvc') {
    c.unknownFields(member, `${field}.`, ['claimName']);
    const claimName = c.dnsName(member.claimName, `${field}.claimName`, 'subdomain');
    return claimName === undefined ? undefined : { pvc: { claimName } };
  }
  if (kind === 'iscsi') return checkIscsi(c, member);
  c.unknownFields(member, `${field}.`, ['path']);
  const path = c.path(member.path, `${field}.path`, kind === 'hostDevice');
  if (path === undefined) return undefined;
  if (kind === 'file') return { file: { path } };
  if (!hostDevicePattern.test(path)) {
    c.add(`${field}.path`, `${describe(path)} is not a device path; allowed: a path under /dev/ without "." or ".." segments, normally the stable /dev/disk/by-id/… link of the device`);
    return undefined;
  }
  return { hostDevice: { path } };
}

/** An iSCSI name (RFC 3720 §3.2.6.3), or an error naming the allowed forms. */
function iscsiName(c: Checker, value: unknown, field: string): string | undefined {
  if (typeof value !== 'string' || value.length > LIMITS.iscsiNameMaxLength || !iscsiNamePattern.test(value)) {
    c.add(field, `${describe(value)} is not an iSCSI name; allowed: iqn.YYYY-MM.<reversed domain>[:<name>] (e.g. iqn.2003-01.org.example:disk1), eui.<16 hex digits> or naa.<16 or 32 hex digits>, at most ${LIMITS.iscsiNameMaxLength} characters`);
    return undefined;
  }
  return value;
}

/** source.iscsi: the portal is normalised to host:port (RFC 7143 §13.2 default port). */
function checkIscsi(c: Checker, member: Record<string, unknown>): DiskSource | undefined {
  const field = 'spec.source.iscsi';
  c.unknownFields(member, `${field}.`, ['portal', 'iqn', 'lun', 'initiatorName']);
  let portal: string | undefined;
  const p = member.portal;
  if (typeof p !== 'string' || p.length > LIMITS.portalMaxLength || !portalPattern.test(p)) {
    c.add(`${field}.portal`, `${describe(p)} is not a portal; allowed: host:port (port 1–65535) or host (port ${DEFAULTS.iscsiPort}), the host a DNS name, an IPv4 address or a bracketed IPv6 address such as [2001:db8::1]:3260`);
  } else {
    const hasPort = p.startsWith('[') ? p.includes(']:') : p.includes(':');
    portal = hasPort ? p : `${p}:${DEFAULTS.iscsiPort}`;
  }
  const iqn = iscsiName(c, member.iqn, `${field}.iqn`);
  const lun = c.integerIn(member.lun, `${field}.lun`, 0, LIMITS.maxIscsiLun);
  let initiatorName: string | undefined;
  if (member.initiatorName !== undefined) {
    initiatorName = iscsiName(c, member.initiatorName, `${field}.initiatorName`);
    if (initiatorName === undefined) return undefined;
  }
  if (portal === undefined || iqn === undefined || lun === undefined) return undefined;
  const iscsi: IscsiSource = { portal, iqn, lun };
  if (initiatorName !== undefined) iscsi.initiatorName = initiatorName;
  return { iscsi };
}

function checkAddress(c: Checker, value: unknown): PinnedAddress | undefined {
  if (!isObject(value)) {
    c.add('spec.address', `${describe(value)} is not an object; allowed: {controller?, target, lun}`);
    return undefined;
  }
  c.unknownFields(value, 'spec.address.', ['controller', 'target', 'lun']);
  const target = c.integerIn(value.target, 'spec.address.target', 0, LIMITS.maxTargets - 1);
  const lun = c.integerIn(value.lun, 'spec.address.lun', 0, LIMITS.maxLunsPerTarget - 1);
  let controller: number | undefined;
  if (value.controller !== undefined) {
    controller = c.integerIn(value.controller, 'spec.address.controller', 0, LIMITS.maxControllersPerVm - 1);
    if (controller === undefined) return undefined;
  }
  if (target === undefined || lun === undefined) return undefined;
  return controller === undefined ? { target, lun } : { controller, target, lun };
}

/** Validates one parsed VirtualDisk. Returns every error found, or the normalised disk. */
export function validateVirtualDisk(input: unknown): ValidationResult {
  const c = new Checker();
  if (!isObject(input)) {
    return { ok: false, errors: [{ field: '(document)', message: `${describe(input)} is not an object; allowed: a VirtualDisk manifest` }] };
  }
  c.unknownFields(input, '', TOP_FIELDS);
  if (input.apiVersion !== API_VERSION) c.add('apiVersion', `${describe(input.apiVersion)} is not supported; allowed: ${API_VERSION}`);
  if (input.kind !== KIND) c.add('kind', `${describe(input.kind)} is not supported; allowed: ${KIND}`);

  const meta = input.metadata;
  let name: string | undefined;
  let namespace: string = DEFAULTS.namespace;
  let uid: string | undefined;
  let generation: number | undefined;
  if (!isObject(meta)) {
    c.add('metadata', `${describe(meta)} is not an object; allowed: {name, namespace?}`);
  } else {
    name = c.dnsName(meta.name, 'metadata.name', 'subdomain');
    if (meta.namespace !== undefined) namespace = c.dnsName(meta.namespace, 'metadata.namespace', 'label') ?? namespace;
    if (meta.uid !== undefined) {
      if (typeof meta.uid === 'string' && meta.uid.length > 0) uid = meta.uid;
      else c.add('metadata.uid', `${describe(meta.uid)} is not allowed; allowed: a non-empty string`);
    }
    if (meta.generation !== undefined) generation = c.integerIn(meta.generation, 'metadata.generation', 0, Number.MAX_SAFE_INTEGER);
  }

  const spec = input.spec;
  if (!isObject(spec)) {
    c.add('spec', `${describe(spec)} is not an object; allowed: {vmName, capacity, source, …}`);
    return { ok: false, errors: c.errors };
  }
  c.unknownFields(spec, 'spec.', SPEC_FIELDS);

  const vmName = c.dnsName(spec.vmName, 'spec.vmName', 'label');

  const deviceType: DeviceType | undefined = spec.deviceType === undefined ? DEFAULTS.deviceType : c.oneOf(spec.deviceType, 'spec.deviceType', DEVICE_TYPES);
  const ioProfile: IoProfile | undefined = spec.ioProfile === undefined ? DEFAULTS.ioProfile : c.oneOf(spec.ioProfile, 'spec.ioProfile', IO_PROFILES);
  // deviceType lun: geometry and write protection are the device's own (checked below).
  const lun = deviceType === 'lun';
  const logical: BlockSize | undefined = lun || spec.logicalBlockSize === undefined ? DEFAULTS.logicalBlockSize : c.oneOf(spec.logicalBlockSize, 'spec.logicalBlockSize', BLOCK_SIZES);
  const physical: BlockSize | undefined = lun || spec.physicalBlockSize === undefined ? DEFAULTS.physicalBlockSize : c.oneOf(spec.physicalBlockSize, 'spec.physicalBlockSize', BLOCK_SIZES);
  if (logical !== undefined && physical !== undefined && physical < logical) {
    c.add('spec.physicalBlockSize', `${physical} is smaller than logicalBlockSize ${logical}; allowed: ${BLOCK_SIZES.filter((b) => b >= logical).join(' or ')}`);
  }

  let capacityBytes: number | undefined;
  if (lun) {
    // The device's own: a lun disk states none of them (SBC-3 §5.16 READ CAPACITY, SPC-4 §7.5.7 WP bit).
    for (const name of DEVICE_OWN_FIELDS) {
      if (spec[name] !== undefined) c.add(`spec.${name}`, `is the device's own for deviceType lun (the guest sees what the device reports); remove spec.${name}`);
    }
    capacityBytes = 0;
  } else if (spec.capacity === undefined) {
    c.add('spec.capacity', 'is required; allowed: a quantity such as "256Mi", "1Gi" or "10G"');
  } else {
    const parsed = parseByteQuantity(spec.capacity);
    if (!parsed.ok) c.add('spec.capacity', `${parsed.reason}`);
    else if (parsed.bytes === 0) c.add('spec.capacity', 'is zero; allowed: a positive size such as "256Mi"');
    else if (logical !== undefined && parsed.bytes % logical !== 0) {
      c.add('spec.capacity', `${parsed.bytes} bytes is not a multiple of the logical block size ${logical}; allowed: a multiple of ${logical} bytes`);
    } else capacityBytes = parsed.bytes;
  }

  let source: DiskSource | undefined;
  if (spec.source !== undefined) source = checkSource(c, spec.source);
  let storageClassName: string | undefined;
  if (spec.storageClassName !== undefined) storageClassName = c.dnsName(spec.storageClassName, 'spec.storageClassName', 'subdomain');
  if (lun) {
    if (spec.source === undefined) c.add('spec.source', 'is required for deviceType lun; allowed: source.hostDevice {path} or source.iscsi {portal, iqn, lun}');
    else if (source !== undefined && !('hostDevice' in source || 'iscsi' in source)) {
      c.add('spec.deviceType', `lun passes a real SCSI device through and needs source.hostDevice or source.iscsi, not source.${Object.keys(source)[0]}; allowed: deviceType disk for file or pvc sources`);
    }
    if (spec.storageClassName !== undefined) c.add('spec.storageClassName', 'is not used by deviceType lun (the device is the storage); remove it');
  } else {
    if (spec.source === undefined && spec.storageClassName === undefined) {
      c.add('spec.source', 'is required unless storageClassName is given; allowed: source.file or source.pvc (with deviceType lun: source.hostDevice or source.iscsi)');
    }
    if (source !== undefined && ('hostDevice' in source || 'iscsi' in source) && deviceType !== undefined) {
      c.add('spec.deviceType', `${deviceType} is an emulated disk, but source.${Object.keys(source)[0]} is a whole SCSI device passed through; allowed: deviceType lun for hostDevice and iscsi sources`);
    }
  }
  let rawio: boolean = DEFAULTS.rawio;
  if (spec.rawio !== undefined) {
    if (typeof spec.rawio !== 'boolean') c.add('spec.rawio', `${describe(spec.rawio)} is not allowed; allowed: true, false`);
    else if (!lun) c.add('spec.rawio', 'applies to deviceType lun only (it lets the guest send every command to a real device); remove it');
    else rawio = spec.rawio;
  }

  let serial: string | undefined;
  if (spec.serial !== undefined) {
    const s = spec.serial;
    if (typeof s !== 'string' || s.length < 1 || s.length > LIMITS.serialMaxLength || !serialPattern.test(s)) {
      c.add('spec.serial', `${describe(s)} is not a valid serial; allowed: 1–${LIMITS.serialMaxLength} printable ASCII characters (0x20–0x7E) without leading or trailing space`);
    } else serial = s;
  }
  let wwn: string | undefined;
  if (spec.wwn !== undefined) {
    if (typeof spec.wwn !== 'string' || !wwnPattern.test(spec.wwn)) {
      c.add('spec.wwn', `${describe(spec.wwn)} is not a NAA WWN; allowed: optional 0x, then 16 hex digits starting with 2, 3 or 5, or 32 hex digits starting with 6`);
    } else wwn = normalizeWwn(spec.wwn);
  }
  let readOnly: boolean = DEFAULTS.readOnly;
  if (spec.readOnly !== undefined && !lun) {
    if (typeof spec.readOnly !== 'boolean') c.add('spec.readOnly', `${describe(spec.readOnly)} is not allowed; allowed: true, false`);
    else readOnly = spec.readOnly;
  }
  let address: PinnedAddress | undefined;
  if (spec.address !== undefined) {
    address = checkAddress(c, spec.address);
    if (address?.controller === 0 && ioProfile === 'dedicated') {
      c.add('spec.address.controller', `0 is the shared controller; allowed for a dedicated disk: 1 to ${LIMITS.maxControllersPerVm - 1}, or omit it`);
    }
  }
  let numQueues: number | undefined;
  if (spec.numQueues !== undefined) numQueues = c.integerIn(spec.numQueues, 'spec.numQueues', 1, LIMITS.maxNumQueues);

  if (c.errors.length > 0 || name === undefined || vmName === undefined || capacityBytes === undefined
    || deviceType === undefined || ioProfile === undefined || logical === undefined || physical === undefined) {
    return { ok: false, errors: c.errors };
  }
  const disk: NormalizedVirtualDisk = {
    name, namespace, key: diskKey(namespace, name), vmName, capacityBytes, source, deviceType,
    readOnly, logicalBlockSize: logical, physicalBlockSize: physical, ioProfile, rawio,
  };
  if (uid !== undefined) disk.uid = uid;
  if (generation !== undefined) disk.generation = generation;
  if (storageClassName !== undefined) disk.storageClassName = storageClassName;
  if (serial !== undefined) disk.serial = serial;
  if (wwn !== undefined) disk.wwn = wwn;
  if (address !== undefined) disk.address = address;
  if (numQueues !== undefined) disk.numQueues = numQueues;
  return { ok: true, disk, errors: [] };
}
