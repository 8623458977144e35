// Passthrough volumes (deviceType lun, issue 8) through the CSI plugin: the
// controller records the device (no image), validates the keys naming each
// one, refuses what a device cannot do; the node attaches the device with its
// policy at publish and detaches it at the last unpublish. The engine is a
// real control server over DeviceEngine (cmd/testing), which plays devices.
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as csi from '../protos/gen/csi/v1/csi_pb.ts';
import { startControlServer, type ControlServer } from '../hba/control/server.ts';
import { DeviceEngine, deviceIdentity } from '../cmd/testing/device-engine.ts';
import { createController } from './controller.ts';
import { connectEngine, type EngineClient } from './engine-client.ts';
import { createNode, type NodeVolumeRecord } from './node.ts';
import { MemoryStore } from './store.ts';
import { ContextKey, parsePassthrough, passthroughContext, type SnapshotRecord, type VolumeRecord } from './volumes.ts';

const ctx = { method: 'test', metadata: undefined as never, peer: 'test' };
const blockCap = { accessMode: { mode: csi.VolumeCapability_AccessMode_Mode.SINGLE_NODE_WRITER }, accessType: { case: 'block' as const, value: {} } };
const readerCap = { accessMode: { mode: csi.VolumeCapability_AccessMode_Mode.SINGLE_NODE_READER_ONLY }, accessType: { case: 'block' as const, value: {} } };
const createReq = (name: string, parameters: Record<string, string>, extra: MessageInitShape<typeof csi.CreateVolumeRequestSchema> = {}) =>
  create(csi.CreateVolumeRequestSchema, { name, volumeCapabilities: [blockCap], capacityRange: { requiredBytes: 1n << 20n }, parameters, ...extra } as MessageInitShape<typeof csi.CreateVolumeRequestSchema>);

const BY_ID = '/dev/disk/by-id/wwn-0x5000c500abcdef01';
const ISCSI = { [ContextKey.iscsiPortal]: '192.0.2.10', [ContextKey.iscsiIqn]: 'iqn.2003-01.org.example:disk1', [ContextKey.iscsiLun]: '1' };

describe('passthrough volume keys (volumes.ts)', () => {
  it('parses a host device, derives the expected WWN from a by-id path, and round-trips through the context', () => {
    const p = parsePassthrough({ [ContextKey.hostDevice]: BY_ID, [ContextKey.rawio]: 'true' }, 'parameter')!;
    expect(p).toEqual({ source: { kind: 'hostDevice', path: BY_ID }, rawio: true, expectedWwn: '5000c500abcdef01' });
    expect(parsePassthrough(passthroughContext(p), 'volume_context')).toEqual(p);
    // The spec's WWN wins over the path's.
    expect(parsePassthrough({ [ContextKey.hostDevice]: BY_ID, [ContextKey.expectedWwn]: '0x5000C500ABCDEF09' }, 'parameter')?.expectedWwn).toBe('5000c500abcdef09');
    expect(parsePassthrough({ [ContextKey.hostDevice]: '/dev/sg3' }, 'parameter')).toEqual({ source: { kind: 'hostDevice', path: '/dev/sg3' }, rawio: false });
    expect(parsePassthrough({ [ContextKey.vm]: 'vm' }, 'parameter')).toBeUndefined();
  });

  it('gives an iSCSI portal without a port the well-known one (RFC 7143 §13.2)', () => {
    const p = parsePassthrough({ ...ISCSI, [ContextKey.iscsiInitiatorName]: 'iqn.2026-11.io.vhba:n1', [ContextKey.expectedSerial]: 'ZA1' }, 'parameter')!;
    expect(p).toEqual({ source: { kind: 'iscsi', portal: '192.0.2.10:3260', iqn: 'iqn.2003-01.org.example:disk1', lun: 1, initiatorName: 'iqn.2026-11.io.vhba:n1' }, rawio: false, expectedSerial: 'ZA1' });
    expect(parsePassthrough(passthroughContext(p), 'volume_context')).toEqual(p);
    expect(parsePassthrough({ ...ISCSI, [ContextKey.iscsiPortal]: '[2001:db8::1]' }, 'parameter')?.source).toMatchObject({ portal: '[2001:db8::1]:3260' });
    expect(parsePassthrough({ ...ISCSI, [ContextKey.iscsiPortal]: '[2001:db8::1]:3261' }, 'parameter')?.source).toMatchObject({ portal: '[2001:db8::1]:3261' });
  });
});

