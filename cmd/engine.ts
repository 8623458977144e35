// `vhba engine`: the HBA engine as a process of its own — vhost-user sockets
// for the controllers its clients create, and the control API
// (protos/vhba/hba/v1/hba.proto) on a unix socket — until SIGINT/SIGTERM.
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pino } from 'pino';
import { createEngine } from '../hba/engine.ts';
import { startControlServer } from '../hba/control/server.ts';
import { startMetricsServer, type MetricsServer } from '../hba/metrics.ts';
import { limitsFromEnv, parseSocketMode, parseSocketOwner, type SocketOwnership } from '../hba/security.ts';
import { parseListenAddress } from '../operator/metrics.ts';
import { oneOf, parseFlags, required, UsageError } from './args.ts';
import { DEFAULT_ENGINE_SOCKET } from './engine-client.ts';
import { waitForSignal } from './serve.ts';

/** Help text. */
export const ENGINE_USAGE = `Usage: vhba engine --socket-dir <dir> [--control-socket <path>] [options]

Runs the HBA engine: controllers (one vhost-user-scsi socket each, created
through the control API inside <socket-dir>) and the control API that
'vhba ls|attach|detach|resize', 'vhba serve --engine' and the CSI node plugin use.

Options:
  --socket-dir <dir>       controllers' vhost-user sockets must live here (created 0700)
  --control-socket <path>  the control API socket (default ${DEFAULT_ENGINE_SOCKET})
  --socket-owner UID[:GID] chown each VM's socket directory and socket to this
                           owner (KubeVirt's qemu: 107:107); default: the engine's uid
  --socket-mode 0600|0660  the vhost-user sockets' mode (default 0600; 0660 lets
                           the owner's group in, the directory is then 0750)
  --metrics-addr HOST:PORT serve Prometheus /metrics and /healthz there
                           (host:port or :port; default: off)
  --log-level <level>      fatal, error, warn, info (default), debug, trace, silent
  -h, --help               this help`;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Runs the engine until a signal; returns the exit code. */
export async function runEngine(argv: string[]): Promise<number> {
  const flags = parseFlags('engine', argv, {
    'socket-dir': { type: 'string' },
    'control-socket': { type: 'string', default: DEFAULT_ENGINE_SOCKET },
    'socket-owner': { type: 'string' },
    'socket-mode': { type: 'string', default: '0600' },
    'metrics-addr': { type: 'string' },
    'log-level': { type: 'string', default: 'info' },
    help: { type: 'boolean', short: 'h' },
  });
  if (flags.help === true) {
    process.stdout.write(`${ENGINE_USAGE}\n`);
    return 0;
  }
  const socketDir = resolve(required('engine', 'socket-dir', flags['socket-dir']));
  const controlSocket = resolve(flags['control-socket'] ?? DEFAULT_ENGINE_SOCKET);
  const level = oneOf('engine', 'log-level', flags['log-level'] ?? 'info', LOG_LEVELS);
  const socketOwner = socketOwnershipFromFlags(flags['socket-owner'], flags['socket-mode'] ?? '0600');
  const metricsAddr = flags['metrics-addr'] === undefined ? undefined : metricsAddressFromFlag(flags['metrics-addr']);
  const limits = limitsFromEnv();
  const logger = pino({ level, name: 'vhba-engine' }, pino.destination({ fd: 2, sync: true }));
  const signal = waitForSignal();
  await mkdir(socketDir, { recursive: true, mode: 0o700 });
  const engine = createEngine(logger, socketOwner ? { socketOwner } : {});
  const server = await startControlServer(engine, controlSocket, logger, { socketRoot: socketDir, limits }).catch(async (error: unknown) => {
    await engine.close();
    throw error;
  });
  let metrics: MetricsServer | undefined;
  if (metricsAddr) {
    metrics = await startMetricsServer(metricsAddr, engine, limits, logger).catch(async (error: unknown) => {
      await server.close();
      await engine.close();
      throw error;
    });
  }
  logger.info({ control: server.address, socketDir, socketOwner, metricsPort: metrics?.port }, 'engine ready');
  const metricsText = metrics && metricsAddr ? `; metrics at http://${metricsHostText(metricsAddr.host)}:${metrics.port}/metrics` : '';
  process.stdout.write(`vhba engine: control API at ${server.address}; sockets in ${socketDir}${metricsText}\n`);
  const received = await signal;
  logger.info({ signal: received }, 'stopping');
  await metrics?.close();
  await server.close();
  await engine.close();
  return 0;
}

/** --socket-owner/--socket-mode as engine options: undefined (sockets stay
 * ours, 0600) without an owner, unless the mode asks for 0660 (then the
 * engine's own uid/gid own them). Throws UsageError on a malformed value. */
export function socketOwnershipFromFlags(owner: string | undefined, mode: string): SocketOwnership | undefined {
  try {
    const socketMode = parseSocketMode(mode);
    if (owner === undefined || owner === '') {
      return socketMode === 0o600 ? undefined : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, mode: socketMode };
    }
    return { ...parseSocketOwner(owner), mode: socketMode };
  } catch (error) {
    throw new UsageError(`vhba engine: ${(error as Error).message}`);
  }
}

/** --metrics-addr as a listen address. Throws UsageError on a malformed value. */
export function metricsAddressFromFlag(value: string): { host: string | undefined; port: number } {
  try {
    return parseListenAddress(value);
  } catch (error) {
    throw new UsageError(`vhba engine: --metrics-addr ${(error as Error).message}`);
  }
}

/** A listen host as a URL host: all interfaces shown as 0.0.0.0, IPv6 in brackets. */
function metricsHostText(host: string | undefined): string {
  if (host === undefined) return '0.0.0.0';
  return host.includes(':') ? `[${host}]` : host;
}
