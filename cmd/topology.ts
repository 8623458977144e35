// What `vhba serve` and `vhba qemu-args` share: load the manifests, plan
// against the persisted assignments, and describe each VM as its guest will
// see it (controllers with their sockets, disks with address, identity,
// geometry, backing file and predicted /dev/disk/by-id names).
//
// Passthrough disks (deviceType lun, issue 8) are served too: the engine
// gets the device (source.hostDevice or source.iscsi) with its policy and
// the spec's expected identity, and the guest sees the device's own serial,
// WWN, capacity and block sizes. Until the device has been attached those are
// the expected ones (or unknown: '' and 0); withDeviceIdentities() fills in
// what the engine reports.
import { isAbsolute, join, resolve } from 'node:path';
import type { DeviceIdentity, PassthroughBacking, PassthroughPolicy } from '../hba/engine-api.ts';
import { loadManifests, type LoadError } from '../operator/api/load.ts';
import type { NormalizedVirtualDisk } from '../operator/api/virtualdisk.ts';
import { loadAssignmentsFile } from '../operator/assignment-file.ts';
import { expectedPassthroughWwn, predictGuestPaths } from '../operator/guest-paths.ts';
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

/** What serve knows of a passthrough disk beyond its address. */
export interface GuestPassthrough {
  /** What the engine is asked to attach (device and policy). */
  backing: PassthroughBacking;
  /** The device's identity as the engine reported it, once attached. */
  device?: DeviceIdentity;
  /** The engine's message when the last attach failed (the disk is not in the guest). */
  attachError?: string;
}

/** One disk as the guest will see it. */
export interface GuestDisk {
  key: string;
  vmName: string;
  controller: number;
  target: number;
  lun: number;
  /** Passthrough: the device's (expected, or reported) serial; '' while unknown. */
  serial: string;
  /** Lowercase hex without 0x. Passthrough: the device's NAA designator; '' while unknown or when it has none. */
  wwn: string;
  /** Passthrough: the device's, 0 while unknown (likewise the block sizes). */
  sizeBytes: number;
  logicalBlockSize: number;
  physicalBlockSize: number;
  /** Passthrough: false (the device reports its own write protection). */
  readOnly: boolean;
  /** Absolute backing file path; passthrough: the device path, or iscsi://portal/iqn/lun. */
  backingPath: string;
  guestDevicePaths: string[];
  /** Set for deviceType lun. */
  passthrough?: GuestPassthrough;
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
  if (disk.source === undefined) return 'a disk with only storageClassName needs the operator; vhba serve supports source.file, source.hostDevice and source.iscsi';
  if ('pvc' in disk.source) return 'source.pvc is not supported by vhba serve (it has no PersistentVolumeClaims); use source.file';
  return undefined;
}

/** The engine backing of a passthrough disk: its device, the policy, and the
 * spec's serial/WWN (or the WWN a by-id hostDevice path names) as the
 * identity the device must have. Undefined for
 * other disks. */
export function passthroughBackingOf(disk: NormalizedVirtualDisk): PassthroughBacking | undefined {
  if (disk.deviceType !== 'lun' || disk.source === undefined) return undefined;
  const policy: PassthroughPolicy = { rawio: disk.rawio };
  const wwn = expectedPassthroughWwn(disk.wwn, 'hostDevice' in disk.source ? disk.source.hostDevice.path : undefined);
  if (wwn !== undefined) policy.expectedWwn = wwn;
  if (disk.serial !== undefined) policy.expectedSerial = disk.serial;
  if ('hostDevice' in disk.source) return { kind: 'hostDevice', path: disk.source.hostDevice.path, policy };
  if ('iscsi' in disk.source) {
    const { portal, iqn, lun, initiatorName } = disk.source.iscsi;
    return { kind: 'iscsi', portal, iqn, lun, ...(initiatorName === undefined ? {} : { initiatorName }), policy };
  }
  return undefined;
}

/** A passthrough backing in one string: the device path, or iscsi://portal/iqn/lun (RFC 4173 style). */
export function describePassthroughBacking(backing: PassthroughBacking): string {
  return backing.kind === 'hostDevice' ? backing.path : `iscsi://${backing.portal}/${backing.iqn}/${backing.lun}`;
}

/** A notice for a passthrough disk whose device path is not a stable by-id link, or undefined. */
export function unstableDevicePathNotice(disk: NormalizedVirtualDisk): string | undefined {
  if (disk.deviceType !== 'lun' || disk.source === undefined || !('hostDevice' in disk.source)) return undefined;
  const path = disk.source.hostDevice.path;
  if (path.startsWith('/dev/disk/by-id/')) return undefined;
  return `${disk.key}: source.hostDevice.path ${path} may name another device after a reboot or hotplug; use the device's /dev/disk/by-id/ link (ls -l /dev/disk/by-id | grep ${path.split('/').pop() ?? ''})`;
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
    const passthrough = passthroughBackingOf(disk);
    if (passthrough !== undefined) {
      // The device's own identity and geometry: the expected ones until the engine reports them.
      vm.disks.push({
        key: disk.key, vmName, controller, target, lun, serial: result.serial, wwn: result.wwn,
        sizeBytes: 0, logicalBlockSize: 0, physicalBlockSize: 0, readOnly: false, backingPath: describePassthroughBacking(passthrough),
        guestDevicePaths: predictGuestPaths({ serial: result.serial, wwn: result.wwn }), passthrough: { backing: passthrough },
      });
      continue;
    }
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

/** A LUN the engine reported, located: controller id, address and the device it found. */
export interface ReportedDevice {
  controllerId: string;
  target: number;
  lun: number;
  device?: DeviceIdentity;
}

/** The VMs with each passthrough disk's device identity and geometry filled
 * in from what the engine reports (pure). The spec's expected serial/WWN stay
 * (the engine refuses a device that differs); a device without NAA
 * designator keeps wwn '' and gets no predicted guest paths. `attachErrors`
 * maps disk key → the engine's message for disks whose attach failed. */
export function withDeviceIdentities(vms: readonly GuestVm[], reported: readonly ReportedDevice[], attachErrors: ReadonlyMap<string, string>): GuestVm[] {
  const byAddress = new Map(reported.map((r) => [`${r.controllerId} ${r.target}:${r.lun}`, r.device]));
  return vms.map((vm) => ({
    ...vm,
    disks: vm.disks.map((d) => {
      if (d.passthrough === undefined) return d;
      const device = byAddress.get(`${vm.vmName}/hba${d.controller} ${d.target}:${d.lun}`);
      const error = attachErrors.get(d.key);
      const passthrough: GuestPassthrough = { backing: d.passthrough.backing };
      if (device !== undefined && error === undefined) passthrough.device = device;
      if (error !== undefined) passthrough.attachError = error;
      const known = passthrough.device;
      if (known === undefined) return { ...d, passthrough };
      const serial = d.passthrough.backing.policy.expectedSerial ?? known.serial;
      const wwn = d.passthrough.backing.policy.expectedWwn ?? known.wwn;
      return {
        ...d, serial, wwn, sizeBytes: known.sizeBytes, logicalBlockSize: known.logicalBlockSize, physicalBlockSize: known.physicalBlockSize,
        guestDevicePaths: predictGuestPaths({ serial, wwn }), passthrough,
      };
    }),
  }));
}
