import pino from 'pino';
import { beforeEach, describe, expect, it } from 'vitest';
import type { MemoryRegionDesc, RawMessage, VirtioDevice, VringAddr } from '../native/index.ts';
import { encodeBody, encodeRequest, HEADER_SIZE, HeaderFlags, ProtocolFeature, Request, requestName, UNSUPPORTED_REQUEST_FDS, VHOST_USER_F_PROTOCOL_FEATURES } from './protocol.ts';
import { CONFIG_PROTOCOL_FEATURE, OFFERED_PROTOCOL_FEATURES, VhostUserSession, type DeviceModel } from './session.ts';

/** Records every device call; `failOn` makes one method throw. */
class FakeDevice implements VirtioDevice {
  calls: [string, ...unknown[]][] = [];
  failOn: string | null = null;
  vringBase = 7;
  #rec(name: string, ...args: unknown[]): void {
    this.calls.push([name, ...args]);
    if (this.failOn === name) throw new Error(`${name} refused`);
  }
  setFeatures(f: bigint) { this.#rec('setFeatures', f); }
  setMemTable(r: MemoryRegionDesc[]) { this.#rec('setMemTable', r); }
  setVringNum(q: number, n: number) { this.#rec('setVringNum', q, n); }
  setVringAddr(q: number, a: VringAddr) { this.#rec('setVringAddr', q, a); }
  setVringBase(q: number, b: number) { this.#rec('setVringBase', q, b); }
  getVringBase(q: number) { this.#rec('getVringBase', q); return this.vringBase; }
  setVringKick(q: number, fd: number) { this.#rec('setVringKick', q, fd); }
  setVringCall(q: number, fd: number) { this.#rec('setVringCall', q, fd); }
  setVringErr(q: number, fd: number) { this.#rec('setVringErr', q, fd); }
  setVringEnable(q: number, e: boolean) { this.#rec('setVringEnable', q, e); }
  complete(q: number, h: number, d: Buffer) { this.#rec('complete', q, h, d); }
  reset() { this.#rec('reset'); }
  queueState() { return { started: false, size: 0, lastAvail: 0, usedIdx: 0, inFlight: 0 }; }
}

class FakeModel implements DeviceModel {
  features = (1n << 32n) | (1n << 1n);
  numQueues = 3;
  maxQueueSize = 256;
  resets = 0;
  drained: number[] = [];
  stopping: number[] = [];
  beforeStop(q: number) { this.stopping.push(q); }
  drainGate: Promise<void> = Promise.resolve();
  readConfig() { return Buffer.from([...Array(36).keys()]); }
  writeConfig(offset: number, data: Buffer) { return offset === 20 && data.length === 4 && data.readUInt32LE(0) === 96; }
  async drainQueue(q: number) { await this.drainGate; this.drained.push(q); }
  reset() { this.resets++; }
}

const logger = pino({ level: 'silent' });

let device: FakeDevice;
let model: FakeModel;
let sent: Buffer[];
let closedConn: number;
let closedFds: number[];
let session: VhostUserSession;

function msg(request: number, body: Buffer = Buffer.alloc(0), fds: number[] = [], flags: number = HeaderFlags.VERSION): RawMessage {
  const raw = encodeRequest(request, body, flags);
  return { header: raw.subarray(0, HEADER_SIZE), body: raw.subarray(HEADER_SIZE), fds };
}

async function send(m: RawMessage): Promise<void> {
  session.receive(m);
  await session.settled();
}

function reply(i = sent.length - 1): { request: number; flags: number; body: Buffer } {
  const r = sent[i]!;
  expect(r.readUInt32LE(8)).toBe(r.length - HEADER_SIZE);
  return { request: r.readUInt32LE(0), flags: r.readUInt32LE(4), body: r.subarray(HEADER_SIZE) };
}

async function negotiate(protocol = OFFERED_PROTOCOL_FEATURES | CONFIG_PROTOCOL_FEATURE): Promise<void> {
  await send(msg(Request.SET_FEATURES, encodeBody.u64((1n << 32n) | (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES)))));
  await send(msg(Request.SET_PROTOCOL_FEATURES, encodeBody.u64(protocol)));
}

beforeEach(() => {
  device = new FakeDevice();
  model = new FakeModel();
  sent = [];
  closedConn = 0;
  closedFds = [];
  session = new VhostUserSession({
    connection: { send: (d: Buffer) => void sent.push(Buffer.from(d)), close: () => void closedConn++ },
    device,
    model,
    logger,
    closeFd: (fd) => void closedFds.push(fd),
    offerConfig: true,
  });
});

describe('negotiation', () => {
  it('offers the model features plus PROTOCOL_FEATURES', async () => {
    await send(msg(Request.GET_FEATURES));
    const r = reply();
    expect(r.request).toBe(Request.GET_FEATURES);
    expect(r.flags).toBe(HeaderFlags.VERSION | HeaderFlags.REPLY);
    expect(r.body.readBigUInt64LE(0)).toBe(model.features | (1n << 30n));
  });

  it('offers MQ, REPLY_ACK, CONFIG (when asked to), RESET_DEVICE and reports the queue count', async () => {
    await send(msg(Request.GET_PROTOCOL_FEATURES));
    expect(reply().body.readBigUInt64LE(0)).toBe(0b10_0010_0000_1001n);
    await send(msg(Request.GET_QUEUE_NUM));
    expect(reply().body.readBigUInt64LE(0)).toBe(3n);
  });

  it('does not offer CONFIG by default (QEMU vhost-user-scsi warns about it)', async () => {
    const plain = new VhostUserSession({ connection: { send: (d: Buffer) => void sent.push(Buffer.from(d)), close: () => undefined }, device, model, logger, closeFd: () => undefined });
    plain.receive(msg(Request.GET_PROTOCOL_FEATURES));
    await plain.settled();
    expect(reply().body.readBigUInt64LE(0)).toBe(0b10_0000_0000_1001n);
    plain.receive(msg(Request.SET_PROTOCOL_FEATURES, encodeBody.u64(CONFIG_PROTOCOL_FEATURE)));
    await plain.settled();
    expect(plain.closeReason).toMatch(/unoffered/);
  });

  it('passes acked features to the device without the vhost-user bit', async () => {
    await negotiate();
    expect(device.calls).toContainEqual(['setFeatures', 1n << 32n]);
    expect(session.closed).toBe(false);
  });

  it('closes on unoffered virtio or protocol features', async () => {
    await send(msg(Request.SET_FEATURES, encodeBody.u64(1n << 33n)));
    expect(session.closed).toBe(true);
    expect(session.closeReason).toMatch(/unoffered/);
    expect(closedConn).toBe(1);
    expect(model.resets).toBe(1);
    expect(device.calls.at(-1)).toEqual(['reset']);
  });

  it('closes on an unoffered protocol feature', async () => {
    await send(msg(Request.SET_PROTOCOL_FEATURES, encodeBody.u64(1n << BigInt(ProtocolFeature.LOG_SHMFD))));
    expect(session.closed).toBe(true);
  });
});

describe('REPLY_ACK', () => {
  it('acks with 0 when negotiated and requested', async () => {
    await negotiate();
    await send(msg(Request.SET_OWNER, Buffer.alloc(0), [], HeaderFlags.VERSION | HeaderFlags.NEED_REPLY));
    expect(reply().request).toBe(Request.SET_OWNER);
    expect(reply().body.readBigUInt64LE(0)).toBe(0n);
  });

  it('acks a refused SET_CONFIG with nonzero and keeps the connection', async () => {
    await negotiate();
    const body = encodeBody.config({ offset: 24, size: 4, flags: 0, payload: Buffer.from([16, 0, 0, 0]) });
    await send(msg(Request.SET_CONFIG, body, [], HeaderFlags.VERSION | HeaderFlags.NEED_REPLY));
    expect(reply().body.readBigUInt64LE(0)).toBe(1n);
    expect(session.closed).toBe(false);
  });

  it('sends no ack without the protocol feature', async () => {
    await negotiate(0n);
    await send(msg(Request.SET_OWNER, Buffer.alloc(0), [], HeaderFlags.VERSION | HeaderFlags.NEED_REPLY));
    expect(sent).toHaveLength(0);
  });

  it('sends only the explicit reply for GET requests', async () => {
    await negotiate();
    await send(msg(Request.GET_FEATURES, Buffer.alloc(0), [], HeaderFlags.VERSION | HeaderFlags.NEED_REPLY));
    expect(sent).toHaveLength(1);
  });
});

describe('vrings', () => {
  beforeEach(async () => negotiate());

  it('applies NUM/ADDR/BASE/KICK/CALL/ERR/ENABLE to the device', async () => {
    await send(msg(Request.SET_VRING_NUM, encodeBody.vringState({ index: 2, num: 256 })));
    await send(msg(Request.SET_VRING_ADDR, encodeBody.vringAddr({ index: 2, flags: 0, desc: 1n, used: 2n, avail: 3n, log: 0n })));
    await send(msg(Request.SET_VRING_BASE, encodeBody.vringState({ index: 2, num: 5 })));
    await send(msg(Request.SET_VRING_KICK, encodeBody.u64(2n), [40]));
    await send(msg(Request.SET_VRING_CALL, encodeBody.u64(2n | 0x100n)));
    await send(msg(Request.SET_VRING_ERR, encodeBody.u64(2n), [41]));
    await send(msg(Request.SET_VRING_ENABLE, encodeBody.vringState({ index: 2, num: 1 })));
    expect(session.closed).toBe(false);
    expect(device.calls.slice(1)).toEqual([
      ['setVringNum', 2, 256],
      ['setVringAddr', 2, { flags: 0, descUserAddr: 1n, usedUserAddr: 2n, availUserAddr: 3n, logGuestAddr: 0n }],
      ['setVringBase', 2, 5],
      ['setVringKick', 2, 40],
      ['setVringCall', 2, -1],
      ['setVringErr', 2, 41],
      ['setVringEnable', 2, true],
    ]);
    expect(closedFds).toEqual([]);
  });

  it.each([
    ['SET_VRING_NUM', msg(Request.SET_VRING_NUM, encodeBody.vringState({ index: 3, num: 128 }))],
    ['SET_VRING_ADDR', msg(Request.SET_VRING_ADDR, encodeBody.vringAddr({ index: 3, flags: 0, desc: 1n, used: 2n, avail: 3n, log: 0n }))],
    ['SET_VRING_BASE', msg(Request.SET_VRING_BASE, encodeBody.vringState({ index: 0xffffffff, num: 0 }))],
    ['GET_VRING_BASE', msg(Request.GET_VRING_BASE, encodeBody.vringState({ index: 3, num: 0 }))],
    ['SET_VRING_ENABLE', msg(Request.SET_VRING_ENABLE, encodeBody.vringState({ index: 200, num: 1 }))],
    ['SET_VRING_CALL', msg(Request.SET_VRING_CALL, encodeBody.u64(3n), [50])],
  ])('closes on a bad queue index in %s', async (_name, m) => {
    await send(m);
    expect(session.closed).toBe(true);
    expect(session.closeReason).toMatch(/queue index \d+ out of range/);
  });

  it('closes the kick fd when the queue index is bad', async () => {
    await send(msg(Request.SET_VRING_KICK, encodeBody.u64(9n), [77]));
    expect(closedFds).toEqual([77]);
  });

  it.each([0, 3, 512, 0x10000])('rejects queue size %i', async (num) => {
    await send(msg(Request.SET_VRING_NUM, encodeBody.vringState({ index: 0, num })));
    expect(session.closeReason).toMatch(/power of two/);
  });

  it('rejects a vring base beyond 16 bits and an enable value other than 0/1', async () => {
    await send(msg(Request.SET_VRING_BASE, encodeBody.vringState({ index: 0, num: 0x10000 })));
    expect(session.closeReason).toMatch(/base/);
  });

  it('GET_VRING_BASE waits for the queue to drain before replying', async () => {
    let open!: () => void;
    model.drainGate = new Promise((r) => (open = r));
    session.receive(msg(Request.GET_VRING_BASE, encodeBody.vringState({ index: 2, num: 0 })));
    session.receive(msg(Request.GET_QUEUE_NUM));
    await new Promise((r) => setTimeout(r, 10));
    expect(sent).toHaveLength(0);
    open();
    await session.settled();
    expect(model.stopping).toEqual([2]);
    expect(model.drained).toEqual([2]);
    expect(reply(0).request).toBe(Request.GET_VRING_BASE);
    expect(reply(0).body).toEqual(encodeBody.vringState({ index: 2, num: 7 }));
    expect(reply(1).request).toBe(Request.GET_QUEUE_NUM);
  });
});

describe('memory table', () => {
  it('hands regions with their fds to the device', async () => {
    const body = encodeBody.memTable([{ guestPhysAddr: 0n, size: 0x1000n, userAddr: 0x5000n, mmapOffset: 0n }]);
    await send(msg(Request.SET_MEM_TABLE, body, [33]));
    expect(device.calls).toEqual([['setMemTable', [{ guestPhysAddr: 0n, size: 0x1000n, userAddr: 0x5000n, mmapOffset: 0n, fd: 33 }]]]);
    expect(closedFds).toEqual([]);
  });

  it('closes every fd when the fd count is wrong', async () => {
    const body = encodeBody.memTable([{ guestPhysAddr: 0n, size: 0x1000n, userAddr: 0x5000n, mmapOffset: 0n }]);
    await send(msg(Request.SET_MEM_TABLE, body, [33, 34]));
    expect(session.closed).toBe(true);
    expect(closedFds).toEqual([33, 34]);
    expect(device.calls).toEqual([['reset']]);
  });

  it('closes the connection when the device refuses the table', async () => {
    device.failOn = 'setMemTable';
    const body = encodeBody.memTable([{ guestPhysAddr: 0n, size: 0x1000n, userAddr: 0x5000n, mmapOffset: 0n }]);
    await send(msg(Request.SET_MEM_TABLE, body, [33]));
    expect(session.closeReason).toBe('SET_MEM_TABLE: setMemTable refused');
    expect(closedFds).toEqual([]); // the device owns them (native contract)
  });
});

describe('hostile messages', () => {
  it('closes on an unknown request and closes its fds', async () => {
    await send(msg(77, Buffer.alloc(8), [90, 91]));
    expect(session.closeReason).toMatch(/unsupported request unknown\(77\)/);
    expect(closedFds).toEqual([90, 91]);
  });

  it.each([...UNSUPPORTED_REQUEST_FDS].map(([code, n]) => [requestName(code), code, n] as const))('closes on unsupported %s and closes its fds', async (_name, code, n) => {
    const fds = Array.from({ length: n }, (_, i) => 100 + i);
    await send(msg(code, Buffer.alloc(8), fds));
    expect(session.closeReason).toMatch(/unsupported request/);
    expect(closedFds).toEqual(fds);
  });

  it('closes on a truncated body', async () => {
    await send(msg(Request.SET_VRING_ADDR, Buffer.alloc(39)));
    expect(session.closeReason).toMatch(/expected 40/);
  });

  it('closes on an oversized body', async () => {
    await send(msg(Request.SET_FEATURES, Buffer.alloc(4096)));
    expect(session.closeReason).toMatch(/expected 8/);
  });

  it('ignores and closes fds of messages after the close', async () => {
    await send(msg(99));
    await send(msg(Request.SET_VRING_CALL, encodeBody.u64(0n), [5]));
    expect(closedFds).toEqual([5]);
    expect(closedConn).toBe(1);
    expect(model.resets).toBe(1);
  });

  it('refuses GET_CONFIG and RESET_DEVICE unless their protocol feature was acked', async () => {
    await send(msg(Request.GET_CONFIG, encodeBody.config({ offset: 0, size: 4, flags: 0, payload: Buffer.alloc(4) })));
    expect(session.closeReason).toMatch(/without its protocol feature/);
  });
});

describe('config and reset', () => {
  beforeEach(async () => negotiate());

  it('GET_CONFIG returns the requested slice', async () => {
    await send(msg(Request.GET_CONFIG, encodeBody.config({ offset: 4, size: 8, flags: 0, payload: Buffer.alloc(8) })));
    const r = reply().body;
    expect(r.readUInt32LE(0)).toBe(4);
    expect(r.readUInt32LE(4)).toBe(8);
    expect([...r.subarray(12)]).toEqual([4, 5, 6, 7, 8, 9, 10, 11]);
  });

  it('GET_CONFIG beyond the space answers with an empty payload', async () => {
    await send(msg(Request.GET_CONFIG, encodeBody.config({ offset: 32, size: 8, flags: 0, payload: Buffer.alloc(8) })));
    expect(reply().body.length).toBe(12);
    expect(session.closed).toBe(false);
  });

  it('RESET_DEVICE resets model and device but keeps the connection', async () => {
    await send(msg(Request.RESET_DEVICE));
    expect(model.resets).toBe(1);
    expect(device.calls.at(-1)).toEqual(['reset']);
    expect(session.closed).toBe(false);
    expect(session.ackedFeatures).toBe(0n);
  });
});

describe('connection lifecycle', () => {
  it('connectionClosed resets once', () => {
    session.connectionClosed('EOF');
    session.connectionClosed('again');
    expect(model.resets).toBe(1);
    expect(device.calls).toEqual([['reset']]);
    expect(closedConn).toBe(0);
  });

  it('a device error (fail) closes the connection once', () => {
    session.fail('queue 2: descriptor loop');
    session.fail('again');
    expect(closedConn).toBe(1);
    expect(session.closeReason).toBe('queue 2: descriptor loop');
  });
});
