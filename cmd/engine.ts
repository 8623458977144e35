// `vhba engine`: the HBA engine as a process of its own — vhost-user sockets
// for the controllers its clients create, and the control API
// (protos/vhba/hba/v1/hba.proto) on a unix socket — until SIGINT/SIGTERM.
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pino } from 'pino';
import { createEngine } from '../hba/engine.ts';
import { startControlServer } from '../hba/control/server.ts';
import { oneOf, parseFlags, required } from './args.ts';
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
  --log-level <level>      fatal, error, warn, info (default), debug, trace, silent
  -h, --help               this help`;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Runs the engine until a signal; returns the exit code. */
export async function runEngine(argv: string[]): Promise<number> {
  const flags = parseFlags('engine', argv, {
    'socket-dir': { type: 'string' },
    'control-socket': { type: 'string', default: DEFAULT_ENGINE_SOCKET },
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
  const logger = pino({ level, name: 'vhba-engine' }, pino.destination({ fd: 2, sync: true }));
  const signal = waitForSignal();
  await mkdir(socketDir, { recursive: true, mode: 0o700 });
  const engine = createEngine(logger);
  const server = await startControlServer(engine, controlSocket, logger, { socketRoot: socketDir }).catch(async (error: unknown) => {
    await engine.close();
    throw error;
  });
  logger.info({ control: server.address, socketDir }, 'engine ready');
  process.stdout.write(`vhba engine: control API at ${server.address}; sockets in ${socketDir}\n`);
  const received = await signal;
  logger.info({ signal: received }, 'stopping');
  await server.close();
  await engine.close();
  return 0;
}
