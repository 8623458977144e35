// From a planner result to the VirtualDisk status users see. Pure; the
// caller supplies the time for lastTransitionTime.
import { formatWwn, type Condition, type VirtualDiskStatus } from './api/virtualdisk.ts';
import { predictGuestPaths } from './guest-paths.ts';
import type { DiskPlanResult } from './planner.ts';

/** Condition type of a passthrough disk saying where its identity comes from. */
export const DEVICE_IDENTITY_CONDITION = 'DeviceIdentity';

/** What is known of a passthrough device's identity (e.g. from the engine's
 * attach answer): the VPD 80h serial and the VPD 83h NAA designator ('' if none). */
export interface KnownDeviceIdentity {
  serial: string;
  /** Lowercase hex without 0x; '' when the device has no NAA designator. */
  wwn: string;
}

/** Status after planning: phase Assigned (or Failed), the Assigned condition,
 * and, when assigned, the address, identity and predicted guest paths.
 *
 * A passthrough (deviceType lun) disk shows its device's own identity: the
 * spec's expected serial/WWN when given, else `device` (what the attached
 * device reported) when known, else nothing; a DeviceIdentity condition says
 * which, and what to do to see it here. */
export function statusFromPlan(result: DiskPlanResult, generation: number | undefined, now: string, device?: KnownDeviceIdentity): VirtualDiskStatus {
  const condition: Condition = { ...result.condition, lastTransitionTime: now };
  if (generation !== undefined) condition.observedGeneration = generation;
  const status: VirtualDiskStatus = { phase: result.ok ? 'Assigned' : 'Failed', conditions: [condition] };
  if (generation !== undefined) status.observedGeneration = generation;
  if (!result.ok || result.address === undefined) return status;
  status.address = { ...result.address };
  if (result.passthrough !== true) {
    status.serial = result.serial;
    status.wwn = formatWwn(result.wwn);
    status.guestDevicePaths = predictGuestPaths(result);
    return status;
  }
  const identity = passthroughIdentity(result, device);
  if (identity.serial !== '') status.serial = identity.serial;
  if (identity.wwn !== '') {
    status.wwn = formatWwn(identity.wwn);
    status.guestDevicePaths = predictGuestPaths(identity);
  }
  const known: Condition = { type: DEVICE_IDENTITY_CONDITION, status: 'True', reason: identity.reason, message: identity.message, lastTransitionTime: now };
  if (generation !== undefined) known.observedGeneration = generation;
  status.conditions?.push(known);
  return status;
}

/** Where a passthrough disk's reported identity comes from, and a sentence for users. */
function passthroughIdentity(result: DiskPlanResult, device: KnownDeviceIdentity | undefined): KnownDeviceIdentity & { reason: string; message: string } {
  const fromSpec = result.serial !== '' || result.wwn !== '';
  const serial = result.serial !== '' ? result.serial : (device?.serial ?? '');
  const wwn = result.wwn !== '' ? result.wwn : (device?.wwn ?? '');
  const noNaa = 'the device has no NAA designator (VPD 83h), so its /dev/disk/by-id names come from its other designators: see ls -l /dev/disk/by-id in the guest';
  if (fromSpec) {
    const rest = wwn === '' ? `; ${device === undefined ? 'set spec.wwn to have the guest paths predicted' : noNaa}` : '';
    return { serial, wwn, reason: 'ExpectedBySpec', message: `the guest sees the device's own serial and WWN; shown here as expected by spec.serial/spec.wwn or by the WWN in the hostDevice's /dev/disk/by-id/wwn-0x… or scsi-3… name (attach refuses a device that differs)${rest}` };
  }
  if (device !== undefined) {
    return { serial, wwn, reason: 'ReportedByDevice', message: `serial and WWN as the attached device reported them (VPD 80h/83h)${wwn === '' ? `; ${noNaa}` : ''}` };
  }
  return {
    serial, wwn, reason: 'FromDevice',
    message: 'the guest sees the device\'s own serial and WWN, which vhba learns only when the device is attached on the node; set spec.serial and spec.wwn to the device\'s values (or name a host device by its /dev/disk/by-id/wwn-0x… link) to have them (and the guest paths) shown here and checked at attach',
  };
}
