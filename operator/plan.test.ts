// The pure plan (plan.ts) and the loop that runs it, over the in-memory store:
// which actions for which world, and that running them converges.
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { VirtualDiskSpec } from './api/virtualdisk.ts';
import { deriveSerial, deriveWwn } from './identity.ts';
import { FINALIZER, claimNameFor, type DiskObject } from './objects.ts';
import { planVm, type VmWorld } from './plan.ts';
import { Reconciler } from './reconciler.ts';
import { MemoryStore } from './stores/memory.ts';

const log = pino({ level: 'silent' });
const NOW = '2025-01-01T00:00:00Z';

function disk(name: string, spec: Partial<VirtualDiskSpec> = {}, meta: Partial<DiskObject['metadata']> = {}, status?: DiskObject['status']): DiskObject {
  return {
    apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk',
    metadata: { name, namespace: 'ns', uid: `uid-${name}`, resourceVersion: '1', generation: 1, ...meta },
    spec: { vmName: 'vm', capacity: '1Gi', storageClassName: 'fast', ...spec },
    ...(status === undefined ? {} : { status }),
  };
}

function world(disks: DiskObject[], extra: Partial<VmWorld> = {}): VmWorld {
  return { vm: 'ns/vm', disks, claims: new Map(), attachments: new Map(), defaultStorageClass: 'vhba', now: NOW, ...extra };
}

const kinds = (w: VmWorld, key: string) => (planVm(w).steps.get(key) ?? []).map((a) => a.kind);

/** Runs passes over every VM until one applies nothing; returns the pass count. */
async function converge(store: MemoryStore, reconciler: Reconciler, maxPasses = 20): Promise<number> {
  for (let pass = 1; pass <= maxPasses; pass++) {
    let applied = 0;
    let conflicts = 0;
    for (const vm of store.vms()) {
      const outcome = await reconciler.reconcileVm(vm);
      applied += outcome.applied;
      conflicts += outcome.conflicts;
    }
    if (applied === 0 && conflicts === 0) return pass;
  }
  throw new Error('did not converge');
}

