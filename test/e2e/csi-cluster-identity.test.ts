// An emulated VirtualDisk in a cluster is what its status says (issue 6's
// promise): kube-apiserver (test/k8s) with the CRD, the real operator
// planning the disk's address and identity into its status and its claim's
// annotations, and the real CSI plugin (`vhba csi --mode all --state-store
// kubernetes`, cmd/csi.ts) receiving CreateVolume as external-provisioner
// sends it (only the claim's name and namespace, --extra-create-metadata):
// the plugin reads the claim, checks it against the VirtualDisk's status
// (csi/claim-parameters.ts), and NodePublish attaches the image to the real
// engine (hba/engine.ts behind its control server) at status.address with
// status.serial, status.wwn and the spec's block sizes. The engine's
// ListControllers is the witness: the VPD 80h/83h the guest reads are those
// parameters, so status.guestDevicePaths (operator/guest-paths.ts) are the
// guest's by-id names. A second volume from the same claim finds its pinned
// address taken: the engine's ALREADY_EXISTS.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCsiStack, startOperatorCluster, type CsiStack, type OperatorCluster } from '../csi/stack.ts';
import { VolumeCapability_AccessMode_Mode as AccessMode } from '../../protos/gen/csi/v1/csi_pb.ts';
import { ContextKey } from '../../csi/volumes.ts';
import { predictGuestPaths } from '../../operator/guest-paths.ts';
import type { TestApiServer } from '../k8s/apiserver.ts';
import { kubectlOk } from '../k8s/kubectl.ts';
import { missingToolsReason } from '../k8s/tools.ts';
import { kubeClient, listDisks, listPvcs, waitFor } from '../../operator/testing/harness.ts';

const NODE_ID = 'id-node';
const BLOCK_CAP = { accessType: { case: 'block' as const, value: {} }, accessMode: { mode: AccessMode.SINGLE_NODE_WRITER } };


const kubeSkip = missingToolsReason(['kube-apiserver', 'etcd', 'kubectl']);

