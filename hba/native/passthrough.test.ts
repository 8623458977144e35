// Passthrough devices (issue 8; hba/native/src/passthrough*.cc): opening
// errors, commands executed directly against a real iSCSI target (tgtd on
// loopback, test/passthrough/tgtd.ts), and passthrough LUNs in a device's LUN
// table served by the native queue worker (mock virtio driver, queue 2).
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { native, type PassthroughDevice, type PassthroughOutcome } from './index.ts';
import { type Rig, settle, setupRig, waitFor } from './device-harness.ts';
import { cdb16 } from '../scsi/testing.ts';
import { startTgtd, tgtdAvailable, type Tgtd } from '../../test/passthrough/tgtd.ts';

const OK = 0, ABORTED = 2, BAD_TARGET = 3, TRANSPORT_FAILURE = 6; // virtio 1.2 §5.6.6.1
const GOOD = 0, CHECK_CONDITION = 2, RESERVATION_CONFLICT = 0x18; // SAM-5 §5.3
const INQUIRY = 0x12, READ16 = 0x88, WRITE16 = 0x8a, WRITE_BUFFER = 0x3b;
const PR_IN = 0x5e, PR_OUT = 0x5f;
const REQUEST_QUEUE = 2, REQ_SIZE = 51, RESP_SIZE = 108;
const MiB = 1 << 20;

function inquiry(evpd: boolean, page: number, length: number): Buffer {
  return Buffer.from([INQUIRY, evpd ? 1 : 0, page, length >> 8, length & 0xff, 0]);
}
function readCapacity16(): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = 0x9e; // SERVICE ACTION IN(16), SBC-3 §5.16
  cdb[1] = 0x10; // READ CAPACITY(16)
  cdb.writeUInt32BE(32, 10);
  return cdb;
}
/** PERSISTENT RESERVE OUT (SPC-4 §6.16) with a 24-byte parameter list. */
function prOut(serviceAction: number, type: number, key: bigint, saKey: bigint): { cdb: Buffer; data: Buffer } {
  const cdb = Buffer.alloc(10);
  cdb[0] = PR_OUT;
  cdb[1] = serviceAction;
  cdb[2] = type; // scope 0 (LU)
  cdb.writeUInt32BE(24, 5);
  const data = Buffer.alloc(24);
  data.writeBigUInt64BE(key, 0);
  data.writeBigUInt64BE(saKey, 8);
  return { cdb, data };
}
/** PERSISTENT RESERVE IN / READ RESERVATION (SPC-4 §6.15.4). */
function readReservation(): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = PR_IN;
  cdb[1] = 0x01;
  cdb.writeUInt16BE(64, 7);
  return cdb;
}
function senseCode(o: PassthroughOutcome): { key: number; asc: number; ascq: number } {
  const s = o.sense;
  if ((s[0]! & 0x7f) >= 0x72) return { key: s[1]! & 0x0f, asc: s[2]!, ascq: s[3]! };
  return { key: s[2]! & 0x0f, asc: s[12]!, ascq: s[13]! };
}
/** True when `path` can be opened read-write here (device cgroups may forbid it). */
function openable(path: string): boolean {
  try {
    closeSync(openSync(path, 'r+'));
    return true;
  } catch {
    return false;
  }
}
function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed + (i >> 9)) & 0xff;
  return b;
}

