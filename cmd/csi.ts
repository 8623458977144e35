// `vhba csi`: runs the CSI plugin scsi.vhba.io (csi/server.ts) until SIGINT or
// SIGTERM. Bad flags print what is wrong and the usage, and exit with 2.
import { isAbsolute, join } from 'node:path';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { pino, type Level } from 'pino';
import { CsiMode, startCsiServer } from '../csi/server.ts';

/** Usage text for `vhba csi`. */
export const CSI_USAGE = `usage: vhba csi --mode controller|node|all --endpoint unix:///path.sock --node-id <id>
                --state-dir <dir> --data-dir <dir> [--engine-endpoint unix:///path.sock]
                [--publish-root <dir>] [--socket-dir <dir>] [--max-volumes <n>] [--log-level info]
                [--state-store directory|kubernetes] [--state-namespace <ns>] [--kubeconfig <path>]

  --mode             which CSI services to serve (Identity always)
  --endpoint         unix socket the CO connects to
  --node-id          this node's id (node and all: reported by NodeGetInfo; controller: the node
                     whose --data-dir holds the volumes)
  --state-dir        directory for the plugin's state (survives restarts)
  --data-dir         directory for volume images and snapshots
  --engine-endpoint  the HBA engine's control socket (required for node and all)
  --publish-root     staging and target paths must be below it (default /var/lib/kubelet)
  --socket-dir       where VM controller sockets are created (default <state-dir>/sockets)
  --max-volumes      volumes per node (NodeGetInfo max_volumes_per_node; default 256)
  --log-level        pino level: fatal, error, warn, info, debug, trace (default info)
  --state-store      where controller state and the node registry live: directory (under
                     --state-dir, default) or kubernetes (ConfigMaps; node mounts stay in --state-dir)
  --state-namespace  namespace of the ConfigMaps (required with --state-store kubernetes)
  --kubeconfig       kubeconfig file for --state-store kubernetes; default: in-cluster service account`;

class UsageError extends Error {}

function unixEndpoint(value: string | undefined, flag: string): string {
  if (!value) throw new UsageError(`${flag} is required`);
  const m = /^unix:\/\/(\/.+)$/.exec(value);
  if (!m) throw new UsageError(`${flag} ${JSON.stringify(value)} must look like unix:///absolute/path.sock`);
  if (Buffer.byteLength(m[1]!) > 107) throw new UsageError(`${flag}: socket path is longer than 107 bytes`);
  return value;
}

function absoluteDir(value: string | undefined, flag: string): string {
  if (!value) throw new UsageError(`${flag} is required`);
  if (!isAbsolute(value)) throw new UsageError(`${flag} ${JSON.stringify(value)} must be an absolute path`);
  return value;
}

