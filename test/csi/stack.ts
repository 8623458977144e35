// The CSI e2e tests' stack: the HBA engine (csi/testing/engine-host.ts, the
// real engine unless it cannot load) and `vhba csi --mode all` (cmd/csi.ts)
// as child processes in one directory, with gRPC clients for the plugin's
// Controller and Node services and the engine's control API.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createClient, type ServiceClient } from '../../protos/grpc.ts';
import { Controller, Node } from '../../protos/gen/csi/v1/csi_pb.ts';
import { EngineService } from '../../protos/gen/vhba/hba/v1/hba_pb.ts';
import { CRD_NAME } from '../../operator/crd.ts';
import { OperatorProcess, REPO } from '../../operator/testing/harness.ts';
import { startTestApiServer, type TestApiServer } from '../k8s/apiserver.ts';
import { kubectlOk } from '../k8s/kubectl.ts';

const ROOT = resolve(import.meta.dirname, '../..');

/** Resolves with the first match of `pattern` in the child's stdout/stderr;
 * rejects if it exits first or `ms` pass. */
export function waitForLine(child: ChildProcess, pattern: RegExp, what: string, ms = 30_000): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${ms} ms: ${out}`)), ms);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = pattern.exec(out);
      if (m) { clearTimeout(timer); resolvePromise(m[0]); }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${what} exited with ${code}: ${out}`)); });
  });
}

export interface CsiStackOptions {
  /** Working directory: sockets, state, data, publish root (pub/). */
  dir: string;
  nodeId: string;
  /** Further `vhba csi` flags (e.g. the Kubernetes state store). */
  csiArgs?: readonly string[];
}

/** A running engine + CSI plugin. */
export interface CsiStack {
  /** 'real' or 'memory' (engine-host falls back to the in-memory double). */
  engineKind: string;
  /** unix://… endpoint of the CSI plugin. */
  csiEndpoint: string;
  controller: ServiceClient<(typeof Controller)['method']>;
  node: ServiceClient<(typeof Node)['method']>;
  engine: ServiceClient<(typeof EngineService)['method']>;
  /** Closes the clients and stops both processes; idempotent. */
  stop(): void;
}

/** Starts the engine, then the plugin, and connects the clients. */
export async function startCsiStack(options: CsiStackOptions): Promise<CsiStack> {
  const { dir } = options;
  const children: ChildProcess[] = [];
  const stopChildren = () => { for (const c of children.reverse()) c.kill('SIGTERM'); children.length = 0; };
  try {
    mkdirSync(join(dir, 'pub'), { recursive: true });
    const engineProc = spawn(process.execPath, [join(ROOT, 'csi/testing/engine-host.ts'), join(dir, 'engine.sock'), 'real'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(engineProc);
    const engineKind = (await waitForLine(engineProc, /engine: (real|memory)/, 'engine')).split(' ')[1]!;
    const csiEndpoint = `unix://${join(dir, 'csi.sock')}`;
    const csi = spawn(process.execPath, [
      join(ROOT, 'cmd/csi.ts'), '--mode', 'all', '--endpoint', csiEndpoint, '--node-id', options.nodeId,
      '--state-dir', join(dir, 'state'), '--data-dir', join(dir, 'data'), '--engine-endpoint', `unix://${join(dir, 'engine.sock')}`,
      '--publish-root', join(dir, 'pub'), '--socket-dir', join(dir, 's'), '--max-volumes', '8', ...(options.csiArgs ?? []),
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(csi);
    await waitForLine(csi, /csi plugin listening/, 'vhba csi');
    const controller = createClient(Controller, csiEndpoint);
    const node = createClient(Node, csiEndpoint);
    const engine = createClient(EngineService, `unix://${join(dir, 'engine.sock')}`);
    return {
      engineKind, csiEndpoint, controller, node, engine,
      stop: () => { controller.close(); node.close(); engine.close(); stopChildren(); },
    };
  } catch (err) {
    stopChildren();
    throw err;
  }
}

/** A real kube-apiserver with the VirtualDisk CRD established and the
 * operator running in `namespace` (the cluster half of the CSI e2e tests). */
export interface OperatorCluster {
  cluster: TestApiServer;
  operator: OperatorProcess;
  /** `vhba csi` flags for its state store in this cluster. */
  csiArgs: string[];
  stop(): Promise<void>;
}

/** Starts the API server, applies the CRD, starts the operator. */
export async function startOperatorCluster(namespace = 'default'): Promise<OperatorCluster> {
  const cluster = await startTestApiServer();
  try {
    await kubectlOk(cluster.kubeconfigPath, ['apply', '--server-side', '-f', `${REPO}/deploy/helm/vhba/crds/${CRD_NAME}.yaml`]);
    await kubectlOk(cluster.kubeconfigPath, ['wait', '--for=condition=Established', `crd/${CRD_NAME}`, '--timeout=60s']);
    const operator = await OperatorProcess.start({ kubeconfigPath: cluster.kubeconfigPath, namespace });
    return {
      cluster, operator,
      csiArgs: ['--state-store', 'kubernetes', '--state-namespace', namespace, '--kubeconfig', cluster.kubeconfigPath],
      stop: async () => { await operator.stop(); await cluster.stop(); },
    };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}
