import pino from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import type { PoppedChain } from '../native/index.ts';
import type { ScsiCommand, ScsiResult } from '../scsi/types.ts';
import { ControlType, TmfSubtype, TMF_REQ_SIZE, AN_REQ_SIZE } from './control.ts';
import { VirtioScsiDevice } from './device.ts';
import { EventType, ResetReason } from './events.ts';
import { CMD_REQ_SIZE, CMD_RESP_SIZE, encodeLun, Response } from './framing.ts';
import type { TargetPort } from './tasks.ts';

/** A target whose commands finish when the test says so. */
class FakeTarget implements TargetPort {
  luns = new Set([0, 1, 300]);
  commands: { lun: number; cmd: ScsiCommand; finish: (r: ScsiResult) => void; fail: (e: Error) => void }[] = [];
  lunResets: number[] = [];
  nexusResets = 0;
  execute(lun: number, cmd: ScsiCommand): Promise<ScsiResult> {
    return new Promise((resolve, reject) => this.commands.push({ lun, cmd, finish: resolve, fail: reject }));
  }
  hasLun(lun: number) { return this.luns.has(lun); }
  resetLun(lun: number) { this.lunResets.push(lun); }
  resetNexus() { this.nexusResets++; }
}

const tick = () => new Promise((r) => setImmediate(r));
const logger = pino({ level: 'silent' });

let target: FakeTarget;
let completions: { queue: number; head: number; data: Buffer }[];
let violations: string[];
let refuse: boolean;
let dev: VirtioScsiDevice;

beforeEach(() => {
  target = new FakeTarget();
  completions = [];
  violations = [];
  refuse = false;
  dev = new VirtioScsiDevice({
    numRequestQueues: 2,
    maxQueueSize: 128,
    targets: (t) => (t === 1 ? target : undefined),
    logger,
    complete: (queue, head, data) => {
      if (refuse) throw new Error('not in flight');
      completions.push({ queue, head, data });
    },
    onViolation: (r) => void violations.push(r),
    drainTimeoutMs: 50,
  });
});

function cmdChain(head: number, opts: { target?: number; lun?: number; tag?: bigint; cdb?: number[]; dataOut?: Buffer; dataIn?: number; queue?: number } = {}): PoppedChain {
  const req = Buffer.alloc(CMD_REQ_SIZE);
  encodeLun(opts.target ?? 1, opts.lun ?? 0).copy(req, 0);
  req.writeBigUInt64LE(opts.tag ?? BigInt(head), 8);
  Buffer.from(opts.cdb ?? [0x00]).copy(req, 19);
  return { queue: opts.queue ?? 2, head, readable: Buffer.concat([req, opts.dataOut ?? Buffer.alloc(0)]), writableLength: CMD_RESP_SIZE + (opts.dataIn ?? 0) };
}

function tmfChain(head: number, subtype: number, target = 1, lun = 0, tag = 0n): PoppedChain {
  const b = Buffer.alloc(TMF_REQ_SIZE);
  b.writeUInt32LE(ControlType.TMF, 0);
  b.writeUInt32LE(subtype, 4);
  encodeLun(target, lun).copy(b, 8);
  b.writeBigUInt64LE(tag, 16);
  return { queue: 0, head, readable: b, writableLength: 1 };
}

