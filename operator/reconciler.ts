// The level-based reconcile loop over a Store: a change to anything of a VM
// queues that VM; a worker reads the VM's whole world from the store's cache,
// plans (plan.ts, pure), and runs the actions (executor.ts). No event type
// (added/modified/deleted) is ever interpreted: every pass starts from what
// is stored, so a missed or repeated event costs nothing.
//
// Requeue policy:
//   transient error (network, 5xx)  → backoff per VM (200 ms doubling to 60 s)
//   conflict (object changed)       → re-read, then re-plan after the backoff delay
//   waiting for detach              → re-check every waitPollMs (no watch on VolumeAttachments)
//   terminal (invalid spec, 422)    → condition + Event, no requeue until the object changes
//   success                         → nothing; the watch brings the next change
// A periodic resync queues every VM (a safety net, not a mechanism).
import type { Logger } from 'pino';
import { runPlan } from './executor.ts';
import type { OperatorMetrics } from './metrics.ts';
import { DEFAULT_STORAGE_CLASS, FINALIZER, claimRefOf, type ClaimObject, type DiskObject, objectKey } from './objects.ts';
import { planVm, type VmPlan } from './plan.ts';
import type { PlanLimits } from './planner.ts';
import type { Store } from './store.ts';
import { WorkQueue } from './workqueue.ts';

/** Options of the reconciler. */
export interface ReconcilerOptions {
  store: Store;
  log: Logger;
  metrics?: OperatorMetrics;
  /** VMs reconciled at once. */
  workers?: number;
  /** Disks of one VM handled at once. */
  diskConcurrency?: number;
  defaultStorageClass?: string;
  limits?: PlanLimits;
  /** Re-check period for disks waiting for a detach. */
  waitPollMs?: number;
  /** Period of the full resync (0: none). */
  resyncMs?: number;
  /** The clock (tests pin it). */
  now?: () => Date;
}

/** What one pass over a VM did. */
export interface PassOutcome {
  plan: VmPlan;
  applied: number;
  conflicts: number;
  transientErrors: number;
  terminalErrors: number;
}

/** See the file comment. */
export class Reconciler {
  readonly queue = new WorkQueue();
  private readonly options: ReconcilerOptions;
  private readonly workers: Promise<void>[] = [];
  private resyncTimer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(options: ReconcilerOptions) {
    this.options = options;
  }

  /** Reads the world of one VM from the store. */
  async observe(vm: string): Promise<{ disks: DiskObject[]; claims: Map<string, ClaimObject>; attachments: Map<string, string[]> }> {
    const { store } = this.options;
    const disks = store.disksOfVm(vm);
    const claims = new Map<string, ClaimObject>();
    const attachments = new Map<string, string[]>();
    for (const disk of disks) {
      const ns = disk.metadata.namespace;
      const claimName = claimRefOf(disk).name;
      const claim = store.claim(ns, claimName);
      if (claim !== undefined) claims.set(`${ns}/${claimName}`, claim);
      if (disk.metadata.deletionTimestamp !== undefined && (disk.metadata.finalizers ?? []).includes(FINALIZER)) {
        attachments.set(objectKey(disk.metadata), await store.attachmentsOfClaim(ns, claimName));
      }
    }
    return { disks, claims, attachments };
  }

  /** One pass over one VM: observe, plan, act. Never throws for store errors. */
  async reconcileVm(vm: string): Promise<PassOutcome> {
    const { store, log, metrics } = this.options;
    const world = await this.observe(vm);
    const plan = planVm({
      vm, ...world,
      defaultStorageClass: this.options.defaultStorageClass ?? DEFAULT_STORAGE_CLASS,
      now: (this.options.now?.() ?? new Date()).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      ...(this.options.limits === undefined ? {} : { limits: this.options.limits }),
    });
    for (const t of plan.terminal) log.warn({ disk: t.disk }, t.message);
    const byKey = new Map(world.disks.map((d) => [objectKey(d.metadata), d]));
    const executed = await runPlan(plan, byKey, { store, log, concurrency: this.options.diskConcurrency ?? 8 });
    for (const [kind, n] of executed.appliedByKind) metrics?.observeActions(kind, n);
    metrics?.observeConflicts(executed.conflicts);
    return {
      plan, applied: executed.applied, conflicts: executed.conflicts,
      transientErrors: executed.transientErrors.length, terminalErrors: executed.terminalErrors.length,
    };
  }

  /** Runs one queued VM and decides when to see it again. */
  private async process(vm: string): Promise<void> {
    const { log, metrics } = this.options;
    const started = performance.now();
    let result: 'success' | 'error' | 'requeue' = 'success';
    try {
      const outcome = await this.reconcileVm(vm);
      if (outcome.transientErrors > 0 || outcome.conflicts > 0) {
        result = outcome.transientErrors > 0 ? 'error' : 'requeue';
        const delay = this.queue.addRateLimited(vm);
        log.debug({ vm, delay, conflicts: outcome.conflicts, errors: outcome.transientErrors }, 'requeued');
      } else {
        this.queue.forget(vm);
        if (outcome.plan.waiting.length > 0) {
          result = 'requeue';
          this.queue.addAfter(vm, this.options.waitPollMs ?? 5_000);
        }
      }
    } catch (error) {
      result = 'error';
      const delay = this.queue.addRateLimited(vm);
      log.warn({ vm, delay, err: (error as Error).message }, 'reconcile failed; retrying');
    } finally {
      metrics?.observeReconcile(result, (performance.now() - started) / 1000);
      this.queue.done(vm);
    }
  }

  /** Starts watching the store and the workers (the store must be started). */
  start(): void {
    if (this.running) return;
    this.running = true;
    const { store } = this.options;
    store.onChange((vm) => this.queue.add(vm));
    for (const vm of store.vms()) this.queue.add(vm);
    const resync = this.options.resyncMs ?? 10 * 60_000;
    if (resync > 0) {
      this.resyncTimer = setInterval(() => store.vms().forEach((vm) => this.queue.add(vm)), resync);
      this.resyncTimer.unref();
    }
    for (let i = 0; i < (this.options.workers ?? 4); i++) {
      this.workers.push((async () => {
        for (;;) {
          const vm = await this.queue.get();
          if (vm === undefined) return;
          await this.process(vm);
        }
      })());
    }
  }

  /** Stops the workers after their current pass. */
  async stop(): Promise<void> {
    if (this.resyncTimer !== undefined) clearInterval(this.resyncTimer);
    this.queue.shutDown();
    await Promise.all(this.workers);
  }
}
