// An emulated volume's identity at attach (node.ts): the serial and WWN of
// the volume context (vhba.io/serial, vhba.io/wwn — in a cluster the
// VirtualDisk's status, claim-parameters.ts) when present, derived from the
// volume id when absent; a pinned address already taken on the VM's
// controller is the engine's ALREADY_EXISTS. The engine is a real control
// server over the in-memory engine.
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as csi from '../protos/gen/csi/v1/csi_pb.ts';
import { startControlServer, type ControlServer } from '../hba/control/server.ts';
import { deriveSerial, deriveWwn } from '../operator/identity.ts';
import { createController } from './controller.ts';
import { connectEngine, type EngineClient } from './engine-client.ts';
import { createNode, type NodeVolumeRecord } from './node.ts';
import { MemoryStore } from './store.ts';
import { MemoryEngine } from './testing/memory-engine.ts';
import { ContextKey, parseParameters, type SnapshotRecord, type VolumeRecord } from './volumes.ts';

const ctx = { method: 'test', metadata: undefined as never, peer: 'test' };
const blockCap = { accessMode: { mode: csi.VolumeCapability_AccessMode_Mode.SINGLE_NODE_WRITER }, accessType: { case: 'block' as const, value: {} } };

describe('emulated volume identity at attach', () => {
  const base = mkdtempSync(join(tmpdir(), 'vhba-csi-id-'));
  const engine = new MemoryEngine();
  let control: ControlServer;
  let client: EngineClient;
  let node: ReturnType<typeof createNode>;
  beforeAll(async () => {
    control = await startControlServer(engine, join(base, 'engine.sock'));
    client = connectEngine(control.address);
    node = createNode({ nodeId: 'node-a', maxVolumesPerNode: 0, publishRoot: root, dataDir, socketDir: join(base, 's'), engine: client, records: new MemoryStore<NodeVolumeRecord>() });
  });
  afterAll(async () => { client.close(); await control.close(); rmSync(base, { recursive: true, force: true }); });

  const dataDir = join(base, 'data');
  const root = join(base, 'pub');
  mkdirSync(root, { recursive: true });
  const controller = createController({
    nodeId: 'node-a', dataDir, maxVolumesPerNode: 0, volumes: new MemoryStore<VolumeRecord>(), snapshots: new MemoryStore<SnapshotRecord>(), knownNodes: async () => new Set(['node-a']),
  });

  /** CreateVolume → NodeStage → NodePublish; returns the volume and the publish result ('OK' or the gRPC code and message). */
  async function publish(name: string, parameters: Record<string, string>) {
    const vol = (await controller.createVolume(create(csi.CreateVolumeRequestSchema, { name, volumeCapabilities: [blockCap], capacityRange: { requiredBytes: 1n << 20n }, parameters }), ctx)).volume!;
    const common = { volumeId: vol.volumeId, volumeContext: vol.volumeContext, volumeCapability: blockCap, stagingTargetPath: join(root, `staging-${name}`) };
    await node.nodeStageVolume(create(csi.NodeStageVolumeRequestSchema, common), ctx);
    const result = await node.nodePublishVolume(create(csi.NodePublishVolumeRequestSchema, { ...common, targetPath: join(root, `target-${name}`) }), ctx)
      .then(() => 'OK', (e: grpc.ServiceError) => `${grpc.status[e.code]}: ${e.message}`);
    return { vol: { volumeId: vol.volumeId!, volumeContext: vol.volumeContext ?? {} }, result };
  }
  const lunAt = (controllerId: string, target: number, lun: number) => engine.list().find((c) => c.id === controllerId)?.luns.find((l) => l.target === target && l.lun === lun);

  it('attaches with the context\'s serial, WWN and block sizes at the pinned address', async () => {
    const pinned = { [ContextKey.vm]: 'ns/vm1', [ContextKey.controller]: '1', [ContextKey.target]: '5', [ContextKey.lun]: '3' };
    const { vol, result } = await publish('given', { ...pinned, [ContextKey.serial]: 'VHSTATUSSERIAL01', [ContextKey.wwn]: '0x3ABCDEF012345678', logicalBlockSize: '4096', physicalBlockSize: '4096' });
    expect(result).toBe('OK');
    expect(vol.volumeContext).toMatchObject({ [ContextKey.serial]: 'VHSTATUSSERIAL01', [ContextKey.wwn]: '3abcdef012345678' });
    expect(lunAt('ns/vm1/hba1', 5, 3)?.params).toMatchObject({ serial: 'VHSTATUSSERIAL01', wwn: '3abcdef012345678', logicalBlockSize: 4096, physicalBlockSize: 4096 });

    // The same address pinned again: the engine's ALREADY_EXISTS, passed on; nothing else attached.
    const again = await publish('taken', { ...pinned, [ContextKey.serial]: 'VHOTHER' });
    expect(again.result).toMatch(/^ALREADY_EXISTS: .*target 5 lun 3 of ns\/vm1\/hba1/);
    expect(engine.list().find((c) => c.id === 'ns/vm1/hba1')?.luns).toHaveLength(1);
  });

  it('derives what the context does not give from the volume id (plain CSI use)', async () => {
    const { vol, result } = await publish('plain', { [ContextKey.vm]: 'ns/vm2' });
    expect(result).toBe('OK');
    expect(vol.volumeContext[ContextKey.serial]).toBeUndefined();
    expect(lunAt('ns/vm2/hba0', 0, 0)?.params).toMatchObject({ serial: deriveSerial(vol.volumeId), wwn: deriveWwn(vol.volumeId), logicalBlockSize: 512, physicalBlockSize: 4096 });
    const half = await publish('half', { [ContextKey.vm]: 'ns/vm2', [ContextKey.wwn]: '5000c500abcdef04' });
    expect(lunAt('ns/vm2/hba0', 1, 0)?.params).toMatchObject({ serial: deriveSerial(half.vol.volumeId), wwn: '5000c500abcdef04' });
  });

  it('refuses a malformed identity, and an identity on a passthrough volume', async () => {
    expect(() => parseParameters({ [ContextKey.serial]: 'X'.repeat(21) })).toThrow(/vhba.io\/serial "X{21}" must be printable ASCII .* at most 20 characters/);
    expect(() => parseParameters({ [ContextKey.wwn]: '4000c500abcdef04' })).toThrow(/vhba.io\/wwn "4000c500abcdef04" must be an NAA designator/);
    expect(() => parseParameters({ [ContextKey.hostDevice]: '/dev/sdb', [ContextKey.serial]: 'S1' })).toThrow(/vhba.io\/serial applies only to an emulated volume/);
    const stage = node.nodeStageVolume(create(csi.NodeStageVolumeRequestSchema, {
      volumeId: 'vol-00000000000000000000000000000001', volumeContext: { [ContextKey.backingFile]: join(dataDir, 'x.img'), [ContextKey.serial]: ' lead' }, volumeCapability: blockCap, stagingTargetPath: join(root, 'staging-bad'),
    }), ctx);
    await expect(stage).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(/volume_context vhba.io\/serial " lead"/) });
  });
});
