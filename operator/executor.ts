// Runs a VmPlan against a Store. Idempotent: every action is safe to repeat
// (an AlreadyExists create or NotFound delete counts as done, since the
// operator may have crashed just after the previous attempt). Each disk's
// actions run in order, and the first failure stops that disk's chain; disks
// run concurrently (bounded). Writes carry the resourceVersion last read or
// returned; a Conflict re-reads the disk and asks for a re-plan instead of
// overwriting anything.
import type { Logger } from 'pino';
import { crashPoint } from './crash.ts';
import { FINALIZER, type DiskObject } from './objects.ts';
import { MANAGED_STATUS_KEYS, type Action, type VmPlan } from './plan.ts';
import { StoreErrorKind, isStoreError, type Store } from './store.ts';

/** What running a plan did. */
export interface ExecutionResult {
  /** Actions that changed the store. */
  applied: number;
  /** Per action kind, how many were applied (metrics). */
  appliedByKind: Map<Action['kind'], number>;
  /** Writes refused because the object changed: re-plan soon. */
  conflicts: number;
  /** Errors worth a retry with backoff. */
  transientErrors: Error[];
  /** Errors no retry fixes (e.g. the API rejecting our own write as invalid). */
  terminalErrors: Error[];
}

/** Options for runPlan. */
export interface ExecutorOptions {
  store: Store;
  log: Logger;
  /** Disks handled at once. */
  concurrency?: number;
}

const DONE = Symbol('done');

/** Runs one action; returns the disk as it is afterwards (for the next action's resourceVersion). */
async function runAction(store: Store, disk: DiskObject, action: Action): Promise<DiskObject | typeof DONE> {
  switch (action.kind) {
    case 'addFinalizer': {
      const finalizers = [...(disk.metadata.finalizers ?? []), FINALIZER];
      const updated = await store.setFinalizers(disk, finalizers);
      crashPoint('finalizer-added');
      return updated;
    }
    case 'patchStatus': {
      const remove = MANAGED_STATUS_KEYS.filter((k) => (action.status as Record<string, unknown>)[k] === undefined && disk.status?.[k] !== undefined);
      const updated = await store.patchStatus(disk, action.status, remove);
      crashPoint('status-patched');
      return updated;
    }
    case 'createClaim':
      try {
        await store.createClaim(action.claim);
        crashPoint('claim-created');
      } catch (error) {
        // Created by an earlier run that crashed before seeing the answer:
        // the next plan compares it with what it should be.
        if (!isStoreError(error, StoreErrorKind.AlreadyExists)) throw error;
      }
      return disk;
    case 'updateClaim':
      await store.updateClaim(disk.metadata.namespace, action.claim, action.annotations, action.requestBytes);
      crashPoint('claim-updated');
      return disk;
    case 'deleteClaim':
      try {
        await store.deleteClaim(disk.metadata.namespace, action.claim, action.uid);
        crashPoint('claim-deleted');
      } catch (error) {
        if (!isStoreError(error, StoreErrorKind.NotFound)) throw error;
      }
      return disk;
    case 'removeFinalizer': {
      const finalizers = (disk.metadata.finalizers ?? []).filter((f) => f !== FINALIZER);
      try {
        const updated = await store.setFinalizers(disk, finalizers);
        crashPoint('finalizer-removed');
        return updated;
      } catch (error) {
        if (isStoreError(error, StoreErrorKind.NotFound)) return DONE;
        throw error;
      }
    }
  }
}

function eventOf(action: Action) {
  return action.kind === 'addFinalizer' ? undefined : action.event;
}

/** Runs `plan` for the disks in `disks` (by key). */
export async function runPlan(plan: VmPlan, disks: ReadonlyMap<string, DiskObject>, options: ExecutorOptions): Promise<ExecutionResult> {
  const { store, log } = options;
  const result: ExecutionResult = { applied: 0, appliedByKind: new Map(), conflicts: 0, transientErrors: [], terminalErrors: [] };
  const chains = [...plan.steps.entries()];
  let next = 0;

  const runChain = async (key: string, actions: Action[]): Promise<void> => {
    let disk = disks.get(key);
    if (disk === undefined) return;
    for (const action of actions) {
      let after: DiskObject | typeof DONE;
      try {
        after = await runAction(store, disk, action);
      } catch (error) {
        const [namespace = '', name = ''] = key.split('/');
        if (isStoreError(error, StoreErrorKind.Conflict)) {
          result.conflicts += 1;
          log.debug({ disk: key, action: action.kind }, 'conflict: re-reading and re-planning');
          await store.refreshDisk(namespace, name).catch((e: unknown) => result.transientErrors.push(e as Error));
        } else if (isStoreError(error, StoreErrorKind.NotFound) && action.kind !== 'updateClaim') {
          log.debug({ disk: key, action: action.kind }, 'disk is gone');
        } else if (isStoreError(error, StoreErrorKind.Invalid)) {
          log.error({ disk: key, action: action.kind, err: (error as Error).message }, 'write rejected as invalid');
          result.terminalErrors.push(error as Error);
        } else {
          log.warn({ disk: key, action: action.kind, err: (error as Error).message }, 'action failed; will retry');
          result.transientErrors.push(error as Error);
        }
        return;
      }
      result.applied += 1;
      result.appliedByKind.set(action.kind, (result.appliedByKind.get(action.kind) ?? 0) + 1);
      log.info({ disk: key, action: action.kind, ...(eventOf(action) === undefined ? {} : { reason: eventOf(action)?.reason, message: eventOf(action)?.message }) }, 'applied');
      const event = eventOf(action);
      if (event !== undefined) {
        try {
          await store.recordEvent(disk, event);
          crashPoint('event-recorded');
        } catch (error) {
          log.warn({ disk: key, reason: event.reason, err: (error as Error).message }, 'could not record event');
        }
      }
      if (after === DONE) return;
      disk = after;
    }
  };

  const worker = async (): Promise<void> => {
    for (;;) {
      const index = next++;
      const entry = chains[index];
      if (entry === undefined) return;
      await runChain(entry[0], entry[1]);
    }
  };
  const width = Math.max(1, Math.min(options.concurrency ?? 4, chains.length));
  await Promise.all(Array.from({ length: width }, () => worker()));
  return result;
}