describe('openPassthrough: what cannot be opened says why', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vhba-pt-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('rejects a missing path, a regular file, /dev/null and a non-SCSI disk', async () => {
    await expect(native.openPassthrough({ kind: 'sg', path: join(dir, 'nope') })).rejects.toThrow(/nope: no such file/);
    const file = join(dir, 'plain.img');
    writeFileSync(file, Buffer.alloc(4096));
    await expect(native.openPassthrough({ kind: 'sg', path: file })).rejects.toThrow(/is not a block device or an sg character device/);
    await expect(native.openPassthrough({ kind: 'sg', path: '/dev/null' })).rejects.toThrow(
      /\/dev\/null is not a SCSI device: SG_IO not supported \(virtio-blk and NVMe disks cannot be passed through; use deviceType disk\)/,
    );
    if (openable('/dev/vda')) {
      await expect(native.openPassthrough({ kind: 'sg', path: '/dev/vda' })).rejects.toThrow(/\/dev\/vda is not a SCSI device/);
    }
  });

  it('rejects an unreachable portal promptly, naming it', async () => {
    const started = Date.now();
    await expect(
      native.openPassthrough({ kind: 'iscsi', portal: '127.0.0.1:1', iqn: 'iqn.2026-11.io.vhba.test:none', lun: 1 }, { timeoutMs: 3000 }),
    ).rejects.toThrow(/iSCSI 127\.0\.0\.1:1 target iqn\.2026-11\.io\.vhba\.test:none lun 1: login failed: .*[Cc]onnect/);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('rejects bad arguments', async () => {
    await expect(native.openPassthrough({ kind: 'nvme' } as never)).rejects.toThrow(/kind must be 'sg' or 'iscsi'/);
    await expect(native.openPassthrough({ kind: 'iscsi', portal: 'x', iqn: 'y', lun: 1 << 20 })).rejects.toThrow(/lun/);
    await expect(native.openPassthrough({ kind: 'sg', path: '/dev/null' }, { timeoutMs: 0 })).rejects.toThrow(/timeoutMs must be > 0/);
  });
});

describe.skipIf(!tgtdAvailable())('iSCSI passthrough against tgtd', () => {
  let tgtd: Tgtd;
  let dev: PassthroughDevice;
  const SIZE = 8 * MiB;
  beforeAll(async () => {
    tgtd = await startTgtd({ luns: [{ sizeBytes: SIZE, blockSize: 4096 }, { sizeBytes: 4 * MiB, blockSize: 512 }] });
    dev = await native.openPassthrough({ kind: 'iscsi', portal: tgtd.portal, iqn: tgtd.iqn, lun: tgtd.luns[0]! }, { timeoutMs: 5000 });
  }, 30_000);
  afterAll(async () => {
    dev?.close();
    await tgtd?.stop();
  });

  it('describes itself and answers INQUIRY, VPD 80h/83h and READ CAPACITY(16) from the device', async () => {
    expect(dev.description).toBe(`iscsi://${tgtd.portal}/${tgtd.iqn}/1`);
    expect(dev.maxTransferBytes).toBe(0);
    const std = await dev.execute(inquiry(false, 0, 96), { dataInLength: 96 });
    expect(std).toMatchObject({ response: OK, status: GOOD, error: '' });
    expect(std.dataIn[0]! & 0x1f).toBe(0); // direct-access block device
    expect(std.dataIn.subarray(8, 16).toString('latin1')).toBe('IET     ');
    expect(std.dataIn.length + std.residual).toBe(96);

    const serial = await dev.execute(inquiry(true, 0x80, 255), { dataInLength: 255 });
    expect(serial.status).toBe(GOOD);
    expect(serial.dataIn[1]).toBe(0x80);
    expect(serial.dataIn.length).toBe(4 + serial.dataIn.readUInt16BE(2));
    const ids = await dev.execute(inquiry(true, 0x83, 255), { dataInLength: 255 });
    expect(ids.status).toBe(GOOD);
    expect(ids.dataIn[1]).toBe(0x83);
    expect(ids.dataIn.readUInt16BE(2)).toBeGreaterThan(0);

    const cap = await dev.execute(readCapacity16(), { dataInLength: 32 });
    expect(cap.status).toBe(GOOD);
    expect(cap.dataIn.readBigUInt64BE(0)).toBe(BigInt(SIZE / 4096 - 1));
    expect(cap.dataIn.readUInt32BE(8)).toBe(4096);
  });

  it('round-trips WRITE(16) / READ(16) and the data lands in the backing file', async () => {
    const data = pattern(3 * 4096, 7);
    const w = await dev.execute(cdb16(WRITE16, 5n, 3), { dataOut: data });
    expect(w).toMatchObject({ response: OK, status: GOOD, residual: 0 });
    const r = await dev.execute(cdb16(READ16, 5n, 3), { dataInLength: 3 * 4096 });
    expect(r).toMatchObject({ response: OK, status: GOOD, residual: 0 });
    expect(r.dataIn.equals(data)).toBe(true);
    expect(readFileSync(tgtd.backingPaths[0]!).subarray(5 * 4096, 8 * 4096).equals(data)).toBe(true);
  });

  it("passes the device's CHECK CONDITION sense through (READ beyond capacity)", async () => {
    const r = await dev.execute(cdb16(READ16, BigInt(SIZE / 4096), 1), { dataInLength: 4096 });
    expect(r.response).toBe(OK);
    expect(r.status).toBe(CHECK_CONDITION);
    expect(r.sense.length).toBeGreaterThanOrEqual(14);
    expect(senseCode(r)).toEqual({ key: 0x05, asc: 0x21, ascq: 0x00 });
    expect(r.dataIn.length).toBe(0);
  });

  it('validates execute arguments', async () => {
    await expect(dev.execute(Buffer.alloc(5))).rejects.toThrow(/6\.\.32 bytes/);
    await expect(dev.execute(Buffer.alloc(33))).rejects.toThrow(/6\.\.32 bytes/);
    await expect(dev.execute(cdb16(READ16, 0n, 1), { dataOut: Buffer.alloc(512), dataInLength: 512 })).rejects.toThrow(/bidirectional/);
    await expect(dev.execute(cdb16(READ16, 0n, 1), { dataInLength: 33 * MiB })).rejects.toThrow(/dataInLength/);
  });

  it('a second initiator sees the persistent reservation the first made', async () => {
    const lun = tgtd.luns[1]!;
    const a = await native.openPassthrough({ kind: 'iscsi', portal: tgtd.portal, iqn: tgtd.iqn, lun, initiatorName: 'iqn.2026-11.io.vhba.test:a' });
    const b = await native.openPassthrough({ kind: 'iscsi', portal: tgtd.portal, iqn: tgtd.iqn, lun, initiatorName: 'iqn.2026-11.io.vhba.test:b' });
    try {
      const key = 0x1122334455667788n;
      const register = prOut(0x00, 0, 0n, key);
      expect(await a.execute(register.cdb, { dataOut: register.data })).toMatchObject({ response: OK, status: GOOD });
      const reserve = prOut(0x01, 0x01, key, 0n); // RESERVE, type 1: write exclusive
      expect(await a.execute(reserve.cdb, { dataOut: reserve.data })).toMatchObject({ response: OK, status: GOOD });

      const seen = await b.execute(readReservation(), { dataInLength: 64 });
      expect(seen).toMatchObject({ response: OK, status: GOOD });
      expect(seen.dataIn.readUInt32BE(4)).toBe(16); // one reservation descriptor
      expect(seen.dataIn.readBigUInt64BE(8)).toBe(key);
      expect(seen.dataIn[21]! & 0x0f).toBe(0x01);
      const blocked = await b.execute(cdb16(WRITE16, 0n, 1), { dataOut: Buffer.alloc(512, 1) });
      expect(blocked).toMatchObject({ response: OK, status: RESERVATION_CONFLICT });

      const clear = prOut(0x03, 0, key, 0n); // CLEAR
      expect(await a.execute(clear.cdb, { dataOut: clear.data })).toMatchObject({ status: GOOD });
      expect((await b.execute(cdb16(WRITE16, 0n, 1), { dataOut: Buffer.alloc(512, 1) })).status).toBe(GOOD);
    } finally {
      a.close();
      b.close();
    }
  });

  it('a closed handle rejects execute; close is idempotent', async () => {
    const d = await native.openPassthrough({ kind: 'iscsi', portal: tgtd.portal, iqn: tgtd.iqn, lun: 1 });
    d.close();
    d.close();
    await expect(d.execute(inquiry(false, 0, 36), { dataInLength: 36 })).rejects.toThrow(/closed/);
    expect(d.counters()).toEqual({ reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, errors: 0 });
  });

  it('rejects a login to a target that does not exist', async () => {
    await expect(
      native.openPassthrough({ kind: 'iscsi', portal: tgtd.portal, iqn: 'iqn.2026-11.io.vhba.test:absent', lun: 1 }, { timeoutMs: 3000 }),
    ).rejects.toThrow(/target iqn\.2026-11\.io\.vhba\.test:absent lun 1: login failed/);
  });
});

describe.skipIf(!tgtdAvailable())('iSCSI passthrough: the target vanishing', () => {
  it('answers in-flight and later commands with a failure response promptly, never hanging', async () => {
    const tgtd = await startTgtd({ luns: [{ sizeBytes: 64 * MiB, blockSize: 512 }] });
    try {
      const dev = await native.openPassthrough({ kind: 'iscsi', portal: tgtd.portal, iqn: tgtd.iqn, lun: 1 }, { timeoutMs: 3000 });
      const outcomes: PassthroughOutcome[] = [];
      let stop = false;
      const reader = (async () => {
        for (let i = 0; !stop && i < 10_000; i++) {
          outcomes.push(await dev.execute(cdb16(READ16, BigInt((i * 2048) % 131000), 2048), { dataInLength: MiB, timeoutMs: 3000 }));
          if (outcomes.at(-1)!.response !== OK) break;
        }
      })();
      await waitFor(() => outcomes.length >= 3, 5000, 'reads before the kill');
      const killedAt = Date.now();
      await tgtd.kill();
      await reader;
      stop = true;
      const failed = outcomes.at(-1)!;
      expect(failed.response).not.toBe(OK);
      expect([ABORTED, TRANSPORT_FAILURE, BAD_TARGET]).toContain(failed.response);
      expect(failed.error).not.toBe('');
      expect(failed.dataIn.length).toBe(0);
      expect(Date.now() - killedAt).toBeLessThan(4000);
      // Later commands: one bounded reconnect attempt, then BAD_TARGET at once.
      const t0 = Date.now();
      const next = await dev.execute(inquiry(false, 0, 36), { dataInLength: 36, timeoutMs: 2000 });
      expect(next.response).toBe(BAD_TARGET);
      expect(next.error).toMatch(/login failed|no login/);
      const again = await dev.execute(inquiry(false, 0, 36), { dataInLength: 36, timeoutMs: 2000 });
      expect(again.response).toBe(BAD_TARGET);
      expect(Date.now() - t0).toBeLessThan(2500);
      dev.close();
    } finally {
      await tgtd.stop();
      await tgtd.stop(); // idempotent
    }
  }, 30_000);
});

// ---------------------------------------------------------------------------
// Passthrough LUNs in a device's LUN table.

function request(target: number, lun: number, cdb: Buffer): Buffer {
  const req = Buffer.alloc(REQ_SIZE);
  req[0] = 1;
  req[1] = target;
  req.writeUInt16BE(0x4000 | lun, 2);
  req.writeBigUInt64LE(9n, 8);
  cdb.copy(req, 19);
  return req;
}
function bitmap(...opcodes: number[]): Buffer {
  const b = Buffer.alloc(32);
  for (const op of opcodes) b[op >> 3]! |= 1 << (op & 7);
  return b;
}
interface Response {
  senseLength: number;
  resid: number;
  status: number;
  response: number;
  sense: Buffer;
  data: Buffer;
  len: number;
}

describe.skipIf(!tgtdAvailable())('passthrough LUNs on the native queue worker', () => {
  let tgtd: Tgtd;
  let dev: PassthroughDevice;
  let rig: Rig | undefined;
  beforeAll(async () => {
    tgtd = await startTgtd({ luns: [{ sizeBytes: 8 * MiB, blockSize: 4096 }] });
    dev = await native.openPassthrough({ kind: 'iscsi', portal: tgtd.portal, iqn: tgtd.iqn, lun: 1 });
  }, 30_000);
  afterEach(() => {
    rig?.close();
    rig = undefined;
  });
  afterAll(async () => {
    dev?.close();
    await tgtd?.stop();
  });

  async function requestRig(): Promise<Rig> {
    const r = await setupRig({ numQueues: 3, queueSize: 64, unconfigured: true, memorySize: 4 * MiB, maxChainBytes: 2 * MiB });
    await r.queue.configure(r.device, REQUEST_QUEUE);
    return r;
  }
  function register(r: Rig, overrides: { eligible?: boolean; refused?: Buffer; deferred?: Buffer } = {}): void {
    r.device.setLun(0, 2, {
      device: dev,
      refusedOpcodes: overrides.refused ?? bitmap(WRITE_BUFFER),
      deferredOpcodes: overrides.deferred ?? bitmap(INQUIRY, 0xa0),
      timeoutMs: 5000,
      eligible: overrides.eligible ?? true,
    });
  }
  /** Submits one chain; resolves with its used element or the chain JS got. */
  async function submit(r: Rig, cdb: Buffer, opts: { dataOut?: Buffer; dataIn?: number } = {}): Promise<Response | 'deferred'> {
    const chainsBefore = r.chains.length;
    const segments: ({ data: Buffer } | { writableLength: number })[] = [{ data: request(0, 2, cdb) }];
    if (opts.dataOut) segments.push({ data: opts.dataOut });
    // The data-in area split over two buffers: the native path gathers them.
    const dataIn = opts.dataIn ?? 0;
    segments.push({ writableLength: RESP_SIZE + Math.floor(dataIn / 2) });
    if (dataIn - Math.floor(dataIn / 2) > 0) segments.push({ writableLength: dataIn - Math.floor(dataIn / 2) });
    const head = r.queue.addChain(segments);
    r.queue.publishAndKick();
    let used: { head: number; len: number; data: Buffer }[] = [];
    await waitFor(() => (used = r.queue.reclaim()).length > 0 || r.chains.length > chainsBefore, 8000, 'completion');
    if (r.chains.length > chainsBefore) {
      expect(r.chains[chainsBefore]!.head).toBe(head);
      r.device.complete(REQUEST_QUEUE, head, Buffer.alloc(RESP_SIZE));
      r.queue.reclaim();
      return 'deferred';
    }
    const buf = used[0]!.data;
    const senseLength = buf.readUInt32LE(0);
    return {
      senseLength,
      resid: buf.readUInt32LE(4),
      status: buf[10]!,
      response: buf[11]!,
      sense: buf.subarray(12, 12 + senseLength),
      data: buf.subarray(RESP_SIZE),
      len: used[0]!.len,
    };
  }

  it('forwards READ and WRITE natively, with the data the device has', async () => {
    rig = await requestRig();
    register(rig);
    const payload = pattern(2 * 4096, 3);
    const w = await submit(rig, cdb16(WRITE16, 10n, 2), { dataOut: payload });
    expect(w).toMatchObject({ status: GOOD, response: OK, senseLength: 0, resid: 0, len: RESP_SIZE });
    const r = await submit(rig, cdb16(READ16, 10n, 2), { dataIn: 2 * 4096 + 512 });
    expect(r).not.toBe('deferred');
    const got = r as Response;
    expect(got).toMatchObject({ status: GOOD, response: OK, senseLength: 0 });
    const direct = await dev.execute(cdb16(READ16, 10n, 2), { dataInLength: 2 * 4096 });
    expect(direct.dataIn.equals(payload)).toBe(true);
    // iSCSI reports the underflow (SPC-4 residual): 512 bytes not transferred.
    expect(got.resid).toBe(512);
    expect(got.len).toBe(RESP_SIZE + 2 * 4096);
    expect(got.data.subarray(0, 2 * 4096).equals(direct.dataIn)).toBe(true);
    expect(rig.device.lunCounters(0, 2)).toEqual({ reads: 1, writes: 1, bytesRead: 8192, bytesWritten: 8192, flushes: 0, errors: 0 });
    expect(dev.counters()).toMatchObject({ reads: 1, writes: 1 });
    expect(rig.chains).toHaveLength(0);
  });

  it("returns the device's CHECK CONDITION natively", async () => {
    rig = await requestRig();
    register(rig);
    const r = (await submit(rig, cdb16(READ16, 1n << 40n, 1), { dataIn: 4096 })) as Response;
    expect(r).toMatchObject({ status: CHECK_CONDITION, response: OK, len: RESP_SIZE, resid: 4096 });
    expect(r.senseLength).toBeGreaterThanOrEqual(14);
    expect(r.sense[2]! & 0x0f).toBe(0x05);
    expect(r.sense[12]).toBe(0x21);
  });

  it('answers a refused opcode with ILLEGAL REQUEST 20h/00h without reaching the device', async () => {
    rig = await requestRig();
    register(rig);
    const before = dev.counters();
    const cdb = Buffer.from([WRITE_BUFFER, 0x05, 0, 0, 0, 0, 0, 0x02, 0, 0]); // download microcode
    const r = (await submit(rig, cdb, { dataOut: Buffer.alloc(512, 0xaa) })) as Response;
    expect(r).toMatchObject({ status: CHECK_CONDITION, response: OK, senseLength: 18, len: RESP_SIZE });
    expect(r.sense[2]! & 0x0f).toBe(0x05);
    expect([r.sense[12], r.sense[13]]).toEqual([0x20, 0x00]);
    expect(dev.counters()).toEqual(before);
    expect(rig.device.lunCounters(0, 2)).toEqual({ reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, errors: 0 });
  });

  it('sends deferred opcodes, and everything while not eligible, to JS', async () => {
    rig = await requestRig();
    register(rig, { eligible: false });
    expect(await submit(rig, cdb16(READ16, 0n, 1), { dataIn: 4096 })).toBe('deferred');
    expect(await submit(rig, Buffer.from([WRITE_BUFFER, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toBe('deferred');
    rig.device.updateLun(0, 2, { eligible: true });
    expect(await submit(rig, inquiry(false, 0, 36), { dataIn: 36 })).toBe('deferred');
    expect(await submit(rig, cdb16(READ16, 0n, 1), { dataOut: Buffer.alloc(16), dataIn: 4096 })).toBe('deferred'); // bidirectional
    expect(((await submit(rig, cdb16(READ16, 0n, 1), { dataIn: 4096 })) as Response).status).toBe(GOOD);
    expect(rig.chains).toHaveLength(4);
    expect(rig.device.lunCounters(0, 2)!.reads).toBe(1);
  });

  it('takes only eligible in updateLun, validates the config, and removes with counters', async () => {
    rig = await requestRig();
    register(rig);
    expect(() => rig!.device.updateLun(0, 2, { blockCount: 10 })).toThrow(/only eligible/);
    expect(() =>
      rig!.device.setLun(0, 3, { device: dev, refusedOpcodes: Buffer.alloc(31), deferredOpcodes: Buffer.alloc(32), timeoutMs: 1, eligible: true }),
    ).toThrow(/refusedOpcodes must be a 32-byte Buffer/);
    expect(() =>
      rig!.device.setLun(0, 3, { device: dev, refusedOpcodes: Buffer.alloc(32), deferredOpcodes: Buffer.alloc(32), timeoutMs: 0, eligible: true }),
    ).toThrow(/timeoutMs must be > 0/);
    expect(() =>
      rig!.device.setLun(0, 3, { device: {} as PassthroughDevice, refusedOpcodes: Buffer.alloc(32), deferredOpcodes: Buffer.alloc(32), timeoutMs: 1, eligible: true }),
    ).toThrow(/PassthroughDevice/);
    expect(() => register(rig!)).toThrow(/already registered/);
    await rig.device.drainLun(0, 2);
    expect(await rig.device.removeLun(0, 2)).toEqual({ reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, flushes: 0, errors: 0 });
    expect(rig.device.lunCounters(0, 2)).toBeUndefined();
  });

  it('keeps the device open for a registered LUN after its handle is closed', async () => {
    const own = await native.openPassthrough({ kind: 'iscsi', portal: tgtd.portal, iqn: tgtd.iqn, lun: 1 });
    rig = await requestRig();
    rig.device.setLun(0, 2, { device: own, refusedOpcodes: bitmap(), deferredOpcodes: bitmap(), timeoutMs: 5000, eligible: true });
    own.close();
    expect(((await submit(rig, cdb16(READ16, 0n, 1), { dataIn: 4096 })) as Response).status).toBe(GOOD);
    expect(() => rig!.device.setLun(0, 4, { device: own, refusedOpcodes: bitmap(), deferredOpcodes: bitmap(), timeoutMs: 5000, eligible: true })).toThrow(/closed/);
  });
});

// ---------------------------------------------------------------------------
// A worker round's passthrough commands run together (one executeBatch per
// device), seen through a TCP proxy between libiscsi and tgtd that delays,
// holds back or cuts what the target sends.

interface TargetProxy {
  portal: string;
  /** Delay of every chunk from the target to the initiator. */
  delayMs: number;
  /** While true, nothing from the target reaches the initiator (a hung device). */
  hold: boolean;
  /** Resets every connection and stops accepting new ones (the device vanishes). */
  cut(): void;
}
async function startTargetProxy(port: number, delayMs: number): Promise<TargetProxy> {
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
    client.on('data', (d) => upstream.write(d));
    upstream.on('data', (d) => {
      if (proxy.hold) return;
      setTimeout(() => client.destroyed || client.write(d), proxy.delayMs); // same delay: order kept
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy: TargetProxy = {
    portal: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    delayMs,
    hold: false,
    cut() {
      server.close();
      for (const s of sockets) s.resetAndDestroy();
    },
  };
  return proxy;
}

describe.skipIf(!tgtdAvailable())('passthrough LUNs: a round of commands is in flight at the device together', () => {
  const BLOCK = 4096, COMMANDS = 16, BLOCKS_EACH = 2;
  let tgtd: Tgtd;
  let direct: PassthroughDevice;
  let proxy: TargetProxy | undefined;
  let dev: PassthroughDevice | undefined;
  let rig: Rig | undefined;
  const content = pattern(COMMANDS * BLOCKS_EACH * BLOCK, 11);
  beforeAll(async () => {
    tgtd = await startTgtd({ luns: [{ sizeBytes: 8 * MiB, blockSize: BLOCK }] });
    direct = await native.openPassthrough({ kind: 'iscsi', portal: tgtd.portal, iqn: tgtd.iqn, lun: 1 });
    const w = await direct.execute(cdb16(WRITE16, 0n, COMMANDS * BLOCKS_EACH), { dataOut: content });
    expect(w).toMatchObject({ response: OK, status: GOOD });
  }, 30_000);
  afterEach(() => {
    rig?.close();
    rig = undefined;
    dev?.close();
    dev = undefined;
    proxy?.cut();
    proxy = undefined;
  });
  afterAll(async () => {
    direct?.close();
    await tgtd?.stop();
  });

  /** A rig with LUN 0/2 on a device reached through a proxy delaying the target's answers by `delayMs`. */
  async function proxiedLun(delayMs: number, timeoutMs: number): Promise<Rig> {
    proxy = await startTargetProxy(tgtd.port, delayMs);
    dev = await native.openPassthrough({ kind: 'iscsi', portal: proxy.portal, iqn: tgtd.iqn, lun: 1 }, { timeoutMs: 10_000 });
    const r = await setupRig({ numQueues: 3, queueSize: 64, unconfigured: true, memorySize: 4 * MiB, maxChainBytes: 2 * MiB });
    await r.queue.configure(r.device, REQUEST_QUEUE);
    r.device.setLun(0, 2, { device: dev, refusedOpcodes: bitmap(), deferredOpcodes: bitmap(INQUIRY, 0xa0), timeoutMs, eligible: true });
    return r;
  }
  /** Makes COMMANDS READ(16)s of BLOCKS_EACH blocks (command i at LBA i * BLOCKS_EACH) available with one kick. */
  function submitReads(r: Rig): number[] {
    const heads: number[] = [];
    for (let i = 0; i < COMMANDS; i++) {
      const cdb = cdb16(READ16, BigInt(i * BLOCKS_EACH), BLOCKS_EACH);
      heads.push(r.queue.addChain([{ data: request(0, 2, cdb) }, { writableLength: RESP_SIZE }, { writableLength: BLOCKS_EACH * BLOCK }]));
    }
    r.queue.publishAndKick();
    return heads;
  }
  /** Collects the used elements of `heads` (in any order) within `timeoutMs`. */
  async function collect(r: Rig, heads: number[], timeoutMs: number): Promise<Map<number, Response>> {
    const got = new Map<number, Response>();
    await waitFor(() => {
      for (const u of r.queue.reclaim()) {
        const senseLength = u.data.readUInt32LE(0);
        got.set(u.head, {
          senseLength,
          resid: u.data.readUInt32LE(4),
          status: u.data[10]!,
          response: u.data[11]!,
          sense: u.data.subarray(12, 12 + senseLength),
          data: u.data.subarray(RESP_SIZE),
          len: u.len,
        });
      }
      return got.size === heads.length;
    }, timeoutMs, `${heads.length} completions`);
    expect([...got.keys()].sort((a, b) => a - b)).toEqual([...heads].sort((a, b) => a - b));
    return got;
  }

  it('completes 16 READs with the right data in about one round trip, not sixteen', async () => {
    const DELAY = 100;
    rig = await proxiedLun(DELAY, 10_000);
    const started = Date.now();
    const heads = submitReads(rig);
    const got = await collect(rig, heads, 8000);
    const elapsed = Date.now() - started;
    heads.forEach((head, i) => {
      const r = got.get(head)!;
      expect(r).toMatchObject({ response: OK, status: GOOD, resid: 0, senseLength: 0, len: RESP_SIZE + BLOCKS_EACH * BLOCK });
      const at = i * BLOCKS_EACH * BLOCK;
      expect(r.data.equals(content.subarray(at, at + BLOCKS_EACH * BLOCK))).toBe(true);
    });
    // One at a time, every command waits for its own delayed answer: >= 16 x 100 ms.
    expect(elapsed).toBeLessThan((COMMANDS * DELAY) / 2);
    expect(rig.device.lunCounters(0, 2)).toMatchObject({ reads: COMMANDS, bytesRead: COMMANDS * BLOCKS_EACH * BLOCK, errors: 0 });
    expect(rig.chains).toHaveLength(0);
  });

  it('fails every unfinished command of a batch with TRANSPORT_FAILURE at once when the device vanishes mid-way', async () => {
    rig = await proxiedLun(400, 10_000);
    const heads = submitReads(rig);
    await settle(150); // the commands are at the target; its answers are on their way
    const cutAt = Date.now();
    proxy!.cut();
    const got = await collect(rig, heads, 5000);
    expect(Date.now() - cutAt).toBeLessThan(2000); // far below the 10 s command timeout
    for (const head of heads) {
      // One at a time, only the first would see the connection fail; the
      // next reconnect attempt fails and the rest get BAD_TARGET.
      expect(got.get(head)).toMatchObject({ response: TRANSPORT_FAILURE, status: 0, senseLength: 0, resid: BLOCKS_EACH * BLOCK, len: RESP_SIZE });
    }
    expect(rig.device.lunCounters(0, 2)).toMatchObject({ reads: 0, errors: COMMANDS });
    // The context is broken: the next batch tries one reconnect, which fails, promptly.
    const retriedAt = Date.now();
    const later = await collect(rig, submitReads(rig), 5000);
    for (const r of later.values()) expect(r).toMatchObject({ response: BAD_TARGET, len: RESP_SIZE });
    expect(Date.now() - retriedAt).toBeLessThan(2000);
  }, 30_000);

  it('answers every command of a batch ABORTED when the device stops answering, after the timeout', async () => {
    const TIMEOUT = 1500;
    rig = await proxiedLun(0, TIMEOUT);
    proxy!.hold = true;
    const started = Date.now();
    const heads = submitReads(rig);
    const got = await collect(rig, heads, TIMEOUT + 3000);
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(TIMEOUT - 50);
    expect(elapsed).toBeLessThan(TIMEOUT + 1000);
    for (const head of heads) {
      // One at a time, the second command's reconnect would time out too: BAD_TARGET.
      expect(got.get(head)).toMatchObject({ response: ABORTED, status: 0, resid: BLOCKS_EACH * BLOCK, len: RESP_SIZE });
    }
    expect(rig.device.lunCounters(0, 2)).toMatchObject({ errors: COMMANDS });
  }, 30_000);
});
