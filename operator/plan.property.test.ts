// Property tests of plan + executor over the memory store: for random disks
// (pins, dedicated disks, deletions, attachments) and a "crash" after any
// number of writes (every later write of that run fails, as if the process
// died), restarting converges: no two disks of a VM share an address, every
// assigned disk has exactly one claim that carries its assignment, no claim
// is leaked, and a converged world plans no action.
import fc from 'fast-check';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { FINALIZER, claimNameFor } from './objects.ts';
import { planVm } from './plan.ts';
import { Reconciler } from './reconciler.ts';
import { StoreError, StoreErrorKind } from './store.ts';
import { MemoryStore } from './stores/memory.ts';

const log = pino({ level: 'silent' });

const diskArb = fc.record({
  name: fc.integer({ min: 0, max: 12 }),
  vm: fc.constantFrom('vm1', 'vm2'),
  dedicated: fc.boolean(),
  pin: fc.option(fc.record({ target: fc.integer({ min: 0, max: 3 }), lun: fc.integer({ min: 0, max: 2 }) }), { nil: undefined, freq: 3 }),
  deleteLater: fc.boolean(),
  attached: fc.boolean(),
});
const scenarioArb = fc.record({
  disks: fc.uniqueArray(diskArb, { selector: (d) => d.name, maxLength: 10 }),
  crashAfter: fc.integer({ min: 0, max: 40 }),
  crashAfter2: fc.integer({ min: 0, max: 40 }),
});

/** Makes every write after the first `budget` ones fail (a crash, seen from the store). */
function crashAfter(store: MemoryStore, budget: number): () => void {
  const methods = ['setFinalizers', 'patchStatus', 'createClaim', 'updateClaim', 'deleteClaim'] as const;
  const saved = methods.map((m) => store[m]);
  let left = budget;
  for (const m of methods) {
    const original = store[m].bind(store) as (...args: unknown[]) => Promise<unknown>;
    (store as unknown as Record<string, unknown>)[m] = async (...args: unknown[]) => {
      if (left <= 0) throw new StoreError(StoreErrorKind.Transient, 'crashed');
      left -= 1;
      return original(...args);
    };
  }
  return () => methods.forEach((m, i) => { (store as unknown as Record<string, unknown>)[m] = saved[i]; });
}

async function passes(store: MemoryStore, n: number): Promise<void> {
  const reconciler = new Reconciler({ store, log }); // a fresh process: no memory of earlier runs
  for (let i = 0; i < n; i++) for (const vm of store.vms()) await reconciler.reconcileVm(vm);
}

function checkWorld(store: MemoryStore): void {
  const disks = store.allDisks();
  const byVm = new Map<string, string[]>();
  for (const d of disks) {
    if (d.status?.scsiAddress === undefined) continue;
    const list = byVm.get(d.spec.vmName) ?? [];
    list.push(d.status.scsiAddress);
    byVm.set(d.spec.vmName, list);
  }
  for (const list of byVm.values()) expect(new Set(list).size).toBe(list.length);
  const claims = store.allClaims();
  for (const claim of claims) {
    const owner = disks.find((d) => d.metadata.uid === claim.metadata.ownerReferences?.[0]?.uid);
    expect(owner, `claim ${claim.metadata.name} has an owner`).toBeDefined();
    expect(claim.metadata.annotations?.['vhba.io/serial']).toBe(owner?.status?.serial);
    expect(claim.metadata.annotations?.['vhba.io/lun']).toBe(String(owner?.status?.address?.lun));
  }
}

describe('reconciler properties', () => {
  it('crash anywhere, restart: converges with unique addresses, no leaked claims, and then plans nothing', async () => {
    await fc.assert(fc.asyncProperty(scenarioArb, async ({ disks, crashAfter: budget, crashAfter2 }) => {
      const store = new MemoryStore();
      for (const d of disks) {
        store.apply({
          metadata: { name: `d${d.name}`, namespace: 'ns' },
          spec: { vmName: d.vm, capacity: '1Mi', storageClassName: 'fast', ...(d.dedicated ? { ioProfile: 'dedicated' as const } : {}), ...(d.pin === undefined || d.dedicated ? {} : { address: d.pin }) },
        });
      }
      let restore = crashAfter(store, budget);
      await passes(store, 3);
      restore();
      await passes(store, 4);
      checkWorld(store);

      // Delete some (some still attached), crash again mid-way, restart.
      for (const d of disks) {
        if (!d.deleteLater) continue;
        const stored = store.get('ns', `d${d.name}`);
        if (stored !== undefined && d.attached) store.attachments.set(`ns/${claimNameFor(stored)}`, ['va']);
        store.delete('ns', `d${d.name}`);
      }
      restore = crashAfter(store, crashAfter2);
      await passes(store, 2);
      restore();
      await passes(store, 4);
      checkWorld(store);
      for (const d of disks.filter((x) => x.deleteLater)) {
        const stored = store.get('ns', `d${d.name}`);
        if (d.attached) expect(stored?.metadata.finalizers).toEqual([FINALIZER]);
        else expect(stored).toBeUndefined();
      }
      store.attachments.clear();
      await passes(store, 4);
      expect(store.allDisks().length).toBe(disks.filter((d) => !d.deleteLater).length);
      expect(store.allClaims().length).toBe(store.allDisks().filter((d) => d.status?.phase === 'Assigned').length);
      checkWorld(store);

      // Converged: re-planning the world changes nothing.
      for (const vm of store.vms()) {
        const all = store.disksOfVm(vm);
        const claims = new Map(store.allClaims().map((c) => [`ns/${c.metadata.name}`, c]));
        expect(planVm({ vm, disks: all, claims, attachments: new Map(), defaultStorageClass: 'vhba', now: new Date().toISOString() }).steps.size).toBe(0);
      }
    }), { numRuns: 150 });
  });
});
