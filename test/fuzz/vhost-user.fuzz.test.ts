// Property-based fuzzing of the vhost-user codec and the per-connection
// session state machine (vhost-user.rst; hba/vhost-user/protocol.ts,
// session.ts): arbitrary headers, bodies and fd counts, and arbitrary message
// sequences against a fake device that sometimes refuses. The session must
// never throw out, must close the connection on a violation (and then stay
// closed, sending nothing more), and must account for every fd it received
// exactly once: closed by it, or handed to the device.
import fc from 'fast-check';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { MemoryRegionDesc, RawMessage, VirtioDevice, VringAddr } from '../../hba/native/index.ts';
import {
  decodeMessage,
  encodeBody,
  encodeRequest,
  HEADER_SIZE,
  HeaderFlags,
  ProtocolError,
  Request,
  REQUEST_RULES,
  VHOST_USER_F_PROTOCOL_FEATURES,
} from '../../hba/vhost-user/protocol.ts';
import { OFFERED_PROTOCOL_FEATURES, VhostUserSession, type DeviceModel } from '../../hba/vhost-user/session.ts';
import { fuzzParams } from './fuzz-settings.ts';

/** A device that records the fds handed to it and refuses when told to. */
class FakeDevice implements VirtioDevice {
  readonly takenFds: number[] = [];
  refuse = new Set<string>();
  #call(name: string): void {
    if (this.refuse.has(name)) throw new Error(`${name} refused`);
  }
  #take(fd: number): void {
    if (fd >= 0) this.takenFds.push(fd);
  }
  setFeatures(): void { this.#call('setFeatures'); }
  setMemTable(r: MemoryRegionDesc[]): void {
    for (const region of r) this.#take(region.fd);  // owned by the device even if it refuses
    this.#call('setMemTable');
  }
  setVringNum(): void { this.#call('setVringNum'); }
  setVringAddr(_q: number, _a: VringAddr): void { this.#call('setVringAddr'); }
  setVringBase(): void { this.#call('setVringBase'); }
  getVringBase(): number { this.#call('getVringBase'); return 0; }
  setVringKick(_q: number, fd: number): void { this.#take(fd); this.#call('setVringKick'); }
  setVringCall(_q: number, fd: number): void { this.#take(fd); this.#call('setVringCall'); }
  setVringErr(_q: number, fd: number): void { this.#take(fd); this.#call('setVringErr'); }
  setVringEnable(): void { this.#call('setVringEnable'); }
  complete(): void {}
  reset(): void { this.#call('reset'); }
  queueState() { return { started: false, size: 0, lastAvail: 0, usedIdx: 0, inFlight: 0 }; }
}

const model: DeviceModel = {
  features: (1n << 32n) | (1n << 28n) | (1n << 29n) | (1n << 2n),
  numQueues: 3,
  maxQueueSize: 256,
  readConfig: () => Buffer.alloc(36),
  writeConfig: (offset, data) => offset === 20 && data.length === 4,
  beforeStop: () => undefined,
  drainQueue: async () => undefined,
  reset: () => undefined,
};

const KNOWN = [...REQUEST_RULES.keys()];
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const smallU64 = fc.oneof(fc.bigInt({ min: 0n, max: 0x10000n }), u64);

/** A body shaped for `request` (so decoding gets past the size checks), or junk. */
function bodyFor(request: number): fc.Arbitrary<Buffer> {
  const junk = fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a));
  const state = fc.record({ index: fc.integer({ min: 0, max: 5 }), num: fc.oneof(fc.constantFrom(0, 1, 128, 256, 512, 0xffff), u32) })
    .map((s) => encodeBody.vringState(s));
  const shaped: Partial<Record<number, fc.Arbitrary<Buffer>>> = {
    [Request.SET_FEATURES]: fc.oneof(fc.constant((1n << 32n) | (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES))), u64).map(encodeBody.u64),
    [Request.SET_PROTOCOL_FEATURES]: fc.oneof(fc.constant(OFFERED_PROTOCOL_FEATURES), u64).map(encodeBody.u64),
    [Request.SET_MEM_TABLE]: fc.array(fc.record({ guestPhysAddr: smallU64, size: smallU64, userAddr: smallU64, mmapOffset: smallU64 }), { maxLength: 10 })
      .map((regions) => encodeBody.memTable(regions)),
    [Request.SET_VRING_NUM]: state,
    [Request.SET_VRING_BASE]: state,
    [Request.GET_VRING_BASE]: state,
    [Request.SET_VRING_ENABLE]: state,
    [Request.SET_VRING_ADDR]: fc.record({ index: fc.integer({ min: 0, max: 5 }), flags: fc.constantFrom(0, 1, 2), desc: smallU64, used: smallU64, avail: smallU64, log: smallU64 })
      .map((a) => encodeBody.vringAddr(a)),
    [Request.SET_VRING_KICK]: fc.tuple(fc.integer({ min: 0, max: 5 }), fc.boolean()).map(([q, nofd]) => encodeBody.u64(BigInt(q) | (nofd ? 0x100n : 0n))),
    [Request.SET_VRING_CALL]: fc.tuple(fc.integer({ min: 0, max: 5 }), fc.boolean()).map(([q, nofd]) => encodeBody.u64(BigInt(q) | (nofd ? 0x100n : 0n))),
    [Request.SET_VRING_ERR]: fc.tuple(fc.integer({ min: 0, max: 5 }), fc.boolean()).map(([q, nofd]) => encodeBody.u64(BigInt(q) | (nofd ? 0x100n : 0n))),
    [Request.GET_CONFIG]: fc.record({ offset: fc.integer({ min: 0, max: 300 }), size: fc.integer({ min: 0, max: 300 }) })
      .map(({ offset, size }) => encodeBody.config({ offset, size, flags: 0, payload: Buffer.alloc(Math.min(size, 256)) })),
  };
  return shaped[request] !== undefined ? fc.oneof({ weight: 4, arbitrary: shaped[request] }, { weight: 1, arbitrary: junk }) : fc.oneof(fc.constant(Buffer.alloc(0)), junk);
}

/** One message: a known or arbitrary request, a fitting or junk body, any flags, 0..9 fds. */
const message = fc
  .oneof({ weight: 8, arbitrary: fc.constantFrom(...KNOWN) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 60 }) }, { weight: 1, arbitrary: u32 })
  .chain((request) =>
    fc.record({
      request: fc.constant(request),
      body: bodyFor(request),
      flags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(HeaderFlags.VERSION, HeaderFlags.VERSION | HeaderFlags.NEED_REPLY) }, { weight: 1, arbitrary: u32 }),
      fdCount: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(0, 1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 9 }) }),
      sizeLie: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }) }),
    }),
  );

