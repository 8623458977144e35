// OpenAPI v3 schema of VirtualDisk (structural, as a CRD's
// spec.versions[].schema.openAPIV3Schema wants it), written as data so the
// CRD YAML can be generated from it. Limits, enums and patterns come from
// virtualdisk.ts, the same constants the validator uses. Every property has a
// description (`kubectl explain` shows them); schema.test.ts checks that.
import {
  API_VERSION,
  BLOCK_SIZES,
  DEFAULTS,
  DEVICE_TYPES,
  IO_PROFILES,
  KIND,
  LIMITS,
  PATTERNS,
  PHASES,
} from './virtualdisk.ts';

/** The subset of OpenAPI v3 schema objects used here. */
export interface OpenApiSchema {
  type?: 'object' | 'string' | 'integer' | 'boolean' | 'array';
  description?: string;
  properties?: Record<string, OpenApiSchema>;
  required?: string[];
  items?: OpenApiSchema;
  enum?: readonly (string | number)[];
  default?: string | number | boolean;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  format?: string;
  minProperties?: number;
  maxProperties?: number;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-validations'?: CelRule[];
}

/** A CEL validation rule (x-kubernetes-validations); transition rules use oldSelf. */
export interface CelRule {
  rule: string;
  message: string;
  /** Field path reported with the error (apiextensions.k8s.io/v1 fieldPath), e.g. ".serial". */
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
}

/** A transition rule: once set, the value never changes (evaluated only when
 * both the old and the new object carry the field). */
const immutable = (field: string, why: string): CelRule => ({
  rule: 'self == oldSelf',
  message: `${field} is immutable once set: ${why}; delete and recreate the VirtualDisk to change it`,
  reason: 'FieldValueForbidden',
});

const pathSchema = (what: string): OpenApiSchema => ({
  type: 'string',
  minLength: 1,
  maxLength: LIMITS.pathMaxLength,
  description: what,
});

const addressSchema: OpenApiSchema = {
  type: 'object',
  description: 'Pins the disk at a SCSI address on its VM. Once assigned, a disk never moves; immutable once set.',
  required: ['target', 'lun'],
  'x-kubernetes-validations': [
    {
      rule: `(!has(self.controller) || (self.controller >= 0 && self.controller < ${LIMITS.maxControllersPerVm})) && self.target >= 0 && self.target < ${LIMITS.maxTargets} && self.lun >= 0 && self.lun < ${LIMITS.maxLunsPerTarget}`,
      message: `spec.address out of range: controller 0–${LIMITS.maxControllersPerVm - 1}, target 0–${LIMITS.maxTargets - 1}, LUN 0–${LIMITS.maxLunsPerTarget - 1}`,
    },
    immutable('spec.address', 'an assigned disk never moves'),
  ],
  properties: {
    controller: {
      type: 'integer',
      minimum: 0,
      maximum: LIMITS.maxControllersPerVm - 1,
      description: 'Controller (vhost-user-scsi-pci device) index on the VM; default: 0 for shared disks, a free controller for dedicated ones.',
    },
    target: { type: 'integer', minimum: 0, maximum: LIMITS.maxTargets - 1, description: 'SCSI target id (0–255).' },
    lun: { type: 'integer', minimum: 0, maximum: LIMITS.maxLunsPerTarget - 1, description: 'Logical unit number (0–16383).' },
  },
};

/** CEL: the disk is a passthrough LUN (deviceType defaults to disk). */
const IS_LUN = "(has(self.deviceType) && self.deviceType == 'lun')";
/** CEL: the source is a whole SCSI device. */
const HAS_DEVICE_SOURCE = '(has(self.source) && (has(self.source.hostDevice) || has(self.source.iscsi)))';

/** A spec field a lun disk takes from its device (no default in the schema, so the rule sees what the user wrote). */
const deviceOwn = (field: string): CelRule => ({
  rule: `!${IS_LUN} || !has(self.${field})`,
  message: `spec.${field} is the device's own for deviceType lun (the guest sees what the device reports); remove it`,
  fieldPath: `.${field}`,
  reason: 'FieldValueForbidden',
});

/** A CEL rule that the string matches `pattern` (RE2 accepts these
 * patterns as they are), with a message saying what is allowed; used instead
 * of `pattern`, whose error shows the raw regular expression. */