describe.skipIf(kubeSkip !== undefined)(`emulated VirtualDisk in a cluster: operator status → claim → vhba csi → engine shows the status identity${kubeSkip ? ` (skipped: ${kubeSkip})` : ''}`, () => {
  const dir = mkdtempSync('/tmp/vhba-csi-id-');
  let stack: CsiStack | undefined;
  let cluster: TestApiServer | undefined;
  let kube: OperatorCluster | undefined;
  let controller: CsiStack['controller'];
  let node: CsiStack['node'];
  let engine: CsiStack['engine'];

  beforeAll(async () => {
    kube = await startOperatorCluster();
    cluster = kube.cluster;
    stack = await startCsiStack({ dir, nodeId: NODE_ID, csiArgs: kube.csiArgs });
    expect(stack.engineKind).toBe('real');
    ({ controller, node, engine } = stack);
  });

  afterAll(async () => {
    stack?.stop();
    await kube?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('CreateVolume from the operator\'s claim → NodePublish attaches the LUN at status.address with status.serial, status.wwn and the spec\'s block sizes', async () => {
    const http = kubeClient(cluster!.kubeconfigPath);
    // Two disks on one VM, so the second's address and identity are not the defaults by chance.
    await kubectlOk(cluster!.kubeconfigPath, ['apply', '-f', '-'], {
      input: 'apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: { name: boot }\nspec: { vmName: vm1, capacity: 64Mi, storageClassName: vhba }\n---\n'
        + 'apiVersion: vhba.io/v1alpha1\nkind: VirtualDisk\nmetadata: { name: data }\nspec: { vmName: vm1, capacity: 32Mi, storageClassName: vhba, logicalBlockSize: 4096, physicalBlockSize: 4096 }\n',
    });
    const assigned = async (name: string) => waitFor(`disk ${name} Assigned`, async () => (await listDisks(http, 'default')).find((d) => d.metadata.name === name && d.status?.phase === 'Assigned'));
    const boot = await assigned('boot');
    const data = await assigned('data');
    const status = data.status!;
    expect(status.address).toBeDefined();
    expect(`${status.address!.target}:${status.address!.lun}`).not.toBe(`${boot.status!.address!.target}:${boot.status!.address!.lun}`);
    const claimName = `vhba-${data.metadata.uid}`;
    const claim = await waitFor(`claim ${claimName}`, async () => (await listPvcs(http, 'default')).find((c) => c.metadata.name === claimName));
    expect(claim.metadata.annotations).toMatchObject({ [ContextKey.serial]: status.serial, [ContextKey.wwn]: status.wwn });
    const requestBytes = 32n << 20n; // the claim asks for the capacity
    expect([String(requestBytes), '32Mi']).toContain(claim.spec.resources?.requests?.storage);

    // As external-provisioner (--extra-create-metadata) calls it: the StorageClass's parameters and the claim's name and namespace.
    const createFromClaim = (volumeName: string) => controller.createVolume({
      name: volumeName, volumeCapabilities: [BLOCK_CAP], capacityRange: { requiredBytes: requestBytes },
      parameters: { 'csi.storage.k8s.io/pvc/name': claimName, 'csi.storage.k8s.io/pvc/namespace': 'default', 'csi.storage.k8s.io/pv/name': volumeName },
    });
    const { volume } = await createFromClaim('pvc-data');
    expect(volume!.volumeContext).toMatchObject({
      [ContextKey.vm]: 'default/vm1', [ContextKey.controller]: String(status.address!.controller), [ContextKey.target]: String(status.address!.target),
      [ContextKey.lun]: String(status.address!.lun), [ContextKey.serial]: status.serial, [ContextKey.wwn]: status.wwn!.replace(/^0x/, ''),
      [ContextKey.logicalBlockSize]: '4096', [ContextKey.physicalBlockSize]: '4096',
    });
    const publishOf = async (volumeId: string, volumeContext: Record<string, string>, name: string) => {
      await controller.controllerPublishVolume({ volumeId, nodeId: NODE_ID, volumeCapability: BLOCK_CAP });
      const paths = { stagingTargetPath: join(dir, 'pub', `staging-${name}`), targetPath: join(dir, 'pub', `target-${name}`) };
      await node.nodeStageVolume({ volumeId, volumeContext, volumeCapability: BLOCK_CAP, stagingTargetPath: paths.stagingTargetPath });
      const result = await node.nodePublishVolume({ volumeId, volumeContext, volumeCapability: BLOCK_CAP, ...paths })
        .then(() => 'OK', (e: grpc.ServiceError) => `${grpc.status[e.code]}: ${e.details}`);
      return { ...paths, result };
    };
    const teardown = async (volumeId: string, paths: { stagingTargetPath: string; targetPath: string }) => {
      await node.nodeUnpublishVolume({ volumeId, targetPath: paths.targetPath });
      await node.nodeUnstageVolume({ volumeId, stagingTargetPath: paths.stagingTargetPath });
      await controller.controllerUnpublishVolume({ volumeId, nodeId: NODE_ID });
      await controller.deleteVolume({ volumeId });
    };
    const published = await publishOf(volume!.volumeId, volume!.volumeContext, 'data');
    expect(published.result).toBe('OK');

    const controllerId = `default/vm1/hba${status.address!.controller}`;
    const luns = async () => (await engine.listControllers({})).controllers.filter((c) => c.id === controllerId).flatMap((c) => c.luns);
    const [lun, ...more] = await luns();
    expect(more).toEqual([]);
    expect(lun!.address).toMatchObject({ target: status.address!.target, lun: status.address!.lun });
    expect(lun!.parameters).toMatchObject({ serial: status.serial, wwn: status.wwn!.replace(/^0x/, ''), logicalBlockSize: 4096, physicalBlockSize: 4096, sizeBytes: requestBytes });
    // The guest's by-id names follow from the WWN it reads (VPD 83h): the status's.
    expect(predictGuestPaths({ serial: lun!.parameters!.serial, wwn: lun!.parameters!.wwn })).toEqual(status.guestDevicePaths);
    console.log(`csi-cluster-identity: ${controllerId} ${lun!.address!.target}:${lun!.address!.lun} serial ${lun!.parameters!.serial} wwn ${lun!.parameters!.wwn}; status ${status.scsiAddress} ${status.serial} ${status.wwn} ${status.guestDevicePaths!.join(' ')}`);

    // A second volume from the same claim is pinned at the same address: the engine's ALREADY_EXISTS.
    const twice = (await createFromClaim('pvc-data-twice')).volume!;
    const again = await publishOf(twice.volumeId, twice.volumeContext, 'twice');
    expect(again.result).toMatch(/^ALREADY_EXISTS: engine: /);
    expect(await luns()).toHaveLength(1);
    await teardown(twice.volumeId, again);

    await teardown(volume!.volumeId, published);
    expect(await luns()).toEqual([]);
    expect((await controller.listVolumes({})).entries).toEqual([]);
  });
});