/** Parses `vhba csi` flags; throws UsageError with a precise message. */
export function parseCsiArgs(argv: string[]) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        mode: { type: 'string' }, endpoint: { type: 'string' }, 'node-id': { type: 'string' }, 'state-dir': { type: 'string' },
        'data-dir': { type: 'string' }, 'engine-endpoint': { type: 'string' }, 'publish-root': { type: 'string' },
        'socket-dir': { type: 'string' }, 'max-volumes': { type: 'string' }, 'log-level': { type: 'string' }, help: { type: 'boolean', short: 'h' },
        'state-store': { type: 'string' }, 'state-namespace': { type: 'string' }, kubeconfig: { type: 'string' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return { help: true as const };
  const mode = values.mode;
  if (mode !== CsiMode.controller && mode !== CsiMode.node && mode !== CsiMode.all) {
    throw new UsageError(mode ? `--mode ${JSON.stringify(mode)} is not one of controller, node, all` : '--mode is required (controller, node or all)');
  }
  const endpoint = unixEndpoint(values.endpoint, '--endpoint');
  const nodeId = values['node-id'];
  if (!nodeId) throw new UsageError('--node-id is required');
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(nodeId)) throw new UsageError(`--node-id ${JSON.stringify(nodeId)} must be 1–128 characters of letters, digits, ".", "_" or "-"`);
  const stateDir = absoluteDir(values['state-dir'], '--state-dir');
  const dataDir = absoluteDir(values['data-dir'], '--data-dir');
  const engineEndpoint = values['engine-endpoint'] === undefined && mode === CsiMode.controller ? undefined : unixEndpoint(values['engine-endpoint'], '--engine-endpoint');
  const publishRoot = absoluteDir(values['publish-root'] ?? '/var/lib/kubelet', '--publish-root');
  const socketDir = absoluteDir(values['socket-dir'] ?? join(stateDir, 'sockets'), '--socket-dir');
  const maxText = values['max-volumes'] ?? '256';
  if (!/^[0-9]{1,6}$/.test(maxText)) throw new UsageError(`--max-volumes ${JSON.stringify(maxText)} must be a whole number (0: no limit)`);
  const level = values['log-level'] ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace'].includes(level)) throw new UsageError(`--log-level ${JSON.stringify(level)} is not a pino level`);
  const stateStore = values['state-store'] ?? 'directory';
  if (stateStore !== 'directory' && stateStore !== 'kubernetes') throw new UsageError(`--state-store ${JSON.stringify(stateStore)} is not one of directory, kubernetes`);
  const stateNamespace = values['state-namespace'];
  const kubeconfig = values.kubeconfig;
  if (stateStore === 'directory') {
    if (stateNamespace !== undefined) throw new UsageError('--state-namespace needs --state-store kubernetes');
    if (kubeconfig !== undefined) throw new UsageError('--kubeconfig needs --state-store kubernetes');
  } else {
    if (!stateNamespace) throw new UsageError('--state-store kubernetes needs --state-namespace');
    if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(stateNamespace)) throw new UsageError(`--state-namespace ${JSON.stringify(stateNamespace)} is not a Kubernetes namespace name`);
    if (kubeconfig === '') throw new UsageError('--kubeconfig must name a file');
  }
  return {
    help: false as const, mode, endpoint, nodeId, stateDir, dataDir, engineEndpoint, publishRoot, socketDir, maxVolumesPerNode: Number(maxText), level: level as Level,
    stateStore, stateNamespace, kubeconfig,
  };
}

/** The KubeConfig for --state-store kubernetes: the file, or in-cluster. */
function loadKubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path !== undefined) kc.loadFromFile(path);
  else if (process.env['KUBERNETES_SERVICE_HOST'] !== undefined) kc.loadFromCluster();
  else throw new UsageError('--state-store kubernetes outside a cluster (no KUBERNETES_SERVICE_HOST) needs --kubeconfig');
  return kc;
}

/** Runs `vhba csi`; resolves with the exit code (0 after a signal, 1 when the
 * plugin cannot start, 2 on bad flags). */
export async function runCsi(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseCsiArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`vhba csi: ${err.message}\n${CSI_USAGE}\n`);
    return 2;
  }
  if (args.help) {
    process.stdout.write(`${CSI_USAGE}\n`);
    return 0;
  }
  let kubernetes;
  try {
    kubernetes = args.stateStore === 'kubernetes' ? { kubeConfig: loadKubeConfig(args.kubeconfig), namespace: args.stateNamespace! } : undefined;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`vhba csi: ${err.message}\n${CSI_USAGE}\n`);
      return 2;
    }
    process.stderr.write(`vhba csi: cannot load --kubeconfig: ${(err as Error).message}\n`);
    return 1;
  }
  const log = pino({ name: 'vhba-csi', level: args.level }, pino.destination(2));
  let server;
  try {
    const { stateStore: _store, stateNamespace: _ns, kubeconfig: _kc, ...serverArgs } = args;
    server = await startCsiServer({ ...serverArgs, ...(args.engineEndpoint ? { engineEndpoint: args.engineEndpoint } : {}), ...(kubernetes ? { kubernetes } : {}), log });
  } catch (err) {
    process.stderr.write(`vhba csi: cannot start: ${(err as Error).message}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.close();
  return 0;
}

if (import.meta.main) {
  process.exitCode = await runCsi(process.argv.slice(2));
}
