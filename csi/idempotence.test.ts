// Property tests: CSI calls repeated any number of times have the effect of
// one (CSI spec "Idempotency"), for CreateVolume / DeleteVolume,
// ControllerPublish / Unpublish and the node's Stage / Publish chain, which
// here drives a real engine control server over an in-memory engine.
import { create } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as csi from '../protos/gen/csi/v1/csi_pb.ts';
import { startControlServer, type ControlServer } from '../hba/control/server.ts';
import { createController } from './controller.ts';
import { connectEngine, type EngineClient } from './engine-client.ts';
import { createNode, type NodeVolumeRecord } from './node.ts';
import { MemoryStore } from './store.ts';
import { MemoryEngine } from './testing/memory-engine.ts';
import type { SnapshotRecord, VolumeRecord } from './volumes.ts';

const ctx = { method: 'test', metadata: undefined as never, peer: 'test' };
const mountCap = { accessMode: { mode: csi.VolumeCapability_AccessMode_Mode.SINGLE_NODE_WRITER }, accessType: { case: 'mount' as const, value: {} } };

describe('idempotence', () => {
  const base = mkdtempSync(join(tmpdir(), 'vhba-idem-'));
  const engine = new MemoryEngine();
  let control: ControlServer;
  let client: EngineClient;
  beforeAll(async () => {
    control = await startControlServer(engine, join(base, 'engine.sock'));
    client = connectEngine(control.address);
  });
  afterAll(async () => {
    client.close();
    await control.close();
    rmSync(base, { recursive: true, force: true });
  });

  let n = 0;
  function controller() {
    const dataDir = join(base, `data-${++n}`);
    return createController({
      nodeId: 'node-a', dataDir, maxVolumesPerNode: 0, volumes: new MemoryStore<VolumeRecord>(), snapshots: new MemoryStore<SnapshotRecord>(),
      knownNodes: async () => new Set(['node-a']),
    });
  }

  it('CreateVolume repeated returns the same volume; DeleteVolume repeated is OK', async () => {
    const op = fc.record({
      kind: fc.constantFrom('create', 'delete'),
      name: fc.constantFrom('pvc-a', 'pvc-b', 'pvc-c'),
      repeat: fc.integer({ min: 1, max: 3 }),
    });
    await fc.assert(fc.asyncProperty(fc.array(op, { maxLength: 12 }), fc.integer({ min: 1, max: 64 }), async (ops, mib) => {
      const c = controller();
      const model = new Map<string, string>(); // name → id
      for (const o of ops) {
        const ids = new Set<string>();
        for (let i = 0; i < o.repeat; i++) {
          if (o.kind === 'create') {
            const req = create(csi.CreateVolumeRequestSchema, { name: o.name, volumeCapabilities: [mountCap], capacityRange: { requiredBytes: BigInt(mib) << 20n }, parameters: { logicalBlockSize: '4096' } });
            const res = await c.createVolume(req, ctx);
            ids.add(res.volume!.volumeId!);
            expect(res.volume!.capacityBytes).toBe(BigInt(mib) << 20n);
          } else {
            const id = model.get(o.name) ?? 'vol-00000000000000000000000000000000';
            await c.deleteVolume(create(csi.DeleteVolumeRequestSchema, { volumeId: id }), ctx);
          }
        }
        if (o.kind === 'create') {
          expect(ids.size).toBe(1);
          const id = [...ids][0]!;
          if (model.has(o.name)) expect(id).toBe(model.get(o.name));
          model.set(o.name, id);
        } else {
          model.delete(o.name);
        }
      }
      const listed = (await c.listVolumes(create(csi.ListVolumesRequestSchema, {}), ctx)).entries!.map((e) => e.volume!.volumeId).sort();
      expect(listed).toEqual([...model.values()].sort());
    }), { numRuns: 25 });
  });

  it('ControllerPublish / Unpublish repeated have the effect of one call', async () => {
    await fc.assert(fc.asyncProperty(fc.array(fc.record({ publish: fc.boolean(), repeat: fc.integer({ min: 1, max: 3 }) }), { maxLength: 8 }), async (ops) => {
      const c = controller();
      const vol = (await c.createVolume(create(csi.CreateVolumeRequestSchema, { name: 'v', volumeCapabilities: [mountCap], capacityRange: { requiredBytes: 1n << 20n } }), ctx)).volume!;
      for (const o of ops) {
        for (let i = 0; i < o.repeat; i++) {
          if (o.publish) {
            const res = await c.controllerPublishVolume(create(csi.ControllerPublishVolumeRequestSchema, { volumeId: vol.volumeId!, nodeId: 'node-a', volumeCapability: mountCap }), ctx);
            expect(res.publishContext).toEqual({ 'scsi.vhba.io/readonly': 'false' });
          } else {
            await c.controllerUnpublishVolume(create(csi.ControllerUnpublishVolumeRequestSchema, { volumeId: vol.volumeId!, nodeId: 'node-a' }), ctx);
          }
        }
        const published = o.publish;
        const got = await c.controllerGetVolume(create(csi.ControllerGetVolumeRequestSchema, { volumeId: vol.volumeId! }), ctx);
        expect(got.status!.publishedNodeIds).toEqual(published ? ['node-a'] : []);
      }
    }), { numRuns: 25 });
  });

  it('NodeStage / NodePublish / NodeUnpublish / NodeUnstage repeated attach the LUN once and detach it once', async () => {
    const c = controller();
    const dataDir = join(base, `data-${n}`);
    const root = join(base, `pub-${n}`);
    mkdirSync(root);
    const node = createNode({
      nodeId: 'node-a', maxVolumesPerNode: 0, publishRoot: root, dataDir, socketDir: join(base, 'sockets'), engine: client,
      records: new MemoryStore<NodeVolumeRecord>(),
    });
    let k = 0;
    await fc.assert(fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 4, maxLength: 4 }), async ([stage, publish, unpublish, unstage]) => {
      const vol = (await c.createVolume(create(csi.CreateVolumeRequestSchema, { name: `n${++k}`, volumeCapabilities: [mountCap], capacityRange: { requiredBytes: 1n << 20n } }), ctx)).volume!;
      const base = { volumeId: vol.volumeId!, volumeContext: vol.volumeContext! };
      const staging = join(root, `staging-${k}`);
      const target = join(root, `target-${k}`);
      const luns = () => engine.list().flatMap((x) => x.luns).filter((l) => l.backing.kind === 'file' && l.backing.path === vol.volumeContext!['scsi.vhba.io/backing-file']);
      for (let i = 0; i < stage!; i++) await node.nodeStageVolume(create(csi.NodeStageVolumeRequestSchema, { ...base, stagingTargetPath: staging, volumeCapability: mountCap }), ctx);
      for (let i = 0; i < publish!; i++) await node.nodePublishVolume(create(csi.NodePublishVolumeRequestSchema, { ...base, stagingTargetPath: staging, targetPath: target, volumeCapability: mountCap }), ctx);
      expect(luns()).toHaveLength(1);
      for (let i = 0; i < unpublish!; i++) await node.nodeUnpublishVolume(create(csi.NodeUnpublishVolumeRequestSchema, { volumeId: vol.volumeId!, targetPath: target }), ctx);
      expect(luns()).toHaveLength(0);
      for (let i = 0; i < unstage!; i++) await node.nodeUnstageVolume(create(csi.NodeUnstageVolumeRequestSchema, { volumeId: vol.volumeId!, stagingTargetPath: staging }), ctx);
      await c.deleteVolume(create(csi.DeleteVolumeRequestSchema, { volumeId: vol.volumeId! }), ctx);
    }), { numRuns: 15 });
  });
});
