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

const specSchema: OpenApiSchema = {
  type: 'object',
  description: 'The disk the user wants attached to a VM.',
  required: ['vmName', 'capacity'],
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
      description: 'Size as a Kubernetes quantity (e.g. 256Mi, 1Gi, 10G); a positive multiple of the logical block size.',
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
          description: 'A host SCSI device passed through (deviceType lun).',
          required: ['path'],
          properties: { path: pathSchema('Absolute path of the device, preferably /dev/disk/by-id/….') },
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
      description: 'disk: an emulated SCSI disk; lun: SCSI passthrough of source.hostDevice.',
    },
    serial: {
      type: 'string',
      minLength: 1,
      maxLength: LIMITS.serialMaxLength,
      pattern: PATTERNS.serial,
      description: 'Unit serial number (VPD page 0x80): 1–20 printable ASCII characters, no leading or trailing space. Derived from the resource UID when absent. Immutable once set.',
      'x-kubernetes-validations': [
        { rule: `self.size() <= ${LIMITS.serialMaxLength} && self.matches('${PATTERNS.serial.replaceAll('\\', '\\\\')}')`, message: `spec.serial must be 1–${LIMITS.serialMaxLength} printable ASCII characters without leading or trailing space` },
        immutable('spec.serial', 'the guest knows the disk by it'),
      ],
    },
    wwn: {
      type: 'string',
      pattern: PATTERNS.wwn,
      description: 'NAA world wide name (VPD page 0x83): 16 hex digits starting 2, 3 or 5, or 32 starting 6; optional 0x. Derived from the resource UID when absent. Immutable once set.',
      'x-kubernetes-validations': [immutable('spec.wwn', 'the guest knows the disk by it')],
    },
    readOnly: { type: 'boolean', default: DEFAULTS.readOnly, description: 'Expose the disk write-protected.' },
    logicalBlockSize: {
      type: 'integer',
      enum: BLOCK_SIZES,
      default: DEFAULTS.logicalBlockSize,
      description: 'Logical block size in bytes (512 or 4096).',
      'x-kubernetes-validations': [{ rule: 'self == 512 || self == 4096', message: 'spec.logicalBlockSize must be 512 or 4096' }],
    },
    physicalBlockSize: {
      type: 'integer',
      enum: BLOCK_SIZES,
      default: DEFAULTS.physicalBlockSize,
      description: 'Physical block size in bytes (512 or 4096), at least the logical block size.',
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
  },
  'x-kubernetes-validations': [
    { rule: 'has(self.source) || has(self.storageClassName)', message: 'one of source or storageClassName is required' },
    { rule: "!has(self.physicalBlockSize) || self.physicalBlockSize >= (has(self.logicalBlockSize) ? self.logicalBlockSize : 512)", message: 'physicalBlockSize must be at least logicalBlockSize' },
    { rule: "self.deviceType != 'lun' || (has(self.source) && has(self.source.hostDevice))", message: 'deviceType lun needs source.hostDevice' },
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
