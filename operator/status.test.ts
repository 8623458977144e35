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

describe('statusFromPlan: passthrough (deviceType lun) disks', () => {
  const plan = planAssignments([
    { key: 'ns/p', identitySeed: 'u-p', vmName: 'ns/vm', ioProfile: 'shared', passthrough: true },
    { key: 'ns/e', identitySeed: 'u-e', vmName: 'ns/vm', ioProfile: 'shared', passthrough: true, wwn: '5000c500abcdef01', serial: 'ZA1' },
  ], new Map());
  const identityCondition = (s: ReturnType<typeof statusFromPlan>) => s.conditions?.find((c) => c.type === 'DeviceIdentity');

  it('without expected identity or a known device: no serial, WWN or paths, and a condition saying why and what to do', () => {
    const status = statusFromPlan(plan.results.get('ns/p')!, 2, 't');
    expect(status).toMatchObject({ phase: 'Assigned', address: { controller: 0, target: 1, lun: 0 } });
    expect(status.serial).toBeUndefined();
    expect(status.wwn).toBeUndefined();
    expect(status.guestDevicePaths).toBeUndefined();
    expect(identityCondition(status)).toMatchObject({ status: 'True', reason: 'FromDevice', observedGeneration: 2, message: expect.stringMatching(/device's own serial and WWN.*set spec.serial and spec.wwn/) });
  });

  it('reports the expected identity from the spec, with the guest paths of its WWN', () => {
    const status = statusFromPlan(plan.results.get('ns/e')!, undefined, 't', { serial: 'OTHER', wwn: '5000000000000009' });
    expect(status).toMatchObject({ serial: 'ZA1', wwn: '0x5000c500abcdef01', guestDevicePaths: ['/dev/disk/by-id/scsi-35000c500abcdef01', '/dev/disk/by-id/wwn-0x5000c500abcdef01'] });
    expect(identityCondition(status)?.reason).toBe('ExpectedBySpec');
  });

  it('else reports what the attached device said; a device without NAA designator gets no predicted paths', () => {
    const known = statusFromPlan(plan.results.get('ns/p')!, undefined, 't', { serial: 'ZA9', wwn: '6' + 'a'.repeat(31) });
    expect(known).toMatchObject({ serial: 'ZA9', wwn: `0x6${'a'.repeat(31)}`, guestDevicePaths: [`/dev/disk/by-id/scsi-36${'a'.repeat(31)}`, `/dev/disk/by-id/wwn-0x6${'a'.repeat(31)}`] });
    expect(identityCondition(known)?.reason).toBe('ReportedByDevice');
    const noNaa = statusFromPlan(plan.results.get('ns/p')!, undefined, 't', { serial: 'ZA9', wwn: '' });
    expect(noNaa.serial).toBe('ZA9');
    expect(noNaa.wwn).toBeUndefined();
    expect(noNaa.guestDevicePaths).toBeUndefined();
    expect(identityCondition(noNaa)?.message).toMatch(/no NAA designator.*ls -l \/dev\/disk\/by-id in the guest/);
  });
});