const matches = (pattern: string, message: string): CelRule => ({
  rule: `self.matches('${pattern.replaceAll('\\', '\\\\')}')`,
  message,
});

const iscsiNameSchema = (what: string): OpenApiSchema => ({
  type: 'string',
  maxLength: LIMITS.iscsiNameMaxLength,
  description: `${what}: iqn.YYYY-MM.<reversed domain>[:<name>], eui.<16 hex digits> or naa.<16 or 32 hex digits> (RFC 3720 §3.2.6.3).`,
  'x-kubernetes-validations': [matches(PATTERNS.iscsiName, 'must be an iSCSI name: iqn.YYYY-MM.<reversed domain>[:<name>] (e.g. iqn.2003-01.org.example:disk1), eui.<16 hex digits> or naa.<16 or 32 hex digits>')],
});

const specSchema: OpenApiSchema = {
  type: 'object',
  description: 'The disk the user wants attached to a VM.',
  required: ['vmName'],
  properties: {
    vmName: {
      type: 'string',
      pattern: PATTERNS.dns1123Label,
      maxLength: LIMITS.dns1123LabelMaxLength,
      description: 'Name of the VM (DNS-1123 label) whose virtual HBA carries the disk. Immutable.',
      'x-kubernetes-validations': [immutable('spec.vmName', 'a disk never moves to another VM')],
    },
    capacity: {
      'x-kubernetes-int-or-string': true,
      description: 'Size as a Kubernetes quantity (e.g. 256Mi, 1Gi, 10G); a positive multiple of the logical block size. Required, except for deviceType lun (the device\'s own capacity; not allowed there).',
    },
    source: {
      type: 'object',
      description: 'Where the bytes live; exactly one member. Relative file paths resolve against the data directory.',
      minProperties: 1,
      maxProperties: 1,
      properties: {
        file: {
          type: 'object',
          description: 'A raw image file, created or grown to capacity.',
          required: ['path'],
          properties: { path: pathSchema('Absolute path, or relative to the data directory (no "..").') },
        },
        pvc: {
          type: 'object',
          description: 'A PersistentVolumeClaim in the same namespace.',
          required: ['claimName'],
          properties: {
            claimName: {
              type: 'string',
              pattern: PATTERNS.dns1123Subdomain,
              maxLength: LIMITS.dns1123SubdomainMaxLength,
              description: 'Name of the PersistentVolumeClaim.',
            },
          },
        },
        hostDevice: {
          type: 'object',
          description: 'A host SCSI device passed through whole (deviceType lun): the guest sends its SCSI commands to it (SG_IO).',
          required: ['path'],
          properties: {
            path: {
              ...pathSchema('Absolute path under /dev/ of the block device or its /dev/sg* node; the stable /dev/disk/by-id/… link is expected (a /dev/sdX name can change at reboot).'),
              'x-kubernetes-validations': [matches(PATTERNS.hostDevicePath, 'must be a path under /dev/ without "." or ".." segments, normally the device\'s /dev/disk/by-id/… link')],
            },
          },
        },
        iscsi: {
          type: 'object',
          description: 'An iSCSI LUN passed through whole (deviceType lun), reached by the engine itself (the host kernel need not see it).',
          required: ['portal', 'iqn', 'lun'],
          properties: {
            portal: {
              type: 'string',
              maxLength: LIMITS.portalMaxLength,
              'x-kubernetes-validations': [matches(PATTERNS.iscsiPortal, `must be host:port (port 1–65535) or host (port ${DEFAULTS.iscsiPort}), the host a DNS name, an IPv4 address or a bracketed IPv6 address`)],
              description: `host:port or host (port ${DEFAULTS.iscsiPort}); the host a DNS name, an IPv4 address or a bracketed IPv6 address.`,
            },
            iqn: iscsiNameSchema('Target name'),
            lun: { type: 'integer', minimum: 0, maximum: LIMITS.maxIscsiLun, description: `LUN at the target (0–${LIMITS.maxIscsiLun}).` },
            initiatorName: iscsiNameSchema('Initiator name the engine logs in with (default: the engine\'s own)'),
          },
        },
      },
    },
    storageClassName: {
      type: 'string',
      pattern: PATTERNS.dns1123Subdomain,
      maxLength: LIMITS.dns1123SubdomainMaxLength,
      description: 'StorageClass for the PersistentVolumeClaim the operator creates when no source is given.',
    },
    deviceType: {
      type: 'string',
      enum: DEVICE_TYPES,
      default: DEFAULTS.deviceType,
      description: 'disk: an emulated SCSI disk; lun: a whole real SCSI LUN (source.hostDevice or source.iscsi) whose identity, capacity and block size the guest sees as they are.',
    },
    serial: {
      type: 'string',
      minLength: 1,
      maxLength: LIMITS.serialMaxLength,
      pattern: PATTERNS.serial,
      description: 'Unit serial number (VPD page 0x80): 1–20 printable ASCII characters, no leading or trailing space. Derived from the resource UID when absent. deviceType lun: the serial the device must have (attach refuses another device); absent: whatever it has. Immutable once set.',
      'x-kubernetes-validations': [
        { rule: `self.size() <= ${LIMITS.serialMaxLength} && self.matches('${PATTERNS.serial.replaceAll('\\', '\\\\')}')`, message: `spec.serial must be 1–${LIMITS.serialMaxLength} printable ASCII characters without leading or trailing space` },
        immutable('spec.serial', 'the guest knows the disk by it'),
      ],
    },
    wwn: {
      type: 'string',
      pattern: PATTERNS.wwn,
      description: 'NAA world wide name (VPD page 0x83): 16 hex digits starting 2, 3 or 5, or 32 starting 6; optional 0x. Derived from the resource UID when absent. deviceType lun: the WWN the device must have (attach refuses another device); absent: whatever it has. Immutable once set.',
      'x-kubernetes-validations': [immutable('spec.wwn', 'the guest knows the disk by it')],
    },
    // No schema defaults for readOnly and the block sizes: deviceType lun must
    // not have them, and a default would put them there (validate.ts applies them).
    readOnly: { type: 'boolean', description: `Expose the disk write-protected (default ${DEFAULTS.readOnly}). Not for deviceType lun.` },
    logicalBlockSize: {
      type: 'integer',
      enum: BLOCK_SIZES,
      description: `Logical block size in bytes (512 or 4096; default ${DEFAULTS.logicalBlockSize}). Not for deviceType lun.`,
      'x-kubernetes-validations': [{ rule: 'self == 512 || self == 4096', message: 'spec.logicalBlockSize must be 512 or 4096' }],
    },
    physicalBlockSize: {
      type: 'integer',
      enum: BLOCK_SIZES,
      description: `Physical block size in bytes (512 or 4096; default ${DEFAULTS.physicalBlockSize}), at least the logical block size. Not for deviceType lun.`,
      'x-kubernetes-validations': [{ rule: 'self == 512 || self == 4096', message: 'spec.physicalBlockSize must be 512 or 4096' }],
    },
    ioProfile: {
      type: 'string',
      enum: IO_PROFILES,
      default: DEFAULTS.ioProfile,
      description: 'shared: the VM\'s controller 0; dedicated: a controller (and its queues) of its own.',
    },
    address: addressSchema,
    numQueues: {
      type: 'integer',
      minimum: 1,
      maximum: LIMITS.maxNumQueues,
      description: 'Request queues wanted on the disk\'s controller (the largest wish on a controller wins; default 1).',
    },
    rawio: {
      type: 'boolean',
      description: `deviceType lun only: let the guest send the commands refused by default because they can harm the host or other users of the device (WRITE BUFFER, ATA PASS-THROUGH, SECURITY PROTOCOL OUT, MAINTENANCE OUT, vendor-specific); default ${DEFAULTS.rawio}.`,
    },
  },
  'x-kubernetes-validations': [
    { rule: 'has(self.source) || has(self.storageClassName)', message: 'one of source or storageClassName is required' },
    { rule: "!has(self.physicalBlockSize) || self.physicalBlockSize >= (has(self.logicalBlockSize) ? self.logicalBlockSize : 512)", message: 'physicalBlockSize must be at least logicalBlockSize' },
    { rule: `${IS_LUN} || has(self.capacity)`, message: 'spec.capacity is required (except for deviceType lun, whose capacity is the device\'s own)', fieldPath: '.capacity', reason: 'FieldValueRequired' },
    { rule: `!${IS_LUN} || ${HAS_DEVICE_SOURCE}`, message: 'deviceType lun needs source.hostDevice {path} or source.iscsi {portal, iqn, lun}', fieldPath: '.source' },
    { rule: `!${HAS_DEVICE_SOURCE} || ${IS_LUN}`, message: 'source.hostDevice and source.iscsi pass a whole SCSI device through: set deviceType lun', fieldPath: '.deviceType' },
    deviceOwn('capacity'),
    deviceOwn('logicalBlockSize'),
    deviceOwn('physicalBlockSize'),
    deviceOwn('readOnly'),
    { rule: `!${IS_LUN} || !has(self.storageClassName)`, message: 'spec.storageClassName is not used by deviceType lun (the device is the storage); remove it', fieldPath: '.storageClassName', reason: 'FieldValueForbidden' },
    { rule: `!has(self.rawio) || ${IS_LUN}`, message: 'spec.rawio applies to deviceType lun only; remove it', fieldPath: '.rawio', reason: 'FieldValueForbidden' },
    { rule: "self.ioProfile != 'dedicated' || !has(self.address) || !has(self.address.controller) || self.address.controller != 0", message: 'controller 0 is the shared controller; a dedicated disk needs address.controller from 1 up, or none', fieldPath: '.address.controller' },
    // Identity fields may not be dropped once set (the property rules above keep them from changing).
    { rule: '!has(oldSelf.serial) || has(self.serial)', message: 'spec.serial may not be removed once set', fieldPath: '.serial', reason: 'FieldValueForbidden' },
    { rule: '!has(oldSelf.wwn) || has(self.wwn)', message: 'spec.wwn may not be removed once set', fieldPath: '.wwn', reason: 'FieldValueForbidden' },
    { rule: '!has(oldSelf.address) || has(self.address)', message: 'spec.address may not be removed once set', fieldPath: '.address', reason: 'FieldValueForbidden' },
  ],
};