describe('passthrough volumes: controller and node', () => {
  const base = mkdtempSync(join(tmpdir(), 'vhba-csi-pt-'));
  const engine = new DeviceEngine({
    '/dev/null': deviceIdentity({ serial: 'NULLDEV', wwn: '5000c500abcdef0a', sizeBytes: 8 << 20 }),
    'iscsi://192.0.2.10:3260/iqn.2003-01.org.example:disk1/1': deviceIdentity({ vendor: 'IET     ', product: 'VIRTUAL-DISK    ', serial: 'beaf11', wwn: '', sizeBytes: 64 << 20 }),
  });
  let control: ControlServer;
  let client: EngineClient;
  let n = 0;
  beforeAll(async () => {
    control = await startControlServer(engine, join(base, 'engine.sock'));
    client = connectEngine(control.address);
  });
  afterAll(async () => { client.close(); await control.close(); rmSync(base, { recursive: true, force: true }); });

  function setup() {
    const dir = join(base, `n${++n}`);
    const dataDir = join(dir, 'data');
    const root = join(dir, 'pub');
    mkdirSync(root, { recursive: true });
    const volumes = new MemoryStore<VolumeRecord>();
    const controller = createController({
      nodeId: 'node-a', dataDir, maxVolumesPerNode: 0, volumes, snapshots: new MemoryStore<SnapshotRecord>(),
      knownNodes: async () => new Set(['node-a']), engine: client,
    });
    const node = createNode({
      nodeId: 'node-a', maxVolumesPerNode: 0, publishRoot: root, dataDir, socketDir: join(dir, 's'), engine: client, records: new MemoryStore<NodeVolumeRecord>(),
    });
    return { dataDir, root, volumes, controller, node };
  }

  it('CreateVolume records the device, creates no image, reports capacity 0 (unknown); repeats are idempotent; DeleteVolume removes only the record', async () => {
    const { controller, dataDir, volumes } = setup();
    const params = { [ContextKey.hostDevice]: BY_ID, [ContextKey.rawio]: 'false', [ContextKey.vm]: 'ns/vm1', [ContextKey.target]: '3' };
    const vol = (await controller.createVolume(createReq('pvc-1', params), ctx)).volume!;
    expect(vol.capacityBytes).toBe(0n);
    expect(vol.volumeContext).toEqual({
      [ContextKey.hostDevice]: BY_ID, [ContextKey.rawio]: 'false', [ContextKey.expectedWwn]: '5000c500abcdef01',
      [ContextKey.vm]: 'ns/vm1', [ContextKey.target]: '3', [ContextKey.ioProfile]: 'shared',
    });
    expect(vol.volumeContext![ContextKey.backingFile]).toBeUndefined();
    expect(existsSync(join(dataDir, 'volumes')) ? readdirSync(join(dataDir, 'volumes')) : []).toEqual([]);
    // A range the placeholder does not satisfy is no reason to fail: the size is the device's.
    const again = (await controller.createVolume(createReq('pvc-1', params, { capacityRange: { requiredBytes: 1n << 40n } }), ctx)).volume!;
    expect(again.volumeId).toBe(vol.volumeId);
    await expect(controller.createVolume(createReq('pvc-1', { ...params, [ContextKey.rawio]: 'true' }), ctx)).rejects.toMatchObject({ code: grpc.status.ALREADY_EXISTS });
    const listed = await controller.listVolumes(create(csi.ListVolumesRequestSchema, {}), ctx);
    expect(listed.entries![0]!.status!.volumeCondition).toMatchObject({ abnormal: false, message: expect.stringMatching(/passthrough host device \/dev\/disk\/by-id\/wwn-0x5000c500abcdef01/) });
    await controller.deleteVolume(create(csi.DeleteVolumeRequestSchema, { volumeId: vol.volumeId }), ctx);
    expect(await volumes.list()).toEqual([]);
    expect(existsSync('/dev/null')).toBe(true);
  });

  it('refuses bad keys with INVALID_ARGUMENT naming the key', async () => {
    const { controller } = setup();
    const bad: [Record<string, string>, RegExp][] = [
      [{ [ContextKey.hostDevice]: 'disk/by-id/wwn-0x5000c500abcdef01' }, /parameter vhba.io\/host-device "disk\/by-id\/wwn-0x5000c500abcdef01" must be an absolute path under \/dev\//],
      [{ [ContextKey.hostDevice]: '/dev/../etc/passwd' }, /vhba.io\/host-device .* without "." or ".." segments/],
      [{ [ContextKey.hostDevice]: '/dev/sdb', ...ISCSI }, /vhba.io\/host-device and vhba.io\/iscsi-portal, vhba.io\/iscsi-iqn, vhba.io\/iscsi-lun name two devices/],
      [{ ...ISCSI, [ContextKey.iscsiPortal]: 'bad portal:3260' }, /vhba.io\/iscsi-portal "bad portal:3260" must be host or host:port/],
      [{ ...ISCSI, [ContextKey.iscsiPortal]: 'h:70000' }, /vhba.io\/iscsi-portal "h:70000"/],
      [{ [ContextKey.iscsiPortal]: 'h:3260', [ContextKey.iscsiLun]: '1' }, /vhba.io\/iscsi-iqn is required/],
      [{ ...ISCSI, [ContextKey.iscsiIqn]: 'disk1' }, /vhba.io\/iscsi-iqn "disk1" must be an iSCSI name/],
      [{ ...ISCSI, [ContextKey.iscsiLun]: '16384' }, /vhba.io\/iscsi-lun "16384" must be a whole number from 0 to 16383/],
      [{ ...ISCSI, [ContextKey.iscsiInitiatorName]: 'me' }, /vhba.io\/iscsi-initiator-name "me"/],
      [{ [ContextKey.hostDevice]: '/dev/sdb', [ContextKey.rawio]: 'yes' }, /vhba.io\/rawio "yes" must be "true" or "false"/],
      [{ [ContextKey.hostDevice]: '/dev/sdb', [ContextKey.expectedWwn]: '0x1234' }, /vhba.io\/expected-wwn "0x1234" must be an NAA designator/],
      [{ [ContextKey.hostDevice]: '/dev/sdb', [ContextKey.expectedSerial]: ' pad' }, /vhba.io\/expected-serial " pad" must be printable ASCII/],
      [{ [ContextKey.rawio]: 'true' }, /vhba.io\/rawio applies only to a passthrough volume/],
    ];
    for (const [parameters, message] of bad) {
      await expect(controller.createVolume(createReq('bad', parameters), ctx), JSON.stringify(parameters)).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(message) });
    }
  });

  it('refuses snapshots, clones, expansion and content sources of a passthrough volume with a clear message', async () => {
    const { controller } = setup();
    const vol = (await controller.createVolume(createReq('pt', ISCSI), ctx)).volume!;
    const refusal = { code: grpc.status.FAILED_PRECONDITION, message: expect.stringMatching(/is a passthrough LUN \(iSCSI LUN 1 of iqn.2003-01.org.example:disk1 at 192.0.2.10:3260\)/) };
    await expect(controller.createSnapshot(create(csi.CreateSnapshotRequestSchema, { name: 's', sourceVolumeId: vol.volumeId }), ctx)).rejects.toMatchObject(refusal);
    await expect(controller.controllerExpandVolume(create(csi.ControllerExpandVolumeRequestSchema, { volumeId: vol.volumeId, capacityRange: { requiredBytes: 2n << 30n } }), ctx))
      .rejects.toMatchObject({ ...refusal, message: expect.stringMatching(/capacity is the device's/) });
    const readOnly = await controller.validateVolumeCapabilities(create(csi.ValidateVolumeCapabilitiesRequestSchema, { volumeId: vol.volumeId, volumeCapabilities: [readerCap] }), ctx);
    expect(readOnly.confirmed).toBeUndefined();
    expect(readOnly.message).toMatch(/cannot be attached read-only/);
    expect((await controller.validateVolumeCapabilities(create(csi.ValidateVolumeCapabilitiesRequestSchema, { volumeId: vol.volumeId, volumeCapabilities: [blockCap] }), ctx)).confirmed).toBeDefined();
    await expect(controller.createVolume(createReq('clone', {}, { volumeContentSource: { type: { case: 'volume', value: { volumeId: vol.volumeId } } } }), ctx)).rejects.toMatchObject(refusal);
    const emulated = (await controller.createVolume(createReq('emu', {}), ctx)).volume!;
    await expect(controller.createVolume(createReq('pt-from', ISCSI, { volumeContentSource: { type: { case: 'volume', value: { volumeId: emulated.volumeId } } } }), ctx))
      .rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(/is the device itself and cannot be created from a volume/) });
  });

  it('the node attaches the device at publish (no image, no lease), reports its capacity, detaches at unpublish; refuses read-only and expansion', async () => {
    const { controller, node, root, dataDir } = setup();
    const vol = (await controller.createVolume(createReq('pt-node', { ...ISCSI, [ContextKey.vm]: 'ns/vm2', [ContextKey.rawio]: 'true', [ContextKey.expectedSerial]: 'beaf11' }), ctx)).volume!;
    await controller.controllerPublishVolume(create(csi.ControllerPublishVolumeRequestSchema, { volumeId: vol.volumeId, nodeId: 'node-a', volumeCapability: blockCap }), ctx);
    const req = { volumeId: vol.volumeId, volumeContext: vol.volumeContext, volumeCapability: blockCap };
    const staging = join(root, 'staging');
    const target = join(root, 'target');
    await node.nodeStageVolume(create(csi.NodeStageVolumeRequestSchema, { ...req, stagingTargetPath: staging }), ctx);
    await node.nodeStageVolume(create(csi.NodeStageVolumeRequestSchema, { ...req, stagingTargetPath: staging }), ctx);
    expect(existsSync(join(dataDir, 'volumes')) ? readdirSync(join(dataDir, 'volumes')) : []).toEqual([]); // no lease file
    const staged = await node.nodeGetVolumeStats(create(csi.NodeGetVolumeStatsRequestSchema, { volumeId: vol.volumeId, volumePath: staging }), ctx);
    expect(staged.volumeCondition).toMatchObject({ abnormal: false, message: expect.stringMatching(/staged, not attached/) });

    await expect(node.nodePublishVolume(create(csi.NodePublishVolumeRequestSchema, { ...req, volumeCapability: readerCap, stagingTargetPath: staging, targetPath: join(root, 'ro') }), ctx))
      .rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION, message: expect.stringMatching(/cannot be attached read-only/) });
    await node.nodePublishVolume(create(csi.NodePublishVolumeRequestSchema, { ...req, stagingTargetPath: staging, targetPath: target }), ctx);
    const luns = () => engine.list().filter((c) => c.id === 'ns/vm2/hba0').flatMap((c) => c.luns);
    expect(luns()).toHaveLength(1);
    expect(luns()[0]).toMatchObject({
      target: 0, lun: 0,
      backing: { kind: 'iscsi', portal: '192.0.2.10:3260', iqn: 'iqn.2003-01.org.example:disk1', lun: 1, policy: { rawio: true, expectedSerial: 'beaf11' } },
      device: { serial: 'beaf11', sizeBytes: 64 << 20 },
    });
    expect(luns()[0]!.params).toBeUndefined();
    const stats = await node.nodeGetVolumeStats(create(csi.NodeGetVolumeStatsRequestSchema, { volumeId: vol.volumeId, volumePath: target }), ctx);
    expect(stats.usage!.map((u) => [u.unit, u.total])).toEqual([[csi.VolumeUsage_Unit.BYTES, BigInt(64 << 20)]]);
    expect(stats.volumeCondition).toMatchObject({ abnormal: false, message: expect.stringMatching(/attached to ns\/vm2\/hba0 target 0 lun 0: IET VIRTUAL-DISK serial beaf11/) });
    await expect(node.nodeExpandVolume(create(csi.NodeExpandVolumeRequestSchema, { volumeId: vol.volumeId, volumePath: target }), ctx))
      .rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION, message: expect.stringMatching(/capacity is the device's/) });

    // A second volume of the same device on the same VM never takes over the
    // first one's LUN (the real engine then refuses the device twice:
    // ALREADY_EXISTS, test/e2e/csi-passthrough.test.ts; this double does not).
    const twin = (await controller.createVolume(createReq('pt-twin', { ...ISCSI, [ContextKey.vm]: 'ns/vm2', [ContextKey.rawio]: 'true', [ContextKey.expectedSerial]: 'beaf11' }), ctx)).volume!;
    const twinReq = { volumeId: twin.volumeId, volumeContext: twin.volumeContext, volumeCapability: blockCap, stagingTargetPath: join(root, 'twin-st') };
    await node.nodeStageVolume(create(csi.NodeStageVolumeRequestSchema, twinReq), ctx);
    await node.nodePublishVolume(create(csi.NodePublishVolumeRequestSchema, { ...twinReq, targetPath: join(root, 'twin-t') }), ctx);
    expect(luns().map((l) => `${l.target}:${l.lun}`)).toEqual(['0:0', '1:0']);
    await node.nodeUnpublishVolume(create(csi.NodeUnpublishVolumeRequestSchema, { volumeId: twin.volumeId, targetPath: join(root, 'twin-t') }), ctx);
    expect(luns().map((l) => `${l.target}:${l.lun}`)).toEqual(['0:0']);

    await node.nodeUnpublishVolume(create(csi.NodeUnpublishVolumeRequestSchema, { volumeId: vol.volumeId, targetPath: target }), ctx);
    expect(luns()).toEqual([]);
    await node.nodeUnstageVolume(create(csi.NodeUnstageVolumeRequestSchema, { volumeId: vol.volumeId, stagingTargetPath: staging }), ctx);
    await controller.controllerUnpublishVolume(create(csi.ControllerUnpublishVolumeRequestSchema, { volumeId: vol.volumeId, nodeId: 'node-a' }), ctx);
    await controller.deleteVolume(create(csi.DeleteVolumeRequestSchema, { volumeId: vol.volumeId }), ctx);
  });

  it('a host device must exist on the node at stage; one that does attaches with its path and expected WWN', async () => {
    const { controller, node, root } = setup();
    const missing = (await controller.createVolume(createReq('gone', { [ContextKey.hostDevice]: '/dev/disk/by-id/wwn-0x5000c500deadbeef' }), ctx)).volume!;
    await expect(node.nodeStageVolume(create(csi.NodeStageVolumeRequestSchema, { volumeId: missing.volumeId, volumeContext: missing.volumeContext, volumeCapability: blockCap, stagingTargetPath: join(root, 'm') }), ctx))
      .rejects.toMatchObject({ code: grpc.status.NOT_FOUND, message: expect.stringMatching(/host device \/dev\/disk\/by-id\/wwn-0x5000c500deadbeef does not exist on node node-a/) });
    // The context is checked as the parameters were (a tampered context is refused).
    await expect(node.nodeStageVolume(create(csi.NodeStageVolumeRequestSchema, { volumeId: missing.volumeId, volumeContext: { [ContextKey.hostDevice]: 'sdb' }, volumeCapability: blockCap, stagingTargetPath: join(root, 'm') }), ctx))
      .rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, message: expect.stringMatching(/volume_context vhba.io\/host-device "sdb"/) });

    const vol = (await controller.createVolume(createReq('null', { [ContextKey.hostDevice]: '/dev/null', [ContextKey.expectedWwn]: '5000c500abcdef0a', [ContextKey.vm]: 'ns/vm3' }), ctx)).volume!;
    const req = { volumeId: vol.volumeId, volumeContext: vol.volumeContext, volumeCapability: blockCap, stagingTargetPath: join(root, 'st') };
    await node.nodeStageVolume(create(csi.NodeStageVolumeRequestSchema, req), ctx);
    await node.nodePublishVolume(create(csi.NodePublishVolumeRequestSchema, { ...req, targetPath: join(root, 't') }), ctx);
    expect(engine.list().find((c) => c.id === 'ns/vm3/hba0')?.luns[0]?.backing).toEqual({ kind: 'hostDevice', path: '/dev/null', policy: { rawio: false, expectedWwn: '5000c500abcdef0a' } });
    await node.nodeUnpublishVolume(create(csi.NodeUnpublishVolumeRequestSchema, { volumeId: vol.volumeId, targetPath: join(root, 't') }), ctx);
    expect(engine.list().find((c) => c.id === 'ns/vm3/hba0')?.luns).toEqual([]);
  });
});