describe('request queues', () => {
  it('runs a command and completes it with data-in and residual', async () => {
    dev.handleChains([cmdChain(5, { lun: 300, cdb: [0x12, 0, 0, 0, 36], dataIn: 96 })]);
    expect(target.commands).toHaveLength(1);
    const c = target.commands[0]!;
    expect(c.lun).toBe(300);
    expect(c.cmd.cdb[0]).toBe(0x12);
    expect(c.cmd.dataInCapacity).toBe(96);
    expect(c.cmd.tag).toBe(5n);
    c.finish({ status: 0, dataIn: Buffer.alloc(36, 0xaa) });
    await tick();
    expect(completions).toHaveLength(1);
    const out = completions[0]!.data;
    expect(completions[0]!.head).toBe(5);
    expect(out.length).toBe(CMD_RESP_SIZE + 36);
    expect(out.readUInt32LE(4)).toBe(60);
    expect(dev.inFlightCount).toBe(0);
  });

  it('passes data-out to the target', async () => {
    dev.handleChains([cmdChain(1, { cdb: [0x2a], dataOut: Buffer.from('hello') })]);
    expect(target.commands[0]!.cmd.dataOut.toString()).toBe('hello');
  });

  it('runs commands concurrently and completes them in finishing order', async () => {
    dev.handleChains([cmdChain(1), cmdChain(2), cmdChain(3, { queue: 3 })]);
    expect(target.commands).toHaveLength(3);
    target.commands[2]!.finish({ status: 0 });
    target.commands[0]!.finish({ status: 0 });
    await tick();
    expect(completions.map((c) => [c.queue, c.head])).toEqual([[3, 3], [2, 1]]);
  });

  it('answers BAD_TARGET for an absent target or a malformed LUN', async () => {
    const badLun = cmdChain(8);
    badLun.readable[0] = 2;
    dev.handleChains([cmdChain(7, { target: 9 }), badLun]);
    await tick();
    expect(completions.map((c) => c.data[11])).toEqual([Response.BAD_TARGET, Response.BAD_TARGET]);
    expect(target.commands).toHaveLength(0);
  });

  it('answers TARGET_FAILURE when the target throws', async () => {
    dev.handleChains([cmdChain(1)]);
    target.commands[0]!.fail(new Error('boom'));
    await tick();
    expect(completions[0]!.data[11]).toBe(Response.TARGET_FAILURE);
  });

  it('treats a too-short chain as a violation', () => {
    dev.handleChains([{ queue: 2, head: 0, readable: Buffer.alloc(10), writableLength: CMD_RESP_SIZE }]);
    dev.handleChains([{ ...cmdChain(1), writableLength: 50 }]);
    expect(violations).toHaveLength(2);
    expect(violations[0]).toMatch(/queue 2: request chain has 10 readable bytes/);
    expect(violations[1]).toMatch(/writable bytes/);
    expect(target.commands).toHaveLength(0);
  });

  it('treats a chain from a nonexistent queue as a violation', () => {
    dev.handleChains([{ ...cmdChain(1), queue: 4 }]);
    expect(violations[0]).toMatch(/queue 4/);
  });

  it('drops completions after a reset', async () => {
    dev.handleChains([cmdChain(1)]);
    dev.reset();
    target.commands[0]!.finish({ status: 0 });
    await tick();
    expect(completions).toHaveLength(0);
  });

  it('swallows completions the device refuses', async () => {
    refuse = true;
    dev.handleChains([cmdChain(1)]);
    target.commands[0]!.finish({ status: 0 });
    await tick();
    expect(dev.inFlightCount).toBe(0);
  });

  it('drainQueue waits for the queue, then gives up after the timeout', async () => {
    dev.handleChains([cmdChain(1), cmdChain(2, { queue: 3 })]);
    let drained = false;
    const d = dev.drainQueue(2).then(() => (drained = true));
    await tick();
    expect(drained).toBe(false);
    target.commands[0]!.finish({ status: 0 });
    await d;
    expect(completions.map((c) => c.head)).toEqual([1]);
    await dev.drainQueue(3); // times out after 50 ms
    target.commands[1]!.finish({ status: 0 });
    await tick();
    expect(completions).toHaveLength(1);
  });
});

