// A passthrough LUN (deviceType lun, issue 8) through the real CSI plugin:
// `vhba csi --mode all` (cmd/csi.ts) drives the real HBA engine (hba/engine.ts
// behind its control server) which reaches a real iSCSI LUN served by tgtd on
// loopback (test/passthrough/tgtd.ts). No guest: the engine's ListControllers
// is the witness. CreateVolume with the vhba.io/iscsi-* parameters records
// the device (no image) → NodeStage checks it → NodePublish attaches it (the
// engine probes it: ListControllers shows the LUN with the device's identity)
// → a wrong expected identity and the same LUN twice on one controller are
// refused → NodeUnpublish detaches → NodeUnstage, DeleteVolume (the LUN's data
// is untouched).
//
// The node attaches at NodePublish, as for emulated disks (csi/node.ts): the
// VM the LUN belongs to can come from the pod (podInfoOnMount), which only
// NodePublish carries.
//
// The second part is the cluster path: kube-apiserver (test/k8s) with the
// CRD, the real operator creating the claim of a deviceType lun VirtualDisk
// whose source is the tgtd LUN, and the plugin with --state-store kubernetes
// receiving CreateVolume as external-provisioner sends it (only the claim's
// name and namespace): it reads the device from the claim, checked against
// the VirtualDisk (csi/claim-parameters.ts), and the node attaches it at the
// address the operator put in the status.
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCsiStack, startOperatorCluster, type CsiStack, type OperatorCluster } from '../csi/stack.ts';
import { VolumeCapability_AccessMode_Mode as AccessMode, VolumeUsage_Unit } from '../../protos/gen/csi/v1/csi_pb.ts';
import type { LunStatus } from '../../protos/gen/vhba/hba/v1/hba_pb.ts';
import { ContextKey } from '../../csi/volumes.ts';
import { startTgtd, tgtdAvailable, type Tgtd } from '../passthrough/tgtd.ts';
import type { TestApiServer } from '../k8s/apiserver.ts';
import { kubectlOk } from '../k8s/kubectl.ts';
import { missingToolsReason } from '../k8s/tools.ts';
import { kubeClient, listDisks, listPvcs, waitFor } from '../../operator/testing/harness.ts';

const NODE_ID = 'pt-node';
const VM = 'csi-pt/vm1';
const CONTROLLER_ID = `${VM}/hba0`;
const BLOCK = 4096;
const LUN_BYTES = 16 << 20;
const BLOCK_CAP = { accessType: { case: 'block' as const, value: {} }, accessMode: { mode: AccessMode.SINGLE_NODE_WRITER } };


