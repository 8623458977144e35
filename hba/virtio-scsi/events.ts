// virtio-scsi eventq (virtio 1.2 §5.6.6.3): the driver posts empty buffers;
// the device fills one per event. Buffers are kept until an event needs them;
// events raised while no buffer is posted wait in a bounded queue, and when it
// overflows the next delivered event carries VIRTIO_SCSI_T_EVENTS_MISSED.
// Hotplug (attach/detach/resize) will drive `deliver`; this issue only keeps
// the buffers.
import { EVENT_INFO_SIZE } from './config.ts';
import { FramingError } from './framing.ts';

/** Event types (virtio 1.2 §5.6.6.3). */
export const EventType = {
  NO_EVENT: 0,
  TRANSPORT_RESET: 1,
  ASYNC_NOTIFY: 2,
  PARAM_CHANGE: 3,
  EVENTS_MISSED: 0x80000000,
} as const;

/** Reasons of a TRANSPORT_RESET event (§5.6.6.3.1). */
export const ResetReason = { HARD: 0, RESCAN: 1, REMOVED: 2 } as const;

/** One struct virtio_scsi_event. */
export interface ScsiEvent {
  event: number;
  lunField: Buffer;
  reason: number;
}

/** Encodes struct virtio_scsi_event: event u32, lun[8], reason u32. */
export function encodeEvent(e: ScsiEvent): Buffer {
  const b = Buffer.alloc(EVENT_INFO_SIZE);
  b.writeUInt32LE(e.event >>> 0, 0);
  e.lunField.copy(b, 4, 0, 8);
  b.writeUInt32LE(e.reason >>> 0, 12);
  return b;
}

/** Default bound on events waiting for a buffer. */
export const DEFAULT_MAX_PENDING_EVENTS = 64;

/** The eventq's posted buffers and undelivered events. */
export class EventQueue {
  readonly #complete: (head: number, data: Buffer) => void;
  readonly #maxPending: number;
  readonly #buffers: number[] = [];
  readonly #pending: ScsiEvent[] = [];
  #missed = false;

  /** `complete` writes an event into a posted buffer (head) and returns it to the driver. */
  constructor(complete: (head: number, data: Buffer) => void, maxPending = DEFAULT_MAX_PENDING_EVENTS) {
    this.#complete = complete;
    this.#maxPending = maxPending;
  }

  /** A buffer the driver posted. It must be write-only and hold one event. */
  post(head: number, readableLength: number, writableLength: number): void {
    if (readableLength !== 0) throw new FramingError(`eventq buffer has ${readableLength} device-readable bytes`);
    if (writableLength < EVENT_INFO_SIZE) throw new FramingError(`eventq buffer has ${writableLength} bytes, an event needs ${EVENT_INFO_SIZE}`);
    this.#buffers.push(head);
    this.#flush();
  }

  /** Delivers an event now if a buffer is posted, else queues it (bounded). */
  deliver(event: ScsiEvent): void {
    if (this.#pending.length >= this.#maxPending) {
      this.#missed = true;
      return;
    }
    this.#pending.push(event);
    this.#flush();
  }

  /** Returns every held buffer to the driver as NO_EVENT (before the queue
   * stops, so the driver re-posts them after a restart). */
  returnBuffers(): void {
    while (this.#buffers.length > 0) {
      const head = this.#buffers.shift()!;
      this.#complete(head, encodeEvent({ event: EventType.NO_EVENT, lunField: Buffer.alloc(8), reason: 0 }));
    }
  }

  /** Forgets buffers (the device was reset) but keeps undelivered events. */
  dropBuffers(): void {
    this.#buffers.length = 0;
  }

  /** Buffers currently held. */
  get bufferCount(): number {
    return this.#buffers.length;
  }

  /** Events waiting for a buffer. */
  get pendingCount(): number {
    return this.#pending.length;
  }

  #flush(): void {
    while (this.#buffers.length > 0 && (this.#pending.length > 0 || this.#missed)) {
      const head = this.#buffers.shift()!;
      const ev = this.#pending.shift() ?? { event: EventType.NO_EVENT, lunField: Buffer.alloc(8), reason: 0 };
      const event = this.#missed ? ev.event | EventType.EVENTS_MISSED : ev.event;
      this.#missed = false;
      this.#complete(head, encodeEvent({ ...ev, event }));
    }
  }
}
