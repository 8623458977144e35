import { describe, expect, it } from 'vitest';
import { planAssignments } from './planner.ts';
import { statusFromPlan } from './status.ts';

describe('statusFromPlan', () => {
  const plan = planAssignments([
    { key: 'ns/a', identitySeed: 'uid-a', vmName: 'ns/vm', ioProfile: 'shared', address: { target: 1, lun: 300 } },
    { key: 'ns/b', identitySeed: 'uid-b', vmName: 'ns/vm', ioProfile: 'shared', address: { target: 1, lun: 300 } },
  ], new Map());

  it('reports address, identity and guest paths of an assigned disk', () => {
    const result = plan.results.get('ns/a')!;
    const status = statusFromPlan(result, 4, '2025-01-01T00:00:00Z');
    expect(status).toEqual({
      phase: 'Assigned',
      observedGeneration: 4,
      address: { controller: 0, target: 1, lun: 300 },
      serial: result.serial,
      wwn: `0x${result.wwn}`,
      guestDevicePaths: [`/dev/disk/by-id/scsi-3${result.wwn}`, `/dev/disk/by-id/wwn-0x${result.wwn}`],
      conditions: [{ type: 'Assigned', status: 'True', reason: 'Assigned', message: 'assigned to ns/vm at 0:1:300', lastTransitionTime: '2025-01-01T00:00:00Z', observedGeneration: 4 }],
    });
  });

  it('reports a refused disk as Failed with the reason and no address', () => {
    const status = statusFromPlan(plan.results.get('ns/b')!, undefined, 't');
    expect(status.phase).toBe('Failed');
    expect(status.address).toBeUndefined();
    expect(status.conditions?.[0]).toMatchObject({ status: 'False', reason: 'AddressConflict', message: 'address 0:1:300 is already used by ns/a' });
  });
});
