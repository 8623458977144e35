import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { LunSpec } from '../hba/engine-api.ts';
import { planReconcile, type DesiredState, type ObservedController, type ReconcileAction } from './serve-reconcile.ts';

function spec(target: number, lun: number, size = 1 << 20, over: Partial<LunSpec['params']> = {}, path = `/d/${target}-${lun}.img`): LunSpec {
  return { target, lun, backing: { kind: 'file', path, sizeBytes: size }, params: { logicalBlockSize: 512, physicalBlockSize: 4096, serial: `S${target}-${lun}`, wwn: '3000000000000001', readOnly: false, ...over } };
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
    if (a.kind === 'resizeLun') c!.luns.find((l) => l.target === a.target && l.lun === a.lun)!.backing.sizeBytes = a.toBytes;
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
          expect(got?.params.serial).toBe(l.spec.params.serial);
          expect(got!.backing.sizeBytes).toBeGreaterThanOrEqual(l.spec.backing.sizeBytes);
        }
      }),
    );
  });
});