describe('controlq', () => {
  it('ABORT TASK waits for the task, then FUNCTION COMPLETE', async () => {
    dev.handleChains([cmdChain(1, { tag: 42n })]);
    dev.handleChains([tmfChain(9, TmfSubtype.ABORT_TASK, 1, 0, 42n)]);
    await tick();
    expect(completions).toHaveLength(0);
    target.commands[0]!.finish({ status: 0 });
    await tick();
    await tick();
    expect(completions.map((c) => [c.queue, c.head])).toEqual([[2, 1], [0, 9]]);
    expect(completions[1]!.data).toEqual(Buffer.from([Response.FUNCTION_COMPLETE]));
  });

  it('QUERY TASK and QUERY TASK SET report presence', async () => {
    dev.handleChains([cmdChain(1, { tag: 42n, lun: 1 })]);
    dev.handleChains([tmfChain(2, TmfSubtype.QUERY_TASK, 1, 1, 42n), tmfChain(3, TmfSubtype.QUERY_TASK, 1, 1, 43n), tmfChain(4, TmfSubtype.QUERY_TASK_SET, 1, 0), tmfChain(5, TmfSubtype.QUERY_TASK_SET, 1, 1)]);
    await tick();
    const byHead = new Map(completions.map((c) => [c.head, c.data[0]]));
    expect(byHead.get(2)).toBe(Response.FUNCTION_SUCCEEDED);
    expect(byHead.get(3)).toBe(Response.FUNCTION_COMPLETE);
    expect(byHead.get(4)).toBe(Response.FUNCTION_COMPLETE);
    expect(byHead.get(5)).toBe(Response.FUNCTION_SUCCEEDED);
  });

  it('LOGICAL UNIT RESET waits for the LU, resets it', async () => {
    dev.handleChains([cmdChain(1, { lun: 1 }), cmdChain(2, { lun: 0 })]);
    dev.handleChains([tmfChain(3, TmfSubtype.LOGICAL_UNIT_RESET, 1, 1)]);
    await tick();
    expect(target.lunResets).toEqual([]);
    target.commands[0]!.finish({ status: 0 });
    await tick();
    await tick();
    expect(target.lunResets).toEqual([1]);
    expect(completions.find((c) => c.queue === 0)!.data[0]).toBe(Response.FUNCTION_COMPLETE);
  });

  it('I_T NEXUS RESET resets the target', async () => {
    dev.handleChains([tmfChain(3, TmfSubtype.I_T_NEXUS_RESET, 1, 9999)]);
    await tick();
    expect(target.nexusResets).toBe(1);
    expect(completions[0]!.data[0]).toBe(Response.FUNCTION_COMPLETE);
  });

  it('answers BAD_TARGET, INCORRECT_LUN and FUNCTION_REJECTED', async () => {
    dev.handleChains([
      tmfChain(1, TmfSubtype.LOGICAL_UNIT_RESET, 7, 0),
      tmfChain(2, TmfSubtype.LOGICAL_UNIT_RESET, 1, 5),
      tmfChain(3, TmfSubtype.CLEAR_ACA, 1, 0),
      tmfChain(4, 99, 1, 0),
      tmfChain(5, TmfSubtype.ABORT_TASK_SET, 1, 0),
    ]);
    await tick();
    expect(completions.map((c) => c.data[0])).toEqual([Response.BAD_TARGET, Response.INCORRECT_LUN, Response.FUNCTION_REJECTED, Response.FUNCTION_REJECTED, Response.FUNCTION_COMPLETE]);
    expect(target.lunResets).toEqual([]);
  });

  it('answers AN query/subscribe with event_actual 0', async () => {
    const an = Buffer.alloc(AN_REQ_SIZE);
    an.writeUInt32LE(ControlType.AN_SUBSCRIBE, 0);
    encodeLun(1, 0).copy(an, 4);
    an.writeUInt32LE(0xffff, 12);
    dev.handleChains([{ queue: 0, head: 1, readable: an, writableLength: 5 }]);
    await tick();
    expect(completions[0]!.data).toEqual(Buffer.from([0, 0, 0, 0, Response.OK]));
  });

  it('treats unknown types and short requests as violations', async () => {
    const bad = Buffer.alloc(24);
    bad.writeUInt32LE(7, 0);
    dev.handleChains([{ queue: 0, head: 1, readable: bad, writableLength: 8 }]);
    dev.handleChains([{ ...tmfChain(2, 0), readable: Buffer.alloc(10) }]);
    dev.handleChains([{ ...tmfChain(3, 0), writableLength: 0 }]);
    await tick();
    expect(violations).toHaveLength(3);
    expect(violations[0]).toMatch(/type 7/);
    expect(completions).toHaveLength(0);
  });
});

