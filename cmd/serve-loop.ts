// The loop of `vhba serve`: watch the manifest directory (fs.watch, debounced,
// plus a periodic resync in case an event was missed), and on each pass load
// → plan addresses → plan control-API actions → execute → write what the
// guests see. Level-based: every pass compares the whole directory with what
// the engine reports, so a missed or repeated event changes nothing.
//
// An invalid manifest file never takes running disks away: the disks that
// file defined at its last valid state keep running unchanged, and the error
// (file, document, field, what is allowed) is reported once per change.
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { isInside } from '../hba/control/server.ts';
import { formatLoadError, loadManifests, type LoadedDisk, type LoadResult } from '../operator/api/load.ts';
import { writeFileAtomic } from '../lib/atomic-file.ts';
import { loadAssignmentsFile, saveAssignmentsFile } from '../operator/assignment-file.ts';
import type { EngineClient } from './engine-client.ts';
import { formatGuestTable } from './guest-table.ts';
import { describeAction, executeReconcile, observedFromList, planReconcile, type DesiredState, type ExecutionReport, type ReconcileAction } from './serve-reconcile.ts';
import {
  assignmentsPath, describePassthroughBacking, topologyFromDisks, unstableDevicePathNotice, withDeviceIdentities,
  type Dirs, type GuestVm, type ReportedDevice, type Topology,
} from './topology.ts';
import { isPassthrough } from '../hba/engine-api.ts';
import type { LunSpec } from '../hba/engine-api.ts';

/** The LunSpec for one disk of a VM view (a passthrough disk: its device and policy, no parameters). */
export function lunSpecFor(disk: GuestVm['disks'][number]): LunSpec {
  if (disk.passthrough !== undefined) return { target: disk.target, lun: disk.lun, backing: structuredClone(disk.passthrough.backing) };
  return {
    target: disk.target,
    lun: disk.lun,
    backing: { kind: 'file', path: disk.backingPath, sizeBytes: disk.sizeBytes },
    params: {
      logicalBlockSize: disk.logicalBlockSize,
      physicalBlockSize: disk.physicalBlockSize,
      serial: disk.serial,
      wwn: disk.wwn,
      readOnly: disk.readOnly,
    },
  };
}

/** What the topology asks of the engine (pure). */
export function desiredFromTopology(topology: Topology): DesiredState {
  return {
    controllers: topology.vms.flatMap((vm) => vm.controllers.map((c) => ({ id: c.id, socketPath: c.socketPath, numRequestQueues: c.numQueues }))),
    luns: topology.vms.flatMap((vm) => vm.disks.map((d) => ({ controllerId: `${vm.vmName}/hba${d.controller}`, key: d.key, spec: lunSpecFor(d) }))),
  };
}

/** The disks to serve: valid files as they are now; files with errors as
 * they were at their last valid state (pure). `lastGood` maps file → disks. */
export function effectiveDisks(loaded: LoadResult, configPath: string, lastGood: ReadonlyMap<string, readonly LoadedDisk[]>): { disks: LoadedDisk[]; good: Map<string, LoadedDisk[]>; keptFiles: string[] } {
  const errored = new Set(loaded.errors.map((e) => e.file));
  if (errored.has(configPath)) {
    // The directory itself is unreadable: keep everything.
    return { disks: [...lastGood.values()].flat(), good: new Map([...lastGood].map(([f, d]) => [f, [...d]])), keptFiles: [...lastGood.keys()] };
  }
  const good = new Map<string, LoadedDisk[]>();
  for (const d of loaded.disks) {
    if (errored.has(d.file)) continue;
    const list = good.get(d.file) ?? [];
    list.push(d);
    good.set(d.file, list);
  }
  const keptFiles: string[] = [];
  for (const file of errored) {
    const previous = lastGood.get(file);
    if (previous !== undefined) {
      good.set(file, [...previous]);
      if (previous.length > 0) keptFiles.push(file);
    }
  }
  const seen = new Set<string>();
  const disks: LoadedDisk[] = [];
  const files = [...good.keys()].sort((a, b) => Number(errored.has(a)) - Number(errored.has(b)) || (a < b ? -1 : a > b ? 1 : 0));
  for (const file of files) {
    for (const d of good.get(file)!) {
      if (seen.has(d.disk.key)) continue;
      seen.add(d.disk.key);
      disks.push(d);
    }
  }
  return { disks, good, keptFiles: keptFiles.sort() };
}


/** One pass's outcome. */
export interface PassResult {
  /** Manifest errors (formatted); the disks of their files were kept. */
  loadErrors: string[];
  notices: string[];
  execution: ExecutionReport;
  topology: Topology;
}

