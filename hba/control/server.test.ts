// The control API over a real unix socket, grpc-js client to grpc-js server,
// with the real engine behind it: idempotence exactly as hba.proto promises.
import * as grpc from '@grpc/grpc-js';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createClient, type ServiceClient } from '../../protos/grpc.ts';
import { EngineService } from '../../protos/gen/vhba/hba/v1/hba_pb.ts';
import { FakePassthroughDevice } from '../backends/fake-passthrough-device.ts';
import { createEngine, type VhbaEngineInstance } from '../engine.ts';
import { startControlServer, type ControlServer } from './server.ts';

const logger = pino({ level: 'silent' });
let dir: string;
let engine: VhbaEngineInstance;
let server: ControlServer;
let client: ServiceClient<(typeof EngineService)['method']>;

const params = { sizeBytes: 1n << 20n, logicalBlockSize: 512, physicalBlockSize: 4096, serial: 'CTL0', wwn: '5000000000000abc', readOnly: false, product: '' };

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vhba-control-'));
  engine = createEngine(logger, { openPassthrough: async (address) => new FakePassthroughDevice({ serial: `SER-${address.kind}` }) });
  server = await startControlServer(engine, path.join(dir, 'engine.sock'), logger);
  client = createClient(EngineService, server.address);
  await client.createController({ id: 'vm/hba0', socketPath: path.join(dir, 'vm', 'hba0.sock'), numRequestQueues: 2 });
});

afterEach(async () => {
  client.close();
  await server.close();
  await engine.close();
  await rm(dir, { recursive: true, force: true });
});

async function code(p: Promise<unknown>): Promise<number> {
  return p.then(() => grpc.status.OK, (e: grpc.ServiceError) => e.code);
}

const attach = (over: Partial<typeof params> = {}, lun = 0, file?: string) =>
  client.attachLun({
    controllerId: 'vm/hba0',
    address: { target: 1, lun },
    backing: file ? { case: 'file', value: { path: file } } : { case: 'memory', value: {} },
    parameters: { ...params, ...over },
  });