describe.skipIf(!tgtdAvailable())('CSI passthrough volume: vhba csi + real engine + tgtd iSCSI LUN', () => {
  const dir = mkdtempSync('/tmp/vhba-csi-pt-');
  let stack: CsiStack | undefined;
  let tgt: Tgtd;
  let controller: CsiStack['controller'];
  let node: CsiStack['node'];
  let engine: CsiStack['engine'];
  let engineKind = '';

  beforeAll(async () => {
    tgt = await startTgtd({ luns: [{ sizeBytes: LUN_BYTES, blockSize: BLOCK }] });
    stack = await startCsiStack({ dir, nodeId: NODE_ID });
    engineKind = stack.engineKind;
    ({ controller, node, engine } = stack);
  });

  afterAll(async () => {
    stack?.stop();
    await tgt?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const iscsiParams = () => ({ [ContextKey.iscsiPortal]: tgt.portal, [ContextKey.iscsiIqn]: tgt.iqn, [ContextKey.iscsiLun]: String(tgt.luns[0]), [ContextKey.vm]: VM });
  const lunsOfVm = async (): Promise<LunStatus[]> => (await engine.listControllers({})).controllers.filter((c) => c.id === CONTROLLER_ID).flatMap((c) => c.luns);
  const codeOf = (p: Promise<unknown>) => p.then(() => 'OK', (e: grpc.ServiceError) => `${grpc.status[e.code]}: ${e.details}`);

  /** CreateVolume + ControllerPublish + NodeStage; returns the ids and paths. */
  async function stage(name: string, extra: Record<string, string> = {}) {
    const { volume } = await controller.createVolume({ name, volumeCapabilities: [BLOCK_CAP], capacityRange: { requiredBytes: 1n << 20n }, parameters: { ...iscsiParams(), ...extra } });
    const volumeId = volume!.volumeId;
    await controller.controllerPublishVolume({ volumeId, nodeId: NODE_ID, volumeCapability: BLOCK_CAP });
    const staging = join(dir, 'pub', `staging-${name}`);
    await node.nodeStageVolume({ volumeId, volumeContext: volume!.volumeContext, volumeCapability: BLOCK_CAP, stagingTargetPath: staging });
    return { volume: volume!, volumeId, staging, target: join(dir, 'pub', `target-${name}`) };
  }

  async function teardown(v: Awaited<ReturnType<typeof stage>>) {
    await node.nodeUnpublishVolume({ volumeId: v.volumeId, targetPath: v.target });
    await node.nodeUnstageVolume({ volumeId: v.volumeId, stagingTargetPath: v.staging });
    await controller.controllerUnpublishVolume({ volumeId: v.volumeId, nodeId: NODE_ID });
    await controller.deleteVolume({ volumeId: v.volumeId });
  }

  it('CreateVolume → NodeStage → NodePublish attaches the iSCSI LUN with its own identity → NodeUnpublish detaches → DeleteVolume', async () => {
    expect(engineKind).toBe('real');
    const v = await stage('pt-a', { [ContextKey.rawio]: 'false' });
    expect(v.volume.capacityBytes).toBe(0n); // unknown: the device's
    expect(v.volume.volumeContext).toMatchObject({ [ContextKey.iscsiPortal]: tgt.portal, [ContextKey.iscsiIqn]: tgt.iqn, [ContextKey.iscsiLun]: String(tgt.luns[0]), [ContextKey.rawio]: 'false' });
    expect(v.volume.volumeContext[ContextKey.backingFile]).toBeUndefined();
    expect(existsSync(join(dir, 'data', 'volumes')) ? readdirSync(join(dir, 'data', 'volumes')) : []).toEqual([]); // no image, no lease
    expect(await lunsOfVm()).toEqual([]); // staged, not attached

    await node.nodePublishVolume({ volumeId: v.volumeId, volumeContext: v.volume.volumeContext, volumeCapability: BLOCK_CAP, stagingTargetPath: v.staging, targetPath: v.target });
    const [lun, ...more] = await lunsOfVm();
    expect(more).toEqual([]);
    expect(lun!.iscsi).toMatchObject({ portal: tgt.portal, iqn: tgt.iqn, lun: tgt.luns[0] });
    expect(lun!.passthrough).toMatchObject({ rawio: false });
    // The identity is the device's (tgtd's INQUIRY/VPD/READ CAPACITY as the engine probed them).
    expect(lun!.device).toMatchObject({ peripheralDeviceType: 0, logicalBlockSize: BLOCK, sizeBytes: BigInt(LUN_BYTES) });
    expect(lun!.device!.vendor.trim()).toBe('IET');
    const stats = await node.nodeGetVolumeStats({ volumeId: v.volumeId, volumePath: v.target });
    expect(stats.usage.map((u) => [u.unit, u.total])).toEqual([[VolumeUsage_Unit.BYTES, BigInt(LUN_BYTES)]]);
    expect(stats.volumeCondition).toMatchObject({ abnormal: false });
    console.log(`csi-passthrough: attached ${CONTROLLER_ID} ${lun!.address!.target}:${lun!.address!.lun}: ${lun!.device!.vendor.trim()} ${lun!.device!.product.trim()} serial ${JSON.stringify(lun!.device!.serial)} wwn ${JSON.stringify(lun!.device!.wwn)}; ${stats.volumeCondition!.message}`);

    // The same LUN a second time on the same VM controller: the engine's ALREADY_EXISTS, passed on.
    const twice = await stage('pt-twice');
    expect(await codeOf(node.nodePublishVolume({ volumeId: twice.volumeId, volumeContext: twice.volume.volumeContext, volumeCapability: BLOCK_CAP, stagingTargetPath: twice.staging, targetPath: twice.target })))
      .toMatch(/^ALREADY_EXISTS: engine: /);
    expect(await lunsOfVm()).toHaveLength(1);
    await teardown(twice);

    await teardown(v);
    expect(await lunsOfVm()).toEqual([]);
    expect((await controller.listVolumes({})).entries).toEqual([]);
    expect(statSync(tgt.backingPaths[0]!).size).toBe(LUN_BYTES); // DeleteVolume left the device alone
  });

  it('the expected identity is checked at attach: the device\'s own passes, another one is refused', async () => {
    // Learn the device's identity from a first attach.
    const probe = await stage('pt-probe');
    await node.nodePublishVolume({ volumeId: probe.volumeId, volumeContext: probe.volume.volumeContext, volumeCapability: BLOCK_CAP, stagingTargetPath: probe.staging, targetPath: probe.target });
    const device = (await lunsOfVm())[0]!.device!;
    await teardown(probe);
    const own: Record<string, string> = device.wwn !== '' ? { [ContextKey.expectedWwn]: device.wwn } : { [ContextKey.expectedSerial]: device.serial };
    const other: Record<string, string> = device.wwn !== '' ? { [ContextKey.expectedWwn]: '5000c50000000bad' } : { [ContextKey.expectedSerial]: 'NOT-THIS-ONE' };

    const right = await stage('pt-right', own);
    await node.nodePublishVolume({ volumeId: right.volumeId, volumeContext: right.volume.volumeContext, volumeCapability: BLOCK_CAP, stagingTargetPath: right.staging, targetPath: right.target });
    expect((await lunsOfVm())[0]!.passthrough).toMatchObject({ expectedWwn: own[ContextKey.expectedWwn] ?? '', expectedSerial: own[ContextKey.expectedSerial] ?? '' });
    await teardown(right);

    const wrong = await stage('pt-wrong', other);
    expect(await codeOf(node.nodePublishVolume({ volumeId: wrong.volumeId, volumeContext: wrong.volume.volumeContext, volumeCapability: BLOCK_CAP, stagingTargetPath: wrong.staging, targetPath: wrong.target })))
      .toMatch(/^FAILED_PRECONDITION: engine: .*(NOT-THIS-ONE|5000c50000000bad)/);
    expect(await lunsOfVm()).toEqual([]);
    await teardown(wrong);
  });
});

const kubeSkip = missingToolsReason(['kube-apiserver', 'etcd', 'kubectl']);

describe.skipIf(!tgtdAvailable() || kubeSkip !== undefined)(`CSI passthrough volume in a cluster: operator claim → vhba csi (state in the API) → engine${kubeSkip ? ` (skipped: ${kubeSkip})` : ''}`, () => {
  const dir = mkdtempSync('/tmp/vhba-csi-ptk-');
  let stack: CsiStack | undefined;
  let tgt: Tgtd;
  let cluster: TestApiServer | undefined;
  let kube: OperatorCluster | undefined;
  let controller: CsiStack['controller'];
  let node: CsiStack['node'];
  let engine: CsiStack['engine'];

  beforeAll(async () => {
    tgt = await startTgtd({ luns: [{ sizeBytes: LUN_BYTES, blockSize: BLOCK }] });
    kube = await startOperatorCluster();
    cluster = kube.cluster;
    stack = await startCsiStack({ dir, nodeId: NODE_ID, csiArgs: kube.csiArgs });
    expect(stack.engineKind).toBe('real');
    ({ controller, node, engine } = stack);
  });

  afterAll(async () => {
    stack?.stop();
    await kube?.stop();
    await tgt?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a lun VirtualDisk gets a placeholder claim naming its LUN; CreateVolume from that claim attaches the LUN at the status address', async () => {
    const http = kubeClient(cluster!.kubeconfigPath);
    // A disk first, so the lun disk does not get target 0 by chance.
    await kubectlOk(cluster!.kubeconfigPath, ['apply', '-f', '-'], {
      input: `apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: { name: emu }\nspec: { vmName: vm1, capacity: 64Mi, storageClassName: vhba }\n---\n`
        + `apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: { name: san }\nspec: { vmName: vm1, deviceType: lun, source: { iscsi: { portal: "${tgt.portal}", iqn: "${tgt.iqn}", lun: ${tgt.luns[0]} } } }\n`,
    });
    const disk = await waitFor('the lun disk Assigned', async () => (await listDisks(http, 'default')).find((d) => d.metadata.name === 'san' && d.status?.phase === 'Assigned'));
    const claimName = `vhba-${disk.metadata.uid}`;
    const claim = await waitFor(`claim ${claimName}`, async () => (await listPvcs(http, 'default')).find((c) => c.metadata.name === claimName));
    expect(claim.spec).toMatchObject({ volumeMode: 'Block', resources: { requests: { storage: String(1 << 20) } } });
    expect(claim.metadata.annotations).toMatchObject({
      [ContextKey.iscsiPortal]: tgt.portal, [ContextKey.iscsiIqn]: tgt.iqn, [ContextKey.iscsiLun]: String(tgt.luns[0]), [ContextKey.rawio]: 'false',
      'vhba.io/vm': 'vm1', 'vhba.io/target': String(disk.status!.address!.target),
    });

    // As external-provisioner (--extra-create-metadata) calls it: the claim's name and namespace only.
    const { volume } = await controller.createVolume({
      name: 'pvc-san', volumeCapabilities: [BLOCK_CAP], capacityRange: { requiredBytes: 1n << 20n },
      parameters: { 'csi.storage.k8s.io/pvc/name': claimName, 'csi.storage.k8s.io/pvc/namespace': 'default', 'csi.storage.k8s.io/pv/name': 'pvc-san' },
    });
    expect(volume!.capacityBytes).toBe(0n);
    expect(volume!.volumeContext).toMatchObject({ [ContextKey.iscsiPortal]: tgt.portal, [ContextKey.vm]: 'default/vm1', [ContextKey.target]: String(disk.status!.address!.target) });
    const volumeId = volume!.volumeId;
    await controller.controllerPublishVolume({ volumeId, nodeId: NODE_ID, volumeCapability: BLOCK_CAP });
    const staging = join(dir, 'pub', 'staging');
    const target = join(dir, 'pub', 'target');
    await node.nodeStageVolume({ volumeId, volumeContext: volume!.volumeContext, volumeCapability: BLOCK_CAP, stagingTargetPath: staging });
    await node.nodePublishVolume({ volumeId, volumeContext: volume!.volumeContext, volumeCapability: BLOCK_CAP, stagingTargetPath: staging, targetPath: target });
    const luns = async () => (await engine.listControllers({})).controllers.filter((c) => c.id === `default/vm1/hba${disk.status!.address!.controller}`).flatMap((c) => c.luns);
    const [lun, ...more] = await luns();
    expect(more).toEqual([]);
    expect(lun!.address).toMatchObject({ target: disk.status!.address!.target, lun: disk.status!.address!.lun });
    expect(lun!.iscsi).toMatchObject({ portal: tgt.portal, iqn: tgt.iqn, lun: tgt.luns[0] });
    expect(lun!.device).toMatchObject({ logicalBlockSize: BLOCK, sizeBytes: BigInt(LUN_BYTES) });

    await node.nodeUnpublishVolume({ volumeId, targetPath: target });
    expect(await luns()).toEqual([]);
    await node.nodeUnstageVolume({ volumeId, stagingTargetPath: staging });
    await controller.controllerUnpublishVolume({ volumeId, nodeId: NODE_ID });
    await controller.deleteVolume({ volumeId });
    expect((await controller.listVolumes({})).entries).toEqual([]);
  });
});