describe('eventq', () => {
  it('keeps posted buffers and fills them when an event is delivered', () => {
    dev.handleChains([{ queue: 1, head: 4, readable: Buffer.alloc(0), writableLength: 16 }]);
    expect(completions).toHaveLength(0);
    expect(dev.events.bufferCount).toBe(1);
    dev.events.deliver({ event: EventType.TRANSPORT_RESET, lunField: encodeLun(1, 2), reason: ResetReason.RESCAN });
    expect(completions).toHaveLength(1);
    const e = completions[0]!.data;
    expect(e.readUInt32LE(0)).toBe(1);
    expect(e.subarray(4, 12)).toEqual(encodeLun(1, 2));
    expect(e.readUInt32LE(12)).toBe(1);
  });

  it('queues events without buffers and flags overflow as EVENTS_MISSED', () => {
    const ev = { event: EventType.PARAM_CHANGE, lunField: encodeLun(1, 0), reason: 0 };
    for (let i = 0; i < 70; i++) dev.events.deliver(ev);
    // The 65th overflowed the 64 queued: all dropped; 5 newer ones queue after the marker.
    expect(dev.events.pendingCount).toBe(5);
    dev.handleChains([{ queue: 1, head: 0, readable: Buffer.alloc(0), writableLength: 16 }]);
    expect(completions[0]!.data.readUInt32LE(0)).toBe((EventType.PARAM_CHANGE | EventType.EVENTS_MISSED) >>> 0);
  });

  it('raises hotplug events only for negotiated features', () => {
    let features = 0n;
    const sent: Buffer[] = [];
    const d = new VirtioScsiDevice({
      numRequestQueues: 1, maxQueueSize: 128, targets: () => undefined, logger,
      complete: (_q, _h, data) => void sent.push(data), onViolation: () => undefined,
      negotiatedFeatures: () => features,
    });
    for (let h = 0; h < 4; h++) d.handleChains([{ queue: 1, head: h, readable: Buffer.alloc(0), writableLength: 16 }]);
    expect(d.lunAdded(0, 1)).toBe(false);
    expect(d.lunParametersChanged(0, 1, 0x2a, 0x09)).toBe(false);
    features = 1n << 1n; // VIRTIO_SCSI_F_HOTPLUG
    expect(d.lunAdded(0, 300)).toBe(true);
    expect(d.lunRemoved(0, 2)).toBe(true);
    expect(d.lunParametersChanged(0, 1, 0x2a, 0x09)).toBe(false);
    features |= 1n << 2n; // VIRTIO_SCSI_F_CHANGE
    expect(d.lunParametersChanged(0, 1, 0x2a, 0x09)).toBe(true);
    expect(sent.map((b) => [b.readUInt32LE(0), b.readUInt16BE(6), b.readUInt32LE(12)])).toEqual([
      [EventType.TRANSPORT_RESET, 0x4000 | 300, ResetReason.RESCAN],
      [EventType.TRANSPORT_RESET, 2, ResetReason.REMOVED],
      [EventType.PARAM_CHANGE, 1, 0x092a],
    ]);
  });

  it('forgets queued events on a device reset (the driver rescans)', () => {
    dev.lunAdded(1, 1);
    expect(dev.events.pendingCount).toBe(1);
    dev.reset();
    expect(dev.events.pendingCount).toBe(0);
  });

  it('rejects buffers that are readable or too small', () => {
    dev.handleChains([{ queue: 1, head: 0, readable: Buffer.alloc(1), writableLength: 16 }]);
    dev.handleChains([{ queue: 1, head: 1, readable: Buffer.alloc(0), writableLength: 15 }]);
    expect(violations).toHaveLength(2);
  });

  it('returns held buffers as NO_EVENT before the eventq stops', async () => {
    dev.handleChains([{ queue: 1, head: 3, readable: Buffer.alloc(0), writableLength: 16 }, { queue: 1, head: 4, readable: Buffer.alloc(0), writableLength: 16 }]);
    dev.beforeStop(2);
    expect(completions).toHaveLength(0);
    dev.beforeStop(1);
    await dev.drainQueue(1);
    expect(completions.map((c) => [c.queue, c.head, c.data.readUInt32LE(0)])).toEqual([[1, 3, EventType.NO_EVENT], [1, 4, EventType.NO_EVENT]]);
    expect(dev.events.bufferCount).toBe(0);
  });

  it('forgets buffers on reset', () => {
    dev.handleChains([{ queue: 1, head: 0, readable: Buffer.alloc(0), writableLength: 16 }]);
    dev.reset();
    expect(dev.events.bufferCount).toBe(0);
  });
});

describe('config space', () => {
  it('encodes virtio_scsi_config', () => {
    const c = dev.readConfig();
    expect(c.length).toBe(36);
    expect(c.readUInt32LE(0)).toBe(2); // num_queues
    expect(c.readUInt32LE(4)).toBe(126); // seg_max
    expect(c.readUInt32LE(16)).toBe(16); // event_info_size
    expect(c.readUInt32LE(20)).toBe(96);
    expect(c.readUInt32LE(24)).toBe(32);
    expect(c.readUInt16LE(28)).toBe(0);
    expect(c.readUInt16LE(30)).toBe(255);
    expect(c.readUInt32LE(32)).toBe(16383);
    expect(dev.numQueues).toBe(4);
  });

  it('accepts only unchanged writes of sense_size/cdb_size', () => {
    expect(dev.writeConfig(20, Buffer.from([96, 0, 0, 0]))).toBe(true);
    expect(dev.writeConfig(24, Buffer.from([64, 0, 0, 0]))).toBe(false);
    expect(dev.writeConfig(0, Buffer.from([2, 0, 0, 0]))).toBe(false);
  });
});
