// Passthrough LUNs (issue 8) through the whole engine without a real device:
// the real Engine (native sockets and virtqueues, ScsiTarget, PassthroughUnit,
// hba/backends/passthrough-port.ts) driven by the TS test front-end, with an
// in-memory PassthroughDevice (hba/backends/fake-passthrough-device.ts) in
// place of SG_IO / libiscsi. The native fast path refuses the fake (it is no
// addon object), so every command here takes the JS path; the same checks
// against a real tgtd LUN and the native path are in
// test/e2e/passthrough-iscsi-engine.test.ts.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakePassthroughDevice } from '../../hba/backends/fake-passthrough-device.ts';
import { createEngine, EngineError, type VhbaEngineInstance } from '../../hba/engine.ts';
import type { LunSpec, PassthroughPolicy } from '../../hba/engine-api.ts';
import type { PassthroughAddress } from '../../hba/native/index.ts';
import { decodeLun as decodeReportedLun } from '../../hba/scsi/report-luns.ts';
import { EVENT_INFO_SIZE, EVENT_QUEUE, VirtioScsiFeature } from '../../hba/virtio-scsi/config.ts';
import { EventType, ResetReason } from '../../hba/virtio-scsi/events.ts';
import { Response } from '../../hba/virtio-scsi/framing.ts';
import { TestFrontend } from '../../hba/vhost-user/test-frontend.ts';

const logger = pino({ level: process.env.VHBA_TEST_LOG ?? 'silent' });
const GOOD = 0;
const CHECK_CONDITION = 2;

let dir: string;
let engine: VhbaEngineInstance;
let fe: TestFrontend | undefined;
/** Devices the engine opened, by path, and what it asked for. */
let devices: Map<string, FakePassthroughDevice>;
let opened: { address: PassthroughAddress; timeoutMs: number }[];
/** What the next open of a path does instead of succeeding. */
let openFailures: Map<string, string>;

const memLun: LunSpec = { target: 0, lun: 0, backing: { kind: 'memory', sizeBytes: 1 << 20 }, params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: 'EMU0', wwn: '5000000000000001', readOnly: false } };

function hostLun(target: number, lun: number, devicePath: string, policy: PassthroughPolicy = { rawio: false }): LunSpec {
  return { target, lun, backing: { kind: 'hostDevice', path: devicePath, policy } };
}

/** [sense key, ASC, ASCQ] as "k/asc/ascq" in hex, or 'GOOD'. */
function outcome(r: { status: number; sense: Buffer; response: number }): string {
  if (r.response !== Response.OK) return `response ${r.response}`;
  if (r.status === GOOD) return 'GOOD';
  return `${(r.sense[2]! & 0x0f).toString(16)}/${r.sense[12]!.toString(16)}/${r.sense[13]!.toString(16)}`;
}

function cdb10(op: number, lba: number, blocks: number): number[] {
  return [op, 0, (lba >>> 24) & 0xff, (lba >>> 16) & 0xff, (lba >>> 8) & 0xff, lba & 0xff, 0, (blocks >>> 8) & 0xff, blocks & 0xff, 0];
}

async function connect(): Promise<TestFrontend> {
  fe = TestFrontend.connect(path.join(dir, 'c.sock'));
  await fe.setup({ features: [VirtioScsiFeature.HOTPLUG] });
  const deadline = Date.now() + 2000;
  while (!engine.list()[0]!.connected) {
    if (Date.now() > deadline) throw new Error('engine never saw the connection');
    await new Promise((r) => setTimeout(r, 10));
  }
  return fe;
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(EngineError);
  return { code: (err as EngineError).code, message: (err as EngineError).message };
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vhba-pt-engine-'));
  devices = new Map();
  opened = [];
  openFailures = new Map();
  engine = createEngine(logger, {
    openPassthrough: async (address, options) => {
      opened.push({ address, timeoutMs: options.timeoutMs });
      const key = address.kind === 'sg' ? address.path : `${address.portal}/${address.iqn}/${address.lun}`;
      const failure = openFailures.get(key);
      if (failure) throw new Error(failure);
      const device = devices.get(key) ?? new FakePassthroughDevice({}, { description: key });
      devices.set(key, device);
      return device;
    },
  });
  await engine.createController({ id: 'c', socketPath: path.join(dir, 'c.sock') });
});