const conditionSchema: OpenApiSchema = {
  type: 'object',
  description: 'One aspect of the disk\'s state (Assigned, Attached, Ready).',
  required: ['type', 'status', 'reason', 'message'],
  properties: {
    type: { type: 'string', description: 'Condition type: Assigned, Attached or Ready.' },
    status: { type: 'string', enum: ['True', 'False', 'Unknown'], description: 'Whether the condition holds.' },
    reason: { type: 'string', description: 'Machine-readable CamelCase reason.' },
    message: { type: 'string', description: 'What happened and, when it failed, what to change.' },
    lastTransitionTime: { type: 'string', format: 'date-time', description: 'When the status last changed.' },
    observedGeneration: { type: 'integer', description: 'Spec generation the condition was computed from.' },
  },
};

const statusSchema: OpenApiSchema = {
  type: 'object',
  description: 'What vhba decided and observed.',
  properties: {
    address: {
      type: 'object',
      description: 'The assigned SCSI address.',
      properties: {
        controller: { type: 'integer', description: 'Controller index on the VM.' },
        target: { type: 'integer', description: 'SCSI target id.' },
        lun: { type: 'integer', description: 'Logical unit number.' },
      },
    },
    serial: { type: 'string', description: 'Unit serial number the guest sees.' },
    wwn: { type: 'string', description: 'NAA WWN the guest sees, as 0x + hex.' },
    guestDevicePaths: {
      type: 'array',
      items: { type: 'string', description: 'A /dev/disk/by-id path.' },
      description: 'The /dev/disk/by-id names the guest\'s udev creates for this disk.',
    },
    scsiAddress: { type: 'string', description: 'The assigned address as controller:target:lun (shown in the ADDRESS column).' },
    ioProfile: { type: 'string', enum: IO_PROFILES, description: 'The I/O profile the address was assigned for.' },
    phase: { type: 'string', enum: PHASES, description: 'Pending, Assigned, Attached, Ready or Failed.' },
    conditions: { type: 'array', items: conditionSchema, description: 'Assigned, Attached and Ready conditions with reasons.' },
    observedGeneration: { type: 'integer', description: 'Spec generation the status reflects.' },
  },
};

/** The whole resource's schema. */
export const virtualDiskOpenApiSchema: OpenApiSchema = {
  type: 'object',
  description: `A disk on a VM's virtual SCSI HBA (${API_VERSION} ${KIND}).`,
  required: ['spec'],
  properties: {
    apiVersion: { type: 'string', description: `Always ${API_VERSION}.` },
    kind: { type: 'string', description: `Always ${KIND}.` },
    metadata: { type: 'object', description: 'Standard object metadata.' },
    spec: specSchema,
    status: statusSchema,
  },
};
