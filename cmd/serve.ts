// `vhba serve`: the standalone mode. Reads VirtualDisk manifests, plans
// addresses (persisted in <state-dir>/assignments.json so restarts keep
// them), drives the engine (one controller per VM controller, one LUN per
// disk), prints what each guest will see, writes <socket-dir>/<vm>/disks.json
// with the same view, and runs until SIGINT/SIGTERM.
//
// Engine failures are fatal (exit 1, engine closed); disks the planner
// refuses or whose source serve does not support are reported and skipped.
import { mkdir, open, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pino, type Logger } from 'pino';
import type { Engine, LunSpec } from '../hba/engine-api.ts';
import { formatLoadError } from '../operator/api/load.ts';
import { saveAssignmentsFile } from '../operator/assignment-file.ts';
import { EXIT_USAGE, oneOf, parseFlags, required } from './args.ts';
import { formatGuestTable } from './guest-table.ts';
import { assignmentsPath, loadTopology, resolveDirs, type Dirs, type GuestVm, type Topology } from './topology.ts';

/** Help text. */
export const SERVE_USAGE = `Usage: vhba serve --config <dir|file> --socket-dir <dir> [options]

Serves the VirtualDisks in <config> to QEMU over vhost-user-scsi, one socket
per VM controller at <socket-dir>/<vm>/hba<N>.sock.

Options:
  --config <dir|file>   VirtualDisk manifests (*.yaml, *.yml, *.json)
  --socket-dir <dir>    where to create the sockets (and <vm>/disks.json)
  --state-dir <dir>     assignments.json lives here (default <socket-dir>/.state)
  --data-dir <dir>      base of relative source.file.path (default <state-dir>/data)
  --log-level <level>   fatal, error, warn, info (default), debug, trace, silent
  -h, --help            this help`;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Builds the engine; the default loads hba/engine.ts (createEngine export). */
export type EngineFactory = (logger: Logger) => Engine | Promise<Engine>;

/** The real engine, loaded lazily so this module does not depend on it at type level. */
export const defaultEngineFactory: EngineFactory = async (logger) => {
  const url = new URL('../hba/engine.ts', import.meta.url).href;
  const module = (await import(url)) as { createEngine?: EngineFactory };
  if (typeof module.createEngine !== 'function') throw new Error('hba/engine.ts has no createEngine export');
  return module.createEngine(logger);
};

/** What a running serve exposes (tests drive it directly). */
export interface ServeHandle {
  topology: Topology;
  engine: Engine;
  stop(): Promise<void>;
}

/** Options for startServe. */
export interface ServeOptions {
  configPath: string;
  dirs: Dirs;
  logger: Logger;
  engineFactory: EngineFactory;
  out: (text: string) => void;
  err: (text: string) => void;
}

/** Writes a file atomically (temp, fsync, rename). */
async function writeFileAtomic(path: string, text: string): Promise<void> {
  const temp = join(dirname(path), `.${process.pid}.${Date.now()}.tmp`);
  const handle = await open(temp, 'w', 0o644);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temp, path);
}

/** The LunSpec for one disk of a VM view. */
export function lunSpecFor(disk: GuestVm['disks'][number]): LunSpec {
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

/** Brings every VM up on the engine. Returns the handle, or an exit code
 * (2: invalid manifests; 1: engine failure, engine closed). */
export async function startServe(options: ServeOptions): Promise<ServeHandle | number> {
  const { dirs, logger, out, err } = options;
  const loaded = await loadTopology(options.configPath, dirs);
  if (!loaded.ok) {
    for (const e of loaded.errors) err(`${formatLoadError(e)}\n`);
    err(`vhba serve: ${loaded.errors.length} error(s) in ${options.configPath}; nothing served\n`);
    return EXIT_USAGE;
  }
  const { topology } = loaded;
  await saveAssignmentsFile(assignmentsPath(dirs), topology.plan.assignments);
  for (const s of topology.skipped) logger.warn({ disk: s.key, vm: s.vmName, reason: s.reason }, `not served: ${s.message}`);

  const engine = await options.engineFactory(logger);
  try {
    for (const vm of topology.vms) {
      await mkdir(join(dirs.socketDir, vm.vmName), { recursive: true, mode: 0o700 });
      for (const c of vm.controllers) {
        await engine.createController({ id: c.id, socketPath: c.socketPath, numRequestQueues: c.numQueues });
        logger.info({ vm: vm.vmName, controller: c.id, socket: c.socketPath, queues: c.numQueues }, 'controller created');
      }
      for (const d of vm.disks) {
        await mkdir(dirname(d.backingPath), { recursive: true });
        await engine.attachLun(`${vm.vmName}/hba${d.controller}`, lunSpecFor(d));
        logger.info({ disk: d.key, address: `${d.controller}:${d.target}:${d.lun}`, serial: d.serial, wwn: d.wwn }, 'LUN attached');
      }
      await writeFileAtomic(join(dirs.socketDir, vm.vmName, 'disks.json'), `${JSON.stringify(vm, null, 2)}\n`);
    }
  } catch (error) {
    logger.error({ err: error }, 'engine failed; stopping');
    err(`vhba serve: ${(error as Error).message}\n`);
    await engine.close().catch((closeError: unknown) => logger.error({ err: closeError }, 'engine close failed'));
    return 1;
  }
  out(formatGuestTable(topology.vms, topology.skipped));
  let stopped = false;
  return {
    topology,
    engine,
    async stop() {
      if (stopped) return;
      stopped = true;
      await engine.close();
      logger.info('engine closed');
    },
  };
}

/** Resolves when the process gets SIGINT or SIGTERM. */
export function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

/** Runs the subcommand until a signal; returns the exit code. */
export async function runServe(argv: string[], engineFactory: EngineFactory = defaultEngineFactory): Promise<number> {
  const flags = parseFlags('serve', argv, {
    config: { type: 'string' },
    'socket-dir': { type: 'string' },
    'state-dir': { type: 'string' },
    'data-dir': { type: 'string' },
    'log-level': { type: 'string', default: 'info' },
    help: { type: 'boolean', short: 'h' },
  });
  if (flags.help === true) {
    process.stdout.write(`${SERVE_USAGE}\n`);
    return 0;
  }
  const configPath = required('serve', 'config', flags.config);
  const socketDir = required('serve', 'socket-dir', flags['socket-dir']);
  const level = oneOf('serve', 'log-level', flags['log-level'] ?? 'info', LOG_LEVELS);
  const logger = pino({ level, name: 'vhba-serve' }, pino.destination({ fd: 2, sync: true }));
  const signal = waitForSignal();
  const started = await startServe({
    configPath,
    dirs: resolveDirs(socketDir, flags['state-dir'], flags['data-dir']),
    logger,
    engineFactory,
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
  });
  if (typeof started === 'number') return started;
  logger.info({ vms: started.topology.vms.length }, 'serving; SIGINT or SIGTERM stops');
  const received = await signal;
  logger.info({ signal: received }, 'stopping');
  await started.stop();
  return 0;
}
