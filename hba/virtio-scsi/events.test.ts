import { describe, expect, it } from 'vitest';
import { encodeLun as encodeReportedLun } from '../scsi/report-luns.ts';
import { EVENT_INFO_SIZE } from './config.ts';
import { encodeEvent, eventLunField, EventQueue, EventType, paramChangeEvent, ResetReason, transportResetEvent } from './events.ts';
import { FramingError } from './framing.ts';

interface Written {
  head: number;
  event: number;
  target: number;
  lunBytes: number;
  reason: number;
}

function recorder(): { written: Written[]; complete: (head: number, data: Buffer) => void } {
  const written: Written[] = [];
  return {
    written,
    complete: (head, data) => {
      expect(data.length).toBe(EVENT_INFO_SIZE);
      written.push({ head, event: data.readUInt32LE(0), target: data[5]!, lunBytes: data.readUInt16BE(6), reason: data.readUInt32LE(12) });
    },
  };
}

describe('event LUN field (what Linux virtscsi_handle_* decode)', () => {
  it('carries the LUN as REPORT LUNS lists it: peripheral below 256, flat from 256', () => {
    for (const lun of [0, 1, 255, 256, 300, 16383]) {
      const f = eventLunField(7, lun);
      expect(f[0]).toBe(1);
      expect(f[1]).toBe(7);
      expect(f.subarray(2, 4)).toEqual(encodeReportedLun(lun).subarray(0, 2));
      expect(f.readUInt32LE(4)).toBe(0);
    }
    // Linux: lun = (lun[2] << 8) | lun[3] must equal the scanned device's LUN.
    expect(eventLunField(0, 5).readUInt16BE(2)).toBe(5);
    expect(eventLunField(0, 300).readUInt16BE(2)).toBe(0x4000 | 300);
  });

  it('refuses addresses outside virtio-scsi limits', () => {
    expect(() => eventLunField(256, 0)).toThrow(RangeError);
    expect(() => eventLunField(0, 16384)).toThrow(RangeError);
    expect(() => eventLunField(0, -1)).toThrow(RangeError);
  });

  it('encodes PARAM_CHANGE reason as ASC | ASCQ << 8', () => {
    const e = encodeEvent(paramChangeEvent(1, 2, 0x2a, 0x09));
    expect(e.readUInt32LE(0)).toBe(EventType.PARAM_CHANGE);
    expect(e.readUInt32LE(12)).toBe(0x092a);
    expect(encodeEvent(transportResetEvent(1, 2, ResetReason.REMOVED)).readUInt32LE(12)).toBe(2);
  });
});

describe('EventQueue', () => {
  it('delivers at once when a buffer is held, in posting order of buffers', () => {
    const r = recorder();
    const q = new EventQueue(r.complete);
    q.post(10, 0, 16);
    q.post(11, 0, 16);
    q.deliver(transportResetEvent(0, 1, ResetReason.RESCAN));
    expect(r.written).toEqual([{ head: 10, event: EventType.TRANSPORT_RESET, target: 0, lunBytes: 1, reason: ResetReason.RESCAN }]);
    expect(q.bufferCount).toBe(1);
  });

  it('queues events without buffers and delivers them in order as buffers arrive', () => {
    const r = recorder();
    const q = new EventQueue(r.complete);
    q.deliver(transportResetEvent(0, 1, ResetReason.RESCAN));
    q.deliver(transportResetEvent(0, 2, ResetReason.RESCAN));
    q.deliver(transportResetEvent(0, 1, ResetReason.REMOVED));
    expect(r.written).toHaveLength(0);
    expect(q.pendingCount).toBe(3);
    q.post(1, 0, 16);
    q.post(2, 0, 16);
    expect(r.written.map((w) => [w.head, w.lunBytes, w.reason])).toEqual([[1, 1, ResetReason.RESCAN], [2, 2, ResetReason.RESCAN]]);
    q.post(3, 0, 16);
    expect(r.written.map((w) => [w.head, w.lunBytes, w.reason])[2]).toEqual([3, 1, ResetReason.REMOVED]);
    expect(q.pendingCount).toBe(0);
    expect(q.counters).toEqual({ delivered: 3, dropped: 0 });
  });

  it('on overflow drops the stale queue and sends one EVENTS_MISSED before newer events', () => {
    const r = recorder();
    const q = new EventQueue(r.complete, 4);
    for (let lun = 0; lun < 4; lun++) q.deliver(transportResetEvent(0, lun, ResetReason.RESCAN));
    expect(q.missed).toBe(false);
    q.deliver(transportResetEvent(0, 4, ResetReason.RESCAN)); // the fifth: overflow
    expect(q.pendingCount).toBe(0);
    expect(q.missed).toBe(true);
    expect(q.counters.dropped).toBe(5);
    q.deliver(transportResetEvent(0, 9, ResetReason.REMOVED)); // newer than the rescan the driver will do
    q.post(1, 0, 16);
    q.post(2, 0, 16);
    expect(r.written).toEqual([
      { head: 1, event: (EventType.TRANSPORT_RESET | EventType.EVENTS_MISSED) >>> 0, target: 0, lunBytes: 9, reason: ResetReason.REMOVED },
    ]);
    expect(q.missed).toBe(false);
    expect(q.bufferCount).toBe(1);
  });

  it('sends EVENTS_MISSED alone (NO_EVENT) when nothing followed the overflow', () => {
    const r = recorder();
    const q = new EventQueue(r.complete, 2);
    for (let i = 0; i < 3; i++) q.deliver(paramChangeEvent(0, 0, 0x2a, 0x09));
    q.post(5, 0, 16);
    expect(r.written).toEqual([{ head: 5, event: EventType.EVENTS_MISSED, target: 0, lunBytes: 0, reason: 0 }]);
  });

  it('overflowing while a buffer is held cannot happen: events go straight out', () => {
    const r = recorder();
    const q = new EventQueue(r.complete, 1);
    for (let i = 0; i < 3; i++) q.post(i, 0, 16);
    for (let i = 0; i < 3; i++) q.deliver(paramChangeEvent(0, i, 0x2a, 0x09));
    expect(r.written.map((w) => w.event)).toEqual([EventType.PARAM_CHANGE, EventType.PARAM_CHANGE, EventType.PARAM_CHANGE]);
    expect(q.counters.dropped).toBe(0);
  });

  it('keeps pending events across a queue stop but forgets them on a driver reset', () => {
    const r = recorder();
    const q = new EventQueue(r.complete, 2);
    q.deliver(transportResetEvent(0, 1, ResetReason.RESCAN));
    q.post(1, 0, 16);
    q.deliver(transportResetEvent(0, 2, ResetReason.RESCAN));
    q.dropBuffers();
    expect(q.pendingCount).toBe(1);
    q.clearPending();
    q.post(2, 0, 16);
    expect(r.written).toHaveLength(1);
  });

  it('refuses buffers the driver framed wrongly', () => {
    const q = new EventQueue(() => undefined);
    expect(() => q.post(0, 1, 16)).toThrow(FramingError);
    expect(() => q.post(0, 0, 15)).toThrow(FramingError);
  });
});
