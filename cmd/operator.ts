// `vhba operator`: reconciles VirtualDisks in a Kubernetes cluster
// (operator/reconciler.ts over operator/stores/kubernetes.ts) until SIGINT or
// SIGTERM. In a pod it uses the service account (in-cluster config); outside,
// --kubeconfig. With --leader-elect only the replica holding the Lease acts.
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { pino, type Level } from 'pino';
import { LeaderElector } from '../operator/leader.ts';
import { OperatorMetrics, parseListenAddress, startProbeServer } from '../operator/metrics.ts';
import { DEFAULT_STORAGE_CLASS } from '../operator/objects.ts';
import { Reconciler } from '../operator/reconciler.ts';
import { KubeLeaseClient } from '../operator/stores/kube-lease.ts';
import { KubernetesStore } from '../operator/stores/kubernetes.ts';

/** Usage text for `vhba operator`. */
export const OPERATOR_USAGE = `usage: vhba operator [--kubeconfig <path>] [--namespace <ns>|all] [--metrics-addr :8080]
                     [--leader-elect] [--lease-name vhba-operator] [--lease-namespace <ns>]
                     [--default-storage-class vhba] [--workers 4] [--log-level info]

  --kubeconfig             kubeconfig file; default: in-cluster service account
  --namespace              namespace whose VirtualDisks to reconcile, or "all" (default all)
  --metrics-addr           where /metrics, /healthz and /readyz are served (host:port or :port; default :8080)
  --leader-elect           act only while holding a coordination.k8s.io Lease
  --lease-name             the Lease's name (default vhba-operator)
  --lease-namespace        the Lease's namespace (default: $POD_NAMESPACE, else --namespace, else default)
  --default-storage-class  StorageClass of claims for disks that name none (default vhba)
  --workers                VMs reconciled at once (default 4)
  --log-level              pino level: fatal, error, warn, info, debug, trace (default info)`;

class UsageError extends Error {}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Parses `vhba operator` flags; throws UsageError with a precise message. */
export function parseOperatorArgs(argv: string[], env: NodeJS.ProcessEnv = process.env) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: {
        kubeconfig: { type: 'string' }, namespace: { type: 'string' }, 'metrics-addr': { type: 'string' },
        'leader-elect': { type: 'boolean' }, 'lease-name': { type: 'string' }, 'lease-namespace': { type: 'string' },
        'default-storage-class': { type: 'string' }, workers: { type: 'string' }, 'log-level': { type: 'string' },
        identity: { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return { help: true as const };
  const nsFlag = values.namespace ?? 'all';
  if (nsFlag !== 'all' && !DNS_LABEL.test(nsFlag)) throw new UsageError(`--namespace ${JSON.stringify(nsFlag)} is not a namespace name (DNS-1123 label) or "all"`);
  const namespace = nsFlag === 'all' ? undefined : nsFlag;
  const metricsAddr = values['metrics-addr'] ?? ':8080';
  try {
    parseListenAddress(metricsAddr);
  } catch (err) {
    throw new UsageError(`--metrics-addr ${(err as Error).message}`);
  }
  const leaseName = values['lease-name'] ?? 'vhba-operator';
  if (!DNS_LABEL.test(leaseName)) throw new UsageError(`--lease-name ${JSON.stringify(leaseName)} is not a DNS-1123 label`);
  const leaseNamespace = values['lease-namespace'] ?? env['POD_NAMESPACE'] ?? namespace ?? 'default';
  if (!DNS_LABEL.test(leaseNamespace)) throw new UsageError(`--lease-namespace ${JSON.stringify(leaseNamespace)} is not a namespace name`);
  const workersText = values.workers ?? '4';
  if (!/^[1-9][0-9]?$/.test(workersText)) throw new UsageError(`--workers ${JSON.stringify(workersText)} must be a whole number from 1 to 99`);
  const storageClass = values['default-storage-class'] ?? DEFAULT_STORAGE_CLASS;
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(storageClass)) throw new UsageError(`--default-storage-class ${JSON.stringify(storageClass)} is not a StorageClass name`);
  const level = values['log-level'] ?? 'info';
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace'].includes(level)) throw new UsageError(`--log-level ${JSON.stringify(level)} is not a pino level`);
  return {
    help: false as const, kubeconfig: values.kubeconfig, namespace, metricsAddr, leaderElect: values['leader-elect'] ?? false,
    leaseName, leaseNamespace, storageClass, workers: Number(workersText), level: level as Level,
    identity: values.identity ?? env['POD_NAME'] ?? `${hostname()}_${process.pid}`,
  };
}