describe('control API idempotence', () => {
  it('the socket is private (0600)', async () => {
    expect((await stat(path.join(dir, 'engine.sock'))).mode & 0o777).toBe(0o600);
  });

  it('createController: same options → OK, other options → ALREADY_EXISTS', async () => {
    expect(await code(client.createController({ id: 'vm/hba0', socketPath: path.join(dir, 'vm', 'hba0.sock'), numRequestQueues: 2 }))).toBe(grpc.status.OK);
    expect(await code(client.createController({ id: 'vm/hba0', socketPath: path.join(dir, 'vm', 'hba0.sock'), numRequestQueues: 1 }))).toBe(grpc.status.ALREADY_EXISTS);
  });

  it('attachLun: same parameters → OK, different → ALREADY_EXISTS; nothing changes', async () => {
    expect(await code(attach())).toBe(grpc.status.OK);
    expect(await code(attach())).toBe(grpc.status.OK);
    expect(await code(attach({ sizeBytes: 2n << 20n }))).toBe(grpc.status.ALREADY_EXISTS);
    expect(await code(attach({ serial: 'OTHER' }))).toBe(grpc.status.ALREADY_EXISTS);
    expect(await code(attach({ readOnly: true }))).toBe(grpc.status.ALREADY_EXISTS);
    const file = path.join(dir, 'a.img');
    expect(await code(attach({}, 0, file))).toBe(grpc.status.ALREADY_EXISTS);
    const list = await client.listControllers({});
    expect(list.controllers).toHaveLength(1);
    expect(list.controllers[0]!.luns).toHaveLength(1);
    expect(list.controllers[0]!.luns[0]!.parameters).toMatchObject({ sizeBytes: 1n << 20n, serial: 'CTL0', readOnly: false });
  });

  it('detachLun: absent LUN, target or controller → OK', async () => {
    expect(await code(attach())).toBe(grpc.status.OK);
    for (let i = 0; i < 2; i++) expect(await code(client.detachLun({ controllerId: 'vm/hba0', address: { target: 1, lun: 0 } }))).toBe(grpc.status.OK);
    expect(await code(client.detachLun({ controllerId: 'vm/hba0', address: { target: 9, lun: 3 } }))).toBe(grpc.status.OK);
    expect(await code(client.detachLun({ controllerId: 'nope', address: { target: 0, lun: 0 } }))).toBe(grpc.status.OK);
    expect((await client.listControllers({})).controllers[0]!.luns).toEqual([]);
  });

  it('resizeLun: same size → OK, larger → OK, smaller → FAILED_PRECONDITION, absent → NOT_FOUND', async () => {
    await attach();
    const resize = (sizeBytes: bigint, lun = 0) => code(client.resizeLun({ controllerId: 'vm/hba0', address: { target: 1, lun }, sizeBytes }));
    expect(await resize(1n << 20n)).toBe(grpc.status.OK);
    expect(await resize(4n << 20n)).toBe(grpc.status.OK);
    expect(await resize(4n << 20n)).toBe(grpc.status.OK);
    expect(await resize(2n << 20n)).toBe(grpc.status.FAILED_PRECONDITION);
    expect(await resize(4n << 20n, 5)).toBe(grpc.status.NOT_FOUND);
    // After a resize, attaching with the new size is the same LUN.
    expect(await code(attach({ sizeBytes: 4n << 20n }))).toBe(grpc.status.OK);
  });

  it('deleteController: absent → OK', async () => {
    expect(await code(client.deleteController({ id: 'vm/hba0' }))).toBe(grpc.status.OK);
    expect(await code(client.deleteController({ id: 'vm/hba0' }))).toBe(grpc.status.OK);
    expect((await client.listControllers({})).controllers).toEqual([]);
  });

  it('refuses bad requests with INVALID_ARGUMENT naming the field', async () => {
    const err = await attach({ wwn: 'xyz' }).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((err as grpc.ServiceError).details).toMatch(/parameters\.wwn/);
    expect(await code(client.attachLun({ controllerId: 'vm/hba0', address: { target: 256, lun: 0 }, backing: { case: 'memory', value: {} }, parameters: params }))).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('lists per-LUN I/O counters', async () => {
    await attach();
    const port = engine.controller('vm/hba0')!.config.targets(1)!;
    const cdb = Buffer.alloc(32);
    cdb.set([0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0]); // WRITE(10) 8 blocks
    await port.execute(0, { cdb, dataOut: Buffer.alloc(4096), dataInCapacity: 0, tag: 1n }); // POWER ON UA
    await port.execute(0, { cdb, dataOut: Buffer.alloc(4096, 1), dataInCapacity: 0, tag: 2n });
    const lun = (await client.listControllers({ id: 'vm/hba0' })).controllers[0]!.luns[0]!;
    expect(lun).toMatchObject({ writes: 1n, bytesWritten: 4096n, reads: 0n, bytesRead: 0n });
  });
});

describe('passthrough LUNs over the control API', () => {
  const hostDevice = (path: string, passthrough?: { rawio?: boolean; timeoutMs?: number; expectedWwn?: string; expectedSerial?: string }, lun = 2) =>
    client.attachLun({ controllerId: 'vm/hba0', address: { target: 1, lun }, backing: { case: 'hostDevice', value: { path } }, ...(passthrough ? { passthrough } : {}) });

  it('AttachLun returns the device identity; ListControllers reports backing, policy and identity', async () => {
    const res = await hostDevice('/dev/disk/by-id/wwn-0x5000c500a1b2c3d4', { rawio: true, timeoutMs: 9000 });
    expect(res.device).toMatchObject({ peripheralDeviceType: 0, vendor: 'FAKEVEND', serial: 'SER-sg', wwn: '5000c500a1b2c3d4', logicalBlockSize: 512, sizeBytes: 1n << 20n });
    expect(engine.list()[0]!.luns[0]!.backing).toEqual({ kind: 'hostDevice', path: '/dev/disk/by-id/wwn-0x5000c500a1b2c3d4', policy: { rawio: true, timeoutMs: 9000 } });
    // Same request again: OK with the identity; another policy: ALREADY_EXISTS.
    expect((await hostDevice('/dev/disk/by-id/wwn-0x5000c500a1b2c3d4', { rawio: true, timeoutMs: 9000 })).device?.serial).toBe('SER-sg');
    expect(await code(hostDevice('/dev/disk/by-id/wwn-0x5000c500a1b2c3d4', { rawio: false }))).toBe(grpc.status.ALREADY_EXISTS);
    const lun = (await client.listControllers({ id: 'vm/hba0' })).controllers[0]!.luns[0]!;
    expect(lun.hostDevice?.path).toBe('/dev/disk/by-id/wwn-0x5000c500a1b2c3d4');
    expect(lun.iscsi).toBeUndefined();
    expect(lun.passthrough).toMatchObject({ rawio: true, timeoutMs: 9000, expectedWwn: '', expectedSerial: '' });
    expect(lun.device).toMatchObject({ serial: 'SER-sg', wwn: '5000c500a1b2c3d4', product: 'PASSTHRU DISK' });
    expect(lun.parameters).toBeUndefined();
    expect(lun.backingPath).toBe('');
  });

  it('maps iSCSI backings both ways, and an emulated LUN keeps its parameters', async () => {
    await attach();
    const res = await client.attachLun({
      controllerId: 'vm/hba0',
      address: { target: 1, lun: 5 },
      backing: { case: 'iscsi', value: { portal: '127.0.0.1:3260', iqn: 'iqn.2026-11.io.vhba:t1', lun: 1, initiatorName: '' } },
      parameters: params, // ignored for passthrough
    });
    expect(res.device?.serial).toBe('SER-iscsi');
    expect(engine.list()[0]!.luns[1]!.backing).toEqual({ kind: 'iscsi', portal: '127.0.0.1:3260', iqn: 'iqn.2026-11.io.vhba:t1', lun: 1, policy: { rawio: false } });
    const [emulated, iscsi] = (await client.listControllers({ id: 'vm/hba0' })).controllers[0]!.luns;
    expect(emulated!.parameters).toMatchObject({ serial: 'CTL0' });
    expect(emulated!.device).toBeUndefined();
    expect(iscsi!.iscsi).toMatchObject({ portal: '127.0.0.1:3260', iqn: 'iqn.2026-11.io.vhba:t1', lun: 1, initiatorName: '' });
    expect(iscsi!.passthrough).toMatchObject({ rawio: false, timeoutMs: 0 });
    // Emulated LUNs still need parameters.
    expect(await code(client.attachLun({ controllerId: 'vm/hba0', address: { target: 1, lun: 6 }, backing: { case: 'memory', value: {} } }))).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it('refuses bad passthrough requests with INVALID_ARGUMENT, a wrong disk with FAILED_PRECONDITION', async () => {
    const err = await hostDevice('relative/sdb').catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((err as grpc.ServiceError).details).toMatch(/host_device\.path/);
    expect(await code(hostDevice('/dev/sdb', { expectedWwn: '0x5000' }))).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await code(hostDevice('/dev/sdb', { timeoutMs: 4_000_000 }))).toBe(grpc.status.INVALID_ARGUMENT);
    const iscsi = (portal: string, iqn: string) => code(client.attachLun({ controllerId: 'vm/hba0', address: { target: 1, lun: 3 }, backing: { case: 'iscsi', value: { portal, iqn, lun: 0, initiatorName: '' } } }));
    expect(await iscsi('', 'iqn.2026-11.io.vhba:t')).toBe(grpc.status.INVALID_ARGUMENT);
    expect(await iscsi('10.0.0.1:3260', 'not-an-iqn')).toBe(grpc.status.INVALID_ARGUMENT);
    const wrong = await hostDevice('/dev/sdb', { expectedSerial: 'OTHER' }).catch((e: grpc.ServiceError) => e);
    expect((wrong as grpc.ServiceError).code).toBe(grpc.status.FAILED_PRECONDITION);
    expect((wrong as grpc.ServiceError).details).toMatch(/SER-sg.*OTHER/);
    expect(await code(client.resizeLun({ controllerId: 'vm/hba0', address: { target: 1, lun: 2 }, sizeBytes: 1n << 30n }))).toBe(grpc.status.NOT_FOUND);
    await hostDevice('/dev/sdb');
    expect(await code(client.resizeLun({ controllerId: 'vm/hba0', address: { target: 1, lun: 2 }, sizeBytes: 1n << 30n }))).toBe(grpc.status.FAILED_PRECONDITION);
    expect(await code(client.flushLun({ controllerId: 'vm/hba0', address: { target: 1, lun: 2 } }))).toBe(grpc.status.OK);
  });
});
