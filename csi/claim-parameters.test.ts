// A lun disk's device from the operator's claim (claim-parameters.ts): only a
// claim owned by a VirtualDisk whose spec names the same device counts; the
// operator's own annotations (operator/objects.ts) pass that check; the
// controller turns such a claim into a passthrough volume.
import { create } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as csi from '../protos/gen/csi/v1/csi_pb.ts';
import { validateVirtualDisk } from '../operator/api/validate.ts';
import type { VirtualDiskSpec } from '../operator/api/virtualdisk.ts';
import { claimAnnotations, ownerReferenceTo, type DiskObject } from '../operator/objects.ts';
import { planAssignments } from '../operator/planner.ts';
import { intentFromDisk } from '../operator/intent.ts';
import { ClaimParameterKey, claimPassthroughParameters, type ClaimReader, type ClaimView, type DiskView } from './claim-parameters.ts';
import { createController } from './controller.ts';
import { MemoryStore } from './store.ts';
import { ContextKey, type SnapshotRecord, type VolumeRecord } from './volumes.ts';

const ctx = { method: 'test', metadata: undefined as never, peer: 'test' };
const blockCap = { accessMode: { mode: csi.VolumeCapability_AccessMode_Mode.SINGLE_NODE_WRITER }, accessType: { case: 'block' as const, value: {} } };

/** A lun disk and the claim the operator makes for it (the real annotation code). */
function operatorClaim(spec: Partial<VirtualDiskSpec>): { disk: DiskObject; claim: ClaimView } {
  const disk: DiskObject = {
    apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', metadata: { name: 'lun1', namespace: 'ns', uid: 'uid-lun1', resourceVersion: '1' },
    spec: { vmName: 'vm', deviceType: 'lun', ...spec },
  };
  const checked = validateVirtualDisk({ apiVersion: disk.apiVersion, kind: disk.kind, metadata: { name: 'lun1', namespace: 'ns', uid: 'uid-lun1' }, spec: disk.spec });
  if (!checked.ok) throw new Error(JSON.stringify(checked.errors));
  const result = planAssignments([intentFromDisk(checked.disk, 'operator')], new Map()).results.get('ns/lun1')!;
  return { disk, claim: { annotations: claimAnnotations(disk, result, checked.disk), ownerReferences: [ownerReferenceTo(disk)] } };
}

function reader(claim: ClaimView | undefined, disk: DiskView | undefined): ClaimReader & { reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    async claim(ns, name) { reads.push(`claim ${ns}/${name}`); return claim; },
    async virtualDisk(ns, name) { reads.push(`disk ${ns}/${name}`); return disk; },
  };
}

const pvc = { [ClaimParameterKey.namespace]: 'ns', [ClaimParameterKey.name]: 'vhba-uid-lun1', 'csi.storage.k8s.io/pv/name': 'pvc-1' };

