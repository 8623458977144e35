import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { create } from '@bufbuild/protobuf';
import type { LunSpec, PassthroughPolicy } from '../hba/engine-api.ts';
import { ListControllersResponseSchema } from '../protos/gen/vhba/hba/v1/hba_pb.ts';
import { attachRequest, identityChanges, observedFromList, planReconcile, type DesiredState, type ObservedController, type ReconcileAction } from './serve-reconcile.ts';

function spec(target: number, lun: number, size = 1 << 20, over: Partial<NonNullable<LunSpec['params']>> = {}, path = `/d/${target}-${lun}.img`): LunSpec {
  return { target, lun, backing: { kind: 'file', path, sizeBytes: size }, params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: `S${target}-${lun}`, wwn: '3000000000000001', readOnly: false, ...over } };
}
/** The capacity of an emulated LUN. */
function sizeOf(s: LunSpec): number {
  if (s.backing.kind !== 'file' && s.backing.kind !== 'memory') throw new Error(`${s.backing.kind} has no size`);
  return s.backing.sizeBytes;
}
const ctrl = { id: 'vm/hba0', socketPath: '/s/vm/hba0.sock', numRequestQueues: 1 };
const all = () => true;

/** Applies a plan to an observed world, as the engine would. */
function apply(observed: ObservedController[], actions: ReconcileAction[]): ObservedController[] {
  const world = structuredClone(observed);
  for (const a of actions) {
    if (a.kind === 'createController') world.push({ ...a.controller, luns: [] });
    const c = world.find((x) => x.id === ('controllerId' in a ? a.controllerId : ''));
    if (a.kind === 'detachLun') c!.luns = c!.luns.filter((l) => !(l.target === a.target && l.lun === a.lun));
    if (a.kind === 'attachLun') c!.luns.push(structuredClone(a.spec));
    if (a.kind === 'resizeLun') {
      const l = c!.luns.find((x) => x.target === a.target && x.lun === a.lun)!;
      if (l.backing.kind === 'file' || l.backing.kind === 'memory') l.backing.sizeBytes = a.toBytes;
    }
  }
  return world;
}

