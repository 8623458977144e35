import { describe, expect, it } from 'vitest';
import { deriveSerial, deriveWwn } from './identity.ts';
import { planAssignments, type Assignment, type DiskIntent, type PlanLimits } from './planner.ts';

const none = new Map<string, Assignment>();

function intent(name: string, extra: Partial<DiskIntent> = {}): DiskIntent {
  return { key: `default/${name}`, identitySeed: `default/${name}`, vmName: 'vm1', ioProfile: 'shared', ...extra };
}

function addressOf(plan: ReturnType<typeof planAssignments>, name: string): string | undefined {
  const a = plan.results.get(`default/${name}`)?.address;
  return a === undefined ? undefined : `${a.controller}:${a.target}:${a.lun}`;
}

describe('planAssignments: placement', () => {
  it('gives each shared disk its own target on controller 0, lowest first, in key order', () => {
    const plan = planAssignments([intent('c'), intent('a'), intent('b')], none);
    expect(['a', 'b', 'c'].map((n) => addressOf(plan, n))).toEqual(['0:0:0', '0:1:0', '0:2:0']);
    expect([...plan.assignments.keys()]).toEqual(['default/a', 'default/b', 'default/c']);
    expect(plan.results.get('default/a')?.condition).toEqual({ type: 'Assigned', status: 'True', reason: 'Assigned', message: 'assigned to vm1 at 0:0:0' });
  });

  it('honours pins first; unpinned disks avoid any target with a LUN', () => {
    const plan = planAssignments([
      intent('a'), intent('far', { address: { target: 0, lun: 300 } }), intent('b', { address: { controller: 0, target: 2, lun: 0 } }), intent('c'),
    ], none);
    expect(addressOf(plan, 'far')).toBe('0:0:300');
    expect(addressOf(plan, 'b')).toBe('0:2:0');
    expect(addressOf(plan, 'a')).toBe('0:1:0');
    expect(addressOf(plan, 'c')).toBe('0:3:0');
  });

  it('puts dedicated disks on controllers of their own, from 1 up', () => {
    const plan = planAssignments([
      intent('d1', { ioProfile: 'dedicated' }), intent('d2', { ioProfile: 'dedicated' }),
      intent('s', { address: { controller: 1, target: 5, lun: 0 } }), intent('x'),
    ], none);
    expect(addressOf(plan, 's')).toBe('1:5:0');
    expect(addressOf(plan, 'd1')).toBe('2:0:0');
    expect(addressOf(plan, 'd2')).toBe('3:0:0');
    expect(addressOf(plan, 'x')).toBe('0:0:0');
  });

  it('a pinned dedicated disk without a controller gets a free controller at its target/LUN', () => {
    const plan = planAssignments([intent('d', { ioProfile: 'dedicated', address: { target: 4, lun: 7 } })], none);
    expect(addressOf(plan, 'd')).toBe('1:4:7');
  });

  it('plans VMs independently: same addresses and identities may repeat across VMs', () => {
    const plan = planAssignments([intent('a', { serial: 'S' }), intent('b', { vmName: 'vm2', serial: 'S' })], none);
    expect(addressOf(plan, 'a')).toBe('0:0:0');
    expect(addressOf(plan, 'b')).toBe('0:0:0');
    expect(plan.results.get('default/b')?.ok).toBe(true);
  });
});