describe('planVm: which actions for which world', () => {
  it('a new disk: finalizer first, then status, then its claim', () => {
    expect(kinds(world([disk('a')]), 'ns/a')).toEqual(['addFinalizer', 'patchStatus', 'createClaim']);
  });

  it('assigns the planner\'s address and the UID-derived identity, and names the claim after the UID', () => {
    const plan = planVm(world([disk('a', {}, { finalizers: [FINALIZER] })]));
    const [status, create] = plan.steps.get('ns/a') ?? [];
    expect(status?.kind).toBe('patchStatus');
    if (status?.kind !== 'patchStatus' || create?.kind !== 'createClaim') throw new Error('unexpected plan');
    expect(status.status).toMatchObject({
      phase: 'Assigned', address: { controller: 0, target: 0, lun: 0 }, scsiAddress: '0:0:0',
      serial: deriveSerial('uid-a'), wwn: `0x${deriveWwn('uid-a')}`, ioProfile: 'shared', observedGeneration: 1,
    });
    expect(status.event).toMatchObject({ type: 'Normal', reason: 'Assigned' });
    expect(create.claim).toMatchObject({
      namespace: 'ns', name: 'vhba-uid-a', storageClassName: 'fast', requestBytes: 2 ** 30,
      annotations: { 'vhba.io/vm': 'vm', 'vhba.io/controller': '0', 'vhba.io/target': '0', 'vhba.io/lun': '0', 'vhba.io/serial': deriveSerial('uid-a'), 'vhba.io/wwn': `0x${deriveWwn('uid-a')}` },
      owner: { uid: 'uid-a', controller: true, kind: 'VirtualDisk' },
    });
  });

  it('uses the default StorageClass when the spec names none, and none for pvc or hostDevice sources', () => {
    const file = planVm(world([disk('f', { storageClassName: undefined, source: { file: { path: 'x.img' } } }, { finalizers: [FINALIZER] })]));
    const create = file.steps.get('ns/f')?.find((a) => a.kind === 'createClaim');
    expect(create?.kind === 'createClaim' && create.claim.storageClassName).toBe('vhba');
    expect(create?.kind === 'createClaim' && create.claim.annotations['vhba.io/source-file']).toBe('x.img');
    expect(kinds(world([disk('p', { source: { pvc: { claimName: 'mine' } } }, { finalizers: [FINALIZER] })]), 'ns/p')).toEqual(['patchStatus']);
  });

  it('a converged disk needs nothing; a spec edit (new generation) only refreshes the status', async () => {
    const store = new MemoryStore();
    const reconciler = new Reconciler({ store, log, now: () => new Date(NOW) });
    store.apply({ metadata: { name: 'a', namespace: 'ns' }, spec: { vmName: 'vm', capacity: '1Gi', storageClassName: 'fast' } });
    await converge(store, reconciler);
    const stored = store.get('ns', 'a');
    if (stored === undefined) throw new Error('gone');
    const claims = new Map(store.allClaims().map((c) => [`ns/${c.metadata.name}`, c]));
    expect(planVm(world([stored], { claims })).steps.size).toBe(0);
    const edited = { ...stored, metadata: { ...stored.metadata, generation: 2 }, spec: { ...stored.spec, readOnly: true } };
    expect(kinds(world([edited], { claims }), 'ns/a')).toEqual(['patchStatus']);
  });

  it('compares statuses whatever the key order the store returns', async () => {
    const store = new MemoryStore();
    const reconciler = new Reconciler({ store, log, now: () => new Date(NOW) });
    store.apply({ metadata: { name: 'a', namespace: 'ns' }, spec: { vmName: 'vm', capacity: '1Gi', storageClassName: 'fast' } });
    await converge(store, reconciler);
    const stored = store.get('ns', 'a')!;
    const reverse = (o: object): object => Object.fromEntries(Object.entries(o).reverse().map(([k, v]) => [k, v !== null && typeof v === 'object' && !Array.isArray(v) ? reverse(v as object) : Array.isArray(v) ? v.map((x) => (typeof x === 'object' ? reverse(x as object) : x)) : v]));
    const shuffled = { ...stored, status: reverse(stored.status!) as DiskObject['status'] };
    expect(JSON.stringify(shuffled.status)).not.toBe(JSON.stringify(stored.status));
    const claims = new Map(store.allClaims().map((c) => [`ns/${c.metadata.name}`, c]));
    expect(planVm(world([shuffled], { claims })).steps.size).toBe(0);
  });

  it('a bigger capacity grows the claim; annotations lost are put back', async () => {
    const store = new MemoryStore();
    const reconciler = new Reconciler({ store, log });
    store.apply({ metadata: { name: 'a', namespace: 'ns' }, spec: { vmName: 'vm', capacity: '1Gi', storageClassName: 'fast' } });
    await converge(store, reconciler);
    const stored = store.get('ns', 'a')!;
    const claim = store.claim('ns', claimNameFor(stored))!;
    const grown = { ...stored, spec: { ...stored.spec, capacity: '2Gi' } };
    expect(planVm(world([grown], { claims: new Map([[`ns/${claim.metadata.name}`, claim]]) })).steps.size).toBe(0); // unbound: waits
    claim.volumeName = 'pv-1';
    const plan = planVm(world([grown], { claims: new Map([[`ns/${claim.metadata.name}`, claim]]) }));
    expect(plan.steps.get('ns/a')?.find((a) => a.kind === 'updateClaim')).toMatchObject({ requestBytes: 2 * 2 ** 30 });
    delete claim.metadata.annotations?.['vhba.io/lun'];
    const plan2 = planVm(world([stored], { claims: new Map([[`ns/${claim.metadata.name}`, claim]]) }));
    expect(plan2.steps.get('ns/a')?.map((a) => a.kind)).toEqual(['updateClaim']);
  });

  it('an invalid stored spec is terminal: Failed with the field named, no claim', () => {
    const plan = planVm(world([disk('bad', { serial: 'way too long for a scsi serial' }, { finalizers: [FINALIZER] })]));
    expect(plan.terminal).toHaveLength(1);
    expect(plan.terminal[0]?.message).toContain('spec.serial');
    const [action] = plan.steps.get('ns/bad') ?? [];
    expect(action?.kind === 'patchStatus' && action.status.phase).toBe('Failed');
    expect(action?.kind === 'patchStatus' && action.status.conditions?.[0]?.reason).toBe('InvalidSpec');
    expect(plan.steps.get('ns/bad')).toHaveLength(1);
  });

  it('a refused pin names the disk holding the address, and creates no claim', () => {
    const held = disk('a', { address: { target: 3, lun: 0 } }, { finalizers: [FINALIZER] }, {
      address: { controller: 0, target: 3, lun: 0 }, serial: 'SA', wwn: '0x3000000000000001', ioProfile: 'shared',
    });
    const plan = planVm(world([held, disk('b', { address: { target: 3, lun: 0 } }, { finalizers: [FINALIZER] })]));
    const [action, ...rest] = plan.steps.get('ns/b') ?? [];
    expect(rest).toEqual([]);
    expect(action?.kind === 'patchStatus' && action.status).toMatchObject({ phase: 'Failed', conditions: [{ reason: 'AddressConflict', message: expect.stringContaining('ns/a') }] });
    expect(action?.kind === 'patchStatus' && action.event?.type).toBe('Warning');
  });

  it('keeps conditions written by others (the CSI plugin) and their phase', () => {
    const store = new MemoryStore();
    const a = disk('a', {}, { finalizers: [FINALIZER] });
    const first = planVm(world([a])).steps.get('ns/a')?.[0];
    if (first?.kind !== 'patchStatus') throw new Error('expected a status patch');
    const attached = { ...a, status: { ...first.status, phase: 'Attached' as const, conditions: [...(first.status.conditions ?? []), { type: 'Attached', status: 'True' as const, reason: 'Published', message: 'on node n1' }] } };
    expect(planVm(world([attached])).steps.get('ns/a')?.map((x) => x.kind)).toEqual(['createClaim']);
    void store;
  });

  describe('deletion', () => {
    const assigned = { address: { controller: 0, target: 0, lun: 0 }, scsiAddress: '0:0:0', serial: 'S', wwn: '0x3000000000000001', ioProfile: 'shared' as const };
    const deleting = (status = assigned) => disk('a', {}, { finalizers: [FINALIZER], deletionTimestamp: NOW }, status);
    const claimOf = (d: DiskObject, extra: Partial<DiskObject['metadata']> = {}) => new Map([[`ns/${claimNameFor(d)}`, {
      metadata: { name: claimNameFor(d), namespace: 'ns', uid: 'c1', resourceVersion: '1', ownerReferences: [{ apiVersion: 'vhba.io/v1alpha1', kind: 'VirtualDisk', name: 'a', uid: 'uid-a', controller: true }], ...extra },
      requestBytes: 2 ** 30,
    }]]);

    it('waits while the volume is attached, keeping the address taken', () => {
      const d = deleting();
      const plan = planVm(world([d, disk('b', {}, { finalizers: [FINALIZER] })], { claims: claimOf(d), attachments: new Map([['ns/a', ['va-1']]]) }));
      expect(plan.waiting).toEqual([{ disk: 'ns/a', message: expect.stringContaining('va-1') }]);
      expect(plan.steps.get('ns/a')?.map((x) => x.kind)).toEqual(['patchStatus']);
      expect(plan.results.get('ns/b')?.address).toEqual({ controller: 0, target: 1, lun: 0 });
    });

    it('detached: deletes its claim, waits while the claim terminates, then removes the finalizer', () => {
      const d = deleting();
      expect(kinds(world([d], { claims: claimOf(d) }), 'ns/a')).toEqual(['deleteClaim']);
      const terminating = planVm(world([d], { claims: claimOf(d, { deletionTimestamp: NOW }) }));
      expect(terminating.waiting).toHaveLength(1);
      expect(kinds(world([d]), 'ns/a')).toEqual(['removeFinalizer']);
    });

    it('never deletes a user\'s claim (source.pvc); a deleted disk without our finalizer is ignored', () => {
      const d = { ...deleting(), spec: { vmName: 'vm', capacity: '1Gi', source: { pvc: { claimName: 'mine' } } } };
      expect(kinds(world([d], { claims: new Map([['ns/mine', { metadata: { name: 'mine', namespace: 'ns', uid: 'u', resourceVersion: '1' }, requestBytes: 1 }]]) }), 'ns/a')).toEqual(['removeFinalizer']);
      expect(planVm(world([disk('gone', {}, { deletionTimestamp: NOW, finalizers: ['other'] })])).steps.size).toBe(0);
    });
  });
});