describe('planReconcile', () => {
  it('creates the controller, then attaches', () => {
    const desired: DesiredState = { controllers: [ctrl], luns: [{ controllerId: ctrl.id, key: 'default/a', spec: spec(0, 0) }] };
    const plan = planReconcile(desired, [], all);
    expect(plan.actions.map((a) => a.kind)).toEqual(['createController', 'attachLun']);
    expect(plan.notices).toEqual([]);
  });

  it('detaches what no manifest wants before attaching into the freed address', () => {
    const desired: DesiredState = { controllers: [ctrl], luns: [{ controllerId: ctrl.id, key: 'default/b', spec: spec(0, 0, 1 << 20, { serial: 'NEW' }, '/d/b.img') }] };
    const observed: ObservedController[] = [{ ...ctrl, luns: [spec(0, 0), spec(1, 0)] }];
    const plan = planReconcile(desired, observed, all);
    expect(plan.actions.map((a) => [a.kind, 'target' in a ? a.target : (a as { spec: LunSpec }).spec.target])).toEqual([['detachLun', 0], ['detachLun', 1], ['attachLun', 0]]);
    expect(plan.notices[0]).toMatch(/default\/b at vm\/hba0 0:0 is replaced.*backing \/d\/0-0.img → \/d\/b.img, serial S0-0 → NEW/);
  });

  it('grows, refuses to shrink, and leaves unmanaged controllers alone', () => {
    const desired: DesiredState = {
      controllers: [ctrl],
      luns: [
        { controllerId: ctrl.id, key: 'default/grow', spec: spec(0, 0, 4 << 20) },
        { controllerId: ctrl.id, key: 'default/shrink', spec: spec(1, 0, 1 << 20) },
      ],
    };
    const observed: ObservedController[] = [
      { ...ctrl, luns: [spec(0, 0, 2 << 20), spec(1, 0, 2 << 20)] },
      { id: 'other', socketPath: '/elsewhere/x.sock', numRequestQueues: 1, luns: [spec(5, 5)] },
    ];
    const plan = planReconcile(desired, observed, (c) => c.id !== 'other');
    expect(plan.actions).toEqual([{ kind: 'resizeLun', controllerId: ctrl.id, key: 'default/grow', target: 0, lun: 0, fromBytes: 2 << 20, toBytes: 4 << 20 }]);
    expect(plan.notices).toEqual([expect.stringMatching(/default\/shrink: spec.capacity 1048576 bytes is smaller than the running disk's 2097152 bytes; shrinking is refused/)]);
  });

  it('keeps a controller whose queue count changed, with a notice', () => {
    const plan = planReconcile({ controllers: [{ ...ctrl, numRequestQueues: 2 }], luns: [] }, [{ ...ctrl, luns: [] }], all);
    expect(plan.actions).toEqual([]);
    expect(plan.notices[0]).toMatch(/runs with 1 request queue\(s\), the manifests now ask for 2/);
  });

  it('re-planning the world a plan produced yields nothing (property)', () => {
    const lunArb = fc.record({ target: fc.integer({ min: 0, max: 3 }), lun: fc.integer({ min: 0, max: 3 }), size: fc.integer({ min: 1, max: 4 }), serial: fc.constantFrom('A', 'B') });
    fc.assert(
      fc.property(fc.uniqueArray(lunArb, { selector: (l) => `${l.target}:${l.lun}` }), fc.uniqueArray(lunArb, { selector: (l) => `${l.target}:${l.lun}` }), (want, have) => {
        const desired: DesiredState = { controllers: [ctrl], luns: want.map((l) => ({ controllerId: ctrl.id, key: `k${l.target}${l.lun}`, spec: spec(l.target, l.lun, l.size << 20, { serial: l.serial }) })) };
        const observed: ObservedController[] = [{ ...ctrl, luns: have.map((l) => spec(l.target, l.lun, l.size << 20, { serial: l.serial })) }];
        const after = apply(observed, planReconcile(desired, observed, all).actions);
        const again = planReconcile(desired, after, all);
        expect(again.actions).toEqual([]);
        // Every desired LUN is there, at least as large as asked (never shrunk).
        for (const l of desired.luns) {
          const got = after[0]!.luns.find((s) => s.target === l.spec.target && s.lun === l.spec.lun);
          expect(got?.params?.serial).toBe(l.spec.params?.serial);
          expect(sizeOf(got!)).toBeGreaterThanOrEqual(sizeOf(l.spec));
        }
      }),
    );
  });
});

describe('passthrough LUNs', () => {
  const hostDevice = (policy: PassthroughPolicy = { rawio: false }, path = '/dev/disk/by-id/wwn-0x5000c500abcdef01'): LunSpec => ({ target: 1, lun: 0, backing: { kind: 'hostDevice', path, policy } });

  it('observedFromList maps host_device, iscsi, their policy and the device identity (fields 8–11)', () => {
    const res = create(ListControllersResponseSchema, {
      controllers: [{
        id: 'vm/hba0', socketPath: '/s/vm/hba0.sock', numRequestQueues: 1,
        luns: [
          {
            address: { target: 1, lun: 0 }, hostDevice: { path: '/dev/sg3' }, passthrough: { rawio: true, timeoutMs: 5000, expectedWwn: '5000C500ABCDEF01', expectedSerial: '' },
            device: { peripheralDeviceType: 0, vendor: 'ATA', product: 'X', revision: '1', serial: 'ZA1', wwn: '5000C500ABCDEF01', logicalBlockSize: 4096, physicalBlockSize: 4096, sizeBytes: 1n << 40n },
          },
          { address: { target: 2, lun: 5 }, iscsi: { portal: '192.0.2.1:3260', iqn: 'iqn.2003-01.org.example:d', lun: 7, initiatorName: '' } },
          { address: { target: 0, lun: 0 }, backingPath: '/d/a.img', parameters: { sizeBytes: 1n << 20n, logicalBlockSize: 512, physicalBlockSize: 4096, serial: 'S', wwn: '3000000000000001', readOnly: false, product: '' } },
        ],
      }],
    });
    const [c] = observedFromList(res);
    expect(c!.luns[0]).toEqual({
      target: 1, lun: 0, backing: { kind: 'hostDevice', path: '/dev/sg3', policy: { rawio: true, timeoutMs: 5000, expectedWwn: '5000c500abcdef01' } },
      device: { peripheralDeviceType: 0, vendor: 'ATA', product: 'X', revision: '1', serial: 'ZA1', wwn: '5000c500abcdef01', logicalBlockSize: 4096, physicalBlockSize: 4096, sizeBytes: 2 ** 40 },
    });
    expect(c!.luns[1]).toEqual({ target: 2, lun: 5, backing: { kind: 'iscsi', portal: '192.0.2.1:3260', iqn: 'iqn.2003-01.org.example:d', lun: 7, policy: { rawio: false } } });
    expect(c!.luns[2]?.backing).toEqual({ kind: 'file', path: '/d/a.img', sizeBytes: 1 << 20 });
  });

  it('compares device and policy; never resizes; an emulated ↔ passthrough swap at one address is a replacement', () => {
    const same = planReconcile({ controllers: [ctrl], luns: [{ controllerId: ctrl.id, key: 'd/p', spec: hostDevice() }] }, [{ ...ctrl, luns: [{ ...hostDevice(), device: undefined }] }], all);
    expect(same).toEqual({ actions: [], notices: [] });
    const changes = identityChanges(hostDevice({ rawio: false }), hostDevice({ rawio: true, expectedWwn: '5000c500abcdef01', timeoutMs: 1000 }, '/dev/sdb'));
    expect(changes).toEqual(['backing /dev/disk/by-id/wwn-0x5000c500abcdef01 → /dev/sdb', 'rawio false → true', 'timeout default → 1000 ms', 'expected wwn (any) → 5000c500abcdef01']);
    const swap = planReconcile({ controllers: [ctrl], luns: [{ controllerId: ctrl.id, key: 'd/p', spec: hostDevice() }] }, [{ ...ctrl, luns: [spec(1, 0)] }], all);
    expect(swap.actions.map((a) => a.kind)).toEqual(['detachLun', 'attachLun']);
    expect(swap.notices[0]).toMatch(/backing \/d\/1-0\.img → \/dev\/disk\/by-id\/wwn-0x5000c500abcdef01/);
  });

  it('the AttachLun request carries the device and policy and no parameters', () => {
    expect(attachRequest('vm/hba0', hostDevice({ rawio: true, expectedSerial: 'ZA1' }))).toEqual({
      controllerId: 'vm/hba0', address: { target: 1, lun: 0 }, backing: { case: 'hostDevice', value: { path: '/dev/disk/by-id/wwn-0x5000c500abcdef01' } },
      passthrough: { rawio: true, timeoutMs: 0, expectedWwn: '', expectedSerial: 'ZA1' },
    });
    const iscsi: LunSpec = { target: 0, lun: 3, backing: { kind: 'iscsi', portal: 'h:3260', iqn: 'iqn.2003-01.org.example', lun: 2, initiatorName: 'iqn.2026-11.io.vhba:n1', policy: { rawio: false } } };
    expect(attachRequest('c', iscsi)).toMatchObject({ backing: { case: 'iscsi', value: { portal: 'h:3260', iqn: 'iqn.2003-01.org.example', lun: 2, initiatorName: 'iqn.2026-11.io.vhba:n1' } } });
    expect(attachRequest('c', iscsi)).not.toHaveProperty('parameters');
  });
});