describe('planAssignments: refusals name the other disk', () => {
  it('refuses a pin conflict, the later key losing', () => {
    const plan = planAssignments([intent('b', { address: { target: 1, lun: 0 } }), intent('a', { address: { controller: 0, target: 1, lun: 0 } })], none);
    expect(plan.results.get('default/a')?.ok).toBe(true);
    expect(plan.results.get('default/b')).toMatchObject({
      ok: false, condition: { status: 'False', reason: 'AddressConflict', message: 'address 0:1:0 is already used by default/a' },
    });
    expect(plan.assignments.has('default/b')).toBe(false);
  });

  it('an assigned disk keeps its address against a new pin, whatever the key order', () => {
    const first = planAssignments([intent('z')], none);
    const second = planAssignments([intent('z'), intent('a', { address: { target: 0, lun: 0 } })], first.assignments);
    expect(addressOf(second, 'z')).toBe('0:0:0');
    expect(second.results.get('default/a')?.condition.message).toContain('default/z');
  });

  it('refuses sharing a dedicated controller, and a dedicated disk on a used controller', () => {
    const plan = planAssignments([
      intent('d', { ioProfile: 'dedicated' }),
      intent('s', { address: { controller: 1, target: 3, lun: 0 } }),
      intent('e', { ioProfile: 'dedicated', address: { controller: 2, target: 0, lun: 0 } }),
      intent('t', { address: { controller: 2, target: 1, lun: 0 } }),
    ], none);
    // Pinned first: s takes controller 1, e takes controller 2 (dedicated); t then may not share 2.
    expect(addressOf(plan, 's')).toBe('1:3:0');
    expect(addressOf(plan, 'e')).toBe('2:0:0');
    expect(plan.results.get('default/t')?.condition).toMatchObject({ reason: 'ControllerDedicated', message: 'controller 2 is dedicated to default/e' });
    expect(addressOf(plan, 'd')).toBe('3:0:0');
    const clash = planAssignments([intent('s', { address: { controller: 1, target: 0, lun: 0 } }), intent('x', { ioProfile: 'dedicated', address: { controller: 1, target: 2, lun: 0 } })], none);
    expect(clash.results.get('default/x')?.condition).toMatchObject({ reason: 'ControllerInUse' });
    expect(clash.results.get('default/x')?.condition.message).toContain('default/s');
  });

  it('refuses an explicit serial or WWN another disk of the VM has', () => {
    const plan = planAssignments([
      intent('a', { serial: 'SER', wwn: '5000000000000001' }),
      intent('b', { serial: 'SER' }),
      intent('c', { wwn: '5000000000000001' }),
    ], none);
    expect(plan.results.get('default/b')?.condition).toMatchObject({ reason: 'DuplicateSerial' });
    expect(plan.results.get('default/b')?.condition.message).toContain('default/a');
    expect(plan.results.get('default/c')?.condition).toMatchObject({ reason: 'DuplicateWwn' });
    expect(plan.results.get('default/c')?.condition.message).toContain('default/a');
    // Refused disks take no address: the next disk gets target 1.
    expect(planAssignments([intent('a', { serial: 'SER' }), intent('b', { serial: 'SER' }), intent('c')], none).results.get('default/c')?.address?.target).toBe(1);
  });

  it('re-derives an identity that collides with an explicit one (counter suffix)', () => {
    const plan = planAssignments([intent('a'), intent('b', { serial: deriveSerial('default/a'), wwn: deriveWwn('default/a') })], none);
    expect(plan.results.get('default/b')?.ok).toBe(true);
    expect(plan.results.get('default/a')).toMatchObject({ ok: true, serial: deriveSerial('default/a', 1), wwn: deriveWwn('default/a', 1) });
  });

  it('derives serial and WWN from the identity seed when not given', () => {
    const plan = planAssignments([intent('a', { identitySeed: 'uid-123' })], none);
    expect(plan.results.get('default/a')).toMatchObject({ serial: deriveSerial('uid-123'), wwn: deriveWwn('uid-123') });
  });
});

describe('planAssignments: limits', () => {
  const small: PlanLimits = { maxControllersPerVm: 3, maxTargets: 2, maxLunsPerTarget: 8 };

  it('refuses a shared disk when controller 0 has no free target', () => {
    const plan = planAssignments([intent('a'), intent('b'), intent('c')], none, small);
    expect(plan.results.get('default/c')?.condition).toMatchObject({ reason: 'NoFreeTarget' });
    expect(plan.results.get('default/c')?.condition.message).toMatch(/all 2 targets in use/);
  });

  it('refuses a dedicated disk when no controller is free', () => {
    const plan = planAssignments([intent('a', { ioProfile: 'dedicated' }), intent('b', { ioProfile: 'dedicated' }), intent('c', { ioProfile: 'dedicated' })], none, small);
    expect(addressOf(plan, 'b')).toBe('2:0:0');
    expect(plan.results.get('default/c')?.condition).toMatchObject({ reason: 'NoFreeController' });
    expect(plan.results.get('default/c')?.condition.message).toMatch(/limit 3 controllers per VM/);
  });

  it('refuses pins beyond the limits', () => {
    const plan = planAssignments([
      intent('a', { address: { controller: 3, target: 0, lun: 0 } }),
      intent('b', { address: { target: 2, lun: 0 } }),
      intent('c', { address: { target: 0, lun: 8 } }),
      intent('d', { ioProfile: 'dedicated', address: { controller: 0, target: 0, lun: 0 } }),
    ], none, small);
    for (const name of ['a', 'b', 'c', 'd']) expect(plan.results.get(`default/${name}`)?.condition.reason).toBe('InvalidAddress');
    expect(plan.results.get('default/a')?.condition.message).toMatch(/allowed: 0 to 2/);
    expect(planAssignments([intent('x', { address: { target: 255, lun: 16383 } })], none).results.get('default/x')?.ok).toBe(true);
  });
});

