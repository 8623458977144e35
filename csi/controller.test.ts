// Controller behaviour beyond csi-sanity: parameter validation messages,
// incompatible re-create, paging tokens, restart survival, thin clones and
// the engine flush before a snapshot of an attached LUN.
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as csi from '../protos/gen/csi/v1/csi_pb.ts';
import { startControlServer, type ControlServer } from '../hba/control/server.ts';
import { createController, type ControllerDeps } from './controller.ts';
import { copyImage } from '../hba/backends/copy.ts';
import { connectEngine, type EngineClient } from './engine-client.ts';
import { DirectoryStore } from './store.ts';
import { MemoryEngine } from './testing/memory-engine.ts';
import type { SnapshotRecord, VolumeRecord } from './volumes.ts';

const ctx = { method: 'test', metadata: undefined as never, peer: 'test' };
const cap = { accessMode: { mode: csi.VolumeCapability_AccessMode_Mode.SINGLE_NODE_WRITER }, accessType: { case: 'block' as const, value: {} } };
const createReq = (name: string, extra: MessageInitShape<typeof csi.CreateVolumeRequestSchema> = {}) =>
  create(csi.CreateVolumeRequestSchema, { name, volumeCapabilities: [cap], capacityRange: { requiredBytes: 8n << 20n }, ...extra } as MessageInitShape<typeof csi.CreateVolumeRequestSchema>);

