// What `vhba serve` and `vhba qemu-args` share: load the manifests, plan
// against the persisted assignments, and describe each VM as its guest will
// see it (controllers with their sockets, disks with address, identity,
// geometry, backing file and predicted /dev/disk/by-id names).
import { isAbsolute, join, resolve } from 'node:path';
import { loadManifests, type LoadError } from '../operator/api/load.ts';
import type { NormalizedVirtualDisk } from '../operator/api/virtualdisk.ts';
import { loadAssignmentsFile } from '../operator/assignment-file.ts';
import { predictGuestPaths } from '../operator/guest-paths.ts';
import { intentFromDisk } from '../operator/intent.ts';
import { planAssignments, type Assignment, type DiskPlanResult, type Plan } from '../operator/planner.ts';

/** Directories a standalone run uses. */
export interface Dirs {
  socketDir: string;
  stateDir: string;
  dataDir: string;
}

/** Defaults: state in <socket-dir>/.state (never a VM name: those are DNS
 * labels), data in <state-dir>/data. */
export function resolveDirs(socketDir: string, stateDir?: string, dataDir?: string): Dirs {
  const socket = resolve(socketDir);
  const state = resolve(stateDir ?? join(socket, '.state'));
  return { socketDir: socket, stateDir: state, dataDir: resolve(dataDir ?? join(state, 'data')) };
}

/** Where the assignments live. */
export function assignmentsPath(dirs: Dirs): string {
  return join(dirs.stateDir, 'assignments.json');
}

/** The socket QEMU connects to for one controller of a VM. */
export function socketPathFor(dirs: Dirs, vmName: string, controller: number): string {
  return join(dirs.socketDir, vmName, `hba${controller}.sock`);
}

/** One disk as the guest will see it. */
export interface GuestDisk {
  key: string;
  vmName: string;
  controller: number;
  target: number;
  lun: number;
  serial: string;
  /** Lowercase hex without 0x. */
  wwn: string;
  sizeBytes: number;
  logicalBlockSize: number;
  physicalBlockSize: number;
  readOnly: boolean;
  /** Absolute backing file path. */
  backingPath: string;
  guestDevicePaths: string[];
}

/** One controller (vhost-user-scsi-pci device) of a VM. */
export interface GuestController {
  index: number;
  /** Engine controller id, "<vm>/hba<N>". */
  id: string;
  socketPath: string;
  numQueues: number;
}

/** A VM's whole view. */
export interface GuestVm {
  vmName: string;
  controllers: GuestController[];
  disks: GuestDisk[];
}

/** A disk that is valid but not served: unsupported source or refused by the planner. */
export interface SkippedDisk {
  key: string;
  vmName: string;
  reason: string;
  message: string;
}

/** Everything a standalone command needs. */
export interface Topology {
  vms: GuestVm[];
  skipped: SkippedDisk[];
  plan: Plan;
}

/** Result of loading: manifest errors (then nothing else), or the topology. */
export type TopologyResult = { ok: false; errors: LoadError[] } | { ok: true; topology: Topology };

/** Why `vhba serve` cannot serve a disk, or undefined when it can. */
export function unsupportedReason(disk: NormalizedVirtualDisk): string | undefined {
  if (disk.deviceType !== 'disk') return `deviceType ${disk.deviceType} is not supported by vhba serve yet (only disk)`;
  if (disk.source === undefined) return 'a disk with only storageClassName needs the operator; vhba serve supports source.file';
  if (!('file' in disk.source)) return `source.${Object.keys(disk.source)[0]} is not supported by vhba serve (only source.file)`;
  return undefined;
}

/** The absolute backing path of a file disk (relative paths resolve against the data dir). */
export function backingPathOf(disk: NormalizedVirtualDisk, dirs: Dirs): string {
  const path = disk.source !== undefined && 'file' in disk.source ? disk.source.file.path : '';
  return isAbsolute(path) ? path : join(dirs.dataDir, path);
}

/** Loads manifests, plans against the persisted assignments and builds each VM's view. */
export async function loadTopology(configPath: string, dirs: Dirs): Promise<TopologyResult> {
  const loaded = await loadManifests(configPath);
  if (loaded.errors.length > 0) return { ok: false, errors: loaded.errors };
  const current: Map<string, Assignment> = await loadAssignmentsFile(assignmentsPath(dirs));
  return { ok: true, topology: topologyFromDisks(loaded.disks.map((l) => l.disk), current, dirs) };
}

/** Plans valid disks against `current` assignments and builds each VM's view (pure). */
export function topologyFromDisks(disks: readonly NormalizedVirtualDisk[], current: ReadonlyMap<string, Assignment>, dirs: Dirs): Topology {
  const skipped: SkippedDisk[] = [];
  const served: NormalizedVirtualDisk[] = [];
  for (const disk of disks) {
    const reason = unsupportedReason(disk);
    if (reason === undefined) served.push(disk);
    else skipped.push({ key: disk.key, vmName: disk.vmName, reason: 'Unsupported', message: reason });
  }
  const plan = planAssignments(served.map((d) => intentFromDisk(d, 'serve')), current);
  return { vms: buildVms(served, plan, dirs, skipped), skipped, plan };
}

function buildVms(disks: NormalizedVirtualDisk[], plan: Plan, dirs: Dirs, skipped: SkippedDisk[]): GuestVm[] {
  const vms = new Map<string, { disks: GuestDisk[]; queues: Map<number, number> }>();
  for (const disk of [...disks].sort((a, b) => (a.key < b.key ? -1 : 1))) {
    const result: DiskPlanResult | undefined = plan.results.get(disk.key);
    if (result === undefined || !result.ok || result.address === undefined) {
      skipped.push({ key: disk.key, vmName: disk.vmName, reason: result?.condition.reason ?? 'NotPlanned', message: result?.condition.message ?? 'not planned' });
      continue;
    }
    const vmName = result.vmName;
    const vm = vms.get(vmName) ?? { disks: [], queues: new Map<number, number>() };
    vms.set(vmName, vm);
    const { controller, target, lun } = result.address;
    vm.queues.set(controller, Math.max(vm.queues.get(controller) ?? 1, disk.numQueues ?? 1));
    vm.disks.push({
      key: disk.key, vmName, controller, target, lun, serial: result.serial, wwn: result.wwn,
      sizeBytes: disk.capacityBytes, logicalBlockSize: disk.logicalBlockSize, physicalBlockSize: disk.physicalBlockSize,
      readOnly: disk.readOnly, backingPath: backingPathOf(disk, dirs),
      guestDevicePaths: predictGuestPaths({ serial: result.serial, wwn: result.wwn }),
    });
  }
  return [...vms.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([vmName, vm]) => ({
    vmName,
    controllers: [...vm.queues.entries()].sort(([a], [b]) => a - b).map(([index, numQueues]) => ({
      index, id: `${vmName}/hba${index}`, socketPath: socketPathFor(dirs, vmName, index), numQueues,
    })),
    disks: vm.disks.sort((a, b) => a.controller - b.controller || a.target - b.target || a.lun - b.lun),
  }));
}