describe('planAssignments: assigned disks never move', () => {
  it('keeps address and identity and reports ignored spec changes', () => {
    const first = planAssignments([intent('a', { serial: 'OLD' })], none);
    const second = planAssignments([intent('a', { serial: 'NEW', address: { target: 9, lun: 1 }, ioProfile: 'dedicated', vmName: 'vm2' })], first.assignments);
    expect(second.assignments.get('default/a')).toEqual(first.assignments.get('default/a'));
    expect(second.results.get('default/a')).toMatchObject({ ok: true, vmName: 'vm1', serial: 'OLD', condition: { status: 'True', reason: 'SpecChangeIgnored' } });
    const message = second.results.get('default/a')?.condition.message ?? '';
    for (const part of ['spec.vmName vm2', 'spec.ioProfile dedicated', 'spec.address _:9:1', 'spec.serial "NEW"']) expect(message).toContain(part);
  });

  it('releases the addresses of removed disks', () => {
    const first = planAssignments([intent('a'), intent('b')], none);
    const second = planAssignments([intent('b'), intent('c')], first.assignments);
    expect(second.assignments.has('default/a')).toBe(false);
    expect(addressOf(second, 'b')).toBe('0:1:0');
    expect(addressOf(second, 'c')).toBe('0:0:0');
  });

  it('re-plans the later of two corrupt assignments sharing an address', () => {
    const a: Assignment = { key: 'default/a', vmName: 'vm1', ioProfile: 'shared', controller: 0, target: 0, lun: 0, serial: 'SA', wwn: '3000000000000001' };
    const b: Assignment = { ...a, key: 'default/b', serial: 'SB', wwn: '3000000000000002' };
    const plan = planAssignments([intent('a'), intent('b')], new Map([['default/a', a], ['default/b', b]]));
    expect(addressOf(plan, 'a')).toBe('0:0:0');
    expect(addressOf(plan, 'b')).toBe('0:1:0');
    expect(plan.results.get('default/b')?.serial).toBe(deriveSerial('default/b'));
  });

  it('treats duplicate keys as a caller bug', () => {
    expect(() => planAssignments([intent('a'), intent('a')], none)).toThrow(/duplicate disk key/);
  });
});

describe('planAssignments: passthrough (deviceType lun) disks', () => {
  it('get an address like any disk (their own target) but no derived identity', () => {
    const plan = planAssignments([intent('a'), intent('p', { passthrough: true }), intent('q', { passthrough: true })], none);
    expect(['a', 'p', 'q'].map((n) => addressOf(plan, n))).toEqual(['0:0:0', '0:1:0', '0:2:0']);
    expect(plan.results.get('default/p')).toMatchObject({ ok: true, serial: '', wwn: '', passthrough: true });
    expect(plan.assignments.get('default/p')).toMatchObject({ serial: '', wwn: '' });
    // Two unknown identities ('') never clash with each other.
    expect(plan.results.get('default/q')?.ok).toBe(true);
    expect(plan.results.get('default/a')?.passthrough).toBeUndefined();
  });

  it('carry the expected identity, which is unique per VM and avoided by derived ones', () => {
    const taken = deriveWwn('default/a');
    const plan = planAssignments([
      intent('a'), intent('p', { passthrough: true, wwn: taken, serial: 'ZA1' }), intent('q', { passthrough: true, serial: 'ZA1' }),
    ], none);
    expect(plan.results.get('default/p')).toMatchObject({ ok: true, serial: 'ZA1', wwn: taken });
    expect(plan.results.get('default/a')?.wwn).not.toBe(taken);
    expect(plan.results.get('default/q')).toMatchObject({ ok: false, serial: 'ZA1', wwn: '', passthrough: true, condition: { reason: 'DuplicateSerial' } });
  });

  it('a kept passthrough disk follows the spec\'s expected identity without SpecChangeIgnored', () => {
    const first = planAssignments([intent('p', { passthrough: true })], none);
    const again = planAssignments([intent('p', { passthrough: true, wwn: '5000c500abcdef01' })], first.assignments);
    expect(again.results.get('default/p')).toMatchObject({ ok: true, address: { controller: 0, target: 0, lun: 0 }, wwn: '5000c500abcdef01', condition: { reason: 'Assigned' } });
    expect(again.assignments.get('default/p')?.wwn).toBe('5000c500abcdef01');
    const moved = planAssignments([intent('p', { passthrough: true, address: { target: 5, lun: 0 } })], first.assignments);
    expect(moved.results.get('default/p')?.condition.message).toMatch(/kept on vm1 at 0:0:0 with the device's own identity: .*ignored: spec.address _:5:0/);
  });
});