describe('controller', () => {
  const base = mkdtempSync(join(tmpdir(), 'vhba-ctl-'));
  const engine = new MemoryEngine();
  let control: ControlServer;
  let client: EngineClient;
  let k = 0;
  async function deps(): Promise<ControllerDeps> {
    const dir = join(base, `c${++k}`);
    return {
      nodeId: 'node-a', dataDir: join(dir, 'data'), maxVolumesPerNode: 2, engine: client,
      volumes: await DirectoryStore.open<VolumeRecord>(join(dir, 'state', 'volumes')),
      snapshots: await DirectoryStore.open<SnapshotRecord>(join(dir, 'state', 'snapshots')),
      knownNodes: async () => new Set(['node-a']),
    };
  }
  beforeAll(async () => {
    control = await startControlServer(engine, join(base, 'engine.sock'));
    client = connectEngine(control.address);
  });
  afterAll(async () => { client.close(); await control.close(); rmSync(base, { recursive: true, force: true }); });

  it('rejects bad parameters with a message that says what to fix', async () => {
    const c = createController(await deps());
    const bad: [Record<string, string>, RegExp][] = [
      [{ logicalBlockSize: '1024' }, /logicalBlockSize "1024" is not supported: use "512" or "4096"/],
      [{ logicalBlockSize: '4096', physicalBlockSize: '512' }, /physicalBlockSize "512" must be a power of two from logicalBlockSize \(4096\)/],
      [{ ioProfile: 'fast' }, /ioProfile "fast" is not supported: use "shared" or "dedicated"/],
      [{ colour: 'blue' }, /parameter "colour" is not known; allowed: logicalBlockSize/],
      [{ 'vhba.io/target': '300' }, /vhba.io\/target "300" must be a whole number from 0 to 255/],
      [{ 'vhba.io/vm': '../etc' }, /vhba.io\/vm .* lowercase DNS labels/],
    ];
    for (const [parameters, message] of bad) {
      await expect(c.createVolume(createReq('p', { parameters }), ctx)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(message) });
    }
    await expect(c.createVolume(createReq('p', { capacityRange: { requiredBytes: 10n << 20n, limitBytes: 1n << 20n } }), ctx)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(c.createVolume(createReq('p', { capacityRange: { requiredBytes: 4097n, limitBytes: 5000n } }), ctx)).rejects.toMatchObject({ code: grpc.status.OUT_OF_RANGE });
    const mount = { ...cap, accessType: { case: 'mount' as const, value: { fsType: 'ext4' } } };
    await expect(c.createVolume(createReq('p', { volumeCapabilities: [mount] }), ctx)).rejects.toMatchObject({ message: expect.stringMatching(/creates no file system/) });
  });

  it('answers ALREADY_EXISTS to an incompatible re-create and rounds sizes to the physical block', async () => {
    const c = createController(await deps());
    const v = (await c.createVolume(createReq('pvc', { capacityRange: { requiredBytes: 5000n } }), ctx)).volume!;
    expect(v.capacityBytes).toBe(8192n);
    expect((await c.createVolume(createReq('pvc', { capacityRange: { requiredBytes: 5000n } }), ctx)).volume!.volumeId).toBe(v.volumeId);
    await expect(c.createVolume(createReq('pvc', { capacityRange: { requiredBytes: 1n << 30n } }), ctx)).rejects.toMatchObject({ code: grpc.status.ALREADY_EXISTS });
    await expect(c.createVolume(createReq('pvc', { capacityRange: { requiredBytes: 5000n }, parameters: { ioProfile: 'dedicated' } }), ctx)).rejects.toMatchObject({ code: grpc.status.ALREADY_EXISTS, message: expect.stringMatching(/parameters differ/) });
  });

  it('pages ListVolumes and answers ABORTED to a token it did not issue; state survives a restart', async () => {
    const d = await deps();
    const c = createController(d);
    const ids = [];
    for (const name of ['a', 'b', 'c', 'd', 'e']) ids.push((await c.createVolume(createReq(name), ctx)).volume!.volumeId);
    const p1 = await c.listVolumes(create(csi.ListVolumesRequestSchema, { maxEntries: 2 }), ctx);
    const p2 = await c.listVolumes(create(csi.ListVolumesRequestSchema, { maxEntries: 2, startingToken: p1.nextToken! }), ctx);
    const p3 = await c.listVolumes(create(csi.ListVolumesRequestSchema, { startingToken: p2.nextToken! }), ctx);
    expect(p3.nextToken).toBe('');
    expect([...p1.entries!, ...p2.entries!, ...p3.entries!].map((e) => e.volume!.volumeId)).toEqual([...ids].sort());
    await expect(c.listVolumes(create(csi.ListVolumesRequestSchema, { startingToken: 'invalid-token' }), ctx)).rejects.toMatchObject({ code: grpc.status.ABORTED });
    // Restart: a new controller over the same directories sees the same volumes.
    const again = createController({ ...d, volumes: await DirectoryStore.open(join(d.dataDir, '..', 'state', 'volumes')) });
    expect((await again.listVolumes(create(csi.ListVolumesRequestSchema, {}), ctx)).entries).toHaveLength(5);
    expect((await again.createVolume(createReq('c'), ctx)).volume!.volumeId).toBe(ids[2]);
  });

  it('enforces the per-node volume limit and refuses unknown nodes', async () => {
    const c = createController(await deps());
    const pub = async (name: string, nodeId = 'node-a') => c.controllerPublishVolume(create(csi.ControllerPublishVolumeRequestSchema, {
      volumeId: (await c.createVolume(createReq(name), ctx)).volume!.volumeId!, nodeId, volumeCapability: cap }), ctx);
    await pub('x1');
    await pub('x2');
    await expect(pub('x3')).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    await expect(pub('x4', 'node-zz')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it('flushes an attached LUN in the engine before snapshotting it, and the copy stays thin', async () => {
    const d = await deps();
    const c = createController(d);
    const v = (await c.createVolume(createReq('snapme', { capacityRange: { requiredBytes: 64n << 20n } }), ctx)).volume!;
    const image = v.volumeContext!['scsi.vhba.io/backing-file']!;
    const fh = await open(image, 'r+');
    await fh.write(Buffer.alloc(4096, 7), 0, 4096, 32 << 20);
    await fh.close();
    await engine.createController({ id: 'ns/vm/hba0', socketPath: join(base, 'vm.sock') });
    await engine.attachLun('ns/vm/hba0', { target: 3, lun: 0, backing: { kind: 'file', path: image, sizeBytes: 64 << 20 }, params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: 's', wwn: '3000000000000001', readOnly: false } });
    const before = engine.flushes.length;
    const snap = (await c.createSnapshot(create(csi.CreateSnapshotRequestSchema, { name: 's1', sourceVolumeId: v.volumeId! }), ctx)).snapshot!;
    expect(engine.flushes.slice(before)).toEqual(['ns/vm/hba0:3:0']);
    expect(snap.readyToUse).toBe(true);
    const restored = (await c.createVolume(createReq('restored', { capacityRange: { requiredBytes: 64n << 20n }, volumeContentSource: { type: { case: 'snapshot', value: { snapshotId: snap.snapshotId! } } } }), ctx)).volume!;
    const rpath = restored.volumeContext!['scsi.vhba.io/backing-file']!;
    const st = statSync(rpath);
    expect(st.size).toBe(64 << 20);
    expect(st.blocks * 512).toBeLessThan(1 << 20); // 4 KiB of data, not 64 MiB
    const rfh = await open(rpath, 'r');
    const { buffer } = await rfh.read(Buffer.alloc(4096), 0, 4096, 32 << 20);
    await rfh.close();
    expect(buffer.every((b) => b === 7)).toBe(true);
    await engine.detachLun('ns/vm/hba0', 3, 0);
  });

  it('copyImage keeps holes and data', async () => {
    const dir = join(base, 'copy');
    mkdirSync(dir);
    const src = join(dir, 'src');
    writeFileSync(src, '');
    const fh = await open(src, 'r+');
    await fh.truncate(16 << 20);
    await fh.write(Buffer.from('hello'), 0, 5, (8 << 20) + 3);
    await fh.close();
    const method = await copyImage(src, join(dir, 'dst'));
    expect(['reflink', 'sparse-copy']).toContain(method);
    const st = statSync(join(dir, 'dst'));
    expect(st.size).toBe(16 << 20);
    expect(st.blocks * 512).toBeLessThanOrEqual(2 << 20);
    await expect(copyImage(src, join(dir, 'dst'))).rejects.toMatchObject({ code: 'EEXIST' });
  });
});
