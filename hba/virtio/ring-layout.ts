// Split virtqueue layout and flag constants (virtio 1.2 §2.7), shared by the
// mock driver and anyone who needs to reason about ring sizes in TypeScript.
// The device side of the ring lives in the native addon (hba/native/src/virtqueue.cc).

/** Descriptor flags (virtio 1.2 §2.7.5). */
export const DescFlag = {
  NEXT: 1,
  WRITE: 2,
  INDIRECT: 4,
} as const;

/** Avail ring flags (virtio 1.2 §2.7.7). */
export const AvailFlag = { NO_INTERRUPT: 1 } as const;

/** Used ring flags (virtio 1.2 §2.7.8). */
export const UsedFlag = { NO_NOTIFY: 1 } as const;

/** Feature bits the native queue honours (virtio 1.2 §6), as bigints. */
export const VirtioFeature = {
  RING_INDIRECT_DESC: 1n << 28n,
  RING_EVENT_IDX: 1n << 29n,
  VERSION_1: 1n << 32n,
} as const;

/** vhost-user feature bit: protocol features negotiated (vhost-user.rst). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 1n << 30n;

/** Bytes of one descriptor. */
export const DESC_SIZE = 16;

/** Bytes of the descriptor table of a queue of `size` entries. */
export function descTableBytes(size: number): number {
  return DESC_SIZE * size;
}

/** Bytes of the avail ring including used_event (virtio 1.2 §2.7.6). */
export function availRingBytes(size: number): number {
  return 6 + 2 * size;
}

/** Bytes of the used ring including avail_event (virtio 1.2 §2.7.8). */
export function usedRingBytes(size: number): number {
  return 6 + 8 * size;
}

/** Required alignments of the three parts (virtio 1.2 §2.7, table "Virtqueue Part Alignment"). */
export const RingAlign = { desc: 16, avail: 2, used: 4 } as const;