describe('Reconciler over the memory store', () => {
  it('converges two VMs, then does nothing (idempotent)', async () => {
    const store = new MemoryStore();
    const reconciler = new Reconciler({ store, log });
    for (const [name, vm] of [['a', 'vm1'], ['b', 'vm1'], ['c', 'vm2'], ['d', 'vm1']] as const) {
      store.apply({ metadata: { name, namespace: 'ns' }, spec: { vmName: vm, capacity: '1Gi', storageClassName: 'fast', ...(name === 'd' ? { ioProfile: 'dedicated' as const } : {}) } });
    }
    await converge(store, reconciler);
    const addr = (n: string) => store.get('ns', n)?.status?.scsiAddress;
    expect([addr('a'), addr('b'), addr('c'), addr('d')]).toEqual(['0:0:0', '0:1:0', '0:0:0', '1:0:0']);
    expect(store.allClaims()).toHaveLength(4);
    const writes = store.writes;
    expect(await converge(store, reconciler)).toBe(1);
    expect(store.writes).toBe(writes);
    expect(store.events.filter((e) => e.reason === 'Assigned')).toHaveLength(4);
    expect(store.events.filter((e) => e.reason === 'ClaimCreated')).toHaveLength(4);
  });

  it('a second writer between read and write: conflict, re-read, no lost update', async () => {
    const store = new MemoryStore();
    const reconciler = new Reconciler({ store, log });
    store.apply({ metadata: { name: 'a', namespace: 'ns' }, spec: { vmName: 'vm', capacity: '1Gi', storageClassName: 'fast' } });
    // Observe, then let someone else write, then execute the stale plan.
    const original = store.setFinalizers.bind(store);
    let raced = false;
    store.setFinalizers = async (d, f) => {
      if (!raced) {
        raced = true;
        store.mutate('ns', 'a', (x) => { x.metadata.labels = { team: 'storage' }; });
      }
      return original(d, f);
    };
    const first = await reconciler.reconcileVm('ns/vm');
    expect(first.conflicts).toBe(1);
    expect(first.applied).toBe(0);
    await converge(store, reconciler);
    const stored = store.get('ns', 'a');
    expect(stored?.metadata.labels).toEqual({ team: 'storage' });
    expect(stored?.metadata.finalizers).toEqual([FINALIZER]);
    expect(stored?.status?.phase).toBe('Assigned');
  });

  it('deletion releases the address only after detach; the next disk may then take it', async () => {
    const store = new MemoryStore();
    const reconciler = new Reconciler({ store, log });
    store.apply({ metadata: { name: 'a', namespace: 'ns' }, spec: { vmName: 'vm', capacity: '1Gi', storageClassName: 'fast' } });
    await converge(store, reconciler);
    const a = store.get('ns', 'a')!;
    store.attachments.set(`ns/${claimNameFor(a)}`, ['va-1']);
    store.delete('ns', 'a');
    store.apply({ metadata: { name: 'b', namespace: 'ns' }, spec: { vmName: 'vm', capacity: '1Gi', storageClassName: 'fast' } });
    await converge(store, reconciler);
    expect(store.get('ns', 'a')?.status?.conditions?.[0]?.reason).toBe('Releasing');
    expect(store.get('ns', 'b')?.status?.scsiAddress).toBe('0:1:0');
    store.attachments.clear();
    await converge(store, reconciler);
    expect(store.get('ns', 'a')).toBeUndefined();
    expect(store.allClaims().map((c) => c.metadata.name)).toEqual([claimNameFor(store.get('ns', 'b')!)]);
    expect(store.events.map((e) => e.reason)).toEqual(expect.arrayContaining(['WaitingForDetach', 'ClaimDeleted', 'Released']));
    store.apply({ metadata: { name: 'c', namespace: 'ns' }, spec: { vmName: 'vm', capacity: '1Gi', storageClassName: 'fast' } });
    await converge(store, reconciler);
    expect(store.get('ns', 'c')?.status?.scsiAddress).toBe('0:0:0');
  });

  it('runs as a loop: queued on change, converges without explicit passes', async () => {
    const store = new MemoryStore();
    const reconciler = new Reconciler({ store, log, workers: 2 });
    reconciler.start();
    for (let i = 0; i < 10; i++) store.apply({ metadata: { name: `d${i}`, namespace: 'ns' }, spec: { vmName: `vm${i % 3}`, capacity: '1Mi', storageClassName: 'fast' } });
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && store.allDisks().some((d) => d.status?.phase !== 'Assigned')) await new Promise((r) => setTimeout(r, 10));
    await reconciler.stop();
    expect(store.allDisks().map((d) => d.status?.phase)).toEqual(Array(10).fill('Assigned'));
    expect(store.allClaims()).toHaveLength(10);
  });
});