/** Loads the kubeconfig file, or the in-cluster configuration. */
function loadKubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path !== undefined) kc.loadFromFile(path);
  else if (process.env['KUBERNETES_SERVICE_HOST'] !== undefined) kc.loadFromCluster();
  else throw new UsageError('not running in a cluster (no KUBERNETES_SERVICE_HOST): give --kubeconfig');
  return kc;
}

/** Runs `vhba operator`; resolves with the exit code. */
export async function runOperator(argv: string[]): Promise<number> {
  let args;
  let kc;
  try {
    args = parseOperatorArgs(argv);
    if (args.help) {
      process.stdout.write(`${OPERATOR_USAGE}\n`);
      return 0;
    }
    kc = loadKubeConfig(args.kubeconfig);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`vhba operator: ${err.message}\n${OPERATOR_USAGE}\n`);
    return 2;
  }
  const log = pino({ name: 'vhba-operator', level: args.level }, pino.destination(2));
  const metrics = new OperatorMetrics();
  const store = new KubernetesStore({ kubeConfig: kc, ...(args.namespace === undefined ? {} : { namespace: args.namespace }), log, identity: args.identity });
  const reconciler = new Reconciler({ store, log, metrics, workers: args.workers, defaultStorageClass: args.storageClass });
  const elector = args.leaderElect
    ? new LeaderElector({ client: new KubeLeaseClient(store.http), namespace: args.leaseNamespace, name: args.leaseName, identity: args.identity, log })
    : undefined;
  metrics.isLeader = () => elector?.isLeader ?? true;
  metrics.queueDepth = () => reconciler.queue.length;
  metrics.disksByPhase = () => {
    const counts = new Map<string, number>();
    if (!store.synced) return counts;
    for (const d of store.allDisks()) {
      const phase = d.status?.phase ?? 'Pending';
      counts.set(phase, (counts.get(phase) ?? 0) + 1);
    }
    return counts;
  };
  const probes = await startProbeServer(args.metricsAddr, metrics, () => store.synced || (elector !== undefined && !elector.isLeader));
  log.info({ metrics: probes.port, namespace: args.namespace ?? 'all', leaderElect: args.leaderElect, identity: args.identity }, 'vhba operator starting');

  let stopping = false;
  let exitCode = 0;
  const stopped = new Promise<void>((resolve) => {
    const stop = () => {
      if (stopping) return;
      stopping = true;
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    if (elector !== undefined) {
      // Losing the Lease while acting: stop at once (another replica now acts).
      void elector.run(() => {
        exitCode = 1;
        stop();
      }).then(async () => {
        if (stopping) return;
        await store.start();
        reconciler.start();
        log.info('caches synced; reconciling');
      }).catch((err: unknown) => {
        log.error({ err: (err as Error).message }, 'cannot start');
        exitCode = 1;
        stop();
      });
    }
  });
  if (elector === undefined) {
    try {
      await store.start();
    } catch (err) {
      log.error({ err: (err as Error).message }, 'cannot list VirtualDisks (is the CRD installed?)');
      await probes.close();
      return 1;
    }
    reconciler.start();
    log.info('caches synced; reconciling');
  }
  await stopped;
  log.info('stopping');
  await reconciler.stop();
  await store.stop();
  await elector?.stop();
  await probes.close();
  return exitCode;
}

if (import.meta.main) {
  process.exitCode = await runOperator(process.argv.slice(2));
}
