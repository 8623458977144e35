import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { LeaderElector, microTime, type Lease, type LeaseClient } from './leader.ts';
import { StoreError, StoreErrorKind } from './store.ts';

/** A Lease store with resourceVersion preconditions, like the API server. */
class MemoryLeases implements LeaseClient {
  lease: Lease | undefined;
  private rv = 0;
  async get(): Promise<Lease> {
    if (this.lease === undefined) throw new StoreError(StoreErrorKind.NotFound, 'not found', 404);
    return structuredClone(this.lease);
  }
  async create(lease: Lease): Promise<Lease> {
    if (this.lease !== undefined) throw new StoreError(StoreErrorKind.AlreadyExists, 'exists', 409);
    this.lease = { ...structuredClone(lease), metadata: { ...lease.metadata, resourceVersion: String(++this.rv) } };
    return structuredClone(this.lease);
  }
  async update(lease: Lease): Promise<Lease> {
    if (this.lease?.metadata.resourceVersion !== lease.metadata.resourceVersion) throw new StoreError(StoreErrorKind.Conflict, 'conflict', 409);
    this.lease = { ...structuredClone(lease), metadata: { ...lease.metadata, resourceVersion: String(++this.rv) } };
    return structuredClone(this.lease);
  }
}

const log = pino({ level: 'silent' });

describe('LeaderElector', () => {
  it('one of two candidates leads; the other takes over only after the lease expires', async () => {
    const leases = new MemoryLeases();
    let clock = 1_000_000;
    const now = () => new Date(clock);
    const a = new LeaderElector({ client: leases, namespace: 'ns', name: 'l', identity: 'a', log, now });
    const b = new LeaderElector({ client: leases, namespace: 'ns', name: 'l', identity: 'b', log, now });
    expect(await a.tryAcquireOrRenew()).toBe(true);
    expect(await b.tryAcquireOrRenew()).toBe(false);
    clock += 10_000;
    expect(await b.tryAcquireOrRenew()).toBe(false); // b first saw this record 10 s ago: not expired
    clock += 6_000;
    expect(await b.tryAcquireOrRenew()).toBe(true);
    expect(leases.lease?.spec.holderIdentity).toBe('b');
    expect(leases.lease?.spec.leaseTransitions).toBe(1);
    expect(await a.tryAcquireOrRenew()).toBe(false);
  });

  it('a renewing leader keeps the lease; a clean stop releases it at once', async () => {
    const leases = new MemoryLeases();
    const a = new LeaderElector({ client: leases, namespace: 'ns', name: 'l', identity: 'a', log, timing: { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 20 } });
    await a.run(() => undefined);
    expect(a.isLeader).toBe(true);
    const before = leases.lease?.spec.renewTime;
    await new Promise((r) => setTimeout(r, 80));
    expect(leases.lease?.spec.renewTime).not.toBe(before);
    await a.stop();
    expect(leases.lease?.spec.holderIdentity).toBeNull();
    const b = new LeaderElector({ client: leases, namespace: 'ns', name: 'l', identity: 'b', log });
    expect(await b.tryAcquireOrRenew()).toBe(true);
  });

  it('formats MicroTime with microseconds', () => {
    expect(microTime(new Date('2025-01-02T03:04:05.678Z'))).toBe('2025-01-02T03:04:05.678000Z');
  });
});