describe('claimPassthroughParameters', () => {
  it('takes the device of an operator claim, checked against its VirtualDisk, with the VM and address', async () => {
    const { disk, claim } = operatorClaim({ source: { hostDevice: { path: '/dev/disk/by-id/scsi-35000c500abcdef01' } }, rawio: true });
    const got = await claimPassthroughParameters(pvc, reader(claim, { uid: 'uid-lun1', spec: disk.spec }));
    expect(got).toEqual({
      [ContextKey.hostDevice]: '/dev/disk/by-id/scsi-35000c500abcdef01', [ContextKey.rawio]: 'true', [ContextKey.expectedWwn]: '5000c500abcdef01',
      [ContextKey.vm]: 'ns/vm', [ContextKey.controller]: '0', [ContextKey.target]: '0', [ContextKey.lun]: '0',
    });
    const iscsi = operatorClaim({ source: { iscsi: { portal: '192.0.2.1', iqn: 'iqn.2003-01.org.example:t', lun: 2 } }, serial: 'ZA1' });
    expect(await claimPassthroughParameters(pvc, reader(iscsi.claim, { uid: 'uid-lun1', spec: iscsi.disk.spec }))).toMatchObject({
      [ContextKey.iscsiPortal]: '192.0.2.1:3260', [ContextKey.iscsiIqn]: 'iqn.2003-01.org.example:t', [ContextKey.iscsiLun]: '2', [ContextKey.expectedSerial]: 'ZA1',
    });
  });

  it('adds nothing (and reads no VirtualDisk) for claims that name no device, or when the parameters name one', async () => {
    const plain = reader({ annotations: { 'vhba.io/vm': 'vm' }, ownerReferences: [] }, undefined);
    expect(await claimPassthroughParameters(pvc, plain)).toEqual({});
    expect(plain.reads).toEqual(['claim ns/vhba-uid-lun1']);
    const none = reader(undefined, undefined);
    expect(await claimPassthroughParameters({ logicalBlockSize: '512' }, none)).toEqual({});
    expect(await claimPassthroughParameters({ ...pvc, [ContextKey.hostDevice]: '/dev/sdb' }, none)).toEqual({});
    expect(none.reads).toEqual([]);
  });

  it('refuses a claim naming a device its VirtualDisk does not (or with no VirtualDisk behind it)', async () => {
    const { disk, claim } = operatorClaim({ source: { hostDevice: { path: '/dev/sdb' } } });
    const forged = { ...claim, annotations: { ...claim.annotations, [ContextKey.hostDevice]: '/dev/sda' } };
    await expect(claimPassthroughParameters(pvc, reader(forged, { uid: 'uid-lun1', spec: disk.spec })))
      .rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION, message: expect.stringMatching(/annotation vhba.io\/host-device is "\/dev\/sda" but VirtualDisk ns\/lun1 says "\/dev\/sdb"/) });
    const rawio = { ...claim, annotations: { ...claim.annotations, [ContextKey.rawio]: 'true' } };
    await expect(claimPassthroughParameters(pvc, reader(rawio, { uid: 'uid-lun1', spec: disk.spec }))).rejects.toMatchObject({ message: expect.stringMatching(/vhba.io\/rawio is "true"/) });
    await expect(claimPassthroughParameters(pvc, reader({ ...claim, ownerReferences: [] }, { uid: 'uid-lun1', spec: disk.spec })))
      .rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION, message: expect.stringMatching(/not owned by a VirtualDisk/) });
    await expect(claimPassthroughParameters(pvc, reader(claim, { uid: 'uid-other', spec: disk.spec }))).rejects.toMatchObject({ message: expect.stringMatching(/does not exist/) });
    await expect(claimPassthroughParameters(pvc, reader(claim, { uid: 'uid-lun1', spec: { vmName: 'vm', capacity: '1Gi' } }))).rejects.toMatchObject({ message: expect.stringMatching(/not a valid deviceType lun disk/) });
  });

  it('the controller makes a passthrough volume from such a claim; repeats are idempotent', async () => {
    const base = mkdtempSync(join(tmpdir(), 'vhba-claim-'));
    try {
      const { disk, claim } = operatorClaim({ source: { iscsi: { portal: '192.0.2.1:3261', iqn: 'iqn.2003-01.org.example:t', lun: 2 } } });
      const c = createController({
        nodeId: 'node-a', dataDir: join(base, 'data'), maxVolumesPerNode: 0, volumes: new MemoryStore<VolumeRecord>(), snapshots: new MemoryStore<SnapshotRecord>(),
        knownNodes: async () => new Set(['node-a']), claims: reader(claim, { uid: 'uid-lun1', spec: disk.spec }),
      });
      const req = create(csi.CreateVolumeRequestSchema, { name: 'pvc-1', volumeCapabilities: [blockCap], capacityRange: { requiredBytes: 1n << 20n }, parameters: pvc });
      const vol = (await c.createVolume(req, ctx)).volume!;
      expect(vol.capacityBytes).toBe(0n);
      expect(vol.volumeContext).toMatchObject({ [ContextKey.iscsiPortal]: '192.0.2.1:3261', [ContextKey.iscsiLun]: '2', [ContextKey.vm]: 'ns/vm', [ContextKey.target]: '0' });
      expect((await c.createVolume(req, ctx)).volume!.volumeId).toBe(vol.volumeId);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});