describe('vhost-user codec (fuzzed)', () => {
  it('decodeMessage either decodes or throws ProtocolError, for any header, body and fd count', () => {
    fc.assert(
      fc.property(message, ({ request, body, flags, fdCount, sizeLie }) => {
        const raw = encodeRequest(request, body, flags);
        const claimed = Math.max(0, body.length + sizeLie);
        raw.writeUInt32LE(claimed, 8);
        let decoded;
        try {
          decoded = decodeMessage(raw.subarray(0, HEADER_SIZE), raw.subarray(HEADER_SIZE), fdCount);
        } catch (err) {
          expect(err).toBeInstanceOf(ProtocolError);
          return;
        }
        expect(REQUEST_RULES.has(decoded.request)).toBe(true);
        expect(claimed).toBe(body.length); // a header that lies about the size never decodes
      }),
      fuzzParams(3000),
    );
  });

  it('every known request with a well-formed body decodes with exactly its fd count and no other', () => {
    fc.assert(
      fc.property(fc.constantFrom(...KNOWN).chain((r) => fc.tuple(fc.constant(r), bodyFor(r))), fc.integer({ min: 0, max: 9 }), ([request, body], fdCount) => {
        const rule = REQUEST_RULES.get(request)!;
        const raw = encodeRequest(request, body);
        let expectedFds: number;
        try {
          const size = typeof rule.bodySize === 'number' ? rule.bodySize : (body.length >= (rule.bodyHead ?? 0) ? rule.bodySize(body) : -1);
          if (size !== body.length) return; // malformed body: covered by the first property
          expectedFds = typeof rule.fds === 'number' ? rule.fds : rule.fds(body);
        } catch {
          return;
        }
        const attempt = () => decodeMessage(raw.subarray(0, HEADER_SIZE), raw.subarray(HEADER_SIZE), fdCount);
        if (fdCount === expectedFds) {
          try { attempt(); } catch (err) { expect(err).toBeInstanceOf(ProtocolError); expect(String(err)).not.toMatch(/fds attached/); }
        } else {
          expect(attempt).toThrow(/fds attached/);
        }
      }),
      fuzzParams(3000),
    );
  });
});