/** Settings of the loop. */
export interface ServeLoopOptions {
  configPath: string;
  dirs: Dirs;
  client: EngineClient;
  logger: Logger;
  out: (text: string) => void;
  err: (text: string) => void;
  /** Quiet time after the last file event before a pass. Default 200 ms. */
  debounceMs?: number;
  /** Full pass every this many ms even without events. Default 30 s; 0 disables. */
  resyncMs?: number;
}

/** The directory reconciler. Passes never overlap; a trigger during a pass runs one more after it. */
export class ServeLoop {
  readonly #o: ServeLoopOptions;
  #lastGood = new Map<string, LoadedDisk[]>();
  #topology: Topology | undefined;
  #running: Promise<PassResult> | undefined;
  /** The pass queued behind the running one; every caller meanwhile shares it. */
  #next: Promise<PassResult> | undefined;
  #watcher: FSWatcher | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #resync: NodeJS.Timeout | undefined;
  #lastErrors = '';
  #lastNotices = '';
  #lastAssignments = '';
  readonly #written = new Map<string, string>();
  #stopped = false;
  /** Passes completed (tests wait on it). */
  passes = 0;

  constructor(options: ServeLoopOptions) {
    this.#o = options;
  }

  /** The topology of the last pass. */
  get topology(): Topology | undefined {
    return this.#topology;
  }

