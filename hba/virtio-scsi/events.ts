// virtio-scsi eventq (virtio 1.2 §5.6.6.3): the driver posts empty buffers;
// the device fills one per event. Buffers are kept until an event needs them;
// events raised while no buffer is posted wait in a bounded queue, and when it
// overflows they are replaced by one VIRTIO_SCSI_T_EVENTS_MISSED.
// The engine's attach/detach/resize drive `deliver` (hotplug, §5.6.6.3.1 and
// §5.6.6.3.3).
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

/** The LUN field of an event (§5.6.6.3): byte 0 = 1, byte 1 = target,
 * bytes 2-3 = the LUN's first addressing level exactly as REPORT LUNS lists
 * it (SAM-5 §4.7: peripheral 00h NN below 256, flat 40h|hi lo from 256).
 * Linux's virtscsi_handle_transport_reset/param_change take
 * (lun[2] << 8) | lun[3] as the scsi_device LUN, which is the number its
 * REPORT LUNS scan gave that device (scsilun_to_int); the 0x40 flag Linux puts
 * on requests for every LUN would name another device here. */
export function eventLunField(target: number, lun: number): Buffer {
  if (!Number.isInteger(target) || target < 0 || target > 255) throw new RangeError(`target ${target} outside 0..255`);
  if (!Number.isInteger(lun) || lun < 0 || lun > 16383) throw new RangeError(`LUN ${lun} outside 0..16383`);
  const b = Buffer.alloc(8);
  b[0] = 1;
  b[1] = target;
  if (lun < 256) b[3] = lun;
  else b.writeUInt16BE(0x4000 | lun, 2);
  return b;
}

/** TRANSPORT_RESET for one LUN (§5.6.6.3.1): RESCAN when it appeared, REMOVED when it went. */
export function transportResetEvent(target: number, lun: number, reason: (typeof ResetReason)['RESCAN' | 'REMOVED']): ScsiEvent {
  return { event: EventType.TRANSPORT_RESET, lunField: eventLunField(target, lun), reason };
}

/** PARAM_CHANGE (§5.6.6.3.3): reason carries the unit attention's ASC in
 * bits 0-7 and ASCQ in bits 8-15, e.g. 2Ah/09h CAPACITY DATA HAS CHANGED. */
export function paramChangeEvent(target: number, lun: number, asc: number, ascq: number): ScsiEvent {
  return { event: EventType.PARAM_CHANGE, lunField: eventLunField(target, lun), reason: (asc & 0xff) | ((ascq & 0xff) << 8) };
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
  #delivered = 0;
  #dropped = 0;

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

  /** Delivers an event now if a buffer is posted, else queues it (bounded).
   * On overflow every queued event is dropped and the next delivered event
   * carries EVENTS_MISSED (a lone NO_EVENT if nothing else is raised): the
   * driver then rescans the whole bus (Linux: virtscsi_rescan_hotunplug +
   * scsi_scan_host), which sees the current topology. Delivering the older
   * queued events after that rescan could undo it (a REMOVED for a LUN that
   * came back meanwhile), so they go too; events raised after the overflow
   * are newer than the rescan's view and queue as usual. */
  deliver(event: ScsiEvent): void {
    if (this.#pending.length >= this.#maxPending) {
      this.#dropped += this.#pending.length + 1;
      this.#pending.length = 0;
      this.#missed = true;
      this.#flush();
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

  /** Forgets undelivered events and a pending EVENTS_MISSED (the driver was
   * reset and rescans the bus on its own). */
  clearPending(): void {
    this.#pending.length = 0;
    this.#missed = false;
  }

  /** Forgets buffers (the queue stopped or the device was reset) but keeps undelivered events. */
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

  /** Events written into buffers so far, and events dropped on overflow (diagnostics). */
  get counters(): { delivered: number; dropped: number } {
    return { delivered: this.#delivered, dropped: this.#dropped };
  }

  /** Whether the next delivered event will carry EVENTS_MISSED. */
  get missed(): boolean {
    return this.#missed;
  }

  #flush(): void {
    while (this.#buffers.length > 0 && (this.#pending.length > 0 || this.#missed)) {
      const head = this.#buffers.shift()!;
      const ev = this.#pending.shift() ?? { event: EventType.NO_EVENT, lunField: Buffer.alloc(8), reason: 0 };
      const event = this.#missed ? ev.event | EventType.EVENTS_MISSED : ev.event;
      this.#missed = false;
      this.#delivered++;
      this.#complete(head, encodeEvent({ ...ev, event }));
    }
  }
}