describe('vhost-user session (fuzzed)', () => {
  it('arbitrary message sequences: never throws out, closes on violation, every fd accounted for once', async () => {
    const refusable = ['setFeatures', 'setMemTable', 'setVringNum', 'setVringAddr', 'setVringBase', 'getVringBase', 'setVringKick', 'setVringEnable', 'reset'];
    await fc.assert(
      fc.asyncProperty(
        fc.array(message, { minLength: 1, maxLength: 40 }),
        fc.subarray(refusable, { maxLength: 2 }),
        fc.boolean(),
        async (messages, refuse, negotiateFirst) => {
          const device = new FakeDevice();
          device.refuse = new Set(refuse);
          const sent: Buffer[] = [];
          const closedFds: number[] = [];
          let connectionCloses = 0;
          let sentAfterClose = 0;
          const session = new VhostUserSession({
            connection: {
              send: (d: Buffer) => { if (connectionCloses > 0) sentAfterClose++; sent.push(Buffer.from(d)); },
              close: () => void connectionCloses++,
            },
            device,
            model,
            logger: pino({ level: 'silent' }),
            closeFd: (fd) => void closedFds.push(fd),
            offerConfig: true,
          });
          const prefix = negotiateFirst
            ? [
                { request: Request.SET_FEATURES, body: encodeBody.u64((1n << 32n) | (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES))), flags: HeaderFlags.VERSION, fdCount: 0, sizeLie: 0 },
                { request: Request.SET_PROTOCOL_FEATURES, body: encodeBody.u64(OFFERED_PROTOCOL_FEATURES), flags: HeaderFlags.VERSION, fdCount: 0, sizeLie: 0 },
              ]
            : [];
          let nextFd = 1000;
          const allFds: number[] = [];
          for (const m of [...prefix, ...messages]) {
            const raw = encodeRequest(m.request, m.body, m.flags);
            raw.writeUInt32LE(Math.max(0, m.body.length + m.sizeLie), 8);
            const fds = Array.from({ length: m.fdCount }, () => nextFd++);
            allFds.push(...fds);
            const msg: RawMessage = { header: raw.subarray(0, HEADER_SIZE), body: raw.subarray(HEADER_SIZE), fds };
            expect(() => session.receive(msg)).not.toThrow();
          }
          await session.settled(); // never rejects
          // Every fd exactly once: closed by the session or handed to the device.
          const accounted = [...closedFds, ...device.takenFds].sort((a, b) => a - b);
          expect(accounted).toEqual(allFds);
          // Closed on violation, and nothing sent after the close.
          if (session.closeReason !== null) {
            expect(session.closed).toBe(true);
            expect(connectionCloses).toBeGreaterThan(0);
          }
          if (connectionCloses > 0) expect(session.closed).toBe(true);
          expect(sentAfterClose).toBe(0);
          // Replies are well-formed: REPLY flag, size matches.
          for (const r of sent) {
            expect(r.length).toBeGreaterThanOrEqual(HEADER_SIZE);
            expect(r.readUInt32LE(4) & HeaderFlags.REPLY).toBe(HeaderFlags.REPLY);
            expect(r.readUInt32LE(8)).toBe(r.length - HEADER_SIZE);
          }
        },
      ),
      fuzzParams(400),
    );
  });

  it('a flood of messages after a violation is drained without device calls and with every fd closed', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 100, max: 2000 }), fc.integer({ min: 0, max: 8 }), async (count, fdsEach) => {
        const device = new FakeDevice();
        const closedFds: number[] = [];
        const session = new VhostUserSession({
          connection: { send: () => undefined, close: () => undefined },
          device,
          model,
          logger: pino({ level: 'silent' }),
          closeFd: (fd) => void closedFds.push(fd),
        });
        let fd = 0;
        const raw = encodeRequest(999, Buffer.alloc(0)); // unknown request: violation
        session.receive({ header: raw.subarray(0, HEADER_SIZE), body: Buffer.alloc(0), fds: [] });
        const good = encodeRequest(Request.SET_VRING_KICK, encodeBody.u64(0n));
        for (let i = 0; i < count; i++) {
          session.receive({ header: good.subarray(0, HEADER_SIZE), body: good.subarray(HEADER_SIZE), fds: Array.from({ length: fdsEach }, () => fd++) });
        }
        await session.settled();
        expect(session.closed).toBe(true);
        expect(device.takenFds).toEqual([]);
        expect(closedFds.length).toBe(count * fdsEach);
      }),
      fuzzParams(10),
    );
  });
});
