// Property tests of the planner (fast-check): small limits and small value
// pools so conflicts, exhaustion and collisions happen often.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planAssignments, type Assignment, type DiskIntent, type Plan, type PlanLimits } from './planner.ts';

const limits: PlanLimits = { maxControllersPerVm: 3, maxTargets: 4, maxLunsPerTarget: 4 };

const intentArb: fc.Arbitrary<DiskIntent> = fc.record({
  name: fc.integer({ min: 0, max: 30 }),
  vmName: fc.constantFrom('vm1', 'vm2'),
  ioProfile: fc.constantFrom('shared', 'shared', 'shared', 'dedicated'),
  address: fc.option(fc.record({
    controller: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
    target: fc.integer({ min: 0, max: 4 }),
    lun: fc.integer({ min: 0, max: 4 }),
  }), { nil: undefined, freq: 3 }),
  serial: fc.option(fc.constantFrom('S1', 'S2', 'S3'), { nil: undefined, freq: 3 }),
  wwn: fc.option(fc.constantFrom('5000000000000001', '5000000000000002'), { nil: undefined, freq: 3 }),
}).map(({ name, vmName, ioProfile, address, serial, wwn }) => {
  const d: DiskIntent = { key: `ns/d${name}`, identitySeed: `ns/d${name}`, vmName, ioProfile: ioProfile as DiskIntent['ioProfile'] };
  if (address !== undefined) {
    d.address = address.controller === undefined ? { target: address.target, lun: address.lun } : { controller: address.controller, target: address.target, lun: address.lun };
  }
  if (serial !== undefined) d.serial = serial;
  if (wwn !== undefined) d.wwn = wwn;
  return d;
});

const disksArb = fc.uniqueArray(intentArb, { selector: (d) => d.key, maxLength: 24 });
const none = new Map<string, Assignment>();

function assignedByVm(plan: Plan): Map<string, Assignment[]> {
  const byVm = new Map<string, Assignment[]>();
  for (const a of plan.assignments.values()) byVm.set(a.vmName, [...(byVm.get(a.vmName) ?? []), a]);
  return byVm;
}

function checkInvariants(plan: Plan): void {
  for (const [, list] of assignedByVm(plan)) {
    const addresses = list.map((a) => `${a.controller}:${a.target}:${a.lun}`);
    expect(new Set(addresses).size).toBe(addresses.length);
    expect(new Set(list.map((a) => a.serial)).size).toBe(list.length);
    expect(new Set(list.map((a) => a.wwn)).size).toBe(list.length);
    for (const a of list) {
      expect(a.controller).toBeLessThan(limits.maxControllersPerVm);
      expect(a.target).toBeLessThan(limits.maxTargets);
      expect(a.lun).toBeLessThan(limits.maxLunsPerTarget);
      if (a.ioProfile === 'dedicated') {
        expect(a.controller).toBeGreaterThan(0);
        expect(list.filter((o) => o.controller === a.controller)).toHaveLength(1);
      }
    }
  }
  for (const [key, r] of plan.results) {
    expect(r.ok).toBe(plan.assignments.has(key));
    expect(r.condition.status).toBe(r.ok ? 'True' : 'False');
    if (r.ok) expect(r.address).toEqual({ controller: plan.assignments.get(key)?.controller, target: plan.assignments.get(key)?.target, lun: plan.assignments.get(key)?.lun });
  }
}

describe('planAssignments properties', () => {
  it('never gives two disks of a VM one address, serial or WWN; dedicated controllers hold one disk', () => {
    fc.assert(fc.property(disksArb, (disks) => {
      const plan = planAssignments(disks, none, limits);
      expect(plan.results.size).toBe(disks.length);
      checkInvariants(plan);
    }), { numRuns: 400 });
  });

  it('honours every pin of a newly assigned disk', () => {
    fc.assert(fc.property(disksArb, (disks) => {
      const plan = planAssignments(disks, none, limits);
      for (const d of disks) {
        const r = plan.results.get(d.key);
        if (r?.ok !== true || d.address === undefined) continue;
        expect(r.address?.target).toBe(d.address.target);
        expect(r.address?.lun).toBe(d.address.lun);
        if (d.address.controller !== undefined) expect(r.address?.controller).toBe(d.address.controller);
        if (d.serial !== undefined) expect(r.serial).toBe(d.serial);
        if (d.wwn !== undefined) expect(r.wwn).toBe(d.wwn);
      }
    }), { numRuns: 300 });
  });

  it('does not depend on input order', () => {
    fc.assert(fc.property(disksArb.chain((d) => fc.tuple(fc.constant(d), fc.shuffledSubarray(d, { minLength: d.length, maxLength: d.length }))), ([disks, shuffled]) => {
      expect(planAssignments(shuffled, none, limits)).toEqual(planAssignments(disks, none, limits));
    }), { numRuns: 200 });
  });

  it('re-planning its own output with unchanged disks changes nothing', () => {
    fc.assert(fc.property(disksArb, (disks) => {
      const first = planAssignments(disks, none, limits);
      const second = planAssignments(disks, first.assignments, limits);
      expect(second).toEqual(first);
    }), { numRuns: 300 });
  });

  it('assigned disks never move when others are added or removed (and the world stays valid)', () => {
    fc.assert(fc.property(disksArb, disksArb, fc.array(fc.boolean(), { maxLength: 24 }), (initial, added, keepFlags) => {
      const first = planAssignments(initial, none, limits);
      const kept = initial.filter((_, i) => keepFlags[i] ?? true);
      const keptKeys = new Set(kept.map((d) => d.key));
      const next = [...kept, ...added.filter((d) => !keptKeys.has(d.key))];
      const second = planAssignments(next, first.assignments, limits);
      checkInvariants(second);
      for (const d of kept) {
        const before = first.assignments.get(d.key);
        if (before !== undefined) expect(second.assignments.get(d.key)).toEqual(before);
      }
    }), { numRuns: 300 });
  });
});
