// Fuzzing the planner (operator/planner.ts) with hostile pins as a manifest
// could carry them: negative, fractional, NaN, huge or out-of-limit
// controller/target/LUN numbers and odd identities. The structural
// properties (unique addresses, serials, WWNs; order independence;
// stability) are in operator/planner.property.test.ts with small value
// pools; this adds values outside every range. Properties: never throws;
// every assignment is inside the limits with integer fields; a disk pinned to
// an impossible address is refused, not placed elsewhere.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planAssignments, type Assignment, type DiskIntent, type PlanLimits } from '../../operator/planner.ts';
import { fuzzParams } from './fuzz-settings.ts';

const limits: PlanLimits = { maxControllersPerVm: 3, maxTargets: 4, maxLunsPerTarget: 4 };
const hostileNumber = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 4 }) },
  { weight: 1, arbitrary: fc.constantFrom(-1, 0.5, Number.NaN, Infinity, -Infinity, 2 ** 53, 2 ** 32, 255, 16383, 16384, -0) },
);

const intent: fc.Arbitrary<DiskIntent> = fc.record({
  name: fc.integer({ min: 0, max: 20 }),
  vmName: fc.constantFrom('vm1', 'vm2', ''),
  ioProfile: fc.constantFrom('shared', 'dedicated'),
  pin: fc.option(fc.record({ controller: fc.option(hostileNumber, { nil: undefined }), target: hostileNumber, lun: hostileNumber }), { nil: undefined }),
  serial: fc.option(fc.oneof(fc.constantFrom('S1', 'S2'), fc.string({ maxLength: 30 })), { nil: undefined }),
}).map(({ name, vmName, ioProfile, pin, serial }) => {
  const d: DiskIntent = { key: `ns/d${name}`, identitySeed: `ns/d${name}`, vmName, ioProfile: ioProfile as DiskIntent['ioProfile'] };
  if (pin !== undefined) d.address = pin.controller === undefined ? { target: pin.target, lun: pin.lun } : { controller: pin.controller, target: pin.target, lun: pin.lun };
  if (serial !== undefined) d.serial = serial;
  return d;
});

/** Whether a pin can be honoured at all under `limits`. */
function pinPossible(d: DiskIntent): boolean {
  const a = d.address;
  if (!a) return true;
  const ok = (v: number, max: number) => Number.isInteger(v) && v >= 0 && v < max;
  return ok(a.target, limits.maxTargets) && ok(a.lun, limits.maxLunsPerTarget) && (a.controller === undefined || ok(a.controller, limits.maxControllersPerVm));
}

describe('planner with hostile pins (fuzzed)', () => {
  it('never throws, places only inside the limits, refuses impossible pins', () => {
    fc.assert(
      fc.property(fc.uniqueArray(intent, { selector: (d) => d.key, maxLength: 16 }), (disks) => {
        const plan = planAssignments(disks, new Map<string, Assignment>(), limits);
        for (const a of plan.assignments.values()) {
          for (const [v, max] of [[a.controller, limits.maxControllersPerVm], [a.target, limits.maxTargets], [a.lun, limits.maxLunsPerTarget]] as const) {
            expect(Number.isInteger(v) && v >= 0 && v < max).toBe(true);
          }
        }
        for (const d of disks) {
          if (!pinPossible(d)) expect(plan.assignments.has(d.key)).toBe(false);
          const a = plan.assignments.get(d.key);
          if (a && d.address) {
            expect(a.target).toBe(d.address.target);
            expect(a.lun).toBe(d.address.lun);
          }
        }
      }),
      fuzzParams(1000),
    );
  });
});
