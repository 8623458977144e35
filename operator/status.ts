// From a planner result to the VirtualDisk status users see. Pure; the
// caller supplies the time for lastTransitionTime.
import { formatWwn, type Condition, type VirtualDiskStatus } from './api/virtualdisk.ts';
import { predictGuestPaths } from './guest-paths.ts';
import type { DiskPlanResult } from './planner.ts';

/** Status after planning: phase Assigned (or Failed), the Assigned condition,
 * and, when assigned, the address, identity and predicted guest paths. */
export function statusFromPlan(result: DiskPlanResult, generation: number | undefined, now: string): VirtualDiskStatus {
  const condition: Condition = { ...result.condition, lastTransitionTime: now };
  if (generation !== undefined) condition.observedGeneration = generation;
  const status: VirtualDiskStatus = { phase: result.ok ? 'Assigned' : 'Failed', conditions: [condition] };
  if (generation !== undefined) status.observedGeneration = generation;
  if (result.ok && result.address !== undefined) {
    status.address = { ...result.address };
    status.serial = result.serial;
    status.wwn = formatWwn(result.wwn);
    status.guestDevicePaths = predictGuestPaths(result);
  }
  return status;
}
