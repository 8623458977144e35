// `vhba serve`: the standalone mode. Runs an engine and its control API in
// this process and drives it through that same API from a directory of
// VirtualDisk manifests (cmd/serve-loop.ts): the directory is watched, and
// adding a manifest hotplugs the disk into the running VM, deleting it
// unplugs it, raising its capacity grows it. Addresses are planned by the
// shared planner and persisted in <state-dir>/assignments.json so restarts
// keep them; <socket-dir>/<vm>/disks.json shows what each guest sees.
//
// At start: invalid manifests → exit 2 with nothing served; an engine
// failure → exit 1, engine closed. While running: an invalid edit is reported
// (file, field, what is allowed) and leaves the running disks untouched;
// disks the planner refuses or whose source serve does not support are
// reported and skipped; a passthrough device that fails to attach is
// reported for its disk (and retried each pass) while the rest is served.
import { join, resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import { isPassthrough, type Engine } from '../hba/engine-api.ts';
import { startControlServer, type ControlServer } from '../hba/control/server.ts';
import { formatLoadError, loadManifests } from '../operator/api/load.ts';
import { EXIT_USAGE, UsageError, oneOf, parseFlags, required } from './args.ts';
import { connectEngine, type EngineClient } from './engine-client.ts';
import { describeAction } from './serve-reconcile.ts';
import { ServeLoop } from './serve-loop.ts';
import { resolveDirs, type Dirs, type Topology } from './topology.ts';

export { lunSpecFor } from './serve-loop.ts';

/** Help text. */
export const SERVE_USAGE = `Usage: vhba serve --config <dir|file> --socket-dir <dir> [options]

Serves the VirtualDisks in <config> to QEMU over vhost-user-scsi, one socket
per VM controller at <socket-dir>/<vm>/hba<N>.sock, and keeps following
<config>: new manifests are hotplugged into running VMs, deleted ones
unplugged, a larger capacity grows the disk.

Options:
  --config <dir|file>      VirtualDisk manifests (*.yaml, *.yml, *.json)
  --socket-dir <dir>       where to create the sockets (and <vm>/disks.json)
  --state-dir <dir>        assignments.json lives here (default <socket-dir>/.state)
  --data-dir <dir>         base of relative source.file.path (default <state-dir>/data)
  --control-socket <path>  the engine's control API, for vhba ls|attach|detach|resize
                           (default <socket-dir>/engine.sock)
  --resync-seconds <n>     full reconcile every n seconds besides file events (default 30; 0: never)
  --log-level <level>      fatal, error, warn, info (default), debug, trace, silent
  -h, --help               this help`;

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
  /** The topology of the last reconcile pass. */
  readonly topology: Topology;
  engine: Engine;
  /** The control API address (unix://…). */
  controlAddress: string;
  /** The directory reconciler (reconcile() runs a pass now). */
  loop: ServeLoop;
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
  /** Default <socket-dir>/engine.sock. */
  controlSocket?: string;
  /** Periodic full pass; default 30 s, 0 disables. */
  resyncMs?: number;
  /** Quiet time after file events; default 200 ms. */
  debounceMs?: number;
  /** Watch the directory (default true). */
  watch?: boolean;
}

/** Starts engine, control API and the first reconcile pass. Returns the
 * handle, or an exit code (2: invalid manifests; 1: engine failure, engine closed). */
export async function startServe(options: ServeOptions): Promise<ServeHandle | number> {
  const { dirs, logger, err } = options;
  const configPath = resolve(options.configPath);
  const first = await loadManifests(configPath);
  if (first.errors.length > 0) {
    for (const e of first.errors) err(`${formatLoadError(e)}\n`);
    err(`vhba serve: ${first.errors.length} error(s) in ${configPath}; nothing served\n`);
    return EXIT_USAGE;
  }
  const engine = await options.engineFactory(logger);
  let server: ControlServer | undefined;
  let client: EngineClient | undefined;
  let loop: ServeLoop | undefined;
  const shutdown = async () => {
    await loop?.stop();
    client?.close();
    await server?.close().catch((error: unknown) => logger.error({ err: error }, 'control server close failed'));
    await engine.close().catch((error: unknown) => logger.error({ err: error }, 'engine close failed'));
  };
  try {
    server = await startControlServer(engine, options.controlSocket ?? join(dirs.socketDir, 'engine.sock'), logger, { socketRoot: dirs.socketDir });
    client = connectEngine(server.address);
    loop = new ServeLoop({ configPath, dirs, client, logger, out: options.out, err, ...(options.resyncMs !== undefined ? { resyncMs: options.resyncMs } : {}), ...(options.debounceMs !== undefined ? { debounceMs: options.debounceMs } : {}) });
    const pass = await loop.reconcile();
    // A passthrough device that cannot be attached (absent, not SCSI, another
    // identity) is that disk's problem, reported for it; the rest is served.
    const fatal = pass.execution.failures.filter((f) => !(f.action.kind === 'attachLun' && isPassthrough(f.action.spec.backing)));
    if (fatal.length > 0) {
      throw new Error(fatal.map((f) => `${describeAction(f.action)}: ${f.message}`).join('; '));
    }
    if (options.watch ?? true) await loop.start();
  } catch (error) {
    logger.error({ err: error }, 'engine failed; stopping');
    err(`vhba serve: ${(error as Error).message}\n`);
    await shutdown();
    return 1;
  }
  logger.info({ control: server.address }, 'control API listening');
  let stopped = false;
  const running = loop;
  return {
    get topology() {
      return running.topology!;
    },
    engine,
    controlAddress: server.address,
    loop: running,
    async stop() {
      if (stopped) return;
      stopped = true;
      await shutdown();
      logger.info('engine closed');
    },
  };
}

/** Resolves when the process gets SIGINT or SIGTERM. */
export function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolveSignal) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolveSignal(signal);
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
    'control-socket': { type: 'string' },
    'resync-seconds': { type: 'string', default: '30' },
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
  const resync = flags['resync-seconds'] ?? '30';
  if (!/^[0-9]{1,6}$/.test(resync)) throw new UsageError(`vhba serve: --resync-seconds ${JSON.stringify(resync)} is not allowed; allowed: a whole number of seconds, 0 to disable`);
  const logger = pino({ level, name: 'vhba-serve' }, pino.destination({ fd: 2, sync: true }));
  const signal = waitForSignal();
  const dirs = resolveDirs(socketDir, flags['state-dir'], flags['data-dir']);
  const started = await startServe({
    configPath,
    dirs,
    logger,
    engineFactory,
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    ...(flags['control-socket'] !== undefined ? { controlSocket: resolve(flags['control-socket']) } : {}),
    resyncMs: Number(resync) * 1000,
  });
  if (typeof started === 'number') return started;
  process.stdout.write(`vhba serve: control API at ${started.controlAddress} (vhba ls --engine ${started.controlAddress}); watching ${resolve(configPath)}\n`);
  logger.info({ vms: started.topology.vms.length }, 'serving; SIGINT or SIGTERM stops');
  const received = await signal;
  logger.info({ signal: received }, 'stopping');
  await started.stop();
  return 0;
}