  /** Runs a pass now (or after the running one); resolves with its result. */
  reconcile(): Promise<PassResult> {
    if (this.#running) {
      this.#next ??= this.#running.catch(() => undefined).then(() => {
        this.#next = undefined;
        return this.reconcile();
      });
      return this.#next;
    }
    const run = this.#pass().finally(() => {
      this.#running = undefined;
    });
    this.#running = run;
    return run;
  }

  /** Starts watching the manifests and the periodic resync. */
  async start(): Promise<void> {
    const config = this.#o.configPath;
    const isDir = (await stat(config)).isDirectory();
    const dir = isDir ? config : dirname(config);
    const only = isDir ? undefined : basename(config);
    this.#watcher = watch(dir, { persistent: false }, (_event, filename) => {
      if (only !== undefined && filename !== null && filename !== only) return;
      this.trigger();
    });
    this.#watcher.on('error', (error) => this.#o.logger.warn({ err: error }, 'watching the manifests failed; periodic resync continues'));
    const resyncMs = this.#o.resyncMs ?? 30_000;
    if (resyncMs > 0) {
      this.#resync = setInterval(() => this.trigger(0), resyncMs);
      this.#resync.unref();
    }
  }

  /** Schedules a pass after `delayMs` of quiet (file events come in bursts). */
  trigger(delayMs = this.#o.debounceMs ?? 200): void {
    if (this.#stopped) return;
    clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      void this.reconcile().catch((error: unknown) => this.#o.logger.error({ err: error }, 'reconcile pass failed'));
    }, delayMs);
  }

  /** Stops watching; waits for a running pass. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watcher?.close();
    clearTimeout(this.#debounce);
    clearInterval(this.#resync);
    await this.#running?.catch(() => undefined);
  }

  async #pass(): Promise<PassResult> {
    const { configPath, dirs, client, logger, out, err } = this.#o;
    const loaded = await loadManifests(configPath);
    // A file that served disks and is now empty is most likely being
    // rewritten in place (truncate, then write): keep its disks.
    for (const file of this.#lastGood.keys()) {
      const size = await stat(file).then((s) => s.size, () => -1);
      if (size === 0) loaded.errors.push({ file, field: '(file)', message: 'is empty; delete the file to remove its disks' });
    }
    const effective = effectiveDisks(loaded, configPath, this.#lastGood);
    this.#lastGood = effective.good;
    const loadErrors = loaded.errors.map(formatLoadError);
    const errorsText = loadErrors.length === 0 ? '' : `${loadErrors.join('\n')}\n${effective.keptFiles.map((f) => `vhba serve: ${f} is invalid: its disks keep running as they were; fix the file to apply changes\n`).join('')}`;
    if (errorsText !== this.#lastErrors) {
      if (errorsText !== '') err(errorsText);
      else if (this.#lastErrors !== '') err('vhba serve: the manifests are valid again\n');
      this.#lastErrors = errorsText;
    }

    const current = await loadAssignmentsFile(assignmentsPath(dirs));
    let topology = topologyFromDisks(effective.disks.map((d) => d.disk), current, dirs);
    const assignmentsText = JSON.stringify([...topology.plan.assignments.values()]);
    if (assignmentsText !== this.#lastAssignments) {
      await saveAssignmentsFile(assignmentsPath(dirs), topology.plan.assignments);
      this.#lastAssignments = assignmentsText;
    }
    const previous = this.#topology;
    this.#topology = topology;
    if (previous === undefined) for (const s of topology.skipped) logger.warn({ disk: s.key, vm: s.vmName, reason: s.reason }, `not served: ${s.message}`);

    const observed = observedFromList(await client.listControllers({}));
    const plan = planReconcile(desiredFromTopology(topology), observed, (c) => isInside(dirs.socketDir, c.socketPath));
    const servedKeys = new Set(topology.vms.flatMap((vm) => vm.disks.map((d) => d.key)));
    for (const d of effective.disks) {
      const notice = servedKeys.has(d.disk.key) ? unstableDevicePathNotice(d.disk) : undefined;
      if (notice !== undefined) plan.notices.push(notice);
    }
    const noticesText = plan.notices.join('\n');
    if (noticesText !== this.#lastNotices) {
      for (const n of plan.notices) err(`vhba serve: ${n}\n`);
      this.#lastNotices = noticesText;
    }
    const execution = await executeReconcile(client, plan.actions, logger);
    for (const f of execution.failures) err(`vhba serve: ${describeAction(f.action)} failed: ${f.message}\n`);
    topology = await this.#withDevices(topology, execution);
    this.#topology = topology;
    if (previous !== undefined) {
      for (const a of execution.applied) {
        if (a.kind === 'createController') err(`vhba serve: new controller ${a.controller.id}: a running VM sees it only after a restart with the arguments 'vhba qemu-args' prints (a PCI device is not hotplugged)\n`);
      }
    }

    for (const vm of topology.vms) {
      const text = `${JSON.stringify(vm, null, 2)}\n`;
      if (this.#written.get(vm.vmName) === text) continue;
      await mkdir(join(dirs.socketDir, vm.vmName), { recursive: true, mode: 0o700 });
      await writeFileAtomic(join(dirs.socketDir, vm.vmName, 'disks.json'), text, 0o644);
      this.#written.set(vm.vmName, text);
    }
    if (previous !== undefined && execution.applied.length > 0) {
      out(`${execution.applied.map((a) => `${summarize(a, topology)}\n`).join('')}`);
    }
    if (previous === undefined || execution.applied.some((a) => a.kind !== 'resizeLun')) {
      if (previous === undefined || execution.applied.length > 0) out(formatGuestTable(topology.vms, topology.skipped));
    }
    this.passes++;
    return { loadErrors, notices: plan.notices, execution, topology };
  }

  /** Passthrough disks: the device identity the engine reports (a fresh
   * ListControllers, so disks attached in earlier passes or runs have it
   * too) and this pass's attach failures, for disks.json and the table. */
  async #withDevices(topology: Topology, execution: ExecutionReport): Promise<Topology> {
    if (!topology.vms.some((vm) => vm.disks.some((d) => d.passthrough !== undefined))) return topology;
    const attachErrors = new Map<string, string>();
    for (const f of execution.failures) {
      if (f.action.kind === 'attachLun' && isPassthrough(f.action.spec.backing)) attachErrors.set(f.action.key, f.message);
    }
    let reported: ReportedDevice[] = [];
    try {
      reported = observedFromList(await this.#o.client.listControllers({})).flatMap((c) => c.luns.map((l) => ({ controllerId: c.id, target: l.target, lun: l.lun, ...(l.device === undefined ? {} : { device: l.device }) })));
    } catch (error) {
      this.#o.logger.warn({ err: error }, 'listing the engine\'s devices failed; passthrough identities are shown as expected');
    }
    return { ...topology, vms: withDeviceIdentities(topology.vms, reported, attachErrors) };
  }
}

/** One line per applied change, with the guest paths of new disks (and a
 * passthrough disk's device identity). */
function summarize(a: ReconcileAction, topology: Topology): string {
  if (a.kind !== 'attachLun') return describeAction(a);
  const disk = topology.vms.flatMap((vm) => vm.disks).find((d) => d.key === a.key);
  if (disk?.passthrough !== undefined) {
    const dev = disk.passthrough.device;
    const what = dev === undefined ? '' : ` ${dev.vendor.trim()} ${dev.product.trim()}, serial ${dev.serial || '(none)'}, wwn ${dev.wwn ? `0x${dev.wwn}` : '(no NAA designator)'}, ${dev.sizeBytes} bytes in ${dev.logicalBlockSize}-byte blocks`;
    return `${describeAction(a)}: ${describePassthroughBacking(disk.passthrough.backing)}${what}${disk.guestDevicePaths.length > 0 ? `: ${disk.guestDevicePaths.join(' ')}` : ''}`;
  }
  return `${describeAction(a)}${disk ? `: ${disk.guestDevicePaths.join(' ')}` : ''}`;
}