afterEach(async () => {
  fe?.close();
  fe = undefined;
  await engine.close();
  await rm(dir, { recursive: true, force: true });
});

describe('a passthrough LUN next to an emulated LUN', () => {
  let disk: FakePassthroughDevice;
  beforeEach(async () => {
    disk = new FakePassthroughDevice({ serial: 'PT-SERIAL-1', wwn: '600a0b80001234560000abcd12345678', logicalBlockSize: 4096, physicalExponent: 0, blockCount: 256 });
    devices.set('/dev/fake-sdb', disk);
    await engine.attachLun('c', memLun);
    const identity = await engine.attachLun('c', hostLun(0, 1, '/dev/fake-sdb', { rawio: false, timeoutMs: 5000 }));
    expect(identity).toEqual({
      peripheralDeviceType: 0, vendor: 'FAKEVEND', product: 'PASSTHRU DISK', revision: '1.0', serial: 'PT-SERIAL-1',
      wwn: '600a0b80001234560000abcd12345678', logicalBlockSize: 4096, physicalBlockSize: 4096, sizeBytes: 256 * 4096,
    });
    expect(opened).toEqual([{ address: { kind: 'sg', path: '/dev/fake-sdb' }, timeoutMs: 5000 }]);
    await connect();
  });

  it('REPORT LUNS (ours, never the device\'s) lists both LUNs', async () => {
    disk.received.length = 0;
    const r = await fe!.command(0, 1, [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0], { dataInLength: 64 });
    expect(outcome(r)).toBe('GOOD');
    expect(r.dataIn.readUInt32BE(0)).toBe(16);
    expect([decodeReportedLun(r.dataIn.subarray(8, 16)), decodeReportedLun(r.dataIn.subarray(16, 24))]).toEqual([0, 1]);
    expect(disk.received.filter((c) => c[0] === 0xa0)).toEqual([]);
  });

  it('INQUIRY, VPD 80h/83h and READ CAPACITY(16) are the device\'s bytes; VPD B0h gets the host path\'s limit', async () => {
    const std = await fe!.command(0, 1, [0x12, 0, 0, 0, 36, 0], { dataInLength: 36 });
    expect(outcome(std)).toBe('GOOD');
    expect(std.dataIn.equals(disk.standardInquiry())).toBe(true);
    for (const page of [0x00, 0x80, 0x83]) {
      const r = await fe!.command(0, 1, [0x12, 1, page, 0, 255, 0], { dataInLength: 255 });
      expect(outcome(r)).toBe('GOOD');
      expect(r.dataIn.equals(disk.vpdPage(page)!)).toBe(true);
    }
    const cap = await fe!.command(0, 1, [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], { dataInLength: 32 });
    expect(outcome(cap)).toBe('GOOD');
    expect(cap.dataIn.equals(disk.readCapacity16())).toBe(true);
    expect(cap.dataIn.readUInt32BE(8)).toBe(4096); // a 4096-byte device stays 4096
    const limits = await fe!.command(0, 1, [0x12, 1, 0xb0, 0, 64, 0], { dataInLength: 64 });
    const expected = Buffer.from(disk.vpdPage(0xb0)!);
    expected.writeUInt32BE(disk.maxTransferBytes / 4096, 8); // MAXIMUM TRANSFER LENGTH
    expected.writeUInt32BE(disk.maxTransferBytes / 4096, 12); // OPTIMAL, not above it
    expect(limits.dataIn.equals(expected)).toBe(true);
    // The emulated LUN keeps its own identity.
    const emu = await fe!.command(0, 0, [0x12, 1, 0x80, 0, 255, 0], { dataInLength: 255 });
    expect(emu.dataIn.subarray(4).toString().trim()).toBe('EMU0');
  });

  it('reads and writes reach the device and are counted in list()', async () => {
    const data = Buffer.alloc(2 * 4096);
    for (let i = 0; i < data.length; i++) data[i] = (i * 13) & 0xff;
    expect(outcome(await fe!.command(0, 1, cdb10(0x2a, 5, 2), { dataOut: data }))).toBe('GOOD');
    expect(disk.data.subarray(5 * 4096, 7 * 4096).equals(data)).toBe(true);
    const r = await fe!.command(0, 1, cdb10(0x28, 5, 2), { dataInLength: data.length });
    expect(outcome(r)).toBe('GOOD');
    expect(r.dataIn.equals(data)).toBe(true);
    // The device's own CHECK CONDITION comes back unchanged.
    expect(outcome(await fe!.command(0, 1, cdb10(0x28, 1000, 1), { dataInLength: 4096 }))).toBe('5/21/0');
    const info = engine.list()[0]!.luns.find((l) => l.lun === 1)!;
    expect(info).toMatchObject({ reads: 1, writes: 1, bytesRead: 8192, bytesWritten: 8192, backing: { kind: 'hostDevice', path: '/dev/fake-sdb' } });
    expect(info.device).toMatchObject({ serial: 'PT-SERIAL-1', logicalBlockSize: 4096 });
    expect(info.params).toBeUndefined();
  });

  it('a refused opcode gets ILLEGAL REQUEST and never reaches the device; rawio lets it through', async () => {
    disk.received.length = 0;
    expect(outcome(await fe!.command(0, 1, [0x3b, 0x05, 0, 0, 0, 0, 0, 0, 0x10, 0], { dataOut: Buffer.alloc(16) }))).toBe('5/20/0'); // WRITE BUFFER
    expect(outcome(await fe!.command(0, 1, [0x85, 0x08, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xec, 0], { dataInLength: 512 }))).toBe('5/20/0'); // ATA PASS-THROUGH(16) IDENTIFY
    expect(outcome(await fe!.command(0, 1, [0xc5, 0, 0, 0, 0, 0]))).toBe('5/20/0'); // vendor-specific
    expect(disk.received).toEqual([]);
    const raw = new FakePassthroughDevice({ wwn: '5000c500a1b2c3d5' });
    devices.set('/dev/fake-raw', raw);
    await engine.attachLun('c', hostLun(0, 2, '/dev/fake-raw', { rawio: true }));
    await fe!.command(0, 2, [0x3b, 0x05, 0, 0, 0, 0, 0, 0, 0x10, 0], { dataOut: Buffer.alloc(16) });
    expect(raw.received.map((c) => c[0])).toContain(0x3b);
    expect(raw.received.find((c) => c[0] === 0x3b)!.length).toBe(10); // sent at its own length, not the 32-byte CDB area
  });

  it('a command that does not complete at the device gets the virtio-scsi response code', async () => {
    disk.failNext(Response.BAD_TARGET);
    const r = await fe!.command(0, 1, cdb10(0x28, 0, 1), { dataInLength: 4096 });
    expect(r.response).toBe(Response.BAD_TARGET);
    expect(r.status).toBe(0);
    expect(r.sense.length).toBe(0);
    disk.failNext(Response.ABORTED);
    expect((await fe!.command(0, 1, [0, 0, 0, 0, 0, 0])).response).toBe(Response.ABORTED);
    expect(outcome(await fe!.command(0, 1, [0, 0, 0, 0, 0, 0]))).toBe('GOOD');
  });

  it('hotplug: attach raises TRANSPORT_RESET/RESCAN; adding a LUN raises REPORTED LUNS DATA HAS CHANGED on the passthrough LUN', async () => {
    const event = fe!.submit(EVENT_QUEUE, Buffer.alloc(0), EVENT_INFO_SIZE);
    await new Promise((r) => setTimeout(r, 50)); // the buffer is posted before the event
    devices.set('/dev/fake-sdc', new FakePassthroughDevice({ wwn: '5000c500a1b2c3d6' }));
    await engine.attachLun('c', hostLun(0, 3, '/dev/fake-sdc'));
    const { written } = await event;
    expect(written.readUInt32LE(0)).toBe(EventType.TRANSPORT_RESET);
    expect([...written.subarray(4, 8)]).toEqual([1, 0, 0, 3]);
    expect(written.readUInt32LE(12)).toBe(ResetReason.RESCAN);
    disk.received.length = 0;
    expect(outcome(await fe!.command(0, 1, [0, 0, 0, 0, 0, 0]))).toBe('6/3f/e');
    expect(outcome(await fe!.command(0, 1, [0, 0, 0, 0, 0, 0]))).toBe('GOOD');
    expect(disk.received.map((c) => c[0])).toEqual([0x00]); // the unit attention was ours, not the device's
  });

  it('detach with a command blocked in the device: the command completes, the device closes, later commands get the target\'s answer', async () => {
    disk.holdOpcode(0x28);
    const blocked = fe!.command(0, 1, cdb10(0x28, 0, 1), { dataInLength: 4096, tag: 77n });
    await disk.waitHeld();
    let detached = false;
    const detach = engine.detachLun('c', 0, 1).then(() => (detached = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(detached).toBe(false); // waits for the command in the device
    expect(disk.closed).toBe(false);
    disk.releaseHeld();
    await detach;
    expect(outcome(await blocked)).toBe('GOOD');
    expect(disk.closed).toBe(true);
    expect(outcome(await fe!.command(0, 1, [0, 0, 0, 0, 0, 0]))).toBe('5/25/0'); // LOGICAL UNIT NOT SUPPORTED
    expect(engine.list()[0]!.luns.map((l) => l.lun)).toEqual([0]);
    // The emulated LUN is untouched (its unit attentions first).
    let r = await fe!.command(0, 0, cdb10(0x28, 0, 1), { dataInLength: 512 });
    while (r.status === CHECK_CONDITION && (r.sense[2]! & 0x0f) === 6) r = await fe!.command(0, 0, cdb10(0x28, 0, 1), { dataInLength: 512 });
    expect(outcome(r)).toBe('GOOD');
  });

  it('resize and snapshot are refused with a reason; flush is SYNCHRONIZE CACHE at the device', async () => {
    const resize = await codeOf(engine.resizeLun('c', 0, 1, 4 << 20));
    expect(resize.code).toBe('FAILED_PRECONDITION');
    expect(resize.message).toMatch(/capacity of a passthrough LUN is the device's/);
    const snap = await codeOf(engine.snapshotLun('c', 0, 1, path.join(dir, 'snap.img')));
    expect(snap.code).toBe('FAILED_PRECONDITION');
    expect(snap.message).toMatch(/passthrough LUN/);
    disk.received.length = 0;
    await engine.flushLun('c', 0, 1);
    expect(disk.received.map((c) => [...c])).toEqual([[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]]);
    disk.failNext(Response.BAD_TARGET);
    expect((await codeOf(engine.flushLun('c', 0, 1))).code).toBe('UNAVAILABLE');
  });

  it('re-attach with the same spec returns the identity without reopening; the same device twice is ALREADY_EXISTS', async () => {
    const again = await engine.attachLun('c', hostLun(0, 1, '/dev/fake-sdb', { rawio: false, timeoutMs: 5000 }));
    expect(again).toMatchObject({ serial: 'PT-SERIAL-1' });
    expect(opened).toHaveLength(1);
    expect((await codeOf(engine.attachLun('c', hostLun(0, 1, '/dev/fake-sdb', { rawio: true })))).code).toBe('ALREADY_EXISTS');
    const twice = await codeOf(engine.attachLun('c', hostLun(1, 0, '/dev/fake-sdb')));
    expect(twice.code).toBe('ALREADY_EXISTS');
    expect(twice.message).toMatch(/already target 0 lun 1/);
    expect(opened).toHaveLength(1);
  });
});

describe('attach failures', () => {
  it('an identity other than the expected one is refused, and the device closed', async () => {
    const disk = new FakePassthroughDevice({ serial: 'REAL-SERIAL', wwn: '5000c500a1b2c3d4' });
    devices.set('/dev/fake-sdd', disk);
    const wwn = await codeOf(engine.attachLun('c', hostLun(0, 0, '/dev/fake-sdd', { rawio: false, expectedWwn: '5000c500ffffffff' })));
    expect(wwn.code).toBe('FAILED_PRECONDITION');
    expect(wwn.message).toContain('5000c500a1b2c3d4');
    expect(wwn.message).toContain('5000c500ffffffff');
    expect(disk.closed).toBe(true);
    disk.closed = false;
    const serial = await codeOf(engine.attachLun('c', hostLun(0, 0, '/dev/fake-sdd', { rawio: false, expectedSerial: 'OTHER' })));
    expect(serial.code).toBe('FAILED_PRECONDITION');
    expect(serial.message).toMatch(/REAL-SERIAL.*OTHER/);
    expect(engine.list()[0]!.luns).toEqual([]);
    disk.closed = false;
    await engine.attachLun('c', hostLun(0, 0, '/dev/fake-sdd', { rawio: false, expectedWwn: '5000c500a1b2c3d4', expectedSerial: 'REAL-SERIAL' }));
    expect(engine.list()[0]!.luns).toHaveLength(1);
  });

  it('open errors keep the native message and get a code saying whether retrying helps', async () => {
    openFailures.set('/dev/vda', '/dev/vda is not a SCSI device: SG_IO not supported (virtio-blk and NVMe disks cannot be passed through; use deviceType disk)');
    openFailures.set('/dev/disk/by-id/gone', '/dev/disk/by-id/gone: no such file');
    openFailures.set('192.0.2.1:3260/iqn.2001-04.com.example:t/0', 'iSCSI 192.0.2.1:3260 target iqn.2001-04.com.example:t lun 0: no login within 3000 ms');
    const vda = await codeOf(engine.attachLun('c', hostLun(0, 0, '/dev/vda')));
    expect(vda).toEqual({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('SG_IO not supported') });
    expect((await codeOf(engine.attachLun('c', hostLun(0, 0, '/dev/disk/by-id/gone')))).code).toBe('FAILED_PRECONDITION');
    const iscsi: LunSpec = { target: 0, lun: 0, backing: { kind: 'iscsi', portal: '192.0.2.1:3260', iqn: 'iqn.2001-04.com.example:t', lun: 0, policy: { rawio: false, timeoutMs: 3000 } } };
    const unreachable = await codeOf(engine.attachLun('c', iscsi));
    expect(unreachable.code).toBe('UNAVAILABLE');
    expect(unreachable.message).toMatch(/no login within 3000 ms/);
    // libiscsi's words for a failed TCP connect, and for a login the target refused:
    openFailures.set('192.0.2.1:3260/iqn.2001-04.com.example:t/0', 'iSCSI 192.0.2.1:3260 target iqn.2001-04.com.example:t lun 0: login failed: iscsi_service_reconnect_if_loggedin. Can not reconnect right now.');
    expect((await codeOf(engine.attachLun('c', iscsi))).code).toBe('UNAVAILABLE');
    openFailures.set('192.0.2.1:3260/iqn.2001-04.com.example:t/0', 'iSCSI 192.0.2.1:3260 target iqn.2001-04.com.example:t lun 0: login failed: Failed to log in to target. Status: Target not found(515)');
    expect((await codeOf(engine.attachLun('c', iscsi))).code).toBe('FAILED_PRECONDITION');
  });

  it('a device without a logical unit, or one that fails the probe, is refused and closed', async () => {
    const absent = new FakePassthroughDevice();
    absent.standardInquiry = () => Buffer.concat([Buffer.from([0x7f]), Buffer.alloc(35)]); // qualifier 011b
    devices.set('/dev/fake-empty', absent);
    expect((await codeOf(engine.attachLun('c', hostLun(0, 0, '/dev/fake-empty')))).code).toBe('FAILED_PRECONDITION');
    expect(absent.closed).toBe(true);
    const gone = new FakePassthroughDevice();
    gone.failNext(Response.BAD_TARGET);
    devices.set('/dev/fake-gone', gone);
    expect((await codeOf(engine.attachLun('c', hostLun(0, 0, '/dev/fake-gone')))).code).toBe('UNAVAILABLE');
    expect(gone.closed).toBe(true);
  });

  it('checks the spec: params only for emulated backings, a sane policy', async () => {
    const { params: _p, ...noParams } = memLun;
    expect((await codeOf(engine.attachLun('c', noParams))).code).toBe('INVALID_ARGUMENT');
    expect((await codeOf(engine.attachLun('c', { ...hostLun(0, 0, '/dev/fake-x'), params: memLun.params }))).code).toBe('INVALID_ARGUMENT');
    expect((await codeOf(engine.attachLun('c', hostLun(0, 0, 'dev/relative')))).code).toBe('INVALID_ARGUMENT');
    expect((await codeOf(engine.attachLun('c', hostLun(0, 0, '/dev/fake-x', { rawio: false, expectedWwn: 'nope' })))).code).toBe('INVALID_ARGUMENT');
    expect((await codeOf(engine.attachLun('c', hostLun(0, 0, '/dev/fake-x', { rawio: false, timeoutMs: -1 })))).code).toBe('INVALID_ARGUMENT');
    expect(opened).toEqual([]);
  });
});