describe('planVm: passthrough (deviceType lun) disks', () => {
  it('gets an address, a DeviceIdentity condition and a placeholder claim naming its device; re-planning is a no-op; deleting deletes the claim', async () => {
    const store = new MemoryStore();
    const reconciler = new Reconciler({ store, log, now: () => new Date(NOW) });
    store.apply({ metadata: { name: 'p', namespace: 'ns' }, spec: { vmName: 'vm', deviceType: 'lun', rawio: true, source: { hostDevice: { path: '/dev/sg3' } } } });
    store.apply({ metadata: { name: 'q', namespace: 'ns' }, spec: { vmName: 'vm', deviceType: 'lun', wwn: '0x5000c500abcdef01', serial: 'ZA1', source: { iscsi: { portal: 'h', iqn: 'iqn.2003-01.org.example', lun: 1, initiatorName: 'iqn.2026-11.io.vhba:n1' } } } });
    store.apply({ metadata: { name: 'r', namespace: 'ns' }, spec: { vmName: 'vm', deviceType: 'lun', source: { hostDevice: { path: '/dev/disk/by-id/wwn-0x5000c500abcdef02' } } } });
    await converge(store, reconciler);
    const p = store.get('ns', 'p')!;
    expect(p.status).toMatchObject({ phase: 'Assigned', scsiAddress: '0:0:0' });
    expect(p.status?.serial).toBeUndefined();
    expect(p.status?.wwn).toBeUndefined();
    expect(p.status?.conditions?.map((c) => [c.type, c.reason])).toEqual([['Assigned', 'Assigned'], ['DeviceIdentity', 'FromDevice']]);
    const q = store.get('ns', 'q')!;
    expect(q.status).toMatchObject({ scsiAddress: '0:1:0', wwn: '0x5000c500abcdef01', guestDevicePaths: ['/dev/disk/by-id/scsi-35000c500abcdef01', '/dev/disk/by-id/wwn-0x5000c500abcdef01'] });
    // No spec.wwn, but the by-id path names the device's NAA designator: expected, shown, checked at attach.
    const r = store.get('ns', 'r')!;
    expect(r.status).toMatchObject({ scsiAddress: '0:2:0', wwn: '0x5000c500abcdef02', guestDevicePaths: ['/dev/disk/by-id/scsi-35000c500abcdef02', '/dev/disk/by-id/wwn-0x5000c500abcdef02'] });
    expect(r.status?.conditions?.find((c) => c.type === 'DeviceIdentity')?.reason).toBe('ExpectedBySpec');

    expect(store.allClaims().map((c) => c.metadata.name).sort()).toEqual([p, q, r].map(claimNameFor).sort());
    const claimOfDisk = (d: DiskObject) => store.allClaims().find((c) => c.metadata.name === claimNameFor(d))!;
    expect(claimOfDisk(p).requestBytes).toBe(1 << 20);
    expect(claimOfDisk(p).metadata.annotations).toEqual({
      'vhba.io/disk': 'p', 'vhba.io/vm': 'vm', 'vhba.io/controller': '0', 'vhba.io/target': '0', 'vhba.io/lun': '0',
      'vhba.io/host-device': '/dev/sg3', 'vhba.io/rawio': 'true',
    });
    expect(claimOfDisk(q).metadata.annotations).toEqual({
      'vhba.io/disk': 'q', 'vhba.io/vm': 'vm', 'vhba.io/controller': '0', 'vhba.io/target': '1', 'vhba.io/lun': '0',
      'vhba.io/iscsi-portal': 'h:3260', 'vhba.io/iscsi-iqn': 'iqn.2003-01.org.example', 'vhba.io/iscsi-lun': '1', 'vhba.io/iscsi-initiator-name': 'iqn.2026-11.io.vhba:n1',
      'vhba.io/rawio': 'false', 'vhba.io/expected-wwn': '5000c500abcdef01', 'vhba.io/expected-serial': 'ZA1',
    });
    expect(claimOfDisk(r).metadata.annotations).toMatchObject({ 'vhba.io/host-device': '/dev/disk/by-id/wwn-0x5000c500abcdef02', 'vhba.io/expected-wwn': '5000c500abcdef02' });
    expect(claimOfDisk(r).metadata.annotations?.['vhba.io/expected-serial']).toBeUndefined();
    expect(claimOfDisk(r).metadata.annotations?.['vhba.io/serial']).toBeUndefined();

    const world2 = world([p, q, r].map((d) => store.get('ns', d.metadata.name)!), { claims: new Map(store.allClaims().map((c) => [`ns/${c.metadata.name}`, c])) });
    expect(planVm(world2).steps.size).toBe(0);
    // A bound claim is never grown to the lun disk's capacity (0: the device's).
    const bound = new Map([...world2.claims].map(([k, c]) => [k, { ...c, volumeName: 'pv-1' }]));
    expect(planVm({ ...world2, claims: bound }).steps.size).toBe(0);

    store.delete('ns', 'p');
    await converge(store, reconciler);
    expect(store.get('ns', 'p')).toBeUndefined();
    expect(store.allClaims().map((c) => c.metadata.name)).not.toContain(claimNameFor(p));
  });
});
