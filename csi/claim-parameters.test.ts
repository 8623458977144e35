// What the operator's claim adds to CreateVolume (claim-parameters.ts): only a
// claim owned by a VirtualDisk that agrees counts — a lun disk's spec must
// name the same device, an emulated disk's status must hold the same address,
// serial and WWN; the operator's own annotations (operator/objects.ts) and
// status (operator/status.ts) pass that check; the controller turns such a
// claim into a passthrough volume, or an emulated one placed and identified
// as the status says.
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
import { statusFromPlan } from '../operator/status.ts';
import { ClaimParameterKey, claimParameters, type ClaimReader, type ClaimView, type DiskView } from './claim-parameters.ts';
import { createController } from './controller.ts';
import { MemoryStore } from './store.ts';
import { ContextKey, type SnapshotRecord, type VolumeRecord } from './volumes.ts';

const ctx = { method: 'test', metadata: undefined as never, peer: 'test' };
const blockCap = { accessMode: { mode: csi.VolumeCapability_AccessMode_Mode.SINGLE_NODE_WRITER }, accessType: { case: 'block' as const, value: {} } };

/** A disk (lun unless the spec says otherwise), the status the operator
 * writes and the claim it makes for it (the real planner, status and
 * annotation code). */
function operatorClaim(spec: Partial<VirtualDiskSpec>): { disk: DiskObject; claim: ClaimView; view: DiskView } {
  const disk: DiskObject = {
    apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', metadata: { name: 'lun1', namespace: 'ns', uid: 'uid-lun1', resourceVersion: '1' },
    spec: { vmName: 'vm', deviceType: 'lun', ...spec },
  };
  const checked = validateVirtualDisk({ apiVersion: disk.apiVersion, kind: disk.kind, metadata: { name: 'lun1', namespace: 'ns', uid: 'uid-lun1' }, spec: disk.spec });
  if (!checked.ok) throw new Error(JSON.stringify(checked.errors));
  const result = planAssignments([intentFromDisk(checked.disk, 'operator')], new Map()).results.get('ns/lun1')!;
  const status = statusFromPlan(result, 1, '2026-11-26T00:00:00Z');
  return { disk, claim: { annotations: claimAnnotations(disk, result, checked.disk), ownerReferences: [ownerReferenceTo(disk)] }, view: { uid: 'uid-lun1', spec: disk.spec, status } };
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

describe('claimParameters', () => {
  it('takes the device of an operator claim, checked against its VirtualDisk, with the VM and address', async () => {
    const { disk, claim } = operatorClaim({ source: { hostDevice: { path: '/dev/disk/by-id/scsi-35000c500abcdef01' } }, rawio: true });
    const got = await claimParameters(pvc, reader(claim, { uid: 'uid-lun1', spec: disk.spec }));
    expect(got).toEqual({
      [ContextKey.hostDevice]: '/dev/disk/by-id/scsi-35000c500abcdef01', [ContextKey.rawio]: 'true', [ContextKey.expectedWwn]: '5000c500abcdef01',
      [ContextKey.vm]: 'ns/vm', [ContextKey.controller]: '0', [ContextKey.target]: '0', [ContextKey.lun]: '0',
    });
    const iscsi = operatorClaim({ source: { iscsi: { portal: '192.0.2.1', iqn: 'iqn.2003-01.org.example:t', lun: 2 } }, serial: 'ZA1' });
    expect(await claimParameters(pvc, reader(iscsi.claim, { uid: 'uid-lun1', spec: iscsi.disk.spec }))).toMatchObject({
      [ContextKey.iscsiPortal]: '192.0.2.1:3260', [ContextKey.iscsiIqn]: 'iqn.2003-01.org.example:t', [ContextKey.iscsiLun]: '2', [ContextKey.expectedSerial]: 'ZA1',
    });
  });

  it('adds nothing (and reads no VirtualDisk) for claims with no VirtualDisk owner that name no device, or when the parameters name one', async () => {
    const plain = reader({ annotations: { 'vhba.io/vm': 'vm' }, ownerReferences: [] }, undefined);
    expect(await claimParameters(pvc, plain)).toEqual({});
    expect(plain.reads).toEqual(['claim ns/vhba-uid-lun1']);
    const none = reader(undefined, undefined);
    expect(await claimParameters({ logicalBlockSize: '512' }, none)).toEqual({});
    expect(await claimParameters({ ...pvc, [ContextKey.hostDevice]: '/dev/sdb' }, none)).toEqual({});
    expect(none.reads).toEqual([]);
  });

  it('refuses a claim naming a device its VirtualDisk does not (or with no VirtualDisk behind it)', async () => {
    const { disk, claim } = operatorClaim({ source: { hostDevice: { path: '/dev/sdb' } } });
    const forged = { ...claim, annotations: { ...claim.annotations, [ContextKey.hostDevice]: '/dev/sda' } };
    await expect(claimParameters(pvc, reader(forged, { uid: 'uid-lun1', spec: disk.spec })))
      .rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION, message: expect.stringMatching(/annotation vhba.io\/host-device is "\/dev\/sda" but VirtualDisk ns\/lun1 says "\/dev\/sdb"/) });
    const rawio = { ...claim, annotations: { ...claim.annotations, [ContextKey.rawio]: 'true' } };
    await expect(claimParameters(pvc, reader(rawio, { uid: 'uid-lun1', spec: disk.spec }))).rejects.toMatchObject({ message: expect.stringMatching(/vhba.io\/rawio is "true"/) });
    await expect(claimParameters(pvc, reader({ ...claim, ownerReferences: [] }, { uid: 'uid-lun1', spec: disk.spec })))
      .rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION, message: expect.stringMatching(/not owned by a VirtualDisk/) });
    await expect(claimParameters(pvc, reader(claim, { uid: 'uid-other', spec: disk.spec }))).rejects.toMatchObject({ message: expect.stringMatching(/does not exist/) });
    await expect(claimParameters(pvc, reader(claim, { uid: 'uid-lun1', spec: { vmName: 'vm', capacity: '1Gi' } }))).rejects.toMatchObject({ message: expect.stringMatching(/not a valid deviceType lun disk/) });
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


/** An emulated disk's spec. */
const EMULATED = { vmName: 'vm', deviceType: 'disk' as const, capacity: '64Mi', storageClassName: 'vhba' };

describe('claimParameters: emulated disks', () => {
  it('takes the VM, the address, the status identity and the spec block sizes', async () => {
    const { claim, view } = operatorClaim({ ...EMULATED, logicalBlockSize: 4096, physicalBlockSize: 4096, address: { controller: 1, target: 7, lun: 2 } });
    const status = view.status as { serial: string; wwn: string };
    expect(status.wwn).toMatch(/^0x3[0-9a-f]{15}$/);
    const r = reader(claim, view);
    expect(await claimParameters(pvc, r)).toEqual({
      [ContextKey.vm]: 'ns/vm', [ContextKey.controller]: '1', [ContextKey.target]: '7', [ContextKey.lun]: '2',
      [ContextKey.serial]: status.serial, [ContextKey.wwn]: status.wwn.slice(2), logicalBlockSize: '4096', physicalBlockSize: '4096',
    });
    expect(r.reads).toEqual(['claim ns/vhba-uid-lun1', 'disk ns/lun1']);
    // Spec defaults, a WWN given in upper case with 0x.
    const plain = operatorClaim({ ...EMULATED, wwn: '0x5000C500ABCDEF02' });
    expect(await claimParameters(pvc, reader(plain.claim, plain.view))).toMatchObject({ [ContextKey.wwn]: '5000c500abcdef02', logicalBlockSize: '512', physicalBlockSize: '4096' });
  });

  it('refuses a claim whose serial, WWN or address is not the status\'s, naming both', async () => {
    const { claim, view } = operatorClaim(EMULATED);
    const status = view.status as { serial: string; wwn: string; address: { target: number } };
    const forge = (key: string, value: string) => reader({ ...claim, annotations: { ...claim.annotations, [key]: value } }, view);
    await expect(claimParameters(pvc, forge(ContextKey.serial, 'OTHER'))).rejects.toMatchObject({
      code: grpc.status.FAILED_PRECONDITION,
      message: expect.stringContaining(`annotation vhba.io/serial is "OTHER" but VirtualDisk ns/lun1 status.serial is ${JSON.stringify(status.serial)}`),
    });
    await expect(claimParameters(pvc, forge(ContextKey.wwn, '0x5000c500abcdef03'))).rejects.toMatchObject({
      code: grpc.status.FAILED_PRECONDITION, message: expect.stringContaining(`annotation vhba.io/wwn is "0x5000c500abcdef03" but VirtualDisk ns/lun1 status.wwn is ${JSON.stringify(status.wwn)}`),
    });
    await expect(claimParameters(pvc, forge(ContextKey.target, '9'))).rejects.toMatchObject({ message: expect.stringContaining(`vhba.io/target is "9" but VirtualDisk ns/lun1 status.address.target is "${status.address.target}"`) });
    // The same WWN written differently is the same WWN.
    expect(await claimParameters(pvc, forge(ContextKey.wwn, status.wwn.toUpperCase().replace('0X', '0x')))).toMatchObject({ [ContextKey.wwn]: status.wwn.slice(2) });
    // No status yet (or the operator's claim predates a re-plan).
    await expect(claimParameters(pvc, reader(claim, { ...view, status: undefined }))).rejects.toMatchObject({ message: expect.stringMatching(/status.serial is null/) });
  });

  it('refuses a VirtualDisk owner that is not valid, or a lun disk whose claim names no device; a claim without owner adds nothing', async () => {
    const { claim, view } = operatorClaim(EMULATED);
    await expect(claimParameters(pvc, reader(claim, { ...view, spec: { vmName: 'vm' } }))).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION, message: expect.stringMatching(/spec is not valid/) });
    const lun = operatorClaim({ source: { hostDevice: { path: '/dev/sdb' } } });
    await expect(claimParameters(pvc, reader(claim, lun.view))).rejects.toMatchObject({ message: expect.stringMatching(/names no device but VirtualDisk ns\/lun1 is a deviceType lun disk/) });
    await expect(claimParameters(pvc, reader(claim, { ...view, uid: 'uid-other' }))).rejects.toMatchObject({ message: expect.stringMatching(/does not exist/) });
    expect(await claimParameters(pvc, reader({ ...claim, ownerReferences: [] }, view))).toEqual({});
  });

  it('the controller places and identifies the volume as the status says; the claim\'s block sizes win over the StorageClass\'s', async () => {
    const base = mkdtempSync(join(tmpdir(), 'vhba-claim-'));
    try {
      const { claim, view } = operatorClaim({ ...EMULATED, logicalBlockSize: 4096 });
      const status = view.status as { serial: string; wwn: string; address: { controller: number; target: number; lun: number } };
      const c = createController({
        nodeId: 'node-a', dataDir: join(base, 'data'), maxVolumesPerNode: 0, volumes: new MemoryStore<VolumeRecord>(), snapshots: new MemoryStore<SnapshotRecord>(),
        knownNodes: async () => new Set(['node-a']), claims: reader(claim, view),
      });
      const req = create(csi.CreateVolumeRequestSchema, { name: 'pvc-1', volumeCapabilities: [blockCap], capacityRange: { requiredBytes: 64n << 20n }, parameters: { ...pvc, logicalBlockSize: '512', ioProfile: 'dedicated' } });
      const vol = (await c.createVolume(req, ctx)).volume!;
      expect(vol.capacityBytes).toBe(64n << 20n);
      expect(vol.volumeContext).toMatchObject({
        [ContextKey.vm]: 'ns/vm', [ContextKey.controller]: String(status.address.controller), [ContextKey.target]: String(status.address.target), [ContextKey.lun]: String(status.address.lun),
        [ContextKey.serial]: status.serial, [ContextKey.wwn]: status.wwn.slice(2),
        [ContextKey.logicalBlockSize]: '4096', [ContextKey.physicalBlockSize]: '4096', [ContextKey.ioProfile]: 'dedicated',
      });
      expect((await c.createVolume(req, ctx)).volume!.volumeId).toBe(vol.volumeId);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
