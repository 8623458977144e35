// Leader election with a coordination.k8s.io/v1 Lease, as client-go's
// leaderelection does it: a candidate takes the Lease when it is free or its
// holder has not renewed within leaseDurationSeconds, by an update carrying
// the resourceVersion it read (two candidates cannot both win: one gets 409);
// the leader renews every retryPeriod and gives up (onStoppedLeading) if it
// cannot renew within renewDeadline. On a clean stop the Lease is released
// (holder cleared) so a standby takes over at once.
import type { Logger } from 'pino';
import { StoreErrorKind, isStoreError } from './store.ts';

/** The Lease fields used (coordination.k8s.io/v1). */
export interface Lease {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: {
    holderIdentity?: string | null;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

/** Reads and writes one Lease; errors are StoreErrors (NotFound, Conflict, AlreadyExists, …). */
export interface LeaseClient {
  get(namespace: string, name: string): Promise<Lease>;
  create(lease: Lease): Promise<Lease>;
  update(lease: Lease): Promise<Lease>;
}

/** Timing, as client-go's defaults (15 s / 10 s / 2 s). */
export interface LeaderTiming {
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

export const DEFAULT_LEADER_TIMING: LeaderTiming = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

/** Kubernetes MicroTime: RFC 3339 with microseconds. */
export function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/** Options of an elector. */
export interface LeaderElectorOptions {
  client: LeaseClient;
  namespace: string;
  name: string;
  identity: string;
  log: Logger;
  timing?: LeaderTiming;
  now?: () => Date;
}

/** See the file comment. */
export class LeaderElector {
  private readonly o: LeaderElectorOptions;
  private readonly timing: LeaderTiming;
  private leading = false;
  private stopped = false;
  private lastRenew = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Observed holder and when we first saw its current renewTime (local clock, as client-go). */
  private observed: { record: string; at: number } | undefined;

  constructor(options: LeaderElectorOptions) {
    this.o = options;
    this.timing = options.timing ?? DEFAULT_LEADER_TIMING;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  /** One attempt to take or renew the Lease; true if we hold it afterwards. */
  async tryAcquireOrRenew(): Promise<boolean> {
    const { client, namespace, name, identity } = this.o;
    const now = this.now();
    const spec = { holderIdentity: identity, leaseDurationSeconds: Math.ceil(this.timing.leaseDurationMs / 1000), acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 };
    let lease: Lease;
    try {
      lease = await client.get(namespace, name);
    } catch (error) {
      if (!isStoreError(error, StoreErrorKind.NotFound)) throw error;
      try {
        await client.create({ metadata: { name, namespace }, spec });
        return true;
      } catch (createError) {
        if (isStoreError(createError, StoreErrorKind.AlreadyExists) || isStoreError(createError, StoreErrorKind.Conflict)) return false;
        throw createError;
      }
    }
    const holder = lease.spec.holderIdentity ?? '';
    const record = `${holder}|${lease.spec.renewTime ?? ''}`;
    if (this.observed?.record !== record) this.observed = { record, at: now.getTime() };
    const durationMs = (lease.spec.leaseDurationSeconds ?? 15) * 1000;
    const expired = this.observed.at + durationMs <= now.getTime();
    if (holder !== '' && holder !== identity && !expired) return false;
    const next: Lease = {
      metadata: { ...lease.metadata },
      spec: {
        ...spec,
        acquireTime: holder === identity ? (lease.spec.acquireTime ?? spec.acquireTime) : spec.acquireTime,
        leaseTransitions: (lease.spec.leaseTransitions ?? 0) + (holder === identity ? 0 : 1),
      },
    };
    try {
      await client.update(next);
      return true;
    } catch (error) {
      if (isStoreError(error, StoreErrorKind.Conflict)) return false;
      throw error;
    }
  }

  /** Campaigns until leading (resolves then), renews in the background, and
   * calls onStoppedLeading once if the Lease is lost. */
  async run(onStoppedLeading: () => void): Promise<void> {
    const { log } = this.o;
    while (!this.stopped && !this.leading) {
      try {
        this.leading = await this.tryAcquireOrRenew();
      } catch (error) {
        log.warn({ err: (error as Error).message }, 'lease: acquire failed');
      }
      if (!this.leading) await new Promise((r) => setTimeout(r, this.timing.retryPeriodMs));
    }
    if (this.stopped) return;
    this.lastRenew = Date.now();
    log.info({ lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity }, 'lease acquired: leading');
    const renew = async (): Promise<void> => {
      if (this.stopped || !this.leading) return;
      let ok = false;
      try {
        ok = await this.tryAcquireOrRenew();
      } catch (error) {
        log.warn({ err: (error as Error).message }, 'lease: renew failed');
      }
      if (ok) this.lastRenew = Date.now();
      else if (Date.now() - this.lastRenew > this.timing.renewDeadlineMs) {
        this.leading = false;
        log.error('lease lost: stopping');
        onStoppedLeading();
        return;
      }
      this.timer = setTimeout(() => void renew(), this.timing.retryPeriodMs);
    };
    this.timer = setTimeout(() => void renew(), this.timing.retryPeriodMs);
  }

  /** Stops renewing and, if leading, releases the Lease. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.o.client.get(this.o.namespace, this.o.name);
      if (lease.spec.holderIdentity !== this.o.identity) return;
      const now = microTime(this.now());
      await this.o.client.update({ metadata: lease.metadata, spec: { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, renewTime: now, acquireTime: now } });
    } catch (error) {
      this.o.log.warn({ err: (error as Error).message }, 'lease: release failed');
    }
  }
}
