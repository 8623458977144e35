// From validated VirtualDisks to the planner's input. Pure.
import type { NormalizedVirtualDisk } from './api/virtualdisk.ts';
import { expectedPassthroughWwn } from './guest-paths.ts';
import type { DiskIntent } from './planner.ts';

/** How a disk's identity seed and VM identity are chosen:
 *  - 'serve': seed = "namespace/name", VM = spec.vmName (one socket directory per VM name);
 *  - 'operator': seed = metadata.uid (falls back to the key), VM = "namespace/vmName". */
export type IntentMode = 'serve' | 'operator';

/** The planner's view of one disk (a lun disk's serial/WWN are the expected
 * device identity: spec.wwn, or the WWN its /dev/disk/by-id/wwn-0x… or
 * scsi-3… hostDevice path names). */
export function intentFromDisk(disk: NormalizedVirtualDisk, mode: IntentMode = 'serve'): DiskIntent {
  const intent: DiskIntent = {
    key: disk.key,
    identitySeed: mode === 'operator' ? (disk.uid ?? disk.key) : disk.key,
    vmName: mode === 'operator' ? `${disk.namespace}/${disk.vmName}` : disk.vmName,
    ioProfile: disk.ioProfile,
  };
  if (disk.address !== undefined) intent.address = { ...disk.address };
  if (disk.serial !== undefined) intent.serial = disk.serial;
  if (disk.wwn !== undefined) intent.wwn = disk.wwn;
  if (disk.deviceType === 'lun') {
    intent.passthrough = true;
    const fromPath = expectedPassthroughWwn(disk.wwn, disk.source !== undefined && 'hostDevice' in disk.source ? disk.source.hostDevice.path : undefined);
    if (fromPath !== undefined) intent.wwn = fromPath;
  }
  return intent;
}
