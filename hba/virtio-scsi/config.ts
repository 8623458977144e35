// virtio-scsi device identity: feature bits (virtio 1.2 §5.6.3, §6) and the
// device configuration layout (virtio 1.2 §5.6.4).

/** Device-independent feature bits we offer (virtio 1.2 §6). */
export const VirtioFeature = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VERSION_1: 32,
} as const;

/** virtio-scsi feature bits (virtio 1.2 §5.6.3). */
export const VirtioScsiFeature = {
  INOUT: 0,
  HOTPLUG: 1,
  CHANGE: 2,
  T10_PI: 3,
} as const;

/** Queue layout (virtio 1.2 §5.6.2): controlq, eventq, then request queues. */
export const CONTROL_QUEUE = 0;
export const EVENT_QUEUE = 1;
export const FIRST_REQUEST_QUEUE = 2;

/** Fixed sizes of the request header's CDB and the response's sense area.
 * The driver may write cdb_size/sense_size, but Linux keeps the defaults and
 * we never accept a change (vhost-user SET_CONFIG is refused). */
export const CDB_SIZE = 32;
export const SENSE_SIZE = 96;

/** Addressing limits we advertise: channel 0, targets 0-255, LUNs 0-16383. */
export const MAX_CHANNEL = 0;
export const MAX_TARGET = 255;
export const MAX_LUN = 16383;

/** Size of struct virtio_scsi_event (virtio 1.2 §5.6.6.3). */
export const EVENT_INFO_SIZE = 16;

/** Byte size of struct virtio_scsi_config. */
export const CONFIG_SIZE = 36;

/** Field offsets in struct virtio_scsi_config (virtio 1.2 §5.6.4). */
export const ConfigOffset = {
  numQueues: 0,
  segMax: 4,
  maxSectors: 8,
  cmdPerLun: 12,
  eventInfoSize: 16,
  senseSize: 20,
  cdbSize: 24,
  maxChannel: 28,
  maxTarget: 30,
  maxLun: 32,
} as const;

export interface VirtioScsiConfigParams {
  /** Request queues (excluding controlq and eventq). */
  numRequestQueues: number;
  /** Max segments per request = queue size - 2 (header and response). */
  maxQueueSize: number;
  /** Largest transfer in 512-byte sectors. */
  maxSectors: number;
  /** Commands per LUN the driver may queue. */
  cmdPerLun: number;
}

/** Encodes struct virtio_scsi_config. */
export function encodeVirtioScsiConfig(p: VirtioScsiConfigParams): Buffer {
  const b = Buffer.alloc(CONFIG_SIZE);
  b.writeUInt32LE(p.numRequestQueues, ConfigOffset.numQueues);
  b.writeUInt32LE(Math.max(1, p.maxQueueSize - 2), ConfigOffset.segMax);
  b.writeUInt32LE(p.maxSectors, ConfigOffset.maxSectors);
  b.writeUInt32LE(p.cmdPerLun, ConfigOffset.cmdPerLun);
  b.writeUInt32LE(EVENT_INFO_SIZE, ConfigOffset.eventInfoSize);
  b.writeUInt32LE(SENSE_SIZE, ConfigOffset.senseSize);
  b.writeUInt32LE(CDB_SIZE, ConfigOffset.cdbSize);
  b.writeUInt16LE(MAX_CHANNEL, ConfigOffset.maxChannel);
  b.writeUInt16LE(MAX_TARGET, ConfigOffset.maxTarget);
  b.writeUInt32LE(MAX_LUN, ConfigOffset.maxLun);
  return b;
}

/** The virtio feature set this device offers (before the vhost-user bit). */
export function virtioScsiFeatures(): bigint {
  return (
    (1n << BigInt(VirtioFeature.VERSION_1)) |
    (1n << BigInt(VirtioFeature.RING_INDIRECT_DESC)) |
    (1n << BigInt(VirtioFeature.RING_EVENT_IDX)) |
    (1n << BigInt(VirtioScsiFeature.HOTPLUG)) |
    (1n << BigInt(VirtioScsiFeature.CHANGE))
  );
}
